//! Traces: a minimal OTLP/HTTP receiver in the test (POST /v1/traces,
//! protobuf decoded with the `opentelemetry-proto` types) collects what the
//! gateway exports; the fixture's `trace_context` tool reports the trace
//! context an upstream received (HTTP header and `_meta`).

#![cfg(feature = "otel")]

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    common::v1::{AnyValue, any_value},
};
use prost::Message;
use serde_json::{Value, json};

use crate::common::{Gateway, Options, fixture_http, fixture_stdio, marker};

/// One span as the receiver got it (ids in lower-case hex).
#[derive(Clone, Debug)]
struct Received {
    trace: String,
    id: String,
    parent: String,
    name: String,
    start: u64,
    attributes: BTreeMap<String, String>,
    service: String,
}

/// The OTLP/HTTP receiver: every span posted to `url/v1/traces`.
struct Receiver {
    url: String,
    spans: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

async fn receiver() -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let spans = Arc::new(Mutex::new(Vec::new()));
    let store = spans.clone();
    let export = move |headers: http::HeaderMap, body: bytes::Bytes| {
        let store = store.clone();
        async move {
            assert_eq!(
                headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default(),
                "application/x-protobuf",
                "OTLP/HTTP with protobuf"
            );
            let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                return (http::StatusCode::BAD_REQUEST, Vec::new());
            };
            let mut spans = store.lock().unwrap();
            for resource in request.resource_spans {
                let service = resource
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|kv| kv.key == "service.name")
                    .map(|kv| text(kv.value.as_ref()))
                    .unwrap_or_default();
                for scope in resource.scope_spans {
                    for span in scope.spans {
                        spans.push(Received {
                            trace: hex(&span.trace_id),
                            id: hex(&span.span_id),
                            parent: hex(&span.parent_span_id),
                            name: span.name.clone(),
                            start: span.start_time_unix_nano,
                            attributes: span
                                .attributes
                                .iter()
                                .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                                .collect(),
                            service: service.clone(),
                        });
                    }
                }
            }
            (
                http::StatusCode::OK,
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
        }
    };
    // Also a plain HTTP tool's endpoint, answering the `traceparent` it got.
    let hook = |headers: http::HeaderMap| async move {
        axum::Json(json!({
            "traceparent": headers.get("traceparent").and_then(|v| v.to_str().ok()),
        }))
    };
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(export))
        .route("/hook", axum::routing::post(hook));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Receiver { url, spans, task }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Receiver {
    /// The spans of `trace` once every name of `names` is among them.
    async fn trace(&self, trace: &str, names: &[&str]) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let spans: Vec<Received> = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.trace == trace)
                .cloned()
                .collect();
            if names.iter().all(|n| spans.iter().any(|s| s.name == *n)) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "trace {trace} lacks some of {names:?} after 30s; it has {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The one span of `name` in `spans`.
fn one<'a>(spans: &'a [Received], name: &str) -> &'a Received {
    let found: Vec<&Received> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "exactly one {name} span: {spans:#?}");
    found[0]
}

/// (trace id, parent span id) of a `traceparent` value.
fn parse_traceparent(value: &str) -> (String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {value}");
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1].len(), 32);
    assert_eq!(parts[2].len(), 16);
    (parts[1].to_owned(), parts[2].to_owned())
}

/// A caller's trace context: (traceparent, trace id, span id).
fn caller_context() -> (String, String, String) {
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let span = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    (format!("00-{trace}-{span}-01"), trace, span)
}

/// A gateway exporting to `otlp`, with the fixture over Streamable HTTP as
/// `fx` and over stdio as `fxs`.
async fn traced_gateway(otlp: &Receiver, fixture_url: &str) -> Gateway {
    let gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {
                "fx": {"url": fixture_url},
                "fxs": fixture_stdio(&marker("fx-traces-stdio")),
            }}))
            .env("META_MCP_OTEL_ENDPOINT", &otlp.url)
            .env("META_MCP_OTEL_SERVICE_NAME", "metamcp-it")
            // Export every 100 ms rather than every 5 s.
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .ready(),
    )
    .await;
    gw.wait_server("fx", "ready").await;
    gw.wait_server("fxs", "ready").await;
    gw
}

/// What the fixture's `trace_context` tool reports from a REST answer.
fn reported(answer: &Value) -> &Value {
    let seen = &answer["result"]["structuredContent"];
    assert!(seen.is_object(), "{answer}");
    seen
}

#[tokio::test]
async fn one_tool_call_is_one_trace_with_the_pipeline_stages_in_order() {
    let otlp = receiver().await;
    let (_fx, url) = fixture_http(&marker("fx-traces"));
    let gw = traced_gateway(&otlp, &url).await;
    // Cacheable, so the cache stage runs too (a miss: the first call).
    let (code, body) = gw
        .send(
            "PUT",
            "/api/v1/tools/fx__trace_context",
            json!({"cache_ttl_secs": 60, "read_only": true}),
        )
        .await;
    assert_eq!(code, 200, "{body}");

    let (code, answer) = gw.execute("fx__trace_context", json!({})).await;
    assert_eq!(code, 200, "{answer}");
    let seen = reported(&answer);
    // The upstream got the context in the HTTP header and in `_meta`.
    let header = seen["header"]["traceparent"]
        .as_str()
        .unwrap_or_else(|| panic!("no traceparent header reached the upstream: {seen}"));
    assert_eq!(seen["meta"]["traceparent"], header);
    let (trace, upstream_parent) = parse_traceparent(header);

    let stages = [
        "catalog", "policy", "validate", "guard", "cache", "upstream",
    ];
    let mut names = vec!["request", "auth", "tool_call"];
    names.extend(stages);
    let spans = otlp.trace(&trace, &names).await;
    let request = one(&spans, "request");
    assert_eq!(request.parent, "", "the HTTP request starts the trace");
    assert_eq!(
        request.attributes["path"],
        "/api/v1/tools/fx__trace_context/execute"
    );
    assert_eq!(request.service, "metamcp-it");
    let auth = one(&spans, "auth");
    let call = one(&spans, "tool_call");
    assert_eq!(auth.parent, request.id);
    assert_eq!(call.parent, request.id);
    assert!(auth.start <= call.start, "identity before the pipeline");
    assert_eq!(call.attributes["tool"], "fx__trace_context");
    assert_eq!(call.attributes["outcome"], "success");
    // The stages are children of the call, in pipeline order.
    let mut previous = call.start;
    for stage in stages {
        let span = one(&spans, stage);
        assert_eq!(span.parent, call.id, "{stage} is a stage of the call");
        assert!(
            span.start >= previous,
            "{stage} runs after the stage before it"
        );
        previous = span.start;
    }
    assert_eq!(one(&spans, "cache").attributes["hit"], "false");
    let upstream = one(&spans, "upstream");
    assert_eq!(upstream.attributes["server"], "fx");
    assert_eq!(upstream.attributes["tool"], "trace_context");
    // The upstream's parent is our client span: the trace continues there.
    assert_eq!(upstream_parent, upstream.id);
    // A plain HTTP tool gets the context in its request's header.
    let (code, body) = gw
        .post(
            "/api/v1/tools",
            json!({"name": "hook", "endpoint": format!("{}/hook", otlp.url)}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let (code, answer) = gw.execute("hook", json!({})).await;
    assert_eq!(code, 200, "{answer}");
    let header = answer["result"]["structuredContent"]["traceparent"]
        .as_str()
        .unwrap_or_else(|| panic!("no traceparent reached the HTTP tool: {answer}"));
    let (hook_trace, hook_parent) = parse_traceparent(header);
    let hook_spans = otlp.trace(&hook_trace, &["tool_call", "upstream"]).await;
    assert_eq!(one(&hook_spans, "upstream").id, hook_parent);

    // Arguments are not attributes of any span.
    for span in &spans {
        assert!(
            !span.attributes.contains_key("arguments"),
            "{span:?} carries the arguments"
        );
    }
}

#[tokio::test]
async fn a_callers_trace_is_joined_and_reaches_the_upstream() {
    let otlp = receiver().await;
    let (_fx, url) = fixture_http(&marker("fx-traces-join"));
    let gw = traced_gateway(&otlp, &url).await;

    // REST: the `traceparent` (and `tracestate`) headers.
    let (traceparent, trace, caller_span) = caller_context();
    let r = gw
        .client()
        .post(gw.url("/api/v1/tools/fx__trace_context/execute"))
        .header("traceparent", &traceparent)
        .header("tracestate", "it=rest")
        .json(&json!({"arguments": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    let seen = reported(&answer);
    let (upstream_trace, _) = parse_traceparent(seen["header"]["traceparent"].as_str().unwrap());
    assert_eq!(
        upstream_trace, trace,
        "the upstream joins the caller's trace"
    );
    assert_eq!(seen["header"]["tracestate"], "it=rest");
    assert_eq!(seen["meta"]["tracestate"], "it=rest");
    let spans = otlp
        .trace(&trace, &["request", "tool_call", "upstream"])
        .await;
    assert_eq!(one(&spans, "request").parent, caller_span);

    // MCP: `_meta.traceparent` (SEP-414) wins over the header.
    let (meta_parent, meta_trace, meta_span) = caller_context();
    let (header_parent, header_trace, _) = caller_context();
    let result = mcp_call(
        &gw,
        "fx__trace_context",
        Some(&header_parent),
        json!({"traceparent": meta_parent}),
    )
    .await;
    let (upstream_trace, _) = parse_traceparent(
        result["structuredContent"]["header"]["traceparent"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(upstream_trace, meta_trace);
    let spans = otlp
        .trace(&meta_trace, &["mcp", "tool_call", "upstream"])
        .await;
    let mcp = one(&spans, "mcp");
    assert_eq!(mcp.parent, meta_span);
    assert_eq!(mcp.attributes["method"], "tools/call");
    assert_eq!(one(&spans, "tool_call").parent, mcp.id);
    // The HTTP request span stays in the header's trace.
    otlp.trace(&header_trace, &["request"]).await;

    // MCP with the header only; and an upstream over stdio, which gets the
    // context in `_meta` alone.
    let (traceparent, trace, _) = caller_context();
    let result = mcp_call(&gw, "fxs__trace_context", Some(&traceparent), json!({})).await;
    let seen = &result["structuredContent"];
    let (upstream_trace, _) = parse_traceparent(seen["meta"]["traceparent"].as_str().unwrap());
    assert_eq!(upstream_trace, trace);
    assert_eq!(
        seen["header"]["traceparent"],
        Value::Null,
        "stdio has no headers"
    );
    let spans = otlp
        .trace(&trace, &["request", "mcp", "tool_call", "upstream"])
        .await;
    assert_eq!(one(&spans, "mcp").parent, one(&spans, "request").id);

    // Prompts are traced the same way.
    let (traceparent, trace, caller_span) = caller_context();
    let result = mcp_send(
        &gw,
        "prompts/get",
        json!({"name": "fx__greeting", "arguments": {"name": "Ada"}}),
        None,
        json!({"traceparent": traceparent}),
    )
    .await;
    assert!(result["messages"].is_array(), "{result}");
    let spans = otlp.trace(&trace, &["mcp"]).await;
    let mcp = one(&spans, "mcp");
    assert_eq!(mcp.parent, caller_span);
    assert_eq!(mcp.attributes["method"], "prompts/get");

    // A malformed traceparent is ignored: the call starts a trace of its own.
    let r = gw
        .client()
        .post(gw.url("/api/v1/tools/fx__trace_context/execute"))
        .header("traceparent", "00-not-a-trace-01")
        .json(&json!({"arguments": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    let (trace, _) =
        parse_traceparent(reported(&answer)["header"]["traceparent"].as_str().unwrap());
    let spans = otlp.trace(&trace, &["request", "upstream"]).await;
    assert_eq!(one(&spans, "request").parent, "");
}

/// A stateless MCP `tools/call` with extra `_meta` entries and an optional
/// `traceparent` header; returns the result.
async fn mcp_call(gw: &Gateway, tool: &str, traceparent: Option<&str>, meta: Value) -> Value {
    mcp_send(
        gw,
        "tools/call",
        json!({"name": tool, "arguments": {}}),
        traceparent,
        meta,
    )
    .await
}

/// A stateless MCP request of `method` (`params` naming the tool or
/// prompt) with extra `_meta` entries and an optional `traceparent` header;
/// returns the result.
async fn mcp_send(
    gw: &Gateway,
    method: &str,
    mut params: Value,
    traceparent: Option<&str>,
    meta: Value,
) -> Value {
    let mut all_meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    if let (Some(all), Some(extra)) = (all_meta.as_object_mut(), meta.as_object()) {
        all.extend(extra.clone());
    }
    let mut request = gw
        .client()
        .post(gw.mcp_url())
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", method)
        .header("mcp-name", params["name"].as_str().unwrap_or_default());
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    params["_meta"] = all_meta;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let text = request
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let answer: Value = serde_json::from_str(&text)
        .ok()
        .or_else(|| {
            text.lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
                .rfind(|v| v.get("id").is_some())
        })
        .unwrap_or_else(|| panic!("no JSON-RPC answer: {text}"));
    assert!(answer["result"].is_object(), "{answer}");
    answer["result"].clone()
}

#[tokio::test]
async fn spans_still_batched_are_flushed_when_the_gateway_stops() {
    let otlp = receiver().await;
    let (_fx, url) = fixture_http(&marker("fx-traces-flush"));
    let mut gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {"fx": {"url": url}}}))
            .env("META_MCP_OTEL_ENDPOINT", &otlp.url)
            // Far beyond the test: only the flush at exit can send them.
            .env("OTEL_BSP_SCHEDULE_DELAY", "600000")
            .ready(),
    )
    .await;
    gw.wait_server("fx", "ready").await;
    let (code, answer) = gw.execute("fx__trace_context", json!({})).await;
    assert_eq!(code, 200, "{answer}");
    let (trace, _) =
        parse_traceparent(reported(&answer)["header"]["traceparent"].as_str().unwrap());
    assert!(
        otlp.spans.lock().unwrap().iter().all(|s| s.trace != trace),
        "nothing exported before the stop"
    );
    let status = tokio::task::spawn_blocking(move || gw.stop())
        .await
        .unwrap()
        .expect("the gateway ran");
    assert!(status.success(), "{status:?}");
    otlp.trace(&trace, &["request", "tool_call", "upstream"])
        .await;
}
