//! The fuzz input is a mutated fixed build, diffed against a committed baseline and lifted:
//! the PDB of `bounds_check/pe/baseline.exe` when it starts with the MSF magic, a PE image when
//! it starts with `MZ` (both against `bounds_check/pe/baseline.exe`), else an ELF binary
//! (against `bounds_check/elf/baseline`).
//!
//! Load, diff and lift may refuse the input with an `Err` but never panic (see `src/lib.rs`).

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
    hotpatch_fuzz::load_diff_and_lift(baseline, fixed);
});
