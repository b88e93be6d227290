//! Operations endpoints: `/healthz`, `/readyz`, `/metrics`, `/openapi.json`.

use crate::http::{error_response, json};
use crate::routes::Routes;
use crate::AppState;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use sandpool_api::ApiError;
use serde_json::json;

pub fn routes(r: Routes) -> Routes {
    r.add(
        Method::GET,
        "/healthz",
        "Liveness".into(),
        &[200],
        false,
        || async { json(StatusCode::OK, &json!({"status": "ok"})) },
    )
    .add(
        Method::GET,
        "/readyz",
        "Readiness: the store answers".into(),
        &[200, 503],
        false,
        readyz,
    )
    .add(
        Method::GET,
        "/metrics",
        "Prometheus metrics".into(),
        &[200],
        false,
        metrics,
    )
    .response_raw(200, "text/plain")
    .add(
        Method::GET,
        "/openapi.json",
        "This OpenAPI document".into(),
        &[200],
        false,
        openapi,
    )
}

async fn readyz(State(s): State<AppState>) -> Response {
    match s.store.ping().await {
        Ok(()) => json(StatusCode::OK, &json!({"status": "ready"})),
        Err(e) => {
            tracing::warn!(error = %e, "store not reachable");
            error_response(&ApiError::service_unavailable(
                "The store is not reachable.",
            ))
        }
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render() + &crate::sessions::render_metrics(&s) + &s.commands.render_metrics(),
    )
        .into_response()
}

async fn openapi(State(s): State<AppState>) -> Response {
    ([(CONTENT_TYPE, "application/json")], s.openapi.to_string()).into_response()
}
