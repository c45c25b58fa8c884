//! The signed hotpatch package: the manifest and payload types both the build side and the
//! applier code against, the archive writer and the verifying reader, relocation arithmetic,
//! signing keys and trust files.
//! It does no IO: callers hand it bytes and get values back.
//! The format is documented in `docs/package-format.md`.

mod archive;
mod error;
pub mod keys;
pub mod manifest;
pub mod read;
pub mod relocate;
pub mod sequence;
pub mod trust;
pub mod unwind;
pub mod write;

#[cfg(test)]
mod tests;

pub use error::Error;
pub use keys::{PublicKey, SecretKey, key_id_of};
pub use manifest::{
    Entry, FORMAT_VERSION, Manifest, PackageKind, PatchSite, RUNTIME_FUNCTION_SIZE, Redirect,
    Relocation, RelocationKind, RelocationTarget, Target, TargetIdentity, UnwindTable,
};
pub use read::{
    Limits, MANIFEST_NAME, SIGNATURE_NAME, UnverifiedPackage, VerifiedPackage, open,
    read_unverified,
};
pub use relocate::{apply_relocations, redirect_bytes};
pub use sequence::check_sequence;
pub use trust::{Trust, TrustFile, TrustedKey};
pub use write::{DEFAULT_VALIDITY_SECONDS, issue_time, write_package};
