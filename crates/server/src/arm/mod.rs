//! The ARM-shaped management plane: one module per resource kind, sharing the envelope, system
//! data and the PUT path (a deployment applies its resources through the same [`put_resource`]).

pub mod authorization;
pub mod deployments;
pub mod operations;
pub mod resource_groups;
pub mod tracked;

use crate::http::{HttpError, HttpResult};
use crate::store::StoredResource;
use crate::{AppState, Principal};
use sandpool_api::{validate, ApiError, ResourceRequest, SystemData};
use serde_json::{json, Value};

/// The kinds of resources that live inside a resource group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    SessionPool,
    Identity,
    ManagedCluster,
    Deployment,
}

impl Kind {
    pub const TRACKED: [Kind; 3] = [Kind::SessionPool, Kind::Identity, Kind::ManagedCluster];

    pub fn namespace(self) -> &'static str {
        match self {
            Kind::SessionPool => "Microsoft.App",
            Kind::Identity => "Microsoft.ManagedIdentity",
            Kind::ManagedCluster => "Microsoft.ContainerService",
            Kind::Deployment => "Microsoft.Resources",
        }
    }

    pub fn type_name(self) -> &'static str {
        match self {
            Kind::SessionPool => "sessionPools",
            Kind::Identity => "userAssignedIdentities",
            Kind::ManagedCluster => "managedClusters",
            Kind::Deployment => "deployments",
        }
    }

    /// `Microsoft.App/sessionPools`.
    pub fn full_type(self) -> String {
        format!("{}/{}", self.namespace(), self.type_name())
    }

    /// Matches a type as written in a template or path, case-insensitively.
    pub fn from_type(t: &str) -> Option<Kind> {
        [
            Kind::SessionPool,
            Kind::Identity,
            Kind::ManagedCluster,
            Kind::Deployment,
        ]
        .into_iter()
        .find(|k| k.full_type().eq_ignore_ascii_case(t))
    }

    fn validate_name(self, name: &str) -> Result<(), ApiError> {
        match self {
            Kind::SessionPool => validate::pool_name(name),
            Kind::Identity => validate::identity_name(name),
            Kind::ManagedCluster => validate::cluster_name(name),
            Kind::Deployment => validate::deployment_name(name),
        }
    }

    /// Human name used in messages.
    pub fn label(self) -> &'static str {
        match self {
            Kind::SessionPool => "session pool",
            Kind::Identity => "user-assigned identity",
            Kind::ManagedCluster => "managed cluster",
            Kind::Deployment => "deployment",
        }
    }
}

/// A resource inside a resource group, as addressed by a path.
#[derive(Debug, Clone)]
pub struct Target {
    pub subscription: String,
    pub resource_group: String,
    pub kind: Kind,
    pub name: String,
}

impl Target {
    pub fn new(kind: Kind, (subscription, resource_group, name): (String, String, String)) -> Self {
        Self {
            subscription,
            resource_group,
            kind,
            name,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ApiError> {
        validate::subscription_id(&self.subscription)?;
        validate::resource_group_name(&self.resource_group)?;
        self.kind.validate_name(&self.name)
    }

    /// The id with the group's stored (canonical) name.
    pub fn id(&self, group_name: &str) -> String {
        format!(
            "{}/providers/{}/{}",
            group_id(&self.subscription, group_name),
            self.kind.namespace(),
            self.kind.type_name(),
        ) + "/"
            + &self.name
    }
}

pub fn group_id(subscription: &str, group: &str) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{group}",
        subscription.to_lowercase()
    )
}

pub fn now() -> String {
    crate::now_rfc3339()
}

/// ARM's normalised location: `North Central US` → `northcentralus`.
pub fn normalize_location(l: &str) -> String {
    l.chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_lowercase()
}

pub fn system_data(principal: Option<&Principal>, existing: Option<&Value>) -> SystemData {
    let (by, by_type) = match principal {
        Some(p) => (p.id.clone(), p.kind.system_data_type().to_owned()),
        None => ("sandpool".to_owned(), "Application".to_owned()),
    };
    let prev: Option<SystemData> = existing
        .and_then(|b| b.get("systemData"))
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    let t = now();
    match prev {
        Some(p) => SystemData {
            last_modified_by: Some(by),
            last_modified_by_type: Some(by_type),
            last_modified_at: Some(t),
            ..p
        },
        None => SystemData {
            created_by: Some(by.clone()),
            created_by_type: Some(by_type.clone()),
            created_at: Some(t.clone()),
            last_modified_by: Some(by),
            last_modified_by_type: Some(by_type),
            last_modified_at: Some(t),
        },
    }
}

/// The stored resource group, or 404 `ResourceGroupNotFound`.
pub async fn require_group(
    state: &AppState,
    subscription: &str,
    group: &str,
) -> HttpResult<StoredResource> {
    validate::subscription_id(subscription)?;
    validate::resource_group_name(group)?;
    state
        .store
        .get(&group_id(subscription, group))
        .await?
        .ok_or_else(|| ApiError::resource_group_not_found(group).into())
}

/// Parses a PUT body's envelope (location, tags, properties).
pub fn parse_request(body: &Value) -> Result<ResourceRequest, ApiError> {
    if !body.is_object() {
        return Err(ApiError::invalid_request_content(
            "The request body must be a JSON object.",
        ));
    }
    serde_json::from_value(body.clone()).map_err(|e| {
        ApiError::invalid_request_content(format!("The request body is not valid: {e}."))
    })
}

/// Creates or replaces a resource inside a group; returns the answer body and whether it was
/// created. Direct PUTs and deployments both come through here.
pub async fn put_resource(
    state: &AppState,
    principal: Option<&Principal>,
    target: &Target,
    body: &Value,
) -> HttpResult<(Value, bool)> {
    target.validate()?;
    let req = parse_request(body)?;
    let group = require_group(state, &target.subscription, &target.resource_group).await?;
    let location = match (&req.location, target.kind) {
        (Some(l), _) if !l.trim().is_empty() => Some(normalize_location(l)),
        (_, Kind::Deployment) => None,
        _ => return Err(ApiError::location_required().into()),
    };
    let id = target.id(&group.name);
    let existing = state.store.get(&id).await?;
    let props = req.properties.clone().unwrap_or(Value::Null);
    let mut secrets = Vec::new();
    let mut new_secret = None;
    let properties = match target.kind {
        Kind::SessionPool => {
            let mut p = tracked::pool_properties(state, target, &group.name, &props)?;
            // `secrets` are write-only: their values go to the secrets table, names stay.
            let values = tracked::take_pool_secrets(state, &id, &mut p).await?;
            secrets.push((tracked::POOL_SECRETS, values));
            p
        }
        Kind::Identity => {
            // Auth hook: a new identity gets a client secret, stored as a hash, answered once.
            let i = crate::auth::identity_properties(state, existing.as_ref())?;
            if let Some(h) = i.secret_hash {
                secrets.push((crate::auth::SECRET_HASH, h.as_str().to_owned()));
            }
            new_secret = i.new_secret;
            i.properties
        }
        Kind::ManagedCluster => {
            let (p, kubeconfig) = tracked::cluster_properties(state, &id, &props).await?;
            if let Some(k) = kubeconfig {
                secrets.push(("kubeconfig", k));
            }
            p
        }
        Kind::Deployment => return Err(ApiError::internal().into()),
    };
    let envelope = json!({
        "id": id,
        "name": target.name,
        "type": target.kind.full_type(),
        "location": location,
        "tags": req.tags.clone().unwrap_or_default(),
        "properties": properties,
        "systemData": system_data(principal, existing.as_ref().map(|e| &e.body)),
    });
    let created =
        store_resource(state, &group, target, envelope.clone(), existing.as_ref()).await?;
    let stored = state.store.get(&id).await?.ok_or_else(ApiError::internal)?;
    if target.kind == Kind::SessionPool {
        // Sessions hook: PUT, PATCH and deployments apply a pool's settings live.
        crate::sessions::pool_changed(state, &id, &envelope["properties"]).await;
    }
    for (name, value) in secrets {
        if value.is_empty() {
            state.store.delete_secret(&id, name).await?;
        } else {
            state.store.put_secret(&stored, name, &value).await?;
        }
    }
    let mut envelope = envelope;
    if target.kind == Kind::Identity {
        // Auth hook: the lookup columns last, so a credential is usable only once complete.
        crate::auth::index_resource(state, &id, &envelope).await?;
        if let Some(secret) = new_secret {
            envelope["properties"]["clientSecret"] = json!(secret.expose());
        }
    }
    Ok((envelope, created))
}

/// Writes an envelope as a resource row of `group`.
pub async fn store_resource(
    state: &AppState,
    group: &StoredResource,
    target: &Target,
    envelope: Value,
    existing: Option<&StoredResource>,
) -> HttpResult<bool> {
    let t = now();
    let row = StoredResource {
        id: envelope["id"].as_str().unwrap_or_default().to_owned(),
        subscription: target.subscription.to_lowercase(),
        resource_group: group.name.to_lowercase(),
        resource_type: target.kind.full_type(),
        name: target.name.clone(),
        scope: String::new(),
        body: envelope,
        created_at: existing
            .map(|e| e.created_at.clone())
            .unwrap_or_else(|| t.clone()),
        updated_at: t,
    };
    Ok(state.store.put(&row).await?)
}

/// GET of one resource of a kind: 404 `ResourceGroupNotFound` or `ResourceNotFound`.
pub async fn get_resource(state: &AppState, target: &Target) -> HttpResult<StoredResource> {
    target.validate()?;
    let group = require_group(state, &target.subscription, &target.resource_group).await?;
    state
        .store
        .get(&target.id(&group.name))
        .await?
        .ok_or_else(|| {
            HttpError(ApiError::resource_not_found(
                &target.kind.full_type(),
                &target.name,
            ))
        })
}

/// Fills what is derived at read time: a pool's `poolManagementEndpoint` follows the server's
/// current public URL, so a restart with another URL answers the right endpoint.
pub fn render(state: &AppState, mut body: Value) -> Value {
    let is_pool = body["type"]
        .as_str()
        .is_some_and(|t| t.eq_ignore_ascii_case("Microsoft.App/sessionPools"));
    if is_pool && body["properties"].is_object() {
        if let Some(ep) = body["id"]
            .as_str()
            .and_then(|id| pool_endpoint(&state.public_url, id))
        {
            body["properties"]["poolManagementEndpoint"] = json!(ep);
        }
    }
    body
}

/// `{public}/subscriptions/{sub}/resourceGroups/{rg}/sessionPools/{name}` from a pool's id.
pub fn pool_endpoint(public_url: &str, id: &str) -> Option<String> {
    let segs: Vec<&str> = id.split('/').collect();
    // ["", "subscriptions", sub, "resourceGroups", rg, "providers", ns, type, name]
    if segs.len() != 9 {
        return None;
    }
    Some(format!(
        "{public_url}/subscriptions/{}/resourceGroups/{}/sessionPools/{}",
        segs[2], segs[4], segs[8]
    ))
}
