//! Finding fixtures and running the `hotpatch` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One built side (baseline or fixed) of a fixture case in one format.
#[derive(Clone, Debug)]
pub struct Build {
    pub case: String,
    pub format: &'static str,
    pub side: &'static str,
    pub binary: PathBuf,
    /// The PDB, for PE builds.
    pub pdb: Option<PathBuf>,
}

impl Build {
    pub fn label(&self) -> String {
        format!("{}/{}/{}", self.case, self.format, self.side)
    }
}

/// Every committed build of every fixture case, sorted.
pub fn builds() -> Vec<Build> {
    let mut builds = Vec::new();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(root().join("fixtures"))
        .expect("fixtures/ exists")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.join("expect.toml").is_file())
        .collect();
    cases.sort();
    for case_dir in cases {
        let case = case_dir.file_name().unwrap().to_string_lossy().into_owned();
        let formats = fixture_formats(&case_dir);
        for side in ["baseline", "fixed"] {
            if formats.contains(&"pe") {
                let binary = pe_binary(&case_dir, side);
                builds.push(Build {
                    case: case.clone(),
                    format: "pe",
                    side,
                    pdb: Some(binary.with_extension("pdb")),
                    binary,
                });
            }
            if formats.contains(&"elf") {
                builds.push(Build {
                    case: case.clone(),
                    format: "elf",
                    side,
                    binary: case_dir.join("elf").join(side),
                    pdb: None,
                });
            }
        }
    }
    assert!(
        builds.len() >= 16 * 2,
        "expected at least 8 fixture cases, found {}",
        builds.len() / 4
    );
    for build in &builds {
        assert!(
            build.binary.is_file(),
            "{} is missing: run `cargo xtask fixtures`",
            build.binary.display()
        );
    }
    builds
}

pub fn hotpatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hotpatch"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("the hotpatch binary runs")
}

pub fn inspect_json(build: &Build) -> serde_json::Value {
    let output = hotpatch(&["inspect", path_str(&build.binary), "--json"]);
    assert!(
        output.status.success(),
        "inspect {} failed: {}",
        build.label(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("inspect --json prints JSON")
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("fixture paths are UTF-8")
}

/// Runs an external tool, failing with a hint when it is not installed.
pub fn tool(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run {program} ({error}); install it with ci/install-packages")
        });
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("tool output is UTF-8")
}

/// Every fixture case directory (with an `expect.toml`), sorted.
pub fn fixture_cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(root().join("fixtures"))
        .expect("fixtures/ exists")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.join("expect.toml").is_file())
        .collect();
    cases.sort();
    assert!(cases.len() >= 8, "expected at least 8 fixture cases");
    cases
}

/// The formats a case has builds for: both for cases built from source, `pe` alone for prebuilt
/// MSVC cases (`fixtures/msvc_*`).
pub fn fixture_formats(case: &Path) -> Vec<&'static str> {
    let formats: Vec<&'static str> = ["pe", "elf"]
        .into_iter()
        .filter(|format| case.join(format).is_dir())
        .collect();
    assert!(
        !formats.is_empty(),
        "{} has no pe/ or elf/ builds",
        case.display()
    );
    formats
}

/// The PE image of one side of a case: an executable for cases built here, a DLL for some
/// prebuilt ones.
pub fn pe_binary(case: &Path, side: &str) -> PathBuf {
    let exe = case.join("pe").join(format!("{side}.exe"));
    let dll = exe.with_extension("dll");
    if dll.is_file() { dll } else { exe }
}

/// The baseline and fixed build of a case in one format, as paths relative to the repository
/// root (where `hotpatch` runs), so reports name them the same on every machine.
pub fn fixture_pair(case: &Path, format: &str) -> (String, String) {
    let side = |side: &str| {
        let path = match format {
            "pe" => pe_binary(case, side),
            _ => case.join("elf").join(side),
        };
        let root = root();
        path.strip_prefix(&root)
            .unwrap_or(&path)
            .display()
            .to_string()
    };
    (side("baseline"), side("fixed"))
}
