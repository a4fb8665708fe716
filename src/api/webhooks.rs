//! `/api/v1/webhooks`: URLs a tenant subscribed to gateway events, and the
//! log of deliveries to them. Every route needs `webhooks:manage` and
//! works in the caller's tenant: another tenant's webhook answers exactly
//! like a missing one.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::IntoResponse,
    routing::{get, post},
};
use serde_json::{Value, json};

use super::error::{ApiJson, Problem, Result};
use crate::{
    app::AppState,
    auth::Principal,
    webhooks::{WebhookError, WebhookInput},
};

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/webhooks", get(list).post(create))
        .route("/webhooks/{id}", get(read).patch(update).delete(remove))
        .route("/webhooks/{id}/deliveries", get(deliveries))
        .route("/webhooks/{id}/test", post(send_test))
}

fn problem(e: WebhookError, id: Option<&str>) -> Problem {
    match e {
        WebhookError::Unknown => Problem::not_found(
            "unknown-webhook",
            format!("no webhook with id {}", id.unwrap_or_default()),
        )
        .with("webhook", id.unwrap_or_default()),
        WebhookError::Invalid(detail) => Problem::invalid(detail),
        WebhookError::Refused(detail) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "webhook-url-refused",
            "Webhook URL refused",
            detail,
        ),
        WebhookError::TooMany => Problem::conflict("webhook-limit", e.to_string())
            .with("limit", crate::webhooks::MAX_PER_TENANT),
        WebhookError::Store(e) => e.into(),
    }
}

async fn list(State(state): State<Arc<AppState>>, principal: Principal) -> Result<Json<Value>> {
    let hooks = state
        .webhooks
        .list(&principal.tenant_id)
        .await
        .map_err(|e| problem(e, None))?;
    Ok(Json(json!({"webhooks": hooks, "total": hooks.len()})))
}

async fn read(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let hook = state
        .webhooks
        .get(&principal.tenant_id, &id)
        .await
        .map_err(|e| problem(e, Some(&id)))?;
    Ok(Json(hook))
}

async fn create(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiJson(input): ApiJson<WebhookInput>,
) -> Result<impl IntoResponse> {
    if input.rotate_secret {
        return Err(Problem::invalid(
            "rotate_secret applies to updates; a new webhook gets a secret anyway",
        ));
    }
    let hook = state
        .webhooks
        .create(&principal.tenant_id, input)
        .await
        .map_err(|e| problem(e, None))?;
    Ok((StatusCode::CREATED, Json(hook)))
}

async fn update(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<WebhookInput>,
) -> Result<Json<Value>> {
    let hook = state
        .webhooks
        .update(&principal.tenant_id, &id, input)
        .await
        .map_err(|e| problem(e, Some(&id)))?;
    Ok(Json(hook))
}

async fn remove(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    state
        .webhooks
        .delete(&principal.tenant_id, &id)
        .await
        .map_err(|e| problem(e, Some(&id)))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveryQuery {
    /// At most this many, newest first (default 50, at most 500).
    limit: Option<u32>,
    /// Deliveries older than this delivery id (paging back).
    before: Option<String>,
}

async fn deliveries(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(id): Path<String>,
    query: std::result::Result<Query<DeliveryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>> {
    let Query(query) = query.map_err(|e| Problem::invalid(e.body_text()))?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(Problem::invalid("limit must be 1 to 500"));
    }
    let items = state
        .webhooks
        .deliveries(&principal.tenant_id, &id, query.before.as_deref(), limit)
        .await
        .map_err(|e| problem(e, Some(&id)))?;
    let next = (items.len() == limit as usize)
        .then(|| items.last().map(|d| d["id"].clone()))
        .flatten();
    Ok(Json(
        json!({"deliveries": items, "total": items.len(), "next_before": next}),
    ))
}

async fn send_test(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<impl IntoResponse> {
    let event = state
        .webhooks
        .send_test(&principal.tenant_id, &id)
        .await
        .map_err(|e| problem(e, Some(&id)))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"event_id": event.id, "type": event.kind})),
    ))
}
