//! The enforcement layer over real HTTP: every way a request can be refused, and the ways it
//! is let through, each with its status and error code.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::Method;
use sandpool_auth::{
    load_local_admin, Auth, AuthConfig, TokenSubject, AKS_CLUSTER_ADMIN, CONTRIBUTOR,
    DYNAMIC_SESSIONS_AUDIENCE, MANAGEMENT_AUDIENCE, OWNER, READER, SESSION_EXECUTOR,
};

use common::{call, MemoryStore};

const SUB: &str = "/subscriptions/0b1f6471-1bf0-4dda-aec3-cb9272f09590";
const DYN: &str = "https://dynamicsessions.io/.default";
const MGMT: &str = "https://management.azure.com/";

fn pool_id(pool: &str) -> String {
    format!("{SUB}/resourceGroups/rg1/providers/Microsoft.App/sessionPools/{pool}")
}

/// Replaces a token's header with one naming `kid`, keeping payload and signature.
fn with_kid(token: &str, kid: &str) -> String {
    let mut parts = token.splitn(2, '.');
    let (_, rest) = (parts.next().unwrap(), parts.next().unwrap());
    let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"typ":"JWT","alg":"ES256","kid":"{kid}"}}"#));
    format!("{header}.{rest}")
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

#[tokio::test]
async fn table_of_refusals_and_grants() {
    let srv = common::start().await;
    let store = &srv.store;
    let execute = format!("{SUB}/resourceGroups/rg1/sessionPools/pool1/executions?api-version=2025-02-02-preview&identifier=user-42");

    let executor = store.create_identity();
    store.assign(&executor.principal_id, &SESSION_EXECUTOR, &pool_id("pool1"));
    let no_roles = store.create_identity();
    let sibling = store.create_identity();
    store.assign(&sibling.principal_id, &SESSION_EXECUTOR, &pool_id("pool2"));
    let parent = store.create_identity();
    store.assign(
        &parent.principal_id,
        &SESSION_EXECUTOR,
        &format!("{SUB}/resourceGroups/RG1"),
    );
    let contributor = store.create_identity();
    store.assign(&contributor.principal_id, &CONTRIBUTOR, SUB);
    let reader = store.create_identity();
    store.assign(&reader.principal_id, &READER, SUB);
    let deleted = store.create_identity();
    store.assign(&deleted.principal_id, &SESSION_EXECUTOR, &pool_id("pool1"));

    let t_exec = srv.token_for(&executor, DYN).await;
    let t_exec_mgmt = srv.token_for(&executor, MGMT).await;
    let t_none = srv.token_for(&no_roles, DYN).await;
    let t_sibling = srv.token_for(&sibling, DYN).await;
    let t_parent = srv.token_for(&parent, DYN).await;
    let t_contrib = srv.token_for(&contributor, DYN).await;
    let t_reader = srv.token_for(&reader, DYN).await;
    let t_deleted = srv.token_for(&deleted, DYN).await;
    store.delete_identity(&deleted);

    // Expired: minted an hour and a half ago by this very server's key.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let subject = TokenSubject {
        principal_id: executor.principal_id.clone(),
        client_id: executor.client_id.clone(),
    };
    let t_expired = srv
        .auth
        .issue_token_at(&subject, DYNAMIC_SESSIONS_AUDIENCE, now - 5400)
        .unwrap();

    // Another server's key (same issuer URL), and that token relabelled with our key id.
    let other_dir = tempfile::tempdir().unwrap();
    let other = Auth::open(
        AuthConfig::new(other_dir.path(), &srv.base),
        MemoryStore::default(),
    )
    .unwrap();
    let t_other = other
        .issue_token(&subject, DYNAMIC_SESSIONS_AUDIENCE)
        .unwrap();
    let our_kid = kid_of(&t_exec);
    let t_forged = with_kid(t_other.access_token.expose(), &our_kid);

    // Our own key but a different issuer: copy the keys to a server with another URL.
    let evil_dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(evil_dir.path().join("keys")).unwrap();
    for entry in std::fs::read_dir(srv.data_dir.path().join("keys")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(
            entry.path(),
            evil_dir.path().join("keys").join(entry.file_name()),
        )
        .unwrap();
    }
    let evil = Auth::open(
        AuthConfig::new(evil_dir.path(), "http://evil.invalid"),
        MemoryStore::default(),
    )
    .unwrap();
    let t_wrong_iss = evil
        .issue_token(&subject, DYNAMIC_SESSIONS_AUDIENCE)
        .unwrap();
    assert_eq!(kid_of(t_wrong_iss.access_token.expose()), our_kid);

    let bearer = |t: &str| format!("Bearer {t}");
    // name, Authorization header, status, x-ms-error-code, principal seen by the handler
    type Row<'a> = (
        &'a str,
        Option<String>,
        u16,
        Option<&'a str>,
        Option<&'a str>,
    );
    let rows: Vec<Row> = vec![
        // name, Authorization header, status, x-ms-error-code, principal seen by the handler
        (
            "no token",
            None,
            401,
            Some("InvalidAuthenticationToken"),
            None,
        ),
        (
            "basic scheme",
            Some("Basic dXNlcjpwYXNz".into()),
            401,
            Some("InvalidAuthenticationToken"),
            None,
        ),
        (
            "empty bearer",
            Some("Bearer ".into()),
            401,
            Some("InvalidAuthenticationToken"),
            None,
        ),
        (
            "garbage",
            Some(bearer("not.a.jwt")),
            401,
            Some("InvalidAuthenticationToken"),
            None,
        ),
        (
            "other key",
            Some(bearer(t_other.access_token.expose())),
            401,
            Some("InvalidAuthenticationToken"),
            None,
        ),
        (
            "other key, our kid",
            Some(bearer(&t_forged)),
            401,
            Some("InvalidAuthenticationToken"),
            None,
        ),
        (
            "expired",
            Some(bearer(t_expired.access_token.expose())),
            401,
            Some("InvalidAuthenticationToken"),
            None,
        ),
        (
            "wrong issuer",
            Some(bearer(t_wrong_iss.access_token.expose())),
            401,
            Some("InvalidAuthenticationToken"),
            None,
        ),
        (
            "wrong audience",
            Some(bearer(&t_exec_mgmt)),
            401,
            Some("InvalidAuthenticationToken"),
            None,
        ),
        (
            "deleted identity",
            Some(bearer(&t_deleted)),
            401,
            Some("InvalidAuthenticationToken"),
            None,
        ),
        (
            "no role",
            Some(bearer(&t_none)),
            403,
            Some("AuthorizationFailed"),
            None,
        ),
        (
            "role at sibling pool",
            Some(bearer(&t_sibling)),
            403,
            Some("AuthorizationFailed"),
            None,
        ),
        (
            "reader at subscription",
            Some(bearer(&t_reader)),
            403,
            Some("AuthorizationFailed"),
            None,
        ),
        (
            "executor at pool",
            Some(bearer(&t_exec)),
            200,
            None,
            Some(executor.principal_id.as_str()),
        ),
        (
            "executor at parent rg",
            Some(bearer(&t_parent)),
            200,
            None,
            Some(parent.principal_id.as_str()),
        ),
        (
            "contributor at subscription",
            Some(bearer(&t_contrib)),
            200,
            None,
            Some(contributor.principal_id.as_str()),
        ),
    ];
    for (name, header, status, code, principal) in rows {
        let (got, headers, body) = call(&srv.base, Method::POST, &execute, header.as_deref()).await;
        assert_eq!(got, status, "{name}: {body}");
        let error_code = headers
            .get("x-ms-error-code")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(error_code.as_deref(), code, "{name}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        match code {
            Some(code) => {
                assert_eq!(json["error"]["code"], code, "{name}");
                assert!(
                    json["error"]["message"]
                        .as_str()
                        .is_some_and(|m| !m.is_empty()),
                    "{name}"
                );
                assert_eq!(headers["content-type"], "application/json", "{name}");
            }
            None => assert_eq!(json["principal"].as_str(), principal, "{name}"),
        }
        if status == 401 {
            let challenge = headers.get("www-authenticate").unwrap().to_str().unwrap();
            assert!(challenge.starts_with("Bearer"), "{name}: {challenge}");
        }
    }
}

#[tokio::test]
async fn management_and_run_command_routes() {
    let srv = common::start().await;
    let store = &srv.store;
    let cluster =
        format!("{SUB}/resourceGroups/rg1/providers/Microsoft.ContainerService/managedClusters/c1");
    let assignment = format!("{SUB}/resourceGroups/rg1/providers/Microsoft.Authorization/roleAssignments/5b1f5b5c-0b33-4e5e-9a38-a2d2a6cf0001?api-version=2022-04-01");

    let aks = store.create_identity();
    store.assign(&aks.principal_id, &AKS_CLUSTER_ADMIN, &cluster);
    let contributor = store.create_identity();
    store.assign(
        &contributor.principal_id,
        &CONTRIBUTOR,
        &format!("{SUB}/resourceGroups/rg1"),
    );
    let owner = store.create_identity();
    store.assign(&owner.principal_id, &OWNER, SUB);
    let executor = store.create_identity();
    store.assign(&executor.principal_id, &SESSION_EXECUTOR, &pool_id("pool1"));

    let t = |id| srv.token_for(id, MGMT);
    let (t_aks, t_contrib, t_owner, t_exec) = (
        t(&aks).await,
        t(&contributor).await,
        t(&owner).await,
        t(&executor).await,
    );
    let rows = [
        (
            "aks admin runs a command",
            &t_aks,
            Method::POST,
            format!("{cluster}/runCommand?api-version=2024-09-01"),
            200,
        ),
        (
            "aks admin reads results",
            &t_aks,
            Method::GET,
            format!("{cluster}/commandResults/abc?api-version=2024-09-01"),
            200,
        ),
        (
            "aks admin cannot delete the cluster",
            &t_aks,
            Method::DELETE,
            format!("{cluster}?api-version=2024-09-01"),
            403,
        ),
        (
            "executor cannot run commands",
            &t_exec,
            Method::POST,
            format!("{cluster}/runCommand?api-version=2024-09-01"),
            403,
        ),
        (
            "contributor creates a pool",
            &t_contrib,
            Method::PUT,
            format!("{}?api-version=2025-01-01", pool_id("p9")),
            200,
        ),
        (
            "contributor cannot assign roles",
            &t_contrib,
            Method::PUT,
            assignment.clone(),
            403,
        ),
        (
            "owner assigns roles",
            &t_owner,
            Method::PUT,
            assignment.clone(),
            200,
        ),
        (
            "contributor elsewhere",
            &t_contrib,
            Method::GET,
            format!("{SUB}/resourceGroups/rg2?api-version=2021-04-01"),
            403,
        ),
        // The handler would answer 404, but the caller may not read it: 403 first.
        (
            "no peeking at missing resources",
            &t_exec,
            Method::GET,
            format!("{}?api-version=2025-01-01", pool_id("missing")),
            403,
        ),
        (
            "allowed caller sees the 404",
            &t_contrib,
            Method::GET,
            format!("{}?api-version=2025-01-01", pool_id("missing")),
            404,
        ),
        // A route without a rule is refused, whoever asks.
        (
            "a route without a rule is refused",
            &t_contrib,
            Method::GET,
            "/undeclared".to_string(),
            403,
        ),
        // No route: a token is needed to learn that, and no handler runs.
        (
            "unknown path answers 404 to a caller with a token",
            &t_exec,
            Method::GET,
            "/not-an-api-route".to_string(),
            404,
        ),
    ];
    for (name, token, method, path, status) in rows {
        let (got, _, body) = call(&srv.base, method, &path, Some(&format!("Bearer {token}"))).await;
        assert_eq!(got, status, "{name}: {body}");
    }
    for public in [
        "/healthz",
        "/readyz",
        "/openapi.json",
        "/.well-known/jwks.json",
    ] {
        let (got, _, body) = call(&srv.base, Method::GET, public, None).await;
        assert_eq!(got, 200, "{public}: {body}");
    }
    let (got, _, _) = call(&srv.base, Method::GET, "/metrics", None).await;
    assert_eq!(got, 401, "/metrics is not public");
    for path in ["/undeclared", "/not-an-api-route"] {
        let (got, _, body) = call(&srv.base, Method::GET, path, None).await;
        assert_eq!(got, 401, "{path} without a token: {body}");
    }
    let (got, _, body) = call(
        &srv.base,
        Method::GET,
        "/undeclared",
        Some(&format!("Bearer {}", t_owner)),
    )
    .await;
    assert_eq!(got, 403, "{body}");
    assert!(body.contains("RequestNotClassified"), "{body}");
}

#[tokio::test]
async fn local_admin_is_owner_everywhere_and_gets_tokens_without_configuration() {
    let srv = common::start().await;
    let admin = load_local_admin(srv.data_dir.path()).unwrap();
    assert_eq!(admin.endpoint.as_deref(), Some(srv.base.as_str()));
    assert_eq!(admin.principal_id, srv.auth.admin_principal_id());
    let mgmt = sandpool_auth::fetch_token(&admin, None, MANAGEMENT_AUDIENCE)
        .await
        .unwrap();
    let data = sandpool_auth::fetch_token(&admin, None, DYN).await.unwrap();
    assert_eq!(data.resource, DYNAMIC_SESSIONS_AUDIENCE);
    for (token, method, path) in [
        (&mgmt, Method::PUT, format!("{SUB}/providers/Microsoft.Authorization/roleAssignments?api-version=2022-04-01")),
        (&mgmt, Method::PUT, "/subscriptions/another-sub/resourceGroups/x?api-version=2021-04-01".to_string()),
        (&data, Method::POST, format!("{SUB}/resourceGroups/any/sessionPools/any/executions?api-version=2025-02-02-preview")),
    ] {
        let (got, _, body) = call(&srv.base, method, &path, Some(&format!("Bearer {}", token.access_token.expose()))).await;
        assert_eq!(got, 200, "{path}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["principal"], admin.principal_id);
        assert_eq!(json["kind"], "LocalAdmin");
    }
    // A wrong secret in the file is refused by the server.
    let mut wrong = admin.clone();
    wrong.client_secret = sandpool_auth::Secret::new("sps~not-the-secret");
    let err = sandpool_auth::fetch_token(&wrong, None, MANAGEMENT_AUDIENCE)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("401"), "{err}");
    assert!(!err.contains("not-the-secret"), "{err}");
}
