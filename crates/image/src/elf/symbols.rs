//! Functions and data symbols from `.symtab` (or `.dynsym` when stripped), imports and exports
//! from `.dynsym`, each joined with what the DWARF says about its address.

use object::elf;
use object::read::elf::{Sym, SymbolTable};

use super::dwarf::DwarfFacts;
use super::{ENDIAN, ElfFile, ElfHeader, SectionFacts};
use crate::model::{
    DataKind, DataSymbol, Diagnostic, DiagnosticLocation, Export, Function, Import, Linkage, Tls,
};

/// The symbol table functions and data symbols come from, with the section names of the file it
/// belongs to (a debug file keeps the binary's section headers, but as its own table).
pub(super) struct SymbolSource<'data> {
    table: SymbolTable<'data, ElfHeader>,
    /// Section names by index in the file the table came from, when that is not the binary.
    foreign_section_names: Option<Vec<&'data str>>,
    /// `".symtab"` or `".dynsym"`, for diagnostics.
    table_name: &'static str,
}

/// Picks `.symtab` of the binary, else `.symtab` of the debug file, else `.dynsym`.
pub(super) fn pick_symbol_table<'data>(
    binary: &ElfFile<'data>,
    debug: Option<&ElfFile<'data>>,
) -> SymbolSource<'data> {
    if !binary.elf_symbol_table().is_empty() {
        return SymbolSource {
            table: *binary.elf_symbol_table(),
            foreign_section_names: None,
            table_name: ".symtab",
        };
    }
    if let Some(debug) = debug.filter(|debug| !debug.elf_symbol_table().is_empty()) {
        let names = super::section_facts(debug.elf_section_table())
            .iter()
            .map(|section| section.name)
            .collect();
        return SymbolSource {
            table: *debug.elf_symbol_table(),
            foreign_section_names: Some(names),
            table_name: ".symtab",
        };
    }
    SymbolSource {
        table: *binary.elf_dynamic_symbol_table(),
        foreign_section_names: None,
        table_name: ".dynsym",
    }
}

impl<'data> SymbolSource<'data> {
    /// The binary's section a symbol's section index designates. For a debug file's table the
    /// section is found by name, because only the name is promised to carry over.
    fn section<'a>(
        &self,
        index: usize,
        sections: &'a [SectionFacts<'data>],
    ) -> Option<&'a SectionFacts<'data>> {
        match &self.foreign_section_names {
            None => sections.get(index),
            Some(names) => {
                let name = *names.get(index)?;
                sections.iter().find(|s| s.name == name)
            }
        }
    }
}

pub(super) struct SymbolFacts<'data> {
    pub functions: Vec<Function<'data>>,
    pub data_symbols: Vec<DataSymbol>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Functions (`STT_FUNC`) and data symbols (`STT_OBJECT`, `STT_TLS`) of the symbol table.
pub(super) fn read<'data>(
    source: &SymbolSource<'data>,
    sections: &[SectionFacts<'data>],
    dwarf: &DwarfFacts,
    tls_base: Option<u64>,
) -> SymbolFacts<'data> {
    let mut facts = SymbolFacts {
        functions: Vec::new(),
        data_symbols: Vec::new(),
        diagnostics: Vec::new(),
    };
    for (index, symbol) in source.table.enumerate() {
        let st_type = symbol.st_type();
        if !matches!(st_type, elf::STT_FUNC | elf::STT_OBJECT | elf::STT_TLS) {
            continue;
        }
        let section_index = match source.table.symbol_section(ENDIAN, symbol, index) {
            Ok(Some(section_index)) => section_index,
            // Undefined, absolute and common symbols name nothing in this image.
            Ok(None) => continue,
            Err(error) => {
                facts.diagnostics.push(Diagnostic {
                    location: DiagnosticLocation::Section(source.table_name.into()),
                    message: format!("symbol {}: {error}", index.0),
                    function: None,
                });
                continue;
            }
        };
        let name = match source.table.symbol_name(ENDIAN, symbol) {
            Ok(name) if !name.is_empty() => String::from_utf8_lossy(name).into_owned(),
            Ok(_) => continue,
            Err(error) => {
                facts.diagnostics.push(Diagnostic {
                    location: DiagnosticLocation::Section(source.table_name.into()),
                    message: format!("symbol {}: name: {error}", index.0),
                    function: None,
                });
                continue;
            }
        };
        let section = source.section(section_index.0, sections);
        let section_name = section.map(|s| s.name.to_owned()).unwrap_or_default();
        let linkage = if symbol.st_bind() == elf::STB_LOCAL {
            Linkage::Static
        } else {
            Linkage::Global
        };
        let value = symbol.st_value(ENDIAN);
        let size = symbol.st_size(ENDIAN);
        if st_type == elf::STT_FUNC {
            if value == 0 {
                continue;
            }
            let display_name = dwarf
                .subprogram_name_at(value)
                .map(str::to_owned)
                .unwrap_or_else(|| name.clone());
            facts.functions.push(Function {
                name,
                display_name,
                rva: value,
                size,
                section: section_name,
                compile_unit: dwarf.compile_unit_at(value).map(str::to_owned),
                linkage,
                has_debug_info: dwarf.code_has_subprogram(value),
                signature: dwarf.signature_at(value).map(str::to_owned),
                noreturn: dwarf.noreturn_at(value),
                code: &[],
                padding_before: 0,
                first_instruction_len: None,
                aliases: Vec::new(),
                alias_display_names: Vec::new(),
                parent: None,
                uses_types: dwarf.types_used_at(value).to_vec(),
            });
            continue;
        }
        let section_is_tls = section.is_some_and(|s| s.flags & u64::from(elf::SHF_TLS) != 0);
        let thread_local = st_type == elf::STT_TLS || section_is_tls;
        // In a linked file a TLS symbol's value is its offset in the TLS template; the model
        // wants an address, so it is placed at the template's address.
        let rva = match (thread_local, tls_base) {
            (true, Some(base)) => base.saturating_add(value),
            _ => value,
        };
        let kind = if thread_local {
            DataKind::ThreadLocal
        } else if section.is_some_and(|s| s.is_nobits()) {
            DataKind::ZeroInitialized
        } else if section.is_some_and(|s| s.flags & u64::from(elf::SHF_WRITE) != 0) {
            DataKind::Writable
        } else {
            DataKind::ReadOnly
        };
        let variable = if thread_local {
            dwarf.tls_variable_at(value)
        } else {
            dwarf.variable_at(rva)
        };
        facts.data_symbols.push(DataSymbol {
            name,
            rva,
            size,
            section: section_name,
            kind,
            linkage,
            compile_unit: variable.and_then(|v| dwarf.compile_unit_name(v.compile_unit)),
            type_name: variable.and_then(|v| v.type_name.clone()),
        });
    }
    facts
}

pub(super) struct DynamicFacts {
    pub imports: Vec<Import>,
    pub exports: Vec<Export>,
}

/// Imports (undefined symbols) and exports (defined global and weak symbols) of `.dynsym`.
pub(super) fn read_dynamic(
    file: &ElfFile<'_>,
    sections: &[SectionFacts<'_>],
    tls: Option<&Tls>,
    diagnostics: &mut Vec<Diagnostic>,
) -> DynamicFacts {
    let data = file.data();
    let table = file.elf_dynamic_symbol_table();
    // Without versions the imports lose their library names, nothing else.
    let versions = match file.elf_section_table().versions(ENDIAN, data) {
        Ok(versions) => versions,
        Err(error) => {
            diagnostics.push(Diagnostic {
                location: DiagnosticLocation::Section(".gnu.version".into()),
                message: format!("cannot read the symbol versions: {error}"),
                function: None,
            });
            None
        }
    };
    let mut facts = DynamicFacts {
        imports: Vec::new(),
        exports: Vec::new(),
    };
    for (index, symbol) in table.enumerate() {
        // Index 0 is the null symbol; unnamed entries are section symbols.
        let Ok(name) = table.symbol_name(ENDIAN, symbol) else {
            continue;
        };
        if index.0 == 0 || name.is_empty() {
            continue;
        }
        let name = String::from_utf8_lossy(name).into_owned();
        if symbol.st_shndx(ENDIAN) == elf::SHN_UNDEF {
            // The version needed (`Verneed`) names the library that provides the symbol.
            let library = versions
                .as_ref()
                .and_then(|versions| {
                    versions
                        .version(versions.version_index(ENDIAN, index))
                        .ok()
                        .flatten()
                })
                .and_then(|version| version.file())
                .map(|file| String::from_utf8_lossy(file).into_owned())
                .unwrap_or_default();
            facts.imports.push(Import {
                library,
                name,
                slot_rva: None,
            });
            continue;
        }
        if !matches!(
            symbol.st_bind(),
            elf::STB_GLOBAL | elf::STB_WEAK | elf::STB_GNU_UNIQUE
        ) || matches!(symbol.st_visibility(), elf::STV_HIDDEN | elf::STV_INTERNAL)
        {
            continue;
        }
        let value = symbol.st_value(ENDIAN);
        let in_tls_section = sections
            .get(usize::from(symbol.st_shndx(ENDIAN)))
            .is_some_and(|s| s.flags & u64::from(elf::SHF_TLS) != 0);
        let rva = match tls {
            Some(tls) if symbol.st_type() == elf::STT_TLS || in_tls_section => {
                tls.template_start.saturating_add(value)
            }
            _ => value,
        };
        facts.exports.push(Export {
            name,
            rva,
            ordinal: None,
        });
    }
    facts
}
