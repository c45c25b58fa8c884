//! Running external programs with the command line echoed and failures turned into errors.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The workspace root: xtask lives one directory below it.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// Runs `command` and fails with its command line if it does not exit successfully.
pub fn run(command: &mut Command) -> Result<()> {
    let line = describe(command);
    let status = command
        .status()
        .with_context(|| format!("failed to start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed with {status}");
    }
    Ok(())
}

/// The command line as a user could paste it, with the working directory if one was set.
pub fn describe(command: &Command) -> String {
    let mut line = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    match command.get_current_dir() {
        Some(dir) => format!("(cd {} && {line})", dir.display()),
        None => line,
    }
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set, else `target/` in the workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Builds the `hotpatch` CLI in release mode and returns its path.
pub fn build_release_hotpatch() -> Result<PathBuf> {
    build_release_binary("hotpatch", "hotpatch")
}

/// Builds the binary `bin` of `package` in release mode and returns its path.
pub fn build_release_binary(package: &str, bin: &str) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    run(Command::new(&cargo)
        .args(["build", "--release", "--quiet", "-p", package, "--bin", bin])
        .current_dir(workspace_root()))?;
    Ok(target_dir().join("release").join(bin))
}

/// Builds the binary `bin` of `package` with the test profile (what `cargo test` already
/// compiled, so it costs seconds) and returns its path.
pub fn build_test_profile_binary(package: &str, bin: &str) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    run(Command::new(&cargo)
        .args([
            "build",
            "--profile",
            "test",
            "--quiet",
            "-p",
            package,
            "--bin",
            bin,
        ])
        .current_dir(workspace_root()))?;
    Ok(target_dir().join("debug").join(bin))
}
