//! Resource groups.

use std::collections::BTreeMap;

use sandpool_api::{Resource, ResourceRequest};
use serde_json::Value;

use crate::{ids, Client, ClientError};

impl Client {
    /// Creates or updates a resource group.
    pub async fn create_group(
        &self,
        name: &str,
        location: &str,
        tags: Option<BTreeMap<String, String>>,
    ) -> Result<Resource, ClientError> {
        let body = ResourceRequest {
            location: Some(location.to_string()),
            tags,
            properties: None,
        };
        let body =
            serde_json::to_value(body).map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
        let body = strip_nulls(body);
        self.put_resource(&ids::resource_group(self.subscription(), name), &body)
            .await
    }

    pub async fn get_group(&self, name: &str) -> Result<Resource, ClientError> {
        self.get_resource(&ids::resource_group(self.subscription(), name))
            .await
    }

    pub async fn list_groups(&self) -> Result<Vec<Resource>, ClientError> {
        let path = format!("{}/resourcegroups", ids::subscription(self.subscription()));
        self.list_resources(&path, &[]).await
    }

    /// Deletes a resource group and everything in it; waits until it is gone.
    pub async fn delete_group(&self, name: &str) -> Result<(), ClientError> {
        self.delete(&ids::resource_group(self.subscription(), name))
            .await
    }
}

/// Drops `null` members so optional fields are absent rather than `null` on the wire.
pub(crate) fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        other => other,
    }
}
