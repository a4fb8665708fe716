//! Login throttling: failures are counted per user and per client address
//! over a window; past the limit, attempts are refused until the window
//! ends, whether or not the password would have been right.
//!
//! With Redis (`META_MCP_REDIS_URL`) the counts are shared by every replica,
//! so spreading guesses over replicas gains nothing: a fixed window that
//! starts at the first failure, as in memory. Failures are also counted in
//! memory, so while Redis does not answer each replica goes on throttling
//! with what it saw itself (said once in the log, counted in metrics).

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::cluster::{Bus, link::Outage};

/// Failed attempts allowed per user within the window.
const PER_USER: u32 = 5;
/// Failed attempts allowed per client address within the window (several
/// people may share one address).
const PER_ADDRESS: u32 = 30;
const WINDOW: Duration = Duration::from_secs(15 * 60);

pub struct LoginThrottle {
    /// key → (failures, first failure of the window)
    failures: moka::sync::Cache<String, (u32, Instant)>,
    /// Shared counts in Redis, when configured.
    shared: Option<Arc<Bus>>,
    outage: Outage,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self {
            failures: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(WINDOW)
                .build(),
            shared: None,
            outage: Outage::new("login throttling", "login_throttle"),
        }
    }
}

/// Per key: the failure count and the milliseconds left in its window.
const SHARED_CHECK: &str = r"
local out = {}
for i, key in ipairs(KEYS) do
  out[2 * i - 1] = tonumber(redis.call('GET', key) or '0')
  out[2 * i] = redis.call('PTTL', key)
end
return out
";

/// Counts one failure per key; the first of a window starts its expiry.
const SHARED_FAIL: &str = r"
for _, key in ipairs(KEYS) do
  if redis.call('INCR', key) == 1 then
    redis.call('PEXPIRE', key, ARGV[1])
  end
end
return 1
";

fn address_key(ip: IpAddr) -> String {
    format!("ip\u{1f}{ip}")
}

impl LoginThrottle {
    /// A throttle whose counts live in the deployment's Redis.
    pub fn shared(bus: Arc<Bus>) -> Self {
        Self {
            shared: bus.redis().is_some().then_some(bus),
            ..Self::default()
        }
    }

    /// The Redis keys and limits of an attempt.
    fn shared_keys(bus: &Bus, user_key: &str, client: Option<IpAddr>) -> Vec<(String, u32)> {
        let mut keys = vec![(bus.key(&format!("login:{user_key}")), PER_USER)];
        if let Some(ip) = client {
            keys.push((bus.key(&format!("login:{}", address_key(ip))), PER_ADDRESS));
        }
        keys
    }

    /// Runs a script over the attempt's keys in Redis; `None` when Redis
    /// did not answer (the caller falls back to memory).
    async fn shared_eval(
        &self,
        script: &str,
        user_key: &str,
        client: Option<IpAddr>,
    ) -> Option<(Vec<(String, u32)>, Vec<i64>)> {
        let bus = self.shared.as_ref()?;
        let redis = bus.redis()?;
        let keys = Self::shared_keys(bus, user_key, client);
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script).arg(keys.len());
        for (key, _) in &keys {
            cmd.arg(key);
        }
        cmd.arg(WINDOW.as_millis() as u64);
        match redis.query::<Vec<i64>>(&cmd).await {
            Ok(answer) => {
                self.outage.answered();
                Some((keys, answer))
            }
            Err(error) => {
                self.outage.fell_back(bus.metrics(), &error);
                None
            }
        }
    }

    /// How long to wait before trying again, if the limit is reached.
    pub async fn check(&self, user_key: &str, client: Option<IpAddr>) -> Option<Duration> {
        if let Some((keys, answer)) = self.shared_eval(SHARED_CHECK, user_key, client).await {
            return keys
                .iter()
                .zip(answer.chunks(2))
                .find(|((_, limit), counts)| counts[0] >= i64::from(*limit))
                .map(|(_, counts)| Duration::from_millis(counts[1].max(1000) as u64));
        }
        self.check_local(user_key, client)
    }

    fn check_local(&self, user_key: &str, client: Option<IpAddr>) -> Option<Duration> {
        let blocked = |key: &str, limit: u32| {
            self.failures
                .get(key)
                .filter(|(n, _)| *n >= limit)
                .map(|(_, first)| WINDOW.saturating_sub(first.elapsed()))
        };
        blocked(user_key, PER_USER)
            .or_else(|| client.and_then(|ip| blocked(&address_key(ip), PER_ADDRESS)))
    }

    pub async fn failed(&self, user_key: &str, client: Option<IpAddr>) {
        self.shared_eval(SHARED_FAIL, user_key, client).await;
        self.failed_local(user_key, client);
    }

    fn failed_local(&self, user_key: &str, client: Option<IpAddr>) {
        let bump = |key: String| {
            self.failures
                .entry(key)
                .and_upsert_with(|old| match old.map(|e| e.into_value()) {
                    Some((n, first)) => (n + 1, first),
                    None => (1, Instant::now()),
                });
        };
        bump(user_key.to_owned());
        if let Some(ip) = client {
            bump(address_key(ip));
        }
    }

    pub async fn succeeded(&self, user_key: &str) {
        self.failures.invalidate(user_key);
        if let Some(bus) = &self.shared
            && let Some(redis) = bus.redis()
        {
            let key = bus.key(&format!("login:{user_key}"));
            let _ = redis.query::<i64>(redis::cmd("DEL").arg(key)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blocks_a_user_after_repeated_failures_and_not_others() {
        let t = LoginThrottle::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..PER_USER {
            assert!(t.check("alice", Some(ip)).await.is_none());
            t.failed("alice", Some(ip)).await;
        }
        assert!(t.check("alice", Some(ip)).await.is_some());
        assert!(t.check("bob", Some(ip)).await.is_none());
        t.succeeded("alice").await;
        assert!(t.check("alice", Some(ip)).await.is_none());
    }

    /// Two throttles on one Redis (two replicas) share their counts; one
    /// whose Redis is unreachable falls back to what it saw itself.
    #[tokio::test]
    async fn replicas_share_counts_in_redis_and_fall_back_to_memory() {
        let Ok(url) = std::env::var("METAMCP_TEST_REDIS_URL") else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("METAMCP_TEST_REDIS_URL must be set in CI");
            }
            eprintln!("SKIPPED replicas_share_counts_in_redis: METAMCP_TEST_REDIS_URL is not set");
            return;
        };
        let prefix = format!("metamcp-test-{}", uuid::Uuid::new_v4().simple());
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let bus = |url: &str| {
            Arc::new(
                Bus::new(
                    Some(url),
                    &prefix,
                    crate::store::Backend::Sqlite,
                    metrics.clone(),
                )
                .unwrap(),
            )
        };
        let (one, two) = (
            LoginThrottle::shared(bus(&url)),
            LoginThrottle::shared(bus(&url)),
        );
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        for i in 0..PER_USER {
            let t = if i % 2 == 0 { &one } else { &two };
            assert!(t.check("carol", Some(ip)).await.is_none());
            t.failed("carol", Some(ip)).await;
        }
        let wait = two
            .check("carol", Some(ip))
            .await
            .expect("throttled on both");
        assert!(wait > Duration::from_secs(60) && wait <= WINDOW, "{wait:?}");
        assert!(one.check("carol", Some(ip)).await.is_some());
        one.succeeded("carol").await;
        assert!(two.check("carol", Some(ip)).await.is_none());

        let dead = LoginThrottle::shared(bus("redis://127.0.0.1:1"));
        for _ in 0..PER_USER {
            dead.failed("dave", None).await;
        }
        assert!(dead.check("dave", None).await.is_some(), "memory fallback");
        assert!(one.check("dave", None).await.is_none());
    }
}
