//! The gateway's MCP client role toward one upstream: what it advertises, and
//! what it does with the notifications the upstream sends.

// Logging is deprecated by SEP-2577 but legacy upstreams still send it.
#![allow(deprecated)]

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use futures::future::BoxFuture;
use rmcp::{
    ClientHandler, RoleClient,
    model::{
        ClientCapabilities, ClientConfig, Implementation, LoggingLevel,
        LoggingMessageNotificationParam, ResourceUpdatedNotificationParam,
    },
    service::NotificationContext,
};
use tokio::sync::Notify;

use super::watch::Watches;

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
}

impl ClientHandler for UpstreamClient {
    fn get_info(&self) -> ClientConfig {
        // Sampling, elicitation and roots are relayed to downstream callers
        // only once "Protocol fidelity" routes server-to-client requests, so
        // they are not advertised yet: an upstream must not rely on them.
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("metamcp", env!("CARGO_PKG_VERSION")),
        )
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
