//! The control-flow graph of a function's typed code, for one question: can a call of this
//! function stay active for the life of the process? That holds when a loop reachable from the
//! entry has no path to a way out of the function (a return, a tail call, an indirect jump
//! whose targets are unknown). A function that ends every call by leaving the process or the
//! frame (`exit`, `abort`, `longjmp`, a throw) has no such loop: each call is brief, so a
//! redirect of its entry reaches every later call.

use hotpatch_diff::code::{Flow, Instruction, Target};

/// A loop that never leaves the function: the first instruction of it reached from the entry.
pub(crate) fn endless_loop(code: &[Instruction]) -> Option<usize> {
    let n = code.len();
    if n == 0 {
        return None;
    }
    let successors: Vec<Vec<usize>> = (0..n).map(|at| successors(code, at)).collect();
    // Instructions from which a way out of the function is reachable (backwards search).
    let mut predecessors: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (from, targets) in successors.iter().enumerate() {
        for &to in targets {
            predecessors[to].push(from);
        }
    }
    let mut leaves = vec![false; n];
    let mut stack: Vec<usize> = (0..n).filter(|&at| is_way_out(code, at)).collect();
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

/// A way out of the function that returns to its caller: a return, a tail call to another
/// function, or an indirect jump that does not go through a jump table of this function.
fn is_way_out(code: &[Instruction], at: usize) -> bool {
    let instruction = &code[at];
    match instruction.flow {
        Flow::Return => true,
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
