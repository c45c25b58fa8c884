//! Detectors about how a function is entered and how long it stays active: code that already
//! ran once (HP0301), program entries (HP0303), entries too short for a redirect (HP0501),
//! bodies shared by folded names (HP0502) and loops that never leave the function (HP0801).

use super::{FunctionContext, cfg, code::listing_line, finding};
use crate::Finding;
use crate::codes;
use hotpatch_diff::code::Instruction;

/// The smallest redirect: `jmp rel32`.
const REDIRECT_LEN: u64 = 5;
/// A short jump from the entry back into the padding.
const SHORT_JUMP_LEN: u8 = 2;

/// Program entries whose activation outlives any patch.
const ALWAYS_ACTIVE_NAMES: &[&str] = &[
    "main",
    "wmain",
    "WinMain",
    "wWinMain",
    "DllMain",
    "mainCRTStartup",
    "WinMainCRTStartup",
    "_start",
];

pub(super) fn initializer_changed(context: &FunctionContext<'_>) -> Option<Finding> {
    let function = context.baseline_function?;
    let slots: Vec<String> = context
        .binary
        .subject
        .baseline
        .initializers
        .iter()
        .filter(|init| init.target_rva == function.rva)
        .map(|init| format!("{} slot {:#x}", init.table, init.slot_rva))
        .collect();
    if slots.is_empty() {
        return None;
    }
    Some(finding(
        &codes::INITIALIZER_CHANGED,
        Some(context.name()),
        format!(
            "{} runs once at start-up (it is listed in {}), so it already ran",
            context.display(),
            slots.join(", ")
        ),
        &[("slots", slots.join(", "))],
    ))
}

pub(super) fn always_active(context: &FunctionContext<'_>) -> Option<Finding> {
    let function = context.baseline_function?;
    let (name, display) = (context.name(), context.display());
    let is_entry = context
        .binary
        .subject
        .baseline
        .entry_point
        .is_some_and(|entry| entry >= function.rva && entry < function.end());
    let named = ALWAYS_ACTIVE_NAMES.contains(&display) || ALWAYS_ACTIVE_NAMES.contains(&name);
    let by_policy = context
        .binary
        .policy
        .always_active
        .iter()
        .any(|listed| listed == name || listed == display);
    if !(is_entry || named || by_policy) {
        return None;
    }
    let why = if by_policy {
        "the policy names it as active for the life of the process"
    } else {
        "it is a program entry whose activation outlives any patch"
    };
    Some(finding(
        &codes::ALWAYS_ACTIVE,
        Some(name),
        format!("{display} changed, and {why}"),
        &[("function", display.to_owned())],
    ))
}

pub(super) fn function_too_short(context: &FunctionContext<'_>) -> Option<Finding> {
    let function = context.baseline_function?;
    let padded = function.padding_before >= REDIRECT_LEN
        && function
            .first_instruction_len
            .is_some_and(|len| len >= SHORT_JUMP_LEN);
    if function.size >= REDIRECT_LEN || padded {
        return None;
    }
    Some(finding(
        &codes::FUNCTION_TOO_SHORT,
        Some(context.name()),
        format!(
            "{} is {} bytes long, shorter than a {REDIRECT_LEN}-byte jump, and has {} bytes of padding before it",
            context.display(),
            function.size,
            function.padding_before
        ),
        &[
            ("size", function.size.to_string()),
            ("padding_before", function.padding_before.to_string()),
            (
                "first_instruction_len",
                function
                    .first_instruction_len
                    .map(|l| l.to_string())
                    .unwrap_or_default(),
            ),
        ],
    ))
}

pub(super) fn folded_function(context: &FunctionContext<'_>) -> Option<Finding> {
    let function = context.baseline_function?;
    if function.aliases.is_empty() {
        return None;
    }
    Some(finding(
        &codes::FOLDED_FUNCTION,
        Some(context.name()),
        format!(
            "identical code folding gave the body of {} {} other name(s) in the running code; redirecting it changes them too",
            context.display(),
            function.aliases.len()
        ),
        &[
            ("aliases", function.alias_display_names.join(", ")),
            ("alias_symbols", function.aliases.join(", ")),
        ],
    ))
}

pub(super) fn endless_loop(context: &FunctionContext<'_>) -> Option<Finding> {
    // The running invocation executes the baseline code; new calls run the fixed code.
    let subject = context.binary.subject;
    let (build, position) = [
        ("baseline", &context.changed.baseline_code, subject.baseline),
        ("fixed", &context.changed.fixed_code, subject.fixed),
    ]
    .into_iter()
    .find_map(|(build, code, image)| {
        let never_returns = |instruction: &Instruction| cfg::call_never_returns(instruction, image);
        cfg::endless_loop(code, &never_returns).map(|position| (build, position))
    })?;
    let instruction = match build {
        "baseline" => context
            .changed
            .baseline_code
            .get(position)
            .map(|i| i.render())
            .unwrap_or_default(),
        _ => listing_line(context, position),
    };
    Some(finding(
        &codes::NEVER_RETURNS,
        Some(context.name()),
        format!(
            "{} holds a loop with no path out of the function: a call that enters it stays active for the life of the process and never sees the redirect",
            context.display()
        ),
        &[
            ("build", build.to_owned()),
            ("loop_instruction", instruction),
        ],
    ))
}
