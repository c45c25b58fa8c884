//! gcc's cold parts (`foo.cold`, `foo.cold.N`): the unlikely paths of `foo`, moved to
//! `.text.unlikely` and listed as functions of their own. The parent enters its cold part at
//! several offsets, and a cold part may jump back into the parent (`scale.cold: ...; call
//! log_error; jmp scale+0xb`). So a payload may replace a parent alone only when its baseline
//! cold parts never branch back into the old body, and may never replace a cold part alone.
//! Carrying a parent and its cold parts together (both changed) is fine: the payload's copies
//! refer to each other.
//!
//! The check for branches back reads the baseline cold part's bytes at every offset as each
//! direct branch form (`jmp`/`call`/`jcc` rel32, `jmp`/`jcc`/`loop`/`jrcxz` rel8): a superset
//! of the branches the code really holds, so it never misses a direct branch back, and at
//! worst refuses a part whose data bytes happen to look like one. Indirect branches out of a
//! cold part (a jump table of its own) are not followed.

use crate::Unliftable;
use hotpatch_diff::{Diff, Instruction};
use hotpatch_image::{Function, Image, cold_part_parent};
use std::collections::{BTreeMap, BTreeSet};

/// The refusals for parents and cold parts the payload would separate.
pub(crate) fn refuse_split_parts(
    baseline: &Image<'_>,
    fixed: &Image<'_>,
    diff: &Diff,
    carried: &[(usize, &[Instruction], Option<usize>)],
    function_offsets: &BTreeMap<usize, u64>,
) -> Vec<Unliftable> {
    let carried_baseline: BTreeSet<usize> = carried.iter().filter_map(|c| c.2).collect();
    let baseline_to_fixed: BTreeMap<usize, usize> =
        diff.matches.iter().map(|m| (m.baseline, m.fixed)).collect();
    // The baseline's functions by name and its cold parts by parent, in index order, read
    // once rather than once per carried function.
    let mut by_name: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut cold_parts: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, function) in baseline.functions.iter().enumerate() {
        by_name
            .entry(function.name.as_str())
            .or_default()
            .push(index);
        if let Some(parent) = cold_part_parent(&function.name) {
            cold_parts.entry(parent).or_default().push(index);
        }
    }
    let mut problems = Vec::new();
    for &(fixed_index, _, baseline_index) in carried {
        let Some(baseline_index) = baseline_index else {
            continue;
        };
        let Some(old) = baseline.functions.get(baseline_index) else {
            continue;
        };
        let Some(new) = fixed.functions.get(fixed_index) else {
            continue;
        };
        // A cold part replaced while its parent stays.
        if let Some(parent) = cold_part_parent(&old.name) {
            let parent_indices = by_name.get(parent).map_or(&[][..], Vec::as_slice);
            let parent_carried = parent_indices
                .iter()
                .any(|index| carried_baseline.contains(index));
            if !parent_indices.is_empty() && !parent_carried {
                problems.push(Unliftable::ColdPartAlone {
                    function: parent.to_owned(),
                    fixed_index,
                    baseline_index: Some(baseline_index),
                    cold: new.display_name.clone(),
                });
            }
            continue;
        }
        // A parent replaced while a cold part of it that branches back stays.
        let own_cold_parts = cold_parts
            .get(old.name.as_str())
            .map_or(&[][..], Vec::as_slice);
        for &cold_index in own_cold_parts {
            let Some(cold) = baseline.functions.get(cold_index) else {
                continue;
            };
            let cold_carried = baseline_to_fixed
                .get(&cold_index)
                .is_some_and(|fixed_cold| function_offsets.contains_key(fixed_cold));
            if cold_carried {
                continue;
            }
            if let Some((branch_rva, target_rva)) = branch_into(cold, old) {
                problems.push(Unliftable::ColdPartReturns {
                    function: new.display_name.clone(),
                    fixed_index,
                    baseline_index: Some(baseline_index),
                    cold: cold.display_name.clone(),
                    branch_rva,
                    target_rva,
                });
            }
        }
    }
    problems
}

/// The first offset of `from` whose bytes, read as a direct branch, reach inside `into` past
/// its entry: (branch RVA, target RVA). `None` when no reading does, or `from`'s bytes are
/// not in the file (then `into` was refused for that already if it matters).
fn branch_into(from: &Function<'_>, into: &Function<'_>) -> Option<(u64, u64)> {
    let code: &[u8] = from.code;
    let inside = |target: i128| {
        target > i128::from(into.rva) && target < i128::from(into.rva) + i128::from(into.size)
    };
    for at in 0..code.len() {
        let rva = i128::from(from.rva) + at as i128;
        let rel32 = |start: usize| -> Option<i128> {
            let bytes: [u8; 4] = code.get(start..start + 4)?.try_into().ok()?;
            Some(i128::from(i32::from_le_bytes(bytes)))
        };
        let rel8 = |start: usize| -> Option<i128> { code.get(start).map(|&b| i128::from(b as i8)) };
        let mut targets = Vec::new();
        match code[at] {
            // jmp rel32, call rel32
            0xe9 | 0xe8 => targets.extend(rel32(at + 1).map(|d| rva + 5 + d)),
            // jmp rel8, jcc rel8, loop/loope/loopne/jrcxz rel8
            0xeb | 0x70..=0x7f | 0xe0..=0xe3 => targets.extend(rel8(at + 1).map(|d| rva + 2 + d)),
            // jcc rel32
            0x0f if code.get(at + 1).is_some_and(|b| (0x80..=0x8f).contains(b)) => {
                targets.extend(rel32(at + 2).map(|d| rva + 6 + d));
            }
            _ => {}
        }
        if let Some(&target) = targets.iter().find(|&&t| inside(t)) {
            return Some((rva as u64, target as u64));
        }
    }
    None
}
