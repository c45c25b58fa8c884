//! Crash points for the fault tests: with the `crash-points` feature (enabled only by this
//! crate's own dev-dependency on itself, so only test builds have it), the applier kills
//! itself with SIGKILL (`TerminateProcess` on Windows) at the point
//! `HOTPATCH_APPLY_CRASH_AT=<command>.<step>` names: no
//! destructor, unwinding or flush runs, as when the OOM killer or an operator's `kill -9`
//! strikes. Without the feature `point` is empty and the variable is never read.

/// Dies here if `HOTPATCH_APPLY_CRASH_AT` is `command.step` (test builds only).
#[cfg(feature = "crash-points")]
pub fn point(command: &str, step: &str) {
    let Some(wanted) = std::env::var_os("HOTPATCH_APPLY_CRASH_AT") else {
        return;
    };
    if wanted.to_str() == Some(&format!("{command}.{step}")) {
        kill_self();
    }
}

/// Dies here if `HOTPATCH_APPLY_CRASH_AT` is `command.step` (test builds only).
#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub fn point(_command: &str, _step: &str) {}

#[cfg(all(feature = "crash-points", unix))]
fn kill_self() {
    // SAFETY: kill and getpid have no memory preconditions; SIGKILL does not return.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    std::process::abort();
}

#[cfg(all(feature = "crash-points", windows))]
fn kill_self() {
    use windows_sys::Win32::System::Threading::{GetCurrentProcess, TerminateProcess};
    // SAFETY: the pseudo handle of this process is always valid; TerminateProcess on it does not
    // return, and runs no destructor or exception handler (`abort` raises a fail-fast exception,
    // which Wine may hand to a debugger).
    unsafe {
        TerminateProcess(GetCurrentProcess(), 9);
    }
    std::process::abort();
}

#[cfg(all(feature = "crash-points", not(any(unix, windows))))]
fn kill_self() {
    std::process::abort();
}
