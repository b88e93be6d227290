//! The official Azure SDK (`azure-mgmt-appcontainers`, PyPI) against a TLS server: create, get,
//! list, update and delete a session pool. The client signs in as a user's code does, with
//! `azure-identity`'s `ClientSecretCredential` (MSAL) and the admin credential of the server's
//! data dir, the server being the authority; one run hands the SDK a token minted here instead.
//! Needs `python3` (`$PYTHON`) with `azure-mgmt-appcontainers` and `azure-identity` installed;
//! fails (never skips) when they are missing.

mod common;

use common::*;
use sandpool_server::testing::{TestServer, TestStore};
use sandpool_server::TlsMode;

/// How the SDK client gets its token.
enum Credential {
    /// `ClientSecretCredential` over the server's token endpoint, from `admin.json`.
    SignIn,
    /// A token minted by the test with the server's keys (`SANDPOOL_TOKEN`).
    Minted,
}

fn run_sdk(store: TestStore, credential: Credential) {
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
    let mut python =
        std::process::Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()));
    match credential {
        Credential::SignIn => python.env(
            "SANDPOOL_ADMIN_FILE",
            api.srv.data_dir.path().join(sandpool_auth::ADMIN_FILE),
        ),
        Credential::Minted => python.env(
            "SANDPOOL_TOKEN",
            rt.block_on(api.srv.token(sandpool_auth::MANAGEMENT_AUDIENCE)),
        ),
    };
    let out = python
        .arg(script)
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
    run_sdk(TestStore::Sqlite, Credential::SignIn);
}

#[test]
fn azure_sdk_session_pools_postgres() {
    run_sdk(TestStore::Postgres, Credential::SignIn);
}

#[test]
fn azure_sdk_session_pools_minted_token() {
    run_sdk(TestStore::Sqlite, Credential::Minted);
}
