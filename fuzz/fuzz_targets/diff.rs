//! The fuzz input is a fixed build, diffed both ways against a committed baseline build: the PDB
//! of `bounds_check/pe/baseline.exe` when it starts with the MSF magic (the baseline is that
//! image with its real PDB), a PE image (against `bounds_check/pe/baseline.exe`, both without a
//! PDB), or an ELF binary (against `bounds_check/elf/baseline`).
//!
//! Load and diff may refuse the input with an `Err` but never panic (see `src/lib.rs`).

#![no_main]

use libfuzzer_sys::fuzz_target;

static PE: &[u8] = include_bytes!("../../fixtures/bounds_check/pe/baseline.exe");
static PDB: &[u8] = include_bytes!("../../fixtures/bounds_check/pe/baseline.pdb");
static ELF: &[u8] = include_bytes!("../../fixtures/bounds_check/elf/baseline");

fuzz_target!(|data: &[u8]| {
    let (baseline, fixed) = if data.starts_with(b"Microsoft C/C++ MSF 7.00") {
        ((PE, Some(PDB)), (PE, Some(data)))
    } else if data.starts_with(b"MZ") {
        ((PE, None), (data, None))
    } else {
        ((ELF, None), (data, None))
    };
    hotpatch_fuzz::load_and_diff(baseline, fixed);
});
