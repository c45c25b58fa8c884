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

/// Sorts `ranges` by start and merges overlapping ones (keeping the first one's function for
/// the message): the form [`hit`] and [`busy_thread`] search by bisection. Done once per
/// apply, outside the stop window; empty ranges are dropped.
pub fn prepare(mut ranges: Vec<ProtectedRange>) -> Vec<ProtectedRange> {
    ranges.retain(|r| r.start < r.end);
    ranges.sort_by_key(|r| (r.start, r.end));
    let mut merged: Vec<ProtectedRange> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if range.start < last.end => last.end = last.end.max(range.end),
            _ => merged.push(range),
        }
    }
    merged
}

/// The range `value` falls in, if any, in ranges made by [`prepare`] (sorted, disjoint).
pub fn hit(ranges: &[ProtectedRange], value: u64) -> Option<&ProtectedRange> {
    let index = ranges.partition_point(|r| r.start <= value);
    ranges
        .get(index.checked_sub(1)?)
        .filter(|range| value < range.end)
}

/// Checks one thread: its instruction pointer, then every aligned word of `stack` (read from
/// the stack pointer up), against ranges made by [`prepare`]. Most words (stack addresses,
/// counters, pointers into data) lie outside the span of all ranges and cost one compare.
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
    let (Some(first), Some(last)) = (ranges.first(), ranges.last()) else {
        return None;
    };
    let span = first.start..last.end;
    stack.chunks_exact(8).find_map(|word| {
        let mut value = [0u8; 8];
        value.copy_from_slice(word);
        let value = u64::from_le_bytes(value);
        if !span.contains(&value) {
            return None;
        }
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

    fn range(start: u64, end: u64, function: &str) -> ProtectedRange {
        ProtectedRange {
            start,
            end,
            function: function.into(),
        }
    }

    #[test]
    fn prepared_ranges_find_exactly_what_a_linear_search_finds() {
        // Overlapping, nested, adjacent, empty and unsorted ranges, as payload code, its
        // functions and padding redirects can give.
        let raw = vec![
            range(0x5000, 0x5100, "payload"),
            range(0x1000, 0x1010, "f"),
            range(0x5040, 0x5080, "inside payload"),
            range(0x100b, 0x1020, "padding of g"),
            range(0x1020, 0x1030, "g"),
            range(0x3000, 0x3000, "empty"),
            range(0x0fff, 0x1001, "h"),
        ];
        let prepared = prepare(raw.clone());
        assert!(prepared.windows(2).all(|w| w[0].end <= w[1].start));
        for value in 0xff0..0x5110 {
            let linear = raw.iter().any(|r| r.start <= value && value < r.end);
            assert_eq!(hit(&prepared, value).is_some(), linear, "{value:#x}");
        }
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
