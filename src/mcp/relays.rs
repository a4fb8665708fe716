//! What the MCP door relays to clients besides answers: an upstream's
//! progress and log messages (`notifications/message`) sent while serving
//! the client's own request, and `notifications/resources/updated` for the
//! resources the client subscribed to.
//!
//! Log levels:
//! - a legacy session (up to 2025-11-25) sets its level with
//!   `logging/setLevel`; it holds until the session ends or is set again.
//!   Until a session sets one, it gets what its calls' upstreams send,
//!   unfiltered, as a server that was never asked for a level may send
//!   (legacy upstreams send by their own default; 2026-07-28 upstreams send
//!   nothing, as they must for a request that names no level);
//! - a 2026-07-28 request names its level in
//!   `_meta["io.modelcontextprotocol/logLevel"]`; without one it gets no log
//!   message at all, as that revision requires.
//!
//! Messages are filtered per caller by RFC 5424 severity (a message passes
//! at or above the caller's level). The logger is kept and prefixed with the
//! server's name (`server/logger`, or `server` when the upstream named
//! none), so a client that reaches many servers through the gateway can
//! tell whose message it reads. Which caller a log message belongs to is
//! decided in `upstream::relay`: a message that cannot be tied to exactly
//! one caller's requests goes to the gateway's own log only, never to a
//! guess, and never to another tenant's session.
//!
//! Legacy sessions receive log messages and resource updates on their
//! standing GET stream (rmcp routes them there); 2026-07-28 requests receive
//! log messages on their own response stream, and resource updates on a
//! `subscriptions/listen` stream that asked for those URIs.
//!
//! Server-to-client requests (`sampling/createMessage`,
//! `elicitation/create`, `roots/list`) an upstream makes while serving a
//! call go to the legacy session that made the call, on that call's own
//! response stream (SEP-2260 association), so they never wait for the
//! session's GET stream to open; its answer goes back to the upstream. A
//! session that did not declare the capability, and a 2026-07-28 request
//! (which cannot take a server-to-client request mid-call), make the
//! upstream get `-32601` instead.

// Logging and resources/subscribe are deprecated by SEP-2577 (2026-07-28)
// but are what legacy clients speak.
#![allow(deprecated)]

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use rmcp::{
    ErrorData, RoleServer, ServiceError,
    model::{
        CancelledNotificationParam, ClientCapabilities, ClientResult, ElicitRequestParams,
        GetExtensions, LoggingLevel, LoggingMessageNotificationParam, ProgressNotificationParam,
        ProgressToken, RequestId, ResourceUpdatedNotificationParam, ServerRequest,
    },
    service::{OriginatingRequestId, Peer, PeerRequestOptions, SubscriptionSink},
};

use crate::upstream::{
    CallSink, Caller, LevelHold, LogLevels, Origin, Progress, UpdateSink, Upstream,
    UpstreamManager,
    client::{method_of, not_relayed, relayable},
    passes,
};

/// What the relays need to know of one request of a caller.
pub struct CallerRequest {
    pub id: RequestId,
    pub progress_token: Option<ProgressToken>,
    /// It came in 2026-07-28 form.
    pub modern: bool,
    /// Its own `logLevel` (2026-07-28).
    pub log_level: Option<LoggingLevel>,
    /// The capabilities it declared in its `_meta` (2026-07-28).
    pub capabilities: Option<ClientCapabilities>,
}

/// What the gateway keeps per legacy MCP session (per request for
/// 2026-07-28, which has no sessions): who it is to the relays, its log
/// level, and its resource subscriptions. Ending the session (its handler
/// is dropped) releases its level and unsubscribes what it subscribed to.
pub struct Session {
    pub origin: Origin,
    /// The level set with `logging/setLevel`, read by the sinks of calls in
    /// flight, so a new level applies at once.
    level: Arc<Mutex<Option<LoggingLevel>>>,
    hold: Mutex<Option<LevelHold>>,
    /// The resources this session subscribed to, at their upstreams.
    watched: Mutex<Vec<(Weak<Upstream>, String)>>,
    /// How long an upstream unsubscribe at session end may take.
    timeout: Duration,
    /// Told when the session ends, to close its isolated connections.
    upstreams: Weak<UpstreamManager>,
    /// Whether `notifications/initialized` was heard (a session moved
    /// between replicas hears it twice: replayed, then the client's).
    initialized: std::sync::atomic::AtomicBool,
}

impl Session {
    pub fn new(timeout: Duration, upstreams: &Arc<UpstreamManager>) -> Self {
        Self {
            upstreams: Arc::downgrade(upstreams),
            origin: Origin::next(),
            level: Arc::default(),
            hold: Mutex::new(None),
            watched: Mutex::new(Vec::new()),
            timeout,
            initialized: Default::default(),
        }
    }

    /// True the first time only: the session has just been set up.
    pub fn first_initialized(&self) -> bool {
        !self
            .initialized
            .swap(true, std::sync::atomic::Ordering::AcqRel)
    }

    /// `logging/setLevel`: from now on, this session's messages at `level`
    /// and above, and the gateway asks upstreams for at least that much.
    pub fn set_level(&self, levels: &Arc<LogLevels>, level: LoggingLevel) {
        let hold = levels.hold(level);
        *self.level.lock() = Some(level);
        // The previous wish, if any, is released here.
        *self.hold.lock() = Some(hold);
    }

    /// Takes the level another replica set for this session (shared
    /// sessions), if it is not this copy's already.
    pub fn adopt_level(&self, levels: &Arc<LogLevels>, level: LoggingLevel) {
        if *self.level.lock() != Some(level) {
            self.set_level(levels, level);
        }
    }

    /// The caller of `request` of this session. For a 2026-07-28 request,
    /// its own level applies (held for as long as the returned guard lives);
    /// for a legacy session, the session's.
    pub fn caller(
        &self,
        levels: &Arc<LogLevels>,
        peer: &Peer<RoleServer>,
        request: CallerRequest,
    ) -> (Caller, Option<LevelHold>) {
        let CallerRequest {
            id: request_id,
            progress_token,
            modern,
            log_level: request_level,
            capabilities: request_capabilities,
        } = request;
        let (log_level, threshold, hold) = if modern {
            (
                request_level,
                Threshold::Request(request_level),
                request_level.map(|l| levels.hold(l)),
            )
        } else {
            (
                *self.level.lock(),
                Threshold::Session(self.level.clone()),
                None,
            )
        };
        let sink = Arc::new(McpSink {
            peer: peer.clone(),
            request_id,
            modern,
            request_capabilities: request_capabilities.unwrap_or_default(),
            progress_token,
            threshold,
        });
        let caller = Caller {
            origin: self.origin,
            session: (!modern).then_some(self.origin),
            log_level,
            sink,
        };
        (caller, hold)
    }

    /// Records a subscription made at `upstream`.
    pub fn watched(&self, upstream: &Arc<Upstream>, uri: &str) {
        let mut watched = self.watched.lock();
        let known = watched
            .iter()
            .any(|(u, w)| w == uri && std::ptr::eq(u.as_ptr(), Arc::as_ptr(upstream)));
        if !known {
            watched.push((Arc::downgrade(upstream), uri.to_owned()));
        }
    }

    /// Forgets this session's subscriptions to `uri` (`None`: to all), and
    /// returns the upstreams they were made at that still exist.
    pub fn unwatched(&self, uri: Option<&str>) -> Vec<(Arc<Upstream>, String)> {
        let mut watched = self.watched.lock();
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut *watched)
            .into_iter()
            .partition(|(_, w)| uri.is_none_or(|uri| w == uri));
        *watched = kept;
        gone.into_iter()
            .filter_map(|(u, w)| u.upgrade().map(|u| (u, w)))
            .collect()
    }
}

impl Session {
    /// Ends every subscription of this session, in the background (a drop
    /// cannot wait).
    fn release(&self) {
        let watched = self.unwatched(None);
        if watched.is_empty() {
            return;
        }
        let (origin, timeout) = (self.origin, self.timeout);
        // No runtime means the process is ending: nothing left to undo.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                for (upstream, uri) in watched {
                    upstream.unwatch_resource(&uri, origin, None, timeout).await;
                }
            });
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // A legacy session ends when rmcp drops its handler (DELETE, or the
        // session manager's expiry): its own upstream connections go too.
        if let Some(upstreams) = self.upstreams.upgrade() {
            upstreams.end_session(self.origin);
        }
        self.release();
    }
}

/// Ends a session's subscriptions when dropped: a `subscriptions/listen`
/// holds one for as long as it runs.
pub struct UnwatchOnDrop(pub Arc<Session>);

impl Drop for UnwatchOnDrop {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// The level a call's log messages are filtered with.
enum Threshold {
    /// A legacy session's, read at delivery; none set: unfiltered.
    Session(Arc<Mutex<Option<LoggingLevel>>>),
    /// A 2026-07-28 request's own; none: no log messages.
    Request(Option<LoggingLevel>),
}

/// Sends what an upstream relays for one request to the MCP caller.
struct McpSink {
    peer: Peer<RoleServer>,
    /// The caller's request: server-to-client requests ride its stream.
    request_id: RequestId,
    /// A 2026-07-28 request, which takes no server-to-client request, and
    /// answers `input_required` results itself.
    modern: bool,
    /// What a 2026-07-28 request declared in its `_meta`.
    request_capabilities: ClientCapabilities,
    /// The caller's progress token: progress goes out under it, and only if
    /// the caller gave one.
    progress_token: Option<ProgressToken>,
    threshold: Threshold,
}

impl CallSink for McpSink {
    fn progress(&self, progress: Progress) -> BoxFuture<'static, ()> {
        let Some(token) = self.progress_token.clone() else {
            return Box::pin(std::future::ready(()));
        };
        let peer = self.peer.clone();
        let mut params = ProgressNotificationParam::new(token, progress.progress);
        params.total = progress.total;
        params.message = progress.message;
        Box::pin(async move {
            if let Err(error) = peer.notify_progress(params).await {
                tracing::debug!(%error, "progress notification not delivered");
            }
        })
    }

    fn capabilities(&self) -> ClientCapabilities {
        relayable(&self.declared())
    }

    fn takes_input_required(&self) -> bool {
        self.modern
    }

    fn client_request(
        &self,
        mut request: ServerRequest,
    ) -> BoxFuture<'static, Result<ClientResult, ErrorData>> {
        if let Some(why) = self.refusal(&request) {
            tracing::debug!(%why, "server-to-client request refused");
            return Box::pin(std::future::ready(Err(not_relayed(&why))));
        }
        let method = method_of(&request);
        // On the call's own response stream: the client reads it for as
        // long as the call runs, so nothing waits for its GET stream.
        request
            .extensions_mut()
            .insert(OriginatingRequestId(self.request_id.clone()));
        let peer = self.peer.clone();
        Box::pin(async move {
            // Sent from a task of its own: rmcp stamps a request sent from
            // inside a handler with that handler's request id, and this runs
            // in the handler of the upstream's request, whose id means
            // nothing downstream.
            let sent = tokio::spawn(async move {
                peer.send_request_with_option(request, PeerRequestOptions::no_options())
                    .await
            })
            .await;
            let handle = match sent {
                Ok(Ok(handle)) => handle,
                Ok(Err(error)) => return Err(downstream_error(method, error)),
                Err(_) => return Err(ErrorData::internal_error(format!("{method} failed"), None)),
            };
            let mut cancel = CancelDownstream {
                peer: Some(handle.peer.clone()),
                id: handle.id.clone(),
            };
            let answer = handle.await_response().await;
            cancel.peer = None;
            answer.map_err(|error| downstream_error(method, error))
        })
    }

    fn log(&self, message: LoggingMessageNotificationParam) -> BoxFuture<'static, ()> {
        let wanted = match &self.threshold {
            Threshold::Session(level) => level.lock().is_none_or(|l| passes(message.level, l)),
            Threshold::Request(level) => level.is_some_and(|l| passes(message.level, l)),
        };
        if !wanted {
            return Box::pin(std::future::ready(()));
        }
        let peer = self.peer.clone();
        Box::pin(async move {
            if let Err(error) = peer.notify_logging_message(message).await {
                tracing::debug!(%error, "log message not delivered");
            }
        })
    }
}

impl McpSink {
    /// What the client declared: when its session began (legacy), or in
    /// the request (2026-07-28).
    fn declared(&self) -> ClientCapabilities {
        if self.modern {
            return self.request_capabilities.clone();
        }
        self.peer
            .peer_info()
            .map(|info| info.capabilities.clone())
            .unwrap_or_default()
    }

    /// Why the caller cannot take `request`, if it cannot.
    fn refusal(&self, request: &ServerRequest) -> Option<String> {
        let method = method_of(request);
        if self.modern {
            return Some(format!(
                "{method} cannot reach the caller: it speaks 2026-07-28, which takes no \
                 server-to-client request during a call (only input_required results)"
            ));
        }
        let caps = self.declared();
        let (declared, capability) = match request {
            ServerRequest::CreateMessageRequest(_) => (caps.sampling.is_some(), "sampling"),
            ServerRequest::ListRootsRequest(_) => (caps.roots.is_some(), "roots"),
            ServerRequest::ElicitRequest(r) => match &r.params {
                // An empty elicitation capability means form mode
                // (2025-11-25 keeps that for older clients).
                ElicitRequestParams::UrlElicitationParams { .. } => (
                    caps.elicitation.as_ref().is_some_and(|e| e.url.is_some()),
                    "elicitation.url",
                ),
                _ => (
                    caps.elicitation
                        .as_ref()
                        .is_some_and(|e| e.form.is_some() || e.url.is_none()),
                    "elicitation.form",
                ),
            },
            _ => (false, method),
        };
        (!declared).then(|| {
            format!(
                "{method} cannot reach the caller: it did not declare the {capability} capability"
            )
        })
    }
}

/// Cancels the downstream request it names when dropped before disarmed:
/// the upstream gave up on its request, or the call it belongs to ended.
struct CancelDownstream {
    peer: Option<Peer<RoleServer>>,
    id: RequestId,
}

impl Drop for CancelDownstream {
    fn drop(&mut self) {
        let Some(peer) = self.peer.take() else { return };
        let params = CancelledNotificationParam::new(
            Some(self.id.clone()),
            Some("the server that asked gave up".into()),
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = peer.notify_cancelled(params).await;
            });
        }
    }
}

/// Tells a legacy session of resource updates, on its GET stream.
pub struct SessionUpdates(pub Peer<RoleServer>);

impl UpdateSink for SessionUpdates {
    fn updated(&self, uri: &str) -> BoxFuture<'static, ()> {
        let peer = self.0.clone();
        let params = ResourceUpdatedNotificationParam::new(uri.to_owned());
        Box::pin(async move {
            if let Err(error) = peer.notify_resource_updated(params).await {
                tracing::debug!(%error, "resource update not delivered");
            }
        })
    }
}

/// What the upstream gets when the client answered with an error (passed on
/// as it is) or could not be asked.
fn downstream_error(method: &str, error: ServiceError) -> ErrorData {
    match error {
        ServiceError::McpError(error) => error,
        other => {
            ErrorData::internal_error(format!("{method} did not reach the caller: {other}"), None)
        }
    }
}

/// Tells a 2026-07-28 `subscriptions/listen` stream of resource updates.
pub struct ListenUpdates(pub SubscriptionSink);

impl UpdateSink for ListenUpdates {
    fn updated(&self, uri: &str) -> BoxFuture<'static, ()> {
        let sink = self.0.clone();
        let uri = uri.to_owned();
        Box::pin(async move {
            if let Err(error) = sink.notify_resource_updated(uri).await {
                tracing::debug!(%error, "resource update not delivered");
            }
        })
    }
}
