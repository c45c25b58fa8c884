//! `cargo xtask test-windows`: the Windows backend of `hotpatch-apply`, tested live under Wine.
//!
//! Installs what it needs (Debian `wine`, `wine64`, `mingw-w64` through
//! `ci/install-packages --windows`; the Rust target `x86_64-pc-windows-gnu` through rustup),
//! cross-builds `hotpatch-apply.exe` (and its crash-points test build), builds the test-only
//! `ProcessPrng` shim DLL (`ci/wine/bcryptprimitives.c`, GUIDE §2), creates one Wine prefix for
//! the run, and then works as a user would: `hotpatch keygen` and `hotpatch build` make the
//! packages from the committed PE builds (clang + lld, PDBs) of each live fixture, the baseline
//! build runs under Wine, and `hotpatch-apply.exe` works on it while it runs:
//! - `live_service`: apply with four workers calling the patched function, status, rollback, a
//!   tampered package and a package for another build refused with the process unchanged;
//! - `live_exceptions` (C++): exceptions thrown through the patched function are caught by its
//!   callers after the apply (the payload's unwind data registered in the process);
//! - `live_busy`: a function a thread never leaves is refused as busy within the retry budget,
//!   the process unchanged;
//! - `live_dll`: the target is a DLL the program links against;
//! - faults: the applier killed at each step around the stop window, then run again.
//!
//! Every expectation comes from the fixtures' sources (the results their programs print before
//! and after the fix), never from the tool's output.
//!
//! When Wine or the Rust target cannot be installed, it prints one line
//! `SKIPPED windows tier: <reason>` and succeeds, so the rest of CI runs; any failed check
//! after that is an error.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::shell;

const TARGET: &str = "x86_64-pc-windows-gnu";

pub fn run(args: &[String]) -> Result<()> {
    if let Some(arg) = args.first() {
        bail!("`test-windows` takes no arguments, got `{arg}`");
    }
    let root = shell::workspace_root();
    if let Err(reason) = add_rust_target() {
        println!("SKIPPED windows tier: {reason}");
        return Ok(());
    }
    // Wherever the target exists, the Windows backend is type-checked and linted.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let lint = [
        "clippy",
        "-p",
        "hotpatch-apply",
        "--lib",
        "--bins",
        "--target",
        TARGET,
        "--",
        "-D",
        "warnings",
    ];
    eprintln!("$ cargo {}", lint.join(" "));
    shell::run(Command::new(&cargo).args(lint).current_dir(&root))?;
    if let Err(reason) = install_wine(&root) {
        println!("SKIPPED windows tier: {reason}");
        return Ok(());
    }
    let tier = Tier::prepare(&root)?;
    let result = tier.checks();
    tier.stop_wine();
    result?;
    println!("windows tier: every check passed");
    Ok(())
}

/// Adds the Rust target; the reason when that is not possible here.
fn add_rust_target() -> std::result::Result<(), String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| format!("rustup is not available to add {TARGET}: {e}"))?;
    if !String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == TARGET)
    {
        let status = Command::new("rustup")
            .args(["target", "add", TARGET])
            .status()
            .map_err(|e| format!("cannot run rustup target add {TARGET}: {e}"))?;
        if !status.success() {
            return Err(format!("rustup target add {TARGET} failed with {status}"));
        }
    }
    Ok(())
}

/// Installs Wine and mingw-w64 (the linker of the target and the shim's compiler); the reason
/// when that is not possible here.
fn install_wine(root: &Path) -> std::result::Result<(), String> {
    let status = Command::new(root.join("ci/install-packages"))
        .arg("--windows")
        .status()
        .map_err(|e| format!("cannot run ci/install-packages --windows: {e}"))?;
    if !status.success() {
        return Err(format!(
            "ci/install-packages --windows (wine, wine64, mingw-w64) failed with {status}"
        ));
    }
    let wine = Command::new("wine")
        .arg("--version")
        .output()
        .map_err(|e| format!("wine does not run: {e}"))?;
    if !wine.status.success() {
        return Err(format!("wine --version failed with {}", wine.status));
    }
    Ok(())
}

/// The built tools and the Wine prefix of one run.
struct Tier {
    root: PathBuf,
    /// Holds `hotpatch-apply.exe`, the shim DLL, the packages and the programs that run.
    work: PathBuf,
    prefix: PathBuf,
    hotpatch: PathBuf,
}

impl Tier {
    fn prepare(root: &Path) -> Result<Tier> {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let target_dir = shell::target_dir();
        // The test build with crash points first (for the faults check), copied aside, then the
        // build users get; cargo keeps both feature sets, so neither is rebuilt the next time.
        eprintln!("$ cargo build -p hotpatch-apply --features crash-points --target {TARGET}");
        shell::run(
            Command::new(&cargo)
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "hotpatch-apply",
                    "--features",
                    "crash-points",
                    "--target",
                    TARGET,
                ])
                .current_dir(root),
        )?;
        let built = target_dir.join(TARGET).join("debug/hotpatch-apply.exe");
        let crash_build = target_dir
            .join(TARGET)
            .join("hotpatch-apply-crash-points.exe");
        fs_err::copy(&built, &crash_build)?;
        eprintln!("$ cargo build -p hotpatch-apply --target {TARGET}");
        shell::run(
            Command::new(&cargo)
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "hotpatch-apply",
                    "--target",
                    TARGET,
                ])
                .current_dir(root),
        )?;
        shell::run(
            Command::new(&cargo)
                .args(["build", "--quiet", "-p", "hotpatch", "--bin", "hotpatch"])
                .current_dir(root),
        )?;
        let work = target_dir.join("windows-tier");
        if work.exists() {
            fs_err::remove_dir_all(&work)?;
        }
        fs_err::create_dir_all(&work)?;
        fs_err::copy(&built, work.join("hotpatch-apply.exe"))?;
        fs_err::copy(&crash_build, work.join("hotpatch-apply-crash-points.exe"))?;
        shell::run(Command::new("x86_64-w64-mingw32-gcc").args([
            "-O2".as_ref(),
            "-shared".as_ref(),
            root.join("ci/wine/bcryptprimitives.c").as_os_str(),
            "-o".as_ref(),
            work.join("bcryptprimitives.dll").as_os_str(),
            "-ladvapi32".as_ref(),
        ]))?;
        let tier = Tier {
            root: root.to_owned(),
            prefix: work.join("prefix"),
            hotpatch: target_dir.join("debug/hotpatch"),
            work,
        };
        // One prefix for the whole run: creating one takes seconds.
        let started = Instant::now();
        shell::run(tier.wine_command("wineboot").arg("-i"))?;
        eprintln!(
            "windows tier: Wine prefix created in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(tier)
    }

    /// Every check, each with its own program, packages and state directory, one key pair.
    fn checks(&self) -> Result<()> {
        self.hotpatch(&["keygen", "--out", "keys"])?;
        self.live_service()?;
        self.live_exceptions()?;
        self.live_busy()?;
        self.live_dll()?;
        self.faults()
    }

    /// A command that runs in this run's Wine prefix, in the work directory.
    fn wine_command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command
            .env("WINEPREFIX", &self.prefix)
            .env("WINEDEBUG", "-all")
            .env("WINEARCH", "win64")
            .current_dir(&self.work);
        command
    }

    /// Ends every process of this run's prefix (the programs under test).
    fn stop_wine(&self) {
        let _ = self.wine_command("wineserver").arg("-k").status();
    }

    /// Runs `hotpatch-apply.exe` under Wine with paths relative to the work directory.
    fn applier(&self, args: &[&str]) -> Result<Output> {
        self.applier_crashing_at(None, args)
    }

    /// Runs the applier; with a crash point, its test build, which ends itself there
    /// (`HOTPATCH_APPLY_CRASH_AT`, crates/apply/src/crash.rs).
    fn applier_crashing_at(&self, point: Option<&str>, args: &[&str]) -> Result<Output> {
        let mut command = self.wine_command("wine");
        match point {
            Some(point) => {
                command
                    .arg("hotpatch-apply-crash-points.exe")
                    .env("HOTPATCH_APPLY_CRASH_AT", point);
            }
            None => {
                command.arg("hotpatch-apply.exe");
            }
        }
        command.args(args);
        let line = shell::describe(&command);
        let output = command
            .output()
            .with_context(|| format!("failed to start `{line}`"))?;
        eprintln!(
            "$ wine hotpatch-apply.exe {}\n{}{}exit {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            output.status.code().unwrap_or(-1)
        );
        Ok(output)
    }

    /// Runs the `hotpatch` CLI (the build side) in the work directory.
    fn hotpatch(&self, args: &[&str]) -> Result<()> {
        shell::run(
            Command::new(&self.hotpatch)
                .args(args)
                .current_dir(&self.work),
        )
    }

    /// Makes the release tree `<case>/<tree>` from files of `fixtures/<case>/pe`: each pair is
    /// (file in the fixture, name in the tree).
    fn release_tree(&self, case: &str, tree: &str, files: &[(&str, &str)]) -> Result<()> {
        let dir = self.work.join(case).join(tree);
        fs_err::create_dir_all(&dir)?;
        let pe = self.root.join("fixtures").join(case).join("pe");
        for (from, to) in files {
            fs_err::copy(pe.join(from), dir.join(to))?;
        }
        Ok(())
    }

    /// `hotpatch build` of the baseline package (sequence 1, from `<case>/base`) and the
    /// hotpatch (sequence 2, `<case>/base` against `<case>/fixed`), as a user would; returns
    /// their paths relative to the work directory.
    fn build_packages(&self, case: &str) -> Result<(String, String)> {
        let base = format!("{case}/base");
        let fixed = format!("{case}/fixed");
        let baseline = format!("{case}/{case}.baseline");
        let hotpatch = format!("{case}/{case}.hotpatch");
        self.hotpatch(&[
            "build",
            "--kind",
            "baseline",
            "--release",
            "2026-10",
            "--sequence",
            "1",
            "--baseline",
            &base,
            "--fixed",
            &base,
            "--key",
            "keys/hotpatch.key",
            "--out",
            &baseline,
            "--product",
            case,
        ])?;
        self.hotpatch(&[
            "build",
            "--release",
            "2026-11",
            "--sequence",
            "2",
            "--baseline-package",
            &baseline,
            "--baseline",
            &base,
            "--fixed",
            &fixed,
            "--key",
            "keys/hotpatch.key",
            "--out",
            &hotpatch,
            "--product",
            case,
        ])?;
        Ok((baseline, hotpatch))
    }

    /// Applies `package` with `--json` and `extra` arguments; the exit status, the parsed
    /// report and the time the applier took.
    fn apply_json(
        &self,
        package: &str,
        case: &str,
        extra: &[&str],
    ) -> Result<(Output, serde_json::Value, Duration)> {
        let state = format!("state-{case}");
        let args = [
            &["apply", package, "--json", "--trust", "keys/hotpatch.pub"][..],
            &["--state-dir", &state],
            extra,
        ]
        .concat();
        let started = Instant::now();
        let output = self.applier(&args)?;
        let took = started.elapsed();
        let report: serde_json::Value = serde_json::from_slice(&output.stdout)
            .context("hotpatch-apply --json printed no JSON")?;
        Ok((output, report, took))
    }

    /// The pid of the one result in an apply report that names `target` and is `outcome`.
    fn applied_pid(report: &serde_json::Value, target: &str) -> Result<String> {
        let results = report["results"]
            .as_array()
            .context("the report has no results")?;
        let result = results
            .iter()
            .find(|r| r["outcome"] == "applied" && r["target"] == target)
            .with_context(|| format!("no result applied {target}: {report}"))?;
        check(
            result["sequence"] == 2,
            &format!("the running process is reported patched to sequence 2 in {target}"),
        )?;
        eprintln!(
            "windows tier: {target}: stop window {} us, {} threads, {} attempt(s)",
            result["stop_window_us"], result["threads"], result["attempts"]
        );
        Ok(result["pid"]
            .as_i64()
            .context("the result names no pid")?
            .to_string())
    }

    /// Rolls the hotpatch of `case` back in `pid`.
    fn rollback(&self, case: &str, pid: &str) -> Result<()> {
        let state = format!("state-{case}");
        let output = self.applier(
            &[
                &["rollback", "--pid", pid, "--state-dir", &state][..],
                &PATIENT,
            ]
            .concat(),
        )?;
        check(
            output.status.success(),
            &format!("the rollback of {case} succeeds"),
        )
    }

    /// The sequence `status --pid` reads from the process for `target` (`None`: no payload).
    fn status_sequence(&self, case: &str, pid: &str, target: &str) -> Result<Option<u64>> {
        let state = format!("state-{case}");
        let output = self.applier(&["status", "--pid", pid, "--json", "--state-dir", &state])?;
        let status: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        let entries = status.as_array().context("status --json printed no list")?;
        Ok(entries
            .iter()
            .filter(|e| e["target"] == target)
            .find_map(|e| e["sequence"].as_u64()))
    }

    /// A program whose workers call `accept_length` (`fixtures/live_service`, or the library
    /// of `fixtures/live_dll` in its host), patched live: the same process switches to the
    /// fixed results with over 100,000 calls across the apply and no wrong result, status reads
    /// sequence 2 from the process, and the rollback brings the old results back. Returns the
    /// running program and its pid. From the source: `accept_length(64)` returns 1 before the
    /// fix and 0 after it; the workers count results that are neither as `wrong`.
    fn accept_length_live(
        &self,
        case: &str,
        exe: &str,
        target: &str,
        keys: &'static [&'static str],
    ) -> Result<(Program, String)> {
        let (baseline, hotpatch) = self.build_packages(case)?;
        let program = Program::start(self, exe, &["300"], keys, &[])?;
        let before = program.wait_for("the baseline's old results", |c| c.n("old") > 1000)?;
        check(
            before.n("new") == 0 && before.n("accept_length(64)") == 1,
            "the baseline accepts 64",
        )?;
        let (output, _, _) = self.apply_json(&baseline, case, &["--all"])?;
        check(output.status.success(), "the baseline package installs")?;
        let at_apply = program.latest();
        let (output, report, _) =
            self.apply_json(&hotpatch, case, &[&["--all"][..], &PATIENT].concat())?;
        check(output.status.success(), "the hotpatch applies")?;
        let pid = Self::applied_pid(&report, target)?;
        let after = program.wait_for("the fixed results in the same process", |c| {
            c.n("new") > at_apply.n("new") + 1000 && c.n("accept_length(64)") == 0
        })?;
        check(
            after.n("calls") >= at_apply.n("calls") + 100_000,
            "at least 100,000 calls were made across the apply",
        )?;
        let settled = program.latest();
        let later = program.wait_for("a million calls after the apply", |c| {
            c.n("calls") > settled.n("calls") + 1_000_000
        })?;
        check(
            later.n("old") == settled.n("old"),
            "the old code no longer runs",
        )?;
        check(later.n("wrong") == 0, "no call saw a wrong result")?;
        eprintln!(
            "windows tier: {case}: calls {} before the apply, {} at the check; old {}, new {}, wrong {}",
            at_apply.n("calls"),
            later.n("calls"),
            later.n("old"),
            later.n("new"),
            later.n("wrong")
        );
        check(
            self.status_sequence(case, &pid, target)? == Some(2),
            "status reads sequence 2 from the process",
        )?;
        self.rollback(case, &pid)?;
        let at_rollback = program.latest();
        let back = program.wait_for("the old results again", |c| {
            c.n("old") > at_rollback.n("old") + 1000 && c.n("accept_length(64)") == 1
        })?;
        check(
            back.n("wrong") == 0,
            "no call saw a wrong result across the rollback",
        )?;
        Ok((program, pid))
    }

    /// `fixtures/live_service` under Wine: apply with every worker calling the function,
    /// status, rollback, then a tampered package and a package for another build refused with
    /// the process unchanged.
    fn live_service(&self) -> Result<()> {
        let case = "live_service";
        for (tree, variant) in [("base", "baseline"), ("fixed", "fixed")] {
            self.release_tree(
                case,
                tree,
                &[
                    (&format!("{variant}.exe"), "live_service.exe"),
                    (&format!("{variant}.pdb"), "live_service.pdb"),
                ],
            )?;
        }
        let (program, pid) = self.accept_length_live(
            case,
            "live_service/base/live_service.exe",
            "live_service.exe",
            SERVICE_KEYS,
        )?;
        let trust = [
            "--trust",
            "keys/hotpatch.pub",
            "--state-dir",
            "state-live_service",
        ];

        // A tampered package: one byte of the signed archive changed.
        let mut bytes = fs_err::read(self.work.join("live_service/live_service.hotpatch"))?;
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        fs_err::write(self.work.join("tampered.hotpatch"), bytes)?;
        let output =
            self.applier(&[&["apply", "tampered.hotpatch", "--pid", &pid][..], &trust].concat())?;
        check(
            output.status.code() == Some(3),
            "a tampered package fails verification (exit 3)",
        )?;
        self.unchanged(&program, &pid, "after the tampered package")?;

        // A package for another build: the same image headers, one byte of the DOS stub
        // changed, so only the SHA-256 of the file tells them apart.
        self.release_tree(
            case,
            "other",
            &[
                ("baseline.exe", "live_service.exe"),
                ("baseline.pdb", "live_service.pdb"),
            ],
        )?;
        let other = self.work.join("live_service/other/live_service.exe");
        let mut bytes = fs_err::read(&other)?;
        let stub = bytes
            .windows(12)
            .position(|w| w == b"This program")
            .context("the baseline has no DOS stub text")?;
        bytes[stub] = b't';
        fs_err::write(&other, bytes)?;
        self.hotpatch(&[
            "build",
            "--release",
            "2026-12",
            "--sequence",
            "3",
            "--baseline-package",
            "live_service/live_service.baseline",
            "--baseline",
            "live_service/other",
            "--fixed",
            "live_service/fixed",
            "--key",
            "keys/hotpatch.key",
            "--out",
            "other.hotpatch",
            "--product",
            case,
        ])?;
        let output =
            self.applier(&[&["apply", "other.hotpatch", "--pid", &pid][..], &trust].concat())?;
        check(
            output.status.code() == Some(4)
                && String::from_utf8_lossy(&output.stdout)
                    .contains("maps no file with the identity"),
            "a package for another build is refused (exit 4)",
        )?;
        self.unchanged(&program, &pid, "after the package for another build")?;
        Ok(())
    }

    /// The process carries no payload and keeps returning the old results.
    fn unchanged(&self, program: &Program, pid: &str, when: &str) -> Result<()> {
        check(
            self.status_sequence("live_service", pid, "live_service.exe")?
                .is_none(),
            &format!("the process carries no payload {when}"),
        )?;
        let now = program.latest();
        let later = program.wait_for("a million more calls", |c| {
            c.n("calls") > now.n("calls") + 1_000_000
        })?;
        check(
            later.n("new") == now.n("new")
                && later.n("old") > now.n("old")
                && later.n("accept_length(64)") == 1,
            &format!("the process returns the old results {when}"),
        )
    }

    /// `fixtures/live_dll` under Wine: the fixed function is exported by `live_dll.dll`, which
    /// `host.exe` links against; the package's target is the DLL, found among the process's
    /// modules by identity, patched and rolled back in the running host.
    fn live_dll(&self) -> Result<()> {
        let case = "live_dll";
        for (tree, variant) in [("base", "baseline"), ("fixed", "fixed")] {
            self.release_tree(
                case,
                tree,
                &[
                    ("host.exe", "host.exe"),
                    ("host.pdb", "host.pdb"),
                    (&format!("{variant}.dll"), "live_dll.dll"),
                    (&format!("{variant}.pdb"), "live_dll.pdb"),
                ],
            )?;
        }
        let (program, _) =
            self.accept_length_live(case, "live_dll/base/host.exe", "live_dll.dll", DLL_KEYS)?;
        drop(program);
        Ok(())
    }

    /// `fixtures/live_exceptions` under Wine (C++, mingw's libstdc++ and libgcc DLLs found
    /// through `WINEPATH`): after the apply, every `std::out_of_range` thrown by
    /// `check_index` unwinds through the payload's `lookup` (which the unwinder can step
    /// through only with the registered `RUNTIME_FUNCTION`) and is caught by the workers. From
    /// the source: `lookup(16)` returns the sentinel 999 before the fix and -1 after it; a
    /// negative index throws and is counted in `caught`; anything else is `wrong`.
    fn live_exceptions(&self) -> Result<()> {
        let case = "live_exceptions";
        for (tree, variant) in [("base", "baseline"), ("fixed", "fixed")] {
            self.release_tree(
                case,
                tree,
                &[
                    (&format!("{variant}.exe"), "live_exceptions.exe"),
                    (&format!("{variant}.pdb"), "live_exceptions.pdb"),
                ],
            )?;
        }
        let (baseline, hotpatch) = self.build_packages(case)?;
        let runtime = crate::fixtures::Toolchain::detect()?.mingw_libgcc_dir;
        let program = Program::start(
            self,
            "live_exceptions/base/live_exceptions.exe",
            &["300"],
            EXCEPTION_KEYS,
            &[("WINEPATH", runtime.as_os_str())],
        )?;
        let before = program.wait_for("the baseline's old results and caught throws", |c| {
            c.n("old") > 1000 && c.n("caught") > 1000
        })?;
        check(
            before.n("lookup(16)") == 999 && before.n("new") == 0 && before.n("wrong") == 0,
            "the baseline returns the sentinel for index 16",
        )?;
        let (output, _, _) = self.apply_json(&baseline, case, &["--all"])?;
        check(output.status.success(), "the baseline package installs")?;
        let (output, report, _) =
            self.apply_json(&hotpatch, case, &[&["--all"][..], &PATIENT].concat())?;
        check(output.status.success(), "the hotpatch applies")?;
        let pid = Self::applied_pid(&report, "live_exceptions.exe")?;
        program.wait_for("the fixed result in the same process", |c| {
            c.n("lookup(16)") == -1 && c.n("new") > 1000
        })?;
        let settled = program.latest();
        let later = program.wait_for("20,000 more exceptions caught after the apply", |c| {
            c.n("caught") > settled.n("caught") + 20_000
        })?;
        check(
            later.n("old") == settled.n("old") && later.n("lookup(16)") == -1,
            "only the fixed lookup runs",
        )?;
        check(
            later.n("wrong") == 0,
            "every exception thrown through the patched lookup was caught by its caller",
        )?;
        eprintln!(
            "windows tier: {case}: caught {} -> {} through the patched lookup; calls {}, wrong {}",
            settled.n("caught"),
            later.n("caught"),
            later.n("calls"),
            later.n("wrong")
        );
        self.rollback(case, &pid)?;
        let at_rollback = program.latest();
        let back = program.wait_for("the old result again", |c| {
            c.n("old") > at_rollback.n("old") + 1000 && c.n("lookup(16)") == 999
        })?;
        check(
            back.n("wrong") == 0 && back.n("caught") > later.n("caught"),
            "exceptions are still caught after the rollback, none wrong",
        )
    }

    /// `fixtures/live_busy` under Wine: a poller thread never leaves `poll_events`, so the
    /// applier with a small retry budget must refuse with the busy kind (exit 4) within that
    /// budget, and the process must be unchanged: no payload, the same first bytes of
    /// `poll_events`, the old result. From the source: `poll_events(100)` returns 64 before the
    /// fix (52 after), and the poller's `polls` keeps growing.
    fn live_busy(&self) -> Result<()> {
        let case = "live_busy";
        for (tree, variant) in [("base", "baseline"), ("fixed", "fixed")] {
            self.release_tree(
                case,
                tree,
                &[
                    (&format!("{variant}.exe"), "live_busy.exe"),
                    (&format!("{variant}.pdb"), "live_busy.pdb"),
                ],
            )?;
        }
        let (baseline, hotpatch) = self.build_packages(case)?;
        let program = Program::start(
            self,
            "live_busy/base/live_busy.exe",
            &["300"],
            BUSY_KEYS,
            &[],
        )?;
        let before = program.wait_for("the poller polling", |c| c.n("polls") > 1000)?;
        check(
            before.n("poll_events(100)") == 64,
            "the baseline handles 64 of 100 events",
        )?;
        let (output, _, _) = self.apply_json(&baseline, case, &["--all"])?;
        check(output.status.success(), "the baseline package installs")?;
        // The budget: a few windows, each up to a second under Wine.
        let budget = Duration::from_millis(BUSY_RETRY_TIMEOUT_MS);
        let timeout = BUSY_RETRY_TIMEOUT_MS.to_string();
        let (output, report, took) = self.apply_json(
            &hotpatch,
            case,
            &["--all", "--retries", "5", "--retry-timeout-ms", &timeout],
        )?;
        let refusal = report["results"]
            .as_array()
            .and_then(|results| results.iter().find(|r| r["target"] == "live_busy.exe"))
            .context("the report has no result for live_busy.exe")?;
        check(
            output.status.code() == Some(4)
                && refusal["outcome"] == "refused"
                && refusal["kind"] == "busy",
            "the always-busy poll_events is refused as busy (exit 4)",
        )?;
        // The applier's own start under Wine (a few hundred ms) and one last stop window come
        // on top of the retry budget.
        check(
            took < budget + BUSY_SLACK,
            &format!(
                "the refusal came within the budget ({} ms of {} ms + {} ms)",
                took.as_millis(),
                budget.as_millis(),
                BUSY_SLACK.as_millis()
            ),
        )?;
        let pid = refusal["pid"]
            .as_i64()
            .context("the refusal names no pid")?
            .to_string();
        check(
            self.status_sequence(case, &pid, "live_busy.exe")?.is_none(),
            "the process carries no payload after the refusal",
        )?;
        let now = program.latest();
        let later = program.wait_for("more polls", |c| c.n("polls") > now.n("polls") + 1000)?;
        check(
            later.n("poll_events(100)") == 64
                && later.n("entry") == before.n("entry")
                && now.n("entry") == before.n("entry"),
            "poll_events keeps its first bytes and the old result",
        )
    }

    /// The applier (its crash-points build) killed at each step of an apply and of a rollback
    /// around the stop window, on `fixtures/live_service` under Wine: where threads were
    /// suspended (`checked`, `first-write`, `written`), the dead applier leaves the process
    /// frozen (no status line for two seconds; a suspend count outlives the process that
    /// added it); running the same command again resumes the threads its suspension record
    /// lists (crates/apply/src/windows/suspension.rs), finishes the job, and the process runs
    /// the fixed (after apply) or the old (after rollback) code, with no wrong result.
    fn faults(&self) -> Result<()> {
        let state = "state-faults";
        let trust = ["--trust", "keys/hotpatch.pub", "--state-dir", state];
        let apply = |point: Option<&str>| -> Result<Output> {
            self.applier_crashing_at(
                point,
                &[
                    &["apply", "live_service/live_service.hotpatch", "--all"][..],
                    &trust,
                    &PATIENT,
                ]
                .concat(),
            )
        };
        let program = Program::start(
            self,
            "live_service/base/live_service.exe",
            &["600"],
            SERVICE_KEYS,
            &[],
        )?;
        program.wait_for("the baseline's old results", |c| c.n("old") > 1000)?;
        let output = self.applier(
            &[
                &["apply", "live_service/live_service.baseline", "--all"][..],
                &trust,
            ]
            .concat(),
        )?;
        check(output.status.success(), "the baseline package installs")?;
        let patched = |what: &str| -> Result<()> {
            let at = program.latest();
            let now = program.wait_for(what, |c| {
                c.n("new") > at.n("new") + 1000 && c.n("accept_length(64)") == 0
            })?;
            check(now.n("wrong") == 0, what)
        };
        let baseline = |what: &str| -> Result<()> {
            let at = program.latest();
            let now = program.wait_for(what, |c| {
                c.n("old") > at.n("old") + 1000 && c.n("accept_length(64)") == 1
            })?;
            check(now.n("wrong") == 0, what)
        };
        let mut pid = String::new();
        for step in APPLY_FAULT_STEPS {
            let point = format!("apply.{step}");
            let output = apply(Some(&point))?;
            check(
                output.status.code() == Some(KILLED),
                &format!("the applier died at {point}"),
            )?;
            if IN_STOP_WINDOW.contains(&step) {
                self.frozen(&program, &point)?;
            }
            let output = apply(None)?;
            check(
                output.status.success(),
                &format!("apply again after a kill at {point} succeeds"),
            )?;
            patched(&format!(
                "the fixed results after a kill at {point} and apply again"
            ))?;
            let output = self.applier(&["status", "--json", "--state-dir", state])?;
            let status: serde_json::Value = serde_json::from_slice(&output.stdout)?;
            pid = status[0]["pid"]
                .as_i64()
                .context("status names no pid")?
                .to_string();
            check(
                status[0]["sequence"] == 2 && status[0]["sites"] == 1,
                &format!("status reads sequence 2 after a kill at {point} and apply again"),
            )?;
            let output = self.applier(
                &[
                    &["rollback", "--pid", &pid, "--state-dir", state][..],
                    &PATIENT,
                ]
                .concat(),
            )?;
            check(
                output.status.success(),
                "the rollback between steps succeeds",
            )?;
            baseline("the old results again")?;
        }
        for step in ROLLBACK_FAULT_STEPS {
            let point = format!("rollback.{step}");
            let output = apply(None)?;
            check(output.status.success(), "the apply between steps succeeds")?;
            patched("the fixed results before the rollback")?;
            let rollback = |crash: Option<&str>| {
                self.applier_crashing_at(
                    crash,
                    &[
                        &["rollback", "--pid", &pid, "--state-dir", state][..],
                        &PATIENT,
                    ]
                    .concat(),
                )
            };
            let output = rollback(Some(&point))?;
            check(
                output.status.code() == Some(KILLED),
                &format!("the applier died at {point}"),
            )?;
            if IN_STOP_WINDOW.contains(&step) {
                self.frozen(&program, &point)?;
            }
            let output = rollback(None)?;
            check(
                output.status.success(),
                &format!("rollback again after a kill at {point} succeeds"),
            )?;
            baseline(&format!(
                "the old results after a kill at {point} and rollback again"
            ))?;
        }
        Ok(())
    }

    /// No status line for two seconds: every thread of the program is suspended.
    fn frozen(&self, program: &Program, point: &str) -> Result<()> {
        let before = program.count();
        std::thread::sleep(Duration::from_secs(2));
        check(
            program.count() == before,
            &format!("the process is frozen, not running half patched, after a kill at {point}"),
        )
    }
}

/// Crash points of an apply and of a rollback (`<command>.<step>`) the faults check kills the
/// applier at: the last before the stop window, those inside it, and the first after it.
const APPLY_FAULT_STEPS: [&str; 5] = ["staged", "checked", "first-write", "written", "released"];
const ROLLBACK_FAULT_STEPS: [&str; 5] =
    ["planned", "checked", "first-write", "written", "released"];
/// The steps at which the applier holds the threads suspended.
const IN_STOP_WINDOW: [&str; 3] = ["checked", "first-write", "written"];
/// The exit code of the applier's test build at a crash point (`TerminateProcess(_, 9)`).
const KILLED: i32 = 9;

/// The retry budget the always-busy check gives the applier.
const BUSY_RETRY_TIMEOUT_MS: u64 = 3000;

/// What may come on top of the retry budget: the applier's start under Wine and its last
/// stop window.
const BUSY_SLACK: Duration = Duration::from_secs(10);

/// A stop window under Wine takes 0.1 to 0.9 s (every suspension, context read and remote
/// memory read is a round trip through wineserver), while the workers spend much of their time
/// inside the patched function: allow more windows than the default 2 s.
const PATIENT: [&str; 4] = ["--retries", "200", "--retry-timeout-ms", "60000"];

/// The fields of a status line of each fixture program.
const SERVICE_KEYS: &[&str] = &["accept_length(64)", "calls", "old", "new", "wrong"];
const DLL_KEYS: &[&str] = &[
    "accept_length(64)",
    "calls",
    "old",
    "new",
    "wrong",
    "rejected",
];
const EXCEPTION_KEYS: &[&str] = &["lookup(16)", "calls", "caught", "old", "new", "wrong"];
const BUSY_KEYS: &[&str] = &["poll_events(100)", "polls", "entry"];

fn check(ok: bool, what: &str) -> Result<()> {
    if !ok {
        bail!("windows tier: FAILED: {what}");
    }
    eprintln!("windows tier: ok: {what}");
    Ok(())
}

/// One status line of a fixture program: `name=value` fields with integer values.
#[derive(Debug, Clone, Default)]
struct Counters {
    fields: BTreeMap<String, i64>,
}

impl Counters {
    /// The value of a field the line was parsed with (so present).
    fn n(&self, key: &str) -> i64 {
        self.fields.get(key).copied().unwrap_or(0)
    }
}

/// A line with exactly the fields `keys`, in that order, each an integer:
/// `accept_length(64)=1 calls=123 old=4 new=0 wrong=0`.
fn parse(line: &str, keys: &[&str]) -> Option<Counters> {
    let mut counters = Counters::default();
    let mut fields = line.split_whitespace();
    for key in keys {
        let (name, value) = fields.next()?.split_once('=')?;
        if name != *key {
            return None;
        }
        // `entry` holds 8 code bytes as an unsigned 64-bit number; keep its bits.
        let value = match value.parse::<i64>() {
            Ok(value) => value,
            Err(_) => value.parse::<u64>().ok()? as i64,
        };
        counters.fields.insert(name.to_owned(), value);
    }
    fields.next().is_none().then_some(counters)
}

/// A fixture program running under Wine, its status lines collected as they come.
struct Program {
    child: Child,
    lines: Arc<Mutex<Vec<Counters>>>,
}

impl Program {
    fn start(
        tier: &Tier,
        exe: &str,
        args: &[&str],
        keys: &'static [&'static str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Result<Program> {
        let mut command = tier.wine_command("wine");
        command.arg(exe).args(args).stdout(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start wine {exe}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(counters) = parse(&line, keys)
                    && let Ok(mut lines) = sink.lock()
                {
                    lines.push(counters);
                }
            }
        });
        Ok(Program { child, lines })
    }

    /// How many status lines arrived so far.
    fn count(&self) -> usize {
        self.lines.lock().map(|l| l.len()).unwrap_or(0)
    }

    fn latest(&self) -> Counters {
        self.lines
            .lock()
            .ok()
            .and_then(|lines| lines.last().cloned())
            .unwrap_or_default()
    }

    /// Waits (at most a minute) for a status line printed from now on that satisfies `done`.
    fn wait_for(&self, what: &str, done: impl Fn(&Counters) -> bool) -> Result<Counters> {
        let from = self.lines.lock().map(|l| l.len()).unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(lines) = self.lines.lock()
                && let Some(found) = lines.iter().skip(from).find(|c| done(c))
            {
                return Ok(found.clone());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "windows tier: FAILED: waited a minute for {what}; last line {:?}",
            self.latest()
        )
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_of_the_fixture_programs_parse_and_others_do_not() {
        let counters = parse(
            "accept_length(64)=0 calls=563517138 old=3263552 new=1138925 wrong=0",
            SERVICE_KEYS,
        )
        .unwrap();
        assert_eq!(counters.n("accept_length(64)"), 0);
        assert_eq!(counters.n("calls"), 563_517_138);
        assert_eq!(
            (counters.n("old"), counters.n("new"), counters.n("wrong")),
            (3_263_552, 1_138_925, 0)
        );
        let counters = parse(
            "lookup(16)=-1 calls=125664976 caught=20944169 old=4872810 new=363230 wrong=0",
            EXCEPTION_KEYS,
        )
        .unwrap();
        assert_eq!(
            (counters.n("lookup(16)"), counters.n("caught")),
            (-1, 20_944_169)
        );
        let counters = parse(
            "poll_events(100)=64 polls=12 entry=18446744073709551615",
            BUSY_KEYS,
        )
        .unwrap();
        assert_eq!(counters.n("entry"), -1);
        assert!(parse("ready", SERVICE_KEYS).is_none());
        assert!(parse("accept_length(64)=x calls=1", SERVICE_KEYS).is_none());
        assert!(
            parse(
                "accept_length(64)=1 calls=1 old=0 new=0 wrong=0 extra=1",
                SERVICE_KEYS
            )
            .is_none()
        );
        assert!(parse("accept_length(64)=1 calls=1 old=0 new=0", SERVICE_KEYS).is_none());
    }
}
