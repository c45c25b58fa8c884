//! Lookups in the baseline image: where the running process keeps what the new code refers to.
//! Data and imports are found by name, pointer slots by what they point at, import stubs by the
//! slot they jump through; never by the fixed build's addresses.

use hotpatch_diff::canonical_name;
use hotpatch_image::{DataKind, Image};
use std::collections::HashMap;

/// Indexes of one baseline image, built once.
pub(crate) struct Baseline<'a> {
    pub image: &'a Image<'a>,
    /// Canonical data symbol name (qualified by compilation unit when it repeats) to index.
    data_by_name: HashMap<String, Vec<usize>>,
    /// `library!name` (library lowercase) and bare name to the import slot RVA.
    import_slots: HashMap<String, u64>,
    /// Relocated pointer slot target RVA to the slot's RVA.
    slots_by_target: HashMap<u64, u64>,
    /// Relocation symbol and addend to the slot's RVA.
    slots_by_symbol: HashMap<(String, i64), u64>,
    /// Slot RVA to the stub that jumps through it (`jmp [rip+slot]`).
    stubs_by_slot: HashMap<u64, u64>,
}

impl<'a> Baseline<'a> {
    pub(crate) fn new(image: &'a Image<'a>) -> Self {
        let mut data_by_name: HashMap<String, Vec<usize>> = HashMap::new();
        for (index, data) in image.data_symbols.iter().enumerate() {
            data_by_name
                .entry(canonical_name(&data.name))
                .or_default()
                .push(index);
        }
        let mut import_slots = HashMap::new();
        for import in &image.imports {
            if let Some(slot) = import.slot_rva {
                import_slots.insert(
                    format!("{}!{}", import.library.to_ascii_lowercase(), import.name),
                    slot,
                );
            }
        }
        let mut slots_by_target = HashMap::new();
        let mut slots_by_symbol = HashMap::new();
        for relocation in &image.relocations {
            if let Some(symbol) = &relocation.symbol {
                slots_by_symbol
                    .entry((symbol.clone(), relocation.addend))
                    .or_insert(relocation.rva);
                continue;
            }
            if let Some(target) = image.relocation_target(relocation) {
                slots_by_target.entry(target).or_insert(relocation.rva);
            }
        }
        Baseline {
            image,
            data_by_name,
            import_slots,
            slots_by_target,
            slots_by_symbol,
            stubs_by_slot: stubs(image),
        }
    }

    /// The baseline data symbol with this canonical name and compilation unit.
    pub(crate) fn data(
        &self,
        name: &str,
        compile_unit: Option<&str>,
        kind: DataKind,
    ) -> Option<&'a hotpatch_image::DataSymbol> {
        let candidates = self.data_by_name.get(name)?;
        let symbols = candidates
            .iter()
            .filter_map(|&idx| self.image.data_symbols.get(idx))
            .filter(|d| d.kind == kind);
        let matching: Vec<_> = symbols.collect();
        match matching.as_slice() {
            [only] => Some(only),
            several => several
                .iter()
                .find(|d| d.compile_unit.as_deref() == compile_unit)
                .copied(),
        }
    }

    pub(crate) fn import_slot(&self, library: &str, name: &str) -> Option<u64> {
        self.import_slots.get(&format!("{library}!{name}")).copied()
    }

    pub(crate) fn slot_pointing_at(&self, target_rva: u64) -> Option<u64> {
        self.slots_by_target.get(&target_rva).copied()
    }

    pub(crate) fn slot_for_symbol(&self, symbol: &str, addend: i64) -> Option<u64> {
        self.slots_by_symbol
            .get(&(symbol.to_owned(), addend))
            .copied()
    }

    pub(crate) fn stub_for_slot(&self, slot: u64) -> Option<u64> {
        self.stubs_by_slot.get(&slot).copied()
    }
}

/// Every `jmp [rip+disp32]` (`ff 25`, optionally after `endbr64` or a `bnd` prefix) in the
/// executable sections, by the slot it jumps through: PLT entries and PE import thunks.
fn stubs(image: &Image<'_>) -> HashMap<u64, u64> {
    let mut stubs = HashMap::new();
    for section in image.sections.iter().filter(|s| s.executable) {
        let Some(bytes) = image.bytes_at(section.rva, section.file_size.min(section.virtual_size))
        else {
            continue;
        };
        for at in 0..bytes.len().saturating_sub(6) {
            if bytes[at] != 0xff || bytes[at + 1] != 0x25 {
                continue;
            }
            let Some(disp) = bytes.get(at + 2..at + 6) else {
                continue;
            };
            let disp = i32::from_le_bytes([disp[0], disp[1], disp[2], disp[3]]);
            // `bnd jmp` (f2 ff 25) starts one byte earlier; the slot is relative to the end.
            let start = if at > 0 && bytes[at - 1] == 0xf2 {
                at - 1
            } else {
                at
            };
            let end = section.rva + at as u64 + 6;
            let slot = end.wrapping_add(disp as i64 as u64);
            let entry = if start >= 4 && bytes[start - 4..start] == [0xf3, 0x0f, 0x1e, 0xfa] {
                start - 4
            } else {
                start
            };
            stubs.entry(slot).or_insert(section.rva + entry as u64);
        }
    }
    stubs
}
