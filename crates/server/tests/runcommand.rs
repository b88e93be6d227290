//! Run Command over real HTTP with real sandboxes (root required): the API reference example,
//! exit codes, timeouts, refused contexts, the concurrency bound, write-only kubeconfigs and
//! recovery after a crash.

mod common;

use common::{Api, Resp, SUB, V};
use std::io::{Cursor, Write};
use std::time::Duration;

use base64::Engine as _;
use reqwest::Method;
use sandpool_server::testing::{TestServer, TestStore};
use serde_json::{json, Value};
use zip::write::SimpleFileOptions;

const NS_YAML: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: dummy\n";

/// A test server and the admin's client (every answer checked for the API conventions).
struct Client {
    api: Api,
}

impl Client {
    async fn start(
        store: TestStore,
        configure: impl FnOnce(&mut sandpool_server::ServeConfig),
    ) -> Client {
        let srv = TestServer::start_with(store, |c| {
            c.create_defaults = false;
            configure(c);
        })
        .await;
        Client {
            api: Api::from(srv),
        }
    }

    fn url(&self, path: &str) -> String {
        self.api.url(path)
    }

    async fn send(&self, method: Method, url: &str, body: Option<&Value>) -> Resp {
        let body = body.map(|b| serde_json::to_vec(b).expect("json"));
        self.api.raw(method, url, body, &[]).await
    }

    async fn setup_cluster(&self, rg: &str, name: &str, props: Value) -> String {
        let r = self
            .send(
                Method::PUT,
                &self.url(&format!("/subscriptions/{SUB}/resourcegroups/{rg}")),
                Some(&json!({"location": "westus"})),
            )
            .await;
        assert!(r.status == 200 || r.status == 201, "{}", r.text);
        let path = cluster_path(rg, name);
        let r = self
            .send(
                Method::PUT,
                &self.url(&path),
                Some(&json!({"location": "westus", "properties": props})),
            )
            .await;
        assert!(r.status == 200 || r.status == 201, "{}", r.text);
        path
    }

    async fn run(&self, cluster: &str, body: &Value) -> Resp {
        self.send(
            Method::POST,
            &self.url(&format!("{cluster}/runCommand")),
            Some(body),
        )
        .await
    }

    /// Submits a command and checks the 202 answer; returns the Location.
    async fn submit(&self, cluster: &str, command: &str, context: &str) -> String {
        let r = self
            .run(
                cluster,
                &json!({"command": command, "context": context, "clusterToken": ""}),
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.text);
        assert!(r.text.is_empty(), "202 has no body: {}", r.text);
        assert_eq!(r.header("retry-after"), Some("1"));
        let loc = r.header("location").expect("Location").to_owned();
        let prefix = format!(
            "{}{}/commandResults/",
            self.api.srv.base_url,
            cluster.replace("resourcegroups", "resourceGroups")
        );
        let rest = loc
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{loc} is not under {prefix}"));
        let (id, query) = rest.split_once('?').expect("query");
        assert!(
            !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()),
            "id {id}"
        );
        assert_eq!(query, V);
        loc
    }

    /// Polls a result URL until it is done (the test harness's timeout bounds the wait).
    async fn wait(&self, location: &str) -> Value {
        loop {
            let r = self.send(Method::GET, location, None).await;
            match r.status {
                200 => {
                    let state = &r.json["properties"]["provisioningState"];
                    assert!(state == "Succeeded" || state == "Failed", "{}", r.text);
                    return r.json;
                }
                202 => {
                    assert_eq!(r.header("location"), Some(location));
                    assert_eq!(r.header("retry-after"), Some("1"));
                    assert_eq!(r.json["properties"]["provisioningState"], "Running");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ => panic!("polling {location}: {} {}", r.status, r.text),
            }
        }
    }
}

fn cluster_path(rg: &str, name: &str) -> String {
    format!("/subscriptions/{SUB}/resourcegroups/{rg}/providers/Microsoft.ContainerService/managedClusters/{name}")
}

enum Entry<'a> {
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
}

fn zip_of(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for e in entries {
        match e {
            Entry::File(name, data) => {
                w.start_file(*name, SimpleFileOptions::default())
                    .expect("start file");
                w.write_all(data).expect("write");
            }
            Entry::Symlink(name, target) => {
                w.add_symlink(*name, *target, SimpleFileOptions::default())
                    .expect("symlink");
            }
        }
    }
    w.finish().expect("finish").into_inner()
}

/// Base64 with a line break every 76 characters, as `az aks command invoke` sends it.
fn wrapped_b64(data: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    b64.as_bytes()
        .chunks(76)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Rewrites every entry's declared uncompressed size, the way a zip bomb lies.
fn lie_about_sizes(mut zip: Vec<u8>, size: u32) -> Vec<u8> {
    for (sig, offset) in [(b"PK\x03\x04", 22), (b"PK\x01\x02", 24)] {
        let mut i = 0;
        while i + 4 <= zip.len() {
            if &zip[i..i + 4] == sig {
                zip[i + offset..i + offset + 4].copy_from_slice(&size.to_le_bytes());
            }
            i += 1;
        }
    }
    zip
}

fn process_with_arg(needle: &str) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .map(|c| c.split(|b| *b == 0).any(|a| a == needle.as_bytes()))
            .unwrap_or(false)
    })
}

fn parse_time(v: &Value) -> time::OffsetDateTime {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("time expected, got {v}"));
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{s} is not RFC 3339: {e}"))
}

both_stores!(api_reference_example, crash_and_restart);

/// The API reference's example with `cat ns.yaml` in place of kubectl, then an exit code, a
/// missing cluster and an unknown result id.
async fn api_reference_example(store: TestStore) {
    let c = Client::start(store, |_| {}).await;
    let cluster = c.setup_cluster("rg1", "clustername1", json!({})).await;
    let zip = zip_of(&[Entry::File("ns.yaml", NS_YAML.as_bytes())]);
    let context = wrapped_b64(&zip);
    assert!(context.contains('\n'));
    let loc = c.submit(&cluster, "cat ns.yaml", &context).await;
    let done = c.wait(&loc).await;
    let p = &done["properties"];
    assert_eq!(p["provisioningState"], "Succeeded", "{done}");
    assert_eq!(p["exitCode"], 0);
    assert_eq!(p["logs"], NS_YAML);
    assert!(parse_time(&p["startedAt"]) <= parse_time(&p["finishedAt"]));
    let id = loc
        .rsplit_once("/commandResults/")
        .and_then(|(_, r)| r.split_once('?'))
        .map(|(id, _)| id.to_owned())
        .expect("id");
    assert_eq!(done["id"], id.as_str());

    // Non-zero exit is still Succeeded, with its code.
    let loc = c
        .submit(&cluster, "echo out; echo err >&2; exit 3", "")
        .await;
    let done = c.wait(&loc).await;
    assert_eq!(done["properties"]["provisioningState"], "Succeeded");
    assert_eq!(done["properties"]["exitCode"], 3);
    assert_eq!(done["properties"]["logs"], "out\nerr\n");

    // Both are counted in /metrics, and nothing waits or runs any more.
    let m = c.send(Method::GET, &c.api.srv.url("/metrics"), None).await;
    assert_eq!(m.status, 200, "{}", m.text);
    for line in [
        "sandpool_runcommand_finished_total{state=\"Succeeded\"} 2",
        "sandpool_runcommand_finished_total{state=\"Failed\"} 0",
        "sandpool_runcommand_queued 0",
        "sandpool_runcommand_running 0",
    ] {
        assert!(
            m.text.lines().any(|l| l == line),
            "no '{line}' in:\n{}",
            m.text
        );
    }

    // Case-insensitive path segments reach the same result.
    let r = c
        .send(
            Method::GET,
            &loc.replace("/commandResults/", "/COMMANDRESULTS/"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    c.run(&cluster_path("rg1", "nosuch"), &json!({"command": "ls"}))
        .await
        .assert_error(404, "ResourceNotFound");
    c.send(
        Method::GET,
        &c.url(&format!("{cluster}/commandResults/doesnotexist1")),
        None,
    )
    .await
    .assert_error(404, "ResourceNotFound");
    c.send(
        Method::GET,
        &c.url(&format!(
            "{}/commandResults/{id}",
            cluster_path("rg1", "other")
        )),
        None,
    )
    .await
    .assert_error(404, "ResourceNotFound");
    c.run(&cluster, &json!({"context": ""}))
        .await
        .assert_error(400, "InvalidRequestContent");
    c.run(&cluster, &json!({"command": "x".repeat(70 * 1024)}))
        .await
        .assert_error(400, "InvalidRequestContent");
}

/// A server killed while a command runs: after the restart that result is Failed with a
/// reason, and a result finished before is still there.
async fn crash_and_restart(store: TestStore) {
    let mut c = Client::start(store, |_| {}).await;
    let cluster = c.setup_cluster("rg1", "c1", json!({})).await;
    let finished = c.submit(&cluster, "echo done", "").await;
    let before = c.wait(&finished).await;
    let running = c.submit(&cluster, "echo up; sleep 600", "").await;
    loop {
        let r = c.send(Method::GET, &running, None).await;
        assert_eq!(r.status, 202, "{}", r.text);
        if r.json["properties"]["startedAt"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.api.srv.kill();
    c.api.srv.restart().await;
    let r = c.send(Method::GET, &running, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["properties"]["provisioningState"], "Failed");
    assert!(
        r.json["properties"]["reason"]
            .as_str()
            .is_some_and(|m| m.contains("stopped")),
        "{}",
        r.text
    );
    let r = c.send(Method::GET, &finished, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json, before);
    // The runner works after the restart.
    let loc = c.submit(&cluster, "echo again", "").await;
    assert_eq!(c.wait(&loc).await["properties"]["logs"], "again\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_fails_and_kills_the_processes() {
    let c = Client::start(TestStore::Sqlite, |_| {}).await;
    let cluster = c
        .setup_cluster("rg1", "short", json!({"commandTimeoutInSeconds": 2}))
        .await;
    let marker = format!("{}", 8_000_000 + std::process::id() % 1_000_000);
    let loc = c
        .submit(
            &cluster,
            &format!("echo started; sleep {marker} & sleep {marker}; echo never"),
            "",
        )
        .await;
    let done = c.wait(&loc).await;
    let p = &done["properties"];
    assert_eq!(p["provisioningState"], "Failed", "{done}");
    assert!(p["exitCode"].is_null());
    assert!(
        p["reason"]
            .as_str()
            .is_some_and(|r| r.contains("timed out")),
        "{done}"
    );
    assert_eq!(p["logs"], "started\n");
    assert!(
        !process_with_arg(&marker),
        "the command's processes (sleep {marker}) must be gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_contexts_are_refused() {
    let c = Client::start(TestStore::Sqlite, |_| {}).await;
    let cluster = c.setup_cluster("rg1", "c1", json!({})).await;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let slip = format!("../../../../../../../../tmp/rc-http-slip-{tag}");
    let abs = format!("/tmp/rc-http-abs-{tag}");
    let link = format!("rc-http-link-{tag}");
    let b64 = |z: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(z);
    let cases = [
        (b64(zip_of(&[Entry::File(&slip, b"x")])), "'..'"),
        (b64(zip_of(&[Entry::File(&abs, b"x")])), "absolute"),
        (
            b64(zip_of(&[Entry::Symlink(&link, "/etc/shadow")])),
            "symbolic link",
        ),
        (
            b64(lie_about_sizes(
                zip_of(&[Entry::File("huge", b"tiny")]),
                300 << 20,
            )),
            "unpacks to more than",
        ),
        ("not base64 at all!".to_string(), "not valid base64"),
        (b64(b"PK\x03\x04 not a zip".to_vec()), "not a valid zip"),
    ];
    for (context, expect) in cases {
        let r = c
            .run(
                &cluster,
                &json!({"command": "cat *; touch escaped", "context": context}),
            )
            .await;
        r.assert_error(400, "InvalidContext");
        let msg = r.json["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(expect), "{msg:?} should mention {expect:?}");
    }
    for p in [format!("/tmp/rc-http-slip-{tag}"), abs, link] {
        assert!(
            std::fs::symlink_metadata(&p).is_err(),
            "{p} exists on the host"
        );
    }
    let sandboxes = c.api.srv.data_dir.path().join("sandboxes");
    let left: Vec<_> = std::fs::read_dir(&sandboxes)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "no sandbox was started: {left:?}");
}

/// 50 commands submitted at once all finish; the recorded run windows never overlap more than
/// the configured concurrency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_at_once_within_the_bound() {
    let c = Client::start(TestStore::Sqlite, |cfg| cfg.command_concurrency = 3).await;
    let cluster = c.setup_cluster("rg1", "busy", json!({})).await;
    let submits = (0..50).map(|i| {
        let c = &c;
        let cluster = cluster.clone();
        async move { c.submit(&cluster, &format!("echo job {i}"), "").await }
    });
    let locations = futures::future::join_all(submits).await;
    let mut windows = Vec::new();
    for (i, loc) in locations.iter().enumerate() {
        let done = c.wait(loc).await;
        let p = &done["properties"];
        assert_eq!(p["provisioningState"], "Succeeded", "{done}");
        assert_eq!(p["logs"], format!("job {i}\n"));
        windows.push((parse_time(&p["startedAt"]), 1));
        windows.push((parse_time(&p["finishedAt"]), -1));
    }
    windows.sort();
    let (mut now, mut peak) = (0, 0);
    for (_, d) in windows {
        now += d;
        peak = peak.max(now);
    }
    assert!((1..=3).contains(&peak), "peak concurrency {peak}");
}

/// The kubeconfig is write-only: GET never returns it, the command finds it in place, and a
/// PUT without it keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeconfig_is_write_only_and_mounted() {
    let c = Client::start(TestStore::Sqlite, |_| {}).await;
    let kube = "apiVersion: v1\nkind: Config\n# secret-marker\n";
    let cluster = c
        .setup_cluster(
            "rg1",
            "kube",
            json!({"kubeconfig": kube, "limits": {"cpu": 0.5, "memory": "256Mi", "pids": 64}}),
        )
        .await;
    let r = c.send(Method::GET, &c.url(&cluster), None).await;
    assert_eq!(r.status, 200);
    assert!(!r.text.contains("secret-marker"), "{}", r.text);
    assert_eq!(r.json["properties"]["hasKubeconfig"], true);
    assert_eq!(r.json["properties"]["provisioningState"], "Succeeded");
    assert_eq!(r.json["properties"]["powerState"]["code"], "Running");
    assert_eq!(r.json["properties"]["limits"]["memory"], "256Mi");
    let loc = c.submit(&cluster, "cat /root/.kube/config", "").await;
    assert_eq!(c.wait(&loc).await["properties"]["logs"], kube);
    // Re-PUT of what GET returned keeps the kubeconfig.
    let r = c.send(Method::PUT, &c.url(&cluster), Some(&r.json)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let loc = c.submit(&cluster, "cat /root/.kube/config", "").await;
    assert_eq!(c.wait(&loc).await["properties"]["logs"], kube);
}
