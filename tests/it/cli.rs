//! The CLI client, run as the real binary against a running gateway.

use std::process::Command;

use serde_json::{Value, json};

use crate::common::{self, Gateway, Options, fixture_stdio};

fn cli(gw_url: &str, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_metamcp"));
    cmd.args(args)
        .env("META_MCP_URL", gw_url)
        .env_remove("META_MCP_TOKEN");
    if let Some(token) = common::token_for(gw_url) {
        cmd.env("META_MCP_TOKEN", token);
    }
    let out = cmd.output().expect("run metamcp");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_of(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[tokio::test]
async fn the_cli_manages_servers_tools_and_profiles() {
    let m = common::marker("fx-cli");
    let remote = common::marker("fx-cli-remote");
    let (_fixture, url) = common::fixture_http(&remote);
    let gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {"fx": fixture_stdio(&m)}}))
            .ready(),
    )
    .await;
    gw.wait_server("fx", "ready").await;
    let base = gw.base.clone();
    let run = move |args: Vec<String>| {
        let base = base.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                cli(&base, &args)
            })
            .await
            .unwrap()
        }
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let (code, out, err) = run(args(&["servers", "list"])).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("NAME"), "a table: {out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("fx") && l.contains("ready") && l.contains("config")),
        "{out}"
    );

    let (code, out, err) = run(args(&[
        "servers",
        "add",
        "remote",
        "--http",
        &url,
        "--header",
        "X-Team: core",
    ]))
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("added server remote"), "{out}");
    gw.wait_server("remote", "ready").await;
    let (code, out, _) = run(args(&["servers", "status", "remote", "--json"])).await;
    assert_eq!(code, 0);
    let status = json_of(&out);
    assert_eq!(status["status"]["status"], "ready");
    assert_eq!(status["headers"]["X-Team"], "********");
    let (code, out, _) = run(args(&["servers", "status"])).await;
    assert_eq!(code, 0);
    assert!(out.contains("remote") && out.contains("fx"), "{out}");

    let (code, out, _) = run(args(&["tools", "list", "--server", "fx"])).await;
    assert_eq!(code, 0);
    assert!(out.lines().any(|l| l.starts_with("fx__echo")), "{out}");
    assert!(!out.contains("remote__echo"), "filtered by server: {out}");
    let (code, out, _) = run(args(&["tools", "list", "--json"])).await;
    assert_eq!(code, 0);
    assert!(json_of(&out)["total"].as_u64().unwrap() >= 18);
    let (code, out, _) = run(args(&["tools", "show", "remote__echo"])).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("original_name   echo") && out.contains("\"message\""),
        "{out}"
    );
    let (code, out, _) = run(args(&[
        "tools",
        "call",
        "remote__echo",
        "-a",
        "message=from the cli",
    ]))
    .await;
    assert_eq!((code, out.trim()), (0, "from the cli"));
    let (code, out, _) = run(args(&[
        "tools",
        "call",
        "fx__add",
        "--args",
        r#"{"a": 2, "b": 40}"#,
        "--json",
    ]))
    .await;
    assert_eq!(code, 0);
    assert_eq!(json_of(&out)["result"]["structuredContent"]["sum"], 42);
    let (code, _, err) = run(args(&["tools", "call", "fx__fail", "-a", "message=x"])).await;
    assert_eq!(code, 1, "a tool error is a failing exit: {err}");
    let (code, _, err) = run(args(&[
        "tools", "call", "fx__add", "-a", "a=oops", "-a", "b=1",
    ]))
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("422") && err.contains("a:"), "{err}");

    let (code, out, err) = run(args(&[
        "profiles",
        "add",
        r#"{"name": "ops", "servers": ["remote"]}"#,
    ]))
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("/mcp/ops"), "{out}");
    let (code, out, _) = run(args(&["profiles", "show", "ops"])).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("remote__echo") && !out.contains("fx__echo"),
        "{out}"
    );
    let (code, out, _) = run(args(&["profiles", "list"])).await;
    assert_eq!(code, 0);
    assert!(out.lines().any(|l| l.starts_with("ops")), "{out}");
    let (code, _, _) = run(args(&["profiles", "remove", "ops"])).await;
    assert_eq!(code, 0);
    let (code, _, err) = run(args(&["profiles", "show", "ops"])).await;
    assert_eq!(code, 1);
    assert!(err.contains("404"), "{err}");

    let (code, _, err) = run(args(&["servers", "remove", "fx"])).await;
    assert_eq!(code, 1, "config servers are read-only");
    assert!(err.contains("config file"), "{err}");
    let (code, out, _) = run(args(&["servers", "remove", "remote"])).await;
    assert_eq!(code, 0);
    assert!(out.contains("removed server remote"));
}

#[test]
fn the_cli_says_clearly_when_the_gateway_is_unreachable() {
    let port = common::free_port();
    let (code, out, err) = cli(&format!("http://127.0.0.1:{port}"), &["servers", "list"]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(
        err.contains("cannot reach the gateway") && err.contains("metamcp serve"),
        "{err}"
    );
}

#[tokio::test]
async fn tools_search_finds_tools_by_what_they_do() {
    let gw = Gateway::start(Options::default()).await;
    let (code, body) = gw
        .post(
            "/api/v1/tools/import",
            json!([
                {"name": "readFile", "description": "Read the contents of a file from disk", "tags": ["fs"], "category": "files"},
                {"name": "send_email", "description": "Send an email message to a recipient", "tags": ["mail"]},
                {"name": "get_weather", "description": "Current weather forecast for a city", "category": "weather"},
            ]),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = gw
        .get("/api/v1/tools/search?q=reading%20files&search_type=keyword")
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["results"][0]["tool"]["name"], "readFile",
        "camelCase names and stems match: {body}"
    );
    let matched = body["results"][0]["matched"].as_array().unwrap();
    assert!(
        matched.contains(&json!("name")) && matched.contains(&json!("description")),
        "{body}"
    );
    let (_, body) = gw.get("/api/v1/tools/search?q=email").await;
    assert_eq!(body["results"][0]["tool"]["name"], "send_email");
    assert_eq!(body["used"], "keyword");
    assert!(body["note"].is_string(), "hybrid says it fell back: {body}");
    let (_, body) = gw.get("/api/v1/tools/search?q=file&category=weather").await;
    assert_eq!(body["total"], 0, "filters apply: {body}");
    let (code, _) = gw.get("/api/v1/tools/search?q=x&search_type=fuzzy").await;
    assert_eq!(code, 422);
    let (code, _) = gw.get("/api/v1/tools/search?q=x&max_results=0").await;
    assert_eq!(code, 422);
    // A removed tool disappears from results at once.
    let (code, _) = gw
        .send("DELETE", "/api/v1/tools/send_email", json!({}))
        .await;
    assert_eq!(code, 204);
    let (_, body) = gw.get("/api/v1/tools/search?q=email").await;
    assert_eq!(body["total"], 0, "{body}");

    let base = gw.base.clone();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        cli(
            &base,
            &["tools", "search", "weather in a city", "--type", "keyword"],
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("get_weather")),
        "{out}"
    );
}

/// `metamcp user ...` manages users in the database without a gateway.
#[tokio::test]
async fn the_user_cli_manages_users_in_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let user = |args: &[&str], stdin: Option<&str>| {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_metamcp"))
            .arg("user")
            .args(args)
            .env("META_MCP_DATA_DIR", &data)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = user(
        &["add", "bob", "--role", "operator", "--password-stdin"],
        Some("bob-password-1234\n"),
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = user(&["add", "carol", "--role", "viewer"], None);
    assert_eq!(code, 0);
    let generated = out
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .unwrap()
        .to_owned();
    let (code, _, err) = user(&["add", "bob"], None);
    assert_ne!(code, 0);
    assert!(err.contains("already exists"), "{err}");
    let (code, _, err) = user(&["add", "dave", "--role", "wizard"], None);
    assert_ne!(code, 0);
    assert!(err.contains("unknown role"), "{err}");
    let (code, _, err) = user(&["add", "erin", "--password-stdin"], Some("short\n"));
    assert_ne!(code, 0, "a weak password is refused");
    assert!(err.contains("12 characters"), "{err}");
    let (_, listed, _) = user(&["list"], None);
    assert!(
        listed.contains("bob") && listed.contains("operator") && listed.contains("carol"),
        "{listed}"
    );
    let (code, _, _) = user(&["disable", "carol"], None);
    assert_eq!(code, 0);

    let gw = Gateway::start(Options {
        data_dir: Some(data.clone()),
        // Users exist already, so no `admin` is created: no harness login.
        anonymous: true,
        ..Default::default()
    })
    .await;
    let (code, login) = gw.login("bob", "bob-password-1234").await;
    assert_eq!(code, 200, "{login}");
    assert!(
        !gw.data_dir.join("initial-admin-password").exists(),
        "no admin is made up when users exist"
    );
    let (code, _) = gw.login("carol", &generated).await;
    assert_eq!(code, 401, "a disabled user cannot log in");
    drop(gw);
    let (code, _, _) = user(&["enable", "carol"], None);
    assert_eq!(code, 0);
    let (code, out, _) = user(&["passwd", "bob"], None);
    assert_eq!(code, 0);
    let new = out
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .unwrap()
        .to_owned();
    let gw = Gateway::start(Options {
        data_dir: Some(data),
        anonymous: true,
        ..Default::default()
    })
    .await;
    assert_eq!(gw.login("carol", &generated).await.0, 200);
    assert_eq!(gw.login("bob", "bob-password-1234").await.0, 401);
    assert_eq!(gw.login("bob", &new).await.0, 200);
}
