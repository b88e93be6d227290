//! The client against a real sandpool server on a loopback port (and, for what a server must
//! not be trusted with, against a raw socket that records what the client sent).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use sandpool_client::{ids, Client, ClientError, PoolSpec, StaticToken, DEFAULT_SUBSCRIPTION};
use sandpool_server::testing::{TestServer, TestStore};
use serde_json::json;

/// A client of `server` carrying the local admin's management token (auth is on).
fn client(server: &TestServer) -> Client {
    let header = server.admin_header();
    let token = header.trim_start_matches("Bearer ").to_string();
    Client::new(&server.base_url)
        .unwrap()
        .with_token(std::sync::Arc::new(sandpool_client::StaticToken::new(
            token,
        )))
        .with_polling(Duration::from_millis(50), Duration::from_secs(60))
}

#[tokio::test]
async fn resource_group_crud_follows_the_delete_operation() {
    let server = TestServer::start(TestStore::Sqlite).await;
    let c = client(&server);
    let g = c
        .create_group("rg-client-1", "westeurope", None)
        .await
        .unwrap();
    assert_eq!(g.name, "rg-client-1");
    assert_eq!(g.location.as_deref(), Some("westeurope"));
    assert_eq!(
        g.id,
        format!("/subscriptions/{DEFAULT_SUBSCRIPTION}/resourceGroups/rg-client-1")
    );
    assert_eq!(
        c.get_group("RG-CLIENT-1").await.unwrap().name,
        "rg-client-1"
    );
    let names: Vec<String> = c
        .list_groups()
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert!(
        names.contains(&"rg-client-1".to_string()) && names.contains(&"default".to_string()),
        "{names:?}"
    );

    c.delete_group("rg-client-1").await.unwrap();
    let err = c.get_group("rg-client-1").await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert_eq!(err.code(), Some("ResourceGroupNotFound"));
}

#[tokio::test]
async fn pool_create_show_update_list_delete() {
    let server = TestServer::start(TestStore::Sqlite).await;
    let c = client(&server);
    c.create_group("rg-pools", "here", None).await.unwrap();
    let spec = PoolSpec {
        max_sessions: Some(4),
        ready_sessions: Some(0),
        cooldown_seconds: Some(120),
        network_status: Some("EgressDisabled".into()),
        ..Default::default()
    };
    let p = c
        .create_pool("rg-pools", "p1", &spec.create_body("here"))
        .await
        .unwrap();
    assert_eq!(
        p.id,
        ids::session_pool(DEFAULT_SUBSCRIPTION, "rg-pools", "p1")
    );
    assert_eq!(
        p.properties["scaleConfiguration"]["maxConcurrentSessions"],
        4
    );
    assert_eq!(p.properties["provisioningState"], "Succeeded");
    let endpoint = p.properties["poolManagementEndpoint"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        endpoint.ends_with("/resourceGroups/rg-pools/sessionPools/p1"),
        "{endpoint}"
    );

    let patch = PoolSpec {
        max_sessions: Some(6),
        ..Default::default()
    }
    .patch_body();
    let updated = c.update_pool("rg-pools", "p1", &patch).await.unwrap();
    assert_eq!(
        updated.properties["scaleConfiguration"]["maxConcurrentSessions"],
        6
    );
    assert_eq!(
        c.get_pool("rg-pools", "p1").await.unwrap().properties["dynamicPoolConfiguration"]
            ["lifecycleConfiguration"]["cooldownPeriodInSeconds"],
        120
    );

    let in_group: Vec<String> = c
        .list_pools(Some("rg-pools"))
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(in_group, ["p1"]);
    let everywhere: Vec<String> = c
        .list_pools(None)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert!(everywhere.contains(&"p1".to_string()) && everywhere.contains(&"default".to_string()));

    c.delete_pool("rg-pools", "p1").await.unwrap();
    let err = c.get_pool("rg-pools", "p1").await.unwrap_err();
    assert_eq!(err.status(), Some(404));
    assert_eq!(err.code(), Some("ResourceNotFound"));
}

#[tokio::test]
async fn server_errors_carry_code_and_message() {
    let server = TestServer::start(TestStore::Sqlite).await;
    let c = client(&server);
    c.create_group("rg-err", "here", None).await.unwrap();
    let bad = json!({"location": "here", "properties": {"poolManagementType": "Manual", "containerType": "Shell"}});
    let err = c.create_pool("rg-err", "p", &bad).await.unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert_eq!(err.code(), Some("UnsupportedPoolManagementType"));
    assert!(err.to_string().contains("Dynamic"), "{err}");

    let err = c
        .create_pool(
            "rg-err",
            "Bad_Name",
            &PoolSpec::default().create_body("here"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(
        err.code().is_some_and(|c| c.starts_with("Invalid")),
        "{err:?}"
    );
}

#[tokio::test]
async fn identities_and_clusters() {
    let server = TestServer::start(TestStore::Sqlite).await;
    let c = client(&server);
    c.create_group("rg-id", "here", None).await.unwrap();
    let id = c.create_identity("rg-id", "uami", "here").await.unwrap();
    let principal = id.properties["principalId"].as_str().unwrap_or_default();
    assert!(
        uuid::Uuid::parse_str(principal).is_ok(),
        "{}",
        id.properties
    );
    assert_eq!(c.list_identities(Some("rg-id")).await.unwrap().len(), 1);
    c.delete_identity("rg-id", "uami").await.unwrap();
    assert!(c
        .get_identity("rg-id", "uami")
        .await
        .unwrap_err()
        .is_not_found());

    let body = json!({"location": "here", "properties": {"limits": {"cpu": 0.5, "memory": "256Mi", "pids": 64}}});
    let cl = c.create_cluster("rg-id", "target", &body).await.unwrap();
    assert_eq!(cl.properties["limits"]["memory"], "256Mi");
    assert_eq!(
        c.get_cluster("rg-id", "target").await.unwrap().name,
        "target"
    );
    assert_eq!(c.list_clusters(None).await.unwrap().len(), 1);
    c.delete_cluster("rg-id", "target").await.unwrap();
    assert!(c
        .get_cluster("rg-id", "target")
        .await
        .unwrap_err()
        .is_not_found());
}

#[tokio::test]
async fn tutorial_template_deploys_a_pool() {
    let server = TestServer::start(TestStore::Sqlite).await;
    let c = client(&server);
    c.create_group("rg-dep", "North Central US", None)
        .await
        .unwrap();
    let text = include_str!("../../template/tests/fixtures/tutorial.json");
    let template = sandpool_template::parse(text).unwrap();
    let dep = c
        .create_deployment("rg-dep", "deploy", template, None)
        .await
        .unwrap();
    assert_eq!(dep["properties"]["provisioningState"], "Succeeded", "{dep}");
    let pool = c
        .get(&ids::session_pool(
            DEFAULT_SUBSCRIPTION,
            "rg-dep",
            "myshellpool",
        ))
        .await
        .unwrap();
    // The server may normalise locations as ARM does ("North Central US" → "northcentralus").
    let loc = pool["location"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase()
        .replace(' ', "");
    assert_eq!(loc, "northcentralus");
    assert_eq!(
        pool["properties"]["sessionNetworkConfiguration"]["status"],
        "EgressEnabled"
    );
    assert_eq!(
        c.get_deployment("rg-dep", "deploy").await.unwrap()["name"],
        "deploy"
    );
}

#[tokio::test]
async fn client_request_id_is_sent_and_echoed() {
    let server = TestServer::start(TestStore::Sqlite).await;
    let c = client(&server);
    let r = c
        .request(
            reqwest::Method::GET,
            "/subscriptions/x/resourcegroups",
            &[],
            None,
        )
        .await;
    // Whatever the answer to a bad subscription, it must be an API error with a code.
    if let Err(e) = &r {
        assert!(e.code().is_some(), "{e:?}");
    }
    let r = c
        .request(
            reqwest::Method::GET,
            &ids::resource_group(DEFAULT_SUBSCRIPTION, "default"),
            &[],
            None,
        )
        .await
        .unwrap();
    let echoed = r.header("x-ms-client-request-id").unwrap_or_default();
    assert!(uuid::Uuid::parse_str(echoed).is_ok(), "echoed {echoed:?}");
}

/// Serves one HTTP request on a raw socket with `response`; returns the request's head.
fn one_shot(response: &'static str) -> (String, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut head = String::new();
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            head.push_str(&line);
        }
        let mut body = vec![0; len];
        let _ = reader.read_exact(&mut body);
        let _ = stream.write_all(response.as_bytes());
        head
    });
    (url, handle)
}

#[tokio::test]
async fn bearer_token_and_headers_go_on_the_wire() {
    let (url, handle) = one_shot(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\nconnection: close\r\n\r\n{\"ok\":true}",
    );
    let c = Client::new(&url)
        .unwrap()
        .with_token(Arc::new(StaticToken::new("tok-123")));
    let v = c.get("/subscriptions/s/resourceGroups/a b").await.unwrap();
    assert_eq!(v, json!({"ok": true}));
    let head = handle.join().unwrap();
    let lower = head.to_ascii_lowercase();
    assert!(
        head.starts_with(
            "GET /subscriptions/s/resourceGroups/a%20b?api-version=2025-02-02-preview "
        ),
        "{head}"
    );
    assert!(
        lower.contains("authorization: bearer tok-123\r\n"),
        "{head}"
    );
    assert!(lower.contains("x-ms-client-request-id: "), "{head}");
}

#[tokio::test]
async fn a_non_api_error_body_still_becomes_a_coded_error() {
    let (url, handle) = one_shot(
        "HTTP/1.1 502 Bad Gateway\r\ncontent-length: 11\r\nconnection: close\r\n\r\nproxy broke",
    );
    let err = Client::new(&url).unwrap().get("/x").await.unwrap_err();
    handle.join().unwrap();
    assert_eq!(err.status(), Some(502));
    assert_eq!(err.code(), Some("Http502"));
    assert!(err.to_string().contains("proxy broke"), "{err}");
}

#[tokio::test]
async fn unreachable_endpoint_and_bad_endpoint_are_errors() {
    // Bind then drop to get a loopback port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = Client::new(&format!("http://127.0.0.1:{port}"))
        .unwrap()
        .get("/x")
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Transport { .. }), "{err:?}");
    assert!(matches!(
        Client::new("not a url"),
        Err(ClientError::InvalidArgument(_))
    ));
    assert!(matches!(
        Client::new("ftp://h/"),
        Err(ClientError::InvalidArgument(_))
    ));
}
