//! A real sandpool server for tests (this crate's and later crates'): ephemeral loopback port,
//! fresh temp data dir, and for PostgreSQL a fresh database on the server named by
//! `SANDPOOL_TEST_DATABASE_URL` (a superuser URL). The server runs on its own runtime in its own
//! thread, so tests may block (e.g. run the CLI binary) while it answers.

mod host;

pub use host::{cgroup_children, clean_host, host_leftovers, test_egress_config, HostGuard};

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
    /// The running server's auth engine (mints the tokens of [`TestServer::token`]).
    auth: Option<crate::auth::ServerAuth>,
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
            sandbox: test_sandbox_settings(),
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
            auth: None,
        };
        server.launch().await;
        server
    }

    pub fn store(&self) -> TestStore {
        self.store
    }

    async fn launch(&mut self) {
        let mut config = self.config.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<
            Result<(SocketAddr, String, crate::auth::ServerAuth, u32), String>,
        >();
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
                // A killed server's runtime is shut down in the background, so its listener
                // may outlive the kill by a moment: a restart on the same port waits for it.
                // Likewise its hold on the data dir.
                let mut attempts = 0;
                let server = loop {
                    match Server::bind(&config).await {
                        Ok(s) => break s,
                        Err(e)
                            if attempts < 100
                                && e.chain().any(|c| {
                                    c.downcast_ref::<std::io::Error>().map(|io| io.kind())
                                        == Some(std::io::ErrorKind::AddrInUse)
                                        || matches!(
                                            c.downcast_ref::<crate::instance::InstanceError>(),
                                            Some(
                                                crate::instance::InstanceError::DataDirInUse { .. }
                                            )
                                        )
                                }) =>
                        {
                            attempts += 1;
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                        // Test servers of another process took this uid band: take the next.
                        Err(e)
                            if attempts < 100
                                && e.chain().any(|c| {
                                    matches!(
                                        c.downcast_ref::<crate::instance::InstanceError>(),
                                        Some(crate::instance::InstanceError::Conflict(m))
                                            if m.contains("--uid-base")
                                                && !m.contains("--cgroup-parent")
                                    )
                                }) =>
                        {
                            attempts += 1;
                            config.sandbox.uid_base = next_band(config.sandbox.uid_base);
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("{e:#}")));
                            return;
                        }
                    }
                };
                let _ = ready_tx.send(Ok((
                    server.local_addr(),
                    server.public_url().to_owned(),
                    server.state().auth.clone(),
                    config.sandbox.uid_base,
                )));
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
        let (addr, public_url, auth, uid_base) = match ready_rx.await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => panic!("test server failed to start: {e}"),
            Err(_) => panic!("test server thread died before it was ready"),
        };
        // Later restarts reuse the port, so URLs handed out before stay valid.
        self.config.listen = addr;
        self.config.sandbox.uid_base = uid_base;
        self.base_url = public_url;
        self.auth = Some(auth);
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

    // --- Tokens (authwire helper): every request to a test server carries one.

    /// The running server's auth engine (to mint tokens for other principals, expired ones…).
    pub fn auth(&self) -> &crate::auth::ServerAuth {
        self.auth
            .as_ref()
            .expect("the test server is not running (no auth engine)")
    }

    /// A token of the local admin (Owner at `/`) for `audience`: the management API
    /// (`https://management.azure.com/`) or the session API (`https://dynamicsessions.io`).
    pub async fn token(&self, audience: &str) -> String {
        admin_token(self.auth(), self.data_dir.path(), audience)
    }

    /// `Bearer <admin management token>`, the value of an `Authorization` header.
    pub fn admin_header(&self) -> String {
        format!(
            "Bearer {}",
            admin_token(
                self.auth(),
                self.data_dir.path(),
                sandpool_auth::MANAGEMENT_AUDIENCE
            )
        )
    }

    /// `Bearer <admin session-API token>` (audience `https://dynamicsessions.io`).
    pub fn sessions_header(&self) -> String {
        format!(
            "Bearer {}",
            admin_token(
                self.auth(),
                self.data_dir.path(),
                sandpool_auth::DYNAMIC_SESSIONS_AUDIENCE
            )
        )
    }

    /// A reqwest client whose every request carries the admin's management token.
    pub fn client(&self) -> reqwest::Client {
        bearer_client(&self.admin_header())
    }

    /// A reqwest client whose every request carries the admin's session-API token.
    pub fn sessions_client(&self) -> reqwest::Client {
        bearer_client(&self.sessions_header())
    }
    // --- end tokens.
}

/// A reqwest client sending `Authorization: {header}` on every request.
pub fn bearer_client(header: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let mut value =
        reqwest::header::HeaderValue::from_str(header).expect("a bearer header is ASCII");
    value.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("building a reqwest client")
}

/// Mints a token of the local admin of `data_dir` (its `admin.json`) with `auth`'s keys.
/// `audience` is a resource or scope as the token endpoint takes it.
pub fn admin_token(
    auth: &crate::auth::ServerAuth,
    data_dir: &std::path::Path,
    audience: &str,
) -> String {
    let cred = sandpool_auth::load_local_admin(data_dir).expect("reading the admin credential");
    let (_, aud) = sandpool_auth::Audience::from_resource(audience)
        .unwrap_or_else(|| panic!("'{audience}' is not an audience this server issues"));
    let subject = sandpool_auth::TokenSubject {
        principal_id: cred.principal_id,
        client_id: cred.client_id,
    };
    auth.issue_token(&subject, aud)
        .expect("minting a test token")
        .access_token
        .expose()
        .to_owned()
}

/// Every row the server keeps about resources and their use (resources, secrets, operations,
/// sessions, executions, command results), one string per row in a stable order: tests compare
/// two snapshots to prove a refused request changed nothing.
pub async fn store_snapshot(database_url: &str) -> Vec<String> {
    use sqlx::Row;
    let store = crate::store::Store::open(database_url)
        .await
        .expect("opening the store for a snapshot");
    let mut rows = Vec::new();
    for (table, order) in [
        ("resources", "id_key"),
        ("secrets", "resource_key, name"),
        ("operations", "id"),
        ("sessions", "pool_key, identifier"),
        ("executions", "pool_key, identifier, id"),
        ("command_results", "id"),
    ] {
        // Every column as text, so one query shape fits every table and both databases.
        let sql = format!("SELECT * FROM {table} ORDER BY {order}");
        let found = sqlx::query(&sql)
            .fetch_all(store.pool())
            .await
            .unwrap_or_else(|e| panic!("reading {table}: {e}"));
        for row in found {
            let mut line = format!("{table}:");
            for i in 0..row.len() {
                let v: Option<String> = row
                    .try_get::<Option<String>, _>(i)
                    .or_else(|_| {
                        row.try_get::<Option<i64>, _>(i)
                            .map(|v| v.map(|n| n.to_string()))
                    })
                    .unwrap_or_else(|e| panic!("{table} column {i}: {e}"));
                line.push_str(&format!(" {v:?}"));
            }
            rows.push(line);
        }
    }
    store.close().await;
    rows
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.halt(Stop::Kill);
        let data_dir = self.data_dir.path().to_path_buf();
        let sandbox = self.config.sandbox.clone();
        let database = self.admin_url.take().zip(self.db_name.take());
        // Drop may run inside an async test: use a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                // Sessions outlive a server by design; a test's must not outlive the test.
                clean_host(&data_dir, &sandbox).await;
                if let Some((admin, name)) = database {
                    drop_database(&admin, &name).await;
                }
            });
        })
        .join();
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

/// 150 bands of 256 sandboxes x 65,536 uids between 1.6e9 and u32::MAX: a test server's uid
/// range.
const BANDS: u32 = 150;
const BAND_SLOTS: u32 = 256;
const FIRST_BAND: u32 = 1_600_000_000;

/// The uid base of the band after `base`'s (the first after the last).
fn next_band(base: u32) -> u32 {
    let band = (base.saturating_sub(FIRST_BAND) / (BAND_SLOTS * 65_536) + 1) % BANDS;
    FIRST_BAND + band * BAND_SLOTS * 65_536
}

/// Sandbox settings of a test server: its own cgroup parent and host uid band (so servers
/// running at once in one test binary never share either), no egress unless a test sets it, and
/// the init binary found beside the test executable (`sandpool-server-test-init` of this crate,
/// or the `sandpool` CLI). Tests of other crates may set `init_program` themselves.
pub fn test_sandbox_settings() -> crate::sandboxes::SandboxSettings {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT_BAND: AtomicU32 = AtomicU32::new(0);
    let band = (NEXT_BAND.fetch_add(1, Ordering::Relaxed) + std::process::id()) % BANDS;
    let mut settings = crate::sandboxes::SandboxSettings {
        cgroup_parent: format!(
            "sandpool-test-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ),
        uid_base: FIRST_BAND + band * BAND_SLOTS * 65_536,
        uid_slots: BAND_SLOTS,
        egress: None,
        ..Default::default()
    };
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.to_path_buf()));
    // Test executables live in target/<profile>/deps, binaries one level up.
    let candidates = exe_dir
        .iter()
        .flat_map(|d| [d.clone(), d.join("..")])
        .flat_map(|d| {
            [
                (d.join("sandpool-server-test-init"), Vec::new()),
                (d.join("sandpool"), vec!["__sandbox-init".into()]),
            ]
        });
    for (path, args) in candidates {
        if path.is_file() {
            settings.init_program = Some(path);
            settings.init_args = args;
            break;
        }
    }
    settings
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
