//! The gateway's MCP client role toward one upstream: what it advertises, and
//! what it does with the notifications the upstream sends.

// Logging is deprecated by SEP-2577 but legacy upstreams still send it.
#![allow(deprecated)]

use std::{collections::HashMap, sync::Arc};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use rmcp::{
    ClientHandler, RoleClient,
    model::{
        ClientCapabilities, ClientConfig, Implementation, LoggingMessageNotificationParam,
        ProgressNotificationParam, ProgressToken,
    },
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
/// caller's own token). Updates are delivered in order.
pub trait ProgressSink: Send + Sync {
    fn send(&self, progress: Progress) -> BoxFuture<'static, ()>;
}

/// Progress relays in flight on one upstream connection: the upstream token
/// the client peer stamped on a request → where that request's progress goes.
pub type ProgressRelays = Arc<Mutex<HashMap<ProgressToken, Arc<dyn ProgressSink>>>>;

/// The `ClientHandler` of every upstream connection.
#[derive(Clone)]
pub struct UpstreamClient {
    pub server: Arc<str>,
    pub relays: ProgressRelays,
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

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let sink = self.relays.lock().get(&params.progress_token).cloned();
        if let Some(sink) = sink {
            sink.send(Progress {
                progress: params.progress,
                total: params.total,
                message: params.message,
            })
            .await;
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

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        tracing::debug!(server = %self.server, data = %params.data, "upstream log message");
    }
}
