//! The pool manager: ready sets, allocation, capacity, lifecycle reaper, recovery.
//!
//! All bookkeeping lives in one `std::sync::Mutex<State>` that is never held across an `.await`:
//! decisions are taken under the lock, slow work (sandbox start/destroy, store writes) outside it,
//! and results are re-checked under the lock (the pool may have been removed or re-created, the
//! session deleted) before they are applied.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;

use crate::metrics::{Metrics, PoolGauges, PoolMetrics, Source};
use crate::sb;
use crate::{
    Lifecycle, PoolError, PoolKey, PoolSettings, SessionInfo, SessionRecord, SessionStore,
};

/// Tunables of the manager; the defaults are what the server uses.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// How often the reaper looks for expired sessions.
    pub reaper_interval: Duration,
    /// How often ready sandboxes and `OnContainerExit` sessions are pinged.
    pub health_check_interval: Duration,
    /// A ping that takes longer counts as a dead sandbox.
    pub ping_timeout: Duration,
    pub default_timeout: Duration,
    pub max_timeout: Duration,
    /// Per stream (stdout, stderr).
    pub default_output_limit: usize,
    pub max_output_limit: usize,
    /// Working directory of executions (the files API's root).
    pub default_cwd: String,
    /// `last_accessed_at` is written to the store at most this often per session: a restart may
    /// lose up to this much of a session's idle clock, in exchange for no store write per request.
    pub persist_touch_interval: Duration,
    /// First delay after a failed ready-sandbox start; doubles per failure up to a minute.
    pub refill_retry: Duration,
    /// After a ready sandbox is taken, its replacement waits until the new session's first
    /// execution has ended, or this long at most: on a host with few cores a sandbox start
    /// running beside the first command slows that command, the one a client waits for.
    pub refill_hold: Duration,
    /// Most synchronous results waiting for the saver to store them (each is answered once
    /// its batch is stored). Beyond it an execution stores its own result with one statement
    /// before answering, so results never pile up in memory behind a slow store.
    pub max_unsaved_results: usize,
    /// CPU bound (millicores) of a session whose pool names none: without one a session could
    /// take every core of the host.
    pub default_cpu_millicores: Option<u64>,
    /// No session gets more cpu than this, whatever its pool says (a pool stored before the
    /// server's bound was lowered); `None`: no bound.
    pub max_cpu_millicores: Option<u64>,
    /// Executions running at once in one session; beyond it [`PoolError::TooManyExecutions`].
    pub max_executions_per_session: u32,
    /// Finished execution records older than this are deleted.
    pub execution_retention: Duration,
    /// Finished execution records kept per session, newest first.
    pub execution_history: u32,
    /// How often records beyond those two bounds are deleted.
    pub prune_interval: Duration,
    pub hostname: String,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            reaper_interval: Duration::from_millis(500),
            health_check_interval: Duration::from_secs(5),
            ping_timeout: Duration::from_secs(5),
            default_timeout: Duration::from_secs(60),
            max_timeout: Duration::from_secs(3600),
            default_output_limit: 1 << 20,
            max_output_limit: 16 << 20,
            default_cwd: "/mnt/data".into(),
            persist_touch_interval: Duration::from_secs(1),
            refill_retry: Duration::from_millis(500),
            refill_hold: Duration::from_millis(50),
            max_unsaved_results: 1024,
            default_cpu_millicores: Some(1000),
            max_cpu_millicores: None,
            max_executions_per_session: 16,
            execution_retention: Duration::from_secs(7 * 24 * 3600),
            execution_history: 1000,
            prune_interval: Duration::from_secs(60),
            hostname: "sandbox".into(),
        }
    }
}

/// What [`PoolManager::recover`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoverReport {
    /// Stored sessions whose sandbox is alive and is bound again.
    pub reattached: u64,
    /// Stored sessions removed: their sandbox is gone or their pool is not registered.
    pub dropped: u64,
    /// Executions that were `Running` and are now `Failed`.
    pub executions_failed: u64,
}

pub(crate) struct SessionEntry {
    pub(crate) pool: PoolKey,
    pub(crate) identifier: String,
    pub(crate) sandbox: sb::Sandbox,
    pub(crate) created_at: OffsetDateTime,
    /// Why the session ended with its sandbox's death, once it has.
    pub(crate) died: std::sync::OnceLock<String>,
}

/// A session bound to an identifier. Cheap to clone. Its sandbox serves the file operations;
/// commands go through [`PoolManager::execute`] so that they are recorded and keep it alive.
#[derive(Clone)]
pub struct Session {
    pub(crate) entry: Arc<SessionEntry>,
}

impl Session {
    pub fn pool(&self) -> &PoolKey {
        &self.entry.pool
    }

    pub fn identifier(&self) -> &str {
        &self.entry.identifier
    }

    pub fn sandbox(&self) -> &sb::Sandbox {
        &self.entry.sandbox
    }

    pub fn sandbox_id(&self) -> &str {
        self.entry.sandbox.id()
    }

    pub fn created_at(&self) -> OffsetDateTime {
        self.entry.created_at
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("pool", &self.entry.pool)
            .field("identifier", &self.entry.identifier)
            .field("sandbox", &self.entry.sandbox.id())
            .finish()
    }
}

type AllocationResult = Option<Result<Session, PoolError>>;

enum Slot {
    /// The first request for the identifier is allocating; later ones wait for its outcome.
    Pending {
        token: u64,
        rx: watch::Receiver<AllocationResult>,
    },
    Live(LiveSession),
    /// The session is being destroyed; a request for the identifier waits for the end (so the
    /// old session's store delete cannot remove a new session's record), then allocates anew.
    Ending {
        token: u64,
        rx: watch::Receiver<()>,
    },
}

impl Slot {
    fn is_pending(&self, token: u64) -> bool {
        matches!(self, Slot::Pending { token: t, .. } if *t == token)
    }
}

struct LiveSession {
    entry: Arc<SessionEntry>,
    last_accessed: OffsetDateTime,
    persisted_at: OffsetDateTime,
    etag: String,
    in_flight: u32,
    /// Bound from the ready set and its first execution has not ended: the pool's refill waits.
    holds_refill: bool,
}

impl LiveSession {
    fn new(entry: Arc<SessionEntry>, last_accessed: OffsetDateTime, etag: String) -> Self {
        LiveSession {
            entry,
            last_accessed,
            persisted_at: last_accessed,
            etag,
            in_flight: 0,
            holds_refill: false,
        }
    }

    fn expires_at(&self, lifecycle: &Lifecycle) -> OffsetDateTime {
        match lifecycle {
            Lifecycle::Timed { cooldown } => self.last_accessed + *cooldown,
            Lifecycle::OnContainerExit { max_alive } => self.entry.created_at + *max_alive,
        }
    }

    fn record(&self, lifecycle: &Lifecycle) -> SessionRecord {
        SessionRecord {
            pool: self.entry.pool.clone(),
            identifier: self.entry.identifier.clone(),
            sandbox_id: self.entry.sandbox.id().to_owned(),
            created_at: self.entry.created_at,
            last_accessed_at: self.last_accessed,
            expires_at: self.expires_at(lifecycle),
            etag: self.etag.clone(),
        }
    }

    /// Marks a request; returns the record to persist when the stored one is stale enough.
    fn touch(
        &mut self,
        now: OffsetDateTime,
        lifecycle: &Lifecycle,
        persist_every: Duration,
    ) -> Option<SessionRecord> {
        self.last_accessed = self.last_accessed.max(now);
        if elapsed(self.persisted_at, now) < persist_every {
            return None;
        }
        self.persisted_at = now;
        self.etag = new_etag();
        Some(self.record(lifecycle))
    }

    fn is_expired(&self, lifecycle: &Lifecycle, now: OffsetDateTime) -> bool {
        match lifecycle {
            Lifecycle::Timed { cooldown } => {
                self.in_flight == 0 && elapsed(self.last_accessed, now) >= *cooldown
            }
            Lifecycle::OnContainerExit { max_alive } => {
                elapsed(self.entry.created_at, now) >= *max_alive
            }
        }
    }
}

/// A session being destroyed; waiters on its slot wake when this is dropped.
struct Ending {
    entry: Arc<SessionEntry>,
    token: u64,
    _tx: watch::Sender<()>,
}

struct Pool {
    /// Distinguishes this pool from a removed one re-created under the same key.
    generation: u64,
    /// Changes when settings that shape a sandbox change: ready sandboxes of an older version
    /// are not handed out.
    spec_version: u64,
    settings: PoolSettings,
    ready: VecDeque<sb::Sandbox>,
    starting: usize,
    sessions: HashMap<String, Slot>,
    /// Starts and allocations in flight for this pool; `remove_pool` waits for them.
    tracker: TaskTracker,
    start_failures: u32,
    retry_at: Option<Instant>,
    /// The refill waits until then, or until the session that took a ready sandbox has run its
    /// first command (see [`ManagerConfig::refill_hold`]).
    refill_hold_until: Option<Instant>,
    /// Identifiers whose session ended because its sandbox died, with why and when: the next
    /// request for one answers [`PoolError::SandboxDied`] (once), so the client learns that
    /// its files are gone instead of silently getting an empty sandbox.
    died: HashMap<String, (Instant, String)>,
}

impl Pool {
    /// Ready sandboxes beyond what could ever be bound under the session limit are waste.
    fn ready_target(&self) -> usize {
        let max = self.settings.max_concurrent_sessions as usize;
        (self.settings.ready_session_instances as usize)
            .min(max.saturating_sub(self.sessions.len()))
    }

    fn live(&self) -> impl Iterator<Item = &LiveSession> {
        self.sessions.values().filter_map(|s| match s {
            Slot::Live(l) => Some(l),
            Slot::Pending { .. } | Slot::Ending { .. } => None,
        })
    }

    /// Marks the live session of `identifier` as ending (when it holds `entry`, if given).
    /// The returned ticket is finished by [`Inner::retire`].
    fn begin_end(
        &mut self,
        identifier: &str,
        entry: Option<&Arc<SessionEntry>>,
        token: u64,
    ) -> Option<Ending> {
        let slot = self.sessions.get_mut(identifier)?;
        match slot {
            Slot::Live(l) if entry.is_none_or(|e| Arc::ptr_eq(e, &l.entry)) => {}
            _ => return None,
        }
        let (tx, rx) = watch::channel(());
        match std::mem::replace(slot, Slot::Ending { token, rx }) {
            Slot::Live(l) => Some(Ending {
                entry: l.entry,
                token,
                _tx: tx,
            }),
            // Checked just above.
            other => {
                *slot = other;
                None
            }
        }
    }

    /// When a session will be free at the earliest (bounded to a sensible client wait).
    fn retry_after(&self, now: OffsetDateTime) -> Duration {
        let lifecycle = self.settings.lifecycle;
        self.live()
            .map(|l| elapsed(now, l.expires_at(&lifecycle)))
            .min()
            .unwrap_or(Duration::ZERO)
            .clamp(Duration::from_secs(1), Duration::from_secs(60))
    }

    fn live_mut(&mut self, entry: &Arc<SessionEntry>) -> Option<&mut LiveSession> {
        match self.sessions.get_mut(&entry.identifier) {
            Some(Slot::Live(l)) if Arc::ptr_eq(&l.entry, entry) => Some(l),
            _ => None,
        }
    }
}

#[derive(Default)]
struct State {
    pools: HashMap<PoolKey, Pool>,
    /// Sandboxes this process started or attached and has not destroyed: a recovery sweep keeps
    /// them.
    known: HashSet<String>,
    closed: bool,
}

/// Wake-ups shared with the background loops; held apart from [`Inner`] so that a loop waiting
/// for work does not keep the manager alive.
#[derive(Default)]
struct Signals {
    refill: Notify,
    cancel: CancellationToken,
}

pub(crate) struct Inner {
    pub(crate) runtime: sb::Runtime,
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) config: ManagerConfig,
    pub(crate) metrics: Metrics,
    /// Synchronous executions whose record is not in the store yet: running, or finished and
    /// being written. Reads and the execution-id check look here first.
    pub(crate) unsaved: Mutex<HashMap<crate::exec::ExecKey, crate::ExecutionRecord>>,
    /// Queue of [`crate::exec::save_loop`].
    pub(crate) saver: tokio::sync::mpsc::UnboundedSender<crate::exec::SaveJob>,
    /// Results in that queue, not yet stored.
    pub(crate) queued_results: AtomicU64,
    state: Mutex<State>,
    signals: Arc<Signals>,
    next_id: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.signals.cancel.cancel();
    }
}

/// The pool manager. Cheap to clone; background work stops when the last clone is dropped or on
/// [`PoolManager::shutdown`]. Must be created inside a tokio runtime.
#[derive(Clone)]
pub struct PoolManager {
    pub(crate) inner: Arc<Inner>,
}

struct Allocation {
    key: PoolKey,
    identifier: String,
    generation: u64,
    token: u64,
    settings: PoolSettings,
    ready: Option<sb::Sandbox>,
    started: Instant,
    tx: watch::Sender<AllocationResult>,
    _tracked: TaskTrackerToken,
}

/// What `acquire` decided under the lock.
enum Step {
    Existing(Session, Option<SessionRecord>),
    Wait(watch::Receiver<AllocationResult>),
    AfterEnd(watch::Receiver<()>),
}

struct RefillJob {
    key: PoolKey,
    generation: u64,
    spec_version: u64,
    settings: PoolSettings,
    _tracked: TaskTrackerToken,
}

/// How long the notice that a session's sandbox died waits for the identifier's next request.
const DIED_NOTICE_KEPT: Duration = Duration::from_secs(3600);

pub(crate) fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Time from `from` to `to`, zero when `to` is earlier.
pub(crate) fn elapsed(from: OffsetDateTime, to: OffsetDateTime) -> Duration {
    Duration::try_from(to - from).unwrap_or(Duration::ZERO)
}

fn new_etag() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl PoolManager {
    pub fn new(runtime: sb::Runtime, store: Arc<dyn SessionStore>) -> Self {
        Self::with_config(runtime, store, ManagerConfig::default())
    }

    pub fn with_config(
        runtime: sb::Runtime,
        store: Arc<dyn SessionStore>,
        config: ManagerConfig,
    ) -> Self {
        let signals = Arc::new(Signals::default());
        let (saver, save_jobs) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(crate::exec::save_loop(store.clone(), save_jobs));
        let inner = Arc::new(Inner {
            runtime,
            store,
            saver,
            queued_results: AtomicU64::new(0),
            config,
            metrics: Metrics::default(),
            unsaved: Mutex::default(),
            state: Mutex::new(State::default()),
            signals: signals.clone(),
            next_id: AtomicU64::new(1),
        });
        tokio::spawn(reaper_loop(Arc::downgrade(&inner), signals.clone()));
        tokio::spawn(crate::retention::prune_loop(
            Arc::downgrade(&inner),
            signals.cancel.clone(),
        ));
        tokio::spawn(refill_loop(Arc::downgrade(&inner), signals));
        PoolManager { inner }
    }

    /// Creates the pool or updates its settings live: the ready set grows or shrinks to the new
    /// target, and ready sandboxes started with a different egress or limits are replaced.
    /// Bound sessions keep their sandbox.
    pub async fn upsert_pool(&self, key: PoolKey, settings: PoolSettings) -> Result<(), PoolError> {
        settings.validate()?;
        let stale = {
            let mut st = self.inner.lock();
            if st.closed {
                return Err(PoolError::ShuttingDown);
            }
            let generation = self.inner.next_id();
            let pool = st.pools.entry(key).or_insert_with(|| Pool {
                generation,
                spec_version: generation,
                settings: settings.clone(),
                ready: VecDeque::new(),
                starting: 0,
                sessions: HashMap::new(),
                tracker: TaskTracker::new(),
                start_failures: 0,
                retry_at: None,
                refill_hold_until: None,
                died: HashMap::new(),
            });
            let mut stale = Vec::new();
            if !pool.settings.same_sandbox_spec(&settings) {
                pool.spec_version = generation;
                stale.extend(pool.ready.drain(..));
            }
            pool.settings = settings;
            // A corrected setting deserves a fresh attempt rather than the old backoff.
            pool.start_failures = 0;
            pool.retry_at = None;
            let target = pool.ready_target();
            while pool.ready.len() > target {
                stale.extend(pool.ready.pop_back());
            }
            stale
        };
        self.inner.signals.refill.notify_one();
        for sandbox in stale {
            self.inner.destroy(&sandbox).await;
        }
        Ok(())
    }

    /// Destroys the pool's sessions (removing them from the store) and its ready sandboxes.
    /// Returns whether the pool existed.
    /// Whether the pool is registered (what every session operation needs).
    pub fn has_pool(&self, key: &PoolKey) -> bool {
        self.inner.lock().pools.contains_key(key)
    }

    pub async fn remove_pool(&self, key: &PoolKey) -> bool {
        let Some(pool) = self.inner.lock().pools.remove(key) else {
            return false;
        };
        // In-flight starts and allocations find the pool gone and destroy what they made.
        pool.tracker.close();
        pool.tracker.wait().await;
        for sandbox in &pool.ready {
            self.inner.destroy(sandbox).await;
        }
        for slot in pool.sessions.into_values() {
            match slot {
                Slot::Live(l) => self.inner.end_session(&l.entry).await,
                // Destroyed by whoever is ending it: wait for that.
                Slot::Ending { mut rx, .. } => {
                    let _ = rx.changed().await;
                }
                Slot::Pending { .. } => {}
            }
        }
        true
    }

    /// The session of `identifier`, created on first use: from the ready set when it has a
    /// sandbox (no start on the request path), else started on demand while the pool is under
    /// `max_concurrent_sessions`. Concurrent first requests share one allocation.
    pub async fn acquire(&self, key: &PoolKey, identifier: &str) -> Result<Session, PoolError> {
        loop {
            match self.acquire_step(key, identifier)? {
                Step::Existing(session, persist) => {
                    if let Some(record) = persist {
                        self.inner.persist_soon(&session.entry, record);
                    }
                    return Ok(session);
                }
                Step::AfterEnd(mut rx) => {
                    // Resolves when the ending session's ticket is dropped.
                    let _ = rx.changed().await;
                }
                Step::Wait(mut rx) => {
                    let outcome = match rx.wait_for(Option::is_some).await {
                        Ok(v) => v.clone(),
                        Err(_) => None,
                    };
                    return outcome.unwrap_or_else(|| {
                        Err(PoolError::Sandbox("the allocation was abandoned".into()))
                    });
                }
            }
        }
    }

    /// What to do for `acquire`, decided under the lock.
    fn acquire_step(&self, key: &PoolKey, identifier: &str) -> Result<Step, PoolError> {
        let started = Instant::now();
        {
            let mut st = self.inner.lock();
            if st.closed {
                return Err(PoolError::ShuttingDown);
            }
            let token = self.inner.next_id();
            let pool = st
                .pools
                .get_mut(key)
                .ok_or_else(|| PoolError::PoolNotFound(key.clone()))?;
            let lifecycle = pool.settings.lifecycle;
            match pool.sessions.get_mut(identifier) {
                Some(Slot::Live(live)) => {
                    let persist =
                        live.touch(now(), &lifecycle, self.inner.config.persist_touch_interval);
                    let session = Session {
                        entry: live.entry.clone(),
                    };
                    Ok(Step::Existing(session, persist))
                }
                Some(Slot::Pending { rx, .. }) => Ok(Step::Wait(rx.clone())),
                Some(Slot::Ending { rx, .. }) => Ok(Step::AfterEnd(rx.clone())),
                None => {
                    if let Some((_, why)) = pool.died.remove(identifier) {
                        return Err(PoolError::SandboxDied(why));
                    }
                    let max = pool.settings.max_concurrent_sessions;
                    if pool.sessions.len() >= max as usize {
                        self.inner.metrics.rejected();
                        return Err(PoolError::AtCapacity {
                            max,
                            retry_after: pool.retry_after(now()),
                        });
                    }
                    let (tx, rx) = watch::channel(None);
                    pool.sessions.insert(
                        identifier.to_owned(),
                        Slot::Pending {
                            token,
                            rx: rx.clone(),
                        },
                    );
                    let ready = pool.ready.pop_front();
                    if ready.is_some() {
                        pool.refill_hold_until =
                            Some(Instant::now() + self.inner.config.refill_hold);
                    }
                    let job = Allocation {
                        key: key.clone(),
                        identifier: identifier.to_owned(),
                        generation: pool.generation,
                        token,
                        settings: pool.settings.clone(),
                        ready,
                        started,
                        tx,
                        _tracked: pool.tracker.token(),
                    };
                    // Spawned so that the allocation completes (and its slot resolves) even if
                    // this request is dropped.
                    tokio::spawn(self.inner.clone().allocate(job));
                    self.inner.signals.refill.notify_one();
                    Ok(Step::Wait(rx))
                }
            }
        }
    }

    /// The session of `identifier` if it exists; never allocates.
    pub async fn get_session(&self, key: &PoolKey, identifier: &str) -> Option<SessionInfo> {
        let st = self.inner.lock();
        let pool = st.pools.get(key)?;
        match pool.sessions.get(identifier)? {
            Slot::Live(l) => Some(l.record(&pool.settings.lifecycle)),
            Slot::Pending { .. } | Slot::Ending { .. } => None,
        }
    }

    /// The pool's sessions, oldest first (empty for an unknown pool).
    pub async fn list_sessions(&self, key: &PoolKey) -> Vec<SessionInfo> {
        let st = self.inner.lock();
        let Some(pool) = st.pools.get(key) else {
            return Vec::new();
        };
        let mut list: Vec<_> = pool
            .live()
            .map(|l| l.record(&pool.settings.lifecycle))
            .collect();
        list.sort_by(|a, b| (a.created_at, &a.identifier).cmp(&(b.created_at, &b.identifier)));
        list
    }

    /// Destroys the session's sandbox and forgets it. Returns whether it existed.
    pub async fn delete_session(&self, key: &PoolKey, identifier: &str) -> Result<bool, PoolError> {
        let ending = {
            let mut st = self.inner.lock();
            let token = self.inner.next_id();
            let pool = st
                .pools
                .get_mut(key)
                .ok_or_else(|| PoolError::PoolNotFound(key.clone()))?;
            // A session that died is deleted: nothing is left to say about it.
            let died = pool.died.remove(identifier).is_some();
            match pool.sessions.get(identifier) {
                None => return Ok(died),
                // Already being destroyed by someone else.
                Some(Slot::Ending { .. }) => return Ok(false),
                Some(Slot::Pending { .. }) => {
                    // Its allocation finds the slot gone and destroys the sandbox it made.
                    pool.sessions.remove(identifier);
                    None
                }
                Some(Slot::Live(_)) => pool.begin_end(identifier, None, token),
            }
        };
        match ending {
            Some(e) => self.inner.retire(e).await,
            None => self.inner.signals.refill.notify_one(),
        }
        Ok(true)
    }

    /// After a restart: binds the stored sessions whose sandbox is still alive again, destroys
    /// sandboxes nobody refers to (ready ones of the previous process, leftovers), forgets stored
    /// sessions whose sandbox is gone, and fails executions left `Running`.
    ///
    /// Register the pools first ([`PoolManager::upsert_pool`]): stored sessions of pools that are
    /// not registered are destroyed.
    pub async fn recover(&self) -> Result<RecoverReport, PoolError> {
        let inner = &self.inner;
        let records = inner
            .store
            .list_sessions()
            .await
            .map_err(PoolError::store)?;
        let (adopt, orphans): (Vec<_>, Vec<_>) = {
            let st = inner.lock();
            records.into_iter().partition(|r| {
                st.pools
                    .get(&r.pool)
                    .is_some_and(|p| !p.sessions.contains_key(&r.identifier))
            })
        };
        let keep: HashSet<String> = adopt.iter().map(|r| r.sandbox_id.clone()).collect();
        let mut attached = self.sweep(keep).await?;

        let mut report = RecoverReport::default();
        for r in &orphans {
            // Its pool is gone, or this process bound the identifier anew: the sweep destroyed
            // the old sandbox unless it is the bound one.
            let live_same = {
                let st = inner.lock();
                st.known.contains(&r.sandbox_id)
            };
            if !live_same {
                inner.forget_stored(&r.pool, &r.identifier).await;
                report.dropped += 1;
            }
        }
        for r in adopt {
            match attached.remove(&r.sandbox_id) {
                Some(sandbox) => match inner.adopt(&r, sandbox.clone()) {
                    Some(entry) => {
                        inner.watch(entry);
                        report.reattached += 1;
                    }
                    None => {
                        // The pool went away or the identifier was bound meanwhile.
                        inner.destroy(&sandbox).await;
                        report.dropped += 1;
                    }
                },
                None => {
                    inner.forget_stored(&r.pool, &r.identifier).await;
                    report.dropped += 1;
                }
            }
        }
        report.executions_failed = inner
            .store
            .fail_running_executions("the server restarted while the execution was running")
            .await
            .map_err(PoolError::store)?;
        inner.signals.refill.notify_one();
        tracing::info!(
            reattached = report.reattached,
            dropped = report.dropped,
            executions_failed = report.executions_failed,
            "recovered sessions"
        );
        Ok(report)
    }

    /// Destroys every sandbox of the runtime's state directory that is neither in `keep` nor
    /// known to this manager (ready sandboxes started meanwhile survive); returns the kept ones
    /// that are alive, attached again.
    async fn sweep(
        &self,
        keep: HashSet<String>,
    ) -> Result<HashMap<String, sb::Sandbox>, PoolError> {
        // `Runtime::sweep` takes a non-`Sync` `&dyn Fn`, which makes its future `!Send`; run it
        // on a blocking thread so that `recover` stays `Send` (spawnable by the server).
        let inner = Arc::downgrade(&self.inner);
        let runtime = self.inner.runtime.clone();
        let handle = tokio::runtime::Handle::current();
        let report = tokio::task::spawn_blocking(move || {
            let keep_fn = |id: &str| {
                keep.contains(id) || inner.upgrade().is_some_and(|i| i.lock().known.contains(id))
            };
            handle.block_on(runtime.sweep(&keep_fn))
        })
        .await
        .map_err(|e| PoolError::Sandbox(format!("sweeping sandboxes: {e}")))?
        .map_err(|e| PoolError::Sandbox(format!("sweeping sandboxes: {e}")))?;
        for e in &report.errors {
            tracing::warn!(error = %e, "sweeping sandboxes");
        }
        if !report.destroyed.is_empty() {
            tracing::info!(
                count = report.destroyed.len(),
                "destroyed sandboxes left by an earlier process"
            );
        }
        let mut attached = HashMap::new();
        let mut known = Vec::new();
        for sandbox in report.attached {
            known.push(sandbox.id().to_owned());
            attached.insert(sandbox.id().to_owned(), sandbox);
        }
        self.inner.lock().known.extend(known);
        Ok(attached)
    }

    pub fn metrics(&self) -> PoolMetrics {
        let mut gauges: Vec<PoolGauges> = {
            let st = self.inner.lock();
            st.pools
                .iter()
                .map(|(key, p)| PoolGauges {
                    pool: key.clone(),
                    ready: p.ready.len() as u64,
                    allocated: p.sessions.len() as u64,
                    starting: p.starting as u64,
                })
                .collect()
        };
        gauges.sort_by(|a, b| a.pool.cmp(&b.pool));
        self.inner.metrics.snapshot(gauges)
    }

    /// Stops the reaper and the refill and destroys the ready sandboxes. Sessions stay alive for
    /// the next process to [`recover`](PoolManager::recover).
    pub async fn shutdown(&self) {
        let (ready, trackers) = {
            let mut st = self.inner.lock();
            st.closed = true;
            let mut ready = Vec::new();
            let mut trackers = Vec::new();
            for pool in st.pools.values_mut() {
                ready.extend(pool.ready.drain(..));
                trackers.push(pool.tracker.clone());
            }
            (ready, trackers)
        };
        self.inner.signals.cancel.cancel();
        for t in trackers {
            t.close();
            t.wait().await;
        }
        for sandbox in &ready {
            self.inner.destroy(sandbox).await;
        }
        self.inner.flush_results(Duration::from_secs(5)).await;
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Hands a due idle-clock write to the saver: a session used after more than
    /// `persist_touch_interval` (every request, when requests spread over many sessions) would
    /// otherwise wait for a store write before its command runs.
    fn persist_soon(self: &Arc<Self>, entry: &Arc<SessionEntry>, record: SessionRecord) {
        let job = crate::exec::SaveJob::Session(self.clone(), entry.clone(), Box::new(record));
        // Refused only once the manager is going away; the clock is best effort.
        let _ = self.saver.send(job);
    }

    pub(crate) async fn persist(&self, record: Option<SessionRecord>) {
        if let Some(r) = record {
            if let Err(e) = self.store.upsert_session(&r).await {
                // The session itself is fine; only its restart-proof idle clock is stale.
                tracing::warn!(pool = %r.pool, identifier = %r.identifier, error = %format!("{e:#}"), "persisting session");
            }
        }
    }

    async fn forget_stored(&self, pool: &PoolKey, identifier: &str) {
        if let Err(e) = self.store.delete_session(pool, identifier).await {
            tracing::warn!(%pool, identifier, error = %format!("{e:#}"), "deleting stored session");
        }
    }

    async fn start_sandbox(&self, settings: &PoolSettings) -> Result<sb::Sandbox, PoolError> {
        let id = format!("s{}", uuid::Uuid::new_v4().simple());
        self.lock().known.insert(id.clone());
        let defaults = sb::Limits::default();
        let spec = sb::SandboxSpec {
            id: Some(id.clone()),
            rootfs: sb::RootFs::Host,
            limits: sb::Limits {
                memory_bytes: settings.memory_bytes.or(defaults.memory_bytes),
                cpu_millicores: settings
                    .cpu_millicores
                    .or(self.config.default_cpu_millicores)
                    .or(defaults.cpu_millicores)
                    .map(|c| self.config.max_cpu_millicores.map_or(c, |max| c.min(max))),
                ..defaults
            },
            network: if settings.egress {
                sb::NetworkMode::Egress
            } else {
                sb::NetworkMode::None
            },
            env: Vec::new(),
            hostname: self.config.hostname.clone(),
        };
        match self.runtime.start(spec).await {
            Ok(sandbox) => Ok(sandbox),
            Err(e) => {
                // Never leave a half-started sandbox behind, whatever the runtime did.
                if self.runtime.list_ids().contains(&id) {
                    if let Ok(s) = self.runtime.attach(&id).await {
                        if let Err(e) = s.destroy().await {
                            tracing::warn!(sandbox = %id, error = %e, "destroying a half-started sandbox");
                        }
                    }
                }
                self.lock().known.remove(&id);
                Err(PoolError::SandboxStart(e.to_string()))
            }
        }
    }

    async fn destroy(&self, sandbox: &sb::Sandbox) {
        if let Err(e) = sandbox.destroy().await {
            // The next recovery sweep retries: it destroys what nobody refers to.
            tracing::warn!(sandbox = %sandbox.id(), error = %e, "destroying sandbox");
        }
        self.lock().known.remove(sandbox.id());
    }

    async fn end_session(&self, entry: &SessionEntry) {
        self.destroy(&entry.sandbox).await;
        self.forget_stored(&entry.pool, &entry.identifier).await;
        tracing::debug!(pool = %entry.pool, identifier = %entry.identifier, "session ended");
    }

    /// Finishes ending a session marked by [`Pool::begin_end`]: destroys it, forgets it, and
    /// frees its slot for a new session of the identifier.
    async fn retire(&self, ending: Ending) {
        self.end_session(&ending.entry).await;
        {
            let mut st = self.lock();
            if let Some(pool) = st.pools.get_mut(&ending.entry.pool) {
                let ours = matches!(
                    pool.sessions.get(&ending.entry.identifier),
                    Some(Slot::Ending { token, .. }) if *token == ending.token
                );
                if ours {
                    pool.sessions.remove(&ending.entry.identifier);
                }
            }
        }
        self.signals.refill.notify_one();
        // Dropping the ticket wakes requests waiting for the identifier.
        drop(ending);
    }

    /// Binds a recovered sandbox to its stored identifier, unless that changed meanwhile.
    fn adopt(&self, r: &SessionRecord, sandbox: sb::Sandbox) -> Option<Arc<SessionEntry>> {
        let mut st = self.lock();
        let pool = st.pools.get_mut(&r.pool)?;
        if pool.sessions.contains_key(&r.identifier) {
            return None;
        }
        let entry = Arc::new(SessionEntry {
            pool: r.pool.clone(),
            identifier: r.identifier.clone(),
            sandbox,
            created_at: r.created_at,
            died: Default::default(),
        });
        pool.sessions.insert(
            r.identifier.clone(),
            Slot::Live(LiveSession::new(
                entry.clone(),
                r.last_accessed_at,
                r.etag.clone(),
            )),
        );
        Some(entry)
    }

    async fn allocate(self: Arc<Self>, job: Allocation) {
        let Allocation {
            key,
            identifier,
            generation,
            token,
            settings,
            ready,
            started,
            tx,
            _tracked,
        } = job;
        let result = self
            .bind(
                &key,
                &identifier,
                generation,
                token,
                &settings,
                ready,
                started,
            )
            .await;
        if let Ok(session) = &result {
            self.watch(session.entry.clone());
        }
        if result.is_err() {
            let mut st = self.lock();
            if let Some(pool) = st
                .pools
                .get_mut(&key)
                .filter(|p| p.generation == generation)
            {
                if pool
                    .sessions
                    .get(&identifier)
                    .is_some_and(|s| s.is_pending(token))
                {
                    pool.sessions.remove(&identifier);
                }
            }
            // A freed slot may raise the ready target.
            self.signals.refill.notify_one();
        }
        tx.send_replace(Some(result));
    }

    #[allow(clippy::too_many_arguments)]
    async fn bind(
        &self,
        key: &PoolKey,
        identifier: &str,
        generation: u64,
        token: u64,
        settings: &PoolSettings,
        ready: Option<sb::Sandbox>,
        started: Instant,
    ) -> Result<Session, PoolError> {
        let (sandbox, source) = match ready {
            Some(s) => (s, Source::Ready),
            None => (self.start_sandbox(settings).await?, Source::OnDemand),
        };
        let created = now();
        let entry = Arc::new(SessionEntry {
            pool: key.clone(),
            identifier: identifier.to_owned(),
            sandbox: sandbox.clone(),
            created_at: created,
            died: Default::default(),
        });
        let mut live = LiveSession::new(entry.clone(), created, new_etag());
        live.holds_refill = matches!(source, Source::Ready);
        let record = live.record(&settings.lifecycle);
        if let Err(e) = self.store.upsert_session(&record).await {
            self.destroy(&sandbox).await;
            return Err(PoolError::store(e));
        }
        let bound = {
            let mut st = self.lock();
            match st.pools.get_mut(key).filter(|p| p.generation == generation) {
                Some(pool) => match pool.sessions.get_mut(identifier) {
                    Some(slot) if slot.is_pending(token) => {
                        *slot = Slot::Live(live);
                        Ok(())
                    }
                    _ => Err(PoolError::SessionNotFound(identifier.to_owned())),
                },
                None => Err(PoolError::PoolNotFound(key.clone())),
            }
        };
        if let Err(e) = bound {
            self.end_session(&entry).await;
            return Err(e);
        }
        self.metrics.allocated(source, started.elapsed());
        tracing::debug!(pool = %key, identifier, sandbox = %sandbox.id(), ?source, "session allocated");
        Ok(Session { entry })
    }

    /// Ends the session when its sandbox's init exits, however that happens: the kernel tells
    /// through the init's pidfd the runtime holds. Ends with the manager.
    pub(crate) fn watch(self: &Arc<Self>, entry: Arc<SessionEntry>) {
        let inner = Arc::downgrade(self);
        let runtime = self.runtime.clone();
        let cancel = self.signals.cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = runtime.exited(entry.sandbox.id()) => {}
            }
            if let Some(inner) = inner.upgrade() {
                inner.sandbox_died(&entry, false).await;
            }
        });
    }

    /// Ends the session of `entry` because its sandbox died; returns why, or `None` when the
    /// session had already ended (or ends by other hands). Unless `answered` (the caller tells
    /// the client itself), the identifier's next request answers that reason, once. A session
    /// of an `OnContainerExit` pool ends this way by its lifecycle: nothing to tell.
    pub(crate) async fn sandbox_died(
        &self,
        entry: &Arc<SessionEntry>,
        answered: bool,
    ) -> Option<String> {
        // Read before the cgroup goes with the sandbox.
        let oom = entry.sandbox.stats().await.is_ok_and(|s| s.oom_kills > 0);
        let why = format!(
            "The sandbox of session '{}' died ({}); its files and processes are gone. The next \
             request with this identifier starts a new session.",
            entry.identifier,
            if oom {
                "it ran out of memory"
            } else {
                "its processes were killed from outside the sandbox, or its main process exited"
            }
        );
        let ending = {
            let mut st = self.lock();
            let token = self.next_id();
            let pool = st.pools.get_mut(&entry.pool)?;
            let ending = pool.begin_end(&entry.identifier, Some(entry), token)?;
            // Under the lock with the decision: whoever else looks finds it set.
            let _ = entry.died.set(why.clone());
            let timed = matches!(pool.settings.lifecycle, Lifecycle::Timed { .. });
            if timed && !answered {
                pool.died
                    .insert(entry.identifier.clone(), (Instant::now(), why.clone()));
            }
            ending
        };
        self.metrics.sandbox_died();
        tracing::warn!(pool = %entry.pool, identifier = %entry.identifier, sandbox = %entry.sandbox.id(), oom, "a session's sandbox died; the session ended");
        self.retire(ending).await;
        Some(why)
    }

    /// Drops the notice [`Inner::sandbox_died`] left for the identifier of `entry`: the death
    /// was told another way (the result of the execution it ended).
    pub(crate) fn take_died_notice(&self, entry: &SessionEntry) {
        if let Some(pool) = self.lock().pools.get_mut(&entry.pool) {
            pool.died.remove(&entry.identifier);
        }
    }

    /// Marks an execution in flight (it keeps a `Timed` session alive).
    pub(crate) fn begin_use(&self, entry: &Arc<SessionEntry>) -> Result<(), PoolError> {
        let mut st = self.lock();
        let live = st
            .pools
            .get_mut(&entry.pool)
            .and_then(|p| p.live_mut(entry))
            .ok_or_else(|| PoolError::SessionNotFound(entry.identifier.clone()))?;
        let max = self.config.max_executions_per_session;
        if live.in_flight >= max {
            return Err(PoolError::TooManyExecutions { max });
        }
        live.in_flight += 1;
        live.last_accessed = live.last_accessed.max(now());
        Ok(())
    }

    /// Ends what [`Inner::begin_use`] started; the end of an execution counts as a request.
    /// Returns the record to persist, if due.
    pub(crate) fn end_use(&self, entry: &Arc<SessionEntry>) -> Option<SessionRecord> {
        let mut st = self.lock();
        let pool = st.pools.get_mut(&entry.pool)?;
        let lifecycle = pool.settings.lifecycle;
        let live = pool.live_mut(entry)?;
        live.in_flight = live.in_flight.saturating_sub(1);
        live.touch(now(), &lifecycle, self.config.persist_touch_interval)
    }

    /// Lets the pool's refill start if this was the first execution of a session bound from the
    /// ready set; called once the execution's result is out.
    pub(crate) fn release_refill_hold(&self, entry: &Arc<SessionEntry>) {
        let released = {
            let mut st = self.lock();
            let Some(pool) = st.pools.get_mut(&entry.pool) else {
                return;
            };
            let held = pool
                .live_mut(entry)
                .is_some_and(|l| std::mem::take(&mut l.holds_refill));
            if held {
                pool.refill_hold_until = None;
            }
            held
        };
        if released {
            self.signals.refill.notify_one();
        }
    }

    /// Whether the session is still bound to this entry (not deleted or ending).
    pub(crate) fn is_bound(&self, entry: &Arc<SessionEntry>) -> bool {
        self.lock()
            .pools
            .get_mut(&entry.pool)
            .is_some_and(|p| p.live_mut(entry).is_some())
    }

    /// Waits (at most `limit`) until every result queued for the store so far is written.
    pub(crate) async fn flush_results(&self, limit: Duration) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.saver.send(crate::exec::SaveJob::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(limit, rx).await;
        }
    }

    pub(crate) async fn persist_after_use(&self, record: Option<SessionRecord>) {
        self.persist(record).await;
    }

    /// Starts the next missing ready sandbox, one at a time (this host has few cores and starts
    /// are quick). Returns when nothing is missing, with the time until a backed-off or held
    /// pool may be retried.
    async fn refill_round(&self) -> Option<Duration> {
        loop {
            let job = {
                let mut st = self.lock();
                if st.closed {
                    return None;
                }
                let now = Instant::now();
                let mut next_retry: Option<Duration> = None;
                let mut job = None;
                for (key, pool) in st.pools.iter_mut() {
                    if pool.ready.len() + pool.starting >= pool.ready_target() {
                        continue;
                    }
                    let hold = pool.retry_at.max(pool.refill_hold_until);
                    if let Some(at) = hold.filter(|at| *at > now) {
                        let wait = at - now;
                        next_retry = Some(next_retry.map_or(wait, |w| w.min(wait)));
                        continue;
                    }
                    pool.starting += 1;
                    job = Some(RefillJob {
                        key: key.clone(),
                        generation: pool.generation,
                        spec_version: pool.spec_version,
                        settings: pool.settings.clone(),
                        _tracked: pool.tracker.token(),
                    });
                    break;
                }
                match job {
                    Some(j) => j,
                    None => return next_retry,
                }
            };
            self.refill_one(job).await;
        }
    }

    async fn refill_one(&self, job: RefillJob) {
        let result = self.start_sandbox(&job.settings).await;
        let surplus = {
            let mut st = self.lock();
            let closed = st.closed;
            let pool = st
                .pools
                .get_mut(&job.key)
                .filter(|p| p.generation == job.generation);
            match (pool, result) {
                (Some(pool), Ok(sandbox)) => {
                    pool.starting = pool.starting.saturating_sub(1);
                    pool.start_failures = 0;
                    pool.retry_at = None;
                    let wanted = !closed
                        && pool.spec_version == job.spec_version
                        && pool.ready.len() < pool.ready_target();
                    if wanted {
                        pool.ready.push_back(sandbox);
                        None
                    } else {
                        Some(sandbox)
                    }
                }
                (Some(pool), Err(e)) => {
                    pool.starting = pool.starting.saturating_sub(1);
                    pool.start_failures = pool.start_failures.saturating_add(1);
                    let backoff = self
                        .config
                        .refill_retry
                        .saturating_mul(1 << pool.start_failures.min(7).saturating_sub(1))
                        .min(Duration::from_secs(60));
                    pool.retry_at = Some(Instant::now() + backoff);
                    tracing::warn!(pool = %job.key, error = %e, retry_in = ?backoff, "starting a ready sandbox");
                    None
                }
                (None, Ok(sandbox)) => Some(sandbox),
                (None, Err(_)) => None,
            }
        };
        if let Some(sandbox) = surplus {
            self.destroy(&sandbox).await;
        }
    }

    async fn reap_once(&self, check_health: bool) {
        let now = now();
        let mut expired = Vec::new();
        let mut ping_sessions = Vec::new();
        let mut ping_ready = Vec::new();
        {
            let mut st = self.lock();
            for (key, pool) in st.pools.iter_mut() {
                let lifecycle = pool.settings.lifecycle;
                pool.died
                    .retain(|_, (at, _)| at.elapsed() < DIED_NOTICE_KEPT);
                let mut ending = Vec::new();
                for (identifier, slot) in &pool.sessions {
                    let Slot::Live(l) = slot else { continue };
                    if l.is_expired(&lifecycle, now) {
                        ending.push(identifier.clone());
                    } else if check_health && matches!(lifecycle, Lifecycle::OnContainerExit { .. })
                    {
                        ping_sessions.push(l.entry.clone());
                    }
                }
                for identifier in ending {
                    let token = self.next_id();
                    expired.extend(pool.begin_end(&identifier, None, token));
                }
                if check_health {
                    ping_ready.extend(pool.ready.iter().map(|s| (key.clone(), s.clone())));
                }
            }
        }
        for ending in expired {
            tracing::debug!(pool = %ending.entry.pool, identifier = %ending.entry.identifier, "session expired");
            self.retire(ending).await;
        }
        for entry in self.dead(ping_sessions, |e| e.sandbox.clone()).await {
            let ending = {
                let mut st = self.lock();
                let token = self.next_id();
                st.pools
                    .get_mut(&entry.pool)
                    .and_then(|pool| pool.begin_end(&entry.identifier, Some(&entry), token))
            };
            if let Some(ending) = ending {
                tracing::debug!(pool = %entry.pool, identifier = %entry.identifier, "session's sandbox exited");
                self.retire(ending).await;
            }
        }
        let mut changed = false;
        for (key, sandbox) in self.dead(ping_ready, |(_, s)| s.clone()).await {
            let removed = {
                let mut st = self.lock();
                match st.pools.get_mut(&key) {
                    Some(pool) => {
                        let before = pool.ready.len();
                        pool.ready.retain(|s| s.id() != sandbox.id());
                        pool.ready.len() != before
                    }
                    None => false,
                }
            };
            if removed {
                tracing::warn!(pool = %key, sandbox = %sandbox.id(), "a ready sandbox died; replacing it");
                self.destroy(&sandbox).await;
                changed = true;
            }
        }
        if changed {
            self.signals.refill.notify_one();
        }
    }

    /// The items whose sandbox does not answer a ping in time.
    async fn dead<T: Send + 'static>(
        &self,
        items: Vec<T>,
        sandbox_of: impl Fn(&T) -> sb::Sandbox,
    ) -> Vec<T> {
        let mut set = JoinSet::new();
        for (i, item) in items.iter().enumerate() {
            let sandbox = sandbox_of(item);
            let limit = self.config.ping_timeout;
            set.spawn(async move {
                let alive = matches!(
                    tokio::time::timeout(limit, sandbox.ping()).await,
                    Ok(Ok(()))
                );
                (i, alive)
            });
        }
        let mut dead = HashSet::new();
        while let Some(res) = set.join_next().await {
            if let Ok((i, false)) = res {
                dead.insert(i);
            }
        }
        items
            .into_iter()
            .enumerate()
            .filter_map(|(i, item)| dead.contains(&i).then_some(item))
            .collect()
    }
}

async fn reaper_loop(inner: Weak<Inner>, signals: Arc<Signals>) {
    let mut last_health = Instant::now();
    loop {
        let interval = match inner.upgrade() {
            Some(i) => i.config.reaper_interval,
            None => return,
        };
        tokio::select! {
            _ = signals.cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        let check_health = last_health.elapsed() >= inner.config.health_check_interval;
        if check_health {
            last_health = Instant::now();
        }
        inner.reap_once(check_health).await;
    }
}

async fn refill_loop(inner: Weak<Inner>, signals: Arc<Signals>) {
    loop {
        let retry = match inner.upgrade() {
            Some(i) => i.refill_round().await,
            None => return,
        };
        // Woken by any change that may open a gap; the timer covers backed-off pools.
        let wait = retry.unwrap_or(Duration::from_secs(30));
        tokio::select! {
            _ = signals.cancel.cancelled() => return,
            _ = signals.refill.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
