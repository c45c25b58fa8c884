//! The zip container of a package: a deterministic writer and a strict, capped reader.
//!
//! Only the subset the writer emits is read back: no zip64, no encryption, stored or Deflate
//! entries, one disk.
//! The reader refuses what lets two zip readers disagree on the contents (duplicate names,
//! a local header that contradicts the central directory, data past the archive) and checks every
//! cap before it allocates for an entry, so a small archive cannot inflate into a large one.

use crate::Error;
use crate::read::Limits;
use std::collections::BTreeSet;
use std::io::{Read, Write};

const LOCAL_HEADER_SIGNATURE: u32 = 0x0403_4b50;
const CENTRAL_HEADER_SIGNATURE: u32 = 0x0201_4b50;
const END_OF_CENTRAL_DIRECTORY_SIGNATURE: u32 = 0x0605_4b50;
const LOCAL_HEADER_LEN: usize = 30;
const CENTRAL_HEADER_LEN: usize = 46;
const END_OF_CENTRAL_DIRECTORY_LEN: usize = 22;
/// 1980-01-01 00:00:00 in MS-DOS date form: the zip epoch, so no build time leaks in.
const DOS_DATE_1980_01_01: u16 = (1 << 5) | 1;
const METHOD_STORED: u16 = 0;
const METHOD_DEFLATE: u16 = 8;
/// Deflate level: fixed, so identical inputs give identical bytes.
const DEFLATE_LEVEL: u32 = 6;
/// "Version made by": zip 2.0 on Unix, so the mode in the external attributes is meaningful.
const VERSION_MADE_BY_UNIX: u16 = (3 << 8) | 20;
const VERSION_NEEDED: u16 = 20;
/// A regular file, rw-r--r--.
const REGULAR_FILE_MODE: u32 = 0o100_644;
const FILE_TYPE_MASK: u32 = 0o170_000;
const SYMLINK_TYPE: u32 = 0o120_000;
/// General purpose flag bit 11: the name is UTF-8.
const FLAG_UTF8: u16 = 1 << 11;
const FLAG_ENCRYPTED: u16 = 1;

/// One entry as it goes into the writer. `unix_mode` is the full `st_mode` recorded in the
/// external attributes; the package writer always uses a regular file.
pub(crate) struct ArchiveEntry<'a> {
    pub name: &'a str,
    pub data: &'a [u8],
    pub unix_mode: u32,
}

impl<'a> ArchiveEntry<'a> {
    pub fn file(name: &'a str, data: &'a [u8]) -> Self {
        ArchiveEntry {
            name,
            data,
            unix_mode: REGULAR_FILE_MODE,
        }
    }
}

/// Writes `entries` in the given order, each Deflate-compressed at a fixed level, dated
/// 1980-01-01, with no extra fields or comments.
pub(crate) fn write_archive(entries: &[ArchiveEntry<'_>]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for entry in entries {
        let mut encoder =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(DEFLATE_LEVEL));
        encoder
            .write_all(entry.data)
            .and_then(|()| encoder.try_finish())
            .map_err(|error| Error::BadArchive {
                reason: format!("deflate of {:?}: {error}", entry.name),
            })?;
        let compressed = encoder.get_ref();
        let mut crc = flate2::Crc::new();
        crc.update(entry.data);
        let too_large = |what: &str, size: usize| Error::TooLarge {
            what: format!("{what} of {:?}", entry.name),
            size: size as u64,
            limit: u64::from(u32::MAX - 1),
        };
        let name_len =
            u16::try_from(entry.name.len()).map_err(|_| too_large("name", entry.name.len()))?;
        let compressed_len = u32_below_zip64(compressed.len())
            .ok_or_else(|| too_large("compressed data", compressed.len()))?;
        let data_len =
            u32_below_zip64(entry.data.len()).ok_or_else(|| too_large("data", entry.data.len()))?;
        let local_offset = u32_below_zip64(out.len())
            .ok_or_else(|| too_large("archive before entry", out.len()))?;

        put_u32(&mut out, LOCAL_HEADER_SIGNATURE);
        put_u16(&mut out, VERSION_NEEDED);
        put_u16(&mut out, FLAG_UTF8);
        put_u16(&mut out, METHOD_DEFLATE);
        put_u16(&mut out, 0); // time 00:00:00
        put_u16(&mut out, DOS_DATE_1980_01_01);
        put_u32(&mut out, crc.sum());
        put_u32(&mut out, compressed_len);
        put_u32(&mut out, data_len);
        put_u16(&mut out, name_len);
        put_u16(&mut out, 0); // extra field length
        out.extend_from_slice(entry.name.as_bytes());
        out.extend_from_slice(compressed);

        put_u32(&mut central, CENTRAL_HEADER_SIGNATURE);
        put_u16(&mut central, VERSION_MADE_BY_UNIX);
        put_u16(&mut central, VERSION_NEEDED);
        put_u16(&mut central, FLAG_UTF8);
        put_u16(&mut central, METHOD_DEFLATE);
        put_u16(&mut central, 0);
        put_u16(&mut central, DOS_DATE_1980_01_01);
        put_u32(&mut central, crc.sum());
        put_u32(&mut central, compressed_len);
        put_u32(&mut central, data_len);
        put_u16(&mut central, name_len);
        put_u16(&mut central, 0); // extra field length
        put_u16(&mut central, 0); // comment length
        put_u16(&mut central, 0); // disk number
        put_u16(&mut central, 0); // internal attributes
        put_u32(&mut central, entry.unix_mode << 16);
        put_u32(&mut central, local_offset);
        central.extend_from_slice(entry.name.as_bytes());
    }
    let count = u16::try_from(entries.len()).map_err(|_| Error::TooMany {
        what: "archive entries".to_owned(),
        count: entries.len() as u64,
        limit: u64::from(u16::MAX),
    })?;
    let central_offset = u32_below_zip64(out.len()).ok_or(Error::TooLarge {
        what: "archive".to_owned(),
        size: out.len() as u64,
        limit: u64::from(u32::MAX - 1),
    })?;
    let central_len = u32_below_zip64(central.len()).ok_or(Error::TooLarge {
        what: "central directory".to_owned(),
        size: central.len() as u64,
        limit: u64::from(u32::MAX - 1),
    })?;
    out.extend_from_slice(&central);
    put_u32(&mut out, END_OF_CENTRAL_DIRECTORY_SIGNATURE);
    put_u16(&mut out, 0); // this disk
    put_u16(&mut out, 0); // disk with the central directory
    put_u16(&mut out, count);
    put_u16(&mut out, count);
    put_u32(&mut out, central_len);
    put_u32(&mut out, central_offset);
    put_u16(&mut out, 0); // comment length
    Ok(out)
}

/// 0xFFFFFFFF marks zip64 fields, which this format never uses.
fn u32_below_zip64(value: usize) -> Option<u32> {
    u32::try_from(value).ok().filter(|&v| v != u32::MAX)
}

fn put_u16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// One entry as read back: its name and its inflated data, in archive order.
pub(crate) struct RawEntry {
    pub name: String,
    pub data: Vec<u8>,
}

/// Reads every entry of `bytes`, checking the caps in `limits` before each allocation.
pub(crate) fn read_archive(bytes: &[u8], limits: &Limits) -> Result<Vec<RawEntry>, Error> {
    let archive_len = bytes.len() as u64;
    if archive_len > limits.max_archive_bytes {
        return Err(Error::TooLarge {
            what: "archive".to_owned(),
            size: archive_len,
            limit: limits.max_archive_bytes,
        });
    }
    let end = find_end_of_central_directory(bytes)?;
    let reader = Reader { bytes };
    let count = reader.u16(end + 10)?;
    if reader.u16(end + 4)? != 0 || reader.u16(end + 6)? != 0 || reader.u16(end + 8)? != count {
        return Err(bad("multi-disk archives are not supported"));
    }
    if u64::from(count) > limits.max_entries {
        return Err(Error::TooMany {
            what: "archive entries".to_owned(),
            count: u64::from(count),
            limit: limits.max_entries,
        });
    }
    let central_len = reader.u32(end + 12)? as usize;
    let central_offset = reader.u32(end + 16)? as usize;
    let central_end = central_offset
        .checked_add(central_len)
        .filter(|&e| e <= end)
        .ok_or_else(|| bad("the central directory lies outside the archive"))?;

    let mut seen = BTreeSet::new();
    let mut entries = Vec::with_capacity(usize::from(count));
    let mut total: u64 = 0;
    let mut at = central_offset;
    // Entries must lie back to back from offset 0, in central directory order, up to the
    // central directory: no gap to hide data in, and no two entries sharing bytes (overlapping
    // entries are how small archives expand quadratically).
    let mut next_local_offset = 0usize;
    for _ in 0..count {
        if at
            .checked_add(CENTRAL_HEADER_LEN)
            .is_none_or(|e| e > central_end)
        {
            return Err(bad("truncated central directory"));
        }
        if reader.u32(at)? != CENTRAL_HEADER_SIGNATURE {
            return Err(bad("central directory header signature"));
        }
        let version_made_by = reader.u16(at + 4)?;
        let flags = reader.u16(at + 8)?;
        let method = reader.u16(at + 10)?;
        let crc = reader.u32(at + 16)?;
        let compressed_len = reader.u32(at + 20)?;
        let data_len = reader.u32(at + 24)?;
        let name_len = usize::from(reader.u16(at + 28)?);
        let extra_len = usize::from(reader.u16(at + 30)?);
        let comment_len = usize::from(reader.u16(at + 32)?);
        let external_attributes = reader.u32(at + 38)?;
        let local_offset = reader.u32(at + 42)? as usize;
        let at_central = at;
        let name_start = at + CENTRAL_HEADER_LEN;
        let name_bytes = reader.slice(name_start, name_len)?;
        let next = name_start
            .checked_add(name_len)
            .and_then(|e| e.checked_add(extra_len))
            .and_then(|e| e.checked_add(comment_len))
            .filter(|&e| e <= central_end)
            .ok_or_else(|| bad("truncated central directory entry"))?;
        at = next;

        let name = std::str::from_utf8(name_bytes)
            .map_err(|_| Error::UnsafeEntryName {
                name: String::from_utf8_lossy(name_bytes).into_owned(),
            })?
            .to_owned();
        check_entry_name(&name)?;
        if !seen.insert(name.clone()) {
            return Err(Error::DuplicateEntry { name });
        }
        // The mode is meaningful only when the entry was made on Unix (host 3).
        if version_made_by >> 8 == 3 && (external_attributes >> 16) & FILE_TYPE_MASK == SYMLINK_TYPE
        {
            return Err(Error::SymlinkEntry { name });
        }
        if flags & FLAG_ENCRYPTED != 0 {
            return Err(bad(&format!("entry {name:?} is encrypted")));
        }
        if compressed_len == u32::MAX || data_len == u32::MAX || local_offset == u32::MAX as usize {
            return Err(bad(&format!("entry {name:?} uses zip64")));
        }
        // The declared size is checked before anything is inflated; the inflater is then held
        // to it, so an entry that lies about its size cannot grow past the cap either.
        let declared = u64::from(data_len);
        let limit = if name == crate::read::MANIFEST_NAME {
            limits.max_manifest_bytes.min(limits.max_entry_bytes)
        } else {
            limits.max_entry_bytes
        };
        if declared > limit {
            return Err(Error::TooLarge {
                what: format!("entry {name:?}"),
                size: declared,
                limit,
            });
        }
        total = total.saturating_add(declared);
        if total > limits.max_total_bytes {
            return Err(Error::TooLarge {
                what: "the entries together".to_owned(),
                size: total,
                limit: limits.max_total_bytes,
            });
        }

        if local_offset != next_local_offset {
            return Err(bad(&format!(
                "entry {name:?} starts at {local_offset:#x}, not right after the previous entry ({next_local_offset:#x})"
            )));
        }
        // The local header must agree with the central directory, so that every zip reader sees
        // the same bytes under the same name.
        if reader.u32(local_offset)? != LOCAL_HEADER_SIGNATURE {
            return Err(bad(&format!("local header of {name:?}")));
        }
        // Version needed, flags, method, time, date, CRC and both sizes: the 26 bytes after the
        // signature, identical in both headers (the writer never defers sizes to a data
        // descriptor).
        let local_fields = reader.slice(local_offset + 4, 22)?;
        let central_fields = reader.slice(at_central + 6, 22)?;
        let local_name_len = usize::from(reader.u16(local_offset + 26)?);
        let local_extra_len = usize::from(reader.u16(local_offset + 28)?);
        let local_name = reader.slice(local_offset + LOCAL_HEADER_LEN, local_name_len)?;
        if local_fields != central_fields || local_name != name_bytes {
            return Err(bad(&format!(
                "local header of {name:?} disagrees with the central directory"
            )));
        }
        let data_start = local_offset
            .checked_add(LOCAL_HEADER_LEN)
            .and_then(|s| s.checked_add(local_name_len))
            .and_then(|s| s.checked_add(local_extra_len))
            .ok_or_else(|| bad("local header offset overflows"))?;
        let compressed = reader.slice(data_start, compressed_len as usize)?;
        next_local_offset = data_start
            .checked_add(compressed_len as usize)
            .filter(|&e| e <= central_offset)
            .ok_or_else(|| bad(&format!("data of {name:?} runs into the central directory")))?;
        let data = match method {
            METHOD_STORED => compressed.to_vec(),
            METHOD_DEFLATE => inflate_capped(compressed, declared, &name)?,
            other => {
                return Err(bad(&format!(
                    "entry {name:?} uses compression method {other}"
                )));
            }
        };
        if data.len() as u64 != declared {
            return Err(bad(&format!(
                "entry {name:?} inflates to {} bytes, declared {declared}",
                data.len()
            )));
        }
        let mut check = flate2::Crc::new();
        check.update(&data);
        if check.sum() != crc {
            return Err(bad(&format!("CRC-32 of {name:?}")));
        }
        entries.push(RawEntry { name, data });
    }
    if next_local_offset != central_offset || at != central_end || central_end != end {
        return Err(bad(
            "bytes between the entries, the central directory and its end record",
        ));
    }
    Ok(entries)
}

/// Inflates at most `declared + 1` bytes: one more than declared proves the entry lied, without
/// inflating the rest.
fn inflate_capped(compressed: &[u8], declared: u64, name: &str) -> Result<Vec<u8>, Error> {
    let decoder = flate2::read::DeflateDecoder::new(compressed);
    let mut data = Vec::with_capacity(usize::try_from(declared).unwrap_or(0));
    decoder
        .take(declared.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(|error| bad(&format!("inflating {name:?}: {error}")))?;
    Ok(data)
}

/// The end-of-central-directory record is the last 22 bytes plus a comment; this writer never
/// adds a comment, so the record must end the archive exactly.
fn find_end_of_central_directory(bytes: &[u8]) -> Result<usize, Error> {
    let end = bytes
        .len()
        .checked_sub(END_OF_CENTRAL_DIRECTORY_LEN)
        .ok_or_else(|| bad("too short for a zip archive"))?;
    let reader = Reader { bytes };
    if reader.u32(end)? != END_OF_CENTRAL_DIRECTORY_SIGNATURE || reader.u16(end + 20)? != 0 {
        return Err(bad(
            "no end-of-central-directory record at the end (truncated, or a comment follows)",
        ));
    }
    Ok(end)
}

/// Entry names must be plain relative paths, the same on every platform: no absolute path, no
/// drive, no backslash, no empty, `.` or `..` component, no control character.
pub(crate) fn check_entry_name(name: &str) -> Result<(), Error> {
    let unsafe_name = || Error::UnsafeEntryName {
        name: name.to_owned(),
    };
    if name.is_empty()
        || name.starts_with('/')
        || name.contains('\\')
        || name.contains(':')
        || name.chars().any(char::is_control)
    {
        return Err(unsafe_name());
    }
    if name
        .split('/')
        .any(|component| component.is_empty() || component == "." || component == "..")
    {
        return Err(unsafe_name());
    }
    Ok(())
}

fn bad(reason: &str) -> Error {
    Error::BadArchive {
        reason: reason.to_owned(),
    }
}

/// Little-endian reads that fail with `BadArchive` instead of panicking past the end.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn slice(&self, at: usize, len: usize) -> Result<&'a [u8], Error> {
        at.checked_add(len)
            .and_then(|end| self.bytes.get(at..end))
            .ok_or_else(|| bad("truncated archive"))
    }

    fn u16(&self, at: usize) -> Result<u16, Error> {
        let s = self.slice(at, 2)?;
        Ok(u16::from_le_bytes(
            s.try_into().map_err(|_| bad("truncated archive"))?,
        ))
    }

    fn u32(&self, at: usize) -> Result<u32, Error> {
        let s = self.slice(at, 4)?;
        Ok(u32::from_le_bytes(
            s.try_into().map_err(|_| bad("truncated archive"))?,
        ))
    }
}
