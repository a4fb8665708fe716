//! The policy stage: may this principal see, and call, this tool?
//!
//! Listing (REST, MCP, search) and calling all ask here, so one rule
//! decides both and nobody sees a tool they may not reach: the principal
//! needs `tools:read` to see tools, the tool's tenant must be theirs, its
//! `security_level` must not exceed their clearance, and their grants must
//! admit it. Calling needs `tools:execute` besides.

use crate::{
    auth::{
        Principal,
        rbac::{self, Permission},
    },
    catalog::ToolEntry,
};

use super::CallError;

/// Whether `principal` may see `tool` at all (in listings, search, and by
/// name). A tool it may not see answers exactly like a missing one.
pub fn may_see(principal: &Principal, tool: &ToolEntry) -> bool {
    // Callers look tools up in their own tenant's catalog; checking the
    // entry's tenant here as well means a lookup in the wrong catalog
    // still cannot expose another tenant's tool.
    principal.has(Permission::ToolsRead)
        && *principal.tenant_id == *tool.tenant
        && tool.overlay.security_level.unwrap_or(0) <= principal.clearance
        && rbac::grants_admit(
            &principal.grants,
            tool.server(),
            &tool.public_name,
            tool.original_name(),
        )
}

/// Whether `principal` may see a server (REST server listings and details).
pub fn may_see_server(principal: &Principal, tenant: &str, server: &str) -> bool {
    principal.has(Permission::ServersRead)
        && *principal.tenant_id == *tenant
        && rbac::grants_admit_server(&principal.grants, server)
}

/// Whether `principal` may use the prompts and resources of `tenant`'s
/// server over MCP.
pub fn may_use_server(principal: &Principal, tenant: &str, server: &str) -> bool {
    principal.has(Permission::ToolsRead)
        && *principal.tenant_id == *tenant
        && rbac::grants_admit_server_content(&principal.grants, server)
}

/// Whether `principal` may call `tool` with these arguments.
pub fn authorize(principal: &Principal, tool: &ToolEntry) -> Result<(), CallError> {
    if !may_see(principal, tool) {
        return Err(CallError::UnknownTool(tool.public_name.clone()));
    }
    if !principal.has(Permission::ToolsExecute) {
        return Err(CallError::Forbidden(format!(
            "calling {} needs the permission tools:execute",
            tool.public_name
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::auth::rbac::Permissions;

    fn principal(tenant: &str) -> Principal {
        Principal {
            tenant_id: Arc::from(tenant),
            permissions: Permissions::parse(&["tools:read", "tools:execute", "servers:read"])
                .unwrap(),
            clearance: 100,
            ..Principal::nobody()
        }
    }

    fn tool(tenant: &str) -> ToolEntry {
        ToolEntry::for_test(tenant, "t")
    }

    #[test]
    fn a_tool_is_seen_and_called_only_within_its_tenant() {
        let (a, b) = (principal("a"), principal("b"));
        assert!(may_see(&a, &tool("a")));
        assert!(!may_see(&b, &tool("a")));
        assert!(authorize(&a, &tool("a")).is_ok());
        assert!(matches!(
            authorize(&b, &tool("a")),
            Err(CallError::UnknownTool(_))
        ));
        assert!(may_see_server(&a, "a", "fx") && !may_see_server(&b, "a", "fx"));
        assert!(may_use_server(&a, "a", "fx") && !may_use_server(&b, "a", "fx"));
    }
}
