//! Several replicas, one gateway: what one replica changes reaches the
//! others through Redis pub/sub, on one channel per deployment
//! (`{META_MCP_REDIS_PREFIX}:changes`).
//!
//! The database stays the source of truth. A message only says *what* to
//! read again ("tenant acme's servers changed", "token X was revoked");
//! the receiver reloads that state from the database, starts, stops or
//! restarts its own upstream connections, and rebuilds its catalog (whose
//! change reaches its MCP clients as `list_changed`). Each message carries
//! the sender's replica id, so a replica ignores its own.
//!
//! Pub/sub delivers to whoever is subscribed at that moment and keeps
//! nothing: a replica whose subscription dropped may have missed messages.
//! So each (re)subscription is followed by a full reload before the replica
//! counts itself in sync ([`Bus::hears_everything`]); until then, and
//! whenever Redis is down, the security checks that would otherwise trust
//! in-memory state ask the database (see `auth`), so nothing fails open.
//!
//! Security changes (revocations, disabled users, revoked API keys, roles
//! and grants) are acknowledged by every replica that applied them, and the
//! change's request waits for those acknowledgements (up to
//! [`ACK_TIMEOUT`]): when a logout returns, every replica in sync already
//! refuses the token. The cost is on the rare write, not on the hot path of
//! every request, which stays an in-memory lookup.

mod follow;
pub mod link;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};

pub use follow::{reconcile_servers, spawn};
pub use link::RedisLink;

use crate::{metrics::Metrics, store::Backend};

/// How long a security change waits for the other replicas' acknowledgements.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long publishing a change may take (off the hot path: a loaded
/// Redis gets more time than a rate-limit check does).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// A change that could not be published is tried again after these
/// delays; the database has it meanwhile.
const REPUBLISH_DELAYS: [u64; 6] = [250, 500, 1000, 2000, 4000, 8000];

/// What changed, for the other replicas to reload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// A tenant's stored servers changed (created, updated, removed):
    /// compare them with the running ones and start, stop or restart.
    Servers { tenant: String },
    /// A server was restarted by an operator: restart its connection here too.
    Restart { tenant: String, server: String },
    /// Tool metadata, tools registered by hand, profiles or pins of a
    /// tenant changed: rebuild its catalog.
    Catalog { tenant: String },
    /// Roles, grants or tenants changed.
    Policy,
    /// A user changed (disabled, password, roles): forget the cached row.
    User { id: String },
    /// An API key was revoked.
    ApiKey { id: String },
    /// An access token was revoked (logout); `expires_at` in Unix seconds.
    Revoked { jti: String, expires_at: i64 },
}

impl Change {
    /// Changes that take rights away: their sender waits until the other
    /// replicas have applied them.
    fn is_security(&self) -> bool {
        matches!(
            self,
            Self::Policy | Self::User { .. } | Self::ApiKey { .. } | Self::Revoked { .. }
        )
    }
}

/// What travels on the channel.
#[derive(Debug, Serialize, Deserialize)]
struct Message {
    /// The sending replica.
    from: String,
    /// Set on a change: its id, which acknowledgements name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    change: Option<Change>,
    /// Set on an acknowledgement: the id of the change applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ack: Option<String>,
}

/// Tries a change that could not be published again, in the background:
/// replicas whose subscription stayed up (only this replica lost Redis, or
/// Redis was slow) would otherwise never hear it. Replicas whose
/// subscription dropped reload everything anyway when they resubscribe.
fn republish(redis: Arc<RedisLink>, publish: redis::Cmd) {
    tokio::spawn(async move {
        for delay in REPUBLISH_DELAYS {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            if redis
                .query_within::<i64>(&publish, PUBLISH_TIMEOUT)
                .await
                .is_ok()
            {
                tracing::info!("change announced to the other replicas after a retry");
                return;
            }
        }
        tracing::warn!(
            "a change could not be announced to the other replicas; they see it when they reload (at reconnect)"
        );
    });
}

/// Acknowledgements received for one change.
#[derive(Default)]
struct AckWait {
    count: AtomicUsize,
    notify: tokio::sync::Notify,
}

/// This replica's end of the channel, shared by everything that announces
/// changes or needs to know whether it hears the others.
pub struct Bus {
    replica: String,
    prefix: String,
    channel: String,
    redis: Option<Arc<RedisLink>>,
    /// Whether other processes may share the database (PostgreSQL). With
    /// SQLite and no Redis this process is the only writer, so what it holds
    /// in memory is complete.
    shared_db: bool,
    /// Subscribed to the channel right now.
    subscribed: AtomicBool,
    /// Subscribed, and fully reloaded since subscribing: no change can have
    /// been missed.
    in_sync: AtomicBool,
    waiting: parking_lot::Mutex<HashMap<String, Arc<AckWait>>>,
    metrics: Arc<Metrics>,
}

impl Bus {
    /// The bus of a deployment: with `redis_url`, shared through Redis;
    /// without, local to this process.
    pub fn new(
        redis_url: Option<&str>,
        prefix: &str,
        backend: Backend,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let redis = redis_url
            .map(|url| {
                redis::Client::open(url)
                    .map(|client| Arc::new(RedisLink::new(client)))
                    .map_err(|e| format!("not a Redis URL: {e}"))
            })
            .transpose()?;
        let replica = uuid::Uuid::new_v4().simple().to_string();
        if redis.is_none() && backend == Backend::Postgres {
            tracing::warn!(
                "PostgreSQL without META_MCP_REDIS_URL: other replicas' changes are not announced, \
                 so revocations are checked against the database on every request; set \
                 META_MCP_REDIS_URL when running several replicas"
            );
        }
        Ok(Self {
            channel: format!("{prefix}:changes"),
            prefix: prefix.to_owned(),
            replica,
            redis,
            shared_db: backend == Backend::Postgres,
            subscribed: AtomicBool::new(false),
            in_sync: AtomicBool::new(false),
            waiting: Default::default(),
            metrics,
        })
    }

    /// A bus for a process on its own (SQLite, no Redis): tests and tools.
    pub fn standalone(backend: Backend, metrics: Arc<Metrics>) -> Self {
        Self {
            channel: String::new(),
            prefix: "metamcp".into(),
            replica: uuid::Uuid::new_v4().simple().to_string(),
            redis: None,
            shared_db: backend == Backend::Postgres,
            subscribed: AtomicBool::new(false),
            in_sync: AtomicBool::new(false),
            waiting: Default::default(),
            metrics,
        }
    }

    /// This replica's id (random per process).
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// The Redis command connection, when Redis is configured.
    pub fn redis(&self) -> Option<&RedisLink> {
        self.redis.as_deref()
    }

    /// A Redis key of this deployment.
    pub fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.prefix)
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whether this process is sure to know every change made anywhere:
    /// it is alone on its database, or its subscription is up and it has
    /// reloaded since it came up. When false, security checks must ask
    /// the database.
    pub fn hears_everything(&self) -> bool {
        !self.shared_db || self.in_sync.load(Ordering::Acquire)
    }

    /// For health: `None` without Redis, else whether in sync.
    pub fn status(&self) -> Option<&'static str> {
        self.redis.as_ref().map(|_| {
            if self.in_sync.load(Ordering::Acquire) {
                "in_sync"
            } else if self.subscribed.load(Ordering::Acquire) {
                "reloading"
            } else {
                "disconnected"
            }
        })
    }

    fn set_subscribed(&self, up: bool) {
        self.subscribed.store(up, Ordering::Release);
        if !up {
            self.set_in_sync(false);
        }
    }

    fn set_in_sync(&self, up: bool) {
        self.in_sync.store(up, Ordering::Release);
        self.metrics.set_cluster_in_sync(up);
    }

    /// Tells the other replicas about a change made here (after it is in
    /// the database). Security changes wait for their acknowledgements.
    /// Never fails the caller's request: the change is durable already,
    /// and a replica that misses it reloads everything when it reconnects.
    pub async fn announce(&self, change: Change) {
        let Some(redis) = &self.redis else { return };
        let id = uuid::Uuid::new_v4().simple().to_string();
        let security = change.is_security();
        let payload = match serde_json::to_string(&Message {
            from: self.replica.clone(),
            id: Some(id.clone()),
            change: Some(change),
            ack: None,
        }) {
            Ok(p) => p,
            Err(_) => return,
        };
        // Registered before publishing: acknowledgements may arrive before
        // PUBLISH returns.
        let wait = security.then(|| {
            let wait = Arc::new(AckWait::default());
            self.waiting.lock().insert(id.clone(), wait.clone());
            wait
        });
        let publish = redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(&payload)
            .to_owned();
        let published = redis.query_within::<i64>(&publish, PUBLISH_TIMEOUT).await;
        match (published, wait) {
            (Err(error), _) => {
                tracing::warn!(%error, "could not announce a change to the other replicas yet; trying again in the background");
                republish(redis.clone(), publish);
            }
            (Ok(receivers), Some(wait)) => {
                // PUBLISH counts every subscriber that received it: this
                // replica's own subscription among them when it is up. We
                // only hear acknowledgements through that subscription.
                let me = usize::from(self.subscribed.load(Ordering::Acquire));
                let expected = (receivers.max(0) as usize).saturating_sub(me);
                if me == 1 && expected > 0 {
                    let waited = tokio::time::timeout(ACK_TIMEOUT, async {
                        loop {
                            let notified = wait.notify.notified();
                            if wait.count.load(Ordering::Acquire) >= expected {
                                break;
                            }
                            notified.await;
                        }
                    })
                    .await;
                    if waited.is_err() {
                        tracing::warn!(
                            expected,
                            acknowledged = wait.count.load(Ordering::Acquire),
                            "not every replica acknowledged a security change within {ACK_TIMEOUT:?}"
                        );
                    }
                }
            }
            (Ok(_), None) => {}
        }
        self.waiting.lock().remove(&id);
    }

    fn acknowledged(&self, of: &str) {
        if let Some(wait) = self.waiting.lock().get(of) {
            wait.count.fetch_add(1, Ordering::AcqRel);
            wait.notify.notify_waiters();
        }
    }

    /// Acknowledges a change applied here, off the receiving loop.
    fn send_ack(self: &Arc<Self>, of: String) {
        let bus = self.clone();
        tokio::spawn(async move {
            let Some(redis) = &bus.redis else { return };
            let Ok(payload) = serde_json::to_string(&Message {
                from: bus.replica.clone(),
                id: None,
                change: None,
                ack: Some(of),
            }) else {
                return;
            };
            if let Err(error) = redis
                .query::<i64>(redis::cmd("PUBLISH").arg(&bus.channel).arg(payload))
                .await
            {
                tracing::debug!(%error, "acknowledgement not sent");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_unknown_kinds_are_refused() {
        let message = Message {
            from: "r1".into(),
            id: Some("m1".into()),
            change: Some(Change::Revoked {
                jti: "j".into(),
                expires_at: 42,
            }),
            ack: None,
        };
        let text = serde_json::to_string(&message).unwrap();
        let back: Message = serde_json::from_str(&text).unwrap();
        assert_eq!(back.change, message.change);
        assert!(
            serde_json::from_str::<Message>(r#"{"from":"x","change":{"kind":"nope"}}"#).is_err()
        );
        assert!(Change::Policy.is_security());
        assert!(!Change::Servers { tenant: "t".into() }.is_security());
    }

    #[test]
    fn only_a_lone_sqlite_process_trusts_its_memory_without_redis() {
        let metrics = Arc::new(Metrics::new());
        assert!(Bus::standalone(Backend::Sqlite, metrics.clone()).hears_everything());
        assert!(!Bus::standalone(Backend::Postgres, metrics.clone()).hears_everything());
        let with_redis =
            Bus::new(Some("redis://127.0.0.1:1"), "p", Backend::Postgres, metrics).unwrap();
        // Not subscribed yet: not in sync.
        assert!(!with_redis.hears_everything());
        assert_eq!(with_redis.key("rl:x"), "p:rl:x");
    }
}
