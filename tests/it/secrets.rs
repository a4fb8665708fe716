//! Upstream credentials at rest: encrypted in the database, shown masked by
//! the API, kept when a masked definition is sent back, still sent to the
//! upstream, and readable after the encryption key is rotated.

use std::path::Path;

use serde_json::{Value, json};

use crate::common::{Gateway, Options, fixture_bin, fixture_http_with, marker, texts};

const K1: &str = "first-encryption-key-for-the-secrets-test";
const K2: &str = "second-encryption-key-for-the-secrets-test";
const TOKEN: &str = "upstream-bearer-9f8e7d6c";
const ENV_SECRET: &str = "stdio-env-secret-1a2b3c";
const URL_PASSWORD: &str = "url-pass-5150";

/// Every stored server row, as the database holds it.
async fn raw_rows(data_dir: &Path) -> Vec<String> {
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}", data_dir.join("metamcp.db").display());
    let pool = sqlx::AnyPool::connect(&url)
        .await
        .expect("open the database");
    let rows: Vec<(String,)> = sqlx::query_as("SELECT spec FROM servers ORDER BY name")
        .fetch_all(&pool)
        .await
        .expect("read servers");
    pool.close().await;
    rows.into_iter().map(|(spec,)| spec).collect()
}

/// The key id of the first encrypted value in a stored row.
fn key_id(row: &str) -> String {
    let at = row.find("enc:v1:").expect("an encrypted value") + "enc:v1:".len();
    row[at..].split(':').next().unwrap_or_default().to_owned()
}

fn with_key(data_dir: Option<&Path>, key: &str, old: Option<&str>) -> Options {
    let mut opts = Options::default()
        .env("META_MCP_ENCRYPTION_KEY", key)
        .env("META_MCP_ALLOW_STDIO_API", "true");
    if let Some(old) = old {
        opts = opts.env("META_MCP_ENCRYPTION_OLD_KEYS", old);
    }
    opts.data_dir = data_dir.map(Path::to_path_buf);
    opts
}

#[tokio::test]
async fn upstream_credentials_are_encrypted_masked_kept_and_rotated() {
    let m = marker("secrets");
    let (_upstream, url) = fixture_http_with(&m, &["--require-bearer", TOKEN]);
    let mut gw = Gateway::start(with_key(None, K1, None)).await;

    // A wrong token is refused by the upstream: the test can tell. Its URL
    // carries a password, which is a secret too.
    let with_password = url.replacen("http://", &format!("http://svc:{URL_PASSWORD}@"), 1);
    let (code, _) = gw
        .post(
            "/api/v1/servers",
            json!({"name": "wrong", "url": with_password, "headers": {"Authorization": "Bearer nope"}}),
        )
        .await;
    assert_eq!(code, 201);
    // The right one, over HTTP, and an environment secret over stdio.
    let (code, created) = gw
        .post(
            "/api/v1/servers",
            json!({"name": "remote", "url": url,
                   "headers": {"Authorization": format!("Bearer {TOKEN}")}}),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    assert!(!created.to_string().contains(TOKEN), "{created}");
    let (code, created) = gw
        .post(
            "/api/v1/servers",
            json!({"name": "local", "command": fixture_bin(), "args": ["--name", m],
                   "env": {"FIXTURE_SECRET": ENV_SECRET}}),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    assert!(!created.to_string().contains(ENV_SECRET));

    // The upstreams got their credentials.
    gw.wait_server("remote", "ready").await;
    gw.wait_server("local", "ready").await;
    let (code, result) = gw
        .execute("local__env", json!({"name": "FIXTURE_SECRET"}))
        .await;
    assert_eq!(code, 200, "{result}");
    assert_eq!(texts(&result["result"]), [ENV_SECRET], "{result}");
    let (_, wrong) = gw.get("/api/v1/servers/wrong").await;
    assert_ne!(wrong["status"]["status"], "ready", "{wrong}");
    let shown_wrong = wrong.to_string();
    assert!(
        !shown_wrong.contains(URL_PASSWORD) && !shown_wrong.contains("Bearer nope"),
        "{shown_wrong}"
    );

    // The API shows them masked.
    let (_, shown) = gw.get("/api/v1/servers/remote").await;
    assert_eq!(shown["headers"]["Authorization"], "********", "{shown}");
    let (_, listed) = gw.get("/api/v1/servers").await;
    let listed = listed.to_string();
    assert!(!listed.contains(TOKEN) && !listed.contains(ENV_SECRET));

    // The database holds ciphertext only.
    let rows = raw_rows(&gw.data_dir).await;
    assert_eq!(rows.len(), 3);
    for row in &rows {
        assert!(!row.contains(TOKEN) && !row.contains(ENV_SECRET), "{row}");
        assert!(
            !row.contains("Bearer nope") && !row.contains(URL_PASSWORD),
            "{row}"
        );
        assert!(row.contains("enc:v1:"), "{row}");
    }
    let k1_id = key_id(&rows[0]);

    // Sending back what GET showed (the mask) with a change keeps the secret.
    let mut update: Value = shown.clone();
    update["timeout_secs"] = json!(30);
    let (code, updated) = gw.send("PUT", "/api/v1/servers/remote", update).await;
    assert_eq!(code, 200, "{updated}");
    gw.wait_server("remote", "ready").await;
    let rows = raw_rows(&gw.data_dir).await;
    assert!(
        rows.iter()
            .all(|r| !r.contains(TOKEN) && !r.contains("********"))
    );

    // Nothing secret reached the log either.
    let log = gw.log_text();
    for secret in [TOKEN, ENV_SECRET, K1, URL_PASSWORD, "Bearer nope"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }

    // Rotation: restart with K2 as the key and K1 as an old one.
    gw.stop();
    let (data_dir, _keep) = gw.keep_data();
    let mut gw = Gateway::start(with_key(Some(&data_dir), K2, Some(K1))).await;
    gw.wait_server("remote", "ready").await;
    gw.wait_server("local", "ready").await;
    let (_, result) = gw
        .execute("local__env", json!({"name": "FIXTURE_SECRET"}))
        .await;
    assert_eq!(texts(&result["result"]), [ENV_SECRET], "{result}");
    // Rows moved to the new key at start.
    let rows = raw_rows(&data_dir).await;
    let k2_id = key_id(&rows[0]);
    assert_ne!(k1_id, k2_id);
    assert!(
        rows.iter()
            .all(|r| !r.contains(&format!("enc:v1:{k1_id}:"))),
        "{rows:?}"
    );
    gw.stop();

    // So K1 can go.
    let mut gw = Gateway::start(with_key(Some(&data_dir), K2, None)).await;
    gw.wait_server("remote", "ready").await;
    gw.stop();

    // A gateway with neither key does not load them, and says why.
    let gw = Gateway::start(with_key(
        Some(&data_dir),
        "an-unrelated-third-key-of-enough-length",
        None,
    ))
    .await;
    let (code, _) = gw.get("/api/v1/servers/remote").await;
    assert_eq!(code, 404);
    assert!(
        gw.log_text().contains("cannot be decrypted"),
        "{}",
        gw.log_text()
    );
}

#[tokio::test]
async fn a_generated_key_is_kept_in_the_data_directory() {
    let m = marker("secrets-gen");
    let mut gw = Gateway::start(Options::default().env("META_MCP_ALLOW_STDIO_API", "true")).await;
    let key_file = gw.data_dir.join("encryption.key");
    assert!(key_file.exists(), "{}", gw.log_text());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let key = std::fs::read_to_string(&key_file).unwrap();
    assert!(
        !gw.log_text().contains(key.trim()),
        "the key is never logged"
    );
    assert!(gw.log_text().contains("encryption.key"));
    let (code, _) = gw
        .post(
            "/api/v1/servers",
            json!({"name": "local", "command": fixture_bin(), "args": ["--name", m],
                   "env": {"FIXTURE_SECRET": ENV_SECRET}}),
        )
        .await;
    assert_eq!(code, 201);
    gw.stop();
    let (data_dir, _keep) = gw.keep_data();
    let mut opts = Options::default().env("META_MCP_ALLOW_STDIO_API", "true");
    opts.data_dir = Some(data_dir.clone());
    let gw = Gateway::start(opts).await;
    gw.wait_server("local", "ready").await;
    let (_, result) = gw
        .execute("local__env", json!({"name": "FIXTURE_SECRET"}))
        .await;
    assert_eq!(texts(&result["result"]), [ENV_SECRET], "{result}");
    assert!(
        raw_rows(&data_dir)
            .await
            .iter()
            .all(|r| !r.contains(ENV_SECRET))
    );
}

#[tokio::test]
async fn postgres_refuses_to_start_without_a_key() {
    let Ok(base) = std::env::var("METAMCP_TEST_POSTGRES_URL") else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("METAMCP_TEST_POSTGRES_URL must be set in CI");
        }
        eprintln!(
            "SKIPPED postgres_refuses_to_start_without_a_key: METAMCP_TEST_POSTGRES_URL is not set"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_metamcp"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("META_MCP_DATABASE_URL", &base)
        .env(
            "META_MCP_SECRET_KEY",
            "a-token-signing-key-of-at-least-32-bytes",
        )
        .env("META_MCP_PORT", "0")
        .env("META_MCP_DATA_DIR", dir.path())
        .output()
        .expect("run metamcp");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("META_MCP_ENCRYPTION_KEY"), "{stderr}");
    assert!(!dir.path().join("encryption.key").exists());
}
