//! Stopping the threads of a process with `PTRACE_SEIZE` + `PTRACE_INTERRUPT` and releasing
//! them. The set is re-listed until no new thread appears (a thread created by a thread that
//! was not yet stopped is caught on the next pass); a thread that exits meanwhile is skipped.
//! `Stopped` detaches every thread when dropped, so every exit path lets the process run.

use super::maps;
use super::process::Process;
use super::ptrace::{self, Stop};
use crate::error::Error;
use crate::stack::{self, BusyThread, ProtectedRange, STACK_SCAN_LIMIT};
use std::collections::BTreeSet;
use std::time::Instant;

/// One stopped thread.
#[derive(Debug, Clone, Copy)]
pub struct StoppedThread {
    pub tid: i32,
    /// A signal whose delivery the stop intercepted; it is handed back at detach.
    pub pending_signal: i32,
}

/// Threads of one process held stopped by this tracer.
#[derive(Debug)]
pub struct Stopped {
    pub pid: i32,
    pub threads: Vec<StoppedThread>,
    /// When the first thread was asked to stop.
    pub since: Instant,
}

/// The thread ids listed in `/proc/PID/task`, skipping zombies (an exited leader can not stop).
/// Only threads not in `known` are checked for being zombies: a known thread was live when it
/// was seized, and a thread that died since is handled where it is waited for.
fn list_threads(pid: i32, known: &BTreeSet<i32>) -> Result<BTreeSet<i32>, Error> {
    let entries = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|source| Error::os(pid, "list threads", source))?;
    let mut tids = BTreeSet::new();
    for entry in entries.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let zombie = !known.contains(&tid)
            && super::process::stat_state(&format!("/proc/{pid}/task/{tid}/stat"))
                .is_none_or(|state| state == 'Z');
        if !zombie {
            tids.insert(tid);
        }
    }
    Ok(tids)
}

impl Stopped {
    /// Stops every thread of the process.
    ///
    /// The threads are listed and seized (which does not stop them) before the window opens;
    /// the window starts at the first `PTRACE_INTERRUPT`. Then the set is listed again until
    /// no new thread appears, since a thread may start before its creator stopped.
    pub fn all(process: &Process) -> Result<Stopped, Error> {
        let pid = process.pid();
        let mut seen = BTreeSet::new();
        let (mut new, mut failure) = seize_new(pid, &mut seen)?;
        let mut stopped = Stopped {
            pid,
            threads: Vec::new(),
            since: Instant::now(),
        };
        loop {
            // Ask all new threads to stop before waiting for any, so they stop together.
            // On an error, the threads already seized are still stopped and waited for, so
            // that the guard detaches them.
            let mut asked = Vec::new();
            for tid in new {
                match stopped.interrupt(tid) {
                    Ok(true) => asked.push(tid),
                    Ok(false) => {}
                    Err(error) => {
                        failure.get_or_insert(error);
                    }
                }
            }
            for tid in asked {
                if let Err(error) = stopped.wait_for(tid) {
                    failure.get_or_insert(error);
                }
            }
            if let Some(error) = failure {
                return Err(error);
            }
            (new, failure) = seize_new(pid, &mut seen)?;
            if new.is_empty() && failure.is_none() {
                break;
            }
        }
        if stopped.threads.is_empty() {
            return Err(Error::ProcessGone { pid });
        }
        Ok(stopped)
    }

    /// Stops one thread of `pid` (the leader when it can), for injecting system calls while
    /// the others keep running.
    pub fn one(pid: i32) -> Result<Stopped, Error> {
        let mut stopped = Stopped {
            pid,
            threads: Vec::new(),
            since: Instant::now(),
        };
        let listed = list_threads(pid, &BTreeSet::new())?;
        let ordered = listed
            .contains(&pid)
            .then_some(pid)
            .into_iter()
            .chain(listed.iter().copied().filter(|&t| t != pid));
        for tid in ordered {
            if stopped.seize_and_interrupt(tid)? {
                stopped.wait_for(tid)?;
                if !stopped.threads.is_empty() {
                    return Ok(stopped);
                }
            }
        }
        Err(Error::ProcessGone { pid })
    }

    /// Seizes and interrupts one thread; false when it vanished first.
    fn seize_and_interrupt(&mut self, tid: i32) -> Result<bool, Error> {
        Ok(seize(self.pid, tid)? && self.interrupt(tid)?)
    }

    /// Asks a seized thread to stop; false when it vanished first.
    fn interrupt(&mut self, tid: i32) -> Result<bool, Error> {
        if let Err(error) = ptrace::interrupt(tid) {
            if error.raw_os_error() == Some(libc::ESRCH) {
                return Ok(false);
            }
            return Err(Error::os(self.pid, "PTRACE_INTERRUPT", error));
        }
        Ok(true)
    }

    fn wait_for(&mut self, tid: i32) -> Result<(), Error> {
        match ptrace::wait(tid).map_err(|e| Error::os(self.pid, "waitpid", e))? {
            Stop::Exited => {}
            Stop::Event => self.threads.push(StoppedThread {
                tid,
                pending_signal: 0,
            }),
            Stop::Signal(signal) => self.threads.push(StoppedThread {
                tid,
                pending_signal: signal,
            }),
        }
        Ok(())
    }

    /// The first stopped thread, used for injected system calls.
    pub fn first(&mut self) -> &mut StoppedThread {
        // `all` and `one` never return an empty set.
        &mut self.threads[0]
    }

    /// How many threads are stopped.
    pub fn thread_count(&self) -> usize {
        self.threads.len()
    }

    /// Checks every stopped thread against `ranges` (`crate::stack`); the first busy one found
    /// is returned.
    pub fn find_busy(
        &self,
        process: &Process,
        ranges: &[ProtectedRange],
    ) -> Result<Option<BusyThread>, Error> {
        if ranges.is_empty() {
            return Ok(None);
        }
        for thread in &self.threads {
            let regs = match ptrace::registers(thread.tid) {
                Ok(regs) => regs,
                // A thread killed while stopped (the process is exiting) has no stack to check.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => continue,
                Err(e) => return Err(Error::os(self.pid, "PTRACE_GETREGS", e)),
            };
            let stack_pointer = regs.rsp & !7;
            // A thread started after the maps were read has a stack they do not list.
            let stack = match process.maps.iter().find(|m| m.contains(stack_pointer)) {
                Some(stack) => Some(stack.clone()),
                None => maps::read(self.pid)?
                    .into_iter()
                    .find(|m| m.contains(stack_pointer)),
            };
            let words = match stack {
                Some(stack) => {
                    let len = (stack.end - stack_pointer).min(STACK_SCAN_LIMIT) as usize;
                    process.read_vec(stack_pointer, len)?
                }
                None => Vec::new(),
            };
            if let Some(busy) = stack::busy_thread(ranges, thread.tid, regs.rip, &words) {
                return Ok(Some(busy));
            }
        }
        Ok(None)
    }

    /// Detaches every thread and returns when the last one was let go.
    pub fn release(mut self) -> Instant {
        self.detach_all();
        Instant::now()
    }

    fn detach_all(&mut self) {
        for thread in self.threads.drain(..) {
            // A thread that exited meanwhile (ESRCH) needs nothing more.
            let _ = ptrace::detach(thread.tid, thread.pending_signal);
        }
    }
}

/// Lists the threads of `pid` and seizes (without stopping) those not in `seen`, adding them
/// to it. Returns the seized ones, and the error that ended the seizing early if one did: the
/// caller must still stop and detach the seized threads.
fn seize_new(pid: i32, seen: &mut BTreeSet<i32>) -> Result<(Vec<i32>, Option<Error>), Error> {
    let listed = list_threads(pid, seen)?;
    let mut seized = Vec::new();
    for tid in listed.difference(seen).copied().collect::<Vec<_>>() {
        seen.insert(tid);
        match seize(pid, tid) {
            Ok(true) => seized.push(tid),
            Ok(false) => {}
            Err(error) => return Ok((seized, Some(error))),
        }
    }
    Ok((seized, None))
}

/// Seizes `tid` of `pid` without stopping it; false when it vanished first.
fn seize(pid: i32, tid: i32) -> Result<bool, Error> {
    match ptrace::seize(tid) {
        Ok(()) => Ok(true),
        Err(error) if error.raw_os_error() == Some(libc::ESRCH) => Ok(false),
        Err(error) => Err(Error::os(pid, "PTRACE_SEIZE", error)),
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        self.detach_all();
    }
}
