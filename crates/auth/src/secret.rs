//! Client secrets: generation, salted hashing and constant-time verification.
//!
//! Secrets are 256 bits from the OS CSPRNG, so a salted SHA-256 is enough to make a leaked
//! hash useless; a password KDF (argon2) would only add per-request latency to the token
//! endpoint without adding security for secrets of that entropy.

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use std::fmt;

use crate::AuthError;

/// Prefix of every hash string, so a future scheme can be told apart.
const HASH_SCHEME: &str = "sha256";
/// Marks a sandpool client secret (Azure's look like `xyz8Q~…`); helps secret scanners.
const SECRET_PREFIX: &str = "sps~";

/// A credential that must never reach logs: `Debug` and `Display` print `[REDACTED]`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself; call only where it is sent or stored on purpose.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// Stored form of a client secret: `sha256$<salt>$<digest>` (base64). Safe to log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretHash(String);

impl SecretHash {
    /// Wraps a hash string read back from the store.
    pub fn from_stored(value: impl Into<String>) -> Self {
        SecretHash(value.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Hashes `secret` with a fresh random salt.
    pub fn of(secret: &Secret) -> Result<Self, AuthError> {
        let salt = random_bytes::<16>()?;
        let digest = salted_digest(&salt, secret.expose());
        Ok(SecretHash(format!(
            "{HASH_SCHEME}${}${}",
            STANDARD_NO_PAD.encode(salt),
            STANDARD_NO_PAD.encode(digest)
        )))
    }

    /// True when `candidate` is the secret this hash was made from. A malformed stored
    /// hash verifies nothing rather than erroring, so a corrupt row cannot lock in access.
    pub fn verify(&self, candidate: &str) -> bool {
        let mut parts = self.0.splitn(3, '$');
        let (Some(scheme), Some(salt), Some(digest)) = (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        if scheme != HASH_SCHEME {
            return false;
        }
        let (Ok(salt), Ok(expected)) =
            (STANDARD_NO_PAD.decode(salt), STANDARD_NO_PAD.decode(digest))
        else {
            return false;
        };
        let actual = salted_digest(&salt, candidate);
        constant_time_eq(actual.as_ref(), &expected)
    }
}

/// A new client secret and its hash; the server stores the hash and shows the secret once.
pub fn generate_client_secret() -> Result<(Secret, SecretHash), AuthError> {
    let secret = Secret(format!(
        "{SECRET_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(random_bytes::<32>()?)
    ));
    let hash = SecretHash::of(&secret)?;
    Ok((secret, hash))
}

pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], AuthError> {
    let mut buf = [0u8; N];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| AuthError::Crypto("the system random generator failed".into()))?;
    Ok(buf)
}

fn salted_digest(salt: &[u8], secret: &str) -> ring::digest::Digest {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(salt);
    ctx.update(secret.as_bytes());
    ctx.finish()
}

/// Compares without an early exit so timing does not reveal how many bytes matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verifies_only_the_original_secret() {
        let (secret, hash) = generate_client_secret().unwrap();
        assert!(hash.verify(secret.expose()));
        assert!(!hash.verify("sps~wrong"));
        assert!(!hash.verify(""));
        let (other, _) = generate_client_secret().unwrap();
        assert!(!hash.verify(other.expose()));
    }

    #[test]
    fn same_secret_hashes_differently_each_time() {
        let secret = Secret::new("sps~fixed");
        let a = SecretHash::of(&secret).unwrap();
        let b = SecretHash::of(&secret).unwrap();
        assert_ne!(a, b);
        assert!(a.verify("sps~fixed") && b.verify("sps~fixed"));
    }

    #[test]
    fn malformed_hash_verifies_nothing() {
        for bad in ["", "sha256", "sha256$$", "md5$AAAA$AAAA", "sha256$!!$!!"] {
            assert!(!SecretHash::from_stored(bad).verify(""), "{bad}");
        }
    }

    #[test]
    fn debug_and_display_redact() {
        let secret = Secret::new("sps~topsecretvalue");
        assert!(!format!("{secret:?}").contains("topsecret"));
        assert!(!format!("{secret}").contains("topsecret"));
    }
}
