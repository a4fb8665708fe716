//! The configuration as whole tables, for `metamcp export` / `import`: read
//! in one consistent snapshot, written in one transaction. Storage only;
//! what the rows mean (and the secrets inside them) is `transfer`'s.
//!
//! Every table of the schema is classified here, once: [`CONFIGURATION`]
//! moves between deployments, [`NOT_CONFIGURATION`] does not, and a unit
//! test fails when a migration adds a table or a column that is in neither.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{Row, any::AnyRow};

use super::{Backend, Store, StoreError};

/// How a column is read and written: the schema has only these two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Text,
    Integer,
}

/// A table that is part of the configuration.
#[derive(Debug)]
pub struct Table {
    pub name: &'static str,
    pub columns: &'static [(&'static str, Column)],
}

use Column::{Integer as I, Text as T};

/// What moves between deployments: everything a person configured, with
/// the identity needed to keep using it (password hashes, API-key hashes).
pub const CONFIGURATION: &[Table] = &[
    Table {
        name: "tenants",
        columns: &[("id", T), ("name", T), ("disabled", I), ("created_at", T)],
    },
    // Stored server definitions; their credentials are sealed under the
    // deployment's encryption key, which `transfer` opens and re-seals.
    Table {
        name: "servers",
        columns: &[
            ("tenant_id", T),
            ("name", T),
            ("spec", T),
            ("created_at", T),
            ("updated_at", T),
        ],
    },
    Table {
        name: "tool_overlays",
        columns: &[
            ("tenant_id", T),
            ("server", T),
            ("tool", T),
            ("overlay", T),
            ("updated_at", T),
        ],
    },
    Table {
        name: "manual_tools",
        columns: &[
            ("tenant_id", T),
            ("name", T),
            ("record", T),
            ("created_at", T),
            ("updated_at", T),
        ],
    },
    Table {
        name: "profiles",
        columns: &[
            ("tenant_id", T),
            ("name", T),
            ("profile", T),
            ("created_at", T),
            ("updated_at", T),
        ],
    },
    // Approved tool definitions: without them every tool would be trusted
    // anew on first use in the target.
    Table {
        name: "tool_pins",
        columns: &[
            ("tenant_id", T),
            ("server", T),
            ("tool", T),
            ("hash", T),
            ("definition", T),
            ("updated_at", T),
        ],
    },
    // Detected changes of pinned tools, with the operator's decisions and
    // the ones still pending (quarantined tools stay quarantined).
    Table {
        name: "tool_changes",
        columns: &[
            ("id", T),
            ("tenant_id", T),
            ("server", T),
            ("tool", T),
            ("old_hash", T),
            ("new_hash", T),
            ("change", T),
            ("status", T),
            ("detected_at", T),
            ("decided_at", T),
        ],
    },
    Table {
        name: "users",
        columns: &[
            ("id", T),
            ("tenant_id", T),
            ("username", T),
            ("password_hash", T),
            ("roles", T),
            ("clearance", I),
            ("disabled", I),
            ("sessions_valid_after", I),
            ("created_at", T),
            ("updated_at", T),
        ],
    },
    Table {
        name: "roles",
        columns: &[
            ("tenant_id", T),
            ("name", T),
            ("permissions", T),
            ("clearance", I),
            ("description", T),
            ("created_at", T),
        ],
    },
    Table {
        name: "grants",
        columns: &[
            ("id", T),
            ("tenant_id", T),
            ("subject_kind", T),
            ("subject", T),
            ("effect", T),
            ("resource_kind", T),
            ("pattern", T),
            ("created_at", T),
        ],
    },
    // Keyed hashes under META_MCP_SECRET_KEY: they verify in the target
    // only with the same key, which `transfer` checks.
    Table {
        name: "api_keys",
        columns: &[
            ("id", T),
            ("tenant_id", T),
            ("user_id", T),
            ("name", T),
            ("secret_hash", T),
            ("scopes", T),
            ("expires_at", T),
            ("last_used_at", T),
            ("revoked_at", T),
            ("created_at", T),
        ],
    },
    // Not configuration, but security state: with the same signing key, an
    // access token logged out of the source would otherwise work again in
    // the target until it expires.
    Table {
        name: "revoked_tokens",
        columns: &[("jti", T), ("expires_at", T)],
    },
];

/// What stays behind, and why.
pub const NOT_CONFIGURATION: &[(&str, &str)] = &[
    (
        "refresh_tokens",
        "login sessions: users log in again on the target",
    ),
    (
        "tool_embeddings",
        "a cache of sentence vectors, computed again from the tools",
    ),
    ("_sqlx_migrations", "each database runs its own migrations"),
    (
        "webhooks",
        "their URLs and signing secrets are sealed under the source's key and carry no \
         re-sealing yet: registered again on the target",
    ),
    (
        "webhook_deliveries",
        "a delivery log: history, not configuration",
    ),
];

/// Tables named so hold audit records: history, never configuration.
pub const AUDIT_PREFIX: &str = "audit";

/// Runtime tables cleared along with the configuration by a replacing
/// import: sessions of users that are gone and vectors of tools that may be.
const CLEARED_ON_REPLACE: &[&str] = &["refresh_tokens", "tool_embeddings"];

/// The rows of one table: values are JSON strings, integers or null, in
/// the order of `columns`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableRows {
    pub table: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

impl TableRows {
    /// The position of `column`, if the table has it.
    pub fn column(&self, column: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == column)
    }
}

/// How an import treats a target that already has configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMode {
    /// Refuse unless every configuration table is empty.
    IntoEmpty,
    /// Delete the target's configuration (and its sessions and vectors)
    /// first, in the same transaction.
    Replace,
}

/// What a load did.
#[derive(Debug, PartialEq, Eq)]
pub enum Loaded {
    Done,
    /// Nothing was written: these tables had rows (name, count).
    TargetNotEmpty(Vec<(String, i64)>),
}

/// The configuration table called `name`.
pub fn configuration_table(name: &str) -> Option<&'static Table> {
    CONFIGURATION.iter().find(|t| t.name == name)
}

fn read_value(row: &AnyRow, i: usize, kind: Column) -> Result<Value, StoreError> {
    Ok(match kind {
        Column::Text => row
            .try_get::<Option<String>, _>(i)?
            .map_or(Value::Null, Value::String),
        Column::Integer => row
            .try_get::<Option<i64>, _>(i)?
            .map_or(Value::Null, Value::from),
    })
}

/// Checks that `rows` fit a known table before anything is written.
fn check(rows: &TableRows) -> Result<&'static Table, StoreError> {
    let table = configuration_table(&rows.table).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "unknown table {:?} (written by a newer metamcp?)",
            rows.table
        ))
    })?;
    for column in &rows.columns {
        if !table.columns.iter().any(|(c, _)| c == column) {
            return Err(StoreError::Corrupt(format!(
                "unknown column {:?} of table {} (written by a newer metamcp?)",
                column, table.name
            )));
        }
    }
    for (n, row) in rows.rows.iter().enumerate() {
        if row.len() != rows.columns.len() {
            return Err(StoreError::Corrupt(format!(
                "row {n} of table {} has {} values for {} columns",
                table.name,
                row.len(),
                rows.columns.len()
            )));
        }
        for (value, column) in row.iter().zip(&rows.columns) {
            let kind = table
                .columns
                .iter()
                .find(|(c, _)| c == column)
                .map(|(_, k)| *k);
            let fits = match (kind, value) {
                (_, Value::Null) => true,
                (Some(Column::Text), Value::String(_)) => true,
                (Some(Column::Integer), Value::Number(n)) => n.is_i64(),
                _ => false,
            };
            if !fits {
                return Err(StoreError::Corrupt(format!(
                    "row {n} of table {}: {column} has a value of the wrong type",
                    table.name
                )));
            }
        }
    }
    Ok(table)
}

impl Store {
    /// Every configuration table, read in one transaction (a consistent
    /// snapshot on PostgreSQL, even while a gateway writes).
    pub async fn read_configuration(&self) -> Result<Vec<TableRows>, StoreError> {
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await?;
        }
        let mut tables = Vec::with_capacity(CONFIGURATION.len());
        for table in CONFIGURATION {
            let names: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
            // Ordered by every column so an export of the same data is the
            // same file content (before encryption).
            let list = names.join(", ");
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {list} FROM {} ORDER BY {list}",
                table.name
            )))
            .fetch_all(&mut *tx)
            .await?;
            let rows = rows
                .iter()
                .map(|row| {
                    table
                        .columns
                        .iter()
                        .enumerate()
                        .map(|(i, (_, kind))| read_value(row, i, *kind))
                        .collect::<Result<Vec<_>, _>>()
                })
                .collect::<Result<Vec<_>, _>>()?;
            tables.push(TableRows {
                table: table.name.to_owned(),
                columns: names.iter().map(|c| (*c).to_owned()).collect(),
                rows,
            });
        }
        tx.commit().await?;
        Ok(tables)
    }

    /// Writes `tables` in one transaction: all rows or none. With
    /// [`LoadMode::IntoEmpty`] a target that has any configuration is left
    /// untouched and reported.
    pub async fn load_configuration(
        &self,
        tables: &[TableRows],
        mode: LoadMode,
    ) -> Result<Loaded, StoreError> {
        let kinds = tables
            .iter()
            .map(|rows| {
                let table = check(rows)?;
                Ok(rows
                    .columns
                    .iter()
                    .map(|c| {
                        table
                            .columns
                            .iter()
                            .find(|(name, _)| name == c)
                            .map_or(Column::Text, |(_, k)| *k)
                    })
                    .collect::<Vec<_>>())
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let mut tx = self.pool.begin().await?;
        match mode {
            LoadMode::IntoEmpty => {
                let mut non_empty = Vec::new();
                for table in CONFIGURATION {
                    let count: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT COUNT(*) FROM {}",
                        table.name
                    )))
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get(0)?;
                    if count > 0 {
                        non_empty.push((table.name.to_owned(), count));
                    }
                }
                if !non_empty.is_empty() {
                    tx.rollback().await?;
                    return Ok(Loaded::TargetNotEmpty(non_empty));
                }
            }
            LoadMode::Replace => {
                let names = CONFIGURATION.iter().map(|t| t.name);
                for name in names.chain(CLEARED_ON_REPLACE.iter().copied()) {
                    sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {name}")))
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        for (rows, kinds) in tables.iter().zip(&kinds) {
            if rows.rows.is_empty() {
                continue;
            }
            let params: Vec<String> = (1..=rows.columns.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "INSERT INTO {} ({}) VALUES ({})",
                rows.table,
                rows.columns.join(", "),
                params.join(", ")
            );
            for row in &rows.rows {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
                for (value, kind) in row.iter().zip(kinds) {
                    // A null is bound with its column's type: PostgreSQL
                    // refuses a text null in an integer column.
                    query = match kind {
                        Column::Text => query.bind(value.as_str().map(str::to_owned)),
                        Column::Integer => query.bind(value.as_i64()),
                    };
                }
                query.execute(&mut *tx).await.map_err(|e| {
                    if super::is_unique_violation(&e) {
                        StoreError::Corrupt(format!("duplicate row in table {}", rows.table))
                    } else {
                        e.into()
                    }
                })?;
            }
        }
        tx.commit().await?;
        Ok(Loaded::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sqlite() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::connect(&url).await.unwrap();
        (dir, store)
    }

    /// A migration that adds a table or a column must say whether it is
    /// configuration: this fails until it is classified above.
    #[tokio::test]
    async fn every_table_and_column_is_classified() {
        let (_dir, store) = sqlite().await;
        let tables = sqlx::query(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )
        .fetch_all(&store.pool)
        .await
        .unwrap();
        let seen: Vec<String> = tables.iter().map(|r| r.try_get(0).unwrap()).collect();
        for name in seen.iter().cloned() {
            if name.starts_with(AUDIT_PREFIX) || NOT_CONFIGURATION.iter().any(|(n, _)| *n == name) {
                continue;
            }
            let table = configuration_table(&name).unwrap_or_else(|| {
                panic!("table {name} is neither CONFIGURATION nor NOT_CONFIGURATION")
            });
            let columns = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT name, type FROM pragma_table_info('{name}')"
            )))
            .fetch_all(&store.pool)
            .await
            .unwrap();
            let actual: Vec<(String, String)> = columns
                .iter()
                .map(|r| (r.try_get(0).unwrap(), r.try_get(1).unwrap()))
                .collect();
            let expected: Vec<(String, String)> = table
                .columns
                .iter()
                .map(|(c, k)| {
                    let ty = match k {
                        Column::Text => "TEXT",
                        Column::Integer => "INTEGER",
                    };
                    ((*c).to_owned(), ty.to_owned())
                })
                .collect();
            assert_eq!(actual, expected, "columns of {name}");
        }
        for table in CONFIGURATION {
            assert!(
                seen.iter().any(|n| n == table.name),
                "{} is gone",
                table.name
            );
        }
    }

    #[tokio::test]
    async fn loads_all_or_nothing_and_refuses_a_non_empty_target() {
        let (_a, source) = sqlite().await;
        source.ensure_tenant("default", "Default").await.unwrap();
        source.ensure_tenant("acme", "Acme").await.unwrap();
        source
            .insert_server("acme", "s", &serde_json::json!({"name": "s"}))
            .await
            .unwrap();
        source.put_pin("acme", "s", "t", "h", "{}").await.unwrap();
        let dump = source.read_configuration().await.unwrap();
        let count = |d: &[TableRows], t: &str| {
            d.iter()
                .find(|r| r.table == t)
                .map(|r| r.rows.len())
                .unwrap_or(0)
        };
        assert_eq!(count(&dump, "tenants"), 2);
        assert_eq!(count(&dump, "servers"), 1);
        assert_eq!(count(&dump, "tool_pins"), 1);

        let (_b, target) = sqlite().await;
        assert_eq!(
            target
                .load_configuration(&dump, LoadMode::IntoEmpty)
                .await
                .unwrap(),
            Loaded::Done
        );
        assert_eq!(target.read_configuration().await.unwrap(), dump);
        // Again: refused, nothing written.
        assert_eq!(
            target
                .load_configuration(&dump, LoadMode::IntoEmpty)
                .await
                .unwrap(),
            Loaded::TargetNotEmpty(vec![
                ("tenants".into(), 2),
                ("servers".into(), 1),
                ("tool_pins".into(), 1)
            ])
        );
        // A duplicate row half-way fails the whole load: the earlier rows
        // are rolled back with it.
        let (_c, third) = sqlite().await;
        third.ensure_tenant("other", "Other").await.unwrap();
        let mut doubled = dump.clone();
        let servers = doubled.iter_mut().find(|t| t.table == "servers").unwrap();
        servers.rows.push(servers.rows[0].clone());
        assert!(matches!(
            third.load_configuration(&doubled, LoadMode::Replace).await,
            Err(StoreError::Corrupt(_))
        ));
        assert_eq!(third.list_tenants().await.unwrap().len(), 1);
        // Replace: the old configuration goes.
        third
            .load_configuration(&dump, LoadMode::Replace)
            .await
            .unwrap();
        assert_eq!(third.read_configuration().await.unwrap(), dump);
        // Rows that fit no table are refused before anything is written.
        let mut bad = dump.clone();
        bad[0].rows[0][2] = Value::String("not a number".into());
        assert!(matches!(
            third.load_configuration(&bad, LoadMode::Replace).await,
            Err(StoreError::Corrupt(_))
        ));
        bad[0].table = "nope".into();
        assert!(matches!(
            third.load_configuration(&bad, LoadMode::Replace).await,
            Err(StoreError::Corrupt(_))
        ));
    }
}
