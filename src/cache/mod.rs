//! The result cache of cacheable tools: in memory (size-bounded, with TTLs),
//! or in Redis when `META_MCP_REDIS_URL` is set, with the memory cache as the
//! fallback while Redis is unreachable (said in the log and in health), and
//! Redis used again as soon as it answers.
//!
//! Keys hold the tenant and the caller's authorization context, so no
//! cached result crosses an access boundary, and a generation number that
//! every catalog change bumps, so a change invalidates everything cached
//! before it. With Redis the generation lives in Redis too
//! (`PREFIX:cache-generation`): every replica reads it together with the
//! entry (one script, one round trip) and bumps it on each catalog change it
//! applies, so replicas share entries while their catalogs agree, and none
//! reads an entry written under an older catalog.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use redis::aio::MultiplexedConnection;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::auth::Principal;

/// How long a Redis command may take before Redis counts as unreachable.
const REDIS_TIMEOUT: Duration = Duration::from_millis(300);
/// How often an unreachable Redis is tried again.
const REDIS_RETRY: Duration = Duration::from_secs(1);

#[derive(Clone)]
struct Entry {
    json: Arc<str>,
    expires: Instant,
}

struct RedisBackend {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    up: AtomicBool,
    last_attempt: parking_lot::Mutex<Option<Instant>>,
}

impl RedisBackend {
    /// A connection, or `None` while Redis is unreachable.
    async fn connection(&self) -> Option<MultiplexedConnection> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Some(conn.clone());
        }
        {
            let mut last = self.last_attempt.lock();
            if last.is_some_and(|t| t.elapsed() < REDIS_RETRY) {
                return None;
            }
            *last = Some(Instant::now());
        }
        match tokio::time::timeout(
            REDIS_TIMEOUT * 3,
            self.client.get_multiplexed_async_connection(),
        )
        .await
        {
            Ok(Ok(conn)) => {
                if !self.up.swap(true, Ordering::AcqRel) {
                    tracing::info!("Redis is reachable: caching results in Redis");
                }
                *slot = Some(conn.clone());
                Some(conn)
            }
            Ok(Err(e)) => {
                self.down(&e.to_string());
                None
            }
            Err(_) => {
                self.down("no answer");
                None
            }
        }
    }

    fn down(&self, why: &str) {
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                error = why,
                "Redis is unreachable: caching results in memory until it answers"
            );
        }
    }

    async fn forget_connection(&self, why: &str) {
        *self.conn.lock().await = None;
        *self.last_attempt.lock() = Some(Instant::now());
        self.down(why);
    }

    /// The entry of `key` under the current shared generation, and the key
    /// that generation gives it (where a fresh result goes).
    async fn get(&self, generation_key: &str, key: &str) -> Result<(Option<String>, String), ()> {
        let mut conn = self.connection().await.ok_or(())?;
        // One round trip: the generation and the entry under it.
        const SCRIPT: &str = "local g = redis.call('GET', KEYS[1]) or '0' \
             local k = ARGV[1] .. ':' .. g \
             return {k, redis.call('GET', k) or false}";
        let cmd = redis::cmd("EVAL")
            .arg(SCRIPT)
            .arg(1)
            .arg(generation_key)
            .arg(key)
            .to_owned();
        let call = cmd.query_async::<(String, Option<String>)>(&mut conn);
        match tokio::time::timeout(REDIS_TIMEOUT, call).await {
            Ok(Ok((slot, found))) => Ok((found, slot)),
            Ok(Err(e)) => {
                self.forget_connection(&e.to_string()).await;
                Err(())
            }
            Err(_) => {
                self.forget_connection("timeout").await;
                Err(())
            }
        }
    }

    /// Bumps the shared generation: entries written before are not read again.
    async fn bump(&self, generation_key: &str) -> Result<(), ()> {
        let mut conn = self.connection().await.ok_or(())?;
        let cmd = redis::cmd("INCR").arg(generation_key).to_owned();
        match tokio::time::timeout(REDIS_TIMEOUT, cmd.query_async::<i64>(&mut conn)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                self.forget_connection(&e.to_string()).await;
                Err(())
            }
            Err(_) => {
                self.forget_connection("timeout").await;
                Err(())
            }
        }
    }

    async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), ()> {
        let mut conn = self.connection().await.ok_or(())?;
        let cmd = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .to_owned();
        match tokio::time::timeout(REDIS_TIMEOUT, cmd.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.forget_connection(&e.to_string()).await;
                Err(())
            }
            Err(_) => {
                self.forget_connection("timeout").await;
                Err(())
            }
        }
    }
}

/// A small in-memory cache of derived answers (tool lists, search results)
/// per authorization context. Keys must hold the catalog generation, the
/// tenant and the caller's authorization context.
pub struct AnswerCache<V: Clone + Send + Sync + 'static> {
    entries: moka::sync::Cache<String, V>,
}

impl<V: Clone + Send + Sync + 'static> AnswerCache<V> {
    pub fn new(max_entries: u64, ttl: Duration) -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(ttl)
                .build(),
        }
    }

    pub fn get(&self, key: &str) -> Option<V> {
        self.entries.get(key)
    }

    pub fn put(&self, key: String, value: V) {
        self.entries.insert(key, value);
    }
}

/// The authorization context part of a cache key.
pub fn context_key(principal: &Principal) -> String {
    let mut roles: Vec<&str> = principal.roles.iter().map(String::as_str).collect();
    roles.sort_unstable();
    let mut scopes: Vec<&str> = principal.scopes.iter().map(String::as_str).collect();
    scopes.sort_unstable();
    // Everything visibility depends on: who, with which rights, under
    // which version of the roles and grants.
    format!(
        "{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{:?}\u{1f}{}\u{1f}{}",
        principal.tenant_id,
        principal.user_id,
        roles.join(","),
        scopes.join(","),
        principal.permissions,
        principal.clearance,
        principal.policy_epoch
    )
}

/// Cache counters and state, for health and metrics.
#[derive(Debug, Serialize)]
pub struct CacheStatus {
    pub backend: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<&'static str>,
    pub hits: u64,
    pub misses: u64,
    pub memory_entries: u64,
}

/// Where a result found missing by `lookup` is to be stored.
pub enum CacheSlot {
    Redis(String),
    Memory(String),
}

/// The cache of tool results.
pub struct ResultCache {
    memory: moka::future::Cache<String, Entry>,
    redis: Option<Arc<RedisBackend>>,
    /// Start of every key: the deployment's `META_MCP_REDIS_PREFIX`.
    key_prefix: String,
    generation: AtomicU64,
    max_ttl: Duration,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl ResultCache {
    /// `redis_url` is checked here; the connection is made on first use.
    pub fn new(
        max_entries: u64,
        max_ttl: Duration,
        redis_url: Option<&str>,
    ) -> Result<Self, String> {
        let redis = match redis_url {
            Some(url) => Some(Arc::new(RedisBackend {
                client: redis::Client::open(url).map_err(|e| format!("not a Redis URL: {e}"))?,
                conn: tokio::sync::Mutex::new(None),
                up: AtomicBool::new(true),
                last_attempt: parking_lot::Mutex::new(None),
            })),
            None => None,
        };
        Ok(Self {
            memory: moka::future::Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(max_ttl)
                .build(),
            redis,
            key_prefix: "metamcp".into(),
            generation: AtomicU64::new(0),
            max_ttl,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// Keys start with `prefix` (deployments sharing a Redis never meet).
    pub fn with_key_prefix(mut self, prefix: &str) -> Self {
        prefix.clone_into(&mut self.key_prefix);
        self
    }

    /// The current catalog generation (bumped by every catalog change).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Makes everything cached so far unreachable (the catalog changed):
    /// in this process at once, in Redis as soon as it answers (a replica
    /// applying the same change bumps the shared generation again, which
    /// only makes it move further).
    pub fn invalidate_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.memory.invalidate_all();
        if let Some(redis) = &self.redis
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (redis, key) = (redis.clone(), self.generation_key());
            runtime.spawn(async move {
                if redis.bump(&key).await.is_err() {
                    tracing::debug!("cache generation not bumped in Redis: it is unreachable");
                }
            });
        }
    }

    fn generation_key(&self) -> String {
        format!("{}:cache-generation", self.key_prefix)
    }

    /// The key of one call: tenant, the caller's authorization context, the
    /// tool's identity and the canonical arguments (`lookup` adds the
    /// generation).
    pub fn key(&self, principal: &Principal, tool_identity: &str, arguments: &Value) -> String {
        let mut roles: Vec<&str> = principal.roles.iter().map(String::as_str).collect();
        roles.sort_unstable();
        let mut scopes: Vec<&str> = principal.scopes.iter().map(String::as_str).collect();
        scopes.sort_unstable();
        let context = serde_json::json!({
            "tenant": &*principal.tenant_id,
            "user": &*principal.user_id,
            "roles": roles,
            "scopes": scopes,
            "tool": tool_identity,
            "arguments": crate::catalog::pins::canonical_json(arguments),
        });
        let digest = Sha256::digest(context.to_string().as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}:result:{hex}", self.key_prefix)
    }

    /// The cached result of `key`, and the slot a fresh result for it goes
    /// to (under the generation this lookup saw).
    pub async fn lookup(&self, key: &str) -> (Option<Arc<str>>, CacheSlot) {
        let local = || format!("{}:{key}", self.generation.load(Ordering::Acquire));
        let (found, slot) = match &self.redis {
            Some(redis) => match redis.get(&self.generation_key(), key).await {
                Ok((found, slot)) => (found.map(Arc::from), CacheSlot::Redis(slot)),
                Err(()) => {
                    let slot = local();
                    (self.memory_get(&slot).await, CacheSlot::Memory(slot))
                }
            },
            None => {
                let slot = local();
                (self.memory_get(&slot).await, CacheSlot::Memory(slot))
            }
        };
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        (found, slot)
    }

    async fn memory_get(&self, key: &str) -> Option<Arc<str>> {
        let entry = self.memory.get(key).await?;
        if entry.expires <= Instant::now() {
            self.memory.invalidate(key).await;
            return None;
        }
        Some(entry.json)
    }

    pub async fn put(&self, slot: CacheSlot, json: String, ttl: Duration) {
        let ttl = ttl.min(self.max_ttl);
        let key = match slot {
            CacheSlot::Redis(key) => match &self.redis {
                Some(redis) if redis.set(&key, &json, ttl).await.is_ok() => return,
                // Redis went away since the lookup: memory, under this
                // process's generation.
                _ => format!("{}:{key}", self.generation.load(Ordering::Acquire)),
            },
            CacheSlot::Memory(key) => key,
        };
        self.memory
            .insert(
                key,
                Entry {
                    json: Arc::from(json),
                    expires: Instant::now() + ttl,
                },
            )
            .await;
    }

    pub fn status(&self) -> CacheStatus {
        let redis_up = self.redis.as_ref().map(|r| r.up.load(Ordering::Acquire));
        CacheStatus {
            backend: match redis_up {
                Some(true) => "redis",
                _ => "memory",
            },
            redis: redis_up.map(|up| if up { "up" } else { "down" }),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            memory_entries: self.memory.entry_count(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(user: &str, tenant: &str, roles: &[&str]) -> Principal {
        Principal {
            user_id: Arc::from(user),
            tenant_id: Arc::from(tenant),
            roles: Arc::from(roles.iter().map(|r| r.to_string()).collect::<Vec<_>>()),
            ..Principal::nobody()
        }
    }

    #[tokio::test]
    async fn keys_never_cross_callers_tenants_or_catalog_generations() {
        let cache = ResultCache::new(100, Duration::from_secs(60), None).unwrap();
        let args = serde_json::json!({"b": 1, "a": [1, 2]});
        let same_args_other_order = serde_json::json!({"a": [1, 2], "b": 1});
        let alice = principal("alice", "t1", &["user", "admin"]);
        let k = cache.key(&alice, "srv/tool", &args);
        assert_eq!(
            k,
            cache.key(
                &principal("alice", "t1", &["admin", "user"]),
                "srv/tool",
                &same_args_other_order
            )
        );
        assert_ne!(
            k,
            cache.key(
                &principal("bob", "t1", &["user", "admin"]),
                "srv/tool",
                &args
            )
        );
        assert_ne!(
            k,
            cache.key(
                &principal("alice", "t2", &["user", "admin"]),
                "srv/tool",
                &args
            )
        );
        assert_ne!(
            k,
            cache.key(&principal("alice", "t1", &["user"]), "srv/tool", &args)
        );
        assert_ne!(k, cache.key(&alice, "srv/other", &args));
        let (found, slot) = cache.lookup(&k).await;
        assert!(found.is_none());
        cache.put(slot, "{}".into(), Duration::from_secs(60)).await;
        assert!(cache.lookup(&k).await.0.is_some());
        cache.invalidate_all();
        assert!(
            cache
                .lookup(&cache.key(&alice, "srv/tool", &args))
                .await
                .0
                .is_none()
        );
    }

    #[tokio::test]
    async fn entries_expire_after_their_own_ttl() {
        let cache = ResultCache::new(100, Duration::from_secs(60), None).unwrap();
        let (_, slot) = cache.lookup("k").await;
        cache
            .put(slot, "{}".into(), Duration::from_millis(30))
            .await;
        assert!(cache.lookup("k").await.0.is_some());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(cache.lookup("k").await.0.is_none());
    }
}
