//! From what happened inside the gateway (the event bus, catalog changes)
//! to webhook events, and on to the lanes.
//!
//! Two kinds of events need memory: an upstream's up and down are sent on
//! changes only (a server that keeps failing to reconnect reports "down"
//! once, not at every retry), and tools added or removed come from
//! comparing each tenant's catalog with what it held before. Both start
//! from what the gateway holds when the dispatcher starts, so a restart
//! does not announce every server and tool again.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::WebhookEvent;
use crate::{
    app::AppState,
    auth::DEFAULT_TENANT,
    events::{CallOutcome, Event},
    guard::breaker::Transition,
};

/// How often the lanes are brought in line with the store (for changes
/// made through other replicas).
const RELOAD_EVERY: Duration = Duration::from_secs(10);
/// How often old delivery records are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Starts the lanes, the dispatcher, and the periodic reload and pruning.
pub async fn spawn(state: Arc<AppState>) {
    if let Err(e) = state.webhooks.reload().await {
        tracing::error!(error = %e, "webhooks not loaded");
    }
    let mut bus = state.events.subscribe();
    let mut lists = state.list_changes.subscribe();
    let mut upstreams: HashMap<(Arc<str>, String), bool> = HashMap::new();
    let mut tools = ToolWatch::default();
    for tenant in tenants(&state) {
        let servers = servers_of(&state, &tenant);
        for (server, ready) in &servers {
            if *ready {
                upstreams.insert((tenant.clone(), server.clone()), true);
            }
        }
        tools.start(&tenant, &tools_of(&state, &tenant), &servers);
    }
    let shutdown = state.shutdown.clone();
    let dispatcher = state.clone();
    tokio::spawn(async move {
        let state = dispatcher;
        loop {
            tokio::select! {
                event = bus.recv() => match event {
                    Ok(event) => {
                        if let Some(out) = translate(&event, &mut upstreams) {
                            state.webhooks.publish(&out).await;
                        }
                        // A server's first connection settles its tools.
                        if let Event::UpstreamUp { tenant, .. } = &event {
                            observe(&state, &mut tools, tenant).await;
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "webhook dispatcher fell behind the event bus; events were not delivered");
                    }
                    Err(RecvError::Closed) => break,
                },
                change = lists.recv() => match change {
                    Ok(change) if change.tools => observe(&state, &mut tools, &change.tenant).await,
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => {
                        for tenant in tenants(&state) {
                            observe(&state, &mut tools, &tenant).await;
                        }
                    }
                    Err(RecvError::Closed) => break,
                },
                () = shutdown.cancelled() => break,
            }
        }
    });
    let housekeeper = state.clone();
    tokio::spawn(async move {
        let state = housekeeper;
        let mut reload = tokio::time::interval(RELOAD_EVERY);
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        loop {
            tokio::select! {
                _ = reload.tick() => {
                    if let Err(e) = state.webhooks.reload().await {
                        tracing::warn!(error = %e, "webhooks not reloaded");
                    }
                }
                _ = prune.tick() => match state.webhooks.prune().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(deleted = n, "old webhook deliveries pruned"),
                    Err(e) => tracing::warn!(error = %e, "webhook deliveries not pruned"),
                },
                () = state.shutdown.cancelled() => break,
            }
        }
    });
}

fn tenants(state: &AppState) -> Vec<Arc<str>> {
    state
        .catalog
        .snapshots()
        .iter()
        .map(|s| s.tenant.clone())
        .collect()
}

/// A tenant's servers and whether each is ready.
fn servers_of(state: &AppState, tenant: &str) -> Vec<(String, bool)> {
    state
        .upstreams
        .list_tenant(tenant)
        .iter()
        .map(|u| (u.spec.name.clone(), u.is_ready()))
        .collect()
}

/// A tenant's tools as (server, original name) → public name.
fn tools_of(state: &AppState, tenant: &str) -> Vec<ToolKey> {
    state
        .catalog
        .snapshot(tenant)
        .tools
        .iter()
        .map(|t| ToolKey {
            server: t.server().map(str::to_owned),
            tool: t.original_name().to_owned(),
            name: t.public_name.clone(),
        })
        .collect()
}

async fn observe(state: &AppState, watch: &mut ToolWatch, tenant: &Arc<str>) {
    let events = watch.observe(tenant, &tools_of(state, tenant), &servers_of(state, tenant));
    for (kind, data) in events {
        state
            .webhooks
            .publish(&WebhookEvent::new(kind, tenant, data))
            .await;
    }
}

/// The webhook event for a bus event, if it is one receivers hear of.
/// `upstreams` remembers which servers are up, to report changes only.
fn translate(
    event: &Event,
    upstreams: &mut HashMap<(Arc<str>, String), bool>,
) -> Option<WebhookEvent> {
    let (kind, tenant, data): (&'static str, &str, Value) = match event {
        Event::UpstreamUp { tenant, server } => {
            let was = upstreams.insert((tenant.clone(), server.clone()), true);
            // Only a recovery: a server's first connection is not news.
            if was != Some(false) {
                return None;
            }
            ("upstream.up", tenant, json!({"server": server}))
        }
        Event::UpstreamDown {
            tenant,
            server,
            error,
        } => {
            let was = upstreams.insert((tenant.clone(), server.clone()), false);
            if was == Some(false) {
                return None;
            }
            (
                "upstream.down",
                tenant,
                json!({"server": server, "error": error}),
            )
        }
        Event::BreakerChanged {
            tenant,
            server,
            transition,
        } => match transition {
            Transition::Opened => ("circuit.opened", tenant, json!({"server": server})),
            Transition::Closed => ("circuit.closed", tenant, json!({"server": server})),
            Transition::HalfOpened => return None,
        },
        Event::ToolChanged {
            tenant,
            server,
            tool,
            change_id,
            quarantined,
        } => (
            "tool.changed",
            tenant,
            json!({"server": server, "tool": tool, "change_id": change_id, "quarantined": quarantined}),
        ),
        Event::CallFinished {
            tenant,
            tool,
            server,
            outcome: CallOutcome::Failed,
            duration,
        } => (
            "tool.call_failed",
            tenant,
            json!({"tool": tool, "server": server, "duration_ms": duration.as_millis() as u64}),
        ),
        Event::LoginFailedRepeatedly {
            tenant,
            username,
            client,
        } => (
            "login.failed_repeatedly",
            tenant,
            json!({"username": username, "client": client.map(|ip| ip.to_string())}),
        ),
        Event::AuditChainBroken {
            tenant,
            chain,
            record,
            reason,
        } => (
            "audit.chain_broken",
            tenant.as_deref().unwrap_or(DEFAULT_TENANT),
            json!({"chain": chain, "record": record, "reason": reason}),
        ),
        Event::CallFinished { .. } | Event::CatalogChanged { .. } => return None,
    };
    Some(WebhookEvent::new(kind, tenant, data))
}

/// One tool of a tenant's catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ToolKey {
    /// `None` for tools registered by hand.
    server: Option<String>,
    tool: String,
    name: String,
}

/// A tenant's counted tools: (server, original name) → public name.
type ToolSet = BTreeMap<(Option<String>, String), String>;

/// What the dispatcher knows of each tenant's tools.
///
/// A server's tools count once it has been ready: before that its offer is
/// not known yet (an empty list says nothing). Servers that existed when
/// the gateway started join silently when they first connect; servers added
/// later announce their tools as added. While a known server is not ready
/// (reconnecting, or restarted or replaced over the API, which starts it
/// with an empty offer) its last known tools stand; when it is ready again
/// only real differences are announced. A server that goes away takes its
/// tools with it (removed).
#[derive(Debug, Default)]
struct ToolWatch {
    /// Servers present at start that have not connected yet.
    boot_servers: HashSet<(Arc<str>, String)>,
    /// Servers whose tools count.
    settled: HashSet<(Arc<str>, String)>,
    known: HashMap<Arc<str>, ToolSet>,
}

impl ToolWatch {
    /// Takes a tenant's state at start as the baseline.
    fn start(&mut self, tenant: &Arc<str>, tools: &[ToolKey], servers: &[(String, bool)]) {
        for (server, ready) in servers {
            let key = (tenant.clone(), server.clone());
            if *ready {
                self.settled.insert(key);
            } else {
                self.boot_servers.insert(key);
            }
        }
        let now = self.counted(tenant, tools);
        self.known.insert(tenant.clone(), now);
    }

    fn counted(&self, tenant: &Arc<str>, tools: &[ToolKey]) -> ToolSet {
        tools
            .iter()
            .filter(|t| match &t.server {
                None => true,
                Some(s) => self.settled.contains(&(tenant.clone(), s.clone())),
            })
            .map(|t| ((t.server.clone(), t.tool.clone()), t.name.clone()))
            .collect()
    }

    /// Compares a tenant's catalog now with what was known; returns the
    /// `tool.added` and `tool.removed` events.
    fn observe(
        &mut self,
        tenant: &Arc<str>,
        tools: &[ToolKey],
        servers: &[(String, bool)],
    ) -> Vec<(&'static str, Value)> {
        let mut silent: HashSet<String> = HashSet::new();
        for (server, ready) in servers {
            let key = (tenant.clone(), server.clone());
            if *ready && self.settled.insert(key.clone()) && self.boot_servers.remove(&key) {
                silent.insert(server.clone());
            }
        }
        let live = |s: &String| servers.iter().any(|(name, _)| name == s);
        self.settled.retain(|(t, s)| t != tenant || live(s));
        self.boot_servers.retain(|(t, s)| t != tenant || live(s));
        let waiting: HashSet<&String> = servers
            .iter()
            .filter(|(name, ready)| {
                !ready && self.settled.contains(&(tenant.clone(), name.clone()))
            })
            .map(|(name, _)| name)
            .collect();
        let mut now = self.counted(tenant, tools);
        now.retain(|(server, _), _| server.as_ref().is_none_or(|s| !waiting.contains(s)));
        let before = self.known.entry(tenant.clone()).or_default();
        for (key, name) in before.iter() {
            if key.0.as_ref().is_some_and(|s| waiting.contains(s)) {
                now.insert(key.clone(), name.clone());
            }
        }
        let mut events = Vec::new();
        let data = |(server, tool): &(Option<String>, String), name: &String| json!({"server": server, "tool": tool, "name": name});
        for (key, name) in &now {
            let joins_silently = key.0.as_ref().is_some_and(|s| silent.contains(s));
            if !before.contains_key(key) && !joins_silently {
                events.push(("tool.added", data(key, name)));
            }
        }
        for (key, name) in before.iter() {
            if !now.contains_key(key) {
                events.push(("tool.removed", data(key, name)));
            }
        }
        *before = now;
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(server: &str, name: &str) -> ToolKey {
        ToolKey {
            server: Some(server.into()),
            tool: name.into(),
            name: format!("{server}__{name}"),
        }
    }

    fn kinds(events: &[(&'static str, Value)]) -> Vec<String> {
        events
            .iter()
            .map(|(k, d)| format!("{k} {}", d["name"].as_str().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn tools_of_servers_known_at_start_join_silently() {
        let t: Arc<str> = Arc::from("acme");
        let mut w = ToolWatch::default();
        w.start(&t, &[], &[("fs".into(), false)]);
        // Connecting: the catalog may already hold the offer; nothing yet.
        assert!(
            w.observe(&t, &[tool("fs", "read")], &[("fs".into(), false)])
                .is_empty()
        );
        // Ready: the baseline, silently.
        assert!(
            w.observe(&t, &[tool("fs", "read")], &[("fs".into(), true)])
                .is_empty()
        );
        // A later change is news.
        let e = w.observe(&t, &[tool("fs", "write")], &[("fs".into(), true)]);
        assert_eq!(kinds(&e), ["tool.added fs__write", "tool.removed fs__read"]);
        // Down and reconnecting keeps the last offer: nothing.
        assert!(
            w.observe(&t, &[tool("fs", "write")], &[("fs".into(), false)])
                .is_empty()
        );
        // Restarted over the API: a new connection with no offer yet.
        assert!(w.observe(&t, &[], &[("fs".into(), false)]).is_empty());
        // Ready again with one more tool: only that is news.
        let e = w.observe(
            &t,
            &[tool("fs", "write"), tool("fs", "stat")],
            &[("fs".into(), true)],
        );
        assert_eq!(kinds(&e), ["tool.added fs__stat"]);
    }

    #[test]
    fn servers_added_later_announce_their_tools_and_take_them_away() {
        let t: Arc<str> = Arc::from("acme");
        let mut w = ToolWatch::default();
        w.start(&t, &[tool("fs", "read")], &[("fs".into(), true)]);
        let servers = [("fs".to_owned(), true), ("git".to_owned(), false)];
        let tools = [tool("fs", "read"), tool("git", "log")];
        assert!(w.observe(&t, &tools, &servers).is_empty());
        let servers = [("fs".to_owned(), true), ("git".to_owned(), true)];
        assert_eq!(
            kinds(&w.observe(&t, &tools, &servers)),
            ["tool.added git__log"]
        );
        // The server is deleted.
        let e = w.observe(&t, &[tool("fs", "read")], &[("fs".into(), true)]);
        assert_eq!(kinds(&e), ["tool.removed git__log"]);
        // Another tenant is separate.
        let other: Arc<str> = Arc::from("beta");
        assert_eq!(
            kinds(&w.observe(&other, &[tool("fs", "read")], &[("fs".into(), true)])),
            ["tool.added fs__read"]
        );
    }

    #[test]
    fn upstream_changes_are_reported_once() {
        let mut up = HashMap::new();
        let t: Arc<str> = Arc::from("acme");
        let down = || Event::UpstreamDown {
            tenant: t.clone(),
            server: "fs".into(),
            error: "connection closed".into(),
        };
        let upe = || Event::UpstreamUp {
            tenant: t.clone(),
            server: "fs".into(),
        };
        // A first connection is not news.
        assert!(translate(&upe(), &mut up).is_none());
        assert_eq!(translate(&down(), &mut up).unwrap().kind, "upstream.down");
        // Reconnection attempts failing again: no repeats.
        assert!(translate(&down(), &mut up).is_none());
        let back = translate(&upe(), &mut up).unwrap();
        assert_eq!((back.kind, back.tenant.as_str()), ("upstream.up", "acme"));
        assert_eq!(back.data, json!({"server": "fs"}));
    }

    #[test]
    fn only_failed_calls_and_open_or_closed_breakers_are_sent() {
        let mut up = HashMap::new();
        let t: Arc<str> = Arc::from("acme");
        let call = |outcome| Event::CallFinished {
            tenant: t.clone(),
            tool: "fs__read".into(),
            server: Some("fs".into()),
            outcome,
            duration: Duration::from_millis(7),
        };
        assert!(translate(&call(CallOutcome::Success), &mut up).is_none());
        assert!(translate(&call(CallOutcome::ToolError), &mut up).is_none());
        let failed = translate(&call(CallOutcome::Failed), &mut up).unwrap();
        assert_eq!(failed.kind, "tool.call_failed");
        assert_eq!(failed.data["duration_ms"], 7);
        let breaker = |transition| Event::BreakerChanged {
            tenant: t.clone(),
            server: "fs".into(),
            transition,
        };
        assert_eq!(
            translate(&breaker(Transition::Opened), &mut up)
                .unwrap()
                .kind,
            "circuit.opened"
        );
        assert!(translate(&breaker(Transition::HalfOpened), &mut up).is_none());
        assert_eq!(
            translate(&breaker(Transition::Closed), &mut up)
                .unwrap()
                .kind,
            "circuit.closed"
        );
        let audit = Event::AuditChainBroken {
            tenant: None,
            chain: "replica-1".into(),
            record: Some("42".into()),
            reason: "hash mismatch".into(),
        };
        let out = translate(&audit, &mut up).unwrap();
        assert_eq!(
            (out.kind, out.tenant.as_str()),
            ("audit.chain_broken", DEFAULT_TENANT)
        );
    }
}
