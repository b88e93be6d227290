//! The session data plane over real HTTP with real sandboxes (root required): executions (sync,
//! async, SSE, legacy), files (streamed 100 MiB round trip, limits, path rules), sessions,
//! lifecycle, capacity, ready sandboxes, restart, and the SQL session store contract.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use sandpool_server::testing::{TestServer, TestStore};
use serde_json::{json, Value};

const V: &str = "api-version=2024-10-02-preview";
const SUB: &str = sandpool_server::DEFAULT_SUBSCRIPTION;

/// A test server plus clients with management and session tokens.
struct T {
    srv: TestServer,
    mgmt: reqwest::Client,
    data: reqwest::Client,
}

impl T {
    async fn start(store: TestStore) -> T {
        Self::start_with(store, |_| {}).await
    }

    async fn start_with(store: TestStore, f: impl FnOnce(&mut sandpool_server::ServeConfig)) -> T {
        let srv = TestServer::start_with(store, f).await;
        let mgmt = srv.client();
        let data = srv.sessions_client();
        T { srv, mgmt, data }
    }

    fn clients(&mut self) {
        self.mgmt = self.srv.client();
        self.data = self.srv.sessions_client();
    }

    /// The pool management endpoint of `pool` in group `default`.
    fn ep(&self, pool: &str) -> String {
        format!(
            "{}/subscriptions/{SUB}/resourceGroups/default/sessionPools/{pool}",
            self.srv.base_url
        )
    }

    fn url(&self, pool: &str, rest: &str, identifier: &str) -> String {
        format!(
            "{}/{rest}?{V}&identifier={}",
            self.ep(pool),
            urlencode(identifier)
        )
    }

    async fn put_pool(&self, name: &str, props: Value) {
        let url = format!(
            "{}/subscriptions/{SUB}/resourceGroups/default/providers/Microsoft.App/sessionPools/{name}?{V}",
            self.srv.base_url
        );
        let r = self
            .mgmt
            .put(url)
            .json(&json!({"location": "local", "properties": props}))
            .send()
            .await
            .expect("put pool");
        let status = r.status();
        assert!(
            status.is_success(),
            "{status}: {}",
            r.text().await.unwrap_or_default()
        );
    }

    async fn exec(&self, pool: &str, identifier: &str, cmd: &str) -> (u16, Value) {
        let r = self
            .data
            .post(self.url(pool, "executions", identifier))
            .json(&json!({"shellCommand": cmd}))
            .send()
            .await
            .expect("execute");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn stdout(&self, pool: &str, identifier: &str, cmd: &str) -> String {
        let (status, v) = self.exec(pool, identifier, cmd).await;
        assert_eq!(status, 200, "{v}");
        v["result"]["stdout"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn metrics(&self) -> String {
        let r = self
            .mgmt
            .get(format!("{}/metrics", self.srv.base_url))
            .send()
            .await
            .expect("metrics");
        r.text().await.expect("metrics text")
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[track_caller]
fn assert_error(status: u16, v: &Value, want_status: u16, code: &str) {
    assert_eq!(status, want_status, "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
}

macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(sandpool_server::testing::TestStore::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name(sandpool_server::testing::TestStore::Postgres).await
                }
            }
        )*
    };
}

both_stores!(
    tutorial_request_and_session_state,
    restart_keeps_the_session,
    store_contract
);

/// The tutorial's exact request; files persist within a session and not across identifiers;
/// the session API; async, legacy and timeouts.
async fn tutorial_request_and_session_state(store: TestStore) {
    let t = T::start(store).await;
    let r = t
        .data
        .post(t.url("default", "executions", "user-42"))
        .header("operation-id", "op-1")
        .json(&json!({"codeInputType":"inline","executionType":"synchronous","shellCommand":"echo Hello world!","timeoutInSeconds":600}))
        .send()
        .await
        .expect("execute");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["operation-id"], "op-1");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["id"], "op-1");
    assert_eq!(v["identifier"], "user-42");
    assert_eq!(v["executionType"], "Synchronous");
    assert_eq!(v["status"], "0");
    assert_eq!(v["result"]["stdout"], "Hello world!\n");
    assert_eq!(v["result"]["stderr"], "");
    assert_eq!(v["result"]["exitCode"], 0);
    assert_eq!(v["result"]["stdoutTruncated"], false);
    assert!(v["result"]["executionTimeInMilliseconds"].is_u64());

    // A file written by one execution is read by the next; another identifier does not see it.
    t.stdout("default", "user-42", "echo kept > note.txt").await;
    assert_eq!(
        t.stdout("default", "user-42", "cat /mnt/data/note.txt")
            .await,
        "kept\n"
    );
    let other = t
        .stdout("default", "user-43", "ls /mnt/data; echo end")
        .await;
    assert_eq!(other, "end\n");

    // Field names and enums case-insensitively, the properties wrapper, `code`, exit codes.
    let r = t
        .data
        .post(t.url("default", "executions", "user-42"))
        .json(&json!({"properties": {"EXECUTIONTYPE": "Synchronous", "code": "echo err >&2; exit 3"}}))
        .send()
        .await
        .expect("execute");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["status"], "3", "{v}");
    assert_eq!(v["result"]["stderr"], "err\n");

    // Timeout: status Failed with ExecutionTimedOut.
    let r = t
        .data
        .post(t.url("default", "executions", "user-42"))
        .json(&json!({"shellCommand": "sleep 30", "timeoutInSeconds": 1}))
        .send()
        .await
        .expect("execute");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["status"], "Failed", "{v}");
    assert_eq!(v["error"]["code"], "ExecutionTimedOut", "{v}");

    // Bad bodies and identifiers.
    for body in [
        json!({"shellCommand": "ls", "timeoutInSeconds": 0}),
        json!({"shellCommand": "ls", "timeoutInSeconds": 3601}),
        json!({"shellCommand": "ls", "executionType": "sometimes"}),
        json!({"timeoutInSeconds": 5}),
    ] {
        let r = t
            .data
            .post(t.url("default", "executions", "user-42"))
            .json(&body)
            .send()
            .await
            .expect("post");
        let s = r.status().as_u16();
        assert_error(
            s,
            &r.json().await.expect("json"),
            400,
            "InvalidRequestContent",
        );
    }
    for bad in ["abc", "has space", &"x".repeat(129)] {
        let (s, v) = t.exec("default", bad, "true").await;
        assert_eq!(s, 400, "{bad:?}: {v}");
        assert!(v["error"]["code"].is_string(), "{v}");
    }
    let (s, v) = t.exec("nosuchpool", "user-42", "true").await;
    assert_error(s, &v, 404, "ResourceNotFound");

    // Async: 202 + absolute Operation-Location, polled to completion.
    let r = t
        .data
        .post(t.url("default", "executions", "user-42"))
        .json(&json!({"shellCommand": "sleep 1; echo done", "executionType": "Asynchronous"}))
        .send()
        .await
        .expect("async");
    assert_eq!(r.status(), 202);
    let loc = r.headers()["operation-location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(loc.starts_with(&t.srv.base_url), "{loc}");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["status"], "Running");
    let mut last = Value::Null;
    for _ in 0..300 {
        last = t
            .data
            .get(&loc)
            .send()
            .await
            .expect("poll")
            .json()
            .await
            .expect("json");
        if last["status"] != "Running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last["status"], "0", "{last}");
    assert_eq!(last["result"]["stdout"], "done\n");
    assert_eq!(last["id"], v["id"]);

    // Legacy route, trailing slash.
    let r = t
        .data
        .post(format!("{}/code/execute/?{V}&identifier=user-42", t.ep("default")))
        .json(&json!({"properties": {"codeInputType": "inline", "executionType": "synchronous", "code": "echo legacy"}}))
        .send()
        .await
        .expect("legacy");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["properties"]["status"], "Success", "{v}");
    assert_eq!(v["properties"]["stdout"], "legacy\n");

    // Sessions: get, list, the .management forms, stop.
    let v: Value = t
        .data
        .get(t.url("default", "session", "user-42"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(v["identifier"], "user-42", "{v}");
    assert!(v["expiresAt"].is_string() && v["etag"].is_string());
    let v: Value = t
        .data
        .get(format!("{}/listSessions?{V}", t.ep("default")))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(v["count"], 2, "{v}");
    assert_eq!(v["value"].as_array().map(Vec::len), Some(2));
    let r = t
        .data
        .post(format!(
            "{}/.management/getSession?{V}&identifier=user-43",
            t.ep("default")
        ))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    let r = t
        .data
        .post(format!(
            "{}/.management/stopSession?{V}&identifier=user-43",
            t.ep("default")
        ))
        .send()
        .await
        .expect("stop");
    assert_eq!(r.status(), 204);
    let r = t
        .data
        .get(t.url("default", "session", "user-43"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    let r = t
        .data
        .delete(t.url("default", "session", "user-42"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 204);
    let v: Value = t
        .data
        .post(format!("{}/.management/listSessions?{V}", t.ep("default")))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(v["count"], 0, "{v}");

    // Deleting the pool destroys its sessions; its data plane is then 404.
    t.stdout("default", "user-44", "true").await;
    let r = t
        .mgmt
        .delete(format!("{}/subscriptions/{SUB}/resourceGroups/default/providers/Microsoft.App/sessionPools/default?{V}", t.srv.base_url))
        .send()
        .await
        .expect("delete pool");
    assert!(r.status().is_success());
    let (s, v) = t.exec("default", "user-44", "true").await;
    assert_error(s, &v, 404, "ResourceNotFound");
}

/// Kill the server mid-session and restart: the identifier finds its files.
async fn restart_keeps_the_session(store: TestStore) {
    let mut t = T::start(store).await;
    t.stdout("default", "survivor", "echo before > f.txt").await;
    t.srv.kill();
    t.srv.restart().await;
    t.clients();
    assert_eq!(
        t.stdout("default", "survivor", "cat f.txt").await,
        "before\n"
    );
}

/// The pool manager's store contract against the server's SQL store (a second connection to
/// the test server's database, whose manager runs no executions).
async fn store_contract(store: TestStore) {
    let t = T::start_with(store, |c| c.create_defaults = false).await;
    let db = sandpool_server::store::Store::open(&t.srv.database_url)
        .await
        .expect("opening the test database");
    sandpool_pools::testing::store_contract_tests(Arc::new(db)).await;
}

/// Cooldown: the session is gone after it and the identifier gets a fresh one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_cooldown_ends_sessions() {
    let t = T::start(TestStore::Sqlite).await;
    t.put_pool("cool", json!({"dynamicPoolConfiguration": {"lifecycleConfiguration": {"lifecycleType": "Timed", "cooldownPeriodInSeconds": 2}}, "scaleConfiguration": {"maxConcurrentSessions": 2, "readySessionInstances": 0}})).await;
    t.stdout("cool", "short-lived", "echo x > mark").await;
    assert_eq!(t.stdout("cool", "short-lived", "cat mark").await, "x\n");
    let mut gone = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = t
            .data
            .get(t.url("cool", "session", "short-lived"))
            .send()
            .await
            .expect("get");
        if r.status() == StatusCode::NOT_FOUND {
            gone = true;
            break;
        }
    }
    assert!(gone, "the session outlived its cooldown");
    assert_eq!(
        t.stdout("cool", "short-lived", "ls; echo end").await,
        "end\n"
    );
}

/// 50 concurrent first requests share one sandbox; beyond the limit 429 + Retry-After, then
/// success once a session ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_and_capacity() {
    let t = Arc::new(T::start(TestStore::Sqlite).await);
    t.put_pool(
        "cap",
        json!({"scaleConfiguration": {"maxConcurrentSessions": 2, "readySessionInstances": 0}}),
    )
    .await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            t.stdout("cap", "crowd", "cut -d' ' -f22 /proc/1/stat")
                .await
        }));
    }
    let mut seen = std::collections::HashSet::new();
    for task in tasks {
        seen.insert(task.await.expect("task"));
    }
    assert_eq!(seen.len(), 1, "one sandbox (one init start time): {seen:?}");
    let v: Value = t
        .data
        .get(format!("{}/listSessions?{V}", t.ep("cap")))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(v["count"], 1);

    t.stdout("cap", "second", "true").await;
    let r = t
        .data
        .post(t.url("cap", "executions", "third"))
        .json(&json!({"shellCommand": "true"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(retry >= 1);
    let v: Value = r.json().await.expect("json");
    assert!(v["error"]["code"].is_string());
    let r = t
        .data
        .delete(t.url("cap", "session", "crowd"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 204);
    assert_eq!(t.stdout("cap", "third", "echo in").await, "in\n");
}

/// SSE: `a` arrives before `b` is produced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_output_as_it_happens() {
    let t = T::start(TestStore::Sqlite).await;
    let r = t
        .data
        .post(t.url("default", "executions", "streamer"))
        .header("accept", "text/event-stream")
        // `b` is only produced after the marker file exists, which the test creates after it
        // has seen `a`: a buffered answer could never contain both.
        .json(&json!({"shellCommand": "echo a; while [ ! -e /mnt/data/go ]; do sleep 0.1; done; echo b", "timeoutInSeconds": 60}))
        .send()
        .await
        .expect("sse");
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .starts_with("text/event-stream"));
    let mut body = r.bytes_stream();
    let mut text = String::new();
    let mut released = false;
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
        if !released && text.contains("event: stdout\ndata: \"a\\n\"") {
            assert!(!text.contains("b\\n"));
            // Another request to the same session creates the marker.
            let r = t
                .data
                .post(t.url("default", "executions", "streamer"))
                .json(&json!({"shellCommand": "touch /mnt/data/go"}))
                .send()
                .await
                .expect("touch");
            assert_eq!(r.status(), 200);
            released = true;
        }
        if text.contains("event: result") && text.ends_with("\n\n") {
            break;
        }
    }
    assert!(released, "{text}");
    assert!(text.contains("data: \"b\\n\""), "{text}");
    let result = text
        .split("event: result\ndata: ")
        .nth(1)
        .expect("result event");
    let v: Value = serde_json::from_str(result.trim()).expect("result json");
    assert_eq!(v["result"]["stdout"], "a\nb\n");
}

/// Deterministic pseudo-random bytes (xorshift) so both ends can produce them without storing.
fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| {
            let mut x = (offset + i) / 8 + 0x9E37_79B9_7F4A_7C15;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> ((offset + i) % 8 * 8)) as u8
        })
        .collect()
}

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// 100 MiB up and down byte for byte with bounded memory; 413 above the limit; path rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_stream_and_paths() {
    const SIZE: u64 = 100 << 20;
    const CHUNK: usize = 256 << 10;
    let t = T::start(TestStore::Sqlite).await;
    // Warm the session and the allocator before measuring.
    t.stdout("default", "filer", "mkdir -p sub").await;
    let before = vm_rss_kib();
    let stream = futures::stream::iter(
        (0..SIZE / CHUNK as u64).map(|i| Ok::<_, std::io::Error>(pattern(i * CHUNK as u64, CHUNK))),
    );
    let part =
        reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(stream), SIZE)
            .file_name("big.bin");
    let form = reqwest::multipart::Form::new().part("file", part);
    let r = t
        .data
        .post(format!(
            "{}&path=/mnt/data/sub",
            t.url("default", "files", "filer")
        ))
        .multipart(form)
        .send()
        .await
        .expect("upload");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["name"], "big.bin");
    assert_eq!(v["sizeInBytes"], SIZE);
    assert_eq!(v["type"], "File");
    assert_eq!(v["directory"], "/mnt/data/sub");

    let r = t
        .data
        .get(
            t.url("default", "files/big.bin/content", "filer")
                .replace("?", "?path=sub&"),
        )
        .send()
        .await
        .expect("download");
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let mut off = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("chunk");
        assert!(
            chunk[..] == pattern(off, chunk.len())[..],
            "content differs near byte {off}"
        );
        off += chunk.len() as u64;
    }
    assert_eq!(off, SIZE);
    let grown = vm_rss_kib().saturating_sub(before);
    assert!(
        grown < 32 * 1024,
        "RSS grew by {grown} KiB during a 100 MiB round trip"
    );
    assert_eq!(
        t.stdout(
            "default",
            "filer",
            "sha256sum sub/big.bin | cut -c1-8; stat -c %s sub/big.bin"
        )
        .await
        .lines()
        .nth(1),
        Some(SIZE.to_string().as_str())
    );

    // List, metadata, legacy routes, delete.
    let small = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"hi".to_vec()).file_name("s.txt"),
    );
    let r = t
        .data
        .post(t.url("default", "files/upload", "filer"))
        .multipart(small)
        .send()
        .await
        .expect("legacy upload");
    assert_eq!(r.status(), 200);
    let v: Value = t
        .data
        .get(t.url("default", "files", "filer"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let names: Vec<&str> = v["value"]
        .as_array()
        .expect("value")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert!(names.contains(&"s.txt") && names.contains(&"sub"), "{v}");
    let v: Value = t
        .data
        .get(format!(
            "{}&recursive=true",
            t.url("default", "files", "filer")
        ))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert!(
        v["value"]
            .as_array()
            .expect("value")
            .iter()
            .any(|f| f["name"] == "big.bin"),
        "{v}"
    );
    let v: Value = t
        .data
        .get(t.url("default", "files/s.txt", "filer"))
        .send()
        .await
        .expect("meta")
        .json()
        .await
        .expect("json");
    assert_eq!(v["sizeInBytes"], 2);
    assert_eq!(v["contentType"], "text/plain");
    let body = t
        .data
        .get(t.url("default", "files/content/s.txt", "filer"))
        .send()
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(&body[..], b"hi");
    let r = t
        .data
        .delete(t.url("default", "files/s.txt", "filer"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 204);
    let r = t
        .data
        .get(t.url("default", "files/s.txt", "filer"))
        .send()
        .await
        .expect("meta");
    assert_eq!(r.status(), 404);

    // Path rules: traversal, other absolute paths, symlinks out of /mnt/data.
    t.stdout("default", "filer", "ln -s /etc escape").await;
    for (rest, path) in [
        ("files/passwd/content", "/etc"),
        ("files/passwd/content", "../../etc"),
        ("files/passwd/content", "escape"),
        ("files", "/mnt/data/../etc"),
    ] {
        let r = t
            .data
            .get(format!(
                "{}&path={}",
                t.url("default", rest, "filer"),
                urlencode(path)
            ))
            .send()
            .await
            .expect("get");
        let s = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(s, 400, "{path}: {v}");
        assert!(v["error"]["code"].is_string(), "{v}");
    }
    let r = t
        .data
        .get(t.url("default", "files/..%2F..%2Fetc%2Fpasswd/content", "filer"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_upload_is_413() {
    let t = T::start_with(TestStore::Sqlite, |c| c.max_upload_size = 1 << 20).await;
    let part = reqwest::multipart::Part::bytes(vec![7u8; 3 << 20]).file_name("big.bin");
    let r = t
        .data
        .post(t.url("default", "files", "uploader"))
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .expect("upload");
    let s = r.status().as_u16();
    let v: Value = r.json().await.expect("json");
    assert_error(s, &v, 413, "PayloadTooLarge");
    assert_eq!(
        t.stdout("default", "uploader", "ls; echo end").await,
        "end\n"
    );
}

/// A pool with 5 ready sandboxes serves a new identifier's first command from one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_sandboxes_serve_first_requests() {
    let t = T::start(TestStore::Sqlite).await;
    t.put_pool(
        "warm",
        json!({"scaleConfiguration": {"maxConcurrentSessions": 6, "readySessionInstances": 5}}),
    )
    .await;
    let series = "sandpool_pool_ready_sessions{pool=\"/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/default/providers/microsoft.app/sessionpools/warm\"}";
    let mut ready = 0.0;
    for _ in 0..300 {
        ready = metric(&t.metrics().await, series);
        if ready >= 5.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready, 5.0);
    let m = t.metrics().await;
    let from_ready = metric(&m, "sandpool_session_allocations_total{source=\"ready\"}");
    let on_demand = metric(
        &m,
        "sandpool_session_allocations_total{source=\"on_demand\"}",
    );
    assert_eq!(t.stdout("warm", "warm-user", "echo hi").await, "hi\n");
    let m = t.metrics().await;
    assert_eq!(
        metric(&m, "sandpool_session_allocations_total{source=\"ready\"}"),
        from_ready + 1.0
    );
    assert_eq!(
        metric(
            &m,
            "sandpool_session_allocations_total{source=\"on_demand\"}"
        ),
        on_demand
    );
    assert!(
        m.contains("sandpool_executions_total{outcome=\"succeeded\"}"),
        "{m}"
    );
    assert!(m.contains("sandpool_execution_duration_seconds_count"));
}
