//! The work of each fuzz target on one input, written once and run by three callers: the
//! cargo-fuzz targets in `fuzz/fuzz_targets/` (libFuzzer, coverage-guided), the replay of saved
//! crashes (`tests/it/mutation.rs::fuzz_regressions_do_not_panic`), and the in-process fuzz
//! smoke of `cargo xtask ci` (`tests/smoke.rs`: seeds, saved crashes and deterministic
//! mutations for a bounded time).
//!
//! The oracle is the same everywhere: no panic may escape the work ([`check`]). The image
//! reader runs each call into the third-party PDB parser (`pdb2`) under `catch_unwind` and turns
//! its panics into `Error::PdbReaderFailed`; those handled panics are not findings, so the
//! panic hook installed here records panics raised inside [`check`] quietly and reports only
//! the one that escapes. Panics elsewhere (other threads, other tests) go to the hook that was
//! installed before.

pub mod mutate;

use std::backtrace::Backtrace;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

/// The PE image the `pdb` target pairs with its input, and the `diff` and `lift` targets'
/// baseline: PE32+ built by clang + lld for x86_64-w64-mingw32.
static PE: &[u8] = include_bytes!("../../../fixtures/bounds_check/pe/baseline.exe");
/// The real PDB of [`PE`].
static PDB: &[u8] = include_bytes!("../../../fixtures/bounds_check/pe/baseline.pdb");
/// The `diff` and `lift` targets' ELF baseline (with its own DWARF).
static ELF: &[u8] = include_bytes!("../../../fixtures/bounds_check/elf/baseline");
/// `fixtures/bounds_check/elf/baseline` after `objcopy --strip-all` (no `.symtab`, no DWARF,
/// build-id kept; `fuzz/seed.sh --fixture` remakes it): the `dwarf` target's binary, so that
/// symbols and debug information both come from the input.
static STRIPPED: &[u8] = include_bytes!("../../../fuzz/fixtures/bounds_check-baseline.stripped");

/// One fuzz target: what its input is and which work it goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// A PE image, loaded with no PDB (inputs not starting `MZ` are skipped).
    Pe,
    /// The PDB of the fixed `bounds_check` PE baseline.
    Pdb,
    /// An ELF binary with whatever DWARF it carries (inputs not starting `\x7fELF` are skipped).
    Elf,
    /// The separate debug file of the fixed, stripped `bounds_check` ELF baseline.
    Dwarf,
    /// A fixed build, loaded and diffed both ways against `bounds_check`'s baseline.
    Diff,
    /// A package archive, a manifest to sign, or a trust file (the first byte chooses).
    Package,
    /// A fixed build, loaded, diffed against `bounds_check`'s baseline and lifted.
    Lift,
}

impl Target {
    /// Every target, in the order `cargo xtask fuzz` and the smoke run them.
    pub const ALL: [Target; 7] = [
        Target::Pe,
        Target::Pdb,
        Target::Elf,
        Target::Dwarf,
        Target::Diff,
        Target::Package,
        Target::Lift,
    ];

    /// The target's name: its cargo-fuzz binary, its corpus directory `fuzz/corpus/<name>`,
    /// and the prefix of its saved crashes `fuzz/regressions/<name>-<hash>.bin`.
    pub fn name(self) -> &'static str {
        match self {
            Target::Pe => "pe",
            Target::Pdb => "pdb",
            Target::Elf => "elf",
            Target::Dwarf => "dwarf",
            Target::Diff => "diff",
            Target::Package => "package",
            Target::Lift => "lift",
        }
    }

    /// The target called `name`.
    pub fn from_name(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|target| target.name() == name)
    }

    /// The target a saved crash belongs to, by its file name `<target>-<hash>.bin`.
    pub fn of_regression(file_name: &str) -> Option<Target> {
        Target::from_name(file_name.split('-').next()?)
    }

    /// Runs the target's work on `data`. Bad input is refused inside; only a bug panics.
    pub fn run(self, data: &[u8]) {
        match self {
            Target::Pe => pe(data),
            Target::Pdb => pdb(data),
            Target::Elf => elf(data),
            Target::Dwarf => dwarf(data),
            Target::Diff => diff(data),
            Target::Package => package(data),
            Target::Lift => lift(data),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `pe`: the input as a PE image, loaded with no PDB.
pub fn pe(data: &[u8]) {
    // Anything else is refused by the reader's sniffing at once.
    if data.starts_with(b"MZ") {
        let _ = hotpatch_image::load(data, None);
    }
}

/// `pdb`: the input as the PDB of [`PE`]; the image is valid, so every input reaches the PDB
/// reader (MSF, GUID/age match, TPI/IPI, module symbols and lines, globals, publics).
pub fn pdb(data: &[u8]) {
    let _ = hotpatch_image::load(PE, Some(data));
}

/// `elf`: the input as an ELF binary (with its own DWARF), loaded with no debug file.
pub fn elf(data: &[u8]) {
    if data.starts_with(b"\x7fELF") {
        let _ = hotpatch_image::load(data, None);
    }
}

/// `dwarf`: the input as the separate debug file of [`STRIPPED`]; it must carry that binary's
/// build-id (`041fd894…`) to get past the match check (the seeds do, and mutations mostly keep it).
pub fn dwarf(data: &[u8]) {
    let _ = hotpatch_image::load(STRIPPED, Some(data));
}

/// A build to load: the binary and its separate debug information (PDB or DWARF file).
pub type Build<'a> = (&'a [u8], Option<&'a [u8]>);

/// The baseline and fixed builds of the `diff` and `lift` targets: the input is the PDB of the
/// PE baseline when it starts with the MSF magic (against that image with its real PDB), a PE
/// image when it starts `MZ` (against the PE baseline, both without PDB), else an ELF binary
/// (against the ELF baseline).
fn builds(data: &[u8]) -> (Build<'_>, Build<'_>) {
    if data.starts_with(b"Microsoft C/C++ MSF 7.00") {
        ((PE, Some(PDB)), (PE, Some(data)))
    } else if data.starts_with(b"MZ") {
        ((PE, None), (data, None))
    } else {
        ((ELF, None), (data, None))
    }
}

/// Both builds of [`builds`], loaded; `None` when either is refused.
fn load_builds(data: &[u8]) -> Option<(hotpatch_image::Loaded<'_>, hotpatch_image::Loaded<'_>)> {
    let (baseline, fixed) = builds(data);
    Some((
        hotpatch_image::load(baseline.0, baseline.1).ok()?,
        hotpatch_image::load(fixed.0, fixed.1).ok()?,
    ))
}

/// `diff`: the input as a fixed build ([`builds`]); when both builds load, they are diffed in
/// both directions, as `hotpatch diff` and `hotpatch check` do.
pub fn diff(data: &[u8]) {
    let Some((baseline, fixed)) = load_builds(data) else {
        return;
    };
    let config = hotpatch_diff::Config::default();
    std::hint::black_box(hotpatch_diff::diff(&baseline.image, &fixed.image, config));
    std::hint::black_box(hotpatch_diff::diff(&fixed.image, &baseline.image, config));
}

/// `lift`: the input as a fixed build ([`builds`]), loaded, diffed and lifted as `hotpatch
/// build` does.
pub fn lift(data: &[u8]) {
    let Some((baseline, fixed)) = load_builds(data) else {
        return;
    };
    let diff = hotpatch_diff::diff(
        &baseline.image,
        &fixed.image,
        hotpatch_diff::Config::default(),
    );
    std::hint::black_box(hotpatch_lift::lift(&baseline.image, &fixed.image, &diff).ok());
}

/// The key that signs the `package` target's seeds (`crates/package/examples/fuzz_seeds.rs`)
/// and every manifest the target signs itself.
pub const PACKAGE_KEY_SEED: [u8; 32] = [0x5e; 32];
/// The clock at which the `package` target verifies archives: inside the seeds' window.
pub const PACKAGE_NOW: u64 = 1_800_000_000;

/// `package`: the package reader and verifier on hostile bytes; an oracle that fails panics.
/// The first byte picks what the rest is:
/// - `0 mod 3`: a package archive, opened with the trust of [`PACKAGE_KEY_SEED`] (mutations
///   before the signature check), read unverified, and when it opens, written again and
///   opened again to the same manifest and entries;
/// - `1 mod 3`: a manifest, signed with that key and packed with payloads of the stated
///   lengths (mutations after the signature check): what the writer emits, the reader must
///   accept, and the relocations and redirects of what it accepts must resolve or refuse;
/// - `2 mod 3`: a trust file, loaded and checked as its own successor.
pub fn package(data: &[u8]) {
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
        let _ =
            hotpatch_package::apply_relocations(&mut code, PAYLOAD_BASE, BIAS, &target.relocations);
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

/// A panic that escaped a target's work: a finding.
#[derive(Debug)]
pub struct EscapedPanic {
    /// The panic's message with its location (`panicked at file:line:col: message`).
    pub message: String,
    /// Where it was raised; captured as `RUST_BACKTRACE` says (cargo fuzz run sets it).
    pub backtrace: Option<Backtrace>,
}

impl fmt::Display for EscapedPanic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(backtrace) = &self.backtrace {
            write!(f, "\n{backtrace}")?;
        }
        Ok(())
    }
}

thread_local! {
    /// Whether this thread is inside [`check`]: its panics are recorded, not printed.
    static GUARDED: Cell<bool> = const { Cell::new(false) };
    /// The last panic raised on this thread inside [`check`]: message with location, and its
    /// backtrace.
    static LAST_PANIC: RefCell<Option<(String, Backtrace)>> = const { RefCell::new(None) };
}

/// Runs `target` on `data`; `Err` with the panic if one escaped the work.
///
/// Panics raised and handled inside (the reader's contained `pdb2` panics) are recorded without
/// being printed; when one escapes, the last recorded panic is its origin. Panics raised on
/// other threads (the diff's parallel work) are left to the previous hook, and one that
/// escapes arrives here through the work's result.
pub fn check(target: Target, data: &[u8]) -> Result<(), EscapedPanic> {
    guarded(|| target.run(data))
}

/// Runs `work`; `Err` with the panic if one escaped it (see [`check`]).
fn guarded(work: impl FnOnce()) -> Result<(), EscapedPanic> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if GUARDED.get() {
                // `Backtrace::capture` honours RUST_BACKTRACE and is symbolized only if
                // printed, so handled panics stay cheap.
                let record = (info.to_string(), Backtrace::capture());
                LAST_PANIC.with(|last| *last.borrow_mut() = Some(record));
            } else {
                previous(info);
            }
        }));
    });
    LAST_PANIC.with(|last| *last.borrow_mut() = None);
    GUARDED.set(true);
    let outcome = panic::catch_unwind(AssertUnwindSafe(work));
    GUARDED.set(false);
    let Err(payload) = outcome else {
        return Ok(());
    };
    let recorded = LAST_PANIC.with(|last| last.borrow_mut().take());
    Err(match recorded {
        Some((message, backtrace)) => EscapedPanic {
            message,
            backtrace: Some(backtrace),
        },
        None => EscapedPanic {
            message: payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic with a non-text payload".to_owned()),
            backtrace: None,
        },
    })
}

/// For libFuzzer: runs [`check`] and aborts the process, printing the panic, when one escaped
/// (libFuzzer reports the abort as a crash and saves the input).
pub fn check_or_abort(target: Target, data: &[u8]) {
    if let Err(escaped) = check(target, data) {
        eprintln!("panic escaped the {target} target: {escaped}");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_regressions_map_to_their_target() {
        for target in Target::ALL {
            assert_eq!(Target::from_name(target.name()), Some(target));
        }
        assert_eq!(
            Target::of_regression("dwarf-3e24f9bc.bin"),
            Some(Target::Dwarf)
        );
        assert_eq!(
            Target::of_regression("package-00.bin"),
            Some(Target::Package)
        );
        assert_eq!(Target::of_regression("readme.md"), None);
    }

    #[test]
    fn a_contained_panic_is_no_finding_and_an_escaped_one_is_reported_with_its_place() {
        let contained = guarded(|| {
            let _ = panic::catch_unwind(|| panic!("contained, as the reader contains pdb2's"));
        });
        assert!(contained.is_ok());
        let line = line!() + 1;
        let escaped = guarded(|| panic!("escaped {}", 42)).unwrap_err();
        assert!(
            escaped.message.contains("escaped 42"),
            "{}",
            escaped.message
        );
        assert!(
            escaped.message.contains(&format!("src/lib.rs:{line}:")),
            "{}",
            escaped.message
        );
        // After an escape the thread is unguarded again and the next run starts clean.
        assert!(guarded(|| ()).is_ok());
    }

    #[test]
    fn refused_input_is_no_finding() {
        for target in Target::ALL {
            for input in [
                &b""[..],
                b"MZ",
                b"\x7fELF\x02\x01",
                b"Microsoft C/C++ MSF 7.00",
            ] {
                assert!(check(target, input).is_ok(), "{target} on {input:?}");
            }
        }
    }
}
