//! Persistence of sessions and executions: the contract the server's SQL store implements, and an
//! in-memory implementation for tests and embedded use.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::PoolKey;

/// Errors of a store are opaque to the pool manager: it only reports them.
pub type StoreResult<T> = anyhow::Result<T>;

/// A session bound to an identifier, as persisted so that a restarted server finds it again.
///
/// Timestamps are UTC; implementations must keep at least millisecond precision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub pool: PoolKey,
    pub identifier: String,
    pub sandbox_id: String,
    pub created_at: OffsetDateTime,
    pub last_accessed_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub etag: String,
}

/// What the manager reports about a live session (same shape as the stored record).
pub type SessionInfo = SessionRecord;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExecutionStatus {
    Running,
    /// The command ran to its end; its exit code may be non-zero.
    Succeeded,
    /// The command could not run, was killed (signal, out of memory) or its sandbox went away.
    Failed,
    /// The command hit its timeout and its process group was killed.
    TimedOut,
}

impl ExecutionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Running => "Running",
            ExecutionStatus::Succeeded => "Succeeded",
            ExecutionStatus::Failed => "Failed",
            ExecutionStatus::TimedOut => "TimedOut",
        }
    }

    /// Inverse of [`ExecutionStatus::as_str`] (case-insensitive), for stores that keep text.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Running, Self::Succeeded, Self::Failed, Self::TimedOut]
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
    }
}

/// One execution of a command in a session. Identified by (pool, identifier, id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionRecord {
    pub id: String,
    pub pool: PoolKey,
    pub identifier: String,
    pub command: String,
    pub status: ExecutionStatus,
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// Why the execution failed or timed out; `None` when it succeeded or is running.
    pub error: Option<String>,
    pub started_at: OffsetDateTime,
    pub finished_at: Option<OffsetDateTime>,
    pub duration_ms: Option<u64>,
    /// Submitted to be polled (`executionType: Asynchronous`) rather than answered in place.
    pub asynchronous: bool,
    /// The command ended while processes it started in the background still ran.
    pub leftover_processes: bool,
}

impl ExecutionRecord {
    /// A just-started execution: `Running`, no output yet.
    pub fn running(
        id: impl Into<String>,
        pool: PoolKey,
        identifier: impl Into<String>,
        command: impl Into<String>,
        started_at: OffsetDateTime,
    ) -> Self {
        ExecutionRecord {
            id: id.into(),
            pool,
            identifier: identifier.into(),
            command: command.into(),
            status: ExecutionStatus::Running,
            exit_code: None,
            stdout: String::new(),
            stderr: String::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            error: None,
            started_at,
            finished_at: None,
            duration_ms: None,
            asynchronous: false,
            leftover_processes: false,
        }
    }
}

/// Persistence the pool manager needs. The server implements it over SQLite and PostgreSQL; run
/// [`crate::testing::store_contract_tests`] against every implementation.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Inserts the session or replaces the one with the same (pool, identifier).
    async fn upsert_session(&self, session: &SessionRecord) -> StoreResult<()>;
    /// Deletes the session and its executions (they would otherwise pile up with their output,
    /// and no route can reach them once the identifier is gone). Returns whether a session was
    /// deleted.
    async fn delete_session(&self, pool: &PoolKey, identifier: &str) -> StoreResult<bool>;
    async fn list_sessions(&self) -> StoreResult<Vec<SessionRecord>>;
    /// Returns `false` (and changes nothing) when (pool, identifier, id) already exists.
    async fn insert_execution(&self, execution: &ExecutionRecord) -> StoreResult<bool>;
    /// Inserts finished executions that were never stored, in one statement or transaction where
    /// the store can (the manager batches the results of executions that end close together);
    /// any whose (pool, identifier, id) exists is skipped and the existing one kept.
    async fn insert_executions(&self, executions: &[ExecutionRecord]) -> StoreResult<()> {
        for e in executions {
            self.insert_execution(e).await?;
        }
        Ok(())
    }
    /// Replaces the execution with the same (pool, identifier, id); returns whether it existed.
    async fn update_execution(&self, execution: &ExecutionRecord) -> StoreResult<bool>;
    async fn get_execution(
        &self,
        pool: &PoolKey,
        identifier: &str,
        id: &str,
    ) -> StoreResult<Option<ExecutionRecord>>;
    /// Marks every `Running` execution `Failed` with `reason` as its error and now as its end;
    /// returns how many changed. Called at startup: nothing can still be running then.
    async fn fail_running_executions(&self, reason: &str) -> StoreResult<u64>;
    /// Deletes finished executions (any status but `Running`) that ended before `ended_before`,
    /// and of each session every finished one but the `keep` newest (by start, then id).
    /// Returns how many went. A long-lived busy session must not fill the disk.
    async fn prune_executions(&self, ended_before: OffsetDateTime, keep: u32) -> StoreResult<u64>;
}

type ExecKey = (PoolKey, String, String);

/// A [`SessionStore`] in process memory: nothing survives the process.
#[derive(Default)]
pub struct MemoryStore {
    sessions: Mutex<HashMap<(PoolKey, String), SessionRecord>>,
    executions: Mutex<HashMap<ExecKey, ExecutionRecord>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

fn exec_key(e: &ExecutionRecord) -> ExecKey {
    (e.pool.clone(), e.identifier.clone(), e.id.clone())
}

fn poisoned() -> anyhow::Error {
    anyhow::anyhow!("memory store lock poisoned")
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn upsert_session(&self, session: &SessionRecord) -> StoreResult<()> {
        let mut map = self.sessions.lock().map_err(|_| poisoned())?;
        map.insert(
            (session.pool.clone(), session.identifier.clone()),
            session.clone(),
        );
        Ok(())
    }

    async fn delete_session(&self, pool: &PoolKey, identifier: &str) -> StoreResult<bool> {
        self.executions
            .lock()
            .map_err(|_| poisoned())?
            .retain(|(p, i, _), _| !(p == pool && i == identifier));
        let mut map = self.sessions.lock().map_err(|_| poisoned())?;
        Ok(map.remove(&(pool.clone(), identifier.to_owned())).is_some())
    }

    async fn list_sessions(&self) -> StoreResult<Vec<SessionRecord>> {
        let map = self.sessions.lock().map_err(|_| poisoned())?;
        Ok(map.values().cloned().collect())
    }

    async fn insert_execution(&self, execution: &ExecutionRecord) -> StoreResult<bool> {
        let mut map = self.executions.lock().map_err(|_| poisoned())?;
        let key = exec_key(execution);
        if map.contains_key(&key) {
            return Ok(false);
        }
        map.insert(key, execution.clone());
        Ok(true)
    }

    async fn update_execution(&self, execution: &ExecutionRecord) -> StoreResult<bool> {
        let mut map = self.executions.lock().map_err(|_| poisoned())?;
        match map.get_mut(&exec_key(execution)) {
            Some(slot) => {
                *slot = execution.clone();
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn get_execution(
        &self,
        pool: &PoolKey,
        identifier: &str,
        id: &str,
    ) -> StoreResult<Option<ExecutionRecord>> {
        let map = self.executions.lock().map_err(|_| poisoned())?;
        Ok(map
            .get(&(pool.clone(), identifier.to_owned(), id.to_owned()))
            .cloned())
    }

    async fn prune_executions(&self, ended_before: OffsetDateTime, keep: u32) -> StoreResult<u64> {
        let mut map = self.executions.lock().map_err(|_| poisoned())?;
        let before = map.len();
        map.retain(|_, e| {
            e.status == ExecutionStatus::Running
                || e.finished_at.unwrap_or(e.started_at) >= ended_before
        });
        let mut by_session: HashMap<(PoolKey, String), Vec<(OffsetDateTime, String)>> =
            HashMap::new();
        for e in map
            .values()
            .filter(|e| e.status != ExecutionStatus::Running)
        {
            by_session
                .entry((e.pool.clone(), e.identifier.clone()))
                .or_default()
                .push((e.started_at, e.id.clone()));
        }
        for ((pool, identifier), mut finished) in by_session {
            finished.sort_unstable_by(|a, b| b.cmp(a));
            for (_, id) in finished.into_iter().skip(keep as usize) {
                map.remove(&(pool.clone(), identifier.clone(), id));
            }
        }
        Ok((before - map.len()) as u64)
    }

    async fn fail_running_executions(&self, reason: &str) -> StoreResult<u64> {
        let mut map = self.executions.lock().map_err(|_| poisoned())?;
        let now = OffsetDateTime::now_utc();
        let mut n = 0;
        for e in map.values_mut() {
            if e.status == ExecutionStatus::Running {
                e.status = ExecutionStatus::Failed;
                e.error = Some(reason.to_owned());
                e.finished_at = Some(now);
                n += 1;
            }
        }
        Ok(n)
    }
}
