//! Checks that apply to every request on the listener, REST and MCP alike:
//! `Host` (against DNS rebinding) and `Origin` (against cross-site requests
//! from browsers).

use std::sync::Arc;

use axum::{
    extract::Request,
    http::{HeaderMap, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::api::error::Problem;

/// The allowed `Host` values and `Origin`s of the listener.
#[derive(Debug, Clone)]
pub struct HostGuard {
    /// Host names, or `host:port` authorities; `*` allows any.
    hosts: Vec<String>,
    /// Origins (`scheme://host[:port]`); empty means loopback origins only;
    /// `*` allows any.
    origins: Vec<String>,
    /// Loopback hosts whose origins stay allowed after
    /// [`HostGuard::also_allow_origins`] made `origins` non-empty.
    loopback_default: Vec<String>,
}

impl HostGuard {
    pub fn new(hosts: Vec<String>, origins: Vec<String>) -> Self {
        Self {
            hosts: hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect(),
            origins: origins
                .into_iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            loopback_default: Vec::new(),
        }
    }

    /// Also accepts these origins (the CORS origins, whose requests must
    /// pass this guard too), keeping the loopback default when no
    /// `META_MCP_ALLOWED_ORIGINS` are set.
    pub fn also_allow_origins(mut self, extra: &[String]) -> Self {
        if extra.is_empty() {
            return self;
        }
        if self.origins.is_empty() {
            for host in ["localhost", "127.0.0.1", "[::1]"] {
                self.loopback_default.push(host.to_owned());
            }
        }
        self.origins.extend(
            extra
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase()),
        );
        self
    }

    fn host_allowed(&self, authority: &str) -> bool {
        let authority = authority.to_ascii_lowercase();
        let host = strip_port(&authority);
        self.hosts
            .iter()
            .any(|h| h == "*" || *h == authority || *h == host)
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        if self.origins.is_empty() {
            // Loopback origins only, on any port.
            return url::Url::parse(&origin).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"))
            });
        }
        self.origins.iter().any(|o| o == "*" || *o == origin)
            || (!self.loopback_default.is_empty()
                && url::Url::parse(&origin).is_ok_and(|u| {
                    matches!(u.scheme(), "http" | "https")
                        && u.host_str()
                            .is_some_and(|h| self.loopback_default.iter().any(|l| l == h))
                }))
    }

    fn check(&self, uri: &axum::http::Uri, headers: &HeaderMap) -> Result<(), Problem> {
        let authority = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| uri.authority().map(|a| a.to_string()));
        match authority {
            Some(a) if self.host_allowed(&a) => {}
            other => {
                return Err(Problem::new(
                    StatusCode::FORBIDDEN,
                    "forbidden-host",
                    "Host not allowed",
                    format!(
                        "Host {:?} is not served here; add it to META_MCP_ALLOWED_HOSTS",
                        other.unwrap_or_default()
                    ),
                ));
            }
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("<invalid>");
            if !self.origin_allowed(origin) {
                return Err(Problem::new(
                    StatusCode::FORBIDDEN,
                    "forbidden-origin",
                    "Origin not allowed",
                    format!("Origin {origin:?} is not allowed; add it to META_MCP_ALLOWED_ORIGINS"),
                ));
            }
        }
        Ok(())
    }
}

/// `host`, `host:port`, `[v6]:port` → the host part.
fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest
            .split(']')
            .next()
            .map_or(authority, |h| &authority[..h.len() + 2]);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// The middleware: refuse before any handler runs.
pub async fn enforce(
    guard: axum::extract::State<Arc<HostGuard>>,
    request: Request,
    next: Next,
) -> Response {
    match guard.check(request.uri(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(problem) => {
            tracing::warn!(detail = %problem.detail, "request refused by host/origin guard");
            problem.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(host: &str, origin: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().unwrap());
        }
        h
    }

    #[test]
    fn localhost_only_by_default() {
        let g = HostGuard::new(
            vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()],
            vec![],
        );
        let uri = "/mcp".parse().unwrap();
        assert!(g.check(&uri, &headers("127.0.0.1:8000", None)).is_ok());
        assert!(g.check(&uri, &headers("[::1]:8000", None)).is_ok());
        assert!(
            g.check(&uri, &headers("localhost", Some("http://localhost:3000")))
                .is_ok()
        );
        assert!(g.check(&uri, &headers("evil.example", None)).is_err());
        assert!(
            g.check(
                &uri,
                &headers("127.0.0.1:8000", Some("https://evil.example"))
            )
            .is_err()
        );
        assert!(
            g.check(&uri, &headers("127.0.0.1:8000", Some("null")))
                .is_err()
        );
    }

    #[test]
    fn configured_hosts_and_origins() {
        let g = HostGuard::new(
            vec!["gw.example.com".into()],
            vec!["https://app.example.com".into()],
        );
        let uri = "/".parse().unwrap();
        assert!(
            g.check(
                &uri,
                &headers("gw.example.com:443", Some("https://app.example.com"))
            )
            .is_ok()
        );
        assert!(g.check(&uri, &headers("localhost", None)).is_err());
    }

    #[test]
    fn cors_origins_pass_and_keep_the_loopback_default() {
        let g = HostGuard::new(vec!["localhost".into()], vec![])
            .also_allow_origins(&["https://app.example.com".into()]);
        let uri = "/".parse().unwrap();
        for ok in ["https://app.example.com", "http://localhost:5173"] {
            assert!(
                g.check(&uri, &headers("localhost", Some(ok))).is_ok(),
                "{ok}"
            );
        }
        assert!(
            g.check(&uri, &headers("localhost", Some("https://evil.example")))
                .is_err()
        );
    }
}
