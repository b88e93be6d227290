//! The route table: every route is registered together with its documentation and its
//! authorization rule, so neither the OpenAPI document (`/openapi.json`, built with utoipa's
//! builders) nor the enforcement layer (crates/auth, which reads the rule of the route that
//! matched) can drift from what is served. A route registered without a rule is refused.

use crate::AppState;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{on, MethodFilter};
use axum::Router;
use sandpool_auth::{RouteRules, Rule};
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::{
    ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Required, ResponseBuilder,
};

/// One documented operation.
#[derive(Debug, Clone)]
pub struct RouteDoc {
    pub method: Method,
    pub path: String,
    pub summary: String,
    pub statuses: Vec<u16>,
    pub has_body: bool,
    /// What a caller needs; `None`: declared nothing (the layer refuses it).
    pub rule: Option<Rule>,
    /// Served by this router (`false`: documented only, served by another router).
    pub served: bool,
}

/// Routes plus their documentation and rules.
pub struct Routes {
    pub router: Router<AppState>,
    pub docs: Vec<RouteDoc>,
    /// The rule of the next [`Routes::add`] ([`Routes::rule`]).
    next_rule: Option<Rule>,
    /// The rule of every [`Routes::add`] inside [`Routes::with_rule`] that names none itself.
    group_rule: Option<Rule>,
}

impl Default for Routes {
    fn default() -> Self {
        Self {
            router: Router::new(),
            docs: Vec::new(),
            next_rule: None,
            group_rule: None,
        }
    }
}

fn filter(m: &Method) -> MethodFilter {
    match *m {
        Method::GET => MethodFilter::GET,
        Method::PUT => MethodFilter::PUT,
        Method::POST => MethodFilter::POST,
        Method::PATCH => MethodFilter::PATCH,
        Method::DELETE => MethodFilter::DELETE,
        Method::HEAD => MethodFilter::HEAD,
        _ => MethodFilter::OPTIONS,
    }
}

impl Routes {
    /// The rule of the route the next [`Routes::add`] registers: `r.rule(…).add(…)`.
    pub fn rule(mut self, rule: Rule) -> Self {
        self.next_rule = Some(rule);
        self
    }

    /// Registers the routes `add` adds with `rule` (unless one names its own): for a module
    /// whose every route needs the same, such as the session data plane.
    pub fn with_rule(mut self, rule: Rule, add: impl FnOnce(Routes) -> Routes) -> Self {
        let outer = self.group_rule.replace(rule);
        let mut r = add(self);
        r.group_rule = outer;
        r
    }

    /// The declaration of every served route, for the enforcement layer.
    pub fn rules(&self) -> RouteRules {
        let mut rules = RouteRules::default();
        for d in self.docs.iter().filter(|d| d.served) {
            rules.declare(d.method.clone(), &d.path, d.rule.clone());
        }
        rules
    }

    /// Registers `handler` for `method path` with the pending rule and documents it.
    pub fn add<H, T>(
        mut self,
        method: Method,
        path: &str,
        summary: String,
        statuses: &[u16],
        has_body: bool,
        handler: H,
    ) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.router = self.router.route(path, on(filter(&method), handler));
        let rule = self.next_rule.take().or_else(|| self.group_rule.clone());
        self.docs.push(RouteDoc {
            method,
            path: path.to_owned(),
            summary,
            statuses: statuses.to_vec(),
            has_body,
            rule,
            served: true,
        });
        self
    }

    /// Documents a route another router serves (the token endpoints of crates/auth, which
    /// declares them itself).
    pub fn doc(
        mut self,
        method: Method,
        path: &str,
        summary: &str,
        statuses: &[u16],
        has_body: bool,
    ) -> Self {
        self.docs.push(RouteDoc {
            method,
            path: path.to_owned(),
            summary: summary.to_owned(),
            statuses: statuses.to_vec(),
            has_body,
            rule: None,
            served: false,
        });
        self
    }

    /// The OpenAPI 3 document of every registered route.
    pub fn openapi(&self) -> OpenApi {
        let mut paths = PathsBuilder::new();
        for d in &self.docs {
            let mut op = OperationBuilder::new()
                .summary(Some(d.summary.clone()))
                .operation_id(Some(operation_id(d)));
            for name in params(&d.path) {
                op = op.parameter(
                    ParameterBuilder::new()
                        .name(name)
                        .parameter_in(ParameterIn::Path)
                        .required(Required::True),
                );
            }
            op = op.parameter(
                ParameterBuilder::new()
                    .name("api-version")
                    .parameter_in(ParameterIn::Query)
                    .required(
                        if d.path.starts_with("/subscriptions") || d.path.starts_with('{') {
                            Required::True
                        } else {
                            Required::False
                        },
                    )
                    .description(Some("YYYY-MM-DD or YYYY-MM-DD-preview")),
            );
            if d.has_body {
                op = op.request_body(Some(
                    RequestBodyBuilder::new()
                        .content("application/json", ContentBuilder::new().build())
                        .required(Some(Required::True))
                        .build(),
                ));
            }
            for s in &d.statuses {
                op = op.response(
                    s.to_string(),
                    ResponseBuilder::new().description(describe(*s)).build(),
                );
            }
            let m = match d.method {
                Method::PUT => HttpMethod::Put,
                Method::POST => HttpMethod::Post,
                Method::PATCH => HttpMethod::Patch,
                Method::DELETE => HttpMethod::Delete,
                _ => HttpMethod::Get,
            };
            paths = paths.path(d.path.clone(), PathItem::new(m, op.build()));
        }
        OpenApiBuilder::new()
            .info(
                InfoBuilder::new()
                    .title("sandpool")
                    .version(env!("CARGO_PKG_VERSION"))
                    .build(),
            )
            .paths(paths.build())
            .build()
    }
}

fn params(path: &str) -> Vec<String> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(str::to_owned)
        .collect()
}

fn operation_id(d: &RouteDoc) -> String {
    let mut id = d.method.as_str().to_lowercase();
    for seg in d
        .path
        .split('/')
        .filter(|s| !s.is_empty() && !s.starts_with('{'))
    {
        id.push('_');
        id.push_str(&seg.replace('.', ""));
    }
    id
}

fn describe(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted; poll the absolute URL in Location",
        204 => "No content",
        400 => "Invalid request (Azure error body)",
        404 => "Not found (Azure error body)",
        409 => "Conflict (Azure error body)",
        503 => "Unavailable (Azure error body)",
        _ => "See the Azure error body",
    }
}
