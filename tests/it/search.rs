//! Tool search: keyword, semantic and hybrid over REST with the real model,
//! its fallback when the model is missing or corrupt, and discovery mode
//! (`/mcp/discovery`) with the Python SDK and server-everything.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::common::{self, Gateway, Options, texts};

/// Waits until the embedder is ready and every tool has its vector;
/// returns the `search` part of `/health/detailed`.
async fn wait_embedded(gw: &Gateway, at_least: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, health) = gw.get("/api/v1/health/detailed").await;
        let search = &health["search"];
        if search["state"] == "ready"
            && search["pending_tools"] == 0
            && search["embedded_tools"].as_u64().unwrap_or(0) >= at_least
        {
            return search.clone();
        }
        if search["state"] == "unavailable" || Instant::now() > deadline {
            panic!("embeddings not ready: {search}\nlog:\n{}", gw.log_text());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn search(gw: &Gateway, query: &str) -> Value {
    let (code, body) = gw.get(&format!("/api/v1/tools/search?{query}")).await;
    assert_eq!(code, 200, "{query}: {body}");
    body
}

fn names(body: &Value) -> Vec<String> {
    body["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {body}"))
        .iter()
        .map(|r| r["tool"]["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn with_model(model: &Path) -> Options {
    Options::default().env("META_MCP_MODEL_DIR", &model.display().to_string())
}

const TOOLS: &str = r#"[
    {"name": "readFile", "description": "Read the contents of a file from disk", "tags": ["fs"], "category": "files"},
    {"name": "write_file", "description": "Write text to a file on disk", "tags": ["fs", "write"], "category": "files"},
    {"name": "send_email", "description": "Send an email message to a recipient", "tags": ["mail"]},
    {"name": "get_weather", "description": "Current weather forecast for a city", "category": "weather"},
    {"name": "stock_quote", "description": "Latest share price of a listed company"}
]"#;

#[tokio::test]
async fn semantic_and_hybrid_search_with_the_real_model() {
    let test = "semantic_and_hybrid_search_with_the_real_model";
    let Some(model) = common::external("METAMCP_TEST_MODEL_DIR", test) else {
        return;
    };
    let mut gw = Gateway::start(with_model(&model)).await;
    let tools: Value = serde_json::from_str(TOOLS).unwrap();
    let (code, body) = gw.post("/api/v1/tools/import", tools).await;
    assert_eq!(code, 201, "{body}");
    let status = wait_embedded(&gw, 5).await;
    assert_eq!(status["provider"], "local");
    assert_eq!(
        status["last_pass"]["embedded"], 5,
        "each tool embedded once: {status}"
    );

    // No word in common with any tool: keyword finds nothing, meaning does.
    let q = "q=how%20hot%20is%20it%20outside%20today";
    let body = search(&gw, &format!("{q}&search_type=keyword")).await;
    assert_eq!(body["total"], 0, "{body}");
    let body = search(&gw, &format!("{q}&search_type=semantic")).await;
    assert_eq!(body["used"], "semantic", "{body}");
    assert_eq!(names(&body)[0], "get_weather", "{body}");
    assert!(body["note"].is_null(), "{body}");
    let top = &body["results"][0];
    assert_eq!(top["matched"], json!(["semantic"]), "{body}");
    assert!(top["semantic_score"].as_f64().unwrap() > 0.2, "{body}");
    let body = search(&gw, q).await;
    assert_eq!(body["search_type"], "hybrid");
    assert_eq!(body["used"], "hybrid", "{body}");
    assert_eq!(names(&body)[0], "get_weather", "{body}");

    // Words and meaning together: keyword fields are reported too.
    let body = search(&gw, "q=email%20someone").await;
    assert_eq!(names(&body)[0], "send_email", "{body}");
    let matched = body["results"][0]["matched"].as_array().unwrap();
    assert!(
        matched.contains(&json!("name")) && matched.contains(&json!("semantic")),
        "{body}"
    );

    // The threshold applies to the semantic score.
    let body = search(
        &gw,
        &format!("{q}&search_type=semantic&similarity_threshold=0.99"),
    )
    .await;
    assert_eq!(body["total"], 0, "{body}");
    let body = search(&gw, &format!("{q}&similarity_threshold=0.99")).await;
    assert_eq!(body["total"], 0, "hybrid too: {body}");

    // Filters: category, tags, and max_results.
    for kind in ["semantic", "hybrid"] {
        let body = search(
            &gw,
            &format!("q=save%20my%20notes&search_type={kind}&category=files"),
        )
        .await;
        assert_eq!(names(&body), ["write_file", "readFile"], "{kind}: {body}");
        let body = search(
            &gw,
            &format!("q=save%20my%20notes&search_type={kind}&tags=fs,write"),
        )
        .await;
        assert_eq!(names(&body), ["write_file"], "{kind}: {body}");
        let body = search(&gw, &format!("q=anything&search_type={kind}&max_results=2")).await;
        assert_eq!(body["total"], 2, "{kind}: {body}");
    }

    // A disabled tool is not found by any kind of search.
    let (code, body) = gw
        .send(
            "PUT",
            "/api/v1/tools/get_weather",
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    for kind in ["keyword", "semantic", "hybrid"] {
        let body = search(&gw, &format!("q=weather%20forecast&search_type={kind}")).await;
        assert!(
            !names(&body).contains(&"get_weather".to_owned()),
            "{kind}: {body}"
        );
    }

    // A changed description counts at once (the stale vector is not used)
    // and is embedded again in the background.
    let (code, body) = gw
        .send(
            "PUT",
            "/api/v1/tools/stock_quote",
            json!({"description": "Translate a sentence into French"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let body = search(
        &gw,
        "q=share%20price%20of%20a%20company&search_type=semantic",
    )
    .await;
    if let Some(hit) = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["tool"]["name"] == "stock_quote")
    {
        // Only once its new text has its own vector, which is about French.
        assert!(hit["semantic_score"].as_f64().unwrap() < 0.3, "{body}");
    }
    // The pass that follows the change embeds the changed tool alone.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = wait_embedded(&gw, 5).await;
        if status["last_pass"]["embedded"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "only the changed tool: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = search(&gw, "q=say%20it%20in%20french&search_type=semantic").await;
    assert_eq!(names(&body)[0], "stock_quote", "{body}");

    // A removed tool disappears at once.
    let (code, _) = gw
        .send("DELETE", "/api/v1/tools/send_email", json!({}))
        .await;
    assert_eq!(code, 204);
    for kind in ["keyword", "semantic", "hybrid"] {
        let body = search(&gw, &format!("q=send%20an%20email&search_type={kind}")).await;
        assert!(
            !names(&body).contains(&"send_email".to_owned()),
            "{kind}: {body}"
        );
    }
    // Its vector is forgotten too, in memory and in the store.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, health) = gw.get("/api/v1/health/detailed").await;
        if health["search"]["embedded_tools"] == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "vector kept: {health}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Vectors are stored: a restart embeds nothing again.
    gw.stop();
    let (data_dir, tmp) = gw.keep_data();
    let gw2 = Gateway::start(Options {
        data_dir: Some(data_dir),
        ..with_model(&model)
    })
    .await;
    let status = wait_embedded(&gw2, 4).await;
    assert!(
        status["last_pass"].is_null(),
        "nothing re-embedded: {status}"
    );
    assert_eq!(
        status["embedded_tools"], 4,
        "the removed tool's vector is gone: {status}"
    );
    let body = search(&gw2, "q=say%20it%20in%20french&search_type=semantic").await;
    assert_eq!(names(&body)[0], "stock_quote", "{body}");
    drop(tmp);
}

#[tokio::test]
async fn a_missing_or_corrupt_model_is_reported_and_search_falls_back_to_keywords() {
    // No real model needed: the files are missing, then wrong.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    let gw = Gateway::start(with_model(&dir)).await;
    let state = wait_state(&gw).await;
    assert_eq!(state["state"], "unavailable", "{state}");
    let error = state["error"].as_str().unwrap();
    assert!(
        error.contains("config.json is missing") && error.contains("metamcp models fetch"),
        "{state}"
    );
    let (code, body) = gw
        .post(
            "/api/v1/tools",
            json!({"name": "send_email", "description": "Send an email"}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    for kind in ["semantic", "hybrid"] {
        let body = search(&gw, &format!("q=email&search_type={kind}")).await;
        assert_eq!(body["used"], "keyword", "{body}");
        assert_eq!(names(&body), ["send_email"], "{body}");
        let note = body["note"].as_str().unwrap();
        assert!(note.contains("config.json is missing"), "{body}");
    }
    drop(gw);

    std::fs::create_dir_all(&dir).unwrap();
    for name in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::write(dir.join(name), b"{}").unwrap();
    }
    let gw = Gateway::start(with_model(&dir)).await;
    let state = wait_state(&gw).await;
    let error = state["error"].as_str().unwrap_or_default();
    assert!(error.contains("config.json is corrupt"), "{state}");
    let body = search(&gw, "q=email").await;
    assert_eq!(body["used"], "keyword", "{body}");
    assert!(body["note"].as_str().unwrap().contains("corrupt"), "{body}");
}

/// The tool names the Python client's `list-tools` printed, in order.
fn listed_names(out: &Value) -> Vec<String> {
    out["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools: {out}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The embedder's state once it is no longer loading.
async fn wait_state(gw: &Gateway) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, health) = gw.get("/api/v1/health/detailed").await;
        if health["search"]["state"] != "loading" || Instant::now() > deadline {
            return health["search"].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn discovery_is_a_reserved_profile_name() {
    let gw = Gateway::start(Options::default()).await;
    let (code, body) = gw
        .post(
            "/api/v1/profiles",
            json!({"name": "discovery", "servers": []}),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("reserved"),
        "{body}"
    );
}

/// The Python SDK in discovery mode: it sees two tools, finds
/// server-everything's `echo` by what it does, and calls it.
#[tokio::test]
async fn python_sdk_finds_and_calls_echo_in_discovery_mode() {
    let test = "python_sdk_finds_and_calls_echo_in_discovery_mode";
    let Some(model) = common::external("METAMCP_TEST_MODEL_DIR", test) else {
        return;
    };
    let Some(everything) = common::external("METAMCP_TEST_EVERYTHING", test) else {
        return;
    };
    let Some(python) = common::external("METAMCP_TEST_PYTHON", test) else {
        return;
    };
    let gw = Gateway::start(
        with_model(&model)
            .config(
                json!({"mcpServers": {"everything": {"command": everything, "args": ["stdio"]}}}),
            )
            .ready(),
    )
    .await;
    gw.wait_server("everything", "ready").await;
    gw.wait_tool("everything__echo", true).await;
    wait_embedded(&gw, 5).await;
    let url = gw.url("/mcp/discovery");
    let py = |args: Vec<String>| {
        let python = python.clone();
        let url = url.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let mut argv = vec!["--url", url.as_str(), "--mode", "legacy"];
                argv.extend(args.iter().map(String::as_str));
                common::python_client(&python, &argv)
            })
            .await
            .unwrap()
        }
    };
    let (code, listed) = py(vec!["list-tools".into()]).await;
    assert_eq!(code, 0, "{listed}");
    assert_eq!(
        listed_names(&listed),
        ["search_tools", "call_tool"],
        "{listed}"
    );
    assert!(
        listed["tools"][0]["description"]
            .as_str()
            .unwrap()
            .contains("call_tool"),
        "the description tells a model what to do next: {listed}"
    );

    let (code, found) = py(vec![
        "call".into(),
        "search_tools".into(),
        json!({"query": "repeat my message back"}).to_string(),
    ])
    .await;
    assert_eq!(code, 0, "{found}");
    assert_eq!(found["isError"], false, "{found}");
    let tools = found["structuredContent"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{found}"));
    assert_eq!(tools[0]["name"], "everything__echo", "{found}");
    assert_eq!(tools[0]["inputSchema"]["type"], "object", "{found}");

    let (code, called) = py(vec![
        "call".into(),
        "call_tool".into(),
        json!({"name": "everything__echo", "arguments": {"message": "hi"}}).to_string(),
    ])
    .await;
    assert_eq!(code, 0, "{called}");
    assert_eq!(texts(&called), ["Echo: hi"], "{called}");

    // A wrong name is a result the model can read, not a protocol error.
    let (code, wrong) = py(vec![
        "call".into(),
        "call_tool".into(),
        json!({"name": "echo_please", "arguments": {}}).to_string(),
    ])
    .await;
    assert_eq!(code, 0, "{wrong}");
    assert_eq!(wrong["isError"], true, "{wrong}");
    assert!(texts(&wrong)[0].contains("search_tools"), "{wrong}");

    // The whole catalog is still served at /mcp.
    let (code, all) = tokio::task::spawn_blocking({
        let python = python.clone();
        let url = gw.mcp_url();
        move || common::python_client(&python, &["--url", &url, "--mode", "legacy", "list-tools"])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{all}");
    assert!(listed_names(&all).len() > 5, "{all}");
}

/// A stand-in for an OpenAI-compatible `/v1/embeddings` endpoint: each word
/// of a text adds one to a hashed dimension, so texts that share words are
/// close. It records the bearer token it was sent.
async fn fake_embeddings() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use axum::{Json, Router, http::HeaderMap, routing::post};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let tokens = seen.clone();
    let app = Router::new().route(
        "/v1/embeddings",
        post(move |headers: HeaderMap, Json(body): Json<Value>| {
            let tokens = tokens.clone();
            async move {
                if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
                    tokens.lock().unwrap().push(auth.to_owned());
                }
                let inputs = body["input"].as_array().cloned().unwrap_or_default();
                let data: Vec<Value> = inputs
                    .iter()
                    .enumerate()
                    .map(|(i, text)| {
                        let mut v = vec![0f32; 64];
                        for word in text
                            .as_str()
                            .unwrap_or_default()
                            .to_lowercase()
                            .split(|c: char| !c.is_alphanumeric())
                        {
                            if word.len() > 2 {
                                let h = word
                                    .bytes()
                                    .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
                                v[(h % 64) as usize] += 1.0;
                            }
                        }
                        json!({"object": "embedding", "index": i, "embedding": v})
                    })
                    .collect();
                Json(json!({"object": "list", "data": data, "model": body["model"]}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/v1"), seen)
}

#[tokio::test]
async fn an_openai_compatible_endpoint_provides_the_vectors() {
    let (url, seen) = fake_embeddings().await;
    let gw = Gateway::start(
        Options::default()
            .env("META_MCP_EMBEDDING_PROVIDER", "openai")
            .env("META_MCP_EMBEDDING_URL", &url)
            .env("META_MCP_EMBEDDING_MODEL", "fake-embed")
            .env("META_MCP_EMBEDDING_API_KEY", "sk-test-secret"),
    )
    .await;
    let tools: Value = serde_json::from_str(TOOLS).unwrap();
    let (code, body) = gw.post("/api/v1/tools/import", tools).await;
    assert_eq!(code, 201, "{body}");
    let status = wait_embedded(&gw, 5).await;
    assert_eq!(status["provider"], "openai", "{status}");
    assert_eq!(status["model"], "openai:fake-embed", "{status}");
    let body = search(&gw, "q=forecast%20for%20my%20city&search_type=semantic").await;
    assert_eq!(body["used"], "semantic", "{body}");
    assert_eq!(names(&body)[0], "get_weather", "{body}");
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .all(|t| t == "Bearer sk-test-secret"),
        "the key is sent as a bearer token"
    );
    assert!(
        !gw.log_text().contains("sk-test-secret"),
        "the key is never logged"
    );
    drop(gw);

    // The endpoint is a user-supplied URL: the outbound guard applies.
    let gw = Gateway::start(
        Options::default()
            .env("META_MCP_EMBEDDING_PROVIDER", "openai")
            .env("META_MCP_EMBEDDING_URL", &url)
            .env("META_MCP_EMBEDDING_MODEL", "fake-embed")
            .env("META_MCP_OUTBOUND_ALLOW_LOOPBACK", "false"),
    )
    .await;
    let (code, body) = gw
        .post(
            "/api/v1/tools",
            json!({"name": "get_weather", "description": "Weather forecast"}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let state = wait_state(&gw).await;
    assert_eq!(state["state"], "unavailable", "{state}");
    assert!(
        state["error"].as_str().unwrap().contains("refused"),
        "{state}"
    );
    let body = search(&gw, "q=weather").await;
    assert_eq!(body["used"], "keyword", "{body}");
}
