//! The one check every target makes: no panic may escape `hotpatch_image::load` (and, for the
//! `diff` target, `hotpatch_diff::diff`).
//!
//! The reader deliberately runs each call into the third-party PDB parser under `catch_unwind`
//! and turns its panics into `Error::PdbReaderFailed`. libfuzzer-sys's panic hook aborts on
//! *every* panic, caught or not, so it would report those handled panics as crashes. [`load`] and
//! [`load_and_diff`] therefore replace that hook with one that only records the panic, and abort
//! (which libFuzzer reports as a crash, saving the input) only when a panic unwinds out of the
//! work itself.

use std::backtrace::Backtrace;
use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// The last panic seen on this thread: message with location, and its backtrace.
    static LAST_PANIC: RefCell<Option<(String, Backtrace)>> = const { RefCell::new(None) };
}

/// Runs `hotpatch_image::load(binary, debug)`; aborts the process if it panics.
pub fn load(binary: &[u8], debug: Option<&[u8]>) {
    no_escaping_panic("hotpatch_image::load", || {
        let _ = hotpatch_image::load(binary, debug);
    });
}

/// A build to load: the binary and its separate debug information (PDB or DWARF file).
pub type Build<'a> = (&'a [u8], Option<&'a [u8]>);

/// Loads both builds and, when both load, diffs them in both directions, as `hotpatch diff`
/// and `hotpatch check` do; aborts the process if anything panics.
pub fn load_and_diff(baseline: Build<'_>, fixed: Build<'_>) {
    no_escaping_panic("load + diff", || {
        let (Ok(baseline), Ok(fixed)) = (
            hotpatch_image::load(baseline.0, baseline.1),
            hotpatch_image::load(fixed.0, fixed.1),
        ) else {
            return;
        };
        let config = hotpatch_diff::Config::default();
        std::hint::black_box(hotpatch_diff::diff(&baseline.image, &fixed.image, config));
        std::hint::black_box(hotpatch_diff::diff(&fixed.image, &baseline.image, config));
    });
}

/// Runs `work`; aborts the process, printing the panic that escaped `work`, if it panics.
fn no_escaping_panic(what: &str, work: impl FnOnce()) {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        panic::set_hook(Box::new(|info| {
            // `Backtrace::capture` honours RUST_BACKTRACE (cargo fuzz run sets it) and is
            // symbolized only if printed, so handled panics stay cheap.
            let record = (info.to_string(), Backtrace::capture());
            LAST_PANIC.with(|last| *last.borrow_mut() = Some(record));
        }));
    });
    LAST_PANIC.with(|last| *last.borrow_mut() = None);
    let outcome = panic::catch_unwind(AssertUnwindSafe(work));
    if outcome.is_err() {
        LAST_PANIC.with(|last| match last.borrow_mut().take() {
            Some((message, backtrace)) => {
                eprintln!("panic escaped {what}: {message}\n{backtrace}");
            }
            None => eprintln!("panic escaped {what}"),
        });
        std::process::abort();
    }
}

/// The key that signs the `package` target's seeds (`crates/package/examples/fuzz_seeds.rs`)
/// and every manifest the target signs itself.
pub const PACKAGE_KEY_SEED: [u8; 32] = [0x5e; 32];
/// The clock at which the `package` target verifies archives: inside the seeds' window.
pub const PACKAGE_NOW: u64 = 1_800_000_000;

/// The package reader and verifier on hostile bytes; aborts the process if anything panics
/// or an oracle fails. The first byte picks what the rest is:
/// - `0 mod 3`: a package archive, opened with the trust of [`PACKAGE_KEY_SEED`] (mutations
///   before the signature check), read unverified, and when it opens, written again and
///   opened again to the same manifest and entries;
/// - `1 mod 3`: a manifest, signed with that key and packed with payloads of the stated
///   lengths (mutations after the signature check): what the writer emits, the reader must
///   accept, and the relocations and redirects of what it accepts must resolve or refuse;
/// - `2 mod 3`: a trust file, loaded and checked as its own successor.
pub fn package(data: &[u8]) {
    no_escaping_panic("hotpatch_package", || package_oracle(data));
}

fn package_oracle(data: &[u8]) {
    use hotpatch_package::{
        Limits, Manifest, SecretKey, Trust, TrustFile, open, read_unverified, write_package,
    };
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let key = SecretKey::from_seed(PACKAGE_KEY_SEED);
    let trust = Trust::from_public_key(key.public_key());
    let limits = Limits::default();
    match mode % 3 {
        0 => {
            let _ = read_unverified(rest, &limits);
            let Ok(verified) = open(rest, &trust, PACKAGE_NOW, &limits) else {
                return;
            };
            resolve_everything(&verified);
            let again = write_package(verified.manifest.clone(), verified.entries.clone(), &key)
                .expect("a manifest the reader accepted is accepted by the writer");
            let reopened = open(&again, &trust, PACKAGE_NOW, &limits)
                .expect("what the writer emits, the reader accepts");
            assert_eq!(reopened.manifest, verified.manifest);
            assert_eq!(reopened.entries, verified.entries);
        }
        1 => {
            let Ok(manifest) = serde_json::from_slice::<Manifest>(rest) else {
                return;
            };
            let mut files = std::collections::BTreeMap::new();
            for target in &manifest.targets {
                if let Some(name) = &target.payload
                    && target.payload_len <= 1 << 16
                {
                    files.insert(name.clone(), vec![0xcc; target.payload_len as usize]);
                }
            }
            let now = manifest.issued_at;
            let Ok(bytes) = write_package(manifest, files, &key) else {
                return;
            };
            let opened = open(&bytes, &trust, now, &limits)
                .expect("what the writer emits, the reader accepts");
            resolve_everything(&opened);
        }
        _ => {
            if let Ok(file) = TrustFile::load(rest, None) {
                let _ = file.accept_successor(rest);
                std::hint::black_box(Trust::from_trust_file(&file).key_ids().count());
            }
        }
    }
}

/// Resolves every relocation and redirect of a verified package at a fixed load address, as
/// the applier does: each may refuse with an `Err`, none may panic.
fn resolve_everything(package: &hotpatch_package::VerifiedPackage) {
    const PAYLOAD_BASE: u64 = 0x7f12_3450_0000;
    const BIAS: u64 = 0x7f12_0000_0000;
    for target in &package.manifest.targets {
        let Some(payload) = package.payload(target) else {
            continue;
        };
        let mut code = payload.to_vec();
        let _ = hotpatch_package::apply_relocations(&mut code, PAYLOAD_BASE, BIAS, &target.relocations);
        for site in &target.sites {
            let (Some(site_address), Some(new_code)) = (
                BIAS.checked_add(site.baseline_rva),
                PAYLOAD_BASE.checked_add(site.payload_offset),
            ) else {
                continue;
            };
            let _ = hotpatch_package::redirect_bytes(site, site_address, new_code);
        }
    }
}

/// Loads both builds, diffs them, and lifts the changes (as `hotpatch build` does); aborts the
/// process if anything panics.
pub fn load_diff_and_lift(baseline: Build<'_>, fixed: Build<'_>) {
    no_escaping_panic("load + diff + lift", || {
        let (Ok(baseline), Ok(fixed)) = (
            hotpatch_image::load(baseline.0, baseline.1),
            hotpatch_image::load(fixed.0, fixed.1),
        ) else {
            return;
        };
        let diff = hotpatch_diff::diff(
            &baseline.image,
            &fixed.image,
            hotpatch_diff::Config::default(),
        );
        std::hint::black_box(hotpatch_lift::lift(&baseline.image, &fixed.image, &diff).ok());
    });
}
