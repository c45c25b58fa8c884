//! The manifest of a package (format version 1): what it patches, in which sequence, until when,
//! and the list of every entry with its SHA-256 and length.
//! These types are the contract between the build side (lift) and the applier; their JSON form
//! is documented in `docs/package-format.md`, and every type refuses unknown fields.

use serde::{Deserialize, Serialize};

/// The only manifest format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The signed description of a package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Manifest {
    /// Always [`FORMAT_VERSION`]; anything else is refused.
    pub format: u32,
    pub product: String,
    pub channel: String,
    /// The release month, `YYYY-MM`.
    pub release: String,
    pub kind: PackageKind,
    /// Names the baseline series this package belongs to.
    pub baseline_id: String,
    /// Only grows per (product, channel).
    pub sequence: u64,
    /// The lowest installed sequence this package may follow; for a baseline, equal to
    /// `sequence`.
    pub min_sequence: u64,
    /// Unix seconds.
    pub issued_at: u64,
    /// Unix seconds; the package is refused at and after this instant.
    pub expires_at: u64,
    /// Lowercase hex of the first 16 bytes of SHA-256 of the signing public key.
    pub key_id: String,
    /// Every archive entry except `manifest.json` and `manifest.sig`, sorted by name.
    pub entries: Vec<Entry>,
    /// Sorted by name.
    pub targets: Vec<Target>,
}

/// Whether a package is a hotpatch (applied to running processes) or a baseline (installed with
/// a restart; it resets the series).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PackageKind {
    Hotpatch,
    Baseline,
}

/// One archive entry as the signed manifest pins it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Entry {
    pub name: String,
    /// Lowercase hex.
    pub sha256: String,
    pub len: u64,
}

/// One binary of the release tree and what to patch in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Target {
    /// Relative path of the binary in the release tree, `/`-separated.
    pub name: String,
    pub identity: TargetIdentity,
    /// The RVA at which file offset 0 is mapped: 0 for PE and ELF `ET_DYN`; the first `PT_LOAD`
    /// `p_vaddr` rounded down to the page for ELF `ET_EXEC`.
    /// The applier computes `bias = (start of the mapping of file offset 0) - image_base_rva`,
    /// and `address(rva) = bias + rva`.
    pub image_base_rva: u64,
    /// Entry name of the payload blob; `None` when nothing is patched in this binary.
    pub payload: Option<String>,
    pub payload_len: u64,
    /// One per replaced function, sorted by `baseline_rva`.
    pub sites: Vec<PatchSite>,
    /// Sorted by `offset`.
    pub relocations: Vec<Relocation>,
    /// PE only: the function table the applier registers for the new code
    /// (`RtlAddFunctionTable(payload_base + offset, count, payload_base)`), so that exceptions
    /// and stack walks unwind through patched frames. Absent when the new code needs none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unwind: Option<UnwindTable>,
}

/// Where a payload holds its x64 function table: `count` `RUNTIME_FUNCTION` entries of
/// [`RUNTIME_FUNCTION_SIZE`] bytes (`BeginAddress`, `EndAddress`, `UnwindInfoAddress`, each a
/// little-endian u32) at payload `offset`, sorted by `BeginAddress`.
/// All three addresses are offsets from the payload base, so no relocation touches them; each
/// `UnwindInfoAddress` names an `UNWIND_INFO` (version 1 or 2, no language handler) inside the
/// payload, whose chained `RUNTIME_FUNCTION`, if any, is payload-relative too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct UnwindTable {
    /// Offset of the first entry in the payload; a multiple of 4.
    pub offset: u64,
    /// Number of entries; at least 1.
    pub count: u64,
}

/// The size of one x64 `RUNTIME_FUNCTION`.
pub const RUNTIME_FUNCTION_SIZE: u64 = 12;

/// The exact build a target must be; the applier refuses any other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "lowercase", deny_unknown_fields)]
pub enum TargetIdentity {
    Pe {
        time_date_stamp: u32,
        checksum: u32,
        size_of_image: u32,
        /// Lowercase hex SHA-256 of the file.
        sha256: String,
        pdb_guid: Option<String>,
        pdb_age: Option<u32>,
    },
    Elf {
        build_id: Option<String>,
        /// Lowercase hex SHA-256 of the file.
        sha256: String,
    },
}

/// One replaced function: where its entry is in the baseline and where its new code is in the
/// payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct PatchSite {
    /// Readable name, for reports and errors.
    pub function: String,
    /// Entry of the replaced function in the baseline image.
    pub baseline_rva: u64,
    /// Its length: `[baseline_rva, baseline_rva + baseline_size)` is the range the applier's
    /// stack check protects.
    pub baseline_size: u64,
    /// Where the new code starts in the payload.
    pub payload_offset: u64,
    pub payload_size: u64,
    pub redirect: Redirect,
}

/// How the old entry is sent to the new code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Redirect {
    /// `E9 rel32` written at `baseline_rva`; `original` holds the 5 bytes expected there.
    Entry {
        #[serde(with = "hex_bytes")]
        original: Vec<u8>,
    },
    /// For a function shorter than 5 bytes with at least 5 bytes of filler before it:
    /// `E9 rel32` at `baseline_rva - 5`, and `EB F9` (jmp -7) at `baseline_rva`.
    /// `original` holds the 7 bytes expected at `[baseline_rva - 5, baseline_rva + 2)`.
    Padding {
        #[serde(with = "hex_bytes")]
        original: Vec<u8>,
    },
}

impl Redirect {
    /// The bytes expected at the write address before the redirect is written (for the check
    /// before writing, and for rollback).
    pub fn original(&self) -> &[u8] {
        match self {
            Redirect::Entry { original } | Redirect::Padding { original } => original,
        }
    }

    /// How many bytes the redirect writes: 5 for `Entry`, 7 for `Padding`.
    pub fn len(&self) -> usize {
        match self {
            Redirect::Entry { .. } => 5,
            Redirect::Padding { .. } => 7,
        }
    }

    /// Never true: a redirect always writes bytes; here because clippy pairs `len` with it.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// A field of the payload that is resolved when the payload's load address is known.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Relocation {
    /// Offset of the field inside the payload.
    pub offset: u64,
    pub kind: RelocationKind,
    pub target: RelocationTarget,
    pub addend: i64,
}

/// How a relocation's value is computed and stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelocationKind {
    /// 4 bytes, little-endian: `S + A - P`, which must fit in an `i32`.
    Rel32,
    /// 8 bytes, little-endian: `S + A`.
    Abs64,
}

impl RelocationKind {
    /// Width of the field in bytes.
    pub fn width(self) -> u64 {
        match self {
            RelocationKind::Rel32 => 4,
            RelocationKind::Abs64 => 8,
        }
    }
}

/// What a relocation points at (`S`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "in", rename_all = "snake_case", deny_unknown_fields)]
pub enum RelocationTarget {
    /// `S = payload_base + offset`.
    Payload { offset: u64 },
    /// `S = bias + rva`: a function, global, import slot or constant of the running baseline.
    Baseline { rva: u64 },
}

/// Raw bytes as lowercase hex in JSON.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        hex::decode(text.as_ref()).map_err(serde::de::Error::custom)
    }
}
