//! Authorization by route. Every route declares what it requires where it is registered
//! ([`Rule`]); the enforcement layer looks up the declaration of the route the router matched
//! (its template, axum's `MatchedPath`) and fills the declared scope from that route's own
//! parameters. Nothing is derived from the wording of the request path, so a resource named
//! `providers` (or `subscriptions`, `Microsoft.App`, …) cannot change what a route requires;
//! a route without a declaration, or whose scope cannot be filled, is refused.

use std::collections::HashMap;

use axum::http::Method;

use crate::permission::{percent_decode, Audience, Requirement};
use crate::roles::SESSION_EXECUTE_DATA_ACTION;

/// What one route (a method on a template) requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// No token: token endpoints, discovery, health, OpenAPI.
    Public,
    /// A management token whose roles grant `action` at `scope` or above. `scope` is a template
    /// whose `{parameters}` are the route's own (`/` is the root).
    Manage { action: String, scope: String },
    /// A session-API token whose roles grant the Session Executor's data action, or the right to
    /// manage the pool (Owner, Contributor), at `scope` (the pool, as a template).
    Sessions { scope: String },
    /// Any valid management token, no role: routes whose answer is filtered to what the caller
    /// holds roles in (the subscription list) or holds nothing of any tenant's (the cloud's
    /// resource providers). What the Azure CLI reads right after `az login`.
    SignedIn,
}

impl Rule {
    pub fn manage(action: impl Into<String>, scope: impl Into<String>) -> Rule {
        Rule::Manage {
            action: action.into(),
            scope: scope.into(),
        }
    }

    pub fn sessions(pool_scope: impl Into<String>) -> Rule {
        Rule::Sessions {
            scope: pool_scope.into(),
        }
    }
}

/// What the layer decided a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classified {
    Public,
    /// A valid management token suffices ([`Rule::SignedIn`]).
    SignedIn,
    Protected(Requirement),
    /// The path matches no route: 404 (to an authenticated caller).
    NoRoute,
    /// The path matches a route that does not serve this method: 405 (at once on a public
    /// route, to an authenticated caller elsewhere).
    MethodNotAllowed {
        public: bool,
    },
    /// A route without a declaration, or whose scope cannot be filled from the request: 403.
    Unclassified(String),
}

/// The declarations of every route the server serves, by template and method.
#[derive(Debug, Clone, Default)]
pub struct RouteRules {
    by_template: HashMap<String, HashMap<Method, Option<Rule>>>,
}

impl RouteRules {
    /// Records what `method template` requires; `None` records a served route that declared
    /// nothing (refused, and reported by [`RouteRules::undeclared`]).
    pub fn declare(&mut self, method: Method, template: &str, rule: Option<Rule>) {
        self.by_template
            .entry(template.to_owned())
            .or_default()
            .insert(method, rule);
    }

    /// Every declared route: (method, template, rule).
    pub fn entries(&self) -> Vec<(Method, String, Option<Rule>)> {
        let mut out: Vec<_> = self
            .by_template
            .iter()
            .flat_map(|(t, methods)| {
                methods
                    .iter()
                    .map(move |(m, r)| (m.clone(), t.clone(), r.clone()))
            })
            .collect();
        out.sort_by(|a, b| (&a.1, a.0.as_str()).cmp(&(&b.1, b.0.as_str())));
        out
    }

    /// Served routes without a usable declaration: none, or a scope naming a parameter the
    /// route does not have.
    pub fn undeclared(&self) -> Vec<String> {
        self.entries()
            .into_iter()
            .filter(|(_, template, rule)| match rule {
                None => true,
                Some(Rule::Public | Rule::SignedIn) => false,
                Some(Rule::Manage { scope, .. } | Rule::Sessions { scope }) => {
                    !placeholders(scope).all(|p| placeholders(template).any(|q| q == p))
                }
            })
            .map(|(m, t, _)| format!("{m} {t}"))
            .collect()
    }

    /// What `method` on `path` needs, given the template the router matched (`None`: no route).
    /// `path` is the request's path as routed (no query, still percent-encoded).
    pub fn classify(&self, method: &Method, matched: Option<&str>, path: &str) -> Classified {
        let Some(template) = matched else {
            return Classified::NoRoute;
        };
        let Some(methods) = self.by_template.get(template) else {
            return Classified::Unclassified(format!("the route '{template}' declares nothing"));
        };
        // The router answers HEAD with the GET handler.
        let method = if *method == Method::HEAD && !methods.contains_key(&Method::HEAD) {
            &Method::GET
        } else {
            method
        };
        let rule = match methods.get(method) {
            None => {
                return Classified::MethodNotAllowed {
                    public: methods.values().any(|r| r == &Some(Rule::Public)),
                }
            }
            Some(None) => {
                return Classified::Unclassified(format!(
                    "the route '{method} {template}' declares no authorization rule"
                ))
            }
            Some(Some(rule)) => rule,
        };
        let (audience, scope, action, data_action) = match rule {
            Rule::Public => return Classified::Public,
            Rule::SignedIn => return Classified::SignedIn,
            Rule::Manage { action, scope } => {
                (Audience::Management, scope, Some(action.clone()), None)
            }
            Rule::Sessions { scope } => (
                Audience::DynamicSessions,
                scope,
                // Whoever may manage the pool may use it (Owner, Contributor).
                Some("Microsoft.App/sessionPools/write".to_owned()),
                Some(SESSION_EXECUTE_DATA_ACTION.to_owned()),
            ),
        };
        let filled = route_params(template, path).and_then(|params| fill_scope(scope, &params));
        match filled {
            Some(scope) => Classified::Protected(Requirement {
                audience,
                scope,
                action,
                data_action,
            }),
            None => Classified::Unclassified(format!(
                "the scope of '{method} {template}' cannot be taken from this path"
            )),
        }
    }
}

fn placeholders(template: &str) -> impl Iterator<Item = &str> {
    template
        .split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
}

/// The route's parameters in `path`, percent-decoded, by aligning it with `template` segment by
/// segment (the router matched them, so they align). `None` when they do not, for a catch-all
/// parameter, or for an empty value.
pub fn route_params(template: &str, path: &str) -> Option<Vec<(String, String)>> {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    if t.len() != p.len() {
        return None;
    }
    let mut params = Vec::new();
    for (ts, ps) in t.iter().zip(&p) {
        match ts.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) if name.starts_with('*') => return None,
            Some(name) => {
                // A `/` inside a name stays escaped: a scope is split at `/`, and such a name
                // must not read as two segments of one (the handler refuses the name itself).
                let value = percent_decode(ps).replace('/', "%2F");
                if value.is_empty() {
                    return None;
                }
                params.push((name.to_owned(), value));
            }
            None if ts == ps => {}
            None => return None,
        }
    }
    Some(params)
}

/// `scope` (a template) with each `{parameter}` replaced by its value; `None` if one is missing.
pub fn fill_scope(scope: &str, params: &[(String, String)]) -> Option<String> {
    if scope == "/" || scope.is_empty() {
        return Some("/".to_owned());
    }
    let mut out = Vec::new();
    for seg in scope.split('/') {
        match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) => out.push(params.iter().find(|(k, _)| k == name)?.1.as_str()),
            None => out.push(seg),
        }
    }
    Some(out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const POOL: &str = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.App/sessionPools/{name}";
    const EP: &str =
        "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/sessionPools/{poolName}";

    fn rules() -> RouteRules {
        let mut r = RouteRules::default();
        r.declare(Method::GET, "/healthz", Some(Rule::Public));
        r.declare(
            Method::PUT,
            POOL,
            Some(Rule::manage("Microsoft.App/sessionPools/write", POOL)),
        );
        r.declare(
            Method::GET,
            POOL,
            Some(Rule::manage("Microsoft.App/sessionPools/read", POOL)),
        );
        let list = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.App/sessionPools";
        r.declare(
            Method::GET,
            list,
            Some(Rule::manage(
                "Microsoft.App/sessionPools/read",
                "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}",
            )),
        );
        let exec = format!("{EP}/executions");
        r.declare(
            Method::POST,
            &exec,
            Some(Rule::sessions(POOL.replace("{name}", "{poolName}"))),
        );
        r.declare(Method::POST, "/undeclared", None);
        r
    }

    fn protected(c: Classified) -> Requirement {
        match c {
            Classified::Protected(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names_equal_to_keywords_are_names() {
        let r = rules();
        for name in [
            "providers",
            "Providers",
            "subscriptions",
            "resourceGroups",
            "Microsoft.App",
            "sessionPools",
        ] {
            let path = format!(
                "/subscriptions/{name}/resourceGroups/{name}/providers/Microsoft.App/sessionPools/{name}"
            );
            let req = protected(r.classify(&Method::PUT, Some(POOL), &path));
            assert_eq!(req.audience, Audience::Management);
            assert_eq!(req.scope, path, "{name}");
            assert_eq!(
                req.action.as_deref(),
                Some("Microsoft.App/sessionPools/write")
            );
            assert_eq!(req.data_action, None);
        }
    }

    #[test]
    fn scopes_come_from_the_route_parameters() {
        let r = rules();
        let list = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.App/sessionPools";
        let req = protected(r.classify(
            &Method::GET,
            Some(list),
            "/subscriptions/s/resourceGroups/my%2Erg/providers/Microsoft.App/sessionPools",
        ));
        assert_eq!(req.scope, "/subscriptions/s/resourceGroups/my.rg");
        let req = protected(r.classify(
            &Method::POST,
            Some(&format!("{EP}/executions")),
            "/subscriptions/s/resourceGroups/rg/sessionPools/p1/executions",
        ));
        assert_eq!(req.audience, Audience::DynamicSessions);
        assert_eq!(
            req.scope,
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.App/sessionPools/p1"
        );
        assert_eq!(
            req.data_action.as_deref(),
            Some(SESSION_EXECUTE_DATA_ACTION)
        );
    }

    #[test]
    fn anything_unclassifiable_is_refused() {
        let r = rules();
        assert_eq!(
            r.classify(&Method::GET, None, "/nothing"),
            Classified::NoRoute
        );
        assert!(matches!(
            r.classify(&Method::POST, Some("/undeclared"), "/undeclared"),
            Classified::Unclassified(_)
        ));
        assert!(matches!(
            r.classify(&Method::GET, Some("/not/in/the/table"), "/not/in/the/table"),
            Classified::Unclassified(_)
        ));
        // An empty name.
        let path = "/subscriptions/s/resourceGroups//providers/Microsoft.App/sessionPools/p";
        assert!(matches!(
            r.classify(&Method::GET, Some(POOL), path),
            Classified::Unclassified(_)
        ));
        // A name that decodes to two segments stays one segment of the scope.
        let path = "/subscriptions/s/resourceGroups/a%2Fb/providers/Microsoft.App/sessionPools/p";
        assert_eq!(
            protected(r.classify(&Method::GET, Some(POOL), path)).scope,
            "/subscriptions/s/resourceGroups/a%2Fb/providers/Microsoft.App/sessionPools/p"
        );
        assert_eq!(r.undeclared(), vec!["POST /undeclared".to_owned()]);
        let mut bad_scope = RouteRules::default();
        bad_scope.declare(
            Method::GET,
            "/x/{a}",
            Some(Rule::manage("x/read", "/x/{b}")),
        );
        assert_eq!(bad_scope.undeclared(), vec!["GET /x/{a}".to_owned()]);
        assert!(matches!(
            bad_scope.classify(&Method::GET, Some("/x/{a}"), "/x/1"),
            Classified::Unclassified(_)
        ));
    }

    #[test]
    fn head_is_get_and_other_methods_are_not_allowed() {
        let r = rules();
        let path = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.App/sessionPools/p";
        assert_eq!(
            protected(r.classify(&Method::HEAD, Some(POOL), path))
                .action
                .as_deref(),
            Some("Microsoft.App/sessionPools/read")
        );
        assert_eq!(
            r.classify(&Method::POST, Some(POOL), path),
            Classified::MethodNotAllowed { public: false }
        );
        assert_eq!(
            r.classify(&Method::PUT, Some("/healthz"), "/healthz"),
            Classified::MethodNotAllowed { public: true }
        );
        assert_eq!(
            r.classify(&Method::GET, Some("/healthz"), "/healthz"),
            Classified::Public
        );
    }
}
