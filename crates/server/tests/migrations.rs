//! The schema comes from sqlx's migrator (`crates/server/migrations/`); a database made by the
//! hand-rolled migrator before it (steps recorded in `schema_migrations`) is taken over on start
//! without re-running a step or losing a row.

mod common;

use sandpool_server::testing::{TestServer, TestStore};
use sqlx::Row;

async fn pool(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::AnyPool::connect(url)
        .await
        .expect("connecting to the test database")
}

async fn versions(db: &sqlx::AnyPool, table: &str) -> Vec<i64> {
    sqlx::query(&format!("SELECT version FROM {table} ORDER BY version"))
        .fetch_all(db)
        .await
        .expect("reading versions")
        .iter()
        .map(|r| r.try_get::<i64, _>(0).expect("version"))
        .collect()
}

async fn legacy_database_is_taken_over(store: TestStore) {
    let mut srv = TestServer::start(store).await;
    let db = pool(&srv.database_url).await;
    let steps = versions(&db, "_sqlx_migrations").await;
    assert!(steps.starts_with(&[1, 100, 200]), "{steps:?}");
    srv.stop();

    // What the earlier server left: the same schema, its steps in `schema_migrations`.
    sqlx::query(
        "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)",
    )
    .execute(&db)
    .await
    .unwrap();
    for v in &steps {
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 'then')")
            .bind(*v)
            .execute(&db)
            .await
            .unwrap();
    }
    sqlx::query("DROP TABLE _sqlx_migrations")
        .execute(&db)
        .await
        .unwrap();
    let groups_before: i64 = sqlx::query("SELECT COUNT(*) FROM resources")
        .fetch_one(&db)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert!(groups_before > 0);

    // Re-running any step would fail (its tables exist): the start succeeds, nothing is lost.
    srv.restart().await;
    assert_eq!(versions(&db, "_sqlx_migrations").await, steps);
    let legacy_left: i64 = sqlx::query(match store {
        TestStore::Sqlite => "SELECT COUNT(*) FROM sqlite_master WHERE name = 'schema_migrations'",
        TestStore::Postgres => {
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'schema_migrations'"
        }
    })
    .fetch_one(&db)
    .await
    .unwrap()
    .try_get(0)
    .unwrap();
    assert_eq!(legacy_left, 0, "schema_migrations was kept");
    let api = common::Api::from(srv);
    let r = api
        .get("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/default")
        .await;
    r.assert_status(200);
    api.group("after-takeover").await;
    db.close().await;
}

both_stores!(legacy_database_is_taken_over);
