//! A sandpool server as a child process of a `harness = false` test binary: the binary runs
//! [`child`] instead of its test when [`CHILD_ENV`] is set, and the test drives real server
//! processes on their own data dirs and ports through [`Instance`].
#![allow(dead_code)]

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sandpool_server::sandboxes::SandboxSettings;
use sandpool_server::testing::{bearer_client, test_sandbox_settings};
use sandpool_server::{ServeConfig, Server};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const CHILD_ENV: &str = "SANDPOOL_INSTANCE_CHILD";
pub const SUB: &str = "12345678-1234-1234-1234-123456789abc";
pub const V: &str = "api-version=2025-02-02-preview";
/// Exit code of a child whose server refused to start.
pub const REFUSED: i32 = 3;

/// What a child server runs with: `data_dir|port|cgroup_parent|uid_base|bridge|subnet`, bridge
/// and subnet `-` for no egress.
pub fn spec_of(dir: &Path, port: u16, s: &SandboxSettings) -> String {
    let (bridge, subnet) = match &s.egress {
        Some(n) => (n.bridge.clone(), n.subnet.to_string()),
        None => ("-".into(), "-".into()),
    };
    format!(
        "{}|{port}|{}|{}|{bridge}|{subnet}",
        dir.display(),
        s.cgroup_parent,
        s.uid_base
    )
}

pub fn child(spec: &str) {
    let parts: Vec<&str> = spec.split('|').collect();
    let &[dir, port, parent, uid_base, bridge, subnet] = parts.as_slice() else {
        eprintln!("bad {CHILD_ENV}");
        std::process::exit(2);
    };
    let egress = (bridge != "-").then(|| {
        let subnet = sandpool_server::sandboxes::parse_subnet(subnet).expect("subnet");
        sandpool_net::NetConfig {
            ready_slots: 1,
            ..sandpool_server::sandboxes::egress_config(bridge, subnet)
        }
    });
    let config = ServeConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], port.parse().unwrap_or(0))),
        data_dir: dir.into(),
        create_defaults: false,
        sandbox: SandboxSettings {
            cgroup_parent: parent.to_owned(),
            uid_base: sandpool_server::sandboxes::parse_uid_base(uid_base).expect("uid base"),
            egress,
            // The init binary beside this test's executable.
            ..test_sandbox_settings()
        },
        ..ServeConfig::default()
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let server = match Server::bind(&config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e:#}");
                std::process::exit(REFUSED);
            }
        };
        server
            .run(sandpool_server::shutdown_signal())
            .await
            .expect("serve");
    });
}

/// Kills the child on every exit path.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn spawn(spec: &str, stderr: Stdio) -> anyhow::Result<ChildGuard> {
    Ok(ChildGuard(
        Command::new(std::env::current_exe()?)
            .env(CHILD_ENV, spec)
            .stderr(stderr)
            .spawn()?,
    ))
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub async fn wait_ready(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
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

/// Runs a child that must refuse to start; answers what it printed.
pub async fn refused(spec: &str) -> anyhow::Result<String> {
    let mut child = spawn(spec, Stdio::piped())?;
    for _ in 0..600 {
        if let Some(status) = child.0.try_wait()? {
            let mut err = String::new();
            if let Some(mut pipe) = child.0.stderr.take() {
                use std::io::Read;
                pipe.read_to_string(&mut err)?;
            }
            anyhow::ensure!(
                status.code() == Some(REFUSED),
                "the second server exited with {status}: {err}"
            );
            return Ok(err);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the second server started instead of refusing")
}

/// A server process's session API, with a pool `p` made in resource group `rg`.
pub struct Instance {
    pub child: ChildGuard,
    pub http: reqwest::Client,
    pub endpoint: String,
}

impl Instance {
    pub async fn start(spec: &str, dir: &Path, port: u16) -> anyhow::Result<Instance> {
        let props = json!({"sessionNetworkConfiguration": {"status": "EgressDisabled"}});
        Self::start_with_pool(spec, dir, port, props).await
    }

    /// Starts the server and makes pool `p` with `props` (on the first start of a data dir).
    pub async fn start_with_pool(
        spec: &str,
        dir: &Path,
        port: u16,
        props: Value,
    ) -> anyhow::Result<Instance> {
        let base = format!("http://127.0.0.1:{port}");
        let child = spawn(spec, Stdio::inherit())?;
        wait_ready(&reqwest::Client::new(), &base).await?;
        let cred = sandpool_auth::load_local_admin(dir)?;
        let arm =
            sandpool_auth::fetch_token(&cred, Some(&base), sandpool_auth::MANAGEMENT_AUDIENCE)
                .await?;
        let arm = bearer_client(&format!("Bearer {}", arm.access_token.expose()));
        let rg = format!("{base}/subscriptions/{SUB}/resourceGroups/rg?{V}");
        let s = arm.put(rg).json(&json!({"location": "w"})).send().await?;
        anyhow::ensure!(s.status() == 201 || s.status() == 200, "rg: {}", s.status());
        let pool = format!(
            "{base}/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.App/sessionPools/p?{V}"
        );
        let body = json!({"location": "w", "properties": props});
        let s = arm.put(pool).json(&body).send().await?;
        anyhow::ensure!(
            s.status() == 201 || s.status() == 200,
            "pool: {}",
            s.status()
        );
        let data = sandpool_auth::fetch_token(
            &cred,
            Some(&base),
            sandpool_auth::DYNAMIC_SESSIONS_AUDIENCE,
        )
        .await?;
        Ok(Instance {
            child,
            http: bearer_client(&format!("Bearer {}", data.access_token.expose())),
            endpoint: format!("{base}/subscriptions/{SUB}/resourceGroups/rg/sessionPools/p"),
        })
    }

    /// Runs `command` in `identifier`'s session; it must exit 0. Answers its stdout.
    pub async fn exec(&self, identifier: &str, command: &str) -> anyhow::Result<String> {
        let r = self
            .http
            .post(format!(
                "{}/executions?{V}&identifier={identifier}",
                self.endpoint
            ))
            .json(&json!({ "shellCommand": command }))
            .send()
            .await?;
        let status = r.status().as_u16();
        let text = r.text().await?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        anyhow::ensure!(
            status == 200 && body["result"]["exitCode"] == 0,
            "`{command}` as {identifier}: {status} {text}"
        );
        Ok(body["result"]["stdout"].as_str().unwrap_or("").to_owned())
    }

    pub async fn end(&self, identifier: &str) -> anyhow::Result<()> {
        let r = self
            .http
            .delete(format!(
                "{}/session?{V}&identifier={identifier}",
                self.endpoint
            ))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 204, "ending {identifier}: {}", r.status());
        Ok(())
    }

    /// SIGTERM; the server must exit cleanly.
    pub fn stop(self) -> anyhow::Result<()> {
        let mut child = self.child;
        kill(Pid::from_raw(child.0.id() as i32), Signal::SIGTERM)?;
        let status = child.0.wait()?;
        anyhow::ensure!(status.success(), "SIGTERM: the server exited with {status}");
        Ok(())
    }
}

/// Prints the start time of the sandbox's pid 1: the same value means the same sandbox.
pub const INIT_START: &str = "cut -d' ' -f22 /proc/1/stat";
