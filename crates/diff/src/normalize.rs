//! Normalized disassembly: each instruction as text in which every address is replaced by what
//! it points at (a function or data symbol plus offset, the contents of an unnamed constant, the
//! targets of a jump table, or an instruction index inside the same function). Two builds of an
//! unchanged function give the same text however far the linker moved things.

use hotpatch_image::{Function, Image};
use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};
use std::collections::HashMap;

/// One instruction, normalized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NormalizedInstruction {
    /// RVA in its own build.
    pub rva: u64,
    /// The full normalized text.
    pub text: String,
    /// The text with immediates replaced by `#`: equal shapes differ at most in constants.
    pub shape: String,
    /// The text with references replaced by `@`: equal skeletons differ at most in what they
    /// point at.
    pub skeleton: String,
    /// The immediate operands, in order.
    pub immediates: Vec<i64>,
}

/// How symbol names are written in normalized text; the fixed build's names are mapped to the
/// baseline names of their matches, so renames do not show in callers.
pub(crate) struct Namer<'a> {
    pub image: &'a Image<'a>,
    /// Fixed-build function name to the name it is compared under.
    pub renames: &'a HashMap<String, String>,
    /// Import slot (PE IAT entry) to `import:library!name`, looked up for every indirect call.
    import_slots: HashMap<u64, String>,
}

impl<'a> Namer<'a> {
    pub(crate) fn new(image: &'a Image<'a>, renames: &'a HashMap<String, String>) -> Self {
        let import_slots = image
            .imports
            .iter()
            .filter_map(|import| {
                let name = format!(
                    "import:{}!{}",
                    import.library.to_ascii_lowercase(),
                    import.name
                );
                Some((import.slot_rva?, name))
            })
            .collect();
        Namer {
            image,
            renames,
            import_slots,
        }
    }
}

impl Namer<'_> {
    fn function_name(&self, function: &Function<'_>) -> String {
        let name = crate::matching::canonical_name(&function.name);
        self.renames.get(&function.name).cloned().unwrap_or(name)
    }
}

/// How far a C string is searched for its NUL.
const MAX_STRING_SCAN: u64 = 64 * 1024;
/// Strings longer than this show as a prefix, their length and a hash.
const MAX_STRING_SHOWN: usize = 96;
/// Read-only data up to this size compares with its relocated pointers resolved.
const MAX_RENDERED_DATA: u64 = 64 * 1024;
/// The bytes of an unnamed constant of unknown size that are compared.
const MAX_CONSTANT_WINDOW: u64 = 64;
/// Jump tables longer than this are not followed.
const MAX_JUMP_TABLE: usize = 1024;

/// Decodes and normalizes `function`; `None` when it has no code bytes.
pub(crate) fn normalize(function: &Function<'_>, namer: &Namer<'_>) -> Vec<NormalizedInstruction> {
    let (instructions, index_of) = decode(function);
    instructions
        .iter()
        .map(|instruction| normalize_instruction(instruction, function, namer, &index_of))
        .collect()
}

/// The instructions of `function`, without alignment filler (nop, int3), which moves with
/// addresses.
///
/// Branch targets inside the function are written as instruction indices, which survive changes
/// in instruction length and alignment padding; the returned map gives each address its index,
/// and a branch to dropped filler (a loop aligned with nops) the index of what follows it.
pub(crate) fn decode(function: &Function<'_>) -> (Vec<Instruction>, HashMap<u64, usize>) {
    let mut decoder = Decoder::with_ip(64, function.code, function.rva, DecoderOptions::NONE);
    let mut instructions = Vec::with_capacity(function.code.len() / 4);
    let mut index_of = HashMap::new();
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
        instructions.push(instruction);
    }
    for ip in filler {
        index_of.insert(ip, instructions.len());
    }
    (instructions, index_of)
}

fn normalize_instruction(
    instruction: &Instruction,
    function: &Function<'_>,
    namer: &Namer<'_>,
    index_of: &HashMap<u64, usize>,
) -> NormalizedInstruction {
    let mut text = String::new();
    let mut shape = String::new();
    let mut skeleton = String::new();
    let mut immediates = Vec::new();
    let head = if instruction.is_invalid() {
        format!("(bad) {:02x?}", bytes_of(instruction, function))
    } else {
        let mut head = format!("{:?}", instruction.mnemonic()).to_lowercase();
        if instruction.has_rep_prefix() {
            head = format!("rep {head}");
        }
        if instruction.has_repne_prefix() {
            head = format!("repne {head}");
        }
        if instruction.has_lock_prefix() {
            head = format!("lock {head}");
        }
        head
    };
    text.push_str(&head);
    shape.push_str(&head);
    skeleton.push_str(&head);
    for operand in 0..instruction.op_count() {
        let separator = if operand == 0 { " " } else { ", " };
        text.push_str(separator);
        shape.push_str(separator);
        skeleton.push_str(separator);
        match instruction.op_kind(operand) {
            OpKind::Register => {
                let register = register_name(instruction.op_register(operand));
                text.push_str(&register);
                shape.push_str(&register);
                skeleton.push_str(&register);
            }
            OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
                let target = instruction.near_branch_target();
                let reference = match index_of.get(&target) {
                    Some(index) => format!("L{index}"),
                    None if target >= function.rva && target < function.end() => {
                        format!("L?+{:#x}", target - function.rva)
                    }
                    None => symbolize(target, function, namer, index_of),
                };
                text.push_str(&reference);
                shape.push_str(&reference);
                skeleton.push('@');
            }
            OpKind::Memory => {
                let memory = memory_operand(instruction, function, namer, index_of);
                text.push_str(&memory.0);
                shape.push_str(&memory.0);
                skeleton.push_str(&memory.1);
            }
            OpKind::Immediate8
            | OpKind::Immediate8_2nd
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64 => {
                let value = instruction.immediate(operand) as i64;
                match absolute_reference(value as u64, namer.image) {
                    Some(rva) => {
                        let reference = symbolize(rva, function, namer, index_of);
                        text.push_str(&reference);
                        shape.push_str(&reference);
                        skeleton.push('@');
                    }
                    None => {
                        immediates.push(value);
                        text.push_str(&format!("{value:#x}"));
                        shape.push('#');
                        skeleton.push_str(&format!("{value:#x}"));
                    }
                }
            }
            other => {
                let kind = format!("{other:?}");
                text.push_str(&kind);
                shape.push_str(&kind);
                skeleton.push_str(&kind);
            }
        }
    }
    NormalizedInstruction {
        rva: instruction.ip(),
        text,
        shape,
        skeleton,
        immediates,
    }
}

fn bytes_of<'a>(instruction: &Instruction, function: &'a Function<'_>) -> &'a [u8] {
    let start = (instruction.ip() - function.rva) as usize;
    function
        .code
        .get(start..start + instruction.len())
        .unwrap_or(&[])
}

fn register_name(register: Register) -> String {
    format!("{register:?}").to_lowercase()
}

/// (text, skeleton) of a memory operand.
fn memory_operand(
    instruction: &Instruction,
    function: &Function<'_>,
    namer: &Namer<'_>,
    index_of: &HashMap<u64, usize>,
) -> (String, String) {
    let size = format!("{:?}", instruction.memory_size()).to_lowercase();
    let segment = match instruction.segment_prefix() {
        Register::None => String::new(),
        register => format!("{}:", register_name(register)),
    };
    if instruction.is_ip_rel_memory_operand() {
        let target = instruction.ip_rel_memory_address();
        let access_size = Some(instruction.memory_size().size() as u64).filter(|&size| size > 0);
        let reference = symbolize_at(target, function, namer, index_of, 0, access_size);
        return (
            format!("{size} {segment}[{reference}]"),
            format!("{size} {segment}[@]"),
        );
    }
    let mut parts = Vec::new();
    if instruction.memory_base() != Register::None {
        parts.push(register_name(instruction.memory_base()));
    }
    if instruction.memory_index() != Register::None {
        parts.push(format!(
            "{}*{}",
            register_name(instruction.memory_index()),
            instruction.memory_index_scale()
        ));
    }
    let displacement = instruction.memory_displacement64();
    let no_registers = parts.is_empty();
    // A displacement with no registers that lands in the image is an absolute address (non-PIE
    // code); with registers it is an offset, or an array base in non-PIE code.
    match absolute_reference(displacement, namer.image).filter(|_| segment.is_empty()) {
        Some(rva) => {
            let reference = symbolize(rva, function, namer, index_of);
            parts.push(reference);
            let text = format!("{size} [{}]", parts.join("+"));
            let mut skeleton_parts = parts.clone();
            skeleton_parts.pop();
            skeleton_parts.push("@".into());
            (text, format!("{size} [{}]", skeleton_parts.join("+")))
        }
        None => {
            if displacement != 0 || no_registers {
                parts.push(format!("{:#x}", displacement as i64));
            }
            let text = format!("{size} {segment}[{}]", parts.join("+"));
            (text.clone(), text)
        }
    }
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
            .is_some_and(|elf| elf.elf_type == "dyn")
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

/// What the address `rva` points at, independent of where the linker put it.
pub(crate) fn symbolize(
    rva: u64,
    current: &Function<'_>,
    namer: &Namer<'_>,
    index_of: &HashMap<u64, usize>,
) -> String {
    symbolize_at(rva, current, namer, index_of, 0, None)
}

/// `depth` counts pointer slots followed, so a cycle of slots cannot recurse forever.
fn symbolize_at(
    rva: u64,
    current: &Function<'_>,
    namer: &Namer<'_>,
    index_of: &HashMap<u64, usize>,
    depth: u32,
    access_size: Option<u64>,
) -> String {
    let image = namer.image;
    if let Some(function) = image.function_at(rva) {
        let name = namer.function_name(function);
        return match rva - function.rva {
            0 => name,
            offset => format!("{name}+{offset:#x}"),
        };
    }
    let data_idx = image.data_symbols.partition_point(|d| d.rva <= rva);
    let containing = data_idx
        .checked_sub(1)
        .and_then(|idx| image.data_symbols.get(idx));
    if let Some(data) = containing.filter(|data| rva < data.rva + data.size.max(1)) {
        let mut name = crate::matching::canonical_name(&data.name);
        // Read-only data compares by content too: a changed constant table changes every
        // function that reads it, which must then be replaced to see the new copy. Writable data
        // is storage and compares by name alone.
        // Past MAX_RENDERED_DATA the raw bytes are hashed: a relocated pointer in them then
        // differs on every rebuild, a false change rather than a missed one.
        if data.kind == hotpatch_image::DataKind::ReadOnly && data.size > 0 {
            let content = if data.size <= MAX_RENDERED_DATA {
                render_bytes(image, data.rva, data.size, namer, depth)
                    .map(|text| fnv1a(text.as_bytes()))
            } else {
                image.bytes_at(data.rva, data.size).map(fnv1a)
            };
            if let Some(hash) = content {
                name = format!("{name}#{hash:016x}");
            }
        }
        return match rva - data.rva {
            0 => format!("${name}"),
            offset => format!("${name}+{offset:#x}"),
        };
    }
    if let Some(import) = namer.import_slots.get(&rva) {
        return import.clone();
    }
    // A slot the loader fills (GOT entry, absolute pointer): what it will point at.
    let reloc_idx = image.relocations.partition_point(|r| r.rva < rva);
    if let Some(relocation) = image.relocations.get(reloc_idx).filter(|r| r.rva == rva) {
        if let Some(symbol) = &relocation.symbol {
            return format!("slot:{symbol}{:+}", relocation.addend);
        }
        if let Some(target) = slot_target(image, rva).filter(|&target| target != rva && depth < 2) {
            let pointee = symbolize_at(target, current, namer, index_of, depth + 1, None);
            // An unnamed table behind a pointer (runtime lists of RVAs) moves with every build
            // and cannot be told apart by content; the data diff reports the slot's own value.
            if pointee.starts_with("const:") {
                return "slot:const".into();
            }
            return format!("slot:{pointee}");
        }
    }
    let Some(section) = image.section_at(rva) else {
        return format!("abs:{rva:#x}");
    };
    if section.executable {
        // Jump tables may sit in code sections (clang for COFF puts them after the function).
        if let Some(table) = jump_table(rva, current, image, index_of) {
            return table;
        }
        if let Some(slot) = stub_slot(rva, image).filter(|_| depth < 2) {
            return format!(
                "stub:{}",
                symbolize_at(slot, current, namer, index_of, depth + 1, None)
            );
        }
        return format!("code:{}", section.name);
    }
    if !section.writable {
        if let Some(table) = jump_table(rva, current, image, index_of) {
            return table;
        }
        return constant(rva, image, namer, depth, access_size);
    }
    // Unnamed writable data (compiler temporaries, GOT slots): only the section is stable.
    format!("data:{}", section.name)
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

/// A table of 32-bit entries at `rva` whose targets all lie inside `current` (relative to the
/// table, as clang and gcc emit for PIC code, or image-relative, as MSVC does).
fn jump_table(
    rva: u64,
    current: &Function<'_>,
    image: &Image<'_>,
    index_of: &HashMap<u64, usize>,
) -> Option<String> {
    let inside = |target: u64| target >= current.rva && target < current.end();
    for relative in [true, false] {
        let mut targets = Vec::new();
        for slot in 0..MAX_JUMP_TABLE as u64 {
            let Some(bytes) = image.bytes_at(rva + slot * 4, 4) else {
                break;
            };
            let entry = i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            let target = if relative {
                rva.wrapping_add(entry as i64 as u64)
            } else {
                entry as u32 as u64
            };
            if !inside(target) {
                break;
            }
            targets.push(target);
        }
        if targets.len() >= 2 {
            let labels: Vec<String> = targets
                .iter()
                .map(|t| match index_of.get(t) {
                    Some(index) => format!("L{index}"),
                    None => format!("L?+{:#x}", t - current.rva),
                })
                .collect();
            return Some(format!("jumptable[{}]", labels.join(",")));
        }
    }
    None
}

/// An unnamed read-only constant, by content. A load of known size compares exactly the bytes
/// it reads; an address taken (`lea`) of a C string compares the whole string; anything else
/// compares the bytes up to `MAX_CONSTANT_WINDOW`, clamped to the end of the section. Relocated
/// pointers inside are written as what they point at.
fn constant(
    rva: u64,
    image: &Image<'_>,
    namer: &Namer<'_>,
    depth: u32,
    access_size: Option<u64>,
) -> String {
    let section_end = image
        .section_at(rva)
        .map(|section| section.rva + section.virtual_size)
        .unwrap_or(rva);
    let available = section_end.saturating_sub(rva);
    if let Some(size) = access_size {
        return match render_bytes(image, rva, size.min(available), namer, depth) {
            Some(text) => format!("const{size}:{text}"),
            None => "const:outside-file".into(),
        };
    }
    if let Some(text) = c_string(image, rva, available) {
        return text;
    }
    let window = available.min(MAX_CONSTANT_WINDOW);
    match render_bytes(image, rva, window, namer, depth) {
        Some(text) => format!("const:{text}"),
        None => "const:outside-file".into(),
    }
}

/// The C string at `rva`, if the bytes up to the next NUL are text: short strings verbatim, long
/// ones as a prefix, their length and a hash of all of it, so an edit anywhere shows.
fn c_string(image: &Image<'_>, rva: u64, available: u64) -> Option<String> {
    let bytes = image.bytes_at(rva, available.min(MAX_STRING_SCAN))?;
    let end = bytes.iter().position(|&b| b == 0)?;
    let text = &bytes[..end];
    if !text
        .iter()
        .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace())
    {
        return None;
    }
    let text = String::from_utf8_lossy(text);
    if text.len() <= MAX_STRING_SHOWN {
        return Some(format!("str:{text:?}"));
    }
    let prefix: String = text.chars().take(MAX_STRING_SHOWN).collect();
    Some(format!(
        "str:{prefix:?}...+len={}#{:016x}",
        text.len(),
        fnv1a(text.as_bytes())
    ))
}

/// FNV-1a: a short, stable content key for long strings (not a security measure).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The bytes `[rva, rva + len)` as hex, except that each 8-byte slot the loader relocates is
/// written as `<what it points at>`: pointers move with every rebuild, their targets do not.
pub(crate) fn render_bytes(
    image: &Image<'_>,
    rva: u64,
    len: u64,
    namer: &Namer<'_>,
    depth: u32,
) -> Option<String> {
    use std::fmt::Write;
    let bytes = image.bytes_at(rva, len)?;
    let start = image.relocations.partition_point(|r| r.rva < rva);
    let slots: Vec<u64> = image.relocations[start..]
        .iter()
        .take_while(|r| r.rva < rva + len)
        .map(|r| r.rva - rva)
        .filter(|offset| offset + 8 <= len)
        .collect();
    let none = no_function();
    let mut text = String::with_capacity(bytes.len() * 2);
    let mut offset = 0u64;
    while offset < len {
        if slots.contains(&offset) && depth < 2 {
            let target = slot_target(image, rva + offset);
            let _ = match target {
                Some(target) => write!(
                    text,
                    "<{}>",
                    symbolize_at(target, &none, namer, &HashMap::new(), depth + 1, None)
                ),
                None => write!(text, "<?>"),
            };
            offset += 8;
        } else {
            let _ = write!(
                text,
                "{:02x}",
                bytes.get(offset as usize).copied().unwrap_or(0)
            );
            offset += 1;
        }
    }
    Some(text)
}

/// Where the relocated pointer slot at `rva` points: ELF RELA keeps the target in the addend,
/// PE stores the VA in place.
fn slot_target(image: &Image<'_>, rva: u64) -> Option<u64> {
    let idx = image.relocations.partition_point(|r| r.rva < rva);
    let relocation = image.relocations.get(idx).filter(|r| r.rva == rva)?;
    let base = image
        .identity
        .pe
        .as_ref()
        .map(|pe| pe.image_base)
        .unwrap_or(0);
    match relocation.addend {
        0 => image
            .bytes_at(rva, 8)?
            .try_into()
            .ok()
            .map(u64::from_le_bytes)?
            .checked_sub(base),
        addend => Some(addend as u64),
    }
}

/// A function that contains no address, for symbolizing from data.
pub(crate) fn no_function() -> Function<'static> {
    Function {
        name: String::new(),
        display_name: String::new(),
        rva: u64::MAX,
        size: 0,
        section: String::new(),
        compile_unit: None,
        linkage: hotpatch_image::Linkage::Static,
        has_debug_info: false,
        signature: None,
        code: &[],
        padding_before: 0,
        first_instruction_len: None,
        aliases: Vec::new(),
        alias_display_names: Vec::new(),
        parent: None,
    }
}
