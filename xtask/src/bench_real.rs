//! The real pair of `cargo xtask bench` (issue 11, item 1 (b)): two adjacent releases of a
//! large open-source program, PostgreSQL 15.18 and 15.19, whose `postgres` server binary
//! holds more than 5 MB of code. Both releases are built from Debian's upstream tarballs
//! (`postgresql-15_<version>.orig.tar.bz2`, checked against the SHA-256 of Debian's signed
//! `.dsc`) with debug info, as ELF+DWARF (gcc) and as PE+PDB (clang and lld for mingw-w64),
//! and cached under `<data>/postgres-15.18-15.19/{elf,pe}/` as `baseline[.exe|.pdb]` and
//! `fixed[.exe|.pdb]`, the layout of the generated pair. A build is redone only when its stamp
//! (the recipe's version) is missing or stale; the smoke run never builds PostgreSQL.
//!
//! Only the backend is built (`make -C src/backend`), with every optional library off, so
//! the build needs no more than a C compiler, make and perl. Source paths are mapped to `.`
//! so the two releases' debug info differs only where their code does.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::bench_pair::{self, Pair};
use crate::shell;

/// One release: its version, the SHA-256 of its upstream tarball and where to get it.
struct Release {
    version: &'static str,
    sha256: &'static str,
    /// Tried in order. deb.debian.org's pool holds a release while Debian ships it;
    /// snapshot.debian.org keeps every file Debian shipped, by its SHA-1, for good.
    urls: &'static [&'static str],
}

/// 15.18 (bookworm) and 15.19 (bookworm-security), adjacent upstream minor releases; the
/// SHA-256 values are those of Debian's `.dsc` files for `15.18-0+deb12u1` and
/// `15.19-0+deb12u1`.
const BASELINE: Release = Release {
    version: "15.18",
    sha256: "11df0df97fe3ea4ba9a791faaf39cee1d2fe571e78885b5b55d8517d27c323b4",
    urls: &[
        "http://deb.debian.org/debian/pool/main/p/postgresql-15/postgresql-15_15.18.orig.tar.bz2",
        "https://snapshot.debian.org/file/fab946980b8709a3caf476eb87a2980fcc0664e8",
    ],
};
const FIXED: Release = Release {
    version: "15.19",
    sha256: "e1a64a87a46b825b88c082e4518161a47aab53c45694964f8ba1df28f7859f89",
    urls: &[
        "http://deb.debian.org/debian-security/pool/updates/main/p/postgresql-15/postgresql-15_15.19.orig.tar.bz2",
        "https://snapshot.debian.org/file/3aa14fc412ab20668e5a4a5be3552cf8c9431af9",
    ],
};

/// Bump when a format's build recipe changes, so its stale builds are redone (the other
/// format's builds stay current).
const ELF_RECIPE_VERSION: &str = "bench-real v1";
const PE_RECIPE_VERSION: &str = "bench-real pe v2";

/// The benchmark groups are `postgres-elf` and `postgres-pe`; `--pair postgres` selects both.
pub const FAMILY: &str = "postgres";

/// `configure` options common to both formats: no optional library, and the system's time
/// zone data, so the build never runs `zic` (which a cross build could not).
const CONFIGURE_ARGS: &[&str] = &[
    "--without-readline",
    "--without-zlib",
    "--without-icu",
    "--without-openssl",
    "--without-llvm",
    "--with-system-tzdata=/usr/share/zoneinfo",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Elf,
    Pe,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Elf => "elf",
            Format::Pe => "pe",
        }
    }

    fn recipe_version(self) -> &'static str {
        match self {
            Format::Elf => ELF_RECIPE_VERSION,
            Format::Pe => PE_RECIPE_VERSION,
        }
    }

    /// The binary (and PDB) of `variant` in the pair's directory.
    fn outputs(self, out_dir: &Path, variant: &str) -> (PathBuf, Option<PathBuf>) {
        match self {
            Format::Elf => (out_dir.join(variant), None),
            Format::Pe => (
                out_dir.join(format!("{variant}.exe")),
                Some(out_dir.join(format!("{variant}.pdb"))),
            ),
        }
    }
}

/// The PostgreSQL pair in the formats `wanted` accepts (`elf`, `pe`), built under `data_dir`
/// unless a build by this recipe is there; none in the smoke run. A format whose tools are missing is left out with a note,
/// except under CI.
pub fn ensure_pairs(
    data_dir: &Path,
    smoke: bool,
    wanted: impl Fn(&str) -> bool,
) -> Result<Vec<Pair>> {
    if smoke {
        return Ok(Vec::new());
    }
    let dir = data_dir.join(format!("{FAMILY}-{}-{}", BASELINE.version, FIXED.version));
    let mut pairs = Vec::new();
    for format in [Format::Elf, Format::Pe] {
        if !wanted(format.name()) {
            continue;
        }
        let out_dir = dir.join(format.name());
        let variants = [("baseline", &BASELINE), ("fixed", &FIXED)];
        if variants
            .iter()
            .any(|(variant, release)| !is_current(format, &out_dir, variant, release))
        {
            let missing = missing_tools(format);
            if !missing.is_empty() {
                let message = format!(
                    "{} missing; cannot build the PostgreSQL {} pair (hint: ci/install-packages)",
                    missing.join(", "),
                    format.name()
                );
                if std::env::var_os("CI").is_some() {
                    bail!("{message}");
                }
                eprintln!("note: {message}");
                continue;
            }
            fs_err::create_dir_all(&out_dir)?;
            // Both releases build in the same tree path, one after the other, so no path
            // tells them apart, through one compiler cache (see `build`).
            let work_dir = dir.join("work").join(format.name());
            for (variant, release) in variants {
                if is_current(format, &out_dir, variant, release) {
                    continue;
                }
                let tarball = fetch(&dir.join("download"), release)?;
                eprintln!(
                    "building PostgreSQL {} ({}, {variant}) in {}; this takes a while",
                    release.version,
                    format.name(),
                    work_dir.display()
                );
                build(format, &tarball, &work_dir, &out_dir, variant, release)?;
                fs_err::write(stamp_path(&out_dir, variant), stamp(format, release))?;
            }
            // The build tree and the cache (objects with debug info) are several hundred MB.
            fs_err::remove_dir_all(&work_dir)?;
        }
        let (baseline, baseline_pdb) = format.outputs(&out_dir, "baseline");
        let (fixed, fixed_pdb) = format.outputs(&out_dir, "fixed");
        pairs.push(Pair {
            name: format!("{FAMILY}-{}", format.name()),
            baseline,
            fixed,
            baseline_pdb,
            fixed_pdb,
        });
    }
    Ok(pairs)
}

fn stamp(format: Format, release: &Release) -> String {
    format!(
        "{} {} {}\n",
        format.recipe_version(),
        release.version,
        release.sha256
    )
}

fn stamp_path(out_dir: &Path, variant: &str) -> PathBuf {
    out_dir.join(format!("{variant}.STAMP"))
}

fn is_current(format: Format, out_dir: &Path, variant: &str, release: &Release) -> bool {
    std::fs::read_to_string(stamp_path(out_dir, variant)).is_ok_and(|s| s == stamp(format, release))
}

/// The commands a format's build runs that are not on this machine.
fn missing_tools(format: Format) -> Vec<String> {
    let mut tools = vec![
        "make",
        "perl",
        "tar",
        "bzip2",
        "curl",
        "sha256sum",
        "ccache",
    ];
    match format {
        Format::Elf => tools.push("gcc"),
        Format::Pe => tools.extend(["clang", "ld.lld", "x86_64-w64-mingw32-windres"]),
    }
    let mut missing: Vec<String> = tools
        .into_iter()
        .filter(|tool| !on_path(tool))
        .map(str::to_owned)
        .collect();
    if format == Format::Pe && bench_pair::mingw_libgcc_dir().is_none() {
        missing.push("mingw-w64's libgcc".to_owned());
    }
    missing
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// The release's tarball in `download_dir`, fetched unless a file with the right SHA-256 is
/// already there (one put there by hand counts too).
fn fetch(download_dir: &Path, release: &Release) -> Result<PathBuf> {
    fs_err::create_dir_all(download_dir)?;
    let path = download_dir.join(format!("postgresql-15_{}.orig.tar.bz2", release.version));
    if path.is_file() && sha256(&path)? == release.sha256 {
        return Ok(path);
    }
    let partial = path.with_extension("bz2.part");
    let mut failures = Vec::new();
    for url in release.urls {
        eprintln!("fetching {url}");
        let mut command = Command::new("curl");
        command
            .args(["--fail", "--silent", "--show-error", "--location"])
            .args(["--retry", "2", "--output"])
            .arg(&partial)
            .arg(url);
        if let Err(error) = shell::run(&mut command) {
            failures.push(format!("{url}: {error:#}"));
            continue;
        }
        let digest = sha256(&partial)?;
        if digest != release.sha256 {
            failures.push(format!(
                "{url}: SHA-256 {digest}, expected {}",
                release.sha256
            ));
            continue;
        }
        fs_err::rename(&partial, &path)?;
        return Ok(path);
    }
    bail!(
        "could not fetch PostgreSQL {} (or place postgresql-15_{}.orig.tar.bz2 with SHA-256 {} in {}):\n{}",
        release.version,
        release.version,
        release.sha256,
        download_dir.display(),
        failures.join("\n")
    )
}

/// The SHA-256 of `path` in hex, by coreutils' `sha256sum` (xtask links no hash crate).
fn sha256(path: &Path) -> Result<String> {
    let output = Command::new("sha256sum")
        .arg(path)
        .output()
        .context("failed to start `sha256sum`")?;
    if !output.status.success() {
        bail!(
            "`sha256sum {}` failed with {}",
            path.display(),
            output.status
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    match text.split_whitespace().next() {
        Some(digest) if digest.len() == 64 => Ok(digest.to_owned()),
        _ => bail!("`sha256sum {}` printed `{}`", path.display(), text.trim()),
    }
}

/// Unpacks `tarball` into `<work_dir>/postgresql` (replacing the other release's tree),
/// configures it for `format`, builds the backend and copies the `postgres` binary (and PDB)
/// into `out_dir` as `variant`.
///
/// The compiler runs under ccache in preprocessor mode with its cache in `work_dir`: a
/// translation unit whose preprocessed text and flags are those of one compiled before takes
/// that object. Between 15.18 and 15.19 that saves nothing (15.19 adds lines to `c.h`, which
/// every unit includes, so every unit's line markers move), but a build that fails late, or
/// a second format's rerun, compiles nothing twice. The tree path is the same for both
/// releases and mapped to `.`, so a cached object is the bytes a fresh compile would give.
/// configure's results are cached in `work_dir` too.
fn build(
    format: Format,
    tarball: &Path,
    work_dir: &Path,
    out_dir: &Path,
    variant: &str,
    release: &Release,
) -> Result<()> {
    fs_err::create_dir_all(work_dir)?;
    let work_dir = fs_err::canonicalize(work_dir)?;
    let tree = work_dir.join("postgresql");
    let unpacked = work_dir.join(format!("postgresql-{}", release.version));
    for old in [&tree, &unpacked] {
        if old.exists() {
            fs_err::remove_dir_all(old)?;
        }
    }
    shell::run(
        Command::new("tar")
            .arg("-xjf")
            .arg(tarball)
            .arg("-C")
            .arg(&work_dir),
    )?;
    fs_err::rename(&unpacked, &tree)?;
    let ccache_env = [
        ("CCACHE_DIR", work_dir.join("ccache").into_os_string()),
        ("CCACHE_BASEDIR", tree.clone().into_os_string()),
        ("CCACHE_NODIRECT", "1".into()),
        ("CCACHE_NOHASHDIR", "1".into()),
        ("CCACHE_MAXSIZE", "0".into()),
    ];
    // Every path under the tree is `.` in the debug info.
    let prefix_map = format!("-ffile-prefix-map={}=.", tree.display());
    let mut configure = Command::new("./configure");
    configure
        .current_dir(&tree)
        .args(CONFIGURE_ARGS)
        .arg(format!(
            "--cache-file={}",
            work_dir.join("config.cache").display()
        ))
        .envs(ccache_env.clone())
        .stdout(std::process::Stdio::null());
    let (binary, pdb) = format.outputs(out_dir, variant);
    // Variables set on make's command line (the PE link's PDB).
    let mut make_vars = Vec::new();
    let built = match format {
        Format::Elf => {
            configure
                .env("CC", "ccache gcc")
                .env("CFLAGS", format!("-O2 -g {prefix_map}"));
            tree.join("src/backend/postgres")
        }
        Format::Pe => {
            let libgcc_dir = bench_pair::mingw_libgcc_dir()
                .context("mingw-w64's libgcc is missing (hint: ci/install-packages)")?;
            configure
                .arg("--host=x86_64-w64-mingw32")
                // clang rejects `_Static_assert(WSA_INVALID_EVENT == NULL, "")` in latch.c
                // (a pointer comparison is no integer constant expression; gcc folds it), so
                // c.h takes its fallback, a bit-field whose width is the condition, which
                // clang folds.
                .arg("pgac_cv__static_assert=no")
                .env("CC", "ccache clang --target=x86_64-w64-mingw32")
                .env(
                    "CFLAGS",
                    format!("-O2 -g -gcodeview -ffile-compilation-dir=. {prefix_map}"),
                )
                .env(
                    "LDFLAGS",
                    format!("-fuse-ld=lld -L{}", libgcc_dir.display()),
                );
            // Only the link of postgres.exe writes the PDB (not configure's test links).
            if let Some(pdb) = &pdb {
                make_vars.push(format!("LDFLAGS_EX=-Wl,--pdb={}", pdb.display()));
            }
            tree.join("src/backend/postgres.exe")
        }
    };
    shell::run(&mut configure)?;
    // The generated headers first, alone: `make -jN -C src/backend` would race its
    // subdirectories against the symlinks into src/include (the top-level makefile does this
    // step itself, but it builds far more than the backend).
    let make = |jobs: usize, dir: &str, goal: Option<&str>| {
        let mut command = Command::new("make");
        command
            .current_dir(&tree)
            .arg(format!("-j{jobs}"))
            .args(["-s", "-C", dir])
            .args(&make_vars)
            .args(goal)
            .envs(ccache_env.clone())
            .stdout(std::process::Stdio::null());
        command
    };
    shell::run(&mut make(1, "src/backend", Some("generated-headers")))?;
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    // The server's variants of libpgport and libpgcommon next: the backend's link needs
    // them, and a parallel backend make looks for them before its submake has built them.
    shell::run(&mut make(jobs, "src/port", Some("libpgport_srv.a")))?;
    shell::run(&mut make(jobs, "src/common", Some("libpgcommon_srv.a")))?;
    shell::run(&mut make(jobs, "src/backend", None))?;
    fs_err::copy(&built, &binary)?;
    if let Some(pdb) = pdb
        && !pdb.is_file()
    {
        bail!("linking {} wrote no {}", built.display(), pdb.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_are_adjacent_minor_releases_of_one_major() {
        let parse = |version: &str| -> (u32, u32) {
            let (major, minor) = version.split_once('.').expect("major.minor");
            (major.parse().expect("major"), minor.parse().expect("minor"))
        };
        let (base_major, base_minor) = parse(BASELINE.version);
        let (fixed_major, fixed_minor) = parse(FIXED.version);
        assert_eq!(base_major, fixed_major);
        assert_eq!(base_minor + 1, fixed_minor);
        for release in [&BASELINE, &FIXED] {
            assert_eq!(release.sha256.len(), 64);
            assert!(release.sha256.bytes().all(|b| b.is_ascii_hexdigit()));
            assert!(release.urls[0].ends_with(&format!("_{}.orig.tar.bz2", release.version)));
        }
    }

    #[test]
    fn smoke_builds_nothing() {
        let dir = std::env::temp_dir().join(format!("bench-real-smoke-{}", std::process::id()));
        let pairs = ensure_pairs(&dir, true, |_| true).expect("smoke");
        assert!(pairs.is_empty());
        assert!(!dir.exists());
    }
}
