//! Who is calling, and what they may do: passwords, access and refresh
//! tokens, API keys, roles, grants and tenants. The HTTP layer
//! ([`http::authenticate`]) turns a request's credentials into a
//! [`Principal`]; the pipeline and the front doors ask the principal.

pub mod bootstrap;
pub mod external;
pub mod http;
pub mod password;
pub mod rbac;
mod throttle;
pub mod tokens;

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use parking_lot::RwLock;

use crate::{
    config::AuthSettings,
    store::{ApiKeyRow, GrantRow, RefreshRow, Store, StoreError, UserRow},
};
use rbac::{Effect, Grant, Permission, Permissions, ResourceKind, RoleDef};
use tokens::{API_KEY_PREFIX, Hasher, REFRESH_PREFIX, TokenError, TokenIssuer};

/// The tenant every row belongs to unless created in another.
pub const DEFAULT_TENANT: &str = "default";

/// How a principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// An access token metamcp issued, in the Authorization header.
    Jwt,
    /// The same token in the session cookie (state changes need CSRF).
    Cookie,
    ApiKey,
    /// A token of an outside OAuth/OIDC issuer.
    External,
    /// No credentials at all (only on requests that need none).
    None,
}

/// An authenticated caller: the result of the identity stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    /// Stable user id (an API key acts as its owner).
    pub user_id: Arc<str>,
    pub username: Arc<str>,
    pub tenant_id: Arc<str>,
    pub roles: Arc<[String]>,
    /// The scopes the credential was limited to (empty: not limited).
    pub scopes: Arc<[String]>,
    /// Effective permissions: the roles' permissions, narrowed by scopes.
    pub permissions: Permissions,
    /// Highest tool `security_level` this principal may reach.
    pub clearance: i64,
    /// The grants that apply to this principal (its user's and its roles').
    pub grants: Arc<[Grant]>,
    pub method: AuthMethod,
    /// The access token's `jti` or the API key's id.
    pub credential_id: Option<Arc<str>>,
    /// When the credential expires (Unix seconds), if it does.
    pub expires_at: Option<i64>,
    /// Changes whenever roles or grants change, so cached answers computed
    /// for an older policy are not reused.
    pub policy_epoch: u64,
}

impl Principal {
    /// A principal that may do nothing (the fallback where a request
    /// somehow arrived without one).
    pub fn nobody() -> Self {
        Self {
            user_id: Arc::from(""),
            username: Arc::from(""),
            tenant_id: Arc::from(DEFAULT_TENANT),
            roles: Arc::from(Vec::<String>::new()),
            scopes: Arc::from(Vec::<String>::new()),
            permissions: Permissions::NONE,
            clearance: 0,
            grants: Arc::from(Vec::<Grant>::new()),
            method: AuthMethod::None,
            credential_id: None,
            expires_at: None,
            policy_epoch: 0,
        }
    }

    pub fn has(&self, permission: Permission) -> bool {
        self.permissions.has(permission)
    }

    /// Fails with the permission's name when the principal lacks it.
    pub fn require(&self, permission: Permission) -> Result<(), Permission> {
        if self.has(permission) {
            Ok(())
        } else {
            Err(permission)
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Principal {
    type Rejection = crate::api::error::Problem;

    async fn from_request_parts(
        parts: &mut ::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        // The authentication layer puts one on every request that needs it;
        // a handler reached without one must not run as anybody.
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| http::unauthorized_problem("authentication required"))
    }
}

/// Why credentials were not accepted. Every variant answers 401; the
/// message says what a legitimate client needs to know and no more.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AuthError {
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token has been revoked")]
    Revoked,
    #[error("invalid credentials")]
    Invalid,
    #[error("the identity service is unavailable")]
    Unavailable,
}

impl From<TokenError> for AuthError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Expired => Self::Expired,
            TokenError::NotYetValid => Self::NotYetValid,
            TokenError::TooLarge | TokenError::Invalid => Self::Invalid,
        }
    }
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "identity store error");
        Self::Unavailable
    }
}

/// Why a login or refresh failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Wrong username or password, unknown or disabled user: one answer.
    #[error("invalid username or password")]
    BadCredentials,
    #[error("too many failed attempts; retry in {}s", .0.as_secs().max(1))]
    Throttled(Duration),
    #[error("the refresh token is invalid, expired or revoked")]
    BadRefresh,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

/// Tokens handed out by a login or a refresh.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IssuedTokens {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub refresh_token: String,
    /// Sent back in `X-CSRF-Token` on state-changing requests that are
    /// authenticated by the session cookie.
    pub csrf_token: String,
    #[serde(skip)]
    pub jti: String,
}

/// Roles and grants of every tenant, kept in memory: the policy is read on
/// every request and changes rarely.
#[derive(Debug, Default)]
struct PolicyData {
    roles: HashMap<(String, String), RoleDef>,
    grants: HashMap<String, Vec<GrantRow>>,
    /// The tenants that exist and are not disabled.
    active_tenants: HashSet<String>,
}

/// The identity service.
pub struct Identity {
    store: Store,
    pub metrics: Arc<crate::metrics::Metrics>,
    settings: AuthSettings,
    pub tokens: TokenIssuer,
    key_hasher: Hasher,
    refresh_hasher: Hasher,
    csrf_hasher: Hasher,
    /// Revoked access-token ids and when they expire anyway.
    revoked: RwLock<HashMap<String, i64>>,
    users: moka::sync::Cache<String, Arc<UserRow>>,
    keys: moka::sync::Cache<String, Arc<ApiKeyRow>>,
    /// Keys whose last-used time was written recently (written at most once
    /// a minute per key, not on every request).
    key_touched: moka::sync::Cache<String, ()>,
    policy: ArcSwap<PolicyData>,
    epoch: AtomicU64,
    throttle: throttle::LoginThrottle,
    /// The other replicas: where revocations are announced, and whether
    /// this process hears theirs (see [`Identity::authenticate_access_token`]).
    cluster: Arc<crate::cluster::Bus>,
    /// Legacy MCP sessions and the principal (tenant/user) that opened each.
    sessions: moka::sync::Cache<String, Arc<str>>,
}

/// How long an identity read from the store is trusted before re-reading
/// (changes made through this process apply at once).
const CACHE_TTL: Duration = Duration::from_secs(10);

impl Identity {
    pub async fn new(
        store: Store,
        settings: AuthSettings,
        secret: &[u8],
        metrics: Arc<crate::metrics::Metrics>,
    ) -> anyhow::Result<Self> {
        let tokens = TokenIssuer::new(&settings, secret)?;
        let identity = Self {
            key_hasher: Hasher::new(secret, "api-key"),
            refresh_hasher: Hasher::new(secret, "refresh-token"),
            csrf_hasher: Hasher::new(secret, "csrf"),
            tokens,
            settings,
            revoked: Default::default(),
            users: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(CACHE_TTL)
                .build(),
            keys: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(CACHE_TTL)
                .build(),
            key_touched: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
            policy: Default::default(),
            epoch: AtomicU64::new(1),
            throttle: Default::default(),
            cluster: Arc::new(crate::cluster::Bus::standalone(
                store.backend(),
                metrics.clone(),
            )),
            sessions: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(24 * 3600))
                .build(),
            store,
            metrics,
        };
        identity.reload_policy().await?;
        if let Some(role) = &identity.settings.anonymous_loopback_role {
            if identity.role(DEFAULT_TENANT, role).is_none() {
                anyhow::bail!("META_MCP_ANONYMOUS_LOOPBACK_ROLE: unknown role {role:?}");
            }
            tracing::warn!(
                role = %role,
                "META_MCP_ANONYMOUS_LOOPBACK_ROLE is set: requests without credentials from loopback act as an anonymous {role}; for test rigs only"
            );
        }
        identity.reload_revocations().await?;
        Ok(identity)
    }

    /// Joins the other replicas: revocations made here are announced to
    /// them, theirs are heard through `cluster`, and login failures are
    /// counted in Redis.
    pub fn with_cluster(mut self, cluster: Arc<crate::cluster::Bus>) -> Self {
        self.throttle = throttle::LoginThrottle::shared(cluster.clone());
        self.cluster = cluster;
        self
    }

    /// Replaces the revoked-token set with the database's.
    pub async fn reload_revocations(&self) -> Result<(), StoreError> {
        let live: HashMap<String, i64> = self
            .store
            .live_revoked_jtis()
            .await?
            .into_iter()
            .map(|(jti, expires)| (jti, parse_time(&expires).unwrap_or(i64::MAX)))
            .collect();
        let mut revoked = self.revoked.write();
        // Keep what arrived meanwhile; the database has everything older.
        let now = tokens::now_secs();
        revoked.retain(|_, exp| *exp > now);
        revoked.extend(live);
        Ok(())
    }

    /// Everything another replica may have changed while this one was not
    /// listening: revocations, cached users and keys, roles and grants.
    pub async fn resync(&self) -> Result<(), StoreError> {
        self.reload_revocations().await?;
        self.users.invalidate_all();
        self.keys.invalidate_all();
        self.reload_policy().await
    }

    /// Another replica revoked an access token.
    pub fn note_revoked(&self, jti: &str, expires_at: i64) {
        let now = tokens::now_secs();
        let mut revoked = self.revoked.write();
        revoked.retain(|_, exp| *exp > now);
        revoked.insert(jti.to_owned(), expires_at);
    }

    /// Another replica revoked an API key: read it again on next use.
    pub fn forget_api_key(&self, id: &str) {
        self.keys.invalidate(id);
    }

    /// A user was changed here (disabled, new password, roles): forget the
    /// cached row, here and on every replica, before answering.
    pub async fn user_changed(&self, id: &str) {
        self.forget_user(id);
        self.cluster
            .announce(crate::cluster::Change::User { id: id.to_owned() })
            .await;
    }

    /// Roles, grants or tenants were changed here: reload them, here and on
    /// every replica, before answering.
    pub async fn policy_changed(&self) -> Result<(), StoreError> {
        self.reload_policy().await?;
        self.cluster.announce(crate::cluster::Change::Policy).await;
        Ok(())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// Re-reads roles and grants (after a change) and moves the epoch on.
    pub async fn reload_policy(&self) -> Result<(), StoreError> {
        let mut data = PolicyData::default();
        for (tenant, _, disabled) in self.store.list_tenants().await? {
            if !disabled {
                data.active_tenants.insert(tenant.clone());
            }
            for role in self.store.list_roles(&tenant).await? {
                let permissions = Permissions::parse(&role.permissions)
                    .map_err(|e| StoreError::Corrupt(format!("role {}: {e}", role.name)))?;
                data.roles.insert(
                    (tenant.clone(), role.name.clone()),
                    RoleDef {
                        name: role.name,
                        permissions,
                        clearance: role.clearance.unwrap_or(0),
                        builtin: false,
                        description: role.description,
                    },
                );
            }
            data.grants
                .insert(tenant.clone(), self.store.list_grants(&tenant).await?);
        }
        self.policy.store(Arc::new(data));
        self.epoch.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// The role of this name in a tenant: built-in or custom.
    pub fn role(&self, tenant: &str, name: &str) -> Option<RoleDef> {
        rbac::builtin_role(name).or_else(|| {
            self.policy
                .load()
                .roles
                .get(&(tenant.to_owned(), name.to_owned()))
                .cloned()
        })
    }

    /// Every role a tenant can use.
    pub fn roles(&self, tenant: &str) -> Vec<RoleDef> {
        let mut roles: Vec<RoleDef> = rbac::BUILTIN_ROLES
            .iter()
            .filter_map(|n| rbac::builtin_role(n))
            .collect();
        let policy = self.policy.load();
        let mut custom: Vec<RoleDef> = policy
            .roles
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|(_, r)| r.clone())
            .collect();
        custom.sort_by(|a, b| a.name.cmp(&b.name));
        roles.extend(custom);
        roles
    }

    /// The permissions and clearance a set of roles gives in a tenant.
    pub fn role_rights(&self, tenant: &str, roles: &[String]) -> (Permissions, i64) {
        roles
            .iter()
            .filter_map(|r| self.role(tenant, r))
            .fold((Permissions::NONE, 0), |(p, c), r| {
                (p.union(r.permissions), c.max(r.clearance))
            })
    }

    /// The principal a user acts as, optionally narrowed to `scopes`.
    pub fn principal_for(
        &self,
        user: &UserRow,
        method: AuthMethod,
        credential_id: Option<&str>,
        scopes: &[String],
        expires_at: Option<i64>,
    ) -> Principal {
        let (mut permissions, role_clearance) = self.role_rights(&user.tenant_id, &user.roles);
        if !scopes.is_empty() {
            // Unknown scope names narrow to nothing rather than failing: a
            // key's scopes were checked when it was made.
            permissions = permissions.intersect(Permissions::parse(scopes).unwrap_or_default());
        }
        let policy = self.policy.load();
        let grants: Vec<Grant> = policy
            .grants
            .get(&user.tenant_id)
            .map(|all| {
                all.iter()
                    .filter(|g| match g.subject_kind.as_str() {
                        "user" => g.subject == user.id,
                        "role" => user.roles.contains(&g.subject),
                        _ => false,
                    })
                    .filter_map(|g| {
                        Some(Grant {
                            effect: match g.effect.as_str() {
                                "allow" => Effect::Allow,
                                "deny" => Effect::Deny,
                                _ => return None,
                            },
                            kind: match g.resource_kind.as_str() {
                                "server" => ResourceKind::Server,
                                "tool" => ResourceKind::Tool,
                                _ => return None,
                            },
                            pattern: g.pattern.clone(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Principal {
            user_id: Arc::from(user.id.as_str()),
            username: Arc::from(user.username.as_str()),
            tenant_id: Arc::from(user.tenant_id.as_str()),
            roles: Arc::from(user.roles.clone()),
            scopes: Arc::from(scopes.to_vec()),
            permissions,
            clearance: user.clearance.unwrap_or(role_clearance),
            grants: Arc::from(grants),
            method,
            credential_id: credential_id.map(Arc::from),
            expires_at,
            policy_epoch: self.epoch.load(Ordering::Acquire),
        }
    }

    async fn user(&self, id: &str) -> Result<Option<Arc<UserRow>>, StoreError> {
        // A replica that may have missed a change reads the row every time.
        if self.cluster.hears_everything()
            && let Some(user) = self.users.get(id)
        {
            return Ok(Some(user));
        }
        let Some(user) = self.store.user_by_id(id).await? else {
            return Ok(None);
        };
        let user = Arc::new(user);
        self.users.insert(id.to_owned(), user.clone());
        Ok(Some(user))
    }

    /// Forgets what is cached about a user (after a change to it).
    pub fn forget_user(&self, id: &str) {
        self.users.invalidate(id);
    }

    /// Checks a bearer credential: an API key or an access token.
    pub async fn authenticate_bearer(&self, token: &str) -> Result<Principal, AuthError> {
        if token.starts_with(API_KEY_PREFIX) {
            return self.authenticate_api_key(token).await;
        }
        self.authenticate_access_token(token, AuthMethod::Jwt).await
    }

    /// Checks one of metamcp's access tokens.
    pub async fn authenticate_access_token(
        &self,
        token: &str,
        method: AuthMethod,
    ) -> Result<Principal, AuthError> {
        let claims = self.tokens.verify(token)?;
        // Revocation, on every request, so it must stay cheap. The set in
        // memory holds every revocation this process has heard of. It is
        // complete when `hears_everything`: the process is alone on its
        // database (SQLite), or its Redis subscription is up and it
        // reloaded from the database after subscribing, so every logout
        // on another replica reached it, and that replica's logout waited
        // for our acknowledgement before answering. Then one read-locked
        // hash lookup decides. Otherwise (Redis down or reconnecting,
        // PostgreSQL without Redis) the database decides: an outage costs
        // a query per request, it never lets a revoked token through, and
        // a database error refuses the request.
        if self.revoked.read().contains_key(&claims.jti) {
            return Err(AuthError::Revoked);
        }
        if !self.cluster.hears_everything() && self.store.is_jti_revoked(&claims.jti).await? {
            self.revoked.write().insert(claims.jti.clone(), claims.exp);
            return Err(AuthError::Revoked);
        }
        let user = self.user(&claims.sub).await?.ok_or(AuthError::Invalid)?;
        if user.disabled || user.tenant_id != claims.tid {
            return Err(AuthError::Invalid);
        }
        if claims.iat < user.sessions_valid_after {
            // Issued before the password changed.
            return Err(AuthError::Revoked);
        }
        Ok(self.principal_for(&user, method, Some(&claims.jti), &[], Some(claims.exp)))
    }

    /// Checks an API key (`mmk_<id>.<secret>`).
    pub async fn authenticate_api_key(&self, key: &str) -> Result<Principal, AuthError> {
        let (id, secret) = tokens::split_opaque(API_KEY_PREFIX, key).ok_or(AuthError::Invalid)?;
        // Like users: the cached row only while nothing can have been missed.
        let cached = if self.cluster.hears_everything() {
            self.keys.get(id)
        } else {
            None
        };
        let row = match cached {
            Some(row) => row,
            None => {
                let row = Arc::new(self.store.api_key(id).await?.ok_or(AuthError::Invalid)?);
                self.keys.insert(id.to_owned(), row.clone());
                row
            }
        };
        if !self.key_hasher.matches(secret, &row.secret_hash) {
            return Err(AuthError::Invalid);
        }
        if row.revoked_at.is_some() {
            return Err(AuthError::Revoked);
        }
        let expires_at = row.expires_at.as_deref().and_then(parse_time);
        if expires_at.is_some_and(|at| at <= tokens::now_secs()) {
            return Err(AuthError::Expired);
        }
        let user = self.user(&row.user_id).await?.ok_or(AuthError::Invalid)?;
        if user.disabled || user.tenant_id != row.tenant_id {
            return Err(AuthError::Invalid);
        }
        if !self.key_touched.contains_key(id) {
            self.key_touched.insert(id.to_owned(), ());
            let store = self.store.clone();
            let id = id.to_owned();
            tokio::spawn(async move {
                if let Err(e) = store
                    .touch_api_key(&id, &format_time(tokens::now_secs()))
                    .await
                {
                    tracing::warn!(error = %e, "could not record an API key's last use");
                }
            });
        }
        Ok(self.principal_for(
            &user,
            AuthMethod::ApiKey,
            Some(&row.id),
            &row.scopes,
            expires_at,
        ))
    }

    /// Checks a username and password and issues tokens.
    pub async fn login(
        &self,
        tenant: &str,
        username: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<(IssuedTokens, Arc<UserRow>), LoginError> {
        let user_key = format!("{tenant}\u{1f}{username}");
        if let Some(wait) = self.throttle.check(&user_key, client).await {
            self.metrics.auth("login_throttled");
            return Err(LoginError::Throttled(wait));
        }
        let user = self.store.user_by_name(tenant, username).await?;
        let password = password.to_owned();
        let ok = match &user {
            Some(user) => {
                let hash = user.password_hash.clone();
                tokio::task::spawn_blocking(move || password::verify(&password, &hash))
                    .await
                    .unwrap_or(false)
                    && !user.disabled
            }
            None => {
                tokio::task::spawn_blocking(move || password::verify_nobody(&password))
                    .await
                    .ok();
                false
            }
        };
        let Some(user) = user.filter(|_| ok) else {
            self.throttle.failed(&user_key, client).await;
            self.metrics.auth("login_failed");
            return Err(LoginError::BadCredentials);
        };
        self.throttle.succeeded(&user_key).await;
        self.metrics.auth("login");
        let user = Arc::new(user);
        self.users.insert(user.id.clone(), user.clone());
        let family = tokens::random_id();
        Ok((self.issue(&user, &family).await?, user))
    }

    /// Whether logins of this user (or from this address) are refused for
    /// now after too many failures.
    pub async fn login_blocked(
        &self,
        tenant: &str,
        username: &str,
        client: Option<IpAddr>,
    ) -> bool {
        let user_key = format!("{tenant}\u{1f}{username}");
        self.throttle.check(&user_key, client).await.is_some()
    }

    async fn issue(&self, user: &UserRow, family: &str) -> Result<IssuedTokens, LoginError> {
        let jti = tokens::random_id();
        let (access_token, _) = self
            .tokens
            .issue(&user.id, &user.tenant_id, &jti)
            .map_err(|e| LoginError::Internal(e.to_string()))?;
        let (refresh_token, id, secret) = tokens::new_opaque(REFRESH_PREFIX);
        self.store
            .insert_refresh(&RefreshRow {
                id,
                tenant_id: user.tenant_id.clone(),
                user_id: user.id.clone(),
                family_id: family.to_owned(),
                secret_hash: self.refresh_hasher.hash(&secret),
                expires_at: format_time(
                    tokens::now_secs() + self.settings.refresh_token_ttl.as_secs() as i64,
                ),
                used_at: None,
                revoked_at: None,
            })
            .await?;
        Ok(IssuedTokens {
            access_token,
            token_type: "bearer",
            expires_in: self.tokens.ttl.as_secs(),
            refresh_token,
            csrf_token: self.csrf_token(&jti),
            jti,
        })
    }

    /// Trades a refresh token for new tokens. The old one is used up; a
    /// used one presented again means it leaked, so its whole family is
    /// revoked.
    pub async fn refresh(&self, token: &str) -> Result<IssuedTokens, LoginError> {
        let result = self.rotate(token).await;
        self.metrics.auth(match &result {
            Ok(_) => "refresh",
            Err(_) => "refresh_rejected",
        });
        result
    }

    async fn rotate(&self, token: &str) -> Result<IssuedTokens, LoginError> {
        let (id, secret) =
            tokens::split_opaque(REFRESH_PREFIX, token).ok_or(LoginError::BadRefresh)?;
        let row = self
            .store
            .refresh(id)
            .await?
            .ok_or(LoginError::BadRefresh)?;
        if !self.refresh_hasher.matches(secret, &row.secret_hash) || row.revoked_at.is_some() {
            return Err(LoginError::BadRefresh);
        }
        if row.used_at.is_some() || !self.store.use_refresh(id).await? {
            tracing::warn!(user = %row.user_id, family = %row.family_id, "refresh token reused: revoking its family");
            self.metrics.auth("refresh_reused");
            self.store.revoke_refresh_family(&row.family_id).await?;
            return Err(LoginError::BadRefresh);
        }
        if parse_time(&row.expires_at).is_none_or(|at| at <= tokens::now_secs()) {
            return Err(LoginError::BadRefresh);
        }
        let user = self
            .store
            .user_by_id(&row.user_id)
            .await?
            .filter(|u| !u.disabled && u.tenant_id == row.tenant_id)
            .ok_or(LoginError::BadRefresh)?;
        self.issue(&user, &row.family_id).await
    }

    /// Revokes the principal's access token and, if given, a refresh token
    /// of the same user (with its family).
    pub async fn logout(
        &self,
        principal: &Principal,
        refresh_token: Option<&str>,
    ) -> Result<(), StoreError> {
        if matches!(principal.method, AuthMethod::Jwt | AuthMethod::Cookie)
            && let Some(jti) = &principal.credential_id
        {
            let expires = principal.expires_at.unwrap_or(i64::MAX / 2);
            self.store.revoke_jti(jti, &format_time(expires)).await?;
            self.revoked.write().insert(jti.to_string(), expires);
            // Answers once every replica in sync has it (see `cluster`).
            self.cluster
                .announce(crate::cluster::Change::Revoked {
                    jti: jti.to_string(),
                    expires_at: expires,
                })
                .await;
        }
        if let Some((id, secret)) =
            refresh_token.and_then(|t| tokens::split_opaque(REFRESH_PREFIX, t))
            && let Some(row) = self.store.refresh(id).await?
            && self.refresh_hasher.matches(secret, &row.secret_hash)
            && *row.user_id == *principal.user_id
        {
            self.store.revoke_refresh_family(&row.family_id).await?;
        }
        self.metrics.auth("logout");
        // Forget revocations of tokens that have expired anyway.
        let now = tokens::now_secs();
        self.revoked.write().retain(|_, exp| *exp > now);
        Ok(())
    }

    /// The CSRF token that goes with an access token.
    pub fn csrf_token(&self, jti: &str) -> String {
        self.csrf_hasher.hash(jti)
    }

    pub fn csrf_matches(&self, jti: &str, presented: &str) -> bool {
        self.csrf_hasher.matches(jti, presented)
    }

    /// Creates an API key; returns the key (shown once) and its row.
    pub async fn create_api_key(
        &self,
        owner: &UserRow,
        name: &str,
        scopes: Vec<String>,
        expires_at: Option<i64>,
    ) -> Result<(String, ApiKeyRow), StoreError> {
        let (key, id, secret) = tokens::new_opaque(API_KEY_PREFIX);
        let row = ApiKeyRow {
            id,
            tenant_id: owner.tenant_id.clone(),
            user_id: owner.id.clone(),
            name: name.to_owned(),
            secret_hash: self.key_hasher.hash(&secret),
            scopes,
            expires_at: expires_at.map(format_time),
            last_used_at: None,
            revoked_at: None,
            created_at: format_time(tokens::now_secs()),
        };
        self.store.insert_api_key(&row).await?;
        self.metrics.auth("key_created");
        Ok((key, row))
    }

    pub async fn revoke_api_key(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let done = self.store.revoke_api_key(tenant, id).await?;
        self.keys.invalidate(id);
        if done {
            self.cluster
                .announce(crate::cluster::Change::ApiKey { id: id.to_owned() })
                .await;
        }
        if done {
            self.metrics.auth("key_revoked");
        }
        Ok(done)
    }

    /// Records which principal opened a legacy MCP session.
    pub fn bind_session(&self, session: &str, principal: &Principal) {
        self.sessions
            .insert(session.to_owned(), session_owner(principal));
    }

    /// Whether a legacy MCP session may be used by this principal (sessions
    /// this process does not know are left to the MCP layer to refuse).
    pub fn session_allowed(&self, session: &str, principal: &Principal) -> bool {
        self.sessions
            .get(session)
            .is_none_or(|owner| *owner == *session_owner(principal))
    }

    /// The principal of a credential-less loopback request, when the test
    /// setting `META_MCP_ANONYMOUS_LOOPBACK_ROLE` enables one.
    pub fn anonymous_loopback(&self) -> Option<Principal> {
        let role = self.settings.anonymous_loopback_role.as_ref()?;
        let user = UserRow {
            id: "anonymous".into(),
            tenant_id: DEFAULT_TENANT.into(),
            username: "anonymous".into(),
            password_hash: String::new(),
            roles: vec![role.clone()],
            clearance: None,
            disabled: false,
            sessions_valid_after: 0,
            created_at: String::new(),
            updated_at: String::new(),
        };
        Some(self.principal_for(&user, AuthMethod::None, None, &[], None))
    }

    /// Whether a tenant exists and is not disabled. An outside token names
    /// its tenant in a claim: a tenant nobody created must not come into
    /// being because an issuer said so.
    pub fn tenant_active(&self, tenant: &str) -> bool {
        self.policy.load().active_tenants.contains(tenant)
    }

    /// The principal of a verified outside token: a user known by issuer
    /// and subject, with the roles the issuer's mapping gave, narrowed by
    /// the token's scopes where they name metamcp permissions.
    pub fn external_principal(&self, identity: &external::ExternalIdentity) -> Principal {
        let user = UserRow {
            id: format!("{}#{}", identity.issuer, identity.subject),
            tenant_id: identity
                .tenant
                .clone()
                .unwrap_or_else(|| DEFAULT_TENANT.to_owned()),
            username: identity.username.clone(),
            password_hash: String::new(),
            roles: identity.roles.clone(),
            clearance: None,
            disabled: false,
            sessions_valid_after: 0,
            created_at: String::new(),
            updated_at: String::new(),
        };
        // Scopes such as `openid` mean nothing here; only permission names
        // narrow what the roles give.
        let scopes: Vec<String> = identity
            .scopes
            .iter()
            .filter(|s| Permissions::parse(&[s.as_str()]).is_ok())
            .cloned()
            .collect();
        self.principal_for(
            &user,
            AuthMethod::External,
            identity.token_id.as_deref(),
            &scopes,
            Some(identity.expires_at.unix_timestamp()),
        )
    }

    /// The setting of the metrics scrape token, if any.
    pub fn metrics_token(&self) -> Option<&str> {
        self.settings.metrics_token.as_ref().map(|s| s.0.as_str())
    }
}

fn session_owner(p: &Principal) -> Arc<str> {
    Arc::from(format!("{}\u{1f}{}", p.tenant_id, p.user_id))
}

pub fn format_time(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub fn parse_time(text: &str) -> Option<i64> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}
