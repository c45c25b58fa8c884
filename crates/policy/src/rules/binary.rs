//! Detectors that judge the binary as a whole: partial debug information (HP0003), exports
//! added or removed (HP0401, HP0402), new imports (HP0403), a changed toolchain (HP0901),
//! changed resources (HP1201) and the policy's size limits (HP1401).

use super::{BinaryContext, finding};
use crate::Finding;
use crate::codes;
use hotpatch_image::{Image, RelocationType};
use std::collections::{BTreeMap, BTreeSet};

pub(super) fn incomplete_debug_info(context: &BinaryContext<'_>) -> Vec<Finding> {
    let diagnostics = context.subject.diagnostics;
    if diagnostics.is_empty() {
        return Vec::new();
    }
    let listed: Vec<String> = diagnostics
        .iter()
        .map(|d| format!("{}: {}", d.location, d.message))
        .collect();
    vec![finding(
        &codes::INCOMPLETE_DEBUG_INFO,
        None,
        format!(
            "{} part(s) of the input could be read only in part",
            listed.len()
        ),
        &[("diagnostics", listed.join("\n"))],
    )]
}

/// Exported names. A PIE defines the library data it copies in (`stdout` through
/// `R_X86_64_COPY`) in its own dynamic symbol table; those are imports, not exports.
fn exports(image: &Image<'_>) -> BTreeSet<String> {
    let copied: BTreeSet<u64> = image
        .relocations
        .iter()
        .filter(|r| r.kind == RelocationType::ELF_COPY)
        .map(|r| r.rva)
        .collect();
    image
        .exports
        .iter()
        .filter(|e| !copied.contains(&e.rva))
        .map(|e| e.name.clone())
        .collect()
}

pub(super) fn export_added(context: &BinaryContext<'_>) -> Vec<Finding> {
    let (old, new) = (
        exports(context.subject.baseline),
        exports(context.subject.fixed),
    );
    let added: Vec<String> = new.difference(&old).cloned().collect();
    if added.is_empty() {
        return Vec::new();
    }
    vec![finding(
        &codes::EXPORT_ADDED,
        None,
        format!(
            "the fixed build exports {} that the baseline does not",
            added.join(", ")
        ),
        &[("exports", added.join(", "))],
    )]
}

pub(super) fn export_removed(context: &BinaryContext<'_>) -> Vec<Finding> {
    let (old, new) = (
        exports(context.subject.baseline),
        exports(context.subject.fixed),
    );
    let removed: Vec<String> = old.difference(&new).cloned().collect();
    if removed.is_empty() {
        return Vec::new();
    }
    vec![finding(
        &codes::EXPORT_REMOVED,
        None,
        format!(
            "the baseline exports {} that the fixed build does not",
            removed.join(", ")
        ),
        &[("exports", removed.join(", "))],
    )]
}

pub(super) fn new_import(context: &BinaryContext<'_>) -> Vec<Finding> {
    let imports = |image: &Image<'_>| {
        image
            .imports
            .iter()
            .map(|i| format!("{}!{}", i.library.to_ascii_lowercase(), i.name))
            .collect::<BTreeSet<_>>()
    };
    let new_imports: Vec<String> = imports(context.subject.fixed)
        .difference(&imports(context.subject.baseline))
        .cloned()
        .collect();
    if new_imports.is_empty() {
        return Vec::new();
    }
    vec![finding(
        &codes::NEW_IMPORT,
        None,
        format!(
            "the fixed build imports {} that the baseline does not",
            new_imports.join(", ")
        ),
        &[("imports", new_imports.join(", "))],
    )]
}

pub(super) fn toolchain_changed(context: &BinaryContext<'_>) -> Vec<Finding> {
    let producers = |image: &Image<'_>| image.producers.iter().cloned().collect::<BTreeSet<_>>();
    let (old, new) = (
        producers(context.subject.baseline),
        producers(context.subject.fixed),
    );
    if old == new {
        return Vec::new();
    }
    let only_old: Vec<String> = old.difference(&new).cloned().collect();
    let only_new: Vec<String> = new.difference(&old).cloned().collect();
    vec![finding(
        &codes::TOOLCHAIN_CHANGED,
        None,
        "the builds were made with different compilers or compiler options".to_owned(),
        &[
            ("only_baseline", only_old.join("\n")),
            ("only_fixed", only_new.join("\n")),
        ],
    )]
}

pub(super) fn resources_changed(context: &BinaryContext<'_>) -> Vec<Finding> {
    let resources = |image: &Image<'_>| {
        image
            .sections
            .iter()
            .find(|s| s.name == ".rsrc")
            .map(|s| s.sha256.clone().unwrap_or_default())
    };
    let (old, new) = (
        resources(context.subject.baseline),
        resources(context.subject.fixed),
    );
    if old == new {
        return Vec::new();
    }
    vec![finding(
        &codes::RESOURCES_CHANGED,
        None,
        "the resources (.rsrc) differ".to_owned(),
        &[
            ("baseline_sha256", old.unwrap_or_default()),
            ("fixed_sha256", new.unwrap_or_default()),
        ],
    )]
}

pub(super) fn patch_limit_exceeded(context: &BinaryContext<'_>) -> Vec<Finding> {
    let diff = context.subject.diff;
    let limits_config = &context.policy.limits;
    let patched = diff.changed.len() + diff.added.len();
    let payload: u64 = diff
        .changed
        .iter()
        .map(|c| c.fixed_size)
        .chain(diff.added.iter().map(|a| a.size))
        .sum();
    let mut limits = BTreeMap::new();
    if let Some(max) = limits_config.max_functions.filter(|&max| patched > max) {
        limits.insert("functions", format!("{patched} > {max}"));
    }
    if let Some(max) = limits_config.max_payload_bytes.filter(|&max| payload > max) {
        limits.insert("payload_bytes", format!("{payload} > {max}"));
    }
    if limits.is_empty() {
        return Vec::new();
    }
    let evidence: Vec<(&str, String)> = limits.iter().map(|(k, v)| (*k, v.clone())).collect();
    vec![finding(
        &codes::PATCH_LIMIT_EXCEEDED,
        None,
        format!(
            "the patch exceeds the policy's limits ({})",
            limits
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        &evidence,
    )]
}
