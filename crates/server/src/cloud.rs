//! What the Azure CLI asks of a cloud before and right after `az login`: the cloud metadata
//! document (`az cloud register --endpoint-resource-manager`), the signed-in principal's
//! subscriptions and tenants (`az login`, `az account list/show/set`). Every sandpool server is
//! one tenant; every subscription id is accepted, and the list names the default one plus those
//! that hold resource groups.

use crate::http::{error_response, json, HttpResult};
use crate::routes::Routes;
use crate::{AppState, Principal};
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::Extension;
use sandpool_api::{validate, ApiError};
use sandpool_auth::{AuthStore as _, Rule};
use serde_json::{json, Value};

pub fn routes(r: Routes) -> Routes {
    r.rule(Rule::Public)
        .add(
            Method::GET,
            "/metadata/endpoints",
            "Cloud metadata: the endpoints and token audiences of this server, as Azure's".into(),
            &[200],
            false,
            metadata_endpoints,
        )
        .rule(Rule::SignedIn)
        .add(
            Method::GET,
            "/subscriptions",
            "The subscriptions of this server".into(),
            &[200],
            false,
            list_subscriptions,
        )
        .rule(Rule::SignedIn)
        .add(
            Method::GET,
            "/subscriptions/{subscriptionId}",
            "One subscription (every UUID is one)".into(),
            &[200, 404],
            false,
            get_subscription,
        )
        .rule(Rule::SignedIn)
        .add(
            Method::GET,
            "/subscriptions/{subscriptionId}/providers",
            "The resource providers of this server, all registered".into(),
            &[200],
            false,
            list_providers,
        )
        .rule(Rule::SignedIn)
        .add(
            Method::GET,
            "/subscriptions/{subscriptionId}/providers/{namespace}",
            "One resource provider, with its resource types and their api-versions".into(),
            &[200, 404],
            false,
            get_provider,
        )
        // Registering changes nothing here, but it is a write in Azure: a role that may act on the
        // subscription (Contributor, Owner).
        .rule(Rule::manage(
            "Microsoft.Resources/subscriptions/providers/register/action",
            "/subscriptions/{subscriptionId}",
        ))
        .add(
            Method::POST,
            "/subscriptions/{subscriptionId}/providers/{namespace}/register",
            "Register a resource provider (every one is always registered)".into(),
            &[200, 404],
            false,
            get_provider,
        )
        .rule(Rule::SignedIn)
        .add(
            Method::GET,
            "/tenants",
            "The tenant of this server".into(),
            &[200],
            false,
            list_tenants,
        )
}

/// The document Azure Resource Manager serves at `/metadata/endpoints`, for this server: it is
/// the resource manager and the sign-in authority; tokens are asked for the management audience.
async fn metadata_endpoints(State(s): State<AppState>) -> Response {
    let base = format!("{}/", s.public_url);
    json(
        StatusCode::OK,
        &json!({
            "name": "sandpool",
            "portal": base,
            "resourceManager": base,
            "authentication": {
                "loginEndpoint": s.public_url.as_ref(),
                "audiences": [
                    sandpool_auth::MANAGEMENT_AUDIENCE_LEGACY,
                    sandpool_auth::MANAGEMENT_AUDIENCE,
                ],
                "tenant": s.tenant_id.as_ref(),
                "identityProvider": "AAD",
            },
            "suffixes": {},
        }),
    )
}

fn subscription(s: &AppState, id: &str) -> Value {
    json!({
        "id": format!("/subscriptions/{id}"),
        "subscriptionId": id,
        "tenantId": s.tenant_id.as_ref(),
        "displayName": if id == crate::DEFAULT_SUBSCRIPTION { "sandpool (default)".to_owned() } else { format!("sandpool {id}") },
        "state": "Enabled",
        "subscriptionPolicies": {
            "locationPlacementId": "Public_2014-09-01",
            "quotaId": "sandpool",
            "spendingLimit": "Off",
        },
        "authorizationSource": "RoleBased",
    })
}

/// Which subscriptions a caller sees, as in Azure: those it holds a role in (at, above or
/// below the subscription). Any valid token may ask; one without roles sees none.
enum Visible {
    All,
    Some(Vec<String>),
}

async fn visible_subscriptions(s: &AppState, p: &Principal) -> HttpResult<Visible> {
    if s.auth.is_admin(&p.id) {
        return Ok(Visible::All);
    }
    let assignments = s
        .auth
        .store()
        .role_assignments_for(&p.id)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "auth store lookup failed");
            ApiError::internal()
        })?;
    let mut subs = Vec::new();
    for a in assignments {
        let segs: Vec<&str> = a.scope.split('/').filter(|x| !x.is_empty()).collect();
        match segs.as_slice() {
            [] => return Ok(Visible::All),
            [kw, sub, ..] if kw.eq_ignore_ascii_case("subscriptions") => {
                subs.push(sub.to_ascii_lowercase())
            }
            _ => {}
        }
    }
    subs.sort();
    subs.dedup();
    Ok(Visible::Some(subs))
}

async fn list_subscriptions(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
) -> HttpResult<Response> {
    let ids = match visible_subscriptions(&s, &p).await? {
        Visible::Some(ids) => ids,
        Visible::All => {
            let mut ids = s.store.subscriptions().await?;
            if !ids.iter().any(|i| i == crate::DEFAULT_SUBSCRIPTION) {
                ids.insert(0, crate::DEFAULT_SUBSCRIPTION.to_owned());
            }
            ids
        }
    };
    let value: Vec<Value> = ids.iter().map(|id| subscription(&s, id)).collect();
    Ok(json(StatusCode::OK, &json!({ "value": value })))
}

async fn get_subscription(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> HttpResult<Response> {
    let visible = uuid::Uuid::parse_str(&id).is_ok()
        && match visible_subscriptions(&s, &p).await? {
            Visible::All => true,
            Visible::Some(ids) => ids.contains(&id.to_ascii_lowercase()),
        };
    if !visible {
        return Err(ApiError::new(
            404,
            "SubscriptionNotFound",
            format!("The subscription '{id}' could not be found."),
        )
        .into());
    }
    Ok(json(
        StatusCode::OK,
        &subscription(&s, &id.to_ascii_lowercase()),
    ))
}

async fn list_tenants(State(s): State<AppState>) -> Response {
    let tid = s.tenant_id.as_ref();
    json(
        StatusCode::OK,
        &json!({"value": [{
            "id": format!("/tenants/{tid}"),
            "tenantId": tid,
            "tenantCategory": "Home",
            "displayName": "sandpool",
            "defaultDomain": "sandpool.local",
            "tenantType": "AAD",
        }]}),
    )
}

/// The namespaces and resource types this server serves. Every api-version of the right shape
/// is accepted; these are the ones listed, newest last, so that `az resource show --ids` (which
/// picks one from this list) sends one Azure has too.
const PROVIDERS: &[(&str, &[&str])] = &[
    ("Microsoft.App", &["sessionPools"]),
    ("Microsoft.ManagedIdentity", &["userAssignedIdentities"]),
    ("Microsoft.ContainerService", &["managedClusters"]),
    ("Microsoft.Resources", &["deployments", "resourceGroups"]),
    (
        "Microsoft.Authorization",
        &["roleAssignments", "roleDefinitions"],
    ),
];

const API_VERSIONS: &[&str] = &[
    "2024-02-02-preview",
    "2024-08-02-preview",
    "2024-10-02-preview",
    sandpool_api::API_VERSION,
];

fn provider(subscription: &str, namespace: &str, types: &[&str]) -> Value {
    let types: Vec<Value> = types
        .iter()
        .map(|t| {
            json!({
                "resourceType": t,
                "locations": [],
                "apiVersions": API_VERSIONS.iter().rev().collect::<Vec<_>>(),
                "defaultApiVersion": sandpool_api::API_VERSION,
            })
        })
        .collect();
    json!({
        "id": format!("/subscriptions/{subscription}/providers/{namespace}"),
        "namespace": namespace,
        "registrationState": "Registered",
        "registrationPolicy": "RegistrationRequired",
        "resourceTypes": types,
    })
}

async fn list_providers(Path(subscription): Path<String>) -> Response {
    // The id goes into every provider's resource id: a UUID, as on every other route.
    if let Err(e) = validate::subscription_id(&subscription) {
        return error_response(&e);
    }
    let value: Vec<Value> = PROVIDERS
        .iter()
        .map(|(ns, types)| provider(&subscription, ns, types))
        .collect();
    json(StatusCode::OK, &json!({ "value": value }))
}

async fn get_provider(Path((subscription, namespace)): Path<(String, String)>) -> Response {
    if let Err(e) = validate::subscription_id(&subscription) {
        return error_response(&e);
    }
    match PROVIDERS
        .iter()
        .find(|(ns, _)| ns.eq_ignore_ascii_case(&namespace))
    {
        Some((ns, types)) => json(StatusCode::OK, &provider(&subscription, ns, types)),
        None => error_response(&ApiError::new(
            404,
            "InvalidResourceNamespace",
            format!(
                "The resource namespace '{namespace}' is invalid: this server serves {}.",
                PROVIDERS
                    .iter()
                    .map(|(ns, _)| *ns)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}
