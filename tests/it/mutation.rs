//! Hostile input: deterministic mutations of every fixture (images and PDBs) go through the
//! readers, which must return `Ok` or `Err` and never panic. The `cargo fuzz` targets in `fuzz/`
//! explore the same surface with coverage feedback; this test keeps a fixed sample in CI.

use crate::support::{Build, builds};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Mutations per fixture file. Each fixture is mutated in its binary and, for PE, in its PDB.
const MUTATIONS_PER_FILE: u64 = 1000;

/// splitmix64: a tiny, well-distributed, reproducible generator.
struct Mutator(u64);

impl Mutator {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// One of: flip a bit, overwrite a byte, plant an extreme 32-bit value (offsets, counts and
    /// sizes are where readers go wrong), truncate, or zero a run. Mutations cluster in the first
    /// 4 KiB half of the time because the headers that steer parsing live there.
    fn mutate(&mut self, original: &[u8]) -> Vec<u8> {
        let mut bytes = original.to_vec();
        let len = bytes.len();
        let at = if self.next().is_multiple_of(2) {
            self.below(len.min(4096))
        } else {
            self.below(len)
        };
        match self.next() % 5 {
            0 => bytes[at] ^= 1 << (self.next() % 8),
            1 => bytes[at] = self.next() as u8,
            2 => {
                let value: u32 = match self.next() % 4 {
                    0 => u32::MAX,
                    1 => 0x8000_0000,
                    2 => 0,
                    _ => self.next() as u32,
                };
                let end = (at + 4).min(len);
                bytes[at..end].copy_from_slice(&value.to_le_bytes()[..end - at]);
            }
            3 => bytes.truncate(at),
            _ => {
                let end = (at + 1 + self.below(256)).min(len);
                bytes[at..end].fill(0);
            }
        }
        bytes
    }
}

fn seed(label: &str) -> u64 {
    label.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Loads and touches every function's code so lazily computed parts run too.
fn load_quietly(binary: &[u8], debug: Option<&[u8]>) -> bool {
    catch_unwind(AssertUnwindSafe(|| {
        if let Ok(loaded) = hotpatch_image::load(binary, debug) {
            let bytes: usize = loaded.image.functions.iter().map(|f| f.code.len()).sum();
            std::hint::black_box(bytes);
        }
    }))
    .is_ok()
}

fn mutate_build(build: &Build) -> Vec<String> {
    let binary = std::fs::read(&build.binary).expect("fixture binary");
    let pdb = build
        .pdb
        .as_ref()
        .map(|p| std::fs::read(p).expect("fixture PDB"));
    let mut failures = Vec::new();
    let mut mutator = Mutator(seed(&build.label()));
    for round in 0..MUTATIONS_PER_FILE {
        let mutated = mutator.mutate(&binary);
        if !load_quietly(&mutated, pdb.as_deref()) {
            failures.push(format!("{} binary mutation {round}", build.label()));
        }
        if let Some(pdb) = &pdb {
            let mutated_pdb = mutator.mutate(pdb);
            if !load_quietly(&binary, Some(&mutated_pdb)) {
                failures.push(format!("{} PDB mutation {round}", build.label()));
            }
        }
    }
    failures
}

#[test]
fn mutated_fixtures_never_panic_the_readers() {
    // The PDB crate panics on some corrupt input; the reader contains it. Keep the expected panic
    // messages off the test output, but keep the hook for panics on other threads.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() != Some("mutation-worker") {
            default_hook(info);
        }
    }));
    let builds: Vec<Build> = builds().into_iter().filter(|b| b.side == "fixed").collect();
    let workers: Vec<_> = builds
        .chunks(builds.len().div_ceil(2))
        .map(|chunk| {
            let chunk = chunk.to_vec();
            std::thread::Builder::new()
                .name("mutation-worker".into())
                .spawn(move || chunk.iter().flat_map(mutate_build).collect::<Vec<_>>())
                .expect("spawn")
        })
        .collect();
    let failures: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("worker"))
        .collect();
    assert!(
        failures.is_empty(),
        "the readers panicked on {} inputs:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Inputs the `cargo fuzz` targets found (fuzz/regressions): each must load or fail cleanly.
/// `dwarf-*` inputs are separate debug files for the stripped fixture the `dwarf` target uses.
#[test]
fn fuzz_regressions_do_not_panic() {
    let root = crate::support::root();
    let stripped = std::fs::read(root.join("fuzz/fixtures/bounds_check-baseline.stripped"))
        .expect("stripped fixture");
    let mut regressions: Vec<_> = std::fs::read_dir(root.join("fuzz/regressions"))
        .expect("fuzz/regressions exists")
        .map(|entry| entry.expect("entry").path())
        .collect();
    regressions.sort();
    assert!(!regressions.is_empty());
    for path in regressions {
        let input = std::fs::read(&path).expect("regression input");
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let outcome = catch_unwind(AssertUnwindSafe(|| match name.split('-').next() {
            Some("dwarf") => hotpatch_image::load(&stripped, Some(&input)).map(|_| ()),
            _ => hotpatch_image::load(&input, None).map(|_| ()),
        }));
        assert!(outcome.is_ok(), "{name} panicked the reader");
    }
}
