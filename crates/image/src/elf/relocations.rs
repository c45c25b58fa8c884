//! Relocations of the linked file and the initializer tables they feed.
//!
//! Dynamic relocations (`SHF_ALLOC` relocation sections: `.rela.dyn`, `.rela.plt`, `.relr.dyn`)
//! are what the loader applies; static ones (`.rela.text` and friends, kept only by
//! `-Wl,--emit-relocs`) are what the linker applied, which tells a patch builder every place
//! that refers to an address. In a linked file `r_offset` is a virtual address in both cases.

use std::collections::HashMap;

use object::elf;
use object::read::elf::{Rel, Rela, SectionHeader};
use object::{SectionIndex, SymbolIndex};

use super::{ENDIAN, ElfHeader, SectionFacts, SectionTable, section_bytes};
use crate::model::{
    Diagnostic, DiagnosticLocation, Initializer, InitializerTable, Relocation, RelocationOrigin,
    RelocationType,
};

/// Every dynamic relocation, and the static relocations of allocated sections.
pub(super) fn read<'data>(
    table: &SectionTable<'data>,
    data: &'data [u8],
    sections: &[SectionFacts<'data>],
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<Relocation> {
    let mut relocations = Vec::new();
    for (index, header) in table.enumerate() {
        let Some(facts) = sections.get(index.0) else {
            continue;
        };
        let sh_type = header.sh_type(ENDIAN);
        if !matches!(sh_type, elf::SHT_RELA | elf::SHT_REL | elf::SHT_RELR) {
            continue;
        }
        let origin = if facts.is_alloc() {
            RelocationOrigin::Dynamic
        } else {
            // A static relocation section applies to the section named by `sh_info`; those
            // of debug sections say nothing about the running image.
            let target = usize::try_from(header.sh_info(ENDIAN))
                .ok()
                .and_then(|target| sections.get(target));
            if !target.is_some_and(SectionFacts::is_alloc) {
                continue;
            }
            RelocationOrigin::Static
        };
        let mut report = |message: String| {
            diagnostics.push(Diagnostic {
                location: DiagnosticLocation::Section(facts.name.to_owned()),
                message,
                function: None,
            });
        };
        match sh_type {
            elf::SHT_RELA => match header.rela(ENDIAN, data) {
                Ok(Some((entries, link))) => {
                    let symbols = SymbolNames::new(table, data, link, sections);
                    relocations.extend(entries.iter().map(|entry| {
                        relocation(
                            entry.r_offset(ENDIAN),
                            entry.r_type(ENDIAN, false),
                            entry.r_sym(ENDIAN, false),
                            entry.r_addend(ENDIAN),
                            origin,
                            &symbols,
                        )
                    }));
                }
                Ok(None) => {}
                Err(error) => report(format!("cannot read the relocations: {error}")),
            },
            elf::SHT_REL => match header.rel(ENDIAN, data) {
                Ok(Some((entries, link))) => {
                    let symbols = SymbolNames::new(table, data, link, sections);
                    // REL entries keep the addend in the patched bytes; the model records 0.
                    relocations.extend(entries.iter().map(|entry| {
                        relocation(
                            entry.r_offset(ENDIAN),
                            entry.r_type(ENDIAN),
                            entry.r_sym(ENDIAN),
                            0,
                            origin,
                            &symbols,
                        )
                    }));
                }
                Ok(None) => {}
                Err(error) => report(format!("cannot read the relocations: {error}")),
            },
            _ => match header.relr(ENDIAN, data) {
                Ok(Some(offsets)) => {
                    // RELR packs R_X86_64_RELATIVE relocations whose addend is the slot's
                    // content; record it so a RELR file reads like a RELA one.
                    relocations.extend(offsets.map(|offset| Relocation {
                        rva: offset,
                        kind: RelocationType::ELF_RELATIVE,
                        origin,
                        symbol: None,
                        addend: read_u64_at(sections, data, offset).map_or(0, |value| value as i64),
                    }));
                }
                Ok(None) => {}
                Err(error) => report(format!("cannot read the relocations: {error}")),
            },
        }
    }
    relocations
}

fn relocation(
    offset: u64,
    r_type: u32,
    r_sym: u32,
    addend: i64,
    origin: RelocationOrigin,
    symbols: &SymbolNames<'_, '_>,
) -> Relocation {
    Relocation {
        rva: offset,
        kind: RelocationType::Elf(r_type),
        origin,
        symbol: symbols.name(r_sym),
        addend,
    }
}

/// Resolves relocation symbol indices to names in the symbol table a relocation section links.
struct SymbolNames<'data, 'a> {
    table: Option<object::read::elf::SymbolTable<'data, ElfHeader>>,
    sections: &'a [SectionFacts<'data>],
}

impl<'data, 'a> SymbolNames<'data, 'a> {
    fn new(
        table: &SectionTable<'data>,
        data: &'data [u8],
        link: SectionIndex,
        sections: &'a [SectionFacts<'data>],
    ) -> Self {
        // A relocation section without a symbol table (sh_link 0) has only symbol-less entries.
        let table = (link.0 != 0)
            .then(|| table.symbol_table_by_index(ENDIAN, data, link).ok())
            .flatten();
        SymbolNames { table, sections }
    }

    /// The symbol's name; for a section symbol (which has none), the section's name.
    fn name(&self, r_sym: u32) -> Option<String> {
        if r_sym == 0 {
            return None;
        }
        let table = self.table.as_ref()?;
        let index = SymbolIndex(usize::try_from(r_sym).ok()?);
        let symbol = table.symbol(index).ok()?;
        let name = table.symbol_name(ENDIAN, symbol).ok()?;
        if !name.is_empty() {
            return Some(String::from_utf8_lossy(name).into_owned());
        }
        if symbol.st_type() == elf::STT_SECTION {
            let section = table.symbol_section(ENDIAN, symbol, index).ok()??;
            return self.sections.get(section.0).map(|s| s.name.to_owned());
        }
        None
    }
}

/// The little-endian u64 at a virtual address, if a section holds it in the file.
fn read_u64_at(sections: &[SectionFacts<'_>], data: &[u8], address: u64) -> Option<u64> {
    let section = sections
        .iter()
        .find(|s| s.is_alloc() && !s.is_nobits() && s.contains(address))?;
    let bytes = section_bytes(section, data);
    let start = usize::try_from(address.checked_sub(section.addr)?).ok()?;
    let slot = bytes.get(start..start.checked_add(8)?)?;
    Some(u64::from_le_bytes(slot.try_into().ok()?))
}

/// The tables of function pointers the loader or C runtime calls.
const INITIALIZER_TABLES: [&str; 5] = [
    ".preinit_array",
    ".init_array",
    ".fini_array",
    ".ctors",
    ".dtors",
];

/// The slots of every initializer table with the function each one points to.
///
/// In a PIE a slot holds 0 in the file and an `R_X86_64_RELATIVE` relocation supplies the
/// address as its addend; `.ctors`/`.dtors` start and end with -1 and 0 markers, which are not
/// functions.
pub(super) fn initializers(
    sections: &[SectionFacts<'_>],
    data: &[u8],
    relocations: &[Relocation],
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<Initializer> {
    let relative_addends: HashMap<u64, i64> = relocations
        .iter()
        .filter(|r| r.origin == RelocationOrigin::Dynamic && r.kind == RelocationType::ELF_RELATIVE)
        .map(|r| (r.rva, r.addend))
        .collect();
    let mut initializers = Vec::new();
    for section in sections.iter().filter(|s| s.is_alloc()) {
        let by_type = matches!(
            section.sh_type,
            elf::SHT_INIT_ARRAY | elf::SHT_FINI_ARRAY | elf::SHT_PREINIT_ARRAY
        );
        if !by_type && !INITIALIZER_TABLES.contains(&section.name) {
            continue;
        }
        let bytes = section_bytes(section, data);
        if !bytes.len().is_multiple_of(8) {
            diagnostics.push(Diagnostic {
                location: DiagnosticLocation::Section(section.name.to_owned()),
                message: format!(
                    "the table is {} bytes long, not a whole number of 8-byte slots",
                    bytes.len()
                ),
                function: None,
            });
        }
        let mut slot_rva = section.addr;
        for slot in bytes.chunks_exact(8) {
            let mut target = u64::from_le_bytes(slot.try_into().unwrap_or([0; 8]));
            if target == 0
                && let Some(addend) = relative_addends.get(&slot_rva)
            {
                target = *addend as u64;
            }
            if target != 0 && target != u64::MAX {
                initializers.push(Initializer {
                    table: InitializerTable::ElfSection(section.name.to_owned()),
                    slot_rva,
                    target_rva: target,
                    target: None,
                });
            }
            slot_rva = slot_rva.saturating_add(8);
        }
    }
    initializers
}
