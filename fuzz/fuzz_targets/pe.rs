//! The fuzz input is a PE image, loaded with no PDB.
//!
//! `load` may return any `Err` for malformed bytes; it must never panic, overflow the stack or
//! allocate without bound (see `src/lib.rs`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Only PE inputs are interesting here; anything else is refused by `sniff` at once.
    if !data.starts_with(b"MZ") {
        return;
    }
    hotpatch_fuzz::load(data, None);
});
