//! The pool manager's persistence ([`SessionStore`]) over the server's SQL store: tables
//! `sessions` and `executions` (migrations 200–299).
//!
//! Timestamps are Unix milliseconds in BIGINT columns and flags are 0/1 BIGINTs: the one
//! representation that sqlx's `Any` driver reads back identically from SQLite and PostgreSQL.

use crate::store::Store;
use async_trait::async_trait;
use sandpool_pools::{
    ExecutionRecord, ExecutionStatus, PoolKey, SessionRecord, SessionStore, StoreResult,
};
use sqlx::any::AnyRow;
use sqlx::Row;
use time::OffsetDateTime;

fn ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn from_ms(v: i64) -> anyhow::Result<OffsetDateTime> {
    Ok(OffsetDateTime::from_unix_timestamp_nanos(
        i128::from(v) * 1_000_000,
    )?)
}

/// PostgreSQL TEXT cannot hold NUL; command output may. U+FFFD keeps the position visible.
fn text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}").into()
    } else {
        s.into()
    }
}

fn session_from_row(r: &AnyRow) -> anyhow::Result<SessionRecord> {
    Ok(SessionRecord {
        pool: PoolKey::from_resource_id(&r.try_get::<String, _>(0)?),
        identifier: r.try_get(1)?,
        sandbox_id: r.try_get(2)?,
        created_at: from_ms(r.try_get(3)?)?,
        last_accessed_at: from_ms(r.try_get(4)?)?,
        expires_at: from_ms(r.try_get(5)?)?,
        etag: r.try_get(6)?,
    })
}

const EXEC_COLUMNS: &str = "pool_key, identifier, id, command, status, exit_code, stdout, stderr, \
     stdout_truncated, stderr_truncated, error, started_at, finished_at, duration_ms, asynchronous, \
     leftover_processes";

fn execution_from_row(r: &AnyRow) -> anyhow::Result<ExecutionRecord> {
    let status: String = r.try_get(4)?;
    let exit_code: Option<i64> = r.try_get(5)?;
    let finished_at: Option<i64> = r.try_get(12)?;
    let duration_ms: Option<i64> = r.try_get(13)?;
    Ok(ExecutionRecord {
        pool: PoolKey::from_resource_id(&r.try_get::<String, _>(0)?),
        identifier: r.try_get(1)?,
        id: r.try_get(2)?,
        command: r.try_get(3)?,
        status: ExecutionStatus::parse(&status)
            .ok_or_else(|| anyhow::anyhow!("stored execution status {status:?} is unknown"))?,
        exit_code: exit_code.map(i32::try_from).transpose()?,
        stdout: r.try_get(6)?,
        stderr: r.try_get(7)?,
        stdout_truncated: r.try_get::<i64, _>(8)? != 0,
        stderr_truncated: r.try_get::<i64, _>(9)? != 0,
        error: r.try_get(10)?,
        started_at: from_ms(r.try_get(11)?)?,
        finished_at: finished_at.map(from_ms).transpose()?,
        duration_ms: duration_ms.map(u64::try_from).transpose()?,
        asynchronous: r.try_get::<i64, _>(14)? != 0,
        leftover_processes: r.try_get::<i64, _>(15)? != 0,
    })
}

/// The values of an execution row in [`EXEC_COLUMNS`] order, bound onto `q`.
fn bind_execution<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    e: &'q ExecutionRecord,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    q.bind(e.pool.as_str())
        .bind(e.identifier.as_str())
        .bind(e.id.as_str())
        .bind(text(&e.command).into_owned())
        .bind(e.status.as_str())
        .bind(e.exit_code.map(i64::from))
        .bind(text(&e.stdout).into_owned())
        .bind(text(&e.stderr).into_owned())
        .bind(i64::from(e.stdout_truncated))
        .bind(i64::from(e.stderr_truncated))
        .bind(e.error.as_deref().map(|s| text(s).into_owned()))
        .bind(ms(e.started_at))
        .bind(e.finished_at.map(ms))
        .bind(e.duration_ms.map(|d| i64::try_from(d).unwrap_or(i64::MAX)))
        .bind(i64::from(e.asynchronous))
        .bind(i64::from(e.leftover_processes))
}

#[async_trait]
impl SessionStore for Store {
    async fn upsert_session(&self, s: &SessionRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO sessions (pool_key, identifier, sandbox_id, created_at, last_accessed_at, expires_at, etag)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (pool_key, identifier) DO UPDATE SET sandbox_id = excluded.sandbox_id,
               created_at = excluded.created_at, last_accessed_at = excluded.last_accessed_at,
               expires_at = excluded.expires_at, etag = excluded.etag",
        )
        .bind(s.pool.as_str())
        .bind(s.identifier.as_str())
        .bind(s.sandbox_id.as_str())
        .bind(ms(s.created_at))
        .bind(ms(s.last_accessed_at))
        .bind(ms(s.expires_at))
        .bind(s.etag.as_str())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn delete_session(&self, pool: &PoolKey, identifier: &str) -> StoreResult<bool> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM executions WHERE pool_key = $1 AND identifier = $2")
            .bind(pool.as_str())
            .bind(identifier)
            .execute(&mut *tx)
            .await?;
        let n = sqlx::query("DELETE FROM sessions WHERE pool_key = $1 AND identifier = $2")
            .bind(pool.as_str())
            .bind(identifier)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(n.rows_affected() > 0)
    }

    async fn list_sessions(&self) -> StoreResult<Vec<SessionRecord>> {
        sqlx::query(
            "SELECT pool_key, identifier, sandbox_id, created_at, last_accessed_at, expires_at, etag
             FROM sessions ORDER BY pool_key, identifier",
        )
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(session_from_row)
        .collect()
    }

    async fn insert_execution(&self, e: &ExecutionRecord) -> StoreResult<bool> {
        let sql = format!(
            "INSERT INTO executions ({EXEC_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
             ON CONFLICT (pool_key, identifier, id) DO NOTHING"
        );
        let n = bind_execution(sqlx::query(&sql), e)
            .execute(self.pool())
            .await?;
        Ok(n.rows_affected() > 0)
    }

    async fn insert_executions(&self, batch: &[ExecutionRecord]) -> StoreResult<()> {
        // One multi-row statement: one commit and one hand-off to the database for the batch.
        const COLUMNS: usize = 16;
        if batch.is_empty() {
            return Ok(());
        }
        let rows: Vec<String> = (0..batch.len())
            .map(|r| {
                let params: Vec<String> = (1..=COLUMNS)
                    .map(|c| format!("${}", r * COLUMNS + c))
                    .collect();
                format!("({})", params.join(", "))
            })
            .collect();
        let sql = format!(
            "INSERT INTO executions ({EXEC_COLUMNS}) VALUES {}
             ON CONFLICT (pool_key, identifier, id) DO NOTHING",
            rows.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for e in batch {
            q = bind_execution(q, e);
        }
        q.execute(self.pool()).await?;
        Ok(())
    }

    async fn update_execution(&self, e: &ExecutionRecord) -> StoreResult<bool> {
        let n = sqlx::query(
            "UPDATE executions SET command = $4, status = $5, exit_code = $6, stdout = $7, stderr = $8,
               stdout_truncated = $9, stderr_truncated = $10, error = $11, started_at = $12,
               finished_at = $13, duration_ms = $14, asynchronous = $15,
               leftover_processes = $16
             WHERE pool_key = $1 AND identifier = $2 AND id = $3",
        );
        let n = bind_execution(n, e).execute(self.pool()).await?;
        Ok(n.rows_affected() > 0)
    }

    async fn get_execution(
        &self,
        pool: &PoolKey,
        identifier: &str,
        id: &str,
    ) -> StoreResult<Option<ExecutionRecord>> {
        let sql = format!(
            "SELECT {EXEC_COLUMNS} FROM executions WHERE pool_key = $1 AND identifier = $2 AND id = $3"
        );
        sqlx::query(&sql)
            .bind(pool.as_str())
            .bind(identifier)
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .as_ref()
            .map(execution_from_row)
            .transpose()
    }

    async fn fail_running_executions(&self, reason: &str) -> StoreResult<u64> {
        let n = sqlx::query(
            "UPDATE executions SET status = $1, error = $2, finished_at = $3 WHERE status = $4",
        )
        .bind(ExecutionStatus::Failed.as_str())
        .bind(reason)
        .bind(ms(OffsetDateTime::now_utc()))
        .bind(ExecutionStatus::Running.as_str())
        .execute(self.pool())
        .await?;
        Ok(n.rows_affected())
    }

    async fn prune_executions(&self, ended_before: OffsetDateTime, keep: u32) -> StoreResult<u64> {
        let aged = sqlx::query(
            "DELETE FROM executions WHERE status <> $1 AND COALESCE(finished_at, started_at) < $2",
        )
        .bind(ExecutionStatus::Running.as_str())
        .bind(ms(ended_before))
        .execute(self.pool())
        .await?;
        // The newest `keep` finished ones of each session stay (row-value IN and window
        // functions: SQLite 3.25+, every supported PostgreSQL).
        let surplus = sqlx::query(
            "DELETE FROM executions WHERE (pool_key, identifier, id) IN (
                SELECT pool_key, identifier, id FROM (
                    SELECT pool_key, identifier, id, ROW_NUMBER() OVER (
                        PARTITION BY pool_key, identifier ORDER BY started_at DESC, id DESC
                    ) AS newer
                    FROM executions WHERE status <> $1
                ) ranked WHERE newer > $2
            )",
        )
        .bind(ExecutionStatus::Running.as_str())
        .bind(i64::from(keep))
        .execute(self.pool())
        .await?;
        Ok(aged.rows_affected() + surplus.rows_affected())
    }
}
