//! Run Command results in the server's store: the [`CommandStore`] of `sandpool-runcommand` over
//! the same SQLite/PostgreSQL pool as the resources (table `command_results`, migrations 300–399).
//!
//! Times are stored as integer milliseconds since the epoch: both backends round-trip them
//! exactly and compare them cheaply in the purge query.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sandpool_runcommand::{CommandResult, CommandState, CommandStore, StoreError, StoreFuture};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::store::Store;

/// The server's store seen as a [`CommandStore`].
#[derive(Debug, Clone)]
pub struct SqlCommandStore {
    store: Store,
}

impl SqlCommandStore {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

fn backend(e: sqlx::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn to_millis(t: SystemTime) -> i64 {
    let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// PostgreSQL TEXT cannot hold NUL; a command may print one. Both backends store the same text.
fn storable(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        std::borrow::Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

const COLUMNS: &str =
    "id, cluster, state, exit_code, started_at, finished_at, logs, reason, created_at";

fn from_row(r: &AnyRow) -> Result<CommandResult, StoreError> {
    let get = |e: sqlx::Error| StoreError::Backend(format!("reading a command result: {e}"));
    let state: String = r.try_get(2).map_err(get)?;
    let exit_code: Option<i64> = r.try_get(3).map_err(get)?;
    let started_at: Option<i64> = r.try_get(4).map_err(get)?;
    let finished_at: Option<i64> = r.try_get(5).map_err(get)?;
    let created_at: i64 = r.try_get(8).map_err(get)?;
    Ok(CommandResult {
        id: r.try_get(0).map_err(get)?,
        cluster: r.try_get(1).map_err(get)?,
        state: CommandState::parse(&state)
            .ok_or_else(|| StoreError::Backend(format!("unknown command state {state:?}")))?,
        exit_code: exit_code
            .map(|c| {
                i32::try_from(c)
                    .map_err(|_| StoreError::Backend(format!("exit code {c} out of range")))
            })
            .transpose()?,
        started_at: started_at.map(from_millis),
        finished_at: finished_at.map(from_millis),
        logs: r.try_get(6).map_err(get)?,
        reason: r.try_get(7).map_err(get)?,
        created_at: from_millis(created_at),
    })
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Binds every field of a record as `$1`…`$10` in the order of `insert` and `update`.
fn bind_record<'q>(q: AnyQuery<'q>, r: &'q CommandResult) -> AnyQuery<'q> {
    q.bind(&r.id)
        .bind(&r.cluster)
        .bind(r.cluster.to_lowercase())
        .bind(r.state.as_str())
        .bind(r.exit_code.map(i64::from))
        .bind(r.started_at.map(to_millis))
        .bind(r.finished_at.map(to_millis))
        .bind(storable(&r.logs).into_owned())
        .bind(r.reason.as_deref().map(|s| storable(s).into_owned()))
        .bind(to_millis(r.created_at))
}

impl CommandStore for SqlCommandStore {
    fn insert<'a>(&'a self, r: &'a CommandResult) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let done = bind_record(sqlx::query(
                "INSERT INTO command_results (id, cluster, cluster_key, state, exit_code, started_at, finished_at, logs, reason, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING",
            ), r)
            .execute(self.store.pool())
            .await
            .map_err(backend)?;
            if done.rows_affected() == 0 {
                return Err(StoreError::Duplicate(r.id.clone()));
            }
            Ok(())
        })
    }

    fn update<'a>(&'a self, r: &'a CommandResult) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let done = bind_record(sqlx::query(
                "UPDATE command_results SET cluster = $2, cluster_key = $3, state = $4, exit_code = $5,
                 started_at = $6, finished_at = $7, logs = $8, reason = $9, created_at = $10 WHERE id = $1",
            ), r)
            .execute(self.store.pool())
            .await
            .map_err(backend)?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound(r.id.clone()));
            }
            Ok(())
        })
    }

    fn get<'a>(&'a self, cluster: &'a str, id: &'a str) -> StoreFuture<'a, Option<CommandResult>> {
        Box::pin(async move {
            let row = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM command_results WHERE id = $1 AND cluster_key = $2"
            ))
            .bind(id)
            .bind(cluster.to_lowercase())
            .fetch_optional(self.store.pool())
            .await
            .map_err(backend)?;
            row.as_ref().map(from_row).transpose()
        })
    }

    fn fail_unfinished<'a>(&'a self, reason: &'a str, at: SystemTime) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let done = sqlx::query(
                "UPDATE command_results SET state = $1, reason = $2, finished_at = $3
                 WHERE state = $4 OR state = $5",
            )
            .bind(CommandState::Failed.as_str())
            .bind(storable(reason).as_ref())
            .bind(to_millis(at))
            .bind(CommandState::Queued.as_str())
            .bind(CommandState::Running.as_str())
            .execute(self.store.pool())
            .await
            .map_err(backend)?;
            Ok(done.rows_affected())
        })
    }

    fn purge_older_than<'a>(&'a self, cutoff: SystemTime) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let done = sqlx::query(
                "DELETE FROM command_results
                 WHERE (state = $1 OR state = $2) AND finished_at IS NOT NULL AND finished_at < $3",
            )
            .bind(CommandState::Succeeded.as_str())
            .bind(CommandState::Failed.as_str())
            .bind(to_millis(cutoff))
            .execute(self.store.pool())
            .await
            .map_err(backend)?;
            Ok(done.rows_affected())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn contract_sqlite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&Store::sqlite_url(dir.path()))
            .await
            .expect("store");
        sandpool_runcommand::testing::store_contract_tests(&SqlCommandStore::new(store.clone()))
            .await;
        store.close().await;
    }

    /// On a fresh database of the PostgreSQL server named by `SANDPOOL_TEST_DATABASE_URL`.
    #[tokio::test]
    async fn contract_postgres() {
        use sqlx::Connection;
        let env = crate::testing::DATABASE_URL_ENV;
        let admin = std::env::var(env)
            .unwrap_or_else(|_| panic!("{env} is not set (scripts/test.sh starts PostgreSQL)"));
        let name = format!("sandpool_rc_{}", uuid::Uuid::new_v4().simple());
        let exec = |sql: String| {
            let admin = admin.clone();
            async move {
                let mut conn = sqlx::PgConnection::connect(&admin).await?;
                sqlx::raw_sql(&sql).execute(&mut conn).await?;
                conn.close().await
            }
        };
        exec(format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        // The database is dropped also when the contract panics.
        let drop_sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        let admin2 = admin.clone();
        let guard = scopeguard(move || {
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(async {
                        if let Ok(mut c) = sqlx::PgConnection::connect(&admin2).await {
                            let _ = sqlx::raw_sql(&drop_sql).execute(&mut c).await;
                        }
                    });
                }
            })
            .join();
        });
        let store = Store::open(&crate::testing::with_database(&admin, &name))
            .await
            .expect("store");
        sandpool_runcommand::testing::store_contract_tests(&SqlCommandStore::new(store.clone()))
            .await;
        store.close().await;
        drop(guard);
    }

    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    fn scopeguard<F: FnOnce()>(f: F) -> Guard<F> {
        Guard(Some(f))
    }

    #[test]
    fn nul_is_replaced() {
        assert_eq!(storable("a\0b"), "a\u{FFFD}b");
        assert_eq!(storable("ab"), "ab");
        assert_eq!(
            from_millis(to_millis(UNIX_EPOCH + Duration::from_millis(1234))),
            UNIX_EPOCH + Duration::from_millis(1234)
        );
    }
}
