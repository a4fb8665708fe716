//! One command connection to Redis, shared by whatever asks Redis something
//! on a request path (rate-limit counters, login throttling, publishing
//! changes), and a small helper that says once per outage that a feature
//! fell back to per-replica state.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use redis::aio::MultiplexedConnection;

/// How long one command may take before Redis counts as unreachable: a
/// request waits at most this long before its fallback applies.
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(300);
/// How often an unreachable Redis is tried again (requests in between fall
/// back at once instead of each waiting for a connect timeout).
const RETRY: Duration = Duration::from_secs(1);

/// A multiplexed connection, made on first use and made again after it
/// failed (at most once per [`RETRY`]).
pub struct RedisLink {
    client: redis::Client,
    conn: parking_lot::Mutex<Option<MultiplexedConnection>>,
    /// Single-flight connecting: many requests arriving while Redis is away
    /// make one attempt, not one each.
    connecting: tokio::sync::Mutex<Option<Instant>>,
}

impl RedisLink {
    pub fn new(client: redis::Client) -> Self {
        Self {
            client,
            conn: parking_lot::Mutex::new(None),
            connecting: tokio::sync::Mutex::new(None),
        }
    }

    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The connection, and whether it was made just now.
    async fn connection(&self) -> Result<(MultiplexedConnection, bool), String> {
        if let Some(conn) = self.conn.lock().clone() {
            return Ok((conn, false));
        }
        let mut last_attempt = self.connecting.lock().await;
        if let Some(conn) = self.conn.lock().clone() {
            return Ok((conn, false));
        }
        if last_attempt.is_some_and(|t| t.elapsed() < RETRY) {
            return Err("unreachable (retrying shortly)".into());
        }
        *last_attempt = Some(Instant::now());
        match tokio::time::timeout(
            COMMAND_TIMEOUT * 3,
            self.client.get_multiplexed_async_connection(),
        )
        .await
        {
            Ok(Ok(conn)) => {
                *self.conn.lock() = Some(conn.clone());
                Ok((conn, true))
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer".into()),
        }
    }

    /// Runs one command with [`COMMAND_TIMEOUT`]; an error drops the
    /// connection so the next call makes a new one.
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, String> {
        self.query_within(cmd, COMMAND_TIMEOUT).await
    }

    /// [`RedisLink::query`] with its own timeout. A connection kept from
    /// before Redis restarted fails on first use: that one failure is
    /// retried at once on a new connection.
    pub async fn query_within<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
        timeout: Duration,
    ) -> Result<T, String> {
        loop {
            let (mut conn, fresh) = self.connection().await?;
            match tokio::time::timeout(timeout, cmd.query_async::<T>(&mut conn)).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => {
                    // A script or type error is an answer: the connection is fine.
                    if !(e.is_io_error() || e.is_connection_dropped() || e.is_timeout()) {
                        return Err(e.to_string());
                    }
                    *self.conn.lock() = None;
                    if fresh {
                        return Err(e.to_string());
                    }
                }
                Err(_) => {
                    *self.conn.lock() = None;
                    return Err("timeout".into());
                }
            }
        }
    }
}

/// Tracks one feature's Redis outage: the first failure logs a warning, the
/// first success after it logs the recovery, every decision made without
/// Redis is counted.
pub struct Outage {
    /// What falls back, in words for the log.
    what: &'static str,
    /// The same as a metric label.
    label: &'static str,
    down: AtomicBool,
}

impl Outage {
    pub const fn new(what: &'static str, label: &'static str) -> Self {
        Self {
            what,
            label,
            down: AtomicBool::new(false),
        }
    }

    /// A decision was made per replica because Redis did not answer.
    pub fn fell_back(&self, metrics: &crate::metrics::Metrics, error: &str) {
        metrics.shared_state_fallback(self.label);
        if !self.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                what = self.what,
                %error,
                "Redis is unreachable: {} per replica until it answers",
                self.what
            );
        }
    }

    /// Redis answered.
    pub fn answered(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            tracing::info!(
                what = self.what,
                "Redis answers again: {} shared between replicas again",
                self.what
            );
        }
    }
}
