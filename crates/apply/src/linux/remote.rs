//! System calls made by a stopped thread of the target on the applier's behalf, the way libcare
//! does it: save the thread's registers, point its instruction pointer at a `syscall`
//! instruction (0f 05) already present in an executable mapping of the process, load the
//! number and arguments, single-step, read the result, restore the registers. The thread
//! resumes exactly where it was, and an interrupted system call of its own is restarted by
//! the kernel as usual.

use super::maps::Mapping;
use super::mem::ProcessMemory;
use super::ptrace::{self, Stop};
use super::threads::StoppedThread;
use crate::error::Error;

pub const SYS_MMAP: u64 = libc::SYS_mmap as u64;
pub const SYS_MPROTECT: u64 = libc::SYS_mprotect as u64;
pub const SYS_MUNMAP: u64 = libc::SYS_munmap as u64;

/// How many bytes of one mapping are searched for a `syscall` instruction.
const SEARCH_LIMIT: u64 = 8 << 20;

/// Finds the address of a `syscall` instruction in an executable mapping, trying the vDSO
/// first (small, always mapped) and then the other executable mappings.
pub fn find_syscall_instruction(memory: &ProcessMemory, maps: &[Mapping]) -> Result<u64, Error> {
    let mut executable: Vec<&Mapping> = maps.iter().filter(|m| m.execute && m.read).collect();
    executable.sort_by_key(|m| m.path.as_deref() != Some("[vdso]"));
    for mapping in executable {
        let len = (mapping.end - mapping.start).min(SEARCH_LIMIT);
        let mut at = mapping.start;
        let end = mapping.start + len;
        while at < end {
            let chunk = (end - at).min(1 << 16) as usize;
            let Ok(bytes) = memory.read_vec(at, chunk) else {
                break;
            };
            if let Some(index) = bytes.windows(2).position(|w| w == [0x0f, 0x05]) {
                return Ok(at + index as u64);
            }
            // Overlap by one byte so that a pair split across chunks is found.
            at += chunk.saturating_sub(1).max(1) as u64;
        }
    }
    Err(Error::NoSyscallInstruction { pid: memory.pid() })
}

/// Runs system call `number` with `args` in the stopped `thread` and returns the kernel's
/// result (a negative errno on failure).
pub fn syscall(
    pid: i32,
    thread: &mut StoppedThread,
    instruction: u64,
    name: &'static str,
    number: u64,
    args: [u64; 6],
) -> Result<i64, Error> {
    let tid = thread.tid;
    let saved = ptrace::registers(tid).map_err(|e| Error::os(pid, "PTRACE_GETREGS", e))?;
    let mut regs = saved;
    regs.rax = number;
    regs.rdi = args[0];
    regs.rsi = args[1];
    regs.rdx = args[2];
    regs.r10 = args[3];
    regs.r8 = args[4];
    regs.r9 = args[5];
    regs.rip = instruction;
    // orig_rax = -1 tells the kernel the thread is not inside a system call, so that it does not
    // apply restart logic for the one the thread was interrupted in to our injected call.
    regs.orig_rax = u64::MAX;
    ptrace::set_registers(tid, &regs).map_err(|e| Error::os(pid, "PTRACE_SETREGS", e))?;
    let result = step_over_syscall(pid, thread, instruction, name);
    // The registers are restored whatever happened, so the thread resumes where it was.
    let restored =
        ptrace::set_registers(tid, &saved).map_err(|e| Error::os(pid, "PTRACE_SETREGS", e));
    let value = result?;
    restored?;
    Ok(value)
}

fn step_over_syscall(
    pid: i32,
    thread: &mut StoppedThread,
    instruction: u64,
    name: &'static str,
) -> Result<i64, Error> {
    let tid = thread.tid;
    // A pending signal can stop the thread before the instruction runs; it is kept for
    // delivery at detach and the step is retried, a bounded number of times.
    for _ in 0..16 {
        ptrace::single_step(tid).map_err(|e| Error::os(pid, "PTRACE_SINGLESTEP", e))?;
        match ptrace::wait(tid).map_err(|e| Error::os(pid, "waitpid", e))? {
            Stop::Exited => return Err(Error::ProcessGone { pid }),
            Stop::Signal(signal) if signal == libc::SIGTRAP => {}
            Stop::Signal(signal) => {
                thread.pending_signal = signal;
            }
            Stop::Event => {}
        }
        let regs = ptrace::registers(tid).map_err(|e| Error::os(pid, "PTRACE_GETREGS", e))?;
        if regs.rip == instruction + 2 {
            return Ok(regs.rax as i64);
        }
        if regs.rip != instruction {
            return Err(Error::RemoteSyscallLost {
                tid,
                syscall: name,
                rip: regs.rip,
            });
        }
    }
    Err(Error::RemoteSyscallLost {
        tid,
        syscall: name,
        rip: instruction,
    })
}

/// Maps `len` bytes of anonymous read-write memory at exactly `address` (never replacing an
/// existing mapping); `Ok(None)` when the range is taken.
pub fn mmap_fixed(
    pid: i32,
    thread: &mut StoppedThread,
    instruction: u64,
    address: u64,
    len: u64,
) -> Result<Option<u64>, Error> {
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64;
    let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let result = syscall(
        pid,
        thread,
        instruction,
        "mmap",
        SYS_MMAP,
        [address, len, prot, flags, u64::MAX, 0],
    )?;
    if result == -i64::from(libc::EEXIST) {
        return Ok(None);
    }
    if (-4095..0).contains(&result) {
        return Err(Error::RemoteSyscall {
            pid,
            syscall: "mmap",
            errno: (-result) as i32,
        });
    }
    let mapped = result as u64;
    if mapped != address {
        // A kernel without MAP_FIXED_NOREPLACE treats the address as a hint: give it back.
        munmap(pid, thread, instruction, mapped, len)?;
        return Ok(None);
    }
    Ok(Some(mapped))
}

/// Sets the protection of `[address, address+len)` to read+execute.
pub fn protect_read_execute(
    pid: i32,
    thread: &mut StoppedThread,
    instruction: u64,
    address: u64,
    len: u64,
) -> Result<(), Error> {
    let prot = (libc::PROT_READ | libc::PROT_EXEC) as u64;
    let result = syscall(
        pid,
        thread,
        instruction,
        "mprotect",
        SYS_MPROTECT,
        [address, len, prot, 0, 0, 0],
    )?;
    errno(pid, "mprotect", result)
}

/// Unmaps `[address, address+len)`.
pub fn munmap(
    pid: i32,
    thread: &mut StoppedThread,
    instruction: u64,
    address: u64,
    len: u64,
) -> Result<(), Error> {
    let result = syscall(
        pid,
        thread,
        instruction,
        "munmap",
        SYS_MUNMAP,
        [address, len, 0, 0, 0, 0],
    )?;
    errno(pid, "munmap", result)
}

fn errno(pid: i32, syscall: &'static str, result: i64) -> Result<(), Error> {
    if result < 0 {
        return Err(Error::RemoteSyscall {
            pid,
            syscall,
            errno: result.saturating_neg() as i32,
        });
    }
    Ok(())
}
