//! Read-only memory maps of input files, so readers borrow code bytes without copying them.

use anyhow::{Context, Result};
use std::path::Path;

/// A file mapped read-only (or read into memory when it is empty or cannot be mapped).
pub enum Mapped {
    Map(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Mapped {
    pub fn open(path: &Path) -> Result<Self> {
        let file = fs_err::File::open(path)?;
        let len = file
            .metadata()
            .with_context(|| format!("cannot stat {}", path.display()))?
            .len();
        if len == 0 {
            return Ok(Mapped::Owned(Vec::new()));
        }
        #[allow(
            unsafe_code,
            reason = "memory-mapping the input is the one way to read it without copying"
        )]
        // SAFETY: the map is read-only and private to this process. Another process truncating
        // the file while we read it could fault; hotpatch inputs are build artifacts that no one
        // edits in place while a command runs, and ripgrep makes the same trade.
        let map = unsafe { memmap2::Mmap::map(file.file()) };
        match map {
            Ok(map) => Ok(Mapped::Map(map)),
            Err(_) => Ok(Mapped::Owned(fs_err::read(path)?)),
        }
    }

    /// Gives back the pages of the map that are resident, once the readers are done with most
    /// of them: hashing the file and reading its debug information touch every page, while
    /// what is read afterwards (code, read-only data) is a small part. The pages stay in the
    /// page cache; a later read maps them again from there with the same bytes.
    pub fn release_resident_pages(&self) {
        #[cfg(unix)]
        if let Mapped::Map(map) = self {
            #[allow(
                unsafe_code,
                reason = "madvise(MADV_DONTNEED) has no safe form in memmap2: it is safe only for \
                          maps that were never written"
            )]
            // SAFETY: the map is private, read-only and never written, so after MADV_DONTNEED
            // every page reads back from the file, with the bytes it had: slices borrowed from it
            // stay valid and unchanged (under the same assumption as `open`: no one edits the
            // file in place while a command runs). The advice is a hint; a failure changes
            // nothing.
            let _ = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        }
    }

    pub fn bytes(&self) -> &[u8] {
        match self {
            Mapped::Map(map) => map,
            Mapped::Owned(bytes) => bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Mapped;
    use std::path::Path;

    /// Giving back the resident pages must leave every borrowed byte as it was: the diff reads
    /// code and data from the map after the readers are done.
    #[test]
    fn released_pages_read_back_the_same_bytes() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bounds_check/elf/fixed");
        let expected = fs_err::read(&path).expect("the fixture is committed");
        let mapped = Mapped::open(&path).expect("the fixture maps");
        assert!(
            matches!(mapped, Mapped::Map(_)),
            "a non-empty file is mapped"
        );
        let bytes = mapped.bytes();
        assert_eq!(bytes, expected.as_slice());
        mapped.release_resident_pages();
        assert_eq!(bytes, expected.as_slice());
        mapped.release_resident_pages();
        assert_eq!(mapped.bytes(), expected.as_slice());
    }
}
