//! Runs one command in a fresh sandbox of `sandpool-sandbox`: start, unpack the context,
//! install the kubeconfig, run, collect logs, destroy.

use std::io;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use sandpool_sandbox::{
    ExecEvent, ExecOutcome, ExecRequest, Limits, NetworkMode, RootFs, Runtime, Sandbox, SandboxSpec,
};
use tokio::sync::mpsc;
use tokio_util::io::StreamReader;
use tokio_util::sync::CancellationToken;

use crate::context::{
    open_context, read_entry, ContextError, ContextPlan, PlannedFile, UnpackBudget,
};
use crate::logs::LogBuffer;
use crate::model::CommandJob;
use crate::runner::{Engine, EngineFuture, Outcome, RunnerConfig, SHUTDOWN_REASON};
use crate::{KUBECONFIG_PATH, SANDBOX_ID_PREFIX, WORK_DIR};

/// Room on the working directory's tmpfs beyond the context itself, for what the command writes.
const WORK_DIR_SLACK: u64 = 256 << 20;
/// The init's own output cap is not used: the tail matters, and [`LogBuffer`] keeps it in
/// bounded memory however much streams through.
const UNLIMITED_OUTPUT: usize = 1 << 62;

pub(crate) struct SandboxEngine {
    runtime: Runtime,
}

impl SandboxEngine {
    pub(crate) fn new(runtime: Runtime) -> SandboxEngine {
        SandboxEngine { runtime }
    }
}

impl Engine for SandboxEngine {
    fn run<'a>(
        &'a self,
        job: &'a CommandJob,
        plan: ContextPlan,
        cfg: &'a RunnerConfig,
        cancel: CancellationToken,
    ) -> EngineFuture<'a> {
        Box::pin(run(&self.runtime, job, plan, cfg, cancel))
    }
}

fn spec_for(job: &CommandJob, plan: &ContextPlan) -> SandboxSpec {
    let s = &job.settings;
    let defaults = Limits::default();
    SandboxSpec {
        id: Some(format!("{SANDBOX_ID_PREFIX}{}", job.id)),
        rootfs: RootFs::Host,
        limits: Limits {
            memory_bytes: s.memory_bytes.or(defaults.memory_bytes),
            pids: s.pids.or(defaults.pids),
            cpu_millicores: s.cpu_millicores.or(defaults.cpu_millicores),
            data_bytes: defaults
                .data_bytes
                .max(plan.declared_bytes.saturating_add(WORK_DIR_SLACK)),
            ..defaults
        },
        network: if s.egress {
            NetworkMode::Egress
        } else {
            NetworkMode::None
        },
        env: Vec::new(),
        hostname: "runcommand".to_string(),
    }
}

fn failed(reason: impl Into<String>) -> Outcome {
    Outcome::Failed {
        reason: reason.into(),
        logs: String::new(),
    }
}

async fn run(
    runtime: &Runtime,
    job: &CommandJob,
    plan: ContextPlan,
    cfg: &RunnerConfig,
    cancel: CancellationToken,
) -> Outcome {
    let spec = spec_for(job, &plan);
    // Not raced against `cancel`: the runtime finishes a start even when its caller stops
    // waiting, and the sandbox must be in hand to be destroyed.
    let sandbox = match runtime.start(spec).await {
        Ok(sb) => sb,
        Err(e) => return failed(format!("could not start the sandbox: {e}")),
    };
    if cancel.is_cancelled() {
        destroy(&sandbox, job).await;
        return failed(SHUTDOWN_REASON);
    }
    let outcome = tokio::select! {
        out = drive(&sandbox, job, &plan, cfg) => out,
        _ = cancel.cancelled() => failed(SHUTDOWN_REASON),
    };
    destroy(&sandbox, job).await;
    outcome
}

async fn destroy(sandbox: &Sandbox, job: &CommandJob) {
    if let Err(e) = sandbox.destroy().await {
        tracing::warn!(id = %job.id, sandbox = %sandbox.id(), error = %e, "run command: destroying the sandbox failed");
    }
}

async fn drive(
    sandbox: &Sandbox,
    job: &CommandJob,
    plan: &ContextPlan,
    cfg: &RunnerConfig,
) -> Outcome {
    if let Err(reason) = unpack(sandbox, job, plan, cfg).await {
        return failed(reason);
    }
    let mut env = Vec::new();
    if let Some(kubeconfig) = &job.settings.kubeconfig {
        if let Err(reason) = install_kubeconfig(sandbox, kubeconfig).await {
            return failed(reason);
        }
        env.push(("KUBECONFIG".to_string(), KUBECONFIG_PATH.to_string()));
    }
    let timeout = job.settings.command_timeout;
    let req = ExecRequest {
        command: job.command.clone(),
        env,
        cwd: Some(WORK_DIR.to_string()),
        stdin: None,
        timeout,
        output_limit: UNLIMITED_OUTPUT,
        merge_output: true,
    };
    let mut exec = match sandbox.exec(req).await {
        Ok(e) => e,
        Err(e) => return failed(format!("could not start the command: {e}")),
    };
    let mut logs = LogBuffer::new(cfg.log_cap);
    let ended: Result<ExecOutcome, String> = loop {
        match exec.next().await {
            Some(Ok(ExecEvent::Stdout(b))) | Some(Ok(ExecEvent::Stderr(b))) => logs.push(&b),
            Some(Ok(ExecEvent::Exit(outcome))) => break Ok(outcome),
            Some(Err(e)) => {
                break Err(format!("the sandbox failed while running the command: {e}"))
            }
            None => break Err("the sandbox ended the command without an exit status".to_string()),
        }
    };
    let outcome = match ended {
        Ok(o) => o,
        Err(reason) => {
            return Outcome::Failed {
                reason,
                logs: logs.finish(),
            }
        }
    };
    if outcome.timed_out {
        return Outcome::Failed {
            reason: format!(
                "the command timed out after {} s; its processes were killed",
                timeout.as_secs_f64()
            ),
            logs: logs.finish(),
        };
    }
    let exit_code = match (outcome.exit_code, outcome.signal) {
        (Some(code), _) => code,
        // What a shell reports for a command killed by a signal.
        (None, Some(sig)) => 128 + sig,
        (None, None) => {
            return Outcome::Failed {
                reason: "the command ended without an exit status".to_string(),
                logs: logs.finish(),
            }
        }
    };
    let mut text = logs.finish();
    if outcome.oom_killed {
        text.push_str("\n[sandpool: the command was killed: out of memory]\n");
    }
    Outcome::Exited {
        exit_code,
        logs: text,
    }
}

/// Writes the kubeconfig with mode 0600 from the start (umask), inside the sandbox.
async fn install_kubeconfig(sandbox: &Sandbox, kubeconfig: &str) -> Result<(), String> {
    let mut req = ExecRequest::new(
        "umask 077 && mkdir -p /root/.kube && cat > /root/.kube/config && chmod 600 /root/.kube/config",
    );
    req.stdin = Some(Bytes::copy_from_slice(kubeconfig.as_bytes()));
    helper_exec(sandbox, req, "install the kubeconfig").await
}

/// Runs a small fixed helper command; any failure is the job's failure.
async fn helper_exec(sandbox: &Sandbox, mut req: ExecRequest, what: &str) -> Result<(), String> {
    req.merge_output = true;
    req.output_limit = 4096;
    match sandbox.exec_collect(req).await {
        Ok(out) if out.outcome.exit_code == Some(0) => Ok(()),
        Ok(out) => Err(format!(
            "could not {what}: {}",
            String::from_utf8_lossy(&out.stdout).trim()
        )),
        Err(e) => Err(format!("could not {what}: {e}")),
    }
}

/// Runs `cmd` (a fixed `xargs -0` line) in the working directory on NUL-separated paths.
async fn on_paths<'p>(
    sandbox: &Sandbox,
    cmd: &str,
    paths: impl Iterator<Item = &'p str>,
    what: &str,
) -> Result<(), String> {
    let mut list = Vec::new();
    for p in paths {
        list.extend_from_slice(p.as_bytes());
        list.push(0);
    }
    if list.is_empty() {
        return Ok(());
    }
    let mut req = ExecRequest::new(cmd);
    req.cwd = Some(WORK_DIR.to_string());
    req.stdin = Some(Bytes::from(list));
    helper_exec(sandbox, req, what).await
}

type ChunkStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

fn chunk_stream(rx: mpsc::Receiver<io::Result<Bytes>>) -> ChunkStream {
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// Unpacks the planned context into [`WORK_DIR`] through the sandbox's file interface, which
/// resolves every path inside the sandbox, beneath the working directory.
async fn unpack(
    sandbox: &Sandbox,
    job: &CommandJob,
    plan: &ContextPlan,
    cfg: &RunnerConfig,
) -> Result<(), String> {
    if plan.is_empty() {
        return Ok(());
    }
    let work = sandbox.confined(WORK_DIR);
    // Directories that hold a file are created by the file writes themselves.
    let empty_dirs = plan.dirs.iter().filter(|d| {
        let prefix = format!("{d}/");
        !plan.files.iter().any(|f| f.path.starts_with(&prefix))
    });
    on_paths(
        sandbox,
        "xargs -0 -r mkdir -p --",
        empty_dirs.map(String::as_str),
        "create the context's directories",
    )
    .await?;

    let (tx, mut rx) = mpsc::channel::<(PlannedFile, mpsc::Receiver<io::Result<Bytes>>)>(1);
    let context = Arc::new(job.context.clone());
    let files = plan.files.clone();
    let limits = cfg.context_limits.clone();
    let reader = tokio::task::spawn_blocking(move || -> Result<(), ContextError> {
        let mut archive = open_context(&context)?;
        let mut budget = UnpackBudget::default();
        for file in files {
            let (chunk_tx, chunk_rx) = mpsc::channel(4);
            if tx.blocking_send((file.clone(), chunk_rx)).is_err() {
                return Ok(()); // the writer gave up; its error is the one to report
            }
            let sent = read_entry(&mut archive, &file, &limits, &mut budget, |chunk| {
                chunk_tx.blocking_send(Ok(Bytes::copy_from_slice(chunk)))
            });
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Ok(()),
                Err(e) => {
                    let _ = chunk_tx.blocking_send(Err(io::Error::other(e.to_string())));
                    return Err(e);
                }
            }
        }
        Ok(())
    });

    let mut write_error = None;
    while let Some((file, chunks)) = rx.recv().await {
        let data = StreamReader::new(chunk_stream(chunks));
        if let Err(e) = work
            .write_file(&format!("{WORK_DIR}/{}", file.path), data)
            .await
        {
            write_error = Some(format!(
                "could not unpack {:?} into {WORK_DIR}: {e}",
                file.path
            ));
            break;
        }
    }
    drop(rx);
    match reader.await {
        Ok(Err(e)) => return Err(e.to_string()),
        Ok(Ok(())) => {}
        Err(e) => return Err(format!("unpacking the context failed: {e}")),
    }
    if let Some(e) = write_error {
        return Err(e);
    }
    let executables = plan
        .files
        .iter()
        .filter(|f| f.executable)
        .map(|f| f.path.as_str());
    on_paths(
        sandbox,
        "xargs -0 -r chmod a+x --",
        executables,
        "mark the context's executables",
    )
    .await
}
