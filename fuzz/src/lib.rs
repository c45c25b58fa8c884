//! The one check every target makes: no panic may escape `hotpatch_image::load`.
//!
//! The reader deliberately runs the third-party PDB parser under `catch_unwind` and turns its
//! panics into `Error::PdbReaderFailed`. libfuzzer-sys's panic hook aborts on *every* panic,
//! caught or not, so it would report those handled panics as crashes. [`load`] therefore
//! replaces that hook with one that only records the panic, and aborts (which libFuzzer reports
//! as a crash, saving the input) only when a panic unwinds out of `load` itself.

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
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        let _ = hotpatch_image::load(binary, debug);
    }));
    if outcome.is_err() {
        LAST_PANIC.with(|last| match last.borrow_mut().take() {
            Some((message, backtrace)) => {
                eprintln!("panic escaped hotpatch_image::load: {message}\n{backtrace}");
            }
            None => eprintln!("panic escaped hotpatch_image::load"),
        });
        std::process::abort();
    }
}
