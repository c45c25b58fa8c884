//! The fuzz input is the PDB of a fixed, committed PE image (`bounds_check` baseline).
//!
//! The image is valid, so every input reaches the PDB reader; the image's own parsing is
//! covered by the `pe` target.

#![no_main]

use libfuzzer_sys::fuzz_target;

/// PE32+ built by clang + lld for x86_64-w64-mingw32; its real PDB is `baseline.pdb` beside it.
static IMAGE: &[u8] = include_bytes!("../../fixtures/bounds_check/pe/baseline.exe");

fuzz_target!(|data: &[u8]| {
    hotpatch_fuzz::load(IMAGE, Some(data));
});
