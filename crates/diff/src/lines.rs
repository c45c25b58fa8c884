//! Line-number noise: code that embeds `__LINE__` (assert and log macros) differs after an
//! edit above it only in those constants. Such a function is `line-only` when every differing
//! immediate moved by the same amount as the source lines it comes from did: the function's
//! own lines, or the lines of a function inlined into it (an `assert` inside an inlined helper
//! holds the helper's line, not the caller's).

use crate::code::Instruction;
use hotpatch_image::{Function, Image, LineRow};

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
    let own_delta = i64::from(new_first) - i64::from(old_first);
    let old_inlined = inlinee_spans(baseline, b);
    let new_inlined = inlinee_spans(fixed, f);
    // A value in one of the caller's inlinee ranges moved with that inlinee when the fixed
    // build has the same inlinee over the same range shifted by the value's change.
    let moved_with_inlinee = |old_value: i64, shift: i64| {
        old_inlined.iter().any(|(name, first, last)| {
            old_value >= i64::from(*first)
                && old_value <= i64::from(*last)
                && new_inlined.iter().any(|(new_name, new_first, new_last)| {
                    new_name == name
                        && i64::from(*new_first) - i64::from(*first) == shift
                        && i64::from(*new_last) - i64::from(*last) == shift
                })
        })
    };
    let mut delta = None;
    for (o, n) in old.iter().zip(new) {
        for (old_value, new_value) in o.immediates().into_iter().zip(n.immediates()) {
            if old_value == new_value {
                continue;
            }
            let shift = new_value - old_value;
            let own_line = shift == own_delta
                && old_value >= i64::from(old_first)
                && old_value <= i64::from(old_last);
            if !own_line && !moved_with_inlinee(old_value, shift) {
                return None;
            }
            delta.get_or_insert(shift);
        }
    }
    delta
}

/// The function's first line (the lowest line of the rows at its entry, where its own prologue
/// is) and the last line of its own rows. Rows of code inlined into it carry the inlinee's
/// lines (a helper defined elsewhere in the file, which did not move), so they are left out of
/// the last line, and the first line comes from the entry alone: a `__LINE__` passed to an
/// inlined helper is the caller's line.
fn line_span(image: &Image<'_>, function: &Function<'_>) -> Option<(u32, u32)> {
    let inlined: Vec<(u64, u64)> = inline_sites(image, function)
        .flat_map(|site| site.ranges.iter().copied())
        .collect();
    let rows: Vec<&LineRow> = rows_in(image, function.rva, function.end()).collect();
    let first = rows
        .iter()
        .take_while(|row| row.rva == function.rva)
        .map(|row| row.line)
        .min()?;
    let last = rows
        .iter()
        .filter(|row| !inlined.iter().any(|&range| contains(range, row.rva)))
        .map(|row| row.line)
        .max()?;
    Some((first, last.max(first)))
}

/// Each function inlined into `function`, with the first and last line of its own rows there:
/// the inline site's rows (PDB `S_INLINESITE` annotations), else the line table's rows inside
/// the site's ranges (DWARF describes inlined code row by row).
fn inlinee_spans<'i>(image: &'i Image<'_>, function: &Function<'_>) -> Vec<(&'i str, u32, u32)> {
    inline_sites(image, function)
        .filter_map(|site| {
            let lines = site
                .lines
                .iter()
                .filter(|row| row.line != 0)
                .map(|row| row.line);
            let lines: Vec<u32> = if site.lines.is_empty() {
                site.ranges
                    .iter()
                    .flat_map(|&(begin, len)| rows_in(image, begin, begin.saturating_add(len)))
                    .map(|row| row.line)
                    .collect()
            } else {
                lines.collect()
            };
            Some((
                site.inlinee.as_str(),
                *lines.iter().min()?,
                *lines.iter().max()?,
            ))
        })
        .collect()
}

/// The inline sites whose caller is `function`.
fn inline_sites<'i>(
    image: &'i Image<'_>,
    function: &Function<'_>,
) -> impl Iterator<Item = &'i hotpatch_image::InlineSite> {
    let start = image
        .inline_sites
        .partition_point(|site| site.caller_rva < function.rva);
    image.inline_sites[start..]
        .iter()
        .take_while(move |site| site.caller_rva == function.rva)
}

/// The line rows (with a line) in `[begin, end)`.
fn rows_in<'i>(image: &'i Image<'_>, begin: u64, end: u64) -> impl Iterator<Item = &'i LineRow> {
    let start = image.lines.partition_point(|row| row.rva < begin);
    image.lines[start..]
        .iter()
        .take_while(move |row| row.rva < end)
        .filter(|row| row.line != 0)
}

fn contains((begin, len): (u64, u64), rva: u64) -> bool {
    rva >= begin && rva < begin.saturating_add(len)
}
