//! Legacy MCP sessions (2025-11-25, `Mcp-Session-Id`) across replicas:
//! three metamcp processes share a fresh PostgreSQL database and Redis (a
//! key prefix of their own), with the same config file (the fixture over
//! stdio on each). A session opened on one replica is served by any other
//! (rmcp rebuilds it from the record in Redis), only to the principal that
//! opened it, with its log level and resource subscriptions; a DELETE
//! through one replica ends it on all.
//!
//! The Python SDK test goes through a small round-robin proxy inside the
//! test, which forwards each request to the next replica in turn and
//! streams bodies both ways (SSE answers pass as they come).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{body::Body, extract::State, response::IntoResponse};
use futures::TryStreamExt;
use serde_json::{Value, json};

use crate::common::pg::TempDatabase;
use crate::common::{self, Gateway, Options, client_with, fixture_bin, marker, texts};

/// PostgreSQL and Redis for the test, or `None` (said) outside CI.
fn backing_services(test: &str) -> Option<(String, String)> {
    let postgres = std::env::var("METAMCP_TEST_POSTGRES_URL").ok();
    let redis = std::env::var("METAMCP_TEST_REDIS_URL").ok();
    match (postgres, redis) {
        (Some(pg), Some(redis)) if !pg.is_empty() && !redis.is_empty() => Some((pg, redis)),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("METAMCP_TEST_POSTGRES_URL and METAMCP_TEST_REDIS_URL must be set in CI");
            }
            eprintln!(
                "SKIPPED {test}: METAMCP_TEST_POSTGRES_URL and METAMCP_TEST_REDIS_URL must both be set"
            );
            None
        }
    }
}

/// Three replicas on one database and one Redis prefix.
struct Cluster {
    replicas: Vec<Gateway>,
    redis_url: String,
    prefix: String,
    /// Declared last: dropped after the replicas have stopped.
    _db: TempDatabase,
}

impl Cluster {
    async fn start(postgres: &str, redis_url: &str, name: &str) -> Cluster {
        let db = TempDatabase::create(postgres, "it").await;
        let prefix = format!("metamcp-it-{}:", uuid::Uuid::new_v4().simple());
        let m = marker(name);
        // The same config file on each: the fixture over stdio, speaking
        // the legacy revisions (so `logging/setLevel` reaches it and its
        // `log_level` tool tells which level the replica asked for).
        // And the conformance fixture, a 2026-07-28 upstream that asks for
        // input with `input_required` results.
        let config = json!({"mcpServers": {
            "fx": {"command": fixture_bin(), "args": ["--legacy", "--name", m]},
            "cf": {"command": fixture_bin(), "args": ["--conformance", "--name", m]},
        }});
        let secret = format!("replica-secret-{}", uuid::Uuid::new_v4().simple());
        let mut replicas = Vec::new();
        // One after the other: the first creates the schema and the admin.
        for _ in 0..3 {
            let gw = Gateway::start(
                Options::default()
                    .config(config.clone())
                    .env("META_MCP_DATABASE_URL", &db.url)
                    .env("META_MCP_REDIS_URL", redis_url)
                    .env("META_MCP_REDIS_PREFIX", &prefix)
                    .env("META_MCP_SECRET_KEY", &secret)
                    .env(
                        "META_MCP_ENCRYPTION_KEY",
                        "replica-encryption-key-0123456789abcdef",
                    )
                    .env("META_MCP_SESSION_IDLE_SECS", "120")
                    .env("META_MCP_EMBEDDING_PROVIDER", "off")
                    .ready(),
            )
            .await;
            gw.wait_server("fx", "ready").await;
            gw.wait_server("cf", "ready").await;
            replicas.push(gw);
        }
        Cluster {
            replicas,
            redis_url: redis_url.to_owned(),
            prefix,
            _db: db,
        }
    }

    /// The replicas' logs, for failure messages.
    fn logs(&self) -> String {
        self.replicas
            .iter()
            .map(|g| format!("--- replica {}:\n{}", g.port, g.log_text()))
            .collect()
    }
}

impl Drop for Cluster {
    /// Removes what the replicas left in Redis under their prefix (records
    /// expire anyway; a failed test leaves none behind either).
    fn drop(&mut self) {
        let Ok(mut conn) =
            redis::Client::open(self.redis_url.as_str()).and_then(|c| c.get_connection())
        else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query(&mut conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut conn);
        }
    }
}

/// (session id the request named, replica it went to), in order.
type Seen = Arc<parking_lot::Mutex<Vec<(Option<String>, usize)>>>;

/// A round-robin HTTP proxy: each request goes to the next replica in
/// turn; bodies stream both ways. Records which replica served which
/// session's requests.
struct Proxy {
    url: String,
    seen: Seen,
    task: tokio::task::JoinHandle<()>,
}

struct Backends {
    bases: Vec<String>,
    next: AtomicUsize,
    http: reqwest::Client,
    seen: Seen,
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) and those the client sets anew.
const NOT_FORWARDED: [&str; 5] = [
    "host",
    "connection",
    "transfer-encoding",
    "keep-alive",
    "content-length",
];

async fn forward(
    State(backends): State<Arc<Backends>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let turn = backends.next.fetch_add(1, Ordering::Relaxed) % backends.bases.len();
    let (parts, body) = request.into_parts();
    let session = parts
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    backends.seen.lock().push((session, turn));
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let mut outgoing = backends
        .http
        .request(parts.method, format!("{}{path}", backends.bases[turn]))
        .body(reqwest::Body::wrap_stream(body.into_data_stream()));
    for (name, value) in &parts.headers {
        if !NOT_FORWARDED.contains(&name.as_str()) {
            outgoing = outgoing.header(name, value);
        }
    }
    let answer = match outgoing.send().await {
        Ok(answer) => answer,
        Err(e) => return (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let mut response = axum::http::Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if !NOT_FORWARDED.contains(&name.as_str()) {
            response = response.header(name, value);
        }
    }
    response
        .body(Body::from_stream(
            answer.bytes_stream().map_err(std::io::Error::other),
        ))
        .unwrap()
}

impl Proxy {
    async fn start(bases: Vec<String>) -> Proxy {
        let seen = Seen::default();
        let backends = Arc::new(Backends {
            bases,
            next: AtomicUsize::new(0),
            http: reqwest::Client::new(),
            seen: seen.clone(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(forward).with_state(backends);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Proxy {
            url: format!("http://{addr}"),
            seen,
            task,
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn the_python_sdk_lists_and_calls_through_a_round_robin_over_three_replicas() {
    let test = "the_python_sdk_lists_and_calls_through_a_round_robin_over_three_replicas";
    let Some((postgres, redis_url)) = backing_services(test) else {
        return;
    };
    let Some(python) = common::external("METAMCP_TEST_PYTHON", test) else {
        return;
    };
    let cluster = Cluster::start(&postgres, &redis_url, "replica-py").await;
    let proxy = Proxy::start(cluster.replicas.iter().map(|g| g.base.clone()).collect()).await;
    // An API key made on replica 1 is good on every replica (one database,
    // one secret key).
    let auth = format!("Authorization: Bearer {}", cluster.replicas[0].token);
    let url = format!("{}/mcp", proxy.url);
    let run = |args: Vec<String>| {
        let (python, auth) = (python.clone(), auth.clone());
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            common::python_client_with(&python, Some(&auth), &args)
        })
    };
    let base = vec![
        "--url".to_owned(),
        url.clone(),
        "--mode".into(),
        "legacy".into(),
    ];

    let mut list = base.clone();
    list.push("list-tools".into());
    let (code, out) = run(list).await.unwrap();
    assert_eq!(code, 0, "{out}\n{}", cluster.logs());
    assert_eq!(out["protocolVersion"], "2025-11-25", "{out}");
    let names: Vec<&str> = out["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"fx__echo"), "{names:?}");

    let mut call = base.clone();
    call.extend([
        "call".into(),
        "fx__echo".into(),
        json!({"message": "round and round"}).to_string(),
    ]);
    let (code, out) = run(call).await.unwrap();
    assert_eq!(code, 0, "{out}\n{}", cluster.logs());
    assert_eq!(out["isError"], false, "{out}");
    assert_eq!(out["content"][0]["text"], "round and round", "{out}");

    // The requests were spread: every replica served some, and a session's
    // requests reached more than one replica.
    let seen = proxy.seen.lock().clone();
    for replica in 0..3 {
        assert!(
            seen.iter().any(|(_, r)| *r == replica),
            "replica {replica} served nothing: {seen:?}"
        );
    }
    let mut sessions: Vec<&String> = seen.iter().filter_map(|(s, _)| s.as_ref()).collect();
    sessions.sort();
    sessions.dedup();
    assert_eq!(sessions.len(), 2, "one session per client run: {seen:?}");
    for session in sessions {
        let mut replicas: Vec<usize> = seen
            .iter()
            .filter(|(s, _)| s.as_ref() == Some(session))
            .map(|(_, r)| *r)
            .collect();
        replicas.sort();
        replicas.dedup();
        assert!(
            replicas.len() >= 2,
            "session {session} stayed on one replica: {seen:?}"
        );
    }
}

/// One legacy session spoken in raw HTTP, each request sent to the replica
/// the test names.
struct RawSession {
    id: String,
    next: u64,
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"it","version":"0"}}}"#;

/// The JSON-RPC response in an answer (JSON, or the last SSE `data:`
/// event that carries an id).
async fn response_of(r: reqwest::Response) -> Value {
    common::jsonrpc_answer(r).await
}

impl RawSession {
    async fn open(gw: &Gateway, token: &str) -> RawSession {
        let r = common::mcp_post(&gw.mcp_url(), Some(token), INIT).await;
        assert_eq!(r.status(), 200);
        let id = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
        let init = response_of(r).await;
        assert!(init["result"]["capabilities"].is_object(), "{init}");
        RawSession { id, next: 1 }
    }

    async fn post(&self, gw: &Gateway, token: &str, body: &Value) -> reqwest::Response {
        client_with(token)
            .post(gw.mcp_url())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &self.id)
            .header("mcp-protocol-version", "2025-11-25")
            .json(body)
            .send()
            .await
            .expect("MCP request")
    }

    /// A request's JSON-RPC response, asserting HTTP 200.
    async fn request(&mut self, gw: &Gateway, token: &str, method: &str, params: Value) -> Value {
        self.next += 1;
        let body = json!({"jsonrpc": "2.0", "id": self.next, "method": method, "params": params});
        let r = self.post(gw, token, &body).await;
        assert_eq!(r.status(), 200, "{method} on replica {}", gw.port);
        response_of(r).await
    }

    /// The HTTP status of a `tools/list` of this session.
    async fn list_status(&mut self, gw: &Gateway, token: &str) -> u16 {
        self.next += 1;
        let body = json!({"jsonrpc": "2.0", "id": self.next, "method": "tools/list", "params": {}});
        self.post(gw, token, &body).await.status().as_u16()
    }

    /// The texts of a tool call's result.
    async fn call(&mut self, gw: &Gateway, token: &str, tool: &str) -> Vec<String> {
        let answer = self
            .request(
                gw,
                token,
                "tools/call",
                json!({"name": tool, "arguments": {}}),
            )
            .await;
        texts(&answer["result"])
    }
}

#[tokio::test]
async fn a_session_moves_between_replicas_with_its_owner_level_and_subscriptions() {
    let test = "a_session_moves_between_replicas_with_its_owner_level_and_subscriptions";
    let Some((postgres, redis_url)) = backing_services(test) else {
        return;
    };
    let cluster = Cluster::start(&postgres, &redis_url, "replica-raw").await;
    let [one, two, three] = &cluster.replicas[..] else {
        unreachable!()
    };
    let admin = one.token.clone();
    let bob = one.new_user(None, "bob", &["user"]).await.1;

    // Opened on replica 1; set up and used on replicas 2 and 3.
    let mut s = RawSession::open(one, &admin).await;
    let r = s
        .post(
            two,
            &admin,
            &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        )
        .await;
    assert_eq!(r.status(), 202, "{}", cluster.logs());
    let listed = s.request(three, &admin, "tools/list", json!({})).await;
    assert!(
        common::tool_names(&listed).contains(&"fx__echo".to_owned()),
        "{listed}"
    );

    // Another principal presenting the id is refused on every replica:
    // the one that opened it, one that rebuilt it, one that never saw it
    // before this request.
    let mut t = RawSession::open(one, &admin).await;
    for gw in [one, two, three] {
        assert_eq!(s.list_status(gw, &bob).await, 404, "replica {}", gw.port);
    }
    assert_eq!(
        t.list_status(three, &bob).await,
        404,
        "a session replica 3 never held"
    );
    // Nor is it a session of another endpoint of the same replicas.
    for gw in [one, two] {
        let r = client_with(&admin)
            .post(gw.url("/mcp/discovery"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &s.id)
            .header("mcp-protocol-version", "2025-11-25")
            .json(&json!({"jsonrpc": "2.0", "id": 9, "method": "tools/list", "params": {}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "/mcp/discovery of replica {}", gw.port);
    }
    // ... and its owner still has it everywhere.
    for gw in [one, two, three] {
        assert_eq!(s.list_status(gw, &admin).await, 200, "replica {}", gw.port);
    }
    assert_eq!(t.list_status(two, &admin).await, 200);

    // The log level set through replica 2 is the session's on replica 3
    // (which already holds the session) and on replica 1: each asks its
    // upstream for it before the session's call.
    assert_eq!(s.call(three, &admin, "fx__log_level").await, ["<unset>"]);
    let set = s
        .request(two, &admin, "logging/setLevel", json!({"level": "debug"}))
        .await;
    assert!(set["result"].is_object(), "{set}");
    for gw in [three, one] {
        assert_eq!(
            s.call(gw, &admin, "fx__log_level").await,
            ["debug"],
            "replica {}\n{}",
            gw.port,
            cluster.logs()
        );
    }

    // A subscription made through replica 1 is renewed by replica 2 when
    // it rebuilds a session it never held.
    const README: &str = "fixture://readme";
    let mut u = RawSession::open(three, &admin).await;
    let subscribed = u
        .request(one, &admin, "resources/subscribe", json!({"uri": README}))
        .await;
    assert!(subscribed["result"].is_object(), "{subscribed}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = u.call(two, &admin, "fx__subscriptions").await;
        let uris: Vec<String> = serde_json::from_str(&now[0]).unwrap();
        if uris == [README] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica 2 never subscribed to {README}: {uris:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A DELETE through replica 3 ends the session on every replica,
    // including those that hold it.
    let r = client_with(&admin)
        .delete(three.mcp_url())
        .header("mcp-session-id", &s.id)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "DELETE answered {}", r.status());
    for gw in [one, two, three] {
        assert_eq!(s.list_status(gw, &admin).await, 404, "replica {}", gw.port);
    }
    // The other sessions live on.
    assert_eq!(t.list_status(one, &admin).await, 200);
}

/// One 2026-07-28 request to a replica; its JSON-RPC answer.
async fn modern(gw: &Gateway, token: &str, method: &str, mut params: Value) -> Value {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}},
    });
    let client = client_with(token);
    let request = common::modern_request(&client, &gw.mcp_url(), 1, method, &params);
    response_of(request.send().await.expect("MCP request")).await
}

#[tokio::test]
async fn a_multi_round_trip_retry_is_accepted_by_another_replica() {
    let test = "a_multi_round_trip_retry_is_accepted_by_another_replica";
    let Some((postgres, redis_url)) = backing_services(test) else {
        return;
    };
    let cluster = Cluster::start(&postgres, &redis_url, "replica-mrtr").await;
    let [one, two, _] = &cluster.replicas[..] else {
        unreachable!()
    };
    let tool = "cf__test_input_required_result_request_state";
    let first = modern(
        one,
        &one.token,
        "tools/call",
        json!({"name": tool, "arguments": {}}),
    )
    .await;
    assert_eq!(first["result"]["resultType"], "input_required", "{first}");
    let sealed = first["result"]["requestState"]
        .as_str()
        .expect("requestState")
        .to_owned();
    // The retry reaches replica 2, whose own connection to the upstream
    // gets the upstream's state back, unsealed.
    let answer = modern(
        two,
        &one.token,
        "tools/call",
        json!({"name": tool, "arguments": {}, "requestState": sealed,
               "inputResponses": {"confirm": {"action": "accept", "content": {"ok": true}}}}),
    )
    .await;
    assert_eq!(answer["result"]["resultType"], "complete", "{answer}");
    assert_eq!(
        answer["result"]["content"][0]["text"],
        "state-ok",
        "{answer}\n{}",
        cluster.logs()
    );
}
