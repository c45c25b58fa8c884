//! MSVC names: undecorating public symbols into readable names, matching a procedure's readable
//! name to its decorated public, finding the parent of an exception funclet from its name, and
//! qualifying member-function inlinee names with their class.

#[cfg(test)]
mod tests;

use msvc_demangler::DemangleFlags;

/// The readable form of a decorated MSVC name (`?f@@YAHH@Z` becomes `f`), in the spelling PDB
/// procedure records use: scope and template arguments, no return type or parameters.
/// Names that are not decorated (C names, clang/mingw names) come back unchanged.
pub(crate) fn readable(name: &str) -> String {
    undecorate(name).unwrap_or_else(|| name.to_owned())
}

fn undecorate(name: &str) -> Option<String> {
    if !name.starts_with('?') {
        return None;
    }
    // The demangler is a parser of input-derived text; a panic inside it must not take the
    // reader down with it.
    let demangled = std::panic::catch_unwind(|| {
        msvc_demangler::demangle(
            name,
            DemangleFlags::NAME_ONLY
                | DemangleFlags::NO_CLASS_TYPE
                | DemangleFlags::SPACE_AFTER_COMMA,
        )
    })
    .ok()?
    .ok()?;
    Some(pdb_spelling(&demangled))
}

/// Rewrites the demangler's spelling into the PDB's: `char const *` not `const char*`, no space
/// after commas, `> >` between closing template brackets, no `class`/`struct` keywords.
fn pdb_spelling(demangled: &str) -> String {
    let mut text = demangled.replace(", ", ",");
    text = text.replace(">>", "> >");
    // A second pass catches `>>>`, whose middle bracket the first pass consumed.
    text = text.replace(">>", "> >");
    text
}

/// True when `decorated` (a public symbol) names the procedure whose PDB name is `procedure`.
/// Whitespace and the order of `const` qualifiers are spelled differently by different
/// undecorators, so the comparison ignores both.
pub(crate) fn public_matches(decorated: &str, procedure: &str) -> bool {
    if decorated == procedure {
        return true;
    }
    match undecorate(decorated) {
        Some(readable) => comparison_key(&readable) == comparison_key(procedure),
        None => false,
    }
}

fn comparison_key(name: &str) -> String {
    let mut tokens: Vec<String> = Vec::new();
    for token in name
        .replace('*', " * ")
        .replace('&', " & ")
        .replace(',', " , ")
        .replace('<', " < ")
        .replace('>', " > ")
        .split_whitespace()
    {
        // `const char` and `char const` are the same type: move a leading `const` behind the
        // type name it qualifies, the PDB's order.
        if tokens.last().is_some_and(|last| last == "const") && token != "const" {
            let is_type_name = !matches!(token, "*" | "&" | "," | "<" | ">");
            if is_type_name {
                tokens.pop();
                tokens.push(token.to_owned());
                tokens.push("const".to_owned());
                continue;
            }
        }
        tokens.push(token.to_owned());
    }
    tokens.concat()
}

/// The exception-handling funclet kinds MSVC emits as procedures of their own.
const FUNCLET_KINDS: &[&str] = &["dtor", "catch", "filt", "fin", "unwind"];

/// The readable name of the function an MSVC exception funclet belongs to, from the funclet's
/// name: `` `f'::`1'::dtor$0 `` (C++ unwind and catch funclets) or `f$filt$0` (SEH filters and
/// `__finally` blocks in C). `None` for every other name.
pub(crate) fn funclet_parent(name: &str) -> Option<&str> {
    if let Some(rest) = name.strip_prefix('`') {
        // `` `parent'::`N'::kind$M ``: the parent ends at the last `'::`` before the scope number.
        let (head, kind) = rest.rsplit_once("'::")?;
        if !is_funclet_suffix(kind) {
            return None;
        }
        let (parent, scope) = head.rsplit_once("'::`")?;
        if parent.is_empty() || scope.is_empty() || !scope.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        return Some(parent);
    }
    // `parent$kind$M`
    let (head, number) = name.rsplit_once('$')?;
    let (parent, kind) = head.rsplit_once('$')?;
    if parent.is_empty()
        || number.is_empty()
        || !number.bytes().all(|b| b.is_ascii_digit())
        || !FUNCLET_KINDS.contains(&kind)
    {
        return None;
    }
    Some(parent)
}

/// `kind$M` with a known kind and a decimal number.
fn is_funclet_suffix(text: &str) -> bool {
    let Some((kind, number)) = text.split_once('$') else {
        return false;
    };
    FUNCLET_KINDS.contains(&kind)
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
}

/// The qualified name of a member function from its `LF_MFUNC_ID` record: the class name and the
/// member name, with MSVC's placeholders `{ctor}` and `{dtor}` spelled as C++ does
/// (`std::string::{ctor}` becomes `std::string::string`).
pub(crate) fn qualify_member(class: &str, member: &str) -> String {
    let short = unqualified_class_name(class);
    match member {
        "{ctor}" => format!("{class}::{short}"),
        "{dtor}" => format!("{class}::~{short}"),
        _ => format!("{class}::{member}"),
    }
}

/// The last component of a qualified class name, without template arguments:
/// `std::basic_string<char,std::char_traits<char> >` gives `basic_string`.
fn unqualified_class_name(class: &str) -> &str {
    // Cut the template argument list at the end (balanced angle brackets).
    let mut base = class;
    if base.ends_with('>') {
        let mut depth = 0usize;
        for (idx, ch) in base.char_indices().rev() {
            match ch {
                '>' => depth += 1,
                '<' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        base = &base[..idx];
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    // The last `::` outside template arguments.
    let mut depth = 0usize;
    let bytes = base.as_bytes();
    let mut start = 0;
    let mut idx = 0;
    while idx < bytes.len() {
        match bytes[idx] {
            b'<' => depth += 1,
            b'>' => depth = depth.saturating_sub(1),
            b':' if depth == 0 && bytes.get(idx + 1) == Some(&b':') => {
                start = idx + 2;
                idx += 1;
            }
            _ => {}
        }
        idx += 1;
    }
    base.get(start..).filter(|s| !s.is_empty()).unwrap_or(class)
}
