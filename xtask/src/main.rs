//! Project automation, run as `cargo xtask <command>` (see `.cargo/config.toml`).
//!
//! The command table follows gimli-rs/object's xtask: one `(name, fn, help)` row per
//! command, and each command's logic lives in its own module so other commands can call it.

mod bench;
mod ci;
mod demo;
mod fixtures;
mod fuzz;
mod shell;

use anyhow::{Result, bail};

type Command = fn(&[String]) -> Result<()>;

const COMMANDS: &[(&str, Command, &str)] = &[
    (
        "bench",
        bench::run,
        "generate the large pair if missing, run the criterion benches, print one table and write benches/runs/<date>-<host>.csv; extra args go to criterion",
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
