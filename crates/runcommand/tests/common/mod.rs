//! Shared harness of the run-command integration tests (run as root, real sandboxes).
//!
//! Every test gets its own state directory, cgroup parent and uid range, so tests run in
//! parallel; [`with_runner`] shuts the runner down, sweeps every sandbox and removes the
//! cgroup parent also when the test panics.
#![allow(dead_code)]

use std::future::Future;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sandpool_runcommand::testing::MemoryStore;
use sandpool_runcommand::{
    ClusterSettings, CommandJob, CommandResult, CommandRunner, CommandState, RunnerConfig,
};
use sandpool_sandbox::{Runtime, RuntimeConfig};
use zip::write::SimpleFileOptions;

pub const CLUSTER: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg1/providers/Microsoft.ContainerService/managedClusters/clustername1";

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Env {
    pub cfg: RuntimeConfig,
    pub dir: tempfile::TempDir,
}

fn env(name: &str) -> Env {
    let k = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let dir = tempfile::Builder::new()
        .prefix(&format!("rc-{name}-"))
        .tempdir()
        .expect("tempdir");
    let mut cfg = RuntimeConfig::new(
        dir.path().join("state"),
        env!("CARGO_BIN_EXE_runcommand-test-init"),
    );
    // A uid area of its own (3.0e9 and up), split into disjoint lanes per process and test.
    let lane = (pid % 32) * 8 + (k % 8);
    cfg.uid_base = 3_000_000_000 + lane * 64 * 65_536;
    cfg.uids_per_sandbox = 65_536;
    cfg.cgroup_parent = format!("sandpool-rctest-{pid}-{k}");
    Env { cfg, dir }
}

pub struct Ctx {
    pub runner: CommandRunner,
    pub store: Arc<MemoryStore>,
    pub runtime: Runtime,
    pub state_dir: PathBuf,
}

/// Runs `body` with a runner over a fresh runtime and in-memory store; afterwards checks that
/// no sandbox was left behind, then cleans up whatever remains even if `body` panicked.
pub async fn with_runner<F, Fut>(name: &str, config: RunnerConfig, body: F)
where
    F: FnOnce(Arc<Ctx>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let env = env(name);
    let runtime = Runtime::new(env.cfg.clone()).await.expect("runtime");
    let store = Arc::new(MemoryStore::new());
    let runner = CommandRunner::new(runtime.clone(), store.clone(), config);
    let ctx = Arc::new(Ctx {
        runner: runner.clone(),
        store,
        runtime: runtime.clone(),
        state_dir: env.cfg.state_dir.clone(),
    });
    let result = tokio::spawn(body(ctx.clone())).await;
    runner.shutdown().await;
    let leftovers = sandbox_dirs(&env.cfg.state_dir);
    let _ = runtime.sweep(&|_| false).await;
    if let Ok(m) = sandpool_cgroups::CgroupManager::detect(&env.cfg.cgroup_parent) {
        for d in m.parent_dirs() {
            let _ = std::fs::remove_dir(d);
        }
    }
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
    assert!(leftovers.is_empty(), "sandboxes left behind: {leftovers:?}");
}

/// Sandbox state directories still present.
pub fn sandbox_dirs(state_dir: &Path) -> Vec<String> {
    std::fs::read_dir(state_dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub fn settings() -> ClusterSettings {
    ClusterSettings {
        command_timeout: Duration::from_secs(60),
        ..Default::default()
    }
}

pub fn job(command: &str, context: Vec<u8>) -> CommandJob {
    CommandJob {
        id: sandpool_runcommand::new_job_id(),
        cluster: CLUSTER.to_string(),
        command: command.to_string(),
        context,
        settings: settings(),
    }
}

/// Polls the runner until the command is finished (no timing is asserted; the test
/// harness's own timeout is the limit).
pub async fn wait(runner: &CommandRunner, id: &str) -> CommandResult {
    loop {
        let r = runner
            .result(CLUSTER, id)
            .await
            .expect("result")
            .expect("record exists");
        if r.state.is_finished() {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn run(runner: &CommandRunner, job: CommandJob) -> CommandResult {
    let id = runner.submit(job).await.expect("submit");
    wait(runner, &id).await
}

pub fn assert_succeeded(r: &CommandResult, code: i32) {
    assert_eq!(r.state, CommandState::Succeeded, "{r:?}");
    assert_eq!(r.exit_code, Some(code), "{r:?}");
    assert!(r.reason.is_none(), "{r:?}");
    assert!(r.started_at.is_some() && r.finished_at.is_some(), "{r:?}");
}

/// One entry of a test archive.
pub enum Entry<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
}

pub fn zip_of(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for e in entries {
        match e {
            Entry::File(name, data, mode) => {
                let opts = SimpleFileOptions::default().unix_permissions(*mode);
                w.start_file(*name, opts).expect("start file");
                w.write_all(data).expect("write");
            }
            Entry::Dir(name) => {
                w.add_directory(*name, SimpleFileOptions::default())
                    .expect("dir");
            }
            Entry::Symlink(name, target) => {
                w.add_symlink(*name, *target, SimpleFileOptions::default())
                    .expect("symlink");
            }
        }
    }
    w.finish().expect("finish").into_inner()
}

/// Rewrites the uncompressed size of every entry, in local headers and the central
/// directory, the way a zip bomb lies (the data stays as it is).
pub fn lie_about_sizes(mut zip: Vec<u8>, size: u32) -> Vec<u8> {
    let patch = |zip: &mut Vec<u8>, sig: &[u8; 4], offset: usize| {
        let mut i = 0;
        let mut n = 0;
        while i + 4 <= zip.len() {
            if &zip[i..i + 4] == sig {
                zip[i + offset..i + offset + 4].copy_from_slice(&size.to_le_bytes());
                n += 1;
            }
            i += 1;
        }
        n
    };
    let local = patch(&mut zip, b"PK\x03\x04", 22);
    let central = patch(&mut zip, b"PK\x01\x02", 24);
    assert!(local >= 1 && central >= 1, "headers found");
    zip
}

/// Whether any host process has `needle` as an argument.
pub fn process_with_arg(needle: &str) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .map(|c| c.split(|b| *b == 0).any(|a| a == needle.as_bytes()))
            .unwrap_or(false)
    })
}
