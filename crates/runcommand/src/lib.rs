//! The Run Command engine of sandpool (the domain part of AKS-style `runCommand`).
//!
//! It owns: decoding and checking the `context` zip ([`decode_context`], [`inspect_zip`]), the
//! job queue with its concurrency bound ([`CommandRunner`]), running each command in a FRESH
//! sandbox that is destroyed afterwards, capping logs ([`LogBuffer`]), and the result records
//! ([`CommandResult`]) it persists through [`CommandStore`], which the server's store implements.
//! It has no HTTP and no SQL: routes live in `sandpool-server`, isolation in `sandpool-sandbox`.
//!
//! Inside the sandbox, the context is unpacked into [`WORK_DIR`] (`/mnt/data`, the writable,
//! size-limited data area), through the sandbox's own file interface so paths are resolved
//! inside the sandbox, never on the host. The command runs there as `/bin/sh -c COMMAND` with
//! stdout and stderr merged in order. A cluster's kubeconfig lands in `/root/.kube/config`.

mod context;
mod logs;
mod model;
mod runner;
mod sandbox_engine;
pub mod testing;

pub use context::{
    decode_context, inspect_zip, open_context, read_entry, ContextError, ContextLimits,
    ContextPlan, PlannedFile, UnpackBudget,
};
pub use logs::{marker as log_marker, LogBuffer};
pub use model::{
    new_job_id, now_millis, truncate_millis, valid_job_id, ClusterSettings, CommandJob,
    CommandResult, CommandState, CommandStore, StoreError, StoreFuture, MAX_ID_LEN,
};
pub use runner::{CommandRunner, RunError, RunnerConfig, RunnerMetrics};

/// Working directory of every command, where its context is unpacked.
pub const WORK_DIR: &str = "/mnt/data";

/// Where a cluster's kubeconfig is written inside the sandbox.
pub const KUBECONFIG_PATH: &str = "/root/.kube/config";

/// Prefix of the sandbox ids this crate starts (`rc-<job id>`), so a startup sweep can tell
/// run-command sandboxes (never worth keeping) from session sandboxes.
pub const SANDBOX_ID_PREFIX: &str = "rc-";
