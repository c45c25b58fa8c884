//! The fuzz input is a package archive, a manifest to sign, or a trust file (the first byte
//! chooses; see `hotpatch_fuzz::package`). `open`, `read_unverified`, the writer,
//! `TrustFile::load` and the relocation arithmetic may refuse with an `Err`, never panic, and
//! what the writer emits the reader must accept.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hotpatch_fuzz::package(data);
});
