//! Persistence behind one type, on SQLite (the embedded default) or
//! PostgreSQL, chosen by the database URL. Both run the same portable SQL
//! through sqlx's `Any` driver, and the store test suite runs against both.
//!
//! Documents (server specs, overlays, manual tools) are stored as JSON text;
//! the store is generic over their types so it depends on no other module.

use std::{borrow::Cow, path::Path, str::FromStr, time::Duration};

use serde::{Serialize, de::DeserializeOwned};
use sqlx::{
    AnyPool, Row,
    any::AnyPoolOptions,
    migrate::{Migration, MigrationType, Migrator},
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("already exists")]
    Conflict,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored document is not valid: {0}")]
    Corrupt(String),
}

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Checks a `META_MCP_DATABASE_URL` value without connecting.
pub fn validate_database_url(url: &str) -> Result<Backend, String> {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        if path.trim().is_empty() {
            return Err("sqlite:// needs a file path, e.g. sqlite://./data/metamcp.db".into());
        }
        return Ok(Backend::Sqlite);
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        url::Url::parse(url).map_err(|e| format!("not a valid URL: {e}"))?;
        return Ok(Backend::Postgres);
    }
    Err("expected sqlite://PATH, postgres://... or postgresql://...".into())
}

fn migrator() -> Migrator {
    let mut migrator = Migrator::with_migrations(vec![Migration::new(
        1,
        Cow::Borrowed("init"),
        MigrationType::Simple,
        sqlx::SqlSafeStr::into_sql_str(include_str!("../../migrations/0001_init.sql")),
        false,
    )]);
    // Advisory locking makes concurrent starts of several replicas safe.
    migrator.set_locking(true);
    migrator
}

/// The gateway's store.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

impl Store {
    /// Connects (creating the SQLite file and its directory when needed) and
    /// runs pending migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = validate_database_url(url).map_err(StoreError::Corrupt)?;
        let (url, max) = match backend {
            Backend::Sqlite => {
                let path = url
                    .strip_prefix("sqlite://")
                    .or_else(|| url.strip_prefix("sqlite:"))
                    .unwrap_or_default();
                let file = path.split('?').next().unwrap_or_default();
                if let Some(dir) = Path::new(file).parent()
                    && !dir.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        StoreError::Corrupt(format!("cannot create {}: {e}", dir.display()))
                    })?;
                }
                let sep = if path.contains('?') { '&' } else { '?' };
                (format!("sqlite://{path}{sep}mode=rwc"), 4)
            }
            Backend::Postgres => (url.to_owned(), 10),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&url)
            .await?;
        if backend == Backend::Sqlite {
            // WAL lets readers proceed while a write is in progress; the mode
            // is a property of the database file, so setting it once holds.
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&pool)
                .await?;
        }
        migrator().run(&pool).await?;
        Ok(Self { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Round-trips a trivial query; returns how long it took.
    pub async fn ping(&self) -> Result<Duration, StoreError> {
        let start = std::time::Instant::now();
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(start.elapsed())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---- servers -------------------------------------------------------

    pub async fn list_servers<T: DeserializeOwned>(
        &self,
        tenant: &str,
    ) -> Result<Vec<T>, StoreError> {
        let rows =
            sqlx::query("SELECT spec FROM servers WHERE tenant_id = $1 ORDER BY created_at, name")
                .bind(tenant)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| decode(r.try_get::<String, _>(0)?))
            .collect()
    }

    pub async fn insert_server<T: Serialize>(
        &self,
        tenant: &str,
        name: &str,
        spec: &T,
    ) -> Result<(), StoreError> {
        let ts = now();
        sqlx::query("INSERT INTO servers (tenant_id, name, spec, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(tenant)
            .bind(name)
            .bind(encode(spec)?)
            .bind(&ts)
            .bind(&ts)
            .execute(&self.pool)
            .await
            .map_err(|e| if is_unique_violation(&e) { StoreError::Conflict } else { e.into() })?;
        Ok(())
    }

    /// Replaces a stored server; false when there was none.
    pub async fn update_server<T: Serialize>(
        &self,
        tenant: &str,
        name: &str,
        spec: &T,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE servers SET spec = $1, updated_at = $2 WHERE tenant_id = $3 AND name = $4",
        )
        .bind(encode(spec)?)
        .bind(now())
        .bind(tenant)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn delete_server(&self, tenant: &str, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM servers WHERE tenant_id = $1 AND name = $2")
            .bind(tenant)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    // ---- tool overlays -------------------------------------------------

    /// Every overlay of a tenant as (server, tool, overlay).
    pub async fn list_overlays<T: DeserializeOwned>(
        &self,
        tenant: &str,
    ) -> Result<Vec<(String, String, T)>, StoreError> {
        let rows = sqlx::query("SELECT server, tool, overlay FROM tool_overlays WHERE tenant_id = $1 ORDER BY server, tool")
            .bind(tenant)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0)?,
                    r.try_get(1)?,
                    decode(r.try_get::<String, _>(2)?)?,
                ))
            })
            .collect()
    }

    /// Inserts or replaces the overlay of tool (server, tool).
    pub async fn put_overlay<T: Serialize>(
        &self,
        tenant: &str,
        server: &str,
        tool: &str,
        overlay: &T,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tool_overlays (tenant_id, server, tool, overlay, updated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (tenant_id, server, tool) DO UPDATE SET overlay = excluded.overlay, updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(server)
        .bind(tool)
        .bind(encode(overlay)?)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn delete_overlay(
        &self,
        tenant: &str,
        server: &str,
        tool: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "DELETE FROM tool_overlays WHERE tenant_id = $1 AND server = $2 AND tool = $3",
        )
        .bind(tenant)
        .bind(server)
        .bind(tool)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    // ---- manual tools --------------------------------------------------

    pub async fn list_manual_tools<T: DeserializeOwned>(
        &self,
        tenant: &str,
    ) -> Result<Vec<T>, StoreError> {
        let rows =
            sqlx::query("SELECT record FROM manual_tools WHERE tenant_id = $1 ORDER BY name")
                .bind(tenant)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| decode(r.try_get::<String, _>(0)?))
            .collect()
    }

    /// Inserts several manual tools in one transaction: all or none.
    pub async fn insert_manual_tools<T: Serialize>(
        &self,
        tenant: &str,
        tools: &[(String, T)],
    ) -> Result<(), StoreError> {
        let ts = now();
        let mut tx = self.pool.begin().await?;
        for (name, record) in tools {
            sqlx::query("INSERT INTO manual_tools (tenant_id, name, record, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(tenant)
                .bind(name)
                .bind(encode(record)?)
                .bind(&ts)
                .bind(&ts)
                .execute(&mut *tx)
                .await
                .map_err(|e| if is_unique_violation(&e) { StoreError::Conflict } else { e.into() })?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn update_manual_tool<T: Serialize>(
        &self,
        tenant: &str,
        name: &str,
        record: &T,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE manual_tools SET record = $1, updated_at = $2 WHERE tenant_id = $3 AND name = $4")
            .bind(encode(record)?)
            .bind(now())
            .bind(tenant)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn delete_manual_tool(&self, tenant: &str, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM manual_tools WHERE tenant_id = $1 AND name = $2")
            .bind(tenant)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

fn encode<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode<T: DeserializeOwned>(text: String) -> Result<T, StoreError> {
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl FromStr for Backend {
    type Err = String;
    fn from_str(url: &str) -> Result<Self, String> {
        validate_database_url(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_urls() {
        assert_eq!(
            validate_database_url("sqlite://./data/x.db"),
            Ok(Backend::Sqlite)
        );
        assert_eq!(
            validate_database_url("postgresql://u:p@h/db"),
            Ok(Backend::Postgres)
        );
        assert!(validate_database_url("mysql://h/db").is_err());
        assert!(validate_database_url("sqlite://").is_err());
    }
}
