//! Template deployments.

use sandpool_api::{DeploymentRequest, DeploymentRequestProperties};
use serde_json::Value;

use crate::{ids, Client, ClientError};

impl Client {
    /// Deploys `template` with `parameters` into a resource group (incremental mode) and waits
    /// for the deployment to finish. Answers the deployment resource as the server shapes it.
    pub async fn create_deployment(
        &self,
        rg: &str,
        name: &str,
        template: Value,
        parameters: Option<Value>,
    ) -> Result<Value, ClientError> {
        let body = DeploymentRequest {
            properties: DeploymentRequestProperties {
                mode: Some("Incremental".into()),
                template,
                parameters,
            },
        };
        let body =
            serde_json::to_value(body).map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
        self.put(
            &ids::deployment(self.subscription(), rg, name),
            &crate::groups::strip_nulls(body),
        )
        .await
    }

    pub async fn get_deployment(&self, rg: &str, name: &str) -> Result<Value, ClientError> {
        self.get(&ids::deployment(self.subscription(), rg, name))
            .await
    }
}
