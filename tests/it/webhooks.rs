//! Webhooks, black-box: a receiver inside the test (axum on a free port)
//! gets signed deliveries of real gateway events; failed deliveries are
//! retried and logged; a hanging receiver holds up neither tool calls nor
//! other receivers; metadata addresses are refused; tenants see only their
//! own webhooks and events.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::Bytes,
    http::{HeaderMap, StatusCode},
};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::common::{self, Gateway, Options, fixture_http, fixture_stdio, marker};

/// How a test receiver answers.
#[derive(Clone, Copy)]
enum Behavior {
    /// 500 for the first `n` requests, then 200.
    FailFirst(usize),
    /// Accepts the request and never answers.
    Hang,
}

#[derive(Clone, Debug)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }
}

/// A webhook receiver on loopback; stops when dropped.
struct Receiver {
    url: String,
    seen: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    async fn start(behavior: Behavior) -> Self {
        let seen: Arc<Mutex<Vec<Received>>> = Default::default();
        let count = Arc::new(AtomicUsize::new(0));
        let recorded = seen.clone();
        let handler = move |headers: HeaderMap, body: Bytes| {
            let seen = recorded.clone();
            let count = count.clone();
            async move {
                seen.lock().unwrap().push(Received { headers, body });
                let n = count.fetch_add(1, Ordering::SeqCst);
                match behavior {
                    Behavior::FailFirst(failures) if n < failures => {
                        StatusCode::INTERNAL_SERVER_ERROR
                    }
                    Behavior::FailFirst(_) => StatusCode::OK,
                    Behavior::Hang => std::future::pending().await,
                }
            }
        };
        let app = axum::Router::new().route("/hook", axum::routing::post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, seen, task }
    }

    fn received(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until a delivery satisfies `pred`; returns it.
    async fn wait_for(&self, what: &str, pred: impl Fn(&Received) -> bool) -> Received {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(r) = self.received().into_iter().find(|r| pred(r)) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no delivery {what} within 60s; got {:?}",
                self.received()
                    .iter()
                    .map(Received::json)
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn wait_event(&self, kind: &str, pred: impl Fn(&Value) -> bool) -> Received {
        self.wait_for(kind, |r| {
            let body = r.json();
            body["type"] == kind && pred(&body)
        })
        .await
    }
}

/// Checks a delivery's signature the way a receiver would, independently
/// of the gateway's code: HMAC-SHA256 of `"<t>.<body>"` under the secret,
/// `t` within five minutes.
fn signature_ok(secret: &str, r: &Received) -> bool {
    let header = r.header("x-metamcp-signature");
    let mut t = None;
    let mut tags = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<u64>().ok(),
            Some(("v1", v)) => tags.push(v.to_owned()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if now.abs_diff(t) > 300 {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&r.body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    tags.contains(&expected)
}

/// Registers a webhook as the harness's admin; returns (id, secret).
async fn subscribe(gw: &Gateway, url: &str, events: &[&str]) -> (String, String) {
    subscribe_as(gw, &gw.token, url, events).await
}

async fn subscribe_as(gw: &Gateway, token: &str, url: &str, events: &[&str]) -> (String, String) {
    let (code, body) = gw
        .send_as(
            Some(token),
            "POST",
            "/api/v1/webhooks",
            Some(json!({"url": url, "events": events, "description": "test receiver"})),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let secret = body["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{body}");
    (body["id"].as_str().unwrap().to_owned(), secret)
}

/// Waits until the webhook's delivery log satisfies `pred`; returns it.
async fn wait_log(
    gw: &Gateway,
    id: &str,
    what: &str,
    pred: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, body) = gw.get(&format!("/api/v1/webhooks/{id}/deliveries")).await;
        assert_eq!(code, 200, "{body}");
        let items = body["deliveries"].as_array().cloned().unwrap_or_default();
        if pred(&items) {
            return items;
        }
        assert!(
            Instant::now() < deadline,
            "delivery log of {id} not {what} within 60s: {body:#}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn codes(delivery: &Value) -> Vec<Value> {
    delivery["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].clone())
        .collect()
}

#[tokio::test]
async fn an_upstream_going_down_is_delivered_signed() {
    let receiver = Receiver::start(Behavior::FailFirst(0)).await;
    let gw = Gateway::start(
        Options::default()
            // Probe often and give up on the first miss, so the stopped
            // fixture is noticed quickly.
            .env("META_MCP_HEALTH_INTERVAL_SECS", "0.3")
            .env("META_MCP_HEALTH_FAILURES", "1"),
    )
    .await;
    let (id, secret) = subscribe(&gw, &receiver.url, &["upstream.down", "upstream.up"]).await;
    let m = marker("fx-webhook-down");
    let (fixture, url) = fixture_http(&m);
    let (code, body) = gw
        .post("/api/v1/servers", json!({"name": "web", "url": url}))
        .await;
    assert_eq!(code, 201, "{body}");
    gw.wait_server("web", "ready").await;
    // A first connection is not news.
    assert!(receiver.received().is_empty());

    drop(fixture);
    gw.wait_server("web", "failed").await;
    let delivery = receiver
        .wait_event("upstream.down", |b| b["data"]["server"] == "web")
        .await;
    assert!(
        signature_ok(&secret, &delivery),
        "the signature verifies: {:?}",
        delivery.headers
    );
    let body = delivery.json();
    assert_eq!(body["tenant"], "default");
    assert!(body["id"].as_str().unwrap().starts_with("evt_"), "{body}");
    assert!(
        body["time"].is_string() && body["data"]["error"].is_string(),
        "{body}"
    );
    assert_eq!(delivery.header("x-metamcp-event"), "upstream.down");
    assert_eq!(delivery.header("x-metamcp-webhook-id"), id);
    assert_eq!(delivery.header("content-type"), "application/json");
    // Tampering with the body breaks the signature.
    let mut forged = delivery.clone();
    forged.body = Bytes::from(String::from_utf8_lossy(&delivery.body).replace("web", "wab"));
    assert!(!signature_ok(&secret, &forged));
    assert!(!signature_ok("whsec_other", &delivery));

    // The delivery log shows it, with the id the receiver got.
    let log = wait_log(&gw, &id, "showing the success", |items| {
        items
            .iter()
            .any(|d| d["event_type"] == "upstream.down" && d["status"] == "succeeded")
    })
    .await;
    let logged = log
        .iter()
        .find(|d| d["event_type"] == "upstream.down")
        .unwrap();
    assert_eq!(logged["id"], delivery.header("x-metamcp-delivery"));
    assert_eq!(logged["event_id"], body["id"]);
    assert_eq!(logged["payload"], body);
    assert_eq!(codes(logged), [json!(200)]);
}

#[tokio::test]
async fn failed_deliveries_are_retried_then_given_up_and_logged() {
    let flaky = Receiver::start(Behavior::FailFirst(2)).await;
    let broken = Receiver::start(Behavior::FailFirst(usize::MAX)).await;
    let gw = Gateway::start(
        Options::default()
            .env("META_MCP_WEBHOOK_MAX_ATTEMPTS", "3")
            .env("META_MCP_WEBHOOK_BASE_DELAY_MS", "20"),
    )
    .await;
    let (flaky_id, flaky_secret) = subscribe(&gw, &flaky.url, &["upstream.down"]).await;
    let (broken_id, _) = subscribe(&gw, &broken.url, &["upstream.down"]).await;
    for id in [&flaky_id, &broken_id] {
        let (code, body) = gw
            .post(&format!("/api/v1/webhooks/{id}/test"), json!({}))
            .await;
        assert_eq!(code, 202, "{body}");
        assert_eq!(body["type"], "webhook.test");
    }

    // 500, 500, 200: three attempts, the last one succeeds.
    let log = wait_log(&gw, &flaky_id, "succeeded", |items| {
        items.first().is_some_and(|d| d["status"] == "succeeded")
    })
    .await;
    assert_eq!(log.len(), 1);
    assert_eq!(codes(&log[0]), [json!(500), json!(500), json!(200)]);
    assert_eq!(log[0]["attempts"][0]["error"], "HTTP 500");
    assert!(log[0]["attempts"][2]["error"].is_null());
    let got = flaky.received();
    assert_eq!(got.len(), 3);
    for r in &got {
        // Each attempt is signed afresh and carries the same event.
        assert!(signature_ok(&flaky_secret, r));
        assert_eq!(r.json()["id"], log[0]["event_id"]);
        assert_eq!(
            r.header("x-metamcp-delivery"),
            log[0]["id"].as_str().unwrap()
        );
    }

    // Always 500: given up after the configured three attempts.
    let log = wait_log(&gw, &broken_id, "failed", |items| {
        items.first().is_some_and(|d| d["status"] == "failed")
    })
    .await;
    assert_eq!(codes(&log[0]), [json!(500), json!(500), json!(500)]);
    assert_eq!(broken.received().len(), 3);

    let text = gw
        .client()
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "metamcp_webhook_deliveries_total{outcome=\"succeeded\"} 1",
        "metamcp_webhook_deliveries_total{outcome=\"failed\"} 1",
        "metamcp_webhook_attempt_duration_seconds_count 6",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
}

#[tokio::test]
async fn a_hanging_receiver_delays_neither_tool_calls_nor_other_receivers() {
    let hanging = Receiver::start(Behavior::Hang).await;
    let healthy = Receiver::start(Behavior::FailFirst(0)).await;
    let m = marker("fx-webhook-hang");
    let gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {"fx": fixture_stdio(&m)}}))
            .env("META_MCP_WEBHOOK_TIMEOUT_SECS", "120")
            // The failing calls must not open the breaker.
            .env("META_MCP_BREAKER_FAILURE_THRESHOLD", "100")
            .ready(),
    )
    .await;
    gw.wait_server("fx", "ready").await;
    let (hung_id, _) = subscribe(&gw, &hanging.url, &["tool.call_failed"]).await;
    let (healthy_id, secret) = subscribe(&gw, &healthy.url, &["tool.call_failed"]).await;

    // Each failing call publishes an event for both receivers; the first
    // delivery to the hanging one never ends (within the test).
    const CALLS: usize = 5;
    for i in 0..CALLS {
        let started = Instant::now();
        let (code, body) = gw.execute("fx__protocol_error", json!({})).await;
        assert_eq!(code, 502, "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "call {i} took {:?}",
            started.elapsed()
        );
        if i == 0 {
            hanging
                .wait_for("reaching the hanging receiver", |_| true)
                .await;
        }
    }
    let (code, body) = gw
        .execute("fx__echo", json!({"message": "still fast"}))
        .await;
    assert_eq!(code, 200, "{body}");

    // The healthy receiver got every event meanwhile.
    let log = wait_log(&gw, &healthy_id, "all succeeded", |items| {
        items.len() == CALLS && items.iter().all(|d| d["status"] == "succeeded")
    })
    .await;
    assert_eq!(log.len(), CALLS);
    assert!(healthy.received().iter().all(|r| signature_ok(&secret, r)));
    assert_eq!(
        healthy.received()[0].json()["data"]["tool"],
        "fx__protocol_error"
    );

    // Every call has returned while the hanging webhook's deliveries are
    // still pending: the first in flight, the rest queued behind it.
    let log = wait_log(&gw, &hung_id, "holding every delivery", |items| {
        items.len() == CALLS
    })
    .await;
    assert!(
        log.iter()
            .all(|d| d["status"] == "pending" && d["attempts"] == json!([])),
        "{log:#?}"
    );
    assert_eq!(hanging.received().len(), 1, "one attempt in flight");
}

#[tokio::test]
async fn metadata_and_other_refused_urls_are_refused_at_registration() {
    let gw = Gateway::start(Options::default()).await;
    let refuse = |url: &'static str, kind: &'static str| {
        let gw = &gw;
        async move {
            let r = gw
                .client()
                .post(gw.url("/api/v1/webhooks"))
                .json(&json!({"url": url, "events": ["*"]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 422, "{url}");
            assert_eq!(
                r.headers()["content-type"].to_str().unwrap(),
                "application/problem+json",
                "{url}"
            );
            let body: Value = r.json().await.unwrap();
            assert_eq!(
                body["type"],
                format!("urn:metamcp:problem:{kind}"),
                "{url}: {body}"
            );
            assert_eq!(body["status"], 422);
            assert!(body["detail"].is_string() && body["title"].is_string());
            body
        }
    };
    let body = refuse(
        "http://169.254.169.254/latest/meta-data/",
        "webhook-url-refused",
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("169.254.169.254"),
        "{body}"
    );
    refuse("https://169.254.169.254/", "webhook-url-refused").await;
    refuse("https://[fd00:ec2::254]/", "webhook-url-refused").await;
    refuse("https://[::ffff:a9fe:a9fe]/", "webhook-url-refused").await;
    refuse("https://metadata.google.internal/", "webhook-url-refused").await;
    // Plain http beyond loopback (checked before any DNS lookup).
    refuse("http://hooks.example.com/x", "webhook-url-refused").await;
    refuse("ftp://hooks.example.com/x", "invalid-request").await;
    refuse("https://user:pw@hooks.example.com/x", "invalid-request").await;
    let (code, body) = gw
        .post(
            "/api/v1/webhooks",
            json!({"url": "http://127.0.0.1:9/x", "events": ["upstream.sideways"]}),
        )
        .await;
    assert_eq!(
        (code, body["type"].as_str()),
        (422, Some("urn:metamcp:problem:invalid-request"))
    );
    // Nothing was stored.
    let (_, list) = gw.get("/api/v1/webhooks").await;
    assert_eq!(list["total"], 0, "{list}");

    // A change of URL is checked too.
    let (id, _) = subscribe(&gw, "http://127.0.0.1:9/hook", &["*"]).await;
    let (code, body) = gw
        .send(
            "PATCH",
            &format!("/api/v1/webhooks/{id}"),
            json!({"url": "http://169.254.169.254/"}),
        )
        .await;
    assert_eq!(
        (code, body["type"].as_str()),
        (422, Some("urn:metamcp:problem:webhook-url-refused"))
    );
    let (_, hook) = gw.get(&format!("/api/v1/webhooks/{id}")).await;
    assert_eq!(hook["url"], "http://127.0.0.1:9/hook");
}

#[tokio::test]
async fn tenants_see_edit_and_hear_only_their_own_webhooks() {
    let gw = Gateway::start(Options::default()).await;
    let (code, body) = gw
        .post("/api/v1/tenants", json!({"id": "beta", "name": "Beta"}))
        .await;
    assert_eq!(code, 201, "{body}");
    let b_admin = gw.new_user(Some("beta"), "b-admin", &["admin"]).await.1;
    let a_user = gw.new_user(Some("default"), "a-user", &["user"]).await.1;
    let a_receiver = Receiver::start(Behavior::FailFirst(0)).await;
    let b_receiver = Receiver::start(Behavior::FailFirst(0)).await;
    let (a_id, _) = subscribe(&gw, &a_receiver.url, &["login.failed_repeatedly"]).await;
    let (b_id, _) = subscribe_as(&gw, &b_admin, &b_receiver.url, &["*"]).await;
    let (_, a_hook) = gw.get(&format!("/api/v1/webhooks/{a_id}")).await;

    // Beta's admin: A's webhook answers exactly like one that does not exist.
    let missing = "wh_00000000000000000000000000000000";
    for (method, tail, body) in [
        ("GET", "", None),
        (
            "PATCH",
            "",
            Some(json!({"enabled": false, "rotate_secret": true})),
        ),
        ("GET", "/deliveries", None),
        ("POST", "/test", Some(json!({}))),
        ("DELETE", "", None),
    ] {
        let (code, hidden) = gw
            .send_as(
                Some(&b_admin),
                method,
                &format!("/api/v1/webhooks/{a_id}{tail}"),
                body.clone(),
            )
            .await;
        let (missing_code, absent) = gw
            .send_as(
                Some(&b_admin),
                method,
                &format!("/api/v1/webhooks/{missing}{tail}"),
                body,
            )
            .await;
        assert_eq!(
            (code, missing_code),
            (404, 404),
            "{method} {tail}: {hidden}"
        );
        assert_eq!(hidden["type"], absent["type"]);
        assert_eq!(hidden["type"], "urn:metamcp:problem:unknown-webhook");
    }
    let (_, listed) = gw
        .send_as(Some(&b_admin), "GET", "/api/v1/webhooks", None)
        .await;
    assert_eq!(listed["total"], 1, "{listed}");
    assert_eq!(listed["webhooks"][0]["id"], b_id.as_str());
    let (_, listed) = gw.get("/api/v1/webhooks").await;
    assert_eq!(listed["total"], 1, "{listed}");
    assert_eq!(listed["webhooks"][0]["id"], a_id.as_str());
    // A's webhook is untouched.
    assert_eq!(gw.get(&format!("/api/v1/webhooks/{a_id}")).await.1, a_hook);

    // A plain user of A's tenant may not manage webhooks.
    let (code, body) = gw
        .send_as(Some(&a_user), "GET", "/api/v1/webhooks", None)
        .await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(body["permission"], "webhooks:manage");

    // Repeated failed logins in A's tenant reach A's receiver only.
    for _ in 0..5 {
        let r = reqwest::Client::new()
            .post(gw.url("/api/v1/auth/login"))
            .json(&json!({"username": "a-user", "password": "wrong-password-123"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
    }
    let got = a_receiver
        .wait_event("login.failed_repeatedly", |b| {
            b["data"]["username"] == "a-user"
        })
        .await;
    assert_eq!(got.json()["tenant"], "default");
    assert_eq!(got.json()["data"]["client"], "127.0.0.1");
    // B's lane delivers in order: once its test event arrived, anything
    // published before it would have too.
    let (code, _) = gw
        .send_as(
            Some(&b_admin),
            "POST",
            &format!("/api/v1/webhooks/{b_id}/test"),
            Some(json!({})),
        )
        .await;
    assert_eq!(code, 202);
    b_receiver.wait_event("webhook.test", |_| true).await;
    let kinds: Vec<Value> = b_receiver
        .received()
        .iter()
        .map(|r| r.json()["type"].clone())
        .collect();
    assert_eq!(kinds, [json!("webhook.test")]);
}

#[tokio::test]
async fn tools_added_changed_and_removed_are_announced() {
    let receiver = Receiver::start(Behavior::FailFirst(0)).await;
    let m = marker("fx-webhook-tools");
    let gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {"q": {
                "command": common::fixture_bin(),
                "args": ["--name", m, "--legacy"],
                "on_tool_change": "quarantine"
            }}}))
            .ready(),
    )
    .await;
    gw.wait_server("q", "ready").await;
    subscribe(
        &gw,
        &receiver.url,
        &["tool.added", "tool.removed", "tool.changed"],
    )
    .await;

    // A server added at run time brings its tools.
    let mh = marker("fx-webhook-tools-http");
    let (_fixture, url) = fixture_http(&mh);
    let (code, body) = gw
        .post("/api/v1/servers", json!({"name": "web", "url": url}))
        .await;
    assert_eq!(code, 201, "{body}");
    let added = receiver
        .wait_event("tool.added", |b| b["data"]["name"] == "web__echo")
        .await;
    assert_eq!(added.json()["data"]["server"], "web");
    assert_eq!(added.json()["data"]["tool"], "echo");

    // An upstream changing a pinned definition.
    let (code, body) = gw.execute("q__mutate", json!({})).await;
    assert_eq!(code, 200, "{body}");
    let changed = receiver
        .wait_event("tool.changed", |b| b["data"]["server"] == "q")
        .await;
    assert_eq!(changed.json()["data"]["tool"], "echo");
    assert_eq!(changed.json()["data"]["quarantined"], true);

    // A restart starts the server anew with no offer until it connects:
    // its tools are neither removed nor added again.
    let (code, body) = gw.post("/api/v1/servers/web/restart", json!({})).await;
    assert_eq!(code, 202, "{body}");
    gw.wait_server("web", "ready").await;

    // Deleting the server takes its tools away.
    let r = gw
        .client()
        .delete(gw.url("/api/v1/servers/web"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    receiver
        .wait_event("tool.removed", |b| b["data"]["name"] == "web__echo")
        .await;
    // Once each, in order: the restart announced nothing.
    let echo: Vec<Value> = receiver
        .received()
        .iter()
        .map(Received::json)
        .filter(|b| b["data"]["name"] == "web__echo")
        .map(|b| b["type"].clone())
        .collect();
    assert_eq!(echo, [json!("tool.added"), json!("tool.removed")]);
    // The config-file server's tools were never announced as added.
    assert!(
        !receiver
            .received()
            .iter()
            .any(|r| r.json()["type"] == "tool.added" && r.json()["data"]["server"] == "q")
    );
}

/// The webhook rows on one store: per-tenant reads, updates, the delivery
/// log's paging and pruning, deletion with the log.
async fn webhook_rows(store: &metamcp::store::Store) {
    use metamcp::store::{DeliveryRow, WebhookRow};
    let hook = |id: &str, tenant: &str| WebhookRow {
        id: id.into(),
        tenant_id: tenant.into(),
        url: format!("enc:v1:k:{id}-url"),
        secret: format!("enc:v1:k:{id}-secret"),
        events: vec!["upstream.down".into(), "tool.added".into()],
        description: Some("pager".into()),
        enabled: true,
        created_at: "2026-11-24T08:00:00Z".into(),
        updated_at: "2026-11-24T08:00:00Z".into(),
    };
    store.insert_webhook(&hook("wh_a", "t1")).await.unwrap();
    store.insert_webhook(&hook("wh_b", "t1")).await.unwrap();
    store.insert_webhook(&hook("wh_c", "t2")).await.unwrap();
    let ids = |rows: Vec<WebhookRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_webhooks("t1").await.unwrap()),
        ["wh_a", "wh_b"]
    );
    assert_eq!(ids(store.all_webhooks().await.unwrap()).len(), 3);
    assert_eq!(
        store.webhook("t1", "wh_a").await.unwrap(),
        Some(hook("wh_a", "t1"))
    );
    assert_eq!(store.webhook("t2", "wh_a").await.unwrap(), None);
    let mut changed = hook("wh_a", "t1");
    changed.enabled = false;
    changed.description = None;
    changed.events = vec!["*".into()];
    assert!(store.update_webhook(&changed).await.unwrap());
    assert_eq!(store.webhook("t1", "wh_a").await.unwrap(), Some(changed));
    // Another tenant cannot update it.
    assert!(!store.update_webhook(&hook("wh_a", "t2")).await.unwrap());

    let delivery = |n: u32, hook: &str, created_unix: i64| DeliveryRow {
        // UUIDv7-like ids sort by creation.
        id: format!("0000000{n}-d"),
        webhook_id: hook.into(),
        tenant_id: "t1".into(),
        event_id: format!("evt_{n}"),
        event_type: "upstream.down".into(),
        status: "pending".into(),
        payload: "{}".into(),
        attempts: "[]".into(),
        created_at: "2026-11-24T08:00:00Z".into(),
        created_unix,
        updated_at: "2026-11-24T08:00:00Z".into(),
    };
    for n in 1..=5 {
        store
            .insert_delivery(&delivery(n, "wh_a", 1_000 + i64::from(n)))
            .await
            .unwrap();
    }
    store
        .insert_delivery(&delivery(6, "wh_b", 1_006))
        .await
        .unwrap();
    store
        .update_delivery("00000005-d", "succeeded", r#"[{"attempt":1}]"#)
        .await
        .unwrap();
    let page = store.list_deliveries("t1", "wh_a", None, 2).await.unwrap();
    let event_ids =
        |rows: &[DeliveryRow]| rows.iter().map(|r| r.event_id.clone()).collect::<Vec<_>>();
    assert_eq!(event_ids(&page), ["evt_5", "evt_4"]);
    assert_eq!(
        (page[0].status.as_str(), page[0].attempts.as_str()),
        ("succeeded", r#"[{"attempt":1}]"#)
    );
    let next = store
        .list_deliveries("t1", "wh_a", Some(&page[1].id), 10)
        .await
        .unwrap();
    assert_eq!(event_ids(&next), ["evt_3", "evt_2", "evt_1"]);
    assert!(
        store
            .list_deliveries("t2", "wh_a", None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Older than 1002 goes (evt_1), then all but the newest 2 per webhook.
    assert_eq!(store.prune_deliveries(1_002, 2).await.unwrap(), 3);
    let left = store.list_deliveries("t1", "wh_a", None, 10).await.unwrap();
    assert_eq!(event_ids(&left), ["evt_5", "evt_4"]);
    assert_eq!(
        store
            .list_deliveries("t1", "wh_b", None, 10)
            .await
            .unwrap()
            .len(),
        1
    );

    assert!(!store.delete_webhook("t2", "wh_a").await.unwrap());
    assert!(store.delete_webhook("t1", "wh_a").await.unwrap());
    assert_eq!(store.webhook("t1", "wh_a").await.unwrap(), None);
    assert!(
        store
            .list_deliveries("t1", "wh_a", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn webhook_rows_on_sqlite_and_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("metamcp.db").display());
    let store = metamcp::store::Store::connect(&url).await.unwrap();
    webhook_rows(&store).await;
    store.close().await;

    let Ok(base) = std::env::var("METAMCP_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "METAMCP_TEST_POSTGRES_URL must be set in CI"
        );
        eprintln!("SKIPPED the PostgreSQL half: METAMCP_TEST_POSTGRES_URL is not set");
        return;
    };
    let schema = format!("metamcp_webhooks_{}", uuid::Uuid::new_v4().simple());
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&base)
        .await
        .expect("connect to PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    let store =
        metamcp::store::Store::connect(&format!("{base}{sep}options=-c%20search_path%3D{schema}"))
            .await
            .expect("postgres store");
    webhook_rows(&store).await;
    store.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await
        .unwrap();
}

#[tokio::test]
async fn breaker_transitions_are_announced() {
    let receiver = Receiver::start(Behavior::FailFirst(0)).await;
    let m = marker("fx-webhook-breaker");
    let gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {"fx": fixture_stdio(&m)}}))
            .env("META_MCP_BREAKER_FAILURE_THRESHOLD", "2")
            .env("META_MCP_BREAKER_RECOVERY_TIMEOUT_SECS", "0.5")
            .ready(),
    )
    .await;
    gw.wait_server("fx", "ready").await;
    subscribe(&gw, &receiver.url, &["circuit.opened", "circuit.closed"]).await;
    for _ in 0..2 {
        let (code, body) = gw.execute("fx__protocol_error", json!({})).await;
        assert_eq!(code, 502, "{body}");
    }
    receiver
        .wait_event("circuit.opened", |b| b["data"]["server"] == "fx")
        .await;
    // After the recovery timeout a trial call goes through and closes it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, body) = gw.execute("fx__echo", json!({"message": "trial"})).await;
        if code == 200 {
            break;
        }
        assert_eq!(body["type"], "urn:metamcp:problem:circuit-open", "{body}");
        assert!(
            Instant::now() < deadline,
            "the breaker never let a trial through"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    receiver
        .wait_event("circuit.closed", |b| b["data"]["server"] == "fx")
        .await;
}

#[tokio::test]
async fn a_full_queue_drops_and_counts() {
    let hanging = Receiver::start(Behavior::Hang).await;
    let gw = Gateway::start(
        Options::default()
            .env("META_MCP_WEBHOOK_QUEUE_SIZE", "1")
            .env("META_MCP_WEBHOOK_TIMEOUT_SECS", "120"),
    )
    .await;
    let (id, _) = subscribe(&gw, &hanging.url, &["*"]).await;
    let test = || async {
        let (code, body) = gw
            .post(&format!("/api/v1/webhooks/{id}/test"), json!({}))
            .await;
        assert_eq!(code, 202, "{body}");
    };
    // The first is taken from the queue and hangs in flight, the second
    // waits in the queue, the third finds it full.
    test().await;
    hanging.wait_for("in flight", |_| true).await;
    test().await;
    test().await;
    let log = wait_log(&gw, &id, "showing the drop", |items| {
        items.len() == 3 && items[0]["status"] == "dropped"
    })
    .await;
    assert_eq!(log[1]["status"], "pending");
    assert_eq!(log[2]["status"], "pending");
    let text = gw
        .client()
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("metamcp_webhook_deliveries_total{outcome=\"dropped\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn disabling_a_webhook_stops_its_retries() {
    let broken = Receiver::start(Behavior::FailFirst(usize::MAX)).await;
    let gw = Gateway::start(
        Options::default()
            .env("META_MCP_WEBHOOK_MAX_ATTEMPTS", "20")
            .env("META_MCP_WEBHOOK_BASE_DELAY_MS", "200"),
    )
    .await;
    let (id, _) = subscribe(&gw, &broken.url, &["*"]).await;
    let (code, _) = gw
        .post(&format!("/api/v1/webhooks/{id}/test"), json!({}))
        .await;
    assert_eq!(code, 202);
    wait_log(&gw, &id, "showing a failed attempt", |items| {
        items
            .first()
            .is_some_and(|d| !d["attempts"].as_array().unwrap().is_empty())
    })
    .await;
    let (code, body) = gw
        .send(
            "PATCH",
            &format!("/api/v1/webhooks/{id}"),
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["enabled"], false);
    assert!(
        body.get("secret").is_none(),
        "no secret unless rotated: {body}"
    );
    let log = wait_log(&gw, &id, "dropped", |items| {
        items.first().is_some_and(|d| d["status"] == "dropped")
    })
    .await;
    let attempts = log[0]["attempts"].as_array().unwrap().len();
    assert!((1..20).contains(&attempts), "{attempts} attempts");
    assert_eq!(broken.received().len(), attempts);
}
