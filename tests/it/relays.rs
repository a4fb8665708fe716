//! Relays of issue #3: upstream log messages (`logging/setLevel` for legacy
//! sessions, per-request `logLevel` for 2026-07-28) and resource update
//! subscriptions, through the gateway, to exactly the clients they belong
//! to.
//!
//! Most tests drive legacy sessions with rmcp's client, whose transport is
//! tapped so the test sees every notification in wire order (rmcp's own
//! handler callbacks may run out of order). Assertions rest on order, not
//! time: a session's GET stream is ordered, so once a marker sent after
//! something arrives, that something has arrived too, or never will.

// Logging and resources/subscribe are deprecated by SEP-2577 but are what
// legacy sessions speak.
#![allow(deprecated)]

use std::time::Duration;

use rmcp::{
    RoleClient, ServiceExt,
    model::{
        CallToolRequestParams, JsonRpcMessage, LoggingLevel, ServerNotification,
        SetLevelRequestParams, SubscribeRequestParams, UnsubscribeRequestParams,
    },
    service::RunningService,
    transport::{
        StreamableHttpClientTransport, Transport,
        streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::common::python_mode as py;
use crate::common::{self, Gateway, Options, fixture_bin, fixture_stdio, marker, texts};

/// A notification a session received, in wire order.
#[derive(Debug, Clone, PartialEq)]
enum Note {
    /// (level, logger, data)
    Log(String, Option<String>, Value),
    Updated(String),
}

/// Passes every message on, and reports notifications to the test.
struct Tap<T> {
    inner: T,
    notes: mpsc::UnboundedSender<Note>,
}

impl<T: Transport<RoleClient>> Transport<RoleClient> for Tap<T> {
    type Error = T::Error;

    fn send(
        &mut self,
        item: rmcp::service::TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.inner.send(item)
    }

    async fn receive(&mut self) -> Option<rmcp::service::RxJsonRpcMessage<RoleClient>> {
        let message = self.inner.receive().await?;
        if let JsonRpcMessage::Notification(n) = &message {
            let note = match &n.notification {
                ServerNotification::LoggingMessageNotification(m) => Some(Note::Log(
                    serde_json::to_value(m.params.level)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    m.params.logger.clone(),
                    m.params.data.clone(),
                )),
                ServerNotification::ResourceUpdatedNotification(u) => {
                    Some(Note::Updated(u.params.uri.clone()))
                }
                _ => None,
            };
            if let Some(note) = note {
                let _ = self.notes.send(note);
            }
        }
        Some(message)
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}

/// One legacy (2025-11-25) MCP session with the gateway.
struct Session {
    client: RunningService<RoleClient, ()>,
    notes: mpsc::UnboundedReceiver<Note>,
    name: &'static str,
}

const WAIT: Duration = Duration::from_secs(30);

impl Session {
    async fn open(gw: &Gateway, token: &str, name: &'static str) -> Session {
        let config = StreamableHttpClientTransportConfig::with_uri(gw.mcp_url()).auth_header(token);
        let transport = StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
        let (tx, notes) = mpsc::unbounded_channel();
        let client = ()
            .serve(Tap {
                inner: transport,
                notes: tx,
            })
            .await
            .unwrap_or_else(|e| panic!("{name}: initialize: {e}\n{}", gw.log_text()));
        Session {
            client,
            notes,
            name,
        }
    }

    async fn set_level(&self, level: LoggingLevel) {
        self.client
            .set_level(SetLevelRequestParams::new(level))
            .await
            .unwrap_or_else(|e| panic!("{}: logging/setLevel: {e}", self.name));
    }

    async fn call(&self, tool: &str, arguments: Value) -> Vec<String> {
        let mut params = CallToolRequestParams::new(tool.to_owned());
        params.arguments = arguments.as_object().cloned();
        let result = self
            .client
            .call_tool(params)
            .await
            .unwrap_or_else(|e| panic!("{}: {tool}: {e}", self.name));
        let result = serde_json::to_value(result).unwrap();
        assert_ne!(result["isError"], true, "{}: {tool}: {result}", self.name);
        texts(&result)
    }

    async fn subscribe(&self, uri: &str) -> Result<(), rmcp::ServiceError> {
        self.client
            .subscribe(SubscribeRequestParams::new(uri.to_owned()))
            .await
    }

    async fn unsubscribe(&self, uri: &str) {
        self.client
            .unsubscribe(UnsubscribeRequestParams::new(uri.to_owned()))
            .await
            .unwrap_or_else(|e| panic!("{}: unsubscribe {uri}: {e}", self.name));
    }

    /// The notifications received from now until (and with) the first one
    /// that `last` matches.
    async fn until(&mut self, what: &str, last: impl Fn(&Note) -> bool) -> Vec<Note> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.notes.recv()).await {
                Ok(Some(note)) => {
                    let done = last(&note);
                    seen.push(note);
                    if done {
                        return seen;
                    }
                }
                _ => panic!("{}: no {what} within {WAIT:?}; got {seen:?}", self.name),
            }
        }
    }

    /// The log messages received until the one whose data is `marker`, as
    /// (level, logger, data); fails on anything else received meanwhile.
    async fn logs_until(&mut self, marker: &str) -> Vec<(String, Option<String>, String)> {
        let notes = self
            .until(marker, |n| matches!(n, Note::Log(_, _, d) if d == marker))
            .await;
        notes
            .into_iter()
            .map(|n| match n {
                Note::Log(level, logger, data) => (
                    level,
                    logger,
                    data.as_str()
                        .map_or_else(|| data.to_string(), str::to_owned),
                ),
                other => panic!("{}: expected only log messages, got {other:?}", self.name),
            })
            .collect()
    }

    /// Everything received until the update of `uri`.
    async fn until_updated(&mut self, uri: &str) -> Vec<Note> {
        self.until(uri, |n| matches!(n, Note::Updated(u) if u == uri))
            .await
    }

    async fn close(self) {
        let _ = self.client.cancel().await;
    }
}

/// `fx__log` arguments: one entry per (level, data), logger "tool".
fn log_args(entries: &[(&str, &str)]) -> Value {
    json!({
        "logger": "tool",
        "entries": entries.iter().map(|(l, d)| json!({"level": l, "data": d})).collect::<Vec<_>>(),
    })
}

/// The data of log messages.
fn data(logs: &[(String, Option<String>, String)]) -> Vec<&str> {
    logs.iter().map(|(_, _, d)| d.as_str()).collect()
}

/// A gateway with the fixture twice over stdio: `fx` speaks 2026-07-28
/// (per-request log levels, `subscriptions/listen`), `old` only the legacy
/// revisions (`logging/setLevel`, `resources/subscribe`).
async fn gateway_with_both_eras(prefix: &str) -> Gateway {
    let m = marker(prefix);
    let gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {
                "fx": fixture_stdio(&m),
                "old": {"command": fixture_bin(), "args": ["--legacy", "--name", m]},
            }}))
            .ready(),
    )
    .await;
    gw.wait_server("fx", "ready").await;
    let old = gw.wait_server("old", "ready").await;
    assert_eq!(old["status"]["protocol_version"], "2025-11-25", "{old}");
    gw
}

#[tokio::test]
async fn set_level_filters_the_log_messages_of_a_sessions_calls() {
    let gw = gateway_with_both_eras("relay-level").await;
    let mut a = Session::open(&gw, &gw.token, "a").await;
    a.set_level(LoggingLevel::Warning).await;
    let entries = |tag: &str| {
        [
            ("debug", format!("{tag} debug")),
            ("info", format!("{tag} info")),
            ("warning", format!("{tag} warning")),
            ("error", format!("{tag} error")),
            ("emergency", format!("{tag} end")),
        ]
    };
    for server in ["fx", "old"] {
        let e = entries(server);
        let e: Vec<(&str, &str)> = e.iter().map(|(l, d)| (*l, d.as_str())).collect();
        let answer = a.call(&format!("{server}__log"), log_args(&e)).await;
        let logs = a.logs_until(&format!("{server} end")).await;
        assert_eq!(
            data(&logs),
            [
                format!("{server} warning"),
                format!("{server} error"),
                format!("{server} end")
            ],
            "{server}: {answer:?}"
        );
        // The logger is kept, prefixed with the server's name.
        assert!(
            logs.iter()
                .all(|(_, logger, _)| logger.as_deref() == Some(&format!("{server}/tool"))),
            "{logs:?}"
        );
        assert_eq!(logs[0].0, "warning");
    }
    // A 2026-07-28 upstream is told the level on each request; the legacy
    // one was set with logging/setLevel, and only sent what passes.
    assert_eq!(a.call("old__log_level", json!({})).await, ["warning"]);
    assert_eq!(
        a.call("fx__log_level", json!({})).await,
        ["<unset>"],
        "a 2026-07-28 upstream gets no logging/setLevel"
    );

    // A new level applies to the next call.
    a.set_level(LoggingLevel::Debug).await;
    a.call(
        "old__log",
        log_args(&[("debug", "d"), ("info", "i"), ("emergency", "end 2")]),
    )
    .await;
    assert_eq!(data(&a.logs_until("end 2").await), ["d", "i", "end 2"]);
    assert_eq!(a.call("old__log_level", json!({})).await, ["debug"]);

    // The upstream's level follows the callers: once the session that
    // wanted debug is gone, the next caller's call raises it again.
    let mut b = Session::open(&gw, &gw.token, "b").await;
    b.set_level(LoggingLevel::Error).await;
    a.close().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let level = b.call("old__log_level", json!({})).await;
        if level == ["error"] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upstream level stayed {level:?} after the debug session ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.call(
        "old__log",
        log_args(&[("warning", "w"), ("error", "e"), ("emergency", "end 3")]),
    )
    .await;
    assert_eq!(data(&b.logs_until("end 3").await), ["e", "end 3"]);
    b.close().await;
}

#[tokio::test]
async fn log_messages_reach_only_the_session_whose_call_caused_them() {
    let gw = gateway_with_both_eras("relay-own").await;
    for server in ["fx", "old"] {
        let tool = format!("{server}__log");
        let mut a = Session::open(&gw, &gw.token, "a").await;
        let mut b = Session::open(&gw, &gw.token, "b").await;
        for s in [&a, &b] {
            s.set_level(LoggingLevel::Debug).await;
        }
        // One after the other: each session gets its own call's messages.
        // Had A's reached B, they would be on B's (ordered) stream before
        // B's own.
        a.call(
            &tool,
            log_args(&[("info", "A1"), ("info", "A2"), ("info", "A end")]),
        )
        .await;
        b.call(&tool, log_args(&[("info", "B1"), ("info", "B end")]))
            .await;
        assert_eq!(data(&b.logs_until("B end").await), ["B1", "B end"]);
        a.call(&tool, log_args(&[("info", "A end 2")])).await;
        assert_eq!(
            data(&a.logs_until("A end 2").await),
            ["A1", "A2", "A end", "A end 2"]
        );

        // At the same time on one shared upstream connection: a message
        // that cannot be told apart goes to neither, never to the other.
        let entries = |tag: &str| -> Value {
            json!({"delay_ms": 20, "entries": (0..6)
                .map(|i| json!({"level": "info", "data": format!("{tag}{i}")}))
                .collect::<Vec<_>>()})
        };
        tokio::join!(a.call(&tool, entries("A")), b.call(&tool, entries("B")));
        a.call(&tool, log_args(&[("info", "A end 3")])).await;
        b.call(&tool, log_args(&[("info", "B end 3")])).await;
        let a_logs = a.logs_until("A end 3").await;
        let b_logs = b.logs_until("B end 3").await;
        assert!(
            data(&a_logs).iter().all(|d| d.starts_with('A')),
            "{server}: A got {a_logs:?}"
        );
        assert!(
            data(&b_logs).iter().all(|d| d.starts_with('B')),
            "{server}: B got {b_logs:?}"
        );
        a.close().await;
        b.close().await;
    }
}

/// The JSON-RPC messages of one 2026-07-28 POST, in order.
async fn modern_post(
    gw: &Gateway,
    method: &str,
    mut params: Value,
    level: Option<&str>,
) -> Vec<Value> {
    let mut meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    if let Some(level) = level {
        meta["io.modelcontextprotocol/logLevel"] = json!(level);
    }
    params["_meta"] = meta;
    let request = common::modern_request(&gw.client(), &gw.mcp_url(), 7, method, &params);
    common::jsonrpc_messages(request.send().await.expect("MCP request")).await
}

#[tokio::test]
async fn a_modern_request_gets_log_messages_at_its_own_level_on_its_stream() {
    let gw = gateway_with_both_eras("relay-modern").await;
    for server in ["fx", "old"] {
        let call = json!({"name": format!("{server}__log"), "arguments": log_args(&[
            ("debug", "d"), ("info", "i"), ("warning", "w"), ("emergency", "end"),
        ])});
        let messages = modern_post(&gw, "tools/call", call.clone(), Some("info")).await;
        let (logs, rest): (Vec<&Value>, Vec<&Value>) = messages
            .iter()
            .partition(|m| m["method"] == "notifications/message");
        assert_eq!(
            logs.iter()
                .map(|m| m["params"]["data"].clone())
                .collect::<Vec<_>>(),
            [json!("i"), json!("w"), json!("end")],
            "{server}: {messages:?}"
        );
        assert!(
            logs.iter()
                .all(|m| m["params"]["logger"] == format!("{server}/tool"))
        );
        // All of them before the result, which comes last.
        let last = messages.last().unwrap();
        assert_eq!(last["id"], 7, "{messages:?}");
        assert!(last["result"].is_object(), "{messages:?}");
        assert_eq!(rest.len(), 1, "{messages:?}");

        // No logLevel, no log message: 2026-07-28 forbids them.
        let messages = modern_post(&gw, "tools/call", call, None).await;
        assert!(
            messages
                .iter()
                .all(|m| m["method"] != "notifications/message"),
            "{server}: {messages:?}"
        );
        assert!(
            messages.last().unwrap()["result"].is_object(),
            "{messages:?}"
        );
    }
}

/// The URIs the fixture behind `server` is subscribed to now.
async fn upstream_subscriptions(s: &Session, server: &str) -> Vec<String> {
    let text = s.call(&format!("{server}__subscriptions"), json!({})).await;
    serde_json::from_str(&text[0]).unwrap()
}

/// Waits until the fixture behind `server` is subscribed to exactly `uris`
/// (a 2026-07-28 upstream drops a replaced `subscriptions/listen` as its
/// cancellation arrives).
async fn wait_upstream_subscriptions(s: &Session, server: &str, uris: &[&str]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = upstream_subscriptions(s, server).await;
        if now == uris {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{server} stayed subscribed to {now:?}, expected {uris:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A gateway with the fixture over stdio as `fx`, speaking 2026-07-28 or
/// (`legacy_upstream`) only the legacy revisions. (Two fixtures behind one
/// gateway would offer the same resource URIs: one would hide the other's.)
async fn gateway_with_one_era(prefix: &str, legacy_upstream: bool) -> Gateway {
    let m = marker(prefix);
    let mut fixture = fixture_stdio(&m);
    if legacy_upstream {
        fixture["args"] = json!(["--legacy", "--name", m]);
    }
    let gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {"fx": fixture}}))
            .ready(),
    )
    .await;
    gw.wait_server("fx", "ready").await;
    gw
}

async fn subscriptions_are_shared_routed_and_released(legacy_upstream: bool) {
    let gw = gateway_with_one_era("relay-subs", legacy_upstream).await;
    const README: &str = "fixture://readme";
    const ITEM1: &str = "fixture://items/1";
    const ITEM2: &str = "fixture://items/2";
    let touch = |uri: &str| json!({"uri": uri});

    let mut a = Session::open(&gw, &gw.token, "a").await;
    let mut b = Session::open(&gw, &gw.token, "b").await;
    let mut c = Session::open(&gw, &gw.token, "c").await;
    a.subscribe(README).await.expect("a subscribes");
    wait_upstream_subscriptions(&a, "fx", &[README]).await;
    c.subscribe(README).await.expect("c subscribes");
    // A resource of a template is a resource too.
    b.subscribe(ITEM1).await.expect("b subscribes");
    wait_upstream_subscriptions(&a, "fx", &[ITEM1, README]).await;

    // The update reaches both subscribers of README, not B.
    b.call("fx__touch", touch(README)).await;
    assert_eq!(
        a.until_updated(README).await,
        [Note::Updated(README.into())]
    );
    assert_eq!(
        c.until_updated(README).await,
        [Note::Updated(README.into())]
    );
    b.call("fx__touch", touch(ITEM1)).await;
    assert_eq!(b.until_updated(ITEM1).await, [Note::Updated(ITEM1.into())]);

    // A leaves; C still holds the upstream subscription.
    a.unsubscribe(README).await;
    assert!(
        upstream_subscriptions(&a, "fx")
            .await
            .contains(&README.to_owned())
    );
    a.subscribe(ITEM2).await.expect("a subscribes to item 2");
    b.call("fx__touch", touch(README)).await;
    b.call("fx__touch", touch(ITEM2)).await;
    assert_eq!(
        c.until_updated(README).await,
        [Note::Updated(README.into())]
    );
    assert_eq!(
        a.until_updated(ITEM2).await,
        [Note::Updated(ITEM2.into())],
        "a unsubscribed from {README}"
    );

    // The last subscriber's session ends: the gateway unsubscribes.
    c.close().await;
    wait_upstream_subscriptions(&a, "fx", &[ITEM1, ITEM2]).await;
    a.unsubscribe(ITEM2).await;
    b.unsubscribe(ITEM1).await;
    wait_upstream_subscriptions(&a, "fx", &[]).await;
    // Unsubscribing again is harmless.
    b.unsubscribe(ITEM1).await;
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn subscriptions_at_a_modern_upstream_are_shared_routed_and_released() {
    subscriptions_are_shared_routed_and_released(false).await;
}

#[tokio::test]
async fn subscriptions_at_a_legacy_upstream_are_shared_routed_and_released() {
    subscriptions_are_shared_routed_and_released(true).await;
}

/// A new connection to the upstream is subscribed again to what clients
/// still watch.
async fn subscriptions_survive_an_upstream_reconnect(legacy_upstream: bool) {
    let gw = gateway_with_one_era("relay-reconnect", legacy_upstream).await;
    const README: &str = "fixture://readme";
    let mut a = Session::open(&gw, &gw.token, "a").await;
    a.subscribe(README).await.expect("a subscribes");
    wait_upstream_subscriptions(&a, "fx", &[README]).await;

    // The upstream process dies (the call that kills it gets no answer)
    // and the gateway starts a new one.
    let (code, body) = gw.execute("fx__exit", json!({"code": 3})).await;
    assert_eq!(code, 502, "{body}");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, server) = gw.get("/api/v1/servers/fx").await;
        if server["status"]["status"] == "ready"
            && server["status"]["attempts"].as_u64().unwrap_or(0) >= 2
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "fx did not come back: {server}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_upstream_subscriptions(&a, "fx", &[README]).await;
    a.call("fx__touch", json!({"uri": README})).await;
    assert_eq!(
        a.until_updated(README).await,
        [Note::Updated(README.into())]
    );
    a.close().await;
}

#[tokio::test]
async fn subscriptions_at_a_modern_upstream_survive_its_reconnect() {
    subscriptions_survive_an_upstream_reconnect(false).await;
}

#[tokio::test]
async fn subscriptions_at_a_legacy_upstream_survive_its_reconnect() {
    subscriptions_survive_an_upstream_reconnect(true).await;
}

#[tokio::test]
async fn a_hidden_resource_answers_subscribe_like_a_missing_one() {
    let (gw, _m) = common::gateway_with_fixture("relay-hidden").await;
    let password = "alice-password-123";
    let (code, body) = gw
        .post(
            "/api/v1/users",
            json!({"username": "alice", "password": password, "roles": ["user"]}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let alice_id = body["id"].as_str().unwrap().to_owned();
    let grant = json!({"subject_kind": "user", "subject": alice_id, "effect": "deny",
                       "resource_kind": "server", "pattern": "fx"});
    let (code, body) = gw.post("/api/v1/grants", grant).await;
    assert_eq!(code, 201, "{body}");
    let (code, login) = gw.login("alice", password).await;
    assert_eq!(code, 200, "{login}");
    let alice = login["access_token"].as_str().unwrap().to_owned();

    let session = Session::open(&gw, &alice, "alice").await;
    let error = |e: rmcp::ServiceError| match e {
        rmcp::ServiceError::McpError(e) => (e.code.0, e.message.to_string()),
        other => panic!("not a JSON-RPC error: {other}"),
    };
    let hidden = error(session.subscribe("fixture://readme").await.unwrap_err());
    let missing = error(session.subscribe("fixture://nothing").await.unwrap_err());
    assert_eq!(
        hidden,
        (-32002, "Resource not found: fixture://readme".into())
    );
    assert_eq!(
        missing,
        (-32002, "Resource not found: fixture://nothing".into())
    );
    // The admin sees it, and the upstream was never asked for alice.
    let admin = Session::open(&gw, &gw.token, "admin").await;
    assert_eq!(
        upstream_subscriptions(&admin, "fx").await,
        Vec::<String>::new()
    );
    admin
        .subscribe("fixture://readme")
        .await
        .expect("admin subscribes");
    session.close().await;
    admin.close().await;
}

#[tokio::test]
async fn the_python_sdk_gets_the_log_messages_of_its_level_in_both_eras() {
    let test = "the_python_sdk_gets_the_log_messages_of_its_level_in_both_eras";
    let Some(python) = common::external("METAMCP_TEST_PYTHON", test) else {
        return;
    };
    let gw = gateway_with_both_eras("relay-py").await;
    let url = gw.mcp_url();
    let args = log_args(&[
        ("debug", "d"),
        ("info", "i"),
        ("warning", "w"),
        ("error", "e"),
        ("emergency", "end"),
    ])
    .to_string();
    for mode in ["legacy", "modern"] {
        for server in ["fx", "old"] {
            let tool = format!("{server}__log");
            let (code, out) = py(
                &python,
                &url,
                mode,
                &["logs", &tool, &args, "--level", "warning", "--until", "end"],
            )
            .await;
            assert_eq!(code, 0, "{mode} {server}: {out}");
            let logs: Vec<(Value, Value)> = out["logs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| (l["level"].clone(), l["data"].clone()))
                .collect();
            assert_eq!(
                logs,
                [
                    (json!("warning"), json!("w")),
                    (json!("error"), json!("e")),
                    (json!("emergency"), json!("end"))
                ],
                "{mode} {server}: {out}"
            );
            assert_eq!(out["logs"][0]["logger"], format!("{server}/tool"), "{out}");
        }
    }
}

#[tokio::test]
async fn the_python_sdk_subscribes_to_resources_in_both_eras() {
    let test = "the_python_sdk_subscribes_to_resources_in_both_eras";
    let Some(python) = common::external("METAMCP_TEST_PYTHON", test) else {
        return;
    };
    for legacy_upstream in [false, true] {
        let gw = gateway_with_one_era("relay-py-subs", legacy_upstream).await;
        let url = gw.mcp_url();
        // Legacy clients: resources/subscribe; modern: subscriptions/listen.
        for mode in ["legacy", "modern"] {
            let uri = format!("fixture://items/{mode}");
            let trigger = json!({"uri": uri}).to_string();
            let (code, out) = py(
                &python,
                &url,
                mode,
                &[
                    "watch",
                    &uri,
                    "--trigger",
                    "fx__touch",
                    "--trigger-args",
                    &trigger,
                    "--unsubscribe",
                ],
            )
            .await;
            let era = if legacy_upstream { "legacy" } else { "modern" };
            assert_eq!(
                code,
                0,
                "{mode} client, {era} upstream: {out}\n{}",
                gw.log_text()
            );
            assert_eq!(
                out["updated"],
                json!([uri]),
                "{mode} client, {era} upstream: {out}"
            );
            if mode == "modern" {
                assert_eq!(out["honored"], json!([uri]), "{out}");
            }
        }
        // Every subscription ended with its client: none is left upstream.
        let admin = Session::open(&gw, &gw.token, "admin").await;
        wait_upstream_subscriptions(&admin, "fx", &[]).await;
        admin.close().await;
    }
}

/// The calls the fixture behind `fx` stopped because they were cancelled.
async fn upstream_cancelled_calls(gw: &Gateway) -> u64 {
    let (code, body) = gw.execute("fx__cancelled_calls", json!({})).await;
    assert_eq!(code, 200, "{body}");
    texts(&body["result"])[0].parse().expect("a count")
}

/// A client that abandons a call cancels it upstream, in every era pairing:
/// a legacy client sends `notifications/cancelled`, a 2026-07-28 client
/// closes the request's response stream (its spelling of a cancel), and the
/// gateway cancels the upstream request in the upstream's own era.
#[tokio::test]
async fn the_python_sdk_cancels_a_running_call_upstream_in_both_eras() {
    let test = "the_python_sdk_cancels_a_running_call_upstream_in_both_eras";
    let Some(python) = common::external("METAMCP_TEST_PYTHON", test) else {
        return;
    };
    for legacy_upstream in [false, true] {
        let gw = gateway_with_one_era("relay-py-cancel", legacy_upstream).await;
        let url = gw.mcp_url();
        let era = if legacy_upstream { "legacy" } else { "modern" };
        for mode in ["legacy", "modern"] {
            let before = upstream_cancelled_calls(&gw).await;
            // Long enough (1000 × 50 ms) never to finish by itself.
            let args = json!({"steps": 1000, "delay_ms": 50}).to_string();
            let (code, out) = py(&python, &url, mode, &["cancel", "fx__progress", &args]).await;
            assert_eq!(code, 0, "{mode} client, {era} upstream: {out}");
            assert_eq!(
                out["cancelled"], true,
                "{mode} client, {era} upstream: {out}"
            );
            assert!(out["progressBeforeCancel"].as_u64() >= Some(1), "{out}");
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let now = upstream_cancelled_calls(&gw).await;
                if now == before + 1 {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{mode} client, {era} upstream: the upstream saw {} cancellations, expected 1\n{}",
                    now - before,
                    gw.log_text()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test]
async fn server_everything_logs_and_resource_updates_reach_a_python_client() {
    let test = "server_everything_logs_and_resource_updates_reach_a_python_client";
    let Some(everything) = common::external("METAMCP_TEST_EVERYTHING", test) else {
        return;
    };
    let Some(python) = common::external("METAMCP_TEST_PYTHON", test) else {
        return;
    };
    let gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {"ev": {"command": everything, "args": ["stdio"]}}}))
            .ready(),
    )
    .await;
    gw.wait_server("ev", "ready").await;
    gw.wait_tool("ev__toggle-simulated-logging", true).await;
    let url = gw.mcp_url();
    // The tool starts random-level logging and sends the first message at
    // once, while the call is in flight: at level debug, whatever its level,
    // it reaches the caller.
    let (code, out) = py(
        &python,
        &url,
        "legacy",
        &[
            "logs",
            "ev__toggle-simulated-logging",
            "{}",
            "--level",
            "debug",
            "--count",
            "1",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}\n{}", gw.log_text());
    let first = &out["logs"][0];
    assert_eq!(first["logger"], "ev", "{out}");
    assert!(
        first["data"]
            .as_str()
            .is_some_and(|d| d.contains("level message") || d.contains("level-message")),
        "{out}"
    );

    // A subscribed client hears of updates the upstream sends for its
    // subscription (the tool starts them, the first at once).
    let uri = "demo://resource/dynamic/text/1";
    let (code, out) = py(
        &python,
        &url,
        "legacy",
        &[
            "watch",
            uri,
            "--trigger",
            "ev__toggle-subscriber-updates",
            "--unsubscribe",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}\n{}", gw.log_text());
    assert_eq!(out["updated"][0], uri, "{out}");
}

/// `metamcp stdio` passes a legacy desktop client's level and subscriptions
/// on to the gateway, and brings back its log messages and updates.
#[tokio::test]
async fn metamcp_stdio_relays_log_levels_and_subscriptions() {
    let test = "metamcp_stdio_relays_log_levels_and_subscriptions";
    let Some(python) = common::external("METAMCP_TEST_PYTHON", test) else {
        return;
    };
    let gw = gateway_with_one_era("relay-bridge", false).await;
    let command = json!([
        env!("CARGO_BIN_EXE_metamcp"),
        "stdio",
        "--url",
        gw.base,
        "--token",
        gw.token
    ])
    .to_string();
    let args = log_args(&[("info", "i"), ("error", "e"), ("emergency", "end")]).to_string();
    let (code, out) = common::python_client(
        &python,
        &[
            "--stdio", &command, "--mode", "legacy", "logs", "fx__log", &args, "--level", "error",
            "--until", "end",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let data: Vec<&Value> = out["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| &l["data"])
        .collect();
    assert_eq!(data, [&json!("e"), &json!("end")], "{out}");

    let uri = "fixture://items/bridged";
    let trigger = json!({"uri": uri}).to_string();
    let (code, out) = common::python_client(
        &python,
        &[
            "--stdio",
            &command,
            "--mode",
            "legacy",
            "watch",
            uri,
            "--trigger",
            "fx__touch",
            "--trigger-args",
            &trigger,
            "--unsubscribe",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["updated"], json!([uri]), "{out}");
    let admin = Session::open(&gw, &gw.token, "admin").await;
    wait_upstream_subscriptions(&admin, "fx", &[]).await;
    admin.close().await;
}

/// A real client hears `notifications/tools/list_changed` once an upstream's
/// tool set changed and the catalog re-synced: a legacy client on its
/// session's GET stream, a 2026-07-28 client through `subscriptions/listen`;
/// its next `tools/list` shows the change.
#[tokio::test]
async fn the_python_sdk_hears_list_changed_after_an_upstreams_tools_change() {
    let test = "the_python_sdk_hears_list_changed_after_an_upstreams_tools_change";
    let Some(python) = common::external("METAMCP_TEST_PYTHON", test) else {
        return;
    };
    for mode in ["legacy", "modern"] {
        // A fresh upstream each time: `mutate` changes its tools only once.
        let gw = gateway_with_one_era("relay-py-changed", false).await;
        let (code, out) = py(
            &python,
            &gw.mcp_url(),
            mode,
            &["tools-changed", "--trigger", "fx__mutate"],
        )
        .await;
        assert_eq!(code, 0, "{mode} client: {out}\n{}", gw.log_text());
        assert_eq!(out["changed"], true, "{mode}: {out}");
        let tools = out["tools"].as_array().expect("tools listed again");
        // The changed `echo` is either shown with its new definition or held
        // back for approval (pinning); the old one is gone either way.
        assert!(
            !tools
                .iter()
                .any(|t| t["description"] == "Return the message unchanged"),
            "{mode}: {out}"
        );
        assert!(
            tools.iter().any(|t| t["name"] == "fx__mutate"),
            "{mode}: {out}"
        );
    }
}
