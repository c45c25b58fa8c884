//! A lifted payload in this process: lifted from a fixture pair by the real build side (diff,
//! policy, lift), mapped read-write within rel32 reach of the loaded baseline image, relocated
//! with `hotpatch_package::apply_relocations` (the applier's code), then made read-execute.
//! Redirects are written with `hotpatch_package::redirect_bytes`, as the applier writes them.

use crate::loader::{LoadedImage, protect};
use hotpatch_lift::Lifted;
use hotpatch_package::{PatchSite, Redirect};
use std::path::{Path, PathBuf};

/// A file of `fixtures/<case>/`.
pub fn source(case: &str, file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(case)
        .join(file)
}

fn fixture(case: &str, variant: &str) -> PathBuf {
    source(case, "elf").join(variant)
}

/// A fixture's baseline loaded into this process, with its lifted payload mapped beside it.
pub struct Patched {
    pub image: LoadedImage,
    pub lifted: Lifted,
    payload_base: u64,
    payload_len: usize,
}

impl Patched {
    /// Lifts the ELF pair of `case`, which must change exactly `changed` and add `added` (from
    /// the fixture's sources) and be eligible, and maps both the baseline and the payload.
    pub fn new(case: &str, changed: &[&str], added: &[&str]) -> Patched {
        let baseline_bytes = std::fs::read(fixture(case, "baseline")).unwrap();
        let fixed_bytes = std::fs::read(fixture(case, "fixed")).unwrap();
        let base = hotpatch_image::load(&baseline_bytes, None).expect("baseline loads");
        let new = hotpatch_image::load(&fixed_bytes, None).expect("fixed loads");
        let diff = hotpatch_diff::diff(&base.image, &new.image, hotpatch_diff::Config::default());
        let names: Vec<&str> = diff.changed.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, changed, "{case}: changed functions");
        let names: Vec<&str> = diff.added.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, added, "{case}: added functions");
        let subject = hotpatch_policy::Subject {
            binary_names: vec![case],
            baseline: &base.image,
            fixed: &new.image,
            diff: &diff,
            diagnostics: &[],
        };
        let assessment = hotpatch_policy::assess(&subject, &hotpatch_policy::Policy::default());
        assert_eq!(
            assessment.verdict,
            hotpatch_policy::Verdict::HotpatchEligible,
            "{case}: {:?}",
            assessment.findings
        );
        let lifted = hotpatch_lift::lift(&base.image, &new.image, &diff)
            .unwrap_or_else(|problems| panic!("{case} does not lift: {problems:?}"));
        assert_eq!(
            lifted.image_base_rva, 0,
            "{case}: a PIE maps file offset 0 at RVA 0"
        );
        let image = LoadedImage::load(&baseline_bytes).expect("the baseline maps");
        let (payload_base, payload_len) = map_near(&image, lifted.payload.len());
        let mut resolved = lifted.payload.clone();
        hotpatch_package::apply_relocations(
            &mut resolved,
            payload_base,
            image.bias,
            &lifted.relocations,
        )
        .expect("the relocations resolve");
        // SAFETY: `payload_base` is our fresh read-write mapping of at least `resolved.len()`
        // bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                resolved.as_ptr(),
                payload_base as *mut u8,
                resolved.len(),
            );
        }
        protect(payload_base, payload_len, libc::PROT_READ | libc::PROT_EXEC).unwrap();
        let patched = Patched {
            image,
            lifted,
            payload_base,
            payload_len,
        };
        for site in &patched.lifted.sites {
            assert_eq!(
                patched.image.bias + site.baseline_rva,
                patched.image.symbol(&site.function),
                "{case}: the patch site of {} is the baseline symbol's address",
                site.function
            );
        }
        patched
    }

    fn site(&self, function: &str) -> &PatchSite {
        self.lifted
            .sites
            .iter()
            .find(|s| s.function == function)
            .unwrap_or_else(|| panic!("no patch site for {function}"))
    }

    /// The address of the payload's copy of a replaced function.
    pub fn new_code(&self, function: &str) -> u64 {
        self.payload_base + self.site(function).payload_offset
    }

    /// The address of the baseline's own function.
    pub fn old_code(&self, function: &str) -> u64 {
        self.image.symbol(function)
    }

    /// Writes the redirect of `function`'s baseline entry to its new code, after checking the
    /// bytes the patch site expects are there.
    pub fn redirect(&self, function: &str) {
        let site = self.site(function);
        let entry = self.old_code(function);
        let (start, original) = expected(site, entry);
        assert_eq!(
            self.image.read::<7>(start)[..original.len()],
            original[..],
            "{function}: the baseline bytes the site expects"
        );
        let (at, bytes) =
            hotpatch_package::redirect_bytes(site, entry, self.new_code(function)).unwrap();
        self.image.patch_code(at, &bytes);
    }

    /// Puts the original bytes back.
    pub fn rollback(&self, function: &str) {
        let site = self.site(function);
        let (start, original) = expected(site, self.old_code(function));
        self.image.patch_code(start, original);
    }
}

impl Drop for Patched {
    fn drop(&mut self) {
        // SAFETY: our own mapping; the test no longer calls into it.
        unsafe { libc::munmap(self.payload_base as *mut libc::c_void, self.payload_len) };
    }
}

/// Where the site's original bytes start and what they are.
fn expected(site: &PatchSite, entry: u64) -> (u64, &[u8]) {
    match &site.redirect {
        Redirect::Entry { original } => (entry, original),
        Redirect::Padding { original } => (entry - 5, original),
    }
}

/// Maps `len` bytes read-write in the first free pages after the image (or before it), so
/// every rel32 between them reaches; returns the address and the mapped length.
fn map_near(image: &LoadedImage, len: usize) -> (u64, usize) {
    let len = len.max(1).div_ceil(4096) * 4096;
    let (start, end) = image.range();
    let candidates = (0..256u64)
        .map(|step| end + step * 0x10000)
        .chain((1..256u64).map(|step| start - step * 0x10000));
    for hint in candidates {
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping; it fails instead.
        let address = unsafe {
            libc::mmap(
                hint as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if address == libc::MAP_FAILED {
            continue;
        }
        let address = address as u64;
        if address != hint {
            // A kernel without MAP_FIXED_NOREPLACE took it as a hint and chose elsewhere.
            // SAFETY: the mapping just made, unused.
            unsafe { libc::munmap(address as *mut libc::c_void, len) };
            continue;
        }
        let reach = address
            .abs_diff(start)
            .max((address + len as u64).abs_diff(end));
        assert!(
            reach < 1 << 31,
            "the payload at {address:#x} is out of reach"
        );
        return (address, len);
    }
    panic!("no free pages within reach of the image");
}
