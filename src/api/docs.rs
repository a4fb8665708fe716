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

#[cfg(test)]
mod tests {
    //! The document against itself (OpenAPI 3.1, references, examples), the
    //! code (routes and problem types named in the source) and the running
    //! router (every documented operation answers, nothing else does, and
    //! what it answers matches the documented response).

    use std::{
        collections::{BTreeMap, BTreeSet},
        path::{Path, PathBuf},
    };

    use axum::{
        body::Body,
        http::{HeaderMap, Method, Request, StatusCode},
    };
    use serde_json::{Value, json};
    use tokio_util::sync::CancellationToken;
    use tower::ServiceExt;

    use super::{OPENAPI_JSON, escape};
    use crate::{api::error::PROBLEM_BASE, app::App, config::Settings};

    /// The operation keys of an OpenAPI path item.
    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    fn doc() -> Value {
        serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON")
    }

    /// Every documented (path, method, operation).
    fn operations(doc: &Value) -> Vec<(String, String, Value)> {
        let mut ops = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (key, op) in item.as_object().expect("path item") {
                if METHODS.contains(&key.as_str()) {
                    ops.push((path.clone(), key.clone(), op.clone()));
                }
            }
        }
        ops
    }

    /// Follows a local `$ref` (`#/a/b`), if `value` is one.
    fn deref<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
        match value.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let target = doc
                    .pointer(r.strip_prefix('#').expect("local $ref"))
                    .unwrap_or_else(|| panic!("$ref {r} does not resolve"));
                deref(doc, target)
            }
            None => value,
        }
    }

    /// Every value of `value` and below, with its JSON pointer.
    fn walk<'a>(pointer: String, value: &'a Value, out: &mut Vec<(String, &'a Value)>) {
        out.push((pointer.clone(), value));
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    walk(
                        format!("{pointer}/{}", k.replace('~', "~0").replace('/', "~1")),
                        v,
                        out,
                    );
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(format!("{pointer}/{i}"), v, out);
                }
            }
            _ => {}
        }
    }

    /// Checks `instance` against `schema`, a schema of the document whose
    /// `$ref`s point into its components.
    fn check_schema(doc: &Value, schema: &Value, instance: &Value) -> Result<(), String> {
        let mut root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": doc["components"].clone(),
        });
        for (k, v) in schema.as_object().expect("a schema is an object") {
            root[k] = v.clone();
        }
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&root)
            .map_err(|e| format!("the schema does not compile: {e}"))?;
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .take(5)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// The source files under `dir` (recursively), without their trailing
    /// `mod tests`.
    fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("readable source dir") {
                let path = entry.expect("dir entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).expect("readable source");
                    let code = match text.find("\n#[cfg(test)]\nmod tests") {
                        Some(at) => text[..at].to_owned(),
                        None => text,
                    };
                    out.push((path, code));
                }
            }
        }
        out.sort();
        out
    }

    fn src_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
    }

    /// The string literal starting `text` (after blanks), if it starts with one.
    fn leading_literal(text: &str) -> Option<String> {
        let rest = text.trim_start().strip_prefix('"')?;
        Some(rest[..rest.find('"')?].to_owned())
    }

    /// `text` after its first argument (up to the first comma outside
    /// brackets).
    fn after_first_argument(text: &str) -> Option<&str> {
        let mut depth = 0i32;
        for (i, c) in text.char_indices() {
            match c {
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' if depth == 0 => return None,
                ')' | ']' | '}' => depth -= 1,
                ',' if depth == 0 => return Some(&text[i + 1..]),
                _ => {}
            }
        }
        None
    }

    /// The problem kinds the code can answer with: the kind literal of every
    /// `Problem::new`, `Problem::not_found` and `Problem::conflict` (and of
    /// the constructors in error.rs, which build theirs with `Self::new`).
    fn problem_kinds_in_code() -> BTreeSet<String> {
        let mut kinds = BTreeSet::new();
        for (path, code) in sources(&src_dir()) {
            let mut new_calls = vec!["Problem::new("];
            if path.ends_with("api/error.rs") {
                new_calls.push("Self::new(");
            }
            for needle in new_calls {
                for (at, _) in code.match_indices(needle) {
                    let args = &code[at + needle.len()..];
                    if let Some(kind) = after_first_argument(args).and_then(leading_literal) {
                        kinds.insert(kind);
                    }
                }
            }
            for needle in ["Problem::not_found(", "Problem::conflict("] {
                for (at, _) in code.match_indices(needle) {
                    if let Some(kind) = leading_literal(&code[at + needle.len()..]) {
                        kinds.insert(kind);
                    }
                }
            }
        }
        kinds
    }

    /// The paths the api modules route (`.route("/path", ...)`).
    fn routes_in_code() -> BTreeSet<String> {
        let mut routes = BTreeSet::new();
        for (_, code) in sources(&src_dir().join("api")) {
            for (at, _) in code.match_indices(".route(") {
                if let Some(path) = leading_literal(&code[at + ".route(".len()..]) {
                    routes.insert(path);
                }
            }
        }
        routes
    }

    #[test]
    fn document_is_openapi_3_1_with_the_required_sections() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["title"], "metamcp API");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        assert!(
            doc["info"]["description"]
                .as_str()
                .is_some_and(|d| d.len() > 100),
            "info.description should say what the API is"
        );
        assert_eq!(doc["servers"], json!([{"url": "/api/v1"}]));
        for name in [
            "Problem",
            "ToolInput",
            "ToolRecord",
            "ToolList",
            "ExecuteRequest",
            "ExecuteResponse",
            "ServerInput",
            "ServerRecord",
            "Health",
            "HealthDetailed",
            "Ready",
        ] {
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "components.schemas.{name} is missing"
            );
        }
        let problem = &doc["components"]["schemas"]["Problem"];
        for member in ["type", "title", "status", "detail"] {
            assert!(
                problem["properties"][member].is_object(),
                "Problem.{member}"
            );
        }

        let ops = operations(&doc);
        assert!(!ops.is_empty());
        let mut ids = BTreeSet::new();
        for (path, method, op) in &ops {
            let at = format!("{} {path}", method.to_uppercase());
            let id = op["operationId"].as_str().unwrap_or_default();
            assert!(!id.is_empty(), "{at}: operationId");
            assert!(
                ids.insert(id.to_owned()),
                "{at}: operationId {id} is used twice"
            );
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{at}: summary"
            );

            // Path parameters: every {param} declared, nothing else.
            let templated: BTreeSet<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            let item = &doc["paths"][path];
            let declared: BTreeSet<&str> = [&item["parameters"], &op["parameters"]]
                .into_iter()
                .filter_map(Value::as_array)
                .flatten()
                .map(|p| deref(&doc, p))
                .filter(|p| p["in"] == "path")
                .map(|p| {
                    assert_eq!(p["required"], true, "{at}: path parameters are required");
                    p["name"].as_str().unwrap_or_default()
                })
                .collect();
            assert_eq!(templated, declared, "{at}: path parameters");

            if let Some(body) = op.get("requestBody") {
                let media = &deref(&doc, body)["content"]["application/json"];
                assert!(media["schema"].is_object(), "{at}: request schema");
                assert!(
                    !media["example"].is_null(),
                    "{at}: request example (the docs page shows it)"
                );
            }

            let responses = op["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{at}: a success response"
            );
            for (status, response) in responses {
                let code: u16 = status
                    .parse()
                    .unwrap_or_else(|_| panic!("{at}: status {status}"));
                let response = deref(&doc, response);
                assert!(
                    response["description"].is_string(),
                    "{at} {status}: description"
                );
                // Errors are problem documents, except readiness's 503,
                // which is a report.
                if code >= 400 && id != "getReady" {
                    let content = response["content"].as_object().expect("error content");
                    assert_eq!(
                        content.keys().collect::<Vec<_>>(),
                        ["application/problem+json"],
                        "{at} {status}: errors are application/problem+json"
                    );
                    assert_eq!(
                        content["application/problem+json"]["schema"]["$ref"],
                        "#/components/schemas/Problem",
                        "{at} {status}"
                    );
                }
            }
        }

        // Every reference resolves.
        let mut values = Vec::new();
        walk(String::new(), &doc, &mut values);
        for (pointer, value) in &values {
            if let Some(r) = value.get("$ref").and_then(Value::as_str) {
                assert!(
                    r.strip_prefix('#').and_then(|p| doc.pointer(p)).is_some(),
                    "{pointer}: $ref {r} does not resolve"
                );
            }
        }
    }

    #[test]
    fn examples_match_their_schemas() {
        let doc = doc();
        let mut checked = 0;
        let mut failures = Vec::new();
        let mut values = Vec::new();
        walk(String::new(), &doc, &mut values);
        for (pointer, value) in values {
            let Some(obj) = value.as_object() else {
                continue;
            };
            // Media type objects: `example` or `examples.*.value` against `schema`.
            if let Some(schema) = obj.get("schema").filter(|_| pointer.contains("/content/")) {
                let mut instances = Vec::new();
                if let Some(example) = obj.get("example") {
                    instances.push((format!("{pointer}/example"), example));
                }
                for (name, example) in obj
                    .get("examples")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                {
                    instances.push((format!("{pointer}/examples/{name}"), &example["value"]));
                }
                for (at, instance) in instances {
                    checked += 1;
                    if let Err(e) = check_schema(&doc, schema, instance) {
                        failures.push(format!("{at}: {e}"));
                    }
                }
            }
        }
        // Examples inside component schemas.
        for (name, schema) in doc["components"]["schemas"].as_object().expect("schemas") {
            let reference = json!({"$ref": format!("#/components/schemas/{name}")});
            for (i, example) in schema["examples"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                checked += 1;
                if let Err(e) = check_schema(&doc, &reference, example) {
                    failures.push(format!("components.schemas.{name}.examples[{i}]: {e}"));
                }
            }
        }
        assert!(checked > 30, "only {checked} examples found");
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn documented_paths_are_the_routed_paths() {
        let routes = routes_in_code();
        assert!(
            routes.contains("/tools/{name}") && routes.contains("/health"),
            "the route scanner found {routes:?}"
        );
        let doc = doc();
        let documented: BTreeSet<String> = doc["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            documented, routes,
            "paths of openapi.json (left) and of the .route(...) calls in src/api (right)"
        );
    }

    #[test]
    fn every_problem_type_of_the_code_is_documented() {
        let in_code = problem_kinds_in_code();
        for known in [
            "no-route",
            "invalid-request",
            "internal",
            "unknown-tool",
            "forbidden-host",
        ] {
            assert!(
                in_code.contains(known),
                "the scanner missed {known}: {in_code:?}"
            );
        }
        let doc = doc();
        let described = doc["components"]["schemas"]["Problem"]["description"]
            .as_str()
            .expect("Problem.description");
        let listed: BTreeSet<String> = described
            .match_indices(PROBLEM_BASE)
            .map(|(at, _)| {
                described[at + PROBLEM_BASE.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect()
            })
            .collect();
        assert_eq!(
            listed, in_code,
            "problem types listed in Problem.description (left) and used by the code (right)"
        );
        // Nothing else in the document names a type the code does not use.
        let mut values = Vec::new();
        walk(String::new(), &doc, &mut values);
        for (pointer, value) in values {
            if let Some(kind) = value.as_str().and_then(|s| s.strip_prefix(PROBLEM_BASE)) {
                assert!(
                    in_code.contains(kind),
                    "{pointer}: unknown problem type {kind}"
                );
            }
        }
    }

    /// The password of the `admin` user the harness's gateway is created
    /// with: the one of the documented login example.
    const ADMIN_PASSWORD: &str = "change-me-at-once-1";

    /// A gateway on a fresh SQLite database with no servers, its router, and
    /// an access token of its `admin` user (a platform admin), logged in
    /// through the router.
    struct Gateway {
        app: App,
        router: axum::Router,
        token: String,
        _dir: tempfile::TempDir,
    }

    /// The credentials a request carries.
    #[derive(Clone, Copy)]
    enum Auth<'a> {
        /// The harness's admin token, as `Authorization: Bearer`.
        Admin,
        /// None at all.
        Anonymous,
        /// `Authorization: Bearer <token>`.
        Bearer(&'a str),
        /// `X-API-Key: <key>`.
        ApiKey(&'a str),
        /// The session cookie, with the CSRF token or without.
        Cookie(&'a str, Option<&'a str>),
    }

    async fn gateway() -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let env: BTreeMap<String, String> = [
            (
                "META_MCP_DATA_DIR",
                dir.path().to_str().expect("utf-8 temp dir"),
            ),
            ("META_MCP_PORT", "0"),
            ("META_MCP_ADMIN_PASSWORD", ADMIN_PASSWORD),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let settings = Settings::load_from(&env, None, &|_| None).expect("settings");
        let app = App::build(settings).await.expect("gateway builds");
        let router = App::router(app.state.clone(), CancellationToken::new());
        let mut gw = Gateway {
            app,
            router,
            token: String::new(),
            _dir: dir,
        };
        gw.token = gw.login("admin", ADMIN_PASSWORD).await;
        gw
    }

    struct Answer {
        status: StatusCode,
        headers: HeaderMap,
        body: Vec<u8>,
    }

    impl Answer {
        fn json(&self) -> Value {
            serde_json::from_slice(&self.body).unwrap_or(Value::Null)
        }
        fn content_type(&self) -> String {
            self.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .unwrap_or_default()
                .trim()
                .to_owned()
        }
    }

    impl Gateway {
        async fn send(&self, method: &Method, path: &str, body: Option<&Value>) -> Answer {
            self.send_as(Auth::Admin, method, path, body).await
        }

        async fn send_as(
            &self,
            auth: Auth<'_>,
            method: &Method,
            path: &str,
            body: Option<&Value>,
        ) -> Answer {
            let mut request = Request::builder()
                .method(method)
                .uri(format!("/api/v1{path}"))
                .header("host", "127.0.0.1");
            request = match auth {
                Auth::Admin => request.header("authorization", format!("Bearer {}", self.token)),
                Auth::Anonymous => request,
                Auth::Bearer(token) => request.header("authorization", format!("Bearer {token}")),
                Auth::ApiKey(key) => request.header("x-api-key", key),
                Auth::Cookie(token, csrf) => {
                    let request = request.header("cookie", format!("metamcp_session={token}"));
                    match csrf {
                        Some(csrf) => request.header("x-csrf-token", csrf),
                        None => request,
                    }
                }
            };
            let body = match body {
                Some(b) => {
                    request = request.header("content-type", "application/json");
                    Body::from(serde_json::to_vec(b).expect("body"))
                }
                None => Body::empty(),
            };
            let response = self
                .router
                .clone()
                .oneshot(request.body(body).expect("request"))
                .await
                .expect("the router is infallible");
            let status = response.status();
            let headers = response.headers().clone();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("body")
                .to_vec();
            Answer {
                status,
                headers,
                body,
            }
        }

        /// Logs in through the router; the access token.
        async fn login(&self, username: &str, password: &str) -> String {
            let body = json!({"username": username, "password": password});
            let a = self
                .send_as(Auth::Anonymous, &Method::POST, "/auth/login", Some(&body))
                .await;
            assert_eq!(
                a.status,
                StatusCode::OK,
                "login as {username}: {}",
                String::from_utf8_lossy(&a.body)
            );
            a.json()["access_token"]
                .as_str()
                .expect("access_token")
                .to_owned()
        }

        /// Sends a request to a documented operation and checks the answer
        /// is one it documents: its status, content type and body schema.
        async fn call(
            &self,
            doc: &Value,
            method: &str,
            template: &str,
            path: &str,
            body: Option<&Value>,
        ) -> Answer {
            self.call_as(Auth::Admin, doc, method, template, path, body)
                .await
        }

        /// [`Gateway::call`] with other credentials than the admin's.
        async fn call_as(
            &self,
            auth: Auth<'_>,
            doc: &Value,
            method: &str,
            template: &str,
            path: &str,
            body: Option<&Value>,
        ) -> Answer {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let answer = self.send_as(auth, &m, path, body).await;
            let at = format!("{} {path} (documented as {template})", m);
            let op = &doc["paths"][template][method];
            assert!(op.is_object(), "{at}: not documented");
            let documented = &op["responses"][answer.status.as_str()];
            assert!(
                documented.is_object(),
                "{at}: answered {} which is not documented: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
            let documented = deref(doc, documented);
            match documented.get("content").and_then(Value::as_object) {
                None => assert!(
                    answer.body.is_empty(),
                    "{at}: {} is documented without a body",
                    answer.status
                ),
                Some(content) => {
                    let ct = answer.content_type();
                    let media = content.get(&ct).unwrap_or_else(|| {
                        panic!(
                            "{at}: {} answered {ct:?}, documented {:?}",
                            answer.status,
                            content.keys().collect::<Vec<_>>()
                        )
                    });
                    // JSON lines (the audit export) are many documents.
                    if ct.ends_with("json") && !ct.ends_with("ndjson") {
                        let value: Value = serde_json::from_slice(&answer.body)
                            .unwrap_or_else(|e| panic!("{at}: the body is not JSON: {e}"));
                        if let Err(e) = check_schema(doc, &media["schema"], &value) {
                            panic!(
                                "{at}: {} does not match its documented schema: {e}\n{value:#}",
                                answer.status
                            );
                        }
                    }
                }
            }
            answer
        }
    }

    /// A path of a template, every parameter (`{name}`, `{id}`) `value`.
    fn fill(template: &str, value: &str) -> String {
        template.replace("{name}", value).replace("{id}", value)
    }

    fn is_fallback(answer: &Answer) -> bool {
        answer.json()["type"] == format!("{PROBLEM_BASE}no-route")
    }

    #[tokio::test]
    async fn router_and_document_agree_on_every_operation() {
        let gw = gateway().await;
        let doc = doc();
        let missing = "no-such-name";
        let mut by_path: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (template, method, op) in operations(&doc) {
            by_path
                .entry(template.clone())
                .or_default()
                .insert(method.clone());
            let path = fill(&template, missing);
            let body = op.get("requestBody").map(|_| json!({}));
            // Without credentials, a public operation (`security: []`)
            // answers, and every other one the documented 401 with a
            // challenge.
            let public = op.get("security") == Some(&json!([]));
            let anonymous = gw
                .call_as(
                    Auth::Anonymous,
                    &doc,
                    &method,
                    &template,
                    &path,
                    body.as_ref(),
                )
                .await;
            if public {
                assert_ne!(
                    anonymous.status,
                    StatusCode::UNAUTHORIZED,
                    "{method} {path} is documented as public"
                );
            } else {
                assert_eq!(
                    anonymous.status,
                    StatusCode::UNAUTHORIZED,
                    "{method} {path} without credentials"
                );
                assert_eq!(
                    anonymous.json()["type"],
                    format!("{PROBLEM_BASE}unauthorized")
                );
                assert!(
                    anonymous
                        .headers
                        .get("www-authenticate")
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.starts_with("Bearer ")),
                    "{method} {path}: a 401 challenges"
                );
            }
            // The answer must be documented (status, type, schema)...
            let answer = if public {
                anonymous
            } else if op["operationId"] == "logout" {
                // Logging out revokes the token it is sent with: not the
                // harness's.
                let own = gw.login("admin", ADMIN_PASSWORD).await;
                gw.call_as(
                    Auth::Bearer(&own),
                    &doc,
                    &method,
                    &template,
                    &path,
                    body.as_ref(),
                )
                .await
            } else {
                gw.call(&doc, &method, &template, &path, body.as_ref())
                    .await
            };
            // ...and come from the operation, not the router.
            assert_ne!(
                answer.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            assert!(
                !is_fallback(&answer),
                "{method} {path} reached the fallback"
            );
        }
        // The other methods of a documented path are not routed: an
        // undocumented operation would answer here.
        for (template, documented) in &by_path {
            let path = fill(template, missing);
            let mut allowed: BTreeSet<String> =
                documented.iter().map(|m| m.to_uppercase()).collect();
            if documented.contains("get") {
                // axum answers HEAD with the GET handler.
                allowed.insert("HEAD".into());
            }
            for method in METHODS {
                let upper = method.to_uppercase();
                if allowed.contains(&upper) {
                    continue;
                }
                let m = Method::from_bytes(upper.as_bytes()).expect("method");
                let answer = gw.send(&m, &path, None).await;
                assert_eq!(
                    answer.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{upper} {path} is routed but not documented"
                );
                let allow: BTreeSet<String> = answer
                    .headers
                    .get("allow")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .split(',')
                    .map(|m| m.trim().to_owned())
                    .filter(|m| !m.is_empty())
                    .collect();
                assert_eq!(allow, allowed, "Allow of {path} vs the documented methods");
            }
        }
        // A path that is not documented is the fallback.
        let answer = gw.send(&Method::GET, "/nothing-here", None).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND);
        assert!(is_fallback(&answer));
        gw.app.state.upstreams.shutdown().await;
    }

    /// Rewrites every string of `value` starting with `from` to start with
    /// `to`; returns how many it changed.
    fn retarget(value: &mut Value, from: &str, to: &str) -> usize {
        match value {
            Value::String(s) if s.starts_with(from) => {
                *s = format!("{to}{}", &s[from.len()..]);
                1
            }
            Value::Array(items) => items.iter_mut().map(|v| retarget(v, from, to)).sum(),
            Value::Object(map) => map.values_mut().map(|v| retarget(v, from, to)).sum(),
            _ => 0,
        }
    }

    /// The documented request example of an operation.
    fn example(doc: &Value, path: &str, method: &str) -> Value {
        doc["paths"][path][method]["requestBody"]["content"]["application/json"]["example"].clone()
    }

    #[tokio::test]
    async fn documented_examples_work_and_answers_match_the_document() {
        let gw = gateway().await;
        let doc = doc();

        // The endpoint of the HTTP tools of the examples.
        let endpoint = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let tools_base = format!("http://{}", endpoint.local_addr().expect("addr"));
        let weather = axum::Router::new().route(
            "/weather",
            axum::routing::post(|axum::Json(args): axum::Json<Value>| async move {
                axum::Json(json!({"temp_c": 18, "city": args["city"]}))
            }),
        );
        tokio::spawn(async move { axum::serve(endpoint, weather).await });
        // A port nothing listens on, for the example servers.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let server_base = format!("http://localhost:{closed}");
        let tools_example = "https://tools.example.com";
        let servers_example = "http://localhost:3001";

        for path in [
            "/health",
            "/health/detailed",
            "/health/ready",
            "/health/live",
            "/docs",
        ] {
            let a = gw.call(&doc, "get", path, path, None).await;
            assert_eq!(a.status, StatusCode::OK, "GET {path}");
        }
        let a = gw
            .call(&doc, "get", "/openapi.json", "/openapi.json", None)
            .await;
        assert_eq!(a.json(), doc, "GET /openapi.json serves the document");

        // Tools: import, create, read, list, update, execute, delete.
        let mut import = example(&doc, "/tools/import", "post");
        assert!(retarget(&mut import, tools_example, &tools_base) > 0);
        let a = gw
            .call(
                &doc,
                "post",
                "/tools/import",
                "/tools/import",
                Some(&import),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.json());
        let created = a.json()["created"].as_u64().expect("created");

        let mut create = example(&doc, "/tools", "post");
        assert!(retarget(&mut create, tools_example, &tools_base) > 0);
        let name = create["name"].as_str().expect("example name").to_owned();
        let a = gw
            .call(&doc, "post", "/tools", "/tools", Some(&create))
            .await;
        assert_eq!(
            a.status,
            StatusCode::CONFLICT,
            "the import example made {name}"
        );
        let a = gw
            .call(
                &doc,
                "delete",
                "/tools/{name}",
                &format!("/tools/{name}"),
                None,
            )
            .await;
        assert_eq!(a.status, StatusCode::NO_CONTENT);
        let a = gw
            .call(&doc, "post", "/tools", "/tools", Some(&create))
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.json());
        assert_eq!(a.json()["name"], name.as_str());
        let batch = json!([{"name": "batch-a"}, {"name": "batch-b"}]);
        let a = gw
            .call(&doc, "post", "/tools", "/tools", Some(&batch))
            .await;
        assert_eq!(a.status, StatusCode::CREATED);
        assert_eq!(a.json()["created"], 2);

        let tool = format!("/tools/{name}");
        let a = gw.call(&doc, "get", "/tools/{name}", &tool, None).await;
        assert_eq!(a.status, StatusCode::OK);
        let category = create["category"].as_str().expect("example category");
        let tag = create["tags"][0].as_str().expect("example tag");
        let query = format!("/tools?category={category}&tag={tag}&enabled=true&offset=0&limit=10");
        let a = gw.call(&doc, "get", "/tools", &query, None).await;
        assert_eq!(a.json()["total"], 1, "{}", a.json());
        let a = gw.call(&doc, "get", "/tools", "/tools?limit=0", None).await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
        let a = gw
            .call(&doc, "get", "/tools", "/tools?nonsense=1", None)
            .await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
        let a = gw.call(&doc, "get", "/tools", "/tools", None).await;
        assert_eq!(a.json()["total"].as_u64(), Some(created + 2));

        for method in ["put", "patch"] {
            let change = example(&doc, "/tools/{name}", method);
            let a = gw
                .call(&doc, method, "/tools/{name}", &tool, Some(&change))
                .await;
            assert_eq!(a.status, StatusCode::OK, "{method}: {}", a.json());
            assert_eq!(a.json()["description"], change["description"]);
        }
        let a = gw
            .call(
                &doc,
                "put",
                "/tools/{name}",
                &tool,
                Some(&json!({"name": "renamed"})),
            )
            .await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);

        let execute = format!("{tool}/execute");
        let run = example(&doc, "/tools/{name}/execute", "post");
        let a = gw
            .call(&doc, "post", "/tools/{name}/execute", &execute, Some(&run))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.json());
        assert_eq!(a.json()["result"]["structuredContent"]["temp_c"], 18);
        let a = gw
            .call(
                &doc,
                "post",
                "/tools/{name}/execute",
                &execute,
                Some(&json!({"args": {}})),
            )
            .await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
        let a = gw
            .call(
                &doc,
                "post",
                "/tools/{name}/execute",
                &execute,
                Some(&json!({"arguments": {}})),
            )
            .await;
        assert_eq!(
            a.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "city is required"
        );
        assert_eq!(a.json()["type"], format!("{PROBLEM_BASE}invalid-arguments"));
        let a = gw
            .call(
                &doc,
                "post",
                "/tools/{name}/execute",
                "/tools/batch-a/execute",
                Some(&json!({})),
            )
            .await;
        assert_eq!(a.status, StatusCode::CONFLICT, "a catalog-only tool");
        let a = gw
            .call(
                &doc,
                "patch",
                "/tools/{name}",
                &tool,
                Some(&json!({"enabled": false})),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK);
        let a = gw
            .call(&doc, "post", "/tools/{name}/execute", &execute, Some(&run))
            .await;
        assert_eq!(a.status, StatusCode::CONFLICT, "a disabled tool");

        // Pinning applies to tools of MCP servers only.
        for action in ["approve", "reject"] {
            let template = format!("/tools/{{name}}/{action}");
            let a = gw
                .call(&doc, "post", &template, &format!("{tool}/{action}"), None)
                .await;
            assert_eq!(a.status, StatusCode::CONFLICT, "{action}");
        }
        let changes = format!("{tool}/changes");
        let a = gw
            .call(&doc, "get", "/tools/{name}/changes", &changes, None)
            .await;
        assert_eq!(a.status, StatusCode::CONFLICT);
        for query in ["", "?status=pending"] {
            let a = gw
                .call(&doc, "get", "/changes", &format!("/changes{query}"), None)
                .await;
            assert_eq!(a.status, StatusCode::OK, "/changes{query}");
        }
        let a = gw
            .call(&doc, "get", "/changes", "/changes?status=maybe", None)
            .await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);

        // Profiles: create, list, read, filter tools, replace, delete.
        let profile = example(&doc, "/profiles", "post");
        let profile_name = profile["name"]
            .as_str()
            .expect("example profile name")
            .to_owned();
        let one_profile = format!("/profiles/{profile_name}");
        let a = gw
            .call(
                &doc,
                "get",
                "/tools",
                &format!("/tools?profile={profile_name}"),
                None,
            )
            .await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "no such profile yet");
        let a = gw
            .call(&doc, "post", "/profiles", "/profiles", Some(&profile))
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.json());
        let a = gw
            .call(&doc, "post", "/profiles", "/profiles", Some(&profile))
            .await;
        assert_eq!(a.status, StatusCode::CONFLICT);
        let a = gw.call(&doc, "get", "/profiles", "/profiles", None).await;
        assert_eq!(a.json()["total"], 1);
        let a = gw
            .call(
                &doc,
                "get",
                "/tools",
                &format!("/tools?profile={profile_name}&include_quarantined=true"),
                None,
            )
            .await;
        assert_eq!(a.status, StatusCode::OK);
        let a = gw
            .call(&doc, "get", "/profiles/{name}", &one_profile, None)
            .await;
        let record = a.json();
        let a = gw
            .call(&doc, "put", "/profiles/{name}", &one_profile, Some(&record))
            .await;
        assert_eq!(
            a.status,
            StatusCode::OK,
            "a record read with GET goes back with PUT: {}",
            a.json()
        );
        let replace = example(&doc, "/profiles/{name}", "put");
        let a = gw
            .call(
                &doc,
                "put",
                "/profiles/{name}",
                &one_profile,
                Some(&replace),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.json());
        assert_eq!(a.json()["description"], replace["description"]);
        let a = gw
            .call(&doc, "delete", "/profiles/{name}", &one_profile, None)
            .await;
        assert_eq!(a.status, StatusCode::NO_CONTENT);
        let a = gw
            .call(&doc, "get", "/profiles/{name}", &one_profile, None)
            .await;
        assert_eq!(a.status, StatusCode::NOT_FOUND);

        // Malformed bodies.
        let m = Method::POST;
        let raw = gw.send(&m, "/tools", None).await;
        assert_eq!(raw.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let a = gw
            .call(&doc, "post", "/tools", "/tools", Some(&json!("just text")))
            .await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);

        // Servers: create, list, read, replace, restart, delete.
        let mut server = example(&doc, "/servers", "post");
        assert!(retarget(&mut server, servers_example, &server_base) > 0);
        let server_name = server["name"]
            .as_str()
            .expect("example server name")
            .to_owned();
        let a = gw
            .call(&doc, "post", "/servers", "/servers", Some(&server))
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.json());
        let a = gw
            .call(&doc, "post", "/servers", "/servers", Some(&server))
            .await;
        assert_eq!(a.status, StatusCode::CONFLICT);
        let stdio = doc["components"]["schemas"]["StdioServerInput"]["examples"][0].clone();
        let a = gw
            .call(&doc, "post", "/servers", "/servers", Some(&stdio))
            .await;
        assert_eq!(
            a.status,
            StatusCode::FORBIDDEN,
            "stdio over the API is off by default"
        );
        let a = gw.call(&doc, "get", "/servers", "/servers", None).await;
        assert_eq!(a.json()["total"], 1);
        let one = format!("/servers/{server_name}");
        let a = gw.call(&doc, "get", "/servers/{name}", &one, None).await;
        assert_eq!(a.status, StatusCode::OK);
        let mut replace = example(&doc, "/servers/{name}", "put");
        assert!(retarget(&mut replace, servers_example, &server_base) > 0);
        let a = gw
            .call(&doc, "put", "/servers/{name}", &one, Some(&replace))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.json());
        let restart = format!("{one}/restart");
        let a = gw
            .call(&doc, "post", "/servers/{name}/restart", &restart, None)
            .await;
        assert_eq!(a.status, StatusCode::ACCEPTED);
        let a = gw.call(&doc, "delete", "/servers/{name}", &one, None).await;
        assert_eq!(a.status, StatusCode::NO_CONTENT);
        let a = gw.call(&doc, "get", "/servers/{name}", &one, None).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND);

        gw.app.state.upstreams.shutdown().await;
    }

    fn header<'a>(answer: &'a Answer, name: &str) -> &'a str {
        answer
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn identity_examples_work_and_answers_match_the_document() {
        let gw = gateway().await;
        let doc = doc();
        let problem = |a: &Answer| {
            a.json()["type"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches(PROBLEM_BASE)
                .to_owned()
        };

        // Log in with the example (the harness's admin has its password).
        let login = example(&doc, "/auth/login", "post");
        assert_eq!(login["password"], ADMIN_PASSWORD);
        let a = gw
            .call_as(
                Auth::Anonymous,
                &doc,
                "post",
                "/auth/login",
                "/auth/login",
                Some(&login),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.json());
        assert_eq!(header(&a, "cache-control"), "no-store");
        let tokens = a.json();
        let access = tokens["access_token"].as_str().expect("access").to_owned();
        let mut wrong = login.clone();
        wrong["password"] = json!("not-the-password");
        let a = gw
            .call_as(
                Auth::Anonymous,
                &doc,
                "post",
                "/auth/login",
                "/auth/login",
                Some(&wrong),
            )
            .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        assert_eq!(problem(&a), "invalid-credentials");

        // Refresh: the token is used up; using it again revokes its login.
        let mut refresh = example(&doc, "/auth/refresh", "post");
        refresh["refresh_token"] = tokens["refresh_token"].clone();
        let a = gw
            .call_as(
                Auth::Anonymous,
                &doc,
                "post",
                "/auth/refresh",
                "/auth/refresh",
                Some(&refresh),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.json());
        let renewed = a.json();
        for token in [&tokens["refresh_token"], &renewed["refresh_token"]] {
            let a = gw
                .call_as(
                    Auth::Anonymous,
                    &doc,
                    "post",
                    "/auth/refresh",
                    "/auth/refresh",
                    Some(&json!({"refresh_token": token})),
                )
                .await;
            assert_eq!(a.status, StatusCode::UNAUTHORIZED, "a reused refresh token");
            assert_eq!(problem(&a), "invalid-refresh-token");
        }

        // Who am I.
        let a = gw
            .call_as(
                Auth::Bearer(&access),
                &doc,
                "get",
                "/auth/me",
                "/auth/me",
                None,
            )
            .await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.json()["username"], "admin");
        assert_eq!(a.json()["auth_method"], "jwt");

        // Without credentials, or with bad ones: 401 with a challenge.
        for auth in [
            Auth::Anonymous,
            Auth::Bearer("not-a-token"),
            Auth::ApiKey("mmk_0123456789abcdef.nope"),
        ] {
            let a = gw
                .call_as(auth, &doc, "get", "/tools", "/tools", None)
                .await;
            assert_eq!(a.status, StatusCode::UNAUTHORIZED);
            assert_eq!(problem(&a), "unauthorized");
            assert!(header(&a, "www-authenticate").starts_with("Bearer "));
        }

        // Users: create, conflict, list, read, change.
        let user = example(&doc, "/users", "post");
        let username = user["username"].as_str().expect("username").to_owned();
        let password = user["password"].as_str().expect("password").to_owned();
        let a = gw.call(&doc, "post", "/users", "/users", Some(&user)).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.json());
        let user_id = a.json()["id"].as_str().expect("id").to_owned();
        let a = gw.call(&doc, "post", "/users", "/users", Some(&user)).await;
        assert_eq!(a.status, StatusCode::CONFLICT);
        assert_eq!(problem(&a), "user-exists");
        let a = gw.call(&doc, "get", "/users", "/users", None).await;
        assert_eq!(a.json()["total"], 2);
        let one_user = format!("/users/{user_id}");
        let a = gw.call(&doc, "get", "/users/{id}", &one_user, None).await;
        assert_eq!(a.json()["username"], username.as_str());
        let change = example(&doc, "/users/{id}", "patch");
        let a = gw
            .call(&doc, "patch", "/users/{id}", &one_user, Some(&change))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.json());
        assert_eq!(a.json()["roles"], change["roles"]);
        assert_eq!(a.json()["clearance"], change["clearance"]);
        let a = gw
            .call(
                &doc,
                "post",
                "/users",
                "/users",
                Some(&json!({"username": "bob", "password": "short"})),
            )
            .await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);

        // The new user: its rights are its role's; what it lacks is 403.
        let theirs = gw.login(&username, &password).await;
        let a = gw
            .call_as(
                Auth::Bearer(&theirs),
                &doc,
                "get",
                "/auth/me",
                "/auth/me",
                None,
            )
            .await;
        assert_eq!(a.json()["clearance"], change["clearance"]);
        assert!(
            !a.json()["permissions"]
                .as_array()
                .expect("permissions")
                .contains(&json!("tools:write"))
        );
        for (method, path, body) in [
            ("post", "/tools", Some(json!({"name": "x"}))),
            ("get", "/users", None),
            ("get", "/tenants", None),
            (
                "post",
                "/roles",
                Some(json!({"name": "x", "permissions": []})),
            ),
        ] {
            let a = gw
                .call_as(
                    Auth::Bearer(&theirs),
                    &doc,
                    method,
                    path,
                    path,
                    body.as_ref(),
                )
                .await;
            assert_eq!(a.status, StatusCode::FORBIDDEN, "{method} {path}");
            assert_eq!(problem(&a), "forbidden");
            assert!(a.json()["permission"].is_string());
        }
        let a = gw
            .call_as(
                Auth::Bearer(&theirs),
                &doc,
                "get",
                "/auth/keys",
                "/auth/keys?user=*",
                None,
            )
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN);

        // Failed logins are throttled.
        let mut throttled = None;
        for _ in 0..10 {
            let a = gw
                .call_as(
                    Auth::Anonymous,
                    &doc,
                    "post",
                    "/auth/login",
                    "/auth/login",
                    Some(&json!({"username": username, "password": "wrong-password-1"})),
                )
                .await;
            if a.status == StatusCode::TOO_MANY_REQUESTS {
                throttled = Some(a);
                break;
            }
            assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        }
        let a = throttled.expect("logins are throttled");
        assert_eq!(problem(&a), "login-throttled");
        assert!(
            header(&a, "retry-after")
                .parse::<u64>()
                .is_ok_and(|s| s > 0)
        );

        // API keys: create, use (both headers), list, revoke.
        let key = example(&doc, "/auth/keys", "post");
        let a = gw
            .call(&doc, "post", "/auth/keys", "/auth/keys", Some(&key))
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.json());
        assert_eq!(header(&a, "cache-control"), "no-store");
        let created = a.json();
        let secret = created["key"].as_str().expect("key").to_owned();
        let key_id = created["id"].as_str().expect("id").to_owned();
        for auth in [Auth::Bearer(&secret), Auth::ApiKey(&secret)] {
            let a = gw
                .call_as(auth, &doc, "get", "/auth/me", "/auth/me", None)
                .await;
            assert_eq!(a.status, StatusCode::OK);
            assert_eq!(a.json()["auth_method"], "api_key");
            assert_eq!(a.json()["scopes"], key["scopes"]);
            assert_eq!(a.json()["permissions"], key["scopes"], "narrowed");
        }
        let a = gw
            .call_as(
                Auth::Bearer(&secret),
                &doc,
                "post",
                "/tools",
                "/tools",
                Some(&json!({"name": "x"})),
            )
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "the key's scopes bind");
        let a = gw
            .call_as(
                Auth::Bearer(&secret),
                &doc,
                "post",
                "/auth/keys",
                "/auth/keys",
                Some(&key),
            )
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "a key cannot mint keys");
        for query in ["", "?user=*"] {
            let a = gw
                .call(
                    &doc,
                    "get",
                    "/auth/keys",
                    &format!("/auth/keys{query}"),
                    None,
                )
                .await;
            assert_eq!(a.json()["total"], 1, "/auth/keys{query}");
        }
        let one_key = format!("/auth/keys/{key_id}");
        let a = gw
            .call(&doc, "delete", "/auth/keys/{id}", &one_key, None)
            .await;
        assert_eq!(a.status, StatusCode::NO_CONTENT);
        let a = gw
            .call(&doc, "delete", "/auth/keys/{id}", &one_key, None)
            .await;
        assert_eq!(a.status, StatusCode::CONFLICT);
        assert_eq!(problem(&a), "key-revoked");
        let a = gw
            .call_as(
                Auth::Bearer(&secret),
                &doc,
                "get",
                "/auth/me",
                "/auth/me",
                None,
            )
            .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "a revoked key");

        // Roles: create, conflict, list, delete.
        let role = example(&doc, "/roles", "post");
        let role_name = role["name"].as_str().expect("role name").to_owned();
        let a = gw.call(&doc, "post", "/roles", "/roles", Some(&role)).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.json());
        let a = gw.call(&doc, "post", "/roles", "/roles", Some(&role)).await;
        assert_eq!(problem(&a), "role-exists");
        let mut builtin = role.clone();
        builtin["name"] = json!("admin");
        let a = gw
            .call(&doc, "post", "/roles", "/roles", Some(&builtin))
            .await;
        assert_eq!(problem(&a), "role-exists");
        let a = gw.call(&doc, "get", "/roles", "/roles", None).await;
        assert_eq!(a.json()["total"], 6, "five built-in roles and one custom");
        let one_role = format!("/roles/{role_name}");
        let a = gw
            .call(&doc, "delete", "/roles/{name}", &one_role, None)
            .await;
        assert_eq!(a.status, StatusCode::NO_CONTENT);
        let a = gw
            .call(&doc, "delete", "/roles/{name}", &one_role, None)
            .await;
        assert_eq!(problem(&a), "unknown-role");

        // Grants: create, list, delete.
        let grant = example(&doc, "/grants", "post");
        let a = gw
            .call(&doc, "post", "/grants", "/grants", Some(&grant))
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.json());
        let grant_id = a.json()["id"].as_str().expect("id").to_owned();
        let a = gw
            .call(
                &doc,
                "post",
                "/grants",
                "/grants",
                Some(
                    &json!({"subject_kind": "user", "subject": "nobody", "effect": "allow",
                             "resource_kind": "server", "pattern": "*"}),
                ),
            )
            .await;
        assert_eq!(problem(&a), "unknown-user");
        let a = gw.call(&doc, "get", "/grants", "/grants", None).await;
        assert_eq!(a.json()["total"], 1);
        let one_grant = format!("/grants/{grant_id}");
        let a = gw
            .call(&doc, "delete", "/grants/{id}", &one_grant, None)
            .await;
        assert_eq!(a.status, StatusCode::NO_CONTENT);

        // Tenants: create, conflict, list; a user in the new tenant.
        let tenant = example(&doc, "/tenants", "post");
        let a = gw
            .call(&doc, "post", "/tenants", "/tenants", Some(&tenant))
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.json());
        let a = gw
            .call(&doc, "post", "/tenants", "/tenants", Some(&tenant))
            .await;
        assert_eq!(problem(&a), "tenant-exists");
        let a = gw.call(&doc, "get", "/tenants", "/tenants", None).await;
        assert_eq!(a.json()["total"], 2);
        for (tenant_id, status) in [
            (&tenant["id"], StatusCode::CREATED),
            (&json!("nowhere"), StatusCode::NOT_FOUND),
        ] {
            let mut elsewhere = user.clone();
            elsewhere["tenant"] = tenant_id.clone();
            let a = gw
                .call(&doc, "post", "/users", "/users", Some(&elsewhere))
                .await;
            assert_eq!(a.status, status, "{}", a.json());
        }

        // The session cookie: state changes need the CSRF token.
        let mut with_cookie = login.clone();
        with_cookie["cookie"] = json!(true);
        let a = gw
            .call_as(
                Auth::Anonymous,
                &doc,
                "post",
                "/auth/login",
                "/auth/login",
                Some(&with_cookie),
            )
            .await;
        assert!(header(&a, "set-cookie").starts_with("metamcp_session="));
        let session = a.json();
        let cookie = session["access_token"].as_str().expect("access");
        let csrf = session["csrf_token"].as_str().expect("csrf");
        let role = json!({"name": "cookie-role", "permissions": ["tools:read"]});
        let a = gw
            .call_as(
                Auth::Cookie(cookie, None),
                &doc,
                "post",
                "/roles",
                "/roles",
                Some(&role),
            )
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN);
        assert_eq!(problem(&a), "csrf");
        let a = gw
            .call_as(
                Auth::Cookie(cookie, Some(csrf)),
                &doc,
                "post",
                "/roles",
                "/roles",
                Some(&role),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.json());

        // Log out: the access token and the refresh token stop working.
        let mut logout = example(&doc, "/auth/logout", "post");
        logout["refresh_token"] = session["refresh_token"].clone();
        let a = gw
            .call_as(
                Auth::Bearer(cookie),
                &doc,
                "post",
                "/auth/logout",
                "/auth/logout",
                Some(&logout),
            )
            .await;
        assert_eq!(a.status, StatusCode::NO_CONTENT);
        let a = gw
            .call_as(
                Auth::Bearer(cookie),
                &doc,
                "get",
                "/auth/me",
                "/auth/me",
                None,
            )
            .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        let a = gw
            .call_as(
                Auth::Anonymous,
                &doc,
                "post",
                "/auth/refresh",
                "/auth/refresh",
                Some(&json!({"refresh_token": session["refresh_token"]})),
            )
            .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        let no_body = gw
            .send_as(Auth::Bearer(&theirs), &Method::POST, "/auth/logout", None)
            .await;
        assert_eq!(
            no_body.status,
            StatusCode::NO_CONTENT,
            "the body is optional"
        );
        gw.app.state.upstreams.shutdown().await;
    }

    #[tokio::test]
    async fn docs_page_lists_every_operation() {
        let gw = gateway().await;
        let doc = doc();
        let answer = gw.send(&Method::GET, "/docs", None).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.content_type(), "text/html");
        let html = String::from_utf8(answer.body).expect("utf-8 page");
        assert!(html.contains(&escape(
            doc["info"]["description"].as_str().unwrap_or_default()
        )));
        for (path, method, op) in operations(&doc) {
            let heading = format!(
                "<span class=\"m\">{}</span><code>{}</code>",
                method.to_uppercase(),
                escape(&path)
            );
            assert!(html.contains(&heading), "the page lacks {heading}");
            let summary = op["summary"].as_str().unwrap_or_default();
            assert!(
                html.contains(&escape(summary)),
                "the page lacks {summary:?}"
            );
            let example = &op["requestBody"]["content"]["application/json"]["example"];
            if !example.is_null() {
                let shown = escape(&serde_json::to_string_pretty(example).expect("example"));
                assert!(
                    html.contains(&shown),
                    "the page lacks the example of {method} {path}"
                );
            }
        }
        gw.app.state.upstreams.shutdown().await;
    }
}
