//! Real MCP peers through the gateway: server-everything (stdio and Streamable HTTP), mcp-server-time, the Python SDK and the MCP Inspector CLI.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::common::python_mode as py;
use crate::common::{self, Gateway, Options, texts};

const LEGACY: &str = "2025-11-25";
const MODERN: &str = "2026-07-28";

/// The same client command in both eras at once; checks each answer names
/// its era's protocol version, and returns (legacy, modern).
async fn py_both(python: &Path, url: &str, args: &[&str]) -> [(i32, Value); 2] {
    let (legacy, modern) = tokio::join!(
        py(python, url, "legacy", args),
        py(python, url, "modern", args)
    );
    assert_eq!(
        legacy.1["protocolVersion"], LEGACY,
        "{args:?}: {}",
        legacy.1
    );
    assert_eq!(
        modern.1["protocolVersion"], MODERN,
        "{args:?}: {}",
        modern.1
    );
    [legacy, modern]
}

/// Asserts a successful tool call (exit 0, not isError) and returns its texts.
fn call_ok(era: &str, (code, out): &(i32, Value)) -> Vec<String> {
    assert_eq!(*code, 0, "{era}: {out}");
    assert_eq!(out["isError"], false, "{era}: {out}");
    texts(out)
}

/// The progress notifications a client call reported, as (progress, total,
/// message).
fn progress_of(out: &Value) -> Vec<(f64, Option<f64>, Option<String>)> {
    out["progress"]
        .as_array()
        .unwrap_or_else(|| panic!("no progress list: {out}"))
        .iter()
        .map(|p| {
            (
                p["progress"].as_f64().unwrap(),
                p["total"].as_f64(),
                p["message"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn everything_stdio(bin: &Path) -> Value {
    json!({"command": bin, "args": ["stdio"]})
}

#[tokio::test]
async fn everything_over_stdio_through_rest_and_both_mcp_eras() {
    let test = "everything_over_stdio_through_rest_and_both_mcp_eras";
    let Some(everything) = common::external("METAMCP_TEST_EVERYTHING", test) else {
        return;
    };
    let Some(python) = common::external("METAMCP_TEST_PYTHON", test) else {
        return;
    };
    let gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {"everything": everything_stdio(&everything)}}))
            .ready(),
    )
    .await;
    let status = gw.wait_server("everything", "ready").await;
    assert_eq!(status["status"]["protocol_version"], LEGACY, "{status}");
    gw.wait_tool("everything__echo", true).await;

    let (code, body) = gw
        .execute("everything__echo", json!({"message": "hi"}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["server"], "everything");
    assert_eq!(texts(&body["result"]), ["Echo: hi"]);

    let url = gw.mcp_url();
    let [legacy, modern] = py_both(
        &python,
        &url,
        &["call", "everything__echo", r#"{"message": "hi"}"#],
    )
    .await;
    assert_eq!(call_ok("legacy", &legacy), ["Echo: hi"]);
    assert_eq!(call_ok("modern", &modern), ["Echo: hi"]);
}

#[tokio::test]
async fn everything_progress_reaches_callers_of_both_eras() {
    let test = "everything_progress_reaches_callers_of_both_eras";
    let Some(everything) = common::external("METAMCP_TEST_EVERYTHING", test) else {
        return;
    };
    let Some(python) = common::external("METAMCP_TEST_PYTHON", test) else {
        return;
    };
    let gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {"everything": everything_stdio(&everything)}}))
            .ready(),
    )
    .await;
    gw.wait_server("everything", "ready").await;
    gw.wait_tool("everything__trigger-long-running-operation", true)
        .await;
    // The upstream reports progress under the gateway's token, one step
    // every 1/3 s, the last one just before its result; each caller gets
    // every step under its own token (the SDK drops any other), in order.
    let args = [
        "call",
        "everything__trigger-long-running-operation",
        r#"{"duration": 1, "steps": 3}"#,
        "--progress",
    ];
    for (era, out) in ["legacy", "modern"]
        .into_iter()
        .zip(py_both(&python, &gw.mcp_url(), &args).await)
    {
        let text = call_ok(era, &out);
        assert!(
            text[0].starts_with("Long running operation completed"),
            "{era}: {text:?}"
        );
        let steps: Vec<(f64, Option<f64>)> = progress_of(&out.1)
            .into_iter()
            .map(|(p, total, _)| (p, total))
            .collect();
        assert_eq!(
            steps,
            [(1.0, Some(3.0)), (2.0, Some(3.0)), (3.0, Some(3.0))],
            "{era}: {}\nprogress the gateway received:\n{}",
            out.1,
            progress_log(&gw)
        );
    }
}

#[tokio::test]
async fn everything_over_stdio_sees_none_of_the_gateway_environment() {
    let test = "everything_over_stdio_sees_none_of_the_gateway_environment";
    let Some(everything) = common::external("METAMCP_TEST_EVERYTHING", test) else {
        return;
    };
    let gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {"everything": everything_stdio(&everything)}}))
            .env("META_MCP_OUTBOUND_TIMEOUT_SECS", "30")
            .env("PEERS_GATEWAY_SECRET", "peers-s3cr3t")
            .ready(),
    )
    .await;
    gw.wait_server("everything", "ready").await;
    gw.wait_tool("everything__get-env", true).await;
    let (code, body) = gw.execute("everything__get-env", json!({})).await;
    assert_eq!(code, 200, "{body}");
    let text = &texts(&body["result"])[0];
    let env: serde_json::Map<String, Value> =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("get-env is not JSON ({e}): {text}"));
    let leaked: Vec<&String> = env.keys().filter(|k| k.starts_with("META_MCP_")).collect();
    assert!(
        leaked.is_empty(),
        "gateway settings leaked: {leaked:?} in {text}"
    );
    assert!(!env.contains_key("PEERS_GATEWAY_SECRET"), "{text}");
    assert!(!text.contains("peers-s3cr3t"), "{text}");
    assert!(
        env.get("PATH")
            .and_then(Value::as_str)
            .is_some_and(|p| !p.is_empty()),
        "PATH is passed through: {text}"
    );
}

#[tokio::test]
async fn everything_over_streamable_http_registered_over_rest() {
    let test = "everything_over_streamable_http_registered_over_rest";
    let Some(everything) = common::external("METAMCP_TEST_EVERYTHING", test) else {
        return;
    };
    let Some(python) = common::external("METAMCP_TEST_PYTHON", test) else {
        return;
    };
    // Declared first, dropped last: the gateway goes before its upstream.
    let (_everything, upstream_url) = common::everything_http(&everything).await;
    let gw = Gateway::start(Options::default()).await;
    let (code, body) = gw
        .post(
            "/api/v1/servers",
            json!({"name": "ev", "url": upstream_url}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["type"], "streamable_http", "{body}");
    assert_eq!(body["source"], "api", "{body}");
    let status = gw.wait_server("ev", "ready").await;
    assert_eq!(status["status"]["protocol_version"], LEGACY, "{status}");
    gw.wait_tool("ev__echo", true).await;

    let (code, body) = gw.execute("ev__echo", json!({"message": "hi"})).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["server"], "ev");
    assert_eq!(texts(&body["result"]), ["Echo: hi"]);

    let [legacy, modern] = py_both(
        &python,
        &gw.mcp_url(),
        &["call", "ev__echo", r#"{"message": "hi"}"#],
    )
    .await;
    assert_eq!(call_ok("legacy", &legacy), ["Echo: hi"]);
    assert_eq!(call_ok("modern", &modern), ["Echo: hi"]);
}

#[tokio::test]
async fn mcp_server_time_over_stdio_through_rest() {
    let test = "mcp_server_time_over_stdio_through_rest";
    let Some(time_server) = common::external("METAMCP_TEST_MCP_SERVER_TIME", test) else {
        return;
    };
    let gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {"time": {
                "command": time_server,
                "args": ["--local-timezone", "UTC"],
            }}}))
            .ready(),
    )
    .await;
    gw.wait_server("time", "ready").await;
    gw.wait_tool("time__get_current_time", true).await;
    let (code, body) = gw.get("/api/v1/tools?server=time").await;
    assert_eq!(code, 200, "{body}");
    let mut names: Vec<&str> = body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["time__convert_time", "time__get_current_time"]);

    let before = time::OffsetDateTime::now_utc();
    let (code, body) = gw
        .execute("time__get_current_time", json!({"timezone": "UTC"}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["server"], "time");
    let result = &body["result"];
    assert_ne!(result["isError"], true, "{body}");
    let now = &result["structuredContent"];
    assert_eq!(now["timezone"], "UTC", "{body}");
    let datetime = now["datetime"].as_str().unwrap_or_else(|| panic!("{body}"));
    let parsed =
        time::OffsetDateTime::parse(datetime, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("datetime {datetime:?} is not RFC 3339: {e}"));
    assert!(parsed.offset().is_utc(), "{datetime}");
    let skew = (parsed - before).abs();
    assert!(skew < time::Duration::minutes(5), "{datetime} vs {before}");
    // The text content carries the same answer, as JSON.
    let text: Value = serde_json::from_str(&texts(result)[0]).unwrap();
    assert_eq!(text["timezone"], "UTC");
    assert_eq!(text["datetime"], datetime);

    let (code, body) = gw
        .execute(
            "time__convert_time",
            json!({"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let converted = &body["result"]["structuredContent"];
    assert!(
        converted["target"]["datetime"]
            .as_str()
            .is_some_and(|d| d.contains("T21:00")),
        "{body}"
    );
    assert_eq!(converted["time_difference"], "+9.0h", "{body}");
}

/// The tools the fixture offers, asked over stdio from a fixture process of
/// its own, each prefixed with `server__`, sorted.
fn fixture_tools(server: &str) -> Vec<String> {
    use std::io::{BufRead, BufReader, Write};
    let mut child = common::Proc(
        Command::new(common::fixture_bin())
            .args(["--name", &common::marker("fx-list")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the fixture"),
    );
    let mut stdin = child.0.stdin.take().unwrap();
    for message in [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": LEGACY, "capabilities": {},
            "clientInfo": {"name": "peers", "version": "1"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    ] {
        writeln!(stdin, "{message}").unwrap();
    }
    let stdout = BufReader::new(child.0.stdout.take().unwrap());
    for line in stdout.lines() {
        let message: Value = serde_json::from_str(&line.unwrap()).unwrap();
        if message["id"] == 2 {
            let mut names: Vec<String> = message["result"]["tools"]
                .as_array()
                .unwrap_or_else(|| panic!("{message}"))
                .iter()
                .map(|t| format!("{server}__{}", t["name"].as_str().unwrap()))
                .collect();
            names.sort_unstable();
            return names;
        }
    }
    panic!("the fixture ended without answering tools/list");
}

/// The progress notifications the gateway received from upstreams, one line
/// each, from rmcp's log (what went downstream is logged only at trace level).
fn progress_log(gw: &Gateway) -> String {
    gw.log_text()
        .lines()
        .filter(|l| l.contains("ProgressNotification"))
        .map(|l| {
            let at = l
                .get(14..50)
                .and_then(|t| t.split('"').next())
                .unwrap_or("");
            let what = l
                .split_once("progress_token: ")
                .and_then(|(_, rest)| rest.split_once(", meta"))
                .map_or(l, |(what, _)| what);
            format!("{at} {what}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn fixture_through_the_python_sdk_in_both_eras() {
    let test = "fixture_through_the_python_sdk_in_both_eras";
    let Some(python) = common::external("METAMCP_TEST_PYTHON", test) else {
        return;
    };
    let (gw, _m) = common::gateway_with_fixture("fx-py").await;
    gw.wait_tool("fx__echo", true).await;
    let expected_tools = fixture_tools("fx");
    assert!(
        expected_tools.iter().any(|t| t == "fx__echo"),
        "{expected_tools:?}"
    );

    // Every command in both eras, a few clients at a time; then the checks.
    let commands: [&[&str]; 9] = [
        &["list-tools"],
        &["call", "fx__nope", "{}"],
        &["call", "fx__add", r#"{"a": "x", "b": 1}"#],
        &["list-prompts"],
        &["get-prompt", "fx__greeting", r#"{"name": "Ann"}"#],
        &["list-resources"],
        &["read-resource", "fixture://readme"],
        // Served through the fixture's template fixture://items/{id}.
        &["read-resource", "fixture://items/42"],
        &["read-resource", "fixture://nowhere"],
    ];
    let url = gw.mcp_url();
    let answers: Vec<[(i32, Value); 2]> = futures::stream::iter(commands)
        .map(|args| py_both(&python, &url, args))
        .buffered(2)
        .collect()
        .await;
    let mut answers = answers.into_iter();
    let mut next = || {
        ["legacy", "modern"]
            .into_iter()
            .zip(answers.next().unwrap())
    };

    for (era, (code, out)) in next() {
        assert_eq!(code, 0, "{era}: {out}");
        let mut names: Vec<&str> = out["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        names.sort_unstable();
        assert_eq!(names, expected_tools, "{era}");
        let echo = out["tools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "fx__echo")
            .unwrap();
        assert_eq!(echo["inputSchema"]["required"], json!(["message"]), "{era}");
    }

    // An unknown tool is a JSON-RPC error, not a tool result.
    for (era, (code, out)) in next() {
        assert_eq!(code, 2, "{era}: {out}");
        assert_eq!(out["code"], -32602, "{era}: {out}");
        assert!(
            out["message"].as_str().unwrap().contains("fx__nope"),
            "{era}: {out}"
        );
    }

    // Invalid arguments are a tool result the model can correct from.
    for (era, (code, out)) in next() {
        assert_eq!(code, 0, "{era}: {out}");
        assert_eq!(out["isError"], true, "{era}: {out}");
        let text = texts(&out).join(" ");
        assert!(text.contains("a:"), "names the field a: {era}: {text}");
        assert!(!text.contains("b:"), "b is fine: {era}: {text}");
    }

    for (era, (code, out)) in next() {
        assert_eq!(code, 0, "{era}: {out}");
        let prompts = out["prompts"].as_array().unwrap();
        assert_eq!(prompts.len(), 1, "{era}: {out}");
        assert_eq!(prompts[0]["name"], "fx__greeting", "{era}");
        assert_eq!(prompts[0]["arguments"][0]["name"], "name", "{era}");
        assert_eq!(prompts[0]["arguments"][0]["required"], true, "{era}");
    }

    for (era, (code, out)) in next() {
        assert_eq!(code, 0, "{era}: {out}");
        assert_eq!(out["messages"][0]["role"], "user", "{era}: {out}");
        assert_eq!(
            out["messages"][0]["content"]["text"], "Hello, Ann!",
            "{era}: {out}"
        );
    }

    for (era, (code, out)) in next() {
        assert_eq!(code, 0, "{era}: {out}");
        let uris: Vec<&str> = out["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["uri"].as_str().unwrap())
            .collect();
        assert_eq!(uris, ["fixture://readme"], "{era}: {out}");
    }

    for (uri, text) in [
        ("fixture://readme", "fixture readme"),
        ("fixture://items/42", "item 42"),
    ] {
        for (era, (code, out)) in next() {
            assert_eq!(code, 0, "{era} {uri}: {out}");
            assert_eq!(out["contents"][0]["uri"], uri, "{era}: {out}");
            assert_eq!(out["contents"][0]["text"], text, "{era}: {out}");
        }
    }

    // A URI no server offers: each era's own not-found code.
    let [(lc, legacy), (mc, modern)] = answers.next().unwrap();
    assert_eq!((lc, &legacy["code"]), (2, &json!(-32002)), "{legacy}");
    assert_eq!((mc, &modern["code"]), (2, &json!(-32602)), "{modern}");
}

#[tokio::test]
async fn fixture_progress_reaches_callers_of_both_eras() {
    let test = "fixture_progress_reaches_callers_of_both_eras";
    let Some(python) = common::external("METAMCP_TEST_PYTHON", test) else {
        return;
    };
    let (gw, _m) = common::gateway_with_fixture("fx-pyprog").await;
    gw.wait_tool("fx__progress", true).await;
    // The fixture reports "step 1" at once under the gateway's token; each
    // client gets every step under its own token (the SDK drops any other),
    // in order.
    let args = [
        "call",
        "fx__progress",
        r#"{"steps": 4, "delay_ms": 5}"#,
        "--progress",
    ];
    let expected: Vec<(f64, Option<f64>, Option<String>)> = (1..=4)
        .map(|i| (f64::from(i), Some(4.0), Some(format!("step {i}"))))
        .collect();
    for (era, out) in ["legacy", "modern"]
        .into_iter()
        .zip(py_both(&python, &gw.mcp_url(), &args).await)
    {
        assert_eq!(call_ok(era, &out), ["done 4 steps"]);
        assert_eq!(
            progress_of(&out.1),
            expected,
            "{era}: {}\nprogress the gateway received:\n{}",
            out.1,
            progress_log(&gw)
        );
    }
}

/// A legacy (2025-11-25) session over plain HTTP, many calls: every
/// `notifications/progress` the upstream sends reaches the caller, in order,
/// the first one included however soon after the request the upstream sends
/// it (the fixture sends "step 1" at once), and the last one included however
/// soon before its result. Many calls, a few at a time, make a lost or
/// reordered notification likely to show in one run.
#[tokio::test]
async fn progress_relay_keeps_every_notification_in_order() {
    let (gw, _m) = common::gateway_with_fixture("fx-prog").await;
    gw.wait_tool("fx__progress", true).await;
    let client = gw.client();
    let post = |session: Option<String>, body: Value| {
        let mut request = client
            .post(gw.mcp_url())
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json");
        if let Some(session) = session {
            request = request
                .header("mcp-session-id", session)
                .header("mcp-protocol-version", LEGACY);
        }
        request.body(body.to_string()).send()
    };
    let r = post(
        None,
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": LEGACY, "capabilities": {},
            "clientInfo": {"name": "peers-raw", "version": "1"}}}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let session = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let _ = r.text().await;
    let r = post(
        Some(session.clone()),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await
    .unwrap();
    assert!(r.status().is_success(), "{}", r.status());

    // Four calls at a time in the one session, CALLS in all.
    const CALLS: u64 = 128;
    let call = |i: u64| {
        let token = format!("peers-{i}");
        let request = post(
            Some(session.clone()),
            json!({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {
                "name": "fx__progress", "arguments": {"steps": 4, "delay_ms": 1},
                "_meta": {"progressToken": token}}}),
        );
        async move {
            let r = request.await.unwrap();
            assert_eq!(r.status(), 200, "call {i}");
            let body = r.text().await.unwrap();
            let messages: Vec<Value> = body
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .filter_map(|d| serde_json::from_str(d.trim()).ok())
                .collect();
            assert!(
                messages
                    .iter()
                    .any(|m| m["id"] == i && m["result"]["content"][0]["text"] == "done 4 steps"),
                "call {i}: {body}"
            );
            let steps: Vec<String> = messages
                .iter()
                .filter(|m| {
                    m["method"] == "notifications/progress"
                        && m["params"]["progressToken"] == token.as_str()
                })
                .filter_map(|m| m["params"]["message"].as_str().map(str::to_owned))
                .collect();
            (i, steps)
        }
    };
    let mut incomplete = Vec::new();
    for batch in (1..=CALLS).collect::<Vec<_>>().chunks(4) {
        for (i, steps) in futures::future::join_all(batch.iter().map(|&i| call(i))).await {
            if steps != ["step 1", "step 2", "step 3", "step 4"] {
                incomplete.push((i, steps));
            }
        }
    }
    assert!(
        incomplete.is_empty(),
        "calls whose progress was lost or reordered (of {CALLS}): {incomplete:?}"
    );
}

/// The MCP Inspector CLI with HOME in the gateway's data directory, so it
/// reads and writes nothing of the user's; returns (exit code, JSON output).
async fn inspector(bin: &Path, home: PathBuf, args: Vec<String>) -> (i32, Value) {
    let bin = bin.to_path_buf();
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&home).unwrap();
        let out = Command::new(&bin)
            .args(&args)
            .env("HOME", &home)
            .output()
            .expect("run the inspector CLI");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
            panic!(
                "inspector printed no JSON ({:?}): {stdout}\nstderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap_or(-1), value)
    })
    .await
    .expect("inspector task")
}

#[tokio::test]
async fn inspector_cli_lists_and_calls_through_the_gateway() {
    let test = "inspector_cli_lists_and_calls_through_the_gateway";
    let Some(bin) = common::external("METAMCP_TEST_INSPECTOR", test) else {
        return;
    };
    let (gw, _m) = common::gateway_with_fixture("fx-insp").await;
    gw.wait_tool("fx__echo", true).await;
    let home = gw.data_dir.join("inspector-home");
    let base = |method: &str| -> Vec<String> {
        [
            &gw.mcp_url(),
            "--transport",
            "http",
            "--format",
            "json",
            "--method",
            method,
            "--header",
            &format!("Authorization: Bearer {}", gw.token),
        ]
        .map(String::from)
        .to_vec()
    };

    let (code, out) = inspector(&bin, home.clone(), base("tools/list")).await;
    assert_eq!(code, 0, "{out}");
    let names: Vec<&str> = out["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{out}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    let mut names: Vec<String> = names.into_iter().map(str::to_owned).collect();
    names.sort_unstable();
    assert_eq!(names, fixture_tools("fx"));
    assert!(names.iter().any(|n| n == "fx__echo"), "{names:?}");

    for era in ["legacy", "modern"] {
        let mut args = base("tools/call");
        args.extend(
            [
                "--protocol-era",
                era,
                "--tool-name",
                "fx__echo",
                "--tool-arg",
                "message=hi",
            ]
            .map(String::from),
        );
        let (code, out) = inspector(&bin, home.clone(), args).await;
        assert_eq!(code, 0, "{era}: {out}");
        assert_eq!(out["result"]["isError"], false, "{era}: {out}");
        assert_eq!(texts(&out["result"]), ["hi"], "{era}: {out}");
    }
}

/// `metamcp stdio` bridges a desktop client's stdio session to a running
/// gateway: driven here by the Python SDK's stdio client, in both eras.
#[tokio::test]
async fn metamcp_stdio_bridges_a_stdio_client_to_the_gateway() {
    let Some(python) = common::external(
        "METAMCP_TEST_PYTHON",
        "metamcp_stdio_bridges_a_stdio_client_to_the_gateway",
    ) else {
        return;
    };
    let (gw, _m) = common::gateway_with_fixture("fx-bridge").await;
    let command = json!([
        env!("CARGO_BIN_EXE_metamcp"),
        "stdio",
        "--url",
        gw.base,
        "--token",
        gw.token
    ])
    .to_string();
    for mode in ["legacy", "modern"] {
        let (code, out) = common::python_client(
            &python,
            &["--stdio", &command, "--mode", mode, "list-tools"],
        );
        assert_eq!(code, 0, "{mode}: {out}");
        let names: Vec<&str> = out["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"fx__echo"), "{mode}: {names:?}");
        let (code, out) = common::python_client(
            &python,
            &[
                "--stdio",
                &command,
                "--mode",
                mode,
                "call",
                "fx__progress",
                r#"{"steps": 3, "delay_ms": 5}"#,
                "--progress",
            ],
        );
        assert_eq!(code, 0, "{mode}: {out}");
        assert_eq!(out["content"][0]["text"], "done 3 steps");
        let messages: Vec<&str> = out["progress"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["message"].as_str().unwrap())
            .collect();
        assert_eq!(messages, ["step 1", "step 2", "step 3"], "{mode}");
        let (code, out) = common::python_client(
            &python,
            &["--stdio", &command, "--mode", mode, "call", "nope", "{}"],
        );
        assert_eq!(code, 2, "{mode}: unknown tools are JSON-RPC errors: {out}");
        let (code, out) = common::python_client(
            &python,
            &[
                "--stdio",
                &command,
                "--mode",
                mode,
                "read-resource",
                "fixture://readme",
            ],
        );
        assert_eq!(code, 0, "{mode}: {out}");
    }
}

/// server-everything on the 2024-11-05 HTTP+SSE transport as an upstream.
#[tokio::test]
async fn everything_over_legacy_sse_as_an_upstream() {
    let Some(bin) = common::external(
        "METAMCP_TEST_EVERYTHING",
        "everything_over_legacy_sse_as_an_upstream",
    ) else {
        return;
    };
    let port = common::free_port();
    let _server = common::Proc(
        std::process::Command::new(&bin)
            .arg("sse")
            .env("PORT", port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start server-everything sse"),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "server-everything did not listen"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let gw = Gateway::start(Options::default()).await;
    let url = format!("http://127.0.0.1:{port}/sse");
    let (code, body) = gw
        .post(
            "/api/v1/servers",
            json!({"name": "old", "url": url, "type": "sse"}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["type"], "sse");
    gw.wait_server("old", "ready").await;
    gw.wait_tool("old__echo", true).await;
    let (code, body) = gw
        .execute("old__echo", json!({"message": "over sse"}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["result"]["content"][0]["text"], "Echo: over sse");
    let listed = common::mcp_request(&gw.mcp_url(), "tools/list", json!({})).await;
    assert!(common::tool_names(&listed).contains(&"old__echo".to_owned()));
}

/// `completion/complete` reaches the upstream that owns the prompt, under
/// the prompt's original name.
#[tokio::test]
async fn completions_are_routed_to_the_prompt_owner() {
    let Some(bin) = common::external(
        "METAMCP_TEST_EVERYTHING",
        "completions_are_routed_to_the_prompt_owner",
    ) else {
        return;
    };
    let gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {"ev": {"command": bin, "args": ["stdio"]}}}))
            .ready(),
    )
    .await;
    gw.wait_server("ev", "ready").await;
    let answer = common::mcp_request(
        &gw.mcp_url(),
        "completion/complete",
        json!({"ref": {"type": "ref/prompt", "name": "ev__completable-prompt"}, "argument": {"name": "department", "value": "E"}}),
    )
    .await;
    assert_eq!(
        answer["result"]["completion"]["values"],
        json!(["Engineering"]),
        "{answer}"
    );
    let unknown = common::mcp_request(
        &gw.mcp_url(),
        "completion/complete",
        json!({"ref": {"type": "ref/prompt", "name": "nope"}, "argument": {"name": "x", "value": ""}}),
    )
    .await;
    assert_eq!(unknown["error"]["code"], -32602, "{unknown}");
    // The same through a real client, in both eras.
    if let Some(python) = common::external(
        "METAMCP_TEST_PYTHON",
        "completions_are_routed_to_the_prompt_owner",
    ) {
        for (code, out) in py_both(
            &python,
            &gw.mcp_url(),
            &["complete", "ev__completable-prompt", "department", "E"],
        )
        .await
        {
            assert_eq!(code, 0, "{out}");
            assert_eq!(out["values"], json!(["Engineering"]), "{out}");
        }
    }
}
