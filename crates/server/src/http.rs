//! The conventions every route follows (API.md "Conventions"): the error rendering, the JSON body
//! and query extractors, and the middleware that adds request ids, dates, checks `api-version`,
//! turns any non-JSON error into the Azure error body, records metrics and emits request spans.

use crate::AppState;
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::header::{HeaderValue, CONTENT_TYPE, DATE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sandpool_api::ApiError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::time::Instant;

/// An [`ApiError`] as an HTTP answer.
#[derive(Debug)]
pub struct HttpError(pub ApiError);

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<anyhow::Error> for HttpError {
    fn from(e: anyhow::Error) -> Self {
        tracing::error!(error = %format!("{e:#}"), "internal error");
        Self(ApiError::internal())
    }
}

pub type HttpResult<T> = Result<T, HttpError>;

/// Renders an error: status, `x-ms-error-code`, JSON body.
pub fn error_response(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(&e.body()).unwrap_or_default();
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(&e.code) {
        h.insert("x-ms-error-code", v);
    }
    resp
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        error_response(&self.0)
    }
}

/// A JSON answer with a status.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            body,
        )
            .into_response(),
        Err(e) => HttpError::from(anyhow::Error::from(e)).into_response(),
    }
}

/// The answer of a PUT: 201 when it created the resource, 200 when it replaced it.
pub fn put_answer<T: Serialize>(created: bool, value: &T) -> Response {
    json(
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        value,
    )
}

/// A JSON request body parsed with serde; syntax and type errors become 400
/// `InvalidRequestContent` naming the line/column, an oversized body 413 `PayloadTooLarge`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses JSON text into `T` with an `InvalidRequestContent` error on failure.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> HttpResult<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_request_content(
            "The request body is empty; a JSON object is required.",
        )
        .into());
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::invalid_request_content(format!("The request body is not valid: {e}.")).into()
    })
}

/// The raw request body, bounded by the body limit.
pub struct RawBody(pub bytes::Bytes);

/// How much of an oversized body is read (and dropped) before answering 413, so a client that is
/// still sending gets the error body instead of a reset connection.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = HttpError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        use http_body_util::BodyExt;
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map(|l| l.0 as usize)
            .unwrap_or(4 * 1024 * 1024);
        let mut body = req.into_body();
        let mut buf = bytes::BytesMut::new();
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| HttpError(body_read_error(&e)))?;
            if let Ok(data) = frame.into_data() {
                seen += data.len();
                if seen <= limit {
                    buf.extend_from_slice(&data);
                } else if seen > DRAIN_LIMIT {
                    break;
                }
            }
        }
        if seen > limit {
            return Err(ApiError::payload_too_large(limit as u64).into());
        }
        Ok(RawBody(buf.freeze()))
    }
}

/// Why a request body could not be read: 408 `RequestTimeout` when the client stalled past the
/// body timeout, else 400.
pub fn body_read_error(e: &(dyn std::error::Error + 'static)) -> ApiError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<tower_http::timeout::TimeoutError>() {
            return ApiError::new(
                408,
                "RequestTimeout",
                "The request body stalled longer than the server allows between two parts.",
            );
        }
        cause = c.source();
    }
    ApiError::invalid_request_content(format!("The request body could not be read: {e}"))
}

/// The management body limit in effect, so the 413 message can name it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub u64);

/// The query string as a case-insensitive map (`api-version`, `$filter`, …).
#[derive(Debug, Clone, Default)]
pub struct Query(pub HashMap<String, String>);

impl Query {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(&key.to_ascii_lowercase()).map(String::as_str)
    }

    pub fn parse(query: Option<&str>) -> Self {
        let mut map = HashMap::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            map.entry(decode(k).to_ascii_lowercase())
                .or_insert_with(|| decode(v));
        }
        Self(map)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::parse(parts.uri.query()))
    }
}

/// Percent-decoding of a query component (`+` is a space); invalid escapes are kept as written.
pub fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Routes that answer without `api-version`: `/metrics` and every public route (token
/// endpoints and discovery under any tenant prefix, health, OpenAPI), whose clients (MSAL,
/// azure-identity, probes) never send one. One list with the auth layer's, so they cannot drift.
fn exempt_from_api_version(path: &str) -> bool {
    path == "/metrics" || sandpool_auth::is_public_path(path)
}

/// The route template a request matched, for metrics and spans.
#[derive(Debug, Clone)]
pub struct RouteTemplate(pub String);

/// The outermost middleware: request id, date, client request id echo, api-version, error body
/// normalisation, metrics and the request span.
pub async fn conventions(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let request_id = uuid::Uuid::new_v4().to_string();
    let client_request_id = req.headers().get("x-ms-client-request-id").cloned();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let span = tracing::info_span!("request", %method, route = %route, request_id = %request_id);

    req.extensions_mut()
        .insert(BodyLimit(state.body_limit as u64));
    let path = req.uri().path().to_owned();
    let api_version_check = if exempt_from_api_version(&path) {
        Ok(())
    } else {
        let q = Query::parse(req.uri().query());
        sandpool_api::validate::api_version(q.get("api-version"))
    };
    let mut resp = match api_version_check {
        Ok(()) => {
            use tracing::Instrument;
            next.run(req).instrument(span.clone()).await
        }
        Err(e) => error_response(&e),
    };
    resp = ensure_error_body(resp).await;

    let route = resp
        .extensions()
        .get::<RouteTemplate>()
        .map(|r| r.0.clone())
        .unwrap_or(route);
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("x-ms-request-id", v.clone());
        h.insert("x-ms-correlation-request-id", v);
    }
    if let Some(v) = client_request_id {
        h.insert("x-ms-client-request-id", v);
    }
    if !h.contains_key(DATE) {
        if let Ok(v) = HeaderValue::from_str(&http_date()) {
            h.insert(DATE, v);
        }
    }
    let status = resp.status().as_u16();
    let elapsed = start.elapsed();
    state
        .metrics
        .record(method.as_str(), &route, status, elapsed);
    span.in_scope(|| {
        tracing::info!(
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request finished"
        );
    });
    resp
}

/// Any 4xx/5xx that is not already JSON (axum's own rejections, 405s, a 413 from the body limit)
/// becomes the Azure error body with a code derived from the status.
async fn ensure_error_body(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(resp.headers()) {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_owned(),
        Err(_) => String::new(),
    };
    let err = match status {
        StatusCode::NOT_FOUND => ApiError::new(
            404,
            "NotFound",
            or(text, "The requested path does not exist."),
        ),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            405,
            "MethodNotAllowed",
            or(text, "The method is not allowed on this resource."),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            413,
            "PayloadTooLarge",
            or(text, "The request body is too large."),
        ),
        StatusCode::REQUEST_TIMEOUT => ApiError::new(
            408,
            "RequestTimeout",
            or(text, "The request took longer than the server allows."),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::unsupported_media_type(or(text, "Unsupported content type."))
        }
        s if s.is_client_error() => ApiError::new(
            s.as_u16(),
            "InvalidRequestContent",
            or(text, "The request is invalid."),
        ),
        s => ApiError::new(
            s.as_u16(),
            "InternalServerError",
            "The server encountered an internal error.",
        ),
    };
    let mut out = error_response(&err);
    for (k, v) in parts.headers.iter() {
        if k != CONTENT_TYPE && k != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

fn or(text: String, default: &str) -> String {
    if text.is_empty() {
        default.to_owned()
    } else {
        text
    }
}

fn is_json(h: &HeaderMap) -> bool {
    h.get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// RFC 7231 IMF-fixdate, e.g. `Tue, 24 Nov 2026 17:12:03 GMT`.
pub fn http_date() -> String {
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::OffsetDateTime::now_utc()
        .format(&fmt)
        .unwrap_or_default()
}

/// Rewrites keyword path segments to canonical casing before the router sees the request.
pub fn normalize_request<B>(mut req: axum::http::Request<B>) -> axum::http::Request<B> {
    let uri = req.uri();
    let normalized = crate::paths::normalize(uri.path());
    if normalized != uri.path() {
        let pq = match uri.query() {
            Some(q) => format!("{normalized}?{q}"),
            None => normalized.into_owned(),
        };
        let mut parts = uri.clone().into_parts();
        if let Ok(p) = pq.parse() {
            parts.path_and_query = Some(p);
            if let Ok(u) = axum::http::Uri::from_parts(parts) {
                *req.uri_mut() = u;
            }
        }
    }
    req
}

/// The 500 answer of the catch-panic layer: the error body, never the panic message.
pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    error_response(&ApiError::internal())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = Query::parse(Some(
            "API-Version=2024-01-01&%24filter=principalId%20eq%20%27x%27&a=%zz&b=1+2",
        ));
        assert_eq!(q.get("api-version"), Some("2024-01-01"));
        assert_eq!(q.get("$filter"), Some("principalId eq 'x'"));
        assert_eq!(q.get("a"), Some("%zz"));
        assert_eq!(q.get("b"), Some("1 2"));
        assert_eq!(decode("%4"), "%4");
        assert_eq!(decode("%"), "%");
    }
}
