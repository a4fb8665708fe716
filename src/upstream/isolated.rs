//! Isolated connections: for a server whose state or credentials belong to
//! one client (`"isolation": "session"` or `"principal"`), each downstream
//! session or principal gets a connection (a stdio process) of its own.
//!
//! - The server's supervised connection stays: it is the template that
//!   lists the catalog, answers health probes and carries resource
//!   subscriptions. Callers' requests never go to it, so no caller sees
//!   state another caller left there.
//! - An isolated connection is opened on its key's first request, and
//!   closed when its session ends ([`Pool::close`]), when it has been unused
//!   for the server's idle timeout, when the server is stopped, or when the
//!   upstream ends it. It is not reconnected: the next request opens a new
//!   one (the state it held is gone either way).
//! - At most `max_connections` are open per server; one more key is
//!   refused at once ([`UpstreamError::Exhausted`]), never queued.

use std::{
    collections::HashMap,
    sync::{
        Arc, Weak,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use tokio::sync::{Notify, OnceCell};
use tokio_util::sync::CancellationToken;

use super::{
    Connection, Origin, Running, Upstream, UpstreamError, client::UpstreamClient, relay::Relays,
    stdio,
};

/// Whose requests a request belongs to, which picks its connection on an
/// isolated server. Shared servers ignore it.
#[derive(Debug, Clone)]
pub struct Affinity {
    /// The legacy MCP session the request came in; `None` for 2026-07-28
    /// requests (that era has no sessions), REST and the CLI.
    pub session: Option<Origin>,
    /// The principal: tenant and user id.
    pub principal: Arc<str>,
}

impl Affinity {
    /// The key of the connection this request uses on a server isolated
    /// `by` session or principal. A request without a session on a
    /// session-isolated server uses its principal's connection: that is
    /// the finest identity it has.
    fn key(&self, by: super::spec::Isolation) -> Key {
        match (by, self.session) {
            (super::spec::Isolation::Session, Some(session)) => Key::Session(session),
            _ => Key::Principal(self.principal.clone()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Session(Origin),
    Principal(Arc<str>),
}

/// One isolated connection, or its opening.
struct Slot {
    conn: OnceCell<Arc<Connection>>,
    /// Ends the connection (session end, server stop).
    stop: CancellationToken,
    /// Requests using it now: it is never idle while one runs.
    busy: AtomicUsize,
    last_used: Mutex<Instant>,
}

/// Marks a slot busy for as long as a request holds it.
pub struct InUse(Arc<Slot>);

impl Drop for InUse {
    fn drop(&mut self) {
        *self.0.last_used.lock() = Instant::now();
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The isolated connections of one server.
#[derive(Default)]
pub struct Pool {
    slots: Mutex<HashMap<Key, Arc<Slot>>>,
    /// Woken whenever a connection is gone, for [`Pool::close_all`].
    gone: Notify,
}

impl Pool {
    /// Open connections (and ones being opened).
    pub fn count(&self) -> usize {
        self.slots.lock().len()
    }

    /// Ends the connection of a legacy session, if it has one.
    pub fn close(&self, session: Origin) {
        if let Some(slot) = self.slots.lock().get(&Key::Session(session)) {
            slot.stop.cancel();
        }
    }

    /// Ends every connection and waits (up to `within`) until they are gone.
    pub async fn close_all(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let gone = self.gone.notified();
            {
                let slots = self.slots.lock();
                if slots.is_empty() {
                    return;
                }
                for slot in slots.values() {
                    slot.stop.cancel();
                }
            }
            if tokio::time::timeout_at(deadline, gone).await.is_err() {
                return;
            }
        }
    }

    fn forget(&self, key: &Key, slot: &Arc<Slot>) {
        let mut slots = self.slots.lock();
        if slots.get(key).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            slots.remove(key);
        }
        drop(slots);
        self.gone.notify_waiters();
    }
}

impl Upstream {
    /// The connection `affinity` uses on this isolated server, opened now if
    /// it has none; held busy until the returned guard is dropped.
    pub(super) async fn isolated(
        &self,
        affinity: &Affinity,
    ) -> Result<(Arc<Connection>, InUse), UpstreamError> {
        let key = affinity.key(self.spec.isolation);
        let slot = {
            let mut slots = self.pool.slots.lock();
            let slot = match slots.get(&key) {
                // A connection that is closing is replaced, not reused.
                Some(slot) if !slot.stop.is_cancelled() => slot.clone(),
                _ => {
                    let limit = self.spec.connection_limit();
                    if slots.len() >= limit {
                        return Err(UpstreamError::Exhausted {
                            server: self.spec.name.clone(),
                            limit,
                        });
                    }
                    let slot = Arc::new(Slot {
                        conn: OnceCell::new(),
                        stop: self.stop.child_token(),
                        busy: AtomicUsize::new(0),
                        last_used: Mutex::new(Instant::now()),
                    });
                    slots.insert(key.clone(), slot.clone());
                    slot
                }
            };
            // Marked busy under the lock the idle check takes too: a slot
            // is either closed before this request finds it (and replaced
            // above), or kept open for it.
            slot.busy.fetch_add(1, Ordering::AcqRel);
            slot
        };
        let in_use = InUse(slot.clone());
        match slot
            .conn
            .get_or_try_init(|| self.open_isolated(&key, &slot))
            .await
        {
            Ok(conn) => Ok((conn.clone(), in_use)),
            Err(error) => {
                // Nothing is open under this key: the next request tries
                // afresh rather than finding a dead slot.
                self.pool.forget(&key, &slot);
                Err(error)
            }
        }
    }

    async fn open_isolated(
        &self,
        key: &Key,
        slot: &Arc<Slot>,
    ) -> Result<Arc<Connection>, UpstreamError> {
        if slot.stop.is_cancelled() {
            return Err(self.closed_unavailable());
        }
        let cx = &self.cx;
        // List changes are learnt on the template connection; an isolated
        // one's are the same server's and need no second re-sync.
        let resync = Arc::new(Notify::new());
        let handler = UpstreamClient {
            server: Arc::from(self.spec.name.as_str()),
            resync: resync.clone(),
            watches: self.watches.clone(),
            relays: Relays::default(),
        };
        let relays = handler.relays.clone();
        let connected = tokio::select! {
            r = tokio::time::timeout(cx.connect_timeout, super::connect(self, cx, handler, relays.clone())) => match r {
                Ok(r) => r,
                Err(_) => Err((format!("no answer within {:?}", cx.connect_timeout), None)),
            },
            _ = slot.stop.cancelled() => return Err(self.closed_unavailable()),
        };
        let (running, pgid) = match connected {
            Ok(ok) => ok,
            Err((error, pgid)) => {
                if let Some(pgid) = pgid {
                    stdio::kill_group(pgid, Duration::from_secs(2)).await;
                }
                let error = self.spec.scrub(&error);
                tracing::warn!(server = %self.spec.name, %error, "isolated connection failed");
                return Err(UpstreamError::Unavailable {
                    server: self.spec.name.clone(),
                    reason: format!("isolated connection failed: {error}"),
                });
            }
        };
        let conn = Arc::new(Connection::new(running.peer().clone(), relays, resync));
        tracing::info!(server = %self.spec.name, open = self.pool.count(), "isolated connection opened");
        tokio::spawn(own(
            running,
            pgid,
            slot.clone(),
            Arc::downgrade(&self.pool),
            key.clone(),
            self.spec.name.clone(),
            self.spec.idle_timeout(),
        ));
        Ok(conn)
    }

    fn closed_unavailable(&self) -> UpstreamError {
        UpstreamError::Unavailable {
            server: self.spec.name.clone(),
            reason: "the session's connection was closed".into(),
        }
    }
}

/// Owns one isolated connection until it ends: its session ended, it sat
/// idle too long, the server was stopped, or the upstream closed it.
async fn own(
    running: Running,
    pgid: Option<i32>,
    slot: Arc<Slot>,
    pool: Weak<Pool>,
    key: Key,
    server: String,
    idle: Duration,
) {
    let stop_service = running.cancellation_token();
    let waiting = running.waiting();
    tokio::pin!(waiting);
    // Idleness is checked a few times per timeout: a connection lives at
    // most a quarter longer than its idle timeout.
    let mut tick = tokio::time::interval((idle / 4).max(Duration::from_millis(50)));
    tick.tick().await;
    let why = loop {
        tokio::select! {
            _ = &mut waiting => break "closed by the server",
            _ = slot.stop.cancelled() => break "session ended or server stopped",
            _ = tick.tick() => {
                let Some(pool) = pool.upgrade() else { break "server removed" };
                let _slots = pool.slots.lock();
                let unused = slot.last_used.lock().elapsed();
                if slot.busy.load(Ordering::Acquire) == 0 && unused >= idle {
                    // Under the pool's lock: no request can take it now.
                    slot.stop.cancel();
                    break "idle";
                }
            }
        }
    };
    // New requests open a new connection rather than use this one.
    slot.stop.cancel();
    stop_service.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), &mut waiting).await;
    if let Some(pgid) = pgid {
        stdio::kill_group(pgid, Duration::from_secs(2)).await;
    }
    tracing::info!(server = %server, why, "isolated connection closed");
    // Forgotten only now, so the limit counts it until its process is gone.
    if let Some(pool) = pool.upgrade() {
        pool.forget(&key, &slot);
    }
}
