//! `/api/v1/servers`: upstream MCP servers managed at run time.
//!
//! Every handler works in the caller's tenant: another tenant's server of
//! the same name is not looked at, and answers exactly like a missing one.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::IntoResponse,
    routing::{get, post},
};
use serde_json::{Value, json};

use super::error::{ApiJson, Problem, Result};
use crate::{
    app::AppState,
    auth::{Principal, http::forbidden, rbac::Permission},
    cluster::Change,
    outbound::OutboundError,
    pipeline::policy,
    upstream::{
        Upstream,
        spec::{ServerSpec, Source},
    },
};

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/servers", get(list).post(create))
        .route("/servers/{name}", get(read).put(update).delete(remove))
        .route("/servers/{name}/restart", post(restart))
}

/// A server as the API shows it: its definition without secrets, and how it
/// is doing.
pub fn describe(state: &AppState, upstream: &Upstream, with_logs: bool) -> Value {
    let mut value = upstream.spec.redacted_json();
    let snapshot = state.catalog.snapshot(&upstream.tenant);
    if let Some(obj) = value.as_object_mut() {
        obj.insert("status".into(), json!(*upstream.status()));
        obj.insert("tools".into(), json!(upstream.offer().tools.len()));
        obj.insert("breaker".into(), json!(upstream.breaker.state()));
        if upstream.spec.isolation != crate::upstream::spec::Isolation::Shared {
            obj.insert(
                "isolated_connections".into(),
                json!(upstream.isolated_connections()),
            );
        }
        obj.insert(
            "conflicts".into(),
            json!(
                snapshot
                    .conflicts
                    .get(&upstream.spec.name)
                    .cloned()
                    .unwrap_or_default()
            ),
        );
        if with_logs {
            obj.insert("stderr_tail".into(), json!(upstream.stderr_tail()));
        }
    }
    value
}

/// Tells the other replicas that `tenant`'s stored servers changed: they
/// start, restart or stop theirs to match.
async fn announce_servers(state: &AppState, tenant: &str) {
    state
        .cluster
        .announce(Change::Servers {
            tenant: tenant.to_owned(),
        })
        .await;
}

async fn list(State(state): State<Arc<AppState>>, principal: Principal) -> Json<Value> {
    let servers: Vec<Value> = state
        .upstreams
        .list_tenant(&principal.tenant_id)
        .iter()
        .filter(|u| policy::may_see_server(&principal, &u.tenant, &u.spec.name))
        .map(|u| describe(&state, u, false))
        .collect();
    Json(json!({ "servers": servers, "total": servers.len() }))
}

fn unknown(name: &str) -> Problem {
    Problem::not_found("unknown-server", format!("no server named {name}")).with("server", name)
}

/// The principal's tenant's server of this name, if the principal may see
/// it: one it may not see answers exactly like a missing one.
fn visible(state: &AppState, principal: &Principal, name: &str) -> Result<Arc<Upstream>> {
    state
        .upstreams
        .get(&principal.tenant_id, name)
        .filter(|u| policy::may_see_server(principal, &u.tenant, name))
        .ok_or_else(|| unknown(name))
}

async fn read(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<Value>> {
    let upstream = visible(&state, &principal, &name)?;
    Ok(Json(describe(&state, &upstream, true)))
}

/// Checks a definition arriving over the API.
async fn admit(state: &AppState, principal: &Principal, body: Value) -> Result<ServerSpec> {
    let spec = ServerSpec::from_api_json(body).map_err(|e| Problem::invalid(e.to_string()))?;
    if spec.is_stdio() && state.settings.allow_stdio_api {
        // Running a command on the host is for platform admins only.
        principal
            .require(Permission::PlatformAdmin)
            .map_err(forbidden)?;
    }
    if spec.is_stdio() && !state.settings.allow_stdio_api {
        // Creating a stdio server runs a command on the host.
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "stdio-not-allowed",
            "Stdio servers cannot be created over the API",
            "creating a stdio server runs a command on the gateway's host; declare it in the config file, \
             or set META_MCP_ALLOW_STDIO_API=true",
        ));
    }
    if let Some(url) = spec.url() {
        let refused = |e: OutboundError| {
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "url-refused",
                "Server URL refused",
                format!("{}: {e}", crate::outbound::redact_url(url)),
            )
        };
        let parsed = state.outbound.check_url(url).map_err(refused)?;
        // A name that does not resolve yet may be a server still starting;
        // one that resolves to a forbidden address is refused now.
        if let Err(e @ OutboundError::Refused(..)) = state.outbound.check_resolved(&parsed).await {
            return Err(refused(e));
        }
    }
    Ok(spec)
}

async fn create(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiJson(body): ApiJson<Value>,
) -> Result<impl IntoResponse> {
    let tenant = &principal.tenant_id;
    let spec = admit(&state, &principal, body).await?;
    let _guard = state.servers_lock.lock().await;
    if state.upstreams.get(tenant, &spec.name).is_some() {
        return Err(Problem::conflict(
            "server-exists",
            format!("a server named {} already exists", spec.name),
        )
        .with("server", spec.name.clone()));
    }
    state
        .store
        .insert_server(tenant, &spec.name, &spec.sealed(&state.secrets))
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict => Problem::conflict(
                "server-exists",
                format!("a server named {} already exists", spec.name),
            ),
            other => other.into(),
        })?;
    state.upstreams.add(tenant, spec.clone());
    let upstream = state
        .upstreams
        .get(tenant, &spec.name)
        .ok_or_else(Problem::internal)?;
    tracing::info!(tenant = %tenant, server = %spec.name, "server created over the API");
    announce_servers(&state, tenant).await;
    Ok((
        StatusCode::CREATED,
        Json(describe(&state, &upstream, false)),
    ))
}

/// A definition read with GET shows secrets as `********`; sending it back
/// with PUT keeps the stored values rather than storing the mask.
fn keep_masked_secrets(spec: &mut ServerSpec, current: &ServerSpec) {
    use crate::upstream::spec::{MASK, Transport};
    let keep = |new: &mut std::collections::BTreeMap<String, String>,
                old: &std::collections::BTreeMap<String, String>| {
        for (key, value) in new.iter_mut() {
            if value == MASK
                && let Some(previous) = old.get(key)
            {
                value.clone_from(previous);
            }
        }
    };
    match (&mut spec.transport, &current.transport) {
        (Transport::Stdio { env, .. }, Transport::Stdio { env: old, .. }) => keep(env, old),
        (
            Transport::StreamableHttp { headers, url } | Transport::Sse { headers, url },
            Transport::StreamableHttp {
                headers: old,
                url: old_url,
            }
            | Transport::Sse {
                headers: old,
                url: old_url,
            },
        ) => {
            keep(headers, old);
            // The URL as read shows its password as `****`: sent back
            // unchanged, it keeps the stored password.
            if url != old_url && *url == crate::outbound::redact_url(old_url) {
                url.clone_from(old_url);
            }
        }
        _ => {}
    }
}

fn read_only(name: &str) -> Problem {
    Problem::conflict(
        "read-only-server",
        format!("server {name} is declared in the config file; change it there"),
    )
    .with("server", name)
}

async fn update(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(name): Path<String>,
    ApiJson(mut body): ApiJson<Value>,
) -> Result<Json<Value>> {
    if let Some(obj) = body.as_object_mut() {
        match obj.get("name") {
            None => {
                obj.insert("name".into(), Value::String(name.clone()));
            }
            Some(Value::String(n)) if *n == name => {}
            Some(_) => {
                return Err(Problem::invalid(
                    "a server cannot be renamed; delete it and create a new one",
                ));
            }
        }
    }
    let tenant = &principal.tenant_id;
    let _guard = state.servers_lock.lock().await;
    let current = visible(&state, &principal, &name)?;
    if current.spec.source == Source::Config {
        return Err(read_only(&name));
    }
    let mut spec = admit(&state, &principal, body).await?;
    keep_masked_secrets(&mut spec, &current.spec);
    state
        .store
        .update_server(tenant, &name, &spec.sealed(&state.secrets))
        .await?;
    state.upstreams.remove(tenant, &name).await;
    state.upstreams.add(tenant, spec);
    state.refresh_catalog(tenant).await?;
    announce_servers(&state, tenant).await;
    let upstream = state
        .upstreams
        .get(tenant, &name)
        .ok_or_else(Problem::internal)?;
    Ok(Json(describe(&state, &upstream, false)))
}

async fn remove(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    let tenant = &principal.tenant_id;
    let _guard = state.servers_lock.lock().await;
    let current = visible(&state, &principal, &name)?;
    if current.spec.source == Source::Config {
        return Err(read_only(&name));
    }
    state.store.delete_server(tenant, &name).await?;
    state.upstreams.remove(tenant, &name).await;
    state.refresh_catalog(tenant).await?;
    announce_servers(&state, tenant).await;
    tracing::info!(tenant = %tenant, server = %name, "server removed over the API");
    Ok(StatusCode::NO_CONTENT)
}

async fn restart(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Value>)> {
    let tenant = &principal.tenant_id;
    visible(&state, &principal, &name)?;
    let _guard = state.servers_lock.lock().await;
    let current = state
        .upstreams
        .remove(tenant, &name)
        .await
        .ok_or_else(|| unknown(&name))?;
    state.upstreams.add(tenant, current.spec.clone());
    state
        .cluster
        .announce(Change::Restart {
            tenant: tenant.to_string(),
            server: name.clone(),
        })
        .await;
    let upstream = state
        .upstreams
        .get(tenant, &name)
        .ok_or_else(Problem::internal)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(describe(&state, &upstream, false)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_definition_sent_back_as_read_keeps_its_secrets() {
        let current = ServerSpec::from_api_json(json!({
            "name": "r", "url": "https://user:secret@host/mcp",
            "headers": {"authorization": "Bearer t"},
        }))
        .unwrap();
        let mut read = current.redacted_json();
        read["enabled"] = json!(false);
        let mut next = ServerSpec::from_api_json(read).unwrap();
        keep_masked_secrets(&mut next, &current);
        assert_eq!(next.url(), Some("https://user:secret@host/mcp"));
        assert_eq!(next.transport, current.transport);
        assert!(!next.enabled);
        // A URL that was really changed is taken as sent.
        let mut moved = ServerSpec::from_api_json(json!({
            "name": "r", "url": "https://user:****@other/mcp",
        }))
        .unwrap();
        keep_masked_secrets(&mut moved, &current);
        assert_eq!(moved.url(), Some("https://user:****@other/mcp"));
    }
}
