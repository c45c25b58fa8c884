//! `hotpatch-diff`: which functions and data a fix changed between two builds of a binary.
//!
//! [`diff`] matches the functions of two [`Image`]s (`matching.rs`), compares each pair by
//! normalized disassembly in which addresses are replaced by what they point at
//! (`normalize.rs`), tells apart changes that only move `__LINE__` constants (`lines.rs`), and
//! compares data symbols and type layouts (`data.rs`). It knows nothing of policy.

pub mod code;
mod data;
mod lines;
mod matching;
mod normalize;

pub use code::{Instruction, Reference, Target};
pub use data::{
    DataChange, DataChangeKind, DataDiff, DataEntry, FieldChange, FieldChangeKind, FieldPlace,
    TypeChange, TypeUser, UserStatus,
};
pub use matching::{MatchKind, canonical_name};

use code::Labels;
use hotpatch_image::{Function, Image, TypeId};
use normalize::{ImageIndex, Namer, normalize};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

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
    /// Every matched pair of functions (changed or not), for lifting: a reference of new code
    /// to a fixed-build function goes to its baseline match.
    #[serde(skip)]
    pub matches: Vec<FunctionMatch>,
}

/// A matched pair, by index into each image's `functions`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FunctionMatch {
    pub baseline: usize,
    pub fixed: usize,
    pub kind: MatchKind,
}

/// A function in one build.
#[derive(Clone, Debug, Serialize)]
pub struct FunctionEntry {
    /// Index into its image's `functions`.
    #[serde(skip)]
    pub index: usize,
    /// The typed normalized code, for added functions (what the payload carries).
    #[serde(skip)]
    pub code: Vec<Instruction>,
    pub name: String,
    pub display_name: String,
    pub rva: u64,
    pub size: u64,
}

/// A function whose code changed.
#[derive(Clone, Debug, Serialize)]
pub struct ChangedFunction {
    /// Index of the function in the baseline image's `functions`.
    #[serde(skip)]
    pub baseline_index: usize,
    /// Index of the function in the fixed image's `functions`.
    #[serde(skip)]
    pub fixed_index: usize,
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
    /// The typed normalized code of both builds: what the policy decides on and the lifter
    /// re-targets.
    #[serde(skip)]
    pub baseline_code: Vec<Instruction>,
    #[serde(skip)]
    pub fixed_code: Vec<Instruction>,
    /// `(baseline RVA, fixed RVA)` of each instruction pair the alignment found equal, in
    /// order: the code the change left alone. Source locations use it to tell the lines a fix
    /// touched from lines that only moved.
    #[serde(skip)]
    pub unchanged: Vec<(u64, u64)>,
    /// Normalized disassembly of both builds rendered from the typed code, for `--disasm` and
    /// reports; the fixed listing's labels are renamed to the baseline labels they align with.
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

    let (baseline_index, fixed_index) =
        rayon::join(|| ImageIndex::new(baseline), || ImageIndex::new(fixed));

    // Renamed functions: identical bodies among what names could not pair.
    let no_renames = HashMap::new();
    let bodies =
        |image: &Image<'_>, index: &ImageIndex, left: &[usize]| -> HashMap<usize, String> {
            let namer = Namer::new(image, &no_renames, index);
            left.par_iter()
                .map(|&idx| {
                    let listing = normalize(&image.functions[idx], &namer);
                    (
                        idx,
                        listing
                            .iter()
                            .map(Instruction::render)
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
        &bodies(baseline, &baseline_index, &baseline_left),
        &bodies(fixed, &fixed_index, &fixed_left),
    );
    pairs.extend(body_pairs);

    // The fixed build's functions are named as their baseline match, so callers of a renamed
    // or re-cloned function do not differ because of the name alone.
    // A fixed body that identical code folding merged can pair several times: under its own name
    // and under aliases that are functions of their own in the baseline. It is named for its own
    // pair; the aliases join it through `folded_name_classes`.
    let mut renames: HashMap<String, String> = HashMap::new();
    for pair in &pairs {
        let (b, f) = (
            &baseline.functions[pair.baseline],
            &fixed.functions[pair.fixed],
        );
        let baseline_name = matching::canonical_name(pair.alias.as_deref().unwrap_or(&b.name));
        let alias_of_fixed_body = pair.alias.as_ref().is_some_and(|alias| *alias != f.name);
        if alias_of_fixed_body {
            renames.entry(f.name.clone()).or_insert(baseline_name);
        } else {
            renames.insert(f.name.clone(), baseline_name);
        }
    }
    // References to bodies that identical code folding merged compare by the body's names; a
    // class of names that changed unevenly is split and the pairs compared again (a few rounds
    // at most: each round splits at least one class).
    let mut split = std::collections::BTreeSet::new();
    let (baseline_names, renames, outcomes) = loop {
        let mut round_renames = renames.clone();
        let folded = matching::FoldedNames::new(baseline, fixed, &round_renames, &split);
        let baseline_names = folded.names(baseline, fixed, &mut round_renames);
        let baseline_namer = Namer::new(baseline, &baseline_names, &baseline_index);
        let fixed_namer = Namer::new(fixed, &round_renames, &fixed_index);
        let outcomes: Vec<Outcome> = pairs
            .par_iter()
            .map(|pair| {
                let b = &baseline.functions[pair.baseline];
                let f = &fixed.functions[pair.fixed];
                compare(b, f, pair, baseline, fixed, &baseline_namer, &fixed_namer)
            })
            .collect();
        let changed: Vec<bool> = outcomes
            .iter()
            .map(|o| !matches!(o, Outcome::Unchanged))
            .collect();
        let uneven = folded.uneven(&pairs, &changed, baseline, fixed, &renames);
        if uneven.is_empty() || uneven.is_subset(&split) {
            drop((baseline_namer, fixed_namer));
            break (baseline_names, round_renames, outcomes);
        }
        split.extend(uneven);
    };
    let baseline_namer = Namer::new(baseline, &baseline_names, &baseline_index);
    let fixed_namer = Namer::new(fixed, &renames, &fixed_index);

    let mut matches: Vec<FunctionMatch> = pairs
        .iter()
        .map(|pair| FunctionMatch {
            baseline: pair.baseline,
            fixed: pair.fixed,
            kind: pair.kind,
        })
        .collect();
    matches.sort();

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
        matches,
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
    result.added.par_iter_mut().for_each(|entry| {
        entry.code = normalize(&fixed.functions[entry.index], &fixed_namer);
    });
    (result.data, result.types) = data::diff(baseline, fixed, &baseline_namer, &fixed_namer);
    add_type_users(&mut result, baseline, fixed);

    result
        .changed
        .sort_by(|a, b| (&a.name, a.baseline_rva).cmp(&(&b.name, b.baseline_rva)));
    result
        .renamed
        .sort_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));
    result.line_only.sort_by(|a, b| a.name.cmp(&b.name));
    result
}

/// How many fields deep a parameter's or local's type is followed to the changed type
/// (`p->q->r->s->field` is four): deep enough for real code, and bounded so that a type that
/// reaches everything does not tie every function to every change.
const MAX_FIELD_HOPS: u32 = 4;

/// Fills in the users of each changed type: the functions of either build whose parameters or
/// locals the debug information types as that aggregate (through pointers, typedefs, arrays),
/// or as an aggregate that reaches it through at most [`MAX_FIELD_HOPS`] fields, with what the
/// diff found for each.
fn add_type_users(result: &mut Diff, baseline: &Image<'_>, fixed: &Image<'_>) {
    if result.types.is_empty() {
        return;
    }
    let changed: HashMap<usize, &ChangedFunction> = result
        .changed
        .iter()
        .map(|c| (c.baseline_index, c))
        .collect();
    for change in &mut result.types {
        let (old_reach, new_reach) = (
            baseline.types_reaching(&type_ids(baseline, &change.name), MAX_FIELD_HOPS),
            fixed.types_reaching(&type_ids(fixed, &change.name), MAX_FIELD_HOPS),
        );
        // `None` when the function does not use the type; else the aggregate it reaches the
        // type through, `None` inside when it uses the type itself.
        let uses = |function: &Function<'_>,
                    image: &Image<'_>,
                    reach: &BTreeMap<TypeId, u32>|
         -> Option<Option<String>> {
            let (&id, &hops) = function
                .uses_types
                .iter()
                .filter_map(|id| reach.get_key_value(id))
                .min_by_key(|&(id, hops)| (*hops, *id))?;
            Some((hops > 0).then(|| {
                image
                    .types
                    .get(id.index())
                    .map_or_else(String::new, |layout| layout.name.clone())
            }))
        };
        let mut users = Vec::new();
        for m in &result.matches {
            let (Some(b), Some(f)) = (
                baseline.functions.get(m.baseline),
                fixed.functions.get(m.fixed),
            ) else {
                continue;
            };
            let Some(through) = uses(b, baseline, &old_reach).or(uses(f, fixed, &new_reach)) else {
                continue;
            };
            let (name, display_name, status) = match changed.get(&m.baseline) {
                Some(c) => (&c.name, &c.display_name, UserStatus::Changed),
                None => (&b.name, &b.display_name, UserStatus::Unchanged),
            };
            users.push(TypeUser {
                name: name.clone(),
                display_name: display_name.clone(),
                baseline_index: Some(m.baseline),
                fixed_index: Some(m.fixed),
                status,
                through,
            });
        }
        let unmatched = [
            (&result.added, fixed, &new_reach, UserStatus::Added),
            (&result.removed, baseline, &old_reach, UserStatus::Removed),
        ];
        for (entries, image, reach, status) in unmatched {
            for entry in entries {
                let Some(function) = image.functions.get(entry.index) else {
                    continue;
                };
                if let Some(through) = uses(function, image, reach) {
                    let added = status == UserStatus::Added;
                    users.push(TypeUser {
                        name: entry.name.clone(),
                        display_name: entry.display_name.clone(),
                        baseline_index: (!added).then_some(entry.index),
                        fixed_index: added.then_some(entry.index),
                        status,
                        through,
                    });
                }
            }
        }
        users.sort_by(|a, b| {
            (&a.name, a.baseline_index, a.fixed_index).cmp(&(
                &b.name,
                b.baseline_index,
                b.fixed_index,
            ))
        });
        change.users = users;
    }
}

/// The positions of every layout named `name` in the image's types (sorted by name).
fn type_ids(image: &Image<'_>, name: &str) -> Vec<TypeId> {
    let start = image.types.partition_point(|t| t.name.as_str() < name);
    image.types[start..]
        .iter()
        .take_while(|t| t.name == name)
        .enumerate()
        .filter_map(|(offset, _)| u32::try_from(start + offset).ok().map(TypeId))
        .collect()
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
        .enumerate()
        .filter(|(_, (function, matched))| !**matched && matching::reportable(function))
        .map(|(index, (function, _))| FunctionEntry {
            index,
            code: Vec::new(),
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
    // Most pairs are unchanged: compare the typed form, and render text only when it differs.
    if old.len() == new.len() && old.iter().zip(&new).all(|(o, n)| o.same_form(n)) {
        return Outcome::Unchanged;
    }
    let old_text: Vec<String> = old.iter().map(Instruction::render).collect();
    let new_text: Vec<String> = new.iter().map(Instruction::render).collect();
    if old_text == new_text {
        return Outcome::Unchanged;
    }
    if let Some(delta) = lines::line_only_delta(&old, &new, b, f, baseline, fixed) {
        return Outcome::LineOnly(delta);
    }
    let alignment = align(&old, &new);
    let causes = causes(&old, &new, &alignment, f, fixed);
    let first_difference = first_difference(&old, &new, &old_text, &new_text, &alignment);
    let unchanged = unchanged_pairs(&old, &new, &alignment);
    let fixed_listing = relabel(&new, &alignment);
    let kind = pair.kind;
    // A pair made through a folded alias goes by the alias: that is the function that changed.
    // The alias is the own name of the side that has it as a separate function, so its readable
    // name is that function's.
    let (name, display_name) = match &pair.alias {
        Some(alias) if *alias == f.name => (alias.clone(), f.display_name.clone()),
        Some(alias) if *alias == b.name => (alias.clone(), b.display_name.clone()),
        Some(alias) => (alias.clone(), alias.clone()),
        None => (b.name.clone(), b.display_name.clone()),
    };
    Outcome::Changed(Box::new(ChangedFunction {
        baseline_index: pair.baseline,
        fixed_index: pair.fixed,
        fixed_name: (f.name != name && !f.aliases.contains(&name)).then(|| f.name.clone()),
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
        baseline_code: old,
        fixed_code: new,
        unchanged,
        baseline_listing: old_text,
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

fn align(old: &[Instruction], new: &[Instruction]) -> Alignment {
    let old_keys: Vec<String> = old.iter().map(|i| i.render_with(&Labels::Blank)).collect();
    let new_keys: Vec<String> = new.iter().map(|i| i.render_with(&Labels::Blank)).collect();
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

/// The RVAs of the aligned instruction pairs that are equal, targets included.
fn unchanged_pairs(
    old: &[Instruction],
    new: &[Instruction],
    alignment: &Alignment,
) -> Vec<(u64, u64)> {
    let mut pairs = Vec::new();
    for op in &alignment.ops {
        if let similar::DiffOp::Equal {
            old_index,
            new_index,
            len,
        } = *op
        {
            for k in 0..len {
                let (Some(o), Some(n)) = (old.get(old_index + k), new.get(new_index + k)) else {
                    continue;
                };
                if same_targets(o, n, &alignment.label_map) {
                    pairs.push((o.rva, n.rva));
                }
            }
        }
    }
    pairs
}

/// Whether two aligned instructions with equal blanked text branch to corresponding places.
fn same_targets(o: &Instruction, n: &Instruction, label_map: &HashMap<usize, usize>) -> bool {
    let (old_labels, new_labels) = (o.labels(), n.labels());
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
    old: &[Instruction],
    new: &[Instruction],
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
                    if o.same_skeleton(n) && o.labels().is_empty() && n.labels().is_empty() {
                        old_references.push(o.render());
                        new_references.push(n.render());
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
    old: &[Instruction],
    new: &[Instruction],
    old_text: &[String],
    new_text: &[String],
    alignment: &Alignment,
) -> Option<InstructionDifference> {
    let side = |list: &[Instruction], text: &[String], idx: usize| {
        Some((list.get(idx)?.rva, text.get(idx)?.clone()))
    };
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
        let old_side = old_idx.and_then(|i| side(old, old_text, i));
        let new_side = new_idx.and_then(|i| side(new, new_text, i));
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
/// (or tail-calls) a function whose type changed. Names in the fixed code are baseline names.
fn add_signature_causes(
    changed: &mut [ChangedFunction],
    pairs: &[matching::Pair],
    baseline: &Image<'_>,
    fixed: &Image<'_>,
) {
    let mut changed_types: HashMap<String, (String, String)> = HashMap::new();
    // A pair made through a folded alias compares two different functions' types: the folded
    // body carries the type of the name the debug information described it by, not the alias's.
    for pair in pairs.iter().filter(|pair| pair.alias.is_none()) {
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
            .fixed_code
            .iter()
            .filter(|i| matches!(i.flow, code::Flow::Call | code::Flow::Jump))
            .flat_map(|i| i.references())
            .filter_map(|reference| match &reference.target {
                Target::Function {
                    name, offset: 0, ..
                } if changed_types.contains_key(&**name) => Some(name.to_string()),
                _ => None,
            })
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
fn relabel(new: &[Instruction], alignment: &Alignment) -> Vec<String> {
    let to_baseline: HashMap<usize, usize> = alignment
        .label_map
        .iter()
        .map(|(&old, &new)| (new, old))
        .collect();
    new.iter()
        .map(|instruction| instruction.render_with(&Labels::Mapped(&to_baseline)))
        .collect()
}
