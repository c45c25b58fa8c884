//! The one error type of `hotpatch-image`: every variant says which part of which input failed.

/// Why a binary or its debug information could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input is empty.
    #[error("the file is empty")]
    Empty,
    /// The input is not a PE or ELF file at all.
    #[error("not a PE or ELF binary (starts with {magic})")]
    NotABinary { magic: String },
    /// A PE or ELF file of a kind the readers do not handle.
    #[error("unsupported binary: {what}")]
    Unsupported { what: String },
    /// The container could not be parsed.
    #[error("malformed {format} file: {what}: {source}")]
    Malformed {
        format: &'static str,
        what: &'static str,
        source: object::Error,
    },
    /// The PDB could not be parsed.
    #[error("malformed PDB: {what}: {source}")]
    Pdb {
        what: &'static str,
        source: pdb2::Error,
    },
    /// The PDB reader gave up on a structure it could not parse (the crate panicked; the panic
    /// was contained).
    #[error("malformed PDB: the reader failed inside {what}")]
    PdbReaderFailed { what: &'static str },
    /// The PDB belongs to another build.
    #[error(
        "the PDB does not match the image: image wants GUID {image_guid} age {image_age}, PDB has GUID {pdb_guid} age {pdb_age}"
    )]
    PdbMismatch {
        image_guid: String,
        image_age: u32,
        pdb_guid: String,
        pdb_age: u32,
    },
    /// A PDB was given for an image that has no CodeView record, so nothing proves they match.
    #[error("the image has no CodeView (RSDS) debug record, so no PDB can be matched to it")]
    NoCodeViewRecord,
    /// DWARF could not be parsed.
    #[error("malformed DWARF in {section} at offset {offset:#x}: {source}")]
    Dwarf {
        section: &'static str,
        offset: u64,
        source: gimli::Error,
    },
    /// A separate debug file belongs to another build.
    #[error(
        "the debug file does not match the binary: binary build-id {binary}, debug file build-id {debug}"
    )]
    DebugMismatch { binary: String, debug: String },
    /// A separate debug file was given but one of the two lacks a build-id, so nothing proves
    /// they match.
    #[error("cannot match the debug file to the binary: {which} has no GNU build-id")]
    NoBuildId { which: &'static str },
    /// A debug file was given that is not of the right kind (an ELF debug file for a PE, ...).
    #[error("the debug file is not {expected}")]
    WrongDebugFormat { expected: &'static str },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
