//! `hotpatch check --format sarif` and the release log of `hotpatch build`: assessments as a
//! SARIF 2.1.0 log for code scanning (GitHub, GitLab, Azure DevOps): one run, the rule
//! catalogue as `tool.driver.rules`, one result per finding at the source line of the fix (of
//! every binary, for a release), the binary as a related location, and fingerprints that
//! survive rebuilds.
//!
//! The log is built as a `serde_json::Value`, whose maps are sorted, so the bytes are the same
//! on every run; docs/dependencies.md says why this is not `serde-sarif`.

use crate::source::{FunctionSource, SourceFile, SourceLine, Sources};
use hotpatch_policy::{Assessment, Finding, Rule, Severity};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// What a SARIF log is written from: one run over one or more compared binaries.
pub struct Input<'a> {
    pub binaries: &'a [Binary<'a>],
    /// Where the rule documentation lives (`docs/eligibility.md`, or a URL of it).
    pub rules_uri: &'a str,
    /// The run's `properties`: what was compared (a pair, or a release).
    pub properties: Value,
}

/// One compared binary: its findings become results.
pub struct Binary<'a> {
    pub assessment: &'a Assessment,
    pub sources: &'a Sources,
    /// The fixed build's path, relative to the working directory when it lies under it: the
    /// artifact of the binary's related location.
    pub binary: &'a str,
    /// The binary's identity in fingerprints: the path for `check`, the path inside the
    /// release tree for `build`, so a finding keeps its fingerprint from month to month.
    pub fingerprint_name: &'a str,
    pub fixed_sha256: &'a str,
    /// Addresses of changed and added functions in the fixed build, by assessment name.
    pub addresses: &'a std::collections::BTreeMap<String, (String, u64)>,
    /// Readable names of functions by symbol name, for messages and logical locations.
    pub names: &'a crate::check::ReadableNames<'a>,
}

/// A function's logical location: the readable name, and the symbol when it differs.
fn logical(input: &Binary<'_>, function: &str) -> Value {
    let readable = input.names.get(function);
    let mut location = json!({ "name": readable, "kind": "function" });
    if readable != function {
        location["decoratedName"] = json!(function);
    }
    json!([location])
}

pub const SCHEMA_URI: &str = "https://json.schemastore.org/sarif-2.1.0.json";

/// The SARIF level of a severity.
pub fn level(severity: Severity) -> &'static str {
    match severity {
        Severity::RebootRequired => "error",
        Severity::Review => "warning",
        Severity::Info => "note",
    }
}

/// The GitHub anchor of a rule's heading in docs/eligibility.md (`## HP0101 \`name\`: title`):
/// lowercase, punctuation other than `-` and `_` dropped, spaces as `-`.
pub fn anchor(rule: &Rule) -> String {
    let heading = format!("{} {}: {}", rule.id, rule.name, rule.title);
    heading
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                Some(c.to_ascii_lowercase())
            } else if c == ' ' {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

fn rule_descriptor(rule: &Rule, rules_uri: &str) -> Value {
    json!({
        "id": rule.id.as_str(),
        "name": rule.name,
        "shortDescription": { "text": rule.title },
        "fullDescription": { "text": rule.checks },
        "help": {
            "text": rule.remedy,
            "markdown": format!("**Why:** {}\n\n**Instead:** {}", rule.why, rule.remedy),
        },
        "helpUri": format!("{rules_uri}#{}", anchor(rule)),
        "defaultConfiguration": { "level": level(rule.severity) },
        "properties": {
            "severity": rule.severity.as_str(),
            "scope": match rule.scope {
                hotpatch_policy::Scope::Function => "function",
                hotpatch_policy::Scope::Binary => "binary",
            },
            "tags": ["hotpatch", rule.severity.as_str()],
        },
    })
}

/// Percent-encodes what may not stand in a URI path.
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/:!$&'()*+,;=@".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// An artifact location: repository-relative paths resolve against `%SRCROOT%` (the checkout,
/// for code scanning); absolute ones become `file:` URIs.
fn artifact(path: &str) -> Value {
    let path = crate::source::normalize(path);
    let drive = path.as_bytes().get(1) == Some(&b':');
    if path.starts_with('/') {
        json!({ "uri": format!("file://{}", encode_path(&path)) })
    } else if drive {
        json!({ "uri": format!("file:///{}", encode_path(&path)) })
    } else {
        json!({ "uri": encode_path(&path), "uriBaseId": "%SRCROOT%" })
    }
}

fn source_location(file: &SourceFile, first: u32, last: Option<u32>) -> Value {
    let mut region = json!({ "startLine": first });
    if let Some(last) = last.filter(|&last| last > first) {
        region["endLine"] = json!(last);
    }
    json!({ "artifactLocation": artifact(file.shown()), "region": region })
}

/// `partialFingerprints`: rule, binary and function, never addresses, so a finding keeps its
/// identity across rebuilds that move code.
pub fn fingerprint(rule: &str, binary: &str, function: Option<&str>) -> String {
    let mut hasher = Sha256::new();
    for part in [rule, binary, function.unwrap_or("")] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex(&hasher.finalize()[..16])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn result(input: &Binary<'_>, finding: &Finding, rule_index: usize) -> Value {
    let function = finding.function.as_deref();
    let source: Option<&FunctionSource> = function.and_then(|f| input.sources.get(f));
    let primary: Option<SourceLine> = source.and_then(FunctionSource::primary);
    let mut binary_location = json!({ "artifactLocation": artifact(input.binary) });
    if let Some((display_name, rva)) = function.and_then(|f| input.addresses.get(f)) {
        binary_location["address"] = json!({
            "relativeAddress": rva,
            "kind": "function",
            "name": display_name,
        });
    }
    let binary_related = json!({
        "id": 1,
        "physicalLocation": binary_location.clone(),
        "message": { "text": format!("the fixed build, SHA-256 {}", input.fixed_sha256) },
    });
    let mut locations = Vec::new();
    let mut related = vec![binary_related];
    match &primary {
        Some(line) => {
            let mut location = json!({
                "physicalLocation": source_location(&line.file, line.line, None),
            });
            if let Some(function) = function {
                location["logicalLocations"] = logical(input, function);
            }
            locations.push(location);
        }
        None => {
            let mut location = json!({ "physicalLocation": binary_location });
            if let Some(function) = function {
                location["logicalLocations"] = logical(input, function);
            }
            locations.push(location);
        }
    }
    if let Some(range) = source.and_then(|s| s.fixed.as_ref()) {
        related.push(json!({
            "id": 2,
            "physicalLocation": source_location(&range.file, range.first_line, Some(range.last_line)),
            "message": { "text": format!("{} in the fixed build", input.names.get(function.unwrap_or(""))) },
        }));
    }
    if let Some(inlined) = source.and_then(|s| s.inlined_from.as_ref()) {
        let mut entry = json!({
            "id": 3,
            "message": { "text": format!("code inlined from {}", inlined.inlinee) },
        });
        if let Some(line) = &inlined.line {
            entry["physicalLocation"] = source_location(&line.file, line.line, None);
        }
        related.push(entry);
        if let Some(call) = &inlined.call_site {
            related.push(json!({
                "id": 4,
                "physicalLocation": source_location(&call.file, call.line, None),
                "message": { "text": format!("the call of {} the compiler inlined", inlined.inlinee) },
            }));
        }
    }
    // When the fix line was chosen over the first difference, the first difference stays in
    // view.
    if let Some(first) = source
        .and_then(|s| s.first_difference.as_ref())
        .filter(|first| primary.as_ref() != Some(*first))
    {
        related.push(json!({
            "id": 5,
            "physicalLocation": source_location(&first.file, first.line, None),
            "message": { "text": "the first differing instruction" },
        }));
    }
    let mut text = finding.reason.clone();
    if let Some(function) = function {
        text = format!("{}: {text}", input.names.get(function));
    }
    let mut result = json!({
        "ruleId": finding.rule.as_str(),
        "ruleIndex": rule_index,
        "level": level(finding.severity),
        "message": { "text": text },
        "locations": locations,
        "relatedLocations": related,
        "partialFingerprints": {
            "hotpatchFinding/v1": fingerprint(finding.rule.as_str(), input.fingerprint_name, function),
        },
        "properties": {
            "severity": finding.severity.as_str(),
            "evidence": finding.evidence,
            "remedy": finding.remedy,
        },
    });
    if let Some(waiver) = &finding.waived {
        result["suppressions"] = json!([{
            "kind": "external",
            "status": "accepted",
            "justification": format!("waived by {}: {}", waiver.approved_by, waiver.reason),
        }]);
    }
    result
}

/// The SARIF log, pretty-printed, ending in a newline.
pub fn render(input: &Input<'_>) -> serde_json::Result<String> {
    let catalogue = hotpatch_policy::CATALOGUE;
    let rules: Vec<Value> = catalogue
        .iter()
        .map(|rule| rule_descriptor(rule, input.rules_uri))
        .collect();
    let results: Vec<Value> = input
        .binaries
        .iter()
        .flat_map(|binary| {
            binary.assessment.findings.iter().map(move |finding| {
                let index = catalogue
                    .iter()
                    .position(|rule| rule.id == finding.rule)
                    .unwrap_or(0);
                result(binary, finding, index)
            })
        })
        .collect();
    let log = json!({
        "$schema": SCHEMA_URI,
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "hotpatch",
                "semanticVersion": env!("CARGO_PKG_VERSION"),
                "informationUri": input.rules_uri,
                "rules": rules,
            }},
            "columnKind": "unicodeCodePoints",
            "results": results,
            "properties": input.properties,
        }],
    });
    Ok(serde_json::to_string_pretty(&log)? + "\n")
}
