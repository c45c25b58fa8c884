//! PDB type records (TPI): C-like names and sizes of types, and the layouts of structs, unions
//! and classes.
//!
//! Every call that reads type records goes through `pdb::contain`/`pdb::pdb2_call`, which turn
//! a panic of `pdb2` into an error; a record whose parsing panicked reads as unknown.

use super::pdb::{contain, pdb2_call};
use crate::model::{Diagnostic, DiagnosticLocation, Field, TypeId, TypeKind, TypeLayout};
use pdb2::FallibleIterator;
use std::collections::HashMap;

/// Type chains in a hostile PDB can loop; nothing real nests this deep.
const MAX_DEPTH: u32 = 32;

/// Looks up type records by index.
pub(crate) struct TypeNames<'t, 's> {
    information: &'t pdb2::TypeInformation<'s>,
    finder: pdb2::TypeFinder<'t>,
    /// The first layout of each name, as a position in what [`TypeNames::layouts`] returned.
    layout_ids: HashMap<String, TypeId>,
    /// The aggregate behind each type index a parameter or local had so far.
    used: HashMap<u32, Option<TypeId>>,
    /// The size of each defined class and union by name, once [`TypeNames::layouts`] has read
    /// them: a member's type is mostly a forward reference, which this resolves without a
    /// search of the whole stream per member.
    definition_sizes: HashMap<String, u64>,
}

impl<'t, 's> TypeNames<'t, 's> {
    pub(crate) fn new(information: &'t pdb2::TypeInformation<'s>) -> crate::Result<Self> {
        let finder = pdb2_call("TPI stream", || {
            let mut finder = information.finder();
            let mut records = information.iter();
            while records.next()?.is_some() {
                finder.update(&records);
            }
            Ok(finder)
        })?;
        Ok(TypeNames {
            information,
            finder,
            layout_ids: HashMap::new(),
            used: HashMap::new(),
            definition_sizes: HashMap::new(),
        })
    }

    fn parse(&self, index: pdb2::TypeIndex) -> Option<pdb2::TypeData<'t>> {
        pdb2_call("TPI record", || self.finder.find(index)?.parse()).ok()
    }

    /// A C-like name for the type at `index`.
    pub(crate) fn name(&mut self, index: pdb2::TypeIndex) -> String {
        self.name_at(index, 0)
    }

    fn name_at(&self, index: pdb2::TypeIndex, depth: u32) -> String {
        if depth > MAX_DEPTH {
            return "<too deep>".into();
        }
        let Some(data) = self.parse(index) else {
            return format!("<type {:#x}>", index.0);
        };
        match data {
            pdb2::TypeData::Primitive(primitive) => {
                let base = primitive_name(primitive.kind);
                if primitive.indirection.is_some() {
                    format!("{base}*")
                } else {
                    base
                }
            }
            pdb2::TypeData::Class(class) => class.name.to_string().into_owned(),
            pdb2::TypeData::Union(union) => union.name.to_string().into_owned(),
            pdb2::TypeData::Enumeration(enumeration) => enumeration.name.to_string().into_owned(),
            pdb2::TypeData::Alias(alias) => alias.name.to_string().into_owned(),
            pdb2::TypeData::Pointer(pointer) => {
                format!("{}*", self.name_at(pointer.underlying_type, depth + 1))
            }
            pdb2::TypeData::Modifier(modifier) => {
                let mut name = self.name_at(modifier.underlying_type, depth + 1);
                if modifier.volatile {
                    name = format!("volatile {name}");
                }
                if modifier.constant {
                    name = format!("const {name}");
                }
                name
            }
            pdb2::TypeData::Array(array) => {
                let element = self.name_at(array.element_type, depth + 1);
                let element_size = self.size_at(array.element_type, depth + 1).max(1);
                let total = array.dimensions.last().copied().map(u64::from).unwrap_or(0);
                format!("{element}[{}]", total / element_size)
            }
            pdb2::TypeData::Bitfield(bitfield) => self.name_at(bitfield.underlying_type, depth + 1),
            pdb2::TypeData::Procedure(_) | pdb2::TypeData::MemberFunction(_) => "fn".into(),
            _ => format!("<type {:#x}>", index.0),
        }
    }

    /// The signature of a procedure type, `ret(arg, arg)`.
    pub(crate) fn signature(&mut self, index: pdb2::TypeIndex) -> String {
        let arguments = |list: pdb2::TypeIndex| match self.parse(list) {
            Some(pdb2::TypeData::ArgumentList(list)) => list
                .arguments
                .iter()
                .map(|&a| self.name_at(a, 1))
                .collect::<Vec<_>>()
                .join(", "),
            _ => String::new(),
        };
        match self.parse(index) {
            Some(pdb2::TypeData::Procedure(procedure)) => {
                let ret = procedure
                    .return_type
                    .map(|r| self.name_at(r, 1))
                    .unwrap_or_else(|| "void".into());
                format!("{ret}({})", arguments(procedure.argument_list))
            }
            Some(pdb2::TypeData::MemberFunction(function)) => {
                format!(
                    "{}({})",
                    self.name_at(function.return_type, 1),
                    arguments(function.argument_list)
                )
            }
            _ => self.name_at(index, 0),
        }
    }

    /// The size in bytes of the type at `index` (0 when unknown).
    pub(crate) fn size(&mut self, index: pdb2::TypeIndex) -> u64 {
        self.size_at(index, 0)
    }

    /// The size of the type at `index`, `None` when the PDB does not give one.
    fn known_size(&self, index: pdb2::TypeIndex) -> Option<u64> {
        Some(self.size_at(index, 0)).filter(|&size| size > 0)
    }

    fn size_at(&self, index: pdb2::TypeIndex, depth: u32) -> u64 {
        if depth > MAX_DEPTH {
            return 0;
        }
        let Some(data) = self.parse(index) else {
            return 0;
        };
        match data {
            pdb2::TypeData::Primitive(primitive) => {
                if primitive.indirection.is_some() {
                    8
                } else {
                    primitive_size(primitive.kind)
                }
            }
            pdb2::TypeData::Class(class) => {
                if class.properties.forward_reference() {
                    self.definition_size(&class.name).unwrap_or(class.size)
                } else {
                    class.size
                }
            }
            pdb2::TypeData::Union(union) => {
                if union.properties.forward_reference() {
                    self.definition_size(&union.name).unwrap_or(union.size)
                } else {
                    union.size
                }
            }
            pdb2::TypeData::Enumeration(enumeration) => {
                self.size_at(enumeration.underlying_type, depth + 1)
            }
            pdb2::TypeData::Alias(alias) => self.size_at(alias.underlying_type, depth + 1),
            pdb2::TypeData::Pointer(pointer) => u64::from(pointer.attributes.size()).max(8),
            pdb2::TypeData::Modifier(modifier) => self.size_at(modifier.underlying_type, depth + 1),
            pdb2::TypeData::Array(array) => {
                array.dimensions.last().copied().map(u64::from).unwrap_or(0)
            }
            pdb2::TypeData::Bitfield(bitfield) => self.size_at(bitfield.underlying_type, depth + 1),
            _ => 0,
        }
    }

    /// The size of the definition behind a forward reference named `name`.
    fn definition_size(&self, name: &pdb2::RawString<'_>) -> Option<u64> {
        if !self.definition_sizes.is_empty() {
            return self
                .definition_sizes
                .get(name.to_string().as_ref())
                .copied();
        }
        self.resolve_forward(name).map(|(size, _)| size)
    }

    /// The definition behind a forward reference, found by name: (size, type index).
    fn resolve_forward(&self, name: &pdb2::RawString<'_>) -> Option<(u64, pdb2::TypeIndex)> {
        let mut records = contain("TPI stream", || self.information.iter()).ok()?;
        while let Ok(Some(record)) = pdb2_call("TPI stream", || records.next()) {
            match pdb2_call("TPI record", || record.parse()) {
                Ok(pdb2::TypeData::Class(class))
                    if !class.properties.forward_reference() && class.name == *name =>
                {
                    return Some((class.size, record.index()));
                }
                Ok(pdb2::TypeData::Union(union))
                    if !union.properties.forward_reference() && union.name == *name =>
                {
                    return Some((union.size, record.index()));
                }
                _ => {}
            }
        }
        None
    }

    /// The layout of every defined struct, union and class.
    ///
    /// Two passes: the first reads every definition (name, kind, size, field list), which the
    /// second needs to size each member and to tie a member to the aggregate it reaches.
    pub(crate) fn layouts(&mut self, diagnostics: &mut Vec<Diagnostic>) -> Vec<TypeLayout> {
        let mut layouts = Vec::new();
        let mut definitions = Vec::new();
        let malformed = |error: crate::Error| Diagnostic {
            location: DiagnosticLocation::PdbTypes,
            message: error.to_string(),
            function: None,
        };
        let mut records = match contain("TPI stream", || self.information.iter()) {
            Ok(records) => records,
            Err(error) => {
                diagnostics.push(malformed(error));
                return layouts;
            }
        };
        loop {
            let record = match pdb2_call("TPI stream", || records.next()) {
                Ok(Some(record)) => record,
                Ok(None) => break,
                Err(error) => {
                    diagnostics.push(malformed(error));
                    break;
                }
            };
            let (name, kind, size, fields) = match pdb2_call("TPI record", || record.parse()) {
                Ok(pdb2::TypeData::Class(class)) if !class.properties.forward_reference() => {
                    let kind = match class.kind {
                        pdb2::ClassKind::Class => TypeKind::Class,
                        _ => TypeKind::Struct,
                    };
                    (
                        class.name.to_string().into_owned(),
                        kind,
                        class.size,
                        class.fields,
                    )
                }
                Ok(pdb2::TypeData::Union(union)) if !union.properties.forward_reference() => (
                    union.name.to_string().into_owned(),
                    TypeKind::Union,
                    union.size,
                    Some(union.fields),
                ),
                _ => continue,
            };
            if let Ok(position) = u32::try_from(definitions.len()) {
                self.layout_ids
                    .entry(name.clone())
                    .or_insert(TypeId(position));
            }
            self.definition_sizes.entry(name.clone()).or_insert(size);
            definitions.push((name, kind, size, fields));
        }
        for (name, kind, size, fields) in definitions {
            let fields = fields.map(|index| self.fields(index)).unwrap_or_default();
            layouts.push(TypeLayout::new(name, kind, size, fields));
        }
        layouts
    }

    /// The aggregate (a position in what [`TypeNames::layouts`] returned) that a parameter or
    /// local of type `index` works on: the type followed through pointers, qualifiers, arrays
    /// and aliases. A forward reference names the same layout as its definition.
    pub(crate) fn used_aggregate(&mut self, index: pdb2::TypeIndex) -> Option<TypeId> {
        if let Some(&known) = self.used.get(&index.0) {
            return known;
        }
        let found = self.aggregate_behind(index);
        self.used.insert(index.0, found);
        found
    }

    fn aggregate_behind(&self, mut index: pdb2::TypeIndex) -> Option<TypeId> {
        for _ in 0..MAX_DEPTH {
            index = match self.parse(index)? {
                pdb2::TypeData::Class(class) => {
                    return self
                        .layout_ids
                        .get(class.name.to_string().as_ref())
                        .copied();
                }
                pdb2::TypeData::Union(union) => {
                    return self
                        .layout_ids
                        .get(union.name.to_string().as_ref())
                        .copied();
                }
                pdb2::TypeData::Pointer(pointer) => pointer.underlying_type,
                pdb2::TypeData::Modifier(modifier) => modifier.underlying_type,
                pdb2::TypeData::Array(array) => array.element_type,
                pdb2::TypeData::Alias(alias) => alias.underlying_type,
                _ => return None,
            };
        }
        None
    }

    /// The aggregates a procedure of type `index` takes: its parameters' and, for a member
    /// function, its class.
    pub(crate) fn procedure_uses(&mut self, index: pdb2::TypeIndex) -> Vec<TypeId> {
        let (class, arguments) = match self.parse(index) {
            Some(pdb2::TypeData::Procedure(procedure)) => (None, procedure.argument_list),
            Some(pdb2::TypeData::MemberFunction(function)) => {
                (Some(function.class_type), function.argument_list)
            }
            _ => return Vec::new(),
        };
        let arguments = match self.parse(arguments) {
            Some(pdb2::TypeData::ArgumentList(list)) => list.arguments,
            _ => Vec::new(),
        };
        class
            .into_iter()
            .chain(arguments)
            .filter_map(|argument| self.used_aggregate(argument))
            .collect()
    }

    /// The data members of a field list, following continuations.
    fn fields(&self, mut index: pdb2::TypeIndex) -> Vec<Field> {
        let mut fields = Vec::new();
        for _ in 0..MAX_DEPTH {
            let Some(pdb2::TypeData::FieldList(list)) = self.parse(index) else {
                break;
            };
            for field in &list.fields {
                match field {
                    pdb2::TypeData::Member(member) => {
                        let bits = match self.parse(member.field_type) {
                            Some(pdb2::TypeData::Bitfield(bitfield)) => {
                                Some((u32::from(bitfield.position), u32::from(bitfield.length)))
                            }
                            _ => None,
                        };
                        fields.push(Field {
                            name: member.name.to_string().into_owned(),
                            offset: member.offset,
                            type_name: self.name_at(member.field_type, 0),
                            bits,
                            size: self.known_size(member.field_type),
                            reaches: self.aggregate_behind(member.field_type),
                        });
                    }
                    pdb2::TypeData::BaseClass(base) => fields.push(Field {
                        name: "<base>".into(),
                        offset: u64::from(base.offset),
                        type_name: self.name_at(base.base_class, 0),
                        bits: None,
                        size: self.known_size(base.base_class),
                        reaches: self.aggregate_behind(base.base_class),
                    }),
                    pdb2::TypeData::VirtualFunctionTablePointer(_) => fields.push(Field {
                        name: "<vfptr>".into(),
                        offset: 0,
                        type_name: "vtable*".into(),
                        bits: None,
                        size: Some(8),
                        reaches: None,
                    }),
                    _ => {}
                }
            }
            match list.continuation {
                Some(next) => index = next,
                None => break,
            }
        }
        fields
    }
}

fn primitive_name(kind: pdb2::PrimitiveKind) -> String {
    use pdb2::PrimitiveKind as K;
    match kind {
        K::NoType => "...".into(),
        K::Void => "void".into(),
        K::Char | K::RChar => "char".into(),
        K::UChar => "unsigned char".into(),
        K::WChar => "wchar_t".into(),
        K::Short | K::I16 => "short".into(),
        K::UShort | K::U16 => "unsigned short".into(),
        K::Long | K::I32 => "int".into(),
        K::ULong | K::U32 => "unsigned int".into(),
        K::Quad | K::I64 => "long long".into(),
        K::UQuad | K::U64 => "unsigned long long".into(),
        K::F32 => "float".into(),
        K::F64 => "double".into(),
        K::Bool8 => "bool".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn primitive_size(kind: pdb2::PrimitiveKind) -> u64 {
    use pdb2::PrimitiveKind as K;
    match kind {
        K::NoType | K::Void => 0,
        K::Char | K::UChar | K::RChar | K::I8 | K::U8 | K::Bool8 => 1,
        K::WChar | K::RChar16 | K::Short | K::UShort | K::I16 | K::U16 | K::F16 | K::Bool16 => 2,
        K::RChar32 | K::Long | K::ULong | K::I32 | K::U32 | K::F32 | K::Bool32 | K::HRESULT => 4,
        K::Quad | K::UQuad | K::I64 | K::U64 | K::F64 | K::Bool64 => 8,
        K::F80 => 10,
        K::Octa | K::UOcta | K::I128 | K::U128 | K::F128 => 16,
        _ => 0,
    }
}
