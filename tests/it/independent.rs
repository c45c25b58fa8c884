//! The function names and addresses `hotpatch inspect --json` reports equal those of independent
//! tools: `llvm-pdbutil dump --symbols` for PDBs, `readelf -s` for ELF.

use crate::support::{Build, builds, inspect_json, path_str, tool};
use std::collections::{BTreeMap, BTreeSet};

/// (name, RVA) of every function the model describes, folded names included.
fn model_functions(build: &Build, debug_only: bool) -> BTreeSet<(String, u64)> {
    let json = inspect_json(build);
    let mut functions = BTreeSet::new();
    for function in json["functions"].as_array().expect("functions is an array") {
        if debug_only && function["has_debug_info"] != true {
            continue;
        }
        let rva = function["rva"].as_u64().expect("rva is a number");
        let name = if debug_only {
            &function["display_name"]
        } else {
            &function["name"]
        };
        functions.insert((name.as_str().expect("name").to_owned(), rva));
        // Folded names: readable ones beside the readable name, decorated ones beside the
        // symbol name.
        let aliases = if debug_only {
            &function["alias_display_names"]
        } else {
            &function["aliases"]
        };
        for alias in aliases.as_array().into_iter().flatten() {
            functions.insert((alias.as_str().expect("alias").to_owned(), rva));
        }
    }
    functions
}

/// Section virtual addresses by 1-based section number, from `llvm-pdbutil`.
fn pdb_section_addresses(pdb: &str) -> Vec<u64> {
    let dump = tool("llvm-pdbutil", &["dump", "--section-headers", pdb]);
    dump.lines()
        .filter(|line| line.trim_end().ends_with(" virtual address"))
        .map(|line| {
            u64::from_str_radix(line.split_whitespace().next().expect("address"), 16)
                .expect("hex address")
        })
        .collect()
}

/// (name, RVA) of every `S_GPROC32`/`S_LPROC32` record, from `llvm-pdbutil dump --symbols`.
fn pdbutil_procedures(pdb: &str) -> BTreeSet<(String, u64)> {
    pdbutil_procedures_in_order(pdb).into_iter().collect()
}

/// The same records in the order of the dump: module by module, in symbol stream order.
fn pdbutil_procedures_in_order(pdb: &str) -> Vec<(String, u64)> {
    let sections = pdb_section_addresses(pdb);
    let dump = tool("llvm-pdbutil", &["dump", "--symbols", pdb]);
    let mut procedures = Vec::new();
    let mut lines = dump.lines();
    while let Some(line) = lines.next() {
        if !(line.contains("| S_GPROC32 ") || line.contains("| S_LPROC32 ")) {
            continue;
        }
        // Everything between the first and the last backquote: MSVC funclet names contain
        // backquotes of their own (`` `f'::`1'::dtor$0 ``).
        let (Some(first), Some(last)) = (line.find('`'), line.rfind('`')) else {
            panic!("procedure name in backquotes: {line}")
        };
        let name = line[first + 1..last].to_owned();
        let detail = lines.next().expect("a procedure record has a detail line");
        let addr = detail
            .split("addr = ")
            .nth(1)
            .expect("addr field")
            .split(',')
            .next()
            .expect("addr");
        let (section, offset) = addr.split_once(':').expect("section:offset");
        let section: usize = section.parse().expect("section number");
        let offset: u64 = offset.parse().expect("offset");
        let base = sections.get(section - 1).copied().expect("section exists");
        procedures.push((name, base + offset));
    }
    procedures
}

#[test]
fn pe_functions_match_llvm_pdbutil() {
    let mut compared = 0;
    for build in builds().into_iter().filter(|b| b.format == "pe") {
        let pdb = build.pdb.clone().expect("PE builds have a PDB");
        let expected = pdbutil_procedures(path_str(&pdb));
        let actual = model_functions(&build, true);
        assert!(
            !expected.is_empty(),
            "{}: llvm-pdbutil lists no procedures",
            build.label()
        );
        assert_eq!(actual, expected, "{}: model vs llvm-pdbutil", build.label());
        compared += expected.len();
    }
    assert!(compared > 0);
}

/// (name, address) of every defined `FUNC` symbol of `.symtab`, from `readelf -sW`.
fn readelf_functions(binary: &str) -> BTreeSet<(String, u64)> {
    let listing = tool("readelf", &["-sW", binary]);
    let symtab = listing.split("Symbol table '.symtab'").nth(1).unwrap_or("");
    symtab
        .lines()
        .filter_map(|line| {
            // Num: Value Size Type Bind Vis Ndx Name
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (value, kind, ndx, name) = (
                fields.get(1)?,
                fields.get(3)?,
                fields.get(6)?,
                fields.get(7)?,
            );
            (*kind == "FUNC" && *ndx != "UND")
                .then(|| Some(((*name).to_owned(), u64::from_str_radix(value, 16).ok()?)))?
        })
        .filter(|(_, address)| *address != 0)
        .collect()
}

#[test]
fn elf_functions_match_readelf() {
    for build in builds().into_iter().filter(|b| b.format == "elf") {
        let expected = readelf_functions(path_str(&build.binary));
        let actual = model_functions(&build, false);
        assert!(
            !expected.is_empty(),
            "{}: readelf lists no functions",
            build.label()
        );
        assert_eq!(actual, expected, "{}: model vs readelf -s", build.label());
    }
}

/// Builds of the prebuilt MSVC cases (`fixtures/msvc_*`).
fn msvc_builds() -> Vec<Build> {
    let msvc: Vec<Build> = builds()
        .into_iter()
        .filter(|b| b.format == "pe" && b.case.starts_with("msvc_"))
        .collect();
    assert!(!msvc.is_empty(), "no fixtures/msvc_* case");
    msvc
}

/// The parent an MSVC funclet names, read from `llvm-pdbutil`'s spelling of the procedure:
/// `` `parent'::`1'::dtor$0 `` or `parent$filt$0`.
fn funclet_parent_of(name: &str) -> Option<String> {
    if let Some(rest) = name.strip_prefix('`') {
        let end = rest.rfind("'::`")?;
        let suffix = &rest[end..];
        let is_funclet = ["dtor$", "catch$", "filt$", "fin$"]
            .iter()
            .any(|kind| suffix.contains(kind));
        return is_funclet.then(|| rest[..end].to_owned());
    }
    ["$filt$", "$fin$"]
        .iter()
        .find_map(|kind| name.split_once(kind).map(|(parent, _)| parent.to_owned()))
}

#[test]
fn msvc_funclets_name_their_parent() {
    let mut funclets = 0;
    for build in msvc_builds() {
        let pdb = build.pdb.clone().expect("PE builds have a PDB");
        let json = inspect_json(&build);
        let functions = json["functions"].as_array().expect("functions");
        // The procedure a funclet follows in its module's symbol stream is its parent.
        let mut previous: Option<(String, u64)> = None;
        for (name, rva) in pdbutil_procedures_in_order(path_str(&pdb)) {
            let Some(parent_display) = funclet_parent_of(&name) else {
                previous = Some((name, rva));
                continue;
            };
            let (previous_name, previous_rva) =
                previous.clone().expect("a funclet follows its parent");
            assert_eq!(
                previous_name,
                parent_display,
                "{}: {name} follows another procedure",
                build.label()
            );
            funclets += 1;
            let funclet = functions
                .iter()
                .find(|f| f["display_name"] == name.as_str() && f["rva"] == rva)
                .unwrap_or_else(|| panic!("{}: funclet {name} is a function", build.label()));
            let parent = funclet["parent"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: {name} has no parent", build.label()));
            let parent_function = functions
                .iter()
                .find(|f| f["name"] == parent)
                .unwrap_or_else(|| panic!("{}: parent {parent} is a function", build.label()));
            let parent_names: Vec<&str> = std::iter::once(&parent_function["display_name"])
                .chain(
                    parent_function["alias_display_names"]
                        .as_array()
                        .into_iter()
                        .flatten(),
                )
                .filter_map(|n| n.as_str())
                .collect();
            assert!(
                parent_names.contains(&parent_display.as_str()),
                "{}: {name} has parent {parent} ({parent_names:?}), expected {parent_display}",
                build.label()
            );
            assert_eq!(
                parent_function["rva"],
                previous_rva,
                "{}: {name} has the parent body at another address",
                build.label()
            );
        }
        // Ordinary functions have none.
        for function in functions {
            let display = function["display_name"].as_str().expect("display_name");
            if funclet_parent_of(display).is_none() {
                assert!(
                    function.get("parent").is_none(),
                    "{}: {display} is no funclet but has a parent",
                    build.label()
                );
            }
        }
    }
    assert!(funclets > 0, "the MSVC fixtures have funclets");
}

/// `LF_MFUNC_ID` records (index -> (member name, class type index)) from `llvm-pdbutil dump --ids`.
fn pdbutil_member_function_ids(pdb: &str) -> BTreeMap<String, (String, String)> {
    let dump = tool("llvm-pdbutil", &["dump", "--ids", pdb]);
    let mut ids = BTreeMap::new();
    let mut lines = dump.lines();
    while let Some(line) = lines.next() {
        if !line.contains("| LF_MFUNC_ID ") {
            continue;
        }
        let index = line.split('|').next().expect("index").trim().to_owned();
        let detail = lines.next().expect("a detail line");
        let name = detail
            .split("name = ")
            .nth(1)
            .and_then(|rest| rest.split(", type = ").next())
            .expect("name field");
        let class = detail
            .split("class type = ")
            .nth(1)
            .expect("class type field")
            .trim();
        ids.insert(index, (name.to_owned(), class.to_owned()));
    }
    ids
}

/// Class, structure and union names by type index, from `llvm-pdbutil dump --types`.
fn pdbutil_class_names(pdb: &str) -> BTreeMap<String, String> {
    let dump = tool("llvm-pdbutil", &["dump", "--types", pdb]);
    dump.lines()
        .filter(|line| {
            ["| LF_CLASS ", "| LF_STRUCTURE ", "| LF_UNION "]
                .iter()
                .any(|kind| line.contains(kind))
        })
        .filter_map(|line| {
            let index = line.split('|').next()?.trim().to_owned();
            let (first, last) = (line.find('`')?, line.rfind('`')?);
            Some((index, line.get(first + 1..last)?.to_owned()))
        })
        .collect()
}

#[test]
fn msvc_member_inlinees_are_qualified_with_their_class() {
    let mut checked = 0;
    for build in msvc_builds() {
        let pdb = build.pdb.clone().expect("PE builds have a PDB");
        let pdb = path_str(&pdb);
        let ids = pdbutil_member_function_ids(pdb);
        let classes = pdbutil_class_names(pdb);
        let symbols = tool("llvm-pdbutil", &["dump", "--symbols", pdb]);
        let used: BTreeSet<&str> = symbols
            .lines()
            .filter_map(|line| line.trim().strip_prefix("inlinee = "))
            .filter_map(|rest| rest.split_whitespace().next())
            .collect();
        let json = inspect_json(&build);
        let inlinees: BTreeSet<&str> = json["inline_sites"]
            .as_array()
            .expect("inline_sites")
            .iter()
            .filter_map(|site| site["inlinee"].as_str())
            .collect();
        for inlinee in &inlinees {
            assert!(
                !inlinee.contains("{ctor}") && !inlinee.contains("{dtor}"),
                "{}: unqualified inlinee {inlinee}",
                build.label()
            );
        }
        for index in used {
            let Some((member, class_index)) = ids.get(index) else {
                continue;
            };
            let class = classes
                .get(class_index)
                .unwrap_or_else(|| panic!("{}: class {class_index} of {index}", build.label()));
            // The class's own name: its last `::` component outside template arguments, with
            // its own template arguments cut off.
            let mut depth = 0i32;
            let mut last_component = 0;
            for (idx, ch) in class.char_indices() {
                match ch {
                    '<' => depth += 1,
                    '>' => depth -= 1,
                    ':' if depth == 0 && class[idx..].starts_with("::") => last_component = idx + 2,
                    _ => {}
                }
            }
            let short = class[last_component..]
                .split('<')
                .next()
                .expect("class name component");
            let expected = match member.as_str() {
                "{ctor}" => format!("{class}::{short}"),
                "{dtor}" => format!("{class}::~{short}"),
                _ => format!("{class}::{member}"),
            };
            assert!(
                inlinees.contains(expected.as_str()),
                "{}: inlinee {index} should be named {expected}",
                build.label()
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "the MSVC fixtures inline member functions");
}
