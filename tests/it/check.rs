//! `hotpatch check`, `report` and `rules`: verdicts of every fixture against `expect.toml`,
//! exit codes, policy files (limits, disabled rules, waivers), report snapshots and the
//! generated rule catalogue.

use crate::support::{
    fixture_cases as cases, fixture_formats, fixture_pair as pair, hotpatch, root,
};
use std::collections::BTreeSet;
use std::path::PathBuf;

fn check_json(base: &str, fixed: &str, extra: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec!["check", base, fixed, "--json"];
    args.extend_from_slice(extra);
    let output = hotpatch(&args);
    let code = output.status.code().expect("exit code");
    assert!(
        code == 0 || code == 10,
        "{args:?}: exit {code}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (
        code,
        serde_json::from_slice(&output.stdout).expect("check --json prints JSON"),
    )
}

fn blocking_rules(json: &serde_json::Value) -> BTreeSet<String> {
    json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] != "info")
        .map(|f| f["rule"].as_str().unwrap().to_owned())
        .collect()
}

/// What a case states for `key`: `[fixme.<format>]` where it has the key (today's output, known
/// to be wrong: a FIXME the case explains), else `[expect.<format>]`, else `[expect]`.
fn expected<'a>(expect: &'a toml::Value, format: &str, key: &str) -> &'a toml::Value {
    expect
        .get("fixme")
        .and_then(|fixme| fixme.get(format))
        .and_then(|t| t.get(key))
        .or_else(|| expect["expect"].get(format).and_then(|t| t.get(key)))
        .unwrap_or(&expect["expect"][key])
}

/// The `info` list of a case (format override first), when it has one.
fn info_list(expect: &toml::Value, format: &str) -> Option<BTreeSet<String>> {
    let list = expect["expect"]
        .get(format)
        .and_then(|t| t.get("info"))
        .or_else(|| expect["expect"].get("info"))?;
    Some(
        list.as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_owned())
            .collect(),
    )
}

/// Every rule a case expects in one format: the blocking `rules`, the info rules that follow
/// from its changed, added and line-only sets, and its `info` list.
fn expected_info(expect: &toml::Value, format: &str) -> BTreeSet<String> {
    let mut rules: BTreeSet<String> = expected(expect, format, "rules")
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    let non_empty = |key: &str| {
        expected(expect, format, key)
            .as_array()
            .is_some_and(|a| !a.is_empty())
    };
    for (key, rule) in [
        ("changed", "HP0010"),
        ("added", "HP0011"),
        ("line_only", "HP0012"),
    ] {
        if non_empty(key) {
            rules.insert(rule.to_owned());
        }
    }
    rules.extend(info_list(expect, format).unwrap_or_default());
    rules
}

/// Each rule's `fixtures:` claim holds in the fixtures' `expect.toml`: a case it names fires the
/// rule in at least one of the named formats, a case it says "must not fire it" fires it in none.
/// Clauses are separated by `;` outside parentheses; `(ELF...)`/`(PE...)` right after a case name
/// limits the formats; claims about crafted inputs in tests (no fixture named) are checked there.
#[test]
fn every_rule_fixture_claim_holds_in_expect_toml() {
    let output = hotpatch(&["rules", "--json"]);
    let catalogue: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let case_names: BTreeSet<String> = cases()
        .iter()
        .map(|c| c.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let mut failures = Vec::new();
    let mut claims = 0;
    for rule in catalogue.as_array().unwrap() {
        let id = rule["id"].as_str().unwrap();
        let text = rule["fixtures"].as_str().unwrap();
        let mut clauses = vec![String::new()];
        let mut depth = 0;
        for c in text.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ';' if depth == 0 => {
                    clauses.push(String::new());
                    continue;
                }
                _ => {}
            }
            clauses.last_mut().unwrap().push(c);
        }
        for clause in clauses {
            // The mirror diff and crafted inputs are checked by the tests the claim names.
            if clause.contains("reversed") || clause.contains("tests/it/") {
                continue;
            }
            let negative = clause.contains("must not fire");
            // Case names outside parentheses, each with the formats its parentheses name.
            let mut named: Vec<(String, Vec<&str>)> = Vec::new();
            let mut depth = 0;
            let mut word = String::new();
            let mut inside = String::new();
            for c in clause.chars().chain([' ']) {
                if depth > 0 {
                    if c == ')' {
                        depth -= 1;
                        if depth == 0 {
                            let formats: Vec<&str> = ["ELF", "PE"]
                                .into_iter()
                                .filter(|f| {
                                    inside.starts_with(f) || inside.contains(&format!("; {f}"))
                                })
                                .collect();
                            if let Some(last) = named.last_mut()
                                && !formats.is_empty()
                            {
                                last.1 = formats
                                    .iter()
                                    .map(|f| if *f == "ELF" { "elf" } else { "pe" })
                                    .collect();
                            }
                            inside.clear();
                            continue;
                        }
                    } else if c == '(' {
                        depth += 1;
                    }
                    inside.push(c);
                    continue;
                }
                if c.is_alphanumeric() || c == '_' {
                    word.push(c);
                    continue;
                }
                if case_names.contains(&word) {
                    named.push((word.clone(), vec!["pe", "elf"]));
                }
                word.clear();
                if c == '(' {
                    depth = 1;
                }
            }
            for (case, formats) in named {
                let dir = root().join("fixtures").join(&case);
                let expect: toml::Value =
                    toml::from_str(&std::fs::read_to_string(dir.join("expect.toml")).unwrap())
                        .unwrap();
                let available: Vec<&str> = fixture_formats(&dir);
                let fires: Vec<bool> = formats
                    .iter()
                    .filter(|f| available.contains(f))
                    .map(|f| expected_info(&expect, f).contains(id))
                    .collect();
                claims += 1;
                let holds = if negative {
                    fires.iter().all(|f| !f)
                } else {
                    fires.iter().any(|f| *f)
                };
                if !holds {
                    failures.push(format!(
                        "{id}: claim `{}` about {case} {formats:?} does not hold in its expect.toml",
                        clause.trim()
                    ));
                }
            }
        }
    }
    assert!(claims >= 40, "only {claims} claims checked");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_fixture_gets_its_expected_verdict_and_rules() {
    let mut failures = Vec::new();
    for case in cases() {
        let expect: toml::Value =
            toml::from_str(&std::fs::read_to_string(case.join("expect.toml")).unwrap()).unwrap();
        for format in fixture_formats(&case) {
            let (base, fixed) = pair(&case, format);
            let (code, json) = check_json(&base, &fixed, &[]);
            assert_eq!(json["schema"], "hotpatch-check/1");
            let label = format!("{} {format}", case.file_name().unwrap().to_string_lossy());
            let verdict = expected(&expect, format, "verdict").as_str().unwrap();
            if json["verdict"] != verdict {
                failures.push(format!(
                    "{label}: verdict {} but expected {verdict}",
                    json["verdict"]
                ));
            }
            let want_code = if verdict == "hotpatch-eligible" {
                0
            } else {
                10
            };
            if code != want_code {
                failures.push(format!("{label}: exit code {code}, expected {want_code}"));
            }
            let rules: BTreeSet<String> = expected(&expect, format, "rules")
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap().to_owned())
                .collect();
            let actual = blocking_rules(&json);
            if actual != rules {
                failures.push(format!("{label}: rules {actual:?}, expected {rules:?}"));
            }
            // Info rules: HP0010/HP0011/HP0012 follow from the expected sets; any other info
            // rule a case expects is listed under `info` (compared where a case lists it).
            let fired_info: BTreeSet<String> = json["findings"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|f| f["severity"] == "info")
                .map(|f| f["rule"].as_str().unwrap().to_owned())
                .collect();
            let derived = expected_info(&expect, format);
            for rule in ["HP0010", "HP0011", "HP0012"] {
                if fired_info.contains(rule) != derived.contains(rule) {
                    failures.push(format!(
                        "{label}: info rule {rule} fired: {}, expected: {}",
                        fired_info.contains(rule),
                        derived.contains(rule)
                    ));
                }
            }
            if let Some(listed) = info_list(&expect, format) {
                let other: BTreeSet<String> = fired_info
                    .iter()
                    .filter(|r| !["HP0010", "HP0011", "HP0012"].contains(&r.as_str()))
                    .cloned()
                    .collect();
                if other != listed {
                    failures.push(format!(
                        "{label}: info rules {other:?}, expected {listed:?}"
                    ));
                }
            }
            for finding in json["findings"].as_array().unwrap() {
                for key in ["rule", "severity", "reason", "remedy"] {
                    assert!(
                        finding[key].is_string(),
                        "{label}: finding without {key}: {finding}"
                    );
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn scratch_policy(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hotpatch-it-{}-policy", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn limits_in_the_policy_make_a_patch_reboot_required() {
    let policy = scratch_policy("limits.toml", "[limits]\nmax_functions = 0\n");
    let (base, fixed) = pair(&root().join("fixtures/bounds_check"), "elf");
    let (code, json) = check_json(&base, &fixed, &["--policy", policy.to_str().unwrap()]);
    assert_eq!(code, 10);
    assert_eq!(blocking_rules(&json), BTreeSet::from(["HP1401".to_owned()]));
}

#[test]
fn a_waiver_accepts_a_finding_only_when_the_policy_makes_the_rule_waivable() {
    let (base, fixed) = pair(&root().join("fixtures/global_initializer"), "elf");
    let waiver = "[[waiver]]\nrule = \"HP0102\"\nbinary = \"fixed\"\nreason = \"the new retry count only matters after a restart; reviewed\"\napproved_by = \"A. Reviewer\"\n";
    // Not waivable: the waiver is ignored.
    let policy = scratch_policy("not-waivable.toml", waiver);
    let (code, json) = check_json(&base, &fixed, &["--policy", policy.to_str().unwrap()]);
    assert_eq!(code, 10);
    assert!(
        json["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["waived"].is_null())
    );
    // Waivable: the finding is accepted and the waiver is shown.
    let policy = scratch_policy(
        "waivable.toml",
        &format!("[rules]\nwaivable = [\"HP0102\"]\n\n{waiver}"),
    );
    let (code, json) = check_json(&base, &fixed, &["--policy", policy.to_str().unwrap()]);
    assert_eq!(code, 0, "{json}");
    let finding = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "HP0102")
        .expect("HP0102 listed");
    assert_eq!(finding["waived"]["approved_by"], "A. Reviewer");
    // A waiver for another binary does not apply.
    let policy = scratch_policy(
        "other-binary.toml",
        &format!(
            "[rules]\nwaivable = [\"HP0102\"]\n\n{}",
            waiver.replace("binary = \"fixed\"", "binary = \"other.exe\"")
        ),
    );
    let (code, _) = check_json(&base, &fixed, &["--policy", policy.to_str().unwrap()]);
    assert_eq!(code, 10);
}

#[test]
fn a_waiver_cannot_make_room_for_a_redirect() {
    // too_short_unpadded: strict_mode_enabled is 3 bytes with no filler before it. A reviewer may
    // waive HP0501, but the lifter still has nowhere to write the jump, so HP1501 keeps the
    // verdict reboot-required.
    let (base, fixed) = pair(&root().join("fixtures/too_short_unpadded"), "elf");
    let policy = scratch_policy(
        "waive-too-short.toml",
        "[rules]\nwaivable = [\"HP0501\"]\n\n[[waiver]]\nrule = \"HP0501\"\nbinary = \"fixed\"\nfunction = \"strict_mode_enabled\"\nreason = \"reviewed\"\napproved_by = \"A. Reviewer\"\n",
    );
    let (code, json) = check_json(&base, &fixed, &["--policy", policy.to_str().unwrap()]);
    assert_eq!(code, 10);
    assert_eq!(
        blocking_rules(&json),
        BTreeSet::from(["HP0501".to_owned(), "HP1501".to_owned()])
    );
}

#[test]
fn disabled_rules_do_not_fire_and_are_listed() {
    let policy = scratch_policy("disabled.toml", "[rules]\ndisabled = [\"HP0201\"]\n");
    let (base, fixed) = pair(&root().join("fixtures/tls"), "elf");
    let (code, json) = check_json(&base, &fixed, &["--policy", policy.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert_eq!(json["disabled_rules"], serde_json::json!(["HP0201"]));
}

#[test]
fn bad_policy_files_are_refused_with_exit_code_2() {
    let (base, fixed) = pair(&root().join("fixtures/bounds_check"), "elf");
    for (name, text, message) in [
        (
            "unknown-rule.toml",
            "[rules]\ndisabled = [\"HP9999\"]\n",
            "HP9999",
        ),
        ("syntax.toml", "[limits\n", "not valid TOML"),
        (
            "no-reason.toml",
            "[[waiver]]\nrule = \"HP0502\"\nbinary = \"x\"\nreason = \" \"\napproved_by = \"me\"\n",
            "reason",
        ),
        (
            "unknown-key.toml",
            "[limits]\nmax_functoins = 3\n",
            "max_functoins",
        ),
    ] {
        let policy = scratch_policy(name, text);
        let output = hotpatch(&["check", &base, &fixed, "--policy", policy.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains(message), "{name}: {stderr}");
    }
}

#[test]
fn removing_an_export_is_reboot_required() {
    // The mirror of new_export: the "fixed" build drops plugin_abi_version from the export table.
    let (base, fixed) = pair(&root().join("fixtures/new_export"), "pe");
    let (code, json) = check_json(&fixed, &base, &[]);
    assert_eq!(code, 10);
    assert!(blocking_rules(&json).contains("HP0402"), "{json}");
}

fn report(base: &str, fixed: &str, format: &str) -> String {
    let output = hotpatch(&["report", base, fixed, "--format", format]);
    assert!(
        matches!(output.status.code(), Some(0 | 10)),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn markdown_and_json_reports_match_their_snapshots() {
    let (base, fixed) = pair(&root().join("fixtures/struct_layout"), "elf");
    insta::assert_snapshot!(
        "struct_layout_elf_markdown",
        report(&base, &fixed, "markdown")
    );
    insta::assert_snapshot!("struct_layout_elf_json", report(&base, &fixed, "json"));
    let (base, fixed) = pair(&root().join("fixtures/bounds_check"), "pe");
    insta::assert_snapshot!(
        "bounds_check_pe_markdown",
        report(&base, &fixed, "markdown")
    );
}

#[test]
fn html_report_is_one_self_contained_deterministic_page() {
    let (base, fixed) = pair(&root().join("fixtures/struct_layout"), "pe");
    let page = report(&base, &fixed, "html");
    assert_eq!(page, report(&base, &fixed, "html"));
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(
        page.contains("reboot-required")
            && page.contains("HP0101")
            && page.contains("session_open")
    );
    for external in ["<script", "src=", "href=", "http://", "https://", "@import"] {
        assert!(
            !page.contains(external),
            "the page must not load {external}"
        );
    }
}

#[test]
fn rule_catalogue_doc_is_current() {
    let output = hotpatch(&["rules"]);
    assert!(output.status.success());
    let generated = String::from_utf8(output.stdout).unwrap();
    let path = root().join("docs/eligibility.md");
    if std::env::var_os("HOTPATCH_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/eligibility.md is stale: run `HOTPATCH_BLESS=1 cargo test rule_catalogue`"
    );
    let json = hotpatch(&["rules", "--json"]);
    let rules: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let ids: Vec<&str> = rules
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "rule IDs are unique");
}

#[test]
fn debug_information_read_only_in_part_needs_review() {
    // The stripped bounds_check baseline, once with its real DWARF and once with a damaged debug
    // file of the same build-id (a fuzz regression): the damage must not pass silently.
    let dir = std::env::temp_dir().join(format!("hotpatch-it-{}-partial", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let debug = dir.join("baseline.debug");
    let source = root().join("fixtures/bounds_check/elf/baseline");
    crate::support::tool(
        "objcopy",
        &[
            "--only-keep-debug",
            source.to_str().unwrap(),
            debug.to_str().unwrap(),
        ],
    );
    let stripped = "fuzz/fixtures/bounds_check-baseline.stripped";
    let (code, json) = check_json(
        stripped,
        stripped,
        &[
            "--base-debug",
            debug.to_str().unwrap(),
            "--fixed-debug",
            "fuzz/regressions/dwarf-3e24f9bc.bin",
        ],
    );
    assert_eq!(code, 10, "{json}");
    assert!(blocking_rules(&json).contains("HP0003"), "{json}");
}

/// A copy of the fixed bounds_check ELF with `patch` written over the code of `lookup_user`,
/// for the fail-safe rules no compiler output triggers.
fn with_patched_lookup_user(name: &str, patch: impl Fn(u64, u64) -> Vec<u8>) -> String {
    let fixed = root().join("fixtures/bounds_check/elf/fixed");
    let output = hotpatch(&["inspect", fixed.to_str().unwrap(), "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let function = json["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "lookup_user")
        .unwrap();
    let (rva, size) = (
        function["rva"].as_u64().unwrap(),
        function["size"].as_u64().unwrap(),
    );
    let text = json["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == ".text")
        .unwrap();
    let offset = rva - text["rva"].as_u64().unwrap() + text["file_offset"].as_u64().unwrap();
    let mut bytes = std::fs::read(&fixed).unwrap();
    let code = patch(rva, size);
    bytes[offset as usize..offset as usize + code.len()].copy_from_slice(&code);
    let dir = std::env::temp_dir().join(format!("hotpatch-it-{}-crafted", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

#[test]
fn fail_safe_rules_fire_on_code_the_engine_cannot_model() {
    let (base, _) = pair(&root().join("fixtures/bounds_check"), "elf");
    // 0x06 (`push es`) does not exist in 64-bit mode.
    let undecodable = with_patched_lookup_user("undecodable", |_, _| vec![0x06, 0x06]);
    let (code, json) = check_json(&base, &undecodable, &[]);
    assert_eq!(code, 10);
    assert!(blocking_rules(&json).contains("HP0001"), "{json}");
    // A call into the filler after the function: code that belongs to no function.
    let into_padding = with_patched_lookup_user("into-padding", |rva, size| {
        let target = rva + size + 2;
        let displacement = (target as i64 - (rva as i64 + 5)) as i32;
        let mut call = vec![0xe8];
        call.extend_from_slice(&displacement.to_le_bytes());
        call
    });
    let (code, json) = check_json(&base, &into_padding, &[]);
    assert_eq!(code, 10);
    assert!(blocking_rules(&json).contains("HP0002"), "{json}");
}

#[test]
fn text_output_names_msvc_functions_readably_and_json_keeps_decorated_names() {
    let (base, fixed) = pair(&root().join("fixtures/msvc_toolchain"), "pe");
    let output = hotpatch(&["check", &base, &fixed]);
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("std::_UIntegral_to_string<char,unsigned long> (changed)"),
        "{text}"
    );
    assert!(
        !text.contains("??"),
        "decorated name in text output:\n{text}"
    );
    let markdown = report(&base, &fixed, "markdown");
    assert!(
        markdown.contains("| `std::_UIntegral_to_string<char,unsigned long>` | changed |"),
        "{markdown}"
    );
    let (_, json) = check_json(&base, &fixed, &[]);
    let names: Vec<&str> = json["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["function"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"??$_UIntegral_to_string@DK@std@@YA?AV?$basic_string@DU?$char_traits@D@std@@V?$allocator@D@2@@0@K@Z"),
        "{names:?}"
    );
}

#[test]
fn a_policy_names_always_active_functions_and_cannot_disable_fail_safe_rules() {
    // live_service's accept_length is eligible on its own (fixtures/live_service/expect.toml);
    // named as always active, it is an HP0303 change.
    let (base, fixed) = pair(&root().join("fixtures/live_service"), "elf");
    let policy = scratch_policy(
        "always-active.toml",
        "always_active = [\"accept_length\"]\n",
    );
    let (code, json) = check_json(&base, &fixed, &["--policy", policy.to_str().unwrap()]);
    assert_eq!(code, 10);
    assert_eq!(blocking_rules(&json), BTreeSet::from(["HP0303".to_owned()]));
    // Turning off a fail-safe rule is refused unless the policy also makes it waivable.
    let policy = scratch_policy("fail-safe.toml", "[rules]\ndisabled = [\"HP0002\"]\n");
    let output = hotpatch(&["check", &base, &fixed, "--policy", policy.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("HP0002"));
    let policy = scratch_policy(
        "fail-safe-waivable.toml",
        "[rules]\ndisabled = [\"HP0002\"]\nwaivable = [\"HP0002\"]\n",
    );
    let (code, _) = check_json(&base, &fixed, &["--policy", policy.to_str().unwrap()]);
    assert_eq!(code, 0);
}

/// Issue 7, item 9: text output and reports name functions by their readable (undecorated)
/// name; JSON keeps the decorated one. In fixtures/msvc_icf_off the changed funclet
/// `` `std::operator<<<std::char_traits<char> >'::`1'::catch$3 `` belongs to the procedure
/// `??$?6U?$char_traits@D@std@@@std@@YAAEAV?$basic_ostream@DU?$char_traits@D@std@@@0@AEAV10@PEBD@Z`
/// (its S_GPROC32 record precedes the funclet's in the module stream), which the PDB names
/// `std::operator<<<std::char_traits<char> >`; both `_Construct` bodies have readable names too.
#[test]
fn text_and_reports_name_msvc_functions_by_their_readable_names() {
    let case = root().join("fixtures/msvc_icf_off");
    let (base, fixed) = pair(&case, "pe");
    let decorated_parent = "??$?6U?$char_traits@D@std@@@std@@YAAEAV?$basic_ostream@DU?$char_traits@D@std@@@0@AEAV10@PEBD@Z";
    let text = hotpatch(&["check", &base, &fixed]);
    let markdown = report(&base, &fixed, "markdown");
    for (label, output) in [
        ("check", String::from_utf8(text.stdout).unwrap()),
        ("report", markdown),
    ] {
        assert!(
            output.contains("is an exception funclet of std::operator<<<std::char_traits<char> >"),
            "{label}: {output}"
        );
        // The decorated name appears only as the evidence that says it is the symbol.
        for line in output.lines().filter(|l| l.contains(decorated_parent)) {
            assert!(line.starts_with("- parent_symbol: "), "{label}: {line}");
        }
        for line in output.lines().filter(|l| l.contains("??$_Construct@")) {
            assert!(line.starts_with("- alias_symbols: "), "{label}: {line}");
        }
        assert!(
            output.contains(
                "std::basic_string<char,std::char_traits<char>,std::allocator<char> >::_Construct<1,char const *>"
            ),
            "{label}: {output}"
        );
    }
    let (_, json) = check_json(&base, &fixed, &[]);
    let json = json.to_string();
    assert!(json.contains(decorated_parent), "{json}");
    assert!(json.contains("??$_Construct@$00PEBD@"), "{json}");
}
