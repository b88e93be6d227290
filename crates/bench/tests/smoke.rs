//! The full-stack bench end to end at tiny sizes: a real server child, real sessions, real
//! peers. It cannot pass without a working server (every figure needs checked answers from
//! it), and it checks the run leaves no cgroup or process behind, also when interrupted.
//! Needs root, bubblewrap and crun (the bench installs the last two when missing).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BENCH: &str = env!("CARGO_BIN_EXE_sandpool-bench");

/// The cgroup directories (any hierarchy) of the full-stack run of bench process `pid`.
fn run_cgroups(pid: u32) -> Vec<PathBuf> {
    cgroups_named(&format!("sandpool-bench-stack-{pid}"))
}

fn cgroups_named(name: &str) -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .map(|d| {
            d.flatten()
                .map(|e| e.path().join(name))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default()
}

/// Processes in a cgroup of the full-stack run of bench process `pid`.
fn run_processes(pid: u32) -> Vec<String> {
    processes_in(&format!("/sandpool-bench-stack-{pid}/"))
}

fn processes_in(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cgroups) = std::fs::read_to_string(p.path().join("cgroup")) {
            if cgroups.contains(needle) {
                found.push(p.file_name().to_string_lossy().into_owned());
            }
        }
    }
    found
}

/// A finished run of the bench: its pid, output and JSON report.
struct Run {
    pid: u32,
    stdout: String,
    stderr: String,
    report: serde_json::Value,
}

/// Runs the bench with `args`, its JSON report written to `json`, to a successful end.
fn run_to_end(args: &[&str], json: &std::path::Path) -> Run {
    let child = Command::new(BENCH)
        .arg("--json")
        .arg(json)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the bench");
    let pid = child.id();
    let out = child.wait_with_output().expect("running the bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "bench failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let report =
        serde_json::from_slice(&std::fs::read(json).expect("results")).expect("results JSON");
    Run {
        pid,
        stdout,
        stderr,
        report,
    }
}

/// Kills a bench that outlived its test, so a failing test does not leave it running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn every_full_stack_figure_is_measured_and_nothing_is_left() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("results.json");
    let Run {
        pid,
        stdout,
        stderr,
        report,
    } = run_to_end(
        &[
            "--iterations",
            "3",
            "--sessions",
            "5",
            "--file-mib",
            "1",
            "all",
        ],
        &json,
    );
    let rows = report["rows"].as_array().expect("rows");
    let expected = [
        "warm exec over HTTP (`echo hi`)",
        "warm exec over HTTP, against bwrap",
        "new session, warm pool: first command",
        "new session, empty pool: first command",
        "throughput, 1 concurrent clients over 64 sessions",
        "throughput, 8 concurrent clients over 64 sessions",
        "throughput, 64 concurrent clients over 64 sessions",
        "run command submit → result (`echo`, 10 KiB context)",
        "files: upload of 1 MiB",
        "files: download of 1 MiB",
        "host memory per session, 5 alive (MemAvailable drop)",
        "  of which sandbox cgroup memory per session, 5 alive",
        "  of which server RSS growth per session, 5 alive",
        "exec over HTTP with 5 sessions alive",
    ];
    for figure in expected {
        let row = rows
            .iter()
            .find(|r| r["figure"] == figure)
            .unwrap_or_else(|| panic!("figure '{figure}' missing from {report:#}"));
        let headline = row["headline"].as_f64().unwrap_or(f64::NAN);
        assert!(
            headline.is_finite() && headline >= 0.0,
            "{figure}: {headline}"
        );
        for peer in row["peers"].as_array().expect("peers") {
            let ratio = peer["ratio"].as_f64().unwrap_or(f64::NAN);
            assert!(
                ratio.is_finite(),
                "{figure} / {}: ratio {ratio}",
                peer["name"]
            );
        }
        assert!(
            stdout.contains(figure.trim()),
            "the table lacks '{figure}':\n{stdout}"
        );
    }
    assert_eq!(rows.len(), expected.len(), "unexpected rows: {report:#}");
    // Latencies are positive: each one is a checked answer that took time.
    assert!(rows[0]["sandpool"]["p50_us"].as_f64().unwrap_or(0.0) > 0.0);
    assert_eq!(report["leftovers"], serde_json::json!([]), "{stderr}");
    assert_eq!(run_cgroups(pid), Vec::<PathBuf>::new());
    assert_eq!(run_processes(pid), Vec::<String>::new());
}

#[test]
fn an_interrupted_run_removes_its_sandboxes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let child = Command::new(BENCH)
        .args(["--iterations", "3", "--sessions", "400", "--json"])
        .arg(dir.path().join("results.json"))
        .arg("density")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the bench");
    let pid = child.id();
    let mut child = KillOnDrop(child);
    // Interrupt once sessions are alive: sandboxes, cgroups and a server to clean up.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let sessions = run_cgroups(pid)
            .iter()
            .filter_map(|d| std::fs::read_dir(d).ok())
            .map(|d| d.flatten().filter(|e| e.path().is_dir()).count())
            .max()
            .unwrap_or(0);
        if sessions >= 3 {
            break;
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("the bench ended before any session existed: {status}");
        }
        assert!(Instant::now() < deadline, "no session after 300 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let raw = i32::try_from(pid).expect("pid");
    // SAFETY: signalling our own unreaped child.
    unsafe { libc::kill(raw, libc::SIGINT) };
    let status = child.0.wait().expect("waiting for the bench");
    let mut stderr = String::new();
    if let Some(mut e) = child.0.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(!status.success(), "an interrupted run must fail: {stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_eq!(run_cgroups(pid), Vec::<PathBuf>::new(), "{stderr}");
    assert_eq!(run_processes(pid), Vec::<String>::new(), "{stderr}");
}

#[test]
fn the_runtime_figures_are_measured_and_nothing_is_left() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("results.json");
    let Run {
        pid,
        stderr,
        report,
        ..
    } = run_to_end(&["--iterations", "3", "sandbox", "--density", "3"], &json);
    let figures: Vec<&str> = report["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["figure"].as_str())
        .collect();
    for want in [
        "cold start to first exit (no egress)",
        "cold start to first exit (egress slot)",
        "warm exec round trip (`true`)",
    ] {
        assert!(figures.contains(&want), "{want} missing from {figures:?}");
    }
    let parent = format!("sandpool-bench-{pid}");
    assert_eq!(cgroups_named(&parent), Vec::<PathBuf>::new(), "{stderr}");
    assert_eq!(processes_in(&format!("/{parent}/")), Vec::<String>::new());
}
