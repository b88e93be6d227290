//! The job queue: accepts commands, runs at most `concurrency` at once, records every state
//! change in the store, and purges old results.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Mutex, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::context::{inspect_zip, ContextError, ContextLimits, ContextPlan};
use crate::model::{
    now_millis, valid_job_id, CommandJob, CommandResult, CommandState, CommandStore, StoreError,
    MAX_ID_LEN,
};

/// Tuning of a [`CommandRunner`].
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Most commands running at once; the rest wait in the queue.
    pub concurrency: usize,
    /// Most commands accepted and not yet started; beyond it [`RunError::QueueFull`]. Each
    /// holds its context in memory until it starts.
    pub max_queued: usize,
    /// Most bytes of output kept per command (head and tail, see [`crate::LogBuffer`]).
    pub log_cap: usize,
    /// How long finished results are kept.
    pub retention: Duration,
    /// How often old results are purged.
    pub purge_interval: Duration,
    pub context_limits: ContextLimits,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            concurrency: 4,
            max_queued: 64,
            log_cap: 1024 * 1024,
            retention: Duration::from_secs(7 * 24 * 3600),
            purge_interval: Duration::from_secs(600),
            context_limits: ContextLimits::default(),
        }
    }
}

/// A snapshot of the runner's counters since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunnerMetrics {
    /// Accepted and not yet started.
    pub queued: u64,
    pub running: u64,
    /// Most commands that were running at the same time.
    pub peak_running: u64,
    pub succeeded: u64,
    pub failed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The job itself is malformed (id, cluster, command).
    #[error("{0}")]
    InvalidJob(String),
    #[error(transparent)]
    InvalidContext(#[from] ContextError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the run command service is shutting down")]
    ShuttingDown,
    #[error("{max} commands are already waiting to run; retry later")]
    QueueFull { max: usize },
    /// [`CommandRunner::recover`] after a submit would fail this process's own jobs.
    #[error("recover must run before the first submit")]
    RecoverAfterSubmit,
}

/// How one command ended, as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The command ran to its end.
    Exited { exit_code: i32, logs: String },
    /// It could not run, or was stopped; `logs` holds what it printed before.
    Failed { reason: String, logs: String },
}

pub(crate) type EngineFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// Runs one command to its end. The engine owns every resource it creates and releases it
/// before returning, also when `cancel` fires (it then reports `Failed`).
pub(crate) trait Engine: Send + Sync + 'static {
    fn run<'a>(
        &'a self,
        job: &'a CommandJob,
        plan: ContextPlan,
        cfg: &'a RunnerConfig,
        cancel: CancellationToken,
    ) -> EngineFuture<'a>;
}

#[derive(Default)]
struct Counters {
    queued: AtomicU64,
    running: AtomicU64,
    peak_running: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
}

struct Inner {
    engine: Arc<dyn Engine>,
    store: Arc<dyn CommandStore>,
    config: RunnerConfig,
    counters: Counters,
    queue: mpsc::UnboundedSender<CommandJob>,
    /// One permit per running job; shutdown takes them all to know every job is done.
    slots: Arc<Semaphore>,
    cancel: CancellationToken,
    accepting: AtomicBool,
    submitted_any: AtomicBool,
    /// Held by shutdown; the dispatcher's handle, awaited once.
    dispatcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
    purger: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Accepts Run Command jobs and runs each in a fresh sandbox. Cheap to clone.
///
/// Must be created inside a tokio runtime: it spawns its dispatcher and its purge task.
#[derive(Clone)]
pub struct CommandRunner {
    inner: Arc<Inner>,
}

pub(crate) const SHUTDOWN_REASON: &str = "the server shut down before the command finished";

impl CommandRunner {
    /// A runner that starts one sandbox per command on `runtime`.
    pub fn new(
        runtime: sandpool_sandbox::Runtime,
        store: Arc<dyn CommandStore>,
        config: RunnerConfig,
    ) -> CommandRunner {
        CommandRunner::with_engine(
            Arc::new(crate::sandbox_engine::SandboxEngine::new(runtime)),
            store,
            config,
        )
    }

    pub(crate) fn with_engine(
        engine: Arc<dyn Engine>,
        store: Arc<dyn CommandStore>,
        mut config: RunnerConfig,
    ) -> CommandRunner {
        config.concurrency = config.concurrency.max(1);
        config.purge_interval = config.purge_interval.max(Duration::from_secs(1));
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            engine,
            store,
            slots: Arc::new(Semaphore::new(config.concurrency)),
            config,
            counters: Counters::default(),
            queue: tx,
            cancel: CancellationToken::new(),
            accepting: AtomicBool::new(true),
            submitted_any: AtomicBool::new(false),
            dispatcher: Mutex::new(None),
            purger: Mutex::new(None),
        });
        let dispatcher = tokio::spawn(dispatch(inner.clone(), rx));
        let purger = tokio::spawn(purge_loop(inner.clone()));
        // Nobody else holds these mutexes yet.
        if let Ok(mut slot) = inner.dispatcher.try_lock() {
            *slot = Some(dispatcher);
        }
        if let Ok(mut slot) = inner.purger.try_lock() {
            *slot = Some(purger);
        }
        CommandRunner { inner }
    }

    /// Marks every record a dead process left `Queued` or `Running` as `Failed`; returns how
    /// many. Call once at startup, before the first [`submit`](Self::submit): afterwards it
    /// would fail this process's own jobs, so it refuses.
    pub async fn recover(&self) -> Result<u64, RunError> {
        if self.inner.submitted_any.load(Ordering::SeqCst) {
            return Err(RunError::RecoverAfterSubmit);
        }
        let n = self
            .inner
            .store
            .fail_unfinished(
                "the server stopped before the command finished",
                now_millis(),
            )
            .await?;
        if n > 0 {
            tracing::warn!(
                count = n,
                "run command: marked unfinished commands as failed"
            );
        }
        Ok(n)
    }

    /// Validates the job (id, command, context zip), stores it as `Queued` and queues it.
    /// Returns the id. Never refuses because of load.
    pub async fn submit(&self, job: CommandJob) -> Result<String, RunError> {
        if !valid_job_id(&job.id) {
            return Err(RunError::InvalidJob(format!(
                "command id must be 1 to {MAX_ID_LEN} ASCII letters and digits"
            )));
        }
        if job.cluster.is_empty() {
            return Err(RunError::InvalidJob(
                "cluster must not be empty".to_string(),
            ));
        }
        if job.command.trim().is_empty() {
            return Err(RunError::InvalidJob(
                "command must not be empty".to_string(),
            ));
        }
        if job.command.contains('\0') {
            return Err(RunError::InvalidJob(
                "command must not contain NUL characters".to_string(),
            ));
        }
        inspect_zip(&job.context, &self.inner.config.context_limits)?;
        if !self.inner.accepting.load(Ordering::SeqCst) {
            return Err(RunError::ShuttingDown);
        }
        // Counted before anything is stored, so concurrent submits cannot overshoot the bound.
        let max = self.inner.config.max_queued;
        let queued = &self.inner.counters.queued;
        if queued.fetch_add(1, Ordering::SeqCst) >= max as u64 {
            queued.fetch_sub(1, Ordering::SeqCst);
            return Err(RunError::QueueFull { max });
        }
        self.inner.submitted_any.store(true, Ordering::SeqCst);
        let record = CommandResult::queued(&job.id, &job.cluster, now_millis());
        if let Err(e) = self.inner.store.insert(&record).await {
            queued.fetch_sub(1, Ordering::SeqCst);
            return Err(e.into());
        }
        let id = job.id.clone();
        if let Err(mpsc::error::SendError(job)) = self.inner.queue.send(job) {
            // The dispatcher is gone: shutdown won the race after the check above.
            self.inner.counters.queued.fetch_sub(1, Ordering::SeqCst);
            finish_unstarted(&self.inner, &job, SHUTDOWN_REASON).await;
            return Err(RunError::ShuttingDown);
        }
        Ok(id)
    }

    pub async fn result(&self, cluster: &str, id: &str) -> Result<Option<CommandResult>, RunError> {
        if !valid_job_id(id) {
            return Ok(None);
        }
        Ok(self.inner.store.get(cluster, id).await?)
    }

    pub fn metrics(&self) -> RunnerMetrics {
        let c = &self.inner.counters;
        RunnerMetrics {
            queued: c.queued.load(Ordering::SeqCst),
            running: c.running.load(Ordering::SeqCst),
            peak_running: c.peak_running.load(Ordering::SeqCst),
            succeeded: c.succeeded.load(Ordering::SeqCst),
            failed: c.failed.load(Ordering::SeqCst),
        }
    }

    /// Stops accepting jobs, stops running ones (their sandboxes are destroyed), records every
    /// unfinished job as `Failed`, and returns when all of that is done. Idempotent.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.accepting.store(false, Ordering::SeqCst);
        inner.cancel.cancel();
        if let Some(handle) = inner.dispatcher.lock().await.take() {
            if let Err(e) = handle.await {
                tracing::error!(error = %e, "run command dispatcher failed");
            }
        }
        if let Some(handle) = inner.purger.lock().await.take() {
            handle.abort();
            let _ = handle.await;
        }
        // Every running job holds a permit until its final record is written.
        let all = u32::try_from(inner.config.concurrency).unwrap_or(u32::MAX);
        if let Ok(permits) = inner.slots.acquire_many(all).await {
            permits.forget();
            inner.slots.close();
        }
    }
}

async fn dispatch(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<CommandJob>) {
    loop {
        let job = tokio::select! {
            biased;
            _ = inner.cancel.cancelled() => break,
            job = rx.recv() => match job {
                Some(job) => job,
                None => break,
            },
        };
        let permit = tokio::select! {
            biased;
            _ = inner.cancel.cancelled() => {
                inner.counters.queued.fetch_sub(1, Ordering::SeqCst);
                finish_unstarted(&inner, &job, SHUTDOWN_REASON).await;
                break;
            }
            permit = inner.slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let inner2 = inner.clone();
        tokio::spawn(async move {
            run_job(&inner2, job).await;
            drop(permit);
        });
    }
    rx.close();
    while let Some(job) = rx.recv().await {
        inner.counters.queued.fetch_sub(1, Ordering::SeqCst);
        finish_unstarted(&inner, &job, SHUTDOWN_REASON).await;
    }
}

async fn finish_unstarted(inner: &Inner, job: &CommandJob, reason: &str) {
    let mut record = CommandResult::queued(&job.id, &job.cluster, now_millis());
    if let Ok(Some(stored)) = inner.store.get(&job.cluster, &job.id).await {
        record = stored;
    }
    record.state = CommandState::Failed;
    record.reason = Some(reason.to_string());
    record.finished_at = Some(now_millis());
    inner.counters.failed.fetch_add(1, Ordering::SeqCst);
    if let Err(e) = inner.store.update(&record).await {
        tracing::error!(id = %job.id, error = %e, "run command: could not record failure");
    }
}

async fn run_job(inner: &Inner, job: CommandJob) {
    let c = &inner.counters;
    c.queued.fetch_sub(1, Ordering::SeqCst);
    let running = c.running.fetch_add(1, Ordering::SeqCst) + 1;
    c.peak_running.fetch_max(running, Ordering::SeqCst);

    let mut record = match inner.store.get(&job.cluster, &job.id).await {
        Ok(Some(r)) => r,
        Ok(None) => CommandResult::queued(&job.id, &job.cluster, now_millis()),
        Err(e) => {
            tracing::error!(id = %job.id, error = %e, "run command: could not load record");
            CommandResult::queued(&job.id, &job.cluster, now_millis())
        }
    };
    record.state = CommandState::Running;
    record.started_at = Some(now_millis());
    if let Err(e) = inner.store.update(&record).await {
        tracing::error!(id = %job.id, error = %e, "run command: could not record start");
    }

    // Inspected at submit already; checked again because the limits bound what we unpack.
    let outcome = match inspect_zip(&job.context, &inner.config.context_limits) {
        Ok(plan) => {
            inner
                .engine
                .run(&job, plan, &inner.config, inner.cancel.child_token())
                .await
        }
        Err(e) => Outcome::Failed {
            reason: e.to_string(),
            logs: String::new(),
        },
    };

    match outcome {
        Outcome::Exited { exit_code, logs } => {
            record.state = CommandState::Succeeded;
            record.exit_code = Some(exit_code);
            record.logs = logs;
            c.succeeded.fetch_add(1, Ordering::SeqCst);
        }
        Outcome::Failed { reason, logs } => {
            record.state = CommandState::Failed;
            record.reason = Some(reason);
            record.logs = logs;
            c.failed.fetch_add(1, Ordering::SeqCst);
        }
    }
    record.finished_at = Some(now_millis());
    // Counters first: whoever sees the final record must also see it counted as finished.
    c.running.fetch_sub(1, Ordering::SeqCst);
    if let Err(e) = inner.store.update(&record).await {
        tracing::error!(id = %job.id, error = %e, "run command: could not record result");
    }
    tracing::info!(id = %job.id, state = %record.state, exit_code = ?record.exit_code, "run command finished");
}

async fn purge_loop(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(inner.config.purge_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = inner.cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let cutoff = now_millis()
            .checked_sub(inner.config.retention)
            .unwrap_or(std::time::UNIX_EPOCH);
        match inner.store.purge_older_than(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "run command: purged old results"),
            Err(e) => tracing::warn!(error = %e, "run command: purge failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Queue mechanics with an engine that only waits: what is under test here is the
    //! dispatcher, the bound, the records and shutdown, not the sandbox (see tests/).
    use super::*;
    use crate::testing::MemoryStore;
    use std::sync::atomic::AtomicUsize;
    use tokio::sync::Notify;

    #[derive(Default)]
    struct GateEngine {
        now: AtomicUsize,
        max: AtomicUsize,
        started: AtomicUsize,
        gate: Notify,
    }

    impl Engine for GateEngine {
        fn run<'a>(
            &'a self,
            job: &'a CommandJob,
            _plan: ContextPlan,
            _cfg: &'a RunnerConfig,
            cancel: CancellationToken,
        ) -> EngineFuture<'a> {
            Box::pin(async move {
                let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
                self.max.fetch_max(n, Ordering::SeqCst);
                self.started.fetch_add(1, Ordering::SeqCst);
                let out = tokio::select! {
                    _ = self.gate.notified() => Outcome::Exited { exit_code: job.command.len() as i32, logs: job.command.clone() },
                    _ = cancel.cancelled() => Outcome::Failed { reason: "cancelled".into(), logs: String::new() },
                };
                self.now.fetch_sub(1, Ordering::SeqCst);
                out
            })
        }
    }

    fn job(command: &str) -> CommandJob {
        CommandJob {
            id: crate::new_job_id(),
            cluster: "c".into(),
            command: command.into(),
            context: Vec::new(),
            settings: Default::default(),
        }
    }

    async fn wait_until(mut f: impl FnMut() -> bool) {
        while !f() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn bound_holds_and_queued_jobs_wait_then_all_finish() {
        let engine = Arc::new(GateEngine::default());
        let store = Arc::new(MemoryStore::new());
        let cfg = RunnerConfig {
            concurrency: 3,
            ..Default::default()
        };
        let runner = CommandRunner::with_engine(engine.clone(), store.clone(), cfg);
        let mut ids = Vec::new();
        for i in 0..10 {
            ids.push(runner.submit(job(&"x".repeat(i + 1))).await.unwrap());
        }
        wait_until(|| engine.started.load(Ordering::SeqCst) == 3).await;
        let m = runner.metrics();
        assert_eq!((m.running, m.queued), (3, 7));
        let queued = store
            .all()
            .iter()
            .filter(|r| r.state == CommandState::Queued)
            .count();
        assert_eq!(queued, 7);
        while runner.metrics().succeeded < 10 {
            engine.gate.notify_one();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(engine.max.load(Ordering::SeqCst), 3);
        assert_eq!(runner.metrics().peak_running, 3);
        for (i, id) in ids.iter().enumerate() {
            let r = runner.result("c", id).await.unwrap().unwrap();
            assert_eq!(r.state, CommandState::Succeeded);
            assert_eq!(r.exit_code, Some(i as i32 + 1));
            assert!(r.started_at.is_some() && r.finished_at >= r.started_at);
        }
        runner.shutdown().await;
    }

    /// Beyond `max_queued` waiting commands a submit is refused (the server answers 429) and
    /// stores nothing; once one starts there is room again.
    #[tokio::test]
    async fn the_queue_is_bounded() {
        let engine = Arc::new(GateEngine::default());
        let store = Arc::new(MemoryStore::new());
        let cfg = RunnerConfig {
            concurrency: 1,
            max_queued: 2,
            ..Default::default()
        };
        let runner = CommandRunner::with_engine(engine.clone(), store.clone(), cfg);
        runner.submit(job("a")).await.unwrap();
        wait_until(|| engine.started.load(Ordering::SeqCst) == 1).await;
        runner.submit(job("b")).await.unwrap();
        runner.submit(job("c")).await.unwrap();
        match runner.submit(job("d")).await {
            Err(RunError::QueueFull { max: 2 }) => {}
            other => panic!("a third waiting command was accepted: {other:?}"),
        }
        assert_eq!(store.all().len(), 3, "the refused command left no record");
        engine.gate.notify_one();
        wait_until(|| engine.started.load(Ordering::SeqCst) == 2).await;
        runner.submit(job("e")).await.expect("room again");
        while runner.metrics().succeeded < 4 {
            engine.gate.notify_one();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        runner.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_fails_running_and_queued_and_refuses_new() {
        let engine = Arc::new(GateEngine::default());
        let store = Arc::new(MemoryStore::new());
        let cfg = RunnerConfig {
            concurrency: 1,
            ..Default::default()
        };
        let runner = CommandRunner::with_engine(engine.clone(), store.clone(), cfg);
        let a = runner.submit(job("a")).await.unwrap();
        let b = runner.submit(job("b")).await.unwrap();
        wait_until(|| engine.started.load(Ordering::SeqCst) == 1).await;
        runner.shutdown().await;
        let ra = runner.result("c", &a).await.unwrap().unwrap();
        let rb = runner.result("c", &b).await.unwrap().unwrap();
        assert_eq!(
            (ra.state, ra.reason.as_deref()),
            (CommandState::Failed, Some("cancelled"))
        );
        assert_eq!(rb.state, CommandState::Failed);
        assert_eq!(rb.reason.as_deref(), Some(SHUTDOWN_REASON));
        assert!(matches!(
            runner.submit(job("c")).await,
            Err(RunError::ShuttingDown)
        ));
        let m = runner.metrics();
        assert_eq!((m.running, m.queued, m.failed), (0, 0, 2));
        runner.shutdown().await;
    }

    #[tokio::test]
    async fn submit_validates_before_storing() {
        let store = Arc::new(MemoryStore::new());
        let runner = CommandRunner::with_engine(
            Arc::new(GateEngine::default()),
            store.clone(),
            RunnerConfig::default(),
        );
        let mut bad = job("ls");
        bad.id = "has-dash".into();
        assert!(matches!(
            runner.submit(bad).await,
            Err(RunError::InvalidJob(_))
        ));
        assert!(matches!(
            runner.submit(job("  ")).await,
            Err(RunError::InvalidJob(_))
        ));
        let mut bad = job("ls");
        bad.context = b"not a zip".to_vec();
        assert!(matches!(
            runner.submit(bad).await,
            Err(RunError::InvalidContext(ContextError::InvalidZip(_)))
        ));
        assert!(store.all().is_empty());
        let ok = job("ls");
        let id = runner.submit(ok.clone()).await.unwrap();
        assert!(matches!(
            runner.submit(ok).await,
            Err(RunError::Store(StoreError::Duplicate(_)))
        ));
        assert!(
            matches!(runner.recover().await, Err(RunError::RecoverAfterSubmit)),
            "recover after submit"
        );
        assert!(runner.result("other", &id).await.unwrap().is_none());
        assert!(runner.result("c", "../etc").await.unwrap().is_none());
        runner.shutdown().await;
    }

    #[tokio::test]
    async fn purge_runs_periodically() {
        let store = Arc::new(MemoryStore::new());
        let mut old = CommandResult::queued("old1", "c", std::time::UNIX_EPOCH);
        old.state = CommandState::Succeeded;
        old.finished_at = Some(std::time::UNIX_EPOCH + Duration::from_secs(1));
        store.insert(&old).await.unwrap();
        let fresh = CommandResult::queued("fresh1", "c", now_millis());
        store.insert(&fresh).await.unwrap();
        let runner = CommandRunner::with_engine(
            Arc::new(GateEngine::default()),
            store.clone(),
            RunnerConfig::default(),
        );
        wait_until(|| store.all().len() == 1).await;
        assert_eq!(store.all()[0].id, "fresh1");
        runner.shutdown().await;
    }
}
