//! Data symbols and type layouts: globals added, removed, resized, retyped, with a changed
//! layout or a changed initial value, and which functions reference them.

use crate::matching::canonical_name;
use crate::normalize::{Namer, render_bytes};
use hotpatch_image::{DataKind, DataSymbol, Field, Image, TypeLayout};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The data half of a diff.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DataDiff {
    pub added: Vec<DataEntry>,
    pub removed: Vec<DataEntry>,
    pub changed: Vec<DataChange>,
}

/// A data symbol in one build.
#[derive(Clone, Debug, Serialize)]
pub struct DataEntry {
    pub name: String,
    pub kind: DataKind,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub type_name: Option<String>,
}

/// A data symbol present in both builds that differs.
#[derive(Clone, Debug, Serialize)]
pub struct DataChange {
    pub name: String,
    pub kind: DataKind,
    pub changes: Vec<DataChangeKind>,
}

/// One way a data symbol differs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DataChangeKind {
    Resized {
        baseline: u64,
        fixed: u64,
    },
    TypeChanged {
        baseline: String,
        fixed: String,
    },
    /// The type keeps its name but its layout (fields, offsets, size) differs.
    LayoutChanged {
        type_name: String,
    },
    /// The initial value in the file differs (pointers compared by what they point at).
    InitialValueChanged,
}

/// An aggregate type whose layout differs between the builds.
#[derive(Clone, Debug, Serialize)]
pub struct TypeChange {
    pub name: String,
    pub baseline_size: u64,
    pub fixed_size: u64,
    /// The fields that differ, by offset (the fixed one, else the baseline one).
    pub fields: Vec<FieldChange>,
    /// The functions whose parameters or local variables are of this type, point to it or hold
    /// it in an array, or are of a type that reaches it through its fields (see
    /// [`TypeUser::through`]), in either build, sorted by name. Filled in by [`crate::diff`]
    /// once the functions are matched.
    pub users: Vec<TypeUser>,
}

/// One field of a changed aggregate that was added, removed, moved, retyped, grew or shrank.
/// Fields are
/// paired by name (the k-th field of a name with the k-th of the same name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    pub name: String,
    /// Sorted; `added` and `removed` stand alone.
    pub changes: Vec<FieldChangeKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<FieldPlace>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed: Option<FieldPlace>,
}

/// How a field differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FieldChangeKind {
    /// Only the fixed build has it.
    Added,
    /// Only the baseline has it.
    Removed,
    /// Its byte offset differs.
    Moved,
    /// Its type's name differs (`char[16]` becomes `char[32]`, `int` becomes `long`).
    Retyped,
    /// Its type takes more bytes: an aggregate member whose own layout grew (same name), or a
    /// retyped field whose new type is larger.
    Grew,
    /// Its type takes fewer bytes.
    Shrank,
    /// It is a bit field whose bit offset or width differs.
    BitsChanged,
}

/// Where a field is in one build.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldPlace {
    pub offset: u64,
    pub type_name: String,
    /// For bit fields: bit offset within the storage unit and width.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bits: Option<(u32, u32)>,
    /// The byte size of the field's type, when the debug information gives it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

impl FieldPlace {
    fn of(field: &Field) -> Self {
        FieldPlace {
            offset: field.offset,
            type_name: field.type_name.clone(),
            bits: field.bits,
            size: field.size,
        }
    }

    /// `+8` or `+8 bits 3:2`.
    fn place(&self) -> String {
        match self.bits {
            Some((bit, width)) => format!("+{} bits {bit}:{width}", self.offset),
            None => format!("+{}", self.offset),
        }
    }
}

impl FieldChange {
    /// The change in a few words: `flags moved +4 -> +8`, `state added at +4 (int)`.
    pub fn describe(&self) -> String {
        match (&self.baseline, &self.fixed) {
            (None, Some(fixed)) => {
                format!(
                    "{} added at {} ({})",
                    self.name,
                    fixed.place(),
                    fixed.type_name
                )
            }
            (Some(baseline), None) => format!(
                "{} removed from {} ({})",
                self.name,
                baseline.place(),
                baseline.type_name
            ),
            (Some(baseline), Some(fixed)) => {
                let mut parts = Vec::new();
                if baseline.place() != fixed.place() {
                    parts.push(format!("moved {} -> {}", baseline.place(), fixed.place()));
                }
                if baseline.type_name != fixed.type_name {
                    parts.push(format!(
                        "type {} -> {}",
                        baseline.type_name, fixed.type_name
                    ));
                }
                if let (Some(old), Some(new)) = (baseline.size, fixed.size)
                    && old != new
                {
                    let verb = if new > old { "grew" } else { "shrank" };
                    parts.push(format!("{verb} {old} -> {new} bytes"));
                }
                format!("{} {}", self.name, parts.join(", "))
            }
            (None, None) => self.name.clone(),
        }
    }
}

/// A function that uses a changed type, with what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TypeUser {
    /// The baseline name when the baseline has the function (as [`crate::ChangedFunction`]
    /// names it), else the fixed one.
    pub name: String,
    pub display_name: String,
    /// Index into the baseline image's functions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_index: Option<usize>,
    /// Index into the fixed image's functions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_index: Option<usize>,
    pub status: UserStatus,
    /// When no parameter or local is of the changed type itself: the aggregate one of them is
    /// (or points to) that reaches the changed type through its fields, fewest hops first
    /// (`struct connection`, whose `limits` member points to the changed `struct limits`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub through: Option<String>,
}

/// What the diff found for a function that uses a changed type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UserStatus {
    Changed,
    Added,
    Removed,
    /// Matched and not replaced (unchanged, line-only or renamed with an identical body).
    Unchanged,
}

pub(crate) fn diff(
    baseline: &Image<'_>,
    fixed: &Image<'_>,
    baseline_namer: &Namer<'_>,
    fixed_namer: &Namer<'_>,
) -> (DataDiff, Vec<TypeChange>) {
    let types = type_changes(baseline, fixed);
    let changed_types: BTreeSet<&str> = types.iter().map(|t| t.name.as_str()).collect();
    let old = by_name(&baseline.data_symbols);
    let mut new = by_name(&fixed.data_symbols);
    pair_leftovers_by_address(&old, &mut new);
    let mut result = DataDiff::default();
    for (name, o) in &old {
        let Some(n) = new.get(name) else {
            result.removed.push(entry(o));
            continue;
        };
        let mut changes = Vec::new();
        if o.size != n.size {
            changes.push(DataChangeKind::Resized {
                baseline: o.size,
                fixed: n.size,
            });
        }
        if o.type_name != n.type_name {
            changes.push(DataChangeKind::TypeChanged {
                baseline: o.type_name.clone().unwrap_or_default(),
                fixed: n.type_name.clone().unwrap_or_default(),
            });
        } else if let Some(type_name) = &o.type_name {
            let base_type = type_name
                .trim_start_matches("const ")
                .trim_start_matches("struct ");
            let base_type = base_type.split('[').next().unwrap_or(base_type);
            if changed_types.contains(base_type) {
                changes.push(DataChangeKind::LayoutChanged {
                    type_name: base_type.to_owned(),
                });
            }
        }
        if o.size == n.size
            && initial_value(baseline, o, baseline_namer) != initial_value(fixed, n, fixed_namer)
        {
            changes.push(DataChangeKind::InitialValueChanged);
        }
        if !changes.is_empty() {
            result.changed.push(DataChange {
                name: (*name).clone(),
                kind: n.kind,
                changes,
            });
        }
    }
    for (name, n) in &new {
        if !old.contains_key(name) {
            result.added.push(entry(n));
        }
    }
    (result, types)
}

fn entry(symbol: &DataSymbol) -> DataEntry {
    DataEntry {
        name: canonical_name(&symbol.name),
        kind: symbol.kind,
        size: symbol.size,
        type_name: symbol.type_name.clone(),
    }
}

/// Data symbols by canonical name; static locals numbered by the compiler (`count.3`) keep their
/// source name. A name that is not unique is qualified by compilation unit.
fn by_name(symbols: &[DataSymbol]) -> BTreeMap<String, &DataSymbol> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for symbol in symbols {
        *counts.entry(canonical_name(&symbol.name)).or_default() += 1;
    }
    let mut map = BTreeMap::new();
    for symbol in symbols {
        let name = canonical_name(&symbol.name);
        let key = if counts.get(&name).copied().unwrap_or(0) > 1 {
            format!("{name} ({})", symbol.compile_unit.as_deref().unwrap_or("?"))
        } else {
            name
        };
        map.entry(key).or_insert(symbol);
    }
    map
}

/// Same-name data that the compilation unit could not pair (the PDB module of clang's
/// compile-and-link in one command is a random temporary object, `/tmp/inflate-164ec9.o`):
/// what is left of one name on each side pairs in address order, as `matching::pair_group`
/// does for functions. The fixed symbol is re-keyed under its baseline partner's key.
fn pair_leftovers_by_address<'a>(
    old: &BTreeMap<String, &'a DataSymbol>,
    new: &mut BTreeMap<String, &'a DataSymbol>,
) {
    let leftovers = |map: &BTreeMap<String, &'a DataSymbol>,
                     other: &BTreeMap<String, &'a DataSymbol>| {
        let mut by_base: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
        for (key, symbol) in map {
            let base = canonical_name(&symbol.name);
            if *key != base && !other.contains_key(key) {
                by_base
                    .entry(base)
                    .or_default()
                    .push((symbol.rva, key.clone()));
            }
        }
        for keys in by_base.values_mut() {
            keys.sort();
        }
        by_base
    };
    let old_left = leftovers(old, new);
    let new_left = leftovers(new, old);
    for (base, old_keys) in &old_left {
        let Some(new_keys) = new_left.get(base) else {
            continue;
        };
        for ((_, old_key), (_, new_key)) in old_keys.iter().zip(new_keys) {
            if let Some(symbol) = new.remove(new_key) {
                new.insert(old_key.clone(), symbol);
            }
        }
    }
}

/// The initial value as comparable text, pointers written as what they point at.
fn initial_value(image: &Image<'_>, symbol: &DataSymbol, namer: &Namer<'_>) -> Option<String> {
    if symbol.kind == DataKind::ZeroInitialized || symbol.size == 0 {
        return None;
    }
    // Thread-locals past the file-backed TLS template (`.tbss`) start as zero in every thread;
    // the bytes at their address belong to whatever section follows.
    if symbol.kind == DataKind::ThreadLocal {
        let template_end = image.tls.as_ref().map(|tls| tls.template_end).unwrap_or(0);
        if symbol.rva.saturating_add(symbol.size) > template_end {
            return None;
        }
    }
    render_bytes(image, symbol.rva, symbol.size, namer, 0).map(|(text, _)| text)
}

/// Types with the same name and a different set of layouts.
fn type_changes(baseline: &Image<'_>, fixed: &Image<'_>) -> Vec<TypeChange> {
    let group = |types: &'_ [TypeLayout]| {
        let mut groups: BTreeMap<String, Vec<TypeLayout>> = BTreeMap::new();
        for layout in types {
            if layout.name.is_empty()
                || layout.name.starts_with('<')
                || layout.name.contains("unnamed")
            {
                continue;
            }
            groups
                .entry(layout.name.clone())
                .or_default()
                .push(layout.clone());
        }
        groups
    };
    let old = group(&baseline.types);
    let new = group(&fixed.types);
    let mut changes = Vec::new();
    for (name, old_layouts) in &old {
        let Some(new_layouts) = new.get(name) else {
            continue;
        };
        let fingerprints = |layouts: &[TypeLayout]| {
            layouts
                .iter()
                .map(|l| l.fingerprint.clone())
                .collect::<BTreeSet<_>>()
        };
        let (old_set, new_set) = (fingerprints(old_layouts), fingerprints(new_layouts));
        if old_set != new_set {
            // Compare a layout only one side has with one only the other side has.
            let pick = |layouts: &'_ [TypeLayout], other: &BTreeSet<String>| {
                let own = layouts.iter().find(|l| !other.contains(&l.fingerprint));
                own.or(layouts.first()).cloned()
            };
            let (Some(old), Some(new)) = (pick(old_layouts, &new_set), pick(new_layouts, &old_set))
            else {
                continue;
            };
            changes.push(TypeChange {
                name: name.clone(),
                baseline_size: old.size,
                fixed_size: new.size,
                fields: field_changes(&old.fields, &new.fields),
                users: Vec::new(),
            });
        }
    }
    changes
}

/// Fields keyed by name and by rank among the fields of that name.
fn by_name_and_rank(fields: &[Field]) -> BTreeMap<(String, usize), &Field> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    fields
        .iter()
        .map(|field| {
            let count = seen.entry(field.name.as_str()).or_default();
            *count += 1;
            ((field.name.clone(), *count), field)
        })
        .collect()
}

/// The fields of two layouts of one type that differ, paired by name.
fn field_changes(old: &[Field], new: &[Field]) -> Vec<FieldChange> {
    let (old, new) = (by_name_and_rank(old), by_name_and_rank(new));
    let mut changes = Vec::new();
    for (key, fixed) in &new {
        let fixed_place = FieldPlace::of(fixed);
        let Some(baseline) = old.get(key) else {
            changes.push(FieldChange {
                name: key.0.clone(),
                changes: vec![FieldChangeKind::Added],
                baseline: None,
                fixed: Some(fixed_place),
            });
            continue;
        };
        let baseline_place = FieldPlace::of(baseline);
        let mut kinds = Vec::new();
        if baseline.offset != fixed.offset {
            kinds.push(FieldChangeKind::Moved);
        }
        if baseline.type_name != fixed.type_name {
            kinds.push(FieldChangeKind::Retyped);
        }
        match (baseline.size, fixed.size) {
            (Some(old), Some(new)) if new > old => kinds.push(FieldChangeKind::Grew),
            (Some(old), Some(new)) if new < old => kinds.push(FieldChangeKind::Shrank),
            _ => {}
        }
        if baseline.bits != fixed.bits {
            kinds.push(FieldChangeKind::BitsChanged);
        }
        if !kinds.is_empty() {
            changes.push(FieldChange {
                name: key.0.clone(),
                changes: kinds,
                baseline: Some(baseline_place),
                fixed: Some(fixed_place),
            });
        }
    }
    for (key, baseline) in &old {
        if !new.contains_key(key) {
            changes.push(FieldChange {
                name: key.0.clone(),
                changes: vec![FieldChangeKind::Removed],
                baseline: Some(FieldPlace::of(baseline)),
                fixed: None,
            });
        }
    }
    let place = |change: &FieldChange| {
        change
            .fixed
            .as_ref()
            .or(change.baseline.as_ref())
            .map(|p| (p.offset, p.bits))
    };
    changes.sort_by(|a, b| (place(a), &a.name).cmp(&(place(b), &b.name)));
    changes
}
