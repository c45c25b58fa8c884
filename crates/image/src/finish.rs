//! Work both readers share once they have collected raw facts: sorting, folding identical code
//! (ICF) into aliases, and measuring the padding and first instruction at each entry.

use crate::model::{Function, Image};
use iced_x86::{Decoder, DecoderOptions, Mnemonic};

/// The file bytes of one section, placed at its RVA.
#[derive(Clone, Copy, Debug)]
pub struct MappedSection<'data> {
    pub name: &'data str,
    pub rva: u64,
    pub bytes: &'data [u8],
}

/// The bytes `[rva, rva + len)` if one section holds all of them in the file.
pub(crate) fn bytes_at<'data>(
    sections: &[MappedSection<'data>],
    rva: u64,
    len: u64,
) -> Option<&'data [u8]> {
    sections.iter().find_map(|section| {
        let start = rva.checked_sub(section.rva)?;
        let end = start.checked_add(len)?;
        let start = usize::try_from(start).ok()?;
        let end = usize::try_from(end).ok()?;
        section.bytes.get(start..end)
    })
}

/// Sorts every collection, folds functions that share one body, and fills in `code`,
/// `padding_before` and `first_instruction_len`.
pub(crate) fn finish<'data>(image: &mut Image<'data>, mapped: &[MappedSection<'data>]) {
    image.section_bytes = mapped.to_vec();
    fold_identical_code(&mut image.functions);
    for function in &mut image.functions {
        if function.code.is_empty() && function.size > 0 {
            function.code = bytes_at(mapped, function.rva, function.size).unwrap_or(&[]);
        }
        function.first_instruction_len = first_instruction_len(function.code, function.rva);
    }
    measure_padding(&mut image.functions, mapped);

    image
        .data_symbols
        .sort_by(|a, b| (a.rva, &a.name).cmp(&(b.rva, &b.name)));
    image
        .data_symbols
        .dedup_by(|a, b| a.rva == b.rva && a.name == b.name);
    image
        .types
        .sort_by(|a, b| (&a.name, &a.fingerprint).cmp(&(&b.name, &b.fingerprint)));
    image
        .types
        .dedup_by(|a, b| a.name == b.name && a.fingerprint == b.fingerprint);
    image.lines.sort_unstable();
    image.lines.dedup();
    image.inline_sites.sort();
    image.inline_sites.dedup();
    image.imports.sort();
    image.imports.dedup();
    image.exports.sort();
    image.exports.dedup();
    image.relocations.sort();
    image.relocations.dedup();
    image.unwind.sort();
    image.unwind.dedup();
    image.initializers.sort();
    image.initializers.dedup();
    image
        .sections
        .sort_by(|a, b| (a.rva, &a.name).cmp(&(b.rva, &b.name)));
    for section in &mut image.sections {
        if let Some(bytes) = mapped
            .iter()
            .find(|m| m.rva == section.rva && m.name == section.name)
        {
            section.sha256 = Some(crate::identity::sha256_hex(bytes.bytes));
        }
    }
    image.producers.sort();
    image.producers.dedup();
    for initializer in &mut image.initializers {
        if initializer.target.is_none() {
            initializer.target = image
                .functions
                .binary_search_by_key(&initializer.target_rva, |f| f.rva)
                .ok()
                .and_then(|idx| image.functions.get(idx))
                .map(|f| f.name.clone());
        }
    }
}

/// Functions at the same RVA are one body with several names (identical code folding, or an
/// alias symbol): keep one entry, the best-described one, and list the other names as aliases.
fn fold_identical_code(functions: &mut Vec<Function<'_>>) {
    // Best first within one RVA: debug info, then global names, then the longer body, then name.
    functions.sort_by(|a, b| {
        a.rva
            .cmp(&b.rva)
            .then(b.has_debug_info.cmp(&a.has_debug_info))
            .then(a.linkage.cmp(&b.linkage))
            .then(b.size.cmp(&a.size))
            .then(a.name.cmp(&b.name))
    });
    let mut folded: Vec<Function<'_>> = Vec::with_capacity(functions.len());
    for function in functions.drain(..) {
        match folded.last_mut() {
            Some(keeper) if keeper.rva == function.rva => {
                if function.name != keeper.name && !keeper.aliases.contains(&function.name) {
                    keeper.aliases.push(function.name);
                }
                for alias in function.aliases {
                    if alias != keeper.name && !keeper.aliases.contains(&alias) {
                        keeper.aliases.push(alias);
                    }
                }
                // Readable names are kept apart from decorated ones: two overloads share a
                // readable name but not a decorated one.
                let display_names =
                    std::iter::once(function.display_name).chain(function.alias_display_names);
                for display_name in display_names {
                    if display_name != keeper.display_name
                        && !keeper.alias_display_names.contains(&display_name)
                    {
                        keeper.alias_display_names.push(display_name);
                    }
                }
            }
            _ => folded.push(function),
        }
    }
    for function in &mut folded {
        function.aliases.sort();
        function.alias_display_names.sort();
    }
    *functions = folded;
}

/// Length of the instruction at the start of `code`, if it decodes.
fn first_instruction_len(code: &[u8], rva: u64) -> Option<u8> {
    if code.is_empty() {
        return None;
    }
    let mut decoder = Decoder::with_ip(64, code, rva, DecoderOptions::NONE);
    let instruction = decoder.decode();
    if instruction.is_invalid() {
        return None;
    }
    u8::try_from(instruction.len()).ok()
}

/// Padding before an entry is the run of filler that ends at the entry and starts after the
/// previous function in the same section: if the whole gap decodes as nop/int3 (compilers align
/// with multi-byte nops), all of it; otherwise the single-byte filler right before the entry.
fn measure_padding(functions: &mut [Function<'_>], mapped: &[MappedSection<'_>]) {
    let mut previous_end: Option<(String, u64)> = None;
    for function in functions.iter_mut() {
        let section = mapped
            .iter()
            .find(|s| function.rva >= s.rva && function.rva - s.rva <= s.bytes.len() as u64);
        let Some(section) = section else {
            function.padding_before = 0;
            continue;
        };
        let gap_start = match &previous_end {
            Some((name, end)) if name == section.name && *end <= function.rva => *end,
            Some((name, end)) if name == section.name && *end > function.rva => function.rva,
            _ => section.rva,
        };
        let gap = bytes_at(mapped, gap_start, function.rva - gap_start).unwrap_or(&[]);
        function.padding_before = filler_len(gap, gap_start);
        let end = function.end();
        previous_end = match previous_end {
            Some((name, prev)) if name == section.name => Some((name, prev.max(end))),
            _ => Some((section.name.to_owned(), end)),
        };
    }
}

/// How many bytes at the end of `gap` are filler that is never executed.
fn filler_len(gap: &[u8], gap_start: u64) -> u64 {
    if gap.is_empty() {
        return 0;
    }
    if gap.iter().all(|&b| b == 0 || b == 0xCC) || decodes_as_filler(gap, gap_start) {
        return gap.len() as u64;
    }
    gap.iter()
        .rev()
        .take_while(|&&b| b == 0xCC || b == 0x90)
        .count() as u64
}

fn decodes_as_filler(gap: &[u8], gap_start: u64) -> bool {
    let mut decoder = Decoder::with_ip(64, gap, gap_start, DecoderOptions::NONE);
    while decoder.can_decode() {
        let instruction = decoder.decode();
        if instruction.is_invalid()
            || !matches!(instruction.mnemonic(), Mnemonic::Nop | Mnemonic::Int3)
        {
            return false;
        }
    }
    true
}
