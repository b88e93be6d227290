//! The real `sandpool` binary against a real server: CRUD, output formats, `--query`, exit
//! codes, the tutorial's deployment, and `sandpool serve` itself.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sandpool_server::testing::{cgroup_children, host_leftovers, HostGuard, TestServer, TestStore};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_sandpool");
const SUB: &str = "00000000-0000-0000-0000-000000000000";

fn run(endpoint: &str, data_dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--endpoint")
        .arg(endpoint)
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("SANDPOOL_ACCESS_TOKEN")
        .env_remove("SANDPOOL_TOKEN")
        .env_remove("SANDPOOL_SUBSCRIPTION")
        .env_remove("SANDPOOL_CA_CERT")
        .output()
        .expect("running the sandpool binary")
}

fn sp(server: &TestServer, args: &[&str]) -> Output {
    run(&server.base_url, server.data_dir.path(), args)
}

/// [`run`] that expects success; answers stdout.
fn run_ok(endpoint: &str, data_dir: &Path, args: &[&str]) -> String {
    let o = run(endpoint, data_dir, args);
    assert!(
        o.status.success(),
        "sandpool {args:?} failed: {}\n{}",
        stderr(&o),
        stdout(&o)
    );
    stdout(&o)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and expects success; answers stdout.
fn ok(server: &TestServer, args: &[&str]) -> String {
    run_ok(&server.base_url, server.data_dir.path(), args)
}

fn ok_json(server: &TestServer, args: &[&str]) -> Value {
    let out = ok(server, args);
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("sandpool {args:?} printed non-JSON ({e}): {out}"))
}

#[tokio::test]
async fn group_crud_and_not_found_exit_code() {
    let server = TestServer::start(TestStore::Sqlite).await;
    let g = ok_json(
        &server,
        &["group", "create", "-n", "cli-rg", "-l", "westeurope"],
    );
    assert_eq!(
        g["id"],
        format!("/subscriptions/{SUB}/resourceGroups/cli-rg")
    );
    assert_eq!(g["location"], "westeurope");
    assert_eq!(
        ok_json(&server, &["group", "show", "--name", "cli-rg"])["name"],
        "cli-rg"
    );

    let table = ok(&server, &["group", "list", "-o", "table"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].contains("Name") && lines[0].contains("Location"),
        "{table}"
    );
    assert!(lines[1].starts_with("---"), "{table}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("cli-rg") && l.contains("westeurope")),
        "{table}"
    );
    assert!(lines.iter().any(|l| l.contains("default")), "{table}");

    let names = ok(
        &server,
        &["group", "list", "--query", "[].name", "-o", "tsv"],
    );
    let mut names: Vec<&str> = names.lines().collect();
    names.sort();
    assert_eq!(names, ["cli-rg", "default"]);

    let o = sp(&server, &["group", "delete", "-n", "cli-rg", "--yes"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).is_empty());
    let o = sp(&server, &["group", "show", "-n", "cli-rg"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("(ResourceGroupNotFound)"),
        "{}",
        stderr(&o)
    );
    assert!(stdout(&o).is_empty());
}

#[tokio::test]
async fn pool_crud_with_query_and_tsv() {
    let server = TestServer::start(TestStore::Sqlite).await;
    ok(
        &server,
        &["group", "create", "-n", "prg", "-l", "northeurope"],
    );
    let p = ok_json(
        &server,
        &[
            "pool",
            "create",
            "-g",
            "prg",
            "-n",
            "shellpool",
            "--max-sessions",
            "3",
            "--ready-sessions",
            "0",
            "--cooldown-period",
            "60",
            "--network-status",
            "EgressDisabled",
            "--cpu",
            "0.5",
            "--memory",
            "512Mi",
        ],
    );
    // Location defaults to the group's.
    assert_eq!(p["location"], "northeurope");
    assert_eq!(p["properties"]["containerType"], "Shell");
    assert_eq!(
        p["properties"]["scaleConfiguration"]["maxConcurrentSessions"],
        3
    );
    assert_eq!(
        p["properties"]["sessionNetworkConfiguration"]["status"],
        "EgressDisabled"
    );

    let max = ok(
        &server,
        &[
            "pool",
            "update",
            "-g",
            "prg",
            "-n",
            "shellpool",
            "--max-sessions",
            "7",
            "--query",
            "properties.scaleConfiguration.maxConcurrentSessions",
            "-o",
            "tsv",
        ],
    );
    assert_eq!(max, "7\n");
    let tsv = ok(
        &server,
        &[
            "pool",
            "show",
            "-g",
            "prg",
            "-n",
            "shellpool",
            "--query",
            "[name, location]",
            "-o",
            "tsv",
        ],
    );
    // As with az: each element of a list on its own line.
    assert_eq!(tsv, "shellpool\nnortheurope\n");
    let state = ok(
        &server,
        &[
            "pool",
            "show",
            "-g",
            "prg",
            "-n",
            "shellpool",
            "--query",
            "properties.provisioningState",
            "-o",
            "tsv",
        ],
    );
    assert_eq!(state, "Succeeded\n");

    assert_eq!(
        ok_json(&server, &["pool", "list", "-g", "prg"])
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let all = ok(
        &server,
        &["pool", "list", "--query", "[].name", "-o", "tsv"],
    );
    assert!(
        all.lines().any(|l| l == "shellpool") && all.lines().any(|l| l == "default"),
        "{all}"
    );

    ok(&server, &["pool", "delete", "-g", "prg", "-n", "shellpool"]);
    assert_eq!(
        sp(&server, &["pool", "show", "-g", "prg", "-n", "shellpool"])
            .status
            .code(),
        Some(3)
    );
}

#[tokio::test]
async fn server_rejections_and_usage_errors_exit_non_zero() {
    let server = TestServer::start(TestStore::Sqlite).await;
    let o = sp(
        &server,
        &[
            "pool",
            "create",
            "-g",
            "default",
            "-n",
            "py",
            "--container-type",
            "PythonLTS",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("(UnsupportedContainerType)") && stderr(&o).contains("Shell"),
        "{}",
        stderr(&o)
    );

    let o = sp(
        &server,
        &["pool", "create", "-g", "no-such-group", "-n", "p"],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));

    let o = sp(
        &server,
        &[
            "pool",
            "create",
            "-g",
            "default",
            "-n",
            "p",
            "--network-status",
            "Sometimes",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "clap usage error: {}", stderr(&o));

    let o = sp(
        &server,
        &["pool", "update", "-g", "default", "-n", "default"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("nothing to update"), "{}", stderr(&o));

    let o = sp(
        &server,
        &["group", "show", "-n", "default", "--query", "[[["],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--query"), "{}", stderr(&o));

    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let o = run(
        &format!("http://{dead}"),
        server.data_dir.path(),
        &["group", "list"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cannot reach"), "{}", stderr(&o));
}

#[tokio::test]
async fn identity_and_cluster_crud() {
    let server = TestServer::start(TestStore::Sqlite).await;
    let principal = ok(
        &server,
        &[
            "identity",
            "create",
            "-g",
            "default",
            "-n",
            "pool-uami",
            "--query",
            "properties.principalId",
            "-o",
            "tsv",
        ],
    );
    assert!(
        uuid::Uuid::parse_str(principal.trim()).is_ok(),
        "{principal}"
    );
    let shown = ok(
        &server,
        &[
            "identity",
            "show",
            "-g",
            "default",
            "-n",
            "pool-uami",
            "--query",
            "properties.principalId",
            "-o",
            "tsv",
        ],
    );
    assert_eq!(shown, principal);
    assert_eq!(
        ok(
            &server,
            &[
                "identity",
                "list",
                "-g",
                "default",
                "--query",
                "length(@)",
                "-o",
                "tsv"
            ]
        ),
        "1\n"
    );
    ok(
        &server,
        &["identity", "delete", "-g", "default", "-n", "pool-uami"],
    );
    assert_eq!(
        sp(
            &server,
            &["identity", "show", "-g", "default", "-n", "pool-uami"]
        )
        .status
        .code(),
        Some(3)
    );

    let c = ok_json(
        &server,
        &[
            "cluster",
            "create",
            "-g",
            "default",
            "-n",
            "runner",
            "--cpu",
            "1",
            "--memory",
            "256Mi",
            "--pids",
            "128",
            "--egress",
            "Disabled",
            "--command-timeout",
            "60",
        ],
    );
    assert_eq!(c["properties"]["limits"]["memory"], "256Mi");
    assert_eq!(c["properties"]["commandTimeoutInSeconds"], 60);
    assert_eq!(
        ok(
            &server,
            &["cluster", "list", "--query", "[].name", "-o", "tsv"]
        ),
        "runner\n"
    );
    assert_eq!(
        ok_json(
            &server,
            &["cluster", "show", "-g", "default", "-n", "runner"]
        )["name"],
        "runner"
    );
    ok(
        &server,
        &["cluster", "delete", "-g", "default", "-n", "runner"],
    );
    assert_eq!(
        sp(
            &server,
            &["cluster", "show", "-g", "default", "-n", "runner"]
        )
        .status
        .code(),
        Some(3)
    );
}

#[tokio::test]
async fn tutorial_template_deploys_and_resource_show_queries_it() {
    let server = TestServer::start(TestStore::Sqlite).await;
    ok(
        &server,
        &[
            "group",
            "create",
            "--name",
            "tutorial-rg",
            "--location",
            "North Central US",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deploy.json");
    std::fs::write(
        &file,
        include_str!("../../template/tests/fixtures/tutorial.json"),
    )
    .unwrap();
    let file = file.to_string_lossy().into_owned();
    let dep = ok_json(
        &server,
        &[
            "deployment",
            "create",
            "--resource-group",
            "tutorial-rg",
            "--template-file",
            &file,
        ],
    );
    assert_eq!(dep["name"], "deploy");
    assert_eq!(dep["properties"]["provisioningState"], "Succeeded", "{dep}");

    let pool_id = format!("/subscriptions/{SUB}/resourceGroups/tutorial-rg/providers/Microsoft.App/sessionpools/myshellpool");
    let shown = ok_json(
        &server,
        &[
            "resource",
            "show",
            "--ids",
            &pool_id,
            "--query",
            "{name:name, location:location, provisioningState:properties.provisioningState}",
        ],
    );
    // ARM normalises locations ("North Central US" → "northcentralus"); accept either spelling.
    let loc = shown["location"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase()
        .replace(' ', "");
    assert_eq!(loc, "northcentralus", "{shown}");
    assert_eq!(
        shown,
        json!({"name": "myshellpool", "location": shown["location"].clone(), "provisioningState": "Succeeded"})
    );
}

#[tokio::test]
async fn deployment_parameters_and_template_errors() {
    let server = TestServer::start(TestStore::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pool.json");
    std::fs::write(
        &file,
        r#"{
          // parameterised pool
          "parameters": {
            "poolName": {"type": "string"},
            "max": {"type": "int", "defaultValue": 2}
          },
          "resources": [{
            "type": "Microsoft.App/sessionPools", "apiVersion": "2025-02-02-preview",
            "name": "[parameters('poolName')]", "location": "[resourceGroup().location]",
            "properties": {"poolManagementType": "Dynamic", "containerType": "Shell",
              "scaleConfiguration": {"maxConcurrentSessions": "[parameters('max')]"}}
          }]
        }"#,
    )
    .unwrap();
    let file = file.to_string_lossy().into_owned();
    ok(
        &server,
        &[
            "deployment",
            "create",
            "-g",
            "default",
            "-n",
            "d1",
            "--template-file",
            &file,
            "--parameters",
            "poolName=fromparam",
            "max=4",
        ],
    );
    let max = ok(
        &server,
        &[
            "pool",
            "show",
            "-g",
            "default",
            "-n",
            "fromparam",
            "--query",
            "properties.scaleConfiguration.maxConcurrentSessions",
            "-o",
            "tsv",
        ],
    );
    assert_eq!(max, "4\n");

    let o = sp(
        &server,
        &[
            "deployment",
            "create",
            "-g",
            "default",
            "--template-file",
            &file,
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("(MissingDeploymentParameter)"),
        "{}",
        stderr(&o)
    );

    let broken = dir.path().join("broken.json");
    std::fs::write(
        &broken,
        "{\n  \"resources\": [\n    {\"type\" \"x\"}\n  ]\n}",
    )
    .unwrap();
    let o = sp(
        &server,
        &[
            "deployment",
            "create",
            "-g",
            "default",
            "--template-file",
            &broken.to_string_lossy(),
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("line 3"), "{}", stderr(&o));
}

/// Kills the child if the test fails before it stopped it.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn serve_starts_with_defaults_and_stops_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    // Its own cgroup parent and uid band, no egress; whatever the server leaves is removed
    // however the test ends (declared after `data`, before the child: dropped between them).
    let settings = sandpool_server::testing::test_sandbox_settings();
    let host = HostGuard {
        data_dir: data.path().to_path_buf(),
        settings: settings.clone(),
    };
    // A free port: bind, read, release. Another process could take it in between; then the
    // server fails to bind and the test reports that rather than hanging.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            &listen,
            "--log-format",
            "json",
            "--command-retention",
            "12h",
            "--no-egress",
            "--cgroup-parent",
            &settings.cgroup_parent,
            "--uid-base",
            &settings.uid_base.to_string(),
            "--uid-slots",
            &settings.uid_slots.to_string(),
        ])
        .arg("--data-dir")
        .arg(data.path())
        .env_remove("SANDPOOL_DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning sandpool serve");
    let mut guard = ChildGuard(Some(child));
    let endpoint = format!("http://{listen}");

    let deadline = Instant::now() + Duration::from_secs(120);
    let group = loop {
        let o = run(&endpoint, data.path(), &["group", "show", "-n", "default"]);
        if o.status.success() {
            break serde_json::from_slice::<Value>(&o.stdout).unwrap();
        }
        if let Some(c) = guard.0.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                panic!("sandpool serve exited early with {status}");
            }
        }
        assert!(
            Instant::now() < deadline,
            "server never became ready: {}",
            stderr(&o)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(group["name"], "default");
    let pool = run(
        &endpoint,
        data.path(),
        &["pool", "show", "-g", "default", "-n", "default"],
    );
    assert!(pool.status.success(), "{}", stderr(&pool));
    let pool: Value = serde_json::from_slice(&pool.stdout).unwrap();
    assert_eq!(pool["properties"]["containerType"], "Shell");
    // With --no-egress, a session of a pool that asks for egress fails with a clear error.
    run_ok(
        &endpoint,
        data.path(),
        &[
            "pool",
            "create",
            "-g",
            "default",
            "-n",
            "egress",
            "--network-status",
            "EgressEnabled",
            "--ready-sessions",
            "0",
        ],
    );
    let token = run_ok(
        &endpoint,
        data.path(),
        &[
            "token",
            "--resource",
            "https://dynamicsessions.io",
            "--query",
            "accessToken",
            "-o",
            "tsv",
        ],
    );
    let exec = format!(
        "{endpoint}/subscriptions/{SUB}/resourceGroups/default/sessionPools/egress/executions\
         ?api-version=2025-02-02-preview&identifier=needs-egress"
    );
    let (status, body) = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let r = reqwest::Client::new()
            .post(&exec)
            .bearer_auth(token.trim())
            .json(&json!({"shellCommand": "true"}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("SessionStartFailed") && body.contains("egress"),
        "{body}"
    );
    // The default pool keeps one sandbox ready, in a cgroup below the test's parent, its
    // processes running as host uids of the test's band.
    let band = settings.uid_base..settings.uid_base.saturating_add(256 * 65_536);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let uids = sandbox_uids(&settings.cgroup_parent);
        if !uids.is_empty() && uids.iter().all(|u| band.contains(u)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no ready sandbox below cgroup {} with uids in {band:?}: {uids:?}",
            settings.cgroup_parent
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let child = guard.0.take().unwrap();
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: signalling the child this test spawned and still owns (not yet reaped).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "serve exited with {}: {logs}",
        out.status
    );
    // The JSON log format is really JSON: every line parses.
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            serde_json::from_str::<Value>(line).is_ok(),
            "not a JSON log line: {line}"
        );
    }
    assert!(
        data.path().read_dir().unwrap().next().is_some(),
        "the data dir holds the store"
    );
    // A graceful stop destroys ready sandboxes together with their cgroups.
    let left = cgroup_children(&settings.cgroup_parent);
    assert!(left.is_empty(), "cgroups left after SIGTERM: {left:?}");
    host.clean();
    let leftovers = host_leftovers(&settings);
    assert!(leftovers.is_empty(), "left on the host: {leftovers:?}");
}

/// Host uids of the processes in the cgroups below `parent`.
fn sandbox_uids(parent: &str) -> Vec<u32> {
    cgroup_children(parent)
        .iter()
        .filter_map(|dir| std::fs::read_to_string(dir.join("cgroup.procs")).ok())
        .flat_map(|procs| {
            procs
                .lines()
                .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
                .collect::<Vec<_>>()
        })
        .filter_map(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .collect()
}

#[test]
fn serve_rejects_bad_sandbox_flags() {
    for (flag, value) in [
        ("--egress-subnet", "10.213.0.1/16"),
        ("--egress-subnet", "10.213.0.0/33"),
        ("--egress-subnet", "sandpool"),
        ("--egress-bridge", "spv0"),
        ("--egress-bridge", "a-bridge-name-too-long"),
        ("--cgroup-parent", "../escape"),
        ("--cgroup-parent", ""),
        ("--uid-base", "0"),
        ("--uid-base", "many"),
        ("--uid-base", "4294967295"),
    ] {
        let o = Command::new(BIN)
            .args(["serve", flag, value])
            .env_remove("SANDPOOL_NO_EGRESS")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{flag} {value:?}: {err}");
        assert!(err.contains(flag), "{flag} {value:?}: {err}");
    }
    let o = Command::new(BIN)
        .args(["serve"])
        .env("SANDPOOL_NO_EGRESS", "maybe")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--no-egress"), "{}", stderr(&o));
}

#[test]
fn serve_rejects_a_bad_retention_value() {
    let o = Command::new(BIN)
        .args(["serve", "--command-retention", "7 fortnights"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("command-retention"));
}

/// Against `serve --tls-self-signed`: without trust every command fails and says which flag
/// fixes it; with `--ca-cert` (or `SANDPOOL_CA_CERT`, or the data dir's own certificate) the
/// same command works, its token fetched over the same trusted connection.
#[tokio::test]
async fn trusts_the_certificate_it_is_given() {
    let server = TestServer::start_with(TestStore::Sqlite, |c| {
        c.tls = sandpool_server::TlsMode::SelfSigned;
    })
    .await;
    assert!(
        server.base_url.starts_with("https://"),
        "{}",
        server.base_url
    );
    let cert = server
        .data_dir
        .path()
        .join(sandpool_server::SELF_SIGNED_CERT);
    // A copy of the admin credential without the certificate beside it: nothing to trust.
    let bare = tempfile::tempdir().unwrap();
    std::fs::copy(
        server.data_dir.path().join(sandpool_auth::ADMIN_FILE),
        bare.path().join(sandpool_auth::ADMIN_FILE),
    )
    .unwrap();

    let o = run(&server.base_url, bare.path(), &["group", "list"]);
    assert!(!o.status.success(), "untrusted TLS worked: {}", stdout(&o));
    assert!(
        stderr(&o).contains("certificate") && stderr(&o).contains("--ca-cert"),
        "{}",
        stderr(&o)
    );

    let cert_arg = cert.to_str().unwrap();
    let names = run_ok(
        &server.base_url,
        bare.path(),
        &[
            "--ca-cert",
            cert_arg,
            "group",
            "list",
            "--query",
            "[].name",
            "-o",
            "tsv",
        ],
    );
    assert_eq!(names.trim(), "default");

    let o = Command::new(BIN)
        .args(["--endpoint", &server.base_url, "--data-dir"])
        .arg(bare.path())
        .args(["token", "--query", "tokenType", "-o", "tsv"])
        .env("SANDPOOL_CA_CERT", &cert)
        .env_remove("SANDPOOL_ACCESS_TOKEN")
        .env_remove("SANDPOOL_TOKEN")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "Bearer");

    // The system's store, which `SSL_CERT_FILE` stands in for (no test may edit the host's).
    let o = Command::new(BIN)
        .args(["--endpoint", &server.base_url, "--data-dir"])
        .arg(bare.path())
        .args(["group", "list", "--query", "[].name", "-o", "tsv"])
        .env("SSL_CERT_FILE", &cert)
        .env_remove("SANDPOOL_ACCESS_TOKEN")
        .env_remove("SANDPOOL_TOKEN")
        .env_remove("SANDPOOL_CA_CERT")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "default");

    // On the server's own host the data dir's certificate is trusted without a flag.
    assert_eq!(
        ok(
            &server,
            &["group", "list", "--query", "[].name", "-o", "tsv"]
        )
        .trim(),
        "default"
    );

    // A file that is not a certificate is refused by name, before any request.
    let junk = bare.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let o = run(
        &server.base_url,
        bare.path(),
        &["--ca-cert", junk.to_str().unwrap(), "group", "list"],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("junk.pem"), "{}", stderr(&o));
}

/// Logs written to a pipe (a file, journald, a collector) carry no terminal colour codes, and
/// the netlink crate's warning about a kernel newer than itself, which every start with egress
/// printed, is not among them.
#[test]
fn serve_logs_plain_text_to_a_pipe() {
    use std::io::{BufRead, BufReader};
    let data = tempfile::tempdir().unwrap();
    let mut settings = sandpool_server::testing::test_sandbox_settings();
    let egress = sandpool_server::testing::test_egress_config();
    settings.egress = Some(egress.clone());
    let _host = HostGuard {
        data_dir: data.path().to_path_buf(),
        settings: settings.clone(),
    };
    let child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--egress-bridge"])
        .arg(&egress.bridge)
        .arg("--egress-subnet")
        .arg(egress.subnet.to_string())
        .arg("--cgroup-parent")
        .arg(&settings.cgroup_parent)
        .arg("--uid-base")
        .arg(settings.uid_base.to_string())
        // The test's own band only: a default-sized range would overlap the bands of the other
        // servers this binary runs at once, and the instance registry would refuse one of them.
        .arg("--uid-slots")
        .arg(settings.uid_slots.to_string())
        .arg("--data-dir")
        .arg(data.path())
        .env_remove("SANDPOOL_DATABASE_URL")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning sandpool serve");
    let mut guard = ChildGuard(Some(child));
    let stderr_pipe = guard.0.as_mut().unwrap().stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !lines
        .iter()
        .any(|l: &String| l.contains("sandpool serving"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => panic!(
                "the server never said it was serving:\n{}",
                lines.join("\n")
            ),
        }
    }
    // The bridge was set up (what printed the warning), so the filter was really exercised.
    assert!(
        std::path::Path::new("/sys/class/net")
            .join(&egress.bridge)
            .exists(),
        "no bridge {}",
        egress.bridge
    );
    let child = guard.0.as_mut().unwrap();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    lines.extend(rx.try_iter());
    let text = lines.join("\n");
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in piped logs:\n{text}"
    );
    assert!(!text.contains("IFLA_INET6_CONF"), "{text}");
    assert!(text.contains(" INFO "), "{text}");
}
