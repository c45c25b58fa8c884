//! The rule catalogue: one table of every rule with its stable ID. An ID is never reused; a
//! retired rule stays in the table marked retired. `docs/eligibility.md` is generated from this
//! table (`catalogue_markdown`), and a test fails when it is stale.

use serde::{Deserialize, Serialize};

/// How much a finding weighs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// The change cannot be hotpatched safely; only a policy that declares the rule waivable
    /// lets a reviewer accept it.
    RebootRequired,
    /// The engine cannot decide; the change is treated as reboot-required until a reviewer
    /// waives this finding for this binary and function.
    Review,
    /// Recorded for the audit; does not block.
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::RebootRequired => "reboot-required",
            Severity::Review => "review",
            Severity::Info => "info",
        }
    }
}

/// Whether a rule judges one function or the binary as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    Function,
    Binary,
}

/// A rule's stable ID, `HP` and four digits. Only the catalogue below constructs one, so an ID
/// that is not in the catalogue cannot exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleId(&'static str);

impl RuleId {
    pub fn as_str(self) -> &'static str {
        self.0
    }

    /// The catalogue entry of this ID.
    pub fn rule(self) -> &'static Rule {
        CATALOGUE
            .iter()
            .find(|rule| rule.id == self)
            .unwrap_or(&UNMODELED_INSTRUCTION)
    }
}

impl std::fmt::Display for RuleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl Serialize for RuleId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

impl PartialEq<str> for RuleId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for RuleId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// One rule of the catalogue.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Rule {
    /// The stable ID, `HP` and four digits.
    pub id: RuleId,
    /// What was found, in kebab case.
    pub name: &'static str,
    pub title: &'static str,
    pub severity: Severity,
    pub scope: Scope,
    /// What it checks, and how.
    pub checks: &'static str,
    /// Why a reboot is required (or why the finding is only recorded).
    pub why: &'static str,
    /// What the patch author can do instead.
    pub remedy: &'static str,
    /// The evidence a finding records.
    pub evidence: &'static str,
    /// The fixture that triggers it, and the close case where it must not fire.
    pub fixtures: &'static str,
}

macro_rules! rules {
    ($($konst:ident = $rule:expr;)*) => {
        $(pub const $konst: Rule = $rule;)*
        /// Every rule, in ID order.
        pub const CATALOGUE: &[Rule] = &[$($konst),*];
    };
}

rules! {
    UNMODELED_INSTRUCTION = Rule {
        id: RuleId("HP0001"), name: "unmodeled-instruction", title: "Changed code holds bytes that do not decode",
        severity: Severity::RebootRequired, scope: Scope::Function,
        checks: "The normalized disassembly of the changed function contains an instruction iced-x86 cannot decode (data in code, or a truncated body).",
        why: "What the engine cannot decode it cannot relocate or prove safe.",
        remedy: "Check the function's bounds in the debug information; plan the change for the next baseline.",
        evidence: "the first undecodable bytes and their RVA",
        fixtures: "tests/it/check.rs writes an undecodable byte over bounds_check's lookup_user; bounds_check itself must not fire it",
    };
    UNRESOLVED_REFERENCE = Rule {
        id: RuleId("HP0002"), name: "unresolved-reference", title: "Changed code points at something the engine cannot name",
        severity: Severity::RebootRequired, scope: Scope::Function,
        checks: "An address operand of the changed function resolves to no function, data symbol, import, relocated slot, constant or jump table: it is written `abs:`, `code:`, `data:` or `L?` in the normalized disassembly.",
        why: "Patched code must reach the original storage and code; an address that cannot be tied to a symbol cannot be relocated into the payload.",
        remedy: "Give the referenced object a symbol (a named global rather than a compiler temporary), or plan the change for the next baseline.",
        evidence: "the instruction and its unresolved operand",
        fixtures: "tests/it/check.rs makes bounds_check's lookup_user call into the filler after it; bounds_check itself must not fire it",
    };
    INCOMPLETE_DEBUG_INFO = Rule {
        id: RuleId("HP0003"), name: "incomplete-debug-info", title: "The debug information could be read only in part",
        severity: Severity::Review, scope: Scope::Binary,
        checks: "The reader reported diagnostics (a malformed PDB module, a DWARF unit that failed to parse, a malformed table).",
        why: "Facts the rules rely on (functions, types, lines) may be missing, so a verdict could be wrong.",
        remedy: "Rebuild with complete debug information; a reviewer who checked the diagnostics may waive this.",
        evidence: "each diagnostic's location and message",
        fixtures: "tests/it/check.rs pairs the stripped bounds_check with a damaged debug file (a fuzz regression); bounds_check must not fire it",
    };
    FUNCTION_REPLACED = Rule {
        id: RuleId("HP0010"), name: "function-replaced", title: "A changed function is replaced as a whole",
        severity: Severity::Info, scope: Scope::Function,
        checks: "Each changed function; the patch redirects its entry to the new code.",
        why: "Recorded so the audit lists every function the patch replaces, with its cause.",
        remedy: "None needed.",
        evidence: "baseline and fixed RVA and size, the causes, the first differing instruction",
        fixtures: "bounds_check (lookup_user)",
    };
    FUNCTION_ADDED = Rule {
        id: RuleId("HP0011"), name: "function-added", title: "A new function ships in the payload",
        severity: Severity::Info, scope: Scope::Function,
        checks: "A function only in the fixed build.",
        why: "New code is carried in the payload and reached only from replaced functions.",
        remedy: "None needed.",
        evidence: "RVA and size in the fixed build",
        fixtures: "added_helper (validate_header), address_shift (debug_state_id)",
    };
    LINE_ONLY = Rule {
        id: RuleId("HP0012"), name: "line-only-change", title: "Only `__LINE__` constants moved",
        severity: Severity::Info, scope: Scope::Function,
        checks: "A function whose only differences are immediates that moved by exactly as many lines as the source lines they lie in: the function's own, or those of a function inlined into it (an `assert` in an inlined helper), whose rows moved by the same amount.",
        why: "Behaviour is unchanged except for line numbers in messages; the function is not replaced.",
        remedy: "None needed.",
        evidence: "the line delta",
        fixtures: "line_only (warn_slow); inline_line; inline_assert (account_read, account_write: the inlinee's own __LINE__); bounds_check must not fire it",
    };
    DATA_LAYOUT_CHANGED = Rule {
        id: RuleId("HP0101"), name: "data-layout-changed", title: "The layout of a struct, union or class changed",
        severity: Severity::RebootRequired, scope: Scope::Function,
        checks: "A type with the same name has a different layout fingerprint (size, field names, offsets, field types) in the two builds (PDB TPI, DWARF). The finding goes to every changed or added function that uses the type: a parameter or local variable of that type, a pointer or reference to it, or an array of it (DWARF `DW_TAG_formal_parameter`/`DW_TAG_variable` under the subprogram, its lexical blocks and inlined code; PDB `S_LOCAL`, `S_REGREL32`, `S_BPREL32`, `S_REGISTER` and the procedure type's arguments and class), or of a type that reaches it through at most four fields (a member that holds it, points to it or holds an array of it: `p->q->field` where only `p` is a parameter). Which members the code dereferences is data flow the debug information does not record, so a function is tied to every changed type its parameters' and locals' types reach, used or not; a pointer cast to another type, a `void *` or a type reached through more than four fields is not followed. A changed type that no replaced function uses this way is one binary-scope finding.",
        why: "Objects that already exist in the running process keep the old layout; new code would read and write them with the new one.",
        remedy: "Keep the old layout and add a new global (or a side table) for the new state; or plan the change for the next baseline.",
        evidence: "the type, its old and new size, the fields that were added, removed, moved (old and new offset), retyped, grew or shrank (old and new size of the field's type), and the replaced and unchanged functions that use it, with the type they reach it through when that is not the type itself",
        fixtures: "layout_users (transfer_new, transfer_print, transfer_step: parameters and locals only); layout_reach (connection_admit: only through a member pointer; a field that grew); struct_layout; bounds_check must not fire it",
    };
    WRITABLE_DATA_CHANGED = Rule {
        id: RuleId("HP0102"), name: "writable-initial-value-changed", title: "The initial value of writable data changed",
        severity: Severity::RebootRequired, scope: Scope::Binary,
        checks: "A writable global or static present in both builds has different initial bytes (pointers compared by what they point at).",
        why: "Mutable data stays in the base image and has been running with its old value; a patch cannot re-initialize it.",
        remedy: "Set the new value in code that runs on the patched path, or plan the change for the next baseline.",
        evidence: "the symbol and its kind",
        fixtures: "global_initializer; new_global must not fire it",
    };
    DATA_RESIZED = Rule {
        id: RuleId("HP0103"), name: "data-resized-or-retyped", title: "Existing data changed size or type",
        severity: Severity::RebootRequired, scope: Scope::Binary,
        checks: "A global or static present in both builds has another size or type name.",
        why: "New code must use the original storage, which keeps its old size and type.",
        remedy: "Keep the old object and add a new one for the new data.",
        evidence: "the symbol, old and new size or type",
        fixtures: "struct_layout (sessions); bounds_check must not fire it",
    };
    READ_ONLY_CONSTANT_CHANGED = Rule {
        id: RuleId("HP0104"), name: "read-only-constant-changed", title: "A named read-only constant changed",
        severity: Severity::Info, scope: Scope::Binary,
        checks: "A read-only data symbol present in both builds has different contents.",
        why: "Constants may change: the payload carries the new copy and patched code points at it.",
        remedy: "None needed; unpatched code keeps reading the old copy.",
        evidence: "the symbol",
        fixtures: "named_constant (size_limits); string_literal (an unnamed string) must not fire it",
    };
    DATA_ADDED = Rule {
        id: RuleId("HP0105"), name: "data-added", title: "New data ships in the payload",
        severity: Severity::Info, scope: Scope::Binary,
        checks: "A global or static only in the fixed build.",
        why: "New globals may be added; the payload allocates them, initialized.",
        remedy: "None needed.",
        evidence: "the symbol, its kind and size",
        fixtures: "new_global (error_count)",
    };
    TLS_ACCESSED = Rule {
        id: RuleId("HP0201"), name: "tls-accessed", title: "Changed code uses thread-local storage",
        severity: Severity::RebootRequired, scope: Scope::Function,
        checks: "The changed function addresses memory through the fs or gs segment, or references a thread-local variable or the TLS index.",
        why: "TLS offsets and the TLS index belong to the base image's TLS block; code in a payload cannot be given a TLS block of its own in running threads.",
        remedy: "Move the TLS access into an unchanged helper the new code calls, or plan the change for the next baseline.",
        evidence: "the first instruction that touches TLS",
        fixtures: "tls (enter_scope); bounds_check must not fire it",
    };
    TLS_CHANGED = Rule {
        id: RuleId("HP0202"), name: "tls-layout-changed", title: "The thread-local storage block changed",
        severity: Severity::RebootRequired, scope: Scope::Binary,
        checks: "The TLS template or block size differs, or a thread-local variable was added or removed.",
        why: "Running threads already have TLS blocks of the old size and layout.",
        remedy: "Keep TLS as it is; plan the change for the next baseline.",
        evidence: "old and new block size; the variables",
        fixtures: "tls_added (error_count); tls (changes code that uses TLS, not the block) must not fire it",
    };
    INITIALIZER_CHANGED = Rule {
        id: RuleId("HP0301"), name: "initializer-changed", title: "Code that already ran once changed",
        severity: Severity::RebootRequired, scope: Scope::Function,
        checks: "The changed function is the target of an initializer table slot (`.init_array`, `.ctors`, `.CRT$XC*`/`.CRT$XI*`) or a TLS callback.",
        why: "Initializers ran when the process started; replacing them changes nothing in a running process, and whatever they set up keeps the old state.",
        remedy: "Move the change out of code that already ran (apply it lazily on first use), or plan it for the next baseline.",
        evidence: "the table and slot that point at the function",
        fixtures: "constructor (init_crc_table); bounds_check must not fire it",
    };
    ALWAYS_ACTIVE = Rule {
        id: RuleId("HP0303"), name: "always-active-function-changed", title: "A function that is always on a stack changed",
        severity: Severity::RebootRequired, scope: Scope::Function,
        checks: "The changed function is the entry point or a program entry (`main`, `wmain`, `WinMain`, `wWinMain`, `DllMain`, `mainCRTStartup`, `_start`).",
        why: "Its activation began before the patch and never returns to be re-entered, so the old code keeps running; if callees now assume the new code (register allocation across functions), the old activation breaks.",
        remedy: "Keep entry functions unchanged (move the fix into a callee that is not inlined), or plan the change for the next baseline.",
        evidence: "the function name",
        fixtures: "struct_layout and static_local (ELF: gcc's IPA register allocation changes main); bounds_check must not fire it",
    };
    EXPORT_ADDED = Rule {
        id: RuleId("HP0401"), name: "export-added", title: "A new export",
        severity: Severity::RebootRequired, scope: Scope::Binary,
        checks: "A name in the fixed build's export table (PE) or dynamic symbol table (ELF) that the baseline does not export.",
        why: "Other modules bind exports at load time; a running process cannot gain an export.",
        remedy: "Reach the new function internally, or plan the export for the next baseline.",
        evidence: "the export names",
        fixtures: "new_export (PE); new_export (ELF, a PIE exports nothing) must not fire it",
    };
    EXPORT_REMOVED = Rule {
        id: RuleId("HP0402"), name: "export-removed", title: "An export was removed",
        severity: Severity::RebootRequired, scope: Scope::Binary,
        checks: "A name the baseline exports that the fixed build does not.",
        why: "Modules already bound to it keep calling it; its removal cannot take effect in a running process.",
        remedy: "Keep the export; plan its removal for the next baseline.",
        evidence: "the export names",
        fixtures: "new_export reversed (the mirror diff)",
    };
    NEW_IMPORT = Rule {
        id: RuleId("HP0403"), name: "new-import", title: "A new import dependency",
        severity: Severity::RebootRequired, scope: Scope::Binary,
        checks: "A library or imported symbol the fixed build needs that the baseline does not import.",
        why: "The loader resolved imports when the process started; a new dependency would have to be loaded and bound by the applier, which it does not do.",
        remedy: "Use a function the baseline already imports, or plan the change for the next baseline.",
        evidence: "library and symbol",
        fixtures: "none of the fixtures adds one; string_literal must not fire it",
    };
    EXPORTED_SIGNATURE_CHANGED = Rule {
        id: RuleId("HP0404"), name: "exported-signature-changed", title: "An exported function's signature changed",
        severity: Severity::RebootRequired, scope: Scope::Function,
        checks: "A changed function whose type (return and parameter types, from PDB procedure types or DWARF) differs between the builds, and which the image exports.",
        why: "Other modules call the export with the old arguments; the new code would read arguments they never pass.",
        remedy: "Keep the exported signature and add a new function for the new parameters; or plan the change for the next baseline.",
        evidence: "the old and new signature",
        fixtures: "signature_change (PE: checksum_block is exported); bounds_check must not fire it",
    };
    SIGNATURE_CHANGED = Rule {
        id: RuleId("HP0405"), name: "signature-changed", title: "A function's signature changed",
        severity: Severity::Review, scope: Scope::Function,
        checks: "A changed function whose type differs between the builds and which is not exported.",
        why: "Every caller must be replaced together with it; a caller the patch leaves alone, or a call through a function pointer, passes the old arguments.",
        remedy: "Check that every caller is in the patch and the function's address is not taken, then waive this finding; or keep the old signature.",
        evidence: "the old and new signature",
        fixtures: "signature_change (ELF: the PIE exports nothing); bounds_check must not fire it",
    };
    FUNCTION_TOO_SHORT = Rule {
        id: RuleId("HP0501"), name: "function-too-short", title: "The function is too short for a redirect",
        severity: Severity::RebootRequired, scope: Scope::Function,
        checks: "The baseline function is shorter than the 5 bytes of a `jmp rel32`, and there are fewer than 5 bytes of filler before its entry or its first instruction is shorter than the 2 bytes of a short jump into that padding.",
        why: "The redirect would overwrite the next function's code.",
        remedy: "Build with hotpatch padding (`-fms-hotpatch`, `/FUNCTIONPADMIN`, `-fpatchable-function-entry`), or plan the change for the next baseline.",
        evidence: "size, padding before the entry, first instruction length",
        fixtures: "too_short_unpadded (a cold function with no filler before it); too_short (PE: 12 bytes of int3 padding; ELF: 7 bytes of nopl filler) must not fire it",
    };
    FOLDED_FUNCTION = Rule {
        id: RuleId("HP0502"), name: "folded-function", title: "The changed body is shared with other names (identical code folding)",
        severity: Severity::Review, scope: Scope::Function,
        checks: "The baseline function has aliases: other names whose body the compiler or linker folded into this one (several symbols at one address).",
        why: "Redirecting the body changes every alias too, which is right only if all of them should change.",
        remedy: "Check that every alias should get the new code and waive this finding, or build without ICF.",
        evidence: "the aliases by readable name (`aliases`) and decorated symbol (`alias_symbols`)",
        fixtures: "folded_function (ELF: gcc's -fipa-icf folds check_user_name and check_group_name); folded_function (PE: clang does not fold them) must not fire it",
    };
    UNRESOLVED_INDIRECT_BRANCH = Rule {
        id: RuleId("HP0601"), name: "unresolved-indirect-branch", title: "An indirect jump the engine cannot follow",
        severity: Severity::RebootRequired, scope: Scope::Function,
        checks: "The changed function jumps through a register or memory that is neither a resolved jump table nor an import slot.",
        why: "The engine cannot prove where control goes, so it cannot prove the jump's targets move with the new code.",
        remedy: "Plan the change for the next baseline, or restructure the switch.",
        evidence: "the jump instruction",
        fixtures: "switch_table must not fire it (its jump table resolves)",
    };
    EXCEPTION_HANDLING_CHANGED = Rule {
        id: RuleId("HP0701"), name: "exception-handling-changed", title: "Changed code throws, catches or unwinds",
        severity: Severity::RebootRequired, scope: Scope::Function,
        checks: "The changed function calls the C++ or SEH exception runtime (`__cxa_throw`, `__cxa_begin_catch`, `_Unwind_Resume`, `__CxxFrameHandler*`, `__C_specific_handler`).",
        why: "Its handler tables (`.gcc_except_table`, the language-specific data after a PE `UNWIND_INFO`) and the handler's address hold addresses of the fixed build that a payload does not re-target, so the new code's handlers could not run. (A PE payload carries the plain `UNWIND_INFO` of the new code, so an exception thrown by a callee unwinds through a patched frame without handlers; see HP1501 for what lifting refuses.)",
        remedy: "Keep the try/catch in an unchanged function and move the fix into a callee without handlers, or plan the change for the next baseline.",
        evidence: "the exception runtime function it calls; for an MSVC funclet, its parent by readable name (`parent`) and decorated symbol (`parent_symbol`)",
        fixtures: "cpp_exceptions (load_limit); bounds_check and live_exceptions (lookup only calls a function that throws) must not fire it",
    };
    NEVER_RETURNS = Rule {
        id: RuleId("HP0801"), name: "endless-loop", title: "The changed function can stay active for the life of the process",
        severity: Severity::RebootRequired, scope: Scope::Function,
        checks: "The control-flow graph of the baseline or fixed code (branches, jump-table entries) has a loop reachable from the entry from which no way out of the function (a return, a tail call, an indirect jump that is not a jump table, a trap, or a call that ends the function's code, which only a `noreturn` callee can be) can be reached. A function that merely never returns because each call ends the process or the frame (`exit`, `abort`, `longjmp`, a throw, a noreturn error routine) has no such loop and does not fire it. Until December 2026 this rule fired on any function without a return; docs/decisions.md says why that changed.",
        why: "A call that enters such a loop stays on its thread's stack for the life of the process, running the old code: the redirect reaches only later calls, and the applier's stack check would refuse every attempt.",
        remedy: "Move the fix into a function the loop calls, or plan the change for the next baseline; a loop the graph cannot see (an event loop behind an indirect call) can be named in the policy's `always_active` list (HP0303).",
        evidence: "which build's code holds the loop, and its first instruction",
        fixtures: "worker_loop (an endless service loop); never_returns (ends with exit()) and loop_with_exit must not fire it",
    };
    TOOLCHAIN_CHANGED = Rule {
        id: RuleId("HP0901"), name: "toolchain-changed", title: "The compiler or its options differ between the builds",
        severity: Severity::RebootRequired, scope: Scope::Binary,
        checks: "The set of producers differs: DWARF `DW_AT_producer` (gcc records its options there), PDB `S_COMPILE3` version and flags, and the command lines PDB `S_ENVBLOCK` records (MSVC compilers, every linker), without the names of the build's own files.",
        why: "Code generated under other options (calling conventions, register allocation across functions, stack protection) may not interoperate with the running code.",
        remedy: "Build the fix with exactly the baseline's toolchain and options.",
        evidence: "producers only in the baseline and only in the fixed build",
        fixtures: "compiler_flags (ELF: -fno-omit-frame-pointer shows in DW_AT_producer; clang records no options in a PDB, so the PE case cannot fire it); bounds_check must not fire it",
    };
    STATIC_LOCAL_UNTIED = Rule {
        id: RuleId("HP1001"), name: "static-local-untied", title: "A static local in changed code has no original storage",
        severity: Severity::Review, scope: Scope::Function,
        checks: "The changed function references a function-scoped static (PDB `f::x`, GCC `x.N`) that the baseline does not have.",
        why: "If it replaces state the old code kept elsewhere, the new code starts from a fresh value instead of the running state.",
        remedy: "Check that fresh state is right and waive this finding, or keep using the original static.",
        evidence: "the static's name",
        fixtures: "new_static_local (warnings_left); static_local must not fire it (count is tied to its original storage)",
    };
    INLINE_ASSEMBLY = Rule {
        id: RuleId("HP1101"), name: "inline-assembly", title: "Changed code holds instructions compilers do not emit for C",
        severity: Severity::Review, scope: Scope::Function,
        checks: "The changed function contains system or timing instructions (`cpuid`, `rdtsc`, `syscall`, `int n`, `cli`, `in`, `out`, `rdmsr`, ...), the mark of inline assembly.",
        why: "Hand-written code may depend on its exact placement or on state the engine does not model.",
        remedy: "Have a reviewer read the assembly and waive this finding.",
        evidence: "the instruction",
        fixtures: "inline_asm (cycle_stamp); bounds_check must not fire it",
    };
    RESOURCES_CHANGED = Rule {
        id: RuleId("HP1201"), name: "resources-changed", title: "PE resources changed",
        severity: Severity::RebootRequired, scope: Scope::Binary,
        checks: "The contents of the `.rsrc` section differ.",
        why: "Resources are loaded from the mapped image; a patch does not replace them.",
        remedy: "Plan resource changes for the next baseline.",
        evidence: "SHA-256 of both `.rsrc` sections",
        fixtures: "resources (PE: the VERSIONINFO changes); bounds_check (PE, no resources) and resources (ELF) must not fire it",
    };
    VTABLE_CHANGED = Rule {
        id: RuleId("HP1301"), name: "vtable-or-rtti-changed", title: "A vtable or RTTI record changed",
        severity: Severity::RebootRequired, scope: Scope::Binary,
        checks: "A vtable or RTTI symbol (`_ZTV`, `_ZTI`, `_ZTS`, `??_7`, `??_R`) was added, removed or changed.",
        why: "Existing objects point at the old vtables; dispatch through them ignores a new one.",
        remedy: "Keep class hierarchies and virtual functions as they are; plan the change for the next baseline.",
        evidence: "the symbols",
        fixtures: "cpp_exceptions (the catch clause's type info changes)",
    };
    LIFT_UNSUPPORTED = Rule {
        id: RuleId("HP1501"), name: "lift-unsupported", title: "The change cannot be lifted exactly into a payload",
        severity: Severity::RebootRequired, scope: Scope::Function,
        checks: "Detected by hotpatch-lift, which re-targets every typed reference of the new code into the baseline image: a reference it cannot re-target exactly (new writable or thread-local data, an import or pointer slot the baseline lacks, a jump table encoding it does not rewrite, read-only data holding relocated pointers, a 32-bit absolute address into the payload), or an entry with no room for a redirect. Unwind data too: a PE function whose `UNWIND_INFO` names a language handler (`__C_specific_handler`, `__gxx_personality_seh0`, `__CxxFrameHandler3`: the handler and its data hold image-relative addresses the payload does not re-target), whose `.pdata` entry reaches outside it or is chained to code not copied; an ELF function that calls other code in a binary linking the C++ exception runtime (`__cxa_throw`), since an exception could unwind through its frame and an ELF payload carries no `.eh_frame`. A gcc cold part (`foo.cold`, `foo.cold.N`) kept apart from its parent: a replaced parent whose baseline cold part branches back into the old body (its bytes read at every offset as a direct branch), or a cold part changed while its parent is not (the parent enters it at offsets other than its entry).",
        why: "A payload that might point at the wrong storage or code must never be emitted; only an exact payload may be applied to a running process.",
        remedy: "Avoid the construct in the fix (reuse existing globals, keep imports), or plan the change for the next baseline.",
        evidence: "the function, the instruction's RVA, the target it could not re-target and why",
        fixtures: "new_global (handle_error uses the new writable global error_count, which the payload cannot hold); live_exceptions (ELF: lookup calls check_index, which throws through its frame); switch_table (ELF: eval_op.cold returns through the old eval_op's epilogue); bounds_check must not fire it",
    };
    PATCH_LIMIT_EXCEEDED = Rule {
        id: RuleId("HP1401"), name: "patch-limit-exceeded", title: "The patch is larger than the policy allows",
        severity: Severity::RebootRequired, scope: Scope::Binary,
        checks: "The number of replaced and added functions, or their code size, exceeds the policy file's `[limits]`.",
        why: "Release policy: large patches carry more risk than a planned baseline.",
        remedy: "Split the fix, or plan it for the next baseline.",
        evidence: "the count or size and the limit",
        fixtures: "tested with a policy of max_functions = 0",
    };
}

/// The rule with this ID.
pub fn rule(id: &str) -> Option<&'static Rule> {
    CATALOGUE.iter().find(|rule| rule.id.as_str() == id)
}

/// The fail-safe rules: what the engine cannot read or name. A policy may not turn them off
/// unless it also lists them as waivable, so that each exception is a reviewed waiver.
pub const FAIL_SAFE: &[RuleId] = &[
    UNMODELED_INSTRUCTION.id,
    UNRESOLVED_REFERENCE.id,
    INCOMPLETE_DEBUG_INFO.id,
];

/// The catalogue as Markdown: `docs/eligibility.md`.
pub fn catalogue_markdown() -> String {
    let mut text = String::from(
        "# Eligibility rule catalogue\n\n\
         Generated from `crates/policy/src/codes.rs`; do not edit by hand (`HOTPATCH_BLESS=1 cargo test` regenerates it).\n\n\
         A change is `hotpatch-eligible` only when no `reboot-required` or `review` finding stands against it.\n\
         `review` findings block until a waiver in the policy file accepts them; `reboot-required` findings can be waived only for rules the policy file lists as waivable.\n\
         IDs are stable and never reused.\n\n\
         | ID | name | severity | scope | title |\n|---|---|---|---|---|\n",
    );
    for rule in CATALOGUE {
        text.push_str(&format!(
            "| {} | `{}` | {} | {} | {} |\n",
            rule.id,
            rule.name,
            rule.severity.as_str(),
            match rule.scope {
                Scope::Function => "function",
                Scope::Binary => "binary",
            },
            rule.title
        ));
    }
    for rule in CATALOGUE {
        text.push_str(&format!(
            "\n## {} `{}`: {}\n\nSeverity: {}.\n\n### What it checks\n\n{}\n\n### Why a reboot is required\n\n{}\n\n### What to do instead\n\n{}\n\n### Evidence recorded\n\n{}\n\n### Fixtures\n\n{}\n",
            rule.id,
            rule.name,
            rule.title,
            rule.severity.as_str(),
            rule.checks,
            rule.why,
            rule.remedy,
            rule.evidence,
            rule.fixtures
        ));
    }
    text
}
