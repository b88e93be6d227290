//! Limits a shared host needs, against real sandboxes and cgroups (run as root): the default
//! CPU bound of a session, the ceiling of all sandboxes, concurrent executions per session, and
//! a session at its pids limit.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sandpool_cgroups::{CgroupManager, CpuQuota};
use sandpool_pools::{ExecuteRequest, ExecutionStatus, ManagerConfig, PoolError};

/// Reads `file` of the sandbox's cgroup in the hierarchy that has it (v1: the cpu one).
fn cgroup_file(parent: &str, sandbox: &str, file: &str) -> String {
    let m = CgroupManager::detect(parent).expect("cgroups");
    for dir in m.parent_dirs() {
        if let Ok(text) = std::fs::read_to_string(dir.join(sandbox).join(file)) {
            return text.trim().to_owned();
        }
    }
    panic!("no {file} for sandbox {sandbox} under {parent}");
}

/// Two busy loops in a session whose pool names no cpu: the session's cgroup carries a one-core
/// quota and the kernel throttles it. Measured by the cgroup's own counters (throttled periods,
/// cpu time against the wall time the loops ran at most), never by how long anything took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_without_a_cpu_limit_gets_one_core() {
    with_manager("cpu-default", |fx| async move {
        let (m, key) = (&fx.manager, &fx.key);
        let mut s = settings(2, 0, timed(300));
        s.cpu_millicores = None;
        m.upsert_pool(key.clone(), s).await.expect("pool");
        let session = m.acquire(key, "spin").await.expect("acquire");
        let id = session.sandbox_id().to_owned();
        let parent = fx.cfg.cgroup_parent.clone();
        let quota = match CgroupManager::detect(&parent).expect("cgroups").version() {
            sandpool_cgroups::CgroupVersion::V1 => cgroup_file(&parent, &id, "cpu.cfs_quota_us"),
            sandpool_cgroups::CgroupVersion::V2 => cgroup_file(&parent, &id, "cpu.max"),
        };
        assert!(
            quota == "100000" || quota == "100000 100000",
            "one core per 100 ms period: {quota}"
        );

        // Four loops want four cores. The kernel throttles the cgroup in any period in which
        // they got more than their one core; on a host busy with other work they may get less,
        // so a round that was never throttled is tried again (a bounded number of times).
        let sandbox = session.sandbox().clone();
        let spin =
            "p=; for i in 1 2 3 4; do (while :; do :; done) & p=\"$p $!\"; done; sleep 2; kill $p; wait";
        let mut throttled = 0;
        for _round in 0..5 {
            let before = sandbox.stats().await.expect("stats").cpu_usage;
            let t0 = Instant::now();
            let r = run(m, &session, spin).await;
            let wall = t0.elapsed();
            assert_eq!(r.status, ExecutionStatus::Succeeded, "{r:?}");
            let used = sandbox.stats().await.expect("stats").cpu_usage - before;
            // Unbounded, the loops take every core of the host; bounded, at most one core of
            // the wall time they ran in (plus a period of slack), however busy the host is.
            let ratio = used.as_secs_f64() / (wall + Duration::from_millis(100)).as_secs_f64();
            assert!(ratio <= 1.2, "the session used {ratio:.2} cores");
            throttled = throttled_periods(&parent, &id);
            if throttled > 0 {
                break;
            }
        }
        assert!(throttled > 0, "the quota never throttled the loops");
    })
    .await;
}

fn throttled_periods(parent: &str, sandbox: &str) -> u64 {
    cgroup_file(parent, sandbox, "cpu.stat")
        .lines()
        .find_map(|l| l.strip_prefix("nr_throttled "))
        .and_then(|n| n.trim().parse().ok())
        .expect("nr_throttled in cpu.stat")
}

/// A pool's own `resources.cpu` wins over the default; the manager's bound caps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pools_cpu_applies_and_the_bound_caps_it() {
    let config = ManagerConfig {
        max_cpu_millicores: Some(1500),
        ..fast_config()
    };
    with_manager_config("cpu-pool", config, |fx| async move {
        let (m, key) = (&fx.manager, &fx.key);
        let parent = fx.cfg.cgroup_parent.clone();
        let mut s = settings(2, 0, timed(300));
        s.cpu_millicores = Some(500);
        m.upsert_pool(key.clone(), s.clone()).await.expect("pool");
        let half = m.acquire(key, "half").await.expect("acquire");
        let v1 = CgroupManager::detect(&parent).expect("cgroups").version()
            == sandpool_cgroups::CgroupVersion::V1;
        let file = if v1 { "cpu.cfs_quota_us" } else { "cpu.max" };
        let q = cgroup_file(&parent, half.sandbox_id(), file);
        assert!(q.starts_with("50000"), "{q}");

        s.cpu_millicores = Some(4000);
        m.upsert_pool(key.clone(), s).await.expect("pool update");
        m.delete_session(key, "half").await.expect("delete");
        let big = m.acquire(key, "big").await.expect("acquire");
        let q = cgroup_file(&parent, big.sandbox_id(), file);
        assert!(q.starts_with("150000"), "capped at 1.5 cores: {q}");
    })
    .await;
}

/// The ceiling of all sandboxes goes on the runtime's cgroup parent, and can be lifted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ceiling_of_all_sandboxes_is_set_on_the_parent() {
    with_manager("cpu-ceiling", |fx| async move {
        let m = CgroupManager::detect(&fx.cfg.cgroup_parent).expect("cgroups");
        fx.runtime.set_cpu_ceiling(Some(1500)).expect("ceiling");
        assert_eq!(
            m.parent_cpu_quota().expect("read"),
            Some(CpuQuota::from_millicores(1500))
        );
        fx.runtime.set_cpu_ceiling(None).expect("lift");
        assert_eq!(m.parent_cpu_quota().expect("read"), None);
    })
    .await;
}

/// Beyond the bound of executions at once, the next one is refused (the server answers 429);
/// once one has ended, there is room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_executions_per_session_are_bounded() {
    let config = ManagerConfig {
        max_executions_per_session: 2,
        ..fast_config()
    };
    with_manager_config("exec-bound", config, |fx| async move {
        let (m, key) = (&fx.manager, &fx.key);
        m.upsert_pool(key.clone(), settings(2, 0, timed(300)))
            .await
            .expect("pool");
        let s = m.acquire(key, "busy").await.expect("acquire");
        let gate = "/tmp/gate";
        let wait = format!("while [ ! -e {gate} ]; do sleep 0.05; done");
        let a = m
            .execute(&s, ExecuteRequest::new(&wait))
            .await
            .expect("first");
        let b = m
            .execute(&s, ExecuteRequest::new(&wait))
            .await
            .expect("second");
        match m.execute(&s, ExecuteRequest::new("true")).await {
            Err(PoolError::TooManyExecutions { max: 2 }) => {}
            other => panic!("a third execution at once was not refused: {other:?}"),
        }
        // Through the files API: a file operation is not an execution.
        s.sandbox()
            .write_file(gate, &b""[..])
            .await
            .expect("open the gate");
        assert_eq!(
            a.wait().await.expect("a").status,
            ExecutionStatus::Succeeded
        );
        assert_eq!(
            b.wait().await.expect("b").status,
            ExecutionStatus::Succeeded
        );
        let r = run(m, &s, "echo room").await;
        assert_eq!(r.stdout, "room\n");
    })
    .await;
}

/// A fork bomb fills the session's pids limit; deleting the session still destroys it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_at_its_pids_limit_can_be_deleted() {
    with_manager("pids-delete", |fx| async move {
        let (m, key) = (&fx.manager, &fx.key);
        m.upsert_pool(key.clone(), settings(2, 0, timed(300)))
            .await
            .expect("pool");
        let s = m.acquire(key, "bomb").await.expect("acquire");
        let id = s.sandbox_id().to_owned();
        let sandbox = s.sandbox().clone();
        // Async: the bomb's shell never ends by itself.
        let bomb = m
            .execute(
                &s,
                ExecuteRequest {
                    timeout: Some(Duration::from_secs(600)),
                    ..ExecuteRequest::new("b() { b | b & }; b")
                },
            )
            .await
            .expect("bomb");
        eventually("the session reaches its pids limit", || async {
            sandbox
                .stats()
                .await
                .map(|st| st.pids >= 250)
                .unwrap_or(false)
        })
        .await;
        assert!(m.delete_session(key, "bomb").await.expect("delete"));
        let record = bomb.wait().await.expect("the bomb's record");
        assert_ne!(record.status, ExecutionStatus::Running);
        assert!(
            !fx.runtime.list_ids().contains(&id),
            "the sandbox is destroyed"
        );
        let cg = CgroupManager::detect(&fx.cfg.cgroup_parent).expect("cgroups");
        assert!(cg.open(&id).is_err(), "the cgroup is gone");
    })
    .await;
}

/// Of a session's finished executions only the newest `execution_history` stay, and none older
/// than the retention.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execution_records_are_bounded_by_count_and_age() {
    let config = ManagerConfig {
        execution_history: 3,
        prune_interval: Duration::from_millis(50),
        ..fast_config()
    };
    with_manager_config("history", config, |fx| async move {
        let (m, key) = (&fx.manager, &fx.key);
        m.upsert_pool(key.clone(), settings(2, 0, timed(300)))
            .await
            .expect("pool");
        let s = m.acquire(key, "chatty").await.expect("acquire");
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(run(m, &s, &format!("echo {i}")).await.id);
        }
        let stored = |id: String| {
            let m = m.clone();
            let key = key.clone();
            async move {
                m.execution(&key, "chatty", &id)
                    .await
                    .expect("get")
                    .is_some()
            }
        };
        eventually("the two oldest records are pruned", || async {
            !stored(ids[0].clone()).await && !stored(ids[1].clone()).await
        })
        .await;
        for id in &ids[2..] {
            assert!(stored(id.clone()).await, "{id} is among the newest three");
        }
    })
    .await;
    let config = ManagerConfig {
        execution_retention: Duration::from_millis(1),
        prune_interval: Duration::from_millis(50),
        ..fast_config()
    };
    with_manager_config("retention", config, |fx| async move {
        let (m, key) = (&fx.manager, &fx.key);
        m.upsert_pool(key.clone(), settings(2, 0, timed(300)))
            .await
            .expect("pool");
        let s = m.acquire(key, "old").await.expect("acquire");
        let id = run(m, &s, "echo once").await.id;
        eventually("the aged record is pruned", || async {
            m.execution(key, "old", &id).await.expect("get").is_none()
        })
        .await;
    })
    .await;
}

/// A command that ends while processes it started keep running is reported (they keep
/// running: a server started with `&` serves later commands), and a plain one is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftover_processes_are_reported() {
    with_manager("leftovers", |fx| async move {
        let (m, key) = (&fx.manager, &fx.key);
        m.upsert_pool(key.clone(), settings(2, 0, timed(300)))
            .await
            .expect("pool");
        let s = m.acquire(key, "bg").await.expect("acquire");
        let plain = run(m, &s, "echo plain").await;
        assert!(!plain.leftover_processes, "{plain:?}");
        let spin = run(
            m,
            &s,
            "(while :; do :; done) >/dev/null 2>&1 & echo started",
        )
        .await;
        assert_eq!(spin.status, ExecutionStatus::Succeeded);
        assert!(spin.leftover_processes, "{spin:?}");
        let still = run(m, &s, "pgrep -c -f 'while' || true").await;
        assert_ne!(
            still.stdout.trim(),
            "0",
            "the background loop keeps running"
        );
        let stored = m
            .execution(key, "bg", &spin.id)
            .await
            .expect("get")
            .expect("stored");
        assert!(stored.leftover_processes, "kept in the record");
    })
    .await;
}
