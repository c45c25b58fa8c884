//! Opening a package: the caps, then the signature over the exact manifest bytes, then every
//! entry's length and SHA-256, then the validity window, then the manifest's internal sanity.
//! Nothing in the manifest is believed before its signature holds.

use crate::Error;
use crate::archive::{self, check_entry_name};
use crate::manifest::{FORMAT_VERSION, Manifest, PackageKind, Redirect, Target};
use crate::relocate::field_range;
use crate::trust::Trust;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Name of the signed manifest entry.
pub const MANIFEST_NAME: &str = "manifest.json";
/// Name of the raw 64-byte Ed25519 signature over the manifest bytes.
pub const SIGNATURE_NAME: &str = "manifest.sig";

/// Caps checked before the corresponding bytes are parsed or allocated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The package file.
    pub max_archive_bytes: u64,
    /// Entries in the archive, from the end-of-central-directory record.
    pub max_entries: u64,
    /// One entry's inflated size.
    pub max_entry_bytes: u64,
    /// All entries' inflated sizes together.
    pub max_total_bytes: u64,
    /// `manifest.json`'s inflated size.
    pub max_manifest_bytes: u64,
    /// Targets in the manifest.
    pub max_targets: u64,
    /// Patch sites of all targets together.
    pub max_sites: u64,
    /// Relocations of all targets together.
    pub max_relocations: u64,
    /// `RUNTIME_FUNCTION` entries of all targets' unwind tables together.
    pub max_unwind_entries: u64,
    /// How far the verifier's clock may lag the signer's: a package issued up to this many
    /// seconds in the future is accepted.
    pub clock_skew_seconds: u64,
}

impl Default for Limits {
    fn default() -> Self {
        const MIB: u64 = 1 << 20;
        Limits {
            max_archive_bytes: 256 * MIB,
            max_entries: 4096,
            max_entry_bytes: 64 * MIB,
            max_total_bytes: 512 * MIB,
            max_manifest_bytes: 64 * MIB,
            max_targets: 4096,
            max_sites: 100_000,
            max_relocations: 1_000_000,
            max_unwind_entries: 1_000_000,
            clock_skew_seconds: 300,
        }
    }
}

/// A package whose signature, entries and validity window held.
#[derive(Clone, Debug)]
pub struct VerifiedPackage {
    pub manifest: Manifest,
    /// The exact signed bytes of `manifest.json`.
    pub manifest_bytes: Vec<u8>,
    /// Every entry listed in the manifest, by name (not `manifest.json` or `manifest.sig`).
    pub entries: BTreeMap<String, Vec<u8>>,
}

impl VerifiedPackage {
    /// The payload bytes of `target`, `None` when it has no payload.
    pub fn payload(&self, target: &Target) -> Option<&[u8]> {
        target
            .payload
            .as_ref()
            .and_then(|name| self.entries.get(name))
            .map(Vec::as_slice)
    }
}

/// Opens and verifies a package against `trust` at unix time `now`.
pub fn open(
    bytes: &[u8],
    trust: &Trust,
    now: u64,
    limits: &Limits,
) -> Result<VerifiedPackage, Error> {
    let raw = archive::read_archive(bytes, limits)?;
    let mut manifest_bytes = None;
    let mut signature = None;
    let mut entries = BTreeMap::new();
    for entry in raw {
        match entry.name.as_str() {
            MANIFEST_NAME => manifest_bytes = Some(entry.data),
            SIGNATURE_NAME => signature = Some(entry.data),
            _ => {
                entries.insert(entry.name, entry.data);
            }
        }
    }
    let missing = |name: &str| Error::MissingEntry {
        name: name.to_owned(),
    };
    let manifest_bytes = manifest_bytes.ok_or_else(|| missing(MANIFEST_NAME))?;
    let signature = signature.ok_or_else(|| missing(SIGNATURE_NAME))?;
    if manifest_bytes.len() as u64 > limits.max_manifest_bytes {
        return Err(Error::TooLarge {
            what: MANIFEST_NAME.to_owned(),
            size: manifest_bytes.len() as u64,
            limit: limits.max_manifest_bytes,
        });
    }

    // Only the key ID is read before the signature holds: it picks the key, nothing else.
    #[derive(Deserialize)]
    struct KeyIdOnly {
        key_id: String,
    }
    let key_id = serde_json::from_slice::<KeyIdOnly>(&manifest_bytes)
        .map_err(|error| malformed_manifest(&error.to_string()))?
        .key_id;
    let key = trust.key(&key_id)?;
    key.verify_strict(&manifest_bytes, &signature)?;

    // The format decides how the rest is read, so it is checked before the strict parse: a
    // newer manifest with fields this build does not know is "unsupported", not "malformed".
    #[derive(Deserialize)]
    struct FormatOnly {
        format: u32,
    }
    let format = serde_json::from_slice::<FormatOnly>(&manifest_bytes)
        .map_err(|error| malformed_manifest(&error.to_string()))?
        .format;
    if format != FORMAT_VERSION {
        return Err(Error::UnsupportedFormat {
            found: format,
            supported: FORMAT_VERSION,
        });
    }
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|error| malformed_manifest(&error.to_string()))?;

    check_entries(&manifest, &entries)?;

    if now >= manifest.expires_at {
        return Err(Error::Expired {
            expires_at: manifest.expires_at,
            now,
        });
    }
    if now.saturating_add(limits.clock_skew_seconds) < manifest.issued_at {
        return Err(Error::NotYetValid {
            issued_at: manifest.issued_at,
            now,
        });
    }

    check_manifest(&manifest, &entries, limits)?;
    Ok(VerifiedPackage {
        manifest,
        manifest_bytes,
        entries,
    })
}

/// A package read for display only (`hotpatch inspect`): NOTHING here is verified.
#[derive(Clone, Debug)]
pub struct UnverifiedPackage {
    /// Parsed strictly, but its signature is not checked.
    pub manifest: Manifest,
    /// Every archive entry in archive order, with its inflated length.
    pub archive_entries: Vec<(String, u64)>,
}

/// Reads a package's manifest without checking its signature or entries, under the same caps
/// and container checks as [`open`]. For showing what a file claims; never for acting on it.
pub fn read_unverified(bytes: &[u8], limits: &Limits) -> Result<UnverifiedPackage, Error> {
    let raw = archive::read_archive(bytes, limits)?;
    let archive_entries = raw
        .iter()
        .map(|entry| (entry.name.clone(), entry.data.len() as u64))
        .collect();
    let manifest_bytes = raw
        .into_iter()
        .find(|entry| entry.name == MANIFEST_NAME)
        .ok_or_else(|| Error::MissingEntry {
            name: MANIFEST_NAME.to_owned(),
        })?
        .data;
    let manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|error| malformed_manifest(&error.to_string()))?;
    Ok(UnverifiedPackage {
        manifest,
        archive_entries,
    })
}

/// Every archive entry is listed, every listed entry is present with its length and SHA-256.
fn check_entries(manifest: &Manifest, entries: &BTreeMap<String, Vec<u8>>) -> Result<(), Error> {
    for name in entries.keys() {
        if !manifest.entries.iter().any(|listed| &listed.name == name) {
            return Err(Error::UnlistedEntry { name: name.clone() });
        }
    }
    for listed in &manifest.entries {
        let data = entries
            .get(&listed.name)
            .ok_or_else(|| Error::MissingEntry {
                name: listed.name.clone(),
            })?;
        if data.len() as u64 != listed.len {
            return Err(Error::EntryLengthMismatch {
                name: listed.name.clone(),
                expected: listed.len,
                actual: data.len() as u64,
            });
        }
        if hex::encode(Sha256::digest(data)) != listed.sha256 {
            return Err(Error::EntryHashMismatch {
                name: listed.name.clone(),
            });
        }
    }
    Ok(())
}

/// The manifest's internal consistency: counts under the caps, lists sorted, every payload
/// present with its stated length, every site and relocation inside its payload.
/// The writer runs the same check, so what it emits the reader accepts.
pub(crate) fn check_manifest(
    manifest: &Manifest,
    entries: &BTreeMap<String, Vec<u8>>,
    limits: &Limits,
) -> Result<(), Error> {
    if manifest.format != FORMAT_VERSION {
        return Err(Error::UnsupportedFormat {
            found: manifest.format,
            supported: FORMAT_VERSION,
        });
    }
    if manifest.issued_at >= manifest.expires_at {
        return Err(malformed_manifest("issued_at is not before expires_at"));
    }
    match manifest.kind {
        PackageKind::Baseline if manifest.min_sequence != manifest.sequence => {
            return Err(malformed_manifest(
                "a baseline's min_sequence must equal its sequence",
            ));
        }
        PackageKind::Hotpatch if manifest.min_sequence > manifest.sequence => {
            return Err(malformed_manifest("min_sequence is above sequence"));
        }
        _ => {}
    }
    for pair in manifest.entries.windows(2) {
        if pair[0].name >= pair[1].name {
            return Err(malformed_manifest(
                "entries are not sorted by name, or repeat",
            ));
        }
    }
    for listed in &manifest.entries {
        check_entry_name(&listed.name)?;
        if listed.name == MANIFEST_NAME || listed.name == SIGNATURE_NAME {
            return Err(malformed_manifest(&format!(
                "entries list {:?}",
                listed.name
            )));
        }
        if listed.sha256.len() != 64
            || !listed
                .sha256
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(malformed_manifest(&format!(
                "sha256 of {:?} is not 64 lowercase hex digits",
                listed.name
            )));
        }
    }
    let n_targets = manifest.targets.len() as u64;
    if n_targets > limits.max_targets {
        return Err(Error::TooMany {
            what: "targets".to_owned(),
            count: n_targets,
            limit: limits.max_targets,
        });
    }
    for pair in manifest.targets.windows(2) {
        if pair[0].name >= pair[1].name {
            return Err(malformed_manifest(
                "targets are not sorted by name, or repeat",
            ));
        }
    }
    let n_sites: u64 = manifest.targets.iter().map(|t| t.sites.len() as u64).sum();
    if n_sites > limits.max_sites {
        return Err(Error::TooMany {
            what: "patch sites".to_owned(),
            count: n_sites,
            limit: limits.max_sites,
        });
    }
    let n_relocations: u64 = manifest
        .targets
        .iter()
        .map(|t| t.relocations.len() as u64)
        .sum();
    if n_relocations > limits.max_relocations {
        return Err(Error::TooMany {
            what: "relocations".to_owned(),
            count: n_relocations,
            limit: limits.max_relocations,
        });
    }
    let n_unwind_entries = manifest
        .targets
        .iter()
        .filter_map(|t| t.unwind.map(|table| table.count))
        .fold(0u64, u64::saturating_add);
    if n_unwind_entries > limits.max_unwind_entries {
        return Err(Error::TooMany {
            what: "unwind entries".to_owned(),
            count: n_unwind_entries,
            limit: limits.max_unwind_entries,
        });
    }
    for target in &manifest.targets {
        check_target(target, entries)?;
    }
    Ok(())
}

fn check_target(target: &Target, entries: &BTreeMap<String, Vec<u8>>) -> Result<(), Error> {
    check_entry_name(&target.name)?;
    let bad_payload = |reason: String| Error::BadPayload {
        target: target.name.clone(),
        reason,
    };
    let payload: &[u8] = match &target.payload {
        Some(name) => {
            let data = entries
                .get(name)
                .ok_or_else(|| bad_payload(format!("entry {name:?} is not in the package")))?;
            if data.len() as u64 != target.payload_len {
                return Err(bad_payload(format!(
                    "entry {name:?} is {} bytes, payload_len says {}",
                    data.len(),
                    target.payload_len
                )));
            }
            data
        }
        None => {
            if target.payload_len != 0
                || !target.sites.is_empty()
                || !target.relocations.is_empty()
                || target.unwind.is_some()
            {
                return Err(bad_payload(
                    "no payload, yet a payload length, sites, relocations or an unwind table"
                        .to_owned(),
                ));
            }
            &[]
        }
    };
    let payload_len = target.payload_len;
    for pair in target.sites.windows(2) {
        if pair[0].baseline_rva >= pair[1].baseline_rva {
            return Err(malformed_manifest(&format!(
                "sites of {:?} are not sorted by baseline_rva, or repeat",
                target.name
            )));
        }
    }
    for site in &target.sites {
        let out_of_range = |reason: String| Error::SiteOutOfRange {
            target: target.name.clone(),
            function: site.function.clone(),
            reason,
        };
        let end = site.payload_offset.checked_add(site.payload_size);
        if site.payload_size == 0 || end.is_none_or(|end| end > payload_len) {
            return Err(out_of_range(format!(
                "new code [{:#x}, +{:#x}) is not inside the payload of {payload_len} bytes",
                site.payload_offset, site.payload_size
            )));
        }
        if site.redirect.original().len() != site.redirect.len() {
            return Err(out_of_range(format!(
                "the redirect writes {} bytes, original holds {}",
                site.redirect.len(),
                site.redirect.original().len()
            )));
        }
        if let Redirect::Padding { .. } = site.redirect
            && site.baseline_rva < 5
        {
            return Err(out_of_range(
                "no room for 5 bytes of padding before the entry".to_owned(),
            ));
        }
        if site.baseline_rva.checked_add(site.baseline_size).is_none() {
            return Err(out_of_range("baseline range overflows".to_owned()));
        }
    }
    for pair in target.relocations.windows(2) {
        // Sorted, and no field overlaps the next: two writes to one byte would make the result
        // depend on the order of resolution.
        if pair[0].offset.saturating_add(pair[0].kind.width()) > pair[1].offset {
            return Err(malformed_manifest(&format!(
                "relocations of {:?} are not sorted by offset, or overlap",
                target.name
            )));
        }
    }
    for relocation in &target.relocations {
        field_range(relocation, payload_len)?;
        if let crate::RelocationTarget::Payload { offset } = relocation.target
            && offset > payload_len
        {
            return Err(Error::RelocationTargetOutOfPayload {
                offset: relocation.offset,
                target_offset: offset,
                payload_len,
            });
        }
    }
    if let Some(table) = &target.unwind {
        crate::unwind::check_table(target, table, payload)?;
    }
    Ok(())
}

fn malformed_manifest(reason: &str) -> Error {
    Error::Malformed {
        what: MANIFEST_NAME.to_owned(),
        reason: reason.to_owned(),
    }
}
