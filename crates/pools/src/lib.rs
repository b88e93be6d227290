//! The pool manager of sandpool's dynamic session pools.
//!
//! It owns what happens between "a request names a pool and a session identifier" and "a command
//! runs in that session's sandbox": the ready set of pre-started sandboxes of each pool, binding a
//! sandbox to an identifier (exactly one per identifier, even under concurrent first requests),
//! the capacity limit, the lifecycle reaper (`Timed` cooldown, `OnContainerExit`), executions and
//! their records, re-attachment after a restart, and metrics.
//!
//! It drives the sandbox runtime (`sandpool-sandbox`) and persists through [`SessionStore`], which
//! the server implements over SQL. It has no HTTP and no SQL; the server maps [`PoolError`] to
//! status codes and renders [`PoolMetrics`].

mod exec;
mod manager;
mod metrics;
mod retention;
use sandpool_sandbox as sb;
mod store;
pub mod testing;

use std::fmt;
use std::time::Duration;

pub use exec::{ExecuteRequest, ExecutionEvent, ExecutionHandle};
pub use manager::{ManagerConfig, PoolManager, RecoverReport, Session};
pub use metrics::{Histogram, PoolGauges, PoolMetrics};
pub use store::{
    ExecutionRecord, ExecutionStatus, MemoryStore, SessionInfo, SessionRecord, SessionStore,
    StoreResult,
};

/// Identity of a pool: its resource id in lower case, so that ids differing only in case (ARM
/// names are case-insensitive) are the same pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey(String);

impl PoolKey {
    /// From a full resource id, e.g.
    /// `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.App/sessionPools/{name}`.
    pub fn from_resource_id(id: &str) -> Self {
        PoolKey(id.to_lowercase())
    }

    /// The key of the session pool `name` in resource group `rg` of subscription `sub`.
    pub fn new(sub: &str, rg: &str, name: &str) -> Self {
        Self::from_resource_id(&format!(
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.App/sessionPools/{name}"
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PoolKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// When a session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Destroyed `cooldown` after its last request (a running execution counts as a request).
    Timed { cooldown: Duration },
    /// Destroyed when its sandbox's init is gone, or `max_alive` after its creation.
    OnContainerExit { max_alive: Duration },
}

/// The settings of a pool that the manager acts on. Updating them applies live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// Bound sessions at once (≥ 1); ready sandboxes do not count.
    pub max_concurrent_sessions: u32,
    /// Sandboxes kept started ahead of demand (≤ `max_concurrent_sessions`).
    pub ready_session_instances: u32,
    pub lifecycle: Lifecycle,
    pub egress: bool,
    /// Per session; `None`: the manager's default bound ([`crate::ManagerConfig::default_cpu_millicores`]).
    pub cpu_millicores: Option<u64>,
    /// Per session; `None`: the sandbox runtime's default.
    pub memory_bytes: Option<u64>,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_concurrent_sessions: 10,
            ready_session_instances: 0,
            lifecycle: Lifecycle::Timed {
                cooldown: Duration::from_secs(300),
            },
            egress: false,
            cpu_millicores: None,
            memory_bytes: None,
        }
    }
}

impl PoolSettings {
    pub fn validate(&self) -> Result<(), PoolError> {
        if self.max_concurrent_sessions == 0 {
            return Err(PoolError::InvalidRequest(
                "maxConcurrentSessions must be at least 1".into(),
            ));
        }
        if self.ready_session_instances > self.max_concurrent_sessions {
            return Err(PoolError::InvalidRequest(format!(
                "readySessionInstances ({}) must not exceed maxConcurrentSessions ({})",
                self.ready_session_instances, self.max_concurrent_sessions
            )));
        }
        Ok(())
    }

    /// Whether sandboxes started under `self` differ from ones started under `other`.
    fn same_sandbox_spec(&self, other: &PoolSettings) -> bool {
        self.egress == other.egress
            && self.cpu_millicores == other.cpu_millicores
            && self.memory_bytes == other.memory_bytes
    }
}

/// Errors of the pool manager. Cloneable because one allocation's outcome is handed to every
/// request that waited on it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PoolError {
    #[error("session pool {0} does not exist")]
    PoolNotFound(PoolKey),
    #[error("session {0} does not exist")]
    SessionNotFound(String),
    /// The session's sandbox died (its processes were killed from the host, or its main
    /// process exited); the session ended with it. Answered once; the identifier's next
    /// request gets a new session.
    #[error("{0}")]
    SandboxDied(String),
    #[error("the session pool is at its maximum of {max} concurrent sessions; retry after {} s", retry_after.as_secs())]
    AtCapacity { max: u32, retry_after: Duration },
    #[error("could not start a sandbox: {0}")]
    SandboxStart(String),
    #[error("sandbox failure: {0}")]
    Sandbox(String),
    #[error("session store failure: {0}")]
    Store(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("an execution with id {0} already exists in this session")]
    ExecutionExists(String),
    #[error("the session already runs its maximum of {max} executions at once; retry when one has ended")]
    TooManyExecutions { max: u32 },
    #[error("the pool manager is shutting down")]
    ShuttingDown,
}

impl PoolError {
    fn store(e: anyhow::Error) -> Self {
        PoolError::Store(format!("{e:#}"))
    }
}
