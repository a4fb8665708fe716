//! Live config: the config file is watched, and adding, changing or removing
//! a server or profile there takes effect without a restart. A changed file
//! passes the same validation as at start; a broken one is refused with a
//! clear message and the running config is kept.
//!
//! The file is polled (its content hash, every `config_watch` interval)
//! rather than watched with inotify: editors replace files in many ways
//! (rename, truncate, write in place), and a content hash sees them all.

use std::{path::PathBuf, sync::Arc, time::Duration};

use sha2::{Digest, Sha256};

use crate::{
    app::AppState,
    auth::DEFAULT_TENANT,
    config::ConfigFile,
    upstream::spec::{ServerSpec, Source},
};

/// Starts watching `path`; stops with the gateway.
pub fn spawn(state: Arc<AppState>, path: PathBuf, interval: Duration) {
    tokio::spawn(async move {
        let mut last = digest(&path);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = state.shutdown.cancelled() => return,
            }
            let current = digest(&path);
            if current == last {
                continue;
            }
            last = current;
            match ConfigFile::read(&path, &|name| std::env::var(name).ok()) {
                Ok(file) => {
                    tracing::info!(path = %path.display(), "config file changed; applying it");
                    apply(&state, file).await;
                }
                Err(error) => tracing::error!(
                    path = %path.display(),
                    %error,
                    "config file change refused; the running config is kept"
                ),
            }
        }
    });
}

fn digest(path: &std::path::Path) -> Option<[u8; 32]> {
    std::fs::read(path)
        .ok()
        .map(|bytes| Sha256::digest(&bytes).into())
}

/// Brings the running servers and profiles in line with `file`. The
/// file's servers and profiles belong to the default tenant.
pub async fn apply(state: &AppState, file: ConfigFile) {
    let _guard = state.servers_lock.lock().await;
    let running: Vec<ServerSpec> = state
        .upstreams
        .list_tenant(DEFAULT_TENANT)
        .iter()
        .filter(|u| u.spec.source == Source::Config)
        .map(|u| u.spec.clone())
        .collect();
    for old in &running {
        match file.servers.iter().find(|s| s.name == old.name) {
            Some(new) if new == old => {}
            Some(_) => {
                tracing::info!(server = %old.name, "server changed in the config file; restarting it");
                state.upstreams.remove(DEFAULT_TENANT, &old.name).await;
            }
            None => {
                tracing::info!(server = %old.name, "server removed from the config file; stopping it");
                state.upstreams.remove(DEFAULT_TENANT, &old.name).await;
            }
        }
    }
    for spec in &file.servers {
        if state.upstreams.get(DEFAULT_TENANT, &spec.name).is_some() {
            // Unchanged, or a server created over the API that owns the name.
            continue;
        }
        tracing::info!(server = %spec.name, "server added from the config file");
        state.upstreams.add(DEFAULT_TENANT, spec.clone());
    }
    state.catalog.set_config_profiles(file.profiles);
    let initial: std::collections::BTreeMap<&str, &str> = state
        .settings
        .file_settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let now: std::collections::BTreeMap<&str, &str> = file
        .settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if initial != now {
        tracing::warn!(
            "settings beside mcpServers changed in the config file; they take effect at the next restart"
        );
    }
    if let Err(error) = state.refresh_catalog(DEFAULT_TENANT).await {
        tracing::error!(%error, "catalog rebuild after a config change failed");
    }
}
