//! Settings: built-in defaults, then an optional config file, then `META_MCP_*`
//! environment variables. One typed [`Settings`] value is the single source of
//! truth; everything else reads from it.
//!
//! The config file is the `mcpServers` JSON that desktop MCP clients already use
//! (so users can point metamcp at the file they have), optionally with gateway
//! settings beside `mcpServers`; a TOML file with the same keys works too.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    catalog::profiles::Profile,
    upstream::spec::{ServerSpec, SpecError},
};

/// A setting that could not be used, named the way the user wrote it.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {name}: {reason}")]
pub struct SettingError {
    pub name: String,
    pub reason: String,
}

impl SettingError {
    fn new(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            reason: reason.into(),
        }
    }
}

/// How public tool and prompt names are derived from (server, original name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PrefixMode {
    /// Always `server{sep}tool`.
    #[default]
    Always,
    /// Prefix only names that more than one source provides.
    Conditional,
    /// Never prefix; a second tool of the same name is refused.
    Never,
}

impl std::str::FromStr for PrefixMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "always" => Ok(Self::Always),
            "conditional" => Ok(Self::Conditional),
            "never" => Ok(Self::Never),
            other => Err(format!(
                "expected always, conditional or never, got {other:?}"
            )),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Rules for requests the gateway makes to URLs a user supplied.
#[derive(Debug, Clone)]
pub struct OutboundSettings {
    /// Loopback (127.0.0.0/8, ::1): allowed by default for local development.
    pub allow_loopback: bool,
    /// Private ranges (10/8, 172.16/12, 192.168/16, fc00::/7).
    pub allow_private: bool,
    /// Link-local and cloud metadata addresses (169.254.0.0/16, fe80::/10, ...).
    pub allow_link_local: bool,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub max_response_bytes: usize,
}

/// The OTLP/HTTP traces URL of `value`: as given when `base` is false (or
/// when it already ends in `/v1/traces`), else with `/v1/traces` appended,
/// as the OpenTelemetry SDKs do with `OTEL_EXPORTER_OTLP_ENDPOINT`.
fn otlp_url(value: &str, base: bool) -> Result<String, String> {
    let value = value.trim();
    let url = url::Url::parse(value).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("expected an http or https URL (OTLP over HTTP)".into());
    }
    if !base || url.path().ends_with("/v1/traces") {
        return Ok(value.to_owned());
    }
    Ok(format!("{}/v1/traces", value.trim_end_matches('/')))
}

/// Where traces go (see [`crate::telemetry::trace`]).
#[derive(Debug, Clone, PartialEq)]
pub struct OtelSettings {
    /// The OTLP/HTTP traces URL (`.../v1/traces`); `None`: no traces.
    pub endpoint: Option<String>,
    pub service_name: String,
    /// Share of the traces the gateway starts that are recorded; a caller's
    /// sampling decision (its `traceparent` flags) is always followed.
    pub sample_ratio: f64,
}

impl Default for OtelSettings {
    fn default() -> Self {
        Self {
            endpoint: None,
            service_name: "metamcp".into(),
            sample_ratio: 1.0,
        }
    }
}

/// Webhook delivery: retries, timeouts, queue and delivery-log bounds.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Attempts per delivery, the first one included.
    pub max_attempts: u32,
    /// The delay before the first retry; each further retry doubles it
    /// (with jitter), up to [`crate::webhooks::MAX_RETRY_DELAY`].
    pub base_delay: Duration,
    /// How long one attempt may take, connecting included.
    pub timeout: Duration,
    /// Deliveries waiting per webhook; past it, new ones are dropped (and
    /// counted).
    pub queue_size: usize,
    /// Delivery-log records older than this are deleted.
    pub retention: Duration,
    /// Delivery-log records kept per webhook (the newest).
    pub keep_per_webhook: u32,
    /// Plain `http://` receivers beyond loopback (otherwise `https://` only).
    pub allow_http: bool,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            queue_size: 1000,
            retention: Duration::from_secs(7 * 86_400),
            keep_per_webhook: 1000,
            allow_http: false,
        }
    }
}

/// Every setting of the gateway.
#[derive(Debug, Clone)]
pub struct Settings {
    pub host: IpAddr,
    pub port: u16,
    pub debug: bool,
    pub database_url: String,
    /// Connections of the database pool at most (`None`: the store's
    /// default for its backend).
    pub database_pool_size: Option<u32>,
    pub logging_level: String,
    pub log_format: LogFormat,
    /// Tool arguments in the log (debug level); off: they never appear.
    pub log_tool_arguments: bool,
    pub otel: OtelSettings,
    pub data_dir: PathBuf,
    pub config_file: Option<PathBuf>,
    pub public_url: Option<url::Url>,
    pub allowed_hosts: Vec<String>,
    pub allowed_origins: Vec<String>,
    pub allow_stdio_api: bool,
    pub prefix_mode: PrefixMode,
    pub separator: String,
    pub max_body_bytes: usize,
    pub call_timeout: Duration,
    pub connect_timeout: Duration,
    pub health_interval: Duration,
    pub shutdown_grace: Duration,
    pub outbound: OutboundSettings,
    /// Servers declared in the config file (`source: config`), in file order.
    pub servers: Vec<ServerSpec>,
    /// Profiles declared in the config file (`source: config`).
    pub profiles: Vec<Profile>,
    /// The settings given beside `mcpServers` in the config file, as read
    /// (live config warns when they change: they need a restart).
    pub file_settings: Vec<(String, String)>,
    /// How often the config file is checked for changes; `None` is off.
    pub config_watch: Option<Duration>,
    /// Circuit breaker defaults (servers may override them).
    pub breaker: crate::guard::breaker::BreakerConfig,
    pub retry: crate::guard::retry::RetryPolicy,
    pub rate_limits: crate::guard::RateLimits,
    /// Consecutive failed connection attempts after which a server is left
    /// failed (until restarted over the API); 0 retries for ever.
    pub max_restarts: u32,
    /// Consecutive failed health probes after which a connection is
    /// considered hung and is replaced.
    pub health_failures: u32,
    /// The longest a cached result lives (a tool's `cache_ttl_secs` is
    /// capped at it).
    pub cache_ttl: Duration,
    pub cache_max_size: u64,
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and channel of this deployment, so
    /// deployments (and test runs) sharing one Redis never meet.
    pub redis_prefix: String,
    /// How long a legacy MCP session lives unused (in this process, and in
    /// Redis when sessions are shared between replicas).
    pub session_idle: Duration,
    /// Serve Prometheus metrics at `/metrics`.
    pub metrics_enabled: bool,
    /// Tools per page of an MCP `tools/list` answer.
    pub page_size: usize,
    /// Outside OAuth/OIDC issuers whose tokens are accepted.
    pub oauth_issuers: Vec<crate::auth::external::IssuerConfig>,
    /// Origins allowed cross-origin reads (CORS); empty: CORS closed.
    pub cors_origins: Vec<String>,
    /// Whether CORS requests may carry cookies (never with `*`).
    pub cors_allow_credentials: bool,
    /// The key stored secrets are encrypted with (generated into the data
    /// directory when unset with SQLite; required with PostgreSQL).
    pub encryption_key: Option<crate::secrets::SecretString>,
    /// Previous keys, still accepted for decryption while rows move to the
    /// current one.
    pub encryption_old_keys: Vec<crate::secrets::SecretString>,
    pub auth: AuthSettings,
    /// Who computes the sentence vectors of semantic search.
    pub embedding_provider: EmbeddingProvider,
    /// The folder of the local model; `None` is `<data_dir>/models/all-MiniLM-L6-v2`.
    pub model_dir: Option<PathBuf>,
    /// Base URL of an OpenAI-compatible API (`.../v1`), for the `openai` provider.
    pub embedding_url: Option<String>,
    pub embedding_model: Option<String>,
    pub embedding_api_key: Option<Secret>,
    /// The audit trail (`META_MCP_AUDIT_*`).
    pub audit: crate::audit::AuditSettings,
    pub webhooks: WebhookSettings,
}

/// Which embedder semantic search uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingProvider {
    /// all-MiniLM-L6-v2 on the CPU (cargo feature `semantic`).
    Local,
    /// An OpenAI-compatible `/v1/embeddings` endpoint.
    OpenAi,
    /// Keyword search only.
    Off,
}

/// A setting that must not appear in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Signing algorithm of the access tokens metamcp issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    Hs256,
    Rs256,
    Es256,
    EdDsa,
}

impl std::str::FromStr for JwtAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().as_str() {
            "HS256" => Ok(Self::Hs256),
            "RS256" => Ok(Self::Rs256),
            "ES256" => Ok(Self::Es256),
            "EDDSA" => Ok(Self::EdDsa),
            other => Err(format!(
                "expected HS256, RS256, ES256 or EdDSA, got {other:?}"
            )),
        }
    }
}

/// Identity settings: token keys and lifetimes, the first admin, the
/// metrics scrape token.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Signs access tokens (HS256) and keys API-key hashes and CSRF tokens.
    /// When unset on the embedded SQLite store, one is generated into the
    /// data directory; with PostgreSQL (many replicas) it must be set.
    pub secret_key: Option<Secret>,
    pub algorithm: JwtAlgorithm,
    /// PEM private key for RS256/ES256/EdDSA.
    pub jwt_private_key_file: Option<PathBuf>,
    /// PEM public key for RS256/ES256/EdDSA.
    pub jwt_public_key_file: Option<PathBuf>,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// Password of the `admin` user created on first start.
    pub admin_password: Option<Secret>,
    /// Bearer token Prometheus presents on `/metrics`; without it, metrics
    /// need a principal with `metrics:read`.
    pub metrics_token: Option<Secret>,
    /// For test rigs (the conformance suite, benchmarks) whose clients cannot
    /// send credentials: requests with none, from a loopback address, act as
    /// an `anonymous` user with this role. Never on by default.
    pub anonymous_loopback_role: Option<String>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            secret_key: None,
            algorithm: JwtAlgorithm::Hs256,
            jwt_private_key_file: None,
            jwt_public_key_file: None,
            access_token_ttl: Duration::from_secs(30 * 60),
            refresh_token_ttl: Duration::from_secs(7 * 86_400),
            admin_password: None,
            metrics_token: None,
            anonymous_loopback_role: None,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 8000,
            debug: false,
            database_url: String::new(),
            database_pool_size: None,
            logging_level: "info".into(),
            log_format: LogFormat::Pretty,
            log_tool_arguments: false,
            otel: OtelSettings::default(),
            data_dir: PathBuf::from("./data"),
            config_file: None,
            public_url: None,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            allow_stdio_api: false,
            prefix_mode: PrefixMode::Always,
            separator: "__".into(),
            max_body_bytes: 4 * 1024 * 1024,
            call_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(30),
            health_interval: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            outbound: OutboundSettings {
                allow_loopback: true,
                allow_private: true,
                allow_link_local: false,
                connect_timeout: Duration::from_secs(10),
                request_timeout: Duration::from_secs(60),
                max_response_bytes: 16 * 1024 * 1024,
            },
            servers: Vec::new(),
            profiles: Vec::new(),
            file_settings: Vec::new(),
            config_watch: Some(Duration::from_secs(2)),
            breaker: Default::default(),
            retry: Default::default(),
            rate_limits: Default::default(),
            max_restarts: 10,
            health_failures: 3,
            cache_ttl: Duration::from_secs(300),
            cache_max_size: 1000,
            redis_url: None,
            redis_prefix: "metamcp".into(),
            // rmcp's own default for its in-memory sessions.
            session_idle: Duration::from_secs(300),
            metrics_enabled: true,
            page_size: 1000,
            oauth_issuers: Vec::new(),
            cors_origins: Vec::new(),
            cors_allow_credentials: false,
            encryption_key: None,
            encryption_old_keys: Vec::new(),
            auth: AuthSettings::default(),
            embedding_provider: if cfg!(feature = "semantic") {
                EmbeddingProvider::Local
            } else {
                EmbeddingProvider::Off
            },
            model_dir: None,
            embedding_url: None,
            embedding_model: None,
            embedding_api_key: None,
            audit: Default::default(),
            webhooks: WebhookSettings::default(),
        }
    }
}

/// The names of every environment variable read, with what it sets; the README
/// documents the same list and a unit test keeps the two in step.
pub const ENV_VARS: &[&str] = &[
    "META_MCP_HOST",
    "META_MCP_PORT",
    "META_MCP_DEBUG",
    "META_MCP_DATABASE_URL",
    "META_MCP_DATABASE_POOL_SIZE",
    "META_MCP_LOGGING_LEVEL",
    "META_MCP_LOG_FORMAT",
    "META_MCP_LOG_TOOL_ARGUMENTS",
    "META_MCP_OTEL_ENDPOINT",
    "META_MCP_OTEL_SERVICE_NAME",
    "META_MCP_OTEL_SAMPLE_RATIO",
    "META_MCP_DATA_DIR",
    "META_MCP_CONFIG",
    "META_MCP_PUBLIC_URL",
    "META_MCP_ALLOWED_HOSTS",
    "META_MCP_ALLOWED_ORIGINS",
    "META_MCP_ALLOW_STDIO_API",
    "META_MCP_PREFIX_MODE",
    "META_MCP_SEPARATOR",
    "META_MCP_MAX_BODY_BYTES",
    "META_MCP_CALL_TIMEOUT_SECS",
    "META_MCP_CONNECT_TIMEOUT_SECS",
    "META_MCP_HEALTH_INTERVAL_SECS",
    "META_MCP_SHUTDOWN_GRACE_SECS",
    "META_MCP_CONFIG_WATCH_SECS",
    "META_MCP_BREAKER_FAILURE_THRESHOLD",
    "META_MCP_BREAKER_RECOVERY_TIMEOUT_SECS",
    "META_MCP_BREAKER_WINDOW_SECS",
    "META_MCP_RETRY_MAX_ATTEMPTS",
    "META_MCP_RETRY_BASE_DELAY_MS",
    "META_MCP_RATE_LIMIT_PRINCIPAL",
    "META_MCP_RATE_LIMIT_TOOL",
    "META_MCP_RATE_LIMIT_TENANT",
    "META_MCP_RATE_LIMIT_UPSTREAM",
    "META_MCP_MAX_RESTARTS",
    "META_MCP_HEALTH_FAILURES",
    "META_MCP_CACHE_TTL",
    "META_MCP_CACHE_MAX_SIZE",
    "META_MCP_REDIS_URL",
    "META_MCP_REDIS_PREFIX",
    "META_MCP_SESSION_IDLE_SECS",
    "META_MCP_METRICS_ENABLED",
    "META_MCP_PAGE_SIZE",
    "META_MCP_OUTBOUND_ALLOW_LOOPBACK",
    "META_MCP_OUTBOUND_ALLOW_PRIVATE",
    "META_MCP_OUTBOUND_ALLOW_LINK_LOCAL",
    "META_MCP_OUTBOUND_TIMEOUT_SECS",
    "META_MCP_OUTBOUND_MAX_RESPONSE_BYTES",
    "META_MCP_OAUTH_ISSUERS",
    "META_MCP_CORS_ORIGINS",
    "META_MCP_CORS_ALLOW_CREDENTIALS",
    "META_MCP_ENCRYPTION_KEY",
    "META_MCP_ENCRYPTION_OLD_KEYS",
    "META_MCP_SECRET_KEY",
    "META_MCP_ALGORITHM",
    "META_MCP_JWT_PRIVATE_KEY_FILE",
    "META_MCP_JWT_PUBLIC_KEY_FILE",
    "META_MCP_ACCESS_TOKEN_EXPIRE_MINUTES",
    "META_MCP_REFRESH_TOKEN_EXPIRE_DAYS",
    "META_MCP_ADMIN_PASSWORD",
    "META_MCP_METRICS_TOKEN",
    "META_MCP_ANONYMOUS_LOOPBACK_ROLE",
    "META_MCP_EMBEDDING_PROVIDER",
    "META_MCP_MODEL_DIR",
    "META_MCP_EMBEDDING_URL",
    "META_MCP_EMBEDDING_MODEL",
    "META_MCP_EMBEDDING_API_KEY",
    "META_MCP_AUDIT_ENABLED",
    "META_MCP_AUDIT_KEY",
    "META_MCP_AUDIT_QUEUE_SIZE",
    "META_MCP_AUDIT_QUEUE_FULL",
    "META_MCP_AUDIT_ARGUMENTS",
    "META_MCP_AUDIT_CHAIN_ID",
    "META_MCP_WEBHOOK_MAX_ATTEMPTS",
    "META_MCP_WEBHOOK_BASE_DELAY_MS",
    "META_MCP_WEBHOOK_TIMEOUT_SECS",
    "META_MCP_WEBHOOK_QUEUE_SIZE",
    "META_MCP_WEBHOOK_RETENTION_DAYS",
    "META_MCP_WEBHOOK_KEEP_PER_WEBHOOK",
    "META_MCP_WEBHOOK_ALLOW_HTTP",
];

impl Settings {
    /// Loads settings from the process environment, with `config_override`
    /// (the `--config` flag) taking precedence over `META_MCP_CONFIG`.
    pub fn load(config_override: Option<&Path>) -> Result<Self, SettingError> {
        let env: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("META_MCP_"))
            .collect();
        Self::load_from(&env, config_override, &|name| std::env::var(name).ok())
    }

    /// Loads settings from the given `META_MCP_*` variables; `lookup` resolves
    /// `${env:NAME}` references in the config file.
    pub fn load_from(
        env: &BTreeMap<String, String>,
        config_override: Option<&Path>,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, SettingError> {
        let mut settings = Settings::default();
        let config_file = config_override
            .map(Path::to_path_buf)
            .or_else(|| env.get("META_MCP_CONFIG").map(PathBuf::from));
        if let Some(path) = &config_file {
            let file = ConfigFile::read(path, lookup)?;
            settings.servers = file.servers;
            settings.profiles = file.profiles;
            for (key, value) in &file.settings {
                settings.apply(&format!("{key} (in {})", path.display()), key, value)?;
            }
            settings.file_settings = file.settings;
        }
        settings.config_file = config_file;
        for (name, value) in env {
            let Some(key) = name.strip_prefix("META_MCP_") else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            if key == "config" {
                continue;
            }
            if !ENV_VARS.contains(&name.as_str()) {
                // An unknown META_MCP_ variable is most likely a typo: say so
                // rather than silently ignoring what the user meant to set.
                tracing::warn!(variable = %name, "unknown META_MCP_ setting ignored");
                continue;
            }
            settings.apply(name, &key, value)?;
        }
        let service_named = env.contains_key("META_MCP_OTEL_SERVICE_NAME")
            || settings
                .file_settings
                .iter()
                .any(|(k, _)| k == "otel_service_name");
        settings.otel_from_standard_variables(lookup, service_named)?;
        if settings.database_url.is_empty() {
            settings.database_url = format!(
                "sqlite://{}",
                settings.data_dir.join("metamcp.db").display()
            );
        }
        crate::store::validate_database_url(&settings.database_url)
            .map_err(|reason| SettingError::new("META_MCP_DATABASE_URL", reason))?;
        if settings.cors_allow_credentials && settings.cors_origins.iter().any(|o| o == "*") {
            return Err(SettingError::new(
                "META_MCP_CORS_ORIGINS",
                "`*` cannot be combined with META_MCP_CORS_ALLOW_CREDENTIALS: list the origins",
            ));
        }
        if settings.resource_uri().is_none()
            && let Some(issuer) = settings.oauth_issuers.iter().find(|i| i.audience.is_none())
        {
            return Err(SettingError::new(
                "META_MCP_OAUTH_ISSUERS",
                format!(
                    "issuer {} has no audience: set META_MCP_PUBLIC_URL (metamcp's resource URI, the default audience) or the issuer's audience",
                    issuer.issuer
                ),
            ));
        }
        if settings.auth.algorithm != JwtAlgorithm::Hs256 {
            for (name, file) in [
                (
                    "META_MCP_JWT_PRIVATE_KEY_FILE",
                    &settings.auth.jwt_private_key_file,
                ),
                (
                    "META_MCP_JWT_PUBLIC_KEY_FILE",
                    &settings.auth.jwt_public_key_file,
                ),
            ] {
                if file.is_none() {
                    return Err(SettingError::new(
                        name,
                        "required when META_MCP_ALGORITHM is RS256, ES256 or EdDSA",
                    ));
                }
            }
        }
        if settings.embedding_provider == EmbeddingProvider::OpenAi
            && (settings.embedding_url.is_none() || settings.embedding_model.is_none())
        {
            return Err(SettingError::new(
                "META_MCP_EMBEDDING_PROVIDER",
                "openai needs META_MCP_EMBEDDING_URL and META_MCP_EMBEDDING_MODEL",
            ));
        }
        Ok(settings)
    }

    /// The OpenTelemetry variables every SDK reads, for what the
    /// `META_MCP_OTEL_*` settings left unset: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
    /// (the traces URL as is), `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL)
    /// and `OTEL_SERVICE_NAME`.
    fn otel_from_standard_variables(
        &mut self,
        lookup: &dyn Fn(&str) -> Option<String>,
        service_named: bool,
    ) -> Result<(), SettingError> {
        let set = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        if self.otel.endpoint.is_none() {
            if let Some(url) = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
                self.otel.endpoint = Some(
                    otlp_url(&url, false)
                        .map_err(|r| SettingError::new("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", r))?,
                );
            } else if let Some(url) = set("OTEL_EXPORTER_OTLP_ENDPOINT") {
                self.otel.endpoint = Some(
                    otlp_url(&url, true)
                        .map_err(|r| SettingError::new("OTEL_EXPORTER_OTLP_ENDPOINT", r))?,
                );
            }
        }
        if !service_named && let Some(name) = set("OTEL_SERVICE_NAME") {
            self.otel.service_name = name.trim().to_owned();
        }
        Ok(())
    }

    /// The folder the local embedding model is loaded from (and fetched to).
    pub fn model_dir(&self) -> PathBuf {
        self.model_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("models").join("all-MiniLM-L6-v2"))
    }

    /// The semantic-search provider these settings describe.
    pub fn search_provider(&self) -> crate::search::semantic::Provider {
        use crate::search::semantic::Provider;
        match self.embedding_provider {
            EmbeddingProvider::Local => Provider::Local {
                dir: self.model_dir(),
            },
            EmbeddingProvider::OpenAi => Provider::OpenAi {
                url: self.embedding_url.clone().unwrap_or_default(),
                model: self.embedding_model.clone().unwrap_or_default(),
                api_key: self.embedding_api_key.as_ref().map(|k| k.0.clone()),
            },
            EmbeddingProvider::Off => Provider::Off,
        }
    }

    /// Applies one setting given as text (`name` is how the user spelled it,
    /// for error messages; `key` is the lower-case key without prefix).
    fn apply(&mut self, name: &str, key: &str, value: &str) -> Result<(), SettingError> {
        let err = |reason: String| SettingError::new(name, reason);
        let secs = |v: &str| -> Result<Duration, SettingError> {
            let n: f64 = v
                .trim()
                .parse()
                .map_err(|_| err(format!("expected a number of seconds, got {v:?}")))?;
            if !(0.0..=86_400.0).contains(&n) || n == 0.0 {
                return Err(err(format!("expected 0 < seconds <= 86400, got {v}")));
            }
            Ok(Duration::from_secs_f64(n))
        };
        match key {
            "host" => {
                self.host = value
                    .trim()
                    .parse()
                    .map_err(|_| err(format!("expected an IP address, got {value:?}")))?
            }
            "port" => {
                self.port = value
                    .trim()
                    .parse()
                    .map_err(|_| err(format!("expected a port number 0-65535, got {value:?}")))?
            }
            "debug" => self.debug = parse_bool(value).map_err(err)?,
            "database_url" => self.database_url = value.trim().to_owned(),
            "database_pool_size" => {
                self.database_pool_size = Some(
                    value
                        .trim()
                        .parse()
                        .ok()
                        .filter(|n| (1..=1000).contains(n))
                        .ok_or_else(|| err(format!("expected 1 to 1000, got {value:?}")))?,
                )
            }
            "logging_level" => {
                let level = value.trim().to_ascii_lowercase();
                let level = if level == "warning" {
                    "warn".into()
                } else {
                    level
                };
                if !["trace", "debug", "info", "warn", "error"].contains(&level.as_str())
                    && tracing_subscriber::EnvFilter::try_new(&level).is_err()
                {
                    return Err(err(format!(
                        "expected trace, debug, info, warning or error, got {value:?}"
                    )));
                }
                self.logging_level = level;
            }
            "log_format" => {
                self.log_format = match value.trim().to_ascii_lowercase().as_str() {
                    "json" => LogFormat::Json,
                    "pretty" | "text" => LogFormat::Pretty,
                    other => return Err(err(format!("expected json or pretty, got {other:?}"))),
                }
            }
            "data_dir" => self.data_dir = PathBuf::from(value.trim()),
            "log_tool_arguments" => self.log_tool_arguments = parse_bool(value).map_err(err)?,
            "otel_endpoint" if value.trim().is_empty() => self.otel.endpoint = None,
            "otel_endpoint" => self.otel.endpoint = Some(otlp_url(value, true).map_err(err)?),
            "otel_service_name" => {
                let name = value.trim();
                if name.is_empty() {
                    return Err(err("must not be empty".into()));
                }
                self.otel.service_name = name.to_owned();
            }
            "otel_sample_ratio" => {
                self.otel.sample_ratio = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|r: &f64| (0.0..=1.0).contains(r))
                    .ok_or_else(|| err(format!("expected 0.0 to 1.0, got {value:?}")))?
            }
            "public_url" => {
                let url = url::Url::parse(value.trim())
                    .map_err(|e| err(format!("not a URL ({e}): {value:?}")))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(err("expected an http or https URL".into()));
                }
                self.public_url = Some(url);
            }
            "allowed_hosts" => self.allowed_hosts = split_list(value),
            "allowed_origins" => {
                let origins = split_list(value);
                for origin in &origins {
                    if origin != "*" && url::Url::parse(origin).is_err() {
                        return Err(err(format!(
                            "{origin:?} is not an origin like https://app.example.com"
                        )));
                    }
                }
                self.allowed_origins = origins;
            }
            "allow_stdio_api" => self.allow_stdio_api = parse_bool(value).map_err(err)?,
            "prefix_mode" => self.prefix_mode = value.parse().map_err(err)?,
            "separator" => {
                let sep = value.to_owned();
                if sep.is_empty()
                    || sep.len() > 4
                    || !sep.chars().all(|c| matches!(c, '_' | '-' | '.'))
                {
                    return Err(err(
                        "expected 1 to 4 of the characters _ - . (tool names allow no others)"
                            .into(),
                    ));
                }
                self.separator = sep;
            }
            "max_body_bytes" => {
                self.max_body_bytes = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1024)
                    .ok_or_else(|| err(format!("expected a byte count >= 1024, got {value:?}")))?
            }
            "call_timeout_secs" => self.call_timeout = secs(value)?,
            "connect_timeout_secs" => self.connect_timeout = secs(value)?,
            "health_interval_secs" => self.health_interval = secs(value)?,
            "shutdown_grace_secs" => self.shutdown_grace = secs(value)?,
            "breaker_failure_threshold" => {
                self.breaker.failure_threshold = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| err(format!("expected a whole number >= 1, got {value:?}")))?
            }
            "breaker_recovery_timeout_secs" => {
                self.breaker.recovery_timeout = secs(value)?.as_secs_f64()
            }
            "breaker_window_secs" => self.breaker.window = secs(value)?.as_secs_f64(),
            "retry_max_attempts" => {
                self.retry.max_attempts = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| (1..=10).contains(n))
                    .ok_or_else(|| err(format!("expected 1 to 10, got {value:?}")))?
            }
            "retry_base_delay_ms" => {
                let ms: u64 = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| *n <= 60_000)
                    .ok_or_else(|| {
                        err(format!("expected 0 to 60000 milliseconds, got {value:?}"))
                    })?;
                self.retry.base_delay = Duration::from_millis(ms);
            }
            "rate_limit_principal" => {
                self.rate_limits.per_principal = Some(value.parse().map_err(err)?)
            }
            "rate_limit_tool" => self.rate_limits.per_tool = Some(value.parse().map_err(err)?),
            "rate_limit_tenant" => self.rate_limits.per_tenant = Some(value.parse().map_err(err)?),
            "rate_limit_upstream" => {
                self.rate_limits.per_upstream = Some(value.parse().map_err(err)?)
            }
            "max_restarts" => {
                self.max_restarts = value
                    .trim()
                    .parse()
                    .map_err(|_| err(format!("expected a whole number, got {value:?}")))?
            }
            "health_failures" => {
                self.health_failures = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| err(format!("expected a whole number >= 1, got {value:?}")))?
            }
            "cache_ttl" => self.cache_ttl = secs(value)?,
            "metrics_enabled" => self.metrics_enabled = parse_bool(value).map_err(err)?,
            "page_size" => {
                self.page_size = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| (1..=100_000).contains(n))
                    .ok_or_else(|| err(format!("expected 1 to 100000, got {value:?}")))?
            }
            "cache_max_size" => {
                self.cache_max_size = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| err(format!("expected a whole number >= 1, got {value:?}")))?
            }
            "redis_url" => {
                let url = value.trim();
                if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                    return Err(err("expected redis://HOST:PORT[/DB] or rediss://...".into()));
                }
                redis::Client::open(url).map_err(|e| err(format!("not a valid Redis URL: {e}")))?;
                self.redis_url = Some(url.to_owned());
            }
            "redis_prefix" => {
                let prefix = value.trim();
                if prefix.is_empty()
                    || prefix.len() > 64
                    || !prefix
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c))
                {
                    return Err(err(format!(
                        "expected 1 to 64 letters, digits or _ - . :, got {value:?}"
                    )));
                }
                self.redis_prefix = prefix.to_owned();
            }
            "session_idle_secs" => self.session_idle = secs(value)?,
            "config_watch_secs" => {
                self.config_watch = if value.trim() == "0" {
                    None
                } else {
                    Some(secs(value)?)
                }
            }
            "outbound_allow_loopback" => {
                self.outbound.allow_loopback = parse_bool(value).map_err(err)?
            }
            "outbound_allow_private" => {
                self.outbound.allow_private = parse_bool(value).map_err(err)?
            }
            "outbound_allow_link_local" => {
                self.outbound.allow_link_local = parse_bool(value).map_err(err)?
            }
            "outbound_timeout_secs" => self.outbound.request_timeout = secs(value)?,
            "outbound_max_response_bytes" => {
                self.outbound.max_response_bytes = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1024)
                    .ok_or_else(|| err(format!("expected a byte count >= 1024, got {value:?}")))?
            }
            "encryption_key" => {
                let key = value.trim();
                if key.len() < crate::secrets::MIN_KEY_BYTES {
                    return Err(err(format!(
                        "needs at least {} bytes (e.g. `openssl rand -base64 32`)",
                        crate::secrets::MIN_KEY_BYTES
                    )));
                }
                self.encryption_key = Some(crate::secrets::SecretString::new(key))
            }
            "encryption_old_keys" => {
                self.encryption_old_keys = split_list(value)
                    .into_iter()
                    .map(crate::secrets::SecretString::new)
                    .collect()
            }
            "cors_origins" => {
                self.cors_origins = crate::http_hardening::parse_cors_origins(value).map_err(err)?
            }
            "cors_allow_credentials" => {
                self.cors_allow_credentials = parse_bool(value).map_err(err)?
            }
            "oauth_issuers" => {
                self.oauth_issuers =
                    crate::auth::external::IssuerConfig::parse_list(value).map_err(err)?
            }
            "secret_key" => {
                // HS256 keys shorter than the hash output are brute-forceable.
                if value.len() < 32 {
                    return Err(err(format!(
                        "must be at least 32 bytes, got {} (generate one with `openssl rand -base64 48`)",
                        value.len()
                    )));
                }
                self.auth.secret_key = Some(Secret(value.to_owned()));
            }
            "algorithm" => self.auth.algorithm = value.parse().map_err(err)?,
            "jwt_private_key_file" => {
                self.auth.jwt_private_key_file = Some(PathBuf::from(value.trim()))
            }
            "jwt_public_key_file" => {
                self.auth.jwt_public_key_file = Some(PathBuf::from(value.trim()))
            }
            "access_token_expire_minutes" => {
                let minutes: u64 = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| (1..=1440).contains(n))
                    .ok_or_else(|| err(format!("expected 1 to 1440 minutes, got {value:?}")))?;
                self.auth.access_token_ttl = Duration::from_secs(minutes * 60);
            }
            "refresh_token_expire_days" => {
                let days: u64 = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| (1..=365).contains(n))
                    .ok_or_else(|| err(format!("expected 1 to 365 days, got {value:?}")))?;
                self.auth.refresh_token_ttl = Duration::from_secs(days * 86_400);
            }
            // An empty value is the same as no value (a common way to unset
            // a variable in compose files).
            "admin_password" if value.is_empty() => self.auth.admin_password = None,
            "admin_password" => {
                if value.chars().count() < 12 {
                    return Err(err("must be at least 12 characters".into()));
                }
                self.auth.admin_password = Some(Secret(value.to_owned()));
            }
            "anonymous_loopback_role" => {
                let role = value.trim();
                self.auth.anonymous_loopback_role = (!role.is_empty()).then(|| role.to_owned());
            }
            "metrics_token" => {
                if value.len() < 16 {
                    return Err(err("must be at least 16 bytes".into()));
                }
                self.auth.metrics_token = Some(Secret(value.to_owned()));
            }
            "embedding_provider" => {
                self.embedding_provider = match value.trim().to_ascii_lowercase().as_str() {
                    "local" => EmbeddingProvider::Local,
                    "openai" => EmbeddingProvider::OpenAi,
                    "off" | "none" => EmbeddingProvider::Off,
                    other => {
                        return Err(err(format!("expected local, openai or off, got {other:?}")));
                    }
                }
            }
            "model_dir" => self.model_dir = Some(PathBuf::from(value.trim())),
            "webhook_max_attempts" => {
                self.webhooks.max_attempts = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| (1..=20).contains(n))
                    .ok_or_else(|| err(format!("expected 1 to 20, got {value:?}")))?
            }
            "webhook_base_delay_ms" => {
                let ms: u64 = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| (1..=600_000).contains(n))
                    .ok_or_else(|| {
                        err(format!("expected 1 to 600000 milliseconds, got {value:?}"))
                    })?;
                self.webhooks.base_delay = Duration::from_millis(ms);
            }
            "webhook_timeout_secs" => self.webhooks.timeout = secs(value)?,
            "webhook_queue_size" => {
                self.webhooks.queue_size = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| (1..=1_000_000).contains(n))
                    .ok_or_else(|| err(format!("expected 1 to 1000000, got {value:?}")))?
            }
            "webhook_retention_days" => {
                let days: u64 = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| (1..=3650).contains(n))
                    .ok_or_else(|| err(format!("expected 1 to 3650 days, got {value:?}")))?;
                self.webhooks.retention = Duration::from_secs(days * 86_400);
            }
            "webhook_keep_per_webhook" => {
                self.webhooks.keep_per_webhook = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| (1..=1_000_000).contains(n))
                    .ok_or_else(|| err(format!("expected 1 to 1000000, got {value:?}")))?
            }
            "webhook_allow_http" => self.webhooks.allow_http = parse_bool(value).map_err(err)?,
            "embedding_url" => {
                let url = url::Url::parse(value.trim())
                    .map_err(|e| err(format!("not a URL ({e}): {value:?}")))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(err("expected an http or https URL".into()));
                }
                self.embedding_url = Some(value.trim().trim_end_matches('/').to_owned());
            }
            "embedding_model" => {
                let model = value.trim();
                if model.is_empty() || model.len() > 200 {
                    return Err(err("expected a model name of 1 to 200 characters".into()));
                }
                self.embedding_model = Some(model.to_owned());
            }
            "embedding_api_key" => self.embedding_api_key = Some(Secret(value.trim().to_owned())),
            audit if let Some(rest) = audit.strip_prefix("audit_") => {
                self.audit.apply(rest, value).map_err(err)?
            }
            other => return Err(err(format!("unknown setting {other:?}"))),
        }
        Ok(())
    }

    /// `Host` header values accepted on the listener: the configured list, or
    /// localhost names by default, plus the host of the public URL.
    pub fn effective_allowed_hosts(&self) -> Vec<String> {
        let mut hosts = if self.allowed_hosts.is_empty() {
            vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()]
        } else {
            self.allowed_hosts.clone()
        };
        if let Some(host) = self.public_url.as_ref().and_then(|u| u.host_str()) {
            hosts.push(host.to_owned());
        }
        hosts
    }

    /// metamcp's resource URI as an OAuth 2.1 resource server (RFC 8707,
    /// RFC 9728): the public URL without a trailing slash; the audience
    /// outside tokens must carry. `None` until `META_MCP_PUBLIC_URL` is set.
    pub fn resource_uri(&self) -> Option<String> {
        self.public_url
            .as_ref()
            .map(|u| u.as_str().trim_end_matches('/').to_owned())
    }

    /// The base URL clients use to reach this gateway.
    pub fn base_url(&self, bound_port: u16) -> String {
        match &self.public_url {
            Some(url) => url.as_str().trim_end_matches('/').to_owned(),
            None => format!("http://{}:{bound_port}", self.host),
        }
    }
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        other => Err(format!("expected true or false, got {other:?}")),
    }
}

fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The parsed config file: servers plus settings given beside them.
#[derive(Debug)]
pub struct ConfigFile {
    pub servers: Vec<ServerSpec>,
    pub profiles: Vec<Profile>,
    pub settings: Vec<(String, String)>,
}

impl ConfigFile {
    /// Reads and validates a config file (JSON, or TOML by extension).
    pub fn read(
        path: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, SettingError> {
        let name = || format!("config file {}", path.display());
        let text = std::fs::read_to_string(path)
            .map_err(|e| SettingError::new(name(), format!("cannot read it: {e}")))?;
        let is_toml = path.extension().is_some_and(|e| e == "toml");
        let value: Value = if is_toml {
            toml::from_str(&text).map_err(|e| SettingError::new(name(), e.to_string()))?
        } else {
            serde_json::from_str(&text)
                .map_err(|e| SettingError::new(name(), format!("not valid JSON: {e}")))?
        };
        Self::from_value(value, lookup).map_err(|e| SettingError::new(name(), e))
    }

    pub fn from_value(
        mut value: Value,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        substitute_env(&mut value, lookup)?;
        let Value::Object(mut root) = value else {
            return Err("expected an object at the top level".into());
        };
        let mut servers = Vec::new();
        if let Some(entries) = root.remove("mcpServers") {
            let Value::Object(entries) = entries else {
                return Err("mcpServers must be an object of name → server".into());
            };
            for (server_name, entry) in entries {
                let spec = ServerSpec::from_mcp_servers_entry(&server_name, entry)
                    .map_err(|e: SpecError| format!("mcpServers.{server_name}: {e}"))?;
                servers.push(spec);
            }
        }
        let mut profiles = Vec::new();
        if let Some(entries) = root.remove("profiles") {
            let Value::Object(entries) = entries else {
                return Err("profiles must be an object of name → profile".into());
            };
            for (profile_name, mut entry) in entries {
                if let Value::Object(map) = &mut entry {
                    map.insert("name".into(), Value::String(profile_name.clone()));
                    map.insert("source".into(), Value::String("config".into()));
                }
                let profile: Profile = serde_json::from_value(entry)
                    .map_err(|e| format!("profiles.{profile_name}: {e}"))?;
                profile
                    .validate()
                    .map_err(|e| format!("profiles.{profile_name}: {e}"))?;
                profiles.push(profile);
            }
        }
        let mut settings = Vec::new();
        for (key, value) in root {
            let text = match value {
                Value::String(s) => s,
                Value::Array(items) => items
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            settings.push((key.to_ascii_lowercase(), text));
        }
        Ok(Self {
            servers,
            profiles,
            settings,
        })
    }
}

/// Replaces `${env:NAME}` in every string of the document.
fn substitute_env(
    value: &mut Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), String> {
    match value {
        Value::String(s) if s.contains("${env:") => {
            *s = expand_env_refs(s, lookup)?;
        }
        Value::Array(items) => {
            for item in items {
                substitute_env(item, lookup)?;
            }
        }
        Value::Object(map) => {
            for item in map.values_mut() {
                substitute_env(item, lookup)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn expand_env_refs(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(start) = rest.find("${env:") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 6..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated ${{env:...}} in {input:?}"))?;
        let var = &after[..end];
        let value = lookup(var).ok_or_else(|| format!("environment variable {var} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_bind_localhost_8000_with_sqlite_in_data_dir() {
        let s = Settings::load_from(&env(&[]), None, &|_| None).unwrap();
        assert_eq!(s.host.to_string(), "127.0.0.1");
        assert_eq!(s.port, 8000);
        assert_eq!(s.database_url, "sqlite://./data/metamcp.db");
        assert_eq!(s.prefix_mode, PrefixMode::Always);
    }

    #[test]
    fn env_overrides_and_bad_values_name_the_setting() {
        let s = Settings::load_from(
            &env(&[
                ("META_MCP_PORT", "9001"),
                ("META_MCP_LOGGING_LEVEL", "WARNING"),
            ]),
            None,
            &|_| None,
        )
        .unwrap();
        assert_eq!(s.port, 9001);
        assert_eq!(s.logging_level, "warn");
        let e =
            Settings::load_from(&env(&[("META_MCP_PORT", "eighty")]), None, &|_| None).unwrap_err();
        assert_eq!(e.name, "META_MCP_PORT");
        let e = Settings::load_from(
            &env(&[("META_MCP_DATABASE_URL", "mysql://x")]),
            None,
            &|_| None,
        )
        .unwrap_err();
        assert_eq!(e.name, "META_MCP_DATABASE_URL");
    }

    #[test]
    fn replica_settings_are_checked() {
        let s = Settings::load_from(
            &env(&[
                ("META_MCP_DATABASE_POOL_SIZE", "25"),
                ("META_MCP_REDIS_PREFIX", "acme:prod"),
            ]),
            None,
            &|_| None,
        )
        .unwrap();
        assert_eq!(s.database_pool_size, Some(25));
        assert_eq!(s.redis_prefix, "acme:prod");
        assert_eq!(
            Settings::load_from(&env(&[]), None, &|_| None)
                .unwrap()
                .redis_prefix,
            "metamcp"
        );
        for bad in ["0", "1001", "ten", "-1"] {
            let e =
                Settings::load_from(&env(&[("META_MCP_DATABASE_POOL_SIZE", bad)]), None, &|_| {
                    None
                })
                .unwrap_err();
            assert_eq!(e.name, "META_MCP_DATABASE_POOL_SIZE");
        }
        for bad in ["", "a b", "x*", &"p".repeat(65)] {
            let e = Settings::load_from(&env(&[("META_MCP_REDIS_PREFIX", bad)]), None, &|_| None)
                .unwrap_err();
            assert_eq!(e.name, "META_MCP_REDIS_PREFIX", "{bad:?}");
        }
    }

    #[test]
    fn config_file_servers_and_env_substitution() {
        let doc = serde_json::json!({
            "mcpServers": {
                "fs": {"command": "npx", "args": ["-y", "x"], "env": {"TOKEN": "${env:SECRET}"}},
                "remote": {"url": "http://127.0.0.1:9/mcp", "headers": {"Authorization": "Bearer ${env:SECRET}"}}
            },
            "prefix_mode": "never"
        });
        let file = ConfigFile::from_value(doc, &|n| (n == "SECRET").then(|| "s3".into())).unwrap();
        assert_eq!(file.servers.len(), 2);
        assert_eq!(file.settings, vec![("prefix_mode".into(), "never".into())]);
        let missing = ConfigFile::from_value(
            serde_json::json!({"mcpServers": {"a": {"command": "${env:NOPE}"}}}),
            &|_| None,
        )
        .unwrap_err();
        assert!(missing.contains("NOPE"), "{missing}");
    }

    #[test]
    fn redis_prefix_and_session_idle_are_checked() {
        let s = Settings::load_from(&env(&[]), None, &|_| None).unwrap();
        assert_eq!(
            (s.redis_prefix.as_str(), s.session_idle),
            ("metamcp", Duration::from_secs(300))
        );
        let s = Settings::load_from(
            &env(&[
                ("META_MCP_REDIS_PREFIX", "prod-eu:metamcp"),
                ("META_MCP_SESSION_IDLE_SECS", "90"),
            ]),
            None,
            &|_| None,
        )
        .unwrap();
        assert_eq!(
            (s.redis_prefix.as_str(), s.session_idle),
            ("prod-eu:metamcp", Duration::from_secs(90))
        );
        for (name, bad) in [
            ("META_MCP_REDIS_PREFIX", ""),
            ("META_MCP_REDIS_PREFIX", "has space"),
            ("META_MCP_REDIS_PREFIX", "glob*"),
            ("META_MCP_SESSION_IDLE_SECS", "0"),
            ("META_MCP_SESSION_IDLE_SECS", "soon"),
        ] {
            let e = Settings::load_from(&env(&[(name, bad)]), None, &|_| None).unwrap_err();
            assert_eq!(e.name, name, "{bad:?}");
        }
    }

    #[test]
    fn cors_is_closed_by_default_and_refuses_any_origin_with_credentials() {
        let s = Settings::load_from(&env(&[]), None, &|_| None).unwrap();
        assert!(s.cors_origins.is_empty());
        let e = Settings::load_from(
            &env(&[
                ("META_MCP_CORS_ORIGINS", "*"),
                ("META_MCP_CORS_ALLOW_CREDENTIALS", "true"),
            ]),
            None,
            &|_| None,
        )
        .unwrap_err();
        assert_eq!(e.name, "META_MCP_CORS_ORIGINS");
        let s = Settings::load_from(
            &env(&[("META_MCP_CORS_ORIGINS", "https://app.example")]),
            None,
            &|_| None,
        )
        .unwrap();
        assert_eq!(s.cors_origins, ["https://app.example"]);
    }

    #[test]
    fn oauth_issuers_from_env_and_file() {
        let list = r#"[{"issuer": "https://idp.example", "roles_claim": "realm_access.roles"}]"#;
        let e = Settings::load_from(&env(&[("META_MCP_OAUTH_ISSUERS", list)]), None, &|_| None)
            .unwrap_err();
        assert!(e.reason.contains("META_MCP_PUBLIC_URL"), "{e}");
        let s = Settings::load_from(
            &env(&[
                ("META_MCP_OAUTH_ISSUERS", list),
                ("META_MCP_PUBLIC_URL", "https://gw.example/"),
            ]),
            None,
            &|_| None,
        )
        .unwrap();
        assert_eq!(s.oauth_issuers[0].issuer, "https://idp.example");
        assert_eq!(s.resource_uri().as_deref(), Some("https://gw.example"));
        let e = Settings::load_from(
            &env(&[(
                "META_MCP_OAUTH_ISSUERS",
                r#"[{"issuer": "https://idp.example", "algorithms": ["HS256"]}]"#,
            )]),
            None,
            &|_| None,
        )
        .unwrap_err();
        assert_eq!(e.name, "META_MCP_OAUTH_ISSUERS");
        // In the config file, beside mcpServers, as a JSON list.
        let file = ConfigFile::from_value(
            serde_json::json!({"oauth_issuers": [
                {"issuer": "https://a.example", "audience": "https://gw"},
                {"issuer": "https://b.example", "audience": ["https://gw"]}
            ]}),
            &|_| None,
        )
        .unwrap();
        let mut s = Settings::default();
        for (k, v) in &file.settings {
            s.apply(k, k, v).unwrap();
        }
        assert_eq!(s.oauth_issuers.len(), 2);
    }

    #[test]
    fn traces_endpoint_from_our_setting_or_the_standard_variables() {
        let none = Settings::load_from(&env(&[]), None, &|_| None).unwrap();
        assert_eq!(none.otel, OtelSettings::default());
        assert!(!none.log_tool_arguments);
        // The standard variables: a base URL gets the traces path, the
        // traces variable is taken as is and wins.
        let standard = |name: &str| match name {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://collector:4318/".to_owned()),
            "OTEL_SERVICE_NAME" => Some("gw-eu".to_owned()),
            _ => None,
        };
        let s = Settings::load_from(&env(&[]), None, &standard).unwrap();
        assert_eq!(
            s.otel.endpoint.as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        assert_eq!(s.otel.service_name, "gw-eu");
        let traces = |name: &str| match name {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" => Some("http://t:9/custom".to_owned()),
            other => standard(other),
        };
        let s = Settings::load_from(&env(&[]), None, &traces).unwrap();
        assert_eq!(s.otel.endpoint.as_deref(), Some("http://t:9/custom"));
        // Ours win over both.
        let s = Settings::load_from(
            &env(&[
                ("META_MCP_OTEL_ENDPOINT", "https://otel.example/v1/traces"),
                ("META_MCP_OTEL_SERVICE_NAME", "gw"),
                ("META_MCP_OTEL_SAMPLE_RATIO", "0.25"),
                ("META_MCP_LOG_TOOL_ARGUMENTS", "true"),
            ]),
            None,
            &traces,
        )
        .unwrap();
        assert_eq!(
            s.otel,
            OtelSettings {
                endpoint: Some("https://otel.example/v1/traces".into()),
                service_name: "gw".into(),
                sample_ratio: 0.25,
            }
        );
        assert!(s.log_tool_arguments);
        for (name, bad) in [
            ("META_MCP_OTEL_ENDPOINT", "grpc://collector:4317"),
            ("META_MCP_OTEL_ENDPOINT", "not a url"),
            ("META_MCP_OTEL_SAMPLE_RATIO", "1.5"),
            ("META_MCP_OTEL_SERVICE_NAME", " "),
        ] {
            let e = Settings::load_from(&env(&[(name, bad)]), None, &|_| None).unwrap_err();
            assert_eq!(e.name, name);
        }
        let e = Settings::load_from(&env(&[]), None, &|name| {
            (name == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "ftp://x".to_owned())
        })
        .unwrap_err();
        assert_eq!(e.name, "OTEL_EXPORTER_OTLP_ENDPOINT");
    }

    #[test]
    fn every_listed_variable_is_a_setting_the_parser_applies() {
        // ENV_VARS is what the environment may set (and what the files
        // under deploy/ are checked against): each name must reach a branch
        // of `apply`, so a listed name the parser does not know fails here.
        for var in ENV_VARS {
            if *var == "META_MCP_CONFIG" {
                // Names the file the others may come from: `load_from`
                // reads it before applying anything.
                let e = Settings::load_from(
                    &env(&[("META_MCP_CONFIG", "/nonexistent/metamcp.json")]),
                    None,
                    &|_| None,
                )
                .unwrap_err();
                assert!(e.to_string().contains("/nonexistent/metamcp.json"), "{e}");
                continue;
            }
            let key = var.strip_prefix("META_MCP_").unwrap().to_ascii_lowercase();
            let mut s = Settings::default();
            if let Err(e) = s.apply(var, &key, "\u{1}not a value") {
                assert!(
                    !e.reason.starts_with("unknown setting"),
                    "{var} is listed but not parsed: {e}"
                );
            }
        }
        let mut s = Settings::default();
        let e = s.apply("META_MCP_NO_SUCH", "no_such", "1").unwrap_err();
        assert!(e.reason.starts_with("unknown setting"), "{e}");
        // The other way: names read from the environment outside the list
        // are ignored, not applied.
        let loaded = Settings::load_from(
            &env(&[("META_MCP_PORTT", "1"), ("META_MCP_PORT", "9001")]),
            None,
            &|_| None,
        )
        .unwrap();
        assert_eq!(loaded.port, 9001);
    }

    #[test]
    fn readme_documents_every_setting_and_the_ci_test_command() {
        let readme = include_str!("../README.md");
        for var in ENV_VARS {
            assert!(
                readme.contains(&format!("`{var}`")),
                "README does not document {var}"
            );
        }
        let ci = include_str!("../.ci/run");
        let cmd = ci
            .lines()
            .find_map(|l| l.strip_prefix("TEST_CMD=\""))
            .and_then(|l| l.strip_suffix('"'))
            .expect(".ci/run sets TEST_CMD");
        assert!(
            readme.contains(cmd),
            "README must give CI's test command {cmd:?}"
        );
    }
}
