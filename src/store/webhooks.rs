//! Rows of webhooks and their delivery log. The rules (what is encrypted,
//! what a status means) live in `webhooks`; this is storage only.

use sqlx::{Row, any::AnyRow};

use super::{Store, StoreError, now};

/// A webhook as stored: `url` and `secret` are encrypted values.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookRow {
    pub id: String,
    pub tenant_id: String,
    pub url: String,
    pub secret: String,
    pub events: Vec<String>,
    pub description: Option<String>,
    pub enabled: bool,
    pub created_at: String,
    pub updated_at: String,
}

/// One delivery of one event to one webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRow {
    pub id: String,
    pub webhook_id: String,
    pub tenant_id: String,
    pub event_id: String,
    pub event_type: String,
    pub status: String,
    pub payload: String,
    /// JSON list of attempts.
    pub attempts: String,
    pub created_at: String,
    pub created_unix: i64,
    pub updated_at: String,
}

const HOOK_COLUMNS: &str =
    "id, tenant_id, url, secret, events, description, enabled, created_at, updated_at";

fn hook(row: &AnyRow) -> Result<WebhookRow, StoreError> {
    Ok(WebhookRow {
        id: row.try_get(0)?,
        tenant_id: row.try_get(1)?,
        url: row.try_get(2)?,
        secret: row.try_get(3)?,
        events: serde_json::from_str(&row.try_get::<String, _>(4)?)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        description: row.try_get(5)?,
        enabled: row.try_get::<i64, _>(6)? != 0,
        created_at: row.try_get(7)?,
        updated_at: row.try_get(8)?,
    })
}

const DELIVERY_COLUMNS: &str = "id, webhook_id, tenant_id, event_id, event_type, status, payload, attempts, created_at, created_unix, updated_at";

fn delivery(row: &AnyRow) -> Result<DeliveryRow, StoreError> {
    Ok(DeliveryRow {
        id: row.try_get(0)?,
        webhook_id: row.try_get(1)?,
        tenant_id: row.try_get(2)?,
        event_id: row.try_get(3)?,
        event_type: row.try_get(4)?,
        status: row.try_get(5)?,
        payload: row.try_get(6)?,
        attempts: row.try_get(7)?,
        created_at: row.try_get(8)?,
        created_unix: row.try_get(9)?,
        updated_at: row.try_get(10)?,
    })
}

fn events_json(events: &[String]) -> String {
    serde_json::to_string(events).unwrap_or_else(|_| "[]".into())
}

impl Store {
    pub async fn insert_webhook(&self, row: &WebhookRow) -> Result<(), StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO webhooks ({HOOK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        )))
        .bind(&row.id)
        .bind(&row.tenant_id)
        .bind(&row.url)
        .bind(&row.secret)
        .bind(events_json(&row.events))
        .bind(&row.description)
        .bind(i64::from(row.enabled))
        .bind(&row.created_at)
        .bind(&row.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Replaces a webhook's changeable fields; false when the tenant has no
    /// webhook of this id.
    pub async fn update_webhook(&self, row: &WebhookRow) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE webhooks SET url = $1, secret = $2, events = $3, description = $4, \
             enabled = $5, updated_at = $6 WHERE tenant_id = $7 AND id = $8",
        )
        .bind(&row.url)
        .bind(&row.secret)
        .bind(events_json(&row.events))
        .bind(&row.description)
        .bind(i64::from(row.enabled))
        .bind(&row.updated_at)
        .bind(&row.tenant_id)
        .bind(&row.id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn webhook(&self, tenant: &str, id: &str) -> Result<Option<WebhookRow>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {HOOK_COLUMNS} FROM webhooks WHERE tenant_id = $1 AND id = $2"
        )))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(hook)
        .transpose()
    }

    pub async fn list_webhooks(&self, tenant: &str) -> Result<Vec<WebhookRow>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {HOOK_COLUMNS} FROM webhooks WHERE tenant_id = $1 ORDER BY id"
        )))
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(hook)
        .collect()
    }

    /// Every tenant's webhooks, for the delivery lanes.
    pub async fn all_webhooks(&self) -> Result<Vec<WebhookRow>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {HOOK_COLUMNS} FROM webhooks ORDER BY tenant_id, id"
        )))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(hook)
        .collect()
    }

    /// Deletes a webhook and its delivery log; false when there was none.
    pub async fn delete_webhook(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM webhooks WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM webhook_deliveries WHERE tenant_id = $1 AND webhook_id = $2")
            .bind(tenant)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(true)
    }

    pub async fn insert_delivery(&self, row: &DeliveryRow) -> Result<(), StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO webhook_deliveries ({DELIVERY_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        )))
        .bind(&row.id)
        .bind(&row.webhook_id)
        .bind(&row.tenant_id)
        .bind(&row.event_id)
        .bind(&row.event_type)
        .bind(&row.status)
        .bind(&row.payload)
        .bind(&row.attempts)
        .bind(&row.created_at)
        .bind(row.created_unix)
        .bind(&row.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a delivery's status and attempts so far.
    pub async fn update_delivery(
        &self,
        id: &str,
        status: &str,
        attempts: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhook_deliveries SET status = $1, attempts = $2, updated_at = $3 WHERE id = $4",
        )
        .bind(status)
        .bind(attempts)
        .bind(now())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A webhook's deliveries, newest first; `before` (a delivery id) pages
    /// back.
    pub async fn list_deliveries(
        &self,
        tenant: &str,
        webhook: &str,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let rows = match before {
            Some(before) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
                     WHERE tenant_id = $1 AND webhook_id = $2 AND id < $3 ORDER BY id DESC LIMIT $4"
                )))
                .bind(tenant)
                .bind(webhook)
                .bind(before)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
                     WHERE tenant_id = $1 AND webhook_id = $2 ORDER BY id DESC LIMIT $3"
                )))
                .bind(tenant)
                .bind(webhook)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(delivery).collect()
    }

    /// Deletes delivery records created before `older_than` (Unix seconds)
    /// and, per webhook, all but the newest `keep`; returns how many went.
    pub async fn prune_deliveries(&self, older_than: i64, keep: u32) -> Result<u64, StoreError> {
        let mut gone = sqlx::query("DELETE FROM webhook_deliveries WHERE created_unix < $1")
            .bind(older_than)
            .execute(&self.pool)
            .await?
            .rows_affected();
        let hooks = sqlx::query("SELECT id FROM webhooks")
            .fetch_all(&self.pool)
            .await?;
        for row in hooks {
            let id: String = row.try_get(0)?;
            // The id of the newest record beyond the ones kept, if any:
            // everything up to it goes.
            let cut = sqlx::query(
                "SELECT id FROM webhook_deliveries WHERE webhook_id = $1 \
                 ORDER BY id DESC LIMIT 1 OFFSET $2",
            )
            .bind(&id)
            .bind(i64::from(keep))
            .fetch_optional(&self.pool)
            .await?;
            if let Some(cut) = cut {
                let cut: String = cut.try_get(0)?;
                gone += sqlx::query(
                    "DELETE FROM webhook_deliveries WHERE webhook_id = $1 AND id <= $2",
                )
                .bind(&id)
                .bind(&cut)
                .execute(&self.pool)
                .await?
                .rows_affected();
            }
        }
        // Records of webhooks deleted on another replica mid-delivery.
        gone += sqlx::query(
            "DELETE FROM webhook_deliveries WHERE webhook_id NOT IN (SELECT id FROM webhooks)",
        )
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(gone)
    }
}
