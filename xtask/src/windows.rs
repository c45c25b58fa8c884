//! `cargo xtask test-windows`: the Windows backend of `hotpatch-apply`, tested live under Wine.
//!
//! Installs what it needs (Debian `wine`, `wine64`, `mingw-w64` through
//! `ci/install-packages --windows`; the Rust target `x86_64-pc-windows-gnu` through rustup),
//! cross-builds `hotpatch-apply.exe`, builds the test-only `ProcessPrng` shim DLL
//! (`ci/wine/bcryptprimitives.c`, GUIDE §2), creates one Wine prefix for the run, and then works
//! as a user would: `hotpatch keygen` and `hotpatch build` make the baseline and hotpatch
//! packages from the committed `fixtures/live_service/pe` builds (clang + lld, PDBs), the
//! baseline build runs under Wine with four worker threads calling the patched function, and
//! `hotpatch-apply.exe` applies, reports status, rolls back, and refuses a tampered package and
//! a package for another build while the process keeps running. Every expectation comes from
//! the fixture's source (`accept_length(64)` returns 1 before the fix and 0 after it; the
//! workers count results that are neither).
//!
//! When Wine or the Rust target cannot be installed, it prints one line
//! `SKIPPED windows tier: <reason>` and succeeds, so the rest of CI runs; any failed check
//! after that is an error.

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
    let result = tier.live_service();
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
        fs_err::copy(
            target_dir.join(TARGET).join("debug/hotpatch-apply.exe"),
            work.join("hotpatch-apply.exe"),
        )?;
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
        let mut command = self.wine_command("wine");
        command.arg("hotpatch-apply.exe").args(args);
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

    /// Copies a fixture build into a release tree as `<name>.exe` with its PDB.
    fn release_tree(&self, tree: &str, case: &str, variant: &str, name: &str) -> Result<()> {
        let dir = self.work.join(tree);
        fs_err::create_dir_all(&dir)?;
        let pe = self.root.join("fixtures").join(case).join("pe");
        fs_err::copy(
            pe.join(format!("{variant}.exe")),
            dir.join(format!("{name}.exe")),
        )?;
        fs_err::copy(
            pe.join(format!("{variant}.pdb")),
            dir.join(format!("{name}.pdb")),
        )?;
        Ok(())
    }

    /// `fixtures/live_service` under Wine: apply with every worker calling the function,
    /// status, rollback, then a tampered package and a package for another build refused with
    /// the process unchanged.
    fn live_service(&self) -> Result<()> {
        self.release_tree("base", "live_service", "baseline", "live_service")?;
        self.release_tree("fixed", "live_service", "fixed", "live_service")?;
        self.hotpatch(&["keygen", "--out", "keys"])?;
        self.hotpatch(&[
            "build",
            "--kind",
            "baseline",
            "--release",
            "2026-10",
            "--sequence",
            "1",
            "--baseline",
            "base",
            "--fixed",
            "base",
            "--key",
            "keys/hotpatch.key",
            "--out",
            "svc.baseline",
            "--product",
            "demo",
        ])?;
        self.hotpatch(&[
            "build",
            "--release",
            "2026-11",
            "--sequence",
            "2",
            "--baseline-package",
            "svc.baseline",
            "--baseline",
            "base",
            "--fixed",
            "fixed",
            "--key",
            "keys/hotpatch.key",
            "--out",
            "svc.hotpatch",
            "--product",
            "demo",
        ])?;
        let trust = ["--trust", "keys/hotpatch.pub", "--state-dir", "state"];
        // A stop window under Wine takes 0.1 to 0.3 s (every suspension, context read and
        // remote memory read is a round trip through wineserver), while four workers spend
        // much of their time inside accept_length: allow more windows than the default 2 s.
        let patient = ["--retries", "200", "--retry-timeout-ms", "60000"];

        let program = Program::start(self, "base/live_service.exe", &["300"])?;
        let before = program.wait_for("the baseline's old results", |c| c.old > 1000)?;
        check(
            before.new == 0 && before.accept_64 == 1,
            "the baseline accepts 64",
        )?;

        let output = self.applier(&[&["apply", "svc.baseline", "--all"][..], &trust].concat())?;
        check(output.status.success(), "the baseline package installs")?;
        let at_apply = program.latest();
        let output =
            self.applier(&[&["apply", "svc.hotpatch", "--all", "--json"][..], &trust].concat())?;
        check(output.status.success(), "the hotpatch applies")?;
        let report: serde_json::Value = serde_json::from_slice(&output.stdout)
            .context("hotpatch-apply --json printed no JSON")?;
        let result = &report["results"][0];
        check(
            result["outcome"] == "applied" && result["sequence"] == 2,
            "the running process is reported patched to sequence 2",
        )?;
        let pid = result["pid"]
            .as_i64()
            .context("the result names no pid")?
            .to_string();
        eprintln!(
            "windows tier: stop window {} us, {} threads, {} attempt(s)",
            result["stop_window_us"], result["threads"], result["attempts"]
        );
        let after = program.wait_for("the fixed results in the same process", |c| {
            c.new > at_apply.new + 1000 && c.accept_64 == 0
        })?;
        check(
            after.calls >= at_apply.calls + 100_000,
            "at least 100,000 calls were made across the apply",
        )?;
        let settled = program.latest();
        let later = program.wait_for("a million calls after the apply", |c| {
            c.calls > settled.calls + 1_000_000
        })?;
        check(later.old == settled.old, "the old code no longer runs")?;
        check(later.wrong == 0, "no call saw a wrong result")?;
        eprintln!(
            "windows tier: calls {} before the apply, {} at the check; old {}, new {}, wrong {}",
            at_apply.calls, later.calls, later.old, later.new, later.wrong
        );

        let output = self.applier(&["status", "--pid", &pid, "--json", "--state-dir", "state"])?;
        let status: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        check(
            output.status.success() && status[0]["sequence"] == 2 && status[0]["sites"] == 1,
            "status reads sequence 2 with its site from the process",
        )?;

        let output = self.applier(
            &[
                &["rollback", "--pid", &pid, "--state-dir", "state"][..],
                &patient,
            ]
            .concat(),
        )?;
        check(output.status.success(), "the rollback succeeds")?;
        let at_rollback = program.latest();
        let back = program.wait_for("the old results again", |c| {
            c.old > at_rollback.old + 1000 && c.accept_64 == 1
        })?;
        check(
            back.wrong == 0,
            "no call saw a wrong result across the rollback",
        )?;

        // A tampered package: one byte of the signed archive changed.
        let mut bytes = fs_err::read(self.work.join("svc.hotpatch"))?;
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
        self.release_tree("other", "live_service", "baseline", "live_service")?;
        let other = self.work.join("other/live_service.exe");
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
            "svc.baseline",
            "--baseline",
            "other",
            "--fixed",
            "fixed",
            "--key",
            "keys/hotpatch.key",
            "--out",
            "other.hotpatch",
            "--product",
            "demo",
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
        let output = self.applier(&["status", "--pid", pid, "--json", "--state-dir", "state"])?;
        let status: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        let carries = status
            .as_array()
            .is_some_and(|entries| entries.iter().any(|e| !e["sequence"].is_null()));
        check(!carries, &format!("the process carries no payload {when}"))?;
        let now = program.latest();
        let later =
            program.wait_for("a million more calls", |c| c.calls > now.calls + 1_000_000)?;
        check(
            later.new == now.new && later.old > now.old && later.accept_64 == 1,
            &format!("the process returns the old results {when}"),
        )
    }
}

fn check(ok: bool, what: &str) -> Result<()> {
    if !ok {
        bail!("windows tier: FAILED: {what}");
    }
    eprintln!("windows tier: ok: {what}");
    Ok(())
}

/// One status line of `live_service`.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    accept_64: i64,
    calls: u64,
    old: u64,
    new: u64,
    wrong: u64,
}

/// `accept_length(64)=1 calls=123 old=4 new=0 wrong=0`.
fn parse(line: &str) -> Option<Counters> {
    let mut counters = Counters::default();
    for field in line.split_whitespace() {
        let (key, value) = field.split_once('=')?;
        match key {
            "accept_length(64)" => counters.accept_64 = value.parse().ok()?,
            "calls" => counters.calls = value.parse().ok()?,
            "old" => counters.old = value.parse().ok()?,
            "new" => counters.new = value.parse().ok()?,
            "wrong" => counters.wrong = value.parse().ok()?,
            _ => return None,
        }
    }
    Some(counters)
}

/// A fixture program running under Wine, its status lines collected as they come.
struct Program {
    child: Child,
    lines: Arc<Mutex<Vec<Counters>>>,
}

impl Program {
    fn start(tier: &Tier, exe: &str, args: &[&str]) -> Result<Program> {
        let mut child = tier
            .wine_command("wine")
            .arg(exe)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start wine {exe}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(counters) = parse(&line)
                    && let Ok(mut lines) = sink.lock()
                {
                    lines.push(counters);
                }
            }
        });
        Ok(Program { child, lines })
    }

    fn latest(&self) -> Counters {
        self.lines
            .lock()
            .ok()
            .and_then(|lines| lines.last().copied())
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
                return Ok(*found);
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
    fn status_lines_of_live_service_parse_and_others_do_not() {
        let counters =
            parse("accept_length(64)=0 calls=563517138 old=3263552 new=1138925 wrong=0").unwrap();
        assert_eq!(counters.accept_64, 0);
        assert_eq!(counters.calls, 563_517_138);
        assert_eq!(
            (counters.old, counters.new, counters.wrong),
            (3_263_552, 1_138_925, 0)
        );
        assert!(parse("ready").is_none());
        assert!(parse("accept_length(64)=x calls=1").is_none());
    }
}
