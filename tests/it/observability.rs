//! Metrics: scrape `/metrics` after known traffic and check the counters
//! moved by exactly the right amounts (the whole exposition is parsed).

use serde_json::json;

use crate::common::{self, Gateway, Options, mcp_request};

async fn scrape(gw: &Gateway) -> (String, prometheus_parse::Scrape) {
    let r = gw.client().get(gw.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let text = r.text().await.unwrap();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("the exposition parses");
    (text, scrape)
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
        .unwrap_or(0.0)
}

#[tokio::test]
async fn counters_move_by_exactly_the_traffic_sent() {
    let (gw, _m) = common::gateway_with_fixture("fx-metrics").await;
    let (_, before) = scrape(&gw).await;
    let execute = "/api/v1/tools/:name/execute";
    let base_ok = value(
        &before,
        "metamcp_http_requests_total",
        &[("route", execute), ("status", "200")],
    );

    for i in 0..3 {
        let (code, _) = gw
            .execute("fx__echo", json!({"message": format!("m{i}")}))
            .await;
        assert_eq!(code, 200);
    }
    let (code, _) = gw.execute("fx__fail", json!({})).await;
    assert_eq!(code, 200);
    let (code, _) = gw.execute("fx__add", json!({"a": "x", "b": 1})).await;
    assert_eq!(code, 422);
    let (code, _) = gw.execute("fx__protocol_error", json!({})).await;
    assert_eq!(code, 502);
    let listed = mcp_request(&gw.mcp_url(), "tools/list", json!({})).await;
    assert!(listed["result"]["tools"].is_array());
    let called = mcp_request(
        &gw.mcp_url(),
        "tools/call",
        json!({"name": "fx__echo", "arguments": {"message": "mcp"}}),
    )
    .await;
    assert!(called["result"].is_object());
    let (code, _) = gw
        .get("/api/v1/tools/search?q=echo&search_type=keyword")
        .await;
    assert_eq!(code, 200);

    let (text, after) = scrape(&gw).await;
    let tool = |t: &str, outcome: &str| {
        value(
            &after,
            "metamcp_tool_calls_total",
            &[("tool", t), ("server", "fx"), ("outcome", outcome)],
        )
    };
    assert_eq!(
        tool("fx__echo", "success"),
        4.0,
        "3 over REST, 1 over MCP\n{text}"
    );
    assert_eq!(tool("fx__fail", "tool_error"), 1.0);
    assert_eq!(tool("fx__add", "rejected"), 1.0);
    assert_eq!(tool("fx__protocol_error", "upstream_error"), 1.0);
    assert_eq!(
        value(
            &after,
            "metamcp_http_requests_total",
            &[("route", execute), ("method", "POST"), ("status", "200")]
        ) - base_ok,
        4.0
    );
    assert_eq!(
        value(
            &after,
            "metamcp_http_requests_total",
            &[("route", execute), ("status", "422")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "metamcp_mcp_requests_total",
            &[("method", "tools/list")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "metamcp_mcp_requests_total",
            &[("method", "tools/call")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "metamcp_search_requests_total",
            &[("search_type", "keyword")]
        ),
        1.0
    );
    assert_eq!(
        value(&after, "metamcp_upstream_up", &[("server", "fx")]),
        1.0
    );
    assert_eq!(
        value(&after, "metamcp_circuit_breaker_state", &[("server", "fx")]),
        0.0
    );
    assert_eq!(
        value(
            &after,
            "metamcp_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "metamcp_tool_call_duration_seconds_count",
            &[("tool", "fx__echo"), ("server", "fx")]
        ),
        4.0
    );
    // Bounded labels: no arguments and no user ids.
    assert!(
        !text.contains("m0") && !text.contains("anonymous"),
        "{text}"
    );
}

#[tokio::test]
async fn metrics_can_be_switched_off() {
    let gw = Gateway::start(Options::default().env("META_MCP_METRICS_ENABLED", "false")).await;
    let r = gw.client().get(gw.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}
