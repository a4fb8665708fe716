//! A circuit breaker per upstream: closed (calls flow; failures within the
//! monitoring window are counted), open (calls are refused at once until the
//! recovery timeout has passed), half-open (one trial call decides: success
//! closes the breaker, failure opens it again).

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Breaker settings, named as the original README named them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Failures within `window` that open the breaker.
    pub failure_threshold: u32,
    /// Seconds an open breaker waits before letting a trial call through.
    pub recovery_timeout: f64,
    /// Seconds over which failures are counted (the original's
    /// `monitor_interval`).
    #[serde(alias = "monitor_interval")]
    pub window: f64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            recovery_timeout: 30.0,
            window: 60.0,
        }
    }
}

impl BreakerConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.failure_threshold == 0 {
            return Err("failure_threshold must be at least 1".into());
        }
        for (name, v) in [
            ("recovery_timeout", self.recovery_timeout),
            ("window", self.window),
        ] {
            if !(v > 0.0 && v <= 86_400.0) {
                return Err(format!("{name} must be 0 < seconds <= 86400"));
            }
        }
        Ok(())
    }
}

/// The three states, as shown in health and the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
enum Inner {
    Closed { failures: VecDeque<Instant> },
    Open { until: Instant },
    HalfOpen { trial_in_flight: bool },
}

/// What the breaker decided about one call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admission {
    /// Go ahead; report the outcome with [`Breaker::record`].
    Allowed,
    /// Refused: the breaker is open for this much longer.
    Refused { retry_after: Duration },
}

/// A state change worth announcing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened,
    HalfOpened,
    Closed,
}

#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            inner: Mutex::new(Inner::Closed {
                failures: VecDeque::new(),
            }),
        }
    }

    pub fn state(&self) -> BreakerState {
        match &*self.inner.lock() {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { until } if Instant::now() < *until => BreakerState::Open,
            Inner::Open { .. } | Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Closes the breaker (a new connection to the server was made);
    /// returns the transition when it was not closed.
    pub fn reset(&self) -> Option<Transition> {
        let mut inner = self.inner.lock();
        let was_closed = matches!(*inner, Inner::Closed { .. });
        *inner = Inner::Closed {
            failures: VecDeque::new(),
        };
        (!was_closed).then_some(Transition::Closed)
    }

    /// Asks to make a call now.
    pub fn admit(&self) -> (Admission, Option<Transition>) {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        match &mut *inner {
            Inner::Closed { .. } => (Admission::Allowed, None),
            Inner::Open { until } if now < *until => (
                Admission::Refused {
                    retry_after: *until - now,
                },
                None,
            ),
            Inner::Open { .. } => {
                *inner = Inner::HalfOpen {
                    trial_in_flight: true,
                };
                (Admission::Allowed, Some(Transition::HalfOpened))
            }
            Inner::HalfOpen { trial_in_flight } => {
                if *trial_in_flight {
                    // One trial at a time; the others wait for its verdict.
                    (
                        Admission::Refused {
                            retry_after: Duration::from_secs(1),
                        },
                        None,
                    )
                } else {
                    *trial_in_flight = true;
                    (Admission::Allowed, None)
                }
            }
        }
    }

    /// Reports the outcome of an admitted call; returns a state change.
    pub fn record(&self, success: bool) -> Option<Transition> {
        let now = Instant::now();
        let window = Duration::from_secs_f64(self.config.window);
        let mut inner = self.inner.lock();
        match (&mut *inner, success) {
            (Inner::Closed { failures }, true) => {
                // A success does not erase earlier failures in the window:
                // a flapping upstream still trips the breaker.
                while failures
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > window)
                {
                    failures.pop_front();
                }
                None
            }
            (Inner::Closed { failures }, false) => {
                failures.push_back(now);
                while failures
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > window)
                {
                    failures.pop_front();
                }
                if failures.len() >= self.config.failure_threshold as usize {
                    *inner = self.open(now);
                    Some(Transition::Opened)
                } else {
                    None
                }
            }
            (Inner::HalfOpen { .. }, true) => {
                *inner = Inner::Closed {
                    failures: VecDeque::new(),
                };
                Some(Transition::Closed)
            }
            (Inner::HalfOpen { .. }, false) => {
                *inner = self.open(now);
                Some(Transition::Opened)
            }
            // An outcome arriving after the breaker opened changes nothing.
            (Inner::Open { .. }, _) => None,
        }
    }

    fn open(&self, now: Instant) -> Inner {
        Inner::Open {
            until: now + Duration::from_secs_f64(self.config.recovery_timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick() -> Breaker {
        Breaker::new(BreakerConfig {
            failure_threshold: 3,
            recovery_timeout: 0.05,
            window: 10.0,
        })
    }

    #[test]
    fn opens_after_the_threshold_and_refuses_at_once() {
        let b = quick();
        assert_eq!(b.record(false), None);
        assert_eq!(b.record(true), None);
        assert_eq!(b.record(false), None);
        assert_eq!(b.record(false), Some(Transition::Opened));
        assert_eq!(b.state(), BreakerState::Open);
        assert!(matches!(b.admit().0, Admission::Refused { .. }));
    }

    #[test]
    fn half_opens_after_recovery_and_one_trial_decides() {
        let b = quick();
        for _ in 0..3 {
            b.record(false);
        }
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(
            b.admit(),
            (Admission::Allowed, Some(Transition::HalfOpened))
        );
        assert!(
            matches!(b.admit().0, Admission::Refused { .. }),
            "one trial at a time"
        );
        assert_eq!(b.record(false), Some(Transition::Opened));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.admit().0, Admission::Allowed);
        assert_eq!(b.record(true), Some(Transition::Closed));
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_new_connection_resets_an_open_breaker() {
        let b = quick();
        for _ in 0..3 {
            b.record(false);
        }
        assert_eq!(b.reset(), Some(Transition::Closed));
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.reset(), None, "already closed");
    }
}
