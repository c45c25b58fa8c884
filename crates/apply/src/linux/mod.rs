//! The Linux backend: processes are read through `/proc`, stopped with ptrace, changed through
//! `/proc/PID/mem` and system calls injected into one of their own threads.
//!
//! What the OS-neutral orchestration (`crate::patch`, `crate::commands`) uses of a backend is
//! re-exported here under the same names as in `crate::windows`: `Process`, `Staging`,
//! `Stopped`, `find_images`, `markers`, `all_pids`, `raise_priority`/`restore_priority`,
//! `IdentityCache`, `handles` and `NAME`.

pub mod connector;
pub mod elf_check;
pub mod identity;
pub mod locate;
pub mod maps;
pub mod mem;
pub mod process;
pub mod ptrace;
pub mod remote;
pub mod threads;
pub mod watch;

pub use locate::{IdentityCache, all_pids, find_images, markers};
pub use process::{Process, Staging, hold, job_stopped, process_exists, unhold};
pub use ptrace::{
    Scheduling as Priority, raise_to_fifo as raise_priority, restore_scheduling as restore_priority,
};
pub use threads::Stopped;

/// How results name this backend, its file format and what identifies a file.
pub const NAME: &str = "Linux";
/// How a result names a stop window run at raised priority, and one that could not be.
pub const RAISED_PRIORITY: &str = "SCHED_FIFO";
pub const NORMAL_PRIORITY: &str = "normal priority: SCHED_FIFO not permitted";
pub const FORMAT: &str = "ELF";
pub const IDENTITY: &str = "SHA-256, build-id";

/// Whether this backend patches targets of this identity (ELF files).
pub fn handles(identity: &hotpatch_package::TargetIdentity) -> bool {
    matches!(identity, hotpatch_package::TargetIdentity::Elf { .. })
}

/// Refuses a target whose mapped file is not x86-64 ELF, or whose sites and relocations do
/// not fit the file's segments and function table (`elf_check`).
pub fn check_image(
    image: &crate::identity::MappedImage,
    target: &hotpatch_package::Target,
) -> Result<(), crate::error::Error> {
    let file = std::fs::File::open(&image.file)
        .map_err(|source| crate::error::Error::os(image.pid, "open the mapped image", source))?;
    let layout =
        elf_check::read_layout(&file).map_err(|found| crate::error::Error::WrongArchitecture {
            pid: image.pid,
            target: target.name.clone(),
            found,
        })?;
    crate::layout::check_target(target, &layout)
}

/// Nothing on Linux: a killed applier's threads are detached by the kernel, and the hold's
/// SIGSTOP (released by `crate::patch`) is what keeps a half-written process from running.
pub fn resume_abandoned(_process: &Process) -> Result<(), crate::error::Error> {
    Ok(())
}
