//! Long-running operation results: deletes of groups and pools answer 202 with an absolute
//! `Location` here; the work is already done when it is answered, so polling gives 200 at once.
//! Records are stored, so a poll after a restart still answers.

use crate::http::{json, HttpResult, Query};
use crate::routes::Routes;
use crate::store::Operation;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::header::{HeaderValue, LOCATION, RETRY_AFTER};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use sandpool_api::{validate, ApiError, API_VERSION};
use sandpool_auth::Rule;
use serde_json::json;

const ITEM: &str = "/subscriptions/{subscriptionId}/operationResults/{operationId}";

pub fn routes(r: Routes) -> Routes {
    // Operations belong to the subscription (as ARM's do).
    r.rule(Rule::manage(
        "Microsoft.Resources/subscriptions/operationResults/read",
        "/subscriptions/{subscriptionId}",
    ))
    .add(
        Method::GET,
        ITEM,
        "Poll a long-running operation".into(),
        &[200, 404],
        false,
        get,
    )
}

/// Records a finished operation on `resource_id` and answers 202 with `Location` pointing at it.
pub async fn accepted_with_location(
    s: &AppState,
    q: &Query,
    sub: &str,
    resource_id: &str,
) -> HttpResult<Response> {
    let op = Operation {
        id: uuid::Uuid::new_v4().to_string(),
        subscription: sub.to_lowercase(),
        resource_id: resource_id.to_owned(),
        status: "Succeeded".into(),
    };
    s.store.put_operation(&op).await?;
    let api_version = q.get("api-version").unwrap_or(API_VERSION);
    let url = format!(
        "{}/subscriptions/{}/operationResults/{}?api-version={api_version}",
        s.public_url, op.subscription, op.id
    );
    let mut resp = Response::new(axum::body::Body::empty());
    *resp.status_mut() = StatusCode::ACCEPTED;
    if let Ok(v) = HeaderValue::from_str(&url) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    Ok(resp)
}

async fn get(
    State(s): State<AppState>,
    Path((sub, id)): Path<(String, String)>,
) -> HttpResult<Response> {
    validate::subscription_id(&sub)?;
    let op = s.store.get_operation(&sub, &id).await?.ok_or_else(|| {
        ApiError::new(
            404,
            "OperationNotFound",
            format!("The operation '{id}' was not found."),
        )
    })?;
    Ok(json(
        StatusCode::OK,
        &json!({"id": op.id, "name": op.id, "status": op.status, "resourceId": op.resource_id}),
    ))
}
