//! Finding what a process maps: the images of package targets, recognized by file identity
//! (SHA-256 and build-id of the file actually mapped, read through `/proc/PID/map_files`),
//! never by name; and the payload mappings this applier left there, recognized by their
//! marker.

use super::identity::{self, FileIdentity};
use super::maps::{self, Mapping};
use super::process::Process;
use crate::error::Error;
use crate::identity::{MappedImage, WantedIdentity};
use crate::marker::{MAGIC, MAX_HEADER, Marker};
use std::collections::BTreeMap;

/// Whether a file found in a process has the identity a target wants (ELF targets only).
fn matches(wanted: &WantedIdentity, found: &FileIdentity) -> bool {
    let WantedIdentity::Elf { sha256, build_id } = wanted else {
        return false;
    };
    sha256.eq_ignore_ascii_case(&found.sha256)
        && build_id.as_ref().is_none_or(|id| {
            found
                .build_id
                .as_ref()
                .is_some_and(|f| f.eq_ignore_ascii_case(id))
        })
}

/// The build-id a wanted ELF identity names (`None` for PE or no build-id).
fn wanted_build_id(wanted: &WantedIdentity) -> Option<&String> {
    match wanted {
        WantedIdentity::Elf { build_id, .. } => build_id.as_ref(),
        WantedIdentity::Pe { .. } => None,
    }
}

/// File identities already computed in this run, by device and inode, so that `--all` hashes
/// each distinct file once.
#[derive(Default)]
pub struct IdentityCache {
    build_ids: BTreeMap<(String, u64), Option<String>>,
    identities: BTreeMap<(String, u64), Option<FileIdentity>>,
}

impl IdentityCache {
    fn build_id(&mut self, pid: i32, mapping: &Mapping) -> Option<String> {
        let key = (mapping.device.clone(), mapping.inode);
        self.build_ids
            .entry(key)
            .or_insert_with(|| {
                let file = std::fs::File::open(mapping.map_files_path(pid)).ok()?;
                identity::build_id(&file)
            })
            .clone()
    }

    fn identity(&mut self, pid: i32, mapping: &Mapping) -> Option<FileIdentity> {
        let key = (mapping.device.clone(), mapping.inode);
        self.identities
            .entry(key)
            .or_insert_with(|| identity::read(&mapping.map_files_path(pid)).ok())
            .clone()
    }
}

/// For each wanted identity (by index), the image of the process that has it.
pub fn find_images(
    process: &Process,
    wanted: &[WantedIdentity],
    cache: &mut IdentityCache,
) -> Result<BTreeMap<usize, MappedImage>, Error> {
    let pid = process.pid();
    let maps = &process.maps;
    let mut found = BTreeMap::new();
    if !wanted
        .iter()
        .any(|w| matches!(w, WantedIdentity::Elf { .. }))
    {
        return Ok(found);
    }
    let need_hash_of_all = wanted
        .iter()
        .any(|w| matches!(w, WantedIdentity::Elf { build_id: None, .. }));
    for mapping in maps.iter().filter(|m| m.offset == 0 && m.is_file()) {
        // The cheap build-id read rules out most files before any is hashed.
        if !need_hash_of_all {
            let Some(build_id) = cache.build_id(pid, mapping) else {
                continue;
            };
            if !wanted
                .iter()
                .any(|w| wanted_build_id(w).is_some_and(|id| id.eq_ignore_ascii_case(&build_id)))
            {
                continue;
            }
        }
        let Some(identity) = cache.identity(pid, mapping) else {
            continue;
        };
        for (index, want) in wanted.iter().enumerate() {
            if matches(want, &identity) && !found.contains_key(&index) {
                let end = maps
                    .iter()
                    .filter(|m| {
                        m.device == mapping.device
                            && m.inode == mapping.inode
                            && m.start >= mapping.start
                    })
                    .map(|m| m.end)
                    .max()
                    .unwrap_or(mapping.end);
                found.insert(
                    index,
                    MappedImage {
                        pid,
                        start: mapping.start,
                        end,
                        path: mapping.path.clone().unwrap_or_default(),
                        sha256: identity.sha256.clone(),
                        file: mapping.map_files_path(pid),
                    },
                );
            }
        }
    }
    Ok(found)
}

/// Every process id under `/proc`, except this process.
pub fn all_pids() -> Vec<i32> {
    let own = super::ptrace::own_pid();
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .filter(|&pid| pid != own)
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    pids
}

/// How many pages of one anonymous executable mapping are searched for markers.
const MARKER_SCAN_PAGES: u64 = 4096;

/// The markers in anonymous executable mappings of the process. Each page start is checked
/// (the kernel may merge a payload mapping with a neighbour), bounded per mapping.
pub fn markers(process: &Process) -> Result<Vec<Marker>, Error> {
    let memory = &process.memory;
    let mut markers = Vec::new();
    for mapping in process
        .maps
        .iter()
        .filter(|m| m.execute && m.read && m.path.is_none())
    {
        let pages = ((mapping.end - mapping.start) / maps::PAGE).min(MARKER_SCAN_PAGES);
        for page in 0..pages {
            let address = mapping.start + page * maps::PAGE;
            let mut magic = [0u8; 16];
            if memory.read(address, &mut magic).is_err() || magic != MAGIC {
                continue;
            }
            let available = (mapping.end - address).min(MAX_HEADER as u64) as usize;
            let header = memory.read_vec(address, available.min(64 * 1024))?;
            let header = if header.len() >= 24 {
                let mut len = [0u8; 4];
                len.copy_from_slice(&header[20..24]);
                let len = u32::from_le_bytes(len) as usize;
                if len > header.len() && len <= available {
                    memory.read_vec(address, len)?
                } else {
                    header
                }
            } else {
                header
            };
            match Marker::decode(&header, address) {
                Ok(Some(marker)) => markers.push(marker),
                Ok(None) => {}
                Err(what) => {
                    return Err(Error::Marker {
                        pid: memory.pid(),
                        address,
                        what,
                    });
                }
            }
        }
    }
    markers.sort_by_key(|m| (m.target.clone(), m.sequence, m.address));
    Ok(markers)
}
