//! x64 unwind data in a payload: the layout of `RUNTIME_FUNCTION` and `UNWIND_INFO` (the one
//! reader of it the build side and the applier share), and the check that a target's function
//! table is something `RtlAddFunctionTable` can be given.
//!
//! Layout as in the Microsoft x64 exception-handling reference (`UNWIND_INFO`,
//! `RUNTIME_FUNCTION`): a 4-byte header (version and flags, prolog size, count of codes, frame
//! register and offset), the unwind codes (2 bytes each, the array padded to an even count),
//! then either a chained `RUNTIME_FUNCTION` (`UNW_FLAG_CHAININFO`) or a language handler's RVA
//! and its data (`UNW_FLAG_EHANDLER`, `UNW_FLAG_UHANDLER`).

use crate::Error;
use crate::manifest::{RUNTIME_FUNCTION_SIZE, Relocation, Target, UnwindTable};
use std::ops::Range;

/// The function has an exception handler (`UNW_FLAG_EHANDLER`).
pub const UNW_FLAG_EHANDLER: u8 = 0x1;
/// The function has a termination handler (`UNW_FLAG_UHANDLER`).
pub const UNW_FLAG_UHANDLER: u8 = 0x2;
/// The info is chained to a previous `RUNTIME_FUNCTION` (`UNW_FLAG_CHAININFO`).
pub const UNW_FLAG_CHAININFO: u8 = 0x4;

/// One x64 `RUNTIME_FUNCTION`: three little-endian u32 addresses relative to a base.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RuntimeFunction {
    pub begin: u32,
    pub end: u32,
    pub unwind_info: u32,
}

impl RuntimeFunction {
    /// Reads the entry at the start of `bytes`, `None` when fewer than 12 bytes are left.
    pub fn read(bytes: &[u8]) -> Option<RuntimeFunction> {
        let word = |i: usize| {
            bytes
                .get(i..i + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_le_bytes)
        };
        Some(RuntimeFunction {
            begin: word(0)?,
            end: word(4)?,
            unwind_info: word(8)?,
        })
    }

    pub fn to_bytes(self) -> [u8; RUNTIME_FUNCTION_SIZE as usize] {
        let mut bytes = [0; RUNTIME_FUNCTION_SIZE as usize];
        bytes[0..4].copy_from_slice(&self.begin.to_le_bytes());
        bytes[4..8].copy_from_slice(&self.end.to_le_bytes());
        bytes[8..12].copy_from_slice(&self.unwind_info.to_le_bytes());
        bytes
    }
}

/// What the fixed part of an `UNWIND_INFO` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnwindInfoLayout {
    pub version: u8,
    /// `UNW_FLAG_*` bits.
    pub flags: u8,
    pub prolog_size: u8,
    pub count_of_codes: u8,
    /// Bytes from the start of the info through the codes and, when chained, the chained entry;
    /// for a handler, through the handler's RVA (its data has a handler-defined length).
    pub len: u64,
    /// Where the chained entry starts, from the start of the info, and what it says.
    pub chained: Option<(u64, RuntimeFunction)>,
    /// The language handler's RVA (`UNW_FLAG_EHANDLER` or `UNW_FLAG_UHANDLER`).
    pub handler: Option<u32>,
}

/// Why bytes are not an `UNWIND_INFO` of the forms this format knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnwindInfoError {
    #[error("ends before its {what}")]
    Truncated { what: &'static str },
    #[error("has version {version}, not 1 or 2")]
    UnknownVersion { version: u8 },
    #[error("is chained and has a handler (flags {flags:#x})")]
    ChainedWithHandler { flags: u8 },
}

/// Reads the `UNWIND_INFO` at the start of `bytes`.
pub fn parse_unwind_info(bytes: &[u8]) -> Result<UnwindInfoLayout, UnwindInfoError> {
    let header = bytes
        .get(0..4)
        .ok_or(UnwindInfoError::Truncated { what: "header" })?;
    let version = header[0] & 0x7;
    let flags = header[0] >> 3;
    if !matches!(version, 1 | 2) {
        return Err(UnwindInfoError::UnknownVersion { version });
    }
    let count_of_codes = header[2];
    // The code array is padded to an even number of 2-byte slots.
    let after_codes = 4 + 2 * (u64::from(count_of_codes) + u64::from(count_of_codes & 1));
    if 4 + 2 * u64::from(count_of_codes) > bytes.len() as u64 {
        return Err(UnwindInfoError::Truncated {
            what: "unwind codes",
        });
    }
    let handler_flags = flags & (UNW_FLAG_EHANDLER | UNW_FLAG_UHANDLER);
    let mut layout = UnwindInfoLayout {
        version,
        flags,
        prolog_size: header[1],
        count_of_codes,
        len: 4 + 2 * u64::from(count_of_codes),
        chained: None,
        handler: None,
    };
    if flags & UNW_FLAG_CHAININFO != 0 {
        if handler_flags != 0 {
            return Err(UnwindInfoError::ChainedWithHandler { flags });
        }
        let chained = usize::try_from(after_codes)
            .ok()
            .and_then(|at| bytes.get(at..))
            .and_then(RuntimeFunction::read)
            .ok_or(UnwindInfoError::Truncated {
                what: "chained RUNTIME_FUNCTION",
            })?;
        layout.chained = Some((after_codes, chained));
        layout.len = after_codes + RUNTIME_FUNCTION_SIZE;
    } else if handler_flags != 0 {
        let handler = usize::try_from(after_codes)
            .ok()
            .and_then(|at| bytes.get(at..at + 4))
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or(UnwindInfoError::Truncated {
                what: "handler address",
            })?;
        layout.handler = Some(handler);
        layout.len = after_codes + 4;
    }
    Ok(layout)
}

/// Checks `table` of `target` against its payload: inside it and aligned, every entry a
/// non-empty range of the payload after the previous one, every `UNWIND_INFO` aligned inside
/// the payload, of version 1 or 2, without a language handler, chained only to an entry inside
/// the payload; and no relocation writes into any of it.
pub(crate) fn check_table(
    target: &Target,
    table: &UnwindTable,
    payload: &[u8],
) -> Result<(), Error> {
    let payload_len = payload.len() as u64;
    let table_range = table
        .count
        .checked_mul(RUNTIME_FUNCTION_SIZE)
        .and_then(|size| Some(table.offset..table.offset.checked_add(size)?))
        .filter(|range| table.count != 0 && range.end <= payload_len)
        .ok_or_else(|| Error::UnwindTableOutOfPayload {
            target: target.name.clone(),
            offset: table.offset,
            count: table.count,
            payload_len,
        })?;
    if !table.offset.is_multiple_of(4) {
        return Err(Error::UnwindTableMisaligned {
            target: target.name.clone(),
            offset: table.offset,
        });
    }
    let mut unwind_data = vec![table_range.clone()];
    let mut previous_end = 0u32;
    for index in 0..table.count {
        let at = table_range.start + index * RUNTIME_FUNCTION_SIZE;
        let entry = usize::try_from(at)
            .ok()
            .and_then(|at| payload.get(at..))
            .and_then(RuntimeFunction::read)
            .ok_or_else(|| Error::UnwindTableOutOfPayload {
                target: target.name.clone(),
                offset: table.offset,
                count: table.count,
                payload_len,
            })?;
        if entry.begin >= entry.end || u64::from(entry.end) > payload_len {
            return Err(Error::UnwindRangeOutOfPayload {
                target: target.name.clone(),
                index,
                begin: entry.begin,
                end: entry.end,
                payload_len,
            });
        }
        if index > 0 && entry.begin < previous_end {
            return Err(Error::UnwindTableUnsorted {
                target: target.name.clone(),
                index,
                begin: entry.begin,
            });
        }
        previous_end = entry.end;
        unwind_data.push(check_info(target, index, entry.unwind_info, payload)?);
    }
    check_not_relocated(target, &unwind_data, &target.relocations)
}

/// The `UNWIND_INFO` at `info` of entry `index`; returns the bytes it occupies.
fn check_info(target: &Target, index: u64, info: u32, payload: &[u8]) -> Result<Range<u64>, Error> {
    let payload_len = payload.len() as u64;
    let out_of_payload = || Error::UnwindInfoOutOfPayload {
        target: target.name.clone(),
        index,
        info,
        payload_len,
    };
    let bad = |reason: String| Error::BadUnwindInfo {
        target: target.name.clone(),
        index,
        info,
        reason,
    };
    if !info.is_multiple_of(4) {
        return Err(out_of_payload());
    }
    let bytes = usize::try_from(info)
        .ok()
        .and_then(|at| payload.get(at..))
        .filter(|bytes| !bytes.is_empty())
        .ok_or_else(out_of_payload)?;
    let layout = match parse_unwind_info(bytes) {
        Ok(layout) => layout,
        Err(UnwindInfoError::Truncated { .. }) => return Err(out_of_payload()),
        Err(error) => return Err(bad(error.to_string())),
    };
    if let Some(handler) = layout.handler {
        return Err(bad(format!(
            "names a language handler at {handler:#x}, which format 1 does not carry"
        )));
    }
    if let Some((_, chained)) = layout.chained
        && (chained.begin >= chained.end
            || u64::from(chained.end) > payload_len
            || !chained.unwind_info.is_multiple_of(4)
            || u64::from(chained.unwind_info) >= payload_len)
    {
        return Err(bad(format!(
            "is chained to [{:#x}, {:#x}) with info at {:#x}, not inside the payload",
            chained.begin, chained.end, chained.unwind_info
        )));
    }
    Ok(u64::from(info)..u64::from(info) + layout.len)
}

/// No relocation field overlaps any of `ranges` (relocations are sorted and do not overlap each
/// other, so their ends grow with their offsets).
fn check_not_relocated(
    target: &Target,
    ranges: &[Range<u64>],
    relocations: &[Relocation],
) -> Result<(), Error> {
    for range in ranges {
        let first_ending_after = relocations.partition_point(|relocation| {
            relocation.offset.saturating_add(relocation.kind.width()) <= range.start
        });
        if let Some(relocation) = relocations.get(first_ending_after)
            && relocation.offset < range.end
        {
            return Err(Error::UnwindDataRelocated {
                target: target.name.clone(),
                offset: relocation.offset,
            });
        }
    }
    Ok(())
}
