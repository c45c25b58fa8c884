//! `hotpatch-policy`: decides for each change whether it may be hotpatched.
//!
//! [`assess`] runs every rule of the catalogue (`codes.rs`) over a [`Diff`] and the two image
//! models, applies the policy file (`config.rs`: limits, disabled rules, waivers) and returns an
//! [`Assessment`]: a verdict per changed function and per binary, each backed by findings with a
//! rule ID, a reason, evidence and a remedy. It sees no bytes of PE or ELF files, only the model.
//! Whatever a rule cannot prove safe is reboot-required.

pub mod codes;
mod config;
mod rules;

pub use codes::{CATALOGUE, Rule, RuleId, Scope, Severity, catalogue_markdown};
pub use config::{Error, Limits, Policy, RuleSwitches, Waiver};

use hotpatch_diff::Diff;
use hotpatch_image::{Diagnostic, Image};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The version of the JSON document [`Assessment`] serializes to.
pub const SCHEMA: &str = "hotpatch-check/1";

/// The decision for a function or a binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    HotpatchEligible,
    RebootRequired,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::HotpatchEligible => "hotpatch-eligible",
            Verdict::RebootRequired => "reboot-required",
        }
    }
}

/// What the rules are run on.
pub struct Subject<'a> {
    /// Names a waiver may use for this binary: the fixed build's file name and SHA-256.
    pub binary_names: Vec<&'a str>,
    pub baseline: &'a Image<'a>,
    pub fixed: &'a Image<'a>,
    pub diff: &'a Diff,
    /// What the readers could read only in part, for both builds.
    pub diagnostics: &'a [Diagnostic],
}

/// One rule that fired.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// The rule ID (`HP0101`), an entry of the catalogue.
    pub rule: RuleId,
    /// The rule name (`data-layout-changed`).
    pub name: &'static str,
    pub severity: Severity,
    /// The function concerned, for function-scope rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// What was found, in plain words.
    pub reason: String,
    /// The facts behind it (symbols, offsets, instructions, layouts), sorted by key.
    pub evidence: BTreeMap<String, String>,
    /// What the patch author can do instead.
    pub remedy: &'static str,
    /// The waiver that accepts this finding, if one does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waived: Option<Waiver>,
}

impl Finding {
    /// Whether this finding keeps its function or binary from being hotpatched.
    pub fn blocks(&self) -> bool {
        self.severity != Severity::Info && self.waived.is_none()
    }
}

/// The verdict for one changed, added or line-only function.
#[derive(Clone, Debug, Serialize)]
pub struct FunctionVerdict {
    pub function: String,
    /// `changed`, `added` or `line-only`.
    pub change: &'static str,
    pub verdict: Verdict,
    /// Every rule that fired on it.
    pub rules: Vec<RuleId>,
}

/// The outcome for one binary.
#[derive(Clone, Debug, Serialize)]
pub struct Assessment {
    pub schema: &'static str,
    pub verdict: Verdict,
    pub functions: Vec<FunctionVerdict>,
    /// Sorted by function (binary-scope findings first), then rule.
    pub findings: Vec<Finding>,
    /// Rules the policy turned off.
    pub disabled_rules: Vec<String>,
}

/// Adds a finding that a later stage made (lifting: HP1501) to an assessment and recomputes the
/// verdicts of the function it names and of the binary.
pub fn add_stage_finding(
    assessment: &mut Assessment,
    rule: &'static Rule,
    function: Option<&str>,
    reason: String,
    evidence: &[(&str, String)],
) {
    let finding = rules::finding(rule, function, reason, evidence);
    if finding.blocks() {
        assessment.verdict = Verdict::RebootRequired;
        for verdict in &mut assessment.functions {
            if Some(verdict.function.as_str()) == function {
                verdict.verdict = Verdict::RebootRequired;
                if !verdict.rules.contains(&rule.id) {
                    verdict.rules.push(rule.id);
                    verdict.rules.sort_unstable();
                }
            }
        }
    }
    assessment.findings.push(finding);
    assessment
        .findings
        .sort_by(|a, b| (&a.function, a.rule, &a.reason).cmp(&(&b.function, b.rule, &b.reason)));
}

/// Runs the catalogue over `subject` under `policy`.
pub fn assess(subject: &Subject<'_>, policy: &Policy) -> Assessment {
    let mut findings = rules::evaluate(subject, policy);
    findings.retain(|finding| !policy.is_disabled(finding.rule));
    for finding in &mut findings {
        let rule = finding.rule.rule();
        finding.waived = policy
            .waiver_for(rule, &subject.binary_names, finding.function.as_deref())
            .cloned();
    }
    findings
        .sort_by(|a, b| (&a.function, a.rule, &a.reason).cmp(&(&b.function, b.rule, &b.reason)));

    let mut functions: Vec<FunctionVerdict> = Vec::new();
    // A binary-scope finding about a data symbol also weighs on every changed function whose
    // new code uses that symbol (a function reading a re-laid-out struct cannot be patched alone).
    let changed_by_name: BTreeMap<&str, &hotpatch_diff::ChangedFunction> = subject
        .diff
        .changed
        .iter()
        .map(|c| (c.name.as_str(), c))
        .collect();
    let uses = |function: &str, finding: &Finding| {
        let Some(symbol) = finding.evidence.get("symbol") else {
            return false;
        };
        changed_by_name
            .get(function)
            .is_some_and(|changed| rules::uses_data(changed, symbol))
    };
    let mut push_function = |function: &str, change: &'static str| {
        let own: Vec<&Finding> = findings
            .iter()
            .filter(|f| match &f.function {
                Some(name) => name == function,
                None => f.severity != Severity::Info && uses(function, f),
            })
            .collect();
        let verdict = if own.iter().any(|f| f.blocks()) {
            Verdict::RebootRequired
        } else {
            Verdict::HotpatchEligible
        };
        let mut rules: Vec<RuleId> = own.iter().map(|f| f.rule).collect();
        rules.sort_unstable();
        rules.dedup();
        functions.push(FunctionVerdict {
            function: function.to_owned(),
            change,
            verdict,
            rules,
        });
    };
    for changed in &subject.diff.changed {
        push_function(&changed.name, "changed");
    }
    for added in &subject.diff.added {
        push_function(&added.name, "added");
    }
    for line_only in &subject.diff.line_only {
        push_function(&line_only.name, "line-only");
    }
    functions.sort_by(|a, b| a.function.cmp(&b.function));
    let verdict = if findings.iter().any(Finding::blocks) {
        Verdict::RebootRequired
    } else {
        Verdict::HotpatchEligible
    };
    Assessment {
        schema: SCHEMA,
        verdict,
        functions,
        findings,
        disabled_rules: policy.rules.disabled.clone(),
    }
}
