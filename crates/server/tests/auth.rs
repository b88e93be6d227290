//! Authentication and authorisation over real HTTP against a real server (both stores): the
//! tutorial's identity → role assignment → token → execute flow, a denial table over every route
//! family, identity secrets (shown once, reset, deleted), deployments checked per resource, and
//! no secret or key in the server's logs or answers.

mod common;

use common::*;
use reqwest::Method;
use sandpool_auth::{DYNAMIC_SESSIONS_AUDIENCE, MANAGEMENT_AUDIENCE};
use sandpool_server::testing::TestStore;
use serde_json::{json, Value};

const SESSION_EXECUTOR: &str = "Azure ContainerApps Session Executor";

fn rg_id(rg: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{rg}")
}

fn identity_path(rg: &str, name: &str) -> String {
    format!(
        "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}",
        rg_id(rg)
    )
}

fn cluster_path(rg: &str, name: &str) -> String {
    format!(
        "{}/providers/Microsoft.ContainerService/managedClusters/{name}",
        rg_id(rg)
    )
}

/// The data-plane base (`poolManagementEndpoint` without the host).
fn endpoint(rg: &str, pool: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{rg}/sessionPools/{pool}")
}

/// A created identity: its ids and the secret its PUT answered.
struct Identity {
    principal_id: String,
    client_id: String,
    secret: String,
}

async fn create_identity(api: &Api, rg: &str, name: &str) -> Identity {
    let r = api
        .put(&identity_path(rg, name), json!({"location": "westus"}))
        .await;
    r.assert_status(201);
    let p = &r.json["properties"];
    let s = |k: &str| {
        p[k].as_str()
            .unwrap_or_else(|| panic!("{k} missing: {}", r.text))
            .to_owned()
    };
    Identity {
        principal_id: s("principalId"),
        client_id: s("clientId"),
        secret: s("clientSecret"),
    }
}

/// A Shell pool without egress (test servers have no egress network, and a pool asking for
/// it could not start sessions).
async fn create_pool(api: &Api, rg: &str, name: &str) {
    let r = api
        .put(
            &pool_path(rg, name),
            json!({"location": "westus", "properties": {
                "poolManagementType": "Dynamic",
                "containerType": "Shell",
                "sessionNetworkConfiguration": {"status": "EgressDisabled"},
            }}),
        )
        .await;
    assert!(r.status == 201 || r.status == 200, "{}", r.text);
}

/// The full id of a built-in role, looked up by name the way a client does.
async fn role_id(api: &Api, name: &str) -> String {
    let filter = format!("roleName eq '{name}'").replace(' ', "%20");
    let r = api
        .get(&format!(
            "/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions?$filter={filter}"
        ))
        .await;
    r.assert_status(200);
    let v = r.json["value"].as_array().expect("value");
    assert_eq!(v.len(), 1, "{}", r.text);
    v[0]["id"].as_str().expect("id").to_owned()
}

/// Assigns `role` (a name) to `principal` at `scope`; returns the assignment's path.
async fn assign(api: &Api, scope: &str, role: &str, principal: &str) -> String {
    let role = role_id(api, role).await;
    let path = format!(
        "{scope}/providers/Microsoft.Authorization/roleAssignments/{}",
        uuid::Uuid::new_v4()
    );
    let r = api
        .put(
            &path,
            json!({"properties": {"roleDefinitionId": role, "principalId": principal}}),
        )
        .await;
    r.assert_status(201);
    path
}

/// POST /oauth2/token with client credentials; the answer as it came.
async fn token_request(api: &Api, client_id: &str, secret: &str, resource: &str) -> Resp {
    let url = format!("{}/oauth2/token", api.srv.base_url);
    token_request_at(api, &url, client_id, secret, ("resource", resource)).await
}

/// A client-credentials request to the token endpoint at `url`, with `target` as
/// `("resource", …)` (v1) or `("scope", …)` (v2), and no `api-version`, as OAuth clients send it.
async fn token_request_at(
    api: &Api,
    url: &str,
    client_id: &str,
    secret: &str,
    target: (&str, &str),
) -> Resp {
    let resp = api
        .http
        .post(url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
            target,
        ])
        .send()
        .await
        .expect("token request");
    Resp::read(resp).await
}

async fn token_of(api: &Api, id: &Identity, resource: &str) -> String {
    let r = token_request(api, &id.client_id, &id.secret, resource).await;
    r.assert_status(200);
    assert_eq!(r.json["token_type"], "Bearer");
    r.json["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

async fn with_token(
    api: &Api,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Resp {
    send_as(api, method, &api.url(path), body.as_ref(), Some(token)).await
}

async fn execute(api: &Api, rg: &str, pool: &str, token: &str) -> Resp {
    with_token(
        api,
        Method::POST,
        &format!("{}/executions?identifier=tutorial-1", endpoint(rg, pool)),
        token,
        Some(json!({"shellCommand": "echo Hello world!"})),
    )
    .await
}

/// The tutorial's setup: group `rg1`, its pool `pool1`, and an identity `name` that is Session
/// Executor on that pool. Returns the identity and its role assignment's path.
async fn executor_of_pool1(api: &Api, name: &str) -> (Identity, String) {
    api.group("rg1").await;
    create_pool(api, "rg1", "pool1").await;
    let id = create_identity(api, "rg1", name).await;
    let assignment = assign(
        api,
        &pool_path("rg1", "pool1"),
        SESSION_EXECUTOR,
        &id.principal_id,
    )
    .await;
    (id, assignment)
}

/// The tutorial: identity → Session Executor at the pool → token → execute; elsewhere 403;
/// management 403; assignment deleted → 403; identity deleted → 401.
async fn tutorial_flow(store: TestStore) {
    let api = Api::start(store).await;
    let (id, assignment) = executor_of_pool1(&api, "executor").await;
    create_pool(&api, "rg1", "pool2").await;
    let sessions = token_of(&api, &id, DYNAMIC_SESSIONS_AUDIENCE).await;
    let management = token_of(&api, &id, MANAGEMENT_AUDIENCE).await;

    let r = execute(&api, "rg1", "pool1", &sessions).await;
    r.assert_status(200);
    assert_eq!(r.json["result"]["stdout"], "Hello world!\n", "{}", r.text);
    assert_eq!(r.json["result"]["exitCode"], 0, "{}", r.text);
    execute(&api, "rg1", "pool2", &sessions)
        .await
        .assert_error(403, "AuthorizationFailed");
    // The role grants the data plane only: no management read or write of the pool.
    with_token(
        &api,
        Method::GET,
        &pool_path("rg1", "pool1"),
        &management,
        None,
    )
    .await
    .assert_error(403, "AuthorizationFailed");
    with_token(
        &api,
        Method::PUT,
        &pool_path("rg1", "pool1"),
        &management,
        Some(json!({"location": "westus"})),
    )
    .await
    .assert_error(403, "AuthorizationFailed");
    // A session token is not a management token, and the other way round.
    with_token(
        &api,
        Method::GET,
        &pool_path("rg1", "pool1"),
        &sessions,
        None,
    )
    .await
    .assert_error(401, "InvalidAuthenticationToken");
    execute(&api, "rg1", "pool1", &management)
        .await
        .assert_error(401, "InvalidAuthenticationToken");

    // Revoking takes effect on the next request, with the same token.
    api.delete(&assignment).await;
    execute(&api, "rg1", "pool1", &sessions)
        .await
        .assert_error(403, "AuthorizationFailed");

    // Deleting the identity ends its tokens and its assignments.
    assign(
        &api,
        &pool_path("rg1", "pool1"),
        SESSION_EXECUTOR,
        &id.principal_id,
    )
    .await;
    api.delete(&identity_path("rg1", "executor"))
        .await
        .assert_status(200);
    let r = execute(&api, "rg1", "pool1", &sessions).await;
    r.assert_error(401, "InvalidAuthenticationToken");
    assert!(r
        .header("www-authenticate")
        .is_some_and(|h| h.starts_with("Bearer")));
    let list = api
        .get(&format!(
            "{}/providers/Microsoft.Authorization/roleAssignments?$filter=principalId%20eq%20'{}'",
            rg_id("rg1"),
            id.principal_id
        ))
        .await;
    list.assert_status(200);
    assert_eq!(list.json["value"], json!([]), "{}", list.text);
    token_request(&api, &id.client_id, &id.secret, DYNAMIC_SESSIONS_AUDIENCE)
        .await
        .assert_status(401);
}

/// (family, method, path, body, session API?, answer to a caller whose role is at a parent
/// scope).
type RouteCase = (&'static str, Method, String, Option<Value>, bool, Expect);

/// What a case expects.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// Refused with this status and error code (a 401 with a Bearer challenge).
    Denied(u16, &'static str),
    /// Let through: the handler's own answer has this status.
    Answers(u16),
}

/// Checks one answer of the denial tests against its expectation.
#[track_caller]
fn check(r: &Resp, expect: Expect, what: &str) {
    match expect {
        Expect::Denied(status, code) => {
            assert_eq!(r.status, status, "{what}: {}", r.text);
            assert_eq!(r.json["error"]["code"], code, "{what}: {}", r.text);
            assert_eq!(r.header("x-ms-error-code"), Some(code), "{what}");
            if status == 401 {
                assert!(
                    r.header("www-authenticate")
                        .is_some_and(|h| h.starts_with("Bearer")),
                    "{what}: no Bearer challenge"
                );
            }
        }
        Expect::Answers(status) => assert_eq!(r.status, status, "{what}: {}", r.text),
    }
}

/// `method` `url` with `Authorization: Bearer <token>` (none without a token).
async fn send_as(
    api: &Api,
    method: Method,
    url: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> Resp {
    let auth = token.map(|t| format!("Bearer {t}")).unwrap_or_default();
    let body = body.map(|b| serde_json::to_vec(b).expect("json"));
    api.raw(method, url, body, &[("authorization", &auth)])
        .await
}

const UNAUTHENTICATED: Expect = Expect::Denied(401, "InvalidAuthenticationToken");
const FORBIDDEN: Expect = Expect::Denied(403, "AuthorizationFailed");

/// One request per route family of API.md, against every kind of bad (and one good) caller.
async fn denial_table(store: TestStore) {
    let api = Api::start(store).await;
    api.group("rg1").await;
    api.group("rg2").await;
    create_pool(&api, "rg1", "pool1").await;
    api.put(
        &cluster_path("rg1", "c1"),
        json!({"location": "westus", "properties": {"kubeconfig": "k"}}),
    )
    .await
    .assert_status(201);
    let dep = format!(
        "{}/providers/Microsoft.Resources/deployments/d1",
        rg_id("rg1")
    );
    let empty_template =
        json!({"properties": {"mode": "Incremental", "template": {"resources": []}}});
    api.put(&dep, empty_template.clone()).await;

    let nobody = create_identity(&api, "rg2", "nobody").await;
    let sibling = create_identity(&api, "rg2", "sibling").await;
    assign(&api, &rg_id("rg2"), "Owner", &sibling.principal_id).await;
    let parent = create_identity(&api, "rg2", "parent").await;
    assign(
        &api,
        &format!("/subscriptions/{SUB}"),
        "Owner",
        &parent.principal_id,
    )
    .await;
    let gone = create_identity(&api, "rg2", "gone").await;
    assign(
        &api,
        &format!("/subscriptions/{SUB}"),
        "Owner",
        &gone.principal_id,
    )
    .await;

    // Tokens of both audiences for each caller.
    let mut tokens: Vec<(&str, [String; 2])> = Vec::new();
    for (name, id) in [
        ("nobody", &nobody),
        ("sibling", &sibling),
        ("parent", &parent),
        ("gone", &gone),
    ] {
        tokens.push((
            name,
            [
                token_of(&api, id, MANAGEMENT_AUDIENCE).await,
                token_of(&api, id, DYNAMIC_SESSIONS_AUDIENCE).await,
            ],
        ));
    }
    api.delete(&identity_path("rg2", "gone"))
        .await
        .assert_status(200);
    let token = |name: &str, sessions: bool| -> String {
        let t = &tokens.iter().find(|t| t.0 == name).expect("caller").1;
        t[usize::from(sessions)].clone()
    };

    // A token from another server: same issuer and claims, a key this server never had.
    let other_dir = tempfile::tempdir().expect("tempdir");
    let other_store = sandpool_server::store::Store::open(
        &sandpool_server::store::Store::sqlite_url(other_dir.path()),
    )
    .await
    .expect("other store");
    let other = sandpool_server::auth::open(other_dir.path(), &api.srv.base_url, other_store)
        .expect("other auth");
    let admin = sandpool_auth::load_local_admin(api.srv.data_dir.path()).expect("admin.json");
    let admin_subject = sandpool_auth::TokenSubject {
        principal_id: admin.principal_id.clone(),
        client_id: admin.client_id.clone(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let mint = |auth: &sandpool_server::auth::ServerAuth, aud: &str, at: u64| {
        auth.issue_token_at(&admin_subject, aud, at)
            .expect("mint")
            .access_token
            .expose()
            .to_owned()
    };

    let pool1 = pool_path("rg1", "pool1");
    // (family, method, path, body, session API?, expectation for a caller whose role is at a
    // parent scope: the subscription; metrics live at `/`, above it).
    let routes: Vec<RouteCase> = vec![
        (
            "resource group",
            Method::GET,
            rg_id("rg1"),
            None,
            false,
            Expect::Answers(200),
        ),
        (
            "resource group list",
            Method::GET,
            format!("/subscriptions/{SUB}/resourcegroups"),
            None,
            false,
            Expect::Answers(200),
        ),
        (
            "session pool",
            Method::GET,
            pool1.clone(),
            None,
            false,
            Expect::Answers(200),
        ),
        (
            "session pool patch",
            Method::PATCH,
            pool1.clone(),
            Some(json!({"tags": {"a": "b"}})),
            false,
            Expect::Answers(200),
        ),
        (
            "identity",
            Method::GET,
            identity_path("rg1", "nobody"),
            None,
            false,
            Expect::Answers(404),
        ),
        (
            "managed cluster",
            Method::GET,
            cluster_path("rg1", "c1"),
            None,
            false,
            Expect::Answers(200),
        ),
        (
            "deployment",
            Method::PUT,
            dep.clone(),
            Some(empty_template.clone()),
            false,
            Expect::Answers(200),
        ),
        (
            "role assignments",
            Method::GET,
            format!(
                "{}/providers/Microsoft.Authorization/roleAssignments",
                rg_id("rg1")
            ),
            None,
            false,
            Expect::Answers(200),
        ),
        (
            "role definitions",
            Method::GET,
            format!(
                "{}/providers/Microsoft.Authorization/roleDefinitions",
                rg_id("rg1")
            ),
            None,
            false,
            Expect::Answers(200),
        ),
        (
            "session execute",
            Method::POST,
            format!("{}/executions?identifier=table-1", endpoint("rg1", "pool1")),
            Some(json!({"shellCommand": "true"})),
            true,
            Expect::Answers(200),
        ),
        (
            "session list",
            Method::GET,
            format!("{}/listSessions", endpoint("rg1", "pool1")),
            None,
            true,
            Expect::Answers(200),
        ),
        (
            "run command",
            Method::POST,
            format!("{}/runCommand", cluster_path("rg1", "c1")),
            Some(json!({"command": "true"})),
            false,
            Expect::Answers(202),
        ),
        (
            "command results",
            Method::GET,
            format!("{}/commandResults/abc123", cluster_path("rg1", "c1")),
            None,
            false,
            Expect::Answers(404),
        ),
        (
            "metrics",
            Method::GET,
            "/metrics".to_owned(),
            None,
            false,
            FORBIDDEN,
        ),
    ];

    // The callers that must never reach a handler, with tokens for the session API or not.
    let refused = |sessions: bool| -> Vec<(&str, Option<String>, Expect)> {
        let (right_aud, wrong_aud) = if sessions {
            (DYNAMIC_SESSIONS_AUDIENCE, MANAGEMENT_AUDIENCE)
        } else {
            (MANAGEMENT_AUDIENCE, DYNAMIC_SESSIONS_AUDIENCE)
        };
        vec![
            ("no token", None, UNAUTHENTICATED),
            ("garbage", Some("not-a-jwt".into()), UNAUTHENTICATED),
            (
                "other key",
                Some(mint(&other, right_aud, now)),
                UNAUTHENTICATED,
            ),
            (
                "expired",
                Some(mint(api.srv.auth(), right_aud, now - 3 * 3600)),
                UNAUTHENTICATED,
            ),
            (
                "wrong audience",
                Some(mint(api.srv.auth(), wrong_aud, now)),
                UNAUTHENTICATED,
            ),
            ("no role", Some(token("nobody", sessions)), FORBIDDEN),
            ("sibling scope", Some(token("sibling", sessions)), FORBIDDEN),
            (
                "deleted identity",
                Some(token("gone", sessions)),
                UNAUTHENTICATED,
            ),
        ]
    };

    for (family, method, path, body, sessions, parent_expect) in &routes {
        let right_aud = if *sessions {
            DYNAMIC_SESSIONS_AUDIENCE
        } else {
            MANAGEMENT_AUDIENCE
        };
        let mut cases = refused(*sessions);
        cases.push((
            "parent scope",
            Some(token("parent", *sessions)),
            *parent_expect,
        ));
        cases.push((
            "admin",
            Some(mint(api.srv.auth(), right_aud, now)),
            // Only metrics (at `/`) refuse a subscription Owner; the admin reads them.
            match parent_expect {
                Expect::Answers(_) => *parent_expect,
                Expect::Denied(..) => Expect::Answers(200),
            },
        ));
        for (case, tok, expect) in cases {
            let url = if path == "/metrics" {
                format!("{}{path}", api.srv.base_url)
            } else {
                api.url(path)
            };
            let r = send_as(&api, method.clone(), &url, body.as_ref(), tok.as_deref()).await;
            check(&r, expect, &format!("{family} ({method} {path}) / {case}"));
        }
    }

    // Every route the server documents (its OpenAPI document lists each one it serves), with
    // the callers that must never reach a handler.
    let doc = api
        .raw(
            Method::GET,
            &format!("{}/openapi.json", api.srv.base_url),
            None,
            &[("authorization", "")],
        )
        .await;
    doc.assert_status(200);
    let paths = doc.json["paths"].as_object().expect("paths");
    let signed_in = signed_in_routes(&api);
    let mut swept = 0;
    for (template, item) in paths {
        let path = concrete_path(template);
        let public = PUBLIC_ROUTES.iter().any(|p| template.ends_with(p));
        for (method, _) in item.as_object().expect("path item") {
            let method: Method = method.to_uppercase().parse().expect("method");
            let what = format!("{method} {template}");
            if signed_in.contains(&(method.clone(), template.clone())) {
                continue; // any valid token passes: route_matrix checks what each one sees
            }
            let url = api.url(&path);
            if public {
                // Token endpoints answer OAuth errors, not the Azure body `raw` checks for.
                let r =
                    Resp::read(api.http.request(method, &url).send().await.expect("send")).await;
                assert!(
                    r.status != 401 && r.status != 403,
                    "{what} is public: {}",
                    r.text
                );
                continue;
            }
            // The data plane of a pool (no `providers` segment) takes session tokens.
            let sessions = path.contains("/sessionPools/") && !path.contains("/providers/");
            let body = json!({});
            for (case, tok, expect) in refused(sessions) {
                let r = send_as(&api, method.clone(), &url, Some(&body), tok.as_deref()).await;
                check(&r, expect, &format!("{what} / {case}"));
            }
            swept += 1;
        }
    }
    assert!(swept >= 40, "only {swept} protected routes documented");

    // A refusal does not tell whether the resource exists: the same answer for a pool that
    // is there and one that is not, on both planes.
    for (path, sessions) in [
        (pool_path("rg1", "{}"), false),
        (format!("{}/listSessions", endpoint("rg1", "{}")), true),
    ] {
        let mut answers = Vec::new();
        for pool in ["pool1", "nosuchpool"] {
            let url = api.url(&path.replace("{}", pool));
            let tok = token("nobody", sessions);
            answers.push(send_as(&api, Method::GET, &url, None, Some(&tok)).await);
        }
        for r in &answers {
            check(r, FORBIDDEN, &path);
        }
        assert_eq!(
            answers[0].text.replace("pool1", "P"),
            answers[1].text.replace("nosuchpool", "P"),
            "{path}"
        );
    }
}

/// Routes any valid management token may call (their answers are filtered to the caller).
fn signed_in_routes(api: &Api) -> Vec<(Method, String)> {
    sandpool_server::route_rules(&sandpool_server::all_routes(), api.srv.auth())
        .entries()
        .into_iter()
        .filter(|(_, _, rule)| *rule == Some(sandpool_auth::Rule::SignedIn))
        .map(|(m, t, _)| (m.as_str().parse().expect("method"), t))
        .collect()
}

/// Routes API.md lets anyone call (matched on the end of a documented path).
const PUBLIC_ROUTES: &[&str] = &[
    "/metadata/endpoints",
    "/healthz",
    "/readyz",
    "/openapi.json",
    "/oauth2/token",
    "/oauth2/v2.0/token",
    "/.well-known/openid-configuration",
    "/.well-known/jwks.json",
];

/// A documented route template with every `{parameter}` filled in (group `rg1`, the test
/// subscription, and names that need not exist: a refusal never depends on existence).
fn concrete_path(template: &str) -> String {
    let scope = format!(
        "subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.App/sessionPools/pool1"
    );
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .map(|e| start + e)
            .expect("closing brace");
        let name = rest[start + 1..end]
            .trim_start_matches('*')
            .to_ascii_lowercase();
        out.push_str(if name.contains("subscription") {
            SUB
        } else if name.contains("resourcegroup") {
            "rg1"
        } else if name.contains("scope") || name.contains("resourceid") {
            // A full resource id where a scope goes: a pool of rg1.
            &scope
        } else {
            "name1"
        });
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    if out.starts_with('/') {
        out
    } else {
        format!("/{out}")
    }
}

/// Token and discovery endpoints answer without `api-version` (OAuth clients never send one),
/// at the root and under the tenant segment MSAL and azure-identity put in front; each issues
/// a token that works. Everything else still needs `api-version`.
async fn token_endpoints_under_tenant_prefixes(store: TestStore) {
    let api = Api::start(store).await;
    let (id, _) = executor_of_pool1(&api, "msal").await;
    let base = api.srv.base_url.clone();
    let tenant = api.srv.auth().tenant_id().to_owned();
    let no_token = [("authorization", "")];
    // Each discovery document names the token endpoint beside it; a client follows that.
    let mut token_urls = vec![format!("{base}/oauth2/v2.0/token")];
    let mut documents = vec![(
        "/.well-known/openid-configuration".to_owned(),
        "/oauth2/token".to_owned(),
    )];
    for t in [tenant.as_str(), "common", "organizations"] {
        documents.push((
            format!("/{t}/.well-known/openid-configuration"),
            format!("/{t}/oauth2/token"),
        ));
        documents.push((
            format!("/{t}/v2.0/.well-known/openid-configuration"),
            format!("/{t}/oauth2/v2.0/token"),
        ));
    }
    for (path, token_path) in documents {
        let r = api
            .raw(Method::GET, &format!("{base}{path}"), None, &no_token)
            .await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        assert_eq!(r.json["issuer"], base.as_str(), "{path}");
        assert_eq!(
            r.json["token_endpoint"],
            format!("{base}{token_path}"),
            "{path}"
        );
        // MSAL refuses a document without one, though it never calls it here.
        assert!(
            r.json["authorization_endpoint"].is_string(),
            "{path}: {}",
            r.text
        );
        token_urls.push(
            r.json["token_endpoint"]
                .as_str()
                .expect("token_endpoint")
                .to_owned(),
        );
    }
    for url in token_urls {
        // v2 endpoints take a scope, v1 a resource; each accepts both.
        let target = if url.ends_with("/v2.0/token") {
            ("scope", "https://dynamicsessions.io/.default")
        } else {
            ("resource", DYNAMIC_SESSIONS_AUDIENCE)
        };
        let r = token_request_at(&api, &url, &id.client_id, &id.secret, target).await;
        assert_eq!(r.status, 200, "{url}: {}", r.text);
        let token = r.json["access_token"].as_str().expect("access_token");
        let r = with_token(
            &api,
            Method::POST,
            &format!("{}/executions?identifier=msal-1", endpoint("rg1", "pool1")),
            token,
            Some(json!({"shellCommand": "echo via token"})),
        )
        .await;
        assert_eq!(r.status, 200, "token of {url}: {}", r.text);
        assert_eq!(r.json["result"]["stdout"], "via token\n", "{}", r.text);
    }
    let r = api
        .raw(
            Method::GET,
            &format!("{base}/.well-known/jwks.json"),
            None,
            &no_token,
        )
        .await;
    r.assert_status(200);
    assert!(r.json["keys"].as_array().is_some_and(|k| !k.is_empty()));
    for path in ["/healthz", "/readyz", "/openapi.json"] {
        api.raw(Method::GET, &format!("{base}{path}"), None, &no_token)
            .await
            .assert_status(200);
    }
    // A tenant this server is not: no such route, and still no demand for `api-version`.
    let r = token_request_at(
        &api,
        &format!("{base}/00000000-0000-0000-0000-00000000beef/oauth2/v2.0/token"),
        &id.client_id,
        &id.secret,
        ("scope", "https://dynamicsessions.io/.default"),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text);
    // The exemption is that narrow: the rest of the API still requires `api-version`.
    for path in [
        rg_id("rg1"),
        format!("/{tenant}/subscriptions/{SUB}"),
        "/oauth2/authorize".into(),
    ] {
        api.raw(Method::GET, &format!("{base}{path}"), None, &[])
            .await
            .assert_error(400, "MissingApiVersionParameter");
    }
}

/// Identities: the secret is answered once, never by GET or list; a reset replaces it.
async fn identity_secrets(store: TestStore) {
    let api = Api::start(store).await;
    api.group("rg1").await;
    let id = create_identity(&api, "rg1", "app").await;
    assert!(id.secret.len() >= 32);
    let get = api.get(&identity_path("rg1", "app")).await;
    get.assert_status(200);
    assert!(
        get.json["properties"].get("clientSecret").is_none(),
        "{}",
        get.text
    );
    assert_eq!(
        get.json["properties"]["principalId"],
        id.principal_id.as_str()
    );
    let list = api
        .get(&format!(
            "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities",
            rg_id("rg1")
        ))
        .await;
    assert!(!list.text.contains(&id.secret));
    // A second PUT keeps the ids and shows no secret.
    let again = api
        .put(&identity_path("rg1", "app"), json!({"location": "westus"}))
        .await;
    again.assert_status(200);
    assert!(again.json["properties"].get("clientSecret").is_none());
    assert_eq!(again.json["properties"]["clientId"], id.client_id.as_str());
    token_of(&api, &id, MANAGEMENT_AUDIENCE).await;

    let reset = api
        .call(
            Method::POST,
            &format!("{}/resetClientSecret", identity_path("rg1", "app")),
            None,
        )
        .await;
    reset.assert_status(200);
    let new_secret = reset.json["clientSecret"]
        .as_str()
        .expect("clientSecret")
        .to_owned();
    assert_ne!(new_secret, id.secret);
    let r = token_request(&api, &id.client_id, &id.secret, MANAGEMENT_AUDIENCE).await;
    r.assert_status(401);
    assert_eq!(r.json["error"], "invalid_client");
    let renewed = Identity {
        secret: new_secret,
        ..id
    };
    token_of(&api, &renewed, MANAGEMENT_AUDIENCE).await;
    api.call(
        Method::POST,
        &format!("{}/resetClientSecret", identity_path("rg1", "missing")),
        None,
    )
    .await
    .assert_error(404, "ResourceNotFound");

    // Unknown roles and malformed assignments are refused.
    let path = format!(
        "{}/providers/Microsoft.Authorization/roleAssignments/{}",
        rg_id("rg1"),
        uuid::Uuid::new_v4()
    );
    api.put(
        &path,
        json!({"properties": {"roleDefinitionId": "/subscriptions/x/providers/Microsoft.Authorization/roleDefinitions/00000000-0000-0000-0000-000000000000", "principalId": renewed.principal_id}}),
    )
    .await
    .assert_error(400, "RoleDefinitionDoesNotExist");
    api.put(
        &path,
        json!({"properties": {"roleDefinitionId": role_id(&api, "Reader").await, "principalId": renewed.principal_id, "scope": rg_id("rg2")}}),
    )
    .await
    .assert_error(400, "InvalidRoleAssignmentScope");
    api.get(&format!(
        "{}/providers/Microsoft.Authorization/roleDefinitions?$filter=foo%20eq%201",
        rg_id("rg1")
    ))
    .await
    .assert_error(400, "InvalidFilter");
}

/// A template is checked resource by resource: rights on the deployment alone do not let a
/// caller create what it could not PUT directly.
async fn deployment_checks_each_resource(store: TestStore) {
    let api = Api::start(store).await;
    api.group("rg1").await;
    let dep = format!(
        "{}/providers/Microsoft.Resources/deployments/d1",
        rg_id("rg1")
    );
    let empty = json!({"properties": {"mode": "Incremental", "template": {"resources": []}}});
    api.put(&dep, empty.clone()).await.assert_status(201);
    let id = create_identity(&api, "rg1", "deployer").await;
    // Contributor on the deployment resource only.
    assign(&api, &dep, "Contributor", &id.principal_id).await;
    let token = token_of(&api, &id, MANAGEMENT_AUDIENCE).await;

    with_token(&api, Method::PUT, &dep, &token, Some(empty))
        .await
        .assert_status(200);
    let with_pool = json!({"properties": {"mode": "Incremental", "template": {"resources": [
        {"type": "Microsoft.App/sessionPools", "apiVersion": "2024-02-02-preview", "name": "sneaky",
         "location": "westus", "properties": {"poolManagementType": "Dynamic", "containerType": "Shell"}}
    ]}}});
    let r = with_token(&api, Method::PUT, &dep, &token, Some(with_pool.clone())).await;
    r.assert_error(403, "AuthorizationFailed");
    assert_eq!(r.json["error"]["target"], "resources[0]", "{}", r.text);
    api.get(&pool_path("rg1", "sneaky"))
        .await
        .assert_error(404, "ResourceNotFound");
    // The admin may.
    api.put(&dep, with_pool).await.assert_status(200);
    api.get(&pool_path("rg1", "sneaky"))
        .await
        .assert_status(200);
}

/// Issue 11 §2: a resource named like a path keyword (`providers`, in any casing) once turned its
/// routes into "any valid token will do". A caller with no role at all tries what was reproduced
/// by hand: create group `providers`, create or delete a pool and an identity named so, reset such
/// an identity's secret, run a command on such a cluster and read its results. Each is refused
/// with 403 and nothing in the store changes.
async fn keyword_names_do_not_lower_the_bar(store: TestStore) {
    let api = Api::start(store).await;
    api.group("rg1").await;
    let nobody = create_identity(&api, "rg1", "nobody").await;
    let victim = create_identity(&api, "rg1", "providers").await;
    api.put(
        &cluster_path("rg1", "providers"),
        json!({"location": "westus", "properties": {"kubeconfig": "cluster-credential"}}),
    )
    .await
    .assert_status(201);
    let token = token_of(&api, &nobody, MANAGEMENT_AUDIENCE).await;
    let before = sandpool_server::testing::store_snapshot(&api.srv.database_url).await;

    let pool_body = json!({"location": "westus", "properties": {
        "poolManagementType": "Dynamic", "containerType": "Shell",
        "sessionNetworkConfiguration": {"status": "EgressDisabled"}}});
    let attempts: Vec<(Method, String, Option<Value>)> = vec![
        (Method::PUT, rg_id("providers"), Some(json!({"location": "westus"}))),
        (Method::PUT, format!("/subscriptions/{SUB}/resourcegroups/Providers"), Some(json!({"location": "westus"}))),
        (Method::PUT, pool_path("rg1", "providers"), Some(pool_body.clone())),
        (Method::PUT, format!("/subscriptions/{SUB}/resourceGroups/rg1/PROVIDERS/Microsoft.App/sessionPools/Providers"), Some(pool_body)),
        (Method::PUT, identity_path("rg1", "providers"), Some(json!({"location": "westus"}))),
        (Method::POST, format!("{}/resetClientSecret", identity_path("rg1", "providers")), None),
        (Method::POST, format!("{}/runCommand", cluster_path("rg1", "providers")), Some(json!({"command": "cat /kubeconfig"}))),
        (Method::GET, format!("{}/commandResults/abc123", cluster_path("rg1", "providers")), None),
        (Method::DELETE, identity_path("rg1", "providers"), None),
        (Method::DELETE, cluster_path("rg1", "providers"), None),
    ];
    let mut let_through = Vec::new();
    for (method, path, body) in attempts {
        let r = with_token(&api, method.clone(), &path, &token, body).await;
        if r.status != 403 || r.json["error"]["code"] != "AuthorizationFailed" {
            let_through.push(format!("{method} {path} -> {} {}", r.status, r.text));
        }
    }
    assert!(
        let_through.is_empty(),
        "let through:\n{}",
        let_through.join("\n")
    );
    let after = sandpool_server::testing::store_snapshot(&api.srv.database_url).await;
    assert_eq!(before, after, "a refused request changed the store");
    // The identity's own secret still works: nobody took it over.
    token_of(&api, &victim, MANAGEMENT_AUDIENCE).await;
}

/// Names a path parameter takes in [`route_matrix`], chosen by the literal segment before it.
fn matrix_value(previous: &str, pool: &str) -> String {
    match previous {
        "subscriptions" => SUB.into(),
        "resourceGroups" => "rg1".into(),
        "sessionPools" => pool.into(),
        "managedClusters" => "c1".into(),
        "deployments" => "d1".into(),
        "userAssignedIdentities" => "id1".into(),
        "roleAssignments" => uuid::Uuid::new_v4().to_string(),
        "roleDefinitions" => sandpool_auth::READER.guid.into(),
        "commandResults" => "abc123".into(),
        "executions" => "x1".into(),
        "operationResults" => "op1".into(),
        "files" | "content" => "f.txt".into(),
        "providers" => "Microsoft.App".into(),
        other => panic!("no matrix value for a parameter after '{other}': extend matrix_value"),
    }
}

/// `template` with each `{parameter}` replaced: by `fill(previous segment)`.
fn fill_template(template: &str, fill: &dyn Fn(&str) -> String) -> String {
    let segs: Vec<&str> = template.split('/').collect();
    segs.iter()
        .enumerate()
        .map(|(i, seg)| {
            if seg.starts_with('{') {
                fill(if i > 0 { segs[i - 1] } else { "" })
            } else {
                (*seg).to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Resource names equal to path keywords: each must stay a name.
const KEYWORD_NAMES: &[&str] = &[
    "providers",
    "Providers",
    "PROVIDERS",
    "subscriptions",
    "resourceGroups",
    "resourcegroups",
    "Microsoft.App",
    "Microsoft.Authorization",
    "Microsoft.ContainerService",
    "Microsoft.Resources",
    "sessionPools",
    "managedClusters",
    "roleAssignments",
    "runCommand",
    "executions",
];

/// Issue 11 §2: an authorization matrix generated from the route table the enforcement layer
/// uses (every route × method the server serves; a route without a declaration fails the test),
/// for callers without a token, with the wrong audience, without a role, with a role at another
/// scope, Reader (reads only), Session Executor (its pool's data plane only) and the admin, and
/// with resource names equal to path keywords. The expectations come from API.md's contract
/// (which plane, which method, where the role is), not from the declarations under test. No
/// refusal changes the store.
async fn route_matrix(store: TestStore) {
    let api = Api::start(store).await;
    api.group("rg1").await;
    api.group("rg2").await;
    create_pool(&api, "rg1", "pool1").await;
    create_pool(&api, "rg1", "pool2").await;
    create_identity(&api, "rg1", "id1").await;
    api.put(
        &cluster_path("rg1", "c1"),
        json!({"location": "westus", "properties": {"kubeconfig": "matrix-kubeconfig"}}),
    )
    .await
    .assert_status(201);
    api.put(
        &format!(
            "{}/providers/Microsoft.Resources/deployments/d1",
            rg_id("rg1")
        ),
        json!({"properties": {"mode": "Incremental", "template": {"resources": []}}}),
    )
    .await
    .assert_status(201);

    let nobody = create_identity(&api, "rg2", "nobody").await;
    let elsewhere = create_identity(&api, "rg2", "elsewhere").await;
    assign(&api, &rg_id("rg2"), "Owner", &elsewhere.principal_id).await;
    let reader = create_identity(&api, "rg2", "reader").await;
    assign(
        &api,
        &format!("/subscriptions/{SUB}"),
        "Reader",
        &reader.principal_id,
    )
    .await;
    let executor = create_identity(&api, "rg2", "executor").await;
    assign(
        &api,
        &pool_path("rg1", "pool1"),
        SESSION_EXECUTOR,
        &executor.principal_id,
    )
    .await;
    let mut tokens = std::collections::HashMap::new();
    for (name, id) in [
        ("nobody", &nobody),
        ("elsewhere", &elsewhere),
        ("reader", &reader),
        ("executor", &executor),
    ] {
        for aud in [MANAGEMENT_AUDIENCE, DYNAMIC_SESSIONS_AUDIENCE] {
            tokens.insert((name, aud), token_of(&api, id, aud).await);
        }
    }
    let admin = |aud: &str| {
        sandpool_server::testing::admin_token(api.srv.auth(), api.srv.data_dir.path(), aud)
    };

    // The table the layer enforces, as the server builds it.
    let rules = sandpool_server::route_rules(&sandpool_server::all_routes(), api.srv.auth());
    assert_eq!(
        rules.undeclared(),
        Vec::<String>::new(),
        "routes without a rule"
    );
    let routes: Vec<(Method, String)> = rules
        .entries()
        .into_iter()
        .filter(|(_, _, rule)| {
            !matches!(
                rule,
                Some(sandpool_auth::Rule::Public | sandpool_auth::Rule::SignedIn)
            )
        })
        .map(|(m, t, _)| (m.as_str().parse().expect("method"), t))
        .collect();
    assert!(routes.len() >= 80, "only {} protected routes", routes.len());

    let url = |path: &str, data_plane: bool| {
        let q = if data_plane {
            "?identifier=matrix-1"
        } else {
            ""
        };
        api.url(&format!("{path}{q}"))
    };
    let body = json!({});
    let before = sandpool_server::testing::store_snapshot(&api.srv.database_url).await;
    let mut signed_wrong: Vec<String> = Vec::new();
    let check_signed = |r: &Resp, status: u16, code: &str, what: String| {
        (r.status != status || (!code.is_empty() && r.json["error"]["code"] != code))
            .then(|| format!("{what}: {} {}", r.status, r.text))
    };
    // Signed-in routes: a token is needed, of the management audience, and then each caller
    // sees only the subscriptions it holds a role in (none for one without roles).
    for (method, template) in signed_in_routes(&api) {
        let path = fill_template(&template, &|prev| matrix_value(prev, "pool1"));
        let u = api.url(&path);
        let what = |who: &str| format!("{method} {template} / {who}");
        let r = send_as(&api, method.clone(), &u, None, None).await;
        signed_wrong.extend(check_signed(
            &r,
            401,
            "InvalidAuthenticationToken",
            what("no token"),
        ));
        let r = send_as(
            &api,
            method.clone(),
            &u,
            None,
            Some(&admin(DYNAMIC_SESSIONS_AUDIENCE)),
        )
        .await;
        signed_wrong.extend(check_signed(
            &r,
            401,
            "InvalidAuthenticationToken",
            what("wrong audience"),
        ));
        let r = send_as(
            &api,
            method.clone(),
            &u,
            None,
            Some(&tokens[&("nobody", MANAGEMENT_AUDIENCE)]),
        )
        .await;
        match template.as_str() {
            "/subscriptions" => {
                if r.status != 200 || r.json["value"] != json!([]) {
                    signed_wrong.push(format!(
                        "{} / nobody sees a subscription: {}",
                        what(""),
                        r.text
                    ));
                }
            }
            "/subscriptions/{subscriptionId}" => signed_wrong.extend(check_signed(
                &r,
                404,
                "SubscriptionNotFound",
                what("nobody"),
            )),
            _ => signed_wrong.extend(check_signed(&r, 200, "", what("nobody"))),
        }
    }
    let subs = send_as(
        &api,
        Method::GET,
        &api.url("/subscriptions"),
        None,
        Some(&tokens[&("reader", MANAGEMENT_AUDIENCE)]),
    )
    .await;
    if subs.json["value"][0]["subscriptionId"] != SUB
        || subs.json["value"].as_array().map(Vec::len) != Some(1)
    {
        signed_wrong.push(format!(
            "the reader sees exactly its subscription: {}",
            subs.text
        ));
    }
    let mut wrong = Vec::new();
    wrong.append(&mut signed_wrong);
    let mut expect = |r: &Resp, status: u16, code: &str, what: String| {
        if r.status != status || (!code.is_empty() && r.json["error"]["code"] != code) {
            wrong.push(format!("{what}: {} {}", r.status, r.text));
        }
    };
    for (method, template) in &routes {
        // API.md: the data plane lives below a pool's management endpoint.
        let data_plane = template.contains("/sessionPools/{poolName}");
        let (aud, other_aud) = if data_plane {
            (DYNAMIC_SESSIONS_AUDIENCE, MANAGEMENT_AUDIENCE)
        } else {
            (MANAGEMENT_AUDIENCE, DYNAMIC_SESSIONS_AUDIENCE)
        };
        let path = fill_template(template, &|prev| matrix_value(prev, "pool1"));
        let u = url(&path, data_plane);
        let what = |who: &str| format!("{method} {template} / {who}");
        let send = |tok: Option<String>, u: String, m: Method| {
            let body = body.clone();
            let api = &api;
            async move { send_as(api, m, &u, Some(&body), tok.as_deref()).await }
        };
        let r = send(None, u.clone(), method.clone()).await;
        expect(&r, 401, "InvalidAuthenticationToken", what("no token"));
        let r = send(Some(admin(other_aud)), u.clone(), method.clone()).await;
        expect(
            &r,
            401,
            "InvalidAuthenticationToken",
            what("wrong audience"),
        );
        for who in ["nobody", "elsewhere"] {
            let r = send(Some(tokens[&(who, aud)].clone()), u.clone(), method.clone()).await;
            expect(&r, 403, "AuthorizationFailed", what(who));
        }
        // Reader reads management resources of its subscription, nothing else.
        let reads = !data_plane
            && *method == Method::GET
            && template.starts_with("/subscriptions/{subscriptionId}")
            && !template.contains("/commandResults/");
        if !reads {
            let r = send(
                Some(tokens[&("reader", aud)].clone()),
                u.clone(),
                method.clone(),
            )
            .await;
            expect(&r, 403, "AuthorizationFailed", what("reader"));
        }
        // The executor uses pool1's data plane only.
        if data_plane {
            let other = fill_template(template, &|prev| matrix_value(prev, "pool2"));
            let r = send(
                Some(tokens[&("executor", aud)].clone()),
                url(&other, true),
                method.clone(),
            )
            .await;
            expect(&r, 403, "AuthorizationFailed", what("executor, other pool"));
        } else {
            let r = send(
                Some(tokens[&("executor", aud)].clone()),
                u.clone(),
                method.clone(),
            )
            .await;
            expect(&r, 403, "AuthorizationFailed", what("executor"));
        }
        if *method == Method::GET {
            // HEAD is served by the GET handler; its answer has no body to check.
            let head = api
                .http
                .head(&u)
                .bearer_auth(&tokens[&("nobody", aud)])
                .send()
                .await
                .expect("HEAD");
            expect(&Resp::read(head).await, 403, "", what("nobody, HEAD"));
        }
        // Names equal to path keywords: everywhere, and below the reader's subscription.
        for kw in KEYWORD_NAMES {
            let everywhere = fill_template(template, &|_| kw.to_string());
            let below = fill_template(template, &|prev| {
                if prev == "subscriptions" {
                    SUB.into()
                } else {
                    kw.to_string()
                }
            });
            for (p, who) in [
                (&everywhere, "nobody"),
                (&below, "nobody"),
                (&below, "elsewhere"),
            ] {
                let r = send(
                    Some(tokens[&(who, aud)].clone()),
                    url(p, data_plane),
                    method.clone(),
                )
                .await;
                expect(
                    &r,
                    403,
                    "AuthorizationFailed",
                    format!("{method} {p} / {who}"),
                );
            }
            if !reads {
                let r = send(
                    Some(tokens[&("reader", aud)].clone()),
                    url(&below, data_plane),
                    method.clone(),
                )
                .await;
                expect(
                    &r,
                    403,
                    "AuthorizationFailed",
                    format!("{method} {below} / reader"),
                );
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong answers:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    let after = sandpool_server::testing::store_snapshot(&api.srv.database_url).await;
    assert_eq!(before, after, "a refused request changed the store");

    // What each role does grant is let through (the handler answers, whatever it answers).
    let mut refused = Vec::new();
    for (method, template) in &routes {
        let data_plane = template.contains("/sessionPools/{poolName}");
        let aud = if data_plane {
            DYNAMIC_SESSIONS_AUDIENCE
        } else {
            MANAGEMENT_AUDIENCE
        };
        let path = fill_template(template, &|prev| matrix_value(prev, "pool1"));
        let reads = !data_plane
            && *method == Method::GET
            && template.starts_with("/subscriptions/{subscriptionId}")
            && !template.contains("/commandResults/");
        let mut callers = Vec::new();
        if reads {
            callers.push(("reader", tokens[&("reader", aud)].clone()));
        }
        if data_plane {
            callers.push(("executor", tokens[&("executor", aud)].clone()));
        }
        // The admin last: it may delete what the others read.
        if *method != Method::DELETE {
            callers.push(("admin", admin(aud)));
        }
        for (who, tok) in callers {
            let r = send_as(
                &api,
                method.clone(),
                &url(&path, data_plane),
                Some(&body),
                Some(&tok),
            )
            .await;
            if r.status == 401 || r.status == 403 {
                refused.push(format!(
                    "{method} {template} / {who}: {} {}",
                    r.status, r.text
                ));
            }
        }
    }
    assert!(refused.is_empty(), "refused:\n{}", refused.join("\n"));
}

both_stores!(
    keyword_names_do_not_lower_the_bar,
    route_matrix,
    tutorial_flow,
    token_endpoints_under_tenant_prefixes,
    denial_table,
    identity_secrets,
    deployment_checks_each_resource
);

/// The `kid` in a JWT's header.
fn key_id(token: &str) -> String {
    use base64::Engine as _;
    let header = token.split('.').next().expect("jwt header");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .expect("base64url header");
    let v: Value = serde_json::from_slice(&raw).expect("header json");
    v["kid"].as_str().expect("kid").to_owned()
}

/// `signing_key_max_age`: the running server replaces its signing key by itself; tokens signed
/// by the old key keep working, new ones carry the new key, and JWKS publishes both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_key_rotates_by_age() {
    let srv = sandpool_server::testing::TestServer::start_with(TestStore::Sqlite, |c| {
        c.create_defaults = false;
        c.signing_key_max_age = Some(std::time::Duration::from_secs(1));
    })
    .await;
    let api = Api::from(srv);
    api.group("rg1").await;
    let id = create_identity(&api, "rg1", "rotator").await;
    assign(&api, &rg_id("rg1"), "Reader", &id.principal_id).await;
    let old = token_of(&api, &id, MANAGEMENT_AUDIENCE).await;

    let mut new = old.clone();
    for _ in 0..300 {
        new = token_of(&api, &id, MANAGEMENT_AUDIENCE).await;
        if key_id(&new) != key_id(&old) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_ne!(key_id(&new), key_id(&old), "the signing key never rotated");

    let jwks = api
        .raw(
            Method::GET,
            &api.srv.url("/.well-known/jwks.json"),
            None,
            &[],
        )
        .await;
    jwks.assert_status(200);
    let kids: Vec<&str> = jwks.json["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert!(kids.contains(&key_id(&old).as_str()), "{kids:?}");
    assert!(kids.contains(&key_id(&new).as_str()), "{kids:?}");
    for token in [&old, &new] {
        with_token(&api, Method::GET, &rg_id("rg1"), token, None)
            .await
            .assert_status(200);
    }
}

/// Everything the process logs (all tests of this binary), for [`secrets_stay_out_of_logs`].
fn captured_logs() -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    use std::sync::{Arc, Mutex, OnceLock};
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buf);
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || LogWriter(Arc::clone(&sink)))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        buf
    })
    .clone()
}

struct LogWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Client secrets, tokens, the admin's secret and the signing key never reach the server's log
/// (captured at DEBUG) or an answer, whatever succeeds or fails.
async fn secrets_stay_out_of_logs(store: TestStore) {
    let logs = captured_logs();
    let api = Api::start(store).await;
    api.group("rg1").await;
    create_pool(&api, "rg1", "pool1").await;
    let id = create_identity(&api, "rg1", "logged").await;
    let first = token_of(&api, &id, MANAGEMENT_AUDIENCE).await;
    let reset = api
        .call(
            Method::POST,
            &format!("{}/resetClientSecret", identity_path("rg1", "logged")),
            None,
        )
        .await;
    reset.assert_status(200);
    let new_secret = reset.json["clientSecret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let mut answers = Vec::new();
    // Failures: old secret, secret under another client id, unknown resource.
    for (client, secret, resource) in [
        (
            id.client_id.as_str(),
            id.secret.as_str(),
            MANAGEMENT_AUDIENCE,
        ),
        (
            "00000000-0000-0000-0000-000000000001",
            new_secret.as_str(),
            MANAGEMENT_AUDIENCE,
        ),
        (
            id.client_id.as_str(),
            new_secret.as_str(),
            "https://graph.microsoft.com/",
        ),
    ] {
        let r = token_request(&api, client, secret, resource).await;
        assert!(r.status >= 400, "{}", r.text);
        answers.push(r.text);
    }
    let renewed = Identity {
        secret: new_secret.clone(),
        principal_id: id.principal_id.clone(),
        client_id: id.client_id.clone(),
    };
    let second = token_of(&api, &renewed, DYNAMIC_SESSIONS_AUDIENCE).await;
    // Denied and refused requests log their reasons.
    answers.push(
        with_token(&api, Method::GET, &pool_path("rg1", "pool1"), &first, None)
            .await
            .text,
    );
    answers.push(
        with_token(&api, Method::GET, &pool_path("rg1", "pool1"), &second, None)
            .await
            .text,
    );
    answers.push(api.get(&identity_path("rg1", "logged")).await.text);

    let admin = sandpool_auth::load_local_admin(api.srv.data_dir.path()).expect("admin.json");
    let mut secrets = vec![
        ("first client secret", id.secret.clone()),
        ("reset client secret", new_secret),
        ("management token", first),
        ("session token", second),
        ("admin secret", admin.client_secret.expose().to_owned()),
    ];
    let keys = std::fs::read_dir(api.srv.data_dir.path().join("keys")).expect("keys dir");
    for entry in keys {
        let path = entry.expect("entry").path();
        let v: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("key file")).expect("key json");
        let pkcs8 = v["pkcs8"].as_str().expect("pkcs8").to_owned();
        secrets.push(("signing key", pkcs8));
    }
    let text =
        String::from_utf8_lossy(&logs.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    // The capture works: the server logged this identity's token issue and denial.
    assert!(
        text.contains(&id.principal_id),
        "the server's log was not captured"
    );
    for (what, secret) in &secrets {
        assert!(!text.contains(secret.as_str()), "{what} in the log");
        for a in &answers {
            assert!(!a.contains(secret.as_str()), "{what} in an answer: {a}");
        }
    }
}

both_stores!(secrets_stay_out_of_logs);

/// Issue 11 §4: a deployment's `secureString`/`secureObject` parameters reach the resources
/// that use them but are never answered (PUT or GET of the deployment), stored in the
/// deployment's record, or logged. Outputs follow ARM: a secure output answers its type only.
async fn secure_deployment_parameters_stay_secret(store: TestStore) {
    let logs = captured_logs();
    let api = Api::start(store).await;
    api.group("rg1").await;
    let (secret, object_secret) = ("pw-4b1d-clear-text", "obj-77aa-clear-text");
    let dep = format!(
        "{}/providers/Microsoft.Resources/deployments/sec1",
        rg_id("rg1")
    );
    let body = json!({"properties": {"mode": "Incremental",
    "template": {
        "parameters": {
            "password": {"type": "secureString"},
            "settings": {"type": "secureObject"},
            "poolName": {"type": "string"},
        },
        "resources": [{
            "type": "Microsoft.App/sessionPools", "apiVersion": "2025-02-02-preview",
            "name": "[parameters('poolName')]", "location": "westus",
            "properties": {"poolManagementType": "Dynamic", "containerType": "Shell",
                "sessionNetworkConfiguration": {"status": "EgressDisabled"},
                "secrets": [{"name": "pw", "value": "[parameters('password')]"}]},
        }],
        "outputs": {
            "password": {"type": "secureString", "value": "[parameters('password')]"},
            "settings": {"type": "secureObject", "value": "[parameters('settings')]"},
            "pool": {"type": "string", "value": "[parameters('poolName')]"},
        },
    },
    "parameters": {
        "password": {"value": secret},
        "settings": {"value": {"token": object_secret}},
        "poolName": {"value": "securepool"},
    }}});
    let put = api.put(&dep, body).await;
    put.assert_status(201);
    let get = api.get(&dep).await;
    get.assert_status(200);
    for r in [&put, &get] {
        let p = &r.json["properties"];
        assert_eq!(
            p["parameters"]["password"],
            json!({"type": "SecureString"}),
            "{}",
            r.text
        );
        assert_eq!(
            p["parameters"]["settings"],
            json!({"type": "SecureObject"}),
            "{}",
            r.text
        );
        assert_eq!(
            p["parameters"]["poolName"],
            json!({"type": "String", "value": "securepool"})
        );
        assert_eq!(
            p["outputs"]["password"],
            json!({"type": "SecureString"}),
            "{}",
            r.text
        );
        assert_eq!(
            p["outputs"]["settings"],
            json!({"type": "SecureObject"}),
            "{}",
            r.text
        );
        assert_eq!(
            p["outputs"]["pool"],
            json!({"type": "String", "value": "securepool"})
        );
    }
    let pool = api.get(&pool_path("rg1", "securepool")).await;
    pool.assert_status(200);
    // A pool's secrets are write-only (API.md): the name is answered, the value is not.
    assert_eq!(
        pool.json["properties"]["secrets"],
        json!([{"name": "pw"}]),
        "{}",
        pool.text
    );
    let again = api
        .patch(&pool_path("rg1", "securepool"), json!({"tags": {"a": "b"}}))
        .await;
    again.assert_status(200);
    assert_eq!(
        again.json["properties"]["secrets"],
        json!([{"name": "pw"}]),
        "{}",
        again.text
    );
    let rows = sandpool_server::testing::store_snapshot(&api.srv.database_url).await;
    let deployment_row = rows
        .iter()
        .find(|r| r.starts_with("resources:") && r.contains("deployments/sec1"))
        .expect("the deployment is stored");
    // The pool's secret value is kept (in the secrets table), through the PATCH too.
    assert!(
        rows.iter()
            .any(|r| r.starts_with("secrets:") && r.contains("poolSecrets") && r.contains(secret)),
        "the pool's secret value was lost"
    );
    let text =
        String::from_utf8_lossy(&logs.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    for s in [secret, object_secret] {
        for (what, t) in [
            ("PUT answer", &put.text),
            ("GET answer", &get.text),
            ("pool GET", &pool.text),
            ("stored deployment", deployment_row),
            ("log", &text),
        ] {
            assert!(!t.contains(s), "{s} in the {what}");
        }
    }
}

both_stores!(secure_deployment_parameters_stay_secret);
