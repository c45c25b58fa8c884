//! The typed normalized form of a function's code: each instruction with its RVA, length,
//! control flow and operands, and every address operand as a [`Reference`] that says where the
//! value sits in the instruction bytes, how it is encoded, and what it points at.
//!
//! This is what later stages decide and lift on: the policy reads control flow and targets, the
//! lifter re-targets each reference into the baseline image. Text is rendered from it only for
//! comparison keys, listings and reports (`render`); nothing parses that text back.

use hotpatch_image::DataKind;
use serde::Serialize;
use smallvec::SmallVec;
use std::fmt::Write;
use std::sync::Arc;

/// An instruction's operands, held inline up to two (most x86-64 instructions have at most
/// two): normalizing a function then allocates once for its instructions, not once more per
/// instruction. Instructions with more operands (`imul r, r/m, imm`, VEX forms) spill to the
/// heap.
pub type Operands = SmallVec<[Operand; 2]>;

/// One instruction of a function.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Instruction {
    /// RVA in its own build.
    pub rva: u64,
    /// Length in bytes.
    pub len: u8,
    /// Lowercase mnemonic (`mov`, `jne`), or `(bad)` for bytes that do not decode.
    pub mnemonic: &'static str,
    /// `rep`, `repne`, `lock` prefixes that change what the instruction does.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prefixes: Vec<&'static str>,
    pub operands: Operands,
    pub flow: Flow,
    /// An instruction compilers do not emit for C and C++ code (privileged, system or
    /// serializing instructions): the mark of inline assembly.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub system: bool,
    /// The raw bytes of an instruction that does not decode.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub undecodable: Vec<u8>,
}

/// How control leaves an instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flow {
    /// Falls through to the next instruction.
    Next,
    /// `ret`.
    Return,
    /// A direct jump; the target is the instruction's branch operand.
    Jump,
    /// A direct conditional jump (`jcc`, `loop`, `jrcxz`).
    ConditionalJump,
    /// A direct call.
    Call,
    /// A jump through a register or memory.
    IndirectJump,
    /// A call through a register or memory.
    IndirectCall,
    /// `int3`, `ud2`, `hlt` and other instructions that stop or trap.
    Trap,
    /// Bytes that do not decode.
    Invalid,
}

/// One operand.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Operand {
    Register {
        name: &'static str,
    },
    Immediate {
        value: Value,
    },
    /// A direct branch or call target.
    Branch {
        reference: Reference,
    },
    Memory(Memory),
    /// Operand kinds the normalizer keeps only by name (far branches, string-instruction memory).
    Other {
        name: &'static str,
    },
}

/// A number that is either a plain constant or an address in the image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Value {
    Constant { value: i64 },
    Address { reference: Reference },
}

/// A memory operand.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Memory {
    /// The access size as iced-x86 names it, lowercase (`uint32`, `unknown`).
    pub size: &'static str,
    /// Bytes accessed, when known.
    pub access_bytes: Option<u64>,
    /// `fs` or `gs` (thread-local storage and the thread block), when present.
    pub segment: Option<&'static str>,
    pub base: Option<&'static str>,
    pub index: Option<&'static str>,
    pub scale: u32,
    /// The displacement: a constant, or an address (RIP-relative, or absolute in code linked at a
    /// fixed base).
    pub displacement: Value,
}

/// An address operand: where its value sits in the instruction, how it is encoded, and what it
/// points at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reference {
    /// Offset of the value in the instruction bytes (iced-x86 `ConstantOffsets`).
    pub field_offset: u8,
    /// Width of the value in bytes.
    pub field_width: u8,
    pub encoding: Encoding,
    /// The address in this build.
    pub rva: u64,
    pub target: Target,
}

/// How an address is encoded in the instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Encoding {
    /// A branch displacement relative to the end of the instruction, 8 bits.
    Rel8Branch,
    /// A branch displacement relative to the end of the instruction, 32 bits.
    Rel32Branch,
    /// A RIP-relative memory displacement, 32 bits.
    RipRelative,
    /// An absolute address in a 32-bit displacement or immediate (code linked at a fixed base).
    Absolute32,
    /// An absolute address in a 64-bit immediate.
    Absolute64,
}

/// What an address points at, independent of where the linker put it.
///
/// Names are shared with the table they came from (the diff's per-image table of compared
/// names, the import table): a reference costs a reference count, not a copy of the name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Target {
    /// An instruction of the same function, by index.
    Label { index: usize },
    /// Inside the same function, but at no instruction boundary.
    InsideInstruction { offset: u64 },
    /// A function of this image (index into `Image::functions`) plus offset. `name` is the name
    /// it is compared under: the baseline name of its match for the fixed build.
    Function {
        index: usize,
        name: Arc<str>,
        offset: u64,
    },
    /// A data symbol of this image (index into `Image::data_symbols`) plus offset. Read-only
    /// data also carries a hash of its content, so a changed constant table shows.
    Data {
        index: usize,
        name: Arc<str>,
        offset: u64,
        data_kind: DataKind,
        content: Option<u64>,
    },
    /// A PE import address table slot or an ELF GOT slot for an imported symbol.
    Import { library: Arc<str>, name: Arc<str> },
    /// A slot the loader fills with a pointer (GOT entry, relocated pointer), by what it will
    /// hold.
    Slot { pointee: Box<Target> },
    /// A slot relocated against a named symbol (`R_X86_64_GLOB_DAT` and similar).
    SymbolSlot { symbol: String, addend: i64 },
    /// A PLT entry or import thunk, by the slot it jumps through.
    Stub { slot: Box<Target> },
    /// A jump table: its entries as targets inside the same function or its cold part.
    JumpTable(JumpTable),
    /// An unnamed read-only constant, by its bounded content.
    Constant(Constant),
    /// Nothing the engine can name: the reason and the address.
    Unresolved { why: Unresolved },
}

/// Why a reference could not be named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Unresolved {
    /// Code that belongs to no known function.
    Code { section: String },
    /// Writable data that belongs to no symbol.
    Data { section: String },
    /// An address in no section.
    OutsideImage,
    /// A constant whose bytes are not in the file, or whose relocated slots point nowhere known.
    ConstantContent,
}

/// A jump table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JumpTable {
    /// 4 (32-bit entries) or 8 (absolute pointers).
    pub entry_width: u8,
    pub encoding: TableEncoding,
    /// Each entry's target, in table order.
    pub entries: Vec<TableEntry>,
    /// How the table's length was found.
    pub bound: TableBound,
}

/// How a jump table's entries encode their targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TableEncoding {
    /// Target minus table base (gcc and clang PIC code).
    TableRelative,
    /// Target RVA (MSVC, clang for COFF).
    ImageRelative,
    /// Absolute target address, relocated by the loader.
    Absolute,
}

/// How a jump table's length was established.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TableBound {
    /// The compare that guards the indexed jump (`cmp reg, N-1; ja default`).
    GuardingCompare,
    /// The next referenced address, symbol or section end.
    NextBoundary,
}

/// One jump table entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum TableEntry {
    Label {
        index: usize,
    },
    InsideInstruction {
        offset: u64,
    },
    /// Code of another function symbol plus offset: the part of the same function that gcc
    /// split off into `foo.cold` (unlikely cases, the `default:` of an exhaustive switch). `index`
    /// points into `Image::functions`; `name` is the name it is compared under, as for
    /// [`Target::Function`] (the clone suffixes removed, so rendered as `name.cold+offset`).
    Function {
        index: usize,
        name: Arc<str>,
        offset: u64,
    },
}

/// An unnamed read-only constant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Constant {
    /// Bytes compared.
    pub len: u64,
    pub content: ConstantContent,
}

/// The comparable content of a constant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ConstantContent {
    /// A NUL-terminated text string (without the NUL), shown in full.
    Text { text: String },
    /// A long text string: a prefix, its length and a hash of all of it.
    LongText { prefix: String, len: u64, hash: u64 },
    /// Bytes as hex, each relocated pointer slot written as `<what it points at>`.
    Bytes { rendered: String },
}

impl Instruction {
    /// The targets of every reference of this instruction, including jump table entries.
    pub fn references(&self) -> impl Iterator<Item = &Reference> {
        self.operands.iter().filter_map(|operand| match operand {
            Operand::Branch { reference } => Some(reference),
            Operand::Immediate {
                value: Value::Address { reference },
            } => Some(reference),
            Operand::Memory(Memory {
                displacement: Value::Address { reference },
                ..
            }) => Some(reference),
            _ => None,
        })
    }

    /// The instruction indices this instruction may branch to (branch labels and jump table
    /// entries), in operand order.
    pub fn labels(&self) -> Vec<usize> {
        let mut labels = Vec::new();
        for reference in self.references() {
            match &reference.target {
                Target::Label { index } => labels.push(*index),
                Target::JumpTable(table) => {
                    labels.extend(table.entries.iter().filter_map(|entry| match entry {
                        TableEntry::Label { index } => Some(*index),
                        TableEntry::InsideInstruction { .. } | TableEntry::Function { .. } => None,
                    }))
                }
                _ => {}
            }
        }
        labels
    }

    /// The memory operand's segment register, if any (`fs`, `gs`).
    pub fn segment(&self) -> Option<&str> {
        self.operands.iter().find_map(|operand| match operand {
            Operand::Memory(memory) => memory.segment,
            _ => None,
        })
    }

    /// The normalized text, with labels written as `L<index>`.
    pub fn render(&self) -> String {
        self.render_with(&Labels::Plain)
    }

    /// The text with every label written by `labels`.
    pub fn render_with(&self, labels: &Labels<'_>) -> String {
        let mut text = String::new();
        for prefix in &self.prefixes {
            text.push_str(prefix);
            text.push(' ');
        }
        text.push_str(self.mnemonic);
        if !self.undecodable.is_empty() {
            let _ = write!(text, " {:02x?}", self.undecodable);
        }
        for (idx, operand) in self.operands.iter().enumerate() {
            text.push_str(if idx == 0 { " " } else { ", " });
            render_operand(&mut text, operand, labels, Shape::Full);
        }
        text
    }

    /// The text with immediates written as `#`: equal shapes differ at most in constants.
    pub fn shape(&self) -> String {
        let mut text = self.prefixes.join(" ");
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(self.mnemonic);
        for (idx, operand) in self.operands.iter().enumerate() {
            text.push_str(if idx == 0 { " " } else { ", " });
            render_operand(&mut text, operand, &Labels::Plain, Shape::ConstantsBlank);
        }
        text
    }

    /// Whether two instructions of two builds compare equal without rendering them: the
    /// typed form minus what only locates it in its own build (RVAs, lengths, field offsets,
    /// indices into the image's tables). Equal here implies equal [`render`](Self::render)
    /// text; the converse may fail (a target compared more strictly than it is printed), so a
    /// caller that needs the text's verdict falls back to the text when this says no.
    pub fn same_form(&self, other: &Instruction) -> bool {
        self.mnemonic == other.mnemonic
            && self.prefixes == other.prefixes
            && self.undecodable == other.undecodable
            && self.operands.len() == other.operands.len()
            && self
                .operands
                .iter()
                .zip(&other.operands)
                .all(|(a, b)| same_operand(a, b))
    }

    /// Whether two instructions are the same apart from what their references point at.
    pub fn same_skeleton(&self, other: &Instruction) -> bool {
        self.mnemonic == other.mnemonic
            && self.prefixes == other.prefixes
            && self.operands.len() == other.operands.len()
            && self
                .operands
                .iter()
                .zip(&other.operands)
                .all(|(a, b)| skeleton_equal(a, b))
    }

    /// The constants of the instruction's immediate operands, in order.
    pub fn immediates(&self) -> Vec<i64> {
        self.operands
            .iter()
            .filter_map(|operand| match operand {
                Operand::Immediate {
                    value: Value::Constant { value },
                } => Some(*value),
                _ => None,
            })
            .collect()
    }
}

fn same_operand(a: &Operand, b: &Operand) -> bool {
    match (a, b) {
        (Operand::Register { name: x }, Operand::Register { name: y }) => x == y,
        (Operand::Other { name: x }, Operand::Other { name: y }) => x == y,
        (Operand::Immediate { value: x }, Operand::Immediate { value: y }) => same_value(x, y),
        (Operand::Branch { reference: x }, Operand::Branch { reference: y }) => {
            same_target(&x.target, &y.target)
        }
        (Operand::Memory(x), Operand::Memory(y)) => {
            x.size == y.size
                && x.segment == y.segment
                && x.base == y.base
                && x.index == y.index
                && x.scale == y.scale
                && same_value(&x.displacement, &y.displacement)
        }
        _ => false,
    }
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Constant { value: x }, Value::Constant { value: y }) => x == y,
        (Value::Address { reference: x }, Value::Address { reference: y }) => {
            same_target(&x.target, &y.target)
        }
        _ => false,
    }
}

/// Target equality without the per-build table indices of functions and data symbols.
fn same_target(a: &Target, b: &Target) -> bool {
    match (a, b) {
        (
            Target::Function {
                name: x_name,
                offset: x_offset,
                ..
            },
            Target::Function {
                name: y_name,
                offset: y_offset,
                ..
            },
        ) => x_name == y_name && x_offset == y_offset,
        (
            Target::Data {
                name: x_name,
                offset: x_offset,
                data_kind: x_kind,
                content: x_content,
                ..
            },
            Target::Data {
                name: y_name,
                offset: y_offset,
                data_kind: y_kind,
                content: y_content,
                ..
            },
        ) => x_name == y_name && x_offset == y_offset && x_kind == y_kind && x_content == y_content,
        (Target::Slot { pointee: x }, Target::Slot { pointee: y }) => same_target(x, y),
        (Target::Stub { slot: x }, Target::Stub { slot: y }) => same_target(x, y),
        // Every other target holds no per-build address or index.
        (x, y) => x == y,
    }
}

fn skeleton_equal(a: &Operand, b: &Operand) -> bool {
    match (a, b) {
        (Operand::Branch { .. }, Operand::Branch { .. }) => true,
        (
            Operand::Immediate {
                value: Value::Address { .. },
            },
            Operand::Immediate {
                value: Value::Address { .. },
            },
        ) => true,
        (Operand::Memory(x), Operand::Memory(y)) => {
            x.size == y.size
                && x.segment == y.segment
                && x.base == y.base
                && x.index == y.index
                && x.scale == y.scale
                && match (&x.displacement, &y.displacement) {
                    (Value::Address { .. }, Value::Address { .. }) => true,
                    (d1, d2) => d1 == d2,
                }
        }
        (a, b) => a == b,
    }
}

/// How labels are written when rendering.
pub enum Labels<'a> {
    /// `L<index>`.
    Plain,
    /// `L` alone: for aligning listings, where an insertion shifts every later index.
    Blank,
    /// Each label mapped to the other build's index; unmapped ones as `L<index>'`.
    Mapped(&'a std::collections::HashMap<usize, usize>),
}

impl Labels<'_> {
    fn write(&self, text: &mut String, index: usize) {
        match self {
            Labels::Plain => {
                let _ = write!(text, "L{index}");
            }
            Labels::Blank => text.push('L'),
            Labels::Mapped(map) => match map.get(&index) {
                Some(mapped) => {
                    let _ = write!(text, "L{mapped}");
                }
                None => {
                    let _ = write!(text, "L{index}'");
                }
            },
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Full,
    ConstantsBlank,
}

fn render_operand(text: &mut String, operand: &Operand, labels: &Labels<'_>, shape: Shape) {
    match operand {
        Operand::Register { name } => text.push_str(name),
        Operand::Other { name } => text.push_str(name),
        Operand::Immediate { value } => match value {
            Value::Constant { .. } if shape == Shape::ConstantsBlank => text.push('#'),
            Value::Constant { value } => {
                let _ = write!(text, "{value:#x}");
            }
            Value::Address { reference } => render_target(text, &reference.target, labels),
        },
        Operand::Branch { reference } => render_target(text, &reference.target, labels),
        Operand::Memory(memory) => {
            let _ = write!(text, "{} ", memory.size);
            if let Some(segment) = &memory.segment {
                let _ = write!(text, "{segment}:");
            }
            text.push('[');
            let mut first = true;
            let mut part = |text: &mut String| {
                if !first {
                    text.push('+');
                }
                first = false;
            };
            if let Some(base) = &memory.base {
                part(text);
                text.push_str(base);
            }
            if let Some(index) = &memory.index {
                part(text);
                let _ = write!(text, "{index}*{}", memory.scale);
            }
            match &memory.displacement {
                Value::Address { reference } => {
                    part(text);
                    render_target(text, &reference.target, labels);
                }
                Value::Constant { value } => {
                    if *value != 0 || (memory.base.is_none() && memory.index.is_none()) {
                        part(text);
                        let _ = write!(text, "{value:#x}");
                    }
                }
            }
            text.push(']');
        }
    }
}

/// Writes what a target points at.
pub fn render_target(text: &mut String, target: &Target, labels: &Labels<'_>) {
    match target {
        Target::Label { index } => labels.write(text, *index),
        Target::InsideInstruction { offset } => {
            let _ = write!(text, "L?+{offset:#x}");
        }
        Target::Function { name, offset, .. } => {
            text.push_str(name);
            if *offset != 0 {
                let _ = write!(text, "+{offset:#x}");
            }
        }
        Target::Data {
            name,
            offset,
            content,
            ..
        } => {
            let _ = write!(text, "${name}");
            if let Some(hash) = content {
                let _ = write!(text, "#{hash:016x}");
            }
            if *offset != 0 {
                let _ = write!(text, "+{offset:#x}");
            }
        }
        Target::Import { library, name } => {
            let _ = write!(text, "import:{library}!{name}");
        }
        Target::Slot { pointee } => {
            text.push_str("slot:");
            render_target(text, pointee, labels);
        }
        Target::SymbolSlot { symbol, addend } => {
            let _ = write!(text, "slot:{symbol}{addend:+}");
        }
        Target::Stub { slot } => {
            text.push_str("stub:");
            render_target(text, slot, labels);
        }
        Target::JumpTable(table) => {
            text.push_str("jumptable[");
            for (idx, entry) in table.entries.iter().enumerate() {
                if idx > 0 {
                    text.push(',');
                }
                match entry {
                    TableEntry::Label { index } => labels.write(text, *index),
                    TableEntry::InsideInstruction { offset } => {
                        let _ = write!(text, "L?+{offset:#x}");
                    }
                    TableEntry::Function { name, offset, .. } => {
                        let _ = write!(text, "{name}.cold+{offset:#x}");
                    }
                }
            }
            text.push(']');
        }
        Target::Constant(constant) => match &constant.content {
            ConstantContent::Text { text: s } => {
                let _ = write!(text, "str:{s:?}");
            }
            ConstantContent::LongText { prefix, len, hash } => {
                let _ = write!(text, "str:{prefix:?}...+len={len}#{hash:016x}");
            }
            ConstantContent::Bytes { rendered } => {
                let _ = write!(text, "const{}:{rendered}", constant.len);
            }
        },
        Target::Unresolved { why } => match why {
            Unresolved::Code { section } => {
                let _ = write!(text, "code:{section}");
            }
            Unresolved::Data { section } => {
                let _ = write!(text, "data:{section}");
            }
            Unresolved::OutsideImage => text.push_str("abs:?"),
            Unresolved::ConstantContent => text.push_str("const:?"),
        },
    }
}

impl Target {
    /// Whether the engine could not name this target (or something inside it).
    pub fn is_unresolved(&self) -> bool {
        match self {
            Target::Unresolved { .. } | Target::InsideInstruction { .. } => true,
            Target::Slot { pointee } => pointee.is_unresolved(),
            Target::Stub { slot } => slot.is_unresolved(),
            Target::JumpTable(table) => table
                .entries
                .iter()
                .any(|entry| matches!(entry, TableEntry::InsideInstruction { .. })),
            _ => false,
        }
    }

    /// The target as text, labels plain.
    pub fn render(&self) -> String {
        let mut text = String::new();
        render_target(&mut text, self, &Labels::Plain);
        text
    }
}
