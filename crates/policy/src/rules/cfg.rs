//! The control-flow graph of a function's typed code, for one question: can a call of this
//! function stay active for the life of the process? That holds when a loop reachable from the
//! entry has no path to a way out of the function (a return, a tail call, an indirect jump
//! whose targets are unknown). A function that ends every call by leaving the process or the
//! frame (`exit`, `abort`, `longjmp`, a throw) has no such loop: each call is brief, so a
//! redirect of its entry reaches every later call.
//!
//! A call to a function that never returns ends the call of this function there: it has no
//! successor and counts as a way out. Which callees never return comes from the image: the
//! debug information of its own functions ([`Function::noreturn`]) and the names of known
//! library functions ([`is_noreturn_import`]).

use hotpatch_diff::code::{Flow, Instruction, Target};
use hotpatch_image::{Function, Image, is_noreturn_import};

/// A loop that never leaves the function: the first instruction of it reached from the entry.
/// `never_returns` tells whether a call instruction's callee never returns.
pub(crate) fn endless_loop(
    code: &[Instruction],
    never_returns: &dyn Fn(&Instruction) -> bool,
) -> Option<usize> {
    let n = code.len();
    if n == 0 {
        return None;
    }
    let ends: Vec<bool> = code
        .iter()
        .map(|i| matches!(i.flow, Flow::Call | Flow::IndirectCall) && never_returns(i))
        .collect();
    let successors: Vec<Vec<usize>> = (0..n)
        .map(|at| {
            if ends[at] {
                Vec::new()
            } else {
                successors(code, at)
            }
        })
        .collect();
    // Instructions from which a way out of the function is reachable (backwards search).
    let mut predecessors: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (from, targets) in successors.iter().enumerate() {
        for &to in targets {
            predecessors[to].push(from);
        }
    }
    let mut leaves = vec![false; n];
    let mut stack: Vec<usize> = (0..n)
        .filter(|&at| ends[at] || is_way_out(code, at))
        .collect();
    for &at in &stack {
        leaves[at] = true;
    }
    while let Some(at) = stack.pop() {
        for &from in &predecessors[at] {
            if !leaves[from] {
                leaves[from] = true;
                stack.push(from);
            }
        }
    }
    // Instructions reachable from the entry.
    let mut reached = vec![false; n];
    let mut stack = vec![0usize];
    reached[0] = true;
    while let Some(at) = stack.pop() {
        for &to in &successors[at] {
            if !reached[to] {
                reached[to] = true;
                stack.push(to);
            }
        }
    }
    // A reached instruction that cannot leave and lies on a cycle: an endless loop. (One that
    // cannot leave but is on no cycle ends the process or traps, which is brief.)
    (0..n).find(|&at| reached[at] && !leaves[at] && on_cycle(at, &successors, &leaves))
}

/// Whether `start` can reach itself through instructions that cannot leave the function.
fn on_cycle(start: usize, successors: &[Vec<usize>], leaves: &[bool]) -> bool {
    let mut seen = vec![false; successors.len()];
    let mut stack: Vec<usize> = successors[start].clone();
    while let Some(at) = stack.pop() {
        if at == start {
            return true;
        }
        if seen[at] || leaves[at] {
            continue;
        }
        seen[at] = true;
        stack.extend(successors[at].iter().copied());
    }
    false
}

/// Where control may go after the instruction at `at`, inside the function.
fn successors(code: &[Instruction], at: usize) -> Vec<usize> {
    let instruction = &code[at];
    let next = (at + 1 < code.len()).then_some(at + 1);
    let labels = instruction.labels();
    let in_range = |index: &usize| *index < code.len();
    match instruction.flow {
        Flow::Next | Flow::Call | Flow::IndirectCall => next.into_iter().collect(),
        Flow::ConditionalJump => next
            .into_iter()
            .chain(labels.into_iter().filter(in_range))
            .collect(),
        Flow::Jump | Flow::IndirectJump => labels.into_iter().filter(in_range).collect(),
        Flow::Return | Flow::Trap | Flow::Invalid => Vec::new(),
    }
}

/// A way out of the function: a return, a tail call to another function, an indirect jump that
/// does not go through a jump table of this function, or the end of the call: a trap (`ud2`,
/// the `int3` clang puts after a `noreturn` call on Windows) or a call that is the function's
/// last instruction (a `noreturn` call such as Lua's `luaG_errormsg` at the end of
/// `luaG_runerror`). A loop whose exits all lead to such an end is left by every call, so it is
/// not endless: an error-raising function that scans its line table before raising is brief.
fn is_way_out(code: &[Instruction], at: usize) -> bool {
    let instruction = &code[at];
    let last = at + 1 == code.len();
    match instruction.flow {
        Flow::Return | Flow::Trap => true,
        Flow::Call | Flow::IndirectCall => last,
        Flow::Jump => instruction.references().any(|reference| {
            !matches!(
                reference.target,
                Target::Label { .. } | Target::InsideInstruction { .. }
            )
        }),
        Flow::IndirectJump => !instruction
            .references()
            .any(|reference| matches!(reference.target, Target::JumpTable(_))),
        _ => false,
    }
}

/// Whether the call `instruction`, in code of `image`, goes to a function that never returns:
/// a function of the image its debug information marks so, or a known library function
/// reached through a PLT stub, an import thunk or an import slot.
pub(crate) fn call_never_returns(instruction: &Instruction, image: &Image<'_>) -> bool {
    instruction
        .references()
        .any(|reference| target_never_returns(&reference.target, image))
}

fn target_never_returns(target: &Target, image: &Image<'_>) -> bool {
    match target {
        Target::Function { index, offset, .. } => {
            *offset == 0 && image.functions.get(*index).is_some_and(noreturn_function)
        }
        Target::Import { name, .. } => is_noreturn_import(name),
        Target::SymbolSlot { symbol, .. } => is_noreturn_import(symbol),
        Target::Stub { slot } => target_never_returns(slot, image),
        Target::Slot { pointee } => target_never_returns(pointee, image),
        _ => false,
    }
}

/// A function of the image that never returns: marked so, or a body that only jumps to a
/// library function that never returns (a PLT entry, which the symbol table may name
/// `exit@plt`).
fn noreturn_function(function: &Function<'_>) -> bool {
    function.noreturn
        || function
            .name
            .strip_suffix("@plt")
            .is_some_and(is_noreturn_import)
}

#[cfg(test)]
mod tests {
    use super::endless_loop;
    use hotpatch_diff::code::{Encoding, Flow, Instruction, Operand, Operands, Reference, Target};

    fn plain(rva: u64, flow: Flow) -> Instruction {
        Instruction {
            rva,
            len: 1,
            mnemonic: "op",
            prefixes: Vec::new(),
            operands: Operands::new(),
            flow,
            system: false,
            undecodable: Vec::new(),
        }
    }

    fn branch(rva: u64, flow: Flow, index: usize) -> Instruction {
        let mut instruction = plain(rva, flow);
        instruction.operands.push(Operand::Branch {
            reference: Reference {
                field_offset: 1,
                field_width: 1,
                encoding: Encoding::Rel8Branch,
                rva: 0,
                target: Target::Label { index },
            },
        });
        instruction
    }

    /// The shape of Lua 5.4.4's `luaG_runerror` (gcc -O2): a line-table scan loop inlined from
    /// `getcurrentline`, whose exit leads to the `noreturn` call of `luaG_errormsg` that ends
    /// the function (or to clang's `int3` after it).
    fn error_raiser(end: Option<Flow>) -> Vec<Instruction> {
        let mut code = vec![
            plain(0, Flow::Call),                // luaO_pushvfstring
            branch(1, Flow::ConditionalJump, 5), // not a Lua function: skip the line info
            plain(2, Flow::Next),                // loop head
            branch(3, Flow::ConditionalJump, 2), // scan the next line
            plain(4, Flow::Call),                // luaG_addinfo
            plain(5, Flow::Call),                // luaG_errormsg (noreturn)
        ];
        if let Some(flow) = end {
            code.push(plain(6, flow));
        }
        code
    }

    #[test]
    fn a_loop_before_a_noreturn_call_that_ends_the_function_is_not_endless() {
        assert_eq!(endless_loop(&error_raiser(None), &|_| false), None);
    }

    #[test]
    fn a_loop_before_a_trap_is_not_endless() {
        assert_eq!(
            endless_loop(&error_raiser(Some(Flow::Trap)), &|_| false),
            None
        );
    }

    #[test]
    fn a_loop_with_no_exit_is_endless() {
        let code = vec![
            plain(0, Flow::Next),
            plain(1, Flow::Call), // serve one request
            branch(2, Flow::Jump, 1),
        ];
        assert_eq!(endless_loop(&code, &|_| false), Some(1));
    }

    #[test]
    fn a_call_inside_the_function_is_no_way_out() {
        // The loop's only exit is a call that falls through into the loop again.
        let code = vec![
            plain(0, Flow::Next),
            branch(1, Flow::ConditionalJump, 3),
            branch(2, Flow::Jump, 1),
            plain(3, Flow::Call),
            branch(4, Flow::Jump, 1),
        ];
        assert_eq!(endless_loop(&code, &|_| false), Some(1));
    }

    /// The shape gcc gave Lua 5.4.4's `luaG_runerror` (issue 7, F2): the `noreturn` call of
    /// `luaG_errormsg` sits in the middle, and the block after it, reached only by a branch,
    /// jumps back to the instructions before the call. Without knowing that the call never
    /// returns, its fall-through closes a cycle the machine code does not have.
    fn mid_function_error_call() -> Vec<Instruction> {
        vec![
            branch(0, Flow::ConditionalJump, 4), // a Lua function: compute the line first
            plain(1, Flow::Next),                // mov rdi, rbx
            plain(2, Flow::Call),                // luaG_errormsg (noreturn)
            plain(3, Flow::Trap),                // never reached: gcc's padding
            plain(4, Flow::Call),                // luaG_addinfo
            branch(5, Flow::Jump, 1),            // back to the call
        ]
    }

    #[test]
    fn a_noreturn_call_in_the_middle_has_no_fall_through() {
        let code = mid_function_error_call();
        assert_eq!(endless_loop(&code, &|i| i.rva == 2), None);
    }

    #[test]
    fn an_unknown_callee_is_assumed_to_return() {
        // The same code, with the call taken to return: the fall-through into the branch-only
        // block makes a cycle with no way out, as before the image knew about noreturn.
        let mut code = mid_function_error_call();
        code[3] = plain(3, Flow::Next);
        assert_eq!(endless_loop(&code, &|_| false), Some(1));
    }
}
