//! First start: the signing key and the first administrator.

use std::{io::Write, path::Path};

use crate::{
    config::Settings,
    store::{Backend, Store, UserRow},
};

use super::{DEFAULT_TENANT, format_time, password, tokens};

/// The secret key: the setting, or (embedded SQLite only) one kept in the
/// data directory, generated on first start.
pub fn secret_key(settings: &Settings, backend: Backend) -> anyhow::Result<Vec<u8>> {
    if let Some(key) = &settings.auth.secret_key {
        return Ok(key.0.as_bytes().to_vec());
    }
    if backend == Backend::Postgres {
        // Replicas sharing a database must share the key, and a key made up
        // by one replica would not be known to the others.
        anyhow::bail!(
            "META_MCP_SECRET_KEY must be set (at least 32 bytes) when the database is PostgreSQL"
        );
    }
    let path = settings.data_dir.join("secret.key");
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim().len() >= 32 => return Ok(text.trim().as_bytes().to_vec()),
        Ok(_) => anyhow::bail!(
            "{} is shorter than 32 bytes; remove it to have a new key generated",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
    }
    let key = tokens::random_token(48);
    write_private(&path, &key)?;
    tracing::info!(
        file = %path.display(),
        "META_MCP_SECRET_KEY is not set: generated a secret key and keep it in this file, so tokens survive restarts"
    );
    Ok(key.into_bytes())
}

/// Writes a file only its owner can read, refusing to overwrite one.
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// Creates the default tenant and, when there is no user at all, the
/// `admin` user: with `META_MCP_ADMIN_PASSWORD`, or with a generated
/// password written to `DATA_DIR/initial-admin-password` (never logged).
pub async fn first_admin(settings: &Settings, store: &Store) -> anyhow::Result<()> {
    store.ensure_tenant(DEFAULT_TENANT, "Default").await?;
    if store.count_users().await? > 0 {
        return Ok(());
    }
    let (password, file) = match &settings.auth.admin_password {
        Some(p) => (p.0.clone(), None),
        None => {
            let password = tokens::random_token(18);
            let path = settings.data_dir.join("initial-admin-password");
            // A leftover file from an earlier database would hold a password
            // that no longer works: replace it.
            let _ = std::fs::remove_file(&path);
            write_private(&path, &format!("{password}\n"))?;
            (password, Some(path))
        }
    };
    let hash = tokio::task::spawn_blocking(move || password::hash(&password))
        .await?
        .map_err(|e| anyhow::anyhow!("cannot hash the admin password: {e}"))?;
    let now = format_time(tokens::now_secs());
    let created = store
        .insert_user(&UserRow {
            id: uuid::Uuid::now_v7().to_string(),
            tenant_id: DEFAULT_TENANT.into(),
            username: "admin".into(),
            password_hash: hash,
            roles: vec!["platform_admin".into()],
            clearance: None,
            disabled: false,
            sessions_valid_after: 0,
            created_at: now.clone(),
            updated_at: now,
        })
        .await;
    match created {
        Ok(()) => {}
        // Another replica starting at the same moment on the same empty
        // database created it first: that one is the admin.
        Err(crate::store::StoreError::Conflict) => {
            if let Some(path) = file {
                let _ = std::fs::remove_file(path);
            }
            tracing::info!("user admin was created by another replica");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    }
    match file {
        Some(path) => tracing::warn!(
            file = %path.display(),
            "created user admin with a generated password; read it from this file, then change it"
        ),
        None => tracing::info!("created user admin with the password from META_MCP_ADMIN_PASSWORD"),
    }
    Ok(())
}
