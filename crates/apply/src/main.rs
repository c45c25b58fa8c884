//! The `hotpatch-apply` command line: argument parsing, printing results as text or JSON, and
//! exit codes (docs/apply.md). The work is in the library (`hotpatch_apply::commands`); the
//! same commands run on Linux and Windows, except `watch` (Linux only).

use clap::{Args, Parser, Subcommand};
use hotpatch_apply::commands::{self, CommandReport, Processes, RollbackTo};
use hotpatch_apply::error::{Class, Error};
#[cfg(target_os = "linux")]
use hotpatch_apply::linux::watch::{self, WatchConfig, WatchEvent};
use hotpatch_apply::patch::Config;
use hotpatch_apply::report::{self, exit};
use hotpatch_apply::state::{DEFAULT_DIR, StateDir};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// Apply signed hotpatch packages to running processes, verify them, report and roll back.
#[derive(Parser)]
#[command(name = "hotpatch-apply", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Verify a package and apply it to running processes.
    Apply {
        package: PathBuf,
        #[command(flatten)]
        trust: TrustArg,
        #[command(flatten)]
        processes: ProcessArgs,
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        tuning: Tuning,
    },
    /// Show what each process carries (read from its memory) against the state directory.
    Status {
        /// Processes to read; every process when omitted.
        #[arg(long = "pid")]
        pids: Vec<i32>,
        #[command(flatten)]
        common: Common,
    },
    /// Restore the baseline code, or an earlier installed package.
    Rollback {
        #[command(flatten)]
        processes: ProcessArgs,
        /// `baseline` (default) or a sequence number of an installed package.
        #[arg(long, default_value = "baseline")]
        to: String,
        /// Needed with `--to SEQ`, to re-verify the stored package.
        #[arg(long)]
        trust: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        tuning: Tuning,
    },
    /// Apply the installed packages to processes as they start (a long-running service).
    #[cfg(target_os = "linux")]
    Watch {
        #[command(flatten)]
        trust: TrustArg,
        /// Between /proc scans, in milliseconds (exec events arrive at once when the process
        /// connector is available).
        #[arg(long, default_value_t = 50)]
        interval_ms: u64,
        /// How long a new process is re-checked for a target image, in milliseconds.
        #[arg(long, default_value_t = 5000)]
        grace_ms: u64,
        /// Stop after this many milliseconds (default: run until stopped).
        #[arg(long)]
        run_for_ms: Option<u64>,
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        tuning: Tuning,
    },
    /// Verify a package without touching any process.
    Verify {
        package: PathBuf,
        #[command(flatten)]
        trust: TrustArg,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Args)]
struct TrustArg {
    /// A public key file (`hotpatch-public-key-v1 <hex>`) or a trust file.
    #[arg(long)]
    trust: PathBuf,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct ProcessArgs {
    /// A process to work on (repeatable).
    #[arg(long = "pid")]
    pids: Vec<i32>,
    /// Every process that maps a target, found by file identity.
    #[arg(long)]
    all: bool,
}

impl ProcessArgs {
    fn processes(&self) -> Processes {
        if self.all {
            Processes::All
        } else {
            Processes::Pids(self.pids.clone())
        }
    }
}

#[derive(Args)]
struct Common {
    /// Where the sequence high-water mark and installed packages are kept.
    #[arg(long, default_value = DEFAULT_DIR)]
    state_dir: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct Tuning {
    /// Stop windows tried before a busy function is refused.
    #[arg(long, default_value_t = 20)]
    retries: u32,
    /// Time after which a busy function is refused, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    retry_timeout_ms: u64,
    /// Do not raise the applier's priority during the stop window (SCHED_FIFO on Linux,
    /// time-critical on Windows).
    #[arg(long)]
    no_realtime: bool,
}

impl Tuning {
    fn config(&self) -> Config {
        Config {
            retries: self.retries,
            retry_timeout: Duration::from_millis(self.retry_timeout_ms),
            realtime: !self.no_realtime,
        }
    }
}

impl Command {
    fn json(&self) -> bool {
        match self {
            Command::Apply { common, .. }
            | Command::Status { common, .. }
            | Command::Rollback { common, .. }
            | Command::Verify { common, .. } => common.json,
            #[cfg(target_os = "linux")]
            Command::Watch { common, .. } => common.json,
        }
    }
}

fn main() {
    let cli = Cli::parse();
    let json = cli.command.json();
    let code = match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            if json {
                // The error as data on stdout, where the report would have been: the kind is
                // stable, the message is for people.
                let (kind, class) = match &error {
                    Failure::Io(_) => ("io", "input"),
                    Failure::Apply(error) => (
                        error.kind(),
                        match error.class() {
                            Class::Input => "input",
                            Class::Verification => "verification",
                            Class::Refused => "refused",
                            Class::Failed => "failed",
                        },
                    ),
                };
                print_json(&serde_json::json!({
                    "error": { "kind": kind, "class": class, "message": error.to_string() }
                }));
            }
            match &error {
                Failure::Io(_) => exit::USAGE,
                Failure::Apply(error) => match error.class() {
                    Class::Input => exit::USAGE,
                    Class::Verification => exit::VERIFICATION,
                    Class::Refused => exit::REFUSED,
                    Class::Failed => exit::FAILED,
                },
            }
        }
    };
    std::process::exit(code);
}

#[derive(Debug)]
enum Failure {
    Io(String),
    Apply(Error),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Io(message) => f.write_str(message),
            Failure::Apply(error) => write!(f, "{error}"),
        }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure::Apply(error)
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| Failure::Io(format!("cannot read {}: {e}", path.display())))
}

/// Reads `--trust`, refusing a file that group or others may write: whoever can write it
/// chooses which keys the applier trusts.
#[cfg(unix)]
fn read_trust(path: &PathBuf) -> Result<Vec<u8>, Failure> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| Failure::Io(format!("cannot read {}: {e}", path.display())))?
        .permissions()
        .mode();
    if mode & 0o022 != 0 {
        return Err(Failure::Apply(Error::InsecureTrustFile {
            path: path.clone(),
            mode: mode & 0o7777,
        }));
    }
    read(path)
}

/// Windows: the trust file's ACL is not checked yet (see docs/security.md).
#[cfg(not(unix))]
fn read_trust(path: &PathBuf) -> Result<Vec<u8>, Failure> {
    read(path)
}

fn run(cli: Cli) -> Result<i32, Failure> {
    match cli.command {
        Command::Apply {
            package,
            trust,
            processes,
            common,
            tuning,
        } => {
            let bytes = read(&package)?;
            let state_dir = StateDir::open(&common.state_dir)?;
            let trust = commands::load_trust(&read_trust(&trust.trust)?, &state_dir)?;
            let report = commands::apply(
                &bytes,
                &trust,
                &processes.processes(),
                &state_dir,
                &tuning.config(),
                commands::now(),
            )?;
            Ok(print_report(&report, common.json))
        }
        Command::Rollback {
            processes,
            to,
            trust,
            common,
            tuning,
        } => {
            let to = if to == "baseline" {
                RollbackTo::Baseline
            } else {
                RollbackTo::Sequence(to.parse().map_err(|_| {
                    Failure::Io(format!(
                        "--to takes `baseline` or a sequence number, not {to:?}"
                    ))
                })?)
            };
            let state_dir = StateDir::open(&common.state_dir)?;
            let trust = match trust {
                Some(path) => Some(commands::load_trust(&read_trust(&path)?, &state_dir)?),
                None => None,
            };
            let report = commands::rollback(
                &processes.processes(),
                to,
                trust.as_ref(),
                &state_dir,
                &tuning.config(),
                commands::now(),
            )?;
            Ok(print_report(&report, common.json))
        }
        Command::Status { pids, common } => {
            let state_dir = StateDir::open(&common.state_dir)?;
            let processes = if pids.is_empty() {
                Processes::All
            } else {
                Processes::Pids(pids)
            };
            let entries = commands::status(&processes, &state_dir)?;
            let mismatches = entries.iter().filter(|e| e.mismatch.is_some()).count();
            if common.json {
                print_json(&entries);
            } else {
                let mut out = std::io::stdout().lock();
                if entries.is_empty() {
                    let _ = writeln!(out, "no hotpatch applied in the processes read");
                }
                for entry in &entries {
                    let carries = match (entry.state, entry.sequence) {
                        ("patched", Some(s)) => format!("sequence {s}"),
                        (state, Some(s)) => format!("{state} sequence {s}"),
                        (state, None) => state.to_owned(),
                    };
                    let _ = writeln!(
                        out,
                        "pid {} {} {}/{}: {carries}, {} sites{}",
                        entry.pid,
                        entry.target,
                        entry.product,
                        entry.channel,
                        entry.sites,
                        entry
                            .mismatch
                            .as_ref()
                            .map_or(String::new(), |m| format!("; MISMATCH: {m}"))
                    );
                }
            }
            Ok(if mismatches > 0 {
                exit::REFUSED
            } else {
                exit::OK
            })
        }
        #[cfg(target_os = "linux")]
        Command::Watch {
            trust,
            interval_ms,
            grace_ms,
            run_for_ms,
            common,
            tuning,
        } => {
            let trust = {
                let state_dir = StateDir::open(&common.state_dir)?;
                commands::load_trust(&read_trust(&trust.trust)?, &state_dir)?
            };
            let config = WatchConfig {
                interval: Duration::from_millis(interval_ms.max(1)),
                grace: Duration::from_millis(grace_ms),
                run_for: run_for_ms.map(Duration::from_millis),
            };
            watch::watch(
                &common.state_dir,
                &trust,
                &tuning.config(),
                &config,
                |event: &WatchEvent| {
                    let mut out = std::io::stdout().lock();
                    if common.json {
                        let value = serde_json::json!({
                            "result": event.result,
                            "patched_after_start_ms": event.since_start.map(|d| d.as_millis() as u64),
                        });
                        let _ = writeln!(out, "{value}");
                    } else {
                        let after = event.since_start.map_or(String::new(), |d| {
                            format!("; {} ms after the process started", d.as_millis())
                        });
                        let _ = writeln!(out, "{}{after}", event.result.line());
                    }
                    let _ = out.flush();
                },
            )?;
            Ok(exit::OK)
        }
        Command::Verify {
            package,
            trust,
            common,
        } => {
            let bytes = read(&package)?;
            let state_dir = StateDir::open(&common.state_dir)?;
            let trust = commands::load_trust(&read_trust(&trust.trust)?, &state_dir)?;
            let verified = commands::verify(&bytes, &trust, commands::now())?;
            let manifest = &verified.manifest;
            if common.json {
                print_json(&serde_json::json!({
                    "verified": true,
                    "product": manifest.product,
                    "channel": manifest.channel,
                    "sequence": manifest.sequence,
                    "key_id": manifest.key_id,
                    "expires_at": manifest.expires_at,
                    "targets": manifest.targets.iter().map(|t| &t.name).collect::<Vec<_>>(),
                }));
            } else {
                println!(
                    "verified: {} {} sequence {} ({} targets), signed by {}, expires at {}",
                    manifest.product,
                    manifest.channel,
                    manifest.sequence,
                    manifest.targets.len(),
                    manifest.key_id,
                    manifest.expires_at
                );
            }
            Ok(exit::OK)
        }
    }
}

fn print_json<T: serde::Serialize>(value: &T) {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("\"{e}\""));
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

fn print_report(report: &CommandReport, json: bool) -> i32 {
    if json {
        print_json(report);
    } else {
        let mut out = std::io::stdout().lock();
        if let (Some(product), Some(sequence)) = (&report.product, report.sequence) {
            let _ = writeln!(
                out,
                "{} {product} {} sequence {sequence}",
                report.command,
                report.channel.as_deref().unwrap_or("")
            );
        }
        if report.results.is_empty() {
            let _ = writeln!(out, "no process maps a target of this package");
        }
        for result in &report.results {
            let _ = writeln!(out, "{}", result.line());
        }
    }
    report::exit_code(&report.results)
}
