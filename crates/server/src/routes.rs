//! The route table: every route is registered together with its documentation and its
//! authorization rule, so neither the OpenAPI document (`/openapi.json`, built with utoipa's
//! builders) nor the enforcement layer (crates/auth, which reads the rule of the route that
//! matched) can drift from what is served. A route registered without a rule is refused.

use crate::AppState;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{on, MethodFilter};
use axum::Router;
use sandpool_api::{wire::API_VERSION_PATTERN, ErrorBody};
use sandpool_auth::{RouteRules, Rule};
use std::collections::{BTreeMap, BTreeSet};
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, Parameter, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, RefOr,
    Required, ResponseBuilder, Schema,
};
use utoipa::{IntoParams, ToSchema};

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

/// A body in the document: its media type and schema.
#[derive(Clone)]
struct Body {
    content_type: &'static str,
    schema: RefOr<Schema>,
}

/// What the chained methods ([`Routes::request`], [`Routes::response`], [`Routes::params`])
/// add to one route's documentation.
#[derive(Clone, Default)]
struct Schemas {
    request: Option<Body>,
    responses: BTreeMap<u16, Body>,
    params: Vec<Parameter>,
}

/// Routes plus their documentation and rules.
pub struct Routes {
    pub router: Router<AppState>,
    pub docs: Vec<RouteDoc>,
    /// Bodies and parameters of `docs[i]`, kept apart so that registering a route stays one call.
    schemas: BTreeMap<usize, Schemas>,
    /// Named schemas, referenced from the operations.
    components: BTreeMap<String, RefOr<Schema>>,
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
            schemas: BTreeMap::new(),
            components: BTreeMap::new(),
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

    /// The schemas of the route added last.
    fn last(&mut self) -> &mut Schemas {
        let i = self
            .docs
            .len()
            .checked_sub(1)
            .expect("schemas are chained after a route is added");
        self.schemas.entry(i).or_default()
    }

    /// `T`'s schema: a reference to a named component, or inline for a generic type (whose
    /// name utoipa cannot tell apart from its other instances). Collects what it references.
    fn schema_of<T: ToSchema>(&mut self) -> RefOr<Schema> {
        if std::any::type_name::<T>().contains('<') {
            let mut refs = Vec::new();
            T::schemas(&mut refs);
            self.components.extend(refs);
            return T::schema();
        }
        named::<T>(&mut self.components);
        RefOr::Ref(utoipa::openapi::Ref::from_schema_name(T::name()))
    }

    /// The last route's JSON request body is a `T`.
    pub fn request<T: ToSchema>(self) -> Self {
        self.request_as::<T>("application/json")
    }

    /// The last route's request body is a `T` in `content_type` (a form, multipart).
    pub fn request_as<T: ToSchema>(mut self, content_type: &'static str) -> Self {
        let schema = self.schema_of::<T>();
        self.last().request = Some(Body {
            content_type,
            schema,
        });
        self
    }

    /// The last route answers `status` with a JSON `T`.
    pub fn response<T: ToSchema>(mut self, status: u16) -> Self {
        let schema = self.schema_of::<T>();
        self.last().responses.insert(
            status,
            Body {
                content_type: "application/json",
                schema,
            },
        );
        self
    }

    /// The last route answers `status` with text or bytes of `content_type`.
    pub fn response_raw(mut self, status: u16, content_type: &'static str) -> Self {
        let schema = ObjectBuilder::new().schema_type(Type::String);
        let schema = if content_type.starts_with("text/") {
            schema
        } else {
            schema.format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
        };
        self.last().responses.insert(
            status,
            Body {
                content_type,
                schema: RefOr::T(Schema::Object(schema.build())),
            },
        );
        self
    }

    /// Applies `f` to the table: for documentation that depends on a value (a resource kind).
    pub fn then(self, f: impl FnOnce(Self) -> Self) -> Self {
        f(self)
    }

    /// The last route takes `P`'s query parameters.
    pub fn params<P: IntoParams>(mut self) -> Self {
        let params = P::into_params(|| Some(ParameterIn::Query));
        self.last().params.extend(params);
        self
    }

    /// The OpenAPI 3.1 document of every registered route.
    pub fn openapi(&self) -> OpenApi {
        let mut components = self.components.clone();
        named::<ErrorBody>(&mut components);
        // Generic instances (`Resource<SessionPoolProperties>`) are inlined and refer to their
        // argument by name, which utoipa does not collect: every argument in use is named here.
        named::<serde_json::Value>(&mut components);
        named::<sandpool_api::ResourceGroupProperties>(&mut components);
        named::<sandpool_api::SessionPoolProperties>(&mut components);
        named::<sandpool_api::IdentityProperties>(&mut components);
        named::<sandpool_api::ManagedClusterProperties>(&mut components);
        named::<sandpool_api::RoleAssignmentProperties>(&mut components);
        let error = || {
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    ErrorBody::name(),
                ))))
                .build()
        };
        let mut paths = PathsBuilder::new();
        let mut ids = BTreeSet::new();
        let empty = Schemas::default();
        for (i, d) in self.docs.iter().enumerate() {
            let extra = self.schemas.get(&i).unwrap_or(&empty);
            for path in document_paths(&d.path) {
                let mut id = operation_id(&d.method, &path);
                while !ids.insert(id.clone()) {
                    id.push('_');
                }
                let mut op = OperationBuilder::new()
                    .summary(Some(d.summary.clone()))
                    .operation_id(Some(id));
                if is_public(&path) {
                    // No Authorization needed: an empty requirement overrides the default.
                    op = op.securities(Some(Vec::<SecurityRequirement>::new()));
                }
                for name in params(&path) {
                    op = op.parameter(path_parameter(&name));
                }
                if let Some(p) = api_version_param(&path) {
                    op = op.parameter(p);
                }
                for p in &extra.params {
                    op = op.parameter(p.clone());
                }
                if d.has_body {
                    let content = match &extra.request {
                        Some(b) => (
                            b.content_type,
                            ContentBuilder::new().schema(Some(b.schema.clone())).build(),
                        ),
                        None => ("application/json", ContentBuilder::new().build()),
                    };
                    op = op.request_body(Some(
                        RequestBodyBuilder::new()
                            .content(content.0, content.1)
                            .required(Some(Required::True))
                            .build(),
                    ));
                }
                let statuses: BTreeSet<u16> = d
                    .statuses
                    .iter()
                    .copied()
                    .chain(extra.responses.keys().copied())
                    .collect();
                for s in statuses {
                    let mut r = ResponseBuilder::new().description(describe(s));
                    if let Some(b) = extra.responses.get(&s) {
                        r = r.content(
                            b.content_type,
                            ContentBuilder::new().schema(Some(b.schema.clone())).build(),
                        );
                    } else if s >= 400 {
                        r = r.content("application/json", error());
                    }
                    op = op.response(s.to_string(), r.build());
                }
                if !extra.responses.keys().any(|s| *s >= 400) {
                    // Every other status (401, 403, 413, 415, 500, …) carries the error body.
                    op = op.response(
                        "default",
                        ResponseBuilder::new()
                            .description(
                                "An error: the Azure error body, `x-ms-error-code` names it",
                            )
                            .content("application/json", error())
                            .build(),
                    );
                }
                let m = match d.method {
                    Method::PUT => HttpMethod::Put,
                    Method::POST => HttpMethod::Post,
                    Method::PATCH => HttpMethod::Patch,
                    Method::DELETE => HttpMethod::Delete,
                    Method::HEAD => HttpMethod::Head,
                    _ => HttpMethod::Get,
                };
                paths = paths.path(path, PathItem::new(m, op.build()));
            }
        }
        let mut schemas = ComponentsBuilder::new().security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        for (name, schema) in components {
            schemas = schemas.schema(name, schema);
        }
        OpenApiBuilder::new()
            .info(
                InfoBuilder::new()
                    .title("sandpool")
                    .version(env!("CARGO_PKG_VERSION"))
                    .description(Some(DESCRIPTION))
                    .build(),
            )
            .paths(paths.build())
            .components(Some(schemas.build()))
            .security(Some([SecurityRequirement::new(
                "bearer",
                Vec::<String>::new(),
            )]))
            .build()
    }
}

/// Puts `T` and what it references into `components` under their names.
fn named<T: ToSchema>(components: &mut BTreeMap<String, RefOr<Schema>>) {
    let mut refs = Vec::new();
    T::schemas(&mut refs);
    components.extend(refs);
    components.insert(T::name().into_owned(), T::schema());
}

const DESCRIPTION: &str = "Sandboxes behind an Azure-shaped API (ARM, Container Apps dynamic \
sessions, AKS Run Command); see API.md. Role assignments and role definitions are served at every \
scope (the root, a subscription, a resource group, a resource; listed here for the first three), \
and `GET {resourceId}` answers any stored resource by its id: OpenAPI cannot express a path \
parameter that holds slashes, so that route is not listed.";

/// Routes documented with a `{scope}` prefix (served by the fallback at any scope) are listed at
/// the root, subscription and resource-group scopes; `{resourceId}` (any depth) is not listed.
fn document_paths(path: &str) -> Vec<String> {
    if let Some(rest) = path.strip_prefix("{scope}") {
        return [
            "",
            "/subscriptions/{subscriptionId}",
            "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}",
        ]
        .iter()
        .map(|scope| format!("{scope}{rest}"))
        .collect();
    }
    if path.starts_with('/') {
        vec![path.to_owned()]
    } else {
        Vec::new()
    }
}

/// The routes that answer without a bearer token and without `api-version`: crates/auth's rule,
/// which the enforcement layer and the conventions middleware apply.
fn is_public(path: &str) -> bool {
    sandpool_auth::is_public_path(path)
}

/// `api-version` is asked of every route but `/metrics` and the public ones; the cloud metadata
/// document takes one (the Azure CLI sends it) without needing it.
fn api_version_param(path: &str) -> Option<Parameter> {
    if path == "/metadata/endpoints" {
        Some(api_version(false))
    } else if path == "/metrics" || is_public(path) {
        None
    } else {
        Some(api_version(true))
    }
}

fn api_version(required: bool) -> Parameter {
    ParameterBuilder::new()
        .name("api-version")
        .parameter_in(ParameterIn::Query)
        .required(if required {
            Required::True
        } else {
            Required::False
        })
        .description(Some(
            "YYYY-MM-DD or YYYY-MM-DD-preview; every value behaves the same",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(API_VERSION_PATTERN)),
        ))
        .example(Some(serde_json::json!(sandpool_api::API_VERSION)))
        .build()
}

/// A path parameter: the subscription is a UUID, the rest are names.
fn path_parameter(name: &str) -> Parameter {
    let schema = ObjectBuilder::new().schema_type(Type::String);
    let (schema, example) = match name {
        "subscriptionId" => (
            schema.format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
            "00000000-0000-0000-0000-000000000000",
        ),
        "resourceGroupName" => (schema.min_length(Some(1)).max_length(Some(90)), "rg1"),
        "roleAssignmentName" => (
            schema.format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
            "11111111-1111-1111-1111-111111111111",
        ),
        "namespace" => (schema.min_length(Some(1)), "Microsoft.App"),
        _ => (schema.min_length(Some(1)), "name1"),
    };
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .schema(Some(schema))
        .example(Some(serde_json::json!(example)))
        .build()
}

fn params(path: &str) -> Vec<String> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(str::to_owned)
        .collect()
}

/// `get_subscriptions_resourceGroups_sessionPools_one`: the method and the literal segments
/// with their provider prefix dropped; `_one` when the path ends with a parameter (an item rather
/// than a list). Duplicates get a `_` appended by the caller.
fn operation_id(method: &Method, path: &str) -> String {
    let mut id = method.as_str().to_lowercase();
    for seg in path
        .split('/')
        .filter(|s| !s.is_empty() && !s.starts_with('{') && *s != "providers")
    {
        id.push('_');
        id.push_str(&seg.replace(['.', '-'], ""));
    }
    if path.ends_with('}') {
        id.push_str("_one");
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
