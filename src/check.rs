//! `hotpatch check`: may the fix be hotpatched? Exit 0 when eligible, 10 when reboot-required.

use crate::pair::{Pair, PairArgs};
use anyhow::{Context, Result};
use hotpatch_diff::Diff;
use hotpatch_image::{Diagnostic, Image, Loaded};
use hotpatch_policy::{Assessment, Policy, Severity, Subject, Verdict};
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
    /// Print the verdict and findings as JSON (schema hotpatch-check/1).
    #[arg(long)]
    pub json: bool,
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
                let function = problem.function().to_owned();
                hotpatch_policy::add_stage_finding(
                    assessment,
                    &hotpatch_policy::codes::LIFT_UNSUPPORTED,
                    diff.changed
                        .iter()
                        .find(|c| c.display_name == function)
                        .map(|c| c.name.as_str())
                        .or(Some(function.as_str())),
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
pub struct ReadableNames<'a>(BTreeMap<&'a str, &'a str>);

impl<'a> ReadableNames<'a> {
    pub fn new(baseline: &'a Image<'_>, fixed: &'a Image<'_>) -> Self {
        let mut names = BTreeMap::new();
        for function in fixed.functions.iter().chain(&baseline.functions) {
            names
                .entry(function.name.as_str())
                .or_insert(function.display_name.as_str());
        }
        ReadableNames(names)
    }

    /// The readable name of `name`, or `name` itself when no function has it.
    pub fn get<'n>(&self, name: &'n str) -> &'n str
    where
        'a: 'n,
    {
        self.0.get(name).copied().unwrap_or(name)
    }
}

pub fn exit_code(verdict: Verdict) -> u8 {
    match verdict {
        Verdict::HotpatchEligible => 0,
        Verdict::RebootRequired => crate::exit::REBOOT_REQUIRED,
    }
}

pub fn run(args: &Args, out: &mut dyn Write) -> Result<u8> {
    let policy = read_policy(args.policy.as_deref())?;
    let pair = args.pair.open()?;
    let (base, fixed) = pair.load()?;
    let outcome = assess(&pair, &base, &fixed, &policy);
    let assessment = &outcome.assessment;
    if args.json {
        let mut value = serde_json::to_value(assessment)?;
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
                "  {:<17} {} ({}){}",
                function.verdict.as_str(),
                names.get(&function.function),
                function.change,
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
    Ok(exit_code(assessment.verdict))
}
