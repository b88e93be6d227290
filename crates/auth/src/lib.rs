//! Identity and access for sandpool.
//!
//! Owns: the token signing keys in `<data-dir>/keys/`, the local admin credential
//! (`<data-dir>/admin.json`), JWT issuance and validation, client secrets (generation and
//! hashing), the built-in roles and role-assignment evaluation, the per-route declarations of
//! what each route needs ([`Rule`], [`RouteRules`]), and the axum layer plus the small router
//! (token endpoint, JWKS, OpenID discovery) that enforce and serve all that.
//!
//! Does not own: storage. The server implements [`AuthStore`] over its tables (identities,
//! role assignments) and wires [`Auth::layer`] and [`Auth::router`] into its app. This
//! crate never depends on the server, the sandbox runtime or SQL.

mod bootstrap;
mod http;
mod keys;
mod permission;
mod roles;
mod route_rules;
mod secret;
mod store;
mod token;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, Header, Validation};

pub use bootstrap::{fetch_token, fetch_token_with, load_local_admin, LocalCredential, ADMIN_FILE};
pub use http::{AuthLayer, AuthService, OAuthError, Principal, PrincipalKind};
pub use keys::{KeyStore, SigningKey, ALGORITHM};
pub use permission::{
    is_public_path, Audience, Requirement, DYNAMIC_SESSIONS_AUDIENCE, MANAGEMENT_AUDIENCE,
    MANAGEMENT_AUDIENCE_LEGACY,
};
pub use roles::{
    action_matches, built_in_roles, find_role, is_allowed, normalize_scope, role_definitions_list,
    scope_covers, RoleDefinition, AKS_CLUSTER_ADMIN, CONTRIBUTOR, OWNER, READER,
    RUN_COMMAND_ACTION, SESSION_EXECUTE_DATA_ACTION, SESSION_EXECUTOR,
};
pub use route_rules::{fill_scope, route_params, Classified, RouteRules, Rule};
pub use secret::{generate_client_secret, Secret, SecretHash};
pub use store::{AuthStore, ClientCredential, RoleAssignment, StoreError};
pub use token::{AccessToken, Claims, TokenError};

/// Default access token lifetime (Entra ID's is about an hour too).
pub const DEFAULT_TOKEN_LIFETIME_SECS: u64 = 3600;
/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;

/// Errors of setting up or operating the auth engine (not request denials).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("crypto: {0}")]
    Crypto(String),
    #[error("invalid admin credential file {path}: {reason}")]
    BadCredentialFile { path: PathBuf, reason: String },
    #[error("configuration: {0}")]
    Config(String),
    #[error("token request failed: {0}")]
    TokenRequest(String),
}

impl AuthError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        AuthError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// How the engine is set up.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// The server's data directory; keys go to `keys/`, the admin credential to `admin.json`.
    pub data_dir: PathBuf,
    /// The server's public URL (`http://127.0.0.1:8080`); the tokens' issuer.
    pub public_url: String,
    pub token_lifetime_secs: u64,
}

impl AuthConfig {
    pub fn new(data_dir: impl Into<PathBuf>, public_url: impl Into<String>) -> Self {
        AuthConfig {
            data_dir: data_dir.into(),
            public_url: public_url.into(),
            token_lifetime_secs: DEFAULT_TOKEN_LIFETIME_SECS,
        }
    }
}

/// Who a token is minted for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSubject {
    pub principal_id: String,
    pub client_id: String,
}

/// What creating a user-assigned identity yields. The server stores everything but `secret`,
/// which it shows once (in the PUT answer) and never again.
#[derive(Debug, Clone)]
pub struct NewIdentity {
    pub principal_id: String,
    pub client_id: String,
    pub tenant_id: String,
    pub secret: Secret,
    pub secret_hash: SecretHash,
}

/// The auth engine. Cheap to clone (shared state).
pub struct Auth<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for Auth<S> {
    fn clone(&self) -> Self {
        Auth {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<S> {
    store: S,
    keys: RwLock<KeyStore>,
    issuer: String,
    tenant_id: String,
    admin: TokenSubject,
    admin_hash: SecretHash,
    lifetime_secs: u64,
    /// Tokens whose signature and claims already checked out, so a client that sends the same
    /// token on every request pays for the ECDSA verification once. Bounded; expiry is checked
    /// on every hit.
    verified: std::sync::Mutex<HashMap<String, Claims>>,
}

/// Most tokens [`Inner::verified`] holds before it starts over.
const VERIFIED_CACHE_SIZE: usize = 4096;

impl<S> std::fmt::Debug for Auth<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("issuer", &self.inner.issuer)
            .field("tenant_id", &self.inner.tenant_id)
            .field("admin_principal_id", &self.inner.admin.principal_id)
            .finish_non_exhaustive()
    }
}

impl<S: AuthStore> Auth<S> {
    /// Opens the engine: loads or creates the signing keys and the admin credential.
    pub fn open(config: AuthConfig, store: S) -> Result<Self, AuthError> {
        let issuer = config.public_url.trim().trim_end_matches('/').to_string();
        if !(issuer.starts_with("http://") || issuer.starts_with("https://")) {
            return Err(AuthError::Config(format!(
                "public URL must start with http:// or https://, got '{issuer}'"
            )));
        }
        if config.token_lifetime_secs == 0 {
            return Err(AuthError::Config("token lifetime must be positive".into()));
        }
        // Replaced keys verify for as long as any token they signed can live.
        let keys = KeyStore::open(
            &config.data_dir.join("keys"),
            config.token_lifetime_secs + LEEWAY_SECS,
        )?;
        let admin = bootstrap::load_or_create_admin(&config.data_dir, &issuer)?;
        let admin_hash = SecretHash::of(&admin.client_secret)?;
        Ok(Auth {
            inner: Arc::new(Inner {
                store,
                keys: RwLock::new(keys),
                issuer,
                tenant_id: admin.tenant_id.clone(),
                admin: TokenSubject {
                    principal_id: admin.principal_id,
                    client_id: admin.client_id,
                },
                admin_hash,
                lifetime_secs: config.token_lifetime_secs,
                verified: Default::default(),
            }),
        })
    }

    pub fn store(&self) -> &S {
        &self.inner.store
    }

    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    pub fn tenant_id(&self) -> &str {
        &self.inner.tenant_id
    }

    /// The bootstrap admin's principal id (Owner at `/`, not stored in the server's tables).
    pub fn admin_principal_id(&self) -> &str {
        &self.inner.admin.principal_id
    }

    pub fn is_admin(&self, principal_id: &str) -> bool {
        principal_id == self.inner.admin.principal_id
    }

    /// Fresh ids and a client secret for a new user-assigned identity.
    pub fn new_identity(&self) -> Result<NewIdentity, AuthError> {
        let (secret, secret_hash) = generate_client_secret()?;
        Ok(NewIdentity {
            principal_id: uuid::Uuid::new_v4().to_string(),
            client_id: uuid::Uuid::new_v4().to_string(),
            tenant_id: self.inner.tenant_id.clone(),
            secret,
            secret_hash,
        })
    }

    /// Makes a new signing key current. Tokens signed by the old key stay valid until they
    /// expire. Returns the new key id.
    pub fn rotate_keys(&self) -> Result<String, AuthError> {
        self.write_keys().rotate()
    }

    /// Periodic key care: deletes retired keys whose tokens have all expired, and rotates when
    /// the signing key is older than `max_age` (a leaked key then signs for a bounded time).
    /// Returns the new key id when it rotated.
    pub fn maintain_keys(&self, max_age: std::time::Duration) -> Result<Option<String>, AuthError> {
        let max_age_ms = u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX);
        self.write_keys().maintain(max_age_ms)
    }

    /// `{"keys":[…]}` for `/.well-known/jwks.json`.
    pub fn jwks(&self) -> serde_json::Value {
        self.read_keys().jwks()
    }

    /// Mints an access token for `subject` with audience `aud` (an exact claim value, e.g.
    /// from [`Audience::from_resource`]).
    pub fn issue_token(&self, subject: &TokenSubject, aud: &str) -> Result<AccessToken, AuthError> {
        self.issue_token_at(subject, aud, now_unix())
    }

    /// [`Auth::issue_token`] as if the time were `now` (unix seconds). Lets tests and tools make
    /// already-expired tokens without waiting.
    pub fn issue_token_at(
        &self,
        subject: &TokenSubject,
        aud: &str,
        now: u64,
    ) -> Result<AccessToken, AuthError> {
        let exp = now + self.inner.lifetime_secs;
        let claims = Claims {
            aud: aud.to_string(),
            iss: self.inner.issuer.clone(),
            iat: now,
            nbf: now,
            exp,
            sub: subject.principal_id.clone(),
            oid: subject.principal_id.clone(),
            tid: self.inner.tenant_id.clone(),
            appid: subject.client_id.clone(),
            azp: subject.client_id.clone(),
            idtyp: "app".into(),
            ver: "1.0".into(),
            uti: uuid::Uuid::new_v4().simple().to_string(),
        };
        let keys = self.read_keys();
        let key = keys.current();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key.kid().to_string());
        let jwt = jsonwebtoken::encode(&header, &claims, key.encoding())
            .map_err(|e| AuthError::Crypto(format!("signing a token: {e}")))?;
        Ok(AccessToken {
            access_token: Secret::new(jwt),
            token_type: "Bearer".into(),
            expires_in: self.inner.lifetime_secs,
            ext_expires_in: self.inner.lifetime_secs,
            expires_on: exp,
            not_before: now,
            resource: aud.to_string(),
        })
    }

    /// Checks a token's signature (any key that still verifies), expiry, issuer and that its
    /// audience is one this server issues. Does not check the principal or roles.
    pub fn validate(&self, token: &str) -> Result<Claims, TokenError> {
        let now = now_unix();
        let mut cache = self.verified();
        if let Some(claims) = cache.get(token) {
            // Signature, issuer and audience cannot change; time can. Same rules (and leeway)
            // as the full check below.
            if now <= claims.exp.saturating_add(LEEWAY_SECS) {
                return Ok(claims.clone());
            }
            cache.remove(token);
            return Err(TokenError::Expired);
        }
        drop(cache);
        let claims = self.verify(token)?;
        let mut cache = self.verified();
        if cache.len() >= VERIFIED_CACHE_SIZE {
            cache.retain(|_, c| now <= c.exp.saturating_add(LEEWAY_SECS));
            if cache.len() >= VERIFIED_CACHE_SIZE {
                cache.clear();
            }
        }
        cache.insert(token.to_owned(), claims.clone());
        Ok(claims)
    }

    fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::ES256 {
            return Err(TokenError::Malformed);
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.inner.issuer]);
        // Audience is checked per route by the caller; here only that it is ours at all.
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let keys = self.read_keys();
        let key = keys.find(&kid).ok_or(TokenError::UnknownKey)?;
        let data = jsonwebtoken::decode::<Claims>(token, key.decoding(), &validation)?;
        if Audience::from_claim(&data.claims.aud).is_none() {
            return Err(TokenError::WrongAudience {
                found: data.claims.aud,
                expected: format!("{MANAGEMENT_AUDIENCE} or {DYNAMIC_SESSIONS_AUDIENCE}"),
            });
        }
        Ok(data.claims)
    }

    /// Whether `principal_id` may do what `requirement` asks (roles and scope only; the
    /// audience is the caller's business). The admin may do anything.
    pub async fn check(
        &self,
        principal_id: &str,
        requirement: &Requirement,
    ) -> Result<bool, StoreError> {
        if self.is_admin(principal_id) {
            return Ok(true);
        }
        let assignments = self.inner.store.role_assignments_for(principal_id).await?;
        Ok(is_allowed(&assignments, requirement))
    }

    /// Whether the principal still exists (the admin always does).
    pub async fn principal_active(&self, principal_id: &str) -> Result<bool, StoreError> {
        if self.is_admin(principal_id) {
            return Ok(true);
        }
        self.inner.store.principal_active(principal_id).await
    }

    /// OAuth2 client credentials: verifies the client's secret and mints a token for the
    /// requested resource or scope.
    pub async fn client_credentials(
        &self,
        client_id: &str,
        client_secret: &str,
        resource_or_scope: &str,
    ) -> Result<AccessToken, OAuthError> {
        let (_, aud) = Audience::from_resource(resource_or_scope).ok_or_else(|| {
            OAuthError::invalid_resource(format!(
                "The resource '{resource_or_scope}' is not served here; ask for \
                 {MANAGEMENT_AUDIENCE} or {DYNAMIC_SESSIONS_AUDIENCE}."
            ))
        })?;
        let subject = if client_id == self.inner.admin.client_id {
            if !self.inner.admin_hash.verify(client_secret) {
                return Err(OAuthError::invalid_client());
            }
            self.inner.admin.clone()
        } else {
            let cred = self
                .inner
                .store
                .client_credential(client_id)
                .await
                .map_err(OAuthError::server_error)?
                .ok_or_else(OAuthError::invalid_client)?;
            if !cred.secret_hash.verify(client_secret) {
                return Err(OAuthError::invalid_client());
            }
            let active = self
                .inner
                .store
                .principal_active(&cred.principal_id)
                .await
                .map_err(OAuthError::server_error)?;
            if !active {
                return Err(OAuthError::invalid_client());
            }
            TokenSubject {
                principal_id: cred.principal_id,
                client_id: client_id.to_string(),
            }
        };
        let token = self
            .issue_token(&subject, aud)
            .map_err(|e| OAuthError::server_error(e.into()))?;
        tracing::info!(client_id = %client_id, principal_id = %subject.principal_id, aud = %aud, "issued access token");
        Ok(token)
    }

    /// The enforcement layer over `rules` (the declaration of every served route, including
    /// [`Auth::public_routes`]); put it on the whole app with `Router::layer`.
    pub fn layer(&self, rules: RouteRules) -> AuthLayer<S> {
        AuthLayer::new(self.clone(), rules)
    }

    /// (method, path) of every route [`Auth::router`] serves: all public.
    pub fn public_routes(&self) -> Vec<(axum::http::Method, String)> {
        http::public_routes(self.tenant_id())
    }

    /// Token endpoints, JWKS and OpenID discovery; merge into the app.
    pub fn router(&self) -> axum::Router {
        http::router(self.clone())
    }

    fn read_keys(&self) -> std::sync::RwLockReadGuard<'_, KeyStore> {
        // A panic while holding the lock cannot leave the key list half-updated (rotate
        // pushes only after the file is written), so a poisoned lock is still usable.
        self.inner.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    fn verified(&self) -> std::sync::MutexGuard<'_, HashMap<String, Claims>> {
        // Entries are inserted whole; a poisoned lock still holds only checked tokens.
        self.inner
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn write_keys(&self) -> std::sync::RwLockWriteGuard<'_, KeyStore> {
        self.inner.keys.write().unwrap_or_else(|p| p.into_inner())
    }
}

pub(crate) fn now_unix() -> u64 {
    now_unix_ms() / 1000
}

pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
