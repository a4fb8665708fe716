//! Rows of identity and access: tenants, users, roles, grants, API keys,
//! refresh tokens and revoked access tokens. The rules live in `auth`; this
//! is storage only.

use sqlx::{Row, any::AnyRow};

use super::{Store, StoreError, is_unique_violation, now};

#[derive(Debug, Clone, PartialEq)]
pub struct UserRow {
    pub id: String,
    pub tenant_id: String,
    pub username: String,
    pub password_hash: String,
    pub roles: Vec<String>,
    pub clearance: Option<i64>,
    pub disabled: bool,
    /// Access tokens issued before this (Unix seconds) are refused.
    pub sessions_valid_after: i64,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RoleRow {
    pub tenant_id: String,
    pub name: String,
    pub permissions: Vec<String>,
    pub clearance: Option<i64>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GrantRow {
    pub id: String,
    pub tenant_id: String,
    /// `role` or `user`.
    pub subject_kind: String,
    /// A role name or a user id.
    pub subject: String,
    /// `allow` or `deny`.
    pub effect: String,
    /// `server` or `tool`.
    pub resource_kind: String,
    pub pattern: String,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyRow {
    pub id: String,
    pub tenant_id: String,
    pub user_id: String,
    pub name: String,
    pub secret_hash: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RefreshRow {
    pub id: String,
    pub tenant_id: String,
    pub user_id: String,
    pub family_id: String,
    pub secret_hash: String,
    pub expires_at: String,
    pub used_at: Option<String>,
    pub revoked_at: Option<String>,
}

fn list(text: String) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn json(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

fn user(row: &AnyRow) -> Result<UserRow, StoreError> {
    Ok(UserRow {
        id: row.try_get(0)?,
        tenant_id: row.try_get(1)?,
        username: row.try_get(2)?,
        password_hash: row.try_get(3)?,
        roles: list(row.try_get(4)?)?,
        clearance: row.try_get(5)?,
        disabled: row.try_get::<i64, _>(6)? != 0,
        sessions_valid_after: row.try_get(7)?,
        created_at: row.try_get(8)?,
        updated_at: row.try_get(9)?,
    })
}

const USER_COLUMNS: &str = "id, tenant_id, username, password_hash, roles, clearance, disabled, sessions_valid_after, created_at, updated_at";

fn api_key(row: &AnyRow) -> Result<ApiKeyRow, StoreError> {
    Ok(ApiKeyRow {
        id: row.try_get(0)?,
        tenant_id: row.try_get(1)?,
        user_id: row.try_get(2)?,
        name: row.try_get(3)?,
        secret_hash: row.try_get(4)?,
        scopes: list(row.try_get(5)?)?,
        expires_at: row.try_get(6)?,
        last_used_at: row.try_get(7)?,
        revoked_at: row.try_get(8)?,
        created_at: row.try_get(9)?,
    })
}

const KEY_COLUMNS: &str = "id, tenant_id, user_id, name, secret_hash, scopes, expires_at, last_used_at, revoked_at, created_at";

fn conflict(e: sqlx::Error) -> StoreError {
    if is_unique_violation(&e) {
        StoreError::Conflict
    } else {
        e.into()
    }
}

impl Store {
    // ---- tenants -------------------------------------------------------

    /// Creates the tenant unless it exists; true when it was created.
    pub async fn ensure_tenant(&self, id: &str, name: &str) -> Result<bool, StoreError> {
        match sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(name)
            .bind(now())
            .execute(&self.pool)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Every tenant: (id, name, disabled).
    pub async fn list_tenants(&self) -> Result<Vec<(String, String, bool)>, StoreError> {
        let rows = sqlx::query("SELECT id, name, disabled FROM tenants ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get::<i64, _>(2)? != 0)))
            .collect()
    }

    // ---- users ---------------------------------------------------------

    pub async fn count_users(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?)
    }

    pub async fn insert_user(&self, u: &UserRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO users (id, tenant_id, username, password_hash, roles, clearance, disabled, sessions_valid_after, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&u.id)
        .bind(&u.tenant_id)
        .bind(&u.username)
        .bind(&u.password_hash)
        .bind(json(&u.roles))
        .bind(u.clearance)
        .bind(i64::from(u.disabled))
        .bind(u.sessions_valid_after)
        .bind(&u.created_at)
        .bind(&u.updated_at)
        .execute(&self.pool)
        .await
        .map_err(conflict)?;
        Ok(())
    }

    pub async fn user_by_name(
        &self,
        tenant: &str,
        username: &str,
    ) -> Result<Option<UserRow>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND username = $2"
        )))
        .bind(tenant)
        .bind(username)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(user)
        .transpose()
    }

    pub async fn user_by_id(&self, id: &str) -> Result<Option<UserRow>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(user)
        .transpose()
    }

    pub async fn list_users(&self, tenant: &str) -> Result<Vec<UserRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 ORDER BY username"
        )))
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(user).collect()
    }

    /// Saves password, roles, clearance and the disabled flag of a user.
    pub async fn update_user(&self, u: &UserRow) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE users SET password_hash = $1, roles = $2, clearance = $3, disabled = $4, updated_at = $5, sessions_valid_after = $6 \
             WHERE id = $7 AND tenant_id = $8",
        )
        .bind(&u.password_hash)
        .bind(json(&u.roles))
        .bind(u.clearance)
        .bind(i64::from(u.disabled))
        .bind(now())
        .bind(u.sessions_valid_after)
        .bind(&u.id)
        .bind(&u.tenant_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    // ---- roles ---------------------------------------------------------

    pub async fn list_roles(&self, tenant: &str) -> Result<Vec<RoleRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT tenant_id, name, permissions, clearance, description FROM roles WHERE tenant_id = $1 ORDER BY name",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RoleRow {
                    tenant_id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    permissions: list(r.try_get(2)?)?,
                    clearance: r.try_get(3)?,
                    description: r.try_get(4)?,
                })
            })
            .collect()
    }

    pub async fn insert_role(&self, role: &RoleRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO roles (tenant_id, name, permissions, clearance, description, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&role.tenant_id)
        .bind(&role.name)
        .bind(json(&role.permissions))
        .bind(role.clearance)
        .bind(&role.description)
        .bind(now())
        .execute(&self.pool)
        .await
        .map_err(conflict)?;
        Ok(())
    }

    pub async fn delete_role(&self, tenant: &str, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM roles WHERE tenant_id = $1 AND name = $2")
            .bind(tenant)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    // ---- grants --------------------------------------------------------

    pub async fn list_grants(&self, tenant: &str) -> Result<Vec<GrantRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, tenant_id, subject_kind, subject, effect, resource_kind, pattern, created_at \
             FROM grants WHERE tenant_id = $1 ORDER BY created_at, id",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(GrantRow {
                    id: r.try_get(0)?,
                    tenant_id: r.try_get(1)?,
                    subject_kind: r.try_get(2)?,
                    subject: r.try_get(3)?,
                    effect: r.try_get(4)?,
                    resource_kind: r.try_get(5)?,
                    pattern: r.try_get(6)?,
                    created_at: r.try_get(7)?,
                })
            })
            .collect()
    }

    pub async fn insert_grant(&self, g: &GrantRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO grants (id, tenant_id, subject_kind, subject, effect, resource_kind, pattern, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&g.id)
        .bind(&g.tenant_id)
        .bind(&g.subject_kind)
        .bind(&g.subject)
        .bind(&g.effect)
        .bind(&g.resource_kind)
        .bind(&g.pattern)
        .bind(&g.created_at)
        .execute(&self.pool)
        .await
        .map_err(conflict)?;
        Ok(())
    }

    pub async fn delete_grant(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM grants WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    // ---- API keys ------------------------------------------------------

    pub async fn insert_api_key(&self, k: &ApiKeyRow) -> Result<(), StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        )))
        .bind(&k.id)
        .bind(&k.tenant_id)
        .bind(&k.user_id)
        .bind(&k.name)
        .bind(&k.secret_hash)
        .bind(json(&k.scopes))
        .bind(&k.expires_at)
        .bind(&k.last_used_at)
        .bind(&k.revoked_at)
        .bind(&k.created_at)
        .execute(&self.pool)
        .await
        .map_err(conflict)?;
        Ok(())
    }

    pub async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRow>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(api_key)
        .transpose()
    }

    /// The keys of a tenant, or of one user of it.
    pub async fn list_api_keys(
        &self,
        tenant: &str,
        user: Option<&str>,
    ) -> Result<Vec<ApiKeyRow>, StoreError> {
        let rows = match user {
            Some(user) => sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 AND user_id = $2 ORDER BY created_at, id"
            )))
            .bind(tenant)
            .bind(user)
            .fetch_all(&self.pool)
            .await?,
            None => sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, id"
            )))
            .bind(tenant)
            .fetch_all(&self.pool)
            .await?,
        };
        rows.iter().map(api_key).collect()
    }

    /// Marks a key revoked; false when there is no such live key.
    pub async fn revoke_api_key(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE tenant_id = $2 AND id = $3 AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(tenant)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn touch_api_key(&self, id: &str, at: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
            .bind(at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- refresh tokens ------------------------------------------------

    pub async fn insert_refresh(&self, r: &RefreshRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO refresh_tokens (id, tenant_id, user_id, family_id, secret_hash, expires_at, used_at, revoked_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&r.id)
        .bind(&r.tenant_id)
        .bind(&r.user_id)
        .bind(&r.family_id)
        .bind(&r.secret_hash)
        .bind(&r.expires_at)
        .bind(&r.used_at)
        .bind(&r.revoked_at)
        .bind(now())
        .execute(&self.pool)
        .await
        .map_err(conflict)?;
        Ok(())
    }

    pub async fn refresh(&self, id: &str) -> Result<Option<RefreshRow>, StoreError> {
        let row = sqlx::query(
            "SELECT id, tenant_id, user_id, family_id, secret_hash, expires_at, used_at, revoked_at FROM refresh_tokens WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(RefreshRow {
                id: r.try_get(0)?,
                tenant_id: r.try_get(1)?,
                user_id: r.try_get(2)?,
                family_id: r.try_get(3)?,
                secret_hash: r.try_get(4)?,
                expires_at: r.try_get(5)?,
                used_at: r.try_get(6)?,
                revoked_at: r.try_get(7)?,
            })
        })
        .transpose()
    }

    /// Marks a refresh token used, once: false when it already was (a
    /// reuse), so two concurrent refreshes cannot both succeed.
    pub async fn use_refresh(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $1 WHERE id = $2 AND used_at IS NULL AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn revoke_refresh_family(&self, family: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(family)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Revokes every refresh token of a user (disabled, password changed).
    pub async fn revoke_user_refresh(&self, user: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(user)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ---- revoked access tokens -----------------------------------------

    pub async fn revoke_jti(&self, jti: &str, expires_at: &str) -> Result<(), StoreError> {
        match sqlx::query("INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2)")
            .bind(jti)
            .bind(expires_at)
            .execute(&self.pool)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether an access token id was revoked (the check of a replica that
    /// cannot rely on hearing every revocation, see `auth`).
    pub async fn is_jti_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query("SELECT 1 FROM revoked_tokens WHERE jti = $1")
            .bind(jti)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    /// The revoked token ids that have not expired yet (and forgets the rest).
    pub async fn live_revoked_jtis(&self) -> Result<Vec<(String, String)>, StoreError> {
        let now = now();
        sqlx::query("DELETE FROM revoked_tokens WHERE expires_at < $1")
            .bind(&now)
            .execute(&self.pool)
            .await?;
        let rows = sqlx::query("SELECT jti, expires_at FROM revoked_tokens")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }
}
