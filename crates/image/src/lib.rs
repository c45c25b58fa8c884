//! `hotpatch-image`: one model of a binary, read from PE+PDB or ELF+DWARF.
//!
//! [`load`] takes the bytes of a binary (and optionally of its separate debug information) and
//! returns an [`Image`] that borrows the code bytes from the input, plus the [`Diagnostic`]s for
//! anything it could read only in part. It never panics on input and never uses debug
//! information that does not provably belong to the binary.

mod elf;
mod error;
mod finish;
mod identity;
mod model;
mod noreturn;
mod pe;
mod provenance;
mod relocation;

pub use error::{Error, Result};
pub use finish::MappedSection;
pub use identity::{guid_string, hex, sha256_hex};
pub use model::*;
pub use noreturn::is_noreturn_import;
pub use pe::codeview_record;

/// An image and what could not be read of it.
#[derive(Debug)]
pub struct Loaded<'data> {
    pub image: Image<'data>,
    /// Problems that did not stop the reading, sorted. Downstream, any that names a function
    /// makes a patch of that function reboot-required.
    pub diagnostics: Vec<Diagnostic>,
}

/// The container format of `bytes`, judged by its magic number.
pub fn sniff(bytes: &[u8]) -> Result<Format> {
    match bytes {
        [] => Err(Error::Empty),
        [0x7f, b'E', b'L', b'F', ..] => Ok(Format::Elf),
        [b'M', b'Z', ..] => Ok(Format::Pe),
        _ => Err(Error::NotABinary {
            magic: hex(&bytes[..bytes.len().min(4)]),
        }),
    }
}

/// Reads a binary and its debug information into one [`Image`].
///
/// `debug` is the PDB for a PE file, or a separate DWARF debug file for an ELF file whose DWARF
/// was split off (`objcopy --only-keep-debug`). Debug information that does not belong to the
/// binary (another PDB GUID/age, another build-id) is refused with an error.
pub fn load<'data>(binary: &'data [u8], debug: Option<&'data [u8]>) -> Result<Loaded<'data>> {
    let mut loaded = match sniff(binary)? {
        Format::Pe => pe::load(binary, debug)?,
        Format::Elf => elf::load(binary, debug)?,
    };
    loaded.diagnostics.sort();
    loaded.diagnostics.dedup();
    Ok(loaded)
}
