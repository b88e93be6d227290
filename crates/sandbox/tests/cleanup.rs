//! Cleanup: nothing of a sandbox outlives its destroy, nor a SIGKILLed host process + sweep.

mod common;
use common::*;
use sandpool_sandbox::*;
use std::io::BufRead;
use std::process::{Command, Stdio};

/// Live host processes whose uid lies in `[lo, hi)`. Zombies are left out: once the init of a
/// SIGKILLed server was reparented, reaping it is the job of the host's PID 1, not ours.
fn processes_in_uid_range(lo: u32, hi: u32) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        if status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains("zombie"))
        {
            continue;
        }
        let uid = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|u| u.parse::<u32>().ok());
        if let Some(uid) = uid {
            if (lo..hi).contains(&uid) {
                found.push(format!("{:?} uid {uid}", e.file_name()));
            }
        }
    }
    found
}

fn mounts_mentioning(path: &std::path::Path) -> usize {
    let p = path.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&p))
        .count()
}

fn assert_nothing_left(cfg: &RuntimeConfig, root: &std::path::Path) {
    let hi = cfg.uid_base + 64 * cfg.uids_per_sandbox;
    let procs = processes_in_uid_range(cfg.uid_base, hi);
    assert!(procs.is_empty(), "processes left: {procs:?}");
    let cg = sandpool_cgroups::CgroupManager::detect(&cfg.cgroup_parent).unwrap();
    assert_eq!(cg.list().unwrap(), Vec::<String>::new(), "cgroups left");
    for d in cg.parent_dirs() {
        let subdirs = std::fs::read_dir(&d)
            .map(|r| r.flatten().filter(|e| e.path().is_dir()).count())
            .unwrap_or(0);
        assert_eq!(subdirs, 0, "cgroup dirs left under {}", d.display());
    }
    let left: Vec<_> = std::fs::read_dir(&cfg.state_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "state left: {left:?}");
    assert_eq!(mounts_mentioning(root), 0, "mounts left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_cycles_leave_nothing() {
    with_env(env("cycles"), |cfg, root| async move {
        let rt = Runtime::new(cfg.clone()).await.unwrap();
        for i in 0..200 {
            let sb = start(&rt).await;
            let o = run(&sb, &format!("echo {i}; sleep 100 >/dev/null 2>&1 &")).await;
            assert_eq!(text(&o.stdout), format!("{i}\n"));
            sb.destroy().await.unwrap();
        }
        assert!(rt.list_ids().is_empty());
        assert_nothing_left(&cfg, &root);
    })
    .await;
}

/// Not a test on its own: the body of the child process of `sigkill_then_sweep_leaves_nothing`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn child_starter() {
    let Ok(state) = std::env::var("SBX_STATE") else {
        return;
    };
    let mut cfg = RuntimeConfig::new(state, env!("CARGO_BIN_EXE_sandpool-sandbox-init"));
    cfg.uid_base = std::env::var("SBX_UID_BASE").unwrap().parse().unwrap();
    cfg.cgroup_parent = std::env::var("SBX_CGROUP").unwrap();
    let rt = Runtime::new(cfg).await.unwrap();
    let mut keep = Vec::new();
    for _ in 0..3 {
        let sb = start(&rt).await;
        run(&sb, "sleep 1000 >/dev/null 2>&1 &").await;
        keep.push(sb);
    }
    println!("READY");
    // An exec in flight when the host dies.
    let _ = keep[0].exec(req("sleep 1000")).await;
    tokio::time::sleep(std::time::Duration::from_secs(600)).await;
}

struct KillOnDrop(std::process::Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_then_sweep_leaves_nothing() {
    with_env(env("sigkill"), |cfg, root| async move {
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_starter",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("SBX_STATE", &cfg.state_dir)
            .env("SBX_UID_BASE", cfg.uid_base.to_string())
            .env("SBX_CGROUP", &cfg.cgroup_parent)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut child = KillOnDrop(child);
        let out = child.0.stdout.take().unwrap();
        let ready = tokio::task::spawn_blocking(move || {
            std::io::BufReader::new(out)
                .lines()
                .map_while(Result::ok)
                .any(|l| l.contains("READY"))
        })
        .await
        .unwrap();
        assert!(ready, "child did not start its sandboxes");
        // SIGKILL: no destructor, no cleanup of any kind in the child.
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        let hi = cfg.uid_base + 64 * cfg.uids_per_sandbox;
        assert!(
            !processes_in_uid_range(cfg.uid_base, hi).is_empty(),
            "sandboxes died with the host process"
        );

        let rt = Runtime::new(cfg.clone()).await.unwrap();
        let report = rt.sweep(&|_| false).await.unwrap();
        assert_eq!(report.destroyed.len(), 3, "{:?}", report.errors);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_nothing_left(&cfg, &root);
    })
    .await;
}
