//! The tool records users read and write over REST, and what is stored for
//! them: overlays on upstream tools, and hand-registered tools.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{Target, ToolEntry};

/// Metadata a user set by hand on a tool. Every field is optional: unset
/// means "as the upstream says" (or the default).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Overlay {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_level: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Calls may be retried after they may have reached the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent: Option<bool>,
    /// Per-tool call timeout, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<f64>,
    /// Set by hand: the tool only reads (its results may be cached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// Cache successful results this long (read-only tools only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_ttl_secs: Option<u64>,
}

impl Overlay {
    /// Applies the fields present in `update` on top of `self`.
    pub fn merge(&mut self, update: Overlay) {
        macro_rules! take {
            ($($f:ident),*) => { $( if update.$f.is_some() { self.$f = update.$f; } )* };
        }
        take!(
            description,
            category,
            tags,
            capabilities,
            security_level,
            metadata,
            version,
            author,
            enabled,
            idempotent,
            timeout_secs,
            read_only,
            cache_ttl_secs
        );
    }
}

/// A tool registered by hand (no MCP server behind it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManualTool {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// An HTTP(S) URL that receives the arguments as a JSON POST; none for a
    /// catalog-only entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub input_schema: Option<Map<String, Value>>,
    #[serde(default)]
    pub output_schema: Option<Map<String, Value>>,
    #[serde(flatten)]
    pub overlay: Overlay,
}

impl ManualTool {
    /// The MCP definition the catalog serves for this tool.
    pub fn definition(&self, public_name: &str) -> rmcp::model::Tool {
        let input = self.input_schema.clone().unwrap_or_else(|| {
            json!({"type": "object"})
                .as_object()
                .cloned()
                .unwrap_or_default()
        });
        let mut value = json!({
            "name": public_name,
            "description": self.overlay.description.clone().unwrap_or_else(|| self.description.clone()),
            "inputSchema": input,
        });
        if let Some(output) = &self.output_schema {
            value["outputSchema"] = Value::Object(output.clone());
        }
        serde_json::from_value(value).unwrap_or_else(|_| {
            rmcp::model::Tool::new(
                public_name.to_owned(),
                self.description.clone(),
                Arc::new(Map::new()),
            )
        })
    }

    pub fn as_overlay(&self) -> Overlay {
        self.overlay.clone()
    }
}

/// What a user sends to create or update a tool: the original README's
/// fields. `schema: {input, output}` and `input_schema`/`output_schema` are
/// two spellings of the same thing.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolInput {
    pub name: Option<String>,
    pub description: Option<String>,
    pub endpoint: Option<String>,
    pub category: Option<String>,
    pub capabilities: Option<Vec<String>>,
    pub security_level: Option<i64>,
    pub schema: Option<SchemaPair>,
    pub input_schema: Option<Map<String, Value>>,
    pub output_schema: Option<Map<String, Value>>,
    pub metadata: Option<Map<String, Value>>,
    pub version: Option<String>,
    pub author: Option<String>,
    pub tags: Option<Vec<String>>,
    pub enabled: Option<bool>,
    pub idempotent: Option<bool>,
    pub timeout_secs: Option<f64>,
    pub read_only: Option<bool>,
    pub cache_ttl_secs: Option<u64>,
    /// Read-only fields of a record, accepted (and ignored) so a record read
    /// with GET can be sent back with PUT.
    pub server: Option<Value>,
    pub original_name: Option<Value>,
    pub source: Option<Value>,
    pub annotations: Option<Value>,
    pub executable: Option<Value>,
    pub schema_error: Option<Value>,
    pub quarantine: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaPair {
    pub input: Option<Map<String, Value>>,
    pub output: Option<Map<String, Value>>,
}

impl ToolInput {
    /// Checks values the type system does not.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(level) = self.security_level
            && !(0..=100).contains(&level)
        {
            return Err("security_level must be between 0 and 100".into());
        }
        for (field, schema) in [
            ("input_schema", self.input_schema()),
            ("output_schema", self.output_schema()),
        ] {
            if let Some(schema) = schema
                && let Err(e) = super::compile_schema(&Value::Object(schema))
            {
                return Err(format!("{field}: {e}"));
            }
        }
        if let Some(tags) = &self.tags
            && tags.iter().any(|t| t.is_empty() || t.len() > 64)
        {
            return Err("tags must be 1 to 64 characters each".into());
        }
        if self.cache_ttl_secs.is_some_and(|t| t > 86_400) {
            return Err("cache_ttl_secs must be at most 86400".into());
        }
        if let Some(t) = self.timeout_secs
            && !(t > 0.0 && t <= 86_400.0)
        {
            return Err("timeout_secs must be 0 < seconds <= 86400".into());
        }
        Ok(())
    }

    pub fn input_schema(&self) -> Option<Map<String, Value>> {
        self.input_schema
            .clone()
            .or_else(|| self.schema.as_ref().and_then(|s| s.input.clone()))
    }

    pub fn output_schema(&self) -> Option<Map<String, Value>> {
        self.output_schema
            .clone()
            .or_else(|| self.schema.as_ref().and_then(|s| s.output.clone()))
    }

    /// The overlay part of the input.
    pub fn overlay(&self) -> Overlay {
        Overlay {
            description: self.description.clone(),
            category: self.category.clone(),
            tags: self.tags.clone(),
            capabilities: self.capabilities.clone(),
            security_level: self.security_level,
            metadata: self.metadata.clone(),
            version: self.version.clone(),
            author: self.author.clone(),
            enabled: self.enabled,
            idempotent: self.idempotent,
            timeout_secs: self.timeout_secs,
            read_only: self.read_only,
            cache_ttl_secs: self.cache_ttl_secs,
        }
    }
}

/// A tool as the REST API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ToolRecord {
    pub name: String,
    pub description: String,
    pub endpoint: Option<String>,
    pub category: Option<String>,
    pub capabilities: Vec<String>,
    pub security_level: i64,
    pub schema: Value,
    pub input_schema: Value,
    pub output_schema: Option<Value>,
    pub metadata: Map<String, Value>,
    pub version: Option<String>,
    pub author: Option<String>,
    pub tags: Vec<String>,
    pub server: Option<String>,
    pub original_name: String,
    pub enabled: bool,
    /// Set by hand: calls may be retried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotent: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_ttl_secs: Option<u64>,
    /// `upstream` (discovered), `http` or `catalog` (registered by hand).
    pub source: &'static str,
    /// Whether executing it can succeed at all.
    pub executable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_error: Option<String>,
    /// Why the tool is quarantined (its definition changed and awaits
    /// approval), if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<String>,
}

impl ToolRecord {
    pub fn from_entry(entry: &ToolEntry, endpoint_of: impl Fn(&str) -> Option<String>) -> Self {
        let d = &entry.definition;
        let o = &entry.overlay;
        let input = Value::Object((*d.input_schema).clone());
        let output = d
            .output_schema
            .as_ref()
            .map(|s| Value::Object((**s).clone()));
        let (endpoint, source) = match &entry.target {
            Target::Upstream { server, .. } => (endpoint_of(server), "upstream"),
            Target::Http { url } => (Some(url.clone()), "http"),
            Target::CatalogOnly => (None, "catalog"),
        };
        Self {
            name: entry.public_name.clone(),
            description: d.description.as_deref().unwrap_or_default().to_owned(),
            endpoint,
            category: o.category.clone(),
            capabilities: o.capabilities.clone().unwrap_or_default(),
            security_level: o.security_level.unwrap_or(0),
            schema: json!({"input": input, "output": output}),
            input_schema: input,
            output_schema: output,
            metadata: o.metadata.clone().unwrap_or_default(),
            version: o.version.clone(),
            author: o.author.clone(),
            tags: o.tags.clone().unwrap_or_default(),
            server: entry.server().map(str::to_owned),
            original_name: entry.original_name().to_owned(),
            enabled: entry.enabled(),
            idempotent: o.idempotent,
            timeout_secs: o.timeout_secs,
            read_only: o.read_only,
            cache_ttl_secs: o.cache_ttl_secs,
            source,
            executable: !matches!(entry.target, Target::CatalogOnly),
            annotations: d
                .annotations
                .as_ref()
                .and_then(|a| serde_json::to_value(a).ok()),
            schema_error: entry.validator().err(),
            quarantine: entry
                .quarantine
                .as_ref()
                .map(|r| r.replace("{name}", &entry.public_name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_merge_keeps_unset_fields() {
        let mut o = Overlay {
            category: Some("a".into()),
            tags: Some(vec!["x".into()]),
            ..Default::default()
        };
        o.merge(Overlay {
            tags: Some(vec!["y".into()]),
            enabled: Some(false),
            ..Default::default()
        });
        assert_eq!(o.category.as_deref(), Some("a"));
        assert_eq!(o.tags, Some(vec!["y".to_owned()]));
        assert_eq!(o.enabled, Some(false));
    }

    #[test]
    fn tool_input_accepts_both_schema_spellings_and_rejects_bad_schemas() {
        let a: ToolInput = serde_json::from_value(
            json!({"name": "t", "schema": {"input": {"type": "object"}, "output": {}}}),
        )
        .unwrap();
        assert!(a.input_schema().is_some());
        let bad: ToolInput =
            serde_json::from_value(json!({"name": "t", "input_schema": {"type": 12}})).unwrap();
        assert!(bad.validate().is_err());
        let remote: ToolInput = serde_json::from_value(
            json!({"name": "t", "input_schema": {"$ref": "https://example.com/s.json"}}),
        )
        .unwrap();
        assert!(
            remote.validate().is_err(),
            "remote $ref must not be fetched"
        );
        assert!(serde_json::from_value::<ToolInput>(json!({"nmae": "t"})).is_err());
    }
}
