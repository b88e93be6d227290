//! Secrets and keys never appear in logs, error answers or Debug output. Runs the whole flow
//! with every log level captured, then searches the capture for each secret.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use reqwest::Method;
use sandpool_auth::{load_local_admin, SESSION_EXECUTOR};
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn secrets_stay_out_of_logs_answers_and_debug() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    // This test binary has only this test, so a global subscriber sees the server task too.
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let srv = common::start().await;
    let id = srv.store.create_identity();
    let pool = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.App/sessionPools/p";
    srv.store.assign(&id.principal_id, &SESSION_EXECUTOR, pool);
    let token = srv.token_for(&id, "https://dynamicsessions.io").await;
    let wrong_secret = "sps~wrong-secret-attempt-123";
    let (status, body) = srv
        .token_request(&[
            ("grant_type", "client_credentials"),
            ("client_id", &id.client_id),
            ("client_secret", wrong_secret),
            ("resource", "https://dynamicsessions.io"),
        ])
        .await;
    assert_eq!(status, 401);
    let mut answers = vec![body.to_string()];
    for (path, header) in [
        (
            "/subscriptions/s/resourceGroups/rg/sessionPools/p/executions",
            Some(format!("Bearer {token}")),
        ),
        (
            "/subscriptions/s/resourceGroups/rg/sessionPools/other/executions",
            Some(format!("Bearer {token}")),
        ),
        (
            "/subscriptions/s/resourceGroups/rg/sessionPools/p/executions",
            Some(format!("Bearer {token}x")),
        ),
        (
            "/subscriptions/s/resourceGroups/rg",
            Some(format!("Bearer {token}")),
        ),
    ] {
        let (_, headers, body) =
            common::call(&srv.base, Method::POST, path, header.as_deref()).await;
        answers.push(body);
        answers.extend(
            headers
                .values()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        );
    }
    let admin = load_local_admin(srv.data_dir.path()).unwrap();
    let admin_token = sandpool_auth::fetch_token(&admin, None, "https://management.azure.com/")
        .await
        .unwrap();
    srv.auth.rotate_keys().unwrap();

    let debug_output = format!("{admin:?} {admin_token:?} {:?} {id:?}", srv.auth);
    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("issued access token"),
        "the capture works: {logs}"
    );

    let mut secrets = vec![
        id.secret.expose().to_string(),
        wrong_secret.to_string(),
        admin.client_secret.expose().to_string(),
        token.clone(),
        admin_token.access_token.expose().to_string(),
    ];
    // Private key material as stored on disk.
    for entry in std::fs::read_dir(srv.data_dir.path().join("keys")).unwrap() {
        let file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(entry.unwrap().path()).unwrap()).unwrap();
        secrets.push(file["pkcs8"].as_str().unwrap().to_string());
    }
    for secret in &secrets {
        // Also catch a partial leak (e.g. a token's signature part).
        let probe = &secret[secret.len().saturating_sub(24)..];
        assert!(!logs.contains(probe), "a secret reached the logs");
        assert!(
            !debug_output.contains(probe),
            "a secret reached Debug output: {debug_output}"
        );
        for answer in &answers {
            assert!(
                !answer.contains(probe),
                "a secret reached an answer: {answer}"
            );
        }
    }
}
