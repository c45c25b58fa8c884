//! The policy file (TOML): limits, rules turned off, rules that may be waived, and waivers.
//!
//! ```toml
//! always_active = ["event_loop"] # functions that stay on a stack for the life of the process
//!
//! [limits]
//! max_functions = 50          # replaced + added functions per binary
//! max_payload_bytes = 1048576 # their code size
//!
//! [rules]
//! disabled = ["HP1101"]       # never evaluated; the report lists them
//! waivable = ["HP0901"]       # reboot-required rules that a waiver may accept
//!
//! [release]
//! leave_out_reboot_required = false # `hotpatch build`: a reboot-required binary forces a baseline
//!
//! [[waiver]]
//! rule = "HP0502"
//! binary = "app.exe"          # file name of the fixed build, or its SHA-256
//! function = "parse_header"   # omit for binary-scope rules
//! reason = "both aliases must get the bounds check"
//! approved_by = "A. Reviewer"
//! ```

use serde::{Deserialize, Serialize};

/// A parsed policy file.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub rules: RuleSwitches,
    /// Functions the author knows to stay active for the life of the process (an event loop
    /// reached through a path the control-flow graph cannot see), by name.
    #[serde(default)]
    pub always_active: Vec<String>,
    #[serde(default, rename = "waiver")]
    pub waivers: Vec<Waiver>,
    #[serde(default)]
    pub release: ReleaseSwitches,
}

/// How `hotpatch build` treats a month in which some binary cannot be hotpatched.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseSwitches {
    /// `false` (the default): one reboot-required, added or removed binary makes the month a
    /// baseline month. `true`: such binaries are left out of the package and reported, and the
    /// month stays a hotpatch month for the others.
    #[serde(default)]
    pub leave_out_reboot_required: bool,
}

/// Size limits of one binary's patch.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_functions: Option<usize>,
    pub max_payload_bytes: Option<u64>,
}

/// Rules turned off, and reboot-required rules a waiver may accept.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSwitches {
    #[serde(default)]
    pub disabled: Vec<String>,
    #[serde(default)]
    pub waivable: Vec<String>,
}

/// A reviewer's acceptance of one finding for one binary (and function).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Waiver {
    pub rule: String,
    pub binary: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    pub reason: String,
    pub approved_by: String,
}

/// Why a policy file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("the policy file is not valid TOML for a hotpatch policy: {0}")]
    Syntax(#[from] toml::de::Error),
    #[error("the policy file names rule {id}, which is not in the catalogue")]
    UnknownRule { id: String },
    #[error(
        "the policy file disables the fail-safe rule {id}; list it under `waivable` and waive each finding instead"
    )]
    FailSafeDisabled { id: String },
    #[error("waiver for {rule} needs a non-empty {field}")]
    IncompleteWaiver { rule: String, field: &'static str },
}

impl Policy {
    /// Parses and checks a policy file: every rule ID must exist, every waiver must say why and
    /// who approved it.
    pub fn parse(text: &str) -> Result<Policy, Error> {
        let policy: Policy = toml::from_str(text)?;
        let ids = policy
            .rules
            .disabled
            .iter()
            .chain(&policy.rules.waivable)
            .chain(policy.waivers.iter().map(|w| &w.rule));
        for id in ids {
            if crate::codes::rule(id).is_none() {
                return Err(Error::UnknownRule { id: id.clone() });
            }
        }
        for id in &policy.rules.disabled {
            let fail_safe = crate::codes::FAIL_SAFE
                .iter()
                .any(|rule| *rule == id.as_str());
            if fail_safe && !policy.rules.waivable.contains(id) {
                return Err(Error::FailSafeDisabled { id: id.clone() });
            }
        }
        for waiver in &policy.waivers {
            for (field, value) in [
                ("reason", &waiver.reason),
                ("approved_by", &waiver.approved_by),
            ] {
                if value.trim().is_empty() {
                    return Err(Error::IncompleteWaiver {
                        rule: waiver.rule.clone(),
                        field,
                    });
                }
            }
        }
        Ok(policy)
    }

    pub(crate) fn is_disabled(&self, id: crate::codes::RuleId) -> bool {
        self.rules.disabled.iter().any(|d| id == d.as_str())
    }

    /// The waiver that accepts a finding, if the rule may be waived at all.
    pub(crate) fn waiver_for(
        &self,
        rule: &crate::codes::Rule,
        binary_names: &[&str],
        function: Option<&str>,
    ) -> Option<&Waiver> {
        let waivable = match rule.severity {
            crate::codes::Severity::Review => true,
            crate::codes::Severity::RebootRequired => {
                self.rules.waivable.iter().any(|w| rule.id == w.as_str())
            }
            crate::codes::Severity::Info => false,
        };
        if !waivable {
            return None;
        }
        self.waivers.iter().find(|waiver| {
            rule.id == waiver.rule.as_str()
                && binary_names.contains(&waiver.binary.as_str())
                && waiver.function.as_deref() == function
        })
    }
}
