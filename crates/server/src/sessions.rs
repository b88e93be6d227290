//! The session data plane's place: everything below a pool's management endpoint
//! (`/subscriptions/{sub}/resourceGroups/{rg}/sessionPools/{pool}/…`: executions, files, sessions).
//! The pool manager lands in a later issue; until then the prefix is reserved: a missing pool is
//! 404 and an existing one answers 501 `NotImplemented`, both with the error body.

use crate::arm::{get_resource, Kind, Target};
use crate::http::{HttpResult, Query};
use crate::routes::Routes;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::Response;
use sandpool_api::{validate, ApiError};

const PREFIX: &str =
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/sessionPools/{poolName}";

pub fn routes(mut r: Routes) -> Routes {
    let path = format!("{PREFIX}/{{*rest}}");
    for m in [Method::GET, Method::POST, Method::DELETE, Method::PUT] {
        r = r.add(
            m,
            &path,
            "Session data plane (reserved; a later release)".into(),
            &[404, 501],
            false,
            reserved,
        );
    }
    r
}

async fn reserved(
    State(s): State<AppState>,
    q: Query,
    Path((sub, rg, pool, rest)): Path<(String, String, String, String)>,
) -> HttpResult<Response> {
    get_resource(&s, &Target::new(Kind::SessionPool, (sub, rg, pool))).await?;
    if let Some(id) = q.get("identifier") {
        validate::session_identifier(id)?;
    }
    Err(ApiError::not_implemented(&format!("The session API ('{rest}')")).into())
}
