//! The audit trail's tables: appending a batch under the chain's head lock,
//! listing with filters, and reading chains back in order for verification.
//! What the MACs are is the audit module's business; here they are text.

use sqlx::{Row, any::AnyRow};

use super::{Store, StoreError};

/// One audit record as stored (see `migrations/0005_audit.sql`).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct AuditRow {
    pub id: String,
    pub chain_id: String,
    pub seq: i64,
    pub ts: String,
    pub kind: String,
    pub tenant_id: String,
    pub actor_id: Option<String>,
    pub actor_name: Option<String>,
    pub auth_method: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub server: Option<String>,
    pub tool: Option<String>,
    pub outcome: String,
    pub status: Option<i64>,
    pub duration_us: Option<i64>,
    pub args_hash: Option<String>,
    pub args: Option<String>,
    pub detail: Option<String>,
    pub request_id: Option<String>,
    pub mac: String,
}

/// The head of one chain: its last seq and MAC, and the MAC over both.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChainHead {
    pub chain_id: String,
    pub seq: i64,
    pub mac: String,
    pub head_mac: String,
}

/// Which records a listing wants; empty strings match everything.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub tenant: String,
    pub actor: String,
    pub kind: String,
    pub tool: String,
    pub server: String,
    pub outcome: String,
    /// Inclusive lower bound of `ts` (same text format).
    pub since: String,
    /// Exclusive upper bound of `ts`.
    pub until: String,
}

/// Rows per INSERT statement of a batch.
const ROWS_PER_INSERT: usize = 64;

const COLUMNS: &str = "id, chain_id, seq, ts, kind, tenant_id, actor_id, actor_name, auth_method, action, target, \
     server, tool, outcome, status, duration_us, args_hash, args, detail, request_id, mac";

fn row_of(r: &AnyRow) -> Result<AuditRow, StoreError> {
    Ok(AuditRow {
        id: r.try_get(0)?,
        chain_id: r.try_get(1)?,
        seq: r.try_get(2)?,
        ts: r.try_get(3)?,
        kind: r.try_get(4)?,
        tenant_id: r.try_get(5)?,
        actor_id: r.try_get(6)?,
        actor_name: r.try_get(7)?,
        auth_method: r.try_get(8)?,
        action: r.try_get(9)?,
        target: r.try_get(10)?,
        server: r.try_get(11)?,
        tool: r.try_get(12)?,
        outcome: r.try_get(13)?,
        status: r.try_get(14)?,
        duration_us: r.try_get(15)?,
        args_hash: r.try_get(16)?,
        args: r.try_get(17)?,
        detail: r.try_get(18)?,
        request_id: r.try_get(19)?,
        mac: r.try_get(20)?,
    })
}

impl Store {
    /// Appends records to chain `chain_id` in one transaction. The chain's
    /// head row is locked first (an UPDATE takes PostgreSQL's row lock and
    /// SQLite's write lock), so writers of the same chain, in this process
    /// or another replica, take turns; `seal` gets the head as it is under
    /// the lock and returns the rows to insert (seq and MAC filled in) and
    /// the new head. `genesis` is the head of a chain with no records yet.
    pub async fn audit_append<F>(
        &self,
        genesis: &ChainHead,
        seal: F,
    ) -> Result<ChainHead, StoreError>
    where
        F: FnOnce(&ChainHead) -> (Vec<AuditRow>, ChainHead),
    {
        let now = super::now();
        sqlx::query(
            "INSERT INTO audit_chains (chain_id, seq, mac, head_mac, updated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (chain_id) DO NOTHING",
        )
        .bind(&genesis.chain_id)
        .bind(genesis.seq)
        .bind(&genesis.mac)
        .bind(&genesis.head_mac)
        .bind(&now)
        .execute(&self.pool)
        .await?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE audit_chains SET updated_at = $1 WHERE chain_id = $2")
            .bind(&now)
            .bind(&genesis.chain_id)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query("SELECT seq, mac, head_mac FROM audit_chains WHERE chain_id = $1")
            .bind(&genesis.chain_id)
            .fetch_one(&mut *tx)
            .await?;
        let head = ChainHead {
            chain_id: genesis.chain_id.clone(),
            seq: row.try_get(0)?,
            mac: row.try_get(1)?,
            head_mac: row.try_get(2)?,
        };
        let (rows, new_head) = seal(&head);
        // Many rows per statement: a batch costs a few round trips, not
        // one per record (21 parameters a row stays far below both
        // databases' limits on parameters).
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let placeholders: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let p: Vec<String> = (1..=21).map(|c| format!("${}", i * 21 + c)).collect();
                    format!("({})", p.join(", "))
                })
                .collect();
            let sql = format!(
                "INSERT INTO audit_log ({COLUMNS}) VALUES {}",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for r in chunk {
                query = query
                    .bind(&r.id)
                    .bind(&r.chain_id)
                    .bind(r.seq)
                    .bind(&r.ts)
                    .bind(&r.kind)
                    .bind(&r.tenant_id)
                    .bind(&r.actor_id)
                    .bind(&r.actor_name)
                    .bind(&r.auth_method)
                    .bind(&r.action)
                    .bind(&r.target)
                    .bind(&r.server)
                    .bind(&r.tool)
                    .bind(&r.outcome)
                    .bind(r.status)
                    .bind(r.duration_us)
                    .bind(&r.args_hash)
                    .bind(&r.args)
                    .bind(&r.detail)
                    .bind(&r.request_id)
                    .bind(&r.mac);
            }
            query.execute(&mut *tx).await?;
        }
        sqlx::query(
            "UPDATE audit_chains SET seq = $1, mac = $2, head_mac = $3, updated_at = $4 WHERE chain_id = $5",
        )
        .bind(new_head.seq)
        .bind(&new_head.mac)
        .bind(&new_head.head_mac)
        .bind(&now)
        .bind(&new_head.chain_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(new_head)
    }

    /// Records matching `filter`, newest first (by id, a UUIDv7), at most
    /// `limit`, starting below id `before` when given.
    pub async fn audit_list(
        &self,
        filter: &AuditFilter,
        before: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM audit_log WHERE ($1 = '' OR tenant_id = $1) \
             AND ($2 = '' OR actor_id = $2 OR actor_name = $2) AND ($3 = '' OR kind = $3) \
             AND ($4 = '' OR tool = $4) AND ($5 = '' OR server = $5) AND ($6 = '' OR outcome = $6) \
             AND ($7 = '' OR ts >= $7) AND ($8 = '' OR ts < $8) AND ($9 = '' OR id < $9) \
             ORDER BY id DESC LIMIT $10"
        )))
        .bind(&filter.tenant)
        .bind(&filter.actor)
        .bind(&filter.kind)
        .bind(&filter.tool)
        .bind(&filter.server)
        .bind(&filter.outcome)
        .bind(&filter.since)
        .bind(&filter.until)
        .bind(before.unwrap_or_default())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_of).collect()
    }

    /// Records matching `filter`, oldest first, after id `after` (for
    /// exports, page by page).
    pub async fn audit_export_page(
        &self,
        filter: &AuditFilter,
        after: &str,
        limit: i64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM audit_log WHERE ($1 = '' OR tenant_id = $1) \
             AND ($2 = '' OR actor_id = $2 OR actor_name = $2) AND ($3 = '' OR kind = $3) \
             AND ($4 = '' OR tool = $4) AND ($5 = '' OR server = $5) AND ($6 = '' OR outcome = $6) \
             AND ($7 = '' OR ts >= $7) AND ($8 = '' OR ts < $8) AND id > $9 \
             ORDER BY id LIMIT $10"
        )))
        .bind(&filter.tenant)
        .bind(&filter.actor)
        .bind(&filter.kind)
        .bind(&filter.tool)
        .bind(&filter.server)
        .bind(&filter.outcome)
        .bind(&filter.since)
        .bind(&filter.until)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_of).collect()
    }

    /// The records of one chain in chain order from `after_seq` (exclusive),
    /// at most `limit`; a duplicated seq comes back twice.
    pub async fn audit_chain_page(
        &self,
        chain_id: &str,
        after_seq: i64,
        after_id: &str,
        limit: i64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM audit_log WHERE chain_id = $1 AND (seq > $2 OR (seq = $2 AND id > $3)) \
             ORDER BY seq, id LIMIT $4"
        )))
        .bind(chain_id)
        .bind(after_seq)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_of).collect()
    }

    /// Every chain named by a head or by a record.
    pub async fn audit_chain_ids(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT chain_id FROM audit_chains UNION SELECT DISTINCT chain_id FROM audit_log",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut ids: Vec<String> = rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        ids.sort();
        Ok(ids)
    }

    /// The stored head of a chain.
    pub async fn audit_head(&self, chain_id: &str) -> Result<Option<ChainHead>, StoreError> {
        let row = sqlx::query("SELECT seq, mac, head_mac FROM audit_chains WHERE chain_id = $1")
            .bind(chain_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(ChainHead {
                chain_id: chain_id.to_owned(),
                seq: r.try_get(0)?,
                mac: r.try_get(1)?,
                head_mac: r.try_get(2)?,
            })
        })
        .transpose()
    }
}
