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
    RoleServer,
    model::{
        LoggingLevel, LoggingMessageNotificationParam, ProgressNotificationParam, ProgressToken,
        ResourceUpdatedNotificationParam,
    },
    service::{Peer, SubscriptionSink},
};

use crate::upstream::{
    CallSink, Caller, LevelHold, LogLevels, Origin, Progress, UpdateSink, Upstream,
    UpstreamManager, passes,
};

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
        }
    }

    /// `logging/setLevel`: from now on, this session's messages at `level`
    /// and above, and the gateway asks upstreams for at least that much.
    pub fn set_level(&self, levels: &Arc<LogLevels>, level: LoggingLevel) {
        let hold = levels.hold(level);
        *self.level.lock() = Some(level);
        // The previous wish, if any, is released here.
        *self.hold.lock() = Some(hold);
    }

    /// The caller of a request of this session. For a 2026-07-28 request,
    /// `request_level` is the request's own level (held for as long as the
    /// returned guard lives); for a legacy session, the session's level
    /// applies.
    pub fn caller(
        &self,
        levels: &Arc<LogLevels>,
        peer: &Peer<RoleServer>,
        progress_token: Option<ProgressToken>,
        modern: bool,
        request_level: Option<LoggingLevel>,
    ) -> (Caller, Option<LevelHold>) {
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
