//! Response hardening, seen from outside: security headers on REST, MCP and
//! error answers; CORS closed by default and open only to configured
//! origins.

use reqwest::{Method, Response};
use serde_json::json;

use crate::common::{Gateway, Options, client_with};

fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The headers every answer carries, whatever its status.
fn assert_hardened(r: &Response, what: &str) {
    assert_eq!(
        header(r, "x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(header(r, "x-frame-options"), Some("DENY"), "{what}");
    assert_eq!(header(r, "referrer-policy"), Some("no-referrer"), "{what}");
    let csp = header(r, "content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{what}: {csp:?}"
    );
}

/// A `tools/list` as the gateway's admin, from `origin` if given.
async fn mcp_list(gw: &Gateway, origin: Option<&str>) -> Response {
    let mut request = client_with(&gw.token)
        .post(gw.mcp_url())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/list");
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    request
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "it", "version": "0"}}}}),
        )
        .send()
        .await
        .expect("MCP request")
}

async fn preflight(gw: &Gateway, path: &str, origin: &str) -> Response {
    reqwest::Client::new()
        .request(Method::OPTIONS, gw.url(path))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type, mcp-session-id, mcp-protocol-version",
        )
        .send()
        .await
        .expect("preflight")
}

#[tokio::test]
async fn security_headers_on_every_answer_and_cors_closed_by_default() {
    let gw = Gateway::start(Options::default()).await;
    let client = client_with(&gw.token);
    let anonymous = reqwest::Client::new();

    let ok = client
        .get(gw.url("/api/v1/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_hardened(&ok, "REST 200");
    assert!(
        header(&ok, "strict-transport-security").is_none(),
        "no HSTS without an https public URL"
    );

    let missing = client
        .get(gw.url("/api/v1/servers/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_hardened(&missing, "REST problem");

    let unrouted = client.get(gw.url("/no/such/path")).send().await.unwrap();
    assert_hardened(&unrouted, "unrouted");

    // Refused for want of credentials, on REST and MCP.
    let unauthorized = anonymous
        .get(gw.url("/api/v1/servers"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    assert_hardened(&unauthorized, "REST 401");
    let unauthorized = anonymous
        .post(gw.mcp_url())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    assert_hardened(&unauthorized, "MCP 401");

    let mcp = mcp_list(&gw, None).await;
    assert_eq!(mcp.status(), 200);
    assert_hardened(&mcp, "MCP");
    let bad_mcp = client
        .post(gw.mcp_url())
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert!(bad_mcp.status().is_client_error());
    assert_hardened(&bad_mcp, "MCP error");

    // Refused by the host guard: still hardened.
    let refused = client
        .get(gw.url("/api/v1/health/live"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert_hardened(&refused, "host refused");

    // The docs page keeps working under its own (HTML) policy: no script.
    let docs = client.get(gw.url("/api/v1/docs")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert_hardened(&docs, "docs");
    let csp = header(&docs, "content-security-policy").unwrap();
    assert!(
        csp.contains("style-src 'unsafe-inline'") && !csp.contains("script-src"),
        "{csp}"
    );

    // Anything under /api/v1/auth/ is never cached.
    let auth = anonymous
        .post(gw.url("/api/v1/auth/login"))
        .json(&json!({"username": "admin", "password": crate::common::ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(auth.status(), 200);
    assert_eq!(header(&auth, "cache-control"), Some("no-store"));
    assert_hardened(&auth, "auth");
    let me = client.get(gw.url("/api/v1/auth/me")).send().await.unwrap();
    assert_eq!(header(&me, "cache-control"), Some("no-store"));

    // CORS closed: a cross-origin preflight gets no permission, and the
    // cross-origin request itself is refused.
    let pre = preflight(&gw, "/mcp", "https://app.example").await;
    assert!(
        header(&pre, "access-control-allow-origin").is_none(),
        "{:?}",
        pre.headers()
    );
    let cross = mcp_list(&gw, Some("https://app.example")).await;
    assert_eq!(cross.status(), 403);
    assert!(header(&cross, "access-control-allow-origin").is_none());
}

#[tokio::test]
async fn cors_opens_only_to_configured_origins() {
    let gw = Gateway::start(
        Options::default()
            .env("META_MCP_CORS_ORIGINS", "https://app.example")
            .env("META_MCP_PUBLIC_URL", "https://gw.example"),
    )
    .await;

    for path in ["/mcp", "/api/v1/servers"] {
        let pre = preflight(&gw, path, "https://app.example").await;
        assert!(pre.status().is_success(), "{path}: {}", pre.status());
        assert_eq!(
            header(&pre, "access-control-allow-origin"),
            Some("https://app.example"),
            "{path}"
        );
        let allowed = header(&pre, "access-control-allow-headers")
            .unwrap_or_default()
            .to_ascii_lowercase();
        for h in [
            "authorization",
            "content-type",
            "mcp-session-id",
            "mcp-protocol-version",
            "last-event-id",
        ] {
            assert!(allowed.contains(h), "{path}: {h} not in {allowed}");
        }
        assert!(
            header(&pre, "access-control-allow-credentials").is_none(),
            "no credentials unless configured"
        );
        assert_hardened(&pre, "preflight");

        let other = preflight(&gw, path, "https://evil.example").await;
        assert!(
            header(&other, "access-control-allow-origin").is_none(),
            "{path}: {:?}",
            other.headers()
        );
    }

    // The real request from the configured origin passes the origin guard
    // and may read the MCP session header and WWW-Authenticate.
    let r = mcp_list(&gw, Some("https://app.example")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("https://app.example")
    );
    let exposed = header(&r, "access-control-expose-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        exposed.contains("mcp-session-id") && exposed.contains("www-authenticate"),
        "{exposed}"
    );
    assert_hardened(&r, "CORS MCP");
    assert_eq!(
        header(&r, "strict-transport-security"),
        Some("max-age=63072000; includeSubDomains"),
        "HSTS with an https public URL"
    );

    // Any other origin is still refused, with no CORS permission.
    let r = mcp_list(&gw, Some("https://evil.example")).await;
    assert_eq!(r.status(), 403);
    assert!(header(&r, "access-control-allow-origin").is_none());
    // Loopback origins keep working as before.
    let r = mcp_list(&gw, Some("http://localhost:5173")).await;
    assert_eq!(r.status(), 200);
}
