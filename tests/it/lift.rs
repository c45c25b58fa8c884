//! Lifting, checked against the bytes of the fixtures: every payload of an eligible fixture has
//! its relocations inside the payload and aimed at the baseline's own storage and code, its
//! patch sites expect exactly the baseline's bytes, jump tables are rewritten to land on the
//! copied code, new strings travel in the payload, and what cannot be lifted is refused.

use crate::support::{fixture_cases, fixture_formats, fixture_pair, root};
use hotpatch_lift::{Lifted, Unliftable};
use hotpatch_package::{Redirect, RelocationKind, RelocationTarget};

/// Loads a pair and lifts it (without the policy: lifting must hold on its own).
fn lift_pair(case: &str, format: &str) -> (Vec<u8>, Result<Lifted, Vec<Unliftable>>) {
    let (base, fixed) = fixture_pair(&root().join("fixtures").join(case), format);
    lift_files(&base, &fixed)
}

fn debug_for(path: &str) -> Option<Vec<u8>> {
    let pdb = std::path::Path::new(path).with_extension("pdb");
    pdb.is_file().then(|| std::fs::read(pdb).unwrap())
}

fn lift_files(base: &str, fixed: &str) -> (Vec<u8>, Result<Lifted, Vec<Unliftable>>) {
    let base_bytes = std::fs::read(base).unwrap();
    let fixed_bytes = std::fs::read(fixed).unwrap();
    let (base_debug, fixed_debug) = (debug_for(base), debug_for(fixed));
    let old = hotpatch_image::load(&base_bytes, base_debug.as_deref()).unwrap();
    let new = hotpatch_image::load(&fixed_bytes, fixed_debug.as_deref()).unwrap();
    let diff = hotpatch_diff::diff(&old.image, &new.image, hotpatch_diff::Config::default());
    let lifted = hotpatch_lift::lift(&old.image, &new.image, &diff);
    (base_bytes, lifted)
}

#[test]
fn every_eligible_fixture_lifts_into_a_payload_that_points_into_the_baseline() {
    let mut lifted_count = 0;
    for case in fixture_cases() {
        let expect: toml::Value =
            toml::from_str(&std::fs::read_to_string(case.join("expect.toml")).unwrap()).unwrap();
        for format in fixture_formats(&case) {
            let verdict = expect["expect"]
                .get(format)
                .and_then(|t| t.get("verdict"))
                .unwrap_or(&expect["expect"]["verdict"]);
            if verdict.as_str() != Some("hotpatch-eligible") {
                continue;
            }
            let name = case.file_name().unwrap().to_string_lossy().into_owned();
            let (base_bytes, lifted) = lift_pair(&name, format);
            let lifted = lifted.unwrap_or_else(|p| panic!("{name} {format}: {p:?}"));
            lifted_count += 1;
            let (base, _) = fixture_pair(&case, format);
            let base_debug = debug_for(&base);
            let image = hotpatch_image::load(&base_bytes, base_debug.as_deref()).unwrap();
            let len = lifted.payload.len() as u64;
            for relocation in &lifted.relocations {
                let width = match relocation.kind {
                    RelocationKind::Rel32 => 4,
                    RelocationKind::Abs64 => 8,
                };
                assert!(
                    relocation.offset + width <= len,
                    "{name} {format}: {relocation:?}"
                );
                match relocation.target {
                    RelocationTarget::Payload { offset } => assert!(offset <= len),
                    RelocationTarget::Baseline { rva } => assert!(
                        image.image.section_at(rva).is_some(),
                        "{name} {format}: {rva:#x} is in no baseline section"
                    ),
                }
            }
            for site in &lifted.sites {
                let (start, original) = match &site.redirect {
                    Redirect::Entry { original } => (site.baseline_rva, original),
                    Redirect::Padding { original } => (site.baseline_rva - 5, original),
                };
                let expected = image.image.bytes_at(start, original.len() as u64).unwrap();
                assert_eq!(
                    original.as_slice(),
                    expected,
                    "{name} {format} {}",
                    site.function
                );
                assert!(site.payload_offset + site.payload_size <= len);
                assert!(
                    image
                        .image
                        .functions
                        .iter()
                        .any(|f| f.rva == site.baseline_rva),
                    "{name} {format}: site {:#x} is no baseline function entry",
                    site.baseline_rva
                );
            }
        }
    }
    assert!(lifted_count >= 20, "only {lifted_count} eligible pairs");
}

#[test]
fn bounds_check_replaces_lookup_user_and_keeps_the_baseline_storage() {
    for format in ["elf", "pe"] {
        let (base_bytes, lifted) = lift_pair("bounds_check", format);
        let lifted = lifted.unwrap();
        let (base, _) = fixture_pair(&root().join("fixtures/bounds_check"), format);
        let debug = debug_for(&base);
        let image = hotpatch_image::load(&base_bytes, debug.as_deref()).unwrap();
        let lookup = image
            .image
            .functions
            .iter()
            .find(|f| f.display_name == "lookup_user")
            .unwrap();
        assert_eq!(lifted.sites.len(), 1);
        assert_eq!(lifted.sites[0].baseline_rva, lookup.rva);
        // Every data reference goes to baseline data, never into the payload: the users table
        // is the running process's.
        for relocation in &lifted.relocations {
            if let RelocationTarget::Baseline { rva } = relocation.target {
                let section = image.image.section_at(rva).unwrap();
                assert!(!section.name.is_empty());
            }
        }
        assert!(lifted.copied_data.is_empty(), "{:?}", lifted.copied_data);
    }
}

#[test]
fn a_changed_string_travels_in_the_payload() {
    let fixed_source =
        std::fs::read_to_string(root().join("fixtures/string_literal/fixed.c")).unwrap();
    for format in ["elf", "pe"] {
        let (_, lifted) = lift_pair("string_literal", format);
        let lifted = lifted.unwrap();
        let string = lifted
            .copied_data
            .iter()
            .find(|data| data.what.starts_with("str:"))
            .expect("the new string is copied");
        let bytes = &lifted.payload
            [string.payload_offset as usize..(string.payload_offset + string.len) as usize];
        let text = String::from_utf8_lossy(&bytes[..bytes.len() - 1]).into_owned();
        assert!(
            fixed_source.contains(&text.replace('\n', "\\n")),
            "{format}: {text:?} is not a literal of fixed.c"
        );
    }
}

#[test]
fn jump_tables_are_rewritten_to_land_on_the_copied_code() {
    // PE only: gcc's ELF eval_op returns its default case through eval_op.cold, which the
    // lift refuses (a_parent_and_its_cold_part_are_never_patched_apart); the ELF tables of
    // interpreter_switch and switch_tables_adjacent are lifted by the fixture walk above.
    for format in ["pe"] {
        let (_, lifted) = lift_pair("switch_table", format);
        let lifted = lifted.unwrap();
        let table = lifted
            .copied_data
            .iter()
            .find(|data| data.what.starts_with("jumptable"))
            .expect("the jump table is copied");
        let site = &lifted.sites[0];
        let code = site.payload_offset..site.payload_offset + site.payload_size;
        for slot in 0..table.len / 4 {
            let at = (table.payload_offset + slot * 4) as usize;
            let entry = i32::from_le_bytes(lifted.payload[at..at + 4].try_into().unwrap());
            let target = (table.payload_offset as i64 + i64::from(entry)) as u64;
            assert!(
                code.contains(&target),
                "{format}: entry {slot} -> {target:#x}"
            );
        }
    }
}

#[test]
fn new_writable_data_is_refused() {
    for format in ["elf", "pe"] {
        let (_, lifted) = lift_pair("new_global", format);
        let problems = lifted.unwrap_err();
        assert!(
            problems
                .iter()
                .any(|p| p.to_string().contains("error_count")),
            "{format}: {problems:?}"
        );
        // Each reason names its function by index into both images, not only by name.
        let (base, fixed) = fixture_pair(&root().join("fixtures/new_global"), format);
        let (base_bytes, fixed_bytes) = (
            std::fs::read(&base).unwrap(),
            std::fs::read(&fixed).unwrap(),
        );
        let (base_debug, fixed_debug) = (debug_for(&base), debug_for(&fixed));
        let old = hotpatch_image::load(&base_bytes, base_debug.as_deref()).unwrap();
        let new = hotpatch_image::load(&fixed_bytes, fixed_debug.as_deref()).unwrap();
        for problem in &problems {
            assert_eq!(
                new.image.functions[problem.fixed_index()].display_name,
                "handle_error",
                "{format}: {problem}"
            );
            let baseline_index = problem.baseline_index().expect("a replaced function");
            assert_eq!(
                old.image.functions[baseline_index].display_name,
                "handle_error"
            );
        }
    }
}

/// Issue 7, F1: gcc sends the tags without a case of `object_flags` (0, 3, 6, 9, 10 in
/// fixtures/cold_switch/fixed.c; its table spans tags 0-12) into `object_flags.cold`, a separate
/// symbol in `.text.unlikely`. The copied table must send those entries to the baseline's cold
/// part (unchanged, so not in the payload) and the others to the copied code.
#[test]
fn jump_table_entries_into_the_cold_part_reach_the_baseline_cold_part() {
    let (base_bytes, lifted) = lift_pair("cold_switch", "elf");
    let lifted = lifted.unwrap();
    let image = hotpatch_image::load(&base_bytes, None).unwrap();
    let cold = image
        .image
        .functions
        .iter()
        .find(|f| f.name == "object_flags.cold")
        .expect("gcc split object_flags");
    let site = lifted
        .sites
        .iter()
        .find(|s| s.function == "object_flags")
        .unwrap();
    let table = lifted
        .copied_data
        .iter()
        .find(|data| data.what.starts_with("jumptable"))
        .expect("the jump table is copied");
    assert_eq!(table.len, 13 * 4);
    let (payload_base, bias) = (0x7000_0000u64, 0x7100_0000u64);
    let mut payload = lifted.payload.clone();
    hotpatch_package::relocate::apply_relocations(
        &mut payload,
        payload_base,
        bias,
        &lifted.relocations,
    )
    .unwrap();
    let code =
        payload_base + site.payload_offset..payload_base + site.payload_offset + site.payload_size;
    let cold_code = bias + cold.rva..bias + cold.end();
    for tag in 0..13u64 {
        let at = (table.payload_offset + tag * 4) as usize;
        let entry = i32::from_le_bytes(payload[at..at + 4].try_into().unwrap());
        let target = (payload_base + table.payload_offset).wrapping_add(entry as i64 as u64);
        if [0, 3, 6, 9, 10].contains(&tag) {
            assert!(cold_code.contains(&target), "tag {tag} -> {target:#x}");
        } else {
            assert!(code.contains(&target), "tag {tag} -> {target:#x}");
        }
    }
}

/// gcc moves `scale`'s unlikely path into `scale.cold`, which ends `jmp scale+0xb`: back into
/// the parent's body. A fix of the parent alone (the return value) must not be lifted, since
/// the payload would call the baseline's `scale.cold` and run the old parent's tail after it.
/// A fix of only the cold path must not be lifted either: `scale` enters its cold part by a
/// branch that a redirect at the cold part's entry would not reach in general.
#[test]
fn a_parent_and_its_cold_part_are_never_patched_apart() {
    const SOURCE: &str = "#include <stdio.h>\n\
        __attribute__((noinline, cold)) void log_error(const char *message, int value)\n\
        { fprintf(stderr, message, value); }\n\
        __attribute__((noinline)) int scale(int x)\n{\n\
            if (__builtin_expect(x < 0, 0)) {\n        log_error(MESSAGE, x);\n        x = -x;\n    }\n\
            return x * 3 + OFFSET;\n}\n\
        int main(int argc, char **argv) { (void)argv; return scale(argc - 2) & 0x7f; }\n";
    let dir = std::env::temp_dir().join(format!("hotpatch-cold-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    std::fs::write(dir.join("scale.c"), SOURCE).unwrap();
    for (name, offset, message) in [
        ("baseline", "1", "negative input %d\\n"),
        ("parent", "2", "negative input %d\\n"),
        ("cold", "1", "negative value %d\\n"),
    ] {
        crate::support::tool(
            "gcc",
            &[
                "-O2",
                "-g",
                &format!("-DOFFSET={offset}"),
                &format!("-DMESSAGE=\"{message}\""),
                &path("scale.c"),
                "-o",
                &path(name),
            ],
        );
    }
    // The premise, from the bytes: the baseline's scale.cold branches back into scale.
    let bytes = std::fs::read(path("baseline")).unwrap();
    let loaded = hotpatch_image::load(&bytes, None).unwrap();
    let function = |name: &str| {
        loaded
            .image
            .functions
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("gcc made no {name}"))
    };
    let (scale, cold) = (function("scale"), function("scale.cold"));
    let last = &cold.code[cold.code.len().saturating_sub(16)..];
    assert!(
        last.contains(&0xe9) || last.contains(&0xeb),
        "scale.cold ends without a jump: {last:02x?}"
    );

    let (_, lifted) = lift_files(&path("baseline"), &path("parent"));
    let problems = lifted.expect_err("the parent lifted apart from its cold part");
    let returns = problems
        .iter()
        .find_map(|p| match p {
            Unliftable::ColdPartReturns {
                function,
                cold,
                target_rva,
                ..
            } => Some((function.clone(), cold.clone(), *target_rva)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no cold-part refusal: {problems:?}"));
    assert_eq!(
        (returns.0.as_str(), returns.1.as_str()),
        ("scale", "scale.cold")
    );
    assert!(returns.2 > scale.rva && returns.2 < scale.rva + scale.size);

    let (_, lifted) = lift_files(&path("baseline"), &path("cold"));
    let problems = lifted.expect_err("the cold part lifted without its parent");
    assert!(
        problems.iter().any(|p| matches!(p,
            Unliftable::ColdPartAlone { function, cold, .. }
                if function == "scale" && cold == "scale.cold")),
        "{problems:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
