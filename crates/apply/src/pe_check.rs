//! The PE counterpart of `linux::elf_check`: a bounded reader of a PE image file's headers
//! that finds its machine, its sections and the function starts of its `.pdata` exception
//! table, for `layout::check_target`. x64 only (`IMAGE_FILE_MACHINE_AMD64`, PE32+). Every
//! offset is checked; at most 96 sections, 16 MiB of exception table and 64 MiB of unwind data
//! are read. OS-neutral, so the Linux tests run it on the PE fixtures; the Windows backend
//! runs it on the module file of the target before it writes into a process.

use crate::bytes::{u16_at, u32_at};
use crate::layout::ImageLayout;
use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom};

const MACHINE_AMD64: u16 = 0x8664;
const PE32_PLUS: u16 = 0x20b;
const SCN_CNT_CODE: u32 = 0x20;
const SCN_MEM_EXECUTE: u32 = 0x2000_0000;
const EXCEPTION_DIRECTORY: u64 = 3;
const UNW_FLAG_CHAININFO: u8 = 0x4;
const MAX_SECTIONS: u16 = 96;
const MAX_TABLE: u32 = 16 << 20;
const MAX_UNWIND_SECTION: u32 = 64 << 20;

/// One section header: where it is in memory and in the file.
#[derive(Debug, Clone, Copy)]
struct Section {
    rva: u64,
    virtual_size: u64,
    raw_offset: u64,
    raw_size: u64,
    executable: bool,
}

/// Reads the layout of the PE image in `file`, or says what it is instead (not PE, another
/// machine, PE32).
pub fn read_layout<F: Read + Seek>(file: &mut F) -> Result<ImageLayout, String> {
    let mut dos = [0u8; 64];
    read_at(file, 0, &mut dos).map_err(|_| "shorter than a DOS header".to_owned())?;
    if &dos[..2] != b"MZ" {
        return Err("not PE (no MZ header)".to_owned());
    }
    let pe = u64::from(u32_at(&dos, 0x3c).unwrap_or(0));
    let mut coff = [0u8; 24];
    read_at(file, pe, &mut coff).map_err(|_| "PE header beyond the file".to_owned())?;
    if &coff[..4] != b"PE\0\0" {
        return Err("not PE (no PE signature)".to_owned());
    }
    let machine = u16_at(&coff, 4).unwrap_or(0);
    if machine != MACHINE_AMD64 {
        return Err(format!("PE machine {machine:#06x}, not x86-64 (0x8664)"));
    }
    let sections = u16_at(&coff, 6).unwrap_or(0).min(MAX_SECTIONS);
    let optional_size = u64::from(u16_at(&coff, 20).unwrap_or(0));
    let optional_at = pe + 24;
    let mut optional = vec![0u8; usize::try_from(optional_size.min(4096)).unwrap_or(0)];
    read_at(file, optional_at, &mut optional)
        .map_err(|_| "optional header beyond the file".to_owned())?;
    if u16_at(&optional, 0) != Some(PE32_PLUS) {
        return Err("PE32, not PE32+ (64-bit)".to_owned());
    }
    let directories = u64::from(u32_at(&optional, 108).unwrap_or(0));
    let exception = (EXCEPTION_DIRECTORY < directories)
        .then(|| {
            let at = usize::try_from(112 + EXCEPTION_DIRECTORY * 8).ok()?;
            Some((u32_at(&optional, at)?, u32_at(&optional, at + 4)?))
        })
        .flatten()
        .filter(|&(rva, size)| rva != 0 && size != 0);

    let mut table = Vec::with_capacity(usize::from(sections));
    for index in 0..u64::from(sections) {
        let mut header = [0u8; 40];
        if read_at(file, optional_at + optional_size + index * 40, &mut header).is_err() {
            break;
        }
        let characteristics = u32_at(&header, 36).unwrap_or(0);
        let raw_size = u64::from(u32_at(&header, 16).unwrap_or(0));
        let virtual_size = match u64::from(u32_at(&header, 8).unwrap_or(0)) {
            0 => raw_size,
            size => size,
        };
        table.push(Section {
            rva: u64::from(u32_at(&header, 12).unwrap_or(0)),
            virtual_size,
            raw_offset: u64::from(u32_at(&header, 20).unwrap_or(0)),
            raw_size,
            executable: characteristics & (SCN_MEM_EXECUTE | SCN_CNT_CODE) != 0,
        });
    }
    let segments = table
        .iter()
        .map(|s| (s.rva, s.rva.saturating_add(s.virtual_size), s.executable))
        .collect();
    let (function_starts, unwound) = match exception {
        None => (Err("no exception directory (.pdata)"), None),
        Some((rva, size)) => match read_exception_table(file, &table, rva, size) {
            Ok(table) => (Ok(table.starts), Some(table.ranges)),
            Err(what) => (Err(what), None),
        },
    };
    Ok(ImageLayout {
        segments,
        function_starts,
        unwound,
    })
}

/// What `.pdata` says: the starts of the functions it describes (entries whose unwind
/// information is not chained to another entry's: a chained entry covers a later part of a
/// function) and the `[begin, end)` of every entry, sorted.
struct ExceptionTable {
    starts: BTreeSet<u64>,
    ranges: Vec<(u64, u64)>,
}

fn read_exception_table<F: Read + Seek>(
    file: &mut F,
    sections: &[Section],
    rva: u32,
    size: u32,
) -> Result<ExceptionTable, &'static str> {
    let size = size.min(MAX_TABLE);
    let bytes = read_rva(file, sections, u64::from(rva), u64::from(size))
        .ok_or("the exception directory lies outside the file's sections")?;
    let mut unwind_data: Option<(Section, Vec<u8>)> = None;
    let mut starts = BTreeSet::new();
    let mut ranges = Vec::with_capacity(bytes.len() / 12);
    for entry in bytes.chunks_exact(12) {
        let begin = u64::from(u32_at(entry, 0).unwrap_or(0));
        let end = u64::from(u32_at(entry, 4).unwrap_or(0));
        let unwind = u64::from(u32_at(entry, 8).unwrap_or(0));
        if end <= begin {
            return Err("an exception table entry ends before it begins");
        }
        ranges.push((begin, end));
        // An odd UnwindData points at another RUNTIME_FUNCTION: a part of that function.
        if unwind & 1 != 0 {
            continue;
        }
        // The flags of the UNWIND_INFO: the high five bits of its first byte.
        let cached = unwind_data.as_ref().is_some_and(|(s, _)| {
            s.rva <= unwind && unwind < s.rva + s.raw_size.min(s.virtual_size)
        });
        if !cached {
            let section = sections
                .iter()
                .find(|s| s.rva <= unwind && unwind < s.rva.saturating_add(s.virtual_size))
                .copied()
                .ok_or("unwind information outside the file's sections")?;
            let len = section.raw_size.min(section.virtual_size);
            if len > u64::from(MAX_UNWIND_SECTION) {
                return Err("the section holding unwind information is larger than 64 MiB");
            }
            let data = read_rva(file, sections, section.rva, len)
                .ok_or("unwind section beyond the file")?;
            unwind_data = Some((section, data));
        }
        let (section, data) = unwind_data.as_ref().ok_or("unwind information unread")?;
        let flags = usize::try_from(unwind - section.rva)
            .ok()
            .and_then(|at| data.get(at))
            .map(|byte| byte >> 3)
            .ok_or("unwind information beyond its section's raw data")?;
        if flags & UNW_FLAG_CHAININFO == 0 {
            starts.insert(begin);
        }
    }
    ranges.sort_unstable();
    Ok(ExceptionTable { starts, ranges })
}

/// `len` bytes at `rva`, from the section whose raw data holds them.
fn read_rva<F: Read + Seek>(
    file: &mut F,
    sections: &[Section],
    rva: u64,
    len: u64,
) -> Option<Vec<u8>> {
    let end = rva.checked_add(len)?;
    let section = sections
        .iter()
        .find(|s| s.rva <= rva && end <= s.rva.saturating_add(s.raw_size))?;
    let mut bytes = vec![0u8; usize::try_from(len).ok()?];
    read_at(
        file,
        section.raw_offset.checked_add(rva - section.rva)?,
        &mut bytes,
    )
    .ok()?;
    Some(bytes)
}

fn read_at<F: Read + Seek>(file: &mut F, offset: u64, buffer: &mut [u8]) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buffer)
}
