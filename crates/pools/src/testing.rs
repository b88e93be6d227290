//! The contract every [`SessionStore`] must meet, as a reusable test: the server runs it against
//! its SQLite and PostgreSQL stores, this crate against [`crate::MemoryStore`].
//!
//! It panics (with the failed expectation) on a violation. It only touches records of pools it
//! makes up, so it may share a store with other data, but `fail_running_executions` affects every
//! `Running` execution of the store: give it a store no live manager uses.

use std::sync::Arc;

use time::OffsetDateTime;

use crate::{ExecutionRecord, ExecutionStatus, PoolKey, SessionRecord, SessionStore};

/// A timestamp with millisecond precision (what every store must keep), `offset_ms` after a
/// fixed instant.
fn at(offset_ms: i64) -> OffsetDateTime {
    let base =
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    base + time::Duration::milliseconds(offset_ms)
}

fn session(pool: &PoolKey, identifier: &str, sandbox: &str, offset_ms: i64) -> SessionRecord {
    SessionRecord {
        pool: pool.clone(),
        identifier: identifier.into(),
        sandbox_id: sandbox.into(),
        created_at: at(offset_ms),
        last_accessed_at: at(offset_ms + 1_234),
        expires_at: at(offset_ms + 301_234),
        etag: format!("etag-{sandbox}"),
    }
}

fn execution(pool: &PoolKey, identifier: &str, id: &str) -> ExecutionRecord {
    let command = "echo 'héllo' \"world\" | tr a-z A-Z";
    ExecutionRecord::running(id, pool.clone(), identifier, command, at(5_000))
}

/// Runs the whole contract against `store`.
pub async fn store_contract_tests(store: Arc<dyn SessionStore>) {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let pool_a = PoolKey::new(
        "00000000-0000-0000-0000-000000000001",
        "Contract",
        &format!("a{run}"),
    );
    let pool_b = PoolKey::new(
        "00000000-0000-0000-0000-000000000001",
        "contract",
        &format!("b{run}"),
    );
    sessions_contract(store.as_ref(), &pool_a, &pool_b).await;
    executions_contract(store.as_ref(), &pool_a, &pool_b).await;
    prune_contract(store.as_ref(), &pool_a, &pool_b).await;
}

/// Old records go, and of each session only the newest `keep` finished ones stay; running
/// ones always stay. (Like `fail_running_executions`, pruning acts on the whole store; the
/// records of other data survive it unless they are as old as these or one of their sessions
/// holds more than 3 finished executions.)
async fn prune_contract(store: &dyn SessionStore, pool_a: &PoolKey, pool_b: &PoolKey) {
    let epoch = OffsetDateTime::UNIX_EPOCH;
    let finished = |pool: &PoolKey, identifier: &str, id: &str, start_ms: i64| {
        let mut e = execution(pool, identifier, id);
        e.status = ExecutionStatus::Succeeded;
        e.started_at = epoch + time::Duration::milliseconds(start_ms);
        e.finished_at = Some(e.started_at + time::Duration::milliseconds(1));
        e
    };
    let old = finished(pool_a, "prune-1", "old", 1_000);
    let mut running_old = execution(pool_a, "prune-1", "running-old");
    running_old.started_at = epoch;
    for e in [&old, &running_old] {
        assert!(store.insert_execution(e).await.expect("insert"));
    }
    // Five recent finished ones in one session, two in another.
    let recent = OffsetDateTime::now_utc() - epoch;
    let recent_ms = recent.whole_milliseconds() as i64;
    for i in 0..5 {
        let e = finished(pool_b, "prune-2", &format!("r{i}"), recent_ms + i);
        assert!(store.insert_execution(&e).await.expect("insert"));
    }
    for i in 0..2 {
        let e = finished(pool_b, "prune-3", &format!("r{i}"), recent_ms + i);
        assert!(store.insert_execution(&e).await.expect("insert"));
    }
    let cutoff = epoch + time::Duration::days(1);
    let gone = store.prune_executions(cutoff, 3).await.expect("prune");
    assert!(gone >= 3, "the old one and two of the five went: {gone}");
    let exists = |pool: &PoolKey, identifier: &str, id: &str| {
        let (pool, identifier, id) = (pool.clone(), identifier.to_owned(), id.to_owned());
        async move {
            store
                .get_execution(&pool, &identifier, &id)
                .await
                .expect("get")
                .is_some()
        }
    };
    assert!(!exists(pool_a, "prune-1", "old").await, "aged out");
    assert!(
        exists(pool_a, "prune-1", "running-old").await,
        "a running execution is never pruned"
    );
    for (id, kept) in [
        ("r0", false),
        ("r1", false),
        ("r2", true),
        ("r3", true),
        ("r4", true),
    ] {
        assert_eq!(exists(pool_b, "prune-2", id).await, kept, "prune-2 {id}");
    }
    for id in ["r0", "r1"] {
        assert!(
            exists(pool_b, "prune-3", id).await,
            "prune-3 {id} is within the count"
        );
    }
    store
        .delete_session(pool_a, "prune-1")
        .await
        .expect("clean up");
    for (pool, identifier) in [(pool_b, "prune-2"), (pool_b, "prune-3")] {
        store
            .delete_session(pool, identifier)
            .await
            .expect("clean up");
    }
}

async fn ours(store: &dyn SessionStore, pools: &[&PoolKey]) -> Vec<SessionRecord> {
    let mut list: Vec<_> = store
        .list_sessions()
        .await
        .expect("list_sessions")
        .into_iter()
        .filter(|s| pools.contains(&&s.pool))
        .collect();
    list.sort_by(|a, b| (&a.pool, &a.identifier).cmp(&(&b.pool, &b.identifier)));
    list
}

async fn sessions_contract(store: &dyn SessionStore, pool_a: &PoolKey, pool_b: &PoolKey) {
    assert!(
        ours(store, &[pool_a, pool_b]).await.is_empty(),
        "fresh pools have no sessions"
    );

    // Identifiers may hold any of the characters the API allows.
    let odd = "id-`~!@#$%^&*()_+={}[]|:;\"'<>,.?/";
    let s1 = session(pool_a, "user-1", "sbx-1", 0);
    let s2 = session(pool_a, odd, "sbx-2", 10);
    let s3 = session(pool_b, "user-1", "sbx-3", 20);
    for s in [&s1, &s2, &s3] {
        store
            .upsert_session(s)
            .await
            .expect("upsert_session (insert)");
    }
    let mut want = vec![s1.clone(), s2.clone(), s3.clone()];
    want.sort_by(|a, b| (&a.pool, &a.identifier).cmp(&(&b.pool, &b.identifier)));
    assert_eq!(
        ours(store, &[pool_a, pool_b]).await,
        want,
        "list returns every field as stored"
    );

    // Upsert replaces, keyed by (pool, identifier): same identifier in another pool untouched.
    let mut s1b = s1.clone();
    s1b.sandbox_id = "sbx-1b".into();
    s1b.last_accessed_at = at(99_999);
    s1b.expires_at = at(399_999);
    s1b.etag = "etag-new".into();
    store
        .upsert_session(&s1b)
        .await
        .expect("upsert_session (update)");
    let list = ours(store, &[pool_a]).await;
    assert_eq!(
        list.len(),
        2,
        "upsert of an existing session does not add one"
    );
    assert!(list.contains(&s1b), "upsert replaced every field");
    assert_eq!(ours(store, &[pool_b]).await, vec![s3.clone()]);

    assert!(store
        .delete_session(pool_a, "user-1")
        .await
        .expect("delete_session"));
    assert!(
        !store
            .delete_session(pool_a, "user-1")
            .await
            .expect("delete_session again"),
        "deleting a missing session reports false"
    );
    assert!(!store
        .delete_session(pool_a, "never")
        .await
        .expect("delete_session unknown"));
    assert_eq!(ours(store, &[pool_a]).await, vec![s2.clone()]);
    assert_eq!(
        ours(store, &[pool_b]).await,
        vec![s3.clone()],
        "other pool untouched"
    );

    for (p, i) in [(pool_a, odd), (pool_b, "user-1")] {
        assert!(store.delete_session(p, i).await.expect("cleanup delete"));
    }
    assert!(ours(store, &[pool_a, pool_b]).await.is_empty());
}

/// The command stored for execution `id` of `user-1` in `pool`.
async fn command_of(store: &dyn SessionStore, pool: &PoolKey, id: &str) -> Option<String> {
    store
        .get_execution(pool, "user-1", id)
        .await
        .expect("get")
        .map(|e| e.command)
}

async fn executions_contract(store: &dyn SessionStore, pool_a: &PoolKey, pool_b: &PoolKey) {
    let e1 = execution(pool_a, "user-1", "exec-1");
    assert!(store.insert_execution(&e1).await.expect("insert_execution"));
    assert_eq!(
        store
            .get_execution(pool_a, "user-1", "exec-1")
            .await
            .expect("get_execution"),
        Some(e1.clone()),
        "a stored execution reads back with every field"
    );

    // Duplicate ids are refused without changing the record.
    let mut dup = e1.clone();
    dup.command = "other".into();
    assert!(
        !store
            .insert_execution(&dup)
            .await
            .expect("insert duplicate"),
        "duplicate id refused"
    );
    assert_eq!(
        command_of(store, pool_a, "exec-1").await,
        Some(e1.command.clone())
    );

    // The key is (pool, identifier, id): the same id elsewhere is another execution.
    let other_session = execution(pool_a, "user-2", "exec-1");
    let other_pool = execution(pool_b, "user-1", "exec-1");
    assert!(store
        .insert_execution(&other_session)
        .await
        .expect("insert, other identifier"));
    assert!(store
        .insert_execution(&other_pool)
        .await
        .expect("insert, other pool"));
    assert_eq!(
        store
            .get_execution(pool_a, "user-3", "exec-1")
            .await
            .expect("get"),
        None
    );
    assert_eq!(
        store
            .get_execution(pool_a, "user-1", "exec-404")
            .await
            .expect("get"),
        None
    );

    // A batch: new ones land with every field, an existing one is kept as it was.
    let mut batch_new = execution(pool_b, "user-9", "batch-1");
    batch_new.status = ExecutionStatus::Succeeded;
    batch_new.exit_code = Some(3);
    batch_new.stdout = "out\n".into();
    batch_new.stderr = "ërr".into();
    batch_new.finished_at = Some(at(6_000));
    batch_new.duration_ms = Some(1_000);
    batch_new.leftover_processes = true;
    let batch_other = execution(pool_b, "user-9", "batch-2");
    let mut batch_dup = e1.clone();
    batch_dup.command = "replaced?".into();
    store
        .insert_executions(&[batch_new.clone(), batch_dup, batch_other.clone()])
        .await
        .expect("insert_executions");
    for want in [&batch_new, &batch_other] {
        assert_eq!(
            store
                .get_execution(&want.pool, &want.identifier, &want.id)
                .await
                .expect("get"),
            Some(want.clone()),
            "a batch-inserted execution reads back with every field"
        );
    }
    assert_eq!(
        command_of(store, pool_a, "exec-1").await,
        Some(e1.command.clone()),
        "a batch does not replace an existing execution"
    );
    store
        .insert_executions(&[])
        .await
        .expect("an empty batch is fine");
    store
        .delete_session(pool_b, "user-9")
        .await
        .expect("delete_session");

    // A finished execution keeps its output, flags, code, timings and type.
    let mut done = e1.clone();
    done.asynchronous = true;
    done.status = ExecutionStatus::Succeeded;
    done.exit_code = Some(3);
    done.stdout = "line 1\nüñí©ødé ✓\n".into();
    done.stderr = "warn\n".repeat(1000);
    done.stdout_truncated = true;
    done.finished_at = Some(at(6_789));
    done.duration_ms = Some(1_789);
    assert!(store
        .update_execution(&done)
        .await
        .expect("update_execution"));
    assert_eq!(
        store
            .get_execution(pool_a, "user-1", "exec-1")
            .await
            .expect("get"),
        Some(done.clone())
    );
    let missing = execution(pool_a, "user-1", "exec-missing");
    assert!(
        !store
            .update_execution(&missing)
            .await
            .expect("update missing"),
        "update of a missing execution reports false"
    );
    assert_eq!(
        store
            .get_execution(pool_a, "user-1", "exec-missing")
            .await
            .expect("get"),
        None,
        "update does not insert"
    );

    let mut timed_out = execution(pool_b, "user-1", "exec-2");
    timed_out.status = ExecutionStatus::TimedOut;
    timed_out.error = Some("ExecutionTimedOut".into());
    timed_out.finished_at = Some(at(7_000));
    assert!(store.insert_execution(&timed_out).await.expect("insert"));

    // Startup: every Running one fails with the reason; finished ones are untouched.
    let n = store
        .fail_running_executions("server restarted")
        .await
        .expect("fail_running_executions");
    assert!(n >= 2, "both Running executions counted (got {n})");
    for (p, i) in [(pool_a, "user-2"), (pool_b, "user-1")] {
        let e = store
            .get_execution(p, i, "exec-1")
            .await
            .expect("get")
            .expect("still stored");
        assert_eq!(e.status, ExecutionStatus::Failed);
        assert_eq!(e.error.as_deref(), Some("server restarted"));
        assert!(
            e.finished_at.is_some(),
            "a failed execution has an end time"
        );
        assert_eq!(e.command, e1.command);
    }
    assert_eq!(
        store
            .get_execution(pool_a, "user-1", "exec-1")
            .await
            .expect("get"),
        Some(done)
    );
    assert_eq!(
        store
            .get_execution(pool_b, "user-1", "exec-2")
            .await
            .expect("get"),
        Some(timed_out)
    );
    assert_eq!(
        store
            .fail_running_executions("again")
            .await
            .expect("fail again"),
        0,
        "nothing is Running any more"
    );

    // A session's executions go with it; other sessions' stay.
    store
        .delete_session(pool_a, "user-1")
        .await
        .expect("delete_session");
    assert_eq!(
        store
            .get_execution(pool_a, "user-1", "exec-1")
            .await
            .expect("get"),
        None,
        "executions of a deleted session are gone"
    );
    assert!(store
        .get_execution(pool_a, "user-2", "exec-1")
        .await
        .expect("get")
        .is_some());
    assert!(store
        .get_execution(pool_b, "user-1", "exec-2")
        .await
        .expect("get")
        .is_some());
}
