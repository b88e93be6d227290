//! `sandpool cluster command invoke|result` against a real server with real sandboxes.

use std::path::Path;
use std::process::{Command, Output};

use sandpool_server::testing::{TestServer, TestStore};

const BIN: &str = env!("CARGO_BIN_EXE_sandpool");

fn sp(server: &TestServer, cwd: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .current_dir(cwd)
        .arg("--endpoint")
        .arg(&server.base_url)
        .arg("--data-dir")
        .arg(server.data_dir.path())
        .args(args)
        .env_remove("SANDPOOL_ACCESS_TOKEN")
        .env_remove("SANDPOOL_SUBSCRIPTION")
        .output()
        .expect("running the sandpool binary")
}

#[track_caller]
fn ok(server: &TestServer, cwd: &Path, args: &[&str]) -> String {
    let o = sp(server, cwd, args);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "sandpool {args:?} failed: {}\n{out}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_with_files_prints_exit_code_and_logs() {
    let server = TestServer::start(TestStore::Sqlite).await;
    let work = tempfile::tempdir().expect("tempdir");
    let here = work.path();
    ok(
        &server,
        here,
        &["cluster", "create", "-g", "default", "-n", "c1"],
    );

    // `--file .` sends the current directory recursively.
    std::fs::create_dir_all(here.join("manifests")).expect("mkdir");
    std::fs::write(here.join("ns.yaml"), "kind: Namespace\n").expect("write");
    std::fs::write(here.join("manifests/pod.yaml"), "kind: Pod\n").expect("write");
    let out = ok(
        &server,
        here,
        &[
            "cluster",
            "command",
            "invoke",
            "-g",
            "default",
            "-n",
            "c1",
            "--command",
            "cat ns.yaml manifests/pod.yaml; exit 4",
            "--file",
            ".",
        ],
    );
    let mut lines = out.lines();
    let first = lines.next().unwrap_or_default();
    assert!(first.contains("exitcode=4"), "{out}");
    assert_eq!(
        lines.collect::<Vec<_>>(),
        ["kind: Namespace", "kind: Pod"],
        "{out}"
    );

    // Another path is added under its base name.
    let other = tempfile::tempdir().expect("tempdir");
    std::fs::write(other.path().join("data.txt"), "payload\n").expect("write");
    let dir_name = other
        .path()
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_string();
    let file_arg = other.path().to_string_lossy().into_owned();
    let out = ok(
        &server,
        here,
        &[
            "cluster",
            "command",
            "invoke",
            "-g",
            "default",
            "-n",
            "c1",
            "-c",
            &format!("cat {dir_name}/data.txt"),
            "--file",
            &file_arg,
        ],
    );
    assert!(
        out.starts_with("command started at ") && out.contains("exitcode=0"),
        "{out}"
    );
    assert!(out.ends_with("payload\n"), "{out}");

    // --no-wait prints the id; `result` reads it back.
    let out = ok(
        &server,
        here,
        &[
            "cluster",
            "command",
            "invoke",
            "-g",
            "default",
            "-n",
            "c1",
            "-c",
            "echo later",
            "--no-wait",
            "-o",
            "tsv",
            "--query",
            "id",
        ],
    );
    let id = out.trim().to_string();
    assert!(
        !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{out}"
    );
    let result = loop {
        let out = ok(
            &server,
            here,
            &[
                "cluster", "command", "result", "-g", "default", "-n", "c1", "-i", &id,
            ],
        );
        if !out.contains("Running state") {
            break out;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(
        result.contains("exitcode=0") && result.ends_with("later\n"),
        "{result}"
    );

    // A missing cluster is an error, with the server's code.
    let o = sp(
        &server,
        here,
        &[
            "cluster", "command", "invoke", "-g", "default", "-n", "nosuch", "-c", "true",
        ],
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("ResourceNotFound"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
