//! Rate limits with the generic cell rate algorithm (GCRA): one timestamp
//! per key, smooth refill, and an exact `Retry-After` for a refused request.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use parking_lot::Mutex;

/// `N` requests per `period`, with bursts of up to `N`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub count: u32,
    pub period: Duration,
}

impl std::str::FromStr for Rate {
    type Err = String;

    /// `100/minute`, `10/s`, `5000/hour`, `2/day`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (count, unit) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("expected N/second, N/minute, N/hour or N/day, got {s:?}"))?;
        let count: u32 = count
            .trim()
            .parse()
            .ok()
            .filter(|c| *c > 0)
            .ok_or_else(|| format!("the count of {s:?} must be a positive whole number"))?;
        let period = match unit.trim() {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3600,
            "d" | "day" => 86_400,
            other => {
                return Err(format!(
                    "unknown period {other:?}: use second, minute, hour or day"
                ));
            }
        };
        Ok(Self {
            count,
            period: Duration::from_secs(period),
        })
    }
}

impl Rate {
    fn emission_interval(&self) -> Duration {
        self.period / self.count
    }
}

/// Keys are dropped once idle this long, so the table stays small.
const IDLE_EVICTION: Duration = Duration::from_secs(3600);

/// A limiter over many keys (principals, tools, tenants, upstreams).
#[derive(Debug, Default)]
pub struct Limiter {
    /// key → theoretical arrival time of the next request.
    tat: Mutex<HashMap<String, Instant>>,
}

impl Limiter {
    /// Takes one request for `key` under `rate`: `Ok` or how long to wait.
    pub fn check(&self, key: &str, rate: Rate) -> Result<(), Duration> {
        self.check_at(key, rate, Instant::now())
    }

    fn check_at(&self, key: &str, rate: Rate, now: Instant) -> Result<(), Duration> {
        let interval = rate.emission_interval();
        // Tolerance: a full burst of `count` requests fits.
        let tolerance = interval * rate.count.saturating_sub(1);
        let mut table = self.tat.lock();
        if table.len() > 10_000 {
            table.retain(|_, tat| now.saturating_duration_since(*tat) < IDLE_EVICTION);
        }
        let tat = table.get(key).copied().unwrap_or(now).max(now);
        let allow_at = tat.checked_sub(tolerance).unwrap_or(now);
        if now < allow_at {
            return Err(allow_at - now);
        }
        table.insert(key.to_owned(), tat + interval);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates() {
        assert_eq!(
            "10/minute".parse::<Rate>().unwrap().period,
            Duration::from_secs(60)
        );
        assert_eq!("3/s".parse::<Rate>().unwrap().count, 3);
        assert!("0/s".parse::<Rate>().is_err());
        assert!("10 per minute".parse::<Rate>().is_err());
        assert!("10/fortnight".parse::<Rate>().is_err());
    }

    #[test]
    fn a_burst_over_the_limit_is_refused_with_an_exact_wait() {
        let l = Limiter::default();
        let rate = Rate {
            count: 5,
            period: Duration::from_secs(60),
        };
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(l.check_at("k", rate, t0).is_ok());
        }
        let wait = l.check_at("k", rate, t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(12), "one emission interval");
        assert!(
            l.check_at("other", rate, t0).is_ok(),
            "keys are independent"
        );
        assert!(l.check_at("k", rate, t0 + Duration::from_secs(12)).is_ok());
        assert!(l.check_at("k", rate, t0 + Duration::from_secs(12)).is_err());
    }
}
