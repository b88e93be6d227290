//! The full-stack figures of issue 7: a real server (see [`crate::stack`]) driven over HTTP by
//! the typed client, each figure beside its peers measured in the same run. Where it helps
//! against drift on a shared machine, sandpool and its peers are sampled in alternation.

use crate::peers::{self, CrunBundle};
use crate::report::{Report, Row, Target, Value};
use crate::stack::{StackServer, GROUP};
use crate::stats::{rounds, Interleaved, Summary};
use anyhow::{bail, ensure, Context, Result};
use sandpool_client::{Client, SessionRef};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The full-stack scenarios, in the order `all` runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    HttpExec,
    NewSession,
    Throughput,
    Runcommand,
    Files,
    Density,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::HttpExec,
        Scenario::NewSession,
        Scenario::Throughput,
        Scenario::Runcommand,
        Scenario::Files,
        // Last: its thousand sessions would weigh on every other figure.
        Scenario::Density,
    ];
}

/// How big each scenario is.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Samples of each latency figure.
    pub iterations: usize,
    /// Live sessions of the density figure.
    pub sessions: usize,
    /// Size of the file the files figure moves.
    pub file_mib: u64,
}

const ECHO: &str = "echo hi";
const THROUGHPUT_SESSIONS: usize = 64;

/// Starts a server, runs `scenarios` against it, stops it and checks the host is clean. Ctrl-C
/// (or SIGTERM) stops the run, still cleaning up.
pub async fn run(scenarios: &[Scenario], sizes: Sizes) -> Result<Report> {
    ensure!(sizes.iterations > 0, "--iterations must be at least 1");
    // Registered before the server starts, so no moment of the run dies of the default action.
    let interrupt = interrupt_signals()?;
    tokio::pin!(interrupt);
    let stopped = || anyhow::anyhow!("interrupted; the server and its sandboxes were removed");
    let mut server = tokio::select! {
        s = StackServer::start() => s?,
        _ = &mut interrupt => return Err(stopped()),
    };
    let measured = tokio::select! {
        r = measure(&server, scenarios, sizes) => r,
        _ = &mut interrupt => Err(stopped()),
    };
    let left = server.stop();
    if left.is_empty() {
        eprintln!("cleanup: no sandbox, cgroup or server process of the run is left");
    } else {
        eprintln!("cleanup: LEFT ON THE HOST: {}", left.join("; "));
    }
    let mut report = measured?;
    report.leftovers = Some(left);
    Ok(report)
}

/// Resolves on the first SIGINT or SIGTERM after this call.
fn interrupt_signals() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}

async fn measure(server: &StackServer, scenarios: &[Scenario], sizes: Sizes) -> Result<Report> {
    let mut report = Report::default();
    for s in scenarios {
        eprintln!("measuring {s:?}");
        let rows = match s {
            Scenario::HttpExec => http_exec(server, sizes).await,
            Scenario::NewSession => new_session(server, sizes).await,
            Scenario::Throughput => throughput(server, sizes).await,
            Scenario::Runcommand => runcommand(server, sizes).await,
            Scenario::Files => files(server, sizes).await,
            Scenario::Density => density(server, sizes).await,
        }
        .with_context(|| format!("scenario {s:?}"))?;
        report.rows.extend(rows);
    }
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// A Dynamic Shell pool without egress whose sessions outlive the run (cooldown one hour).
async fn make_pool(c: &Client, name: &str, max: usize, ready: usize) -> Result<()> {
    let body = json!({
        "location": "local",
        "properties": {
            "poolManagementType": "Dynamic",
            "containerType": "Shell",
            "scaleConfiguration": {"maxConcurrentSessions": max, "readySessionInstances": ready},
            "dynamicPoolConfiguration": {"lifecycleConfiguration": {
                "lifecycleType": "Timed", "cooldownPeriodInSeconds": 3600}},
            "sessionNetworkConfiguration": {"status": "EgressDisabled"},
        }
    });
    c.create_pool(GROUP, name, &body)
        .await
        .with_context(|| format!("creating pool {name}"))?;
    Ok(())
}

/// Deletes a scenario's pool (and so its sessions), so the next scenario runs on a quiet host.
async fn drop_pool(c: &Client, name: &str) {
    if let Err(e) = c.delete_pool(GROUP, name).await {
        eprintln!("deleting pool {name}: {e}");
    }
}

fn session(pool: &str, identifier: impl Into<String>) -> SessionRef {
    SessionRef {
        resource_group: GROUP.into(),
        pool: pool.into(),
        identifier: identifier.into(),
    }
}

/// `POST executions` of `echo hi`: the time to a checked answer.
async fn exec_echo(c: &Client, s: &SessionRef) -> Result<Duration> {
    let start = Instant::now();
    let e = c
        .execute(s, ECHO, None)
        .await
        .with_context(|| format!("executing in session {}", s.identifier))?;
    let elapsed = start.elapsed();
    let stdout = e.result.as_ref().map(|r| r.stdout.as_str());
    ensure!(
        e.status == "0" && stdout == Some("hi\n"),
        "`{ECHO}` in session {} answered status {} stdout {stdout:?}",
        s.identifier,
        e.status
    );
    Ok(elapsed)
}

/// Ready (started, unbound) sandboxes of a pool, from the server's `/metrics`.
async fn ready_sessions(server: &StackServer, pool: &str) -> Result<u64> {
    let key = sandpool_client::ids::session_pool(server.client().subscription(), GROUP, pool)
        .to_lowercase();
    let prefix = format!("sandpool_pool_ready_sessions{{pool=\"{key}\"}} ");
    let text = server.metrics().await?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

async fn wait_ready(server: &StackServer, pool: &str, want: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while ready_sessions(server, pool).await? < want {
        if Instant::now() > deadline {
            bail!("pool {pool} did not refill to {want} ready sandboxes within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

fn crun_idle() -> Result<CrunBundle> {
    CrunBundle::new(&["/bin/sh", "-c", "sleep 3600"])
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

/// Warm exec (1): `POST executions` of `echo hi` in an existing session.
async fn http_exec(server: &StackServer, sizes: Sizes) -> Result<Vec<Row>> {
    let c = server.client();
    make_pool(c, "warm", 2, 0).await?;
    let s = session("warm", "bench-warm");
    for _ in 0..3 {
        exec_echo(c, &s).await?;
    }
    let bundle = crun_idle()?;
    let container = bundle.start_detached()?;
    let (sp, fe, bw, ce) = (0, 1, 2, 3);
    let mut m = Interleaved::new(4);
    for n in rounds(sizes.iterations) {
        for _ in 0..n {
            m.push(sp, exec_echo(c, &s).await?);
        }
        for _ in 0..n {
            m.push(fe, peers::fork_exec(ECHO)?);
        }
        for _ in 0..n {
            m.push(bw, peers::bwrap(ECHO)?);
        }
        for _ in 0..n {
            m.push(ce, container.exec(ECHO)?);
        }
    }
    drop(container);
    drop_pool(c, "warm").await;
    Ok(vec![
        Row {
            figure: "warm exec over HTTP (`echo hi`)".into(),
            sandpool: m.summary(sp),
            peers: vec![
                ("fork+exec".into(), m.summary(fe)),
                ("bwrap".into(), m.summary(bw)),
                ("crun exec".into(), m.summary(ce)),
            ],
            target: Some(Target {
                peer: Some("fork+exec"),
                at_most: 2.0,
            }),
        },
        Row {
            figure: "warm exec over HTTP, against bwrap".into(),
            sandpool: m.summary(sp),
            peers: vec![("bwrap".into(), m.summary(bw))],
            target: Some(Target {
                peer: Some("bwrap"),
                at_most: 0.5,
            }),
        },
    ])
}

/// New session (2): the first command of a new identifier, with a warm pool and an empty one.
async fn new_session(server: &StackServer, sizes: Sizes) -> Result<Vec<Row>> {
    let c = server.client();
    make_pool(c, "fresh-warm", 4, 1).await?;
    make_pool(c, "fresh-cold", 4, 0).await?;
    make_pool(c, "fresh-base", 1, 0).await?;
    let base = session("fresh-base", "bench-base");
    exec_echo(c, &base).await?;
    let crun_echo = CrunBundle::new(&["/bin/sh", "-c", ECHO])?;
    let (warm, cold, exec, crun) = (0, 1, 2, 3);
    let mut m = Interleaved::new(4);
    for i in 0..sizes.iterations {
        wait_ready(server, "fresh-warm", 1).await?;
        let s = session("fresh-warm", format!("bench-new-{i}"));
        m.push(warm, exec_echo(c, &s).await?);
        c.delete_session(&s).await?;
        // The warm pool starts its replacement once that first command has answered: let it
        // finish so that it does not weigh on the cold start measured next.
        wait_ready(server, "fresh-warm", 1).await?;
        let s = session("fresh-cold", format!("bench-new-{i}"));
        m.push(cold, exec_echo(c, &s).await?);
        c.delete_session(&s).await?;
        m.push(exec, exec_echo(c, &base).await?);
        m.push(crun, crun_echo.run()?);
    }
    for p in ["fresh-warm", "fresh-cold", "fresh-base"] {
        drop_pool(c, p).await;
    }
    Ok(vec![
        Row {
            figure: "new session, warm pool: first command".into(),
            sandpool: m.summary(warm),
            peers: vec![
                ("warm exec".into(), m.summary(exec)),
                ("crun run".into(), m.summary(crun)),
            ],
            target: Some(Target {
                peer: Some("warm exec"),
                at_most: 1.5,
            }),
        },
        Row {
            figure: "new session, empty pool: first command".into(),
            sandpool: m.summary(cold),
            peers: vec![("crun run".into(), m.summary(crun))],
            target: Some(Target {
                peer: Some("crun run"),
                at_most: 0.5,
            }),
        },
    ])
}

/// Runs `total` executions from `clients` concurrent clients, client `j` cycling over the
/// sessions `k` with `k % clients == j`; answers executions per second.
async fn exec_rate(
    c: &Client,
    sessions: &[SessionRef],
    clients: usize,
    total: usize,
) -> Result<f64> {
    let per_client = total.div_ceil(clients);
    let sessions: Arc<Vec<SessionRef>> = Arc::new(sessions.to_vec());
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for j in 0..clients {
        let (c, sessions) = (c.clone(), sessions.clone());
        tasks.spawn(async move {
            let mine: Vec<&SessionRef> = sessions.iter().skip(j).step_by(clients).collect();
            for n in 0..per_client {
                exec_echo(&c, mine[n % mine.len()]).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok((per_client * clients) as f64 / start.elapsed().as_secs_f64())
}

/// The same number of raw fork+execs of `/bin/sh -c 'echo hi'` from `clients` threads.
fn fork_exec_rate(clients: usize, total: usize) -> Result<f64> {
    let per_client = total.div_ceil(clients);
    let start = Instant::now();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                scope.spawn(move || -> Result<()> {
                    for _ in 0..per_client {
                        peers::fork_exec(ECHO)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .map_err(|_| anyhow::anyhow!("a fork+exec thread panicked"))?
        })
    })?;
    Ok((per_client * clients) as f64 / start.elapsed().as_secs_f64())
}

/// Throughput (3): executions per second with 1, 8 and 64 concurrent clients over 64 sessions.
async fn throughput(server: &StackServer, sizes: Sizes) -> Result<Vec<Row>> {
    let c = server.client();
    make_pool(c, "tput", THROUGHPUT_SESSIONS, 0).await?;
    let sessions: Vec<SessionRef> = (0..THROUGHPUT_SESSIONS)
        .map(|i| session("tput", format!("bench-tput-{i}")))
        .collect();
    // Allocates every session (untimed), eight at a time.
    for chunk in sessions.chunks(8) {
        let mut tasks = tokio::task::JoinSet::new();
        for s in chunk {
            let (c, s) = (c.clone(), s.clone());
            tasks.spawn(async move { exec_echo(&c, &s).await });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
    }
    let mut rows = Vec::new();
    for clients in [1, 8, 64] {
        let total = (sizes.iterations * 2).max(clients * 3);
        let sandpool = exec_rate(c, &sessions, clients, total).await?;
        let raw = fork_exec_rate(clients, total)?;
        rows.push(Row {
            figure: format!("throughput, {clients} concurrent clients over 64 sessions"),
            sandpool: Value::Rate {
                rate: sandpool,
                unit: "exec/s",
            },
            peers: vec![(
                "fork+exec".into(),
                Value::Rate {
                    rate: raw,
                    unit: "exec/s",
                },
            )],
            target: (clients == 64).then_some(Target {
                peer: Some("fork+exec"),
                at_most: 0.5,
            }),
        });
    }
    drop_pool(c, "tput").await;
    Ok(rows)
}

/// `MemTotal − MemAvailable`: memory the host no longer has available, by the kernel's account.
fn host_memory_in_use() -> Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    let kib = |name: &str| -> Result<u64> {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .with_context(|| format!("{name} missing from /proc/meminfo"))
    };
    Ok((kib("MemTotal:")? - kib("MemAvailable:")?) * 1024)
}

/// Resident memory of a process (`VmRSS`), in bytes.
fn rss_of(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .context("VmRSS missing from the server's status")
}

/// Memory charged to every sandbox cgroup of the run, and how many there are.
fn sandbox_cgroup_memory(cgroup_parent: &str) -> Result<(u64, usize)> {
    let manager = sandpool_cgroups::CgroupManager::detect(cgroup_parent)?;
    let names = manager.list()?;
    let mut sum = 0;
    for name in &names {
        sum += manager.open(name)?.stats()?.memory_current;
    }
    Ok((sum, names.len()))
}

fn kib_per(bytes: u64, n: usize) -> Value {
    Value::Quantity {
        value: bytes as f64 / n.max(1) as f64 / 1024.0,
        unit: "KiB",
    }
}

/// Density (4): `--sessions` live sessions in one pool; host memory per session and exec p50
/// with them all alive against the same with one.
async fn density(server: &StackServer, sizes: Sizes) -> Result<Vec<Row>> {
    let c = server.client();
    let n = sizes.sessions.max(1);
    make_pool(c, "dense", n, 0).await?;
    let sessions: Vec<SessionRef> = (0..n)
        .map(|i| session("dense", format!("bench-dense-{i}")))
        .collect();
    let server_pid = server.child_pid().context("the server is not running")?;
    let settle = Duration::from_secs(2);
    exec_echo(c, &sessions[0]).await?;
    let mut at_one = Vec::with_capacity(sizes.iterations);
    for _ in 0..sizes.iterations {
        at_one.push(exec_echo(c, &sessions[0]).await?);
    }
    tokio::time::sleep(settle).await;
    let (host_before, rss_before) = (host_memory_in_use()?, rss_of(server_pid)?);
    let (cg_before, _) = sandbox_cgroup_memory(server.cgroup_parent())?;
    // The other n − 1 sessions, eight allocations at a time.
    let rest = Arc::new(sessions[1..].to_vec());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (c, rest, next) = (c.clone(), rest.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(s) = rest.get(i) else {
                    return anyhow::Ok(());
                };
                exec_echo(&c, s).await?;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    tokio::time::sleep(settle).await;
    let (host_after, rss_after) = (host_memory_in_use()?, rss_of(server_pid)?);
    let (cg_after, cgroups) = sandbox_cgroup_memory(server.cgroup_parent())?;
    ensure!(
        cgroups >= n,
        "{n} sessions should be alive but only {cgroups} sandbox cgroups exist"
    );
    let added = n - 1;
    // Spread over the live sessions: each execution reaches a different sandbox.
    let mut at_n = Vec::with_capacity(sizes.iterations);
    for i in 0..sizes.iterations {
        at_n.push(exec_echo(c, &sessions[i * n / sizes.iterations]).await?);
    }
    drop_pool(c, "dense").await;
    if added == 0 {
        bail!("--sessions must be at least 2 to measure memory per session");
    }
    Ok(vec![
        Row {
            figure: format!("host memory per session, {n} alive (MemAvailable drop)"),
            sandpool: kib_per(host_after.saturating_sub(host_before), added),
            peers: Vec::new(),
            target: Some(Target {
                peer: None,
                at_most: 1024.0,
            }),
        },
        Row {
            figure: format!("  of which sandbox cgroup memory per session, {n} alive"),
            sandpool: kib_per(cg_after.saturating_sub(cg_before), added),
            peers: Vec::new(),
            target: None,
        },
        Row {
            figure: format!("  of which server RSS growth per session, {n} alive"),
            sandpool: kib_per(rss_after.saturating_sub(rss_before), added),
            peers: Vec::new(),
            target: None,
        },
        Row {
            figure: format!("exec over HTTP with {n} sessions alive"),
            sandpool: Value::Latency(Summary::of(&at_n)),
            peers: vec![(
                "1 session alive".into(),
                Value::Latency(Summary::of(&at_one)),
            )],
            target: Some(Target {
                peer: Some("1 session alive"),
                at_most: 1.2,
            }),
        },
    ])
}

/// A zip holding one 10 KiB file, stored uncompressed (so the context is 10 KiB on the wire).
fn context_zip() -> Result<Vec<u8>> {
    use std::io::Write;
    let mut data = vec![0u8; 10 * 1024];
    let mut x: u32 = 0x9e37_79b9;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("context.bin", options)?;
    zip.write_all(&data)?;
    Ok(zip.finish()?.into_inner())
}

/// Submit → result ready, polled every 2 ms (the client's own wait honours `Retry-After: 1`,
/// which would measure the poll interval instead).
async fn run_command_once(c: &Client, cluster: &str, zip: &[u8]) -> Result<Duration> {
    let command = "test -s context.bin && echo hi";
    let start = Instant::now();
    let id = c.run_command(GROUP, cluster, command, zip).await?;
    loop {
        let r = c.command_result(GROUP, cluster, &id).await?;
        if r.is_finished() {
            let elapsed = start.elapsed();
            ensure!(
                r.provisioning_state == "Succeeded"
                    && r.exit_code == Some(0)
                    && r.logs.contains("hi"),
                "run command {id}: {} exit {:?} reason {:?} logs {:?}",
                r.provisioning_state,
                r.exit_code,
                r.reason,
                r.logs
            );
            return Ok(elapsed);
        }
        if start.elapsed() > Duration::from_secs(120) {
            bail!("run command {id} did not finish within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Run Command (5): submit → result, `echo` with a 10 KiB context.
async fn runcommand(server: &StackServer, sizes: Sizes) -> Result<Vec<Row>> {
    let c = server.client();
    c.create_cluster(
        GROUP,
        "bench",
        &json!({"location": "local", "properties": {}}),
    )
    .await
    .context("creating the managed cluster")?;
    let zip = context_zip()?;
    run_command_once(c, "bench", &zip).await?;
    let crun_echo = CrunBundle::new(&["/bin/sh", "-c", ECHO])?;
    let (sp, crun, bw) = (0, 1, 2);
    let mut m = Interleaved::new(3);
    for n in rounds(sizes.iterations.min(100)) {
        for _ in 0..n {
            m.push(sp, run_command_once(c, "bench", &zip).await?);
        }
        for _ in 0..n {
            m.push(crun, crun_echo.run()?);
        }
        for _ in 0..n {
            m.push(bw, peers::bwrap(ECHO)?);
        }
    }
    if let Err(e) = c.delete_cluster(GROUP, "bench").await {
        eprintln!("deleting the managed cluster: {e}");
    }
    Ok(vec![Row {
        figure: "run command submit → result (`echo`, 10 KiB context)".into(),
        sandpool: m.summary(sp),
        peers: vec![
            ("crun run".into(), m.summary(crun)),
            ("bwrap".into(), m.summary(bw)),
        ],
        target: None,
    }])
}

fn mib_per_s(mib: u64, d: Duration) -> Value {
    Value::Rate {
        rate: mib as f64 / d.as_secs_f64(),
        unit: "MiB/s",
    }
}

/// Files (6): upload and download of a `--file-mib` MiB file through the files API, beside a
/// plain copy of the same file into a tmpfs (what `/mnt/data` is inside the session).
async fn files(server: &StackServer, sizes: Sizes) -> Result<Vec<Row>> {
    let c = server.client();
    make_pool(c, "files", 1, 0).await?;
    let s = session("files", "bench-files");
    exec_echo(c, &s).await?;
    let dir = tempfile::Builder::new()
        .prefix("sandpool-bench-files")
        .tempdir()?;
    let local = dir.path().join("blob.bin");
    let len = sizes.file_mib * 1024 * 1024;
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&local)?);
        let chunk: Vec<u8> = (0..1024 * 1024u32).map(|i| (i * 7 + 3) as u8).collect();
        for _ in 0..sizes.file_mib {
            f.write_all(&chunk)?;
        }
        f.flush()?;
    }
    let shm = tempfile::Builder::new()
        .prefix("sandpool-bench-copy")
        .tempdir_in("/dev/shm")?;
    let reps = sizes.iterations.clamp(1, 3);
    let (up, down, copy) = (0, 1, 2);
    let mut m = Interleaved::new(3);
    for _ in 0..reps {
        let start = Instant::now();
        let entry = c.upload_file(&s, &local, "blob.bin", None).await?;
        m.push(up, start.elapsed());
        ensure!(
            entry.size_in_bytes == len,
            "uploaded {len} bytes, the server stored {}",
            entry.size_in_bytes
        );
        let start = Instant::now();
        let n = c
            .download_file(&s, "blob.bin", &mut tokio::io::sink())
            .await?;
        m.push(down, start.elapsed());
        ensure!(n == len, "uploaded {len} bytes, downloaded {n}");
        let target = shm.path().join("blob.bin");
        let start = Instant::now();
        std::fs::copy(&local, &target)?;
        m.push(copy, start.elapsed());
        std::fs::remove_file(&target)?;
    }
    drop_pool(c, "files").await;
    let mib = sizes.file_mib;
    Ok(vec![
        Row {
            figure: format!("files: upload of {mib} MiB"),
            sandpool: mib_per_s(mib, m.median(up)),
            peers: vec![("copy to tmpfs".into(), mib_per_s(mib, m.median(copy)))],
            target: None,
        },
        Row {
            figure: format!("files: download of {mib} MiB"),
            sandpool: mib_per_s(mib, m.median(down)),
            peers: vec![("copy to tmpfs".into(), mib_per_s(mib, m.median(copy)))],
            target: None,
        },
    ])
}
