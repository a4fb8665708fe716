//! REST errors as RFC 9457 problem documents with stable `type` values.
//! Internal details are logged, never sent.

use axum::{
    Json,
    extract::{FromRequest, Request, rejection::JsonRejection},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::{pipeline::CallError, store::StoreError, upstream::UpstreamError};

/// The prefix of every problem `type`.
pub const PROBLEM_BASE: &str = "urn:metamcp:problem:";

/// A problem to report to a REST caller.
#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    /// Stable slug, the tail of the `type` URI.
    pub kind: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub extra: Map<String, Value>,
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

pub type Result<T, E = Problem> = std::result::Result<T, E>;

impl Problem {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            title,
            detail: detail.into(),
            extra: Map::new(),
            headers: Vec::new(),
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// Adds `Retry-After` (whole seconds, rounded up, at least 1).
    pub fn retry_after(mut self, wait: std::time::Duration) -> Self {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        self.headers.push((
            header::RETRY_AFTER,
            HeaderValue::from_str(&secs.to_string()).unwrap_or(HeaderValue::from_static("1")),
        ));
        self.extra.insert("retry_after".into(), Value::from(secs));
        self
    }

    pub fn not_found(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, kind, "Not found", detail)
    }

    pub fn conflict(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, kind, "Conflict", detail)
    }

    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-request",
            "Invalid request",
            detail,
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the gateway failed to handle the request; see its log",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": format!("{PROBLEM_BASE}{}", self.kind),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Some(obj) = body.as_object_mut() {
            obj.extend(self.extra);
        }
        let mut response = (self.status, Json(body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => {
                Problem::conflict("conflict", "a record with this name already exists")
            }
            other => {
                tracing::error!(error = %other, "store error");
                Problem::internal()
            }
        }
    }
}

impl From<CallError> for Problem {
    fn from(e: CallError) -> Self {
        let detail = e.to_string();
        match e {
            CallError::UnknownTool(name) => {
                Problem::not_found("unknown-tool", format!("no tool named {name}"))
                    .with("tool", name)
            }
            CallError::Disabled(name) => {
                Problem::conflict("tool-disabled", detail).with("tool", name)
            }
            CallError::Quarantined { name, .. } => {
                Problem::conflict("tool-quarantined", detail).with("tool", name)
            }
            CallError::NotExecutable { name, .. } => {
                Problem::conflict("tool-not-executable", detail).with("tool", name)
            }
            CallError::Forbidden(_) => {
                Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
            }
            CallError::InvalidArguments { tool, errors } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-arguments",
                "Invalid arguments",
                format!(
                    "the arguments do not match the input schema of {tool}: {}",
                    errors.join("; ")
                ),
            )
            .with("tool", tool)
            .with("errors", errors),
            CallError::Upstream(UpstreamError::Unavailable { server, .. }) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream-unavailable",
                "Upstream unavailable",
                detail,
            )
            .with("server", server),
            CallError::Upstream(UpstreamError::Exhausted { server, limit }) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream-connections-exhausted",
                "Upstream connections exhausted",
                detail,
            )
            .with("server", server)
            .with("max_connections", limit),
            CallError::Upstream(UpstreamError::ConnectionLost { server }) => Problem::new(
                StatusCode::BAD_GATEWAY,
                "upstream-connection-lost",
                "Upstream connection lost",
                detail,
            )
            .with("server", server),
            CallError::RateLimited { scope, retry_after } => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
                detail,
            )
            .with("scope", scope.to_string())
            .retry_after(retry_after),
            CallError::BreakerOpen {
                server,
                retry_after,
            } => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "circuit-open",
                "Upstream circuit open",
                detail,
            )
            .with("server", server)
            .retry_after(retry_after),
            CallError::Upstream(UpstreamError::Timeout { server, .. }) => Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream-timeout",
                "Upstream timeout",
                detail,
            )
            .with("server", server),
            CallError::Upstream(UpstreamError::Rpc { server, error }) => Problem::new(
                StatusCode::BAD_GATEWAY,
                "upstream-error",
                "Upstream error",
                format!("server {server} answered: {}", error.message),
            )
            .with("server", server)
            .with("code", error.code.0),
            // Unsupported comes of subscriptions, which REST does not offer,
            // and InputRequired only reaches a 2026-07-28 MCP caller (a REST
            // call is never offered the input requests): here for
            // completeness.
            CallError::Upstream(
                UpstreamError::Protocol { server, .. }
                | UpstreamError::Unsupported { server, .. }
                | UpstreamError::InputRequired { server, .. },
            ) => Problem::new(
                StatusCode::BAD_GATEWAY,
                "upstream-error",
                "Upstream error",
                detail,
            )
            .with("server", server),
            CallError::HttpTool { tool, .. } => Problem::new(
                StatusCode::BAD_GATEWAY,
                "http-tool-failed",
                "HTTP tool failed",
                detail,
            )
            .with("tool", tool),
        }
    }
}

/// `axum::Json` whose rejections are problem documents: malformed JSON is a
/// 400, a body of the wrong shape a 422 naming what is wrong, a missing
/// content type a 415, an oversized body a 413.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_problem(rejection)),
        }
    }
}

fn json_problem(rejection: JsonRejection) -> Problem {
    let status = rejection.status();
    let text = rejection.body_text();
    match rejection {
        JsonRejection::JsonDataError(_) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "Invalid request body",
            text,
        ),
        JsonRejection::JsonSyntaxError(_) => Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            "Malformed JSON",
            text,
        ),
        JsonRejection::MissingJsonContentType(_) => Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "send the body as JSON with Content-Type: application/json",
        ),
        _ if status == StatusCode::PAYLOAD_TOO_LARGE => Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "Request body too large",
            "the request body exceeds the configured limit (META_MCP_MAX_BODY_BYTES)",
        ),
        _ => Problem::new(status, "invalid-body", "Invalid request body", text),
    }
}
