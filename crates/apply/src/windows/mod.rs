//! The Windows backend (Win32 through `windows-sys`): processes are opened with `OpenProcess`,
//! their modules listed with `EnumProcessModulesEx` and matched by the image headers and the
//! SHA-256 of the module file, payloads staged with `VirtualAllocEx` near the image, threads
//! suspended with `SuspendThread` (re-listed from Toolhelp32 snapshots until stable) and
//! checked with `GetThreadContext` and a stack scan, redirects written with
//! `WriteProcessMemory` and `FlushInstructionCache`. A payload's function table is registered
//! with `RtlAddFunctionTable` on a thread created in the process (`remote`). It exports the same names as
//! `crate::linux` for the OS-neutral orchestration.

pub mod handle;
pub mod modules;
pub mod process;
pub mod remote;
pub mod suspension;
pub mod threads;

pub use modules::{IdentityCache, all_pids, find_images, markers};
pub use process::{
    Priority, Process, Staging, exists as process_exists, raise_priority, restore_priority,
};
pub use threads::Stopped;

/// How results name this backend, its file format and what identifies a file.
pub const NAME: &str = "Windows";
/// How a result names a stop window run at raised priority, and one that could not be.
pub const RAISED_PRIORITY: &str = "time-critical priority";
pub const NORMAL_PRIORITY: &str = "normal priority: time-critical not permitted";
pub const FORMAT: &str = "PE";
pub const IDENTITY: &str = "TimeDateStamp, CheckSum, SizeOfImage, SHA-256";

/// Whether this backend patches targets of this identity (PE files).
pub fn handles(identity: &hotpatch_package::TargetIdentity) -> bool {
    matches!(identity, hotpatch_package::TargetIdentity::Pe { .. })
}

/// Refuses a target whose module file is not x86-64 PE32+, or whose sites and relocations do
/// not fit its sections and `.pdata` function table (`crate::pe_check`, `crate::layout`).
pub fn check_image(
    image: &crate::identity::MappedImage,
    target: &hotpatch_package::Target,
) -> Result<(), crate::error::Error> {
    let mut file = std::fs::File::open(&image.file)
        .map_err(|source| crate::error::Error::os(image.pid, "open the module file", source))?;
    let layout = crate::pe_check::read_layout(&mut file).map_err(|found| {
        crate::error::Error::WrongArchitecture {
            pid: image.pid,
            target: target.name.clone(),
            found,
        }
    })?;
    crate::layout::check_target(target, &layout)
}

/// Windows has no job-control stop the applier could find a process in.
pub fn job_stopped(_pid: i32) -> bool {
    false
}

/// Nothing to queue: threads suspended with `SuspendThread` stay suspended when the applier
/// dies, which holds the process without a signal (`crate::patch`'s hold).
pub fn hold(_pid: i32) -> Result<(), crate::error::Error> {
    Ok(())
}

/// The window's own `ResumeThread` calls let the process run; nothing else to undo.
pub fn unhold(_pid: i32) -> Result<(), crate::error::Error> {
    Ok(())
}

/// Resumes the threads an applier killed inside its stop window left suspended
/// (`suspension::repair`), for an apply that finds everything in place and opens no window of
/// its own; every window does the same before it suspends (`Stopped::all`). `status` does not:
/// it only reads, and must not let a half-written target run.
pub fn resume_abandoned(process: &Process) -> Result<(), crate::error::Error> {
    threads::repair_once(process)
}
