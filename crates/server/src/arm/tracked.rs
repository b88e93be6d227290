//! Session pools, user-assigned identities and managed clusters: the tracked resources inside a
//! resource group. Each kind has PUT, GET, DELETE and list by group and by subscription; pools
//! also have PATCH.

use super::{get_resource, put_resource, render, require_group, Kind, Target};
use crate::arm::operations::accepted_with_location;
use crate::http::{json, put_answer, HttpResult, JsonBody, Query};
use crate::routes::Routes;
use crate::store::{ListFilter, StoredResource};
use crate::{AppState, Principal};
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::Extension;
use sandpool_api::{
    bodies, validate, ApiError, IdentityProperties, List, ManagedClusterProperties, Resource,
    ResourceRequest, SessionPoolProperties,
};
use sandpool_auth::Rule;
use serde_json::{json, Value};

type P3 = Path<(String, String, String)>;

pub fn routes(mut r: Routes) -> Routes {
    for kind in Kind::TRACKED {
        let item = format!(
            "/subscriptions/{{subscriptionId}}/resourceGroups/{{resourceGroupName}}/providers/{}/{}/{{name}}",
            kind.namespace(),
            kind.type_name()
        );
        let by_group = format!(
            "/subscriptions/{{subscriptionId}}/resourceGroups/{{resourceGroupName}}/providers/{}/{}",
            kind.namespace(),
            kind.type_name()
        );
        let by_sub = format!(
            "/subscriptions/{{subscriptionId}}/providers/{}/{}",
            kind.namespace(),
            kind.type_name()
        );
        let label = kind.label();
        let group_scope = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}";
        let action = |verb: &str| format!("{}/{verb}", kind.full_type());
        r = r
            .rule(Rule::manage(action("write"), &item))
            .add(Method::PUT, &item, format!("Create or replace a {label}"), &[200, 201], true,
                move |State(s): State<AppState>, p: Option<Extension<Principal>>, Path(t): P3, JsonBody(body): JsonBody<Value>| async move {
                    let (value, created) = put_resource(&s, p.as_deref(), &Target::new(kind, t), &body).await?;
                    HttpResult::Ok(put_answer(created, &render(&s, value)))
                })
            .request::<ResourceRequest>()
            .then(|r| documented(r, kind, false, &[200, 201]))
            .rule(Rule::manage(action("read"), &item))
            .add(Method::GET, &item, format!("Get a {label}"), &[200, 404], false,
                move |State(s): State<AppState>, Path(t): P3| async move {
                    let r = get_resource(&s, &Target::new(kind, t)).await?;
                    HttpResult::Ok(json(StatusCode::OK, &render(&s, r.body)))
                })
            .then(|r| documented(r, kind, false, &[200]))
            .rule(Rule::manage(action("delete"), &item))
            .add(Method::DELETE, &item, format!("Delete a {label}"), delete_statuses(kind), false,
                move |State(s): State<AppState>, q: Query, Path(t): P3| async move {
                    delete(&s, &q, &Target::new(kind, t)).await
                })
            .rule(Rule::manage(action("read"), group_scope))
            .add(Method::GET, &by_group, format!("List the {label}s of a resource group"), &[200, 404], false,
                move |State(s): State<AppState>, Path((sub, rg)): Path<(String, String)>| async move {
                    let group = require_group(&s, &sub, &rg).await?;
                    list(&s, kind, &sub, Some(&group.name)).await
                })
            .then(|r| documented(r, kind, true, &[200]))
            .rule(Rule::manage(action("read"), "/subscriptions/{subscriptionId}"))
            .add(Method::GET, &by_sub, format!("List the {label}s of a subscription"), &[200], false,
                move |State(s): State<AppState>, Path(sub): Path<String>| async move {
                    validate::subscription_id(&sub)?;
                    list(&s, kind, &sub, None).await
                })
            .then(|r| documented(r, kind, true, &[200]));
        if kind == Kind::SessionPool {
            r = r
                .rule(Rule::manage(action("write"), &item))
                .add(
                    Method::PATCH,
                    &item,
                    "Update a session pool (merge of properties)".to_owned(),
                    &[200],
                    true,
                    |State(s): State<AppState>,
                     p: Option<Extension<Principal>>,
                     Path(t): P3,
                     JsonBody(body): JsonBody<Value>| async move {
                        patch_pool(&s, p.as_deref(), &Target::new(Kind::SessionPool, t), &body)
                            .await
                    },
                )
                .request::<ResourceRequest>()
                .then(|r| documented(r, kind, false, &[200]));
        }
    }
    r
}

/// The answers of a kind's route: its resource (or a list of them) for each of `statuses`.
fn documented(r: Routes, kind: Kind, list: bool, statuses: &[u16]) -> Routes {
    fn typed<P: utoipa::ToSchema>(mut r: Routes, list: bool, statuses: &[u16]) -> Routes {
        for s in statuses {
            r = if list {
                r.response::<List<Resource<P>>>(*s)
            } else {
                r.response::<Resource<P>>(*s)
            };
        }
        r
    }
    match kind {
        Kind::SessionPool => typed::<SessionPoolProperties>(r, list, statuses),
        Kind::Identity => typed::<IdentityProperties>(r, list, statuses),
        Kind::ManagedCluster => typed::<ManagedClusterProperties>(r, list, statuses),
        Kind::Deployment => typed::<serde_json::Value>(r, list, statuses),
    }
}

fn delete_statuses(kind: Kind) -> &'static [u16] {
    if kind == Kind::SessionPool {
        &[202, 204]
    } else {
        &[200, 204]
    }
}

async fn delete(s: &AppState, q: &Query, t: &Target) -> HttpResult<Response> {
    match get_resource(s, t).await {
        Ok(r) => {
            s.store.delete(&r.id).await?;
            if t.kind == Kind::Identity {
                // Auth hook: the identity's role assignments go with it.
                crate::auth::identity_deleted(s, &r).await?;
            }
            if t.kind == Kind::SessionPool {
                // Sessions hook: a deleted pool's sessions and ready sandboxes go with it.
                crate::sessions::pool_deleted(s, &r.id).await;
                // Pools answer 202 + Location (never 200): what the SDKs' delete pollers expect.
                return accepted_with_location(s, q, &t.subscription, &r.id).await;
            }
            Ok(json(StatusCode::OK, &render(s, r.body)))
        }
        Err(e) if e.0.code == "ResourceNotFound" => Ok(no_content()),
        Err(e) => Err(e),
    }
}

pub fn no_content() -> Response {
    let mut r = Response::new(axum::body::Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

async fn list(s: &AppState, kind: Kind, sub: &str, group: Option<&str>) -> HttpResult<Response> {
    let t = kind.full_type();
    let rows: Vec<StoredResource> = s
        .store
        .list(&ListFilter {
            subscription: Some(sub),
            resource_group: group,
            resource_type: Some(&t),
        })
        .await?;
    let value: Vec<Value> = rows.into_iter().map(|r| render(s, r.body)).collect();
    Ok(json(StatusCode::OK, &List::new(value)))
}

async fn patch_pool(
    s: &AppState,
    p: Option<&Principal>,
    t: &Target,
    patch: &Value,
) -> HttpResult<Response> {
    if !patch.is_object() {
        return Err(
            ApiError::invalid_request_content("The request body must be a JSON object.").into(),
        );
    }
    let current = get_resource(s, t).await?;
    let mut body = current.body.clone();
    if let Some(props) = body.get_mut("properties") {
        // Read-only values never take part in the merge.
        if let Some(o) = props.as_object_mut() {
            o.remove("poolManagementEndpoint");
            o.remove("provisioningState");
        }
    }
    for key in ["tags", "properties"] {
        if let Some(v) = patch.get(key) {
            bodies::merge_patch(&mut body[key], v);
        }
    }
    if let Some(l) = patch.get("location").filter(|l| !l.is_null()) {
        body["location"] = l.clone();
    }
    let (value, _) = put_resource(s, p, t, &body).await?;
    Ok(json(StatusCode::OK, &render(s, value)))
}

/// Validated pool properties with the read-only values set.
pub fn pool_properties(
    s: &AppState,
    t: &Target,
    group_name: &str,
    props: &Value,
) -> Result<Value, ApiError> {
    let mut p = bodies::session_pool_properties(props)?;
    let settings = crate::sessions::settings_of(props)?;
    s.limits.check(
        &crate::limits::Asked {
            max_sessions: Some(settings.max_concurrent_sessions),
            ready_sessions: Some(settings.ready_session_instances),
            cpu_millicores: settings.cpu_millicores,
            memory_bytes: settings.memory_bytes,
            pids: None,
        },
        "properties.customContainerTemplate.containers[0].resources",
    )?;
    p.provisioning_state = Some("Succeeded".into());
    p.pool_management_endpoint = Some(format!(
        "{}/subscriptions/{}/resourceGroups/{group_name}/sessionPools/{}",
        s.public_url,
        t.subscription.to_lowercase(),
        t.name
    ));
    serde_json::to_value(p).map_err(|_| ApiError::internal())
}

/// Name of a pool's `secrets` values in the secrets table (a JSON object, name → value).
pub const POOL_SECRETS: &str = "poolSecrets";

/// Takes the values out of a pool's `properties.secrets` (`[{name, value}]`, write-only as in
/// API.md), leaving `[{name}]`, and returns the values to store as JSON (`""`: none, which
/// clears them). An entry without a value keeps the value stored under its name, so a PATCH or
/// a client writing back what GET answered loses nothing.
pub async fn take_pool_secrets(s: &AppState, id: &str, props: &mut Value) -> HttpResult<String> {
    let Some(list) = props.get_mut("secrets") else {
        return Ok(String::new());
    };
    let Some(items) = list.as_array_mut() else {
        return Err(ApiError::invalid_request_content(
            "'properties.secrets' must be an array of {\"name\",\"value\"}.",
        )
        .with_target("properties.secrets")
        .into());
    };
    let stored: serde_json::Map<String, Value> = match s.store.get_secret(id, POOL_SECRETS).await? {
        Some(text) => serde_json::from_str(&text).unwrap_or_default(),
        None => serde_json::Map::new(),
    };
    let mut values = serde_json::Map::new();
    for (i, item) in items.iter_mut().enumerate() {
        let target = format!("properties.secrets[{i}]");
        let name = item
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                ApiError::invalid_request_content("Each secret needs a 'name' string.")
                    .with_target(target.clone())
            })?
            .to_owned();
        let value = match item.get("value") {
            Some(Value::String(v)) => v.clone(),
            None | Some(Value::Null) => match stored.get(&name).and_then(Value::as_str) {
                Some(v) => v.to_owned(),
                None => {
                    return Err(ApiError::invalid_request_content(format!(
                        "The secret '{name}' needs a 'value' string."
                    ))
                    .with_target(target)
                    .into())
                }
            },
            Some(_) => {
                return Err(ApiError::invalid_request_content(format!(
                    "The 'value' of secret '{name}' must be a string."
                ))
                .with_target(target)
                .into())
            }
        };
        values.insert(name.clone(), Value::String(value));
        *item = json!({ "name": name });
    }
    if values.is_empty() {
        return Ok(String::new());
    }
    serde_json::to_string(&values).map_err(|e| anyhow::Error::from(e).into())
}

/// Cluster properties without the kubeconfig, and the kubeconfig to store (`Some("")` clears it).
/// A PUT without `kubeconfig` keeps the stored one: GET never returns it, so a client that reads,
/// edits and writes back a cluster must not lose it.
pub async fn cluster_properties(
    s: &AppState,
    id: &str,
    props: &Value,
) -> HttpResult<(Value, Option<String>)> {
    let mut p = bodies::managed_cluster_properties(props)?;
    s.limits.check(
        &crate::limits::Asked {
            cpu_millicores: Some(crate::runcommand::cpu_millicores(p.limits.cpu)),
            memory_bytes: bodies::memory_bytes(&p.limits.memory),
            pids: Some(p.limits.pids.into()),
            ..Default::default()
        },
        "properties.limits",
    )?;
    let kubeconfig = p.kubeconfig.take();
    p.has_kubeconfig = match &kubeconfig {
        Some(k) => !k.is_empty(),
        None => s.store.get_secret(id, "kubeconfig").await?.is_some(),
    };
    p.provisioning_state = Some("Succeeded".into());
    // AKS clients read `powerState.code` to tell a stopped cluster; a sandpool cluster is a run
    // target that is always ready.
    p.extra
        .insert("powerState".into(), json!({"code": "Running"}));
    let v = serde_json::to_value(p).map_err(|_| ApiError::internal())?;
    Ok((v, kubeconfig))
}
