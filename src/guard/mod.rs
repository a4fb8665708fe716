//! The guard stage: rate limits (per principal, tool, tenant and upstream),
//! and the building blocks the call stage uses against a failing upstream:
//! circuit breakers and the retry policy.

pub mod breaker;
pub mod rate;
pub mod retry;
mod shared;

use std::time::Duration;

use rate::{Limiter, Rate};

use crate::{auth::Principal, catalog::ToolEntry};

/// The configured limits; `None` is unlimited.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateLimits {
    pub per_principal: Option<Rate>,
    pub per_tool: Option<Rate>,
    pub per_tenant: Option<Rate>,
    pub per_upstream: Option<Rate>,
}

/// Which limit refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitScope {
    Principal,
    Tool,
    Tenant,
    Upstream,
}

impl std::fmt::Display for LimitScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Principal => "caller",
            Self::Tool => "tool",
            Self::Tenant => "tenant",
            Self::Upstream => "server",
        })
    }
}

/// Rate limiting for tool calls: in Redis when configured, so the limits
/// hold for all replicas together; in memory (per replica) otherwise and
/// while Redis does not answer.
#[derive(Default)]
pub struct Guard {
    limits: RateLimits,
    limiter: Limiter,
    shared: Option<shared::SharedLimiter>,
}

impl Guard {
    pub fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            limiter: Limiter::default(),
            shared: None,
        }
    }

    /// Counts in the deployment's Redis (when it has one).
    pub fn with_cluster(mut self, bus: std::sync::Arc<crate::cluster::Bus>) -> Self {
        self.shared = shared::SharedLimiter::new(bus);
        self
    }

    /// Takes one call of `principal` to `tool` from every limit that
    /// applies; the first limit exceeded refuses it with the wait.
    pub async fn admit(
        &self,
        principal: &Principal,
        tool: &ToolEntry,
    ) -> Result<(), (LimitScope, Duration)> {
        let tenant = &principal.tenant_id;
        let checks = [
            (
                LimitScope::Principal,
                self.limits.per_principal,
                format!("p:{tenant}:{}", principal.user_id),
            ),
            (
                LimitScope::Tool,
                self.limits.per_tool,
                format!("t:{tenant}:{}", tool.public_name),
            ),
            (
                LimitScope::Tenant,
                self.limits.per_tenant,
                format!("n:{tenant}"),
            ),
            (
                LimitScope::Upstream,
                self.limits.per_upstream.filter(|_| tool.server().is_some()),
                // Servers are named per tenant: two tenants' `files` are
                // two servers with two limits.
                format!("u:{}:{}", tool.tenant, tool.server().unwrap_or_default()),
            ),
        ];
        if let Some(shared) = &self.shared {
            let limits: Vec<(LimitScope, (String, Rate))> = checks
                .iter()
                .filter_map(|(scope, rate, key)| rate.map(|r| (*scope, (key.clone(), r))))
                .collect();
            if limits.is_empty() {
                return Ok(());
            }
            let keyed: Vec<(String, Rate)> = limits.iter().map(|(_, l)| l.clone()).collect();
            if let Ok(verdict) = shared.check(&keyed).await {
                return verdict.map_err(|(index, wait)| {
                    (
                        limits.get(index).map_or(LimitScope::Principal, |l| l.0),
                        wait,
                    )
                });
            }
            // Redis did not answer: this replica's own limits apply.
        }
        for (scope, rate, key) in checks {
            if let Some(rate) = rate {
                self.limiter
                    .check(&key, rate)
                    .map_err(|wait| (scope, wait))?;
            }
        }
        Ok(())
    }
}

/// Whether `tool` only reads, by the same rule as retries: an explicit
/// setting, or the `readOnlyHint` annotation of a trusted server.
pub fn is_read_only(tool: &ToolEntry, server_trusted: bool) -> bool {
    if let Some(explicit) = tool.overlay.read_only {
        return explicit;
    }
    server_trusted
        && tool
            .definition
            .annotations
            .as_ref()
            .is_some_and(|a| a.read_only_hint == Some(true))
}

/// How long results of `tool` may be cached: only when a TTL is set and the
/// tool is read-only.
pub fn cache_ttl(tool: &ToolEntry, server_trusted: bool) -> Option<Duration> {
    let ttl = tool.overlay.cache_ttl_secs.filter(|t| *t > 0)?;
    is_read_only(tool, server_trusted).then(|| Duration::from_secs(ttl))
}

/// Whether a call to `tool` may be retried after it may have reached the
/// upstream: only for tools known to be idempotent or read-only, by an
/// explicit setting, or by the MCP annotations when the server is trusted
/// (annotations are untrusted input otherwise).
pub fn is_idempotent(tool: &ToolEntry, server_trusted: bool) -> bool {
    if let Some(explicit) = tool.overlay.idempotent {
        return explicit;
    }
    if tool.overlay.read_only == Some(true) {
        return true;
    }
    server_trusted
        && tool
            .definition
            .annotations
            .as_ref()
            .is_some_and(|a| a.read_only_hint == Some(true) || a.idempotent_hint == Some(true))
}
