//! `metamcp export` / `metamcp import`: a deployment's whole configuration
//! moves from SQLite to PostgreSQL and back, under a different encryption
//! key on each side, and keeps working: logins, API keys, grants, profiles,
//! overlays, tenants, and upstream credentials re-sealed under the target's
//! key. Wrong passphrases and non-empty targets leave the target untouched.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::{Value, json};

use crate::common::pg::TempDatabase;
use crate::common::{
    ADMIN_PASSWORD, Gateway, Options, fixture_http_with, marker, mcp_request_with, texts,
    tool_names,
};

const TOKEN: &str = "upstream-bearer-for-transfer-5d4c3b";
const PASSPHRASE: &str = "the passphrase of the move";
const PG_ENCRYPTION_KEY: &str = "postgres-side-encryption-key-for-the-transfer-test";
const SQLITE_ENCRYPTION_KEY: &str = "sqlite-side-encryption-key-for-the-transfer-test";
const ALICE_PASSWORD: &str = "alice-password-of-the-move";
const BOB_PASSWORD: &str = "bob-password-of-the-acme-tenant";

/// Runs `metamcp` with only these variables (and PATH).
fn metamcp(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_metamcp"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run metamcp")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn postgres_url(test: &str) -> Option<String> {
    match std::env::var("METAMCP_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("METAMCP_TEST_POSTGRES_URL must be set in CI");
            }
            eprintln!("SKIPPED {test}: METAMCP_TEST_POSTGRES_URL is not set");
            None
        }
    }
}

async fn open(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::AnyPool::connect(url)
        .await
        .expect("open the database")
}

fn sqlite_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("metamcp.db").display())
}

/// Rows of every configuration table, by table.
async fn counts(pool: &sqlx::AnyPool) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for table in metamcp::store::snapshot::CONFIGURATION {
        let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {}",
            table.name
        )))
        .fetch_one(pool)
        .await
        .expect("count rows");
        out.push((table.name.to_owned(), n));
    }
    out
}

async fn server_rows(pool: &sqlx::AnyPool) -> Vec<String> {
    let rows: Vec<(String,)> = sqlx::query_as("SELECT spec FROM servers ORDER BY name")
        .fetch_all(pool)
        .await
        .expect("read servers");
    rows.into_iter().map(|(s,)| s).collect()
}

/// What the checks need of the source: the API key alice created there.
struct Made {
    alice_key: String,
}

/// A source deployment's configuration: a server with a credential, an
/// overlay, a profile, a custom role, a user with a grant and an API key,
/// and a second tenant with its own user.
async fn configure(gw: &Gateway, upstream: &str) -> Made {
    let (code, body) = gw
        .post(
            "/api/v1/servers",
            json!({"name": "remote", "url": upstream,
                   "headers": {"Authorization": format!("Bearer {TOKEN}")}}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    gw.wait_server("remote", "ready").await;
    gw.wait_tool("remote__echo", true).await;
    let (code, body) = gw
        .send(
            "PATCH",
            "/api/v1/tools/remote__echo",
            json!({"description": "Echo, moved along", "tags": ["moved"]}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = gw
        .post(
            "/api/v1/profiles",
            json!({"name": "moved", "tools": ["remote/echo"]}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = gw
        .post(
            "/api/v1/roles",
            json!({"name": "caller", "permissions": ["tools:read", "tools:execute"], "clearance": 30}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = gw
        .post(
            "/api/v1/users",
            json!({"username": "alice", "password": ALICE_PASSWORD, "roles": ["caller"]}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = gw
        .post(
            "/api/v1/grants",
            json!({"subject_kind": "role", "subject": "caller", "effect": "deny",
                   "resource_kind": "tool", "pattern": "remote/add"}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let (code, login) = gw.login("alice", ALICE_PASSWORD).await;
    assert_eq!(code, 200, "{login}");
    let (code, key) = gw
        .send_as(
            login["access_token"].as_str(),
            "POST",
            "/api/v1/auth/keys",
            Some(json!({"name": "alice-ci"})),
        )
        .await;
    assert_eq!(code, 201, "{key}");
    let (code, body) = gw
        .post("/api/v1/tenants", json!({"id": "acme", "name": "Acme"}))
        .await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = gw
        .post(
            "/api/v1/users",
            json!({"username": "bob", "password": BOB_PASSWORD, "roles": ["admin"], "tenant": "acme"}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    Made {
        alice_key: key["key"].as_str().unwrap().to_owned(),
    }
}

/// Everything `configure` made works in `gw`.
async fn check_configuration(gw: &Gateway, made: &Made) {
    // The credential opened under this deployment's key reaches the
    // upstream, which refuses any other.
    gw.wait_server("remote", "ready").await;
    let (code, result) = gw
        .execute("remote__echo", json!({"message": "across"}))
        .await;
    assert_eq!(code, 200, "{result}");
    assert_eq!(texts(&result["result"]), ["across"], "{result}");
    // The overlay.
    let (code, tool) = gw.get("/api/v1/tools/remote__echo").await;
    assert_eq!(code, 200, "{tool}");
    assert_eq!(tool["description"], "Echo, moved along", "{tool}");
    assert_eq!(tool["tags"], json!(["moved"]), "{tool}");
    // The profile.
    let listed = mcp_request_with(
        &gw.url("/mcp/moved"),
        Some(&gw.token),
        "tools/list",
        json!({}),
    )
    .await;
    assert_eq!(tool_names(&listed), ["remote__echo"], "{listed}");
    // alice's password, her API key, her custom role and its grant.
    let (code, login) = gw.login("alice", ALICE_PASSWORD).await;
    assert_eq!(code, 200, "{login}");
    let (code, tools) = gw
        .send_as(
            Some(&made.alice_key),
            "GET",
            "/api/v1/tools?limit=1000",
            None,
        )
        .await;
    assert_eq!(code, 200, "{tools}");
    let names: Vec<&str> = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"remote__echo"), "{names:?}");
    assert!(
        !names.contains(&"remote__add"),
        "the grant denies it: {names:?}"
    );
    let (code, _) = gw
        .send_as(Some(&made.alice_key), "GET", "/api/v1/servers", None)
        .await;
    assert_eq!(code, 403, "the custom role has no servers:read");
    // The second tenant and its user.
    let r = reqwest::Client::new()
        .post(gw.url("/api/v1/auth/login"))
        .json(&json!({"username": "bob", "password": BOB_PASSWORD, "tenant": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let bob = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, me) = gw.send_as(Some(&bob), "GET", "/api/v1/auth/me", None).await;
    assert_eq!(me["tenant"], "acme", "{me}");
}

fn write_passphrase(dir: &Path) -> PathBuf {
    let path = dir.join("passphrase");
    std::fs::write(&path, format!("{PASSPHRASE}\n")).unwrap();
    path
}

#[tokio::test]
async fn configuration_moves_from_sqlite_to_postgres_and_back() {
    let Some(base) = postgres_url("configuration_moves_from_sqlite_to_postgres_and_back") else {
        return;
    };
    let m = marker("transfer");
    let (_upstream, upstream) = fixture_http_with(&m, &["--require-bearer", TOKEN]);
    let work = tempfile::tempdir().unwrap();
    let pass_file = write_passphrase(work.path());

    // The source: SQLite with nothing set, so both keys are generated into
    // its data directory, as on a first install.
    let mut source = Gateway::start(Options::default()).await;
    let made = configure(&source, &upstream).await;
    source.stop();
    let (source_dir, _keep) = source.keep_data();
    let source_dir_text = source_dir.display().to_string();
    let export = work.path().join("config.metamcp");
    let export_text = export.display().to_string();
    let out = metamcp(
        &[
            "export",
            "--output",
            &export_text,
            "--passphrase-file",
            pass_file.to_str().unwrap(),
        ],
        &[("META_MCP_DATA_DIR", &source_dir_text)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("servers 1"), "{}", stderr(&out));
    let file = std::fs::read(&export).unwrap();
    assert!(!file.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()));
    assert!(!file.windows(5).any(|w| w == b"alice"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&export).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // It never overwrites.
    let again = metamcp(
        &["export", "--output", &export_text],
        &[
            ("META_MCP_DATA_DIR", &source_dir_text),
            ("META_MCP_EXPORT_PASSPHRASE", PASSPHRASE),
        ],
    );
    assert!(!again.status.success());
    assert!(stderr(&again).contains("exists"), "{}", stderr(&again));

    // The target: a fresh PostgreSQL database with its own encryption key.
    // API-key hashes are keyed by META_MCP_SECRET_KEY, so the target takes
    // the source's (generated into its data directory).
    let pg = TempDatabase::create(&base, "transfer").await;
    let secret_key = std::fs::read_to_string(source_dir.join("secret.key")).unwrap();
    let source_encryption = std::fs::read_to_string(source_dir.join("encryption.key")).unwrap();
    assert_ne!(source_encryption.trim(), PG_ENCRYPTION_KEY);
    let pg_env = |extra: &[(&'static str, &'static str)]| {
        let mut env: Vec<(&str, String)> = vec![
            ("META_MCP_DATABASE_URL", pg.url.clone()),
            ("META_MCP_SECRET_KEY", secret_key.trim().to_owned()),
            ("META_MCP_ENCRYPTION_KEY", PG_ENCRYPTION_KEY.to_owned()),
            (
                "META_MCP_DATA_DIR",
                work.path().join("pg-data").display().to_string(),
            ),
        ];
        env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        env
    };
    let run = |args: &[&str], env: &[(&str, String)]| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        metamcp(args, &env)
    };
    let tables_in_pg = |pool: sqlx::AnyPool| async move {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        pool.close().await;
        n
    };

    // A wrong passphrase: a clear error, and the target is not even created.
    let out = run(
        &["import", &export_text],
        &pg_env(&[("META_MCP_EXPORT_PASSPHRASE", "not the passphrase at all")]),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("wrong passphrase"),
        "{}",
        stderr(&out)
    );
    assert_eq!(tables_in_pg(pg.pool().await).await, 0);
    // Another signing key would void the API keys: refused, untouched.
    let mut other_key = pg_env(&[("META_MCP_EXPORT_PASSPHRASE", PASSPHRASE)]);
    other_key[1].1 = "a-different-signing-key-of-at-least-32-bytes".into();
    let out = run(&["import", &export_text], &other_key);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("META_MCP_SECRET_KEY") && stderr(&out).contains("--skip-api-keys"),
        "{}",
        stderr(&out)
    );
    assert_eq!(tables_in_pg(pg.pool().await).await, 0);

    // The import, passphrase from the environment this time.
    let out = run(
        &["import", &export_text],
        &pg_env(&[("META_MCP_EXPORT_PASSPHRASE", PASSPHRASE)]),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let sqlite_pool = open(&sqlite_url(&source_dir)).await;
    let pg_pool = pg.pool().await;
    let source_counts = counts(&sqlite_pool).await;
    assert_eq!(counts(&pg_pool).await, source_counts);
    for (table, n) in &source_counts {
        if [
            "tenants",
            "servers",
            "tool_overlays",
            "profiles",
            "tool_pins",
            "users",
            "roles",
            "grants",
            "api_keys",
        ]
        .contains(&table.as_str())
        {
            assert!(
                *n > 0,
                "{table} is empty in the source: the test proves nothing"
            );
        }
    }
    // Sealed under the target's key, not the source's.
    let (source_rows, target_rows) = (server_rows(&sqlite_pool).await, server_rows(&pg_pool).await);
    sqlite_pool.close().await;
    pg_pool.close().await;
    let key_id = |row: &str| {
        let at = row.find("enc:v1:").expect("an encrypted value") + "enc:v1:".len();
        row[at..].split(':').next().unwrap_or_default().to_owned()
    };
    assert!(!target_rows[0].contains(TOKEN), "{}", target_rows[0]);
    assert_ne!(key_id(&source_rows[0]), key_id(&target_rows[0]));
    // Importing again is refused: the target has configuration now.
    let out = run(
        &["import", &export_text],
        &pg_env(&[("META_MCP_EXPORT_PASSPHRASE", PASSPHRASE)]),
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--replace"), "{}", stderr(&out));

    // A gateway on PostgreSQL: the admin logs in with the source's password
    // (the harness does), and everything works.
    let mut opts = Options::default();
    for (k, v) in pg_env(&[]) {
        if k != "META_MCP_DATA_DIR" {
            opts = opts.env(k, &v);
        }
    }
    let mut on_pg = Gateway::start(opts).await;
    check_configuration(&on_pg, &made).await;
    let (code, _) = on_pg.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(code, 200);
    on_pg.stop();

    // And back: PostgreSQL to a fresh SQLite deployment with a third key.
    let back = work.path().join("back.metamcp");
    let back_text = back.display().to_string();
    let out = run(
        &[
            "export",
            "-o",
            &back_text,
            "--passphrase-file",
            pass_file.to_str().unwrap(),
        ],
        &pg_env(&[]),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let sqlite_dir = work.path().join("sqlite-data");
    let sqlite_dir_text = sqlite_dir.display().to_string();
    let sqlite_env = [
        ("META_MCP_DATA_DIR", sqlite_dir_text.as_str()),
        ("META_MCP_SECRET_KEY", secret_key.trim()),
        ("META_MCP_ENCRYPTION_KEY", SQLITE_ENCRYPTION_KEY),
        ("META_MCP_EXPORT_PASSPHRASE", PASSPHRASE),
    ];
    let out = metamcp(&["import", &back_text], &sqlite_env);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut opts = Options {
        data_dir: Some(sqlite_dir.clone()),
        ..Default::default()
    };
    for (k, v) in &sqlite_env[1..3] {
        opts = opts.env(k, v);
    }
    let on_sqlite = Gateway::start(opts).await;
    check_configuration(&on_sqlite, &made).await;
    drop(on_sqlite);
    let sqlite_pool = open(&sqlite_url(&sqlite_dir)).await;
    // The harness's own API keys were added on the way: one per gateway.
    let moved = counts(&sqlite_pool).await;
    sqlite_pool.close().await;
    for ((table, n), (_, before)) in moved.iter().zip(&source_counts) {
        match table.as_str() {
            "api_keys" => assert_eq!(*n, before + 2),
            "revoked_tokens" => {}
            _ => assert_eq!(n, before, "{table}"),
        }
    }
}

#[tokio::test]
async fn import_refuses_a_configured_target_unless_told_to_replace_it() {
    let m = marker("transfer-replace");
    let (_upstream, upstream) = fixture_http_with(&m, &["--require-bearer", TOKEN]);
    let work = tempfile::tempdir().unwrap();
    let mut source = Gateway::start(Options::default()).await;
    let made = configure(&source, &upstream).await;
    source.stop();
    let (source_dir, _keep) = source.keep_data();
    let export = work.path().join("config.metamcp");
    let export_text = export.display().to_string();
    let out = metamcp(
        &["export", "-o", &export_text],
        &[
            ("META_MCP_DATA_DIR", &source_dir.display().to_string()),
            ("META_MCP_EXPORT_PASSPHRASE", PASSPHRASE),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let secret_key = std::fs::read_to_string(source_dir.join("secret.key")).unwrap();

    // A target that already runs: its own admin and a server of its own.
    let mut target = Gateway::start(
        Options::default()
            .env("META_MCP_SECRET_KEY", secret_key.trim())
            .env("META_MCP_ENCRYPTION_KEY", SQLITE_ENCRYPTION_KEY),
    )
    .await;
    let (code, body) = target
        .post(
            "/api/v1/servers",
            json!({"name": "theirs", "url": upstream}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    target.stop();
    let (target_dir, _keep_target) = target.keep_data();
    let target_dir_text = target_dir.display().to_string();
    let env = |pass: &'static str| {
        [
            ("META_MCP_DATA_DIR", target_dir_text.clone()),
            ("META_MCP_SECRET_KEY", secret_key.trim().to_owned()),
            ("META_MCP_ENCRYPTION_KEY", SQLITE_ENCRYPTION_KEY.to_owned()),
            ("META_MCP_EXPORT_PASSPHRASE", pass.to_owned()),
        ]
    };
    let run = |args: &[&str], pass: &'static str| {
        let env = env(pass);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        metamcp(args, &env)
    };
    let before = {
        let pool = open(&sqlite_url(&target_dir)).await;
        let rows = server_rows(&pool).await;
        let c = counts(&pool).await;
        pool.close().await;
        (rows, c)
    };

    for (args, pass, expect) in [
        (vec!["import", &export_text], PASSPHRASE, "--replace"),
        (
            vec!["import", "--replace", &export_text],
            "a wrong passphrase here",
            "wrong passphrase",
        ),
    ] {
        let out = run(&args, pass);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(expect), "{}", stderr(&out));
        let pool = open(&sqlite_url(&target_dir)).await;
        assert_eq!(server_rows(&pool).await, before.0, "untouched");
        assert_eq!(counts(&pool).await, before.1, "untouched");
        pool.close().await;
    }
    // A damaged file: refused, untouched.
    let mut damaged = std::fs::read(&export).unwrap();
    let at = damaged.len() / 2;
    damaged[at] ^= 0x01;
    let damaged_path = work.path().join("damaged.metamcp");
    std::fs::write(&damaged_path, damaged).unwrap();
    let out = run(
        &["import", "--replace", damaged_path.to_str().unwrap()],
        PASSPHRASE,
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("altered"), "{}", stderr(&out));

    let out = run(&["import", "--replace", &export_text], PASSPHRASE);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut opts = Options::default()
        .env("META_MCP_SECRET_KEY", secret_key.trim())
        .env("META_MCP_ENCRYPTION_KEY", SQLITE_ENCRYPTION_KEY);
    opts.data_dir = Some(target_dir.clone());
    let target = Gateway::start(opts).await;
    check_configuration(&target, &made).await;
    let (code, _) = target.get("/api/v1/servers/theirs").await;
    assert_eq!(code, 404, "replaced");
}
