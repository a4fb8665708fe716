//! `/api/v1/users`, `/roles`, `/grants` and `/tenants`: who may do what.
//! The authentication layer already required `users:admin` (tenants:
//! `platform:admin`); here each change is also checked against the actor's
//! own rights, so nobody hands out more than they have.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::IntoResponse,
    routing::{delete, get},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiJson, Problem, Result};
use crate::{
    app::AppState,
    auth::{
        Principal, format_time,
        http::forbidden,
        password,
        rbac::{self, Permission, Permissions},
        tokens,
    },
    store::{GrantRow, RoleRow, UserRow},
};

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/users", get(list_users).post(create_user))
        .route("/users/{id}", get(read_user).patch(update_user))
        .route("/roles", get(list_roles).post(create_role))
        .route("/roles/{name}", delete(delete_role))
        .route("/grants", get(list_grants).post(create_grant))
        .route("/grants/{id}", delete(delete_grant))
        .route("/tenants", get(list_tenants).post(create_tenant))
}

/// A user as the API shows it: never the password hash.
pub fn describe_user(u: &UserRow) -> Value {
    json!({
        "id": u.id,
        "username": u.username,
        "tenant": u.tenant_id,
        "roles": u.roles,
        "clearance": u.clearance,
        "disabled": u.disabled,
        "created_at": u.created_at,
        "updated_at": u.updated_at,
    })
}

fn unknown_user(id: &str) -> Problem {
    Problem::not_found("unknown-user", format!("no user with id {id}"))
}

/// Checks role names and that the actor holds every permission they give.
fn check_roles(state: &AppState, actor: &Principal, tenant: &str, roles: &[String]) -> Result<()> {
    for role in roles {
        let Some(def) = state.identity.role(tenant, role) else {
            return Err(Problem::invalid(format!("unknown role {role:?}")));
        };
        if !actor.permissions.contains_all(def.permissions) || def.clearance > actor.clearance {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Forbidden",
                format!("role {role} gives rights you do not have"),
            ));
        }
    }
    Ok(())
}

async fn list_users(
    State(state): State<Arc<AppState>>,
    principal: Principal,
) -> Result<Json<Value>> {
    let users = state
        .identity
        .store()
        .list_users(&principal.tenant_id)
        .await?;
    let users: Vec<Value> = users.iter().map(describe_user).collect();
    Ok(Json(json!({ "users": users, "total": users.len() })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    username: String,
    password: String,
    #[serde(default = "default_roles")]
    roles: Vec<String>,
    #[serde(default)]
    clearance: Option<i64>,
    /// Platform admins: create the user in another tenant.
    #[serde(default)]
    tenant: Option<String>,
}

fn default_roles() -> Vec<String> {
    vec!["user".into()]
}

fn check_username(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'))
    {
        return Err(Problem::invalid(
            "username must have 1 to 64 of the characters A-Z a-z 0-9 _ - . @",
        ));
    }
    Ok(())
}

fn check_clearance(actor: &Principal, clearance: Option<i64>) -> Result<()> {
    match clearance {
        Some(c) if !(0..=100).contains(&c) => {
            Err(Problem::invalid("clearance must be between 0 and 100"))
        }
        Some(c) if c > actor.clearance => Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            "you cannot give a clearance above your own",
        )),
        _ => Ok(()),
    }
}

async fn create_user(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<impl IntoResponse> {
    let tenant = match body.tenant.as_deref() {
        None => principal.tenant_id.to_string(),
        Some(t) if t == &*principal.tenant_id => t.to_owned(),
        Some(t) => {
            principal
                .require(Permission::PlatformAdmin)
                .map_err(forbidden)?;
            let known = state.identity.store().list_tenants().await?;
            if !known.iter().any(|(id, _, _)| id == t) {
                return Err(Problem::not_found(
                    "unknown-tenant",
                    format!("no tenant {t}"),
                ));
            }
            t.to_owned()
        }
    };
    check_username(&body.username)?;
    password::check_strength(&body.password).map_err(Problem::invalid)?;
    let roles = rbac::normalize_roles(&body.roles);
    check_roles(&state, &principal, &tenant, &roles)?;
    check_clearance(&principal, body.clearance)?;
    let pw = body.password;
    let hash = tokio::task::spawn_blocking(move || password::hash(&pw))
        .await
        .map_err(|_| Problem::internal())?
        .map_err(|_| Problem::internal())?;
    let now = format_time(tokens::now_secs());
    let user = UserRow {
        id: uuid::Uuid::now_v7().to_string(),
        tenant_id: tenant,
        username: body.username,
        password_hash: hash,
        roles,
        clearance: body.clearance,
        disabled: false,
        sessions_valid_after: 0,
        created_at: now.clone(),
        updated_at: now,
    };
    state
        .identity
        .store()
        .insert_user(&user)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict => Problem::conflict(
                "user-exists",
                format!("a user named {} already exists", user.username),
            ),
            other => other.into(),
        })?;
    Ok((StatusCode::CREATED, Json(describe_user(&user))))
}

async fn tenant_user(state: &AppState, principal: &Principal, id: &str) -> Result<UserRow> {
    state
        .identity
        .store()
        .user_by_id(id)
        .await?
        .filter(|u| u.tenant_id == *principal.tenant_id)
        .ok_or_else(|| unknown_user(id))
}

async fn read_user(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    Ok(Json(describe_user(
        &tenant_user(&state, &principal, &id).await?,
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserChange {
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    roles: Option<Vec<String>>,
    #[serde(default)]
    clearance: Option<i64>,
    #[serde(default)]
    disabled: Option<bool>,
}

async fn update_user(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(change): ApiJson<UserChange>,
) -> Result<Json<Value>> {
    let mut user = tenant_user(&state, &principal, &id).await?;
    // Someone with more rights than the actor is out of the actor's reach.
    let (target_rights, target_clearance) =
        state.identity.role_rights(&user.tenant_id, &user.roles);
    if !principal.permissions.contains_all(target_rights)
        || user.clearance.unwrap_or(target_clearance) > principal.clearance
    {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            "this user has rights you do not have",
        ));
    }
    if let Some(roles) = &change.roles {
        let roles = rbac::normalize_roles(roles);
        check_roles(&state, &principal, &user.tenant_id, &roles)?;
        if user.id == *principal.user_id && !roles.iter().any(|r| user.roles.contains(r)) {
            // Not a security rule (one can only lower oneself) but a guard
            // against locking the last admin out by accident.
            tracing::warn!(user = %user.id, "user changed their own roles");
        }
        user.roles = roles;
    }
    if change.clearance.is_some() {
        check_clearance(&principal, change.clearance)?;
        user.clearance = change.clearance;
    }
    let mut revoke = false;
    if let Some(pw) = change.password {
        password::check_strength(&pw).map_err(Problem::invalid)?;
        user.password_hash = tokio::task::spawn_blocking(move || password::hash(&pw))
            .await
            .map_err(|_| Problem::internal())?
            .map_err(|_| Problem::internal())?;
        revoke = true;
    }
    if let Some(disabled) = change.disabled {
        if disabled && user.id == *principal.user_id {
            return Err(Problem::invalid("you cannot disable yourself"));
        }
        revoke |= disabled;
        user.disabled = disabled;
    }
    if revoke {
        user.sessions_valid_after = tokens::now_secs();
    }
    if !state.identity.store().update_user(&user).await? {
        return Err(unknown_user(&id));
    }
    if revoke {
        // Ends every session: refresh tokens now, access tokens issued
        // until now from the next request on.
        state.identity.store().revoke_user_refresh(&user.id).await?;
    }
    state.identity.user_changed(&user.id).await;
    Ok(Json(describe_user(&user)))
}

fn describe_role(r: &rbac::RoleDef) -> Value {
    json!({
        "name": r.name,
        "permissions": r.permissions.names(),
        "clearance": r.clearance,
        "builtin": r.builtin,
        "description": r.description,
    })
}

async fn list_roles(State(state): State<Arc<AppState>>, principal: Principal) -> Json<Value> {
    let roles: Vec<Value> = state
        .identity
        .roles(&principal.tenant_id)
        .iter()
        .map(describe_role)
        .collect();
    Json(json!({ "roles": roles, "total": roles.len() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRole {
    name: String,
    permissions: Vec<String>,
    #[serde(default)]
    clearance: Option<i64>,
    #[serde(default)]
    description: Option<String>,
}

async fn create_role(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiJson(body): ApiJson<NewRole>,
) -> Result<impl IntoResponse> {
    check_username(&body.name)?;
    if rbac::builtin_role(&body.name).is_some() {
        return Err(Problem::conflict(
            "role-exists",
            format!("{} is a built-in role", body.name),
        ));
    }
    let permissions = Permissions::parse(&body.permissions).map_err(Problem::invalid)?;
    if !principal.permissions.contains_all(permissions) {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            "a role cannot give permissions you do not have",
        ));
    }
    check_clearance(&principal, body.clearance)?;
    state
        .identity
        .store()
        .insert_role(&RoleRow {
            tenant_id: principal.tenant_id.to_string(),
            name: body.name.clone(),
            permissions: permissions.names(),
            clearance: body.clearance,
            description: body.description,
        })
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict => {
                Problem::conflict("role-exists", format!("a role named {} exists", body.name))
            }
            other => other.into(),
        })?;
    state.identity.policy_changed().await?;
    let role = state
        .identity
        .role(&principal.tenant_id, &body.name)
        .ok_or_else(Problem::internal)?;
    Ok((StatusCode::CREATED, Json(describe_role(&role))))
}

async fn delete_role(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    if !state
        .identity
        .store()
        .delete_role(&principal.tenant_id, &name)
        .await?
    {
        return Err(Problem::not_found(
            "unknown-role",
            format!("no custom role named {name}"),
        ));
    }
    // Its grants go with it: a role created later under the same name must
    // not inherit them.
    for grant in state
        .identity
        .store()
        .list_grants(&principal.tenant_id)
        .await?
        .into_iter()
        .filter(|g| g.subject_kind == "role" && g.subject == name)
    {
        state
            .identity
            .store()
            .delete_grant(&principal.tenant_id, &grant.id)
            .await?;
    }
    state.identity.policy_changed().await?;
    Ok(StatusCode::NO_CONTENT)
}

fn describe_grant(g: &GrantRow) -> Value {
    json!({
        "id": g.id,
        "subject_kind": g.subject_kind,
        "subject": g.subject,
        "effect": g.effect,
        "resource_kind": g.resource_kind,
        "pattern": g.pattern,
        "created_at": g.created_at,
    })
}

async fn list_grants(
    State(state): State<Arc<AppState>>,
    principal: Principal,
) -> Result<Json<Value>> {
    let grants = state
        .identity
        .store()
        .list_grants(&principal.tenant_id)
        .await?;
    let grants: Vec<Value> = grants.iter().map(describe_grant).collect();
    Ok(Json(json!({ "grants": grants, "total": grants.len() })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGrant {
    /// `role` or `user`.
    subject_kind: String,
    /// A role name or a user id.
    subject: String,
    effect: rbac::Effect,
    resource_kind: rbac::ResourceKind,
    /// A server name, tool name or `server/tool`, with `*` and `?`.
    pattern: String,
}

async fn create_grant(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiJson(body): ApiJson<NewGrant>,
) -> Result<impl IntoResponse> {
    match body.subject_kind.as_str() {
        "role" => {
            if state
                .identity
                .role(&principal.tenant_id, &body.subject)
                .is_none()
            {
                return Err(Problem::invalid(format!("unknown role {:?}", body.subject)));
            }
        }
        "user" => {
            tenant_user(&state, &principal, &body.subject).await?;
        }
        _ => return Err(Problem::invalid("subject_kind must be role or user")),
    }
    if body.pattern.is_empty() || body.pattern.len() > 300 {
        return Err(Problem::invalid("pattern must have 1 to 300 characters"));
    }
    let grant = GrantRow {
        id: uuid::Uuid::now_v7().to_string(),
        tenant_id: principal.tenant_id.to_string(),
        subject_kind: body.subject_kind,
        subject: body.subject,
        effect: match body.effect {
            rbac::Effect::Allow => "allow",
            rbac::Effect::Deny => "deny",
        }
        .into(),
        resource_kind: match body.resource_kind {
            rbac::ResourceKind::Server => "server",
            rbac::ResourceKind::Tool => "tool",
        }
        .into(),
        pattern: body.pattern,
        created_at: format_time(tokens::now_secs()),
    };
    state.identity.store().insert_grant(&grant).await?;
    state.identity.policy_changed().await?;
    Ok((StatusCode::CREATED, Json(describe_grant(&grant))))
}

async fn delete_grant(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    if !state
        .identity
        .store()
        .delete_grant(&principal.tenant_id, &id)
        .await?
    {
        return Err(Problem::not_found(
            "unknown-grant",
            format!("no grant with id {id}"),
        ));
    }
    state.identity.policy_changed().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_tenants(State(state): State<Arc<AppState>>) -> Result<Json<Value>> {
    let tenants: Vec<Value> = state
        .identity
        .store()
        .list_tenants()
        .await?
        .into_iter()
        .map(|(id, name, disabled)| json!({ "id": id, "name": name, "disabled": disabled }))
        .collect();
    Ok(Json(json!({ "tenants": tenants, "total": tenants.len() })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    id: String,
    name: String,
}

async fn create_tenant(
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson<NewTenant>,
) -> Result<impl IntoResponse> {
    check_username(&body.id)?;
    if !state
        .identity
        .store()
        .ensure_tenant(&body.id, &body.name)
        .await?
    {
        return Err(Problem::conflict(
            "tenant-exists",
            format!("tenant {} exists", body.id),
        ));
    }
    state.identity.policy_changed().await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": body.id, "name": body.name, "disabled": false })),
    ))
}
