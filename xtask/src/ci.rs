//! `cargo xtask ci`: the same checks locally as in CI.

use std::process::Command;

use anyhow::{Result, bail};

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
        &["test", "--workspace"],
    ];
    for step in steps {
        eprintln!("$ cargo {}", step.join(" "));
        shell::run(Command::new(&cargo).args(*step).current_dir(&root))?;
    }
    Ok(())
}
