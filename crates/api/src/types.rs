//! Request and response bodies of the management plane.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The api-version sandpool's own clients send.
pub const API_VERSION: &str = "2025-02-02-preview";

/// Who created and last modified a resource, and when (RFC 3339).
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SystemData {
    pub created_by: Option<String>,
    pub created_by_type: Option<String>,
    pub created_at: Option<String>,
    pub last_modified_by: Option<String>,
    pub last_modified_by_type: Option<String>,
    pub last_modified_at: Option<String>,
}

/// The ARM envelope of every resource.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource<P = Value> {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub resource_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    pub properties: P,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_data: Option<SystemData>,
}

/// Every list answer: `{"value":[…],"nextLink":null}`.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct List<T> {
    pub value: Vec<T>,
    #[serde(default)]
    pub next_link: Option<String>,
}

impl<T> List<T> {
    pub fn new(value: Vec<T>) -> Self {
        Self {
            value,
            next_link: None,
        }
    }
}

/// The body of a PUT of a tracked resource, before validation of its properties.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRequest {
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub properties: Option<Value>,
}

/// Properties of a resource group.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceGroupProperties {
    pub provisioning_state: String,
}

/// Properties of a user-assigned identity (all read-only).
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityProperties {
    pub principal_id: String,
    pub client_id: String,
    pub tenant_id: String,
}

/// `PUT …/deployments/{name}` body.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRequest {
    pub properties: DeploymentRequestProperties,
}

#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentRequestProperties {
    #[serde(default)]
    pub mode: Option<String>,
    pub template: Value,
    #[serde(default)]
    pub parameters: Option<Value>,
}

/// Role assignment properties as stored and returned.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleAssignmentProperties {
    pub role_definition_id: String,
    pub principal_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_type: Option<String>,
    #[serde(default)]
    pub scope: String,
}

/// Session pool properties after validation, with every default filled in.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionPoolProperties {
    pub pool_management_type: String,
    pub container_type: String,
    pub scale_configuration: ScaleConfiguration,
    pub dynamic_pool_configuration: DynamicPoolConfiguration,
    pub session_network_configuration: SessionNetworkConfiguration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_container_template: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_management_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
    /// Properties sandpool does not interpret, kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleConfiguration {
    pub max_concurrent_sessions: u32,
    pub ready_session_instances: u32,
}

#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DynamicPoolConfiguration {
    pub lifecycle_configuration: LifecycleConfiguration,
    /// The older shape (`executionType` + `cooldownPeriodInSeconds`) is echoed for Timed pools so
    /// clients written against older api-versions read what they wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_period_in_seconds: Option<u32>,
}

#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "lifecycleType")]
pub enum LifecycleConfiguration {
    Timed {
        #[serde(rename = "cooldownPeriodInSeconds")]
        cooldown_period_in_seconds: u32,
    },
    OnContainerExit {
        #[serde(rename = "maxAlivePeriodInSeconds")]
        max_alive_period_in_seconds: u32,
    },
}

#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionNetworkConfiguration {
    pub status: String,
}

/// Per-sandbox limits of a managed cluster (run target).
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterLimits {
    /// CPU cores (fractional).
    pub cpu: f64,
    /// Kubernetes quantity, e.g. `512Mi`, `1Gi`.
    pub memory: String,
    pub pids: u32,
}

/// Properties of a managed cluster (a named Run Command target).
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedClusterProperties {
    pub limits: ClusterLimits,
    /// `Enabled` or `Disabled`.
    pub egress: String,
    pub command_timeout_in_seconds: u32,
    /// Write-only: accepted on PUT, never returned; GET says only whether one is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
    #[serde(default)]
    pub has_kubeconfig: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
