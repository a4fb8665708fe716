//! `/api/v1/profiles`: named subsets of the catalog, each served as its own
//! MCP endpoint at `/mcp/{profile}`.
//!
//! Profiles belong to a tenant (those of the config file to the default
//! one) and select among that tenant's tools; every handler works in the
//! caller's tenant, so another tenant's profile answers like a missing one.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::IntoResponse,
    routing::get,
};
use serde_json::{Value, json};

use super::error::{ApiJson, Problem, Result};
use crate::{
    app::AppState,
    auth::Principal,
    catalog::profiles::{Profile, ProfileView},
    upstream::spec::Source,
};

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/profiles", get(list).post(create))
        .route("/profiles/{name}", get(read).put(update).delete(remove))
}

/// A profile as the API shows it: its definition, its endpoint, and the
/// tools it selects now.
fn describe(state: &AppState, view: &ProfileView) -> Value {
    let mut value = serde_json::to_value(&view.profile).unwrap_or_default();
    if let Some(obj) = value.as_object_mut() {
        obj.insert(
            "endpoint".into(),
            json!(format!(
                "{}/mcp/{}",
                state.settings.base_url(state.settings.port),
                view.profile.name
            )),
        );
        obj.insert(
            "tool_names".into(),
            json!(
                view.tools
                    .iter()
                    .map(|t| t.name.clone())
                    .collect::<Vec<_>>()
            ),
        );
    }
    value
}

fn unknown(name: &str) -> Problem {
    Problem::not_found("unknown-profile", format!("no profile named {name}")).with("profile", name)
}

async fn list(State(state): State<Arc<AppState>>, principal: Principal) -> Json<Value> {
    let snapshot = state.catalog.snapshot(&principal.tenant_id);
    let mut views: Vec<_> = snapshot.profiles.values().collect();
    views.sort_by(|a, b| a.profile.name.cmp(&b.profile.name));
    let profiles: Vec<Value> = views.iter().map(|v| describe(&state, v)).collect();
    Json(json!({"profiles": profiles, "total": profiles.len()}))
}

async fn read(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<Value>> {
    let snapshot = state.catalog.snapshot(&principal.tenant_id);
    let view = snapshot.profiles.get(&name).ok_or_else(|| unknown(&name))?;
    Ok(Json(describe(&state, view)))
}

fn parse(body: Value) -> Result<Profile> {
    let mut profile: Profile =
        serde_json::from_value(body).map_err(|e| Problem::invalid(e.to_string()))?;
    profile.source = Source::Api;
    profile.validate().map_err(Problem::invalid)?;
    Ok(profile)
}

async fn create(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiJson(body): ApiJson<Value>,
) -> Result<impl IntoResponse> {
    let tenant = &principal.tenant_id;
    let profile = parse(body)?;
    if state
        .catalog
        .snapshot(tenant)
        .profiles
        .contains_key(&profile.name)
    {
        return Err(Problem::conflict(
            "profile-exists",
            format!("a profile named {} already exists", profile.name),
        ));
    }
    state
        .store
        .insert_profile(tenant, &profile.name, &profile)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict => {
                Problem::conflict("profile-exists", "a profile with this name already exists")
            }
            other => other.into(),
        })?;
    state.catalog_edited(tenant).await?;
    let snapshot = state.catalog.snapshot(tenant);
    let view = snapshot
        .profiles
        .get(&profile.name)
        .ok_or_else(Problem::internal)?;
    Ok((StatusCode::CREATED, Json(describe(&state, view))))
}

fn read_only(name: &str) -> Problem {
    Problem::conflict(
        "read-only-profile",
        format!("profile {name} is declared in the config file; change it there"),
    )
    .with("profile", name)
}

async fn update(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(name): Path<String>,
    ApiJson(mut body): ApiJson<Value>,
) -> Result<Json<Value>> {
    let tenant = &principal.tenant_id;
    if let Some(obj) = body.as_object_mut() {
        match obj.get("name") {
            None => {
                obj.insert("name".into(), Value::String(name.clone()));
            }
            Some(Value::String(n)) if *n == name => {}
            Some(_) => return Err(Problem::invalid("a profile cannot be renamed")),
        }
        for read_only_field in ["endpoint", "tool_names", "source"] {
            obj.remove(read_only_field);
        }
    }
    let profile = parse(body)?;
    let current = state
        .catalog
        .snapshot(tenant)
        .profiles
        .get(&name)
        .cloned()
        .ok_or_else(|| unknown(&name))?;
    if current.profile.source == Source::Config {
        return Err(read_only(&name));
    }
    state.store.update_profile(tenant, &name, &profile).await?;
    state.catalog_edited(tenant).await?;
    let snapshot = state.catalog.snapshot(tenant);
    let view = snapshot.profiles.get(&name).ok_or_else(Problem::internal)?;
    Ok(Json(describe(&state, view)))
}

async fn remove(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    let tenant = &principal.tenant_id;
    let current = state
        .catalog
        .snapshot(tenant)
        .profiles
        .get(&name)
        .cloned()
        .ok_or_else(|| unknown(&name))?;
    if current.profile.source == Source::Config {
        return Err(read_only(&name));
    }
    state.store.delete_profile(tenant, &name).await?;
    state.catalog_edited(tenant).await?;
    state.profile_endpoints.remove(tenant, &name);
    Ok(StatusCode::NO_CONTENT)
}
