//! The test harness: start the gateway and upstreams, talk to them, clean up.

#![allow(dead_code)]

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

pub mod oauth_issuer;
pub mod pg;
pub mod replicas;

/// A path named by an environment variable set by the install script, or
/// `None` (after saying so) when it is unset outside CI.
pub fn external(var: &str, test: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{var} must be set in CI (eval \"$(bash scripts/install-test-deps.sh)\")");
            }
            eprintln!(
                "SKIPPED {test}: {var} is not set; run `eval \"$(bash scripts/install-test-deps.sh)\"` first"
            );
            None
        }
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The fixture MCP server built with this crate.
pub fn fixture_bin() -> &'static str {
    env!("CARGO_BIN_EXE_metamcp-fixture")
}

/// The password of the `admin` user of every gateway the tests start.
pub const ADMIN_PASSWORD: &str = "it-admin-password-0123";

/// Tokens of the gateways this test process started, by base URL: the
/// harness's requests authenticate as that gateway's admin.
static TOKENS: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// The admin token of the gateway that serves `url`, if the harness
/// started it.
pub fn token_for(url: &str) -> Option<String> {
    TOKENS
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(base, _)| url.starts_with(base.as_str()))
        .map(|(_, token)| token.clone())
}

/// A client that sends `token` as the bearer on every request.
pub fn client_with(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// A running gateway process.
pub struct Gateway {
    /// An admin API key of this gateway, sent by the harness's requests.
    pub token: String,
    pub port: u16,
    pub base: String,
    pub data_dir: PathBuf,
    pub child: Option<Child>,
    pub log: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

/// How to start a gateway.
#[derive(Default, Clone)]
pub struct Options {
    /// The config file contents (JSON), if any.
    pub config: Option<Value>,
    /// Extra `META_MCP_*` (or other) variables.
    pub env: Vec<(String, String)>,
    /// Reuse this data directory (for restart tests).
    pub data_dir: Option<PathBuf>,
    /// Wait for `/health/ready` rather than `/health/live`.
    pub wait_ready: bool,
    /// Do not log in (for tests of the first start itself).
    pub anonymous: bool,
}

impl Options {
    pub fn config(mut self, config: Value) -> Self {
        self.config = Some(config);
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    pub fn ready(mut self) -> Self {
        self.wait_ready = true;
        self
    }
}

/// A config entry for the fixture over stdio, tagged with `marker` so tests
/// can find its processes.
pub fn fixture_stdio(marker: &str) -> Value {
    json!({"command": fixture_bin(), "args": ["--name", marker]})
}

impl Gateway {
    pub async fn start(opts: Options) -> Gateway {
        let (tmp, data_dir) = match &opts.data_dir {
            Some(dir) => (None, dir.clone()),
            None => {
                let tmp = tempfile::tempdir().expect("tempdir");
                let dir = tmp.path().join("data");
                (Some(tmp), dir)
            }
        };
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let port = free_port();
        let log = data_dir.join(format!("gateway-{port}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_metamcp"));
        cmd.arg("serve");
        // A clean slate: no META_MCP_* from the developer's shell.
        for (k, _) in std::env::vars() {
            if k.starts_with("META_MCP_") {
                cmd.env_remove(k);
            }
        }
        if let Some(config) = &opts.config {
            let path = data_dir.join("config.json");
            std::fs::write(&path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
            cmd.arg("--config").arg(path);
        }
        if !opts.anonymous {
            cmd.env("META_MCP_ADMIN_PASSWORD", ADMIN_PASSWORD);
        }
        cmd.env("META_MCP_PORT", port.to_string())
            .env("META_MCP_DATA_DIR", &data_dir)
            .env("META_MCP_LOG_FORMAT", "json")
            .env("RUST_LOG", "info,metamcp=debug");
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let logfile = std::fs::File::create(&log).expect("log file");
        cmd.stdout(Stdio::null()).stderr(logfile);
        let child = cmd.spawn().expect("start metamcp");
        let mut gw = Gateway {
            token: String::new(),
            port,
            base: format!("http://127.0.0.1:{port}"),
            data_dir,
            child: Some(child),
            log,
            _tmp: tmp,
        };
        let path = if opts.wait_ready {
            "/api/v1/health/ready"
        } else {
            "/api/v1/health/live"
        };
        gw.wait_for(path, Duration::from_secs(60)).await;
        if !opts.anonymous {
            gw.token = gw.admin_key().await;
            TOKENS
                .lock()
                .unwrap()
                .push((gw.base.clone(), gw.token.clone()));
        }
        gw
    }

    /// Logs in as a user; returns the login answer (tokens).
    pub async fn login(&self, username: &str, password: &str) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(self.url("/api/v1/auth/login"))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .expect("login");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Creates a user as the harness's admin (in `tenant`, or the admin's
    /// own) with `roles` and the password `{username}-password-123`, logs it
    /// in, and returns its id and access token.
    pub async fn new_user(
        &self,
        tenant: Option<&str>,
        username: &str,
        roles: &[&str],
    ) -> (String, String) {
        let password = format!("{username}-password-123");
        let mut user = json!({"username": username, "password": password, "roles": roles});
        let mut login = json!({"username": username, "password": password});
        if let Some(tenant) = tenant {
            user["tenant"] = json!(tenant);
            login["tenant"] = json!(tenant);
        }
        let (code, body) = self.post("/api/v1/users", user).await;
        assert_eq!(code, 201, "{body}");
        let r = reqwest::Client::new()
            .post(self.url("/api/v1/auth/login"))
            .json(&login)
            .send()
            .await
            .expect("login");
        assert_eq!(r.status().as_u16(), 200, "login of {username}");
        let tokens: Value = r.json().await.expect("login answer");
        (
            body["id"].as_str().expect("user id").to_owned(),
            tokens["access_token"]
                .as_str()
                .expect("access token")
                .to_owned(),
        )
    }

    /// Logs in as admin and creates an API key for the harness.
    async fn admin_key(&self) -> String {
        let (status, body) = self.login("admin", ADMIN_PASSWORD).await;
        assert_eq!(
            status,
            200,
            "admin login: {body}\nlog:\n{}",
            self.log_text()
        );
        let access = body["access_token"].as_str().unwrap().to_owned();
        let r = client_with(&access)
            .post(self.url("/api/v1/auth/keys"))
            .json(&json!({"name": "integration tests"}))
            .send()
            .await
            .expect("create key");
        assert_eq!(r.status().as_u16(), 201);
        let body: Value = r.json().await.unwrap();
        body["key"].as_str().unwrap().to_owned()
    }

    /// A client that authenticates as this gateway's admin.
    pub fn client(&self) -> reqwest::Client {
        client_with(&self.token)
    }

    /// Sends a request with `token` (or none) as the bearer.
    pub async fn send_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let client = match token {
            Some(t) => client_with(t),
            None => reqwest::Client::new(),
        };
        let mut request = client.request(method.parse().unwrap(), self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let r = request.send().await.expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn wait_for(&self, path: &str, within: Duration) {
        let deadline = Instant::now() + within;
        let client = reqwest::Client::new();
        loop {
            if let Ok(r) = client.get(format!("{}{path}", self.base)).send().await
                && r.status().is_success()
            {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "gateway did not answer {path} within {within:?}; log:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn mcp_url(&self) -> String {
        self.url("/mcp")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client().get(self.url(path)).send().await.expect("GET");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn send(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client()
            .request(method.parse().unwrap(), self.url(path))
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send("POST", path, body).await
    }

    pub async fn execute(&self, tool: &str, arguments: Value) -> (u16, Value) {
        self.post(
            &format!("/api/v1/tools/{tool}/execute"),
            json!({"arguments": arguments}),
        )
        .await
    }

    /// Waits until `server` reports `status` (e.g. "ready").
    pub async fn wait_server(&self, server: &str, status: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (code, body) = self.get(&format!("/api/v1/servers/{server}")).await;
            if code == 200 && body["status"]["status"] == status {
                return body;
            }
            if Instant::now() > deadline {
                panic!(
                    "server {server} not {status} within 60s: {body}\nlog:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until a tool is (or is not) in the catalog.
    pub async fn wait_tool(&self, tool: &str, present: bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (code, _) = self.get(&format!("/api/v1/tools/{tool}")).await;
            if (code == 200) == present {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "tool {tool} present={present} not reached within 60s\nlog:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The data directory, kept alive beyond this gateway (for restarts).
    pub fn keep_data(&mut self) -> (PathBuf, Option<tempfile::TempDir>) {
        (self.data_dir.clone(), self._tmp.take())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Live (non-zombie) processes whose command line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !cmdline.contains(marker) {
            continue;
        }
        let state = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, rest)| rest.trim().chars().next().unwrap_or('?'))
            })
            .unwrap_or('?');
        found.push((pid, format!("{state} {cmdline}")));
    }
    found
}

/// Waits until no process carries `marker` (zombies included: a zombie is a
/// process nobody reaped, which counts as a leak).
pub async fn wait_no_processes(marker: &str, within: Duration) -> Vec<(i32, String)> {
    let deadline = Instant::now() + within;
    loop {
        let left = processes_with(marker);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A unique marker for a test's processes.
pub fn marker(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Runs the Python SDK client script; returns (exit code, JSON output).
pub fn python_client(python: &Path, args: &[&str]) -> (i32, Value) {
    // Against a gateway the harness started, authenticate as its admin.
    let url = args
        .iter()
        .position(|a| *a == "--url")
        .and_then(|i| args.get(i + 1));
    let auth = url
        .and_then(|u| token_for(u))
        .map(|t| format!("Authorization: Bearer {t}"));
    python_client_with(python, auth.as_deref(), args)
}

/// The Python SDK client against `url` in `mode` (legacy, modern, auto),
/// on the blocking pool so the gateway's test runtime keeps running.
pub async fn python_mode(python: &Path, url: &str, mode: &str, args: &[&str]) -> (i32, Value) {
    let python = python.to_path_buf();
    let mut argv: Vec<String> = vec!["--url".into(), url.into(), "--mode".into(), mode.into()];
    argv.extend(args.iter().map(|a| a.to_string()));
    tokio::task::spawn_blocking(move || {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        python_client(&python, &argv)
    })
    .await
    .expect("python client task")
}

/// Runs the Python SDK client with an `Authorization` header (or none).
pub fn python_client_with(
    python: &Path,
    authorization: Option<&str>,
    args: &[&str],
) -> (i32, Value) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/mcp_client.py");
    let mut cmd = Command::new(python);
    cmd.arg(script);
    if let Some(auth) = authorization {
        cmd.args(["--header", auth]);
    }
    let out = cmd.args(args).output().expect("run python client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "python client printed no JSON: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), value)
}

/// A process started by a test, killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the fixture over Streamable HTTP; returns it and its URL.
pub fn fixture_http(marker: &str) -> (Proc, String) {
    fixture_http_with(marker, &[])
}

/// Starts the fixture over Streamable HTTP with extra arguments (e.g.
/// `--require-bearer TOKEN`); returns it and its URL.
pub fn fixture_http_with(marker: &str, extra: &[&str]) -> (Proc, String) {
    use std::io::BufRead;
    let mut child = Command::new(fixture_bin())
        .args(["--http", "127.0.0.1:0", "--name", marker])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start fixture");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .expect("fixture prints its URL")
        .to_owned();
    (Proc(child), url)
}

/// Starts server-everything over Streamable HTTP on a free port.
pub async fn everything_http(bin: &Path) -> (Proc, String) {
    let port = free_port();
    let child = Command::new(bin)
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start server-everything");
    let url = format!("http://127.0.0.1:{port}/mcp");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "server-everything did not listen on {port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (Proc(child), url)
}

/// One stateless (2026-07-28) MCP request to `url`; returns the JSON-RPC
/// response (the last `data:` event of an SSE answer, or the JSON body).
pub async fn mcp_request(url: &str, method: &str, params: Value) -> Value {
    mcp_request_with(url, token_for(url).as_deref(), method, params).await
}

/// POSTs a raw JSON-RPC body to an MCP endpoint with `token` (or none) as
/// the bearer, for tests that look at the HTTP answer itself.
pub async fn mcp_post(url: &str, token: Option<&str>, body: &str) -> reqwest::Response {
    let client = match token {
        Some(t) => client_with(t),
        None => reqwest::Client::new(),
    };
    client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_owned())
        .send()
        .await
        .expect("MCP request")
}

/// [`mcp_request`] with `token` (or none) as the bearer.
pub async fn mcp_request_with(
    url: &str,
    token: Option<&str>,
    method: &str,
    mut params: Value,
) -> Value {
    if let Some(obj) = params.as_object_mut() {
        obj.insert(
            "_meta".into(),
            json!({
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {"name": "it", "version": "0"},
            }),
        );
    }
    let client = match token {
        Some(t) => client_with(t),
        None => reqwest::Client::new(),
    };
    let response = modern_request(&client, url, 1, method, &params)
        .send()
        .await
        .expect("MCP request");
    jsonrpc_answer(response).await
}

/// A 2026-07-28 request as `client` sends it: POST with the protocol
/// version, method and (for params naming a tool, prompt or resource) name
/// headers. `params` carries its own `_meta`.
pub fn modern_request(
    client: &reqwest::Client,
    url: &str,
    id: u64,
    method: &str,
    params: &Value,
) -> reqwest::RequestBuilder {
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", method);
    if let Some(name) = params
        .get("name")
        .or_else(|| params.get("uri"))
        .and_then(Value::as_str)
    {
        request = request.header("mcp-name", name);
    }
    request.json(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
}

/// The JSON-RPC messages of an MCP answer, in order: its JSON body, or each
/// `data:` event of its SSE stream.
pub async fn jsonrpc_messages(response: reqwest::Response) -> Vec<Value> {
    let text = response.text().await.unwrap_or_default();
    match serde_json::from_str::<Value>(&text) {
        Ok(single) => vec![single],
        Err(_) => sse_messages(&text).collect(),
    }
}

/// The answer to a request: its JSON body as it is, or, from an SSE
/// stream, the last message with an id (the response).
pub async fn jsonrpc_answer(response: reqwest::Response) -> Value {
    let text = response.text().await.unwrap_or_default();
    if let Ok(single) = serde_json::from_str::<Value>(&text) {
        return single;
    }
    sse_messages(&text)
        .filter(|v| v.get("id").is_some())
        .last()
        .unwrap_or_else(|| panic!("no JSON-RPC response in: {text}"))
}

fn sse_messages(text: &str) -> impl Iterator<Item = Value> + '_ {
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
}

/// The tool names of a `tools/list` answer.
pub fn tool_names(response: &Value) -> Vec<String> {
    let mut names: Vec<String> = response["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("not a tools/list result: {response}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    names.sort();
    names
}

/// The texts of a tool result's text content blocks.
pub fn texts(result: &Value) -> Vec<String> {
    result["content"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|c| c["text"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A gateway with the fixture over stdio as server `fx`, ready; and the
/// marker of the fixture's process.
pub async fn gateway_with_fixture(prefix: &str) -> (Gateway, String) {
    let m = marker(prefix);
    let gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {"fx": fixture_stdio(&m)}}))
            .ready(),
    )
    .await;
    gw.wait_server("fx", "ready").await;
    (gw, m)
}
