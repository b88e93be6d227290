//! `sandpool exec`, `sandpool files …` and `sandpool session …`: the real binary against a real
//! server with real sandboxes.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use sandpool_server::testing::{TestServer, TestStore};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_sandpool");

/// The binary with the server's endpoint and credential, and none of the caller's settings.
fn command(server: &TestServer, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--endpoint")
        .arg(&server.base_url)
        .arg("--data-dir")
        .arg(server.data_dir.path())
        .args(args)
        .env_remove("SANDPOOL_ACCESS_TOKEN")
        .env_remove("SANDPOOL_TOKEN")
        .env_remove("SANDPOOL_SUBSCRIPTION")
        .env_remove("SANDPOOL_SESSION");
    c
}

fn sp(server: &TestServer, args: &[&str]) -> Output {
    command(server, args)
        .output()
        .expect("running the sandpool binary")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs, expects success, answers stdout.
#[track_caller]
fn ok(server: &TestServer, args: &[&str]) -> String {
    let o = sp(server, args);
    assert!(
        o.status.success(),
        "sandpool {args:?} failed ({:?}): {}\n{}",
        o.status.code(),
        text(&o.stderr),
        text(&o.stdout)
    );
    text(&o.stdout)
}

#[track_caller]
fn ok_json(server: &TestServer, args: &[&str]) -> Value {
    let out = ok(server, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} printed non-JSON ({e}): {out}"))
}

/// Asserts a failure with `code` and no panic; answers stderr.
#[track_caller]
fn fails(server: &TestServer, args: &[&str], code: i32) -> String {
    let o = sp(server, args);
    let err = text(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(code),
        "sandpool {args:?}: {err}\n{}",
        text(&o.stdout)
    );
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    err
}

/// A running `sandpool` process, killed if a test fails while it runs.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_prints_output_and_passes_the_exit_status() {
    let server = TestServer::start(TestStore::Sqlite).await;
    let id = ["--identifier", "exec-status"];
    let exec = |rest: &[&str]| {
        let mut args = vec!["exec"];
        args.extend(id);
        args.extend(rest);
        sp(&server, &args)
    };

    let o = exec(&["--", "echo out; echo err >&2"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "out\n");
    assert_eq!(text(&o.stderr), "err\n");

    // The exit status is the command's, given as one shell line or as a program + arguments.
    assert_eq!(exec(&["--", "exit 3"]).status.code(), Some(3));
    assert_eq!(exec(&["--", "sh", "-c", "exit 7"]).status.code(), Some(7));

    // Several arguments are passed exactly: no word splitting, globbing or quote handling.
    let o = exec(&["--", "printf", "%s|", "a  b", "it's", "*"]);
    assert_eq!(text(&o.stdout), "a  b|it's|*|", "{}", text(&o.stderr));

    let o = exec(&[
        "--env",
        "GREETING=hello 'quoted' $world",
        "-e",
        "N=2",
        "--",
        "echo \"$GREETING\" $N",
    ]);
    assert_eq!(text(&o.stdout), "hello 'quoted' $world 2\n");

    // A signal ends the command: 128 + its number.
    let o = exec(&["--", "kill -9 $$"]);
    assert_eq!(o.status.code(), Some(137), "{}", text(&o.stderr));

    // The timeout: 124 and a note, as timeout(1) does.
    let o = exec(&["--timeout", "1", "--", "echo started; sleep 30"]);
    assert_eq!(o.status.code(), Some(124), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "started\n");
    assert!(text(&o.stderr).contains("timed out"), "{}", text(&o.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_output_arrives_while_the_command_runs() {
    let server = TestServer::start(TestStore::Sqlite).await;
    // The command prints, then waits for a file only the test creates, after it has read the
    // first line: "released" proves that line reached the terminal before the command ended.
    let script = "echo first; i=0; \
                  while [ ! -e /mnt/data/go ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; \
                  if [ -e /mnt/data/go ]; then echo released; else echo gave-up; fi";
    let child = command(
        &server,
        &[
            "exec",
            "-i",
            "exec-stream",
            "--timeout",
            "120",
            "--",
            script,
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("starting sandpool exec");
    let mut child = Running(child);
    let mut out = BufReader::new(child.0.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("reading exec's stdout");
    assert_eq!(line, "first\n");

    ok(
        &server,
        &["exec", "-i", "exec-stream", "--", "touch /mnt/data/go"],
    );
    let mut rest = String::new();
    out.read_to_string(&mut rest)
        .expect("reading exec's stdout");
    assert_eq!(rest, "released\n");
    let status = child.0.wait().expect("waiting for sandpool exec");
    let mut err = String::new();
    if let Some(mut e) = child.0.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert_eq!(status.code(), Some(0), "{err}");
}

fn random_file(path: &Path, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut data))
        .expect("reading /dev/urandom");
    std::fs::write(path, &data).expect("writing the local file");
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_persist_and_round_trip_byte_for_byte() {
    let server = TestServer::start(TestStore::Sqlite).await;
    let work = tempfile::tempdir().expect("tempdir");
    let s = ["-g", "default", "--pool", "default", "-i", "files-one"];
    let with = |cmd: &[&str], rest: &[&str]| -> Vec<String> {
        cmd.iter()
            .chain(s.iter())
            .chain(rest.iter())
            .map(|a| a.to_string())
            .collect()
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&server, &refs)
    };

    // A file written by one execution is there for the next.
    run(with(&["exec"], &["--", "echo kept > /mnt/data/note.txt"]));
    assert_eq!(
        run(with(&["exec"], &["--", "cat /mnt/data/note.txt"])),
        "kept\n"
    );

    let local = work.path().join("blob.bin");
    let data = random_file(&local, 3 * 1024 * 1024 + 17);
    let local_arg = local.to_string_lossy().into_owned();
    let up: Value = serde_json::from_str(&run(with(
        &["files", "upload"],
        &[&local_arg, "--path", "sub/dir/"],
    )))
    .expect("upload prints JSON");
    assert_eq!(up["name"], "blob.bin", "{up}");
    assert_eq!(up["sizeInBytes"], data.len(), "{up}");
    // Renamed on the way up.
    run(with(
        &["files", "upload"],
        &[&local_arg, "--path", "copy.bin"],
    ));

    let names = run(with(
        &["files", "list"],
        &["--query", "[?type=='File'].name", "-o", "tsv"],
    ));
    let mut names: Vec<&str> = names.lines().collect();
    names.sort();
    assert_eq!(names, ["copy.bin", "note.txt"]);
    let table = run(with(
        &["files", "list"],
        &["--path", "sub/dir", "-o", "table"],
    ));
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].contains("Name") && lines[0].contains("SizeInBytes"),
        "{table}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("blob.bin") && l.contains(&data.len().to_string())),
        "{table}"
    );
    let all = run(with(
        &["files", "list"],
        &["--recursive", "--query", "length(@)"],
    ));
    assert!(all.trim().parse::<u32>().expect("a count") >= 3, "{all}");

    // Down again: into a named file, into a directory, and to stdout.
    let named = work.path().join("back.bin");
    let named_arg = named.to_string_lossy().into_owned();
    run(with(
        &["files", "download"],
        &["sub/dir/blob.bin", &named_arg],
    ));
    assert!(std::fs::read(&named).expect("downloaded file") == data);
    let dir_arg = work.path().join("into");
    std::fs::create_dir(&dir_arg).expect("mkdir");
    let dir_arg = dir_arg.to_string_lossy().into_owned();
    run(with(
        &["files", "download"],
        &["/mnt/data/copy.bin", &dir_arg],
    ));
    assert!(std::fs::read(work.path().join("into/copy.bin")).expect("downloaded") == data);
    let args = with(&["files", "download"], &["copy.bin", "-"]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = sp(&server, &refs);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(o.stdout == data, "stdout download differs");
    // No temporary file is left beside a download.
    let leftovers: Vec<_> = std::fs::read_dir(work.path())
        .expect("readdir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Another identifier is another session: it does not see these files.
    let other = ok(
        &server,
        &[
            "files",
            "list",
            "-i",
            "files-two",
            "--query",
            "[].name",
            "-o",
            "tsv",
        ],
    );
    assert!(!other.contains("copy.bin"), "{other}");

    // Delete; then the file is gone, and a missing file is "not found" (exit status 3).
    run(with(&["files", "delete"], &["copy.bin"]));
    let names = run(with(
        &["files", "list"],
        &["--query", "[].name", "-o", "tsv"],
    ));
    assert!(!names.contains("copy.bin"), "{names}");
    let missing = work.path().join("missing.bin");
    let missing_arg = missing.to_string_lossy().into_owned();
    let args = with(&["files", "download"], &["copy.bin", &missing_arg]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = fails(&server, &refs, 3);
    assert!(err.starts_with("ERROR: ("), "{err}");
    assert!(!missing.exists());
    let args = with(&["files", "delete"], &["copy.bin"]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    fails(&server, &refs, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_listed_shown_and_deleted() {
    let server = TestServer::start(TestStore::Sqlite).await;
    ok(&server, &["exec", "-i", "sess-a", "--", "true"]);
    // The default identifier: $SANDPOOL_SESSION, else cli-<user>.
    let o = command(&server, &["exec", "--", "true"])
        .env("SANDPOOL_SESSION", "sess-from-env")
        .output()
        .expect("running sandpool");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = command(&server, &["exec", "--", "echo x > /mnt/data/mine"])
        .env("USER", "tester")
        .output()
        .expect("running sandpool");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = command(
        &server,
        &["files", "list", "--query", "[].name", "-o", "tsv"],
    )
    .env("USER", "tester")
    .output()
    .expect("running sandpool");
    assert_eq!(text(&o.stdout), "mine\n", "{}", text(&o.stderr));

    let ids = ok(
        &server,
        &["session", "list", "--query", "[].identifier", "-o", "tsv"],
    );
    let mut ids: Vec<&str> = ids.lines().collect();
    ids.sort();
    assert_eq!(ids, ["cli-tester", "sess-a", "sess-from-env"]);

    let one = ok_json(&server, &["session", "show", "-i", "sess-a"]);
    assert_eq!(one["identifier"], "sess-a", "{one}");
    assert!(
        one["expiresAt"].as_str().is_some_and(|s| !s.is_empty()),
        "{one}"
    );
    let table = ok(&server, &["session", "list", "-o", "table"]);
    assert!(
        table.lines().next().unwrap_or("").contains("Identifier"),
        "{table}"
    );

    let o = sp(&server, &["session", "delete", "--identifier", "sess-a"]);
    assert!(
        o.status.success() && o.stdout.is_empty(),
        "{}",
        text(&o.stderr)
    );
    fails(&server, &["session", "show", "-i", "sess-a"], 3);
    let ids = ok(
        &server,
        &["session", "list", "--query", "[].identifier", "-o", "tsv"],
    );
    assert!(!ids.contains("sess-a"), "{ids}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clear_error() {
    let server = TestServer::start(TestStore::Sqlite).await;
    // A pool that does not exist: the server's code and message, "not found" status.
    let err = fails(
        &server,
        &["exec", "--pool", "nosuch", "-i", "bad-1", "--", "true"],
        3,
    );
    assert!(
        err.starts_with("ERROR: (") && err.contains("nosuch"),
        "{err}"
    );
    let err = fails(&server, &["session", "list", "-g", "nogroup"], 3);
    assert!(err.starts_with("ERROR: ("), "{err}");
    // An identifier the API refuses.
    let err = fails(&server, &["exec", "-i", "ab", "--", "true"], 1);
    assert!(err.contains("ERROR: ("), "{err}");
    // A path outside /mnt/data.
    let err = fails(
        &server,
        &["files", "list", "-i", "bad-2", "--path", "../etc"],
        1,
    );
    assert!(err.contains("ERROR: ("), "{err}");
    // Usage errors (clap): no command, a bad --env, a timeout out of range.
    fails(&server, &["exec"], 2);
    let err = fails(&server, &["exec", "--env", "1X=y", "--", "true"], 2);
    assert!(err.contains("variable name"), "{err}");
    fails(&server, &["exec", "--timeout", "0", "--", "true"], 2);
    // A local file that is not there, or not a file.
    let err = fails(
        &server,
        &["files", "upload", "/nonexistent/file.bin", "-i", "bad-3"],
        1,
    );
    assert!(err.contains("/nonexistent/file.bin"), "{err}");
    let err = fails(&server, &["files", "upload", "/tmp", "-i", "bad-3"], 1);
    assert!(err.contains("not a regular file"), "{err}");
    // An unreachable server.
    let o = Command::new(BIN)
        .args([
            "--endpoint",
            "http://127.0.0.1:9",
            "exec",
            "-i",
            "bad-4",
            "--",
            "true",
        ])
        .env_remove("SANDPOOL_ACCESS_TOKEN")
        .output()
        .expect("running sandpool");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).starts_with("ERROR: "),
        "{}",
        text(&o.stderr)
    );
}
