//! Suspending every thread of a process with `SuspendThread` and resuming them. Threads come
//! from Toolhelp32 snapshots, taken again until one shows no thread that is not yet suspended
//! (a thread created by a thread that was still running is caught on the next pass); a thread
//! that exits meanwhile is skipped. `Stopped` resumes every thread when dropped, so every exit
//! path lets the process run. While stopped, each thread's RIP and RSP come from
//! `GetThreadContext`, and its stack is scanned up to the end of the committed region that
//! holds RSP (`crate::stack`).

use super::handle::Handle;
use super::process::Process;
use super::suspension::{self, Abandoned, Record};
use crate::error::Error;
use crate::stack::{self, BusyThread, ProtectedRange, STACK_SCAN_LIMIT};
use std::collections::BTreeSet;
use std::time::Instant;
use windows_sys::Win32::System::Diagnostics::Debug::{
    CONTEXT, CONTEXT_CONTROL_AMD64, GetThreadContext,
};
use windows_sys::Win32::System::Diagnostics::ToolHelp::{
    CreateToolhelp32Snapshot, TH32CS_SNAPTHREAD, THREADENTRY32, Thread32First, Thread32Next,
};
use windows_sys::Win32::System::Threading::{
    OpenThread, ResumeThread, SuspendThread, THREAD_GET_CONTEXT, THREAD_QUERY_INFORMATION,
    THREAD_SUSPEND_RESUME,
};

/// How many snapshots are taken at most before the set is taken as it is.
const MAX_PASSES: usize = 64;

/// One suspended thread.
#[derive(Debug)]
pub struct StoppedThread {
    pub tid: i32,
    handle: Handle,
    /// Suspensions a dead applier left on this thread (`suspension::Abandoned::owed`),
    /// undone with this applier's own when the thread is resumed.
    owed: u32,
}

/// Threads of one process held suspended by this applier.
#[derive(Debug)]
pub struct Stopped {
    pub pid: i32,
    pub threads: Vec<StoppedThread>,
    /// When the first thread was asked to stop.
    pub since: Instant,
    /// The list of these threads kept in the process until they are resumed
    /// (`suspension`); `None` only when it could not be written.
    record: Option<Record>,
    /// The records of dead appliers, released once the suspensions they left are undone.
    abandoned: Option<DeadRecords>,
}

/// The records of dead appliers in the process, with the process opened to release them.
struct DeadRecords {
    process: Process,
    abandoned: Abandoned,
}

impl std::fmt::Debug for DeadRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadRecords")
            .field("pid", &self.process.pid())
            .field("abandoned", &self.abandoned)
            .finish()
    }
}

/// The ids of the threads of `pid` in a fresh snapshot.
fn list_threads(pid: i32) -> Result<BTreeSet<u32>, Error> {
    // SAFETY: plain values in, a handle or INVALID_HANDLE_VALUE out.
    let raw = unsafe { CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0) };
    let snapshot = Handle::new(raw).ok_or_else(|| {
        Error::os(
            pid,
            "CreateToolhelp32Snapshot",
            std::io::Error::last_os_error(),
        )
    })?;
    let mut tids = BTreeSet::new();
    // SAFETY: THREADENTRY32 is plain data; all zeroes is valid once dwSize is set.
    let mut entry: THREADENTRY32 = unsafe { std::mem::zeroed() };
    entry.dwSize = std::mem::size_of::<THREADENTRY32>() as u32;
    // SAFETY: `entry` is live with its size set.
    let mut more = unsafe { Thread32First(snapshot.raw(), &mut entry) } != 0;
    while more {
        if entry.th32OwnerProcessID == pid as u32 {
            tids.insert(entry.th32ThreadID);
        }
        // SAFETY: as above.
        more = unsafe { Thread32Next(snapshot.raw(), &mut entry) } != 0;
    }
    Ok(tids)
}

/// Resumes the threads a dead applier left suspended (`suspension::repair`), once per process
/// and run.
pub fn repair_once(process: &Process) -> Result<(), Error> {
    if !process.repaired.replace(true) {
        suspension::repair(process)?;
    }
    Ok(())
}

/// `CONTEXT` must be 16-byte aligned for `GetThreadContext`.
#[repr(C, align(16))]
struct AlignedContext(CONTEXT);

impl Stopped {
    /// Suspends every thread of the process.
    pub fn all(process: &Process) -> Result<Stopped, Error> {
        let pid = process.pid();
        // Threads an applier killed inside a stop window left suspended: known now, undone
        // only when this window resumes them, after its own writes (`suspension::abandoned`).
        let abandoned = suspension::abandoned(process)?;
        let record = Record::create(pid)?;
        let mut stopped = Stopped {
            pid,
            threads: Vec::new(),
            since: Instant::now(),
            record: Some(record),
            abandoned: if abandoned.listings.is_empty() {
                None
            } else {
                Some(DeadRecords {
                    process: Process::open(pid)?,
                    abandoned,
                })
            },
        };
        let mut seen = BTreeSet::new();
        let own = std::process::id();
        for _ in 0..MAX_PASSES {
            let listed = list_threads(pid)?;
            let new: Vec<u32> = listed.difference(&seen).copied().collect();
            if new.is_empty() {
                break;
            }
            seen.extend(new.iter().copied());
            if let Some(record) = stopped.record.as_mut() {
                record.list(&new)?;
            }
            for tid in new {
                if pid as u32 == own {
                    continue;
                }
                let access = THREAD_SUSPEND_RESUME | THREAD_GET_CONTEXT | THREAD_QUERY_INFORMATION;
                // SAFETY: plain values in, a handle or null out.
                let raw = unsafe { OpenThread(access, 0, tid) };
                // A thread that exited since the snapshot cannot be opened: nothing to stop.
                let Some(handle) = Handle::new(raw) else {
                    continue;
                };
                // SAFETY: `handle` is an open thread handle with suspend rights.
                let count = unsafe { SuspendThread(handle.raw()) };
                if count == u32::MAX {
                    continue;
                }
                let owed = stopped
                    .abandoned
                    .as_ref()
                    .map_or(0, |dead| dead.abandoned.owed(tid, count));
                stopped.threads.push(StoppedThread {
                    tid: tid as i32,
                    handle,
                    owed,
                });
            }
        }
        if stopped.threads.is_empty() {
            return Err(Error::ProcessGone { pid });
        }
        Ok(stopped)
    }

    /// How many threads are suspended.
    pub fn thread_count(&self) -> usize {
        self.threads.len()
    }

    /// Checks every suspended thread against `ranges`; the first busy one found is returned.
    /// `GetThreadContext` also waits until a thread's suspension has taken effect.
    pub fn find_busy(
        &self,
        process: &Process,
        ranges: &[ProtectedRange],
    ) -> Result<Option<BusyThread>, Error> {
        for thread in &self.threads {
            // SAFETY: CONTEXT is plain data; all zeroes is valid once ContextFlags is set.
            let mut context = AlignedContext(unsafe { std::mem::zeroed() });
            context.0.ContextFlags = CONTEXT_CONTROL_AMD64;
            // SAFETY: `context` is live, 16-byte aligned and has its flags set.
            let ok = unsafe { GetThreadContext(thread.handle.raw(), &mut context.0) };
            if ok == 0 {
                return Err(Error::os(
                    self.pid,
                    "GetThreadContext",
                    std::io::Error::last_os_error(),
                ));
            }
            if ranges.is_empty() {
                continue;
            }
            let rip = context.0.Rip;
            let stack_pointer = context.0.Rsp & !7;
            let words = match process.query(stack_pointer) {
                Some(region) => {
                    let end = (region.BaseAddress as u64).saturating_add(region.RegionSize as u64);
                    let len = end.saturating_sub(stack_pointer).min(STACK_SCAN_LIMIT) as usize;
                    process.read_vec(stack_pointer, len)?
                }
                None => Vec::new(),
            };
            if let Some(busy) = stack::busy_thread(ranges, thread.tid, rip, &words) {
                return Ok(Some(busy));
            }
        }
        Ok(None)
    }

    /// Resumes every thread and returns when the last one was let go.
    pub fn release(mut self) -> Instant {
        self.resume_all();
        Instant::now()
    }

    fn resume_all(&mut self) {
        for thread in self.threads.drain(..) {
            for _ in 0..=thread.owed {
                // SAFETY: the handle is open with suspend rights; this undoes our one
                // suspension and those a dead applier left.
                unsafe {
                    ResumeThread(thread.handle.raw());
                }
            }
        }
        if let Some(record) = self.record.take() {
            record.free();
        }
        if let Some(dead) = self.abandoned.take() {
            dead.abandoned.free(&dead.process);
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        self.resume_all();
    }
}
