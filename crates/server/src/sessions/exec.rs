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
use sandpool_api::wire::{
    Execution, ExecutionRequest, LegacyExecution, LegacyExecutionRequest, SessionQuery,
};
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
    .params::<SessionQuery>()
    .request::<ExecutionRequest>()
    .response::<Execution>(200)
    .response::<Execution>(202)
    .add(
        Method::GET,
        &one,
        "An execution of the identifier's session".into(),
        &[200, 404],
        false,
        get_execution,
    )
    .params::<SessionQuery>()
    .response::<Execution>(200)
    .add(
        Method::POST,
        &legacy,
        "Run code (2024-02-02-preview shape)".into(),
        &[200, 400, 429],
        true,
        legacy_execute,
    )
    .params::<SessionQuery>()
    .request::<LegacyExecutionRequest>()
    .response::<LegacyExecution>(200)
    .add(
        Method::POST,
        &format!("{legacy}/"),
        "Run code (2024-02-02-preview shape, trailing slash)".into(),
        &[200, 400, 429],
        true,
        legacy_execute,
    )
    .params::<SessionQuery>()
    .request::<LegacyExecutionRequest>()
    .response::<LegacyExecution>(200)
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
            "leftoverProcesses": r.leftover_processes,
        });
    }
    let died = r
        .error
        .as_deref()
        .is_some_and(|e| e.starts_with("SessionSandboxDied:"));
    let code = match r.status {
        ExecutionStatus::TimedOut => Some("ExecutionTimedOut"),
        ExecutionStatus::Failed if died => Some("SessionSandboxDied"),
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
        asynchronous: body.asynchronous,
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
        let resp = Sse::new(sse_events(handle)).into_response();
        return Ok(with_operation_id(resp, &id));
    }

    let record = wait_for(&mut handle).await?;
    Ok(with_operation_id(
        json(StatusCode::OK, &execution_body(&record, "Synchronous")),
        &id,
    ))
}

/// The execution as SSE: `stdout`/`stderr` events as output arrives, then one `result`.
fn sse_events(
    handle: sandpool_pools::ExecutionHandle,
) -> impl futures::Stream<Item = Result<Event, Infallible>> {
    struct St {
        handle: Option<sandpool_pools::ExecutionHandle>,
        stdout: Utf8Carry,
        stderr: Utf8Carry,
        pending: std::collections::VecDeque<Event>,
    }
    let st = St {
        handle: Some(handle),
        stdout: Utf8Carry::default(),
        stderr: Utf8Carry::default(),
        pending: Default::default(),
    };
    futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(e) = st.pending.pop_front() {
                return Some((Ok(e), st));
            }
            let event = st.handle.as_mut()?.next().await;
            match event {
                Some(ExecutionEvent::Stdout(b)) => {
                    if let Some(text) = st.stdout.push(&b) {
                        st.pending.push_back(chunk_event("stdout", text));
                    }
                }
                Some(ExecutionEvent::Stderr(b)) => {
                    if let Some(text) = st.stderr.push(&b) {
                        st.pending.push_back(chunk_event("stderr", text));
                    }
                }
                Some(ExecutionEvent::Finished(r)) => {
                    st.handle = None;
                    if let Some(text) = st.stdout.finish() {
                        st.pending.push_back(chunk_event("stdout", text));
                    }
                    if let Some(text) = st.stderr.finish() {
                        st.pending.push_back(chunk_event("stderr", text));
                    }
                    st.pending.push_back(
                        Event::default()
                            .event("result")
                            .data(execution_body(&r, "Synchronous").to_string()),
                    );
                }
                None => st.handle = None,
            }
        }
    })
}

/// Decodes a byte stream cut into arbitrary chunks as UTF-8: a character split across two
/// chunks is held back until its last byte arrives instead of turning into two U+FFFD.
#[derive(Default)]
struct Utf8Carry {
    tail: Vec<u8>,
}

impl Utf8Carry {
    fn push(&mut self, bytes: &[u8]) -> Option<String> {
        self.tail.extend_from_slice(bytes);
        let complete = incomplete_suffix_start(&self.tail);
        if complete == 0 {
            return None;
        }
        let rest = self.tail.split_off(complete);
        let text = String::from_utf8_lossy(&self.tail).into_owned();
        self.tail = rest;
        Some(text)
    }

    fn finish(&mut self) -> Option<String> {
        if self.tail.is_empty() {
            return None;
        }
        let text = String::from_utf8_lossy(&self.tail).into_owned();
        self.tail.clear();
        Some(text)
    }
}

/// Where a multi-byte character that the bytes end in the middle of starts (the length when
/// they do not).
fn incomplete_suffix_start(bytes: &[u8]) -> usize {
    let n = bytes.len();
    for i in (n.saturating_sub(3)..n).rev() {
        let width = match bytes[i] {
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            0x80..=0xbf => continue,
            _ => return n,
        };
        return if n - i < width { i } else { n };
    }
    n
}

/// A chunk of output as an SSE event: the data is the chunk as a JSON string, so line breaks
/// and trailing newlines survive the line-oriented SSE framing exactly.
fn chunk_event(name: &str, text: String) -> Event {
    Event::default()
        .event(name)
        .data(Value::String(text).to_string())
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
        json(
            StatusCode::OK,
            &execution_body(
                &record,
                if record.asynchronous {
                    "Asynchronous"
                } else {
                    "Synchronous"
                },
            ),
        ),
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

#[cfg(test)]
mod tests {
    use super::Utf8Carry;

    #[test]
    fn characters_split_across_chunks_decode_whole() {
        let text = "a✓b€c😀";
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            for cut2 in cut..=bytes.len() {
                let mut c = Utf8Carry::default();
                let mut out = String::new();
                for part in [&bytes[..cut], &bytes[cut..cut2], &bytes[cut2..]] {
                    out.extend(c.push(part));
                }
                out.extend(c.finish());
                assert_eq!(out, text, "cuts at {cut}, {cut2}");
            }
        }
    }

    #[test]
    fn invalid_bytes_are_replaced_not_held() {
        let mut c = Utf8Carry::default();
        assert_eq!(c.push(b"x\xffy").as_deref(), Some("x\u{fffd}y"));
        // A truncated character at the end of the output is flushed, replaced.
        assert_eq!(c.push(&[0xe2, 0x9c]), None);
        assert_eq!(c.finish().as_deref(), Some("\u{fffd}"));
        // Invalid bytes before a split character do not make it split.
        assert_eq!(c.push(b"\xff\xe2\x9c").as_deref(), Some("\u{fffd}"));
        assert_eq!(c.push(b"\x93").as_deref(), Some("✓"));
    }
}
