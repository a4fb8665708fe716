//! `/api/v1/auth`: log in and out, refresh, who am I, and API keys.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiJson, Problem, Result};
use crate::{
    app::AppState,
    auth::{
        AuthMethod, DEFAULT_TENANT, IssuedTokens, LoginError, Principal,
        http::{SESSION_COOKIE, forbidden},
        rbac::{Permission, Permissions},
        tokens,
    },
    store::{ApiKeyRow, UserRow},
};

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/auth/login", post(login))
        .route("/auth/refresh", post(refresh))
        .route("/auth/logout", post(logout))
        .route("/auth/me", get(me))
        .route("/auth/keys", get(list_keys).post(create_key))
        .route("/auth/keys/{id}", delete(revoke_key))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    username: String,
    password: String,
    /// The tenant to log in to (the default tenant when absent).
    #[serde(default)]
    tenant: Option<String>,
    /// Also set the session cookie (for browsers).
    #[serde(default)]
    cookie: bool,
}

fn login_problem(e: LoginError) -> Problem {
    match e {
        LoginError::BadCredentials => Problem::new(
            StatusCode::UNAUTHORIZED,
            "invalid-credentials",
            "Invalid credentials",
            "invalid username or password",
        ),
        LoginError::BadRefresh => Problem::new(
            StatusCode::UNAUTHORIZED,
            "invalid-refresh-token",
            "Invalid refresh token",
            "the refresh token is invalid, expired or revoked; log in again",
        ),
        LoginError::Throttled(wait) => Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "login-throttled",
            "Too many failed logins",
            "too many failed login attempts; wait before trying again",
        )
        .retry_after(wait),
        LoginError::Store(e) => e.into(),
        LoginError::Internal(e) => {
            tracing::error!(error = %e, "issuing tokens failed");
            Problem::internal()
        }
    }
}

/// The tokens as JSON, with the session cookie when asked for.
fn issued(state: &AppState, tokens: IssuedTokens, cookie: bool) -> Response {
    let max_age = tokens.expires_in;
    let mut response = (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(json!(tokens)),
    )
        .into_response();
    if cookie {
        let secure = state
            .settings
            .public_url
            .as_ref()
            .is_some_and(|u| u.scheme() == "https");
        let value = format!(
            "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
            tokens.access_token,
            if secure { "; Secure" } else { "" }
        );
        if let Ok(v) = HeaderValue::from_str(&value) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

async fn login(
    State(state): State<Arc<AppState>>,
    extensions: axum::http::Extensions,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response> {
    let tenant = body.tenant.as_deref().unwrap_or(DEFAULT_TENANT);
    let client = crate::auth::http::client_ip(&extensions);
    let result = state
        .identity
        .login(tenant, &body.username, &body.password, client)
        .await;
    // Attempts that reached the password check go to the audit trail
    // (throttled ones did not: they would let anyone flood it).
    match &result {
        Ok((_, user)) => {
            super::audit::record_login(&state, tenant, &body.username, Some(&user.id), true).await
        }
        Err(LoginError::BadCredentials) => {
            super::audit::record_login(&state, tenant, &body.username, None, false).await;
            // The failure that reaches the throttling limit is announced;
            // the attempts refused after it are not (they fail as throttled).
            if state
                .identity
                .login_blocked(tenant, &body.username, client)
                .await
            {
                state
                    .events
                    .publish(crate::events::Event::LoginFailedRepeatedly {
                        tenant: Arc::from(tenant),
                        username: body.username.clone(),
                        client,
                    });
            }
        }
        Err(_) => {}
    }
    let (tokens, user) = result.map_err(login_problem)?;
    tracing::info!(user = %user.id, tenant = %user.tenant_id, "login");
    Ok(issued(&state, tokens, body.cookie))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshBody {
    refresh_token: String,
    #[serde(default)]
    cookie: bool,
}

async fn refresh(
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson<RefreshBody>,
) -> Result<Response> {
    let tokens = state
        .identity
        .refresh(&body.refresh_token)
        .await
        .map_err(login_problem)?;
    Ok(issued(&state, tokens, body.cookie))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LogoutBody {
    #[serde(default)]
    refresh_token: Option<String>,
}

async fn logout(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    body: axum::body::Bytes,
) -> Result<Response> {
    // The body is optional: logging out needs only the access token.
    let body: LogoutBody = if body.iter().all(u8::is_ascii_whitespace) {
        LogoutBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            if e.is_data() {
                Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid-body",
                    "Invalid request body",
                    e.to_string(),
                )
            } else {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "malformed-json",
                    "Malformed JSON",
                    e.to_string(),
                )
            }
        })?
    };
    state
        .identity
        .logout(&principal, body.refresh_token.as_deref())
        .await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("metamcp_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    Ok(response)
}

async fn me(principal: Principal) -> Json<Value> {
    Json(json!({
        "id": &*principal.user_id,
        "username": &*principal.username,
        "tenant": &*principal.tenant_id,
        "roles": &*principal.roles,
        "permissions": principal.permissions.names(),
        "clearance": principal.clearance,
        "auth_method": principal.method,
        "scopes": &*principal.scopes,
        "expires_at": principal.expires_at.map(crate::auth::format_time),
    }))
}

/// An API key as listed: never its secret or hash.
pub fn describe_key(k: &ApiKeyRow) -> Value {
    json!({
        "id": k.id,
        "name": k.name,
        "user_id": k.user_id,
        "scopes": k.scopes,
        "expires_at": k.expires_at,
        "last_used_at": k.last_used_at,
        "revoked": k.revoked_at.is_some(),
        "revoked_at": k.revoked_at,
        "created_at": k.created_at,
        "prefix": format!("{}{}", tokens::API_KEY_PREFIX, k.id),
    })
}

#[derive(Deserialize)]
struct KeyQuery {
    /// Admins: list another user's keys (`*` for every key of the tenant).
    user: Option<String>,
}

async fn list_keys(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Query(q): Query<KeyQuery>,
) -> Result<Json<Value>> {
    let user = match q.user.as_deref() {
        None => Some(&*principal.user_id),
        Some(other) if other == &*principal.user_id => Some(other),
        Some(other) => {
            principal
                .require(Permission::UsersAdmin)
                .map_err(forbidden)?;
            (other != "*").then_some(other)
        }
    };
    let keys = state
        .identity
        .store()
        .list_api_keys(&principal.tenant_id, user)
        .await?;
    let keys: Vec<Value> = keys.iter().map(describe_key).collect();
    Ok(Json(json!({ "keys": keys, "total": keys.len() })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    name: String,
    /// Permission names the key is limited to (default: all its owner's).
    #[serde(default)]
    scopes: Vec<String>,
    /// Days until the key expires (none: it does not).
    #[serde(default)]
    expires_in_days: Option<u32>,
    /// Admins: create the key for another user of the tenant.
    #[serde(default)]
    user_id: Option<String>,
}

/// The user row of a principal's own account or, for admins, another
/// account of the same tenant.
async fn owner_row(state: &AppState, principal: &Principal, id: Option<&str>) -> Result<UserRow> {
    let id = id.unwrap_or(&principal.user_id);
    let user = state
        .identity
        .store()
        .user_by_id(id)
        .await?
        .filter(|u| u.tenant_id == *principal.tenant_id)
        .ok_or_else(|| Problem::not_found("unknown-user", format!("no user with id {id}")))?;
    if id != &*principal.user_id {
        principal
            .require(Permission::UsersAdmin)
            .map_err(forbidden)?;
        within_reach(state, principal, &user)?;
    }
    Ok(user)
}

/// An admin acts on another user's keys only if that user has no rights
/// the admin lacks: a key made for a more powerful user would be a way up.
fn within_reach(state: &AppState, principal: &Principal, user: &UserRow) -> Result<()> {
    let (rights, clearance) = state.identity.role_rights(&user.tenant_id, &user.roles);
    if principal.permissions.contains_all(rights)
        && user.clearance.unwrap_or(clearance) <= principal.clearance
    {
        Ok(())
    } else {
        Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            "this user has rights you do not have",
        ))
    }
}

async fn create_key(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<Response> {
    let name = body.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(Problem::invalid("name must have 1 to 100 characters"));
    }
    if principal.method == AuthMethod::ApiKey {
        // A key cannot mint keys: a leaked key must not be able to outlive
        // its own revocation.
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            "API keys cannot create API keys; log in as the user",
        ));
    }
    let owner = owner_row(&state, &principal, body.user_id.as_deref()).await?;
    let requested = Permissions::parse(&body.scopes).map_err(Problem::invalid)?;
    let (owner_rights, _) = state.identity.role_rights(&owner.tenant_id, &owner.roles);
    if !body.scopes.is_empty() && !owner_rights.contains_all(requested) {
        return Err(Problem::invalid(format!(
            "a key cannot carry permissions its owner lacks; the owner has {}",
            owner_rights.names().join(", ")
        )));
    }
    let expires_at = body
        .expires_in_days
        .map(|d| tokens::now_secs() + i64::from(d.clamp(1, 3650)) * 86_400);
    let (key, row) = state
        .identity
        .create_api_key(&owner, name, body.scopes, expires_at)
        .await?;
    let mut value = describe_key(&row);
    value["key"] = json!(key);
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(value),
    )
        .into_response())
}

async fn revoke_key(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let missing = || Problem::not_found("unknown-key", format!("no API key with id {id}"));
    let row = state
        .identity
        .store()
        .api_key(&id)
        .await?
        .filter(|k| k.tenant_id == *principal.tenant_id)
        .ok_or_else(missing)?;
    if row.user_id != *principal.user_id {
        if !principal.has(Permission::UsersAdmin) {
            // Someone else's key answers like a missing one.
            return Err(missing());
        }
        let owner = state
            .identity
            .store()
            .user_by_id(&row.user_id)
            .await?
            .ok_or_else(missing)?;
        within_reach(&state, &principal, &owner)?;
    }
    if !state
        .identity
        .revoke_api_key(&principal.tenant_id, &id)
        .await?
    {
        return Err(Problem::conflict(
            "key-revoked",
            format!("API key {id} is already revoked"),
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}
