//! A form from a tool's input schema, and the arguments back from the
//! submitted form.
//!
//! Each property becomes one form field named by its JSON pointer
//! (`/config/retries`), so any property name round-trips: strings, numbers
//! and integers as inputs, booleans and enums as selects, arrays of scalars
//! as one item per line, nested objects as fieldsets, and anything else
//! (arrays of objects, `oneOf`, untyped) as a JSON text area. The
//! arguments are not validated here: the pipeline validates them against
//! the schema, as for any other caller, and its error is shown.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};

/// Deeper objects are edited as JSON.
const MAX_DEPTH: usize = 4;
/// Bigger schemas are edited as JSON past this many fields.
const MAX_FIELDS: usize = 200;

/// How a field is edited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Number,
    Integer,
    Boolean,
    Enum,
    /// An array of scalars, one item per line.
    Lines,
    /// Any JSON value.
    Json,
    /// A nested object's fieldset starts (its fields follow)…
    Open,
    /// …and ends.
    Close,
}

/// One item of the generated form, in order.
#[derive(Debug, Clone)]
pub struct Field {
    pub kind: Kind,
    /// The form field's name: `a:` and the property's JSON pointer.
    pub name: String,
    /// The HTML id (for the label).
    pub id: String,
    /// The property's name (the last pointer segment).
    pub label: String,
    pub description: String,
    pub required: bool,
    /// For enums: (value as JSON, shown text).
    pub options: Vec<(String, String)>,
    /// What the field shows: the submitted value, else the default.
    pub value: String,
    /// A hint on the expected input (type, item type).
    pub hint: String,
}

impl Field {
    /// The template's names for the kinds.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Text => "text",
            Kind::Number => "number",
            Kind::Integer => "integer",
            Kind::Boolean => "boolean",
            Kind::Enum => "enum",
            Kind::Lines => "lines",
            Kind::Json => "json",
            Kind::Open => "open",
            Kind::Close => "close",
        }
    }

    /// Whether an enum option or boolean choice is the current value.
    pub fn selected(&self, option: &str) -> bool {
        self.value == option
    }
}

fn escape_pointer(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

fn type_of(schema: &Value) -> Option<&str> {
    match &schema["type"] {
        Value::String(t) => Some(t.as_str()),
        // `["string", "null"]`: the first non-null type.
        Value::Array(types) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null"),
        _ => None,
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// How a property is edited.
fn kind_of(schema: &Value, depth: usize) -> Kind {
    if schema["enum"].as_array().is_some_and(|e| !e.is_empty()) {
        return Kind::Enum;
    }
    match type_of(schema) {
        Some("string") => Kind::Text,
        Some("number") => Kind::Number,
        Some("integer") => Kind::Integer,
        Some("boolean") => Kind::Boolean,
        Some("array") => match type_of(&schema["items"]) {
            Some("string" | "number" | "integer" | "boolean")
                if schema["items"]["enum"].is_null() =>
            {
                Kind::Lines
            }
            _ => Kind::Json,
        },
        Some("object")
            if depth < MAX_DEPTH
                && schema["properties"]
                    .as_object()
                    .is_some_and(|p| !p.is_empty()) =>
        {
            Kind::Open
        }
        _ => Kind::Json,
    }
}

/// The form for `schema`, showing `values` (a previous submission) where
/// given, else each property's default.
pub fn fields(schema: &Value, values: &HashMap<String, String>) -> Vec<Field> {
    let mut out = Vec::new();
    add_object(schema, "", 0, values, &mut out);
    out
}

fn add_object(
    schema: &Value,
    pointer: &str,
    depth: usize,
    values: &HashMap<String, String>,
    out: &mut Vec<Field>,
) {
    let Some(properties) = schema["properties"].as_object() else {
        return;
    };
    let required: Vec<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    // Required properties first, in the schema's order of `required`.
    let mut ordered: Vec<(&String, &Value)> = properties.iter().collect();
    ordered.sort_by_key(|(name, _)| {
        required
            .iter()
            .position(|r| *r == name.as_str())
            .unwrap_or(usize::MAX)
    });
    for (name, property) in ordered {
        let pointer = format!("{pointer}/{}", escape_pointer(name));
        let mut kind = kind_of(property, depth);
        if out.len() >= MAX_FIELDS && kind == Kind::Open {
            kind = Kind::Json;
        }
        let form_name = format!("a:{pointer}");
        let default = &property["default"];
        let value = match values.get(&form_name) {
            Some(v) => v.clone(),
            None => match kind {
                Kind::Enum if !default.is_null() => default.to_string(),
                Kind::Lines => default
                    .as_array()
                    .map(|items| items.iter().map(scalar_text).collect::<Vec<_>>().join("\n"))
                    .unwrap_or_default(),
                Kind::Json if !default.is_null() => default.to_string(),
                _ => scalar_text(default),
            },
        };
        let options = match kind {
            Kind::Enum => property["enum"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| (v.to_string(), scalar_text(v)))
                .collect(),
            _ => Vec::new(),
        };
        let hint = match kind {
            Kind::Lines => format!(
                "one {} per line",
                type_of(&property["items"]).unwrap_or("item")
            ),
            Kind::Json => "JSON".to_owned(),
            Kind::Integer => "integer".to_owned(),
            Kind::Number => "number".to_owned(),
            _ => String::new(),
        };
        let field = Field {
            kind,
            id: format!("f{}", out.len()),
            name: form_name,
            label: name.clone(),
            description: scalar_text(&property["description"]),
            required: required.contains(&name.as_str()),
            options,
            value,
            hint,
        };
        out.push(field);
        if kind == Kind::Open {
            add_object(property, &pointer, depth + 1, values, out);
            out.push(Field {
                kind: Kind::Close,
                name: String::new(),
                id: String::new(),
                label: String::new(),
                description: String::new(),
                required: false,
                options: Vec::new(),
                value: String::new(),
                hint: String::new(),
            });
        }
    }
}

/// The arguments of a submitted form, shaped by the schema. Empty fields
/// are left out (the pipeline reports a missing required one); a value
/// that cannot be what its field says is an error naming the field.
pub fn arguments(
    schema: &Value,
    form: &HashMap<String, String>,
) -> Result<Map<String, Value>, String> {
    object_arguments(schema, "", 0, form)
}

fn object_arguments(
    schema: &Value,
    pointer: &str,
    depth: usize,
    form: &HashMap<String, String>,
) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    let Some(properties) = schema["properties"].as_object() else {
        return Ok(out);
    };
    for (name, property) in properties {
        let pointer = format!("{pointer}/{}", escape_pointer(name));
        let kind = kind_of(property, depth);
        if kind == Kind::Open {
            let nested = object_arguments(property, &pointer, depth + 1, form)?;
            let required = schema["required"]
                .as_array()
                .is_some_and(|r| r.iter().any(|v| v == name.as_str()));
            if !nested.is_empty() || required {
                out.insert(name.clone(), Value::Object(nested));
            }
            continue;
        }
        // A form cut short at MAX_FIELDS shows the rest as JSON.
        let raw = match form.get(&format!("a:{pointer}")) {
            Some(raw) => raw,
            None => continue,
        };
        let value = match kind {
            Kind::Text => {
                if raw.is_empty() {
                    continue;
                }
                Value::String(raw.clone())
            }
            Kind::Lines => {
                let item = type_of(&property["items"]).unwrap_or("string");
                let items: Result<Vec<Value>, String> = raw
                    .lines()
                    .map(|l| l.trim_end_matches('\r'))
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| scalar(item, l).map_err(|e| format!("{}: {e}", name)))
                    .collect();
                let items = items?;
                if items.is_empty() {
                    continue;
                }
                Value::Array(items)
            }
            _ if raw.trim().is_empty() => continue,
            Kind::Number => scalar("number", raw.trim()).map_err(|e| format!("{name}: {e}"))?,
            Kind::Integer => scalar("integer", raw.trim()).map_err(|e| format!("{name}: {e}"))?,
            Kind::Boolean => scalar("boolean", raw.trim()).map_err(|e| format!("{name}: {e}"))?,
            Kind::Enum | Kind::Json => {
                serde_json::from_str(raw).map_err(|e| format!("{name}: not valid JSON ({e})"))?
            }
            Kind::Open | Kind::Close => continue,
        };
        out.insert(name.clone(), value);
    }
    Ok(out)
}

/// One scalar of the given JSON Schema type from its text.
fn scalar(kind: &str, text: &str) -> Result<Value, String> {
    match kind {
        "integer" => text
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("{text:?} is not an integer")),
        "number" => text
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(|n| {
                // 3 rather than 3.0, as a person typed it.
                match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
                    _ => Value::Number(n),
                }
            })
            .ok_or_else(|| format!("{text:?} is not a number")),
        "boolean" => match text.trim() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            other => Err(format!("{other:?} is not true or false")),
        },
        _ => Ok(Value::String(text.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["message", "mode"],
            "properties": {
                "message": {"type": "string", "description": "what to say"},
                "count": {"type": "integer", "default": 2},
                "ratio": {"type": "number"},
                "loud": {"type": "boolean"},
                "mode": {"enum": ["a", "b"]},
                "tags": {"type": "array", "items": {"type": "string"}},
                "points": {"type": "array", "items": {"type": "integer"}},
                "pairs": {"type": "array", "items": {"type": "object"}},
                "a/b": {"type": "string"},
                "options": {"type": "object", "required": ["depth"], "properties": {
                    "depth": {"type": "integer"},
                    "inner": {"type": "object", "properties": {"flag": {"type": "boolean"}}}
                }}
            }
        })
    }

    fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_kind_of_property_gets_its_field() {
        let fields = fields(&schema(), &HashMap::new());
        let kinds: Vec<(&str, &str, bool)> = fields
            .iter()
            .map(|f| (f.name.as_str(), f.kind_name(), f.required))
            .collect();
        assert_eq!(
            kinds,
            [
                ("a:/message", "text", true),
                ("a:/mode", "enum", true),
                ("a:/a~1b", "text", false),
                ("a:/count", "integer", false),
                ("a:/loud", "boolean", false),
                ("a:/options", "open", false),
                ("a:/options/depth", "integer", true),
                ("a:/options/inner", "open", false),
                ("a:/options/inner/flag", "boolean", false),
                ("", "close", false),
                ("", "close", false),
                ("a:/pairs", "json", false),
                ("a:/points", "lines", false),
                ("a:/ratio", "number", false),
                ("a:/tags", "lines", false),
            ]
        );
        assert_eq!(fields[3].value, "2", "the default is shown");
        assert_eq!(fields[0].description, "what to say");
        assert_eq!(
            fields[1].options,
            [("\"a\"".into(), "a".into()), ("\"b\"".into(), "b".into())]
        );
    }

    #[test]
    fn a_submitted_form_gives_typed_arguments() {
        let args = arguments(
            &schema(),
            &form(&[
                ("a:/message", "hi <b>"),
                ("a:/count", "3"),
                ("a:/ratio", "0.5"),
                ("a:/loud", "true"),
                ("a:/mode", "\"b\""),
                ("a:/tags", "x\r\ny\n\n"),
                ("a:/points", "1\n2"),
                ("a:/pairs", "[{\"k\": 1}]"),
                ("a:/a~1b", "slash"),
                ("a:/options/depth", "4"),
                ("a:/options/inner/flag", ""),
            ]),
        )
        .unwrap();
        assert_eq!(
            Value::Object(args),
            json!({
                "message": "hi <b>", "count": 3, "ratio": 0.5, "loud": true, "mode": "b",
                "tags": ["x", "y"], "points": [1, 2], "pairs": [{"k": 1}], "a/b": "slash",
                "options": {"depth": 4}
            })
        );
    }

    #[test]
    fn empty_fields_are_left_out_and_bad_values_named() {
        let args = arguments(&schema(), &form(&[("a:/message", ""), ("a:/count", "")])).unwrap();
        assert_eq!(Value::Object(args), json!({}));
        let err = arguments(&schema(), &form(&[("a:/count", "two")])).unwrap_err();
        assert!(err.starts_with("count:"), "{err}");
        let err = arguments(&schema(), &form(&[("a:/points", "1\nx")])).unwrap_err();
        assert!(err.starts_with("points:"), "{err}");
        let err = arguments(&schema(), &form(&[("a:/pairs", "[")])).unwrap_err();
        assert!(err.contains("not valid JSON"), "{err}");
    }

    #[test]
    fn a_required_nested_object_is_sent_even_when_empty() {
        let schema = json!({"type": "object", "required": ["o"], "properties": {
            "o": {"type": "object", "properties": {"x": {"type": "string"}}}}});
        let args = arguments(&schema, &HashMap::new()).unwrap();
        assert_eq!(Value::Object(args), json!({"o": {}}));
    }
}
