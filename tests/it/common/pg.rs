//! Databases of a test's own on the test PostgreSQL server
//! (`METAMCP_TEST_POSTGRES_URL`): created fresh, dropped when the value
//! goes (also when the test fails).

/// A fresh database, dropped (`WITH (FORCE)`) on drop.
pub struct TempDatabase {
    /// The server URL the database was created through.
    pub admin_url: String,
    pub name: String,
    /// The database's own URL.
    pub url: String,
}

impl TempDatabase {
    /// Creates `metamcp_<purpose>_<uuid>` through `admin_url`.
    pub async fn create(admin_url: &str, purpose: &str) -> Self {
        let name = format!("metamcp_{purpose}_{}", uuid::Uuid::new_v4().simple());
        admin_query(admin_url, format!("CREATE DATABASE {name}")).await;
        let mut url = url::Url::parse(admin_url).expect("METAMCP_TEST_POSTGRES_URL is a URL");
        url.set_path(&format!("/{name}"));
        Self {
            admin_url: admin_url.to_owned(),
            name,
            url: url.to_string(),
        }
    }

    /// A pool on the database.
    pub async fn pool(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::AnyPool::connect(&self.url)
            .await
            .expect("connect to the test database")
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime may be the one dropping
        // us: a thread and a runtime of its own.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(admin_query(
                &admin_url,
                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            ));
        })
        .join();
    }
}

/// Runs one statement on the server (not in a transaction: CREATE and DROP
/// DATABASE refuse one).
pub async fn admin_query(admin_url: &str, sql: String) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .expect("connect to the test PostgreSQL");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .expect("admin query");
    let _ = conn.close().await;
}
