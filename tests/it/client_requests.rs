//! Server-to-client requests of issue #3 through the gateway: an upstream's
//! `sampling/createMessage` and `elicitation/create` reach the client whose
//! call caused them, and its answer reaches the upstream; a caller that
//! cannot take them (no capability, a 2026-07-28 request) makes the upstream
//! get an error, and the call still finishes. A 2026-07-28 upstream asks
//! with an `input_required` result, which the gateway turns into real
//! requests to a legacy caller.
//!
//! Assertions rest on what each side received, never on timing: the Python
//! client reports the requests it was asked, and the upstream's tool result
//! quotes the answer it got.

// Sampling and elicitation toward legacy clients are deprecated by SEP-2577
// but are what legacy sessions speak.
#![allow(deprecated)]

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use rmcp::{
    ClientHandler, ErrorData, RoleClient, ServiceExt,
    model::{
        CallToolRequestParams, ClientCapabilities, ClientConfig, CreateMessageRequestParams,
        CreateMessageResult, Implementation, SamplingCapability, SamplingMessage,
    },
    service::{RequestContext, RunningService},
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use serde_json::{Value, json};

use crate::common::python_mode as py;
use crate::common::{self, Gateway, Options, fixture_bin, marker};

/// Everything the Python client printed, as one string to search.
fn text_of(out: &Value) -> String {
    out.to_string()
}

/// A gateway fronting `server-everything` over stdio (a legacy upstream).
async fn everything_gateway(everything: &Path) -> Gateway {
    let gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {"ev": {"command": everything, "args": ["stdio"]}}}))
            .ready(),
    )
    .await;
    gw.wait_server("ev", "ready").await;
    // Its sampling and elicitation tools exist only for a client that
    // declared those capabilities: the gateway did.
    gw.wait_tool("ev__trigger-sampling-request", true).await;
    gw.wait_tool("ev__trigger-elicitation-request", true).await;
    gw.wait_tool("ev__get-roots-list", true).await;
    gw
}

#[tokio::test]
async fn server_everything_sampling_elicitation_and_roots_reach_the_calling_python_client() {
    let test = "server_everything_sampling_elicitation_and_roots_reach_the_calling_python_client";
    let Some(everything) = common::external("METAMCP_TEST_EVERYTHING", test) else {
        return;
    };
    let Some(python) = common::external("METAMCP_TEST_PYTHON", test) else {
        return;
    };
    let gw = everything_gateway(&everything).await;
    let url = gw.mcp_url();

    let prompt = marker("prompt");
    let answer = marker("answer");
    let args = json!({"prompt": prompt, "maxTokens": 50}).to_string();
    let (code, out) = py(
        &python,
        &url,
        "legacy",
        &[
            "call",
            "ev__trigger-sampling-request",
            &args,
            "--sample",
            &answer,
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}\n{}", gw.log_text());
    // The client was asked exactly once, with the upstream's own request.
    let asked = out["asked"].as_array().expect("asked");
    assert_eq!(asked.len(), 1, "{out}");
    assert_eq!(asked[0]["method"], "sampling/createMessage", "{out}");
    assert!(
        asked[0]["params"]["messages"][0]["content"]["text"]
            .as_str()
            .is_some_and(|t| t.contains(&prompt)),
        "{out}"
    );
    assert_eq!(asked[0]["params"]["maxTokens"], 50, "{out}");
    // Its answer reached the upstream, which quotes it in the result.
    assert_eq!(out["isError"], false, "{out}");
    assert!(text_of(&out["content"]).contains(&answer), "{out}");

    let name = marker("name");
    let content = json!({"name": name, "check": true}).to_string();
    let (code, out) = py(
        &python,
        &url,
        "legacy",
        &[
            "call",
            "ev__trigger-elicitation-request",
            "{}",
            "--elicit",
            &content,
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}\n{}", gw.log_text());
    let asked = out["asked"].as_array().expect("asked");
    assert_eq!(asked.len(), 1, "{out}");
    assert_eq!(asked[0]["method"], "elicitation/create", "{out}");
    assert!(
        asked[0]["params"]["requestedSchema"]["properties"]["name"].is_object(),
        "{out}"
    );
    assert_eq!(out["isError"], false, "{out}");
    let result = text_of(&out["content"]);
    assert!(result.contains(&name), "{out}");
    assert!(result.contains("accept"), "{out}");

    // roots/list: the tool asks for the caller's roots during the call (its
    // own request at connection time found no caller and was refused).
    let root = format!("file:///{}", marker("root"));
    let (code, out) = py(
        &python,
        &url,
        "legacy",
        &["call", "ev__get-roots-list", "{}", "--roots", &root],
    )
    .await;
    assert_eq!(code, 0, "{out}\n{}", gw.log_text());
    assert_eq!(out["asked"][0]["method"], "roots/list", "{out}");
    assert!(text_of(&out["content"]).contains(&root), "{out}");
}

/// A client without the capability, and a 2026-07-28 client (which takes no
/// server-to-client request mid-call): the upstream gets an error, and the
/// call finishes.
#[tokio::test]
async fn a_caller_that_cannot_be_asked_makes_the_upstream_get_an_error_not_a_hang() {
    let test = "a_caller_that_cannot_be_asked_makes_the_upstream_get_an_error_not_a_hang";
    let Some(everything) = common::external("METAMCP_TEST_EVERYTHING", test) else {
        return;
    };
    let Some(python) = common::external("METAMCP_TEST_PYTHON", test) else {
        return;
    };
    let gw = everything_gateway(&everything).await;
    let url = gw.mcp_url();
    let args = json!({"prompt": "hello"}).to_string();
    for mode in ["legacy", "modern"] {
        // No --sample: the client declares no sampling capability.
        let (code, out) = py(
            &python,
            &url,
            mode,
            &[
                "--timeout",
                "60",
                "call",
                "ev__trigger-sampling-request",
                &args,
            ],
        )
        .await;
        // The upstream's tool fails on the error it got (as a tool error or
        // as the call's error, as the server chooses), quoting -32601.
        let failed = (code == 0 && out["isError"] == true) || code == 2;
        assert!(failed, "{mode}: {out}\n{}", gw.log_text());
        assert_eq!(
            out["asked"].as_array().map_or(0, Vec::len),
            0,
            "{mode}: {out}"
        );
        let said = text_of(&out);
        assert!(
            said.contains("-32601") || said.contains("cannot reach the caller"),
            "{mode}: {out}"
        );
    }
    // The upstream is still fine: an ordinary call works.
    let (code, out) = py(
        &python,
        &url,
        "legacy",
        &["call", "ev__echo", r#"{"message": "still here"}"#],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(text_of(&out["content"]).contains("still here"), "{out}");
}

/// A legacy rmcp client that declares sampling and counts what it is asked.
#[derive(Clone, Default)]
struct Counting {
    asked: Arc<AtomicUsize>,
}

impl ClientHandler for Counting {
    fn get_info(&self) -> ClientConfig {
        let mut caps = ClientCapabilities::default();
        caps.sampling = Some(SamplingCapability::default());
        ClientConfig::new(caps, Implementation::new("bystander", "0.1.0"))
    }

    async fn create_message(
        &self,
        _params: CreateMessageRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        Ok(CreateMessageResult::new(
            SamplingMessage::assistant_text("from the bystander"),
            "bystander-model".into(),
        ))
    }
}

async fn counting_session(gw: &Gateway) -> (RunningService<RoleClient, Counting>, Counting) {
    let config = StreamableHttpClientTransportConfig::with_uri(gw.mcp_url()).auth_header(&gw.token);
    let transport = StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
    let handler = Counting::default();
    let client = handler
        .clone()
        .serve(transport)
        .await
        .unwrap_or_else(|e| panic!("initialize: {e}\n{}", gw.log_text()));
    (client, handler)
}

/// Two sessions that both declare sampling: only the one whose call caused
/// the request is asked.
#[tokio::test]
async fn only_the_session_whose_call_caused_it_is_asked() {
    let test = "only_the_session_whose_call_caused_it_is_asked";
    let Some(everything) = common::external("METAMCP_TEST_EVERYTHING", test) else {
        return;
    };
    let Some(python) = common::external("METAMCP_TEST_PYTHON", test) else {
        return;
    };
    let gw = everything_gateway(&everything).await;
    let (bystander, counts) = counting_session(&gw).await;

    let answer = marker("caller-answer");
    let (code, out) = py(
        &python,
        &gw.mcp_url(),
        "legacy",
        &[
            "call",
            "ev__trigger-sampling-request",
            r#"{"prompt": "who answers?"}"#,
            "--sample",
            &answer,
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}\n{}", gw.log_text());
    assert_eq!(out["asked"].as_array().map_or(0, Vec::len), 1, "{out}");
    assert!(text_of(&out["content"]).contains(&answer), "{out}");
    assert_eq!(
        counts.asked.load(Ordering::SeqCst),
        0,
        "the bystander was asked"
    );

    // The bystander is asked for its own call (so the count above could
    // have been non-zero).
    let mut params = CallToolRequestParams::new("ev__trigger-sampling-request");
    params.arguments = json!({"prompt": "mine"}).as_object().cloned();
    let result = bystander
        .call_tool(params)
        .await
        .unwrap_or_else(|e| panic!("bystander call: {e}\n{}", gw.log_text()));
    assert_eq!(counts.asked.load(Ordering::SeqCst), 1);
    assert!(
        serde_json::to_string(&result)
            .unwrap()
            .contains("from the bystander"),
        "{result:?}"
    );
    let _ = bystander.cancel().await;
}

/// A 2026-07-28 upstream asks for input with an `input_required` result: a
/// legacy caller gets it as real sampling and elicitation requests on its
/// call, and the upstream is retried with the answers.
#[tokio::test]
async fn a_modern_upstreams_input_required_becomes_requests_to_a_legacy_client() {
    let test = "a_modern_upstreams_input_required_becomes_requests_to_a_legacy_client";
    let Some(python) = common::external("METAMCP_TEST_PYTHON", test) else {
        return;
    };
    let gw = Gateway::start(
        Options::default()
            .config(json!({
                "mcpServers": {"cf": {
                    "command": fixture_bin(),
                    "args": ["--conformance", "--name", marker("mrtr")],
                }},
            }))
            .ready(),
    )
    .await;
    gw.wait_server("cf", "ready").await;
    let url = gw.mcp_url();

    let answer = marker("sampled");
    let (code, out) = py(
        &python,
        &url,
        "legacy",
        &[
            "call",
            "cf__test_sampling",
            r#"{"prompt": "What is 2+2?"}"#,
            "--sample",
            &answer,
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}\n{}", gw.log_text());
    let asked = out["asked"].as_array().expect("asked");
    assert_eq!(asked.len(), 1, "{out}");
    assert_eq!(asked[0]["method"], "sampling/createMessage", "{out}");
    assert_eq!(
        out["content"][0]["text"],
        format!("LLM response: {answer}"),
        "{out}"
    );

    let (code, out) = py(
        &python,
        &url,
        "legacy",
        &[
            "call",
            "cf__test_elicitation",
            r#"{"message": "Your name?"}"#,
            "--elicit",
            r#"{"response": "Ada"}"#,
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}\n{}", gw.log_text());
    assert_eq!(out["asked"][0]["method"], "elicitation/create", "{out}");
    assert_eq!(out["asked"][0]["params"]["message"], "Your name?", "{out}");
    assert_eq!(
        out["content"][0]["text"], r#"User response: action=accept, content={"response":"Ada"}"#,
        "{out}"
    );

    // Several input requests at once (roots among them), with the
    // upstream's state: each is asked in turn, and the retry carries every
    // answer and the state.
    let (code, out) = py(
        &python,
        &url,
        "legacy",
        &[
            "call",
            "cf__test_input_required_result_multiple_inputs",
            "{}",
            "--sample",
            "hi",
            "--elicit",
            r#"{"name": "Ada"}"#,
            "--roots",
            "file:///work",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}\n{}", gw.log_text());
    let mut methods: Vec<&str> = out["asked"]
        .as_array()
        .expect("asked")
        .iter()
        .filter_map(|a| a["method"].as_str())
        .collect();
    methods.sort_unstable();
    assert_eq!(
        methods,
        ["elicitation/create", "roots/list", "sampling/createMessage"],
        "{out}"
    );
    assert_eq!(out["content"][0]["text"], "All inputs received", "{out}");
    let (code, out) = py(
        &python,
        &url,
        "legacy",
        &[
            "call",
            "cf__test_input_required_result_list_roots",
            "{}",
            "--roots",
            "file:///a",
            "file:///b",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}\n{}", gw.log_text());
    assert_eq!(
        out["content"][0]["text"], "Client roots: file:///a, file:///b",
        "{out}"
    );

    // A caller without the capability is not asked (the fixture asks
    // regardless of the capabilities it was told): the call ends with an
    // error saying so.
    let (code, out) = py(
        &python,
        &url,
        "legacy",
        &["call", "cf__test_sampling", r#"{"prompt": "x"}"#],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["isError"], true, "{out}");
    assert_eq!(out["asked"].as_array().map_or(0, Vec::len), 0, "{out}");
    assert!(text_of(&out["content"]).contains("could not give"), "{out}");
}

/// A gateway fronting the conformance fixture (a 2026-07-28 upstream).
async fn mrtr_gateway() -> Gateway {
    let gw = Gateway::start(
        Options::default()
            .config(json!({
                "mcpServers": {"cf": {
                    "command": fixture_bin(),
                    "args": ["--conformance", "--name", marker("mrtr")],
                }},
            }))
            .ready(),
    )
    .await;
    gw.wait_server("cf", "ready").await;
    gw
}

/// One 2026-07-28 request to the gateway as `token`; its JSON-RPC answer.
async fn modern(gw: &Gateway, token: &str, method: &str, mut params: Value) -> Value {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}, "sampling": {}},
    });
    let client = common::client_with(token);
    let response = common::modern_request(&client, &gw.mcp_url(), 1, method, &params)
        .send()
        .await
        .expect("MCP request");
    common::jsonrpc_answer(response).await
}

/// The Python SDK as a 2026-07-28 client drives the multi-round-trip call
/// through the gateway: it gets the upstream's input requests, answers them,
/// and retries with the gateway's sealed state, which the upstream never
/// sees; the upstream gets its own state back.
#[tokio::test]
async fn a_modern_python_client_answers_an_upstreams_input_required_through_the_gateway() {
    let test = "a_modern_python_client_answers_an_upstreams_input_required_through_the_gateway";
    let Some(python) = common::external("METAMCP_TEST_PYTHON", test) else {
        return;
    };
    let gw = mrtr_gateway().await;
    let url = gw.mcp_url();
    let answer = marker("modern-sampled");
    let (code, out) = py(
        &python,
        &url,
        "modern",
        &[
            "call",
            "cf__test_sampling",
            r#"{"prompt": "What is 2+2?"}"#,
            "--sample",
            &answer,
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}\n{}", gw.log_text());
    assert_eq!(out["protocolVersion"], "2026-07-28", "{out}");
    assert_eq!(out["asked"].as_array().map_or(0, Vec::len), 1, "{out}");
    assert_eq!(out["asked"][0]["method"], "sampling/createMessage", "{out}");
    assert_eq!(
        out["content"][0]["text"],
        format!("LLM response: {answer}"),
        "{out}"
    );
    // The upstream's own requestState went out sealed and came back to it
    // intact: the fixture answers state-ok only for the state it issued.
    let (code, out) = py(
        &python,
        &url,
        "modern",
        &[
            "call",
            "cf__test_input_required_result_request_state",
            "{}",
            "--elicit",
            r#"{"ok": true}"#,
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}\n{}", gw.log_text());
    assert_eq!(out["asked"][0]["method"], "elicitation/create", "{out}");
    assert_eq!(out["content"][0]["text"], "state-ok", "{out}");
}

/// The gateway's state in place of the upstream's: it does not show the
/// upstream's state as is, and a tampered, foreign (another user, another
/// tool, other arguments) or made-up state is refused with -32602 before the
/// upstream sees it; the genuine one completes the call.
#[tokio::test]
async fn a_sealed_request_state_is_refused_when_tampered_or_foreign() {
    let gw = mrtr_gateway().await;
    let tool = "cf__test_input_required_result_request_state";
    let first = modern(
        &gw,
        &gw.token,
        "tools/call",
        json!({"name": tool, "arguments": {}}),
    )
    .await;
    let result = &first["result"];
    assert_eq!(result["resultType"], "input_required", "{first}");
    assert!(result["inputRequests"]["confirm"].is_object(), "{first}");
    let sealed = result["requestState"]
        .as_str()
        .expect("requestState")
        .to_owned();
    assert_ne!(
        sealed, "fixture-state-confirm",
        "the upstream's state leaked as is"
    );
    let responses = json!({"confirm": {"action": "accept", "content": {"ok": true}}});
    let retry = |name: &str, state: &str, arguments: Value| {
        json!({"name": name, "arguments": arguments,
               "inputResponses": responses, "requestState": state})
    };

    // Another user of the same gateway.
    let password = "bob-password-123";
    let (code, body) = gw
        .post(
            "/api/v1/users",
            json!({"username": "bob", "password": password, "roles": ["user"]}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let (code, login) = gw.login("bob", password).await;
    assert_eq!(code, 200, "{login}");
    let bob = login["access_token"].as_str().unwrap().to_owned();

    let refused = [
        (
            "tampered",
            gw.token.clone(),
            retry(tool, &format!("{sealed}-TAMPERED"), json!({})),
        ),
        (
            "made up",
            gw.token.clone(),
            retry(tool, "fixture-state-confirm", json!({})),
        ),
        ("another user", bob, retry(tool, &sealed, json!({}))),
        (
            "another tool",
            gw.token.clone(),
            retry(
                "cf__test_input_required_result_tampered_state",
                &sealed,
                json!({}),
            ),
        ),
        (
            "other arguments",
            gw.token.clone(),
            retry(tool, &sealed, json!({"x": 1})),
        ),
    ];
    for (what, token, params) in refused {
        let answer = modern(&gw, &token, "tools/call", params).await;
        assert_eq!(answer["error"]["code"], -32602, "{what}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("requestState")),
            "{what}: {answer}"
        );
    }
    // The genuine state, from its own caller, for its own call.
    let answer = modern(
        &gw,
        &gw.token,
        "tools/call",
        retry(tool, &sealed, json!({})),
    )
    .await;
    assert_eq!(answer["result"]["resultType"], "complete", "{answer}");
    assert_eq!(
        answer["result"]["content"][0]["text"], "state-ok",
        "{answer}"
    );
}

/// `metamcp stdio` passes the gateway's sampling request on to its legacy
/// desktop client, and the answer back.
#[tokio::test]
async fn metamcp_stdio_passes_sampling_to_its_desktop_client() {
    let test = "metamcp_stdio_passes_sampling_to_its_desktop_client";
    let Some(everything) = common::external("METAMCP_TEST_EVERYTHING", test) else {
        return;
    };
    let Some(python) = common::external("METAMCP_TEST_PYTHON", test) else {
        return;
    };
    let gw = everything_gateway(&everything).await;
    let command = json!([
        env!("CARGO_BIN_EXE_metamcp"),
        "stdio",
        "--url",
        gw.base,
        "--token",
        gw.token
    ])
    .to_string();
    let answer = marker("desktop-answer");
    let python_path = python.clone();
    let argv: Vec<String> = [
        "--stdio",
        &command,
        "--mode",
        "legacy",
        "call",
        "ev__trigger-sampling-request",
        r#"{"prompt": "via the bridge"}"#,
        "--sample",
        &answer,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let (code, out) = tokio::task::spawn_blocking(move || {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        common::python_client(&python_path, &argv)
    })
    .await
    .expect("python client task");
    assert_eq!(code, 0, "{out}\n{}", gw.log_text());
    assert_eq!(out["asked"].as_array().map_or(0, Vec::len), 1, "{out}");
    assert_eq!(out["asked"][0]["method"], "sampling/createMessage", "{out}");
    assert!(text_of(&out["content"]).contains(&answer), "{out}");

    // Without the capability the bridge refuses, as the gateway would.
    let argv: Vec<String> = [
        "--stdio",
        &command,
        "--mode",
        "legacy",
        "call",
        "ev__trigger-sampling-request",
        r#"{"prompt": "no sampling here"}"#,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let (code, out) = tokio::task::spawn_blocking(move || {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        common::python_client(&python, &argv)
    })
    .await
    .expect("python client task");
    assert!((code == 0 && out["isError"] == true) || code == 2, "{out}");
    assert!(text_of(&out).contains("-32601"), "{out}");
}
