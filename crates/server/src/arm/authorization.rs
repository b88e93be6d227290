//! Role definitions (built-ins, read-only) and role assignments (stored resources) at any scope:
//! `/`, a subscription, a resource group or a resource of a kind the server has. Each scope is a
//! route template of its own, so their authorization is declared like every other route's.
//!
//! The built-in roles and the evaluation of assignments (who may do what) belong to
//! crates/auth; this module stores and lists assignments (indexed for the auth lookups by
//! [`crate::auth::index_resource`]) and serves crates/auth's role definitions.

use super::{require_group, system_data, Kind};
use crate::http::{error_response, json, parse_json, put_answer, HttpResult, Query, RawBody};
use crate::routes::Routes;
use crate::store::{ListFilter, StoredResource};
use crate::{AppState, Principal};
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use axum::Extension;
use sandpool_api::wire::RoleAssignmentRequest;
use sandpool_api::{validate, ApiError, List, Resource, RoleAssignmentProperties};
use sandpool_auth::Rule;
use serde_json::{json, Value};

pub const ASSIGNMENT_TYPE: &str = "Microsoft.Authorization/roleAssignments";
const ASSIGNMENTS: &str = "/providers/Microsoft.Authorization/roleAssignments";
const DEFINITIONS: &str = "/providers/Microsoft.Authorization/roleDefinitions";

/// The scopes role assignments and definitions are served at, as route templates: the root, a
/// subscription, a resource group, and each kind of resource in a group. Each is a route of its
/// own, so the enforcement layer knows the scope from the route that matched.
fn scopes() -> Vec<String> {
    let group = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}";
    let mut out = vec![
        String::new(),
        "/subscriptions/{subscriptionId}".to_owned(),
        group.to_owned(),
    ];
    for kind in Kind::TRACKED.into_iter().chain([Kind::Deployment]) {
        out.push(format!(
            "{group}/providers/{}/{}/{{name}}",
            kind.namespace(),
            kind.type_name()
        ));
    }
    out
}

type Params = Path<Vec<(String, String)>>;

/// The scope a request is at (`/` for the root), from the route's own parameters.
fn scope_of(template: &str, params: &[(String, String)]) -> HttpResult<String> {
    let scope = if template.is_empty() { "/" } else { template };
    sandpool_auth::fill_scope(scope, params).ok_or_else(|| ApiError::internal().into())
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> &'a str {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

pub fn routes(mut r: Routes) -> Routes {
    for scope in scopes() {
        let at = if scope.is_empty() {
            "/".to_owned()
        } else {
            scope.clone()
        };
        let a = format!("{scope}{ASSIGNMENTS}");
        let one = format!("{a}/{{roleAssignmentName}}");
        let d = format!("{scope}{DEFINITIONS}");
        let assignments = |verb: &str| {
            Rule::manage(
                format!("Microsoft.Authorization/roleAssignments/{verb}"),
                &at,
            )
        };
        let definitions = Rule::manage("Microsoft.Authorization/roleDefinitions/read", &at);
        let (s1, s2, s3, s4, s5, s6) = (
            scope.clone(),
            scope.clone(),
            scope.clone(),
            scope.clone(),
            scope.clone(),
            scope.clone(),
        );
        r = r
            .rule(assignments("write"))
            .add(Method::PUT, &one, "Create a role assignment at a scope".into(), &[201, 200, 400], true,
                move |State(s): State<AppState>, p: Option<Extension<Principal>>, Path(params): Params, RawBody(body): RawBody| async move {
                    let scope = scope_of(&s1, &params)?;
                    put_assignment(&s, p.as_deref(), &scope, param(&params, "roleAssignmentName"), &body).await
                })
            .request::<RoleAssignmentRequest>()
            .response::<Resource<RoleAssignmentProperties>>(200)
            .response::<Resource<RoleAssignmentProperties>>(201)
            .rule(assignments("read"))
            .add(Method::GET, &one, "Get a role assignment".into(), &[200, 404], false,
                move |State(s): State<AppState>, Path(params): Params| async move {
                    let scope = scope_of(&s2, &params)?;
                    get_assignment(&s, &scope, param(&params, "roleAssignmentName")).await
                })
            .response::<Resource<RoleAssignmentProperties>>(200)
            .rule(assignments("delete"))
            .add(Method::DELETE, &one, "Delete a role assignment".into(), &[200, 204], false,
                move |State(s): State<AppState>, Path(params): Params| async move {
                    let scope = scope_of(&s3, &params)?;
                    delete_assignment(&s, &scope, param(&params, "roleAssignmentName")).await
                })
            .rule(assignments("read"))
            .add(Method::GET, &a, "List role assignments at, above and below a scope ($filter=atScope(), principalId eq '…')".into(), &[200], false,
                move |State(s): State<AppState>, q: Query, Path(params): Params| async move {
                    let scope = scope_of(&s4, &params)?;
                    list_assignments(&s, &scope, &q).await
                })
            .response::<List<Resource<RoleAssignmentProperties>>>(200)
            .rule(definitions.clone())
            .add(Method::GET, &d, "List built-in role definitions ($filter=roleName eq '…')".into(), &[200], false,
                move |q: Query, Path(params): Params| async move {
                    let scope = scope_of(&s5, &params)?;
                    definitions_answer(&scope, "", &q)
                })
            .response::<List<Resource>>(200)
            .rule(definitions)
            .add(Method::GET, &format!("{d}/{{roleDefinitionId}}"), "Get a role definition".into(), &[200, 404], false,
                move |q: Query, Path(params): Params| async move {
                    let scope = scope_of(&s6, &params)?;
                    definitions_answer(&scope, param(&params, "roleDefinitionId"), &q)
                })
            .response::<Resource>(200);
    }
    r
}

/// What no route matches. The enforcement layer answers such requests itself (after
/// authentication) and never lets one through; this stays as the router's last resort.
pub async fn fallback(uri: Uri) -> Response {
    error_response(&ApiError::path_not_found(uri.path()))
}

/// Resolves a scope to its canonical id (`""` for the root), checking that it exists.
async fn resolve_scope(s: &AppState, scope: &str) -> HttpResult<(String, String, String)> {
    if scope.is_empty() || scope == "/" {
        return Ok((String::new(), String::new(), String::new()));
    }
    let segs: Vec<&str> = scope.split('/').collect();
    if segs.len() < 3 || segs[1] != "subscriptions" {
        return Err(ApiError::new(
            400,
            "InvalidScope",
            format!("The scope '{scope}' is not a valid scope."),
        )
        .into());
    }
    let sub = segs[2];
    validate::subscription_id(sub)?;
    if segs.len() == 3 {
        return Ok((
            format!("/subscriptions/{}", sub.to_lowercase()),
            sub.to_lowercase(),
            String::new(),
        ));
    }
    if segs.len() < 5 || segs[3] != "resourceGroups" {
        return Err(ApiError::new(
            400,
            "InvalidScope",
            format!("The scope '{scope}' is not a valid scope."),
        )
        .into());
    }
    let group = require_group(s, sub, segs[4]).await?;
    if segs.len() == 5 {
        return Ok((
            group.id.clone(),
            sub.to_lowercase(),
            group.name.to_lowercase(),
        ));
    }
    let r = s.store.get(scope).await?.ok_or_else(|| {
        ApiError::new(
            404,
            "ResourceNotFound",
            format!("The scope '{scope}' does not exist."),
        )
    })?;
    Ok((r.id, sub.to_lowercase(), group.name.to_lowercase()))
}

fn definitions_answer(scope: &str, rest: &str, q: &Query) -> HttpResult<Response> {
    if !rest.is_empty() {
        let r = sandpool_auth::find_role(rest)
            .filter(|r| r.guid.eq_ignore_ascii_case(rest))
            .ok_or_else(|| {
                ApiError::new(
                    404,
                    "RoleDefinitionDoesNotExist",
                    format!("The role definition '{rest}' does not exist."),
                )
            })?;
        return Ok(json(StatusCode::OK, &r.to_arm_json(scope)));
    }
    let list = sandpool_auth::role_definitions_list(scope, q.get("$filter"))
        .map_err(|m| ApiError::new(400, "InvalidFilter", m).with_target("$filter"))?;
    Ok(json(StatusCode::OK, &list))
}

fn invalid_filter(f: &str) -> ApiError {
    ApiError::new(
        400,
        "InvalidFilter",
        format!("The $filter '{f}' is not supported."),
    )
    .with_target("$filter")
}

/// Parses `field eq 'value'` (field case-insensitive, `''` escapes a quote).
fn parse_eq(term: &str, field: &str) -> Option<String> {
    let term = term.trim();
    let (lhs, rhs) = term.split_once(' ')?;
    if !lhs.eq_ignore_ascii_case(field) {
        return None;
    }
    let rhs = rhs.trim_start();
    let (op, value) = rhs.split_once(' ')?;
    if !op.eq_ignore_ascii_case("eq") {
        return None;
    }
    let value = value.trim();
    let inner = value.strip_prefix('\'')?.strip_suffix('\'')?;
    Some(inner.replace("''", "'"))
}

fn assignment_id(scope_id: &str, name: &str) -> String {
    format!("{scope_id}{ASSIGNMENTS}/{name}")
}

async fn put_assignment(
    s: &AppState,
    p: Option<&Principal>,
    scope: &str,
    name: &str,
    body: &[u8],
) -> HttpResult<Response> {
    validate::role_assignment_name(name)?;
    let v: Value = parse_json(body)?;
    let props = v.get("properties").ok_or_else(|| {
        ApiError::invalid_request_content(
            "The request body must be {\"properties\":{\"roleDefinitionId\",\"principalId\"}}.",
        )
    })?;
    let role_definition_id = props["roleDefinitionId"].as_str().ok_or_else(|| {
        ApiError::invalid_request_content("'properties.roleDefinitionId' must be a string.")
            .with_target("properties.roleDefinitionId")
    })?;
    let principal_id = props["principalId"].as_str().ok_or_else(|| {
        ApiError::invalid_request_content("'properties.principalId' must be a string.")
            .with_target("properties.principalId")
    })?;
    if !validate::is_uuid(principal_id) {
        return Err(ApiError::new(
            400,
            "InvalidPrincipalId",
            format!("The principal id '{principal_id}' is not a valid UUID."),
        )
        .with_target("properties.principalId")
        .into());
    }
    let role = sandpool_auth::find_role(role_definition_id).ok_or_else(|| {
        ApiError::new(
            400,
            "RoleDefinitionDoesNotExist",
            format!("The role definition '{role_definition_id}' does not exist."),
        )
        .with_target("properties.roleDefinitionId")
    })?;
    let (scope_id, sub, rg) = resolve_scope(s, scope).await?;
    if let Some(given) = props["scope"].as_str() {
        if sandpool_auth::normalize_scope(given) != sandpool_auth::normalize_scope(scope) {
            return Err(ApiError::new(
                400,
                "InvalidRoleAssignmentScope",
                format!("'properties.scope' ('{given}') must be the scope of the request URI."),
            )
            .with_target("properties.scope")
            .into());
        }
    }
    let id = assignment_id(&scope_id, &name.to_lowercase());
    let existing = s.store.get(&id).await?;
    let display_scope = if scope_id.is_empty() {
        "/".to_owned()
    } else {
        scope_id.clone()
    };
    let properties = RoleAssignmentProperties {
        role_definition_id: role.id_at(&scope_id),
        principal_id: principal_id.to_lowercase(),
        principal_type: Some(
            props["principalType"]
                .as_str()
                .unwrap_or("ServicePrincipal")
                .to_owned(),
        ),
        scope: display_scope.clone(),
    };
    if let Some(e) = &existing {
        let old: Option<RoleAssignmentProperties> =
            serde_json::from_value(e.body["properties"].clone()).ok();
        if old.is_some_and(|o| {
            o.principal_id != properties.principal_id
                || !o
                    .role_definition_id
                    .eq_ignore_ascii_case(&properties.role_definition_id)
        }) {
            return Err(ApiError::conflict(
                "RoleAssignmentUpdateNotPermitted",
                "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
            )
            .into());
        }
        // Rows written before migration 100 get their lookup column here.
        crate::auth::index_resource(s, &e.id, &e.body).await?;
        return Ok(json(StatusCode::OK, &e.body));
    }
    let mut pv = serde_json::to_value(&properties).map_err(|_| ApiError::internal())?;
    let now = super::now();
    pv["createdOn"] = json!(now);
    pv["updatedOn"] = json!(now);
    let envelope = json!({
        "id": id,
        "name": name.to_lowercase(),
        "type": ASSIGNMENT_TYPE,
        "properties": pv,
        "systemData": system_data(p, None),
    });
    let row = StoredResource {
        id: id.clone(),
        subscription: sub,
        resource_group: rg,
        resource_type: ASSIGNMENT_TYPE.into(),
        name: name.to_lowercase(),
        scope: display_scope.to_lowercase(),
        body: envelope.clone(),
        created_at: now.clone(),
        updated_at: now,
    };
    let created = s.store.put(&row).await?;
    crate::auth::index_resource(s, &id, &envelope).await?;
    Ok(put_answer(created, &envelope))
}

async fn get_assignment(s: &AppState, scope: &str, name: &str) -> HttpResult<Response> {
    let (scope_id, _, _) = resolve_scope(s, scope).await?;
    let r = s
        .store
        .get(&assignment_id(&scope_id, name))
        .await?
        .ok_or_else(|| {
            ApiError::new(
                404,
                "RoleAssignmentNotFound",
                format!("The role assignment '{name}' is not found."),
            )
        })?;
    Ok(json(StatusCode::OK, &r.body))
}

async fn delete_assignment(s: &AppState, scope: &str, name: &str) -> HttpResult<Response> {
    let (scope_id, _, _) = resolve_scope(s, scope).await?;
    let id = assignment_id(&scope_id, name);
    match s.store.get(&id).await? {
        Some(r) => {
            s.store.delete(&id).await?;
            Ok(json(StatusCode::OK, &r.body))
        }
        None => Ok(super::tracked::no_content()),
    }
}

/// Whether `inner` is `outer` or lies below it (segment-wise, case-insensitive).
fn within(inner: &str, outer: &str) -> bool {
    let (i, o) = (inner.to_lowercase(), outer.to_lowercase());
    o == "/" || i == o || i.starts_with(&format!("{}/", o.trim_end_matches('/')))
}

async fn list_assignments(s: &AppState, scope: &str, q: &Query) -> HttpResult<Response> {
    let (scope_id, sub, _) = resolve_scope(s, scope).await?;
    let scope_id = if scope_id.is_empty() {
        "/".to_owned()
    } else {
        scope_id
    };
    let mut at_scope = false;
    let mut principal = None;
    if let Some(f) = q.get("$filter") {
        for term in split_and(f) {
            if term.trim().eq_ignore_ascii_case("atScope()") {
                at_scope = true;
            } else if let Some(v) = parse_eq(&term, "principalId") {
                principal = Some(v.to_lowercase());
            } else if let Some(v) = parse_assigned_to(&term) {
                principal = Some(v.to_lowercase());
            } else {
                return Err(invalid_filter(f).into());
            }
        }
    }
    let mut rows = s
        .store
        .list(&ListFilter {
            subscription: None,
            resource_group: None,
            resource_type: Some(ASSIGNMENT_TYPE),
        })
        .await?;
    rows.retain(|r| r.subscription.is_empty() || sub.is_empty() || r.subscription == sub);
    let value: Vec<Value> = rows
        .into_iter()
        .filter(|r| {
            let above = within(&scope_id, &r.scope);
            let below = within(&r.scope, &scope_id);
            let scope_ok = if at_scope { above } else { above || below };
            let principal_ok = principal
                .as_deref()
                .is_none_or(|pid| r.body["properties"]["principalId"].as_str() == Some(pid));
            scope_ok && principal_ok
        })
        .map(|r| r.body)
        .collect();
    Ok(json(StatusCode::OK, &List::new(value)))
}

fn split_and(f: &str) -> Vec<String> {
    let lower = f.to_lowercase();
    let mut out = Vec::new();
    let mut start = 0;
    while let Some(i) = lower[start..].find(" and ") {
        out.push(f[start..start + i].to_owned());
        start += i + 5;
    }
    out.push(f[start..].to_owned());
    out
}

fn parse_assigned_to(term: &str) -> Option<String> {
    let t = term.trim();
    let lower = t.to_lowercase();
    let inner = lower.strip_prefix("assignedto(")?.strip_suffix(')')?;
    Some(
        inner
            .trim()
            .strip_prefix('\'')?
            .strip_suffix('\'')?
            .to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        assert_eq!(
            parse_eq(
                "roleName eq 'Azure ContainerApps Session Executor'",
                "roleName"
            )
            .as_deref(),
            Some("Azure ContainerApps Session Executor")
        );
        assert_eq!(
            parse_eq("principalId EQ 'a''b'", "principalId").as_deref(),
            Some("a'b")
        );
        assert_eq!(parse_eq("roleName ne 'x'", "roleName"), None);
        assert_eq!(
            split_and("atScope() and principalId eq 'x'"),
            vec!["atScope()", "principalId eq 'x'"]
        );
        assert_eq!(
            parse_assigned_to("assignedTo('ABC')").as_deref(),
            Some("abc")
        );
    }

    #[test]
    fn scopes() {
        assert!(within(
            "/subscriptions/a/resourceGroups/b",
            "/subscriptions/A"
        ));
        assert!(within("/subscriptions/a", "/"));
        assert!(!within("/subscriptions/ab", "/subscriptions/a"));
    }
}
