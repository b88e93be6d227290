//! Executions: `POST executions` (synchronous, asynchronous, or streamed as server-sent events),
//! `GET executions/{id}`, and the legacy `POST code/execute`.

use super::{encode_query, field, identifier, Ctx, DataResult, PoolPath, PREFIX};
use crate::http::{json, Query, RawBody};
use crate::routes::Routes;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::header::{ACCEPT, LOCATION};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use sandpool_api::ApiError;
use sandpool_pools::{ExecuteRequest, ExecutionEvent, ExecutionRecord, ExecutionStatus};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::time::Duration;

pub fn routes(r: Routes) -> Routes {
    let execs = format!("{PREFIX}/executions");
    let one = format!("{PREFIX}/executions/{{executionId}}");
    let legacy = format!("{PREFIX}/code/execute");
    r.add(
        Method::POST,
        &execs,
        "Run a shell command in the identifier's session (sync, async or text/event-stream)".into(),
        &[200, 202, 400, 404, 429, 503],
        true,
        post_execution,
    )
    .add(
        Method::GET,
        &one,
        "An execution of the identifier's session".into(),
        &[200, 404],
        false,
        get_execution,
    )
    .add(
        Method::POST,
        &legacy,
        "Run code (2024-02-02-preview shape)".into(),
        &[200, 400, 429],
        true,
        legacy_execute,
    )
    .add(
        Method::POST,
        &format!("{legacy}/"),
        "Run code (2024-02-02-preview shape, trailing slash)".into(),
        &[200, 400, 429],
        true,
        legacy_execute,
    )
}

/// The parsed execute body.
struct ExecBody {
    command: String,
    asynchronous: bool,
    timeout: Duration,
    output_limit: Option<usize>,
}

const DEFAULT_TIMEOUT_S: u64 = 60;
const MAX_TIMEOUT_S: u64 = 3600;

fn parse_body(raw: &[u8]) -> DataResult<ExecBody> {
    let mut v: Value = crate::http::parse_json(raw)?;
    if let Some(p) = field(&v, "properties").filter(|p| p.is_object()) {
        v = p.clone();
    }
    if !v.is_object() {
        return Err(
            ApiError::invalid_request_content("The request body must be a JSON object.").into(),
        );
    }
    let str_field = |name: &str| -> DataResult<Option<String>> {
        match field(&v, name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::invalid_request_content(format!(
                "'{name}' must be a string."
            ))
            .with_target(name)
            .into()),
        }
    };
    if let Some(t) = str_field("codeInputType")? {
        if !t.eq_ignore_ascii_case("inline") {
            return Err(ApiError::invalid_request_content(format!(
                "'codeInputType' has the unknown value '{t}'; only 'Inline' is supported."
            ))
            .with_target("codeInputType")
            .into());
        }
    }
    let asynchronous = match str_field("executionType")? {
        None => false,
        Some(t) if t.eq_ignore_ascii_case("synchronous") => false,
        Some(t) if t.eq_ignore_ascii_case("asynchronous") => true,
        Some(t) => {
            return Err(ApiError::invalid_request_content(format!(
                "'executionType' has the unknown value '{t}'; use 'Synchronous' or 'Asynchronous'."
            ))
            .with_target("executionType")
            .into())
        }
    };
    let command = match (str_field("shellCommand")?, str_field("code")?) {
        (Some(c), _) | (None, Some(c)) => c,
        (None, None) => {
            return Err(ApiError::invalid_request_content(
                "The request needs 'shellCommand' (or 'code'): the command to run.",
            )
            .with_target("shellCommand")
            .into())
        }
    };
    let uint = |name: &str| -> DataResult<Option<u64>> {
        match field(&v, name) {
            None | Some(Value::Null) => Ok(None),
            Some(n) => n.as_u64().map(Some).ok_or_else(|| {
                ApiError::invalid_request_content(format!(
                    "'{name}' must be a non-negative integer."
                ))
                .with_target(name)
                .into()
            }),
        }
    };
    let timeout = uint("timeoutInSeconds")?.unwrap_or(DEFAULT_TIMEOUT_S);
    if !(1..=MAX_TIMEOUT_S).contains(&timeout) {
        return Err(ApiError::invalid_request_content(format!(
            "'timeoutInSeconds' must be between 1 and {MAX_TIMEOUT_S}; got {timeout}."
        ))
        .with_target("timeoutInSeconds")
        .into());
    }
    let output_limit =
        uint("outputStreamsMaxLength")?.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    Ok(ExecBody {
        command,
        asynchronous,
        timeout: Duration::from_secs(timeout),
        output_limit,
    })
}

fn operation_id(headers: &HeaderMap) -> DataResult<Option<String>> {
    match headers.get("operation-id") {
        None => Ok(None),
        Some(v) => match v.to_str() {
            Ok(s) if !s.trim().is_empty() => Ok(Some(s.trim().to_owned())),
            _ => Err(ApiError::invalid_request_content(
                "The 'operation-id' header must be non-empty visible ASCII.",
            )
            .into()),
        },
    }
}

/// The execution as API.md renders it (`status`: the exit code as a string when it ran).
pub(crate) fn execution_body(r: &ExecutionRecord, execution_type: &str) -> Value {
    let status = match r.status {
        ExecutionStatus::Running => "Running".to_owned(),
        ExecutionStatus::Succeeded => r.exit_code.unwrap_or(0).to_string(),
        ExecutionStatus::Failed | ExecutionStatus::TimedOut => "Failed".to_owned(),
    };
    let mut body = json!({
        "id": r.id,
        "identifier": r.identifier,
        "executionType": execution_type,
        "status": status,
    });
    if r.status != ExecutionStatus::Running {
        body["result"] = json!({
            "stdout": r.stdout,
            "stderr": r.stderr,
            "exitCode": r.exit_code,
            "executionTimeInMilliseconds": r.duration_ms.unwrap_or(0),
            "stdoutTruncated": r.stdout_truncated,
            "stderrTruncated": r.stderr_truncated,
        });
    }
    let code = match r.status {
        ExecutionStatus::TimedOut => Some("ExecutionTimedOut"),
        ExecutionStatus::Failed => Some("ExecutionFailed"),
        _ => None,
    };
    if let Some(code) = code {
        body["error"] = json!({
            "code": code,
            "message": r.error.clone().unwrap_or_else(|| "The execution failed.".into()),
        });
    }
    body
}

fn with_operation_id(mut resp: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert("operation-id", v);
    }
    resp
}

fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/event-stream"))
}

/// Parses an execute request and starts it in the identifier's session (allocated on first
/// use). Returns whether the caller asked for an asynchronous execution.
async fn start(
    s: &AppState,
    p: (String, String, String),
    q: &Query,
    headers: &HeaderMap,
    raw: &[u8],
) -> DataResult<(Ctx, String, bool, sandpool_pools::ExecutionHandle)> {
    let ctx = Ctx::new(s, p).await?;
    let ident = identifier(q)?;
    let body = parse_body(raw)?;
    let req = ExecuteRequest {
        id: operation_id(headers)?,
        command: body.command,
        timeout: Some(body.timeout),
        output_limit: body.output_limit,
        ..Default::default()
    };
    let session = ctx.manager.acquire(&ctx.key, &ident).await?;
    let handle = ctx.manager.execute(&session, req).await?;
    Ok((ctx, ident, body.asynchronous, handle))
}

async fn post_execution(
    State(s): State<AppState>,
    q: Query,
    Path(p): PoolPath,
    headers: HeaderMap,
    RawBody(raw): RawBody,
) -> DataResult<Response> {
    let (ctx, ident, asynchronous, mut handle) = start(&s, p, &q, &headers, &raw).await?;
    let id = handle.id().to_owned();

    if asynchronous {
        let location = format!(
            "{}/executions/{}?api-version={}&identifier={}",
            ctx.endpoint,
            encode_query(&id),
            encode_query(q.get("api-version").unwrap_or(sandpool_api::API_VERSION)),
            encode_query(&ident)
        );
        let mut resp = json(
            StatusCode::ACCEPTED,
            &json!({"id": id, "status": "Running"}),
        );
        if let Ok(v) = HeaderValue::from_str(&location) {
            resp.headers_mut().insert("operation-location", v.clone());
            resp.headers_mut().insert(LOCATION, v);
        }
        // The execution runs on in the manager; its record completes without this handle.
        drop(handle);
        return Ok(with_operation_id(resp, &id));
    }

    if wants_sse(&headers) {
        let stream = futures::stream::unfold(Some(handle), |h| async move {
            let mut h = h?;
            let event = match h.next().await? {
                ExecutionEvent::Stdout(b) => chunk_event("stdout", &b),
                ExecutionEvent::Stderr(b) => chunk_event("stderr", &b),
                ExecutionEvent::Finished(r) => {
                    let e = Event::default()
                        .event("result")
                        .data(execution_body(&r, "Synchronous").to_string());
                    return Some((Ok::<_, Infallible>(e), None));
                }
            };
            Some((Ok(event), Some(h)))
        });
        let resp = Sse::new(stream).into_response();
        return Ok(with_operation_id(resp, &id));
    }

    let record = wait_for(&mut handle).await?;
    Ok(with_operation_id(
        json(StatusCode::OK, &execution_body(&record, "Synchronous")),
        &id,
    ))
}

/// A chunk of output as an SSE event: the data is the chunk as a JSON string, so line breaks
/// and trailing newlines survive the line-oriented SSE framing exactly.
fn chunk_event(name: &str, bytes: &[u8]) -> Event {
    let text = String::from_utf8_lossy(bytes);
    Event::default()
        .event(name)
        .data(Value::String(text.into_owned()).to_string())
}

async fn wait_for(h: &mut sandpool_pools::ExecutionHandle) -> DataResult<ExecutionRecord> {
    while let Some(e) = h.next().await {
        if let ExecutionEvent::Finished(r) = e {
            return Ok(r);
        }
    }
    Err(ApiError::new(500, "SandboxError", "The execution ended without a result.").into())
}

async fn get_execution(
    State(s): State<AppState>,
    q: Query,
    Path((sub, rg, pool, exec_id)): Path<(String, String, String, String)>,
) -> DataResult<Response> {
    let ctx = Ctx::new(&s, (sub, rg, pool)).await?;
    let ident = identifier(&q)?;
    let record = ctx.manager.execution(&ctx.key, &ident, &exec_id).await?;
    let record = record.ok_or_else(|| {
        ApiError::new(
            404,
            "ExecutionNotFound",
            format!("The session has no execution '{exec_id}'."),
        )
    })?;
    Ok(with_operation_id(
        json(StatusCode::OK, &execution_body(&record, "Asynchronous")),
        &record.id,
    ))
}

async fn legacy_execute(
    State(s): State<AppState>,
    q: Query,
    Path(p): PoolPath,
    headers: HeaderMap,
    RawBody(raw): RawBody,
) -> DataResult<Response> {
    let (_, _, _, mut handle) = start(&s, p, &q, &headers, &raw).await?;
    let r = wait_for(&mut handle).await?;
    let ok = r.status == ExecutionStatus::Succeeded && r.exit_code == Some(0);
    let result = match (&r.status, r.exit_code) {
        (ExecutionStatus::Succeeded, Some(code)) => Value::from(code),
        _ => Value::Null,
    };
    let mut stderr = r.stderr.clone();
    if let Some(e) = &r.error {
        if !stderr.is_empty() && !stderr.ends_with('\n') {
            stderr.push('\n');
        }
        stderr.push_str(e);
    }
    let body = json!({"properties": {
        "status": if ok { "Success" } else { "Failure" },
        "stdout": r.stdout,
        "stderr": stderr,
        "result": result,
        "executionTimeInMilliseconds": r.duration_ms.unwrap_or(0),
    }});
    Ok(with_operation_id(json(StatusCode::OK, &body), &r.id))
}
