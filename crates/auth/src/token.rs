//! Access tokens: the JWT claims sandpool issues, the token endpoint's response, and why a
//! presented token was refused.

use serde::{Deserialize, Deserializer, Serialize};

use crate::secret::Secret;

/// Claims of a sandpool access token, shaped like Entra ID v1 app tokens so existing
/// tooling that peeks at them (`oid`, `tid`, `appid`) finds what it expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub aud: String,
    pub iss: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    /// Principal id (same as `oid`).
    pub sub: String,
    pub oid: String,
    pub tid: String,
    /// Client id of the identity the token was issued to.
    pub appid: String,
    /// v2-style twin of `appid`.
    pub azp: String,
    pub idtyp: String,
    pub ver: String,
    /// Unique token id.
    pub uti: String,
}

/// The token endpoint's answer. Numbers are numbers on the wire (what MSAL expects);
/// reading accepts strings too, as Entra ID v1 and IMDS send them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessToken {
    pub access_token: Secret,
    pub token_type: String,
    #[serde(deserialize_with = "number_or_string")]
    pub expires_in: u64,
    #[serde(deserialize_with = "number_or_string")]
    pub ext_expires_in: u64,
    /// Unix seconds.
    #[serde(deserialize_with = "number_or_string")]
    pub expires_on: u64,
    #[serde(deserialize_with = "number_or_string")]
    pub not_before: u64,
    pub resource: String,
}

fn number_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        Num(u64),
        Str(String),
    }
    match NumOrStr::deserialize(d)? {
        NumOrStr::Num(n) => Ok(n),
        NumOrStr::Str(s) => s.trim().parse().map_err(serde::de::Error::custom),
    }
}

/// Why a request's credentials were refused. Messages are safe to send to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("The request has no 'Authorization: Bearer' header.")]
    Missing,
    #[error("The 'Authorization' header is not a bearer token.")]
    NotBearer,
    #[error("The access token is malformed.")]
    Malformed,
    #[error("The access token was not signed by a key of this server.")]
    UnknownKey,
    #[error("The access token signature is invalid.")]
    BadSignature,
    #[error("The access token has expired.")]
    Expired,
    #[error("The access token is not yet valid.")]
    NotYetValid,
    #[error("The access token was issued by another issuer.")]
    WrongIssuer,
    #[error(
        "The access token audience '{found}' is not valid for this API; expected '{expected}'."
    )]
    WrongAudience { found: String, expected: String },
    #[error("The principal of the access token no longer exists.")]
    PrincipalGone,
}

impl From<jsonwebtoken::errors::Error> for TokenError {
    fn from(e: jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::InvalidAudience => TokenError::WrongAudience {
                found: "unknown".into(),
                expected: "a sandpool audience".into(),
            },
            _ => TokenError::Malformed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_token_reads_strings_or_numbers_and_redacts() {
        let s = r#"{"access_token":"eyJ.secret.sig","token_type":"Bearer","expires_in":"3599",
            "ext_expires_in":3599,"expires_on":"1700000000","not_before":1699996400,
            "resource":"https://dynamicsessions.io"}"#;
        let t: AccessToken = serde_json::from_str(s).unwrap();
        assert_eq!(t.expires_in, 3599);
        assert_eq!(t.expires_on, 1_700_000_000);
        assert!(!format!("{t:?}").contains("eyJ"));
        let bad = s.replace("\"3599\"", "\"soon\"");
        assert!(serde_json::from_str::<AccessToken>(&bad).is_err());
    }
}
