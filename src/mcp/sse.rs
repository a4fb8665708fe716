//! The 2024-11-05 HTTP+SSE transport, server side, for clients that predate
//! Streamable HTTP: `GET /sse` (or `/sse/{profile}`) opens an event stream
//! whose first event, `endpoint`, names the URL to POST messages to
//! (`/messages?sessionId=...`); each POST answers 202 and the answers arrive
//! on the stream as `message` events. rmcp has no such server transport
//! since 0.11, so this is a small one over its generic [`Transport`] trait.
//!
//! It serves the same [`Gateway`] handler as `/mcp`, behind the same
//! authentication (both paths are MCP paths to `auth::http`). A session is
//! bound to the principal that opened it: a POST by anyone else answers 404,
//! like an unknown session, so nothing about it is revealed. Each POST's own
//! HTTP request (and principal) goes with its message to the handler, as on
//! `/mcp`. The session ends when its stream is closed (the client went
//! away) or the gateway shuts down; its handler is dropped then, and with it
//! the session's log level, subscriptions and isolated upstream connections.

use std::{collections::HashMap, convert::Infallible, sync::Arc, time::Duration};

use axum::{
    extract::{Path, Query, Request, State},
    http::StatusCode,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures::StreamExt;
use rmcp::{
    RoleServer, ServiceExt,
    model::{ClientJsonRpcMessage, GetExtensions},
    service::{RxJsonRpcMessage, TxJsonRpcMessage},
    transport::Transport,
};
use tokio::sync::mpsc;

use super::{Gateway, relays};
use crate::{api::error::Problem, app::AppState, auth::Principal};

/// Messages a POST may queue ahead of the handler before it waits.
const QUEUE: usize = 64;

/// The open legacy SSE sessions of this process, by session id.
#[derive(Default)]
pub struct SseSessions {
    sessions: parking_lot::Mutex<HashMap<String, Entry>>,
}

struct Entry {
    /// Who opened it: (tenant, user).
    owner: (Arc<str>, Arc<str>),
    incoming: mpsc::Sender<ClientJsonRpcMessage>,
}

fn owner(principal: &Principal) -> (Arc<str>, Arc<str>) {
    (principal.tenant_id.clone(), principal.user_id.clone())
}

/// The server side of one session: messages POSTed in, messages streamed
/// out.
struct SseServerTransport {
    incoming: mpsc::Receiver<ClientJsonRpcMessage>,
    outgoing: mpsc::Sender<TxJsonRpcMessage<RoleServer>>,
}

#[derive(Debug, thiserror::Error)]
#[error("the SSE stream of the session is closed")]
struct StreamClosed;

impl Transport<RoleServer> for SseServerTransport {
    type Error = StreamClosed;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let outgoing = self.outgoing.clone();
        async move { outgoing.send(item).await.map_err(|_| StreamClosed) }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        self.incoming.recv().await
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.incoming.close();
        Ok(())
    }
}

/// `GET /sse`: the whole catalog.
pub async fn open(State(state): State<Arc<AppState>>, request: Request) -> Response {
    open_session(state, None, request)
}

/// `GET /sse/{profile}`: one profile, as `/mcp/{profile}`.
pub async fn open_profile(
    State(state): State<Arc<AppState>>,
    Path(profile): Path<String>,
    request: Request,
) -> Response {
    // Profiles belong to the caller's tenant; another tenant's answers like
    // one that does not exist.
    let tenant = request
        .extensions()
        .get::<Principal>()
        .map(|p| p.tenant_id.clone())
        .unwrap_or_else(|| Arc::from(crate::auth::DEFAULT_TENANT));
    if !state
        .catalog
        .snapshot(&tenant)
        .profiles
        .contains_key(&profile)
    {
        return Problem::not_found("unknown-profile", format!("no profile named {profile}"))
            .with("profile", profile)
            .into_response();
    }
    open_session(state, Some(Arc::from(profile.as_str())), request)
}

fn open_session(state: Arc<AppState>, profile: Option<Arc<str>>, request: Request) -> Response {
    // The authentication layer put it there; without it nothing is served.
    let Some(principal) = request.extensions().get::<Principal>().cloned() else {
        return crate::auth::http::unauthorized_problem("authentication required").into_response();
    };
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (incoming_tx, incoming) = mpsc::channel(QUEUE);
    let (outgoing, outgoing_rx) = mpsc::channel(QUEUE);
    state.sse_sessions.sessions.lock().insert(
        id.clone(),
        Entry {
            owner: owner(&principal),
            incoming: incoming_tx,
        },
    );
    let handler = Gateway {
        session: Arc::new(relays::Session::new(
            state.settings.call_timeout,
            &state.upstreams,
        )),
        state: state.clone(),
        profile,
        discovery: false,
    };
    // Cancelled when the client drops the stream, or at shutdown.
    let ct = state.mcp_shutdown.child_token();
    {
        let (ct, state, id) = (ct.clone(), state.clone(), id.clone());
        tokio::spawn(async move {
            let transport = SseServerTransport { incoming, outgoing };
            match handler.serve_with_ct(transport, ct.clone()).await {
                Ok(running) => {
                    let stop = running.cancellation_token();
                    tokio::select! {
                        _ = running.waiting() => {}
                        _ = ct.cancelled() => stop.cancel(),
                    }
                }
                Err(error) => tracing::debug!(%error, "legacy SSE session ended before it began"),
            }
            state.sse_sessions.sessions.lock().remove(&id);
            tracing::debug!(session = %id, "legacy SSE session closed");
        });
    }
    let endpoint = Event::default()
        .event("endpoint")
        .data(format!("/messages?sessionId={id}"));
    // Dropped with the stream: the client is gone, the session ends.
    let guard = ct.drop_guard();
    let answers = futures::stream::unfold((outgoing_rx, guard), |(mut rx, guard)| async move {
        let message = rx.recv().await?;
        Some((message, (rx, guard)))
    })
    .filter_map(|message| async move {
        match serde_json::to_string(&message) {
            Ok(json) => Some(Ok::<_, Infallible>(
                Event::default().event("message").data(json),
            )),
            Err(error) => {
                tracing::warn!(%error, "an answer could not be serialized");
                None
            }
        }
    });
    let messages = futures::stream::once(async { Ok(endpoint) }).chain(answers);
    Sse::new(messages.boxed())
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

#[derive(serde::Deserialize)]
pub struct Target {
    #[serde(rename = "sessionId")]
    session_id: Option<String>,
}

/// `POST /messages?sessionId=...`: one JSON-RPC message of a session; its
/// answer goes out on the session's stream.
pub async fn post(
    State(state): State<Arc<AppState>>,
    Query(target): Query<Target>,
    request: Request,
) -> Response {
    let Some(principal) = request.extensions().get::<Principal>().cloned() else {
        return crate::auth::http::unauthorized_problem("authentication required").into_response();
    };
    let Some(id) = target.session_id else {
        return (StatusCode::BAD_REQUEST, "sessionId is required").into_response();
    };
    let incoming = {
        let sessions = state.sse_sessions.sessions.lock();
        match sessions.get(&id) {
            Some(entry) if entry.owner == owner(&principal) => entry.incoming.clone(),
            // Another principal's session answers like a missing one.
            _ => return (StatusCode::NOT_FOUND, "session not found").into_response(),
        }
    };
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, state.settings.max_body_bytes).await {
        Ok(body) => body,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response(),
    };
    let mut message = match serde_json::from_slice::<ClientJsonRpcMessage>(&body) {
        Ok(message) => message,
        Err(error) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("not a JSON-RPC message: {error}"),
            )
                .into_response();
        }
    };
    // The handler reads the caller from the HTTP request, as on /mcp.
    match &mut message {
        ClientJsonRpcMessage::Request(request) => {
            request.request.extensions_mut().insert(parts);
        }
        ClientJsonRpcMessage::Notification(notification) => {
            notification.notification.extensions_mut().insert(parts);
        }
        _ => {}
    }
    match incoming.send(message).await {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        // It ended between the lookup and now.
        Err(_) => (StatusCode::NOT_FOUND, "session not found").into_response(),
    }
}
