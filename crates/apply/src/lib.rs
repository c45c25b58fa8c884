//! `hotpatch-apply`: the small, trusted applier. It verifies a signed package
//! (`hotpatch-package`), finds the processes that map each target by file identity, stages the
//! payload near the image, stops the process briefly to check that no thread is inside a
//! function being replaced, writes the redirects, and can roll all of it back.

pub mod crash;
pub mod error;
#[cfg(target_os = "linux")]
pub mod linux;
pub mod marker;
pub mod report;
pub mod state;

pub use error::Error;
