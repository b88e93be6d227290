//! Case-insensitive path segment names: before routing, the keyword segments of a path
//! (`subscriptions`, `resourceGroups`, `providers`, provider namespaces and resource types) are
//! rewritten to their canonical casing. Only keyword *positions* are touched, so a resource whose
//! name happens to be `providers` or `sessionpools` keeps its name.

use std::borrow::Cow;

const NAMESPACES: &[&str] = &[
    "Microsoft.App",
    "Microsoft.ManagedIdentity",
    "Microsoft.ContainerService",
    "Microsoft.Resources",
    "Microsoft.Authorization",
];

const TYPES: &[&str] = &[
    "sessionPools",
    "userAssignedIdentities",
    "managedClusters",
    "deployments",
    "roleAssignments",
    "roleDefinitions",
    "runCommand",
    "commandResults",
];

/// First segments below a pool's management endpoint (the session data plane).
const DATA_PLANE: &[&str] = &[
    "executions",
    "files",
    "session",
    "listSessions",
    "code",
    ".management",
];

fn canonical(seg: &str, words: &[&'static str]) -> Option<&'static str> {
    words.iter().find(|w| w.eq_ignore_ascii_case(seg)).copied()
}

/// Rewrites keyword segments of `path` to canonical casing, and runs of `/` to one (the Azure
/// CLI asks for `https://host//metadata/endpoints` when the cloud's URL ends with a slash).
pub fn normalize(path: &str) -> Cow<'_, str> {
    if path.contains("//") {
        let mut collapsed = String::with_capacity(path.len());
        for c in path.chars() {
            if !(c == '/' && collapsed.ends_with('/')) {
                collapsed.push(c);
            }
        }
        return Cow::Owned(normalize_keywords(&collapsed).into_owned());
    }
    normalize_keywords(path)
}

fn normalize_keywords(path: &str) -> Cow<'_, str> {
    let mut segs: Vec<Cow<'_, str>> = path.split('/').map(Cow::Borrowed).collect();
    let mut changed = false;
    let mut set = |segs: &mut Vec<Cow<'_, str>>, i: usize, word: &'static str| {
        if segs[i] != word {
            segs[i] = Cow::Borrowed(word);
            changed = true;
        }
    };
    // segs[0] is the empty string before the leading '/'.
    let mut i = 1;
    if segs
        .get(1)
        .is_some_and(|s| s.eq_ignore_ascii_case("subscriptions"))
    {
        set(&mut segs, 1, "subscriptions");
        i = 3;
    }
    while i < segs.len() {
        let seg = segs[i].clone();
        if seg.eq_ignore_ascii_case("resourceGroups") {
            set(&mut segs, i, "resourceGroups");
            i += 2;
        } else if seg.eq_ignore_ascii_case("operationResults") {
            set(&mut segs, i, "operationResults");
            i += 2;
        } else if seg.eq_ignore_ascii_case("providers") {
            set(&mut segs, i, "providers");
            if let Some(ns) = segs.get(i + 1).and_then(|s| canonical(s, NAMESPACES)) {
                set(&mut segs, i + 1, ns);
            }
            i += 2;
            // (type, name) pairs until a nested `providers`.
            while i < segs.len() && !segs[i].eq_ignore_ascii_case("providers") {
                if let Some(t) = canonical(&segs[i], TYPES) {
                    set(&mut segs, i, t);
                }
                i += 2;
            }
        } else if seg.eq_ignore_ascii_case("sessionPools") {
            set(&mut segs, i, "sessionPools");
            if let Some(w) = segs.get(i + 2).and_then(|s| canonical(s, DATA_PLANE)) {
                set(&mut segs, i + 2, w);
            }
            break;
        } else {
            break;
        }
    }
    if changed {
        Cow::Owned(segs.join("/"))
    } else {
        Cow::Borrowed(path)
    }
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn keywords_are_canonicalised() {
        assert_eq!(
            normalize("/SUBSCRIPTIONS/s/resourcegroups/RG/PROVIDERS/microsoft.app/sessionpools/p"),
            "/subscriptions/s/resourceGroups/RG/providers/Microsoft.App/sessionPools/p"
        );
        assert_eq!(
            normalize("/subscriptions/s/resourcegroups"),
            "/subscriptions/s/resourceGroups"
        );
        assert_eq!(
            normalize("/subscriptions/s/resourcegroups/rg/sessionpools/p/EXECUTIONS"),
            "/subscriptions/s/resourceGroups/rg/sessionPools/p/executions"
        );
    }

    #[test]
    fn repeated_slashes_collapse() {
        assert_eq!(normalize("//metadata/endpoints"), "/metadata/endpoints");
        assert_eq!(
            normalize("/subscriptions//s/resourcegroups"),
            "/subscriptions/s/resourceGroups"
        );
    }

    #[test]
    fn names_equal_to_keywords_are_left_alone() {
        assert_eq!(
            normalize("/subscriptions/providers/resourcegroups/providers/providers/microsoft.app/sessionpools/sessionpools"),
            "/subscriptions/providers/resourceGroups/providers/providers/Microsoft.App/sessionPools/sessionpools"
        );
        assert_eq!(
            normalize("/subscriptions/s/resourceGroups/resourcegroups"),
            "/subscriptions/s/resourceGroups/resourcegroups"
        );
    }

    #[test]
    fn nested_providers() {
        assert_eq!(
            normalize("/subscriptions/s/resourcegroups/rg/providers/MICROSOFT.APP/SESSIONPOOLS/p/providers/microsoft.authorization/roleassignments/x"),
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.App/sessionPools/p/providers/Microsoft.Authorization/roleAssignments/x"
        );
        assert_eq!(
            normalize("/providers/microsoft.authorization/roledefinitions"),
            "/providers/Microsoft.Authorization/roleDefinitions"
        );
    }
}
