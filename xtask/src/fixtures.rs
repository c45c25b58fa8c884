//! `cargo xtask fixtures`: builds every `fixtures/<case>/{baseline,fixed}.{c,cpp}` into
//! `pe/<variant>.{exe,pdb}` (clang + lld, mingw-w64 target) and `elf/<variant>` (gcc), and
//! checks that a rebuild reproduces the committed bytes.
//!
//! A case with a `host.c` is a library case: each variant becomes a DLL (`pe/<variant>.dll`,
//! named `<case>.dll` inside, the name the loader looks for) and an ELF shared object, and
//! `host.c` becomes `pe/host.{exe,pdb}`, linked against the baseline's import library, so one
//! program runs with either build of the library beside it.
//!
//! Reproducibility rests on four things: every command runs in the case directory with
//! relative paths; the compilation directory is mapped to `.`; the PE is compiled to a named
//! object first, because lld records object paths in the PDB and the driver's default is a
//! random temporary file; and lld gets `--no-insert-timestamp`, `/pdbaltpath` and
//! `/pdbsourcepath` so neither the exe nor the PDB records the absolute build directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::shell;

/// The two builds every case compares.
const VARIANTS: [&str; 2] = ["baseline", "fixed"];

const MINGW_TARGET: &str = "--target=x86_64-w64-mingw32";

/// What `cargo xtask fixtures` was asked to do.
pub struct Config {
    /// Rebuild into a temporary directory and compare with the committed outputs.
    pub check: bool,
    /// Case names to build; empty means every case.
    pub cases: Vec<String>,
}

pub fn run(args: &[String]) -> Result<()> {
    let mut config = Config {
        check: false,
        cases: Vec::new(),
    };
    for arg in args {
        match arg.as_str() {
            "--check" => config.check = true,
            flag if flag.starts_with('-') => bail!("unknown flag `{flag}` for `fixtures`"),
            case => config.cases.push(case.to_owned()),
        }
    }
    build(&config)
}

/// Builds (or, with `config.check`, verifies) the fixtures.
pub fn build(config: &Config) -> Result<()> {
    let root = shell::workspace_root();
    shell::run(&mut Command::new(root.join("ci/install-packages")))?;
    let fixtures_dir = root.join("fixtures");
    let cases = select_cases(&fixtures_dir, &config.cases)?;
    let toolchain = Toolchain::detect()?;
    if config.check {
        check(&toolchain, &fixtures_dir, &cases)
    } else {
        for case in &cases {
            eprintln!("building fixture {case}");
            build_case(&toolchain, &fixtures_dir.join(case))?;
        }
        Ok(())
    }
}

/// Rebuilds every case from a copy of its sources and compares the outputs byte for byte.
fn check(toolchain: &Toolchain, fixtures_dir: &Path, cases: &[String]) -> Result<()> {
    let scratch = std::env::temp_dir().join(format!("hotpatch-fixtures-{}", std::process::id()));
    let result = check_in(toolchain, fixtures_dir, cases, &scratch);
    // Leave the scratch directory behind only when the comparison failed, for inspection.
    if result.is_ok() {
        fs_err::remove_dir_all(&scratch)?;
    }
    result
}

fn check_in(
    toolchain: &Toolchain,
    fixtures_dir: &Path,
    cases: &[String],
    scratch: &Path,
) -> Result<()> {
    let mut mismatches = Vec::new();
    for case in cases {
        let committed_dir = fixtures_dir.join(case);
        let rebuilt_dir = scratch.join(case);
        fs_err::create_dir_all(&rebuilt_dir)?;
        for variant in VARIANTS {
            let source = find_source(&committed_dir, variant)?;
            fs_err::copy(committed_dir.join(&source), rebuilt_dir.join(&source))?;
        }
        if is_library(&committed_dir) {
            fs_err::copy(committed_dir.join(HOST), rebuilt_dir.join(HOST))?;
        }
        // The option files are inputs too.
        for entry in fs_err::read_dir(&committed_dir)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.ends_with(".cflags") || name.ends_with(".ldflags") || name.ends_with(".rc") {
                fs_err::copy(&path, rebuilt_dir.join(&name))?;
            }
        }
        build_case(toolchain, &rebuilt_dir)?;
        for output in outputs(&committed_dir) {
            let committed = committed_dir.join(&output);
            let rebuilt = fs_err::read(rebuilt_dir.join(&output))?;
            match std::fs::read(&committed) {
                Ok(bytes) if bytes == rebuilt => {}
                Ok(_) => mismatches.push(format!("{case}/{} differs", output.display())),
                Err(_) => mismatches.push(format!("{case}/{} is not committed", output.display())),
            }
        }
        eprintln!("checked fixture {case}");
    }
    if !mismatches.is_empty() {
        bail!(
            "rebuilt fixtures differ from the committed ones (rebuilt copies in {}):\n  {}\nhint: run `cargo xtask fixtures` and commit the outputs",
            scratch.display(),
            mismatches.join("\n  ")
        );
    }
    Ok(())
}

/// Every fixture case directory (one holding `baseline.c` or `baseline.cpp`), sorted by name,
/// limited to `wanted` when it is not empty. Prebuilt cases have no sources and are never built.
fn select_cases(fixtures_dir: &Path, wanted: &[String]) -> Result<Vec<String>> {
    let mut cases = Vec::new();
    for entry in fs_err::read_dir(fixtures_dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_dir() && find_source(&entry.path(), "baseline").is_ok() {
            cases.push(name);
        }
    }
    cases.sort();
    for case in wanted {
        if !cases.contains(case) {
            if is_prebuilt(&fixtures_dir.join(case)) {
                bail!(
                    "fixture case `{case}` is prebuilt (its expect.toml has a [prebuilt] table): it has no sources to build"
                );
            }
            bail!("no fixture case `{case}` in {}", fixtures_dir.display());
        }
    }
    if !wanted.is_empty() {
        cases.retain(|case| wanted.contains(case));
    }
    Ok(cases)
}

/// A case committed as built elsewhere (the MSVC cases from PyPI wheels): its `expect.toml` has a
/// `[prebuilt]` table with the origin and license, and there are no sources to build.
fn is_prebuilt(case_dir: &Path) -> bool {
    fs_err::read_to_string(case_dir.join("expect.toml"))
        .is_ok_and(|text| text.lines().any(|line| line.trim() == "[prebuilt]"))
}

/// The source file of `variant` in `case_dir`, as a name relative to it.
fn find_source(case_dir: &Path, variant: &str) -> Result<String> {
    for extension in ["c", "cpp"] {
        let name = format!("{variant}.{extension}");
        if case_dir.join(&name).is_file() {
            return Ok(name);
        }
    }
    bail!("{} has no {variant}.c or {variant}.cpp", case_dir.display())
}

/// The program source of a library case.
const HOST: &str = "host.c";

/// A library case builds its variants as DLLs and shared objects, run by `host.c`.
fn is_library(case_dir: &Path) -> bool {
    case_dir.join(HOST).is_file()
}

/// The committed build outputs of one case, relative to its directory.
fn outputs(case_dir: &Path) -> Vec<PathBuf> {
    let library = is_library(case_dir);
    let extension = if library { "dll" } else { "exe" };
    let mut outputs = Vec::new();
    for variant in VARIANTS {
        outputs.push(Path::new("pe").join(format!("{variant}.{extension}")));
        outputs.push(Path::new("pe").join(format!("{variant}.pdb")));
        outputs.push(Path::new("elf").join(variant));
    }
    if library {
        outputs.push(Path::new("pe").join("host.exe"));
        outputs.push(Path::new("pe").join("host.pdb"));
    }
    outputs
}

/// Where the mingw-w64 libgcc lives; its version directory differs between Debian releases.
pub(crate) struct Toolchain {
    /// Also holds mingw-w64's C++ runtime DLLs (`libstdc++-6.dll`, `libgcc_s_seh-1.dll`).
    pub(crate) mingw_libgcc_dir: PathBuf,
}

impl Toolchain {
    pub(crate) fn detect() -> Result<Toolchain> {
        let base = Path::new("/usr/lib/gcc/x86_64-w64-mingw32");
        let mut best: Option<(u32, PathBuf)> = None;
        for entry in fs_err::read_dir(base)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            let Some(version) = name.strip_suffix("-win32") else {
                continue;
            };
            let major = version
                .split('.')
                .next()
                .and_then(|major| major.parse::<u32>().ok())
                .unwrap_or(0);
            if best
                .as_ref()
                .is_none_or(|(best_major, _)| major > *best_major)
            {
                best = Some((major, base.join(&name)));
            }
        }
        match best {
            Some((_, mingw_libgcc_dir)) => Ok(Toolchain { mingw_libgcc_dir }),
            None => bail!(
                "no {}/<version>-win32 directory\nhint: install the Debian package mingw-w64",
                base.display()
            ),
        }
    }
}

/// Builds both variants of the case in `case_dir` in both formats, replacing old outputs.
fn build_case(toolchain: &Toolchain, case_dir: &Path) -> Result<()> {
    let case_dir = fs_err::canonicalize(case_dir)?;
    for format_dir in ["pe", "elf"] {
        let dir = case_dir.join(format_dir);
        if dir.exists() {
            fs_err::remove_dir_all(&dir)?;
        }
        fs_err::create_dir_all(&dir)?;
    }
    let library = is_library(&case_dir);
    let pe_kind = if library {
        // The name inside the DLL (its export directory, the host's import) is the case's.
        let name = case_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .context("a case directory has a name")?;
        PeKind::Library { name }
    } else {
        PeKind::Program
    };
    for variant in VARIANTS {
        let source = find_source(&case_dir, variant)?;
        let is_cpp = source.ends_with(".cpp");
        build_pe(toolchain, &case_dir, variant, &source, is_cpp, &pe_kind)
            .with_context(|| format!("building {}/pe/{variant}", case_dir.display()))?;
        build_elf(&case_dir, variant, &source, is_cpp, library)
            .with_context(|| format!("building {}/elf/{variant}", case_dir.display()))?;
    }
    if let PeKind::Library { name } = &pe_kind {
        build_pe(
            toolchain,
            &case_dir,
            "host",
            HOST,
            false,
            &PeKind::Host {
                import_library: format!("pe/{name}.dll.a"),
            },
        )
        .with_context(|| format!("building {}/pe/host.exe", case_dir.display()))?;
        fs_err::remove_file(case_dir.join(format!("pe/{name}.dll.a")))?;
    }
    Ok(())
}

/// What one PE link makes.
enum PeKind {
    /// `pe/<variant>.exe`.
    Program,
    /// `pe/<variant>.dll`, linked as `<name>.dll`; the baseline also leaves the import library
    /// `pe/<name>.dll.a` for the host.
    Library { name: String },
    /// `pe/host.exe`, linked against the library's import library.
    Host { import_library: String },
}

/// `pe/<variant>.exe` and `pe/<variant>.pdb` with clang and lld for x86_64-w64-mingw32.
fn build_pe(
    toolchain: &Toolchain,
    case_dir: &Path,
    variant: &str,
    source: &str,
    is_cpp: bool,
    kind: &PeKind,
) -> Result<()> {
    let driver = if is_cpp { "clang++" } else { "clang" };
    let object = format!("pe/{variant}.o");
    // clang records its cc1 command line in the PDB, so a `-ffile-prefix-map=$PWD=.` would
    // itself leak the build directory; naming the compilation directory `.` does not.
    let mut compile = Command::new(driver);
    compile
        .current_dir(case_dir)
        .args([MINGW_TARGET, "-O2", "-g", "-gcodeview"])
        .arg("-ffile-compilation-dir=.")
        .args(extra_flags(case_dir, variant, "pe", "cflags")?);
    if is_cpp {
        // Debian's clang does not find mingw-w64's libstdc++ headers on its own; they live
        // beside the libgcc that is already on the link line.
        let cxx_include = toolchain.mingw_libgcc_dir.join("include/c++");
        compile
            .arg("-isystem")
            .arg(&cxx_include)
            .arg("-isystem")
            .arg(cxx_include.join("x86_64-w64-mingw32"));
    }
    shell::run(compile.args(["-c", source, "-o", &object]))?;
    // Windows resources: `<variant>.rc` compiled to a COFF object with mingw's windres.
    let resources = format!("pe/{variant}.res.o");
    let has_resources = case_dir.join(format!("{variant}.rc")).is_file();
    if has_resources {
        shell::run(
            Command::new("x86_64-w64-mingw32-windres")
                .current_dir(case_dir)
                .arg(format!("{variant}.rc"))
                .args(["-O", "coff", "-o", &resources]),
        )?;
    }
    let mut link = Command::new(driver);
    if has_resources {
        link.arg(&resources);
    }
    // A DLL is linked under its own name (lld writes the output's file name into the export
    // directory) and renamed after, so both variants carry the same name.
    let linked = match kind {
        PeKind::Program | PeKind::Host { .. } => format!("pe/{variant}.exe"),
        PeKind::Library { name } => {
            link.arg("-shared");
            if variant == "baseline" {
                link.arg(format!("-Wl,--out-implib=pe/{name}.dll.a"));
            }
            format!("pe/{name}.dll")
        }
    };
    if let PeKind::Host { import_library } = kind {
        link.arg(import_library);
    }
    shell::run(
        link.current_dir(case_dir)
            .args([MINGW_TARGET, "-g", "-fuse-ld=lld"])
            .arg(format!("-L{}", toolchain.mingw_libgcc_dir.display()))
            .arg(&object)
            .args(["-o", &linked])
            .arg(format!("-Wl,--pdb=pe/{variant}.pdb"))
            .arg("-Wl,--no-insert-timestamp")
            .arg(format!("-Wl,-Xlink=-pdbaltpath:{variant}.pdb"))
            .arg("-Wl,-Xlink=-pdbsourcepath:.")
            .args(extra_flags(case_dir, variant, "pe", "ldflags")?),
    )?;
    if let PeKind::Library { .. } = kind {
        fs_err::rename(
            case_dir.join(&linked),
            case_dir.join(format!("pe/{variant}.dll")),
        )?;
    }
    fs_err::remove_file(case_dir.join(&object))?;
    if has_resources {
        fs_err::remove_file(case_dir.join(&resources))?;
    }
    Ok(())
}

/// `elf/<variant>` with gcc: PIE (the Debian default), or a shared object for a library case;
/// DWARF, a SHA-1 build-id.
fn build_elf(
    case_dir: &Path,
    variant: &str,
    source: &str,
    is_cpp: bool,
    library: bool,
) -> Result<()> {
    let driver = if is_cpp { "g++" } else { "gcc" };
    let mut compile = Command::new(driver);
    if library {
        compile.args(["-shared", "-fPIC"]);
    }
    shell::run(
        compile
            .current_dir(case_dir)
            .args(["-O2", "-g"])
            .args(extra_flags(case_dir, variant, "elf", "cflags")?)
            .arg(format!("-ffile-prefix-map={}=.", case_dir.display()))
            .arg("-Wl,--build-id=sha1")
            .args([source, "-o", &format!("elf/{variant}")])
            .args(extra_flags(case_dir, variant, "elf", "ldflags")?),
    )
}

/// Extra options for one variant and format: `<variant>.<stage>` for both formats and
/// `<variant>.<format>.<stage>` for one (`stage` is `cflags` or `ldflags`), whitespace separated.
/// For cases where the fix is a change of options rather than of source, or that need a linker
/// feature such as identical code folding.
fn extra_flags(case_dir: &Path, variant: &str, format: &str, stage: &str) -> Result<Vec<String>> {
    let mut flags = Vec::new();
    for name in [
        format!("{variant}.{stage}"),
        format!("{variant}.{format}.{stage}"),
    ] {
        let path = case_dir.join(name);
        if path.is_file() {
            flags.extend(
                fs_err::read_to_string(&path)?
                    .split_whitespace()
                    .map(str::to_owned),
            );
        }
    }
    Ok(flags)
}
