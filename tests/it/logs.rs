//! Logs: every answer carries a request id (the caller's when well-formed),
//! the log lines of that request carry it too, and no secret or tool
//! argument reaches the log, whatever the traffic.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{
    ADMIN_PASSWORD, Gateway, Options, client_with, fixture_http_with, gateway_with_fixture, marker,
    mcp_request,
};

/// The gateway's JSON log lines (the harness asks for JSON).
fn log_lines(gw: &Gateway) -> Vec<Value> {
    gw.log_text()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The `request_id` of the request span a log line sits in, if any.
fn request_id_of(line: &Value) -> Option<&str> {
    line["spans"]
        .as_array()?
        .iter()
        .find_map(|s| s["request_id"].as_str())
}

/// Waits for a log line with `message` inside the request `id`.
async fn wait_line(gw: &Gateway, message: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(line) = log_lines(gw)
            .into_iter()
            .find(|l| l["fields"]["message"] == message && request_id_of(l) == Some(id))
        {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no log line {message:?} of request {id} within 20s; log:\n{}",
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is_uuid(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok() && id.len() == 36
}

#[tokio::test]
async fn answers_and_their_log_lines_carry_one_request_id() {
    let (gw, _m) = gateway_with_fixture("fx-request-ids").await;
    let get = |id: Option<&str>, token: Option<String>| {
        let client = match token {
            Some(t) => client_with(&t),
            None => reqwest::Client::new(),
        };
        let mut request = client.get(gw.url("/api/v1/servers"));
        if let Some(id) = id {
            request = request.header("x-request-id", id);
        }
        async move {
            let r = request.send().await.unwrap();
            let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
            (r.status().as_u16(), id)
        }
    };
    // A well-formed id of the caller is kept...
    assert_eq!(
        get(Some("it-req.0001:a/b"), Some(gw.token.clone())).await,
        (200, "it-req.0001:a/b".to_owned())
    );
    // ...anything else replaced by one of ours, also on refusals.
    for bad in [
        "two words".to_owned(),
        "{\"forged\":1}".to_owned(),
        "x".repeat(129),
    ] {
        let (_, id) = get(Some(&bad), Some(gw.token.clone())).await;
        assert!(is_uuid(&id), "{bad:?} replaced by {id}");
    }
    let (status, id) = get(None, None).await;
    assert_eq!(status, 401);
    assert!(is_uuid(&id), "{id}");
    let (_, first) = get(None, Some(gw.token.clone())).await;
    let (_, second) = get(None, Some(gw.token.clone())).await;
    assert_ne!(first, second, "a fresh id per request");
    wait_line(&gw, "finished processing request", "it-req.0001:a/b").await;

    // A tool call over REST: its pipeline's line carries the id.
    let r = gw
        .client()
        .post(gw.url("/api/v1/tools/fx__echo/execute"))
        .header("x-request-id", "it-rest-call-1")
        .json(&json!({"arguments": {"message": "hi"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "it-rest-call-1");
    let line = wait_line(&gw, "tool call finished", "it-rest-call-1").await;
    assert_eq!(line["fields"]["outcome"], "success", "{line}");

    // Over MCP the call runs in the MCP service's own task: its line still
    // carries the id of the HTTP request that carried it.
    let r = gw
        .client()
        .post(gw.mcp_url())
        .header("x-request-id", "it-mcp-call-1")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "fx__echo")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "fx__echo", "arguments": {"message": "hi"},
                "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                          "io.modelcontextprotocol/clientCapabilities": {}}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "it-mcp-call-1");
    let line = wait_line(&gw, "tool call finished", "it-mcp-call-1").await;
    assert_eq!(
        line["spans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap_or_default())
            .collect::<Vec<_>>(),
        ["request", "mcp", "tool_call"],
        "{line}"
    );
}

/// A distinctive value that would stand out in the log.
fn secret(kind: &str) -> String {
    format!("{kind}-{}", uuid::Uuid::new_v4().simple())
}

/// A PostgreSQL URL with a password (the test server trusts local
/// connections and ignores it) on a fresh schema, or `None` without
/// PostgreSQL (outside CI).
async fn postgres_url_with_password(password: &str) -> Option<String> {
    let Ok(base) = std::env::var("METAMCP_TEST_POSTGRES_URL") else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("METAMCP_TEST_POSTGRES_URL must be set in CI");
        }
        eprintln!("logs: METAMCP_TEST_POSTGRES_URL is not set; the database URL is SQLite's");
        return None;
    };
    let schema = format!("metamcp_logs_{}", uuid::Uuid::new_v4().simple());
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&base)
        .await
        .expect("connect to PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let mut url = url::Url::parse(&base).unwrap();
    url.set_password(Some(password)).unwrap();
    let sep = if url.query().is_some() { '&' } else { '?' };
    Some(format!("{url}{sep}options=-c%20search_path%3D{schema}"))
}

#[tokio::test]
async fn no_secret_and_no_argument_reaches_the_log() {
    let upstream_token = secret("upstream-bearer");
    let env_secret = secret("stdio-env-secret");
    let db_password = secret("db-password");
    let secret_key = secret("signing-key-of-at-least-32-bytes");
    let encryption_key = secret("encryption-key");
    let carol_password = secret("carol-password");
    let wrong_password = secret("wrong-password");
    let forged_token = secret("forged-bearer");
    let argument = secret("sk-live-argument");
    let invalid_argument = secret("sk-live-invalid");

    let m = marker("fx-logs");
    let (_fx, url) = fixture_http_with(&m, &["--require-bearer", &upstream_token]);
    let mut options = Options::default()
        .config(json!({"mcpServers": {
            "remote": {"url": url, "headers": {"Authorization": "Bearer ${env:IT_UPSTREAM_TOKEN}"}},
            // It prints its secret to stderr, which goes to our log.
            "local": {"command": crate::common::fixture_bin(),
                      "args": ["--name", m, "--print-env", "FIXTURE_SECRET"],
                      "env": {"FIXTURE_SECRET": env_secret}},
        }}))
        .env("IT_UPSTREAM_TOKEN", &upstream_token)
        .env("META_MCP_SECRET_KEY", &secret_key)
        .env("META_MCP_ENCRYPTION_KEY", &encryption_key)
        // As verbose as an operator can make it.
        .env("META_MCP_LOGGING_LEVEL", "trace")
        .env("RUST_LOG", "trace,rmcp=error,sqlx=warn,hyper=warn")
        .ready();
    let database_url = postgres_url_with_password(&db_password).await;
    if let Some(url) = &database_url {
        options = options.env("META_MCP_DATABASE_URL", url);
    }
    let mut gw = Gateway::start(options).await;
    gw.wait_server("remote", "ready").await;
    gw.wait_server("local", "ready").await;

    // Users, passwords, tokens, keys.
    let (code, body) = gw
        .post(
            "/api/v1/users",
            json!({"username": "carol", "password": carol_password}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(gw.login("carol", &wrong_password).await.0, 401);
    assert_eq!(gw.login("mallory", &wrong_password).await.0, 401);
    let (code, tokens) = gw.login("carol", &carol_password).await;
    assert_eq!(code, 200, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let (code, _) = gw
        .send_as(Some(&access), "GET", "/api/v1/auth/me", None)
        .await;
    assert_eq!(code, 200);
    let (code, refreshed) = gw
        .send_as(
            None,
            "POST",
            "/api/v1/auth/refresh",
            Some(json!({"refresh_token": refresh})),
        )
        .await;
    assert_eq!(code, 200, "{refreshed}");
    let (code, key) = gw
        .send_as(
            Some(&access),
            "POST",
            "/api/v1/auth/keys",
            Some(json!({"name": "carol's key"})),
        )
        .await;
    assert_eq!(code, 201, "{key}");
    let key = key["key"].as_str().unwrap().to_owned();
    assert_eq!(
        gw.send_as(Some(&key), "GET", "/api/v1/tools", None).await.0,
        200
    );
    assert_eq!(
        gw.send_as(Some(&forged_token), "GET", "/api/v1/tools", None)
            .await
            .0,
        401
    );

    // Tool calls with secret-looking arguments, over REST and MCP, through
    // the upstream that needs its bearer; one with invalid arguments.
    let (code, answer) = gw
        .execute("remote__echo", json!({"message": argument}))
        .await;
    assert_eq!(code, 200, "{answer}");
    let called = mcp_request(
        &gw.mcp_url(),
        "tools/call",
        json!({"name": "local__echo", "arguments": {"message": argument}}),
    )
    .await;
    assert!(called["result"].is_object(), "{called}");
    let (code, _) = gw
        .execute("remote__add", json!({"a": invalid_argument, "b": 1}))
        .await;
    assert_eq!(code, 422);
    let (_, answer) = gw
        .execute("local__env", json!({"name": "FIXTURE_SECRET"}))
        .await;
    assert_eq!(answer["result"]["content"][0]["text"], env_secret.as_str());

    // The stdio server's stderr arrived, with its secret hidden.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, local) = gw.get("/api/v1/servers/local").await;
        if local["stderr_tail"]
            .as_array()
            .is_some_and(|l| l.iter().any(|l| l == "starting with FIXTURE_SECRET=***"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "no stderr line: {local}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Nothing secret in what the API shows of servers either.
    for path in [
        "/api/v1/servers",
        "/api/v1/servers/remote",
        "/api/v1/servers/local",
    ] {
        let (code, body) = gw.get(path).await;
        assert_eq!(code, 200);
        let body = body.to_string();
        for s in [&upstream_token, &env_secret] {
            assert!(!body.contains(s.as_str()), "{path} shows a secret: {body}");
        }
    }

    gw.stop();
    let log = gw.log_text();
    // The log did record the traffic, verbosely...
    for expected in ["tool call finished", "login", "remote", "local"] {
        assert!(log.contains(expected), "log lacks {expected:?}:\n{log}");
    }
    assert!(log.lines().count() > 50, "a trace-level log:\n{log}");
    // ...and none of the secrets nor the arguments.
    let mut secrets = vec![
        ("upstream bearer", upstream_token.as_str()),
        ("stdio env secret", &env_secret),
        ("signing key", &secret_key),
        ("encryption key", &encryption_key),
        ("admin password", ADMIN_PASSWORD),
        ("user password", &carol_password),
        ("wrong password", &wrong_password),
        ("forged bearer", &forged_token),
        ("access token", &access),
        ("refresh token", &refresh),
        ("API key", &key),
        ("harness API key", &gw.token),
        ("tool argument", &argument),
        ("invalid tool argument", &invalid_argument),
    ];
    let refreshed_access = refreshed["access_token"].as_str().unwrap().to_owned();
    secrets.push(("refreshed access token", &refreshed_access));
    if database_url.is_some() {
        secrets.push(("database password", &db_password));
    }
    for (what, value) in secrets {
        if let Some(line) = log.lines().find(|l| l.contains(value)) {
            panic!("the {what} is in the log: {line}");
        }
    }
}
