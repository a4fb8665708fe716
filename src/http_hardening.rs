//! Response hardening for the whole listener, REST and MCP alike: security
//! headers on every response (errors included), and CORS, closed unless
//! `META_MCP_CORS_ORIGINS` names origins.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{Request, State},
    http::{HeaderName, HeaderValue, Method, header},
    middleware::Next,
    response::Response,
};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::Settings;

/// The policy of API answers (JSON, SSE, problems): nothing may load,
/// nothing may frame them.
const CSP_API: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
/// The policy of HTML pages (the API docs): their own inline styles and
/// images, no script at all.
const CSP_HTML: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
/// Two years, the HSTS preload minimum.
const HSTS: &str = "max-age=63072000; includeSubDomains";
/// Answers under this prefix carry tokens: never stored by a cache.
const AUTH_PREFIX: &str = "/api/v1/auth/";

/// Which security headers the listener adds.
#[derive(Debug, Clone)]
pub struct SecurityHeaders {
    /// `Strict-Transport-Security`, only when the public URL is https.
    hsts: bool,
}

impl SecurityHeaders {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            hsts: settings
                .public_url
                .as_ref()
                .is_some_and(|u| u.scheme() == "https"),
        }
    }

    /// Adds the headers a handler did not set itself (a handler may give a
    /// page its own `Content-Security-Policy`).
    fn apply(&self, path: &str, response: &mut Response) {
        let html = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/html"));
        let headers = response.headers_mut();
        let mut set = |name: HeaderName, value: &'static str| {
            headers
                .entry(name)
                .or_insert_with(|| HeaderValue::from_static(value));
        };
        set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
        set(header::X_FRAME_OPTIONS, "DENY");
        set(header::REFERRER_POLICY, "no-referrer");
        set(
            header::CONTENT_SECURITY_POLICY,
            if html { CSP_HTML } else { CSP_API },
        );
        set(
            HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        );
        if self.hsts {
            set(header::STRICT_TRANSPORT_SECURITY, HSTS);
        }
        if path.starts_with(AUTH_PREFIX) {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        }
    }
}

/// The middleware: adds the security headers to every response.
pub async fn security_headers(
    State(policy): State<Arc<SecurityHeaders>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    policy.apply(&path, &mut response);
    response
}

/// Request headers a browser client may send cross-origin.
const ALLOWED_HEADERS: [&str; 10] = [
    "authorization",
    "content-type",
    "accept",
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "last-event-id",
    "x-api-key",
    "x-request-id",
];

/// Response headers a browser client may read.
const EXPOSED_HEADERS: [&str; 4] = [
    "mcp-session-id",
    "mcp-protocol-version",
    "www-authenticate",
    "x-request-id",
];

/// The CORS layer for the configured origins; `None` (CORS closed: no
/// cross-origin reads, preflights unanswered) when none are configured.
pub fn cors_layer(settings: &Settings) -> Option<CorsLayer> {
    if settings.cors_origins.is_empty() {
        return None;
    }
    let origin = if settings.cors_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            settings
                .cors_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(origin)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers(ALLOWED_HEADERS.map(HeaderName::from_static))
            .expose_headers(EXPOSED_HEADERS.map(HeaderName::from_static))
            .allow_credentials(settings.cors_allow_credentials)
            .max_age(Duration::from_secs(600)),
    )
}

/// Checks a `META_MCP_CORS_ORIGINS` list: exact origins
/// (`scheme://host[:port]`, no path), or `*` alone.
pub fn parse_cors_origins(value: &str) -> Result<Vec<String>, String> {
    let origins: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('/').to_owned())
        .collect();
    if origins.iter().any(|o| o == "*") {
        if origins.len() > 1 {
            return Err("`*` allows every origin: give it alone".into());
        }
        return Ok(origins);
    }
    for origin in &origins {
        let url = url::Url::parse(origin)
            .map_err(|_| format!("{origin:?} is not an origin like https://app.example.com"))?;
        let exact = url.origin().ascii_serialization();
        if !matches!(url.scheme(), "http" | "https") || exact != origin.to_ascii_lowercase() {
            return Err(format!(
                "{origin:?} is not an origin like https://app.example.com (scheme, host and port only)"
            ));
        }
    }
    Ok(origins)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_origins_are_exact() {
        assert_eq!(
            parse_cors_origins("https://a.example, http://localhost:3000/").unwrap(),
            ["https://a.example", "http://localhost:3000"]
        );
        assert_eq!(parse_cors_origins("*").unwrap(), ["*"]);
        for bad in [
            "https://a.example/path",
            "a.example",
            "*,https://a.example",
            "ftp://a.example",
        ] {
            assert!(parse_cors_origins(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn headers_by_kind_and_path() {
        let policy = SecurityHeaders { hsts: true };
        let mut json = Response::new(axum::body::Body::empty());
        json.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        policy.apply("/api/v1/auth/login", &mut json);
        let h = json.headers();
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], CSP_API);
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
        assert_eq!(h[header::STRICT_TRANSPORT_SECURITY], HSTS);

        let mut html = Response::new(axum::body::Body::empty());
        html.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        html.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        SecurityHeaders { hsts: false }.apply("/api/v1/docs", &mut html);
        let h = html.headers();
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], CSP_HTML);
        assert_eq!(h[header::CACHE_CONTROL], "no-cache", "kept outside auth");
        assert!(h.get(header::STRICT_TRANSPORT_SECURITY).is_none());
    }
}
