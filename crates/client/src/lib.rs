//! A typed async HTTP client of the sandpool API, used by the `sandpool` CLI and the benchmarks.
//!
//! It owns the HTTP conversation (URLs, api-version, request ids, bearer tokens, long-running
//! operation polling, error decoding); wire types and validation belong to `sandpool-api`.
//! One module per API area, so later areas (session executions, files, run command) slot in
//! beside the management ones.

mod arm;
mod clusters;
mod deployments;
mod error;
mod groups;
mod identities;
pub mod ids;
mod pools;
mod roles;
pub mod runcommand;
mod sessions;
mod token;

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, Url};
use serde_json::Value;

pub use arm::RawResponse;
pub use error::{with_tls_hint, ClientError};
pub use pools::PoolSpec;
pub use sandpool_api::{ApiError, Resource, API_VERSION};
pub use sessions::{
    Execution, ExecutionError, ExecutionResult, FileEntry, OutputStream, SessionEntry, SessionRef,
};
pub use token::{StaticToken, TokenFuture, TokenSource, MANAGEMENT_AUDIENCE, SESSIONS_AUDIENCE};

/// The subscription id used when none is given: the server accepts any UUID.
pub const DEFAULT_SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000000";

/// Header a client sets so its request can be found in the server's logs.
pub const CLIENT_REQUEST_ID: &str = "x-ms-client-request-id";

/// An HTTP client trusting the system's certificate store, the bundled web roots and `extra`.
pub fn http_client(extra: &[reqwest::Certificate]) -> Result<reqwest::Client, ClientError> {
    let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
    for cert in extra {
        builder = builder.add_root_certificate(cert.clone());
    }
    builder
        .build()
        .map_err(|e| ClientError::InvalidArgument(format!("cannot build an HTTP client: {e}")))
}

/// The certificates of a PEM bundle; an error when it holds none.
pub fn parse_pem_bundle(pem: &[u8]) -> Result<Vec<reqwest::Certificate>, ClientError> {
    let certs = reqwest::Certificate::from_pem_bundle(pem)
        .map_err(|e| ClientError::InvalidArgument(format!("not a PEM certificate bundle: {e}")))?;
    if certs.is_empty() {
        return Err(ClientError::InvalidArgument(
            "the PEM bundle holds no certificate".into(),
        ));
    }
    Ok(certs)
}

/// A connection to one sandpool endpoint. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoint: Url,
    subscription: String,
    api_version: String,
    token: Option<Arc<dyn TokenSource>>,
    poll_interval: Duration,
    poll_timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint.as_str())
            .field("subscription", &self.subscription)
            .field("api_version", &self.api_version)
            .field("token", &self.token.as_ref().map(|_| "<token source>"))
            .finish()
    }
}

impl Client {
    /// A client of the service at `endpoint` (e.g. `http://127.0.0.1:8080`).
    pub fn new(endpoint: &str) -> Result<Self, ClientError> {
        let mut url = Url::parse(endpoint.trim()).map_err(|e| {
            ClientError::InvalidArgument(format!("endpoint '{endpoint}' is not a URL: {e}"))
        })?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(ClientError::InvalidArgument(format!(
                "endpoint '{endpoint}' must start with http:// or https://"
            )));
        }
        if url.cannot_be_a_base() || url.host().is_none() {
            return Err(ClientError::InvalidArgument(format!(
                "endpoint '{endpoint}' has no host"
            )));
        }
        url.set_query(None);
        url.set_fragment(None);
        let http = http_client(&[])?;
        Ok(Self {
            http,
            endpoint: url,
            subscription: DEFAULT_SUBSCRIPTION.to_string(),
            api_version: API_VERSION.to_string(),
            token: None,
            poll_interval: Duration::from_secs(1),
            poll_timeout: Duration::from_secs(15 * 60),
        })
    }

    /// Also trusts the certificates of a PEM bundle (e.g. a server's self-signed certificate),
    /// beside the system's store and the bundled web roots.
    pub fn with_ca_certificates(mut self, pem: &[u8]) -> Result<Self, ClientError> {
        self.http = http_client(&parse_pem_bundle(pem)?)?;
        Ok(self)
    }

    /// The HTTP client this client sends with (same trust), for requests outside the API such
    /// as the token endpoint.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends `Authorization: Bearer …` from `source` on every request.
    pub fn with_token(mut self, source: Arc<dyn TokenSource>) -> Self {
        self.token = Some(source);
        self
    }

    pub fn with_subscription(mut self, subscription: impl Into<String>) -> Self {
        self.subscription = subscription.into();
        self
    }

    pub fn with_api_version(mut self, api_version: impl Into<String>) -> Self {
        self.api_version = api_version.into();
        self
    }

    /// Longest wait between two polls of a long-running operation (the server's `Retry-After`
    /// is honoured below it) and how long to poll before giving up.
    pub fn with_polling(mut self, interval: Duration, timeout: Duration) -> Self {
        self.poll_interval = interval;
        self.poll_timeout = timeout;
        self
    }

    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    pub fn subscription(&self) -> &str {
        &self.subscription
    }

    pub fn api_version(&self) -> &str {
        &self.api_version
    }

    /// The URL of a resource id (or any path) on this endpoint, with `api-version` and `query`.
    pub fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<Url, ClientError> {
        let mut url = self.endpoint.clone();
        {
            let mut segs = url.path_segments_mut().map_err(|_| {
                ClientError::InvalidArgument("endpoint cannot be a base URL".into())
            })?;
            segs.pop_if_empty();
            for seg in path.split('/').filter(|s| !s.is_empty()) {
                if seg == "." || seg == ".." {
                    return Err(ClientError::InvalidArgument(format!(
                        "'{path}' is not a resource id"
                    )));
                }
                segs.push(seg);
            }
        }
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("api-version", &self.api_version);
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        Ok(url)
    }

    /// Sends one request with the standard headers; answers whatever the server answered.
    pub(crate) async fn send(
        &self,
        method: Method,
        url: Url,
        audience: &str,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let request_id = uuid::Uuid::new_v4().to_string();
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            headers.insert(CLIENT_REQUEST_ID, v);
        }
        if let Some(source) = &self.token {
            let token = source.token(audience).await?;
            let mut v = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                ClientError::Token("the token holds characters not allowed in a header".into())
            })?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        let mut req = self.http.request(method, url.clone()).headers(headers);
        if let Some(body) = body {
            req = req.header(CONTENT_TYPE, "application/json").body(
                serde_json::to_vec(body)
                    .map_err(|e| ClientError::InvalidArgument(e.to_string()))?,
            );
        }
        req.send().await.map_err(|source| ClientError::Transport {
            url: url.to_string(),
            source,
        })
    }
}
