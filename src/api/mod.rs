//! The REST front door under `/api/v1`. Each resource module owns its routes;
//! handlers are thin and errors are RFC 9457 problem documents.

pub mod audit;
pub mod auth;
pub mod docs;
pub mod error;
pub mod health;
pub mod profiles;
pub mod servers;
pub mod tools;
pub mod users;
pub mod webhooks;

use std::sync::Arc;

use axum::Router;

use crate::app::AppState;

/// All `/api/v1` routes (nested under that prefix by the caller).
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .merge(health::router())
        .merge(tools::router())
        .merge(servers::router())
        .merge(profiles::router())
        .merge(docs::router())
        .merge(auth::router())
        .merge(users::router())
        .merge(audit::router())
        .merge(webhooks::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> error::Problem {
    error::Problem::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

async fn not_found(uri: axum::http::Uri) -> error::Problem {
    error::Problem::not_found("no-route", format!("no endpoint at {}", uri.path()))
}
