//! What each route of the API requires: which token audience, which action or data action,
//! at which scope. Derived from the path alone, before any resource lookup, so an answer
//! never depends on whether the resource exists.

use axum::http::Method;

use crate::roles::{RUN_COMMAND_ACTION, SESSION_EXECUTE_DATA_ACTION};

/// Which API a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Audience {
    /// `https://management.azure.com/` (or the older `https://management.core.windows.net/`).
    Management,
    /// `https://dynamicsessions.io`: the session pool data plane.
    DynamicSessions,
}

/// Canonical management audience; tokens carry exactly this or [`MANAGEMENT_AUDIENCE_LEGACY`].
pub const MANAGEMENT_AUDIENCE: &str = "https://management.azure.com/";
/// What the Azure CLI asks for by default.
pub const MANAGEMENT_AUDIENCE_LEGACY: &str = "https://management.core.windows.net/";
pub const DYNAMIC_SESSIONS_AUDIENCE: &str = "https://dynamicsessions.io";

impl Audience {
    /// Maps a requested `resource` or `scope` (`https://dynamicsessions.io/.default`,
    /// `https://management.azure.com//.default`, with or without trailing slash) to the
    /// audience and the exact `aud` string the token will carry. `None` if unknown.
    pub fn from_resource(resource_or_scope: &str) -> Option<(Audience, &'static str)> {
        let r = resource_or_scope.trim();
        let r = r
            .strip_suffix("/.default")
            .unwrap_or(r)
            .trim_end_matches('/');
        match r.to_ascii_lowercase().as_str() {
            "https://management.azure.com" => Some((Audience::Management, MANAGEMENT_AUDIENCE)),
            "https://management.core.windows.net" => {
                Some((Audience::Management, MANAGEMENT_AUDIENCE_LEGACY))
            }
            "https://dynamicsessions.io" => {
                Some((Audience::DynamicSessions, DYNAMIC_SESSIONS_AUDIENCE))
            }
            _ => None,
        }
    }

    /// The audience an `aud` claim stands for; `None` for anything this server does not issue.
    pub fn from_claim(aud: &str) -> Option<Audience> {
        match aud {
            MANAGEMENT_AUDIENCE | MANAGEMENT_AUDIENCE_LEGACY => Some(Audience::Management),
            DYNAMIC_SESSIONS_AUDIENCE => Some(Audience::DynamicSessions),
            _ => None,
        }
    }

    pub fn canonical(self) -> &'static str {
        match self {
            Audience::Management => MANAGEMENT_AUDIENCE,
            Audience::DynamicSessions => DYNAMIC_SESSIONS_AUDIENCE,
        }
    }
}

/// An access check: met when a role assigned at or above `scope` grants `action` or
/// `data_action` (either one suffices).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub audience: Audience,
    pub scope: String,
    pub action: Option<String>,
    pub data_action: Option<String>,
}

/// What a route needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// No token: token endpoints, health, discovery, OpenAPI.
    Public,
    /// Any valid token of either audience, no role: paths that are no API route (the
    /// server answers 404), so unauthenticated callers learn nothing about routing.
    Authenticated,
    Protected(Requirement),
}

fn segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect()
}

/// Whether `path` (no query; raw or percent-decoded) is a public route: token endpoints and
/// discovery (with or without a tenant segment in front, as MSAL sends them), health, OpenAPI.
/// The server's other conventions (the `api-version` check) exempt exactly these too, so a
/// token client that knows nothing of ARM is never asked for one.
pub fn is_public_path(path: &str) -> bool {
    is_public(&segments(path))
}

/// The access rule for `method` `path` (path only, no query; raw or percent-decoded).
pub fn required_permission(method: &Method, path: &str) -> Access {
    let segs = segments(path);
    let seg = |i: usize| segs.get(i).map(String::as_str);
    let is = |i: usize, kw: &str| seg(i).is_some_and(|s| s.eq_ignore_ascii_case(kw));

    if is_public(&segs) {
        return Access::Public;
    }
    // What the Azure CLI reads right after sign-in: the answer is filtered to what the caller
    // holds roles in, so any valid token may ask (as in Azure).
    let directory_read = *method == Method::GET
        && match segs.len() {
            1 => is(0, "subscriptions") || is(0, "tenants"),
            2 => is(0, "subscriptions"),
            // Resource provider metadata (namespaces, types, api-versions): nothing per tenant.
            3 | 4 => is(0, "subscriptions") && is(2, "providers"),
            _ => false,
        };
    if directory_read {
        return Access::Authenticated;
    }
    if segs.len() == 1 && is(0, "metrics") {
        return management(Some("Microsoft.Insights/metrics/read".into()), "/".into());
    }
    // Session data plane: /subscriptions/{s}/resourceGroups/{rg}/sessionPools/{pool}[/…]
    if segs.len() >= 6 && is(0, "subscriptions") && is(2, "resourceGroups") && is(4, "sessionPools")
    {
        let scope = format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.App/sessionPools/{}",
            segs[1], segs[3], segs[5]
        );
        return Access::Protected(Requirement {
            audience: Audience::DynamicSessions,
            scope,
            // Whoever may manage the pool may use it (Owner, Contributor).
            action: Some("Microsoft.App/sessionPools/write".into()),
            data_action: Some(SESSION_EXECUTE_DATA_ACTION.into()),
        });
    }
    if !(is(0, "subscriptions") || is(0, "providers")) {
        return Access::Authenticated;
    }
    arm_requirement(method, &segs).unwrap_or(Access::Authenticated)
}

fn is_public(segs: &[String]) -> bool {
    let lower: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    matches!(
        l.as_slice(),
        ["healthz"]
            | ["readyz"]
            | ["openapi.json"]
            | ["metadata", "endpoints"]
            | [".well-known", ..]
            | ["oauth2", "token"]
            | ["oauth2", "v2.0", "token"]
            | [_, "oauth2", "token"]
            | [_, "oauth2", "v2.0", "token"]
            | [_, ".well-known", ..]
            | [_, "v2.0", ".well-known", ..]
    )
}

fn management(action: Option<String>, scope: String) -> Access {
    Access::Protected(Requirement {
        audience: Audience::Management,
        scope,
        action,
        data_action: None,
    })
}

fn verb(method: &Method) -> &'static str {
    match *method {
        Method::PUT | Method::PATCH | Method::POST => "write",
        Method::DELETE => "delete",
        _ => "read",
    }
}

/// ARM paths: `{scope}/providers/{namespace}/{type}/{name}[/{type}/{name}…][/{collection|action}]`,
/// and the Microsoft.Resources built-ins above the first `providers` (subscriptions,
/// resource groups).
fn arm_requirement(method: &Method, segs: &[String]) -> Option<Access> {
    let last_providers = segs
        .iter()
        .rposition(|s| s.eq_ignore_ascii_case("providers"));
    let (scope_segs, namespace, rest): (&[String], String, Vec<String>) = match last_providers {
        Some(i) => {
            let namespace = segs.get(i + 1)?.clone();
            let rest = segs.get(i + 2..)?.to_vec();
            if rest.is_empty() {
                return None;
            }
            (&segs[..i], namespace, rest)
        }
        // /subscriptions/{s}/resourceGroups/{rg}/… behave as Microsoft.Resources types.
        None => (&[], "Microsoft.Resources".to_string(), segs.to_vec()),
    };
    let scope_prefix = canonical_path(scope_segs);
    let mut types: Vec<String> = Vec::new();
    let mut resource_path = scope_prefix.clone();
    if last_providers.is_some() {
        resource_path = format!(
            "{}/providers/{namespace}",
            scope_prefix.trim_end_matches('/')
        );
    }
    // Walk type/name pairs; the resource scope grows with each name.
    let mut parent_scope = if scope_prefix.is_empty() {
        "/".to_string()
    } else {
        scope_prefix.clone()
    };
    let mut i = 0;
    let mut tail: Option<String> = None;
    while i < rest.len() {
        let ty = canonical_keyword(&rest[i]);
        match rest.get(i + 1) {
            Some(name) => {
                types.push(ty.clone());
                resource_path = format!("{}/{ty}/{name}", resource_path.trim_end_matches('/'));
                parent_scope = resource_path.clone();
                i += 2;
            }
            None => {
                tail = Some(ty);
                i += 1;
            }
        }
    }
    let type_chain = |extra: Option<&str>| {
        let mut parts = vec![namespace.clone()];
        parts.extend(types.iter().cloned());
        if let Some(e) = extra {
            parts.push(e.to_string());
        }
        parts.join("/")
    };

    // Run Command: submitting and reading results both need the run command action.
    let is_cluster = namespace.eq_ignore_ascii_case("Microsoft.ContainerService")
        && types
            .first()
            .is_some_and(|t| t.eq_ignore_ascii_case("managedClusters"));
    if is_cluster {
        let run = tail
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("runCommand"))
            || types
                .get(1)
                .is_some_and(|t| t.eq_ignore_ascii_case("commandResults"))
            || tail
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case("commandResults"));
        if run {
            let cluster_scope = cluster_scope(&resource_path, &types);
            return Some(management(Some(RUN_COMMAND_ACTION.into()), cluster_scope));
        }
    }

    let access = match tail {
        // Collection: list (GET) or create-by-POST at the parent.
        Some(collection) if *method != Method::POST => management(
            Some(format!(
                "{}/{}",
                type_chain(Some(&collection)),
                verb(method)
            )),
            parent_scope,
        ),
        // POST {resource}/{action}
        Some(action) => management(
            Some(format!("{}/action", type_chain(Some(&action)))),
            parent_scope,
        ),
        None => {
            if types.is_empty() {
                return None;
            }
            management(
                Some(format!("{}/{}", type_chain(None), verb(method))),
                resource_path,
            )
        }
    };
    Some(access)
}

/// The managed cluster's own id, dropping a `/commandResults/{id}` child.
fn cluster_scope(resource_path: &str, types: &[String]) -> String {
    if types.len() >= 2 {
        let mut parts: Vec<&str> = resource_path.split('/').collect();
        parts.truncate(parts.len().saturating_sub(2 * (types.len() - 1)));
        parts.join("/")
    } else {
        resource_path.to_string()
    }
}

/// `/subscriptions/{s}/resourceGroups/{rg}/…` with the keywords in canonical casing.
fn canonical_path(segs: &[String]) -> String {
    segs.iter()
        .map(|s| format!("/{}", canonical_keyword(s)))
        .collect()
}

fn canonical_keyword(s: &str) -> String {
    for kw in ["subscriptions", "resourceGroups", "providers"] {
        if s.eq_ignore_ascii_case(kw) {
            return kw.to_string();
        }
    }
    s.to_string()
}

/// Decodes `%XX` escapes; malformed escapes are kept as they are.
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, path: &str) -> (Audience, String, Option<String>, Option<String>) {
        match required_permission(&method, path) {
            Access::Protected(r) => (r.audience, r.scope, r.action, r.data_action),
            other => panic!("{method} {path}: {other:?}"),
        }
    }

    const SUB: &str = "/subscriptions/11111111-2222-3333-4444-555555555555";

    #[test]
    fn public_routes() {
        for p in [
            "/healthz",
            "/readyz",
            "/openapi.json",
            "/.well-known/jwks.json",
            "/.well-known/openid-configuration",
            "/oauth2/token",
            "/OAuth2/Token",
            "/oauth2/v2.0/token",
            "/my-tenant/oauth2/v2.0/token",
            "/my-tenant/v2.0/.well-known/openid-configuration",
        ] {
            assert_eq!(required_permission(&Method::POST, p), Access::Public, "{p}");
            assert!(is_public_path(p), "{p}");
        }
        for p in [
            "/metrics",
            "/",
            "/subscriptions/s/resourceGroups",
            "/oauth2",
        ] {
            assert!(!is_public_path(p), "{p}");
        }
    }

    #[test]
    fn unknown_paths_need_a_token_but_no_role() {
        for p in [
            "/",
            "/nothing",
            "/subscriptions/s/resourceGroups/rg/providers",
        ] {
            assert_eq!(
                required_permission(&Method::GET, p),
                Access::Authenticated,
                "{p}"
            );
        }
    }

    #[test]
    fn resource_groups() {
        let rg = format!("{SUB}/resourcegroups/rg1");
        let (aud, scope, action, _) = req(Method::PUT, &rg);
        assert_eq!(aud, Audience::Management);
        assert_eq!(scope, format!("{SUB}/resourceGroups/rg1"));
        assert_eq!(
            action.as_deref(),
            Some("Microsoft.Resources/subscriptions/resourceGroups/write")
        );
        assert_eq!(
            req(Method::DELETE, &rg).2.as_deref(),
            Some("Microsoft.Resources/subscriptions/resourceGroups/delete")
        );
        let (_, scope, action, _) = req(Method::GET, &format!("{SUB}/resourceGroups"));
        assert_eq!(scope, SUB);
        assert_eq!(
            action.as_deref(),
            Some("Microsoft.Resources/subscriptions/resourceGroups/read")
        );
    }

    #[test]
    fn tracked_resources_and_lists() {
        let pool = format!("{SUB}/resourceGroups/rg/providers/Microsoft.App/sessionPools/p1");
        let (_, scope, action, data) = req(Method::PATCH, &pool.to_lowercase());
        assert_eq!(scope.to_lowercase(), pool.to_lowercase());
        assert_eq!(
            action.as_deref().map(str::to_lowercase).as_deref(),
            Some("microsoft.app/sessionpools/write")
        );
        assert_eq!(data, None);
        let (_, scope, action, _) = req(
            Method::GET,
            &format!("{SUB}/providers/Microsoft.App/sessionPools"),
        );
        assert_eq!(scope, SUB);
        assert_eq!(action.as_deref(), Some("Microsoft.App/sessionPools/read"));
        let id = format!(
            "{SUB}/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u"
        );
        assert_eq!(
            req(Method::DELETE, &id).2.as_deref(),
            Some("Microsoft.ManagedIdentity/userAssignedIdentities/delete")
        );
        let dep = format!("{SUB}/resourcegroups/rg/providers/Microsoft.Resources/deployments/d");
        assert_eq!(
            req(Method::PUT, &dep).2.as_deref(),
            Some("Microsoft.Resources/deployments/write")
        );
    }

    #[test]
    fn role_assignments_and_definitions_at_any_scope() {
        let rg = format!("{SUB}/resourceGroups/rg");
        let ra = format!("{rg}/providers/Microsoft.Authorization/roleAssignments/3fa85f64-5717-4562-b3fc-2c963f66afa6");
        let (_, scope, action, _) = req(Method::PUT, &ra);
        assert!(scope.starts_with(&rg));
        assert_eq!(
            action.as_deref(),
            Some("Microsoft.Authorization/roleAssignments/write")
        );
        let (_, scope, action, _) = req(
            Method::GET,
            "/providers/Microsoft.Authorization/roleDefinitions",
        );
        assert_eq!(scope, "/");
        assert_eq!(
            action.as_deref(),
            Some("Microsoft.Authorization/roleDefinitions/read")
        );
        let pool_ra = format!(
            "{rg}/providers/Microsoft.App/sessionPools/p/providers/Microsoft.Authorization/roleAssignments"
        );
        let (_, scope, _, _) = req(Method::GET, &pool_ra);
        assert_eq!(
            scope,
            format!("{rg}/providers/Microsoft.App/sessionPools/p")
        );
    }

    #[test]
    fn run_command_and_results_need_the_run_command_action_at_the_cluster() {
        let cluster = format!(
            "{SUB}/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/c1"
        );
        for (m, p) in [
            (Method::POST, format!("{cluster}/runCommand")),
            (Method::GET, format!("{cluster}/commandResults/abc123")),
            (
                Method::GET,
                format!("{}/COMMANDRESULTS/abc123", cluster.to_lowercase()),
            ),
        ] {
            let (aud, scope, action, _) = req(m, &p);
            assert_eq!(aud, Audience::Management);
            assert_eq!(scope.to_lowercase(), cluster.to_lowercase(), "{p}");
            assert_eq!(action.as_deref(), Some(RUN_COMMAND_ACTION));
        }
        assert_eq!(
            req(Method::GET, &cluster).2.as_deref(),
            Some("Microsoft.ContainerService/managedClusters/read")
        );
    }

    #[test]
    fn session_data_plane() {
        let ep = format!("{SUB}/resourceGroups/rg/sessionPools/pool1");
        for (m, suffix) in [
            (Method::POST, "/executions"),
            (Method::GET, "/executions/abc"),
            (Method::POST, "/code/execute/"),
            (Method::POST, "/files"),
            (Method::GET, "/files/a%20b.txt/content"),
            (Method::DELETE, "/session"),
            (Method::GET, "/listSessions"),
            (Method::POST, "/.management/getSession"),
        ] {
            let (aud, scope, action, data) = req(m, &format!("{ep}{suffix}"));
            assert_eq!(aud, Audience::DynamicSessions, "{suffix}");
            assert_eq!(
                scope,
                format!("{SUB}/resourceGroups/rg/providers/Microsoft.App/sessionPools/pool1")
            );
            assert_eq!(data.as_deref(), Some(SESSION_EXECUTE_DATA_ACTION));
            assert_eq!(action.as_deref(), Some("Microsoft.App/sessionPools/write"));
        }
        let (aud, ..) = req(
            Method::GET,
            &format!("{SUB}/RESOURCEGROUPS/rg/SESSIONPOOLS/pool1/executions/x"),
        );
        assert_eq!(aud, Audience::DynamicSessions);
    }

    #[test]
    fn names_are_percent_decoded() {
        let (_, scope, _, _) = req(Method::GET, &format!("{SUB}/resourcegroups/my%2Erg"));
        assert_eq!(scope, format!("{SUB}/resourceGroups/my.rg"));
        assert_eq!(percent_decode("a%zz%4"), "a%zz%4");
        assert_eq!(percent_decode("%41%42"), "AB");
    }

    #[test]
    fn audiences_from_resource_and_scope() {
        for (input, aud) in [
            ("https://management.azure.com/", MANAGEMENT_AUDIENCE),
            ("https://management.azure.com", MANAGEMENT_AUDIENCE),
            (
                "https://management.azure.com//.default",
                MANAGEMENT_AUDIENCE,
            ),
            ("https://management.azure.com/.default", MANAGEMENT_AUDIENCE),
            (
                "https://management.core.windows.net/",
                MANAGEMENT_AUDIENCE_LEGACY,
            ),
            (
                "https://dynamicsessions.io/.default",
                DYNAMIC_SESSIONS_AUDIENCE,
            ),
            ("https://DynamicSessions.io", DYNAMIC_SESSIONS_AUDIENCE),
        ] {
            assert_eq!(
                Audience::from_resource(input).map(|a| a.1),
                Some(aud),
                "{input}"
            );
        }
        assert_eq!(
            Audience::from_resource("https://graph.microsoft.com/.default"),
            None
        );
        assert_eq!(Audience::from_resource(""), None);
    }
}
