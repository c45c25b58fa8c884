//! `cargo xtask ci`: the same checks locally as in CI.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::shell;

pub fn run(args: &[String]) -> Result<()> {
    if let Some(arg) = args.first() {
        bail!("`ci` takes no arguments, got `{arg}`");
    }
    let root = shell::workspace_root();
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
    eprintln!("$ cargo test --workspace");
    let (passed, failed, status) = run_tests(
        Command::new(&cargo)
            .args(["test", "--workspace"])
            .current_dir(&root),
    )?;
    // One closing line for the whole suite: cargo's own last line is that of the last test
    // binary (often a crate's empty doc tests), which says nothing about the run.
    println!("{passed} passed, {failed} failed");
    if failed > 0 || !status.success() {
        bail!("cargo test --workspace failed with {status}");
    }
    Ok(())
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
        if let Some(result) = text.strip_prefix("test result: ") {
            let count = |word: &str| -> u64 {
                let words: Vec<&str> = result
                    .split([' ', ';', '.'])
                    .filter(|w| !w.is_empty())
                    .collect();
                words
                    .windows(2)
                    .find(|pair| pair[1] == word)
                    .and_then(|pair| pair[0].parse().ok())
                    .unwrap_or(0)
            };
            passed += count("passed");
            failed += count("failed");
        }
    }
    let status = child.wait()?;
    Ok((passed, failed, status))
}
