//! Names from DWARF: qualified names of subprograms and inlinees, C-like type names
//! (`const char*`, `int[16]`, `struct session`) and the layouts of structs, unions and classes.
//!
//! Every chain of references (`DW_AT_type`, `DW_AT_specification`, `DW_AT_abstract_origin`) is
//! followed at most [`MAX_DEPTH`] steps, so a hostile file with a reference cycle ends in a
//! placeholder name rather than a stack overflow or a loop.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use gimli::{AttributeValue, DebuggingInformationEntry, Operation, UnitOffset, UnitRef, constants};

use super::dwarf::Reader;
use crate::model::{Field, TypeKind, TypeLayout};

/// The longest chain of references followed; real types nest a handful of levels.
const MAX_DEPTH: u32 = 64;
/// The most member names listed in the name of an anonymous aggregate.
const MAX_ANON_MEMBERS: usize = 6;
/// The most types visited to name one variable's type or lay out one aggregate: a hostile file
/// can make types share parts (a function type whose thousands of parameters are all the same
/// function type), so depth alone does not bound the work.
const TYPE_BUDGET: u32 = 20_000;
/// The most children read of one DIE (array dimensions, parameters, members listed in a name).
const MAX_CHILDREN: usize = 4096;

type Entry<'abbrev, 'unit, 'a> = DebuggingInformationEntry<'abbrev, 'unit, Reader<'a>>;

/// The offset a reference attribute points to, when it is in the same unit; the walk of a unit
/// uses it before the other units are known.
pub(super) fn reference(
    unit: UnitRef<'_, Reader<'_>>,
    value: Option<AttributeValue<Reader<'_>>>,
) -> Option<UnitOffset> {
    match value? {
        AttributeValue::UnitRef(offset) => Some(offset),
        AttributeValue::DebugInfoRef(offset) => offset.to_unit_offset(&unit.header),
        _ => None,
    }
}

/// One unit, with what its walk found that names need: the qualifying prefixes of its DIEs and
/// the typedefs that name its anonymous types.
pub(super) struct UnitEntry<'a> {
    pub unit: gimli::Unit<Reader<'a>>,
    /// The compilation unit's name, or `type unit <signature>`; anonymous types are named
    /// after it when nothing closer names them.
    pub name: String,
    /// `ns::Class::` for each DIE inside a named scope.
    pub prefixes: HashMap<UnitOffset, String>,
    /// The first typedef naming each type.
    pub typedef_of: HashMap<UnitOffset, UnitOffset>,
    /// For a type unit, the DIE of the type its signature designates.
    pub type_offset: Option<UnitOffset>,
    /// For a compilation unit, its index among the compilation units.
    pub cu_index: Option<usize>,
}

/// Every unit, so that references into other units can be followed: `DW_FORM_ref_addr`
/// (LTO builds put abstract origins and types in other units) and `DW_FORM_ref_sig8` (types in
/// type units).
#[derive(Default)]
pub(super) struct Directory<'a> {
    units: Vec<UnitEntry<'a>>,
    by_signature: HashMap<u64, usize>,
    /// `.debug_info` offset of each unit there.
    by_offset: BTreeMap<usize, usize>,
}

impl<'a> Directory<'a> {
    /// Adds a unit and returns its index.
    pub fn push(&mut self, entry: UnitEntry<'a>) -> usize {
        let index = self.units.len();
        if let Some(offset) = entry.unit.header.offset().as_debug_info_offset() {
            self.by_offset.insert(offset.0, index);
        }
        if let (gimli::UnitType::Type { type_signature, .. }, Some(_)) =
            (entry.unit.header.type_(), entry.type_offset)
        {
            // The first unit with a signature wins, as a linker keeps one copy.
            self.by_signature.entry(type_signature.0).or_insert(index);
        }
        self.units.push(entry);
        index
    }
}

/// What the names of one unit share while it is resolved: the budget of types still to visit
/// and what is known of the types its fields have.
pub(super) struct Scratch {
    /// Types that may still be visited for the current name or layout; see [`TYPE_BUDGET`].
    budget: Cell<u32>,
    /// What a field of each type gets, by the unit (its entry's address) and the type's
    /// offset: the structs of a unit share most of their field types (`int`, `Oid`, pointers
    /// to the same structs), and naming a type walks its whole chain of references.
    field_types: RefCell<HashMap<(usize, UnitOffset), Rc<FieldType>>>,
}

impl Scratch {
    pub fn new() -> Self {
        Scratch {
            budget: Cell::new(TYPE_BUDGET),
            field_types: RefCell::new(HashMap::new()),
        }
    }
}

/// What a field of a type gets from the type alone.
struct FieldType {
    name: String,
    /// See [`Names::type_size`] (with the dimensions).
    size: Option<u64>,
    /// See [`Names::aggregate_behind`].
    reaches: Option<String>,
}

/// The attributes of a member or base class that its field reads, from one pass over them;
/// as `attr_value` does, the first of a repeated attribute counts.
#[derive(Default)]
struct MemberAttrs<'a> {
    name: Option<AttributeValue<Reader<'a>>>,
    type_: Option<AttributeValue<Reader<'a>>>,
    declaration: Option<AttributeValue<Reader<'a>>>,
    location: Option<AttributeValue<Reader<'a>>>,
    bit_size: Option<AttributeValue<Reader<'a>>>,
    byte_size: Option<AttributeValue<Reader<'a>>>,
    data_bit_offset: Option<AttributeValue<Reader<'a>>>,
    bit_offset: Option<AttributeValue<Reader<'a>>>,
}

impl<'a> MemberAttrs<'a> {
    fn read(entry: &Entry<'_, '_, 'a>) -> Self {
        let mut found = MemberAttrs::default();
        let mut attrs = entry.attrs();
        while let Ok(Some(attr)) = attrs.next() {
            let slot = match attr.name() {
                constants::DW_AT_name => &mut found.name,
                constants::DW_AT_type => &mut found.type_,
                constants::DW_AT_declaration => &mut found.declaration,
                constants::DW_AT_data_member_location => &mut found.location,
                constants::DW_AT_bit_size => &mut found.bit_size,
                constants::DW_AT_byte_size => &mut found.byte_size,
                constants::DW_AT_data_bit_offset => &mut found.data_bit_offset,
                constants::DW_AT_bit_offset => &mut found.bit_offset,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(attr.value());
            }
        }
        found
    }
}

/// Resolves names and types within one unit, hopping to other units through the directory.
#[derive(Clone, Copy)]
pub(super) struct Names<'a, 'u> {
    dwarf: &'u gimli::Dwarf<Reader<'a>>,
    directory: &'u Directory<'a>,
    entry: &'u UnitEntry<'a>,
    unit: UnitRef<'u, Reader<'a>>,
    /// The budget and the field types known; shared with the `Names` of other units visited
    /// on the way.
    scratch: &'u Scratch,
}

impl<'a, 'u> Names<'a, 'u> {
    /// Names for unit number `index` of the directory.
    pub fn new(
        dwarf: &'u gimli::Dwarf<Reader<'a>>,
        directory: &'u Directory<'a>,
        index: usize,
        scratch: &'u Scratch,
    ) -> Option<Self> {
        let entry = directory.units.get(index)?;
        Some(Names {
            dwarf,
            directory,
            entry,
            unit: entry.unit.unit_ref(dwarf),
            scratch,
        })
    }

    /// The name of the unit, for messages and anonymous types.
    pub fn cu_name(&self) -> &str {
        &self.entry.name
    }

    /// Where a reference attribute value points: the unit (as `Names`) and the offset in it.
    fn resolve(&self, value: AttributeValue<Reader<'a>>) -> Option<(Self, UnitOffset)> {
        match value {
            AttributeValue::UnitRef(offset) => Some((*self, offset)),
            AttributeValue::DebugInfoRef(offset) => {
                if let Some(local) = offset.to_unit_offset(&self.unit.header) {
                    return Some((*self, local));
                }
                let (_, &index) = self.directory.by_offset.range(..=offset.0).next_back()?;
                let names = Names::new(self.dwarf, self.directory, index, self.scratch)?;
                let local = offset.to_unit_offset(&names.unit.header)?;
                Some((names, local))
            }
            AttributeValue::DebugTypesRef(signature) => {
                let &index = self.directory.by_signature.get(&signature.0)?;
                let names = Names::new(self.dwarf, self.directory, index, self.scratch)?;
                let type_offset = names.entry.type_offset?;
                Some((names, type_offset))
            }
            _ => None,
        }
    }

    /// Where the reference attribute `attr` of `entry` points, if it has one that resolves.
    fn resolve_attr(
        &self,
        entry: &Entry<'_, '_, 'a>,
        attr: constants::DwAt,
    ) -> Option<(Self, UnitOffset)> {
        self.resolve(entry.attr_value(attr).ok()??)
    }

    /// The name of the type an attribute (`DW_AT_type`, ...) refers to, in this unit or
    /// another; `None` when the DIE has no such attribute.
    fn type_attr_name(
        &self,
        entry: &Entry<'_, '_, 'a>,
        attr: constants::DwAt,
        depth: u32,
    ) -> Option<String> {
        let value = entry.attr_value(attr).ok()??;
        Some(match self.resolve(value) {
            Some((names, offset)) => names.type_name(offset, depth + 1),
            None => "<unresolved type>".to_owned(),
        })
    }

    /// The qualified name of a DIE, following `DW_AT_specification` and `DW_AT_abstract_origin`
    /// to the declaration that carries it.
    pub fn die_name(&self, offset: UnitOffset) -> Option<String> {
        let (mut names, mut offset) = (*self, offset);
        for _ in 0..MAX_DEPTH {
            let entry = names.unit.entry(offset).ok()?;
            if let Some(name) = names.own_name(&entry) {
                return Some(name);
            }
            (names, offset) = names.declaration_of(&entry)?;
        }
        None
    }

    /// Whether the subprogram at `offset`, or the declaration it completes, carries
    /// `DW_AT_noreturn` (C11 `_Noreturn`, `__attribute__((noreturn))`, C++ `[[noreturn]]`).
    pub fn subprogram_noreturn(&self, offset: UnitOffset) -> bool {
        let (mut names, mut offset) = (*self, offset);
        for _ in 0..MAX_DEPTH {
            let Ok(entry) = names.unit.entry(offset) else {
                return false;
            };
            if matches!(
                entry.attr_value(constants::DW_AT_noreturn),
                Ok(Some(AttributeValue::Flag(true)))
            ) {
                return true;
            }
            match names.declaration_of(&entry) {
                Some(next) => (names, offset) = next,
                None => return false,
            }
        }
        false
    }

    /// The compilation unit that declares the DIE at `offset`: the end of its chain of
    /// `DW_AT_specification`/`DW_AT_abstract_origin`. With LTO, code is described in an
    /// `<artificial>` unit but declared in the unit of its source file.
    pub fn declaring_unit(&self, offset: UnitOffset) -> Option<usize> {
        let (mut names, mut offset) = (*self, offset);
        for _ in 0..MAX_DEPTH {
            let entry = names.unit.entry(offset).ok()?;
            match names.declaration_of(&entry) {
                Some(next) => (names, offset) = next,
                None => return names.entry.cu_index,
            }
        }
        None
    }

    /// The DIE a definition or concrete instance completes (`DW_AT_specification`,
    /// `DW_AT_abstract_origin`).
    fn declaration_of(&self, entry: &Entry<'_, '_, 'a>) -> Option<(Self, UnitOffset)> {
        [
            constants::DW_AT_specification,
            constants::DW_AT_abstract_origin,
        ]
        .into_iter()
        .find_map(|attr| self.resolve_attr(entry, attr))
    }

    /// `DW_AT_name` alone, without the enclosing scopes.
    fn raw_name(&self, entry: &Entry<'_, '_, 'a>) -> Option<String> {
        self.attr_text(entry.attr_value(constants::DW_AT_name).ok()??)
    }

    /// The string a string attribute's value holds (inline or in a string section).
    fn attr_text(&self, value: AttributeValue<Reader<'a>>) -> Option<String> {
        Some(
            self.unit
                .attr_string(value)
                .ok()?
                .to_string_lossy()
                .into_owned(),
        )
    }

    /// `DW_AT_name` with the enclosing scopes, if the DIE has one.
    fn own_name(&self, entry: &Entry<'_, '_, 'a>) -> Option<String> {
        let name = self.raw_name(entry)?;
        Some(match self.entry.prefixes.get(&entry.offset()) {
            Some(prefix) => format!("{prefix}{name}"),
            None => name,
        })
    }

    /// The type of a variable, which a definition may leave to its declaration.
    pub fn variable_type_name(&self, offset: UnitOffset) -> Option<String> {
        self.scratch.budget.set(TYPE_BUDGET);
        let (mut names, mut offset) = (*self, offset);
        for _ in 0..MAX_DEPTH {
            let entry = names.unit.entry(offset).ok()?;
            if let Some(name) = names.type_attr_name(&entry, constants::DW_AT_type, 0) {
                return Some(name);
            }
            (names, offset) = names.declaration_of(&entry)?;
        }
        None
    }

    /// The signature of the subprogram at `offset`, `ret(arg, arg, ...)`, from the DIE itself or
    /// from the declaration or abstract instance it completes (out-of-line instances of inlined
    /// functions carry no types of their own).
    pub fn subprogram_signature(&self, offset: UnitOffset) -> Option<String> {
        self.scratch.budget.set(TYPE_BUDGET);
        let (mut names, mut offset) = (*self, offset);
        for _ in 0..MAX_DEPTH {
            let entry = names.unit.entry(offset).ok()?;
            let (parameters, typed) = names.parameter_types(offset)?;
            let has_return = entry
                .attr_value(constants::DW_AT_type)
                .ok()
                .flatten()
                .is_some();
            if typed || has_return {
                let ret = names.referenced_type_name(&entry, 0);
                return Some(format!("{ret}({})", parameters.join(", ")));
            }
            (names, offset) = names.declaration_of(&entry)?;
        }
        None
    }

    /// The types of a subprogram's formal parameters (`...` for unspecified ones), and whether
    /// any of them carried a type.
    fn parameter_types(&self, offset: UnitOffset) -> Option<(Vec<String>, bool)> {
        let mut tree = self.unit.entries_tree(Some(offset)).ok()?;
        let root = tree.root().ok()?;
        let mut children = root.children();
        let mut parameters = Vec::new();
        let mut typed = false;
        while let Ok(Some(child)) = children.next() {
            let entry = child.entry();
            match entry.tag() {
                constants::DW_TAG_formal_parameter => {
                    if entry
                        .attr_value(constants::DW_AT_type)
                        .ok()
                        .flatten()
                        .is_some()
                    {
                        typed = true;
                    }
                    parameters.push(self.referenced_type_name(entry, 0));
                }
                constants::DW_TAG_unspecified_parameters => parameters.push("...".to_owned()),
                _ => {}
            }
            if parameters.len() > 256 {
                break;
            }
        }
        Some((parameters, typed))
    }

    /// The type a DIE's `DW_AT_type` names, `void` when it has none.
    fn referenced_type_name(&self, entry: &Entry<'_, '_, 'a>, depth: u32) -> String {
        self.type_attr_name(entry, constants::DW_AT_type, depth)
            .unwrap_or_else(|| "void".to_owned())
    }

    /// A C-like name for the type at `offset`: typedefs stay names, aggregates are
    /// `struct S`, pointers `T*`, arrays `T[16]`, qualifiers `const T`.
    pub fn type_name(&self, offset: UnitOffset, depth: u32) -> String {
        if depth >= MAX_DEPTH {
            return "<type nested too deep>".to_owned();
        }
        let Some(budget) = self.scratch.budget.get().checked_sub(1) else {
            return "<type too complex>".to_owned();
        };
        self.scratch.budget.set(budget);
        let Ok(entry) = self.unit.entry(offset) else {
            return "<unreadable type>".to_owned();
        };
        // A declaration that stands for a type defined in a type unit.
        if let Some((names, type_offset)) = self.resolve_attr(&entry, constants::DW_AT_signature) {
            return names.type_name(type_offset, depth + 1);
        }
        let inner = || self.referenced_type_name(&entry, depth);
        match entry.tag() {
            constants::DW_TAG_base_type
            | constants::DW_TAG_unspecified_type
            | constants::DW_TAG_typedef => self
                .own_name(&entry)
                .unwrap_or_else(|| "<anonymous type>".to_owned()),
            constants::DW_TAG_structure_type => format!("struct {}", self.aggregate_name(&entry)),
            constants::DW_TAG_class_type => format!("class {}", self.aggregate_name(&entry)),
            constants::DW_TAG_union_type => format!("union {}", self.aggregate_name(&entry)),
            constants::DW_TAG_enumeration_type => {
                format!("enum {}", self.aggregate_name(&entry))
            }
            constants::DW_TAG_pointer_type => {
                let target = self.resolve_attr(&entry, constants::DW_AT_type);
                // A pointer to a function reads `R(*)(A, B)`, as C spells it.
                let is_function = target.is_some_and(|(names, target)| {
                    names
                        .unit
                        .entry(target)
                        .is_ok_and(|target| target.tag() == constants::DW_TAG_subroutine_type)
                });
                match target {
                    Some((names, target)) if is_function => {
                        names.function_type_name(target, "(*)", depth + 1)
                    }
                    _ => format!("{}*", inner()),
                }
            }
            constants::DW_TAG_reference_type => format!("{}&", inner()),
            constants::DW_TAG_rvalue_reference_type => format!("{}&&", inner()),
            constants::DW_TAG_const_type => qualified("const", inner()),
            constants::DW_TAG_volatile_type => qualified("volatile", inner()),
            constants::DW_TAG_restrict_type => format!("{} restrict", inner()),
            constants::DW_TAG_atomic_type => format!("_Atomic {}", inner()),
            constants::DW_TAG_array_type => {
                format!("{}{}", inner(), self.array_dimensions(offset))
            }
            constants::DW_TAG_subroutine_type => self.function_type_name(offset, "", depth),
            constants::DW_TAG_ptr_to_member_type => {
                let class = self
                    .type_attr_name(&entry, constants::DW_AT_containing_type, depth)
                    .unwrap_or_else(|| "?".to_owned());
                format!("{} {class}::*", inner())
            }
            _ => self
                .own_name(&entry)
                .unwrap_or_else(|| format!("<type {}>", entry.tag())),
        }
    }

    /// `R(A, B)` for a subroutine type, with `between` (`(*)` for a pointer) after `R`.
    fn function_type_name(&self, offset: UnitOffset, between: &str, depth: u32) -> String {
        let Ok(entry) = self.unit.entry(offset) else {
            return "<unreadable type>".to_owned();
        };
        let result = self.referenced_type_name(&entry, depth);
        let mut parameters = Vec::new();
        self.for_each_child(offset, |child| match child.tag() {
            constants::DW_TAG_formal_parameter => {
                parameters.push(self.referenced_type_name(child, depth));
            }
            constants::DW_TAG_unspecified_parameters => parameters.push("...".to_owned()),
            _ => {}
        });
        format!("{result}{between}({})", parameters.join(", "))
    }

    /// `[2][3]` from the subranges of an array type; `[]` for an unknown bound.
    fn array_dimensions(&self, offset: UnitOffset) -> String {
        let mut dimensions = String::new();
        self.for_each_child(offset, |child| {
            if child.tag() != constants::DW_TAG_subrange_type {
                return;
            }
            let count = udata(child, constants::DW_AT_count).or_else(|| {
                // An upper bound of -1 (all ones) marks a flexible array member.
                udata(child, constants::DW_AT_upper_bound)
                    .and_then(|bound| bound.checked_add(1))
                    .filter(|&count| count <= u64::from(u32::MAX) * 16)
            });
            match count {
                Some(count) => dimensions.push_str(&format!("[{count}]")),
                None => dimensions.push_str("[]"),
            }
        });
        if dimensions.is_empty() {
            dimensions.push_str("[]");
        }
        dimensions
    }

    /// Calls `visit` on each direct child of the DIE at `offset`, up to [`MAX_CHILDREN`].
    fn for_each_child(&self, offset: UnitOffset, mut visit: impl FnMut(&Entry<'_, '_, 'a>)) {
        let Ok(mut tree) = self.unit.entries_tree(Some(offset)) else {
            return;
        };
        let Ok(root) = tree.root() else {
            return;
        };
        let mut children = root.children();
        for _ in 0..MAX_CHILDREN {
            match children.next() {
                Ok(Some(child)) => visit(child.entry()),
                _ => break,
            }
        }
    }

    /// The name of an aggregate or enum: its own, else the typedef that names it, else a
    /// label made of its member names (deterministic, and independent of DIE offsets).
    fn aggregate_name(&self, entry: &Entry<'_, '_, 'a>) -> String {
        // A definition completing a declaration (as in type units) takes the declaration's
        // qualified name: the declaration sits inside the namespaces, the definition does not.
        if let Some(name) = self
            .resolve_attr(entry, constants::DW_AT_specification)
            .and_then(|(names, declaration)| names.die_name(declaration))
        {
            return name;
        }
        if let Some(name) = self.own_name(entry) {
            return name;
        }
        if let Some(name) = self
            .entry
            .typedef_of
            .get(&entry.offset())
            .and_then(|&typedef| self.unit.entry(typedef).ok())
            .and_then(|typedef| self.own_name(&typedef))
        {
            return name;
        }
        let mut members = Vec::new();
        let mut more = false;
        self.for_each_child(entry.offset(), |child| {
            if !matches!(
                child.tag(),
                constants::DW_TAG_member | constants::DW_TAG_enumerator
            ) {
                return;
            }
            if members.len() == MAX_ANON_MEMBERS {
                more = true;
                return;
            }
            members.push(self.raw_name(child).unwrap_or_else(|| "_".to_owned()));
        });
        if more {
            members.push("...".to_owned());
        }
        format!("<anon {{{}}}>", members.join(","))
    }

    /// The name of the aggregate a parameter or local variable at `offset` works on: its type
    /// (which a concrete instance leaves to its abstract origin) followed through pointers,
    /// references, typedefs, qualifiers and arrays. The name is the one [`Names::layout`] gives
    /// the aggregate's definition. `cache` holds the answer per type DIE of this unit, since
    /// most variables of a unit share a few types.
    pub fn used_aggregate(
        &self,
        offset: UnitOffset,
        cache: &mut HashMap<UnitOffset, Option<String>>,
    ) -> Option<String> {
        self.scratch.budget.set(TYPE_BUDGET);
        let (mut names, mut offset) = (*self, offset);
        let mut typed = None;
        for _ in 0..MAX_DEPTH {
            let entry = names.unit.entry(offset).ok()?;
            if let Some(found) = names.resolve_attr(&entry, constants::DW_AT_type) {
                typed = Some(found);
                break;
            }
            (names, offset) = names.declaration_of(&entry)?;
        }
        let (names, type_offset) = typed?;
        let same_unit = std::ptr::eq(names.entry, self.entry);
        if same_unit && let Some(known) = cache.get(&type_offset) {
            return known.clone();
        }
        let found = names.aggregate_behind(type_offset);
        if same_unit {
            cache.insert(type_offset, found.clone());
        }
        found
    }

    /// The name of the aggregate the type at `offset` is, points to or is an array of.
    fn aggregate_behind(&self, offset: UnitOffset) -> Option<String> {
        let (mut names, mut offset) = (*self, offset);
        for _ in 0..MAX_DEPTH {
            let budget = names.scratch.budget.get().checked_sub(1)?;
            names.scratch.budget.set(budget);
            let entry = names.unit.entry(offset).ok()?;
            // A declaration that stands for a type defined in a type unit.
            if let Some(next) = names.resolve_attr(&entry, constants::DW_AT_signature) {
                (names, offset) = next;
                continue;
            }
            match entry.tag() {
                constants::DW_TAG_structure_type
                | constants::DW_TAG_class_type
                | constants::DW_TAG_union_type => return Some(names.layout_name(&entry)),
                constants::DW_TAG_pointer_type
                | constants::DW_TAG_reference_type
                | constants::DW_TAG_rvalue_reference_type
                | constants::DW_TAG_const_type
                | constants::DW_TAG_volatile_type
                | constants::DW_TAG_restrict_type
                | constants::DW_TAG_atomic_type
                | constants::DW_TAG_typedef
                | constants::DW_TAG_array_type => {
                    (names, offset) = names.resolve_attr(&entry, constants::DW_AT_type)?;
                }
                _ => return None,
            }
        }
        None
    }

    /// The name a layout of the aggregate `entry` gets: its own, else the typedef's, else a
    /// label of its members and enclosing scope.
    fn layout_name(&self, entry: &Entry<'_, '_, 'a>) -> String {
        let name = self.aggregate_name(entry);
        if !name.starts_with("<anon ") {
            return name;
        }
        let keyword = match entry.tag() {
            constants::DW_TAG_union_type => "union",
            constants::DW_TAG_class_type => "class",
            _ => "struct",
        };
        // Anonymous aggregates of different scopes must not merge by name alone: name the
        // enclosing aggregate or namespace, else the unit.
        let scope = self
            .entry
            .prefixes
            .get(&entry.offset())
            .map(|prefix| prefix.trim_end_matches("::"))
            .unwrap_or(self.cu_name());
        format!(
            "<anon {keyword} {} in {scope}>",
            name.trim_start_matches("<anon ").trim_end_matches('>'),
        )
    }

    /// The layout of the struct, union or class at `offset`, and for each of its fields (in
    /// the layout's order) the name of the aggregate the field's type reaches, which the
    /// caller resolves to a [`crate::TypeId`] once every layout is known.
    pub fn layout(
        &self,
        offset: UnitOffset,
    ) -> gimli::Result<Option<(TypeLayout, Vec<Option<String>>)>> {
        self.scratch.budget.set(TYPE_BUDGET);
        let entry = self.unit.entry(offset)?;
        let kind = match entry.tag() {
            constants::DW_TAG_structure_type => TypeKind::Struct,
            constants::DW_TAG_union_type => TypeKind::Union,
            constants::DW_TAG_class_type => TypeKind::Class,
            _ => return Ok(None),
        };
        let Some(size) = udata(&entry, constants::DW_AT_byte_size) else {
            return Ok(None);
        };
        let name = self.layout_name(&entry);
        let mut fields = Vec::new();
        self.for_each_child(offset, |child| fields.extend(self.field(child)));
        // The same stable order `TypeLayout::new` gives, so the names stay beside their fields.
        fields.sort_by(|(a, _), (b, _)| a.layout_order(b));
        let (fields, reaches) = fields.into_iter().unzip();
        Ok(Some((TypeLayout::new(name, kind, size, fields), reaches)))
    }

    /// What a field whose `DW_AT_type` is `value` gets from its type: the type's name, size
    /// and the aggregate it reaches, worked out once per type of a unit. `None` without a type.
    fn field_type(&self, value: Option<AttributeValue<Reader<'a>>>) -> Option<Rc<FieldType>> {
        let Some((names, offset)) = self.resolve(value?) else {
            return Some(Rc::new(FieldType {
                name: "<unresolved type>".to_owned(),
                size: None,
                reaches: None,
            }));
        };
        let key = (std::ptr::from_ref(names.entry) as usize, offset);
        if let Some(known) = self.scratch.field_types.borrow().get(&key) {
            return Some(Rc::clone(known));
        }
        let found = Rc::new(FieldType {
            name: names.type_name(offset, 1),
            size: names.type_size(offset, true),
            reaches: names.aggregate_behind(offset),
        });
        // A type named or followed while the budget ran out may have come out short; the next
        // field of that type, with a fresh budget, works it out again.
        if self.scratch.budget.get() > 0 {
            self.scratch
                .field_types
                .borrow_mut()
                .insert(key, Rc::clone(&found));
        }
        Some(found)
    }

    /// The byte size of the type at `offset`: its `DW_AT_byte_size` through typedefs and
    /// qualifiers. With `times_dimensions`, an array's is its element's times the product of
    /// its dimensions (the size of a value of it; GCC gives arrays no size of their own), and
    /// `None` for a flexible array member; without, an array's is its element's (the storage
    /// unit of a bit field's declared type). `None` for what the debug information does not
    /// size.
    fn type_size(&self, offset: UnitOffset, times_dimensions: bool) -> Option<u64> {
        let (mut names, mut offset) = (*self, offset);
        let mut count: u64 = 1;
        for _ in 0..MAX_DEPTH {
            let entry = names.unit.entry(offset).ok()?;
            if let Some(size) = udata(&entry, constants::DW_AT_byte_size) {
                return size.checked_mul(count);
            }
            if times_dimensions && entry.tag() == constants::DW_TAG_array_type {
                let mut known = true;
                names.for_each_child(offset, |child| {
                    if child.tag() != constants::DW_TAG_subrange_type {
                        return;
                    }
                    let dimension = udata(child, constants::DW_AT_count).or_else(|| {
                        udata(child, constants::DW_AT_upper_bound)
                            .and_then(|bound| bound.checked_add(1))
                    });
                    match dimension.and_then(|d| count.checked_mul(d)) {
                        Some(product) => count = product,
                        None => known = false,
                    }
                });
                if !known {
                    return None;
                }
            }
            (names, offset) = names
                .resolve_attr(&entry, constants::DW_AT_type)
                .or_else(|| names.resolve_attr(&entry, constants::DW_AT_signature))?;
        }
        None
    }

    /// A data member or base class of an aggregate, with the name of the aggregate its type
    /// reaches; static members (declarations) are not part of the layout.
    fn field(&self, child: &Entry<'_, '_, 'a>) -> Option<(Field, Option<String>)> {
        let is_base = match child.tag() {
            constants::DW_TAG_member => false,
            constants::DW_TAG_inheritance => true,
            _ => return None,
        };
        let attrs = MemberAttrs::read(child);
        if matches!(attrs.declaration, Some(AttributeValue::Flag(true))) {
            return None;
        }
        let field_type = self.field_type(attrs.type_);
        let type_name = field_type
            .as_ref()
            .map_or_else(|| "void".to_owned(), |known| known.name.clone());
        let reaches = field_type.as_ref().and_then(|known| known.reaches.clone());
        let name = if is_base {
            format!("<base {type_name}>")
        } else {
            attrs
                .name
                .and_then(|value| self.attr_text(value))
                .unwrap_or_else(|| "<anonymous>".to_owned())
        };
        let byte_offset = attrs.location.and_then(location_value).unwrap_or(0);
        let udata = |value: Option<AttributeValue<Reader<'a>>>| value?.udata_value();
        let Some(bit_size) = udata(attrs.bit_size) else {
            let field = Field {
                name,
                offset: byte_offset,
                type_name,
                bits: None,
                size: field_type.and_then(|known| known.size),
                reaches: None,
            };
            return Some((field, reaches));
        };
        // Bit fields: find the bit offset from the start of the aggregate (DWARF 4+ gives it
        // directly; DWARF 2/3 count from the most significant bit of the storage unit), then
        // express it as a storage unit of the declared type plus a bit offset inside it, the
        // same form a PDB gives.
        let storage = udata(attrs.byte_size)
            .or_else(|| {
                attrs
                    .type_
                    .and_then(|value| self.resolve(value))
                    .and_then(|(names, type_offset)| names.type_size(type_offset, false))
            })
            .filter(|&size| size > 0 && size <= 64)
            .unwrap_or(1);
        let absolute_bit = match udata(attrs.data_bit_offset) {
            Some(bit) => byte_offset.checked_mul(8).and_then(|b| b.checked_add(bit)),
            None => match udata(attrs.bit_offset) {
                Some(msb_offset) => byte_offset
                    .checked_mul(8)
                    .and_then(|b| b.checked_add(storage * 8))
                    .and_then(|b| b.checked_sub(msb_offset))
                    .and_then(|b| b.checked_sub(bit_size)),
                None => byte_offset.checked_mul(8),
            },
        };
        let bits = absolute_bit.and_then(|absolute_bit| {
            let unit_offset = absolute_bit / (storage * 8) * storage;
            let in_unit = absolute_bit - unit_offset * 8;
            Some((
                unit_offset,
                (u32::try_from(in_unit).ok()?, u32::try_from(bit_size).ok()?),
            ))
        });
        let field = match bits {
            Some((unit_offset, bits)) => Field {
                name,
                offset: unit_offset,
                type_name,
                bits: Some(bits),
                size: Some(storage),
                reaches: None,
            },
            None => Field {
                name,
                offset: byte_offset,
                type_name,
                bits: None,
                size: Some(storage),
                reaches: None,
            },
        };
        Some((field, reaches))
    }
}

/// `const T`, but `T* const` for a pointer, as C reads it.
fn qualified(qualifier: &str, inner: String) -> String {
    // GCC qualifies both an array and its elements (`const int t[16]`); say it once.
    if inner.starts_with(qualifier) && inner[qualifier.len()..].starts_with(' ') {
        inner
    } else if inner.ends_with('*') {
        format!("{inner} {qualifier}")
    } else {
        format!("{qualifier} {inner}")
    }
}

/// An attribute as an unsigned constant.
fn udata(entry: &Entry<'_, '_, '_>, attr: constants::DwAt) -> Option<u64> {
    entry.attr_value(attr).ok()??.udata_value()
}

/// `DW_AT_data_member_location` as a constant, or as the `DW_OP_plus_uconst N` expression older
/// DWARF uses.
fn location_value(value: AttributeValue<Reader<'_>>) -> Option<u64> {
    match value {
        AttributeValue::Exprloc(expression) => {
            let mut operations = expression.operations(gimli::Encoding {
                format: gimli::Format::Dwarf32,
                version: 4,
                address_size: 8,
            });
            match operations.next().ok()? {
                Some(Operation::PlusConstant { value }) => Some(value),
                _ => None,
            }
        }
        value => value.udata_value(),
    }
}
