//! The library functions whose calls never return: they end the process (`exit`, `abort`,
//! `ExitProcess`), the thread (`pthread_exit`), or the frame by unwinding or jumping out
//! (`longjmp`, `__cxa_throw`, `_CxxThrowException`), or they report a failed check and abort
//! (`__assert_fail`, `__stack_chk_fail`). Imports carry no debug information, so the names are
//! the only evidence; the debug information covers the image's own functions
//! ([`crate::Function::noreturn`]).
//!
//! `RaiseException` is left out on purpose: a handler may continue a continuable exception,
//! and then the call returns.

/// Names as the C runtimes and system libraries export them, sorted for binary search.
const NORETURN_IMPORTS: &[&str] = &[
    "ExitProcess",
    "ExitThread",
    "FatalAppExitA",
    "FatalAppExitW",
    "FatalExit",
    "_CxxThrowException",
    "_Exit",
    "_Unwind_Resume",
    "__assert_fail",
    "__assert_perror_fail",
    "__chk_fail",
    "__cxa_rethrow",
    "__cxa_throw",
    "__fortify_fail",
    "__longjmp_chk",
    "__stack_chk_fail",
    "__std_terminate",
    "_assert",
    "_exit",
    "_invalid_parameter_noinfo_noreturn",
    "_longjmp",
    "_wassert",
    "abort",
    "err",
    "errx",
    "exit",
    "longjmp",
    "pthread_exit",
    "quick_exit",
    "siglongjmp",
    "terminate",
    "thrd_exit",
    "verr",
    "verrx",
];

/// Whether a call to the imported function `name` never returns. `name` may carry an ELF
/// symbol version (`exit@GLIBC_2.2.5`) or the PE import-slot prefix (`__imp_exit`).
pub fn is_noreturn_import(name: &str) -> bool {
    let name = name.split('@').next().unwrap_or(name);
    let name = name.strip_prefix("__imp_").unwrap_or(name);
    NORETURN_IMPORTS.binary_search(&name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::{NORETURN_IMPORTS, is_noreturn_import};

    #[test]
    fn the_table_is_sorted_so_binary_search_finds_every_name() {
        assert!(NORETURN_IMPORTS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn versions_and_slot_prefixes_are_ignored() {
        for name in [
            "exit",
            "exit@GLIBC_2.2.5",
            "__imp_ExitProcess",
            "__longjmp_chk@@GLIBC_2.11",
        ] {
            assert!(is_noreturn_import(name), "{name}");
        }
        for name in [
            "printf",
            "RaiseException",
            "exit_group_handler",
            "atexit",
            "",
        ] {
            assert!(!is_noreturn_import(name), "{name}");
        }
    }
}
