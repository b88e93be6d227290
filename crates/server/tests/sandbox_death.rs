//! A session whose sandbox dies (its processes killed from the host, as an operator or the OOM
//! killer does) ends at once and never turns into a zombie: a command running at the time ends
//! `Failed` with `SessionSandboxDied`, one later request at most answers that code, the next
//! gets a new sandbox, `GET session`/`listSessions` stop showing it, `/metrics` counts it, and
//! nothing of it stays on the host. An `OnContainerExit` session ends when its init exits.
//! Real server, real sandboxes (root required).

mod common;

use std::time::Duration;

use common::{Api, Resp};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use reqwest::Method;
use sandpool_server::testing::{cgroup_children, TestStore};
use serde_json::{json, Value};

const V: &str = "api-version=2024-10-02-preview";
const SUB: &str = "11111111-2222-3333-4444-555555555555";

struct T {
    api: Api,
}

impl T {
    async fn start() -> T {
        let t = T {
            api: Api::start(TestStore::Sqlite).await,
        };
        let rg = t
            .api
            .url(&format!("/subscriptions/{SUB}/resourceGroups/rg"));
        t.call(Method::PUT, &rg, Some(json!({"location": "local"})))
            .await
            .assert_status(201);
        t
    }

    async fn call(&self, method: Method, url: &str, body: Option<Value>) -> Resp {
        let body = body.map(|b| serde_json::to_vec(&b).expect("json"));
        self.api.raw(method, url, body, &[]).await
    }

    async fn put_pool(&self, name: &str, lifecycle: Value) {
        let url = self.api.url(&format!(
            "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.App/sessionPools/{name}"
        ));
        let props = json!({
            "dynamicPoolConfiguration": {"lifecycleConfiguration": lifecycle},
            "scaleConfiguration": {"maxConcurrentSessions": 2, "readySessionInstances": 0},
        });
        let r = self
            .call(
                Method::PUT,
                &url,
                Some(json!({"location": "local", "properties": props})),
            )
            .await;
        assert!(r.status == 201, "{}: {}", r.status, r.text);
    }

    fn url(&self, pool: &str, rest: &str, identifier: &str) -> String {
        format!(
            "{}/subscriptions/{SUB}/resourceGroups/rg/sessionPools/{pool}/{rest}?{V}&identifier={identifier}",
            self.api.srv.base_url
        )
    }

    async fn exec(&self, pool: &str, identifier: &str, cmd: &str) -> Resp {
        self.call(
            Method::POST,
            &self.url(pool, "executions", identifier),
            Some(json!({"shellCommand": cmd})),
        )
        .await
    }

    async fn stdout(&self, pool: &str, identifier: &str, cmd: &str) -> String {
        let r = self.exec(pool, identifier, cmd).await;
        r.assert_status(200);
        assert_eq!(r.json["result"]["exitCode"], 0, "{}", r.text);
        r.json["result"]["stdout"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn session_status(&self, pool: &str, identifier: &str) -> u16 {
        self.call(Method::GET, &self.url(pool, "session", identifier), None)
            .await
            .status
    }

    async fn listed(&self, pool: &str) -> u64 {
        let url = format!(
            "{}/subscriptions/{SUB}/resourceGroups/rg/sessionPools/{pool}/listSessions?{V}",
            self.api.srv.base_url
        );
        let r = self.call(Method::GET, &url, None).await;
        r.assert_status(200);
        r.json["count"].as_u64().expect("count")
    }

    async fn died_metric(&self) -> f64 {
        let url = format!("{}/metrics", self.api.srv.base_url);
        let r = self.call(Method::GET, &url, None).await;
        r.assert_status(200);
        r.text
            .lines()
            .find_map(|l| {
                l.strip_prefix("sandpool_sessions_sandbox_died_total ")
                    .and_then(|v| v.trim().parse().ok())
            })
            .expect("sandpool_sessions_sandbox_died_total in /metrics")
    }

    fn parent(&self) -> String {
        self.api.srv.config.sandbox.cgroup_parent.clone()
    }

    /// Host pids of every process of the server's sandboxes (their cgroups' `cgroup.procs`).
    fn sandbox_pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = cgroup_children(&self.parent())
            .iter()
            .filter_map(|cg| std::fs::read_to_string(cg.join("cgroup.procs")).ok())
            .flat_map(|text| {
                text.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// `kill -9` of every process of the server's sandboxes, from the host.
    fn kill_all(&self) {
        let pids = self.sandbox_pids();
        assert!(!pids.is_empty(), "no sandbox processes to kill");
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }

    /// Waits for `GET session` to stop finding `identifier` (bounded: a zombie fails).
    async fn wait_gone(&self, pool: &str, identifier: &str) {
        for _ in 0..300 {
            if self.session_status(pool, identifier).await == 404 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("session {identifier} is still shown after its sandbox died");
    }

    /// Waits until the server's sandboxes are exactly `n` (cgroups under its parent, in one
    /// hierarchy).
    async fn wait_sandboxes(&self, n: usize) {
        let count = || {
            let mut names: Vec<_> = cgroup_children(&self.parent())
                .iter()
                .filter_map(|p| p.file_name().map(|f| f.to_owned()))
                .collect();
            names.sort();
            names.dedup();
            names.len()
        };
        for _ in 0..300 {
            if count() == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{} sandboxes on the host, expected {n}", count());
    }
}

/// The host pid of the init (pid 1 of its namespace) among `pids`.
fn init_of(pids: &[i32]) -> i32 {
    pids.iter()
        .copied()
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("NSpid:"))
                        .map(|l| l.split_whitespace().last() == Some("1"))
                })
                .unwrap_or(false)
        })
        .expect("an init among the sandbox's processes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_sandbox_ends_its_session() {
    let t = T::start().await;
    let pool = "mortal";
    t.put_pool(
        pool,
        json!({"lifecycleType": "Timed", "cooldownPeriodInSeconds": 300}),
    )
    .await;
    assert_eq!(
        t.stdout(pool, "victim", "echo x > /mnt/data/f && echo ok")
            .await,
        "ok\n"
    );

    // Killed while a command runs: the command ends Failed with the reason, promptly.
    let running = {
        let url = t.url(pool, "executions", "victim");
        let body =
            serde_json::to_vec(&json!({"shellCommand": "touch /mnt/data/started; sleep 120"}))
                .expect("json");
        let api = &t.api;
        async move { api.raw(Method::POST, &url, Some(body), &[]).await }
    };
    let killer = async {
        for _ in 0..300 {
            let r = t
                .exec(pool, "victim", "test -e /mnt/data/started && echo yes")
                .await;
            if r.json["result"]["stdout"] == "yes\n" {
                t.kill_all();
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the long command never started");
    };
    let (r, ()) = tokio::join!(
        async {
            tokio::time::timeout(Duration::from_secs(60), running)
                .await
                .expect("the running command hung after its sandbox died")
        },
        killer
    );
    r.assert_status(200);
    assert_eq!(r.json["status"], "Failed", "{}", r.text);
    assert_eq!(r.json["error"]["code"], "SessionSandboxDied", "{}", r.text);
    // The execution's answer told it: the session is gone, and the next request is served by a
    // new sandbox without its files.
    assert_eq!(t.session_status(pool, "victim").await, 404);
    assert_eq!(t.listed(pool).await, 0);
    assert_eq!(
        t.stdout(
            pool,
            "victim",
            "test -e /mnt/data/f && echo seen || echo fresh"
        )
        .await,
        "fresh\n"
    );
    assert_eq!(t.died_metric().await, 1.0);

    // Killed while idle: noticed without any request, the next request answers the code once,
    // the one after gets a new sandbox.
    t.stdout(pool, "victim", "echo y > /mnt/data/g").await;
    t.kill_all();
    t.wait_gone(pool, "victim").await;
    assert_eq!(t.listed(pool).await, 0);
    t.wait_sandboxes(0).await;
    let r = t.exec(pool, "victim", "cat /mnt/data/g").await;
    r.assert_error(409, "SessionSandboxDied");
    assert_eq!(
        t.stdout(
            pool,
            "victim",
            "test -e /mnt/data/g && echo seen || echo fresh"
        )
        .await,
        "fresh\n"
    );
    assert_eq!(t.died_metric().await, 2.0);
    t.call(Method::DELETE, &t.url(pool, "session", "victim"), None)
        .await
        .assert_status(204);
    t.wait_sandboxes(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_container_exit_ends_when_the_init_exits() {
    let t = T::start().await;
    let pool = "oce";
    t.put_pool(
        pool,
        json!({"lifecycleType": "OnContainerExit", "maxAlivePeriodInSeconds": 3600}),
    )
    .await;
    t.stdout(pool, "main", "echo z > /mnt/data/h").await;
    let init = init_of(&t.sandbox_pids());
    kill(Pid::from_raw(init), Signal::SIGKILL).expect("killing the init");
    t.wait_gone(pool, "main").await;
    assert_eq!(t.listed(pool).await, 0);
    t.wait_sandboxes(0).await;
    // The lifecycle's own end: the identifier simply starts a new session.
    assert_eq!(
        t.stdout(
            pool,
            "main",
            "test -e /mnt/data/h && echo seen || echo fresh"
        )
        .await,
        "fresh\n"
    );
    assert_eq!(t.died_metric().await, 1.0);
}
