//! Jobs, results and the persistence interface the server's store implements.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How a managed cluster runs its commands. `None` limits mean the runtime's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    pub cpu_millicores: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub pids: Option<u64>,
    /// Whether the sandbox gets outbound network access.
    pub egress: bool,
    /// Wall-clock limit of the command; its whole process group is killed at the end.
    pub command_timeout: Duration,
    /// Contents of a kubeconfig, written to `/root/.kube/config` (mode 0600) inside.
    pub kubeconfig: Option<String>,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            cpu_millicores: None,
            memory_bytes: None,
            pids: None,
            egress: false,
            command_timeout: Duration::from_secs(300),
            kubeconfig: None,
        }
    }
}

/// One submitted command.
#[derive(Clone, PartialEq, Eq)]
pub struct CommandJob {
    /// `[A-Za-z0-9]+`, at most [`MAX_ID_LEN`] characters; see [`new_job_id`].
    pub id: String,
    /// Resource id of the managed cluster, as the server canonicalises it.
    pub cluster: String,
    pub command: String,
    /// The decoded context zip (may be empty).
    pub context: Vec<u8>,
    pub settings: ClusterSettings,
}

impl fmt::Debug for CommandJob {
    // The kubeconfig is a credential and the context can be large: neither goes to logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandJob")
            .field("id", &self.id)
            .field("cluster", &self.cluster)
            .field("command", &self.command)
            .field("context_bytes", &self.context.len())
            .field("egress", &self.settings.egress)
            .field("command_timeout", &self.settings.command_timeout)
            .field(
                "kubeconfig",
                &self.settings.kubeconfig.as_ref().map(|_| "<set>"),
            )
            .finish()
    }
}

/// Longest accepted job id.
pub const MAX_ID_LEN: usize = 48;

/// A fresh job id: 32 lowercase hex digits, matching the `[A-Za-z0-9]+` that clients extract.
pub fn new_job_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Whether `id` is acceptable as a job id.
pub fn valid_job_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandState {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl CommandState {
    /// The wire spelling (`provisioningState`).
    pub fn as_str(self) -> &'static str {
        match self {
            CommandState::Queued => "Queued",
            CommandState::Running => "Running",
            CommandState::Succeeded => "Succeeded",
            CommandState::Failed => "Failed",
        }
    }

    /// Parses the wire spelling, ignoring case (stores may hand back what they saved).
    pub fn parse(s: &str) -> Option<CommandState> {
        [
            CommandState::Queued,
            CommandState::Running,
            CommandState::Succeeded,
            CommandState::Failed,
        ]
        .into_iter()
        .find(|state| state.as_str().eq_ignore_ascii_case(s))
    }

    pub fn is_finished(self) -> bool {
        matches!(self, CommandState::Succeeded | CommandState::Failed)
    }
}

impl fmt::Display for CommandState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The stored record of a command. Times are whole milliseconds (see [`now_millis`]) so that
/// every store round-trips them exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandResult {
    pub id: String,
    pub cluster: String,
    pub state: CommandState,
    /// Set when the command ran to its end (`Succeeded`), zero or not.
    pub exit_code: Option<i32>,
    pub started_at: Option<SystemTime>,
    /// Set for every finished (`Succeeded`/`Failed`) record.
    pub finished_at: Option<SystemTime>,
    /// stdout and stderr merged in order, capped (head, marker line, tail).
    pub logs: String,
    /// Why a `Failed` command did not run or was stopped.
    pub reason: Option<String>,
    pub created_at: SystemTime,
}

impl CommandResult {
    /// A new `Queued` record.
    pub fn queued(id: &str, cluster: &str, created_at: SystemTime) -> CommandResult {
        CommandResult {
            id: id.to_string(),
            cluster: cluster.to_string(),
            state: CommandState::Queued,
            exit_code: None,
            started_at: None,
            finished_at: None,
            logs: String::new(),
            reason: None,
            created_at,
        }
    }
}

/// The current time, truncated to whole milliseconds.
pub fn now_millis() -> SystemTime {
    truncate_millis(SystemTime::now())
}

/// Truncates a time to whole milliseconds (times before 1970 become 1970).
pub fn truncate_millis(t: SystemTime) -> SystemTime {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    UNIX_EPOCH + Duration::from_millis(since.as_millis().try_into().unwrap_or(u64::MAX))
}

/// Why a store call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// `insert` of an id that already exists.
    #[error("a command with id {0} already exists")]
    Duplicate(String),
    /// `update` of a record that does not exist.
    #[error("no command with id {0}")]
    NotFound(String),
    /// Anything else (connection, SQL, decoding), with a message for logs.
    #[error("command store: {0}")]
    Backend(String),
}

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Where results live. The server implements it over SQLite and PostgreSQL; every
/// implementation must pass [`crate::testing::store_contract_tests`].
///
/// Ids are unique across clusters; `get` only finds a record under its own cluster.
pub trait CommandStore: Send + Sync + 'static {
    /// Stores a new record; [`StoreError::Duplicate`] if the id exists.
    fn insert<'a>(&'a self, result: &'a CommandResult) -> StoreFuture<'a, ()>;
    /// Replaces every field of the record with this id; [`StoreError::NotFound`] if none.
    fn update<'a>(&'a self, result: &'a CommandResult) -> StoreFuture<'a, ()>;
    fn get<'a>(&'a self, cluster: &'a str, id: &'a str) -> StoreFuture<'a, Option<CommandResult>>;
    /// Turns every `Queued`/`Running` record into `Failed` with `reason` and `finished_at = at`
    /// (other fields kept); returns how many. Called at startup, before any submit.
    fn fail_unfinished<'a>(&'a self, reason: &'a str, at: SystemTime) -> StoreFuture<'a, u64>;
    /// Deletes finished records whose `finished_at` is before `cutoff`; returns how many.
    /// Unfinished records are never purged.
    fn purge_older_than<'a>(&'a self, cutoff: SystemTime) -> StoreFuture<'a, u64>;
}
