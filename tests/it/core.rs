//! The gateway core against the fixture upstream: both front doors, one
//! pipeline, errors, prefix modes, persistence, security rules, processes.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{self, Gateway, Options, fixture_stdio, texts};

#[tokio::test]
async fn rest_execute_runs_the_pipeline_with_typed_errors() {
    let (gw, _m) = common::gateway_with_fixture("fx-rest").await;

    let (code, body) = gw.get("/api/v1/tools?server=fx").await;
    assert_eq!(code, 200, "{body}");
    let names: Vec<&str> = body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"fx__echo") && names.contains(&"fx__add"),
        "{names:?}"
    );
    let echo = body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "fx__echo")
        .unwrap();
    assert_eq!(echo["server"], "fx");
    assert_eq!(echo["original_name"], "echo");
    assert_eq!(echo["schema"]["input"], echo["input_schema"]);
    assert_eq!(echo["enabled"], true);

    let (code, body) = gw.execute("fx__echo", json!({"message": "hello"})).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(texts(&body["result"]), ["hello"]);
    assert_eq!(body["server"], "fx");

    let (code, body) = gw.execute("fx__add", json!({"a": 2, "b": 3})).await;
    assert_eq!(code, 200);
    assert_eq!(body["result"]["structuredContent"]["sum"], 5);

    // Arguments are validated before anything is sent upstream: the
    // fixture's call counter does not move.
    let (_, before) = gw.execute("fx__count_calls", json!({})).await;
    let (code, body) = gw.execute("fx__add", json!({"a": "two", "b": 3})).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["type"], "urn:metamcp:problem:invalid-arguments");
    assert!(
        body["errors"][0].as_str().unwrap().starts_with("a:"),
        "names the field: {body}"
    );
    let (code, body) = gw.execute("fx__echo", json!({})).await;
    assert_eq!(code, 422);
    assert!(
        body["detail"].as_str().unwrap().contains("message"),
        "{body}"
    );
    let (_, after) = gw.execute("fx__count_calls", json!({})).await;
    let count = |v: &Value| texts(&v["result"])[0].parse::<u64>().unwrap();
    assert_eq!(
        count(&after),
        count(&before) + 1,
        "only the count_calls call itself reached the upstream"
    );

    // A tool-level error is a result, not a failure of the gateway.
    let (code, body) = gw.execute("fx__fail", json!({"message": "boom"})).await;
    assert_eq!(code, 200);
    assert_eq!(body["result"]["isError"], true);
    assert_eq!(texts(&body["result"]), ["fixture failure: boom"]);

    // An upstream protocol error is a 502 naming the server.
    let (code, body) = gw.execute("fx__protocol_error", json!({})).await;
    assert_eq!(code, 502, "{body}");
    assert_eq!(body["type"], "urn:metamcp:problem:upstream-error");
    assert_eq!(body["server"], "fx");

    let (code, body) = gw.execute("nope", json!({})).await;
    assert_eq!(code, 404);
    assert_eq!(body["type"], "urn:metamcp:problem:unknown-tool");
    assert!(
        gw.log_text().contains("fx__echo"),
        "request spans carry the path into the log"
    );
}

#[tokio::test]
async fn bad_input_gets_clear_4xx_and_changes_nothing() {
    let gw = Gateway::start(Options::default().env("META_MCP_MAX_BODY_BYTES", "2048")).await;
    let client = gw.client();
    let post_raw = |path: &str, body: String, ct: &'static str| {
        client
            .post(gw.url(path))
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let problem = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        let body: Value = r.json().await.unwrap();
        assert_eq!(ct, "application/problem+json");
        (status, body)
    };
    let (s, b) = problem(
        post_raw("/api/v1/tools", "{not json".into(), "application/json")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, b["type"].as_str().unwrap()),
        (400, "urn:metamcp:problem:malformed-json")
    );
    let (s, _) = problem(
        post_raw("/api/v1/tools", "{}".into(), "text/plain")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 415);
    let huge = json!({"name": "big", "description": "x".repeat(10_000)}).to_string();
    let (s, b) = problem(
        post_raw("/api/v1/tools", huge, "application/json")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, b["type"].as_str().unwrap()),
        (413, "urn:metamcp:problem:body-too-large")
    );
    let (s, b) = gw
        .post("/api/v1/tools", json!({"name": "t", "tags": "not-a-list"}))
        .await;
    assert_eq!(s, 422, "{b}");
    let (s, b) = gw.post("/api/v1/tools", json!({"name": "bad name!"})).await;
    assert_eq!(s, 422, "{b}");
    let (s, b) = gw
        .post(
            "/api/v1/tools",
            json!({"name": "t", "input_schema": {"type": 5}}),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    // A bulk registration with one bad entry stores none of them.
    let (s, b) = gw
        .post(
            "/api/v1/tools",
            json!([{"name": "ok1"}, {"name": "ok2", "security_level": -1}]),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(b["index"], 1);
    let (s, b) = gw.post("/api/v1/servers", json!({"name": "x"})).await;
    assert_eq!(s, 422, "{b}");
    let (_, tools) = gw.get("/api/v1/tools").await;
    assert_eq!(tools["total"], 0, "nothing was stored: {tools}");
    let (_, servers) = gw.get("/api/v1/servers").await;
    assert_eq!(servers["total"], 0);
    let (s, b) = gw.get("/api/v1/nothing-here").await;
    assert_eq!(
        (s, b["type"].as_str().unwrap()),
        (404, "urn:metamcp:problem:no-route")
    );
}

#[tokio::test]
async fn hand_registered_tools_http_catalog_and_bulk() {
    // A tiny HTTP tool endpoint inside the test.
    let app = axum::Router::new().route(
        "/double",
        axum::routing::post(|axum::Json(v): axum::Json<Value>| async move {
            axum::Json(json!({"doubled": v["n"].as_i64().unwrap_or(0) * 2}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/double", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let gw = Gateway::start(Options::default()).await;
    let (code, body) = gw
        .post(
            "/api/v1/tools",
            json!({
                "name": "double",
                "description": "Doubles n",
                "endpoint": endpoint,
                "category": "math",
                "capabilities": ["compute"],
                "security_level": 2,
                "schema": {"input": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}, "output": {}},
                "metadata": {"team": "core"},
                "version": "1.0.0",
                "author": "tests",
                "tags": ["math", "demo"]
            }),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["source"], "http");
    assert_eq!(body["security_level"], 2);
    let (code, body) = gw.execute("double", json!({"n": 21})).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["result"]["structuredContent"]["doubled"], 42);
    let (code, _) = gw.execute("double", json!({"n": "x"})).await;
    assert_eq!(code, 422);

    // Bulk import: all or nothing; catalog-only entries are listed, not run.
    let (code, body) = gw
        .post("/api/v1/tools/import", json!({"tools": [{"name": "note_a", "description": "a"}, {"name": "note_b", "tags": ["x"]}]}))
        .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["created"], 2);
    let (code, body) = gw.execute("note_a", json!({})).await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["type"], "urn:metamcp:problem:tool-not-executable");
    let (code, _) = gw.post("/api/v1/tools", json!({"name": "note_a"})).await;
    assert_eq!(code, 409, "duplicate names are refused");
    let (_, body) = gw.get("/api/v1/tools?tag=x").await;
    assert_eq!(body["total"], 1);
    let (_, body) = gw.get("/api/v1/tools?category=math&limit=1").await;
    assert_eq!(body["tools"][0]["name"], "double");

    let (code, body) = gw
        .send("PUT", "/api/v1/tools/note_b", json!({"category": "notes"}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["category"], "notes");
    assert_eq!(body["tags"], json!(["x"]), "fields not sent are kept");
    let (code, _) = gw.send("DELETE", "/api/v1/tools/note_b", json!({})).await;
    assert_eq!(code, 204);
    let (code, _) = gw.get("/api/v1/tools/note_b").await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn security_rules_hold() {
    let gw = Gateway::start(Options::default()).await;
    // A stdio server cannot be created over REST without the setting.
    let (code, body) = gw
        .post(
            "/api/v1/servers",
            json!({"name": "sh", "command": "/bin/sh", "args": ["-c", "echo pwned"]}),
        )
        .await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(body["type"], "urn:metamcp:problem:stdio-not-allowed");
    // Metadata addresses are refused for remote servers and HTTP tools.
    let (code, body) = gw
        .post(
            "/api/v1/servers",
            json!({"name": "meta", "url": "http://169.254.169.254/latest/meta-data"}),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["type"], "urn:metamcp:problem:url-refused");
    let (code, body) = gw
        .post(
            "/api/v1/tools",
            json!({"name": "meta", "endpoint": "http://169.254.169.254/latest/meta-data"}),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["type"], "urn:metamcp:problem:endpoint-refused");
    let (_, servers) = gw.get("/api/v1/servers").await;
    assert_eq!(servers["total"], 0);
    // A foreign Host or Origin is refused on the whole listener.
    let client = gw.client();
    for path in ["/api/v1/health", "/mcp"] {
        let r = client
            .get(gw.url(path))
            .header("host", "evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
        let r = client
            .get(gw.url(path))
            .header("origin", "https://evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
    }
    let r = client
        .get(gw.url("/api/v1/health"))
        .header("origin", "http://localhost:3000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn stdio_children_get_a_clean_environment() {
    let m = common::marker("fx-env");
    let gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {"fx": {"command": common::fixture_bin(), "args": ["--name", m], "env": {"GIVEN": "yes"}}}}))
            .env("META_MCP_OUTBOUND_TIMEOUT_SECS", "30")
            .env("SOME_GATEWAY_SECRET", "s3cr3t")
            .ready(),
    )
    .await;
    gw.wait_server("fx", "ready").await;
    for (var, expected) in [
        ("META_MCP_DATA_DIR", Some("<unset>")),
        ("META_MCP_OUTBOUND_TIMEOUT_SECS", Some("<unset>")),
        ("SOME_GATEWAY_SECRET", Some("<unset>")),
        ("GIVEN", Some("yes")),
        ("PATH", None),
    ] {
        let (code, body) = gw.execute("fx__env", json!({"name": var})).await;
        assert_eq!(code, 200);
        let value = &texts(&body["result"])[0];
        match expected {
            Some(e) => assert_eq!(value, e, "{var}"),
            None => assert_ne!(value, "<unset>", "{var} is passed through"),
        }
    }
}

#[tokio::test]
async fn servers_and_overlays_survive_a_restart_and_config_servers_are_read_only() {
    let cfg_marker = common::marker("fx-cfg");
    let api_marker = common::marker("fx-api");
    let config = json!({"mcpServers": {"cfg": fixture_stdio(&cfg_marker)}});
    let opts = Options::default()
        .config(config.clone())
        .env("META_MCP_ALLOW_STDIO_API", "true")
        .ready();
    let mut gw = Gateway::start(opts.clone()).await;
    let (code, body) = gw
        .post("/api/v1/servers", json!({"name": "api", "command": common::fixture_bin(), "args": ["--name", api_marker]}))
        .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["source"], "api");
    gw.wait_server("api", "ready").await;
    gw.wait_tool("api__echo", true).await;
    let (code, body) = gw
        .send(
            "PUT",
            "/api/v1/tools/api__echo",
            json!({"category": "text", "tags": ["demo"], "description": "Repeats a message", "enabled": true}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = gw
        .send("PUT", "/api/v1/tools/cfg__add", json!({"enabled": false}))
        .await;
    assert_eq!(code, 200, "{body}");
    // The config server cannot be changed or deleted over REST.
    let (code, body) = gw.send("DELETE", "/api/v1/servers/cfg", json!({})).await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["type"], "urn:metamcp:problem:read-only-server");
    let (code, _) = gw
        .send(
            "PUT",
            "/api/v1/servers/cfg",
            json!({"command": "/bin/true"}),
        )
        .await;
    assert_eq!(code, 409);
    // A tool of a server cannot be deleted, only disabled.
    let (code, _) = gw
        .send("DELETE", "/api/v1/tools/api__echo", json!({}))
        .await;
    assert_eq!(code, 409);

    let (data_dir, tmp) = gw.keep_data();
    let status = gw.stop().expect("exit status");
    assert!(status.success(), "clean exit: {status:?}");
    let mut opts = opts;
    opts.data_dir = Some(data_dir);
    let gw = Gateway::start(opts).await;
    gw.wait_server("api", "ready").await;
    gw.wait_tool("api__echo", true).await;
    let (_, echo) = gw.get("/api/v1/tools/api__echo").await;
    assert_eq!(echo["category"], "text");
    assert_eq!(echo["tags"], json!(["demo"]));
    assert_eq!(echo["description"], "Repeats a message");
    gw.wait_tool("cfg__add", true).await;
    let (_, add) = gw.get("/api/v1/tools/cfg__add").await;
    assert_eq!(add["enabled"], false);
    let (code, body) = gw.execute("cfg__add", json!({"a": 1, "b": 2})).await;
    assert_eq!(code, 409, "a disabled tool is refused: {body}");
    let (_, servers) = gw.get("/api/v1/servers").await;
    let sources: Vec<(&str, &str)> = servers["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["source"].as_str().unwrap()))
        .collect();
    assert_eq!(sources, [("cfg", "config"), ("api", "api")]);
    drop(gw);
    drop(tmp);
}

#[tokio::test]
async fn no_process_outlives_its_server_or_the_gateway() {
    let cfg_marker = common::marker("fx-leak-cfg");
    let api_marker = common::marker("fx-leak-api");
    let mut gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {"cfg": fixture_stdio(&cfg_marker)}}))
            .env("META_MCP_ALLOW_STDIO_API", "true")
            .ready(),
    )
    .await;
    // A wrapper shell that starts the server as its child: the whole
    // process group must go, not just the direct child.
    let script = format!("{} --name {api_marker}", common::fixture_bin());
    let (code, body) = gw
        .post(
            "/api/v1/servers",
            json!({"name": "api", "command": "/bin/sh", "args": ["-c", script]}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    gw.wait_server("api", "ready").await;
    assert!(!common::processes_with(&api_marker).is_empty());
    let (code, _) = gw.send("DELETE", "/api/v1/servers/api", json!({})).await;
    assert_eq!(code, 204);
    let left = common::wait_no_processes(&api_marker, Duration::from_secs(10)).await;
    assert!(left.is_empty(), "processes left after removal: {left:?}");
    let (code, _) = gw.get("/api/v1/servers/api").await;
    assert_eq!(code, 404);

    assert_eq!(common::processes_with(&cfg_marker).len(), 1);
    let status = gw.stop().expect("exit status");
    assert!(status.success(), "{status:?}");
    let left = common::wait_no_processes(&cfg_marker, Duration::from_secs(10)).await;
    assert!(left.is_empty(), "processes left after shutdown: {left:?}");
}

#[tokio::test]
async fn one_failing_upstream_never_breaks_the_others() {
    let a = common::marker("fx-a");
    let b = common::marker("fx-b");
    let gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {
                "a": fixture_stdio(&a),
                "b": fixture_stdio(&b),
                "broken": {"command": "/nonexistent/mcp-server"},
            }}))
            .env("META_MCP_CALL_TIMEOUT_SECS", "1")
            .ready(),
    )
    .await;
    gw.wait_server("a", "ready").await;
    gw.wait_server("b", "ready").await;
    let broken = gw.wait_server("broken", "failed").await;
    assert!(
        broken["status"]["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot start"),
        "{broken}"
    );
    let (_, health) = gw.get("/api/v1/health/detailed").await;
    assert_eq!(health["status"], "degraded");

    // A call that outlives its timeout is a 504; the other server answers
    // meanwhile.
    let slow = gw.execute("a__slow", json!({"ms": 5000}));
    let other = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        gw.execute("b__echo", json!({"message": "still here"}))
            .await
    };
    let ((slow_code, slow_body), (other_code, other_body)) = tokio::join!(slow, other);
    assert_eq!(slow_code, 504, "{slow_body}");
    assert_eq!(slow_body["type"], "urn:metamcp:problem:upstream-timeout");
    assert_eq!(other_code, 200);
    assert_eq!(texts(&other_body["result"]), ["still here"]);

    // Server a crashes: its call fails fast while b keeps working, and a
    // comes back by itself.
    let (code, body) = gw.execute("a__exit", json!({"code": 3})).await;
    assert_eq!(code, 502, "{body}");
    assert_eq!(body["type"], "urn:metamcp:problem:upstream-connection-lost");
    let (code, body) = gw.execute("b__echo", json!({"message": "ok"})).await;
    assert_eq!(code, 200, "{body}");
    gw.wait_server("a", "ready").await;
    let (code, body) = gw.execute("a__echo", json!({"message": "back"})).await;
    assert_eq!(code, 200, "{body}");
    let status = gw.get("/api/v1/servers/a").await.1;
    assert!(
        status["status"]["attempts"].as_u64().unwrap() >= 2,
        "{status}"
    );
}

#[tokio::test]
async fn prefix_modes_derive_names_and_never_overwrite() {
    let a = common::marker("fx-pa");
    let b = common::marker("fx-pb");
    let servers = json!({"a": fixture_stdio(&a), "b": fixture_stdio(&b)});

    let gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": servers, "prefix_mode": "never"}))
            .ready(),
    )
    .await;
    gw.wait_server("a", "ready").await;
    let b_status = gw.wait_server("b", "ready").await;
    gw.wait_tool("echo", true).await;
    let (_, echo) = gw.get("/api/v1/tools/echo").await;
    assert_eq!(echo["server"], "a", "the first server keeps the name");
    let conflicts = gw.get("/api/v1/servers/b").await.1["conflicts"].clone();
    assert!(
        conflicts
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c.as_str().unwrap().contains("echo")),
        "the refused tool shows in b's status: {conflicts} {b_status}"
    );
    drop(gw);

    let gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": servers, "prefix_mode": "conditional", "separator": "."}))
            .ready(),
    )
    .await;
    gw.wait_server("a", "ready").await;
    gw.wait_server("b", "ready").await;
    gw.wait_tool("a.echo", true).await;
    gw.wait_tool("b.echo", true).await;
    let (code, body) = gw.execute("b.echo", json!({"message": "via b"})).await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test]
async fn a_bad_setting_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let run = |envs: &[(&str, &str)], args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_metamcp"));
        cmd.arg("serve")
            .args(args)
            .env("META_MCP_DATA_DIR", dir.path());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&[("META_MCP_PORT", "eighty")], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("META_MCP_PORT"), "{err}");
    let (code, err) = run(&[("META_MCP_DATABASE_URL", "mysql://db/x")], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("META_MCP_DATABASE_URL"), "{err}");
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"mcpServers": {"x": {"command": "a", "url": "http://b"}}}"#,
    )
    .unwrap();
    let (code, err) = run(&[], &["--config", bad.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("mcpServers.x"), "{err}");
    let secret = dir.path().join("secret.json");
    std::fs::write(
        &secret,
        r#"{"mcpServers": {"x": {"command": "a", "env": {"T": "${env:METAMCP_UNSET_VAR}"}}}}"#,
    )
    .unwrap();
    let (code, err) = run(&[], &["--config", secret.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("METAMCP_UNSET_VAR"), "{err}");
}

#[tokio::test]
async fn remote_streamable_http_upstream_and_binding_by_url() {
    let m = common::marker("fx-http");
    let (_fixture, url) = common::fixture_http(&m);
    let gw = Gateway::start(Options::default()).await;
    let (code, body) = gw
        .post(
            "/api/v1/servers",
            json!({"name": "remote", "url": url, "headers": {"X-Api-Key": "k3y-s3cret"}}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    assert!(
        !body.to_string().contains("k3y-s3cret"),
        "header values are not returned: {body}"
    );
    let status = gw.wait_server("remote", "ready").await;
    assert_eq!(
        status["status"]["protocol_version"], "2026-07-28",
        "a modern upstream is detected: {status}"
    );
    gw.wait_tool("remote__echo", true).await;
    let (code, body) = gw
        .execute("remote__echo", json!({"message": "over http"}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(texts(&body["result"]), ["over http"]);

    // Registering a tool whose endpoint is the server's MCP URL sets the
    // metadata of that server's tool of the same name.
    let (code, body) = gw
        .post(
            "/api/v1/tools",
            json!({"name": "echo", "endpoint": url, "category": "bound", "tags": ["t"]}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["name"], "remote__echo");
    assert_eq!(body["category"], "bound");
    let (_, listed) = gw.get("/api/v1/tools?category=bound").await;
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["tools"][0]["server"], "remote");
}
