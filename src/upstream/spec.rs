//! What an upstream MCP server is: its name and how to reach it. The wire shape
//! is the `mcpServers` entry of desktop MCP clients, plus a `name`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where a server definition came from. Config-file servers are read-only over
/// the API: the file is their source of truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Config,
    Api,
}

/// How the gateway reaches a server. Its `Debug` output hides environment
/// and header values and URL passwords.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Transport {
    /// A child process speaking MCP on stdin/stdout.
    Stdio {
        command: String,
        #[serde(default)]
        args: Vec<String>,
        #[serde(default)]
        env: BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cwd: Option<String>,
    },
    /// Streamable HTTP (both eras; detected per upstream).
    #[serde(alias = "http", alias = "streamable-http")]
    StreamableHttp {
        url: String,
        #[serde(default)]
        headers: BTreeMap<String, String>,
    },
    /// The 2024-11-05 HTTP+SSE transport.
    Sse {
        url: String,
        #[serde(default)]
        headers: BTreeMap<String, String>,
    },
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let masked = |m: &BTreeMap<String, String>| -> BTreeMap<String, &'static str> {
            m.keys().map(|k| (k.clone(), MASK)).collect()
        };
        match self {
            Self::Stdio {
                command,
                args,
                env,
                cwd,
            } => f
                .debug_struct("Stdio")
                .field("command", command)
                .field("args", args)
                .field("env", &masked(env))
                .field("cwd", cwd)
                .finish(),
            Self::StreamableHttp { url, headers } => f
                .debug_struct("StreamableHttp")
                .field("url", &crate::outbound::redact_url(url))
                .field("headers", &masked(headers))
                .finish(),
            Self::Sse { url, headers } => f
                .debug_struct("Sse")
                .field("url", &crate::outbound::redact_url(url))
                .field("headers", &masked(headers))
                .finish(),
        }
    }
}

/// What happens when the server changes a tool's definition (see
/// `catalog::pins`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeMode {
    /// Record the change (with its diff) and use the new definition.
    #[default]
    Accept,
    /// Record the change and hide the tool until an operator approves it.
    Quarantine,
}

/// Who shares a connection to the server (see `upstream::isolated`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// One connection (one process) for every caller.
    #[default]
    Shared,
    /// One connection per legacy MCP session; callers without a session
    /// (2026-07-28 requests, REST, CLI) get their principal's.
    Session,
    /// One connection per principal (tenant and user), shared by that
    /// principal's sessions and requests.
    Principal,
}

/// Isolated connections per server at most, unless the server says.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 32;
/// How long an isolated connection may sit unused, unless the server says.
pub const DEFAULT_IDLE_TIMEOUT_SECS: f64 = 300.0;

/// One upstream server definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerSpec {
    pub name: String,
    #[serde(flatten)]
    pub transport: Transport,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Per-call timeout override, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<f64>,
    #[serde(default)]
    pub on_tool_change: ChangeMode,
    /// Whether the server's tool annotations (`readOnlyHint`,
    /// `idempotentHint`) are believed, e.g. to allow retries.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub trusted: bool,
    /// Calls in flight to this server at most (a stdio server that can take
    /// one call at a time gets 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// A progress notification restarts the call's timeout, up to
    /// `max_call_secs` (default 600) in all.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub extend_timeout_on_progress: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_call_secs: Option<f64>,
    /// Overrides the gateway's circuit breaker settings for this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<crate::guard::breaker::BreakerConfig>,
    /// Whether callers share one connection, or each session or principal
    /// gets its own (for servers whose state or credentials belong to one
    /// client).
    #[serde(default)]
    pub isolation: Isolation,
    /// Isolated connections open at once at most (default 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// An isolated connection unused this long is closed (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<f64>,
    #[serde(default = "api_source")]
    pub source: Source,
}

/// What secret values look like in API responses.
pub const MASK: &str = "********";

fn yes() -> bool {
    true
}

fn api_source() -> Source {
    Source::Api
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error(
        "invalid server name {0:?}: use 1-64 of A-Z a-z 0-9 _ - . starting with a letter or digit"
    )]
    BadName(String),
    #[error("{0}")]
    Invalid(String),
}

impl ServerSpec {
    /// Parses one `mcpServers` entry (`command`/`args`/`env`/`cwd`, or `url`
    /// with optional `type` and `headers`).
    pub fn from_mcp_servers_entry(name: &str, entry: Value) -> Result<Self, SpecError> {
        let mut spec = Self::parse(with_name(name, entry)?, false)?;
        spec.source = Source::Config;
        Ok(spec)
    }

    /// Parses the REST shape: an `mcpServers` entry with a `name` field.
    /// Unknown fields are refused (they are most likely typos).
    pub fn from_api_json(value: Value) -> Result<Self, SpecError> {
        Self::parse(value, true)
    }

    /// `strict` refuses unknown fields; config files from desktop clients
    /// carry fields of their own (`autoApprove`, ...), which are ignored.
    fn parse(value: Value, strict: bool) -> Result<Self, SpecError> {
        let Value::Object(mut map) = value else {
            return Err(SpecError::Invalid("expected a JSON object".into()));
        };
        let name = match map.remove("name") {
            Some(Value::String(s)) => s,
            _ => return Err(SpecError::Invalid("name is required".into())),
        };
        validate_name(&name)?;
        let enabled = match (map.remove("enabled"), map.remove("disabled")) {
            (None | Some(Value::Null), None | Some(Value::Null)) => true,
            (Some(Value::Bool(b)), None) => b,
            // `disabled` is how several desktop clients spell it.
            (None, Some(Value::Bool(b))) => !b,
            _ => return Err(SpecError::Invalid("enabled must be a boolean".into())),
        };
        let timeout_secs = match map.remove("timeout_secs") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_f64()
                    .filter(|t| *t > 0.0 && *t <= 86_400.0)
                    .ok_or_else(|| {
                        SpecError::Invalid("timeout_secs must be 0 < t <= 86400".into())
                    })?,
            ),
        };
        let on_tool_change = match map.remove("on_tool_change") {
            None | Some(Value::Null) => ChangeMode::Accept,
            Some(v) => serde_json::from_value(v).map_err(|_| {
                SpecError::Invalid("on_tool_change must be accept or quarantine".into())
            })?,
        };
        let trusted = match map.remove("trusted") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => b,
            Some(_) => return Err(SpecError::Invalid("trusted must be a boolean".into())),
        };
        let max_concurrency =
            match map.remove("max_concurrency") {
                None | Some(Value::Null) => None,
                Some(v) => Some(v.as_u64().filter(|n| (1..=10_000).contains(n)).ok_or_else(
                    || SpecError::Invalid("max_concurrency must be 1 to 10000".into()),
                )? as u32),
            };
        let extend_timeout_on_progress = match map.remove("extend_timeout_on_progress") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => b,
            Some(_) => {
                return Err(SpecError::Invalid(
                    "extend_timeout_on_progress must be a boolean".into(),
                ));
            }
        };
        let max_call_secs = match map.remove("max_call_secs") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_f64()
                    .filter(|t| *t > 0.0 && *t <= 86_400.0)
                    .ok_or_else(|| {
                        SpecError::Invalid("max_call_secs must be 0 < t <= 86400".into())
                    })?,
            ),
        };
        let circuit_breaker = match map.remove("circuit_breaker") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let config: crate::guard::breaker::BreakerConfig = serde_json::from_value(v)
                    .map_err(|e| SpecError::Invalid(format!("circuit_breaker: {e}")))?;
                config
                    .validate()
                    .map_err(|e| SpecError::Invalid(format!("circuit_breaker: {e}")))?;
                Some(config)
            }
        };
        let isolation = match map.remove("isolation") {
            None | Some(Value::Null) => Isolation::Shared,
            Some(v) => serde_json::from_value(v).map_err(|_| {
                SpecError::Invalid("isolation must be shared, session or principal".into())
            })?,
        };
        let max_connections =
            match map.remove("max_connections") {
                None | Some(Value::Null) => None,
                Some(v) => Some(v.as_u64().filter(|n| (1..=10_000).contains(n)).ok_or_else(
                    || SpecError::Invalid("max_connections must be 1 to 10000".into()),
                )? as u32),
            };
        let idle_timeout_secs = match map.remove("idle_timeout_secs") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_f64()
                    .filter(|t| *t > 0.0 && *t <= 86_400.0)
                    .ok_or_else(|| {
                        SpecError::Invalid("idle_timeout_secs must be 0 < t <= 86400".into())
                    })?,
            ),
        };
        for read_only in [
            "source",
            "status",
            "tools",
            "conflicts",
            "stderr_tail",
            "breaker",
        ] {
            map.remove(read_only);
        }
        let kind = map
            .remove("type")
            .or_else(|| map.remove("transport"))
            .and_then(|v| v.as_str().map(str::to_ascii_lowercase));
        let transport = match (map.contains_key("command"), map.contains_key("url")) {
            (true, true) => {
                return Err(SpecError::Invalid(
                    "give either command (stdio) or url (remote), not both".into(),
                ));
            }
            (false, false) => {
                return Err(SpecError::Invalid(
                    "give command (stdio server) or url (remote server)".into(),
                ));
            }
            (true, false) => {
                if kind.as_deref().is_some_and(|k| k != "stdio") {
                    return Err(SpecError::Invalid(format!(
                        "type {:?} does not take a command",
                        kind.unwrap_or_default()
                    )));
                }
                let command = string_field(&map, "command")?.unwrap_or_default();
                if command.trim().is_empty() {
                    return Err(SpecError::Invalid("command must not be empty".into()));
                }
                Transport::Stdio {
                    command,
                    args: string_list(&map, "args")?,
                    env: string_map(&map, "env")?,
                    cwd: string_field(&map, "cwd")?,
                }
            }
            (false, true) => {
                let url = string_field(&map, "url")?.unwrap_or_default();
                let parsed = url::Url::parse(&url)
                    .map_err(|e| SpecError::Invalid(format!("url {url:?} is not a URL: {e}")))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(SpecError::Invalid("url must be http or https".into()));
                }
                let headers = string_map(&map, "headers")?;
                for (k, v) in &headers {
                    if http::HeaderName::try_from(k.as_str()).is_err()
                        || http::HeaderValue::try_from(v.as_str()).is_err()
                    {
                        return Err(SpecError::Invalid(format!(
                            "header {k:?} is not a valid HTTP header"
                        )));
                    }
                }
                match kind.as_deref() {
                    None
                    | Some("http")
                    | Some("streamable-http")
                    | Some("streamable_http")
                    | Some("streamablehttp") => Transport::StreamableHttp { url, headers },
                    Some("sse") => Transport::Sse { url, headers },
                    Some(other) => {
                        return Err(SpecError::Invalid(format!(
                            "type {other:?} unknown: use http, streamable-http or sse"
                        )));
                    }
                }
            }
        };
        let stdio = matches!(transport, Transport::Stdio { .. });
        let known = |k: &str| match k {
            "command" | "args" | "env" | "cwd" => stdio,
            "url" | "headers" => !stdio,
            _ => false,
        };
        if let Some(key) = map.keys().find(|k| !known(k)) {
            if strict {
                let kind = if stdio {
                    "a stdio server"
                } else {
                    "a remote server"
                };
                return Err(SpecError::Invalid(format!(
                    "unknown field {key:?} for {kind}"
                )));
            }
            tracing::debug!(server = %name, field = %key, "config entry field ignored");
        }
        Ok(Self {
            name,
            transport,
            enabled,
            timeout_secs,
            on_tool_change,
            trusted,
            max_concurrency,
            extend_timeout_on_progress,
            max_call_secs,
            circuit_breaker,
            isolation,
            max_connections,
            idle_timeout_secs,
            source: Source::Api,
        })
    }

    /// Isolated connections at most, for an isolated server.
    pub fn connection_limit(&self) -> usize {
        self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS) as usize
    }

    /// How long an isolated connection may sit unused.
    pub fn idle_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(
            self.idle_timeout_secs.unwrap_or(DEFAULT_IDLE_TIMEOUT_SECS),
        )
    }

    pub fn is_stdio(&self) -> bool {
        matches!(self.transport, Transport::Stdio { .. })
    }

    /// The remote URL, for HTTP transports.
    pub fn url(&self) -> Option<&str> {
        match &self.transport {
            Transport::StreamableHttp { url, .. } | Transport::Sse { url, .. } => Some(url),
            Transport::Stdio { .. } => None,
        }
    }

    /// The definition as the API shows it: environment values and header
    /// values are secrets, so only their names are returned.
    pub fn redacted_json(&self) -> Value {
        let mut value = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(map) = value.as_object_mut() {
            for key in ["env", "headers"] {
                if let Some(Value::Object(items)) = map.get_mut(key) {
                    for v in items.values_mut() {
                        *v = Value::String(MASK.into());
                    }
                }
            }
            if let Some(Value::String(url)) = map.get_mut("url") {
                *url = crate::outbound::redact_url(url);
            }
        }
        value
    }
}

impl ServerSpec {
    /// The definition as stored: header values, environment values and a
    /// URL with credentials encrypted, each bound to its server and field.
    pub fn sealed(&self, keys: &crate::secrets::Keyring) -> Self {
        let mut spec = self.clone();
        let name = self.name.clone();
        spec.for_each_secret(|context, value| {
            *value = keys.encrypt(value, &format!("server/{name}/{context}"));
            Ok(())
        })
        .unwrap_or_default();
        spec
    }

    /// The definition as used, from its stored form; the flag says whether
    /// the stored form should be written again (values in clear, or under
    /// an old key).
    pub fn opened(
        &self,
        keys: &crate::secrets::Keyring,
    ) -> Result<(Self, bool), crate::secrets::SecretsError> {
        let mut spec = self.clone();
        let name = self.name.clone();
        let mut rewrite = false;
        spec.for_each_secret(|context, value| {
            rewrite |= keys.needs_reencrypt(value);
            *value = keys.decrypt(value, &format!("server/{name}/{context}"))?;
            Ok(())
        })?;
        Ok((spec, rewrite))
    }

    /// `text` (an error message, say) with every secret value of this
    /// definition masked: the URL's password, header and environment values.
    pub fn scrub(&self, text: &str) -> String {
        let mut secrets: Vec<String> = Vec::new();
        match &self.transport {
            Transport::Stdio { env, .. } => secrets.extend(env.values().cloned()),
            Transport::StreamableHttp { url, headers } | Transport::Sse { url, headers } => {
                secrets.extend(headers.values().cloned());
                if let Ok(u) = url::Url::parse(url)
                    && let Some(pw) = u.password()
                {
                    secrets.push(pw.to_owned());
                    if let Ok(decoded) = urlencoding_decode(pw) {
                        secrets.push(decoded);
                    }
                }
            }
        }
        // Longest first, so a secret containing another is masked whole;
        // very short values would mask ordinary words.
        secrets.retain(|s| s.len() >= 4);
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let mut out = text.to_owned();
        for secret in &secrets {
            out = out.replace(secret.as_str(), "****");
        }
        out
    }

    /// Visits every secret value with where it is (`headers/NAME`,
    /// `env/NAME`, `url` when the URL carries credentials or is sealed).
    fn for_each_secret(
        &mut self,
        mut visit: impl FnMut(&str, &mut String) -> Result<(), crate::secrets::SecretsError>,
    ) -> Result<(), crate::secrets::SecretsError> {
        let (values, kind, url) = match &mut self.transport {
            Transport::Stdio { env, .. } => (env, "env", None),
            Transport::StreamableHttp { url, headers } | Transport::Sse { url, headers } => {
                (headers, "headers", Some(url))
            }
        };
        for (key, value) in values.iter_mut() {
            visit(&format!("{kind}/{key}"), value)?;
        }
        if let Some(url) = url {
            let has_credentials = url.starts_with(crate::secrets::PREFIX)
                || url::Url::parse(url)
                    .is_ok_and(|u| !u.username().is_empty() || u.password().is_some());
            if has_credentials {
                visit("url", url)?;
            }
        }
        Ok(())
    }
}

/// Percent-decodes a URL component.
fn urlencoding_decode(text: &str) -> Result<String, std::string::FromUtf8Error> {
    String::from_utf8(
        url::form_urlencoded::parse(format!("x={text}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned().into_bytes())
            .unwrap_or_default(),
    )
}

fn with_name(name: &str, entry: Value) -> Result<Value, SpecError> {
    let Value::Object(mut map) = entry else {
        return Err(SpecError::Invalid("expected an object".into()));
    };
    map.insert("name".into(), Value::String(name.to_owned()));
    Ok(Value::Object(map))
}

/// Server names become tool-name prefixes, so they obey the tool-name alphabet.
pub fn validate_name(name: &str) -> Result<(), SpecError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(SpecError::BadName(name.to_owned()))
    }
}

fn string_field(
    map: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<String>, SpecError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(SpecError::Invalid(format!("{key} must be a string"))),
    }
}

fn string_list(map: &serde_json::Map<String, Value>, key: &str) -> Result<Vec<String>, SpecError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| SpecError::Invalid(format!("{key} must be a list of strings")))
            })
            .collect(),
        Some(_) => Err(SpecError::Invalid(format!(
            "{key} must be a list of strings"
        ))),
    }
}

fn string_map(
    map: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<BTreeMap<String, String>, SpecError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(items)) => items
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                Value::Number(n) => Ok((k.clone(), n.to_string())),
                Value::Bool(b) => Ok((k.clone(), b.to_string())),
                _ => Err(SpecError::Invalid(format!("{key}.{k} must be a string"))),
            })
            .collect(),
        Some(_) => Err(SpecError::Invalid(format!(
            "{key} must be an object of strings"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn isolation_defaults_to_shared_and_is_validated() {
        let s = ServerSpec::from_mcp_servers_entry("a", json!({"command": "x"})).unwrap();
        assert_eq!(s.isolation, Isolation::Shared);
        assert_eq!(s.connection_limit(), DEFAULT_MAX_CONNECTIONS as usize);
        let s = ServerSpec::from_mcp_servers_entry(
            "a",
            json!({"command": "x", "isolation": "session", "max_connections": 2, "idle_timeout_secs": 1.5}),
        )
        .unwrap();
        assert_eq!(s.isolation, Isolation::Session);
        assert_eq!(s.connection_limit(), 2);
        assert_eq!(s.idle_timeout(), std::time::Duration::from_millis(1500));
        // A stored definition of before the setting reads as shared.
        let mut stored = serde_json::to_value(&s).unwrap();
        stored.as_object_mut().unwrap().remove("isolation");
        let old: ServerSpec = serde_json::from_value(stored).unwrap();
        assert_eq!(old.isolation, Isolation::Shared);
        for bad in [
            json!({"command": "x", "isolation": "per-call"}),
            json!({"command": "x", "max_connections": 0}),
            json!({"command": "x", "idle_timeout_secs": -1}),
        ] {
            assert!(
                ServerSpec::from_api_json({
                    let mut b = bad.clone();
                    b["name"] = json!("a");
                    b
                })
                .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn parses_stdio_and_remote_entries() {
        let s = ServerSpec::from_mcp_servers_entry(
            "time",
            json!({"command": "uvx", "args": ["mcp-server-time"]}),
        )
        .unwrap();
        assert!(s.is_stdio());
        assert_eq!(s.source, Source::Config);
        let r =
            ServerSpec::from_mcp_servers_entry("r", json!({"url": "http://h/sse", "type": "sse"}))
                .unwrap();
        assert!(matches!(r.transport, Transport::Sse { .. }));
        let h = ServerSpec::from_api_json(json!({"name": "h", "url": "https://h/mcp"})).unwrap();
        assert!(matches!(h.transport, Transport::StreamableHttp { .. }));
    }

    #[test]
    fn rejects_bad_entries() {
        assert!(ServerSpec::from_api_json(json!({"name": "a b", "command": "x"})).is_err());
        assert!(
            ServerSpec::from_api_json(json!({"name": "a", "command": "x", "url": "http://h"}))
                .is_err()
        );
        assert!(ServerSpec::from_api_json(json!({"name": "a", "url": "ftp://h"})).is_err());
        assert!(ServerSpec::from_api_json(json!({"name": "a", "args": []})).is_err());
        assert!(ServerSpec::from_api_json(json!({"name": "a", "command": 3})).is_err());
    }

    #[test]
    fn seals_secrets_for_the_store() {
        let keys =
            crate::secrets::Keyring::new("a-test-key-of-at-least-thirty-two-bytes", &[]).unwrap();
        let r = ServerSpec::from_api_json(json!({"name": "r", "url": "https://u:pw@h/mcp",
            "headers": {"Authorization": "Bearer t0k", "X-Other": "v"}}))
        .unwrap();
        let sealed = r.sealed(&keys);
        let stored = serde_json::to_string(&sealed).unwrap();
        assert!(
            !stored.contains("t0k") && !stored.contains("pw@"),
            "{stored}"
        );
        let (opened, rewrite) = sealed.opened(&keys).unwrap();
        assert_eq!(opened, r);
        assert!(!rewrite);
        // A plain URL stays readable; a stored clear row asks to be rewritten.
        let s = ServerSpec::from_api_json(
            json!({"name": "s", "command": "x", "env": {"TOKEN": "secret"}}),
        )
        .unwrap();
        let stored = serde_json::to_string(&s.sealed(&keys)).unwrap();
        assert!(!stored.contains("secret") && stored.contains("\"command\":\"x\""));
        assert!(s.opened(&keys).unwrap().1);
        // A sealed value moved to another server does not open.
        let mut moved = r.sealed(&keys);
        moved.name = "other".into();
        assert!(moved.opened(&keys).is_err());
        // Debug output hides the values.
        let shown = format!("{r:?} {s:?}");
        assert!(
            !shown.contains("t0k") && !shown.contains("pw@") && !shown.contains("secret"),
            "{shown}"
        );
    }

    #[test]
    fn scrubs_secrets_from_messages() {
        let r =
            ServerSpec::from_api_json(json!({"name": "r", "url": "https://u:p%40ss-word@h/mcp",
            "headers": {"Authorization": "Bearer t0k-123"}}))
            .unwrap();
        let text = r.scrub("error sending request for url (https://u:p%40ss-word@h/mcp): 401 Bearer t0k-123 p@ss-word");
        assert!(
            !text.contains("t0k-123") && !text.contains("ss-word"),
            "{text}"
        );
        assert!(text.contains("https://u:****@h/mcp"), "{text}");
    }

    #[test]
    fn redacts_secrets() {
        let s = ServerSpec::from_api_json(
            json!({"name": "a", "command": "x", "env": {"TOKEN": "secret"}}),
        )
        .unwrap();
        assert!(!s.redacted_json().to_string().contains("secret"));
        let r = ServerSpec::from_api_json(json!({"name": "r", "url": "https://u:pw@h/mcp", "headers": {"Authorization": "Bearer t0k"}})).unwrap();
        let shown = r.redacted_json().to_string();
        assert!(!shown.contains("t0k") && !shown.contains("pw@"), "{shown}");
    }
}
