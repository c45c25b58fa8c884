//! ELF64 x86-64 + DWARF reader: turns an executable or shared object (and optionally the debug
//! file split off it with `objcopy --only-keep-debug`) into the one [`Image`] model.
//!
//! The container is read with `object`'s low-level ELF API (section headers, symbol tables,
//! relocation tables, notes, program headers) so every raw field stays visible; DWARF and
//! `.eh_frame` are read with `gimli`. The work is split by concept:
//! - this file: header checks, identity, sections, TLS, entry point, debug file matching;
//! - [`symbols`]: functions, data symbols, imports, exports;
//! - [`relocations`]: dynamic and `--emit-relocs` relocations, initializer tables;
//! - [`unwind`]: `.eh_frame` FDEs;
//! - [`dwarf`]: compilation units, subprograms, variables, inline sites, line tables;
//! - [`types`]: C-like type names and aggregate layouts from DWARF.
//!
//! Addresses: the model wants addresses relative to the image base. For `ET_DYN` the virtual
//! addresses in the file already are (the file is linked at 0), and for `ET_EXEC` the file is
//! loaded at exactly the addresses it names, so its base is 0 as far as a patch is concerned. Both
//! therefore use the virtual address unchanged, which keeps every address in the model equal to
//! what `readelf`, `nm` and the DWARF say.

mod dwarf;
mod relocations;
mod symbols;
mod types;
mod unwind;

#[cfg(test)]
mod tests;

use std::borrow::Cow;

use object::elf;
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};
use object::{LittleEndian, Object, ObjectSection};

use crate::finish::MappedSection;
use crate::model::{
    DebugInfoSource, Diagnostic, DiagnosticLocation, ElfIdentity, ElfType, Format, Identity, Image,
    Machine, Section, Tls,
};
use crate::{Error, Loaded, Result};

/// The only ELF flavour the reader accepts: 64-bit, little-endian.
type ElfHeader = elf::FileHeader64<LittleEndian>;
type ElfFile<'data> = object::read::elf::ElfFile64<'data, LittleEndian>;
type SectionTable<'data> = object::read::elf::SectionTable<'data, ElfHeader>;

const ENDIAN: LittleEndian = LittleEndian;

/// Indices into `e_ident` and the offset of `e_machine`, from the ELF specification.
const EI_CLASS: usize = 4;
const EI_DATA: usize = 5;
const EI_NIDENT: usize = 16;
const E_MACHINE_OFFSET: usize = 18;

/// What the other modules need to know about one section header, indexed like the section
/// header table so symbol `st_shndx` and relocation `sh_info` can be resolved directly.
#[derive(Clone, Copy, Debug)]
struct SectionFacts<'data> {
    name: &'data str,
    sh_type: u32,
    flags: u64,
    addr: u64,
    size: u64,
    offset: u64,
}

impl SectionFacts<'_> {
    fn is_alloc(&self) -> bool {
        self.flags & u64::from(elf::SHF_ALLOC) != 0
    }

    fn is_nobits(&self) -> bool {
        self.sh_type == elf::SHT_NOBITS
    }

    fn contains(&self, address: u64) -> bool {
        address >= self.addr && address - self.addr < self.size
    }
}

/// Reads an ELF64 x86-64 executable or shared object, and its separate debug file if given.
pub(crate) fn load<'data>(
    binary: &'data [u8],
    debug: Option<&'data [u8]>,
) -> Result<Loaded<'data>> {
    check_supported(binary)?;
    let file = ElfFile::parse(binary).map_err(malformed("file header and section table"))?;
    let header = file.elf_header();
    let elf_type = match header.e_type(ENDIAN) {
        elf::ET_EXEC => ElfType::Exec,
        elf::ET_DYN => ElfType::Dyn,
        elf::ET_REL => {
            return Err(Error::Unsupported {
                what: "relocatable ELF object (ET_REL)".into(),
            });
        }
        elf::ET_CORE => {
            return Err(Error::Unsupported {
                what: "ELF core dump (ET_CORE)".into(),
            });
        }
        other => {
            return Err(Error::Unsupported {
                what: format!("ELF file type {other:#x}"),
            });
        }
    };
    let mut diagnostics = Vec::new();
    // A damaged note leaves the build without an identity, which is reported; it does not
    // make the rest of the file unreadable.
    let build_id = match file.build_id() {
        Ok(build_id) => build_id.map(crate::identity::hex),
        Err(error) => {
            diagnostics.push(Diagnostic {
                location: DiagnosticLocation::Section(".note.gnu.build-id".into()),
                message: format!("cannot read the notes: {error}"),
                function: None,
            });
            None
        }
    };

    let debug_file = match debug {
        Some(debug_bytes) => Some(open_debug_file(debug_bytes, build_id.as_deref())?),
        None => None,
    };

    let section_table = file.elf_section_table();
    let section_facts = section_facts(section_table);
    let (sections, mapped) = sections_and_mapping(&section_facts, binary);

    let tls_segment = tls_segment(header, binary)?;

    // DWARF comes from the debug file when there is one: that is the point of giving it.
    let dwarf_source = debug_file.as_ref().unwrap_or(&file);
    let dwarf_sections = dwarf::load_sections(dwarf_source, &mut diagnostics);
    let code_ranges: Vec<(u64, u64)> = section_facts
        .iter()
        .filter(|s| s.is_alloc() && s.flags & u64::from(elf::SHF_EXECINSTR) != 0)
        .map(|s| (s.addr, s.addr.saturating_add(s.size)))
        .collect();
    let data_ranges: Vec<(u64, u64)> = section_facts
        .iter()
        .filter(|s| s.is_alloc())
        .map(|s| (s.addr, s.addr.saturating_add(s.size)))
        .collect();
    let mut facts = dwarf::read(
        &dwarf_sections,
        &dwarf::AddressSpace {
            code: &code_ranges,
            data: &data_ranges,
        },
    );
    diagnostics.append(&mut facts.diagnostics);

    // The symbol table: the binary's own, else the debug file's (a stripped binary keeps its
    // `.symtab` only there), else `.dynsym`.
    let symbol_source = symbols::pick_symbol_table(&file, debug_file.as_ref());
    let symbol_facts = symbols::read(
        &symbol_source,
        &section_facts,
        &facts,
        tls_segment.as_ref().map(|tls| tls.template_start),
    );
    diagnostics.extend(symbol_facts.diagnostics);

    let dynamic = symbols::read_dynamic(
        &file,
        &section_facts,
        tls_segment.as_ref(),
        &mut diagnostics,
    );

    let relocations = relocations::read(section_table, binary, &section_facts, &mut diagnostics);
    let initializers =
        relocations::initializers(&section_facts, binary, &relocations, &mut diagnostics);
    let unwind = unwind::read(&section_facts, binary, &mut diagnostics);

    let entry = header.e_entry(ENDIAN);
    let debug_info = if facts.has_units {
        DebugInfoSource::Dwarf
    } else {
        DebugInfoSource::None
    };

    let mut image = Image {
        format: Format::Elf,
        identity: Identity {
            sha256: crate::identity::sha256_hex(binary),
            file_size: binary.len() as u64,
            machine: Machine::X86_64,
            pe: None,
            elf: Some(ElfIdentity { build_id, elf_type }),
        },
        debug_info,
        entry_point: (entry != 0).then_some(entry),
        sections,
        functions: symbol_facts.functions,
        data_symbols: symbol_facts.data_symbols,
        types: facts.types,
        source_files: facts.source_files,
        lines: facts.lines,
        inline_sites: facts.inline_sites,
        imports: dynamic.imports,
        exports: dynamic.exports,
        relocations,
        unwind,
        tls: tls_segment,
        initializers,
        producers: facts.producers,
        section_bytes: Vec::new(),
    };
    crate::finish::finish(&mut image, &mapped);
    Ok(Loaded { image, diagnostics })
}

/// Refuses, with a name for what it is, anything but a 64-bit little-endian x86-64 ELF file.
///
/// This reads `e_ident` and `e_machine` by hand so that a file of another architecture is named
/// as such rather than reported as malformed.
fn check_supported(bytes: &[u8]) -> Result<()> {
    // Too short to say: `ElfFile::parse` reports it as malformed.
    let Some(ident) = bytes.get(..EI_NIDENT) else {
        return Ok(());
    };
    match ident.get(EI_CLASS).copied() {
        Some(elf::ELFCLASS64) => {}
        Some(elf::ELFCLASS32) => {
            return Err(Error::Unsupported {
                what: "32-bit ELF".into(),
            });
        }
        other => {
            return Err(Error::Unsupported {
                what: format!("ELF class {:#x}", other.unwrap_or(0)),
            });
        }
    }
    match ident.get(EI_DATA).copied() {
        Some(elf::ELFDATA2LSB) => {}
        Some(elf::ELFDATA2MSB) => {
            return Err(Error::Unsupported {
                what: "big-endian ELF".into(),
            });
        }
        other => {
            return Err(Error::Unsupported {
                what: format!("ELF data encoding {:#x}", other.unwrap_or(0)),
            });
        }
    }
    // e_machine is the u16 right after e_ident and e_type.
    let Some(&[low, high]) = bytes.get(E_MACHINE_OFFSET..E_MACHINE_OFFSET + 2) else {
        return Ok(());
    };
    let machine = u16::from_le_bytes([low, high]);
    if machine != elf::EM_X86_64 {
        return Err(Error::Unsupported {
            what: format!("ELF machine {}", machine_name(machine)),
        });
    }
    Ok(())
}

/// The `EM_*` name of the machines one is likely to be handed by mistake.
fn machine_name(machine: u16) -> String {
    let name = match machine {
        elf::EM_386 => "EM_386",
        elf::EM_ARM => "EM_ARM",
        elf::EM_AARCH64 => "EM_AARCH64",
        elf::EM_RISCV => "EM_RISCV",
        elf::EM_PPC => "EM_PPC",
        elf::EM_PPC64 => "EM_PPC64",
        elf::EM_S390 => "EM_S390",
        elf::EM_MIPS => "EM_MIPS",
        elf::EM_SPARCV9 => "EM_SPARCV9",
        elf::EM_LOONGARCH => "EM_LOONGARCH",
        elf::EM_IA_64 => "EM_IA_64",
        elf::EM_BPF => "EM_BPF",
        elf::EM_NONE => "EM_NONE",
        other => return format!("{other:#x}"),
    };
    name.into()
}

fn malformed(what: &'static str) -> impl Fn(object::Error) -> Error {
    move |source| Error::Malformed {
        format: "ELF",
        what,
        source,
    }
}

/// Opens a separate debug file and proves it belongs to the binary by the GNU build-id.
fn open_debug_file<'data>(
    debug: &'data [u8],
    binary_build_id: Option<&str>,
) -> Result<ElfFile<'data>> {
    if !debug.starts_with(&[0x7f, b'E', b'L', b'F']) {
        return Err(Error::WrongDebugFormat {
            expected: "an ELF debug file",
        });
    }
    check_supported(debug)?;
    let file = ElfFile::parse(debug).map_err(malformed("debug file header and section table"))?;
    let debug_build_id = file
        .build_id()
        .map_err(malformed("debug file GNU build-id note"))?
        .map(crate::identity::hex);
    let binary_build_id = binary_build_id.ok_or(Error::NoBuildId {
        which: "the binary",
    })?;
    let debug_build_id = debug_build_id.ok_or(Error::NoBuildId {
        which: "the debug file",
    })?;
    if binary_build_id != debug_build_id {
        return Err(Error::DebugMismatch {
            binary: binary_build_id.to_owned(),
            debug: debug_build_id,
        });
    }
    Ok(file)
}

/// One [`SectionFacts`] per section header, in header order. A name that cannot be read is
/// replaced by a placeholder: one bad `sh_name` does not make the rest of the file unusable.
fn section_facts<'data>(table: &SectionTable<'data>) -> Vec<SectionFacts<'data>> {
    table
        .iter()
        .map(|header| SectionFacts {
            name: table
                .section_name(ENDIAN, header)
                .ok()
                .and_then(|name| std::str::from_utf8(name).ok())
                .unwrap_or("<unreadable section name>"),
            sh_type: header.sh_type(ENDIAN),
            flags: header.sh_flags(ENDIAN),
            addr: header.sh_addr(ENDIAN),
            size: header.sh_size(ENDIAN),
            offset: header.sh_offset(ENDIAN),
        })
        .collect()
}

/// The file bytes of a section, or nothing if it has none or they lie outside the file.
fn section_bytes<'data>(section: &SectionFacts<'data>, data: &'data [u8]) -> &'data [u8] {
    if section.is_nobits() {
        return &[];
    }
    let start = usize::try_from(section.offset).ok();
    let end = section
        .offset
        .checked_add(section.size)
        .and_then(|end| usize::try_from(end).ok());
    match (start, end) {
        (Some(start), Some(end)) => data.get(start..end).unwrap_or(&[]),
        _ => &[],
    }
}

/// The model's sections (every `SHF_ALLOC` section) and the file bytes placed at their
/// addresses for `finish`.
fn sections_and_mapping<'data>(
    facts: &[SectionFacts<'data>],
    data: &'data [u8],
) -> (Vec<Section>, Vec<MappedSection<'data>>) {
    let mut sections = Vec::new();
    let mut mapped = Vec::new();
    for section in facts.iter().filter(|s| s.is_alloc()) {
        let file_size = if section.is_nobits() { 0 } else { section.size };
        sections.push(Section {
            name: section.name.to_owned(),
            rva: section.addr,
            virtual_size: section.size,
            file_offset: section.offset,
            file_size,
            executable: section.flags & u64::from(elf::SHF_EXECINSTR) != 0,
            writable: section.flags & u64::from(elf::SHF_WRITE) != 0,
            readable: true,
            sha256: None,
        });
        let bytes = section_bytes(section, data);
        if !bytes.is_empty() {
            mapped.push(MappedSection {
                name: section.name,
                rva: section.addr,
                bytes,
            });
        }
    }
    (sections, mapped)
}

/// The TLS template from the `PT_TLS` program header.
fn tls_segment(header: &ElfHeader, data: &[u8]) -> Result<Option<Tls>> {
    let segments = header
        .program_headers(ENDIAN, data)
        .map_err(malformed("program headers"))?;
    Ok(segments
        .iter()
        .find(|segment| segment.p_type(ENDIAN) == elf::PT_TLS)
        .map(|segment| {
            let start = segment.p_vaddr(ENDIAN);
            Tls {
                template_start: start,
                template_end: start.saturating_add(segment.p_filesz(ENDIAN)),
                block_size: segment.p_memsz(ENDIAN),
                callbacks: Vec::new(),
            }
        }))
}

/// zlib cannot compress better than about 1032:1; debug sections compressed with zstd come
/// nowhere near this either.
const MAX_COMPRESSION_RATIO: u64 = 2048;

/// The uncompressed data of the named section of `file`, or a diagnostic and nothing.
fn section_data_by_name<'data>(
    file: &ElfFile<'data>,
    name: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Cow<'data, [u8]> {
    let Some(section) = file.section_by_name(name) else {
        return Cow::Borrowed(&[]);
    };
    // The decompressor fills the whole declared size before it starts, so a forged size would
    // cost gigabytes: believe at most what the best compression ratio could give.
    if let Ok(compressed) = section.compressed_data()
        && compressed.format != object::CompressionFormat::None
    {
        let limit = (compressed.data.len() as u64)
            .saturating_mul(MAX_COMPRESSION_RATIO)
            .max(1 << 20);
        if compressed.uncompressed_size > limit {
            diagnostics.push(Diagnostic {
                location: DiagnosticLocation::Section(name.to_owned()),
                message: format!(
                    "the section claims to decompress from {} to {} bytes, which no real \
                     compressor achieves",
                    compressed.data.len(),
                    compressed.uncompressed_size
                ),
                function: None,
            });
            return Cow::Borrowed(&[]);
        }
    }
    match section.uncompressed_data() {
        Ok(data) => data,
        Err(error) => {
            diagnostics.push(Diagnostic {
                location: DiagnosticLocation::Section(name.to_owned()),
                message: format!("cannot read the section: {error}"),
                function: None,
            });
            Cow::Borrowed(&[])
        }
    }
}
