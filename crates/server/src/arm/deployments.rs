//! Deployments: an ARM template's resources applied in order through the same code as a direct
//! PUT. The body is read raw and parsed with `sandpool_template::parse`, so templates with
//! comments are accepted. The deployment keeps (and answers) its parameters and outputs as ARM
//! does: secure ones by type only, so a GET never returns a secret the template was given.

use super::{get_resource, put_resource, require_group, store_resource, Kind, Target};
use crate::http::{json, put_answer, HttpError, HttpResult, RawBody};
use crate::routes::Routes;
use crate::{AppState, Principal};
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::Extension;
use sandpool_api::{validate, ApiError, DeploymentRequest, Resource};
use sandpool_auth::Rule;
use sandpool_template::{Context, TemplateError};
use serde_json::json;

const ITEM: &str =
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Resources/deployments/{name}";

pub fn routes(r: Routes) -> Routes {
    r.rule(Rule::manage("Microsoft.Resources/deployments/write", ITEM))
        .add(
            Method::PUT,
            ITEM,
            "Deploy an ARM template into a resource group".into(),
            &[200, 201],
            true,
            put,
        )
        .request::<DeploymentRequest>()
        .response::<Resource>(200)
        .response::<Resource>(201)
        // Validation reveals what a PUT would: the same right. Each resource is then checked as
        // its own PUT would be (the plan step).
        .rule(Rule::manage("Microsoft.Resources/deployments/write", ITEM))
        .add(
            Method::POST,
            &format!("{ITEM}/validate"),
            "Check a deployment as its PUT would, applying nothing".into(),
            &[200, 400],
            true,
            validate_deployment,
        )
        .request::<DeploymentRequest>()
        .rule(Rule::manage("Microsoft.Resources/deployments/read", ITEM))
        .add(
            Method::GET,
            ITEM,
            "Get a deployment".into(),
            &[200, 404],
            false,
            get,
        )
        .response::<Resource>(200)
}

fn template_error(e: TemplateError) -> HttpError {
    let mut err = ApiError::new(400, e.code, e.message);
    err.target = e.target;
    HttpError(err)
}

/// A deployment checked and ready to apply: what `validate` answers and `put` applies.
struct Plan {
    target: Target,
    group: crate::store::StoredResource,
    /// Resources, parameters and outputs as evaluated (secure values already taken out of
    /// what is answered).
    deployment: sandpool_template::Deployment,
    /// Where each of `deployment.resources` goes.
    targets: Vec<Target>,
}

async fn put(
    State(s): State<AppState>,
    p: Option<Extension<Principal>>,
    Path(t): Path<(String, String, String)>,
    RawBody(raw): RawBody,
) -> HttpResult<Response> {
    let plan = plan(&s, p.as_deref(), t, &raw).await?;
    apply(&s, p.as_deref(), plan).await
}

/// `POST …/deployments/{name}/validate` (what `az deployment group create` sends first): every
/// check of a PUT, nothing applied.
async fn validate_deployment(
    State(s): State<AppState>,
    p: Option<Extension<Principal>>,
    Path(t): Path<(String, String, String)>,
    RawBody(raw): RawBody,
) -> HttpResult<Response> {
    let plan = plan(&s, p.as_deref(), t, &raw).await?;
    let validated: Vec<_> = plan
        .targets
        .iter()
        .map(|t| json!({"id": t.id(&plan.group.name)}))
        .collect();
    Ok(json(
        StatusCode::OK,
        &json!({
            "id": plan.target.id(&plan.group.name),
            "name": plan.target.name,
            "type": Kind::Deployment.full_type(),
            "properties": {
                "mode": "Incremental",
                "provisioningState": "Succeeded",
                "timestamp": super::now(),
                "validatedResources": validated,
            },
        }),
    ))
}

async fn plan(
    s: &AppState,
    p: Option<&Principal>,
    t: (String, String, String),
    raw: &[u8],
) -> HttpResult<Plan> {
    let target = Target::new(Kind::Deployment, t);
    validate::subscription_id(&target.subscription)?;
    validate::deployment_name(&target.name)?;
    let text = std::str::from_utf8(raw)
        .map_err(|_| ApiError::invalid_request_content("The request body is not UTF-8 text."))?;
    let doc = sandpool_template::parse(text).map_err(template_error)?;
    let req: DeploymentRequest = serde_json::from_value(doc).map_err(|e| {
        ApiError::invalid_request_content(format!("The deployment body is not valid: {e}."))
    })?;
    let mode = req
        .properties
        .mode
        .clone()
        .unwrap_or_else(|| "Incremental".into());
    if !mode.eq_ignore_ascii_case("Incremental") {
        return Err(ApiError::invalid_parameter(
            "properties.mode",
            format!("Deployment mode '{mode}' is not supported; only 'Incremental' is."),
        )
        .into());
    }
    let group = require_group(s, &target.subscription, &target.resource_group).await?;
    let ctx = Context {
        subscription_id: target.subscription.to_lowercase(),
        resource_group: group.name.clone(),
        resource_group_location: group.body["location"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        deployment_name: target.name.clone(),
    };
    let parameters = req
        .properties
        .parameters
        .clone()
        .unwrap_or_else(|| json!({}));
    let deployment =
        sandpool_template::evaluate_deployment(&req.properties.template, &parameters, &ctx)
            .map_err(template_error)?;
    let resources = &deployment.resources;

    // Every resource is checked before any is applied, so an unsupported type leaves nothing
    // half-deployed.
    let mut targets = Vec::with_capacity(resources.len());
    for (i, r) in resources.iter().enumerate() {
        let kind = Kind::from_type(&r.resource_type)
            .filter(|k| *k != Kind::Deployment)
            .ok_or_else(|| {
                ApiError::new(
                    400,
                    "UnsupportedResourceType",
                    format!(
                        "The template resource type '{}' is not supported; supported: Microsoft.App/sessionPools, Microsoft.ManagedIdentity/userAssignedIdentities, Microsoft.ContainerService/managedClusters.",
                        r.resource_type
                    ),
                )
                .with_target(format!("resources[{i}].type"))
            })?;
        targets.push(Target {
            subscription: target.subscription.clone(),
            resource_group: group.name.clone(),
            kind,
            name: r.name.clone(),
        });
    }
    // The auth layer only checked `deployments/write`: each resource needs what its own PUT
    // would, checked before anything is applied.
    for (i, t) in targets.iter().enumerate() {
        crate::auth::check_write(s, p, &t.id(&group.name), &t.kind.full_type())
            .await
            .map_err(|mut e| {
                e.0.target = Some(format!("resources[{i}]"));
                e
            })?;
    }
    Ok(Plan {
        target,
        group,
        deployment,
        targets,
    })
}

async fn apply(s: &AppState, p: Option<&Principal>, plan: Plan) -> HttpResult<Response> {
    let Plan {
        target,
        group,
        deployment,
        targets,
    } = plan;
    let mut outputs = Vec::new();
    for (i, (t, r)) in targets.iter().zip(&deployment.resources).enumerate() {
        let (value, _) = put_resource(s, p, t, &r.body).await.map_err(|mut e| {
            e.0.target = Some(format!(
                "resources[{i}]{}",
                e.0.target.map(|t| format!(".{t}")).unwrap_or_default()
            ));
            e
        })?;
        outputs.push(json!({"id": value["id"]}));
    }

    let id = target.id(&group.name);
    let existing = s.store.get(&id).await?;
    let now = super::now();
    let envelope = json!({
        "id": id,
        "name": target.name,
        "type": Kind::Deployment.full_type(),
        "properties": {
            "mode": "Incremental",
            "provisioningState": "Succeeded",
            "timestamp": now,
            // secureString/secureObject parameters and outputs: type only, never the value.
            "parameters": deployment.parameters,
            "outputs": deployment.outputs,
            "outputResources": outputs,
            "correlationId": uuid::Uuid::new_v4().to_string(),
        },
        "systemData": super::system_data(p, existing.as_ref().map(|e| &e.body)),
    });
    let created = store_resource(s, &group, &target, envelope.clone(), existing.as_ref()).await?;
    Ok(put_answer(created, &envelope))
}

async fn get(
    State(s): State<AppState>,
    Path(t): Path<(String, String, String)>,
) -> HttpResult<Response> {
    let r = get_resource(&s, &Target::new(Kind::Deployment, t)).await?;
    Ok(json(StatusCode::OK, &r.body))
}
