//! Tenants own servers and tools, black-box: tenant B's server and tools,
//! reached by name over REST and MCP by tenant A's admin, user and platform
//! admin, answer exactly like names that do not exist, change nothing, and
//! never reach B's upstream; two tenants own servers of the same name, each
//! seeing its own; list changes reach only the tenant whose catalog changed.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{
    self, Gateway, Options, client_with, fixture_http, fixture_stdio, marker, mcp_request_with,
    texts, tool_names,
};

/// Tenant B.
const BETA: &str = "beta";

/// Waits until the caller's server `name` is ready; returns its record.
async fn wait_ready(gw: &Gateway, token: &str, name: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, body) = gw
            .send_as(Some(token), "GET", &format!("/api/v1/servers/{name}"), None)
            .await;
        if code == 200 && body["status"]["status"] == "ready" {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "server {name} not ready: {body}\nlog:\n{}",
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Calls a tool over REST as `token`; returns (status, body).
async fn execute_as(gw: &Gateway, token: &str, tool: &str, arguments: Value) -> (u16, Value) {
    gw.send_as(
        Some(token),
        "POST",
        &format!("/api/v1/tools/{tool}/execute"),
        Some(json!({"arguments": arguments})),
    )
    .await
}

/// The calls B's fixture has served, this one included.
async fn fixture_calls(gw: &Gateway, token: &str) -> u64 {
    let (code, body) = execute_as(gw, token, "files__count_calls", json!({})).await;
    assert_eq!(code, 200, "{body}");
    texts(&body["result"])[0].parse().unwrap()
}

/// Asserts that `hidden` (a JSON answer about another tenant's thing called
/// `hidden_name`) equals `missing` (the answer about `missing_name`, which
/// exists nowhere) once the one name is put for the other.
fn assert_alike(what: &str, hidden: &(u16, Value), missing: &(u16, Value), names: (&str, &str)) {
    let (hidden_name, missing_name) = names;
    let missing_text = missing.1.to_string().replace(missing_name, hidden_name);
    assert_eq!(
        (hidden.0, hidden.1.to_string()),
        (missing.0, missing_text),
        "{what}: another tenant's {hidden_name} must answer like the missing {missing_name}"
    );
}

/// The names of a REST tool list or search answer.
fn rest_names(body: &Value) -> Vec<String> {
    let items = body["tools"]
        .as_array()
        .or_else(|| body["results"].as_array())
        .unwrap_or_else(|| panic!("not a tool list: {body}"));
    let mut names: Vec<String> = items
        .iter()
        .map(|t| {
            t.get("tool").unwrap_or(t)["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    names.sort();
    names
}

/// The JSON-RPC answer in an MCP response body (JSON, or the last `data:`
/// event with an id of an SSE stream).
fn rpc_answer(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| {
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .rfind(|v| v.get("id").is_some())
            .unwrap_or_else(|| panic!("no JSON-RPC answer in: {text}"))
    })
}

/// A legacy (2025-11-25) MCP session opened as `token`.
struct LegacySession {
    client: reqwest::Client,
    url: String,
    id: String,
}

impl LegacySession {
    async fn open(gw: &Gateway, token: &str) -> Self {
        let client = client_with(token);
        let url = gw.mcp_url();
        let init = client
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .json(
                &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "it", "version": "0"}}}),
            )
            .send()
            .await
            .unwrap();
        let id = init.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_owned();
        rpc_answer(&init.text().await.unwrap());
        let session = Self { client, url, id };
        let r = session
            .post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        assert_eq!(r.status(), 202);
        session
    }

    async fn post(&self, body: Value) -> reqwest::Response {
        self.client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &self.id)
            .header("mcp-protocol-version", "2025-11-25")
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn request(&self, method: &str, params: Value) -> Value {
        let r = self
            .post(json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
            .await;
        rpc_answer(&r.text().await.unwrap())
    }
}

/// What B could lose to an attack: its server's definition, its tools and
/// its profile, as B reads them.
async fn beta_state(gw: &Gateway, b_admin: &str) -> Value {
    let get = |path: &'static str| gw.send_as(Some(b_admin), "GET", path, None);
    let (_, mut server) = get("/api/v1/servers/files").await;
    // How the connection is doing moves by itself; the definition must not.
    if let Some(obj) = server.as_object_mut() {
        obj.remove("status");
        obj.remove("stderr_tail");
    }
    let (_, echo) = get("/api/v1/tools/files__echo").await;
    let (_, notes) = get("/api/v1/tools/b_notes").await;
    let (_, profile) = get("/api/v1/profiles/b_profile").await;
    let (_, servers) = get("/api/v1/servers").await;
    let (_, tools) = get("/api/v1/tools?limit=1000").await;
    json!({"server": server, "echo": echo, "notes": notes, "profile": profile,
           "servers": servers["total"], "tools": rest_names(&tools)})
}

#[tokio::test]
async fn tenant_a_cannot_read_change_or_call_tenant_b_servers_and_tools() {
    let gw = Gateway::start(
        Options::default()
            .env("META_MCP_ALLOW_STDIO_API", "true")
            .ready(),
    )
    .await;
    let platform = gw.token.clone();
    let (code, body) = gw
        .post("/api/v1/tenants", json!({"id": BETA, "name": "Beta"}))
        .await;
    assert_eq!(code, 201, "{body}");
    let b_admin = gw.new_user(Some(BETA), "b-admin", &["admin"]).await.1;
    let b_user = gw.new_user(Some(BETA), "b-user", &["user"]).await.1;
    let a_admin = gw.new_user(Some("default"), "a-admin", &["admin"]).await.1;
    let a_user = gw.new_user(Some("default"), "a-user", &["user"]).await.1;

    // B's admin registers an HTTP server, a tool by hand and a profile.
    let mb = marker("fx-tenant-b");
    let (_b_fixture, b_url) = fixture_http(&mb);
    let (code, body) = gw
        .send_as(
            Some(&b_admin),
            "POST",
            "/api/v1/servers",
            Some(json!({"name": "files", "url": b_url})),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let ready = wait_ready(&gw, &b_admin, "files").await;
    assert_eq!(ready["status"]["server_info"]["name"], mb.as_str());
    for (path, body) in [
        (
            "/api/v1/tools",
            json!({"name": "b_notes", "description": "Notes of the beta team"}),
        ),
        (
            "/api/v1/profiles",
            json!({"name": "b_profile", "servers": ["files"]}),
        ),
    ] {
        let (code, answer) = gw.send_as(Some(&b_admin), "POST", path, Some(body)).await;
        assert_eq!(code, 201, "{path}: {answer}");
    }
    // A has a tool of its own, callable over MCP (never actually called).
    let (code, body) = gw
        .send_as(
            Some(&a_admin),
            "POST",
            "/api/v1/tools",
            Some(
                json!({"name": "a_http", "description": "Alpha's webhook tool",
                        "endpoint": "http://127.0.0.1:9/hook"}),
            ),
        )
        .await;
    assert_eq!(code, 201, "{body}");

    // B's user uses B's server through the gateway.
    let (code, body) = execute_as(&gw, &b_user, "files__echo", json!({"message": "hi"})).await;
    assert_eq!(
        (code, texts(&body["result"])),
        (200, vec!["hi".to_owned()]),
        "{body}"
    );
    let before = beta_state(&gw, &b_admin).await;
    let calls_before = fixture_calls(&gw, &b_admin).await;

    // REST, by name: every answer equals the answer for a missing name.
    let server_probes: Vec<(&str, &str, Option<Value>)> = vec![
        ("GET", "/api/v1/servers/{}", None),
        (
            "PUT",
            "/api/v1/servers/{}",
            Some(json!({"url": "http://127.0.0.1:9/mcp"})),
        ),
        ("POST", "/api/v1/servers/{}/restart", None),
        ("DELETE", "/api/v1/servers/{}", None),
        ("GET", "/api/v1/tools?server={}", None),
        ("GET", "/api/v1/tools/search?q=echo&server={}", None),
    ];
    let tool_probes: Vec<(&str, &str, Option<Value>)> = vec![
        ("GET", "/api/v1/tools/{}", None),
        (
            "PUT",
            "/api/v1/tools/{}",
            Some(json!({"description": "pwned"})),
        ),
        ("PATCH", "/api/v1/tools/{}", Some(json!({"enabled": false}))),
        (
            "POST",
            "/api/v1/tools/{}/execute",
            Some(json!({"arguments": {"message": "x"}})),
        ),
        ("GET", "/api/v1/tools/{}/changes", None),
        ("POST", "/api/v1/tools/{}/approve", None),
        ("POST", "/api/v1/tools/{}/reject", None),
        ("DELETE", "/api/v1/tools/{}", None),
    ];
    let profile_probes: Vec<(&str, &str, Option<Value>)> = vec![
        ("GET", "/api/v1/profiles/{}", None),
        (
            "PUT",
            "/api/v1/profiles/{}",
            Some(json!({"servers": ["files"], "description": "pwned"})),
        ),
        ("DELETE", "/api/v1/profiles/{}", None),
        ("GET", "/api/v1/tools?profile={}", None),
    ];
    let mut probes: Vec<(&str, &str, Option<Value>, &str, &str)> = Vec::new();
    for (m, p, b) in &server_probes {
        probes.push((m, p, b.clone(), "files", "ghost"));
    }
    for (m, p, b) in &tool_probes {
        probes.push((m, p, b.clone(), "files__echo", "ghost__echo"));
        probes.push((m, p, b.clone(), "b_notes", "ghost_notes"));
    }
    for (m, p, b) in &profile_probes {
        probes.push((m, p, b.clone(), "b_profile", "ghost_profile"));
    }
    let attackers = [
        ("A's platform admin", &platform),
        ("A's admin", &a_admin),
        ("A's user", &a_user),
    ];
    for (who, token) in attackers {
        for (method, template, body, hidden, missing) in &probes {
            let hidden_answer = gw
                .send_as(
                    Some(token),
                    method,
                    &template.replace("{}", hidden),
                    body.clone(),
                )
                .await;
            let missing_answer = gw
                .send_as(
                    Some(token),
                    method,
                    &template.replace("{}", missing),
                    body.clone(),
                )
                .await;
            assert!(
                hidden_answer.0 >= 400 || method == &"GET",
                "{who} {method} {template} {hidden}: {hidden_answer:?}"
            );
            assert_alike(
                &format!("{who} {method} {template}"),
                &hidden_answer,
                &missing_answer,
                (hidden, missing),
            );
        }
        // Lists and counts hold only A's own things.
        let (_, servers) = gw
            .send_as(Some(token), "GET", "/api/v1/servers", None)
            .await;
        assert_eq!(servers["total"], 0, "{who}: {servers}");
        let (_, tools) = gw.send_as(Some(token), "GET", "/api/v1/tools", None).await;
        assert_eq!(rest_names(&tools), ["a_http"], "{who}: {tools}");
        assert_eq!(tools["total"], 1, "{who}: {tools}");
        let (_, profiles) = gw
            .send_as(Some(token), "GET", "/api/v1/profiles", None)
            .await;
        assert_eq!(profiles["total"], 0, "{who}: {profiles}");
        for query in [
            "echo",
            "notes%20of%20the%20beta%20team",
            "add%20two%20numbers",
        ] {
            let (code, found) = gw
                .send_as(
                    Some(token),
                    "GET",
                    &format!("/api/v1/tools/search?q={query}&search_type=keyword"),
                    None,
                )
                .await;
            assert_eq!(code, 200, "{found}");
            assert!(
                rest_names(&found).iter().all(|n| n == "a_http"),
                "{who} searched {query}: {found}"
            );
        }
        let (_, changes) = gw
            .send_as(Some(token), "GET", "/api/v1/changes", None)
            .await;
        assert_eq!(changes["total"], 0, "{who}: {changes}");

        // MCP, stateless: listing shows A's only; B's names answer like
        // missing ones.
        let mcp = gw.mcp_url();
        let listed = mcp_request_with(&mcp, Some(token), "tools/list", json!({})).await;
        assert_eq!(tool_names(&listed), ["a_http"], "{who}: {listed}");
        for method in ["prompts/list", "resources/list", "resources/templates/list"] {
            let listed = mcp_request_with(&mcp, Some(token), method, json!({})).await;
            let items = listed["result"]
                .as_object()
                .and_then(|r| r.values().find_map(Value::as_array))
                .unwrap_or_else(|| panic!("{method}: {listed}"));
            assert!(items.is_empty(), "{who} {method}: {listed}");
        }
        for (method, hidden, missing) in [
            (
                "tools/call",
                json!({"name": "files__echo", "arguments": {"message": "x"}}),
                json!({"name": "ghost__echo", "arguments": {"message": "x"}}),
            ),
            (
                "prompts/get",
                json!({"name": "files__greeting", "arguments": {"name": "x"}}),
                json!({"name": "ghost__greeting", "arguments": {"name": "x"}}),
            ),
        ] {
            let h = mcp_request_with(&mcp, Some(token), method, hidden).await;
            let m = mcp_request_with(&mcp, Some(token), method, missing).await;
            assert!(h.get("error").is_some(), "{who} {method}: {h}");
            assert_alike(
                &format!("{who} MCP {method}"),
                &(0, h),
                &(0, m),
                ("files", "ghost"),
            );
        }
        let h = mcp_request_with(
            &mcp,
            Some(token),
            "resources/read",
            json!({"uri": "fixture://readme"}),
        )
        .await;
        let m = mcp_request_with(
            &mcp,
            Some(token),
            "resources/read",
            json!({"uri": "fixture://ghost"}),
        )
        .await;
        assert!(h.get("error").is_some(), "{who}: {h}");
        assert_alike(
            &format!("{who} MCP resources/read"),
            &(0, h),
            &(0, m),
            ("readme", "ghost"),
        );
        // B's profile endpoint is as unknown as a missing one.
        let h = mcp_request_with(
            &gw.url("/mcp/b_profile"),
            Some(token),
            "tools/list",
            json!({}),
        )
        .await;
        let m = mcp_request_with(
            &gw.url("/mcp/ghost_profile"),
            Some(token),
            "tools/list",
            json!({}),
        )
        .await;
        assert_alike(
            &format!("{who} /mcp/b_profile"),
            &(0, h),
            &(0, m),
            ("b_profile", "ghost_profile"),
        );
        // Discovery mode searches and calls in A's catalog only.
        let discovery = gw.url("/mcp/discovery");
        let found = mcp_request_with(
            &discovery,
            Some(token),
            "tools/call",
            json!({"name": "search_tools", "arguments": {"query": "echo the message", "max_results": 20}}),
        )
        .await;
        assert!(
            !found.to_string().contains("files__") && !found.to_string().contains("b_notes"),
            "{who}: {found}"
        );
        let call = |name: &str| json!({"name": "call_tool", "arguments": {"name": name, "arguments": {"message": "x"}}});
        // A legacy session cannot subscribe to B's resources either.
        let session = LegacySession::open(&gw, token).await;
        for method in ["resources/subscribe", "resources/unsubscribe"] {
            let h = session
                .request(method, json!({"uri": "fixture://readme"}))
                .await;
            let m = session
                .request(method, json!({"uri": "fixture://ghost"}))
                .await;
            assert!(h.get("error").is_some(), "{who} {method}: {h}");
            assert_alike(
                &format!("{who} legacy {method}"),
                &(0, h),
                &(0, m),
                ("readme", "ghost"),
            );
        }
        let h = mcp_request_with(&discovery, Some(token), "tools/call", call("files__echo")).await;
        let m = mcp_request_with(&discovery, Some(token), "tools/call", call("ghost__echo")).await;
        assert_alike(
            &format!("{who} discovery call_tool"),
            &(0, h),
            &(0, m),
            ("files", "ghost"),
        );
    }
    // A legacy session (the Python SDK) of A's user lists no tool of B's
    // and cannot call one.
    if let Some(python) = common::external("METAMCP_TEST_PYTHON", "tenant isolation (python part)")
    {
        let auth = format!("Authorization: Bearer {a_user}");
        let (code, out) = common::python_client_with(
            &python,
            Some(&auth),
            &["--url", &gw.mcp_url(), "--mode", "legacy", "list-tools"],
        );
        assert_eq!(code, 0, "{out}");
        let names: Vec<&str> = out["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a_http"], "{out}");
        let (code, out) = common::python_client_with(
            &python,
            Some(&auth),
            &[
                "--url",
                &gw.mcp_url(),
                "--mode",
                "legacy",
                "call",
                "files__echo",
                r#"{"message":"x"}"#,
            ],
        );
        assert_eq!(code, 2, "{out}");
        assert!(
            out["message"]
                .as_str()
                .is_some_and(|m| m.contains("Unknown tool: files__echo")),
            "{out}"
        );
    }

    // Nothing changed, and B's fixture served no call of A's: only B's own
    // count calls (before, and this one).
    assert_eq!(beta_state(&gw, &b_admin).await, before);
    assert_eq!(fixture_calls(&gw, &b_admin).await, calls_before + 1);
    let (code, body) = execute_as(&gw, &b_admin, "files__subscriptions", json!({})).await;
    assert_eq!(
        (code, texts(&body["result"])),
        (200, vec!["[]".to_owned()]),
        "B's fixture holds no subscription of A's: {body}"
    );

    // The detailed health of A's admin names A's servers only; the
    // platform admin sees every tenant's, each with its tenant.
    let (_, health) = gw
        .send_as(Some(&a_admin), "GET", "/api/v1/health/detailed", None)
        .await;
    assert_eq!(health["upstreams"], json!([]), "{health}");
    assert!(health.get("cache").is_none(), "{health}");
    let (_, health) = gw
        .send_as(Some(&b_admin), "GET", "/api/v1/health/detailed", None)
        .await;
    let names: Vec<(&str, &str)> = health["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["name"].as_str().unwrap(), u["tenant"].as_str().unwrap()))
        .collect();
    assert_eq!(names, [("files", BETA)], "{health}");
    let (_, health) = gw.get("/api/v1/health/detailed").await;
    assert!(
        health["upstreams"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["name"] == "files" && u["tenant"] == BETA),
        "{health}"
    );
    // Metrics name every tenant's servers: not for B's admin.
    let (code, body) = gw.send_as(Some(&b_admin), "GET", "/metrics", None).await;
    assert_eq!(code, 403, "{body}");

    // B's user sees B's tools and not A's, over REST, MCP and search.
    let (_, tools) = gw
        .send_as(Some(&b_user), "GET", "/api/v1/tools?limit=1000", None)
        .await;
    let names = rest_names(&tools);
    assert!(names.contains(&"files__echo".to_owned()) && names.contains(&"b_notes".to_owned()));
    assert!(!names.contains(&"a_http".to_owned()), "{names:?}");
    assert_eq!(tools["total"], names.len());
    let listed = mcp_request_with(&gw.mcp_url(), Some(&b_user), "tools/list", json!({})).await;
    let listed = tool_names(&listed);
    assert!(listed.contains(&"files__echo".to_owned()) && !listed.contains(&"a_http".to_owned()));
    let (_, found) = gw
        .send_as(
            Some(&b_user),
            "GET",
            "/api/v1/tools/search?q=webhook%20tool&search_type=keyword",
            None,
        )
        .await;
    assert!(
        !rest_names(&found).contains(&"a_http".to_owned()),
        "{found}"
    );
    let (_, found) = gw
        .send_as(
            Some(&b_user),
            "GET",
            "/api/v1/tools/search?q=notes%20beta%20team&search_type=keyword",
            None,
        )
        .await;
    assert_eq!(
        rest_names(&found).first().map(String::as_str),
        Some("b_notes"),
        "{found}"
    );

    // Only a platform admin creates stdio servers over the API, even with
    // the setting on: B's admin is refused, and nothing is created.
    let stdio = |name: &str| {
        let mut spec = fixture_stdio(&marker("fx-stdio-api"));
        spec["name"] = json!(name);
        spec
    };
    let (code, body) = gw
        .send_as(
            Some(&b_admin),
            "POST",
            "/api/v1/servers",
            Some(stdio("shell")),
        )
        .await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(body["permission"], "platform:admin", "{body}");
    let (_, servers) = gw
        .send_as(Some(&b_admin), "GET", "/api/v1/servers", None)
        .await;
    assert_eq!(servers["total"], 1, "{servers}");
    let (code, body) = gw.post("/api/v1/servers", stdio("local")).await;
    assert_eq!(code, 201, "the platform admin may: {body}");
    let (code, _) = gw
        .send("DELETE", "/api/v1/servers/local", json!(null))
        .await;
    assert_eq!(code, 204);

    // Both tenants may own a server called `files`, each seeing its own.
    let ma = marker("fx-tenant-a");
    let (_a_fixture, a_url) = fixture_http(&ma);
    let (code, body) = gw
        .send_as(
            Some(&a_admin),
            "POST",
            "/api/v1/servers",
            Some(json!({"name": "files", "url": a_url})),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let a_files = wait_ready(&gw, &a_admin, "files").await;
    assert_eq!(a_files["status"]["server_info"]["name"], ma.as_str());
    assert_eq!(a_files["url"], a_url.as_str());
    let b_files = wait_ready(&gw, &b_admin, "files").await;
    assert_eq!(b_files["status"]["server_info"]["name"], mb.as_str());
    assert_eq!(b_files["url"], b_url.as_str());
    for (token, url) in [(&a_admin, &a_url), (&b_admin, &b_url)] {
        let (_, servers) = gw
            .send_as(Some(token), "GET", "/api/v1/servers", None)
            .await;
        assert_eq!(servers["total"], 1, "{servers}");
        assert_eq!(servers["servers"][0]["url"], url.as_str(), "{servers}");
    }
    // A's calls go to A's fixture: B's count moves only by B's own calls.
    wait_tool_as(&gw, &a_user, "files__count_calls").await;
    let (code, body) = execute_as(&gw, &a_user, "files__count_calls", json!({})).await;
    assert_eq!(
        (code, texts(&body["result"])),
        (200, vec!["1".to_owned()]),
        "{body}"
    );
    assert_eq!(fixture_calls(&gw, &b_admin).await, calls_before + 3);
    // Removing A's `files` leaves B's alone.
    let (code, _) = gw
        .send_as(Some(&a_admin), "DELETE", "/api/v1/servers/files", None)
        .await;
    assert_eq!(code, 204);
    wait_ready(&gw, &b_admin, "files").await;
    let (code, body) = execute_as(&gw, &b_user, "files__echo", json!({"message": "still"})).await;
    assert_eq!(
        (code, texts(&body["result"])),
        (200, vec!["still".to_owned()]),
        "{body}"
    );
}

/// Waits until the caller (`token`) sees `tool`.
async fn wait_tool_as(gw: &Gateway, token: &str, tool: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, _) = gw
            .send_as(Some(token), "GET", &format!("/api/v1/tools/{tool}"), None)
            .await;
        if code == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{tool} not seen\nlog:\n{}",
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn every_tenant_servers_start_again_after_a_restart() {
    let mut gw = Gateway::start(Options::default().ready()).await;
    let (code, _) = gw
        .post("/api/v1/tenants", json!({"id": BETA, "name": "Beta"}))
        .await;
    assert_eq!(code, 201);
    let b_admin = gw.new_user(Some(BETA), "b-admin", &["admin"]).await.1;
    let mb = marker("fx-tenant-restart");
    let (_b_fixture, b_url) = fixture_http(&mb);
    let (code, body) = gw
        .send_as(
            Some(&b_admin),
            "POST",
            "/api/v1/servers",
            Some(json!({"name": "files", "url": b_url})),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    wait_ready(&gw, &b_admin, "files").await;
    gw.stop();
    let (dir, tmp) = gw.keep_data();
    let gw = Gateway::start(Options {
        data_dir: Some(dir),
        wait_ready: true,
        ..Options::default()
    })
    .await;
    // Access tokens survive the restart (the key is in the data directory).
    let server = wait_ready(&gw, &b_admin, "files").await;
    assert_eq!(server["status"]["server_info"]["name"], mb.as_str());
    let (code, body) = execute_as(&gw, &b_admin, "files__echo", json!({"message": "back"})).await;
    assert_eq!(
        (code, texts(&body["result"])),
        (200, vec!["back".to_owned()]),
        "{body}"
    );
    let (_, servers) = gw.get("/api/v1/servers").await;
    assert_eq!(
        servers["total"], 0,
        "the default tenant has none: {servers}"
    );
    drop(tmp);
}

/// Reads an SSE body until `needle` shows up, or `within` passes; returns
/// what was read.
async fn read_sse<B: AsRef<[u8]>>(
    stream: &mut (impl futures::Stream<Item = reqwest::Result<B>> + Unpin),
    needle: &str,
    within: Duration,
) -> String {
    use futures::StreamExt;
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + within;
    while !seen.contains(needle) {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(chunk))) => seen.push_str(&String::from_utf8_lossy(chunk.as_ref())),
            _ => break,
        }
    }
    seen
}

#[tokio::test]
async fn list_changes_reach_only_the_tenant_whose_catalog_changed() {
    let gw = Gateway::start(Options::default()).await;
    let (code, _) = gw
        .post("/api/v1/tenants", json!({"id": BETA, "name": "Beta"}))
        .await;
    assert_eq!(code, 201);
    let b_admin = gw.new_user(Some(BETA), "b-admin", &["admin"]).await.1;
    let a_user = gw.new_user(Some("default"), "a-user", &["user"]).await.1;
    let client = client_with(&a_user);
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
    // A's legacy session with its standing GET stream.
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
    drop(init);
    let headers = || {
        vec![
            ("mcp-session-id", session.clone()),
            ("mcp-protocol-version", "2025-11-25".to_owned()),
        ]
    };
    let r = post(
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        headers(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 202);
    let legacy = client
        .get(gw.mcp_url())
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert_eq!(legacy.status(), 200);
    let mut legacy = legacy.bytes_stream();
    // A's 2026-07-28 subscription.
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
    let mut listen = listen.bytes_stream();
    let ack = read_sse(
        &mut listen,
        "subscriptions/acknowledged",
        Duration::from_secs(10),
    )
    .await;
    assert!(ack.contains("subscriptions/acknowledged"), "{ack}");

    // B's catalog changes: A hears nothing.
    let (code, body) = gw
        .send_as(
            Some(&b_admin),
            "POST",
            "/api/v1/tools",
            Some(json!({"name": "b_tool", "endpoint": "http://127.0.0.1:9/b"})),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let quiet = Duration::from_millis(1500);
    let heard = read_sse(&mut legacy, "list_changed", quiet).await;
    assert!(!heard.contains("list_changed"), "legacy: {heard}");
    let heard = read_sse(&mut listen, "list_changed", quiet).await;
    assert!(!heard.contains("list_changed"), "listen: {heard}");

    // A's catalog changes: both of A's streams hear of it.
    let (code, body) = gw
        .post(
            "/api/v1/tools",
            json!({"name": "a_tool", "endpoint": "http://127.0.0.1:9/a"}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let within = Duration::from_secs(10);
    let heard = read_sse(&mut legacy, "notifications/tools/list_changed", within).await;
    assert!(
        heard.contains("notifications/tools/list_changed"),
        "legacy: {heard}"
    );
    let heard = read_sse(&mut listen, "notifications/tools/list_changed", within).await;
    assert!(
        heard.contains("notifications/tools/list_changed"),
        "listen: {heard}"
    );
}
