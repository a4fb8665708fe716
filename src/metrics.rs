//! Prometheus metrics, served at `/metrics` in the OpenMetrics text format.
//!
//! Labels are bounded: routes are route templates, tools and servers come
//! from the catalog, outcomes and methods from fixed sets; no user ids, no
//! tenant ids and no arguments ever become labels. Servers (and tools) of
//! the same name in several tenants share one series: the exposition is the
//! platform operator's view, and is not served to other tenants.

use std::sync::Arc;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::{guard::breaker::BreakerState, upstream::UpstreamManager};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolLabels {
    pub tool: String,
    pub server: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolTimeLabels {
    pub tool: String,
    pub server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    pub server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    pub server: String,
    pub to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub cache: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabels {
    pub scope: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SearchLabels {
    pub search_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    /// One of a fixed set: login, login_failed, login_throttled, refresh,
    /// refresh_rejected, refresh_reused, logout, key_created, key_revoked,
    /// credentials_rejected.
    pub event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FallbackLabels {
    /// `rate_limit` or `login_throttle`.
    pub what: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// Webhook deliveries: succeeded, failed (gave up) or dropped (queue
    /// full, or the webhook disabled before it went out).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to ~30 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0005, 3.0, 11,
    ))
}

/// Every metric of the gateway.
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub mcp_requests: Family<MethodLabels, Counter>,
    pub tool_calls: Family<ToolLabels, Counter>,
    pub tool_duration: Family<ToolTimeLabels, Histogram, fn() -> Histogram>,
    upstream_up: Family<ServerLabels, Gauge>,
    upstream_connects: Family<ServerLabels, Gauge>,
    breaker_state: Family<ServerLabels, Gauge>,
    pub breaker_transitions: Family<TransitionLabels, Counter>,
    pub cache_hits: Family<CacheLabels, Counter>,
    pub cache_misses: Family<CacheLabels, Counter>,
    pub rate_limited: Family<ScopeLabels, Counter>,
    pub search_requests: Family<SearchLabels, Counter>,
    pub search_duration: Family<SearchLabels, Histogram, fn() -> Histogram>,
    pub auth_events: Family<AuthLabels, Counter>,
    /// Audit records queued for the writer now.
    pub audit_queue_depth: Gauge,
    /// Audit records dropped (queue full under the `drop` policy, or not
    /// writable at shutdown).
    pub audit_dropped: Counter,
    /// Audit records written.
    pub audit_records: Counter,
    shared_state_fallbacks: Family<FallbackLabels, Counter>,
    cluster_in_sync: Gauge,
    pub webhook_deliveries: Family<OutcomeLabels, Counter>,
    pub webhook_attempt_duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Counts one identity event.
    pub fn auth(&self, event: &'static str) {
        self.auth_events.get_or_create(&AuthLabels { event }).inc();
    }

    /// Counts a decision made per replica because Redis did not answer.
    pub fn shared_state_fallback(&self, what: &'static str) {
        self.shared_state_fallbacks
            .get_or_create(&FallbackLabels { what })
            .inc();
    }

    /// Whether this replica hears the others' changes.
    pub fn set_cluster_in_sync(&self, in_sync: bool) {
        self.cluster_in_sync.set(i64::from(in_sync));
    }

    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("metamcp");
        let m = Self {
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_histogram),
            mcp_requests: Family::default(),
            tool_calls: Family::default(),
            tool_duration: Family::new_with_constructor(latency_histogram),
            upstream_up: Family::default(),
            upstream_connects: Family::default(),
            breaker_state: Family::default(),
            breaker_transitions: Family::default(),
            cache_hits: Family::default(),
            cache_misses: Family::default(),
            rate_limited: Family::default(),
            search_requests: Family::default(),
            search_duration: Family::new_with_constructor(latency_histogram),
            auth_events: Family::default(),
            audit_queue_depth: Gauge::default(),
            audit_dropped: Counter::default(),
            audit_records: Counter::default(),
            shared_state_fallbacks: Family::default(),
            cluster_in_sync: Gauge::default(),
            webhook_deliveries: Family::default(),
            webhook_attempt_duration: latency_histogram(),
            registry: Registry::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            m.http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request duration by route and method",
            m.http_duration.clone(),
        );
        registry.register(
            "mcp_requests",
            "MCP requests by method",
            m.mcp_requests.clone(),
        );
        registry.register(
            "tool_calls",
            "Tool calls by tool, server and outcome",
            m.tool_calls.clone(),
        );
        registry.register(
            "tool_call_duration_seconds",
            "Tool call duration by tool and server",
            m.tool_duration.clone(),
        );
        registry.register(
            "upstream_up",
            "1 when the upstream server is ready, else 0",
            m.upstream_up.clone(),
        );
        registry.register(
            "upstream_connection_attempts",
            "Connection attempts to the upstream server since it was added (reconnects + 1)",
            m.upstream_connects.clone(),
        );
        registry.register(
            "circuit_breaker_state",
            "Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open",
            m.breaker_state.clone(),
        );
        registry.register(
            "circuit_breaker_transitions",
            "Circuit breaker state changes per upstream and new state",
            m.breaker_transitions.clone(),
        );
        registry.register("cache_hits", "Cache hits by cache", m.cache_hits.clone());
        registry.register(
            "cache_misses",
            "Cache misses by cache",
            m.cache_misses.clone(),
        );
        registry.register(
            "rate_limited",
            "Calls refused by a rate limit, by scope",
            m.rate_limited.clone(),
        );
        registry.register(
            "search_requests",
            "Tool searches by search type",
            m.search_requests.clone(),
        );
        registry.register(
            "search_duration_seconds",
            "Tool search duration by search type",
            m.search_duration.clone(),
        );
        registry.register(
            "auth_events",
            "Identity events: logins, failures, refreshes, revocations, rejected credentials",
            m.auth_events.clone(),
        );
        registry.register(
            "audit_queue_depth",
            "Audit records waiting for the writer",
            m.audit_queue_depth.clone(),
        );
        registry.register(
            "audit_queue_dropped",
            "Audit records dropped: queue full under the drop policy, or not writable at shutdown",
            m.audit_dropped.clone(),
        );
        registry.register(
            "audit_records",
            "Audit records written",
            m.audit_records.clone(),
        );
        registry.register(
            "shared_state_fallbacks",
            "Rate-limit and login-throttle decisions made per replica because Redis did not answer",
            m.shared_state_fallbacks.clone(),
        );
        registry.register(
            "cluster_in_sync",
            "1 while this replica is subscribed to the other replicas' changes (with META_MCP_REDIS_URL)",
            m.cluster_in_sync.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries by final outcome: succeeded, failed (attempts exhausted), dropped (queue full)",
            m.webhook_deliveries.clone(),
        );
        registry.register(
            "webhook_attempt_duration_seconds",
            "Duration of webhook delivery attempts",
            m.webhook_attempt_duration.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "Build information", build);
        Self { registry, ..m }
    }

    /// The whole exposition, with state read from `upstreams` now.
    pub fn render(&self, upstreams: &UpstreamManager) -> String {
        // Per server name over every tenant: up only when all of that name
        // are, attempts summed, the worst breaker state.
        let mut by_name: std::collections::BTreeMap<String, (bool, u64, i64)> =
            std::collections::BTreeMap::new();
        for u in upstreams.list() {
            let breaker = match u.breaker.state() {
                BreakerState::Closed => 0,
                BreakerState::HalfOpen => 1,
                BreakerState::Open => 2,
            };
            let entry = by_name.entry(u.spec.name.clone()).or_insert((true, 0, 0));
            entry.0 &= u.is_ready();
            entry.1 += u.status().attempts;
            entry.2 = entry.2.max(breaker);
        }
        for (server, (up, attempts, breaker)) in by_name {
            let labels = ServerLabels { server };
            self.upstream_up.get_or_create(&labels).set(i64::from(up));
            self.upstream_connects
                .get_or_create(&labels)
                .set(attempts as i64);
            self.breaker_state.get_or_create(&labels).set(breaker);
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        out
    }
}

/// Shared handle.
pub type SharedMetrics = Arc<Metrics>;
