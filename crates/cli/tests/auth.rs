//! The CLI against a server with auth on: no configuration beyond the shared data dir for the
//! admin; `sandpool token`, identity secrets and role assignments give another principal
//! exactly the access it was assigned; `SANDPOOL_TOKEN` is used as-is.

use std::path::Path;
use std::process::{Command, Output};

use sandpool_server::testing::{TestServer, TestStore};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_sandpool");
const SUB: &str = "00000000-0000-0000-0000-000000000000";

fn run(server: &TestServer, data_dir: &Path, token: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    c.arg("--endpoint")
        .arg(&server.base_url)
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("SANDPOOL_ACCESS_TOKEN")
        .env_remove("SANDPOOL_TOKEN")
        .env_remove("SANDPOOL_CLIENT_SECRET")
        .env_remove("SANDPOOL_SUBSCRIPTION");
    if let Some(t) = token {
        c.env("SANDPOOL_TOKEN", t);
    }
    c.output().expect("running the sandpool binary")
}

fn ok_json(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("JSON output")
}

fn text(o: &Output) -> String {
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_with_auth_on() {
    let server = TestServer::start(TestStore::Sqlite).await;
    let dir = server.data_dir.path();
    let sp = |args: &[&str]| run(&server, dir, None, args);

    // The admin, with no configuration: management commands and `token`.
    let t = ok_json(&sp(&["token"]));
    assert_eq!(t["tokenType"], "Bearer");
    assert!(t["expires_on"].as_u64().is_some(), "{t}");
    let admin_token = text(&sp(&["token", "--query", "accessToken", "-o", "tsv"]));
    assert_eq!(admin_token.split('.').count(), 3, "{admin_token}");
    let status = reqwest::Client::new()
        .get(server.url(&format!("/subscriptions/{SUB}/resourceGroups/default")))
        .bearer_auth(&admin_token)
        .send()
        .await
        .expect("request")
        .status();
    assert_eq!(status, 200);

    // An identity, its secret shown once, a role on the default pool only.
    let created = ok_json(&sp(&["identity", "create", "-g", "default", "-n", "app"]));
    let secret = created["properties"]["clientSecret"]
        .as_str()
        .expect("clientSecret on create")
        .to_owned();
    let principal = created["properties"]["principalId"]
        .as_str()
        .expect("principalId")
        .to_owned();
    let shown = ok_json(&sp(&["identity", "show", "-g", "default", "-n", "app"]));
    assert!(shown["properties"].get("clientSecret").is_none(), "{shown}");
    let pool = format!(
        "/subscriptions/{SUB}/resourceGroups/default/providers/Microsoft.App/sessionPools/default"
    );
    let assignment = ok_json(&sp(&[
        "role",
        "assignment",
        "create",
        "--assignee",
        &principal,
        "--role",
        "Azure ContainerApps Session Executor",
        "--scope",
        &pool,
    ]));
    let assignment_id = assignment["id"].as_str().expect("id").to_owned();
    let listed = ok_json(&sp(&["role", "assignment", "list", "--scope", &pool]));
    assert!(listed.to_string().contains(&assignment_id), "{listed}");

    // The identity's management token (via `token --identity`) may not manage anything.
    let identity_token = |secret: &str, resource: &str| {
        sp(&[
            "token",
            "--identity",
            "app",
            "-g",
            "default",
            "--client-secret",
            secret,
            "--resource",
            resource,
            "--query",
            "accessToken",
            "-o",
            "tsv",
        ])
    };
    let mgmt = text(&identity_token(&secret, "https://management.azure.com/"));
    let o = run(&server, dir, Some(&mgmt), &["group", "list"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("AuthorizationFailed"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Its session token passes auth on its pool (answer depends on the session API, not 401/403).
    let sessions = text(&identity_token(&secret, "https://dynamicsessions.io"));
    let r = reqwest::Client::new()
        .get(server.url(&format!(
            "/subscriptions/{SUB}/resourceGroups/default/sessionPools/default/listSessions"
        )))
        .bearer_auth(&sessions)
        .send()
        .await
        .expect("request");
    assert!(r.status() != 401 && r.status() != 403, "{}", r.status());

    // A reset replaces the secret.
    let reset = ok_json(&sp(&[
        "identity",
        "credential",
        "reset",
        "-g",
        "default",
        "-n",
        "app",
    ]));
    let new_secret = reset["clientSecret"].as_str().expect("new secret");
    assert_ne!(new_secret, secret);
    let o = identity_token(&secret, "https://management.azure.com/");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Invalid client credentials"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    text(&identity_token(new_secret, "https://management.azure.com/"));

    ok_json(&sp(&["role", "assignment", "list", "--scope", &pool]));
    let o = sp(&["role", "assignment", "delete", "--ids", &assignment_id]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Without the data dir's credential and without a token: a clear 401.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let o = run(&server, elsewhere.path(), None, &["group", "list"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("InvalidAuthenticationToken"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // SANDPOOL_TOKEN is used as-is (the admin's, from elsewhere).
    let o = run(
        &server,
        elsewhere.path(),
        Some(&admin_token),
        &["group", "list"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
