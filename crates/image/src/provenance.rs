//! Where an [`crate::Initializer`] slot and a [`crate::Diagnostic`] come from, as types: the
//! initializer table ([`InitializerTable`]) and the part of the input a diagnostic concerns
//! ([`DiagnosticLocation`]).
//!
//! Both serialize and display as the text the JSON has always carried (`.init_array`,
//! `.CRT$XC`, `.ctors`, `tls-callback`; `.debug_info`, `pdb module foo.obj`, `pdb TPI stream`),
//! so reports stay byte-identical; code matches on the variants, never on that text.
//! The variants are declared in the order of their text, so the derived `Ord` sorts initializers
//! and diagnostics exactly as the strings did (within one format: ELF has only sections).

use serde::{Serialize, Serializer};
use std::fmt;

/// The table an initializer slot was read from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InitializerTable {
    /// An ELF section of pointer slots, by name: `SHT_INIT_ARRAY`/`SHT_FINI_ARRAY`/
    /// `SHT_PREINIT_ARRAY` (`.init_array`, `.fini_array`, `.preinit_array`) or the older
    /// `.ctors`/`.dtors`.
    ElfSection(String),
    /// A PE CRT table bracketed by the `__x?_a`/`__x?_z` publics (MSVC CRT and mingw-w64).
    Crt(CrtTable),
    /// mingw's `__CTOR_LIST__`: the GCC-style constructor list in a PE image (`.ctors`).
    MingwConstructors,
    /// mingw's `__DTOR_LIST__`: the destructor list in a PE image (`.dtors`).
    MingwDestructors,
    /// A PE TLS callback (`IMAGE_TLS_DIRECTORY64.AddressOfCallBacks`), run on every thread start.
    TlsCallback,
}

/// The PE CRT initializer section groups (`.CRT$X?A` .. `.CRT$X?Z`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CrtTable {
    /// `.CRT$XC`: C++ constructors (`__xc_a`..`__xc_z`).
    Xc,
    /// `.CRT$XI`: C initializers (`__xi_a`..`__xi_z`).
    Xi,
    /// `.CRT$XP`: pre-terminators (`__xp_a`..`__xp_z`).
    Xp,
    /// `.CRT$XT`: terminators (`__xt_a`..`__xt_z`).
    Xt,
}

impl CrtTable {
    /// Every group, with the publics that bracket it.
    pub const ALL: [(CrtTable, &'static str, &'static str); 4] = [
        (CrtTable::Xi, "__xi_a", "__xi_z"),
        (CrtTable::Xc, "__xc_a", "__xc_z"),
        (CrtTable::Xp, "__xp_a", "__xp_z"),
        (CrtTable::Xt, "__xt_a", "__xt_z"),
    ];

    fn section_name(self) -> &'static str {
        match self {
            CrtTable::Xc => ".CRT$XC",
            CrtTable::Xi => ".CRT$XI",
            CrtTable::Xp => ".CRT$XP",
            CrtTable::Xt => ".CRT$XT",
        }
    }
}

impl fmt::Display for InitializerTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitializerTable::ElfSection(name) => f.write_str(name),
            InitializerTable::Crt(table) => f.write_str(table.section_name()),
            InitializerTable::MingwConstructors => f.write_str(".ctors"),
            InitializerTable::MingwDestructors => f.write_str(".dtors"),
            InitializerTable::TlsCallback => f.write_str("tls-callback"),
        }
    }
}

impl Serialize for InitializerTable {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The part of the input a diagnostic concerns.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DiagnosticLocation {
    /// A section of the binary or of its debug file, by name (`.debug_info`, `.eh_frame`,
    /// `.symtab`, `.pdata`, `.reloc`, `.tls`).
    Section(String),
    /// The PDB's type stream (TPI).
    PdbTypes,
    /// One module (object file) of the PDB: its symbols and line tables.
    PdbModule(String),
    /// The PDB's procedures as a whole (e.g. tying a funclet to its parent).
    PdbProcedures,
}

impl fmt::Display for DiagnosticLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiagnosticLocation::Section(name) => f.write_str(name),
            DiagnosticLocation::PdbTypes => f.write_str("pdb TPI stream"),
            DiagnosticLocation::PdbModule(name) => write!(f, "pdb module {name}"),
            DiagnosticLocation::PdbProcedures => f.write_str("pdb procedures"),
        }
    }
}

impl Serialize for DiagnosticLocation {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::{CrtTable, DiagnosticLocation, InitializerTable};

    /// The text (which `Serialize` writes) is the JSON spelling reports have always had, and
    /// the variant order sorts as that text did.
    #[test]
    fn text_and_order_are_those_of_the_former_strings() {
        let tables = [
            InitializerTable::Crt(CrtTable::Xc),
            InitializerTable::Crt(CrtTable::Xi),
            InitializerTable::Crt(CrtTable::Xp),
            InitializerTable::Crt(CrtTable::Xt),
            InitializerTable::MingwConstructors,
            InitializerTable::MingwDestructors,
            InitializerTable::TlsCallback,
        ];
        let texts: Vec<String> = tables.iter().map(ToString::to_string).collect();
        assert_eq!(
            texts,
            [
                ".CRT$XC",
                ".CRT$XI",
                ".CRT$XP",
                ".CRT$XT",
                ".ctors",
                ".dtors",
                "tls-callback"
            ]
        );
        assert!(tables.is_sorted());
        assert_eq!(
            InitializerTable::ElfSection(".init_array".into()).to_string(),
            ".init_array"
        );
        let mut sorted = texts.clone();
        sorted.sort();
        assert_eq!(sorted, texts);

        let locations = [
            DiagnosticLocation::Section(".pdata".into()),
            DiagnosticLocation::PdbTypes,
            DiagnosticLocation::PdbModule("a.obj".into()),
            DiagnosticLocation::PdbProcedures,
        ];
        let texts: Vec<String> = locations.iter().map(ToString::to_string).collect();
        assert_eq!(
            texts,
            [
                ".pdata",
                "pdb TPI stream",
                "pdb module a.obj",
                "pdb procedures"
            ]
        );
        assert!(locations.is_sorted());
        let mut sorted = texts.clone();
        sorted.sort();
        assert_eq!(sorted, texts);
    }
}
