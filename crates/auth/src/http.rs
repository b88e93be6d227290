//! HTTP side: the enforcement layer, the token endpoint, JWKS and OpenID discovery, and the
//! Azure-shaped error answers.

use std::future::Future;

use crate::Requirement;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, MatchedPath, State};
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, PRAGMA, WWW_AUTHENTICATE};
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tower::{Layer, Service};

use crate::permission::{is_public_path, Audience};
use crate::route_rules::{Classified, RouteRules};
use crate::store::{AuthStore, StoreError};
use crate::token::TokenError;
use crate::{now_unix, Auth};

const X_MS_ERROR_CODE: HeaderName = HeaderName::from_static("x-ms-error-code");

/// Kind of authenticated caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// The bootstrap admin of `admin.json` (Owner at `/`).
    LocalAdmin,
    /// A user-assigned identity's service principal.
    ServicePrincipal,
}

/// The authenticated caller; inserted as a request extension by the layer on success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Principal (object) id: `oid` of the token.
    pub id: String,
    pub kind: PrincipalKind,
    /// `appid` of the token.
    pub client_id: String,
    pub tenant_id: String,
    pub audience: Audience,
}

/// Tower layer enforcing authentication and authorisation on every route. It must be applied
/// with `Router::layer` (so it runs after routing and sees `MatchedPath`); it calls the inner
/// service only for a route whose declaration in `rules` the caller meets.
pub struct AuthLayer<S> {
    auth: Auth<S>,
    rules: Arc<RouteRules>,
}

impl<S> AuthLayer<S> {
    pub(crate) fn new(auth: Auth<S>, rules: RouteRules) -> Self {
        AuthLayer {
            auth,
            rules: Arc::new(rules),
        }
    }
}

impl<S> Clone for AuthLayer<S> {
    fn clone(&self) -> Self {
        AuthLayer {
            auth: self.auth.clone(),
            rules: Arc::clone(&self.rules),
        }
    }
}

impl<S, I> Layer<I> for AuthLayer<S> {
    type Service = AuthService<S, I>;

    fn layer(&self, inner: I) -> Self::Service {
        AuthService {
            auth: self.auth.clone(),
            rules: Arc::clone(&self.rules),
            inner,
        }
    }
}

/// The service [`AuthLayer`] wraps around each route.
pub struct AuthService<S, I> {
    auth: Auth<S>,
    rules: Arc<RouteRules>,
    inner: I,
}

impl<S, I: Clone> Clone for AuthService<S, I> {
    fn clone(&self) -> Self {
        AuthService {
            auth: self.auth.clone(),
            rules: Arc::clone(&self.rules),
            inner: self.inner.clone(),
        }
    }
}

impl<S, I> Service<Request<Body>> for AuthService<S, I>
where
    S: AuthStore,
    I: Service<Request<Body>, Response = Response> + Clone + Send + 'static,
    I::Future: Send + 'static,
{
    type Response = Response;
    type Error = I::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, I::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        // The clone is not necessarily ready; keep the one that was polled.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        let rules = Arc::clone(&self.rules);
        Box::pin(async move {
            match authorize(&auth, &rules, &mut req).await {
                Ok(()) => inner.call(req).await,
                Err(denied) => Ok(denied),
            }
        })
    }
}

/// Decides one request; on success inserts [`Principal`], otherwise returns the answer.
/// Order: classify by the matched route (no lookup), authenticate, then refuse what is no
/// route, not served or not classified, and check the role for the rest.
async fn authorize<S: AuthStore>(
    auth: &Auth<S>,
    rules: &RouteRules,
    req: &mut Request<Body>,
) -> Result<(), Response> {
    let matched = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let class = rules.classify(req.method(), matched, req.uri().path());
    match &class {
        Classified::Public => return Ok(()),
        Classified::MethodNotAllowed { public: true } => {
            return Err(method_not_allowed(req.method()))
        }
        // A token endpoint under a tenant this server is not: an OAuth client sends no token,
        // and the answer tells nothing a public route would not.
        Classified::NoRoute if is_public_path(req.uri().path()) => {
            return Err(no_route(req.uri().path()))
        }
        _ => {}
    }
    let token = bearer_token(req).map_err(|e| unauthenticated(auth, &e, false))?;
    let claims = auth
        .validate(token)
        .map_err(|e| unauthenticated(auth, &e, true))?;
    // validate() accepted the audience, so it maps.
    let audience = Audience::from_claim(&claims.aud).unwrap_or(Audience::Management);
    let active = auth
        .principal_active(&claims.oid)
        .await
        .map_err(store_failure)?;
    if !active {
        return Err(unauthenticated(auth, &TokenError::PrincipalGone, true));
    }
    // `None`: signed in is enough (a management token, no role).
    let requirement = match class {
        Classified::Protected(requirement) => Some(requirement),
        Classified::SignedIn => None,
        Classified::NoRoute => return Err(no_route(req.uri().path())),
        Classified::MethodNotAllowed { .. } => return Err(method_not_allowed(req.method())),
        Classified::Unclassified(reason) => {
            // A route that declares nothing is a defect of the server: refuse, and say so.
            tracing::warn!(principal_id = %claims.oid, method = %req.method(), path = %req.uri().path(), %reason, "request refused: not classified");
            return Err(arm_error(
                StatusCode::FORBIDDEN,
                "RequestNotClassified",
                &format!("The request cannot be authorized: {reason}."),
            ));
        }
        Classified::Public => return Ok(()),
    };
    let needed = requirement
        .as_ref()
        .map_or(Audience::Management, |r| r.audience);
    if audience != needed {
        let e = TokenError::WrongAudience {
            found: claims.aud.clone(),
            expected: needed.canonical().to_string(),
        };
        return Err(unauthenticated(auth, &e, true));
    }
    if let Some(requirement) = &requirement {
        check_role(auth, &claims.oid, requirement).await?;
    }
    let kind = if auth.is_admin(&claims.oid) {
        PrincipalKind::LocalAdmin
    } else {
        PrincipalKind::ServicePrincipal
    };
    req.extensions_mut().insert(Principal {
        id: claims.oid,
        kind,
        client_id: claims.appid,
        tenant_id: claims.tid,
        audience,
    });
    Ok(())
}

/// Refuses with `AuthorizationFailed` unless a role of `oid` meets `requirement`.
async fn check_role<S: AuthStore>(
    auth: &Auth<S>,
    oid: &str,
    requirement: &Requirement,
) -> Result<(), Response> {
    if auth.check(oid, requirement).await.map_err(store_failure)? {
        return Ok(());
    }
    let what = requirement
        .data_action
        .as_deref()
        .or(requirement.action.as_deref())
        .unwrap_or("");
    tracing::info!(principal_id = %oid, action = %what, scope = %requirement.scope, "authorization denied");
    Err(arm_error(
        StatusCode::FORBIDDEN,
        "AuthorizationFailed",
        &format!(
            "The client '{oid}' with object id '{oid}' does not have authorization to perform \
             action '{what}' over scope '{scope}' or the scope is invalid. If access was \
             recently granted, please refresh your credentials.",
            scope = requirement.scope
        ),
    ))
}

fn no_route(path: &str) -> Response {
    arm_error(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("No route matches the path '{path}'."),
    )
}

fn method_not_allowed(method: &Method) -> Response {
    arm_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        &format!("The method '{method}' is not allowed on this resource."),
    )
}

fn bearer_token(req: &Request<Body>) -> Result<&str, TokenError> {
    let value = req
        .headers()
        .get(AUTHORIZATION)
        .ok_or(TokenError::Missing)?;
    let value = value.to_str().map_err(|_| TokenError::NotBearer)?.trim();
    let (scheme, token) = value.split_once(' ').ok_or(TokenError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(TokenError::NotBearer);
    }
    Ok(token.trim())
}

/// The API.md error body with `x-ms-error-code`.
pub(crate) fn arm_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body =
        json!({ "error": { "code": code, "message": message, "target": null, "details": [] } });
    let mut response = (status, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(code) {
        response.headers_mut().insert(X_MS_ERROR_CODE, v);
    }
    response
}

/// 401 with a `WWW-Authenticate: Bearer` challenge (RFC 6750: `error` only when a token was sent).
fn unauthenticated<S>(auth: &Auth<S>, reason: &TokenError, token_sent: bool) -> Response {
    let mut response = arm_error(
        StatusCode::UNAUTHORIZED,
        "InvalidAuthenticationToken",
        &reason.to_string(),
    );
    let mut challenge = format!(
        "Bearer authorization_uri=\"{}/oauth2/token\"",
        auth.inner.issuer
    );
    if token_sent {
        // Messages are ours and ASCII; strip quotes anyway so the header stays well-formed.
        challenge.push_str(&format!(
            ", error=\"invalid_token\", error_description=\"{}\"",
            reason.to_string().replace('"', "'")
        ));
    }
    let value =
        HeaderValue::from_str(&challenge).unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
    response.headers_mut().insert(WWW_AUTHENTICATE, value);
    response
}

fn store_failure(e: StoreError) -> Response {
    // The store's text may name tables or hosts; keep it in the log only.
    tracing::error!(error = %e, "auth store lookup failed");
    arm_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalServerError",
        "The request could not be authorized right now.",
    )
}

/// An OAuth2 token endpoint error (RFC 6749 §5.2), shaped like Entra ID's so MSAL and
/// azure-identity report it properly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
}

impl OAuthError {
    pub(crate) fn invalid_request(description: impl Into<String>) -> Self {
        OAuthError {
            status: StatusCode::BAD_REQUEST,
            error: "invalid_request",
            description: description.into(),
        }
    }

    pub(crate) fn invalid_resource(description: impl Into<String>) -> Self {
        OAuthError {
            status: StatusCode::BAD_REQUEST,
            error: "invalid_resource",
            description: description.into(),
        }
    }

    /// One answer for unknown client and wrong secret, so client ids cannot be probed.
    pub(crate) fn invalid_client() -> Self {
        OAuthError {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client",
            description: "Invalid client credentials: unknown client_id or wrong client_secret."
                .into(),
        }
    }

    pub(crate) fn server_error(e: StoreError) -> Self {
        tracing::error!(error = %e, "token endpoint lookup failed");
        OAuthError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "server_error",
            description: "The token could not be issued right now.".into(),
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        // OAuth clients read a string `error`; API.md's object shape would break them, so
        // the Azure-style code travels in `x-ms-error-code` (and `error_codes`) instead.
        let body = json!({
            "error": self.error,
            "error_description": self.description,
            "error_codes": [],
            "timestamp": now_unix(),
            "trace_id": uuid::Uuid::new_v4().to_string(),
        });
        let mut response = (self.status, Json(body)).into_response();
        response
            .headers_mut()
            .insert(X_MS_ERROR_CODE, HeaderValue::from_static(self.error));
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
        }
        response
    }
}

/// Form fields of `POST /oauth2/token`. `Debug` is not derived: it holds the secret.
#[derive(Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    resource: Option<String>,
    scope: Option<String>,
}

/// One route of [`router`].
enum Endpoint {
    Token,
    Jwks,
    /// A discovery document naming this token endpoint path.
    Discovery(String),
}

impl Endpoint {
    fn method(&self) -> Method {
        match self {
            Endpoint::Token => Method::POST,
            Endpoint::Jwks | Endpoint::Discovery(_) => Method::GET,
        }
    }
}

/// Every route of [`router`]: one list, so the public routes declared to the enforcement layer
/// ([`public_routes`]) are exactly the ones served.
fn endpoints(tenant_id: &str) -> Vec<(String, Endpoint)> {
    let mut out = vec![
        ("/oauth2/token".to_owned(), Endpoint::Token),
        ("/oauth2/v2.0/token".to_owned(), Endpoint::Token),
        ("/.well-known/jwks.json".to_owned(), Endpoint::Jwks),
        (
            "/.well-known/openid-configuration".to_owned(),
            Endpoint::Discovery("/oauth2/token".into()),
        ),
    ];
    // MSAL puts the tenant in the path. Spelled out statically (this tenant, `common`,
    // `organizations`) rather than as `/{tenant}/…`, which would clash with a server's
    // root catch-all route.
    for tenant in [tenant_id, "common", "organizations"] {
        out.push((format!("/{tenant}/oauth2/token"), Endpoint::Token));
        out.push((format!("/{tenant}/oauth2/v2.0/token"), Endpoint::Token));
        out.push((
            format!("/{tenant}/.well-known/openid-configuration"),
            Endpoint::Discovery(format!("/{tenant}/oauth2/token")),
        ));
        out.push((
            format!("/{tenant}/v2.0/.well-known/openid-configuration"),
            Endpoint::Discovery(format!("/{tenant}/oauth2/v2.0/token")),
        ));
    }
    out
}

/// (method, path) of every route [`router`] serves; all are public.
pub(crate) fn public_routes(tenant_id: &str) -> Vec<(Method, String)> {
    endpoints(tenant_id)
        .into_iter()
        .map(|(path, e)| (e.method(), path))
        .collect()
}

pub(crate) fn router<S: AuthStore>(auth: Auth<S>) -> Router {
    let mut router = Router::new();
    for (path, endpoint) in endpoints(auth.tenant_id()) {
        let method_router: MethodRouter<Auth<S>> = match endpoint {
            Endpoint::Token => post(token_endpoint::<S>),
            Endpoint::Jwks => get(jwks::<S>),
            Endpoint::Discovery(token_path) => discovery::<S>(token_path),
        };
        router = router.route(&path, method_router);
    }
    router.with_state(auth)
}

async fn token_endpoint<S: AuthStore>(
    State(auth): State<Auth<S>>,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Response {
    let Form(form) = match form {
        Ok(f) => f,
        Err(e) => {
            return OAuthError::invalid_request(format!(
                "The body must be application/x-www-form-urlencoded: {}",
                e.body_text()
            ))
            .into_response()
        }
    };
    match form.grant_type.as_deref() {
        Some("client_credentials") => {}
        Some(other) => {
            return OAuthError {
                status: StatusCode::BAD_REQUEST,
                error: "unsupported_grant_type",
                description: format!(
                    "Grant type '{other}' is not supported; use client_credentials."
                ),
            }
            .into_response()
        }
        None => return OAuthError::invalid_request("grant_type is required.").into_response(),
    }
    let (Some(client_id), Some(client_secret)) =
        (form.client_id.as_deref(), form.client_secret.as_deref())
    else {
        return OAuthError::invalid_request("client_id and client_secret are required.")
            .into_response();
    };
    // v2 sends space-separated scopes; exactly one resource's `.default` is meaningful.
    let target = match (form.resource.as_deref(), form.scope.as_deref()) {
        (Some(r), _) if !r.trim().is_empty() => r.trim().to_string(),
        (_, Some(s)) => {
            let scopes: Vec<&str> = s
                .split_whitespace()
                .filter(|s| !matches!(*s, "openid" | "profile" | "offline_access"))
                .collect();
            match scopes.as_slice() {
                [one] => one.to_string(),
                _ => {
                    return OAuthError {
                        status: StatusCode::BAD_REQUEST,
                        error: "invalid_scope",
                        description: "Ask for exactly one resource scope, e.g. https://dynamicsessions.io/.default."
                            .into(),
                    }
                    .into_response()
                }
            }
        }
        _ => return OAuthError::invalid_request("resource or scope is required.").into_response(),
    };
    match auth
        .client_credentials(client_id, client_secret, &target)
        .await
    {
        Ok(token) => {
            let mut response = Json(token).into_response();
            response
                .headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
                .headers_mut()
                .insert(PRAGMA, HeaderValue::from_static("no-cache"));
            response
        }
        Err(e) => e.into_response(),
    }
}

async fn jwks<S: AuthStore>(State(auth): State<Auth<S>>) -> Response {
    Json(auth.jwks()).into_response()
}

/// A discovery document whose token endpoint is `token_path`: the one beside the document, as
/// Entra's are (MSAL reads the tenant from that URL's first path segment).
fn discovery<S: AuthStore>(token_path: String) -> MethodRouter<Auth<S>> {
    get(move |State(auth): State<Auth<S>>| {
        let token_path = token_path.clone();
        async move { openid_configuration(&auth, &token_path) }
    })
}

fn openid_configuration<S: AuthStore>(auth: &Auth<S>, token_path: &str) -> Response {
    let iss = auth.issuer();
    let mut response = Json(json!({
        "issuer": iss,
        "token_endpoint": format!("{iss}{token_path}"),
        // Required by the discovery spec and read by MSAL; only client credentials exist
        // here, so nothing answers at this address.
        "authorization_endpoint": format!("{iss}/oauth2/v2.0/authorize"),
        "jwks_uri": format!("{iss}/.well-known/jwks.json"),
        "response_types_supported": ["token"],
        "grant_types_supported": ["client_credentials"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": [crate::ALGORITHM],
        "token_endpoint_auth_methods_supported": ["client_secret_post"],
        "tenant_id": auth.tenant_id(),
    }))
    .into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
