//! The `hotpatch` command line: argument handling, output and exit codes. The work itself lives
//! in the library crates under `crates/`.

mod build;
mod check;
mod diff;
mod input;
mod inspect;
mod junit;
mod mapped;
mod package;
mod pair;
mod release_formats;
mod report;
mod sarif;
mod shard;
mod source;

use clap::{Parser, Subcommand};
use std::io::Write;
use std::process::ExitCode;

/// Exit codes, documented in README.md.
pub mod exit {
    /// Usage error, or an input that cannot be read (missing, truncated, not a binary,
    /// debug information that does not match).
    pub const INPUT: u8 = 2;
    /// `check`/`report`: finished, and something is reboot-required; `build`: the package is
    /// written, and the month needs a baseline.
    pub const REBOOT_REQUIRED: u8 = 10;
    /// `verify`: the package was refused (signature, key, an entry's hash or length, expiry,
    /// the container or the manifest's content).
    pub const VERIFY_REFUSED: u8 = 3;
    /// `build --merge`: the shards do not cover the release exactly once (a shard missing or
    /// given twice, a binary in the wrong shard).
    pub const SHARDS_INCOMPLETE: u8 = 4;
    /// `build --merge`: the shards are not of one release (another month, other binaries or
    /// bytes, another N, another policy file, results for other builds).
    pub const SHARDS_MISMATCHED: u8 = 5;
}

#[derive(Parser)]
#[command(
    name = "hotpatch",
    version,
    about = "Turn security fixes into hotpatches"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show what hotpatch reads from a binary and its debug information.
    Inspect(inspect::Args),
    /// List the functions and data a fix changed between a baseline and a fixed build.
    Diff(diff::Args),
    /// Decide whether a fix may be hotpatched (exit 0) or needs a reboot (exit 10).
    Check(check::Args),
    /// Write the audit report (JSON, Markdown or self-contained HTML).
    Report(report::Args),
    /// Print the eligibility rule catalogue.
    Rules(report::RulesArgs),
    /// Build the signed, cumulative package of a monthly release from a baseline and a fixed
    /// tree (exit 0: hotpatch month; 10: written, but the month needs a baseline).
    Build(Box<build::Args>),
    /// Generate a signing key pair (hotpatch.key, mode 0600, and hotpatch.pub).
    Keygen(package::KeygenArgs),
    /// Verify a package's signature, entries and validity window (exit 0), or name what failed
    /// (exit 3).
    Verify(package::VerifyArgs),
    /// Create or rotate a trust file (the versioned set of accepted signing keys).
    #[command(subcommand)]
    Trust(package::TrustCommand),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() { exit::INPUT } else { 0 };
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    let mut stdout = std::io::stdout().lock();
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(&args, &mut stdout),
        Command::Diff(args) => diff::run(&args, &mut stdout),
        Command::Check(args) => check::run(&args, &mut stdout),
        Command::Report(args) => report::run(&args, &mut stdout),
        Command::Rules(args) => report::rules(&args, &mut stdout),
        Command::Build(args) => build::run(&args, &mut stdout),
        Command::Keygen(args) => package::keygen(&args, &mut stdout),
        Command::Verify(args) => package::verify(&args, &mut stdout),
        Command::Trust(command) => package::trust(&command, &mut stdout),
    };
    let result = result.and_then(|code| stdout.flush().map(|()| code).map_err(anyhow::Error::from));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            if let Some(hint) = hint_for(&error) {
                eprintln!("hint: {hint}");
            }
            let code = error
                .chain()
                .find_map(|cause| cause.downcast_ref::<shard::MergeRefused>())
                .map_or(exit::INPUT, shard::MergeRefused::exit_code);
            ExitCode::from(code)
        }
    }
}

/// A reader that closed the pipe early (`hotpatch inspect x --json | head`) is not a failure.
/// JSON output fails with a `serde_json::Error`, whose `source()` skips the `io::Error` it
/// wraps, so that one is asked for its kind directly.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        let kind = match cause.downcast_ref::<std::io::Error>() {
            Some(io) => Some(io.kind()),
            None => cause
                .downcast_ref::<serde_json::Error>()
                .and_then(serde_json::Error::io_error_kind),
        };
        kind == Some(std::io::ErrorKind::BrokenPipe)
    })
}

fn hint_for(error: &anyhow::Error) -> Option<&'static str> {
    if error
        .chain()
        .any(|cause| cause.downcast_ref::<package::InsecureKeyFile>().is_some())
    {
        return Some("restrict it to its owner: chmod 600 <file>");
    }
    let image_error = error
        .chain()
        .find_map(|cause| cause.downcast_ref::<hotpatch_image::Error>())?;
    match image_error {
        hotpatch_image::Error::PdbMismatch { .. } => {
            Some("pass the PDB the linker wrote together with this image (--pdb), or rebuild both")
        }
        hotpatch_image::Error::DebugMismatch { .. } => Some(
            "pass the debug file split off this very build (objcopy --only-keep-debug), or rebuild both",
        ),
        hotpatch_image::Error::NotABinary { .. } | hotpatch_image::Error::Empty => {
            Some("hotpatch reads PE32+ (.exe, .dll) and ELF64 x86-64 files")
        }
        _ => None,
    }
}
