//! Built-in role definitions (Azure's GUIDs, names and permission strings) and role
//! assignment evaluation: scope inheritance, wildcard actions, notActions.

use serde_json::{json, Value};

use crate::permission::Requirement;
use crate::store::RoleAssignment;

/// One ARM role definition. Only built-in roles exist; custom roles are out of scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleDefinition {
    pub guid: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub actions: &'static [&'static str],
    pub not_actions: &'static [&'static str],
    pub data_actions: &'static [&'static str],
    pub not_data_actions: &'static [&'static str],
}

pub const OWNER: RoleDefinition = RoleDefinition {
    guid: "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
    name: "Owner",
    description: "Grants full access to manage all resources, including the ability to assign roles in Azure RBAC.",
    actions: &["*"],
    not_actions: &[],
    data_actions: &[],
    not_data_actions: &[],
};

pub const CONTRIBUTOR: RoleDefinition = RoleDefinition {
    guid: "b24988ac-6180-42a0-ab88-20f7382dd24c",
    name: "Contributor",
    description: "Grants full access to manage all resources, but does not allow you to assign roles in Azure RBAC.",
    actions: &["*"],
    not_actions: &[
        "Microsoft.Authorization/*/Delete",
        "Microsoft.Authorization/*/Write",
        "Microsoft.Authorization/elevateAccess/Action",
        "Microsoft.Blueprint/blueprintAssignments/write",
        "Microsoft.Blueprint/blueprintAssignments/delete",
        "Microsoft.Compute/galleries/share/action",
        "Microsoft.Purview/consents/write",
        "Microsoft.Purview/consents/delete",
        "Microsoft.Resources/deploymentStacks/manageDenySetting/action",
        "Microsoft.Subscription/cancel/action",
        "Microsoft.Subscription/enable/action",
    ],
    data_actions: &[],
    not_data_actions: &[],
};

pub const READER: RoleDefinition = RoleDefinition {
    guid: "acdd72a7-3385-48ef-bd42-f606fba81ae7",
    name: "Reader",
    description: "View all resources, but does not allow you to make any changes.",
    actions: &["*/read"],
    not_actions: &[],
    data_actions: &[],
    not_data_actions: &[],
};

/// The data action of the session pool API (Azure's "Execute Code" operation).
pub const SESSION_EXECUTE_DATA_ACTION: &str =
    "Microsoft.App/sessionPools/interpreters/execute/action";

pub const SESSION_EXECUTOR: RoleDefinition = RoleDefinition {
    guid: "0fb8eba5-a2bb-4abe-b1c1-49dfad359bb0",
    name: "Azure ContainerApps Session Executor",
    description: "Grants permission to execute code and manage sessions in a session pool.",
    actions: &[
        "Microsoft.App/sessionPools/sessions/generatesessions/action",
        "Microsoft.App/sessionPools/sessions/read",
    ],
    not_actions: &[],
    data_actions: &[SESSION_EXECUTE_DATA_ACTION],
    not_data_actions: &[],
};

/// The AKS run command action (Azure spells it `runcommand` in the role; matching ignores case).
pub const RUN_COMMAND_ACTION: &str = "Microsoft.ContainerService/managedClusters/runCommand/action";

pub const AKS_CLUSTER_ADMIN: RoleDefinition = RoleDefinition {
    guid: "0ab0b1a8-8aac-4efd-b8c2-3ee1fb270be8",
    name: "Azure Kubernetes Service Cluster Admin Role",
    description: "List cluster admin credential action.",
    actions: &[
        "Microsoft.ContainerService/managedClusters/listClusterAdminCredential/action",
        "Microsoft.ContainerService/managedClusters/accessProfiles/listCredential/action",
        "Microsoft.ContainerService/managedClusters/read",
        "Microsoft.ContainerService/managedClusters/runcommand/action",
    ],
    not_actions: &[],
    data_actions: &[],
    not_data_actions: &[],
};

const BUILT_IN: [RoleDefinition; 5] = [
    OWNER,
    CONTRIBUTOR,
    READER,
    SESSION_EXECUTOR,
    AKS_CLUSTER_ADMIN,
];

/// Every built-in role, in a stable order.
pub fn built_in_roles() -> &'static [RoleDefinition] {
    &BUILT_IN
}

/// Finds a role by its full definition id (any scope prefix), bare GUID, or role name
/// (what `az role assignment create --role` accepts). Case-insensitive.
pub fn find_role(id_guid_or_name: &str) -> Option<&'static RoleDefinition> {
    let key = id_guid_or_name.trim().trim_end_matches('/');
    let guid = key.rsplit('/').next().unwrap_or(key);
    BUILT_IN
        .iter()
        .find(|r| r.guid.eq_ignore_ascii_case(guid) || r.name.eq_ignore_ascii_case(key))
}

impl RoleDefinition {
    /// The definition's id as ARM reports it for a request at `scope`: under the
    /// subscription when the scope has one, at the tenant root otherwise.
    pub fn id_at(&self, scope: &str) -> String {
        match subscription_of(scope) {
            Some(sub) => format!(
                "/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{}",
                self.guid
            ),
            None => format!(
                "/providers/Microsoft.Authorization/roleDefinitions/{}",
                self.guid
            ),
        }
    }

    /// ARM's roleDefinition resource shape.
    pub fn to_arm_json(&self, scope: &str) -> Value {
        json!({
            "id": self.id_at(scope),
            "name": self.guid,
            "type": "Microsoft.Authorization/roleDefinitions",
            "properties": {
                "roleName": self.name,
                "type": "BuiltInRole",
                "description": self.description,
                "assignableScopes": ["/"],
                "permissions": [{
                    "actions": self.actions,
                    "notActions": self.not_actions,
                    "dataActions": self.data_actions,
                    "notDataActions": self.not_data_actions,
                }],
                "createdOn": null,
                "updatedOn": null,
                "createdBy": null,
                "updatedBy": null,
            }
        })
    }

    pub fn allows_action(&self, action: &str) -> bool {
        grants(self.actions, self.not_actions, action)
    }

    pub fn allows_data_action(&self, data_action: &str) -> bool {
        grants(self.data_actions, self.not_data_actions, data_action)
    }
}

fn grants(allow: &[&str], deny: &[&str], operation: &str) -> bool {
    allow.iter().any(|p| action_matches(p, operation))
        && !deny.iter().any(|p| action_matches(p, operation))
}

/// ARM action pattern match: case-insensitive, `*` stands for any run of characters
/// (including `/`), so `*/read`, `Microsoft.App/*` and `Microsoft.Authorization/*/Write` work.
pub fn action_matches(pattern: &str, action: &str) -> bool {
    let p = pattern.as_bytes();
    let a = action.as_bytes();
    let (mut pi, mut ai) = (0, 0);
    // Position of the last `*` seen and the action index it was tried at, for backtracking.
    let mut star: Option<(usize, usize)> = None;
    while ai < a.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ai));
            pi += 1;
        } else if pi < p.len() && p[pi].eq_ignore_ascii_case(&a[ai]) {
            pi += 1;
            ai += 1;
        } else if let Some((sp, sa)) = star {
            pi = sp + 1;
            ai = sa + 1;
            star = Some((sp, sa + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Lower-cased, without trailing slashes; `/` (the root) stays `/`.
pub fn normalize_scope(scope: &str) -> String {
    let trimmed = scope.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_ascii_lowercase()
    }
}

/// True when an assignment at `assigned` applies at `target`: the same scope or an ancestor
/// (`/` → subscription → resource group → resource → child). Case-insensitive.
pub fn scope_covers(assigned: &str, target: &str) -> bool {
    let assigned = normalize_scope(assigned);
    let target = normalize_scope(target);
    assigned == "/"
        || target == assigned
        || (target.starts_with(&assigned) && target.as_bytes().get(assigned.len()) == Some(&b'/'))
}

/// The subscription id in a scope, if any.
pub fn subscription_of(scope: &str) -> Option<&str> {
    let mut segments = scope.split('/').filter(|s| !s.is_empty());
    match (segments.next(), segments.next()) {
        (Some(kw), Some(sub)) if kw.eq_ignore_ascii_case("subscriptions") => Some(sub),
        _ => None,
    }
}

/// The body of `GET {scope}/providers/Microsoft.Authorization/roleDefinitions`:
/// `{"value":[…],"nextLink":null}`, optionally narrowed by `$filter=roleName eq '…'`.
/// Any other filter is an error whose text can go into a 400 answer.
pub fn role_definitions_list(scope: &str, filter: Option<&str>) -> Result<Value, String> {
    let wanted = match filter.map(str::trim).filter(|f| !f.is_empty()) {
        None => None,
        Some(f) => Some(parse_role_name_filter(f).ok_or_else(|| {
            format!("Unsupported $filter '{f}'; only roleName eq '<name>' is supported.")
        })?),
    };
    let value: Vec<Value> = BUILT_IN
        .iter()
        .filter(|r| {
            wanted
                .as_deref()
                .is_none_or(|w| r.name.eq_ignore_ascii_case(w))
        })
        .map(|r| r.to_arm_json(scope))
        .collect();
    Ok(json!({ "value": value, "nextLink": null }))
}

/// `roleName eq 'Owner'` → `Owner` (OData: `''` inside quotes is one quote).
fn parse_role_name_filter(filter: &str) -> Option<String> {
    let (field, rest) = filter.split_once(char::is_whitespace)?;
    let (op, literal) = rest.trim_start().split_once(char::is_whitespace)?;
    if !field.eq_ignore_ascii_case("roleName") || !op.eq_ignore_ascii_case("eq") {
        return None;
    }
    let inner = literal.trim().strip_prefix('\'')?.strip_suffix('\'')?;
    Some(inner.replace("''", "'"))
}

/// Whether any of `assignments` grants what `requirement` asks at its scope. A requirement
/// naming both an action and a data action is met by either.
pub fn is_allowed(assignments: &[RoleAssignment], requirement: &Requirement) -> bool {
    assignments
        .iter()
        .filter(|a| scope_covers(&a.scope, &requirement.scope))
        .filter_map(|a| find_role(&a.role_definition_id))
        .any(|role| {
            requirement
                .action
                .as_deref()
                .is_some_and(|x| role.allows_action(x))
                || requirement
                    .data_action
                    .as_deref()
                    .is_some_and(|d| role.allows_data_action(d))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permission::Audience;

    #[test]
    fn wildcards_match_like_arm() {
        let cases = [
            ("*", "Microsoft.App/sessionPools/write", true),
            ("*/read", "Microsoft.App/sessionPools/read", true),
            ("*/read", "Microsoft.App/sessionPools/write", false),
            ("*/read", "Microsoft.App/sessionPools/readers/write", false),
            ("Microsoft.App/*", "Microsoft.App/sessionPools/delete", true),
            (
                "Microsoft.App/*",
                "Microsoft.Apps/sessionPools/delete",
                false,
            ),
            (
                "Microsoft.Authorization/*/Write",
                "microsoft.authorization/roleassignments/write",
                true,
            ),
            (
                "Microsoft.Authorization/*/Write",
                "Microsoft.Authorization/roleAssignments/read",
                false,
            ),
            (
                "microsoft.app/sessionpools/read",
                "Microsoft.App/sessionPools/READ",
                true,
            ),
            (
                "Microsoft.App/sessionPools/read",
                "Microsoft.App/sessionPools/readx",
                false,
            ),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("", "", true),
            ("", "x", false),
        ];
        for (pattern, action, expected) in cases {
            assert_eq!(
                action_matches(pattern, action),
                expected,
                "{pattern} vs {action}"
            );
        }
    }

    #[test]
    fn not_actions_subtract() {
        assert!(CONTRIBUTOR.allows_action("Microsoft.App/sessionPools/write"));
        assert!(!CONTRIBUTOR.allows_action("Microsoft.Authorization/roleAssignments/write"));
        assert!(!CONTRIBUTOR.allows_action("Microsoft.Authorization/roleAssignments/delete"));
        assert!(CONTRIBUTOR.allows_action("Microsoft.Authorization/roleAssignments/read"));
        assert!(OWNER.allows_action("Microsoft.Authorization/roleAssignments/write"));
        assert!(READER.allows_action("Microsoft.Resources/subscriptions/resourceGroups/read"));
        assert!(!READER.allows_action("Microsoft.Resources/subscriptions/resourceGroups/write"));
        // `*` covers actions, never data actions.
        assert!(!OWNER.allows_data_action(SESSION_EXECUTE_DATA_ACTION));
        assert!(SESSION_EXECUTOR.allows_data_action(SESSION_EXECUTE_DATA_ACTION));
        assert!(AKS_CLUSTER_ADMIN.allows_action(RUN_COMMAND_ACTION));
        assert!(
            !AKS_CLUSTER_ADMIN.allows_action("Microsoft.ContainerService/managedClusters/delete")
        );
    }

    #[test]
    fn scopes_inherit_downward_only() {
        let rg = "/subscriptions/S1/resourceGroups/RG";
        let pool = "/subscriptions/s1/resourcegroups/rg/providers/Microsoft.App/sessionPools/p";
        assert!(scope_covers("/", pool));
        assert!(scope_covers("/subscriptions/s1", pool));
        assert!(scope_covers(rg, pool));
        assert!(scope_covers(pool, pool));
        assert!(scope_covers(&pool.to_uppercase(), pool));
        assert!(scope_covers("/subscriptions/s1/", pool));
        assert!(!scope_covers(pool, rg));
        assert!(!scope_covers("/subscriptions/s1/resourceGroups/rg2", pool));
        assert!(!scope_covers("/subscriptions/s1/resourceGroups/r", pool));
        assert!(!scope_covers("/subscriptions/s10", "/subscriptions/s1"));
        assert!(!scope_covers(
            "/subscriptions/s1",
            "/subscriptions/s10/resourceGroups/x"
        ));
    }

    #[test]
    fn find_role_by_id_guid_or_name() {
        let id = "/subscriptions/x/providers/Microsoft.Authorization/roleDefinitions/0FB8EBA5-A2BB-4ABE-B1C1-49DFAD359BB0";
        assert_eq!(find_role(id).map(|r| r.name), Some(SESSION_EXECUTOR.name));
        assert_eq!(
            find_role("acdd72a7-3385-48ef-bd42-f606fba81ae7"),
            Some(&READER)
        );
        assert_eq!(
            find_role("azure containerapps session executor"),
            Some(&SESSION_EXECUTOR)
        );
        assert_eq!(find_role("00000000-0000-0000-0000-000000000000"), None);
        assert_eq!(find_role(""), None);
    }

    #[test]
    fn arm_shape_of_role_definition() {
        let v = OWNER.to_arm_json("/subscriptions/abc/resourceGroups/rg");
        assert_eq!(
            v["id"],
            "/subscriptions/abc/providers/Microsoft.Authorization/roleDefinitions/8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
        );
        assert_eq!(v["properties"]["type"], "BuiltInRole");
        assert_eq!(v["properties"]["roleName"], "Owner");
        assert_eq!(v["properties"]["permissions"][0]["actions"][0], "*");
        assert_eq!(
            READER.to_arm_json("/")["id"],
            "/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7"
        );
    }

    #[test]
    fn role_definition_list_and_filter() {
        let all = role_definitions_list("/subscriptions/s", None).unwrap();
        assert_eq!(all["value"].as_array().unwrap().len(), 5);
        assert!(all["nextLink"].is_null());
        let one = role_definitions_list(
            "/subscriptions/s",
            Some("roleName eq 'Azure ContainerApps Session Executor'"),
        )
        .unwrap();
        assert_eq!(one["value"].as_array().unwrap().len(), 1);
        assert_eq!(one["value"][0]["name"], SESSION_EXECUTOR.guid);
        let none = role_definitions_list("/", Some("roleName eq 'Nobody''s Role'")).unwrap();
        assert!(none["value"].as_array().unwrap().is_empty());
        assert!(role_definitions_list("/", Some("type eq 'BuiltInRole'")).is_err());
        assert!(role_definitions_list("/", Some("roleName eq Owner")).is_err());
    }

    fn assignment(role: &RoleDefinition, scope: &str) -> RoleAssignment {
        RoleAssignment {
            scope: scope.into(),
            role_definition_id: role.id_at(scope),
        }
    }

    #[test]
    fn evaluation_combines_scope_and_role() {
        let pool = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.App/sessionPools/p";
        let data = Requirement {
            audience: Audience::DynamicSessions,
            scope: pool.into(),
            action: Some("Microsoft.App/sessionPools/write".into()),
            data_action: Some(SESSION_EXECUTE_DATA_ACTION.into()),
        };
        assert!(is_allowed(&[assignment(&SESSION_EXECUTOR, pool)], &data));
        assert!(is_allowed(
            &[assignment(&CONTRIBUTOR, "/subscriptions/s")],
            &data
        ));
        assert!(!is_allowed(
            &[assignment(&READER, "/subscriptions/s")],
            &data
        ));
        assert!(!is_allowed(
            &[assignment(
                &SESSION_EXECUTOR,
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.App/sessionPools/q"
            )],
            &data
        ));
        assert!(!is_allowed(&[], &data));
        // An assignment naming an unknown role grants nothing.
        let unknown = RoleAssignment {
            scope: "/".into(),
            role_definition_id: "nope".into(),
        };
        assert!(!is_allowed(&[unknown], &data));
    }
}
