//! One webhook's lane: deliveries in order, each retried with exponential
//! backoff and jitter up to the attempt limit, each attempt bounded by the
//! timeout, every attempt written to the delivery log.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{HookConfig, Job, MAX_RETRY_DELAY, check_target_resolved, signature, unix_now};
use crate::{config::WebhookSettings, metrics::Metrics, outbound::OutboundPolicy, store::Store};

/// What a lane needs besides its webhook.
pub(super) struct LaneContext {
    pub store: Store,
    pub settings: WebhookSettings,
    pub policy: OutboundPolicy,
    pub http: reqwest::Client,
    pub metrics: Arc<Metrics>,
}

/// One attempt as the delivery log shows it.
#[derive(Debug, Clone, Serialize)]
struct Attempt {
    attempt: u32,
    at: String,
    /// The receiver's HTTP status, when it answered.
    status_code: Option<u16>,
    /// Why the attempt failed, when it did.
    error: Option<String>,
    duration_ms: u64,
}

/// The wait after failed attempt `attempt` (1-based): `base · 2^(attempt-1)`,
/// capped at [`MAX_RETRY_DELAY`], of which the upper half is scaled by
/// `jitter` (in `[0, 1)`) so receivers that failed together are not retried
/// together, and no retry comes sooner than half the nominal delay.
pub fn backoff(base: Duration, attempt: u32, jitter: f64) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
    let nominal = base.saturating_mul(factor).min(MAX_RETRY_DELAY);
    nominal / 2 + nominal.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
}

fn jitter() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

pub(super) async fn run_lane(
    cx: LaneContext,
    config: Arc<ArcSwap<HookConfig>>,
    mut rx: mpsc::Receiver<Job>,
    stop: CancellationToken,
) {
    loop {
        let job = tokio::select! {
            job = rx.recv() => match job {
                Some(job) => job,
                None => break,
            },
            () = stop.cancelled() => break,
        };
        deliver(&cx, &config, job, &stop).await;
    }
}

async fn deliver(
    cx: &LaneContext,
    config: &ArcSwap<HookConfig>,
    job: Job,
    stop: &CancellationToken,
) {
    let max = cx.settings.max_attempts.max(1);
    let mut attempts: Vec<Attempt> = Vec::new();
    for n in 1..=max {
        // The settings of now: a changed URL or secret applies to retries.
        let hook = config.load_full();
        // Disabled meanwhile (a broken receiver, say): stop trying.
        if !hook.enabled {
            let log = serde_json::to_string(&attempts).unwrap_or_else(|_| "[]".into());
            if let Err(e) = cx
                .store
                .update_delivery(&job.delivery_id, "dropped", &log)
                .await
            {
                tracing::warn!(webhook = %hook.id, error = %e, "webhook delivery log not written");
            }
            cx.metrics
                .webhook_deliveries
                .get_or_create(&crate::metrics::OutcomeLabels { outcome: "dropped" })
                .inc();
            return;
        }
        let at = crate::util::now_rfc3339();
        let started = Instant::now();
        let result = tokio::select! {
            r = attempt(cx, &hook, &job) => r,
            // Deleted or shutting down: the record stays pending.
            () = stop.cancelled() => return,
        };
        let elapsed = started.elapsed();
        cx.metrics
            .webhook_attempt_duration
            .observe(elapsed.as_secs_f64());
        let (status_code, error) = match &result {
            Ok(code) => (Some(*code), None),
            Err((code, error)) => (*code, Some(error.clone())),
        };
        attempts.push(Attempt {
            attempt: n,
            at,
            status_code,
            error,
            duration_ms: elapsed.as_millis() as u64,
        });
        let done = result.is_ok() || n == max;
        let status = match (&result, done) {
            (Ok(_), _) => "succeeded",
            (Err(_), true) => "failed",
            (Err(_), false) => "pending",
        };
        let log = serde_json::to_string(&attempts).unwrap_or_else(|_| "[]".into());
        if let Err(e) = cx
            .store
            .update_delivery(&job.delivery_id, status, &log)
            .await
        {
            tracing::warn!(webhook = %hook.id, error = %e, "webhook delivery log not written");
        }
        if done {
            if let Err((_, error)) = &result {
                tracing::warn!(webhook = %hook.id, event = job.event_type, attempts = n, %error, "webhook delivery failed; giving up");
            }
            cx.metrics
                .webhook_deliveries
                .get_or_create(&crate::metrics::OutcomeLabels { outcome: status })
                .inc();
            return;
        }
        let wait = backoff(cx.settings.base_delay, n, jitter());
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// One POST; `Ok(status)` for a 2xx answer, else the status (if any) and
/// why. Errors never quote the URL (it may carry a token).
async fn attempt(
    cx: &LaneContext,
    hook: &HookConfig,
    job: &Job,
) -> Result<u16, (Option<u16>, String)> {
    // Again at every attempt: the address a name resolves to may have
    // changed since registration. The client's resolver checks the address
    // it actually connects to as well.
    let url = check_target_resolved(&cx.policy, cx.settings.allow_http, &hook.url)
        .await
        .map_err(|e| (None, format!("refused: {e}")))?;
    let timestamp = unix_now();
    let response = cx
        .http
        .post(url)
        .timeout(cx.settings.timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(
            signature::HEADER,
            signature::sign(&hook.secret, timestamp, job.body.as_bytes()),
        )
        .header("x-metamcp-event", job.event_type)
        .header("x-metamcp-delivery", &job.delivery_id)
        .header("x-metamcp-webhook-id", &hook.id)
        .body(job.body.to_string())
        .send()
        .await
        .map_err(|e| (None, describe(&e, cx.settings.timeout)))?;
    let status = response.status();
    // The answer is not kept; read a little so the connection can be reused.
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        crate::outbound::read_limited(response, 64 * 1024),
    )
    .await;
    if status.is_success() {
        Ok(status.as_u16())
    } else if status.is_redirection() {
        Err((
            Some(status.as_u16()),
            format!("HTTP {} (redirects are not followed)", status.as_u16()),
        ))
    } else {
        Err((Some(status.as_u16()), format!("HTTP {}", status.as_u16())))
    }
}

fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {}s", timeout.as_secs_f64());
    }
    let kind = if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    // The innermost cause says most (refused, reset, policy), and carries
    // no URL (the outermost one quotes it).
    let mut innermost = None;
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        innermost = Some(c.to_string());
        cause = c.source();
    }
    match innermost {
        Some(c) => format!("{kind}: {c}"),
        None => kind.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_bounds_and_is_capped() {
        let base = Duration::from_millis(100);
        assert_eq!(backoff(base, 1, 0.0), Duration::from_millis(50));
        assert_eq!(backoff(base, 1, 1.0), Duration::from_millis(100));
        for (attempt, nominal) in [(1, 100), (2, 200), (3, 400), (4, 800)] {
            for jitter in [0.0, 0.25, 0.5, 0.99] {
                let d = backoff(base, attempt, jitter).as_millis() as u64;
                assert!(
                    (nominal / 2..=nominal).contains(&d),
                    "attempt {attempt}, jitter {jitter}: {d}ms outside {}..={nominal}",
                    nominal / 2
                );
            }
        }
        assert_eq!(backoff(base, 40, 1.0), MAX_RETRY_DELAY);
        assert!(backoff(Duration::from_secs(3600), 1, 0.0) <= MAX_RETRY_DELAY);
    }

    #[test]
    fn jitter_is_spread_over_zero_to_one() {
        let samples: Vec<f64> = (0..200).map(|_| jitter()).collect();
        assert!(samples.iter().all(|j| (0.0..1.0).contains(j)));
        assert!(samples.iter().any(|j| *j < 0.5) && samples.iter().any(|j| *j >= 0.5));
    }
}
