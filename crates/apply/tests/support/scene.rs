//! One running target and everything around it, as the attack and fault tests need it: the
//! test program built and started, a signing key and its `--trust` file, a state directory
//! with the baseline package installed, the `hotpatch-apply` binary run with `--json`, and a
//! snapshot of everything an attack must leave untouched.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use super::package::{self, Fix, Signer};
use super::{Program, load_address, privileged, symbol, temp_dir};
use hotpatch_package::PackageKind;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// 2100-01-01.
pub const FAR_FUTURE: u64 = 4_102_444_800;

/// What a run of `hotpatch-apply` gave.
#[derive(Debug)]
pub struct Run {
    /// `None` when a signal ended it.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The parsed `--json` stdout (`null` when there is none).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// Every error kind the run reports: the top-level error's, and each result's.
    pub fn kinds(&self) -> Vec<String> {
        let json = self.json();
        let mut kinds = Vec::new();
        if let Some(kind) = json["error"]["kind"].as_str() {
            kinds.push(kind.to_owned());
        }
        for result in json["results"].as_array().into_iter().flatten() {
            if let Some(kind) = result["kind"].as_str() {
                kinds.push(kind.to_owned());
            }
        }
        kinds
    }
}

/// Runs the applier with `args` (and `env`) and prints what it said.
pub fn applier(args: &[&str], env: &[(&str, &str)], uid: Option<u32>) -> Run {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let mut command = Command::new(env!("CARGO_BIN_EXE_hotpatch-apply"));
    command.args(args).envs(env.iter().copied());
    if let Some(uid) = uid {
        command.uid(uid).gid(uid);
    }
    let output = command.output().expect("hotpatch-apply runs");
    let run = Run {
        code: output.status.code(),
        signal: output.status.signal(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    println!(
        "$ {}hotpatch-apply {}\n{}{}",
        env.iter()
            .map(|(k, v)| format!("{k}={v} "))
            .collect::<String>(),
        args.join(" "),
        run.stdout,
        run.stderr
    );
    run
}

pub fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Everything an attack must leave as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untouched {
    /// `/proc/PID/maps`.
    pub maps: String,
    /// The bytes of compute(), spin() and helper() in the process.
    pub code: Vec<Vec<u8>>,
    /// Every file under the test directory (the state directory, the binary, the packages,
    /// the trust file): path, mode and bytes.
    pub files: BTreeMap<PathBuf, (u32, Vec<u8>)>,
}

/// Every file under `dir`, recursively: mode and bytes (symbolic links by their target).
pub fn files_under(dir: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let metadata = std::fs::symlink_metadata(&path).unwrap();
            let mode = metadata.permissions().mode();
            if metadata.is_dir() {
                files.insert(path.clone(), (mode, Vec::new()));
                pending.push(path);
            } else if metadata.is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                files.insert(path, (mode, target.into_os_string().into_encoded_bytes()));
            } else {
                files.insert(path.clone(), (mode, std::fs::read(&path).unwrap()));
            }
        }
    }
    files
}

/// A running test program with the baseline package installed for it.
pub struct Scene {
    pub dir: PathBuf,
    pub state: PathBuf,
    pub binary: PathBuf,
    pub signer: Signer,
    pub program: Program,
    pub pid: i32,
    /// Where the executable is mapped.
    pub base: u64,
}

impl Scene {
    /// Builds and starts the test program (`args`) and installs the baseline package; `None`
    /// when the test cannot run outside CI (no root or gcc; under CI that fails instead).
    pub fn start(name: &str, args: &[&str]) -> Option<Scene> {
        Scene::start_in(name, args, |_| {})
    }

    /// The same, calling `prepare` with the state directory's path before anything is
    /// written there (e.g. to mount a small file system on it).
    pub fn start_in(name: &str, args: &[&str], prepare: impl FnOnce(&Path)) -> Option<Scene> {
        if !privileged() {
            return None;
        }
        let dir = temp_dir(name);
        let binary = super::build_executable(&dir);
        let signer = Signer::new(&dir);
        let program = Program::start(&binary, args);
        let pid = program.pid();
        let base = load_address(pid, &binary);
        prepare(&dir.join("state"));
        let scene = Scene {
            state: dir.join("state"),
            dir,
            binary,
            signer,
            program,
            pid,
            base,
        };
        let baseline = scene.package(PackageKind::Baseline, 1, Fix::None);
        let run = scene.apply(&scene.save("baseline.hpkg", &baseline));
        assert_eq!(run.code, Some(0), "the baseline installs");
        Some(scene)
    }

    /// A signed package of `kind` and `sequence` for the program with `fix`.
    pub fn package(&self, kind: PackageKind, sequence: u64, fix: Fix) -> Vec<u8> {
        package::package(
            &self.signer,
            kind,
            sequence,
            if kind == PackageKind::Baseline {
                sequence
            } else {
                1
            },
            FAR_FUTURE,
            vec![package::target(&self.binary, "bin/target", fix)],
        )
    }

    /// Month 1 (sequence 2): compute() tail-calls helper().
    pub fn month1(&self) -> Vec<u8> {
        self.package(PackageKind::Hotpatch, 2, Fix::TailCallHelper)
    }

    pub fn save(&self, name: &str, bytes: &[u8]) -> PathBuf {
        package::save(&self.dir, name, bytes)
    }

    /// `apply PKG --pid PID --json` with the scene's trust and state directory.
    pub fn apply(&self, package: &Path) -> Run {
        self.apply_with(package, &self.signer.trust_file, &[])
    }

    pub fn apply_with(&self, package: &Path, trust: &Path, env: &[(&str, &str)]) -> Run {
        applier(
            &[
                "apply",
                path(package),
                "--trust",
                path(trust),
                "--pid",
                &self.pid.to_string(),
                "--state-dir",
                path(&self.state),
                "--json",
                "--retries",
                "60",
                "--retry-timeout-ms",
                "6000",
            ],
            env,
            None,
        )
    }

    /// `rollback --pid PID --to baseline --json`.
    pub fn rollback(&self, env: &[(&str, &str)]) -> Run {
        applier(
            &[
                "rollback",
                "--pid",
                &self.pid.to_string(),
                "--state-dir",
                path(&self.state),
                "--json",
                "--retries",
                "60",
                "--retry-timeout-ms",
                "6000",
            ],
            env,
            None,
        )
    }

    /// `status --pid PID --json`: the exit code and the entries.
    pub fn status(&self) -> (Option<i32>, Vec<serde_json::Value>) {
        let run = applier(
            &[
                "status",
                "--pid",
                &self.pid.to_string(),
                "--state-dir",
                path(&self.state),
                "--json",
            ],
            &[],
            None,
        );
        let entries = run.json().as_array().cloned().unwrap_or_default();
        (run.code, entries)
    }

    /// Address and length of a function of the program in the process.
    pub fn function(&self, name: &str) -> (u64, usize) {
        let (rva, size) = symbol(&self.binary, name);
        (self.base + rva, size as usize)
    }

    /// The process's maps and code, and every file under the test directory.
    pub fn untouched(&self) -> Untouched {
        let ranges: Vec<(u64, usize)> = ["compute", "spin", "helper"]
            .iter()
            .map(|name| self.function(name))
            .collect();
        let (maps, code) = super::snapshot(self.pid, &ranges);
        Untouched {
            maps,
            code,
            files: files_under(&self.dir),
        }
    }

    /// Runs `attack` (which runs the applier) and asserts the specific refusal, then that
    /// nothing changed: maps, code bytes, files, and the program still computes the baseline.
    pub fn assert_refused(&self, code: i32, kind: &str, attack: impl FnOnce() -> Run) {
        let fixed_before = self.fixed_code_runs();
        let before = self.untouched();
        let run = attack();
        assert_eq!(run.code, Some(code), "exit code: {run:?}");
        assert!(
            run.kinds().iter().any(|k| k == kind),
            "expected kind {kind}, got {:?}: {run:?}",
            run.kinds()
        );
        let after = self.untouched();
        assert_eq!(after.maps, before.maps, "the process's memory map changed");
        assert_eq!(after.code, before.code, "the process's code changed");
        if after.files != before.files {
            let changed: Vec<_> = after
                .files
                .iter()
                .filter(|(p, v)| before.files.get(*p) != Some(v))
                .map(|(p, _)| p)
                .chain(
                    before
                        .files
                        .keys()
                        .filter(|p| !after.files.contains_key(*p)),
                )
                .collect();
            panic!("files changed: {changed:?}");
        }
        assert_eq!(
            self.fixed_code_runs(),
            fixed_before,
            "the program's results changed"
        );
    }

    /// Whether the calls the program makes now return the fixed result (else the baseline's);
    /// asserts that the program is alive and no call returned a wrong result.
    pub fn fixed_code_runs(&self) -> bool {
        // A line printed after this call: the counters before it may straddle a change.
        let _ = self.program.latest();
        let c = self.program.next();
        let n = self
            .program
            .wait_for("the program keeps running", |n| n.calls > c.calls + 10_000);
        assert_eq!(n.wrong, 0, "{n:?}");
        let (new, old) = (n.new > c.new, n.old > c.old);
        assert!(
            new != old,
            "both or neither result kind grew: {c:?} then {n:?}"
        );
        new
    }
}
