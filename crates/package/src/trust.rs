//! The set of keys a verifier accepts ([`Trust`]), and the versioned trust file that carries it
//! through key rotation.
//!
//! A trust file is a JSON body, `{"version": N, "keys": [{"key_id", "public_key", "retired"}]}`,
//! followed for N > 1 by one line `hotpatch-trust-signature-v1 <key_id> <128 hex digits>`: an
//! Ed25519 signature over the exact body bytes by a non-retired key of version N - 1.
//! The file an operator installs by hand is the root of trust (version 1 has no signature);
//! a successor is accepted only through [`TrustFile::accept_successor`], and a verifier that
//! persists the highest version it has seen refuses older files ([`TrustFile::load`]).

use crate::Error;
use crate::keys::{PublicKey, SecretKey};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

const SIGNATURE_TAG: &str = "hotpatch-trust-signature-v1";

/// The keys a package may be signed with, by key ID, and the retired ones (named, so that a
/// package signed with a retired key is refused as such rather than as unknown).
#[derive(Clone, Debug, Default)]
pub struct Trust {
    keys: BTreeMap<String, PublicKey>,
    retired: BTreeSet<String>,
}

impl Trust {
    /// Trust exactly one key.
    pub fn from_public_key(key: PublicKey) -> Trust {
        Trust {
            keys: BTreeMap::from([(key.key_id(), key)]),
            retired: BTreeSet::new(),
        }
    }

    /// The non-retired keys of a trust file.
    pub fn from_trust_file(file: &TrustFile) -> Trust {
        let mut trust = Trust::default();
        for key in &file.keys {
            if key.retired {
                trust.retired.insert(key.key_id.clone());
            } else {
                trust.keys.insert(key.key_id.clone(), key.public_key);
            }
        }
        trust
    }

    /// The key named `key_id`, or why it is not accepted.
    pub fn key(&self, key_id: &str) -> Result<&PublicKey, Error> {
        if let Some(key) = self.keys.get(key_id) {
            return Ok(key);
        }
        if self.retired.contains(key_id) {
            return Err(Error::RetiredKey {
                key_id: key_id.to_owned(),
            });
        }
        Err(Error::UnknownKey {
            key_id: key_id.to_owned(),
        })
    }

    /// Key IDs of the accepted keys, sorted.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }
}

/// One key of a trust file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedKey {
    pub key_id: String,
    pub public_key: PublicKey,
    pub retired: bool,
}

/// A parsed trust file: its version, its keys, and the exact bytes it was read from or will be
/// written as.
#[derive(Clone, Debug)]
pub struct TrustFile {
    pub version: u64,
    /// Sorted by key ID.
    pub keys: Vec<TrustedKey>,
    body: Vec<u8>,
    signature: Option<(String, [u8; 64])>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustBody {
    version: u64,
    keys: Vec<TrustBodyKey>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustBodyKey {
    key_id: String,
    public_key: String,
    retired: bool,
}

impl TrustFile {
    /// Version 1: the keys an operator starts with; trusted because the operator installed it.
    pub fn initial(keys: &[PublicKey]) -> Result<TrustFile, Error> {
        let keys = keys
            .iter()
            .map(|key| TrustedKey {
                key_id: key.key_id(),
                public_key: *key,
                retired: false,
            })
            .collect();
        TrustFile::unsigned(1, keys)
    }

    fn unsigned(version: u64, mut keys: Vec<TrustedKey>) -> Result<TrustFile, Error> {
        keys.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        keys.dedup_by(|a, b| a.key_id == b.key_id);
        if !keys.iter().any(|key| !key.retired) {
            return Err(malformed(
                "a trust file needs at least one key that is not retired",
            ));
        }
        let body = TrustBody {
            version,
            keys: keys
                .iter()
                .map(|key| TrustBodyKey {
                    key_id: key.key_id.clone(),
                    public_key: hex::encode(key.public_key.to_bytes()),
                    retired: key.retired,
                })
                .collect(),
        };
        let mut body =
            serde_json::to_vec_pretty(&body).map_err(|error| malformed(&error.to_string()))?;
        body.push(b'\n');
        Ok(TrustFile {
            version,
            keys,
            body,
            signature: None,
        })
    }

    /// Version N + 1 with `add` added and `retire` retired, signed by `signer`, which must be a
    /// non-retired key of this version.
    pub fn rotate(
        &self,
        add: &[PublicKey],
        retire: &[String],
        signer: &SecretKey,
    ) -> Result<TrustFile, Error> {
        let next_version = self.version.checked_add(1).ok_or(Error::TrustVersionGap {
            found: self.version,
            previous: self.version,
        })?;
        let signer_id = signer.key_id();
        if !self
            .keys
            .iter()
            .any(|key| key.key_id == signer_id && !key.retired)
        {
            return Err(Error::TrustSignature {
                version: next_version,
                reason: format!(
                    "signer {signer_id} is not an active key of version {}",
                    self.version
                ),
            });
        }
        let mut keys = self.keys.clone();
        for key in add {
            if !keys.iter().any(|k| k.key_id == key.key_id()) {
                keys.push(TrustedKey {
                    key_id: key.key_id(),
                    public_key: *key,
                    retired: false,
                });
            }
        }
        for key_id in retire {
            let key = keys
                .iter_mut()
                .find(|key| &key.key_id == key_id)
                .ok_or_else(|| Error::UnknownKey {
                    key_id: key_id.clone(),
                })?;
            key.retired = true;
        }
        let mut next = TrustFile::unsigned(next_version, keys)?;
        next.signature = Some((signer_id, signer.sign(&next.body)));
        Ok(next)
    }

    /// The file's bytes: the body, then the signature line when there is one.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.body.clone();
        if let Some((key_id, signature)) = &self.signature {
            out.extend_from_slice(
                format!("{SIGNATURE_TAG} {key_id} {}\n", hex::encode(signature)).as_bytes(),
            );
        }
        out
    }

    /// Parses a trust file the operator installed, refusing one older than `high_water` (the
    /// highest version this verifier has seen). Its signature is not checked here: an installed
    /// file is the root of trust; successors go through [`TrustFile::accept_successor`].
    pub fn load(bytes: &[u8], high_water: Option<u64>) -> Result<TrustFile, Error> {
        let file = TrustFile::parse(bytes)?;
        if let Some(seen) = high_water
            && file.version < seen
        {
            return Err(Error::TrustRollback {
                found: file.version,
                seen,
            });
        }
        Ok(file)
    }

    /// Accepts `next` only if it is exactly version N + 1 and signed by a non-retired key of
    /// this (version N) file.
    pub fn accept_successor(&self, next: &[u8]) -> Result<TrustFile, Error> {
        let next = TrustFile::parse(next)?;
        if next.version <= self.version {
            return Err(Error::TrustRollback {
                found: next.version,
                seen: self.version,
            });
        }
        if Some(next.version) != self.version.checked_add(1) {
            return Err(Error::TrustVersionGap {
                found: next.version,
                previous: self.version,
            });
        }
        let (signer_id, signature) =
            next.signature
                .as_ref()
                .ok_or_else(|| Error::TrustSignature {
                    version: next.version,
                    reason: "no signature".to_owned(),
                })?;
        let signer = Trust::from_trust_file(self)
            .key(signer_id)
            .map_err(|error| Error::TrustSignature {
                version: next.version,
                reason: error.to_string(),
            })?
            .to_owned();
        signer
            .verify_strict(&next.body, signature)
            .map_err(|error| Error::TrustSignature {
                version: next.version,
                reason: error.to_string(),
            })?;
        Ok(next)
    }

    /// Structure only: body, keys (each key ID must match its key), optional signature line.
    fn parse(bytes: &[u8]) -> Result<TrustFile, Error> {
        let marker = format!("\n{SIGNATURE_TAG} ");
        let (body, signature) = match find(bytes, marker.as_bytes()) {
            Some(at) => {
                let (body, line) = bytes.split_at(at + 1);
                (body, Some(parse_signature_line(line)?))
            }
            None => (bytes, None),
        };
        let parsed: TrustBody =
            serde_json::from_slice(body).map_err(|error| malformed(&error.to_string()))?;
        let mut keys = Vec::with_capacity(parsed.keys.len());
        for key in parsed.keys {
            let mut raw = [0u8; 32];
            hex::decode_to_slice(&key.public_key, &mut raw)
                .map_err(|error| malformed(&format!("public key of {}: {error}", key.key_id)))?;
            let public_key = PublicKey::from_bytes(raw)?;
            if public_key.key_id() != key.key_id {
                return Err(malformed(&format!(
                    "key_id {} does not match its public key ({})",
                    key.key_id,
                    public_key.key_id()
                )));
            }
            keys.push(TrustedKey {
                key_id: key.key_id,
                public_key,
                retired: key.retired,
            });
        }
        if parsed.version > 1 && signature.is_none() {
            return Err(Error::TrustSignature {
                version: parsed.version,
                reason: "no signature".to_owned(),
            });
        }
        Ok(TrustFile {
            version: parsed.version,
            keys,
            body: body.to_vec(),
            signature,
        })
    }
}

fn parse_signature_line(line: &[u8]) -> Result<(String, [u8; 64]), Error> {
    let text = std::str::from_utf8(line).map_err(|_| malformed("signature line is not UTF-8"))?;
    let mut words = text.split_whitespace();
    let (Some(SIGNATURE_TAG), Some(key_id), Some(signature_hex), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Err(malformed("signature line is not `tag key_id signature`"));
    };
    let mut signature = [0u8; 64];
    hex::decode_to_slice(signature_hex, &mut signature)
        .map_err(|error| malformed(&format!("signature: {error}")))?;
    Ok((key_id.to_owned(), signature))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn malformed(reason: &str) -> Error {
    Error::Malformed {
        what: "trust file".to_owned(),
        reason: reason.to_owned(),
    }
}
