//! Rate limits shared by every replica through Redis: the same GCRA as
//! [`super::rate::Limiter`] (one theoretical arrival time per key, a burst
//! of `count`), run as one Lua script so checking and taking are atomic
//! across replicas, on the Redis server's clock so replicas whose clocks
//! differ still agree.

use std::{sync::Arc, time::Duration};

use super::rate::Rate;
use crate::cluster::{Bus, link::Outage};

/// KEYS: the limit keys, in order. ARGV: per key, its emission interval and
/// burst tolerance in microseconds. Takes one request from each key in turn
/// and stops at the first that refuses, like the in-memory limiter: returns
/// `{0, 0}` when admitted, else `{index (1-based), wait in microseconds}`.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local allow_at = tat - tolerance
  if now < allow_at then
    return {i, allow_at - now}
  end
  local next_tat = tat + interval
  -- Kept only while it still limits anything.
  redis.call('SET', key, string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1000)
end
return {0, 0}
";

/// The Redis end of the rate limits.
pub struct SharedLimiter {
    bus: Arc<Bus>,
    outage: Outage,
}

impl SharedLimiter {
    /// `None` without Redis.
    pub fn new(bus: Arc<Bus>) -> Option<Self> {
        bus.redis()?;
        Some(Self {
            bus,
            outage: Outage::new("rate limits", "rate_limit"),
        })
    }

    /// Takes one request from each `(key, rate)` in order: `Ok(Ok(()))`,
    /// `Ok(Err((index, wait)))` for the first limit that refused, or
    /// `Err(())` when Redis did not answer (the caller falls back to its
    /// own limiter).
    pub async fn check(
        &self,
        limits: &[(String, Rate)],
    ) -> Result<Result<(), (usize, Duration)>, ()> {
        let Some(redis) = self.bus.redis() else {
            return Err(());
        };
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(GCRA).arg(limits.len());
        for (key, _) in limits {
            cmd.arg(self.bus.key(&format!("rl:{key}")));
        }
        for (_, rate) in limits {
            let interval = (rate.period.as_micros() / u128::from(rate.count)).max(1);
            let tolerance = interval * u128::from(rate.count.saturating_sub(1));
            cmd.arg(interval as u64).arg(tolerance as u64);
        }
        match redis.query::<(i64, i64)>(&cmd).await {
            Ok((0, _)) => {
                self.outage.answered();
                Ok(Ok(()))
            }
            Ok((index, wait)) => {
                self.outage.answered();
                Ok(Err((
                    (index.max(1) - 1) as usize,
                    Duration::from_micros(wait.max(0) as u64),
                )))
            }
            Err(error) => {
                self.outage.fell_back(self.bus.metrics(), &error);
                Err(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The script against a real Redis: two limiters (two replicas) share
    /// the counts, keys are independent, the wait is the in-memory
    /// limiter's, and without Redis the caller is told to fall back.
    #[tokio::test]
    async fn replicas_share_one_gcra_in_redis() {
        let Ok(url) = std::env::var("METAMCP_TEST_REDIS_URL") else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("METAMCP_TEST_REDIS_URL must be set in CI");
            }
            eprintln!(
                "SKIPPED replicas_share_one_gcra_in_redis: METAMCP_TEST_REDIS_URL is not set"
            );
            return;
        };
        let prefix = format!("metamcp-test-{}", uuid::Uuid::new_v4().simple());
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let limiter = |url: &str| {
            SharedLimiter::new(Arc::new(
                Bus::new(
                    Some(url),
                    &prefix,
                    crate::store::Backend::Postgres,
                    metrics.clone(),
                )
                .unwrap(),
            ))
            .unwrap()
        };
        let (one, two) = (limiter(&url), limiter(&url));
        let rate = Rate {
            count: 4,
            period: Duration::from_secs(60),
        };
        let k = |name: &str| vec![(name.to_owned(), rate)];
        for i in 0..4 {
            let l = if i % 2 == 0 { &one } else { &two };
            assert_eq!(l.check(&k("a")).await, Ok(Ok(())), "call {i}");
        }
        let Ok(Err((index, wait))) = two.check(&k("a")).await else {
            panic!("the fifth call is refused");
        };
        assert_eq!(index, 0);
        // One emission interval (15 s), less the little time that passed.
        assert!(
            wait > Duration::from_secs(14) && wait <= Duration::from_secs(15),
            "{wait:?}"
        );
        assert_eq!(one.check(&k("b")).await, Ok(Ok(())), "keys are independent");
        // The second key refuses: its index is reported, the first took one.
        let both = vec![("c".to_owned(), rate), ("a".to_owned(), rate)];
        assert!(matches!(one.check(&both).await, Ok(Err((1, _)))));

        let dead = limiter("redis://127.0.0.1:1");
        assert_eq!(dead.check(&k("a")).await, Err(()));
    }
}
