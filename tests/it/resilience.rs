//! Faults against real processes: crashing and flapping upstreams, retries,
//! rate limits and graceful shutdown, with assertions on what callers saw.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{self, Gateway, Options, fixture_stdio};

fn text(body: &Value) -> String {
    body["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_crashing_upstream_fails_its_calls_fast_and_comes_back() {
    let m = common::marker("fx-crash");
    let mut gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {"fx": fixture_stdio(&m)}}))
            .env("META_MCP_CALL_TIMEOUT_SECS", "30")
            .ready(),
    )
    .await;
    gw.wait_server("fx", "ready").await;
    let pid = common::processes_with(&m)[0].0;
    let started = Instant::now();
    let in_flight = gw.execute("fx__slow", json!({"ms": 20_000}));
    let killer = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        unsafe { libc::kill(pid, libc::SIGKILL) };
    };
    let ((code, body), ()) = tokio::join!(in_flight, killer);
    assert_eq!(code, 502, "{body}");
    assert_eq!(body["type"], "urn:metamcp:problem:upstream-connection-lost");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failed fast, not at the 30 s timeout"
    );
    // The supervisor restarts it; the next call succeeds.
    gw.wait_server("fx", "ready").await;
    let (code, body) = gw.execute("fx__echo", json!({"message": "back"})).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(text(&body), "back");
    let new_pid = common::processes_with(&m)[0].0;
    assert_ne!(new_pid, pid);
    assert!(gw.stop().unwrap().success());
    let left = common::wait_no_processes(&m, Duration::from_secs(10)).await;
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn the_breaker_opens_answers_fast_half_opens_and_closes() {
    let m = common::marker("fx-flap");
    let mut spec = fixture_stdio(&m);
    spec["circuit_breaker"] =
        json!({"failure_threshold": 3, "recovery_timeout": 1.0, "monitor_interval": 30});
    let gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {"fx": spec}}))
            .ready(),
    )
    .await;
    gw.wait_server("fx", "ready").await;
    for _ in 0..3 {
        let (code, _) = gw.execute("fx__protocol_error", json!({})).await;
        assert_eq!(code, 502);
    }
    let (_, count_before) = gw.get("/api/v1/servers/fx").await;
    assert_eq!(count_before["breaker"], "open");
    let started = Instant::now();
    let (code, body) = gw.execute("fx__echo", json!({"message": "x"})).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["type"], "urn:metamcp:problem:circuit-open");
    assert_eq!(body["retry_after"], 1);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "answered at once"
    );
    let (_, health) = gw.get("/api/v1/health/detailed").await;
    assert_eq!(health["upstreams"][0]["breaker"], "open");

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, status) = gw.get("/api/v1/servers/fx").await;
    assert_eq!(status["breaker"], "half_open");
    let (code, body) = gw.execute("fx__echo", json!({"message": "trial"})).await;
    assert_eq!(code, 200, "the trial call goes through: {body}");
    let (_, status) = gw.get("/api/v1/servers/fx").await;
    assert_eq!(status["breaker"], "closed");
    // Tool-level errors and rejected arguments do not count as failures.
    for _ in 0..4 {
        gw.execute("fx__fail", json!({})).await;
    }
    assert_eq!(gw.get("/api/v1/servers/fx").await.1["breaker"], "closed");
}

#[tokio::test]
async fn only_idempotent_calls_are_retried() {
    let (a, b) = (common::marker("fx-idem"), common::marker("fx-once"));
    let gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {"a": fixture_stdio(&a), "b": fixture_stdio(&b)}}))
            .env("META_MCP_RETRY_BASE_DELAY_MS", "20")
            .ready(),
    )
    .await;
    gw.wait_server("a", "ready").await;
    gw.wait_server("b", "ready").await;
    let (code, body) = gw
        .send("PUT", "/api/v1/tools/a__flaky", json!({"idempotent": true}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["idempotent"], true);

    let (code, body) = gw
        .execute("a__flaky", json!({"key": "k", "failures": 2}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["attempts"], 3);
    assert_eq!(text(&body), "ok after 3 attempts");

    let (code, body) = gw
        .execute("b__flaky", json!({"key": "k", "failures": 2}))
        .await;
    assert_eq!(code, 502, "not idempotent: the failure is returned: {body}");
    // The upstream saw exactly one attempt: the next call is its second.
    let (code, body) = gw
        .execute("b__flaky", json!({"key": "k", "failures": 1}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(text(&body), "ok after 2 attempts");
    assert_eq!(body["attempts"], 1);
}

#[tokio::test]
async fn a_burst_over_the_rate_limit_gets_exactly_the_excess_refused() {
    let m = common::marker("fx-rate");
    let gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {"fx": fixture_stdio(&m)}}))
            .env("META_MCP_RATE_LIMIT_TOOL", "5/minute")
            .ready(),
    )
    .await;
    gw.wait_server("fx", "ready").await;
    let client = gw.client();
    let calls = (0..8).map(|i| {
        client
            .post(gw.url("/api/v1/tools/fx__echo/execute"))
            .json(&json!({"arguments": {"message": format!("m{i}")}}))
            .send()
    });
    let responses = futures::future::join_all(calls).await;
    let mut ok = 0;
    let mut waits = Vec::new();
    for r in responses {
        let r = r.unwrap();
        match r.status().as_u16() {
            200 => ok += 1,
            429 => {
                let wait: u64 = r.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["type"], "urn:metamcp:problem:rate-limited");
                assert_eq!(body["scope"], "tool");
                waits.push(wait);
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(ok, 5);
    assert_eq!(waits.len(), 3);
    // 5 per minute: the next slot opens 12 s after the burst.
    assert!(waits.iter().all(|w| (11..=12).contains(w)), "{waits:?}");
    // Another tool has its own budget.
    let (code, _) = gw.execute("fx__add", json!({"a": 1, "b": 1})).await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn sigterm_lets_calls_in_flight_finish_and_stops_cleanly() {
    let m = common::marker("fx-term");
    let mut gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {"fx": fixture_stdio(&m)}}))
            .env("META_MCP_SHUTDOWN_GRACE_SECS", "20")
            .ready(),
    )
    .await;
    gw.wait_server("fx", "ready").await;
    let client = gw.client();
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let request = client
                .post(gw.url("/api/v1/tools/fx__slow/execute"))
                .json(&json!({"arguments": {"ms": 1500 + i}}))
                .send();
            tokio::spawn(request)
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = gw.child.as_ref().unwrap().id() as i32;
    unsafe { libc::kill(pid, libc::SIGTERM) };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // New requests are refused while the calls drain.
    let late = gw
        .client()
        .get(gw.url("/api/v1/health/live"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(late.is_err(), "a new connection is not served: {late:?}");
    for call in calls {
        let r = call.await.unwrap().expect("the in-flight call completes");
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert!(text(&body).starts_with("slept"), "{body}");
    }
    let status = gw.stop().expect("exit status");
    assert!(status.success(), "{status:?}");
    let left = common::wait_no_processes(&m, Duration::from_secs(10)).await;
    assert!(left.is_empty(), "{left:?}");
}

/// A Redis server of the test's own, so the shared one is never touched.
fn start_redis(port: u16) -> common::Proc {
    let child = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("redis-server (Debian package redis-server) must be installed");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    common::Proc(child)
}

fn redis_keys(port: u16) -> u64 {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "dbsize"])
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[tokio::test]
async fn cacheable_results_are_cached_in_redis_with_a_memory_fallback() {
    if std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("redis-server must be installed in CI");
        }
        eprintln!("SKIPPED cacheable_results_are_cached_in_redis: redis-server is not installed");
        return;
    }
    let port = common::free_port();
    let mut redis = start_redis(port);
    let m = common::marker("fx-cache");
    let gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {"fx": fixture_stdio(&m)}}))
            .env("META_MCP_REDIS_URL", &format!("redis://127.0.0.1:{port}"))
            .ready(),
    )
    .await;
    gw.wait_server("fx", "ready").await;
    // Caching is for read-only tools only.
    let (code, body) = gw
        .send(
            "PUT",
            "/api/v1/tools/fx__count_calls",
            json!({"cache_ttl_secs": 60}),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    let (code, body) = gw
        .send(
            "PUT",
            "/api/v1/tools/fx__count_calls",
            json!({"cache_ttl_secs": 60, "read_only": true}),
        )
        .await;
    assert_eq!(code, 200, "{body}");

    let (_, first) = gw.execute("fx__count_calls", json!({})).await;
    let (_, second) = gw.execute("fx__count_calls", json!({})).await;
    assert_eq!(first["cached"], false);
    assert_eq!(second["cached"], true, "{second}");
    assert_eq!(text(&first), text(&second), "the upstream was reached once");
    assert!(redis_keys(port) >= 1, "stored in Redis");
    let (_, health) = gw.get("/api/v1/health/detailed").await;
    assert_eq!(health["cache"]["backend"], "redis", "{health}");
    // Other tools are not cached.
    let (_, echo) = gw.execute("fx__echo", json!({"message": "x"})).await;
    assert_eq!(echo["cached"], false);
    let (_, echo) = gw.execute("fx__echo", json!({"message": "x"})).await;
    assert_eq!(echo["cached"], false);
    // A catalog change invalidates.
    let (code, _) = gw
        .send("PUT", "/api/v1/tools/fx__echo", json!({"category": "text"}))
        .await;
    assert_eq!(code, 200);
    let (_, third) = gw.execute("fx__count_calls", json!({})).await;
    assert_eq!(third["cached"], false, "{third}");
    assert_ne!(text(&third), text(&first));

    // Redis goes away: the gateway keeps serving, caching in memory.
    drop(redis);
    let (code, a) = gw.execute("fx__count_calls", json!({})).await;
    assert_eq!(code, 200, "{a}");
    let (_, b) = gw.execute("fx__count_calls", json!({})).await;
    assert_eq!(b["cached"], true, "served from memory: {b}");
    let (_, health) = gw.get("/api/v1/health/detailed").await;
    assert_eq!(health["cache"]["redis"], "down", "{health}");
    assert!(gw.log_text().contains("Redis is unreachable"));

    // Redis is back: used again.
    redis = start_redis(port);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        gw.execute("fx__count_calls", json!({"probe": true})).await;
        if gw.get("/api/v1/health/detailed").await.1["cache"]["redis"] == "up" {
            break;
        }
        assert!(Instant::now() < deadline, "Redis was not used again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, fresh) = gw.execute("fx__count_calls", json!({"k": 1})).await;
    assert_eq!(fresh["cached"], false);
    assert!(redis_keys(port) >= 1, "written to Redis again");
    drop(redis);
}

#[tokio::test]
async fn progress_extends_the_timeout_only_where_configured() {
    let (a, b) = (common::marker("fx-ext"), common::marker("fx-noext"));
    let mut extending = fixture_stdio(&a);
    extending["extend_timeout_on_progress"] = json!(true);
    extending["max_call_secs"] = json!(10);
    let gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {"ext": extending, "plain": fixture_stdio(&b)}}))
            .env("META_MCP_CALL_TIMEOUT_SECS", "1")
            .ready(),
    )
    .await;
    gw.wait_server("ext", "ready").await;
    gw.wait_server("plain", "ready").await;
    // 5 steps 400 ms apart: 2 s in all, never 1 s without progress.
    let args = json!({"steps": 5, "delay_ms": 400});
    let (code, body) = gw.execute("ext__progress", args.clone()).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(text(&body), "done 5 steps");
    let (code, body) = gw.execute("plain__progress", args).await;
    assert_eq!(code, 504, "{body}");
    // The cap still holds: a call that never reports progress times out.
    let (code, body) = gw.execute("ext__slow", json!({"ms": 3000})).await;
    assert_eq!(code, 504, "{body}");
}

#[tokio::test]
async fn a_server_limited_to_one_call_at_a_time_gets_one() {
    let (a, b) = (common::marker("fx-one"), common::marker("fx-many"));
    let mut one = fixture_stdio(&a);
    one["max_concurrency"] = json!(1);
    let gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {"one": one, "many": fixture_stdio(&b)}}))
            .env("META_MCP_CALL_TIMEOUT_SECS", "1.5")
            .ready(),
    )
    .await;
    gw.wait_server("one", "ready").await;
    gw.wait_server("many", "ready").await;
    // Two 1 s calls at once: side by side they both fit the 1.5 s timeout;
    // one after the other, the second cannot.
    let args = json!({"ms": 1000});
    let (x, y) = tokio::join!(
        gw.execute("many__slow", args.clone()),
        gw.execute("many__slow", args.clone())
    );
    assert_eq!((x.0, y.0), (200, 200), "without a limit both run at once");
    let (x, y) = tokio::join!(
        gw.execute("one__slow", args.clone()),
        gw.execute("one__slow", args)
    );
    let mut codes = [x.0, y.0];
    codes.sort();
    assert_eq!(
        codes,
        [200, 504],
        "with max_concurrency 1 the second waits: {x:?} {y:?}"
    );
}

#[tokio::test]
async fn tool_lists_and_search_answers_are_cached_until_the_catalog_changes() {
    let gw = Gateway::start(Options::default()).await;
    let (code, _) = gw
        .post("/api/v1/tools", json!({"name": "alpha", "description": "first tool", "endpoint": "http://127.0.0.1:9/a"}))
        .await;
    assert_eq!(code, 201);
    let first = common::mcp_request(&gw.mcp_url(), "tools/list", json!({})).await;
    let again = common::mcp_request(&gw.mcp_url(), "tools/list", json!({})).await;
    assert_eq!(first["result"]["tools"], again["result"]["tools"]);
    let (_, s1) = gw.get("/api/v1/tools/search?q=tool").await;
    let (_, s2) = gw.get("/api/v1/tools/search?q=tool").await;
    assert_eq!(s1, s2);
    let metrics = gw
        .client()
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("metamcp_cache_hits_total{cache=\"tool_lists\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("metamcp_cache_hits_total{cache=\"search\"} 1"),
        "{metrics}"
    );
    // A change shows at once.
    let (code, _) = gw
        .post("/api/v1/tools", json!({"name": "beta", "description": "second tool", "endpoint": "http://127.0.0.1:9/b"}))
        .await;
    let (code2, _) = gw
        .post(
            "/api/v1/tools",
            json!({"name": "gamma", "description": "catalog only tool"}),
        )
        .await;
    assert_eq!(code2, 201);
    assert_eq!(code, 201);
    let listed = common::mcp_request(&gw.mcp_url(), "tools/list", json!({})).await;
    assert_eq!(common::tool_names(&listed), ["alpha", "beta"]);
    let (_, s3) = gw.get("/api/v1/tools/search?q=tool").await;
    assert_eq!(
        s3["total"], 3,
        "REST search covers catalog entries too: {s3}"
    );
}
