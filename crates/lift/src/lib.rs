//! `hotpatch-lift`: turns the changed and added functions of a fixed build into a payload for the
//! running baseline: the fixed build's code, the read-only data it needs that the baseline does
//! not have (new strings, changed constants, jump tables rewritten for their new place), a
//! relocation list that re-targets every other reference into the *baseline* image (matched
//! functions, the original globals, import slots and stubs), and one patch site per replaced
//! function.
//!
//! It works from the diff's typed references only. What it cannot re-target exactly is an
//! [`Unliftable`] reason, which makes the binary reboot-required (rule HP1501); it never emits a
//! payload that might be wrong.

mod baseline;
mod cold;
mod retarget;
mod unwind;

use baseline::Baseline;
use hotpatch_diff::{Diff, Instruction};
use hotpatch_image::{Format, Function, Image};
use hotpatch_package::{PatchSite, Redirect, Relocation, TargetIdentity, UnwindTable};
use std::collections::BTreeMap;
pub use unwind::UnwindProblem;

/// The length of the `jmp rel32` a redirect writes.
const JUMP_LEN: u64 = 5;
/// The length of the `jmp rel8` written at the entry of a function shorter than `JUMP_LEN`.
const SHORT_JUMP_LEN: u64 = 2;
/// Alignment of each function and table in the payload.
const CODE_ALIGN: u64 = 16;

/// What a payload is made of, for one binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lifted {
    pub identity: TargetIdentity,
    /// The RVA at which file offset 0 is mapped (see the package format).
    pub image_base_rva: u64,
    pub payload: Vec<u8>,
    pub sites: Vec<PatchSite>,
    pub relocations: Vec<Relocation>,
    /// PE: the function table of the new code inside the payload (see the package format).
    pub unwind: Option<UnwindTable>,
    /// What was copied into the payload besides code, for the report.
    pub copied_data: Vec<CopiedData>,
}

/// A piece of read-only data the payload carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopiedData {
    /// What it is (`str:"..."`, a data symbol name, `jumptable`).
    pub what: String,
    pub payload_offset: u64,
    pub len: u64,
}

/// Why a change cannot be lifted exactly.
///
/// Each reason names its function by index, as `hotpatch_diff::ChangedFunction` does:
/// `fixed_index` into the fixed image's functions, and `baseline_index` into the baseline's
/// for a replaced function (`None` for an added one).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unliftable {
    #[error(
        "{function}: the instruction at {rva:#x} refers to {target}, which the engine cannot re-target ({why})"
    )]
    Reference {
        function: String,
        fixed_index: usize,
        baseline_index: Option<usize>,
        rva: u64,
        target: String,
        why: &'static str,
    },
    #[error(
        "{function}: the baseline entry has {available} bytes where the redirect needs {needed}"
    )]
    NoRoomForRedirect {
        function: String,
        fixed_index: usize,
        baseline_index: Option<usize>,
        available: u64,
        needed: u64,
    },
    #[error("{function}: the code bytes of the function are not in the file")]
    NoCode {
        function: String,
        fixed_index: usize,
        baseline_index: Option<usize>,
    },
    #[error(
        "{function}: its unwind data (UNWIND_INFO at {unwind_info_rva:#x}) cannot travel with the payload: {problem}"
    )]
    Unwind {
        function: String,
        fixed_index: usize,
        baseline_index: Option<usize>,
        unwind_info_rva: u64,
        problem: UnwindProblem,
    },
    #[error(
        "{function}: its cold part {cold} changed but the function did not; the function enters the cold part at offsets other than its entry, so a redirect at the cold part's entry would leave the old code reachable"
    )]
    ColdPartAlone {
        function: String,
        fixed_index: usize,
        baseline_index: Option<usize>,
        cold: String,
    },
    #[error(
        "{function}: its unchanged cold part {cold} jumps back into the old body at {branch_rva:#x} (to {target_rva:#x}), so the new code would run the old function's tail after the unlikely path"
    )]
    ColdPartReturns {
        function: String,
        fixed_index: usize,
        baseline_index: Option<usize>,
        cold: String,
        branch_rva: u64,
        target_rva: u64,
    },
    #[error(
        "{function}: the binary links the C++ exception runtime ({runtime}) and the function calls other code, so an exception can unwind through its frame, but an ELF payload carries no .eh_frame for it"
    )]
    ExceptionsCrossWithoutUnwindData {
        function: String,
        fixed_index: usize,
        baseline_index: Option<usize>,
        runtime: String,
    },
}

impl Unliftable {
    /// The readable name of the function concerned.
    pub fn function(&self) -> &str {
        match self {
            Unliftable::Reference { function, .. }
            | Unliftable::NoRoomForRedirect { function, .. }
            | Unliftable::NoCode { function, .. }
            | Unliftable::Unwind { function, .. }
            | Unliftable::ColdPartAlone { function, .. }
            | Unliftable::ColdPartReturns { function, .. }
            | Unliftable::ExceptionsCrossWithoutUnwindData { function, .. } => function,
        }
    }

    /// The index of the function concerned in the fixed image's functions.
    pub fn fixed_index(&self) -> usize {
        match self {
            Unliftable::Reference { fixed_index, .. }
            | Unliftable::NoRoomForRedirect { fixed_index, .. }
            | Unliftable::NoCode { fixed_index, .. }
            | Unliftable::Unwind { fixed_index, .. }
            | Unliftable::ColdPartAlone { fixed_index, .. }
            | Unliftable::ColdPartReturns { fixed_index, .. }
            | Unliftable::ExceptionsCrossWithoutUnwindData { fixed_index, .. } => *fixed_index,
        }
    }

    /// The index of the replaced function in the baseline image's functions; `None` for an
    /// added function.
    pub fn baseline_index(&self) -> Option<usize> {
        match self {
            Unliftable::Reference { baseline_index, .. }
            | Unliftable::NoRoomForRedirect { baseline_index, .. }
            | Unliftable::NoCode { baseline_index, .. }
            | Unliftable::Unwind { baseline_index, .. }
            | Unliftable::ColdPartAlone { baseline_index, .. }
            | Unliftable::ColdPartReturns { baseline_index, .. }
            | Unliftable::ExceptionsCrossWithoutUnwindData { baseline_index, .. } => {
                *baseline_index
            }
        }
    }

    /// The facts behind the refusal, as evidence for the audit.
    pub fn evidence(&self) -> Vec<(&'static str, String)> {
        match self {
            Unliftable::Reference {
                rva, target, why, ..
            } => vec![
                ("instruction_rva", format!("{rva:#x}")),
                ("target", target.clone()),
                ("why", (*why).to_owned()),
            ],
            Unliftable::NoRoomForRedirect {
                available, needed, ..
            } => vec![
                ("available", available.to_string()),
                ("needed", needed.to_string()),
            ],
            Unliftable::NoCode { .. } => Vec::new(),
            Unliftable::Unwind {
                unwind_info_rva,
                problem,
                ..
            } => {
                let mut evidence = vec![("unwind_info_rva", format!("{unwind_info_rva:#x}"))];
                if let UnwindProblem::LanguageHandler { handler } = problem {
                    evidence.push(("handler", handler.clone()));
                }
                evidence
            }
            Unliftable::ColdPartAlone { cold, .. } => vec![("cold_part", cold.clone())],
            Unliftable::ColdPartReturns {
                cold,
                branch_rva,
                target_rva,
                ..
            } => vec![
                ("cold_part", cold.clone()),
                ("branch_rva", format!("{branch_rva:#x}")),
                ("target_rva", format!("{target_rva:#x}")),
            ],
            Unliftable::ExceptionsCrossWithoutUnwindData { runtime, .. } => {
                vec![("exception_runtime", runtime.clone())]
            }
        }
    }
}

/// Lifts every changed and added function of `diff` into one payload.
pub fn lift(
    baseline: &Image<'_>,
    fixed: &Image<'_>,
    diff: &Diff,
) -> Result<Lifted, Vec<Unliftable>> {
    let base = Baseline::new(baseline);
    let mut layout = Layout::default();
    // Which fixed functions the payload carries, with their typed code and baseline entry.
    let mut carried: Vec<(usize, &[Instruction], Option<usize>)> = Vec::new();
    for changed in &diff.changed {
        carried.push((
            changed.fixed_index,
            &changed.fixed_code,
            Some(changed.baseline_index),
        ));
    }
    for added in &diff.added {
        carried.push((added.index, &added.code, None));
    }
    carried.sort_by_key(|(fixed_index, _, _)| fixed.functions[*fixed_index].name.clone());
    let mut problems = Vec::new();
    for (fixed_index, _, baseline_index) in &carried {
        let function = &fixed.functions[*fixed_index];
        if function.code.len() as u64 != function.size {
            problems.push(Unliftable::NoCode {
                function: function.display_name.clone(),
                fixed_index: *fixed_index,
                baseline_index: *baseline_index,
            });
            continue;
        }
        let offset = layout.place(function.code, CODE_ALIGN);
        layout.function_offsets.insert(*fixed_index, offset);
    }
    let fixed_to_baseline: BTreeMap<usize, usize> =
        diff.matches.iter().map(|m| (m.fixed, m.baseline)).collect();
    let mut context = retarget::Context {
        baseline: &base,
        fixed,
        fixed_to_baseline: &fixed_to_baseline,
        layout: &mut layout,
        relocations: Vec::new(),
    };
    for (fixed_index, code, baseline_index) in &carried {
        let Some(&offset) = context.layout.function_offsets.get(fixed_index) else {
            continue;
        };
        let function = retarget::Carried {
            function: &fixed.functions[*fixed_index],
            fixed_index: *fixed_index,
            baseline_index: *baseline_index,
            offset,
        };
        for instruction in code.iter() {
            if let Err(problem) = context.retarget(&function, instruction) {
                problems.push(problem);
            }
        }
    }
    let relocations = std::mem::take(&mut context.relocations);
    problems.extend(unwind::refuse_elf_crossings(fixed, &carried));
    problems.extend(cold::refuse_split_parts(
        baseline,
        fixed,
        diff,
        &carried,
        &layout.function_offsets,
    ));
    // After the code and the data it reads: the function table and its UNWIND_INFOs.
    let baseline_of: BTreeMap<usize, Option<usize>> = carried
        .iter()
        .map(|(fixed_index, _, baseline_index)| (*fixed_index, *baseline_index))
        .collect();
    let unwind = match unwind::place_unwind(fixed, &mut layout, &baseline_of) {
        Ok(table) => table,
        Err(unwind_problems) => {
            problems.extend(unwind_problems);
            None
        }
    };
    let mut sites = Vec::new();
    for (fixed_index, _, baseline_index) in &carried {
        let Some(baseline_index) = baseline_index else {
            continue;
        };
        let (Some(old), Some(&offset)) = (
            baseline.functions.get(*baseline_index),
            layout.function_offsets.get(fixed_index),
        ) else {
            continue;
        };
        let indexes = (*fixed_index, *baseline_index);
        match patch_site(
            baseline,
            old,
            indexes,
            offset,
            fixed.functions[*fixed_index].size,
        ) {
            Ok(site) => sites.push(site),
            Err(problem) => problems.push(problem),
        }
    }
    if !problems.is_empty() {
        problems.sort_by_key(|p| p.to_string());
        problems.dedup();
        return Err(problems);
    }
    sites.sort_by_key(|site| site.baseline_rva);
    let mut relocations = relocations;
    relocations.sort_by_key(|r| r.offset);
    Ok(Lifted {
        identity: identity(baseline),
        image_base_rva: image_base_rva(baseline),
        payload: layout.bytes,
        sites,
        relocations,
        unwind,
        copied_data: layout.copied,
    })
}

/// The payload being laid out.
#[derive(Default)]
pub(crate) struct Layout {
    pub bytes: Vec<u8>,
    /// Fixed function index to its offset in the payload.
    pub function_offsets: BTreeMap<usize, u64>,
    /// Fixed-build RVA of copied read-only data to its offset in the payload.
    pub data_offsets: BTreeMap<u64, u64>,
    pub copied: Vec<CopiedData>,
}

impl Layout {
    /// Appends `bytes` aligned to `align` (filled with int3) and returns their offset.
    pub(crate) fn place(&mut self, bytes: &[u8], align: u64) -> u64 {
        while !(self.bytes.len() as u64).is_multiple_of(align) {
            self.bytes.push(0xcc);
        }
        let offset = self.bytes.len() as u64;
        self.bytes.extend_from_slice(bytes);
        offset
    }
}

/// The redirect for a replaced function: `jmp rel32` at the entry when the body has room for
/// it, else a short jump into padding that holds the long jump.
fn patch_site(
    baseline: &Image<'_>,
    old: &Function<'_>,
    (fixed_index, baseline_index): (usize, usize),
    payload_offset: u64,
    payload_size: u64,
) -> Result<PatchSite, Unliftable> {
    let redirect = if old.size >= JUMP_LEN {
        let original = baseline
            .bytes_at(old.rva, JUMP_LEN)
            .ok_or_else(|| Unliftable::NoCode {
                function: old.display_name.clone(),
                fixed_index,
                baseline_index: Some(baseline_index),
            })?;
        Redirect::Entry {
            original: original.to_vec(),
        }
    } else if old.padding_before >= JUMP_LEN
        && old
            .first_instruction_len
            .is_some_and(|len| u64::from(len) >= SHORT_JUMP_LEN)
        && old.size >= SHORT_JUMP_LEN
    {
        let original = baseline
            .bytes_at(old.rva - JUMP_LEN, JUMP_LEN + SHORT_JUMP_LEN)
            .ok_or_else(|| Unliftable::NoCode {
                function: old.display_name.clone(),
                fixed_index,
                baseline_index: Some(baseline_index),
            })?;
        Redirect::Padding {
            original: original.to_vec(),
        }
    } else {
        return Err(Unliftable::NoRoomForRedirect {
            function: old.display_name.clone(),
            fixed_index,
            baseline_index: Some(baseline_index),
            available: old.size,
            needed: JUMP_LEN,
        });
    };
    Ok(PatchSite {
        function: old.display_name.clone(),
        baseline_rva: old.rva,
        baseline_size: old.size,
        payload_offset,
        payload_size,
        redirect,
    })
}

/// The identity of the baseline build a payload is for.
pub fn identity(image: &Image<'_>) -> TargetIdentity {
    match (&image.identity.pe, image.format) {
        (Some(pe), Format::Pe) => TargetIdentity::Pe {
            time_date_stamp: pe.time_date_stamp,
            checksum: pe.checksum,
            size_of_image: pe.size_of_image,
            sha256: image.identity.sha256.clone(),
            pdb_guid: pe.codeview.as_ref().map(|cv| cv.guid.clone()),
            pdb_age: pe.codeview.as_ref().map(|cv| cv.age),
        },
        _ => TargetIdentity::Elf {
            build_id: image
                .identity
                .elf
                .as_ref()
                .and_then(|elf| elf.build_id.clone()),
            sha256: image.identity.sha256.clone(),
        },
    }
}

/// The RVA at which file offset 0 is mapped: 0 for PE and position-independent ELF; the first
/// segment's address for an ELF executable linked at a fixed address.
pub fn image_base_rva(image: &Image<'_>) -> u64 {
    if image.format == Format::Pe {
        return 0;
    }
    image
        .sections
        .iter()
        .filter(|s| s.rva != 0 && s.file_size != 0)
        .filter_map(|s| s.rva.checked_sub(s.file_offset))
        .min()
        .map_or(0, |base| base & !0xfff)
}
