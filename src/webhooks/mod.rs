//! Webhooks: a tenant subscribes URLs to gateway events (an upstream went
//! down, a breaker opened, a tool changed, logins keep failing, ...), and
//! the gateway POSTs each event there as signed JSON.
//!
//! Nothing here runs on a request path. Events reach the dispatcher
//! ([`dispatch`]) over the in-process bus, which never blocks a publisher;
//! the dispatcher records a delivery per subscribed webhook and hands it to
//! that webhook's lane: a task with a bounded queue that delivers in order,
//! retries with exponential backoff and jitter, and gives each attempt a
//! timeout. A slow or dead receiver so holds up only its own lane; when
//! its queue is full, new deliveries to it are dropped, logged and counted.
//!
//! Every attempt checks the URL against the outbound policy again and
//! connects through the guarded resolver (a name that resolves to a
//! metadata address later is refused then too), and follows no redirect.

mod delivery;
mod dispatch;
pub mod signature;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwap;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    config::WebhookSettings,
    metrics::Metrics,
    outbound::{OutboundError, OutboundPolicy, redact_url},
    secrets::Keyring,
    store::{DeliveryRow, Store, StoreError, WebhookRow},
};

pub use delivery::backoff;
pub use dispatch::spawn as start_dispatcher;

/// The longest wait between two attempts of a delivery.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(600);

/// Webhooks a tenant may have.
pub const MAX_PER_TENANT: usize = 100;

/// The event types a webhook may subscribe to (`*` is all of them).
pub const EVENT_TYPES: [&str; 11] = [
    "upstream.up",
    "upstream.down",
    "circuit.opened",
    "circuit.closed",
    "tool.added",
    "tool.removed",
    "tool.changed",
    "tool.call_failed",
    "login.failed_repeatedly",
    "audit.chain_broken",
    "webhook.test",
];

/// One event as a receiver gets it (the JSON body of a delivery).
#[derive(Debug, Clone, Serialize)]
pub struct WebhookEvent {
    /// Unique per event; the same in every attempt and every webhook it
    /// goes to, so receivers can drop duplicates.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: String,
    pub tenant: String,
    pub data: Value,
}

impl WebhookEvent {
    pub fn new(kind: &'static str, tenant: &str, data: Value) -> Self {
        Self {
            id: format!("evt_{}", uuid::Uuid::now_v7().simple()),
            kind,
            time: crate::util::now_rfc3339(),
            tenant: tenant.to_owned(),
            data,
        }
    }
}

/// Why a webhook request was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{0}")]
    Invalid(String),
    /// The URL is not one deliveries may go to (scheme, address).
    #[error("{0}")]
    Refused(String),
    #[error("no such webhook")]
    Unknown,
    #[error("a tenant may have at most {MAX_PER_TENANT} webhooks")]
    TooMany,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks a receiver URL without resolving it: `https`, or `http` to a
/// loopback address (or anywhere with `allow_http`); no user-info (the
/// signature authenticates, and a password would show in logs); a host
/// the outbound policy accepts when it is a literal address or a
/// well-known metadata name.
pub fn check_target(
    policy: &OutboundPolicy,
    allow_http: bool,
    raw: &str,
) -> Result<url::Url, WebhookError> {
    let url = policy.check_url(raw.trim()).map_err(refusal)?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(WebhookError::Invalid(
            "webhook URLs cannot carry a user name or password; receivers verify the signature"
                .into(),
        ));
    }
    if url.scheme() == "http" && !allow_http && !is_loopback_host(&url) {
        return Err(WebhookError::Refused(
            "plain http is allowed for loopback receivers only; use https (or set META_MCP_WEBHOOK_ALLOW_HTTP)"
                .into(),
        ));
    }
    Ok(url)
}

/// [`check_target`], then every address the host resolves to (at
/// registration and before each attempt: DNS may change in between).
pub async fn check_target_resolved(
    policy: &OutboundPolicy,
    allow_http: bool,
    raw: &str,
) -> Result<url::Url, WebhookError> {
    let url = check_target(policy, allow_http, raw)?;
    policy.check_resolved(&url).await.map_err(refusal)?;
    Ok(url)
}

fn refusal(e: OutboundError) -> WebhookError {
    match e {
        OutboundError::BadUrl(reason) => WebhookError::Invalid(format!("invalid URL: {reason}")),
        other => WebhookError::Refused(other.to_string()),
    }
}

fn is_loopback_host(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Checks a subscription list: known event types, or `*`.
pub fn check_events(events: &[String]) -> Result<Vec<String>, WebhookError> {
    if events.is_empty() {
        return Err(WebhookError::Invalid(
            "events must name at least one event type, or \"*\"".into(),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for e in events {
        let e = e.trim();
        if e != "*" && !EVENT_TYPES.contains(&e) {
            return Err(WebhookError::Invalid(format!(
                "unknown event type {e:?}; known: {}",
                EVENT_TYPES.join(", ")
            )));
        }
        if !out.iter().any(|o| o == e) {
            out.push(e.to_owned());
        }
    }
    Ok(out)
}

/// A webhook's decrypted settings, as its lane uses them.
#[derive(Debug)]
struct HookConfig {
    id: String,
    tenant: Arc<str>,
    url: String,
    secret: String,
    events: Vec<String>,
    enabled: bool,
}

impl HookConfig {
    fn wants(&self, kind: &str) -> bool {
        self.enabled && self.events.iter().any(|e| e == "*" || e == kind)
    }
}

/// A delivery waiting in a lane.
struct Job {
    delivery_id: String,
    event_type: &'static str,
    body: Arc<str>,
}

struct Lane {
    config: Arc<ArcSwap<HookConfig>>,
    tx: mpsc::Sender<Job>,
    stop: CancellationToken,
}

/// The webhook service: registrations, lanes and the delivery log.
pub struct Webhooks {
    store: Store,
    secrets: Arc<Keyring>,
    settings: WebhookSettings,
    policy: OutboundPolicy,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    lanes: parking_lot::Mutex<HashMap<String, Lane>>,
    /// One reload at a time, so an older read never overwrites a newer.
    reloading: tokio::sync::Mutex<()>,
    shutdown: CancellationToken,
}

/// What a create or update may set.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookInput {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    /// On update: replace the signing secret (the new one is returned once).
    #[serde(default)]
    pub rotate_secret: bool,
}

fn url_context(id: &str) -> String {
    format!("webhook/{id}/url")
}

fn secret_context(id: &str) -> String {
    format!("webhook/{id}/secret")
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

impl Webhooks {
    pub fn new(
        store: Store,
        secrets: Arc<Keyring>,
        settings: &crate::config::Settings,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            store,
            secrets,
            settings: settings.webhooks.clone(),
            policy: OutboundPolicy::from_settings(&settings.outbound),
            http: crate::outbound::client_without_redirects(&settings.outbound),
            metrics,
            lanes: Default::default(),
            reloading: Default::default(),
            shutdown,
        }
    }

    /// A webhook as the API shows it (never its secret).
    fn describe(&self, row: &WebhookRow) -> Value {
        let url = self
            .secrets
            .decrypt(&row.url, &url_context(&row.id))
            .map(|u| redact_url(&u))
            .unwrap_or_else(|_| "<cannot be decrypted with the current keys>".into());
        json!({
            "id": row.id,
            "url": url,
            "events": row.events,
            "description": row.description,
            "enabled": row.enabled,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
        })
    }

    pub async fn list(&self, tenant: &str) -> Result<Vec<Value>, WebhookError> {
        let rows = self.store.list_webhooks(tenant).await?;
        Ok(rows.iter().map(|r| self.describe(r)).collect())
    }

    pub async fn get(&self, tenant: &str, id: &str) -> Result<Value, WebhookError> {
        let row = self
            .store
            .webhook(tenant, id)
            .await?
            .ok_or(WebhookError::Unknown)?;
        Ok(self.describe(&row))
    }

    /// Registers a webhook; returns it with its secret (shown this once).
    pub async fn create(&self, tenant: &str, input: WebhookInput) -> Result<Value, WebhookError> {
        let url = input
            .url
            .ok_or_else(|| WebhookError::Invalid("url is required".into()))?;
        let events = check_events(
            input
                .events
                .as_deref()
                .ok_or_else(|| WebhookError::Invalid("events is required".into()))?,
        )?;
        let description = check_description(input.description)?;
        let url = check_target_resolved(&self.policy, self.settings.allow_http, &url)
            .await?
            .to_string();
        if self.store.list_webhooks(tenant).await?.len() >= MAX_PER_TENANT {
            return Err(WebhookError::TooMany);
        }
        let id = format!("wh_{}", uuid::Uuid::now_v7().simple());
        let secret = signature::new_secret();
        let now = crate::util::now_rfc3339();
        let row = WebhookRow {
            url: self.secrets.encrypt(&url, &url_context(&id)),
            secret: self.secrets.encrypt(&secret, &secret_context(&id)),
            id,
            tenant_id: tenant.to_owned(),
            events,
            description,
            enabled: input.enabled.unwrap_or(true),
            created_at: now.clone(),
            updated_at: now,
        };
        self.store.insert_webhook(&row).await?;
        self.reload_logged().await;
        let mut value = self.describe(&row);
        value["secret"] = json!(secret);
        Ok(value)
    }

    /// Changes the fields given; with `rotate_secret`, returns the new
    /// secret (shown this once).
    pub async fn update(
        &self,
        tenant: &str,
        id: &str,
        input: WebhookInput,
    ) -> Result<Value, WebhookError> {
        let mut row = self
            .store
            .webhook(tenant, id)
            .await?
            .ok_or(WebhookError::Unknown)?;
        if let Some(url) = input.url {
            let url = check_target_resolved(&self.policy, self.settings.allow_http, &url).await?;
            row.url = self.secrets.encrypt(url.as_str(), &url_context(id));
        }
        if let Some(events) = input.events {
            row.events = check_events(&events)?;
        }
        if input.description.is_some() {
            row.description = check_description(input.description)?;
        }
        if let Some(enabled) = input.enabled {
            row.enabled = enabled;
        }
        let secret = input.rotate_secret.then(signature::new_secret);
        if let Some(secret) = &secret {
            row.secret = self.secrets.encrypt(secret, &secret_context(id));
        }
        row.updated_at = crate::util::now_rfc3339();
        if !self.store.update_webhook(&row).await? {
            return Err(WebhookError::Unknown);
        }
        self.reload_logged().await;
        let mut value = self.describe(&row);
        if let Some(secret) = secret {
            value["secret"] = json!(secret);
        }
        Ok(value)
    }

    pub async fn delete(&self, tenant: &str, id: &str) -> Result<(), WebhookError> {
        if !self.store.delete_webhook(tenant, id).await? {
            return Err(WebhookError::Unknown);
        }
        self.reload_logged().await;
        Ok(())
    }

    /// A webhook's delivery log, newest first.
    pub async fn deliveries(
        &self,
        tenant: &str,
        id: &str,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Value>, WebhookError> {
        if self.store.webhook(tenant, id).await?.is_none() {
            return Err(WebhookError::Unknown);
        }
        let rows = self
            .store
            .list_deliveries(tenant, id, before, limit)
            .await?;
        Ok(rows
            .iter()
            .map(|d| {
                json!({
                    "id": d.id,
                    "event_id": d.event_id,
                    "event_type": d.event_type,
                    "status": d.status,
                    "attempts": serde_json::from_str::<Value>(&d.attempts).unwrap_or(json!([])),
                    "payload": serde_json::from_str::<Value>(&d.payload).unwrap_or(Value::Null),
                    "created_at": d.created_at,
                    "updated_at": d.updated_at,
                })
            })
            .collect())
    }

    /// Sends a `webhook.test` event to one webhook (whatever it subscribed
    /// to); returns the event.
    pub async fn send_test(&self, tenant: &str, id: &str) -> Result<WebhookEvent, WebhookError> {
        let row = self
            .store
            .webhook(tenant, id)
            .await?
            .ok_or(WebhookError::Unknown)?;
        let event = WebhookEvent::new(
            "webhook.test",
            tenant,
            json!({"webhook_id": row.id, "message": "a test delivery requested over the API"}),
        );
        self.reload_logged().await;
        self.enqueue(&event, Some(id)).await;
        Ok(event)
    }

    /// Queues `event` for every webhook of its tenant that subscribed to
    /// it (or for the one webhook `only`).
    pub async fn publish(&self, event: &WebhookEvent) {
        self.enqueue(event, None).await;
    }

    async fn enqueue(&self, event: &WebhookEvent, only: Option<&str>) {
        let targets: Vec<(String, mpsc::Sender<Job>)> = self
            .lanes
            .lock()
            .values()
            .filter(|lane| {
                let c = lane.config.load();
                *c.tenant == *event.tenant
                    && match only {
                        Some(id) => c.id == id,
                        None => c.wants(event.kind),
                    }
            })
            .map(|lane| (lane.config.load().id.clone(), lane.tx.clone()))
            .collect();
        if targets.is_empty() {
            return;
        }
        let body: Arc<str> = match serde_json::to_string(event) {
            Ok(body) => body.into(),
            Err(e) => {
                tracing::error!(error = %e, "webhook event not serializable");
                return;
            }
        };
        for (webhook_id, tx) in targets {
            let now = crate::util::now_rfc3339();
            let row = DeliveryRow {
                id: uuid::Uuid::now_v7().to_string(),
                webhook_id: webhook_id.clone(),
                tenant_id: event.tenant.clone(),
                event_id: event.id.clone(),
                event_type: event.kind.to_owned(),
                status: "pending".into(),
                payload: body.to_string(),
                attempts: "[]".into(),
                created_at: now.clone(),
                created_unix: unix_now(),
                updated_at: now,
            };
            if let Err(e) = self.store.insert_delivery(&row).await {
                tracing::error!(webhook = %webhook_id, error = %e, "webhook delivery not recorded; not sent");
                self.count("dropped");
                continue;
            }
            let job = Job {
                delivery_id: row.id.clone(),
                event_type: event.kind,
                body: body.clone(),
            };
            if tx.try_send(job).is_err() {
                tracing::warn!(webhook = %webhook_id, event = event.kind, "webhook queue full (or webhook gone); delivery dropped");
                self.count("dropped");
                if let Err(e) = self.store.update_delivery(&row.id, "dropped", "[]").await {
                    tracing::warn!(error = %e, "could not record a dropped delivery");
                }
            }
        }
    }

    fn count(&self, outcome: &'static str) {
        self.metrics
            .webhook_deliveries
            .get_or_create(&crate::metrics::OutcomeLabels { outcome })
            .inc();
    }

    async fn reload_logged(&self) {
        if let Err(e) = self.reload().await {
            tracing::error!(error = %e, "webhooks not reloaded");
        }
    }

    /// Brings the lanes in line with the store: starts lanes of new
    /// webhooks, stops those of deleted ones, hands changed settings to the
    /// rest (also what other replicas changed, as this runs periodically).
    pub async fn reload(&self) -> Result<(), StoreError> {
        let _one = self.reloading.lock().await;
        let rows = self.store.all_webhooks().await?;
        let mut configs = Vec::with_capacity(rows.len());
        for row in rows {
            let url = self.secrets.decrypt(&row.url, &url_context(&row.id));
            let secret = self.secrets.decrypt(&row.secret, &secret_context(&row.id));
            match (url, secret) {
                (Ok(url), Ok(secret)) => configs.push(HookConfig {
                    id: row.id,
                    tenant: Arc::from(row.tenant_id.as_str()),
                    url,
                    secret,
                    events: row.events,
                    enabled: row.enabled,
                }),
                _ => {
                    tracing::error!(webhook = %row.id, "webhook skipped: its URL or secret cannot be decrypted with the current keys")
                }
            }
        }
        let mut lanes = self.lanes.lock();
        lanes.retain(|id, lane| {
            let keep = configs.iter().any(|c| c.id == *id);
            if !keep {
                lane.stop.cancel();
            }
            keep
        });
        for config in configs {
            match lanes.get(&config.id) {
                Some(lane) => lane.config.store(Arc::new(config)),
                None => {
                    let id = config.id.clone();
                    let (tx, rx) = mpsc::channel(self.settings.queue_size);
                    let config = Arc::new(ArcSwap::from_pointee(config));
                    let stop = self.shutdown.child_token();
                    tokio::spawn(delivery::run_lane(
                        delivery::LaneContext {
                            store: self.store.clone(),
                            settings: self.settings.clone(),
                            policy: self.policy.clone(),
                            http: self.http.clone(),
                            metrics: self.metrics.clone(),
                        },
                        config.clone(),
                        rx,
                        stop.clone(),
                    ));
                    lanes.insert(id, Lane { config, tx, stop });
                }
            }
        }
        Ok(())
    }

    /// Deletes old delivery records (by age, then beyond the count kept per
    /// webhook).
    pub async fn prune(&self) -> Result<u64, StoreError> {
        let cutoff = unix_now() - self.settings.retention.as_secs() as i64;
        self.store
            .prune_deliveries(cutoff, self.settings.keep_per_webhook)
            .await
    }
}

fn check_description(description: Option<String>) -> Result<Option<String>, WebhookError> {
    match description {
        Some(d) if d.chars().count() > 500 => Err(WebhookError::Invalid(
            "description is longer than 500 characters".into(),
        )),
        Some(d) if d.trim().is_empty() => Ok(None),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> OutboundPolicy {
        // The gateway's defaults.
        OutboundPolicy::from_settings(&crate::config::Settings::default().outbound)
    }

    #[test]
    fn metadata_and_link_local_receivers_are_refused() {
        for url in [
            "http://169.254.169.254/latest/meta-data",
            "https://169.254.169.254/",
            "https://[fe80::1]/hook",
            "https://[::ffff:169.254.169.254]/",
            "https://metadata.google.internal/computeMetadata/v1/",
            "https://0.0.0.0/",
        ] {
            assert!(
                matches!(
                    check_target(&policy(), true, url),
                    Err(WebhookError::Refused(_))
                ),
                "{url} should be refused"
            );
        }
        let open = OutboundPolicy {
            allow_link_local: true,
            ..policy()
        };
        assert!(check_target(&open, false, "https://169.254.169.254/").is_ok());
    }

    #[test]
    fn plain_http_only_to_loopback_unless_allowed() {
        let p = policy();
        assert!(check_target(&p, false, "http://127.0.0.1:9000/hook").is_ok());
        assert!(check_target(&p, false, "http://[::1]:9000/hook").is_ok());
        assert!(check_target(&p, false, "http://localhost:9000/hook").is_ok());
        assert!(matches!(
            check_target(&p, false, "http://hooks.example.com/x"),
            Err(WebhookError::Refused(_))
        ));
        assert!(check_target(&p, true, "http://hooks.example.com/x").is_ok());
        assert!(check_target(&p, false, "https://hooks.example.com/x").is_ok());
        let strict = OutboundPolicy {
            allow_loopback: false,
            ..policy()
        };
        assert!(check_target(&strict, false, "http://127.0.0.1:9000/").is_err());
    }

    #[test]
    fn odd_urls_are_invalid() {
        for url in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "not a url",
            "https://user:pw@example.com/",
        ] {
            assert!(
                matches!(
                    check_target(&policy(), true, url),
                    Err(WebhookError::Invalid(_))
                ),
                "{url} should be invalid"
            );
        }
    }

    #[tokio::test]
    async fn resolved_addresses_are_checked() {
        let strict = OutboundPolicy {
            allow_loopback: false,
            ..policy()
        };
        // `localhost` passes the text check but resolves to loopback.
        assert!(matches!(
            check_target_resolved(&strict, false, "http://localhost:1/").await,
            Err(WebhookError::Refused(_))
        ));
    }

    #[test]
    fn settings_are_parsed_and_bounded() {
        use std::collections::BTreeMap;
        let load = |pairs: &[(&str, &str)]| {
            let env: BTreeMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            crate::config::Settings::load_from(&env, None, &|_| None)
        };
        let s = load(&[
            ("META_MCP_WEBHOOK_MAX_ATTEMPTS", "3"),
            ("META_MCP_WEBHOOK_BASE_DELAY_MS", "20"),
            ("META_MCP_WEBHOOK_TIMEOUT_SECS", "2.5"),
            ("META_MCP_WEBHOOK_QUEUE_SIZE", "7"),
            ("META_MCP_WEBHOOK_RETENTION_DAYS", "2"),
            ("META_MCP_WEBHOOK_KEEP_PER_WEBHOOK", "9"),
            ("META_MCP_WEBHOOK_ALLOW_HTTP", "true"),
        ])
        .unwrap()
        .webhooks;
        assert_eq!(s.max_attempts, 3);
        assert_eq!(s.base_delay, Duration::from_millis(20));
        assert_eq!(s.timeout, Duration::from_millis(2500));
        assert_eq!((s.queue_size, s.keep_per_webhook), (7, 9));
        assert_eq!(s.retention, Duration::from_secs(2 * 86_400));
        assert!(s.allow_http);
        let defaults = load(&[]).unwrap().webhooks;
        assert_eq!((defaults.max_attempts, defaults.allow_http), (5, false));
        for (name, value) in [
            ("META_MCP_WEBHOOK_MAX_ATTEMPTS", "0"),
            ("META_MCP_WEBHOOK_MAX_ATTEMPTS", "21"),
            ("META_MCP_WEBHOOK_BASE_DELAY_MS", "0"),
            ("META_MCP_WEBHOOK_TIMEOUT_SECS", "-1"),
            ("META_MCP_WEBHOOK_QUEUE_SIZE", "0"),
            ("META_MCP_WEBHOOK_RETENTION_DAYS", "x"),
            ("META_MCP_WEBHOOK_ALLOW_HTTP", "maybe"),
        ] {
            let err = load(&[(name, value)]).unwrap_err();
            assert_eq!(err.name, name, "{value}");
        }
    }

    #[test]
    fn event_lists_are_checked() {
        assert_eq!(
            check_events(&["upstream.down".into(), "upstream.down".into()]).unwrap(),
            vec!["upstream.down"]
        );
        assert!(check_events(&["*".into()]).is_ok());
        assert!(check_events(&[]).is_err());
        assert!(check_events(&["upstream.sideways".into()]).is_err());
        let hook = HookConfig {
            id: "wh".into(),
            tenant: Arc::from("t"),
            url: String::new(),
            secret: String::new(),
            events: vec!["tool.added".into()],
            enabled: true,
        };
        assert!(hook.wants("tool.added") && !hook.wants("tool.removed"));
        let off = HookConfig {
            enabled: false,
            ..hook
        };
        assert!(!off.wants("tool.added"));
    }
}
