//! Ed25519 signing keys: generation, the one-line text forms of the secret and public key files,
//! and key IDs.
//!
//! Secret key file: `hotpatch-secret-key-v1 <64 hex digits of the 32-byte seed>`.
//! Public key file: `hotpatch-public-key-v1 <64 hex digits of the 32-byte public key>`.
//! Key ID: lowercase hex of the first 16 bytes of SHA-256 of the public key bytes.

use crate::Error;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

const SECRET_KEY_TAG: &str = "hotpatch-secret-key-v1";
const PUBLIC_KEY_TAG: &str = "hotpatch-public-key-v1";

/// A signing key. Its `Debug` form names only the key ID, so a secret never reaches a log.
#[derive(Clone)]
pub struct SecretKey {
    signing: SigningKey,
}

/// A public (verifying) key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey {
    verifying: VerifyingKey,
}

impl SecretKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> Result<SecretKey, Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|error| Error::Random {
            reason: error.to_string(),
        })?;
        Ok(SecretKey::from_seed(seed))
    }

    /// The key whose 32-byte Ed25519 seed is `seed`.
    pub fn from_seed(seed: [u8; 32]) -> SecretKey {
        SecretKey {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            verifying: self.signing.verifying_key(),
        }
    }

    pub fn key_id(&self) -> String {
        self.public_key().key_id()
    }

    /// The 64-byte Ed25519 signature over `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// The secret key file's content, newline-terminated.
    pub fn to_text(&self) -> String {
        format!(
            "{SECRET_KEY_TAG} {}\n",
            hex::encode(self.signing.to_bytes())
        )
    }

    /// Parses a secret key file's content.
    pub fn from_text(text: &str) -> Result<SecretKey, Error> {
        let seed = parse_key_text(text, SECRET_KEY_TAG, "secret key")?;
        Ok(SecretKey::from_seed(seed))
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.key_id())
    }
}

impl PublicKey {
    /// The public key of the 32 bytes `bytes`, refused when they are not a valid point.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<PublicKey, Error> {
        let verifying = VerifyingKey::from_bytes(&bytes).map_err(|error| Error::BadKey {
            what: "public key",
            reason: error.to_string(),
        })?;
        // A small-order key lets one signature verify for many messages; verify_strict refuses
        // those signatures anyway, but refusing the key names the real fault.
        if verifying.is_weak() {
            return Err(Error::BadKey {
                what: "public key",
                reason: "a weak (small-order) key".to_owned(),
            });
        }
        Ok(PublicKey { verifying })
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.verifying.to_bytes()
    }

    /// Lowercase hex of the first 16 bytes of SHA-256 of the public key.
    pub fn key_id(&self) -> String {
        key_id_of(&self.verifying.to_bytes())
    }

    /// The public key file's content, newline-terminated.
    pub fn to_text(&self) -> String {
        format!(
            "{PUBLIC_KEY_TAG} {}\n",
            hex::encode(self.verifying.to_bytes())
        )
    }

    /// Parses a public key file's content.
    pub fn from_text(text: &str) -> Result<PublicKey, Error> {
        PublicKey::from_bytes(parse_key_text(text, PUBLIC_KEY_TAG, "public key")?)
    }

    /// Checks `signature` over `message` with `verify_strict`, which refuses non-canonical
    /// signatures and small-order components (no signature malleability).
    pub fn verify_strict(&self, message: &[u8], signature: &[u8]) -> Result<(), Error> {
        let bad = || Error::BadSignature {
            key_id: self.key_id(),
        };
        let signature = Signature::from_slice(signature).map_err(|_| bad())?;
        self.verifying
            .verify_strict(message, &signature)
            .map_err(|_| bad())
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

/// Key ID of raw public key bytes.
pub fn key_id_of(public_key: &[u8; 32]) -> String {
    let digest = Sha256::digest(public_key);
    hex::encode(&digest[..16])
}

/// `<tag> <64 hex digits>` with optional surrounding whitespace (a trailing newline).
fn parse_key_text(text: &str, tag: &str, what: &'static str) -> Result<[u8; 32], Error> {
    let bad = |reason: &str| Error::BadKey {
        what,
        reason: reason.to_owned(),
    };
    let mut words = text.split_whitespace();
    if words.next() != Some(tag) {
        return Err(bad(&format!("does not start with {tag:?}")));
    }
    let hex_text = words.next().ok_or_else(|| bad("no key after the tag"))?;
    if words.next().is_some() {
        return Err(bad("text after the key"));
    }
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut bytes)
        .map_err(|error| bad(&format!("not 64 hex digits: {error}")))?;
    Ok(bytes)
}
