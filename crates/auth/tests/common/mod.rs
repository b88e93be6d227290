//! Shared test fixtures: an in-memory [`AuthStore`] (the server's real store is built in
//! parallel) and a real axum server on an ephemeral loopback port with the auth layer on it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::any;
use axum::{Json, Router};
use sandpool_auth::{
    generate_client_secret, Auth, AuthConfig, AuthStore, ClientCredential, Principal,
    RoleAssignment, RoleDefinition, RouteRules, Rule, Secret, StoreError, RUN_COMMAND_ACTION,
};

#[derive(Default)]
struct State {
    active: HashMap<String, bool>,
    credentials: HashMap<String, ClientCredential>,
    assignments: Vec<(String, RoleAssignment)>,
}

/// Identities and assignments in memory.
#[derive(Default, Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

/// A created identity and its one-time secret.
#[derive(Debug, Clone)]
pub struct Identity {
    pub principal_id: String,
    pub client_id: String,
    pub secret: Secret,
}

impl MemoryStore {
    pub fn create_identity(&self) -> Identity {
        let (secret, hash) = generate_client_secret().unwrap();
        let identity = Identity {
            principal_id: uuid::Uuid::new_v4().to_string(),
            client_id: uuid::Uuid::new_v4().to_string(),
            secret,
        };
        let mut s = self.state.lock().unwrap();
        s.active.insert(identity.principal_id.clone(), true);
        s.credentials.insert(
            identity.client_id.clone(),
            ClientCredential {
                principal_id: identity.principal_id.clone(),
                secret_hash: hash,
            },
        );
        identity
    }

    /// Stores an identity made by [`Auth::new_identity`], as the server would.
    pub fn insert(&self, new: &sandpool_auth::NewIdentity) -> Identity {
        let mut s = self.state.lock().unwrap();
        s.active.insert(new.principal_id.clone(), true);
        s.credentials.insert(
            new.client_id.clone(),
            ClientCredential {
                principal_id: new.principal_id.clone(),
                secret_hash: new.secret_hash.clone(),
            },
        );
        Identity {
            principal_id: new.principal_id.clone(),
            client_id: new.client_id.clone(),
            secret: new.secret.clone(),
        }
    }

    /// Replaces the identity's secret; the old one stops working.
    pub fn reset_secret(&self, identity: &Identity) -> Secret {
        let (secret, hash) = generate_client_secret().unwrap();
        let mut s = self.state.lock().unwrap();
        s.credentials
            .get_mut(&identity.client_id)
            .unwrap()
            .secret_hash = hash;
        secret
    }

    pub fn delete_identity(&self, identity: &Identity) {
        let mut s = self.state.lock().unwrap();
        s.active.insert(identity.principal_id.clone(), false);
        s.credentials.remove(&identity.client_id);
    }

    pub fn assign(&self, principal_id: &str, role: &RoleDefinition, scope: &str) {
        self.state.lock().unwrap().assignments.push((
            principal_id.to_string(),
            RoleAssignment {
                scope: scope.to_string(),
                role_definition_id: role.id_at(scope),
            },
        ));
    }
}

impl AuthStore for MemoryStore {
    async fn role_assignments_for(
        &self,
        principal_id: &str,
    ) -> Result<Vec<RoleAssignment>, StoreError> {
        let s = self.state.lock().unwrap();
        Ok(s.assignments
            .iter()
            .filter(|(p, _)| p == principal_id)
            .map(|(_, a)| a.clone())
            .collect())
    }

    async fn principal_active(&self, principal_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .state
            .lock()
            .unwrap()
            .active
            .get(principal_id)
            .copied()
            .unwrap_or(false))
    }

    async fn client_credential(
        &self,
        client_id: &str,
    ) -> Result<Option<ClientCredential>, StoreError> {
        Ok(self
            .state
            .lock()
            .unwrap()
            .credentials
            .get(client_id)
            .cloned())
    }
}

/// A running server: the auth router merged into a small echo app whose routes declare their
/// rules, all behind the layer.
pub struct TestServer {
    pub base: String,
    pub auth: Auth<MemoryStore>,
    pub store: MemoryStore,
    pub data_dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers 200 with the caller's principal id, or 404 for paths naming `missing` (so a test
/// can tell "denied before lookup" from "not found").
async fn echo(req: Request) -> axum::response::Response {
    let principal = req.extensions().get::<Principal>().cloned();
    if req.uri().path().contains("missing") {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    Json(serde_json::json!({
        "principal": principal.as_ref().map(|p| p.id.clone()),
        "kind": principal.as_ref().map(|p| format!("{:?}", p.kind)),
    }))
    .into_response()
}

const RG: &str = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}";

/// The test app's routes (each answered by [`echo`]) and what each method of each requires,
/// declared as the server declares its own.
fn routes() -> Vec<(String, Vec<(Method, Rule)>)> {
    let verbs = |action_of: &dyn Fn(&str) -> String, scope: &str| {
        [
            (Method::GET, "read"),
            (Method::PUT, "write"),
            (Method::PATCH, "write"),
            (Method::POST, "write"),
            (Method::DELETE, "delete"),
        ]
        .into_iter()
        .map(|(m, v)| (m, Rule::manage(action_of(v), scope)))
        .collect::<Vec<_>>()
    };
    let pool = format!("{RG}/providers/Microsoft.App/sessionPools/{{name}}");
    let cluster = format!("{RG}/providers/Microsoft.ContainerService/managedClusters/{{name}}");
    let assignments = |v: &str| format!("Microsoft.Authorization/roleAssignments/{v}");
    vec![
        ("/healthz".into(), vec![(Method::GET, Rule::Public)]),
        ("/readyz".into(), vec![(Method::GET, Rule::Public)]),
        ("/openapi.json".into(), vec![(Method::GET, Rule::Public)]),
        (
            "/metrics".into(),
            vec![(
                Method::GET,
                Rule::manage("Microsoft.Insights/metrics/read", "/"),
            )],
        ),
        (
            RG.into(),
            verbs(
                &|v| format!("Microsoft.Resources/subscriptions/resourceGroups/{v}"),
                RG,
            ),
        ),
        (
            pool.clone(),
            verbs(&|v| format!("Microsoft.App/sessionPools/{v}"), &pool),
        ),
        (
            cluster.clone(),
            verbs(
                &|v| format!("Microsoft.ContainerService/managedClusters/{v}"),
                &cluster,
            ),
        ),
        (
            format!("{cluster}/runCommand"),
            vec![(Method::POST, Rule::manage(RUN_COMMAND_ACTION, &cluster))],
        ),
        (
            format!("{cluster}/commandResults/{{commandId}}"),
            vec![(Method::GET, Rule::manage(RUN_COMMAND_ACTION, &cluster))],
        ),
        (
            format!(
                "{RG}/providers/Microsoft.Authorization/roleAssignments/{{roleAssignmentName}}"
            ),
            verbs(&assignments, RG),
        ),
        (
            "/subscriptions/{subscriptionId}/providers/Microsoft.Authorization/roleAssignments"
                .into(),
            verbs(&assignments, "/subscriptions/{subscriptionId}"),
        ),
        (
            format!("{RG}/sessionPools/{{poolName}}/executions"),
            vec![(
                Method::POST,
                Rule::sessions(format!(
                    "{RG}/providers/Microsoft.App/sessionPools/{{poolName}}"
                )),
            )],
        ),
    ]
}

pub async fn start() -> TestServer {
    start_with_dir(tempfile::tempdir().unwrap()).await
}

pub async fn start_with_dir(data_dir: tempfile::TempDir) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let store = MemoryStore::default();
    let auth = Auth::open(AuthConfig::new(data_dir.path(), &base), store.clone()).unwrap();
    let mut app = Router::new();
    let mut rules = RouteRules::default();
    for (template, methods) in routes() {
        app = app.route(&template, any(echo));
        for (method, rule) in methods {
            rules.declare(method, &template, Some(rule));
        }
    }
    for (method, path) in auth.public_routes() {
        rules.declare(method, &path, Some(Rule::Public));
    }
    // A served route that declares nothing: the layer must refuse it.
    app = app.route("/undeclared", any(echo));
    rules.declare(Method::GET, "/undeclared", None);
    let app = app.merge(auth.router()).layer(auth.layer(rules));
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    TestServer {
        base,
        auth,
        store,
        data_dir,
        task,
    }
}

impl TestServer {
    /// Requests a token over HTTP with client credentials; returns (status, json body).
    pub async fn token_request(&self, form: &[(&str, &str)]) -> (StatusCode, serde_json::Value) {
        let resp = reqwest::Client::new()
            .post(format!("{}/oauth2/token", self.base))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
        (status, resp.json().await.unwrap())
    }

    pub async fn token_for(&self, identity: &Identity, resource: &str) -> String {
        let (status, body) = self
            .token_request(&[
                ("grant_type", "client_credentials"),
                ("client_id", &identity.client_id),
                ("client_secret", identity.secret.expose()),
                ("resource", resource),
            ])
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["access_token"].as_str().unwrap().to_string()
    }
}

/// Sends `method path` with an optional bearer token; returns status, headers and body text.
pub async fn call(
    base: &str,
    method: reqwest::Method,
    path: &str,
    auth_header: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = reqwest::Client::new().request(method, format!("{base}{path}"));
    if let Some(h) = auth_header {
        req = req.header("Authorization", h);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}
