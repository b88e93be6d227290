//! The session data plane over real HTTP with real sandboxes (root required): executions (sync,
//! async, SSE, legacy), files (streamed 100 MiB round trip, limits, path rules), sessions,
//! lifecycle, capacity, ready sandboxes, restart, and the SQL session store contract.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{urlencode, Api, Resp};
use futures::StreamExt;
use reqwest::Method;
use sandpool_server::testing::{TestServer, TestStore};
use serde_json::{json, Value};

const V: &str = "api-version=2024-10-02-preview";
const SUB: &str = sandpool_server::DEFAULT_SUBSCRIPTION;

/// A test server, the admin's checked client and a plain session-token client for streams.
struct T {
    api: Api,
    data: reqwest::Client,
    _turn: Turn,
}

/// Servers of this binary share one process: a test that measures the process's memory runs
/// alone ([`T::start_alone`]), the others side by side.
static TURNS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

enum Turn {
    Shared(#[allow(dead_code)] tokio::sync::RwLockReadGuard<'static, ()>),
    Alone(#[allow(dead_code)] tokio::sync::RwLockWriteGuard<'static, ()>),
}

impl T {
    async fn start(store: TestStore) -> T {
        Self::start_with(store, |_| {}).await
    }

    async fn start_with(store: TestStore, f: impl FnOnce(&mut sandpool_server::ServeConfig)) -> T {
        let turn = Turn::Shared(TURNS.read().await);
        Self::launch(store, f, turn).await
    }

    /// Waits until no other server of this binary runs, and keeps it so until dropped.
    async fn start_alone(store: TestStore) -> T {
        let turn = Turn::Alone(TURNS.write().await);
        Self::launch(store, |_| {}, turn).await
    }

    async fn launch(
        store: TestStore,
        f: impl FnOnce(&mut sandpool_server::ServeConfig),
        turn: Turn,
    ) -> T {
        let srv = TestServer::start_with(store, f).await;
        let data = srv.sessions_client();
        T {
            api: Api::from(srv),
            data,
            _turn: turn,
        }
    }

    fn srv(&self) -> &TestServer {
        &self.api.srv
    }

    /// The pool management endpoint of `pool` in group `default`.
    fn ep(&self, pool: &str) -> String {
        format!(
            "{}/subscriptions/{SUB}/resourceGroups/default/sessionPools/{pool}",
            self.srv().base_url
        )
    }

    fn url(&self, pool: &str, rest: &str, identifier: &str) -> String {
        format!(
            "{}/{rest}?{V}&identifier={}",
            self.ep(pool),
            urlencode(identifier)
        )
    }

    /// `method` `url` as the admin (a session token on the data plane), checked for the API's
    /// conventions; `body` as JSON.
    async fn call(&self, method: Method, url: &str, body: Option<Value>) -> Resp {
        let body = body.map(|b| serde_json::to_vec(&b).expect("json"));
        self.api.raw(method, url, body, &[]).await
    }

    async fn put_pool(&self, name: &str, props: Value) {
        let url = format!(
            "{}/subscriptions/{SUB}/resourceGroups/default/providers/Microsoft.App/sessionPools/{name}?{V}",
            self.srv().base_url
        );
        let r = self
            .call(
                Method::PUT,
                &url,
                Some(json!({"location": "local", "properties": props})),
            )
            .await;
        assert!(
            r.status == 200 || r.status == 201,
            "{}: {}",
            r.status,
            r.text
        );
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
        r.json["result"]["stdout"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn metrics(&self) -> String {
        let url = format!("{}/metrics", self.srv().base_url);
        let r = self.call(Method::GET, &url, None).await;
        r.assert_status(200);
        r.text
    }
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
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
    let execute = |identifier: &'static str, body: Value| {
        let url = t.url("default", "executions", identifier);
        let t = &t;
        async move { t.call(Method::POST, &url, Some(body)).await }
    };
    let r = t
        .api
        .raw(
            Method::POST,
            &t.url("default", "executions", "user-42"),
            Some(br#"{"codeInputType":"inline","executionType":"synchronous","shellCommand":"echo Hello world!","timeoutInSeconds":600}"#.to_vec()),
            &[("operation-id", "op-1")],
        )
        .await;
    r.assert_status(200);
    assert_eq!(r.header("operation-id"), Some("op-1"));
    let v = &r.json;
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
    let r = execute(
        "user-42",
        json!({"properties": {"EXECUTIONTYPE": "Synchronous", "code": "echo err >&2; exit 3"}}),
    )
    .await;
    assert_eq!(r.json["status"], "3", "{}", r.text);
    assert_eq!(r.json["result"]["stderr"], "err\n");

    // Timeout: status Failed with ExecutionTimedOut.
    let r = execute(
        "user-42",
        json!({"shellCommand": "sleep 30", "timeoutInSeconds": 1}),
    )
    .await;
    assert_eq!(r.json["status"], "Failed", "{}", r.text);
    assert_eq!(r.json["error"]["code"], "ExecutionTimedOut", "{}", r.text);

    // Bad bodies and identifiers.
    for body in [
        json!({"shellCommand": "ls", "timeoutInSeconds": 0}),
        json!({"shellCommand": "ls", "timeoutInSeconds": 3601}),
        json!({"shellCommand": "ls", "executionType": "sometimes"}),
        json!({"timeoutInSeconds": 5}),
    ] {
        execute("user-42", body)
            .await
            .assert_error(400, "InvalidRequestContent");
    }
    for bad in ["abc", "has space", &"x".repeat(129)] {
        t.exec("default", bad, "true")
            .await
            .assert_error(400, "InvalidSessionIdentifier");
    }
    t.exec("nosuchpool", "user-42", "true")
        .await
        .assert_error(404, "ResourceNotFound");

    // Async: 202 + absolute Operation-Location, polled to completion.
    let r = execute(
        "user-42",
        json!({"shellCommand": "sleep 1; echo done", "executionType": "Asynchronous"}),
    )
    .await;
    r.assert_status(202);
    let loc = r
        .header("operation-location")
        .expect("Operation-Location")
        .to_owned();
    assert!(loc.starts_with(&t.srv().base_url), "{loc}");
    assert_eq!(r.json["status"], "Running");
    let mut last = Value::Null;
    for _ in 0..300 {
        last = t.call(Method::GET, &loc, None).await.json;
        if last["status"] != "Running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last["status"], "0", "{last}");
    assert_eq!(last["result"]["stdout"], "done\n");
    assert_eq!(last["id"], r.json["id"]);
    assert_eq!(last["executionType"], "Asynchronous");
    // A synchronous one, read back by its operation-id, says how it was submitted.
    let sync = t
        .call(
            Method::GET,
            &t.url("default", "executions/op-1", "user-42"),
            None,
        )
        .await;
    sync.assert_status(200);
    assert_eq!(sync.json["executionType"], "Synchronous", "{}", sync.text);
    assert_eq!(sync.json["result"]["stdout"], "Hello world!\n");

    // Legacy route, trailing slash.
    let r = t
        .call(
            Method::POST,
            &format!("{}/code/execute/?{V}&identifier=user-42", t.ep("default")),
            Some(json!({"properties": {"codeInputType": "inline", "executionType": "synchronous", "code": "echo legacy"}})),
        )
        .await;
    r.assert_status(200);
    assert_eq!(r.json["properties"]["status"], "Success", "{}", r.text);
    assert_eq!(r.json["properties"]["stdout"], "legacy\n");

    // Sessions: get, list, the .management forms, stop.
    let r = t
        .call(Method::GET, &t.url("default", "session", "user-42"), None)
        .await;
    r.assert_status(200);
    assert_eq!(r.json["identifier"], "user-42", "{}", r.text);
    assert!(r.json["expiresAt"].is_string() && r.json["etag"].is_string());
    let list = format!("{}/listSessions?{V}", t.ep("default"));
    let r = t.call(Method::GET, &list, None).await;
    assert_eq!(r.json["count"], 2, "{}", r.text);
    assert_eq!(r.json["value"].as_array().map(Vec::len), Some(2));
    let management = |action: &str, identifier: &str| {
        format!(
            "{}/.management/{action}?{V}&identifier={identifier}",
            t.ep("default")
        )
    };
    t.call(Method::POST, &management("getSession", "user-43"), None)
        .await
        .assert_status(200);
    t.call(Method::POST, &management("stopSession", "user-43"), None)
        .await
        .assert_status(204);
    t.call(Method::GET, &t.url("default", "session", "user-43"), None)
        .await
        .assert_status(404);
    t.call(
        Method::DELETE,
        &t.url("default", "session", "user-42"),
        None,
    )
    .await
    .assert_status(204);
    let r = t
        .call(
            Method::POST,
            &format!("{}/.management/listSessions?{V}", t.ep("default")),
            None,
        )
        .await;
    assert_eq!(r.json["count"], 0, "{}", r.text);

    // Deleting the pool destroys its sessions; its data plane is then 404.
    t.stdout("default", "user-44", "true").await;
    let r = t
        .call(
            Method::DELETE,
            &format!("{}/subscriptions/{SUB}/resourceGroups/default/providers/Microsoft.App/sessionPools/default?{V}", t.srv().base_url),
            None,
        )
        .await;
    assert!(r.status < 300, "{}", r.text);
    t.exec("default", "user-44", "true")
        .await
        .assert_error(404, "ResourceNotFound");
}

/// Kill the server mid-session and restart: the identifier finds its files.
async fn restart_keeps_the_session(store: TestStore) {
    let mut t = T::start(store).await;
    t.stdout("default", "survivor", "echo before > f.txt").await;
    t.api.srv.kill();
    t.api.srv.restart().await;
    assert_eq!(
        t.stdout("default", "survivor", "cat f.txt").await,
        "before\n"
    );
}

/// The pool manager's store contract against the server's SQL store (a second connection to
/// the test server's database, whose manager runs no executions).
async fn store_contract(store: TestStore) {
    let t = T::start_with(store, |c| c.create_defaults = false).await;
    let db = sandpool_server::store::Store::open(&t.srv().database_url)
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
            .call(Method::GET, &t.url("cool", "session", "short-lived"), None)
            .await;
        if r.status == 404 {
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
    // Fifty requests at once on one identifier: above the default bound of executions at once
    // per session (tests/limits.rs covers that bound), so it is raised here.
    let t =
        Arc::new(T::start_with(TestStore::Sqlite, |c| c.limits.max_session_executions = 50).await);
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
    let r = t
        .call(
            Method::GET,
            &format!("{}/listSessions?{V}", t.ep("cap")),
            None,
        )
        .await;
    assert_eq!(r.json["count"], 1, "{}", r.text);

    t.stdout("cap", "second", "true").await;
    let r = t.exec("cap", "third", "true").await;
    r.assert_status(429);
    assert!(r.json["error"]["code"].is_string(), "{}", r.text);
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!(retry >= 1);
    t.call(Method::DELETE, &t.url("cap", "session", "crowd"), None)
        .await
        .assert_status(204);
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
            t.stdout("default", "streamer", "touch /mnt/data/go").await;
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
    // VmRSS is the whole test process's: other tests' servers must not run meanwhile.
    let t = T::start_alone(TestStore::Sqlite).await;
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
    let get = |rest: &str, query: &str| {
        let url = format!("{}{query}", t.url("default", rest, "filer"));
        let t = &t;
        async move { t.call(Method::GET, &url, None).await }
    };
    let r = get("files", "").await;
    let names: Vec<&str> = r.json["value"]
        .as_array()
        .expect("value")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert!(
        names.contains(&"s.txt") && names.contains(&"sub"),
        "{}",
        r.text
    );
    let r = get("files", "&recursive=true").await;
    assert!(
        r.json["value"]
            .as_array()
            .expect("value")
            .iter()
            .any(|f| f["name"] == "big.bin"),
        "{}",
        r.text
    );
    let r = get("files/s.txt", "").await;
    assert_eq!(r.json["sizeInBytes"], 2, "{}", r.text);
    assert_eq!(r.json["contentType"], "text/plain");
    let r = get("files/content/s.txt", "").await;
    r.assert_status(200);
    assert_eq!(r.text, "hi");
    t.call(
        Method::DELETE,
        &t.url("default", "files/s.txt", "filer"),
        None,
    )
    .await
    .assert_status(204);
    get("files/s.txt", "").await.assert_status(404);

    // Path rules: traversal, other absolute paths, symlinks out of /mnt/data, an encoded
    // traversal in the name: 400 with the error body.
    t.stdout("default", "filer", "ln -s /etc escape").await;
    for (rest, path) in [
        ("files/passwd/content", "/etc"),
        ("files/passwd/content", "../../etc"),
        ("files/passwd/content", "escape"),
        ("files", "/mnt/data/../etc"),
    ] {
        get(rest, &format!("&path={}", urlencode(path)))
            .await
            .assert_error(400, "InvalidPath");
    }
    get("files/..%2F..%2Fetc%2Fpasswd/content", "")
        .await
        .assert_error(400, "InvalidPath");
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
    Resp::read(r).await.assert_error(413, "PayloadTooLarge");
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
