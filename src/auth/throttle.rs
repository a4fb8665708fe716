//! Login throttling: failures are counted per user and per client address
//! over a window; past the limit, attempts are refused until the window
//! ends, whether or not the password would have been right.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

/// Failed attempts allowed per user within the window.
const PER_USER: u32 = 5;
/// Failed attempts allowed per client address within the window (several
/// people may share one address).
const PER_ADDRESS: u32 = 30;
const WINDOW: Duration = Duration::from_secs(15 * 60);

pub struct LoginThrottle {
    /// key → (failures, first failure of the window)
    failures: moka::sync::Cache<String, (u32, Instant)>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self {
            failures: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(WINDOW)
                .build(),
        }
    }
}

fn address_key(ip: IpAddr) -> String {
    format!("ip\u{1f}{ip}")
}

impl LoginThrottle {
    /// How long to wait before trying again, if the limit is reached.
    pub fn check(&self, user_key: &str, client: Option<IpAddr>) -> Option<Duration> {
        let blocked = |key: &str, limit: u32| {
            self.failures
                .get(key)
                .filter(|(n, _)| *n >= limit)
                .map(|(_, first)| WINDOW.saturating_sub(first.elapsed()))
        };
        blocked(user_key, PER_USER)
            .or_else(|| client.and_then(|ip| blocked(&address_key(ip), PER_ADDRESS)))
    }

    pub fn failed(&self, user_key: &str, client: Option<IpAddr>) {
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

    pub fn succeeded(&self, user_key: &str) {
        self.failures.invalidate(user_key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_a_user_after_repeated_failures_and_not_others() {
        let t = LoginThrottle::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..PER_USER {
            assert!(t.check("alice", Some(ip)).is_none());
            t.failed("alice", Some(ip));
        }
        assert!(t.check("alice", Some(ip)).is_some());
        assert!(t.check("bob", Some(ip)).is_none());
        t.succeeded("alice");
        assert!(t.check("alice", Some(ip)).is_none());
    }
}
