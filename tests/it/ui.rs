//! The admin web UI (`/ui`): over plain HTTP (escaping, CSRF, headers,
//! sessions), and end to end in a real Chromium driven by playwright-core
//! (tests/ui/e2e.mjs), with screenshots of the pages.

use std::{path::PathBuf, time::Duration};

use serde_json::{Value, json};

use crate::common::{
    self, ADMIN_PASSWORD, Gateway, Options, fixture_http_with, marker, mcp_request, tool_names,
};

/// Where the browser test writes its screenshots (CI keeps this folder).
fn screenshot_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("METAMCP_UI_SCREENSHOTS").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    match std::env::var_os("METAMCP_CACHE").filter(|d| !d.is_empty()) {
        Some(cache) => PathBuf::from(cache).join("ui-screenshots"),
        None => PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots"),
    }
}

/// A client that keeps no cookies and follows no redirects: each test
/// request says exactly what it sends.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `application/x-www-form-urlencoded` bodies, as a browser's forms send.
trait FormPost {
    fn form_post(self, pairs: &[(&str, &str)]) -> Self;
}

impl FormPost for reqwest::RequestBuilder {
    fn form_post(self, pairs: &[(&str, &str)]) -> Self {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        self.header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    }
}

/// The `name=value` of a cookie a response sets.
fn set_cookie(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

/// Logs in through the UI's login form; returns the session cookie and the
/// refresh cookie (`name=value` each).
async fn ui_login(gw: &Gateway) -> (String, String) {
    let form = client().get(gw.url("/ui/login")).send().await.unwrap();
    assert_eq!(form.status(), 200);
    let set = form.headers()["set-cookie"].to_str().unwrap().to_owned();
    let login_cookie = set.split(';').next().unwrap().to_owned();
    let token = login_cookie.split_once('=').unwrap().1.to_owned();
    let html = form.text().await.unwrap();
    assert!(html.contains(&format!("value=\"{token}\"")), "{html}");
    let r = client()
        .post(gw.url("/ui/login"))
        .header("cookie", &login_cookie)
        .form_post(&[
            ("csrf_token", token.as_str()),
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());
    assert_eq!(r.headers()["location"], "/ui/servers");
    let session = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("metamcp_session="))
        .expect("the login sets the session cookie")
        .to_owned();
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Strict"));
    let refresh = set_cookie(r.headers(), "metamcp_refresh").expect("the refresh cookie");
    (session.split(';').next().unwrap().to_owned(), refresh)
}

/// The CSRF token a page's forms carry.
fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf_token\" value=\"")
        .expect("a form with a CSRF token")
        + "name=\"csrf_token\" value=\"".len();
    html[at..].split('"').next().unwrap().to_owned()
}

async fn page(gw: &Gateway, cookie: &str, path: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let r = client()
        .get(gw.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

#[tokio::test]
async fn ui_escapes_upstream_text_refuses_forged_forms_and_sets_headers() {
    let (_fixture, url) = fixture_http_with(&marker("ui-plain"), &["--hostile"]);
    let gw =
        Gateway::start(Options::default().config(json!({"mcpServers": {"hostile": {"url": url}}})))
            .await;
    gw.wait_server("hostile", "ready").await;
    gw.wait_tool("hostile__markup", true).await;

    // No session: every page sends to the login form.
    let r = client().get(gw.url("/ui/tools")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/ui/login");
    let (cookie, refresh) = ui_login(&gw).await;

    // Without a valid access token, a page load continues the session with
    // the refresh cookie (as when the access token expired): back to the
    // same page with new tokens; the used refresh token is good no more.
    let r = client()
        .get(gw.url("/ui/tools?server=hostile"))
        .header("cookie", format!("metamcp_session=expired; {refresh}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/ui/tools?server=hostile");
    let renewed = set_cookie(r.headers(), "metamcp_session").expect("a new session");
    let next_refresh = set_cookie(r.headers(), "metamcp_refresh").expect("a new refresh");
    assert_ne!(next_refresh, refresh);
    let (status, _, _) = page(&gw, &renewed, "/ui/servers").await;
    assert_eq!(status, 200);
    let (status, headers, _) = page(&gw, &refresh, "/ui/servers").await;
    assert_eq!(status, 303);
    assert_eq!(headers["location"], "/ui/login");
    // Its reuse revoked the family: the newer one is refused too.
    let (status, headers, _) = page(&gw, &next_refresh, "/ui/servers").await;
    assert_eq!(status, 303);
    assert_eq!(headers["location"], "/ui/login");

    let (status, headers, _) = page(&gw, &cookie, "/ui").await;
    assert_eq!(status, 303);
    assert_eq!(headers["location"], "/ui/servers");
    let (status, headers, missing) = page(&gw, &cookie, "/ui/no-such-page").await;
    assert_eq!(status, 404, "{missing}");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );

    let (status, headers, html) = page(&gw, &cookie, "/ui/tools?server=hostile").await;
    assert_eq!(status, 200, "{html}");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "same-origin");
    assert_eq!(headers["cache-control"], "no-store");
    // The description is there, as text: escaped, never markup.
    assert!(html.contains("window.__xss = 1"), "{html}");
    for raw in [
        "<script>window",
        "<img src=x",
        "<b>bold",
        "</textarea></pre>",
    ] {
        assert!(!html.contains(raw), "{raw} unescaped in {html}");
    }
    // The only script is ours, loaded from the binary.
    assert_eq!(html.matches("<script").count(), 1, "{html}");
    let js = client()
        .get(gw.url("/ui/assets/ui.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), 200);
    assert!(
        js.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );

    // A change without the session's CSRF token is refused, and changes
    // nothing; with it, it is done.
    let csrf = csrf_of(&html);
    for form in [
        vec![("name", "hostile__echo"), ("enabled", "false")],
        vec![
            ("name", "hostile__echo"),
            ("enabled", "false"),
            ("csrf_token", "forged"),
        ],
    ] {
        let r = client()
            .post(gw.url("/ui/tools/toggle"))
            .header("cookie", &cookie)
            .form_post(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{form:?}");
    }
    let (_, tool) = gw.get("/api/v1/tools/hostile__echo").await;
    assert_eq!(tool["enabled"], true, "{tool}");
    let r = client()
        .post(gw.url("/ui/tools/toggle"))
        .header("cookie", &cookie)
        .form_post(&[
            ("name", "hostile__echo"),
            ("enabled", "false"),
            ("csrf_token", csrf.as_str()),
            ("back", "https://elsewhere.example/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/ui/tools", "no open redirect");
    let (_, tool) = gw.get("/api/v1/tools/hostile__echo").await;
    assert_eq!(tool["enabled"], false, "{tool}");
    // The change is in the audit trail as the user's REST call.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, audit) = gw.get("/api/v1/audit?actor=admin&limit=100").await;
        let found = audit["records"].as_array().into_iter().flatten().any(|r| {
            r["action"] == "PATCH /api/v1/tools/{name}"
                && r["auth_method"] == "cookie"
                && r["target"] == "hostile__echo"
        });
        if found {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no audit record: {audit}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Logged out, neither cookie opens pages any more.
    let (cookie, refresh) = ui_login(&gw).await;
    let (_, _, html) = page(&gw, &cookie, "/ui/servers").await;
    let csrf = csrf_of(&html);
    let r = client()
        .post(gw.url("/ui/logout"))
        .header("cookie", format!("{cookie}; {refresh}"))
        .form_post(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/ui/login");
    assert_eq!(
        set_cookie(r.headers(), "metamcp_refresh").as_deref(),
        Some("metamcp_refresh=")
    );
    for stale in [&cookie, &refresh] {
        let (status, headers, _) = page(&gw, stale, "/ui/servers").await;
        assert_eq!(status, 303, "{stale}");
        assert_eq!(headers["location"], "/ui/login");
    }
}

/// An external tool for the browser test, or `None` (skipped) when it is
/// missing outside CI.
fn browser_tool(var: &str, test: &str) -> Option<PathBuf> {
    common::external(var, test).filter(|p| {
        let present = p.exists();
        if !present {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{var}={} does not exist",
                p.display()
            );
            eprintln!("SKIPPED {test}: {} does not exist", p.display());
        }
        present
    })
}

#[tokio::test]
async fn ui_in_chromium_login_add_server_search_run_disable_and_stay_safe() {
    let test = "ui_in_chromium_login_add_server_search_run_disable_and_stay_safe";
    let Some(everything) = common::external("METAMCP_TEST_EVERYTHING", test) else {
        return;
    };
    let Some(node) = browser_tool("METAMCP_TEST_NODE", test) else {
        return;
    };
    let Some(playwright) = browser_tool("METAMCP_TEST_PLAYWRIGHT", test) else {
        return;
    };
    let Some(chromium) = browser_tool("METAMCP_TEST_CHROMIUM", test) else {
        return;
    };
    let (_fixture, paste_url) = fixture_http_with(&marker("ui-e2e"), &["--hostile"]);
    let gw = Gateway::start(
        Options::default()
            .config(
                json!({"mcpServers": {"everything": {"command": everything, "args": ["stdio"]}}}),
            )
            .ready(),
    )
    .await;
    gw.wait_server("everything", "ready").await;
    gw.wait_tool("everything__echo", true).await;

    let shots = screenshot_dir();
    eprintln!("UI screenshots: {}", shots.display());
    let out = tokio::process::Command::new(node)
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/ui/e2e.mjs"))
        .env("UI_BASE", &gw.base)
        .env("UI_PASSWORD", ADMIN_PASSWORD)
        .env("UI_PASTE_URL", &paste_url)
        .env("UI_SCREENSHOTS", &shots)
        .env("PLAYWRIGHT_CORE", &playwright)
        .env("CHROMIUM", &chromium)
        .output()
        .await
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser test failed:\n{stderr}\n{stdout}\ngateway log:\n{}",
        gw.log_text()
    );
    let summary: Value = serde_json::from_str(stdout.trim()).expect("the script's summary");
    assert_eq!(summary["ok"], true, "{summary}");
    for name in [
        "login",
        "servers",
        "tools-search",
        "playground",
        "xss-tools",
    ] {
        let file = shots.join(format!("{name}.png"));
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(
            bytes.starts_with(b"\x89PNG"),
            "{} is not a PNG",
            file.display()
        );
    }

    // What the browser did is what the gateway now reports: the pasted
    // server was removed again, echo is disabled and gone from MCP
    // tools/list, and the forged forms changed nothing.
    let (status, server) = gw.get("/api/v1/servers/hostile").await;
    assert_eq!(status, 404, "{server}");
    let (_, echo) = gw.get("/api/v1/tools/everything__echo").await;
    assert_eq!(echo["enabled"], false, "{echo}");
    let listed = tool_names(&mcp_request(&gw.mcp_url(), "tools/list", json!({})).await);
    assert!(
        !listed.contains(&"everything__echo".to_owned()),
        "{listed:?}"
    );
    assert!(
        listed.contains(&"everything__get-sum".to_owned()),
        "{listed:?}"
    );
    assert!(
        !listed.iter().any(|t| t.starts_with("hostile__")),
        "{listed:?}"
    );
    let (_, add) = gw.get("/api/v1/tools/everything__get-sum").await;
    assert_eq!(add["enabled"], true, "{add}");
}
