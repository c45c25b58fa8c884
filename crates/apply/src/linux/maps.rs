//! The memory map of a process as `/proc/PID/maps` states it, and the search for free address
//! ranges near an image (the payload must sit within rel32 reach of the code it redirects).

use crate::error::Error;

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub read: bool,
    pub write: bool,
    pub execute: bool,
    pub offset: u64,
    /// `major:minor` of the device, as the kernel prints it.
    pub device: String,
    pub inode: u64,
    /// The path, or a pseudo name such as `[vdso]`; `None` for anonymous memory.
    pub path: Option<String>,
}

impl Mapping {
    /// Whether the mapping comes from a file (not anonymous memory or a pseudo mapping).
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.path.as_deref().is_some_and(|p| p.starts_with('/'))
    }

    /// Whether `address` lies inside the mapping.
    pub fn contains(&self, address: u64) -> bool {
        self.start <= address && address < self.end
    }

    /// The `/proc/PID/map_files` entry that opens exactly the file this range maps, even when
    /// the path was replaced or deleted since.
    pub fn map_files_path(&self, pid: i32) -> String {
        format!("/proc/{pid}/map_files/{:x}-{:x}", self.start, self.end)
    }
}

/// Parses the text of `/proc/PID/maps`.
pub fn parse(pid: i32, text: &str) -> Result<Vec<Mapping>, Error> {
    text.lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            parse_line(line).ok_or_else(|| Error::MapsLine {
                pid,
                line: line.into(),
            })
        })
        .collect()
}

fn parse_line(line: &str) -> Option<Mapping> {
    // Fields are separated by single spaces up to the inode; the path follows after padding
    // and may itself contain spaces.
    let mut rest = line;
    let mut field = || {
        let (head, tail) = rest.split_once(' ').unwrap_or((rest, ""));
        rest = tail;
        head
    };
    let range = field();
    let perms = field().as_bytes();
    let offset = field();
    let device = field();
    let inode = field();
    let (start, end) = range.split_once('-')?;
    if perms.len() != 4 {
        return None;
    }
    let path = rest.trim_start();
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        read: perms[0] == b'r',
        write: perms[1] == b'w',
        execute: perms[2] == b'x',
        offset: u64::from_str_radix(offset, 16).ok()?,
        device: device.to_owned(),
        inode: inode.parse().ok()?,
        path: (!path.is_empty()).then(|| path.to_owned()),
    })
}

/// Reads and parses `/proc/PID/maps`.
pub fn read(pid: i32) -> Result<Vec<Mapping>, Error> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|source| Error::os(pid, "read maps", source))?;
    parse(pid, &text)
}

/// Bytes of one page.
pub const PAGE: u64 = 4096;

/// The largest distance a rel32 reaches, less a margin for the payload length.
const REACH: u64 = (1 << 31) - PAGE;

/// Start addresses for a payload of `len` bytes (page-rounded) that keep the whole payload
/// within rel32 reach of every byte of the image `[image_start, image_end)`, nearest first.
/// Each candidate leaves a free page on both sides so that the payload stays its own mapping.
pub fn nearby_gaps(maps: &[Mapping], image_start: u64, image_end: u64, len: u64) -> Vec<u64> {
    let len = round_up(len);
    // The payload [p, p+len) reaches the image when p+len-image_start <= REACH and
    // image_end-p <= REACH.
    let lowest = image_end.saturating_sub(REACH).max(0x10000);
    let highest = image_start.saturating_add(REACH).saturating_sub(len);
    let mut sorted: Vec<(u64, u64)> = maps.iter().map(|m| (m.start, m.end)).collect();
    sorted.sort_unstable();
    let mut candidates = Vec::new();
    let mut previous_end = 0u64;
    // The gap after the last mapping ends at the top of the user address space (47 bits).
    sorted.push((1 << 47, 1 << 47));
    for (start, end) in sorted {
        let gap_start = previous_end.saturating_add(PAGE);
        let gap_end = start.saturating_sub(PAGE);
        previous_end = previous_end.max(end);
        if gap_end <= gap_start || gap_end - gap_start < len {
            continue;
        }
        // Inside the gap, the start nearest to the image.
        let first = gap_start.max(lowest);
        let last = (gap_end - len).min(highest);
        if first > last {
            continue;
        }
        let pick = if last < image_start { last } else { first };
        candidates.push(pick & !(PAGE - 1));
    }
    candidates.retain(|&p| p >= lowest && p <= highest);
    candidates.sort_by_key(|&p| p.abs_diff(image_start));
    candidates
}

/// `len` rounded up to whole pages.
pub fn round_up(len: u64) -> u64 {
    len.div_ceil(PAGE).saturating_mul(PAGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_lines() {
        let text = "55d4c6a00000-55d4c6a02000 r-xp 00001000 08:01 1234                       /usr/bin/my prog\n\
                    7ffd1e1f0000-7ffd1e211000 rw-p 00000000 00:00 0                          [stack]\n\
                    7f0000000000-7f0000001000 r--p 00000000 00:00 0 \n";
        let maps = parse(1, text).unwrap();
        assert_eq!(maps.len(), 3);
        assert_eq!(maps[0].path.as_deref(), Some("/usr/bin/my prog"));
        assert!(maps[0].execute && !maps[0].write && maps[0].is_file());
        assert_eq!(maps[0].offset, 0x1000);
        assert_eq!(maps[1].path.as_deref(), Some("[stack]"));
        assert!(!maps[1].is_file());
        assert_eq!(maps[2].path, None);
        assert!(parse(1, "garbage").is_err());
    }

    #[test]
    fn gaps_stay_within_reach_and_off_mappings() {
        let image = Mapping {
            start: 0x5555_0000_0000,
            end: 0x5555_0010_0000,
            read: true,
            write: false,
            execute: true,
            offset: 0,
            device: "08:01".into(),
            inode: 1,
            path: Some("/x".into()),
        };
        let mut above = image.clone();
        above.start = 0x5555_0010_0000;
        above.end = 0x5555_0020_0000;
        let maps = vec![image.clone(), above];
        let gaps = nearby_gaps(&maps, image.start, image.end, 10_000);
        assert!(!gaps.is_empty());
        for p in &gaps {
            assert!((p + round_up(10_000)).abs_diff(image.start) <= 1 << 31);
            assert!(image.end.abs_diff(*p) <= 1 << 31);
            assert!(
                maps.iter()
                    .all(|m| *p + round_up(10_000) + PAGE <= m.start || *p >= m.end + PAGE)
            );
        }
        // Nearest first: right below the image (a free page between), then right above the
        // second mapping.
        assert_eq!(gaps[0], image.start - PAGE - round_up(10_000));
        assert_eq!(gaps[1], 0x5555_0020_0000 + PAGE);
    }
}
