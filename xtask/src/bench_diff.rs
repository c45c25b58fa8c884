//! The diff's rows of `cargo xtask bench`: for every pair (the generated one in both formats,
//! and a real program's adjacent releases where built), the decode floor (iced-x86 decoding
//! every function of both builds, nothing else), the diff on 1 and on 2 threads, the load of
//! both builds, `hotpatch diff` end to end against `objdump -d` of both files, and the peak
//! memory of `hotpatch diff` against the combined input size.
//!
//! In-process timings come from the criterion benchmarks in `benches/diff.rs` (xtask does not
//! link the libraries it measures; it reads what criterion wrote to
//! `<target>/criterion/**/new/{benchmark,estimates}.json`). Whole-process timings (`hotpatch
//! diff`, `objdump -d`) are the best of a few runs, measured here.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result, bail};

use crate::bench::{Context, Row, Unit};
use crate::bench_pair::{self, Pair};
use crate::bench_real;
use crate::shell;

/// Targets of issue 11, as ratios.
const FLOOR_TARGET: f64 = 3.0;
const OBJDUMP_TARGET: f64 = 0.25;
const MEMORY_TARGET: f64 = 2.0;

/// Whole-process runs per figure; the best counts (the machine is shared).
const PROCESS_RUNS: usize = 3;

/// What `--pair` selects: a family of pairs (both formats) or one pair of it. The families
/// are the generated pair (`generated-*`, or `smoke-*` in the smoke run) and PostgreSQL's
/// releases (`postgres-*`, never in the smoke run).
pub const PAIR_NAMES: &[&str] = &[
    "generated",
    "generated-elf",
    "generated-pe",
    bench_real::FAMILY,
    "postgres-elf",
    "postgres-pe",
];

/// Whether `--pair` values `selection` (none: everything) select `family` in `format`.
fn selected(selection: &[String], family: &str, format: &str) -> bool {
    selection.is_empty()
        || selection
            .iter()
            .any(|name| name == family || *name == format!("{family}-{format}"))
}

/// The pairs `selection` names (all when empty), built unless cached.
pub fn ensure_pairs(data_dir: &Path, smoke: bool, selection: &[String]) -> Result<Vec<Pair>> {
    let mut pairs = Vec::new();
    if ["elf", "pe"]
        .iter()
        .any(|format| selected(selection, "generated", format))
    {
        // Both formats are built together; the selection picks among them.
        pairs.extend(
            bench_pair::ensure_pairs(data_dir, smoke)?
                .into_iter()
                .filter(|pair| {
                    pair.name
                        .rsplit_once('-')
                        .is_some_and(|(_, format)| selected(selection, "generated", format))
                }),
        );
    }
    pairs.extend(bench_real::ensure_pairs(data_dir, smoke, |format| {
        selected(selection, bench_real::FAMILY, format)
    })?);
    Ok(pairs)
}

pub fn rows(context: &Context) -> Result<Vec<Row>> {
    let pairs = ensure_pairs(&context.data_dir, context.smoke, &context.pairs)?;
    if pairs.is_empty() {
        bail!("no benchmark pair could be built (hint: ci/install-packages installs gcc)");
    }
    let estimates = run_criterion(context, &pairs)?;
    let mut rows = Vec::new();
    for pair in &pairs {
        rows.extend(pair_rows(context, pair, &estimates)?);
    }
    Ok(rows)
}

/// Runs `benches/diff.rs` on `pairs` and returns its medians.
fn run_criterion(context: &Context, pairs: &[Pair]) -> Result<Vec<Estimate>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let list = pairs
        .iter()
        .map(Pair::bench_spec)
        .collect::<Vec<_>>()
        .join(";");
    let started = SystemTime::now();
    let mut command = Command::new(&cargo);
    command.arg("bench");
    // The smoke takes the test profile (what `cargo test` already built), the full run the
    // release profile (what the `hotpatch` measured beside it was built with), so neither
    // compiles the workspace once more.
    command.args(["--profile", if context.smoke { "test" } else { "release" }]);
    command
        .args(["--bench", "diff", "--", "--noplot"])
        .env("HOTPATCH_BENCH_PAIRS", list)
        .current_dir(&context.root);
    if context.smoke {
        command.env("HOTPATCH_BENCH_SMOKE", "1");
    }
    shell::run(&mut command)?;
    let estimates = read_criterion(&shell::target_dir().join("criterion"), started)?;
    if estimates.is_empty() {
        bail!("criterion wrote no results in this run");
    }
    Ok(estimates)
}

fn pair_rows(context: &Context, pair: &Pair, estimates: &[Estimate]) -> Result<Vec<Row>> {
    let group = pair.name.as_str();
    let find = |function: &str| {
        estimates
            .iter()
            .find(|e| e.group == group && e.function == function)
            .map(|e| e.median_ns / 1e9)
            .with_context(|| format!("criterion gave no `{function}` for {group}"))
    };
    let floor = find("decode-floor")?;
    let one_thread = find("diff-1-thread")?;
    let two_threads = find("diff-2-threads")?;
    let load = find("load")?;
    let input_bytes = pair.input_bytes() as f64;
    let facts = read_facts(group)?;
    let mut rows = vec![
        Row::new(group, "code in both builds", facts.code_bytes, Unit::Bytes),
        Row::new(
            group,
            "functions in both builds",
            facts.functions,
            Unit::Count,
        ),
        Row::new(
            group,
            "instructions in both builds",
            facts.instructions,
            Unit::Count,
        ),
        Row::new(
            group,
            "decode floor (iced-x86, both builds)",
            floor,
            Unit::Seconds,
        ),
        Row::new(group, "diff, 1 thread", one_thread, Unit::Seconds)
            .against("decode floor", floor, Unit::Seconds)
            .at_most(FLOOR_TARGET, "<= 3x the decode floor"),
        Row::new(group, "diff, 2 threads", two_threads, Unit::Seconds)
            .against("diff, 1 thread", one_thread, Unit::Seconds)
            .ratio(one_thread / two_threads),
        Row::new(
            group,
            "load both builds (with debug info)",
            load,
            Unit::Seconds,
        )
        .against("decode floor", floor, Unit::Seconds),
    ];
    let runs = if context.smoke { 1 } else { PROCESS_RUNS };
    let diff_run = best_of(runs, || time_hotpatch_diff(&context.hotpatch, pair))?;
    match objdump_both(pair, runs)? {
        Some(objdump) => rows.push(
            Row::new(
                group,
                "`hotpatch diff` end to end",
                diff_run.wall.as_secs_f64(),
                Unit::Seconds,
            )
            .against("`objdump -d` of both", objdump.as_secs_f64(), Unit::Seconds)
            .at_most(OBJDUMP_TARGET, "<= 1/4 of objdump"),
        ),
        None => {
            eprintln!("note: objdump is missing; no objdump figure (hint: ci/install-packages)");
            rows.push(Row::new(
                group,
                "`hotpatch diff` end to end",
                diff_run.wall.as_secs_f64(),
                Unit::Seconds,
            ));
        }
    }
    match diff_run.peak_rss {
        Some(peak) => rows.push(
            Row::new(
                group,
                "peak memory of `hotpatch diff`",
                peak as f64,
                Unit::Bytes,
            )
            .against("input (binaries and debug files)", input_bytes, Unit::Bytes)
            .at_most(MEMORY_TARGET, "<= 2x the input"),
        ),
        None => eprintln!(
            "note: /usr/bin/time is missing; no peak memory figure (hint: apt-get install time)"
        ),
    }
    Ok(rows)
}

/// What `benches/diff.rs` counted in the pair's two builds.
struct Facts {
    functions: f64,
    code_bytes: f64,
    instructions: f64,
}

fn read_facts(group: &str) -> Result<Facts> {
    let path = shell::target_dir()
        .join("bench-facts")
        .join(format!("{group}.json"));
    let facts: serde_json::Value = serde_json::from_str(&fs_err::read_to_string(&path)?)
        .with_context(|| format!("reading {}", path.display()))?;
    let number = |key: &str| {
        facts[key]
            .as_f64()
            .with_context(|| format!("no `{key}` in {}", path.display()))
    };
    Ok(Facts {
        functions: number("functions")?,
        code_bytes: number("code_bytes")?,
        instructions: number("instructions")?,
    })
}

/// One whole-process run: its wall time and, with GNU time, its peak resident set size.
struct ProcessRun {
    wall: Duration,
    peak_rss: Option<u64>,
}

/// The fastest of `runs` runs; the peak memory is the largest seen.
fn best_of(runs: usize, mut run: impl FnMut() -> Result<ProcessRun>) -> Result<ProcessRun> {
    let mut best: Option<ProcessRun> = None;
    for _ in 0..runs.max(1) {
        let this = run()?;
        best = Some(match best {
            None => this,
            Some(best) => ProcessRun {
                wall: best.wall.min(this.wall),
                peak_rss: best.peak_rss.max(this.peak_rss),
            },
        });
    }
    best.context("no run")
}

/// `hotpatch diff` of the pair, report to /dev/null, under GNU time when installed.
fn time_hotpatch_diff(hotpatch: &Path, pair: &Pair) -> Result<ProcessRun> {
    let gnu_time = Path::new("/usr/bin/time");
    let mut command = if gnu_time.is_file() {
        let mut command = Command::new(gnu_time);
        command.arg("-v").arg(hotpatch);
        command
    } else {
        Command::new(hotpatch)
    };
    command.arg("diff").arg(&pair.baseline).arg(&pair.fixed);
    if let (Some(base_pdb), Some(fixed_pdb)) = (&pair.baseline_pdb, &pair.fixed_pdb) {
        command
            .arg("--base-pdb")
            .arg(base_pdb)
            .arg("--fixed-pdb")
            .arg(fixed_pdb);
    }
    let line = shell::describe(&command);
    let started = Instant::now();
    let output = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("failed to start `{line}`"))?;
    let wall = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // `hotpatch diff` exits 0 or 10 on success; anything else is a failure of the run.
    if !matches!(output.status.code(), Some(0 | 10)) {
        bail!("`{line}` failed with {}:\n{stderr}", output.status);
    }
    let peak_rss = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(|kbytes| kbytes * 1024);
    Ok(ProcessRun { wall, peak_rss })
}

/// The best time of `objdump -d` on both builds, one after the other, output discarded;
/// `None` when objdump is not installed.
fn objdump_both(pair: &Pair, runs: usize) -> Result<Option<Duration>> {
    if Command::new("objdump")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        return Ok(None);
    }
    let run = best_of(runs, || {
        let started = Instant::now();
        for binary in [&pair.baseline, &pair.fixed] {
            let mut command = Command::new("objdump");
            command.arg("-d").arg(binary).stdout(Stdio::null());
            shell::run(&mut command)?;
        }
        Ok(ProcessRun {
            wall: started.elapsed(),
            peak_rss: None,
        })
    })?;
    Ok(Some(run.wall))
}

/// One benchmark's median, in nanoseconds.
struct Estimate {
    group: String,
    function: String,
    median_ns: f64,
}

/// Every `new/estimates.json` under `criterion_dir` written after `since`, sorted by name.
fn read_criterion(criterion_dir: &Path, since: SystemTime) -> Result<Vec<Estimate>> {
    let mut found = Vec::new();
    let mut stack = vec![criterion_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.ends_with("new/estimates.json")
                && fs_err::metadata(&path)?.modified()? >= since
            {
                found.push(path);
            }
        }
    }
    let mut estimates = Vec::new();
    for estimates_path in found {
        let dir = estimates_path.parent().unwrap_or(criterion_dir);
        let benchmark: serde_json::Value =
            serde_json::from_str(&fs_err::read_to_string(dir.join("benchmark.json"))?)
                .with_context(|| format!("reading {}", dir.join("benchmark.json").display()))?;
        let values: serde_json::Value =
            serde_json::from_str(&fs_err::read_to_string(&estimates_path)?)
                .with_context(|| format!("reading {}", estimates_path.display()))?;
        let median = &values["median"];
        let number = |value: &serde_json::Value| value.as_f64().unwrap_or(f64::NAN);
        estimates.push(Estimate {
            group: benchmark["group_id"].as_str().unwrap_or("").to_owned(),
            function: benchmark["function_id"].as_str().unwrap_or("").to_owned(),
            median_ns: number(&median["point_estimate"]),
        });
    }
    estimates.sort_by(|a, b| (&a.group, &a.function).cmp(&(&b.group, &b.function)));
    Ok(estimates)
}

#[cfg(test)]
mod tests {
    use super::selected;

    #[test]
    fn pair_selection_by_family_or_by_pair() {
        let select = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let all = select(&[]);
        assert!(selected(&all, "generated", "elf") && selected(&all, "postgres", "pe"));
        let family = select(&["postgres"]);
        assert!(selected(&family, "postgres", "elf") && selected(&family, "postgres", "pe"));
        assert!(!selected(&family, "generated", "elf"));
        let one = select(&["postgres-elf", "generated-pe"]);
        assert!(selected(&one, "postgres", "elf") && !selected(&one, "postgres", "pe"));
        assert!(selected(&one, "generated", "pe") && !selected(&one, "generated", "elf"));
    }
}
