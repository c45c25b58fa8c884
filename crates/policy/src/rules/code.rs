//! Detectors that read a changed function's new code: undecodable bytes (HP0001), references
//! the engine cannot name (HP0002), thread-local storage (HP0201), indirect branches it cannot
//! resolve (HP0601), exception handling (HP0701) and inline assembly (HP1101).

use super::{FunctionContext, callee_name, finding, is_thread_local};
use crate::Finding;
use crate::codes;
use hotpatch_diff::code::{Flow, Memory, Operand, Target, Value};

/// Calls into the exception runtime that mean a function has handlers or cleanups.
const EXCEPTION_RUNTIME: &[&str] = &[
    "__cxa_throw",
    "__cxa_begin_catch",
    "__cxa_end_catch",
    "__cxa_rethrow",
    "_Unwind_Resume",
    "__CxxFrameHandler",
    "__CxxThrowException",
    "_CxxThrowException",
    "__C_specific_handler",
    "__gxx_personality",
];

pub(super) fn unmodeled_instruction(context: &FunctionContext<'_>) -> Option<Finding> {
    let (position, bad) = context
        .changed
        .fixed_code
        .iter()
        .enumerate()
        .find(|(_, i)| i.flow == Flow::Invalid)?;
    Some(finding(
        &codes::UNMODELED_INSTRUCTION,
        Some(context.name()),
        format!(
            "{} contains bytes that do not decode as x86-64 instructions",
            context.display()
        ),
        &[
            ("instruction", listing_line(context, position)),
            ("rva", format!("{:#x}", bad.rva)),
            ("bytes", format!("{:02x?}", bad.undecodable)),
        ],
    ))
}

pub(super) fn unresolved_reference(context: &FunctionContext<'_>) -> Option<Finding> {
    let (position, reference) =
        context
            .changed
            .fixed_code
            .iter()
            .enumerate()
            .find_map(|(position, instruction)| {
                instruction
                    .references()
                    .find(|reference| reference.target.is_unresolved())
                    .map(|reference| (position, reference))
            })?;
    Some(finding(
        &codes::UNRESOLVED_REFERENCE,
        Some(context.name()),
        format!(
            "{} refers to an address that is no known function, symbol, import or constant",
            context.display()
        ),
        &[
            ("instruction", listing_line(context, position)),
            ("target_rva", format!("{:#x}", reference.rva)),
            ("target", reference.target.render()),
        ],
    ))
}

pub(super) fn tls_accessed(context: &FunctionContext<'_>) -> Option<Finding> {
    let fixed = context.binary.subject.fixed;
    let position = context.changed.fixed_code.iter().position(|instruction| {
        matches!(instruction.segment(), Some("fs" | "gs"))
            || instruction
                .references()
                .any(|reference| is_thread_local(&reference.target, fixed))
    })?;
    Some(finding(
        &codes::TLS_ACCESSED,
        Some(context.name()),
        format!("{} reads or writes thread-local storage", context.display()),
        &[("instruction", listing_line(context, position))],
    ))
}

pub(super) fn unresolved_indirect_branch(context: &FunctionContext<'_>) -> Option<Finding> {
    let code = &context.changed.fixed_code;
    let has_jump_table = code.iter().any(|instruction| {
        instruction
            .references()
            .any(|reference| matches!(reference.target, Target::JumpTable(_)))
    });
    if has_jump_table {
        return None;
    }
    // A jump through a register or through memory addressed by registers; a jump through an
    // import slot, a GOT slot or a named pointer is a tail call through that pointer.
    let position = code.iter().position(|instruction| {
        instruction.flow == Flow::IndirectJump
            && instruction.operands.iter().any(|operand| match operand {
                Operand::Register { .. } => true,
                Operand::Memory(Memory { displacement, .. }) => match displacement {
                    Value::Constant { .. } => true,
                    Value::Address { reference } => !matches!(
                        reference.target,
                        Target::Import { .. }
                            | Target::Slot { .. }
                            | Target::SymbolSlot { .. }
                            | Target::Data { .. }
                    ),
                },
                _ => false,
            })
    })?;
    Some(finding(
        &codes::UNRESOLVED_INDIRECT_BRANCH,
        Some(context.name()),
        format!(
            "{} jumps through a register or memory the engine cannot resolve",
            context.display()
        ),
        &[("instruction", listing_line(context, position))],
    ))
}

pub(super) fn exception_handling_changed(context: &FunctionContext<'_>) -> Option<Finding> {
    // An MSVC exception funclet (`dtor$N`, `catch$N`) belongs to its parent's unwind tables: a
    // change in it is a change of the parent's exception handling.
    let fixed = context.binary.subject.fixed;
    if let Some(parent) = fixed
        .functions
        .get(context.changed.fixed_index)
        .and_then(|f| f.parent.as_deref())
    {
        // Text names the parent by its readable name; the evidence keeps the decorated one too.
        let parent_display = fixed
            .functions
            .iter()
            .find(|f| f.name == parent)
            .map_or(parent, |f| f.display_name.as_str());
        return Some(finding(
            &codes::EXCEPTION_HANDLING_CHANGED,
            Some(context.name()),
            format!(
                "{} is an exception funclet of {parent_display}; its unwind tables cannot be registered for a payload",
                context.display()
            ),
            &[
                ("parent", parent_display.to_owned()),
                ("parent_symbol", parent.to_owned()),
            ],
        ));
    }
    let position = context.changed.fixed_code.iter().position(|instruction| {
        matches!(
            instruction.flow,
            Flow::Call | Flow::Jump | Flow::IndirectCall | Flow::IndirectJump
        ) && instruction.references().any(|reference| {
            callee_name(&reference.target).is_some_and(|name| {
                EXCEPTION_RUNTIME
                    .iter()
                    .any(|runtime| name.contains(runtime))
            })
        })
    })?;
    Some(finding(
        &codes::EXCEPTION_HANDLING_CHANGED,
        Some(context.name()),
        format!(
            "{} has exception handlers or cleanups, whose unwind tables the payload cannot register",
            context.display()
        ),
        &[("instruction", listing_line(context, position))],
    ))
}

pub(super) fn inline_assembly(context: &FunctionContext<'_>) -> Option<Finding> {
    let position = context
        .changed
        .fixed_code
        .iter()
        .position(|instruction| instruction.system)?;
    Some(finding(
        &codes::INLINE_ASSEMBLY,
        Some(context.name()),
        format!(
            "{} contains an instruction compilers do not emit for C code",
            context.display()
        ),
        &[("instruction", listing_line(context, position))],
    ))
}

/// The new code's instruction at `position`, rendered for evidence.
pub(super) fn listing_line(context: &FunctionContext<'_>, position: usize) -> String {
    context
        .changed
        .fixed_code
        .get(position)
        .map(|i| i.render())
        .unwrap_or_default()
}
