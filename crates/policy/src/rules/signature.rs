//! Detectors for changed function types: an exported function's (HP0404), whose callers in
//! other modules pass the old arguments, and any other function's (HP0405).

use super::{FunctionContext, finding};
use crate::Finding;
use crate::codes::{self, Rule};
use hotpatch_diff::Cause;

pub(super) fn exported_signature_changed(context: &FunctionContext<'_>) -> Option<Finding> {
    signature_finding(context, true, &codes::EXPORTED_SIGNATURE_CHANGED)
}

pub(super) fn signature_changed(context: &FunctionContext<'_>) -> Option<Finding> {
    signature_finding(context, false, &codes::SIGNATURE_CHANGED)
}

fn signature_finding(
    context: &FunctionContext<'_>,
    want_exported: bool,
    rule: &Rule,
) -> Option<Finding> {
    let (baseline, fixed) = context
        .changed
        .causes
        .iter()
        .find_map(|cause| match cause {
            Cause::SignatureChanged { baseline, fixed } => Some((baseline, fixed)),
            _ => None,
        })?;
    let exported = context
        .binary
        .subject
        .fixed
        .exports
        .iter()
        .any(|e| e.name == context.name() || e.name == context.display());
    if exported != want_exported {
        return None;
    }
    Some(finding(
        rule,
        Some(context.name()),
        format!(
            "the type of {} changed from {baseline} to {fixed}{}",
            context.display(),
            if exported {
                "; other modules call it with the old arguments"
            } else {
                ""
            }
        ),
        &[
            ("baseline_signature", baseline.clone()),
            ("fixed_signature", fixed.clone()),
        ],
    ))
}
