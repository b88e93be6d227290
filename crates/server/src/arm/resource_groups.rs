//! Resource groups: PUT (200/201), GET, DELETE (202 + Location, cascading), list.

use super::{group_id, normalize_location, parse_request, require_group, system_data};
use crate::arm::operations::accepted_with_location;
use crate::http::{json, put_answer, HttpResult, JsonBody, Query};
use crate::routes::Routes;
use crate::store::{ListFilter, StoredResource};
use crate::{AppState, Principal};
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::Extension;
use sandpool_api::{validate, ApiError, List, Resource, ResourceGroupProperties, ResourceRequest};
use sandpool_auth::Rule;
use serde_json::{json, Value};

pub const TYPE: &str = "Microsoft.Resources/resourceGroups";
const ITEM: &str = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}";
const SUBSCRIPTION: &str = "/subscriptions/{subscriptionId}";

fn action(verb: &str) -> String {
    format!("Microsoft.Resources/subscriptions/resourceGroups/{verb}")
}

pub fn routes(r: Routes) -> Routes {
    r.rule(Rule::manage(action("write"), ITEM))
        .add(
            Method::PUT,
            ITEM,
            "Create or update a resource group".into(),
            &[200, 201],
            true,
            put,
        )
        .request::<ResourceRequest>()
        .response::<Resource<ResourceGroupProperties>>(200)
        .response::<Resource<ResourceGroupProperties>>(201)
        .rule(Rule::manage(action("read"), ITEM))
        .add(
            Method::GET,
            ITEM,
            "Get a resource group".into(),
            &[200, 404],
            false,
            get,
        )
        .response::<Resource<ResourceGroupProperties>>(200)
        .rule(Rule::manage(action("delete"), ITEM))
        .add(
            Method::DELETE,
            ITEM,
            "Delete a resource group and everything in it".into(),
            &[202, 404],
            false,
            delete,
        )
        .rule(Rule::manage(action("read"), SUBSCRIPTION))
        .add(
            Method::GET,
            "/subscriptions/{subscriptionId}/resourceGroups",
            "List resource groups".into(),
            &[200],
            false,
            list,
        )
}

/// Creates or updates a group; shared with the first-start defaults.
pub async fn put_group(
    s: &AppState,
    principal: Option<&Principal>,
    sub: &str,
    name: &str,
    body: &Value,
) -> HttpResult<(Value, bool)> {
    validate::subscription_id(sub)?;
    validate::resource_group_name(name)?;
    let req = parse_request(body)?;
    let location = match &req.location {
        Some(l) if !l.trim().is_empty() => normalize_location(l),
        _ => return Err(ApiError::location_required().into()),
    };
    let existing = s.store.get(&group_id(sub, name)).await?;
    // The first spelling of a group's name stays its canonical one.
    let canonical = existing
        .as_ref()
        .map(|e| e.name.clone())
        .unwrap_or_else(|| name.to_owned());
    let id = group_id(sub, &canonical);
    let envelope = json!({
        "id": id,
        "name": canonical,
        "type": TYPE,
        "location": location,
        "tags": req.tags.unwrap_or_default(),
        "properties": {"provisioningState": "Succeeded"},
        "systemData": system_data(principal, existing.as_ref().map(|e| &e.body)),
    });
    let t = super::now();
    let row = StoredResource {
        id,
        subscription: sub.to_lowercase(),
        resource_group: canonical.to_lowercase(),
        resource_type: TYPE.into(),
        name: canonical,
        scope: String::new(),
        body: envelope.clone(),
        created_at: existing.map(|e| e.created_at).unwrap_or_else(|| t.clone()),
        updated_at: t,
    };
    let created = s.store.put(&row).await?;
    Ok((envelope, created))
}

async fn put(
    State(s): State<AppState>,
    p: Option<Extension<Principal>>,
    Path((sub, rg)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> HttpResult<Response> {
    let (v, created) = put_group(&s, p.as_deref(), &sub, &rg, &body).await?;
    Ok(put_answer(created, &v))
}

async fn get(
    State(s): State<AppState>,
    Path((sub, rg)): Path<(String, String)>,
) -> HttpResult<Response> {
    let g = require_group(&s, &sub, &rg).await?;
    Ok(json(StatusCode::OK, &g.body))
}

async fn delete(
    State(s): State<AppState>,
    q: Query,
    Path((sub, rg)): Path<(String, String)>,
) -> HttpResult<Response> {
    let g = require_group(&s, &sub, &rg).await?;
    // Sessions hook: the group's pools lose their sessions once the group is gone.
    let pools = crate::sessions::pools_of_group(&s, &sub, &g.name).await;
    let n = s.store.delete_resource_group(&sub, &g.name).await?;
    for id in &pools {
        crate::sessions::pool_deleted(&s, id).await;
    }
    tracing::info!(resource_group = %g.name, resources = n, "deleted resource group");
    accepted_with_location(&s, &q, &sub, &g.id).await
}

async fn list(State(s): State<AppState>, Path(sub): Path<String>) -> HttpResult<Response> {
    validate::subscription_id(&sub)?;
    let rows = s
        .store
        .list(&ListFilter {
            subscription: Some(&sub),
            resource_group: None,
            resource_type: Some(TYPE),
        })
        .await?;
    Ok(json(
        StatusCode::OK,
        &List::new(rows.into_iter().map(|r| r.body).collect()),
    ))
}
