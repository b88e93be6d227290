//! The session data plane: everything below a pool's management endpoint
//! (`/subscriptions/{sub}/resourceGroups/{rg}/sessionPools/{pool}/…`: executions, files,
//! sessions), served over the pool manager (`sandpool-pools`).
//!
//! This module also keeps the manager in step with the management API: stored pools are
//! registered at startup, a pool PUT/PATCH applies live, a pool or resource-group delete destroys
//! the pool's sessions. It maps pool properties to [`PoolSettings`] and renders the manager's
//! metrics for `/metrics`.

mod exec;
mod files;
mod manage;

use crate::arm::{get_resource, Kind, Target};
use crate::http::{error_response, HttpError};
use crate::routes::Routes;
use crate::store::ListFilter;
use crate::AppState;
use axum::http::header::RETRY_AFTER;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use sandpool_api::types::{LifecycleConfiguration, SessionPoolProperties};
use sandpool_api::{bodies, validate, ApiError};
use sandpool_pools::{Lifecycle, ManagerConfig, PoolError, PoolKey, PoolManager, PoolSettings};
use serde_json::Value;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const PREFIX: &str =
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/sessionPools/{poolName}";

/// The pool manager as the handlers see it: set once at startup when the host can run
/// sandboxes; until then (or without a runtime) the data plane answers 503.
#[derive(Clone, Default)]
pub struct Pools {
    cell: Arc<OnceLock<Running>>,
}

struct Running {
    manager: PoolManager,
    max_upload_size: u64,
}

impl Pools {
    fn get(&self) -> Option<&Running> {
        self.cell.get()
    }

    /// The manager, if running.
    pub fn manager(&self) -> Option<&PoolManager> {
        self.get().map(|r| &r.manager)
    }
}

/// Startup: creates the manager over the runtime and the store, registers every stored session
/// pool, then recovers the sessions of the previous process. Without a runtime nothing starts
/// (the data plane then answers 503 with the runtime's reason).
pub async fn start(state: &AppState, max_upload_size: u64) -> anyhow::Result<()> {
    let Ok(runtime) = state.sandboxes.runtime() else {
        return Ok(());
    };
    let store: Arc<dyn sandpool_pools::SessionStore> = Arc::new(state.store.clone());
    let limits = &state.limits;
    let config = ManagerConfig {
        default_cpu_millicores: Some(limits.default_cpu_millicores()),
        max_cpu_millicores: Some(limits.max_cpu_millicores()),
        max_executions_per_session: limits.max_session_executions,
        execution_retention: limits.execution_retention,
        execution_history: limits.execution_history,
        ..ManagerConfig::default()
    };
    let manager = PoolManager::with_config(runtime.clone(), store, config);
    let pools = state
        .store
        .list(&ListFilter {
            resource_type: Some(&Kind::SessionPool.full_type()),
            ..Default::default()
        })
        .await?;
    for p in pools {
        match settings_of(&p.body["properties"]) {
            Ok(settings) => {
                if let Err(e) = manager
                    .upsert_pool(PoolKey::from_resource_id(&p.id), settings)
                    .await
                {
                    tracing::warn!(pool = %p.id, error = %e, "registering a session pool");
                }
            }
            Err(e) => tracing::warn!(pool = %p.id, error = %e, "stored pool properties"),
        }
    }
    let report = manager.recover().await?;
    tracing::debug!(?report, "session recovery");
    if state
        .pools
        .cell
        .set(Running {
            manager,
            max_upload_size,
        })
        .is_err()
    {
        anyhow::bail!("the pool manager was started twice");
    }
    Ok(())
}

/// Graceful shutdown: ready sandboxes go, sessions stay for the next process.
pub async fn shutdown(state: &AppState) {
    if let Some(m) = state.pools.manager() {
        m.shutdown().await;
    }
}

/// A session pool was created or changed (PUT, PATCH, deployment): applies it live.
pub async fn pool_changed(state: &AppState, id: &str, properties: &Value) {
    let Some(m) = state.pools.manager() else {
        return;
    };
    let result = match settings_of(properties) {
        Ok(s) => m
            .upsert_pool(PoolKey::from_resource_id(id), s)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = result {
        tracing::error!(pool = %id, error = %e, "applying session pool settings");
    }
}

/// A session pool was deleted: its sessions and ready sandboxes are destroyed.
pub async fn pool_deleted(state: &AppState, id: &str) {
    if let Some(m) = state.pools.manager() {
        m.remove_pool(&PoolKey::from_resource_id(id)).await;
    }
}

/// The session pools of a resource group, to pass to [`pool_deleted`] once the group is gone.
pub async fn pools_of_group(state: &AppState, sub: &str, group: &str) -> Vec<String> {
    let rows = state
        .store
        .list(&ListFilter {
            subscription: Some(sub),
            resource_group: Some(group),
            resource_type: Some(&Kind::SessionPool.full_type()),
        })
        .await;
    match rows {
        Ok(rows) => rows.into_iter().map(|r| r.id).collect(),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "listing the pools of a deleted group");
            Vec::new()
        }
    }
}

/// The manager's settings for stored (already validated) pool properties.
pub fn settings_of(properties: &Value) -> Result<PoolSettings, ApiError> {
    let p: SessionPoolProperties = bodies::session_pool_properties(properties)?;
    let lifecycle = match p.dynamic_pool_configuration.lifecycle_configuration {
        LifecycleConfiguration::Timed {
            cooldown_period_in_seconds,
        } => Lifecycle::Timed {
            cooldown: Duration::from_secs(cooldown_period_in_seconds.into()),
        },
        LifecycleConfiguration::OnContainerExit {
            max_alive_period_in_seconds,
        } => Lifecycle::OnContainerExit {
            max_alive: Duration::from_secs(max_alive_period_in_seconds.into()),
        },
    };
    let resources = p
        .custom_container_template
        .as_ref()
        .and_then(|t| field(t, "containers"))
        .and_then(|c| c.get(0))
        .and_then(|c| field(c, "resources"));
    let cpu_millicores = resources
        .and_then(|r| field(r, "cpu"))
        .and_then(|c| match c {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        })
        .filter(|c| c.is_finite() && *c > 0.0)
        .map(|c| ((c * 1000.0).round() as u64).max(1));
    let memory_bytes = resources
        .and_then(|r| field(r, "memory"))
        .and_then(Value::as_str)
        .and_then(bodies::memory_bytes);
    let settings = PoolSettings {
        max_concurrent_sessions: p.scale_configuration.max_concurrent_sessions,
        ready_session_instances: p.scale_configuration.ready_session_instances,
        lifecycle,
        egress: p
            .session_network_configuration
            .status
            .eq_ignore_ascii_case("EgressEnabled"),
        cpu_millicores,
        memory_bytes,
    };
    settings
        .validate()
        .map_err(|e| ApiError::invalid_request_content(e.to_string()))?;
    Ok(settings)
}

/// A JSON object's field by case-insensitive name.
pub(crate) fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// An error of the data plane: the Azure error body, plus `Retry-After` for a full pool.
#[derive(Debug)]
pub(crate) struct DataError {
    api: ApiError,
    retry_after: Option<Duration>,
}

pub(crate) type DataResult<T> = Result<T, DataError>;

impl From<ApiError> for DataError {
    fn from(api: ApiError) -> Self {
        DataError {
            api,
            retry_after: None,
        }
    }
}

impl From<HttpError> for DataError {
    fn from(e: HttpError) -> Self {
        e.0.into()
    }
}

impl From<anyhow::Error> for DataError {
    fn from(e: anyhow::Error) -> Self {
        HttpError::from(e).into()
    }
}

impl From<PoolError> for DataError {
    fn from(e: PoolError) -> Self {
        let msg = e.to_string();
        let api = match &e {
            PoolError::AtCapacity { retry_after, .. } => {
                return DataError {
                    api: ApiError::new(429, "SessionPoolAtCapacity", msg),
                    retry_after: Some(*retry_after),
                }
            }
            PoolError::TooManyExecutions { .. } => {
                return DataError {
                    api: ApiError::new(429, "TooManyConcurrentExecutions", msg),
                    retry_after: Some(Duration::from_secs(1)),
                }
            }
            PoolError::PoolNotFound(_) => ApiError::new(404, "ResourceNotFound", msg),
            PoolError::SessionNotFound(_) => ApiError::new(404, "SessionNotFound", msg),
            PoolError::SandboxDied(_) => ApiError::conflict("SessionSandboxDied", msg),
            PoolError::InvalidRequest(_) => ApiError::invalid_request_content(msg),
            PoolError::ExecutionExists(_) => ApiError::conflict("ExecutionAlreadyExists", msg),
            PoolError::SandboxStart(_) => ApiError::new(503, "SessionStartFailed", msg),
            PoolError::Sandbox(_) => ApiError::new(500, "SandboxError", msg),
            PoolError::ShuttingDown => ApiError::service_unavailable(msg),
            PoolError::Store(_) => {
                tracing::error!(error = %msg, "session store");
                ApiError::internal()
            }
        };
        api.into()
    }
}

impl From<sandpool_sandbox::SandboxError> for DataError {
    fn from(e: sandpool_sandbox::SandboxError) -> Self {
        use sandpool_sandbox::SandboxError as E;
        let api = match &e {
            E::InvalidPath(m) => ApiError::new(400, "InvalidPath", format!("Invalid path: {m}")),
            E::FileNotFound(m) => {
                ApiError::new(404, "FileNotFound", format!("File not found: {m}"))
            }
            E::Destroyed | E::NotFound => ApiError::new(
                404,
                "SessionNotFound",
                "The session ended while the request ran.",
            ),
            E::Remote(m) => ApiError::new(400, "FileOperationFailed", m.clone()),
            _ => {
                tracing::error!(error = %e, "sandbox file operation");
                ApiError::new(500, "SandboxError", e.to_string())
            }
        };
        api.into()
    }
}

impl IntoResponse for DataError {
    fn into_response(self) -> Response {
        let mut resp = error_response(&self.api);
        if let Some(after) = self.retry_after {
            let secs = after.as_secs().max(1).to_string();
            if let Ok(v) = HeaderValue::from_str(&secs) {
                resp.headers_mut().insert(RETRY_AFTER, v);
            }
        }
        resp
    }
}

/// What a data-plane request is about: a live pool of the manager and, when asked for, a
/// validated identifier.
pub(crate) struct Ctx {
    pub manager: PoolManager,
    pub key: PoolKey,
    /// `/subscriptions/…/sessionPools/{pool}` as requested (for absolute URLs).
    pub endpoint: String,
    pub max_upload_size: u64,
}

pub(crate) type PoolPath = axum::extract::Path<(String, String, String)>;

impl Ctx {
    pub async fn new(s: &AppState, (sub, rg, pool): (String, String, String)) -> DataResult<Ctx> {
        let endpoint = format!(
            "{}/subscriptions/{sub}/resourceGroups/{rg}/sessionPools/{pool}",
            s.public_url
        );
        s.sandboxes.runtime()?;
        let running = s.pools.get().ok_or_else(|| {
            ApiError::new(
                503,
                "SandboxesUnavailable",
                "The pool manager is not running on this server.",
            )
        })?;
        let target = Target::new(Kind::SessionPool, (sub, rg, pool));
        // The manager holds every stored pool (the management API keeps it in step), so a pool
        // it knows needs no store read; anything else goes the long way for the precise 404.
        let known = match target.validate() {
            Ok(()) => {
                let key = PoolKey::new(&target.subscription, &target.resource_group, &target.name);
                running.manager.has_pool(&key).then_some(key)
            }
            Err(_) => None,
        };
        let key = match known {
            Some(key) => key,
            None => PoolKey::from_resource_id(&get_resource(s, &target).await?.id),
        };
        Ok(Ctx {
            manager: running.manager.clone(),
            key,
            endpoint,
            max_upload_size: running.max_upload_size,
        })
    }
}

/// The `identifier` query parameter, validated.
pub(crate) fn identifier(q: &crate::http::Query) -> DataResult<String> {
    let id = q.get("identifier").ok_or_else(|| {
        ApiError::invalid_session_identifier("The query parameter 'identifier' is required.")
    })?;
    validate::session_identifier(id)?;
    Ok(id.to_owned())
}

/// Percent-encodes a query value (identifiers may hold `&`, `#`, `+`, …).
pub(crate) fn encode_query(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

pub(crate) fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub fn routes(r: Routes) -> Routes {
    let r = exec::routes(r);
    let r = files::routes(r);
    manage::routes(r)
}
