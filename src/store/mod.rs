//! Persistence behind one type, on SQLite (the embedded default) or
//! PostgreSQL, chosen by the database URL. Both run the same portable SQL
//! through sqlx's `Any` driver, and the store test suite runs against both.
//!
//! Documents (server specs, overlays, manual tools) are stored as JSON text;
//! the store is generic over their types so it depends on no other module.

use std::{borrow::Cow, path::Path, str::FromStr, time::Duration};

use serde::{Serialize, de::DeserializeOwned};
mod audit;
mod identity;
pub mod snapshot;
mod webhooks;

pub use audit::{AuditFilter, AuditRow, ChainHead};
pub use identity::{ApiKeyRow, GrantRow, RefreshRow, RoleRow, UserRow};
pub use webhooks::{DeliveryRow, WebhookRow};

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
    let migration = |version, description, sql: &'static str| {
        Migration::new(
            version,
            Cow::Borrowed(description),
            MigrationType::Simple,
            sqlx::SqlSafeStr::into_sql_str(sql),
            false,
        )
    };
    let mut migrator = Migrator::with_migrations(vec![
        migration(1, "init", include_str!("../../migrations/0001_init.sql")),
        migration(
            2,
            "profiles and pins",
            include_str!("../../migrations/0002_profiles_pins.sql"),
        ),
        migration(
            3,
            "identity",
            include_str!("../../migrations/0003_identity.sql"),
        ),
        // Version 3 is the identity migration of "Identity and access",
        // built alongside on main; this one follows it.
        migration(
            4,
            "tool embeddings",
            include_str!("../../migrations/0004_tool_embeddings.sql"),
        ),
        migration(5, "audit", include_str!("../../migrations/0005_audit.sql")),
        migration(
            6,
            "webhooks",
            include_str!("../../migrations/0006_webhooks.sql"),
        ),
    ]);
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
        Self::connect_with(url, None).await
    }

    /// [`Store::connect`] with a pool of at most `pool_size` connections
    /// (`None`: 4 on SQLite, 10 on PostgreSQL). Several replicas may run
    /// this at the same moment: migrations take an advisory lock, so each
    /// applies once and the others wait for it.
    pub async fn connect_with(url: &str, pool_size: Option<u32>) -> Result<Self, StoreError> {
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
        let max = pool_size.unwrap_or(max);
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

    /// The highest migration applied, and how many are applied.
    pub async fn schema_version(&self) -> Result<(i64, i64), StoreError> {
        let row = sqlx::query(
            "SELECT COALESCE(MAX(version), 0), COUNT(*) FROM _sqlx_migrations WHERE success",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
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

    /// Every tenant's stored servers as (tenant, spec), for starting them
    /// all at boot.
    pub async fn list_all_servers<T: DeserializeOwned>(
        &self,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let rows =
            sqlx::query("SELECT tenant_id, spec FROM servers ORDER BY tenant_id, created_at, name")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, decode(r.try_get::<String, _>(1)?)?)))
            .collect()
    }

    /// The tenants that have anything a catalog is made of (servers, tools
    /// registered by hand, overlays, profiles), so every catalog can be
    /// built at boot.
    pub async fn catalog_tenants(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT tenant_id FROM servers UNION SELECT tenant_id FROM manual_tools \
             UNION SELECT tenant_id FROM tool_overlays UNION SELECT tenant_id FROM profiles \
             UNION SELECT id FROM tenants",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut tenants: Vec<String> = rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        tenants.sort();
        Ok(tenants)
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
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM servers WHERE tenant_id = $1 AND name = $2")
            .bind(tenant)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        // Its tools' vectors describe nothing any more.
        sqlx::query("DELETE FROM tool_embeddings WHERE tenant_id = $1 AND server = $2")
            .bind(tenant)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
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

/// One recorded change of a pinned tool definition.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRow {
    pub id: String,
    pub server: String,
    pub tool: String,
    pub old_hash: String,
    pub new_hash: String,
    pub change: String,
    pub status: String,
    pub detected_at: String,
    pub decided_at: Option<String>,
}

impl Store {
    // ---- profiles ------------------------------------------------------

    pub async fn list_profiles<T: DeserializeOwned>(
        &self,
        tenant: &str,
    ) -> Result<Vec<T>, StoreError> {
        let rows = sqlx::query("SELECT profile FROM profiles WHERE tenant_id = $1 ORDER BY name")
            .bind(tenant)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| decode(r.try_get::<String, _>(0)?))
            .collect()
    }

    pub async fn insert_profile<T: Serialize>(
        &self,
        tenant: &str,
        name: &str,
        profile: &T,
    ) -> Result<(), StoreError> {
        let ts = now();
        sqlx::query("INSERT INTO profiles (tenant_id, name, profile, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(tenant)
            .bind(name)
            .bind(encode(profile)?)
            .bind(&ts)
            .bind(&ts)
            .execute(&self.pool)
            .await
            .map_err(|e| if is_unique_violation(&e) { StoreError::Conflict } else { e.into() })?;
        Ok(())
    }

    pub async fn update_profile<T: Serialize>(
        &self,
        tenant: &str,
        name: &str,
        profile: &T,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE profiles SET profile = $1, updated_at = $2 WHERE tenant_id = $3 AND name = $4",
        )
        .bind(encode(profile)?)
        .bind(now())
        .bind(tenant)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn delete_profile(&self, tenant: &str, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM profiles WHERE tenant_id = $1 AND name = $2")
            .bind(tenant)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    // ---- tool embeddings -------------------------------------------------

    /// Every stored vector of one model, as (server, tool, text hash,
    /// encoded vector).
    pub async fn list_embeddings(
        &self,
        tenant: &str,
        model: &str,
    ) -> Result<Vec<(String, String, String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT server, tool, text_hash, vector FROM tool_embeddings WHERE tenant_id = $1 AND model = $2",
        )
        .bind(tenant)
        .bind(model)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
            .collect()
    }

    /// Every tenant's stored vectors of one model, as (tenant, server, tool,
    /// text hash, encoded vector).
    pub async fn list_all_embeddings(
        &self,
        model: &str,
    ) -> Result<Vec<(String, String, String, String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT tenant_id, server, tool, text_hash, vector FROM tool_embeddings WHERE model = $1",
        )
        .bind(model)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0)?,
                    r.try_get(1)?,
                    r.try_get(2)?,
                    r.try_get(3)?,
                    r.try_get(4)?,
                ))
            })
            .collect()
    }

    /// Deletes the vectors of tools that are gone, as (server, tool), of
    /// every model.
    pub async fn delete_embeddings(
        &self,
        tenant: &str,
        tools: &[(String, String)],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for (server, tool) in tools {
            sqlx::query(
                "DELETE FROM tool_embeddings WHERE tenant_id = $1 AND server = $2 AND tool = $3",
            )
            .bind(tenant)
            .bind(server)
            .bind(tool)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Stores vectors as (server, tool, text hash, encoded vector), replacing
    /// older ones of the same tool and model, in one transaction.
    pub async fn put_embeddings(
        &self,
        tenant: &str,
        model: &str,
        rows: &[(String, String, String, String)],
    ) -> Result<(), StoreError> {
        let ts = now();
        let mut tx = self.pool.begin().await?;
        for (server, tool, hash, vector) in rows {
            sqlx::query(
                "INSERT INTO tool_embeddings (tenant_id, model, server, tool, text_hash, vector, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (tenant_id, model, server, tool) DO UPDATE SET text_hash = excluded.text_hash, vector = excluded.vector, updated_at = excluded.updated_at",
            )
            .bind(tenant)
            .bind(model)
            .bind(server)
            .bind(tool)
            .bind(hash)
            .bind(vector)
            .bind(&ts)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    // ---- tool pins and changes -----------------------------------------

    /// Every pin of a tenant as (server, tool, hash).
    pub async fn list_pins(
        &self,
        tenant: &str,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let rows = sqlx::query("SELECT server, tool, hash FROM tool_pins WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    /// The pinned definition of a tool, as stored JSON text.
    pub async fn pinned_definition(
        &self,
        tenant: &str,
        server: &str,
        tool: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT definition FROM tool_pins WHERE tenant_id = $1 AND server = $2 AND tool = $3",
        )
        .bind(tenant)
        .bind(server)
        .bind(tool)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Pins a definition (inserting or replacing the pin).
    pub async fn put_pin(
        &self,
        tenant: &str,
        server: &str,
        tool: &str,
        hash: &str,
        definition: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tool_pins (tenant_id, server, tool, hash, definition, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (tenant_id, server, tool) DO UPDATE SET hash = excluded.hash, definition = excluded.definition, updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(server)
        .bind(tool)
        .bind(hash)
        .bind(definition)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn insert_change(&self, tenant: &str, row: &ChangeRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tool_changes (id, tenant_id, server, tool, old_hash, new_hash, change, status, detected_at, decided_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&row.id)
        .bind(tenant)
        .bind(&row.server)
        .bind(&row.tool)
        .bind(&row.old_hash)
        .bind(&row.new_hash)
        .bind(&row.change)
        .bind(&row.status)
        .bind(&row.detected_at)
        .bind(&row.decided_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Changes, newest first, optionally of one tool and/or one status.
    pub async fn list_changes(
        &self,
        tenant: &str,
        tool: Option<(&str, &str)>,
        status: Option<&str>,
    ) -> Result<Vec<ChangeRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, server, tool, old_hash, new_hash, change, status, detected_at, decided_at FROM tool_changes \
             WHERE tenant_id = $1 AND ($2 = '' OR server = $2) AND ($3 = '' OR tool = $3) AND ($4 = '' OR status = $4) \
             ORDER BY detected_at DESC, id",
        )
        .bind(tenant)
        .bind(tool.map(|t| t.0).unwrap_or_default())
        .bind(tool.map(|t| t.1).unwrap_or_default())
        .bind(status.unwrap_or_default())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ChangeRow {
                    id: r.try_get(0)?,
                    server: r.try_get(1)?,
                    tool: r.try_get(2)?,
                    old_hash: r.try_get(3)?,
                    new_hash: r.try_get(4)?,
                    change: r.try_get(5)?,
                    status: r.try_get(6)?,
                    detected_at: r.try_get(7)?,
                    decided_at: r.try_get(8)?,
                })
            })
            .collect()
    }

    /// Sets the status of the pending changes of a tool; returns how many.
    pub async fn decide_changes(
        &self,
        tenant: &str,
        server: &str,
        tool: &str,
        status: &str,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE tool_changes SET status = $1, decided_at = $2 WHERE tenant_id = $3 AND server = $4 AND tool = $5 AND status = 'pending'",
        )
        .bind(status)
        .bind(now())
        .bind(tenant)
        .bind(server)
        .bind(tool)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
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
