//! Shared harness of the pool manager's integration tests (run as root, real sandboxes).
//!
//! Each test gets its own state directory, cgroup parent and host uid range, so tests run in
//! parallel; `with_manager` shuts the manager down and destroys every sandbox the test made,
//! also when the test panicked (the panic is re-raised afterwards).
#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sandpool_pools::{
    ExecuteRequest, ExecutionRecord, Lifecycle, ManagerConfig, MemoryStore, PoolKey, PoolManager,
    PoolSettings, Session,
};
use sandpool_sandbox::{Runtime, RuntimeConfig};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Fixture {
    pub cfg: RuntimeConfig,
    pub runtime: Runtime,
    pub store: Arc<MemoryStore>,
    pub manager: PoolManager,
    pub key: PoolKey,
}

/// Fast reaper and health checks so lifecycle tests finish quickly.
pub fn fast_config() -> ManagerConfig {
    ManagerConfig {
        reaper_interval: Duration::from_millis(100),
        health_check_interval: Duration::from_millis(500),
        refill_retry: Duration::from_millis(200),
        ..ManagerConfig::default()
    }
}

pub fn runtime_config(name: &str, dir: &std::path::Path) -> RuntimeConfig {
    let k = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut cfg = RuntimeConfig::new(dir.join("state"), env!("CARGO_BIN_EXE_pools-test-init"));
    // Disjoint uid ranges per test and per test process: 32 sandboxes of 65536 uids per lane,
    // in a band of the uid space the other crates' tests do not use.
    let lane = (std::process::id() % 8) * 32 + (k % 32);
    cfg.uid_base = 3_000_000_000 + lane * 32 * 65_536;
    cfg.uids_per_sandbox = 65_536;
    cfg.cgroup_parent = format!("sandpool-pools-test-{}-{k}-{name}", std::process::id());
    cfg
}

pub fn settings(max: u32, ready: u32, lifecycle: Lifecycle) -> PoolSettings {
    PoolSettings {
        max_concurrent_sessions: max,
        ready_session_instances: ready,
        lifecycle,
        egress: false,
        cpu_millicores: None,
        memory_bytes: Some(256 << 20),
    }
}

pub fn timed(secs: u64) -> Lifecycle {
    Lifecycle::Timed {
        cooldown: Duration::from_secs(secs),
    }
}

/// Runs `body` with a fresh runtime, store and manager, then cleans up whatever happened.
pub async fn with_manager<F, Fut>(name: &str, body: F)
where
    F: FnOnce(Fixture) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    with_manager_config(name, fast_config(), body).await;
}

/// [`with_manager`] with the manager's tunables given.
pub async fn with_manager_config<F, Fut>(name: &str, config: ManagerConfig, body: F)
where
    F: FnOnce(Fixture) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    with_manager_over(name, config, |s| s, body).await;
}

/// [`with_manager_config`] with the manager's store wrapped by `wrap` (the fixture's `store` is
/// the memory store underneath).
pub async fn with_manager_over<W, F, Fut>(name: &str, config: ManagerConfig, wrap: W, body: F)
where
    W: FnOnce(Arc<MemoryStore>) -> Arc<dyn sandpool_pools::SessionStore>,
    F: FnOnce(Fixture) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::Builder::new()
        .prefix(&format!("pools-{name}-"))
        .tempdir()
        .expect("tempdir");
    let cfg = runtime_config(name, dir.path());
    let runtime = Runtime::new(cfg.clone()).await.expect("runtime");
    let store = Arc::new(MemoryStore::new());
    let manager = PoolManager::with_config(runtime.clone(), wrap(store.clone()), config);
    let fixture = Fixture {
        cfg: cfg.clone(),
        runtime,
        store,
        manager: manager.clone(),
        key: PoolKey::new("00000000-0000-0000-0000-0000000000aa", "Tests", name),
    };
    let result = tokio::spawn(body(fixture)).await;
    manager.shutdown().await;
    drop(manager);
    cleanup(&cfg).await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

pub async fn cleanup(cfg: &RuntimeConfig) {
    if let Ok(rt) = Runtime::new(cfg.clone()).await {
        let _ = rt.sweep(&|_| false).await;
    }
    if let Ok(m) = sandpool_cgroups::CgroupManager::detect(&cfg.cgroup_parent) {
        for d in m.parent_dirs() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Polls `cond` until it holds; panics naming `what` after a generous deadline (a liveness
/// bound, not a timing assertion).
pub async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn ready_count(m: &PoolManager, key: &PoolKey) -> u64 {
    m.metrics().pool(key).map(|p| p.ready).unwrap_or(0)
}

/// Sessions of the pool, counting those being allocated or destroyed.
pub fn allocated(m: &PoolManager, key: &PoolKey) -> u64 {
    m.metrics().pool(key).map(|p| p.allocated).unwrap_or(0)
}

pub async fn wait_ready(m: &PoolManager, key: &PoolKey, n: u64) {
    eventually(&format!("{n} ready sandboxes"), || async {
        ready_count(m, key) == n
    })
    .await;
}

/// Runs `cmd` in the session and waits for its record.
pub async fn run(m: &PoolManager, s: &Session, cmd: &str) -> ExecutionRecord {
    m.execute(s, ExecuteRequest::new(cmd))
        .await
        .expect("execute")
        .wait()
        .await
        .expect("execution result")
}
