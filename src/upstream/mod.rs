//! Connections to upstream MCP servers: spawn or connect, keep one shared
//! connection per upstream, reconnect with backoff, re-sync lists when the
//! upstream says they changed, probe health, and stop cleanly.
//!
//! Each upstream has one supervisor task that owns its connection. Callers
//! take a cheap handle ([`Connection`]) to the live connection; requests of
//! all callers are multiplexed on it.

// Logging and resources/subscribe are deprecated by SEP-2577 (2026-07-28)
// but are what legacy upstreams and clients speak.
#![allow(deprecated)]

pub mod client;
pub mod http;
pub mod isolated;
pub mod relay;
pub mod spec;
pub mod sse;
pub mod stdio;
pub mod watch;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use arc_swap::{ArcSwap, ArcSwapOption};
use parking_lot::RwLock;
use rmcp::{
    RoleClient, ServiceError,
    model::{
        CallToolRequest, CallToolRequestParams, CallToolResult, CancelledNotification,
        CancelledNotificationParam, ClientRequest, GetPromptRequest, GetPromptRequestParams,
        GetPromptResult, JsonObject, PingRequest, Prompt, ProtocolVersion, ReadResourceRequest,
        ReadResourceRequestParams, ReadResourceResult, Resource, ResourceTemplate, ServerResult,
        Tool,
    },
    model::{GetExtensions, GetMeta, LoggingLevel, SetLevelRequest, SetLevelRequestParams},
    service::{ClientLifecycleMode, ClientServiceExt, Peer, PeerRequestOptions, RunningService},
};
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Settings,
    events::{Event, EventBus},
    guard::breaker::{Breaker, BreakerConfig},
    outbound::OutboundPolicy,
};
use client::UpstreamClient;
pub use client::{CallSink, Caller, LevelHold, LogLevels, Origin, Progress, passes, severity};
pub use isolated::Affinity;
use relay::{RelayHandle, RelayTransport, Relayed, Relays};
use spec::{Isolation, ServerSpec, Transport};
use stdio::StderrTail;
pub use watch::UpdateSink;
use watch::Watches;

/// Where an upstream stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Connecting,
    Ready,
    Failed,
    Disabled,
}

/// What an upstream offers, as of its last sync.
#[derive(Debug, Clone, Default)]
pub struct Offer {
    pub tools: Vec<Tool>,
    pub prompts: Vec<Prompt>,
    pub resources: Vec<Resource>,
    pub templates: Vec<ResourceTemplate>,
}

/// A snapshot of one upstream's state, for status pages and health.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamStatus {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_info: Option<serde_json::Value>,
    /// Connection attempts so far (1 for the first).
    pub attempts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connected_at: Option<String>,
}

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("server {server} is not available ({reason})")]
    Unavailable { server: String, reason: String },
    #[error("server {server} closed the connection during the call")]
    ConnectionLost { server: String },
    #[error("server {server} did not answer within {timeout:?}")]
    Timeout { server: String, timeout: Duration },
    #[error("server {server} answered with an error: {error}")]
    Rpc {
        server: String,
        error: rmcp::ErrorData,
    },
    #[error("server {server} answered with something unexpected: {detail}")]
    Protocol { server: String, detail: String },
    #[error("server {server} does not support {what}")]
    Unsupported { server: String, what: String },
    /// Not a failure: the server asks a 2026-07-28 caller for input
    /// (`input_required`, SEP-2322). The front door hands the input requests
    /// to its caller, with the server's state sealed, and the caller retries
    /// with its answers. It travels as an error so the pipeline neither
    /// caches nor retries it.
    #[error("server {server} asks the caller for input")]
    InputRequired {
        server: String,
        asked: Box<rmcp::model::InputRequiredResult>,
    },
    /// An isolated server has its maximum of connections open, and this
    /// caller needs one more.
    #[error(
        "server {server} has its maximum of {limit} isolated connections open; retry when a session ends or one is idle"
    )]
    Exhausted { server: String, limit: usize },
}

/// A 2026-07-28 caller's answers to an upstream's `input_required` result,
/// for the retry: its `inputResponses` and the upstream's own
/// `requestState` (already taken out of the gateway's sealed one).
#[derive(Debug, Clone, Default)]
pub struct ClientInput {
    pub responses: Option<rmcp::model::InputResponses>,
    pub state: Option<String>,
}

/// How many `input_required` rounds one call may take before the gateway
/// gives up on a server that keeps asking.
const MAX_INPUT_ROUNDS: usize = 8;

/// A live connection to an upstream: a request handle shared by all callers.
pub struct Connection {
    pub peer: Peer<RoleClient>,
    relays: Relays,
    /// The upstream speaks 2026-07-28 (per-request log levels, resource
    /// subscriptions through `subscriptions/listen`).
    modern: bool,
    /// It advertises `logging`.
    logging: bool,
    /// It advertises `resources.subscribe`.
    subscribe: bool,
    /// The level last set with `logging/setLevel` on this connection.
    level: tokio::sync::Mutex<Option<LoggingLevel>>,
    /// Woken when the upstream says one of its lists changed.
    resync: Arc<Notify>,
    /// The reader of the standing `subscriptions/listen` (2026-07-28).
    listener: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Connection {
    /// A connection over `peer`, with what its server said it speaks.
    fn new(peer: Peer<RoleClient>, relays: Relays, resync: Arc<Notify>) -> Self {
        let info = peer.peer_info();
        let modern = info
            .as_ref()
            .is_some_and(|i| i.protocol_version.as_str() >= ProtocolVersion::V_2026_07_28.as_str());
        let caps = info.as_ref().map(|i| &i.capabilities);
        Self {
            logging: caps.is_some_and(|c| c.logging.is_some()),
            subscribe: caps
                .and_then(|c| c.resources.as_ref())
                .is_some_and(|r| r.subscribe == Some(true)),
            peer,
            relays,
            modern,
            level: tokio::sync::Mutex::new(None),
            resync,
            listener: parking_lot::Mutex::new(None),
        }
    }

    fn stop_listening(&self) {
        if let Some(listener) = self.listener.lock().take() {
            listener.abort();
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.stop_listening();
    }
}

/// One upstream server and its supervisor.
pub struct Upstream {
    /// The tenant that owns the server: its name is unique within it.
    pub tenant: Arc<str>,
    pub spec: ServerSpec,
    /// The circuit breaker of calls to this server.
    pub breaker: Breaker,
    /// Calls in flight at most, when the server sets `max_concurrency`.
    pub slots: Option<Arc<tokio::sync::Semaphore>>,
    status: ArcSwap<UpstreamStatus>,
    offer: ArcSwap<Offer>,
    conn: ArcSwapOption<Connection>,
    stderr: StderrTail,
    stop: CancellationToken,
    stopped: Notify,
    tried: std::sync::atomic::AtomicBool,
    /// The protocol era detected at the last successful connection, so a
    /// reconnect skips the probe (and its timeout on servers that never
    /// answer an unknown method). Forgotten when a connection attempt fails.
    era: parking_lot::Mutex<Option<Era>>,
    /// Downstream subscribers of this upstream's resources.
    watches: Arc<Watches>,
    /// The log levels downstream callers want (shared by the upstreams of
    /// one tenant).
    levels: Arc<LogLevels>,
    /// The connections of sessions or principals, when the server is
    /// isolated.
    pool: Arc<isolated::Pool>,
    /// How connections are made (isolated ones are made on demand).
    cx: Context,
}

/// Which lifecycle an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Era {
    /// `initialize` handshake (up to 2025-11-25).
    Legacy,
    /// `server/discover` and self-contained requests (2026-07-28 on).
    Modern,
}

impl Upstream {
    pub fn status(&self) -> Arc<UpstreamStatus> {
        self.status.load_full()
    }

    pub fn is_ready(&self) -> bool {
        self.status.load().status == Status::Ready
    }

    pub fn offer(&self) -> Arc<Offer> {
        self.offer.load_full()
    }

    /// Isolated connections open now (0 for a shared server).
    pub fn isolated_connections(&self) -> usize {
        self.pool.count()
    }

    pub fn stderr_tail(&self) -> Vec<String> {
        self.stderr.lines()
    }

    /// True once a first connection attempt has finished, either way.
    pub fn was_tried(&self) -> bool {
        self.tried.load(std::sync::atomic::Ordering::Acquire) || !self.spec.enabled
    }

    fn unavailable(&self) -> UpstreamError {
        let status = self.status();
        UpstreamError::Unavailable {
            server: self.spec.name.clone(),
            reason: match (&status.status, &status.last_error) {
                (Status::Failed, Some(e)) => format!("failed: {e}"),
                (s, _) => format!("{s:?}").to_lowercase(),
            },
        }
    }

    fn set_status(&self, f: impl FnOnce(&mut UpstreamStatus)) {
        let mut next = (*self.status.load_full()).clone();
        f(&mut next);
        self.status.store(Arc::new(next));
    }

    /// Calls a tool on this upstream. Progress and log messages the upstream
    /// sends for the call go to `caller` (`None`: a caller nothing can be
    /// relayed to). Dropping the returned future cancels the upstream
    /// request.
    ///
    /// `timeout` bounds the wait for an answer; with `extend_until`, each
    /// progress notification restarts that wait, up to `extend_until` in all.
    /// `input` is a 2026-07-28 caller's answers to the upstream's input
    /// requests (a retry); an `input_required` answer goes back to such a
    /// caller, and is answered by asking a legacy one.
    // Each argument is its own concern, passed by the pipeline's one call
    // site; a struct would only be unpacked again here.
    #[allow(clippy::too_many_arguments)]
    pub async fn call_tool(
        &self,
        name: &str,
        arguments: Option<JsonObject>,
        caller: Option<&Caller>,
        affinity: &Affinity,
        input: Option<ClientInput>,
        timeout: Duration,
        extend_until: Option<Duration>,
    ) -> Result<CallToolResult, UpstreamError> {
        let mut params = CallToolRequestParams::new(name.to_owned());
        params.arguments = arguments;
        if let Some(input) = input {
            params.input_responses = input.responses;
            params.request_state = input.state;
        }
        for _ in 0..MAX_INPUT_ROUNDS {
            let request = ClientRequest::CallToolRequest(CallToolRequest::new(params.clone()));
            let options = match extend_until {
                Some(total) => PeerRequestOptions::with_timeout(timeout)
                    .reset_timeout_on_progress()
                    .with_max_total_timeout(total),
                None => PeerRequestOptions::with_timeout(timeout),
            };
            match self.request_as(affinity, request, caller, options).await? {
                ServerResult::CallToolResult(result) => return Ok(result),
                // A 2026-07-28 caller answers the input requests itself.
                ServerResult::InputRequiredResult(asked)
                    if caller.is_some_and(|c| c.sink.takes_input_required()) =>
                {
                    return Err(UpstreamError::InputRequired {
                        server: self.spec.name.clone(),
                        asked: Box::new(asked),
                    });
                }
                ServerResult::InputRequiredResult(asked) => {
                    let (responses, state) = self.ask_caller(asked, caller).await?;
                    params.input_responses = Some(responses);
                    params.request_state = state;
                }
                other => return Err(self.unexpected(&other)),
            }
        }
        Err(self.too_many_rounds())
    }

    /// Answers an `input_required` result (2026-07-28 multi-round-trip
    /// request) of this upstream by asking the caller each input request as
    /// a real server-to-client request (the caller is a legacy session: a
    /// 2026-07-28 caller declares no capability upstream, so it is never
    /// asked for input). Returns the responses and the state to retry with.
    async fn ask_caller(
        &self,
        asked: rmcp::model::InputRequiredResult,
        caller: Option<&Caller>,
    ) -> Result<(rmcp::model::InputResponses, Option<String>), UpstreamError> {
        let refused = |detail: String| UpstreamError::Protocol {
            server: self.spec.name.clone(),
            detail,
        };
        let Some(caller) = caller else {
            return Err(refused(
                "the server asked for client input (input_required), and this caller cannot be asked".into(),
            ));
        };
        let mut responses = rmcp::model::InputResponses::new();
        for (key, input) in asked.input_requests.unwrap_or_default() {
            let request = match input {
                rmcp::model::InputRequest::CreateMessage(r) => {
                    rmcp::model::ServerRequest::CreateMessageRequest(r)
                }
                rmcp::model::InputRequest::Elicitation(r) => {
                    rmcp::model::ServerRequest::ElicitRequest(r)
                }
                rmcp::model::InputRequest::ListRoots(r) => {
                    rmcp::model::ServerRequest::ListRootsRequest(r)
                }
                other => {
                    return Err(refused(format!(
                        "the server asked for client input of an unknown kind: {}",
                        serde_json::to_string(&other).unwrap_or_default()
                    )));
                }
            };
            let method = client::method_of(&request);
            let answer = caller.sink.client_request(request).await.map_err(|error| {
                refused(format!(
                    "the server asked the caller for input ({method}), which it could not give: {}",
                    error.message
                ))
            })?;
            let answer = serde_json::to_value(&answer)
                .map_err(|e| refused(format!("the caller's answer to {method}: {e}")))?;
            responses.insert(key, answer);
        }
        Ok((responses, asked.request_state))
    }

    fn too_many_rounds(&self) -> UpstreamError {
        UpstreamError::Protocol {
            server: self.spec.name.clone(),
            detail: format!(
                "the server still asked for client input after {MAX_INPUT_ROUNDS} rounds"
            ),
        }
    }

    pub async fn get_prompt(
        &self,
        name: &str,
        arguments: Option<JsonObject>,
        caller: Option<&Caller>,
        affinity: &Affinity,
        input: Option<ClientInput>,
        timeout: Duration,
    ) -> Result<GetPromptResult, UpstreamError> {
        let mut params = GetPromptRequestParams::new(name.to_owned());
        params.arguments = arguments;
        if let Some(input) = input {
            params.input_responses = input.responses;
            params.request_state = input.state;
        }
        for _ in 0..MAX_INPUT_ROUNDS {
            let request = ClientRequest::GetPromptRequest(GetPromptRequest::new(params.clone()));
            match self
                .request_as(
                    affinity,
                    request,
                    caller,
                    PeerRequestOptions::with_timeout(timeout),
                )
                .await?
            {
                ServerResult::GetPromptResult(result) => return Ok(result),
                ServerResult::InputRequiredResult(asked)
                    if caller.is_some_and(|c| c.sink.takes_input_required()) =>
                {
                    return Err(UpstreamError::InputRequired {
                        server: self.spec.name.clone(),
                        asked: Box::new(asked),
                    });
                }
                ServerResult::InputRequiredResult(asked) => {
                    let (responses, state) = self.ask_caller(asked, caller).await?;
                    params.input_responses = Some(responses);
                    params.request_state = state;
                }
                other => return Err(self.unexpected(&other)),
            }
        }
        Err(self.too_many_rounds())
    }

    /// `completion/complete` on this upstream.
    pub async fn complete(
        &self,
        params: rmcp::model::CompleteRequestParams,
        caller: Option<&Caller>,
        affinity: &Affinity,
        timeout: Duration,
    ) -> Result<rmcp::model::CompleteResult, UpstreamError> {
        let request = ClientRequest::CompleteRequest(rmcp::model::CompleteRequest::new(params));
        match self
            .request_as(
                affinity,
                request,
                caller,
                PeerRequestOptions::with_timeout(timeout),
            )
            .await?
        {
            ServerResult::CompleteResult(result) => Ok(result),
            other => Err(self.unexpected(&other)),
        }
    }

    pub async fn read_resource(
        &self,
        uri: &str,
        caller: Option<&Caller>,
        affinity: &Affinity,
        timeout: Duration,
    ) -> Result<ReadResourceResult, UpstreamError> {
        let params = ReadResourceRequestParams::new(uri.to_owned());
        let request = ClientRequest::ReadResourceRequest(ReadResourceRequest::new(params));
        match self
            .request_as(
                affinity,
                request,
                caller,
                PeerRequestOptions::with_timeout(timeout),
            )
            .await?
        {
            ServerResult::ReadResourceResult(result) => Ok(result),
            other => Err(self.unexpected(&other)),
        }
    }

    fn unexpected(&self, result: &ServerResult) -> UpstreamError {
        let detail = serde_json::to_string(result).unwrap_or_default();
        UpstreamError::Protocol {
            server: self.spec.name.clone(),
            detail: detail.chars().take(200).collect(),
        }
    }

    /// Sends one request of a downstream caller on the connection its
    /// affinity picks: the shared one, or on an isolated server the
    /// session's or principal's own (opened now if need be).
    async fn request_as(
        &self,
        affinity: &Affinity,
        request: ClientRequest,
        caller: Option<&Caller>,
        options: PeerRequestOptions,
    ) -> Result<ServerResult, UpstreamError> {
        if self.spec.isolation == Isolation::Shared {
            return self.request(request, caller, options).await;
        }
        // The template connection being up is what makes the server ready
        // (its tools listed); a caller's own follows it.
        if self.conn.load().is_none() {
            return Err(self.unavailable());
        }
        let (conn, _in_use) = self.isolated(affinity).await?;
        self.request_on(conn, request, caller, options).await
    }

    /// Sends one request of a downstream caller on the shared connection
    /// and waits for its answer.
    async fn request(
        &self,
        request: ClientRequest,
        caller: Option<&Caller>,
        options: PeerRequestOptions,
    ) -> Result<ServerResult, UpstreamError> {
        let Some(conn) = self.conn.load_full() else {
            return Err(self.unavailable());
        };
        self.request_on(conn, request, caller, options).await
    }

    /// Sends one request on `conn` and waits for its answer. What the
    /// upstream sends while serving it is relayed to `caller`.
    async fn request_on(
        &self,
        conn: Arc<Connection>,
        mut request: ClientRequest,
        caller: Option<&Caller>,
        mut options: PeerRequestOptions,
    ) -> Result<ServerResult, UpstreamError> {
        if conn.modern {
            // 2026-07-28 requests declare their client's capabilities: the
            // caller's, as far as the gateway can serve them, so the
            // upstream asks for input only what this caller can answer.
            let mut meta = rmcp::model::RequestMetaObject::new();
            meta.set_client_capabilities(caller.map(|c| c.sink.capabilities()).unwrap_or_default());
            options.meta = Some(meta);
        }
        // The caller's trace continues at the upstream (SEP-414); the HTTP
        // transports copy it into the `traceparent` header as well.
        crate::telemetry::trace::inject_meta(request.get_meta_mut());
        if let Some(level) = caller.and_then(|c| c.log_level) {
            if conn.modern {
                // 2026-07-28: the level is the request's own; the upstream
                // sends no log message for a request that names none.
                request.get_meta_mut().set_log_level(level);
            } else if conn.logging {
                self.align_level(&conn, level, options.timeout).await;
            }
        }
        // Every caller request is marked in flight with its caller (log
        // messages are attributed by that), and what is relayed is queued
        // in wire order and sent on by one task, so the caller gets it in
        // order, before the result.
        let (handle, mut queue) = RelayHandle::new(caller.map(|c| c.origin));
        let handle = match caller {
            Some(caller) => handle.with_sink(caller.sink.clone()),
            None => handle,
        };
        request.extensions_mut().insert(handle.clone());
        let forward = caller.map(|caller| {
            let sink = caller.sink.clone();
            let server = self.spec.name.clone();
            tokio::spawn(async move {
                while let Some(relayed) = queue.recv().await {
                    match relayed {
                        Relayed::Progress(p) => sink.progress(p).await,
                        Relayed::Log(mut m) => {
                            // Many servers log through one gateway: the
                            // logger says which one (its own name kept).
                            m.logger = Some(match m.logger.take() {
                                Some(logger) => format!("{server}/{logger}"),
                                None => server.clone(),
                            });
                            sink.log(m).await;
                        }
                    }
                }
            })
        });
        let pending = match conn.peer.send_request_with_option(request, options).await {
            Ok(pending) => pending,
            Err(_) => {
                handle.close();
                return Err(self.unavailable());
            }
        };
        let mut cancel = CancelOnDrop {
            peer: Some(conn.peer.clone()),
            relays: conn.relays.clone(),
            id: pending.id.clone(),
        };
        let id = pending.id.clone();
        let result = pending.await_response().await;
        cancel.peer = None;
        conn.relays.finish(&id);
        handle.close();
        if let Some(forward) = forward {
            // Deliver what arrived before the response; a stuck caller
            // stream must not hold the result back for long.
            let _ = tokio::time::timeout(Duration::from_secs(5), forward).await;
        }
        result.map_err(|e| self.service_error(e))
    }

    fn service_error(&self, error: ServiceError) -> UpstreamError {
        match error {
            ServiceError::McpError(error) => UpstreamError::Rpc {
                server: self.spec.name.clone(),
                error,
            },
            ServiceError::Timeout { timeout } => UpstreamError::Timeout {
                server: self.spec.name.clone(),
                timeout,
            },
            ServiceError::TransportClosed | ServiceError::TransportSend(_) => {
                UpstreamError::ConnectionLost {
                    server: self.spec.name.clone(),
                }
            }
            other => UpstreamError::Protocol {
                server: self.spec.name.clone(),
                detail: other.to_string(),
            },
        }
    }

    /// Before a request of a caller who wants log messages at `level`: sets
    /// a legacy upstream's level (`logging/setLevel`, which applies to the
    /// whole shared connection) to the most verbose level any downstream
    /// caller wants now. The gateway then filters per caller. The level
    /// follows the callers both ways: more verbose when someone asks for
    /// more, less when those who did are gone, so an upstream does not keep
    /// sending debug output nobody reads. A failure is logged and the call
    /// goes on: the caller may get fewer messages, not a failed call.
    async fn align_level(&self, conn: &Connection, level: LoggingLevel, timeout: Option<Duration>) {
        let mut set = conn.level.lock().await;
        let target = match self.levels.wanted() {
            Some(wanted) if severity(wanted) < severity(level) => wanted,
            _ => level,
        };
        if *set == Some(target) {
            return;
        }
        let request = ClientRequest::SetLevelRequest(SetLevelRequest::new(
            SetLevelRequestParams::new(target),
        ));
        let timeout = timeout.unwrap_or(Duration::from_secs(10));
        let answer = match conn
            .peer
            .send_request_with_option(request, PeerRequestOptions::with_timeout(timeout))
            .await
        {
            Ok(handle) => handle.await_response().await,
            Err(e) => Err(e),
        };
        match answer {
            Ok(_) => *set = Some(target),
            Err(error) => {
                tracing::debug!(server = %self.spec.name, %error, "logging/setLevel failed")
            }
        }
    }
}

/// Tells the upstream to stop working on a request whose caller went away.
struct CancelOnDrop {
    peer: Option<Peer<RoleClient>>,
    relays: Relays,
    id: rmcp::model::RequestId,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(peer) = self.peer.take() {
            self.relays.finish(&self.id);
            let id = self.id.clone();
            tokio::spawn(async move {
                let params =
                    CancelledNotificationParam::new(Some(id), Some("caller cancelled".into()));
                let _ = peer
                    .send_notification(CancelledNotification::new(params).into())
                    .await;
            });
        }
    }
}

/// A connection that was ready and lived this long was a successful start:
/// the next crash is a new incident, not one more failed start in a row.
const STABLE_CONNECTION: Duration = Duration::from_secs(5);

/// Everything a supervisor needs besides its upstream.
#[derive(Clone)]
struct Context {
    events: EventBus,
    http: reqwest::Client,
    policy: OutboundPolicy,
    connect_timeout: Duration,
    health_interval: Duration,
    health_failures: u32,
    max_restarts: u32,
    max_response_bytes: usize,
    breaker: BreakerConfig,
    catalog_hook: Arc<std::sync::OnceLock<CatalogHook>>,
}

/// Called (and awaited) when an upstream's offer changed: rebuilds the
/// catalog of the upstream's tenant. Set once by the app, which owns the
/// catalog.
pub type CatalogHook =
    Box<dyn Fn(Arc<str>) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

impl Context {
    async fn catalog_changed(&self, tenant: &Arc<str>) {
        if let Some(hook) = self.catalog_hook.get() {
            hook(tenant.clone()).await;
        }
    }
}

/// The set of upstreams of every tenant, in a stable order (config file
/// order, then the order they were created over the API). A server is
/// known by (tenant, name): two tenants may each have a server `files`.
pub struct UpstreamManager {
    upstreams: RwLock<Vec<Arc<Upstream>>>,
    cx: Context,
    /// The log levels downstream callers want, per tenant: one tenant's
    /// callers asking for debug output make only its own upstreams verbose.
    levels: parking_lot::Mutex<std::collections::HashMap<Arc<str>, Arc<LogLevels>>>,
}

impl UpstreamManager {
    pub fn new(settings: &Settings, events: EventBus, http: reqwest::Client) -> Self {
        Self {
            upstreams: RwLock::new(Vec::new()),
            cx: Context {
                events,
                http,
                policy: OutboundPolicy::from_settings(&settings.outbound),
                connect_timeout: settings.connect_timeout,
                health_interval: settings.health_interval,
                health_failures: settings.health_failures,
                max_restarts: settings.max_restarts,
                max_response_bytes: settings.outbound.max_response_bytes,
                breaker: settings.breaker,
                catalog_hook: Default::default(),
            },
            levels: Default::default(),
        }
    }

    /// Where downstream callers of `tenant` hold the log levels they want.
    pub fn log_levels(&self, tenant: &str) -> Arc<LogLevels> {
        self.levels
            .lock()
            .entry(Arc::from(tenant))
            .or_default()
            .clone()
    }

    /// Sets what rebuilds the catalog when an upstream's offer changes.
    pub fn set_catalog_hook(&self, hook: CatalogHook) {
        let _ = self.cx.catalog_hook.set(hook);
    }

    /// Every upstream of every tenant (status pages of the platform,
    /// metrics, readiness, shutdown).
    pub fn list(&self) -> Vec<Arc<Upstream>> {
        self.upstreams.read().clone()
    }

    /// The upstreams of one tenant, in order.
    pub fn list_tenant(&self, tenant: &str) -> Vec<Arc<Upstream>> {
        self.upstreams
            .read()
            .iter()
            .filter(|u| &*u.tenant == tenant)
            .cloned()
            .collect()
    }

    /// Names of a tenant's upstreams that are ready now.
    pub fn ready_names(&self, tenant: &str) -> std::collections::HashSet<String> {
        self.upstreams
            .read()
            .iter()
            .filter(|u| &*u.tenant == tenant && u.is_ready())
            .map(|u| u.spec.name.clone())
            .collect()
    }

    /// The upstream `name` of `tenant`.
    pub fn get(&self, tenant: &str, name: &str) -> Option<Arc<Upstream>> {
        self.upstreams
            .read()
            .iter()
            .find(|u| &*u.tenant == tenant && u.spec.name == name)
            .cloned()
    }

    /// Adds an upstream of `tenant` and starts its supervisor. False if the
    /// tenant already has a server of that name.
    pub fn add(&self, tenant: &str, spec: ServerSpec) -> bool {
        let mut upstreams = self.upstreams.write();
        if upstreams
            .iter()
            .any(|u| &*u.tenant == tenant && u.spec.name == spec.name)
        {
            return false;
        }
        let initial = if spec.enabled {
            Status::Connecting
        } else {
            Status::Disabled
        };
        let upstream = Arc::new(Upstream {
            tenant: Arc::from(tenant),
            breaker: Breaker::new(spec.circuit_breaker.unwrap_or(self.cx.breaker)),
            slots: spec
                .max_concurrency
                .map(|n| Arc::new(tokio::sync::Semaphore::new(n as usize))),
            status: ArcSwap::from_pointee(UpstreamStatus {
                status: initial,
                last_error: None,
                latency_ms: None,
                protocol_version: None,
                server_info: None,
                attempts: 0,
                connected_at: None,
            }),
            offer: ArcSwap::from_pointee(Offer::default()),
            conn: ArcSwapOption::empty(),
            stderr: StderrTail::default(),
            stop: CancellationToken::new(),
            stopped: Notify::new(),
            tried: Default::default(),
            era: parking_lot::Mutex::new(None),
            watches: Arc::default(),
            levels: self.log_levels(tenant),
            pool: Arc::default(),
            cx: self.cx.clone(),
            spec,
        });
        upstreams.push(upstream.clone());
        drop(upstreams);
        if upstream.spec.enabled {
            use tracing::Instrument as _;
            let cx = self.cx.clone();
            // Log lines of the supervisor say whose server it is.
            let span = tracing::info_span!("upstream", tenant = %upstream.tenant);
            tokio::spawn(supervise(upstream, cx).instrument(span));
        } else {
            upstream.stopped.notify_one();
        }
        true
    }

    /// Stops and removes a tenant's upstream; returns once its process is
    /// gone.
    pub async fn remove(&self, tenant: &str, name: &str) -> Option<Arc<Upstream>> {
        let upstream = {
            let mut upstreams = self.upstreams.write();
            let index = upstreams
                .iter()
                .position(|u| &*u.tenant == tenant && u.spec.name == name)?;
            upstreams.remove(index)
        };
        stop(&upstream).await;
        self.cx.events.publish(Event::CatalogChanged {
            tenant: upstream.tenant.clone(),
            server: Some(name.to_owned()),
        });
        Some(upstream)
    }

    /// Ends the isolated connections of a legacy MCP session that ended.
    pub fn end_session(&self, session: Origin) {
        for upstream in self.upstreams.read().iter() {
            if upstream.spec.isolation == Isolation::Session {
                upstream.pool.close(session);
            }
        }
    }

    /// Stops every upstream (at shutdown).
    pub async fn shutdown(&self) {
        let all: Vec<_> = std::mem::take(&mut *self.upstreams.write());
        futures::future::join_all(all.iter().map(|u| stop(u))).await;
    }
}

async fn stop(upstream: &Upstream) {
    upstream.stop.cancel();
    upstream.stopped.notified().await;
    // Isolated connections end with the server (their stop tokens are
    // children of its own).
    upstream.pool.close_all(Duration::from_secs(10)).await;
}

/// Owns one upstream's connection for as long as the upstream exists.
async fn supervise(upstream: Arc<Upstream>, cx: Context) {
    let name = upstream.spec.name.clone();
    let tenant = upstream.tenant.clone();
    let mut backoff = Duration::from_millis(500);
    // Connections that failed, or ended before they were stable, in a row.
    let mut failures_in_a_row: u32 = 0;
    loop {
        if upstream.stop.is_cancelled() {
            break;
        }
        if cx.max_restarts > 0 && failures_in_a_row >= cx.max_restarts {
            let error = format!(
                "gave up after {failures_in_a_row} failed starts in a row; restart it over the API"
            );
            tracing::error!(server = %name, %error);
            upstream.set_status(|s| {
                s.status = Status::Failed;
                s.last_error = Some(error.clone());
            });
            cx.events.publish(Event::UpstreamDown {
                tenant: tenant.clone(),
                server: name.clone(),
                error,
            });
            upstream.stop.cancelled().await;
            break;
        }
        upstream.set_status(|s| {
            s.status = Status::Connecting;
            s.attempts += 1;
        });
        let started = Instant::now();
        let resync = Arc::new(Notify::new());
        let handler = UpstreamClient {
            server: Arc::from(name.as_str()),
            resync: resync.clone(),
            watches: upstream.watches.clone(),
            relays: Relays::default(),
        };
        let relays = handler.relays.clone();
        let connected = tokio::select! {
            r = tokio::time::timeout(cx.connect_timeout, connect(&upstream, &cx, handler, relays.clone())) => match r {
                Ok(r) => r,
                Err(_) => Err((format!("no answer within {:?}", cx.connect_timeout), None)),
            },
            _ = upstream.stop.cancelled() => break,
        };
        upstream
            .tried
            .store(true, std::sync::atomic::Ordering::Release);
        let (running, pgid) = match connected {
            Ok(ok) => ok,
            Err((error, pgid)) => {
                // Transport errors may quote the URL (with its password) or
                // a header: the status, the log and the events never do.
                let error = upstream.spec.scrub(&error);
                tracing::warn!(server = %name, %error, "upstream connection failed");
                // A server that answers server/discover without a version in
                // common with us may still speak a legacy revision.
                *upstream.era.lock() = error
                    .contains("no compatible protocol version")
                    .then_some(Era::Legacy);
                if let Some(pgid) = pgid {
                    stdio::kill_group(pgid, Duration::from_secs(2)).await;
                }
                upstream.set_status(|s| {
                    s.status = Status::Failed;
                    s.last_error = Some(error.clone());
                });
                cx.events.publish(Event::UpstreamDown {
                    tenant: tenant.clone(),
                    server: name.clone(),
                    error,
                });
                failures_in_a_row += 1;
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = upstream.stop.cancelled() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        let peer = running.peer().clone();
        let info = peer.peer_info();
        let conn = Arc::new(Connection::new(peer.clone(), relays, resync.clone()));
        *upstream.era.lock() = Some(if conn.modern {
            Era::Modern
        } else {
            Era::Legacy
        });
        if let Err(error) = sync(&upstream, &peer).await {
            tracing::warn!(server = %name, %error, "listing the upstream's catalog failed");
        }
        upstream.conn.store(Some(conn.clone()));
        // The catalog holds the server's tools before it counts as ready, so
        // "ready" means its tools can be called.
        cx.catalog_changed(&tenant).await;
        // A fresh connection is new evidence: calls may try it at once.
        if let Some(t) = upstream.breaker.reset() {
            tracing::info!(server = %name, transition = ?t, "circuit breaker reset by a new connection");
        }
        upstream.set_status(|s| {
            s.status = Status::Ready;
            s.last_error = None;
            s.latency_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
            s.protocol_version = info.as_ref().map(|i| i.protocol_version.to_string());
            s.server_info = info
                .as_ref()
                .and_then(|i| serde_json::to_value(&i.server_info).ok());
            s.connected_at = Some(crate::util::now_rfc3339());
        });
        tracing::info!(server = %name, tools = upstream.offer().tools.len(), "upstream ready");
        cx.events.publish(Event::UpstreamUp {
            tenant: tenant.clone(),
            server: name.clone(),
        });
        cx.events.publish(Event::CatalogChanged {
            tenant: tenant.clone(),
            server: Some(name.clone()),
        });
        // A 2026-07-28 upstream tells of list changes (and updates of
        // subscribed resources) only on a standing subscriptions/listen
        // request; legacy ones send list changes unasked, and are subscribed
        // again to the resources downstream callers still watch.
        {
            let upstream = upstream.clone();
            let conn = conn.clone();
            let timeout = cx.connect_timeout;
            tokio::spawn(async move { upstream.restore_watches(&conn, timeout).await });
        }
        drop(conn);
        let stop_service = running.cancellation_token();
        let waiting = running.waiting();
        tokio::pin!(waiting);
        let mut health = tokio::time::interval(cx.health_interval);
        health.tick().await;
        let connected_at = Instant::now();
        let mut missed_probes = 0;
        let stopping = loop {
            tokio::select! {
                _ = &mut waiting => break false,
                _ = upstream.stop.cancelled() => break true,
                _ = resync.notified() => {
                    if let Err(error) = sync(&upstream, &peer).await {
                        tracing::warn!(server = %name, %error, "re-sync failed");
                    }
                    cx.catalog_changed(&tenant).await;
                    cx.events.publish(Event::CatalogChanged { tenant: tenant.clone(), server: Some(name.clone()) });
                }
                _ = health.tick() => {
                    let timeout = cx.connect_timeout.min(cx.health_interval);
                    if probe(&upstream, &peer, timeout).await {
                        missed_probes = 0;
                    } else {
                        missed_probes += 1;
                        if missed_probes >= cx.health_failures {
                            // A hung server answers nothing: replace it.
                            tracing::warn!(server = %name, missed_probes, "upstream hangs; reconnecting");
                            break false;
                        }
                    }
                }
            }
        };
        let was_stable = connected_at.elapsed() >= STABLE_CONNECTION;
        if was_stable {
            failures_in_a_row = 0;
            backoff = Duration::from_millis(100);
        }
        if let Some(conn) = upstream.conn.swap(None) {
            conn.stop_listening();
        }
        if stopping || missed_probes >= cx.health_failures {
            stop_service.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut waiting).await;
        }
        if let Some(pgid) = pgid {
            stdio::kill_group(pgid, Duration::from_secs(2)).await;
        }
        if stopping {
            break;
        }
        if !was_stable {
            failures_in_a_row += 1;
        }
        tracing::warn!(server = %name, "upstream connection closed; reconnecting");
        upstream.set_status(|s| {
            s.status = Status::Failed;
            s.last_error = Some("connection closed".into());
        });
        // The last known offer stays in the catalog while reconnecting:
        // listings hide it (the server is not ready) and calls answer
        // "unavailable" rather than "unknown tool".
        cx.events.publish(Event::UpstreamDown {
            tenant: tenant.clone(),
            server: name.clone(),
            error: "connection closed".into(),
        });
        cx.events.publish(Event::CatalogChanged {
            tenant: tenant.clone(),
            server: Some(name.clone()),
        });
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = upstream.stop.cancelled() => break,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
    if let Some(conn) = upstream.conn.swap(None) {
        conn.stop_listening();
    }
    upstream.stopped.notify_one();
}

type Running = RunningService<RoleClient, UpstreamClient>;

/// Opens the transport and runs the client lifecycle (`server/discover`
/// probe, falling back to `initialize`). On failure, returns the process
/// group to clean up, if a child was spawned.
async fn connect(
    upstream: &Upstream,
    cx: &Context,
    handler: UpstreamClient,
    relays: Relays,
) -> Result<(Running, Option<i32>), (String, Option<i32>)> {
    let remembered = *upstream.era.lock();
    let lifecycle = match remembered {
        Some(Era::Legacy) => ClientLifecycleMode::Initialize,
        Some(Era::Modern) => ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        },
        // Probe with server/discover, fall back to initialize.
        None => ClientLifecycleMode::Auto {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            legacy_version: None,
        },
    };
    match &upstream.spec.transport {
        Transport::Stdio {
            command,
            args,
            env,
            cwd,
        } => {
            let spawned = stdio::spawn(
                &upstream.spec.name,
                command,
                args,
                env,
                cwd.as_deref(),
                &upstream.stderr,
            )
            .map_err(|e| (format!("cannot start {command:?}: {e}"), None))?;
            let pgid = spawned.pgid;
            serve(
                handler,
                RelayTransport::new(spawned.transport, relays),
                lifecycle,
            )
            .await
            .map(|r| (r, pgid))
            .map_err(|e| (e, pgid))
        }
        Transport::StreamableHttp { url, headers } => {
            let transport =
                http::connect(url, headers, &cx.http, &cx.policy, cx.max_response_bytes)
                    .await
                    .map_err(|e| (e, None))?;
            serve(handler, RelayTransport::new(transport, relays), lifecycle)
                .await
                .map(|r| (r, None))
                .map_err(|e| (e, None))
        }
        Transport::Sse { url, headers } => {
            let transport = sse::connect(url, headers, &cx.http, &cx.policy)
                .await
                .map_err(|e| (e, None))?;
            // The 2024-11-05 transport predates server/discover.
            handler
                .serve_with_lifecycle(
                    RelayTransport::new(transport, relays),
                    ClientLifecycleMode::Initialize,
                )
                .await
                .map(|r| (r, None))
                .map_err(|e| (e.to_string(), None))
        }
    }
}

async fn serve<T, E, A>(
    handler: UpstreamClient,
    transport: T,
    lifecycle: ClientLifecycleMode,
) -> Result<Running, String>
where
    T: rmcp::transport::IntoTransport<RoleClient, E, A>,
    E: std::error::Error + Send + Sync + 'static,
{
    handler
        .serve_with_lifecycle(transport, lifecycle)
        .await
        .map_err(|e| e.to_string())
}

/// Lists everything the upstream offers and stores it.
async fn sync(upstream: &Upstream, peer: &Peer<RoleClient>) -> Result<(), String> {
    let caps = peer.peer_info().map(|i| i.capabilities.clone());
    let has = |f: fn(&rmcp::model::ServerCapabilities) -> bool| caps.as_ref().is_none_or(f);
    let mut offer = Offer::default();
    let mut errors = Vec::new();
    if has(|c| c.tools.is_some()) {
        match peer.list_all_tools().await {
            Ok(tools) => offer.tools = tools,
            Err(e) => errors.push(format!("tools/list: {e}")),
        }
    }
    if has(|c| c.prompts.is_some()) {
        match peer.list_all_prompts().await {
            Ok(prompts) => offer.prompts = prompts,
            Err(e) => errors.push(format!("prompts/list: {e}")),
        }
    }
    if has(|c| c.resources.is_some()) {
        match peer.list_all_resources().await {
            Ok(resources) => offer.resources = resources,
            Err(e) => errors.push(format!("resources/list: {e}")),
        }
        match peer.list_all_resource_templates().await {
            Ok(templates) => offer.templates = templates,
            Err(e) => errors.push(format!("resources/templates/list: {e}")),
        }
    }
    upstream.offer.store(Arc::new(offer));
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Measures how long the upstream takes to answer a ping. Any answer, even
/// an error (modern servers have no `ping`), proves it is alive.
async fn probe(upstream: &Upstream, peer: &Peer<RoleClient>, timeout: Duration) -> bool {
    let started = Instant::now();
    let ping = ClientRequest::PingRequest(PingRequest::default());
    let answered = match peer
        .send_request_with_option(ping, PeerRequestOptions::with_timeout(timeout))
        .await
    {
        // Any answer, an error one included, shows the server is there; a
        // failure to reach it (refused connection, timeout) does not.
        Ok(handle) => matches!(
            handle.await_response().await,
            Ok(_) | Err(ServiceError::McpError(_) | ServiceError::UnexpectedResponse)
        ),
        Err(_) => false,
    };
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    upstream.set_status(|s| {
        if answered {
            s.latency_ms = Some(elapsed);
            if s.status == Status::Ready {
                s.last_error = None;
            }
        } else {
            s.last_error = Some(format!("health probe got no answer within {timeout:?}"));
        }
    });
    answered
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_levels_are_held_per_tenant() {
        let manager = UpstreamManager::new(
            &Settings::default(),
            EventBus::default(),
            reqwest::Client::new(),
        );
        let a = manager.log_levels("a");
        let _debug = a.hold(rmcp::model::LoggingLevel::Debug);
        assert_eq!(
            manager.log_levels("a").wanted(),
            Some(rmcp::model::LoggingLevel::Debug)
        );
        // Another tenant's callers asking for debug output do not make this
        // tenant's upstreams verbose.
        assert_eq!(manager.log_levels("b").wanted(), None);
    }
}
