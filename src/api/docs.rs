//! The OpenAPI document and a docs page rendered from it on the server, so
//! both work offline (no script or stylesheet from elsewhere).

use std::{
    fmt::Write,
    sync::{Arc, LazyLock},
};

use axum::{
    Json, Router,
    http::header,
    response::{Html, IntoResponse},
    routing::get,
};
use serde_json::Value;

use crate::app::AppState;

/// The OpenAPI 3.1 document, maintained beside the handlers; a test checks
/// that it and the router name the same operations.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

static OPENAPI: LazyLock<Value> =
    LazyLock::new(|| serde_json::from_str(OPENAPI_JSON).unwrap_or(Value::Null));

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/docs", get(page))
}

async fn openapi() -> impl IntoResponse {
    Json(OPENAPI.clone())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn page() -> impl IntoResponse {
    let doc = &*OPENAPI;
    let mut html = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>metamcp API</title>\
         <style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}\
         code,pre{background:#f4f4f4;padding:.1rem .3rem}pre{padding:.6rem;overflow:auto}\
         h3{margin-bottom:.2rem}.m{display:inline-block;min-width:4.5rem;font-weight:bold}</style></head><body>",
    );
    let title = doc["info"]["title"].as_str().unwrap_or("metamcp API");
    let _ = write!(
        html,
        "<h1>{}</h1><p>{}</p>",
        escape(title),
        escape(doc["info"]["description"].as_str().unwrap_or_default())
    );
    html.push_str("<p>Machine-readable: <a href=\"openapi.json\">openapi.json</a></p>");
    if let Some(paths) = doc["paths"].as_object() {
        for (path, ops) in paths {
            let Some(ops) = ops.as_object() else { continue };
            for (method, op) in ops {
                let _ = write!(
                    html,
                    "<h3><span class=\"m\">{}</span><code>{}</code></h3><p>{}</p>",
                    escape(&method.to_uppercase()),
                    escape(path),
                    escape(op["summary"].as_str().unwrap_or_default())
                );
                if let Some(desc) = op["description"].as_str() {
                    let _ = write!(html, "<p>{}</p>", escape(desc));
                }
                if let Some(body) = op.get("requestBody") {
                    let example = serde_json::to_string_pretty(
                        &body["content"]["application/json"]["example"],
                    )
                    .unwrap_or_default();
                    if example != "null" {
                        let _ = write!(html, "<p>Example body:</p><pre>{}</pre>", escape(&example));
                    }
                }
            }
        }
    }
    html.push_str("</body></html>");
    ([(header::CACHE_CONTROL, "no-cache")], Html(html))
}
