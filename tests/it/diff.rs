//! `hotpatch diff` on every fixture in both formats gives exactly the sets of its `expect.toml`;
//! diff(A, A) is empty; diff(A, B) mirrors diff(B, A).

use crate::support::{
    fixture_cases as cases, fixture_formats, fixture_pair as builds, hotpatch, root,
};
use std::collections::BTreeSet;

fn diff_json(base: &str, fixed: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["diff", base, fixed, "--json"];
    args.extend_from_slice(extra);
    let output = hotpatch(&args);
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("diff --json prints JSON");
    assert_eq!(json["schema"], "hotpatch-diff/1");
    json
}

/// The source-level name of a reported function: clone suffixes dropped, Itanium names of
/// free functions (`_Z10load_limitPKc`) reduced to their identifier.
fn source_name(name: &str) -> String {
    let base = name.split('.').next().unwrap_or(name);
    if let Some(rest) = base.strip_prefix("_Z") {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let identifier = digits
            .parse::<usize>()
            .ok()
            .and_then(|len| rest.get(digits.len()..digits.len() + len));
        if let Some(identifier) = identifier {
            return identifier.to_owned();
        }
    }
    base.to_owned()
}

fn names(json: &serde_json::Value, key: &str, field: &str) -> BTreeSet<String> {
    json[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| source_name(e[field].as_str().unwrap()))
        .collect()
}

/// The set a case states for `key`: `[fixme.<format>]` where it has the key (today's output,
/// known to be wrong: a FIXME the case explains), else `[expect.<format>]`, else `[expect]`.
fn expected(expect: &toml::Value, format: &str, key: &str) -> BTreeSet<String> {
    let value = expect
        .get("fixme")
        .and_then(|fixme| fixme.get(format))
        .and_then(|t| t.get(key))
        .or_else(|| expect["expect"].get(format).and_then(|t| t.get(key)))
        .or_else(|| expect["expect"].get(key));
    value
        .and_then(|v| v.as_array())
        .map(|list| {
            list.iter()
                .map(|item| match item {
                    toml::Value::String(name) => name.clone(),
                    table => format!(
                        "{}->{}",
                        table["from"].as_str().unwrap(),
                        table["to"].as_str().unwrap()
                    ),
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_fixture_gives_its_expected_sets() {
    let mut failures = Vec::new();
    for case in cases() {
        let expect: toml::Value =
            toml::from_str(&std::fs::read_to_string(case.join("expect.toml")).unwrap()).unwrap();
        for format in fixture_formats(&case) {
            let (base, fixed) = builds(&case, format);
            let json = diff_json(&base, &fixed, &[]);
            let renamed: BTreeSet<String> = json["renamed"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    format!(
                        "{}->{}",
                        r["from"].as_str().unwrap(),
                        r["to"].as_str().unwrap()
                    )
                })
                .collect();
            let actual = [
                ("changed", names(&json, "changed", "display_name")),
                ("added", names(&json, "added", "display_name")),
                ("removed", names(&json, "removed", "display_name")),
                ("renamed", renamed),
                ("line_only", names(&json, "line_only", "name")),
            ];
            for (key, actual) in actual {
                let want = expected(&expect, format, key);
                if actual != want {
                    failures.push(format!(
                        "{} {format} {key}: expected {want:?}, got {actual:?}",
                        case.file_name().unwrap().to_string_lossy()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn diff_of_a_build_with_itself_is_empty_and_diffs_mirror() {
    let mut failures = Vec::new();
    for case in cases() {
        for format in fixture_formats(&case) {
            let (base, fixed) = builds(&case, format);
            for side in [&base, &fixed] {
                let json = diff_json(side, side, &[]);
                for key in ["changed", "added", "removed", "renamed", "line_only"] {
                    assert_eq!(json[key].as_array().unwrap().len(), 0, "{} {key}", side);
                }
            }
            let forward = diff_json(&base, &fixed, &[]);
            let backward = diff_json(&fixed, &base, &[]);
            let label = format!("{} {format}", case.file_name().unwrap().to_string_lossy());
            // FIXME(issue 7, item 9): a case with a `[fixme.<format>]` table records a diff that
            // does not mirror yet (ICF unfolding, msvc_icf_off); assert that it still does not, so
            // the table is deleted when the diff is fixed.
            let expect: toml::Value =
                toml::from_str(&std::fs::read_to_string(case.join("expect.toml")).unwrap())
                    .unwrap();
            let known_asymmetric = expect
                .get("fixme")
                .and_then(|fixme| fixme.get(format))
                .and_then(|t| t.get("mirror_changed"))
                .is_some();
            let failures_before = failures.len();
            let mirrored = [
                ("added", "removed"),
                ("removed", "added"),
                ("changed", "changed"),
                ("renamed", "renamed"),
                ("line_only", "line_only"),
            ];
            for (forward_key, backward_key) in mirrored {
                let forward_pairs = pairs(&forward, forward_key);
                let backward_pairs: BTreeSet<_> = pairs(&backward, backward_key)
                    .into_iter()
                    .map(|(old, new)| (new, old))
                    .collect();
                if forward_pairs != backward_pairs {
                    failures.push(format!(
                        "{label}: forward {forward_key} {forward_pairs:?} but backward \
                         {backward_key} (sides swapped) {backward_pairs:?}"
                    ));
                }
            }
            if known_asymmetric {
                assert!(
                    failures.len() > failures_before,
                    "{label} mirrors now: delete mirror_changed from its [fixme.{format}] table"
                );
                failures.truncate(failures_before);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Each entry of `key` as (baseline name, fixed name), exactly as reported (no clone suffix
/// dropped), so that a mirror compares the same functions and not only their number: an added
/// or removed function exists on one side only and pairs its name with the empty string.
fn pairs(json: &serde_json::Value, key: &str) -> BTreeSet<(String, String)> {
    let text = |value: &serde_json::Value| value.as_str().unwrap_or_default().to_owned();
    json[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} is a list"))
        .iter()
        .map(|entry| match key {
            "added" => (String::new(), text(&entry["name"])),
            "removed" => (text(&entry["name"]), String::new()),
            "renamed" => (text(&entry["from"]), text(&entry["to"])),
            // A changed function names its fixed side only when it was matched under another name.
            _ => {
                let baseline = text(&entry["name"]);
                let fixed = entry
                    .get("fixed_name")
                    .map(text)
                    .unwrap_or_else(|| baseline.clone());
                (baseline, fixed)
            }
        })
        .collect()
}

#[test]
fn ignore_line_only_counts_line_shifts_as_unchanged() {
    let case = root().join("fixtures/line_only");
    for format in ["pe", "elf"] {
        let (base, fixed) = builds(&case, format);
        let json = diff_json(&base, &fixed, &["--ignore-line-only"]);
        assert_eq!(json["line_only"].as_array().unwrap().len(), 0);
        assert_eq!(json["changed"].as_array().unwrap().len(), 0);
    }
}

#[test]
fn disasm_shows_a_unified_diff_and_output_is_deterministic() {
    let case = root().join("fixtures/bounds_check");
    let (base, fixed) = builds(&case, "elf");
    let args = ["diff", base.as_str(), fixed.as_str(), "--disasm"];
    let first = hotpatch(&args);
    let second = hotpatch(&args);
    assert_eq!(first.stdout, second.stdout);
    let text = String::from_utf8(first.stdout).unwrap();
    assert!(text.contains("changed   lookup_user"), "{text}");
    assert!(
        text.contains("--- baseline lookup_user") && text.contains("+++ fixed lookup_user"),
        "{text}"
    );
}

/// A `[fixme.<format>]` value records today's known-wrong output; once it equals the truth in
/// `[expect]`, the FIXME is done and must go, so that the walkers test the truth again.
#[test]
fn fixme_tables_still_differ_from_the_truth() {
    for case in cases() {
        let expect: toml::Value =
            toml::from_str(&std::fs::read_to_string(case.join("expect.toml")).unwrap()).unwrap();
        let Some(fixme) = expect.get("fixme").and_then(|f| f.as_table()) else {
            continue;
        };
        for (format, keys) in fixme {
            for (key, wrong) in keys.as_table().expect("[fixme.<format>] is a table") {
                if key == "mirror_changed" {
                    // The reversed diff of a true diff changes as many functions.
                    let changed = expected(&expect_only(&expect), format, "changed");
                    assert_ne!(
                        wrong.as_integer(),
                        Some(changed.len() as i64),
                        "{}: fixme.{format}.mirror_changed is right now; delete it",
                        case.display()
                    );
                    continue;
                }
                let truth = expect["expect"]
                    .get(format.as_str())
                    .and_then(|t| t.get(key.as_str()))
                    .or_else(|| expect["expect"].get(key.as_str()))
                    .unwrap_or_else(|| {
                        panic!(
                            "{}: fixme.{format}.{key} without [expect] {key}",
                            case.display()
                        )
                    });
                assert_ne!(
                    wrong,
                    truth,
                    "{}: fixme.{format}.{key} equals the expected value; delete it",
                    case.display()
                );
            }
        }
    }
}

/// `expect` without its `[fixme]` table: the truth alone.
fn expect_only(expect: &toml::Value) -> toml::Value {
    let mut truth = expect.clone();
    if let Some(table) = truth.as_table_mut() {
        table.remove("fixme");
    }
    truth
}

/// Issue 7, F2: which functions never return comes from the debug information.
/// fixtures/never_returns/fixed.c declares `shutdown_process` `__attribute__((noreturn))`; gcc
/// writes `DW_AT_noreturn` on its DIE. clang 14 writes no `CV_PFLAG_NEVER` into the PDB for
/// it (`llvm-pdbutil dump --symbols`: `flags = none`), so on PE nothing is marked.
#[test]
fn noreturn_functions_are_marked_from_the_debug_information() {
    let case = root().join("fixtures/never_returns");
    for format in ["elf", "pe"] {
        let (_, fixed) = builds(&case, format);
        let bytes = std::fs::read(&fixed).unwrap();
        let pdb = std::path::Path::new(&fixed).with_extension("pdb");
        let debug = pdb.is_file().then(|| std::fs::read(&pdb).unwrap());
        let loaded = hotpatch_image::load(&bytes, debug.as_deref()).unwrap();
        let marked: BTreeSet<&str> = loaded
            .image
            .functions
            .iter()
            .filter(|f| f.noreturn)
            .map(|f| f.display_name.as_str())
            .collect();
        let expected: BTreeSet<&str> = match format {
            "elf" => ["shutdown_process"].into(),
            _ => BTreeSet::new(),
        };
        assert_eq!(marked, expected, "{format}");
    }
}

/// Issue 7, item 8: the aggregates each function works on come from its parameters and locals.
/// fixtures/layout_users/baseline.c: `transfer_new` and `main` hold a `struct transfer *` local,
/// `transfer_id`, `transfer_print` and `transfer_step` take one as a parameter and
/// `transfer_step` keeps a copy (`before`). The C runtime's functions have no such variable.
#[test]
fn functions_record_the_aggregates_their_parameters_and_locals_use() {
    let case = root().join("fixtures/layout_users");
    for format in ["elf", "pe"] {
        let (baseline, _) = builds(&case, format);
        let bytes = std::fs::read(&baseline).unwrap();
        let pdb = std::path::Path::new(&baseline).with_extension("pdb");
        let debug = pdb.is_file().then(|| std::fs::read(&pdb).unwrap());
        let loaded = hotpatch_image::load(&bytes, debug.as_deref()).unwrap();
        let image = &loaded.image;
        let users: BTreeSet<&str> = image
            .functions
            .iter()
            .filter(|f| {
                f.uses_types
                    .iter()
                    .any(|id| image.types[id.index()].name == "transfer")
            })
            .map(|f| f.display_name.as_str())
            .collect();
        let expected: BTreeSet<&str> = [
            "main",
            "transfer_id",
            "transfer_new",
            "transfer_print",
            "transfer_step",
        ]
        .into();
        assert_eq!(users, expected, "{format}");
    }
}

/// Issue 7, item 9: with `/OPT:ICF` one body answers to several names, and a reference to it
/// compares by those names. fixtures/msvc_icf_off: in the baseline (1.8.0, `/OPT:ICF`) the five
/// `__scrt_stub_for_acrt_*` procedures of the PDB share RVA 0x2a28 (`llvm-pdbutil dump
/// --symbols`), and `__scrt_dllmain_crt_thread_attach` calls that body; in the fixed build
/// (no ICF) it calls `__scrt_stub_for_acrt_thread_attach`'s own body: unchanged. The two
/// `_Construct` instantiations were one body in the baseline (RVA 0x11c0) and are two in the
/// fixed build (0x1230 `char *`, 0x1320 `char const *`): both are compared with the folded body,
/// each under its own name, and never with each other (no signature change, no HP0405).
#[test]
fn references_to_folded_bodies_compare_by_their_names() {
    let case = root().join("fixtures/msvc_icf_off");
    let (base, fixed) = builds(&case, "pe");
    let bytes = std::fs::read(root().join(&base)).unwrap();
    let pdb = std::fs::read(root().join(&base).with_extension("pdb")).unwrap();
    let loaded = hotpatch_image::load(&bytes, Some(&pdb)).unwrap();
    let stubs = loaded
        .image
        .functions
        .iter()
        .find(|f| f.rva == 0x2a28)
        .expect("a function at 0x2a28");
    let mut names: Vec<&str> = std::iter::once(stubs.name.as_str())
        .chain(stubs.aliases.iter().map(String::as_str))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "__scrt_stub_for_acrt_initialize",
            "__scrt_stub_for_acrt_thread_attach",
            "__scrt_stub_for_acrt_thread_detach",
            "__scrt_stub_for_acrt_uninitialize",
            "__scrt_stub_for_acrt_uninitialize_critical",
        ]
    );

    for (old, new) in [(&base, &fixed), (&fixed, &base)] {
        let json = diff_json(old, new, &[]);
        let changed = json["changed"].as_array().unwrap();
        assert!(
            !changed
                .iter()
                .any(|c| c["name"] == "__scrt_dllmain_crt_thread_attach"),
            "{old} -> {new}: {changed:#?}"
        );
        for (decorated, readable) in [
            (
                "??$_Construct@$00PEAD@?$basic_string@DU?$char_traits@D@std@@V?$allocator@D@2@@std@@AEAAXQEAD_K@Z",
                "std::basic_string<char,std::char_traits<char>,std::allocator<char> >::_Construct<1,char *>",
            ),
            (
                "??$_Construct@$00PEBD@?$basic_string@DU?$char_traits@D@std@@V?$allocator@D@2@@std@@AEAAXQEBD_K@Z",
                "std::basic_string<char,std::char_traits<char>,std::allocator<char> >::_Construct<1,char const *>",
            ),
        ] {
            let entry = changed
                .iter()
                .find(|c| c["name"] == decorated)
                .unwrap_or_else(|| panic!("{old} -> {new}: {decorated} changed"));
            assert_eq!(entry["display_name"], readable);
            assert!(entry.get("fixed_name").is_none(), "{entry:#?}");
            let causes = entry["causes"].as_array().unwrap();
            assert!(
                !causes.iter().any(|c| c["kind"] == "signature-changed"),
                "{entry:#?}"
            );
        }
    }
}

/// docs/accuracy.md F4: static data of one name in two compilation units, built as zlib's
/// `fixedtables::lenfix` is (inflate.c and infback.c), by clang compiling and linking in one
/// command, so each PDB module is a random temporary object (`/tmp/a-7f0e1d.o`) and no module
/// name matches between two builds. The leftovers of one name pair in address order: the table
/// the fix edits (b.c's last entry 8 -> 9) is changed, the other unchanged, none added or removed.
#[test]
fn same_name_statics_of_unnamed_objects_pair_in_address_order() {
    const A: &str = "#include <stdio.h>\nint lookup_b(int i);\n\
        static int lookup(int i)\n{\n    static const int table[6] = {3, 1, 4, 1, 5, 9};\n    return table[i % 6];\n}\n\
        int main(int argc, char **argv)\n{\n    (void)argv;\n    printf(\"%d %d\\n\", lookup(argc), lookup_b(argc));\n    return 0;\n}\n";
    const B: &str = "static int lookup(int i)\n{\n    static const int table[6] = {2, 7, 1, 8, 2, LAST};\n    return table[i % 6];\n}\n\
        int lookup_b(int i) { return lookup(i + 1); }\n";
    let dir = std::env::temp_dir().join(format!("hotpatch-f4-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    std::fs::write(dir.join("a.c"), A).unwrap();
    for (side, last) in [("baseline", "8"), ("fixed", "9")] {
        std::fs::write(dir.join(format!("b_{side}.c")), B.replace("LAST", last)).unwrap();
        let pdb = format!("-Wl,--pdb={}", path(&format!("{side}.pdb")));
        crate::support::tool(
            "clang",
            &[
                "--target=x86_64-w64-mingw32",
                "-O2",
                "-g",
                "-gcodeview",
                "-fuse-ld=lld",
                "-L/usr/lib/gcc/x86_64-w64-mingw32/12-win32",
                &pdb,
                &path("a.c"),
                &path(&format!("b_{side}.c")),
                "-o",
                &path(&format!("{side}.exe")),
            ],
        );
    }
    let (base, fixed) = (path("baseline.exe"), path("fixed.exe"));
    // The premise: the tables' modules are named differently in the two builds.
    let units = |exe: &str| -> BTreeSet<String> {
        let bytes = std::fs::read(exe).unwrap();
        let pdb = std::fs::read(std::path::Path::new(exe).with_extension("pdb")).unwrap();
        let loaded = hotpatch_image::load(&bytes, Some(&pdb)).unwrap();
        loaded
            .image
            .data_symbols
            .iter()
            .filter(|d| d.name == "lookup::table")
            .filter_map(|d| d.compile_unit.clone())
            .collect()
    };
    let (base_units, fixed_units) = (units(&base), units(&fixed));
    assert_eq!(base_units.len(), 2, "{base_units:?}");
    assert!(
        base_units.is_disjoint(&fixed_units),
        "{base_units:?} {fixed_units:?}"
    );

    for (old, new) in [(&base, &fixed), (&fixed, &base)] {
        let json = diff_json(old, new, &[]);
        let data = &json["data"];
        assert_eq!(data["added"].as_array().unwrap().len(), 0, "{data:#}");
        assert_eq!(data["removed"].as_array().unwrap().len(), 0, "{data:#}");
        let changed: Vec<&str> = data["changed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(changed.len(), 1, "{data:#}");
        // Named by the baseline's module of b.c.
        assert!(
            changed[0].starts_with("lookup::table (") && changed[0].contains("/b_"),
            "{changed:?}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Loads the baseline or fixed build of a fixture with its PDB, if it has one.
fn load_build(path: &str) -> hotpatch_image::Loaded<'static> {
    let bytes: &'static [u8] = Box::leak(std::fs::read(path).unwrap().into_boxed_slice());
    let pdb = std::path::Path::new(path).with_extension("pdb");
    let debug: Option<&'static [u8]> = pdb
        .is_file()
        .then(|| &*Box::leak(std::fs::read(&pdb).unwrap().into_boxed_slice()));
    hotpatch_image::load(bytes, debug).unwrap()
}

/// Issue 7, item 8: each field carries the size of its type and the aggregate it reaches, from
/// the source of fixtures/layout_reach and layout_users (int 4 bytes in both ABIs, long 8 on
/// x86-64 Linux and 4 on Windows, pointers 8): `struct limits { struct quota quota; int
/// max_bytes; }` with quota 4 bytes (baseline) and 8 (fixed, `burst` added); `struct connection
/// { int fd; unsigned served; struct limits *limits; }`; `struct transfer { int id; unsigned
/// flags; long done; char peer[16]; }`.
#[test]
fn fields_carry_their_type_size_and_the_aggregate_they_reach() {
    for format in ["elf", "pe"] {
        let (baseline, fixed) = builds(&root().join("fixtures/layout_reach"), format);
        for (path, quota_size) in [(baseline, 4), (fixed, 8)] {
            let loaded = load_build(&path);
            let image = &loaded.image;
            let layout = |name: &str| {
                image
                    .types
                    .iter()
                    .find(|t| t.name == name)
                    .unwrap_or_else(|| panic!("{format} {path}: no layout {name}"))
            };
            let field = |layout: &str, field: &str| {
                layout_field(layout, field, image)
                    .unwrap_or_else(|| panic!("{format} {path}: no field {field} in {layout}"))
            };
            let reached = |f: &hotpatch_image::Field| {
                f.reaches.map(|id| image.types[id.index()].name.as_str())
            };
            let quota = field("limits", "quota");
            assert_eq!(
                (quota.offset, quota.size),
                (0, Some(quota_size)),
                "{format} {path}"
            );
            assert_eq!(reached(quota), Some("quota"), "{format} {path}");
            let max_bytes = field("limits", "max_bytes");
            assert_eq!(
                (max_bytes.offset, max_bytes.size, max_bytes.reaches),
                (quota_size, Some(4), None),
                "{format} {path}"
            );
            let limits = field("connection", "limits");
            assert_eq!(
                (limits.offset, limits.size),
                (8, Some(8)),
                "{format} {path}"
            );
            assert_eq!(reached(limits), Some("limits"), "{format} {path}");
            assert_eq!(layout("limits").size, quota_size + 4, "{format} {path}");
        }
        let (baseline, _) = builds(&root().join("fixtures/layout_users"), format);
        let loaded = load_build(&baseline);
        let long = if format == "elf" { 8 } else { 4 };
        let sizes: Vec<(&str, Option<u64>)> = ["id", "flags", "done", "peer"]
            .into_iter()
            .map(|name| {
                let field = layout_field("transfer", name, &loaded.image).unwrap();
                (name, field.size)
            })
            .collect();
        assert_eq!(
            sizes,
            [
                ("id", Some(4)),
                ("flags", Some(4)),
                ("done", Some(long)),
                ("peer", Some(16))
            ],
            "{format}"
        );
    }
}

fn layout_field<'i>(
    layout: &str,
    field: &str,
    image: &'i hotpatch_image::Image<'_>,
) -> Option<&'i hotpatch_image::Field> {
    image
        .types
        .iter()
        .find(|t| t.name == layout)?
        .fields
        .iter()
        .find(|f| f.name == field)
}

/// Issue 7, item 8: in fixtures/layout_reach `struct quota` gains `burst` (4 -> 8 bytes), so
/// in `struct limits` the field `quota` grows at the same offset with the same type name and
/// `max_bytes` moves +4 -> +8. `connection_admit` has no parameter or local of either type:
/// it takes a `struct connection *` and reads `c->limits->max_bytes`; it is a changed user of
/// both through `connection`. `main` holds a `struct limits *` (a direct user of limits, of
/// quota through limits); `connection_served` reads only `c->served` and is unchanged.
#[test]
fn a_layout_reached_through_a_member_pointer_ties_its_users_and_says_which_field_grew() {
    for format in ["elf", "pe"] {
        let (baseline, fixed) = builds(&root().join("fixtures/layout_reach"), format);
        let json = diff_json(&baseline, &fixed, &[]);
        let types = json["types"].as_array().unwrap();
        let change = |name: &str| {
            types
                .iter()
                .find(|t| t["name"] == name)
                .unwrap_or_else(|| panic!("{format}: {name} not reported changed: {types:?}"))
        };
        let limits = change("limits");
        assert_eq!(
            (&limits["baseline_size"], &limits["fixed_size"]),
            (&8.into(), &12.into())
        );
        let kinds: Vec<(&str, Vec<&str>)> = limits["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                let kinds = f["changes"].as_array().unwrap();
                (
                    f["name"].as_str().unwrap(),
                    kinds.iter().map(|k| k.as_str().unwrap()).collect(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [("quota", vec!["grew"]), ("max_bytes", vec!["moved"])],
            "{format}"
        );
        let quota = &limits["fields"][0];
        assert_eq!(
            (&quota["baseline"]["size"], &quota["fixed"]["size"]),
            (&4.into(), &8.into())
        );
        for (type_name, main_through) in [("limits", None), ("quota", Some("limits"))] {
            let users: Vec<(&str, &str, Option<&str>)> = change(type_name)["users"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|u| {
                    ["connection_admit", "connection_served", "main"]
                        .contains(&u["display_name"].as_str().unwrap())
                })
                .map(|u| {
                    (
                        u["display_name"].as_str().unwrap(),
                        u["status"].as_str().unwrap(),
                        u["through"].as_str(),
                    )
                })
                .collect();
            assert_eq!(
                users,
                [
                    ("connection_admit", "changed", Some("connection")),
                    ("connection_served", "unchanged", Some("connection")),
                    ("main", "changed", main_through),
                ],
                "{format} {type_name}"
            );
        }
    }
}
