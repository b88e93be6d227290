//! Crash-restart: a real server process is SIGKILLed after writing resources and mid-session,
//! then restarted on the same data dir (SQLite) or database (PostgreSQL); everything must still
//! be there. The session's identifier finds the same live sandbox with its files (written by a
//! command and uploaded), which a new identifier does not see. The restarted server sweeps the
//! ready sandboxes the killed one left, and its SIGTERM shutdown destroys its own; the host keeps
//! nothing of the test's cgroup parent, bridge or subnet.
//!
//! `harness = false`: this binary is both the test and, when `SANDPOOL_CRASH_CHILD` is set, the
//! server process it kills (so the test needs no other binary).

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sandpool_server::sandboxes::SandboxSettings;
use sandpool_server::testing::{
    cgroup_children, host_leftovers, test_egress_config, test_sandbox_settings, with_database,
    HostGuard, DATABASE_URL_ENV,
};
use sandpool_server::{ServeConfig, Server};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Child, Command};
use std::time::Duration;

const CHILD_ENV: &str = "SANDPOOL_CRASH_CHILD";
const SUB: &str = "12345678-1234-1234-1234-123456789abc";
const V: &str = "api-version=2025-02-02-preview";
/// The session that lives through the crash, in the egress-disabled pool `p1`.
const SURVIVOR: &str = "survivor";
/// Pools the test creates; each keeps one sandbox ready.
const POOLS: usize = 5;

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

/// The server process: `data_dir|port|cgroup_parent|uid_base|bridge|subnet|database_url` (the
/// database URL last: it is the one part that could hold a `|`).
fn child(spec: &str) {
    let parts: Vec<&str> = spec.splitn(7, '|').collect();
    let &[dir, port, parent, uid_base, bridge, subnet, db] = parts.as_slice() else {
        eprintln!("bad {CHILD_ENV}");
        std::process::exit(2);
    };
    let parsed = sandpool_server::sandboxes::parse_subnet(subnet)
        .and_then(|s| Ok((s, sandpool_server::sandboxes::parse_uid_base(uid_base)?)));
    let (subnet, uid_base) = match parsed {
        Ok(v) => v,
        Err(e) => {
            eprintln!("bad {CHILD_ENV}: {e}");
            std::process::exit(2);
        }
    };
    let egress = sandpool_net::NetConfig {
        ready_slots: 1,
        ..sandpool_server::sandboxes::egress_config(bridge, subnet)
    };
    let config = ServeConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], port.parse().unwrap_or(0))),
        data_dir: dir.into(),
        database_url: Some(db.to_owned()),
        create_defaults: false,
        sandbox: SandboxSettings {
            cgroup_parent: parent.to_owned(),
            uid_base,
            egress: Some(egress),
            // The init binary beside this test's executable.
            ..test_sandbox_settings()
        },
        ..ServeConfig::default()
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let server = Server::bind(&config).await.expect("bind");
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
    // Its own cgroup parent, uid band, bridge and subnet, cleaned up however the test ends
    // (declared after `dir`, before the children: dropped after them, before `dir`).
    let settings = SandboxSettings {
        egress: Some(test_egress_config()),
        ..test_sandbox_settings()
    };
    let host = HostGuard {
        data_dir: dir.path().to_path_buf(),
        settings: settings.clone(),
    };
    let net = settings
        .egress
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("egress is configured above"))?;
    let spec = format!(
        "{}|{port}|{}|{}|{}|{}|{db}",
        dir.path().display(),
        settings.cgroup_parent,
        settings.uid_base,
        net.bridge,
        net.subnet
    );
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
    for i in 0..POOLS {
        let url = format!("{base}/subscriptions/{SUB}/resourceGroups/crash/providers/Microsoft.App/sessionPools/p{i}?{V}");
        // Every pool keeps one sandbox ready; p0's has egress (a network slot on the bridge).
        let status = if i == 0 {
            "EgressEnabled"
        } else {
            "EgressDisabled"
        };
        let body = json!({"location": "w", "properties": {
            "sessionNetworkConfiguration": {"status": status}}});
        anyhow::ensure!(
            put(&http, url.clone(), body).await? == 201,
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

    // A session mid-use when the server dies: a file written by a command, one uploaded.
    let session_token =
        sandpool_auth::fetch_token(&cred, Some(&base), sandpool_auth::DYNAMIC_SESSIONS_AUDIENCE)
            .await?;
    let p1 = SessionApi {
        http: sandpool_server::testing::bearer_client(&format!(
            "Bearer {}",
            session_token.access_token.expose()
        )),
        endpoint: format!("{base}/subscriptions/{SUB}/resourceGroups/crash/sessionPools/p1"),
    };
    let written = p1
        .exec(SURVIVOR, "echo before > /mnt/data/f.txt && echo ok")
        .await?;
    anyhow::ensure!(written == "ok\n", "first command's stdout: {written:?}");
    // Every byte value, in an order no other file of the sandbox would have.
    let blob: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    p1.upload(SURVIVOR, "blob.bin", &blob).await?;
    // The sandbox's identity: when its init started (its pid 1's start time).
    let init_started = p1.exec(SURVIVOR, INIT_START).await?;
    // A command running when the server dies (asynchronous, so it can be polled afterwards),
    // and the result answered last before the crash: it was stored before it was answered.
    let running = p1
        .start_async(SURVIVOR, "echo begun > /mnt/data/begun; sleep 300")
        .await?;
    for _ in 0..300 {
        if p1
            .exec(SURVIVOR, "test -e /mnt/data/begun && echo y || echo n")
            .await?
            == "y\n"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let last = p1
        .exec_with_id(SURVIVOR, "echo last", "last-answered")
        .await?;
    anyhow::ensure!(last == "last\n", "the last command's stdout: {last:?}");

    // The crash leaves the ready sandboxes and the session's running: the restart must sweep the
    // ready ones and keep the session's.
    let before = sandboxes(&settings.cgroup_parent, POOLS + 1).await?;

    kill(Pid::from_raw(child.0.id() as i32), Signal::SIGKILL)?;
    let status = child.0.wait()?;
    anyhow::ensure!(
        status.code().is_none(),
        "child was not killed by a signal: {status}"
    );
    drop(child);

    let mut child = spawn(&spec)?;
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

    let after = sandboxes(&settings.cgroup_parent, POOLS + 1).await?;
    let kept: Vec<_> = before.intersection(&after).collect();
    anyhow::ensure!(
        kept.len() == 1,
        "exactly the session's sandbox should outlive the crash, kept: {kept:?}"
    );

    // The same identifier is bound to the same live sandbox, files and all.
    anyhow::ensure!(
        p1.exec(SURVIVOR, INIT_START).await? == init_started,
        "the session's sandbox was replaced, not re-attached"
    );
    let content = p1.exec(SURVIVOR, "cat /mnt/data/f.txt").await?;
    anyhow::ensure!(content == "before\n", "f.txt after the crash: {content:?}");
    // The answered result is there. The running command is not re-attached: the init streams
    // a command's output over the connection that started it and ends the command when that
    // connection goes (nothing could receive its output); its record says why it failed.
    let (status, body) = p1.execution(SURVIVOR, "last-answered").await?;
    anyhow::ensure!(
        status == 200 && body["result"]["stdout"] == "last\n",
        "the result answered before the crash: {status} {body}"
    );
    let (status, body) = p1.execution(SURVIVOR, &running).await?;
    anyhow::ensure!(
        status == 200
            && body["status"] == "Failed"
            && body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("server restarted")),
        "the command running at the crash: {status} {body}"
    );
    let sleepers = p1
        .exec(
            SURVIVOR,
            "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done | grep -c 'slee[p] 300' || true",
        )
        .await?;
    anyhow::ensure!(
        sleepers == "0\n",
        "the command outlived its server: {sleepers:?}"
    );
    let (status, downloaded) = p1.download(SURVIVOR, "blob.bin").await?;
    anyhow::ensure!(
        status == 200,
        "downloading blob.bin after the crash: {status}"
    );
    anyhow::ensure!(
        downloaded == blob,
        "blob.bin changed across the crash ({} bytes back, {} sent)",
        downloaded.len(),
        blob.len()
    );
    // A new identifier gets a sandbox of its own.
    let seen = p1
        .exec(
            "newcomer",
            "test -e /mnt/data/f.txt || test -e /mnt/data/blob.bin && echo seen || echo absent",
        )
        .await?;
    anyhow::ensure!(
        seen == "absent\n",
        "a new identifier saw the survivor's files"
    );
    let (status, _) = p1.download("newcomer", "blob.bin").await?;
    anyhow::ensure!(status == 404, "newcomer downloading blob.bin: {status}");
    for id in [SURVIVOR, "newcomer"] {
        p1.end(id).await?;
    }

    // A graceful stop destroys the ready sandboxes with their cgroups (it would keep sessions,
    // but both ended above).
    kill(Pid::from_raw(child.0.id() as i32), Signal::SIGTERM)?;
    let status = child.0.wait()?;
    anyhow::ensure!(status.success(), "SIGTERM: the server exited with {status}");
    let left = cgroup_children(&settings.cgroup_parent);
    anyhow::ensure!(
        left.is_empty(),
        "cgroups of ready sandboxes left after SIGTERM: {left:?}"
    );
    // Nor does it leave network slots: the ready ones are released, and every sandbox that held
    // one is gone. (The bridge and nft tables stay for the next start.)
    let slots: Vec<String> = host_leftovers(&settings)
        .into_iter()
        .filter(|l| l.starts_with("veth ") || l.starts_with("netns "))
        .collect();
    anyhow::ensure!(
        slots.is_empty(),
        "network slots left after SIGTERM: {slots:?}"
    );
    drop(child);

    host.clean();
    let leftovers = host_leftovers(&settings);
    anyhow::ensure!(leftovers.is_empty(), "left on the host: {leftovers:?}");
    Ok(())
}

/// Waits until `count` sandboxes (cgroups below `parent`: ready ones and sessions' alike) exist;
/// answers their names.
async fn sandboxes(parent: &str, count: usize) -> anyhow::Result<BTreeSet<String>> {
    let names = || -> BTreeSet<String> {
        cgroup_children(parent)
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect()
    };
    for _ in 0..1200 {
        let found = names();
        if found.len() >= count {
            return Ok(found);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!(
        "{count} sandboxes never appeared below cgroup {parent}: {:?}",
        names()
    )
}

/// Prints the start time of the sandbox's pid 1: the same value means the same sandbox.
const INIT_START: &str = "cut -d' ' -f22 /proc/1/stat";

/// One pool's session API (its `poolManagementEndpoint`) with a session-audience token.
/// An answer's status, text and JSON body (`null` when it is not JSON).
async fn json_answer(r: reqwest::Response) -> anyhow::Result<(u16, String, Value)> {
    let status = r.status().as_u16();
    let text = r.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok((status, text, body))
}

struct SessionApi {
    http: reqwest::Client,
    endpoint: String,
}

impl SessionApi {
    fn url(&self, path: &str, identifier: &str) -> String {
        format!("{}/{path}?{V}&identifier={identifier}", self.endpoint)
    }

    /// Runs `command` in `identifier`'s session; it must exit 0. Answers its stdout.
    async fn exec(&self, identifier: &str, command: &str) -> anyhow::Result<String> {
        let r = self
            .http
            .post(self.url("executions", identifier))
            .json(&json!({ "shellCommand": command }))
            .send()
            .await?;
        let (status, text, body) = json_answer(r).await?;
        anyhow::ensure!(
            status == 200 && body["result"]["exitCode"] == 0,
            "`{command}` as {identifier}: {status} {text}"
        );
        body["result"]["stdout"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("`{command}`: no stdout in {text}"))
    }

    /// Runs `command` with execution id `id`; it must exit 0. Answers its stdout.
    async fn exec_with_id(
        &self,
        identifier: &str,
        command: &str,
        id: &str,
    ) -> anyhow::Result<String> {
        let r = self
            .http
            .post(self.url("executions", identifier))
            .header("operation-id", id)
            .json(&json!({ "shellCommand": command }))
            .send()
            .await?;
        let (status, text, body) = json_answer(r).await?;
        anyhow::ensure!(
            status == 200 && body["result"]["exitCode"] == 0,
            "`{command}` as {identifier}: {status} {text}"
        );
        Ok(body["result"]["stdout"].as_str().unwrap_or("").to_owned())
    }

    /// Starts `command` asynchronously; answers its execution id.
    async fn start_async(&self, identifier: &str, command: &str) -> anyhow::Result<String> {
        let r = self
            .http
            .post(self.url("executions", identifier))
            .json(&json!({ "shellCommand": command, "executionType": "Asynchronous" }))
            .send()
            .await?;
        let (status, text, body) = json_answer(r).await?;
        anyhow::ensure!(status == 202, "async `{command}`: {status} {text}");
        body["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("no id in {text}"))
    }

    /// `GET executions/{id}`: status and body.
    async fn execution(&self, identifier: &str, id: &str) -> anyhow::Result<(u16, Value)> {
        let r = self
            .http
            .get(self.url(&format!("executions/{id}"), identifier))
            .send()
            .await?;
        let (status, _, body) = json_answer(r).await?;
        Ok((status, body))
    }

    async fn upload(&self, identifier: &str, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let part = reqwest::multipart::Part::bytes(bytes.to_vec()).file_name(name.to_owned());
        let r = self
            .http
            .post(self.url("files", identifier))
            .multipart(reqwest::multipart::Form::new().part("file", part))
            .send()
            .await?;
        let (status, text, body) = json_answer(r).await?;
        anyhow::ensure!(
            status == 200 && body["name"] == name && body["sizeInBytes"] == bytes.len(),
            "uploading {name} as {identifier}: {status} {text}"
        );
        Ok(())
    }

    async fn download(&self, identifier: &str, name: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        let r = self
            .http
            .get(self.url(&format!("files/{name}/content"), identifier))
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.bytes().await?.to_vec()))
    }

    /// Ends the session (its sandbox is destroyed).
    async fn end(&self, identifier: &str) -> anyhow::Result<()> {
        let r = self
            .http
            .delete(self.url("session", identifier))
            .send()
            .await?;
        let status = r.status().as_u16();
        anyhow::ensure!(
            status == 204,
            "ending {identifier}: {status} {}",
            r.text().await?
        );
        Ok(())
    }
}
