//! Executions: a command run in a session's sandbox, recorded in the store from start to end.
//!
//! The run happens in a spawned task so that its record is completed even when the caller (an
//! HTTP request, possibly asynchronous) goes away; the caller gets a handle that streams the
//! output and the final record.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::manager::{now, Inner, SessionEntry};
use crate::sb;
use crate::{ExecutionRecord, ExecutionStatus, PoolError, PoolManager, Session};

/// Grace beyond an execution's own timeout before the host gives up on the sandbox reporting
/// the end (the sandbox kills the command at the timeout itself).
const REPORT_GRACE: Duration = Duration::from_secs(30);

/// How long a failed command's end waits for the kernel to report its sandbox's init gone.
const DEATH_NOTICE: Duration = Duration::from_secs(1);

/// Longest accepted execution id (the `operation-id` header).
const MAX_ID_LEN: usize = 128;

/// A command to run in a session.
#[derive(Debug, Clone, Default)]
pub struct ExecuteRequest {
    /// The execution id (e.g. from an `operation-id` header); a UUID when `None`.
    pub id: Option<String>,
    /// Run as `/bin/sh -c COMMAND`.
    pub command: String,
    /// Default from [`crate::ManagerConfig::default_timeout`] (60 s), at most `max_timeout` (1 h).
    pub timeout: Option<Duration>,
    /// Per stream; default [`crate::ManagerConfig::default_output_limit`] (1 MiB).
    pub output_limit: Option<usize>,
    pub env: Vec<(String, String)>,
    /// Default [`crate::ManagerConfig::default_cwd`] (`/mnt/data`).
    pub cwd: Option<String>,
    /// Recorded with the execution (the API's `executionType`); does not change how it runs.
    pub asynchronous: bool,
}

impl ExecuteRequest {
    pub fn new(command: impl Into<String>) -> Self {
        ExecuteRequest {
            command: command.into(),
            ..Default::default()
        }
    }
}

/// What an execution reports while it runs. `Finished` is the last event.
#[derive(Debug, Clone)]
pub enum ExecutionEvent {
    Stdout(Bytes),
    Stderr(Bytes),
    Finished(ExecutionRecord),
}

/// The caller's side of a running execution. Dropping it does not stop the execution.
#[derive(Debug)]
pub struct ExecutionHandle {
    id: String,
    // Unbounded on purpose: a caller that only awaits the end must never stall the command, and
    // what can queue is bounded by the output limit.
    events: mpsc::UnboundedReceiver<ExecutionEvent>,
}

impl ExecutionHandle {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The next output chunk or the final record; `None` after the final record.
    pub async fn next(&mut self) -> Option<ExecutionEvent> {
        self.events.recv().await
    }

    /// Waits for the end, discarding streamed chunks (the record holds the output).
    pub async fn wait(mut self) -> Result<ExecutionRecord, PoolError> {
        while let Some(event) = self.events.recv().await {
            if let ExecutionEvent::Finished(record) = event {
                return Ok(record);
            }
        }
        Err(PoolError::Sandbox(
            "the execution ended without a result".into(),
        ))
    }
}

impl PoolManager {
    /// Records the execution as `Running`, starts it and returns at once; the record is
    /// completed when the command ends, whether or not the handle is still held.
    pub async fn execute(
        &self,
        session: &Session,
        req: ExecuteRequest,
    ) -> Result<ExecutionHandle, PoolError> {
        let cfg = &self.inner.config;
        let id = match req.id.clone() {
            Some(id) => validate_id(id)?,
            None => uuid::Uuid::new_v4().to_string(),
        };
        if req.command.trim().is_empty() {
            return Err(PoolError::InvalidRequest("the command is empty".into()));
        }
        if req.command.contains('\0') {
            return Err(PoolError::InvalidRequest(
                "the command contains a NUL character".into(),
            ));
        }
        let timeout = req.timeout.unwrap_or(cfg.default_timeout);
        if timeout.is_zero() || timeout > cfg.max_timeout {
            return Err(PoolError::InvalidRequest(format!(
                "the timeout must be between 1 and {} seconds",
                cfg.max_timeout.as_secs()
            )));
        }
        let output_limit = req.output_limit.unwrap_or(cfg.default_output_limit);
        if output_limit == 0 || output_limit > cfg.max_output_limit {
            return Err(PoolError::InvalidRequest(format!(
                "the output limit must be between 1 and {} bytes",
                cfg.max_output_limit
            )));
        }

        let entry = session.entry.clone();
        self.inner.begin_use(&entry)?;
        let in_use = InUse {
            inner: self.inner.clone(),
            entry: entry.clone(),
            ended: false,
        };
        let record = ExecutionRecord {
            asynchronous: req.asynchronous,
            ..ExecutionRecord::running(
                id.clone(),
                entry.pool.clone(),
                entry.identifier.clone(),
                req.command.clone(),
                now(),
            )
        };
        let unsaved = if req.asynchronous {
            // Stored before it runs: a client polls for it, possibly from another server, and a
            // restart must find it to mark it failed. The claim keeps a synchronous execution
            // from taking the same id meanwhile.
            let _claim = Unsaved::reserve(&self.inner, &record)?;
            match self.inner.store.insert_execution(&record).await {
                Ok(true) => None,
                Ok(false) => return Err(PoolError::ExecutionExists(id)),
                Err(e) => return Err(PoolError::store(e)),
            }
        } else {
            // A synchronous execution's caller waits for its end: its record is written once,
            // when it ends (before the answer), and served from memory until then.
            let unsaved = Unsaved::reserve(&self.inner, &record)?;
            if req.id.is_some() {
                let stored = self
                    .inner
                    .store
                    .get_execution(&record.pool, &record.identifier, &record.id)
                    .await
                    .map_err(PoolError::store)?;
                if stored.is_some() {
                    return Err(PoolError::ExecutionExists(id));
                }
            }
            Some(unsaved)
        };
        let sandbox_req = sb::ExecRequest {
            command: req.command,
            env: req.env,
            cwd: Some(req.cwd.unwrap_or_else(|| cfg.default_cwd.clone())),
            stdin: None,
            timeout,
            output_limit,
            merge_output: false,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(in_use, unsaved, record, sandbox_req, tx));
        Ok(ExecutionHandle { id, events: rx })
    }

    /// A recorded execution of the session `identifier` of pool `key`.
    pub async fn execution(
        &self,
        key: &crate::PoolKey,
        identifier: &str,
        id: &str,
    ) -> Result<Option<ExecutionRecord>, PoolError> {
        let exec_key = (key.clone(), identifier.to_owned(), id.to_owned());
        if let Some(record) = self.inner.unsaved().get(&exec_key) {
            return Ok(Some(record.clone()));
        }
        self.inner
            .store
            .get_execution(key, identifier, id)
            .await
            .map_err(PoolError::store)
    }
}

fn validate_id(id: String) -> Result<String, PoolError> {
    let ok = !id.is_empty() && id.len() <= MAX_ID_LEN && id.chars().all(|c| c.is_ascii_graphic());
    if ok {
        Ok(id)
    } else {
        Err(PoolError::InvalidRequest(format!(
            "an execution id must be 1 to {MAX_ID_LEN} printable ASCII characters without spaces"
        )))
    }
}

/// Keeps the session marked in use until the execution's end is recorded, even if the task
/// running it dies.
struct InUse {
    inner: Arc<Inner>,
    entry: Arc<SessionEntry>,
    ended: bool,
}

impl InUse {
    async fn end(mut self) {
        self.ended = true;
        let persist = self.inner.end_use(&self.entry);
        self.inner.persist_after_use(persist).await;
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        if !self.ended {
            self.inner.end_use(&self.entry);
        }
    }
}

/// Identifies an execution: pool, session identifier, execution id.
pub(crate) type ExecKey = (crate::PoolKey, String, String);

fn key_of(record: &ExecutionRecord) -> ExecKey {
    (
        record.pool.clone(),
        record.identifier.clone(),
        record.id.clone(),
    )
}

impl Inner {
    pub(crate) fn unsaved(&self) -> std::sync::MutexGuard<'_, HashMap<ExecKey, ExecutionRecord>> {
        // Plain data: a panic while holding the lock leaves nothing half-done.
        self.unsaved.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A synchronous execution's record while it is only in memory; dropping it forgets the record
/// (once it is stored, or if the task running it dies).
struct Unsaved {
    inner: Arc<Inner>,
    key: ExecKey,
}

impl Unsaved {
    /// Claims the execution id in memory; the store is checked by the caller.
    fn reserve(inner: &Arc<Inner>, record: &ExecutionRecord) -> Result<Self, PoolError> {
        let key = key_of(record);
        match inner.unsaved().entry(key.clone()) {
            Entry::Occupied(_) => return Err(PoolError::ExecutionExists(record.id.clone())),
            Entry::Vacant(v) => {
                v.insert(record.clone());
            }
        }
        Ok(Unsaved {
            inner: inner.clone(),
            key,
        })
    }

    fn update(&self, record: &ExecutionRecord) {
        if let Some(r) = self.inner.unsaved().get_mut(&self.key) {
            r.clone_from(record);
        }
    }
}

impl Drop for Unsaved {
    fn drop(&mut self) {
        self.inner.unsaved().remove(&self.key);
    }
}

/// Output kept for the record, capped like the sandbox caps it (defensively: the record must
/// stay bounded whatever the sandbox sends).
struct Capture {
    buf: Vec<u8>,
    limit: usize,
    truncated: bool,
}

impl Capture {
    fn new(limit: usize) -> Self {
        Capture {
            buf: Vec::new(),
            limit,
            truncated: false,
        }
    }

    /// Keeps what fits; returns the kept part.
    fn push(&mut self, chunk: Bytes) -> Bytes {
        let room = self.limit.saturating_sub(self.buf.len());
        let kept = if chunk.len() > room {
            self.truncated = true;
            chunk.slice(..room)
        } else {
            chunk
        };
        self.buf.extend_from_slice(&kept);
        kept
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}

async fn run(
    in_use: InUse,
    unsaved: Option<Unsaved>,
    mut record: ExecutionRecord,
    req: sb::ExecRequest,
    tx: mpsc::UnboundedSender<ExecutionEvent>,
) {
    let inner = in_use.inner.clone();
    let sandbox = in_use.entry.sandbox.clone();
    let timeout = req.timeout;
    let mut out = Capture::new(req.output_limit);
    let mut err = Capture::new(req.output_limit);
    let t0 = Instant::now();

    let outcome = match sandbox.exec(req).await {
        Err(e) => Err(format!("could not start the command: {e}")),
        Ok(mut execution) => {
            let collect = async {
                while let Some(event) = execution.next().await {
                    match event
                        .map_err(|e| format!("the sandbox failed during the command: {e}"))?
                    {
                        sb::ExecEvent::Stdout(b) => {
                            let kept = out.push(b);
                            if !kept.is_empty() {
                                let _ = tx.send(ExecutionEvent::Stdout(kept));
                            }
                        }
                        sb::ExecEvent::Stderr(b) => {
                            let kept = err.push(b);
                            if !kept.is_empty() {
                                let _ = tx.send(ExecutionEvent::Stderr(kept));
                            }
                        }
                        sb::ExecEvent::Exit(outcome) => return Ok(outcome),
                    }
                }
                Err(
                    "the sandbox ended the execution without a result (was it destroyed?)"
                        .to_owned(),
                )
            };
            match tokio::time::timeout(timeout + REPORT_GRACE, collect).await {
                Ok(r) => r,
                Err(_) => Err("the sandbox did not report the end of the command".to_owned()),
            }
        }
    };

    // A command cut off by its sandbox's death: say so, and end the session now (its
    // result tells the client; the identifier's next request gets a new session). The init's
    // exit is noticed a moment after its socket closes, hence the short wait.
    let outcome = match outcome {
        Err(e) => {
            let died = tokio::time::timeout(DEATH_NOTICE, inner.runtime.exited(sandbox.id()))
                .await
                .is_ok();
            if died {
                // Ended here, or a moment ago by the session's watcher; not when the session
                // was deleted meanwhile (then its sandbox was destroyed, it did not die).
                inner.sandbox_died(&in_use.entry, true).await;
            }
            match in_use.entry.died.get() {
                Some(why) => {
                    inner.take_died_notice(&in_use.entry);
                    Err(format!("SessionSandboxDied: {why}"))
                }
                None => Err(e),
            }
        }
        ok => ok,
    };
    let duration = match &outcome {
        Ok(o) if !o.duration.is_zero() => o.duration,
        _ => t0.elapsed(),
    };
    let (status, exit_code, error) = match &outcome {
        Ok(o) => judge(o, timeout),
        Err(e) => (ExecutionStatus::Failed, None, Some(e.clone())),
    };
    record.status = status;
    record.exit_code = exit_code;
    record.error = error;
    record.stdout = out.text();
    record.stderr = err.text();
    let (sb_out_trunc, sb_err_trunc) = outcome
        .as_ref()
        .map(|o| (o.stdout_truncated, o.stderr_truncated))
        .unwrap_or((false, false));
    record.leftover_processes = outcome.as_ref().is_ok_and(|o| o.leftover_processes);
    record.stdout_truncated = out.truncated || sb_out_trunc;
    record.stderr_truncated = err.truncated || sb_err_trunc;
    record.finished_at = Some(now());
    record.duration_ms = Some(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));

    let entry = in_use.entry.clone();
    inner.metrics.executed(status, duration);
    if let Some(unsaved) = &unsaved {
        // Readable from memory until it is stored.
        unsaved.update(&record);
    }
    let unsaved = match unsaved {
        // A synchronous result goes to the saver, which answers once it is stored (so that an
        // answered result survives a crash), unless the saver is behind.
        Some(unsaved)
            if (inner.queued_results.load(Ordering::Relaxed) as usize)
                < inner.config.max_unsaved_results =>
        {
            inner.queued_results.fetch_add(1, Ordering::Relaxed);
            let job = SaveJob::Record(Box::new(ToSave {
                record,
                unsaved,
                in_use,
                answer: tx,
            }));
            if let Err(mpsc::error::SendError(SaveJob::Record(f))) = inner.saver.send(job) {
                // The saver only stops with the manager; store this one directly.
                inner.queued_results.fetch_sub(1, Ordering::Relaxed);
                if inner.is_bound(&entry) {
                    store_result(&inner, &f.record, true).await;
                }
                drop(f.unsaved);
                f.in_use.end().await;
                let _ = f.answer.send(ExecutionEvent::Finished(f.record));
                inner.release_refill_hold(&entry);
            }
            return;
        }
        other => other,
    };
    // Stored before the answer: an asynchronous execution's `Running` record is completed; a
    // synchronous one whose saver is behind is inserted, unless its session has ended.
    let insert = unsaved.is_some();
    if !insert || inner.is_bound(&entry) {
        store_result(&inner, &record, insert).await;
    }
    drop(unsaved);
    in_use.end().await;
    let _ = tx.send(ExecutionEvent::Finished(record));
    inner.release_refill_hold(&entry);
}

/// Work for [`save_loop`].
pub(crate) enum SaveJob {
    Record(Box<ToSave>),
    /// A session's restart-proof idle clock, written unless the session has ended meanwhile.
    Session(Arc<Inner>, Arc<SessionEntry>, Box<crate::SessionRecord>),
    /// Answered once every record queued before it is stored.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// A synchronous execution's result on its way to the store. The session stays in use until
/// it is written, so deleting the session cannot slip between the check for it and the write
/// and leave a record behind.
pub(crate) struct ToSave {
    record: ExecutionRecord,
    unsaved: Unsaved,
    in_use: InUse,
    /// Where the caller waits for the result: answered once the record is stored.
    answer: mpsc::UnboundedSender<ExecutionEvent>,
}

/// Most records, and bytes of output, one batch writes.
const SAVE_BATCH: usize = 64;
const SAVE_BATCH_BYTES: usize = 4 << 20;

/// Stores synchronous executions' results in batches, then answers their callers (a group
/// commit: an answered result is in the store, and survives a crash of the server). Under load,
/// executions end close together, and one statement per batch replaces a commit per execution
/// (which on SQLite also means writers queueing on its one write lock). A batch the store
/// refuses twice is stored record by record. Also writes the sessions' idle clocks that
/// requests found due, so no request waits for one.
pub(crate) async fn save_loop(
    store: Arc<dyn crate::SessionStore>,
    mut jobs: mpsc::UnboundedReceiver<SaveJob>,
) {
    let mut batch: Vec<Box<ToSave>> = Vec::new();
    let mut sessions = Vec::new();
    let mut flushes = Vec::new();
    while let Some(first) = jobs.recv().await {
        let mut next = Some(first);
        let mut bytes = 0;
        while let Some(job) = next.take() {
            match job {
                SaveJob::Record(f) => {
                    bytes += f.record.stdout.len() + f.record.stderr.len() + f.record.command.len();
                    batch.push(f);
                }
                SaveJob::Session(inner, entry, record) => sessions.push((inner, entry, record)),
                SaveJob::Flush(tx) => flushes.push(tx),
            }
            if batch.len() < SAVE_BATCH && bytes < SAVE_BATCH_BYTES {
                next = jobs.try_recv().ok();
            }
        }
        let records: Vec<ExecutionRecord> = batch
            .iter()
            .filter(|f| f.in_use.inner.is_bound(&f.in_use.entry))
            .map(|f| f.record.clone())
            .collect();
        let mut stored = false;
        for attempt in 0..2 {
            match store.insert_executions(&records).await {
                Ok(()) => {
                    stored = true;
                    break;
                }
                Err(e) => {
                    tracing::warn!(executions = records.len(), attempt, error = %format!("{e:#}"), "recording execution results")
                }
            }
        }
        if !stored {
            // One by one, so that one record the store refuses does not lose the others.
            for record in &records {
                if !insert_one(store.as_ref(), record).await {
                    tracing::error!(execution = %record.id, pool = %record.pool, identifier = %record.identifier, "an execution result could not be stored; it was answered but cannot be read back");
                }
            }
        }
        for f in batch.drain(..) {
            let ToSave {
                record,
                unsaved,
                in_use,
                answer,
            } = *f;
            in_use.inner.queued_results.fetch_sub(1, Ordering::Relaxed);
            drop(unsaved);
            let entry = in_use.entry.clone();
            let inner = in_use.inner.clone();
            in_use.end().await;
            let _ = answer.send(ExecutionEvent::Finished(record));
            inner.release_refill_hold(&entry);
        }
        for (inner, entry, record) in sessions.drain(..) {
            if inner.is_bound(&entry) {
                inner.persist(Some(*record)).await;
            }
        }
        for tx in flushes.drain(..) {
            let _ = tx.send(());
        }
    }
}

/// Inserts one finished execution, retrying once; whether it is stored.
async fn insert_one(store: &dyn crate::SessionStore, record: &ExecutionRecord) -> bool {
    for _ in 0..2 {
        match store.insert_execution(record).await {
            Ok(_) => return true,
            Err(e) => {
                tracing::warn!(execution = %record.id, error = %format!("{e:#}"), "recording an execution result")
            }
        }
    }
    false
}

/// Writes a finished execution: inserted when it was never stored, else updated. A store
/// hiccup must not lose the result or leave the record `Running` forever: retry once.
async fn store_result(inner: &Inner, record: &ExecutionRecord, insert: bool) {
    for attempt in 0..2 {
        let result = if insert {
            inner.store.insert_execution(record).await
        } else {
            inner.store.update_execution(record).await
        };
        match result {
            Ok(true) => return,
            Ok(false) => {
                tracing::warn!(execution = %record.id, insert, "execution record already existed or was gone");
                return;
            }
            Err(e) => {
                tracing::warn!(execution = %record.id, attempt, error = %format!("{e:#}"), "recording execution result")
            }
        }
    }
}

/// Status, exit code and error of a command that the sandbox reported ended.
fn judge(o: &sb::ExecOutcome, timeout: Duration) -> (ExecutionStatus, Option<i32>, Option<String>) {
    if o.timed_out {
        let msg = format!(
            "ExecutionTimedOut: the command did not finish within {} s and was killed",
            timeout.as_secs()
        );
        return (ExecutionStatus::TimedOut, o.exit_code, Some(msg));
    }
    if o.oom_killed {
        let msg = "the command was killed: the session ran out of memory".to_owned();
        return (ExecutionStatus::Failed, o.exit_code, Some(msg));
    }
    match (o.exit_code, o.signal) {
        (Some(code), _) => (ExecutionStatus::Succeeded, Some(code), None),
        (None, Some(sig)) => (
            ExecutionStatus::Failed,
            None,
            Some(format!("the command was killed by signal {sig}")),
        ),
        (None, None) => (
            ExecutionStatus::Failed,
            None,
            Some("the command ended without an exit status".into()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_truncates_and_flags() {
        let mut c = Capture::new(5);
        assert_eq!(c.push(Bytes::from_static(b"abc")).as_ref(), b"abc");
        assert_eq!(c.push(Bytes::from_static(b"defg")).as_ref(), b"de");
        assert!(c.truncated);
        assert_eq!(c.push(Bytes::from_static(b"x")).len(), 0);
        assert_eq!(c.text(), "abcde");
    }

    #[test]
    fn execution_ids_are_checked() {
        assert!(validate_id("op-1".into()).is_ok());
        assert!(validate_id(String::new()).is_err());
        assert!(validate_id("a b".into()).is_err());
        assert!(validate_id("x".repeat(129)).is_err());
    }
}
