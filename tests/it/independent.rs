//! The function names and addresses `hotpatch inspect --json` reports equal those of independent
//! tools: `llvm-pdbutil dump --symbols` for PDBs, `readelf -s` for ELF.

use crate::support::{Build, builds, inspect_json, path_str, tool};
use std::collections::BTreeSet;

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
    let sections = pdb_section_addresses(pdb);
    let dump = tool("llvm-pdbutil", &["dump", "--symbols", pdb]);
    let mut procedures = BTreeSet::new();
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
        procedures.insert((name, base + offset));
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
