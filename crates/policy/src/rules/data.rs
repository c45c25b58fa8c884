//! Detectors about data: changed type layouts (HP0101), writable initial values (HP0102),
//! resized or retyped data (HP0103), read-only constants (HP0104), added data (HP0105), the
//! thread-local block (HP0202), static locals with no storage in the running code (HP1001) and
//! vtables or RTTI (HP1301).

use super::{BinaryContext, FunctionContext, finding, uses_data};
use crate::Finding;
use crate::codes;
use hotpatch_diff::{DataChangeKind, FieldChange, UserStatus};
use hotpatch_image::{DataKind, Image};

/// One finding per changed (or added) function that uses a re-laid-out type through its
/// parameters or locals (or through the fields of theirs: `p->q->field`), so that each such function carries the reboot; a changed type that no
/// replaced code uses still blocks the binary, with one finding that lists its users.
pub(super) fn data_layout_changed(context: &BinaryContext<'_>) -> Vec<Finding> {
    let mut findings = Vec::new();
    for layout in &context.subject.diff.types {
        let fields: Vec<String> = layout.fields.iter().map(FieldChange::describe).collect();
        let sizes = format!("{} -> {} bytes", layout.baseline_size, layout.fixed_size);
        let summary = if fields.is_empty() {
            sizes.clone()
        } else {
            format!("{sizes}: {}", fields.join("; "))
        };
        // (name, display name, the aggregate it reaches the type through).
        let mut replaced: Vec<(&str, &str, Option<&str>)> = layout
            .users
            .iter()
            .filter(|user| matches!(user.status, UserStatus::Changed | UserStatus::Added))
            .map(|user| {
                (
                    user.name.as_str(),
                    user.display_name.as_str(),
                    user.through.as_deref(),
                )
            })
            .collect();
        // A changed function whose code reaches a global of the type uses it too.
        let globals: Vec<&str> = data_changes(context)
            .filter(|(_, change)| {
                matches!(change, DataChangeKind::LayoutChanged { type_name } if *type_name == layout.name)
            })
            .map(|(changed, _)| changed.name.as_str())
            .collect();
        for changed in &context.subject.diff.changed {
            if !replaced.iter().any(|(name, _, _)| *name == changed.name)
                && globals.iter().any(|global| uses_data(changed, global))
            {
                replaced.push((&changed.name, &changed.display_name, None));
            }
        }
        replaced.sort_unstable();
        let list = |users: &[(&str, &str, Option<&str>)]| {
            users
                .iter()
                .map(|(_, display, through)| match through {
                    Some(through) => format!("{display} (through {through})"),
                    None => (*display).to_owned(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let unchanged: Vec<(&str, &str, Option<&str>)> = layout
            .users
            .iter()
            .filter(|user| user.status == UserStatus::Unchanged)
            .filter(|user| !replaced.iter().any(|(name, _, _)| *name == user.name))
            .map(|user| {
                (
                    user.name.as_str(),
                    user.display_name.as_str(),
                    user.through.as_deref(),
                )
            })
            .collect();
        let mut evidence = vec![
            ("type", layout.name.clone()),
            ("size", sizes.clone()),
            ("fields", fields.join("\n")),
        ];
        if !unchanged.is_empty() {
            evidence.push(("unchanged_users", list(&unchanged)));
        }
        if replaced.is_empty() {
            findings.push(finding(
                &codes::DATA_LAYOUT_CHANGED,
                None,
                format!(
                    "the layout of {} changed ({summary}); objects in the running process keep the old layout",
                    layout.name
                ),
                &evidence,
            ));
            continue;
        }
        evidence.push(("replaced_users", list(&replaced)));
        for (name, display, through) in &replaced {
            let message = match through {
                Some(through) => format!(
                    "{display} reaches {} through the fields of {through}, which one of its parameters or local variables is or points to, and its layout changed ({summary}); objects in the running process keep the old layout",
                    layout.name
                ),
                None => format!(
                    "{display} uses {} (a parameter, local variable or global of that type, or a pointer to one), and its layout changed ({summary}); objects in the running process keep the old layout",
                    layout.name
                ),
            };
            findings.push(finding(
                &codes::DATA_LAYOUT_CHANGED,
                Some(name),
                message,
                &evidence,
            ));
        }
    }
    findings
}

/// Every (symbol, change) of the data diff.
fn data_changes<'a>(
    context: &'a BinaryContext<'_>,
) -> impl Iterator<Item = (&'a hotpatch_diff::DataChange, &'a DataChangeKind)> {
    context
        .subject
        .diff
        .data
        .changed
        .iter()
        .flat_map(|changed| changed.changes.iter().map(move |change| (changed, change)))
}

/// The data symbols whose initial value changed.
fn initial_values_changed<'a>(
    context: &'a BinaryContext<'_>,
) -> impl Iterator<Item = &'a hotpatch_diff::DataChange> {
    data_changes(context)
        .filter(|(_, change)| **change == DataChangeKind::InitialValueChanged)
        .map(|(changed, _)| changed)
}

pub(super) fn writable_data_changed(context: &BinaryContext<'_>) -> Vec<Finding> {
    initial_values_changed(context)
        .filter(|changed| changed.kind != DataKind::ReadOnly)
        .map(|changed| {
            finding(
                &codes::WRITABLE_DATA_CHANGED,
                None,
                format!(
                    "the initial value of {} changed, but the running process keeps the value it has",
                    changed.name
                ),
                &[
                    ("symbol", changed.name.clone()),
                    ("kind", format!("{:?}", changed.kind)),
                ],
            )
        })
        .collect()
}

pub(super) fn read_only_constant_changed(context: &BinaryContext<'_>) -> Vec<Finding> {
    initial_values_changed(context)
        .filter(|changed| changed.kind == DataKind::ReadOnly)
        .map(|changed| {
            finding(
                &codes::READ_ONLY_CONSTANT_CHANGED,
                None,
                format!(
                    "the read-only constant {} changed; the payload carries the new copy",
                    changed.name
                ),
                &[("symbol", changed.name.clone())],
            )
        })
        .collect()
}

pub(super) fn data_resized(context: &BinaryContext<'_>) -> Vec<Finding> {
    data_changes(context)
        .filter_map(|(changed, change)| match change {
            DataChangeKind::Resized { baseline, fixed } => Some(finding(
                &codes::DATA_RESIZED,
                None,
                format!(
                    "{} changed size from {baseline} to {fixed} bytes",
                    changed.name
                ),
                &[
                    ("symbol", changed.name.clone()),
                    ("baseline", baseline.to_string()),
                    ("fixed", fixed.to_string()),
                ],
            )),
            DataChangeKind::TypeChanged { baseline, fixed } => Some(finding(
                &codes::DATA_RESIZED,
                None,
                format!("{} changed type from {baseline} to {fixed}", changed.name),
                &[
                    ("symbol", changed.name.clone()),
                    ("baseline", baseline.clone()),
                    ("fixed", fixed.clone()),
                ],
            )),
            _ => None,
        })
        .collect()
}

pub(super) fn data_added(context: &BinaryContext<'_>) -> Vec<Finding> {
    context
        .subject
        .diff
        .data
        .added
        .iter()
        .filter(|added| added.kind != DataKind::ThreadLocal)
        .map(|added| {
            finding(
                &codes::DATA_ADDED,
                None,
                format!(
                    "{} is new ({} bytes, {:?})",
                    added.name, added.size, added.kind
                ),
                &[
                    ("symbol", added.name.clone()),
                    ("size", added.size.to_string()),
                ],
            )
        })
        .collect()
}

pub(super) fn tls_changed(context: &BinaryContext<'_>) -> Vec<Finding> {
    let diff = context.subject.diff;
    let mut findings: Vec<Finding> = diff
        .data
        .added
        .iter()
        .filter(|added| added.kind == DataKind::ThreadLocal)
        .map(|added| {
            finding(
                &codes::TLS_CHANGED,
                None,
                format!(
                    "{} is new ({} bytes, {:?})",
                    added.name, added.size, added.kind
                ),
                &[
                    ("symbol", added.name.clone()),
                    ("size", added.size.to_string()),
                ],
            )
        })
        .collect();
    findings.extend(
        diff.data
            .removed
            .iter()
            .filter(|d| d.kind == DataKind::ThreadLocal)
            .map(|removed| {
                finding(
                    &codes::TLS_CHANGED,
                    None,
                    format!("the thread-local {} was removed", removed.name),
                    &[("symbol", removed.name.clone())],
                )
            }),
    );
    let tls_size = |image: &Image<'_>| {
        image
            .tls
            .as_ref()
            .map(|t| (t.block_size, t.template_end - t.template_start))
    };
    let (baseline, fixed) = (context.subject.baseline, context.subject.fixed);
    if tls_size(baseline) != tls_size(fixed) {
        findings.push(finding(
            &codes::TLS_CHANGED,
            None,
            "the thread-local storage block changed size".to_owned(),
            &[
                ("baseline", format!("{:?}", tls_size(baseline))),
                ("fixed", format!("{:?}", tls_size(fixed))),
            ],
        ));
    }
    findings
}

pub(super) fn static_local_untied(context: &FunctionContext<'_>) -> Option<Finding> {
    let symbols = &context.binary.symbols;
    let untied: Vec<String> = symbols
        .fixed_static_locals
        .iter()
        .filter(|(_, canonical)| !symbols.baseline_data.contains(canonical))
        .filter(|(_, canonical)| uses_data(context.changed, canonical))
        .map(|(name, _)| name.clone())
        .collect();
    if untied.is_empty() {
        return None;
    }
    Some(finding(
        &codes::STATIC_LOCAL_UNTIED,
        Some(context.name()),
        format!(
            "{} uses static locals that the running code does not have: {}",
            context.display(),
            untied.join(", ")
        ),
        &[("statics", untied.join(", "))],
    ))
}

pub(super) fn vtable_changed(context: &BinaryContext<'_>) -> Vec<Finding> {
    let data = &context.subject.diff.data;
    let vtables: Vec<String> = data
        .added
        .iter()
        .chain(&data.removed)
        .map(|d| d.name.clone())
        .chain(data.changed.iter().map(|d| d.name.clone()))
        .filter(|name| is_vtable_or_rtti(name))
        .collect();
    if vtables.is_empty() {
        return Vec::new();
    }
    vec![finding(
        &codes::VTABLE_CHANGED,
        None,
        format!("vtables or RTTI records changed: {}", vtables.join(", ")),
        &[("symbols", vtables.join(", "))],
    )]
}

/// Vtables and RTTI by their Itanium (`_ZTV`, `_ZTI`, `_ZTS`) or MSVC (`??_7`, `??_R`) names;
/// `DW.ref.` wraps a reference to one.
fn is_vtable_or_rtti(name: &str) -> bool {
    let name = name.strip_prefix("DW.ref.").unwrap_or(name);
    ["_ZTV", "_ZTI", "_ZTS", "??_7", "??_R"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}
