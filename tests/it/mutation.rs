//! Hostile input: deterministic mutations of every build of every fixture (baseline and fixed,
//! images and PDBs) go through the readers, and each mutated build that loads is diffed and
//! assessed against its original in both directions, as `hotpatch check` would. Nothing may
//! panic: the readers return `Ok` or `Err`, the diff and the policy take whatever the readers
//! accepted. The `cargo fuzz` targets in `fuzz/` explore the same surface with coverage
//! feedback; this test keeps a fixed sample in CI.

use crate::support::{Build, builds};
use hotpatch_image::{Diagnostic, Loaded};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;

/// Mutations per fixture file: each build is mutated this often in its binary and, for PE, as
/// often in its PDB, and every mutated build is loaded.
const MUTATIONS_PER_FILE: u64 = 60;

/// How many of those mutations (the first ones) are also checked: diffed and assessed against
/// the original both ways. A check costs about 25 times a load (two diffs of whole images), so
/// 162 files (27 cases, two sides, ELF + PE + PDB) at 8 checks and 60 loads each take about
/// 20 s of CPU in the debug test profile; more pushes the test past a minute on this 2-core
/// machine when other builds share it.
const CHECKED_PER_FILE: u64 = 8;

/// `HOTPATCH_MUTATIONS=<n>` mutates `n` times per file and checks every one of them, for a
/// deeper search by hand; without it, `MUTATIONS_PER_FILE` and `CHECKED_PER_FILE`.
fn mutation_counts() -> (u64, u64) {
    match std::env::var("HOTPATCH_MUTATIONS").map(|n| n.parse()) {
        Ok(Ok(n)) => (n, n),
        _ => (MUTATIONS_PER_FILE, CHECKED_PER_FILE),
    }
}

/// The name the threads of the test's own pool carry (the diff's parallel work runs on them
/// too), so the panic hook knows whose panics to record quietly.
const WORKER_NAME: &str = "mutation-worker";

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

/// Where each panic message on a worker thread was raised. The PDB reader contains panics of
/// `pdb2` on purpose, so a panic is judged by whether it escaped; its payload carries the
/// message, and this map gives the place. Keyed by message because a panic inside the diff's
/// parallel work is raised on whichever worker ran that part and resumed on the caller.
static PANIC_PLACES: Mutex<Option<HashMap<String, String>>> = Mutex::new(None);

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "<non-text panic payload>".to_owned())
}

/// Records panics on worker threads instead of printing them (the contained `pdb2` panics would
/// flood the output), and keeps the default hook for every other thread.
fn install_quiet_hook() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some(WORKER_NAME) {
                let place = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                let mut places = PANIC_PLACES.lock().unwrap_or_else(|e| e.into_inner());
                places
                    .get_or_insert_with(HashMap::new)
                    .insert(panic_message(info.payload()), place);
            } else {
                default_hook(info);
            }
        }));
    });
}

/// Diffs `fixed` against `baseline` and assesses the result with the default policy, as
/// `hotpatch check` does (src/check.rs), then serializes both as `--json` would.
fn check(baseline: &Loaded<'_>, fixed: &Loaded<'_>) {
    let diff = hotpatch_diff::diff(
        &baseline.image,
        &fixed.image,
        hotpatch_diff::Config::default(),
    );
    let diagnostics: Vec<Diagnostic> = baseline
        .diagnostics
        .iter()
        .chain(&fixed.diagnostics)
        .cloned()
        .collect();
    let subject = hotpatch_policy::Subject {
        binary_names: vec!["mutated", fixed.image.identity.sha256.as_str()],
        baseline: &baseline.image,
        fixed: &fixed.image,
        diff: &diff,
        diagnostics: &diagnostics,
    };
    let assessment = hotpatch_policy::assess(&subject, &hotpatch_policy::Policy::default());
    std::hint::black_box(serde_json::to_vec(&diff).map(|v| v.len()).ok());
    std::hint::black_box(serde_json::to_vec(&assessment).map(|v| v.len()).ok());
}

/// Loads a mutated build and, when it loads and `checked` is set, checks it against its
/// `original` both ways. Returns the stage and place of a panic that escaped.
fn exercise(
    original: &Loaded<'_>,
    binary: &[u8],
    debug: Option<&[u8]>,
    checked: bool,
) -> Result<(), String> {
    let mut stage = "load";
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let Ok(mutated) = hotpatch_image::load(binary, debug) else {
            return;
        };
        // Touch every function's code so lazily computed parts run too.
        let bytes: usize = mutated.image.functions.iter().map(|f| f.code.len()).sum();
        std::hint::black_box(bytes);
        if !checked {
            return;
        }
        stage = "check original -> mutated";
        check(original, &mutated);
        stage = "check mutated -> original";
        check(&mutated, original);
    }));
    outcome.map_err(|payload| {
        let message = panic_message(&*payload);
        let places = PANIC_PLACES.lock().unwrap_or_else(|e| e.into_inner());
        let place = places
            .as_ref()
            .and_then(|places| places.get(&message))
            .map_or("<unknown place>", String::as_str);
        // The message can quote a whole listing line; its start is enough to tell bugs apart.
        let message: String = message.chars().take(160).collect();
        format!("{stage} panicked at {place}: {message}")
    })
}

/// Mutates one build in its binary and in its PDB (see [`mutation_counts`]); returns a line per
/// input that panicked.
fn mutate_build(build: &Build) -> Vec<String> {
    // A fixture that cannot be read is reported as a failure, not a panic: the pool would
    // resume a worker's panic without its message.
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|error| vec![format!("{}: {error}", path.display())])
    };
    let (binary, pdb) = match (read(&build.binary), build.pdb.as_deref().map(read)) {
        (Ok(binary), None) => (binary, None),
        (Ok(binary), Some(Ok(pdb))) => (binary, Some(pdb)),
        (Err(failure), _) | (_, Some(Err(failure))) => return failure,
    };
    let original = match hotpatch_image::load(&binary, pdb.as_deref()) {
        Ok(original) => original,
        Err(error) => return vec![format!("{} does not load: {error}", build.label())],
    };
    let mut failures = Vec::new();
    let mut mutator = Mutator(seed(&build.label()));
    let (mutations, checked) = mutation_counts();
    for round in 0..mutations {
        let check = round < checked;
        let mutated = mutator.mutate(&binary);
        if let Err(panic) = exercise(&original, &mutated, pdb.as_deref(), check) {
            failures.push(format!(
                "{} binary mutation {round}: {panic}",
                build.label()
            ));
        }
        if let Some(pdb) = &pdb {
            let mutated_pdb = mutator.mutate(pdb);
            if let Err(panic) = exercise(&original, &binary, Some(&mutated_pdb), check) {
                failures.push(format!("{} PDB mutation {round}: {panic}", build.label()));
            }
        }
    }
    failures
}

#[test]
fn mutated_fixtures_never_panic_the_readers_the_diff_or_the_policy() {
    install_quiet_hook();
    let builds = builds();
    // The test's own pool, so that every thread that runs its work (the diff's parallel parts
    // included) carries the worker name; two threads, as the machine has two cores.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .thread_name(|_| WORKER_NAME.to_owned())
        .build()
        .expect("build the mutation thread pool");
    let failures: Vec<String> = pool.install(|| builds.par_iter().flat_map(mutate_build).collect());
    let mut failures = failures;
    failures.sort();
    // The same bug usually fires on many inputs: count them by the place that panicked.
    let mut by_place: BTreeMap<&str, usize> = BTreeMap::new();
    for failure in &failures {
        let place = failure.split(" panicked at ").nth(1).unwrap_or("");
        let place = place.split(": ").next().unwrap_or(place);
        *by_place.entry(place).or_default() += 1;
    }
    assert!(
        failures.is_empty(),
        "{} of {} inputs panicked ({by_place:?}):\n{}",
        failures.len(),
        builds
            .iter()
            .map(|b| if b.pdb.is_some() { 2 } else { 1 })
            .sum::<u64>()
            * mutation_counts().0,
        failures.join("\n")
    );
}

/// Inputs the `cargo fuzz` targets found (fuzz/regressions): each goes through the work of the
/// target its name starts with (`<target>-<hash>.bin`), the very function the cargo-fuzz target
/// runs (`hotpatch_fuzz_targets`), and no panic may escape it.
#[test]
fn fuzz_regressions_do_not_panic() {
    let root = crate::support::root();
    let mut regressions: Vec<_> = std::fs::read_dir(root.join("fuzz/regressions"))
        .expect("fuzz/regressions exists")
        .map(|entry| entry.expect("entry").path())
        .collect();
    regressions.sort();
    assert!(!regressions.is_empty());
    let mut escaped = Vec::new();
    for path in regressions {
        let input = std::fs::read(&path).expect("regression input");
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let target = hotpatch_fuzz_targets::Target::of_regression(&name)
            .unwrap_or_else(|| panic!("{name} does not start with a fuzz target's name"));
        if let Err(panic) = hotpatch_fuzz_targets::check(target, &input) {
            escaped.push(format!("{name} ({target}): {panic}"));
        }
    }
    assert!(escaped.is_empty(), "{}", escaped.join("\n"));
}
