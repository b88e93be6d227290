//! Shapes of the session data plane, Run Command and the token endpoint as they go on the wire.
//!
//! Their handlers build these answers as JSON (they are compared case-insensitively on input
//! and several generations of clients read them), so these types exist to describe them: the
//! OpenAPI document (`/openapi.json`) is generated from them, and a client may parse with them.
//! Keep them in step with API.md and the handlers; the server's schemathesis test checks every
//! answer against them.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// `api-version` of every route: `YYYY-MM-DD` or `YYYY-MM-DD-preview`.
pub const API_VERSION_PATTERN: &str =
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])(-preview)?$";

/// The query of a data-plane call that names a session.
#[derive(Debug, Clone, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionQuery {
    /// The session's identifier: 4–128 characters; the first request with a new one allocates
    /// the session.
    #[param(min_length = 4, max_length = 128, example = "user-42")]
    pub identifier: String,
}

/// The query of the file calls.
#[derive(Debug, Clone, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FilesQuery {
    #[param(min_length = 4, max_length = 128, example = "user-42")]
    pub identifier: String,
    /// A directory relative to `/mnt/data` (or an absolute path under it).
    #[param(example = "sub/dir")]
    pub path: Option<String>,
    /// List subdirectories too.
    pub recursive: Option<bool>,
}

/// `POST {ep}/executions` (also accepted wrapped in `{"properties":{…}}`; names and enum values
/// are compared case-insensitively).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"codeInputType":"inline","executionType":"synchronous","shellCommand":"echo Hello world!","timeoutInSeconds":60}))]
pub struct ExecutionRequest {
    /// `Inline` (the only one).
    pub code_input_type: Option<String>,
    /// `Synchronous` (default) or `Asynchronous`.
    pub execution_type: Option<String>,
    /// The command (a Shell pool) or code (a PythonLTS pool).
    pub shell_command: Option<String>,
    /// Synonym of `shellCommand`.
    pub code: Option<String>,
    /// 1–3600, default 60.
    pub timeout_in_seconds: Option<u64>,
    /// Bytes of stdout and of stderr kept; the rest is cut (`stdoutTruncated`).
    pub output_streams_max_length: Option<u64>,
}

/// An execution: `status` is the exit code as a string for a Shell pool, `Succeeded`/`Failed`
/// for a PythonLTS one, `Running` until it ends.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"id":"7f3a","identifier":"user-42","executionType":"Synchronous","status":"0","result":{"stdout":"Hello world!\n","stderr":"","exitCode":0,"executionTimeInMilliseconds":3,"stdoutTruncated":false,"stderrTruncated":false}}))]
pub struct Execution {
    pub id: String,
    pub identifier: Option<String>,
    pub execution_type: Option<String>,
    pub status: String,
    pub result: Option<ExecutionResult>,
    pub error: Option<ExecutionError>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionResult {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: Option<i64>,
    pub execution_time_in_milliseconds: Option<u64>,
    pub stdout_truncated: Option<bool>,
    pub stderr_truncated: Option<bool>,
    /// PythonLTS: the last expression's value as JSON.
    pub execution_result: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExecutionError {
    /// `ExecutionTimedOut` or `ExecutionFailed`.
    pub code: String,
    pub message: String,
}

/// A session of a pool.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub identifier: String,
    pub created_at: String,
    pub last_accessed_at: String,
    pub expire_at: String,
    pub expires_at: String,
    pub etag: String,
}

/// `GET {ep}/listSessions`: the sessions twice, as both client generations read them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionList {
    pub value: Vec<Session>,
    pub sessions: Vec<Session>,
    pub count: u64,
    pub next_link: Option<String>,
}

/// `POST …/managedClusters/{name}/runCommand`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"command":"echo hi","context":""}))]
pub struct RunCommandRequest {
    pub command: String,
    /// A base64 zip unpacked into the working directory (line breaks allowed), or empty.
    pub context: Option<String>,
    /// Accepted and ignored (AKS clients send one).
    pub cluster_token: Option<String>,
}

/// `GET …/commandResults/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CommandResult {
    pub id: String,
    pub properties: CommandResultProperties,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommandResultProperties {
    /// `Running`, `Succeeded` (the command ran; see `exitCode`) or `Failed` (see `reason`).
    pub provisioning_state: String,
    pub exit_code: Option<i64>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub logs: Option<String>,
    pub reason: Option<String>,
}

/// The form of `POST /oauth2/token` (client credentials).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenRequest {
    /// `client_credentials`.
    pub grant_type: String,
    pub client_id: String,
    pub client_secret: String,
    /// The audience, e.g. `https://management.azure.com/`; or `scope` with `/.default`.
    pub resource: Option<String>,
    pub scope: Option<String>,
}

/// The token endpoint's answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AccessToken {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
    pub ext_expires_in: Option<u64>,
    pub expires_on: Option<u64>,
    pub not_before: Option<u64>,
    pub resource: Option<String>,
}

/// The token endpoint's error (RFC 6749 §5.2, as Entra ID shapes it; OAuth clients read a
/// string `error`, so this one endpoint does not answer with the Azure error body).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OAuthError {
    pub error: String,
    pub error_description: String,
}

/// `POST {ep}/code/execute` (2024-02-02-preview): the execute body inside `properties`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"properties":{"codeInputType":"inline","executionType":"synchronous","code":"echo hi"}}))]
pub struct LegacyExecutionRequest {
    pub properties: ExecutionRequest,
}

/// The answer of `POST {ep}/code/execute`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LegacyExecution {
    pub properties: LegacyExecutionProperties,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LegacyExecutionProperties {
    /// `Success` or `Failure`.
    pub status: String,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub result: Option<serde_json::Value>,
    pub execution_time_in_milliseconds: Option<u64>,
}

/// The multipart form of a file upload.
#[derive(Debug, Clone, ToSchema)]
pub struct FileUpload {
    /// The file's bytes; its filename names it.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

/// `PUT {scope}/providers/Microsoft.Authorization/roleAssignments/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"properties":{"roleDefinitionId":"/providers/Microsoft.Authorization/roleDefinitions/0fb8eba5-a2bb-4abe-b1c1-49dfad359bb0","principalId":"00000000-0000-0000-0000-000000000001","principalType":"ServicePrincipal"}}))]
pub struct RoleAssignmentRequest {
    pub properties: crate::RoleAssignmentProperties,
}
