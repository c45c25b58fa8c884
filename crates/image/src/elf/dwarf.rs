//! DWARF (versions 2 to 5): compilation units and their address ranges, subprograms, variables
//! with static storage, inline sites, aggregate layouts and line tables.
//!
//! Reading takes two passes. The first walks the DIE tree of every unit once (type units too),
//! recording code ranges and line rows and collecting what needs a name: subprograms, inline
//! sites, variables, aggregates, with the enclosing C++ scopes so names can be qualified. The
//! second resolves those names through a directory of all units, because references may point
//! forwards, into other units (LTO) or into type units (`DW_FORM_ref_sig8`).
//!
//! Damage stays local: a DIE whose attributes do not read, or a unit whose tree cannot be
//! walked to the end, becomes a diagnostic and everything else is still read.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use gimli::{AttributeValue, Operation, UnitOffset, UnitRef, constants};

use super::types::{Directory, Names, Scratch, UnitEntry, reference};
use super::{ElfFile, section_data_by_name};
use crate::model::{Diagnostic, DiagnosticLocation, InlineSite, LineRow, TypeId, TypeLayout};

/// The one concrete reader type: DWARF sections are slices of the file (or of a buffer holding
/// a decompressed section) and x86-64 is little-endian.
pub(super) type Reader<'a> = gimli::EndianSlice<'a, gimli::LittleEndian>;

/// Stops a hostile `.debug_info` from making the reader report without end.
const MAX_DIAGNOSTICS: usize = 256;

/// Loads (and decompresses) every DWARF section of `file`. The buffers live as long as the
/// returned value, which `load` keeps for the duration of the read.
pub(super) fn load_sections<'data>(
    file: &ElfFile<'data>,
    diagnostics: &mut Vec<Diagnostic>,
) -> gimli::DwarfSections<Cow<'data, [u8]>> {
    let loaded: Result<_, std::convert::Infallible> =
        gimli::DwarfSections::load(|id| Ok(section_data_by_name(file, id.name(), diagnostics)));
    match loaded {
        Ok(sections) => sections,
        Err(never) => match never {},
    }
}

/// Where code and data of the image lie, to drop DWARF that describes code the linker
/// discarded (its addresses resolve to 0 or a tombstone value).
pub(super) struct AddressSpace<'a> {
    /// `[begin, end)` of every executable section.
    pub code: &'a [(u64, u64)],
    /// `[begin, end)` of every allocated section.
    pub data: &'a [(u64, u64)],
}

impl AddressSpace<'_> {
    fn is_code(&self, address: u64) -> bool {
        self.code
            .iter()
            .any(|&(begin, end)| address >= begin && address < end)
    }

    fn is_data(&self, address: u64) -> bool {
        self.data
            .iter()
            .any(|&(begin, end)| address >= begin && address < end)
    }
}

/// What a variable with static storage at some address is.
#[derive(Clone, Debug)]
pub(super) struct VariableFacts {
    pub compile_unit: usize,
    pub type_name: Option<String>,
}

/// Everything the DWARF says, keyed by address for the symbol reader to look up.
#[derive(Debug, Default)]
pub(super) struct DwarfFacts {
    /// At least one compilation unit was read.
    pub has_units: bool,
    compile_units: Vec<String>,
    /// `(begin, end, compile unit)`, sorted.
    cu_ranges: Vec<(u64, u64, usize)>,
    /// Entry address of each subprogram with code: its name and compile unit. The first unit
    /// to describe an address wins, so the result does not depend on hashing.
    subprogram_entries: BTreeMap<u64, (String, usize)>,
    /// The signature of the subprogram whose entry is the key.
    signatures: BTreeMap<u64, String>,
    /// Entries of the subprograms that never return (`DW_AT_noreturn`).
    noreturn: std::collections::BTreeSet<u64>,
    /// The code every subprogram covers, merged into disjoint sorted ranges.
    subprogram_ranges: Vec<(u64, u64)>,
    variables: BTreeMap<u64, VariableFacts>,
    /// Thread-local variables by offset in the TLS template: `.tbss` takes no address space,
    /// so placing them at addresses would collide with the sections that follow it.
    tls_variables: BTreeMap<u64, VariableFacts>,
    pub types: Vec<TypeLayout>,
    /// While reading: the name and fingerprint of every layout in `types`. Every unit that
    /// includes a header describes its structs again (PostgreSQL's 800 units describe 49,800
    /// aggregates, a few thousand of them distinct); a repeat adds nothing, since `finish`
    /// keeps the first layout of each name and fingerprint.
    seen_layouts: HashSet<(String, String)>,
    /// While reading: (entry of a subprogram, name of an aggregate one of its parameters or
    /// locals works on).
    type_use_names: Vec<(u64, String)>,
    /// The aggregates each subprogram works on, by entry, as positions in `types`.
    type_uses: BTreeMap<u64, Vec<TypeId>>,
    /// While reading: (position in `types`, field index, name of the aggregate the field's
    /// type reaches), resolved into [`crate::Field::reaches`] once every layout is known.
    field_reach_names: Vec<(usize, usize, String)>,
    pub source_files: Vec<String>,
    /// `source_files` while reading: line programs and call sites intern paths here.
    interned_files: SourceFiles,
    pub lines: Vec<LineRow>,
    pub inline_sites: Vec<InlineSite>,
    pub diagnostics: Vec<Diagnostic>,
    /// `DW_AT_producer` of every compilation unit: compiler and code-generation options.
    pub producers: Vec<String>,
}

impl DwarfFacts {
    /// The signature (`ret(args)`) of the subprogram whose entry is `address`.
    pub fn signature_at(&self, address: u64) -> Option<&str> {
        self.signatures.get(&address).map(String::as_str)
    }

    /// The aggregates the subprogram whose entry is `address` works on (positions in `types`).
    pub fn types_used_at(&self, address: u64) -> &[TypeId] {
        self.type_uses.get(&address).map_or(&[], Vec::as_slice)
    }

    /// Whether the subprogram whose entry is `address` never returns (`DW_AT_noreturn`).
    pub fn noreturn_at(&self, address: u64) -> bool {
        self.noreturn.contains(&address)
    }

    /// The name of the subprogram whose entry is `address`.
    pub fn subprogram_name_at(&self, address: u64) -> Option<&str> {
        self.subprogram_entries
            .get(&address)
            .map(|(name, _)| name.as_str())
    }

    /// The name of the compilation unit of the function at `address`: the unit declaring the
    /// subprogram that starts there, else the unit whose code contains `address`.
    pub fn compile_unit_at(&self, address: u64) -> Option<&str> {
        let by_subprogram = self.subprogram_entries.get(&address).map(|&(_, cu)| cu);
        let cu = by_subprogram.or_else(|| {
            let idx = self
                .cu_ranges
                .partition_point(|&(begin, _, _)| begin <= address);
            self.cu_ranges
                .get(idx.checked_sub(1)?)
                .filter(|&&(_, end, _)| address < end)
                .map(|&(_, _, cu)| cu)
        })?;
        self.compile_units.get(cu).map(String::as_str)
    }

    /// The name of compilation unit number `index`.
    pub fn compile_unit_name(&self, index: usize) -> Option<String> {
        self.compile_units.get(index).cloned()
    }

    /// Whether a DWARF subprogram covers the code at `address`.
    pub fn code_has_subprogram(&self, address: u64) -> bool {
        let idx = self
            .subprogram_ranges
            .partition_point(|&(begin, _)| begin <= address);
        idx.checked_sub(1)
            .and_then(|idx| self.subprogram_ranges.get(idx))
            .is_some_and(|&(_, end)| address < end)
    }

    /// The variable with static storage at `address`.
    pub fn variable_at(&self, address: u64) -> Option<&VariableFacts> {
        self.variables.get(&address)
    }

    /// The thread-local variable at `offset` in the TLS template.
    pub fn tls_variable_at(&self, offset: u64) -> Option<&VariableFacts> {
        self.tls_variables.get(&offset)
    }

    fn report(&mut self, location: &str, message: String) {
        self.report_for(location, message, None);
    }

    /// Reports a problem that concerns one function, which downstream makes a patch of that
    /// function reboot-required.
    fn report_for(&mut self, location: &str, message: String, function: Option<String>) {
        if self.diagnostics.len() < MAX_DIAGNOSTICS {
            self.diagnostics.push(Diagnostic {
                location: DiagnosticLocation::Section(location.to_owned()),
                message,
                function,
            });
        }
    }
}

/// Reads every unit of the DWARF in `sections`.
///
/// All units are walked first and resolved afterwards, because names and types may be
/// referenced across units (LTO builds, type units).
pub(super) fn read(
    sections: &gimli::DwarfSections<Cow<'_, [u8]>>,
    space: &AddressSpace<'_>,
) -> DwarfFacts {
    let dwarf = sections.borrow(|section| gimli::EndianSlice::new(section, gimli::LittleEndian));
    let mut reading = Reading {
        dwarf: &dwarf,
        space,
        directory: Directory::default(),
        pending: Vec::new(),
        facts: DwarfFacts::default(),
    };
    let mut debug_types = dwarf.type_units();
    loop {
        match debug_types.next() {
            Ok(Some(header)) => reading.add_unit(header, ".debug_types"),
            Ok(None) => break,
            Err(error) => {
                reading.facts.report(
                    ".debug_types",
                    format!("cannot read a unit header, the rest is skipped: {error}"),
                );
                break;
            }
        }
    }
    let mut headers = dwarf.units();
    loop {
        match headers.next() {
            Ok(Some(header)) => reading.add_unit(header, ".debug_info"),
            Ok(None) => break,
            Err(error) => {
                // A unit header that does not parse hides where the next unit starts.
                reading.facts.report(
                    ".debug_info",
                    format!("cannot read a unit header, the rest is skipped: {error}"),
                );
                break;
            }
        }
    }
    let Reading {
        directory,
        pending,
        mut facts,
        ..
    } = reading;
    for (index, pending) in pending {
        let scratch = Scratch::new();
        let Some(names) = Names::new(&dwarf, &directory, index, &scratch) else {
            continue;
        };
        match pending {
            Pending::Compile {
                cu_index,
                collected,
            } => resolve_unit(&names, &collected, cu_index, &mut facts),
            Pending::Type { aggregates } => lay_out(&names, &aggregates, &mut facts),
        }
    }
    facts.seen_layouts = HashSet::new();
    facts.type_uses = type_uses(&facts.types, std::mem::take(&mut facts.type_use_names));
    resolve_field_reach(
        &mut facts.types,
        std::mem::take(&mut facts.field_reach_names),
    );
    facts.cu_ranges.sort_unstable();
    facts.subprogram_ranges = merge_ranges(std::mem::take(&mut facts.subprogram_ranges));
    facts.source_files = std::mem::take(&mut facts.interned_files.paths);
    facts
}

/// The first layout of each aggregate name in `types`.
fn first_layout_by_name(types: &[TypeLayout]) -> HashMap<&str, TypeId> {
    let mut by_name: HashMap<&str, TypeId> = HashMap::new();
    for (position, layout) in types.iter().enumerate() {
        let Ok(position) = u32::try_from(position) else {
            break;
        };
        by_name
            .entry(layout.name.as_str())
            .or_insert(TypeId(position));
    }
    by_name
}

/// Ties each subprogram's used aggregate names to the layouts of that name (its first layout in
/// `types`: `finish` keeps one per name and fingerprint, and the diff compares types by name).
fn type_uses(types: &[TypeLayout], mut uses: Vec<(u64, String)>) -> BTreeMap<u64, Vec<TypeId>> {
    let by_name = first_layout_by_name(types);
    uses.sort_unstable();
    uses.dedup();
    let mut result: BTreeMap<u64, Vec<TypeId>> = BTreeMap::new();
    for (entry, name) in &uses {
        if let Some(&id) = by_name.get(name.as_str()) {
            result.entry(*entry).or_default().push(id);
        }
    }
    result
}

/// Ties each field's reached aggregate name to the first layout of that name, as
/// [`type_uses`] does for parameters and locals.
fn resolve_field_reach(types: &mut [TypeLayout], reach: Vec<(usize, usize, String)>) {
    let by_name = first_layout_by_name(types);
    let resolved: Vec<(usize, usize, TypeId)> = reach
        .iter()
        .filter_map(|(layout, field, name)| Some((*layout, *field, *by_name.get(name.as_str())?)))
        .collect();
    for (layout, field, id) in resolved {
        if let Some(field) = types.get_mut(layout).and_then(|l| l.fields.get_mut(field)) {
            field.reaches = Some(id);
        }
    }
}

/// What a unit still needs once every unit is known.
enum Pending {
    Compile {
        cu_index: usize,
        collected: Collected,
    },
    Type {
        aggregates: Vec<UnitOffset>,
    },
}

/// The state of the first pass over the units.
struct Reading<'a, 'd> {
    dwarf: &'d gimli::Dwarf<Reader<'a>>,
    space: &'d AddressSpace<'d>,
    directory: Directory<'a>,
    /// By directory index.
    pending: Vec<(usize, Pending)>,
    facts: DwarfFacts,
}

impl<'a> Reading<'a, '_> {
    /// Walks one unit, reads its line program, and files it in the directory.
    fn add_unit(&mut self, header: gimli::UnitHeader<Reader<'a>>, section: &'static str) {
        let unit_offset = match header.offset() {
            gimli::UnitSectionOffset::DebugInfoOffset(offset) => offset.0,
            gimli::UnitSectionOffset::DebugTypesOffset(offset) => offset.0,
        };
        let unit_type = header.type_();
        let unit = match self.dwarf.unit(header) {
            Ok(unit) => unit,
            Err(error) => {
                self.facts
                    .report(section, format!("unit at offset {unit_offset:#x}: {error}"));
                return;
            }
        };
        let unit_ref = unit.unit_ref(self.dwarf);
        let mut collected = Collected::default();
        // The compilation unit index, for a compilation unit.
        let (name, type_offset, cu_index) = match unit_type {
            gimli::UnitType::Type {
                type_signature,
                type_offset,
            } => {
                let name = format!("type unit {:016x}", type_signature.0);
                // Type units have no code, so the unit index given for code ranges is unused.
                if let Err(error) = walk_unit(
                    unit_ref,
                    usize::MAX,
                    &name,
                    self.space,
                    &mut collected,
                    &mut self.facts,
                ) {
                    self.facts.report(section, format!("{name}: {error}"));
                }
                (name, Some(type_offset), None)
            }
            gimli::UnitType::SplitType { .. } | gimli::UnitType::SplitCompilation(_) => return,
            _ => {
                self.facts.has_units = true;
                let cu_index = self.facts.compile_units.len();
                let name = unit.name.map_or_else(
                    || format!("<unit at {unit_offset:#x}>"),
                    |name| name.to_string_lossy().into_owned(),
                );
                self.facts.compile_units.push(name.clone());
                if let Some(producer) = unit_producer(unit_ref) {
                    self.facts.producers.push(producer);
                }
                if let Some(dwo_id) = unit.dwo_id {
                    self.facts.report(
                        section,
                        format!(
                            "compilation unit {name} keeps its DWARF in a split DWARF file \
                             (dwo id {:016x}), which is not read",
                            dwo_id.0
                        ),
                    );
                }
                if let Err(error) = walk_unit(
                    unit_ref,
                    cu_index,
                    &name,
                    self.space,
                    &mut collected,
                    &mut self.facts,
                ) {
                    // What the walk read before the damage is still resolved.
                    self.facts.report(
                        section,
                        format!("compilation unit {name} at offset {unit_offset:#x}: {error}"),
                    );
                }
                if let Err(error) = read_lines(unit_ref, self.space, &mut self.facts) {
                    self.facts.report(
                        ".debug_line",
                        format!("line program of compilation unit {name}: {error}"),
                    );
                }
                (name, None, Some(cu_index))
            }
        };
        let entry = UnitEntry {
            unit,
            name,
            prefixes: std::mem::take(&mut collected.prefixes),
            typedef_of: std::mem::take(&mut collected.typedef_of),
            type_offset,
            cu_index,
        };
        let pending = match cu_index {
            Some(cu_index) => Pending::Compile {
                cu_index,
                collected,
            },
            None => Pending::Type {
                aggregates: collected.aggregates,
            },
        };
        let index = self.directory.push(entry);
        self.pending.push((index, pending));
    }
}

/// Sorts ranges and merges overlapping or touching ones.
fn merge_ranges(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (begin, end) in ranges {
        match merged.last_mut() {
            Some(last) if begin <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((begin, end)),
        }
    }
    merged
}

/// The longest qualifying prefix (`ns::Class::`) built; deeper scopes are not added, so a hostile
/// nesting of namespaces cannot make the prefixes grow without bound.
const MAX_PREFIX_LEN: usize = 1024;

/// A DIE with children on the path from the unit root to the current DIE.
struct Frame {
    depth: isize,
    /// Length of the qualifying prefix outside this DIE, to restore when leaving it.
    prefix_len: usize,
    /// The entry of the subprogram enclosing this DIE's children, if it has code.
    caller: Option<u64>,
}

/// What a DIE means to its children.
enum Scope {
    /// A subprogram, with its entry address when it has code.
    Subprogram(Option<u64>),
    /// A namespace, class, struct or union: qualifies the names inside it.
    Named(String),
    /// Anything else with children (lexical blocks, inline sites, anonymous aggregates).
    Other,
}

/// An inlined subroutine: the caller's entry, the DIE, `(start, length)` ranges, and the call
/// site.
type CollectedInlineSite = (u64, UnitOffset, Vec<(u64, u64)>, Option<LineRow>);

/// What the walk of one unit collects for resolving afterwards.
#[derive(Default)]
struct Collected {
    /// `ns::Class::` for each named DIE inside a named scope.
    prefixes: HashMap<UnitOffset, String>,
    /// The first typedef naming each type.
    typedef_of: HashMap<UnitOffset, UnitOffset>,
    subprograms: Vec<(u64, UnitOffset)>,
    inline_sites: Vec<CollectedInlineSite>,
    variables: Vec<(VariableAddress, UnitOffset)>,
    /// Parameters and variables of subprograms with code: (the subprogram's entry, the DIE).
    locals: Vec<(u64, UnitOffset)>,
    aggregates: Vec<UnitOffset>,
}

/// Walks the DIE tree of a unit once, recording code ranges in `facts` and collecting in
/// `collected` what needs names resolved afterwards.
///
/// A DIE whose attributes do not read is a diagnostic (naming the function, for a subprogram)
/// and the walk goes on; only a tree that cannot be walked further ends it with an error.
fn walk_unit(
    unit: UnitRef<'_, Reader<'_>>,
    cu_index: usize,
    unit_name: &str,
    space: &AddressSpace<'_>,
    collected: &mut Collected,
    facts: &mut DwarfFacts,
) -> gimli::Result<()> {
    let mut root_entries = unit.entries();
    if let Some((_, root)) = root_entries.next_dfs()?
        && !pc_range_fits(unit, root)
    {
        return Err(gimli::Error::InvalidAddressRange);
    }
    let mut unit_ranges = unit.unit_ranges()?;
    while let Some(range) = unit_ranges.next()? {
        if range.begin < range.end && space.is_code(range.begin) {
            facts.cu_ranges.push((range.begin, range.end, cu_index));
        }
    }

    // The path from the root to the current DIE, kept incrementally (the qualifying prefix and
    // the enclosing subprogram) so that deep nesting costs no more than shallow nesting.
    let mut frames: Vec<Frame> = Vec::new();
    let mut prefix = String::new();
    let mut depth: isize = 0;
    let mut entries = unit.entries();
    while let Some((delta, entry)) = entries.next_dfs()? {
        depth = depth.saturating_add(delta);
        while let Some(frame) = frames.pop_if(|frame| frame.depth >= depth) {
            prefix.truncate(frame.prefix_len);
        }
        let caller = frames.last().and_then(|frame| frame.caller);
        let offset = entry.offset();
        // The name stays a slice of the string section: most DIEs' names are never needed as
        // text (only scopes' are), and making a `String` of each was most of the walk's
        // allocations.
        let name = match die_name_slice(unit, entry, constants::DW_AT_name) {
            Ok(name) => name,
            Err(error) => {
                facts.report(
                    ".debug_info",
                    format!(
                        "name of the DIE at offset {:#x} in {unit_name}: {error}",
                        offset.0
                    ),
                );
                None
            }
        };
        // Anonymous aggregates get their enclosing scope too: it names them.
        let is_aggregate = matches!(
            entry.tag(),
            constants::DW_TAG_structure_type
                | constants::DW_TAG_class_type
                | constants::DW_TAG_union_type
        );
        if (name.is_some() || is_aggregate) && !prefix.is_empty() {
            collected.prefixes.insert(offset, prefix.clone());
        }
        let scope = match visit_die(unit, entry, &name, caller, space, collected, facts) {
            Ok(scope) => scope,
            Err(error) => {
                // The linkage name is the symbol name a function is known by downstream.
                let function = (entry.tag() == constants::DW_TAG_subprogram)
                    .then(|| {
                        die_name_slice(unit, entry, constants::DW_AT_linkage_name)
                            .ok()
                            .flatten()
                            .or(name)
                            .map(text)
                    })
                    .flatten();
                facts.report_for(
                    ".debug_info",
                    format!(
                        "{} at offset {:#x} in {unit_name}: {error}",
                        entry.tag(),
                        offset.0
                    ),
                    function,
                );
                Scope::Other
            }
        };
        if entry.has_children() {
            let prefix_len = prefix.len();
            if let Scope::Named(name) = &scope
                && prefix_len + name.len() + 2 <= MAX_PREFIX_LEN
            {
                prefix.push_str(name);
                prefix.push_str("::");
            }
            frames.push(Frame {
                depth,
                prefix_len,
                caller: match scope {
                    Scope::Subprogram(entry) => entry,
                    _ => caller,
                },
            });
        }
    }

    Ok(())
}

/// Names what the walk of a unit collected and adds it to `facts`.
fn resolve_unit(
    names: &Names<'_, '_>,
    collected: &Collected,
    cu_index: usize,
    facts: &mut DwarfFacts,
) {
    for &(address, offset) in &collected.subprograms {
        if let Some(name) = names.die_name(offset) {
            let cu_index = names.declaring_unit(offset).unwrap_or(cu_index);
            facts
                .subprogram_entries
                .entry(address)
                .or_insert((name, cu_index));
            if let Some(signature) = names.subprogram_signature(offset) {
                facts.signatures.entry(address).or_insert(signature);
            }
            if names.subprogram_noreturn(offset) {
                facts.noreturn.insert(address);
            }
        }
    }
    for (caller_rva, offset, ranges, call_site) in &collected.inline_sites {
        facts.inline_sites.push(InlineSite {
            caller_rva: *caller_rva,
            inlinee: names
                .die_name(*offset)
                .unwrap_or_else(|| "<unknown>".to_owned()),
            ranges: ranges.clone(),
            call_site: *call_site,
            lines: Vec::new(),
        });
    }
    for &(address, offset) in &collected.variables {
        let (map, key) = match address {
            VariableAddress::Static(address) => (&mut facts.variables, address),
            VariableAddress::ThreadLocal(offset) => (&mut facts.tls_variables, offset),
        };
        map.entry(key).or_insert_with(|| VariableFacts {
            compile_unit: names.declaring_unit(offset).unwrap_or(cu_index),
            type_name: names.variable_type_name(offset),
        });
    }
    let mut used_types = HashMap::new();
    for &(caller, offset) in &collected.locals {
        if let Some(name) = names.used_aggregate(offset, &mut used_types) {
            facts.type_use_names.push((caller, name));
        }
    }
    lay_out(names, &collected.aggregates, facts);
}

/// Adds the layouts of the aggregates at `offsets` to `facts`.
fn lay_out(names: &Names<'_, '_>, offsets: &[UnitOffset], facts: &mut DwarfFacts) {
    for &offset in offsets {
        match names.layout(offset) {
            Ok(Some((layout, reaches))) => {
                if !facts
                    .seen_layouts
                    .insert((layout.name.clone(), layout.fingerprint.clone()))
                {
                    continue;
                }
                let position = facts.types.len();
                facts.field_reach_names.extend(
                    reaches
                        .into_iter()
                        .enumerate()
                        .filter_map(|(field, name)| Some((position, field, name?))),
                );
                facts.types.push(layout);
            }
            Ok(None) => {}
            Err(error) => facts.report(
                ".debug_info",
                format!(
                    "type at offset {:#x} in {}: {error}",
                    offset.0,
                    names.cu_name()
                ),
            ),
        }
    }
}

/// Records what one DIE contributes and returns what it means to its children.
fn visit_die<'a>(
    unit: UnitRef<'_, Reader<'a>>,
    entry: &gimli::DebuggingInformationEntry<'_, '_, Reader<'a>>,
    name: &Option<Reader<'a>>,
    caller: Option<u64>,
    space: &AddressSpace<'_>,
    collected: &mut Collected,
    facts: &mut DwarfFacts,
) -> gimli::Result<Scope> {
    let offset = entry.offset();
    let scope = match entry.tag() {
        constants::DW_TAG_subprogram => {
            let code_entry = subprogram_code(unit, entry, space, facts)?;
            if let Some(address) = code_entry {
                collected.subprograms.push((address, offset));
            }
            Scope::Subprogram(code_entry)
        }
        constants::DW_TAG_inlined_subroutine => {
            if let Some(caller) = caller {
                let mut ranges = Vec::new();
                if !pc_range_fits(unit, entry) {
                    return Err(gimli::Error::InvalidAddressRange);
                }
                let mut die_ranges = unit.die_ranges(entry)?;
                while let Some(range) = die_ranges.next()? {
                    if range.begin < range.end && space.is_code(range.begin) {
                        ranges.push((range.begin, range.end - range.begin));
                    }
                }
                if !ranges.is_empty() {
                    ranges.sort_unstable();
                    let call_site = call_site(unit, entry, ranges[0].0, &mut facts.interned_files);
                    collected
                        .inline_sites
                        .push((caller, offset, ranges, call_site));
                }
            }
            Scope::Other
        }
        constants::DW_TAG_namespace => Scope::Named(
            name.map(text)
                .unwrap_or_else(|| "(anonymous namespace)".to_owned()),
        ),
        constants::DW_TAG_structure_type
        | constants::DW_TAG_class_type
        | constants::DW_TAG_union_type => {
            let is_declaration = matches!(
                entry.attr_value(constants::DW_AT_declaration)?,
                Some(AttributeValue::Flag(true))
            );
            let has_size = entry.attr_value(constants::DW_AT_byte_size)?.is_some();
            if has_size && !is_declaration {
                collected.aggregates.push(offset);
            }
            match name {
                Some(name) => Scope::Named(text(*name)),
                None => Scope::Other,
            }
        }
        constants::DW_TAG_typedef => {
            if let Some(target) = reference(unit, entry.attr_value(constants::DW_AT_type)?) {
                collected.typedef_of.entry(target).or_insert(offset);
            }
            Scope::Other
        }
        constants::DW_TAG_variable => {
            if let Some(address) = variable_address(unit, entry, space)? {
                collected.variables.push((address, offset));
            }
            if let Some(caller) = caller {
                collected.locals.push((caller, offset));
            }
            Scope::Other
        }
        constants::DW_TAG_formal_parameter => {
            if let Some(caller) = caller {
                collected.locals.push((caller, offset));
            }
            Scope::Other
        }
        _ => Scope::Other,
    };
    Ok(scope)
}

/// A string attribute of a DIE.
fn die_name_slice<'a>(
    unit: UnitRef<'_, Reader<'a>>,
    entry: &gimli::DebuggingInformationEntry<'_, '_, Reader<'a>>,
    attr: constants::DwAt,
) -> gimli::Result<Option<Reader<'a>>> {
    match entry.attr_value(attr)? {
        Some(value) => Ok(Some(unit.attr_string(value)?)),
        None => Ok(None),
    }
}

/// A string of the debug information as text (invalid UTF-8 replaced).
fn text(slice: Reader<'_>) -> String {
    slice.to_string_lossy().into_owned()
}

/// Records the code of a subprogram and returns its entry address: `DW_AT_low_pc`, else the
/// first range of `DW_AT_ranges` (GCC lists the hot part, where the entry is, first).
fn subprogram_code<'a>(
    unit: UnitRef<'_, Reader<'a>>,
    entry: &gimli::DebuggingInformationEntry<'_, '_, Reader<'a>>,
    space: &AddressSpace<'_>,
    facts: &mut DwarfFacts,
) -> gimli::Result<Option<u64>> {
    let mut first = None;
    if !pc_range_fits(unit, entry) {
        return Err(gimli::Error::InvalidAddressRange);
    }
    let mut ranges = unit.die_ranges(entry)?;
    while let Some(range) = ranges.next()? {
        if range.begin < range.end && space.is_code(range.begin) {
            first.get_or_insert(range.begin);
            facts.subprogram_ranges.push((range.begin, range.end));
        }
    }
    let low_pc = match entry.attr_value(constants::DW_AT_low_pc)? {
        Some(value) => unit.attr_address(value)?,
        None => None,
    };
    Ok(low_pc.filter(|&address| space.is_code(address)).or(first))
}

/// Where a variable with static storage lives.
#[derive(Clone, Copy)]
enum VariableAddress {
    Static(u64),
    /// Offset in the TLS template.
    ThreadLocal(u64),
}

/// The address of a variable with static storage: a location that is exactly `DW_OP_addr`
/// (or `DW_OP_addrx`), or a TLS offset pushed and turned into an address.
fn variable_address<'a>(
    unit: UnitRef<'_, Reader<'a>>,
    entry: &gimli::DebuggingInformationEntry<'_, '_, Reader<'a>>,
    space: &AddressSpace<'_>,
) -> gimli::Result<Option<VariableAddress>> {
    let Some(AttributeValue::Exprloc(expression)) = entry.attr_value(constants::DW_AT_location)?
    else {
        return Ok(None);
    };
    let mut operations = expression.operations(unit.encoding());
    let first = operations.next()?;
    let second = operations.next()?;
    let address = match (first, second) {
        (Some(Operation::Address { address }), None) => address,
        (Some(Operation::AddressIndex { index }), None) => unit.address(index)?,
        (Some(Operation::UnsignedConstant { value }), Some(Operation::TLS)) => {
            return Ok(Some(VariableAddress::ThreadLocal(value)));
        }
        _ => return Ok(None),
    };
    Ok((address != 0 && space.is_data(address)).then_some(VariableAddress::Static(address)))
}

/// Source paths, deduplicated, in order of first use.
#[derive(Debug, Default)]
struct SourceFiles {
    paths: Vec<String>,
    index: HashMap<String, u32>,
}

impl SourceFiles {
    fn intern(&mut self, path: String) -> u32 {
        if let Some(&index) = self.index.get(&path) {
            return index;
        }
        let index = u32::try_from(self.paths.len()).unwrap_or(u32::MAX);
        self.paths.push(path.clone());
        self.index.insert(path, index);
        index
    }
}

/// One [`LineRow`] per row of the unit's line program, except end-of-sequence rows and rows for
/// code the linker discarded.
fn read_lines(
    unit: UnitRef<'_, Reader<'_>>,
    space: &AddressSpace<'_>,
    facts: &mut DwarfFacts,
) -> gimli::Result<()> {
    let Some(program) = unit.line_program.clone() else {
        return Ok(());
    };
    // Interned file of each file index the rows name: indices the header lists (DWARF 4
    // counts from 1, DWARF 5 from 0) in a vector, others (only a hostile program has them) in
    // a map; a hash lookup per row was a tenth of reading the lines.
    let listed = program.header().file_names().len().saturating_add(1);
    let mut listed_files: Vec<Option<u32>> = vec![None; listed];
    let mut other_files: HashMap<u64, Option<u32>> = HashMap::new();
    let mut rows = program.rows();
    while let Some((header, row)) = rows.next_row()? {
        if row.end_sequence() || !space.is_code(row.address()) {
            continue;
        }
        let index = row.file_index();
        let slot = match usize::try_from(index) {
            Ok(position) if position < listed_files.len() => &mut listed_files[position],
            _ => other_files.entry(index).or_insert(None),
        };
        let file = match *slot {
            Some(file) => file,
            None => {
                let path = file_path(unit, header, index)?;
                let file = facts.interned_files.intern(path);
                *slot = Some(file);
                file
            }
        };
        let line = row
            .line()
            .map_or(0, |line| u32::try_from(line.get()).unwrap_or(u32::MAX));
        facts.lines.push(LineRow {
            rva: row.address(),
            file,
            line,
        });
    }
    Ok(())
}

/// The full path of a line program's file: compilation directory, then the file's directory,
/// then its name, where an absolute component replaces what came before.
fn file_path<'a>(
    unit: UnitRef<'_, Reader<'a>>,
    header: &gimli::LineProgramHeader<Reader<'a>>,
    file_index: u64,
) -> gimli::Result<String> {
    let Some(file) = header.file(file_index) else {
        return Ok(format!("<unknown file {file_index}>"));
    };
    let mut path = unit
        .comp_dir
        .map(|dir| dir.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(directory) = file.directory(header) {
        push_path(&mut path, &unit.attr_string(directory)?.to_string_lossy());
    }
    push_path(
        &mut path,
        &unit.attr_string(file.path_name())?.to_string_lossy(),
    );
    Ok(path)
}

fn push_path(path: &mut String, component: &str) {
    if component.starts_with('/') {
        component.clone_into(path);
    } else if !component.is_empty() {
        if !path.is_empty() && !path.ends_with('/') {
            path.push('/');
        }
        path.push_str(component);
    }
}

/// Where an inlined subroutine was called (`DW_AT_call_file`, `DW_AT_call_line`), as a row at
/// `rva`; `None` when either is missing or the file is not in the line program.
fn call_site<'a>(
    unit: UnitRef<'_, Reader<'a>>,
    entry: &gimli::DebuggingInformationEntry<'_, '_, Reader<'a>>,
    rva: u64,
    source_files: &mut SourceFiles,
) -> Option<LineRow> {
    // gimli reads the file attributes as `FileIndex`; a producer may use any constant form.
    let file = match entry.attr_value(constants::DW_AT_call_file).ok()?? {
        gimli::AttributeValue::FileIndex(index) => index,
        other => other.udata_value()?,
    };
    let line = entry
        .attr_value(constants::DW_AT_call_line)
        .ok()??
        .udata_value()?;
    let program = unit.line_program.as_ref()?;
    program.header().file(file)?;
    let path = file_path(unit, program.header(), file).ok()?;
    Some(LineRow {
        rva,
        file: source_files.intern(path),
        line: u32::try_from(line).unwrap_or(u32::MAX),
    })
}

/// The `DW_AT_producer` of a unit's root DIE.
fn unit_producer(unit: UnitRef<'_, Reader<'_>>) -> Option<String> {
    let mut entries = unit.entries();
    let (_, root) = entries.next_dfs().ok()??;
    let value = root.attr_value(constants::DW_AT_producer).ok()??;
    Some(unit.attr_string(value).ok()?.to_string_lossy().into_owned())
}

/// Whether `DW_AT_low_pc + DW_AT_high_pc` (high_pc as a length) stays within 64 bits for every
/// pair gimli could add. gimli's `die_ranges` adds the two unchecked, which panics in builds
/// with overflow checks on hostile input (found by the `dwarf` fuzz target:
/// fuzz/regressions/dwarf-3e24f9bc.bin). It takes the *last* of each attribute while walking
/// them, so a DIE carrying the attribute twice is judged by the largest value of each, not by
/// the first one `attr_value` returns.
fn pc_range_fits<'a>(
    unit: UnitRef<'_, Reader<'a>>,
    entry: &gimli::DebuggingInformationEntry<'_, '_, Reader<'a>>,
) -> bool {
    let (mut low, mut length) = (0u64, 0u64);
    let mut attrs = entry.attrs();
    // An attribute that does not read ends gimli's walk with that error before any addition.
    while let Ok(Some(attr)) = attrs.next() {
        match (attr.name(), attr.value()) {
            (constants::DW_AT_low_pc, value) => {
                if let Ok(Some(address)) = unit.attr_address(value) {
                    low = low.max(address);
                }
            }
            (constants::DW_AT_high_pc, AttributeValue::Udata(size)) => length = length.max(size),
            _ => {}
        }
    }
    low.checked_add(length).is_some()
}

#[cfg(test)]
mod pc_range_tests {
    use super::*;

    /// One DWARF 4 unit whose only DIE is a subprogram with the attributes `attrs` (name, form)
    /// and their encoded `values`; returns what `pc_range_fits` says of it.
    fn fits(attrs: &[(u8, u8)], values: &[u8]) -> bool {
        let mut abbrev = vec![1, constants::DW_TAG_subprogram.0 as u8, 0];
        for &(name, form) in attrs {
            abbrev.extend([name, form]);
        }
        abbrev.extend([0, 0, 0]);
        let mut body = vec![4, 0, 0, 0, 0, 0, 8, 1]; // version 4, abbrev offset 0, 8-byte addresses, code 1
        body.extend(values);
        body.push(0);
        let mut info = (body.len() as u32).to_le_bytes().to_vec();
        info.extend(body);
        let section = |id: gimli::SectionId| -> Result<Reader<'_>, ()> {
            let bytes: &[u8] = match id {
                gimli::SectionId::DebugInfo => &info,
                gimli::SectionId::DebugAbbrev => &abbrev,
                _ => &[],
            };
            Ok(Reader::new(bytes, gimli::LittleEndian))
        };
        let dwarf = gimli::Dwarf::load(section).expect("sections");
        let header = dwarf.units().next().expect("unit").expect("one unit");
        let unit = dwarf.unit(header).expect("unit parses");
        let mut entries = unit.entries();
        let (_, entry) = entries.next_dfs().expect("DIE").expect("one DIE");
        pc_range_fits(unit.unit_ref(&dwarf), entry)
    }

    const LOW_PC: u8 = constants::DW_AT_low_pc.0 as u8;
    const HIGH_PC: u8 = constants::DW_AT_high_pc.0 as u8;
    const ADDR: u8 = constants::DW_FORM_addr.0 as u8;
    const DATA8: u8 = constants::DW_FORM_data8.0 as u8;

    fn values(words: &[u64]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn a_length_that_overflows_from_low_pc_is_caught_even_behind_a_harmless_first_one() {
        let pair = [(LOW_PC, ADDR), (HIGH_PC, DATA8)];
        assert!(fits(&pair, &values(&[0x1000, 0x10])));
        assert!(!fits(&pair, &values(&[0x1000, u64::MAX - 0x800])));
        // gimli adds the *last* high_pc: a harmless first one must not hide it.
        let twice = [(LOW_PC, ADDR), (HIGH_PC, DATA8), (HIGH_PC, DATA8)];
        assert!(!fits(&twice, &values(&[0x1000, 0x10, u64::MAX - 0x800])));
        // Nor may a harmless first low_pc hide the last one.
        let lows = [(LOW_PC, ADDR), (HIGH_PC, DATA8), (LOW_PC, ADDR)];
        assert!(!fits(&lows, &values(&[0x1000, 0x10, u64::MAX - 4])));
        assert!(fits(&lows, &values(&[0x1000, 0x10, 0x2000])));
    }
}
