//! The tools page: every tool the user may see, or the best matches of a
//! search (the hybrid search of `GET /api/v1/tools/search`), with filters,
//! and enabling or disabling a tool (`PATCH /api/v1/tools/{name}`).

use askama::Template;
use axum::{
    Form,
    extract::{Query, State},
    http::{Method, StatusCode},
    response::Response,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Chrome, Flash, Session, Ui,
    backend::{Origin, segment},
    csrf_refused, page as render, redirect_with,
    servers::text_of,
};

pub struct ToolRow {
    pub name: String,
    pub server: String,
    pub description: String,
    pub enabled: bool,
    /// The search score, when the list is a search's answer.
    pub score: String,
}

impl ToolRow {
    fn from_record(tool: &Value, score: Option<&Value>) -> Self {
        Self {
            name: text_of(&tool["name"]),
            server: text_of(&tool["server"]),
            description: text_of(&tool["description"]),
            enabled: tool["enabled"].as_bool().unwrap_or(true),
            score: score
                .and_then(Value::as_f64)
                .map(|s| format!("{s:.3}"))
                .unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "tools.html")]
struct ToolsPage {
    chrome: Chrome,
    q: String,
    server: String,
    /// `all`, `enabled` or `disabled`.
    state: String,
    servers: Vec<String>,
    tools: Vec<ToolRow>,
    /// How the search answered (`hybrid`, or the fallback it used).
    used: String,
    note: String,
    error: Option<String>,
    /// This list's own address, to come back to after a toggle.
    back: String,
}

#[derive(Deserialize, Default)]
pub struct ToolsQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    server: String,
    #[serde(default)]
    state: String,
}

fn query_string(pairs: &[(&str, &str)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        query.append_pair(k, v);
    }
    query.finish()
}

pub async fn page(
    State(ui): State<Ui>,
    origin: Origin,
    session: Session,
    Query(query): Query<ToolsQuery>,
) -> Response {
    let q = query.q.trim().to_owned();
    let server = query.server.trim().to_owned();
    let state = match query.state.as_str() {
        "enabled" | "disabled" => query.state.clone(),
        _ => "all".to_owned(),
    };
    let mut error = None;
    let servers_answer = ui.api.get(&session, &origin, "/api/v1/servers").await;
    let servers: Vec<String> = servers_answer.body["servers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| text_of(&s["name"]))
        .collect();
    let (mut tools, used, note) = if q.is_empty() {
        let mut pairs = vec![("limit", "1000")];
        if !server.is_empty() {
            pairs.push(("server", &server));
        }
        let answer = ui
            .api
            .get(
                &session,
                &origin,
                &format!("/api/v1/tools?{}", query_string(&pairs)),
            )
            .await;
        if !answer.ok() {
            error = Some(answer.problem());
        }
        let rows: Vec<ToolRow> = answer.body["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| ToolRow::from_record(t, None))
            .collect();
        (rows, String::new(), String::new())
    } else {
        let mut pairs = vec![("q", q.as_str()), ("max_results", "50")];
        if !server.is_empty() {
            pairs.push(("server", &server));
        }
        let answer = ui
            .api
            .get(
                &session,
                &origin,
                &format!("/api/v1/tools/search?{}", query_string(&pairs)),
            )
            .await;
        if !answer.ok() {
            error = Some(answer.problem());
        }
        let rows: Vec<ToolRow> = answer.body["results"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|hit| ToolRow::from_record(&hit["tool"], Some(&hit["score"])))
            .collect();
        (
            rows,
            text_of(&answer.body["used"]),
            text_of(&answer.body["note"]),
        )
    };
    match state.as_str() {
        "enabled" => tools.retain(|t| t.enabled),
        "disabled" => tools.retain(|t| !t.enabled),
        _ => {}
    }
    let back = format!(
        "/ui/tools?{}",
        query_string(&[("q", &q), ("server", &server), ("state", &state)])
    );
    let flash = session.flash.clone();
    render(
        &session,
        StatusCode::OK,
        &ToolsPage {
            back,
            chrome: Chrome::new("tools", &session, flash),
            q,
            server,
            state,
            servers,
            tools,
            used,
            note,
            error,
        },
    )
}

#[derive(Deserialize)]
pub struct ToggleForm {
    #[serde(default)]
    csrf_token: String,
    name: String,
    /// `true` to enable, `false` to disable.
    enabled: String,
    /// Where to go back to (the list with its search and filters).
    #[serde(default)]
    back: String,
}

/// Only our own tools page is a place to go back to.
fn back_to(back: &str) -> String {
    if back.starts_with("/ui/tools") && !back.contains("//") && !back.contains('\\') {
        back.to_owned()
    } else {
        "/ui/tools".to_owned()
    }
}

pub async fn toggle(
    State(ui): State<Ui>,
    origin: Origin,
    session: Session,
    Form(form): Form<ToggleForm>,
) -> Response {
    if !session.csrf_ok(&form.csrf_token, &ui) {
        return csrf_refused();
    }
    let enabled = form.enabled == "true";
    let answer = ui
        .api
        .change(
            &session,
            &origin,
            Method::PATCH,
            &format!("/api/v1/tools/{}", segment(&form.name)),
            &form.csrf_token,
            Some(json!({ "enabled": enabled })),
        )
        .await;
    let back = back_to(&form.back);
    if !answer.ok() {
        return redirect_with(
            &back,
            Flash::error(format!("{}: {}", form.name, answer.problem())),
        );
    }
    redirect_with(
        &back,
        Flash::ok(format!(
            "{} {}.",
            form.name,
            if enabled { "enabled" } else { "disabled" }
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_tools_page_is_a_way_back() {
        assert_eq!(back_to("/ui/tools?q=echo"), "/ui/tools?q=echo");
        assert_eq!(back_to("https://evil.example/"), "/ui/tools");
        assert_eq!(back_to("/ui/tools//evil.example"), "/ui/tools");
        assert_eq!(back_to("/ui/servers"), "/ui/tools");
    }
}
