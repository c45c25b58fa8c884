//! Detectors that record what the patch replaces, adds or leaves alone: every replaced
//! function (HP0010), every added function (HP0011) and every line-only change (HP0012).

use super::{BinaryContext, FunctionContext, finding};
use crate::Finding;
use crate::codes;

pub(super) fn function_replaced(context: &FunctionContext<'_>) -> Option<Finding> {
    let changed = context.changed;
    let causes: Vec<String> = changed
        .causes
        .iter()
        .map(|cause| cause.describe())
        .collect();
    let mut evidence = vec![
        ("baseline_rva", format!("{:#x}", changed.baseline_rva)),
        ("fixed_rva", format!("{:#x}", changed.fixed_rva)),
        ("baseline_size", changed.baseline_size.to_string()),
        ("fixed_size", changed.fixed_size.to_string()),
        ("causes", causes.join("; ")),
    ];
    if let Some(first) = &changed.first_difference {
        evidence.push((
            "first_difference",
            format!("- {}\n+ {}", first.baseline, first.fixed),
        ));
    }
    Some(finding(
        &codes::FUNCTION_REPLACED,
        Some(context.name()),
        format!(
            "{} changed ({}); its entry is redirected to the new code",
            context.display(),
            causes.join("; ")
        ),
        &evidence,
    ))
}

pub(super) fn function_added(context: &BinaryContext<'_>) -> Vec<Finding> {
    context
        .subject
        .diff
        .added
        .iter()
        .map(|added| {
            finding(
                &codes::FUNCTION_ADDED,
                Some(&added.name),
                format!("{} is new; the payload carries it", added.display_name),
                &[
                    ("rva", format!("{:#x}", added.rva)),
                    ("size", added.size.to_string()),
                ],
            )
        })
        .collect()
}

pub(super) fn line_only(context: &BinaryContext<'_>) -> Vec<Finding> {
    context
        .subject
        .diff
        .line_only
        .iter()
        .map(|line_only| {
            finding(
                &codes::LINE_ONLY,
                Some(&line_only.name),
                format!(
                    "{} differs only in line-number constants (moved {:+} lines); it is not replaced",
                    line_only.name, line_only.line_delta
                ),
                &[("line_delta", line_only.line_delta.to_string())],
            )
        })
        .collect()
}
