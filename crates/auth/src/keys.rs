//! Token signing keys (ES256, P-256) kept in `<data-dir>/keys/`.
//!
//! One file per key, `<kid>.json`, mode 0600, in a 0700 directory. The newest key signs;
//! older keys keep verifying until every token they could have signed has expired, then they
//! are deleted. The key id is the RFC 7638 thumbprint of the public key, so it is stable and
//! says nothing about the private half.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{DecodingKey, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::{now_unix_ms, AuthError};

/// JWS algorithm of every key this store makes.
pub const ALGORITHM: &str = "ES256";

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyFile {
    kid: String,
    alg: String,
    /// Unix milliseconds; orders keys (newest signs).
    created_at_ms: u64,
    /// PKCS#8 DER of the private key, base64.
    pkcs8: String,
}

/// One signing key. `Debug` shows only the key id.
pub struct SigningKey {
    kid: String,
    created_at_ms: u64,
    x: String,
    y: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("created_at_ms", &self.created_at_ms)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub(crate) fn encoding(&self) -> &EncodingKey {
        &self.encoding
    }

    pub(crate) fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }

    /// The public key as a JWK (RFC 7517), as published in the JWKS.
    pub fn public_jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "EC",
            "crv": "P-256",
            "x": self.x,
            "y": self.y,
            "kid": self.kid,
            "use": "sig",
            "alg": ALGORITHM,
        })
    }

    fn from_pkcs8(pkcs8: &[u8], created_at_ms: u64) -> Result<Self, AuthError> {
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8,
            &SystemRandom::new(),
        )
        .map_err(|e| AuthError::Crypto(format!("unusable signing key: {e}")))?;
        // Uncompressed SEC1 point: 0x04 || x (32 bytes) || y (32 bytes).
        let point = pair.public_key().as_ref();
        if point.len() != 65 || point[0] != 4 {
            return Err(AuthError::Crypto("unexpected public key encoding".into()));
        }
        let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&point[33..65]);
        let decoding = DecodingKey::from_ec_components(&x, &y)
            .map_err(|e| AuthError::Crypto(format!("unusable public key: {e}")))?;
        Ok(SigningKey {
            kid: thumbprint(&x, &y),
            created_at_ms,
            x,
            y,
            encoding: EncodingKey::from_ec_der(pkcs8),
            decoding,
        })
    }
}

/// RFC 7638 JWK thumbprint: SHA-256 over the required members in lexicographic order.
fn thumbprint(x: &str, y: &str) -> String {
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        canonical.as_bytes(),
    ))
}

/// The set of signing keys on disk.
#[derive(Debug)]
pub struct KeyStore {
    dir: PathBuf,
    /// Newest first; `keys[0]` signs.
    keys: Vec<SigningKey>,
    /// How long a replaced key keeps verifying (the longest token lifetime plus leeway).
    retain_ms: u64,
}

impl KeyStore {
    /// Loads the keys in `dir`, creating the directory and a first key when there is none,
    /// and deletes replaced keys whose tokens have all expired.
    pub fn open(dir: &Path, retain_secs: u64) -> Result<Self, AuthError> {
        ensure_private_dir(dir)?;
        let mut keys = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| AuthError::io(dir, e))? {
            let path = entry.map_err(|e| AuthError::io(dir, e))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            keys.push(load_key(&path)?);
        }
        keys.sort_by_key(|k| std::cmp::Reverse(k.created_at_ms));
        let mut store = KeyStore {
            dir: dir.to_path_buf(),
            keys,
            retain_ms: retain_secs.saturating_mul(1000),
        };
        if store.keys.is_empty() {
            store.rotate()?;
        }
        store.prune()?;
        Ok(store)
    }

    /// Makes a new key the signing key; older keys keep verifying. Returns the new key id.
    pub fn rotate(&mut self) -> Result<String, AuthError> {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| AuthError::Crypto("key generation failed".into()))?;
        // Strictly after the current key, even within one millisecond, so order is total.
        let newest = self.keys.first().map_or(0, |k| k.created_at_ms + 1);
        let created_at_ms = now_unix_ms().max(newest);
        let key = SigningKey::from_pkcs8(pkcs8.as_ref(), created_at_ms)?;
        let file = KeyFile {
            kid: key.kid.clone(),
            alg: ALGORITHM.into(),
            created_at_ms,
            pkcs8: STANDARD.encode(pkcs8.as_ref()),
        };
        let json = serde_json::to_vec_pretty(&file)
            .map_err(|e| AuthError::Crypto(format!("serialising key: {e}")))?;
        write_private_file(&self.dir.join(format!("{}.json", key.kid)), &json)?;
        let kid = key.kid.clone();
        self.keys.insert(0, key);
        tracing::info!(kid = %kid, "new token signing key");
        Ok(kid)
    }

    /// Deletes retired keys past retention, then makes a new signing key when the current one
    /// is older than `max_age_ms`. Returns the new key id when it rotated.
    pub fn maintain(&mut self, max_age_ms: u64) -> Result<Option<String>, AuthError> {
        self.prune()?;
        let age_ms = now_unix_ms().saturating_sub(self.current().created_at_ms);
        if age_ms < max_age_ms {
            return Ok(None);
        }
        self.rotate().map(Some)
    }

    /// Deletes keys replaced longer ago than the retention period.
    fn prune(&mut self) -> Result<(), AuthError> {
        let now_ms = now_unix_ms();
        let mut keep = 1;
        while keep < self.keys.len() {
            // A key stopped signing when the next newer one was created.
            let replaced_at = self.keys[keep - 1].created_at_ms;
            if now_ms > replaced_at.saturating_add(self.retain_ms) {
                break;
            }
            keep += 1;
        }
        for old in self.keys.drain(keep..) {
            let path = self.dir.join(format!("{}.json", old.kid));
            fs::remove_file(&path).map_err(|e| AuthError::io(&path, e))?;
            tracing::info!(kid = %old.kid, "retired token signing key deleted");
        }
        Ok(())
    }

    pub fn current(&self) -> &SigningKey {
        // `open` guarantees at least one key and nothing removes the newest.
        &self.keys[0]
    }

    pub fn find(&self, kid: &str) -> Option<&SigningKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// `{"keys":[…]}` of every key that still verifies.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": self.keys.iter().map(SigningKey::public_jwk).collect::<Vec<_>>() })
    }
}

fn load_key(path: &Path) -> Result<SigningKey, AuthError> {
    let bytes = fs::read(path).map_err(|e| AuthError::io(path, e))?;
    let file: KeyFile = serde_json::from_slice(&bytes)
        .map_err(|e| AuthError::Crypto(format!("{}: not a key file: {e}", path.display())))?;
    if file.alg != ALGORITHM {
        return Err(AuthError::Crypto(format!(
            "{}: unsupported algorithm {}",
            path.display(),
            file.alg
        )));
    }
    let pkcs8 = STANDARD
        .decode(file.pkcs8.as_bytes())
        .map_err(|_| AuthError::Crypto(format!("{}: key is not base64", path.display())))?;
    let key = SigningKey::from_pkcs8(&pkcs8, file.created_at_ms)?;
    if key.kid != file.kid {
        return Err(AuthError::Crypto(format!(
            "{}: key id does not match the key",
            path.display()
        )));
    }
    Ok(key)
}

/// Creates `dir` (and parents) and restricts it to the owner.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), AuthError> {
    fs::create_dir_all(dir).map_err(|e| AuthError::io(dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| AuthError::io(dir, e))
}

/// Writes `contents` to `path` with mode 0600, atomically (temp file + rename), so a crash
/// never leaves a half-written key or credential and the file is never briefly world-readable.
pub(crate) fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), AuthError> {
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| AuthError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_open_creates_one_private_key_and_reopen_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let keys_dir = dir.path().join("keys");
        let store = KeyStore::open(&keys_dir, 3600).unwrap();
        let kid = store.current().kid().to_string();
        let mode = fs::metadata(&keys_dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let file = keys_dir.join(format!("{kid}.json"));
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = KeyStore::open(&keys_dir, 3600).unwrap();
        assert_eq!(again.current().kid(), kid);
    }

    #[test]
    fn rotation_keeps_old_key_for_verification_and_prunes_after_retention() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = KeyStore::open(dir.path(), 3600).unwrap();
        let old = store.current().kid().to_string();
        let new = store.rotate().unwrap();
        assert_ne!(old, new);
        assert_eq!(store.current().kid(), new);
        assert!(store.find(&old).is_some());
        assert_eq!(store.jwks()["keys"].as_array().unwrap().len(), 2);
        // Within retention the replaced key survives a reopen…
        let reopened = KeyStore::open(dir.path(), 3600).unwrap();
        assert!(reopened.find(&old).is_some());
        // …and with zero retention it is gone once its replacement is older than that.
        std::thread::sleep(std::time::Duration::from_millis(5));
        let reopened = KeyStore::open(dir.path(), 0).unwrap();
        assert_eq!(reopened.current().kid(), new);
        assert!(reopened.find(&old).is_none());
    }

    #[test]
    fn maintain_rotates_only_an_old_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = KeyStore::open(dir.path(), 3600).unwrap();
        let first = store.current().kid().to_string();
        assert_eq!(store.maintain(3_600_000).unwrap(), None);
        assert_eq!(store.current().kid(), first);
        let rotated = store.maintain(0).unwrap().expect("an old key rotates");
        assert_ne!(rotated, first);
        assert_eq!(store.current().kid(), rotated);
        assert!(store.find(&first).is_some(), "the old key still verifies");
    }

    #[test]
    fn corrupt_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("x.json"), b"{not json").unwrap();
        let err = KeyStore::open(dir.path(), 60).unwrap_err().to_string();
        assert!(err.contains("not a key file"), "{err}");
    }

    #[test]
    fn debug_does_not_print_key_material() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path(), 60).unwrap();
        let text = format!("{store:?}");
        assert!(text.contains(store.current().kid()));
        assert!(!text.contains("pkcs8") && !text.contains("encoding"));
    }
}
