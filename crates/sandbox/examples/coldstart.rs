//! A quick measurement for profiling the runtime while working on it (the figures of record,
//! beside bwrap and crun, come from `sandpool-bench`): each round runs a cold start, a raw
//! fork+exec and a warm exec, interleaved so load changes on a shared machine hit all alike.
//! `SANDPOOL_NO_ZYGOTE=1` takes the exec path for comparison.
//!
//! `cargo run --release -p sandpool-sandbox --example coldstart -- [rounds]` as root.

use sandpool_sandbox::{ExecRequest, Runtime, RuntimeConfig, SandboxSpec};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn timed(cmd: &mut Command) -> Option<Duration> {
    let t = Instant::now();
    let ok = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?
        .success();
    ok.then(|| t.elapsed())
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().nth(1).as_deref() == Some("__sandbox-init") {
        sandpool_sandbox::init_main();
    }
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let parent = format!("sandpool-coldstart-{}", std::process::id());
    let state = std::env::temp_dir().join(&parent);
    let result = rt.block_on(async {
        let mut cfg = RuntimeConfig::new(&state, std::env::current_exe()?);
        cfg.init_args = vec!["__sandbox-init".into()];
        cfg.cgroup_parent = parent.clone();
        cfg.zygote = std::env::var_os("SANDPOOL_NO_ZYGOTE").is_none();
        let runtime = Runtime::new(cfg).await?;
        let warm = runtime.start(SandboxSpec::default()).await?;
        let (mut cold, mut exec, mut fork) = (vec![], vec![], vec![]);
        for _ in 0..rounds {
            let t = Instant::now();
            let sb = runtime.start(SandboxSpec::default()).await?;
            let out = sb.exec_collect(ExecRequest::new("true")).await?;
            cold.push(t.elapsed());
            sb.destroy().await?;
            if out.outcome.exit_code != Some(0) {
                return Err("first command failed".into());
            }
            fork.extend(timed(Command::new("/bin/sh").args(["-c", "true"])));
            let t = Instant::now();
            warm.exec_collect(ExecRequest::new("true")).await?;
            exec.push(t.elapsed());
        }
        warm.destroy().await?;
        let (cold, exec, fork) = (median(&mut cold), median(&mut exec), median(&mut fork));
        println!("cold start  {:8.3} ms", ms(cold));
        println!(
            "warm exec   {:8.3} ms  ({:.2}x fork+exec)",
            ms(exec),
            ms(exec) / ms(fork)
        );
        println!("fork+exec   {:8.3} ms", ms(fork));
        Ok::<(), Box<dyn std::error::Error>>(())
    });
    drop(rt);
    let _ = std::fs::remove_dir_all(&state);
    if let Ok(m) = sandpool_cgroups::CgroupManager::detect(&parent) {
        for d in m.parent_dirs() {
            let _ = std::fs::remove_dir(d);
        }
    }
    result
}
