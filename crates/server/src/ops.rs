//! Operations endpoints: `/healthz`, `/readyz`, `/metrics`, `/openapi.json`.

use crate::http::{error_response, json};
use crate::routes::Routes;
use crate::AppState;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use sandpool_api::ApiError;
use sandpool_auth::Rule;
use serde_json::json;

pub fn routes(r: Routes) -> Routes {
    r.rule(Rule::Public)
        .add(
            Method::GET,
            "/healthz",
            "Liveness".into(),
            &[200],
            false,
            || async { json(StatusCode::OK, &json!({"status": "ok"})) },
        )
        .rule(Rule::Public)
        .add(
            Method::GET,
            "/readyz",
            "Readiness: the store answers".into(),
            &[200, 503],
            false,
            readyz,
        )
        .rule(Rule::manage("Microsoft.Insights/metrics/read", "/"))
        .add(
            Method::GET,
            "/metrics",
            "Prometheus metrics".into(),
            &[200],
            false,
            metrics,
        )
        .response_raw(200, crate::metrics::CONTENT_TYPE)
        .rule(Rule::Public)
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
        [(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        s.metrics.render(),
    )
        .into_response()
}

async fn openapi(State(s): State<AppState>) -> Response {
    ([(CONTENT_TYPE, "application/json")], s.openapi.to_string()).into_response()
}
