//! The policy stage: may this principal see, and call, this tool?
//!
//! Until "Identity and access" brings RBAC, grants and clearances, every
//! principal may see and call every tool (disabled tools are refused by the
//! pipeline for everyone). Listing and calling both
//! ask here, so the rule that arrives later applies to both at once.

use crate::{auth::Principal, catalog::ToolEntry};

use super::CallError;

/// Whether `principal` may see `tool` at all (in listings, search, and by
/// name). A tool it may not see answers exactly like a missing one.
pub fn may_see(_principal: &Principal, _tool: &ToolEntry) -> bool {
    true
}

/// Whether `principal` may call `tool` with these arguments.
pub fn authorize(principal: &Principal, tool: &ToolEntry) -> Result<(), CallError> {
    if may_see(principal, tool) {
        Ok(())
    } else {
        Err(CallError::UnknownTool(tool.public_name.clone()))
    }
}
