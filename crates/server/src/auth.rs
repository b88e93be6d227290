//! The server's side of `sandpool-auth`: the [`AuthStore`] over the server's tables, the
//! enforcement layer and token endpoints wired into the app, the client secrets of
//! user-assigned identities (created once, shown once, reset on request), and the per-resource
//! checks a deployment needs (the layer only sees `deployments/write`).
//!
//! Identities and role assignments stay ordinary rows of `resources` (so resource-group and
//! single deletes cascade as for everything else); migration 100 adds two indexed columns to
//! that table so the lookups on every request are one index probe each:
//! `principal_key` (the principal an identity is, or a role assignment is for) and `client_key`
//! (an identity's client id, unique). The secret's hash is a row of `secrets`.

use crate::arm::{get_resource, Kind, Target};
use crate::http::{json, HttpResult};
use crate::routes::Routes;
use crate::store::{Store, StoredResource};
use crate::{AppState, Principal, PrincipalKind};
use axum::extract::{Path, Request, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::Router;
use sandpool_api::wire::{AccessToken, OAuthError, TokenRequest};
use sandpool_api::ApiError;
use sandpool_auth::{
    Audience, AuthConfig, AuthStore, ClientCredential, RoleAssignment, Rule, SecretHash, StoreError,
};
use serde_json::{json, Value};
use sqlx::Row;
use std::collections::HashMap;

/// The auth engine as the server runs it.
pub type ServerAuth = sandpool_auth::Auth<AuthTables>;

const ASSIGNMENT_TYPE_KEY: &str = "microsoft.authorization/roleassignments";
const IDENTITY_TYPE_KEY: &str = "microsoft.managedidentity/userassignedidentities";
/// Name of an identity's secret-hash row in `secrets`.
pub const SECRET_HASH: &str = "clientSecretHash";

/// [`AuthStore`] over the server's `resources` and `secrets` tables.
///
/// Every request asks for its principal's role assignments and whether it still exists: two
/// store reads. The answers are remembered per principal until this process commits any
/// resource write ([`Store::writes`]), so a revocation or deletion made through this server
/// applies to the very next request, or for [`DECISION_TTL`] at most: another server sharing a
/// PostgreSQL database changes rows this process does not see being written.
#[derive(Debug, Clone)]
pub struct AuthTables {
    store: Store,
    decisions: std::sync::Arc<std::sync::Mutex<HashMap<String, Decision>>>,
}

/// How long a remembered answer may be used without a write of this process invalidating it.
pub const DECISION_TTL: std::time::Duration = std::time::Duration::from_secs(1);
/// Principals remembered at most (the map starts over when full).
const DECISIONS_MAX: usize = 4096;

#[derive(Debug, Default)]
struct Decision {
    assignments: Option<(u64, std::time::Instant, Vec<RoleAssignment>)>,
    active: Option<(u64, std::time::Instant, bool)>,
}

fn fresh(writes: u64, at: std::time::Instant, now_writes: u64) -> bool {
    writes == now_writes && at.elapsed() < DECISION_TTL
}

impl AuthTables {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            decisions: Default::default(),
        }
    }

    fn decisions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Decision>> {
        // Plain data: a panic while holding the lock leaves nothing half-done.
        self.decisions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remember(&self, principal: String, update: impl FnOnce(&mut Decision)) {
        let mut map = self.decisions();
        if map.len() >= DECISIONS_MAX && !map.contains_key(&principal) {
            map.clear();
        }
        update(map.entry(principal).or_default());
    }
}

impl AuthStore for AuthTables {
    async fn role_assignments_for(
        &self,
        principal_id: &str,
    ) -> Result<Vec<RoleAssignment>, StoreError> {
        let key = principal_id.to_lowercase();
        let writes = self.store.writes();
        if let Some((w, at, list)) = self
            .decisions()
            .get(&key)
            .and_then(|d| d.assignments.as_ref())
        {
            if fresh(*w, *at, writes) {
                return Ok(list.clone());
            }
        }
        let list = self.read_role_assignments(&key).await?;
        let at = std::time::Instant::now();
        self.remember(key, |d| d.assignments = Some((writes, at, list.clone())));
        Ok(list)
    }

    async fn principal_active(&self, principal_id: &str) -> Result<bool, StoreError> {
        let key = principal_id.to_lowercase();
        let writes = self.store.writes();
        if let Some((w, at, active)) = self.decisions().get(&key).and_then(|d| d.active) {
            if fresh(w, at, writes) {
                return Ok(active);
            }
        }
        let active = self.read_principal_active(&key).await?;
        let at = std::time::Instant::now();
        self.remember(key, |d| d.active = Some((writes, at, active)));
        Ok(active)
    }

    async fn client_credential(
        &self,
        client_id: &str,
    ) -> Result<Option<ClientCredential>, StoreError> {
        self.read_client_credential(client_id).await
    }
}

impl AuthTables {
    async fn read_role_assignments(
        &self,
        principal_id: &str,
    ) -> Result<Vec<RoleAssignment>, StoreError> {
        let rows = sqlx::query(
            "SELECT scope_key, body FROM resources WHERE principal_key = $1 AND type_key = $2",
        )
        .bind(principal_id.to_lowercase())
        .bind(ASSIGNMENT_TYPE_KEY)
        .fetch_all(self.store.pool())
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let scope: String = row.try_get(0)?;
            let body: String = row.try_get(1)?;
            let body: Value = serde_json::from_str(&body)?;
            // A row without a role grants nothing rather than failing every request.
            if let Some(role) = body["properties"]["roleDefinitionId"].as_str() {
                out.push(RoleAssignment {
                    scope: if scope.is_empty() { "/".into() } else { scope },
                    role_definition_id: role.to_owned(),
                });
            }
        }
        Ok(out)
    }

    async fn read_principal_active(&self, principal_id: &str) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) FROM resources WHERE principal_key = $1 AND type_key = $2",
        )
        .bind(principal_id.to_lowercase())
        .bind(IDENTITY_TYPE_KEY)
        .fetch_one(self.store.pool())
        .await?;
        let n: i64 = row.try_get(0)?;
        Ok(n > 0)
    }

    async fn read_client_credential(
        &self,
        client_id: &str,
    ) -> Result<Option<ClientCredential>, StoreError> {
        let row = sqlx::query(
            "SELECT r.principal_key, s.value FROM resources r
             JOIN secrets s ON s.resource_key = r.id_key AND s.name = $2
             WHERE r.client_key = $1 AND r.type_key = $3",
        )
        .bind(client_id.to_lowercase())
        .bind(SECRET_HASH)
        .bind(IDENTITY_TYPE_KEY)
        .fetch_optional(self.store.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let principal_id: Option<String> = row.try_get(0)?;
        let hash: String = row.try_get(1)?;
        Ok(principal_id.map(|principal_id| ClientCredential {
            principal_id,
            secret_hash: SecretHash::from_stored(hash),
        }))
    }
}

/// Opens the engine: signing keys and the admin credential live in `data_dir`.
pub fn open(
    data_dir: &std::path::Path,
    public_url: &str,
    store: Store,
) -> anyhow::Result<ServerAuth> {
    sandpool_auth::Auth::open(
        AuthConfig::new(data_dir, public_url),
        AuthTables::new(store),
    )
    .map_err(|e| anyhow::anyhow!("setting up auth: {e}"))
}

/// Rotates the signing key now if it is older than `max_age`, then keeps checking in the
/// background (a quarter of `max_age` apart, at most an hour) for as long as the runtime lives.
pub fn maintain_keys(auth: &ServerAuth, max_age: std::time::Duration) -> anyhow::Result<()> {
    check_keys(auth, max_age).map_err(|e| anyhow::anyhow!("token signing keys: {e}"))?;
    let auth = auth.clone();
    let every = (max_age / 4).clamp(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(3600),
    );
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = check_keys(&auth, max_age) {
                // The current key keeps signing; the next check tries again.
                tracing::error!(error = %e, "rotating the token signing key");
            }
        }
    });
    Ok(())
}

fn check_keys(
    auth: &ServerAuth,
    max_age: std::time::Duration,
) -> Result<(), sandpool_auth::AuthError> {
    if let Some(kid) = auth.maintain_keys(max_age)? {
        tracing::info!(%kid, "token signing key rotated");
    }
    Ok(())
}

/// The token endpoints merged in and every route behind the enforcement layer, which lets a
/// request through only as `rules` (see [`crate::route_rules`]) declare for the route that
/// matched. Handlers see the caller as [`Principal`] (the server's view of
/// `sandpool_auth::Principal`).
pub fn layer(
    router: Router<AppState>,
    auth: &ServerAuth,
    rules: sandpool_auth::RouteRules,
) -> Router<AppState> {
    router
        .merge(auth.router().with_state(()))
        .layer(axum::middleware::map_request(adopt_principal))
        .layer(auth.layer(rules))
}

async fn adopt_principal(mut req: Request) -> Request {
    if let Some(p) = req.extensions().get::<sandpool_auth::Principal>() {
        let kind = match p.kind {
            sandpool_auth::PrincipalKind::LocalAdmin => PrincipalKind::User,
            sandpool_auth::PrincipalKind::ServicePrincipal => PrincipalKind::ManagedIdentity,
        };
        let principal = Principal {
            id: p.id.clone(),
            kind,
        };
        req.extensions_mut().insert(principal);
    }
    req
}

const IDENTITY: &str = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}";

/// Documents the token endpoints (served by `sandpool-auth`'s router) and adds the identity
/// secret reset.
pub fn routes(r: Routes) -> Routes {
    r.doc(
        Method::POST,
        "/oauth2/token",
        "OAuth2 client-credentials token endpoint (form: grant_type, client_id, client_secret, resource or scope)",
        &[200, 400, 401],
        true,
    )
    .request_as::<TokenRequest>("application/x-www-form-urlencoded")
    .response::<AccessToken>(200)
    .response::<OAuthError>(400)
    .response::<OAuthError>(401)
    .doc(
        Method::GET,
        "/.well-known/openid-configuration",
        "OpenID discovery document",
        &[200],
        false,
    )
    .doc(
        Method::GET,
        "/.well-known/jwks.json",
        "The public keys that verify tokens",
        &[200],
        false,
    )
    .rule(Rule::manage(
        "Microsoft.ManagedIdentity/userAssignedIdentities/resetClientSecret/action",
        IDENTITY,
    ))
    .add(
        Method::POST,
        &format!("{IDENTITY}/resetClientSecret"),
        "Issue a new client secret for an identity (the previous one stops working)".into(),
        &[200, 404],
        false,
        reset_client_secret,
    )
}

/// An identity's new ids and secret on create; its kept ids on update. The secret's hash
/// goes with `secrets` of [`crate::arm::put_resource`].
pub struct IdentityProps {
    pub properties: Value,
    /// Set only when the PUT created the identity: what the answer shows once.
    pub new_secret: Option<sandpool_auth::Secret>,
    pub secret_hash: Option<SecretHash>,
}

pub fn identity_properties(
    s: &AppState,
    existing: Option<&StoredResource>,
) -> HttpResult<IdentityProps> {
    let prev = existing.map(|e| &e.body["properties"]);
    if let Some(p) = prev.filter(|p| p["principalId"].is_string() && p["clientId"].is_string()) {
        return Ok(IdentityProps {
            properties: json!({
                "principalId": p["principalId"],
                "clientId": p["clientId"],
                "tenantId": p.get("tenantId").cloned().unwrap_or_else(|| json!(s.auth.tenant_id())),
                "provisioningState": "Succeeded",
            }),
            new_secret: None,
            secret_hash: None,
        });
    }
    let new = s.auth.new_identity().map_err(|e| {
        tracing::error!(error = %e, "creating identity credentials");
        ApiError::internal()
    })?;
    Ok(IdentityProps {
        properties: json!({
            "principalId": new.principal_id,
            "clientId": new.client_id,
            "tenantId": new.tenant_id,
            "provisioningState": "Succeeded",
        }),
        new_secret: Some(new.secret),
        secret_hash: Some(new.secret_hash),
    })
}

/// Fills the lookup columns of a stored identity or role assignment (after the row and, for an
/// identity, its secret hash are written: the credential becomes usable only when complete).
pub async fn index_resource(s: &AppState, id: &str, body: &Value) -> HttpResult<()> {
    let props = &body["properties"];
    let ty = body["type"].as_str().unwrap_or_default().to_lowercase();
    let (principal, client) = if ty == IDENTITY_TYPE_KEY {
        (props["principalId"].as_str(), props["clientId"].as_str())
    } else if ty == ASSIGNMENT_TYPE_KEY {
        (props["principalId"].as_str(), None)
    } else {
        return Ok(());
    };
    sqlx::query("UPDATE resources SET principal_key = $1, client_key = $2 WHERE id_key = $3")
        .bind(principal.map(str::to_lowercase))
        .bind(client.map(str::to_lowercase))
        .bind(id.to_lowercase())
        .execute(s.store.pool())
        .await
        .map_err(anyhow::Error::from)?;
    s.store.note_write();
    Ok(())
}

/// After an identity is deleted: its role assignments go too (its tokens already stop working
/// because the principal is no longer active).
pub async fn identity_deleted(s: &AppState, identity: &StoredResource) -> HttpResult<()> {
    let Some(pid) = identity.body["properties"]["principalId"].as_str() else {
        return Ok(());
    };
    let n = sqlx::query("DELETE FROM resources WHERE principal_key = $1 AND type_key = $2")
        .bind(pid.to_lowercase())
        .bind(ASSIGNMENT_TYPE_KEY)
        .execute(s.store.pool())
        .await
        .map_err(anyhow::Error::from)?
        .rows_affected();
    s.store.note_write();
    tracing::info!(principal_id = %pid, role_assignments = n, "identity deleted");
    Ok(())
}

/// Stores the hash of an identity's secret (replacing any previous one).
pub async fn store_secret_hash(
    s: &AppState,
    identity: &StoredResource,
    hash: &SecretHash,
) -> HttpResult<()> {
    s.store
        .put_secret(identity, SECRET_HASH, hash.as_str())
        .await?;
    Ok(())
}

async fn reset_client_secret(
    State(s): State<AppState>,
    Path(t): Path<(String, String, String)>,
) -> HttpResult<Response> {
    let identity = get_resource(&s, &Target::new(Kind::Identity, t)).await?;
    let props = &identity.body["properties"];
    let (principal_id, client_id) =
        match (props["principalId"].as_str(), props["clientId"].as_str()) {
            (Some(p), Some(c)) => (p.to_owned(), c.to_owned()),
            _ => return Err(ApiError::internal().into()),
        };
    let (secret, hash) = sandpool_auth::generate_client_secret().map_err(|e| {
        tracing::error!(error = %e, "generating a client secret");
        ApiError::internal()
    })?;
    store_secret_hash(&s, &identity, &hash).await?;
    // Rows created before migration 100 get their lookup columns here.
    index_resource(&s, &identity.id, &identity.body).await?;
    tracing::info!(principal_id = %principal_id, "identity client secret reset");
    Ok(json(
        StatusCode::OK,
        &json!({
            "id": identity.id,
            "principalId": principal_id,
            "clientId": client_id,
            "tenantId": props.get("tenantId").cloned().unwrap_or_else(|| json!(s.auth.tenant_id())),
            "clientSecret": secret.expose(),
        }),
    ))
}

/// Deployments: the layer checked `deployments/write` only, so each resource of a template is
/// checked here as if it were PUT directly (else a Contributor could write what a direct PUT
/// would refuse). Without a principal (startup defaults) there is no caller to check.
pub async fn check_write(
    s: &AppState,
    principal: Option<&Principal>,
    resource_id: &str,
    resource_type: &str,
) -> HttpResult<()> {
    let Some(p) = principal else { return Ok(()) };
    let action = format!("{resource_type}/write");
    let requirement = sandpool_auth::Requirement {
        audience: Audience::Management,
        scope: resource_id.to_owned(),
        action: Some(action.clone()),
        data_action: None,
    };
    let allowed = s.auth.check(&p.id, &requirement).await.map_err(|e| {
        tracing::error!(error = %e, "auth store lookup failed");
        ApiError::internal()
    })?;
    if allowed {
        return Ok(());
    }
    tracing::info!(principal_id = %p.id, action = %action, scope = %resource_id, "authorization denied (deployment)");
    Err(ApiError::new(
        403,
        "AuthorizationFailed",
        format!(
            "The client '{id}' with object id '{id}' does not have authorization to perform action \
             '{action}' over scope '{resource_id}' or the scope is invalid. If access was recently \
             granted, please refresh your credentials.",
            id = p.id
        ),
    )
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(id: &str, principal: &str) -> StoredResource {
        StoredResource {
            id: id.into(),
            subscription: "s".into(),
            resource_group: "rg".into(),
            resource_type: "Microsoft.Authorization/roleAssignments".into(),
            name: id.rsplit('/').next().unwrap_or(id).into(),
            scope: "/subscriptions/s/resourcegroups/rg".into(),
            body: json!({"properties": {
                "principalId": principal,
                "roleDefinitionId": "0fb8eba5-a2bb-4abe-b1c1-49dfad359bb0",
            }}),
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    /// Stores a role assignment and fills its lookup column, as `index_resource` does.
    async fn grant(store: &Store, id: &str, principal: &str) {
        store.put(&assignment(id, principal)).await.unwrap();
        sqlx::query("UPDATE resources SET principal_key = $1 WHERE id_key = $2")
            .bind(principal)
            .bind(id.to_lowercase())
            .execute(store.pool())
            .await
            .unwrap();
        store.note_write();
    }

    #[tokio::test]
    async fn remembered_decisions_end_with_a_write_or_after_their_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Store::sqlite_url(dir.path())).await.unwrap();
        let tables = AuthTables::new(store.clone());
        let (id, pid) = ("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Authorization/roleAssignments/a1", "p-1");
        grant(&store, id, pid).await;
        assert_eq!(tables.role_assignments_for(pid).await.unwrap().len(), 1);

        // A change this process did not write (another server on a shared database): the
        // remembered answer holds for the TTL at most.
        sqlx::query("DELETE FROM resources")
            .execute(store.pool())
            .await
            .unwrap();
        assert_eq!(tables.role_assignments_for(pid).await.unwrap().len(), 1);
        tokio::time::sleep(DECISION_TTL + std::time::Duration::from_millis(50)).await;
        assert!(tables.role_assignments_for(pid).await.unwrap().is_empty());

        // Writes of this process apply to the next question at once, both ways.
        grant(&store, id, pid).await;
        assert_eq!(tables.role_assignments_for(pid).await.unwrap().len(), 1);
        assert!(store.delete(id).await.unwrap());
        assert!(tables.role_assignments_for(pid).await.unwrap().is_empty());

        // The principal's existence is remembered the same way (no identity row: inactive).
        assert!(!tables.principal_active(pid).await.unwrap());
        assert!(
            !tables.principal_active("P-1").await.unwrap(),
            "case-insensitive"
        );
    }
}
