//! Data symbols and type layouts: globals added, removed, resized, retyped, with a changed
//! layout or a changed initial value, and which functions reference them.

use crate::matching::canonical_name;
use crate::normalize::{Namer, render_bytes};
use hotpatch_image::{DataKind, DataSymbol, Image, TypeLayout};
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
    /// The canonical layouts, for the report's layout diff.
    pub baseline_layout: String,
    pub fixed_layout: String,
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
    let new = by_name(&fixed.data_symbols);
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
        if fingerprints(old_layouts) != fingerprints(new_layouts) {
            changes.push(TypeChange {
                name: name.clone(),
                baseline_size: old_layouts[0].size,
                fixed_size: new_layouts[0].size,
                baseline_layout: old_layouts[0].canonical(),
                fixed_layout: new_layouts[0].canonical(),
            });
        }
    }
    changes
}
