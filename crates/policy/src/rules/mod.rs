//! The detection half of the catalogue: one detector per rule, each in the file of its family,
//! registered in [`DETECTORS`]. Detectors read the diff's typed code (control flow, typed
//! references) and the two image models; none reads listing text. The text of each rule (why,
//! remedy) lives in `codes.rs`.

mod binary;
mod cfg;
mod change;
mod code;
mod data;
mod entry;
mod signature;

use crate::codes::Rule;
use crate::{Finding, Policy, Subject};
use hotpatch_diff::code::Target;
use hotpatch_diff::{ChangedFunction, canonical_name};
use hotpatch_image::{DataKind, Function, Image};
use std::collections::BTreeSet;

/// What a detector runs on.
pub(crate) enum Detector {
    /// Runs once per changed function.
    Function(fn(&FunctionContext<'_>) -> Option<Finding>),
    /// Runs once per binary.
    Binary(fn(&BinaryContext<'_>) -> Vec<Finding>),
    /// Fired by a later stage (lifting) through [`crate::add_stage_finding`].
    LaterStage,
}

/// Every detector with the rule it fires. A test checks that each rule of the catalogue has
/// exactly one.
pub(crate) const DETECTORS: &[(&Rule, Detector)] = &[
    (
        &crate::codes::UNMODELED_INSTRUCTION,
        Detector::Function(code::unmodeled_instruction),
    ),
    (
        &crate::codes::UNRESOLVED_REFERENCE,
        Detector::Function(code::unresolved_reference),
    ),
    (
        &crate::codes::INCOMPLETE_DEBUG_INFO,
        Detector::Binary(binary::incomplete_debug_info),
    ),
    (
        &crate::codes::FUNCTION_REPLACED,
        Detector::Function(change::function_replaced),
    ),
    (
        &crate::codes::FUNCTION_ADDED,
        Detector::Binary(change::function_added),
    ),
    (
        &crate::codes::LINE_ONLY,
        Detector::Binary(change::line_only),
    ),
    (
        &crate::codes::DATA_LAYOUT_CHANGED,
        Detector::Binary(data::data_layout_changed),
    ),
    (
        &crate::codes::WRITABLE_DATA_CHANGED,
        Detector::Binary(data::writable_data_changed),
    ),
    (
        &crate::codes::DATA_RESIZED,
        Detector::Binary(data::data_resized),
    ),
    (
        &crate::codes::READ_ONLY_CONSTANT_CHANGED,
        Detector::Binary(data::read_only_constant_changed),
    ),
    (
        &crate::codes::DATA_ADDED,
        Detector::Binary(data::data_added),
    ),
    (
        &crate::codes::TLS_ACCESSED,
        Detector::Function(code::tls_accessed),
    ),
    (
        &crate::codes::TLS_CHANGED,
        Detector::Binary(data::tls_changed),
    ),
    (
        &crate::codes::INITIALIZER_CHANGED,
        Detector::Function(entry::initializer_changed),
    ),
    (
        &crate::codes::ALWAYS_ACTIVE,
        Detector::Function(entry::always_active),
    ),
    (
        &crate::codes::EXPORT_ADDED,
        Detector::Binary(binary::export_added),
    ),
    (
        &crate::codes::EXPORT_REMOVED,
        Detector::Binary(binary::export_removed),
    ),
    (
        &crate::codes::NEW_IMPORT,
        Detector::Binary(binary::new_import),
    ),
    (
        &crate::codes::EXPORTED_SIGNATURE_CHANGED,
        Detector::Function(signature::exported_signature_changed),
    ),
    (
        &crate::codes::SIGNATURE_CHANGED,
        Detector::Function(signature::signature_changed),
    ),
    (
        &crate::codes::FUNCTION_TOO_SHORT,
        Detector::Function(entry::function_too_short),
    ),
    (
        &crate::codes::FOLDED_FUNCTION,
        Detector::Function(entry::folded_function),
    ),
    (
        &crate::codes::UNRESOLVED_INDIRECT_BRANCH,
        Detector::Function(code::unresolved_indirect_branch),
    ),
    (
        &crate::codes::EXCEPTION_HANDLING_CHANGED,
        Detector::Function(code::exception_handling_changed),
    ),
    (
        &crate::codes::NEVER_RETURNS,
        Detector::Function(entry::endless_loop),
    ),
    (
        &crate::codes::TOOLCHAIN_CHANGED,
        Detector::Binary(binary::toolchain_changed),
    ),
    (
        &crate::codes::STATIC_LOCAL_UNTIED,
        Detector::Function(data::static_local_untied),
    ),
    (
        &crate::codes::INLINE_ASSEMBLY,
        Detector::Function(code::inline_assembly),
    ),
    (
        &crate::codes::RESOURCES_CHANGED,
        Detector::Binary(binary::resources_changed),
    ),
    (
        &crate::codes::VTABLE_CHANGED,
        Detector::Binary(data::vtable_changed),
    ),
    (&crate::codes::LIFT_UNSUPPORTED, Detector::LaterStage),
    (
        &crate::codes::PATCH_LIMIT_EXCEEDED,
        Detector::Binary(binary::patch_limit_exceeded),
    ),
];

/// Builds a finding of `rule`.
pub(crate) fn finding(
    rule: &Rule,
    function: Option<&str>,
    reason: String,
    evidence: &[(&str, String)],
) -> Finding {
    Finding {
        rule: rule.id,
        name: rule.name,
        severity: rule.severity,
        function: function.map(str::to_owned),
        reason,
        evidence: evidence
            .iter()
            .map(|(key, value)| ((*key).to_owned(), value.clone()))
            .collect(),
        remedy: rule.remedy,
        waived: None,
    }
}

/// The whole binary: the subject, the policy and symbol sets built once.
pub(crate) struct BinaryContext<'a> {
    pub subject: &'a Subject<'a>,
    pub policy: &'a Policy,
    pub symbols: SymbolSets,
}

/// One changed function inside its binary.
pub(crate) struct FunctionContext<'a> {
    pub binary: &'a BinaryContext<'a>,
    pub changed: &'a ChangedFunction,
    /// The baseline function, when the model has it at the recorded RVA.
    pub baseline_function: Option<&'a Function<'a>>,
}

impl FunctionContext<'_> {
    pub fn name(&self) -> &str {
        &self.changed.name
    }

    pub fn display(&self) -> &str {
        &self.changed.display_name
    }
}

/// Symbol sets every function rule consults, built once per binary.
pub(crate) struct SymbolSets {
    /// Canonical names of every data symbol in the baseline.
    pub baseline_data: BTreeSet<String>,
    /// Function-scoped statics of the fixed build: (symbol name, canonical name).
    pub fixed_static_locals: Vec<(String, String)>,
}

impl SymbolSets {
    fn new(subject: &Subject<'_>) -> Self {
        SymbolSets {
            baseline_data: subject
                .baseline
                .data_symbols
                .iter()
                .map(|d| canonical_name(&d.name))
                .collect(),
            fixed_static_locals: subject
                .fixed
                .data_symbols
                .iter()
                .filter(|d| is_static_local(&d.name))
                .map(|d| (d.name.clone(), canonical_name(&d.name)))
                .collect(),
        }
    }
}

/// A function-scoped static: PDB writes `function::name`, GCC numbers them `name.N`. Versioned
/// library symbols (`stdout@GLIBC_2.2.5`, copied in by the linker) end in numbers too; they are
/// imports, not statics.
fn is_static_local(name: &str) -> bool {
    if name.contains('@') {
        return false;
    }
    name.contains("::")
        || name
            .rsplit_once('.')
            .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

pub(crate) fn evaluate(subject: &Subject<'_>, policy: &Policy) -> Vec<Finding> {
    let binary = BinaryContext {
        subject,
        policy,
        symbols: SymbolSets::new(subject),
    };
    let mut findings = Vec::new();
    for changed in &subject.diff.changed {
        let context = FunctionContext {
            binary: &binary,
            changed,
            baseline_function: baseline_function(subject.baseline, changed),
        };
        for (_, detector) in DETECTORS {
            if let Detector::Function(detect) = detector {
                findings.extend(detect(&context));
            }
        }
    }
    for (_, detector) in DETECTORS {
        if let Detector::Binary(detect) = detector {
            findings.extend(detect(&binary));
        }
    }
    findings
}

fn baseline_function<'a>(
    image: &'a Image<'a>,
    changed: &ChangedFunction,
) -> Option<&'a Function<'a>> {
    image.functions.get(changed.baseline_index).filter(|f| {
        f.rva == changed.baseline_rva
            && (f.name == changed.name || f.aliases.contains(&changed.name))
    })
}

/// Whether `changed`'s new code refers to the data symbol named `symbol` (canonical name).
pub(crate) fn uses_data(changed: &ChangedFunction, symbol: &str) -> bool {
    changed
        .fixed_code
        .iter()
        .flat_map(|i| i.references())
        .any(|reference| refers_to_data(&reference.target, symbol))
}

fn refers_to_data(target: &Target, symbol: &str) -> bool {
    match target {
        Target::Data { name, .. } => **name == *symbol,
        Target::Slot { pointee } => refers_to_data(pointee, symbol),
        _ => false,
    }
}

/// Whether a data symbol of the fixed build is thread-local (or the PE TLS index).
pub(crate) fn is_thread_local(target: &Target, fixed: &Image<'_>) -> bool {
    match target {
        Target::Data {
            data_kind, index, ..
        } => {
            *data_kind == DataKind::ThreadLocal
                || fixed
                    .data_symbols
                    .get(*index)
                    .is_some_and(|d| d.name == "_tls_index")
        }
        Target::Slot { pointee } => is_thread_local(pointee, fixed),
        _ => false,
    }
}

/// The symbol a call or jump goes to: a function, an import, or either behind a stub or slot.
pub(crate) fn callee_name(target: &Target) -> Option<&str> {
    match target {
        Target::Function { name, .. } => Some(name),
        // PE import slots carry `__imp_` public symbols.
        Target::Data { name, .. } => Some(name),
        Target::Import { name, .. } => Some(name),
        Target::SymbolSlot { symbol, .. } => Some(symbol),
        Target::Stub { slot } => callee_name(slot),
        Target::Slot { pointee } => callee_name(pointee),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
