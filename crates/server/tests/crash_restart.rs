//! Crash-restart: a real server process is SIGKILLed after writing resources, then restarted on
//! the same data dir (SQLite) or database (PostgreSQL); everything must still be there.
//!
//! `harness = false`: this binary is both the test and, when `SANDPOOL_CRASH_CHILD` is set, the
//! server process it kills (so the test needs no other binary).

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sandpool_server::testing::{with_database, DATABASE_URL_ENV};
use sandpool_server::{ServeConfig, Server};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::{Child, Command};
use std::time::Duration;

const CHILD_ENV: &str = "SANDPOOL_CRASH_CHILD";
const SUB: &str = "12345678-1234-1234-1234-123456789abc";
const V: &str = "api-version=2025-02-02-preview";

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        return child(&spec);
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut failed = 0;
    for store in ["sqlite", "postgres"] {
        print!("test crash_restart::{store} ... ");
        match rt.block_on(run(store)) {
            Ok(()) => println!("ok"),
            Err(e) => {
                println!("FAILED\n  {e:#}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        std::process::exit(1);
    }
}

/// The server process: `data_dir|database_url|port`.
fn child(spec: &str) {
    let mut parts = spec.splitn(3, '|');
    let (Some(dir), Some(db), Some(port)) = (parts.next(), parts.next(), parts.next()) else {
        eprintln!("bad {CHILD_ENV}");
        std::process::exit(2);
    };
    let config = ServeConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], port.parse().unwrap_or(0))),
        data_dir: dir.into(),
        database_url: Some(db.to_owned()),
        create_defaults: false,
        ..ServeConfig::default()
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let server = Server::bind(&config).await.expect("bind");
        server.run(std::future::pending()).await.expect("serve");
    });
}

/// Kills the child on every exit path.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(spec: &str) -> anyhow::Result<ChildGuard> {
    Ok(ChildGuard(
        Command::new(std::env::current_exe()?)
            .env(CHILD_ENV, spec)
            .spawn()?,
    ))
}

async fn wait_ready(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    for _ in 0..300 {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("server at {base} never became ready")
}

async fn put(http: &reqwest::Client, url: String, body: Value) -> anyhow::Result<u16> {
    Ok(http.put(url).json(&body).send().await?.status().as_u16())
}

struct DbGuard(Option<(String, String)>);

impl Drop for DbGuard {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.0.take() {
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("rt");
                rt.block_on(async {
                    use sqlx::Connection;
                    if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                        let _ =
                            sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut c)
                                .await;
                    }
                });
            })
            .join();
        }
    }
}

async fn run(store: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let dir = tempfile::tempdir()?;
    let mut db_guard = DbGuard(None);
    let db = if store == "sqlite" {
        sandpool_server::store::Store::sqlite_url(dir.path())
    } else {
        let admin = std::env::var(DATABASE_URL_ENV).map_err(|_| {
            anyhow::anyhow!("{DATABASE_URL_ENV} is not set; PostgreSQL tests need it")
        })?;
        let name = format!("sandpool_crash_{}", uuid::Uuid::new_v4().simple());
        let mut c = sqlx::PgConnection::connect(&admin).await?;
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut c)
            .await?;
        db_guard.0 = Some((admin.clone(), name.clone()));
        with_database(&admin, &name)
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let spec = format!("{}|{db}|{port}", dir.path().display());
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    let mut child = spawn(&spec)?;
    wait_ready(&http, &base).await?;
    // The token the CLI would get: the local admin's credential at the token endpoint. It stays
    // valid across the crash (the signing key is in the data dir).
    let cred = sandpool_auth::load_local_admin(dir.path())?;
    let token =
        sandpool_auth::fetch_token(&cred, Some(&base), sandpool_auth::MANAGEMENT_AUDIENCE).await?;
    let http =
        sandpool_server::testing::bearer_client(&format!("Bearer {}", token.access_token.expose()));
    let rg = format!("{base}/subscriptions/{SUB}/resourceGroups/crash?{V}");
    anyhow::ensure!(
        put(&http, rg.clone(), json!({"location": "w"})).await? == 201,
        "rg not created"
    );
    let mut pools = Vec::new();
    for i in 0..5 {
        let url = format!("{base}/subscriptions/{SUB}/resourceGroups/crash/providers/Microsoft.App/sessionPools/p{i}?{V}");
        anyhow::ensure!(
            put(&http, url.clone(), json!({"location": "w"})).await? == 201,
            "pool {i} not created"
        );
        pools.push(url);
    }
    let cluster = format!("{base}/subscriptions/{SUB}/resourceGroups/crash/providers/Microsoft.ContainerService/managedClusters/c?{V}");
    anyhow::ensure!(
        put(
            &http,
            cluster.clone(),
            json!({"location": "w", "properties": {"kubeconfig": "k"}})
        )
        .await?
            == 201
    );

    kill(Pid::from_raw(child.0.id() as i32), Signal::SIGKILL)?;
    let status = child.0.wait()?;
    anyhow::ensure!(
        status.code().is_none(),
        "child was not killed by a signal: {status}"
    );
    drop(child);

    let _child = spawn(&spec)?;
    wait_ready(&http, &base).await?;
    anyhow::ensure!(
        http.get(&rg).send().await?.status() == 200,
        "rg lost after SIGKILL"
    );
    for p in &pools {
        anyhow::ensure!(
            http.get(p).send().await?.status() == 200,
            "{p} lost after SIGKILL"
        );
    }
    let c: Value = http.get(&cluster).send().await?.json().await?;
    anyhow::ensure!(
        c["properties"]["hasKubeconfig"] == true,
        "kubeconfig secret lost: {c}"
    );
    Ok(())
}
