//! Several replicas, one gateway: metamcp processes on different ports
//! sharing one fresh PostgreSQL database and one Redis (a prefix of their
//! own). What a user does on one replica is seen on every other: servers,
//! tool metadata, logouts, revoked keys, disabled users, rate limits and
//! login throttling; a replica that dies disturbs nobody else; replicas
//! starting together on an empty database migrate it once; with Redis
//! down nothing fails open.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;

use crate::common::{
    self, ADMIN_PASSWORD, Gateway, Options, Proc, fixture_http,
    replicas::{Deployment, Replicas, wait_cluster_status},
};

/// Registers the fixture (over HTTP) as server `fx` through `node`.
async fn register_fixture(node: &Gateway, prefix: &str) -> Proc {
    let (fixture, url) = fixture_http(&common::marker(prefix));
    let (code, body) = node
        .post("/api/v1/servers", json!({"name": "fx", "url": url}))
        .await;
    assert_eq!(code, 201, "{body}");
    fixture
}

/// Opens a 2026-07-28 `subscriptions/listen` stream for tool list changes
/// on `node`, after its acknowledgement.
async fn listen_for_tool_changes(
    node: &Gateway,
) -> impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> {
    let response = node
        .client()
        .post(node.mcp_url())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "subscriptions/listen")
        .json(
            &json!({"jsonrpc": "2.0", "id": 7, "method": "subscriptions/listen", "params": {
            "notifications": {"toolsListChanged": true},
            "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                      "io.modelcontextprotocol/clientCapabilities": {}}}}),
        )
        .send()
        .await
        .expect("subscriptions/listen");
    assert_eq!(response.status(), 200);
    let mut stream = Box::pin(response.bytes_stream());
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !seen.contains("notifications/subscriptions/acknowledged") {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("acknowledgement of subscriptions/listen")
            .expect("stream open")
            .expect("chunk");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    stream
}

/// The status of `GET /api/v1/auth/me` with `token`.
async fn me(node: &Gateway, token: &str) -> u16 {
    node.send_as(Some(token), "GET", "/api/v1/auth/me", None)
        .await
        .0
}

/// A server and its tool changes made through one replica reach the others
/// through pub/sub (their MCP clients hear `list_changed`), and so do
/// logouts, revoked API keys and disabled users, at once.
#[tokio::test]
async fn changes_on_one_replica_reach_every_other() {
    let Some(r) = Replicas::start(
        "changes_on_one_replica_reach_every_other",
        3,
        Options::default(),
    )
    .await
    else {
        return;
    };
    r.wait_in_sync().await;
    let mut listen = listen_for_tool_changes(r.node(1)).await;

    // Register on 1 → replica 2 lists and calls the tools.
    let _fixture = register_fixture(r.node(0), "fx-replicas").await;
    let mut heard = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !heard.contains("notifications/tools/list_changed") {
        let chunk = tokio::time::timeout_at(deadline, listen.next())
            .await
            .expect("list_changed on replica 2 after a server was registered on replica 1")
            .expect("stream open")
            .expect("chunk");
        heard.push_str(&String::from_utf8_lossy(&chunk));
    }
    r.node(1).wait_tool("fx__echo", true).await;
    let listed = common::mcp_request(&r.node(1).mcp_url(), "tools/list", json!({})).await;
    assert!(
        common::tool_names(&listed).contains(&"fx__echo".to_owned()),
        "{listed}"
    );
    let called = common::mcp_request(
        &r.node(1).mcp_url(),
        "tools/call",
        json!({"name": "fx__echo", "arguments": {"message": "through replica 2"}}),
    )
    .await;
    assert_eq!(
        common::texts(&called["result"]),
        ["through replica 2"],
        "{called}"
    );
    // The third replica runs its own connection to the server.
    r.node(2).wait_server("fx", "ready").await;
    let (code, body) = r.node(2).execute("fx__echo", json!({"message": "3"})).await;
    assert_eq!(code, 200, "{body}");

    // Tool metadata changed on 1 → seen on 3.
    let (code, body) = r
        .node(0)
        .send(
            "PUT",
            "/api/v1/tools/fx__echo",
            json!({"description": "echo, as the operator describes it"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, tool) = r.node(2).get("/api/v1/tools/fx__echo").await;
        if tool["description"] == "echo, as the operator describes it" {
            break;
        }
        assert!(Instant::now() < deadline, "overlay not seen on 3: {tool}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Removed on 1 → gone on 3.
    let (code, _) = r
        .node(0)
        .send_as(Some(&r.node(0).token), "DELETE", "/api/v1/servers/fx", None)
        .await;
    assert_eq!(code, 204);
    r.node(2).wait_tool("fx__echo", false).await;
    let (code, _) = r.node(2).get("/api/v1/servers/fx").await;
    assert_eq!(code, 404);

    // Log out on 2 → the token is refused on 3 as soon as the logout returns.
    let (code, login) = r.node(1).login("admin", ADMIN_PASSWORD).await;
    assert_eq!(code, 200, "{login}");
    let access = login["access_token"].as_str().unwrap().to_owned();
    assert_eq!(me(r.node(2), &access).await, 200, "cached on 3 before");
    let (code, body) = r
        .node(1)
        .send_as(
            Some(&access),
            "POST",
            "/api/v1/auth/logout",
            Some(json!({})),
        )
        .await;
    assert_eq!(code, 204, "{body}");
    assert_eq!(me(r.node(2), &access).await, 401, "logged out on 2");
    assert_eq!(me(r.node(0), &access).await, 401, "logged out on 2");

    // An API key revoked on 1 → refused on 2 at once (keys are made by
    // users logged in, not by other keys).
    let (_, login) = r.node(0).login("admin", ADMIN_PASSWORD).await;
    let (code, key) = r
        .node(0)
        .send_as(
            login["access_token"].as_str(),
            "POST",
            "/api/v1/auth/keys",
            Some(json!({"name": "revoked soon"})),
        )
        .await;
    assert_eq!(code, 201, "{key}");
    let secret = key["key"].as_str().unwrap().to_owned();
    assert_eq!(me(r.node(1), &secret).await, 200);
    let (code, _) = r
        .node(0)
        .send_as(
            Some(&r.node(0).token),
            "DELETE",
            &format!("/api/v1/auth/keys/{}", key["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(code, 204);
    assert_eq!(me(r.node(1), &secret).await, 401, "revoked key on 2");

    // A user disabled on 1 → refused on 3 at once.
    let (code, user) = r
        .node(0)
        .post(
            "/api/v1/users",
            json!({"username": "carol", "password": "carol-password-123", "roles": ["user"]}),
        )
        .await;
    assert_eq!(code, 201, "{user}");
    let (code, login) = r.node(1).login("carol", "carol-password-123").await;
    assert_eq!(code, 200, "{login}");
    let carol = login["access_token"].as_str().unwrap().to_owned();
    assert_eq!(me(r.node(2), &carol).await, 200);
    let (code, body) = r
        .node(0)
        .send(
            "PATCH",
            &format!("/api/v1/users/{}", user["id"].as_str().unwrap()),
            json!({"disabled": true}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(me(r.node(2), &carol).await, 401, "disabled user on 3");

    // Each security change above waited for the others' acknowledgements
    // and got them all.
    for node in &r.nodes {
        assert!(
            !node.log_text().contains("not every replica acknowledged"),
            "{}",
            node.log_text()
        );
    }
}

/// A rate limit of N per minute holds for the three replicas together, and
/// so does login throttling.
#[tokio::test]
async fn limits_hold_for_all_replicas_together() {
    const N: usize = 5;
    let Some(r) = Replicas::start(
        "limits_hold_for_all_replicas_together",
        3,
        Options::default().env("META_MCP_RATE_LIMIT_PRINCIPAL", &format!("{N}/minute")),
    )
    .await
    else {
        return;
    };
    r.wait_in_sync().await;
    let _fixture = register_fixture(r.node(0), "fx-limits").await;
    for node in &r.nodes {
        node.wait_server("fx", "ready").await;
        node.wait_tool("fx__echo", true).await;
    }
    let mut codes = Vec::new();
    for i in 0..N + 4 {
        let (code, body) = r
            .node(i % 3)
            .execute("fx__echo", json!({"message": i.to_string()}))
            .await;
        assert!(code == 200 || code == 429, "{code} {body}");
        codes.push(code);
    }
    assert_eq!(
        codes.iter().filter(|c| **c == 200).count(),
        N,
        "exactly {N} of {} calls spread over 3 replicas succeed: {codes:?}",
        N + 4
    );
    assert!(
        codes[N..].iter().all(|c| *c == 429),
        "the first {N} pass, the rest are refused: {codes:?}"
    );

    // Five failed logins of one user spread over the replicas: the sixth
    // attempt is throttled wherever it lands, right password or not.
    for i in 0..5 {
        let (code, _) = r.node(i % 3).login("admin", "not-the-password").await;
        assert_eq!(code, 401);
    }
    let (code, body) = r.node(2).login("admin", ADMIN_PASSWORD).await;
    assert_eq!(code, 429, "{body}");
}

/// Killing one replica while clients call through the other two: those
/// clients see no error.
#[tokio::test]
async fn a_replica_dying_under_load_disturbs_no_other() {
    let Some(mut r) = Replicas::start(
        "a_replica_dying_under_load_disturbs_no_other",
        3,
        Options::default(),
    )
    .await
    else {
        return;
    };
    r.wait_in_sync().await;
    let _fixture = register_fixture(r.node(0), "fx-load").await;
    for node in &r.nodes {
        node.wait_server("fx", "ready").await;
    }
    let targets: Vec<(String, String)> = r.nodes[1..]
        .iter()
        .map(|n| (n.url("/api/v1/tools/fx__echo/execute"), n.token.clone()))
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..8 {
        let (url, token) = targets[w % targets.len()].clone();
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let client = common::client_with(&token);
            let (mut ok, mut errors) = (0u32, Vec::new());
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                i += 1;
                let r = client
                    .post(&url)
                    .json(&json!({"arguments": {"message": format!("{w}-{i}")}}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => errors.push(format!(
                        "{} {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            (ok, errors)
        }));
    }
    // Let the load run, kill replica 1 outright, keep the load running.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut victim = r.nodes[0].child.take().expect("replica 1 runs");
    victim.kill().expect("kill replica 1");
    victim.wait().expect("reap replica 1");
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Release);
    let mut total = 0;
    for worker in workers {
        let (ok, errors) = worker.await.unwrap();
        assert!(
            errors.is_empty(),
            "clients of 2 and 3 saw errors: {errors:?}"
        );
        total += ok;
    }
    assert!(total > 16, "the load ran: {total} calls");
    // The survivors still take changes from each other.
    let (code, body) = r
        .node(1)
        .post(
            "/api/v1/tools",
            json!({"name": "after_the_crash", "description": "x"}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    r.node(2).wait_tool("after_the_crash", true).await;
}

/// Two replicas starting at the same moment on an empty database both come
/// up, with each migration applied once; `metamcp migrate` then finds
/// nothing to do.
#[tokio::test]
async fn replicas_starting_together_migrate_an_empty_database_once() {
    let Some(r) = Replicas::start(
        "replicas_starting_together_migrate_an_empty_database_once",
        2,
        Options::default(),
    )
    .await
    else {
        return;
    };
    for node in &r.nodes {
        let (code, _) = node.get("/api/v1/auth/me").await;
        assert_eq!(code, 200);
    }
    let rows = r
        .deployment
        .query_strings(
            "SELECT version, COUNT(*) FROM _sqlx_migrations WHERE success GROUP BY version ORDER BY version",
        )
        .await;
    assert!(rows.len() >= 4, "{rows:?}");
    assert!(rows.iter().all(|row| row[1] == "1"), "{rows:?}");
    let admins = r
        .deployment
        .query_strings("SELECT COUNT(*) FROM users WHERE username = 'admin'")
        .await;
    assert_eq!(admins, [["1"]], "one admin, created by one of them");

    let output = migrate(&r.deployment);
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("{} migrations applied", rows.len())),
        "{stdout}"
    );
}

fn migrate(deployment: &Deployment) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_metamcp"));
    cmd.arg("migrate");
    for (k, _) in std::env::vars() {
        if k.starts_with("META_MCP_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(deployment.env());
    cmd.output().expect("run metamcp migrate")
}

/// `metamcp migrate` on an empty database creates the schema and exits; a
/// bad pool size is refused with the setting's name.
#[tokio::test]
async fn migrate_applies_the_schema_and_exits() {
    let Some(deployment) = Deployment::fresh("migrate_applies_the_schema_and_exits").await else {
        return;
    };
    let output = migrate(&deployment);
    assert!(output.status.success(), "{output:?}");
    let tables = deployment
        .query_strings("SELECT COUNT(*) FROM information_schema.tables WHERE table_name IN ('servers', 'users', 'revoked_tokens')")
        .await;
    assert_eq!(tables, [["3"]]);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_metamcp"));
    let output = cmd
        .arg("migrate")
        .envs(deployment.env())
        .env("META_MCP_DATABASE_POOL_SIZE", "0")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("META_MCP_DATABASE_POOL_SIZE"),
        "{output:?}"
    );
}

/// A Redis of the test's own, which it can stop and start again.
fn start_redis(port: u16) -> Proc {
    let child = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("redis-server (Debian package redis-server) must be installed");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    Proc(child)
}

/// With Redis down nothing fails open: a logout on one replica is refused
/// on the other (it asks the database), rate limits fall back to each
/// replica's own with one warning; when Redis is back the replicas hear
/// each other again.
#[tokio::test]
async fn with_redis_down_revocations_fail_closed_and_limits_fall_back() {
    const N: usize = 3;
    let Some(deployment) =
        Deployment::fresh("with_redis_down_revocations_fail_closed_and_limits_fall_back").await
    else {
        return;
    };
    let port = common::free_port();
    let redis = start_redis(port);
    let nodes = Replicas::start_on(
        &deployment,
        2,
        Options::default()
            .env("META_MCP_REDIS_URL", &format!("redis://127.0.0.1:{port}"))
            .env("META_MCP_RATE_LIMIT_PRINCIPAL", &format!("{N}/minute")),
    )
    .await;
    let r = Replicas { nodes, deployment };
    r.wait_in_sync().await;
    let _fixture = register_fixture(r.node(0), "fx-redis-down").await;
    for node in &r.nodes {
        node.wait_server("fx", "ready").await;
    }
    let (code, login) = r.node(0).login("admin", ADMIN_PASSWORD).await;
    assert_eq!(code, 200);
    let access = login["access_token"].as_str().unwrap().to_owned();
    assert_eq!(me(r.node(1), &access).await, 200);

    drop(redis);
    for node in &r.nodes {
        wait_cluster_status(node, "disconnected").await;
    }
    let (code, _) = r
        .node(0)
        .send_as(
            Some(&access),
            "POST",
            "/api/v1/auth/logout",
            Some(json!({})),
        )
        .await;
    assert_eq!(code, 204);
    assert_eq!(me(r.node(1), &access).await, 401, "refused without Redis");

    // Each replica limits on its own: N each.
    let mut ok = 0;
    for i in 0..2 * N + 2 {
        let (code, body) = r
            .node(i % 2)
            .execute("fx__echo", json!({"message": "x"}))
            .await;
        assert!(code == 200 || code == 429, "{code} {body}");
        ok += usize::from(code == 200);
    }
    assert_eq!(ok, 2 * N, "per-replica limits while Redis is down");
    for node in &r.nodes {
        let warnings = node
            .log_text()
            .lines()
            .filter(|l| l.contains("Redis is unreachable: rate limits per replica"))
            .count();
        assert_eq!(warnings, 1, "one warning per outage\n{}", node.log_text());
        let (_, metrics) = node.get_text("/metrics").await;
        assert!(
            metrics.contains("metamcp_shared_state_fallbacks_total{what=\"rate_limit\"}"),
            "{metrics}"
        );
    }

    // Redis is back: the replicas subscribe again and hear each other.
    let _redis = start_redis(port);
    r.wait_in_sync().await;
    let (code, body) = r
        .node(1)
        .post(
            "/api/v1/tools",
            json!({"name": "after_redis", "description": "x"}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    r.node(0).wait_tool("after_redis", true).await;
}

impl Gateway {
    /// GET as text (for `/metrics`).
    async fn get_text(&self, path: &str) -> (u16, String) {
        let r = self.client().get(self.url(path)).send().await.expect("GET");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }
}

/// Waits until `node` shows tool `name` with `field` equal to `value`.
async fn wait_tool_field(node: &Gateway, name: &str, field: &str, value: serde_json::Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, body) = node.get(&format!("/api/v1/tools/{name}")).await;
        if code == 200 && body[field] == value {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}.{field} never became {value} on {}: {body}",
            node.base
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What one replica cached, another serves (the cache generation lives in
/// Redis, so a catalog change on any replica retires it everywhere), and a
/// `tools/list` page cursor issued by one replica opens on another.
#[tokio::test]
async fn results_and_list_cursors_are_shared_between_replicas() {
    let Some(r) = Replicas::start(
        "results_and_list_cursors_are_shared_between_replicas",
        2,
        Options::default().env("META_MCP_PAGE_SIZE", "3"),
    )
    .await
    else {
        return;
    };
    r.wait_in_sync().await;
    let _fixture = register_fixture(r.node(0), "fx-shared-cache").await;
    for node in &r.nodes {
        node.wait_server("fx", "ready").await;
        node.wait_tool("fx__count_calls", true).await;
    }
    let (code, body) = r
        .node(0)
        .send(
            "PUT",
            "/api/v1/tools/fx__count_calls",
            json!({"cache_ttl_secs": 60, "read_only": true}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    wait_tool_field(r.node(1), "fx__count_calls", "cache_ttl_secs", json!(60)).await;

    let text = |v: &serde_json::Value| common::texts(&v["result"]).join("");
    let (_, first) = r.node(0).execute("fx__count_calls", json!({})).await;
    assert_eq!(first["cached"], false, "{first}");
    let (_, second) = r.node(1).execute("fx__count_calls", json!({})).await;
    assert_eq!(
        second["cached"], true,
        "replica 2 serves replica 1's result: {second}"
    );
    assert_eq!(text(&first), text(&second));

    // A catalog change made on replica 2 retires the entry on replica 1.
    let (code, _) = r
        .node(1)
        .send("PUT", "/api/v1/tools/fx__echo", json!({"category": "text"}))
        .await;
    assert_eq!(code, 200);
    wait_tool_field(r.node(0), "fx__echo", "category", json!("text")).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, third) = r.node(0).execute("fx__count_calls", json!({})).await;
        if third["cached"] == false {
            assert_ne!(text(&third), text(&first), "{third}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still cached after the change: {third}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Pages of one list, each from another replica.
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0.. {
        let node = r.node(page % 2);
        let params = match &cursor {
            Some(c) => json!({"cursor": c}),
            None => json!({}),
        };
        let listed = common::mcp_request(&node.mcp_url(), "tools/list", params).await;
        assert!(
            listed["error"].is_null(),
            "page {page} on {}: {listed}",
            node.base
        );
        names.extend(common::tool_names(&listed));
        match listed["result"]["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert!(names.len() > 3, "more than one page: {names:?}");
    let unique: std::collections::BTreeSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "no tool twice: {names:?}");
    assert!(names.contains(&"fx__echo".to_owned()), "{names:?}");
}
