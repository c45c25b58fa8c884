//! Names from DWARF: qualified names of subprograms and inlinees, C-like type names
//! (`const char*`, `int[16]`, `struct session`) and the layouts of structs, unions and classes.
//!
//! Every chain of references (`DW_AT_type`, `DW_AT_specification`, `DW_AT_abstract_origin`) is
//! followed at most [`MAX_DEPTH`] steps, so a hostile file with a reference cycle ends in a
//! placeholder name rather than a stack overflow or a loop.

use std::cell::Cell;
use std::collections::HashMap;

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

/// The offset a reference attribute points to, when it is in the same unit.
///
/// References to other units (`DW_FORM_ref_addr`, used by LTO builds) are not followed.
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

/// Resolves names and types within one unit, with what the walk of the unit collected.
pub(super) struct Names<'a, 'u> {
    unit: UnitRef<'u, Reader<'a>>,
    /// `ns::Class::` for each named DIE inside a named scope.
    prefixes: &'u HashMap<UnitOffset, String>,
    /// The first typedef naming each type.
    typedef_of: &'u HashMap<UnitOffset, UnitOffset>,
    cu_name: &'u str,
    /// Type units, for types referenced by signature.
    type_units: &'u TypeUnits<'a>,
    /// Types that may still be visited for the current name or layout; see [`TYPE_BUDGET`].
    /// Shared with the `Names` of type units visited on the way.
    budget: &'u Cell<u32>,
}

/// A type unit (`.debug_types` in DWARF 4, `DW_UT_type` in DWARF 5): one type that compilation
/// units reference by its 8-byte signature.
pub(super) struct TypeUnit<'a> {
    pub unit: gimli::Unit<Reader<'a>>,
    pub type_offset: UnitOffset,
    /// `type unit <signature>`, which stands for a compilation unit name in anonymous names.
    pub name: String,
    pub prefixes: HashMap<UnitOffset, String>,
    pub typedef_of: HashMap<UnitOffset, UnitOffset>,
    /// The aggregates defined in the unit, to lay out.
    pub aggregates: Vec<UnitOffset>,
}

/// Every type unit, found by signature.
#[derive(Default)]
pub(super) struct TypeUnits<'a> {
    pub units: Vec<TypeUnit<'a>>,
    pub by_signature: HashMap<u64, usize>,
}

/// A fresh budget for [`Names::new`].
pub(super) fn new_budget() -> Cell<u32> {
    Cell::new(TYPE_BUDGET)
}

impl<'a, 'u> Names<'a, 'u> {
    pub fn new(
        unit: UnitRef<'u, Reader<'a>>,
        prefixes: &'u HashMap<UnitOffset, String>,
        typedef_of: &'u HashMap<UnitOffset, UnitOffset>,
        cu_name: &'u str,
        type_units: &'u TypeUnits<'a>,
        budget: &'u Cell<u32>,
    ) -> Self {
        Names {
            unit,
            prefixes,
            typedef_of,
            cu_name,
            type_units,
            budget,
        }
    }

    /// The name of the type a signature designates, read in its type unit.
    fn signature_type_name(&self, signature: u64, depth: u32) -> String {
        let Some(type_unit) = self
            .type_units
            .by_signature
            .get(&signature)
            .and_then(|&index| self.type_units.units.get(index))
        else {
            return format!("<type {signature:016x}>");
        };
        let names = Names::new(
            type_unit.unit.unit_ref(self.unit.dwarf),
            &type_unit.prefixes,
            &type_unit.typedef_of,
            &type_unit.name,
            self.type_units,
            self.budget,
        );
        names.type_name(type_unit.type_offset, depth + 1)
    }

    /// The name of the type an attribute (`DW_AT_type`, ...) refers to, in this unit or by
    /// signature; `None` when the DIE has no such attribute.
    fn type_attr_name(
        &self,
        entry: &Entry<'_, '_, 'a>,
        attr: constants::DwAt,
        depth: u32,
    ) -> Option<String> {
        let value = entry.attr_value(attr).ok()??;
        Some(match value {
            AttributeValue::DebugTypesRef(signature) => {
                self.signature_type_name(signature.0, depth)
            }
            value => match reference(self.unit, Some(value)) {
                Some(offset) => self.type_name(offset, depth + 1),
                None => "<unresolved type>".to_owned(),
            },
        })
    }

    /// The qualified name of a DIE, following `DW_AT_specification` and `DW_AT_abstract_origin`
    /// to the declaration that carries it.
    pub fn die_name(&self, offset: UnitOffset) -> Option<String> {
        let mut offset = offset;
        for _ in 0..MAX_DEPTH {
            let entry = self.unit.entry(offset).ok()?;
            if let Some(name) = self.own_name(&entry) {
                return Some(name);
            }
            offset = [
                constants::DW_AT_specification,
                constants::DW_AT_abstract_origin,
            ]
            .into_iter()
            .find_map(|attr| reference(self.unit, entry.attr_value(attr).ok().flatten()))?;
        }
        None
    }

    /// `DW_AT_name` alone, without the enclosing scopes.
    fn raw_name(&self, entry: &Entry<'_, '_, 'a>) -> Option<String> {
        let value = entry.attr_value(constants::DW_AT_name).ok()??;
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
        Some(match self.prefixes.get(&entry.offset()) {
            Some(prefix) => format!("{prefix}{name}"),
            None => name,
        })
    }

    /// The type of a variable, which a definition may leave to its declaration.
    pub fn variable_type_name(&self, offset: UnitOffset) -> Option<String> {
        self.budget.set(TYPE_BUDGET);
        let mut offset = offset;
        for _ in 0..MAX_DEPTH {
            let entry = self.unit.entry(offset).ok()?;
            if let Some(name) = self.type_attr_name(&entry, constants::DW_AT_type, 0) {
                return Some(name);
            }
            offset = [
                constants::DW_AT_specification,
                constants::DW_AT_abstract_origin,
            ]
            .into_iter()
            .find_map(|attr| reference(self.unit, entry.attr_value(attr).ok().flatten()))?;
        }
        None
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
        let Some(budget) = self.budget.get().checked_sub(1) else {
            return "<type too complex>".to_owned();
        };
        self.budget.set(budget);
        let Ok(entry) = self.unit.entry(offset) else {
            return "<unreadable type>".to_owned();
        };
        // A declaration that stands for a type defined in a type unit.
        if let Ok(Some(AttributeValue::DebugTypesRef(signature))) =
            entry.attr_value(constants::DW_AT_signature)
        {
            return self.signature_type_name(signature.0, depth);
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
                let target = reference(
                    self.unit,
                    entry.attr_value(constants::DW_AT_type).ok().flatten(),
                );
                // A pointer to a function reads `R(*)(A, B)`, as C spells it.
                let is_function = target
                    .and_then(|target| self.unit.entry(target).ok())
                    .is_some_and(|target| target.tag() == constants::DW_TAG_subroutine_type);
                match target {
                    Some(target) if is_function => self.function_type_name(target, "(*)", depth),
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
        if let Some(name) = reference(
            self.unit,
            entry
                .attr_value(constants::DW_AT_specification)
                .ok()
                .flatten(),
        )
        .and_then(|declaration| self.die_name(declaration))
        {
            return name;
        }
        if let Some(name) = self.own_name(entry) {
            return name;
        }
        if let Some(name) = self
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

    /// The byte size of a type, through typedefs and qualifiers.
    fn type_size(&self, offset: UnitOffset) -> Option<u64> {
        let mut offset = offset;
        for _ in 0..MAX_DEPTH {
            let entry = self.unit.entry(offset).ok()?;
            if let Some(size) = udata(&entry, constants::DW_AT_byte_size) {
                return Some(size);
            }
            offset = reference(
                self.unit,
                entry.attr_value(constants::DW_AT_type).ok().flatten(),
            )?;
        }
        None
    }

    /// The layout of the struct, union or class at `offset`.
    pub fn layout(&self, offset: UnitOffset) -> gimli::Result<Option<TypeLayout>> {
        self.budget.set(TYPE_BUDGET);
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
        let mut name = self.aggregate_name(&entry);
        if name.starts_with("<anon ") {
            let keyword = match kind {
                TypeKind::Struct => "struct",
                TypeKind::Union => "union",
                TypeKind::Class => "class",
            };
            // Anonymous aggregates of different scopes must not merge by name alone: name the
            // enclosing aggregate or namespace, else the unit.
            let scope = self
                .prefixes
                .get(&offset)
                .map(|prefix| prefix.trim_end_matches("::"))
                .unwrap_or(self.cu_name);
            name = format!(
                "<anon {keyword} {} in {scope}>",
                name.trim_start_matches("<anon ").trim_end_matches('>'),
            );
        }
        let mut fields = Vec::new();
        self.for_each_child(offset, |child| {
            if let Some(field) = self.field(child) {
                fields.push(field);
            }
        });
        Ok(Some(TypeLayout::new(name, kind, size, fields)))
    }

    /// A data member or base class of an aggregate; static members (declarations) are not part
    /// of the layout.
    fn field(&self, child: &Entry<'_, '_, 'a>) -> Option<Field> {
        let is_base = match child.tag() {
            constants::DW_TAG_member => false,
            constants::DW_TAG_inheritance => true,
            _ => return None,
        };
        let is_declaration = matches!(
            child
                .attr_value(constants::DW_AT_declaration)
                .ok()
                .flatten(),
            Some(AttributeValue::Flag(true))
        );
        if is_declaration {
            return None;
        }
        let type_name = self.referenced_type_name(child, 0);
        let name = if is_base {
            format!("<base {type_name}>")
        } else {
            self.raw_name(child)
                .unwrap_or_else(|| "<anonymous>".to_owned())
        };
        let byte_offset = member_location(child).unwrap_or(0);
        let Some(bit_size) = udata(child, constants::DW_AT_bit_size) else {
            return Some(Field {
                name,
                offset: byte_offset,
                type_name,
                bits: None,
            });
        };
        // Bit fields: find the bit offset from the start of the aggregate (DWARF 4+ gives it
        // directly; DWARF 2/3 count from the most significant bit of the storage unit), then
        // express it as a storage unit of the declared type plus a bit offset inside it, the
        // same form a PDB gives.
        let storage = udata(child, constants::DW_AT_byte_size)
            .or_else(|| {
                reference(
                    self.unit,
                    child.attr_value(constants::DW_AT_type).ok().flatten(),
                )
                .and_then(|t| self.type_size(t))
            })
            .filter(|&size| size > 0 && size <= 64)
            .unwrap_or(1);
        let absolute_bit = match udata(child, constants::DW_AT_data_bit_offset) {
            Some(bit) => byte_offset.checked_mul(8).and_then(|b| b.checked_add(bit)),
            None => match udata(child, constants::DW_AT_bit_offset) {
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
        Some(match bits {
            Some((unit_offset, bits)) => Field {
                name,
                offset: unit_offset,
                type_name,
                bits: Some(bits),
            },
            None => Field {
                name,
                offset: byte_offset,
                type_name,
                bits: None,
            },
        })
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
fn member_location(entry: &Entry<'_, '_, '_>) -> Option<u64> {
    match entry
        .attr_value(constants::DW_AT_data_member_location)
        .ok()??
    {
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
