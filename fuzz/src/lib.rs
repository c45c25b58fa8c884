//! The one check every target makes: no panic may escape `hotpatch_image::load` (and, for the
//! `diff` target, `hotpatch_diff::diff`).
//!
//! The reader deliberately runs each call into the third-party PDB parser under `catch_unwind`
//! and turns its panics into `Error::PdbReaderFailed`. libfuzzer-sys's panic hook aborts on
//! *every* panic, caught or not, so it would report those handled panics as crashes. [`load`] and
//! [`load_and_diff`] therefore replace that hook with one that only records the panic, and abort
//! (which libFuzzer reports as a crash, saving the input) only when a panic unwinds out of the
//! work itself.

use std::backtrace::Backtrace;
use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// The last panic seen on this thread: message with location, and its backtrace.
    static LAST_PANIC: RefCell<Option<(String, Backtrace)>> = const { RefCell::new(None) };
}

/// Runs `hotpatch_image::load(binary, debug)`; aborts the process if it panics.
pub fn load(binary: &[u8], debug: Option<&[u8]>) {
    no_escaping_panic("hotpatch_image::load", || {
        let _ = hotpatch_image::load(binary, debug);
    });
}

/// A build to load: the binary and its separate debug information (PDB or DWARF file).
pub type Build<'a> = (&'a [u8], Option<&'a [u8]>);

/// Loads both builds and, when both load, diffs them in both directions, as `hotpatch diff`
/// and `hotpatch check` do; aborts the process if anything panics.
pub fn load_and_diff(baseline: Build<'_>, fixed: Build<'_>) {
    no_escaping_panic("load + diff", || {
        let (Ok(baseline), Ok(fixed)) = (
            hotpatch_image::load(baseline.0, baseline.1),
            hotpatch_image::load(fixed.0, fixed.1),
        ) else {
            return;
        };
        let config = hotpatch_diff::Config::default();
        std::hint::black_box(hotpatch_diff::diff(&baseline.image, &fixed.image, config));
        std::hint::black_box(hotpatch_diff::diff(&fixed.image, &baseline.image, config));
    });
}

/// Runs `work`; aborts the process, printing the panic that escaped `work`, if it panics.
fn no_escaping_panic(what: &str, work: impl FnOnce()) {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        panic::set_hook(Box::new(|info| {
            // `Backtrace::capture` honours RUST_BACKTRACE (cargo fuzz run sets it) and is
            // symbolized only if printed, so handled panics stay cheap.
            let record = (info.to_string(), Backtrace::capture());
            LAST_PANIC.with(|last| *last.borrow_mut() = Some(record));
        }));
    });
    LAST_PANIC.with(|last| *last.borrow_mut() = None);
    let outcome = panic::catch_unwind(AssertUnwindSafe(work));
    if outcome.is_err() {
        LAST_PANIC.with(|last| match last.borrow_mut().take() {
            Some((message, backtrace)) => {
                eprintln!("panic escaped {what}: {message}\n{backtrace}");
            }
            None => eprintln!("panic escaped {what}"),
        });
        std::process::abort();
    }
}
