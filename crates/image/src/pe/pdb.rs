//! The PDB half of the PE reader: checks that the PDB belongs to the image (RSDS GUID and age),
//! then reads procedures, data, publics, line tables and inline sites from the module streams
//! and type layouts from TPI.
//!
//! The `pdb2` crate can panic on some corrupted PDBs (GUIDE §2); the whole read runs inside
//! `catch_unwind` so that a hostile PDB yields an error, not a crash.

use super::names;
use super::types::TypeNames;
use crate::model::*;
use crate::{Error, Result};
use pdb2::FallibleIterator;
use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;

/// A PDB public symbol (`S_PUB32`): the decorated name of a function or datum.
#[derive(Clone, Debug)]
pub(crate) struct Public {
    pub name: String,
    pub rva: u64,
    pub code: bool,
}

type Pdb<'data> = pdb2::PDB<'data, Cursor<&'data [u8]>>;

/// Reads `pdb_bytes` into `image` and returns its public symbols.
pub(crate) fn read(
    pdb_bytes: &[u8],
    codeview: &CodeViewIdentity,
    image: &mut Image<'_>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<Vec<Public>> {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        read_unguarded(pdb_bytes, codeview, image, diagnostics)
    }));
    outcome.unwrap_or(Err(Error::PdbReaderFailed {
        what: "a PDB stream",
    }))
}

fn pdb_error(what: &'static str) -> impl FnOnce(pdb2::Error) -> Error {
    move |source| Error::Pdb { what, source }
}

fn read_unguarded(
    pdb_bytes: &[u8],
    codeview: &CodeViewIdentity,
    image: &mut Image<'_>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<Vec<Public>> {
    let mut pdb: Pdb<'_> =
        pdb2::PDB::open(Cursor::new(pdb_bytes)).map_err(pdb_error("MSF header"))?;
    check_match(&mut pdb, codeview)?;

    let address_map = pdb.address_map().map_err(pdb_error("section headers"))?;
    let string_table = pdb.string_table().ok();
    let type_information = pdb.type_information().map_err(pdb_error("TPI stream"))?;
    let id_information = pdb.id_information().map_err(pdb_error("IPI stream"))?;
    let mut type_names = TypeNames::new(&type_information).map_err(pdb_error("TPI stream"))?;
    image.types = type_names.layouts(diagnostics);

    let mut id_finder = id_information.finder();
    let mut ids = id_information.iter();
    while ids.next().map_err(pdb_error("IPI stream"))?.is_some() {
        id_finder.update(&ids);
    }

    let publics = read_publics(&mut pdb, &address_map)?;
    // Several publics share an RVA where the linker folded identical bodies (/OPT:ICF).
    let mut public_names: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    for public in &publics {
        public_names
            .entry(public.rva)
            .or_default()
            .push(public.name.as_str());
    }

    let mut files = FileTable::default();
    let debug_information = pdb.debug_information().map_err(pdb_error("DBI stream"))?;
    let mut modules = debug_information
        .modules()
        .map_err(pdb_error("DBI module list"))?;
    while let Some(module) = modules.next().map_err(pdb_error("DBI module list"))? {
        let module_name = module.module_name().into_owned();
        let module_info = match pdb.module_info(&module) {
            Ok(Some(info)) => info,
            Ok(None) => continue,
            Err(error) => {
                diagnostics.push(module_diagnostic(
                    &module_name,
                    format!("module stream is unreadable: {error}"),
                ));
                continue;
            }
        };
        let context = ModuleContext {
            module_name: &module_name,
            address_map: &address_map,
            public_names: &public_names,
            id_finder: &id_finder,
        };
        if let Err(error) = read_module_symbols(&module_info, &context, &mut type_names, image) {
            diagnostics.push(module_diagnostic(
                &module_name,
                format!("symbols are malformed: {error}"),
            ));
        }
        if let Err(error) = read_module_lines(
            &module_info,
            &address_map,
            string_table.as_ref(),
            &mut files,
            &mut image.lines,
        ) {
            diagnostics.push(module_diagnostic(
                &module_name,
                format!("line table is malformed: {error}"),
            ));
        }
    }
    read_global_data(&mut pdb, &address_map, &mut type_names, image)?;
    image.source_files = files.names;
    Ok(publics)
}

/// Refuses a PDB whose GUID or age differs from the image's RSDS record.
fn check_match(pdb: &mut Pdb<'_>, codeview: &CodeViewIdentity) -> Result<()> {
    let info = pdb
        .pdb_information()
        .map_err(pdb_error("PDB info stream"))?;
    let pdb_guid = info.guid.hyphenated().to_string().to_uppercase();
    // The RSDS age is the DBI stream's age; the info stream's may run ahead of it.
    let pdb_age = pdb
        .debug_information()
        .ok()
        .and_then(|dbi| dbi.age())
        .unwrap_or(info.age);
    if pdb_guid != codeview.guid || pdb_age != codeview.age {
        return Err(Error::PdbMismatch {
            image_guid: codeview.guid.clone(),
            image_age: codeview.age,
            pdb_guid,
            pdb_age,
        });
    }
    Ok(())
}

fn read_publics(pdb: &mut Pdb<'_>, address_map: &pdb2::AddressMap<'_>) -> Result<Vec<Public>> {
    let globals = pdb
        .global_symbols()
        .map_err(pdb_error("global symbol stream"))?;
    let mut symbols = globals.iter();
    let mut publics = Vec::new();
    while let Some(symbol) = symbols.next().map_err(pdb_error("global symbol stream"))? {
        if let Ok(pdb2::SymbolData::Public(public)) = symbol.parse() {
            let Some(rva) = public.offset.to_rva(address_map) else {
                continue;
            };
            publics.push(Public {
                name: public.name.to_string().into_owned(),
                rva: u64::from(rva.0),
                code: public.code || public.function,
            });
        }
    }
    publics.sort_by(|a, b| (a.rva, &a.name).cmp(&(b.rva, &b.name)));
    Ok(publics)
}

struct ModuleContext<'a, 'data> {
    module_name: &'a str,
    address_map: &'a pdb2::AddressMap<'data>,
    public_names: &'a BTreeMap<u64, Vec<&'a str>>,
    id_finder: &'a pdb2::IdFinder<'a>,
}

fn read_module_symbols(
    module_info: &pdb2::ModuleInfo<'_>,
    context: &ModuleContext<'_, '_>,
    type_names: &mut TypeNames<'_, '_>,
    image: &mut Image<'_>,
) -> pdb2::Result<()> {
    let inlinees: HashMap<pdb2::IdIndex, pdb2::Inlinee<'_>> = module_info
        .inlinees()?
        .map(|inlinee| Ok((inlinee.index(), inlinee)))
        .collect()?;
    // The procedure an inline site belongs to: its start offset (inlinee line offsets are relative
    // to it) and RVA.
    let mut current_procedure: Option<(pdb2::PdbInternalSectionOffset, u64)> = None;
    // MSVC writes a function's exception funclets right after it in the module's symbol stream:
    // the last procedure that is no funclet, by readable and decorated name.
    let mut last_non_funclet: Option<(String, String)> = None;
    let mut symbols = module_info.symbols()?;
    while let Some(symbol) = symbols.next()? {
        let Ok(data) = symbol.parse() else { continue };
        match data {
            pdb2::SymbolData::Procedure(procedure) => {
                let Some(rva) = procedure.offset.to_rva(context.address_map) else {
                    continue;
                };
                let rva = u64::from(rva.0);
                current_procedure = Some((procedure.offset, rva));
                let display_name = procedure.name.to_string().into_owned();
                let name = procedure_public_name(context.public_names.get(&rva), &display_name);
                // Overloads share a readable name, so the funclet's own name cannot tell them
                // apart; the procedure it follows can.
                let parent = match names::funclet_parent(&display_name) {
                    Some(parent_name) => last_non_funclet
                        .as_ref()
                        .filter(|(last_display, _)| last_display == parent_name)
                        .map(|(_, last_name)| last_name.clone()),
                    None => {
                        last_non_funclet = Some((display_name.clone(), name.clone()));
                        None
                    }
                };
                let section = image
                    .section_at(rva)
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                image.functions.push(Function {
                    name,
                    display_name,
                    rva,
                    size: u64::from(procedure.len),
                    section,
                    compile_unit: Some(context.module_name.to_owned()),
                    linkage: if procedure.global {
                        Linkage::Global
                    } else {
                        Linkage::Static
                    },
                    has_debug_info: true,
                    signature: Some(type_names.signature(procedure.type_index)),
                    code: &[],
                    padding_before: 0,
                    first_instruction_len: None,
                    aliases: Vec::new(),
                    alias_display_names: Vec::new(),
                    parent,
                });
            }
            pdb2::SymbolData::InlineSite(site) => {
                let Some((parent_offset, caller_rva)) = current_procedure else {
                    continue;
                };
                let inlinee = inlinee_name(context.id_finder, type_names, site.inlinee);
                let mut ranges = Vec::new();
                if let Some(lines) = inlinees.get(&site.inlinee) {
                    let mut rows = lines.lines(parent_offset, &site);
                    while let Some(row) = rows.next()? {
                        let Some(start) = row.offset.to_rva(context.address_map) else {
                            continue;
                        };
                        ranges.push((u64::from(start.0), u64::from(row.length.unwrap_or(0))));
                    }
                }
                ranges.sort_unstable();
                ranges.dedup();
                image.inline_sites.push(InlineSite {
                    caller_rva,
                    inlinee,
                    ranges,
                });
            }
            pdb2::SymbolData::CompileFlags(flags) => {
                // The version string and numbers identify the compiler; the flag set records
                // options that change code generation (optimization, hot-patch, security checks).
                image.producers.push(format!(
                    "{} (frontend {:?}, backend {:?}, {:?})",
                    flags.version_string,
                    flags.frontend_version,
                    flags.backend_version,
                    flags.flags
                ));
            }
            pdb2::SymbolData::EnvBlock(env) => {
                if let Some(command) = environment_command(&env.rgsz) {
                    image.producers.push(command);
                }
            }
            pdb2::SymbolData::Data(data) => {
                push_data(
                    image,
                    type_names,
                    context.address_map,
                    &data.name,
                    data.offset,
                    data.type_index,
                    data.global,
                    Some(context.module_name),
                    false,
                );
            }
            pdb2::SymbolData::ThreadStorage(tls) => {
                push_data(
                    image,
                    type_names,
                    context.address_map,
                    &tls.name,
                    tls.offset,
                    tls.type_index,
                    tls.global,
                    Some(context.module_name),
                    true,
                );
            }
            _ => {}
        }
    }
    Ok(())
}

/// Global data is listed in the globals stream as well as in the module; the module's record
/// carries the compilation unit, so module records win when both exist.
fn read_global_data(
    pdb: &mut Pdb<'_>,
    address_map: &pdb2::AddressMap<'_>,
    type_names: &mut TypeNames<'_, '_>,
    image: &mut Image<'_>,
) -> Result<()> {
    let globals = pdb
        .global_symbols()
        .map_err(pdb_error("global symbol stream"))?;
    let mut symbols = globals.iter();
    while let Some(symbol) = symbols.next().map_err(pdb_error("global symbol stream"))? {
        match symbol.parse() {
            Ok(pdb2::SymbolData::Data(data)) => {
                push_data(
                    image,
                    type_names,
                    address_map,
                    &data.name,
                    data.offset,
                    data.type_index,
                    data.global,
                    None,
                    false,
                );
            }
            Ok(pdb2::SymbolData::ThreadStorage(tls)) => {
                push_data(
                    image,
                    type_names,
                    address_map,
                    &tls.name,
                    tls.offset,
                    tls.type_index,
                    tls.global,
                    None,
                    true,
                );
            }
            _ => {}
        }
    }
    Ok(())
}

#[allow(
    clippy::too_many_arguments,
    reason = "one call shape shared by four symbol kinds"
)]
fn push_data(
    image: &mut Image<'_>,
    type_names: &mut TypeNames<'_, '_>,
    address_map: &pdb2::AddressMap<'_>,
    name: &pdb2::RawString<'_>,
    offset: pdb2::PdbInternalSectionOffset,
    type_index: pdb2::TypeIndex,
    global: bool,
    module_name: Option<&str>,
    thread_local: bool,
) {
    let Some(rva) = offset.to_rva(address_map) else {
        return;
    };
    let rva = u64::from(rva.0);
    let name = name.to_string().into_owned();
    if image
        .data_symbols
        .iter()
        .any(|d| d.rva == rva && d.name == name)
    {
        return;
    }
    let Some(section) = image.section_at(rva).cloned() else {
        return;
    };
    let kind = if thread_local {
        DataKind::ThreadLocal
    } else if !section.writable {
        DataKind::ReadOnly
    } else if section.name == ".bss" || rva >= section.rva + section.file_size {
        DataKind::ZeroInitialized
    } else {
        DataKind::Writable
    };
    image.data_symbols.push(DataSymbol {
        name,
        rva,
        size: type_names.size(type_index),
        section: section.name,
        kind,
        linkage: if global {
            Linkage::Global
        } else {
            Linkage::Static
        },
        compile_unit: module_name.map(str::to_owned),
        type_name: Some(type_names.name(type_index)),
    });
}

/// The decorated public name of a procedure. Where the linker folded identical bodies
/// (/OPT:ICF), several procedures and their publics share one RVA, so the public must be the one
/// that undecorates to this procedure's name. A lone public at the RVA is taken as it is (its
/// undecoration may be spelled differently, as for lambdas); otherwise the procedure keeps its
/// own name.
fn procedure_public_name(publics: Option<&Vec<&str>>, procedure: &str) -> String {
    let publics = publics.map(Vec::as_slice).unwrap_or(&[]);
    if let Some(public) = publics
        .iter()
        .find(|public| names::public_matches(public, procedure))
    {
        return (*public).to_owned();
    }
    match publics {
        [only] => (*only).to_owned(),
        _ => procedure.to_owned(),
    }
}

/// The name of an inlined function. A member function's `LF_MFUNC_ID` names only the member
/// (MSVC spells constructors and destructors `{ctor}` and `{dtor}`); its parent type gives the
/// class to qualify it with.
fn inlinee_name(
    id_finder: &pdb2::IdFinder<'_>,
    type_names: &mut TypeNames<'_, '_>,
    index: pdb2::IdIndex,
) -> String {
    let parsed = id_finder.find(index).and_then(|item| item.parse());
    match parsed {
        Ok(pdb2::IdData::Function(function)) => function.name.to_string().into_owned(),
        Ok(pdb2::IdData::MemberFunction(function)) => {
            let member = function.name.to_string();
            let class = type_names.name(function.parent);
            if class.starts_with('<') {
                // The class type is missing from TPI: the member name is all there is.
                member.into_owned()
            } else {
                names::qualify_member(&class, &member)
            }
        }
        _ => format!("<inlinee {}>", index.0),
    }
}

/// Interns source file names so line rows stay small.
#[derive(Default)]
struct FileTable {
    names: Vec<String>,
    index: HashMap<String, u32>,
}

impl FileTable {
    fn intern(&mut self, name: String) -> u32 {
        if let Some(&idx) = self.index.get(&name) {
            return idx;
        }
        let idx = self.names.len() as u32;
        self.names.push(name.clone());
        self.index.insert(name, idx);
        idx
    }
}

fn read_module_lines(
    module_info: &pdb2::ModuleInfo<'_>,
    address_map: &pdb2::AddressMap<'_>,
    string_table: Option<&pdb2::StringTable<'_>>,
    files: &mut FileTable,
    lines: &mut Vec<LineRow>,
) -> pdb2::Result<()> {
    let program = module_info.line_program()?;
    let mut rows = program.lines();
    let mut file_names: HashMap<pdb2::FileIndex, u32> = HashMap::new();
    while let Some(row) = rows.next()? {
        let Some(rva) = row.offset.to_rva(address_map) else {
            continue;
        };
        let file = match file_names.get(&row.file_index) {
            Some(&file) => file,
            None => {
                let info = program.get_file_info(row.file_index)?;
                let name = match string_table {
                    Some(table) => info.name.to_string_lossy(table)?.into_owned(),
                    None => format!("<file {}>", info.name.0),
                };
                let file = files.intern(name);
                file_names.insert(row.file_index, file);
                file
            }
        };
        lines.push(LineRow {
            rva: u64::from(rva.0),
            file,
            line: row.line_start,
        });
    }
    Ok(())
}

fn module_diagnostic(module_name: &str, message: String) -> Diagnostic {
    Diagnostic {
        location: format!("pdb module {module_name}"),
        message,
        function: None,
    }
}

/// The command line an `S_ENVBLOCK` records (MSVC compilers and every linker write one; clang's
/// compiler does not), with the tokens that name this build's own files removed, so two builds
/// with the same options compare equal.
fn environment_command(strings: &[pdb2::RawString<'_>]) -> Option<String> {
    let strings: Vec<String> = strings.iter().map(|s| s.to_string().into_owned()).collect();
    let exe = strings
        .windows(2)
        .find(|pair| pair[0] == "exe")
        .map(|pair| pair[1].clone())
        .unwrap_or_default();
    let command = strings
        .windows(2)
        .find(|pair| pair[0] == "cmd")
        .map(|pair| pair[1].clone())?;
    const OWN_FILE_OPTIONS: &[&str] = &[
        "-out:",
        "/out:",
        "-pdb:",
        "/pdb:",
        "-pdbaltpath:",
        "/pdbaltpath:",
        "-fo",
        "/fo",
        "-fd",
        "/fd",
        "-implib:",
        "/implib:",
    ];
    const INPUT_SUFFIXES: &[&str] = &[".o", ".obj", ".c", ".cpp", ".cc", ".cxx", ".res"];
    let kept: Vec<&str> = command
        .split_whitespace()
        .filter(|token| {
            let lower = token.to_ascii_lowercase();
            !OWN_FILE_OPTIONS
                .iter()
                .any(|option| lower.starts_with(option))
                && !INPUT_SUFFIXES.iter().any(|suffix| lower.ends_with(suffix))
        })
        .collect();
    let tool = exe.rsplit(['/', '\\']).next().unwrap_or(&exe).to_owned();
    Some(format!("{tool}: {}", kept.join(" ")))
}
