//! Legacy MCP sessions (2025-11-25 and older, `Mcp-Session-Id`) shared
//! between replicas through Redis, when `META_MCP_REDIS_URL` is set.
//!
//! One Redis hash per session, `<prefix>:mcp-session:<id>`, holds what a
//! replica that never saw the session needs to serve it:
//!
//! - `owner`: the principal that opened it (tenant and user) and the
//!   endpoint (`/mcp`, `/mcp/{profile}`, `/mcp/discovery`). A request
//!   presenting the id under another principal, or at another endpoint, on
//!   any replica, answers 404 like an unknown session (as in one process,
//!   where each endpoint has its own sessions: nothing about another's
//!   session is revealed);
//! - `init`: the client's `initialize` parameters (rmcp's [`SessionState`]),
//!   which rmcp replays to rebuild the session in a replica that does not
//!   hold it (`StreamableHttpServerConfig::session_store`);
//! - `level`: the level the client set with `logging/setLevel`;
//! - `sub:<uri>`: each resource the client subscribed to.
//!
//! The hash lives as long as the session idle timeout and every request
//! that presents the id refreshes it; a `DELETE` removes it. A replica that
//! still holds a session Redis no longer knows (deleted through another
//! replica, or expired) ends its copy and answers 404, as the spec wants for
//! a terminated session.
//!
//! What cannot move is what lives in one process: an open SSE stream (the
//! session's GET stream, a request's response stream) and a call waiting on
//! a server-to-client request; the README gives the load-balancer rule that
//! keeps those on one replica. While Redis is unreachable, each replica
//! serves the sessions it holds (their owner checked in memory by the
//! authentication layer) and no other.

// `logging/setLevel` is deprecated by SEP-2577 (2026-07-28) but is what
// legacy sessions speak.
#![allow(deprecated)]

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{extract::Request, http::StatusCode, response::IntoResponse, response::Response};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use rmcp::{
    model::LoggingLevel,
    transport::streamable_http_server::{
        SessionManager,
        session::{SessionState, SessionStore, SessionStoreError, local::LocalSessionManager},
    },
};

use crate::auth::Principal;

/// How long one Redis command (or connection attempt) may take.
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

const SESSION_HEADER: &str = "mcp-session-id";

/// Why the shared record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// The log level a session's shared record holds, handed with a request
/// to the handler (which adopts it if its copy of the session has another).
#[derive(Debug, Clone, Copy)]
pub struct SharedLevel(pub LoggingLevel);

/// Who presents a session id, as the shared record tells.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Presented {
    /// The principal that opened it; with the session's log level, which
    /// another replica may have set since this one last saw the session.
    ByOwner(Option<LoggingLevel>),
    /// Somebody else.
    ByStranger,
    /// Nobody has it: it never existed, ended, or expired.
    Unknown,
}

/// The per-session relay state a replica restores with the session.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Relays {
    pub level: Option<LoggingLevel>,
    pub subscriptions: Vec<String>,
}

/// A session's shared record, as read from its hash's fields.
#[derive(Debug, Default)]
struct Record {
    owner: Option<String>,
    init: Option<SessionState>,
    relays: Relays,
}

const OWNER: &str = "owner";
const INIT: &str = "init";
const LEVEL: &str = "level";
const SUBSCRIPTION: &str = "sub:";

impl Record {
    /// Reads the fields of a hash; a field that does not parse counts as
    /// absent (a record is never trusted beyond what it proves).
    fn from_fields(fields: HashMap<String, String>) -> Self {
        let mut record = Record::default();
        for (field, value) in fields {
            match field.as_str() {
                OWNER => record.owner = Some(value),
                INIT => record.init = serde_json::from_str(&value).ok(),
                LEVEL => record.relays.level = serde_json::from_str(&value).ok(),
                _ => {
                    if let Some(uri) = field.strip_prefix(SUBSCRIPTION) {
                        record.relays.subscriptions.push(uri.to_owned());
                    }
                }
            }
        }
        record.relays.subscriptions.sort();
        record
    }

    /// The state rmcp may restore the session from: only a session whose
    /// owner is recorded (the owner check runs on the owner field).
    fn restorable(self) -> Option<SessionState> {
        self.owner.and(self.init)
    }
}

/// What a session belongs to: tenant, user, and the endpoint it serves.
fn owner_of(principal: &Principal, endpoint: &str) -> String {
    format!(
        "{}\u{1f}{}\u{1f}{endpoint}",
        principal.tenant_id, principal.user_id
    )
}

/// The shared session records in Redis.
pub struct SharedSessions {
    redis: ConnectionManager,
    prefix: String,
    ttl: Duration,
    /// Whether the last command reached Redis (said in the log on change).
    up: AtomicBool,
}

impl SharedSessions {
    /// Connects lazily (the first command connects; Redis may come later).
    pub fn new(url: &str, prefix: &str, ttl: Duration) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("not a Redis URL: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(REDIS_TIMEOUT);
        let redis = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| format!("cannot set up the Redis connection: {e}"))?;
        Ok(Self {
            redis,
            prefix: prefix.to_owned(),
            ttl,
            up: AtomicBool::new(true),
        })
    }

    fn key(&self, id: &str) -> String {
        format!("{}:mcp-session:{id}", self.prefix)
    }

    fn ttl_ms(&self) -> u64 {
        self.ttl.as_millis().clamp(1, u64::MAX as u128) as u64
    }

    /// Runs `pipe`, noting whether Redis answered.
    async fn run<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, SharedError> {
        let mut conn = self.redis.clone();
        self.noted(pipe.query_async::<T>(&mut conn).await)
    }

    /// Says in the log when Redis stops or starts answering.
    fn noted<T>(&self, result: redis::RedisResult<T>) -> Result<T, SharedError> {
        match result {
            Ok(v) => {
                if !self.up.swap(true, Ordering::AcqRel) {
                    tracing::info!(
                        "Redis is reachable again: MCP sessions are shared between replicas"
                    );
                }
                Ok(v)
            }
            Err(e) => {
                if self.up.swap(false, Ordering::AcqRel) {
                    tracing::warn!(
                        error = %e,
                        "Redis is unreachable: each replica serves only the MCP sessions it holds"
                    );
                }
                Err(e.into())
            }
        }
    }

    /// Who presents session `id` at `endpoint`, refreshing the record's
    /// lifetime (every request that names the session is a use of it).
    pub async fn check(
        &self,
        id: &str,
        principal: &Principal,
        endpoint: &str,
    ) -> Result<Presented, SharedError> {
        let key = self.key(id);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HMGET")
            .arg(&key)
            .arg(OWNER)
            .arg(LEVEL)
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(self.ttl_ms())
            .ignore();
        let ((owner, level),): ((Option<String>, Option<String>),) = self.run(&pipe).await?;
        Ok(match owner {
            None => Presented::Unknown,
            Some(owner) if owner == owner_of(principal, endpoint) => {
                Presented::ByOwner(level.and_then(|l| serde_json::from_str(&l).ok()))
            }
            Some(_) => Presented::ByStranger,
        })
    }

    /// Records who opened session `id`, at which endpoint (never replaces
    /// an owner).
    pub async fn bind(
        &self,
        id: &str,
        principal: &Principal,
        endpoint: &str,
    ) -> Result<(), SharedError> {
        let key = self.key(id);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset_nx(&key, OWNER, owner_of(principal, endpoint))
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(self.ttl_ms())
            .ignore();
        self.run::<()>(&pipe).await
    }

    /// Records the level session `id` set with `logging/setLevel`.
    pub async fn set_level(&self, id: &str, level: LoggingLevel) -> Result<(), SharedError> {
        let value = serde_json::to_string(&level).unwrap_or_default();
        self.set_field(id, LEVEL.to_owned(), Some(value)).await
    }

    /// Records that session `id` subscribed to (or unsubscribed from) `uri`.
    pub async fn set_subscribed(
        &self,
        id: &str,
        uri: &str,
        subscribed: bool,
    ) -> Result<(), SharedError> {
        let field = format!("{SUBSCRIPTION}{uri}");
        self.set_field(id, field, subscribed.then(|| "1".to_owned()))
            .await
    }

    /// Sets (or, with `None`, removes) one field of a session's record.
    /// Written after the session ended (deleted meanwhile through another
    /// replica), it makes a record without owner, which nobody can use
    /// and which expires like any other.
    async fn set_field(
        &self,
        id: &str,
        field: String,
        value: Option<String>,
    ) -> Result<(), SharedError> {
        let key = self.key(id);
        let mut pipe = redis::pipe();
        pipe.atomic();
        match value {
            Some(value) => pipe.hset(&key, field, value).ignore(),
            None => pipe.hdel(&key, field).ignore(),
        };
        pipe.cmd("PEXPIRE").arg(&key).arg(self.ttl_ms()).ignore();
        self.run::<()>(&pipe).await
    }

    /// The relay state of session `id` (level, subscriptions).
    pub async fn relays(&self, id: &str) -> Result<Relays, SharedError> {
        Ok(self.record(id).await?.relays)
    }

    async fn record(&self, id: &str) -> Result<Record, SharedError> {
        let mut pipe = redis::pipe();
        pipe.hgetall(self.key(id));
        let (fields,): (HashMap<String, String>,) = self.run(&pipe).await?;
        Ok(Record::from_fields(fields))
    }
}

#[async_trait::async_trait]
impl SessionStore for SharedSessions {
    async fn load(&self, session_id: &str) -> Result<Option<SessionState>, SessionStoreError> {
        Ok(self.record(session_id).await?.restorable())
    }

    async fn store(&self, session_id: &str, state: &SessionState) -> Result<(), SessionStoreError> {
        let key = self.key(session_id);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset(&key, INIT, serde_json::to_string(state)?)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(self.ttl_ms())
            .ignore();
        Ok(self.run::<()>(&pipe).await?)
    }

    async fn delete(&self, session_id: &str) -> Result<(), SessionStoreError> {
        let mut pipe = redis::pipe();
        pipe.del(self.key(session_id)).ignore();
        Ok(self.run::<()>(&pipe).await?)
    }
}

/// Serves one request of an MCP endpoint whose sessions are shared: checks
/// the session it names against its owner in Redis, and records the owner
/// of a session it opens. `serve` is the endpoint's Streamable HTTP service.
pub async fn serve<F>(
    shared: &SharedSessions,
    local: &LocalSessionManager,
    request: Request,
    serve: impl FnOnce(Request) -> F,
) -> Response
where
    F: Future<Output = Response>,
{
    // The authentication layer put it there; an MCP request has one.
    let Some(principal) = request.extensions().get::<Principal>().cloned() else {
        return serve(request).await;
    };
    let endpoint = request.uri().path().to_owned();
    let named = request
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Some(id) = named else {
        let response = serve(request).await;
        if let Some(created) = response
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            && let Err(error) = shared.bind(created, &principal, &endpoint).await
        {
            // The session still works on this replica.
            tracing::warn!(%error, "a new MCP session could not be shared with the other replicas");
        }
        return response;
    };
    match shared.check(&id, &principal, &endpoint).await {
        Ok(Presented::ByOwner(level)) => {
            let mut request = request;
            if let Some(level) = level {
                request.extensions_mut().insert(SharedLevel(level));
            }
            serve(request).await
        }
        Ok(Presented::ByStranger) => session_not_found(),
        Ok(Presented::Unknown) => {
            // Ended through another replica, or expired: so it is here too.
            let _ = local.close_session(&Arc::from(id.as_str())).await;
            session_not_found()
        }
        // Redis is down: served if this replica holds it (its owner was
        // checked in memory by the authentication layer), else refused by
        // rmcp, which cannot load it either.
        Err(_) => serve(request).await,
    }
}

/// Another principal's session answers like one that does not exist, as
/// the authentication layer answers it within one process.
fn session_not_found() -> Response {
    (StatusCode::NOT_FOUND, "session not found").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init_params() -> rmcp::model::InitializeRequestParams {
        serde_json::from_value(serde_json::json!({
            "protocolVersion": "2025-11-25",
            "capabilities": {"sampling": {}},
            "clientInfo": {"name": "it", "version": "1.0"}
        }))
        .unwrap()
    }

    fn fields(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_record_reads_back_what_was_written() {
        let state = SessionState::new(init_params());
        let init = serde_json::to_string(&state).unwrap();
        let level = serde_json::to_string(&LoggingLevel::Warning).unwrap();
        assert_eq!(level, "\"warning\"");
        let record = Record::from_fields(fields(&[
            (OWNER, "default\u{1f}u1"),
            (INIT, &init),
            (LEVEL, &level),
            ("sub:file:///b", "1"),
            ("sub:file:///a", "1"),
        ]));
        assert_eq!(record.owner.as_deref(), Some("default\u{1f}u1"));
        assert_eq!(
            record.relays,
            Relays {
                level: Some(LoggingLevel::Warning),
                subscriptions: vec!["file:///a".into(), "file:///b".into()],
            }
        );
        let restored = record.restorable().expect("restorable");
        assert_eq!(
            restored.initialize_params.client_info.name, "it",
            "the client's initialize parameters come back"
        );
        assert!(restored.initialize_params.capabilities.sampling.is_some());
    }

    #[test]
    fn a_record_without_owner_or_parameters_is_not_restored() {
        let init = serde_json::to_string(&SessionState::new(init_params())).unwrap();
        assert!(
            Record::from_fields(fields(&[(INIT, &init)]))
                .restorable()
                .is_none(),
            "no owner: nobody could be checked against it"
        );
        assert!(
            Record::from_fields(fields(&[(OWNER, "t\u{1f}u")]))
                .restorable()
                .is_none()
        );
        // Damaged fields count as absent, never as something else.
        let record = Record::from_fields(fields(&[
            (OWNER, "t\u{1f}u"),
            (INIT, "{not json"),
            (LEVEL, "\"loud\""),
        ]));
        assert_eq!(record.relays.level, None);
        assert!(record.restorable().is_none());
    }

    #[test]
    fn the_owner_is_tenant_and_user() {
        let mut a = Principal::nobody();
        a.tenant_id = Arc::from("t1");
        a.user_id = Arc::from("u1");
        let mut b = a.clone();
        b.tenant_id = Arc::from("t2");
        assert_eq!(owner_of(&a, "/mcp"), "t1\u{1f}u1\u{1f}/mcp");
        assert_ne!(
            owner_of(&a, "/mcp"),
            owner_of(&b, "/mcp"),
            "same user id, other tenant"
        );
        assert_ne!(
            owner_of(&a, "/mcp"),
            owner_of(&a, "/mcp/p1"),
            "same principal, another endpoint"
        );
    }

    /// A real Redis (METAMCP_TEST_REDIS_URL), or `None` outside CI.
    fn redis_url() -> Option<String> {
        match std::env::var("METAMCP_TEST_REDIS_URL") {
            Ok(url) if !url.is_empty() => Some(url),
            _ => {
                assert!(
                    !std::env::var("CI").is_ok_and(|v| v == "true"),
                    "METAMCP_TEST_REDIS_URL must be set in CI"
                );
                eprintln!("SKIPPED: METAMCP_TEST_REDIS_URL is not set");
                None
            }
        }
    }

    fn principal(tenant: &str, user: &str) -> Principal {
        let mut p = Principal::nobody();
        p.tenant_id = Arc::from(tenant);
        p.user_id = Arc::from(user);
        p
    }

    fn store(url: &str, ttl: Duration) -> SharedSessions {
        let prefix = format!("metamcp-test-{}", uuid::Uuid::new_v4().simple());
        SharedSessions::new(url, &prefix, ttl).unwrap()
    }

    #[tokio::test]
    async fn a_session_is_bound_to_its_owner_and_restorable_once_bound() {
        let Some(url) = redis_url() else { return };
        let shared = store(&url, Duration::from_secs(30));
        let (alice, bob) = (principal("default", "alice"), principal("default", "bob"));
        let state = SessionState::new(init_params());
        assert_eq!(
            shared.check("s1", &alice, "/mcp").await.unwrap(),
            Presented::Unknown
        );
        shared.store("s1", &state).await.unwrap();
        assert!(
            shared.load("s1").await.unwrap().is_none(),
            "not restorable before its owner is known"
        );
        shared.bind("s1", &alice, "/mcp").await.unwrap();
        // A second bind never takes the session over.
        shared.bind("s1", &bob, "/mcp").await.unwrap();
        assert_eq!(
            shared.check("s1", &alice, "/mcp").await.unwrap(),
            Presented::ByOwner(None)
        );
        assert_eq!(
            shared.check("s1", &bob, "/mcp").await.unwrap(),
            Presented::ByStranger
        );
        assert_eq!(
            shared
                .check("s1", &principal("other", "alice"), "/mcp")
                .await
                .unwrap(),
            Presented::ByStranger
        );
        assert_eq!(
            shared.check("s1", &alice, "/mcp/p1").await.unwrap(),
            Presented::ByStranger,
            "a session of /mcp is not one of a profile's endpoint"
        );
        let loaded = shared.load("s1").await.unwrap().expect("restorable");
        assert_eq!(
            serde_json::to_value(&loaded).unwrap(),
            serde_json::to_value(&state).unwrap()
        );

        shared.set_level("s1", LoggingLevel::Debug).await.unwrap();
        shared.set_subscribed("s1", "test://a", true).await.unwrap();
        shared.set_subscribed("s1", "test://b", true).await.unwrap();
        shared
            .set_subscribed("s1", "test://a", false)
            .await
            .unwrap();
        assert_eq!(
            shared.relays("s1").await.unwrap(),
            Relays {
                level: Some(LoggingLevel::Debug),
                subscriptions: vec!["test://b".into()],
            }
        );
        assert_eq!(
            shared.check("s1", &alice, "/mcp").await.unwrap(),
            Presented::ByOwner(Some(LoggingLevel::Debug)),
            "each request learns the session's level"
        );

        shared.delete("s1").await.unwrap();
        assert_eq!(
            shared.check("s1", &alice, "/mcp").await.unwrap(),
            Presented::Unknown
        );
        assert!(shared.load("s1").await.unwrap().is_none());
        // Relay state written after the end brings nothing back.
        shared.set_level("s1", LoggingLevel::Error).await.unwrap();
        assert_eq!(
            shared.check("s1", &alice, "/mcp").await.unwrap(),
            Presented::Unknown
        );
        assert!(shared.load("s1").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_record_expires_after_the_idle_timeout_unless_used() {
        let Some(url) = redis_url() else { return };
        let shared = store(&url, Duration::from_millis(1500));
        let alice = principal("default", "alice");
        shared.bind("s2", &alice, "/mcp").await.unwrap();
        shared
            .store("s2", &SessionState::new(init_params()))
            .await
            .unwrap();
        let ttl = |shared: &SharedSessions| {
            let key = shared.key("s2");
            let mut conn = shared.redis.clone();
            async move {
                redis::cmd("PTTL")
                    .arg(key)
                    .query_async::<i64>(&mut conn)
                    .await
                    .unwrap()
            }
        };
        let first = ttl(&shared).await;
        assert!((1..=1500).contains(&first), "{first}");
        // Each use refreshes it: used every 0.5 s, it outlives its TTL.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(
                shared.check("s2", &alice, "/mcp").await.unwrap(),
                Presented::ByOwner(None)
            );
            assert!(ttl(&shared).await > 1000, "refreshed on use");
        }
        // Left alone, it is gone.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while ttl(&shared).await != -2 {
            assert!(std::time::Instant::now() < deadline, "never expired");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            shared.check("s2", &alice, "/mcp").await.unwrap(),
            Presented::Unknown
        );
        assert!(shared.load("s2").await.unwrap().is_none());
    }
}
