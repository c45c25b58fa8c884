//! Finding what a process maps: the modules that are package targets, recognized by the
//! header fields of the image as mapped (`TimeDateStamp`, `CheckSum`, `SizeOfImage`) and the
//! SHA-256 of the module's file, never by name; the processes that map one (`--all`); and the
//! payload allocations this applier left there, recognized by their marker.

use super::handle::Handle;
use super::process::Process;
use crate::bytes::u32_at;
use crate::error::Error;
use crate::identity::{MappedImage, WantedIdentity, pe_headers};
use crate::marker::{MAGIC, MAX_HEADER, Marker};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;
use std::os::windows::ffi::OsStringExt;
use windows_sys::Win32::Foundation::HMODULE;
use windows_sys::Win32::System::Diagnostics::ToolHelp::{
    CreateToolhelp32Snapshot, PROCESSENTRY32W, Process32FirstW, Process32NextW, TH32CS_SNAPPROCESS,
};
use windows_sys::Win32::System::Memory::PAGE_EXECUTE_READ;
use windows_sys::Win32::System::ProcessStatus::{
    K32EnumProcessModulesEx, K32GetModuleFileNameExW, LIST_MODULES_ALL,
};

/// At most this many modules of one process are looked at.
const MAX_MODULES: usize = 4096;

/// SHA-256 of module files already hashed in this run, by path, so that `--all` hashes each
/// distinct file once.
#[derive(Default)]
pub struct IdentityCache {
    hashes: BTreeMap<String, Option<String>>,
}

impl IdentityCache {
    fn sha256(&mut self, path: &str) -> Option<String> {
        self.hashes
            .entry(path.to_owned())
            .or_insert_with(|| sha256_of_file(path).ok())
            .clone()
    }
}

fn sha256_of_file(path: &str) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
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

/// The module handles (base addresses) of the process.
pub(crate) fn modules(process: &Process) -> Result<Vec<u64>, Error> {
    let mut handles: Vec<HMODULE> = vec![std::ptr::null_mut(); 256];
    loop {
        let mut needed = 0u32;
        let bytes = (handles.len() * std::mem::size_of::<HMODULE>()) as u32;
        // SAFETY: `handles` is live and `bytes` long; the OS fills it and says how many bytes
        // the full list needs.
        let ok = unsafe {
            K32EnumProcessModulesEx(
                process.handle().raw(),
                handles.as_mut_ptr(),
                bytes,
                &mut needed,
                LIST_MODULES_ALL,
            )
        };
        if ok == 0 {
            return Err(Error::os(
                process.pid(),
                "EnumProcessModulesEx",
                std::io::Error::last_os_error(),
            ));
        }
        let count = needed as usize / std::mem::size_of::<HMODULE>();
        if count <= handles.len() {
            handles.truncate(count);
            return Ok(handles.into_iter().map(|h| h as u64).collect());
        }
        if count > MAX_MODULES {
            handles.truncate(MAX_MODULES);
            return Ok(handles.into_iter().map(|h| h as u64).collect());
        }
        handles.resize(count, std::ptr::null_mut());
    }
}

/// The file a module was loaded from.
pub(crate) fn module_path(process: &Process, base: u64) -> Option<String> {
    let mut buffer = vec![0u16; 1024];
    // SAFETY: `buffer` is live and its length in u16 is passed.
    let len = unsafe {
        K32GetModuleFileNameExW(
            process.handle().raw(),
            base as HMODULE,
            buffer.as_mut_ptr(),
            buffer.len() as u32,
        )
    };
    if len == 0 {
        return None;
    }
    buffer.truncate(len as usize);
    OsString::from_wide(&buffer).into_string().ok()
}

/// For each wanted PE identity (by index), the module of the process that has it. The cheap
/// header fields, read from the image as mapped, rule out most modules before any file is
/// hashed.
pub fn find_images(
    process: &Process,
    wanted: &[WantedIdentity],
    cache: &mut IdentityCache,
) -> Result<BTreeMap<usize, MappedImage>, Error> {
    let mut found = BTreeMap::new();
    if !wanted
        .iter()
        .any(|w| matches!(w, WantedIdentity::Pe { .. }))
    {
        return Ok(found);
    }
    for base in modules(process)? {
        let Ok(page) = process.read_vec(base, 4096) else {
            continue;
        };
        let Some(headers) = pe_headers(&page) else {
            continue;
        };
        let candidates: Vec<usize> = wanted
            .iter()
            .enumerate()
            .filter(|(index, w)| {
                matches!(w, WantedIdentity::Pe { headers: h, .. } if *h == headers)
                    && !found.contains_key(index)
            })
            .map(|(index, _)| index)
            .collect();
        if candidates.is_empty() {
            continue;
        }
        let Some(path) = module_path(process, base) else {
            continue;
        };
        let Some(sha256) = cache.sha256(&path) else {
            continue;
        };
        for index in candidates {
            if wanted[index].sha256().eq_ignore_ascii_case(&sha256) {
                found.insert(
                    index,
                    MappedImage {
                        pid: process.pid(),
                        start: base,
                        end: base.saturating_add(u64::from(headers.size_of_image)),
                        path: path.clone(),
                        sha256: sha256.clone(),
                        file: path.clone(),
                    },
                );
            }
        }
    }
    Ok(found)
}

/// Every process id in a Toolhelp32 snapshot, except this process and the idle process.
pub fn all_pids() -> Vec<i32> {
    let own = std::process::id();
    // SAFETY: plain values in, a handle or INVALID_HANDLE_VALUE out.
    let raw = unsafe { CreateToolhelp32Snapshot(TH32CS_SNAPPROCESS, 0) };
    let Some(snapshot) = Handle::new(raw) else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    // SAFETY: PROCESSENTRY32W is plain data; all zeroes is valid once dwSize is set.
    let mut entry: PROCESSENTRY32W = unsafe { std::mem::zeroed() };
    entry.dwSize = std::mem::size_of::<PROCESSENTRY32W>() as u32;
    // SAFETY: `entry` is live with its size set, as the call requires.
    let mut more = unsafe { Process32FirstW(snapshot.raw(), &mut entry) } != 0;
    while more {
        if entry.th32ProcessID != own && entry.th32ProcessID != 0 {
            pids.push(entry.th32ProcessID as i32);
        }
        // SAFETY: as above.
        more = unsafe { Process32NextW(snapshot.raw(), &mut entry) } != 0;
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// The markers at the base of private, committed, execute-read allocations of the process
/// (payloads are allocated with `VirtualAllocEx`, so the marker is the allocation's first
/// byte).
pub fn markers(process: &Process) -> Result<Vec<Marker>, Error> {
    let mut markers = Vec::new();
    for (base, end) in process.tagged_allocations(PAGE_EXECUTE_READ, &MAGIC) {
        let available = (end - base).min(MAX_HEADER as u64) as usize;
        let header = process.read_vec(base, available.min(64 * 1024))?;
        let header = match u32_at(&header, 20).map(|len| len as usize) {
            Some(len) if len > header.len() && len <= available => process.read_vec(base, len)?,
            _ => header,
        };
        match Marker::decode(&header, base) {
            Ok(Some(marker)) => markers.push(marker),
            Ok(None) => {}
            Err(what) => {
                return Err(Error::Marker {
                    pid: process.pid(),
                    address: base,
                    what,
                });
            }
        }
    }
    markers.sort_by_key(|m| (m.target.clone(), m.sequence, m.address));
    Ok(markers)
}
