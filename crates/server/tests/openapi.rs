//! `/openapi.json` against real tools (PyPI, installed into the test venv by scripts/test.sh):
//! `openapi-spec-validator` must accept the served document, and a bounded schemathesis run
//! against a real loopback server (own data dir, no egress, the admin's bearer tokens) must
//! find no 5xx and no answer that breaks the document's schemas. Both fail (never skip) when
//! the tools are missing.

use sandpool_server::testing::{TestServer, TestStore};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// The served document, written to `dir/openapi.json`.
async fn fetch_document(srv: &TestServer, dir: &Path) -> std::path::PathBuf {
    let resp = reqwest::get(srv.url("/openapi.json")).await.expect("GET");
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let path = dir.join("openapi.json");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_validates() {
    let srv = TestServer::start(TestStore::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let doc = fetch_document(&srv, dir.path()).await;
    let out = Command::new(python())
        .args(["-m", "openapi_spec_validator"])
        .arg(&doc)
        .output()
        .expect("running python (is the test venv set up? scripts/test.sh)");
    assert!(
        out.status.success(),
        "openapi-spec-validator rejects /openapi.json:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // What makes the document useful beyond valid: bodies have schemas, errors have the body.
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&doc).unwrap()).unwrap();
    assert_eq!(v["openapi"], "3.1.0");
    let ops: Vec<(&String, &serde_json::Value)> = v["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(p, item)| item.as_object().unwrap().values().map(move |op| (p, op)))
        .collect();
    assert!(ops.len() > 50, "{} operations", ops.len());
    for (path, op) in &ops {
        for (status, r) in op["responses"].as_object().unwrap() {
            if status.starts_with('4') || status.starts_with('5') || status == "default" {
                let schema = &r["content"]["application/json"]["schema"];
                assert!(schema.is_object(), "{path} {status} has no error schema");
            }
        }
        if let Some(body) = op.get("requestBody") {
            let typed = body["content"]
                .as_object()
                .unwrap()
                .values()
                .any(|c| c.get("schema").is_some());
            assert!(typed, "{path}: request body without a schema");
        }
    }
    let pool = &v["paths"]
        ["/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.App/sessionPools/{name}"]
        ["get"]["responses"]["200"]["content"]["application/json"]["schema"];
    assert!(pool.is_object(), "the pool GET has no response schema");
}

/// Runs `cmd`, killing it after `limit` (so the run stays bounded even if schemathesis hangs).
fn run_bounded(mut cmd: Command, limit: Duration) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("out.log");
    let f = std::fs::File::create(&log).unwrap();
    let mut child = cmd
        .stdout(Stdio::from(f.try_clone().unwrap()))
        .stderr(Stdio::from(f))
        .spawn()
        .expect("running schemathesis (is the test venv set up? scripts/test.sh)");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    match status {
        Some(s) => (s.success(), out),
        None => (false, format!("killed after {limit:?}\n{out}")),
    }
}

/// One schemathesis run over the operations `include` matches, with `token`.
fn schemathesis(srv: &TestServer, doc: &Path, token: &str, include: &str, exclude: &str) {
    // Its failure cache (`.schemathesis/`) goes to a temp dir, not into the source tree.
    let cwd = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(python());
    cmd.current_dir(cwd.path())
        .args(["-m", "schemathesis.cli", "run"])
        .arg(doc)
        .args(["--url", &srv.base_url])
        .args(["-H", &format!("Authorization: {token}")])
        // 5xx and answers that break the document; the other checks (status codes not listed,
        // negative data accepted, …) judge Azure's own conventions, not sandpool's.
        .args(["--checks", "not_a_server_error,response_schema_conformance"])
        .args(["--phases", "examples,fuzzing"])
        // One worker: hypothesis's lambda reprs call ast.parse, which CPython 3.11 cannot run
        // from two threads at once ("AST constructor recursion depth mismatch").
        .args(["--max-examples", "8", "--seed", "14", "--workers", "1"])
        .args(["--max-time", "35", "--request-timeout", "30"])
        .args(["--generation-database", "none", "--no-color"])
        .args(["--include-path-regex", include])
        .env("SCHEMATHESIS_HOOKS", "")
        .env("PYTHONWARNINGS", "ignore");
    if !exclude.is_empty() {
        cmd.args(["--exclude-path-regex", exclude]);
    }
    let (ok, out) = run_bounded(cmd, Duration::from_secs(60));
    assert!(ok, "schemathesis ({include}) found problems:\n{out}");
    // Shown with --nocapture: what was run and reached.
    println!("{out}");
}

/// `rg1/name1` in the subscription of the document's examples (routes.rs `path_parameter`).
async fn create_example_pool(srv: &TestServer) {
    let base = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg1";
    let v = "api-version=2025-02-02-preview";
    let c = srv.client();
    let put = |path: String, body: serde_json::Value| {
        let c = c.clone();
        async move {
            let r = c.put(srv.url(&path)).json(&body).send().await.unwrap();
            assert!(r.status().is_success(), "{path}: {}", r.status());
        }
    };
    put(
        format!("{base}?{v}"),
        serde_json::json!({"location": "local"}),
    )
    .await;
    put(
        format!("{base}/providers/Microsoft.App/sessionPools/name1?{v}"),
        serde_json::json!({"location": "local", "properties": {
            "scaleConfiguration": {"maxConcurrentSessions": 2, "readySessionInstances": 0}}}),
    )
    .await;
}

#[test]
fn schemathesis_finds_no_5xx_and_no_schema_violation() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let srv = rt.block_on(TestServer::start_with(TestStore::Sqlite, |c| {
        // No egress: nothing a fuzzed pool or cluster runs may leave the host.
        c.sandbox.egress = None;
    }));
    let dir = tempfile::tempdir().unwrap();
    let doc = rt.block_on(fetch_document(&srv, dir.path()));
    // The management plane with a management token; the session data plane (the pool
    // management endpoint) with a session token, as each audience is issued. Executing commands
    // is fuzzed too: it runs in isolated sandboxes without egress, bounded by the run's limits.
    let data_plane = "^/subscriptions/[^/]+/resourceGroups/[^/]+/sessionPools/";
    schemathesis(&srv, &doc, &srv.admin_header(), ".*", data_plane);
    // The pool the document's examples name, so the examples phase reaches real sessions.
    rt.block_on(create_example_pool(&srv));
    schemathesis(&srv, &doc, &srv.sessions_header(), data_plane, "");
}
