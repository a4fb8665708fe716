//! The playground: pick a tool, fill the form made from its input schema
//! (or write the arguments as JSON), run it through the normal pipeline as
//! the logged-in user (`POST /api/v1/tools/{name}/execute`), and see the
//! result with its timing.

use std::{collections::HashMap, time::Instant};

use askama::Template;
use axum::{
    Form,
    extract::{Query, State},
    http::{Method, StatusCode},
    response::Response,
};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Chrome, Flash, Session, Ui,
    backend::{Origin, segment},
    csrf_refused, page as render,
    schema_form::{self, Field},
    servers::text_of,
};

/// One content block of a result, as shown.
pub struct Block {
    /// `text`, `image`, `resource` or `other`.
    pub kind: &'static str,
    pub text: String,
    /// For images: a `data:` URL of an image type browsers show safely.
    pub src: String,
}

/// What a run gave.
pub struct Outcome {
    /// The tool answered with `isError`, or the call failed.
    pub is_error: bool,
    pub duration: String,
    /// Attempts, cache hit.
    pub detail: String,
    pub blocks: Vec<Block>,
    /// `structuredContent`, pretty JSON.
    pub structured: String,
    /// Why the call failed before the tool answered.
    pub error: String,
}

const IMAGE_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];

fn image_src(block: &Value) -> Option<String> {
    let mime = block["mimeType"].as_str()?;
    let data = block["data"].as_str()?;
    // Only raster types, and only base64 text: the URL stays a picture.
    if !IMAGE_TYPES.contains(&mime)
        || base64::engine::general_purpose::STANDARD
            .decode(data)
            .is_err()
    {
        return None;
    }
    Some(format!("data:{mime};base64,{data}"))
}

fn block_of(block: &Value) -> Block {
    let plain = |kind, text| Block {
        kind,
        text,
        src: String::new(),
    };
    match block["type"].as_str() {
        Some("text") => plain("text", text_of(&block["text"])),
        Some("image") => match image_src(block) {
            Some(src) => Block {
                kind: "image",
                text: text_of(&block["mimeType"]),
                src,
            },
            None => plain(
                "other",
                format!(
                    "an image of type {} (not shown)",
                    text_of(&block["mimeType"])
                ),
            ),
        },
        Some("resource") => {
            let resource = &block["resource"];
            let body = resource["text"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| "(binary)".to_owned());
            plain("resource", format!("{}\n{body}", text_of(&resource["uri"])))
        }
        Some("resource_link") => plain("resource", text_of(&block["uri"])),
        _ => plain(
            "other",
            serde_json::to_string_pretty(block).unwrap_or_default(),
        ),
    }
}

impl Outcome {
    /// From the execute API's answer.
    fn from_answer(ok: bool, body: &Value, problem: String, elapsed_ms: f64) -> Self {
        if !ok {
            return Self {
                is_error: true,
                duration: format!("{elapsed_ms:.1} ms"),
                detail: String::new(),
                blocks: Vec::new(),
                structured: String::new(),
                error: problem,
            };
        }
        let result = &body["result"];
        let mut detail = format!("attempts: {}", text_of(&body["attempts"]));
        if body["cached"] == true {
            detail.push_str(", from the cache");
        }
        Self {
            is_error: result["isError"] == true,
            duration: format!(
                "{:.1} ms",
                body["duration_ms"].as_f64().unwrap_or(elapsed_ms)
            ),
            detail,
            blocks: result["content"]
                .as_array()
                .into_iter()
                .flatten()
                .map(block_of)
                .collect(),
            structured: match &result["structuredContent"] {
                Value::Null => String::new(),
                v => serde_json::to_string_pretty(v).unwrap_or_default(),
            },
            error: String::new(),
        }
    }
}

#[derive(Template)]
#[template(path = "playground.html")]
struct PlaygroundPage {
    chrome: Chrome,
    /// Every tool the user may see: (name, description).
    tools: Vec<(String, String)>,
    tool: String,
    description: String,
    fields: Vec<Field>,
    raw: String,
    outcome: Option<Outcome>,
    error: Option<String>,
}

impl PlaygroundPage {
    fn chosen(&self, name: &str) -> bool {
        self.tool == name
    }
}

#[derive(Deserialize, Default)]
pub struct PlaygroundQuery {
    #[serde(default)]
    tool: String,
}

/// The tools for the picker and the chosen one's record.
async fn tools_and_record(
    ui: &Ui,
    session: &Session,
    origin: &Origin,
    tool: &str,
) -> (Vec<(String, String)>, Option<Value>, Option<String>) {
    let list = ui
        .api
        .get(session, origin, "/api/v1/tools?enabled=true&limit=1000")
        .await;
    let mut error = (!list.ok()).then(|| list.problem());
    let tools: Vec<(String, String)> = list.body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| (text_of(&t["name"]), text_of(&t["description"])))
        .collect();
    let record = if tool.is_empty() {
        None
    } else {
        let answer = ui
            .api
            .get(session, origin, &format!("/api/v1/tools/{}", segment(tool)))
            .await;
        if answer.ok() {
            Some(answer.body)
        } else {
            error = Some(answer.problem());
            None
        }
    };
    (tools, record, error)
}

#[allow(clippy::too_many_arguments)]
fn show(
    session: &Session,
    status: StatusCode,
    tools: Vec<(String, String)>,
    tool: String,
    record: Option<&Value>,
    submitted: &HashMap<String, String>,
    raw: String,
    outcome: Option<Outcome>,
    error: Option<String>,
) -> Response {
    let (description, fields) = match record {
        Some(r) => (
            text_of(&r["description"]),
            schema_form::fields(&r["input_schema"], submitted),
        ),
        None => (String::new(), Vec::new()),
    };
    render(
        session,
        status,
        &PlaygroundPage {
            chrome: Chrome::new("playground", session, session.flash.clone()),
            tools,
            tool,
            description,
            fields,
            raw,
            outcome,
            error,
        },
    )
}

pub async fn page(
    State(ui): State<Ui>,
    origin: Origin,
    session: Session,
    Query(query): Query<PlaygroundQuery>,
) -> Response {
    let (tools, record, error) = tools_and_record(&ui, &session, &origin, &query.tool).await;
    show(
        &session,
        StatusCode::OK,
        tools,
        query.tool,
        record.as_ref(),
        &HashMap::new(),
        String::new(),
        None,
        error,
    )
}

/// Runs the chosen tool with the submitted arguments.
pub async fn run(
    State(ui): State<Ui>,
    origin: Origin,
    session: Session,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let form: HashMap<String, String> = form.into_iter().collect();
    let field = |name: &str| form.get(name).cloned().unwrap_or_default();
    if !session.csrf_ok(&field("csrf_token"), &ui) {
        return csrf_refused();
    }
    let tool = field("tool");
    let raw = field("arguments_json");
    let (tools, record, error) = tools_and_record(&ui, &session, &origin, &tool).await;
    let Some(record) = record else {
        return show(
            &session,
            StatusCode::OK,
            tools,
            tool,
            None,
            &form,
            raw,
            None,
            error.or_else(|| Some("choose a tool".into())),
        );
    };
    // JSON written by hand wins over the form.
    let arguments = if raw.trim().is_empty() {
        schema_form::arguments(&record["input_schema"], &form).map(Value::Object)
    } else {
        match serde_json::from_str::<Value>(&raw) {
            Ok(v @ Value::Object(_)) => Ok(v),
            Ok(_) => Err("the arguments must be a JSON object".to_owned()),
            Err(e) => Err(format!("the arguments are not valid JSON: {e}")),
        }
    };
    let arguments = match arguments {
        Ok(a) => a,
        Err(e) => {
            let mut session = session;
            session.flash.push(Flash::error(e));
            return show(
                &session,
                StatusCode::OK,
                tools,
                tool,
                Some(&record),
                &form,
                raw,
                None,
                None,
            );
        }
    };
    let started = Instant::now();
    let answer = ui
        .api
        .change(
            &session,
            &origin,
            Method::POST,
            &format!("/api/v1/tools/{}/execute", segment(&tool)),
            &field("csrf_token"),
            Some(json!({ "arguments": arguments })),
        )
        .await;
    let outcome = Outcome::from_answer(
        answer.ok(),
        &answer.body,
        answer.problem(),
        started.elapsed().as_secs_f64() * 1000.0,
    );
    show(
        &session,
        StatusCode::OK,
        tools,
        tool,
        Some(&record),
        &form,
        raw,
        Some(outcome),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_show_text_images_resources_and_structured_content() {
        let png = base64::engine::general_purpose::STANDARD.encode([137u8, 80, 78, 71]);
        let outcome = Outcome::from_answer(
            true,
            &json!({"duration_ms": 2.25, "attempts": 1, "cached": false, "result": {
                "content": [
                    {"type": "text", "text": "Echo: <hi>"},
                    {"type": "image", "mimeType": "image/png", "data": png},
                    {"type": "image", "mimeType": "image/svg+xml", "data": "PHN2Zz4="},
                    {"type": "image", "mimeType": "image/png", "data": "\"><script>"},
                    {"type": "resource", "resource": {"uri": "test://x", "text": "body"}},
                ],
                "structuredContent": {"sum": 3},
            }}),
            String::new(),
            9.0,
        );
        assert!(!outcome.is_error);
        assert_eq!(outcome.duration, "2.2 ms");
        let kinds: Vec<&str> = outcome.blocks.iter().map(|b| b.kind).collect();
        assert_eq!(kinds, ["text", "image", "other", "other", "resource"]);
        assert_eq!(outcome.blocks[0].text, "Echo: <hi>");
        assert_eq!(
            outcome.blocks[1].src,
            format!("data:image/png;base64,{png}")
        );
        assert!(outcome.structured.contains("\"sum\": 3"));

        let failed = Outcome::from_answer(false, &Value::Null, "no tool named x".into(), 1.0);
        assert!(failed.is_error);
        assert_eq!(failed.error, "no tool named x");
        let tool_error = Outcome::from_answer(
            true,
            &json!({"result": {"isError": true, "content": [{"type": "text", "text": "bad"}]}}),
            String::new(),
            1.0,
        );
        assert!(tool_error.is_error);
    }
}
