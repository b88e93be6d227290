//! The real Azure CLI (`azure-cli` from PyPI, `$AZ`) against a TLS server, trusted through
//! `REQUESTS_CA_BUNDLE`: cloud registration, service-principal sign-in (the admin's and an
//! identity's), the seed tutorial's every `az` step, `az rest`, and `az aks command invoke` with
//! `--no-wait` and `command result`. The steps and their checks are in `azure_cli/tutorial.sh`.
//! Fails (never skips) when az is missing: `scripts/test.sh` installs it.

use sandpool_server::testing::{TestServer, TestStore};
use sandpool_server::TlsMode;

fn az() -> String {
    std::env::var("AZ").unwrap_or_else(|_| "az".into())
}

fn run_tutorial(store: TestStore) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let srv = rt.block_on(TestServer::start_with(store, |c| {
        c.tls = TlsMode::SelfSigned;
    }));
    assert!(srv.base_url.starts_with("https://"), "{}", srv.base_url);
    let admin: serde_json::Value = serde_json::from_slice(
        &std::fs::read(srv.data_dir.path().join(sandpool_auth::ADMIN_FILE)).unwrap(),
    )
    .unwrap();
    let field = |k: &str| admin[k].as_str().unwrap().to_owned();
    let work = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/azure_cli/tutorial.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .current_dir(work.path())
        .env("AZ", az())
        .env("SANDPOOL_ENDPOINT", &srv.base_url)
        .env(
            "REQUESTS_CA_BUNDLE",
            srv.data_dir.path().join(sandpool_server::SELF_SIGNED_CERT),
        )
        .env("AZURE_CONFIG_DIR", work.path().join("az-config"))
        .env("AZURE_CORE_COLLECT_TELEMETRY", "0")
        .env("CLIENT_ID", field("clientId"))
        .env("CLIENT_SECRET", field("clientSecret"))
        .env("TENANT_ID", field("tenantId"))
        .output()
        .expect("running bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "az tutorial failed (is az installed? AZ={}):\nstdout: {stdout}\nstderr: {stderr}",
        az()
    );
}

#[test]
fn azure_cli_tutorial_sqlite() {
    run_tutorial(TestStore::Sqlite);
}

#[test]
fn azure_cli_tutorial_postgres() {
    run_tutorial(TestStore::Postgres);
}
