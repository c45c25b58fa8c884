//! The activeness rule both backends enforce while every thread is stopped: no thread may be
//! executing in, or be due to return into, a range the patch replaces or removes. A backend
//! reads each thread's instruction pointer and the words of its stack from the stack pointer
//! up (at most `STACK_SCAN_LIMIT` bytes); every aligned 8-byte value that falls inside a
//! protected range counts as a return address. A stale value can only make the check refuse
//! more often, never less.

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

/// The range `value` falls in, if any.
pub fn hit(ranges: &[ProtectedRange], value: u64) -> Option<&ProtectedRange> {
    ranges.iter().find(|r| r.start <= value && value < r.end)
}

/// Checks one thread: its instruction pointer, then every aligned word of `stack` (read from
/// the stack pointer up).
pub fn busy_thread(
    ranges: &[ProtectedRange],
    tid: i32,
    instruction_pointer: u64,
    stack: &[u8],
) -> Option<BusyThread> {
    let found = |range: &ProtectedRange, address| BusyThread {
        tid,
        function: range.function.clone(),
        address,
    };
    if let Some(range) = hit(ranges, instruction_pointer) {
        return Some(found(range, instruction_pointer));
    }
    stack.chunks_exact(8).find_map(|word| {
        let mut value = [0u8; 8];
        value.copy_from_slice(word);
        let value = u64::from_le_bytes(value);
        hit(ranges, value).map(|range| found(range, value))
    })
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

    #[test]
    fn a_return_address_on_the_stack_makes_the_thread_busy() {
        let ranges = [ProtectedRange {
            start: 0x1000,
            end: 0x1010,
            function: "f".into(),
        }];
        let mut stack = vec![0u8; 32];
        assert_eq!(busy_thread(&ranges, 7, 0x2000, &stack), None);
        stack[16..24].copy_from_slice(&0x1008u64.to_le_bytes());
        let busy = busy_thread(&ranges, 7, 0x2000, &stack).unwrap();
        assert_eq!((busy.tid, busy.address), (7, 0x1008));
        assert_eq!(
            busy_thread(&ranges, 7, 0x1000, &[]).unwrap().address,
            0x1000
        );
    }
}
