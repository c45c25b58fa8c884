//! The fuzz input is an ELF binary (with whatever DWARF it carries), loaded with no separate
//! debug file.
//!
//! `load` may return any `Err` for malformed bytes; it must never panic, overflow the stack or
//! allocate without bound (see `src/lib.rs`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Only ELF inputs are interesting here; anything else is refused by `sniff` at once.
    if !data.starts_with(b"\x7fELF") {
        return;
    }
    hotpatch_fuzz::load(data, None);
});
