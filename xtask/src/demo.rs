//! `cargo xtask demo`: the main job on the bundled fixtures. Builds the `hotpatch` CLI in
//! release mode, inspects both builds of every fixture case in both formats, diffs them and
//! decides whether each fix may be hotpatched; then builds a monthly release from the
//! `live_service` fixture, applies it with `hotpatch-apply` to the running baseline program
//! (whose output shows the old and then the fixed behaviour in the same process) and rolls it
//! back.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::shell;

pub fn run(args: &[String]) -> Result<()> {
    if let Some(arg) = args.first() {
        bail!("`demo` takes no arguments, got `{arg}`");
    }
    let root = shell::workspace_root();
    let hotpatch = shell::build_release_hotpatch()?;
    let mut cases: Vec<_> = fs_err::read_dir(root.join("fixtures"))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.join("expect.toml").is_file())
        .collect();
    cases.sort();
    for case in &cases {
        let case = case.strip_prefix(&root).unwrap_or(case);
        // Prebuilt MSVC cases have a PE DLL and no ELF build.
        let pe_extension = if root.join(case).join("pe/baseline.dll").is_file() {
            "dll"
        } else {
            "exe"
        };
        let pairs = [
            (
                format!("pe/baseline.{pe_extension}"),
                format!("pe/fixed.{pe_extension}"),
            ),
            ("elf/baseline".to_owned(), "elf/fixed".to_owned()),
        ];
        for (base, fixed) in pairs
            .iter()
            .filter(|(base, _)| root.join(case).join(base).is_file())
        {
            for binary in [base, fixed] {
                shell::run(
                    Command::new(&hotpatch)
                        .arg("inspect")
                        .arg(case.join(binary))
                        .current_dir(&root),
                )?;
            }
            shell::run(
                Command::new(&hotpatch)
                    .arg("diff")
                    .arg(case.join(base))
                    .arg(case.join(fixed))
                    .current_dir(&root),
            )?;
            // `check` exits 10 for reboot-required: a verdict, not a failure.
            let mut check = Command::new(&hotpatch);
            check
                .arg("check")
                .arg(case.join(base))
                .arg(case.join(fixed))
                .current_dir(&root);
            let status = check.status()?;
            if !matches!(status.code(), Some(0 | 10)) {
                bail!("`{}` failed with {status}", shell::describe(&check));
            }
        }
    }
    eprintln!(
        "inspected, diffed and checked {} fixture cases in every format they have",
        cases.len()
    );
    live(&root, &hotpatch)
}

/// A month on a running process: baseline package, hotpatch package, apply, rollback.
fn live(root: &Path, hotpatch: &Path) -> Result<()> {
    eprintln!("\n== a monthly hotpatch applied to a running process (fixtures/live_service, ELF)");
    let applier = shell::build_release_binary("hotpatch-apply", "hotpatch-apply")?;
    let dir = shell::target_dir().join("demo-live");
    let _ = fs_err::remove_dir_all(&dir);
    for tree in ["base", "fixed"] {
        fs_err::create_dir_all(dir.join(tree))?;
    }
    let fixture = root.join("fixtures/live_service/elf");
    fs_err::copy(fixture.join("baseline"), dir.join("base/live_service"))?;
    fs_err::copy(fixture.join("fixed"), dir.join("fixed/live_service"))?;
    let hp = |args: &[&str]| -> Result<()> {
        shell::run(Command::new(hotpatch).args(args).current_dir(&dir))
    };
    hp(&["keygen", "--out", "keys"])?;
    let common = [
        "--key",
        "keys/hotpatch.key",
        "--product",
        "demo",
        "--baseline",
        "base",
    ];
    let mut baseline = vec!["build", "--kind", "baseline", "--release", "2026-10"];
    baseline.extend([
        "--sequence",
        "1",
        "--fixed",
        "base",
        "--out",
        "2026-10.baseline",
    ]);
    baseline.extend(common);
    hp(&baseline)?;
    let mut month = vec!["build", "--release", "2026-11", "--sequence", "2"];
    month.extend(["--baseline-package", "2026-10.baseline", "--fixed", "fixed"]);
    month.extend(["--out", "2026-11.hotpatch"]);
    month.extend(common);
    hp(&month)?;

    let mut program = Command::new(dir.join("base/live_service"))
        .arg("30")
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = program.id().to_string();
    let stdout = program.stdout.take().expect("piped");
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("  [live_service] {line}");
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let result = (|| -> Result<()> {
        let before = wait_for(&lines, "accept_length(64)=1", Duration::from_secs(10))?;
        let apply = |args: &[&str]| -> Result<()> {
            let mut all = args.to_vec();
            all.extend(["--pid", &pid, "--state-dir", "state"]);
            shell::run(Command::new(&applier).args(&all).current_dir(&dir))
        };
        apply(&["apply", "2026-10.baseline", "--trust", "keys/hotpatch.pub"])?;
        apply(&["apply", "2026-11.hotpatch", "--trust", "keys/hotpatch.pub"])?;
        let fixed = wait_for(&lines, "accept_length(64)=0", Duration::from_secs(10))?;
        apply(&["status"])?;
        wait_for(&lines, "accept_length(64)=0", Duration::from_secs(5))?;
        apply(&["rollback", "--to", "baseline"])?;
        let back = wait_for(&lines, "accept_length(64)=1", Duration::from_secs(10))?;
        for line in [&before, &fixed, &back] {
            if !line.contains(" wrong=0") {
                bail!("the program saw a wrong result: {line}");
            }
        }
        eprintln!("same process {pid}: before `{before}`, patched `{fixed}`, rolled back `{back}`");
        Ok(())
    })();
    let _ = program.kill();
    let _ = program.wait();
    result
}

/// The next line of the program's output that contains `needle`.
fn wait_for(lines: &mpsc::Receiver<String>, needle: &str, limit: Duration) -> Result<String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return Ok(line),
            Ok(_) => continue,
            Err(_) => bail!("live_service printed no line with `{needle}` in {limit:?}"),
        }
    }
}
