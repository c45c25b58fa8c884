//! `hotpatch-apply`: the small, trusted applier. It verifies a signed package
//! (`hotpatch-package`), finds the processes that map each target by file identity, stages the
//! payload near the image, stops the process briefly to check that no thread is inside a
//! function being replaced, writes the redirects, and can roll all of it back.
//!
//! Everything that is not OS-specific (package checks, state directory, marker format,
//! results, exit codes, and the orchestration of apply, rollback and status in `commands` and
//! `patch`) is written once; the OS work sits behind one module boundary, `backend`, which is
//! `linux` (ptrace, `/proc`) or `windows` (Win32) by target.

mod bytes;
pub mod commands;
pub mod crash;
pub mod error;
pub mod identity;
pub mod layout;
#[cfg(target_os = "linux")]
pub mod linux;
pub mod marker;
pub mod patch;
pub mod pe_check;
pub mod report;
pub mod stack;
pub mod state;
#[cfg(windows)]
pub mod windows;

#[cfg(target_os = "linux")]
pub use linux as backend;
#[cfg(windows)]
pub use windows as backend;

pub use error::Error;
