//! Shared harness of the sandbox integration tests (run as root).
//!
//! Each test gets its own state directory, cgroup parent and uid range, so tests run in
//! parallel; `with_runtime` sweeps everything the test started even when the test panics.
#![allow(dead_code)]

use sandpool_sandbox::{ExecOutput, ExecRequest, Runtime, RuntimeConfig, Sandbox, SandboxSpec};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Env {
    pub cfg: RuntimeConfig,
    pub dir: tempfile::TempDir,
}

pub fn env(name: &str) -> Env {
    let k = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let dir = tempfile::Builder::new()
        .prefix(&format!("sbx-{name}-"))
        .tempdir()
        .expect("tempdir");
    let mut cfg = RuntimeConfig::new(
        dir.path().join("state"),
        env!("CARGO_BIN_EXE_sandpool-sandbox-init"),
    );
    // Disjoint uid ranges per test (and per test process).
    let lane = ((pid % 11) * 64 + k) % 700;
    cfg.uid_base = 1_200_000_000 + lane * 64 * 65_536;
    cfg.uids_per_sandbox = 65_536;
    cfg.cgroup_parent = format!("sandpool-test-{pid}-{k}-{name}");
    Env { cfg, dir }
}

/// Runs `body` with a fresh runtime, then destroys whatever it left and removes the test's
/// cgroup parent, also when `body` panicked (the panic is re-raised afterwards).
pub async fn with_runtime<F, Fut>(name: &str, body: F)
where
    F: FnOnce(Runtime, PathBuf) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    with_env(env(name), |cfg, dir| async move {
        let rt = Runtime::new(cfg).await.expect("runtime");
        body(rt, dir).await
    })
    .await
}

/// Like [`with_runtime`] for tests that manage runtimes themselves: `body` gets the config and
/// the test's directory; the cleanup runs whatever happened.
pub async fn with_env<F, Fut>(env: Env, body: F)
where
    F: FnOnce(RuntimeConfig, PathBuf) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let result = tokio::spawn(body(env.cfg.clone(), env.dir.path().to_path_buf())).await;
    cleanup(&env).await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

pub async fn cleanup(env: &Env) {
    if let Ok(rt) = Runtime::new(env.cfg.clone()).await {
        let _ = rt.sweep(&|_| false).await;
    }
    if let Ok(m) = sandpool_cgroups::CgroupManager::detect(&env.cfg.cgroup_parent) {
        for d in m.parent_dirs() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

pub async fn start(rt: &Runtime) -> Sandbox {
    rt.start(SandboxSpec::default()).await.expect("start")
}

pub fn req(cmd: &str) -> ExecRequest {
    let mut r = ExecRequest::new(cmd);
    r.timeout = Duration::from_secs(30);
    r
}

pub async fn run(sb: &Sandbox, cmd: &str) -> ExecOutput {
    sb.exec_collect(req(cmd)).await.expect("exec")
}

pub fn text(b: &bytes::Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `cmd` and returns (exit code, stdout, stderr).
pub async fn sh(sb: &Sandbox, cmd: &str) -> (Option<i32>, String, String) {
    let o = run(sb, cmd).await;
    (o.outcome.exit_code, text(&o.stdout), text(&o.stderr))
}

/// A command starts with every signal disposition at its default, whatever the init ignores or
/// handles (SIGPIPE is ignored by the Rust runtime, SIGCHLD handled by the init).
#[allow(dead_code)]
pub async fn assert_default_signal_dispositions(sb: &Sandbox) {
    // cat reads its own status (grep would show its own SIGSEGV handler).
    let (code, out, err) = sh(sb, "cat /proc/self/status").await;
    assert_eq!(code, Some(0), "{err}");
    let sig: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("SigIgn:") || l.starts_with("SigCgt:"))
        .collect();
    assert_eq!(
        sig,
        ["SigIgn:\t0000000000000000", "SigCgt:\t0000000000000000"]
    );
}

/// Runs `body` on each start path: inits forked by the zygote (`true`), then exec'd ones
/// (`false`), each in a runtime of its own. `body` gets the runtime and the path it must take.
pub async fn on_each_start_path<F, Fut>(name: &str, body: F)
where
    F: Fn(Runtime, bool) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    for zygote in [true, false] {
        let mut env = env(&format!("{name}-{}", if zygote { "zy" } else { "ex" }));
        env.cfg.zygote = zygote;
        let body = body.clone();
        with_env(env, move |cfg, _| async move {
            let rt = Runtime::new(cfg).await.expect("runtime");
            body(rt, zygote).await
        })
        .await;
    }
}

/// Starts a sandbox on the path `on_each_start_path` named, and checks it took that path.
pub async fn start_on_path(rt: &Runtime, zygote: bool) -> Sandbox {
    let sb = start(rt).await;
    assert_eq!(rt.zygote_pid().is_some(), zygote, "start path");
    sb
}
