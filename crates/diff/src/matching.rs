//! Pairing the functions of two builds: by exact name (static functions also by compilation
//! unit), then by name without compiler clone suffixes, then by identical normalized body for
//! what is left (a rename).

use hotpatch_image::{Function, Image, Linkage};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// How a pair of functions was matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatchKind {
    /// The same decorated name (and compilation unit, for static functions of the same name).
    ExactName,
    /// The same name once compiler clone suffixes (`.isra.0`, `.constprop.1`, `.part.0`,
    /// `.cold`) and static-local numbers are removed.
    CloneName,
    /// Different names, identical normalized body.
    IdenticalBody,
}

impl MatchKind {
    /// How sure the match is, from 0 to 1.
    pub fn confidence(self) -> f32 {
        match self {
            MatchKind::ExactName => 1.0,
            MatchKind::CloneName => 0.9,
            MatchKind::IdenticalBody => 0.8,
        }
    }
}

/// A matched pair: indices into the baseline and fixed `functions`.
#[derive(Clone, Debug)]
pub(crate) struct Pair {
    pub baseline: usize,
    pub fixed: usize,
    pub kind: MatchKind,
    /// The name the pair goes by when one side was a folded alias (identical code folding) of a
    /// body the other side has on its own.
    pub alias: Option<String>,
}

/// GCC clone and partial-inlining suffixes; the numbers after them shift between builds.
const CLONE_SUFFIXES: &[&str] = &[
    ".isra",
    ".constprop",
    ".part",
    ".cold",
    ".lto_priv",
    ".localalias",
    ".llvm",
];

/// The name without compiler-generated suffixes: `foo.isra.0` and `foo.constprop.3` become
/// `foo`; a numbered static local `count.3` becomes `count`.
pub fn canonical_name(name: &str) -> String {
    let mut base = name;
    loop {
        let trimmed = match base.rfind('.') {
            Some(dot) if dot > 0 => {
                let suffix = &base[dot..];
                let numeric = suffix.len() > 1 && suffix[1..].bytes().all(|b| b.is_ascii_digit());
                if numeric || CLONE_SUFFIXES.contains(&suffix) {
                    &base[..dot]
                } else {
                    base
                }
            }
            _ => base,
        };
        if trimmed == base {
            return strip_msvc_build_hashes(base);
        }
        base = trimmed;
    }
}

/// MSVC names anonymous namespaces `?A0x` plus a hash of the file and build (`?A0x1b2c3d4e`),
/// and lambdas `<lambda_` plus a hash (`<lambda_9f0e...>`); both change on every rebuild, so
/// they compare without the hash.
fn strip_msvc_build_hashes(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = ["?A0x", "<lambda_"]
        .iter()
        .filter_map(|m| rest.find(m).map(|i| (i, *m)))
        .min()
    {
        let (index, marker) = at;
        out.push_str(&rest[..index + marker.len()]);
        rest = &rest[index + marker.len()..];
        let hash_len = rest.bytes().take_while(u8::is_ascii_hexdigit).count();
        rest = &rest[hash_len..];
    }
    out.push_str(rest);
    out
}

/// Pairs functions by name. Returns the pairs and the unmatched indices on each side.
pub(crate) fn match_by_name(
    baseline: &Image<'_>,
    fixed: &Image<'_>,
) -> (Vec<Pair>, Vec<usize>, Vec<usize>) {
    let mut pairs = Vec::new();
    let mut baseline_left: Vec<bool> = vec![true; baseline.functions.len()];
    let mut fixed_left: Vec<bool> = vec![true; fixed.functions.len()];
    for (kind, key) in [
        (
            MatchKind::ExactName,
            (|f: &Function<'_>| f.name.clone()) as fn(&Function<'_>) -> String,
        ),
        (MatchKind::CloneName, |f: &Function<'_>| {
            canonical_name(&f.name)
        }),
    ] {
        let baseline_groups = group(&baseline.functions, &baseline_left, key);
        let fixed_groups = group(&fixed.functions, &fixed_left, key);
        for (name, baseline_indices) in &baseline_groups {
            let Some(fixed_indices) = fixed_groups.get(name) else {
                continue;
            };
            for (b, f) in pair_group(baseline, fixed, baseline_indices, fixed_indices) {
                baseline_left[b] = false;
                fixed_left[f] = false;
                pairs.push(Pair {
                    baseline: b,
                    fixed: f,
                    kind,
                    alias: None,
                });
            }
        }
    }
    // A body folded under several names on one side and split on the other: the split-off
    // function pairs with the folded body it was an alias of.
    let aliases_of = |functions: &[Function<'_>]| -> BTreeMap<String, usize> {
        let mut map = BTreeMap::new();
        for (idx, function) in functions.iter().enumerate() {
            for alias in &function.aliases {
                map.entry(alias.clone()).or_insert(idx);
            }
        }
        map
    };
    let baseline_aliases = aliases_of(&baseline.functions);
    for (f, left) in fixed_left.iter_mut().enumerate() {
        if let Some(&b) = baseline_aliases
            .get(&fixed.functions[f].name)
            .filter(|_| *left)
        {
            *left = false;
            baseline_left[b] = false;
            let alias = Some(fixed.functions[f].name.clone());
            pairs.push(Pair {
                baseline: b,
                fixed: f,
                kind: MatchKind::ExactName,
                alias,
            });
        }
    }
    let fixed_aliases = aliases_of(&fixed.functions);
    for (b, left) in baseline_left.iter_mut().enumerate() {
        if let Some(&f) = fixed_aliases
            .get(&baseline.functions[b].name)
            .filter(|_| *left)
        {
            *left = false;
            fixed_left[f] = false;
            let alias = Some(baseline.functions[b].name.clone());
            pairs.push(Pair {
                baseline: b,
                fixed: f,
                kind: MatchKind::ExactName,
                alias,
            });
        }
    }
    let unmatched = |left: &[bool]| {
        left.iter()
            .enumerate()
            .filter(|(_, l)| **l)
            .map(|(i, _)| i)
            .collect()
    };
    (pairs, unmatched(&baseline_left), unmatched(&fixed_left))
}

/// Names under which references to folded bodies (identical code folding) are compared.
///
/// With `/OPT:ICF` (or gcc's `-fipa-icf`) one body answers to several names, and the debug
/// information names it by one of them, chosen by the linker; the other build may have the same
/// names as separate bodies, or folded the other way. A reference to a body is the same as a
/// reference in the other build when the names at the two targets share one (a call to the
/// folded `{A, B}` equals a call to `B`'s own body). Names that share a body in either build form
/// one class (union-find), and every name of a class is compared as its smallest member, so the
/// comparison stays a text equality and reaches pointers inside read-only data (vtables) too.
/// A class joins names only through folded bodies, so it differs from the pairwise rule only
/// for a chain across both builds (`{A, B}` in one, `{B, C}` in the other, and a reference that
/// went from `A` to `C`), which compares equal here; ICF folds only identical code, so `A`, `B`
/// and `C` held the same instructions in one build or the other.
///
/// A class whose names changed unevenly (`check_user_name` changed, the `check_group_name` it
/// was folded with did not) is split again (see [`FoldedNames::uneven`]): the folded body cannot
/// be redirected for one name only, so a caller that now reaches the changed name's own body
/// has changed.
pub(crate) struct FoldedNames {
    classes: NameClasses,
}

impl FoldedNames {
    /// The classes of both builds' folded bodies, leaving out every body that has a name in
    /// `split`. `fixed_renames` maps a fixed function's name to the baseline name of its match.
    pub(crate) fn new(
        baseline: &Image<'_>,
        fixed: &Image<'_>,
        fixed_renames: &HashMap<String, String>,
        split: &BTreeSet<String>,
    ) -> Self {
        let mut classes = NameClasses::default();
        let mut join = |names: Vec<String>| {
            if names.iter().any(|name| split.contains(name)) {
                return;
            }
            for name in &names[1..] {
                classes.union(&names[0], name);
            }
        };
        for function in baseline.functions.iter().filter(|f| !f.aliases.is_empty()) {
            join(
                std::iter::once(&function.name)
                    .chain(&function.aliases)
                    .map(|name| canonical_name(name))
                    .collect(),
            );
        }
        for function in fixed.functions.iter().filter(|f| !f.aliases.is_empty()) {
            join(
                std::iter::once(&function.name)
                    .chain(&function.aliases)
                    .map(|name| fixed_key(name, fixed_renames))
                    .collect(),
            );
        }
        FoldedNames { classes }
    }

    /// The names to compare under: returns the baseline's (function name to compared name) and
    /// adds the fixed build's to `fixed_renames`.
    pub(crate) fn names(
        &self,
        baseline: &Image<'_>,
        fixed: &Image<'_>,
        fixed_renames: &mut HashMap<String, String>,
    ) -> HashMap<String, String> {
        let mut baseline_names = HashMap::new();
        if self.classes.parent.is_empty() {
            return baseline_names;
        }
        for function in &baseline.functions {
            let key = canonical_name(&function.name);
            let representative = self.classes.representative(&key);
            if representative != key {
                baseline_names.insert(function.name.clone(), representative);
            }
        }
        let mut fixed_updates = Vec::new();
        for function in &fixed.functions {
            let key = fixed_key(&function.name, fixed_renames);
            let representative = self.classes.representative(&key);
            if representative != key {
                fixed_updates.push((function.name.clone(), representative));
            }
        }
        fixed_renames.extend(fixed_updates);
        baseline_names
    }

    /// The names of every class some of whose pairs changed while others did not;
    /// `changed[i]` says whether `pairs[i]` differs.
    pub(crate) fn uneven(
        &self,
        pairs: &[Pair],
        changed: &[bool],
        baseline: &Image<'_>,
        fixed: &Image<'_>,
        fixed_renames: &HashMap<String, String>,
    ) -> BTreeSet<String> {
        if self.classes.parent.is_empty() {
            return BTreeSet::new();
        }
        // Per class: (some pair changed, some pair unchanged).
        let mut seen: BTreeMap<String, (bool, bool)> = BTreeMap::new();
        for (pair, &changed) in pairs.iter().zip(changed) {
            let mut names = vec![
                canonical_name(&baseline.functions[pair.baseline].name),
                fixed_key(&fixed.functions[pair.fixed].name, fixed_renames),
            ];
            names.extend(pair.alias.as_deref().map(canonical_name));
            for name in names {
                if !self.classes.parent.contains_key(&name) {
                    continue;
                }
                let entry = seen.entry(self.classes.root(&name)).or_default();
                entry.0 |= changed;
                entry.1 |= !changed;
            }
        }
        let uneven: BTreeSet<String> = seen
            .into_iter()
            .filter(|(_, (some_changed, some_unchanged))| *some_changed && *some_unchanged)
            .map(|(root, _)| root)
            .collect();
        self.classes
            .parent
            .keys()
            .filter(|name| uneven.contains(&self.classes.root(name)))
            .cloned()
            .collect()
    }
}

/// The name a fixed function is compared under before folding: its baseline match's name.
fn fixed_key(name: &str, renames: &HashMap<String, String>) -> String {
    renames
        .get(name)
        .cloned()
        .unwrap_or_else(|| canonical_name(name))
}

/// Union-find over names; a class is represented by its smallest name, so the result does not
/// depend on the order of the unions.
#[derive(Default)]
struct NameClasses {
    parent: BTreeMap<String, String>,
}

impl NameClasses {
    fn root(&self, name: &str) -> String {
        let mut current = name.to_owned();
        while let Some(parent) = self.parent.get(&current).filter(|p| **p != current) {
            current = parent.clone();
        }
        current
    }

    fn union(&mut self, a: &str, b: &str) {
        let (root_a, root_b) = (self.root(a), self.root(b));
        let (small, large) = if root_a <= root_b {
            (root_a, root_b)
        } else {
            (root_b, root_a)
        };
        self.parent
            .entry(small.clone())
            .or_insert_with(|| small.clone());
        self.parent.insert(large, small);
    }

    fn representative(&self, name: &str) -> String {
        if self.parent.contains_key(name) {
            self.root(name)
        } else {
            name.to_owned()
        }
    }
}

fn group(
    functions: &[Function<'_>],
    left: &[bool],
    key: fn(&Function<'_>) -> String,
) -> BTreeMap<String, Vec<usize>> {
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (idx, function) in functions.iter().enumerate() {
        if left[idx] && function.size > 0 {
            groups.entry(key(function)).or_default().push(idx);
        }
    }
    groups
}

/// Within one name: a lone function on each side pairs directly; several (static functions of
/// the same name in different compilation units, or clones) pair by compilation unit and
/// linkage first, then in address order.
fn pair_group(
    baseline: &Image<'_>,
    fixed: &Image<'_>,
    baseline_indices: &[usize],
    fixed_indices: &[usize],
) -> Vec<(usize, usize)> {
    if let ([b], [f]) = (baseline_indices, fixed_indices) {
        return vec![(*b, *f)];
    }
    let mut pairs = Vec::new();
    let mut fixed_taken = vec![false; fixed_indices.len()];
    let mut baseline_rest = Vec::new();
    for &b in baseline_indices {
        let base = &baseline.functions[b];
        let found = fixed_indices.iter().enumerate().find(|(slot, f)| {
            let candidate = &fixed.functions[**f];
            !fixed_taken[*slot]
                && candidate.compile_unit == base.compile_unit
                && candidate.linkage == base.linkage
        });
        match found {
            Some((slot, &f)) => {
                fixed_taken[slot] = true;
                pairs.push((b, f));
            }
            None => baseline_rest.push(b),
        }
    }
    let fixed_rest: Vec<usize> = fixed_indices
        .iter()
        .enumerate()
        .filter(|(slot, _)| !fixed_taken[*slot])
        .map(|(_, f)| *f)
        .collect();
    pairs.extend(baseline_rest.into_iter().zip(fixed_rest));
    pairs
}

/// Pairs leftover functions whose normalized bodies are identical (renamed functions). Only
/// one-to-one body matches count, so a common body (a stub) never pairs arbitrarily.
pub(crate) fn match_by_body(
    baseline_left: &[usize],
    fixed_left: &[usize],
    baseline_bodies: &HashMap<usize, String>,
    fixed_bodies: &HashMap<usize, String>,
) -> Vec<Pair> {
    let mut by_body: BTreeMap<&str, (Vec<usize>, Vec<usize>)> = BTreeMap::new();
    for &b in baseline_left {
        if let Some(body) = baseline_bodies.get(&b) {
            by_body.entry(body).or_default().0.push(b);
        }
    }
    for &f in fixed_left {
        if let Some(body) = fixed_bodies.get(&f) {
            by_body.entry(body).or_default().1.push(f);
        }
    }
    by_body
        .values()
        .filter_map(|(b, f)| match (b.as_slice(), f.as_slice()) {
            ([b], [f]) => Some(Pair {
                baseline: *b,
                fixed: *f,
                kind: MatchKind::IdenticalBody,
                alias: None,
            }),
            _ => None,
        })
        .collect()
}

/// Whether a function is worth reporting as added or removed: it has code, and static
/// functions the compiler made (clones) are reported under their source name.
pub(crate) fn reportable(function: &Function<'_>) -> bool {
    function.size > 0
        && !function.code.is_empty()
        && (function.has_debug_info || function.linkage == Linkage::Global)
}

#[cfg(test)]
mod tests {
    use super::{NameClasses, canonical_name};

    /// Names that share a body in either build form one class, named by its smallest member
    /// whatever the order of the unions; names never folded stay themselves.
    #[test]
    fn folded_names_form_classes_named_by_their_smallest_member() {
        let folds = [
            (
                "__scrt_stub_for_acrt_thread_attach",
                "__scrt_stub_for_acrt_initialize",
            ),
            (
                "__scrt_stub_for_acrt_uninitialize",
                "__scrt_stub_for_acrt_thread_attach",
            ),
            ("??_Gexception", "??_Gbad_alloc"),
        ];
        for order in [folds.to_vec(), folds.iter().rev().copied().collect()] {
            let mut classes = NameClasses::default();
            for (a, b) in &order {
                classes.union(a, b);
            }
            for name in [
                "__scrt_stub_for_acrt_initialize",
                "__scrt_stub_for_acrt_thread_attach",
                "__scrt_stub_for_acrt_uninitialize",
            ] {
                assert_eq!(
                    classes.representative(name),
                    "__scrt_stub_for_acrt_initialize"
                );
            }
            assert_eq!(classes.representative("??_Gexception"), "??_Gbad_alloc");
            assert_eq!(classes.representative("main"), "main");
        }
    }

    #[test]
    fn canonical_names() {
        for (name, expect) in [
            ("parse_header", "parse_header"),
            ("parse_header.isra.0", "parse_header"),
            ("parse_header.constprop.3.cold", "parse_header"),
            ("count.3", "count"),
            ("?helper@?A0x1b2c3d4e@@YAHH@Z", "?helper@?A0x@@YAHH@Z"),
            (
                "?A0x9f0e1d2c::<lambda_5b1e0f2a3c4d5e6f7a8b9c0d1e2f3a4b>::operator()",
                "?A0x::<lambda_>::operator()",
            ),
            ("_ZN12_GLOBAL__N_16helperEi", "_ZN12_GLOBAL__N_16helperEi"),
        ] {
            assert_eq!(canonical_name(name), expect, "{name}");
        }
    }
}
