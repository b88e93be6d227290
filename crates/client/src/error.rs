//! What can go wrong talking to the service.

use sandpool_api::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error body (or a long-running operation ended in failure).
    #[error("{}: {}", .0.code, .0.message)]
    Api(ApiError),
    /// The request did not get an answer.
    #[error("cannot reach {url}: {source}")]
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
