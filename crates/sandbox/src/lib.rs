//! The Linux isolation runtime of sandpool: starts, drives, re-attaches and destroys sandboxes.
//!
//! A sandbox is a process tree in its own user, pid, mount, ipc, uts, cgroup and net namespaces
//! whose PID 1 is sandpool's small init ([`init_main`]). The host side ([`Runtime`], [`Sandbox`])
//! talks to the init over a unix socket at `<state_dir>/<id>/control.sock` with framed messages
//! (module `proto`), so a restarted server can find live sandboxes again.
//!
//! This crate owns namespaces, the root filesystem, seccomp, capabilities, rlimits and the init.
//! Cgroups come from `sandpool-cgroups`, egress network slots from `sandpool-net`. It knows
//! nothing of HTTP, pools, stores or tokens.

mod child;
mod client;
mod init;
mod proto;
mod report;
mod runtime;
mod seccomp;
mod spawn;
mod sys;
mod zygote;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

pub use client::{Execution, FileStream, Sandbox};
pub use report::{host_report, HostCheck, HostReport};
pub use runtime::{Runtime, SweepReport};
/// The seccomp policy every sandbox runs under, as data (for tests and audits).
pub use seccomp::policy as seccomp_policy;
/// Syscall numbers every sandbox's seccomp filter refuses with EPERM (besides the calls it
/// decides on their arguments, [`seccomp_policy::CONDITIONAL`]).
pub use seccomp::DENIED as DENIED_SYSCALLS;

/// Configuration of a [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// One subdirectory per sandbox (`control.sock`, `meta.json`, `init.log`).
    pub state_dir: PathBuf,
    /// Binary re-executed as the sandbox init; it must call [`init_main`] when given `init_args`.
    pub init_program: PathBuf,
    /// Arguments put before the init's own argument, e.g. `["__sandbox-init"]`.
    pub init_args: Vec<OsString>,
    /// First host uid (and gid) handed to sandboxes.
    pub uid_base: u32,
    /// Size of each sandbox's host uid range (sandbox uid 0 .. this).
    pub uids_per_sandbox: u32,
    /// How many such ranges follow `uid_base` (at most this many sandboxes at once): the
    /// runtime never hands out a host uid at or past `uid_base + uid_slots * uids_per_sandbox`,
    /// so instances with disjoint ranges never share a uid.
    pub uid_slots: u32,
    /// Cgroup below which each sandbox gets `<parent>/<id>`.
    pub cgroup_parent: String,
    /// Egress network slots; `None`: `NetworkMode::Egress` is refused.
    pub egress: Option<sandpool_net::NetConfig>,
    /// Fork inits from a zygote process (exec'd once) instead of exec'ing one per sandbox.
    /// Image sandboxes and starts while the zygote cannot run take the exec path regardless.
    pub zygote: bool,
    /// Loopback-only network namespaces the zygote keeps made for sandboxes without egress
    /// (at most [`MAX_READY_NETNS`]): making one on the start path costs a few hundred
    /// microseconds of kernel work. The zygote refills them whenever it has been idle for a few
    /// milliseconds, so this is the burst of back-to-back starts that finds one ready.
    pub ready_netns: usize,
}

/// [`RuntimeConfig::uid_slots`] unless set otherwise: 4,096 sandboxes of 65,536 uids.
pub const DEFAULT_UID_SLOTS: u32 = 4096;

/// [`RuntimeConfig::ready_netns`] unless set otherwise.
pub const DEFAULT_READY_NETNS: usize = 4;
pub use zygote::MAX_READY_NETNS;

impl RuntimeConfig {
    /// A configuration with sandpool's defaults for everything but the paths.
    pub fn new(state_dir: impl Into<PathBuf>, init_program: impl Into<PathBuf>) -> RuntimeConfig {
        RuntimeConfig {
            state_dir: state_dir.into(),
            init_program: init_program.into(),
            init_args: Vec::new(),
            uid_base: 1_000_000_000,
            uids_per_sandbox: 65_536,
            uid_slots: DEFAULT_UID_SLOTS,
            cgroup_parent: "sandpool".into(),
            egress: None,
            zygote: true,
            ready_netns: DEFAULT_READY_NETNS,
        }
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// Sandbox id (`[A-Za-z0-9_-]{1,64}`); a fresh one when `None`.
    pub id: Option<String>,
    pub rootfs: RootFs,
    pub limits: Limits,
    pub network: NetworkMode,
    /// Environment of every command, before the exec's own.
    pub env: Vec<(String, String)>,
    pub hostname: String,
}

impl Default for SandboxSpec {
    fn default() -> Self {
        SandboxSpec {
            id: None,
            rootfs: RootFs::Host,
            limits: Limits::default(),
            network: NetworkMode::None,
            env: Vec::new(),
            hostname: "sandbox".into(),
        }
    }
}

/// Root filesystem of a sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum RootFs {
    /// A tmpfs root with read-only binds of the host's system directories.
    Host,
    /// An unpacked image directory used as the read-only lower layer of an overlay. The runtime
    /// hands the init an idmapped copy of the tree (host uid/gid n appear as sandbox n), so
    /// files of a root-owned image belong to the sandbox's root; the image is never written.
    Image(PathBuf),
}

/// Resource limits of a sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub pids: Option<u64>,
    pub cpu_millicores: Option<u64>,
    /// Size of the writable `/tmp`.
    pub tmp_bytes: u64,
    /// Size of the writable `/home/user`.
    pub home_bytes: u64,
    /// Size of the writable `/mnt/data` (the files API's usual root).
    pub data_bytes: u64,
    /// `RLIMIT_NOFILE` (soft and hard).
    pub nofile: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: Some(512 << 20),
            pids: Some(256),
            cpu_millicores: None,
            tmp_bytes: 256 << 20,
            home_bytes: 256 << 20,
            data_bytes: 1 << 30,
            nofile: 4096,
        }
    }
}

/// Network of a sandbox.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum NetworkMode {
    /// A fresh network namespace with only `lo`.
    None,
    /// A network slot of the runtime's egress pool.
    Egress,
}

/// One command to run in a sandbox (`/bin/sh -c command`).
#[derive(Debug, Clone)]
pub struct ExecRequest {
    pub command: String,
    pub env: Vec<(String, String)>,
    /// Working directory inside the sandbox; `/root` when `None`.
    pub cwd: Option<String>,
    pub stdin: Option<bytes::Bytes>,
    /// The whole process group is killed when it passes.
    pub timeout: Duration,
    /// Per stream; output past it is dropped and flagged.
    pub output_limit: usize,
    /// stdout and stderr as one ordered stream, delivered as [`ExecEvent::Stdout`].
    pub merge_output: bool,
}

impl ExecRequest {
    /// A request with a 60 s timeout and a 1 MiB output cap per stream.
    pub fn new(command: impl Into<String>) -> ExecRequest {
        ExecRequest {
            command: command.into(),
            env: Vec::new(),
            cwd: None,
            stdin: None,
            timeout: Duration::from_secs(60),
            output_limit: 1 << 20,
            merge_output: false,
        }
    }
}

/// One event of a running command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Stdout(bytes::Bytes),
    Stderr(bytes::Bytes),
    /// Always the last event.
    Exit(ExecOutcome),
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub oom_killed: bool,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub duration: Duration,
    /// Processes the command started in its process group were still running when it ended
    /// (e.g. `cmd &`); they keep running. Processes that left the group (`setsid`) are not seen.
    pub leftover_processes: bool,
}

/// A finished command with its collected output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: bytes::Bytes,
    pub stderr: bytes::Bytes,
    pub outcome: ExecOutcome,
}

/// A file or directory inside a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Absolute path inside the sandbox.
    pub path: String,
    pub name: String,
    pub is_dir: bool,
    pub size: u64,
    pub modified: SystemTime,
    /// Permission bits and file type as in `st_mode`.
    pub mode: u32,
}

/// Resource usage of a sandbox (its cgroup).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxStats {
    pub memory_bytes: u64,
    pub memory_peak_bytes: u64,
    pub cpu_usage: Duration,
    pub pids: u64,
    pub oom_kills: u64,
}

/// Errors of the runtime.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("sandbox not found")]
    NotFound,
    #[error("invalid path: {0}")]
    InvalidPath(String),
    #[error("file not found: {0}")]
    FileNotFound(String),
    #[error("invalid sandbox spec: {0}")]
    InvalidSpec(String),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("sandbox start failed: {0}")]
    Start(String),
    #[error("sandbox protocol error: {0}")]
    Protocol(String),
    #[error("error inside the sandbox: {0}")]
    Remote(String),
    #[error("cgroup: {0}")]
    Cgroup(String),
    #[error("network: {0}")]
    Net(String),
    #[error("egress networking is not configured")]
    EgressUnavailable,
    #[error("the sandbox has been destroyed")]
    Destroyed,
}

impl From<sandpool_cgroups::CgroupError> for SandboxError {
    fn from(e: sandpool_cgroups::CgroupError) -> Self {
        SandboxError::Cgroup(e.to_string())
    }
}

impl From<sandpool_net::NetError> for SandboxError {
    fn from(e: sandpool_net::NetError) -> Self {
        SandboxError::Net(e.to_string())
    }
}

use serde::{Deserialize, Serialize};

/// Entry point of the in-sandbox init. Call it first thing in `main` (before any runtime,
/// thread or logging exists) when the process was started with the runtime's `init_args`.
pub fn init_main() -> ! {
    init::main()
}
