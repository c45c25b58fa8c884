//! The fuzz input is a fixed build, diffed both ways against a committed baseline build
//! (`hotpatch_fuzz_targets::diff`).
//!
//! The work may refuse the input but never panic; `check_or_abort` aborts (a crash for
//! libFuzzer) only when a panic escapes it. The same function runs in the regression replay
//! and the fuzz smoke of `cargo xtask ci`.

#![no_main]

use hotpatch_fuzz_targets::{Target, check_or_abort};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check_or_abort(Target::Diff, data);
});
