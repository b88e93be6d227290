//! Where bearer tokens come from. The client only asks a [`TokenSource`]; how a token is
//! obtained (a fixed string, the local admin credential, a token endpoint) is the source's.

use std::future::Future;
use std::pin::Pin;

use crate::ClientError;

/// Audience of tokens for the management API.
pub const MANAGEMENT_AUDIENCE: &str = "https://management.azure.com/";
/// Audience of tokens for the session data plane.
pub const SESSIONS_AUDIENCE: &str = "https://dynamicsessions.io";

/// A future that yields a bearer token.
pub type TokenFuture<'a> = Pin<Box<dyn Future<Output = Result<String, ClientError>> + Send + 'a>>;

/// Supplies bearer tokens; called before every request, so an implementation caches.
pub trait TokenSource: Send + Sync {
    /// A token for `audience` ([`MANAGEMENT_AUDIENCE`] or [`SESSIONS_AUDIENCE`]).
    fn token<'a>(&'a self, audience: &'a str) -> TokenFuture<'a>;
}

/// One fixed token for every audience (e.g. from `SANDPOOL_ACCESS_TOKEN`).
pub struct StaticToken(String);

impl StaticToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }
}

impl std::fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticToken(<redacted>)")
    }
}

impl TokenSource for StaticToken {
    fn token<'a>(&'a self, _audience: &'a str) -> TokenFuture<'a> {
        Box::pin(async move { Ok(self.0.clone()) })
    }
}
