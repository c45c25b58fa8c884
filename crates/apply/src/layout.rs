//! What the applier checks of a target's image file beyond its identity, for both formats:
//! every patch site and the bytes its redirect writes lie in executable code of the image,
//! every site is a function entry by the image's own function table, and every relocation into
//! the baseline lands inside the image. The tables come from the format readers,
//! `linux::elf_check` (ELF program headers and `.eh_frame_hdr`) and `pe_check` (PE section
//! headers and the `.pdata` exception table); neither reads debug information.

use crate::error::Error;
use hotpatch_package::{Redirect, RelocationTarget, Target};
use std::collections::BTreeSet;

/// The segments (sections) and function starts of an image, in RVAs (`address = bias + rva`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLayout {
    /// `[start, end)` of each loaded segment or section, and whether it is executable.
    pub segments: Vec<(u64, u64, bool)>,
    /// Function starts from the unwind table; `Err` says why there is no usable table.
    pub function_starts: Result<BTreeSet<u64>, &'static str>,
    /// PE only: `[begin, end)` of every `.pdata` entry, sorted. x64 leaf functions (no stack
    /// frame, no handler) need no entry and have none, so a site that lies outside every
    /// entry is a function the table does not describe, accepted as an entry; a site inside
    /// an entry must be that entry's start. `None` for ELF, whose `.eh_frame_hdr` lists every
    /// function compiled with unwind tables (the toolchains' default) and nothing else counts.
    pub unwound: Option<Vec<(u64, u64)>>,
}

impl ImageLayout {
    fn inside(&self, start: u64, len: u64, executable: bool) -> bool {
        start.checked_add(len).is_some_and(|end| {
            self.segments
                .iter()
                .any(|&(s, e, x)| s <= start && end <= e && (x || !executable))
        })
    }

    /// Whether `rva` lies in no `.pdata` entry (PE); always false for ELF.
    fn outside_every_entry(&self, rva: u64) -> bool {
        self.unwound.as_ref().is_some_and(|ranges| {
            let index = ranges.partition_point(|&(begin, _)| begin <= rva);
            index == 0 || ranges[index - 1].1 <= rva
        })
    }
}

/// Checks every site and relocation of `target` against the image layout.
pub fn check_target(target: &Target, layout: &ImageLayout) -> Result<(), Error> {
    for site in &target.sites {
        let outside = || Error::SiteOutsideImage {
            target: target.name.clone(),
            function: site.function.clone(),
            rva: site.baseline_rva,
        };
        let write_rva = match site.redirect {
            Redirect::Entry { .. } => site.baseline_rva,
            Redirect::Padding { .. } => site.baseline_rva.checked_sub(5).ok_or_else(outside)?,
        };
        let function_len = site.baseline_size.max(1);
        if !layout.inside(write_rva, site.redirect.len() as u64, true)
            || !layout.inside(site.baseline_rva, function_len, true)
        {
            return Err(outside());
        }
        if !is_function_entry(layout, site.baseline_rva, site.baseline_size).map_err(|what| {
            Error::NoFunctionTable {
                target: target.name.clone(),
                what,
            }
        })? {
            return Err(Error::NotAFunctionEntry {
                target: target.name.clone(),
                function: site.function.clone(),
                rva: site.baseline_rva,
            });
        }
    }
    for relocation in &target.relocations {
        if let RelocationTarget::Baseline { rva } = relocation.target
            && !layout.inside(rva, 1, false)
        {
            return Err(Error::RelocationOutsideImage {
                target: target.name.clone(),
                offset: relocation.offset,
                rva,
            });
        }
    }
    Ok(())
}

/// Whether a function of `size` bytes at `rva` starts where the function table says a
/// function starts (or, PE, where no entry describes the code) and ends before the next
/// function the table lists. `Err` when the image has no usable table.
pub fn is_function_entry(layout: &ImageLayout, rva: u64, size: u64) -> Result<bool, &'static str> {
    let starts = layout.function_starts.as_ref().map_err(|what| *what)?;
    let next_start = starts.range(rva.saturating_add(1)..).next().copied();
    let overlaps_next =
        next_start.is_some_and(|next| rva.checked_add(size).is_none_or(|end| end > next));
    Ok((starts.contains(&rva) || layout.outside_every_entry(rva)) && !overlaps_next)
}
