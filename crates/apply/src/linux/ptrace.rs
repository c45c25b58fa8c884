//! Thin, safe wrappers over the ptrace, waitpid and scheduler calls the applier makes. Each
//! unsafe call sits alone in a small function with the reason it is sound; everything above
//! this module is safe code.

use std::io;

/// The registers of a stopped thread (x86-64 `user_regs_struct`).
pub type Registers = libc::user_regs_struct;

fn check(result: libc::c_long) -> io::Result<()> {
    if result == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `PTRACE_SEIZE`: attach to `tid` without stopping it or sending it a signal.
pub fn seize(tid: i32) -> io::Result<()> {
    // SAFETY: PTRACE_SEIZE takes no pointers (addr and data are zero); the kernel checks the
    // permission and reports failure through errno.
    check(unsafe { libc::ptrace(libc::PTRACE_SEIZE, tid, 0usize, 0usize) })
}

/// `PTRACE_INTERRUPT`: ask a seized thread to stop.
pub fn interrupt(tid: i32) -> io::Result<()> {
    // SAFETY: no pointers are passed; an unseized or vanished thread yields an errno.
    check(unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0usize, 0usize) })
}

/// `PTRACE_DETACH`, delivering `signal` (0 for none) on resumption.
pub fn detach(tid: i32, signal: i32) -> io::Result<()> {
    // SAFETY: `data` is a signal number passed by value, not a pointer.
    check(unsafe { libc::ptrace(libc::PTRACE_DETACH, tid, 0usize, signal as usize) })
}

/// `PTRACE_SINGLESTEP` with no signal.
pub fn single_step(tid: i32) -> io::Result<()> {
    // SAFETY: no pointers are passed.
    check(unsafe { libc::ptrace(libc::PTRACE_SINGLESTEP, tid, 0usize, 0usize) })
}

/// `PTRACE_GETREGS` of a stopped thread.
pub fn registers(tid: i32) -> io::Result<Registers> {
    // SAFETY: user_regs_struct is plain integers, so the all-zero value is valid.
    let mut regs: Registers = unsafe { std::mem::zeroed() };
    // SAFETY: `data` points at a live, writable user_regs_struct, exactly what PTRACE_GETREGS
    // fills on x86-64.
    check(unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGS,
            tid,
            0usize,
            &mut regs as *mut Registers,
        )
    })?;
    Ok(regs)
}

/// `PTRACE_SETREGS` of a stopped thread.
pub fn set_registers(tid: i32, regs: &Registers) -> io::Result<()> {
    // SAFETY: `data` points at a live user_regs_struct that the kernel only reads.
    check(unsafe { libc::ptrace(libc::PTRACE_SETREGS, tid, 0usize, regs as *const Registers) })
}

/// How a waited-for thread changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// A ptrace event stop (our `PTRACE_INTERRUPT`, or a group stop).
    Event,
    /// A signal-delivery stop: the signal must be passed on at detach.
    Signal(i32),
    /// The thread exited or was killed.
    Exited,
}

/// Waits for `tid` (a thread of a traced process) to stop or exit.
///
/// Polls instead of blocking: when a traced process dies, the kernel reports its leader only
/// after every other thread has been reaped, and those are ours to reap, so a blocking wait on
/// the leader (or on a thread already a zombie) would never return. A thread that is a zombie
/// or gone counts as exited.
pub fn wait(tid: i32) -> io::Result<Stop> {
    let mut status: libc::c_int = 0;
    let mut idle = 0u32;
    loop {
        // SAFETY: `status` is a live c_int the kernel writes; __WALL waits for threads that
        // are not the leader; WNOHANG returns 0 at once when nothing is to report.
        let result = unsafe { libc::waitpid(tid, &mut status, libc::__WALL | libc::WNOHANG) };
        if result == -1 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            if error.raw_os_error() == Some(libc::ECHILD) {
                return Ok(Stop::Exited);
            }
            return Err(error);
        }
        if result != 0 {
            break;
        }
        if thread_is_dead(tid) {
            return Ok(Stop::Exited);
        }
        // A stop normally arrives within microseconds: yield first, then sleep a little longer
        // each round (at most 1 ms), so a slow machine does not spin.
        idle = idle.saturating_add(1);
        if idle < 64 {
            std::thread::yield_now();
        } else {
            let micros = u64::from(idle.min(1_000));
            std::thread::sleep(std::time::Duration::from_micros(micros));
        }
    }
    if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
        return Ok(Stop::Exited);
    }
    if libc::WIFSTOPPED(status) {
        if status >> 16 == libc::PTRACE_EVENT_STOP {
            return Ok(Stop::Event);
        }
        return Ok(Stop::Signal(libc::WSTOPSIG(status)));
    }
    Ok(Stop::Event)
}

/// Whether thread `tid` has exited: no longer in `/proc`, or a zombie (`Z`) or dead (`X`).
fn thread_is_dead(tid: i32) -> bool {
    super::process::stat_state(&format!("/proc/{tid}/stat"))
        .is_none_or(|state| matches!(state, 'Z' | 'X' | 'x'))
}

/// The calling thread's scheduling policy and priority.
#[derive(Debug, Clone, Copy)]
pub struct Scheduling {
    policy: i32,
    priority: i32,
}

/// Raises the calling thread to `SCHED_FIFO` (priority 1 above normal threads) and returns
/// the previous setting, or `None` when not permitted.
pub fn raise_to_fifo() -> Option<Scheduling> {
    // SAFETY: sched_getscheduler takes no pointers.
    let policy = unsafe { libc::sched_getscheduler(0) };
    if policy == -1 {
        return None;
    }
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: `param` is a live sched_param the kernel only reads.
    let result = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    (result == 0).then_some(Scheduling {
        policy,
        priority: 0,
    })
}

/// Returns the calling thread to the scheduling `raise_to_fifo` replaced.
pub fn restore_scheduling(previous: Scheduling) {
    let param = libc::sched_param {
        sched_priority: previous.priority,
    };
    // SAFETY: `param` is a live sched_param the kernel only reads. A failure leaves the
    // tracer at a higher priority, which ends with the command.
    unsafe {
        libc::sched_setscheduler(0, previous.policy, &param);
    }
}

/// The id of the calling process.
pub fn own_pid() -> i32 {
    std::process::id() as i32
}
