//! Progress relay at the transport: every progress notification of an
//! upstream call reaches its caller, in order, before the call's result.
//!
//! rmcp hands each incoming notification to its own task, so a handler
//! callback can see them out of order, or after the response it preceded on
//! the wire. This transport wrapper sees messages in wire order instead: it
//! learns a call's progress token when the request goes out (the call's
//! [`RelayHandle`] rides in the request's extensions, so there is no window
//! in which progress could arrive unregistered), queues each progress
//! notification for that call, and closes the queue when the response comes.
//! Every message still goes on to rmcp unchanged.

use std::{collections::HashMap, sync::Arc};

use parking_lot::Mutex;
use rmcp::{
    RoleClient,
    model::{GetExtensions, GetMeta, JsonRpcMessage, ProgressToken, RequestId, ServerNotification},
    transport::Transport,
};
use tokio::sync::mpsc;

use super::Progress;

/// The queue of one call's progress, in wire order.
#[derive(Clone)]
pub struct RelayHandle(Arc<Mutex<Option<mpsc::UnboundedSender<Progress>>>>);

impl RelayHandle {
    /// A handle and the receiving end of its queue.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Progress>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self(Arc::new(Mutex::new(Some(tx)))), rx)
    }

    fn push(&self, progress: Progress) {
        if let Some(tx) = self.0.lock().as_ref() {
            let _ = tx.send(progress);
        }
    }

    /// No more progress: the receiver drains what is queued, then ends.
    pub fn close(&self) {
        self.0.lock().take();
    }
}

#[derive(Default)]
struct Table {
    by_token: HashMap<ProgressToken, RelayHandle>,
    token_of: HashMap<RequestId, ProgressToken>,
}

/// The relays of one connection, shared by its transport and its calls.
#[derive(Clone, Default)]
pub struct Relays(Arc<Mutex<Table>>);

impl Relays {
    fn register(&self, id: RequestId, token: ProgressToken, handle: RelayHandle) {
        let mut t = self.0.lock();
        t.token_of.insert(id, token.clone());
        t.by_token.insert(token, handle);
    }

    fn get(&self, token: &ProgressToken) -> Option<RelayHandle> {
        self.0.lock().by_token.get(token).cloned()
    }

    /// The call `id` is answered (or abandoned): close its queue.
    pub fn finish(&self, id: &RequestId) {
        let mut t = self.0.lock();
        if let Some(token) = t.token_of.remove(id)
            && let Some(handle) = t.by_token.remove(&token)
        {
            handle.close();
        }
    }
}

/// Wraps an upstream transport with the relay.
pub struct RelayTransport<T> {
    inner: T,
    relays: Relays,
}

impl<T> RelayTransport<T> {
    pub fn new(inner: T, relays: Relays) -> Self {
        Self { inner, relays }
    }
}

impl<T: Transport<RoleClient>> Transport<RoleClient> for RelayTransport<T> {
    type Error = T::Error;

    fn send(
        &mut self,
        item: rmcp::service::TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        if let JsonRpcMessage::Request(request) = &item
            && let Some(handle) = request.request.extensions().get::<RelayHandle>()
            && let Some(token) = request.request.get_meta().get_progress_token()
        {
            self.relays
                .register(request.id.clone(), token, handle.clone());
        }
        self.inner.send(item)
    }

    async fn receive(&mut self) -> Option<rmcp::service::RxJsonRpcMessage<RoleClient>> {
        let message = self.inner.receive().await?;
        match &message {
            JsonRpcMessage::Notification(n) => {
                if let ServerNotification::ProgressNotification(p) = &n.notification
                    && let Some(handle) = self.relays.get(&p.params.progress_token)
                {
                    handle.push(Progress {
                        progress: p.params.progress,
                        total: p.params.total,
                        message: p.params.message.clone(),
                    });
                }
                // It goes on to rmcp too, whose request timer a progress
                // notification restarts when the call asked for that.
            }
            JsonRpcMessage::Response(r) => self.relays.finish(&r.id),
            JsonRpcMessage::Error(e) => {
                if let Some(id) = &e.id {
                    self.relays.finish(id);
                }
            }
            JsonRpcMessage::Request(_) => {}
        }
        Some(message)
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}
