//! Upstream connection isolation (`"isolation": "shared" | "session" |
//! "principal"`): which callers share an upstream connection, when isolated
//! connections close, and what the per-server limit answers.
//!
//! The fixture's `count_calls` counts the calls its process served: two
//! callers on one connection see one count, on two connections two counts.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{self, Gateway, Options, client_with, fixture_stdio, marker, processes_with};

/// One legacy (2025-11-25) MCP session over Streamable HTTP.
struct Session {
    client: reqwest::Client,
    url: String,
    id: String,
    next: u64,
}

/// The JSON-RPC response in an MCP POST answer (JSON or SSE).
async fn response_of(response: reqwest::Response) -> Value {
    let text = response.text().await.unwrap_or_default();
    if let Ok(v) = serde_json::from_str::<Value>(&text) {
        return v;
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .rfind(|v| v.get("id").is_some())
        .unwrap_or_else(|| panic!("no JSON-RPC response in: {text}"))
}

impl Session {
    async fn open(url: &str, token: &str) -> Session {
        let client = client_with(token);
        let r = client
            .post(url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .json(
                &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "it", "version": "0"}}}),
            )
            .send()
            .await
            .expect("initialize");
        assert_eq!(r.status(), 200);
        let id = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
        let init = response_of(r).await;
        assert!(init["result"]["capabilities"].is_object(), "{init}");
        let session = Session {
            client,
            url: url.to_owned(),
            id,
            next: 1,
        };
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
            .expect("MCP request")
    }

    /// Calls a tool; the whole JSON-RPC response.
    async fn call(&mut self, tool: &str, arguments: Value) -> Value {
        self.next += 1;
        let body = json!({"jsonrpc": "2.0", "id": self.next, "method": "tools/call",
                          "params": {"name": tool, "arguments": arguments}});
        response_of(self.post(body).await).await
    }

    /// The fixture's count of calls served by the process this session's
    /// calls reach.
    async fn count(&mut self) -> u64 {
        let answer = self.call("fx__count_calls", json!({})).await;
        count_of(&answer["result"])
    }

    async fn close(self) {
        let r = self
            .client
            .delete(&self.url)
            .header("mcp-session-id", &self.id)
            .header("mcp-protocol-version", "2025-11-25")
            .send()
            .await
            .expect("DELETE session");
        assert!(r.status().is_success(), "DELETE answered {}", r.status());
    }
}

fn count_of(result: &Value) -> u64 {
    let texts = common::texts(result);
    texts
        .first()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| panic!("not a count: {result}"))
}

/// A gateway with the fixture over stdio as server `fx` with `settings`
/// (isolation and its limits) merged in; and the marker of its processes.
async fn gateway(settings: Value) -> (Gateway, String) {
    let m = marker("iso");
    let mut entry = fixture_stdio(&m);
    for (k, v) in settings.as_object().unwrap() {
        entry[k] = v.clone();
    }
    let gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {"fx": entry}}))
            .ready(),
    )
    .await;
    gw.wait_server("fx", "ready").await;
    (gw, m)
}

/// Waits until `n` processes carry `marker`; returns how many there are.
async fn wait_processes(marker: &str, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let found = processes_with(marker).len();
        if found == n || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (up to 15 s) until server `fx` reports `n` isolated connections;
/// returns the last count seen.
async fn wait_isolated_connections(gw: &Gateway, n: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, server) = gw.get("/api/v1/servers/fx").await;
        let found = server["isolated_connections"].as_u64().unwrap_or(u64::MAX);
        if found == n || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn shared_servers_serve_every_session_on_one_connection() {
    let (gw, m) = gateway(json!({})).await;
    let (mut a, mut b) = (
        Session::open(&gw.mcp_url(), &gw.token).await,
        Session::open(&gw.mcp_url(), &gw.token).await,
    );
    assert_eq!(a.count().await, 1);
    assert_eq!(b.count().await, 2);
    assert_eq!(a.count().await, 3);
    assert_eq!(processes_with(&m).len(), 1, "{:?}", processes_with(&m));
    let (_, server) = gw.get("/api/v1/servers/fx").await;
    assert_eq!(server["isolation"], "shared", "{server}");
    assert!(server.get("isolated_connections").is_none(), "{server}");
}

#[tokio::test]
async fn session_isolation_gives_each_session_its_own_process_until_it_ends() {
    let (gw, m) = gateway(json!({"isolation": "session"})).await;
    // The template connection lists the catalog; no session uses it.
    assert_eq!(processes_with(&m).len(), 1);
    let mut a = Session::open(&gw.mcp_url(), &gw.token).await;
    let mut b = Session::open(&gw.mcp_url(), &gw.token).await;
    assert_eq!(a.count().await, 1);
    assert_eq!(b.count().await, 1, "b must not see a's state");
    assert_eq!(a.count().await, 2);
    assert_eq!(b.count().await, 2);
    assert_eq!(wait_processes(&m, 3).await, 3, "{:?}", processes_with(&m));
    // Ending a session ends its connection and its process.
    a.close().await;
    assert_eq!(wait_processes(&m, 2).await, 2, "{:?}", processes_with(&m));
    assert_eq!(b.count().await, 3, "b keeps its connection");
    // A new session starts from scratch.
    let mut c = Session::open(&gw.mcp_url(), &gw.token).await;
    assert_eq!(c.count().await, 1);
    // Callers without a session (2026-07-28 requests, REST) share their
    // principal's connection, apart from every session's.
    let stateless = common::mcp_request(
        &gw.mcp_url(),
        "tools/call",
        json!({"name": "fx__count_calls", "arguments": {}}),
    )
    .await;
    assert_eq!(count_of(&stateless["result"]), 1, "{stateless}");
    let (_, rest) = gw.execute("fx__count_calls", json!({})).await;
    assert_eq!(count_of(&rest["result"]), 2, "{rest}");
    let (_, server) = gw.get("/api/v1/servers/fx").await;
    assert_eq!(server["isolation"], "session", "{server}");
    assert_eq!(
        server["isolated_connections"], 3,
        "b's, c's and the principal's: {server}"
    );
}

#[tokio::test]
async fn principal_isolation_shares_a_connection_per_user() {
    let (gw, m) = gateway(json!({"isolation": "principal"})).await;
    let alice = gw.new_user(None, "alice", &["user"]).await.1;
    let bob = gw.new_user(None, "bob", &["user"]).await.1;
    let mut alice1 = Session::open(&gw.mcp_url(), &alice).await;
    let mut alice2 = Session::open(&gw.mcp_url(), &alice).await;
    let mut bob1 = Session::open(&gw.mcp_url(), &bob).await;
    assert_eq!(alice1.count().await, 1);
    assert_eq!(alice2.count().await, 2, "one user's sessions share");
    assert_eq!(bob1.count().await, 1, "another user does not");
    // REST calls of a principal use that principal's connection.
    let r = client_with(&alice)
        .post(gw.url("/api/v1/tools/fx__count_calls/execute"))
        .json(&json!({"arguments": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(count_of(&body["result"]), 3, "{body}");
    // Template + alice + bob.
    assert_eq!(wait_processes(&m, 3).await, 3, "{:?}", processes_with(&m));
    // A session's end does not close a principal's connection.
    alice1.close().await;
    assert_eq!(alice2.count().await, 4);
    // 2026-07-28 requests (no session) use it as well.
    let answer = common::mcp_request_with(
        &gw.mcp_url(),
        Some(&bob),
        "tools/call",
        json!({"name": "fx__count_calls", "arguments": {}}),
    )
    .await;
    assert_eq!(count_of(&answer["result"]), 2, "{answer}");
}

#[tokio::test]
async fn the_connection_limit_answers_an_error_at_once() {
    let (gw, m) = gateway(json!({"isolation": "session", "max_connections": 1})).await;
    let mut a = Session::open(&gw.mcp_url(), &gw.token).await;
    let mut b = Session::open(&gw.mcp_url(), &gw.token).await;
    assert_eq!(a.count().await, 1);
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        b.call("fx__count_calls", json!({})),
    )
    .await
    .expect("the limit must not hang");
    assert_eq!(refused["error"]["code"], -32000, "{refused}");
    assert_eq!(refused["error"]["data"]["server"], "fx", "{refused}");
    assert_eq!(refused["error"]["data"]["maxConnections"], 1, "{refused}");
    // REST: the admin's principal connection would be a second one.
    let (code, problem) = gw.execute("fx__count_calls", json!({})).await;
    assert_eq!(code, 503, "{problem}");
    assert_eq!(
        problem["type"], "urn:metamcp:problem:upstream-connections-exhausted",
        "{problem}"
    );
    assert_eq!(problem["max_connections"], 1, "{problem}");
    // Once a's session ends, b gets its connection. The slot is counted
    // until the gateway has reaped a's process and forgotten the connection
    // (just after the process is gone), which it reports on the server.
    a.close().await;
    assert_eq!(wait_processes(&m, 1).await, 1, "{:?}", processes_with(&m));
    assert_eq!(wait_isolated_connections(&gw, 0).await, 0);
    assert_eq!(b.count().await, 1);
}

#[tokio::test]
async fn idle_isolated_connections_are_closed() {
    let (gw, m) = gateway(json!({"isolation": "session", "idle_timeout_secs": 0.5})).await;
    let mut a = Session::open(&gw.mcp_url(), &gw.token).await;
    assert_eq!(a.count().await, 1);
    // Unused, it closes (the template's process stays); the session's next
    // call opens a new one, which starts counting afresh.
    assert_eq!(wait_processes(&m, 1).await, 1, "{:?}", processes_with(&m));
    assert_eq!(a.count().await, 1);
}

#[tokio::test]
async fn isolation_settings_are_validated_over_the_api() {
    let gw = Gateway::start(Options::default()).await;
    let (code, problem) = gw
        .post(
            "/api/v1/servers",
            json!({"name": "bad", "url": "http://127.0.0.1:9/mcp", "isolation": "per-call"}),
        )
        .await;
    assert_eq!(code, 422, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("isolation"),
        "{problem}"
    );
    let (code, created) = gw
        .post(
            "/api/v1/servers",
            json!({"name": "remote", "url": "http://127.0.0.1:9/mcp", "isolation": "principal",
                   "max_connections": 4, "idle_timeout_secs": 60}),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["isolation"], "principal", "{created}");
    assert_eq!(created["max_connections"], 4, "{created}");
    assert_eq!(created["idle_timeout_secs"], 60.0, "{created}");
}
