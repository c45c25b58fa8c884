//! Line-number noise: code that embeds `__LINE__` (assert and log macros) differs after an
//! edit above it only in those constants. Such a function is `line-only` when every differing
//! immediate moved by the same amount as the function's own source lines did.

use crate::code::Instruction;
use hotpatch_image::{Function, Image};

/// The line shift, when the two listings differ only in immediates that moved with the source.
pub(crate) fn line_only_delta(
    old: &[Instruction],
    new: &[Instruction],
    b: &Function<'_>,
    f: &Function<'_>,
    baseline: &Image<'_>,
    fixed: &Image<'_>,
) -> Option<i64> {
    if old.len() != new.len() || old.iter().zip(new).any(|(o, n)| o.shape() != n.shape()) {
        return None;
    }
    let (old_first, old_last) = line_span(baseline, b)?;
    let (new_first, _) = line_span(fixed, f)?;
    let delta = i64::from(new_first) - i64::from(old_first);
    if delta == 0 {
        return None;
    }
    let mut differing = 0;
    for (o, n) in old.iter().zip(new) {
        for (old_value, new_value) in o.immediates().into_iter().zip(n.immediates()) {
            if old_value == new_value {
                continue;
            }
            let plausible_line =
                old_value >= i64::from(old_first) && old_value <= i64::from(old_last);
            if new_value - old_value != delta || !plausible_line {
                return None;
            }
            differing += 1;
        }
    }
    (differing > 0).then_some(delta)
}

/// The function's first line (the lowest line of the rows at its entry, where its own prologue
/// is) and the last line of its own rows. Rows of code inlined into it carry the inlinee's
/// lines (a helper defined elsewhere in the file, which did not move), so they are left out of
/// the last line, and the first line comes from the entry alone: a `__LINE__` passed to an
/// inlined helper is the caller's line.
fn line_span(image: &Image<'_>, function: &Function<'_>) -> Option<(u32, u32)> {
    let start = image.lines.partition_point(|row| row.rva < function.rva);
    let site_start = image
        .inline_sites
        .partition_point(|site| site.caller_rva < function.rva);
    let inlined: Vec<(u64, u64)> = image.inline_sites[site_start..]
        .iter()
        .take_while(|site| site.caller_rva == function.rva)
        .flat_map(|site| site.ranges.iter().copied())
        .collect();
    let rows: Vec<&hotpatch_image::LineRow> = image.lines[start..]
        .iter()
        .take_while(|row| row.rva < function.end())
        .filter(|row| row.line != 0)
        .collect();
    let first = rows
        .iter()
        .take_while(|row| row.rva == function.rva)
        .map(|row| row.line)
        .min()?;
    let last = rows
        .iter()
        .filter(|row| {
            !inlined
                .iter()
                .any(|&(begin, len)| row.rva >= begin && row.rva < begin.saturating_add(len))
        })
        .map(|row| row.line)
        .max()?;
    Some((first, last.max(first)))
}
