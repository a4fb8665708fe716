//! Catalog management: profiles served as their own MCP endpoints, and tool
//! pinning against definitions that change under the gateway.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{self, Gateway, Options, fixture_stdio, mcp_request, tool_names};

#[tokio::test]
async fn a_profile_serves_exactly_its_tools_under_its_own_names() {
    let m = common::marker("fx-prof");
    let gw = Gateway::start(
        Options::default()
            .config(json!({
                "mcpServers": {"fx": fixture_stdio(&m)},
                "profiles": {"readonly": {"description": "from the file", "tools": ["fx__count_calls"]}}
            }))
            .ready(),
    )
    .await;
    gw.wait_server("fx", "ready").await;
    let (code, body) = gw
        .post(
            "/api/v1/profiles",
            json!({
                "name": "mini",
                "description": "echo and add only",
                "tools": ["fx/echo"],
                "patterns": ["fx__ad?"],
                "overrides": {"fx/echo": {"name": "say", "description": "Say it back"}}
            }),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["tool_names"], json!(["fx__add", "say"]));
    assert!(body["endpoint"].as_str().unwrap().ends_with("/mcp/mini"));

    let url = gw.url("/mcp/mini");
    let listed = mcp_request(&url, "tools/list", json!({})).await;
    assert_eq!(tool_names(&listed), ["fx__add", "say"]);
    let say = listed["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "say")
        .unwrap()
        .clone();
    assert_eq!(say["description"], "Say it back");
    let called = mcp_request(
        &url,
        "tools/call",
        json!({"name": "say", "arguments": {"message": "renamed"}}),
    )
    .await;
    assert_eq!(
        called["result"]["content"][0]["text"], "renamed",
        "{called}"
    );
    // Tools outside the profile are refused, under any of their names.
    for name in ["fx__slow", "fx__echo"] {
        let refused = mcp_request(
            &url,
            "tools/call",
            json!({"name": name, "arguments": {"ms": 1, "message": "x"}}),
        )
        .await;
        assert_eq!(refused["error"]["code"], -32602, "{name}: {refused}");
    }
    // The whole catalog is still at /mcp.
    let all = mcp_request(&gw.mcp_url(), "tools/list", json!({})).await;
    assert!(tool_names(&all).len() > 5);

    let (_, listed) = gw.get("/api/v1/tools?profile=mini").await;
    let names: Vec<&str> = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fx__add", "fx__echo"]);
    let (code, _) = gw.get("/api/v1/tools?profile=nope").await;
    assert_eq!(code, 404);

    // A real client sees the same through the profile endpoint.
    if let Some(python) = common::external(
        "METAMCP_TEST_PYTHON",
        "a_profile_serves_exactly_its_tools (Python client)",
    ) {
        for mode in ["legacy", "modern"] {
            let (code, out) =
                common::python_client(&python, &["--url", &url, "--mode", mode, "list-tools"]);
            assert_eq!(code, 0, "{out}");
            let mut names: Vec<&str> = out["tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap())
                .collect();
            names.sort();
            assert_eq!(names, ["fx__add", "say"], "{mode}");
            let (code, out) = common::python_client(
                &python,
                &[
                    "--url",
                    &url,
                    "--mode",
                    mode,
                    "call",
                    "say",
                    r#"{"message": "py"}"#,
                ],
            );
            assert_eq!(code, 0, "{out}");
            assert_eq!(out["content"][0]["text"], "py");
            let (code, out) = common::python_client(
                &python,
                &[
                    "--url",
                    &url,
                    "--mode",
                    mode,
                    "call",
                    "fx__slow",
                    r#"{"ms": 1}"#,
                ],
            );
            assert_eq!(code, 2, "{out}");
        }
    }

    // Updates apply at once; the config-file profile is read-only.
    let (code, body) = gw
        .send("PUT", "/api/v1/profiles/mini", json!({"servers": ["fx"]}))
        .await;
    assert_eq!(code, 200, "{body}");
    let listed = mcp_request(&url, "tools/list", json!({})).await;
    assert!(tool_names(&listed).contains(&"fx__slow".to_owned()));
    let (code, body) = gw
        .send("DELETE", "/api/v1/profiles/readonly", json!({}))
        .await;
    assert_eq!(code, 409, "{body}");
    let (code, _) = gw.send("DELETE", "/api/v1/profiles/mini", json!({})).await;
    assert_eq!(code, 204);
    let r = gw
        .client()
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let (code, body) = gw
        .post(
            "/api/v1/profiles",
            json!({"name": "bad", "overrides": {"x": {"name": "no spaces allowed"}}}),
        )
        .await;
    assert_eq!(code, 422, "{body}");
}

async fn wait_until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn legacy_fixture(marker: &str, mode: &str) -> Value {
    json!({"command": common::fixture_bin(), "args": ["--name", marker, "--legacy"], "on_tool_change": mode})
}

#[tokio::test]
async fn a_changed_tool_is_quarantined_until_approved() {
    let (q, a) = (common::marker("fx-q"), common::marker("fx-acc"));
    let gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {"q": legacy_fixture(&q, "quarantine"), "a": legacy_fixture(&a, "accept")}}))
            .ready(),
    )
    .await;
    let status = gw.wait_server("q", "ready").await;
    assert_eq!(
        status["status"]["protocol_version"], "2025-11-25",
        "a legacy upstream: {status}"
    );
    gw.wait_server("a", "ready").await;
    gw.wait_tool("q__echo", true).await;

    // The upstream changes echo's description and schema at run time.
    let (code, body) = gw.execute("q__mutate", json!({})).await;
    assert_eq!(code, 200, "{body}");
    wait_until("q__echo to be quarantined", async || {
        gw.get("/api/v1/tools/q__echo").await.1["quarantine"].is_string()
    })
    .await;
    let (_, listed) = gw.get("/api/v1/tools?server=q").await;
    let names: Vec<&str> = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        !names.contains(&"q__echo"),
        "hidden from REST listings: {names:?}"
    );
    let mcp = tool_names(&mcp_request(&gw.mcp_url(), "tools/list", json!({})).await);
    assert!(
        !mcp.contains(&"q__echo".to_owned()) && mcp.contains(&"q__add".to_owned()),
        "{mcp:?}"
    );
    let (code, body) = gw.execute("q__echo", json!({"message": "x"})).await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["type"], "urn:metamcp:problem:tool-quarantined");
    assert!(
        body["detail"].as_str().unwrap().contains("approve"),
        "{body}"
    );
    let refused = mcp_request(
        &gw.mcp_url(),
        "tools/call",
        json!({"name": "q__echo", "arguments": {"message": "x"}}),
    )
    .await;
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("quarantined"),
        "{refused}"
    );

    let (_, changes) = gw.get("/api/v1/tools/q__echo/changes").await;
    let change = &changes["changes"][0];
    assert_eq!(change["status"], "pending", "{changes}");
    let paths: Vec<&str> = change["diff"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        ["/description", "/inputSchema/properties/path"],
        "{change}"
    );
    let (_, pending) = gw.get("/api/v1/changes?status=pending").await;
    assert_eq!(pending["total"], 1);

    let (code, body) = gw.post("/api/v1/tools/q__echo/approve", json!({})).await;
    assert_eq!(code, 200, "{body}");
    assert!(body["quarantine"].is_null(), "{body}");
    assert!(body["description"].as_str().unwrap().contains("v2"));
    let (code, body) = gw.execute("q__echo", json!({"message": "approved"})).await;
    assert_eq!(code, 200, "{body}");
    let (_, changes) = gw.get("/api/v1/tools/q__echo/changes").await;
    assert_eq!(changes["changes"][0]["status"], "approved");

    // In accept mode the change is recorded with its diff and the new
    // definition is used at once.
    let (code, _) = gw.execute("a__mutate", json!({})).await;
    assert_eq!(code, 200);
    wait_until("a__echo's change to be recorded", async || {
        gw.get("/api/v1/tools/a__echo/changes").await.1["changes"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
    })
    .await;
    let (_, changes) = gw.get("/api/v1/tools/a__echo/changes").await;
    assert_eq!(changes["changes"][0]["status"], "accepted");
    assert_eq!(changes["changes"][0]["diff"][0]["path"], "/description");
    let (_, echo) = gw.get("/api/v1/tools/a__echo").await;
    assert!(echo["quarantine"].is_null());
    assert!(echo["description"].as_str().unwrap().contains("v2"));
}

#[tokio::test]
async fn config_file_edits_apply_live_and_a_broken_edit_is_refused() {
    let (a, b) = (common::marker("fx-live-a"), common::marker("fx-live-b"));
    let gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {"a": fixture_stdio(&a)}}))
            .env("META_MCP_CONFIG_WATCH_SECS", "0.1")
            .ready(),
    )
    .await;
    gw.wait_server("a", "ready").await;
    let config = gw.data_dir.join("config.json");
    let write = |v: &Value| std::fs::write(&config, serde_json::to_vec_pretty(v).unwrap()).unwrap();

    // Add b, remove a, add a profile: all without a restart.
    write(&json!({
        "mcpServers": {"b": fixture_stdio(&b)},
        "profiles": {"only_echo": {"tools": ["b/echo"]}}
    }));
    gw.wait_server("b", "ready").await;
    wait_until("server a to go", async || {
        gw.get("/api/v1/servers/a").await.0 == 404
    })
    .await;
    let left = common::wait_no_processes(&a, Duration::from_secs(10)).await;
    assert!(left.is_empty(), "a's processes are gone: {left:?}");
    let (code, body) = gw.execute("b__echo", json!({"message": "live"})).await;
    assert_eq!(code, 200, "{body}");
    wait_until("the profile", async || {
        gw.get("/api/v1/profiles/only_echo").await.0 == 200
    })
    .await;
    let listed = mcp_request(&gw.url("/mcp/only_echo"), "tools/list", json!({})).await;
    assert_eq!(tool_names(&listed), ["b__echo"]);

    // A malformed edit is refused and logged; the running config keeps serving.
    std::fs::write(&config, b"{\"mcpServers\": {\"b\": ").unwrap();
    wait_until("the refusal in the log", async || {
        gw.log_text().contains("config file change refused")
    })
    .await;
    let (code, _) = gw.execute("b__echo", json!({"message": "still"})).await;
    assert_eq!(code, 200);
    // So is an edit that parses but is invalid.
    write(&json!({"mcpServers": {"b": {"command": "x", "url": "http://h"}}}));
    wait_until("the second refusal", async || {
        gw.log_text().matches("config file change refused").count() >= 2
    })
    .await;
    let (code, body) = gw.get("/api/v1/servers/b").await;
    assert_eq!(code, 200);
    assert_eq!(body["status"]["status"], "ready");
    assert_eq!(common::processes_with(&b).len(), 1, "b was not restarted");
}

/// Reads an SSE response until a `data:` line contains `needle`.
async fn sse_until(response: reqwest::Response, needle: &str, within: Duration) -> Vec<Value> {
    use futures::StreamExt;
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("no {needle} within {within:?}; saw {seen:?}"));
        let Some(Ok(bytes)) = chunk else {
            panic!("stream ended before {needle}; saw {seen:?}")
        };
        buffer.push_str(&String::from_utf8_lossy(&bytes));
        while let Some(end) = buffer.find('\n') {
            let line: String = buffer.drain(..=end).collect();
            if let Some(data) = line.trim().strip_prefix("data:")
                && let Ok(v) = serde_json::from_str::<Value>(data.trim())
            {
                let found = data.contains(needle);
                seen.push(v);
                if found {
                    return seen;
                }
            }
        }
    }
}

#[tokio::test]
async fn clients_of_both_eras_hear_of_list_changes() {
    let gw = Gateway::start(Options::default()).await;
    let client = gw.client();
    let post = |body: Value, headers: Vec<(&'static str, String)>| {
        let mut r = client
            .post(gw.mcp_url())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r.json(&body).send()
    };
    // A legacy session with its standing GET stream.
    let init = post(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "it", "version": "0"}}}),
        vec![],
    )
    .await
    .unwrap();
    let session = init.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let caps = sse_until(init, "capabilities", Duration::from_secs(10)).await;
    let caps = &caps.last().unwrap()["result"]["capabilities"];
    assert_eq!(caps["tools"]["listChanged"], true, "{caps}");
    let session_headers = || {
        vec![
            ("mcp-session-id", session.clone()),
            ("mcp-protocol-version", "2025-11-25".to_owned()),
        ]
    };
    let r = post(
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        session_headers(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 202);
    let stream = client
        .get(gw.mcp_url())
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);

    // A 2026-07-28 client listening for tool list changes only.
    let listen = post(
        json!({"jsonrpc": "2.0", "id": 7, "method": "subscriptions/listen", "params": {
            "notifications": {"toolsListChanged": true},
            "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                      "io.modelcontextprotocol/clientCapabilities": {}}}}),
        vec![
            ("mcp-protocol-version", "2026-07-28".to_owned()),
            ("mcp-method", "subscriptions/listen".to_owned()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(listen.status(), 200);
    use futures::StreamExt;
    let mut listen_stream = listen.bytes_stream();
    // The acknowledgement comes first.
    let first = tokio::time::timeout(Duration::from_secs(10), listen_stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let first = String::from_utf8_lossy(&first).into_owned();
    let mut rest = first.clone();
    if !first.contains("subscriptions/acknowledged") {
        let more = tokio::time::timeout(Duration::from_secs(10), listen_stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        rest.push_str(&String::from_utf8_lossy(&more));
    }
    assert!(
        rest.contains("notifications/subscriptions/acknowledged"),
        "{rest}"
    );

    // The catalog changes.
    let (code, _) = gw
        .post(
            "/api/v1/tools",
            json!({"name": "new_tool", "description": "appears"}),
        )
        .await;
    assert_eq!(code, 201);

    let seen = sse_until(
        stream,
        "notifications/tools/list_changed",
        Duration::from_secs(10),
    )
    .await;
    assert!(
        seen.iter()
            .any(|m| m["method"] == "notifications/tools/list_changed")
    );
    let mut buffer = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !buffer.contains("notifications/tools/list_changed") {
        let chunk = tokio::time::timeout_at(deadline, listen_stream.next())
            .await
            .expect("list_changed on the listen stream");
        buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap().unwrap()));
    }
    assert!(
        buffer.contains("\"io.modelcontextprotocol/subscriptionId\":7"),
        "{buffer}"
    );
    assert!(
        !buffer.contains("prompts/list_changed"),
        "only the types asked for: {buffer}"
    );
}

#[tokio::test]
async fn a_modern_upstream_reports_changes_over_subscriptions_listen() {
    let m = common::marker("fx-modern-q");
    let mut spec = fixture_stdio(&m);
    spec["on_tool_change"] = json!("quarantine");
    let gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {"q": spec}}))
            .ready(),
    )
    .await;
    let status = gw.wait_server("q", "ready").await;
    assert_eq!(
        status["status"]["protocol_version"], "2026-07-28",
        "{status}"
    );
    let (code, body) = gw.execute("q__mutate", json!({})).await;
    assert_eq!(code, 200, "{body}");
    wait_until("q__echo to be quarantined", async || {
        gw.get("/api/v1/tools/q__echo").await.1["quarantine"].is_string()
    })
    .await;
}

#[tokio::test]
async fn tool_lists_are_paged_behind_sealed_cursors() {
    let m = common::marker("fx-pages");
    let gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {"fx": fixture_stdio(&m)}}))
            .env("META_MCP_PAGE_SIZE", "3")
            .ready(),
    )
    .await;
    gw.wait_server("fx", "ready").await;
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let params = match &cursor {
            Some(c) => json!({"cursor": c}),
            None => json!({}),
        };
        let page = mcp_request(&gw.mcp_url(), "tools/list", params).await;
        let tools = page["result"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("{page}"));
        assert!(tools.len() <= 3);
        names.extend(tools.iter().map(|t| t["name"].as_str().unwrap().to_owned()));
        pages += 1;
        match page["result"]["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len(), "no tool twice: {names:?}");
    assert!(
        names.len() >= 10 && pages == names.len().div_ceil(3),
        "{names:?}"
    );
    // A tampered cursor is refused.
    let tampered = format!("{}x", cursor.unwrap_or_else(|| "AAAA.BBBB".into()));
    let refused = mcp_request(&gw.mcp_url(), "tools/list", json!({"cursor": tampered})).await;
    assert_eq!(refused["error"]["code"], -32602, "{refused}");
    if let Some(python) = common::external(
        "METAMCP_TEST_PYTHON",
        "tool_lists_are_paged (Python client)",
    ) {
        let (code, out) = common::python_client(
            &python,
            &["--url", &gw.mcp_url(), "--mode", "legacy", "list-tools"],
        );
        assert_eq!(code, 0, "{out}");
        assert_eq!(
            out["tools"].as_array().unwrap().len(),
            names.len(),
            "the SDK follows the cursors"
        );
    }
}
