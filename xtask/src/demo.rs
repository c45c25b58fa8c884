//! `cargo xtask demo`: the main job on the bundled fixtures. Builds the `hotpatch` CLI in
//! release mode, inspects both builds of every fixture case in both formats, diffs them and
//! decides whether each fix may be hotpatched.

use std::process::Command;

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
    Ok(())
}
