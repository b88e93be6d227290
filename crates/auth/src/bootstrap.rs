//! The local admin: a principal that is Owner at `/`, created on the server's first start,
//! whose client credential is written to `<data-dir>/admin.json` (mode 0600) so the CLI on
//! the same host can get tokens with no configuration.
//!
//! The CLI gets tokens through the server's token endpoint with these client credentials
//! (see [`fetch_token`]) rather than by reading the signing keys: the keys never leave the
//! server, and the issuer is whatever the server says it is.

use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::keys::write_private_file;
use crate::secret::{generate_client_secret, Secret};
use crate::token::AccessToken;
use crate::AuthError;

/// File name of the admin credential inside the data directory.
pub const ADMIN_FILE: &str = "admin.json";

/// The admin credential as stored in `admin.json`. `Debug` redacts the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalCredential {
    pub tenant_id: String,
    pub principal_id: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// The server's public URL at its last start; where [`fetch_token`] goes by default.
    #[serde(default)]
    pub endpoint: Option<String>,
}

/// Reads `<data_dir>/admin.json`.
pub fn load_local_admin(data_dir: &Path) -> Result<LocalCredential, AuthError> {
    let path = data_dir.join(ADMIN_FILE);
    let bytes = std::fs::read(&path).map_err(|e| AuthError::io(&path, e))?;
    let cred: LocalCredential =
        serde_json::from_slice(&bytes).map_err(|e| AuthError::BadCredentialFile {
            path: path.clone(),
            // serde's message names the field, never the value of the secret.
            reason: e.to_string(),
        })?;
    for (field, value) in [
        ("tenantId", &cred.tenant_id),
        ("principalId", &cred.principal_id),
        ("clientId", &cred.client_id),
        ("clientSecret", &cred.client_secret.expose().to_string()),
    ] {
        if value.trim().is_empty() {
            return Err(AuthError::BadCredentialFile {
                path,
                reason: format!("{field} is empty"),
            });
        }
    }
    Ok(cred)
}

/// Loads the admin credential, creating it on first start; records `endpoint` in it.
pub(crate) fn load_or_create_admin(
    data_dir: &Path,
    endpoint: &str,
) -> Result<LocalCredential, AuthError> {
    let path = data_dir.join(ADMIN_FILE);
    let mut cred = if path.exists() {
        load_local_admin(data_dir)?
    } else {
        // Only the file is private: the data directory is shared with the sandbox runtime.
        std::fs::create_dir_all(data_dir).map_err(|e| AuthError::io(data_dir, e))?;
        let (secret, _) = generate_client_secret()?;
        let cred = LocalCredential {
            tenant_id: uuid::Uuid::new_v4().to_string(),
            principal_id: uuid::Uuid::new_v4().to_string(),
            client_id: uuid::Uuid::new_v4().to_string(),
            client_secret: secret,
            endpoint: None,
        };
        tracing::info!(principal_id = %cred.principal_id, path = %path.display(), "created the local admin credential");
        cred
    };
    if cred.endpoint.as_deref() != Some(endpoint) {
        cred.endpoint = Some(endpoint.to_string());
        let json = serde_json::to_vec_pretty(&cred)
            .map_err(|e| AuthError::Config(format!("serialising the admin credential: {e}")))?;
        write_private_file(&path, &json)?;
    }
    Ok(cred)
}

/// Gets a token for `resource` (`https://management.azure.com/`, `https://dynamicsessions.io`,
/// or a `…/.default` scope) from the server's token endpoint with `cred`'s client
/// credentials. `endpoint` overrides the URL recorded in the credential.
pub async fn fetch_token(
    cred: &LocalCredential,
    endpoint: Option<&str>,
    resource: &str,
) -> Result<AccessToken, AuthError> {
    fetch_token_with(&reqwest::Client::new(), cred, endpoint, resource).await
}

/// [`fetch_token`] over a given HTTP client (one that trusts the server's certificate).
pub async fn fetch_token_with(
    http: &reqwest::Client,
    cred: &LocalCredential,
    endpoint: Option<&str>,
    resource: &str,
) -> Result<AccessToken, AuthError> {
    let base = endpoint
        .or(cred.endpoint.as_deref())
        .ok_or_else(|| AuthError::TokenRequest("no server endpoint known; pass one".into()))?
        .trim_end_matches('/');
    let url = format!("{base}/oauth2/token");
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", cred.client_id.as_str()),
        ("client_secret", cred.client_secret.expose()),
        ("resource", resource),
    ];
    let response = http
        .post(&url)
        .form(&form)
        .send()
        .await
        // reqwest errors name the URL, never the form body.
        .map_err(|e| AuthError::TokenRequest(format!("{url}: {}", error_chain(&e))))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| AuthError::TokenRequest(format!("{url}: reading the answer: {e}")))?;
    if !status.is_success() {
        let detail = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.get("error_description")
                    .and_then(|d| d.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(300).collect());
        return Err(AuthError::TokenRequest(format!(
            "{url}: {status}: {detail}"
        )));
    }
    serde_json::from_slice(&body)
        .map_err(|e| AuthError::TokenRequest(format!("{url}: unexpected answer: {e}")))
}

/// An error and its causes: reqwest's own message is only "error sending request".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let next = c.to_string();
        if !text.contains(&next) {
            text = format!("{text}: {next}");
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_admin(dir.path(), "http://127.0.0.1:1").unwrap();
        let path = dir.path().join(ADMIN_FILE);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = load_or_create_admin(dir.path(), "http://127.0.0.1:2").unwrap();
        assert_eq!(again.client_secret, first.client_secret);
        assert_eq!(again.principal_id, first.principal_id);
        let loaded = load_local_admin(dir.path()).unwrap();
        assert_eq!(loaded.endpoint.as_deref(), Some("http://127.0.0.1:2"));
        assert!(!format!("{loaded:?}").contains(first.client_secret.expose()));
    }

    #[test]
    fn missing_or_broken_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_local_admin(dir.path()).unwrap_err().to_string();
        assert!(err.contains("admin.json"), "{err}");
        std::fs::write(dir.path().join(ADMIN_FILE), br#"{"tenantId":"t"}"#).unwrap();
        let err = load_local_admin(dir.path()).unwrap_err().to_string();
        assert!(err.contains("invalid admin credential file"), "{err}");
        std::fs::write(
            dir.path().join(ADMIN_FILE),
            br#"{"tenantId":"t","principalId":"p","clientId":"c","clientSecret":" "}"#,
        )
        .unwrap();
        let err = load_local_admin(dir.path()).unwrap_err().to_string();
        assert!(err.contains("clientSecret is empty"), "{err}");
    }
}
