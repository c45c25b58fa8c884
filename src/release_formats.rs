//! The SARIF log and JUnit report of a whole release (`hotpatch build`): what each compared
//! pair keeps for them once its images are gone ([`PairRecord`]), and the two files written
//! beside `release.json`, one SARIF run with every binary's results and one JUnit suite with
//! every binary's cases.

use crate::check::{self, ReadableNames};
use crate::source::{SourceRoots, Sources};
use hotpatch_image::Loaded;
use hotpatch_policy::Assessment;
use std::collections::BTreeMap;
use std::path::Path;

/// What the release's SARIF and JUnit reports need of one compared pair.
pub struct PairRecord {
    /// The fixed build's path as reports name it (relative to the working directory when it
    /// lies under it).
    pub fixed_path: String,
    pub baseline_path: String,
    pub fixed_sha256: String,
    pub assessment: Assessment,
    pub sources: Sources,
    pub addresses: BTreeMap<String, (String, u64)>,
    pub names: ReadableNames<'static>,
}

/// Records a compared pair: source locations from both builds' line tables, addresses and
/// readable names of the functions the assessment names.
pub fn record(
    paths: (&Path, &Path),
    base: &Loaded<'_>,
    fixed: &Loaded<'_>,
    outcome: &check::Outcome,
    roots: &SourceRoots,
) -> PairRecord {
    let assessment = outcome.assessment.clone();
    let sources = crate::source::locate(&base.image, &fixed.image, &outcome.diff, roots);
    let names = ReadableNames::new(&base.image, &fixed.image).owned_subset(
        assessment
            .functions
            .iter()
            .map(|f| f.function.as_str())
            .chain(
                assessment
                    .findings
                    .iter()
                    .filter_map(|f| f.function.as_deref()),
            ),
    );
    PairRecord {
        fixed_path: check::display_path(paths.1),
        baseline_path: check::display_path(paths.0),
        fixed_sha256: fixed.image.identity.sha256.clone(),
        addresses: check::addresses(&outcome.diff),
        sources,
        names,
        assessment,
    }
}

/// One binary of the release for the reports.
pub struct ReleaseEntry<'a> {
    /// The path inside the release tree.
    pub name: &'a str,
    pub status: &'a str,
    pub left_out: bool,
    pub record: Option<&'a PairRecord>,
}

/// What the release is, for the reports' properties.
pub struct ReleaseFacts<'a> {
    pub product: &'a str,
    pub channel: &'a str,
    pub release: &'a str,
    pub month: &'a str,
    pub rules_uri: &'a str,
}

/// The SARIF 2.1.0 log of the release: one run, the results of every compared binary.
pub fn sarif(facts: &ReleaseFacts<'_>, entries: &[ReleaseEntry<'_>]) -> serde_json::Result<String> {
    let binaries: Vec<crate::sarif::Binary<'_>> = entries
        .iter()
        .filter_map(|entry| {
            let record = entry.record?;
            Some(crate::sarif::Binary {
                assessment: &record.assessment,
                sources: &record.sources,
                binary: &record.fixed_path,
                fingerprint_name: entry.name,
                fixed_sha256: &record.fixed_sha256,
                addresses: &record.addresses,
                names: &record.names,
            })
        })
        .collect();
    let statuses: Vec<serde_json::Value> = entries
        .iter()
        .map(|entry| {
            let mut value = serde_json::json!({ "name": entry.name, "status": entry.status });
            if entry.left_out {
                value["leftOut"] = serde_json::Value::Bool(true);
            }
            value
        })
        .collect();
    crate::sarif::render(&crate::sarif::Input {
        binaries: &binaries,
        rules_uri: facts.rules_uri,
        properties: serde_json::json!({
            "product": facts.product,
            "channel": facts.channel,
            "release": facts.release,
            "month": facts.month,
            "binaries": statuses,
        }),
    })
}

/// The JUnit XML of the release: one suite, a case per binary and per changed function; a
/// binary only one tree has fails (it needs a baseline) unless the policy leaves it out, which
/// skips it.
pub fn junit(facts: &ReleaseFacts<'_>, entries: &[ReleaseEntry<'_>]) -> String {
    let binaries: Vec<crate::junit::ReleaseBinary<'_>> = entries
        .iter()
        .map(|entry| match entry.record {
            Some(record) if !entry.left_out => {
                crate::junit::ReleaseBinary::Compared(crate::junit::Input {
                    assessment: &record.assessment,
                    sources: &record.sources,
                    binary: entry.name,
                    baseline: &record.baseline_path,
                    names: &record.names,
                })
            }
            _ => crate::junit::ReleaseBinary::Status {
                name: entry.name,
                failure: (!entry.left_out && matches!(entry.status, "added" | "removed")).then(
                    || {
                        format!(
                            "{}: a binary only one release tree has is installed with a baseline",
                            entry.status
                        )
                    },
                ),
                skipped: entry
                    .left_out
                    .then(|| format!("{}: left out of the release by the policy", entry.status)),
            },
        })
        .collect();
    let title = format!(
        "release {} of {} ({})",
        facts.release, facts.product, facts.channel
    );
    crate::junit::render_release(
        &title,
        &[
            ("product", facts.product),
            ("channel", facts.channel),
            ("release", facts.release),
            ("month", facts.month),
        ],
        &binaries,
    )
}
