//! The runtime-level figures of issue 3: cold start to the first command's exit, warm exec round
//! trip through the runtime interface, and host memory per idle sandbox.

use crate::peers::{self, CrunBundle};
use crate::report::{Report, Row, Target, Value};
use crate::stats::{rounds, Interleaved};
use anyhow::{Context, Result};
use sandpool_sandbox::{
    ExecRequest, Limits, NetworkMode, RootFs, Runtime, RuntimeConfig, Sandbox, SandboxSpec,
};
use std::time::{Duration, Instant};

/// Longest wait for the egress slot pool to fill before the figures are taken anyway.
const FILL_TIMEOUT: Duration = Duration::from_secs(60);

fn spec(network: NetworkMode) -> SandboxSpec {
    SandboxSpec {
        id: None,
        rootfs: RootFs::Host,
        limits: Limits {
            memory_bytes: Some(256 << 20),
            pids: Some(256),
            ..Limits::default()
        },
        network,
        env: Vec::new(),
        hostname: "bench".into(),
    }
}

async fn exec_true(sandbox: &Sandbox) -> Result<Duration> {
    let start = Instant::now();
    let out = sandbox.exec_collect(ExecRequest::new("true")).await?;
    let elapsed = start.elapsed();
    anyhow::ensure!(
        out.outcome.exit_code == Some(0),
        "`true` failed: {:?}",
        out.outcome
    );
    Ok(elapsed)
}

async fn cold_start(runtime: &Runtime, network: NetworkMode) -> Result<Duration> {
    let start = Instant::now();
    let sandbox = runtime.start(spec(network)).await?;
    let out = sandbox.exec_collect(ExecRequest::new("true")).await;
    let elapsed = start.elapsed();
    sandbox.destroy().await?;
    anyhow::ensure!(out?.outcome.exit_code == Some(0), "first command failed");
    Ok(elapsed)
}

/// Memory the host no longer has available, from the kernel's own accounting.
fn host_memory_in_use() -> Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    let field = |name: &str| -> Result<u64> {
        let line = meminfo
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("{name} missing from /proc/meminfo"))?;
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .context("malformed /proc/meminfo")?
            .parse()?;
        Ok(kib * 1024)
    };
    Ok(field("MemTotal:")? - field("MemAvailable:")?)
}

/// Runs the figures, then removes what the run set up on the host (bridge, nft table, cgroups)
/// whether or not they succeeded.
pub async fn run(iterations: usize, density: usize) -> Result<Report> {
    let state = tempfile::Builder::new()
        .prefix("sandpool-bench")
        .tempdir()?;
    let cgroup_parent = format!("sandpool-bench-{}", std::process::id());
    let net = sandpool_net::NetConfig {
        bridge: "spbench0".into(),
        nft_table: "sandpool_bench".into(),
        state_dir: state.path().join("netns"),
        // Sized to the egress burst below, so every start takes a ready slot (see
        // docs/benchmarks.md); the server's default keeps 4.
        ready_slots: iterations.min(100),
        ..Default::default()
    };
    let config = runtime_config(&state, &cgroup_parent, &net)?;
    let report = measure(config.clone(), &net, iterations, density).await;
    // Whatever a failed figure left running (its sandboxes, their cgroups and slots) goes too.
    match Runtime::new(config).await {
        Ok(runtime) => {
            if let Err(e) = runtime.sweep(&|_| false).await {
                eprintln!("removing the bench's sandboxes: {e}");
            }
        }
        Err(e) => eprintln!("removing the bench's sandboxes: {e}"),
    }
    if let Err(e) = sandpool_net::NetPool::teardown_host(&net).await {
        eprintln!("removing the bench's bridge: {e}");
    }
    if let Ok(cgroups) = sandpool_cgroups::CgroupManager::detect(&cgroup_parent) {
        for dir in cgroups.parent_dirs() {
            let _ = std::fs::remove_dir(dir);
        }
    }
    report
}

fn runtime_config(
    state: &tempfile::TempDir,
    cgroup_parent: &str,
    net: &sandpool_net::NetConfig,
) -> Result<RuntimeConfig> {
    let exe = std::env::current_exe()?;
    let mut config = RuntimeConfig::new(state.path().join("sandboxes"), exe);
    config.init_args = vec!["__sandbox-init".into()];
    config.cgroup_parent = cgroup_parent.to_string();
    config.egress = Some(net.clone());
    // Like the egress slots, the zygote's loopback namespaces are sized to the burst of starts
    // below (see docs/benchmarks.md); the default keeps 4.
    config.ready_netns = net.ready_slots;
    Ok(config)
}

async fn measure(
    config: RuntimeConfig,
    net: &sandpool_net::NetConfig,
    iterations: usize,
    density: usize,
) -> Result<Report> {
    let runtime = Runtime::new(config).await?;
    let mut report = Report::default();
    // Both pools fill in the background; let them finish before anything is timed. The zygote
    // starts with the first sandbox.
    runtime
        .start(spec(NetworkMode::None))
        .await?
        .destroy()
        .await?;
    let filling = Instant::now();
    while (runtime.egress_slots_ready() < net.ready_slots
        || runtime.netns_ready() < net.ready_slots)
        && filling.elapsed() < FILL_TIMEOUT
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Every figure and its peers in turns (see `stats::rounds`), so load that comes and goes on
    // the shared machine weighs on all alike. Container runs and egress starts are capped at
    // 100 samples: crun run is slow, and the egress slot pool is sized to 100.
    let crun_true = CrunBundle::new(&["/bin/sh", "-c", "true"])?;
    let crun_idle = CrunBundle::new(&["/bin/sh", "-c", "sleep 3600"])?;
    let container = crun_idle.start_detached()?;
    let warm_sandbox = runtime.start(spec(NetworkMode::None)).await?;
    let capped = iterations.min(100);
    let (fe, bw, cr, cold, cold_eg, ce, warm) = (0, 1, 2, 3, 4, 5, 6);
    let mut m = Interleaved::new(7);
    let mut taken = 0;
    for n in rounds(iterations) {
        let n_capped = capped.saturating_sub(taken).min(n);
        taken += n;
        for _ in 0..n {
            m.push(fe, peers::fork_exec("true")?);
        }
        for _ in 0..n {
            m.push(bw, peers::bwrap("true")?);
        }
        for _ in 0..n_capped {
            m.push(cr, crun_true.run()?);
        }
        for _ in 0..n {
            m.push(cold, cold_start(&runtime, NetworkMode::None).await?);
        }
        for _ in 0..n_capped {
            m.push(cold_eg, cold_start(&runtime, NetworkMode::Egress).await?);
        }
        for _ in 0..n {
            m.push(ce, container.exec("true")?);
        }
        for _ in 0..n {
            m.push(warm, exec_true(&warm_sandbox).await?);
        }
    }
    drop(container);
    warm_sandbox.destroy().await?;
    report.rows.push(Row {
        figure: "cold start to first exit (no egress)".into(),
        sandpool: m.summary(cold),
        peers: vec![
            ("fork+exec".into(), m.summary(fe)),
            ("bwrap".into(), m.summary(bw)),
            ("crun run".into(), m.summary(cr)),
        ],
        target: Some(Target {
            peer: Some("bwrap"),
            at_most: 0.5,
        }),
    });
    report.rows.push(Row {
        figure: "cold start to first exit (egress slot)".into(),
        sandpool: m.summary(cold_eg),
        peers: vec![("crun run".into(), m.summary(cr))],
        target: Some(Target {
            peer: Some("crun run"),
            at_most: 0.5,
        }),
    });
    report.rows.push(Row {
        figure: "warm exec round trip (`true`)".into(),
        sandpool: m.summary(warm),
        peers: vec![
            ("fork+exec".into(), m.summary(fe)),
            ("crun exec".into(), m.summary(ce)),
        ],
        target: Some(Target {
            peer: Some("fork+exec"),
            at_most: 1.5,
        }),
    });

    if density > 0 {
        let before = host_memory_in_use()?;
        let mut idle = Vec::with_capacity(density);
        let mut started = Ok(());
        for _ in 0..density {
            match runtime.start(spec(NetworkMode::None)).await {
                Ok(s) => idle.push(s),
                Err(e) => {
                    started = Err(e);
                    break;
                }
            }
        }
        // Let the kernel settle lazily freed memory before reading.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = host_memory_in_use()?;
        let mut charged = 0u64;
        for s in &idle {
            charged += s.stats().await?.memory_bytes;
        }
        let alive = idle.len().max(1) as f64;
        for s in &idle {
            s.destroy().await?;
        }
        started?;
        report.rows.push(Row {
            figure: format!("memory charged per idle sandbox ({density} alive, cgroup)"),
            sandpool: Value::Quantity {
                value: charged as f64 / alive / 1024.0,
                unit: "KiB",
            },
            peers: Vec::new(),
            target: Some(Target {
                peer: None,
                at_most: 1024.0,
            }),
        });
        report.rows.push(Row {
            figure: format!("host MemAvailable drop per idle sandbox ({density} alive)"),
            sandpool: Value::Quantity {
                value: after.saturating_sub(before) as f64 / alive / 1024.0,
                unit: "KiB",
            },
            peers: Vec::new(),
            target: None,
        });
    }
    Ok(report)
}
