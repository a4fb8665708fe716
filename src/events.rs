//! The internal event bus: what happened inside the gateway, for whoever wants
//! to react (the catalog rebuilds on upstream changes; metrics, audit and
//! webhooks subscribe later). Publishing never blocks: a slow subscriber lags
//! and is told how many events it missed.

use std::{sync::Arc, time::Duration};

use tokio::sync::broadcast;

/// Something that happened.
#[derive(Debug, Clone)]
pub enum Event {
    /// The set of tools, prompts or resources of a tenant changed (an
    /// upstream re-synced, a server or tool was added, changed or removed).
    CatalogChanged {
        tenant: Arc<str>,
        server: Option<String>,
    },
    UpstreamUp {
        tenant: Arc<str>,
        server: String,
    },
    UpstreamDown {
        tenant: Arc<str>,
        server: String,
        error: String,
    },
    /// An upstream changed a pinned tool definition.
    ToolChanged {
        tenant: Arc<str>,
        server: String,
        tool: String,
        change_id: String,
        quarantined: bool,
    },
    /// An upstream's circuit breaker opened, half-opened or closed.
    BreakerChanged {
        tenant: Arc<str>,
        server: String,
        transition: crate::guard::breaker::Transition,
    },
    /// A tool call finished, successfully or not.
    CallFinished {
        tenant: Arc<str>,
        tool: String,
        server: Option<String>,
        outcome: CallOutcome,
        duration: Duration,
    },
    /// Failed logins of one user (or from one address) reached the
    /// throttling limit: further attempts are refused for a while.
    LoginFailedRepeatedly {
        tenant: Arc<str>,
        username: String,
        client: Option<std::net::IpAddr>,
    },
    /// The audit trail's verification found a chain that does not hold (a
    /// record changed, removed or inserted). `tenant` is `None` for a
    /// platform-wide chain; webhooks of the default tenant hear of those.
    AuditChainBroken {
        tenant: Option<Arc<str>>,
        /// Which chain (e.g. the replica that wrote it).
        chain: String,
        /// The first record that does not verify, if known.
        record: Option<String>,
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    Success,
    ToolError,
    Failed,
}

/// A cheap, cloneable handle to the bus.
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(1024)
    }
}

impl EventBus {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity);
        Self { tx }
    }

    pub fn publish(&self, event: Event) {
        // No subscriber is not an error: events are advisory.
        let _ = self.tx.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}
