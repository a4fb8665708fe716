//! The policy stage: may this principal see, and call, this tool?
//!
//! Listing (REST, MCP, search) and calling all ask here, so one rule
//! decides both and nobody sees a tool they may not reach: the principal
//! needs `tools:read` to see tools, the tool's tenant must be theirs, its
//! `security_level` must not exceed their clearance, and their grants must
//! admit it. Calling needs `tools:execute` besides.

use crate::{
    auth::{
        DEFAULT_TENANT, Principal,
        rbac::{self, Permission},
    },
    catalog::ToolEntry,
};

use super::CallError;

/// Whether `principal` may see `tool` at all (in listings, search, and by
/// name). A tool it may not see answers exactly like a missing one.
pub fn may_see(principal: &Principal, tool: &ToolEntry) -> bool {
    // The catalog holds the default tenant's servers and tools.
    principal.has(Permission::ToolsRead)
        && &*principal.tenant_id == DEFAULT_TENANT
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

/// Whether `principal` may use a server's prompts and resources over MCP.
pub fn may_use_server(principal: &Principal, server: &str) -> bool {
    principal.has(Permission::ToolsRead)
        && &*principal.tenant_id == DEFAULT_TENANT
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
