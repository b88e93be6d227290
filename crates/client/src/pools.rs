//! Session pools.

use sandpool_api::Resource;
use serde_json::{json, Map, Value};

use crate::{ids, Client, ClientError};

/// The settings a user gives a pool on the command line; unset fields are left to the server
/// (on create: its defaults; on update: unchanged).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolSpec {
    pub location: Option<String>,
    pub container_type: Option<String>,
    pub max_sessions: Option<u32>,
    pub ready_sessions: Option<u32>,
    pub cooldown_seconds: Option<u32>,
    /// `EgressEnabled` or `EgressDisabled`.
    pub network_status: Option<String>,
    pub cpu: Option<f64>,
    /// A Kubernetes quantity such as `1Gi`.
    pub memory: Option<String>,
}

impl PoolSpec {
    /// The `properties` object holding only what is set.
    pub fn properties(&self) -> Value {
        let mut p = Map::new();
        if let Some(t) = &self.container_type {
            p.insert("containerType".into(), json!(t));
        }
        let mut scale = Map::new();
        if let Some(m) = self.max_sessions {
            scale.insert("maxConcurrentSessions".into(), json!(m));
        }
        if let Some(r) = self.ready_sessions {
            scale.insert("readySessionInstances".into(), json!(r));
        }
        if !scale.is_empty() {
            p.insert("scaleConfiguration".into(), Value::Object(scale));
        }
        if let Some(c) = self.cooldown_seconds {
            p.insert(
                "dynamicPoolConfiguration".into(),
                json!({"lifecycleConfiguration": {"lifecycleType": "Timed", "cooldownPeriodInSeconds": c}}),
            );
        }
        if let Some(s) = &self.network_status {
            p.insert("sessionNetworkConfiguration".into(), json!({"status": s}));
        }
        let mut resources = Map::new();
        if let Some(c) = self.cpu {
            resources.insert("cpu".into(), json!(c));
        }
        if let Some(m) = &self.memory {
            resources.insert("memory".into(), json!(m));
        }
        if !resources.is_empty() {
            p.insert(
                "customContainerTemplate".into(),
                json!({"containers": [{"name": "shell", "resources": Value::Object(resources)}]}),
            );
        }
        Value::Object(p)
    }

    /// A full PUT body: `Dynamic` and `Shell` unless set otherwise.
    pub fn create_body(&self, default_location: &str) -> Value {
        let mut props = self.properties();
        if let Value::Object(p) = &mut props {
            p.entry("poolManagementType").or_insert(json!("Dynamic"));
            p.entry("containerType").or_insert(json!("Shell"));
        }
        json!({
            "location": self.location.as_deref().unwrap_or(default_location),
            "properties": props,
        })
    }

    /// A PATCH body with only what is set.
    pub fn patch_body(&self) -> Value {
        let mut body = Map::new();
        if let Some(l) = &self.location {
            body.insert("location".into(), json!(l));
        }
        body.insert("properties".into(), self.properties());
        Value::Object(body)
    }
}

impl Client {
    pub async fn create_pool(
        &self,
        rg: &str,
        name: &str,
        body: &Value,
    ) -> Result<Resource, ClientError> {
        self.put_resource(&ids::session_pool(self.subscription(), rg, name), body)
            .await
    }

    pub async fn get_pool(&self, rg: &str, name: &str) -> Result<Resource, ClientError> {
        self.get_resource(&ids::session_pool(self.subscription(), rg, name))
            .await
    }

    /// Pools of one resource group, or of the whole subscription.
    pub async fn list_pools(&self, rg: Option<&str>) -> Result<Vec<Resource>, ClientError> {
        self.list_resources(
            &ids::collection(self.subscription(), rg, ids::SESSION_POOLS),
            &[],
        )
        .await
    }

    /// Merges `patch` into the pool (PATCH); waits if the server answers 202.
    pub async fn update_pool(
        &self,
        rg: &str,
        name: &str,
        patch: &Value,
    ) -> Result<Resource, ClientError> {
        crate::arm::typed(
            self.patch(&ids::session_pool(self.subscription(), rg, name), patch)
                .await?,
        )
    }

    pub async fn delete_pool(&self, rg: &str, name: &str) -> Result<(), ClientError> {
        self.delete(&ids::session_pool(self.subscription(), rg, name))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_spec_creates_a_dynamic_shell_pool() {
        let body = PoolSpec::default().create_body("local");
        assert_eq!(
            body,
            json!({"location": "local", "properties": {"poolManagementType": "Dynamic", "containerType": "Shell"}})
        );
    }

    #[test]
    fn patch_holds_only_what_is_set() {
        let spec = PoolSpec {
            ready_sessions: Some(2),
            cpu: Some(0.5),
            ..Default::default()
        };
        assert_eq!(
            spec.patch_body(),
            json!({"properties": {
                "scaleConfiguration": {"readySessionInstances": 2},
                "customContainerTemplate": {"containers": [{"name": "shell", "resources": {"cpu": 0.5}}]}
            }})
        );
    }
}
