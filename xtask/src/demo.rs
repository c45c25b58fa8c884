//! `cargo xtask demo`: the main job on the bundled fixtures. Builds the `hotpatch` CLI in
//! release mode and runs it on both builds of every fixture case in both formats.

use std::process::Command;

use anyhow::{Result, bail};

use crate::shell;

pub fn run(args: &[String]) -> Result<()> {
    if let Some(arg) = args.first() {
        bail!("`demo` takes no arguments, got `{arg}`");
    }
    let root = shell::workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    shell::run(
        Command::new(&cargo)
            .args(["build", "--release", "--quiet", "--bin", "hotpatch"])
            .current_dir(&root),
    )?;
    let hotpatch = root.join("target/release/hotpatch");
    let mut cases: Vec<_> = fs_err::read_dir(root.join("fixtures"))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.join("expect.toml").is_file())
        .collect();
    cases.sort();
    for case in &cases {
        for binary in [
            "pe/baseline.exe",
            "pe/fixed.exe",
            "elf/baseline",
            "elf/fixed",
        ] {
            let path = case.strip_prefix(&root).unwrap_or(case).join(binary);
            shell::run(
                Command::new(&hotpatch)
                    .arg("inspect")
                    .arg(&path)
                    .current_dir(&root),
            )?;
        }
    }
    eprintln!("inspected {} fixture cases, 4 builds each", cases.len());
    Ok(())
}
