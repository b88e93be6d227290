//! The official Azure SDK (`azure-mgmt-appcontainers`, PyPI) against a TLS server: create, get,
//! list, update and delete a session pool. Needs `python3` with `azure-mgmt-appcontainers` and
//! `azure-identity` installed; fails (never skips) when they are missing.

mod common;

use common::*;
use sandpool_server::testing::{TestServer, TestStore};
use sandpool_server::TlsMode;

fn run_sdk(store: TestStore) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let srv = rt.block_on(TestServer::start_with(store, |c| {
        c.tls = TlsMode::SelfSigned;
        c.create_defaults = false;
    }));
    assert!(srv.base_url.starts_with("https://"), "{}", srv.base_url);
    let api = Api::from(srv);
    rt.block_on(api.group("sdk-rg"));
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/azure_sdk/session_pools.py"
    );
    let token = rt.block_on(api.srv.token(sandpool_auth::MANAGEMENT_AUDIENCE));
    let out =
        std::process::Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
            .arg(script)
            .env("SANDPOOL_TOKEN", token)
            .env("SANDPOOL_ENDPOINT", &api.srv.base_url)
            .env("SANDPOOL_SUBSCRIPTION", SUB)
            .env("SANDPOOL_RESOURCE_GROUP", "sdk-rg")
            .env("SANDPOOL_VERIFY_TLS", "0")
            .env("PYTHONWARNINGS", "ignore")
            .output()
            .expect("running python3 (is it installed?)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK script failed:\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.contains("ok"), "{stdout}");
}

#[test]
fn azure_sdk_session_pools_sqlite() {
    run_sdk(TestStore::Sqlite);
}

#[test]
fn azure_sdk_session_pools_postgres() {
    run_sdk(TestStore::Postgres);
}
