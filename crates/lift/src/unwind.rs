//! Unwind data for a PE payload: the fixed build's `.pdata` entries that cover each copied
//! function, with their `UNWIND_INFO` copied into the payload and the function table rebuilt
//! with payload offsets, so that the applier can register it (`RtlAddFunctionTable`) and an
//! exception raised in a callee unwinds through a patched frame.
//!
//! An `UNWIND_INFO` describes the prolog relative to the function's start and holds no address
//! unless it is chained (a `RUNTIME_FUNCTION` of the primary entry, rebased here when that entry
//! covers copied code) or names a language handler. A handler and its data (scope tables, C++
//! EH tables) hold image-relative addresses of the fixed build that format 1 does not re-target,
//! so a function with one is refused.
//!
//! ELF payloads carry no unwind data (no `.eh_frame` fragment, `docs/decisions.md`): in a
//! binary that links the C++ exception runtime, a copied function that calls anything is refused,
//! because a throw below it would find no FDE for its frame and end the process
//! (`std::terminate`).

use crate::{Layout, Unliftable};
use hotpatch_diff::Instruction;
use hotpatch_diff::code::Flow;
use hotpatch_image::{Format, Image};
use hotpatch_package::UnwindTable;
use hotpatch_package::unwind::{RuntimeFunction, UnwindInfoError, parse_unwind_info};
use std::collections::BTreeMap;

/// The longest chain of `UNWIND_INFO`s followed; compilers emit one or two links.
const MAX_CHAIN: usize = 32;

/// Alignment of the function table and of each `UNWIND_INFO` (a DWORD, as in an image).
const UNWIND_ALIGN: u64 = 4;

/// Why a function's unwind data cannot travel with its code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnwindProblem {
    #[error(
        "it names the language handler {handler} (UNW_FLAG_EHANDLER/UHANDLER), whose address and data hold image-relative addresses of the fixed build that the package format does not re-target"
    )]
    LanguageHandler { handler: String },
    #[error("the .pdata entry [{begin:#x}, {end:#x}) starts before the function")]
    EntryStartsBeforeFunction { begin: u64, end: u64 },
    #[error(
        "it is chained to the .pdata entry [{begin:#x}, {end:#x}), which is not inside copied code"
    )]
    ChainOutsideCopiedCode { begin: u64, end: u64 },
    #[error("it {reason}")]
    Malformed { reason: UnwindInfoError },
    #[error("it is not in the file")]
    NotInFile,
    #[error("its chain of UNWIND_INFOs is longer than {MAX_CHAIN} links")]
    ChainTooLong,

    #[error("the payload grew past 4 GiB, beyond a RUNTIME_FUNCTION's reach")]
    PayloadTooLarge,
}

/// Symbols whose presence (imported or defined) shows that C++ exceptions unwind through the
/// binary's frames.
const ELF_EXCEPTION_RUNTIME: &[&str] = &["__cxa_throw", "_Unwind_RaiseException", "__cxa_rethrow"];

/// ELF: refuses each copied function that makes a call in a binary that can throw C++
/// exceptions. `carried` is the fixed index, typed code and baseline index (`None` when added)
/// of each copied function.
pub(crate) fn refuse_elf_crossings(
    fixed: &Image<'_>,
    carried: &[(usize, &[Instruction], Option<usize>)],
) -> Vec<Unliftable> {
    if fixed.format != Format::Elf {
        return Vec::new();
    }
    let runtime = ELF_EXCEPTION_RUNTIME.iter().find(|wanted| {
        fixed.imports.iter().any(|import| import.name == **wanted)
            || fixed
                .functions
                .iter()
                .any(|function| function.name == **wanted)
    });
    let Some(runtime) = runtime else {
        return Vec::new();
    };
    carried
        .iter()
        .filter(|(_, code, _)| {
            code.iter()
                .any(|instruction| matches!(instruction.flow, Flow::Call | Flow::IndirectCall))
        })
        .filter_map(|(index, _, baseline_index)| {
            Some((*index, fixed.functions.get(*index)?, *baseline_index))
        })
        .map(|(fixed_index, function, baseline_index)| {
            Unliftable::ExceptionsCrossWithoutUnwindData {
                function: function.display_name.clone(),
                fixed_index,
                baseline_index,
                runtime: (*runtime).to_owned(),
            }
        })
        .collect()
}

/// One copied function: its fixed-build range and where its code starts in the payload.
struct Copied<'a> {
    name: &'a str,
    fixed_index: usize,
    baseline_index: Option<usize>,
    rva: u64,
    end: u64,
    offset: u64,
}

/// Appends the `UNWIND_INFO` of every `.pdata` entry covering a copied function, then the
/// function table, to `layout`; returns where the table is, `None` when no copied function has
/// an entry (leaf functions need none) or the image is not PE.
pub(crate) fn place_unwind(
    fixed: &Image<'_>,
    layout: &mut Layout,
    baseline_of: &BTreeMap<usize, Option<usize>>,
) -> Result<Option<UnwindTable>, Vec<Unliftable>> {
    if fixed.format != Format::Pe {
        return Ok(None);
    }
    let mut copied: Vec<Copied<'_>> = layout
        .function_offsets
        .iter()
        .filter_map(|(&index, &offset)| {
            let function = fixed.functions.get(index)?;
            Some(Copied {
                name: &function.display_name,
                fixed_index: index,
                baseline_index: baseline_of.get(&index).copied().flatten(),
                rva: function.rva,
                end: function.end(),
                offset,
            })
        })
        .collect();
    copied.sort_by_key(|c| c.rva);
    let containing = |begin: u64, end: u64| {
        copied
            .iter()
            .find(|c| c.rva <= begin && begin < c.end && begin < end)
    };
    let problem = |function: &Copied<'_>, info: u64, problem: UnwindProblem| Unliftable::Unwind {
        function: function.name.to_owned(),
        fixed_index: function.fixed_index,
        baseline_index: function.baseline_index,
        unwind_info_rva: info,
        problem,
    };

    // Which entries travel, and every UNWIND_INFO they reach (through chains), by fixed RVA.
    let mut problems = Vec::new();
    let mut entries = Vec::new();
    let mut infos: BTreeMap<u64, InfoCopy<'_>> = BTreeMap::new();
    for (position, function) in copied.iter().enumerate() {
        for entry in fixed
            .unwind
            .iter()
            .filter(|e| e.begin < function.end && e.end > function.rva)
        {
            // An entry may reach past the function's end: clang places a function's jump
            // tables after its code inside the same range. The payload copies only the code
            // (tables travel apart), so the entry is clipped to it below; one that starts
            // before the function would describe code the payload does not hold.
            if entry.begin < function.rva {
                problems.push(problem(
                    function,
                    entry.info,
                    UnwindProblem::EntryStartsBeforeFunction {
                        begin: entry.begin,
                        end: entry.end,
                    },
                ));
                continue;
            }
            entries.push((function, entry));
            // Follow the chain: each chained entry must cover copied code, and its info travels.
            let mut info_rva = entry.info;
            let mut depth = 0;
            while !infos.contains_key(&info_rva) {
                let info = match read_info(fixed, info_rva, position) {
                    Ok(info) => info,
                    Err(why) => {
                        problems.push(problem(function, info_rva, why));
                        break;
                    }
                };
                if let Some(handler) = info.handler {
                    problems.push(problem(
                        function,
                        info_rva,
                        UnwindProblem::LanguageHandler {
                            handler: handler_name(fixed, handler),
                        },
                    ));
                    break;
                }
                let chained = info.chained;
                infos.insert(info_rva, info);
                let Some((_, chained)) = chained else { break };
                let (begin, end) = (u64::from(chained.begin), u64::from(chained.end));
                if containing(begin, end).is_none() {
                    problems.push(problem(
                        function,
                        info_rva,
                        UnwindProblem::ChainOutsideCopiedCode { begin, end },
                    ));
                    break;
                }
                // Chains are a few links long; a cycle ends at an info already copied, and an
                // absurd length is refused rather than left half-rebased.
                depth += 1;
                if depth > MAX_CHAIN {
                    problems.push(problem(function, info_rva, UnwindProblem::ChainTooLong));
                    break;
                }
                info_rva = u64::from(chained.unwind_info);
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    if entries.is_empty() {
        return Ok(None);
    }

    // Place every info, then rebase the chained entries inside the copies.
    let to_u32 = |value: u64, function: &Copied<'_>, info: u64| {
        u32::try_from(value)
            .map_err(|_| vec![problem(function, info, UnwindProblem::PayloadTooLarge)])
    };
    let mut info_offsets = BTreeMap::new();
    for (&rva, info) in &infos {
        info_offsets.insert(rva, layout.place(info.bytes, UNWIND_ALIGN));
    }
    for (&rva, info) in &infos {
        let Some((at, chained)) = info.chained else {
            continue;
        };
        let (begin, end) = (u64::from(chained.begin), u64::from(chained.end));
        // The first pass copied every info a chain reaches and checked that its code is copied.
        let (Some(function), Some(info_offset)) = (
            containing(begin, end),
            info_offsets.get(&u64::from(chained.unwind_info)),
        ) else {
            return Err(vec![problem(
                &copied[info.owner],
                rva,
                UnwindProblem::ChainTooLong,
            )]);
        };
        let rebased = RuntimeFunction {
            begin: to_u32(function.offset + (begin - function.rva), function, rva)?,
            end: to_u32(
                function.offset + (end.min(function.end) - function.rva),
                function,
                rva,
            )?,
            unwind_info: to_u32(*info_offset, function, rva)?,
        };
        let start = info_offsets[&rva] + at;
        if let Some(slot) = usize::try_from(start)
            .ok()
            .and_then(|start| layout.bytes.get_mut(start..start + 12))
        {
            slot.copy_from_slice(&rebased.to_bytes());
        }
    }

    let mut table = Vec::new();
    for (function, entry) in &entries {
        let Some(&info_offset) = info_offsets.get(&entry.info) else {
            continue;
        };
        table.push(RuntimeFunction {
            begin: to_u32(
                function.offset + (entry.begin - function.rva),
                function,
                entry.info,
            )?,
            end: to_u32(
                function.offset + (entry.end.min(function.end) - function.rva),
                function,
                entry.info,
            )?,
            unwind_info: to_u32(info_offset, function, entry.info)?,
        });
    }
    table.sort();
    table.dedup();
    let bytes: Vec<u8> = table.iter().flat_map(|entry| entry.to_bytes()).collect();
    let offset = layout.place(&bytes, UNWIND_ALIGN);
    Ok(Some(UnwindTable {
        offset,
        count: table.len() as u64,
    }))
}

/// The bytes of one `UNWIND_INFO` to copy and what they say.
struct InfoCopy<'data> {
    /// The position (in the copied functions) of the one whose entry reached this info first.
    owner: usize,
    bytes: &'data [u8],
    chained: Option<(u64, RuntimeFunction)>,
    handler: Option<u32>,
}

fn read_info<'a>(
    fixed: &'a Image<'_>,
    rva: u64,
    owner: usize,
) -> Result<InfoCopy<'a>, UnwindProblem> {
    let header = fixed.bytes_at(rva, 4).ok_or(UnwindProblem::NotInFile)?;
    let count = u64::from(header[2]);
    // The longest form: header, codes padded to an even count, a chained RUNTIME_FUNCTION.
    // Near the end of a section only the shorter forms may be there.
    let longest = 4 + 2 * (count + (count & 1)) + 12;
    let bytes = (4..=longest)
        .rev()
        .find_map(|len| fixed.bytes_at(rva, len))
        .ok_or(UnwindProblem::NotInFile)?;
    let layout = parse_unwind_info(bytes).map_err(|reason| UnwindProblem::Malformed { reason })?;
    let len = usize::try_from(layout.len).map_err(|_| UnwindProblem::NotInFile)?;
    Ok(InfoCopy {
        owner,
        bytes: bytes.get(..len).ok_or(UnwindProblem::NotInFile)?,
        chained: layout.chained,
        handler: layout.handler,
    })
}

/// The readable name of the handler at `rva` in the fixed build: a function, or the import an
/// import thunk there (`jmp [rip+slot]`) jumps to; else the address.
fn handler_name(fixed: &Image<'_>, rva: u32) -> String {
    let rva = u64::from(rva);
    if let Some(function) = fixed.functions.iter().find(|f| f.rva == rva) {
        return function.display_name.clone();
    }
    let import = fixed
        .bytes_at(rva, 6)
        .filter(|bytes| bytes[0] == 0xff && bytes[1] == 0x25)
        .map(|bytes| i32::from_le_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]))
        .and_then(|disp| (rva + 6).checked_add_signed(i64::from(disp)))
        .and_then(|slot| {
            fixed
                .imports
                .iter()
                .find(|import| import.slot_rva == Some(slot))
        });
    match import {
        Some(import) => format!(
            "{} (imported from {}, thunk at {rva:#x})",
            import.name, import.library
        ),
        None => format!("at {rva:#x}"),
    }
}
