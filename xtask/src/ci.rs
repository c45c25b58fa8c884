//! `cargo xtask ci`: the same checks locally as in CI, and the floor under the number of tests
//! that pass (`ci/min-tests`), so tests that stop running (a test binary dropped, a filter, a
//! module left out of `main.rs`) fail CI instead of passing quietly. After the suite it runs
//! the fuzz smoke (every fuzz target in process for a bounded time), and it ends with the bench
//! smoke (`cargo xtask bench --smoke`).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::shell;

pub fn run(args: &[String]) -> Result<()> {
    if let Some(arg) = args.first() {
        bail!("`ci` takes no arguments, got `{arg}`");
    }
    let root = shell::workspace_root();
    let minimum_path = root.join(MINIMUM_FILE);
    let minimum = parse_minimum(&fs_err::read_to_string(&minimum_path)?)
        .with_context(|| format!("cannot read the minimum from {}", minimum_path.display()))?;
    shell::run(Command::new(root.join("ci/install-packages")).arg("--tests"))?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let steps: &[&[&str]] = &[
        &["fmt", "--all", "--", "--check"],
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    ];
    for step in steps {
        eprintln!("$ cargo {}", step.join(" "));
        shell::run(Command::new(&cargo).args(*step).current_dir(&root))?;
    }
    // --no-fail-fast: every test binary runs, so the closing count covers the whole suite.
    eprintln!("$ cargo test --workspace --no-fail-fast");
    let (passed, failed, status) = run_tests(
        Command::new(&cargo)
            .args(["test", "--workspace", "--no-fail-fast"])
            .current_dir(&root),
    )?;
    // One closing line for the whole suite: cargo's own last line is that of the last test
    // binary (often a crate's empty doc tests), which says nothing about the run.
    println!("{passed} passed, {failed} failed");
    if failed > 0 || !status.success() {
        bail!("cargo test --workspace failed with {status}");
    }
    fuzz_smoke(&root, &cargo)?;
    if passed < minimum {
        bail!(
            "only {passed} tests passed, fewer than the {minimum} in {MINIMUM_FILE}\n\
             hint: a test binary or module stopped running; if tests were removed on purpose, \
             lower the number in {MINIMUM_FILE} in the same commit and say why"
        );
    }
    // The Windows backend cannot rot where its target exists: it is type-checked and linted
    // on every run, and tested live under Wine by the Windows tier (which prints one
    // `SKIPPED windows tier: <reason>` line when Wine or the target cannot be installed).
    crate::windows::run(&[])?;
    // The bench smoke: small inputs, every figure measured once, no targets judged, so the
    // bench cannot rot between the runs that measure.
    eprintln!("$ cargo xtask bench --smoke");
    crate::bench::run(&["--smoke".to_owned()])?;
    Ok(())
}

/// Seconds each fuzz target gets in the smoke of `cargo xtask ci`, beyond its seeds and saved
/// crashes (which all run, however long they take).
const FUZZ_SMOKE_SECONDS: &str = "20";

/// The fuzz smoke: every target's seeds (`fuzz/seed.sh`), saved crashes and deterministic
/// mutations, in process, through the very functions the cargo-fuzz targets run
/// (`crates/fuzz-targets/tests/smoke.rs`), built with the suite's test profile. No libFuzzer
/// pass: its build of `fuzz/` from scratch is beyond CI's budget (docs/security.md, Fuzzing).
/// It prints one line per target (seeds, saved crashes, executions, seconds, crashes); a crash
/// fails CI and leaves the input in `fuzz/artifacts/<target>/`.
fn fuzz_smoke(root: &std::path::Path, cargo: &str) -> Result<()> {
    eprintln!("$ fuzz/seed.sh");
    shell::run(&mut Command::new(root.join("fuzz/seed.sh")))?;
    let smoke = [
        "test",
        "-p",
        "hotpatch-fuzz-targets",
        "--test",
        "smoke",
        "--",
        "--seconds",
        FUZZ_SMOKE_SECONDS,
    ];
    eprintln!("$ cargo {}", smoke.join(" "));
    shell::run(Command::new(cargo).args(smoke).current_dir(root))
}

/// The file that holds the least number of tests `cargo test --workspace` must pass.
const MINIMUM_FILE: &str = "ci/min-tests";

/// The number in `ci/min-tests`: the one line that is neither blank nor a `#` comment.
fn parse_minimum(text: &str) -> Result<u64> {
    let mut numbers = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'));
    let (Some(number), None) = (numbers.next(), numbers.next()) else {
        bail!("expected exactly one number outside comments");
    };
    number
        .parse()
        .with_context(|| format!("`{number}` is not a count of tests"))
}

/// The (passed, failed) counts of one `test result:` line of libtest, e.g.
/// `test result: ok. 43 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in
/// 2.01s`; `None` for any other line.
fn test_result_counts(line: &str) -> Option<(u64, u64)> {
    let result = line.strip_prefix("test result: ")?;
    let words: Vec<&str> = result
        .split([' ', ';', '.'])
        .filter(|w| !w.is_empty())
        .collect();
    let count = |word: &str| -> u64 {
        words
            .windows(2)
            .find(|pair| pair[1] == word)
            .and_then(|pair| pair[0].parse().ok())
            .unwrap_or(0)
    };
    Some((count("passed"), count("failed")))
}

/// Runs `cargo test`, passing its output through, and adds up the `test result:` lines.
fn run_tests(command: &mut Command) -> Result<(u64, u64, std::process::ExitStatus)> {
    let line = shell::describe(command);
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to start `{line}`"))?;
    let stdout = child.stdout.take().context("no stdout from cargo test")?;
    let (mut passed, mut failed) = (0, 0);
    let mut out = std::io::stdout().lock();
    for text in BufReader::new(stdout).lines() {
        let text = text?;
        writeln!(out, "{text}")?;
        if let Some((passed_here, failed_here)) = test_result_counts(&text) {
            passed += passed_here;
            failed += failed_here;
        }
    }
    let status = child.wait()?;
    Ok((passed, failed, status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_result_lines_are_counted_and_other_lines_are_not() {
        assert_eq!(
            test_result_counts(
                "test result: ok. 43 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 2.01s"
            ),
            Some((43, 0))
        );
        assert_eq!(
            test_result_counts(
                "test result: FAILED. 41 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 70.12s"
            ),
            Some((41, 2))
        );
        assert_eq!(test_result_counts("test tidy::docs ... ok"), None);
        assert_eq!(test_result_counts("running 43 tests"), None);
    }

    #[test]
    fn the_minimum_is_the_one_number_outside_comments() {
        assert_eq!(parse_minimum("# why\n\n120\n").unwrap(), 120);
        assert!(parse_minimum("# nothing\n").is_err());
        assert!(parse_minimum("120\n121\n").is_err());
        assert!(parse_minimum("many\n").is_err());
    }

    #[test]
    fn the_committed_minimum_parses() {
        let text = fs_err::read_to_string(shell::workspace_root().join(MINIMUM_FILE)).unwrap();
        assert!(parse_minimum(&text).unwrap() > 0);
    }
}
