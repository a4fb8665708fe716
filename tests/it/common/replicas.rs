//! Several gateway processes that make one deployment: they share a fresh
//! PostgreSQL database (created per test, dropped at the end) and Redis
//! under a key prefix of their own, so tests running side by side (and
//! other deployments on the same servers) never meet.
//!
//! `Deployment::fresh` makes the shared state; `Replicas::start` starts N
//! gateways on it at the same moment (each on its own port and data
//! directory). Both skip (saying `SKIPPED`) when `METAMCP_TEST_POSTGRES_URL`
//! or `METAMCP_TEST_REDIS_URL` is unset, except under `CI=true`.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Gateway, Options, pg::TempDatabase};

/// The token signing key every replica shares (required with PostgreSQL).
const SECRET_KEY: &str = "replicas-test-secret-key-0123456789-abcdefghij";
/// The key for stored credentials, shared likewise.
const ENCRYPTION_KEY: &str = "replicas-test-encryption-key-0123456789-abcdef";

/// The state the replicas of one deployment share.
pub struct Deployment {
    /// The fresh database's URL.
    pub database_url: String,
    pub redis_url: String,
    /// This deployment's Redis key and channel prefix.
    pub prefix: String,
    /// The database, dropped with the deployment.
    _database: TempDatabase,
}

/// The value of a test-server variable, or `None` after saying why the
/// test is skipped (outside CI).
fn server_url(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{var} must be set in CI");
            }
            eprintln!("SKIPPED {test}: {var} is not set");
            None
        }
    }
}

impl Deployment {
    /// A new, empty database and a unique Redis prefix.
    pub async fn fresh(test: &str) -> Option<Self> {
        let admin_url = server_url("METAMCP_TEST_POSTGRES_URL", test)?;
        let redis_url = server_url("METAMCP_TEST_REDIS_URL", test)?;
        let database = TempDatabase::create(&admin_url, "it").await;
        Some(Self {
            database_url: database.url.clone(),
            redis_url,
            prefix: format!("metamcp-it-{}", uuid::Uuid::new_v4().simple()),
            _database: database,
        })
    }

    /// The settings that make a gateway one of this deployment's replicas.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("META_MCP_DATABASE_URL", self.database_url.as_str()),
            ("META_MCP_REDIS_URL", self.redis_url.as_str()),
            ("META_MCP_REDIS_PREFIX", self.prefix.as_str()),
            ("META_MCP_SECRET_KEY", SECRET_KEY),
            ("META_MCP_ENCRYPTION_KEY", ENCRYPTION_KEY),
            // No model to load: start-up stays quick with several processes.
            ("META_MCP_EMBEDDING_PROVIDER", "off"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// `opts` with this deployment's settings added (those already in
    /// `opts` win, e.g. another Redis URL).
    pub fn options(&self, opts: Options) -> Options {
        let mut env = self.env();
        env.retain(|(k, _)| !opts.env.iter().any(|(o, _)| o == k));
        let mut opts = opts;
        env.append(&mut opts.env);
        opts.env = env;
        opts
    }

    /// Rows of a query on the shared database, as JSON-ish strings.
    pub async fn query_strings(&self, sql: &str) -> Vec<Vec<String>> {
        use sqlx::{Connection, Row};
        let mut conn = sqlx::PgConnection::connect(&self.database_url)
            .await
            .expect("connect to the deployment's database");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_all(&mut conn)
            .await
            .expect("query");
        let _ = conn.close().await;
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| {
                        r.try_get::<String, _>(i)
                            .or_else(|_| r.try_get::<i64, _>(i).map(|v| v.to_string()))
                            .or_else(|_| r.try_get::<bool, _>(i).map(|v| v.to_string()))
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .collect()
    }
}

/// N gateways of one deployment. Fields drop in order: the gateways stop
/// before the database is dropped.
pub struct Replicas {
    pub nodes: Vec<Gateway>,
    pub deployment: Deployment,
}

impl Replicas {
    /// Starts `n` replicas at the same moment on a fresh deployment, each
    /// with `opts` (plus the deployment's settings); `None` when skipped.
    pub async fn start(test: &str, n: usize, opts: Options) -> Option<Self> {
        let deployment = Deployment::fresh(test).await?;
        let nodes = Self::start_on(&deployment, n, opts).await;
        Some(Self { nodes, deployment })
    }

    /// Starts `n` replicas of `deployment` at the same moment.
    pub async fn start_on(deployment: &Deployment, n: usize, opts: Options) -> Vec<Gateway> {
        let opts = deployment.options(opts);
        futures::future::join_all((0..n).map(|_| Gateway::start(opts.clone()))).await
    }

    pub fn node(&self, i: usize) -> &Gateway {
        &self.nodes[i]
    }

    /// Waits until every replica (still running) says it hears the others:
    /// subscribed to the changes channel and reloaded since.
    pub async fn wait_in_sync(&self) {
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            wait_cluster_status(node, "in_sync").await;
        }
    }
}

/// Waits until `node` reports this cluster status in its detailed health.
pub async fn wait_cluster_status(node: &Gateway, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, body) = node.get("/api/v1/health/detailed").await;
        if code == 200 && body["cluster"]["status"] == status {
            return body;
        }
        if Instant::now() > deadline {
            panic!(
                "replica {} not {status} within 60s: {body}\nlog:\n{}",
                node.base,
                node.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
