//! The pool manager against real sandboxes (run as root).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use sandpool_pools::{
    ExecuteRequest, ExecutionEvent, ExecutionStatus, Lifecycle, ManagerConfig, PoolError,
    SessionStore,
};
use sandpool_sandbox::SandboxSpec;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_sandbox_is_bound_first_and_refilled() {
    with_manager("ready", |fx| async move {
        let (m, key) = (&fx.manager, &fx.key);
        m.upsert_pool(key.clone(), settings(5, 2, timed(300)))
            .await
            .expect("pool");
        wait_ready(m, key, 2).await;
        let ready_ids: HashSet<String> = fx.runtime.list_ids().into_iter().collect();
        assert_eq!(ready_ids.len(), 2);

        let s = m.acquire(key, "user-1").await.expect("acquire");
        assert!(
            ready_ids.contains(s.sandbox_id()),
            "the session got one of the ready sandboxes"
        );
        let metrics = m.metrics();
        assert_eq!(metrics.allocations_from("ready"), 1);
        assert_eq!(metrics.allocations_from("on_demand"), 0);
        assert_eq!(metrics.allocation_latency.count, 1);
        assert_eq!(metrics.pool(key).map(|p| p.allocated), Some(1));

        // The refill tops the ready set back up in the background.
        wait_ready(m, key, 2).await;
        assert_eq!(fx.runtime.list_ids().len(), 3);

        // A second request for the identifier lands in the same session, allocating nothing.
        let again = m.acquire(key, "user-1").await.expect("acquire again");
        assert_eq!(again.sandbox_id(), s.sandbox_id());
        assert_eq!(m.metrics().allocations_from("ready"), 1);

        let info = m.get_session(key, "user-1").await.expect("session info");
        assert_eq!(info.sandbox_id, s.sandbox_id());
        assert!(info.expires_at > info.last_accessed_at);
        let stored = fx.store.list_sessions().await.expect("store");
        assert_eq!(
            stored.len(),
            1,
            "the bound session is stored, ready sandboxes are not"
        );
        assert_eq!(stored[0].sandbox_id, s.sandbox_id());
        assert!(
            m.get_session(key, "nobody").await.is_none(),
            "get_session never allocates"
        );
        assert_eq!(m.list_sessions(key).await.len(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refill_waits_for_the_first_command_of_a_ready_session() {
    // A hold far longer than the test: only the end of the first command can release it.
    let config = ManagerConfig {
        refill_hold: Duration::from_secs(3600),
        ..fast_config()
    };
    with_manager_config("refill-hold", config, |fx| async move {
        let (m, key) = (&fx.manager, &fx.key);
        m.upsert_pool(key.clone(), settings(5, 2, timed(300)))
            .await
            .expect("pool");
        wait_ready(m, key, 2).await;

        let s = m.acquire(key, "first").await.expect("acquire");
        assert_eq!(m.metrics().allocations_from("ready"), 1);
        // Give a refill that ignored the hold ample time to show up.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            ready_count(m, key),
            1,
            "the refill waits for the first command"
        );
        assert_eq!(fx.runtime.list_ids().len(), 2, "no replacement is starting");

        let rec = run(m, &s, "echo hi").await;
        assert_eq!(rec.status, ExecutionStatus::Succeeded);
        assert_eq!(rec.stdout, "hi\n");
        wait_ready(m, key, 2).await;
        assert_eq!(fx.runtime.list_ids().len(), 3);

        // Both ready sandboxes taken back to back: the first commands release the hold again.
        let a = m.acquire(key, "a").await.expect("acquire a");
        let b = m.acquire(key, "b").await.expect("acquire b");
        for s in [&a, &b] {
            assert_eq!(run(m, s, "true").await.status, ExecutionStatus::Succeeded);
        }
        wait_ready(m, key, 2).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_persist_in_a_session_and_stay_private() {
    with_manager("files", |fx| async move {
        let (m, key) = (&fx.manager, &fx.key);
        m.upsert_pool(key.clone(), settings(5, 0, timed(300)))
            .await
            .expect("pool");
        let a = m.acquire(key, "alice").await.expect("acquire alice");
        assert_eq!(
            m.metrics().allocations_from("on_demand"),
            1,
            "no ready sandbox: started on demand"
        );

        let w = run(m, &a, "pwd; echo secret > note.txt").await;
        assert_eq!(w.status, ExecutionStatus::Succeeded, "{w:?}");
        assert_eq!(w.exit_code, Some(0));
        assert_eq!(w.stdout, "/mnt/data\n", "commands run in the files root");

        // Streamed output arrives as chunks before the final record.
        let a2 = m.acquire(key, "alice").await.expect("acquire alice again");
        let mut h = m
            .execute(
                &a2,
                ExecuteRequest::new("cat /mnt/data/note.txt; echo oops >&2; exit 3"),
            )
            .await
            .expect("execute");
        let (mut out, mut err, mut last) = (Vec::new(), Vec::new(), None);
        while let Some(ev) = h.next().await {
            match ev {
                ExecutionEvent::Stdout(b) => out.extend_from_slice(&b),
                ExecutionEvent::Stderr(b) => err.extend_from_slice(&b),
                ExecutionEvent::Finished(r) => last = Some(r),
            }
        }
        let r = last.expect("a final record");
        assert_eq!(out, b"secret\n");
        assert_eq!(err, b"oops\n");
        assert_eq!(
            (r.status, r.exit_code),
            (ExecutionStatus::Succeeded, Some(3))
        );
        assert_eq!(r.stdout, "secret\n");
        assert_eq!(r.stderr, "oops\n");
        assert_eq!(
            m.execution(key, "alice", h.id()).await.expect("get"),
            Some(r)
        );

        let b = m.acquire(key, "bob").await.expect("acquire bob");
        assert_ne!(a.sandbox_id(), b.sandbox_id());
        let r = run(
            m,
            &b,
            "ls -A /mnt/data; test -e /mnt/data/note.txt; echo $?",
        )
        .await;
        assert_eq!(
            r.stdout, "1\n",
            "another identifier does not see alice's files"
        );
        assert_eq!(m.metrics().executions_with("succeeded"), 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_session_is_destroyed_after_cooldown() {
    with_manager("cooldown", |fx| async move {
        let (m, key) = (&fx.manager, &fx.key);
        m.upsert_pool(key.clone(), settings(5, 0, timed(1)))
            .await
            .expect("pool");
        let s = m.acquire(key, "idle").await.expect("acquire");
        let first = s.sandbox_id().to_owned();

        // A running execution keeps the session alive past its cooldown: had the reaper
        // destroyed the sandbox, this command could not finish.
        let r = run(m, &s, "echo kept > f; sleep 3; cat f").await;
        assert_eq!(
            (r.status, r.stdout.as_str()),
            (ExecutionStatus::Succeeded, "kept\n"),
            "{r:?}"
        );

        // `allocated` counts a session until it is destroyed and forgotten.
        eventually("the idle session is reaped", || async {
            allocated(m, key) == 0
        })
        .await;
        assert!(m.get_session(key, "idle").await.is_none());
        assert!(
            !fx.runtime.list_ids().contains(&first),
            "its sandbox is destroyed"
        );
        assert!(
            fx.store.list_sessions().await.expect("store").is_empty(),
            "and forgotten by the store"
        );
        assert!(
            matches!(
                m.execute(&s, ExecuteRequest::new("true")).await,
                Err(PoolError::SessionNotFound(_))
            ),
            "a stale handle cannot run commands"
        );

        let again = m.acquire(key, "idle").await.expect("acquire again");
        assert_ne!(again.sandbox_id(), first, "a fresh sandbox");
        let r = run(m, &again, "test -e f; echo $?").await;
        assert_eq!(r.stdout, "1\n", "with none of the old files");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_acquires_get_one_session() {
    with_manager("concurrent", |fx| async move {
        let (m, key) = (&fx.manager, &fx.key);
        m.upsert_pool(key.clone(), settings(100, 0, timed(300)))
            .await
            .expect("pool");
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (m, key) = (m.clone(), key.clone());
            tasks.push(tokio::spawn(async move { m.acquire(&key, "shared").await }));
        }
        let mut ids = HashSet::new();
        for t in tasks {
            let s = t.await.expect("task").expect("acquire");
            ids.insert(s.sandbox_id().to_owned());
        }
        assert_eq!(ids.len(), 1, "every request got the same session");
        assert_eq!(
            fx.runtime.list_ids().len(),
            1,
            "exactly one sandbox was started"
        );
        assert_eq!(m.metrics().allocations_from("on_demand"), 1);
        assert_eq!(m.list_sessions(key).await.len(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_limit_refuses_until_a_session_ends() {
    with_manager("capacity", |fx| async move {
        let (m, key) = (&fx.manager, &fx.key);
        m.upsert_pool(key.clone(), settings(2, 1, timed(300)))
            .await
            .expect("pool");
        m.acquire(key, "one").await.expect("one");
        m.acquire(key, "two").await.expect("two");
        match m.acquire(key, "three").await {
            Err(PoolError::AtCapacity { max, retry_after }) => {
                assert_eq!(max, 2);
                assert!(retry_after >= Duration::from_secs(1));
            }
            other => panic!("expected AtCapacity, got {other:?}"),
        }
        assert_eq!(m.metrics().allocations_rejected, 1);
        // At the limit no ready sandbox is kept: none could be bound.
        wait_ready(m, key, 0).await;
        eventually("only the two sessions' sandboxes exist", || async {
            fx.runtime.list_ids().len() == 2
        })
        .await;

        assert!(m.delete_session(key, "one").await.expect("delete"));
        assert!(!m.delete_session(key, "one").await.expect("delete again"));
        let three = m
            .acquire(key, "three")
            .await
            .expect("room again after a session ended");
        let r = run(m, &three, "echo hi").await;
        assert_eq!(r.stdout, "hi\n");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_execution_record_goes_from_running_to_succeeded() {
    with_manager("async", |fx| async move {
        let (m, key) = (&fx.manager, &fx.key);
        m.upsert_pool(key.clone(), settings(2, 0, timed(300)))
            .await
            .expect("pool");
        let s = m.acquire(key, "poller").await.expect("acquire");
        let mut req = ExecuteRequest::new("sleep 1; echo finished");
        req.id = Some("op-123".into());
        let h = m.execute(&s, req.clone()).await.expect("execute");
        assert_eq!(h.id(), "op-123");
        drop(h); // the caller goes away, as an asynchronous request does

        let rec = m
            .execution(key, "poller", "op-123")
            .await
            .expect("get")
            .expect("recorded");
        assert_eq!(rec.status, ExecutionStatus::Running);
        assert_eq!(rec.command, "sleep 1; echo finished");
        assert!(matches!(
            m.execute(&s, req).await,
            Err(PoolError::ExecutionExists(_))
        ));

        eventually("the execution finishes", || async {
            m.execution(key, "poller", "op-123")
                .await
                .ok()
                .flatten()
                .map(|r| r.status)
                != Some(ExecutionStatus::Running)
        })
        .await;
        let rec = m
            .execution(key, "poller", "op-123")
            .await
            .expect("get")
            .expect("recorded");
        assert_eq!(rec.status, ExecutionStatus::Succeeded);
        assert_eq!(rec.exit_code, Some(0));
        assert_eq!(rec.stdout, "finished\n");
        assert!(rec.finished_at.is_some_and(|f| f >= rec.started_at));
        assert!(rec.duration_ms.is_some());
        assert_eq!(
            m.execution(key, "someone-else", "op-123")
                .await
                .expect("get"),
            None
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_execution_is_readable_while_running_and_stored_once_ended() {
    with_manager("syncrec", |fx| async move {
        let (m, key) = (&fx.manager, &fx.key);
        m.upsert_pool(key.clone(), settings(2, 0, timed(300)))
            .await
            .expect("pool");
        let s = m.acquire(key, "waiter").await.expect("acquire");
        let mut req = ExecuteRequest::new("sleep 1; echo done");
        req.id = Some("sync-1".into());
        let h = m.execute(&s, req.clone()).await.expect("execute");

        // Running: not in the store yet, but readable and its id taken.
        let rec = m
            .execution(key, "waiter", "sync-1")
            .await
            .expect("get")
            .expect("visible while running");
        assert_eq!(rec.status, ExecutionStatus::Running);
        assert!(!rec.asynchronous);
        assert!(matches!(
            m.execute(&s, req.clone()).await,
            Err(PoolError::ExecutionExists(_))
        ));
        let as_async = ExecuteRequest {
            asynchronous: true,
            ..req.clone()
        };
        assert!(matches!(
            m.execute(&s, as_async).await,
            Err(PoolError::ExecutionExists(_))
        ));

        let done = h.wait().await.expect("result");
        assert_eq!(done.status, ExecutionStatus::Succeeded);
        // Right after the answer: readable, final, whether or not the write has landed.
        let rec = m
            .execution(key, "waiter", "sync-1")
            .await
            .expect("get")
            .expect("visible after the answer");
        assert_eq!(rec.status, ExecutionStatus::Succeeded);
        assert_eq!(rec.stdout, "done\n");

        eventually("the result is stored", || async {
            fx.store
                .get_execution(key, "waiter", "sync-1")
                .await
                .ok()
                .flatten()
                .is_some_and(|r| r.status == ExecutionStatus::Succeeded)
        })
        .await;
        // Once stored, the id stays taken: the store is asked.
        assert!(matches!(
            m.execute(&s, req).await,
            Err(PoolError::ExecutionExists(_))
        ));
        // A refused request does not take its id.
        let mut bad = ExecuteRequest::new("echo x");
        bad.id = Some("sync-2".into());
        bad.timeout = Some(Duration::ZERO);
        assert!(m.execute(&s, bad.clone()).await.is_err());
        bad.timeout = None;
        let ok = m.execute(&s, bad).await.expect("id free").wait().await;
        assert_eq!(ok.expect("result").stdout, "x\n");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_session_s_idle_clock_reaches_the_store() {
    let config = ManagerConfig {
        persist_touch_interval: Duration::from_millis(100),
        ..fast_config()
    };
    with_manager_config("clock", config, |fx| async move {
        let (m, key) = (&fx.manager, &fx.key);
        m.upsert_pool(key.clone(), settings(2, 0, timed(300)))
            .await
            .expect("pool");
        let s = m.acquire(key, "ticking").await.expect("acquire");
        run(m, &s, "true").await;
        let stored = |store: std::sync::Arc<sandpool_pools::MemoryStore>| async move {
            store
                .list_sessions()
                .await
                .expect("list")
                .into_iter()
                .find(|r| r.identifier == "ticking")
                .map(|r| r.last_accessed_at)
        };
        let first = stored(fx.store.clone()).await.expect("stored at creation");
        tokio::time::sleep(Duration::from_millis(200)).await;
        // A request after the interval: the clock is written (by the saver, after the request).
        m.acquire(key, "ticking").await.expect("acquire again");
        eventually("the newer clock is stored", || {
            let store = fx.store.clone();
            async move { stored(store).await.is_some_and(|t| t > first) }
        })
        .await;
        // A deleted session is not written back by a late clock.
        tokio::time::sleep(Duration::from_millis(150)).await;
        m.acquire(key, "ticking").await.expect("acquire");
        assert!(m.delete_session(key, "ticking").await.expect("delete"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(stored(fx.store.clone()).await, None);
    })
    .await;
}

/// A store whose batched inserts wait until the test lets them through.
struct GatedStore {
    inner: std::sync::Arc<sandpool_pools::MemoryStore>,
    gate: tokio::sync::Semaphore,
}

#[async_trait::async_trait]
impl SessionStore for GatedStore {
    async fn upsert_session(
        &self,
        s: &sandpool_pools::SessionRecord,
    ) -> sandpool_pools::StoreResult<()> {
        self.inner.upsert_session(s).await
    }
    async fn delete_session(
        &self,
        pool: &sandpool_pools::PoolKey,
        identifier: &str,
    ) -> sandpool_pools::StoreResult<bool> {
        self.inner.delete_session(pool, identifier).await
    }
    async fn list_sessions(
        &self,
    ) -> sandpool_pools::StoreResult<Vec<sandpool_pools::SessionRecord>> {
        self.inner.list_sessions().await
    }
    async fn insert_execution(
        &self,
        e: &sandpool_pools::ExecutionRecord,
    ) -> sandpool_pools::StoreResult<bool> {
        self.inner.insert_execution(e).await
    }
    async fn insert_executions(
        &self,
        batch: &[sandpool_pools::ExecutionRecord],
    ) -> sandpool_pools::StoreResult<()> {
        self.gate.acquire().await.expect("gate").forget();
        self.inner.insert_executions(batch).await
    }
    async fn update_execution(
        &self,
        e: &sandpool_pools::ExecutionRecord,
    ) -> sandpool_pools::StoreResult<bool> {
        self.inner.update_execution(e).await
    }
    async fn get_execution(
        &self,
        pool: &sandpool_pools::PoolKey,
        identifier: &str,
        id: &str,
    ) -> sandpool_pools::StoreResult<Option<sandpool_pools::ExecutionRecord>> {
        self.inner.get_execution(pool, identifier, id).await
    }
    async fn fail_running_executions(&self, reason: &str) -> sandpool_pools::StoreResult<u64> {
        self.inner.fail_running_executions(reason).await
    }
    async fn prune_executions(
        &self,
        ended_before: time::OffsetDateTime,
        keep: u32,
    ) -> sandpool_pools::StoreResult<u64> {
        self.inner.prune_executions(ended_before, keep).await
    }
}

/// A synchronous result is answered only once it is stored (so an answered result survives a
/// crash): behind a stalled store the answers wait, readable from memory meanwhile; beyond
/// `max_unsaved_results` waiting, an execution stores its own result (one statement) and is
/// answered without the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synchronous_results_are_stored_before_they_are_answered() {
    let config = ManagerConfig {
        max_unsaved_results: 2,
        ..fast_config()
    };
    let gated = std::sync::Arc::new(std::sync::OnceLock::<std::sync::Arc<GatedStore>>::new());
    let handle = gated.clone();
    let wrap = move |inner| {
        let store = std::sync::Arc::new(GatedStore {
            inner,
            gate: tokio::sync::Semaphore::new(0),
        });
        let _ = handle.set(store.clone());
        store as std::sync::Arc<dyn SessionStore>
    };
    with_manager_over("stall", config, wrap, move |fx| async move {
        let (m, key) = (&fx.manager, &fx.key);
        m.upsert_pool(key.clone(), settings(2, 0, timed(300)))
            .await
            .expect("pool");
        let s = m.acquire(key, "slow-store").await.expect("acquire");
        let stored = |id: &'static str| {
            let store = fx.store.clone();
            let key = key.clone();
            async move { store.get_execution(&key, "slow-store", id).await.unwrap() }
        };
        let mut waiting = Vec::new();
        for id in ["q1", "q2"] {
            let mut req = ExecuteRequest::new(format!("echo {id}"));
            req.id = Some(id.into());
            let h = m.execute(&s, req).await.expect("execute");
            waiting.push(tokio::spawn(h.wait()));
        }
        let ended = |id: &'static str| async move {
            m.execution(key, "slow-store", id)
                .await
                .unwrap()
                .is_some_and(|r| r.status != ExecutionStatus::Running)
        };
        eventually("both commands ended", || async {
            ended("q1").await && ended("q2").await
        })
        .await;
        // Ended, readable from memory, not stored: not answered either.
        tokio::time::sleep(Duration::from_millis(100)).await;
        for (h, id) in waiting.iter().zip(["q1", "q2"]) {
            assert!(!h.is_finished(), "{id} was answered before it was stored");
            assert_eq!(stored(id).await, None);
        }
        let q1 = m.execution(key, "slow-store", "q1").await.unwrap();
        assert_eq!(q1.map(|r| r.stdout), Some("q1\n".to_string()));
        // The third finds two waiting and stores its own result before answering.
        let mut req = ExecuteRequest::new("echo q3");
        req.id = Some("q3".into());
        let done = m.execute(&s, req).await.expect("execute").wait().await;
        assert_eq!(done.expect("answered").stdout, "q3\n");
        assert!(stored("q3").await.is_some());
        // Once the store moves again, the waiting ones are stored, then answered.
        gated.get().expect("store").gate.add_permits(16);
        for (h, id) in waiting.into_iter().zip(["q1", "q2"]) {
            let r = h.await.expect("task").expect("answered");
            assert_eq!(r.stdout, format!("{id}\n"));
            assert!(stored(id).await.is_some(), "{id} answered, not stored");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_the_command_and_its_children() {
    with_manager("timeout", |fx| async move {
        let (m, key) = (&fx.manager, &fx.key);
        m.upsert_pool(key.clone(), settings(2, 0, timed(300))).await.expect("pool");
        let s = m.acquire(key, "slow").await.expect("acquire");
        let mut req = ExecuteRequest::new("sleep 300 & sleep 301 & echo started; wait");
        req.timeout = Some(Duration::from_secs(1));
        let r = m.execute(&s, req).await.expect("execute").wait().await.expect("result");
        assert_eq!(r.status, ExecutionStatus::TimedOut, "{r:?}");
        assert!(r.error.as_deref().is_some_and(|e| e.contains("ExecutionTimedOut")));
        assert_eq!(r.stdout, "started\n", "output before the timeout is kept");
        assert_eq!(m.metrics().executions_with("timed_out"), 1);

        let r = run(
            m,
            &s,
            "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done | grep -c 'slee[p] 30' || true",
        )
        .await;
        assert_eq!(r.stdout, "0\n", "no sleeper survived the timeout");

        let mut bad = ExecuteRequest::new("true");
        bad.timeout = Some(Duration::from_secs(3601));
        assert!(matches!(m.execute(&s, bad).await, Err(PoolError::InvalidRequest(_))));
        assert!(matches!(
            m.execute(&s, ExecuteRequest::new("  ")).await,
            Err(PoolError::InvalidRequest(_))
        ));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_capped_with_truncation_flags() {
    with_manager("cap", |fx| async move {
        let (m, key) = (&fx.manager, &fx.key);
        m.upsert_pool(key.clone(), settings(2, 0, timed(300)))
            .await
            .expect("pool");
        let s = m.acquire(key, "loud").await.expect("acquire");
        let mut req = ExecuteRequest::new("head -c 100000 /dev/zero | tr '\\0' a; echo short >&2");
        req.output_limit = Some(1000);
        let r = m
            .execute(&s, req)
            .await
            .expect("execute")
            .wait()
            .await
            .expect("result");
        assert_eq!(r.status, ExecutionStatus::Succeeded);
        assert_eq!(r.stdout.len(), 1000);
        assert!(r.stdout_truncated);
        assert!(!r.stderr_truncated);
        assert_eq!(r.stderr, "short\n");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_pool_resizes_the_ready_set_live() {
    with_manager("resize", |fx| async move {
        let (m, key) = (&fx.manager, &fx.key);
        m.upsert_pool(key.clone(), settings(5, 1, timed(300)))
            .await
            .expect("pool");
        wait_ready(m, key, 1).await;
        m.upsert_pool(key.clone(), settings(5, 3, timed(300)))
            .await
            .expect("grow");
        wait_ready(m, key, 3).await;
        assert_eq!(fx.runtime.list_ids().len(), 3);

        m.upsert_pool(key.clone(), settings(5, 0, timed(300)))
            .await
            .expect("shrink");
        assert_eq!(ready_count(m, key), 0, "shrinking applies at once");
        assert!(
            fx.runtime.list_ids().is_empty(),
            "the surplus sandboxes are destroyed"
        );

        // Changing the sandbox shape replaces ready sandboxes instead of handing out old ones.
        m.upsert_pool(key.clone(), settings(5, 1, timed(300)))
            .await
            .expect("grow again");
        wait_ready(m, key, 1).await;
        let old: Vec<String> = fx.runtime.list_ids();
        let mut bigger = settings(5, 1, timed(300));
        bigger.memory_bytes = Some(300 << 20);
        m.upsert_pool(key.clone(), bigger)
            .await
            .expect("new limits");
        eventually("a ready sandbox with the new limits", || async {
            let ids = fx.runtime.list_ids();
            ready_count(m, key) == 1 && ids.len() == 1 && ids != old
        })
        .await;

        let mut invalid = settings(2, 3, timed(300));
        assert!(matches!(
            m.upsert_pool(key.clone(), invalid.clone()).await,
            Err(PoolError::InvalidRequest(_))
        ));
        invalid.max_concurrent_sessions = 0;
        invalid.ready_session_instances = 0;
        assert!(matches!(
            m.upsert_pool(key.clone(), invalid).await,
            Err(PoolError::InvalidRequest(_))
        ));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_pool_destroys_everything() {
    with_manager("remove", |fx| async move {
        let (m, key) = (&fx.manager, &fx.key);
        m.upsert_pool(key.clone(), settings(5, 2, timed(300)))
            .await
            .expect("pool");
        let a = m.acquire(key, "a").await.expect("a");
        m.acquire(key, "b").await.expect("b");
        wait_ready(m, key, 2).await;
        assert_eq!(fx.runtime.list_ids().len(), 4);

        assert!(m.remove_pool(key).await);
        assert!(
            fx.runtime.list_ids().is_empty(),
            "sessions and ready sandboxes destroyed"
        );
        assert!(fx.store.list_sessions().await.expect("store").is_empty());
        assert!(matches!(
            m.acquire(key, "a").await,
            Err(PoolError::PoolNotFound(_))
        ));
        assert!(matches!(
            m.execute(&a, ExecuteRequest::new("true")).await,
            Err(PoolError::SessionNotFound(_))
        ));
        assert!(m.metrics().pool(key).is_none());
        assert!(!m.remove_pool(key).await);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_container_exit_session_ends_with_its_init() {
    with_manager("exit", |fx| async move {
        let (m, key) = (&fx.manager, &fx.key);
        let lifecycle = Lifecycle::OnContainerExit {
            max_alive: Duration::from_secs(3600),
        };
        m.upsert_pool(key.clone(), settings(2, 0, lifecycle))
            .await
            .expect("pool");
        let s = m.acquire(key, "main").await.expect("acquire");
        let id = s.sandbox_id().to_owned();
        // The init dies (as a container's main process exiting would).
        // SAFETY: kill(2) of the init of a sandbox this test started.
        assert_eq!(
            unsafe { libc::kill(s.sandbox().init_pid(), libc::SIGKILL) },
            0
        );
        eventually("the session whose init died is removed", || async {
            allocated(m, key) == 0
        })
        .await;
        assert!(m.get_session(key, "main").await.is_none());
        assert!(!fx.runtime.list_ids().contains(&id));
        assert!(fx.store.list_sessions().await.expect("store").is_empty());

        // max_alive bounds a session however busy it is.
        let short = Lifecycle::OnContainerExit {
            max_alive: Duration::from_secs(1),
        };
        m.upsert_pool(key.clone(), settings(2, 0, short))
            .await
            .expect("pool");
        m.acquire(key, "brief").await.expect("acquire");
        eventually("the session past max_alive is removed", || async {
            m.get_session(key, "brief").await.is_none()
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_reattaches_sessions_after_a_restart() {
    with_manager("recover", |fx| async move {
        let (m, key) = (fx.manager.clone(), fx.key.clone());
        m.upsert_pool(key.clone(), settings(5, 1, timed(300)))
            .await
            .expect("pool");
        let s = m.acquire(&key, "survivor").await.expect("acquire");
        let kept = s.sandbox_id().to_owned();
        let r = run(&m, &s, "echo still-here > state.txt").await;
        assert_eq!(r.status, ExecutionStatus::Succeeded);
        // A sandbox nobody refers to (as a ready one of a dead process is).
        let orphan = fx
            .runtime
            .start(SandboxSpec::default())
            .await
            .expect("orphan");
        let orphan = orphan.id().to_owned();

        // What a crash mid-execution leaves: a Running record, and a stored session whose
        // sandbox no longer exists.
        let mut stuck = r.clone();
        stuck.id = "stuck".into();
        stuck.status = ExecutionStatus::Running;
        stuck.finished_at = None;
        fx.store.insert_execution(&stuck).await.expect("insert");
        let mut ghost = m.get_session(&key, "survivor").await.expect("info");
        ghost.identifier = "ghost".into();
        ghost.sandbox_id = "s00000000000000000000000000000000".into();
        fx.store.upsert_session(&ghost).await.expect("upsert");

        // The process goes away: its background work stops, its sandboxes and store stay.
        m.shutdown().await;
        drop(s);
        drop(m);
        let Fixture {
            cfg,
            runtime,
            store,
            manager,
            ..
        } = fx;
        drop(manager);
        drop(runtime);

        let runtime = sandpool_sandbox::Runtime::new(cfg.clone())
            .await
            .expect("runtime again");
        let m2 =
            sandpool_pools::PoolManager::with_config(runtime.clone(), store.clone(), fast_config());
        m2.upsert_pool(key.clone(), settings(5, 0, timed(300)))
            .await
            .expect("pool again");
        let report = m2.recover().await.expect("recover");
        assert_eq!(report.reattached, 1);
        assert_eq!(report.dropped, 1, "the ghost session is forgotten");
        assert_eq!(report.executions_failed, 1);
        assert_eq!(
            runtime.list_ids(),
            vec![kept.clone()],
            "the orphan ready sandbox was swept"
        );
        assert!(!cfg.state_dir.join(&orphan).exists());

        let s = m2
            .acquire(&key, "survivor")
            .await
            .expect("acquire after restart");
        assert_eq!(s.sandbox_id(), kept, "the same sandbox");
        let r = run(&m2, &s, "cat state.txt").await;
        assert_eq!(r.stdout, "still-here\n", "its files survived");
        let stuck = m2
            .execution(&key, "survivor", "stuck")
            .await
            .expect("get")
            .expect("stored");
        assert_eq!(stuck.status, ExecutionStatus::Failed);
        assert!(stuck.error.is_some());
        assert!(m2.get_session(&key, "ghost").await.is_none());
        let stored: Vec<String> = store
            .list_sessions()
            .await
            .expect("store")
            .into_iter()
            .map(|r| r.identifier)
            .collect();
        assert_eq!(stored, vec!["survivor".to_owned()]);
        m2.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_start_failure_is_reported_and_leaves_nothing() {
    with_manager("startfail", |fx| async move {
        let (m, key) = (&fx.manager, &fx.key);
        // This runtime has no egress network configured, so every start of this pool fails.
        let mut egress = settings(3, 2, timed(300));
        egress.egress = true;
        m.upsert_pool(key.clone(), egress).await.expect("pool");
        match m.acquire(key, "net").await {
            Err(PoolError::SandboxStart(reason)) => assert!(reason.contains("egress"), "{reason}"),
            other => panic!("expected SandboxStart, got {other:?}"),
        }
        assert!(m.get_session(key, "net").await.is_none());
        assert_eq!(allocated(m, key), 0, "the failed allocation holds no slot");
        assert!(fx.runtime.list_ids().is_empty(), "no half-started sandbox");
        assert_eq!(
            ready_count(m, key),
            0,
            "the refill keeps failing, and backs off"
        );
        assert!(fx.store.list_sessions().await.expect("store").is_empty());

        // Fixing the settings applies live: the ready set fills.
        m.upsert_pool(key.clone(), settings(3, 2, timed(300)))
            .await
            .expect("fixed");
        wait_ready(m, key, 2).await;
        let s = m.acquire(key, "net").await.expect("acquire after the fix");
        assert_eq!(run(m, &s, "echo ok").await.stdout, "ok\n");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_memory_limit_applies_to_its_sessions() {
    with_manager("memory", |fx| async move {
        let (m, key) = (&fx.manager, &fx.key);
        let mut small = settings(2, 0, timed(300));
        small.memory_bytes = Some(64 << 20);
        m.upsert_pool(key.clone(), small).await.expect("pool");
        let s = m.acquire(key, "hog").await.expect("acquire");
        // tail keeps the last 150 MB of its input in memory: more than the session may use.
        let r = run(
            m,
            &s,
            "head -c 200000000 /dev/zero | tail -c 150000000 > /dev/null",
        )
        .await;
        assert_eq!(r.status, ExecutionStatus::Failed, "{r:?}");
        assert!(
            r.error.as_deref().is_some_and(|e| e.contains("memory")),
            "{r:?}"
        );
        assert_eq!(m.metrics().executions_with("failed"), 1);
        // The session itself survives its command's death.
        assert_eq!(run(m, &s, "echo alive").await.stdout, "alive\n");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_limit_holds_under_concurrent_first_requests() {
    with_manager("limit", |fx| async move {
        let (m, key) = (&fx.manager, &fx.key);
        m.upsert_pool(key.clone(), settings(3, 0, timed(300)))
            .await
            .expect("pool");
        let mut tasks = Vec::new();
        for i in 0..20 {
            let (m, key) = (m.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                m.acquire(&key, &format!("user-{i}")).await
            }));
        }
        let (mut ok, mut refused) = (0, 0);
        for t in tasks {
            match t.await.expect("task") {
                Ok(_) => ok += 1,
                Err(PoolError::AtCapacity { .. }) => refused += 1,
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert_eq!((ok, refused), (3, 17));
        assert_eq!(fx.runtime.list_ids().len(), 3);
        assert_eq!(m.list_sessions(key).await.len(), 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_racing_acquire_keeps_store_and_sessions_consistent() {
    with_manager("race", |fx| async move {
        let (m, key) = (&fx.manager, &fx.key);
        m.upsert_pool(key.clone(), settings(3, 1, timed(300)))
            .await
            .expect("pool");
        for round in 0..8 {
            m.acquire(key, "flip").await.expect("acquire");
            let (m1, m2, k1, k2) = (m.clone(), m.clone(), key.clone(), key.clone());
            let del = tokio::spawn(async move { m1.delete_session(&k1, "flip").await });
            let acq = tokio::spawn(async move { m2.acquire(&k2, "flip").await });
            del.await.expect("task").expect("delete");
            acq.await.expect("task").expect("acquire");
            // Whichever came first, what is stored is what is live.
            let live = m.get_session(key, "flip").await.map(|s| s.sandbox_id);
            let stored: Vec<String> = fx
                .store
                .list_sessions()
                .await
                .expect("store")
                .into_iter()
                .map(|r| r.sandbox_id)
                .collect();
            assert_eq!(
                stored,
                live.into_iter().collect::<Vec<_>>(),
                "round {round}"
            );
            m.delete_session(key, "flip").await.expect("cleanup delete");
        }
    })
    .await;
}
