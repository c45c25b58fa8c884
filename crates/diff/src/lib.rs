//! `hotpatch-diff`: which functions and data a fix changed between two builds of a binary.
//!
//! [`diff`] matches the functions of two [`Image`]s (`matching.rs`), compares each pair by
//! normalized disassembly in which addresses are replaced by what they point at
//! (`normalize.rs`), tells apart changes that only move `__LINE__` constants (`lines.rs`), and
//! compares data symbols and type layouts (`data.rs`). It knows nothing of policy.

mod data;
mod lines;
mod matching;
mod normalize;

pub use data::{DataChange, DataChangeKind, DataDiff, DataEntry, TypeChange};
pub use matching::{MatchKind, canonical_name};

use hotpatch_image::{Function, Image};
use normalize::{Namer, NormalizedInstruction, normalize};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::HashMap;

/// The version of the JSON document [`Diff`] serializes to.
pub const SCHEMA: &str = "hotpatch-diff/1";

/// Options of a diff.
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// Count functions whose only change is a shifted `__LINE__` constant as unchanged.
    pub ignore_line_only: bool,
}

/// Everything that differs between two builds.
#[derive(Clone, Debug, Serialize)]
pub struct Diff {
    pub schema: &'static str,
    /// Matched functions whose normalized code differs, by name.
    pub changed: Vec<ChangedFunction>,
    /// Functions only in the fixed build, by name.
    pub added: Vec<FunctionEntry>,
    /// Functions only in the baseline build, by name.
    pub removed: Vec<FunctionEntry>,
    /// Functions matched under another name, by old name.
    pub renamed: Vec<Renamed>,
    /// Functions whose only differences are `__LINE__` constants shifted by an edit above them.
    pub line_only: Vec<LineOnly>,
    /// How many matched functions are unchanged.
    pub unchanged: usize,
    pub data: DataDiff,
    /// Aggregate types whose layout differs.
    pub types: Vec<TypeChange>,
}

/// A function in one build.
#[derive(Clone, Debug, Serialize)]
pub struct FunctionEntry {
    pub name: String,
    pub display_name: String,
    pub rva: u64,
    pub size: u64,
}

/// A function whose code changed.
#[derive(Clone, Debug, Serialize)]
pub struct ChangedFunction {
    /// The baseline name (decorated).
    pub name: String,
    pub display_name: String,
    /// The fixed build's name when the match was not by exact name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_name: Option<String>,
    pub baseline_rva: u64,
    pub fixed_rva: u64,
    pub baseline_size: u64,
    pub fixed_size: u64,
    pub matched_by: MatchKind,
    pub confidence: f32,
    pub causes: Vec<Cause>,
    /// The first pair of normalized instructions that differ.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_difference: Option<InstructionDifference>,
    /// Normalized disassembly of both builds, for `--disasm` and reports.
    #[serde(skip)]
    pub baseline_listing: Vec<String>,
    #[serde(skip)]
    pub fixed_listing: Vec<String>,
}

/// Why a function counts as changed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Cause {
    /// Its own instructions differ (opcodes, registers, immediates, control flow).
    Instructions,
    /// The same instructions point at different data, constants or functions.
    References {
        baseline: Vec<String>,
        fixed: Vec<String>,
    },
    /// Code the compiler inlined from these functions lies where the instructions differ.
    InlinedCode { inlinees: Vec<String> },
    /// The function's own type (return or parameter types) differs in the debug information.
    SignatureChanged { baseline: String, fixed: String },
    /// It calls functions whose type differs between the builds.
    CalleeSignatureChanged { callees: Vec<String> },
}

impl Cause {
    /// The cause in a few words, for summaries and reports.
    pub fn describe(&self) -> String {
        match self {
            Cause::Instructions => "instructions".to_owned(),
            Cause::References { .. } => "references".to_owned(),
            Cause::InlinedCode { inlinees } => format!("inlined code of {}", inlinees.join(", ")),
            Cause::SignatureChanged { baseline, fixed } => {
                format!("signature {baseline} -> {fixed}")
            }
            Cause::CalleeSignatureChanged { callees } => {
                format!("callee signature changed: {}", callees.join(", "))
            }
        }
    }
}

/// The first instruction pair that differs.
#[derive(Clone, Debug, Serialize)]
pub struct InstructionDifference {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_rva: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_rva: Option<u64>,
    pub baseline: String,
    pub fixed: String,
}

/// A function matched under another name.
#[derive(Clone, Debug, Serialize)]
pub struct Renamed {
    pub from: String,
    pub to: String,
    pub matched_by: MatchKind,
    pub confidence: f32,
}

/// A function whose only differences are line-number constants.
#[derive(Clone, Debug, Serialize)]
pub struct LineOnly {
    pub name: String,
    /// How far the function moved in its source file, in lines.
    pub line_delta: i64,
}

/// Compares two builds.
pub fn diff(baseline: &Image<'_>, fixed: &Image<'_>, config: Config) -> Diff {
    let (mut pairs, baseline_left, fixed_left) = matching::match_by_name(baseline, fixed);

    // Renamed functions: identical bodies among what names could not pair.
    let no_renames = HashMap::new();
    let bodies = |image: &Image<'_>, left: &[usize]| -> HashMap<usize, String> {
        let namer = Namer::new(image, &no_renames);
        left.par_iter()
            .map(|&idx| {
                let listing = normalize(&image.functions[idx], &namer);
                (
                    idx,
                    listing
                        .into_iter()
                        .map(|i| i.text)
                        .collect::<Vec<_>>()
                        .join("\n"),
                )
            })
            .filter(|(_, body)| !body.is_empty())
            .collect()
    };
    let body_pairs = matching::match_by_body(
        &baseline_left,
        &fixed_left,
        &bodies(baseline, &baseline_left),
        &bodies(fixed, &fixed_left),
    );
    pairs.extend(body_pairs);

    // The fixed build's functions are named as their baseline match, so callers of a renamed
    // or re-cloned function do not differ because of the name alone.
    let renames: HashMap<String, String> = pairs
        .iter()
        .map(|pair| {
            let (b, f) = (
                &baseline.functions[pair.baseline],
                &fixed.functions[pair.fixed],
            );
            let baseline_name = pair.alias.as_deref().unwrap_or(&b.name);
            (f.name.clone(), matching::canonical_name(baseline_name))
        })
        .collect();
    let baseline_namer = Namer::new(baseline, &no_renames);
    let fixed_namer = Namer::new(fixed, &renames);

    let outcomes: Vec<Outcome> = pairs
        .par_iter()
        .map(|pair| {
            let b = &baseline.functions[pair.baseline];
            let f = &fixed.functions[pair.fixed];
            compare(b, f, pair, baseline, fixed, &baseline_namer, &fixed_namer)
        })
        .collect();

    let mut result = Diff {
        schema: SCHEMA,
        changed: Vec::new(),
        added: Vec::new(),
        removed: Vec::new(),
        renamed: Vec::new(),
        line_only: Vec::new(),
        unchanged: 0,
        data: DataDiff::default(),
        types: Vec::new(),
    };
    for (pair, outcome) in pairs.iter().zip(outcomes) {
        let (b, f) = (
            &baseline.functions[pair.baseline],
            &fixed.functions[pair.fixed],
        );
        if pair.kind == MatchKind::IdenticalBody {
            result.renamed.push(Renamed {
                from: b.name.clone(),
                to: f.name.clone(),
                matched_by: pair.kind,
                confidence: pair.kind.confidence(),
            });
        }
        match outcome {
            Outcome::Unchanged => result.unchanged += 1,
            Outcome::LineOnly(line_delta) if config.ignore_line_only => {
                let _ = line_delta;
                result.unchanged += 1;
            }
            Outcome::LineOnly(line_delta) => result.line_only.push(LineOnly {
                name: b.name.clone(),
                line_delta,
            }),
            Outcome::Changed(changed) => result.changed.push(*changed),
        }
    }
    add_signature_causes(&mut result.changed, &pairs, baseline, fixed);
    let matched_baseline: Vec<bool> =
        flags(baseline.functions.len(), pairs.iter().map(|p| p.baseline));
    let matched_fixed: Vec<bool> = flags(fixed.functions.len(), pairs.iter().map(|p| p.fixed));
    result.removed = unmatched_entries(baseline, &matched_baseline);
    result.added = unmatched_entries(fixed, &matched_fixed);
    (result.data, result.types) = data::diff(baseline, fixed, &baseline_namer, &fixed_namer);

    result
        .changed
        .sort_by(|a, b| (&a.name, a.baseline_rva).cmp(&(&b.name, b.baseline_rva)));
    result
        .renamed
        .sort_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));
    result.line_only.sort_by(|a, b| a.name.cmp(&b.name));
    result
}

fn flags(len: usize, set: impl Iterator<Item = usize>) -> Vec<bool> {
    let mut flags = vec![false; len];
    for idx in set {
        flags[idx] = true;
    }
    flags
}

fn unmatched_entries(image: &Image<'_>, matched: &[bool]) -> Vec<FunctionEntry> {
    let mut entries: Vec<FunctionEntry> = image
        .functions
        .iter()
        .zip(matched)
        .filter(|(function, matched)| !**matched && matching::reportable(function))
        .map(|(function, _)| FunctionEntry {
            name: function.name.clone(),
            display_name: function.display_name.clone(),
            rva: function.rva,
            size: function.size,
        })
        .collect();
    entries.sort_by(|a, b| (&a.name, a.rva).cmp(&(&b.name, b.rva)));
    entries
}

enum Outcome {
    Unchanged,
    LineOnly(i64),
    Changed(Box<ChangedFunction>),
}

fn compare(
    b: &Function<'_>,
    f: &Function<'_>,
    pair: &matching::Pair,
    baseline: &Image<'_>,
    fixed: &Image<'_>,
    baseline_namer: &Namer<'_>,
    fixed_namer: &Namer<'_>,
) -> Outcome {
    let old = normalize(b, baseline_namer);
    let new = normalize(f, fixed_namer);
    let texts_equal = old.len() == new.len() && old.iter().zip(&new).all(|(o, n)| o.text == n.text);
    if texts_equal {
        return Outcome::Unchanged;
    }
    if let Some(delta) = lines::line_only_delta(&old, &new, b, f, baseline, fixed) {
        return Outcome::LineOnly(delta);
    }
    let alignment = align(&old, &new);
    let causes = causes(&old, &new, &alignment, f, fixed);
    let first_difference = first_difference(&old, &new, &alignment);
    let fixed_listing = relabel(&new, &alignment);
    let kind = pair.kind;
    // A pair made through a folded alias goes by the alias: that is the function that changed.
    let (name, display_name) = match &pair.alias {
        Some(alias) => (alias.clone(), alias.clone()),
        None => (b.name.clone(), b.display_name.clone()),
    };
    Outcome::Changed(Box::new(ChangedFunction {
        fixed_name: (f.name != name).then(|| f.name.clone()),
        name,
        display_name,
        baseline_rva: b.rva,
        fixed_rva: f.rva,
        baseline_size: b.size,
        fixed_size: f.size,
        matched_by: kind,
        confidence: kind.confidence(),
        causes,
        first_difference,
        baseline_listing: old.into_iter().map(|i| i.text).collect(),
        fixed_listing,
    }))
}

/// The two listings aligned: instructions are paired on their text with branch labels blanked,
/// so an insertion does not make every later branch look different.
struct Alignment {
    ops: Vec<similar::DiffOp>,
    /// Baseline instruction index to fixed instruction index, for aligned equal instructions.
    label_map: HashMap<usize, usize>,
}

fn align(old: &[NormalizedInstruction], new: &[NormalizedInstruction]) -> Alignment {
    let old_keys: Vec<String> = old.iter().map(|i| blank_labels(&i.text)).collect();
    let new_keys: Vec<String> = new.iter().map(|i| blank_labels(&i.text)).collect();
    let ops = similar::capture_diff_slices(similar::Algorithm::Myers, &old_keys, &new_keys);
    let mut label_map = HashMap::new();
    // Equal runs pair up, and so do replaced runs of equal length: a branch to an instruction
    // whose operand changed still goes to the corresponding place.
    for op in &ops {
        let (old_index, new_index, len) = match *op {
            similar::DiffOp::Equal {
                old_index,
                new_index,
                len,
            } => (old_index, new_index, len),
            similar::DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } if old_len == new_len => (old_index, new_index, old_len),
            _ => continue,
        };
        for k in 0..len {
            label_map.insert(old_index + k, new_index + k);
        }
    }
    Alignment { ops, label_map }
}

/// `jmp L12` and `jumptable[L3,L4]` with the indices removed.
fn blank_labels(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut previous: Option<char> = None;
    while let Some(c) = chars.next() {
        out.push(c);
        let starts_label = c == 'L' && !previous.is_some_and(|p| p.is_alphanumeric() || p == '_');
        if starts_label && chars.peek().is_some_and(char::is_ascii_digit) {
            while chars.peek().is_some_and(char::is_ascii_digit) {
                chars.next();
            }
        }
        previous = Some(c);
    }
    out
}

/// The instruction indices a normalized text branches to (`L12` → 12).
fn labels(text: &str) -> Vec<usize> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    for (at, _) in text.match_indices('L') {
        let boundary = at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
        let digits: String = text[at + 1..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if boundary && !digits.is_empty() {
            found.extend(digits.parse::<usize>().ok());
        }
    }
    found
}

/// Whether two aligned instructions with equal blanked text branch to corresponding places.
fn same_targets(
    o: &NormalizedInstruction,
    n: &NormalizedInstruction,
    label_map: &HashMap<usize, usize>,
) -> bool {
    let (old_labels, new_labels) = (labels(&o.text), labels(&n.text));
    old_labels.len() == new_labels.len()
        && old_labels
            .iter()
            .zip(&new_labels)
            .all(|(ol, nl)| label_map.get(ol) == Some(nl))
}

/// Classifies the differing instructions: where only what they point at differs, the cause is
/// the references; anything else (including a branch that now goes elsewhere) is an instruction
/// change; differences inside inlined ranges also name the inlinee.
fn causes(
    old: &[NormalizedInstruction],
    new: &[NormalizedInstruction],
    alignment: &Alignment,
    f: &Function<'_>,
    fixed: &Image<'_>,
) -> Vec<Cause> {
    let mut instructions = false;
    let mut old_references = Vec::new();
    let mut new_references = Vec::new();
    let mut differing_fixed_rvas = Vec::new();
    for op in &alignment.ops {
        match *op {
            similar::DiffOp::Equal {
                old_index,
                new_index,
                len,
            } => {
                for k in 0..len {
                    let (o, n) = (&old[old_index + k], &new[new_index + k]);
                    if !same_targets(o, n, &alignment.label_map) {
                        instructions = true;
                        differing_fixed_rvas.push(n.rva);
                    }
                }
            }
            similar::DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } if old_len == new_len => {
                for k in 0..old_len {
                    let (o, n) = (&old[old_index + k], &new[new_index + k]);
                    differing_fixed_rvas.push(n.rva);
                    if o.skeleton == n.skeleton && labels(&o.text).is_empty() {
                        old_references.push(o.text.clone());
                        new_references.push(n.text.clone());
                    } else {
                        instructions = true;
                    }
                }
            }
            ref other => {
                instructions = true;
                for idx in other.new_range() {
                    differing_fixed_rvas.push(new[idx].rva);
                }
            }
        }
    }
    let mut causes = Vec::new();
    if instructions {
        causes.push(Cause::Instructions);
    }
    if !old_references.is_empty() {
        causes.push(Cause::References {
            baseline: old_references,
            fixed: new_references,
        });
    }
    let mut inlinees: Vec<String> = fixed
        .inline_sites
        .iter()
        .filter(|site| site.caller_rva == f.rva)
        .filter(|site| {
            site.ranges.iter().any(|&(start, len)| {
                differing_fixed_rvas
                    .iter()
                    .any(|&rva| rva >= start && rva < start.saturating_add(len))
            })
        })
        .map(|site| site.inlinee.clone())
        .collect();
    inlinees.sort();
    inlinees.dedup();
    if !inlinees.is_empty() {
        causes.push(Cause::InlinedCode { inlinees });
    }
    causes
}

/// The first difference in the alignment (not merely the first position where the listings
/// differ, which after an insertion is usually a shifted label).
fn first_difference(
    old: &[NormalizedInstruction],
    new: &[NormalizedInstruction],
    alignment: &Alignment,
) -> Option<InstructionDifference> {
    let text_at =
        |list: &[NormalizedInstruction], idx: usize| list.get(idx).map(|i| (i.rva, i.text.clone()));
    for op in &alignment.ops {
        let (old_idx, new_idx) = match *op {
            similar::DiffOp::Equal {
                old_index,
                new_index,
                len,
            } => {
                let Some(k) = (0..len).find(|&k| {
                    !same_targets(
                        &old[old_index + k],
                        &new[new_index + k],
                        &alignment.label_map,
                    )
                }) else {
                    continue;
                };
                (Some(old_index + k), Some(new_index + k))
            }
            similar::DiffOp::Delete { old_index, .. } => (Some(old_index), None),
            similar::DiffOp::Insert { new_index, .. } => (None, Some(new_index)),
            similar::DiffOp::Replace {
                old_index,
                new_index,
                ..
            } => (Some(old_index), Some(new_index)),
        };
        let old_side = old_idx.and_then(|i| text_at(old, i));
        let new_side = new_idx.and_then(|i| text_at(new, i));
        return Some(InstructionDifference {
            baseline_rva: old_side.as_ref().map(|(rva, _)| *rva),
            fixed_rva: new_side.as_ref().map(|(rva, _)| *rva),
            baseline: old_side
                .map(|(_, text)| text)
                .unwrap_or_else(|| "(nothing: inserted)".into()),
            fixed: new_side
                .map(|(_, text)| text)
                .unwrap_or_else(|| "(nothing: deleted)".into()),
        });
    }
    None
}

/// Adds the signature causes: a changed function whose own type changed, and one that calls
/// (or tail-calls) a function whose type changed. Names in listings are baseline names.
fn add_signature_causes(
    changed: &mut [ChangedFunction],
    pairs: &[matching::Pair],
    baseline: &Image<'_>,
    fixed: &Image<'_>,
) {
    let mut changed_types: HashMap<String, (String, String)> = HashMap::new();
    for pair in pairs {
        let (b, f) = (
            &baseline.functions[pair.baseline],
            &fixed.functions[pair.fixed],
        );
        if let (Some(old), Some(new)) = (&b.signature, &f.signature)
            && old != new
        {
            changed_types.insert(
                matching::canonical_name(&b.name),
                (old.clone(), new.clone()),
            );
        }
    }
    if changed_types.is_empty() {
        return;
    }
    for function in changed {
        if let Some((old, new)) = changed_types.get(&matching::canonical_name(&function.name)) {
            function.causes.push(Cause::SignatureChanged {
                baseline: old.clone(),
                fixed: new.clone(),
            });
        }
        let mut callees: Vec<String> = function
            .fixed_listing
            .iter()
            .filter_map(|line| {
                line.strip_prefix("call ")
                    .or_else(|| line.strip_prefix("jmp "))
            })
            .filter(|target| changed_types.contains_key(*target))
            .map(str::to_owned)
            .collect();
        callees.sort();
        callees.dedup();
        if !callees.is_empty() {
            function
                .causes
                .push(Cause::CalleeSignatureChanged { callees });
        }
        function.causes.sort();
    }
}

/// The fixed listing with each branch label renamed to the baseline label of the instruction it
/// aligns with (`L7'` where there is none), so a unified diff shows the instructions that changed
/// rather than every branch after an insertion.
fn relabel(new: &[NormalizedInstruction], alignment: &Alignment) -> Vec<String> {
    let to_baseline: HashMap<usize, usize> = alignment
        .label_map
        .iter()
        .map(|(&old, &new)| (new, old))
        .collect();
    new.iter()
        .map(|instruction| {
            let text = &instruction.text;
            let bytes = text.as_bytes();
            let mut out = String::with_capacity(text.len());
            let mut at = 0;
            while at < text.len() {
                let boundary =
                    at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
                let digits = text[at + 1..]
                    .bytes()
                    .take_while(u8::is_ascii_digit)
                    .count();
                if bytes[at] == b'L' && boundary && digits > 0 {
                    let label: usize = text[at + 1..at + 1 + digits].parse().unwrap_or(usize::MAX);
                    match to_baseline.get(&label) {
                        Some(old) => out.push_str(&format!("L{old}")),
                        None => out.push_str(&format!("L{label}'")),
                    }
                    at += 1 + digits;
                } else {
                    let next = text[at..].chars().next().map_or(1, char::len_utf8);
                    out.push_str(&text[at..at + next]);
                    at += next;
                }
            }
            out
        })
        .collect()
}
