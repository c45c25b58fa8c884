//! What the applier checks of the mapped image file itself before it writes into a process,
//! beyond its identity: that it is x86-64 ELF (the payload and the redirects are x86-64
//! code), that every patch site and the bytes its redirect writes lie in an executable
//! segment, that every site is a function entry listed in the `.eh_frame_hdr` search table
//! (one sorted list of function starts that every x86-64 ELF carries for unwinding; no debug
//! information is read), and that every relocation into the baseline lands inside a segment.
//! A bounded reader: every offset is checked, at most 64 program headers and 16 MiB of table.

use crate::bytes::{u16_at, u32_at, u64_at};
pub use crate::layout::ImageLayout;
use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::FileExt;

const PT_LOAD: u32 = 1;
const PT_GNU_EH_FRAME: u32 = 0x6474_e550;
const PF_X: u32 = 1;
const EM_X86_64: u16 = 62;

/// Reads the layout of the ELF file `file`, or says what architecture it is instead.
pub fn read_layout(file: &File) -> Result<ImageLayout, String> {
    let mut header = [0u8; 64];
    file.read_exact_at(&mut header, 0)
        .map_err(|_| "shorter than an ELF header".to_owned())?;
    if &header[..4] != b"\x7fELF" {
        return Err("not ELF".to_owned());
    }
    let machine = u16_at(&header, 0x12).unwrap_or(0);
    if header[4] != 2 || header[5] != 1 || machine != EM_X86_64 {
        return Err(format!(
            "ELF class {}, data encoding {}, machine {machine}",
            if header[4] == 1 {
                "32-bit"
            } else {
                "not 64-bit"
            },
            header[5]
        ));
    }
    let phoff = u64_at(&header, 0x20).unwrap_or(0);
    let phentsize = u64::from(u16_at(&header, 0x36).unwrap_or(0));
    let phnum = u64::from(u16_at(&header, 0x38).unwrap_or(0)).min(64);
    let mut segments = Vec::new();
    let mut eh_frame_hdr = None;
    if phentsize >= 56 {
        for index in 0..phnum {
            let mut phdr = [0u8; 56];
            let Some(at) = index
                .checked_mul(phentsize)
                .and_then(|o| o.checked_add(phoff))
            else {
                break;
            };
            if file.read_exact_at(&mut phdr, at).is_err() {
                break;
            }
            let kind = u32_at(&phdr, 0).unwrap_or(0);
            let flags = u32_at(&phdr, 4).unwrap_or(0);
            let offset = u64_at(&phdr, 8).unwrap_or(0);
            let vaddr = u64_at(&phdr, 16).unwrap_or(0);
            let filesz = u64_at(&phdr, 32).unwrap_or(0);
            let memsz = u64_at(&phdr, 40).unwrap_or(0);
            match kind {
                PT_LOAD => {
                    if let Some(end) = vaddr.checked_add(memsz) {
                        segments.push((vaddr, end, flags & PF_X != 0));
                    }
                }
                PT_GNU_EH_FRAME => eh_frame_hdr = Some((offset, vaddr, filesz)),
                _ => {}
            }
        }
    }
    let function_starts = match eh_frame_hdr {
        None => Err("no PT_GNU_EH_FRAME segment"),
        Some((offset, vaddr, size)) => {
            let size = usize::try_from(size.min(16 << 20)).unwrap_or(0);
            let mut table = vec![0u8; size];
            match file.read_exact_at(&mut table, offset) {
                Ok(()) => parse_eh_frame_hdr(&table, vaddr),
                Err(_) => Err("PT_GNU_EH_FRAME lies outside the file"),
            }
        }
    };
    Ok(ImageLayout {
        segments,
        function_starts,
        unwound: None,
    })
}

/// The function starts of an `.eh_frame_hdr` at virtual address `vaddr`: version 1 with a
/// search table of `datarel | sdata4` pairs, as GNU ld and lld write it.
pub fn parse_eh_frame_hdr(bytes: &[u8], vaddr: u64) -> Result<BTreeSet<u64>, &'static str> {
    const DW_EH_PE_OMIT: u8 = 0xff;
    const DW_EH_PE_UDATA4: u8 = 0x03;
    const DW_EH_PE_DATAREL_SDATA4: u8 = 0x3b;
    let [version, eh_frame_ptr_enc, fde_count_enc, table_enc, ..] = *bytes else {
        return Err(".eh_frame_hdr is truncated");
    };
    if version != 1 {
        return Err(".eh_frame_hdr version is not 1");
    }
    if fde_count_enc == DW_EH_PE_OMIT || table_enc == DW_EH_PE_OMIT {
        return Err(".eh_frame_hdr has no search table");
    }
    if fde_count_enc != DW_EH_PE_UDATA4 || table_enc != DW_EH_PE_DATAREL_SDATA4 {
        return Err(".eh_frame_hdr search table has an encoding this applier does not read");
    }
    // eh_frame_ptr: 4 bytes in every encoding linkers use (pcrel or datarel sdata4/udata4).
    if eh_frame_ptr_enc & 0x0f != 0x0b && eh_frame_ptr_enc & 0x0f != 0x03 {
        return Err(".eh_frame_hdr eh_frame_ptr has an encoding this applier does not read");
    }
    let count = u32_at(bytes, 8).ok_or(".eh_frame_hdr is truncated")? as usize;
    let table = bytes
        .get(12..)
        .and_then(|rest| rest.get(..count.checked_mul(8)?))
        .ok_or(".eh_frame_hdr table is longer than its segment")?;
    let mut starts = BTreeSet::new();
    for pair in table.chunks_exact(8) {
        let relative = i32::from_le_bytes([pair[0], pair[1], pair[2], pair[3]]);
        let start = vaddr
            .checked_add_signed(i64::from(relative))
            .ok_or(".eh_frame_hdr entry overflows")?;
        starts.insert(start);
    }
    Ok(starts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(count: u32, pairs: &[(i32, i32)]) -> Vec<u8> {
        let mut bytes = vec![1, 0x1b, 0x03, 0x3b];
        bytes.extend_from_slice(&0x100i32.to_le_bytes());
        bytes.extend_from_slice(&count.to_le_bytes());
        for (start, fde) in pairs {
            bytes.extend_from_slice(&start.to_le_bytes());
            bytes.extend_from_slice(&fde.to_le_bytes());
        }
        bytes
    }

    #[test]
    fn reads_the_search_table_relative_to_the_header() {
        let starts =
            parse_eh_frame_hdr(&header(2, &[(-0x1000, 0x20), (-0x800, 0x40)]), 0x3000).unwrap();
        assert_eq!(starts.into_iter().collect::<Vec<_>>(), [0x2000, 0x2800]);
    }

    #[test]
    fn truncated_and_foreign_tables_are_refused_not_misread() {
        assert!(parse_eh_frame_hdr(&header(3, &[(0, 0)]), 0x3000).is_err());
        assert!(parse_eh_frame_hdr(&header(u32::MAX, &[]), 0x3000).is_err());
        assert!(parse_eh_frame_hdr(&[1, 0x1b], 0x3000).is_err());
        let mut other = header(1, &[(0, 0)]);
        other[3] = 0x0b;
        assert!(parse_eh_frame_hdr(&other, 0x3000).is_err());
    }

    #[test]
    fn the_running_test_binary_is_x86_64_with_a_function_table() {
        let exe = File::open(std::env::current_exe().unwrap()).unwrap();
        let layout = read_layout(&exe).unwrap();
        assert!(layout.segments.iter().any(|s| s.2));
        assert!(layout.function_starts.unwrap().len() > 100);
    }
}
