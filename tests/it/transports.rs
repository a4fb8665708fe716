//! Downstream transports for older clients: the 2024-11-05 HTTP+SSE endpoint
//! (`GET /sse`, `POST /messages?sessionId=...`), and Streamable HTTP
//! requests that carry no `MCP-Protocol-Version` header (2025-03-26).

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::common::{self, Gateway, Options, client_with, gateway_with_fixture};

/// An open legacy SSE stream: its POST URL and the events after `endpoint`.
struct SseStream {
    endpoint: String,
    events: Events,
    /// Keeps the response (and so the session) alive.
    _client: reqwest::Client,
}

/// Opens `GET {path}` with `token`; the HTTP status, and the stream if 200.
async fn open_sse(gw: &Gateway, path: &str, token: Option<&str>) -> (u16, Option<SseStream>) {
    let client = match token {
        Some(t) => client_with(t),
        None => reqwest::Client::new(),
    };
    let response = client
        .get(gw.url(path))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("GET /sse");
    let status = response.status().as_u16();
    if status != 200 {
        return (status, None);
    }
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let mut events = events_of(response);
    let (kind, data) = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("the endpoint event in time")
        .expect("an endpoint event");
    assert_eq!(kind, "endpoint", "the first event is the endpoint");
    (
        status,
        Some(SseStream {
            endpoint: data,
            events,
            _client: client,
        }),
    )
}

type Events = std::pin::Pin<Box<dyn futures::Stream<Item = (String, String)> + Send>>;

/// The SSE events of a response, as (event type, data): a minimal reader of
/// "event:" and "data:" lines, where a blank line ends an event and
/// comments (keep-alives) are skipped.
fn events_of(response: reqwest::Response) -> Events {
    let bytes = response.bytes_stream();
    Box::pin(futures::stream::unfold(
        (bytes, String::new()),
        |(mut bytes, mut buffer)| async move {
            loop {
                if let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    let mut kind = String::from("message");
                    let mut data = Vec::new();
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("event:") {
                            kind = v.trim().to_owned();
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data.push(v.trim_start().to_owned());
                        }
                    }
                    if data.is_empty() {
                        continue;
                    }
                    return Some(((kind, data.join("\n")), (bytes, buffer)));
                }
                match bytes.next().await {
                    Some(Ok(chunk)) => buffer.push_str(&String::from_utf8_lossy(&chunk)),
                    _ => return None,
                }
            }
        },
    ))
}

impl SseStream {
    /// The next `message` event's JSON.
    async fn next_message(&mut self) -> Value {
        loop {
            let (kind, data) = tokio::time::timeout(Duration::from_secs(15), self.events.next())
                .await
                .expect("a message in time")
                .expect("the stream is open");
            if kind == "message" {
                return serde_json::from_str(&data).expect("JSON message");
            }
        }
    }
}

async fn post_message(gw: &Gateway, endpoint: &str, token: Option<&str>, body: Value) -> u16 {
    let client = match token {
        Some(t) => client_with(t),
        None => reqwest::Client::new(),
    };
    client
        .post(gw.url(endpoint))
        .json(&body)
        .send()
        .await
        .expect("POST message")
        .status()
        .as_u16()
}

#[tokio::test]
async fn the_legacy_sse_endpoint_serves_the_gateway() {
    let (gw, _m) = gateway_with_fixture("sse").await;
    // Without credentials: 401, on the stream and on the message endpoint.
    let (status, _) = open_sse(&gw, "/sse", None).await;
    assert_eq!(status, 401);
    let mut sse = open_sse(&gw, "/sse", Some(&gw.token)).await.1.unwrap();
    assert!(
        sse.endpoint.starts_with("/messages?sessionId="),
        "{}",
        sse.endpoint
    );
    let endpoint = sse.endpoint.clone();
    assert_eq!(
        post_message(
            &gw,
            &endpoint,
            None,
            json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})
        )
        .await,
        401
    );
    // The handshake, a listing and a call; answers come on the stream.
    let token = Some(gw.token.as_str());
    let status = post_message(
        &gw,
        &endpoint,
        token,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2024-11-05", "capabilities": {},
            "clientInfo": {"name": "it", "version": "0"}}}),
    )
    .await;
    assert_eq!(status, 202);
    let init = sse.next_message().await;
    assert_eq!(init["id"], 1, "{init}");
    assert_eq!(init["result"]["protocolVersion"], "2024-11-05", "{init}");
    let status = post_message(
        &gw,
        &endpoint,
        token,
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!(status, 202);
    post_message(
        &gw,
        &endpoint,
        token,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
               "params": {"name": "fx__echo", "arguments": {"message": "over sse"}}}),
    )
    .await;
    let answer = sse.next_message().await;
    assert_eq!(answer["id"], 2, "{answer}");
    assert_eq!(common::texts(&answer["result"]), ["over sse"], "{answer}");
    // Unknown sessions, and another principal's, answer 404.
    let unknown = "/messages?sessionId=00000000000000000000000000000000";
    let ping = json!({"jsonrpc": "2.0", "id": 3, "method": "ping"});
    assert_eq!(post_message(&gw, unknown, token, ping.clone()).await, 404);
    let mallory = gw.new_user(None, "mallory", &["user"]).await.1;
    assert_eq!(
        post_message(&gw, &endpoint, Some(&mallory), ping.clone()).await,
        404
    );
    // The owner's session is unharmed.
    assert_eq!(post_message(&gw, &endpoint, token, ping).await, 202);
    let pong = sse.next_message().await;
    assert_eq!(pong["id"], 3, "{pong}");
    assert!(pong["result"].is_object(), "{pong}");
    // A closed stream ends the session.
    drop(sse);
    let ping = json!({"jsonrpc": "2.0", "id": 4, "method": "ping"});
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = post_message(&gw, &endpoint, token, ping.clone()).await;
        if status == 404 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the session outlived its stream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_legacy_sse_endpoint_serves_profiles() {
    let m = common::marker("sse-profile");
    let gw = Gateway::start(
        Options::default()
            .config(json!({
                "mcpServers": {"fx": common::fixture_stdio(&m)},
                "profiles": {"echoes": {"tools": ["fx__echo"]}}
            }))
            .ready(),
    )
    .await;
    gw.wait_server("fx", "ready").await;
    let (status, _) = open_sse(&gw, "/sse/nope", Some(&gw.token)).await;
    assert_eq!(status, 404);
    let mut sse = open_sse(&gw, "/sse/echoes", Some(&gw.token))
        .await
        .1
        .unwrap();
    let endpoint = sse.endpoint.clone();
    let token = Some(gw.token.as_str());
    post_message(
        &gw,
        &endpoint,
        token,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2024-11-05", "capabilities": {},
            "clientInfo": {"name": "it", "version": "0"}}}),
    )
    .await;
    sse.next_message().await;
    post_message(
        &gw,
        &endpoint,
        token,
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    post_message(
        &gw,
        &endpoint,
        token,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    )
    .await;
    let list = sse.next_message().await;
    assert_eq!(common::tool_names(&list), ["fx__echo"], "{list}");
}

#[tokio::test]
async fn the_python_sdk_sse_client_works_through_the_gateway() {
    let Some(python) = common::external(
        "METAMCP_TEST_PYTHON",
        "the_python_sdk_sse_client_works_through_the_gateway",
    ) else {
        return;
    };
    let (gw, _m) = gateway_with_fixture("sse-py").await;
    let url = gw.url("/sse");
    let (code, out) = common::python_client(
        &python,
        &["--url", &url, "--transport", "sse", "list-tools"],
    );
    assert_eq!(code, 0, "{out}");
    let names: Vec<&str> = out["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"fx__echo"), "{out}");
    let (code, out) = common::python_client(
        &python,
        &[
            "--url",
            &url,
            "--transport",
            "sse",
            "call",
            "fx__add",
            r#"{"a": 2, "b": 3}"#,
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["structuredContent"]["sum"], 5, "{out}");
    // Without credentials the SDK's client fails to connect.
    let (code, out) = common::python_client_with(
        &python,
        None,
        &["--url", &url, "--transport", "sse", "list-tools"],
    );
    assert_ne!(code, 0, "{out}");
    assert!(
        out["error"].as_str().unwrap_or_default().contains("401"),
        "{out}"
    );
}

/// POSTs a JSON-RPC message to `/mcp` in a session, with or without the
/// protocol header; the HTTP status and the JSON-RPC answer, if any.
async fn post_mcp(
    gw: &Gateway,
    session: Option<&str>,
    version_header: Option<&str>,
    body: Value,
) -> (u16, Option<reqwest::header::HeaderMap>, Value) {
    let mut request = gw
        .client()
        .post(gw.mcp_url())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    if let Some(version) = version_header {
        request = request.header("mcp-protocol-version", version);
    }
    let response = request.json(&body).send().await.expect("POST /mcp");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    let value = serde_json::from_str::<Value>(&text).ok().or_else(|| {
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .rfind(|v| v.get("id").is_some())
    });
    (status, Some(headers), value.unwrap_or(Value::String(text)))
}

#[tokio::test]
async fn requests_without_a_protocol_header_are_2025_03_26() {
    let (gw, _m) = gateway_with_fixture("nohdr").await;
    // A 2025-03-26 client sends no MCP-Protocol-Version header at all (the
    // header came with 2025-06-18).
    let (status, headers, init) = post_mcp(
        &gw,
        None,
        None,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-03-26", "capabilities": {},
            "clientInfo": {"name": "old", "version": "0"}}}),
    )
    .await;
    assert_eq!(status, 200, "{init}");
    assert_eq!(init["result"]["protocolVersion"], "2025-03-26", "{init}");
    let session = headers.unwrap()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let (status, _, _) = post_mcp(
        &gw,
        Some(&session),
        None,
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!(status, 202);
    let (status, _, list) = post_mcp(
        &gw,
        Some(&session),
        None,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    )
    .await;
    assert_eq!(status, 200, "{list}");
    assert!(
        common::tool_names(&list).contains(&"fx__echo".to_owned()),
        "{list}"
    );
    let (status, _, call) = post_mcp(
        &gw,
        Some(&session),
        None,
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
               "params": {"name": "fx__echo", "arguments": {"message": "no header"}}}),
    )
    .await;
    assert_eq!(status, 200, "{call}");
    assert_eq!(common::texts(&call["result"]), ["no header"], "{call}");
    // A 2025-03-26 (legacy) error code: a missing resource is -32002, where
    // a 2026-07-28 request would get -32602.
    let (_, _, missing) = post_mcp(
        &gw,
        Some(&session),
        None,
        json!({"jsonrpc": "2.0", "id": 4, "method": "resources/read",
               "params": {"uri": "nope://missing"}}),
    )
    .await;
    assert_eq!(missing["error"]["code"], -32002, "{missing}");
    // Without a header and without a session, a request is a 2025-03-26
    // request outside a session (which that revision requires), not a
    // stateless 2026-07-28 one: refused, never served.
    let (status, _, refused) = post_mcp(
        &gw,
        None,
        None,
        json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list"}),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert!(refused.get("result").is_none(), "{refused}");
    // The same session with the header names its version: still served.
    let (status, _, list) = post_mcp(
        &gw,
        Some(&session),
        Some("2025-03-26"),
        json!({"jsonrpc": "2.0", "id": 6, "method": "tools/list"}),
    )
    .await;
    assert_eq!(status, 200, "{list}");
}

#[tokio::test]
async fn a_closed_sse_stream_closes_its_isolated_connection() {
    let m = common::marker("sse-iso");
    let mut entry = common::fixture_stdio(&m);
    entry["isolation"] = json!("session");
    let gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {"fx": entry}}))
            .ready(),
    )
    .await;
    gw.wait_server("fx", "ready").await;
    let mut sse = open_sse(&gw, "/sse", Some(&gw.token)).await.1.unwrap();
    let endpoint = sse.endpoint.clone();
    let token = Some(gw.token.as_str());
    post_message(
        &gw,
        &endpoint,
        token,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2024-11-05", "capabilities": {},
            "clientInfo": {"name": "it", "version": "0"}}}),
    )
    .await;
    sse.next_message().await;
    post_message(
        &gw,
        &endpoint,
        token,
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    post_message(
        &gw,
        &endpoint,
        token,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
               "params": {"name": "fx__count_calls", "arguments": {}}}),
    )
    .await;
    let answer = sse.next_message().await;
    assert_eq!(common::texts(&answer["result"]), ["1"], "{answer}");
    // The template's process and the session's own.
    assert_eq!(common::processes_with(&m).len(), 2);
    drop(sse);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while common::processes_with(&m).len() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the session's process outlived its stream: {:?}",
            common::processes_with(&m)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn shutdown_ends_open_sse_streams() {
    // A grace period longer than the harness waits: an SSE stream that held
    // shutdown up would show as a kill, not a clean exit.
    let m = common::marker("sse-stop");
    let mut gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {"fx": common::fixture_stdio(&m)}}))
            .env("META_MCP_SHUTDOWN_GRACE_SECS", "120")
            .ready(),
    )
    .await;
    gw.wait_server("fx", "ready").await;
    let mut sse = open_sse(&gw, "/sse", Some(&gw.token)).await.1.unwrap();
    let endpoint = sse.endpoint.clone();
    post_message(
        &gw,
        &endpoint,
        Some(&gw.token),
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2024-11-05", "capabilities": {},
            "clientInfo": {"name": "it", "version": "0"}}}),
    )
    .await;
    sse.next_message().await;
    let status = tokio::task::spawn_blocking(move || gw.stop())
        .await
        .unwrap()
        .expect("the gateway was running");
    assert!(status.success(), "exit status {status:?}");
    // The stream was ended by the gateway, not left hanging.
    let end = tokio::time::timeout(Duration::from_secs(10), sse.events.next())
        .await
        .expect("the stream ends");
    assert!(end.is_none(), "{end:?}");
}
