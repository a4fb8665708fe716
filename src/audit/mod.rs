//! The tamper-evident audit trail: who changed what, and every tool call.
//!
//! Records are built on the request path ([`AuditLog::record`] and the
//! tool-call helpers), queued, and written off it by one writer task in
//! batches, one transaction each ([`writer`]). Each record is chained to the
//! one before it by an HMAC under a key that never enters the database
//! ([`chain`]), so `metamcp audit verify` ([`verify`]) finds a changed,
//! removed or inserted record and names it.
//!
//! Order with several replicas: a chain is the records of one `chain_id`
//! (`META_MCP_AUDIT_CHAIN_ID`, default `main`) ordered by `seq`. A writer
//! appends a batch under the lock of its chain's head row, so replicas that
//! share a chain id take turns and the database's commit order is the
//! chain's order; replicas given their own chain ids never wait for each
//! other. Verification checks every chain.

pub mod chain;
pub mod cli;
mod writer;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use rmcp::model::JsonObject;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use chain::{AuditKeys, Break, ChainReport};

use crate::{
    auth::Principal,
    config::Secret,
    metrics::Metrics,
    pipeline::{CallError, Called},
    store::{AuditRow, Store, StoreError},
    upstream::UpstreamError,
};

/// What happens to a record when the writer's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueFull {
    /// The call or change waits until there is room (nothing is lost).
    Block,
    /// The record is dropped and counted (`metamcp_audit_queue_dropped_total`)
    /// and a warning is logged.
    Drop,
}

/// The audit settings (`META_MCP_AUDIT_*`).
#[derive(Debug, Clone)]
pub struct AuditSettings {
    pub enabled: bool,
    /// The secret the audit keys are derived from; `None`: the secret key.
    pub key: Option<Secret>,
    pub queue_size: usize,
    pub queue_full: QueueFull,
    /// Store tool-call arguments themselves (not only their hash).
    pub arguments: bool,
    /// The chain this process appends to.
    pub chain_id: String,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            key: None,
            queue_size: 10_000,
            queue_full: QueueFull::Block,
            arguments: false,
            chain_id: "main".into(),
        }
    }
}

impl AuditSettings {
    /// Applies one `audit_*` setting (`key` without the `audit_` prefix).
    pub fn apply(&mut self, key: &str, value: &str) -> Result<(), String> {
        let bool_of = |v: &str| match v.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            other => Err(format!("expected true or false, got {other:?}")),
        };
        match key {
            "enabled" => self.enabled = bool_of(value)?,
            "arguments" => self.arguments = bool_of(value)?,
            "key" => {
                if value.trim().len() < 32 {
                    return Err("needs at least 32 bytes (e.g. `openssl rand -base64 48`)".into());
                }
                self.key = Some(Secret(value.trim().to_owned()));
            }
            "queue_size" => {
                self.queue_size = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| (1..=10_000_000).contains(n))
                    .ok_or_else(|| format!("expected 1 to 10000000, got {value:?}"))?
            }
            "queue_full" => {
                self.queue_full = match value.trim().to_ascii_lowercase().as_str() {
                    "block" => QueueFull::Block,
                    "drop" => QueueFull::Drop,
                    other => return Err(format!("expected block or drop, got {other:?}")),
                }
            }
            "chain_id" => {
                let id = value.trim();
                if id.is_empty()
                    || id.len() > 64
                    || !id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                {
                    return Err("expected 1 to 64 of the characters A-Z a-z 0-9 _ - .".into());
                }
                self.chain_id = id.to_owned();
            }
            other => return Err(format!("unknown setting audit_{other}")),
        }
        Ok(())
    }
}

/// The audit keys for `settings`: from `META_MCP_AUDIT_KEY`, else from the
/// gateway's secret key (`secret`).
pub fn keys(settings: &AuditSettings, secret: &[u8]) -> AuditKeys {
    match &settings.key {
        Some(key) => AuditKeys::derive(key.0.as_bytes()),
        None => AuditKeys::derive(secret),
    }
}

/// The longest text kept of a value that came from outside (a tool name, a
/// path segment, a username that failed to log in).
const MAX_FIELD_CHARS: usize = 512;

/// A field as stored: bounded, and without NUL (PostgreSQL text refuses it).
pub fn field(value: &str) -> String {
    value
        .chars()
        .take(MAX_FIELD_CHARS)
        .map(|c| if c == '\0' { '\u{FFFD}' } else { c })
        .collect()
}

/// `t` in the one text format records use: UTC, microseconds, `Z`; fixed
/// width, so text order is time order.
fn format_time(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// Now, in the records' format.
pub fn timestamp() -> String {
    format_time(time::OffsetDateTime::now_utc())
}

/// Parses an RFC 3339 time (or a date, `YYYY-MM-DD`) given as a filter into
/// the records' format.
pub fn parse_time(value: &str) -> Option<String> {
    use time::format_description::well_known::Rfc3339;
    let value = value.trim();
    let parsed = time::OffsetDateTime::parse(value, &Rfc3339)
        .or_else(|_| time::OffsetDateTime::parse(&format!("{value}T00:00:00Z"), &Rfc3339))
        .ok()?;
    (0..=9999)
        .contains(&parsed.year())
        .then(|| format_time(parsed))
}

/// The tool-call fields captured when a call starts.
/// A call dropped before it finished (its caller went away, or it was
/// cancelled) is still recorded, as `cancelled`, when this goes.
pub struct CallStart {
    /// Taken when the call's end is recorded.
    row: Option<AuditRow>,
    started: std::time::Instant,
    log: AuditLog,
}

impl CallStart {
    fn finish(&mut self, outcome: &str, detail: Option<&str>) -> Option<AuditRow> {
        let mut row = self.row.take()?;
        // The id is the record's time of ending (ids order listings), and
        // every path out of here (finished or cancelled) needs one.
        row.id = uuid::Uuid::now_v7().to_string();
        row.target = row.tool.clone();
        row.outcome = outcome.into();
        row.detail = detail.map(str::to_owned);
        row.duration_us = Some(self.started.elapsed().as_micros().min(i64::MAX as u128) as i64);
        Some(row)
    }
}

impl Drop for CallStart {
    fn drop(&mut self) {
        // No waiting in a destructor: whatever the policy, a full queue
        // drops (and counts) this one.
        let Some(row) = self.finish("cancelled", None) else {
            return;
        };
        let Some(tx) = &self.log.inner.tx else { return };
        let queued = tx.try_send(row).is_ok();
        self.log
            .inner
            .metrics
            .audit_queue_depth
            .set((tx.max_capacity() - tx.capacity()) as i64);
        if !queued {
            self.log.dropped();
        }
    }
}

/// Why a tool call ended as it did: (outcome, detail). Outcomes are those of
/// `metamcp_tool_calls_total` plus `denied` (policy refused the caller),
/// `input_required` and (see [`CallStart`]) `cancelled`; the detail names the error's kind, never its message
/// (which may quote the arguments).
pub fn call_outcome(result: &Result<Called, CallError>) -> (&'static str, Option<&'static str>) {
    match result {
        Ok(c) if c.result.is_error == Some(true) => ("tool_error", None),
        Ok(c) if c.cached => ("cached", None),
        Ok(_) => ("success", None),
        Err(e) => match e {
            CallError::Forbidden(_) => ("denied", Some("forbidden")),
            CallError::UnknownTool(_) => ("rejected", Some("unknown_tool")),
            CallError::Disabled(_) => ("rejected", Some("disabled")),
            CallError::Quarantined { .. } => ("rejected", Some("quarantined")),
            CallError::NotExecutable { .. } => ("rejected", Some("not_executable")),
            CallError::InvalidArguments { .. } => ("rejected", Some("invalid_arguments")),
            CallError::RateLimited { .. } => ("rejected", Some("rate_limited")),
            CallError::BreakerOpen { .. } => ("upstream_error", Some("breaker_open")),
            CallError::HttpTool { .. } => ("upstream_error", Some("http_tool")),
            CallError::Upstream(u) => match u {
                UpstreamError::InputRequired { .. } => ("input_required", None),
                UpstreamError::Unavailable { .. } => ("upstream_error", Some("unavailable")),
                UpstreamError::Timeout { .. } => ("upstream_error", Some("timeout")),
                UpstreamError::ConnectionLost { .. } => ("upstream_error", Some("connection_lost")),
                UpstreamError::Protocol { .. } => ("upstream_error", Some("protocol")),
                UpstreamError::Rpc { .. } => ("upstream_error", Some("rpc_error")),
                UpstreamError::Exhausted { .. } => ("rejected", Some("concurrency_exhausted")),
                UpstreamError::Unsupported { .. } => ("upstream_error", Some("unsupported")),
            },
        },
    }
}

struct Inner {
    keys: AuditKeys,
    arguments: bool,
    queue_full: QueueFull,
    /// `None` when the trail is off.
    tx: Option<mpsc::Sender<AuditRow>>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    writer: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// When a drop was last logged (Unix seconds), so a full queue warns
    /// every few seconds rather than once per record.
    last_drop_warning: AtomicU64,
}

/// The handle every producer of records holds (cheap to clone).
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

impl AuditLog {
    /// Starts the writer (when the trail is enabled) and returns the handle.
    pub fn start(
        settings: &AuditSettings,
        keys: AuditKeys,
        store: Store,
        metrics: Arc<Metrics>,
    ) -> Self {
        let stop = CancellationToken::new();
        let (tx, handle) = if settings.enabled {
            let (tx, rx) = mpsc::channel(settings.queue_size);
            let handle = tokio::spawn(writer::run(writer::Writer {
                store,
                keys: keys.clone(),
                chain_id: settings.chain_id.clone(),
                rx,
                metrics: metrics.clone(),
                stop: stop.clone(),
                head_reported: Default::default(),
            }));
            (Some(tx), Some(handle))
        } else {
            (None, None)
        };
        Self {
            inner: Arc::new(Inner {
                keys,
                arguments: settings.arguments,
                queue_full: settings.queue_full,
                tx,
                metrics,
                stop,
                writer: parking_lot::Mutex::new(handle),
                last_drop_warning: AtomicU64::new(0),
            }),
        }
    }

    pub fn enabled(&self) -> bool {
        self.inner.tx.is_some()
    }

    pub fn keys(&self) -> &AuditKeys {
        &self.inner.keys
    }

    /// Queues one record (id and timestamp are filled in when empty). With
    /// the `block` policy this waits while the queue is full.
    pub async fn record(&self, mut row: AuditRow) {
        let Some(tx) = &self.inner.tx else { return };
        if row.id.is_empty() {
            row.id = uuid::Uuid::now_v7().to_string();
        }
        if row.ts.is_empty() {
            row.ts = timestamp();
        }
        let queued = match self.inner.queue_full {
            QueueFull::Block => tx.send(row).await.is_ok(),
            QueueFull::Drop => tx.try_send(row).is_ok(),
        };
        self.inner
            .metrics
            .audit_queue_depth
            .set((tx.max_capacity() - tx.capacity()) as i64);
        if !queued {
            self.dropped();
        }
    }

    fn dropped(&self) {
        self.inner.metrics.audit_dropped.inc();
        let now = crate::auth::tokens::now_secs() as u64;
        let last = self.inner.last_drop_warning.load(Ordering::Relaxed);
        if now >= last + 5
            && self
                .inner
                .last_drop_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                dropped_total = self.inner.metrics.audit_dropped.get(),
                "audit queue full (or closed): records dropped (META_MCP_AUDIT_QUEUE_FULL=drop); see metamcp_audit_queue_dropped_total"
            );
        }
    }

    /// Captures who calls what with which arguments, as a call starts.
    pub fn call_started(
        &self,
        principal: &Principal,
        name: &str,
        arguments: Option<&JsonObject>,
    ) -> Option<CallStart> {
        self.inner.tx.as_ref()?;
        let (args_hash, args) = match arguments {
            Some(a) => {
                let mut canonical = String::new();
                canonical_object(a, &mut canonical);
                let hash = self.inner.keys.arguments_hash(&canonical);
                (
                    Some(hash),
                    self.inner.arguments.then(|| field_unbounded(&canonical)),
                )
            }
            None => (None, None),
        };
        Some(CallStart {
            log: self.clone(),
            row: Some(AuditRow {
                ts: timestamp(),
                kind: "tool_call".into(),
                action: "tools/call".into(),
                tool: Some(field(name)),
                args_hash,
                args,
                ..principal_fields(principal)
            }),
            started: std::time::Instant::now(),
        })
    }

    /// Records how a call started by [`Self::call_started`] ended; `tool`
    /// and `server` are what the catalog resolved (`None` when nothing was).
    pub async fn call_finished(
        &self,
        start: Option<CallStart>,
        resolved: Option<(&str, Option<&str>)>,
        result: &Result<Called, CallError>,
    ) {
        let Some(mut start) = start else { return };
        if let (Some(row), Some((tool, server))) = (start.row.as_mut(), resolved) {
            row.tool = Some(field(tool));
            row.server = server.map(field);
        }
        let (outcome, detail) = call_outcome(result);
        if let Some(row) = start.finish(outcome, detail) {
            self.record(row).await;
        }
    }

    /// Stops the writer after it has written everything queued.
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        let handle = self.inner.writer.lock().take();
        if let Some(handle) = handle
            && let Err(e) = handle.await
        {
            tracing::error!(error = %e, "audit writer ended abnormally");
        }
    }
}

/// Writes `object` as compact JSON with its keys sorted, recursively: the
/// canonical form argument hashes are computed over (built in place, with
/// no copy of the arguments on the call path).
fn canonical_object(object: &JsonObject, out: &mut String) {
    let mut keys: Vec<&String> = object.keys().collect();
    keys.sort();
    out.push('{');
    for (i, key) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::Value::String(key.clone()).to_string());
        out.push(':');
        canonical_value(&object[key], out);
    }
    out.push('}');
}

fn canonical_value(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::Object(o) => canonical_object(o, out),
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_value(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Arguments are kept whole when the operator asked for them (the request
/// body limit bounds them); only NUL is replaced.
fn field_unbounded(value: &str) -> String {
    value.replace('\0', "\u{FFFD}")
}

/// The actor fields of a record, from a principal.
pub fn principal_fields(p: &Principal) -> AuditRow {
    AuditRow {
        tenant_id: p.tenant_id.to_string(),
        actor_id: (!p.user_id.is_empty()).then(|| p.user_id.to_string()),
        actor_name: (!p.username.is_empty()).then(|| p.username.to_string()),
        auth_method: serde_json::to_value(p.method)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned)),
        ..Default::default()
    }
}

/// Verifies every chain in the store. `logged` are heads copied from the
/// log (chain, seq, MAC) that the chains must still contain.
pub async fn verify(
    store: &Store,
    keys: &AuditKeys,
    logged: &[(String, i64, String)],
) -> Result<Vec<ChainReport>, StoreError> {
    const PAGE: i64 = 1000;
    let mut chains = store.audit_chain_ids().await?;
    for (chain, _, _) in logged {
        if !chains.contains(chain) {
            chains.push(chain.clone());
        }
    }
    let mut reports = Vec::new();
    for chain_id in chains {
        let head = store.audit_head(&chain_id).await?;
        let mut v = chain::ChainVerifier::new(keys, &chain_id, head);
        for (c, seq, mac) in logged {
            if *c == chain_id {
                v.expect(*seq, mac.clone());
            }
        }
        let (mut after_seq, mut after_id) = (i64::MIN, String::new());
        loop {
            let page = store
                .audit_chain_page(&chain_id, after_seq, &after_id, PAGE)
                .await?;
            for row in &page {
                v.feed(row);
            }
            match page.last() {
                Some(last) if page.len() as i64 == PAGE => {
                    after_seq = last.seq;
                    after_id = last.id.clone();
                }
                _ => break,
            }
        }
        reports.push(v.finish());
    }
    Ok(reports)
}

/// How long the writer keeps retrying a batch the database refuses at
/// shutdown before it gives up (and says how many records were lost).
const SHUTDOWN_RETRY: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_refuse_bad_values() {
        let mut s = AuditSettings::default();
        assert_eq!(s.queue_full, QueueFull::Block);
        s.apply("queue_full", "drop").unwrap();
        assert_eq!(s.queue_full, QueueFull::Drop);
        assert!(s.apply("queue_full", "maybe").is_err());
        assert!(s.apply("key", "short").is_err());
        s.apply("key", &"k".repeat(32)).unwrap();
        assert!(s.apply("chain_id", "a b").is_err());
        s.apply("chain_id", "replica-1").unwrap();
        assert!(s.apply("queue_size", "0").is_err());
        s.apply("queue_size", "5").unwrap();
        assert_eq!(s.queue_size, 5);
    }

    #[test]
    fn times_have_one_sortable_format() {
        let now = timestamp();
        assert_eq!(now.len(), "2026-11-24T08:00:00.000000Z".len(), "{now}");
        assert_eq!(
            parse_time("2026-11-24T10:00:00+02:00").as_deref(),
            Some("2026-11-24T08:00:00.000000Z")
        );
        assert_eq!(
            parse_time("2026-11-24").as_deref(),
            Some("2026-11-24T00:00:00.000000Z")
        );
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn canonical_arguments_sort_keys_at_every_depth() {
        let a: JsonObject =
            serde_json::from_str(r#"{"b": [{"y": 1, "x": "\u0000"}], "a": {"d": null, "c": 1.5}}"#)
                .unwrap();
        let mut out = String::new();
        canonical_object(&a, &mut out);
        assert_eq!(
            out,
            r#"{"a":{"c":1.5,"d":null},"b":[{"x":"\u0000","y":1}]}"#
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            out,
            crate::catalog::pins::canonical_json(&v).to_string(),
            "the catalog's canonical JSON"
        );
    }

    #[test]
    fn fields_from_outside_are_bounded_and_nul_free() {
        assert_eq!(field("a\0b"), "a\u{FFFD}b");
        assert_eq!(field(&"x".repeat(10_000)).len(), MAX_FIELD_CHARS);
    }
}
