//! `/api/v1/audit`: read, export and verify the audit trail; and the
//! middleware that records every state-changing `/api/v1` request.
//!
//! Reading needs `audit:read` (checked by the authentication layer). A
//! principal sees its own tenant's records; a platform admin sees every
//! tenant's (and may filter by one). Verification spans every tenant's
//! records, so it is for the default tenant's operators, like `/metrics`.

use std::{sync::Arc, time::Instant};

use axum::{
    Json, Router,
    body::Body,
    extract::{MatchedPath, Query, Request, State},
    http::{HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{Problem, Result};
use crate::{
    app::AppState,
    audit::{self, principal_fields},
    auth::{
        DEFAULT_TENANT, Principal,
        http::{Refused, forbidden},
        rbac::Permission,
    },
    store::{AuditFilter, AuditRow},
};

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/audit", get(list))
        .route("/audit/export", get(export))
        .route("/audit/verify", get(verify))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Filters {
    tenant: Option<String>,
    /// User id or username.
    actor: Option<String>,
    kind: Option<String>,
    tool: Option<String>,
    server: Option<String>,
    outcome: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;
/// How long a paging cursor stays good.
const CURSOR_LIFETIME_SECS: i64 = 3600;

/// The store filter for these query parameters, within what `principal`
/// may read.
fn filter_of(principal: &Principal, q: &Filters) -> Result<AuditFilter> {
    let tenant = match q.tenant.as_deref().filter(|t| !t.is_empty()) {
        None if principal.has(Permission::PlatformAdmin) => String::new(),
        None => principal.tenant_id.to_string(),
        Some(t) if t == &*principal.tenant_id => t.to_owned(),
        Some(t) => {
            principal
                .require(Permission::PlatformAdmin)
                .map_err(forbidden)?;
            t.to_owned()
        }
    };
    if let Some(kind) = q.kind.as_deref()
        && !matches!(kind, "" | "admin" | "tool_call" | "auth")
    {
        return Err(Problem::invalid(format!(
            "kind must be admin, tool_call or auth, got {kind:?}"
        )));
    }
    let time = |v: &Option<String>, name: &str| -> Result<String> {
        match v.as_deref().filter(|v| !v.is_empty()) {
            None => Ok(String::new()),
            Some(v) => audit::parse_time(v).ok_or_else(|| {
                Problem::invalid(format!(
                    "{name} must be an RFC 3339 time or a date (YYYY-MM-DD), got {v:?}"
                ))
            }),
        }
    };
    Ok(AuditFilter {
        tenant,
        actor: q.actor.clone().unwrap_or_default(),
        kind: q.kind.clone().unwrap_or_default(),
        tool: q.tool.clone().unwrap_or_default(),
        server: q.server.clone().unwrap_or_default(),
        outcome: q.outcome.clone().unwrap_or_default(),
        since: time(&q.since, "since")?,
        until: time(&q.until, "until")?,
    })
}

/// What a cursor is bound to: the caller and the filters, so it cannot be
/// replayed by someone else or against another listing.
fn cursor_scope(principal: &Principal, f: &AuditFilter) -> String {
    serde_json::to_string(&json!([
        &*principal.tenant_id,
        &*principal.user_id,
        f.tenant,
        f.actor,
        f.kind,
        f.tool,
        f.server,
        f.outcome,
        f.since,
        f.until
    ]))
    .unwrap_or_default()
}

fn seal_cursor(state: &AppState, scope: &str, last_id: &str) -> String {
    let expires = crate::auth::tokens::now_secs() + CURSOR_LIFETIME_SECS;
    let payload = format!("{last_id}.{expires}");
    let mac = state
        .pipeline
        .audit
        .keys()
        .cursor_mac(&format!("{payload}.{scope}"));
    format!("{}.{mac}", URL_SAFE_NO_PAD.encode(payload))
}

fn open_cursor(state: &AppState, scope: &str, cursor: &str) -> Result<String> {
    let bad = || {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-cursor",
            "Invalid cursor",
            "the cursor is malformed, expired, or was issued for another listing",
        )
    };
    let (payload, mac) = cursor.split_once('.').ok_or_else(bad)?;
    let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| bad())?;
    let payload = String::from_utf8(payload).map_err(|_| bad())?;
    let expected = state
        .pipeline
        .audit
        .keys()
        .cursor_mac(&format!("{payload}.{scope}"));
    if !audit::chain::constant_time_eq(&expected, mac) {
        return Err(bad());
    }
    let (id, expires) = payload.rsplit_once('.').ok_or_else(bad)?;
    let expires: i64 = expires.parse().map_err(|_| bad())?;
    if expires < crate::auth::tokens::now_secs() {
        return Err(bad());
    }
    Ok(id.to_owned())
}

fn parse_query(
    query: std::result::Result<Query<Filters>, axum::extract::rejection::QueryRejection>,
) -> Result<Filters> {
    query
        .map(|Query(q)| q)
        .map_err(|e| Problem::invalid(e.body_text()))
}

/// `GET /audit`: records newest first, a page at a time.
async fn list(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    query: std::result::Result<Query<Filters>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>> {
    let q = parse_query(query)?;
    let filter = filter_of(&principal, &q)?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Problem::invalid(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let scope = cursor_scope(&principal, &filter);
    let before = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => Some(open_cursor(&state, &scope, c)?),
        None => None,
    };
    // One more than asked tells whether another page follows.
    let mut records = state
        .store
        .audit_list(&filter, before.as_deref(), limit + 1)
        .await?;
    let more = records.len() as i64 > limit;
    records.truncate(limit as usize);
    let next_cursor = more
        .then(|| records.last().map(|r| seal_cursor(&state, &scope, &r.id)))
        .flatten();
    Ok(Json(json!({
        "records": records,
        "limit": limit,
        "next_cursor": next_cursor,
    })))
}

/// `GET /audit/export`: every matching record as JSON lines, oldest first,
/// streamed page by page.
async fn export(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    query: std::result::Result<Query<Filters>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    let q = parse_query(query)?;
    if q.limit.is_some() || q.cursor.is_some() {
        return Err(Problem::invalid(
            "an export has every matching record: limit and cursor do not apply",
        ));
    }
    let filter = filter_of(&principal, &q)?;
    const PAGE: i64 = 1000;
    let stream = futures::stream::unfold(
        (state, filter, String::new(), false),
        |(state, filter, after, done)| async move {
            if done {
                return None;
            }
            match state.store.audit_export_page(&filter, &after, PAGE).await {
                Ok(page) => {
                    let last = page.last().map(|r| r.id.clone());
                    let done = page.len() < PAGE as usize;
                    if page.is_empty() {
                        return None;
                    }
                    let mut chunk = Vec::new();
                    for row in &page {
                        if serde_json::to_writer(&mut chunk, row).is_ok() {
                            chunk.push(b'\n');
                        }
                    }
                    Some((
                        Ok::<_, std::io::Error>(bytes::Bytes::from(chunk)),
                        (state, filter, last.unwrap_or_default(), done),
                    ))
                }
                Err(e) => {
                    // The status is sent already: end the stream with an
                    // error, which the client sees as a broken transfer.
                    tracing::error!(error = %e, "audit export failed");
                    Some((
                        Err(std::io::Error::other("audit export failed")),
                        (state, filter, after, true),
                    ))
                }
            }
        },
    );
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        )],
        Body::from_stream(stream),
    )
        .into_response())
}

/// `GET /audit/verify`: checks every chain (as `metamcp audit verify`).
async fn verify(State(state): State<Arc<AppState>>, principal: Principal) -> Result<Json<Value>> {
    if &*principal.tenant_id != DEFAULT_TENANT {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            "the audit chains span every tenant: verification is for the default tenant's operators",
        ));
    }
    let reports = audit::verify(&state.store, state.pipeline.audit.keys(), &[]).await?;
    let ok = reports.iter().all(|r| r.breaks.is_empty());
    // A break found is an event operators subscribe to (webhooks).
    for report in reports.iter().filter(|r| !r.breaks.is_empty()) {
        let first = &report.breaks[0];
        state
            .events
            .publish(crate::events::Event::AuditChainBroken {
                tenant: None,
                chain: report.chain_id.clone(),
                record: match first {
                    audit::chain::Break::Changed { id, .. }
                    | audit::chain::Break::Duplicate { id, .. }
                    | audit::chain::Break::BeyondHead { id, .. } => Some(id.clone()),
                    _ => None,
                },
                reason: first.to_string(),
            });
    }
    let breaks: Vec<Value> = reports
        .iter()
        .flat_map(|r| {
            r.breaks
                .iter()
                .map(|b| json!({"chain_id": r.chain_id, "break": b, "message": b.to_string()}))
        })
        .collect();
    Ok(Json(json!({"ok": ok, "chains": reports, "breaks": breaks})))
}

// ---- recording changes ------------------------------------------------

/// The kind of record a request makes, or `None` when the middleware does
/// not record it: reads, tool executions (the pipeline records those) and
/// logins (the login handler records those, with who tried).
fn recorded_kind(method: &Method, route: &str) -> Option<&'static str> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    match route {
        // Recorded here only when the authentication layer refused it
        // (see `record_changes`).
        EXECUTE_ROUTE => Some("tool_call"),
        "/api/v1/auth/login" | "/api/v1/auth/refresh" => None,
        "/api/v1/auth/logout" => Some("auth"),
        r if r.starts_with("/api/v1/") => Some("admin"),
        _ => None,
    }
}

const EXECUTE_ROUTE: &str = "/api/v1/tools/{name}/execute";

/// The values of the route's parameters in `path`, joined by `/`.
fn path_target(route: &str, path: &str) -> Option<String> {
    let mut values = Vec::new();
    let mut actual = path.split('/');
    for segment in route.split('/') {
        let value = actual.next();
        if segment.starts_with("{*") {
            let rest: Vec<&str> = value.into_iter().chain(actual.by_ref()).collect();
            values.push(percent_decode(&rest.join("/")));
            break;
        }
        if segment.starts_with('{') {
            values.push(percent_decode(value.unwrap_or_default()));
        }
    }
    (!values.is_empty()).then(|| values.join("/"))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The largest response body read for the name of what a request created.
const MAX_CREATED_BODY: usize = 64 * 1024;

/// The name or id of what a `201 Created` answer describes (never any other
/// field: a created API key's answer carries its secret).
async fn created_target(response: Response) -> (Response, Option<String>) {
    let small = axum::body::HttpBody::size_hint(response.body())
        .upper()
        .is_some_and(|n| n as usize <= MAX_CREATED_BODY);
    if !small {
        return (response, None);
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_CREATED_BODY).await else {
        return (Response::from_parts(parts, Body::empty()), None);
    };
    let target = serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| {
        ["name", "username", "id"]
            .iter()
            .find_map(|k| v.get(k).and_then(Value::as_str).map(str::to_owned))
    });
    (Response::from_parts(parts, Body::from(bytes)), target)
}

fn outcome_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        s if s < 400 => "success",
        401 | 403 => "denied",
        s if s < 500 => "rejected",
        _ => "error",
    }
}

/// The middleware: records every state-changing `/api/v1` request of an
/// authenticated principal (refused ones too) with its route, target and
/// status. It sits outside the authentication layer, which hands the
/// principal back on the response.
pub async fn record_changes(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let kind = route
        .as_deref()
        .and_then(|r| recorded_kind(request.method(), r));
    let (Some(route), Some(kind)) = (route, kind) else {
        return next.run(request).await;
    };
    if !state.pipeline.audit.enabled() {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let target = path_target(&route, request.uri().path());
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(audit::field);
    let started = Instant::now();
    let response = next.run(request).await;
    // Unauthenticated requests are not recorded: they changed nothing, and
    // anyone could flood the trail with them.
    let Some(principal) = response.extensions().get::<Principal>().cloned() else {
        return response;
    };
    let refused = response.extensions().get::<Refused>().copied();
    // An execution the pipeline saw is recorded by the pipeline; one the
    // authentication layer refused never reached it.
    if kind == "tool_call" && refused.is_none() {
        return response;
    }
    let status = response.status();
    let (response, created) = if status == StatusCode::CREATED && target.is_none() {
        created_target(response).await
    } else {
        (response, None)
    };
    let tool = (kind == "tool_call").then(|| target.clone()).flatten();
    let row = AuditRow {
        kind: kind.into(),
        action: if kind == "tool_call" {
            "tools/call".into()
        } else {
            format!("{method} {route}")
        },
        tool: tool.as_deref().map(audit::field),
        detail: refused.map(|_| "forbidden".to_owned()),
        target: target.or(created).map(|t| audit::field(&t)),
        outcome: outcome_of(status).into(),
        status: Some(i64::from(status.as_u16())),
        duration_us: Some(started.elapsed().as_micros().min(i64::MAX as u128) as i64),
        request_id,
        ..principal_fields(&principal)
    };
    state.pipeline.audit.record(row).await;
    response
}

/// Records a login attempt that reached the credential check: who (the
/// user, or the name tried), which tenant, and whether it succeeded.
pub async fn record_login(
    state: &AppState,
    tenant: &str,
    username: &str,
    user_id: Option<&str>,
    succeeded: bool,
) {
    let row = AuditRow {
        kind: "auth".into(),
        tenant_id: audit::field(tenant),
        actor_id: user_id.map(str::to_owned),
        actor_name: Some(audit::field(username)),
        auth_method: Some("password".into()),
        action: "POST /api/v1/auth/login".into(),
        outcome: if succeeded { "success" } else { "denied" }.into(),
        status: Some(if succeeded { 200 } else { 401 }),
        ..Default::default()
    };
    state.pipeline.audit.record(row).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_come_from_the_route_parameters() {
        assert_eq!(
            path_target("/api/v1/servers/{name}", "/api/v1/servers/remote").as_deref(),
            Some("remote")
        );
        assert_eq!(
            path_target(
                "/api/v1/tools/{name}/approve",
                "/api/v1/tools/a%20b/approve"
            )
            .as_deref(),
            Some("a b")
        );
        assert_eq!(path_target("/api/v1/servers", "/api/v1/servers"), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn only_changes_are_recorded_and_executions_once() {
        assert_eq!(recorded_kind(&Method::GET, "/api/v1/servers"), None);
        assert_eq!(
            recorded_kind(&Method::POST, "/api/v1/servers"),
            Some("admin")
        );
        assert_eq!(
            recorded_kind(&Method::DELETE, "/api/v1/auth/keys/{id}"),
            Some("admin")
        );
        assert_eq!(
            recorded_kind(&Method::POST, "/api/v1/auth/logout"),
            Some("auth")
        );
        assert_eq!(
            recorded_kind(&Method::POST, "/api/v1/tools/{name}/execute"),
            Some("tool_call")
        );
        assert_eq!(recorded_kind(&Method::POST, "/mcp"), None);
    }
}
