//! What the auth engine needs from durable storage. The server implements [`AuthStore`] over
//! its own tables; nothing here knows about SQL.

use std::future::Future;
use std::sync::Arc;

use crate::secret::SecretHash;

/// Errors from the backing store; reported as 500 without their text reaching the client.
pub type StoreError = Box<dyn std::error::Error + Send + Sync>;

/// One role assignment of a principal, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleAssignment {
    /// The scope the role was assigned at: `/`, `/subscriptions/{s}`, a resource group or a
    /// resource id. Compared case-insensitively.
    pub scope: String,
    /// The `roleDefinitionId` as given on PUT (full id or bare GUID).
    pub role_definition_id: String,
}

/// A client's login: who it is and the hash of its current secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCredential {
    pub principal_id: String,
    pub secret_hash: SecretHash,
}

/// Storage the auth engine reads on every request. Keep these calls cheap (indexed lookups):
/// they run on the request path so that deletions take effect on the next request.
pub trait AuthStore: Send + Sync + 'static {
    /// Every role assignment of `principal_id`, at any scope.
    fn role_assignments_for(
        &self,
        principal_id: &str,
    ) -> impl Future<Output = Result<Vec<RoleAssignment>, StoreError>> + Send;

    /// False once the principal's identity has been deleted: its unexpired tokens stop working.
    fn principal_active(
        &self,
        principal_id: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The credential of `client_id`, or `None` if no identity has that client id.
    fn client_credential(
        &self,
        client_id: &str,
    ) -> impl Future<Output = Result<Option<ClientCredential>, StoreError>> + Send;
}

impl<T: AuthStore> AuthStore for Arc<T> {
    fn role_assignments_for(
        &self,
        principal_id: &str,
    ) -> impl Future<Output = Result<Vec<RoleAssignment>, StoreError>> + Send {
        (**self).role_assignments_for(principal_id)
    }

    fn principal_active(
        &self,
        principal_id: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).principal_active(principal_id)
    }

    fn client_credential(
        &self,
        client_id: &str,
    ) -> impl Future<Output = Result<Option<ClientCredential>, StoreError>> + Send {
        (**self).client_credential(client_id)
    }
}
