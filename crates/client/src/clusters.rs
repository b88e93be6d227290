//! Managed clusters: the named targets of Run Command.

use sandpool_api::Resource;
use serde_json::Value;

use crate::{ids, Client, ClientError};

impl Client {
    /// Creates or replaces a cluster; `body` is `{"location":…,"properties":{…}}`.
    pub async fn create_cluster(
        &self,
        rg: &str,
        name: &str,
        body: &Value,
    ) -> Result<Resource, ClientError> {
        self.put_resource(&ids::managed_cluster(self.subscription(), rg, name), body)
            .await
    }

    pub async fn get_cluster(&self, rg: &str, name: &str) -> Result<Resource, ClientError> {
        self.get_resource(&ids::managed_cluster(self.subscription(), rg, name))
            .await
    }

    pub async fn list_clusters(&self, rg: Option<&str>) -> Result<Vec<Resource>, ClientError> {
        self.list_resources(
            &ids::collection(self.subscription(), rg, ids::MANAGED_CLUSTERS),
            &[],
        )
        .await
    }

    pub async fn delete_cluster(&self, rg: &str, name: &str) -> Result<(), ClientError> {
        self.delete(&ids::managed_cluster(self.subscription(), rg, name))
            .await
    }
}
