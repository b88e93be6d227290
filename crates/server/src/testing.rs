//! A real sandpool server for tests (this crate's and later crates'): ephemeral loopback port,
//! fresh temp data dir, and for PostgreSQL a fresh database on the server named by
//! `SANDPOOL_TEST_DATABASE_URL` (a superuser URL). The server runs on its own runtime in its own
//! thread, so tests may block (e.g. run the CLI binary) while it answers.

use crate::{ServeConfig, Server};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread::JoinHandle;

/// Which database a [`TestServer`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestStore {
    Sqlite,
    Postgres,
}

/// Env var naming the PostgreSQL server tests create their databases on.
pub const DATABASE_URL_ENV: &str = "SANDPOOL_TEST_DATABASE_URL";

pub struct TestServer {
    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub base_url: String,
    pub data_dir: tempfile::TempDir,
    pub config: ServeConfig,
    /// The database URL the server uses (`sqlite://…` or `postgres://…/sandpool_test_…`).
    pub database_url: String,
    store: TestStore,
    admin_url: Option<String>,
    db_name: Option<String>,
    running: Option<Running>,
}

struct Running {
    stop: mpsc::Sender<Stop>,
    thread: JoinHandle<()>,
}

enum Stop {
    Kill,
    Graceful,
}

impl TestServer {
    /// Starts a server with default settings (defaults group and pool created).
    pub async fn start(store: TestStore) -> TestServer {
        Self::start_with(store, |_| {}).await
    }

    /// Starts a server after `configure` adjusted its config (listen and data dir are preset).
    pub async fn start_with(
        store: TestStore,
        configure: impl FnOnce(&mut ServeConfig),
    ) -> TestServer {
        let data_dir = tempfile::Builder::new()
            .prefix("sandpool-test-")
            .tempdir()
            .expect("creating a temp data dir");
        let (database_url, admin_url, db_name) = match store {
            TestStore::Sqlite => (crate::store::Store::sqlite_url(data_dir.path()), None, None),
            TestStore::Postgres => {
                let admin = std::env::var(DATABASE_URL_ENV).unwrap_or_else(|_| {
                    panic!(
                        "{DATABASE_URL_ENV} is not set: PostgreSQL tests need a superuser URL such as \
                         postgres://postgres@127.0.0.1:5432/postgres (scripts/test.sh starts one)"
                    )
                });
                let name = format!("sandpool_test_{}", uuid::Uuid::new_v4().simple());
                create_database(&admin, &name).await;
                (with_database(&admin, &name), Some(admin), Some(name))
            }
        };
        let mut config = ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.path().to_path_buf(),
            database_url: Some(database_url.clone()),
            ..ServeConfig::default()
        };
        configure(&mut config);
        let mut server = TestServer {
            base_url: String::new(),
            data_dir,
            config,
            database_url,
            store,
            admin_url,
            db_name,
            running: None,
        };
        server.launch().await;
        server
    }

    pub fn store(&self) -> TestStore {
        self.store
    }

    async fn launch(&mut self) {
        let config = self.config.clone();
        let (ready_tx, ready_rx) =
            tokio::sync::oneshot::channel::<Result<(SocketAddr, String), String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<Stop>();
        let thread = std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let (graceful_tx, graceful_rx) = tokio::sync::oneshot::channel::<()>();
            let served = rt.spawn(async move {
                let server = match Server::bind(&config).await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e:#}")));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok((server.local_addr(), server.public_url().to_owned())));
                if let Err(e) = server
                    .run(async {
                        let _ = graceful_rx.await;
                    })
                    .await
                {
                    eprintln!("test server failed: {e:#}");
                }
            });
            match stop_rx.recv() {
                Ok(Stop::Graceful) => {
                    let _ = graceful_tx.send(());
                    let _ = rt.block_on(served);
                }
                // A crash: every task is dropped where it stands, no graceful close of anything.
                Ok(Stop::Kill) | Err(_) => {}
            }
            rt.shutdown_background();
        });
        let (addr, public_url) = match ready_rx.await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => panic!("test server failed to start: {e}"),
            Err(_) => panic!("test server thread died before it was ready"),
        };
        // Later restarts reuse the port, so URLs handed out before stay valid.
        self.config.listen = addr;
        self.base_url = public_url;
        self.running = Some(Running {
            stop: stop_tx,
            thread,
        });
    }

    fn halt(&mut self, how: Stop) {
        if let Some(r) = self.running.take() {
            let _ = r.stop.send(how);
            let _ = r.thread.join();
        }
    }

    /// Simulates a crash: the server's runtime is torn down without graceful shutdown (no drain,
    /// no pool close). For SIGKILL itself see this crate's `crash_restart` test, which kills a
    /// real process.
    pub fn kill(&mut self) {
        self.halt(Stop::Kill);
    }

    /// Stops gracefully (drains requests, closes the store).
    pub fn stop(&mut self) {
        self.halt(Stop::Graceful);
    }

    /// Starts again on the same port, data dir and database (after `kill` or `stop`; a running
    /// server is stopped gracefully first).
    pub async fn restart(&mut self) {
        self.halt(Stop::Graceful);
        self.launch().await;
    }

    /// `{base_url}{path}` with `api-version` appended.
    pub fn url(&self, path_and_query: &str) -> String {
        let sep = if path_and_query.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "{}{path_and_query}{sep}api-version={}",
            self.base_url,
            sandpool_api::API_VERSION
        )
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.halt(Stop::Kill);
        if let (Some(admin), Some(name)) = (self.admin_url.take(), self.db_name.take()) {
            // Drop may run inside an async test: use a thread with its own runtime.
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(drop_database(&admin, &name));
                }
            })
            .join();
        }
    }
}

/// `admin` with its database name replaced by `db`.
pub fn with_database(admin: &str, db: &str) -> String {
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (admin, None),
    };
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[after_scheme..].find('/') {
        Some(i) => &base[..after_scheme + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

async fn admin_exec(admin: &str, sql: &str) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin).await?;
    sqlx::raw_sql(sql).execute(&mut conn).await?;
    conn.close().await
}

async fn create_database(admin: &str, name: &str) {
    if let Err(e) = admin_exec(admin, &format!("CREATE DATABASE {name}")).await {
        panic!("creating test database {name} on {DATABASE_URL_ENV}: {e}");
    }
}

async fn drop_database(admin: &str, name: &str) {
    let _ = admin_exec(
        admin,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    )
    .await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_url_rewrite() {
        assert_eq!(
            super::with_database("postgres://u@h:1/postgres", "x"),
            "postgres://u@h:1/x"
        );
        assert_eq!(
            super::with_database("postgres://u@h:1", "x"),
            "postgres://u@h:1/x"
        );
        assert_eq!(
            super::with_database("postgres://u@h/postgres?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}
