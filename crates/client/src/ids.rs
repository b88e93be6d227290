//! Resource ids as the API spells them. Names go in unencoded; [`crate::Client::url`] encodes
//! each path segment.

pub fn subscription(sub: &str) -> String {
    format!("/subscriptions/{sub}")
}

pub fn resource_group(sub: &str, rg: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}")
}

/// A resource of `provider_type` (e.g. `Microsoft.App/sessionPools`) in a resource group.
pub fn resource(sub: &str, rg: &str, provider_type: &str, name: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/{provider_type}/{name}")
}

pub const SESSION_POOLS: &str = "Microsoft.App/sessionPools";
pub const IDENTITIES: &str = "Microsoft.ManagedIdentity/userAssignedIdentities";
pub const MANAGED_CLUSTERS: &str = "Microsoft.ContainerService/managedClusters";
pub const DEPLOYMENTS: &str = "Microsoft.Resources/deployments";
pub const ROLE_ASSIGNMENTS: &str = "Microsoft.Authorization/roleAssignments";
pub const ROLE_DEFINITIONS: &str = "Microsoft.Authorization/roleDefinitions";

pub fn session_pool(sub: &str, rg: &str, name: &str) -> String {
    resource(sub, rg, SESSION_POOLS, name)
}

pub fn identity(sub: &str, rg: &str, name: &str) -> String {
    resource(sub, rg, IDENTITIES, name)
}

pub fn managed_cluster(sub: &str, rg: &str, name: &str) -> String {
    resource(sub, rg, MANAGED_CLUSTERS, name)
}

pub fn deployment(sub: &str, rg: &str, name: &str) -> String {
    resource(sub, rg, DEPLOYMENTS, name)
}

/// A collection of `provider_type` under a resource group, or the whole subscription.
pub fn collection(sub: &str, rg: Option<&str>, provider_type: &str) -> String {
    match rg {
        Some(rg) => format!("{}/providers/{provider_type}", resource_group(sub, rg)),
        None => format!("{}/providers/{provider_type}", subscription(sub)),
    }
}

/// `{scope}/providers/Microsoft.Authorization/roleAssignments[/{name}]`; scope `/` is the root.
pub fn role_assignments(scope: &str, name: Option<&str>) -> String {
    let scope = scope.trim_end_matches('/');
    match name {
        Some(n) => format!("{scope}/providers/{ROLE_ASSIGNMENTS}/{n}"),
        None => format!("{scope}/providers/{ROLE_ASSIGNMENTS}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_canonical_shape() {
        assert_eq!(
            session_pool("s", "rg", "p"),
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.App/sessionPools/p"
        );
        assert_eq!(
            collection("s", None, IDENTITIES),
            "/subscriptions/s/providers/Microsoft.ManagedIdentity/userAssignedIdentities"
        );
        assert_eq!(
            role_assignments("/", Some("x")),
            "/providers/Microsoft.Authorization/roleAssignments/x"
        );
        assert_eq!(
            role_assignments("/subscriptions/s/", None),
            "/subscriptions/s/providers/Microsoft.Authorization/roleAssignments"
        );
    }
}
