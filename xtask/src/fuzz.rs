//! `cargo xtask fuzz --seconds N [TARGET...]`: seeds the corpora (`fuzz/seed.sh`), then runs
//! every cargo-fuzz target (or the ones named) for N seconds each, one after the other, at
//! the lowest CPU priority, and prints one line of figures per target (executions, seconds,
//! corpus entries and bytes) as libFuzzer reports them. Installs cargo-fuzz when it is
//! missing. Only stable Rust is needed: `RUSTC_BOOTSTRAP=1` lets it take cargo-fuzz's `-Z`
//! flags (fuzz/README.md). A crash fails the command; libFuzzer leaves the input in
//! `fuzz/artifacts/<target>/`, to be copied to `fuzz/regressions/` with its fix.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::shell;

/// Every target, in the order they run.
pub const TARGETS: &[&str] = &["pe", "pdb", "elf", "dwarf", "diff", "package", "lift"];

pub fn run(args: &[String]) -> Result<()> {
    let mut seconds = None;
    let mut targets = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                let value = args.next().context("--seconds needs a number")?;
                seconds = Some(
                    value
                        .parse::<u64>()
                        .with_context(|| format!("--seconds takes a number, not `{value}`"))?,
                );
            }
            name if TARGETS.contains(&name) => targets.push(name.to_owned()),
            other => bail!(
                "unknown argument `{other}`; targets are {}",
                TARGETS.join(", ")
            ),
        }
    }
    let seconds = seconds.context("usage: cargo xtask fuzz --seconds N [TARGET...]")?;
    if targets.is_empty() {
        targets = TARGETS.iter().map(|t| (*t).to_owned()).collect();
    }
    let figures = fuzz(&targets, seconds)?;
    println!("target   runs        seconds  corpus entries  corpus bytes");
    for f in &figures {
        println!(
            "{:<8} {:<11} {:<8} {:<15} {}",
            f.target, f.runs, f.seconds, f.corpus_entries, f.corpus_bytes
        );
    }
    Ok(())
}

/// What libFuzzer reported at the end of one run.
#[derive(Debug, Default)]
pub struct Figures {
    pub target: String,
    pub runs: u64,
    pub seconds: u64,
    pub corpus_entries: u64,
    pub corpus_bytes: String,
}

/// Installs cargo-fuzz if needed, seeds the corpora and runs `targets` for `seconds` each.
pub fn fuzz(targets: &[String], seconds: u64) -> Result<Vec<Figures>> {
    let root = shell::workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let installed = Command::new(&cargo)
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        eprintln!("$ cargo install cargo-fuzz --locked");
        shell::run(Command::new(&cargo).args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let fuzz_dir = root.join("fuzz");
    shell::run(&mut Command::new(fuzz_dir.join("seed.sh")))?;
    let mut all = Vec::new();
    for target in targets {
        // nice -n 19: the fuzzer takes whatever CPU nobody else wants.
        let mut command = Command::new("nice");
        command
            .args(["-n", "19", &cargo, "fuzz", "run", target])
            .arg(format!("corpus/{target}"))
            .args([
                "--",
                &format!("-max_total_time={seconds}"),
                "-timeout=60",
                "-print_final_stats=1",
            ])
            .current_dir(&fuzz_dir)
            .env("RUSTC_BOOTSTRAP", "1")
            // A forged size makes a fallible allocation fail: not a bug (fuzz/README.md).
            .env("ASAN_OPTIONS", "allocator_may_return_null=1")
            .stderr(Stdio::piped());
        let line = shell::describe(&command);
        eprintln!("$ {line}");
        let mut child = command
            .spawn()
            .with_context(|| format!("failed to start `{line}`"))?;
        let stderr = child.stderr.take().context("no stderr from cargo fuzz")?;
        let mut figures = Figures {
            target: target.clone(),
            ..Figures::default()
        };
        let mut err = std::io::stderr().lock();
        for text in BufReader::new(stderr).lines() {
            let text = text?;
            writeln!(err, "{text}")?;
            read_figures(&text, &mut figures);
        }
        drop(err);
        let status = child.wait()?;
        if !status.success() {
            bail!("fuzz target {target} failed ({status}): see fuzz/artifacts/{target}/");
        }
        all.push(figures);
    }
    Ok(all)
}

/// Picks the figures out of one libFuzzer output line: `Done 1234 runs in 60 second(s)` and
/// the corpus of the last status line (`#1234 ... corp: 56/7890b ...`).
fn read_figures(line: &str, figures: &mut Figures) {
    if let Some(rest) = line.strip_prefix("Done ") {
        let words: Vec<&str> = rest.split_whitespace().collect();
        if let [runs, "runs", "in", seconds, ..] = words.as_slice() {
            figures.runs = runs.parse().unwrap_or(0);
            figures.seconds = seconds.parse().unwrap_or(0);
        }
    }
    if line.starts_with('#')
        && let Some(corpus) = line.split("corp: ").nth(1)
        && let Some((entries, rest)) = corpus.split_once('/')
    {
        figures.corpus_entries = entries.parse().unwrap_or(0);
        figures.corpus_bytes = rest.split_whitespace().next().unwrap_or("").to_owned();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libfuzzer_figures_are_read() {
        let mut figures = Figures::default();
        read_figures(
            "#52741\tDONE   cov: 3011 ft: 9120 corp: 612/1843Kb lim: 4096 exec/s: 87 rss: 512Mb",
            &mut figures,
        );
        read_figures("Done 52741 runs in 601 second(s)", &mut figures);
        read_figures("INFO: Seed: 1234", &mut figures);
        assert_eq!(
            (figures.runs, figures.seconds, figures.corpus_entries),
            (52741, 601, 612)
        );
        assert_eq!(figures.corpus_bytes, "1843Kb");
    }
}
