//! User-assigned identities.

use sandpool_api::Resource;
use serde_json::json;

use crate::{ids, Client, ClientError};

impl Client {
    pub async fn create_identity(
        &self,
        rg: &str,
        name: &str,
        location: &str,
    ) -> Result<Resource, ClientError> {
        let body = json!({"location": location});
        self.put_resource(&ids::identity(self.subscription(), rg, name), &body)
            .await
    }

    pub async fn get_identity(&self, rg: &str, name: &str) -> Result<Resource, ClientError> {
        self.get_resource(&ids::identity(self.subscription(), rg, name))
            .await
    }

    pub async fn list_identities(&self, rg: Option<&str>) -> Result<Vec<Resource>, ClientError> {
        self.list_resources(
            &ids::collection(self.subscription(), rg, ids::IDENTITIES),
            &[],
        )
        .await
    }

    /// Issues a new client secret for an identity (the old one stops working); the answer
    /// (`clientId`, `clientSecret`, `principalId`, `tenantId`) is the only place it appears.
    pub async fn reset_identity_secret(
        &self,
        rg: &str,
        name: &str,
    ) -> Result<serde_json::Value, ClientError> {
        let path = format!(
            "{}/resetClientSecret",
            ids::identity(self.subscription(), rg, name)
        );
        let r = self
            .request(reqwest::Method::POST, &path, &[], None)
            .await?;
        r.body.ok_or_else(|| ClientError::InvalidResponse {
            url: path,
            status: r.status,
            message: "empty body".into(),
        })
    }

    pub async fn delete_identity(&self, rg: &str, name: &str) -> Result<(), ClientError> {
        self.delete(&ids::identity(self.subscription(), rg, name))
            .await
    }
}
