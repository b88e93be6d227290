//! Test support: an in-memory [`CommandStore`] and the contract every store must meet.
//!
//! The server runs [`store_contract_tests`] against its SQLite and PostgreSQL stores.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::model::{
    now_millis, CommandResult, CommandState, CommandStore, StoreError, StoreFuture,
};

/// A [`CommandStore`] in a mutex-guarded map. Keeps nothing across restarts; for tests and
/// for embedding without persistence.
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<HashMap<String, CommandResult>>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Every record, in no particular order.
    pub fn all(&self) -> Vec<CommandResult> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CommandResult>> {
        // A panic while holding the lock cannot leave a half-written record: each operation
        // is one map call.
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl CommandStore for MemoryStore {
    fn insert<'a>(&'a self, result: &'a CommandResult) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut map = self.lock();
            if map.contains_key(&result.id) {
                return Err(StoreError::Duplicate(result.id.clone()));
            }
            map.insert(result.id.clone(), result.clone());
            Ok(())
        })
    }

    fn update<'a>(&'a self, result: &'a CommandResult) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            match self.lock().get_mut(&result.id) {
                Some(slot) => {
                    *slot = result.clone();
                    Ok(())
                }
                None => Err(StoreError::NotFound(result.id.clone())),
            }
        })
    }

    fn get<'a>(&'a self, cluster: &'a str, id: &'a str) -> StoreFuture<'a, Option<CommandResult>> {
        Box::pin(async move {
            Ok(self
                .lock()
                .get(id)
                .filter(|r| r.cluster == cluster)
                .cloned())
        })
    }

    fn fail_unfinished<'a>(&'a self, reason: &'a str, at: SystemTime) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let mut n = 0;
            for r in self.lock().values_mut() {
                if !r.state.is_finished() {
                    r.state = CommandState::Failed;
                    r.reason = Some(reason.to_string());
                    r.finished_at = Some(at);
                    n += 1;
                }
            }
            Ok(n)
        })
    }

    fn purge_older_than<'a>(&'a self, cutoff: SystemTime) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let mut map = self.lock();
            let before = map.len();
            map.retain(|_, r| {
                !(r.state.is_finished() && r.finished_at.is_some_and(|f| f < cutoff))
            });
            Ok((before - map.len()) as u64)
        })
    }
}

fn days(n: u64) -> Duration {
    Duration::from_secs(n * 24 * 3600)
}

/// The behaviour every [`CommandStore`] must have. Run it against an EMPTY store (it checks
/// exact counts of `fail_unfinished` and `purge_older_than`). Panics on the first violation.
pub async fn store_contract_tests(store: &dyn CommandStore) {
    let cluster = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg1/providers/Microsoft.ContainerService/managedClusters/c1";
    let other = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg1/providers/Microsoft.ContainerService/managedClusters/c2";
    let t0 = now_millis();
    let id = |tag: &str| format!("{tag}{}", crate::new_job_id());

    // insert / get round trip, cluster scoping, missing ids.
    let a_id = id("a");
    let mut a = CommandResult::queued(&a_id, cluster, t0 - days(10));
    store.insert(&a).await.expect("insert a queued record");
    assert_eq!(
        store.get(cluster, &a_id).await.expect("get"),
        Some(a.clone())
    );
    assert_eq!(
        store.get(other, &a_id).await.expect("get other cluster"),
        None,
        "a record must not be visible under another cluster"
    );
    assert_eq!(
        store.get(cluster, "nosuchid").await.expect("get missing"),
        None
    );
    match store.insert(&a).await {
        Err(StoreError::Duplicate(_)) => {}
        other => panic!("inserting an existing id must be Duplicate, got {other:?}"),
    }

    // updates replace every field; times keep millisecond precision.
    a.state = CommandState::Running;
    a.started_at = Some(t0 - days(10) + Duration::from_millis(1234));
    store.update(&a).await.expect("update to running");
    assert_eq!(
        store.get(cluster, &a_id).await.expect("get"),
        Some(a.clone())
    );

    a.state = CommandState::Succeeded;
    a.exit_code = Some(3);
    a.finished_at = Some(t0 - days(10) + Duration::from_millis(5678));
    a.logs =
        "line one\nünïcödé ✓ \"quotes\" 'single' \\ back\n\ttab".to_string() + &"x".repeat(1 << 20);
    store.update(&a).await.expect("update to succeeded");
    assert_eq!(
        store.get(cluster, &a_id).await.expect("get"),
        Some(a.clone()),
        "a finished record (1 MiB of logs, exit code) must round-trip exactly"
    );

    let ghost = CommandResult::queued(&id("ghost"), cluster, t0);
    match store.update(&ghost).await {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("updating a missing id must be NotFound, got {other:?}"),
    }

    // fail_unfinished touches Queued and Running only, and keeps the other fields.
    let mut b = CommandResult::queued(&id("b"), cluster, t0);
    b.state = CommandState::Running;
    b.started_at = Some(t0 + Duration::from_millis(1));
    b.logs = "partial".to_string();
    store.insert(&b).await.expect("insert running b");
    let c = CommandResult::queued(&id("c"), other, t0);
    store.insert(&c).await.expect("insert queued c");
    let mut d = CommandResult::queued(&id("d"), cluster, t0 - days(3));
    d.state = CommandState::Failed;
    d.reason = Some("bad context".to_string());
    d.finished_at = Some(t0 - days(1));
    store.insert(&d).await.expect("insert failed d");

    let at = t0 + Duration::from_millis(42);
    let n = store
        .fail_unfinished("server restarted", at)
        .await
        .expect("fail_unfinished");
    assert_eq!(
        n, 2,
        "exactly the Queued and the Running record must be failed"
    );
    let mut b_failed = b.clone();
    b_failed.state = CommandState::Failed;
    b_failed.reason = Some("server restarted".to_string());
    b_failed.finished_at = Some(at);
    assert_eq!(
        store.get(cluster, &b.id).await.expect("get b"),
        Some(b_failed)
    );
    let c_now = store
        .get(other, &c.id)
        .await
        .expect("get c")
        .expect("c exists");
    assert_eq!(c_now.state, CommandState::Failed);
    assert_eq!(c_now.reason.as_deref(), Some("server restarted"));
    assert_eq!(c_now.started_at, None);
    assert_eq!(
        store.get(cluster, &a_id).await.expect("get a"),
        Some(a.clone())
    );
    assert_eq!(
        store.get(cluster, &d.id).await.expect("get d"),
        Some(d.clone())
    );
    assert_eq!(
        store
            .fail_unfinished("again", at)
            .await
            .expect("fail_unfinished"),
        0,
        "nothing is left unfinished"
    );

    // purge removes finished records older than the cutoff, never unfinished ones.
    let mut e = CommandResult::queued(&id("e"), cluster, t0 - days(30));
    store.insert(&e).await.expect("insert old queued e");
    let purged = store
        .purge_older_than(t0 - days(2))
        .await
        .expect("purge_older_than");
    assert_eq!(
        purged, 1,
        "only a (finished 10 days ago) is older than the cutoff"
    );
    assert_eq!(store.get(cluster, &a_id).await.expect("get a"), None);
    assert!(store.get(cluster, &d.id).await.expect("get d").is_some());
    assert_eq!(
        store.get(cluster, &e.id).await.expect("get e"),
        Some(e.clone())
    );

    e.state = CommandState::Failed;
    e.reason = Some("timed out".to_string());
    e.finished_at = Some(t0 - days(29));
    store.update(&e).await.expect("finish e");
    assert_eq!(
        store.purge_older_than(t0 - days(2)).await.expect("purge"),
        1,
        "e is finished and old now"
    );
    assert_eq!(store.get(cluster, &e.id).await.expect("get e"), None);
}
