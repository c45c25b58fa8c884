//! The typed fields of [`crate::Relocation`]: the relocation type of its format and where the
//! relocation came from. Both serialize as the names the formats' own tools print
//! (`R_X86_64_RELATIVE`, `IMAGE_REL_BASED_DIR64`; `base`, `dynamic`, `static`), which the
//! documented JSON keeps; code compares the values, never the names.

use object::{elf, pe};
use serde::{Serialize, Serializer};

/// The relocation type, by its format's number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RelocationType {
    /// An ELF x86-64 `R_X86_64_*` type.
    Elf(u32),
    /// A PE base relocation `IMAGE_REL_BASED_*` type.
    PeBase(u16),
}

impl RelocationType {
    /// `R_X86_64_RELATIVE`: the loader stores the load address plus the addend.
    pub const ELF_RELATIVE: RelocationType = RelocationType::Elf(elf::R_X86_64_RELATIVE);
    /// `R_X86_64_64`: the loader stores the symbol's address plus the addend.
    pub const ELF_64: RelocationType = RelocationType::Elf(elf::R_X86_64_64);
    /// `R_X86_64_COPY`: the executable holds a copy of a library's data.
    pub const ELF_COPY: RelocationType = RelocationType::Elf(elf::R_X86_64_COPY);
    /// `R_X86_64_GLOB_DAT`: a GOT slot for a symbol.
    pub const ELF_GLOB_DAT: RelocationType = RelocationType::Elf(elf::R_X86_64_GLOB_DAT);
    /// `IMAGE_REL_BASED_DIR64`: a 64-bit pointer rebased by the loader.
    pub const PE_DIR64: RelocationType = RelocationType::PeBase(pe::IMAGE_REL_BASED_DIR64);

    /// The name the format's tools print (`readelf -r`, `dumpbin /relocations`).
    pub fn name(self) -> String {
        match self {
            RelocationType::Elf(r_type) => elf_name(r_type),
            RelocationType::PeBase(typ) => pe_base_name(typ),
        }
    }
}

impl Serialize for RelocationType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.name())
    }
}

impl std::fmt::Display for RelocationType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// Where a relocation came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RelocationOrigin {
    /// PE `.reloc`.
    Base,
    /// ELF `.rela.dyn`, `.rela.plt`, `.relr.dyn`: applied by the loader.
    Dynamic,
    /// ELF relocations kept in the linked file by `--emit-relocs`.
    Static,
}

/// The ELF name of an x86-64 relocation type, as `readelf -r` prints it.
fn elf_name(r_type: u32) -> String {
    let name = match r_type {
        elf::R_X86_64_NONE => "R_X86_64_NONE",
        elf::R_X86_64_64 => "R_X86_64_64",
        elf::R_X86_64_PC32 => "R_X86_64_PC32",
        elf::R_X86_64_GOT32 => "R_X86_64_GOT32",
        elf::R_X86_64_PLT32 => "R_X86_64_PLT32",
        elf::R_X86_64_COPY => "R_X86_64_COPY",
        elf::R_X86_64_GLOB_DAT => "R_X86_64_GLOB_DAT",
        elf::R_X86_64_JUMP_SLOT => "R_X86_64_JUMP_SLOT",
        elf::R_X86_64_RELATIVE => "R_X86_64_RELATIVE",
        elf::R_X86_64_GOTPCREL => "R_X86_64_GOTPCREL",
        elf::R_X86_64_32 => "R_X86_64_32",
        elf::R_X86_64_32S => "R_X86_64_32S",
        elf::R_X86_64_16 => "R_X86_64_16",
        elf::R_X86_64_PC16 => "R_X86_64_PC16",
        elf::R_X86_64_8 => "R_X86_64_8",
        elf::R_X86_64_PC8 => "R_X86_64_PC8",
        elf::R_X86_64_DTPMOD64 => "R_X86_64_DTPMOD64",
        elf::R_X86_64_DTPOFF64 => "R_X86_64_DTPOFF64",
        elf::R_X86_64_TPOFF64 => "R_X86_64_TPOFF64",
        elf::R_X86_64_TLSGD => "R_X86_64_TLSGD",
        elf::R_X86_64_TLSLD => "R_X86_64_TLSLD",
        elf::R_X86_64_DTPOFF32 => "R_X86_64_DTPOFF32",
        elf::R_X86_64_GOTTPOFF => "R_X86_64_GOTTPOFF",
        elf::R_X86_64_TPOFF32 => "R_X86_64_TPOFF32",
        elf::R_X86_64_PC64 => "R_X86_64_PC64",
        elf::R_X86_64_GOTOFF64 => "R_X86_64_GOTOFF64",
        elf::R_X86_64_GOTPC32 => "R_X86_64_GOTPC32",
        elf::R_X86_64_GOT64 => "R_X86_64_GOT64",
        elf::R_X86_64_GOTPCREL64 => "R_X86_64_GOTPCREL64",
        elf::R_X86_64_GOTPC64 => "R_X86_64_GOTPC64",
        elf::R_X86_64_GOTPLT64 => "R_X86_64_GOTPLT64",
        elf::R_X86_64_PLTOFF64 => "R_X86_64_PLTOFF64",
        elf::R_X86_64_SIZE32 => "R_X86_64_SIZE32",
        elf::R_X86_64_SIZE64 => "R_X86_64_SIZE64",
        elf::R_X86_64_GOTPC32_TLSDESC => "R_X86_64_GOTPC32_TLSDESC",
        elf::R_X86_64_TLSDESC_CALL => "R_X86_64_TLSDESC_CALL",
        elf::R_X86_64_TLSDESC => "R_X86_64_TLSDESC",
        elf::R_X86_64_IRELATIVE => "R_X86_64_IRELATIVE",
        elf::R_X86_64_RELATIVE64 => "R_X86_64_RELATIVE64",
        elf::R_X86_64_GOTPCRELX => "R_X86_64_GOTPCRELX",
        elf::R_X86_64_REX_GOTPCRELX => "R_X86_64_REX_GOTPCRELX",
        other => return format!("R_X86_64_{other}"),
    };
    name.into()
}

fn pe_base_name(typ: u16) -> String {
    match typ {
        pe::IMAGE_REL_BASED_HIGH => "IMAGE_REL_BASED_HIGH".into(),
        pe::IMAGE_REL_BASED_LOW => "IMAGE_REL_BASED_LOW".into(),
        pe::IMAGE_REL_BASED_HIGHLOW => "IMAGE_REL_BASED_HIGHLOW".into(),
        pe::IMAGE_REL_BASED_HIGHADJ => "IMAGE_REL_BASED_HIGHADJ".into(),
        pe::IMAGE_REL_BASED_DIR64 => "IMAGE_REL_BASED_DIR64".into(),
        other => format!("IMAGE_REL_BASED_{other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::{RelocationOrigin, RelocationType};

    #[test]
    fn names_are_those_the_formats_tools_print() {
        assert_eq!(RelocationType::ELF_RELATIVE.name(), "R_X86_64_RELATIVE");
        assert_eq!(RelocationType::PE_DIR64.name(), "IMAGE_REL_BASED_DIR64");
        assert_eq!(RelocationType::Elf(1000).name(), "R_X86_64_1000");
        assert!(RelocationOrigin::Base < RelocationOrigin::Static);
    }
}
