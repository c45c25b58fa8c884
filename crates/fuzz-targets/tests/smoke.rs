//! The fuzz smoke of `cargo xtask ci`: every target's seed corpus (`fuzz/corpus/<target>/`,
//! filled by `fuzz/seed.sh`), every saved crash (`fuzz/regressions/<target>-*.bin`) and then
//! deterministic mutations of the seeds, through the very functions the cargo-fuzz targets run
//! (`hotpatch_fuzz_targets`), in this process, for a bounded time per target.
//!
//! ```sh
//! fuzz/seed.sh
//! cargo test -p hotpatch-fuzz-targets --test smoke -- --seconds 20 [TARGET...]
//! ```
//!
//! Prints one line per target (seeds, saved crashes, executions, seconds, crashes). An input
//! whose panic escapes is written to `fuzz/artifacts/<target>/smoke-<hash>.bin` and fails the
//! run, as does a target without seeds (a smoke over nothing would pass quietly).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use hotpatch_fuzz_targets::mutate::Mutator;
use hotpatch_fuzz_targets::{Target, check};

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("fuzz smoke: {message}");
            ExitCode::from(2)
        }
    }
}

/// What one target's smoke did.
struct Figures {
    seeds: usize,
    regressions: usize,
    executions: u64,
    elapsed: Duration,
    crashes: u64,
}

fn run(args: Vec<String>) -> Result<bool, String> {
    let usage = "usage: smoke --seconds N [--corpus DIR] [TARGET...]";
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut seconds = None;
    let mut corpus = root.join("fuzz/corpus");
    let mut targets = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                let value = args.next().ok_or(usage)?;
                seconds = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| format!("--seconds takes a number, not `{value}`"))?,
                );
            }
            "--corpus" => corpus = PathBuf::from(args.next().ok_or(usage)?),
            // libtest's own flags, should cargo pass any.
            flag if flag.starts_with("--") => {}
            name => targets
                .push(Target::from_name(name).ok_or_else(|| format!("no fuzz target `{name}`"))?),
        }
    }
    let budget = Duration::from_secs(seconds.ok_or(usage)?);
    if targets.is_empty() {
        targets = Target::ALL.to_vec();
    }
    let regressions = root.join("fuzz/regressions");
    let artifacts = root.join("fuzz/artifacts");
    let mut clean = true;
    let mut total_executions = 0;
    let mut total_crashes = 0;
    for target in targets {
        let seeds = files(&corpus.join(target.name()), |_| true)?;
        let saved = files(&regressions, |name| {
            Target::of_regression(name) == Some(target)
        })?;
        let figures = smoke(target, &seeds, &saved, budget, &artifacts)?;
        println!(
            "fuzz smoke {target}: {} seeds, {} saved crashes, {} executions in {:.1} s, {} crashes",
            figures.seeds,
            figures.regressions,
            figures.executions,
            figures.elapsed.as_secs_f64(),
            figures.crashes
        );
        if figures.seeds == 0 {
            eprintln!(
                "fuzz smoke {target}: no seeds in {}; run fuzz/seed.sh",
                corpus.join(target.name()).display()
            );
            clean = false;
        }
        total_executions += figures.executions;
        total_crashes += figures.crashes;
        clean &= figures.crashes == 0;
    }
    println!("fuzz smoke: {total_executions} executions, {total_crashes} crashes");
    Ok(clean)
}

/// The contents of the files in `dir` whose names pass `keep`, by name; none if `dir` is missing.
fn files(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<(String, Vec<u8>)>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(format!("{}: {error}", dir.display())),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if path.is_file() && keep(&name) {
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            files.push((name, bytes));
        }
    }
    files.sort();
    Ok(files)
}

/// Runs every seed and every saved crash once, then mutations of the seeds (round robin, each
/// spliced with the next seed) until `budget` has passed.
fn smoke(
    target: Target,
    seeds: &[(String, Vec<u8>)],
    saved: &[(String, Vec<u8>)],
    budget: Duration,
    artifacts: &Path,
) -> Result<Figures, String> {
    let start = Instant::now();
    let mut figures = Figures {
        seeds: seeds.len(),
        regressions: saved.len(),
        executions: 0,
        elapsed: Duration::ZERO,
        crashes: 0,
    };
    let one = |what: &str, input: &[u8], figures: &mut Figures| -> Result<(), String> {
        figures.executions += 1;
        if let Err(escaped) = check(target, input) {
            figures.crashes += 1;
            let dir = artifacts.join(target.name());
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let path = dir.join(format!("smoke-{:016x}.bin", fnv1a(input)));
            std::fs::write(&path, input).map_err(|e| format!("{}: {e}", path.display()))?;
            eprintln!(
                "fuzz smoke {target}: CRASH on {what}, saved as {}: {escaped}",
                path.display()
            );
        }
        Ok(())
    };
    for (name, input) in seeds {
        one(&format!("seed {name}"), input, &mut figures)?;
    }
    for (name, input) in saved {
        one(&format!("saved crash {name}"), input, &mut figures)?;
    }
    if !seeds.is_empty() {
        let mut mutator = Mutator::new(fnv1a(target.name().as_bytes()));
        let mut round = 0usize;
        while start.elapsed() < budget {
            let (name, seed) = &seeds[round % seeds.len()];
            let other = &seeds[(round + 1) % seeds.len()].1;
            let input = mutator.mutate(seed, other);
            one(
                &format!("mutation {round} of seed {name}"),
                &input,
                &mut figures,
            )?;
            round += 1;
        }
    }
    figures.elapsed = start.elapsed();
    Ok(figures)
}

/// FNV-1a: names a saved input by its bytes, and seeds each target's mutator by its name.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
