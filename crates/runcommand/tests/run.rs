//! Run Command end to end with real sandboxes (root required): context unpacking, exit codes,
//! timeouts, refused contexts, the concurrency bound, log capping, recovery, shutdown.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use common::*;
use sandpool_runcommand::testing::MemoryStore;
use sandpool_runcommand::{
    decode_context, log_marker, CommandResult, CommandRunner, CommandState, CommandStore,
    ContextError, RunError, RunnerConfig,
};

const NS_YAML: &[u8] = b"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: dummy\n";

/// The API reference's example: a context zip holding `ns.yaml`, sent as base64 wrapped
/// every 76 characters, and a command that reads it from its working directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_reference_example() {
    with_runner("example", RunnerConfig::default(), |ctx| async move {
        let zip = zip_of(&[Entry::File("ns.yaml", NS_YAML, 0o644)]);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&zip);
        let wrapped: Vec<String> = b64
            .as_bytes()
            .chunks(76)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        assert!(wrapped.len() > 1, "the context spans several lines");
        let context = decode_context(&wrapped.join("\r\n")).expect("lenient base64");
        assert_eq!(context, zip);

        let r = run(&ctx.runner, job("cat ns.yaml && pwd", context)).await;
        assert_succeeded(&r, 0);
        assert_eq!(
            r.logs,
            format!("{}/mnt/data\n", String::from_utf8_lossy(NS_YAML))
        );
        assert!(r.created_at <= r.started_at.unwrap());
        assert!(r.started_at <= r.finished_at);
        assert_eq!(r.cluster, CLUSTER);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonzero_exit_is_succeeded_with_its_code_and_output_is_merged_in_order() {
    with_runner("exit3", RunnerConfig::default(), |ctx| async move {
        let r = run(
            &ctx.runner,
            job(
                "echo out1; echo err1 >&2; echo out2; echo err2 >&2; exit 3",
                vec![],
            ),
        )
        .await;
        assert_succeeded(&r, 3);
        assert_eq!(r.logs, "out1\nerr1\nout2\nerr2\n");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_fails_with_reason_and_kills_its_processes() {
    with_runner("timeout", RunnerConfig::default(), |ctx| async move {
        // A number no other process on the host has as an argument.
        let marker = format!("{}", 7_000_000 + std::process::id() % 1_000_000);
        let mut j = job(
            &format!("echo started; sleep {marker} & sleep {marker}; echo never"),
            vec![],
        );
        j.settings.command_timeout = Duration::from_secs(1);
        let r = run(&ctx.runner, j).await;
        assert_eq!(r.state, CommandState::Failed, "{r:?}");
        assert_eq!(r.exit_code, None);
        let reason = r.reason.expect("reason");
        assert!(reason.contains("timed out"), "{reason}");
        assert_eq!(r.logs, "started\n");
        assert!(
            !process_with_arg(&marker),
            "the command's processes (sleep {marker}) must be gone"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_executables_and_kubeconfig_are_installed() {
    with_runner("layout", RunnerConfig::default(), |ctx| async move {
        let zip = zip_of(&[
            Entry::Dir("empty/inner/"),
            Entry::File("bin/run.sh", b"#!/bin/sh\necho script ran\n", 0o755),
            Entry::File("./deep/a/b/c.txt", b"deep", 0o644),
            Entry::File("zero", b"", 0o644),
        ]);
        let mut j = job(
            "./bin/run.sh && test -d empty/inner && cat deep/a/b/c.txt && test -f zero && \
             echo && stat -c %a /root/.kube/config && cat \"$KUBECONFIG\"",
            zip,
        );
        j.settings.kubeconfig = Some("apiVersion: v1\nkind: Config\n".to_string());
        let r = run(&ctx.runner, j).await;
        assert_succeeded(&r, 0);
        assert_eq!(
            r.logs,
            "script ran\ndeep\n600\napiVersion: v1\nkind: Config\n"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_start_failure_is_failed_with_reason() {
    with_runner("nostart", RunnerConfig::default(), |ctx| async move {
        // This runtime has no egress pool, so an egress sandbox cannot start.
        let mut j = job("true", vec![]);
        j.settings.egress = true;
        let r = run(&ctx.runner, j).await;
        assert_eq!(r.state, CommandState::Failed, "{r:?}");
        let reason = r.reason.expect("reason");
        assert!(reason.contains("could not start the sandbox"), "{reason}");
    })
    .await;
}

fn host_path_absent(path: &str) {
    assert!(
        std::fs::symlink_metadata(path).is_err(),
        "{path} must not exist on the host"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escaping_and_special_entries_are_refused_at_submit() {
    with_runner("refuse", RunnerConfig::default(), |ctx| async move {
        let tag = sandpool_runcommand::new_job_id();
        let slip = format!("../../../../../../../../tmp/rc-slip-{tag}");
        let abs = format!("/tmp/rc-abs-{tag}");
        let link = format!("rc-link-{tag}");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (zip_of(&[Entry::File("../x", b"x", 0o644)]), "'..'"),
            (zip_of(&[Entry::File(&slip, b"x", 0o644)]), "'..'"),
            (zip_of(&[Entry::File(&abs, b"x", 0o644)]), "absolute"),
            (
                zip_of(&[Entry::Symlink(&link, "/etc/shadow")]),
                "symbolic link",
            ),
            (b"PK\x03\x04 this is not a zip".to_vec(), "not a valid zip"),
            (
                lie_about_sizes(zip_of(&[Entry::File("huge", b"tiny", 0o644)]), 300 << 20),
                "unpacks to more than",
            ),
        ];
        for (zip, expect) in cases {
            match ctx.runner.submit(job("cat *", zip)).await {
                Err(RunError::InvalidContext(e)) => {
                    let msg = e.to_string();
                    assert!(msg.contains(expect), "{msg:?} should mention {expect:?}");
                }
                other => panic!("expected InvalidContext ({expect}), got {other:?}"),
            }
        }
        assert!(ctx.store.all().is_empty(), "nothing refused is stored");
        host_path_absent(&format!("/tmp/rc-slip-{tag}"));
        host_path_absent(&abs);
        host_path_absent(&link);
        assert!(
            sandbox_dirs(&ctx.state_dir).is_empty(),
            "no sandbox was started"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_ten_thousand_entries_are_refused() {
    with_runner("entries", RunnerConfig::default(), |ctx| async move {
        let names: Vec<String> = (0..10_001).map(|i| format!("f{i}")).collect();
        let entries: Vec<Entry> = names.iter().map(|n| Entry::File(n, b"", 0o644)).collect();
        let zip = zip_of(&entries);
        match ctx.runner.submit(job("ls", zip)).await {
            Err(RunError::InvalidContext(ContextError::TooManyEntries { count, max })) => {
                assert_eq!((count, max), (10_001, 10_000));
            }
            other => panic!("expected TooManyEntries, got {other:?}"),
        }
        // Exactly the limit is fine.
        let entries: Vec<Entry> = names[..10_000]
            .iter()
            .map(|n| Entry::File(n, b"", 0o644))
            .collect();
        let r = run(&ctx.runner, job("ls | wc -l", zip_of(&entries))).await;
        assert_succeeded(&r, 0);
        assert_eq!(r.logs.trim(), "10000");
    })
    .await;
}

/// A zip bomb whose headers declare a few bytes while its data inflates to 300 MiB passes the
/// header check, and is stopped while unpacking by counting the bytes really produced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zip_bomb_with_lying_headers_fails_while_unpacking() {
    with_runner("bomb", RunnerConfig::default(), |ctx| async move {
        let tag = sandpool_runcommand::new_job_id();
        let name = format!("bomb-{tag}");
        let zip = tokio::task::spawn_blocking(move || {
            let zeros = vec![0u8; 1 << 20];
            let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
            let opts = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            w.start_file(name, opts).expect("start");
            for _ in 0..300 {
                std::io::Write::write_all(&mut w, &zeros).expect("write");
            }
            lie_about_sizes(w.finish().expect("finish").into_inner(), 1000)
        })
        .await
        .expect("build bomb");
        assert!(zip.len() < 2 << 20, "the bomb is small: {}", zip.len());

        let r = run(&ctx.runner, job("ls -la; touch ran", zip)).await;
        assert_eq!(r.state, CommandState::Failed, "{r:?}");
        let reason = r.reason.expect("reason");
        assert!(
            reason.contains("more bytes than the 1000 its header declares"),
            "{reason}"
        );
        assert!(r.logs.is_empty(), "the command did not run: {:?}", r.logs);
        host_path_absent(&format!("/tmp/bomb-{tag}"));
        host_path_absent(&format!("bomb-{tag}"));
    })
    .await;
}

/// 50 jobs submitted at once all finish, and at no time did more than `concurrency` run: the
/// runner's high-water mark, and the overlap of the recorded [startedAt, finishedAt] windows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_jobs_all_finish_within_the_concurrency_bound() {
    let config = RunnerConfig {
        concurrency: 4,
        ..Default::default()
    };
    with_runner("fifty", config, |ctx| async move {
        let submits = (0..50).map(|i| {
            let runner = ctx.runner.clone();
            async move {
                runner
                    .submit(job(&format!("echo job {i}"), vec![]))
                    .await
                    .expect("submit never refuses for load")
            }
        });
        let ids = futures::future::join_all(submits).await;
        let mut results = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let r = wait(&ctx.runner, id).await;
            assert_succeeded(&r, 0);
            assert_eq!(r.logs, format!("job {i}\n"));
            results.push(r);
        }
        let m = ctx.runner.metrics();
        assert_eq!((m.succeeded, m.failed, m.running, m.queued), (50, 0, 0, 0));
        assert!((1..=4).contains(&m.peak_running), "peak {}", m.peak_running);
        assert!(
            max_overlap(&results) <= 4,
            "overlap {}",
            max_overlap(&results)
        );
    })
    .await;
}

/// Most windows open at one instant; an end and a start at the same millisecond do not overlap.
fn max_overlap(results: &[CommandResult]) -> usize {
    let mut events: Vec<(SystemTime, i32)> = Vec::new();
    for r in results {
        events.push((r.started_at.expect("started"), 1));
        events.push((r.finished_at.expect("finished"), -1));
    }
    events.sort();
    let (mut now, mut max) = (0i32, 0i32);
    for (_, d) in events {
        now += d;
        max = max.max(now);
    }
    max as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_keep_head_and_tail_with_a_marker() {
    let config = RunnerConfig {
        log_cap: 64 * 1024,
        ..Default::default()
    };
    with_runner("logs", config, |ctx| async move {
        let r = run(&ctx.runner, job("seq 1 200000", vec![])).await;
        assert_succeeded(&r, 0);
        let full: String = (1..=200_000).map(|i| format!("{i}\n")).collect();
        assert!(r.logs.len() <= 64 * 1024, "{}", r.logs.len());
        let start = r.logs.find("\n[sandpool: ").expect("marker");
        let end = start + 1 + r.logs[start + 1..].find('\n').expect("marker end") + 1;
        let (head, tail) = (&r.logs[..start], &r.logs[end..]);
        assert!(head.starts_with("1\n2\n3\n") && full.starts_with(head));
        assert!(tail.ends_with("199999\n200000\n") && full.ends_with(tail));
        let dropped = full.len() - head.len() - tail.len();
        assert_eq!(&r.logs[start..end], log_marker(dropped as u64));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_a_running_command_and_destroys_its_sandbox() {
    with_runner("shutdown", RunnerConfig::default(), |ctx| async move {
        let id = ctx
            .runner
            .submit(job("echo up; sleep 600", vec![]))
            .await
            .expect("submit");
        loop {
            let r = ctx.runner.result(CLUSTER, &id).await.unwrap().unwrap();
            if r.state == CommandState::Running && !ctx.runtime.list_ids().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ctx.runner.shutdown().await;
        let r = ctx.runner.result(CLUSTER, &id).await.unwrap().unwrap();
        assert_eq!(r.state, CommandState::Failed, "{r:?}");
        assert!(r.reason.unwrap().contains("shut down"));
        assert!(ctx.runtime.list_ids().is_empty());
        assert!(sandbox_dirs(&ctx.state_dir).is_empty());
    })
    .await;
}

/// A record a dead process left `Running` becomes `Failed` with a reason.
#[tokio::test]
async fn recover_fails_what_a_dead_process_left_running() {
    let store = Arc::new(MemoryStore::new());
    let mut running = CommandResult::queued("deadbeef", CLUSTER, SystemTime::now());
    running.state = CommandState::Running;
    running.started_at = Some(sandpool_runcommand::now_millis());
    store.insert(&running).await.unwrap();
    let mut done = CommandResult::queued("finished1", CLUSTER, SystemTime::now());
    done.state = CommandState::Succeeded;
    done.exit_code = Some(0);
    done.finished_at = Some(sandpool_runcommand::now_millis());
    store.insert(&done).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = sandpool_sandbox::RuntimeConfig::new(
        dir.path().join("state"),
        env!("CARGO_BIN_EXE_runcommand-test-init"),
    );
    cfg.cgroup_parent = format!("sandpool-rctest-recover-{}", std::process::id());
    let runtime = sandpool_sandbox::Runtime::new(cfg.clone()).await.unwrap();
    let runner = CommandRunner::new(runtime, store.clone(), RunnerConfig::default());
    assert_eq!(runner.recover().await.unwrap(), 1);
    let r = runner.result(CLUSTER, "deadbeef").await.unwrap().unwrap();
    assert_eq!(r.state, CommandState::Failed);
    assert!(r
        .reason
        .unwrap()
        .contains("stopped before the command finished"));
    assert!(r.finished_at.is_some() && r.started_at == running.started_at);
    assert_eq!(
        runner.result(CLUSTER, "finished1").await.unwrap(),
        Some(done)
    );
    runner.shutdown().await;
    if let Ok(m) = sandpool_cgroups::CgroupManager::detect(&cfg.cgroup_parent) {
        for d in m.parent_dirs() {
            let _ = std::fs::remove_dir(d);
        }
    }
}
