//! The cluster key that seals gossip: 32 bytes for ChaCha20-Poly1305 (RFC 8439), given either
//! as 64 hex digits or derived from a passphrase with HKDF-SHA-256 (RFC 5869).
//!
//! Derivation: `HKDF-SHA-256(salt = "spheromesh/cluster-key/v1", ikm = passphrase,
//! info = "gossip-seal chacha20poly1305")`, 32 bytes of output. HKDF is not a password hash:
//! it adds no work factor, so a passphrase must carry its own entropy (at least
//! [`MIN_PASSPHRASE_LEN`] bytes are required; `openssl rand -hex 32` or
//! [`ClusterKey::generate`] is the better source).

use std::fmt;

use hkdf::Hkdf;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::Sha256;

/// Length of a cluster key in bytes.
pub const KEY_LEN: usize = 32;

/// Shortest passphrase accepted by [`key_from_secret`], in bytes.
pub const MIN_PASSPHRASE_LEN: usize = 16;

/// HKDF salt: names the product and the version of this derivation.
const KDF_SALT: &[u8] = b"spheromesh/cluster-key/v1";

/// HKDF info: names the use of the derived key.
const KDF_INFO: &[u8] = b"gossip-seal chacha20poly1305";

/// Why a secret could not become a cluster key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The secret is empty (after trimming whitespace).
    #[error("the cluster secret is empty")]
    Empty,
    /// The passphrase is shorter than [`MIN_PASSPHRASE_LEN`].
    #[error("the cluster passphrase has {len} bytes; at least {min} are required")]
    TooShort {
        /// Length of the passphrase in bytes.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// The key derivation failed (HKDF only fails for outputs far longer than a key).
    #[error("cannot derive the cluster key")]
    Derive,
    /// The system random number generator failed.
    #[error("cannot read the system random number generator")]
    Entropy(#[source] rand::Error),
}

/// A 32-byte cluster key; its `Debug` output never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; KEY_LEN]);

impl ClusterKey {
    /// Wraps raw key bytes.
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        ClusterKey(bytes)
    }

    /// A new random key from the operating system's generator.
    ///
    /// # Errors
    ///
    /// [`KeyError::Entropy`] if the generator fails.
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = [0u8; KEY_LEN];
        OsRng
            .try_fill_bytes(&mut bytes)
            .map_err(KeyError::Entropy)?;
        Ok(ClusterKey(bytes))
    }

    /// The key as 64 lower-case hex digits, the form [`key_from_secret`] reads back unchanged.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The raw key bytes.
    pub(crate) fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(<redacted>)")
    }
}

/// Turns the configured cluster secret into a key.
///
/// Surrounding whitespace is ignored (secrets read from files often end in a newline). Exactly
/// 64 hex digits are the key itself; anything else is a passphrase of at least
/// [`MIN_PASSPHRASE_LEN`] bytes, derived as the module documentation describes. Every node of
/// a cluster must be given the same secret.
///
/// # Errors
///
/// [`KeyError::Empty`] or [`KeyError::TooShort`] for a weak secret.
pub fn key_from_secret(secret: &str) -> Result<ClusterKey, KeyError> {
    let secret = secret.trim();
    if secret.is_empty() {
        return Err(KeyError::Empty);
    }
    if let Some(bytes) = decode_hex_key(secret) {
        return Ok(ClusterKey(bytes));
    }
    if secret.len() < MIN_PASSPHRASE_LEN {
        return Err(KeyError::TooShort {
            len: secret.len(),
            min: MIN_PASSPHRASE_LEN,
        });
    }
    let mut key = [0u8; KEY_LEN];
    Hkdf::<Sha256>::new(Some(KDF_SALT), secret.as_bytes())
        .expand(KDF_INFO, &mut key)
        .map_err(|_| KeyError::Derive)?;
    Ok(ClusterKey(key))
}

/// Decodes exactly `2 * KEY_LEN` hex digits, upper or lower case.
fn decode_hex_key(text: &str) -> Option<[u8; KEY_LEN]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * KEY_LEN {
        return None;
    }
    let mut key = [0u8; KEY_LEN];
    for (byte, pair) in key.iter_mut().zip(digits.chunks_exact(2)) {
        let high = char::from(pair[0]).to_digit(16)?;
        let low = char::from(pair[1]).to_digit(16)?;
        *byte = u8::try_from(high * 16 + low).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_keys_are_used_verbatim_and_round_trip() {
        let key = ClusterKey::generate().expect("rng");
        let back = key_from_secret(&format!("  {}\n", key.to_hex().to_uppercase())).expect("hex");
        assert_eq!(back, key);
    }

    #[test]
    fn passphrases_derive_with_hkdf_sha256() {
        // Known answer computed independently with Python's hmac/hashlib (RFC 5869 steps).
        let key = key_from_secret("correct horse battery staple").expect("passphrase");
        assert_eq!(
            key.to_hex(),
            "7dd876cea23f1c778618368d746f5df4f1e71dacd4432e8865b38192579e8a3d"
        );
        assert_ne!(
            key,
            key_from_secret("correct horse battery stapler").expect("passphrase")
        );
    }

    #[test]
    fn weak_secrets_are_refused() {
        assert!(matches!(key_from_secret(" \n"), Err(KeyError::Empty)));
        assert!(matches!(
            key_from_secret("changeme"),
            Err(KeyError::TooShort {
                len: 8,
                min: MIN_PASSPHRASE_LEN
            })
        ));
        // 63 hex digits are a (long enough) passphrase, not a key.
        let almost = "a".repeat(63);
        assert_ne!(
            key_from_secret(&almost).expect("passphrase").as_bytes(),
            &[0xaa; KEY_LEN]
        );
    }

    #[test]
    fn debug_redacts() {
        let key = ClusterKey::from_bytes([7; KEY_LEN]);
        assert_eq!(format!("{key:?}"), "ClusterKey(<redacted>)");
    }
}
