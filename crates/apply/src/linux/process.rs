//! A process as the orchestration sees it on Linux: its memory (`/proc/PID/mem`) and its
//! mappings read once when opened; `Staging` maps, protects and unmaps payload memory through
//! system calls injected into one stopped thread.

use super::maps::{self, Mapping};
use super::mem::ProcessMemory;
use super::remote;
use super::threads::Stopped;
use crate::error::Error;
use crate::identity::MappedImage;

/// An open process.
pub struct Process {
    pub memory: ProcessMemory,
    /// `/proc/PID/maps` as read when the process was opened.
    pub maps: Vec<Mapping>,
}

impl Process {
    /// Opens the memory of `pid` and reads its mappings.
    pub fn open(pid: i32) -> Result<Process, Error> {
        let memory = ProcessMemory::open(pid)?;
        let maps = maps::read(pid)?;
        Ok(Process { memory, maps })
    }

    pub fn pid(&self) -> i32 {
        self.memory.pid()
    }

    pub fn read_vec(&self, address: u64, len: usize) -> Result<Vec<u8>, Error> {
        self.memory.read_vec(address, len)
    }

    /// Writes bytes into code of a stopped process: the kernel forces the write through to
    /// read-only pages, so no page becomes writable.
    pub fn write_code(&self, address: u64, bytes: &[u8]) -> Result<(), Error> {
        self.memory.write(address, bytes)
    }
}

/// Changes to the process's address space, made by one stopped thread of it.
pub struct Staging<'p> {
    process: &'p Process,
    stopped: Stopped,
    instruction: u64,
}

impl<'p> Staging<'p> {
    /// Stops one thread of the process and finds a `syscall` instruction to borrow.
    pub fn begin(process: &'p Process) -> Result<Staging<'p>, Error> {
        let stopped = Stopped::one(process.pid())?;
        let instruction = remote::find_syscall_instruction(&process.memory, &process.maps)?;
        Ok(Staging {
            process,
            stopped,
            instruction,
        })
    }

    /// Maps `len` read-write bytes within rel32 reach of `image`; `None` when no candidate
    /// address was free.
    pub fn allocate_near(&mut self, image: &MappedImage, len: u64) -> Result<Option<u64>, Error> {
        let pid = self.process.pid();
        for candidate in maps::nearby_gaps(&self.process.maps, image.start, image.end, len)
            .into_iter()
            .take(32)
        {
            if let Some(mapped) =
                remote::mmap_fixed(pid, self.stopped.first(), self.instruction, candidate, len)?
            {
                return Ok(Some(mapped));
            }
        }
        Ok(None)
    }

    /// Writes into the (still writable) staged memory.
    pub fn write(&mut self, address: u64, bytes: &[u8]) -> Result<(), Error> {
        self.process.memory.write(address, bytes)
    }

    /// Makes `[address, address+len)` read+execute, never writable and executable at once.
    pub fn protect_read_execute(&mut self, address: u64, len: u64) -> Result<(), Error> {
        remote::protect_read_execute(
            self.process.pid(),
            self.stopped.first(),
            self.instruction,
            address,
            len,
        )
    }

    /// A PE function table has no meaning in an ELF process: refused.
    pub fn register_unwind(
        &mut self,
        target: &str,
        _base: u64,
        _table: u64,
        _count: u64,
    ) -> Result<(), Error> {
        Err(Error::Unsupported {
            target: target.to_owned(),
            what: "a PE function table (unwind) in a target for Linux",
        })
    }

    /// Nothing is ever registered on Linux.
    pub fn unregister_unwind(&mut self, _table: u64) -> Result<(), Error> {
        Ok(())
    }

    /// Unmaps memory this applier mapped.
    pub fn free(&mut self, address: u64, len: u64) -> Result<(), Error> {
        remote::munmap(
            self.process.pid(),
            self.stopped.first(),
            self.instruction,
            address,
            len,
        )
    }
}

/// The state letter (`R`, `S`, `Z`, `X`, ...) of the `/proc/.../stat` file at `path`; `None` when
/// it cannot be read. The state follows the command name, which is in parentheses and may
/// itself contain any byte, so it is found after the last `)`.
pub fn stat_state(path: &str) -> Option<char> {
    let stat = std::fs::read_to_string(path).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.trim_start().chars().next()
}

/// Whether `pid` is alive: listed in /proc and neither a zombie nor dead. An exiting process
/// loses its memory before it is reaped, so a short read of its memory is also its exit.
pub fn process_exists(pid: i32) -> bool {
    stat_state(&format!("/proc/{pid}/stat"))
        .is_some_and(|state| state != 'Z' && state != 'X')
        // An exiting process has released its memory map before it turns zombie.
        && std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|maps| !maps.is_empty())
}

/// Whether `pid` is stopped by job control (`T`: SIGSTOP and the like), as opposed to running,
/// sleeping or stopped by a tracer.
pub fn job_stopped(pid: i32) -> bool {
    stat_state(&format!("/proc/{pid}/stat")) == Some('T')
}

/// Queues SIGSTOP for the whole process. Sent while every thread is in a ptrace stop, it is
/// taken by none of them until they are detached (`crate::patch`'s hold).
pub fn hold(pid: i32) -> Result<(), Error> {
    signal(pid, libc::SIGSTOP, "kill(SIGSTOP)")
}

/// Sends SIGCONT, which discards a queued SIGSTOP (or ends a stop it caused).
pub fn unhold(pid: i32) -> Result<(), Error> {
    signal(pid, libc::SIGCONT, "kill(SIGCONT)")
}

fn signal(pid: i32, signal: libc::c_int, call: &'static str) -> Result<(), Error> {
    // SAFETY: kill has no memory preconditions.
    if unsafe { libc::kill(pid, signal) } == -1 {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::ESRCH) {
            return Err(Error::ProcessGone { pid });
        }
        return Err(Error::os(pid, call, error));
    }
    Ok(())
}
