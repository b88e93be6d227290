//! What can go wrong talking to the service.

use sandpool_api::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error body (or a long-running operation ended in failure).
    #[error("{}: {}", .0.code, .0.message)]
    Api(ApiError),
    /// The request did not get an answer. The message names the innermost cause (a refused
    /// connection, an untrusted certificate) since reqwest's own says only "error sending request".
    #[error("cannot reach {url}: {}", transport_cause(.source))]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server answered something this client does not understand.
    #[error("unexpected answer from {url} (HTTP {status}): {message}")]
    InvalidResponse {
        url: String,
        status: u16,
        message: String,
    },
    /// The caller gave something that cannot become a request.
    #[error("{0}")]
    InvalidArgument(String),
    /// The token source failed.
    #[error("cannot obtain an access token: {0}")]
    Token(String),
    /// A long-running operation did not finish within the polling timeout.
    #[error("gave up waiting for the operation at {url}")]
    Timeout { url: String },
}

/// `source` and its causes, outermost first, each once, with a hint when the cause is a
/// certificate the client does not trust.
fn transport_cause(source: &reqwest::Error) -> String {
    let mut parts = vec![source.to_string()];
    let mut cause = std::error::Error::source(source);
    while let Some(c) = cause {
        let text = c.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cause = c.source();
    }
    with_tls_hint(parts.join(": "))
}

/// `message`, with how to trust the server's certificate when it says that was the problem.
pub fn with_tls_hint(mut message: String) -> String {
    if message.contains("certificate") && !message.contains("--ca-cert") {
        message.push_str(
            " (trust the server's certificate with --ca-cert FILE or SANDPOOL_CA_CERT; \
             `serve --tls-self-signed` writes it to <data-dir>/tls/cert.pem)",
        );
    }
    message
}

impl ClientError {
    /// The server's error, when there is one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Self::Api(e) => Some(e),
            _ => None,
        }
    }

    /// The server's `error.code`, e.g. `ResourceNotFound`.
    pub fn code(&self) -> Option<&str> {
        self.api().map(|e| e.code.as_str())
    }

    /// The HTTP status the server answered, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api(e) => Some(e.status),
            Self::InvalidResponse { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when the server said the resource does not exist.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }
}
