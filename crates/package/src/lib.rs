//! The signed hotpatch package: the manifest and payload types both the build side and the
//! applier code against, the archive writer and the verifying reader, relocation arithmetic,
//! signing keys and trust files.
//! It does no IO: callers hand it bytes and get values back.

mod error;
pub mod manifest;
pub mod relocate;

pub use error::Error;
pub use manifest::{
    Entry, FORMAT_VERSION, Manifest, PackageKind, PatchSite, Redirect, Relocation, RelocationKind,
    RelocationTarget, Target, TargetIdentity,
};
pub use relocate::{apply_relocations, redirect_bytes};
