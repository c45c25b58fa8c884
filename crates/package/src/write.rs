//! Writing a package: fill the manifest's entry list from the files, serialize it, sign the
//! exact bytes, and lay everything into a deterministic zip.

use crate::Error;
use crate::archive::{self, ArchiveEntry, check_entry_name};
use crate::keys::SecretKey;
use crate::manifest::{Entry, Manifest};
use crate::read::{Limits, MANIFEST_NAME, SIGNATURE_NAME, check_manifest};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Builds the package bytes for `manifest` (its `entries` and `key_id` are filled here; any
/// given values are replaced) and `files` (entry name to bytes: payloads and report files).
///
/// Targets are sorted by name, their sites by `baseline_rva` and relocations by `offset`.
/// The result is refused unless [`crate::open`] would accept it under default limits, so the
/// writer cannot emit what the reader refuses.
/// Identical inputs give identical bytes: JSON from fixed field order, entries in name order,
/// fixed timestamps and compression, and Ed25519 signatures are deterministic.
pub fn write_package(
    mut manifest: Manifest,
    files: BTreeMap<String, Vec<u8>>,
    signing_key: &SecretKey,
) -> Result<Vec<u8>, Error> {
    for name in files.keys() {
        check_entry_name(name)?;
        if name == MANIFEST_NAME || name == SIGNATURE_NAME {
            return Err(Error::DuplicateEntry { name: name.clone() });
        }
    }
    manifest.key_id = signing_key.key_id();
    manifest.entries = files
        .iter()
        .map(|(name, data)| Entry {
            name: name.clone(),
            sha256: hex::encode(Sha256::digest(data)),
            len: data.len() as u64,
        })
        .collect();
    manifest.targets.sort_by(|a, b| a.name.cmp(&b.name));
    for target in &mut manifest.targets {
        target.sites.sort_by_key(|site| site.baseline_rva);
        target
            .relocations
            .sort_by_key(|relocation| relocation.offset);
    }
    check_manifest(&manifest, &files, &Limits::default())?;

    // Pretty JSON, so `unzip -p PKG manifest.json` is readable and text edits in tamper tests
    // stay simple; compact JSON would be about 45% smaller (relocations dominate).
    let mut manifest_bytes =
        serde_json::to_vec_pretty(&manifest).map_err(|error| Error::Malformed {
            what: MANIFEST_NAME.to_owned(),
            reason: error.to_string(),
        })?;
    manifest_bytes.push(b'\n');
    let signature = signing_key.sign(&manifest_bytes);

    let mut entries = vec![
        ArchiveEntry::file(MANIFEST_NAME, &manifest_bytes),
        ArchiveEntry::file(SIGNATURE_NAME, &signature),
    ];
    entries.extend(
        files
            .iter()
            .map(|(name, data)| ArchiveEntry::file(name, data)),
    );
    archive::write_archive(&entries)
}

/// How long a package is valid when the builder does not say: 90 days, long enough to cover a
/// hotpatch month and its rollout, short enough that a withdrawn package stops installing.
pub const DEFAULT_VALIDITY_SECONDS: u64 = 90 * 86_400;

/// The issue time of a package being built: `explicit` (the CLI's `--issued-at`), else
/// `SOURCE_DATE_EPOCH` (reproducible builds), else `now`.
pub fn issue_time(
    explicit: Option<u64>,
    source_date_epoch: Option<&str>,
    now: u64,
) -> Result<u64, Error> {
    if let Some(explicit) = explicit {
        return Ok(explicit);
    }
    match source_date_epoch {
        Some(text) => text.trim().parse().map_err(|_| Error::Malformed {
            what: "SOURCE_DATE_EPOCH".to_owned(),
            reason: format!("{text:?} is not unix seconds"),
        }),
        None => Ok(now),
    }
}
