//! The gateway's MCP client role toward one upstream: what it advertises, and
//! what it does with the notifications the upstream sends.

// Logging is deprecated by SEP-2577 but legacy upstreams still send it.
#![allow(deprecated)]

use std::sync::Arc;

use futures::future::BoxFuture;
use rmcp::{
    ClientHandler, RoleClient,
    model::{ClientCapabilities, ClientConfig, Implementation, LoggingMessageNotificationParam},
    service::NotificationContext,
};
use tokio::sync::Notify;

/// One progress update, in the caller's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub progress: f64,
    pub total: Option<f64>,
    pub message: Option<String>,
}

/// Where progress of one call goes: the front door that took the call
/// implements it (the MCP door sends `notifications/progress` with the
/// caller's own token). Updates are delivered in order, all of them before
/// the call's result (see `relay`).
pub trait ProgressSink: Send + Sync {
    fn send(&self, progress: Progress) -> BoxFuture<'static, ()>;
}

/// The `ClientHandler` of every upstream connection.
#[derive(Clone)]
pub struct UpstreamClient {
    pub server: Arc<str>,
    /// Woken when the upstream says one of its lists changed.
    pub resync: Arc<Notify>,
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

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        tracing::debug!(server = %self.server, data = %params.data, "upstream log message");
    }
}
