//! Soak: `SANDPOOL_SOAK_SESSIONS` sessions (default 200) × `SANDPOOL_SOAK_EXECUTIONS`
//! executions each (default 20), eight at a time, against a real server process on loopback,
//! while sandboxes are killed from the host at random, a second server is started and stopped
//! beside the first, and the first is SIGKILLed and restarted once. No request may hang (each
//! has a bound), every failed answer must carry an error code, and at the end no session,
//! stored session, cgroup or process is left.
//!
//! `harness = false`: this binary is both the test and, when `SANDPOOL_INSTANCE_CHILD` is set,
//! a server process.

#[path = "common/child.rs"]
mod child;

use child::{child, free_port, spec_of, wait_ready, ChildGuard, Instance, CHILD_ENV};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sandpool_server::testing::{cgroup_children, host_leftovers, test_sandbox_settings, HostGuard};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const V: &str = "api-version=2025-02-02-preview";
/// No single request may take longer than this: beyond it, it counts as hung.
const REQUEST_BOUND: Duration = Duration::from_secs(120);

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        return child(&spec);
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    print!("test soak::sessions_under_chaos ... ");
    match rt.block_on(run()) {
        Ok(summary) => println!("ok\n  {summary}"),
        Err(e) => {
            println!("FAILED\n  {e:#}");
            std::process::exit(1);
        }
    }
}

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A pseudo-random number (no RNG crate needed for picking a victim).
fn random() -> u128 {
    uuid::Uuid::new_v4().as_u128()
}

/// What the workers saw.
#[derive(Default)]
struct Tally {
    ok: usize,
    /// Error code → count, of answers that failed with one.
    codes: BTreeMap<String, usize>,
    /// Requests that reached no server (it was down): retried.
    unreachable: usize,
}

/// One execution, retried while the server is unreachable; an answer without an error code is
/// the test's failure.
async fn execute(
    http: &reqwest::Client,
    endpoint: &str,
    identifier: &str,
    command: &str,
    tally: &Mutex<Tally>,
) -> anyhow::Result<()> {
    for _ in 0..600 {
        let sent = tokio::time::timeout(
            REQUEST_BOUND,
            http.post(format!("{endpoint}/executions?{V}&identifier={identifier}"))
                .json(&json!({ "shellCommand": command }))
                .send(),
        )
        .await
        .map_err(|_| anyhow::anyhow!("`{command}` as {identifier} hung"))?;
        let r = match sent {
            Ok(r) => r,
            Err(_) => {
                tally.lock().unwrap_or_else(|p| p.into_inner()).unreachable += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let status = r.status().as_u16();
        let text = tokio::time::timeout(REQUEST_BOUND, r.text())
            .await
            .map_err(|_| anyhow::anyhow!("the answer to `{command}` as {identifier} hung"))?
            .unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
        if status == 200 && body["result"]["exitCode"] == 0 {
            t.ok += 1;
            return Ok(());
        }
        let code = body["error"]["code"].as_str().unwrap_or_default();
        anyhow::ensure!(
            !code.is_empty(),
            "a failed answer without an error code: {status} {text}"
        );
        *t.codes.entry(format!("{status} {code}")).or_default() += 1;
        return Ok(());
    }
    anyhow::bail!("the server stayed unreachable")
}

/// Kills every process of one random sandbox of `parent` from the host.
fn kill_one(parent: &str) -> bool {
    let cgroups = cgroup_children(parent);
    if cgroups.is_empty() {
        return false;
    }
    let victim = cgroups[(random() % cgroups.len() as u128) as usize]
        .file_name()
        .map(|n| n.to_owned());
    let mut killed = false;
    for cg in cgroups
        .iter()
        .filter(|c| c.file_name().map(|n| n.to_owned()) == victim)
    {
        let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            killed |= kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok();
        }
    }
    killed
}

async fn run() -> anyhow::Result<String> {
    let sessions = env_count("SANDPOOL_SOAK_SESSIONS", 200);
    let executions = env_count("SANDPOOL_SOAK_EXECUTIONS", 20);
    let total = sessions * executions;
    let dir_a = tempfile::tempdir()?;
    let dir_b = tempfile::tempdir()?;
    let first = test_sandbox_settings();
    let second = test_sandbox_settings();
    let host_a = HostGuard {
        data_dir: dir_a.path().to_path_buf(),
        settings: first.clone(),
    };
    let host_b = HostGuard {
        data_dir: dir_b.path().to_path_buf(),
        settings: second.clone(),
    };
    let props = json!({
        "sessionNetworkConfiguration": {"status": "EgressDisabled"},
        "dynamicPoolConfiguration": {"lifecycleConfiguration": {"lifecycleType": "Timed", "cooldownPeriodInSeconds": 3600}},
        "scaleConfiguration": {"maxConcurrentSessions": sessions + 8, "readySessionInstances": 2},
    });
    let port_a = free_port()?;
    let spec_a = spec_of(dir_a.path(), port_a, &first);
    let a = Instance::start_with_pool(&spec_a, dir_a.path(), port_a, props.clone()).await?;
    let (http, endpoint) = (a.http.clone(), a.endpoint.clone());
    let mut a_child: ChildGuard = a.child;

    let tally = Arc::new(Mutex::new(Tally::default()));
    let done = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let gate = Arc::new(tokio::sync::Semaphore::new(8));
    let mut workers = tokio::task::JoinSet::new();
    for i in 0..sessions {
        let (http, endpoint, tally, done, gate) = (
            http.clone(),
            endpoint.clone(),
            tally.clone(),
            done.clone(),
            gate.clone(),
        );
        workers.spawn(async move {
            let _turn = gate.acquire_owned().await?;
            let identifier = format!("soak-{i}");
            for j in 0..executions {
                let cmd = format!("echo {i}-{j} >> /mnt/data/log && wc -l < /mnt/data/log");
                execute(&http, &endpoint, &identifier, &cmd, &tally).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        });
    }
    // Random kills from the host while the workers run.
    let killer = {
        let (parent, finished) = (first.cgroup_parent.clone(), finished.clone());
        tokio::spawn(async move {
            let mut kills = 0usize;
            while !finished.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(150 + (random() % 300) as u64)).await;
                if kill_one(&parent) {
                    kills += 1;
                }
            }
            kills
        })
    };
    let wait_for = |share: usize| {
        let done = done.clone();
        async move {
            while done.load(Ordering::Relaxed) < total * share / 4 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    // A quarter in: a second server starts beside the first, serves, and stops.
    wait_for(1).await;
    let port_b = free_port()?;
    let b = Instance::start(
        &spec_of(dir_b.path(), port_b, &second),
        dir_b.path(),
        port_b,
    )
    .await?;
    anyhow::ensure!(
        b.exec("beside", "echo b").await? == "b\n",
        "the second server"
    );
    b.end("beside").await?;
    b.stop()?;

    // Half way: the first server is SIGKILLed and started again on its data dir.
    wait_for(2).await;
    kill(Pid::from_raw(a_child.0.id() as i32), Signal::SIGKILL)?;
    a_child.0.wait()?;
    drop(a_child);
    a_child = child::spawn(&spec_a, std::process::Stdio::inherit())?;
    wait_ready(
        &reqwest::Client::new(),
        &format!("http://127.0.0.1:{port_a}"),
    )
    .await?;

    while let Some(r) = workers.join_next().await {
        r??;
    }
    finished.store(true, Ordering::Relaxed);
    let kills = killer.await?;

    // Nothing stays: every session ends, the store holds none, the server's stop destroys the
    // ready sandboxes, and the host keeps nothing of either server.
    for i in 0..sessions {
        let r = http
            .delete(format!("{endpoint}/session?{V}&identifier=soak-{i}"))
            .send()
            .await?;
        let status = r.status().as_u16();
        anyhow::ensure!(
            status == 204 || status == 404,
            "ending soak-{i}: {status} {}",
            r.text().await?
        );
    }
    let r = http
        .get(format!("{endpoint}/listSessions?{V}"))
        .send()
        .await?;
    let list: Value = r.json().await?;
    anyhow::ensure!(list["count"] == 0, "sessions left: {list}");
    kill(Pid::from_raw(a_child.0.id() as i32), Signal::SIGTERM)?;
    let status = a_child.0.wait()?;
    anyhow::ensure!(status.success(), "SIGTERM: the server exited with {status}");
    let left = cgroup_children(&first.cgroup_parent);
    anyhow::ensure!(left.is_empty(), "sandboxes left after the stop: {left:?}");
    let db = sandpool_server::store::Store::open(&sandpool_server::store::Store::sqlite_url(
        dir_a.path(),
    ))
    .await?;
    let stored = sandpool_pools::SessionStore::list_sessions(&db).await?;
    anyhow::ensure!(stored.is_empty(), "sessions left in the store: {stored:?}");
    db.close().await;
    host_a.clean();
    host_b.clean();
    for s in [&first, &second] {
        let leftovers = host_leftovers(s);
        anyhow::ensure!(leftovers.is_empty(), "left on the host: {leftovers:?}");
    }
    let t = tally.lock().unwrap_or_else(|p| p.into_inner());
    Ok(format!(
        "{total} executions: {} succeeded, failed by code {:?}, {} retries while the server was down, {kills} sandboxes killed",
        t.ok, t.codes, t.unreachable
    ))
}
