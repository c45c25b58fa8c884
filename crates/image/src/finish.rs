//! Work both readers share once they have collected raw facts: sorting, folding identical code
//! (ICF) into aliases, and measuring the padding and first instruction at each entry.

use crate::model::{Function, Image, TypeId};
use iced_x86::{Decoder, DecoderOptions, FlowControl, Mnemonic};

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
    sort_types(image);
    image.lines.sort_unstable();
    image.lines.dedup();
    // The rows were pushed one by one: the vector's spare capacity (up to half its size) is the
    // largest allocation left over from loading.
    image.lines.shrink_to_fit();
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
                keeper.uses_types.extend(function.uses_types);
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

/// Sorts the layouts by name and fingerprint, drops repeats (one per compilation unit in DWARF),
/// and renumbers each function's and each field's [`TypeId`]s, which the readers gave as
/// positions in their own unsorted list.
fn sort_types(image: &mut Image<'_>) {
    let mut order: Vec<usize> = (0..image.types.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&image.types[a], &image.types[b]);
        (&a.name, &a.fingerprint).cmp(&(&b.name, &b.fingerprint))
    });
    let mut old = std::mem::take(&mut image.types)
        .into_iter()
        .map(Some)
        .collect::<Vec<_>>();
    // `renumbered[reader's position]` is the position in the sorted, deduplicated list.
    let mut renumbered = vec![0u32; old.len()];
    for position in order {
        let Some(layout) = old[position].take() else {
            continue;
        };
        let repeat = image
            .types
            .last()
            .is_some_and(|last| last.name == layout.name && last.fingerprint == layout.fingerprint);
        if !repeat {
            image.types.push(layout);
        }
        renumbered[position] = u32::try_from(image.types.len().saturating_sub(1)).unwrap_or(0);
    }
    for field in image
        .types
        .iter_mut()
        .flat_map(|layout| layout.fields.iter_mut())
    {
        field.reaches = field
            .reaches
            .and_then(|reached| renumbered.get(reached.index()))
            .map(|&index| TypeId(index));
    }
    for function in &mut image.functions {
        for used in &mut function.uses_types {
            *used = renumbered
                .get(used.index())
                .map_or(TypeId(u32::MAX), |&index| TypeId(index));
        }
        function.uses_types.retain(|used| used.0 != u32::MAX);
        function.uses_types.sort_unstable();
        function.uses_types.dedup();
    }
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

/// Padding before an entry is the run of filler that ends at the entry and that no code reaches.
/// The gap searched starts after the previous function in the same section (a zero-sized
/// symbol, such as gcc's `frame_dummy`, counts as a start: its code lies inside the gap and is
/// decoded, so the filler behind its last jump is found).
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

/// How many bytes at the end of `gap` are filler that is never executed: the larger of the
/// filler run found by decoding the gap from its start (multi-byte nops included) and the run
/// of single-byte `int3`/`nop` right before the entry (which holds even where the gap holds
/// data the decoder cannot follow, such as a jump table clang placed after a function).
fn filler_len(gap: &[u8], gap_start: u64) -> u64 {
    let single_bytes = gap
        .iter()
        .rev()
        .take_while(|&&b| b == 0xCC || b == 0x90)
        .count() as u64;
    single_bytes.max(decoded_filler_len(gap, gap_start))
}

/// One decoded piece of a gap.
#[derive(Clone, Copy, Debug)]
struct GapPiece {
    len: u64,
    /// A nop of any length and encoding, an `int3`, or the zero bytes that end the gap.
    filler: bool,
    /// Execution can continue to the next byte after it.
    falls_through: bool,
}

/// Decodes `gap` from its start (an instruction boundary: the end of the previous function or
/// a symbol) and measures the filler that ends it. The run counts only if nothing falls into
/// it: it starts the gap, or the instruction before it is a return, an unconditional or
/// indirect jump, or `ud2`. Any byte the decoder rejects makes the measure 0.
fn decoded_filler_len(gap: &[u8], gap_start: u64) -> u64 {
    let Some(pieces) = decode_gap(gap, gap_start) else {
        return 0;
    };
    let filler_count = pieces.iter().rev().take_while(|p| p.filler).count();
    let first_filler = pieces.len() - filler_count;
    let reachable = first_filler
        .checked_sub(1)
        .and_then(|before| pieces.get(before))
        .is_some_and(|piece| piece.falls_through);
    if reachable {
        return 0;
    }
    pieces[first_filler..].iter().map(|p| p.len).sum()
}

fn decode_gap(gap: &[u8], gap_start: u64) -> Option<Vec<GapPiece>> {
    let mut pieces = Vec::new();
    let mut decoder = Decoder::with_ip(64, gap, gap_start, DecoderOptions::NONE);
    while decoder.can_decode() {
        let position = decoder.position();
        let rest = gap.get(position..)?;
        // Zero bytes to the end are linker fill; decoded they would read as `add [rax], al`.
        if rest.iter().all(|&b| b == 0) {
            pieces.push(GapPiece {
                len: rest.len() as u64,
                filler: true,
                falls_through: false,
            });
            break;
        }
        let instruction = decoder.decode();
        if instruction.is_invalid() {
            return None;
        }
        pieces.push(GapPiece {
            len: instruction.len() as u64,
            filler: matches!(instruction.mnemonic(), Mnemonic::Nop | Mnemonic::Int3),
            falls_through: !matches!(
                instruction.flow_control(),
                FlowControl::Return
                    | FlowControl::UnconditionalBranch
                    | FlowControl::IndirectBranch
                    | FlowControl::Exception
            ),
        });
    }
    Some(pieces)
}

#[cfg(test)]
mod tests {
    use super::{MappedSection, filler_len, measure_padding};
    use crate::model::{Function, Linkage};

    /// gcc's `frame_dummy` (`endbr64; jmp register_tm_clones`) and the 7-byte `nopl` that
    /// aligns `strict_mode_enabled`, as in the ELF `too_short` baseline at 0x1170.
    #[test]
    fn filler_after_a_jump_of_an_unsized_symbol_counts() {
        let gap = [
            0xf3, 0x0f, 0x1e, 0xfa, // endbr64
            0xe9, 0x77, 0xff, 0xff, 0xff, // jmp rel32
            0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00, // nopl 0x0(%rax)
        ];
        assert_eq!(filler_len(&gap, 0x1170), 7);
    }

    #[test]
    fn every_multi_byte_nop_form_counts() {
        let gap: Vec<u8> = [
            &[0xc3][..],                                                   // ret
            &[0x66, 0x90],                                                 // xchg ax, ax
            &[0x0f, 0x1f, 0x00],                                           // nopl (%rax)
            &[0x0f, 0x1f, 0x40, 0x00],                                     // nopl 0x0(%rax)
            &[0x0f, 0x1f, 0x44, 0x00, 0x00],                               // nopl 0x0(%rax,%rax,1)
            &[0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00],                         // nopw 0x0(%rax,%rax,1)
            &[0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],             // nopl 0x0(%rax,%rax,1)
            &[0x66, 0x2e, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00], // cs nopw
            &[
                0x66, 0x66, 0x2e, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00,
            ], // data16 cs nopw
            &[0x90, 0xcc],
        ]
        .concat();
        assert_eq!(filler_len(&gap, 0x1000), gap.len() as u64 - 1);
    }

    #[test]
    fn filler_that_code_falls_into_is_not_padding() {
        // `add eax, 1` then a 4-byte nop: execution runs through the nop into the entry.
        let gap = [0x83, 0xc0, 0x01, 0x0f, 0x1f, 0x40, 0x00];
        assert_eq!(filler_len(&gap, 0x1000), 0);
        // A conditional jump falls through too.
        let gap = [0x75, 0x02, 0x0f, 0x1f, 0x00];
        assert_eq!(filler_len(&gap, 0x1000), 0);
    }

    #[test]
    fn int3_and_zero_fill_count() {
        // lld's int3 fill after a function that ends in `ret`, as before PE `strict_mode_enabled`.
        let mut gap = vec![0xc3];
        gap.extend([0xcc; 12]);
        assert_eq!(filler_len(&gap, 0x1000), 12);
        // A gap of only zero bytes, and zero bytes after `jmp`.
        assert_eq!(filler_len(&[0; 8], 0x1000), 8);
        assert_eq!(filler_len(&[0xeb, 0xfe, 0, 0, 0], 0x1000), 3);
    }

    #[test]
    fn int3_run_counts_behind_bytes_that_do_not_decode() {
        // A jump table's entries (clang for COFF puts them after the code), then int3 fill.
        let gap = [
            0x10, 0x00, 0x00, 0x00, 0x06, 0xff, 0xff, 0xff, 0xcc, 0xcc, 0xcc,
        ];
        assert_eq!(filler_len(&gap, 0x1000), 3);
    }

    #[test]
    fn an_empty_gap_has_no_padding() {
        assert_eq!(filler_len(&[], 0x1000), 0);
    }

    fn function(name: &str, rva: u64, size: u64) -> Function<'static> {
        Function {
            name: name.to_owned(),
            display_name: name.to_owned(),
            rva,
            size,
            section: ".text".to_owned(),
            compile_unit: None,
            linkage: Linkage::Global,
            has_debug_info: false,
            code: &[],
            padding_before: 0,
            first_instruction_len: None,
            signature: None,
            noreturn: false,
            aliases: Vec::new(),
            alias_display_names: Vec::new(),
            parent: None,
            uses_types: Vec::new(),
        }
    }

    /// The ELF `too_short` baseline from `frame_dummy` to `strict_mode_enabled`:
    /// `frame_dummy` has no size, so its code and the nopl behind it lie in one gap.
    #[test]
    fn a_symbol_without_size_does_not_hide_the_filler_behind_its_code() {
        const TEXT: &[u8] = &[
            0xf3, 0x0f, 0x1e, 0xfa, 0xe9, 0x77, 0xff, 0xff, 0xff, // frame_dummy at 0x1170
            0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00, // nopl 0x0(%rax) at 0x1179
            0x31, 0xc0, 0xc3, // strict_mode_enabled at 0x1180
        ];
        let mapped = [MappedSection {
            name: ".text",
            rva: 0x1170,
            bytes: TEXT,
        }];
        let mut functions = vec![
            function("frame_dummy", 0x1170, 0),
            function("strict_mode_enabled", 0x1180, 3),
        ];
        measure_padding(&mut functions, &mapped);
        assert_eq!(functions[1].padding_before, 7);
        // A function that directly follows another's last byte has none.
        let mut functions = vec![
            function("frame_dummy", 0x1170, 0x10),
            function("strict_mode_enabled", 0x1180, 3),
        ];
        measure_padding(&mut functions, &mapped);
        assert_eq!(functions[1].padding_before, 0);
    }
}
