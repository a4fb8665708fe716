//! Relay at the transport: what an upstream sends while serving a caller's
//! request (progress, log messages) reaches that caller, in order, before
//! the request's result.
//!
//! rmcp hands each incoming notification to its own task, so a handler
//! callback can see them out of order, or after the response it preceded on
//! the wire. This transport wrapper sees messages in wire order instead: it
//! learns a request's caller when the request goes out (the caller's
//! [`RelayHandle`] rides in the request's extensions, so there is no window
//! in which a notification could arrive unregistered), queues what belongs
//! to that caller, and closes the queue when the response comes. Every
//! message still goes on to rmcp unchanged.
//!
//! Progress names its request (by progress token). A log message does not:
//! MCP gives `notifications/message` no request id, and on a shared
//! connection (stdio, one HTTP session) nothing else on the wire says which
//! request it was sent for. So a log message is attributed by what is in
//! flight when it arrives: if every caller request then in flight on the
//! connection comes from one downstream origin (one legacy session, or one
//! 2026-07-28 request), it is that origin's; if requests of several origins
//! overlap, or one whose caller cannot be told anything (a REST call), it is
//! nobody's, and only the gateway's own log records it. A message is never
//! guessed onto another caller's stream. The gateway's own requests (lists,
//! pings, `logging/setLevel`, `subscriptions/listen`) carry no caller data
//! and do not count.
//!
//! A server-to-client request (sampling, elicitation, roots) is attributed
//! the same way, except where the transport tells which request's response
//! stream it came on (Streamable HTTP, SEP-2260): then it belongs to that
//! request's caller, or to nobody if that request is not a caller's.

// Logging is deprecated by SEP-2577 but legacy upstreams still send it.
#![allow(deprecated)]

use std::{collections::HashMap, sync::Arc};

use parking_lot::Mutex;
use rmcp::service::InboundStreamOrigin;
use rmcp::{
    RoleClient,
    model::{
        ClientNotification, GetExtensions, GetMeta, JsonRpcMessage,
        LoggingMessageNotificationParam, ProgressToken, RequestId, ServerNotification,
    },
    transport::Transport,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{CallSink, Origin, Progress};

/// What the upstream sent for one request, in wire order.
#[derive(Debug, Clone)]
pub enum Relayed {
    Progress(Progress),
    Log(LoggingMessageNotificationParam),
}

/// The queue of what the upstream sends for one caller's request.
#[derive(Clone)]
pub struct RelayHandle {
    queue: Arc<Mutex<Option<mpsc::UnboundedSender<Relayed>>>>,
    /// The downstream caller, or `None` for one nothing can be relayed to
    /// (a REST call).
    origin: Option<Origin>,
    /// Where server-to-client requests made while serving the request go
    /// (the caller's sink), if anywhere.
    sink: Option<Arc<dyn CallSink>>,
    /// Cancelled when the request is answered or abandoned: a
    /// server-to-client request relayed for it is given up then.
    done: CancellationToken,
}

impl RelayHandle {
    /// A handle for a request of `origin` and the receiving end of its queue.
    pub fn new(origin: Option<Origin>) -> (Self, mpsc::UnboundedReceiver<Relayed>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = Self {
            queue: Arc::new(Mutex::new(Some(tx))),
            origin,
            sink: None,
            done: CancellationToken::new(),
        };
        (handle, rx)
    }

    /// Server-to-client requests made while serving the request go to `sink`.
    pub fn with_sink(mut self, sink: Arc<dyn CallSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// The caller's sink, for a server-to-client request.
    pub fn sink(&self) -> Option<&Arc<dyn CallSink>> {
        self.sink.as_ref()
    }

    /// Cancelled once the request is answered or abandoned.
    pub fn done(&self) -> &CancellationToken {
        &self.done
    }

    fn push(&self, relayed: Relayed) {
        if let Some(tx) = self.queue.lock().as_ref() {
            let _ = tx.send(relayed);
        }
    }

    /// No more messages: the receiver drains what is queued, then ends.
    pub fn close(&self) {
        self.queue.lock().take();
        self.done.cancel();
    }
}

#[derive(Default)]
struct Table {
    by_token: HashMap<ProgressToken, RelayHandle>,
    token_of: HashMap<RequestId, ProgressToken>,
    /// Requests sent and not answered yet, oldest first, with their caller
    /// (`None`: the gateway's own request).
    in_flight: Vec<(RequestId, Option<RelayHandle>)>,
}

/// The relays of one connection, shared by its transport and its calls.
#[derive(Clone, Default)]
pub struct Relays(Arc<Mutex<Table>>);

impl Relays {
    fn sent(&self, id: RequestId, token: Option<ProgressToken>, handle: Option<RelayHandle>) {
        let mut t = self.0.lock();
        if let (Some(token), Some(handle)) = (token, &handle) {
            t.token_of.insert(id.clone(), token.clone());
            t.by_token.insert(token, handle.clone());
        }
        t.in_flight.push((id, handle));
    }

    fn by_token(&self, token: &ProgressToken) -> Option<RelayHandle> {
        self.0.lock().by_token.get(token).cloned()
    }

    /// The caller a server-to-client request belongs to, if that can be
    /// told: the caller of the request on whose response stream it came
    /// (`stream`, when the transport says; a REST call is a caller too, one
    /// that cannot be asked), else as for a log message.
    pub fn request_owner(&self, stream: Option<&InboundStreamOrigin>) -> Option<RelayHandle> {
        match stream {
            Some(InboundStreamOrigin::OutboundRequest(id)) => {
                let t = self.0.lock();
                t.in_flight
                    .iter()
                    .find(|(i, _)| i == id)
                    .and_then(|(_, handle)| handle.clone())
            }
            _ => self.log_owner(),
        }
    }

    /// The caller a log message arriving now belongs to, if that can be
    /// told (see the module documentation).
    fn log_owner(&self) -> Option<RelayHandle> {
        let t = self.0.lock();
        let mut owner: Option<&RelayHandle> = None;
        for (_, handle) in &t.in_flight {
            let Some(handle) = handle else { continue };
            let origin = handle.origin?;
            match owner {
                None => owner = Some(handle),
                Some(o) if o.origin == Some(origin) => {}
                Some(_) => return None,
            }
        }
        owner.cloned()
    }

    /// The request `id` is answered (or abandoned): close its queue.
    pub fn finish(&self, id: &RequestId) {
        let mut t = self.0.lock();
        if let Some(token) = t.token_of.remove(id)
            && let Some(handle) = t.by_token.remove(&token)
        {
            handle.close();
        }
        if let Some(at) = t.in_flight.iter().position(|(i, _)| i == id) {
            let (_, handle) = t.in_flight.remove(at);
            if let Some(handle) = handle {
                handle.close();
            }
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
        match &item {
            JsonRpcMessage::Request(request) => self.relays.sent(
                request.id.clone(),
                request.request.get_meta().get_progress_token(),
                request.request.extensions().get::<RelayHandle>().cloned(),
            ),
            // A request given up on (timeout, caller gone) is no longer in
            // flight, whether or not the upstream ever answers it.
            JsonRpcMessage::Notification(n) => {
                if let ClientNotification::CancelledNotification(c) = &n.notification
                    && let Some(id) = &c.params.request_id
                {
                    self.relays.finish(id);
                }
            }
            _ => {}
        }
        self.inner.send(item)
    }

    async fn receive(&mut self) -> Option<rmcp::service::RxJsonRpcMessage<RoleClient>> {
        let message = self.inner.receive().await?;
        match &message {
            JsonRpcMessage::Notification(n) => match &n.notification {
                ServerNotification::ProgressNotification(p) => {
                    if let Some(handle) = self.relays.by_token(&p.params.progress_token) {
                        handle.push(Relayed::Progress(Progress {
                            progress: p.params.progress,
                            total: p.params.total,
                            message: p.params.message.clone(),
                        }));
                    }
                    // It goes on to rmcp too, whose request timer a progress
                    // notification restarts when the call asked for that.
                }
                ServerNotification::LoggingMessageNotification(m) => {
                    if let Some(handle) = self.relays.log_owner() {
                        handle.push(Relayed::Log(m.params.clone()));
                    }
                }
                _ => {}
            },
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

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: i64) -> RequestId {
        RequestId::Number(n)
    }

    #[test]
    fn a_log_message_belongs_to_the_only_origin_in_flight() {
        let relays = Relays::default();
        let a = Origin::next();
        let (first, _q1) = RelayHandle::new(Some(a));
        let (second, _q2) = RelayHandle::new(Some(a));
        relays.sent(id(1), None, Some(first));
        // The gateway's own requests do not count.
        relays.sent(id(2), None, None);
        relays.sent(id(3), None, Some(second));
        assert_eq!(relays.log_owner().and_then(|h| h.origin), Some(a));
    }

    #[test]
    fn overlapping_origins_own_no_log_message() {
        let relays = Relays::default();
        let (a, _qa) = RelayHandle::new(Some(Origin::next()));
        let (b, _qb) = RelayHandle::new(Some(Origin::next()));
        relays.sent(id(1), None, Some(a));
        relays.sent(id(2), None, Some(b));
        assert!(relays.log_owner().is_none());
        relays.finish(&id(2));
        assert!(relays.log_owner().is_some());
    }

    #[test]
    fn a_caller_that_cannot_be_told_blocks_attribution() {
        let relays = Relays::default();
        let (a, _qa) = RelayHandle::new(Some(Origin::next()));
        let (rest, _qr) = RelayHandle::new(None);
        relays.sent(id(1), None, Some(a));
        relays.sent(id(2), None, Some(rest));
        assert!(relays.log_owner().is_none());
        relays.finish(&id(2));
        relays.finish(&id(1));
        // Nothing in flight: nobody's.
        assert!(relays.log_owner().is_none());
    }

    #[test]
    fn a_request_on_a_calls_stream_belongs_to_that_calls_caller() {
        let relays = Relays::default();
        let (a, _qa) = RelayHandle::new(Some(Origin::next()));
        let (b, _qb) = RelayHandle::new(Some(Origin::next()));
        let b_origin = b.origin;
        relays.sent(id(1), None, Some(a));
        relays.sent(id(2), None, Some(b));
        relays.sent(id(3), None, None);
        let on = |n| InboundStreamOrigin::OutboundRequest(id(n));
        // Two callers overlap, yet the stream tells whose it is.
        assert_eq!(
            relays.request_owner(Some(&on(2))).and_then(|h| h.origin),
            b_origin
        );
        // The gateway's own request, or one no longer in flight: nobody's.
        assert!(relays.request_owner(Some(&on(3))).is_none());
        assert!(relays.request_owner(Some(&on(9))).is_none());
        // No stream to tell by (the GET stream, stdio): as a log message.
        assert!(
            relays
                .request_owner(Some(&InboundStreamOrigin::Unassociated))
                .is_none()
        );
        assert!(relays.request_owner(None).is_none());
        relays.finish(&id(1));
        assert_eq!(relays.request_owner(None).and_then(|h| h.origin), b_origin);
    }

    #[test]
    fn finishing_ends_what_was_relayed_for_the_request() {
        let relays = Relays::default();
        let (a, _q) = RelayHandle::new(Some(Origin::next()));
        relays.sent(id(1), None, Some(a.clone()));
        assert!(!a.done().is_cancelled());
        relays.finish(&id(1));
        assert!(a.done().is_cancelled());
    }

    #[test]
    fn finishing_closes_the_queue() {
        let relays = Relays::default();
        let (a, mut queue) = RelayHandle::new(Some(Origin::next()));
        relays.sent(id(1), None, Some(a.clone()));
        a.push(Relayed::Progress(Progress {
            progress: 1.0,
            total: None,
            message: None,
        }));
        relays.finish(&id(1));
        a.push(Relayed::Progress(Progress {
            progress: 2.0,
            total: None,
            message: None,
        }));
        assert!(matches!(queue.try_recv(), Ok(Relayed::Progress(p)) if p.progress == 1.0));
        assert!(queue.try_recv().is_err());
    }
}
