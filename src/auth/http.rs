//! The identity stage on HTTP: every request but a few public ones must
//! carry credentials (a bearer token or API key, `X-API-Key`, or the
//! session cookie); the principal they prove goes into the request's
//! extensions for the handlers and the MCP layer.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{api::error::Problem, app::AppState};

use super::{AuthError, AuthMethod, Principal, rbac::Permission};

/// The session cookie the web UI authenticates with.
pub const SESSION_COOKIE: &str = "metamcp_session";
/// Header carrying the CSRF token on cookie-authenticated state changes.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Paths that answer without credentials.
fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/api/v1/auth/login"
            | "/api/v1/auth/refresh"
            | "/api/v1/health"
            | "/api/v1/health/live"
            | "/api/v1/health/ready"
            | "/api/v1/openapi.json"
            | "/api/v1/docs"
    ) || path == "/.well-known/oauth-protected-resource"
        // The web UI checks its session cookie itself (a missing one sends
        // the browser to the login page, not a 401), and its state changes
        // go through this layer again as REST calls (see `crate::ui`).
        || path == "/ui"
        || path.starts_with("/ui/")
        || path.starts_with("/.well-known/oauth-protected-resource/")
}

/// The MCP endpoints: Streamable HTTP (`/mcp`, `/mcp/{profile}`) and the
/// legacy HTTP+SSE transport (`/sse`, `/sse/{profile}`, `/messages`), which
/// all take the same credentials and scopes.
fn is_mcp(path: &str) -> bool {
    path == "/mcp"
        || path.starts_with("/mcp/")
        || path == "/sse"
        || path.starts_with("/sse/")
        || path == "/messages"
}

/// The permission a REST route needs, beyond being authenticated. Handlers
/// check finer rules (ownership, what a tool is, who is being changed).
pub fn required_permission(method: &Method, path: &str) -> Option<Permission> {
    let read = matches!(*method, Method::GET | Method::HEAD);
    let api = path.strip_prefix("/api/v1")?;
    let first = api
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    Some(match first {
        "tools" if *method == Method::POST && api.ends_with("/execute") => Permission::ToolsExecute,
        "tools" | "changes" if read => Permission::ToolsRead,
        "tools" | "changes" => Permission::ToolsWrite,
        "servers" if read => Permission::ServersRead,
        "servers" => Permission::ServersWrite,
        "profiles" if read => Permission::ProfilesRead,
        "profiles" => Permission::ProfilesWrite,
        "health" => Permission::ServersRead,
        "users" | "roles" | "grants" => Permission::UsersAdmin,
        "tenants" => Permission::PlatformAdmin,
        "audit" => Permission::AuditRead,
        "webhooks" => Permission::WebhooksManage,
        _ => return None,
    })
}

/// Marks a response as this layer's refusal for a missing permission (the
/// handler never ran), for the audit trail.
#[derive(Debug, Clone, Copy)]
pub struct Refused(pub Permission);

/// The scopes an MCP client needs, as advertised in challenges.
pub const MCP_SCOPES: &str = "tools:read tools:execute";

/// A 401 problem document (REST).
pub fn unauthorized_problem(detail: impl Into<String>) -> Problem {
    let mut p = Problem::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Unauthorized",
        detail,
    );
    p.headers.push((
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"metamcp\""),
    ));
    p
}

/// A 403 problem for a missing permission.
pub fn forbidden(permission: Permission) -> Problem {
    Problem::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "Forbidden",
        format!("this needs the permission {permission}"),
    )
    .with("permission", permission.as_str())
}

/// Where the protected-resource metadata of an MCP path lives (RFC 9728:
/// the resource path appended to the well-known prefix).
fn resource_metadata_url(state: &AppState, path: &str) -> String {
    format!(
        "{}/.well-known/oauth-protected-resource{path}",
        state.base_url()
    )
}

/// The 401 an MCP client gets: it names the resource metadata so the client
/// can discover the authorization server (MCP authorization spec).
fn mcp_challenge(state: &AppState, path: &str, error: Option<&AuthError>) -> Response {
    let mut value = format!(
        "Bearer resource_metadata=\"{}\", scope=\"{MCP_SCOPES}\"",
        resource_metadata_url(state, path)
    );
    if let Some(e) = error {
        value.push_str(&format!(
            ", error=\"invalid_token\", error_description=\"{e}\""
        ));
    }
    let mut response = unauthorized_problem(match error {
        Some(e) => e.to_string(),
        None => "authentication required".into(),
    })
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&value) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    response
}

fn insufficient_scope(state: &AppState, path: &str) -> Response {
    let mut response = Problem::new(
        StatusCode::FORBIDDEN,
        "insufficient-scope",
        "Insufficient scope",
        format!("this endpoint needs the scopes {MCP_SCOPES}"),
    )
    .into_response();
    let value = format!(
        "Bearer error=\"insufficient_scope\", scope=\"{MCP_SCOPES}\", resource_metadata=\"{}\"",
        resource_metadata_url(state, path)
    );
    if let Ok(v) = HeaderValue::from_str(&value) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    response
}

/// The credential a request carries, if any.
enum Credential<'a> {
    Bearer(&'a str),
    Cookie(&'a str),
}

fn credential(headers: &HeaderMap) -> Result<Option<Credential<'_>>, AuthError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| AuthError::Invalid)?;
        let (scheme, token) = value.split_once(' ').ok_or(AuthError::Invalid)?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(AuthError::Invalid);
        }
        return Ok(Some(Credential::Bearer(token.trim())));
    }
    if let Some(value) = headers.get("x-api-key") {
        return Ok(Some(Credential::Bearer(
            value.to_str().map_err(|_| AuthError::Invalid)?.trim(),
        )));
    }
    for value in headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(';') {
            if let Some((name, token)) = pair.trim().split_once('=')
                && name == SESSION_COOKIE
                && !token.is_empty()
            {
                return Ok(Some(Credential::Cookie(token)));
            }
        }
    }
    Ok(None)
}

/// Authenticates the request's credentials; `Ok(None)` when it has none.
pub async fn principal_of(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
) -> Result<Option<Principal>, AuthError> {
    match credential(headers)? {
        None => Ok(None),
        // A token of a configured outside issuer goes to its verifier; the
        // issuer claim only picks the verifier, which then checks it all.
        // On an MCP endpoint its exact URI is an accepted audience too.
        Some(Credential::Bearer(token)) if state.external_tokens.handles(token) => {
            use super::external::ExternalAuthError as E;
            let resource = is_mcp(path).then(|| format!("{}{path}", state.base_url()));
            let identity = state
                .external_tokens
                .verify_for(token, resource.as_deref())
                .await
                .map_err(|e| {
                    tracing::debug!(error = %e, "outside token refused");
                    match e {
                        E::Expired => AuthError::Expired,
                        E::NotYetValid | E::IssuedInFuture => AuthError::NotYetValid,
                        e if e.is_unavailable() => AuthError::Unavailable,
                        _ => AuthError::Invalid,
                    }
                })?;
            let principal = state.identity.external_principal(&identity);
            if !state.identity.tenant_active(&principal.tenant_id) {
                tracing::debug!(tenant = %principal.tenant_id, "outside token names an unknown or disabled tenant");
                return Err(AuthError::Invalid);
            }
            Ok(Some(principal))
        }
        Some(Credential::Bearer(token)) => {
            state.identity.authenticate_bearer(token).await.map(Some)
        }
        Some(Credential::Cookie(token)) => state
            .identity
            .authenticate_access_token(token, AuthMethod::Cookie)
            .await
            .map(Some),
    }
}

/// The middleware: authenticates, enforces CSRF for the cookie, guards the
/// MCP endpoint's scope and session ownership, and hands the principal on.
pub async fn authenticate(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    if is_public(&path) {
        return next.run(request).await;
    }
    if path == "/metrics"
        && let Some(expected) = state.identity.metrics_token()
        && let Some(Credential::Bearer(token)) = credential(request.headers()).ok().flatten()
        && super::tokens::secrets_equal(token, expected)
    {
        return next.run(request).await;
    }
    let mcp = is_mcp(&path);
    let metrics = path == "/metrics";
    let loopback = client_ip(request.extensions()).is_some_and(|ip| ip.is_loopback());
    let anonymous = || {
        loopback
            .then(|| state.identity.anonymous_loopback())
            .flatten()
    };
    let authenticated = tracing::Instrument::instrument(
        principal_of(&state, request.headers(), &path),
        tracing::debug_span!("auth"),
    )
    .await;
    if authenticated.is_err() {
        state.identity.metrics.auth("credentials_rejected");
    }
    let principal = match authenticated {
        Ok(Some(p)) => p,
        Ok(None) if let Some(p) = anonymous() => p,
        Ok(None) if mcp => return mcp_challenge(&state, &path, None),
        Ok(None) => return unauthorized_problem("authentication required").into_response(),
        Err(e) if mcp => return mcp_challenge(&state, &path, Some(&e)),
        Err(AuthError::Unavailable) => {
            return Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "identity-unavailable",
                "Service unavailable",
                "credentials cannot be checked right now; retry shortly",
            )
            .retry_after(std::time::Duration::from_secs(1))
            .into_response();
        }
        Err(e) => return unauthorized_problem(e.to_string()).into_response(),
    };
    if principal.method == AuthMethod::Cookie
        && !matches!(
            *request.method(),
            Method::GET | Method::HEAD | Method::OPTIONS
        )
    {
        let presented = request
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let jti = principal.credential_id.as_deref().unwrap_or_default();
        if !state.identity.csrf_matches(jti, presented) {
            return Problem::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "CSRF check failed",
                format!("a request authenticated by the session cookie must send the CSRF token in {CSRF_HEADER}"),
            )
            .into_response();
        }
    }
    if metrics && !principal.has(Permission::MetricsRead) {
        return forbidden(Permission::MetricsRead).into_response();
    }
    // The exposition names every tenant's servers and tools: it is for the
    // platform's operators (the default tenant) and the scrape token only.
    if metrics && &*principal.tenant_id != super::DEFAULT_TENANT {
        return Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            "metrics are served to the default tenant's operators and the scrape token",
        )
        .into_response();
    }
    if let Some(needed) = required_permission(request.method(), &path)
        && !principal.has(needed)
    {
        // The principal rides on the response for the audit trail, which
        // records refused changes too.
        let mut response = forbidden(needed).into_response();
        response.extensions_mut().insert(principal);
        response.extensions_mut().insert(Refused(needed));
        return response;
    }
    if mcp {
        if !principal.has(Permission::ToolsRead) {
            return insufficient_scope(&state, &path);
        }
        let session = request
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if let Some(session) = &session
            && !state.identity.session_allowed(session, &principal)
        {
            // Another principal's session answers like one that does not
            // exist: nothing about it is revealed.
            return (StatusCode::NOT_FOUND, "session not found").into_response();
        }
        request.extensions_mut().insert(principal.clone());
        let response = next.run(request).await;
        if session.is_none()
            && let Some(created) = response
                .headers()
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
        {
            state.identity.bind_session(created, &principal);
        }
        return response;
    }
    request.extensions_mut().insert(principal.clone());
    let mut response = next.run(request).await;
    response.extensions_mut().insert(principal);
    response
}

/// The client's address, when the listener recorded it.
pub fn client_ip(request_extensions: &axum::http::Extensions) -> Option<std::net::IpAddr> {
    request_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// `/.well-known/oauth-protected-resource[/<resource path>]` (RFC 9728):
/// which resource this is and who issues tokens for it.
pub async fn resource_metadata(
    State(state): State<Arc<AppState>>,
    uri: axum::http::Uri,
) -> Response {
    let suffix = uri
        .path()
        .strip_prefix("/.well-known/oauth-protected-resource")
        .unwrap_or_default();
    let resource_path = if suffix.is_empty() { "/mcp" } else { suffix };
    if !is_mcp(resource_path) {
        return Problem::not_found(
            "no-route",
            format!("{resource_path} is not a protected resource of this gateway"),
        )
        .into_response();
    }
    let body = serde_json::json!({
        "resource": format!("{}{resource_path}", state.base_url()),
        "authorization_servers": state.external_tokens.issuers(),
        "scopes_supported": super::rbac::Permission::ALL.map(|p| p.as_str()),
        "bearer_methods_supported": ["header"],
        "resource_name": "metamcp",
    });
    axum::Json(body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_the_permission_of_what_they_touch() {
        let need = |m: Method, p: &str| required_permission(&m, p);
        assert_eq!(
            need(Method::GET, "/api/v1/tools"),
            Some(Permission::ToolsRead)
        );
        assert_eq!(
            need(Method::GET, "/api/v1/tools/search"),
            Some(Permission::ToolsRead)
        );
        assert_eq!(
            need(Method::POST, "/api/v1/tools"),
            Some(Permission::ToolsWrite)
        );
        assert_eq!(
            need(Method::DELETE, "/api/v1/tools/x"),
            Some(Permission::ToolsWrite)
        );
        assert_eq!(
            need(Method::POST, "/api/v1/tools/x/execute"),
            Some(Permission::ToolsExecute)
        );
        assert_eq!(
            need(Method::POST, "/api/v1/tools/x/approve"),
            Some(Permission::ToolsWrite)
        );
        assert_eq!(
            need(Method::GET, "/api/v1/servers/a"),
            Some(Permission::ServersRead)
        );
        assert_eq!(
            need(Method::POST, "/api/v1/servers"),
            Some(Permission::ServersWrite)
        );
        assert_eq!(
            need(Method::GET, "/api/v1/health/detailed"),
            Some(Permission::ServersRead)
        );
        assert_eq!(
            need(Method::GET, "/api/v1/users"),
            Some(Permission::UsersAdmin)
        );
        assert_eq!(
            need(Method::POST, "/api/v1/tenants"),
            Some(Permission::PlatformAdmin)
        );
        assert_eq!(need(Method::GET, "/api/v1/auth/me"), None);
        assert_eq!(
            need(Method::GET, "/api/v1/audit"),
            Some(Permission::AuditRead)
        );
        assert!(is_public("/api/v1/health/live") && !is_public("/api/v1/health/detailed"));
    }
}
