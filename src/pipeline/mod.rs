//! The one call path every tool call takes, whichever door it came through:
//!
//! identity → catalog → policy → validate → guard → cache → upstream call
//!
//! Front doors turn their wire format into a [`ToolCall`], call
//! [`Pipeline::call`], and turn the [`CallToolResult`] or [`CallError`] back.
//! No rule lives in a front door.

pub mod policy;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use rmcp::model::{CallToolResult, ContentBlock, JsonObject};
use serde_json::Value;
use tracing::Instrument;

use crate::{
    auth::Principal,
    cache::ResultCache,
    catalog::{Catalog, Target, ToolEntry},
    events::{CallOutcome, Event, EventBus},
    guard::{
        Guard, LimitScope,
        breaker::{Admission, Transition},
        is_idempotent,
        retry::RetryPolicy,
    },
    outbound,
    upstream::{Affinity, Caller, ClientInput, UpstreamError, UpstreamManager, spec::Isolation},
};

/// Whose connection a call uses on an isolated upstream: its legacy MCP
/// session, if it came in one, and its principal (tenant and user).
pub fn affinity(principal: &Principal, caller: Option<&Caller>) -> Affinity {
    Affinity {
        session: caller.and_then(|c| c.session),
        principal: format!("{}/{}", principal.tenant_id, principal.user_id).into(),
    }
}

/// One tool call, as the front doors hand it to the pipeline.
pub struct ToolCall {
    pub principal: Principal,
    /// The tool name as the caller knows it: the public name, or the name
    /// within `profile`.
    pub name: String,
    /// The profile the call came through; only its tools can be called.
    pub profile: Option<String>,
    pub arguments: Option<JsonObject>,
    /// Who to relay what the upstream sends during the call to (progress,
    /// log messages); `None` for a caller nothing can be relayed to.
    pub caller: Option<Caller>,
    /// A 2026-07-28 retry's answers to the upstream's input requests.
    pub input: Option<ClientInput>,
}

/// Why a call did not produce a result. Each variant maps to one REST problem
/// type and one MCP answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No such tool, or one the principal may not see: the two answer alike.
    #[error("unknown tool: {0}")]
    UnknownTool(String),
    #[error("tool {0} is disabled")]
    Disabled(String),
    #[error("tool {name} is quarantined: {reason}")]
    Quarantined { name: String, reason: String },
    #[error("tool {name} cannot be executed: {reason}")]
    NotExecutable { name: String, reason: String },
    #[error("{0}")]
    Forbidden(String),
    /// The arguments do not match the input schema; each entry names a field.
    #[error("invalid arguments for {tool}: {}", .errors.join("; "))]
    InvalidArguments { tool: String, errors: Vec<String> },
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("HTTP tool {tool} failed: {detail}")]
    HttpTool { tool: String, detail: String },
    #[error("rate limit of the {scope} exceeded; retry in {:.1}s", .retry_after.as_secs_f64())]
    RateLimited {
        scope: LimitScope,
        retry_after: Duration,
    },
    #[error("server {server} is failing and its circuit breaker is open; retry in {:.1}s", .retry_after.as_secs_f64())]
    BreakerOpen {
        server: String,
        retry_after: Duration,
    },
}

/// A call's result, with how many attempts it took (0 when it came from
/// the cache).
#[derive(Debug)]
pub struct Called {
    pub result: CallToolResult,
    pub attempts: u32,
    pub cached: bool,
}

/// The pipeline, with everything its stages need.
#[derive(Clone)]
pub struct Pipeline {
    pub catalog: Arc<Catalog>,
    pub upstreams: Arc<UpstreamManager>,
    pub events: EventBus,
    pub http: reqwest::Client,
    pub outbound: outbound::OutboundPolicy,
    pub guard: Arc<Guard>,
    pub retry: RetryPolicy,
    /// Calls running now, so shutdown can wait for them.
    pub in_flight: Arc<InFlight>,
    pub cache: Arc<ResultCache>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Every call, whatever its outcome, is recorded here.
    pub audit: crate::audit::AuditLog,
    pub call_timeout: Duration,
    pub max_response_bytes: usize,
}

/// Counts calls in flight.
#[derive(Debug, Default)]
pub struct InFlight {
    count: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

/// Holds one call's place in [`InFlight`].
pub struct Running<'a>(&'a InFlight);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if self
            .0
            .count
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel)
            == 1
        {
            self.0.idle.notify_waiters();
        }
    }
}

impl InFlight {
    pub fn enter(&self) -> Running<'_> {
        self.count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Running(self)
    }

    pub fn count(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Resolves once no call is in flight.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Most validation errors reported for one call.
const MAX_REPORTED_ERRORS: usize = 8;

impl Pipeline {
    /// Runs one call through every stage.
    ///
    /// Each stage is a span of its own (DEBUG: exported as part of the
    /// trace, but not created at all at the default log level when no
    /// exporter wants them); arguments never go into a span or a log line
    /// unless the operator turned `META_MCP_LOG_TOOL_ARGUMENTS` on.
    #[tracing::instrument(name = "tool_call", skip_all, fields(tool = %call.name, user = %call.principal.user_id, outcome = tracing::field::Empty))]
    pub async fn call(&self, call: ToolCall) -> Result<Called, CallError> {
        let _running = self.in_flight.enter();
        let started = Instant::now();
        if crate::telemetry::arguments_logged() {
            let arguments = Value::Object(call.arguments.clone().unwrap_or_default());
            tracing::debug!(%arguments, "tool call arguments");
        }
        let audit = self
            .audit
            .call_started(&call.principal, &call.name, call.arguments.as_ref());
        // catalog + policy: only the caller's tenant's catalog is looked
        // in; a tool the principal may not see is unknown, and so is one
        // outside the profile the call came through.
        let entry = tracing::debug_span!("catalog").in_scope(|| {
            let snapshot = self.catalog.snapshot(&call.principal.tenant_id);
            match &call.profile {
                Some(profile) => snapshot
                    .profiles
                    .get(profile)
                    .and_then(|view| view.tool(&call.name))
                    .map(|t| &t.entry),
                None => snapshot.tool(&call.name),
            }
            .filter(|t| policy::may_see(&call.principal, t))
            .cloned()
        });
        let Some(entry) = entry else {
            let result = Err(CallError::UnknownTool(call.name.clone()));
            self.audit.call_finished(audit, None, &result).await;
            return result;
        };
        let result = self.call_entry(&entry, call).await;
        let server = entry.server().unwrap_or_default().to_owned();
        let outcome = match &result {
            Ok(r) if r.result.is_error == Some(true) => "tool_error",
            Ok(r) if r.cached => "cached",
            Ok(_) => "success",
            Err(
                CallError::Upstream(_) | CallError::HttpTool { .. } | CallError::BreakerOpen { .. },
            ) => "upstream_error",
            Err(_) => "rejected",
        };
        tracing::Span::current().record("outcome", outcome);
        tracing::debug!(
            outcome,
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "tool call finished"
        );
        if let Err(CallError::RateLimited { scope, .. }) = &result {
            self.metrics
                .rate_limited
                .get_or_create(&crate::metrics::ScopeLabels {
                    scope: scope.to_string(),
                })
                .inc();
        }
        self.metrics
            .tool_calls
            .get_or_create(&crate::metrics::ToolLabels {
                tool: entry.public_name.clone(),
                server: server.clone(),
                outcome,
            })
            .inc();
        self.metrics
            .tool_duration
            .get_or_create(&crate::metrics::ToolTimeLabels {
                tool: entry.public_name.clone(),
                server,
            })
            .observe(started.elapsed().as_secs_f64());
        self.events.publish(Event::CallFinished {
            tenant: entry.tenant.clone(),
            tool: entry.public_name.clone(),
            server: entry.server().map(str::to_owned),
            outcome: match &result {
                Ok(r) if r.result.is_error == Some(true) => CallOutcome::ToolError,
                Ok(_) => CallOutcome::Success,
                Err(_) => CallOutcome::Failed,
            },
            duration: started.elapsed(),
        });
        self.audit
            .call_finished(audit, Some((&entry.public_name, entry.server())), &result)
            .await;
        result
    }

    async fn call_entry(&self, entry: &ToolEntry, call: ToolCall) -> Result<Called, CallError> {
        if !entry.enabled() {
            return Err(CallError::Disabled(entry.public_name.clone()));
        }
        if let Some(reason) = &entry.quarantine {
            return Err(CallError::Quarantined {
                name: entry.public_name.clone(),
                reason: reason.replace("{name}", &entry.public_name),
            });
        }
        tracing::debug_span!("policy").in_scope(|| policy::authorize(&call.principal, entry))?;
        tracing::debug_span!("validate").in_scope(|| validate(entry, call.arguments.as_ref()))?;
        // guard: rate limits (breakers and concurrency apply per attempt).
        self.guard
            .admit(&call.principal, entry)
            .instrument(tracing::debug_span!("guard"))
            .await
            .map_err(|(scope, retry_after)| CallError::RateLimited { scope, retry_after })?;
        match &entry.target {
            Target::Upstream { server, original } => {
                // cache: only read-only tools with a TTL, keyed by the
                // caller's authorization context.
                let (trusted, isolated) = self
                    .upstreams
                    .get(&entry.tenant, server)
                    .map_or((false, false), |u| {
                        (u.spec.trusted, u.spec.isolation != Isolation::Shared)
                    });
                // An isolated server's answers depend on the caller's own
                // connection: one caller's cached answer is not another's.
                // A retry with answers to the upstream's input requests is
                // one step of a conversation: never a cache hit either.
                let ttl = crate::guard::cache_ttl(entry, trusted)
                    .filter(|_| !isolated && call.input.is_none());
                let Some(ttl) = ttl else {
                    return self.call_upstream(entry, server, original, call).await;
                };
                let arguments = Value::Object(call.arguments.clone().unwrap_or_default());
                let key =
                    self.cache
                        .key(&call.principal, &format!("{server}/{original}"), &arguments);
                let results = crate::metrics::CacheLabels { cache: "results" };
                let lookup = tracing::debug_span!("cache", hit = false);
                let (found, slot) = self.cache.lookup(&key).instrument(lookup.clone()).await;
                if let Some(json) = found
                    && let Ok(result) = serde_json::from_str::<CallToolResult>(&json)
                {
                    lookup.record("hit", true);
                    self.metrics.cache_hits.get_or_create(&results).inc();
                    return Ok(Called {
                        result,
                        attempts: 0,
                        cached: true,
                    });
                }
                self.metrics.cache_misses.get_or_create(&results).inc();
                let called = self.call_upstream(entry, server, original, call).await?;
                if called.result.is_error != Some(true)
                    && let Ok(json) = serde_json::to_string(&called.result)
                {
                    self.cache.put(slot, json, ttl).await;
                }
                Ok(called)
            }
            Target::Http { url } => Ok(Called {
                result: self
                    .call_http(&entry.public_name, url, call.arguments)
                    .await?,
                attempts: 1,
                cached: false,
            }),
            Target::CatalogOnly => Err(CallError::NotExecutable {
                name: entry.public_name.clone(),
                reason: "it was registered without an endpoint".into(),
            }),
        }
    }

    /// The upstream call: breaker, concurrency limit, timeout, and retries
    /// with backoff where they are safe, all within one deadline.
    #[tracing::instrument(name = "upstream", level = "debug", skip_all, fields(server = %server, tool = %original, otel.kind = "client"))]
    async fn call_upstream(
        &self,
        entry: &ToolEntry,
        server: &str,
        original: &str,
        call: ToolCall,
    ) -> Result<Called, CallError> {
        let upstream = self.upstreams.get(&entry.tenant, server).ok_or_else(|| {
            CallError::Upstream(UpstreamError::Unavailable {
                server: server.to_owned(),
                reason: "removed".into(),
            })
        })?;
        let timeout = entry
            .overlay
            .timeout_secs
            .or(upstream.spec.timeout_secs)
            .map(Duration::from_secs_f64)
            .unwrap_or(self.call_timeout);
        // With progress extending the timeout, the deadline of the whole
        // call (retries included) is the server's cap instead.
        let extend_until = upstream.spec.extend_timeout_on_progress.then(|| {
            Duration::from_secs_f64(upstream.spec.max_call_secs.unwrap_or(600.0)).max(timeout)
        });
        let deadline = tokio::time::Instant::now() + extend_until.unwrap_or(timeout);
        let idempotent = is_idempotent(entry, upstream.spec.trusted);
        let affinity = affinity(&call.principal, call.caller.as_ref());
        let timed_out = || {
            CallError::Upstream(UpstreamError::Timeout {
                server: server.to_owned(),
                timeout,
            })
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (admission, transition) = upstream.breaker.admit();
            self.announce(&entry.tenant, server, transition);
            if let Admission::Refused { retry_after } = admission {
                return Err(CallError::BreakerOpen {
                    server: server.to_owned(),
                    retry_after,
                });
            }
            let _slot = match &upstream.slots {
                Some(slots) => {
                    match tokio::time::timeout_at(deadline, slots.clone().acquire_owned()).await {
                        Ok(Ok(permit)) => Some(permit),
                        _ => {
                            self.announce(&entry.tenant, server, upstream.breaker.record(true));
                            return Err(timed_out());
                        }
                    }
                }
                None => None,
            };
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Err(timed_out());
            }
            let outcome = upstream
                .call_tool(
                    original,
                    call.arguments.clone(),
                    call.caller.as_ref(),
                    &affinity,
                    call.input.clone(),
                    remaining.min(timeout),
                    extend_until.map(|_| remaining),
                )
                .await;
            let failed = outcome.as_ref().err().is_some_and(counts_against_breaker);
            self.announce(&entry.tenant, server, upstream.breaker.record(!failed));
            let error = match outcome {
                Ok(mut result) => {
                    // Results of pre-2026 upstreams have no resultType, which
                    // a 2026-07-28 caller requires; rmcp strips it again for
                    // callers of older revisions.
                    result.result_type = Some(rmcp::model::ResultType::COMPLETE);
                    return Ok(Called {
                        result,
                        attempts: attempt,
                        cached: false,
                    });
                }
                Err(e) => e,
            };
            // Nothing was sent when the server was not connected: always
            // safe to try again. Anything else may have reached it: only for
            // idempotent tools.
            let retryable = match &error {
                UpstreamError::Unavailable { .. } => true,
                UpstreamError::Unsupported { .. }
                | UpstreamError::Exhausted { .. }
                | UpstreamError::InputRequired { .. } => false,
                UpstreamError::ConnectionLost { .. }
                | UpstreamError::Timeout { .. }
                | UpstreamError::Protocol { .. } => idempotent,
                UpstreamError::Rpc { error, .. } => {
                    idempotent && error.code == rmcp::model::ErrorCode::INTERNAL_ERROR
                }
            };
            let pause = self.retry.backoff(attempt);
            if !retryable
                || attempt >= self.retry.max_attempts
                || tokio::time::Instant::now() + pause >= deadline
            {
                return Err(CallError::Upstream(error));
            }
            tracing::debug!(server, tool = %entry.public_name, attempt, %error, "retrying");
            tokio::time::sleep(pause).await;
        }
    }

    fn announce(&self, tenant: &Arc<str>, server: &str, transition: Option<Transition>) {
        if let Some(t) = transition {
            tracing::warn!(tenant = %tenant, server, transition = ?t, "circuit breaker changed state");
            self.metrics
                .breaker_transitions
                .get_or_create(&crate::metrics::TransitionLabels {
                    server: server.to_owned(),
                    to: match t {
                        Transition::Opened => "open",
                        Transition::HalfOpened => "half_open",
                        Transition::Closed => "closed",
                    },
                })
                .inc();
            self.events.publish(Event::BreakerChanged {
                tenant: tenant.clone(),
                server: server.to_owned(),
                transition: t,
            });
        }
    }

    /// Executes a hand-registered HTTP tool: POST the arguments as JSON, and
    /// return the response as the result (JSON as structured content too).
    #[tracing::instrument(name = "upstream", level = "debug", skip_all, fields(tool = %tool, otel.kind = "client"))]
    async fn call_http(
        &self,
        tool: &str,
        url: &str,
        arguments: Option<JsonObject>,
    ) -> Result<CallToolResult, CallError> {
        let fail = |detail: String| CallError::HttpTool {
            tool: tool.to_owned(),
            detail,
        };
        // The client's resolver checks names; literal addresses are checked
        // here, before anything is sent.
        self.outbound
            .check_url(url)
            .map_err(|e| fail(e.to_string()))?;
        let body = Value::Object(arguments.unwrap_or_default());
        let mut context = http::HeaderMap::new();
        crate::telemetry::trace::inject_headers(&mut context);
        let resp = self
            .http
            .post(url)
            .headers(context)
            .timeout(self.call_timeout)
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    fail(format!("no answer within {:?}", self.call_timeout))
                } else {
                    fail(format!("request failed: {}", crate::util::error_chain(&e)))
                }
            })?;
        let status = resp.status();
        let is_json = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("json"));
        let bytes = outbound::read_limited(resp, self.max_response_bytes)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let structured = if is_json {
            serde_json::from_slice::<Value>(&bytes).ok()
        } else {
            None
        };
        let mut result = if status.is_success() {
            CallToolResult::success(vec![ContentBlock::text(text)])
        } else {
            CallToolResult::error(vec![ContentBlock::text(format!("HTTP {status}: {text}"))])
        };
        if status.is_success() {
            result.structured_content = structured;
        }
        Ok(result)
    }
}

/// Validates arguments against the tool's input schema before anything is
/// sent. A schema that cannot be compiled is reported in the tool's record
/// and left to the upstream to enforce.
fn validate(entry: &ToolEntry, arguments: Option<&JsonObject>) -> Result<(), CallError> {
    let Ok(validator) = entry.validator() else {
        return Ok(());
    };
    let empty = JsonObject::new();
    let instance = Value::Object(arguments.unwrap_or(&empty).clone());
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .take(MAX_REPORTED_ERRORS)
        .map(|e| {
            let path = e.instance_path().to_string();
            if path.is_empty() {
                format!("arguments: {e}")
            } else {
                format!("{}: {e}", path.trim_start_matches('/').replace('/', "."))
            }
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CallError::InvalidArguments {
            tool: entry.public_name.clone(),
            errors,
        })
    }
}

/// Whether an upstream failure says the server is unhealthy (a tool that
/// reports an error, or a request the server rejects, does not).
fn counts_against_breaker(error: &UpstreamError) -> bool {
    match error {
        UpstreamError::Rpc { error, .. } => error.code == rmcp::model::ErrorCode::INTERNAL_ERROR,
        // The gateway's own limit, not the server's health.
        UpstreamError::Exhausted { .. } => false,
        UpstreamError::InputRequired { .. } => false,
        _ => true,
    }
}
