//! `hotpatch build`: one signed, cumulative package for a monthly release.
//! It pairs the binaries of a baseline tree and a fixed tree by relative path, runs diff, policy
//! and lift on every pair in parallel (`check::assess`), packages what is eligible and changed,
//! and writes the release report (JSON and Markdown) inside the package and beside it, with a
//! SARIF log and a JUnit report of every binary's findings beside it (`release_formats.rs`).
//! The month is a hotpatch month (exit 0) or needs a baseline (exit 10).

use crate::check;
use crate::input::BinaryInput;
use crate::pair::Pair;
use anyhow::{Context, Result, bail};
use hotpatch_package::{
    FORMAT_VERSION, Limits, Manifest, PackageKind, SecretKey, Target, Trust, write_package,
};
use hotpatch_policy::{Policy, Severity, Verdict};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The version of the JSON document `report/release.json` holds.
pub const SCHEMA: &str = "hotpatch-release/1";
/// How many days a package is valid when `--expires-in` is not given.
pub const DEFAULT_EXPIRY_DAYS: u64 = hotpatch_package::DEFAULT_VALIDITY_SECONDS / SECONDS_PER_DAY;
const SECONDS_PER_DAY: u64 = 86_400;
/// Names of the report entries inside the package.
const REPORT_JSON: &str = "report/release.json";
const REPORT_MARKDOWN: &str = "report/release.md";

#[derive(clap::Args)]
pub struct Args {
    /// The release month, `YYYY-MM`.
    #[arg(long, value_name = "YYYY-MM")]
    pub release: String,
    /// The baseline release tree: every package of the series is built against it.
    #[arg(long, value_name = "DIR", required_unless_present = "merge")]
    pub baseline: Option<PathBuf>,
    /// The fixed release tree: this month's builds, with every fix since the baseline.
    #[arg(long, value_name = "DIR", required_unless_present = "merge")]
    pub fixed: Option<PathBuf>,
    /// The secret signing key (`hotpatch keygen`); refused when group or others can read it.
    #[arg(long, value_name = "KEYFILE", required_unless_present = "shard")]
    pub key: Option<PathBuf>,
    /// The package file to write (with --shard: the shard directory).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    #[command(flatten)]
    pub scale_out: crate::shard::ScaleOutArgs,
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub product: String,
    #[arg(long, value_name = "NAME", default_value = "stable")]
    pub channel: String,
    /// `hotpatch` (applied to running processes) or `baseline` (installed with a restart; starts
    /// a new series).
    #[arg(long, value_enum, default_value = "hotpatch")]
    pub kind: Kind,
    /// The package's sequence number; it must grow with every package of (product, channel).
    #[arg(long, value_name = "N", required_unless_present = "shard")]
    pub sequence: Option<u64>,
    /// The lowest installed sequence this hotpatch may follow: the sequence of the series'
    /// baseline package (default: read from --baseline-package). A baseline's is its own.
    #[arg(long, value_name = "N")]
    pub min_sequence: Option<u64>,
    /// The name of the baseline series (default for a baseline: `<product>-<release>`; for a
    /// hotpatch: read from --baseline-package).
    #[arg(long, value_name = "ID")]
    pub baseline_id: Option<String>,
    /// The series' baseline package, verified with the public key of --key: the hotpatch takes
    /// its baseline ID and its sequence as min_sequence.
    #[arg(long, value_name = "FILE")]
    pub baseline_package: Option<PathBuf>,
    /// Policy file (TOML); `[release] leave_out_reboot_required = true` leaves reboot-required
    /// binaries out instead of making the month a baseline month.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Issue time in unix seconds (default: SOURCE_DATE_EPOCH, else now).
    #[arg(long, value_name = "UNIX")]
    pub issued_at: Option<u64>,
    /// Days from the issue time until the package expires.
    #[arg(long, value_name = "DAYS", default_value_t = DEFAULT_EXPIRY_DAYS)]
    pub expires_in: u64,
    /// Where to write release.json and release.md (default: beside the package, as
    /// `<package stem>.release.json` and `.release.md`).
    #[arg(long, value_name = "DIR")]
    pub report_dir: Option<PathBuf>,
    /// Print the release report (schema hotpatch-release/1) on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sources: check::SourceArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Hotpatch,
    Baseline,
}

/// What became of one binary of the release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Eligible, with code to patch: it has a target and a payload in the package.
    Hotpatched,
    /// No code to patch: identical, changes that need no new code, or only new functions that
    /// no replaced function calls.
    Unchanged,
    /// A rule stands against the change: not packaged.
    RebootRequired,
    /// Only in the fixed tree: a new binary is installed with the next baseline.
    Added,
    /// Only in the baseline tree: a binary is removed with the next baseline.
    Removed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Hotpatched => "hotpatched",
            Status::Unchanged => "unchanged",
            Status::RebootRequired => "reboot-required",
            Status::Added => "added",
            Status::Removed => "removed",
        }
    }

    /// Whether the binary keeps the month from being a hotpatch month (unless left out).
    fn needs_baseline(self) -> bool {
        matches!(
            self,
            Status::RebootRequired | Status::Added | Status::Removed
        )
    }
}

/// What the month is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Month {
    /// Every binary is hotpatched, unchanged, or left out by the policy.
    #[serde(rename = "hotpatch-month")]
    Hotpatch,
    /// Some binary cannot be hotpatched: the month needs a baseline (a restart).
    BaselineNeeded,
    /// A `--kind baseline` package: the start of a new series.
    Baseline,
}

impl Month {
    fn as_str(self) -> &'static str {
        match self {
            Month::Hotpatch => "hotpatch month",
            Month::BaselineNeeded => "baseline needed",
            Month::Baseline => "baseline",
        }
    }
}

/// The release report (`report/release.json`, schema hotpatch-release/1).
#[derive(Debug, Serialize)]
pub struct ReleaseReport {
    pub schema: &'static str,
    pub product: String,
    pub channel: String,
    pub release: String,
    pub kind: PackageKind,
    pub baseline_id: String,
    pub sequence: u64,
    pub min_sequence: u64,
    pub issued_at: u64,
    pub expires_at: u64,
    pub key_id: String,
    pub month: Month,
    /// The policy's `[release] leave_out_reboot_required`.
    pub leave_out_reboot_required: bool,
    /// Binaries that would need a baseline but were left out by the policy.
    pub left_out: Vec<String>,
    /// Targets in the package.
    pub targets: usize,
    /// Payload bytes of all targets together.
    pub payload_bytes: u64,
    /// Every binary of both trees, by relative path.
    pub binaries: Vec<BinaryReport>,
}

/// One binary of the release.
#[derive(Debug, Serialize, Deserialize)]
pub struct BinaryReport {
    /// Relative path in the release tree, `/`-separated.
    pub name: String,
    pub status: Status,
    /// `pe` or `elf`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_sha256: Option<String>,
    /// Size of the fixed build's file in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<PayloadReport>,
    /// The package entry holding this binary's HTML audit report (binaries with changes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_report: Option<String>,
    /// Changed, added and line-only functions.
    pub functions: Vec<FunctionReport>,
    /// Every finding that is not informational, and every informational one the policy made.
    pub findings: Vec<FindingReport>,
}

/// The payload of a hotpatched binary.
#[derive(Debug, Serialize, Deserialize)]
pub struct PayloadReport {
    /// The archive entry, `payloads/NNN.bin`.
    pub entry: String,
    pub len: u64,
    pub sites: usize,
    pub relocations: usize,
    /// Read-only data copied into the payload (strings, constants, rewritten jump tables).
    pub copied_data: Vec<CopiedDataReport>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CopiedDataReport {
    pub what: String,
    pub payload_offset: u64,
    pub len: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FunctionReport {
    pub function: String,
    /// `replaced` (a patch site redirects it), `added` (new code reached from replaced code),
    /// `changed` (not packaged), or `line-only`.
    pub change: String,
    pub verdict: Verdict,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
    /// Bytes of its new code in the payload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_size: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FindingReport {
    pub rule: String,
    pub name: String,
    pub severity: Severity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    pub reason: String,
    pub waived: bool,
}

/// A binary's outcome with what goes into the package.
pub(crate) struct Built {
    pub(crate) report: BinaryReport,
    pub(crate) target: Option<(Target, Vec<u8>)>,
    /// The HTML audit report of a binary with changes (`report/binaries/<name>.html`).
    pub(crate) audit_html: Option<String>,
    /// What the release's SARIF and JUnit reports need of a compared pair (`None` for a binary
    /// found in one tree only, and for every binary read back from shards).
    pub(crate) record: Option<crate::release_formats::PairRecord>,
}

pub fn run(args: &Args, out: &mut dyn Write) -> Result<u8> {
    check_release(&args.release)?;
    if let Some(shard) = args.scale_out.shard {
        return crate::shard::write_shard(args, shard, out);
    }
    let (Some(key_path), Some(sequence)) = (&args.key, args.sequence) else {
        bail!("--key and --sequence are needed to sign a package");
    };
    // Refuses a key file that group or others can read.
    let key = crate::package::load_secret_key(key_path)?;
    let issued_at = issue_time(args.issued_at)?;
    let expires_at = args
        .expires_in
        .checked_mul(SECONDS_PER_DAY)
        .and_then(|span| issued_at.checked_add(span))
        .filter(|_| args.expires_in > 0)
        .context("--expires-in must be at least 1 day, and the expiry must fit in unix seconds")?;
    let series = series(args, sequence, &key, issued_at)?;

    // With --merge, the shards hold every binary's analysed and lifted result.
    let roots = crate::source::SourceRoots::new(&args.sources.source_roots);
    let merged = !args.scale_out.merge.is_empty();
    let (mut binaries, leave_out) = if !merged {
        let policy = check::read_policy(args.policy.as_deref())?;
        let (baseline, fixed) = trees(args)?;
        let pairs = pair_trees(baseline, fixed)?;
        (
            analyse(&pairs, &policy, &roots)?,
            policy.release.leave_out_reboot_required,
        )
    } else {
        let shards = crate::shard::read_shards(&args.scale_out.merge, &args.release)?;
        (shards.binaries, shards.leave_out_reboot_required)
    };
    let records: Vec<Option<crate::release_formats::PairRecord>> =
        binaries.iter_mut().map(|b| b.record.take()).collect();

    let blocking: Vec<String> = binaries
        .iter()
        .filter(|b| b.report.status.needs_baseline())
        .map(|b| b.report.name.clone())
        .collect();
    let (month, left_out) = match args.kind {
        Kind::Baseline => (Month::Baseline, Vec::new()),
        Kind::Hotpatch if blocking.is_empty() => (Month::Hotpatch, Vec::new()),
        Kind::Hotpatch if leave_out => (Month::Hotpatch, blocking),
        Kind::Hotpatch => (Month::BaselineNeeded, Vec::new()),
    };

    // A baseline is installed with a restart: it carries no payload, only the series' start.
    let mut targets = Vec::new();
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for binary in &mut binaries {
        if let Some(html) = binary.audit_html.take() {
            let entry = format!("report/binaries/{}.html", binary.report.name);
            binary.report.audit_report = Some(entry.clone());
            files.insert(entry, html.into_bytes());
        }
    }
    if args.kind == Kind::Hotpatch {
        for binary in &mut binaries {
            let Some((mut target, payload)) = binary.target.take() else {
                continue;
            };
            let entry = format!("payloads/{:03}.bin", targets.len());
            target.payload = Some(entry.clone());
            if let Some(report) = &mut binary.report.payload {
                report.entry = entry.clone();
            }
            files.insert(entry, payload);
            targets.push(target);
        }
    } else {
        for binary in &mut binaries {
            binary.report.payload = None;
        }
    }
    let report = ReleaseReport {
        schema: SCHEMA,
        product: args.product.clone(),
        channel: args.channel.clone(),
        release: args.release.clone(),
        kind: series.kind,
        baseline_id: series.baseline_id.clone(),
        sequence,
        min_sequence: series.min_sequence,
        issued_at,
        expires_at,
        key_id: key.key_id(),
        month,
        leave_out_reboot_required: leave_out,
        left_out,
        targets: targets.len(),
        payload_bytes: targets.iter().map(|t| t.payload_len).sum(),
        binaries: binaries.into_iter().map(|b| b.report).collect(),
    };
    let mut report_json = serde_json::to_vec_pretty(&report)?;
    report_json.push(b'\n');
    let report_markdown = markdown(&report).into_bytes();
    files.insert(REPORT_JSON.to_owned(), report_json.clone());
    files.insert(REPORT_MARKDOWN.to_owned(), report_markdown.clone());

    let manifest = Manifest {
        format: FORMAT_VERSION,
        product: args.product.clone(),
        channel: args.channel.clone(),
        release: args.release.clone(),
        kind: series.kind,
        baseline_id: series.baseline_id,
        sequence,
        min_sequence: series.min_sequence,
        issued_at,
        expires_at,
        key_id: String::new(),
        entries: Vec::new(),
        targets,
    };
    let package = write_package(manifest, files, &key).context("cannot assemble the package")?;
    fs_err::write(&args.out, &package)?;
    let (json_path, markdown_path) = report_paths(args)?;
    fs_err::write(&json_path, &report_json)?;
    fs_err::write(&markdown_path, &report_markdown)?;
    // The release's SARIF and JUnit need each pair's source locations and assessment, which a
    // shard directory does not carry: a merge writes neither rather than a log without findings.
    let ci_reports = if merged {
        None
    } else {
        Some(write_ci_reports(args, &report, &records)?)
    };

    if args.json {
        out.write_all(&report_json)?;
    } else {
        writeln!(
            out,
            "{}: {} {} {} {:?} sequence {} (follows {} or later): {}",
            args.out.display(),
            report.product,
            report.channel,
            report.release,
            report.kind,
            report.sequence,
            report.min_sequence,
            month.as_str()
        )?;
        if report.targets == 0 {
            writeln!(out, "  nothing to patch: the package has no targets")?;
        }
        for binary in &report.binaries {
            writeln!(out, "  {:<16} {}", binary.status.as_str(), binary.name)?;
        }
        if !report.left_out.is_empty() {
            writeln!(
                out,
                "  left out by the policy: {}",
                report.left_out.join(", ")
            )?;
        }
        writeln!(
            out,
            "  report: {} and {}",
            json_path.display(),
            markdown_path.display()
        )?;
        match &ci_reports {
            Some((sarif_path, junit_path)) => writeln!(
                out,
                "  code scanning: {}; test report: {}",
                sarif_path.display(),
                junit_path.display()
            )?,
            None => writeln!(
                out,
                "  code scanning and test report: not written by --merge (run `hotpatch check \
                 --format sarif` per binary, or build on one machine)"
            )?,
        }
    }
    Ok(match month {
        Month::BaselineNeeded => crate::exit::REBOOT_REQUIRED,
        Month::Hotpatch | Month::Baseline => 0,
    })
}

/// Both release trees (needed unless the binaries come from shards).
pub(crate) fn trees(args: &Args) -> Result<(&Path, &Path)> {
    match (&args.baseline, &args.fixed) {
        (Some(baseline), Some(fixed)) => Ok((baseline, fixed)),
        _ => bail!("--baseline and --fixed name the release trees"),
    }
}

/// Diffs, assesses and lifts every pair in parallel, with a progress line per binary; the
/// result is in the order of `pairs` (by relative path).
pub(crate) fn analyse(
    pairs: &BTreeMap<String, Sides>,
    policy: &Policy,
    roots: &crate::source::SourceRoots,
) -> Result<Vec<Built>> {
    let total = pairs.len();
    let done = AtomicUsize::new(0);
    let built: Vec<Result<Built>> = pairs
        .par_iter()
        .map(|(name, sides)| {
            let result = build_one(name, sides, policy, roots);
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            match &result {
                Ok(built) => eprintln!("[{n}/{total}] {name}: {}", progress(&built.report)),
                Err(error) => eprintln!("[{n}/{total}] {name}: error: {error:#}"),
            }
            result
        })
        .collect();
    built.into_iter().collect()
}

/// `YYYY-MM` with a month from 01 to 12.
pub(crate) fn check_release(release: &str) -> Result<()> {
    let bytes = release.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|part| part.iter().all(u8::is_ascii_digit))
    };
    let month = release.get(5..7).and_then(|m| m.parse::<u8>().ok());
    if bytes.len() != 7
        || !digits(0..4)
        || bytes.get(4) != Some(&b'-')
        || !digits(5..7)
        || !month.is_some_and(|m| (1..=12).contains(&m))
    {
        bail!("--release {release:?} is not a month of the form YYYY-MM");
    }
    Ok(())
}

/// The issue time: `--issued-at`, else `SOURCE_DATE_EPOCH` (the reproducible-builds
/// convention), else now.
fn issue_time(explicit: Option<u64>) -> Result<u64> {
    let source_date_epoch = std::env::var("SOURCE_DATE_EPOCH").ok();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    Ok(hotpatch_package::issue_time(
        explicit,
        source_date_epoch.as_deref(),
        now,
    )?)
}

/// The package's place in its series.
struct Series {
    kind: PackageKind,
    baseline_id: String,
    min_sequence: u64,
}

fn series(args: &Args, sequence: u64, key: &SecretKey, issued_at: u64) -> Result<Series> {
    match args.kind {
        Kind::Baseline => {
            if args.baseline_package.is_some() {
                bail!("--baseline-package is for hotpatches; a baseline starts its own series");
            }
            if args.min_sequence.is_some_and(|min| min != sequence) {
                bail!("a baseline's min_sequence is its own sequence; leave out --min-sequence");
            }
            Ok(Series {
                kind: PackageKind::Baseline,
                baseline_id: args
                    .baseline_id
                    .clone()
                    .unwrap_or_else(|| format!("{}-{}", args.product, args.release)),
                min_sequence: sequence,
            })
        }
        Kind::Hotpatch => {
            let from_package = match &args.baseline_package {
                Some(path) => Some(read_baseline_package(path, key, issued_at)?),
                None => None,
            };
            let (package_id, package_sequence) = match &from_package {
                Some((id, sequence)) => (Some(id.clone()), Some(*sequence)),
                None => (None, None),
            };
            let baseline_id = match (&args.baseline_id, package_id) {
                (Some(given), Some(read)) if *given != read => {
                    bail!("--baseline-id {given:?} differs from the baseline package's {read:?}")
                }
                (Some(given), _) => given.clone(),
                (None, Some(read)) => read,
                (None, None) => bail!(
                    "a hotpatch names its series: give --baseline-package (the series' baseline package) or --baseline-id and --min-sequence"
                ),
            };
            let min_sequence = match (args.min_sequence, package_sequence) {
                (Some(given), _) => given,
                (None, Some(read)) => read,
                (None, None) => bail!(
                    "a hotpatch needs --min-sequence (the sequence of the series' baseline package) or --baseline-package"
                ),
            };
            if sequence <= min_sequence {
                bail!(
                    "--sequence {} must be above min_sequence {min_sequence}: a hotpatch follows its baseline",
                    sequence
                );
            }
            Ok(Series {
                kind: PackageKind::Hotpatch,
                baseline_id,
                min_sequence,
            })
        }
    }
}

/// The baseline ID and sequence of a baseline package signed with `key`.
fn read_baseline_package(path: &Path, key: &SecretKey, now: u64) -> Result<(String, u64)> {
    let bytes = fs_err::read(path)?;
    let trust = Trust::from_public_key(key.public_key());
    let package = hotpatch_package::open(&bytes, &trust, now, &Limits::default())
        .with_context(|| format!("cannot use baseline package {}", path.display()))?;
    let manifest = package.manifest;
    if manifest.kind != PackageKind::Baseline {
        bail!(
            "{} is a {:?} package, not a baseline",
            path.display(),
            manifest.kind
        );
    }
    Ok((manifest.baseline_id, manifest.sequence))
}

/// Both sides of one relative path; `None` where the path is only in the other tree.
pub(crate) type Sides = (Option<PathBuf>, Option<PathBuf>);

/// Every binary of both trees by relative path, sorted.
pub(crate) fn pair_trees(baseline: &Path, fixed: &Path) -> Result<BTreeMap<String, Sides>> {
    let mut pairs: BTreeMap<String, Sides> = BTreeMap::new();
    for (name, path) in binaries_under(baseline)? {
        pairs.entry(name).or_default().0 = Some(path);
    }
    for (name, path) in binaries_under(fixed)? {
        pairs.entry(name).or_default().1 = Some(path);
    }
    Ok(pairs)
}

/// The binaries (files starting with `MZ` or `\x7fELF`) under `root`, by `/`-separated
/// relative path. Symbolic links are not followed: a release tree is real files.
fn binaries_under(root: &Path) -> Result<BTreeMap<String, PathBuf>> {
    if !fs_err::metadata(root)?.is_dir() {
        bail!("{} is not a directory", root.display());
    }
    let mut found = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs_err::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let file_type = entry.file_type()?;
            if file_type.is_dir() {
                pending.push(path);
            } else if file_type.is_file() && is_binary(&path)? {
                let relative = path
                    .strip_prefix(root)
                    .with_context(|| format!("{} is outside {}", path.display(), root.display()))?;
                let mut parts = Vec::new();
                for part in relative.components() {
                    let part = part
                        .as_os_str()
                        .to_str()
                        .with_context(|| format!("{} is not a UTF-8 path", relative.display()))?;
                    parts.push(part);
                }
                found.insert(parts.join("/"), path);
            }
        }
    }
    Ok(found)
}

fn is_binary(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut head = [0u8; 4];
    let mut file = fs_err::File::open(path)?;
    let mut read = 0;
    while read < head.len() {
        match file.read(&mut head[read..])? {
            0 => break,
            n => read += n,
        }
    }
    Ok(head[..read].starts_with(b"MZ") || head[..read] == *b"\x7fELF")
}

/// Diffs, assesses and lifts one pair; a binary in one tree only is reported as such.
fn build_one(
    name: &str,
    sides: &Sides,
    policy: &Policy,
    roots: &crate::source::SourceRoots,
) -> Result<Built> {
    let (base_path, fixed_path) = match sides {
        (Some(base), Some(fixed)) => (base, fixed),
        (base, _) => {
            let (status, path) = match base {
                Some(base) => (Status::Removed, base),
                None => (
                    Status::Added,
                    sides.1.as_ref().context("a pair has at least one side")?,
                ),
            };
            let sha256 = sha256_of(path)?;
            let (baseline_sha256, fixed_sha256, fixed_size) = match status {
                Status::Removed => (Some(sha256), None, None),
                _ => (None, Some(sha256), Some(fs_err::metadata(path)?.len())),
            };
            return Ok(Built {
                report: BinaryReport {
                    name: name.to_owned(),
                    status,
                    format: None,
                    baseline_sha256,
                    fixed_sha256,
                    fixed_size,
                    payload: None,
                    audit_report: None,
                    functions: Vec::new(),
                    findings: Vec::new(),
                },
                target: None,
                audit_html: None,
                record: None,
            });
        }
    };
    let pair = Pair {
        base: BinaryInput::open(base_path, None)?,
        fixed: BinaryInput::open(fixed_path, None)?,
    };
    let (base, fixed) = pair.load()?;
    let outcome = check::assess(&pair, &base, &fixed, policy);
    let record =
        crate::release_formats::record((base_path, fixed_path), &base, &fixed, &outcome, roots);
    let assessment = &outcome.assessment;
    let lifted = outcome
        .lifted
        .as_ref()
        .filter(|_| assessment.verdict == Verdict::HotpatchEligible);
    let status = match lifted {
        _ if assessment.verdict == Verdict::RebootRequired => Status::RebootRequired,
        // New code that no patch site leads to (an added function nothing changed calls) is
        // never reached in a running process: there is nothing to patch.
        Some(lifted) if !lifted.sites.is_empty() => Status::Hotpatched,
        _ => Status::Unchanged,
    };
    let packaged = if status == Status::Hotpatched {
        lifted
    } else {
        None
    };

    // New code per function: a replaced function's site, an added function's own size.
    let mut payload_sizes: BTreeMap<&str, u64> = BTreeMap::new();
    if let Some(lifted) = packaged {
        for changed in &outcome.diff.changed {
            if let Some(site) = lifted
                .sites
                .iter()
                .find(|site| site.baseline_rva == changed.baseline_rva)
            {
                payload_sizes.insert(&changed.name, site.payload_size);
            }
        }
        for added in &outcome.diff.added {
            payload_sizes.insert(&added.name, added.size);
        }
    }
    let functions = assessment
        .functions
        .iter()
        .map(|function| FunctionReport {
            function: function.function.clone(),
            change: match function.change {
                "changed" if packaged.is_some() => "replaced".to_owned(),
                other => other.to_owned(),
            },
            verdict: function.verdict,
            rules: function
                .rules
                .iter()
                .map(|r| r.as_str().to_owned())
                .collect(),
            payload_size: payload_sizes.get(function.function.as_str()).copied(),
        })
        .collect();
    let findings = assessment
        .findings
        .iter()
        .map(|finding| FindingReport {
            rule: finding.rule.as_str().to_owned(),
            name: finding.name.to_owned(),
            severity: finding.severity,
            function: finding.function.clone(),
            reason: finding.reason.clone(),
            waived: finding.waived.is_some(),
        })
        .collect();
    let audit_html = (status != Status::Unchanged || !assessment.functions.is_empty())
        .then(|| crate::report::release_html(name, &base.image, &fixed.image, &outcome));
    let format = match fixed.image.format {
        hotpatch_image::Format::Pe => "pe",
        hotpatch_image::Format::Elf => "elf",
    };
    let target = packaged.map(|lifted| {
        (
            Target {
                name: name.to_owned(),
                identity: lifted.identity.clone(),
                image_base_rva: lifted.image_base_rva,
                payload: None,
                payload_len: lifted.payload.len() as u64,
                sites: lifted.sites.clone(),
                relocations: lifted.relocations.clone(),
                unwind: lifted.unwind,
            },
            lifted.payload.clone(),
        )
    });
    let payload = packaged.map(|lifted| PayloadReport {
        entry: String::new(),
        len: lifted.payload.len() as u64,
        sites: lifted.sites.len(),
        relocations: lifted.relocations.len(),
        copied_data: lifted
            .copied_data
            .iter()
            .map(|copied| CopiedDataReport {
                what: copied.what.clone(),
                payload_offset: copied.payload_offset,
                len: copied.len,
            })
            .collect(),
    });
    Ok(Built {
        report: BinaryReport {
            name: name.to_owned(),
            status,
            format: Some(format.to_owned()),
            baseline_sha256: Some(base.image.identity.sha256.clone()),
            fixed_sha256: Some(fixed.image.identity.sha256.clone()),
            fixed_size: Some(fixed.image.identity.file_size),
            payload,
            audit_report: None,
            functions,
            findings,
        },
        target,
        audit_html,
        record: Some(record),
    })
}

pub(crate) fn sha256_of(path: &Path) -> Result<String> {
    let mapped = crate::mapped::Mapped::open(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hotpatch_image::sha256_hex(mapped.bytes()))
}

/// The progress line of one binary.
fn progress(report: &BinaryReport) -> String {
    match (&report.payload, report.status) {
        (Some(payload), _) => format!(
            "hotpatched ({} payload bytes, {} site(s))",
            payload.len, payload.sites
        ),
        (None, Status::RebootRequired) => {
            let mut rules: Vec<&str> = report
                .findings
                .iter()
                .filter(|f| f.severity != Severity::Info && !f.waived)
                .map(|f| f.rule.as_str())
                .collect();
            rules.sort_unstable();
            rules.dedup();
            format!("reboot-required [{}]", rules.join(", "))
        }
        (None, status) => status.as_str().to_owned(),
    }
}

/// Where the report files go outside the package.
fn report_paths(args: &Args) -> Result<(PathBuf, PathBuf)> {
    if let Some(dir) = &args.report_dir {
        fs_err::create_dir_all(dir)?;
        return Ok((dir.join("release.json"), dir.join("release.md")));
    }
    let stem = args
        .out
        .file_stem()
        .context("--out names no file")?
        .to_string_lossy()
        .into_owned();
    let dir = args.out.parent().unwrap_or(Path::new(""));
    Ok((
        dir.join(format!("{stem}.release.json")),
        dir.join(format!("{stem}.release.md")),
    ))
}

/// Writes the release's SARIF log and JUnit report beside the release report (`release.sarif`
/// and `release.junit.xml` in `--report-dir`, else `<package stem>.release.sarif` and
/// `.release.junit.xml`); returns their paths.
fn write_ci_reports(
    args: &Args,
    report: &ReleaseReport,
    records: &[Option<crate::release_formats::PairRecord>],
) -> Result<(PathBuf, PathBuf)> {
    use crate::release_formats::{ReleaseEntry, ReleaseFacts};
    let (json_path, _) = report_paths(args)?;
    let stem = json_path
        .file_name()
        .and_then(|name| name.to_str())
        .and_then(|name| name.strip_suffix(".json"))
        .context("the release report has a .json name")?
        .to_owned();
    let sarif_path = json_path.with_file_name(format!("{stem}.sarif"));
    let junit_path = json_path.with_file_name(format!("{stem}.junit.xml"));
    let entries: Vec<ReleaseEntry<'_>> = report
        .binaries
        .iter()
        .zip(records)
        .map(|(binary, record)| ReleaseEntry {
            name: &binary.name,
            status: binary.status.as_str(),
            left_out: report.left_out.contains(&binary.name),
            record: record.as_ref(),
        })
        .collect();
    let facts = ReleaseFacts {
        product: &report.product,
        channel: &report.channel,
        release: &report.release,
        month: report.month.as_str(),
        rules_uri: &args.sources.rules_uri,
    };
    fs_err::write(
        &sarif_path,
        crate::release_formats::sarif(&facts, &entries)?,
    )?;
    fs_err::write(&junit_path, crate::release_formats::junit(&facts, &entries))?;
    Ok((sarif_path, junit_path))
}

/// The Markdown release report.
fn markdown(report: &ReleaseReport) -> String {
    use std::fmt::Write as _;
    let mut md = String::new();
    let kind = match report.kind {
        PackageKind::Hotpatch => "hotpatch",
        PackageKind::Baseline => "baseline",
    };
    let _ = writeln!(
        md,
        "# Release {} of {} ({}): {}\n",
        report.release,
        report.product,
        report.channel,
        report.month.as_str()
    );
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(md, "| kind | {kind} |");
    let _ = writeln!(md, "| baseline series | `{}` |", report.baseline_id);
    let _ = writeln!(
        md,
        "| sequence | {} (follows sequence {} or later) |",
        report.sequence, report.min_sequence
    );
    let _ = writeln!(md, "| signing key | `{}` |", report.key_id);
    let _ = writeln!(md, "| issued | {} |", utc(report.issued_at));
    let _ = writeln!(md, "| expires | {} |", utc(report.expires_at));
    let _ = writeln!(
        md,
        "| package | {} target(s), {} payload bytes |",
        report.targets, report.payload_bytes
    );
    md.push('\n');
    match report.month {
        Month::Hotpatch if report.targets == 0 => {
            md.push_str("Nothing to patch: the package has no targets.\n");
        }
        Month::Hotpatch => {
            md.push_str("Every binary is hotpatched or unchanged");
            if !report.left_out.is_empty() {
                let _ = write!(
                    md,
                    ", except those the policy leaves out: {}",
                    report.left_out.join(", ")
                );
            }
            md.push_str(".\n");
        }
        Month::BaselineNeeded => {
            md.push_str(
                "Some binary cannot be hotpatched: this month needs a baseline (a restart). The package holds the binaries that can.\n",
            );
        }
        Month::Baseline => {
            md.push_str("A baseline is installed with a restart and starts a new series: the package carries no payload.\n");
        }
    }
    md.push_str("\n## Binaries\n\n| binary | status | payload bytes | fixed binary bytes | rules |\n|---|---|---:|---:|---|\n");
    for binary in &report.binaries {
        let rules = blocking_rules(binary);
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {} | {} |",
            binary.name,
            binary.status.as_str(),
            binary
                .payload
                .as_ref()
                .map_or("-".to_owned(), |p| p.len.to_string()),
            binary
                .fixed_size
                .map_or("-".to_owned(), |size| size.to_string()),
            if rules.is_empty() {
                "-".to_owned()
            } else {
                rules.join(", ")
            }
        );
    }
    for binary in &report.binaries {
        if binary.functions.is_empty() && binary.findings.is_empty() {
            continue;
        }
        let _ = writeln!(md, "\n## `{}`: {}\n", binary.name, binary.status.as_str());
        if let Some(entry) = &binary.audit_report {
            let _ = writeln!(md, "Audit report: `{entry}`.\n");
        }
        if let Some(payload) = &binary.payload {
            let _ = writeln!(
                md,
                "Payload `{}`: {} bytes, {} patch site(s), {} relocation(s).\n",
                payload.entry, payload.len, payload.sites, payload.relocations
            );
            for copied in &payload.copied_data {
                let _ = writeln!(
                    md,
                    "- copied read-only data {} ({} bytes at payload +{:#x})",
                    copied.what, copied.len, copied.payload_offset
                );
            }
            if !payload.copied_data.is_empty() {
                md.push('\n');
            }
        }
        if !binary.functions.is_empty() {
            md.push_str(
                "| function | change | verdict | payload bytes | rules |\n|---|---|---|---:|---|\n",
            );
            for function in &binary.functions {
                let _ = writeln!(
                    md,
                    "| `{}` | {} | {} | {} | {} |",
                    function.function,
                    function.change,
                    function.verdict.as_str(),
                    function
                        .payload_size
                        .map_or("-".to_owned(), |size| size.to_string()),
                    if function.rules.is_empty() {
                        "-".to_owned()
                    } else {
                        function.rules.join(", ")
                    }
                );
            }
            md.push('\n');
        }
        for finding in &binary.findings {
            let _ = writeln!(
                md,
                "- {} {} `{}` [{}]: {}{}",
                finding.rule,
                finding.severity.as_str(),
                finding.name,
                finding.function.as_deref().unwrap_or("binary"),
                finding.reason.replace('\n', " "),
                if finding.waived { " (waived)" } else { "" }
            );
        }
    }
    md
}

/// The rules that keep a binary from being hotpatched.
fn blocking_rules(binary: &BinaryReport) -> Vec<&str> {
    let mut rules: Vec<&str> = binary
        .findings
        .iter()
        .filter(|f| f.severity != Severity::Info && !f.waived)
        .map(|f| f.rule.as_str())
        .collect();
    rules.sort_unstable();
    rules.dedup();
    rules
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
fn utc(seconds: u64) -> String {
    let days = seconds / SECONDS_PER_DAY;
    let rem = seconds % SECONDS_PER_DAY;
    // Howard Hinnant's days-to-civil algorithm, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
