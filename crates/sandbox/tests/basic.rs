//! Start, exec, files, concurrency, timeouts, truncation, re-attach.

mod common;
use bytes::Bytes;
use common::*;
use sandpool_sandbox::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_exec_destroy() {
    with_runtime("basic", |rt, dir| async move {
        let sb = start(&rt).await;
        let (code, out, err) = sh(&sb, "echo hello; echo oops >&2; exit 3").await;
        assert_eq!(
            (code, out.as_str(), err.as_str()),
            (Some(3), "hello\n", "oops\n")
        );
        let (code, out, _) = sh(&sb, "id -u; hostname; pwd; echo $HOME").await;
        assert_eq!(
            (code, out.as_str()),
            (Some(0), "0\nsandbox\n/root\n/root\n")
        );
        assert_eq!(rt.list_ids(), vec![sb.id().to_string()]);
        let state = dir.join("state").join(sb.id());
        assert!(state.join("control.sock").exists());
        sb.destroy().await.expect("destroy");
        assert!(rt.list_ids().is_empty());
        assert!(!state.exists(), "state dir removed");
        assert!(matches!(sb.ping().await, Err(SandboxError::Destroyed)));
        sb.destroy().await.expect("destroy is idempotent");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_cwd_stdin_merge_and_signal() {
    with_runtime("execopts", |rt, _| async move {
        let spec = SandboxSpec {
            env: vec![("FROM_SPEC".into(), "a".into())],
            hostname: "box1".into(),
            ..Default::default()
        };
        let sb = rt.start(spec).await.expect("start");
        let mut r = req("echo $FROM_SPEC $FROM_REQ; pwd; cat; hostname");
        r.env = vec![("FROM_REQ".into(), "b".into())];
        r.cwd = Some("/mnt/data".into());
        r.stdin = Some(Bytes::from_static(b"from stdin\n"));
        let o = sb.exec_collect(r).await.unwrap();
        assert_eq!(text(&o.stdout), "a b\n/mnt/data\nfrom stdin\nbox1\n");

        let mut r = req("echo 1; echo 2 >&2; echo 3");
        r.merge_output = true;
        let o = sb.exec_collect(r).await.unwrap();
        assert_eq!(text(&o.stdout), "1\n2\n3\n");
        assert!(o.stderr.is_empty());

        let o = run(&sb, "kill -TERM $$").await;
        assert_eq!((o.outcome.exit_code, o.outcome.signal), (None, Some(15)));

        let mut r = req("true");
        r.cwd = Some("/does/not/exist".into());
        assert!(sb.exec_collect(r).await.is_err(), "missing cwd is an error");
        let mut r = req("true");
        r.cwd = Some("relative".into());
        assert!(matches!(
            sb.exec(r).await,
            Err(SandboxError::InvalidSpec(_))
        ));
        // The sandbox still works after the failed requests.
        assert_eq!(sh(&sb, "echo ok").await.1, "ok\n");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_events_and_concurrent_execs() {
    with_runtime("concurrent", |rt, _| async move {
        let sb = start(&rt).await;
        // A command that waits for a file another command creates: only passes if both run
        // at the same time.
        let waiter = {
            let sb = sb.clone();
            tokio::spawn(async move {
                run(
                    &sb,
                    "while [ ! -e /tmp/go ]; do sleep 0.01; done; echo released",
                )
                .await
            })
        };
        let mut handles = Vec::new();
        for i in 0..8 {
            let sb = sb.clone();
            handles.push(tokio::spawn(async move {
                let o = run(&sb, &format!("echo job{i}; sleep 0.1; echo done{i} >&2")).await;
                assert_eq!(text(&o.stdout), format!("job{i}\n"));
                assert_eq!(text(&o.stderr), format!("done{i}\n"));
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        assert_eq!(run(&sb, "touch /tmp/go").await.outcome.exit_code, Some(0));
        assert_eq!(text(&waiter.await.unwrap().stdout), "released\n");

        let mut ex = sb
            .exec(req("echo first; sleep 0.2; echo second"))
            .await
            .unwrap();
        let mut events = Vec::new();
        while let Some(ev) = ex.next().await {
            events.push(ev.unwrap());
        }
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(events[0], ExecEvent::Stdout(Bytes::from_static(b"first\n")));
        assert!(matches!(&events[2], ExecEvent::Exit(o) if o.exit_code == Some(0)));
        assert!(ex.next().await.is_none());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_the_whole_group() {
    with_runtime("timeout", |rt, _| async move {
        let sb = start(&rt).await;
        let mut r = req("sleep 1000 & sleep 1000 & while true; do :; done");
        r.timeout = Duration::from_millis(300);
        let o = sb.exec_collect(r).await.unwrap();
        assert!(o.outcome.timed_out);
        assert_eq!(o.outcome.signal, Some(9));
        assert!(!o.outcome.oom_killed);
        // Only the init and this shell (and its ps) are left.
        let (_, out, _) = sh(&sb, "ps -e -o comm= | grep -c sleep || true").await;
        assert_eq!(
            out.trim(),
            "0",
            "children of the timed-out command survived"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_past_the_cap_is_dropped_and_flagged() {
    with_runtime("truncate", |rt, _| async move {
        let sb = start(&rt).await;
        let mut r = req("head -c 5000000 /dev/zero; echo small >&2");
        r.output_limit = 100_000;
        let o = sb.exec_collect(r).await.unwrap();
        assert_eq!(o.stdout.len(), 100_000);
        assert!(o.outcome.stdout_truncated);
        assert!(!o.outcome.stderr_truncated);
        assert_eq!(text(&o.stderr), "small\n");
        assert_eq!(o.outcome.exit_code, Some(0));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_write_read_list_stat_remove() {
    with_runtime("files", |rt, _| async move {
        let sb = start(&rt).await;
        let data = sb.confined("/mnt/data");
        let big: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        let info = data
            .write_file("/mnt/data/dir/sub/big.bin", &big[..])
            .await
            .unwrap();
        assert_eq!(
            (info.size, info.is_dir, info.name.as_str()),
            (700_000, false, "big.bin")
        );
        assert_eq!(info.path, "/mnt/data/dir/sub/big.bin");
        assert_eq!(
            data.read_to_vec("/mnt/data/dir/sub/big.bin").await.unwrap(),
            big
        );
        let mut s = data.read_file("/mnt/data/dir/sub/big.bin").await.unwrap();
        assert_eq!(s.size(), 700_000);
        let mut n = 0;
        while let Some(c) = s.next_chunk().await.unwrap() {
            n += c.len();
        }
        assert_eq!(n, 700_000);
        // The command side sees the same file.
        let (_, out, _) = sh(
            &sb,
            "md5sum < /mnt/data/dir/sub/big.bin | cut -c1-8; stat -c %s /mnt/data/dir/sub/big.bin",
        )
        .await;
        assert!(out.ends_with("700000\n"));
        data.write_file("/mnt/data/a.txt", &b"hi"[..])
            .await
            .unwrap();
        let list = data.list_dir("/mnt/data", false).await.unwrap();
        let names: Vec<&str> = list.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, vec!["a.txt", "dir"]);
        let all = data.list_dir("/mnt/data", true).await.unwrap();
        assert_eq!(all.len(), 4, "{all:?}");
        let st = data.stat("/mnt/data/dir").await.unwrap();
        assert!(st.is_dir);
        data.remove("/mnt/data/dir").await.unwrap();
        assert!(matches!(
            data.stat("/mnt/data/dir").await,
            Err(SandboxError::FileNotFound(_))
        ));
        assert!(matches!(
            data.read_file("/mnt/data/nope").await,
            Err(SandboxError::FileNotFound(_))
        ));
        assert!(matches!(
            data.stat("/etc/passwd").await,
            Err(SandboxError::InvalidPath(_))
        ));
        assert!(matches!(
            data.stat("/mnt/data/../../etc/passwd").await,
            Err(SandboxError::InvalidPath(_))
        ));
        assert!(matches!(
            data.write_file("/mnt/data/x\0y", &b""[..]).await,
            Err(SandboxError::InvalidPath(_))
        ));
        // The default handle reaches the whole sandbox (not the host).
        let root = sb.stat("/etc/hostname").await.unwrap();
        assert!(!root.is_dir);
        sb.write_file("/root/.kube/config", &b"k"[..])
            .await
            .unwrap();
        assert_eq!(sh(&sb, "cat /root/.kube/config").await.1, "k");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reattach_after_dropping_the_runtime_then_sweep() {
    with_env(env("reattach"), |cfg, _| async move {
        {
            let (id_keep, id_drop) = {
                let rt = Runtime::new(cfg.clone()).await.unwrap();
                let a = start(&rt).await;
                let b = start(&rt).await;
                assert_eq!(
                    sh(
                        &a,
                        "echo state > /tmp/f; sleep 1000 >/dev/null 2>&1 & echo ok"
                    )
                    .await
                    .1,
                    "ok\n"
                );
                (a.id().to_string(), b.id().to_string())
                // runtime and handles dropped here, sandboxes stay alive
            };
            let rt = Runtime::new(cfg.clone()).await.unwrap();
            assert!(rt.list_ids().is_empty());
            let a = rt.attach(&id_keep).await.expect("attach");
            assert_eq!(sh(&a, "cat /tmp/f; pgrep -c sleep").await.1, "state\n1\n");
            drop(a);
            let rt2 = Runtime::new(cfg.clone()).await.unwrap();
            let keep = id_keep.clone();
            let report = rt2.sweep(&move |id| id == keep).await.unwrap();
            assert_eq!(report.attached.len(), 1);
            assert_eq!(report.destroyed, vec![id_drop.clone()]);
            assert!(matches!(
                rt2.attach(&id_drop).await,
                Err(SandboxError::NotFound)
            ));
            let a = &report.attached[0];
            assert_eq!(sh(a, "cat /tmp/f").await.1, "state\n");
            a.destroy().await.unwrap();
            assert!(matches!(
                rt2.attach(&id_keep).await,
                Err(SandboxError::NotFound)
            ));
            assert!(matches!(
                rt2.attach("../etc").await,
                Err(SandboxError::NotFound)
            ));
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_specs_are_refused() {
    with_runtime("badspec", |rt, _| async move {
        for spec in [
            SandboxSpec {
                id: Some("../x".into()),
                ..Default::default()
            },
            SandboxSpec {
                hostname: "a b".into(),
                ..Default::default()
            },
            SandboxSpec {
                env: vec![("A=B".into(), "x".into())],
                ..Default::default()
            },
            SandboxSpec {
                rootfs: RootFs::Image("relative".into()),
                ..Default::default()
            },
        ] {
            assert!(matches!(
                rt.start(spec).await,
                Err(SandboxError::InvalidSpec(_))
            ));
        }
        assert!(matches!(
            rt.start(SandboxSpec {
                network: NetworkMode::Egress,
                ..Default::default()
            })
            .await,
            Err(SandboxError::EgressUnavailable)
        ));
        let sb = rt
            .start(SandboxSpec {
                id: Some("fixed-id".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(sb.id(), "fixed-id");
        assert!(rt
            .start(SandboxSpec {
                id: Some("fixed-id".into()),
                ..Default::default()
            })
            .await
            .is_err());
        assert!(rt.list_ids().is_empty() || rt.list_ids() == vec!["fixed-id".to_string()]);
    })
    .await;
}

/// What a command inherits from the init's vfork-style start: no OOM exemption, default
/// signal dispositions and an empty mask, its own process group, the request's environment
/// winning over the spec's, and a stdin whose writer is not left hanging when it exits unread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_start_clean() {
    with_runtime("startclean", |rt, _| async move {
        let spec = SandboxSpec {
            env: vec![("WHO".into(), "spec".into())],
            ..Default::default()
        };
        let sb = rt.start(spec).await.expect("start");
        let mut r = req(concat!(
            "cat /proc/self/oom_score_adj; ",
            // Builtins only: the shell blocks signals while it waits for a child.
            "while read k v; do case $k in SigBlk:|SigIgn:) echo $k $v;; esac; done < /proc/$$/status; ",
            "read pid comm state ppid pgrp rest < /proc/$$/stat; ",
            "[ \"$pgrp\" = \"$$\" ] && echo own-group; ",
            "echo $WHO"
        ));
        r.env = vec![("WHO".into(), "request".into())];
        let o = sb.exec_collect(r).await.unwrap();
        assert_eq!(o.outcome.exit_code, Some(0), "{}", text(&o.stderr));
        assert_eq!(
            text(&o.stdout),
            "0\nSigBlk: 0000000000000000\nSigIgn: 0000000000000000\nown-group\nrequest\n"
        );

        let mut r = req("exit 3");
        r.stdin = Some(Bytes::from(vec![b'x'; 4 << 20]));
        let o = sb.exec_collect(r).await.unwrap();
        assert_eq!(o.outcome.exit_code, Some(3));
        assert_eq!(sh(&sb, "echo ok").await.1, "ok\n");
    })
    .await;
}

/// A short command's exit can reach the init before its output does; the output must still be
/// delivered, every time, also with many commands at once (it was lost now and then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_commands_never_lose_their_output() {
    with_runtime("shortout", |rt, _| async move {
        let sb = start(&rt).await;
        for round in 0..15 {
            let runs: Vec<_> = (0..20)
                .map(|i| {
                    let sb = sb.clone();
                    async move { (i, sh(&sb, &format!("echo r{round}c{i}")).await) }
                })
                .collect();
            for (i, (code, out, _)) in futures::future::join_all(runs).await {
                assert_eq!(code, Some(0));
                assert_eq!(out, format!("r{round}c{i}\n"), "round {round}, command {i}");
            }
        }
        sb.destroy().await.expect("destroy");
    })
    .await;
}
