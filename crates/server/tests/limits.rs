//! The bounds a shared host needs, over real HTTP on loopback (root required for the tests
//! that run sandboxes): slow and stalled clients are cut off, pools and clusters beyond the
//! host's bounds are refused naming the bound, executions at once per session and queued Run
//! Command commands are bounded with 429 + Retry-After, Run Command bodies are capped.

mod common;

use common::{Api, Resp, SUB, V};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use reqwest::Method;
use sandpool_server::limits::{HttpTimeouts, Limits};
use sandpool_server::testing::{TestServer, TestStore};
use serde_json::{json, Value};

async fn start(limits: Limits, configure: impl FnOnce(&mut sandpool_server::ServeConfig)) -> Api {
    let srv = TestServer::start_with(TestStore::Sqlite, |c| {
        c.create_defaults = false;
        c.limits = limits;
        configure(c);
    })
    .await;
    Api::from(srv)
}

fn short_timeouts() -> Limits {
    Limits {
        http: HttpTimeouts {
            header_read: Duration::from_secs(1),
            body_idle: Duration::from_secs(1),
            request: Duration::from_secs(3600),
        },
        ..Limits::default()
    }
}

fn addr(api: &Api) -> String {
    api.srv
        .base_url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

/// Sends `prefix`, then one byte of `trickle` every 100 ms; returns whether the server closed
/// the connection before the trickle ran out (a liveness bound of 30 s, not a timing check).
fn trickle_until_closed(addr: &str, prefix: &[u8], trickle: &[u8]) -> (bool, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    s.write_all(prefix).expect("prefix");
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    for b in trickle.iter().cycle() {
        if Instant::now() > deadline {
            return (false, got);
        }
        if s.write_all(std::slice::from_ref(b)).is_err() {
            return (true, got);
        }
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(0) => return (true, got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return (true, got),
        }
    }
    (false, got)
}

/// A client that sends its headers byte by byte is cut off, on the public token endpoint too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off() {
    let api = start(short_timeouts(), |_| {}).await;
    let addr = addr(&api);
    for path in ["/oauth2/token", "/healthz"] {
        let prefix = format!("POST {path} HTTP/1.1\r\nHost: x\r\n");
        let (closed, _) = tokio::task::spawn_blocking({
            let addr = addr.clone();
            move || trickle_until_closed(&addr, prefix.as_bytes(), b"X-Slow: aaaaaaaaaaaaaaaa\r\n")
        })
        .await
        .expect("trickle");
        assert!(
            closed,
            "{path}: a client trickling headers kept the connection"
        );
    }
    // The server still answers everyone else.
    let r = api
        .http
        .get(format!("{}/healthz", api.srv.base_url))
        .send()
        .await;
    assert!(r.is_ok_and(|r| r.status().is_success()));
}

/// A body that stalls is answered 408 `RequestTimeout` with the error body (management API), or
/// cut off (token endpoint), instead of holding the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_are_cut_off() {
    let api = start(short_timeouts(), |_| {}).await;
    let addr = addr(&api);
    let token = api.admin_auth(&api.url("/subscriptions"));
    let cases = [
        format!(
            "PUT /subscriptions/{SUB}/resourcegroups/stall?{V} HTTP/1.1\r\nHost: x\r\n\
             Authorization: {token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"loc"
        ),
        "POST /oauth2/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: 100\r\n\r\ngrant_type=cli"
            .to_owned(),
    ];
    for (i, request) in cases.into_iter().enumerate() {
        let addr = addr.clone();
        let (closed, answer) = tokio::task::spawn_blocking(move || {
            let mut s = TcpStream::connect(&addr).expect("connect");
            s.write_all(request.as_bytes()).expect("request");
            // Nothing more is sent: read what comes back until the server closes or 30 s pass.
            s.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            let mut got = Vec::new();
            let closed = loop {
                let mut buf = [0u8; 4096];
                match s.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(n) => {
                        got.extend_from_slice(&buf[..n]);
                        if got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"}") {
                            break true;
                        }
                    }
                    Err(_) => break false,
                }
            };
            (closed, String::from_utf8_lossy(&got).into_owned())
        })
        .await
        .expect("stall");
        assert!(
            closed,
            "case {i}: a stalled body held the connection: {answer}"
        );
        if i == 0 {
            assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
            assert!(answer.contains("\"code\":\"RequestTimeout\""), "{answer}");
        } else if !answer.is_empty() {
            assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
        }
    }
}

fn bounded() -> Limits {
    Limits {
        max_pool_sessions: 5,
        max_ready_sessions: 2,
        max_session_cpu_millicores: 1000,
        max_session_memory_bytes: 1 << 30,
        max_session_pids: 100,
        ..Limits::default()
    }
}

async fn put(api: &Api, path: &str, body: Value) -> Resp {
    api.raw(
        Method::PUT,
        &api.url(path),
        Some(serde_json::to_vec(&body).expect("json")),
        &[],
    )
    .await
}

/// Pools and clusters beyond the host's bounds get 400 `LimitExceeded` naming the property and
/// the flag; at the bounds they are accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_and_clusters_beyond_the_bounds_are_refused() {
    let api = start(bounded(), |_| {}).await;
    put(
        &api,
        &format!("/subscriptions/{SUB}/resourcegroups/b"),
        json!({"location": "x"}),
    )
    .await
    .assert_status(201);
    let pool =
        format!("/subscriptions/{SUB}/resourceGroups/b/providers/Microsoft.App/sessionPools/p");
    let with = |scale: Value, resources: Value| {
        json!({"location": "x", "properties": {
            "poolManagementType": "Dynamic", "containerType": "Shell",
            "scaleConfiguration": scale,
            "customContainerTemplate": {"containers": [{"resources": resources}]}}})
    };
    let refused = [
        (
            with(json!({"maxConcurrentSessions": 6}), json!({})),
            "properties.scaleConfiguration.maxConcurrentSessions",
            "--max-pool-sessions",
        ),
        (
            with(
                json!({"maxConcurrentSessions": 5, "readySessionInstances": 3}),
                json!({}),
            ),
            "properties.scaleConfiguration.readySessionInstances",
            "--max-ready-sessions",
        ),
        (
            with(json!({"maxConcurrentSessions": 1}), json!({"cpu": 1.5})),
            "properties.customContainerTemplate.containers[0].resources.cpu",
            "--max-session-cpus",
        ),
        (
            with(
                json!({"maxConcurrentSessions": 1}),
                json!({"memory": "2Gi"}),
            ),
            "properties.customContainerTemplate.containers[0].resources.memory",
            "--max-session-memory",
        ),
    ];
    for (body, target, flag) in refused {
        let r = put(&api, &pool, body).await;
        r.assert_error(400, "LimitExceeded");
        assert_eq!(r.json["error"]["target"], target, "{}", r.text);
        assert!(r.text.contains(flag), "{}", r.text);
    }
    let r = put(
        &api,
        &pool,
        with(
            json!({"maxConcurrentSessions": 5, "readySessionInstances": 0}),
            json!({"cpu": 1, "memory": "1Gi"}),
        ),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // A PATCH past a bound is refused too.
    let r = api
        .raw(
            Method::PATCH,
            &api.url(&pool),
            Some(
                serde_json::to_vec(
                    &json!({"properties": {"scaleConfiguration": {"maxConcurrentSessions": 50}}}),
                )
                .expect("json"),
            ),
            &[],
        )
        .await;
    r.assert_error(400, "LimitExceeded");

    let cluster = format!(
        "/subscriptions/{SUB}/resourceGroups/b/providers/Microsoft.ContainerService/managedClusters/c"
    );
    for (limits, target) in [
        (json!({"pids": 101}), "properties.limits.pids"),
        (json!({"cpu": 2}), "properties.limits.cpu"),
        (json!({"memory": "4Gi"}), "properties.limits.memory"),
    ] {
        let r = put(
            &api,
            &cluster,
            json!({"location": "x", "properties": {"limits": limits}}),
        )
        .await;
        r.assert_error(400, "LimitExceeded");
        assert_eq!(r.json["error"]["target"], target, "{}", r.text);
    }
    let r = put(
        &api,
        &cluster,
        json!({"location": "x", "properties": {"limits": {"pids": 100, "cpu": 1, "memory": "1Gi"}}}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

/// Beyond the bound of executions at once in a session: 429 `TooManyConcurrentExecutions` with
/// `Retry-After` and the error body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_at_once_per_session_are_bounded() {
    let limits = Limits {
        max_session_executions: 1,
        ..Limits::default()
    };
    let api = start(limits, |c| c.create_defaults = true).await;
    let ep = format!(
        "{}/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/default/sessionPools/default",
        api.srv.base_url
    );
    let url = format!("{ep}/executions?{V}&identifier=busy");
    let exec = |body: Value| {
        let api = &api;
        let url = url.clone();
        async move {
            api.raw(
                Method::POST,
                &url,
                Some(serde_json::to_vec(&body).expect("json")),
                &[],
            )
            .await
        }
    };
    let r = exec(json!({"shellCommand": "sleep 30", "executionType": "Asynchronous"})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let r = exec(json!({"shellCommand": "echo second"})).await;
    r.assert_error(429, "TooManyConcurrentExecutions");
    assert!(r.header("retry-after").is_some());
    // Ending the session ends the running command and frees its slot.
    let del = format!("{ep}/session?{V}&identifier=busy");
    let r = api.raw(Method::DELETE, &del, None, &[]).await;
    assert!(r.status == 204 || r.status == 200, "{}", r.text);
    let r = exec(json!({"shellCommand": "echo again"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// Run Command: a body above the cap is 413 `PayloadTooLarge`; beyond the queue bound 429
/// `TooManyQueuedCommands` with `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_command_bodies_and_queue_are_bounded() {
    let limits = Limits {
        max_run_command_body: 4096,
        max_queued_commands: 1,
        ..Limits::default()
    };
    let api = start(limits, |c| c.command_concurrency = 1).await;
    put(
        &api,
        &format!("/subscriptions/{SUB}/resourcegroups/rc"),
        json!({"location": "x"}),
    )
    .await
    .assert_status(201);
    let cluster = format!(
        "/subscriptions/{SUB}/resourceGroups/rc/providers/Microsoft.ContainerService/managedClusters/c"
    );
    let r = put(&api, &cluster, json!({"location": "x", "properties": {}})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let run = |body: Value| {
        let api = &api;
        let url = api.url(&format!("{cluster}/runCommand"));
        async move {
            api.raw(
                Method::POST,
                &url,
                Some(serde_json::to_vec(&body).expect("json")),
                &[],
            )
            .await
        }
    };
    let big = "A".repeat(8192);
    run(json!({"command": "true", "context": big}))
        .await
        .assert_error(413, "PayloadTooLarge");

    let r = run(json!({"command": "sleep 20", "context": ""})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    // Once the first runs, one may wait; the next is refused.
    let metrics = format!("{}/metrics", api.srv.base_url);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = api
            .http
            .get(&metrics)
            .header("authorization", api.admin_auth(&metrics))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        if text.contains("sandpool_runcommand_running 1") {
            break;
        }
        assert!(Instant::now() < deadline, "the first command never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = run(json!({"command": "true", "context": ""})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let r = run(json!({"command": "true", "context": ""})).await;
    r.assert_error(429, "TooManyQueuedCommands");
    assert!(r.header("retry-after").is_some());
}
