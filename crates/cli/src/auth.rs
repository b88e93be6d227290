//! Where the CLI's bearer token comes from: `--access-token` (`SANDPOOL_ACCESS_TOKEN`) or
//! `SANDPOOL_TOKEN` as-is (for remote servers), else the local server's admin credential in the
//! data directory (so `sandpool` on the server's host needs no login). Also `sandpool token`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use sandpool_auth::LocalCredential;
use sandpool_client::{ClientError, StaticToken, TokenSource};

/// Tokens fetched from the server's token endpoint with the local admin's client credentials,
/// cached per audience until shortly before they expire.
struct LocalAdmin {
    http: reqwest::Client,
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
            let t = sandpool_auth::fetch_token_with(
                &self.http,
                &self.cred,
                Some(&self.endpoint),
                audience,
            )
            .await
            .map_err(|e| {
                let e = sandpool_client::with_tls_hint(e.to_string());
                // Same wording as the client's own connection errors.
                if e.contains("error sending request") {
                    ClientError::Token(format!("cannot reach {}: {e}", self.endpoint))
                } else {
                    ClientError::Token(e)
                }
            })?;
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
    http: &reqwest::Client,
) -> Option<Arc<dyn TokenSource>> {
    if let Some(t) = given_token(access_token) {
        return Some(Arc::new(StaticToken::new(t)));
    }
    let file = data_dir.join(sandpool_auth::ADMIN_FILE);
    if !file.exists() {
        return None;
    }
    match sandpool_auth::load_local_admin(data_dir) {
        Ok(cred) => Some(Arc::new(LocalAdmin {
            http: http.clone(),
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

/// Env var holding a bearer token to use as-is (what `sandpool token --query accessToken -o tsv`
/// printed, typically for a remote server).
pub const TOKEN_ENV: &str = "SANDPOOL_TOKEN";

/// `--access-token`, else `SANDPOOL_TOKEN`; blank values count as unset.
fn given_token(access_token: Option<&str>) -> Option<String> {
    access_token
        .map(str::to_owned)
        .or_else(|| std::env::var(TOKEN_ENV).ok())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// `sandpool token`: `{"accessToken","expiresOn","expires_on","tokenType","tenant",
/// "subscription"}` like `az account get-access-token`, so `--query accessToken -o tsv` works.
pub async fn token_command(
    g: &crate::args::Global,
    client: &sandpool_client::Client,
    args: crate::args::TokenArgs,
) -> anyhow::Result<serde_json::Value> {
    use anyhow::Context as _;
    let endpoint = g.endpoint.trim_end_matches('/');
    let (cred, what) = match (&args.identity, &args.resource_group) {
        (Some(name), Some(rg)) => {
            // The identity's ids come from the server (with the caller's own credentials);
            // its secret only from the caller, since the server never shows it again.
            let id = client.get_identity(rg, name).await?;
            let props = serde_json::to_value(&id)?["properties"].clone();
            let field = |k: &str| {
                props[k]
                    .as_str()
                    .map(str::to_owned)
                    .with_context(|| format!("identity '{name}' has no {k}"))
            };
            let secret = args
                .client_secret
                .clone()
                .context("--identity needs --client-secret (or SANDPOOL_CLIENT_SECRET)")?;
            let cred = LocalCredential {
                tenant_id: field("tenantId")?,
                principal_id: field("principalId")?,
                client_id: field("clientId")?,
                client_secret: sandpool_auth::Secret::new(secret),
                endpoint: Some(endpoint.to_owned()),
            };
            (cred, format!("identity '{name}'"))
        }
        (Some(_), None) => anyhow::bail!("--identity needs -g/--resource-group"),
        _ => {
            if let Some(t) = given_token(g.access_token.as_deref()) {
                // A token given from outside is printed as it is; its expiry is not known here.
                return Ok(serde_json::json!({
                    "accessToken": t, "expiresOn": null, "expires_on": null,
                    "subscription": g.subscription, "tenant": null, "tokenType": "Bearer",
                }));
            }
            let cred = sandpool_auth::load_local_admin(&g.data_dir).with_context(|| {
                format!(
                    "no token: pass --access-token or set {TOKEN_ENV}, or run on the server's \
                     host (--data-dir {})",
                    g.data_dir.display()
                )
            })?;
            (cred, "the local admin".to_owned())
        }
    };
    let t = sandpool_auth::fetch_token_with(client.http(), &cred, Some(endpoint), &args.resource)
        .await
        .map_err(|e| anyhow::anyhow!(sandpool_client::with_tls_hint(e.to_string())))
        .with_context(|| format!("getting a token for {what}"))?;
    Ok(serde_json::json!({
        "accessToken": t.access_token.expose(),
        "expiresOn": utc_text(t.expires_on),
        "expires_on": t.expires_on,
        "subscription": g.subscription,
        "tenant": cred.tenant_id,
        "tokenType": t.token_type,
    }))
}

/// `YYYY-MM-DD HH:MM:SS.000000` (UTC) of a unix time, the shape `az` prints `expiresOn` in.
fn utc_text(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.000000",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_text_matches_known_dates() {
        assert_eq!(super::utc_text(0), "1970-01-01 00:00:00.000000");
        assert_eq!(super::utc_text(951_782_400), "2000-02-29 00:00:00.000000");
        assert_eq!(super::utc_text(1_795_000_000), "2026-11-18 11:06:40.000000");
    }
}
