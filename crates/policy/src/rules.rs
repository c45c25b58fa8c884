//! The detection half of each rule: what in the diff and the two image models makes it fire.
//! The text of each rule (why, remedy) lives in `codes.rs`.

use crate::codes::{self, Rule};
use crate::{Finding, Policy, Subject};
use hotpatch_diff::{ChangedFunction, DataChangeKind, canonical_name};
use hotpatch_image::{DataKind, Function, Image};
use std::collections::{BTreeMap, BTreeSet};

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

/// The registers a `jmp` can go through in 64-bit code.
const GENERAL_REGISTERS: &[&str] = &[
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];

/// Mnemonics compilers do not emit for C and C++ code: the mark of inline assembly.
const SYSTEM_MNEMONICS: &[&str] = &[
    "cpuid", "rdtsc", "rdtscp", "syscall", "sysenter", "int", "into", "cli", "sti", "hlt", "in",
    "out", "insb", "outsb", "rdmsr", "wrmsr", "lgdt", "lidt", "invlpg", "xgetbv", "xsetbv",
    "rdrand", "rdseed", "ud2",
];

fn finding(
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

pub(crate) fn evaluate(subject: &Subject<'_>, policy: &Policy) -> Vec<Finding> {
    let mut findings = Vec::new();
    let symbols = SymbolSets::new(subject);
    for changed in &subject.diff.changed {
        function_rules(subject, &symbols, changed, &mut findings);
    }
    for added in &subject.diff.added {
        findings.push(finding(
            &codes::FUNCTION_ADDED,
            Some(&added.name),
            format!("{} is new; the payload carries it", added.display_name),
            &[
                ("rva", format!("{:#x}", added.rva)),
                ("size", added.size.to_string()),
            ],
        ));
    }
    for line_only in &subject.diff.line_only {
        findings.push(finding(
            &codes::LINE_ONLY,
            Some(&line_only.name),
            format!(
                "{} differs only in line-number constants (moved {:+} lines); it is not replaced",
                line_only.name, line_only.line_delta
            ),
            &[("line_delta", line_only.line_delta.to_string())],
        ));
    }
    data_rules(subject, &mut findings);
    binary_rules(subject, policy, &mut findings);
    findings
}

fn baseline_function<'a>(
    image: &'a Image<'a>,
    changed: &ChangedFunction,
) -> Option<&'a Function<'a>> {
    image.functions.iter().find(|f| {
        f.rva == changed.baseline_rva
            && (f.name == changed.name || f.aliases.contains(&changed.name))
    })
}

/// Symbol sets every function rule consults, built once per binary rather than per changed
/// function. Names are written as the normalized listings write them (`$` and the canonical
/// name), so a reference test is a plain text match.
struct SymbolSets {
    /// Thread-local variables and the PE TLS index in the fixed build.
    thread_locals: BTreeSet<String>,
    /// Canonical names of every data symbol in the baseline.
    baseline_data: BTreeSet<String>,
    /// Function-scoped statics of the fixed build: (symbol name, `$canonical`).
    fixed_static_locals: Vec<(String, String)>,
}

impl SymbolSets {
    fn new(subject: &Subject<'_>) -> Self {
        SymbolSets {
            thread_locals: subject
                .fixed
                .data_symbols
                .iter()
                .filter(|d| d.kind == DataKind::ThreadLocal || d.name == "_tls_index")
                .map(|d| format!("${}", d.name))
                .collect(),
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

fn function_rules(
    subject: &Subject<'_>,
    symbols: &SymbolSets,
    changed: &ChangedFunction,
    findings: &mut Vec<Finding>,
) {
    let name = changed.name.as_str();
    let display = changed.display_name.as_str();
    let listing = &changed.fixed_listing;
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
    findings.push(finding(
        &codes::FUNCTION_REPLACED,
        Some(name),
        format!(
            "{display} changed ({}); its entry is redirected to the new code",
            causes.join("; ")
        ),
        &evidence,
    ));

    if let Some(bad) = listing.iter().find(|line| line.starts_with("(bad)")) {
        findings.push(finding(
            &codes::UNMODELED_INSTRUCTION,
            Some(name),
            format!("{display} contains bytes that do not decode as x86-64 instructions"),
            &[("instruction", bad.clone())],
        ));
    }
    let unresolved = listing.iter().find(|line| {
        ["abs:", "code:", "data:", "L?+", "?]"]
            .iter()
            .any(|mark| line.contains(mark))
    });
    if let Some(line) = unresolved {
        findings.push(finding(
            &codes::UNRESOLVED_REFERENCE,
            Some(name),
            format!("{display} refers to an address that is no known function, symbol, import or constant"),
            &[("instruction", line.clone())],
        ));
    }

    let tls_access = listing.iter().find(|line| {
        line.contains("fs:")
            || line.contains("gs:")
            || symbols
                .thread_locals
                .iter()
                .any(|tls| references(line, tls))
    });
    if let Some(line) = tls_access {
        findings.push(finding(
            &codes::TLS_ACCESSED,
            Some(name),
            format!("{display} reads or writes thread-local storage"),
            &[("instruction", line.clone())],
        ));
    }

    for cause in &changed.causes {
        if let hotpatch_diff::Cause::SignatureChanged { baseline, fixed } = cause {
            let exported = subject
                .fixed
                .exports
                .iter()
                .any(|e| e.name == changed.name || e.name == display);
            let rule = if exported {
                &codes::EXPORTED_SIGNATURE_CHANGED
            } else {
                &codes::SIGNATURE_CHANGED
            };
            findings.push(finding(
                rule,
                Some(name),
                format!(
                    "the type of {display} changed from {baseline} to {fixed}{}",
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
            ));
        }
    }

    let baseline_fn = baseline_function(subject.baseline, changed);
    if let Some(function) = baseline_fn {
        let slots: Vec<String> = subject
            .baseline
            .initializers
            .iter()
            .filter(|init| init.target_rva == function.rva)
            .map(|init| format!("{} slot {:#x}", init.table, init.slot_rva))
            .collect();
        if !slots.is_empty() {
            findings.push(finding(
                &codes::INITIALIZER_CHANGED,
                Some(name),
                format!(
                    "{display} runs once at start-up (it is listed in {}), so it already ran",
                    slots.join(", ")
                ),
                &[("slots", slots.join(", "))],
            ));
        }
        let is_entry = subject
            .baseline
            .entry_point
            .is_some_and(|entry| entry >= function.rva && entry < function.end());
        if is_entry || ALWAYS_ACTIVE_NAMES.contains(&display) || ALWAYS_ACTIVE_NAMES.contains(&name)
        {
            findings.push(finding(
                &codes::ALWAYS_ACTIVE,
                Some(name),
                format!("{display} is a program entry whose activation outlives any patch"),
                &[("function", display.to_owned())],
            ));
        }
        let padded = function.padding_before >= REDIRECT_LEN
            && function
                .first_instruction_len
                .is_some_and(|len| len >= SHORT_JUMP_LEN);
        if function.size < REDIRECT_LEN && !padded {
            findings.push(finding(
                &codes::FUNCTION_TOO_SHORT,
                Some(name),
                format!(
                    "{display} is {} bytes long, shorter than a {REDIRECT_LEN}-byte jump, and has {} bytes of padding before it",
                    function.size, function.padding_before
                ),
                &[
                    ("size", function.size.to_string()),
                    ("padding_before", function.padding_before.to_string()),
                    ("first_instruction_len", function.first_instruction_len.map(|l| l.to_string()).unwrap_or_default()),
                ],
            ));
        }
        if !function.aliases.is_empty() {
            findings.push(finding(
                &codes::FOLDED_FUNCTION,
                Some(name),
                format!(
                    "identical code folding gave the body of {display} {} other name(s) in the running code; redirecting it changes them too",
                    function.aliases.len()
                ),
                &[("aliases", function.aliases.join(", "))],
            ));
        }
    }

    let has_jump_table = listing.iter().any(|line| line.contains("jumptable["));
    let indirect_jump = listing
        .iter()
        .find(|line| is_indirect_jump(line) && !has_jump_table);
    if let Some(line) = indirect_jump {
        findings.push(finding(
            &codes::UNRESOLVED_INDIRECT_BRANCH,
            Some(name),
            format!("{display} jumps through a register or memory the engine cannot resolve"),
            &[("instruction", line.clone())],
        ));
    }

    let exception_call = listing.iter().find(|line| {
        (line.starts_with("call ") || line.starts_with("jmp "))
            && EXCEPTION_RUNTIME.iter().any(|f| line.contains(f))
    });
    if let Some(line) = exception_call {
        findings.push(finding(
            &codes::EXCEPTION_HANDLING_CHANGED,
            Some(name),
            format!("{display} has exception handlers or cleanups, whose unwind tables the payload cannot register"),
            &[("instruction", line.clone())],
        ));
    }

    let returns = listing
        .iter()
        .any(|line| line.starts_with("ret") || is_tail_jump(line));
    if !returns && !listing.is_empty() {
        findings.push(finding(
            &codes::NEVER_RETURNS,
            Some(name),
            format!("{display} has no return and no tail jump: it never returns"),
            &[(
                "last_instruction",
                listing.last().cloned().unwrap_or_default(),
            )],
        ));
    }

    let untied: Vec<String> = symbols
        .fixed_static_locals
        .iter()
        .filter(|(_, canonical)| !symbols.baseline_data.contains(canonical))
        .filter(|(_, canonical)| {
            listing
                .iter()
                .any(|line| references(line, &format!("${canonical}")))
        })
        .map(|(name, _)| name.clone())
        .collect();
    if !untied.is_empty() {
        findings.push(finding(
            &codes::STATIC_LOCAL_UNTIED,
            Some(name),
            format!(
                "{display} uses static locals that the running code does not have: {}",
                untied.join(", ")
            ),
            &[("statics", untied.join(", "))],
        ));
    }

    let system = listing.iter().find(|line| {
        let mnemonic = line
            .split_whitespace()
            .find(|word| !matches!(*word, "rep" | "repne" | "lock"))
            .unwrap_or("");
        SYSTEM_MNEMONICS.contains(&mnemonic)
    });
    if let Some(line) = system {
        findings.push(finding(
            &codes::INLINE_ASSEMBLY,
            Some(name),
            format!("{display} contains an instruction compilers do not emit for C code"),
            &[("instruction", line.clone())],
        ));
    }
}

/// Whether normalized `line` names the symbol `reference` (`$x`), not merely a prefix of it.
pub(crate) fn references(line: &str, reference: &str) -> bool {
    line.match_indices(reference).any(|(at, _)| {
        let next = line[at + reference.len()..].chars().next();
        !next.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// `jmp` through a register or non-RIP memory: `jmp rax`, `jmp qword [rax+rcx*8]`.
fn is_indirect_jump(line: &str) -> bool {
    let Some(operand) = line.strip_prefix("jmp ") else {
        return false;
    };
    let operand = operand.trim();
    let register = GENERAL_REGISTERS.contains(&operand);
    let memory_through_register = operand.contains('[')
        && !operand.contains("import:")
        && !operand.contains("slot:")
        && !operand.contains('$');
    register || memory_through_register
}

/// `jmp` to another function (a tail call) or through an import slot.
fn is_tail_jump(line: &str) -> bool {
    let Some(operand) = line.strip_prefix("jmp ") else {
        return false;
    };
    let operand = operand.trim();
    !operand.starts_with('L') && !operand.starts_with("jumptable") && !is_indirect_jump(line)
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

fn data_rules(subject: &Subject<'_>, findings: &mut Vec<Finding>) {
    let diff = subject.diff;
    for layout in &diff.types {
        findings.push(finding(
            &codes::DATA_LAYOUT_CHANGED,
            None,
            format!(
                "the layout of {} changed ({} -> {} bytes); objects in the running process keep the old layout",
                layout.name, layout.baseline_size, layout.fixed_size
            ),
            &[
                ("type", layout.name.clone()),
                ("baseline_layout", layout.baseline_layout.clone()),
                ("fixed_layout", layout.fixed_layout.clone()),
            ],
        ));
    }
    for changed in &diff.data.changed {
        for change in &changed.changes {
            match change {
                DataChangeKind::InitialValueChanged if changed.kind == DataKind::ReadOnly => findings.push(finding(
                    &codes::READ_ONLY_CONSTANT_CHANGED,
                    None,
                    format!("the read-only constant {} changed; the payload carries the new copy", changed.name),
                    &[("symbol", changed.name.clone())],
                )),
                DataChangeKind::InitialValueChanged => findings.push(finding(
                    &codes::WRITABLE_DATA_CHANGED,
                    None,
                    format!(
                        "the initial value of {} changed, but the running process keeps the value it has",
                        changed.name
                    ),
                    &[("symbol", changed.name.clone()), ("kind", format!("{:?}", changed.kind))],
                )),
                DataChangeKind::Resized { baseline, fixed } => findings.push(finding(
                    &codes::DATA_RESIZED,
                    None,
                    format!("{} changed size from {baseline} to {fixed} bytes", changed.name),
                    &[("symbol", changed.name.clone()), ("baseline", baseline.to_string()), ("fixed", fixed.to_string())],
                )),
                DataChangeKind::TypeChanged { baseline, fixed } => findings.push(finding(
                    &codes::DATA_RESIZED,
                    None,
                    format!("{} changed type from {baseline} to {fixed}", changed.name),
                    &[("symbol", changed.name.clone()), ("baseline", baseline.clone()), ("fixed", fixed.clone())],
                )),
                // Reported once per type by data-layout-changed.
                DataChangeKind::LayoutChanged { .. } => {}
            }
        }
    }
    for added in &diff.data.added {
        let rule = if added.kind == DataKind::ThreadLocal {
            &codes::TLS_CHANGED
        } else {
            &codes::DATA_ADDED
        };
        findings.push(finding(
            rule,
            None,
            format!(
                "{} is new ({} bytes, {:?})",
                added.name, added.size, added.kind
            ),
            &[
                ("symbol", added.name.clone()),
                ("size", added.size.to_string()),
            ],
        ));
    }
    for removed in diff
        .data
        .removed
        .iter()
        .filter(|d| d.kind == DataKind::ThreadLocal)
    {
        findings.push(finding(
            &codes::TLS_CHANGED,
            None,
            format!("the thread-local {} was removed", removed.name),
            &[("symbol", removed.name.clone())],
        ));
    }
    let vtables: Vec<String> = diff
        .data
        .added
        .iter()
        .chain(&diff.data.removed)
        .map(|d| d.name.clone())
        .chain(diff.data.changed.iter().map(|d| d.name.clone()))
        .filter(|name| is_vtable_or_rtti(name))
        .collect();
    if !vtables.is_empty() {
        findings.push(finding(
            &codes::VTABLE_CHANGED,
            None,
            format!("vtables or RTTI records changed: {}", vtables.join(", ")),
            &[("symbols", vtables.join(", "))],
        ));
    }
}

/// Vtables and RTTI by their Itanium (`_ZTV`, `_ZTI`, `_ZTS`) or MSVC (`??_7`, `??_R`) names;
/// `DW.ref.` wraps a reference to one.
fn is_vtable_or_rtti(name: &str) -> bool {
    let name = name.strip_prefix("DW.ref.").unwrap_or(name);
    ["_ZTV", "_ZTI", "_ZTS", "??_7", "??_R"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

fn binary_rules(subject: &Subject<'_>, policy: &Policy, findings: &mut Vec<Finding>) {
    let (baseline, fixed) = (subject.baseline, subject.fixed);
    if !subject.diagnostics.is_empty() {
        let listed: Vec<String> = subject
            .diagnostics
            .iter()
            .map(|d| format!("{}: {}", d.location, d.message))
            .collect();
        findings.push(finding(
            &codes::INCOMPLETE_DEBUG_INFO,
            None,
            format!(
                "{} part(s) of the input could be read only in part",
                listed.len()
            ),
            &[("diagnostics", listed.join("\n"))],
        ));
    }
    let tls_size = |image: &Image<'_>| {
        image
            .tls
            .as_ref()
            .map(|t| (t.block_size, t.template_end - t.template_start))
    };
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
    // A PIE defines the library data it copies in (`stdout` through `R_X86_64_COPY`) in its own
    // dynamic symbol table; those are imports, not exports.
    let exports = |image: &Image<'_>| {
        let copied: BTreeSet<u64> = image
            .relocations
            .iter()
            .filter(|r| r.kind == "R_X86_64_COPY")
            .map(|r| r.rva)
            .collect();
        image
            .exports
            .iter()
            .filter(|e| !copied.contains(&e.rva))
            .map(|e| e.name.clone())
            .collect::<BTreeSet<_>>()
    };
    let (old_exports, new_exports) = (exports(baseline), exports(fixed));
    let added: Vec<String> = new_exports.difference(&old_exports).cloned().collect();
    let removed: Vec<String> = old_exports.difference(&new_exports).cloned().collect();
    if !added.is_empty() {
        findings.push(finding(
            &codes::EXPORT_ADDED,
            None,
            format!(
                "the fixed build exports {} that the baseline does not",
                added.join(", ")
            ),
            &[("exports", added.join(", "))],
        ));
    }
    if !removed.is_empty() {
        findings.push(finding(
            &codes::EXPORT_REMOVED,
            None,
            format!(
                "the baseline exports {} that the fixed build does not",
                removed.join(", ")
            ),
            &[("exports", removed.join(", "))],
        ));
    }
    let imports = |image: &Image<'_>| {
        image
            .imports
            .iter()
            .map(|i| format!("{}!{}", i.library.to_ascii_lowercase(), i.name))
            .collect::<BTreeSet<_>>()
    };
    let new_imports: Vec<String> = imports(fixed)
        .difference(&imports(baseline))
        .cloned()
        .collect();
    if !new_imports.is_empty() {
        findings.push(finding(
            &codes::NEW_IMPORT,
            None,
            format!(
                "the fixed build imports {} that the baseline does not",
                new_imports.join(", ")
            ),
            &[("imports", new_imports.join(", "))],
        ));
    }
    let producers = |image: &Image<'_>| image.producers.iter().cloned().collect::<BTreeSet<_>>();
    let (old_producers, new_producers) = (producers(baseline), producers(fixed));
    if old_producers != new_producers {
        let only_old: Vec<String> = old_producers.difference(&new_producers).cloned().collect();
        let only_new: Vec<String> = new_producers.difference(&old_producers).cloned().collect();
        findings.push(finding(
            &codes::TOOLCHAIN_CHANGED,
            None,
            "the builds were made with different compilers or compiler options".to_owned(),
            &[
                ("only_baseline", only_old.join("\n")),
                ("only_fixed", only_new.join("\n")),
            ],
        ));
    }
    let resources = |image: &Image<'_>| {
        image
            .sections
            .iter()
            .find(|s| s.name == ".rsrc")
            .map(|s| s.sha256.clone().unwrap_or_default())
    };
    if resources(baseline) != resources(fixed) {
        findings.push(finding(
            &codes::RESOURCES_CHANGED,
            None,
            "the resources (.rsrc) differ".to_owned(),
            &[
                ("baseline_sha256", resources(baseline).unwrap_or_default()),
                ("fixed_sha256", resources(fixed).unwrap_or_default()),
            ],
        ));
    }
    let patched = subject.diff.changed.len() + subject.diff.added.len();
    let payload: u64 = subject
        .diff
        .changed
        .iter()
        .map(|c| c.fixed_size)
        .chain(subject.diff.added.iter().map(|a| a.size))
        .sum();
    let mut limits = BTreeMap::new();
    if let Some(max) = policy.limits.max_functions.filter(|&max| patched > max) {
        limits.insert("functions", format!("{patched} > {max}"));
    }
    if let Some(max) = policy.limits.max_payload_bytes.filter(|&max| payload > max) {
        limits.insert("payload_bytes", format!("{payload} > {max}"));
    }
    if !limits.is_empty() {
        let evidence: Vec<(&str, String)> = limits.iter().map(|(k, v)| (*k, v.clone())).collect();
        findings.push(finding(
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
        ));
    }
}
