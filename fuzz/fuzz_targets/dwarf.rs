//! The fuzz input is the separate debug file (`objcopy --only-keep-debug`) of a fixed, stripped
//! ELF binary.
//!
//! The binary is `fixtures/bounds_check/elf/baseline` with `objcopy --strip-all`
//! (`fuzz/fixtures/bounds_check-baseline.stripped`, made by `fuzz/seed.sh`): no `.symtab`, no
//! DWARF, so symbols and debug info both come from the input. The input must carry the binary's
//! build-id to get past the match check; seeds from `seed.sh` do, and libFuzzer keeps it.

#![no_main]

use libfuzzer_sys::fuzz_target;

static BINARY: &[u8] = include_bytes!("../fixtures/bounds_check-baseline.stripped");

fuzz_target!(|data: &[u8]| {
    hotpatch_fuzz::load(BINARY, Some(data));
});
