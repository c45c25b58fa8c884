//! Project automation, run as `cargo xtask <command>` (see `.cargo/config.toml`).
//!
//! The command table follows gimli-rs/object's xtask: one `(name, fn, help)` row per
//! command, and each command's logic lives in its own module so other commands can call it.

mod bench;
mod bench_diff;
mod bench_pair;
mod bench_real;
mod bench_release;
mod ci;
mod demo;
mod fixtures;
mod fuzz;
mod shell;
mod windows;

use anyhow::{Result, bail};

type Command = fn(&[String]) -> Result<()>;

const COMMANDS: &[(&str, Command, &str)] = &[
    (
        "bench",
        bench::run,
        "build the benchmark inputs if missing (cached in target/bench-data), measure every figure against its reference, print one table and write benches/runs/<date>-<host>.json; `--smoke`: small inputs, seconds, no targets judged",
    ),
    (
        "ci",
        ci::run,
        "install system packages, then run fmt, clippy and the workspace tests",
    ),
    (
        "demo",
        demo::run,
        "the main job on the bundled fixtures: `hotpatch inspect` on every build, `hotpatch diff` and `hotpatch check` on every pair",
    ),
    (
        "fuzz",
        fuzz::run,
        "`--seconds N [TARGET...]`: seed the corpora and run every cargo-fuzz target (or those named) N seconds each at nice 19, then print executions and corpus sizes; installs cargo-fuzz if missing",
    ),
    (
        "fixtures",
        fixtures::run,
        "build fixtures/<case>/{pe,elf} from source; `--check` rebuilds into a temp dir and compares; optional case names limit the set",
    ),
    (
        "test-windows",
        windows::run,
        "install Wine, mingw-w64 and the Rust target x86_64-pc-windows-gnu, cross-build hotpatch-apply.exe and patch PE fixtures live under Wine (prints `SKIPPED windows tier: <reason>` when Wine cannot be installed)",
    ),
];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((name, rest)) = args.split_first() else {
        print_help();
        bail!("no command given");
    };
    if name == "help" || name == "--help" || name == "-h" {
        print_help();
        return Ok(());
    }
    match COMMANDS.iter().find(|(command, _, _)| command == name) {
        Some((_, command, _)) => command(rest),
        None => {
            print_help();
            bail!("unknown command `{name}`")
        }
    }
}

fn print_help() {
    eprintln!("usage: cargo xtask <command> [args]\n\ncommands:");
    for (name, _, help) in COMMANDS {
        eprintln!("  {name:<10} {help}");
    }
}
