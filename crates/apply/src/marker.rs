//! The marker: a header at the start of every payload mapping the applier creates, so that
//! what is applied can be read back from the process itself (`status`, rollback, superseding)
//! rather than trusted from the state directory alone.
//!
//! Layout (little-endian), padded to whole pages; the payload code follows at `code_offset`:
//!
//! ```text
//!   0  magic      16 bytes  "HOTPATCH1" then zeros
//!  16  version    u32       1
//!  20  header_len u32       bytes used by the header
//!  24  address    u64       where this mapping starts (a copy elsewhere is not a marker)
//!  32  map_len    u64       length of the whole mapping
//!  40  code_off   u64       offset of the payload code (page-aligned)
//!  48  code_len   u64
//!  56  sequence   u64       package sequence
//!  64  bias       u64       load bias of the target image the redirects point from
//!  72  strings    u16 length + UTF-8 each: product, channel, key_id, target, target_sha256,
//!                 package_sha256 (SHA-256 of the signed manifest bytes)
//!      sites      u32 count, then per site: baseline_rva u64, baseline_size u64,
//!                 write_address u64, len u8, original [len], redirect [len], function (string)
//!      unwind     u64       address of the function table registered for the code with
//!                           `RtlAddFunctionTable` (Windows), 0 for none; absent in headers
//!                           written before it existed, which read as 0
//!      held       u64       1 while an applier holds the process across its redirect writes
//!                           (`crate::patch`, the hold), else 0; the last 8 bytes of the
//!                           header; absent in older headers, which read as 0
//! ```

/// The first bytes of every marker.
pub const MAGIC: [u8; 16] = *b"HOTPATCH1\0\0\0\0\0\0\0";
/// The layout version written by this applier.
pub const VERSION: u32 = 1;
/// A header larger than this is not ours.
pub const MAX_HEADER: usize = 1 << 20;
/// The page size both backends protect at (x86-64 Linux and Windows).
pub const PAGE: u64 = 4096;

/// `len` rounded up to whole pages.
pub fn round_to_page(len: u64) -> u64 {
    len.div_ceil(PAGE).saturating_mul(PAGE)
}

/// What one payload mapping in a process says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub address: u64,
    pub mapping_len: u64,
    pub code_offset: u64,
    pub code_len: u64,
    pub sequence: u64,
    pub bias: u64,
    pub product: String,
    pub channel: String,
    pub key_id: String,
    pub target: String,
    pub target_sha256: String,
    pub package_sha256: String,
    pub sites: Vec<SiteRecord>,
    /// The function table registered for the payload code (Windows), 0 when none: rollback
    /// and supersede delete it before the memory is released.
    pub unwind_table: u64,
    /// Set while an applier holds the process across its redirect writes: found set in a
    /// stopped process, the applier that set it was killed there, and the next apply or
    /// rollback lets the process run again once it has finished the job.
    pub held: bool,
}

/// One redirect this applier wrote, with the bytes it replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteRecord {
    pub function: String,
    pub baseline_rva: u64,
    pub baseline_size: u64,
    /// Where the redirect bytes start (the entry, or five bytes before it for padding).
    pub write_address: u64,
    /// The baseline bytes at `write_address`.
    pub original: Vec<u8>,
    /// The bytes this applier wrote there.
    pub redirect: Vec<u8>,
}

impl Marker {
    /// The start of the payload code in the process.
    pub fn code_start(&self) -> u64 {
        self.address.saturating_add(self.code_offset)
    }

    /// Where the `held` word of this marker is in the process.
    pub fn held_word(&self) -> u64 {
        self.address
            .saturating_add(self.encode().len() as u64)
            .saturating_sub(8)
    }

    /// Serializes the header; the caller pads it to `code_offset`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        for value in [
            self.address,
            self.mapping_len,
            self.code_offset,
            self.code_len,
            self.sequence,
            self.bias,
        ] {
            out.extend_from_slice(&value.to_le_bytes());
        }
        for text in [
            &self.product,
            &self.channel,
            &self.key_id,
            &self.target,
            &self.target_sha256,
            &self.package_sha256,
        ] {
            put_str(&mut out, text);
        }
        out.extend_from_slice(&(self.sites.len() as u32).to_le_bytes());
        for site in &self.sites {
            for value in [site.baseline_rva, site.baseline_size, site.write_address] {
                out.extend_from_slice(&value.to_le_bytes());
            }
            // Redirects are 5 or 7 bytes and replace as many; the length byte cannot overflow.
            let len = site.original.len().min(site.redirect.len()).min(255);
            out.push(len as u8);
            out.extend_from_slice(&site.original[..len]);
            out.extend_from_slice(&site.redirect[..len]);
            put_str(&mut out, &site.function);
        }
        out.extend_from_slice(&self.unwind_table.to_le_bytes());
        out.extend_from_slice(&u64::from(self.held).to_le_bytes());
        let len = (out.len() as u32).to_le_bytes();
        out[20..24].copy_from_slice(&len);
        out
    }

    /// Decodes a header read from a mapping that starts at `address`; `None` when the bytes
    /// are not a marker of this applier.
    pub fn decode(bytes: &[u8], address: u64) -> Result<Option<Marker>, &'static str> {
        if bytes.get(..16) != Some(&MAGIC[..]) {
            return Ok(None);
        }
        let mut reader = Reader { bytes, at: 16 };
        if reader.u32()? != VERSION {
            return Err("unknown marker version");
        }
        let header_len = reader.u32()? as usize;
        if header_len > bytes.len() || header_len > MAX_HEADER {
            return Err("header length beyond the mapping");
        }
        reader.bytes = &bytes[..header_len];
        let recorded_address = reader.u64()?;
        if recorded_address != address {
            // A copy of a marker somewhere else in memory is not a payload mapping.
            return Ok(None);
        }
        let mut marker = Marker {
            address,
            mapping_len: reader.u64()?,
            code_offset: reader.u64()?,
            code_len: reader.u64()?,
            sequence: reader.u64()?,
            bias: reader.u64()?,
            product: reader.string()?,
            channel: reader.string()?,
            key_id: reader.string()?,
            target: reader.string()?,
            target_sha256: reader.string()?,
            package_sha256: reader.string()?,
            sites: Vec::new(),
            unwind_table: 0,
            held: false,
        };
        let count = reader.u32()?;
        for _ in 0..count {
            let baseline_rva = reader.u64()?;
            let baseline_size = reader.u64()?;
            let write_address = reader.u64()?;
            let len = usize::from(reader.u8()?);
            let original = reader.take(len)?.to_vec();
            let redirect = reader.take(len)?.to_vec();
            let function = reader.string()?;
            marker.sites.push(SiteRecord {
                function,
                baseline_rva,
                baseline_size,
                write_address,
                original,
                redirect,
            });
        }
        if reader.at < reader.bytes.len() {
            marker.unwind_table = reader.u64()?;
        }
        if reader.at < reader.bytes.len() {
            marker.held = reader.u64()? != 0;
        }
        if marker
            .code_offset
            .checked_add(marker.code_len)
            .is_none_or(|end| end > marker.mapping_len)
        {
            return Err("code beyond the mapping");
        }
        Ok(Some(marker))
    }
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    let bytes = &text.as_bytes()[..text.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], &'static str> {
        let end = self.at.checked_add(len).ok_or("length overflow")?;
        let slice = self.bytes.get(self.at..end).ok_or("truncated header")?;
        self.at = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, &'static str> {
        let mut value = [0u8; 4];
        value.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(value))
    }

    fn u64(&mut self) -> Result<u64, &'static str> {
        let mut value = [0u8; 8];
        value.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(value))
    }

    fn string(&mut self) -> Result<String, &'static str> {
        let mut len = [0u8; 2];
        len.copy_from_slice(self.take(2)?);
        let bytes = self.take(usize::from(u16::from_le_bytes(len)))?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "string not UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Marker {
        Marker {
            address: 0x7f00_0000_0000,
            mapping_len: 0x3000,
            code_offset: 0x1000,
            code_len: 0x1800,
            sequence: 7,
            bias: 0x5555_0000_0000,
            product: "demo".into(),
            channel: "stable".into(),
            key_id: "00112233".into(),
            target: "bin/server".into(),
            target_sha256: "ab".repeat(32),
            package_sha256: "cd".repeat(32),
            sites: vec![SiteRecord {
                function: "parse_len".into(),
                baseline_rva: 0x1139,
                baseline_size: 0x20,
                write_address: 0x5555_0000_1139,
                original: vec![0x55, 0x48, 0x89, 0xe5, 0x89],
                redirect: vec![0xe9, 1, 2, 3, 4],
            }],
            unwind_table: 0x7f00_0000_1040,
            held: false,
        }
    }

    #[test]
    fn a_header_without_the_unwind_field_reads_as_none_registered() {
        let marker = sample();
        let mut bytes = marker.encode();
        bytes.truncate(bytes.len() - 16);
        let len = (bytes.len() as u32).to_le_bytes();
        bytes[20..24].copy_from_slice(&len);
        let decoded = Marker::decode(&bytes, marker.address).unwrap().unwrap();
        assert_eq!(decoded.unwind_table, 0);
        assert_eq!(decoded.sites, marker.sites);
    }

    #[test]
    fn the_held_word_is_the_last_of_the_header_and_reads_back() {
        let mut marker = sample();
        let mut bytes = marker.encode();
        let at = (marker.held_word() - marker.address) as usize;
        assert_eq!(at, bytes.len() - 8);
        bytes[at] = 1;
        let decoded = Marker::decode(&bytes, marker.address).unwrap().unwrap();
        assert!(decoded.held);
        marker.held = true;
        assert_eq!(decoded, marker);
        assert_eq!(decoded.held_word(), marker.held_word());
    }

    #[test]
    fn round_trips_and_rejects_damage() {
        let marker = sample();
        let bytes = marker.encode();
        assert_eq!(
            Marker::decode(&bytes, marker.address),
            Ok(Some(marker.clone()))
        );
        // Elsewhere in memory it is not a marker.
        assert_eq!(Marker::decode(&bytes, 0x1000), Ok(None));
        assert_eq!(Marker::decode(b"not a marker at all", 0), Ok(None));
        // Every truncation is an error or not-a-marker, never a panic.
        for len in 0..bytes.len() {
            assert_ne!(
                Marker::decode(&bytes[..len], marker.address),
                Ok(Some(marker.clone()))
            );
        }
    }
}
