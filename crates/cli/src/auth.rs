//! Where the CLI's bearer token comes from: `--access-token`, else the local server's admin
//! credential in the data directory (so `sandpool` on the server's host needs no login).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use sandpool_auth::LocalCredential;
use sandpool_client::{ClientError, StaticToken, TokenSource};

/// Tokens fetched from the server's token endpoint with the local admin's client credentials,
/// cached per audience until shortly before they expire.
struct LocalAdmin {
    cred: LocalCredential,
    endpoint: String,
    cache: Mutex<HashMap<String, (String, u64)>>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TokenSource for LocalAdmin {
    fn token<'a>(&'a self, audience: &'a str) -> sandpool_client::TokenFuture<'a> {
        Box::pin(async move {
            if let Ok(cache) = self.cache.lock() {
                if let Some((token, expires_on)) = cache.get(audience) {
                    if *expires_on > now() + 60 {
                        return Ok(token.clone());
                    }
                }
            }
            let t = sandpool_auth::fetch_token(&self.cred, Some(&self.endpoint), audience)
                .await
                .map_err(|e| ClientError::Token(e.to_string()))?;
            let token = t.access_token.expose().to_string();
            if let Ok(mut cache) = self.cache.lock() {
                cache.insert(audience.to_string(), (token.clone(), t.expires_on));
            }
            Ok(token)
        })
    }
}

/// The token source for this invocation, if any.
pub fn token_source(
    access_token: Option<&str>,
    data_dir: &Path,
    endpoint: &str,
) -> Option<Arc<dyn TokenSource>> {
    if let Some(t) = access_token.filter(|t| !t.trim().is_empty()) {
        return Some(Arc::new(StaticToken::new(t.trim())));
    }
    let file = data_dir.join(sandpool_auth::ADMIN_FILE);
    if !file.exists() {
        return None;
    }
    match sandpool_auth::load_local_admin(data_dir) {
        Ok(cred) => Some(Arc::new(LocalAdmin {
            cred,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            cache: Mutex::new(HashMap::new()),
        })),
        Err(e) => {
            eprintln!("WARNING: not using the local admin credential: {e}");
            None
        }
    }
}
