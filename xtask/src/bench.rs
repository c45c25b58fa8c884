//! `cargo xtask bench`: generates the large benchmark pair when it is missing, runs the
//! criterion benchmarks in `benches/diff.rs`, and prints one table of medians against the
//! references measured in the same run (GUIDE §4): diff against the decode floor, 1 thread
//! against 2, load throughput, and the peak memory of one `hotpatch diff` against its input.
//!
//! xtask does not link the libraries it measures; it only reads what criterion wrote to
//! `<target>/criterion/**/new/{benchmark,estimates}.json`. The raw figures go to
//! `benches/runs/<date>-<host>.csv`.
//!
//! The large pair is C generated here: many translation units of small-to-medium functions
//! with loops, jump-table switches, calls between units, string literals and globals. The
//! fixed variant changes [`N_CHANGED`] functions and inserts one function first in the first
//! unit, so every later function moves.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};

use crate::shell;

/// Functions in the generated program.
const N_FUNCTIONS: usize = 20_000;
/// Functions per translation unit: many CUs, as in a real program, and parallel compiles.
const FUNCTIONS_PER_UNIT: usize = 500;
/// Functions whose body the fixed variant changes.
const N_CHANGED: usize = 20;
/// Bump when the generated C changes, so stale data is rebuilt.
const GENERATOR_VERSION: &str = "bench-data v1";

const VARIANTS: [&str; 2] = ["baseline", "fixed"];

pub fn run(args: &[String]) -> Result<()> {
    let root = shell::workspace_root();
    let target_dir = shell::target_dir();
    let data_dir = root.join("target/bench-data");
    let pairs = ensure_bench_data(&data_dir)?;

    let hotpatch = shell::build_release_hotpatch()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let started = SystemTime::now();
    // Extra arguments go to criterion: a filter, `--quick`, `--save-baseline NAME`.
    shell::run(
        Command::new(&cargo)
            .args(["bench", "--bench", "diff", "--"])
            .args(args)
            .env("HOTPATCH_BENCH_DATA", &data_dir)
            .current_dir(&root),
    )?;
    let estimates = read_criterion(&target_dir.join("criterion"), started)?;
    if estimates.is_empty() {
        bail!("criterion wrote no results in this run (was the filter too narrow?)");
    }

    let mut peaks = Vec::new();
    for pair in &pairs {
        match peak_memory(&hotpatch, pair)? {
            Some(peak_rss) => peaks.push((pair, peak_rss)),
            None => eprintln!(
                "note: /usr/bin/time is missing; no peak memory figure (hint: apt-get install time)"
            ),
        }
    }

    let rows = table_rows(&estimates, &peaks);
    print_table(&rows);
    let csv_path = write_csv(&root, &rows)?;
    eprintln!("raw figures written to {}", csv_path.display());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The generated pair

/// One built pair of the large program: the binaries (and PDBs for PE) both variants.
struct Pair {
    /// `large-elf` or `large-pe`, as the benchmark groups are named.
    name: String,
    baseline: PathBuf,
    fixed: PathBuf,
    baseline_pdb: Option<PathBuf>,
    fixed_pdb: Option<PathBuf>,
}

impl Pair {
    fn input_bytes(&self) -> u64 {
        [
            Some(&self.baseline),
            Some(&self.fixed),
            self.baseline_pdb.as_ref(),
            self.fixed_pdb.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|path| std::fs::metadata(path).map(|m| m.len()).unwrap_or(0))
        .sum()
    }
}

/// Generates and builds `target/bench-data/{elf,pe}/{baseline,fixed}` unless a build by this
/// generator version is already there.
fn ensure_bench_data(data_dir: &Path) -> Result<Vec<Pair>> {
    let mut pairs = Vec::new();
    let elf_dir = data_dir.join("elf");
    if !is_current(&elf_dir) {
        let src_dir = data_dir.join("src");
        write_sources(&src_dir)?;
        eprintln!(
            "building the large ELF pair ({N_FUNCTIONS} functions) in {}",
            elf_dir.display()
        );
        build_elf(&src_dir, &elf_dir)?;
        fs_err::write(elf_dir.join("STAMP"), stamp())?;
    }
    pairs.push(Pair {
        name: "large-elf".to_owned(),
        baseline: elf_dir.join("baseline"),
        fixed: elf_dir.join("fixed"),
        baseline_pdb: None,
        fixed_pdb: None,
    });

    let pe_dir = data_dir.join("pe");
    if !is_current(&pe_dir) {
        match mingw_libgcc_dir() {
            Some(libgcc_dir) if tool_exists("clang") => {
                let src_dir = data_dir.join("src");
                write_sources(&src_dir)?;
                eprintln!(
                    "building the large PE pair ({N_FUNCTIONS} functions) in {}",
                    pe_dir.display()
                );
                build_pe(&src_dir, &pe_dir, &libgcc_dir)?;
                fs_err::write(pe_dir.join("STAMP"), stamp())?;
            }
            _ => eprintln!(
                "note: clang or mingw-w64 is missing; skipping the large PE pair (hint: ci/install-packages)"
            ),
        }
    }
    if is_current(&pe_dir) {
        pairs.push(Pair {
            name: "large-pe".to_owned(),
            baseline: pe_dir.join("baseline.exe"),
            fixed: pe_dir.join("fixed.exe"),
            baseline_pdb: Some(pe_dir.join("baseline.pdb")),
            fixed_pdb: Some(pe_dir.join("fixed.pdb")),
        });
    }
    Ok(pairs)
}

fn stamp() -> String {
    format!("{GENERATOR_VERSION} {N_FUNCTIONS} {FUNCTIONS_PER_UNIT} {N_CHANGED}\n")
}

fn is_current(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("STAMP")).is_ok_and(|s| s == stamp())
}

fn tool_exists(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Where mingw-w64's libgcc lives (`/usr/lib/gcc/x86_64-w64-mingw32/<version>-win32`).
fn mingw_libgcc_dir() -> Option<PathBuf> {
    let base = Path::new("/usr/lib/gcc/x86_64-w64-mingw32");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(base)
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.to_string_lossy().ends_with("-win32"))
        .collect();
    dirs.sort();
    dirs.pop()
}

/// Writes `src/<variant>/unit_NNN.c` and `src/<variant>/bench.h` for both variants.
fn write_sources(src_dir: &Path) -> Result<()> {
    if src_dir.join("STAMP").is_file() && fs_err::read_to_string(src_dir.join("STAMP"))? == stamp()
    {
        return Ok(());
    }
    for (variant_idx, variant) in VARIANTS.into_iter().enumerate() {
        let dir = src_dir.join(variant);
        if dir.exists() {
            fs_err::remove_dir_all(&dir)?;
        }
        fs_err::create_dir_all(&dir)?;
        let program = generate(variant_idx == 1);
        fs_err::write(dir.join("bench.h"), &program.header)?;
        for (unit_idx, unit) in program.units.iter().enumerate() {
            fs_err::write(dir.join(unit_name(unit_idx)), unit)?;
        }
    }
    fs_err::write(src_dir.join("STAMP"), stamp())?;
    Ok(())
}

fn unit_name(unit_idx: usize) -> String {
    format!("unit_{unit_idx:03}.c")
}

fn n_units() -> usize {
    N_FUNCTIONS.div_ceil(FUNCTIONS_PER_UNIT)
}

/// The C text of one variant.
struct Program {
    header: String,
    units: Vec<String>,
}

/// xorshift64*: deterministic, so both variants draw the same program.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// The functions the fixed variant changes, spread over the whole program.
fn is_changed(func_idx: usize) -> bool {
    let stride = N_FUNCTIONS / N_CHANGED;
    func_idx % stride == stride / 3
}

fn generate(fixed: bool) -> Program {
    let header = "\
/* Generated by `cargo xtask bench`; do not edit. */
struct bench_record { int id; int weight; long total; const char *label; };
extern int g_counter[256];
extern struct bench_record g_records[1024];
extern const char *const g_messages[16];
extern volatile int g_sink;
int bench_sink(int tag, const char *text);
int bench_inserted_check(const int *values, int n);
"
    .to_owned();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut units = Vec::with_capacity(n_units());
    for unit_idx in 0..n_units() {
        let first = unit_idx * FUNCTIONS_PER_UNIT;
        let last = (first + FUNCTIONS_PER_UNIT).min(N_FUNCTIONS);
        let mut bodies = String::new();
        let mut callees = BTreeSet::new();
        if unit_idx == 0 && fixed {
            // Inserted first in the first unit: every function after it moves.
            bodies.push_str(
                "int bench_inserted_check(const int *values, int n) {\n  \
                 if (!values || n < 0 || n > 4096) return 1;\n  \
                 for (int k = 0; k < n; k++) if (values[k] < 0) return 1;\n  return 0;\n}\n\n",
            );
        }
        for func_idx in first..last {
            function(&mut rng, func_idx, fixed, &mut bodies, &mut callees);
        }
        let mut unit = String::from("/* Generated by `cargo xtask bench`; do not edit. */\n");
        unit.push_str("#include <string.h>\n#include \"bench.h\"\n\n");
        for callee in &callees {
            if !(first..last).contains(callee) {
                let _ = writeln!(unit, "int f{callee}(const int *values, int n);");
            }
        }
        unit.push('\n');
        if unit_idx == 0 {
            unit.push_str(&globals_and_main());
        }
        unit.push_str(&bodies);
        units.push(unit);
    }
    Program { header, units }
}

fn globals_and_main() -> String {
    let mut text = String::from(
        "int g_counter[256];\nstruct bench_record g_records[1024];\nvolatile int g_sink;\n\
         const char *const g_messages[16] = {\n",
    );
    for message_idx in 0..16 {
        let _ = writeln!(text, "  \"message {message_idx}: state changed\",");
    }
    text.push_str("};\n\n");
    text.push_str(
        "int bench_sink(int tag, const char *text) {\n  \
         g_sink = tag + (int)strlen(text);\n  return g_sink;\n}\n\n",
    );
    let _ = writeln!(
        text,
        "int f{last}(const int *values, int n);\n\
         int main(int argc, char **argv) {{\n  \
         int values[8] = {{argc, 1, 2, 3, 4, 5, 6, 7}};\n  \
         (void)argv;\n  return f{last}(values, 0) & 0x7f;\n}}\n",
        last = N_FUNCTIONS - 1
    );
    text
}

/// Appends `f<func_idx>` to `out`. Every function has the signature
/// `int f(const int *values, int n)`, so any can call any earlier one.
fn function(
    rng: &mut Rng,
    func_idx: usize,
    fixed: bool,
    out: &mut String,
    callees: &mut BTreeSet<usize>,
) {
    let kind = rng.below(5);
    let seed = rng.below(1 << 16);
    let scale = 3 + rng.below(29);
    let slot = rng.below(256);
    let record = rng.below(1024);
    let mut pick_callee = |rng: &mut Rng| -> Option<usize> {
        if func_idx == 0 {
            return None;
        }
        // Mostly near neighbours (same unit), sometimes anywhere earlier (another unit).
        let callee = if rng.below(4) == 0 {
            rng.below(func_idx as u64) as usize
        } else {
            func_idx - 1 - rng.below(func_idx.min(64) as u64) as usize
        };
        callees.insert(callee);
        Some(callee)
    };
    let _ = writeln!(out, "int f{func_idx}(const int *values, int n) {{");
    if fixed && is_changed(func_idx) {
        // The "security fix": a bounds check, and in half of them a call to the new helper.
        out.push_str("  if (n < 0 || n > 4096) return -22;\n");
        if func_idx.is_multiple_of(2) {
            out.push_str("  if (bench_inserted_check(values, n)) return -1;\n");
        }
    }
    match kind {
        0 => {
            // A loop over the input with global state.
            let _ = write!(
                out,
                "  int acc = {seed};\n  \
                 for (int k = 0; k < n; k++) {{\n    \
                 acc += values[k] * {scale} ^ (acc >> 3);\n    \
                 if (acc > {limit}) acc -= g_counter[{slot}];\n  }}\n  \
                 g_counter[{slot}] += acc;\n  return acc;\n",
                limit = seed * 7 + 100,
            );
        }
        1 => {
            // A dense switch: gcc lowers it to a jump table.
            let n_cases = 6 + rng.below(7);
            out.push_str("  int acc = 0;\n  switch (n & 15) {\n");
            for case in 0..n_cases {
                let _ = write!(out, "  case {case}: ");
                match rng.below(3) {
                    0 => match pick_callee(rng) {
                        Some(callee) => {
                            let _ = writeln!(out, "acc = f{callee}(values, n >> 4); break;");
                        }
                        None => {
                            let _ = writeln!(out, "acc = {}; break;", seed + case);
                        }
                    },
                    1 => {
                        let _ = writeln!(
                            out,
                            "acc = bench_sink({case}, g_messages[{}]); break;",
                            (seed + case) % 16
                        );
                    }
                    _ => {
                        let _ = writeln!(
                            out,
                            "acc = g_counter[{}] * {scale} + {case}; break;",
                            (slot + case) % 256
                        );
                    }
                }
            }
            let _ = write!(
                out,
                "  default: acc = -{seed}; break;\n  }}\n  return acc + n;\n"
            );
        }
        2 => {
            // String literals: a unique one and a scan over it.
            let _ = write!(
                out,
                "  static const char text[] = \"f{func_idx}: request {seed} rejected, limit {scale}\";\n  \
                 int sum = 0;\n  \
                 for (const char *p = text; *p; p++) sum += *p ^ n;\n  \
                 if (sum & 1) sum += bench_sink({func_idx}, \"f{func_idx} odd\");\n  \
                 return sum;\n"
            );
        }
        3 => {
            // Calls to earlier functions, guarded so a run terminates.
            out.push_str("  int acc = n;\n  if (n <= 0) return values ? values[0] : 0;\n");
            let n_calls = 2 + rng.below(3);
            for _ in 0..n_calls {
                if let Some(callee) = pick_callee(rng) {
                    let _ = writeln!(out, "  acc ^= f{callee}(values + 1, n - 1);");
                }
            }
            let _ = writeln!(out, "  return acc * {scale};");
        }
        _ => {
            // Records in a global table.
            let _ = write!(
                out,
                "  struct bench_record *r = &g_records[{record}];\n  \
                 r->id = {func_idx};\n  \
                 for (int k = 0; k < n && k < 64; k++) {{\n    \
                 r->weight += values[k] > {seed} ? {scale} : 1;\n    \
                 r->total += (long)values[k] * r->weight;\n  }}\n  \
                 if (!r->label) r->label = g_messages[{message}];\n  \
                 return (int)(r->total >> 4);\n",
                message = record % 16,
            );
        }
    }
    out.push_str("}\n\n");
}

/// Compiles every unit of both variants (as many at once as there are cores) and links each.
fn build_elf(src_dir: &Path, out_dir: &Path) -> Result<()> {
    fs_err::create_dir_all(out_dir)?;
    for variant in VARIANTS {
        let variant_src = fs_err::canonicalize(src_dir.join(variant))?;
        let objects = compile_units(&variant_src, "o", |unit, object| {
            let mut command = Command::new("gcc");
            command
                .current_dir(&variant_src)
                .args(["-O2", "-g", "-c"])
                .arg(format!("-ffile-prefix-map={}=.", variant_src.display()))
                .args([unit, "-o", object]);
            command
        })?;
        shell::run(
            Command::new("gcc")
                .current_dir(&variant_src)
                .args(["-O2", "-g", "-Wl,--build-id=sha1"])
                .args(&objects)
                .arg("-o")
                .arg(out_dir.join(variant)),
        )?;
    }
    Ok(())
}

fn build_pe(src_dir: &Path, out_dir: &Path, libgcc_dir: &Path) -> Result<()> {
    fs_err::create_dir_all(out_dir)?;
    for variant in VARIANTS {
        let variant_src = fs_err::canonicalize(src_dir.join(variant))?;
        let objects = compile_units(&variant_src, "obj", |unit, object| {
            let mut command = Command::new("clang");
            command
                .current_dir(&variant_src)
                .args(["--target=x86_64-w64-mingw32", "-O2", "-g", "-gcodeview"])
                .args(["-ffile-compilation-dir=.", "-c", unit, "-o", object]);
            command
        })?;
        shell::run(
            Command::new("clang")
                .current_dir(&variant_src)
                .args(["--target=x86_64-w64-mingw32", "-g", "-fuse-ld=lld"])
                .arg(format!("-L{}", libgcc_dir.display()))
                .args(&objects)
                .arg("-o")
                .arg(out_dir.join(format!("{variant}.exe")))
                .arg(format!(
                    "-Wl,--pdb={}",
                    out_dir.join(format!("{variant}.pdb")).display()
                )),
        )?;
    }
    Ok(())
}

/// Runs `compile(unit, object)` for every unit, as many at once as there are cores, and
/// returns the object names (`unit_NNN.<object_extension>`). A unit whose text equals the
/// baseline's takes the baseline's object, as an incremental build would: both compile with
/// the directory mapped to `.`, so the object would be the same bytes.
fn compile_units(
    dir: &Path,
    object_extension: &str,
    compile: impl Fn(&str, &str) -> Command,
) -> Result<Vec<String>> {
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    let baseline_dir = dir.with_file_name("baseline");
    let mut objects = Vec::new();
    let mut pending = Vec::new();
    for unit in (0..n_units()).map(unit_name) {
        let object = unit.replace(".c", &format!(".{object_extension}"));
        let baseline_object = baseline_dir.join(&object);
        if dir != baseline_dir
            && baseline_object.is_file()
            && fs_err::read(dir.join(&unit))? == fs_err::read(baseline_dir.join(&unit))?
        {
            fs_err::copy(&baseline_object, dir.join(&object))?;
        } else {
            pending.push((unit, object.clone()));
        }
        objects.push(object);
    }
    for chunk in pending.chunks(jobs) {
        let mut children = Vec::new();
        for (unit, object) in chunk {
            let mut command = compile(unit, object);
            let line = shell::describe(&command);
            let child = command
                .spawn()
                .with_context(|| format!("failed to start `{line}`"))?;
            children.push((line, child));
        }
        for (line, mut child) in children {
            let status = child.wait()?;
            if !status.success() {
                bail!("`{line}` failed with {status} (in {})", dir.display());
            }
        }
    }
    Ok(objects)
}

// ---------------------------------------------------------------------------------------------
// Reading criterion's results

/// One benchmark's median and its confidence interval, in nanoseconds.
struct Estimate {
    group: String,
    function: String,
    median_ns: f64,
    low_ns: f64,
    high_ns: f64,
    /// Bytes per iteration, when the benchmark declared a byte throughput.
    bytes: Option<u64>,
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
            low_ns: number(&median["confidence_interval"]["lower_bound"]),
            high_ns: number(&median["confidence_interval"]["upper_bound"]),
            bytes: benchmark["throughput"]["Bytes"].as_u64(),
        });
    }
    estimates.sort_by(|a, b| (&a.group, &a.function).cmp(&(&b.group, &b.function)));
    Ok(estimates)
}

/// Peak resident set size in bytes of `hotpatch diff` on `pair`, or `None` without GNU time.
fn peak_memory(hotpatch: &Path, pair: &Pair) -> Result<Option<u64>> {
    let time = Path::new("/usr/bin/time");
    if !time.is_file() {
        return Ok(None);
    }
    let mut command = Command::new(time);
    command
        .arg("-v")
        .arg(hotpatch)
        .arg("diff")
        .arg(&pair.baseline)
        .arg(&pair.fixed);
    if let (Some(base_pdb), Some(fixed_pdb)) = (&pair.baseline_pdb, &pair.fixed_pdb) {
        command
            .arg("--base-pdb")
            .arg(base_pdb)
            .arg("--fixed-pdb")
            .arg(fixed_pdb);
    }
    let line = shell::describe(&command);
    let output = command
        .output()
        .with_context(|| format!("failed to start `{line}`"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    // `hotpatch diff` exits non-zero for some findings; only a missing report is a failure.
    let kbytes = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .and_then(|value| value.trim().parse::<u64>().ok());
    match kbytes {
        Some(kbytes) if output.status.code().is_some() => Ok(Some(kbytes * 1024)),
        _ => bail!(
            "`{line}` gave no peak memory ({}):\n{stderr}",
            output.status
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// The table and the CSV

/// One line of the table and of the CSV.
struct Row {
    pair: String,
    measurement: String,
    /// The median (nanoseconds) or the peak memory (bytes).
    value: f64,
    low: f64,
    high: f64,
    unit: &'static str,
    /// Input bytes the figure is measured against, where one applies.
    input_bytes: Option<u64>,
    /// The ratio against its reference, as printed.
    ratio: String,
}

fn table_rows(estimates: &[Estimate], peaks: &[(&Pair, u64)]) -> Vec<Row> {
    let mut groups: Vec<&str> = estimates.iter().map(|e| e.group.as_str()).collect();
    groups.dedup();
    let mut rows = Vec::new();
    for group in groups {
        let find = |function: &str| {
            estimates
                .iter()
                .find(|e| e.group == group && e.function == function)
        };
        let floor = find("decode-floor").map(|e| e.median_ns);
        let two_threads = find("diff-2-threads").map(|e| e.median_ns);
        for estimate in estimates.iter().filter(|e| e.group == group) {
            let ratio = match estimate.function.as_str() {
                "diff" | "diff-1-thread" | "diff-2-threads" => {
                    let mut ratio = floor.map_or(String::new(), |floor| {
                        format!("{:.1}x the decode floor", estimate.median_ns / floor)
                    });
                    if estimate.function == "diff-1-thread"
                        && let Some(two) = two_threads
                    {
                        let _ = write!(
                            ratio,
                            "; 1 thread / 2 threads = {:.2}",
                            estimate.median_ns / two
                        );
                    }
                    ratio
                }
                "load" => estimate.bytes.map_or(String::new(), |bytes| {
                    format!(
                        "{:.1} MB/s of {} input",
                        bytes as f64 / 1e6 / (estimate.median_ns / 1e9),
                        human(bytes as f64, "bytes")
                    )
                }),
                _ => String::new(),
            };
            rows.push(Row {
                pair: group.to_owned(),
                measurement: estimate.function.clone(),
                value: estimate.median_ns,
                low: estimate.low_ns,
                high: estimate.high_ns,
                unit: "ns",
                input_bytes: estimate.bytes,
                ratio,
            });
        }
    }
    for (pair, peak_rss) in peaks {
        let input_bytes = pair.input_bytes();
        rows.push(Row {
            pair: pair.name.clone(),
            measurement: "peak-rss-hotpatch-diff".to_owned(),
            value: *peak_rss as f64,
            low: *peak_rss as f64,
            high: *peak_rss as f64,
            unit: "bytes",
            input_bytes: Some(input_bytes),
            ratio: format!(
                "{:.2}x the {} input",
                *peak_rss as f64 / input_bytes as f64,
                human(input_bytes as f64, "bytes")
            ),
        });
    }
    rows
}

fn human(value: f64, unit: &str) -> String {
    match unit {
        "ns" if value >= 1e9 => format!("{:.2} s", value / 1e9),
        "ns" if value >= 1e6 => format!("{:.2} ms", value / 1e6),
        "ns" if value >= 1e3 => format!("{:.2} µs", value / 1e3),
        "ns" => format!("{value:.0} ns"),
        _ if value >= 1e6 => format!("{:.1} MB", value / 1e6),
        _ => format!("{:.1} kB", value / 1e3),
    }
}

#[allow(
    clippy::print_stdout,
    reason = "the table is the command's output; notes go to stderr"
)]
fn print_table(rows: &[Row]) {
    println!(
        "\n{:<18} {:<24} {:>11}  vs reference",
        "pair", "measurement", "median"
    );
    println!("{}", "-".repeat(96));
    for row in rows {
        println!(
            "{:<18} {:<24} {:>11}  {}",
            row.pair,
            row.measurement,
            human(row.value, row.unit),
            row.ratio
        );
    }
}

fn write_csv(root: &Path, rows: &[Row]) -> Result<PathBuf> {
    let runs_dir = root.join("benches/runs");
    fs_err::create_dir_all(&runs_dir)?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    let path = runs_dir.join(format!("{}-{host}.csv", today()));
    let mut csv = String::from("pair,measurement,value,low,high,unit,input_bytes\n");
    for row in rows {
        let _ = writeln!(
            csv,
            "{},{},{:.0},{:.0},{:.0},{},{}",
            row.pair,
            row.measurement,
            row.value,
            row.low,
            row.high,
            row.unit,
            row.input_bytes.map_or(String::new(), |b| b.to_string())
        );
    }
    fs_err::write(&path, csv)?;
    Ok(path)
}

/// Today's UTC date as `YYYY-MM-DD` (Howard Hinnant's civil-from-days).
fn today() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
