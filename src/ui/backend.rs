//! The REST API, called in-process: a UI page is a client of `/api/v1`
//! like any other, with the user's session cookie (and, on a state change,
//! the CSRF token the form carried). The same layers run as for a request
//! from outside: authentication, the permission a route needs, the CSRF
//! check of cookie sessions, the audit trail of changes. So the UI cannot
//! do anything its user could not do over REST, and validation lives in
//! one place.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Router,
    body::Body,
    extract::ConnectInfo,
    http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header},
    middleware,
};
use serde_json::Value;
use tower::ServiceExt as _;

use super::Session;
use crate::{app::AppState, auth::http::SESSION_COOKIE};

/// Answers of more than this are not read (the UI shows lists and results,
/// which the API bounds well below it).
const MAX_ANSWER: usize = 32 * 1024 * 1024;

/// The API router with its authentication and audit layers.
#[derive(Clone)]
pub struct Backend {
    api: Router,
}

/// One API answer: its status, JSON body (Null when it had none), and the
/// headers (for `Set-Cookie` of the login and logout).
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub headers: HeaderMap,
}

impl Answer {
    pub fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// What went wrong, for a notice: the problem document's detail (or
    /// its title), else the status.
    pub fn problem(&self) -> String {
        let detail = self.body["detail"]
            .as_str()
            .or_else(|| self.body["title"].as_str());
        match detail {
            Some(d) if !d.is_empty() => d.to_owned(),
            _ => format!("the request failed ({})", self.status),
        }
    }
}

/// Where a request came from and which request it belongs to: carried
/// over to the in-process call for throttling and the audit trail.
#[derive(Clone, Default)]
pub struct Origin {
    pub client: Option<SocketAddr>,
    pub request_id: Option<HeaderValue>,
}

impl Origin {
    pub fn of(parts: &axum::http::request::Parts) -> Self {
        Self {
            client: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
            request_id: parts.headers.get("x-request-id").cloned(),
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Origin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Origin::of(parts))
    }
}

/// Percent-encodes one path segment (a tool or server name).
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Backend {
    pub fn new(state: Arc<AppState>) -> Self {
        let api = Router::new()
            .nest("/api/v1", crate::api::router())
            .layer(middleware::from_fn_with_state(
                state.clone(),
                crate::auth::http::authenticate,
            ))
            .layer(middleware::from_fn_with_state(
                state.clone(),
                crate::api::audit::record_changes,
            ))
            .with_state(state);
        Self { api }
    }

    /// A read as the session's user.
    pub async fn get(&self, session: &Session, origin: &Origin, path: &str) -> Answer {
        self.send(Method::GET, path, Some(&session.token), None, None, origin)
            .await
    }

    /// A change as the session's user, with the CSRF token the form carried
    /// (checked again by the API's authentication layer).
    pub async fn change(
        &self,
        session: &Session,
        origin: &Origin,
        method: Method,
        path: &str,
        csrf: &str,
        body: Option<Value>,
    ) -> Answer {
        self.send(method, path, Some(&session.token), Some(csrf), body, origin)
            .await
    }

    /// A request without a session (the login).
    pub async fn anonymous(
        &self,
        origin: &Origin,
        method: Method,
        path: &str,
        body: Value,
    ) -> Answer {
        self.send(method, path, None, None, Some(body), origin)
            .await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        csrf: Option<&str>,
        body: Option<Value>,
        origin: &Origin,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::COOKIE, format!("{SESSION_COOKIE}={token}"));
        }
        if let Some(csrf) = csrf {
            request = request.header(crate::auth::http::CSRF_HEADER, csrf);
        }
        if let Some(id) = &origin.request_id {
            request = request.header("x-request-id", id.clone());
        }
        let body = match body {
            Some(value) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(value.to_string())
            }
            None => Body::empty(),
        };
        let mut request = match request.body(body) {
            Ok(r) => r,
            Err(e) => return failed(format!("the request could not be built: {e}")),
        };
        if let Some(client) = origin.client {
            request.extensions_mut().insert(ConnectInfo(client));
        }
        let response = match self.api.clone().oneshot(request).await {
            Ok(r) => r,
            Err(e) => match e {},
        };
        let (parts, body) = response.into_parts();
        let bytes = match axum::body::to_bytes(body, MAX_ANSWER).await {
            Ok(b) => b,
            Err(e) => return failed(format!("the answer could not be read: {e}")),
        };
        Answer {
            status: parts.status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            headers: parts.headers,
        }
    }
}

fn failed(detail: String) -> Answer {
    tracing::error!(%detail, "UI call to the API failed");
    Answer {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        body: serde_json::json!({ "detail": detail }),
        headers: HeaderMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(segment("everything__echo"), "everything__echo");
        assert_eq!(segment("a b/c?d#e%"), "a%20b%2Fc%3Fd%23e%25");
        assert_eq!(segment("é"), "%C3%A9");
    }
}
