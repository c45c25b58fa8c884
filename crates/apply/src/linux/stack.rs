//! The activeness check: while every thread is stopped, no thread may be executing in, or be
//! due to return into, a range the patch replaces or removes. Each thread's instruction pointer
//! is checked, and its stack is scanned conservatively: every aligned 8-byte value from the
//! stack pointer to the end of its stack mapping (at most `STACK_SCAN_LIMIT` bytes) that falls
//! inside a protected range counts as a return address. A stale value can only make the check
//! refuse more often, never less.

use super::maps::Mapping;
use super::mem::ProcessMemory;
use super::ptrace;
use super::threads::Stopped;
use crate::error::Error;

/// How much of each thread's stack is scanned.
pub const STACK_SCAN_LIMIT: u64 = 256 * 1024;

/// A range of the process's addresses that no thread may be in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedRange {
    pub start: u64,
    pub end: u64,
    /// The function the range belongs to, for the refusal message.
    pub function: String,
}

/// A thread found inside a protected range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusyThread {
    pub tid: i32,
    pub function: String,
    /// The instruction pointer or the stack value that fell in the range.
    pub address: u64,
}

fn hit(ranges: &[ProtectedRange], value: u64) -> Option<&ProtectedRange> {
    ranges.iter().find(|r| r.start <= value && value < r.end)
}

/// Checks every stopped thread; the first busy one found is returned.
pub fn find_busy(
    stopped: &Stopped,
    maps: &[Mapping],
    memory: &ProcessMemory,
    ranges: &[ProtectedRange],
) -> Result<Option<BusyThread>, Error> {
    if ranges.is_empty() {
        return Ok(None);
    }
    for thread in &stopped.threads {
        let regs = match ptrace::registers(thread.tid) {
            Ok(regs) => regs,
            // A thread killed while stopped (the process is exiting) has no stack to check.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => continue,
            Err(e) => return Err(Error::os(stopped.pid, "PTRACE_GETREGS", e)),
        };
        if let Some(range) = hit(ranges, regs.rip) {
            return Ok(Some(BusyThread {
                tid: thread.tid,
                function: range.function.clone(),
                address: regs.rip,
            }));
        }
        let stack_pointer = regs.rsp & !7;
        // A thread started after `maps` was read has a stack it does not list: read it again.
        let stack = match maps.iter().find(|m| m.contains(stack_pointer)) {
            Some(stack) => stack.clone(),
            None => {
                let fresh = super::maps::read(stopped.pid)?;
                match fresh.into_iter().find(|m| m.contains(stack_pointer)) {
                    Some(stack) => stack,
                    None => continue,
                }
            }
        };
        let len = (stack.end - stack_pointer).min(STACK_SCAN_LIMIT) as usize;
        let bytes = memory.read_vec(stack_pointer, len)?;
        for word in bytes.chunks_exact(8) {
            let mut value = [0u8; 8];
            value.copy_from_slice(word);
            let value = u64::from_le_bytes(value);
            if let Some(range) = hit(ranges, value) {
                return Ok(Some(BusyThread {
                    tid: thread.tid,
                    function: range.function.clone(),
                    address: value,
                }));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_half_open() {
        let ranges = [ProtectedRange {
            start: 0x1000,
            end: 0x1010,
            function: "f".into(),
        }];
        assert!(hit(&ranges, 0x1000).is_some());
        assert!(hit(&ranges, 0x100f).is_some());
        assert!(hit(&ranges, 0x1010).is_none());
        assert!(hit(&ranges, 0xfff).is_none());
    }
}
