//! Identity and access, black-box: an attack matrix against the REST API
//! and the MCP endpoint, grants filtering every listing the same way,
//! tenants isolated, first-start secrets, the session cookie with CSRF.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::common::{
    self, ADMIN_PASSWORD, Gateway, Options, client_with, fixture_stdio, marker, tool_names,
};

/// The secret key the attack tests give the gateway, so they can forge
/// tokens that differ from real ones in exactly one way.
const SECRET: &str = "it-secret-key-0123456789abcdefghijklmnopqrstuvwxyz";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Signs claims with HS256 under `key`.
fn hs256(claims: &Value, key: &[u8]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(key),
    )
    .unwrap()
}

/// The claims of a valid access token for `sub`.
fn claims(sub: &str) -> Value {
    let t = now();
    json!({"iss": "metamcp", "aud": "metamcp", "sub": sub, "tid": "default",
           "jti": format!("{:016x}", t), "iat": t, "nbf": t, "exp": t + 600, "typ": "access"})
}

/// What an attack could have changed: servers, tools, users and the
/// fixture's count of calls served (read last, so it counts itself).
async fn state_of(gw: &Gateway) -> Value {
    let (_, servers) = gw.get("/api/v1/servers").await;
    let (_, tools) = gw.get("/api/v1/tools?limit=1000").await;
    let (_, users) = gw.get("/api/v1/users").await;
    let (_, calls) = gw.execute("fx__count_calls", json!({})).await;
    json!({"servers": servers["total"], "tools": tools["total"], "users": users["users"],
           "calls": common::texts(&calls["result"])})
}

#[tokio::test]
async fn attack_matrix_is_refused_and_changes_nothing() {
    let m = marker("fx-auth");
    let gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {"fx": fixture_stdio(&m)}}))
            .env("META_MCP_SECRET_KEY", SECRET)
            .ready(),
    )
    .await;
    gw.wait_server("fx", "ready").await;
    let (user_id, user) = gw.new_user(None, "mallory", &["user"]).await;
    let (code, me) = gw
        .send_as(Some(&user), "GET", "/api/v1/auth/me", None)
        .await;
    assert_eq!(code, 200, "{me}");
    assert_eq!(me["roles"], json!(["user"]));
    let before = state_of(&gw).await;

    let valid = hs256(&claims(&user_id), SECRET.as_bytes());
    let (header, payload, sig) = {
        let p: Vec<&str> = valid.split('.').collect();
        (p[0].to_owned(), p[1].to_owned(), p[2].to_owned())
    };
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims(&user_id);
        f(&mut c);
        hs256(&c, SECRET.as_bytes())
    };
    let tampered = {
        let mut c = claims(&user_id);
        c["sub"] = json!("someone-else");
        format!("{header}.{}.{sig}", b64(&serde_json::to_vec(&c).unwrap()))
    };
    let alg_none = format!("{}.{payload}.", b64(br#"{"alg":"none","typ":"JWT"}"#));
    let attacks: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("malformed token", Some("not.a.jwt".into())),
        ("garbage", Some("%%%".into())),
        ("alg none", Some(alg_none)),
        (
            "other key",
            Some(hs256(
                &claims(&user_id),
                b"another-secret-key-0123456789abcdef",
            )),
        ),
        (
            "expired",
            Some(with(&|c| {
                c["exp"] = json!(now() - 3600);
                c["iat"] = json!(now() - 7200);
                c["nbf"] = json!(now() - 7200);
            })),
        ),
        (
            "not yet valid",
            Some(with(&|c| c["nbf"] = json!(now() + 3600))),
        ),
        (
            "issued in the future",
            Some(with(&|c| c["iat"] = json!(now() + 3600))),
        ),
        (
            "wrong audience",
            Some(with(&|c| c["aud"] = json!("someone-else"))),
        ),
        (
            "wrong issuer",
            Some(with(&|c| c["iss"] = json!("https://evil.example"))),
        ),
        ("wrong tenant", Some(with(&|c| c["tid"] = json!("other")))),
        ("tampered payload", Some(tampered)),
        (
            "oversized",
            Some(format!("{header}.{}.{sig}", "A".repeat(9000))),
        ),
        ("unknown api key", Some("mmk_0123456789abcdef.nope".into())),
    ];
    // The forged token with nothing wrong is accepted: the matrix tests
    // one fault at a time.
    let (code, _) = gw
        .send_as(Some(&valid), "GET", "/api/v1/auth/me", None)
        .await;
    assert_eq!(code, 200, "the control token must be accepted");
    for (what, token) in &attacks {
        for (method, path, body) in [
            ("GET", "/api/v1/tools", None),
            (
                "POST",
                "/api/v1/tools/fx__echo/execute",
                Some(json!({"arguments": {"message": "x"}})),
            ),
            ("DELETE", "/api/v1/servers/fx", None),
            (
                "POST",
                "/api/v1/users",
                Some(
                    json!({"username": "eve", "password": "eve-password-123", "roles": ["admin"]}),
                ),
            ),
        ] {
            let (code, body) = gw.send_as(token.as_deref(), method, path, body).await;
            assert_eq!(code, 401, "{what}: {method} {path} answered {body}");
            assert_eq!(
                body["type"], "urn:metamcp:problem:unauthorized",
                "{what}: {body}"
            );
        }
        let r = common::mcp_post(
            &gw.mcp_url(),
            Some(token.as_deref().unwrap_or_default()),
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#,
        )
        .await;
        assert_eq!(r.status().as_u16(), 401, "{what} on /mcp");
        let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(
            challenge.contains("resource_metadata=") && challenge.contains(&gw.base),
            "{what}: {challenge}"
        );
    }

    // A user on admin endpoints, and raising their own role.
    for (method, path, body) in [
        ("GET", "/api/v1/users", None),
        (
            "PATCH",
            &*format!("/api/v1/users/{user_id}"),
            Some(json!({"roles": ["admin"]})),
        ),
        (
            "POST",
            "/api/v1/roles",
            Some(json!({"name": "boss", "permissions": ["*"]})),
        ),
        (
            "POST",
            "/api/v1/grants",
            Some(
                json!({"subject_kind": "user", "subject": user_id, "effect": "allow", "resource_kind": "tool", "pattern": "*"}),
            ),
        ),
        (
            "POST",
            "/api/v1/servers",
            Some(
                json!({"name": "x", "transport": "streamable_http", "url": "http://127.0.0.1:1/mcp"}),
            ),
        ),
        ("DELETE", "/api/v1/tools/fx__echo", None),
        (
            "POST",
            "/api/v1/tenants",
            Some(json!({"id": "t2", "name": "T2"})),
        ),
    ] {
        let (code, body) = gw.send_as(Some(&user), method, path, body).await;
        assert_eq!(code, 403, "user: {method} {path} answered {body}");
    }
    let (code, body) = gw
        .send_as(
            Some(&user),
            "POST",
            "/api/v1/auth/keys",
            Some(json!({"name": "k", "scopes": ["users:admin"]})),
        )
        .await;
    assert_eq!(code, 422, "a key cannot carry more than its owner: {body}");
    // An admin cannot hand out platform administration it lacks.
    let (_, admin2) = gw.new_user(None, "admin2", &["admin"]).await;
    let (code, body) = gw
        .send_as(
            Some(&admin2),
            "PATCH",
            &format!("/api/v1/users/{user_id}"),
            Some(json!({"roles": ["platform_admin"]})),
        )
        .await;
    assert_eq!(code, 403, "{body}");
    // ...nor mint a key for a user more powerful than itself.
    let (_, admin_me) = gw.get("/api/v1/auth/me").await;
    let (code, body) = gw
        .send_as(
            Some(&admin2),
            "POST",
            "/api/v1/auth/keys",
            Some(json!({"name": "up", "user_id": admin_me["id"]})),
        )
        .await;
    assert_eq!(code, 403, "{body}");

    // A new password ends the sessions that existed before it.
    let (_, before_change) = gw.login("mallory", "mallory-password-123").await;
    let old_access = before_change["access_token"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (code, _) = gw
        .send(
            "PATCH",
            &format!("/api/v1/users/{user_id}"),
            json!({"password": "mallory-password-456"}),
        )
        .await;
    assert_eq!(code, 200);
    let (code, body) = gw
        .send_as(Some(&old_access), "GET", "/api/v1/auth/me", None)
        .await;
    assert_eq!(
        (code, body["detail"].as_str()),
        (401, Some("the token has been revoked"))
    );
    let (code, _) = gw
        .send(
            "PATCH",
            &format!("/api/v1/users/{user_id}"),
            json!({"password": "mallory-password-123"}),
        )
        .await;
    assert_eq!(code, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Mallory's first token ended with the change too: log in again.
    let (_, relogin) = gw.login("mallory", "mallory-password-123").await;
    let user = relogin["access_token"].as_str().unwrap().to_owned();

    // Logout revokes the access token; the refresh token of that login too.
    let (_, login) = gw.login("mallory", "mallory-password-123").await;
    let access = login["access_token"].as_str().unwrap();
    let refresh = login["refresh_token"].as_str().unwrap();
    let (code, _) = gw
        .send_as(
            Some(access),
            "POST",
            "/api/v1/auth/logout",
            Some(json!({"refresh_token": refresh})),
        )
        .await;
    assert_eq!(code, 204);
    let (code, body) = gw
        .send_as(Some(access), "GET", "/api/v1/auth/me", None)
        .await;
    assert_eq!(
        (code, body["detail"].as_str()),
        (401, Some("the token has been revoked"))
    );
    let (code, _) = gw
        .send_as(
            None,
            "POST",
            "/api/v1/auth/refresh",
            Some(json!({"refresh_token": refresh})),
        )
        .await;
    assert_eq!(code, 401, "a logged-out refresh token is dead");

    // Refresh rotates; the old refresh token used again kills the family.
    let (_, login) = gw.login("mallory", "mallory-password-123").await;
    let first = login["refresh_token"].as_str().unwrap().to_owned();
    let (code, rotated) = gw
        .send_as(
            None,
            "POST",
            "/api/v1/auth/refresh",
            Some(json!({"refresh_token": first})),
        )
        .await;
    assert_eq!(code, 200, "{rotated}");
    let second = rotated["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    let (code, body) = gw
        .send_as(
            None,
            "POST",
            "/api/v1/auth/refresh",
            Some(json!({"refresh_token": first})),
        )
        .await;
    assert_eq!(code, 401, "reuse: {body}");
    let (code, _) = gw
        .send_as(
            None,
            "POST",
            "/api/v1/auth/refresh",
            Some(json!({"refresh_token": second})),
        )
        .await;
    assert_eq!(code, 401, "the reuse revoked the whole family");

    // API keys: work as Bearer and X-API-Key; dead once revoked or expired.
    let (code, key) = gw
        .send_as(
            Some(&user),
            "POST",
            "/api/v1/auth/keys",
            Some(json!({"name": "ci", "scopes": ["tools:read"]})),
        )
        .await;
    assert_eq!(code, 201, "{key}");
    let secret = key["key"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("mmk_"));
    let (code, _) = gw
        .send_as(Some(&secret), "GET", "/api/v1/tools", None)
        .await;
    assert_eq!(code, 200);
    let r = reqwest::Client::new()
        .get(gw.url("/api/v1/tools"))
        .header("x-api-key", &secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (code, _) = gw
        .send_as(
            Some(&secret),
            "POST",
            "/api/v1/tools/fx__echo/execute",
            Some(json!({"arguments": {"message": "x"}})),
        )
        .await;
    assert_eq!(code, 403, "the key's scopes do not include tools:execute");
    let (code, listed) = gw
        .send_as(Some(&user), "GET", "/api/v1/auth/keys", None)
        .await;
    assert_eq!(code, 200);
    assert!(
        !listed
            .to_string()
            .contains(secret.split('.').nth(1).unwrap()),
        "a listing never shows the secret"
    );
    let id = key["id"].as_str().unwrap();
    let (code, _) = gw
        .send_as(
            Some(&user),
            "DELETE",
            &format!("/api/v1/auth/keys/{id}"),
            None,
        )
        .await;
    assert_eq!(code, 204);
    let (code, body) = gw
        .send_as(Some(&secret), "GET", "/api/v1/tools", None)
        .await;
    assert_eq!(
        (code, body["detail"].as_str()),
        (401, Some("the token has been revoked"))
    );
    // An expired key (its expiry moved into the past in the database).
    let (_, key) = gw
        .send_as(
            Some(&user),
            "POST",
            "/api/v1/auth/keys",
            Some(json!({"name": "short", "expires_in_days": 1})),
        )
        .await;
    let expiring = key["key"].as_str().unwrap().to_owned();
    expire_key(&gw, key["id"].as_str().unwrap()).await;
    let (code, body) = gw
        .send_as(Some(&expiring), "GET", "/api/v1/tools", None)
        .await;
    assert_eq!(
        (code, body["detail"].as_str()),
        (401, Some("the token has expired"))
    );

    // Logins: one answer for a wrong password and an unknown user, then
    // throttling.
    let (c1, b1) = gw.login("mallory", "wrong-password-123").await;
    let (c2, b2) = gw.login("nobody-at-all", "wrong-password-123").await;
    assert_eq!((c1, c2), (401, 401));
    assert_eq!(b1, b2, "unknown user and wrong password answer alike");
    let mut last = 0;
    for _ in 0..6 {
        last = gw.login("mallory", "wrong-password-123").await.0;
    }
    assert_eq!(last, 429, "repeated failures are throttled");
    let (code, _) = gw.login("mallory", "mallory-password-123").await;
    assert_eq!(code, 429, "even the right password waits out the throttle");

    let after = state_of(&gw).await;
    let calls = |v: &Value| v["calls"][0].as_str().unwrap().parse::<u64>().unwrap();
    assert_eq!(
        calls(&after),
        calls(&before) + 1,
        "no refused call reached the upstream"
    );
    let mut before = before;
    let mut after = after;
    before["calls"] = Value::Null;
    after["calls"] = Value::Null;
    let users = |v: &Value| {
        v["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["username"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        users(&after),
        [users(&before), vec!["admin2".into()]]
            .concat()
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
    assert_eq!(after["servers"], before["servers"]);
    assert_eq!(after["tools"], before["tools"]);
}

/// Moves an API key's expiry into the past, straight in the database.
async fn expire_key(gw: &Gateway, id: &str) {
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}", gw.data_dir.join("metamcp.db").display());
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    sqlx::query("UPDATE api_keys SET expires_at = '2000-01-01T00:00:00Z' WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

#[tokio::test]
async fn rs256_tokens_work_and_hs256_signed_with_the_public_key_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("jwt.pem");
    let public = dir.path().join("jwt.pub.pem");
    let ok = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&private)
        .status()
        .unwrap()
        .success()
        && std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public)
            .status()
            .unwrap()
            .success();
    assert!(ok, "openssl made the key pair");
    let gw = Gateway::start(
        Options::default()
            .env("META_MCP_ALGORITHM", "RS256")
            .env("META_MCP_JWT_PRIVATE_KEY_FILE", private.to_str().unwrap())
            .env("META_MCP_JWT_PUBLIC_KEY_FILE", public.to_str().unwrap()),
    )
    .await;
    let (code, login) = gw.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(code, 200);
    let token = login["access_token"].as_str().unwrap();
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "RS256");
    let (code, me) = gw
        .send_as(Some(token), "GET", "/api/v1/auth/me", None)
        .await;
    assert_eq!(code, 200, "{me}");
    // The classic confusion: HS256 with the public key as the HMAC secret.
    let pem = std::fs::read(&public).unwrap();
    let mut forged = claims(me["id"].as_str().unwrap());
    forged["jti"] = json!("0000000000000001");
    let (code, _) = gw
        .send_as(Some(&hs256(&forged, &pem)), "GET", "/api/v1/auth/me", None)
        .await;
    assert_eq!(code, 401);
}

#[tokio::test]
async fn grants_filter_rest_mcp_and_search_alike_and_hidden_tools_never_reach_the_upstream() {
    let m = marker("fx-grants");
    let gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {"fx": fixture_stdio(&m)}}))
            .ready(),
    )
    .await;
    gw.wait_server("fx", "ready").await;
    gw.wait_tool("fx__echo", true).await;
    let (alice_id, alice) = gw.new_user(None, "alice", &["user"]).await;
    let (_, bob) = gw.new_user(None, "bob", &["user"]).await;
    // alice: only echo and add; bob: everything but echo, and no tool above
    // his clearance.
    for grant in [
        json!({"subject_kind": "user", "subject": alice_id, "effect": "allow", "resource_kind": "tool", "pattern": "fx__echo"}),
        json!({"subject_kind": "user", "subject": alice_id, "effect": "allow", "resource_kind": "tool", "pattern": "fx/add"}),
        json!({"subject_kind": "role", "subject": "user", "effect": "deny", "resource_kind": "tool", "pattern": "fx__echo"}),
    ] {
        let (code, body) = gw.post("/api/v1/grants", grant).await;
        assert_eq!(code, 201, "{body}");
    }
    // The role deny applies to alice too: deny wins over her allow.
    let (code, body) = gw
        .send(
            "PATCH",
            "/api/v1/tools/fx__slow",
            json!({"security_level": 90}),
        )
        .await;
    assert_eq!(code, 200, "{body}");

    let (_, all) = gw.get("/api/v1/tools?limit=1000").await;
    let all: Vec<String> = all["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    let rest = |token: String| {
        let gw = &gw;
        async move {
            let (code, body) = gw
                .send_as(Some(&token), "GET", "/api/v1/tools?limit=1000", None)
                .await;
            assert_eq!(code, 200, "{body}");
            let mut names: Vec<String> = body["tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_owned())
                .collect();
            names.sort();
            names
        }
    };
    let alice_rest = rest(alice.clone()).await;
    let bob_rest = rest(bob.clone()).await;
    assert_eq!(alice_rest, ["fx__add"]);
    let mut bob_expected: Vec<String> = all
        .iter()
        .filter(|n| *n != "fx__echo" && *n != "fx__slow")
        .cloned()
        .collect();
    bob_expected.sort();
    assert_eq!(bob_rest, bob_expected);

    // MCP (stateless 2026-07-28 requests) lists the same sets.
    for (token, expected) in [(&alice, &alice_rest), (&bob, &bob_rest)] {
        let listed =
            common::mcp_request_with(&gw.mcp_url(), Some(token), "tools/list", json!({})).await;
        assert_eq!(&tool_names(&listed), expected);
    }
    // Prompts and resources follow the server grants: alice is allow-listed
    // by tool, so no server's prompts reach her; bob's deny is about a tool.
    let prompts = |token: &String| {
        let url = gw.mcp_url();
        let token = token.clone();
        async move { common::mcp_request_with(&url, Some(&token), "prompts/list", json!({})).await }
    };
    let alice_prompts = prompts(&alice).await;
    assert_eq!(
        alice_prompts["result"]["prompts"],
        json!([]),
        "{alice_prompts}"
    );
    let bob_prompts = prompts(&bob).await;
    assert!(
        bob_prompts["result"]["prompts"]
            .to_string()
            .contains("greeting"),
        "{bob_prompts}"
    );
    // The Python SDK, in both eras.
    if let Some(python) = common::external("METAMCP_TEST_PYTHON", "grants_filter (python part)") {
        for (token, expected) in [(&alice, &alice_rest), (&bob, &bob_rest)] {
            for mode in ["legacy", "modern"] {
                let auth = format!("Authorization: Bearer {token}");
                let (code, out) = common::python_client_with(
                    &python,
                    Some(&auth),
                    &["--url", &gw.mcp_url(), "--mode", mode, "list-tools"],
                );
                assert_eq!(code, 0, "{out}");
                let mut names: Vec<String> = out["tools"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t["name"].as_str().unwrap().to_owned())
                    .collect();
                names.sort();
                assert_eq!(&names, expected, "{mode}");
            }
        }
        // Calling a hidden tool over MCP: refused like a missing one.
        let auth = format!("Authorization: Bearer {bob}");
        let (_, out) = common::python_client_with(
            &python,
            Some(&auth),
            &[
                "--url",
                &gw.mcp_url(),
                "--mode",
                "legacy",
                "call",
                "fx__echo",
                r#"{"message":"x"}"#,
            ],
        );
        assert!(
            out["message"]
                .as_str()
                .is_some_and(|m| m.contains("Unknown tool: fx__echo")),
            "{out}"
        );
    }
    // Search finds only what the caller may see.
    let (_, found) = gw
        .send_as(
            Some(&bob),
            "GET",
            "/api/v1/tools/search?q=echo&search_type=keyword",
            None,
        )
        .await;
    assert!(!found.to_string().contains("\"fx__echo\""), "{found}");
    let (_, found) = gw
        .send_as(
            Some(&alice),
            "GET",
            "/api/v1/tools/search?q=add%20numbers&search_type=keyword",
            None,
        )
        .await;
    assert!(found.to_string().contains("fx__add"), "{found}");

    // Calls: hidden tools answer like missing ones and never reach the
    // upstream; visible ones work.
    let (_, c) = gw.execute("fx__count_calls", json!({})).await;
    let before: u64 = common::texts(&c["result"])[0].parse().unwrap();
    let (code, hidden) = gw
        .send_as(
            Some(&bob),
            "POST",
            "/api/v1/tools/fx__echo/execute",
            Some(json!({"arguments": {"message": "x"}})),
        )
        .await;
    let (_, missing) = gw
        .send_as(
            Some(&bob),
            "POST",
            "/api/v1/tools/fx__nothing/execute",
            Some(json!({"arguments": {}})),
        )
        .await;
    assert_eq!(code, 404);
    assert_eq!(hidden["type"], missing["type"]);
    let (code, _) = gw
        .send_as(
            Some(&bob),
            "POST",
            "/api/v1/tools/fx__slow/execute",
            Some(json!({"arguments": {"seconds": 0.01}})),
        )
        .await;
    assert_eq!(code, 404, "above bob's clearance");
    let hidden_mcp = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "fx__echo", "arguments": {"message": "x"}, "_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}, "io.modelcontextprotocol/clientInfo": {"name": "it", "version": "0"}}}});
    let r = client_with(&bob)
        .post(gw.mcp_url())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "fx__echo")
        .json(&hidden_mcp)
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(text.contains("\"error\""), "{text}");
    let (code, body) = gw
        .send_as(
            Some(&alice),
            "POST",
            "/api/v1/tools/fx__add/execute",
            Some(json!({"arguments": {"a": 1, "b": 2}})),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let (_, c) = gw.execute("fx__count_calls", json!({})).await;
    let after: u64 = common::texts(&c["result"])[0].parse().unwrap();
    assert_eq!(
        after,
        before + 2,
        "only alice's add and this count reached the upstream"
    );
}

#[tokio::test]
async fn tenants_see_nothing_of_each_other() {
    let m = marker("fx-tenant");
    let gw = Gateway::start(
        Options::default()
            .config(json!({"mcpServers": {"fx": fixture_stdio(&m)}}))
            .ready(),
    )
    .await;
    gw.wait_server("fx", "ready").await;
    gw.wait_tool("fx__echo", true).await;
    let (code, body) = gw
        .post("/api/v1/tenants", json!({"id": "acme", "name": "Acme"}))
        .await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = gw
        .post("/api/v1/users", json!({"username": "root", "password": "acme-root-password", "roles": ["admin"], "tenant": "acme"}))
        .await;
    assert_eq!(code, 201, "{body}");
    // A user of the same name in the default tenant is a different user.
    let (code, _) = gw
        .post(
            "/api/v1/users",
            json!({"username": "root", "password": "default-root-password", "roles": ["viewer"]}),
        )
        .await;
    assert_eq!(code, 201);
    let login = reqwest::Client::new()
        .post(gw.url("/api/v1/auth/login"))
        .json(&json!({"username": "root", "password": "acme-root-password", "tenant": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status().as_u16(), 200);
    let acme = login.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, me) = gw
        .send_as(Some(&acme), "GET", "/api/v1/auth/me", None)
        .await;
    assert_eq!(me["tenant"], "acme");

    let (_, servers) = gw
        .send_as(Some(&acme), "GET", "/api/v1/servers", None)
        .await;
    assert_eq!(servers["total"], 0, "{servers}");
    let (_, tools) = gw.send_as(Some(&acme), "GET", "/api/v1/tools", None).await;
    assert_eq!(tools["total"], 0, "{tools}");
    let (_, users) = gw.send_as(Some(&acme), "GET", "/api/v1/users", None).await;
    let names: Vec<&str> = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["root"]);
    // By name and by id, another tenant's things answer like missing ones.
    let (_, admin) = gw.get("/api/v1/auth/me").await;
    for (method, path, body) in [
        ("GET", "/api/v1/servers/fx".to_owned(), None),
        ("POST", "/api/v1/servers/fx/restart".to_owned(), None),
        ("GET", "/api/v1/tools/fx__echo".to_owned(), None),
        (
            "POST",
            "/api/v1/tools/fx__echo/execute".to_owned(),
            Some(json!({"arguments": {"message": "x"}})),
        ),
        (
            "GET",
            format!("/api/v1/users/{}", admin["id"].as_str().unwrap()),
            None,
        ),
        (
            "PATCH",
            format!("/api/v1/users/{}", admin["id"].as_str().unwrap()),
            Some(json!({"disabled": true})),
        ),
    ] {
        let (code, hidden) = gw.send_as(Some(&acme), method, &path, body.clone()).await;
        let missing_path = path
            .replace("fx__echo", "fx__none")
            .replace("/fx", "/nope")
            .replace(
                admin["id"].as_str().unwrap(),
                "00000000-0000-0000-0000-000000000000",
            );
        let (code2, missing) = gw.send_as(Some(&acme), method, &missing_path, body).await;
        assert_eq!(code, 404, "{method} {path}: {hidden}");
        assert_eq!(
            (code, &hidden["type"]),
            (code2, &missing["type"]),
            "{method} {path}"
        );
    }
    let listed =
        common::mcp_request_with(&gw.mcp_url(), Some(&acme), "tools/list", json!({})).await;
    assert_eq!(listed["result"]["tools"], json!([]), "{listed}");
    // The default tenant's admin still has everything.
    let (_, admin_me) = gw.get("/api/v1/auth/me").await;
    assert_eq!(admin_me["tenant"], "default");
}

#[tokio::test]
async fn first_start_generates_secrets_privately_and_tokens_survive_a_restart() {
    let mut gw = Gateway::start(Options {
        anonymous: true,
        ..Default::default()
    })
    .await;
    use std::os::unix::fs::PermissionsExt;
    let file = gw.data_dir.join("initial-admin-password");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let password = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    let key_mode = std::fs::metadata(gw.data_dir.join("secret.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(key_mode, 0o600);
    let log = gw.log_text();
    assert!(
        log.contains("initial-admin-password"),
        "the log names the file"
    );
    assert!(!log.contains(&password), "the log never shows the password");
    let (code, login) = gw.login("admin", &password).await;
    assert_eq!(code, 200, "{login}");
    let token = login["access_token"].as_str().unwrap().to_owned();
    // Nothing answers without credentials but the public endpoints.
    for path in [
        "/api/v1/tools",
        "/api/v1/servers",
        "/api/v1/health/detailed",
        "/api/v1/auth/me",
        "/metrics",
        "/mcp",
    ] {
        let (code, _) = gw.send_as(None, "GET", path, None).await;
        assert_eq!(code, 401, "{path}");
    }
    for path in [
        "/api/v1/health",
        "/api/v1/health/live",
        "/api/v1/health/ready",
        "/api/v1/openapi.json",
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    ] {
        let (code, _) = gw.send_as(None, "GET", path, None).await;
        assert_eq!(code, 200, "{path}");
    }
    let (_, meta) = gw
        .send_as(
            None,
            "GET",
            "/.well-known/oauth-protected-resource/mcp",
            None,
        )
        .await;
    assert_eq!(meta["resource"], gw.mcp_url());
    gw.stop();
    let (dir, _tmp) = gw.keep_data();
    let gw = Gateway::start(Options {
        anonymous: true,
        data_dir: Some(dir),
        ..Default::default()
    })
    .await;
    let (code, me) = gw
        .send_as(Some(&token), "GET", "/api/v1/auth/me", None)
        .await;
    assert_eq!(code, 200, "a token from before the restart: {me}");
}

#[tokio::test]
async fn the_session_cookie_needs_csrf_for_changes_and_metrics_need_their_token() {
    let gw =
        Gateway::start(Options::default().env("META_MCP_METRICS_TOKEN", "scrape-token-0123456789"))
            .await;
    let r = reqwest::Client::new()
        .post(gw.url("/api/v1/auth/login"))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD, "cookie": true}))
        .send()
        .await
        .unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let body: Value = r.json().await.unwrap();
    let csrf = body["csrf_token"].as_str().unwrap();
    let session = cookie.split(';').next().unwrap().to_owned();
    let client = reqwest::Client::new();
    let r = client
        .get(gw.url("/api/v1/auth/me"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let profile = json!({"name": "p1", "tools": []});
    let r = client
        .post(gw.url("/api/v1/profiles"))
        .header("cookie", &session)
        .json(&profile)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403, "no CSRF token");
    let r = client
        .post(gw.url("/api/v1/profiles"))
        .header("cookie", &session)
        .header("x-csrf-token", "wrong")
        .json(&profile)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403, "a wrong CSRF token");
    let (_, profiles) = gw.get("/api/v1/profiles").await;
    assert!(
        !profiles.to_string().contains("\"p1\""),
        "nothing was created"
    );
    let r = client
        .post(gw.url("/api/v1/profiles"))
        .header("cookie", &session)
        .header("x-csrf-token", csrf)
        .json(&profile)
        .send()
        .await
        .unwrap();
    assert_ne!(r.status().as_u16(), 403, "{}", r.text().await.unwrap());

    let r = client
        .get(gw.url("/metrics"))
        .bearer_auth("scrape-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = client
        .get(gw.url("/metrics"))
        .bearer_auth("wrong-scrape-token-000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let (_, viewer) = gw.new_user(None, "viewer1", &["viewer"]).await;
    let (code, _) = gw.send_as(Some(&viewer), "GET", "/metrics", None).await;
    assert_eq!(code, 403, "a viewer lacks metrics:read");
    let (code, _) = gw.send_as(Some(&gw.token), "GET", "/metrics", None).await;
    assert_eq!(code, 200, "an admin may read metrics");
    // Identity events are counted.
    assert_eq!(gw.login("viewer1", "wrong-password-123").await.0, 401);
    let text = client
        .get(gw.url("/metrics"))
        .bearer_auth("scrape-token-0123456789")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "metamcp_auth_events_total{event=\"login_failed\"} 1",
        "metamcp_auth_events_total{event=\"credentials_rejected\"} 1",
        "metamcp_auth_events_total{event=\"key_created\"} 1",
    ] {
        assert!(text.contains(line), "{line} in:\n{text}");
    }
    let _ = Duration::ZERO;
}

#[tokio::test]
async fn a_legacy_session_belongs_to_the_principal_that_opened_it() {
    let gw = Gateway::start(Options::default()).await;
    let (_, other) = gw.new_user(None, "carol", &["user"]).await;
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;
    let r = common::mcp_post(&gw.mcp_url(), Some(&gw.token), init).await;
    assert_eq!(r.status().as_u16(), 200);
    let session = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{}}"#;
    let send = |token: &str| {
        client_with(token)
            .post(gw.mcp_url())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", "2025-11-25")
            .body(list)
            .send()
    };
    assert_eq!(
        send(&other).await.unwrap().status().as_u16(),
        404,
        "another principal"
    );
    assert_eq!(
        send(&gw.token).await.unwrap().status().as_u16(),
        200,
        "its owner"
    );
}

#[tokio::test]
async fn the_loopback_test_principal_is_off_by_default_and_limited_to_its_role() {
    let gw =
        Gateway::start(Options::default().env("META_MCP_ANONYMOUS_LOOPBACK_ROLE", "viewer")).await;
    let (code, me) = gw.send_as(None, "GET", "/api/v1/auth/me", None).await;
    assert_eq!(code, 200, "{me}");
    assert_eq!(
        (me["username"].as_str(), me["roles"].clone()),
        (Some("anonymous"), json!(["viewer"]))
    );
    let (code, _) = gw
        .send_as(
            None,
            "POST",
            "/api/v1/profiles",
            Some(json!({"name": "p", "tools": []})),
        )
        .await;
    assert_eq!(code, 403, "a viewer cannot write");
    let (code, _) = gw
        .send_as(Some("not-a-token"), "GET", "/api/v1/tools", None)
        .await;
    assert_eq!(
        code, 401,
        "bad credentials are never replaced by the test principal"
    );
    assert!(
        gw.log_text()
            .contains("META_MCP_ANONYMOUS_LOOPBACK_ROLE is set")
    );
    let plain = Gateway::start(Options::default()).await;
    let (code, _) = plain.send_as(None, "GET", "/api/v1/auth/me", None).await;
    assert_eq!(code, 401, "off by default");
}
