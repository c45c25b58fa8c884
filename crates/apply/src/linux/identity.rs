//! The identity of a file a process maps: SHA-256 of its bytes and its GNU build-id, read
//! through `/proc/PID/map_files` so that it is the file actually mapped, not whatever the path
//! names today. The build-id comes from a bounded reader of the ELF program headers and notes;
//! no debug-information reader is involved.

use crate::bytes::{u16_at, u32_at, u64_at};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;

/// What identifies the build of a mapped file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileIdentity {
    /// Lowercase hex SHA-256 of the whole file.
    pub sha256: String,
    /// Lowercase hex of the `NT_GNU_BUILD_ID` note, when the file is ELF and has one.
    pub build_id: Option<String>,
}

/// Reads the build-id of an ELF file; `None` when it is not a 64-bit little-endian ELF file or
/// has no build-id note. Every offset is checked; at most 64 program headers and 64 KiB of
/// notes are read.
pub fn build_id(file: &File) -> Option<String> {
    let mut header = [0u8; 64];
    file.read_exact_at(&mut header, 0).ok()?;
    // ELFCLASS64, ELFDATA2LSB.
    if &header[..4] != b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return None;
    }
    let phoff = u64_at(&header, 0x20)?;
    let phentsize = u64::from(u16_at(&header, 0x36)?);
    let phnum = u64::from(u16_at(&header, 0x38)?).min(64);
    if phentsize < 56 {
        return None;
    }
    for index in 0..phnum {
        let mut phdr = [0u8; 56];
        let at = phoff.checked_add(index.checked_mul(phentsize)?)?;
        file.read_exact_at(&mut phdr, at).ok()?;
        // PT_NOTE
        if u32_at(&phdr, 0)? != 4 {
            continue;
        }
        let offset = u64_at(&phdr, 8)?;
        let size = usize::try_from(u64_at(&phdr, 32)?.min(64 * 1024)).ok()?;
        let mut notes = vec![0u8; size];
        file.read_exact_at(&mut notes, offset).ok()?;
        if let Some(id) = find_build_id(&notes) {
            return Some(id);
        }
    }
    None
}

/// Walks a note segment for `NT_GNU_BUILD_ID` (type 3, name "GNU").
fn find_build_id(notes: &[u8]) -> Option<String> {
    let mut at = 0usize;
    while at.checked_add(12)? <= notes.len() {
        let namesz = usize::try_from(u32_at(notes, at)?).ok()?;
        let descsz = usize::try_from(u32_at(notes, at + 4)?).ok()?;
        let kind = u32_at(notes, at + 8)?;
        let name_start = at + 12;
        let desc_start = name_start.checked_add(namesz.checked_add(3)? & !3)?;
        let desc_end = desc_start.checked_add(descsz)?;
        let name = notes.get(name_start..name_start.checked_add(namesz)?)?;
        let desc = notes.get(desc_start..desc_end)?;
        if kind == 3 && name == b"GNU\0" {
            return Some(crate::error::hex(desc));
        }
        at = desc_start.checked_add(descsz.checked_add(3)? & !3)?;
    }
    None
}

/// Lowercase hex SHA-256 of everything `file` holds from its start.
pub fn sha256(file: &mut File) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(crate::error::hex(&hasher.finalize()))
}

/// The identity of the file at `path` (a `/proc/PID/map_files` entry or a plain path).
pub fn read(path: &str) -> std::io::Result<FileIdentity> {
    let mut file = File::open(path)?;
    let build_id = build_id(&file);
    let sha256 = sha256(&mut file)?;
    Ok(FileIdentity { sha256, build_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_gnu_build_id_note_among_others() {
        let mut notes = Vec::new();
        // An ABI tag note first.
        notes.extend_from_slice(&4u32.to_le_bytes());
        notes.extend_from_slice(&16u32.to_le_bytes());
        notes.extend_from_slice(&1u32.to_le_bytes());
        notes.extend_from_slice(b"GNU\0");
        notes.extend_from_slice(&[0; 16]);
        notes.extend_from_slice(&4u32.to_le_bytes());
        notes.extend_from_slice(&4u32.to_le_bytes());
        notes.extend_from_slice(&3u32.to_le_bytes());
        notes.extend_from_slice(b"GNU\0");
        notes.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(find_build_id(&notes).as_deref(), Some("deadbeef"));
        // Truncated and absurd sizes yield nothing instead of a panic.
        assert_eq!(find_build_id(&notes[..notes.len() - 2]), None);
        let mut huge = notes.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(find_build_id(&huge), None);
    }

    #[test]
    fn reads_the_build_id_of_the_running_test_binary_consistently() {
        let exe = std::env::current_exe().unwrap();
        let first = read(exe.to_str().unwrap()).unwrap();
        let second = read(exe.to_str().unwrap()).unwrap();
        assert_eq!(first, second);
        assert_eq!(first.sha256.len(), 64);
    }
}
