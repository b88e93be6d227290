//! The token endpoint, JWKS, discovery and key rotation, over real HTTP.

mod common;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::Method;
use sandpool_auth::{Auth, AuthConfig, Claims, SESSION_EXECUTOR};

use common::{call, MemoryStore};

const SUB: &str = "/subscriptions/7d2bb3a5-43b2-4f6a-9a1b-1f0c7c1e2d3f";

#[tokio::test]
async fn client_credentials_good_and_bad() {
    let srv = common::start().await;
    let new = srv.auth.new_identity().unwrap();
    assert_eq!(new.tenant_id, srv.auth.tenant_id());
    assert!(!format!("{new:?}").contains(new.secret.expose()));
    let id = srv.store.insert(&new);
    let secret = id.secret.expose();
    let ok = |resource_key: &'static str, value: &'static str| {
        vec![
            ("grant_type", "client_credentials"),
            ("client_id", id.client_id.as_str()),
            ("client_secret", secret),
            (resource_key, value),
        ]
    };
    for (key, value, aud) in [
        (
            "resource",
            "https://dynamicsessions.io",
            "https://dynamicsessions.io",
        ),
        (
            "scope",
            "https://dynamicsessions.io/.default",
            "https://dynamicsessions.io",
        ),
        (
            "resource",
            "https://management.azure.com/",
            "https://management.azure.com/",
        ),
        (
            "scope",
            "https://management.azure.com//.default",
            "https://management.azure.com/",
        ),
        (
            "resource",
            "https://management.core.windows.net/",
            "https://management.core.windows.net/",
        ),
    ] {
        let (status, body) = srv.token_request(&ok(key, value)).await;
        assert_eq!(status, 200, "{key}={value}: {body}");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3600);
        assert_eq!(body["resource"], aud);
        let expires_on = body["expires_on"].as_u64().unwrap();
        let claims = srv
            .auth
            .validate(body["access_token"].as_str().unwrap())
            .unwrap();
        assert_eq!(claims.aud, aud);
        assert_eq!(claims.exp, expires_on);
        assert_eq!(claims.oid, id.principal_id);
        assert_eq!(claims.sub, id.principal_id);
        assert_eq!(claims.appid, id.client_id);
        assert_eq!(claims.tid, srv.auth.tenant_id());
        assert_eq!(claims.iss, srv.base);
    }

    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16, &'a str);
    let bad: Vec<Case> = vec![
        (
            "wrong secret",
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", &id.client_id),
                ("client_secret", "sps~nope"),
                ("resource", "https://dynamicsessions.io"),
            ],
            401,
            "invalid_client",
        ),
        (
            "unknown client",
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "00000000-0000-0000-0000-000000000000"),
                ("client_secret", secret),
                ("resource", "https://dynamicsessions.io"),
            ],
            401,
            "invalid_client",
        ),
        (
            "no grant type",
            vec![
                ("client_id", &id.client_id),
                ("client_secret", secret),
                ("resource", "https://dynamicsessions.io"),
            ],
            400,
            "invalid_request",
        ),
        (
            "password grant",
            vec![
                ("grant_type", "password"),
                ("client_id", &id.client_id),
                ("client_secret", secret),
                ("resource", "https://dynamicsessions.io"),
            ],
            400,
            "unsupported_grant_type",
        ),
        (
            "no secret",
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", &id.client_id),
                ("resource", "https://dynamicsessions.io"),
            ],
            400,
            "invalid_request",
        ),
        (
            "unknown resource",
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", &id.client_id),
                ("client_secret", secret),
                ("resource", "https://graph.microsoft.com"),
            ],
            400,
            "invalid_resource",
        ),
        (
            "two scopes",
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", &id.client_id),
                ("client_secret", secret),
                (
                    "scope",
                    "https://dynamicsessions.io/.default https://management.azure.com//.default",
                ),
            ],
            400,
            "invalid_scope",
        ),
        (
            "no resource",
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", &id.client_id),
                ("client_secret", secret),
            ],
            400,
            "invalid_request",
        ),
    ];
    for (name, form, status, error) in bad {
        let resp = reqwest::Client::new()
            .post(format!("{}/oauth2/token", srv.base))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{name}");
        assert_eq!(resp.headers()["x-ms-error-code"], error, "{name}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"], error, "{name}");
        assert!(
            body["error_description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{name}"
        );
        assert!(body.get("access_token").is_none(), "{name}");
    }

    // Not a form at all.
    let resp = reqwest::Client::new()
        .post(format!("{}/oauth2/token", srv.base))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");

    // The v2.0 path with a tenant segment, as MSAL sends it.
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            srv.base,
            srv.auth.tenant_id()
        ))
        .form(&ok("scope", "https://dynamicsessions.io/.default"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

#[tokio::test]
async fn reset_invalidates_the_old_secret_and_delete_blocks_new_tokens() {
    let srv = common::start().await;
    let mut id = srv.store.create_identity();
    let form = |secret: &str| {
        vec![
            ("grant_type", "client_credentials".to_string()),
            ("client_id", id.client_id.clone()),
            ("client_secret", secret.to_string()),
            ("resource", "https://dynamicsessions.io".to_string()),
        ]
    };
    let old = id.secret.expose().to_string();
    let send = |f: Vec<(&'static str, String)>| {
        let base = srv.base.clone();
        async move {
            reqwest::Client::new()
                .post(format!("{base}/oauth2/token"))
                .form(&f)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(send(form(&old)).await, 200);
    let new = srv.store.reset_secret(&id);
    id.secret = new.clone();
    assert_eq!(send(form(&old)).await, 401, "old secret after reset");
    assert_eq!(send(form(new.expose())).await, 200, "new secret");
    srv.store.delete_identity(&id);
    assert_eq!(send(form(new.expose())).await, 401, "deleted identity");
}

#[tokio::test]
async fn jwks_and_discovery_verify_issued_tokens() {
    let srv = common::start().await;
    let id = srv.store.create_identity();
    let token = srv
        .token_for(&id, "https://dynamicsessions.io/.default")
        .await;

    let (status, _, body) = call(
        &srv.base,
        Method::GET,
        "/.well-known/openid-configuration",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let discovery: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(discovery["issuer"], srv.base);
    assert_eq!(
        discovery["token_endpoint"],
        format!("{}/oauth2/token", srv.base)
    );
    let jwks_uri = discovery["jwks_uri"].as_str().unwrap().to_string();

    let jwks: serde_json::Value = reqwest::get(&jwks_uri).await.unwrap().json().await.unwrap();
    let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .expect("signing key published");
    assert_eq!(jwk["kty"], "EC");
    assert_eq!(jwk["crv"], "P-256");
    assert_eq!(jwk["alg"], "ES256");
    assert!(jwk.get("d").is_none(), "private part must not be published");

    // Verify independently of the engine, only with the published key.
    let key =
        DecodingKey::from_ec_components(jwk["x"].as_str().unwrap(), jwk["y"].as_str().unwrap())
            .unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&["https://dynamicsessions.io"]);
    validation.set_issuer(&[&srv.base]);
    let claims = jsonwebtoken::decode::<Claims>(&token, &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims.oid, id.principal_id);

    // A tampered payload fails with the same key.
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let forged = serde_json::json!({"aud":"https://dynamicsessions.io","iss":srv.base,"exp":claims.exp,"sub":"someone-else"});
    parts[1] = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        forged.to_string(),
    );
    assert!(
        jsonwebtoken::decode::<serde_json::Value>(&parts.join("."), &key, &validation).is_err()
    );
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_valid() {
    let srv = common::start().await;
    let id = srv.store.create_identity();
    let pool = format!("{SUB}/resourceGroups/rg/providers/Microsoft.App/sessionPools/p");
    srv.store.assign(&id.principal_id, &SESSION_EXECUTOR, &pool);
    let path = format!("{SUB}/resourceGroups/rg/sessionPools/p/executions?api-version=2025-02-02-preview&identifier=abcd");

    let before = srv.token_for(&id, "https://dynamicsessions.io").await;
    let new_kid = srv.auth.rotate_keys().unwrap();
    let after = srv.token_for(&id, "https://dynamicsessions.io").await;
    let kid = |t: &str| jsonwebtoken::decode_header(t).unwrap().kid.unwrap();
    assert_ne!(kid(&before), kid(&after));
    assert_eq!(kid(&after), new_kid);

    for token in [&before, &after] {
        let (status, _, body) = call(
            &srv.base,
            Method::POST,
            &path,
            Some(&format!("Bearer {token}")),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let (_, _, body) = call(&srv.base, Method::GET, "/.well-known/jwks.json", None).await;
    let jwks: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);

    // The rotation is on disk: a restarted server still accepts both and signs with the new key.
    let restarted = Auth::open(
        AuthConfig::new(srv.data_dir.path(), &srv.base),
        MemoryStore::default(),
    )
    .unwrap();
    assert!(restarted.validate(&before).is_ok());
    assert!(restarted.validate(&after).is_ok());
    let subject = sandpool_auth::TokenSubject {
        principal_id: id.principal_id.clone(),
        client_id: id.client_id.clone(),
    };
    let fresh = restarted
        .issue_token(&subject, "https://dynamicsessions.io")
        .unwrap();
    assert_eq!(kid(fresh.access_token.expose()), new_kid);
}

/// Verified tokens are remembered (to skip the ECDSA check on every request), but a
/// remembered token still expires on time, and a tampered copy is still refused.
#[tokio::test]
async fn remembered_tokens_still_expire() {
    let dir = tempfile::tempdir().unwrap();
    let auth = Auth::open(
        AuthConfig::new(dir.path(), "http://127.0.0.1:1"),
        MemoryStore::default(),
    )
    .unwrap();
    let subject = sandpool_auth::TokenSubject {
        principal_id: auth.admin_principal_id().to_owned(),
        client_id: "c".into(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Issued so that, with the 30 s leeway, it stops being valid about 2 s from now.
    let lifetime = AuthConfig::new(dir.path(), "http://x").token_lifetime_secs;
    let token = auth
        .issue_token_at(
            &subject,
            "https://dynamicsessions.io",
            now - lifetime - 30 + 2,
        )
        .unwrap();
    let token = token.access_token.expose();
    let first = auth.validate(token).expect("valid at first");
    assert_eq!(auth.validate(token).expect("valid again"), first);

    // Flip a character in the middle of the signature (the last one carries padding bits).
    let mut tampered: Vec<char> = token.chars().collect();
    let i = tampered.len() - 10;
    tampered[i] = if tampered[i] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    assert!(auth.validate(&tampered).is_err(), "a tampered copy passed");

    let mut expired = false;
    for _ in 0..100 {
        if auth.validate(token).is_err() {
            expired = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(expired, "a remembered token outlived its expiry");
    assert!(matches!(
        auth.validate(token),
        Err(sandpool_auth::TokenError::Expired)
    ));
}
