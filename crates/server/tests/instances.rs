//! Two sandpool instances on one host, as real server processes on their own data dirs and ports.
//! A second server whose cgroup parent, uid range and egress network are the first one's refuses
//! to start, naming each conflict and the flag that resolves it; so does one on the first one's
//! data dir. A second server with ranges of its own starts, serves a session of its own and
//! stops. Through all of it the first server's session keeps its sandbox and its file.
//!
//! `harness = false`: this binary is both the test and, when `SANDPOOL_INSTANCE_CHILD` is set,
//! a server process (so the test needs no other binary).

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sandpool_server::sandboxes::SandboxSettings;
use sandpool_server::testing::{
    bearer_client, cgroup_children, host_leftovers, test_egress_config, test_sandbox_settings,
    HostGuard,
};
use sandpool_server::{ServeConfig, Server};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CHILD_ENV: &str = "SANDPOOL_INSTANCE_CHILD";
const SUB: &str = "12345678-1234-1234-1234-123456789abc";
const V: &str = "api-version=2025-02-02-preview";
/// Exit code of a child whose server refused to start.
const REFUSED: i32 = 3;

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        return child(&spec);
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    print!("test instances::two_servers_on_one_host ... ");
    match rt.block_on(run()) {
        Ok(()) => println!("ok"),
        Err(e) => {
            println!("FAILED\n  {e:#}");
            std::process::exit(1);
        }
    }
}

/// What a child server runs with: `data_dir|port|cgroup_parent|uid_base|bridge|subnet`, bridge
/// and subnet `-` for no egress.
fn spec_of(dir: &Path, port: u16, s: &SandboxSettings) -> String {
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

fn child(spec: &str) {
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
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(spec: &str, stderr: Stdio) -> anyhow::Result<ChildGuard> {
    Ok(ChildGuard(
        Command::new(std::env::current_exe()?)
            .env(CHILD_ENV, spec)
            .stderr(stderr)
            .spawn()?,
    ))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
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

/// Runs a child that must refuse to start; answers what it printed.
async fn refused(spec: &str) -> anyhow::Result<String> {
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
struct Instance {
    child: ChildGuard,
    http: reqwest::Client,
    endpoint: String,
}

impl Instance {
    async fn start(spec: &str, dir: &Path, port: u16) -> anyhow::Result<Instance> {
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
        anyhow::ensure!(s.status() == 201, "rg: {}", s.status());
        let pool = format!(
            "{base}/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.App/sessionPools/p?{V}"
        );
        let body = json!({"location": "w", "properties": {
            "sessionNetworkConfiguration": {"status": "EgressDisabled"}}});
        let s = arm.put(pool).json(&body).send().await?;
        anyhow::ensure!(s.status() == 201, "pool: {}", s.status());
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
    async fn exec(&self, identifier: &str, command: &str) -> anyhow::Result<String> {
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

    async fn end(&self, identifier: &str) -> anyhow::Result<()> {
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
    fn stop(self) -> anyhow::Result<()> {
        let mut child = self.child;
        kill(Pid::from_raw(child.0.id() as i32), Signal::SIGTERM)?;
        let status = child.0.wait()?;
        anyhow::ensure!(status.success(), "SIGTERM: the server exited with {status}");
        Ok(())
    }
}

/// Prints the start time of the sandbox's pid 1: the same value means the same sandbox.
const INIT_START: &str = "cut -d' ' -f22 /proc/1/stat";

async fn run() -> anyhow::Result<()> {
    let dir_a = tempfile::tempdir()?;
    let dir_b = tempfile::tempdir()?;
    let dir_c = tempfile::tempdir()?;
    let first = SandboxSettings {
        egress: Some(test_egress_config()),
        ..test_sandbox_settings()
    };
    // Everything of all three is cleaned up however the test ends (guards declared after the
    // dirs, before the children: dropped after them, before the dirs).
    let host_a = HostGuard {
        data_dir: dir_a.path().to_path_buf(),
        settings: first.clone(),
    };
    let own = test_sandbox_settings();
    let host_c = HostGuard {
        data_dir: dir_c.path().to_path_buf(),
        settings: own.clone(),
    };
    let _host_b = HostGuard {
        data_dir: dir_b.path().to_path_buf(),
        settings: first.clone(),
    };

    let port_a = free_port()?;
    let a = Instance::start(&spec_of(dir_a.path(), port_a, &first), dir_a.path(), port_a).await?;
    let written = a
        .exec("keeper", "echo kept > /mnt/data/f.txt && echo ok")
        .await?;
    anyhow::ensure!(written == "ok\n", "writing the file: {written:?}");
    let started = a.exec("keeper", INIT_START).await?;

    // The same cgroup parent, uid range and network on another data dir: refused, each
    // conflict named with its flag.
    let port_b = free_port()?;
    let msg = refused(&spec_of(dir_b.path(), port_b, &first)).await?;
    for needle in [
        "--cgroup-parent",
        "--uid-base",
        "--egress-bridge",
        "--egress-subnet",
        &first.cgroup_parent,
        &dir_a.path().display().to_string(),
    ] {
        anyhow::ensure!(
            msg.contains(needle),
            "the refusal does not name {needle:?}: {msg}"
        );
    }
    // The first server's data dir, with ranges of its own: refused as well.
    let msg = refused(&spec_of(dir_a.path(), port_b, &own)).await?;
    anyhow::ensure!(
        msg.contains("in use") && msg.contains(&dir_a.path().display().to_string()),
        "the refusal of a shared data dir: {msg}"
    );
    anyhow::ensure!(
        a.exec("keeper", "cat /mnt/data/f.txt").await? == "kept\n",
        "the first server's session lost its file to a refused second server"
    );

    // Ranges of its own: both serve side by side; the second's start and stop leave the first's
    // session alone.
    let port_c = free_port()?;
    let c = Instance::start(&spec_of(dir_c.path(), port_c, &own), dir_c.path(), port_c).await?;
    anyhow::ensure!(
        a.exec("keeper", "cat /mnt/data/f.txt").await? == "kept\n",
        "the first server's session lost its file when a second server started"
    );
    let other = c
        .exec(
            "other",
            "test -e /mnt/data/f.txt && echo seen || echo absent",
        )
        .await?;
    anyhow::ensure!(
        other == "absent\n",
        "the second server's session saw the first's file"
    );
    let uid_a = a.exec("keeper", "cat /proc/self/uid_map").await?;
    let uid_c = c.exec("other", "cat /proc/self/uid_map").await?;
    anyhow::ensure!(
        uid_a != uid_c,
        "both sessions map the same host uids: {uid_a}"
    );
    c.end("other").await?;
    c.stop()?;
    anyhow::ensure!(
        a.exec("keeper", "cat /mnt/data/f.txt").await? == "kept\n",
        "the first server's session lost its file when the second server stopped"
    );
    anyhow::ensure!(
        a.exec("keeper", INIT_START).await? == started,
        "the first server's session got a new sandbox"
    );
    anyhow::ensure!(
        cgroup_children(&own.cgroup_parent).is_empty(),
        "the second server left cgroups"
    );

    a.end("keeper").await?;
    a.stop()?;
    host_a.clean();
    host_c.clean();
    for s in [&first, &own] {
        let leftovers = host_leftovers(s);
        anyhow::ensure!(leftovers.is_empty(), "left on the host: {leftovers:?}");
    }
    Ok(())
}
