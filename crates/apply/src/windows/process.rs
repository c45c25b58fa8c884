//! A process opened for patching, its memory, and `Staging`: payload memory reserved within
//! rel32 reach of the image (`VirtualQueryEx` walks the address space for free regions,
//! `VirtualAllocEx` takes one), written while read-write and then made execute-read with
//! `VirtualProtectEx` (never both writable and executable), freed with `VirtualFreeEx`.

use super::handle::Handle;
use crate::error::Error;
use crate::identity::MappedImage;
use std::ffi::c_void;
use windows_sys::Win32::Foundation::STILL_ACTIVE;
use windows_sys::Win32::System::Diagnostics::Debug::{
    FlushInstructionCache, ReadProcessMemory, WriteProcessMemory,
};
use windows_sys::Win32::System::Memory::{
    MEM_COMMIT, MEM_FREE, MEM_PRIVATE, MEM_RELEASE, MEM_RESERVE, MEMORY_BASIC_INFORMATION,
    PAGE_EXECUTE_READ, PAGE_PROTECTION_FLAGS, PAGE_READWRITE, VirtualAllocEx, VirtualFreeEx,
    VirtualProtectEx, VirtualQueryEx,
};
use windows_sys::Win32::System::Threading::{
    GetCurrentThread, GetExitCodeProcess, GetThreadPriority, OpenProcess, PROCESS_CREATE_THREAD,
    PROCESS_QUERY_INFORMATION, PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_VM_OPERATION,
    PROCESS_VM_READ, PROCESS_VM_WRITE, SetThreadPriority, THREAD_PRIORITY_TIME_CRITICAL,
};

/// Allocation granularity of `VirtualAllocEx`: reservations start on 64 KiB boundaries.
pub const GRANULARITY: u64 = 0x10000;
/// The largest distance a rel32 reaches, less a margin.
const REACH: u64 = (1 << 31) - GRANULARITY;
/// The highest user address on x64 Windows (and Wine).
const USER_END: u64 = 0x7fff_ffff_0000;

/// An open process.
pub struct Process {
    pid: i32,
    handle: Handle,
    /// Whether `suspension::repair` already ran on this process in this run.
    pub(super) repaired: std::cell::Cell<bool>,
}

impl Process {
    /// Opens `pid` with the rights reading, writing, querying and (for unwind registration)
    /// creating a thread need.
    pub fn open(pid: i32) -> Result<Process, Error> {
        let access = PROCESS_VM_READ
            | PROCESS_VM_WRITE
            | PROCESS_VM_OPERATION
            | PROCESS_QUERY_INFORMATION
            | PROCESS_CREATE_THREAD;
        // SAFETY: OpenProcess takes plain values and returns a handle or null.
        let raw = unsafe { OpenProcess(access, 0, pid as u32) };
        let handle = Handle::new(raw)
            .ok_or_else(|| Error::os(pid, "OpenProcess", std::io::Error::last_os_error()))?;
        Ok(Process {
            pid,
            handle,
            repaired: std::cell::Cell::new(false),
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Reads exactly `buffer.len()` bytes at `address`.
    pub fn read(&self, address: u64, buffer: &mut [u8]) -> Result<(), Error> {
        let mut done = 0usize;
        // SAFETY: `buffer` is live and writable for its length; the OS reads the other
        // process's memory into it and reports how much it copied.
        let ok = unsafe {
            ReadProcessMemory(
                self.handle.raw(),
                address as *const c_void,
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                &mut done,
            )
        };
        if ok == 0 || done != buffer.len() {
            return Err(Error::os(
                self.pid,
                "ReadProcessMemory",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Reads `len` bytes at `address` into a new vector.
    pub fn read_vec(&self, address: u64, len: usize) -> Result<Vec<u8>, Error> {
        let mut buffer = vec![0u8; len];
        self.read(address, &mut buffer)?;
        Ok(buffer)
    }

    /// Writes `bytes` at `address` as they are (the pages must be writable).
    pub fn write(&self, address: u64, bytes: &[u8]) -> Result<(), Error> {
        let mut done = 0usize;
        // SAFETY: `bytes` is live for its length; the OS copies it into the other process.
        let ok = unsafe {
            WriteProcessMemory(
                self.handle.raw(),
                address as *const c_void,
                bytes.as_ptr().cast(),
                bytes.len(),
                &mut done,
            )
        };
        if ok == 0 || done != bytes.len() {
            return Err(Error::os(
                self.pid,
                "WriteProcessMemory",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Writes bytes into code while every thread is suspended: the pages are made read-write
    /// (not executable) for the write and given their protection back, then the instruction
    /// cache is flushed. No page is ever writable and executable at once.
    pub fn write_code(&self, address: u64, bytes: &[u8]) -> Result<(), Error> {
        let old = self.protect(address, bytes.len() as u64, PAGE_READWRITE)?;
        let written = self.write(address, bytes);
        let restored = self.protect(address, bytes.len() as u64, old);
        written?;
        restored?;
        // SAFETY: plain values; the OS flushes the range in the other process.
        unsafe {
            FlushInstructionCache(self.handle.raw(), address as *const c_void, bytes.len());
        }
        Ok(())
    }

    /// Sets the protection of the pages of `[address, address+len)`; returns the old one.
    pub fn protect(
        &self,
        address: u64,
        len: u64,
        protection: PAGE_PROTECTION_FLAGS,
    ) -> Result<PAGE_PROTECTION_FLAGS, Error> {
        let mut old: PAGE_PROTECTION_FLAGS = 0;
        // SAFETY: `old` is a live u32 the OS writes; the range is in the other process.
        let ok = unsafe {
            VirtualProtectEx(
                self.handle.raw(),
                address as *const c_void,
                len as usize,
                protection,
                &mut old,
            )
        };
        if ok == 0 {
            return Err(Error::os(
                self.pid,
                "VirtualProtectEx",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(old)
    }

    /// The region of the address space that holds `address`, `None` past the end.
    pub fn query(&self, address: u64) -> Option<MEMORY_BASIC_INFORMATION> {
        // SAFETY: MEMORY_BASIC_INFORMATION is plain data; all zeroes is a valid value.
        let mut info: MEMORY_BASIC_INFORMATION = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is live and as large as the length passed.
        let written = unsafe {
            VirtualQueryEx(
                self.handle.raw(),
                address as *const c_void,
                &mut info,
                std::mem::size_of::<MEMORY_BASIC_INFORMATION>(),
            )
        };
        (written != 0).then_some(info)
    }

    /// `(base, end)` of every private, committed allocation of the process whose region at
    /// its base has protection `protect` and whose first 16 bytes are `magic`: how the
    /// applier finds its own markers (execute-read) and suspension records (read-write).
    pub fn tagged_allocations(
        &self,
        protect: PAGE_PROTECTION_FLAGS,
        magic: &[u8; 16],
    ) -> Vec<(u64, u64)> {
        let mut found = Vec::new();
        let mut address = 0u64;
        for _ in 0..1_000_000 {
            let Some(region) = self.query(address) else {
                break;
            };
            let base = region.BaseAddress as u64;
            let end = base.saturating_add(region.RegionSize as u64);
            if end <= address {
                break;
            }
            address = end;
            if region.State != MEM_COMMIT
                || region.Type != MEM_PRIVATE
                || region.Protect != protect
                || region.AllocationBase as u64 != base
            {
                continue;
            }
            let mut head = [0u8; 16];
            if self.read(base, &mut head).is_ok() && &head == magic {
                found.push((base, end));
            }
        }
        found
    }
}

/// Whether process `pid` still runs.
pub fn exists(pid: i32) -> bool {
    // SAFETY: plain values in, a handle or null out.
    let raw = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid as u32) };
    let Some(handle) = Handle::new(raw) else {
        return false;
    };
    let mut code = 0u32;
    // SAFETY: `code` is a live u32 the OS writes.
    let ok = unsafe { GetExitCodeProcess(handle.raw(), &mut code) };
    ok != 0 && code == STILL_ACTIVE as u32
}

/// Changes to the process's address space, made from the applier's side.
pub struct Staging<'p> {
    process: &'p Process,
}

impl<'p> Staging<'p> {
    pub fn begin(process: &'p Process) -> Result<Staging<'p>, Error> {
        Ok(Staging { process })
    }

    /// Reserves and commits `len` read-write bytes within rel32 reach of `image`, trying the
    /// free regions nearest to the image first; `None` when none could be taken.
    pub fn allocate_near(&mut self, image: &MappedImage, len: u64) -> Result<Option<u64>, Error> {
        for candidate in self.free_candidates(image, len).into_iter().take(32) {
            // SAFETY: plain values; the OS reserves memory in the other process or fails.
            let address = unsafe {
                VirtualAllocEx(
                    self.process.handle.raw(),
                    candidate as *const c_void,
                    len as usize,
                    MEM_RESERVE | MEM_COMMIT,
                    PAGE_READWRITE,
                )
            };
            if address.is_null() {
                continue;
            }
            if address as u64 != candidate {
                let _ = self.free(address as u64, len);
                continue;
            }
            return Ok(Some(candidate));
        }
        Ok(None)
    }

    /// Start addresses of free regions that keep `[p, p+len)` within reach of every byte of
    /// the image, nearest first.
    fn free_candidates(&self, image: &MappedImage, len: u64) -> Vec<u64> {
        let len = len.div_ceil(GRANULARITY) * GRANULARITY;
        let lowest = image.end.saturating_sub(REACH).max(GRANULARITY);
        let highest = image.start.saturating_add(REACH).saturating_sub(len);
        let mut candidates = Vec::new();
        let mut address = lowest & !(GRANULARITY - 1);
        // Bounded walk: at most this many regions are looked at.
        for _ in 0..100_000 {
            if address > highest || address >= USER_END {
                break;
            }
            let Some(region) = self.process.query(address) else {
                break;
            };
            let base = region.BaseAddress as u64;
            let end = base.saturating_add(region.RegionSize as u64);
            if end <= address {
                break;
            }
            if region.State == MEM_FREE {
                // Inside the free region, the aligned start nearest the image.
                let first = base.max(lowest).next_multiple_of(GRANULARITY);
                let last = end.saturating_sub(len).min(highest) & !(GRANULARITY - 1);
                if first <= last && first.saturating_add(len) <= end {
                    let pick = if last < image.start { last } else { first };
                    candidates.push(pick);
                }
            }
            address = end;
        }
        candidates.sort_by_key(|&p| p.abs_diff(image.start));
        candidates
    }

    /// Writes into the (still read-write) staged memory.
    pub fn write(&mut self, address: u64, bytes: &[u8]) -> Result<(), Error> {
        self.process.write(address, bytes)
    }

    /// Makes `[address, address+len)` execute-read, then flushes the instruction cache.
    pub fn protect_read_execute(&mut self, address: u64, len: u64) -> Result<(), Error> {
        self.process.protect(address, len, PAGE_EXECUTE_READ)?;
        // SAFETY: plain values; the OS flushes the range in the other process.
        unsafe {
            FlushInstructionCache(
                self.process.handle.raw(),
                address as *const c_void,
                len as usize,
            );
        }
        Ok(())
    }

    /// Registers the payload's function table (`count` RUNTIME_FUNCTION entries at `table`,
    /// relative to `base`) with the process's own `RtlAddFunctionTable`, called on a thread
    /// created in the process, so that exceptions and stack walks unwind through new code.
    pub fn register_unwind(
        &mut self,
        _target: &str,
        base: u64,
        table: u64,
        count: u64,
    ) -> Result<(), Error> {
        let function = super::remote::ntdll_export(self.process, "RtlAddFunctionTable")?;
        let added = super::remote::call(
            self.process,
            "RtlAddFunctionTable",
            function,
            [table, count, base],
        )?;
        if !added {
            return Err(Error::RemoteCall {
                pid: self.process.pid(),
                function: "RtlAddFunctionTable",
                what: "it returned FALSE",
            });
        }
        Ok(())
    }

    /// Deletes a function table `register_unwind` added.
    pub fn unregister_unwind(&mut self, table: u64) -> Result<(), Error> {
        let function = super::remote::ntdll_export(self.process, "RtlDeleteFunctionTable")?;
        super::remote::call(
            self.process,
            "RtlDeleteFunctionTable",
            function,
            [table, 0, 0],
        )?;
        Ok(())
    }

    /// Releases a reservation this applier made (the whole of it, from its base).
    pub fn free(&mut self, address: u64, _len: u64) -> Result<(), Error> {
        // SAFETY: plain values; the OS releases the reservation in the other process.
        let ok = unsafe {
            VirtualFreeEx(
                self.process.handle.raw(),
                address as *mut c_void,
                0,
                MEM_RELEASE,
            )
        };
        if ok == 0 {
            return Err(Error::os(
                self.process.pid,
                "VirtualFreeEx",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }
}

/// The applier thread's priority before `raise_priority`.
#[derive(Debug, Clone, Copy)]
pub struct Priority(i32);

/// Raises the calling thread to time-critical priority for a stop window, so that the
/// suspended process waits on the applier as little as possible; `None` when not permitted.
pub fn raise_priority() -> Option<Priority> {
    // SAFETY: the pseudo-handle of the calling thread needs no closing.
    let thread = unsafe { GetCurrentThread() };
    // SAFETY: plain values.
    let previous = unsafe { GetThreadPriority(thread) };
    // SAFETY: plain values.
    let ok = unsafe { SetThreadPriority(thread, THREAD_PRIORITY_TIME_CRITICAL) };
    (ok != 0).then_some(Priority(previous))
}

/// Gives the calling thread back the priority `raise_priority` replaced.
pub fn restore_priority(previous: Priority) {
    // SAFETY: plain values. A failure leaves the applier at a higher priority, which ends
    // with the command.
    unsafe {
        SetThreadPriority(GetCurrentThread(), previous.0);
    }
}
