//! The PDB half of the PE reader: checks that the PDB belongs to the image (RSDS GUID and age),
//! then reads procedures, data, publics, line tables and inline sites from the module streams
//! and type layouts from TPI.
//!
//! The `pdb2` crate can panic on some corrupted PDBs (GUIDE §2). Each call into it runs inside
//! [`contain`] (or [`pdb2_call`]), which turns such a panic into `Error::PdbReaderFailed`; our
//! own processing of what it returns runs outside, so a panic in this crate stays a panic and
//! fails the tests instead of hiding as a malformed-PDB error.

use super::names;
use super::types::TypeNames;
use crate::model::*;
use crate::{Error, Result};
use pdb2::FallibleIterator;
use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// A PDB public symbol (`S_PUB32`): the decorated name of a function or datum.
#[derive(Clone, Debug)]
pub(crate) struct Public {
    pub name: String,
    pub rva: u64,
    pub code: bool,
}

type Pdb<'data> = pdb2::PDB<'data, Cursor<&'data [u8]>>;

/// Runs one call (or a tight group of calls) into `pdb2`, turning a panic inside it into
/// `Error::PdbReaderFailed { what }`. Keep our own processing out of `call`: a panic there is a
/// bug of this crate and must unwind to the caller (and fail the tests), not read as a malformed
/// PDB. Plain accessors of parsed records (`RawString::to_string`, flags) need no wrapping.
pub(crate) fn contain<T>(what: &'static str, call: impl FnOnce() -> T) -> Result<T> {
    // AssertUnwindSafe: after a panic, the iterator or finder the call used is abandoned (the
    // error ends the loop that owns it) or, for `parse` on an immutable record, never changed.
    catch_unwind(AssertUnwindSafe(call)).map_err(|_| Error::PdbReaderFailed { what })
}

/// [`contain`] for a fallible `pdb2` call: its error becomes `Error::Pdb { what, .. }`.
pub(crate) fn pdb2_call<T>(
    what: &'static str,
    call: impl FnOnce() -> pdb2::Result<T>,
) -> Result<T> {
    contain(what, call)?.map_err(|source| Error::Pdb { what, source })
}

/// The image RVA of a PDB section offset (`None` when the address map has no such place).
fn to_rva(
    offset: pdb2::PdbInternalSectionOffset,
    address_map: &pdb2::AddressMap<'_>,
) -> Result<Option<u64>> {
    contain("section address map", || {
        offset.to_rva(address_map).map(|rva| u64::from(rva.0))
    })
}

/// Reads `pdb_bytes` into `image` and returns its public symbols.
pub(crate) fn read(
    pdb_bytes: &[u8],
    codeview: &CodeViewIdentity,
    image: &mut Image<'_>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<Vec<Public>> {
    let mut pdb: Pdb<'_> = pdb2_call("MSF header", || pdb2::PDB::open(Cursor::new(pdb_bytes)))?;
    check_match(&mut pdb, codeview)?;

    let address_map = pdb2_call("section headers", || pdb.address_map())?;
    // Without the string table, line rows name their files by index.
    let string_table = pdb2_call("string table", || pdb.string_table()).ok();
    let type_information = pdb2_call("TPI stream", || pdb.type_information())?;
    let id_information = pdb2_call("IPI stream", || pdb.id_information())?;
    let mut type_names = TypeNames::new(&type_information)?;
    image.types = type_names.layouts(diagnostics);

    let id_finder = pdb2_call("IPI stream", || {
        let mut id_finder = id_information.finder();
        let mut ids = id_information.iter();
        while ids.next()?.is_some() {
            id_finder.update(&ids);
        }
        Ok(id_finder)
    })?;

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
    let debug_information = pdb2_call("DBI stream", || pdb.debug_information())?;
    let mut modules = pdb2_call("DBI module list", || debug_information.modules())?;
    while let Some(module) = pdb2_call("DBI module list", || modules.next())? {
        let module_name = contain("DBI module list", || module.module_name().into_owned())?;
        let module_info = match pdb2_call("module stream", || pdb.module_info(&module)) {
            Ok(Some(info)) => info,
            Ok(None) => continue,
            Err(error) => {
                diagnostics.push(module_diagnostic(&module_name, error.to_string()));
                continue;
            }
        };
        let context = ModuleContext {
            module_name: &module_name,
            address_map: &address_map,
            public_names: &public_names,
            id_finder: &id_finder,
        };
        // Without its line program a module still has procedures; only lines are missing.
        let mut module_files = match pdb2_call("module line program", || module_info.line_program())
        {
            Ok(program) => Some(ModuleFiles {
                program,
                names: ModuleFileNames {
                    string_table: string_table.as_ref(),
                    by_index: HashMap::new(),
                },
            }),
            Err(error) => {
                diagnostics.push(module_diagnostic(&module_name, error.to_string()));
                None
            }
        };
        if let Err(error) = read_module_symbols(
            &module_info,
            &context,
            &mut type_names,
            module_files.as_mut().map(|m| (m, &mut files)),
            image,
        ) {
            diagnostics.push(module_diagnostic(&module_name, error.to_string()));
        }
        if let Some(module_files) = &mut module_files
            && let Err(error) =
                read_module_lines(module_files, &address_map, &mut files, &mut image.lines)
        {
            diagnostics.push(module_diagnostic(&module_name, error.to_string()));
        }
    }
    read_global_data(&mut pdb, &address_map, &mut type_names, image)?;
    image.source_files = files.names;
    Ok(publics)
}

/// Refuses a PDB whose GUID or age differs from the image's RSDS record.
fn check_match(pdb: &mut Pdb<'_>, codeview: &CodeViewIdentity) -> Result<()> {
    let info = pdb2_call("PDB info stream", || pdb.pdb_information())?;
    let pdb_guid = info.guid.hyphenated().to_string().to_uppercase();
    // The RSDS age is the DBI stream's age; the info stream's may run ahead of it.
    let dbi_age = pdb2_call("DBI stream", || {
        pdb.debug_information().map(|dbi| dbi.age())
    })
    .ok()
    .flatten();
    let pdb_age = dbi_age.unwrap_or(info.age);
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
    let globals = pdb2_call("global symbol stream", || pdb.global_symbols())?;
    let mut symbols = globals.iter();
    let mut publics = Vec::new();
    while let Some(symbol) = pdb2_call("global symbol stream", || symbols.next())? {
        if let Ok(pdb2::SymbolData::Public(public)) =
            pdb2_call("global symbol record", || symbol.parse())
        {
            let Some(rva) = to_rva(public.offset, address_map)? else {
                continue;
            };
            publics.push(Public {
                name: public.name.to_string().into_owned(),
                rva,
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
    mut files: Option<(&mut ModuleFiles<'_, '_, '_>, &mut FileTable)>,
    image: &mut Image<'_>,
) -> Result<()> {
    let inlinees: HashMap<pdb2::IdIndex, pdb2::Inlinee<'_>> =
        pdb2_call("module inlinee lines", || {
            module_info
                .inlinees()?
                .map(|inlinee| Ok((inlinee.index(), inlinee)))
                .collect()
        })?;
    // The procedure an inline site belongs to: its start offset (inlinee line offsets are relative
    // to it) and RVA.
    let mut current_procedure: Option<(pdb2::PdbInternalSectionOffset, u64)> = None;
    // MSVC writes a function's exception funclets right after it in the module's symbol stream:
    // the last procedure that is no funclet, by readable and decorated name.
    let mut last_non_funclet: Option<(String, String)> = None;
    // The function the parameters and locals that follow a procedure record belong to.
    let mut current_function: Option<usize> = None;
    let mut symbols = pdb2_call("module symbols", || module_info.symbols())?;
    while let Some(symbol) = pdb2_call("module symbols", || symbols.next())? {
        let Ok(data) = pdb2_call("module symbol record", || symbol.parse()) else {
            continue;
        };
        match data {
            pdb2::SymbolData::Procedure(procedure) => {
                current_function = None;
                let Some(rva) = to_rva(procedure.offset, context.address_map)? else {
                    continue;
                };
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
                current_function = Some(image.functions.len());
                image.functions.push(Function {
                    uses_types: type_names.procedure_uses(procedure.type_index),
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
                    // CV_PFLAG_NEVER: MSVC sets it for `__declspec(noreturn)` and functions it
                    // proves never return; clang 14 leaves it clear.
                    noreturn: procedure.flags.never,
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
                let inlinee = inlinee_name(context.id_finder, type_names, site.inlinee)?;
                let mut ranges = Vec::new();
                let mut lines = Vec::new();
                if let Some(inlinee_lines) = inlinees.get(&site.inlinee) {
                    let mut rows = contain("inlinee lines", || {
                        inlinee_lines.lines(parent_offset, &site)
                    })?;
                    while let Some(row) = pdb2_call("inlinee lines", || rows.next())? {
                        let Some(start) = to_rva(row.offset, context.address_map)? else {
                            continue;
                        };
                        ranges.push((start, u64::from(row.length.unwrap_or(0))));
                        // The binary annotations give each range the inlinee's file and line.
                        if let Some((module_files, table)) = files.as_mut() {
                            let file = module_files.file(row.file_index, table)?;
                            lines.push(LineRow {
                                rva: start,
                                file,
                                line: row.line_start,
                            });
                        }
                    }
                }
                ranges.sort_unstable();
                ranges.dedup();
                lines.sort_unstable();
                lines.dedup();
                image.inline_sites.push(InlineSite {
                    caller_rva,
                    inlinee,
                    ranges,
                    call_site: None,
                    lines,
                });
            }
            pdb2::SymbolData::Local(pdb2::LocalSymbol { type_index, .. })
            | pdb2::SymbolData::RegisterRelative(pdb2::RegisterRelativeSymbol {
                type_index, ..
            })
            | pdb2::SymbolData::BasePointerRelative(pdb2::BasePointerRelativeSymbol {
                type_index,
                ..
            })
            | pdb2::SymbolData::RegisterVariable(pdb2::RegisterVariableSymbol {
                type_index, ..
            }) => {
                if let Some(function) = current_function.and_then(|i| image.functions.get_mut(i))
                    && let Some(used) = type_names.used_aggregate(type_index)
                {
                    function.uses_types.push(used);
                }
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
                )?;
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
                )?;
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
    let globals = pdb2_call("global symbol stream", || pdb.global_symbols())?;
    let mut symbols = globals.iter();
    while let Some(symbol) = pdb2_call("global symbol stream", || symbols.next())? {
        match pdb2_call("global symbol record", || symbol.parse()) {
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
                )?;
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
                )?;
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
) -> Result<()> {
    let Some(rva) = to_rva(offset, address_map)? else {
        return Ok(());
    };
    let name = name.to_string().into_owned();
    if image
        .data_symbols
        .iter()
        .any(|d| d.rva == rva && d.name == name)
    {
        return Ok(());
    }
    let Some(section) = image.section_at(rva).cloned() else {
        return Ok(());
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
    Ok(())
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
) -> Result<String> {
    let parsed = contain("IPI record", || {
        id_finder.find(index).and_then(|item| item.parse())
    })?;
    Ok(match parsed {
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
    })
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

/// A module's line program and the image-wide index of each of its files.
struct ModuleFiles<'a, 's, 't> {
    program: pdb2::LineProgram<'a>,
    names: ModuleFileNames<'s, 't>,
}

impl ModuleFiles<'_, '_, '_> {
    fn file(&mut self, file_index: pdb2::FileIndex, files: &mut FileTable) -> Result<u32> {
        self.names.file(&self.program, file_index, files)
    }
}

struct ModuleFileNames<'s, 't> {
    string_table: Option<&'s pdb2::StringTable<'t>>,
    by_index: HashMap<pdb2::FileIndex, u32>,
}

impl ModuleFileNames<'_, '_> {
    /// The index in `Image::source_files` of the module's file `file_index` (an offset into
    /// its file checksums, which line rows and inlinee lines both use).
    fn file(
        &mut self,
        program: &pdb2::LineProgram<'_>,
        file_index: pdb2::FileIndex,
        files: &mut FileTable,
    ) -> Result<u32> {
        if let Some(&file) = self.by_index.get(&file_index) {
            return Ok(file);
        }
        let info = pdb2_call("module file checksums", || {
            program.get_file_info(file_index)
        })?;
        let name = match self.string_table {
            Some(table) => pdb2_call("string table", || {
                Ok(info.name.to_string_lossy(table)?.into_owned())
            })?,
            None => format!("<file {}>", info.name.0),
        };
        let file = files.intern(name);
        self.by_index.insert(file_index, file);
        Ok(file)
    }
}

fn read_module_lines(
    module_files: &mut ModuleFiles<'_, '_, '_>,
    address_map: &pdb2::AddressMap<'_>,
    files: &mut FileTable,
    lines: &mut Vec<LineRow>,
) -> Result<()> {
    let ModuleFiles { program, names } = module_files;
    let mut rows = contain("module line program", || program.lines())?;
    while let Some(row) = pdb2_call("module line rows", || rows.next())? {
        let Some(rva) = to_rva(row.offset, address_map)? else {
            continue;
        };
        let file = names.file(program, row.file_index, files)?;
        lines.push(LineRow {
            rva,
            file,
            line: row.line_start,
        });
    }
    Ok(())
}

fn module_diagnostic(module_name: &str, message: String) -> Diagnostic {
    Diagnostic {
        location: DiagnosticLocation::PdbModule(module_name.into()),
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
