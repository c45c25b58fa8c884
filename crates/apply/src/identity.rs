//! Which module of a process a target patches: the identity a package's target demands
//! (`WantedIdentity`, from the signed manifest) and the image a backend found with it
//! (`MappedImage`). Each backend matches only the file format of its OS.

use crate::bytes::{u16_at, u32_at};
use hotpatch_package::{TargetIdentity, VerifiedPackage};
use serde::{Deserialize, Serialize};

/// The header fields Windows keys a hotpatch on, read from the image mapped in the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeHeaders {
    pub time_date_stamp: u32,
    pub checksum: u32,
    pub size_of_image: u32,
}

/// What a target expects of the module it patches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WantedIdentity {
    /// SHA-256 of the file and, when the build had one, its GNU build-id.
    Elf {
        sha256: String,
        build_id: Option<String>,
    },
    /// SHA-256 of the file and the header fields of the mapped image.
    Pe { sha256: String, headers: PeHeaders },
}

impl WantedIdentity {
    /// The identity a manifest target demands.
    pub fn of(identity: &TargetIdentity) -> WantedIdentity {
        match identity {
            TargetIdentity::Elf { build_id, sha256 } => WantedIdentity::Elf {
                sha256: sha256.clone(),
                build_id: build_id.clone(),
            },
            TargetIdentity::Pe {
                time_date_stamp,
                checksum,
                size_of_image,
                sha256,
                ..
            } => WantedIdentity::Pe {
                sha256: sha256.clone(),
                headers: PeHeaders {
                    time_date_stamp: *time_date_stamp,
                    checksum: *checksum,
                    size_of_image: *size_of_image,
                },
            },
        }
    }

    /// Lowercase hex SHA-256 of the file.
    pub fn sha256(&self) -> &str {
        match self {
            WantedIdentity::Elf { sha256, .. } | WantedIdentity::Pe { sha256, .. } => sha256,
        }
    }
}

/// The identities of every target of `package`, by target index.
pub fn wanted_identities(package: &VerifiedPackage) -> Vec<(usize, WantedIdentity)> {
    package
        .manifest
        .targets
        .iter()
        .enumerate()
        .map(|(index, target)| (index, WantedIdentity::of(&target.identity)))
        .collect()
}

/// An image a process maps, found by identity, with the addresses it occupies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedImage {
    pub pid: i32,
    /// Where file offset 0 is mapped (the module base on Windows).
    pub start: u64,
    /// The end of the image's last mapping (base + SizeOfImage on Windows).
    pub end: u64,
    /// The path the OS shows for it.
    pub path: String,
    /// Lowercase hex SHA-256 of the file.
    pub sha256: String,
    /// The very file mapped, to read it again (`/proc/PID/map_files/...` on Linux, so a file
    /// replaced on disk since cannot stand in for it; the module path on Windows).
    pub file: String,
}

/// The identity fields of a PE32+ image from its first page as mapped: `None` when the bytes
/// are not a PE32+ header. Every offset is checked.
pub fn pe_headers(page: &[u8]) -> Option<PeHeaders> {
    if page.get(..2)? != b"MZ" {
        return None;
    }
    let pe = usize::try_from(u32_at(page, 0x3c)?).ok()?;
    if page.get(pe..pe.checked_add(4)?)? != b"PE\0\0" {
        return None;
    }
    let file_header = pe + 4;
    let optional = file_header + 20;
    // PE32+ optional header magic.
    if u16_at(page, optional)? != 0x20b {
        return None;
    }
    Some(PeHeaders {
        time_date_stamp: u32_at(page, file_header + 4)?,
        size_of_image: u32_at(page, optional + 56)?,
        checksum: u32_at(page, optional + 64)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_identity_fields_of_a_pe32_plus_header() {
        let mut page = vec![0u8; 512];
        page[..2].copy_from_slice(b"MZ");
        page[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        page[0x80..0x84].copy_from_slice(b"PE\0\0");
        page[0x88..0x8c].copy_from_slice(&0x1234_5678u32.to_le_bytes());
        page[0x98..0x9a].copy_from_slice(&0x20bu16.to_le_bytes());
        page[0x98 + 56..0x98 + 60].copy_from_slice(&0x9000u32.to_le_bytes());
        page[0x98 + 64..0x98 + 68].copy_from_slice(&0xabcdu32.to_le_bytes());
        assert_eq!(
            pe_headers(&page),
            Some(PeHeaders {
                time_date_stamp: 0x1234_5678,
                size_of_image: 0x9000,
                checksum: 0xabcd,
            })
        );
        // A PE32 (not PE32+) header, a bad offset and a short page yield nothing.
        let mut pe32 = page.clone();
        pe32[0x98..0x9a].copy_from_slice(&0x10bu16.to_le_bytes());
        assert_eq!(pe_headers(&pe32), None);
        let mut far = page.clone();
        far[0x3c..0x40].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(pe_headers(&far), None);
        assert_eq!(pe_headers(&page[..0x90]), None);
    }
}
