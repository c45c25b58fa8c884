//! The generated benchmark pair: C written here (many translation units of small-to-medium
//! functions with loops, jump-table switches, calls between units, string literals and
//! globals), built with gcc (ELF+DWARF) and clang + lld (PE+PDB) under a data directory, and
//! rebuilt only when the generator changes (a `STAMP` file per build).
//!
//! The fixed variant changes `Size::changed` functions and inserts one function first in the
//! first unit, so every later function moves.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::shell;

/// The size of a generated program.
#[derive(Clone, Copy)]
struct Size {
    /// Functions in the program.
    functions: usize,
    /// Functions per translation unit: many CUs, as in a real program, and parallel compiles.
    per_unit: usize,
    /// Functions whose body the fixed variant changes.
    changed: usize,
}

/// The full pair: at least 50,000 functions and 20 MB of code in the pair (issue 11).
const FULL: Size = Size {
    functions: 50_000,
    per_unit: 500,
    changed: 25,
};

/// The smoke pair: small enough to build and measure in seconds.
const SMOKE: Size = Size {
    functions: 400,
    per_unit: 100,
    changed: 4,
};

/// Bump when the generated C changes, so stale data is rebuilt.
const GENERATOR_VERSION: &str = "bench-data v3";

const VARIANTS: [&str; 2] = ["baseline", "fixed"];

/// One built pair: both variants' binaries (and PDBs for PE).
pub struct Pair {
    /// The benchmark group: `generated-elf`, `generated-pe`, `smoke-elf`, ...
    pub name: String,
    pub baseline: PathBuf,
    pub fixed: PathBuf,
    pub baseline_pdb: Option<PathBuf>,
    pub fixed_pdb: Option<PathBuf>,
}

impl Pair {
    pub fn input_bytes(&self) -> u64 {
        self.files()
            .map(|path| std::fs::metadata(path).map(|m| m.len()).unwrap_or(0))
            .sum()
    }

    fn files(&self) -> impl Iterator<Item = &PathBuf> {
        [
            Some(&self.baseline),
            Some(&self.fixed),
            self.baseline_pdb.as_ref(),
            self.fixed_pdb.as_ref(),
        ]
        .into_iter()
        .flatten()
    }

    /// How `benches/diff.rs` is told about the pair (`HOTPATCH_BENCH_PAIRS`, `;`-separated):
    /// `name|baseline|fixed[|baseline.pdb|fixed.pdb]`.
    pub fn bench_spec(&self) -> String {
        let mut spec = self.name.clone();
        for path in self.files() {
            spec.push('|');
            spec.push_str(&path.to_string_lossy());
        }
        spec
    }
}

/// The generated pair in both formats (the small one with `smoke`), built under `data_dir`
/// unless a build by this generator version is already there. The PE pair needs clang,
/// lld and mingw-w64; without them it is left out with a note, except under CI.
pub fn ensure_pairs(data_dir: &Path, smoke: bool) -> Result<Vec<Pair>> {
    let (size, prefix) = if smoke {
        (SMOKE, "smoke")
    } else {
        (full_size()?, "generated")
    };
    let dir = data_dir.join(format!("generated-{}", size.functions));
    let src_dir = dir.join("src");
    let mut pairs = Vec::new();
    let elf_dir = dir.join("elf");
    if !is_current(&elf_dir, size) {
        write_sources(&src_dir, size)?;
        eprintln!(
            "building the generated ELF pair ({} functions) in {}",
            size.functions,
            elf_dir.display()
        );
        build_elf(&src_dir, &elf_dir, size)?;
        fs_err::write(elf_dir.join("STAMP"), stamp(size))?;
    }
    pairs.push(Pair {
        name: format!("{prefix}-elf"),
        baseline: elf_dir.join("baseline"),
        fixed: elf_dir.join("fixed"),
        baseline_pdb: None,
        fixed_pdb: None,
    });

    let pe_dir = dir.join("pe");
    if !is_current(&pe_dir, size) {
        match mingw_libgcc_dir() {
            Some(libgcc_dir) if tool_exists("clang") => {
                write_sources(&src_dir, size)?;
                eprintln!(
                    "building the generated PE pair ({} functions) in {}",
                    size.functions,
                    pe_dir.display()
                );
                build_pe(&src_dir, &pe_dir, &libgcc_dir, size)?;
                fs_err::write(pe_dir.join("STAMP"), stamp(size))?;
            }
            _ if std::env::var_os("CI").is_some() => {
                bail!("clang or mingw-w64 is missing (hint: ci/install-packages --tests)")
            }
            _ => eprintln!(
                "note: clang or mingw-w64 is missing; skipping the generated PE pair (hint: ci/install-packages)"
            ),
        }
    }
    if is_current(&pe_dir, size) {
        pairs.push(Pair {
            name: format!("{prefix}-pe"),
            baseline: pe_dir.join("baseline.exe"),
            fixed: pe_dir.join("fixed.exe"),
            baseline_pdb: Some(pe_dir.join("baseline.pdb")),
            fixed_pdb: Some(pe_dir.join("fixed.pdb")),
        });
    }
    Ok(pairs)
}

/// [`FULL`], or as many functions as `HOTPATCH_BENCH_FUNCTIONS` says: a machine too busy to
/// build 50,000 functions in reasonable time measures a smaller pair (and the table says so,
/// in its function count).
fn full_size() -> Result<Size> {
    let Ok(text) = std::env::var("HOTPATCH_BENCH_FUNCTIONS") else {
        return Ok(FULL);
    };
    let functions: usize = text.parse().ok().filter(|&n| n >= 100).with_context(|| {
        format!("HOTPATCH_BENCH_FUNCTIONS=`{text}` is not a count of at least 100")
    })?;
    Ok(Size {
        functions,
        per_unit: FULL.per_unit.min(functions),
        changed: (functions / 2_000).clamp(1, FULL.changed),
    })
}

fn stamp(size: Size) -> String {
    format!(
        "{GENERATOR_VERSION} {} {} {}\n",
        size.functions, size.per_unit, size.changed
    )
}

fn is_current(dir: &Path, size: Size) -> bool {
    std::fs::read_to_string(dir.join("STAMP")).is_ok_and(|s| s == stamp(size))
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
pub fn mingw_libgcc_dir() -> Option<PathBuf> {
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
fn write_sources(src_dir: &Path, size: Size) -> Result<()> {
    if src_dir.join("STAMP").is_file()
        && fs_err::read_to_string(src_dir.join("STAMP"))? == stamp(size)
    {
        return Ok(());
    }
    for (variant_idx, variant) in VARIANTS.into_iter().enumerate() {
        let dir = src_dir.join(variant);
        if dir.exists() {
            fs_err::remove_dir_all(&dir)?;
        }
        fs_err::create_dir_all(&dir)?;
        let fixed = variant_idx == 1;
        let program = generate(
            SEED,
            size.functions,
            size.per_unit,
            |func_idx| is_changed(size, func_idx),
            Some(FixStyle::WithHelper).filter(|_| fixed),
        );
        fs_err::write(dir.join("bench.h"), &program.header)?;
        for (unit_idx, unit) in program.units.iter().enumerate() {
            fs_err::write(dir.join(unit_name(unit_idx)), unit)?;
        }
    }
    fs_err::write(src_dir.join("STAMP"), stamp(size))?;
    Ok(())
}

pub(crate) fn unit_name(unit_idx: usize) -> String {
    format!("unit_{unit_idx:03}.c")
}

fn n_units(size: Size) -> usize {
    size.functions.div_ceil(size.per_unit)
}

/// The C text of one variant.
pub(crate) struct Program {
    /// `bench.h`, included by every unit.
    pub(crate) header: String,
    /// `unit_NNN.c` ([`unit_name`]), in link order.
    pub(crate) units: Vec<String>,
}

/// The generated pair's seed: both variants draw the same program from it.
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

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
fn is_changed(size: Size, func_idx: usize) -> bool {
    let stride = size.functions / size.changed;
    func_idx % stride == stride / 3
}

/// The C text of a program of `functions` functions, `per_unit` to a unit, drawn from `seed`.
/// The baseline variant has `fix` `None`; in a fixed variant, the functions for which `changed`
/// holds get the "security fix" `fix` says. The release bench (`bench_release.rs`) draws its
/// large programs here too, with one changed function.
pub(crate) fn generate(
    seed: u64,
    functions: usize,
    per_unit: usize,
    changed: impl Fn(usize) -> bool,
    fix: Option<FixStyle>,
) -> Program {
    let insert_helper = fix == Some(FixStyle::WithHelper);
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
    let mut rng = Rng(seed);
    let n_units = functions.div_ceil(per_unit);
    let mut units = Vec::with_capacity(n_units);
    for unit_idx in 0..n_units {
        let first = unit_idx * per_unit;
        let last = (first + per_unit).min(functions);
        let mut bodies = String::new();
        let mut callees = BTreeSet::new();
        if unit_idx == 0 && insert_helper {
            // Inserted first in the first unit: every function after it moves.
            bodies.push_str(
                "int bench_inserted_check(const int *values, int n) {\n  \
                 if (!values || n < 0 || n > 4096) return 1;\n  \
                 for (int k = 0; k < n; k++) if (values[k] < 0) return 1;\n  return 0;\n}\n\n",
            );
        }
        for func_idx in first..last {
            let fix = fix.filter(|_| changed(func_idx));
            function(&mut rng, func_idx, fix, &mut bodies, &mut callees);
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
            unit.push_str(&globals_and_main(functions));
        }
        unit.push_str(&bodies);
        units.push(unit);
    }
    Program { header, units }
}

fn globals_and_main(functions: usize) -> String {
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
        last = functions - 1
    );
    text
}

/// What the fixed variant does to a changed function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FixStyle {
    /// A bounds check, and in half of the functions (even index) a call to a helper that is
    /// inserted first in the first unit, so every function after it moves: the generated pair.
    WithHelper,
    /// A bounds check that reports the rejected length through `bench_sink` with a message of
    /// its own: at least 16 bytes more code, more than the alignment padding after a function
    /// can absorb, so the code after the function moves.
    Reported,
}

/// Appends `f<func_idx>` to `out`. Every function has the signature
/// `int f(const int *values, int n)`, so any can call any earlier one.
fn function(
    rng: &mut Rng,
    func_idx: usize,
    fix: Option<FixStyle>,
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
    // Straight-line mixing into a global: the bulk of real code is arithmetic like this, and
    // it brings the pair to the code size issue 11 asks for.
    let n_steps = 3 + rng.below(8);
    let _ = write!(
        out,
        "  if (values && n > 16) {{\n    int mix = n ^ {seed};\n"
    );
    for _ in 0..n_steps {
        let _ = writeln!(
            out,
            "    mix = (mix * {}) ^ (values[{}] + (mix >> {}));",
            (rng.below(1 << 20) | 1),
            rng.below(16),
            1 + rng.below(30)
        );
    }
    let _ = writeln!(out, "    g_counter[{}] ^= mix;\n  }}", rng.below(256));
    match fix {
        None => {}
        Some(FixStyle::WithHelper) => {
            // The "security fix": a bounds check, and in half of them a call to the new helper.
            out.push_str("  if (n < 0 || n > 4096) return -22;\n");
            if func_idx.is_multiple_of(2) {
                out.push_str("  if (bench_inserted_check(values, n)) return -1;\n");
            }
        }
        Some(FixStyle::Reported) => {
            let _ = writeln!(
                out,
                "  if (n < 0 || n > 4096) return bench_sink(-22, \"f{func_idx}: length out of range\");"
            );
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
fn build_elf(src_dir: &Path, out_dir: &Path, size: Size) -> Result<()> {
    fs_err::create_dir_all(out_dir)?;
    for variant in VARIANTS {
        let variant_src = fs_err::canonicalize(src_dir.join(variant))?;
        let objects = compile_units(&variant_src, size, "o", |unit, object| {
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

fn build_pe(src_dir: &Path, out_dir: &Path, libgcc_dir: &Path, size: Size) -> Result<()> {
    fs_err::create_dir_all(out_dir)?;
    for variant in VARIANTS {
        let variant_src = fs_err::canonicalize(src_dir.join(variant))?;
        let objects = compile_units(&variant_src, size, "obj", |unit, object| {
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
    size: Size,
    object_extension: &str,
    compile: impl Fn(&str, &str) -> Command,
) -> Result<Vec<String>> {
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    let baseline_dir = dir.with_file_name("baseline");
    let mut objects = Vec::new();
    let mut pending = Vec::new();
    for unit in (0..n_units(size)).map(unit_name) {
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
