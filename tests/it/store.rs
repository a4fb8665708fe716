//! The store test suite, run unchanged against SQLite and against the real
//! PostgreSQL (a fresh schema per run), so no SQLite-only SQL creeps in.

use metamcp::store::{Store, StoreError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Doc {
    name: String,
    value: i64,
}

fn doc(name: &str, value: i64) -> Doc {
    Doc {
        name: name.into(),
        value,
    }
}

async fn suite(store: &Store) {
    store.ping().await.expect("ping");

    // servers: insert, conflict, list in creation order, update, delete
    store.insert_server("t1", "b", &doc("b", 1)).await.unwrap();
    store.insert_server("t1", "a", &doc("a", 2)).await.unwrap();
    assert!(matches!(
        store.insert_server("t1", "a", &doc("a", 3)).await,
        Err(StoreError::Conflict)
    ));
    let listed: Vec<Doc> = store.list_servers("t1").await.unwrap();
    assert_eq!(listed.iter().map(|d| d.value).collect::<Vec<_>>(), [1, 2]);
    assert!(store.update_server("t1", "a", &doc("a", 9)).await.unwrap());
    assert!(
        !store
            .update_server("t1", "zz", &doc("zz", 9))
            .await
            .unwrap()
    );
    let listed: Vec<Doc> = store.list_servers("t1").await.unwrap();
    assert!(listed.contains(&doc("a", 9)));
    // tenants never see each other's rows
    let other: Vec<Doc> = store.list_servers("t2").await.unwrap();
    assert!(other.is_empty());
    store.insert_server("t2", "a", &doc("a", 5)).await.unwrap();
    assert!(store.delete_server("t1", "a").await.unwrap());
    assert!(!store.delete_server("t1", "a").await.unwrap());
    let t2: Vec<Doc> = store.list_servers("t2").await.unwrap();
    assert_eq!(t2, [doc("a", 5)]);
    // At boot every tenant's servers are started: each knows its tenant.
    let all: Vec<(String, Doc)> = store.list_all_servers().await.unwrap();
    assert_eq!(
        all,
        [
            ("t1".to_owned(), doc("b", 1)),
            ("t2".to_owned(), doc("a", 5))
        ]
    );
    let tenants = store.catalog_tenants().await.unwrap();
    assert!(
        tenants.contains(&"t1".to_owned()) && tenants.contains(&"t2".to_owned()),
        "{tenants:?}"
    );

    // overlays: upsert keyed by (server, tool)
    store
        .put_overlay("t1", "srv", "echo", &doc("o", 1))
        .await
        .unwrap();
    store
        .put_overlay("t1", "srv", "echo", &doc("o", 2))
        .await
        .unwrap();
    store
        .put_overlay("t1", "srv", "add", &doc("o", 3))
        .await
        .unwrap();
    let overlays: Vec<(String, String, Doc)> = store.list_overlays("t1").await.unwrap();
    assert_eq!(
        overlays,
        [
            ("srv".into(), "add".into(), doc("o", 3)),
            ("srv".into(), "echo".into(), doc("o", 2))
        ]
    );
    assert!(store.delete_overlay("t1", "srv", "add").await.unwrap());
    let none: Vec<(String, String, Doc)> = store.list_overlays("t2").await.unwrap();
    assert!(none.is_empty());

    // manual tools: bulk insert is all or nothing
    store
        .insert_manual_tools(
            "t1",
            &[("x".into(), doc("x", 1)), ("y".into(), doc("y", 2))],
        )
        .await
        .unwrap();
    let failed = store
        .insert_manual_tools(
            "t1",
            &[("z".into(), doc("z", 3)), ("x".into(), doc("x", 4))],
        )
        .await;
    assert!(matches!(failed, Err(StoreError::Conflict)), "{failed:?}");
    let tools: Vec<Doc> = store.list_manual_tools("t1").await.unwrap();
    assert_eq!(
        tools,
        [doc("x", 1), doc("y", 2)],
        "the failed batch left nothing behind"
    );
    assert!(
        store
            .update_manual_tool("t1", "y", &doc("y", 7))
            .await
            .unwrap()
    );
    assert!(store.delete_manual_tool("t1", "x").await.unwrap());
    let tools: Vec<Doc> = store.list_manual_tools("t1").await.unwrap();
    assert_eq!(tools, [doc("y", 7)]);

    // tool embeddings: upsert keyed by (tenant, model, server, tool)
    let row = |tool: &str, hash: &str| {
        (
            "srv".to_owned(),
            tool.to_owned(),
            hash.to_owned(),
            "AACAPw==".to_owned(),
        )
    };
    store
        .put_embeddings("t1", "m1", &[row("echo", "h1"), row("add", "h1")])
        .await
        .unwrap();
    store
        .put_embeddings("t1", "m1", &[row("echo", "h2")])
        .await
        .unwrap();
    store
        .put_embeddings("t1", "m2", &[row("echo", "other-model")])
        .await
        .unwrap();
    let mut rows = store.list_embeddings("t1", "m1").await.unwrap();
    rows.sort();
    assert_eq!(rows, [row("add", "h1"), row("echo", "h2")]);
    assert!(store.list_embeddings("t2", "m1").await.unwrap().is_empty());
    // Every tenant's vectors of a model, each with its tenant.
    store
        .put_embeddings("t3", "m1", &[row("echo", "t3-hash")])
        .await
        .unwrap();
    let mut all = store.list_all_embeddings("m1").await.unwrap();
    all.sort();
    let tagged = |tenant: &str, (s, t, h, v): (String, String, String, String)| {
        (tenant.to_owned(), s, t, h, v)
    };
    assert_eq!(
        all,
        [
            tagged("t1", row("add", "h1")),
            tagged("t1", row("echo", "h2")),
            tagged("t3", row("echo", "t3-hash")),
        ]
    );
}

#[tokio::test]
async fn store_suite_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}",
        dir.path().join("nested/dir/metamcp.db").display()
    );
    let store = Store::connect(&url).await.expect("sqlite store");
    suite(&store).await;
    store.close().await;
    // Reopening runs no migration twice and keeps the data.
    let store = Store::connect(&url).await.expect("reopen");
    let tools: Vec<Doc> = store.list_manual_tools("t1").await.unwrap();
    assert_eq!(tools, [doc("y", 7)]);

    // tool embeddings: upsert keyed by (tenant, model, server, tool)
    let row = |tool: &str, hash: &str| {
        (
            "srv".to_owned(),
            tool.to_owned(),
            hash.to_owned(),
            "AACAPw==".to_owned(),
        )
    };
    store
        .put_embeddings("t1", "m1", &[row("echo", "h1"), row("add", "h1")])
        .await
        .unwrap();
    store
        .put_embeddings("t1", "m1", &[row("echo", "h2")])
        .await
        .unwrap();
    store
        .put_embeddings("t1", "m2", &[row("echo", "other-model")])
        .await
        .unwrap();
    let mut rows = store.list_embeddings("t1", "m1").await.unwrap();
    rows.sort();
    assert_eq!(rows, [row("add", "h1"), row("echo", "h2")]);
    assert!(store.list_embeddings("t2", "m1").await.unwrap().is_empty());
}

#[tokio::test]
async fn store_suite_on_postgres() {
    let Ok(base) = std::env::var("METAMCP_TEST_POSTGRES_URL") else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("METAMCP_TEST_POSTGRES_URL must be set in CI");
        }
        eprintln!("SKIPPED store_suite_on_postgres: METAMCP_TEST_POSTGRES_URL is not set");
        return;
    };
    // A fresh schema per run, selected through the connection's search_path.
    let schema = format!("metamcp_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&base)
        .await
        .expect("connect to PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    let store = Store::connect(&url).await.expect("postgres store");
    suite(&store).await;
    store.close().await;
    let store = Store::connect(&url).await.expect("reopen");
    let tools: Vec<Doc> = store.list_manual_tools("t1").await.unwrap();
    assert_eq!(tools, [doc("y", 7)]);
    store.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await
        .unwrap();
}
