//! Normalization: decodes a function with iced-x86 and turns every address operand into a typed
//! [`Reference`] naming what it points at (a function or data symbol plus offset, an import
//! slot, a stub, the bounded content of an unnamed constant, the entries of a jump table, or an
//! instruction index inside the same function). Two builds of an unchanged function give equal
//! instructions however far the linker moved things.

use crate::code::{
    Constant, ConstantContent, Encoding, Flow, Instruction, JumpTable, Labels, Memory, Operand,
    Operands, Reference, TableBound, TableEncoding, TableEntry, Target, Unresolved, Value,
};
use hotpatch_image::{DataKind, ElfType, Function, Image};
use iced_x86::{
    ConstantOffsets, Decoder, DecoderOptions, FlowControl, Instruction as Decoded, MemorySize,
    Mnemonic, OpKind, Register,
};
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// How far a C string is searched for its NUL.
const MAX_STRING_SCAN: u64 = 64 * 1024;
/// Strings longer than this show as a prefix, their length and a hash.
const MAX_STRING_SHOWN: usize = 96;
/// Read-only data up to this size compares with its relocated pointers resolved.
const MAX_RENDERED_DATA: u64 = 64 * 1024;
/// The most bytes of an unnamed constant of unknown size that are compared.
const MAX_CONSTANT_WINDOW: u64 = 256;
/// Jump tables longer than this are not followed.
const MAX_JUMP_TABLE: u64 = 4096;
/// How many instructions before an indexed jump the guarding compare is looked for.
const GUARD_WINDOW: usize = 12;

/// An import's (lowercase library, name), shared by every reference to its slot.
type ImportName = (Arc<str>, Arc<str>);

/// Facts about one image that every function's normalization consults, computed once.
///
/// The lookups `resolve` makes for every address operand bisect dense vectors of 8-byte keys
/// rather than the image's records (a `Function` is about 240 bytes): the keys of a bisection
/// then share cache lines, which made `resolve` a tenth of the diff's time.
pub(crate) struct ImageIndex {
    /// Import slot (PE IAT entry, GOT slot of an import) to (library, name), sorted by slot.
    import_slots: Vec<(u64, ImportName)>,
    /// Sorted addresses where one object starts: every address code refers to outside
    /// executable sections, data symbols, relocation targets. An unnamed constant or a jump
    /// table never extends past the next one.
    boundaries: Vec<u64>,
    /// `image.functions[i].rva`, in the same (sorted) order.
    function_starts: Vec<u64>,
    /// `image.data_symbols[i].rva`, in the same (sorted) order.
    data_starts: Vec<u64>,
    /// `image.relocations[i].rva`, in the same (sorted) order.
    relocation_slots: Vec<u64>,
}

impl ImageIndex {
    pub(crate) fn new(image: &Image<'_>) -> Self {
        let mut import_slots: Vec<(u64, ImportName)> = image
            .imports
            .iter()
            .filter_map(|import| {
                Some((
                    import.slot_rva?,
                    (
                        Arc::from(import.library.to_ascii_lowercase()),
                        Arc::from(import.name.as_str()),
                    ),
                ))
            })
            .collect();
        // Of several imports naming one slot the last counts, as it did in the map this was.
        import_slots.reverse();
        import_slots.sort_by_key(|&(slot, _)| slot);
        import_slots.dedup_by_key(|&mut (slot, _)| slot);
        let mut boundaries: Vec<u64> = image
            .functions
            .par_iter()
            .flat_map_iter(|function| referenced_addresses(function, image))
            .collect();
        boundaries.extend(image.data_symbols.iter().map(|d| d.rva));
        boundaries.extend(image.functions.iter().map(|f| f.rva));
        boundaries.extend(
            image
                .relocations
                .iter()
                .filter_map(|r| image.relocation_target(r)),
        );
        boundaries.sort_unstable();
        boundaries.dedup();
        ImageIndex {
            import_slots,
            boundaries,
            function_starts: image.functions.iter().map(|f| f.rva).collect(),
            data_starts: image.data_symbols.iter().map(|d| d.rva).collect(),
            relocation_slots: image.relocations.iter().map(|r| r.rva).collect(),
        }
    }

    /// The first boundary strictly after `rva`.
    fn next_boundary(&self, rva: u64) -> Option<u64> {
        let idx = self.boundaries.partition_point(|&b| b <= rva);
        self.boundaries.get(idx).copied()
    }

    /// The import whose slot is `rva`.
    fn import_at(&self, rva: u64) -> Option<&ImportName> {
        self.import_slots
            .binary_search_by_key(&rva, |&(slot, _)| slot)
            .ok()
            .map(|at| &self.import_slots[at].1)
    }

    /// Where the relocated pointer slot at `rva` points: [`Image::pointer_target`] on the
    /// dense keys.
    fn pointer_target(&self, image: &Image<'_>, rva: u64) -> Option<u64> {
        let relocation = image
            .relocations
            .get(self.first_relocation_from(rva))
            .filter(|r| r.rva == rva)?;
        image.relocation_target(relocation)
    }

    /// The index of the first relocation at or after `rva`.
    fn first_relocation_from(&self, rva: u64) -> usize {
        self.relocation_slots.partition_point(|&slot| slot < rva)
    }
}

/// The addresses a function's code refers to by RIP-relative or absolute operands.
fn referenced_addresses(function: &Function<'_>, image: &Image<'_>) -> Vec<u64> {
    let mut decoder = Decoder::with_ip(64, function.code, function.rva, DecoderOptions::NONE);
    let mut found = Vec::new();
    let mut instruction = Decoded::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut instruction);
        if instruction.is_ip_rel_memory_operand() {
            found.push(instruction.ip_rel_memory_address());
        }
        for operand in 0..instruction.op_count() {
            if is_immediate(instruction.op_kind(operand))
                && let Some(rva) = absolute_reference(instruction.immediate(operand), image)
            {
                found.push(rva);
            }
        }
    }
    found
}

/// How symbol names are written; the fixed build's names are mapped to the baseline names of
/// their matches, so renames do not show in callers.
pub(crate) struct Namer<'a> {
    pub image: &'a Image<'a>,
    /// Fixed-build function name to the name it is compared under.
    pub renames: &'a HashMap<String, String>,
    index: &'a ImageIndex,
    /// Each function's compared name, by index, made on first use: a function is named once
    /// per diff, not once per call to it, and every reference shares that one copy.
    function_names: Vec<OnceLock<Arc<str>>>,
    /// Each read-only data symbol's content hash, by index and by the pointer depth it was
    /// rendered at, made on first use: a table is rendered once, not once per reference.
    data_contents: Vec<[OnceLock<Option<u64>>; 3]>,
    /// Each data symbol's compared name, by index, made on first use.
    data_names: Vec<OnceLock<Arc<str>>>,
}

impl<'a> Namer<'a> {
    pub(crate) fn new(
        image: &'a Image<'a>,
        renames: &'a HashMap<String, String>,
        index: &'a ImageIndex,
    ) -> Self {
        Namer {
            image,
            renames,
            index,
            function_names: (0..image.functions.len())
                .map(|_| OnceLock::new())
                .collect(),
            data_contents: (0..image.data_symbols.len())
                .map(|_| Default::default())
                .collect(),
            data_names: (0..image.data_symbols.len())
                .map(|_| OnceLock::new())
                .collect(),
        }
    }

    fn function_name(&self, index: usize) -> Arc<str> {
        let name = |function: &Function<'_>| match self.renames.get(&function.name) {
            Some(renamed) => Arc::from(renamed.as_str()),
            None => Arc::from(crate::matching::canonical_name(&function.name)),
        };
        match (
            self.function_names.get(index),
            self.image.functions.get(index),
        ) {
            (Some(cell), Some(function)) => cell.get_or_init(|| name(function)).clone(),
            _ => Arc::from(""),
        }
    }

    fn data_name(&self, index: usize) -> Arc<str> {
        match (
            self.data_names.get(index),
            self.image.data_symbols.get(index),
        ) {
            (Some(cell), Some(data)) => cell
                .get_or_init(|| Arc::from(crate::matching::canonical_name(&data.name)))
                .clone(),
            _ => Arc::from(""),
        }
    }

    /// The content hash of read-only data symbol `index`, rendered at pointer depth `depth`.
    fn data_content(
        &self,
        index: usize,
        depth: u32,
        make: impl FnOnce() -> Option<u64>,
    ) -> Option<u64> {
        match self
            .data_contents
            .get(index)
            .and_then(|cells| cells.get(depth as usize))
        {
            Some(cell) => *cell.get_or_init(make),
            None => make(),
        }
    }
}

/// The function being normalized: its bounds and its instruction indices.
struct Scope<'f> {
    function: &'f Function<'f>,
    index_of: &'f InstructionIndex,
}

/// Instruction index by address (alignment filler mapped to what follows it), sorted by
/// address as decoded: a binary search, cheaper than a hash map built per function.
struct InstructionIndex(Vec<(u64, usize)>);

impl InstructionIndex {
    fn get(&self, rva: u64) -> Option<usize> {
        self.0
            .binary_search_by_key(&rva, |&(ip, _)| ip)
            .ok()
            .map(|at| self.0[at].1)
    }

    fn insert(&mut self, rva: u64, index: usize) {
        self.0.push((rva, index));
    }
}

impl Scope<'_> {
    fn contains(&self, rva: u64) -> bool {
        rva >= self.function.rva && rva < self.function.end()
    }

    fn local(&self, rva: u64) -> Option<Target> {
        if let Some(index) = self.index_of.get(rva) {
            return Some(Target::Label { index });
        }
        self.contains(rva).then(|| Target::InsideInstruction {
            offset: rva - self.function.rva,
        })
    }
}

/// Decodes and normalizes `function`.
pub(crate) fn normalize(function: &Function<'_>, namer: &Namer<'_>) -> Vec<Instruction> {
    let (decoded, offsets, index_of) = decode(function);
    let scope = Scope {
        function,
        index_of: &index_of,
    };
    (0..decoded.len())
        .map(|at| normalize_instruction(&decoded, &offsets[at], at, &scope, namer))
        .collect()
}

/// The instructions of `function`, without alignment filler (nop, int3 between code), which
/// moves with addresses.
///
/// Branch targets inside the function are written as instruction indices, which survive changes
/// in instruction length and alignment padding; the returned map gives each address its index,
/// and a branch to dropped filler (a loop aligned with nops) the index of what follows it.
/// The constant offsets (where displacements and immediates sit) come with each instruction,
/// since iced-x86 computes them from the decoder's state right after decoding.
fn decode(function: &Function<'_>) -> (Vec<Decoded>, Vec<ConstantOffsets>, InstructionIndex) {
    let mut decoder = Decoder::with_ip(64, function.code, function.rva, DecoderOptions::NONE);
    let mut instructions = Vec::with_capacity(function.code.len() / 4);
    let mut offsets = Vec::with_capacity(function.code.len() / 4);
    let mut index_of = InstructionIndex(Vec::with_capacity(function.code.len() / 4));
    let mut filler = Vec::new();
    while decoder.can_decode() {
        let instruction = decoder.decode();
        if matches!(instruction.mnemonic(), Mnemonic::Nop | Mnemonic::Int3) {
            filler.push(instruction.ip());
            continue;
        }
        for ip in filler.drain(..) {
            index_of.insert(ip, instructions.len());
        }
        index_of.insert(instruction.ip(), instructions.len());
        offsets.push(decoder.get_constant_offsets(&instruction));
        instructions.push(instruction);
    }
    // Trailing int3 after the last instruction is padding; a trailing int3 that a branch reaches
    // (a trap after a noreturn call) still gets an index past the end, which reads as "end".
    for ip in filler {
        index_of.insert(ip, instructions.len());
    }
    (instructions, offsets, index_of)
}

/// Mnemonics compilers do not emit for C and C++ code: the mark of inline assembly.
const SYSTEM_MNEMONICS: &[Mnemonic] = &[
    Mnemonic::Cpuid,
    Mnemonic::Rdtsc,
    Mnemonic::Rdtscp,
    Mnemonic::Syscall,
    Mnemonic::Sysenter,
    Mnemonic::Int,
    Mnemonic::Into,
    Mnemonic::Cli,
    Mnemonic::Sti,
    Mnemonic::Hlt,
    Mnemonic::In,
    Mnemonic::Out,
    Mnemonic::Insb,
    Mnemonic::Outsb,
    Mnemonic::Rdmsr,
    Mnemonic::Wrmsr,
    Mnemonic::Lgdt,
    Mnemonic::Lidt,
    Mnemonic::Invlpg,
    Mnemonic::Xgetbv,
    Mnemonic::Xsetbv,
    Mnemonic::Rdrand,
    Mnemonic::Rdseed,
];

fn normalize_instruction(
    decoded: &[Decoded],
    offsets: &ConstantOffsets,
    at: usize,
    scope: &Scope<'_>,
    namer: &Namer<'_>,
) -> Instruction {
    let instruction = &decoded[at];
    let function = scope.function;
    let len = instruction.len() as u8;
    if instruction.is_invalid() {
        return Instruction {
            rva: instruction.ip(),
            len,
            mnemonic: "(bad)",
            prefixes: Vec::new(),
            operands: Operands::new(),
            flow: Flow::Invalid,
            system: false,
            undecodable: bytes_of(instruction, function).to_vec(),
        };
    }
    let mut prefixes = Vec::new();
    if instruction.has_lock_prefix() {
        prefixes.push("lock");
    }
    if instruction.has_repne_prefix() {
        prefixes.push("repne");
    }
    if instruction.has_rep_prefix() {
        prefixes.push("rep");
    }
    let mut operands = Operands::new();
    for operand in 0..instruction.op_count() {
        let kind = instruction.op_kind(operand);
        let normalized = match kind {
            OpKind::Register => Operand::Register {
                name: register_name(instruction.op_register(operand)),
            },
            OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
                let target_rva = instruction.near_branch_target();
                let target = scope
                    .local(target_rva)
                    .unwrap_or_else(|| resolve(target_rva, namer, 0, None));
                let (field_offset, field_width) = branch_field(offsets, instruction);
                Operand::Branch {
                    reference: Reference {
                        field_offset,
                        field_width,
                        encoding: if field_width == 1 {
                            Encoding::Rel8Branch
                        } else {
                            Encoding::Rel32Branch
                        },
                        rva: target_rva,
                        target,
                    },
                }
            }
            OpKind::Memory => Operand::Memory(memory_operand(decoded, at, offsets, scope, namer)),
            kind if is_immediate(kind) => {
                let value = instruction.immediate(operand);
                match absolute_reference(value, namer.image) {
                    Some(rva) => {
                        let (field_offset, field_width) = immediate_field(offsets, operand);
                        Operand::Immediate {
                            value: Value::Address {
                                reference: Reference {
                                    field_offset,
                                    field_width,
                                    encoding: if field_width == 8 {
                                        Encoding::Absolute64
                                    } else {
                                        Encoding::Absolute32
                                    },
                                    rva,
                                    target: resolve(rva, namer, 0, None),
                                },
                            },
                        }
                    }
                    None => Operand::Immediate {
                        value: Value::Constant {
                            value: value as i64,
                        },
                    },
                }
            }
            other => Operand::Other {
                name: op_kind_name(other),
            },
        };
        operands.push(normalized);
    }
    let flow = match instruction.flow_control() {
        FlowControl::Next | FlowControl::XbeginXabortXend => Flow::Next,
        FlowControl::Return => Flow::Return,
        FlowControl::UnconditionalBranch => Flow::Jump,
        FlowControl::ConditionalBranch => Flow::ConditionalJump,
        FlowControl::Call => Flow::Call,
        FlowControl::IndirectBranch => Flow::IndirectJump,
        FlowControl::IndirectCall => Flow::IndirectCall,
        FlowControl::Interrupt | FlowControl::Exception => Flow::Trap,
    };
    let flow = if instruction.mnemonic() == Mnemonic::Hlt {
        Flow::Trap
    } else {
        flow
    };
    Instruction {
        rva: instruction.ip(),
        len,
        mnemonic: mnemonic_name(instruction.mnemonic()),
        prefixes,
        operands,
        flow,
        system: SYSTEM_MNEMONICS.contains(&instruction.mnemonic()),
        undecodable: Vec::new(),
    }
}

fn is_immediate(kind: OpKind) -> bool {
    matches!(
        kind,
        OpKind::Immediate8
            | OpKind::Immediate8_2nd
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64
    )
}

fn branch_field(offsets: &ConstantOffsets, instruction: &Decoded) -> (u8, u8) {
    if offsets.has_immediate() {
        (
            offsets.immediate_offset() as u8,
            offsets.immediate_size() as u8,
        )
    } else {
        // Branch displacements are the last bytes of the instruction.
        let width = match instruction.op0_kind() {
            OpKind::NearBranch16 => 2,
            _ if instruction.len() == 2 => 1,
            _ => 4,
        };
        ((instruction.len() as u8).saturating_sub(width), width)
    }
}

fn immediate_field(offsets: &ConstantOffsets, operand: u32) -> (u8, u8) {
    if operand > 0 && offsets.has_immediate2() {
        (
            offsets.immediate_offset2() as u8,
            offsets.immediate_size2() as u8,
        )
    } else {
        (
            offsets.immediate_offset() as u8,
            offsets.immediate_size() as u8,
        )
    }
}

fn bytes_of<'a>(instruction: &Decoded, function: &'a Function<'_>) -> &'a [u8] {
    let start = instruction.ip().saturating_sub(function.rva) as usize;
    function
        .code
        .get(start..start.saturating_add(instruction.len()))
        .unwrap_or(&[])
}

/// The lowercase names of iced-x86's enums, formatted once per process: formatting them
/// for every instruction was a large share of the diff's time.
struct EnumNames {
    mnemonics: Vec<String>,
    registers: Vec<String>,
    memory_sizes: Vec<String>,
    /// As iced-x86 writes them (`MemorySegRSI`): [`Operand::Other`] keeps them so.
    op_kinds: Vec<String>,
}

fn enum_names() -> &'static EnumNames {
    static NAMES: std::sync::OnceLock<EnumNames> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| EnumNames {
        mnemonics: Mnemonic::values()
            .map(|m| format!("{m:?}").to_lowercase())
            .collect(),
        registers: Register::values()
            .map(|r| format!("{r:?}").to_lowercase())
            .collect(),
        memory_sizes: MemorySize::values()
            .map(|m| format!("{m:?}").to_lowercase())
            .collect(),
        op_kinds: OpKind::values().map(|k| format!("{k:?}")).collect(),
    })
}

fn mnemonic_name(mnemonic: Mnemonic) -> &'static str {
    enum_names()
        .mnemonics
        .get(mnemonic as usize)
        .map_or("?", String::as_str)
}

fn register_name(register: Register) -> &'static str {
    enum_names()
        .registers
        .get(register as usize)
        .map_or("?", String::as_str)
}

fn op_kind_name(kind: OpKind) -> &'static str {
    enum_names()
        .op_kinds
        .get(kind as usize)
        .map_or("?", String::as_str)
}

fn memory_size_name(size: MemorySize) -> &'static str {
    enum_names()
        .memory_sizes
        .get(size as usize)
        .map_or("?", String::as_str)
}

fn memory_operand(
    decoded: &[Decoded],
    at: usize,
    offsets: &ConstantOffsets,
    scope: &Scope<'_>,
    namer: &Namer<'_>,
) -> Memory {
    let instruction = &decoded[at];
    let size = memory_size_name(instruction.memory_size());
    let access_bytes = Some(instruction.memory_size().size() as u64).filter(|&size| size > 0);
    let segment = match instruction.segment_prefix() {
        Register::None => None,
        register => Some(register_name(register)),
    };
    let field = (
        offsets.displacement_offset() as u8,
        offsets.displacement_size() as u8,
    );
    if instruction.is_ip_rel_memory_operand() {
        let rva = instruction.ip_rel_memory_address();
        let target = resolve_data_operand(rva, decoded, at, scope, namer, access_bytes);
        return Memory {
            size,
            access_bytes,
            segment,
            base: None,
            index: None,
            scale: 1,
            displacement: Value::Address {
                reference: Reference {
                    field_offset: field.0,
                    field_width: field.1,
                    encoding: Encoding::RipRelative,
                    rva,
                    target,
                },
            },
        };
    }
    let base = Some(instruction.memory_base())
        .filter(|&r| r != Register::None)
        .map(register_name);
    let index = Some(instruction.memory_index())
        .filter(|&r| r != Register::None)
        .map(register_name);
    let raw = instruction.memory_displacement64();
    // A displacement that lands in the image is an absolute address (non-PIE code): with
    // registers, an array or table base.
    let displacement = match absolute_reference(raw, namer.image).filter(|_| segment.is_none()) {
        Some(rva) => Value::Address {
            reference: Reference {
                field_offset: field.0,
                field_width: field.1,
                encoding: Encoding::Absolute32,
                rva,
                target: resolve_data_operand(rva, decoded, at, scope, namer, None),
            },
        },
        None => Value::Constant { value: raw as i64 },
    };
    Memory {
        size,
        access_bytes,
        segment,
        base,
        index,
        scale: instruction.memory_index_scale(),
        displacement,
    }
}

/// A data operand may be a jump table: those are recognized with the instructions around it,
/// which bound the table by its guarding compare.
fn resolve_data_operand(
    rva: u64,
    decoded: &[Decoded],
    at: usize,
    scope: &Scope<'_>,
    namer: &Namer<'_>,
    access_bytes: Option<u64>,
) -> Target {
    let plain = resolve(rva, namer, 0, access_bytes);
    let anonymous = matches!(
        plain,
        Target::Constant(_) | Target::Unresolved { .. } | Target::InsideInstruction { .. }
    );
    if anonymous && let Some(table) = jump_table(rva, decoded, at, scope, namer) {
        return Target::JumpTable(table);
    }
    plain
}

/// The RVA an absolute address in code stands for, if it points into the image. Only images
/// loaded at a fixed base (non-PIE ELF, PE with an image base) embed such addresses.
fn absolute_reference(value: u64, image: &Image<'_>) -> Option<u64> {
    let base = match &image.identity.pe {
        Some(pe) => pe.image_base,
        None => 0,
    };
    let rva = value.checked_sub(base)?;
    if base == 0
        && image
            .identity
            .elf
            .as_ref()
            .is_some_and(|elf| elf.elf_type == ElfType::Dyn)
    {
        // PIE code reaches everything RIP-relative; a small constant is just a constant.
        return None;
    }
    // Small values are constants, not addresses, even when they happen to fall in the image.
    if value < 0x10000 {
        return None;
    }
    image.section_at(rva).map(|_| rva)
}

/// The index of the function containing `rva`.
fn function_index_at(image: &Image<'_>, index: &ImageIndex, rva: u64) -> Option<usize> {
    let idx = index.function_starts.partition_point(|&start| start <= rva);
    let idx = idx.checked_sub(1)?;
    let candidate = image.functions.get(idx)?;
    (rva < candidate.end() || (candidate.size == 0 && rva == candidate.rva)).then_some(idx)
}

/// What the address `rva` points at, independent of where the linker put it. `depth` counts
/// pointer slots followed, so a cycle of slots cannot recurse forever.
fn resolve(rva: u64, namer: &Namer<'_>, depth: u32, access_bytes: Option<u64>) -> Target {
    let image = namer.image;
    if let Some(index) = function_index_at(image, namer.index, rva) {
        let function = &image.functions[index];
        // Import thunks that the debug information counts into the function before them.
        if rva != function.rva
            && depth < 2
            && let Some(slot) = stub_slot(rva, image)
        {
            return Target::Stub {
                slot: Box::new(resolve(slot, namer, depth + 1, None)),
            };
        }
        return Target::Function {
            index,
            name: namer.function_name(index),
            offset: rva - function.rva,
        };
    }
    let data_idx = namer
        .index
        .data_starts
        .partition_point(|&start| start <= rva);
    if let Some(index) = data_idx.checked_sub(1)
        && let Some(data) = image.data_symbols.get(index)
        && rva < data.rva.saturating_add(data.size.max(1))
    {
        // Read-only data compares by content too: a changed constant table changes every
        // function that reads it, which must then be replaced to see the new copy. Writable data
        // is storage and compares by name alone.
        // Past MAX_RENDERED_DATA the raw bytes are hashed: a relocated pointer in them then
        // differs on every rebuild, a false change rather than a missed one.
        let content = if data.kind == DataKind::ReadOnly && data.size > 0 {
            namer.data_content(index, depth, || {
                if data.size <= MAX_RENDERED_DATA {
                    render_bytes(image, data.rva, data.size, namer, depth)
                        .map(|(text, _)| fnv1a(text.as_bytes()))
                } else {
                    image.bytes_at(data.rva, data.size).map(fnv1a)
                }
            })
        } else {
            None
        };
        return Target::Data {
            index,
            name: namer.data_name(index),
            offset: rva - data.rva,
            data_kind: data.kind,
            content,
        };
    }
    if let Some((library, name)) = namer.index.import_at(rva) {
        return Target::Import {
            library: library.clone(),
            name: name.clone(),
        };
    }
    // A slot the loader fills (GOT entry, absolute pointer): what it will point at.
    let reloc_idx = namer.index.first_relocation_from(rva);
    if let Some(relocation) = image.relocations.get(reloc_idx).filter(|r| r.rva == rva) {
        if let Some(symbol) = &relocation.symbol {
            return Target::SymbolSlot {
                symbol: symbol.clone(),
                addend: relocation.addend,
            };
        }
        if let Some(target) = image
            .relocation_target(relocation)
            .filter(|&target| target != rva && depth < 2)
        {
            let pointee = resolve(target, namer, depth + 1, None);
            // An unnamed table behind a pointer (runtime lists of RVAs) moves with every build
            // and cannot be told apart by content; the data diff reports the slot's own value.
            let pointee = match pointee {
                Target::Constant(_) => Target::Constant(Constant {
                    len: 0,
                    content: ConstantContent::Bytes {
                        rendered: String::new(),
                    },
                }),
                other => other,
            };
            return Target::Slot {
                pointee: Box::new(pointee),
            };
        }
    }
    let Some(section) = image.section_at(rva) else {
        return Target::Unresolved {
            why: Unresolved::OutsideImage,
        };
    };
    if section.executable {
        if let Some(slot) = stub_slot(rva, image).filter(|_| depth < 2) {
            return Target::Stub {
                slot: Box::new(resolve(slot, namer, depth + 1, None)),
            };
        }
        return Target::Unresolved {
            why: Unresolved::Code {
                section: section.name.clone(),
            },
        };
    }
    if !section.writable {
        return constant(rva, namer, depth, access_bytes);
    }
    // Unnamed writable data (compiler temporaries): only the section is known.
    Target::Unresolved {
        why: Unresolved::Data {
            section: section.name.clone(),
        },
    }
}

/// The slot an import stub jumps through: a PLT entry (`endbr64; bnd jmp [rip+slot]`, or the
/// lazy-binding form that starts with the jump) or a PE import thunk (`jmp [rip+slot]`).
fn stub_slot(rva: u64, image: &Image<'_>) -> Option<u64> {
    let code = image.bytes_at(rva, 16).or_else(|| image.bytes_at(rva, 8))?;
    let mut decoder = Decoder::with_ip(64, code, rva, DecoderOptions::NONE);
    for _ in 0..2 {
        let instruction = decoder.decode();
        match instruction.mnemonic() {
            Mnemonic::Endbr64 => continue,
            Mnemonic::Jmp if instruction.is_ip_rel_memory_operand() => {
                return Some(instruction.ip_rel_memory_address());
            }
            _ => return None,
        }
    }
    None
}

/// The number of entries the compare guarding the indexed jump allows: compilers emit
/// `cmp reg, N-1; ja default` (or `jae` with `N`) before loading from a table of `N` entries.
fn guarded_entries(decoded: &[Decoded], at: usize) -> Option<u64> {
    let start = at.saturating_sub(GUARD_WINDOW);
    let window = decoded.get(start..at)?;
    for (k, instruction) in window.iter().enumerate().rev() {
        let inclusive = match instruction.mnemonic() {
            Mnemonic::Ja => true,
            Mnemonic::Jae => false,
            _ => continue,
        };
        // The compare that sets the flags for this branch, just before it.
        let compare = window[..k].iter().rev().take(3).find(|i| {
            i.mnemonic() == Mnemonic::Cmp && i.op_count() == 2 && is_immediate(i.op1_kind())
        })?;
        let limit = compare.immediate(1);
        return Some(if inclusive {
            limit.checked_add(1)?
        } else {
            limit
        });
    }
    None
}

/// A table of entries at `rva` whose targets all lie inside the function or its cold part:
/// 32-bit entries relative to the table (gcc and clang PIC code) or image-relative (MSVC, clang
/// for COFF), or 64-bit absolute pointers (non-PIE code). The length comes from the guarding
/// compare when there is one, and never runs past the next referenced address or symbol.
fn jump_table(
    rva: u64,
    decoded: &[Decoded],
    at: usize,
    scope: &Scope<'_>,
    namer: &Namer<'_>,
) -> Option<JumpTable> {
    let image = namer.image;
    let index = namer.index;
    let guard = guarded_entries(decoded, at).filter(|n| (1..=MAX_JUMP_TABLE).contains(n));
    let section_end = image
        .section_at(rva)
        .map(|s| s.rva.saturating_add(s.virtual_size.max(s.file_size)))?;
    let limit = index
        .next_boundary(rva)
        .unwrap_or(section_end)
        .min(section_end);
    let base = image.identity.pe.as_ref().map(|pe| pe.image_base);
    let encodings: &[(TableEncoding, u64)] = &[
        (TableEncoding::TableRelative, 4),
        (TableEncoding::ImageRelative, 4),
        (TableEncoding::Absolute, 8),
    ];
    for &(encoding, width) in encodings {
        let entry_target = |slot: u64| -> Option<u64> {
            let at = rva.checked_add(slot.checked_mul(width)?)?;
            let bytes = image.bytes_at(at, width)?;
            Some(match encoding {
                TableEncoding::TableRelative => {
                    let entry = i32::from_le_bytes(bytes.try_into().ok()?);
                    rva.wrapping_add(entry as i64 as u64)
                }
                TableEncoding::ImageRelative => u32::from_le_bytes(bytes.try_into().ok()?) as u64,
                TableEncoding::Absolute => {
                    let value = u64::from_le_bytes(bytes.try_into().ok()?);
                    match base {
                        Some(base) => value.checked_sub(base)?,
                        None => index.pointer_target(image, at).unwrap_or(value),
                    }
                }
            })
        };
        let (count, bound) = match guard {
            Some(n) => (n, TableBound::GuardingCompare),
            None => (
                (limit.saturating_sub(rva) / width).min(MAX_JUMP_TABLE),
                TableBound::NextBoundary,
            ),
        };
        let mut entries = Vec::new();
        for slot in 0..count {
            let Some(target) = entry_target(slot) else {
                break;
            };
            let entry = if scope.contains(target) {
                match scope.index_of.get(target) {
                    Some(index) => TableEntry::Label { index },
                    None => TableEntry::InsideInstruction {
                        offset: target - scope.function.rva,
                    },
                }
            } else if let Some(cold) = cold_part_index(image, index, scope.function, target) {
                let cold_function = &image.functions[cold];
                TableEntry::Function {
                    index: cold,
                    name: namer.function_name(cold),
                    offset: target - cold_function.rva,
                }
            } else {
                break;
            };
            entries.push(entry);
        }
        let complete = match bound {
            TableBound::GuardingCompare => entries.len() as u64 == count,
            TableBound::NextBoundary => entries.len() >= 2,
        };
        if complete && !entries.is_empty() {
            return Some(JumpTable {
                entry_width: width as u8,
                encoding,
                entries,
                bound,
            });
        }
    }
    None
}

/// The index of the function holding `rva` when it is `function`'s cold part: gcc moves the
/// unlikely paths of `foo` (a `default:` that only reports an error, cases that end in a cold
/// call) into `foo.cold` in `.text.unlikely`, and `foo`'s jump tables point into it. Only that
/// part is accepted, so a run of unrelated code addresses is not taken for a table.
fn cold_part_index(
    image: &Image<'_>,
    image_index: &ImageIndex,
    function: &Function<'_>,
    rva: u64,
) -> Option<usize> {
    let index = function_index_at(image, image_index, rva)?;
    let candidate = image.functions.get(index)?;
    (hotpatch_image::cold_part_parent(&candidate.name) == Some(function.name.as_str()))
        .then_some(index)
}

/// An unnamed read-only constant, by content. A load of known size compares exactly the bytes
/// it reads; an address taken (`lea`) compares the bytes up to the next referenced address or
/// symbol (at most `MAX_CONSTANT_WINDOW`, never past the section), cut after a NUL where the
/// bytes before it are a C string. Relocated pointers inside are written as what they point at.
fn constant(rva: u64, namer: &Namer<'_>, depth: u32, access_bytes: Option<u64>) -> Target {
    let image = namer.image;
    let section_end = image
        .section_at(rva)
        .map(|section| section.rva.saturating_add(section.virtual_size))
        .unwrap_or(rva);
    let available = section_end.saturating_sub(rva);
    if let Some(size) = access_bytes {
        let len = size.min(available);
        return match render_bytes(image, rva, len, namer, depth) {
            Some((rendered, false)) => Target::Constant(Constant {
                len,
                content: ConstantContent::Bytes { rendered },
            }),
            _ => Target::Unresolved {
                why: Unresolved::ConstantContent,
            },
        };
    }
    let boundary = namer
        .index
        .next_boundary(rva)
        .map_or(available, |next| next - rva)
        .min(available);
    if let Some(text) = c_string(image, rva, boundary) {
        return Target::Constant(text);
    }
    let window = boundary.min(MAX_CONSTANT_WINDOW);
    match render_bytes(image, rva, window, namer, depth) {
        Some((rendered, false)) => Target::Constant(Constant {
            len: window,
            content: ConstantContent::Bytes { rendered },
        }),
        _ => Target::Unresolved {
            why: Unresolved::ConstantContent,
        },
    }
}

/// The C string at `rva`, if the bytes up to the next NUL (before `limit`) are text: short
/// strings verbatim, long ones as a prefix, their length and a hash of all of it.
fn c_string(image: &Image<'_>, rva: u64, limit: u64) -> Option<Constant> {
    let scan = limit.min(MAX_STRING_SCAN);
    let bytes = image.bytes_at(rva, scan)?;
    let end = bytes.iter().position(|&b| b == 0)?;
    let text = &bytes[..end];
    // Text, including terminal escape sequences (ESC) that colour codes use.
    if !text
        .iter()
        .all(|&b| b.is_ascii_graphic() || b.is_ascii_whitespace() || b == 0x1b || b >= 0x80)
    {
        return None;
    }
    let len = end as u64 + 1;
    let text = String::from_utf8_lossy(text);
    if text.len() <= MAX_STRING_SHOWN {
        return Some(Constant {
            len,
            content: ConstantContent::Text {
                text: text.into_owned(),
            },
        });
    }
    let prefix: String = text.chars().take(MAX_STRING_SHOWN).collect();
    Some(Constant {
        len,
        content: ConstantContent::LongText {
            prefix,
            len: text.len() as u64,
            hash: fnv1a(text.as_bytes()),
        },
    })
}

/// FNV-1a: a short, stable content key for long strings (not a security measure).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The bytes `[rva, rva + len)` as hex, except that each 8-byte slot the loader relocates is
/// written as `<what it points at>`: pointers move with every rebuild, their targets do not.
/// The flag says whether some slot pointed at nothing the engine can name.
pub(crate) fn render_bytes(
    image: &Image<'_>,
    rva: u64,
    len: u64,
    namer: &Namer<'_>,
    depth: u32,
) -> Option<(String, bool)> {
    let bytes = image.bytes_at(rva, len)?;
    let end = rva.checked_add(len)?;
    let start = namer.index.first_relocation_from(rva);
    // The relocated slots inside, as offsets, in order (the index's relocation slots are
    // sorted): one cursor walks them beside `offset` instead of searching them at every byte,
    // which was quadratic in tables of pointers (PostgreSQL's `fmgr_builtins` has thousands).
    let mut slots = namer.index.relocation_slots[start..]
        .iter()
        .take_while(|&&slot| slot < end)
        .map(|&slot| slot - rva)
        .filter(|offset| offset + 8 <= len)
        .peekable();
    let mut text = String::with_capacity(bytes.len() * 2);
    let mut unresolved = false;
    let mut offset = 0u64;
    while offset < len {
        while slots.next_if(|&slot| slot < offset).is_some() {}
        if slots.peek() == Some(&offset) && depth < 2 {
            let target = namer
                .index
                .pointer_target(image, rva + offset)
                .map(|target| resolve(target, namer, depth + 1, None));
            match target {
                Some(target) => {
                    unresolved |= target.is_unresolved();
                    text.push('<');
                    crate::code::render_target(&mut text, &target, &Labels::Plain);
                    text.push('>');
                }
                None => {
                    unresolved = true;
                    text.push_str("<?>");
                }
            }
            offset += 8;
        } else {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let byte = bytes.get(offset as usize).copied().unwrap_or(0);
            text.push(HEX[usize::from(byte >> 4)] as char);
            text.push(HEX[usize::from(byte & 0xf)] as char);
            offset += 1;
        }
    }
    Some((text, unresolved))
}
