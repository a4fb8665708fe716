//! Tool pinning: protection against "rug pulls". The gateway keeps a hash of
//! each upstream tool's definition as first seen (or as last approved). When
//! an upstream changes a tool, the change is recorded with its diff and an
//! event; by the server's `on_tool_change` setting the new definition is
//! either accepted (and pinned) or quarantined: hidden and not callable until
//! an operator approves it.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use rmcp::model::Tool;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::{
    events::{Event, EventBus},
    store::{ChangeRow, Store, StoreError},
    upstream::spec::ChangeMode,
};

/// The parts of a definition that are pinned, in canonical form (object keys
/// sorted, so the hash does not depend on the upstream's key order).
pub fn pinned_definition(tool: &Tool) -> Value {
    let mut def = Map::new();
    def.insert("name".into(), json!(tool.name));
    if let Some(title) = &tool.title {
        def.insert("title".into(), json!(title));
    }
    if let Some(d) = &tool.description {
        def.insert("description".into(), json!(d));
    }
    def.insert(
        "inputSchema".into(),
        Value::Object((*tool.input_schema).clone()),
    );
    if let Some(o) = &tool.output_schema {
        def.insert("outputSchema".into(), Value::Object((**o).clone()));
    }
    if let Some(a) = &tool.annotations {
        def.insert(
            "annotations".into(),
            serde_json::to_value(a).unwrap_or(Value::Null),
        );
    }
    canonical(Value::Object(def))
}

/// `value` with object keys sorted, recursively.
pub fn canonical_json(value: &Value) -> Value {
    canonical(value.clone())
}

fn canonical(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, canonical(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
        other => other,
    }
}

pub fn hash(definition: &Value) -> String {
    let digest = Sha256::digest(definition.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The leaves that differ between two definitions, as
/// `{"path", "old", "new"}` (absent on one side is `null`).
pub fn diff(old: &Value, new: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    diff_into("", old, new, &mut out);
    out
}

fn diff_into(path: &str, old: &Value, new: &Value, out: &mut Vec<Value>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let sub = format!("{path}/{key}");
                diff_into(
                    &sub,
                    a.get(key).unwrap_or(&Value::Null),
                    b.get(key).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (a, b) if a != b => {
            out.push(json!({"path": if path.is_empty() { "/" } else { path }, "old": a, "new": b}))
        }
        _ => {}
    }
}

/// One server's tools as the pin check sees them.
pub struct ServerTools<'a> {
    pub server: &'a str,
    pub mode: ChangeMode,
    pub tools: &'a [Tool],
}

/// Compares every upstream tool with its pin: pins new tools, records and
/// announces changes, and returns the tools that are quarantined now, as
/// (server, tool) → reason.
pub async fn check(
    store: &Store,
    tenant: &str,
    servers: &[ServerTools<'_>],
    events: &EventBus,
) -> Result<HashMap<(String, String), String>, StoreError> {
    let pins: HashMap<(String, String), String> = store
        .list_pins(tenant)
        .await?
        .into_iter()
        .map(|(s, t, h)| ((s, t), h))
        .collect();
    let mut recorded: Option<HashSet<(String, String, String)>> = None;
    let mut quarantined = HashMap::new();
    for s in servers {
        for tool in s.tools {
            let definition = pinned_definition(tool);
            let current = hash(&definition);
            let key = (s.server.to_owned(), tool.name.to_string());
            let Some(pinned) = pins.get(&key) else {
                // Trust on first use.
                store
                    .put_pin(
                        tenant,
                        s.server,
                        &tool.name,
                        &current,
                        &definition.to_string(),
                    )
                    .await?;
                continue;
            };
            if *pinned == current {
                continue;
            }
            // Record each distinct change once.
            let recorded = match &mut recorded {
                Some(r) => r,
                None => recorded.insert(
                    store
                        .list_changes(tenant, None, None)
                        .await?
                        .into_iter()
                        .map(|c| (c.server, c.tool, c.new_hash))
                        .collect(),
                ),
            };
            let seen = recorded.contains(&(key.0.clone(), key.1.clone(), current.clone()));
            if !seen {
                let old: Value = store
                    .pinned_definition(tenant, s.server, &tool.name)
                    .await?
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or(Value::Null);
                let status = match s.mode {
                    ChangeMode::Accept => "accepted",
                    ChangeMode::Quarantine => "pending",
                };
                let row = ChangeRow {
                    id: uuid::Uuid::now_v7().to_string(),
                    server: key.0.clone(),
                    tool: key.1.clone(),
                    old_hash: pinned.clone(),
                    new_hash: current.clone(),
                    change: json!({"diff": diff(&old, &definition), "old": old, "new": definition})
                        .to_string(),
                    status: status.into(),
                    detected_at: crate::util::now_rfc3339(),
                    decided_at: None,
                };
                store.insert_change(tenant, &row).await?;
                recorded.insert((key.0.clone(), key.1.clone(), current.clone()));
                tracing::warn!(server = %key.0, tool = %key.1, status, "tool definition changed");
                events.publish(Event::ToolChanged {
                    tenant: Arc::from(tenant),
                    server: key.0.clone(),
                    tool: key.1.clone(),
                    change_id: row.id.clone(),
                    quarantined: s.mode == ChangeMode::Quarantine,
                });
            }
            match s.mode {
                ChangeMode::Accept => {
                    store
                        .put_pin(
                            tenant,
                            s.server,
                            &tool.name,
                            &current,
                            &definition.to_string(),
                        )
                        .await?;
                }
                ChangeMode::Quarantine => {
                    quarantined.insert(
                        key,
                        "its definition changed since it was approved; an operator must approve the change \
                         (POST /api/v1/tools/{name}/approve)"
                            .to_owned(),
                    );
                }
            }
        }
    }
    Ok(quarantined)
}

/// Approves a tool's current definition: pins it and closes pending changes.
pub async fn approve(
    store: &Store,
    tenant: &str,
    server: &str,
    tool: &Tool,
) -> Result<u64, StoreError> {
    let definition = pinned_definition(tool);
    store
        .put_pin(
            tenant,
            server,
            &tool.name,
            &hash(&definition),
            &definition.to_string(),
        )
        .await?;
    store
        .decide_changes(tenant, server, &tool.name, "approved")
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_ignores_key_order_and_diff_names_paths() {
        let a: Tool = serde_json::from_value(json!({"name": "t", "description": "d", "inputSchema": {"type": "object", "properties": {"x": {"type": "string"}}}})).unwrap();
        let b: Tool = serde_json::from_value(json!({"inputSchema": {"properties": {"x": {"type": "string"}}, "type": "object"}, "description": "d", "name": "t"})).unwrap();
        assert_eq!(hash(&pinned_definition(&a)), hash(&pinned_definition(&b)));
        let c: Tool = serde_json::from_value(json!({"name": "t", "description": "evil", "inputSchema": {"type": "object", "properties": {"x": {"type": "number"}}}})).unwrap();
        let d = diff(&pinned_definition(&a), &pinned_definition(&c));
        let paths: Vec<&str> = d.iter().map(|e| e["path"].as_str().unwrap()).collect();
        assert_eq!(paths, ["/description", "/inputSchema/properties/x/type"]);
        assert_eq!(d[0]["new"], "evil");
    }
}
