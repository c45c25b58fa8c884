//! The one model of a binary that every later stage reads: functions, data symbols, type
//! layouts, line tables, inlining records, sections, imports, exports, relocations, unwind
//! entries, TLS, initializers and the identity of the build.
//!
//! Both readers (PE+PDB and ELF+DWARF) fill the same types, so diff and policy never see a file
//! format. All addresses are image-relative: the RVA for PE; for ELF the virtual address as the
//! file states it, which is image-relative for `ET_DYN` (PIE, shared objects) and absolute for
//! `ET_EXEC`, whose load address is fixed anyway.
//! Every collection is sorted, so anything emitted from it is deterministic.

use serde::Serialize;

pub use crate::provenance::{CrtTable, DiagnosticLocation, InitializerTable};
pub use crate::relocation::{RelocationOrigin, RelocationType};

/// Which container format the image came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Pe,
    Elf,
}

/// A loaded binary with its debug information.
#[derive(Debug, Serialize)]
pub struct Image<'data> {
    pub format: Format,
    pub identity: Identity,
    /// Where the debug information came from (`"pdb"`, `"dwarf"`, or `"none"`).
    pub debug_info: DebugInfoSource,
    /// Entry point RVA, if the image has one.
    pub entry_point: Option<u64>,
    pub sections: Vec<Section>,
    /// Sorted by RVA, then name. Bodies folded together (ICF) appear once, with `aliases`.
    pub functions: Vec<Function<'data>>,
    /// Sorted by RVA, then name.
    pub data_symbols: Vec<DataSymbol>,
    /// Sorted by name, then fingerprint.
    pub types: Vec<TypeLayout>,
    /// Source files referenced by `lines`, indexed by `LineRow::file`.
    pub source_files: Vec<String>,
    /// Sorted by RVA.
    pub lines: Vec<LineRow>,
    /// Sorted by caller RVA, then range start.
    pub inline_sites: Vec<InlineSite>,
    pub imports: Vec<Import>,
    pub exports: Vec<Export>,
    /// Sorted by RVA of the patched location.
    pub relocations: Vec<Relocation>,
    /// Sorted by begin RVA.
    pub unwind: Vec<UnwindEntry>,
    pub tls: Option<Tls>,
    /// Sorted by the RVA of the table slot.
    pub initializers: Vec<Initializer>,
    /// The compilers and options that built the code (DWARF `DW_AT_producer`, PDB `S_COMPILE3`),
    /// sorted and unique.
    pub producers: Vec<String>,
    /// The file bytes of every section that has them, for reading code and initial values.
    #[serde(skip)]
    pub section_bytes: Vec<crate::finish::MappedSection<'data>>,
}

/// Which debug information described the functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DebugInfoSource {
    Pdb,
    Dwarf,
    /// Only the symbol table was available.
    None,
}

/// What identifies exactly one build, so a patch can be keyed to it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// SHA-256 of the whole file, lowercase hex.
    pub sha256: String,
    pub file_size: u64,
    /// The only architecture the readers accept today.
    pub machine: Machine,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pe: Option<PeIdentity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elf: Option<ElfIdentity>,
}

/// The instruction set of the image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum Machine {
    #[default]
    #[serde(rename = "x86_64")]
    X86_64,
}

impl Machine {
    /// The name reports print (`x86_64`).
    pub fn name(self) -> &'static str {
        match self {
            Machine::X86_64 => "x86_64",
        }
    }
}

/// The fields Windows keys a hotpatch on, plus the CodeView record naming the PDB.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PeIdentity {
    pub time_date_stamp: u32,
    pub size_of_image: u32,
    pub checksum: u32,
    pub image_base: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub codeview: Option<CodeViewIdentity>,
}

/// The RSDS record of a PE debug directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CodeViewIdentity {
    /// The GUID in registry form (`8-4-4-4-12`, uppercase hex).
    pub guid: String,
    pub age: u32,
    pub pdb_path: String,
}

/// The identity of an ELF build.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ElfIdentity {
    /// The `NT_GNU_BUILD_ID` note, lowercase hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    pub elf_type: ElfType,
}

/// The ELF file type (`e_type`) of an image the readers accept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ElfType {
    /// `ET_EXEC`: linked at a fixed address.
    #[default]
    Exec,
    /// `ET_DYN`: position-independent (PIE or shared object).
    Dyn,
}

impl ElfType {
    /// The name reports print (`exec`, `dyn`).
    pub fn name(self) -> &'static str {
        match self {
            ElfType::Exec => "exec",
            ElfType::Dyn => "dyn",
        }
    }
}

/// Whether a symbol is visible outside its compilation unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Linkage {
    Global,
    Static,
}

/// One function body.
#[derive(Clone, Debug, Serialize)]
pub struct Function<'data> {
    /// The decorated (MSVC) or mangled (Itanium) name, as the linker saw it; for C, the plain name.
    pub name: String,
    /// The name as the debug information spells it for people.
    pub display_name: String,
    pub rva: u64,
    pub size: u64,
    pub section: String,
    /// The compilation unit (PDB module, DWARF CU name) the function came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compile_unit: Option<String>,
    pub linkage: Linkage,
    /// True when the debug information describes this function; false when only a symbol
    /// table or a PE public symbol names it (runtime objects built without debug info).
    pub has_debug_info: bool,
    /// The code bytes, borrowed from the mapped file. Empty when the section has no file data.
    #[serde(skip)]
    pub code: &'data [u8],
    /// Bytes before the entry that no function owns and that hold only filler (int3, nop,
    /// zero): room for a redirect that does not overwrite the first instruction.
    pub padding_before: u64,
    /// Length in bytes of the instruction at the entry, if it decodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_instruction_len: Option<u8>,
    /// The type of the function as the debug information gives it, `ret(arg, arg)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The debug information says a call never returns (DWARF `DW_AT_noreturn`, PDB
    /// `S_GPROC32` flag `CV_PFLAG_NEVER`): the call ends the process, the thread or the frame
    /// (an error-raising routine that longjmps or throws). See also [`crate::is_noreturn_import`].
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub noreturn: bool,
    /// Other names whose body is this same body (identical code folding), sorted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// The readable names (`display_name`) of the aliases, sorted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alias_display_names: Vec<String>,
    /// For an exception funclet (MSVC `dtor$N`, `catch$N`, `filt$N`, `fin$N`): the `name` of the
    /// function it belongs to. A funclet runs only on behalf of its parent's frame, so it is
    /// replaced together with its parent or not at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The aggregates the function works on, as the debug information types its parameters and
    /// local variables (DWARF `DW_TAG_formal_parameter`/`DW_TAG_variable` under the subprogram,
    /// its lexical blocks and inlined subroutines; PDB `S_LOCAL`, `S_REGREL32`, `S_BPREL32`,
    /// `S_REGISTER` under the procedure and its type's argument list and class), each followed
    /// through pointers, references, typedefs, qualifiers and arrays. Sorted, unique.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub uses_types: Vec<TypeId>,
}

impl Function<'_> {
    /// The RVA one past the last byte of the body.
    pub fn end(&self) -> u64 {
        self.rva.saturating_add(self.size)
    }
}

/// Where a data symbol lives, which decides whether a patch may touch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataKind {
    Writable,
    ReadOnly,
    ZeroInitialized,
    ThreadLocal,
}

/// A global or static variable, or a named constant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DataSymbol {
    pub name: String,
    pub rva: u64,
    pub size: u64,
    pub section: String,
    pub kind: DataKind,
    pub linkage: Linkage,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compile_unit: Option<String>,
    /// The type as the debug information names it (`struct session`, `int[16]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub type_name: Option<String>,
}

/// `struct`, `union` or `class`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TypeKind {
    Struct,
    Union,
    Class,
}

/// An aggregate type of the same image: the index of its layout in [`Image::types`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct TypeId(pub u32);

impl TypeId {
    /// The position in [`Image::types`].
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// The memory layout of an aggregate type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TypeLayout {
    pub name: String,
    pub kind: TypeKind,
    pub size: u64,
    pub fields: Vec<Field>,
    /// SHA-256 (first 16 bytes, hex) of the canonical layout text from [`TypeLayout::canonical`].
    /// Two builds have the same layout for a type exactly when the fingerprints match.
    pub fingerprint: String,
}

/// One data member of an aggregate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Field {
    pub name: String,
    /// Byte offset from the start of the aggregate.
    pub offset: u64,
    pub type_name: String,
    /// For bit fields: the bit offset within the storage unit and the width.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bits: Option<(u32, u32)>,
    /// The byte size of the member's type (DWARF `DW_AT_byte_size` of its type, through
    /// typedefs and qualifiers, arrays as element size times count; PDB type sizes), when the
    /// debug information gives one. For a bit field, the size of its storage unit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The aggregate the member's type is, points to or holds an array of (through typedefs
    /// and qualifiers), as the same name resolves in [`Image::types`]: how a function that
    /// works on the enclosing type reaches another (`p->q->field`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reaches: Option<TypeId>,
}

impl Field {
    /// The order of the fields of a [`TypeLayout`]: by offset, bit position, then name.
    pub(crate) fn layout_order(&self, other: &Field) -> std::cmp::Ordering {
        (self.offset, self.bits, &self.name).cmp(&(other.offset, other.bits, &other.name))
    }
}

impl TypeLayout {
    /// Builds a layout and computes its fingerprint.
    pub fn new(name: String, kind: TypeKind, size: u64, mut fields: Vec<Field>) -> Self {
        // A stable sort: a reader that sorted its own list alongside the same way finds it
        // unchanged.
        fields.sort_by(Field::layout_order);
        let mut layout = TypeLayout {
            name,
            kind,
            size,
            fields,
            fingerprint: String::new(),
        };
        layout.fingerprint = crate::identity::short_hash(layout.canonical().as_bytes());
        layout
    }

    /// A text form that is equal for equal layouts, independent of format and build.
    pub fn canonical(&self) -> String {
        use std::fmt::Write;
        let mut text = format!("{:?} {} size={}\n", self.kind, self.name, self.size);
        for field in &self.fields {
            let _ = write!(
                text,
                "  +{} {}: {}",
                field.offset, field.name, field.type_name
            );
            if let Some((bit_offset, bit_size)) = field.bits {
                let _ = write!(text, " bits {bit_offset}:{bit_size}");
            }
            // A field's size is left out: a PDB may lack the definition behind a member's
            // forward reference in one build only (MSVC's `std::ios_base` base of
            // `std::basic_ios`), and a member that grows changes the aggregate's size or a later
            // offset, or is itself a changed layout.
            text.push('\n');
        }
        text
    }
}

/// One row of a line table: code starting at `rva` came from `line` of `source_files[file]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct LineRow {
    pub rva: u64,
    pub file: u32,
    pub line: u32,
}

/// Code of `inlinee` that the compiler copied into the function at `caller_rva`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct InlineSite {
    pub caller_rva: u64,
    pub inlinee: String,
    /// `(start RVA, length)` of the inlined code.
    pub ranges: Vec<(u64, u64)>,
    /// Where the call was written (`DW_AT_call_file`/`DW_AT_call_line`), as a row at the first
    /// range. `None` for PDBs: CodeView records no call site, and the caller's own line table
    /// (or the enclosing inline site's lines) gives the call's line over the inlined range.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_site: Option<LineRow>,
    /// The inlinee's own line rows inside `ranges`, sorted, for formats whose line table holds
    /// only the outer function's lines (PDB: the `S_INLINESITE` binary annotations). Empty for
    /// DWARF, whose line program already describes inlined code row by row in `Image::lines`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<LineRow>,
}

/// A section of the image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Section {
    pub name: String,
    pub rva: u64,
    pub virtual_size: u64,
    pub file_offset: u64,
    pub file_size: u64,
    pub executable: bool,
    pub writable: bool,
    pub readable: bool,
    /// SHA-256 of the section's file bytes (hex), so content changes (resources) can be seen
    /// without the bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// A symbol the image takes from a shared library or DLL.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Import {
    /// The DLL (PE) or the needed library (ELF, empty when the symbol is not versioned to one).
    pub library: String,
    /// The name, or `#ordinal` for PE imports by ordinal.
    pub name: String,
    /// RVA of the slot the loader fills with the address (PE IAT entry), when known. ELF code
    /// reaches imports through GOT slots, which `relocations` name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot_rva: Option<u64>,
}

/// A symbol the image offers to others.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Export {
    pub name: String,
    pub rva: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ordinal: Option<u32>,
}

/// A place the loader or linker patches with an address.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Relocation {
    /// RVA of the bytes that are patched.
    pub rva: u64,
    /// The relocation type (serialized as the format's own name: `IMAGE_REL_BASED_DIR64`,
    /// `R_X86_64_PC32`).
    pub kind: RelocationType,
    pub origin: RelocationOrigin,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
    pub addend: i64,
}

/// One unwind table entry covering a range of code.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct UnwindEntry {
    pub begin: u64,
    pub end: u64,
    /// PE: RVA of the `UNWIND_INFO`; ELF: offset of the FDE in `.eh_frame`.
    pub info: u64,
}

/// Thread-local storage of the image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Tls {
    /// RVA range of the initialized TLS template.
    pub template_start: u64,
    pub template_end: u64,
    /// Total size of one thread's block (template plus zero fill).
    pub block_size: u64,
    /// PE TLS callbacks (RVAs), which run like initializers on every thread start.
    pub callbacks: Vec<u64>,
}

/// A function the loader or runtime calls before `main` (or at exit), from a table in the image.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Initializer {
    /// The table (serialized as `.init_array`, `.fini_array`, `.ctors`, `.CRT$XC`,
    /// `tls-callback`, ...).
    pub table: InitializerTable,
    /// RVA of the slot in the table.
    pub slot_rva: u64,
    /// RVA of the function the slot points to.
    pub target_rva: u64,
    /// The function at `target_rva`, if one is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// A problem found while reading that did not stop the reading.
///
/// Anything that touches a function makes a patch of it reboot-required downstream.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Diagnostic {
    /// The part of the input (serialized as `"pdb module foo.obj"`, `".debug_info"`, `".pdata"`).
    pub location: DiagnosticLocation,
    pub message: String,
    /// The function concerned, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
}

/// The parent of a cold part: gcc moves the unlikely paths of `foo` into `foo.cold` (or
/// `foo.cold.N`) in `.text.unlikely`; the parent enters it at several offsets and it may jump
/// back into the parent. `None` for any other name.
pub fn cold_part_parent(name: &str) -> Option<&str> {
    let at = name.rfind(".cold")?;
    let rest = &name[at + ".cold".len()..];
    let numbered = rest
        .strip_prefix('.')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    (at > 0 && (rest.is_empty() || numbered)).then(|| &name[..at])
}

impl Image<'_> {
    /// The aggregates from which one of `targets` is reached through at most `max_hops` fields
    /// (a field that holds it by value, points to it, holds an array of it, through typedefs
    /// and qualifiers; see [`Field::reaches`]), `targets` included (0 hops), each with the
    /// number of hops. A function whose parameter or local is of such a type can reach the
    /// targets by dereferencing members (`p->q->field`); which members it dereferences is
    /// data flow the debug information does not record.
    pub fn types_reaching(
        &self,
        targets: &[TypeId],
        max_hops: u32,
    ) -> std::collections::BTreeMap<TypeId, u32> {
        let mut holders: std::collections::HashMap<TypeId, Vec<TypeId>> =
            std::collections::HashMap::new();
        for (position, layout) in self.types.iter().enumerate() {
            let Ok(position) = u32::try_from(position) else {
                break;
            };
            for reached in layout.fields.iter().filter_map(|field| field.reaches) {
                holders.entry(reached).or_default().push(TypeId(position));
            }
        }
        let mut found: std::collections::BTreeMap<TypeId, u32> =
            targets.iter().map(|&id| (id, 0)).collect();
        let mut frontier: Vec<TypeId> = targets.to_vec();
        for hops in 1..=max_hops {
            let mut next = Vec::new();
            for id in frontier {
                for &holder in holders.get(&id).map_or(&[][..], Vec::as_slice) {
                    if let std::collections::btree_map::Entry::Vacant(entry) = found.entry(holder) {
                        entry.insert(hops);
                        next.push(holder);
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            frontier = next;
        }
        found
    }

    /// The function whose body contains `rva`.
    pub fn function_at(&self, rva: u64) -> Option<&Function<'_>> {
        let idx = self.functions.partition_point(|f| f.rva <= rva);
        let candidate = self.functions.get(idx.checked_sub(1)?)?;
        (rva < candidate.end() || (candidate.size == 0 && rva == candidate.rva))
            .then_some(candidate)
    }

    /// Where the pointer slot at `rva`, which a relocation patches, points (an RVA): ELF RELA
    /// keeps the target in the addend, PE stores the preferred-base VA in place.
    pub fn pointer_target(&self, rva: u64) -> Option<u64> {
        let idx = self.relocations.partition_point(|r| r.rva < rva);
        let relocation = self.relocations.get(idx).filter(|r| r.rva == rva)?;
        self.relocation_target(relocation)
    }

    /// Where a relocated pointer slot points (an RVA); see [`Image::pointer_target`].
    pub fn relocation_target(&self, relocation: &Relocation) -> Option<u64> {
        let base = self.identity.pe.as_ref().map_or(0, |pe| pe.image_base);
        match relocation.addend {
            0 => self
                .bytes_at(relocation.rva, 8)?
                .try_into()
                .ok()
                .map(u64::from_le_bytes)?
                .checked_sub(base),
            addend => Some(addend as u64),
        }
    }

    /// The file bytes `[rva, rva + len)`, if one section holds all of them.
    pub fn bytes_at(&self, rva: u64, len: u64) -> Option<&[u8]> {
        crate::finish::bytes_at(&self.section_bytes, rva, len)
    }

    /// The section containing `rva`.
    pub fn section_at(&self, rva: u64) -> Option<&Section> {
        self.sections
            .iter()
            .find(|s| rva >= s.rva && rva < s.rva.saturating_add(s.virtual_size.max(s.file_size)))
    }
}
