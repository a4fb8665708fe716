//! Discovery mode, `/mcp/discovery`: instead of the whole catalog, an MCP
//! client sees two tools, `search_tools` and `call_tool`. A model with
//! thousands of tools behind the gateway then reads two short descriptions,
//! searches for what it needs, and calls it by name.
//!
//! `search_tools` is the same search as `GET /api/v1/tools/search` (hybrid,
//! the caller's visibility); `call_tool` runs the named tool through the
//! normal pipeline, with the same permissions as a direct call.
//!
//! `discovery` is a reserved profile name (profiles refuse it), so the path
//! cannot mean two things.

use std::sync::Arc;

use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool, ToolAnnotations};
use serde_json::{Value, json};

use crate::{
    app::AppState,
    auth::Principal,
    catalog::{Target, ToolEntry},
    search::{Kind, Request},
};

pub const SEARCH_TOOLS: &str = "search_tools";
pub const CALL_TOOL: &str = "call_tool";

/// Most tools one `search_tools` call returns: each carries its input
/// schema, and a model's context is not free.
const MAX_RESULTS: usize = 20;
const DEFAULT_RESULTS: usize = 5;

pub const INSTRUCTIONS: &str = "metamcp discovery mode: this gateway fronts many tools, but lists \
only two. To do something, first call search_tools with a short description of the task (for \
example \"read a file\" or \"create a GitHub issue\"); it returns the best matching tools with \
their names, descriptions and input schemas. Then call call_tool with the exact name of one of \
them and arguments that follow its input schema.";

fn schema(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => Arc::new(JsonObject::new()),
    }
}

/// The two tools of discovery mode.
pub fn tools() -> Vec<Tool> {
    let mut search = Tool::new(
        SEARCH_TOOLS,
        "Find the tools that can do a task. Describe the task in plain words (what you want \
         done, not a tool name you guess), e.g. \"send a message to a Slack channel\" or \
         \"repeat my message back\". Returns the best matching tools, best first, each with \
         its exact `name`, its `description` and its `inputSchema`. Then use call_tool with \
         one of those names. Search again with other words if nothing fits.",
        schema(json!({
            "type": "object",
            "properties": {
                "query": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": crate::search::MAX_QUERY_CHARS,
                    "description": "What the tool should do, in plain words."
                },
                "max_results": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_RESULTS,
                    "default": DEFAULT_RESULTS,
                    "description": "How many tools to return."
                }
            },
            "required": ["query"],
            "additionalProperties": false
        })),
    );
    search.annotations = Some(
        ToolAnnotations::new()
            .read_only(true)
            .idempotent(true)
            .open_world(false),
    );
    let call = Tool::new(
        CALL_TOOL,
        "Run one tool found with search_tools. `name` is the tool's exact name as search_tools \
         returned it; `arguments` is an object that follows that tool's inputSchema. Returns \
         the tool's own result. Tools not returned by search_tools may not exist: search \
         first.",
        schema(json!({
            "type": "object",
            "properties": {
                "name": {
                    "type": "string",
                    "minLength": 1,
                    "description": "The exact tool name from search_tools."
                },
                "arguments": {
                    "type": "object",
                    "description": "The tool's arguments, following its inputSchema.",
                    "default": {}
                }
            },
            "required": ["name"],
            "additionalProperties": false
        })),
    );
    vec![search, call]
}

fn error(text: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text)])
}

/// Whether a search hit can be offered to an MCP client: callable, and its
/// server connected (the same rule as `tools/list`). `ready` holds the
/// ready servers of the caller's tenant.
fn offered(ready: &std::collections::HashSet<String>, entry: &ToolEntry) -> bool {
    !matches!(entry.target, Target::CatalogOnly) && entry.server().is_none_or(|s| ready.contains(s))
}

/// `search_tools`: the best matching tools the caller may use.
pub async fn search_tools(
    state: &AppState,
    principal: &Principal,
    arguments: Option<JsonObject>,
) -> CallToolResult {
    let arguments = arguments.unwrap_or_default();
    let Some(query) = arguments
        .get("query")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|q| !q.is_empty() && q.chars().count() <= crate::search::MAX_QUERY_CHARS)
    else {
        return error(format!(
            "search_tools needs `query`: 1 to {} characters saying what the tool should do",
            crate::search::MAX_QUERY_CHARS
        ));
    };
    let max_results = match arguments.get("max_results") {
        None | Some(Value::Null) => DEFAULT_RESULTS,
        Some(v) => match v.as_u64().filter(|n| (1..=MAX_RESULTS as u64).contains(n)) {
            Some(n) => n as usize,
            None => {
                return error(format!(
                    "max_results must be a whole number from 1 to {MAX_RESULTS}"
                ));
            }
        },
    };
    let request = Request {
        query: query.to_owned(),
        kind: Kind::Hybrid,
        // Hits that cannot be offered are dropped below: ask for spares.
        max_results: max_results * 3,
        similarity_threshold: None,
        server: None,
        category: None,
        tags: Vec::new(),
    };
    let snapshot = state.catalog.snapshot(&principal.tenant_id);
    let answer = match state.search.search(&snapshot, principal, &request).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "discovery search failed");
            return error("search failed; try again".into());
        }
    };
    let ready = state.upstreams.ready_names(&principal.tenant_id);
    let tools: Vec<Value> = answer
        .hits
        .iter()
        .filter(|h| offered(&ready, &h.entry))
        .take(max_results)
        .map(|h| {
            let d = &h.entry.definition;
            json!({
                "name": d.name,
                "description": d.description,
                "inputSchema": d.input_schema,
                "score": h.score,
            })
        })
        .collect();
    let mut body = json!({ "query": query, "tools": tools });
    if tools.is_empty() {
        body["hint"] = json!("no tool matched: describe the task in other words");
    }
    CallToolResult::structured(body)
}

/// The tool name and arguments of a `call_tool` call.
pub fn call_target(arguments: Option<JsonObject>) -> Result<(String, JsonObject), CallToolResult> {
    let mut arguments = arguments.unwrap_or_default();
    let name = match arguments.remove("name") {
        Some(Value::String(n)) if !n.trim().is_empty() => n,
        _ => {
            return Err(error(
                "call_tool needs `name`: the exact name of a tool from search_tools".into(),
            ));
        }
    };
    let inner = match arguments.remove("arguments") {
        None | Some(Value::Null) => JsonObject::new(),
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(error(
                "call_tool's `arguments` must be an object following the tool's inputSchema".into(),
            ));
        }
    };
    if let Some(extra) = arguments.keys().next() {
        return Err(error(format!(
            "call_tool takes `name` and `arguments` only, not `{extra}`: put the tool's own arguments inside `arguments`"
        )));
    }
    Ok((name, inner))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_tool_arguments_are_checked() {
        let args = |v: Value| v.as_object().cloned();
        let (name, inner) = call_target(args(
            json!({"name": "everything__echo", "arguments": {"message": "hi"}}),
        ))
        .unwrap();
        assert_eq!(name, "everything__echo");
        assert_eq!(inner["message"], "hi");
        assert!(call_target(args(json!({"arguments": {}}))).is_err());
        assert!(call_target(args(json!({"name": "x", "arguments": "hi"}))).is_err());
        assert!(call_target(args(json!({"name": "x", "message": "hi"}))).is_err());
        let (_, inner) = call_target(args(json!({"name": "x"}))).unwrap();
        assert!(inner.is_empty());
    }

    #[test]
    fn the_two_tools_have_object_schemas() {
        let tools = tools();
        assert_eq!(
            tools.iter().map(|t| t.name.as_ref()).collect::<Vec<_>>(),
            [SEARCH_TOOLS, CALL_TOOL]
        );
        for t in &tools {
            assert_eq!(t.input_schema["type"], "object");
            assert!(t.description.as_ref().is_some_and(|d| d.len() > 100));
        }
    }
}
