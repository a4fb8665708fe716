//! Resource subscriptions, relayed: downstream callers subscribe to a
//! resource's updates through the gateway, which holds one subscription
//! per URI at the upstream that owns it, however many callers want it.
//!
//! The first subscriber of a URI makes the gateway subscribe upstream, the
//! last one leaving (unsubscribing, or its session ending) makes it
//! unsubscribe. A legacy upstream (up to 2025-11-25) is asked with
//! `resources/subscribe` and `resources/unsubscribe`; a 2026-07-28 upstream
//! has neither, and is asked by re-opening the gateway's standing
//! `subscriptions/listen` request with the new set of URIs (the new stream
//! is acknowledged before the old one is dropped, so no update falls in
//! between; one may come twice, which "go and re-read" tolerates). A new
//! connection restores every subscription that still has subscribers.
//!
//! `notifications/resources/updated` from the upstream reaches exactly the
//! subscribers of that URI on that upstream.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use futures::future::BoxFuture;
use rmcp::model::{
    ClientRequest, ServerNotification, SubscribeRequest, SubscribeRequestParams,
    SubscriptionFilter, UnsubscribeRequest, UnsubscribeRequestParams,
};
use rmcp::service::{PeerRequestOptions, Subscription};
use tokio::sync::Notify;

use super::{Caller, Connection, Origin, Upstream, UpstreamError};

/// Where a subscriber hears of updates: the front door implements it (the
/// MCP door sends `notifications/resources/updated` on the session's
/// stream, or on the caller's `subscriptions/listen` stream).
pub trait UpdateSink: Send + Sync {
    fn updated(&self, uri: &str) -> BoxFuture<'static, ()>;
}

/// How long one subscriber may take to accept an update notice.
const DELIVERY: Duration = Duration::from_secs(5);

/// The subscribers of one resource, each with where it hears of updates.
type Subscribers = HashMap<Origin, Arc<dyn UpdateSink>>;

/// The subscribers of one upstream's resources.
#[derive(Default)]
pub struct Watches {
    subscribers: parking_lot::Mutex<BTreeMap<String, Subscribers>>,
    /// Held while a change talks to the upstream, so the upstream's
    /// subscriptions follow the table in order.
    changes: tokio::sync::Mutex<()>,
}

impl Watches {
    /// Tells every subscriber of `uri` that it changed. A subscriber whose
    /// stream does not take the notice in time misses it rather than hold
    /// up the others (and the upstream's stream behind them).
    pub async fn updated(&self, uri: &str) {
        let sinks: Vec<Arc<dyn UpdateSink>> = self
            .subscribers
            .lock()
            .get(uri)
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default();
        futures::future::join_all(
            sinks
                .iter()
                .map(|s| tokio::time::timeout(DELIVERY, s.updated(uri))),
        )
        .await;
    }

    /// The URIs with subscribers.
    pub fn uris(&self) -> Vec<String> {
        self.subscribers.lock().keys().cloned().collect()
    }

    fn has(&self, uri: &str) -> bool {
        self.subscribers.lock().contains_key(uri)
    }

    /// Subscribes `origin` (again: its sink is replaced).
    fn insert(&self, uri: &str, origin: Origin, sink: Arc<dyn UpdateSink>) {
        self.subscribers
            .lock()
            .entry(uri.to_owned())
            .or_default()
            .insert(origin, sink);
    }

    /// Unsubscribes `origin`; true if that left `uri` without subscribers.
    fn remove(&self, uri: &str, origin: Origin) -> bool {
        let mut subscribers = self.subscribers.lock();
        let Some(of_uri) = subscribers.get_mut(uri) else {
            return false;
        };
        if of_uri.remove(&origin).is_none() {
            return false;
        }
        if of_uri.is_empty() {
            subscribers.remove(uri);
            return true;
        }
        false
    }
}

impl Upstream {
    /// Subscribes `origin` to updates of `uri` (a resource of this
    /// upstream); subscribes upstream if it is the first subscriber.
    /// Subscribing twice is the same as once.
    pub async fn watch_resource(
        &self,
        uri: &str,
        origin: Origin,
        sink: Arc<dyn UpdateSink>,
        caller: Option<&Caller>,
        timeout: Duration,
    ) -> Result<(), UpstreamError> {
        let _change = self.watches.changes.lock().await;
        if self.watches.has(uri) {
            // Subscribed upstream already (by this caller or another).
            self.watches.insert(uri, origin, sink);
            return Ok(());
        }
        let conn = self.conn.load_full().ok_or_else(|| self.unavailable())?;
        if !conn.subscribe {
            return Err(UpstreamError::Unsupported {
                server: self.spec.name.clone(),
                what: "resource subscriptions".into(),
            });
        }
        if conn.modern {
            let mut uris = self.watches.uris();
            uris.push(uri.to_owned());
            let accepted = self.listen(&conn, uris, timeout).await?;
            if !accepted
                .resource_subscriptions
                .is_some_and(|u| u.iter().any(|u| u == uri))
            {
                return Err(UpstreamError::Unsupported {
                    server: self.spec.name.clone(),
                    what: format!("a subscription to {uri}"),
                });
            }
        } else {
            let request = ClientRequest::SubscribeRequest(SubscribeRequest::new(
                SubscribeRequestParams::new(uri.to_owned()),
            ));
            self.request(request, caller, PeerRequestOptions::with_timeout(timeout))
                .await?;
        }
        self.watches.insert(uri, origin, sink);
        Ok(())
    }

    /// Unsubscribes `origin` from `uri`; unsubscribes upstream when it was
    /// the last subscriber. Unsubscribing what was not subscribed does
    /// nothing. Upstream failures are logged, not returned: the caller is
    /// unsubscribed either way.
    pub async fn unwatch_resource(
        &self,
        uri: &str,
        origin: Origin,
        caller: Option<&Caller>,
        timeout: Duration,
    ) {
        let _change = self.watches.changes.lock().await;
        if !self.watches.remove(uri, origin) {
            return;
        }
        // Without a connection there is nothing to undo: a new connection
        // restores only what still has subscribers.
        let Some(conn) = self.conn.load_full() else {
            return;
        };
        let result = if conn.modern {
            self.listen(&conn, self.watches.uris(), timeout)
                .await
                .map(|_| ())
        } else {
            let request = ClientRequest::UnsubscribeRequest(UnsubscribeRequest::new(
                UnsubscribeRequestParams::new(uri.to_owned()),
            ));
            self.request(request, caller, PeerRequestOptions::with_timeout(timeout))
                .await
                .map(|_| ())
        };
        if let Err(error) = result {
            tracing::warn!(server = %self.spec.name, uri, %error, "upstream unsubscribe failed");
        }
    }

    /// On a new connection: subscribes again to every URI that has
    /// subscribers, and (2026-07-28 upstreams) opens the standing
    /// `subscriptions/listen` request that also carries list changes.
    pub(super) async fn restore_watches(&self, conn: &Connection, timeout: Duration) {
        let _change = self.watches.changes.lock().await;
        let uris = self.watches.uris();
        if conn.modern {
            // Without resource subscriptions, an upstream that cannot honour
            // them still tells of list changes.
            let uris = if conn.subscribe { uris } else { Vec::new() };
            if let Err(error) = self.listen(conn, uris, timeout).await {
                tracing::debug!(server = %self.spec.name, %error, "upstream offers no subscriptions/listen");
            }
            return;
        }
        for uri in uris {
            let request = ClientRequest::SubscribeRequest(SubscribeRequest::new(
                SubscribeRequestParams::new(uri.clone()),
            ));
            if let Err(error) = self
                .request(request, None, PeerRequestOptions::with_timeout(timeout))
                .await
            {
                tracing::warn!(server = %self.spec.name, uri, %error, "re-subscribing after reconnect failed");
            }
        }
    }

    /// Opens `subscriptions/listen` on a 2026-07-28 upstream with list
    /// changes and `uris`, and replaces the connection's previous listen
    /// once the new one is acknowledged. Returns what the upstream accepted.
    async fn listen(
        &self,
        conn: &Connection,
        uris: Vec<String>,
        timeout: Duration,
    ) -> Result<SubscriptionFilter, UpstreamError> {
        let mut filter = SubscriptionFilter::builder()
            .tools_list_changed()
            .prompts_list_changed()
            .resources_list_changed()
            .build();
        if !uris.is_empty() {
            filter.resource_subscriptions = Some(uris);
        }
        let subscription = match tokio::time::timeout(timeout, conn.peer.listen(filter)).await {
            Ok(Ok(s)) => s,
            Ok(Err(error)) => return Err(self.service_error(error)),
            Err(_) => {
                return Err(UpstreamError::Timeout {
                    server: self.spec.name.clone(),
                    timeout,
                });
            }
        };
        let accepted = subscription.acknowledged().clone();
        let reader = tokio::spawn(read(
            subscription,
            conn.resync.clone(),
            self.watches.clone(),
            self.spec.name.clone(),
        ));
        // Dropping the old reader drops its subscription, which cancels
        // that listen request upstream.
        if let Some(old) = conn.listener.lock().replace(reader) {
            old.abort();
        }
        Ok(accepted)
    }
}

/// Reads one `subscriptions/listen` stream until it ends.
async fn read(
    mut subscription: Subscription,
    resync: Arc<Notify>,
    watches: Arc<Watches>,
    server: String,
) {
    loop {
        match subscription.next().await {
            Ok(Some(ServerNotification::ResourceUpdatedNotification(n))) => {
                watches.updated(&n.params.uri).await;
            }
            // The filter admits nothing else but list changes.
            Ok(Some(_)) => resync.notify_one(),
            Ok(None) => return,
            Err(error) => {
                tracing::debug!(server, %error, "upstream subscriptions/listen stream failed");
                return;
            }
        }
    }
}
