//! The servers page: every server the user may see with its live status
//! (refreshed by `ui.js` from `GET /api/v1/servers`), adding servers by
//! pasting an `mcpServers` block, and disable/enable, restart, remove.

use askama::Template;
use axum::{
    Form,
    extract::State,
    http::{Method, StatusCode},
    response::Response,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    Chrome, Flash, Session, Ui,
    backend::{Origin, segment},
    csrf_refused, page as render, redirect_with,
};

/// One row of the table.
pub struct ServerRow {
    pub name: String,
    /// `stdio`, `streamableHttp` or `sse`.
    pub transport: String,
    /// The URL (credentials redacted) or the command.
    pub target: String,
    pub status: String,
    pub latency: String,
    pub breaker: String,
    pub tools: String,
    pub last_error: String,
    pub enabled: bool,
    /// Declared in the config file: not changed from here.
    pub from_config: bool,
}

/// The text of a JSON scalar, or the compact JSON of anything else.
pub fn text_of(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A latency in milliseconds as shown.
pub fn latency_text(value: &Value) -> String {
    value
        .as_f64()
        .map(|ms| format!("{ms:.1} ms"))
        .unwrap_or_default()
}

impl ServerRow {
    /// A row from a server record of `GET /api/v1/servers`.
    pub fn from_record(record: &Value) -> Self {
        let transport = text_of(&record["type"]);
        let target = match record["url"].as_str() {
            Some(url) => url.to_owned(),
            None => {
                let mut command = text_of(&record["command"]);
                for arg in record["args"].as_array().into_iter().flatten() {
                    command.push(' ');
                    command.push_str(&text_of(arg));
                }
                command
            }
        };
        Self {
            name: text_of(&record["name"]),
            transport,
            target,
            status: text_of(&record["status"]["status"]),
            latency: latency_text(&record["status"]["latency_ms"]),
            breaker: text_of(&record["breaker"]),
            tools: text_of(&record["tools"]),
            last_error: text_of(&record["status"]["last_error"]),
            enabled: record["enabled"].as_bool().unwrap_or(true),
            from_config: record["source"] == "config",
        }
    }
}

#[derive(Template)]
#[template(path = "servers.html")]
struct ServersPage {
    chrome: Chrome,
    servers: Vec<ServerRow>,
    error: Option<String>,
    pasted: String,
}

async fn show(
    ui: &Ui,
    session: Session,
    origin: &Origin,
    status: StatusCode,
    pasted: String,
) -> Response {
    let answer = ui.api.get(&session, origin, "/api/v1/servers").await;
    let (servers, error) = if answer.ok() {
        let rows = answer.body["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(ServerRow::from_record)
            .collect();
        (rows, None)
    } else {
        (Vec::new(), Some(answer.problem()))
    };
    let flash = session.flash.clone();
    render(
        &session,
        status,
        &ServersPage {
            chrome: Chrome::new("servers", &session, flash),
            servers,
            error,
            pasted,
        },
    )
}

pub async fn page(State(ui): State<Ui>, origin: Origin, session: Session) -> Response {
    show(&ui, session, &origin, StatusCode::OK, String::new()).await
}

/// The server definitions of a pasted block: `{"mcpServers": {name:
/// entry}}`, or the inner object alone. Only the shape is checked here;
/// each definition is validated by the servers API.
pub fn pasted_servers(text: &str) -> Result<Vec<(String, Value)>, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("the pasted text is not JSON: {e}"))?;
    let Value::Object(mut root) = value else {
        return Err("paste a JSON object: {\"mcpServers\": {\"name\": {...}}}".into());
    };
    let entries: Map<String, Value> = match root.remove("mcpServers") {
        Some(Value::Object(entries)) => entries,
        Some(_) => return Err("mcpServers must be an object of name → server".into()),
        None => root,
    };
    if entries.is_empty() {
        return Err("no server in the pasted block".into());
    }
    entries
        .into_iter()
        .map(|(name, entry)| match entry {
            Value::Object(mut map) => {
                map.insert("name".into(), Value::String(name.clone()));
                Ok((name, Value::Object(map)))
            }
            _ => Err(format!("{name}: a server definition must be an object")),
        })
        .collect()
}

#[derive(Deserialize)]
pub struct ImportForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    servers: String,
}

/// Creates each pasted server through `POST /api/v1/servers`.
pub async fn import(
    State(ui): State<Ui>,
    origin: Origin,
    session: Session,
    Form(form): Form<ImportForm>,
) -> Response {
    if !session.csrf_ok(&form.csrf_token, &ui) {
        return csrf_refused();
    }
    let definitions = match pasted_servers(&form.servers) {
        Ok(d) => d,
        Err(e) => {
            let mut session = session;
            session.flash = vec![Flash::error(e)];
            return show(&ui, session, &origin, StatusCode::OK, form.servers).await;
        }
    };
    let mut added = Vec::new();
    let mut failed = Vec::new();
    for (name, body) in definitions {
        let answer = ui
            .api
            .change(
                &session,
                &origin,
                Method::POST,
                "/api/v1/servers",
                &form.csrf_token,
                Some(body),
            )
            .await;
        if answer.ok() {
            added.push(name);
        } else {
            failed.push(format!("{name}: {}", answer.problem()));
        }
    }
    if failed.is_empty() {
        return redirect_with(
            "/ui/servers",
            Flash::ok(format!("Added {}.", added.join(", "))),
        );
    }
    let mut notices = Vec::new();
    if !added.is_empty() {
        notices.push(Flash::ok(format!("Added {}.", added.join(", "))));
    }
    notices.push(Flash::error(format!("Not added: {}", failed.join("; "))));
    let mut session = session;
    session.flash = notices;
    show(&ui, session, &origin, StatusCode::OK, form.servers).await
}

#[derive(Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    csrf_token: String,
    name: String,
    /// `restart`, `disable`, `enable` or `remove`.
    action: String,
}

/// One button of a server's row, as the matching REST call.
pub async fn action(
    State(ui): State<Ui>,
    origin: Origin,
    session: Session,
    Form(form): Form<ActionForm>,
) -> Response {
    if !session.csrf_ok(&form.csrf_token, &ui) {
        return csrf_refused();
    }
    let path = format!("/api/v1/servers/{}", segment(&form.name));
    let csrf = form.csrf_token.as_str();
    let answer = match form.action.as_str() {
        "restart" => {
            ui.api
                .change(
                    &session,
                    &origin,
                    Method::POST,
                    &format!("{path}/restart"),
                    csrf,
                    None,
                )
                .await
        }
        "remove" => {
            ui.api
                .change(&session, &origin, Method::DELETE, &path, csrf, None)
                .await
        }
        "disable" | "enable" => {
            // The definition as read (secrets masked, which the update
            // keeps), with only `enabled` changed.
            let current = ui.api.get(&session, &origin, &path).await;
            if !current.ok() {
                return redirect_with("/ui/servers", Flash::error(current.problem()));
            }
            let mut definition = current.body;
            definition["enabled"] = json!(form.action == "enable");
            ui.api
                .change(
                    &session,
                    &origin,
                    Method::PUT,
                    &path,
                    csrf,
                    Some(definition),
                )
                .await
        }
        other => {
            return redirect_with(
                "/ui/servers",
                Flash::error(format!("unknown action {other:?}")),
            );
        }
    };
    if !answer.ok() {
        return redirect_with(
            "/ui/servers",
            Flash::error(format!("{}: {}", form.name, answer.problem())),
        );
    }
    let done = match form.action.as_str() {
        "restart" => "restarting",
        "remove" => "removed",
        "disable" => "disabled",
        _ => "enabled",
    };
    redirect_with("/ui/servers", Flash::ok(format!("{} {done}.", form.name)))
}

#[derive(Template)]
#[template(path = "server.html")]
struct ServerPage {
    chrome: Chrome,
    row: Option<ServerRow>,
    /// The definition as the API shows it (secrets masked), pretty JSON.
    definition: String,
    stderr: Vec<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
pub struct ServerQuery {
    #[serde(default)]
    name: String,
}

/// One server: its status, definition and the tail of its stderr log.
pub async fn detail(
    State(ui): State<Ui>,
    origin: Origin,
    session: Session,
    axum::extract::Query(query): axum::extract::Query<ServerQuery>,
) -> Response {
    let answer = ui
        .api
        .get(
            &session,
            &origin,
            &format!("/api/v1/servers/{}", segment(&query.name)),
        )
        .await;
    let (row, definition, stderr, error) = if answer.ok() {
        let mut definition = answer.body.clone();
        let stderr = definition["stderr_tail"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text_of)
            .collect();
        if let Some(map) = definition.as_object_mut() {
            for shown_elsewhere in ["status", "tools", "breaker", "conflicts", "stderr_tail"] {
                map.remove(shown_elsewhere);
            }
        }
        (
            Some(ServerRow::from_record(&answer.body)),
            serde_json::to_string_pretty(&definition).unwrap_or_default(),
            stderr,
            None,
        )
    } else {
        (None, String::new(), Vec::new(), Some(answer.problem()))
    };
    let flash = session.flash.clone();
    render(
        &session,
        if answer.ok() {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        },
        &ServerPage {
            chrome: Chrome::new("servers", &session, flash),
            row,
            definition,
            stderr,
            error,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pasted_block_gives_named_definitions() {
        let defs = pasted_servers(
            r#"{"mcpServers": {"a": {"url": "http://x/mcp"}, "b": {"command": "npx"}}}"#,
        )
        .unwrap();
        assert_eq!(defs.len(), 2);
        assert_eq!(defs[0].1, json!({"name": "a", "url": "http://x/mcp"}));
        let bare = pasted_servers(r#"{"c": {"url": "http://y/mcp"}}"#).unwrap();
        assert_eq!(bare[0].0, "c");
        assert!(pasted_servers("not json").is_err());
        assert!(pasted_servers("[]").is_err());
        assert!(pasted_servers(r#"{"mcpServers": []}"#).is_err());
        assert!(pasted_servers(r#"{"mcpServers": {}}"#).is_err());
        assert!(pasted_servers(r#"{"a": 1}"#).is_err());
    }

    #[test]
    fn rows_show_status_latency_breaker_and_last_error() {
        let row = ServerRow::from_record(&json!({
            "name": "fs", "type": "stdio", "command": "npx", "args": ["-y", "server"],
            "enabled": true, "source": "api", "breaker": "open", "tools": 3,
            "status": {"status": "failed", "latency_ms": 12.345, "last_error": "boom"},
        }));
        assert_eq!(row.target, "npx -y server");
        assert_eq!(row.latency, "12.3 ms");
        assert_eq!(row.breaker, "open");
        assert_eq!(row.last_error, "boom");
        assert_eq!(row.tools, "3");
        assert!(!row.from_config);
    }
}
