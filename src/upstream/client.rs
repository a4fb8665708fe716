//! The gateway's MCP client role toward one upstream: what it advertises,
//! what it does with the notifications the upstream sends, and where its
//! server-to-client requests (sampling, elicitation, roots) go: to the
//! downstream client whose call caused them, or back as an error.

// Logging is deprecated by SEP-2577 but legacy upstreams still send it.
#![allow(deprecated)]

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use futures::future::BoxFuture;
use rmcp::{
    ClientHandler, ErrorData, RoleClient,
    model::{
        ClientCapabilities, ClientConfig, ClientResult, CreateMessageRequest,
        CreateMessageRequestParams, CreateMessageResult, ElicitRequest, ElicitRequestParams,
        ElicitResult, ElicitationCapability, ErrorCode, FormElicitationCapability, Implementation,
        ListRootsRequest, ListRootsResult, LoggingLevel, LoggingMessageNotificationParam,
        ResourceUpdatedNotificationParam, RootsCapabilities, SamplingCapability, ServerRequest,
    },
    service::{InboundStreamOrigin, NotificationContext, RequestContext},
};
use tokio::sync::Notify;

use super::{relay::Relays, watch::Watches};

/// One progress update, in the caller's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub progress: f64,
    pub total: Option<f64>,
    pub message: Option<String>,
}

/// Where what an upstream sends while serving one request goes: the front
/// door that took the request implements it (the MCP door sends
/// `notifications/progress` under the caller's own token, and
/// `notifications/message` filtered by the caller's log level). Both are
/// delivered in wire order, all of them before the request's result (see
/// `relay`).
pub trait CallSink: Send + Sync {
    fn progress(&self, progress: Progress) -> BoxFuture<'static, ()>;
    /// A log message of the upstream, its logger already prefixed with the
    /// server's name. The sink applies the caller's level.
    fn log(&self, message: LoggingMessageNotificationParam) -> BoxFuture<'static, ()>;
    /// A request the upstream sent to its client (`sampling/createMessage`,
    /// `elicitation/create`, `roots/list`) while serving this call: the
    /// caller's answer, or the error the upstream gets back (the sink
    /// refuses what its caller cannot take, such as a request for a
    /// capability the caller did not declare).
    /// The capabilities of the caller the gateway can serve for it: what a
    /// 2026-07-28 upstream is told the client of this request declares, so
    /// it asks (with `input_required`) only for what the caller can answer.
    fn capabilities(&self) -> ClientCapabilities {
        ClientCapabilities::default()
    }
    /// Whether the caller takes an `input_required` result itself (a
    /// 2026-07-28 request) rather than being asked with requests.
    fn takes_input_required(&self) -> bool {
        false
    }
    fn client_request(
        &self,
        request: ServerRequest,
    ) -> BoxFuture<'static, Result<ClientResult, ErrorData>> {
        let _ = request;
        Box::pin(std::future::ready(Err(not_relayed(
            "the caller of this request cannot take server-to-client requests",
        ))))
    }
}

/// The answer to a server-to-client request the gateway cannot pass to a
/// client that can take it: `-32601` (method not found), what a client
/// without the capability answers.
pub fn not_relayed(why: &str) -> ErrorData {
    ErrorData::new(ErrorCode::METHOD_NOT_FOUND, why.to_owned(), None)
}

/// The capabilities the gateway declares to legacy upstreams: those it can
/// relay to a caller. URL-mode elicitation is not among them: its
/// `notifications/elicitation/complete` would have to be routed too. Roots
/// are relayed on request, but `notifications/roots/list_changed` is not
/// (no `listChanged`).
pub fn relayed_capabilities() -> ClientCapabilities {
    let mut elicitation = ElicitationCapability::new();
    elicitation.form = Some(FormElicitationCapability::new());
    let mut caps = ClientCapabilities::default();
    caps.sampling = Some(SamplingCapability::default());
    caps.elicitation = Some(elicitation);
    caps.roots = Some(RootsCapabilities::default());
    caps
}

/// Of a caller's declared capabilities, those the gateway relays.
pub fn relayable(declared: &ClientCapabilities) -> ClientCapabilities {
    let mut caps = ClientCapabilities::default();
    let all = relayed_capabilities();
    if declared.sampling.is_some() {
        caps.sampling = all.sampling;
    }
    // Form mode only; an empty elicitation capability means form mode.
    if declared
        .elicitation
        .as_ref()
        .is_some_and(|e| e.form.is_some() || e.url.is_none())
    {
        caps.elicitation = all.elicitation;
    }
    if declared.roots.is_some() {
        caps.roots = all.roots;
    }
    caps
}

/// Who is downstream of an upstream request: one legacy MCP session, or one
/// 2026-07-28 request (each is its own caller: that era has no sessions).
/// Log messages are only ever relayed to the origin they were attributed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Origin(u64);

impl Origin {
    /// A new origin, never equal to one handed out before in this process.
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// The downstream caller of one upstream request.
#[derive(Clone)]
pub struct Caller {
    pub origin: Origin,
    /// The legacy MCP session the request came in (its origin), if any:
    /// what picks its connection on a session-isolated server.
    pub session: Option<Origin>,
    /// The level the caller asked for when it made the request (a legacy
    /// session's `logging/setLevel`, a 2026-07-28 request's `logLevel`), if
    /// any: what the upstream is asked to send. The sink filters with the
    /// level current at delivery.
    pub log_level: Option<LoggingLevel>,
    pub sink: Arc<dyn CallSink>,
}

/// RFC 5424 severity as a rank: debug 0 (most verbose) to emergency 7.
pub fn severity(level: LoggingLevel) -> u8 {
    level as u8
}

/// Whether a message at `level` passes a caller's `threshold`.
pub fn passes(level: LoggingLevel, threshold: LoggingLevel) -> bool {
    severity(level) >= severity(threshold)
}

/// The `ClientHandler` of every upstream connection.
#[derive(Clone)]
pub struct UpstreamClient {
    pub server: Arc<str>,
    /// Woken when the upstream says one of its lists changed.
    pub resync: Arc<Notify>,
    /// The downstream subscribers of this upstream's resources.
    pub watches: Arc<Watches>,
    /// The requests in flight on this connection, with their callers.
    pub relays: Relays,
}

impl UpstreamClient {
    /// Passes a server-to-client request to the caller whose request caused
    /// it, and brings back its answer. A request that cannot be tied to
    /// exactly one caller is refused with `-32602`, as SEP-2260 tells a
    /// client to answer a request associated with none of its own. It is
    /// given up when the call it was made for ends (timeout, cancellation),
    /// or when the upstream cancels it, so neither side waits forever.
    async fn relay(
        &self,
        request: ServerRequest,
        context: RequestContext<RoleClient>,
    ) -> Result<ClientResult, ErrorData> {
        let method = method_of(&request);
        let stream = context.extensions.get::<InboundStreamOrigin>();
        let Some(owner) = self.relays.request_owner(stream) else {
            tracing::debug!(server = %self.server, %method, "server-to-client request of no single caller refused");
            return Err(ErrorData::invalid_params(
                format!(
                    "{method} is not associated with exactly one request in flight from a \
                     caller of the gateway"
                ),
                None,
            ));
        };
        let Some(sink) = owner.sink().cloned() else {
            return Err(not_relayed(
                "the caller of this request cannot take server-to-client requests",
            ));
        };
        tokio::select! {
            answer = sink.client_request(request) => answer,
            _ = owner.done().cancelled() => Err(ErrorData::internal_error(
                format!("{method} abandoned: the request it was made for has ended"),
                None,
            )),
            _ = context.ct.cancelled() => Err(ErrorData::internal_error(
                format!("{method} cancelled by the server"),
                None,
            )),
        }
    }
}

impl ClientHandler for UpstreamClient {
    fn get_info(&self) -> ClientConfig {
        // Each capability is only used for a caller that declared it too;
        // the sink answers for the others (see `CallSink::client_request`).
        ClientConfig::new(
            relayed_capabilities(),
            Implementation::new("metamcp", env!("CARGO_PKG_VERSION")),
        )
    }

    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        let request = ServerRequest::CreateMessageRequest(CreateMessageRequest::new(params));
        match self.relay(request, context).await? {
            ClientResult::CreateMessageResult(result) => Ok(*result),
            _ => Err(wrong_answer("sampling/createMessage")),
        }
    }

    async fn create_elicitation(
        &self,
        params: ElicitRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let request = ServerRequest::ElicitRequest(ElicitRequest::new(params));
        match self.relay(request, context).await? {
            ClientResult::ElicitResult(result) => Ok(result),
            _ => Err(wrong_answer("elicitation/create")),
        }
    }

    async fn list_roots(
        &self,
        context: RequestContext<RoleClient>,
    ) -> Result<ListRootsResult, ErrorData> {
        let request = ServerRequest::ListRootsRequest(ListRootsRequest::default());
        match self.relay(request, context).await? {
            ClientResult::ListRootsResult(result) => Ok(result),
            _ => Err(wrong_answer("roots/list")),
        }
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.resync.notify_one();
    }

    async fn on_prompt_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.resync.notify_one();
    }

    async fn on_resource_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.resync.notify_one();
    }

    /// A legacy upstream's update of a resource the gateway subscribed to
    /// (2026-07-28 upstreams send theirs on `subscriptions/listen`).
    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.watches.updated(&params.uri).await;
    }

    /// Every log message lands here too. Those sent while serving a caller's
    /// request were already queued for that caller by the relay transport,
    /// which sees them in wire order; this only keeps the gateway's own
    /// record.
    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        tracing::debug!(
            server = %self.server,
            level = ?params.level,
            logger = params.logger.as_deref().unwrap_or_default(),
            data = %params.data,
            "upstream log message"
        );
    }
}

/// The wire name of a server-to-client request.
pub fn method_of(request: &ServerRequest) -> &'static str {
    match request {
        ServerRequest::CreateMessageRequest(_) => "sampling/createMessage",
        ServerRequest::ElicitRequest(_) => "elicitation/create",
        ServerRequest::ListRootsRequest(_) => "roots/list",
        ServerRequest::PingRequest(_) => "ping",
        _ => "a custom request",
    }
}

fn wrong_answer(method: &str) -> ErrorData {
    ErrorData::internal_error(
        format!("the client answered {method} with a result of another kind"),
        None,
    )
}

/// The log levels downstream callers want now, so the gateway can ask
/// legacy upstreams for the most verbose of them (and filter per caller).
///
/// Each wish is held by a [`LevelHold`]: a legacy session holds one from its
/// `logging/setLevel` until it ends, a 2026-07-28 request for as long as it
/// runs.
#[derive(Default)]
pub struct LogLevels {
    counts: parking_lot::Mutex<[usize; 8]>,
}

impl LogLevels {
    /// The most verbose level anyone holds now.
    pub fn wanted(&self) -> Option<LoggingLevel> {
        let counts = self.counts.lock();
        LEVELS
            .iter()
            .zip(counts.iter())
            .find(|(_, n)| **n > 0)
            .map(|(level, _)| *level)
    }

    /// Holds `level` until the returned guard is dropped.
    pub fn hold(self: &Arc<Self>, level: LoggingLevel) -> LevelHold {
        self.counts.lock()[usize::from(severity(level))] += 1;
        LevelHold {
            levels: self.clone(),
            level,
        }
    }
}

const LEVELS: [LoggingLevel; 8] = [
    LoggingLevel::Debug,
    LoggingLevel::Info,
    LoggingLevel::Notice,
    LoggingLevel::Warning,
    LoggingLevel::Error,
    LoggingLevel::Critical,
    LoggingLevel::Alert,
    LoggingLevel::Emergency,
];

/// One caller's wish for a log level; released when dropped.
pub struct LevelHold {
    levels: Arc<LogLevels>,
    level: LoggingLevel,
}

impl LevelHold {
    pub fn level(&self) -> LoggingLevel {
        self.level
    }
}

impl Drop for LevelHold {
    fn drop(&mut self) {
        let mut counts = self.levels.counts.lock();
        let n = &mut counts[usize::from(severity(self.level))];
        *n = n.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_follows_rfc_5424() {
        assert!(passes(LoggingLevel::Warning, LoggingLevel::Info));
        assert!(passes(LoggingLevel::Info, LoggingLevel::Info));
        assert!(!passes(LoggingLevel::Debug, LoggingLevel::Info));
        assert!(passes(LoggingLevel::Emergency, LoggingLevel::Alert));
        assert!(!passes(LoggingLevel::Notice, LoggingLevel::Warning));
    }

    #[test]
    fn the_most_verbose_level_held_is_wanted() {
        let levels = Arc::new(LogLevels::default());
        assert_eq!(levels.wanted(), None);
        let warning = levels.hold(LoggingLevel::Warning);
        assert_eq!(levels.wanted(), Some(LoggingLevel::Warning));
        let debug = levels.hold(LoggingLevel::Debug);
        let debug_too = levels.hold(LoggingLevel::Debug);
        assert_eq!(levels.wanted(), Some(LoggingLevel::Debug));
        drop(debug);
        assert_eq!(levels.wanted(), Some(LoggingLevel::Debug));
        drop(debug_too);
        assert_eq!(levels.wanted(), Some(LoggingLevel::Warning));
        assert_eq!(warning.level(), LoggingLevel::Warning);
        drop(warning);
        assert_eq!(levels.wanted(), None);
    }
}
