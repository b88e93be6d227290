//! A real sandpool server for the full-stack figures: a child process (the bench re-executed as
//! `__serve`, running sandpool-server's library) on loopback with a fresh data dir, its own
//! cgroup parent and no egress, reached by a client that authenticates like any other (the
//! admin credential the server writes into its data dir, traded for tokens at its token
//! endpoint).
//!
//! A child rather than a task, so the server's CPU is not the client's and a server crash does
//! not take the bench down. Whatever happens, [`StackServer`]'s drop stops the child and kills
//! and removes every sandbox cgroup under the run's parent, so no sandbox outlives the run.

use anyhow::{bail, Context, Result};
use sandpool_client::{Client, TokenFuture, TokenSource, MANAGEMENT_AUDIENCE, SESSIONS_AUDIENCE};
use std::io::BufRead;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Arguments of the hidden `__serve` subcommand.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[arg(long)]
    pub data_dir: PathBuf,
    #[arg(long)]
    pub cgroup_parent: String,
    #[arg(long)]
    pub uid_base: u32,
}

/// The child's side: serves until SIGTERM/SIGINT; prints its URL on stdout once bound.
pub fn serve_main(args: ServeArgs) -> Result<()> {
    use tracing_subscriber::EnvFilter;
    // Server-side spans and events for profiling, e.g. SANDPOOL_BENCH_LOG=sandpool_pools=debug.
    let filter = std::env::var("SANDPOOL_BENCH_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let config = sandpool_server::ServeConfig {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: args.data_dir,
        create_defaults: false,
        sandbox: sandpool_server::sandboxes::SandboxSettings {
            // The bench binary itself answers `__sandbox-init`.
            init_program: None,
            init_args: vec!["__sandbox-init".into()],
            cgroup_parent: args.cgroup_parent,
            uid_base: args.uid_base,
            // Bench servers' bases are 100,000,000 uids apart: a band of 1,500 sandboxes fits
            // (the density figure's 1,000 sessions and their ready ones).
            uid_slots: 1500,
            egress: None,
            ..Default::default()
        },
        ..Default::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let server = sandpool_server::Server::bind(&config).await?;
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", server.public_url())?;
            out.flush()?;
        }
        server.run(sandpool_server::shutdown_signal()).await
    })
}

/// Tokens for both audiences, fetched once (they outlive any run of the bench).
struct Tokens {
    management: String,
    sessions: String,
}

impl TokenSource for Tokens {
    fn token<'a>(&'a self, audience: &'a str) -> TokenFuture<'a> {
        let t = if audience == SESSIONS_AUDIENCE {
            self.sessions.clone()
        } else {
            self.management.clone()
        };
        Box::pin(async move { Ok(t) })
    }
}

/// The resource group every scenario's pools and clusters live in.
pub const GROUP: &str = "bench";

/// A running server child, its data dir and cgroup parent; cleaned up on drop.
pub struct StackServer {
    child: Option<Child>,
    cgroup_parent: String,
    url: String,
    management_token: String,
    client: Client,
    // Dropped (removed) after the child and its sandboxes are gone.
    data_dir: tempfile::TempDir,
}

impl StackServer {
    /// Starts the server child and authenticates against it.
    pub async fn start() -> Result<StackServer> {
        let data_dir = tempfile::Builder::new()
            .prefix("sandpool-bench-stack")
            .tempdir()?;
        let pid = std::process::id();
        let cgroup_parent = format!("sandpool-bench-stack-{pid}");
        // Away from a production server's range (1e9), distinct per bench process.
        let uid_base = 2_000_000_000 + (pid % 20) * 100_000_000;
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("__serve")
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(["--cgroup-parent", &cgroup_parent])
            .args(["--uid-base", &uid_base.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // Its own process group: Ctrl-C reaches the bench, which stops the server in
                // order; and the server dies with the bench if the bench is killed outright.
                libc::setpgid(0, 0);
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = cmd.spawn().context("starting the server child")?;
        let stdout = child.stdout.take().context("server child has no stdout")?;
        let mut server = StackServer {
            child: Some(child),
            cgroup_parent,
            url: String::new(),
            management_token: String::new(),
            client: Client::new("http://127.0.0.1:1")?,
            data_dir,
        };
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufReader::new(stdout)
                .read_line(&mut line)
                .map(|_| line)
        });
        let line = tokio::time::timeout(Duration::from_secs(120), line)
            .await
            .context("the server did not start within 120 s")???;
        let url = line.trim().to_string();
        if !url.starts_with("http://") {
            bail!("the server child exited before listening (see its stderr above)");
        }
        let cred = sandpool_auth::load_local_admin(server.data_dir.path())
            .context("reading the server's admin credential")?;
        let token = |aud: &'static str| {
            let (cred, url) = (cred.clone(), url.clone());
            async move {
                sandpool_auth::fetch_token(&cred, Some(&url), aud)
                    .await
                    .map(|t| t.access_token.expose().to_string())
                    .with_context(|| format!("getting a token for {aud}"))
            }
        };
        let tokens = Tokens {
            management: token(MANAGEMENT_AUDIENCE).await?,
            sessions: token(SESSIONS_AUDIENCE).await?,
        };
        server.management_token = tokens.management.clone();
        server.client = Client::new(&url)?
            .with_token(Arc::new(tokens))
            .with_polling(Duration::from_millis(50), Duration::from_secs(600));
        server.url = url;
        server
            .client
            .create_group(GROUP, "local", None)
            .await
            .context("creating the bench's resource group")?;
        Ok(server)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The cgroup (in every hierarchy) below which the server makes one per sandbox.
    pub fn cgroup_parent(&self) -> &str {
        &self.cgroup_parent
    }

    pub fn child_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's `/metrics` text.
    pub async fn metrics(&self) -> Result<String> {
        let resp = reqwest::Client::new()
            .get(format!("{}/metrics?api-version=2024-01-01", self.url))
            .bearer_auth(&self.management_token)
            .send()
            .await?
            .error_for_status()?;
        Ok(resp.text().await?)
    }

    /// Stops the server and removes every trace of the run; answers what could not be removed
    /// (empty when the host is clean).
    pub fn stop(&mut self) -> Vec<String> {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child);
        }
        let mut left = sweep_cgroups(&self.cgroup_parent);
        left.extend(leftover_processes(
            self.data_dir.path(),
            &self.cgroup_parent,
        ));
        left
    }
}

impl Drop for StackServer {
    fn drop(&mut self) {
        for problem in self.stop() {
            eprintln!("cleanup: {problem}");
        }
    }
}

/// SIGTERM (graceful: in-flight requests drain), then SIGKILL after 20 s.
fn stop_child(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: signalling our own child, which is not yet reaped (so the pid is still ours).
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Kills and removes each sandbox cgroup under `parent` (a graceful server keeps its sessions'
/// sandboxes for its next start; a crashed one leaves everything), then `parent` itself.
/// Answers what is still there.
pub fn sweep_cgroups(parent: &str) -> Vec<String> {
    let mut left = Vec::new();
    let Ok(manager) = sandpool_cgroups::CgroupManager::detect(parent) else {
        return left;
    };
    if let Ok(names) = manager.list() {
        for name in names {
            if let Ok(cg) = manager.open(&name) {
                if let Err(e) = cg.destroy() {
                    left.push(format!("cgroup {parent}/{name}: {e}"));
                }
            }
        }
    }
    for dir in manager.parent_dirs() {
        if dir.exists() && std::fs::remove_dir(&dir).is_err() {
            left.push(format!("cgroup {} still exists", dir.display()));
        }
    }
    left
}

/// Processes of the run still alive: the server (its command line names the data dir) or
/// anything in the run's cgroups (sandbox inits and their commands), which a sweep should have
/// killed.
fn leftover_processes(data_dir: &Path, cgroup_parent: &str) -> Vec<String> {
    let dir = data_dir.as_os_str().as_encoded_bytes();
    let cgroup = format!("/{cgroup_parent}/");
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    let mut left = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return left;
    };
    for p in procs.flatten() {
        let name = p.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        let cgroups = std::fs::read(p.path().join("cgroup")).unwrap_or_default();
        if contains(&cmdline, dir) || contains(&cgroups, cgroup.as_bytes()) {
            left.push(format!("process {pid} of the run is still alive"));
        }
    }
    left
}
