//! The release half of `cargo xtask bench` (issue 11): `hotpatch build` of a generated release
//! of many binaries (total and per binary, 1 against 2 threads), package payload against the
//! fixed binary and against generic binary deltas of the stripped pair (single-function fixes
//! per size class and the whole release, and the check that a pair without a code change
//! carries no payload), and the applier's stop window for 1, 100 and 1,000 replaced functions
//! in a process with 16 and 64 busy threads, measured by the real `hotpatch-apply` on a running
//! process.
//!
//! The release has a size mix ([`Mix`]): mostly small one-file programs, and one binary in a
//! hundred a large program of the generated pair's kind (`bench_pair::generate`), each with a
//! one-function fix early in the file. The generated C is built once with gcc (at
//! `nice -n 19`, two compiles at a time) and cached under `<data_dir>/release-<n>-v<version>`
//! and `<data_dir>/stop-window`, stamped with [`RELEASE_VERSION`] and the mix, and with
//! [`STOP_WINDOW_VERSION`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result, bail};

use crate::bench::{Context, Row, Unit};
use crate::{bench_pair, shell};

/// Bump when the generated release's C or its build changes: its builds live in
/// `release-<n>-v<version>`, so a new version is built beside the old one (which another
/// checkout may still use) instead of over it.
const RELEASE_VERSION: u32 = 2;
/// The stop-window program's stamp, apart from the release's so that a change to the release
/// does not rebuild it.
const STOP_WINDOW_VERSION: &str = "bench-release v1";
/// Functions in each small program of the release.
const FUNCTIONS_PER_BINARY: usize = 40;

/// The shape of the generated release: how many binaries, which get a one-function fix, and
/// which of those are large programs. Most binaries of a real release are small and a few are
/// large; the single-function payload is judged in both classes, because a generic delta
/// grows with the code a fix moves and the payload does not.
#[derive(Clone, Copy, Debug)]
struct Mix {
    n_binaries: usize,
    /// Binaries with a fix: one in every `n_binaries / n_fixed`, from the first.
    n_fixed: usize,
    /// One fixed binary in `large_every` (the middle one of each run) is a large program.
    large_every: usize,
    /// The large programs' function counts, in turn (about 276 bytes of code each).
    large_functions: &'static [usize],
    /// Functions per translation unit of a large program; its fix is the last function of the
    /// first unit, so the code of every later unit moves.
    large_per_unit: usize,
}

/// The default release: 1,000 binaries, 100 with a fix, 10 of those large (one binary in a
/// hundred) with 0.28 to 1.4 MB of code. A first build is about 800 s of compiling on one core.
const FULL_MIX: Mix = Mix {
    n_binaries: 1000,
    n_fixed: 100,
    large_every: 10,
    large_functions: &[1000, 1250, 1500, 1750, 2000, 2500, 3000, 3500, 4000, 5000],
    large_per_unit: 250,
};

/// The smoke's release: every code path, one very small "large" program.
const SMOKE_MIX: Mix = Mix {
    n_binaries: 12,
    n_fixed: 3,
    large_every: 3,
    large_functions: &[150],
    large_per_unit: 50,
};

/// The size class of a binary of the release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    /// [`FUNCTIONS_PER_BINARY`] functions in one file ([`release_program`]).
    Small,
    /// The generated pair's kind of program ([`bench_pair::generate`]), in units.
    Large { functions: usize },
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Class::Small => "small",
            Class::Large { .. } => "large",
        }
    }

    fn functions(self) -> usize {
        match self {
            Class::Small => FUNCTIONS_PER_BINARY,
            Class::Large { functions } => functions,
        }
    }
}

impl Mix {
    fn fix_stride(&self) -> usize {
        (self.n_binaries / self.n_fixed.max(1)).max(1)
    }

    /// Binary `idx` gets the fix when it is one of every `n_binaries / n_fixed`.
    fn has_fix(&self, idx: usize) -> bool {
        idx.is_multiple_of(self.fix_stride()) && idx / self.fix_stride() < self.n_fixed
    }

    fn class(&self, idx: usize) -> Class {
        if !self.has_fix(idx) || self.large_functions.is_empty() {
            return Class::Small;
        }
        let fixed_ordinal = idx / self.fix_stride();
        if fixed_ordinal % self.large_every != self.large_every / 2 {
            return Class::Small;
        }
        let large_ordinal = fixed_ordinal / self.large_every;
        Class::Large {
            functions: self.large_functions[large_ordinal % self.large_functions.len()],
        }
    }

    /// The function the fix changes: `f1` of a small program, the last of the first unit of a
    /// large one (never inlined: its callers are all in later units).
    fn fixed_function(&self, class: Class) -> String {
        match class {
            Class::Small => "f1".to_owned(),
            Class::Large { .. } => format!("f{}", self.large_per_unit - 1),
        }
    }
}

/// Functions in the stop-window program; its fixed variants change the first 1, 100 or 1,000.
const STOP_WINDOW_FUNCTIONS: usize = 1000;
const REPLACED: [usize; 3] = [1, 100, 1000];
const BUSY_THREADS: [usize; 2] = [16, 64];
/// Stop windows measured per (threads, functions, priority); the median is reported.
const REPETITIONS: usize = 5;

pub fn rows(context: &Context) -> Result<Vec<Row>> {
    for tool in ["gcc", "strip"] {
        if !tool_exists(tool) {
            bail!("{tool} is missing (hint: ci/install-packages)");
        }
    }
    let mix = if context.smoke {
        SMOKE_MIX
    } else {
        match std::env::var("HOTPATCH_BENCH_RELEASE_BINARIES") {
            Ok(text) => {
                let n_binaries = text
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n >= 10)
                    .with_context(|| {
                        format!(
                            "HOTPATCH_BENCH_RELEASE_BINARIES={text:?} is not a number of at least 10"
                        )
                    })?;
                Mix {
                    n_binaries,
                    n_fixed: n_binaries / 10,
                    ..FULL_MIX
                }
            }
            Err(_) => FULL_MIX,
        }
    };
    let work = context.data_dir.join("release-work");
    let _ = std::fs::remove_dir_all(&work);
    fs_err::create_dir_all(&work)?;
    let key_dir = work.join("keys");
    shell::run(
        Command::new(&context.hotpatch)
            .args(["keygen", "--out"])
            .arg(&key_dir),
    )?;

    let release = ensure_release(&context.data_dir, &mix)?;
    let mut rows = build_rows(context, &release, &key_dir, &work)?;
    rows.extend(size_rows(&release, &work)?);
    rows.extend(stop_window_rows(context, &key_dir, &work)?);
    Ok(rows)
}

// ---------------------------------------------------------------------------------------------
// The generated release

struct Release {
    /// `release-<n>`, the table group.
    group: String,
    n_binaries: usize,
    baseline: PathBuf,
    fixed: PathBuf,
    /// The binaries with a one-function fix, in release order.
    fixed_binaries: Vec<FixedBinary>,
}

/// A binary of the release with a one-function fix.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FixedBinary {
    /// Relative path in both trees.
    name: String,
    class: Class,
    /// The one function the fix changes.
    function: String,
}

fn binary_name(idx: usize) -> String {
    format!("bin{:02}/tool-{idx:04}", idx / 100)
}

fn fixed_binaries(mix: &Mix) -> Vec<FixedBinary> {
    (0..mix.n_binaries)
        .filter(|idx| mix.has_fix(*idx))
        .map(|idx| FixedBinary {
            name: binary_name(idx),
            class: mix.class(idx),
            function: mix.fixed_function(mix.class(idx)),
        })
        .collect()
}

fn ensure_release(data_dir: &Path, mix: &Mix) -> Result<Release> {
    let n_binaries = mix.n_binaries;
    let group = format!("release-{n_binaries}");
    let dir = data_dir.join(format!("{group}-v{RELEASE_VERSION}"));
    let release = Release {
        group,
        n_binaries,
        baseline: dir.join("baseline"),
        fixed: dir.join("fixed"),
        fixed_binaries: fixed_binaries(mix),
    };
    let stamp = release_stamp(mix);
    if std::fs::read_to_string(dir.join("STAMP")).is_ok_and(|text| text == stamp) {
        return Ok(release);
    }
    let n_large = release
        .fixed_binaries
        .iter()
        .filter(|binary| binary.class != Class::Small)
        .count();
    eprintln!(
        "building the generated release ({n_binaries} binaries, {} with a fix, {n_large} of them large) in {}",
        release.fixed_binaries.len(),
        dir.display()
    );
    // Outputs of an interrupted build of this mix are kept (each is renamed into place only
    // when its compile succeeded); a STAMP of another mix rebuilds everything.
    if dir.join("STAMP").exists() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let src = dir.join("src");
    let mut compiles = Vec::new();
    let mut links = Vec::new();
    for idx in 0..n_binaries {
        let name = binary_name(idx);
        match mix.class(idx) {
            Class::Small => {
                let baseline_c = src.join(format!("{idx:04}-baseline.c"));
                write_file(&baseline_c, &release_program(idx, false))?;
                compiles.push(compile(&baseline_c, &release.baseline.join(&name), &[]));
                if mix.has_fix(idx) {
                    let fixed_c = src.join(format!("{idx:04}-fixed.c"));
                    write_file(&fixed_c, &release_program(idx, true))?;
                    compiles.push(compile(&fixed_c, &release.fixed.join(&name), &[]));
                }
            }
            Class::Large { functions } => {
                let (unit_compiles, variant_links) = large_program_jobs(
                    large_program(mix, idx, functions),
                    idx,
                    &src,
                    [&release.baseline.join(&name), &release.fixed.join(&name)],
                )?;
                compiles.extend(unit_compiles);
                links.extend(variant_links);
            }
        }
    }
    // The large programs' units first: they are the longest compiles.
    compiles.sort_by_key(|job| job.out.extension().is_none_or(|ext| ext != "o"));
    run_parallel(compiles)?;
    run_parallel(links)?;
    // A binary without a fix is the same build in both trees, as an unchanged package of a
    // monthly release is (gcc output is deterministic for the same source and flags).
    for idx in (0..n_binaries).filter(|idx| !mix.has_fix(*idx)) {
        let name = binary_name(idx);
        let to = release.fixed.join(&name);
        fs_err::create_dir_all(to.parent().context("a binary has a directory")?)?;
        fs_err::copy(release.baseline.join(&name), to)?;
    }
    fs_err::write(dir.join("STAMP"), stamp)?;
    Ok(release)
}

/// What a release build is stamped with: the version and the mix, so a cache of another mix
/// (another `HOTPATCH_BENCH_RELEASE_BINARIES`) is not taken for this one.
fn release_stamp(mix: &Mix) -> String {
    format!("bench-release v{RELEASE_VERSION} {mix:?}")
}

/// The seed of large program `idx`: each large program draws different code (never zero, as
/// xorshift needs).
fn large_seed(idx: usize) -> u64 {
    0x2545_f491_4f6c_dd1d ^ ((idx as u64 + 1) << 20)
}

/// Large program `idx` of `functions` functions as C units, both variants: the fixed one
/// changes only [`Mix::fixed_function`].
fn large_program(mix: &Mix, idx: usize, functions: usize) -> [bench_pair::Program; 2] {
    let fixed_idx = mix.large_per_unit - 1;
    [false, true].map(|fixed| {
        bench_pair::generate(
            large_seed(idx),
            functions,
            mix.large_per_unit,
            |func_idx| func_idx == fixed_idx,
            Some(bench_pair::FixStyle::Reported).filter(|_| fixed),
        )
    })
}

/// The compiles of large program `idx`'s units (each variant's own directory, compiled with
/// the directory mapped to `.`, so a unit with the same text makes the same object) and the
/// link of each variant to `outs`. The fixed variant compiles only the units whose text
/// differs and links the baseline's objects for the others, as an incremental build does.
fn large_program_jobs(
    programs: [bench_pair::Program; 2],
    idx: usize,
    src: &Path,
    outs: [&Path; 2],
) -> Result<(Vec<Job>, Vec<Job>)> {
    // Absolute: gcc runs in the unit's directory.
    fs_err::create_dir_all(src)?;
    let src = fs_err::canonicalize(src)?;
    let dirs = ["baseline", "fixed"].map(|variant| src.join(format!("{idx:04}-{variant}")));
    let mut compiles = Vec::new();
    let mut links = Vec::new();
    for (variant, program) in programs.iter().enumerate() {
        let dir = &dirs[variant];
        write_file(&dir.join("bench.h"), &program.header)?;
        let mut objects = Vec::new();
        for (unit_idx, unit) in program.units.iter().enumerate() {
            let unit_name = bench_pair::unit_name(unit_idx);
            let object = Path::new(&unit_name).with_extension("o");
            if variant == 1 && programs[0].units.get(unit_idx) == Some(unit) {
                objects.push(dirs[0].join(object));
                continue;
            }
            write_file(&dir.join(&unit_name), unit)?;
            let mut command = Command::new("nice");
            command
                .current_dir(dir)
                .args(["-n", "19", "gcc", "-O2", "-g", "-c"])
                .arg(format!("-ffile-prefix-map={}=.", dir.display()))
                .arg(&unit_name);
            compiles.push(Job::new(command, &dir.join(&object)));
            objects.push(dir.join(object));
        }
        let mut command = Command::new("nice");
        command
            .args(["-n", "19", "gcc", "-O2", "-g"])
            .args(&objects);
        links.push(Job::new(command, outs[variant]));
    }
    Ok((compiles, links))
}

/// A small C program: `FUNCTIONS_PER_BINARY` functions of loops and arithmetic over an array,
/// called from `main` through a table. The fix adds a bounds check to `f1`, early in the file,
/// so the code after it moves, as a real fix does.
fn release_program(idx: usize, fixed: bool) -> String {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ idx as u64);
    let mut c = String::from("#include <stdio.h>\n#include <stdlib.h>\n\nint counters[16];\n\n");
    for func in 0..FUNCTIONS_PER_BINARY {
        let (a, b, d) = (rng.below(97) + 3, rng.below(1 << 16), rng.below(13) + 1);
        let check = if fixed && func == 1 {
            "    if (n > 64) n = 64;\n"
        } else {
            ""
        };
        let _ = write!(
            c,
            "__attribute__((noinline)) int f{func}(const int *v, int n) {{\n{check}    int s = {b};\n    for (int k = 0; k < n; k++) {{\n        s = s * {a} + (v[k] ^ {b});\n        if (s % {d} == 0) counters[{m}]++;\n    }}\n    return s;\n}}\n\n",
            m = func % 16
        );
    }
    c.push_str("int (*const table[])(const int *, int) = {");
    for func in 0..FUNCTIONS_PER_BINARY {
        let _ = write!(c, "f{func}, ");
    }
    c.push_str(
        "};\n\nint main(int argc, char **argv) {\n    int v[128];\n    int n = argc > 1 ? atoi(argv[1]) : 16;\n    if (n > 128) n = 128;\n    for (int k = 0; k < n; k++) v[k] = k * 7;\n    int s = 0;\n    for (unsigned f = 0; f < sizeof table / sizeof table[0]; f++) s ^= table[f](v, n);\n    printf(\"%d\\n\", s);\n    return 0;\n}\n",
    );
    c
}

// ---------------------------------------------------------------------------------------------
// hotpatch build of the release

/// The arguments of one hotpatch month of the benchmark's series.
fn month_args(baseline: &Path, fixed: &Path, key_dir: &Path, out: &Path) -> Vec<String> {
    let mut args: Vec<String> = ["build", "--release", "2027-02", "--baseline"]
        .map(str::to_owned)
        .to_vec();
    args.push(baseline.display().to_string());
    args.push("--fixed".to_owned());
    args.push(fixed.display().to_string());
    args.push("--key".to_owned());
    args.push(key_dir.join("hotpatch.key").display().to_string());
    args.push("--out".to_owned());
    args.push(out.display().to_string());
    for arg in [
        "--product",
        "bench",
        "--baseline-id",
        "bench-2027-01",
        "--min-sequence",
        "1",
        "--sequence",
        "2",
    ] {
        args.push(arg.to_owned());
    }
    // Now, a minute back: the applier refuses a package issued in its future.
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    args.push("--issued-at".to_owned());
    args.push(now.saturating_sub(60).to_string());
    args
}

fn build_rows(
    context: &Context,
    release: &Release,
    key_dir: &Path,
    work: &Path,
) -> Result<Vec<Row>> {
    let mut seconds = BTreeMap::new();
    for threads in [1_usize, 2] {
        let out = work.join(format!("release-{threads}.hpk"));
        let started = Instant::now();
        let output = Command::new(&context.hotpatch)
            .args(month_args(&release.baseline, &release.fixed, key_dir, &out))
            .env("RAYON_NUM_THREADS", threads.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        let elapsed = started.elapsed().as_secs_f64();
        if output.code() != Some(0) {
            bail!("hotpatch build of {} exited {output}", release.group);
        }
        seconds.insert(threads, elapsed);
    }
    let n = release.n_binaries as f64;
    let (one, two) = (seconds[&1], seconds[&2]);
    Ok(vec![
        Row::new(
            &release.group,
            "hotpatch build, 1 thread",
            one,
            Unit::Seconds,
        ),
        Row::new(
            &release.group,
            "per binary, 1 thread",
            one / n,
            Unit::Seconds,
        ),
        Row::new(
            &release.group,
            "hotpatch build, 2 threads",
            two,
            Unit::Seconds,
        )
        .against("1 thread", one, Unit::Seconds)
        .ratio(one / two)
        .at_least(1.5, ">= 1.5x speed-up from 1 to 2 threads"),
        Row::new(
            &release.group,
            "per binary, 2 threads",
            two / n,
            Unit::Seconds,
        ),
    ])
}

// ---------------------------------------------------------------------------------------------
// Package size against generic deltas

/// The smallest generic delta of the stripped pair and the tool that made it.
fn generic_delta(baseline: &Path, fixed: &Path, scratch: &Path) -> Result<(u64, &'static str)> {
    fs_err::create_dir_all(scratch)?;
    let old = scratch.join("old");
    let new = scratch.join("new");
    shell::run(Command::new("strip").arg("-o").arg(&old).arg(baseline))?;
    shell::run(Command::new("strip").arg("-o").arg(&new).arg(fixed))?;
    let mut best: Option<(u64, &'static str)> = None;
    let patch = scratch.join("patch");
    let tools: [(&'static str, Vec<std::ffi::OsString>); 3] = [
        (
            "bsdiff",
            vec![old.clone().into(), new.clone().into(), patch.clone().into()],
        ),
        (
            "xdelta3",
            vec![
                "-e".into(),
                "-9".into(),
                "-f".into(),
                "-s".into(),
                old.clone().into(),
                new.clone().into(),
                patch.clone().into(),
            ],
        ),
        (
            "zstd",
            vec![
                "-q".into(),
                "-f".into(),
                "-19".into(),
                format!("--patch-from={}", old.display()).into(),
                new.clone().into(),
                "-o".into(),
                patch.clone().into(),
            ],
        ),
    ];
    for (tool, args) in tools {
        if !tool_exists(tool) {
            continue;
        }
        let _ = std::fs::remove_file(&patch);
        // zstd prints tuning notes on stderr even with -q; only a failure's output matters.
        let mut command = Command::new(tool);
        command.args(args);
        let output = command.output()?;
        if !output.status.success() {
            bail!(
                "{} exited {}: {}",
                shell::describe(&command),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let len = fs_err::metadata(&patch)?.len();
        if best.is_none_or(|(smallest, _)| len < smallest) {
            best = Some((len, tool));
        }
    }
    best.context(
        "no generic delta tool (bsdiff, xdelta3, zstd) is installed (hint: ci/install-packages)",
    )
}

/// Whether `packaged` is `function` alone, with or without the `.cold` parts gcc split from it
/// (`f.cold`, `f.cold.1`): one source function.
fn is_one_function(packaged: &[&str], function: &str) -> bool {
    packaged.contains(&function)
        && packaged.iter().all(|name| {
            *name == function
                || name
                    .strip_prefix(function)
                    .and_then(|rest| rest.strip_prefix(".cold"))
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
        })
}

/// The payload of one single-function fix and what it is measured against.
struct FixSize<'a> {
    binary: &'a FixedBinary,
    payload: u64,
    fixed_size: u64,
    /// The smallest generic delta of the stripped pair, and the tool that made it.
    delta: u64,
    tool: &'static str,
}

/// The representative of a size class: the program of median size (function count, as the
/// generator defines it; ties by name), so that neither the smallest nor the largest program
/// stands for the class.
fn representative<T>(members: &[T], binary: impl Fn(&T) -> &FixedBinary) -> Option<&T> {
    let mut sorted: Vec<&T> = members.iter().collect();
    sorted.sort_by(|a, b| {
        let (a, b) = (binary(a), binary(b));
        (a.class.functions(), &a.name).cmp(&(b.class.functions(), &b.name))
    });
    sorted.get(sorted.len() / 2).copied()
}

/// The single-function rows of one size class: its representative against the fixed binary
/// and against the generic delta, and the worst ratio of the class against the generic delta.
fn class_rows(group: &str, class: &str, members: &[&FixSize]) -> Vec<Row> {
    let Some(typical) = representative(members, |m| m.binary) else {
        return Vec::new();
    };
    let ratio = |m: &FixSize| m.payload as f64 / m.delta as f64;
    let worst = members
        .iter()
        .max_by(|a, b| ratio(a).total_cmp(&ratio(b)))
        .unwrap_or(typical);
    let what = |m: &FixSize| {
        format!(
            "{}, {} functions",
            m.binary.name,
            m.binary.class.functions()
        )
    };
    let typical_row = || {
        Row::new(
            group,
            &format!(
                "payload, single-function fix, {class} program ({})",
                what(typical)
            ),
            typical.payload as f64,
            Unit::Bytes,
        )
    };
    vec![
        typical_row().against("fixed binary", typical.fixed_size as f64, Unit::Bytes),
        typical_row()
            .against(
                &format!("generic delta ({})", typical.tool),
                typical.delta as f64,
                Unit::Bytes,
            )
            .at_most(0.1, "<= 0.1x the generic delta"),
        Row::new(
            group,
            &format!(
                "payload, worst of {} single-function fixes in {class} programs ({})",
                members.len(),
                what(worst)
            ),
            worst.payload as f64,
            Unit::Bytes,
        )
        .against(
            &format!("generic delta ({})", worst.tool),
            worst.delta as f64,
            Unit::Bytes,
        )
        .at_most(0.1, "<= 0.1x the generic delta"),
    ]
}

fn size_rows(release: &Release, work: &Path) -> Result<Vec<Row>> {
    let report_path = work.join("release-2.release.json");
    let report: serde_json::Value = serde_json::from_slice(&fs_err::read(&report_path)?)
        .with_context(|| format!("{} is not JSON", report_path.display()))?;
    let binaries = report["binaries"]
        .as_array()
        .context("the release report lists no binaries")?;
    let by_name: BTreeMap<&str, &serde_json::Value> = binaries
        .iter()
        .filter_map(|b| Some((b["name"].as_str()?, b)))
        .collect();

    let mut rows = Vec::new();
    let group = &release.group;
    // Pairs without a code change: a payload for any of them is a defect.
    let unchanged_with_payload = binaries
        .iter()
        .filter(|b| {
            let name = b["name"].as_str().unwrap_or("");
            !release
                .fixed_binaries
                .iter()
                .any(|fixed| fixed.name == name)
                && !b["payload"].is_null()
        })
        .count();
    let unchanged = release.n_binaries - release.fixed_binaries.len();
    let mut row = Row::new(
        group,
        &format!("payloads among the {unchanged} pairs without a code change"),
        unchanged_with_payload as f64,
        Unit::Count,
    );
    row.target = Some("none".to_owned());
    row.met = Some(unchanged_with_payload == 0);
    rows.push(row);

    let mut total_payload = 0_u64;
    let mut total_delta = 0_u64;
    let mut total_fixed = 0_u64;
    let mut measured = Vec::new();
    for fixed in &release.fixed_binaries {
        let name = &fixed.name;
        let binary = by_name
            .get(name.as_str())
            .with_context(|| format!("{name} is not in the release report"))?;
        let payload = binary["payload"]["len"]
            .as_u64()
            .with_context(|| format!("{name} has no payload: status {}", binary["status"]))?;
        // A single-function fix must package that one function and nothing else (its gcc
        // `.cold` part travels with it), or its rows would measure something else.
        let packaged: Vec<&str> = binary["functions"]
            .as_array()
            .context("functions")?
            .iter()
            .filter(|f| f["change"] == "replaced" || f["change"] == "added")
            .filter_map(|f| f["function"].as_str())
            .collect();
        if !is_one_function(&packaged, &fixed.function) {
            bail!(
                "{name}: the fix changes only {}, but the package holds {packaged:?}",
                fixed.function
            );
        }
        let fixed_size = binary["fixed_size"].as_u64().context("fixed_size")?;
        let (delta, tool) = generic_delta(
            &release.baseline.join(name),
            &release.fixed.join(name),
            &work.join("delta"),
        )?;
        total_payload += payload;
        total_delta += delta;
        total_fixed += fixed_size;
        measured.push(FixSize {
            binary: fixed,
            payload,
            fixed_size,
            delta,
            tool,
        });
    }
    for class in ["small", "large"] {
        let members: Vec<&FixSize> = measured
            .iter()
            .filter(|m| m.binary.class.name() == class)
            .collect();
        rows.extend(class_rows(group, class, &members));
    }
    let payload_bytes = report["payload_bytes"].as_u64().context("payload_bytes")?;
    if payload_bytes != total_payload {
        bail!(
            "the report's payload_bytes {payload_bytes} is not the sum of its payloads {total_payload}"
        );
    }
    rows.push(
        Row::new(
            group,
            "payload, whole release",
            payload_bytes as f64,
            Unit::Bytes,
        )
        .against("fixed binaries with a fix", total_fixed as f64, Unit::Bytes),
    );
    rows.push(
        Row::new(
            group,
            "payload, whole release",
            payload_bytes as f64,
            Unit::Bytes,
        )
        .against(
            "generic deltas of the changed pairs (best tool each)",
            total_delta as f64,
            Unit::Bytes,
        )
        .at_most(1.0, "< the generic delta"),
    );
    let package = fs_err::metadata(work.join("release-2.hpk"))?.len();
    rows.push(
        Row::new(
            group,
            "package file (signed, with reports)",
            package as f64,
            Unit::Bytes,
        )
        .against(
            "generic deltas of the changed pairs (best tool each)",
            total_delta as f64,
            Unit::Bytes,
        ),
    );
    Ok(rows)
}

// ---------------------------------------------------------------------------------------------
// The stop window

/// The stop-window program: `STOP_WINDOW_FUNCTIONS` small functions reached through a table
/// (so none is inlined or dropped), and `argv[1]` threads that spin outside them. The fixed
/// variant changes the first `changed` functions.
fn stop_window_program(changed: usize) -> String {
    let mut c = String::from(
        "#include <pthread.h>\n#include <stdio.h>\n#include <stdlib.h>\n#include <unistd.h>\n\nvolatile long spins[256];\n\n",
    );
    for func in 0..STOP_WINDOW_FUNCTIONS {
        let extra = if func < changed { " + 1" } else { "" };
        let _ = writeln!(
            c,
            "__attribute__((noinline)) long g{func}(long x) {{ return x * {} + (x >> 3){extra}; }}",
            func + 3
        );
    }
    c.push_str("long (*const volatile table[])(long) = {");
    for func in 0..STOP_WINDOW_FUNCTIONS {
        let _ = write!(c, "g{func}, ");
    }
    c.push_str(
        "};\n\nstatic void *spin(void *arg) {\n    long slot = (long)arg % 256;\n    for (;;) spins[slot]++;\n    return 0;\n}\n\nint main(int argc, char **argv) {\n    int threads = argc > 1 ? atoi(argv[1]) : 0;\n    long s = 0;\n    for (unsigned f = 0; f < sizeof table / sizeof table[0]; f++) s += table[f](f);\n    for (long t = 0; t < threads; t++) {\n        pthread_t id;\n        if (pthread_create(&id, 0, spin, (void *)t) != 0) return 1;\n    }\n    printf(\"ready %ld\\n\", s);\n    fflush(stdout);\n    for (;;) pause();\n}\n",
    );
    c
}

struct StopWindowData {
    baseline: PathBuf,
    /// The fixed build per number of changed functions.
    fixed: BTreeMap<usize, PathBuf>,
}

fn ensure_stop_window(data_dir: &Path, replaced: &[usize]) -> Result<StopWindowData> {
    let dir = data_dir.join("stop-window");
    let data = StopWindowData {
        baseline: dir.join("baseline/app"),
        fixed: replaced
            .iter()
            .map(|n| (*n, dir.join(format!("fixed-{n}/app"))))
            .collect(),
    };
    if is_current(&dir) && data.fixed.values().all(|path| path.is_file()) {
        return Ok(data);
    }
    eprintln!("building the stop-window program in {}", dir.display());
    let _ = std::fs::remove_dir_all(&dir);
    let mut jobs = Vec::new();
    let baseline_c = dir.join("src/baseline.c");
    write_file(&baseline_c, &stop_window_program(0))?;
    jobs.push(compile(&baseline_c, &data.baseline, &["-pthread"]));
    for (n, out) in &data.fixed {
        let source = dir.join(format!("src/fixed-{n}.c"));
        write_file(&source, &stop_window_program(*n))?;
        jobs.push(compile(&source, out, &["-pthread"]));
    }
    run_parallel(jobs)?;
    fs_err::write(dir.join("STAMP"), STOP_WINDOW_VERSION)?;
    Ok(data)
}

fn stop_window_rows(context: &Context, key_dir: &Path, work: &Path) -> Result<Vec<Row>> {
    let (replaced, busy, repetitions): (&[usize], &[usize], usize) = if context.smoke {
        (&[1], &[2], 1)
    } else {
        (&REPLACED, &BUSY_THREADS, REPETITIONS)
    };
    let data = ensure_stop_window(&context.data_dir, replaced)?;
    let applier = if context.smoke {
        shell::build_test_profile_binary("hotpatch-apply", "hotpatch-apply")?
    } else {
        shell::build_release_binary("hotpatch-apply", "hotpatch-apply")?
    };

    // The series' baseline package (installed first in every state directory) and one
    // hotpatch package per number of replaced functions, built by `hotpatch build`.
    let base_tree = work.join("sw-base");
    copy_into(&data.baseline, &base_tree.join("app"))?;
    let baseline_package = work.join("sw-baseline.hpk");
    let mut args: Vec<String> = month_args(&base_tree, &base_tree, key_dir, &baseline_package);
    let at = args
        .iter()
        .position(|a| a == "--min-sequence")
        .context("flag")?;
    // A baseline names its own series (`--baseline-id` stays) and takes no min_sequence.
    args.drain(at..at + 2);
    let at = args
        .iter()
        .position(|a| a == "--sequence")
        .context("flag")?;
    args[at + 1] = "1".to_owned();
    args.extend(["--kind", "baseline"].map(str::to_owned));
    run_quiet(Command::new(&context.hotpatch).args(&args))?;
    let mut packages = BTreeMap::new();
    for (n, fixed) in &data.fixed {
        let tree = work.join(format!("sw-fixed-{n}"));
        copy_into(fixed, &tree.join("app"))?;
        let package = work.join(format!("sw-{n}.hpk"));
        run_quiet(
            Command::new(&context.hotpatch).args(month_args(&base_tree, &tree, key_dir, &package)),
        )?;
        packages.insert(*n, package);
    }

    let trust = key_dir.join("hotpatch.pub");
    let mut rows = Vec::new();
    for threads in busy {
        let mut process = Target::start(&data.baseline, *threads)?;
        for n in replaced {
            let mut medians = BTreeMap::new();
            for realtime in [true, false] {
                let mut windows = Vec::new();
                for rep in 0..repetitions {
                    let state = work.join(format!("state-{threads}-{n}-{realtime}-{rep}"));
                    let apply = |extra: &[&str]| -> Result<serde_json::Value> {
                        let mut command = Command::new(&applier);
                        command
                            .args(extra)
                            .arg("--trust")
                            .arg(&trust)
                            .arg("--pid")
                            .arg(process.pid().to_string())
                            .arg("--state-dir")
                            .arg(&state)
                            .arg("--json");
                        if !realtime {
                            command.arg("--no-realtime");
                        }
                        applier_json(&mut command)
                    };
                    let baseline_arg = baseline_package.display().to_string();
                    apply(&["apply", &baseline_arg])?;
                    let package_arg = packages[n].display().to_string();
                    let applied = apply(&["apply", &package_arg])?;
                    windows.push(stop_window_us(&applied)?);
                    // Roll back so the next repetition starts from the baseline code.
                    let mut rollback = Command::new(&applier);
                    rollback
                        .args(["rollback", "--pid"])
                        .arg(process.pid().to_string())
                        .arg("--state-dir")
                        .arg(&state)
                        .arg("--json");
                    applier_json(&mut rollback)?;
                }
                windows.sort_by(f64::total_cmp);
                medians.insert(realtime, windows[windows.len() / 2]);
            }
            process.check_alive()?;
            let (fifo, normal) = (medians[&true], medians[&false]);
            let limit = if *threads <= 16 { 0.3e-3 } else { 1e-3 };
            let mut row = Row::new(
                "stop-window",
                &format!(
                    "{n} functions, {threads} busy threads, SCHED_FIFO (median of {repetitions})"
                ),
                fifo * 1e-6,
                Unit::Seconds,
            )
            .against("normal priority", normal * 1e-6, Unit::Seconds);
            row.target = Some(format!("<= {} ms", limit * 1e3));
            row.met = Some(fifo * 1e-6 <= limit);
            rows.push(row);
        }
    }
    Ok(rows)
}

/// A running stop-window program, killed when dropped.
struct Target {
    child: Child,
}

impl Target {
    fn start(program: &Path, threads: usize) -> Result<Target> {
        let mut child = Command::new(program)
            .arg(threads.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let target = Target { child };
        if !line.starts_with("ready") {
            bail!("the stop-window program did not start: {line:?}");
        }
        // Let every spinning thread reach its loop.
        std::thread::sleep(Duration::from_millis(200));
        Ok(target)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!("the patched process died: {status}"),
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `hotpatch-apply ... --json` and returns its one result object.
fn applier_json(command: &mut Command) -> Result<serde_json::Value> {
    let output = command.output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "{} exited {}:\n{stdout}\n{}",
            shell::describe(command),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let value: serde_json::Value = serde_json::from_str(stdout.trim())
        .or_else(|_| {
            // One JSON object per line: take the first.
            serde_json::from_str(stdout.lines().next().unwrap_or(""))
        })
        .with_context(|| format!("hotpatch-apply printed no JSON: {stdout}"))?;
    Ok(value)
}

/// The stop window of an apply's result, in microseconds.
fn stop_window_us(result: &serde_json::Value) -> Result<f64> {
    let first = match result {
        serde_json::Value::Array(items) => items.first().context("no result")?,
        serde_json::Value::Object(map) if map.contains_key("results") => map["results"]
            .as_array()
            .and_then(|items| items.first())
            .context("no result")?,
        other => other,
    };
    if first["outcome"] != "applied" {
        bail!("the apply did not apply: {first}");
    }
    first["stop_window_us"]
        .as_f64()
        .with_context(|| format!("no stop window in {first}"))
}

// ---------------------------------------------------------------------------------------------
// Building

struct Job {
    command: Command,
    /// Where gcc writes, renamed to `out` once it succeeded.
    partial: PathBuf,
    out: PathBuf,
}

impl Job {
    /// `command` with `-o <partial>` appended: it writes `out` through a partial file.
    fn new(mut command: Command, out: &Path) -> Job {
        let partial = out.with_extension("partial");
        command.arg("-o").arg(&partial);
        Job {
            command,
            partial,
            out: out.to_path_buf(),
        }
    }
}

fn compile(source: &Path, out: &Path, extra: &[&str]) -> Job {
    let mut command = Command::new("nice");
    command
        .args(["-n", "19", "gcc", "-O2", "-g"])
        .args(extra)
        .arg(source);
    Job::new(command, out)
}

/// Waits for a compile and renames its output into place.
fn finish(mut child: Child, what: &str, partial: &Path, out: &Path) -> Result<()> {
    let status = child.wait()?;
    if !status.success() {
        bail!("{what} exited {status}");
    }
    fs_err::rename(partial, out)?;
    Ok(())
}

/// Runs the jobs two at a time (the machine has two cores, shared), skipping outputs an
/// interrupted run already made.
fn run_parallel(jobs: Vec<Job>) -> Result<()> {
    let mut running: Vec<(Child, String, PathBuf, PathBuf)> = Vec::new();
    let total = jobs.len();
    for (done, mut job) in jobs.into_iter().enumerate() {
        if job.out.is_file() {
            continue;
        }
        if let Some(dir) = job.out.parent() {
            fs_err::create_dir_all(dir)?;
        }
        while running.len() >= 2 {
            let (child, what, partial, out) = running.remove(0);
            finish(child, &what, &partial, &out)?;
        }
        if done % 100 == 0 {
            eprintln!("  compiling {done}/{total}");
        }
        let what = shell::describe(&job.command);
        let child = job.command.spawn().with_context(|| what.clone())?;
        running.push((child, what, job.partial, job.out));
    }
    for (child, what, partial, out) in running {
        finish(child, &what, &partial, &out)?;
    }
    Ok(())
}

fn run_quiet(command: &mut Command) -> Result<()> {
    let output = command.output()?;
    // 10: the package is written, and the month needs a baseline; the benchmark's months
    // never do.
    if !output.status.success() {
        bail!(
            "{} exited {}:\n{}",
            shell::describe(command),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn copy_into(from: &Path, to: &Path) -> Result<()> {
    fs_err::create_dir_all(to.parent().context("a file has a directory")?)?;
    fs_err::copy(from, to)?;
    Ok(())
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    fs_err::create_dir_all(path.parent().context("a file has a directory")?)?;
    fs_err::write(path, text)?;
    Ok(())
}

fn is_current(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("STAMP")).is_ok_and(|stamp| stamp == STOP_WINDOW_VERSION)
}

fn tool_exists(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

/// A small deterministic generator (splitmix64), so the generated C is the same everywhere.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % bound.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn large(mix: &Mix) -> Vec<(usize, usize)> {
        (0..mix.n_binaries)
            .filter_map(|idx| match mix.class(idx) {
                Class::Large { functions } => Some((idx, functions)),
                Class::Small => None,
            })
            .collect()
    }

    #[test]
    fn the_full_release_is_mostly_small_with_one_large_program_in_a_hundred() {
        let mix = FULL_MIX;
        let fixed = fixed_binaries(&mix);
        assert_eq!(fixed.len(), 100);
        // One binary in a hundred is large, each one a fixed binary in the middle of its run
        // of ten, with every size of the list once.
        let large = large(&mix);
        let idxs: Vec<usize> = large.iter().map(|(idx, _)| *idx).collect();
        assert_eq!(idxs, (0..10).map(|k| 100 * k + 50).collect::<Vec<_>>());
        assert!(idxs.iter().all(|idx| mix.has_fix(*idx)));
        let functions: Vec<usize> = large.iter().map(|(_, functions)| *functions).collect();
        assert_eq!(functions, mix.large_functions);
        let small_fixed = fixed.iter().filter(|b| b.class == Class::Small).count();
        assert_eq!(small_fixed, 90);
        // The large programs span a few hundred kB to over a MB of code (about 276 bytes per
        // generated function with gcc -O2, measured on the generated pair).
        assert!(functions.iter().min() >= Some(&1000));
        assert!(functions.iter().max() >= Some(&4000));
    }

    #[test]
    fn the_smoke_release_has_one_large_program_and_it_is_small() {
        let large = large(&SMOKE_MIX);
        assert_eq!(large.len(), 1);
        assert!(large[0].1 <= 200, "{large:?}");
        assert!(
            large[0].1 > SMOKE_MIX.large_per_unit,
            "code follows the fix"
        );
    }

    /// The functions of one generated unit, by name, as text.
    fn functions_of(unit: &str) -> BTreeMap<String, String> {
        let mut functions = BTreeMap::new();
        for part in unit.split("\nint f").skip(1) {
            // Declarations end in `);`, definitions open a body.
            let Some((head, _)) = part.split_once('(') else {
                continue;
            };
            if part.lines().next().is_some_and(|line| line.ends_with('{')) {
                functions.insert(format!("f{head}"), part.to_owned());
            }
        }
        functions
    }

    #[test]
    fn a_large_fix_changes_one_function_early_and_code_follows_it() {
        let mix = FULL_MIX;
        for (idx, functions) in large(&mix).into_iter().take(2) {
            let class = mix.class(idx);
            let fixed_function = mix.fixed_function(class);
            let [baseline, fixed] = large_program(&mix, idx, functions);
            assert_eq!(baseline.header, fixed.header);
            assert_eq!(baseline.units.len(), functions.div_ceil(mix.large_per_unit));
            assert!(
                baseline.units.len() >= 4,
                "most of the code follows the fix"
            );
            // Only the first unit differs, and in it only the fixed function.
            assert_eq!(baseline.units[1..], fixed.units[1..]);
            let (before, after) = (
                functions_of(&baseline.units[0]),
                functions_of(&fixed.units[0]),
            );
            assert_eq!(before.len(), mix.large_per_unit);
            let changed: Vec<&String> = before
                .keys()
                .filter(|name| before.get(*name) != after.get(*name))
                .collect();
            assert_eq!(changed, [&fixed_function]);
            // A reported bounds check: more code than the padding after a function can absorb.
            assert!(after[&fixed_function].contains("length out of range"));
            // It is the last function of the unit: no caller in its unit could inline it.
            let definition = format!("int {fixed_function}(const int *values, int n) {{");
            let at = fixed.units[0].find(&definition).expect("defined");
            assert!(!fixed.units[0][at + definition.len()..].contains("\nint f"));
            assert_eq!(
                fixed.units[0]
                    .matches(&format!("{fixed_function}("))
                    .count(),
                1
            );
        }
        // Two large programs draw different code.
        let [first, _] = large_program(&mix, 50, 1000);
        let [second, _] = large_program(&mix, 150, 1000);
        assert_ne!(first.units[1], second.units[1]);
    }

    #[test]
    fn a_small_fix_changes_f1() {
        let (baseline, fixed) = (release_program(10, false), release_program(10, true));
        let changed: Vec<&str> = baseline
            .split("\n\n")
            .zip(fixed.split("\n\n"))
            .filter(|(before, after)| before != after)
            .map(|(before, _)| before)
            .collect();
        assert_eq!(changed.len(), 1);
        let fixed_function = FULL_MIX.fixed_function(Class::Small);
        assert!(
            changed[0].contains(&format!(" {fixed_function}(")),
            "{changed:?}"
        );
    }

    #[test]
    fn the_representative_is_the_program_of_median_size() {
        let fixed = fixed_binaries(&FULL_MIX);
        let mut sizes = FULL_MIX.large_functions.to_vec();
        sizes.sort_unstable();
        let median = sizes[sizes.len() / 2];
        let large: Vec<&FixedBinary> = fixed.iter().filter(|b| b.class != Class::Small).collect();
        let typical = representative(&large, |b| *b).expect("large programs");
        assert_eq!(typical.class, Class::Large { functions: median });
        // Small programs are all the same size: the middle one by name.
        let small: Vec<&FixedBinary> = fixed.iter().filter(|b| b.class == Class::Small).collect();
        let typical = representative(&small, |b| *b).expect("small programs");
        assert_eq!(typical.name, small[small.len() / 2].name);
        assert!(representative::<&FixedBinary>(&[], |b| *b).is_none());
    }

    #[test]
    fn a_fix_with_its_cold_part_is_one_function() {
        assert!(is_one_function(&["f249"], "f249"));
        assert!(is_one_function(&["f249", "f249.cold"], "f249"));
        assert!(is_one_function(&["f249.cold.1", "f249"], "f249"));
        assert!(!is_one_function(&["f249.cold"], "f249"));
        assert!(!is_one_function(&["f249", "f2490"], "f249"));
        assert!(!is_one_function(&["f249", "f249.constprop.0"], "f249"));
        assert!(!is_one_function(&["f249", "f12"], "f249"));
        assert!(!is_one_function(&[], "f249"));
    }

    #[test]
    fn a_cache_of_another_mix_is_not_taken() {
        let other = Mix {
            n_binaries: 100,
            n_fixed: 10,
            ..FULL_MIX
        };
        assert_ne!(release_stamp(&FULL_MIX), release_stamp(&other));
        assert_eq!(release_stamp(&FULL_MIX), release_stamp(&FULL_MIX));
    }
}
