//! PE32+ x86-64 reader: the container facts (identity, sections, imports, exports, base
//! relocations, `.pdata`, TLS, initializer tables) come from the image with `object`; functions,
//! data, types, lines and inline sites come from the matching PDB (`pe/pdb.rs`).
//!
//! Without a PDB the functions are the image's exports and `.pdata` ranges, marked as having no
//! debug information. mingw-built images also carry DWARF from runtime objects; the PDB rules.

mod names;
mod pdb;
mod types;

use crate::finish::{MappedSection, bytes_at, finish};
use crate::identity::{guid_string, sha256_hex};
use crate::model::*;
use crate::{Error, Loaded, Result};
use object::LittleEndian as LE;
use object::pe;
use object::read::pe::{ImageNtHeaders, ImageOptionalHeader, PeFile64};
use object::{Object, ObjectSection};

/// Public symbols the mingw runtime uses to bracket its initializer tables.
pub(crate) fn load<'data>(
    binary: &'data [u8],
    debug: Option<&'data [u8]>,
) -> Result<Loaded<'data>> {
    let machine = object::FileKind::parse(binary).map_err(|source| Error::Malformed {
        format: "PE",
        what: "file header",
        source,
    })?;
    match machine {
        object::FileKind::Pe64 => {}
        object::FileKind::Pe32 => {
            return Err(Error::Unsupported {
                what: "32-bit PE (PE32); only PE32+ x86-64 is read".into(),
            });
        }
        other => {
            return Err(Error::Unsupported {
                what: format!("{other:?} file with an MZ header"),
            });
        }
    }
    let file = PeFile64::parse(binary).map_err(|source| Error::Malformed {
        format: "PE",
        what: "headers",
        source,
    })?;
    let nt = file.nt_headers();
    let machine = nt.file_header().machine.get(LE);
    if machine != pe::IMAGE_FILE_MACHINE_AMD64 {
        return Err(Error::Unsupported {
            what: format!("PE machine {machine:#06x}; only x86-64 (0x8664) is read"),
        });
    }
    let optional = nt.optional_header();
    let codeview = file
        .pdb_info()
        .map_err(|source| Error::Malformed {
            format: "PE",
            what: "debug directory",
            source,
        })?
        .map(|cv| CodeViewIdentity {
            guid: guid_string(&cv.guid()),
            age: cv.age(),
            pdb_path: String::from_utf8_lossy(cv.path()).into_owned(),
        });
    let identity = Identity {
        sha256: sha256_hex(binary),
        file_size: binary.len() as u64,
        machine: Machine::X86_64,
        pe: Some(PeIdentity {
            time_date_stamp: nt.file_header().time_date_stamp.get(LE),
            size_of_image: optional.size_of_image(),
            checksum: optional.check_sum(),
            image_base: optional.image_base(),
            codeview: codeview.clone(),
        }),
        elf: None,
    };

    let mut diagnostics = Vec::new();
    let (sections, mapped) = read_sections(&file);
    let entry = u64::from(optional.address_of_entry_point());
    let mut image = Image {
        format: Format::Pe,
        identity,
        debug_info: DebugInfoSource::None,
        entry_point: (entry != 0).then_some(entry),
        sections,
        functions: Vec::new(),
        data_symbols: Vec::new(),
        types: Vec::new(),
        source_files: Vec::new(),
        lines: Vec::new(),
        inline_sites: Vec::new(),
        imports: read_imports(&file, &mut diagnostics),
        exports: read_exports(&file, &mut diagnostics),
        relocations: read_base_relocations(&file, binary, &mut diagnostics),
        unwind: read_pdata(&file, binary, &mut diagnostics),
        tls: None,
        initializers: Vec::new(),
        producers: Vec::new(),
        section_bytes: Vec::new(),
    };
    image.tls = read_tls(
        &file,
        &mapped,
        optional.image_base(),
        &mut image.initializers,
        &mut diagnostics,
    );

    let publics = match debug {
        Some(pdb_bytes) => {
            let codeview = codeview.ok_or(Error::NoCodeViewRecord)?;
            let publics = pdb::read(pdb_bytes, &codeview, &mut image, &mut diagnostics)?;
            image.debug_info = DebugInfoSource::Pdb;
            publics
        }
        None => Vec::new(),
    };
    add_undescribed_functions(&mut image, &publics, &mapped);
    add_public_data(&mut image, &publics);
    read_initializer_tables(&mut image, &publics, &mapped);
    finish(&mut image, &mapped);
    link_funclets(&mut image, &mut diagnostics);
    Ok(Loaded { image, diagnostics })
}

/// Ties each MSVC exception funclet (`dtor$N`, `catch$N`, `filt$N`, `fin$N`) to the function it
/// belongs to. MSVC writes no `S_SEPCODE` for them and the linker places them apart from their
/// parent (`.text$x`); but the compiler writes a funclet's record right after its parent's in the
/// module's symbol stream, and the PDB reader takes that procedure when it has the name the
/// funclet names. Here that name becomes the name of the body that holds it (identical code
/// folding may have made it an alias). Funclets the stream order did not settle get a parent by
/// readable name, preferring one in the funclet's own module; a parent that stays ambiguous
/// (overloads) or is missing leaves the funclet without one and raises a diagnostic on it, so it
/// is never patched on its own.
fn link_funclets(image: &mut Image<'_>, diagnostics: &mut Vec<Diagnostic>) {
    use std::collections::BTreeMap;
    // Decorated name (own or alias) -> the name of the body that holds it.
    let mut body_of: BTreeMap<&str, &str> = BTreeMap::new();
    // Readable name -> (module, decorated name of the body) for every function and ICF alias.
    let mut bodies: BTreeMap<&str, Vec<(Option<&str>, &str)>> = BTreeMap::new();
    for function in &image.functions {
        let module = function.compile_unit.as_deref();
        body_of.insert(function.name.as_str(), function.name.as_str());
        for alias in &function.aliases {
            body_of.insert(alias.as_str(), function.name.as_str());
        }
        let names = std::iter::once(&function.display_name).chain(&function.alias_display_names);
        for display_name in names {
            bodies
                .entry(display_name.as_str())
                .or_default()
                .push((module, function.name.as_str()));
        }
    }
    let mut parents: Vec<(usize, Result<String, String>)> = Vec::new();
    for (idx, function) in image.functions.iter().enumerate() {
        let Some(parent_name) = names::funclet_parent(&function.display_name) else {
            continue;
        };
        if let Some(body) = function
            .parent
            .as_deref()
            .and_then(|parent| body_of.get(parent))
        {
            parents.push((idx, Ok((*body).to_owned())));
            continue;
        }
        let candidates = bodies.get(parent_name).map(Vec::as_slice).unwrap_or(&[]);
        let same_module: Vec<&str> = candidates
            .iter()
            .filter(|(module, _)| *module == function.compile_unit.as_deref())
            .map(|(_, name)| *name)
            .collect();
        let unique = |names: Vec<&str>| -> Option<String> {
            let mut names = names;
            names.sort_unstable();
            names.dedup();
            match names.as_slice() {
                [only] => Some((*only).to_owned()),
                _ => None,
            }
        };
        let all: Vec<&str> = candidates.iter().map(|(_, name)| *name).collect();
        let outcome = match unique(same_module).or_else(|| unique(all)) {
            Some(parent) => Ok(parent),
            None if candidates.is_empty() => Err(format!(
                "exception funclet {} names the parent {parent_name}, which is not a function of the image",
                function.display_name
            )),
            None => Err(format!(
                "exception funclet {} names the parent {parent_name}, which {} functions share",
                function.display_name,
                candidates.len()
            )),
        };
        parents.push((idx, outcome));
    }
    for (idx, outcome) in parents {
        let Some(function) = image.functions.get_mut(idx) else {
            continue;
        };
        match outcome {
            Ok(parent) => function.parent = Some(parent),
            Err(message) => {
                function.parent = None;
                diagnostics.push(Diagnostic {
                    location: DiagnosticLocation::PdbProcedures,
                    message,
                    function: Some(function.name.clone()),
                });
            }
        }
    }
}

fn read_sections<'data>(file: &PeFile64<'data>) -> (Vec<Section>, Vec<MappedSection<'data>>) {
    let mut sections = Vec::new();
    let mut mapped = Vec::new();
    for header in file.section_table().iter() {
        let name = String::from_utf8_lossy(header.raw_name()).into_owned();
        let characteristics = header.characteristics.get(LE);
        let rva = u64::from(header.virtual_address.get(LE));
        sections.push(Section {
            name,
            rva,
            virtual_size: u64::from(header.virtual_size.get(LE)),
            file_offset: u64::from(header.pointer_to_raw_data.get(LE)),
            file_size: u64::from(header.size_of_raw_data.get(LE)),
            executable: characteristics & pe::IMAGE_SCN_MEM_EXECUTE != 0,
            writable: characteristics & pe::IMAGE_SCN_MEM_WRITE != 0,
            readable: characteristics & pe::IMAGE_SCN_MEM_READ != 0,
            sha256: None,
        });
    }
    for section in file.sections() {
        let (Ok(name), Ok(bytes)) = (section.name(), section.data()) else {
            continue;
        };
        let rva = section
            .address()
            .saturating_sub(file.relative_address_base());
        // Raw data is padded to the file alignment; only the virtual size is the section.
        let virtual_size = section.size() as usize;
        let bytes = bytes.get(..virtual_size.min(bytes.len())).unwrap_or(bytes);
        mapped.push(MappedSection { name, rva, bytes });
    }
    (sections, mapped)
}

fn read_imports(file: &PeFile64<'_>, diagnostics: &mut Vec<Diagnostic>) -> Vec<Import> {
    let mut imports = Vec::new();
    let result = (|| -> object::Result<()> {
        let Some(table) = file.import_table()? else {
            return Ok(());
        };
        let mut descriptors = table.descriptors()?;
        while let Some(descriptor) = descriptors.next()? {
            let library =
                String::from_utf8_lossy(table.name(descriptor.name.get(LE))?).into_owned();
            let first_thunk = match descriptor.original_first_thunk.get(LE) {
                0 => descriptor.first_thunk.get(LE),
                thunk => thunk,
            };
            let mut thunks = table.thunks(first_thunk)?;
            // The loader writes each address into the IAT (`first_thunk`) slot of the same index.
            let mut slot_rva = u64::from(descriptor.first_thunk.get(LE));
            while let Some(thunk) = thunks.next::<pe::ImageNtHeaders64>()? {
                let name = match table.import::<pe::ImageNtHeaders64>(thunk)? {
                    object::read::pe::Import::Ordinal(ordinal) => format!("#{ordinal}"),
                    object::read::pe::Import::Name(_hint, name) => {
                        String::from_utf8_lossy(name).into_owned()
                    }
                };
                imports.push(Import {
                    library: library.clone(),
                    name,
                    slot_rva: Some(slot_rva),
                });
                slot_rva += 8;
            }
        }
        Ok(())
    })();
    if let Err(error) = result {
        diagnostics.push(diagnostic(
            ".idata",
            format!("import table is malformed: {error}"),
        ));
    }
    imports
}

fn read_exports(file: &PeFile64<'_>, diagnostics: &mut Vec<Diagnostic>) -> Vec<Export> {
    let result = (|| -> object::Result<Vec<Export>> {
        let Some(table) = file.export_table()? else {
            return Ok(Vec::new());
        };
        let mut exports = Vec::new();
        for export in table.exports()? {
            let name = match export.name {
                Some(name) => String::from_utf8_lossy(name).into_owned(),
                None => format!("#{}", export.ordinal),
            };
            let rva = match export.target {
                object::read::pe::ExportTarget::Address(rva) => u64::from(rva),
                // A forwarder has no code in this image.
                _ => 0,
            };
            exports.push(Export {
                name,
                rva,
                ordinal: Some(export.ordinal),
            });
        }
        Ok(exports)
    })();
    result.unwrap_or_else(|error| {
        diagnostics.push(diagnostic(
            ".edata",
            format!("export table is malformed: {error}"),
        ));
        Vec::new()
    })
}

fn read_base_relocations(
    file: &PeFile64<'_>,
    binary: &[u8],
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<Relocation> {
    let mut relocations = Vec::new();
    let result = (|| -> object::Result<()> {
        let Some(mut blocks) = file
            .data_directories()
            .relocation_blocks(binary, &file.section_table())?
        else {
            return Ok(());
        };
        while let Some(block) = blocks.next()? {
            for relocation in block {
                if relocation.typ == pe::IMAGE_REL_BASED_ABSOLUTE {
                    continue; // padding entry
                }
                relocations.push(Relocation {
                    rva: u64::from(relocation.virtual_address),
                    kind: RelocationType::PeBase(relocation.typ),
                    origin: RelocationOrigin::Base,
                    symbol: None,
                    addend: 0,
                });
            }
        }
        Ok(())
    })();
    if let Err(error) = result {
        diagnostics.push(diagnostic(
            ".reloc",
            format!("base relocations are malformed: {error}"),
        ));
    }
    relocations
}

/// `.pdata`: one `RUNTIME_FUNCTION` (begin, end, unwind info RVAs) per non-leaf function.
fn read_pdata(
    file: &PeFile64<'_>,
    binary: &[u8],
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<UnwindEntry> {
    let Some(directory) = file
        .data_directories()
        .get(pe::IMAGE_DIRECTORY_ENTRY_EXCEPTION)
    else {
        return Vec::new();
    };
    if directory.virtual_address.get(LE) == 0 {
        return Vec::new();
    }
    let bytes = match directory.data(binary, &file.section_table()) {
        Ok(bytes) => bytes,
        Err(error) => {
            diagnostics.push(diagnostic(
                ".pdata",
                format!("exception directory is unreadable: {error}"),
            ));
            return Vec::new();
        }
    };
    if bytes.len() % 12 != 0 {
        diagnostics.push(diagnostic(
            ".pdata",
            format!("size {} is not a multiple of 12", bytes.len()),
        ));
    }
    bytes
        .chunks_exact(12)
        .map(|entry| {
            let word = |i: usize| {
                u64::from(u32::from_le_bytes([
                    entry[i],
                    entry[i + 1],
                    entry[i + 2],
                    entry[i + 3],
                ]))
            };
            UnwindEntry {
                begin: word(0),
                end: word(4),
                info: word(8),
            }
        })
        .collect()
}

/// The TLS directory; its callbacks are also initializers (they run on every thread start).
fn read_tls(
    file: &PeFile64<'_>,
    mapped: &[MappedSection<'_>],
    image_base: u64,
    initializers: &mut Vec<Initializer>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Tls> {
    let directory = file.data_directories().get(pe::IMAGE_DIRECTORY_ENTRY_TLS)?;
    let rva = u64::from(directory.virtual_address.get(LE));
    if rva == 0 {
        return None;
    }
    let size = std::mem::size_of::<pe::ImageTlsDirectory64>() as u64;
    let Some(bytes) = bytes_at(mapped, rva, size) else {
        diagnostics.push(diagnostic(
            ".tls",
            format!("TLS directory at RVA {rva:#x} is outside the file"),
        ));
        return None;
    };
    let Ok((tls, _)) = object::pod::from_bytes::<pe::ImageTlsDirectory64>(bytes) else {
        diagnostics.push(diagnostic(".tls", "TLS directory is misaligned".into()));
        return None;
    };
    let to_rva = |va: u64| va.checked_sub(image_base);
    let start = to_rva(tls.start_address_of_raw_data.get(LE)).unwrap_or(0);
    let end = to_rva(tls.end_address_of_raw_data.get(LE)).unwrap_or(start);
    let mut callbacks = Vec::new();
    if let Some(mut slot) = to_rva(tls.address_of_call_backs.get(LE)) {
        // The callback array ends with a null pointer; cap it so a hostile file cannot spin.
        for _ in 0..1024 {
            let Some(word) = bytes_at(mapped, slot, 8) else {
                break;
            };
            let va = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
            if va == 0 {
                break;
            }
            if let Some(target) = to_rva(va) {
                callbacks.push(target);
                initializers.push(Initializer {
                    table: InitializerTable::TlsCallback,
                    slot_rva: slot,
                    target_rva: target,
                    target: None,
                });
            }
            slot += 8;
        }
    }
    Some(Tls {
        template_start: start,
        template_end: end.max(start),
        block_size: end.saturating_sub(start) + u64::from(tls.size_of_zero_fill.get(LE)),
        callbacks,
    })
}

/// Code named only by a public symbol or an export (runtime objects built without debug info):
/// listed so the diff sees all code, with the size its `.pdata` entry gives, else up to the next
/// known symbol.
fn add_undescribed_functions(
    image: &mut Image<'_>,
    publics: &[pdb::Public],
    mapped: &[MappedSection<'_>],
) {
    let mut known: std::collections::BTreeSet<u64> =
        image.functions.iter().map(|f| f.rva).collect();
    // Assembly objects (libgcc's `___chkstk_ms`) carry no function flag on their publics; a
    // public in an executable section names code all the same.
    let in_code = |rva: u64| image.section_at(rva).is_some_and(|s| s.executable);
    // Import thunks (`jmp [rip+slot]`) are not functions of the image: the diff names calls to
    // them by the import slot they jump through.
    let import_thunk = |rva: u64| {
        let Some(bytes) = bytes_at(mapped, rva, 6) else {
            return false;
        };
        let instruction =
            iced_x86::Decoder::with_ip(64, bytes, rva, iced_x86::DecoderOptions::NONE).decode();
        instruction.mnemonic() == iced_x86::Mnemonic::Jmp && instruction.is_ip_rel_memory_operand()
    };
    let mut candidates: Vec<(u64, String)> = publics
        .iter()
        .filter(|p| (p.code || in_code(p.rva)) && !import_thunk(p.rva))
        .map(|p| (p.rva, p.name.clone()))
        .collect();
    if image.debug_info == DebugInfoSource::None {
        candidates.extend(
            image
                .exports
                .iter()
                .filter(|e| e.rva != 0)
                .map(|e| (e.rva, e.name.clone())),
        );
        for entry in &image.unwind {
            candidates.push((entry.begin, format!("sub_{:x}", entry.begin)));
        }
    }
    candidates.sort();
    candidates.dedup_by(|a, b| a.0 == b.0);
    let starts: Vec<u64> = {
        let mut starts: Vec<u64> = known
            .iter()
            .copied()
            .chain(candidates.iter().map(|c| c.0))
            .collect();
        starts.sort_unstable();
        starts.dedup();
        starts
    };
    for (rva, name) in candidates {
        if known.contains(&rva) || image.function_at(rva).is_some() {
            continue;
        }
        let Some(section) = image.section_at(rva).filter(|s| s.executable).cloned() else {
            continue;
        };
        let section_end = section.rva + section.virtual_size;
        let next_start = starts
            .iter()
            .copied()
            .find(|&s| s > rva)
            .unwrap_or(section_end)
            .min(section_end);
        let size = image
            .unwind
            .binary_search_by_key(&rva, |u| u.begin)
            .ok()
            .and_then(|idx| image.unwind.get(idx))
            .map(|u| u.end.saturating_sub(u.begin))
            .unwrap_or(next_start.saturating_sub(rva));
        known.insert(rva);
        image.functions.push(Function {
            display_name: names::readable(&name),
            name,
            rva,
            size,
            section: section.name.clone(),
            compile_unit: None,
            linkage: Linkage::Global,
            has_debug_info: false,
            signature: None,
            noreturn: false,
            code: &[],
            padding_before: 0,
            first_instruction_len: None,
            aliases: Vec::new(),
            alias_display_names: Vec::new(),
            parent: None,
            uses_types: Vec::new(),
        });
    }
}

/// Data named only by a public symbol (runtime tables, import descriptors, `.refptr` slots):
/// listed with size 0 so that references to them have a name that survives address shifts.
fn add_public_data(image: &mut Image<'_>, publics: &[pdb::Public]) {
    let known: std::collections::BTreeSet<u64> = image.data_symbols.iter().map(|d| d.rva).collect();
    // The linker defines `__ImageBase` at RVA 0, the DOS header of every PE image; code reads it
    // (the CRT's `__scrt_is_nonwritable_in_current_image` checks the `MZ` signature there), but
    // MSVC's PDB has no public for it and no section holds the headers.
    // It spans the headers, which end where the first section begins: code reads fields of it
    // (`e_lfanew` at +0x3c).
    let headers_size = image.sections.iter().map(|s| s.rva).min().unwrap_or(0);
    if !known.contains(&0) && publics.iter().all(|p| p.rva != 0) {
        image.data_symbols.push(DataSymbol {
            name: "__ImageBase".into(),
            rva: 0,
            size: headers_size,
            section: "(headers)".into(),
            kind: DataKind::ReadOnly,
            linkage: Linkage::Global,
            compile_unit: None,
            type_name: None,
        });
    }
    for public in publics
        .iter()
        .filter(|p| !p.code && !known.contains(&p.rva))
    {
        let Some(section) = image
            .section_at(public.rva)
            .filter(|s| !s.executable)
            .cloned()
        else {
            continue;
        };
        let kind = if !section.writable {
            DataKind::ReadOnly
        } else if public.rva >= section.rva + section.file_size {
            DataKind::ZeroInitialized
        } else {
            DataKind::Writable
        };
        image.data_symbols.push(DataSymbol {
            name: public.name.clone(),
            rva: public.rva,
            size: 0,
            section: section.name,
            kind,
            linkage: Linkage::Global,
            compile_unit: None,
            type_name: None,
        });
    }
}

/// Reads the slots between the runtime's bracketing symbols (`__xc_a` .. `__xc_z`) and the
/// mingw `__CTOR_LIST__`/`__DTOR_LIST__` (a -1 sentinel, pointers, then 0).
fn read_initializer_tables(
    image: &mut Image<'_>,
    publics: &[pdb::Public],
    mapped: &[MappedSection<'_>],
) {
    let Some(image_base) = image.identity.pe.as_ref().map(|p| p.image_base) else {
        return;
    };
    let find = |name: &str| publics.iter().find(|p| p.name == name).map(|p| p.rva);
    let read_slots = |table: InitializerTable,
                      start: u64,
                      end: Option<u64>,
                      initializers: &mut Vec<Initializer>| {
        let mut slot = start;
        for _ in 0..4096 {
            if end.is_some_and(|end| slot >= end) {
                break;
            }
            let Some(word) = bytes_at(mapped, slot, 8) else {
                break;
            };
            let value = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
            if value == 0 && end.is_none() {
                break;
            }
            if let Some(target_rva) = value.checked_sub(image_base).filter(|_| value != u64::MAX) {
                initializers.push(Initializer {
                    table: table.clone(),
                    slot_rva: slot,
                    target_rva,
                    target: None,
                });
            }
            slot += 8;
        }
    };
    for (table, first, last) in CrtTable::ALL {
        if let (Some(start), Some(end)) = (find(first), find(last)) {
            // The bracketing slots themselves are null; read what lies strictly between.
            read_slots(
                InitializerTable::Crt(table),
                start + 8,
                Some(end),
                &mut image.initializers,
            );
        }
    }
    for (table, list) in [
        (InitializerTable::MingwConstructors, "__CTOR_LIST__"),
        (InitializerTable::MingwDestructors, "__DTOR_LIST__"),
    ] {
        if let Some(start) = find(list) {
            read_slots(table, start + 8, None, &mut image.initializers);
        }
    }
}

/// A diagnostic about a section of the image (`.pdata`, `.reloc`, `.tls`, ...).
fn diagnostic(section: &str, message: String) -> Diagnostic {
    Diagnostic {
        location: DiagnosticLocation::Section(section.into()),
        message,
        function: None,
    }
}

/// The CodeView (RSDS) record of a PE image, without reading anything else: the CLI uses it to
/// find the PDB by the path the linker recorded.
pub fn codeview_record(binary: &[u8]) -> Option<CodeViewIdentity> {
    let file = PeFile64::parse(binary).ok()?;
    let codeview = file.pdb_info().ok()??;
    Some(CodeViewIdentity {
        guid: guid_string(&codeview.guid()),
        age: codeview.age(),
        pdb_path: String::from_utf8_lossy(codeview.path()).into_owned(),
    })
}
