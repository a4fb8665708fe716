//! `/api/v1/health`: liveness, readiness and a detailed report.

use std::sync::Arc;

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use serde_json::{Value, json};

use crate::{
    app::AppState,
    auth::{DEFAULT_TENANT, Principal, rbac::Permission},
    upstream::Status,
};

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/health", get(basic))
        .route("/health/detailed", get(detailed))
        .route("/health/ready", get(ready))
        .route("/health/live", get(live))
}

fn uptime(state: &AppState) -> f64 {
    state.started.elapsed().as_secs_f64()
}

async fn basic(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({
        "status": "healthy",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": uptime(&state),
    }))
}

async fn live() -> Json<Value> {
    Json(json!({ "status": "alive" }))
}

/// The detailed report. It names servers and their errors, so a caller
/// sees those of its own tenant; a platform admin, who runs the gateway for
/// every tenant, sees every tenant's, and the gateway-wide cache counters.
async fn detailed(State(state): State<Arc<AppState>>, principal: Principal) -> Json<Value> {
    let platform = principal.has(Permission::PlatformAdmin);
    let store = match state.store.ping().await {
        Ok(latency) => json!({
            "status": "healthy",
            "backend": format!("{:?}", state.store.backend()).to_lowercase(),
            "latency_ms": latency.as_secs_f64() * 1000.0,
        }),
        Err(e) => {
            // Details (which may name hosts) go to the log, not the caller.
            tracing::error!(error = %e, "store health check failed");
            json!({ "status": "unhealthy", "error": "the store does not answer" })
        }
    };
    let store_ok = store["status"] == "healthy";
    let shown = if platform {
        state.upstreams.list()
    } else {
        state.upstreams.list_tenant(&principal.tenant_id)
    };
    let upstreams: Vec<Value> = shown
        .iter()
        .map(|u| {
            let status = u.status();
            json!({
                "name": u.spec.name,
                "tenant": &*u.tenant,
                "status": status.status,
                "latency_ms": status.latency_ms,
                "last_error": status.last_error,
                "protocol_version": status.protocol_version,
                "breaker": u.breaker.state(),
                "tools": u.offer().tools.len(),
            })
        })
        .collect();
    let all_ready = shown
        .iter()
        .all(|u| matches!(u.status().status, Status::Ready | Status::Disabled));
    let overall = match (store_ok, all_ready) {
        (false, _) => "unhealthy",
        (true, false) => "degraded",
        (true, true) => "healthy",
    };
    let mut report = json!({
        "status": overall,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": uptime(&state),
        "store": store,
        // The embedder's state: a missing or corrupt model shows here (and
        // in the notes of search answers) while search falls back to
        // keywords. Its counts are the caller's tenant's.
        "search": state
            .search
            .semantic
            .status((!platform).then_some(&*principal.tenant_id)),
        "upstreams": upstreams,
    });
    if platform {
        // Hits and misses of the shared cache are every tenant's activity.
        report["cache"] = json!(state.pipeline.cache.status());
        // Whether this replica hears the others (only with Redis).
        if let Some(status) = state.cluster.status() {
            report["cluster"] = json!({
                "replica": state.cluster.replica(),
                "status": status,
            });
        }
    }
    Json(report)
}

/// Ready once the store answers and every configured upstream has been tried
/// (a failed upstream does not hold readiness back: it is reported instead).
async fn ready(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    let mut reasons = Vec::new();
    if let Err(e) = state.store.ping().await {
        reasons.push(format!("store: {e}"));
    }
    // Anyone may ask: the default tenant's servers (the operator's own, the
    // config file's among them) are named; other tenants' are neither named
    // nor counted.
    let mut others_untried = false;
    for u in state.upstreams.list() {
        if u.was_tried() {
            continue;
        }
        if &*u.tenant == DEFAULT_TENANT {
            reasons.push(format!("server {} not tried yet", u.spec.name));
        } else {
            others_untried = true;
        }
    }
    if others_untried {
        reasons.push("servers of other tenants not tried yet".to_owned());
    }
    if reasons.is_empty() {
        (StatusCode::OK, Json(json!({ "ready": true })))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "reasons": reasons })),
        )
    }
}
