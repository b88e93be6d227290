//! The sandpool service: the axum application (routes, conventions, auth slot), the store, the
//! management API, operations endpoints and metrics. Later issues add the pool manager,
//! executions, files and run command here.
//!
//! It owns HTTP and durable state; it must not reach into namespaces or cgroups itself (that is
//! `sandpool-sandbox`'s job), nor sign or check tokens (that is `sandpool-auth`'s).

pub mod arm;
pub mod auth;
mod cloud;
pub mod data_dir;
pub mod http;
pub mod instance;
pub mod limits;
pub mod metrics;
mod ops;
pub mod paths;
pub mod routes;
pub mod runcommand;
pub mod sandboxes;
pub mod sessions;
pub mod store;
pub mod store_commands;
mod store_sessions;
pub mod testing;
mod tls;
pub use tls::{SELF_SIGNED_CERT, SELF_SIGNED_KEY};

use anyhow::Context as _;
use axum::extract::DefaultBodyLimit;
use axum::Router;
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use store::Store;
use tower_http::catch_panic::CatchPanicLayer;

/// How `sandpool serve` terminates TLS.
#[derive(Debug, Clone, Default)]
pub enum TlsMode {
    /// Plain HTTP.
    #[default]
    None,
    /// PEM certificate chain and private key files.
    Files { cert: PathBuf, key: PathBuf },
    /// A self-signed certificate generated at start for the listen host (stored in the data dir).
    SelfSigned,
}

/// Everything `sandpool serve` needs; the CLI maps its flags onto this.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `None`: SQLite file in the data dir. Otherwise `sqlite://…` or `postgres://…`.
    pub database_url: Option<String>,
    /// Base of every absolute URL the API returns; `None`: derived from `listen` and TLS.
    pub public_url: Option<String>,
    pub tls: TlsMode,
    /// Create resource group `default` and Shell pool `default` on first start.
    pub create_defaults: bool,
    pub max_upload_size: u64,
    pub command_retention: std::time::Duration,
    /// Most Run Command commands running at once (the rest wait in the queue).
    pub command_concurrency: usize,
    /// Largest management request body (JSON); larger ones get 413 `PayloadTooLarge`.
    pub max_body_size: usize,
    /// How sandboxes are run (init binary, cgroup parent, uid ranges, egress).
    pub sandbox: sandboxes::SandboxSettings,
    /// Age at which the token signing key is replaced (tokens it signed stay valid until they
    /// expire); `None`: never.
    pub signing_key_max_age: Option<std::time::Duration>,
    /// What one session, pool and cluster may ask for; executions kept and run at once.
    pub limits: limits::Limits,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("/var/lib/sandpool"),
            database_url: None,
            public_url: None,
            tls: TlsMode::None,
            create_defaults: true,
            max_upload_size: 128 * 1024 * 1024,
            command_retention: std::time::Duration::from_secs(7 * 24 * 3600),
            command_concurrency: 4,
            max_body_size: 4 * 1024 * 1024,
            sandbox: sandboxes::SandboxSettings::default(),
            signing_key_max_age: Some(std::time::Duration::from_secs(30 * 24 * 3600)),
            limits: limits::Limits::default(),
        }
    }
}

/// The subscription the first-start defaults live in (the CLI's default subscription).
pub const DEFAULT_SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000000";

/// Who is making a request. The auth layer (crates/auth) inserts it as a request extension;
/// handlers read it as `Option<Extension<Principal>>` to fill `systemData`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub id: String,
    pub kind: PrincipalKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    User,
    Application,
    ManagedIdentity,
}

impl PrincipalKind {
    pub fn system_data_type(self) -> &'static str {
        match self {
            PrincipalKind::User => "User",
            PrincipalKind::Application => "Application",
            PrincipalKind::ManagedIdentity => "ManagedIdentity",
        }
    }
}

/// What every handler receives through axum's `State`.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    /// Without a trailing slash.
    pub public_url: Arc<str>,
    pub metrics: Arc<metrics::Metrics>,
    pub body_limit: usize,
    pub tenant_id: Arc<str>,
    pub openapi: Arc<str>,
    /// The sandbox runtime, or why this host cannot run sandboxes.
    pub sandboxes: sandboxes::Sandboxes,
    /// Run Command: the runner (set at startup when sandboxes are available) and the results.
    pub commands: runcommand::Commands,
    /// Tokens, identities' credentials and role checks (crates/auth).
    pub auth: auth::ServerAuth,
    /// The pool manager of session pools (set at startup when sandboxes are available).
    pub pools: sessions::Pools,
    /// Bounds checked when pools and clusters are written.
    pub limits: Arc<limits::Limits>,
}

pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Every route of the service with its documentation.
pub fn all_routes() -> routes::Routes {
    let r = routes::Routes::default();
    let r = ops::routes(r);
    let r = cloud::routes(r);
    let r = arm::resource_groups::routes(r);
    let r = arm::tracked::routes(r);
    let r = arm::deployments::routes(r);
    let r = arm::operations::routes(r);
    // The session data plane: every route below a pool's management endpoint takes a session
    // token with the Session Executor's data action (or the right to manage the pool) there.
    let r = r.with_rule(
        sandpool_auth::Rule::sessions(
            "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.App/sessionPools/{poolName}",
        ),
        sessions::routes,
    );
    let r = runcommand::routes(r);
    let r = auth::routes(r);
    arm::authorization::routes(r)
}

/// What the enforcement layer knows: the rule every served route declared in `routes`, and the
/// token endpoints of crates/auth (public). Tests generate their authorization matrix from it.
pub fn route_rules(routes: &routes::Routes, auth: &auth::ServerAuth) -> sandpool_auth::RouteRules {
    let mut rules = routes.rules();
    for (method, path) in auth.public_routes() {
        rules.declare(method, &path, Some(sandpool_auth::Rule::Public));
    }
    rules
}

/// The one place the authentication/authorisation layer goes (crates/auth): it runs after path
/// normalisation and the conventions middleware (so 401/403 carry the conventions too), before
/// any handler, and inserts a [`Principal`] extension.
fn auth_layer(
    router: Router<AppState>,
    auth: &auth::ServerAuth,
    rules: sandpool_auth::RouteRules,
) -> Router<AppState> {
    auth::layer(router, auth, rules)
}

/// Builds the state and the router (without path normalisation; see [`service`]), with the
/// default [`limits::Limits`].
pub async fn build_app(
    store: Store,
    public_url: &str,
    body_limit: usize,
    sandboxes: sandboxes::Sandboxes,
    auth: auth::ServerAuth,
) -> anyhow::Result<(AppState, Router)> {
    build_app_with_limits(
        store,
        public_url,
        body_limit,
        sandboxes,
        auth,
        limits::Limits::default(),
    )
    .await
}

/// [`build_app`] with the given limits.
pub async fn build_app_with_limits(
    store: Store,
    public_url: &str,
    body_limit: usize,
    sandboxes: sandboxes::Sandboxes,
    auth: auth::ServerAuth,
    limits: limits::Limits,
) -> anyhow::Result<(AppState, Router)> {
    let routes = all_routes();
    let openapi = routes
        .openapi()
        .to_json()
        .context("rendering the OpenAPI document")?;
    // The tenant is the one tokens carry (`tid`), kept with the signing keys.
    let tenant_id = auth.tenant_id().to_owned();
    let pools = sessions::Pools::default();
    let commands = runcommand::Commands::default();
    let state = AppState {
        store,
        public_url: public_url.trim_end_matches('/').into(),
        metrics: Arc::new(metrics::Metrics::new(pools.clone(), commands.clone())),
        body_limit,
        tenant_id: tenant_id.into(),
        openapi: openapi.into(),
        sandboxes,
        commands,
        pools,
        auth,
        limits: Arc::new(limits),
    };
    let rules = route_rules(&routes, &state.auth);
    let router = layered(routes.router, &state, rules).with_state(state.clone());
    Ok((state, router))
}

/// The fallback and the layers every route runs under, innermost first: auth, catch-panic (so a
/// panic still gets the conventions), conventions, body limit.
fn layered(
    router: Router<AppState>,
    state: &AppState,
    rules: sandpool_auth::RouteRules,
) -> Router<AppState> {
    let timeouts = state.limits.http;
    auth_layer(
        router.fallback(arm::authorization::fallback),
        &state.auth,
        rules,
    )
    .layer(CatchPanicLayer::custom(http::panic_response))
    // Inside the conventions, so the bare 408 gets the error body; around auth, so the
    // public token endpoint is bounded too.
    .layer(tower_http::timeout::TimeoutLayer::with_status_code(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        timeouts.request,
    ))
    .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        timeouts.body_idle,
    ))
    .layer(axum::middleware::from_fn_with_state(
        state.clone(),
        http::conventions,
    ))
    .layer(DefaultBodyLimit::max(state.body_limit))
}

/// The request rewrite applied before routing.
pub type Normalize<B> = fn(axum::http::Request<B>) -> axum::http::Request<B>;

/// The router behind case-insensitive path normalisation: what the listener serves.
pub fn service<B>(router: Router) -> tower::util::MapRequest<Router, Normalize<B>> {
    tower::util::MapRequest::new(router, http::normalize_request::<B> as fn(_) -> _)
}

/// Creates resource group `default` and Shell pool `default` once, on the first start.
async fn create_defaults(state: &AppState) -> anyhow::Result<()> {
    if state
        .store
        .setting_or_init("defaults_created", "pending")
        .await?
        != "pending"
    {
        return Ok(());
    }
    let (sub, rg) = (DEFAULT_SUBSCRIPTION, "default");
    arm::resource_groups::put_group(state, None, sub, rg, &json!({"location": "local"}))
        .await
        .map_err(|e| anyhow::anyhow!("creating resource group default: {}", e.0))?;
    let target = arm::Target::new(
        arm::Kind::SessionPool,
        (sub.into(), rg.into(), "default".into()),
    );
    let body = json!({"location": "local", "properties": {"poolManagementType": "Dynamic", "containerType": "Shell"}});
    arm::put_resource(state, None, &target, &body)
        .await
        .map_err(|e| anyhow::anyhow!("creating pool default: {}", e.0))?;
    state.store.set_setting("defaults_created", "done").await?;
    tracing::info!("created resource group 'default' and session pool 'default'");
    Ok(())
}

/// A bound, ready server; [`Server::run`] serves until the shutdown future resolves.
pub struct Server {
    listener: std::net::TcpListener,
    local_addr: SocketAddr,
    public_url: String,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    state: AppState,
    router: Router,
    /// Held until the server has stopped: its data dir and its host resources.
    instance: instance::Instance,
    header_read_timeout: Duration,
}

impl Server {
    /// Opens the store (migrating it), creates the defaults, binds the listener.
    pub async fn bind(config: &ServeConfig) -> anyhow::Result<Self> {
        raise_open_file_limit();
        let url = match &config.database_url {
            Some(u) => u.clone(),
            None => Store::sqlite_url(&config.data_dir),
        };
        // 0700 / 0600 whatever the umask; the default database file is made 0600 before
        // SQLite creates it (its -wal and -shm files take its mode).
        let default_db = config.data_dir.join("sandpool.db");
        let sqlite_file =
            (url == Store::sqlite_url(&config.data_dir)).then_some(default_db.as_path());
        data_dir::prepare(&config.data_dir, sqlite_file)?;
        // Before anything of the data dir or the host is touched: a second server on this data
        // dir, or one whose sandboxes would share host resources with another's, stops here.
        let (instance, unregistered) =
            match instance::claim(&config.data_dir, &config.sandbox, &config.sandbox.registry) {
                Ok(i) => (i, None),
                // No registry (e.g. /run is not writable): no sandboxes, so nothing to share.
                Err(instance::InstanceError::Io { context, source }) => (
                    instance::Instance::unregistered(&config.data_dir)?,
                    Some(format!(
                        "the instance registry is unusable ({context}: {source})"
                    )),
                ),
                Err(e) => return Err(e.into()),
            };
        let listener = std::net::TcpListener::bind(config.listen)
            .with_context(|| format!("binding {}", config.listen))?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let tls = match &config.tls {
            TlsMode::None => None,
            TlsMode::Files { cert, key } => Some(tls::from_files(cert, key).await?),
            TlsMode::SelfSigned => Some(tls::self_signed(&config.data_dir, local_addr).await?),
        };
        let public_url = match &config.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => {
                let host = if local_addr.ip().is_unspecified() {
                    SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), local_addr.port())
                } else {
                    local_addr
                };
                format!("{}://{host}", if tls.is_some() { "https" } else { "http" })
            }
        };
        let store = Store::open(&url).await?;
        let sandboxes = match unregistered {
            None => sandboxes::Sandboxes::start(&config.data_dir, &config.sandbox).await,
            Some(why) => sandboxes::Sandboxes::unavailable(why),
        };
        let auth = auth::open(&config.data_dir, &public_url, store.clone())?;
        if let Some(max_age) = config.signing_key_max_age {
            auth::maintain_keys(&auth, max_age)?;
        }
        if let Ok(runtime) = sandboxes.runtime() {
            runtime
                .set_cpu_ceiling(config.limits.host_cpu_ceiling_millicores)
                .context("applying --host-cpu-ceiling to the sandboxes' cgroup parent")?;
        }
        let (state, router) = build_app_with_limits(
            store,
            &public_url,
            config.max_body_size,
            sandboxes,
            auth,
            config.limits.clone(),
        )
        .await?;
        if config.create_defaults {
            create_defaults(&state).await?;
        }
        // --- Pool manager (sessions helper): registers every stored pool, then recovers the
        // sessions of the previous process (its sweep keeps their sandboxes).
        sessions::start(&state, config.max_upload_size).await?;
        // --- end pool manager.
        // --- Run Command runner (runcommand helper): after the pool manager's recover, whose
        // sweep destroys the sandboxes of commands a dead process left running.
        runcommand::start(&state, config).await?;
        // --- end Run Command runner.
        // Everything the setup created (database, keys, admin credential, TLS) is checked once
        // more before the first request.
        data_dir::secure(&config.data_dir)?;
        Ok(Self {
            listener,
            local_addr,
            public_url,
            tls,
            state,
            router,
            instance,
            header_read_timeout: config.limits.http.header_read,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests (up to 10 s).
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let handle = axum_server::Handle::new();
        let h = handle.clone();
        tokio::spawn(async move {
            shutdown.await;
            h.graceful_shutdown(Some(Duration::from_secs(10)));
        });
        let svc = axum::ServiceExt::into_make_service(service(self.router));
        tracing::info!(listen = %self.local_addr, public_url = %self.public_url, "sandpool serving");
        let header_read = self.header_read_timeout;
        // A client that sends its headers byte by byte is cut off (hyper needs a timer for it).
        let bound = |b: &mut hyper_util::server::conn::auto::Builder<_>| {
            b.http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_read);
        };
        match self.tls {
            Some(tls) => {
                let mut server = axum_server::from_tcp_rustls(self.listener, tls);
                bound(server.http_builder());
                server.handle(handle).serve(svc).await?
            }
            None => {
                let mut server = axum_server::from_tcp(self.listener);
                bound(server.http_builder());
                server.handle(handle).serve(svc).await?
            }
        }
        self.state.commands.shutdown().await;
        sessions::shutdown(&self.state).await;
        if let Ok(runtime) = self.state.sandboxes.runtime() {
            if let Err(e) = runtime.shutdown().await {
                tracing::warn!(error = %e, "releasing the ready network slots");
            }
        }
        self.state.store.close().await;
        drop(self.instance);
        tracing::info!("sandpool stopped");
        Ok(())
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}

/// Runs `sandpool serve` until SIGTERM or SIGINT.
/// Each live sandbox holds some of the server's descriptors (control socket, pidfd, a
/// session's streams), so a thousand sessions pass the usual soft limit of 1024: lift the soft
/// limit to the hard one. Failing leaves the limit as it was (and says so).
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(soft, hard, error = %e, "raising the open-file limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "reading the open-file limit"),
    }
}

pub async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    Server::bind(&config).await?.run(shutdown_signal()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_file_soft_limit_is_lifted_to_the_hard_one() {
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
        setrlimit(Resource::RLIMIT_NOFILE, 512.min(hard), hard).expect("lower soft limit");
        raise_open_file_limit();
        assert_eq!(
            getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit"),
            (hard, hard)
        );
    }

    /// A handler that panics answers 500 with the error body and the conventions' headers.
    #[tokio::test]
    async fn panics_become_error_bodies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&Store::sqlite_url(dir.path()))
            .await
            .expect("store");
        let auth = auth::open(dir.path(), "http://x", store.clone()).expect("auth");
        let (state, _) = build_app(store, "http://x", 1024, Default::default(), auth)
            .await
            .expect("app");
        let token =
            testing::admin_token(&state.auth, dir.path(), sandpool_auth::MANAGEMENT_AUDIENCE);
        async fn boom() -> &'static str {
            panic!("handler exploded")
        }
        let mut rules = sandpool_auth::RouteRules::default();
        rules.declare(
            axum::http::Method::GET,
            "/boom",
            Some(sandpool_auth::Rule::manage("boom/read", "/")),
        );
        let router = layered(
            Router::new().route("/boom", axum::routing::get(boom)),
            &state,
            rules,
        )
        .with_state(state);
        let req = axum::http::Request::get("/boom?api-version=2024-01-01")
            .header("authorization", format!("Bearer {token}"))
            .body(axum::body::Body::empty())
            .expect("req");
        let resp = tower::ServiceExt::oneshot(router, req)
            .await
            .expect("infallible");
        assert_eq!(resp.status(), 500);
        assert_eq!(resp.headers()["x-ms-error-code"], "InternalServerError");
        assert!(resp.headers().contains_key("x-ms-request-id"));
        let body = axum::body::to_bytes(resp.into_body(), 4096)
            .await
            .expect("body");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["error"]["code"], "InternalServerError");
        assert!(!String::from_utf8_lossy(&body).contains("exploded"));
    }
}
