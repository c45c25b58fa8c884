//! Re-targeting one instruction's references: each typed reference of the fixed build's code
//! becomes a relocation to the baseline's copy of what it names (a matched function, the
//! original global, the baseline's import slot or stub) or to something the payload carries (a
//! replaced or added function, a new constant, a rewritten jump table). References inside the
//! same function need nothing: the function is copied whole, so relative offsets hold.

use crate::baseline::Baseline;
use crate::{CODE_ALIGN, Layout, Unliftable};
use hotpatch_diff::code::{
    Encoding, Flow, Instruction, JumpTable, TableEncoding, TableEntry, Target,
};
use hotpatch_image::{DataKind, ElfType, Function, Image};
use hotpatch_package::{Relocation, RelocationKind, RelocationTarget};
use std::collections::BTreeMap;

/// The largest unnamed constant copied into a payload.
const MAX_COPIED_CONSTANT: u64 = 64 * 1024;

pub(crate) struct Context<'a, 'b> {
    pub baseline: &'a Baseline<'a>,
    pub fixed: &'a Image<'a>,
    pub fixed_to_baseline: &'a BTreeMap<usize, usize>,
    pub layout: &'b mut Layout,
    pub relocations: Vec<Relocation>,
}

/// A function the payload carries: the fixed build's function, its indexes (as
/// `hotpatch_diff::ChangedFunction` has them; no baseline index for an added function) and its
/// offset in the payload.
pub(crate) struct Carried<'a, 'data> {
    pub function: &'a Function<'data>,
    pub fixed_index: usize,
    pub baseline_index: Option<usize>,
    pub offset: u64,
}

/// Where a re-targeted reference goes.
enum Destination {
    /// Nothing to do: the displacement is relative inside the copied function.
    Unchanged,
    Baseline(u64),
    Payload(u64),
}

impl Context<'_, '_> {
    pub(crate) fn retarget(
        &mut self,
        carried: &Carried<'_, '_>,
        instruction: &Instruction,
    ) -> Result<(), Unliftable> {
        let (function, function_offset) = (carried.function, carried.offset);
        let instruction_offset = function_offset + (instruction.rva - function.rva);
        let is_branch = matches!(
            instruction.flow,
            Flow::Call | Flow::Jump | Flow::ConditionalJump
        );
        for reference in instruction.references() {
            let problem = |why: &'static str| Unliftable::Reference {
                function: function.display_name.clone(),
                fixed_index: carried.fixed_index,
                baseline_index: carried.baseline_index,
                rva: instruction.rva,
                target: reference.target.render(),
                why,
            };
            let destination = match &reference.target {
                Target::JumpTable(table) => self
                    .jump_table(function, function_offset, reference.rva, table)
                    .map(Destination::Payload)
                    .ok_or_else(|| problem("jump table encoding not supported"))?,
                target => self
                    .destination(target, reference.rva, is_branch)
                    .map_err(problem)?,
            };
            let field = instruction_offset + u64::from(reference.field_offset);
            let instruction_end = instruction_offset + u64::from(instruction.len);
            let (kind, addend) = match reference.encoding {
                Encoding::Rel8Branch => match destination {
                    Destination::Unchanged => continue,
                    _ => return Err(problem("short branch out of the function")),
                },
                Encoding::Rel32Branch | Encoding::RipRelative => {
                    // S + A - P must equal S - instruction_end: A = field - instruction_end.
                    (RelocationKind::Rel32, field as i64 - instruction_end as i64)
                }
                Encoding::Absolute64 => (RelocationKind::Abs64, 0),
                Encoding::Absolute32 => {
                    // A 32-bit absolute address only holds for an image at a fixed address, and
                    // only for targets inside it.
                    return match destination {
                        Destination::Baseline(rva) if self.fixed_address_image() => self
                            .write_u32(field, rva)
                            .ok_or_else(|| problem("absolute address does not fit 32 bits")),
                        Destination::Unchanged => Ok(()),
                        _ => Err(problem("32-bit absolute address into the payload")),
                    };
                }
            };
            let target = match destination {
                Destination::Unchanged => continue,
                Destination::Baseline(rva) => RelocationTarget::Baseline { rva },
                Destination::Payload(offset) => RelocationTarget::Payload { offset },
            };
            self.relocations.push(Relocation {
                offset: field,
                kind,
                target,
                addend,
            });
        }
        Ok(())
    }

    fn fixed_address_image(&self) -> bool {
        self.fixed
            .identity
            .elf
            .as_ref()
            .is_some_and(|elf| elf.elf_type == ElfType::Exec)
    }

    fn write_u32(&mut self, field: u64, value: u64) -> Option<()> {
        let value = u32::try_from(value).ok()?;
        let at = usize::try_from(field).ok()?;
        self.layout
            .bytes
            .get_mut(at..at + 4)?
            .copy_from_slice(&value.to_le_bytes());
        Some(())
    }

    /// Where a reference to `target` (at `rva` in the fixed build) goes.
    fn destination(
        &mut self,
        target: &Target,
        rva: u64,
        is_branch: bool,
    ) -> Result<Destination, &'static str> {
        let baseline = self.baseline;
        match target {
            Target::Label { .. } | Target::InsideInstruction { .. } => Ok(Destination::Unchanged),
            Target::Function { index, offset, .. } => {
                // A call may go straight to a replaced function's new copy; an address taken
                // must be the baseline entry, so it compares equal with pointers old code
                // stored.
                if is_branch && let Some(&at) = self.layout.function_offsets.get(index) {
                    return Ok(Destination::Payload(at + offset));
                }
                let baseline_index = self
                    .fixed_to_baseline
                    .get(index)
                    .ok_or("a function the baseline does not have, reached by address")?;
                let old = &baseline.image.functions[*baseline_index];
                let new = &self.fixed.functions[*index];
                if *offset != 0 && old.size != new.size {
                    return Err("an address inside a function whose layout differs");
                }
                Ok(Destination::Baseline(old.rva + offset))
            }
            Target::Data {
                index,
                name,
                offset,
                data_kind,
                ..
            } => {
                let symbol = &self.fixed.data_symbols[*index];
                let old = baseline.data(name, symbol.compile_unit.as_deref(), *data_kind);
                match data_kind {
                    DataKind::ReadOnly => {
                        let same = old.filter(|old| {
                            old.size == symbol.size
                                && baseline.image.bytes_at(old.rva, old.size)
                                    == self.fixed.bytes_at(symbol.rva, symbol.size)
                                && !has_relocations(self.fixed, symbol.rva, symbol.size)
                        });
                        match same {
                            Some(old) => Ok(Destination::Baseline(old.rva + offset)),
                            None => self
                                .copy_data(symbol.rva, symbol.size, name)
                                .map(|at| Destination::Payload(at + offset)),
                        }
                    }
                    // Storage stays the baseline's: new code must reach the original globals.
                    _ => old
                        .map(|old| Destination::Baseline(old.rva + offset))
                        .ok_or("new writable or thread-local data, which the payload cannot hold"),
                }
            }
            Target::Import { library, name } => baseline
                .import_slot(library, name)
                .map(Destination::Baseline)
                .ok_or("an import the baseline does not have"),
            Target::SymbolSlot { symbol, addend } => baseline
                .slot_for_symbol(symbol, *addend)
                .map(Destination::Baseline)
                .ok_or("a slot for a symbol the baseline does not have"),
            Target::Slot { pointee } => {
                let pointee_rva = self.baseline_rva_of(pointee)?;
                baseline
                    .slot_pointing_at(pointee_rva)
                    .map(Destination::Baseline)
                    .ok_or("a pointer slot the baseline does not have")
            }
            Target::Stub { slot } => {
                let slot_rva = match slot.as_ref() {
                    Target::Import { library, name } => baseline.import_slot(library, name),
                    Target::SymbolSlot { symbol, addend } => {
                        baseline.slot_for_symbol(symbol, *addend)
                    }
                    other => self.baseline_rva_of(other).ok(),
                }
                .ok_or("a stub whose slot the baseline does not have")?;
                baseline
                    .stub_for_slot(slot_rva)
                    .map(Destination::Baseline)
                    .ok_or("no stub in the baseline jumps through that slot")
            }
            Target::Constant(constant) => {
                // Copy the constant up to the next object: at least what was compared.
                let len = constant.len.max(1);
                if len > MAX_COPIED_CONSTANT {
                    return Err("an unnamed constant too large to copy");
                }
                self.copy_data(rva, len, &target.render())
                    .map(Destination::Payload)
            }
            Target::JumpTable(_) => Err("jump table in an unexpected place"),
            Target::Unresolved { .. } => Err("nothing the engine can name"),
        }
    }

    /// The baseline RVA of a function or data symbol target (for finding pointer slots).
    fn baseline_rva_of(&self, target: &Target) -> Result<u64, &'static str> {
        match target {
            Target::Function { index, offset, .. } => self
                .fixed_to_baseline
                .get(index)
                .map(|&b| self.baseline.image.functions[b].rva + offset)
                .ok_or("a pointer to a function the baseline does not have"),
            Target::Data {
                index,
                name,
                offset,
                data_kind,
                ..
            } => {
                let symbol = &self.fixed.data_symbols[*index];
                self.baseline
                    .data(name, symbol.compile_unit.as_deref(), *data_kind)
                    .map(|old| old.rva + offset)
                    .ok_or("a pointer to data the baseline does not have")
            }
            _ => Err("a pointer slot to something other than a symbol"),
        }
    }

    /// Copies read-only bytes of the fixed build into the payload once; refuses bytes that hold
    /// relocated pointers (they would keep the fixed build's addresses).
    fn copy_data(&mut self, rva: u64, len: u64, what: &str) -> Result<u64, &'static str> {
        if let Some(&at) = self.layout.data_offsets.get(&rva) {
            return Ok(at);
        }
        if has_relocations(self.fixed, rva, len) {
            return Err("read-only data holding relocated pointers");
        }
        let bytes = self
            .fixed
            .bytes_at(rva, len)
            .ok_or("read-only data whose bytes are not in the file")?;
        let at = self.layout.place(bytes, 8);
        self.layout.data_offsets.insert(rva, at);
        self.layout.copied.push(crate::CopiedData {
            what: what.to_owned(),
            payload_offset: at,
            len,
        });
        Ok(at)
    }

    /// Copies a jump table next to the code and rewrites its entries for their new place.
    fn jump_table(
        &mut self,
        function: &Function<'_>,
        function_offset: u64,
        rva: u64,
        table: &JumpTable,
    ) -> Option<u64> {
        if let Some(&at) = self.layout.data_offsets.get(&rva) {
            return Some(at);
        }
        let width = u64::from(table.entry_width);
        let len = width * table.entries.len() as u64;
        let original = self.fixed.bytes_at(rva, len)?.to_vec();
        let at = self.layout.place(&original, CODE_ALIGN.min(8));
        self.layout.data_offsets.insert(rva, at);
        self.layout.copied.push(crate::CopiedData {
            what: format!("jumptable[{}]", table.entries.len()),
            payload_offset: at,
            len,
        });
        for (slot, entry) in table.entries.iter().enumerate() {
            let place = at + slot as u64 * width;
            match entry {
                TableEntry::InsideInstruction { .. } => return None,
                TableEntry::Label { .. } => {}
                TableEntry::Function {
                    index,
                    name,
                    offset,
                } => {
                    // Code outside the copied function (its `.cold` part): the new copy of that
                    // part when the payload carries one, else the baseline's part the diff
                    // matched. The entry holds target minus table, a `Rel32` whose place is
                    // the entry itself: `S + A - P` with `A = place - table` gives
                    // `S - table`.
                    if table.encoding != TableEncoding::TableRelative || width != 4 {
                        return None;
                    }
                    let target = Target::Function {
                        index: *index,
                        name: name.clone(),
                        offset: *offset,
                    };
                    let destination = match self.destination(&target, rva, true).ok()? {
                        Destination::Baseline(rva) => RelocationTarget::Baseline { rva },
                        Destination::Payload(offset) => RelocationTarget::Payload { offset },
                        Destination::Unchanged => return None,
                    };
                    self.relocations.push(Relocation {
                        offset: place,
                        kind: RelocationKind::Rel32,
                        target: destination,
                        addend: i64::try_from(place - at).ok()?,
                    });
                    continue;
                }
            }
            // The entry's target, from the original entry value (the normalizer already proved
            // it lands on an instruction of the function).
            let entry_at = rva + slot as u64 * width;
            let raw = self.fixed.bytes_at(entry_at, width)?;
            let target_rva = match table.encoding {
                TableEncoding::TableRelative => {
                    let value = i32::from_le_bytes(raw.try_into().ok()?);
                    rva.wrapping_add(value as i64 as u64)
                }
                TableEncoding::ImageRelative | TableEncoding::Absolute => return None,
            };
            let target_offset = function_offset + target_rva.checked_sub(function.rva)?;
            let value = i32::try_from(target_offset as i64 - at as i64).ok()?;
            let place = usize::try_from(place).ok()?;
            self.layout
                .bytes
                .get_mut(place..place + 4)?
                .copy_from_slice(&value.to_le_bytes());
        }
        Some(at)
    }
}

/// Whether any relocated slot lies in `[rva, rva + len)`.
fn has_relocations(image: &Image<'_>, rva: u64, len: u64) -> bool {
    let start = image.relocations.partition_point(|r| r.rva < rva);
    image
        .relocations
        .get(start)
        .is_some_and(|r| r.rva < rva.saturating_add(len))
}
