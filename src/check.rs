//! `hotpatch check`: may the fix be hotpatched? Exit 0 when eligible, 10 when reboot-required.

use crate::pair::{Pair, PairArgs};
use crate::source::{SourceRoot, SourceRoots, Sources};
use anyhow::{Context, Result};
use hotpatch_diff::Diff;
use hotpatch_image::{Diagnostic, Image, Loaded};
use hotpatch_policy::{Assessment, Policy, Severity, Subject, Verdict};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub pair: PairArgs,
    /// Policy file (TOML): limits, disabled rules, waivable rules, waivers (docs/policy.md).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Print the verdict and findings as JSON (schema hotpatch-check/1); the same as
    /// `--format json`.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// Output format: text, JSON (hotpatch-check/1), SARIF 2.1.0 for code scanning, or JUnit
    /// XML for the test tab of CI systems (docs/ci.md).
    #[arg(long, value_enum, default_value = "text")]
    pub format: CheckFormat,
    #[command(flatten)]
    pub sources: SourceArgs,
    /// Write the output to this file instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckFormat {
    Text,
    Json,
    Sarif,
    Junit,
}

/// Where the sources are, for `check` and `report`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct SourceArgs {
    /// Map build paths recorded in the debug information to the repository, as the compilers'
    /// `-ffile-prefix-map` does: `/build/src=.`; repeatable, the longest prefix wins, and an
    /// empty PREFIX maps every relative path.
    #[arg(long = "source-root", value_name = "PREFIX=DIR")]
    pub source_roots: Vec<SourceRoot>,
    /// The rule documentation that SARIF `helpUri`s point into (a path or URL of
    /// docs/eligibility.md).
    #[arg(long, value_name = "URI", default_value = "docs/eligibility.md")]
    pub rules_uri: String,
}

/// Everything one assessment produced, for `check`, `report` and `build`.
pub struct Outcome {
    pub diff: Diff,
    pub assessment: Assessment,
    /// The payload, when the policy found the change eligible and lifting succeeded.
    pub lifted: Option<hotpatch_lift::Lifted>,
}

pub fn read_policy(path: Option<&Path>) -> Result<Policy> {
    let Some(path) = path else {
        return Ok(Policy::default());
    };
    let text = fs_err::read_to_string(path)?;
    Policy::parse(&text).with_context(|| format!("cannot use the policy file {}", path.display()))
}

/// Diffs and assesses a loaded pair.
pub fn assess(pair: &Pair, base: &Loaded<'_>, fixed: &Loaded<'_>, policy: &Policy) -> Outcome {
    let diff = hotpatch_diff::diff(&base.image, &fixed.image, hotpatch_diff::Config::default());
    let file_name = pair
        .fixed
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let diagnostics: Vec<Diagnostic> = base
        .diagnostics
        .iter()
        .chain(&fixed.diagnostics)
        .cloned()
        .collect();
    let subject = Subject {
        binary_names: vec![file_name.as_str(), fixed.image.identity.sha256.as_str()],
        baseline: &base.image,
        fixed: &fixed.image,
        diff: &diff,
        diagnostics: &diagnostics,
    };
    let mut assessment = hotpatch_policy::assess(&subject, policy);
    let lifted = lift(&base.image, &fixed.image, &diff, &mut assessment);
    Outcome {
        diff,
        assessment,
        lifted,
    }
}

/// Lifts an eligible change; what cannot be lifted exactly becomes an HP1501 finding, so the
/// verdict says what `build` would do.
fn lift(
    baseline: &hotpatch_image::Image<'_>,
    fixed: &hotpatch_image::Image<'_>,
    diff: &Diff,
    assessment: &mut Assessment,
) -> Option<hotpatch_lift::Lifted> {
    if assessment.verdict != Verdict::HotpatchEligible {
        return None;
    }
    match hotpatch_lift::lift(baseline, fixed, diff) {
        Ok(lifted) => Some(lifted),
        Err(problems) => {
            for problem in problems {
                // The assessment names a function by the diff's name: the baseline name of a
                // replaced function, the fixed name of an added one.
                let function = match problem.baseline_index() {
                    Some(baseline_index) => diff
                        .changed
                        .iter()
                        .find(|c| c.baseline_index == baseline_index)
                        .map(|c| c.name.as_str()),
                    None => diff
                        .added
                        .iter()
                        .find(|a| a.index == problem.fixed_index())
                        .map(|a| a.name.as_str()),
                };
                hotpatch_policy::add_stage_finding(
                    assessment,
                    &hotpatch_policy::codes::LIFT_UNSUPPORTED,
                    function.or(Some(problem.function())),
                    problem.to_string(),
                    &problem.evidence(),
                );
            }
            None
        }
    }
}

/// The readable name (`display_name`) of each function of both builds by its symbol name, so
/// text output names a function as people write it (`std::bad_alloc::~bad_alloc`, not
/// `??1bad_alloc@std@@UEAA@XZ`); JSON keeps the symbol name.
pub struct ReadableNames<'a>(BTreeMap<Cow<'a, str>, Cow<'a, str>>);

impl<'a> ReadableNames<'a> {
    pub fn new(baseline: &'a Image<'_>, fixed: &'a Image<'_>) -> Self {
        let mut names = BTreeMap::new();
        for function in fixed.functions.iter().chain(&baseline.functions) {
            names
                .entry(Cow::Borrowed(function.name.as_str()))
                .or_insert(Cow::Borrowed(function.display_name.as_str()));
        }
        ReadableNames(names)
    }

    /// The names of `functions` only, owned: what outlives the images (`hotpatch build` keeps
    /// them for the release's SARIF and JUnit reports).
    pub fn owned_subset<'n>(
        &self,
        functions: impl IntoIterator<Item = &'n str>,
    ) -> ReadableNames<'static> {
        let mut names = BTreeMap::new();
        for function in functions {
            if let Some(readable) = self.0.get(function) {
                names.insert(
                    Cow::Owned(function.to_owned()),
                    Cow::Owned(readable.clone().into_owned()),
                );
            }
        }
        ReadableNames(names)
    }

    /// The readable name of `name`, or `name` itself when no function has it.
    pub fn get<'n>(&'n self, name: &'n str) -> &'n str {
        self.0.get(name).map_or(name, |readable| readable.as_ref())
    }
}

pub fn exit_code(verdict: Verdict) -> u8 {
    match verdict {
        Verdict::HotpatchEligible => 0,
        Verdict::RebootRequired => crate::exit::REBOOT_REQUIRED,
    }
}

/// The path of a build as reports name it: relative to the working directory when it lies
/// under it, so SARIF fingerprints do not depend on where the checkout is.
pub fn display_path(path: &Path) -> String {
    let relative = std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf());
    crate::source::normalize(&relative.to_string_lossy())
}

/// The fixed build's address and display name of each changed and added function, by the name
/// the assessment uses.
pub fn addresses(diff: &Diff) -> BTreeMap<String, (String, u64)> {
    let mut addresses = BTreeMap::new();
    for changed in &diff.changed {
        addresses.insert(
            changed.name.clone(),
            (changed.display_name.clone(), changed.fixed_rva),
        );
    }
    for added in &diff.added {
        addresses.insert(added.name.clone(), (added.display_name.clone(), added.rva));
    }
    addresses
}

/// Adds the `source` of each function and function-scope finding to the hotpatch-check/1
/// JSON (an additive field).
pub fn annotate(value: &mut serde_json::Value, sources: &Sources) {
    // Both lists name their function in a `function` field.
    for key in ["functions", "findings"] {
        if let Some(items) = value.get_mut(key).and_then(|v| v.as_array_mut()) {
            for item in items {
                let source = item
                    .get("function")
                    .and_then(|f| f.as_str())
                    .and_then(|name| sources.get(name));
                if let Some(source) = source.and_then(|s| serde_json::to_value(s).ok()) {
                    item["source"] = source;
                }
            }
        }
    }
}

pub fn run(args: &Args, out: &mut dyn Write) -> Result<u8> {
    let policy = read_policy(args.policy.as_deref())?;
    let pair = args.pair.open()?;
    let (base, fixed) = pair.load()?;
    let outcome = assess(&pair, &base, &fixed, &policy);
    let roots = SourceRoots::new(&args.sources.source_roots);
    let sources = crate::source::locate(&base.image, &fixed.image, &outcome.diff, &roots);
    let format = if args.json {
        CheckFormat::Json
    } else {
        args.format
    };
    let mut text = Vec::new();
    write_check(
        &pair, &base, &fixed, &outcome, &sources, args, format, &mut text,
    )?;
    match &args.output {
        Some(path) => fs_err::write(path, text)?,
        None => out.write_all(&text)?,
    }
    Ok(exit_code(outcome.assessment.verdict))
}

#[allow(
    clippy::too_many_arguments,
    reason = "one call site; the pieces of one check run"
)]
fn write_check(
    pair: &Pair,
    base: &Loaded<'_>,
    fixed: &Loaded<'_>,
    outcome: &Outcome,
    sources: &Sources,
    args: &Args,
    format: CheckFormat,
    out: &mut dyn Write,
) -> Result<()> {
    let assessment = &outcome.assessment;
    let binary = display_path(&pair.fixed.path);
    let baseline = display_path(&pair.base.path);
    let names = ReadableNames::new(&base.image, &fixed.image);
    match format {
        CheckFormat::Sarif => {
            let addresses = addresses(&outcome.diff);
            let binaries = [crate::sarif::Binary {
                assessment,
                sources,
                binary: &binary,
                fingerprint_name: &binary,
                fixed_sha256: &fixed.image.identity.sha256,
                addresses: &addresses,
                names: &names,
            }];
            let text = crate::sarif::render(&crate::sarif::Input {
                binaries: &binaries,
                rules_uri: &args.sources.rules_uri,
                properties: serde_json::json!({
                    "verdict": assessment.verdict.as_str(),
                    "baseline": baseline,
                    "baselineSha256": base.image.identity.sha256,
                    "fixed": binary,
                    "fixedSha256": fixed.image.identity.sha256,
                }),
            })?;
            out.write_all(text.as_bytes())?;
            return Ok(());
        }
        CheckFormat::Junit => {
            let text = crate::junit::render(&crate::junit::Input {
                assessment,
                sources,
                binary: &binary,
                baseline: &baseline,
                names: &names,
            });
            out.write_all(text.as_bytes())?;
            return Ok(());
        }
        CheckFormat::Json | CheckFormat::Text => {}
    }
    if format == CheckFormat::Json {
        let mut value = serde_json::to_value(assessment)?;
        annotate(&mut value, sources);
        value["binary"] = serde_json::Value::String(pair.fixed.path.display().to_string());
        value["baseline_sha256"] = serde_json::Value::String(base.image.identity.sha256.clone());
        value["fixed_sha256"] = serde_json::Value::String(fixed.image.identity.sha256.clone());
        serde_json::to_writer_pretty(&mut *out, &value)?;
        writeln!(out)?;
    } else {
        let names = ReadableNames::new(&base.image, &fixed.image);
        writeln!(
            out,
            "{}: {}",
            pair.fixed.path.display(),
            assessment.verdict.as_str()
        )?;
        if let Some(lifted) = &outcome.lifted {
            writeln!(
                out,
                "  payload: {} bytes, {} patch site(s), {} relocation(s)",
                lifted.payload.len(),
                lifted.sites.len(),
                lifted.relocations.len()
            )?;
        }
        for function in &assessment.functions {
            writeln!(
                out,
                "  {:<17} {} ({}){}{}",
                function.verdict.as_str(),
                names.get(&function.function),
                function.change,
                sources
                    .get(&function.function)
                    .and_then(|source| source.primary())
                    .map(|line| format!(" at {}:{}", line.file.shown(), line.line))
                    .unwrap_or_default(),
                if function.rules.is_empty() {
                    String::new()
                } else {
                    format!(
                        " [{}]",
                        function
                            .rules
                            .iter()
                            .map(|r| r.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            )?;
        }
        for finding in assessment
            .findings
            .iter()
            .filter(|f| f.severity != Severity::Info)
        {
            let waived = match &finding.waived {
                Some(waiver) => format!(" (waived by {}: {})", waiver.approved_by, waiver.reason),
                None => String::new(),
            };
            let scope = finding
                .function
                .as_deref()
                .map_or("binary", |name| names.get(name));
            writeln!(
                out,
                "  {} {} {} [{}]: {}{waived}",
                finding.rule,
                finding.severity.as_str(),
                finding.name,
                scope,
                finding.reason
            )?;
        }
    }
    Ok(())
}
