//! AKS-style Run Command over HTTP: `POST …/managedClusters/{name}/runCommand` queues a command
//! on the [`CommandRunner`] and answers 202 with an absolute `Location`; `GET
//! …/managedClusters/{name}/commandResults/{id}` answers 202 while it runs and 200 with the
//! result when it is done. It also maps a managed cluster's stored properties onto the runner's
//! [`ClusterSettings`]. The queue, the sandboxes and the context checks are
//! `sandpool-runcommand`'s; results live in the store (`store_commands`).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header::{HeaderValue, LOCATION, RETRY_AFTER};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use sandpool_api::wire::{CommandResult as CommandResultBody, RunCommandRequest};
use sandpool_api::{bodies, ApiError};
use sandpool_auth::{Rule, RUN_COMMAND_ACTION};
use sandpool_runcommand::{
    decode_context, new_job_id, valid_job_id, ClusterSettings, CommandJob, CommandResult,
    CommandRunner, CommandState, CommandStore, RunError, RunnerConfig,
};
use serde_json::{json, Map, Value};

use crate::arm::{get_resource, Kind, Target};
use crate::http::{json, HttpResult, Query};
use crate::routes::Routes;
use crate::store::StoredResource;
use crate::store_commands::SqlCommandStore;
use crate::{AppState, ServeConfig};

/// Longest accepted `command`, in bytes.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;

/// The run-command part of the state: the runner once startup created it (it needs the sandbox
/// runtime, so a host without one has none and the POST answers 503).
#[derive(Clone, Default)]
pub struct Commands {
    runner: Arc<OnceLock<CommandRunner>>,
}

impl Commands {
    pub fn runner(&self) -> Option<&CommandRunner> {
        self.runner.get()
    }

    /// Stops the runner (running commands are stopped and recorded as failed).
    pub async fn shutdown(&self) {
        if let Some(r) = self.runner.get() {
            r.shutdown().await;
        }
    }
}

/// Creates the runner and fails what a dead process left unfinished. Runs once at startup,
/// after the pool manager's recovery (whose sweep destroys leftover run-command sandboxes).
pub async fn start(state: &AppState, config: &ServeConfig) -> anyhow::Result<()> {
    let runtime = match state.sandboxes.runtime() {
        Ok(r) => r.clone(),
        Err(e) => {
            tracing::warn!(reason = %e.message, "run command disabled: no sandbox runtime");
            // Results of an earlier run stay readable; only unfinished ones must not stay so.
            SqlCommandStore::new(state.store.clone())
                .fail_unfinished(
                    "the server stopped before the command finished",
                    sandpool_runcommand::now_millis(),
                )
                .await?;
            return Ok(());
        }
    };
    let runner = CommandRunner::new(
        runtime,
        Arc::new(SqlCommandStore::new(state.store.clone())),
        RunnerConfig {
            concurrency: config.command_concurrency.max(1),
            max_queued: config.limits.max_queued_commands,
            retention: config.command_retention,
            ..RunnerConfig::default()
        },
    );
    runner.recover().await?;
    if state.commands.runner.set(runner.clone()).is_err() {
        // A second start on the same state: keep the first runner, stop this one.
        runner.shutdown().await;
    }
    Ok(())
}

const CLUSTER: &str = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.ContainerService/managedClusters/{name}";

pub fn routes(r: Routes) -> Routes {
    // Submitting and reading results both need the run command action at the cluster.
    r.rule(Rule::manage(RUN_COMMAND_ACTION, CLUSTER))
        .add(
            Method::POST,
            &format!("{CLUSTER}/runCommand"),
            "Run a command in a fresh sandbox of a managed cluster (poll the Location)".into(),
            &[202, 400, 404, 503],
            true,
            run_command,
        )
        .request::<RunCommandRequest>()
        .rule(Rule::manage(RUN_COMMAND_ACTION, CLUSTER))
        .add(
            Method::GET,
            &format!("{CLUSTER}/commandResults/{{commandId}}"),
            "The result of a command (202 while it runs)".into(),
            &[200, 202, 404],
            false,
            command_result,
        )
        .response::<CommandResultBody>(200)
        .response::<CommandResultBody>(202)
}

type P3 = Path<(String, String, String)>;
type P4 = Path<(String, String, String, String)>;

/// What a client sent to `runCommand`.
#[derive(Debug)]
struct RunRequest {
    command: String,
    context: String,
}

/// Looks a key up case-insensitively (ARM property names are not case-sensitive).
fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn optional_string(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match field(obj, key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(
            ApiError::invalid_request_content(format!("'{key}' must be a string."))
                .with_target(key),
        ),
    }
}

/// Parses the body. The context (most of it) is moved out of the parsed JSON, never copied:
/// the body, its parse and the decoded zip are the only copies that ever exist, one after the
/// other as far as possible (see `run_command`).
fn parse_run_request(bytes: &[u8]) -> Result<RunRequest, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_request_content(
            "The request body is empty; a JSON object with 'command' is required.",
        ));
    }
    let v: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::invalid_request_content(format!("The request body is not valid: {e}."))
    })?;
    run_request_of(v)
}

fn run_request_of(v: Value) -> Result<RunRequest, ApiError> {
    let Value::Object(mut obj) = v else {
        return Err(ApiError::invalid_request_content(
            "The request body must be a JSON object.",
        ));
    };
    // A body wrapped as `{"properties":{…}}` (older clients) is accepted too.
    let wrapped = field(&obj, "command").is_none()
        && matches!(field(&obj, "properties"), Some(Value::Object(_)));
    if wrapped {
        let key = obj
            .keys()
            .find(|k| k.eq_ignore_ascii_case("properties"))
            .cloned()
            .unwrap_or_default();
        if let Some(Value::Object(inner)) = obj.remove(&key) {
            obj = inner;
        }
    }
    let obj = &mut obj;
    let command = optional_string(obj, "command")?.unwrap_or_default();
    if command.trim().is_empty() {
        return Err(ApiError::invalid_request_content(
            "'command' is required and must not be empty.",
        )
        .with_target("command"));
    }
    if command.len() > MAX_COMMAND_BYTES {
        return Err(ApiError::invalid_request_content(format!(
            "'command' is {} bytes long; at most {MAX_COMMAND_BYTES} are allowed.",
            command.len()
        ))
        .with_target("command"));
    }
    if command.contains('\0') {
        return Err(ApiError::invalid_request_content(
            "'command' must not contain NUL characters.",
        )
        .with_target("command"));
    }
    if !matches!(
        field(obj, "context"),
        None | Some(Value::Null) | Some(Value::String(_))
    ) {
        return Err(
            ApiError::invalid_request_content("'context' must be a string.").with_target("context"),
        );
    }
    let context = match obj
        .keys()
        .find(|k| k.eq_ignore_ascii_case("context"))
        .cloned()
        .and_then(|k| obj.remove(&k))
    {
        Some(Value::String(s)) => s,
        _ => String::new(),
    };
    // `clusterToken` is what AKS uses to act as the caller inside the cluster; sandpool's
    // sandboxes have no such identity, so it is checked for type and otherwise ignored.
    optional_string(obj, "clusterToken")?;
    Ok(RunRequest { command, context })
}

fn invalid_context(message: impl Into<String>) -> ApiError {
    ApiError::new(400, "InvalidContext", message).with_target("context")
}

/// The runner's settings for a managed cluster, from its stored properties and its
/// write-only kubeconfig.
pub async fn cluster_settings(
    s: &AppState,
    cluster: &StoredResource,
) -> HttpResult<ClusterSettings> {
    let p = bodies::managed_cluster_properties(&cluster.body["properties"])?;
    let kubeconfig = s
        .store
        .get_secret(&cluster.id, "kubeconfig")
        .await?
        .filter(|k| !k.is_empty());
    Ok(ClusterSettings {
        cpu_millicores: Some(cpu_millicores(p.limits.cpu)),
        memory_bytes: bodies::memory_bytes(&p.limits.memory),
        pids: Some(u64::from(p.limits.pids)),
        egress: p.egress.eq_ignore_ascii_case("Enabled"),
        command_timeout: Duration::from_secs(u64::from(p.command_timeout_in_seconds)),
        kubeconfig,
    })
}

/// Cores of a cluster's `limits.cpu` as millicores (at least 1).
pub fn cpu_millicores(cores: f64) -> u64 {
    (cores * 1000.0).round().max(1.0) as u64
}

async fn run_command(
    State(s): State<AppState>,
    q: Query,
    Path(t): P3,
    body: Body,
) -> HttpResult<Response> {
    let cluster = get_resource(&s, &Target::new(Kind::ManagedCluster, t)).await?;
    let Some(runner) = s.commands.runner() else {
        // The 503 that says why this host cannot run sandboxes.
        s.sandboxes.runtime()?;
        return Err(
            ApiError::service_unavailable("Run Command is not running on this server.").into(),
        );
    };
    // Refused before the body is read: a full queue must not cost the memory of the context.
    let max = s.limits.max_queued_commands;
    if runner.metrics().queued >= max as u64 {
        return Ok(queue_full(&RunError::QueueFull { max }));
    }
    let limit = s.limits.max_run_command_body;
    let bytes = read_body(body, limit).await?;
    // One copy at a time where possible: the body goes once parsed, the text once decoded.
    let req = parse_run_request(&bytes)?;
    drop(bytes);
    let RunRequest { command, context } = req;
    let context = decode_context(&context).map_err(|e| invalid_context(e.to_string()))?;
    let job = CommandJob {
        id: new_job_id(),
        cluster: cluster.id.clone(),
        command,
        context,
        settings: cluster_settings(&s, &cluster).await?,
    };
    let api = match runner.submit(job).await {
        Ok(id) => {
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = StatusCode::ACCEPTED;
            poll_headers(&mut resp, &result_url(&s, &q, &cluster.id, &id));
            return Ok(resp);
        }
        Err(e @ RunError::QueueFull { .. }) => return Ok(queue_full(&e)),
        Err(RunError::InvalidContext(e)) => invalid_context(e.to_string()),
        Err(RunError::InvalidJob(m)) => ApiError::invalid_request_content(m),
        Err(e @ RunError::ShuttingDown) => ApiError::service_unavailable(e.to_string()),
        Err(RunError::Store(e)) => {
            tracing::error!(error = %e, "run command: storing the job");
            ApiError::internal()
        }
        Err(RunError::RecoverAfterSubmit) => ApiError::internal(),
    };
    Err(api.into())
}

/// 429 `TooManyQueuedCommands` with `Retry-After`.
fn queue_full(e: &RunError) -> Response {
    let mut resp =
        crate::http::error_response(&ApiError::new(429, "TooManyQueuedCommands", e.to_string()));
    resp.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("5"));
    resp
}

/// The body up to `limit` bytes; 413 beyond it (read as it arrives, never more than the limit
/// held), 408 when the client stalls past the body timeout.
async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| crate::http::body_read_error(&e))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(ApiError::payload_too_large(limit as u64));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

async fn command_result(
    State(s): State<AppState>,
    q: Query,
    Path((sub, rg, name, id)): P4,
) -> HttpResult<Response> {
    let cluster = get_resource(&s, &Target::new(Kind::ManagedCluster, (sub, rg, name))).await?;
    let not_found = || {
        ApiError::new(
            404,
            "ResourceNotFound",
            format!("The command result '{id}' was not found for this managed cluster."),
        )
        .with_target("commandId")
    };
    if !valid_job_id(&id) {
        return Err(not_found().into());
    }
    let store = SqlCommandStore::new(s.store.clone());
    let Some(r) = store.get(&cluster.id, &id).await.map_err(|e| {
        tracing::error!(error = %e, "run command: reading a result");
        ApiError::internal()
    })?
    else {
        return Err(not_found().into());
    };
    if r.state.is_finished() {
        return Ok(json(StatusCode::OK, &result_body(&r)));
    }
    let mut resp = json(StatusCode::ACCEPTED, &result_body(&r));
    poll_headers(&mut resp, &result_url(&s, &q, &cluster.id, &id));
    Ok(resp)
}

/// The wire shape of a result (AKS `RunCommandResult`). Queued and running commands both read
/// `Running`: AKS has no queued state, and clients poll until the state is terminal.
pub fn result_body(r: &CommandResult) -> Value {
    let mut props = Map::new();
    let state = match r.state {
        CommandState::Queued | CommandState::Running => "Running",
        s => s.as_str(),
    };
    props.insert("provisioningState".into(), json!(state));
    if let Some(t) = r.started_at {
        props.insert("startedAt".into(), json!(rfc3339(t)));
    }
    if r.state.is_finished() {
        props.insert("exitCode".into(), json!(r.exit_code));
        props.insert("finishedAt".into(), json!(r.finished_at.map(rfc3339)));
        props.insert("logs".into(), json!(r.logs));
        props.insert("reason".into(), json!(r.reason));
    }
    json!({"id": r.id, "properties": props})
}

fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Percent-encodes what may not stand in a URL path as it is (resource group names may hold
/// any Unicode letter).
fn encode_path(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for b in p.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~()".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The absolute URL a client polls for a command's result.
fn result_url(s: &AppState, q: &Query, cluster_id: &str, id: &str) -> String {
    let version = q.get("api-version").unwrap_or(sandpool_api::API_VERSION);
    format!(
        "{}{}/commandResults/{id}?api-version={}",
        s.public_url,
        encode_path(cluster_id),
        encode_path(version)
    )
}

fn poll_headers(resp: &mut Response, location: &str) {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(LOCATION, v);
    }
    h.insert(RETRY_AFTER, HeaderValue::from_static("1"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_requests_are_checked() {
        let r = parse_run_request(br#"{"Command":"ls","context":"","clusterToken":null}"#)
            .expect("valid");
        assert_eq!((r.command.as_str(), r.context.as_str()), ("ls", ""));
        let r = parse_run_request(br#"{"properties":{"command":"ls","context":"UEs="}}"#)
            .expect("wrapped");
        assert_eq!(r.context, "UEs=");
        for (body, code) in [
            (&b""[..], "InvalidRequestContent"),
            (b"[1]", "InvalidRequestContent"),
            (b"{\"command\":3}", "InvalidRequestContent"),
            (b"{\"command\":\"  \"}", "InvalidRequestContent"),
            (b"{\"context\":\"\"}", "InvalidRequestContent"),
            (
                b"{\"command\":\"ls\",\"context\":5}",
                "InvalidRequestContent",
            ),
        ] {
            let e = parse_run_request(body).expect_err("invalid");
            assert_eq!((e.status, e.code.as_str()), (400, code), "{body:?}");
        }
        let long = format!("{{\"command\":\"{}\"}}", "x".repeat(MAX_COMMAND_BYTES + 1));
        let e = parse_run_request(long.as_bytes()).expect_err("too long");
        assert!(e.message.contains("at most"), "{}", e.message);
    }

    #[test]
    fn result_shapes() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let mut r = CommandResult::queued("abc1", "c", t0);
        let v = result_body(&r);
        assert_eq!(
            v,
            json!({"id":"abc1","properties":{"provisioningState":"Running"}})
        );
        r.state = CommandState::Succeeded;
        r.started_at = Some(t0);
        r.finished_at = Some(t0);
        r.exit_code = Some(3);
        r.logs = "hi\n".into();
        let v = result_body(&r);
        assert_eq!(v["properties"]["exitCode"], 3);
        assert_eq!(v["properties"]["startedAt"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["properties"]["logs"], "hi\n");
        assert!(v["properties"]["reason"].is_null());
        assert_eq!(encode_path("/a b/ü"), "/a%20b/%C3%BC");
    }
}
