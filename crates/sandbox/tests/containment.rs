//! Containment: limits hold, and one sandbox's trouble stays inside it.

mod common;
use common::*;
use sandpool_sandbox::*;
use std::time::Duration;

fn spec(limits: Limits) -> SandboxSpec {
    SandboxSpec {
        limits,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_bomb_stops_at_the_pids_limit() {
    with_runtime("forkbomb", |rt, _| async move {
        let sb = rt
            .start(spec(Limits {
                pids: Some(32),
                ..Default::default()
            }))
            .await
            .unwrap();
        let other = start(&rt).await;
        let mut r = req("i=0; while [ $i -lt 100 ]; do sleep 1000 & i=$((i+1)); done; echo tried");
        r.timeout = Duration::from_secs(20);
        let o = sb.exec_collect(r).await.unwrap();
        assert!(!text(&o.stderr).is_empty(), "no fork failed");
        let stats = sb.stats().await.unwrap();
        assert!(stats.pids <= 32 && stats.pids > 10, "{stats:?}");
        assert_eq!(sh(&other, "echo alive").await.1, "alive\n");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_hog_is_oom_killed_and_reported() {
    with_runtime("oom", |rt, _| async move {
        let sb = rt
            .start(spec(Limits {
                memory_bytes: Some(64 << 20),
                ..Default::default()
            }))
            .await
            .unwrap();
        let o = run(&sb, "python3 -c \"a = b'x' * (400 << 20); print(len(a))\"").await;
        assert!(o.outcome.oom_killed, "{:?}", o.outcome);
        assert!(!o.outcome.timed_out);
        assert!(sb.stats().await.unwrap().oom_kills >= 1);
        let (_, adj, _) = sh(&sb, "cat /proc/self/oom_score_adj").await;
        assert_eq!(adj.trim(), "0", "commands must stay OOM-killable");
        // The init has no exemption either (see commands_never_hold_or_take_an_oom_exemption).
        let init_adj =
            std::fs::read_to_string(format!("/proc/{}/oom_score_adj", sb.init_pid())).unwrap();
        assert_eq!(init_adj.trim(), "0", "the init's OOM adjustment");
        // The sandbox (and its init) survive.
        assert_eq!(sh(&sb, "echo alive").await.1, "alive\n");
        let o = run(&sb, "echo fine").await;
        assert!(!o.outcome.oom_killed);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writable_areas_stop_at_their_size() {
    with_runtime("fill", |rt, _| async move {
        let limits = Limits {
            tmp_bytes: 4 << 20,
            data_bytes: 2 << 20,
            ..Default::default()
        };
        let sb = rt.start(spec(limits)).await.unwrap();
        let (code, _, err) = sh(&sb, "head -c 20000000 /dev/zero > /tmp/fill").await;
        assert_ne!(code, Some(0));
        assert!(err.contains("No space left"), "{err}");
        let size: u64 = sh(&sb, "stat -c %s /tmp/fill")
            .await
            .1
            .trim()
            .parse()
            .unwrap();
        assert!(size <= 4 << 20);
        let big = vec![7u8; 3 << 20];
        let r = sb
            .confined("/mnt/data")
            .write_file("/mnt/data/big", &big[..])
            .await;
        assert!(r.is_err(), "write past /mnt/data's size succeeded");
        assert_eq!(sh(&sb, "echo ok").await.1, "ok\n");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_report_usage() {
    with_runtime("stats", |rt, _| async move {
        let sb = start(&rt).await;
        run(&sb, "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done").await;
        let s = sb.stats().await.unwrap();
        assert!(s.memory_bytes > 0);
        assert!(s.cpu_usage > Duration::ZERO);
        assert!(s.pids >= 1);
    })
    .await;
}

/// The runtime moves the init into its cgroup while the init builds its root; the init must
/// root its cgroup namespace only after that move, so commands see their own cgroup as `/` in
/// every hierarchy (a path such as `/../sandpool-…` would mean the namespace was rooted early).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_sit_at_the_root_of_their_cgroup_namespace() {
    with_runtime("cgroupns", |rt, _| async move {
        let sb = start(&rt).await;
        let (code, out, err) = sh(&sb, "cat /proc/self/cgroup").await;
        assert_eq!(code, Some(0), "{err}");
        assert!(!out.trim().is_empty());
        for line in out.lines() {
            assert!(
                line.ends_with(":/"),
                "not at the namespace root: {line}\n{out}"
            );
        }
        let s = sb.stats().await.unwrap();
        assert!(s.pids >= 1, "the init is not in its cgroup: {s:?}");
    })
    .await;
}

/// No command ever runs with an OOM exemption or can take one: not one the runtime gave the
/// init, not one the server itself runs with (e.g. systemd's `OOMScoreAdjust=`). A command that
/// inherited an exemption keeps the right to return to it (`oom_score_adj_min`), so the reset
/// must happen with privilege, before the init forks anything, and not per command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_never_hold_or_take_an_oom_exemption() {
    // This test process plays the server: exempt, as root may make itself where the host grants
    // CAP_SYS_RESOURCE (some container hosts withhold it even from root; there nothing in the
    // sandbox can have an exemption to begin with, and the checks below still must hold).
    let _ = std::fs::write("/proc/self/oom_score_adj", "-500");
    for zygote in [true, false] {
        let mut env = env(if zygote {
            "oom-adj-zygote"
        } else {
            "oom-adj-exec"
        });
        env.cfg.zygote = zygote;
        with_env(env, move |cfg, _| async move {
            let rt = Runtime::new(cfg).await.unwrap();
            let sb = start(&rt).await;
            let init_adj =
                std::fs::read_to_string(format!("/proc/{}/oom_score_adj", sb.init_pid())).unwrap();
            assert_eq!(init_adj.trim(), "0", "the init's OOM adjustment");
            // The shell reads its own at once, then a child forked right away reads its own.
            for _ in 0..20 {
                let (code, out, err) = sh(
                    &sb,
                    "read a < /proc/self/oom_score_adj; b=$(cat /proc/self/oom_score_adj); \
                     echo $a $b",
                )
                .await;
                assert_eq!((code, out.as_str()), (Some(0), "0 0\n"), "{err}");
            }
            for adj in ["-1000", "-1"] {
                let (code, out, _) = sh(
                    &sb,
                    &format!("echo {adj} > /proc/self/oom_score_adj; cat /proc/self/oom_score_adj"),
                )
                .await;
                assert_eq!(
                    (code, out.as_str()),
                    (Some(0), "0\n"),
                    "a command took an OOM adjustment of {adj}"
                );
            }
            sb.destroy().await.unwrap();
        })
        .await;
    }
}
