//! The audit page: the trail of `GET /api/v1/audit` with its filters, a
//! page at a time (the API's sealed cursor in the "older" link), and the
//! chains' verification (`GET /api/v1/audit/verify`) on request.

use askama::Template;
use axum::{
    extract::{Query, State},
    http::StatusCode,
    response::Response,
};
use serde::Deserialize;
use serde_json::Value;

use super::{Chrome, Session, Ui, backend::Origin, page as render, servers::text_of};

pub struct AuditRow {
    pub ts: String,
    pub kind: String,
    pub actor: String,
    pub method: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub status: String,
    pub duration: String,
}

impl AuditRow {
    fn from_record(r: &Value) -> Self {
        let target = match (&r["tool"], &r["target"]) {
            (Value::String(tool), _) => tool.clone(),
            (_, target) => text_of(target),
        };
        Self {
            ts: text_of(&r["ts"]),
            kind: text_of(&r["kind"]),
            actor: text_of(&r["actor_name"]),
            method: text_of(&r["auth_method"]),
            action: text_of(&r["action"]),
            target,
            outcome: text_of(&r["outcome"]),
            status: text_of(&r["status"]),
            duration: r["duration_us"]
                .as_f64()
                .map(|us| format!("{:.1} ms", us / 1000.0))
                .unwrap_or_default(),
        }
    }
}

/// The filters, as the form and the API name them.
#[derive(Deserialize, Default)]
pub struct AuditQuery {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    tool: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    cursor: String,
    /// Set: verify the chains too.
    #[serde(default)]
    verify: String,
}

impl AuditQuery {
    fn pairs(&self) -> Vec<(&'static str, &str)> {
        [
            ("actor", self.actor.trim()),
            ("kind", self.kind.trim()),
            ("tool", self.tool.trim()),
            ("outcome", self.outcome.trim()),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect()
    }
}

fn encode(pairs: &[(&str, &str)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        query.append_pair(k, v);
    }
    query.finish()
}

/// What the verification found.
pub struct Verification {
    pub ok: bool,
    pub text: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Chrome,
    actor: String,
    kind: String,
    tool: String,
    outcome: String,
    rows: Vec<AuditRow>,
    /// The link to the next (older) page, if there is one.
    older: Option<String>,
    verification: Option<Verification>,
    error: Option<String>,
}

pub async fn page(
    State(ui): State<Ui>,
    origin: Origin,
    session: Session,
    Query(query): Query<AuditQuery>,
) -> Response {
    let filters = query.pairs();
    let mut api = filters.clone();
    api.push(("limit", "50"));
    if !query.cursor.is_empty() {
        api.push(("cursor", &query.cursor));
    }
    let answer = ui
        .api
        .get(
            &session,
            &origin,
            &format!("/api/v1/audit?{}", encode(&api)),
        )
        .await;
    let error = (!answer.ok()).then(|| answer.problem());
    let rows = answer.body["records"]
        .as_array()
        .into_iter()
        .flatten()
        .map(AuditRow::from_record)
        .collect();
    let older = answer.body["next_cursor"].as_str().map(|cursor| {
        let mut next = filters.clone();
        next.push(("cursor", cursor));
        format!("/ui/audit?{}", encode(&next))
    });
    let verification = if query.verify.is_empty() {
        None
    } else {
        let verified = ui.api.get(&session, &origin, "/api/v1/audit/verify").await;
        Some(if !verified.ok() {
            Verification {
                ok: false,
                text: verified.problem(),
            }
        } else if verified.body["ok"] == true {
            Verification {
                ok: true,
                text: format!(
                    "Intact: {} chain(s) verified, no record changed, missing or out of order.",
                    verified.body["chains"].as_array().map_or(0, Vec::len)
                ),
            }
        } else {
            let breaks: Vec<String> = verified.body["breaks"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|b| text_of(&b["message"]))
                .collect();
            Verification {
                ok: false,
                text: format!("Broken: {}", breaks.join("; ")),
            }
        })
    };
    render(
        &session,
        StatusCode::OK,
        &AuditPage {
            chrome: Chrome::new("audit", &session, session.flash.clone()),
            actor: query.actor.clone(),
            kind: query.kind.clone(),
            tool: query.tool.clone(),
            outcome: query.outcome.clone(),
            rows,
            older,
            verification,
            error,
        },
    )
}
