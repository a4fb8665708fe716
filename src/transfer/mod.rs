//! `metamcp export` / `metamcp import`: the whole configuration of one
//! deployment moved into another, SQLite or PostgreSQL on either side.
//!
//! What moves is every table `store::snapshot` classifies as configuration:
//! tenants, servers, tool overlays, hand-registered tools, profiles, pins and
//! recorded tool changes, users (with their password hashes), roles,
//! grants, API keys (their keyed hashes) and revoked access tokens. Sessions
//! (refresh tokens), tool vectors and audit records stay behind.
//!
//! Upstream credentials are stored sealed under the deployment's encryption
//! key: export opens them with the source's key, so the file holds them in
//! clear (inside its own encryption), and import seals them under the
//! target's. The file itself is sealed under a passphrase ([`envelope`]).
//!
//! API-key hashes are keyed by `META_MCP_SECRET_KEY`, which no import can
//! change (only the key's owner has the secrets): the file carries a check
//! value of the source's key, and import refuses API keys the target's key
//! would not verify, unless told to leave them out.

pub mod envelope;

use std::{
    io::{BufRead, Write},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    auth::tokens::Hasher,
    config::Settings,
    secrets::{Keyring, SecretsError},
    store::{
        Backend, Store, StoreError,
        snapshot::{LoadMode, Loaded, TableRows},
    },
    upstream::spec::ServerSpec,
};

pub use envelope::{EnvelopeError, KdfParams};

/// The environment variable a passphrase may come from.
pub const PASSPHRASE_ENV: &str = "META_MCP_EXPORT_PASSPHRASE";
/// The shortest passphrase `export` accepts.
pub const MIN_PASSPHRASE_CHARS: usize = 12;

/// The contents of an export file (JSON, inside the envelope).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contents {
    pub metamcp_version: String,
    pub created_at: String,
    /// `sqlite` or `postgres`.
    pub source: String,
    /// A keyed hash of a fixed label under the source's
    /// `META_MCP_SECRET_KEY`: equal in the target exactly when its key is
    /// the same. `None` when the source had no key.
    pub secret_key_check: Option<String>,
    pub tables: Vec<TableRows>,
}

impl Contents {
    /// Rows of `table` (0 when absent).
    pub fn count(&self, table: &str) -> usize {
        self.tables
            .iter()
            .find(|t| t.table == table)
            .map_or(0, |t| t.rows.len())
    }

    fn summary(&self) -> String {
        let parts: Vec<String> = self
            .tables
            .iter()
            .filter(|t| !t.rows.is_empty())
            .map(|t| format!("{} {}", t.table, t.rows.len()))
            .collect();
        if parts.is_empty() {
            "nothing".into()
        } else {
            parts.join(", ")
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the export file's contents are not valid: {0}")]
    Contents(String),
    #[error("stored server {tenant}/{server}: {source}")]
    Secret {
        tenant: String,
        server: String,
        source: SecretsError,
    },
    #[error(
        "the export holds {keys} API key(s), whose stored hashes are keyed by the source's META_MCP_SECRET_KEY, and the target's key is {what}: they would not work. \
         Set META_MCP_SECRET_KEY to the source's value (on SQLite without the setting it is in DATA_DIR/secret.key), \
         or pass --skip-api-keys to import without them (nothing was imported)"
    )]
    SecretKeyMismatch { keys: usize, what: &'static str },
    #[error(
        "the target already has configuration ({0}): nothing was imported. Pass --replace to delete it and import in its place (one transaction)"
    )]
    TargetNotEmpty(String),
}

/// The check value of a `META_MCP_SECRET_KEY`.
fn secret_key_check(secret: &[u8]) -> String {
    Hasher::new(secret, "export-check").hash("metamcp secret key check")
}

fn rows_mut<'a>(tables: &'a mut [TableRows], table: &str) -> Option<&'a mut TableRows> {
    tables.iter_mut().find(|t| t.table == table)
}

/// Rewrites the `spec` of every stored server through `f` (tenant, spec).
fn map_servers(
    tables: &mut [TableRows],
    mut f: impl FnMut(&ServerSpec) -> Result<ServerSpec, SecretsError>,
) -> Result<(), TransferError> {
    let Some(servers) = rows_mut(tables, "servers") else {
        return Ok(());
    };
    let (Some(tenant_at), Some(name_at), Some(spec_at)) = (
        servers.column("tenant_id"),
        servers.column("name"),
        servers.column("spec"),
    ) else {
        return Err(TransferError::Contents(
            "the servers table lacks a column".into(),
        ));
    };
    for row in &mut servers.rows {
        let text = |at: usize| row[at].as_str().unwrap_or_default().to_owned();
        let (tenant, name) = (text(tenant_at), text(name_at));
        let spec: ServerSpec = serde_json::from_str(&text(spec_at)).map_err(|e| {
            TransferError::Contents(format!(
                "server {tenant}/{name} is not a valid definition: {e}"
            ))
        })?;
        let spec = f(&spec).map_err(|source| TransferError::Secret {
            tenant: tenant.clone(),
            server: name.clone(),
            source,
        })?;
        let text = serde_json::to_string(&spec)
            .map_err(|e| TransferError::Contents(format!("server {tenant}/{name}: {e}")))?;
        row[spec_at] = Value::String(text);
    }
    Ok(())
}

/// Reads the configuration of `store`, with every stored credential opened
/// by `keys` (the source's), and the check value of its `secret` key.
pub async fn export(
    store: &Store,
    keys: &Keyring,
    secret: Option<&[u8]>,
) -> Result<Contents, TransferError> {
    let mut tables = store.read_configuration().await?;
    map_servers(&mut tables, |spec| spec.opened(keys).map(|(open, _)| open))?;
    Ok(Contents {
        metamcp_version: env!("CARGO_PKG_VERSION").into(),
        created_at: crate::auth::format_time(crate::auth::tokens::now_secs()),
        source: match store.backend() {
            Backend::Sqlite => "sqlite".into(),
            Backend::Postgres => "postgres".into(),
        },
        secret_key_check: secret.map(secret_key_check),
        tables,
    })
}

/// Checks that the target's `secret` key verifies the exported API keys;
/// with `skip_api_keys` they are left out instead.
pub fn check_api_keys(
    contents: &mut Contents,
    secret: Option<&[u8]>,
    skip_api_keys: bool,
) -> Result<(), TransferError> {
    if skip_api_keys {
        if let Some(keys) = rows_mut(&mut contents.tables, "api_keys") {
            keys.rows.clear();
        }
        return Ok(());
    }
    let keys = contents.count("api_keys");
    if keys == 0 {
        return Ok(());
    }
    let target = secret.map(secret_key_check);
    match (&contents.secret_key_check, &target) {
        (Some(a), Some(b)) if crate::auth::tokens::secrets_equal(a, b) => Ok(()),
        (_, None) => Err(TransferError::SecretKeyMismatch {
            keys,
            what: "not set (a new one would be generated)",
        }),
        _ => Err(TransferError::SecretKeyMismatch {
            keys,
            what: "different",
        }),
    }
}

/// Seals every credential under `keys` (the target's).
pub fn seal_secrets(contents: &mut Contents, keys: &Keyring) -> Result<(), TransferError> {
    map_servers(&mut contents.tables, |spec| Ok(spec.sealed(keys)))
}

/// Writes `contents` into `store` in one transaction.
pub async fn load(store: &Store, contents: &Contents, mode: LoadMode) -> Result<(), TransferError> {
    let loaded = store
        .load_configuration(&contents.tables, mode)
        .await
        .map_err(|e| match e {
            StoreError::Corrupt(why) => TransferError::Contents(why),
            other => other.into(),
        })?;
    match loaded {
        Loaded::Done => Ok(()),
        Loaded::TargetNotEmpty(tables) => Err(TransferError::TargetNotEmpty(
            tables
                .iter()
                .map(|(t, n)| format!("{t} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

/// The export file of `contents`.
pub fn encode(
    contents: &Contents,
    passphrase: &str,
    params: KdfParams,
) -> Result<Vec<u8>, TransferError> {
    let json = serde_json::to_vec(contents).map_err(|e| TransferError::Contents(e.to_string()))?;
    Ok(envelope::seal(&json, passphrase, params)?)
}

/// The contents of an export file.
pub fn decode(file: &[u8], passphrase: &str) -> Result<Contents, TransferError> {
    let json = envelope::open(file, passphrase)?;
    serde_json::from_slice(&json).map_err(|e| TransferError::Contents(e.to_string()))
}

// ---- the commands ------------------------------------------------------

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The file to write (created readable by its owner only; never
    /// overwritten), or `-` for stdout.
    #[arg(long, short)]
    output: PathBuf,
    /// Read the passphrase from the first line of this file (else
    /// META_MCP_EXPORT_PASSPHRASE, else a prompt on the terminal).
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
    /// Config file whose settings apply (as for `serve`).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The export file (`-` for stdin, with the passphrase from a file or
    /// META_MCP_EXPORT_PASSPHRASE).
    file: PathBuf,
    /// Read the passphrase from the first line of this file (else
    /// META_MCP_EXPORT_PASSPHRASE, else a prompt on the terminal).
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
    /// Delete the target's configuration (and its login sessions and tool
    /// vectors) and import in its place, in one transaction. Without it a
    /// target that has any configuration is left untouched.
    #[arg(long)]
    replace: bool,
    /// Import without the API keys (when the target cannot use the
    /// source's META_MCP_SECRET_KEY; their owners create new ones).
    #[arg(long)]
    skip_api_keys: bool,
    /// Config file whose settings apply (as for `serve`).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

impl ExportArgs {
    pub fn config(&self) -> Option<&Path> {
        self.config.as_deref()
    }
}

impl ImportArgs {
    pub fn config(&self) -> Option<&Path> {
        self.config.as_deref()
    }
}

/// The passphrase: from `file`, else the environment, else the terminal
/// (asked twice when `confirm`). Never from the command line, where other
/// users of the host could read it.
fn passphrase(file: Option<&Path>, confirm: bool) -> anyhow::Result<String> {
    let value = if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!("cannot read the passphrase file {}: {e}", path.display())
        })?;
        text.lines().next().unwrap_or_default().to_owned()
    } else if let Some(value) = std::env::var(PASSPHRASE_ENV).ok().filter(|v| !v.is_empty()) {
        value
    } else {
        let first = prompt_hidden("Passphrase of the export file: ").map_err(|e| {
            anyhow::anyhow!(
                "no passphrase: set {PASSPHRASE_ENV}, pass --passphrase-file, or run in a terminal ({e})"
            )
        })?;
        if confirm && prompt_hidden("Same passphrase again: ")? != first {
            anyhow::bail!("the two passphrases differ");
        }
        first
    };
    if value.is_empty() {
        anyhow::bail!("the passphrase is empty");
    }
    Ok(value)
}

/// Reads a line from the controlling terminal with echo off.
fn prompt_hidden(prompt: &str) -> std::io::Result<String> {
    use std::os::fd::AsRawFd as _;
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")?;
    let fd = tty.as_raw_fd();
    // SAFETY: termios is plain data filled by tcgetattr on an open fd.
    let mut term: libc::termios = unsafe { std::mem::zeroed() };
    if unsafe { libc::tcgetattr(fd, &mut term) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let saved = term;
    term.c_lflag &= !libc::ECHO;
    term.c_lflag |= libc::ECHONL;
    // SAFETY: fd is open for the whole call; `term` is a valid termios.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &term) };
    let mut line = String::new();
    let result = (&tty)
        .write_all(prompt.as_bytes())
        .and_then(|()| std::io::BufReader::new(&tty).read_line(&mut line));
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    result?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// The `META_MCP_SECRET_KEY` a gateway with these settings would use,
/// without generating one: the setting, or on SQLite the key file.
fn existing_secret_key(settings: &Settings, backend: Backend) -> Option<Vec<u8>> {
    if let Some(key) = &settings.auth.secret_key {
        return Some(key.0.as_bytes().to_vec());
    }
    if backend == Backend::Postgres {
        return None;
    }
    let text = std::fs::read_to_string(settings.data_dir.join("secret.key")).ok()?;
    (text.trim().len() >= 32).then(|| text.trim().as_bytes().to_vec())
}

fn old_keys(settings: &Settings) -> Vec<&str> {
    settings
        .encryption_old_keys
        .iter()
        .map(|k| k.expose())
        .collect()
}

/// The source's keyring, never generating a key: without one (a SQLite
/// deployment that never stored a secret) only values in clear can be read.
fn source_keyring(settings: &Settings, backend: Backend) -> anyhow::Result<Keyring> {
    let old = old_keys(settings);
    let configured = settings.encryption_key.as_ref().map(|k| k.expose());
    let key_file = settings.data_dir.join(crate::secrets::KEY_FILE);
    let keys = if configured.is_some() || key_file.exists() || backend == Backend::Postgres {
        Keyring::load(
            configured,
            &old,
            &settings.data_dir,
            backend == Backend::Postgres,
        )
    } else {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw)?;
        use base64::Engine as _;
        Keyring::new(&base64::engine::general_purpose::STANDARD.encode(raw), &old)
    };
    keys.map_err(|e| anyhow::anyhow!("stored secrets: {e}"))
}

fn backend_of(settings: &Settings) -> anyhow::Result<Backend> {
    crate::store::validate_database_url(&settings.database_url)
        .map_err(|e| anyhow::anyhow!("META_MCP_DATABASE_URL: {e}"))
}

/// The SQLite file of a `sqlite://` URL.
fn sqlite_file(url: &str) -> Option<PathBuf> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    Some(PathBuf::from(path.split('?').next().unwrap_or_default()))
}

/// `metamcp export`.
pub async fn run_export(settings: &Settings, args: ExportArgs) -> anyhow::Result<()> {
    let to_stdout = args.output.as_os_str() == "-";
    if to_stdout {
        // SAFETY: isatty only inspects the descriptor.
        if unsafe { libc::isatty(1) } == 1 {
            anyhow::bail!(
                "refusing to write the (binary) export to a terminal: redirect stdout or use --output FILE"
            );
        }
    } else if args.output.exists() {
        anyhow::bail!(
            "{} exists: remove it or choose another name",
            args.output.display()
        );
    }
    let backend = backend_of(settings)?;
    if backend == Backend::Sqlite
        && let Some(file) = sqlite_file(&settings.database_url)
        && !file.exists()
    {
        anyhow::bail!(
            "no database at {} (META_MCP_DATABASE_URL / META_MCP_DATA_DIR)",
            file.display()
        );
    }
    let pass = passphrase(args.passphrase_file.as_deref(), true)?;
    if pass.chars().count() < MIN_PASSPHRASE_CHARS {
        anyhow::bail!("the passphrase needs at least {MIN_PASSPHRASE_CHARS} characters");
    }
    let keys = source_keyring(settings, backend)?;
    let secret = existing_secret_key(settings, backend);
    let store = Store::connect(&settings.database_url).await?;
    let result = export(&store, &keys, secret.as_deref()).await;
    store.close().await;
    let contents = result?;
    let summary = contents.summary();
    let file =
        tokio::task::spawn_blocking(move || encode(&contents, &pass, KdfParams::DEFAULT)).await??;
    if to_stdout {
        let mut out = std::io::stdout().lock();
        out.write_all(&file)?;
        out.flush()?;
    } else {
        write_private(&args.output, &file)?;
    }
    eprintln!(
        "exported {summary} to {}",
        if to_stdout {
            "stdout".into()
        } else {
            args.output.display().to_string()
        }
    );
    Ok(())
}

/// `metamcp import`.
pub async fn run_import(settings: &Settings, args: ImportArgs) -> anyhow::Result<()> {
    let file = if args.file.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut buf)?;
        buf
    } else {
        std::fs::read(&args.file)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.file.display()))?
    };
    let backend = backend_of(settings)?;
    let pass = passphrase(args.passphrase_file.as_deref(), false)?;
    // Everything that can fail without the target is checked before the
    // target is touched at all (not even migrated).
    let mut contents = tokio::task::spawn_blocking(move || decode(&file, &pass)).await??;
    let secret = existing_secret_key(settings, backend);
    if backend == Backend::Postgres && secret.is_none() {
        anyhow::bail!(
            "META_MCP_SECRET_KEY must be set (at least 32 bytes) when the database is PostgreSQL"
        );
    }
    check_api_keys(&mut contents, secret.as_deref(), args.skip_api_keys)?;
    let key_file = settings.data_dir.join(crate::secrets::KEY_FILE);
    let generates_key =
        backend == Backend::Sqlite && settings.encryption_key.is_none() && !key_file.exists();
    let keys = Keyring::load(
        settings.encryption_key.as_ref().map(|k| k.expose()),
        &old_keys(settings),
        &settings.data_dir,
        backend == Backend::Postgres,
    )
    .map_err(|e| anyhow::anyhow!("stored secrets: {e}"))?;
    seal_secrets(&mut contents, &keys)?;
    let store = Store::connect(&settings.database_url).await?;
    let mode = if args.replace {
        LoadMode::Replace
    } else {
        LoadMode::IntoEmpty
    };
    let result = load(&store, &contents, mode).await;
    store.close().await;
    result?;
    if generates_key {
        eprintln!(
            "META_MCP_ENCRYPTION_KEY is not set: generated the key that seals stored credentials into {}; back it up",
            key_file.display()
        );
    }
    eprintln!(
        "imported {} (exported from {} by metamcp {} at {}); start the gateways to use it",
        contents.summary(),
        contents.source,
        contents.metamcp_version,
        contents.created_at
    );
    Ok(())
}

/// Creates `path` readable by its owner only (it holds credentials),
/// failing if it exists.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::UserRow;

    const FAST: KdfParams = KdfParams {
        memory_kib: 64,
        passes: 1,
        lanes: 1,
    };
    const PASS: &str = "a passphrase for the tests";
    const SOURCE_KEY: &str = "source-encryption-key-of-32-bytes-or-more";
    const TARGET_KEY: &str = "target-encryption-key-of-32-bytes-or-more";
    const SECRET: &[u8] = b"the-token-signing-key-of-the-deployment";

    async fn sqlite() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        (dir, Store::connect(&url).await.unwrap())
    }

    /// A source with a server holding a sealed credential, a user and an
    /// API key.
    async fn source() -> (tempfile::TempDir, Store, Keyring) {
        let (dir, store) = sqlite().await;
        let keys = Keyring::new(SOURCE_KEY, &[]).unwrap();
        store.ensure_tenant("default", "Default").await.unwrap();
        let spec = ServerSpec::from_api_json(serde_json::json!({
            "name": "remote", "url": "https://h.example/mcp",
            "headers": {"Authorization": "Bearer upstream-s3cret"}}))
        .unwrap();
        store
            .insert_server("default", "remote", &spec.sealed(&keys))
            .await
            .unwrap();
        store
            .insert_user(&UserRow {
                id: "u1".into(),
                tenant_id: "default".into(),
                username: "alice".into(),
                password_hash: "$argon2id$hash".into(),
                roles: vec!["user".into()],
                clearance: Some(40),
                disabled: false,
                sessions_valid_after: 0,
                created_at: "2026-01-01T00:00:00Z".into(),
                updated_at: "2026-01-01T00:00:00Z".into(),
            })
            .await
            .unwrap();
        store
            .insert_api_key(&crate::store::ApiKeyRow {
                id: "0123456789abcdef".into(),
                tenant_id: "default".into(),
                user_id: "u1".into(),
                name: "ci".into(),
                secret_hash: "hash".into(),
                scopes: vec![],
                expires_at: None,
                last_used_at: None,
                revoked_at: None,
                created_at: "2026-01-01T00:00:00Z".into(),
            })
            .await
            .unwrap();
        (dir, store, keys)
    }

    #[tokio::test]
    async fn round_trip_reseals_credentials_under_the_target_key() {
        let (_a, source, source_keys) = source().await;
        let exported = export(&source, &source_keys, Some(SECRET)).await.unwrap();
        assert_eq!(exported.source, "sqlite");
        // Inside the file the credential is in clear, the file sealed.
        let servers = &exported
            .tables
            .iter()
            .find(|t| t.table == "servers")
            .unwrap();
        assert!(
            servers.rows[0][2]
                .as_str()
                .unwrap()
                .contains("upstream-s3cret")
        );
        let file = encode(&exported, PASS, FAST).unwrap();
        assert!(!file.windows(6).any(|w| w == b"s3cret"));

        let mut contents = decode(&file, PASS).unwrap();
        assert_eq!(contents, exported);
        check_api_keys(&mut contents, Some(SECRET), false).unwrap();
        let target_keys = Keyring::new(TARGET_KEY, &[]).unwrap();
        seal_secrets(&mut contents, &target_keys).unwrap();
        let (_b, target) = sqlite().await;
        load(&target, &contents, LoadMode::IntoEmpty).await.unwrap();

        let stored: Vec<(String, ServerSpec)> = target.list_all_servers().await.unwrap();
        let raw = serde_json::to_string(&stored[0].1).unwrap();
        assert!(!raw.contains("upstream-s3cret"), "{raw}");
        assert!(raw.contains(target_keys.current_id()));
        let (opened, rewrite) = stored[0].1.opened(&target_keys).unwrap();
        assert!(!rewrite);
        let shown = serde_json::to_value(&opened).unwrap();
        assert_eq!(shown["headers"]["Authorization"], "Bearer upstream-s3cret");
        // The source key does not open the target's row.
        assert!(stored[0].1.opened(&source_keys).is_err());
        let alice = target
            .user_by_name("default", "alice")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(alice.password_hash, "$argon2id$hash");
        assert_eq!(alice.clearance, Some(40));
        assert_eq!(
            target
                .list_api_keys("default", Some("u1"))
                .await
                .unwrap()
                .len(),
            1
        );

        // A second import into the same target is refused whole.
        let err = load(&target, &contents, LoadMode::IntoEmpty)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("--replace"), "{err}");
        load(&target, &contents, LoadMode::Replace).await.unwrap();
        // A table this build does not know: refused, and said why.
        let mut newer = contents.clone();
        newer.tables[0].table = "from_the_future".into();
        let err = load(&target, &newer, LoadMode::Replace).await.unwrap_err();
        assert!(err.to_string().contains("newer metamcp"), "{err}");
        assert_eq!(
            target.list_all_servers::<ServerSpec>().await.unwrap().len(),
            1
        );
    }

    #[tokio::test]
    async fn wrong_passphrase_tampering_and_versions_are_clear_errors() {
        let (_a, source, keys) = source().await;
        let file = encode(&export(&source, &keys, None).await.unwrap(), PASS, FAST).unwrap();
        let err = decode(&file, "not the passphrase").unwrap_err();
        assert!(err.to_string().contains("wrong passphrase"), "{err}");
        let mut tampered = file.clone();
        let last = tampered.len() - 20;
        tampered[last] ^= 0x40;
        let err = decode(&tampered, PASS).unwrap_err();
        assert!(err.to_string().contains("altered"), "{err}");
        let mut newer = file.clone();
        newer[8] = envelope::VERSION + 1;
        let err = decode(&newer, PASS).unwrap_err();
        assert!(err.to_string().contains("newer metamcp"), "{err}");
    }

    #[tokio::test]
    async fn api_keys_need_the_same_secret_key_or_are_skipped() {
        let (_a, source, keys) = source().await;
        let exported = export(&source, &keys, Some(SECRET)).await.unwrap();
        let mut other = exported.clone();
        let err = check_api_keys(
            &mut other,
            Some(b"another-signing-key-of-32-bytes-or-more"),
            false,
        )
        .unwrap_err();
        assert!(matches!(
            err,
            TransferError::SecretKeyMismatch { keys: 1, .. }
        ));
        assert!(err.to_string().contains("META_MCP_SECRET_KEY"), "{err}");
        let err = check_api_keys(&mut other, None, false).unwrap_err();
        assert!(err.to_string().contains("not set"), "{err}");
        // Skipped: everything else still moves.
        check_api_keys(&mut other, None, true).unwrap();
        assert_eq!(other.count("api_keys"), 0);
        assert_eq!(other.count("users"), 1);
        // Without API keys the key does not matter.
        let (_b, empty) = sqlite().await;
        empty.ensure_tenant("default", "Default").await.unwrap();
        let mut bare = export(&empty, &keys, None).await.unwrap();
        check_api_keys(&mut bare, Some(SECRET), false).unwrap();
    }

    #[tokio::test]
    async fn a_credential_the_source_key_cannot_open_stops_the_export() {
        let (_a, source, _) = source().await;
        let stranger = Keyring::new(TARGET_KEY, &[]).unwrap();
        let err = export(&source, &stranger, None).await.unwrap_err();
        assert!(
            err.to_string().contains("default/remote")
                && err.to_string().contains("not configured"),
            "{err}"
        );
    }
}
