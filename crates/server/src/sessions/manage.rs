//! Sessions of a pool: get, delete (stop) and list, in the plain and the `.management/` forms.

use super::{identifier, rfc3339, Ctx, DataResult, PoolPath, PREFIX};
use crate::http::{json, Query};
use crate::routes::Routes;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use sandpool_api::wire::{Session, SessionList, SessionQuery};
use sandpool_api::ApiError;
use sandpool_pools::SessionInfo;
use serde_json::{json, Value};

pub fn routes(r: Routes) -> Routes {
    let session = format!("{PREFIX}/session");
    let list_path = format!("{PREFIX}/listSessions");
    let mgmt = format!("{PREFIX}/.management");
    r.add(
        Method::GET,
        &session,
        "The identifier's session".into(),
        &[200, 404],
        false,
        get,
    )
    .params::<SessionQuery>()
    .response::<Session>(200)
    .add(
        Method::DELETE,
        &session,
        "Stop the identifier's session".into(),
        &[204],
        false,
        stop,
    )
    .params::<SessionQuery>()
    .add(
        Method::GET,
        &list_path,
        "The pool's sessions".into(),
        &[200],
        false,
        list,
    )
    .response::<SessionList>(200)
    .add(
        Method::POST,
        &format!("{mgmt}/getSession"),
        "The identifier's session".into(),
        &[200, 404],
        false,
        get,
    )
    .params::<SessionQuery>()
    .response::<Session>(200)
    .add(
        Method::POST,
        &format!("{mgmt}/listSessions"),
        "The pool's sessions".into(),
        &[200],
        false,
        list,
    )
    .response::<SessionList>(200)
    .add(
        Method::POST,
        &format!("{mgmt}/stopSession"),
        "Stop the identifier's session".into(),
        &[204],
        false,
        stop,
    )
    .params::<SessionQuery>()
}

fn session_json(s: &SessionInfo) -> Value {
    let expires = rfc3339(s.expires_at);
    json!({
        "identifier": s.identifier,
        "createdAt": rfc3339(s.created_at),
        "lastAccessedAt": rfc3339(s.last_accessed_at),
        "expireAt": expires,
        "expiresAt": expires,
        "etag": s.etag,
    })
}

async fn get(State(s): State<AppState>, q: Query, Path(p): PoolPath) -> DataResult<Response> {
    let ctx = Ctx::new(&s, p).await?;
    let ident = identifier(&q)?;
    let info = ctx
        .manager
        .get_session(&ctx.key, &ident)
        .await
        .ok_or_else(|| {
            ApiError::new(
                404,
                "SessionNotFound",
                format!("The pool has no session with identifier '{ident}'."),
            )
        })?;
    Ok(json(StatusCode::OK, &session_json(&info)))
}

async fn stop(State(s): State<AppState>, q: Query, Path(p): PoolPath) -> DataResult<Response> {
    let ctx = Ctx::new(&s, p).await?;
    let ident = identifier(&q)?;
    ctx.manager.delete_session(&ctx.key, &ident).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list(State(s): State<AppState>, Path(p): PoolPath) -> DataResult<Response> {
    let ctx = Ctx::new(&s, p).await?;
    let sessions: Vec<Value> = ctx
        .manager
        .list_sessions(&ctx.key)
        .await
        .iter()
        .map(session_json)
        .collect();
    Ok(json(
        StatusCode::OK,
        &json!({
            "value": sessions,
            "sessions": sessions,
            "count": sessions.len(),
            "nextLink": null,
        }),
    ))
}
