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
    /// The kernel does not let this applier trace or read the process (another user's process
    /// without the privilege, or a Yama ptrace scope that forbids it).
    #[error("not permitted to {what} process {pid}: {source}")]
    NotPermitted {
        pid: i32,
        what: &'static str,
        source: std::io::Error,
    },
    /// The state directory (or its `packages/`) can be read or written by other users, or
    /// belongs to another user: its high-water marks and stored packages would not be ours.
    #[error(
        "state directory {path} is not private to uid {euid} (owner {owner}, mode {mode:o})\nhint: chmod 700 and chown it, or let the applier create it"
    )]
    InsecureStateDir {
        path: PathBuf,
        owner: u32,
        mode: u32,
        euid: u32,
    },
    /// The trust file (or public key file) can be written by group or others, who could then
    /// make the applier trust their key.
    #[error("trust file {path} is writable by group or others (mode {mode:o})")]
    InsecureTrustFile { path: PathBuf, mode: u32 },
    /// The mapped image is not an x86-64 ELF file; the payload and redirects are x86-64 code.
    #[error(
        "target {target} in process {pid} is not x86-64 ELF ({found}); the payload is x86-64 code"
    )]
    WrongArchitecture {
        pid: i32,
        target: String,
        found: String,
    },
    /// A patch site (or the bytes its redirect writes) lies outside the executable segments
    /// of the mapped image.
    #[error("patch site {function} of {target} (rva {rva:#x}) lies outside the image's code")]
    SiteOutsideImage {
        target: String,
        function: String,
        rva: u64,
    },
    /// A patch site is not the start of a function the image's unwind table lists.
    #[error(
        "patch site {function} of {target} (rva {rva:#x}) is not a function entry in the image's function table (.eh_frame_hdr, .pdata)"
    )]
    NotAFunctionEntry {
        target: String,
        function: String,
        rva: u64,
    },
    /// The image has no function table (`.eh_frame_hdr` search table, `.pdata`) to check
    /// function entries against.
    #[error("target {target} has no usable function table: {what}")]
    NoFunctionTable { target: String, what: &'static str },
    /// A relocation resolves against an address outside the mapped image.
    #[error(
        "relocation at payload offset {offset:#x} of {target} points to rva {rva:#x}, outside the image"
    )]
    RelocationOutsideImage {
        target: String,
        offset: u64,
        rva: u64,
    },
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
            | Error::Unsupported { .. }
            | Error::NotPermitted { .. }
            | Error::WrongArchitecture { .. }
            | Error::SiteOutsideImage { .. }
            | Error::NotAFunctionEntry { .. }
            | Error::NoFunctionTable { .. }
            | Error::RelocationOutsideImage { .. } => Class::Refused,
            Error::State { .. }
            | Error::StateFormat { .. }
            | Error::InsecureStateDir { .. }
            | Error::InsecureTrustFile { .. } => Class::Input,
            _ => Class::Failed,
        }
    }

    /// A stable, kebab-case name of the variant (of the package error for `Package`), printed
    /// in JSON output so that callers and tests match on the kind, never on the message.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::ProcessGone { .. } => "process-gone",
            Error::Os { .. } => "os",
            Error::MapsLine { .. } => "maps-line",
            Error::RemoteSyscall { .. } => "remote-syscall",
            Error::RemoteSyscallLost { .. } => "remote-syscall-lost",
            Error::RemoteCall { .. } => "remote-call",
            Error::NoSyscallInstruction { .. } => "no-syscall-instruction",
            Error::NoNearbyAddress { .. } => "no-nearby-address",
            Error::Busy { .. } => "busy",
            Error::BytesMismatch { .. } => "bytes-mismatch",
            Error::Marker { .. } => "marker",
            Error::Unsupported { .. } => "unsupported",
            Error::Package(error) => error.kind(),
            Error::State { .. } => "state",
            Error::StateFormat { .. } => "state-format",
            Error::NoSuchPackage { .. } => "no-such-package",
            Error::NotPermitted { .. } => "not-permitted",
            Error::InsecureStateDir { .. } => "insecure-state-dir",
            Error::InsecureTrustFile { .. } => "insecure-trust-file",
            Error::WrongArchitecture { .. } => "wrong-architecture",
            Error::SiteOutsideImage { .. } => "site-outside-image",
            Error::NotAFunctionEntry { .. } => "not-a-function-entry",
            Error::NoFunctionTable { .. } => "no-function-table",
            Error::RelocationOutsideImage { .. } => "relocation-outside-image",
        }
    }

    /// An OS error on `pid`, turned into `ProcessGone` when the process no longer exists and
    /// into `NotPermitted` when the kernel refused access.
    pub fn os(pid: i32, what: &'static str, source: std::io::Error) -> Error {
        #[cfg(unix)]
        if matches!(source.raw_os_error(), Some(libc::EPERM | libc::EACCES)) && process_listed(pid)
        {
            return Error::NotPermitted { pid, what, source };
        }
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

/// Whether `/proc/PID` exists (readable without any access to the process).
#[cfg(unix)]
fn process_listed(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}/stat")).exists()
}

/// Hex of a byte string, for messages.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
