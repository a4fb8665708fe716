//! The receiving end: one task per replica holds the subscription,
//! reconnects with backoff when Redis drops, reloads everything after each
//! (re)subscription (it may have missed messages), and applies what the
//! other replicas announce.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use futures::StreamExt;
use tokio::sync::mpsc;

use super::{Bus, Change, Message};
use crate::{
    app::AppState,
    store::StoreError,
    upstream::spec::{ServerSpec, Source},
};

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A subscription that looks open may be dead (a half-open TCP connection
/// after a network fault): a ping that gets no answer ends it.
const PING_EVERY: Duration = Duration::from_secs(5);
const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// Revocations are read from the database again this often even while in
/// sync: a safety net for a message lost in a way nobody noticed (a
/// replica cut off from Redis while the others still reach it).
const SAFETY_NET: Duration = Duration::from_secs(60);

/// Starts following the other replicas (nothing to do without Redis).
pub fn spawn(state: Arc<AppState>) {
    let Some(redis) = state.cluster.redis() else {
        return;
    };
    let client = redis.client().clone();
    // Servers and catalogs take a while to apply (stopping a process,
    // rebuilding a catalog): a worker applies them in order, so the loop
    // keeps reading and security changes are applied and acknowledged at
    // once.
    let (slow, queue) = mpsc::unbounded_channel();
    tokio::spawn(apply_slow(state.clone(), queue));
    tokio::spawn(follow(state, client, slow));
}

async fn follow(state: Arc<AppState>, client: redis::Client, slow: mpsc::UnboundedSender<Change>) {
    let bus = state.cluster.clone();
    let mut backoff = BACKOFF_MIN;
    let mut in_outage = false;
    loop {
        match subscribe(&client, &bus.channel).await {
            Ok(pubsub) => {
                let (mut sink, mut stream) = pubsub.split();
                bus.set_subscribed(true);
                // Changes announced from now on wait in the stream and are
                // applied after the reload: none falls between the two.
                if let Err(error) = resync(&state).await {
                    tracing::error!(%error, "reload after subscribing failed; retrying");
                    bus.set_subscribed(false);
                } else {
                    bus.set_in_sync(true);
                    backoff = BACKOFF_MIN;
                    if in_outage {
                        tracing::info!(
                            "subscribed to the other replicas' changes again; state reloaded"
                        );
                    } else {
                        tracing::info!(replica = %bus.replica, channel = %bus.channel, "subscribed to the other replicas' changes");
                    }
                    let mut ping = tokio::time::interval(PING_EVERY);
                    ping.tick().await;
                    let mut safety = tokio::time::interval(SAFETY_NET);
                    safety.tick().await;
                    let why = loop {
                        tokio::select! {
                            message = stream.next() => match message {
                                None => break "the connection closed".to_owned(),
                                Some(message) => {
                                    if let Err(error) = handle(&state, &slow, message.get_payload_bytes()).await {
                                        break format!("a change could not be applied: {error}");
                                    }
                                }
                            },
                            _ = ping.tick() => {
                                let answer = tokio::time::timeout(PING_TIMEOUT, sink.ping::<redis::Value>()).await;
                                if !matches!(answer, Ok(Ok(_))) {
                                    break "no answer to a ping".to_owned();
                                }
                            }
                            _ = safety.tick() => {
                                if let Err(error) = state.identity.reload_revocations().await {
                                    tracing::warn!(%error, "periodic reload of revocations failed");
                                }
                            }
                            _ = state.shutdown.cancelled() => return,
                        }
                    };
                    bus.set_subscribed(false);
                    tracing::warn!(
                        reason = %why,
                        "lost the subscription to the other replicas' changes: checking revocations against the database until it is back"
                    );
                    in_outage = true;
                }
            }
            Err(error) => {
                if !in_outage {
                    tracing::warn!(
                        %error,
                        "cannot subscribe to the other replicas' changes in Redis: retrying with backoff, checking revocations against the database meanwhile"
                    );
                    in_outage = true;
                }
            }
        }
        // Full jitter on half the delay: replicas that lost Redis together
        // do not all come back in the same instant.
        let jitter = backoff.mul_f64(rand_unit() / 2.0);
        tokio::select! {
            _ = tokio::time::sleep(backoff + jitter) => {}
            _ = state.shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn rand_unit() -> f64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

async fn subscribe(client: &redis::Client, channel: &str) -> Result<redis::aio::PubSub, String> {
    let attempt = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    match tokio::time::timeout(Duration::from_secs(3), attempt).await {
        Ok(Ok(pubsub)) => Ok(pubsub),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer".into()),
    }
}

/// Applies one message. An error means this replica could not bring its
/// state in line: the caller drops the subscription, which makes security
/// checks ask the database and leads to a full reload.
async fn handle(
    state: &AppState,
    slow: &mpsc::UnboundedSender<Change>,
    payload: &[u8],
) -> Result<(), StoreError> {
    let bus: &Arc<Bus> = &state.cluster;
    let Ok(message) = serde_json::from_slice::<Message>(payload) else {
        tracing::warn!("unreadable message on the changes channel ignored");
        return Ok(());
    };
    if message.from == bus.replica {
        return Ok(());
    }
    if let Some(of) = message.ack {
        bus.acknowledged(&of);
        return Ok(());
    }
    let (Some(id), Some(change)) = (message.id, message.change) else {
        return Ok(());
    };
    tracing::debug!(from = %message.from, ?change, "change from another replica");
    match change {
        Change::Revoked { jti, expires_at } => state.identity.note_revoked(&jti, expires_at),
        Change::User { id } => state.identity.forget_user(&id),
        Change::ApiKey { id } => state.identity.forget_api_key(&id),
        Change::Policy => state.identity.reload_policy().await?,
        other => {
            let _ = slow.send(other);
            return Ok(());
        }
    }
    bus.send_ack(id);
    Ok(())
}

async fn apply_slow(state: Arc<AppState>, mut queue: mpsc::UnboundedReceiver<Change>) {
    while let Some(change) = queue.recv().await {
        let result = match &change {
            Change::Servers { tenant } => reconcile_servers(&state, Some(tenant)).await,
            Change::Restart { tenant, server } => {
                let _guard = state.servers_lock.lock().await;
                if let Some(current) = state.upstreams.remove(tenant, server).await {
                    tracing::info!(tenant = %tenant, server = %server, "server restarted on another replica; restarting it here");
                    state.upstreams.add(tenant, current.spec.clone());
                }
                Ok(())
            }
            Change::Catalog { tenant } => state.refresh_catalog(tenant).await,
            _ => Ok(()),
        };
        if let Err(error) = result {
            tracing::error!(?change, %error, "could not apply another replica's change");
        }
    }
}

/// Everything another replica may have changed while this one was not
/// listening: identity state, servers, catalogs.
async fn resync(state: &AppState) -> Result<(), StoreError> {
    state.identity.resync().await?;
    reconcile_servers(state, None).await?;
    state.refresh_all_catalogs().await
}

/// Brings the running servers created over the API (of `tenant`, or of every
/// tenant) in line with the database: starts the new, restarts the changed,
/// stops the removed. Config-file servers belong to each replica's own file
/// and are left alone.
pub async fn reconcile_servers(state: &AppState, tenant: Option<&str>) -> Result<(), StoreError> {
    let guard = state.servers_lock.lock().await;
    let stored: Vec<(String, ServerSpec)> = match tenant {
        Some(t) => state
            .store
            .list_servers::<ServerSpec>(t)
            .await?
            .into_iter()
            .map(|s| (t.to_owned(), s))
            .collect(),
        None => state.store.list_all_servers().await?,
    };
    let mut wanted: HashMap<(String, String), ServerSpec> = HashMap::new();
    let mut unreadable: HashSet<(String, String)> = HashSet::new();
    for (t, sealed) in stored {
        match sealed.opened(&state.secrets) {
            Ok((spec, _)) => {
                wanted.insert((t, spec.name.clone()), spec);
            }
            Err(error) => {
                tracing::error!(tenant = %t, server = %sealed.name, %error, "stored server left as it is: its credentials cannot be decrypted");
                unreadable.insert((t, sealed.name));
            }
        }
    }
    let mut touched = BTreeSet::new();
    let running = state
        .upstreams
        .list()
        .into_iter()
        .filter(|u| u.spec.source == Source::Api && tenant.is_none_or(|t| *u.tenant == *t));
    for upstream in running {
        let key = (upstream.tenant.to_string(), upstream.spec.name.clone());
        if unreadable.contains(&key) {
            continue;
        }
        match wanted.get(&key) {
            Some(spec) if *spec == upstream.spec => {
                wanted.remove(&key);
            }
            Some(_) => {
                tracing::info!(tenant = %key.0, server = %key.1, "server changed on another replica; restarting it");
                state.upstreams.remove(&key.0, &key.1).await;
                touched.insert(key.0);
            }
            None => {
                tracing::info!(tenant = %key.0, server = %key.1, "server removed on another replica; stopping it");
                state.upstreams.remove(&key.0, &key.1).await;
                touched.insert(key.0);
            }
        }
    }
    for ((t, name), spec) in wanted {
        // False when a config-file server of this name shadows it, as at start.
        if state.upstreams.add(&t, spec) {
            tracing::info!(tenant = %t, server = %name, "server added on another replica; starting it");
            touched.insert(t);
        }
    }
    drop(guard);
    for t in touched {
        state.refresh_catalog(&t).await?;
    }
    Ok(())
}
