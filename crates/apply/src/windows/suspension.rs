//! The suspension record: while this applier holds threads of a process suspended, a page in
//! that process lists them, so that a later run can undo the suspensions of an applier that
//! died inside a stop window. A thread's suspend count outlives the process that called
//! `SuspendThread` (Windows, and Wine 8 as measured: docs/apply.md), so a killed applier leaves
//! the target frozen; the next `Stopped::all` on it reads the records of dead appliers
//! (`abandoned`), suspends every thread itself, and when it resumes them also undoes the
//! suspensions the counts `SuspendThread` returned show a dead applier left.
//!
//! Layout (one private read-write page, little endian): the 16-byte magic, the applier's pid
//! (u32), its process creation time (u64, so a reused pid is not taken for the dead applier),
//! the number of listed threads (u32), then the thread ids (u32 each). A thread id is listed
//! *before* its `SuspendThread`, so a kill in between makes the repair resume a thread that was
//! not suspended by it, which `ResumeThread` leaves as it is (count 0 stays 0).

use super::handle::Handle;
use super::process::Process;
use crate::bytes::{u32_at, u64_at};
use crate::error::Error;
use std::ffi::c_void;
use windows_sys::Win32::Foundation::FILETIME;
use windows_sys::Win32::System::Memory::{
    MEM_COMMIT, MEM_RELEASE, MEM_RESERVE, PAGE_READWRITE, VirtualAllocEx, VirtualFreeEx,
};
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, GetProcessTimes, OpenProcess, OpenThread, PROCESS_QUERY_LIMITED_INFORMATION,
    ResumeThread, THREAD_SUSPEND_RESUME,
};

const MAGIC: [u8; 16] = *b"hotpatch-suspend";
const PAGE: usize = 4096;
const HEADER: usize = 32;
/// Thread ids one record holds; a process with more threads is stopped without recording the
/// rest (they are then not repaired after a crash).
const CAPACITY: usize = (PAGE - HEADER) / 4;

/// This applier's record in one process, freed when its threads are resumed.
pub struct Record {
    /// The process again, opened for the record alone, so the record frees itself when the
    /// threads are resumed on any path.
    process: Process,
    address: u64,
    listed: usize,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("pid", &self.process.pid())
            .field("address", &self.address)
            .field("listed", &self.listed)
            .finish()
    }
}

/// The creation time of process `pid` as a FILETIME in one u64, `None` when it is gone.
fn creation_time(handle: &Handle) -> Option<u64> {
    let mut times = [FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    }; 4];
    let [created, exited, kernel, user] = &mut times;
    // SAFETY: the four FILETIMEs are live and written by the OS.
    let ok = unsafe { GetProcessTimes(handle.raw(), created, exited, kernel, user) };
    (ok != 0).then(|| (u64::from(created.dwHighDateTime) << 32) | u64::from(created.dwLowDateTime))
}

/// Whether the applier that wrote a record (its pid and creation time) still runs.
fn applier_alive(pid: u32, created: u64) -> bool {
    if !super::process::exists(pid as i32) {
        return false;
    }
    // SAFETY: plain values in, a handle or null out.
    let raw = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    Handle::new(raw)
        .and_then(|handle| creation_time(&handle))
        .is_some_and(|now| now == created)
}

impl Record {
    /// Allocates and writes an empty record in process `pid`.
    pub fn create(pid: i32) -> Result<Record, Error> {
        let process = Process::open(pid)?;
        // SAFETY: plain values; the OS reserves and commits a page in the other process.
        let raw = unsafe {
            VirtualAllocEx(
                process.handle().raw(),
                std::ptr::null(),
                PAGE,
                MEM_RESERVE | MEM_COMMIT,
                PAGE_READWRITE,
            )
        };
        if raw.is_null() {
            return Err(Error::os(
                process.pid(),
                "VirtualAllocEx",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: the pseudo handle of this process needs no closing and is always valid.
        let own = unsafe { GetCurrentProcess() };
        let mut times = [FILETIME {
            dwLowDateTime: 0,
            dwHighDateTime: 0,
        }; 4];
        let [created, exited, kernel, user] = &mut times;
        // SAFETY: the four FILETIMEs are live and written by the OS.
        unsafe { GetProcessTimes(own, created, exited, kernel, user) };
        let created = (u64::from(created.dwHighDateTime) << 32) | u64::from(created.dwLowDateTime);
        let mut header = Vec::with_capacity(HEADER);
        header.extend_from_slice(&MAGIC);
        header.extend_from_slice(&std::process::id().to_le_bytes());
        header.extend_from_slice(&created.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        header.resize(HEADER, 0);
        let address = raw as u64;
        if let Err(error) = process.write(address, &header) {
            release(&process, address);
            return Err(error);
        }
        Ok(Record {
            process,
            address,
            listed: 0,
        })
    }

    /// Lists `tids` (about to be suspended) after those already listed.
    pub fn list(&mut self, tids: &[u32]) -> Result<(), Error> {
        let process = &self.process;
        let room = CAPACITY - self.listed;
        let tids = &tids[..tids.len().min(room)];
        if tids.is_empty() {
            return Ok(());
        }
        let bytes: Vec<u8> = tids.iter().flat_map(|tid| tid.to_le_bytes()).collect();
        process.write(self.address + (HEADER + 4 * self.listed) as u64, &bytes)?;
        self.listed += tids.len();
        process.write(self.address + 28, &(self.listed as u32).to_le_bytes())
    }

    /// Releases the record (after every listed thread was resumed).
    pub fn free(self) {
        release(&self.process, self.address);
    }
}

fn release(process: &Process, address: u64) {
    // SAFETY: plain values; the OS releases the page in the other process. A failure leaves a
    // record whose threads are already resumed: a later repair resumes nothing.
    unsafe {
        VirtualFreeEx(
            process.handle().raw(),
            address as *mut c_void,
            0,
            MEM_RELEASE,
        );
    }
}

/// What the records of appliers that no longer run say: how many of them list each thread,
/// and where the records are, to be released once their counts are undone.
#[derive(Debug, Default)]
pub struct Abandoned {
    pub listings: std::collections::BTreeMap<u32, u32>,
    records: Vec<u64>,
}

impl Abandoned {
    /// How many suspensions of thread `tid` a dead applier left, given the count
    /// `SuspendThread` returned (the count before this applier's own suspension). A thread is
    /// listed before its `SuspendThread`, so a listing alone does not prove the count: a count
    /// of 0 owes nothing, whatever the records say.
    pub fn owed(&self, tid: u32, previous_count: u32) -> u32 {
        self.listings
            .get(&tid)
            .map_or(0, |listed| (*listed).min(previous_count))
    }

    /// Releases the records, after the owed counts were undone.
    pub fn free(self, process: &Process) {
        for address in self.records {
            release(process, address);
        }
    }
}

/// Reads, without resuming anything, the records of appliers that no longer run. A window
/// that suspends the process itself uses this: it suspends every thread first, learns from
/// `SuspendThread` which ones still carry a dead applier's suspension, and undoes those when
/// it resumes, so a target a killed applier left half written never runs before the writes
/// are finished. Reading twice (a kill before the records were released) is harmless: the
/// counts decide, and they were already undone.
pub fn abandoned(process: &Process) -> Result<Abandoned, Error> {
    let mut found = Abandoned::default();
    for_each_dead_record(process, |base, tids| {
        for tid in tids {
            *found.listings.entry(tid).or_insert(0) += 1;
        }
        found.records.push(base);
    })?;
    Ok(found)
}

/// Resumes, once each, the threads listed in records of appliers that no longer run, and
/// releases those records; how many threads were resumed from a suspension (count above 0).
/// For an apply that opens no window of its own (everything already in place).
pub fn repair(process: &Process) -> Result<usize, Error> {
    let mut resumed = 0;
    for_each_dead_record(process, |base, tids| {
        for tid in tids {
            // SAFETY: plain values in, a handle or null out.
            let raw = unsafe { OpenThread(THREAD_SUSPEND_RESUME, 0, tid) };
            let Some(thread) = Handle::new(raw) else {
                continue;
            };
            // SAFETY: an open thread handle with suspend rights; undoes the dead applier's one
            // suspension (a thread it never suspended stays at 0).
            let previous = unsafe { ResumeThread(thread.raw()) };
            if previous != u32::MAX && previous > 0 {
                resumed += 1;
            }
        }
        release(process, base);
    })?;
    Ok(resumed)
}

/// Calls `each(base, listed thread ids)` for every record in the process whose applier no
/// longer runs.
fn for_each_dead_record(
    process: &Process,
    mut each: impl FnMut(u64, Vec<u32>),
) -> Result<(), Error> {
    for (base, end) in process.tagged_allocations(PAGE_READWRITE, &MAGIC) {
        if end - base < PAGE as u64 {
            continue;
        }
        let page = process.read_vec(base, PAGE)?;
        let (Some(applier), Some(listed)) = (u32_at(&page, 16), u32_at(&page, 28)) else {
            continue;
        };
        let created = u64_at(&page, 20).unwrap_or(0);
        if applier_alive(applier, created) {
            continue;
        }
        let tids = (0..(listed as usize).min(CAPACITY))
            .map_while(|slot| u32_at(&page, HEADER + 4 * slot))
            .collect();
        each(base, tids);
    }
    Ok(())
}
