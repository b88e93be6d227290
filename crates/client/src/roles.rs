//! Role assignments and role definitions.

use serde_json::{json, Value};

use crate::{ids, Client, ClientError};

impl Client {
    /// Assigns `role_definition_id` (a full roleDefinitions id) to `principal_id` at `scope`
    /// under the assignment name `name` (a UUID).
    pub async fn create_role_assignment(
        &self,
        scope: &str,
        name: &str,
        role_definition_id: &str,
        principal_id: &str,
    ) -> Result<Value, ClientError> {
        let body = json!({"properties": {"roleDefinitionId": role_definition_id, "principalId": principal_id}});
        self.put(&ids::role_assignments(scope, Some(name)), &body)
            .await
    }

    pub async fn get_role_assignment(&self, scope: &str, name: &str) -> Result<Value, ClientError> {
        self.get(&ids::role_assignments(scope, Some(name))).await
    }

    pub async fn delete_role_assignment(&self, scope: &str, name: &str) -> Result<(), ClientError> {
        self.delete(&ids::role_assignments(scope, Some(name))).await
    }

    /// Assignments at `scope` and above (`$filter=atScope()`), or of one principal.
    pub async fn list_role_assignments(
        &self,
        scope: &str,
        principal_id: Option<&str>,
    ) -> Result<Vec<Value>, ClientError> {
        let filter = match principal_id {
            Some(p) => format!("principalId eq '{p}'"),
            None => "atScope()".to_string(),
        };
        self.list(&ids::role_assignments(scope, None), &[("$filter", &filter)])
            .await
    }

    /// Role definitions visible at `scope`, optionally only the one named `role_name`.
    pub async fn list_role_definitions(
        &self,
        scope: &str,
        role_name: Option<&str>,
    ) -> Result<Vec<Value>, ClientError> {
        let path = format!(
            "{}/providers/{}",
            scope.trim_end_matches('/'),
            ids::ROLE_DEFINITIONS
        );
        match role_name {
            Some(n) => {
                let filter = format!("roleName eq '{}'", n.replace('\'', "''"));
                self.list(&path, &[("$filter", &filter)]).await
            }
            None => self.list(&path, &[]).await,
        }
    }
}
