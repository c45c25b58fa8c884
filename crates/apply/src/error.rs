//! The applier's one error type: every variant names the process, thread, address or file at
//! fault, and maps to one of the documented exit classes (`Error::class`).

use std::path::PathBuf;

/// What went wrong while verifying, locating, staging, stopping, checking or redirecting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The process exited (or was never there) while the applier worked on it.
    #[error("process {pid} is gone")]
    ProcessGone { pid: i32 },
    /// A system call on the process failed for another reason than its exit.
    #[error("{what} on process {pid}: {source}")]
    Os {
        pid: i32,
        what: &'static str,
        source: std::io::Error,
    },
    /// A line of `/proc/PID/maps` did not have the kernel's shape.
    #[error("unreadable line in /proc/{pid}/maps: {line:?}")]
    MapsLine { pid: i32, line: String },
    /// A system call injected into the process returned an error.
    #[error("remote {syscall} in process {pid} failed with errno {errno}")]
    RemoteSyscall {
        pid: i32,
        syscall: &'static str,
        errno: i32,
    },
    /// The injected system call did not complete as a single step.
    #[error("remote {syscall} in thread {tid} did not complete (stopped at {rip:#x})")]
    RemoteSyscallLost {
        tid: i32,
        syscall: &'static str,
        rip: u64,
    },
    /// A function the applier called inside the process (a remote thread on Windows) failed,
    /// did not finish in time, or could not be found.
    #[error("{function} in process {pid} failed: {what}")]
    RemoteCall {
        pid: i32,
        function: &'static str,
        what: &'static str,
    },
    /// No executable mapping of the process holds a `syscall` instruction to borrow.
    #[error("process {pid} has no `syscall` instruction in an executable mapping")]
    NoSyscallInstruction { pid: i32 },
    /// No free gap within rel32 reach of the target image could hold the payload.
    #[error("no free address within ±2 GiB of {target} in process {pid} for {len} bytes")]
    NoNearbyAddress { pid: i32, target: String, len: u64 },
    /// A function being replaced stayed on a thread's stack through every retry.
    #[error(
        "function {function} is busy in process {pid} (thread {tid} at {address:#x}) after {tries} tries"
    )]
    Busy {
        pid: i32,
        tid: i32,
        function: String,
        address: u64,
        tries: u32,
    },
    /// The bytes at a patch site are neither the baseline's nor this applier's redirect.
    #[error("bytes at {function} ({address:#x}) in process {pid} are {found}, expected {expected}")]
    BytesMismatch {
        pid: i32,
        function: String,
        address: u64,
        expected: String,
        found: String,
    },
    /// A stored marker could not be decoded.
    #[error("malformed hotpatch marker at {address:#x} in process {pid}: {what}")]
    Marker {
        pid: i32,
        address: u64,
        what: &'static str,
    },
    /// The package is not for this platform or cannot be applied as described.
    #[error("target {target}: {what}")]
    Unsupported { target: String, what: &'static str },
    /// The package failed verification or a payload could not be resolved.
    #[error(transparent)]
    Package(#[from] hotpatch_package::Error),
    /// The state directory could not be read or written.
    #[error("state {path}: {source}")]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The state file exists but does not parse.
    #[error("state {path}: {source}")]
    StateFormat {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// A rollback names a package that the state directory does not hold.
    #[error("no installed package with sequence {sequence} for {product}")]
    NoSuchPackage { product: String, sequence: u64 },
}

/// The exit class of an error, as documented in docs/apply.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// Bad input: a file, a flag, the state directory.
    Input,
    /// The package failed verification (signature, expiry, sequence, hashes).
    Verification,
    /// The applier refused to touch the process (busy, identity, bytes, reach).
    Refused,
    /// The process went away or an OS call failed.
    Failed,
}

impl Error {
    /// The exit class this error belongs to.
    pub fn class(&self) -> Class {
        match self {
            // Resolving a payload at the address found can fail on reach: that is a refusal to
            // touch this process, not a verdict on the package.
            Error::Package(
                hotpatch_package::Error::RedirectOutOfReach { .. }
                | hotpatch_package::Error::Rel32Overflow { .. }
                | hotpatch_package::Error::AddressOverflow { .. },
            ) => Class::Refused,
            Error::Package(_) | Error::NoSuchPackage { .. } => Class::Verification,
            Error::Busy { .. }
            | Error::BytesMismatch { .. }
            | Error::NoNearbyAddress { .. }
            | Error::Unsupported { .. } => Class::Refused,
            Error::State { .. } | Error::StateFormat { .. } => Class::Input,
            _ => Class::Failed,
        }
    }

    /// An OS error on `pid`, turned into `ProcessGone` when the process no longer exists.
    pub fn os(pid: i32, what: &'static str, source: std::io::Error) -> Error {
        #[cfg(unix)]
        let no_such_process = source.raw_os_error() == Some(libc::ESRCH);
        #[cfg(not(unix))]
        let no_such_process = false;
        if no_such_process
            || source.kind() == std::io::ErrorKind::NotFound
            || !crate::backend::process_exists(pid)
        {
            Error::ProcessGone { pid }
        } else {
            Error::Os { pid, what, source }
        }
    }
}

/// Hex of a byte string, for messages.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
