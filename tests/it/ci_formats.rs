//! `check --format sarif|junit` and the worked pipelines of docs/ci.md (issue 13): the SARIF
//! log validates against the OASIS SARIF 2.1.0 schema and points each finding at the source line
//! of the fix, the JUnit XML reads back through a reference parser, both are byte-identical
//! across runs, and the YAML of docs/ci.md parses and its hotpatch steps run on fixture pairs.
//!
//! The reference implementations are Python's `jsonschema`, `junitparser` and `yaml`, installed
//! by `ci/install-packages --tests`; under CI a missing one fails the test.

use crate::support::{hotpatch, root};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The fixture pair `case` in `format` (`elf` or `pe`), as paths relative to the repository.
fn pair(case: &str, format: &str) -> (String, String) {
    match format {
        "pe" => (
            format!("fixtures/{case}/pe/baseline.exe"),
            format!("fixtures/{case}/pe/fixed.exe"),
        ),
        _ => (
            format!("fixtures/{case}/elf/baseline"),
            format!("fixtures/{case}/elf/fixed"),
        ),
    }
}

/// Runs `hotpatch check` on a fixture pair with a format; the exit code and standard output.
fn check(case: &str, format: &str, output: &str) -> (i32, String) {
    let (base, fixed) = pair(case, format);
    let source_root = format!("=fixtures/{case}");
    let result = hotpatch(&[
        "check",
        &base,
        &fixed,
        "--format",
        output,
        "--source-root",
        &source_root,
    ]);
    assert!(
        result.status.code() == Some(0) || result.status.code() == Some(10),
        "{case}/{format}: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    (
        result.status.code().unwrap_or(-1),
        String::from_utf8(result.stdout).expect("UTF-8 output"),
    )
}

/// Runs a Python script that imports `modules`, feeding it `stdin`; `None` when Python or a
/// module is missing outside CI (under CI that fails the test).
pub(crate) fn python(modules: &[&str], script: &str, args: &[&str], stdin: &str) -> Option<String> {
    let probe = Command::new("python3")
        .arg("-c")
        .arg(format!("import {}", modules.join(", ")))
        .output();
    let available = probe.as_ref().is_ok_and(|o| o.status.success());
    if !available {
        let why = match &probe {
            Ok(output) => String::from_utf8_lossy(&output.stderr).into_owned(),
            Err(error) => error.to_string(),
        };
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 with {modules:?} is required under CI (ci/install-packages --tests): {why}"
        );
        eprintln!(
            "skipped: python3 with {modules:?} is missing ({why}); run ci/install-packages --tests"
        );
        return None;
    }
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    {
        use std::io::Write;
        let mut input = child.stdin.take().expect("stdin is piped");
        input
            .write_all(stdin.as_bytes())
            .expect("python3 reads stdin");
    }
    let output = child.wait_with_output().expect("python3 runs");
    assert!(
        output.status.success(),
        "python3 failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    Some(String::from_utf8(output.stdout).expect("UTF-8"))
}

const VALIDATE_SARIF: &str = r#"
import json, sys, jsonschema
schema = json.load(open("tests/schemas/sarif-schema-2.1.0.json"))
jsonschema.Draft7Validator.check_schema(schema)
log = json.load(sys.stdin)
errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(log), key=lambda e: list(e.path))
for error in errors:
    print("/".join(map(str, error.path)), error.message, file=sys.stderr)
sys.exit(1 if errors else 0)
"#;

/// Validates a SARIF log against the SARIF 2.1.0 schema (false when the validator is missing
/// outside CI).
fn validate_sarif(log: &str) -> bool {
    python(&["jsonschema"], VALIDATE_SARIF, &[], log).is_some()
}

/// The lines of `function` in a fixture source file: from its definition to the closing brace,
/// and the line that holds `fix`.
fn source_lines(path: &Path, function: &str, fix: &str) -> (u32, u32, u32) {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.contains(&format!("{function}(")) && !l.trim_end().ends_with(';'))
        .expect("the function is defined");
    let end = start
        + lines[start..]
            .iter()
            .position(|l| l.starts_with('}'))
            .expect("the function ends");
    let fix_line = start
        + lines[start..=end]
            .iter()
            .position(|l| l.contains(fix))
            .expect("the fix is in the function");
    let one_based = |idx: usize| u32::try_from(idx + 1).unwrap();
    (one_based(start), one_based(end), one_based(fix_line))
}

#[test]
fn sarif_of_bounds_check_validates_and_points_at_the_fix() {
    let (first, last, fix) = source_lines(
        &root().join("fixtures/bounds_check/fixed.c"),
        "lookup_user",
        "index >= MAX_USERS",
    );
    for format in ["elf", "pe"] {
        let (code, text) = check("bounds_check", format, "sarif");
        assert_eq!(code, 0, "{format}");
        validate_sarif(&text);
        let log: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(log["version"], "2.1.0");
        let runs = log["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 1);
        let rules = runs[0]["tool"]["driver"]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), hotpatch_policy::CATALOGUE.len());
        let results = runs[0]["results"].as_array().unwrap();
        let on_lookup: Vec<&serde_json::Value> = results
            .iter()
            .filter(|r| r["locations"][0]["logicalLocations"][0]["name"] == "lookup_user")
            .collect();
        assert!(!on_lookup.is_empty(), "{format}: {text}");
        for result in on_lookup {
            let rule = result["ruleId"].as_str().unwrap();
            let index = usize::try_from(result["ruleIndex"].as_u64().unwrap()).unwrap();
            assert_eq!(rules[index]["id"], rule);
            let location = &result["locations"][0]["physicalLocation"];
            assert_eq!(
                location["artifactLocation"]["uri"], "fixtures/bounds_check/fixed.c",
                "{format}"
            );
            assert_eq!(location["region"]["startLine"], fix, "{format}: {result}");
            let range = &result["relatedLocations"][1]["physicalLocation"]["region"];
            let range_start = range["startLine"].as_u64().unwrap();
            let range_end = range["endLine"].as_u64().unwrap();
            assert!(
                u64::from(first) <= range_start
                    && range_start <= u64::from(fix)
                    && range_end == u64::from(last),
                "{format}: lookup_user is lines {first}-{last}, SARIF says {range}"
            );
            let binary = &result["relatedLocations"][0]["physicalLocation"];
            assert_eq!(
                binary["artifactLocation"]["uri"],
                pair("bounds_check", format).1
            );
        }
    }
}

#[test]
fn sarif_levels_follow_severity_and_fingerprints_ignore_addresses() {
    // tls: HP0201 on enter_scope is reboot-required, an error.
    let (code, text) = check("tls", "elf", "sarif");
    assert_eq!(code, 10);
    validate_sarif(&text);
    let log: serde_json::Value = serde_json::from_str(&text).unwrap();
    let results = log["runs"][0]["results"].as_array().unwrap();
    let tls = results
        .iter()
        .find(|r| r["ruleId"] == "HP0201")
        .expect("HP0201 fires on tls");
    assert_eq!(tls["level"], "error");
    assert_eq!(
        tls["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "fixtures/tls/fixed.c"
    );
    for result in results {
        let expected = match result["properties"]["severity"].as_str().unwrap() {
            "reboot-required" => "error",
            "review" => "warning",
            _ => "note",
        };
        assert_eq!(result["level"], expected);
    }
    // The fingerprint of lookup_user's finding is the same for the PE and ELF pairs' runs
    // when the binary path is the same: it hashes the rule, the path and the function only.
    let fingerprint = |text: &str| {
        let log: serde_json::Value = serde_json::from_str(text).unwrap();
        log["runs"][0]["results"][0]["partialFingerprints"]["hotpatchFinding/v1"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (_, elf) = check("bounds_check", "elf", "sarif");
    let (_, pe) = check("bounds_check", "pe", "sarif");
    assert_ne!(
        fingerprint(&elf),
        fingerprint(&pe),
        "different binaries differ"
    );
    // Copy the ELF pair elsewhere under the same relative name: a rebuild at other addresses
    // would keep the name, and the fingerprint does not see addresses.
    let scratch = scratch_dir("fingerprint");
    let build = scratch.join("fixtures/bounds_check/elf");
    std::fs::create_dir_all(&build).unwrap();
    for side in ["baseline", "fixed"] {
        std::fs::copy(
            root().join("fixtures/bounds_check/elf").join(side),
            build.join(side),
        )
        .unwrap();
    }
    let output = Command::new(env!("CARGO_BIN_EXE_hotpatch"))
        .args([
            "check",
            "fixtures/bounds_check/elf/baseline",
            "fixtures/bounds_check/elf/fixed",
            "--format",
            "sarif",
        ])
        .current_dir(&scratch)
        .output()
        .unwrap();
    assert_eq!(
        fingerprint(&String::from_utf8(output.stdout).unwrap()),
        fingerprint(&elf)
    );
}

#[test]
fn sarif_rules_link_into_the_eligibility_document() {
    let eligibility = std::fs::read_to_string(root().join("docs/eligibility.md")).unwrap();
    let (_, text) = check("bounds_check", "elf", "sarif");
    let log: serde_json::Value = serde_json::from_str(&text).unwrap();
    for (rule, descriptor) in hotpatch_policy::CATALOGUE.iter().zip(
        log["runs"][0]["tool"]["driver"]["rules"]
            .as_array()
            .unwrap(),
    ) {
        assert_eq!(descriptor["id"], rule.id.as_str());
        assert_eq!(descriptor["shortDescription"]["text"], rule.title);
        assert_eq!(descriptor["fullDescription"]["text"], rule.checks);
        assert_eq!(descriptor["help"]["text"], rule.remedy);
        let heading = format!("## {} `{}`: {}", rule.id, rule.name, rule.title);
        assert!(eligibility.contains(&heading), "{heading}");
        // GitHub's anchor of that heading.
        let anchor: String = heading
            .trim_start_matches("## ")
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        assert_eq!(
            descriptor["helpUri"],
            format!("docs/eligibility.md#{anchor}")
        );
    }
}

const READ_JUNIT: &str = r#"
import json, sys
from junitparser import JUnitXml, Failure
xml = JUnitXml.fromfile(sys.argv[1])
suites = []
for suite in xml:
    cases = []
    for case in suite:
        failures = [{"type": r.type, "message": r.message, "text": r.text} for r in case.result if isinstance(r, Failure)]
        cases.append({"name": case.name, "classname": case.classname, "failures": failures, "passed": case.is_passed})
    suites.append({"name": suite.name, "tests": suite.tests, "failures": suite.failures, "cases": cases})
print(json.dumps(suites))
"#;

/// Reads JUnit XML with junitparser into JSON (`None` when it is missing outside CI).
fn read_junit(xml: &str, name: &str) -> Option<serde_json::Value> {
    let path = scratch_dir(&format!("junit-{name}")).join("report.xml");
    std::fs::write(&path, xml).unwrap();
    let text = python(&["junitparser"], READ_JUNIT, &[path.to_str().unwrap()], "")?;
    Some(serde_json::from_str(&text).unwrap())
}

#[test]
fn junit_reads_back_through_junitparser() {
    // Eligible: every case passes.
    let (code, xml) = check("bounds_check", "pe", "junit");
    assert_eq!(code, 0);
    if let Some(suites) = read_junit(&xml, "bounds_check") {
        let suites = suites.as_array().unwrap();
        assert_eq!(suites.len(), 1);
        assert_eq!(suites[0]["name"], "fixtures/bounds_check/pe/fixed.exe");
        let cases = suites[0]["cases"].as_array().unwrap();
        let names: Vec<&str> = cases.iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "binary fixtures/bounds_check/pe/fixed.exe",
                "lookup_user (changed)"
            ]
        );
        assert!(cases.iter().all(|c| c["passed"] == true), "{suites:?}");
        assert_eq!(suites[0]["failures"], 0);
    }
    // Reboot-required: the binary and enter_scope fail with HP0201 and its reason.
    let (code, xml) = check("tls", "elf", "junit");
    assert_eq!(code, 10);
    if let Some(suites) = read_junit(&xml, "tls") {
        let cases = suites[0]["cases"].as_array().unwrap();
        let enter_scope = cases
            .iter()
            .find(|c| c["name"] == "enter_scope (changed)")
            .expect("a case for enter_scope");
        assert_eq!(enter_scope["passed"], false);
        let failure = &enter_scope["failures"][0];
        assert!(
            failure["type"].as_str().unwrap().contains("HP0201"),
            "{failure}"
        );
        assert!(
            failure["message"]
                .as_str()
                .unwrap()
                .contains("tls-accessed"),
            "{failure}"
        );
        let binary = &cases[0];
        assert!(binary["name"].as_str().unwrap().starts_with("binary "));
        assert_eq!(binary["passed"], false);
        let n_failed = cases.iter().filter(|c| c["passed"] == false).count();
        assert_eq!(suites[0]["failures"], n_failed);
    }
    // A binary-scope rule fails the binary's case too (struct_layout: HP0103 on `sessions`).
    let (code, xml) = check("struct_layout", "elf", "junit");
    assert_eq!(code, 10);
    if let Some(suites) = read_junit(&xml, "struct_layout") {
        let binary = &suites[0]["cases"][0];
        assert!(
            binary["failures"][0]["type"]
                .as_str()
                .unwrap()
                .contains("HP0103"),
            "{binary}"
        );
    }
}

#[test]
fn sarif_and_junit_are_byte_identical_across_runs() {
    for (case, format) in [("bounds_check", "pe"), ("struct_layout", "elf")] {
        for output in ["sarif", "junit", "json"] {
            let first = check(case, format, output).1;
            let second = check(case, format, output).1;
            assert_eq!(first, second, "{case}/{format} --format {output}");
        }
    }
}

#[test]
fn json_is_additive_and_reports_show_source_locations() {
    let (base, fixed) = pair("bounds_check", "elf");
    let json = hotpatch(&[
        "check",
        &base,
        &fixed,
        "--json",
        "--source-root",
        "=fixtures/bounds_check",
    ]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["schema"], "hotpatch-check/1");
    let source = &value["functions"][0]["source"];
    assert_eq!(source["first_difference"]["file"], "fixed.c");
    assert_eq!(
        source["first_difference"]["path"],
        "fixtures/bounds_check/fixed.c"
    );
    let (_, _, fix) = source_lines(
        &root().join("fixtures/bounds_check/fixed.c"),
        "lookup_user",
        "index >= MAX_USERS",
    );
    assert_eq!(source["first_difference"]["line"], fix);
    let html = hotpatch(&[
        "report",
        &base,
        &fixed,
        "--format",
        "html",
        "--source-root",
        "=fixtures/bounds_check",
    ]);
    let html = String::from_utf8(html.stdout).unwrap();
    // The source line stands beside the first differing instruction.
    assert!(
        html.contains(&format!(
            "<td class=\"src\">fixtures/bounds_check/fixed.c:{fix}: if (index &lt; 0 || index &gt;= MAX_USERS)</td>"
        )),
        "{html}"
    );
    let markdown = hotpatch(&[
        "report",
        &base,
        &fixed,
        "--source-root",
        "=fixtures/bounds_check",
    ]);
    let markdown = String::from_utf8(markdown.stdout).unwrap();
    assert!(
        markdown.contains(&format!(
            "first difference at fixtures/bounds_check/fixed.c:{fix}"
        )),
        "{markdown}"
    );
    // Inlined code: the inlinee and its own line (DWARF records it).
    let (base, fixed) = pair("inlined_helper", "elf");
    let json = hotpatch(&["check", &base, &fixed, "--json"]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let (_, _, helper_fix) = source_lines(
        &root().join("fixtures/inlined_helper/fixed.c"),
        "clamp_len",
        "BUF_SIZE - 1",
    );
    for function in value["functions"].as_array().unwrap() {
        let inlined = &function["source"]["inlined_from"];
        assert_eq!(inlined["inlinee"], "clamp_len", "{function}");
        assert_eq!(inlined["line"]["line"], helper_fix, "{function}");
    }
}

/// The line of `function`'s call of `callee` in a fixture source file.
fn call_line(path: &Path, function: &str, callee: &str) -> u32 {
    let (first, last, _) = source_lines(path, function, "{");
    let text = std::fs::read_to_string(path).unwrap();
    let idx = text
        .lines()
        .enumerate()
        .skip(usize::try_from(first).unwrap())
        .take(usize::try_from(last - first).unwrap())
        .find(|(_, line)| line.contains(&format!("{callee}(")))
        .expect("the call is in the function")
        .0;
    u32::try_from(idx + 1).unwrap()
}

#[test]
fn inlined_code_carries_the_inlinee_line_and_the_call_site() {
    // clamp_len is inlined into copy_field and field_width in both formats; the fix edits its
    // body in place, so findings point at that line, with the call site beside it (PE: from the
    // S_INLINESITE annotations and the caller's line table; ELF: DW_AT_call_line).
    let source = root().join("fixtures/inlined_helper/fixed.c");
    let (_, _, helper_fix) = source_lines(&source, "clamp_len", "BUF_SIZE - 1");
    for format in ["elf", "pe"] {
        let (_, text) = check("inlined_helper", format, "sarif");
        validate_sarif(&text);
        let log: serde_json::Value = serde_json::from_str(&text).unwrap();
        let results = log["runs"][0]["results"].as_array().unwrap();
        for caller in ["copy_field", "field_width"] {
            let result = results
                .iter()
                .find(|r| r["locations"][0]["logicalLocations"][0]["name"] == caller)
                .unwrap_or_else(|| panic!("{format}: a result on {caller}: {text}"));
            let primary = &result["locations"][0]["physicalLocation"];
            assert_eq!(
                primary["artifactLocation"]["uri"],
                "fixtures/inlined_helper/fixed.c"
            );
            assert_eq!(
                primary["region"]["startLine"], helper_fix,
                "{format} {caller}"
            );
            let related = |id: u64| {
                result["relatedLocations"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|l| l["id"] == id)
                    .unwrap_or_else(|| panic!("{format} {caller}: related location {id}: {result}"))
            };
            assert_eq!(
                related(3)["physicalLocation"]["region"]["startLine"],
                helper_fix,
                "{format} {caller}: the inlinee's line"
            );
            assert_eq!(
                related(4)["physicalLocation"]["region"]["startLine"],
                call_line(&source, caller, "clamp_len"),
                "{format} {caller}: the call site"
            );
        }
        // The JSON says the same, and how the line was chosen.
        let (base, fixed) = pair("inlined_helper", format);
        let json = hotpatch(&["check", &base, &fixed, "--json"]);
        let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
        for function in value["functions"].as_array().unwrap() {
            let name = function["function"].as_str().unwrap();
            let source_json = &function["source"];
            assert_eq!(source_json["fix"]["line"], helper_fix, "{format} {name}");
            assert_eq!(source_json["fix"]["basis"], "first-difference");
            assert_eq!(
                source_json["inlined_from"]["call_site"]["line"],
                call_line(&source, name, "clamp_len"),
                "{format} {name}"
            );
        }
    }
}

/// A release tree under `dir/<side>`: each case's ELF build as `<case>/app`, its PE build and
/// PDB as `<case>/app.exe` and `<case>/app.pdb`.
fn release_tree(dir: &Path, cases: &[&str]) {
    for side in ["baseline", "fixed"] {
        for case in cases {
            let fixture = root().join("fixtures").join(case);
            let into = dir.join(side).join(case);
            std::fs::create_dir_all(&into).unwrap();
            std::fs::copy(fixture.join("elf").join(side), into.join("app")).unwrap();
            std::fs::copy(
                fixture.join("pe").join(format!("{side}.exe")),
                into.join("app.exe"),
            )
            .unwrap();
            std::fs::copy(
                fixture.join("pe").join(format!("{side}.pdb")),
                into.join("app.pdb"),
            )
            .unwrap();
        }
    }
}

/// Runs `hotpatch build` in `dir` on its release tree, writing the reports to `dir/<reports>`;
/// the exit code.
fn build_release(dir: &Path, reports: &str) -> i32 {
    let key = dir.join("keys");
    if !key.join("hotpatch.key").is_file() {
        let output = Command::new(env!("CARGO_BIN_EXE_hotpatch"))
            .args(["keygen", "--out", "keys"])
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(output.status.success());
    }
    std::fs::create_dir_all(dir.join(reports)).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_hotpatch"))
        .args([
            "build",
            "--release",
            "2026-05",
            "--baseline",
            "baseline",
            "--fixed",
            "fixed",
            "--key",
            "keys/hotpatch.key",
            "--out",
            &format!("{reports}/month.hpkg"),
            "--sequence",
            "2",
            "--min-sequence",
            "1",
            "--baseline-id",
            "series-1",
            "--issued-at",
            "1800000000",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        matches!(output.status.code(), Some(0 | 10)),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.status.code().unwrap()
}

#[test]
fn build_writes_sarif_and_junit_for_the_whole_release() {
    let dir = scratch_dir("release");
    let cases = ["bounds_check", "inlined_helper", "tls"];
    release_tree(&dir, &cases);
    assert_eq!(build_release(&dir, "first"), 10, "tls needs a baseline");
    assert_eq!(build_release(&dir, "second"), 10);
    let read = |path: &str| std::fs::read_to_string(dir.join(path)).unwrap();
    let sarif = read("first/month.release.sarif");
    let junit = read("first/month.release.junit.xml");
    assert_eq!(
        sarif,
        read("second/month.release.sarif"),
        "SARIF is byte-identical"
    );
    assert_eq!(
        junit,
        read("second/month.release.junit.xml"),
        "JUnit is byte-identical"
    );
    validate_sarif(&sarif);

    // The line each finding must point at, from the fixtures' sources.
    let expected = |case: &str, function: &str| -> u32 {
        let source = root().join("fixtures").join(case).join("fixed.c");
        match (case, function) {
            ("bounds_check", "lookup_user") => source_lines(&source, function, "MAX_USERS").2,
            ("inlined_helper", _) => source_lines(&source, "clamp_len", "BUF_SIZE - 1").2,
            ("tls", "enter_scope") => source_lines(&source, function, "scope_depth >= 64").2,
            _ => panic!("no finding expected on {case} {function}"),
        }
    };
    let log: serde_json::Value = serde_json::from_str(&sarif).unwrap();
    let runs = log["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "one run for the release");
    let results = runs[0]["results"].as_array().unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for result in results {
        // The binary is the first related location: `fixed/<case>/app[.exe]`.
        let binary = result["relatedLocations"][0]["physicalLocation"]["artifactLocation"]["uri"]
            .as_str()
            .unwrap();
        let case = binary.split('/').nth(1).unwrap();
        let function = result["locations"][0]["logicalLocations"][0]["name"]
            .as_str()
            .unwrap();
        let location = &result["locations"][0]["physicalLocation"];
        // The fixtures record the relative build path `fixed.c`.
        assert_eq!(location["artifactLocation"]["uri"], "fixed.c", "{result}");
        assert_eq!(
            location["region"]["startLine"],
            expected(case, function),
            "{binary} {function}: {result}"
        );
        seen.insert((
            binary.to_owned(),
            result["ruleId"].as_str().unwrap().to_owned(),
        ));
    }
    for case in cases {
        for binary in ["app", "app.exe"] {
            let rule = if case == "tls" { "HP0201" } else { "HP0010" };
            assert!(
                seen.contains(&(format!("fixed/{case}/{binary}"), rule.to_owned())),
                "{case}/{binary} {rule}: {seen:?}"
            );
        }
    }
    let statuses = &runs[0]["properties"]["binaries"];
    assert_eq!(statuses.as_array().unwrap().len(), 6);

    if let Some(suites) = read_junit(&junit, "release") {
        let suites = suites.as_array().unwrap();
        assert_eq!(suites.len(), 1, "one suite for the release");
        assert_eq!(suites[0]["name"], "release 2026-05 of default (stable)");
        let cases_read = suites[0]["cases"].as_array().unwrap();
        for case in cases {
            for binary in ["app", "app.exe"] {
                let name = format!("{case}/{binary}");
                let of_binary: Vec<&serde_json::Value> = cases_read
                    .iter()
                    .filter(|c| c["classname"] == name.as_str())
                    .collect();
                assert!(of_binary.len() >= 2, "{name}: the binary and its functions");
                assert_eq!(of_binary[0]["name"], format!("binary {name}"));
                let passed = of_binary.iter().all(|c| c["passed"] == true);
                assert_eq!(passed, case != "tls", "{name}");
            }
        }
    }
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("ci_formats-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const YAML_TO_JSON: &str = r#"
import json, sys, yaml
print(json.dumps(list(yaml.safe_load_all(sys.stdin.read()))))
"#;

/// The YAML blocks of docs/ci.md, parsed by PyYAML (`None` when it is missing outside CI).
fn pipelines() -> Option<Vec<serde_json::Value>> {
    let doc = std::fs::read_to_string(root().join("docs/ci.md")).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match (&mut current, line) {
            (None, "```yaml") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), line) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert_eq!(
        blocks.len(),
        2,
        "docs/ci.md has a GitHub and a GitLab block"
    );
    blocks
        .iter()
        .map(|block| {
            let parsed = python(&["yaml"], YAML_TO_JSON, &[], block)?;
            let documents: Vec<serde_json::Value> = serde_json::from_str(&parsed).unwrap();
            assert_eq!(documents.len(), 1);
            documents.into_iter().next()
        })
        .collect()
}

/// A directory with `hotpatch` in it, for PATH.
fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hotpatch"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs a shell script of a pipeline in a scratch directory holding the fixture pair as the
/// pipeline expects it: the sources checked out under `fixed-src/`, the builds at `$BASELINE`
/// and `$FIXED`.
fn run_script(script: &str, dir: &Path, env: &[(&str, String)]) -> i32 {
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("bash")
        .arg("-e")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("PATH", path)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("bash runs");
    eprintln!(
        "{script}\n--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output.status.code().unwrap_or(-1)
}

/// A scratch checkout: `fixed-src/` holds the fixture's sources, `baseline/app` and `fixed/app`
/// its ELF builds.
fn workspace(case: &str, name: &str) -> PathBuf {
    let dir = scratch_dir(name);
    let src = root().join("fixtures").join(case);
    std::fs::create_dir_all(dir.join("fixed-src")).unwrap();
    std::fs::copy(src.join("fixed.c"), dir.join("fixed-src/fixed.c")).unwrap();
    for side in ["baseline", "fixed"] {
        std::fs::create_dir_all(dir.join(side)).unwrap();
        std::fs::copy(src.join("elf").join(side), dir.join(side).join("app")).unwrap();
    }
    dir
}

#[test]
fn github_workflow_parses_and_its_hotpatch_steps_run() {
    let Some(pipelines) = pipelines() else { return };
    let workflow = &pipelines[0];
    // YAML 1.1 (PyYAML, as GitHub's own parser in spirit) reads the key `on` as true.
    let on = workflow
        .get("on")
        .or_else(|| workflow.get("true"))
        .expect("the workflow has triggers");
    assert!(on.as_object().unwrap().contains_key("pull_request"), "{on}");
    let job = &workflow["jobs"]["hotpatch"];
    let steps = job["steps"].as_array().unwrap();
    assert!(steps.iter().any(|s| {
        s["uses"]
            .as_str()
            .is_some_and(|u| u.contains("upload-sarif"))
            && s["with"]["sarif_file"] == "hotpatch.sarif"
    }));
    let check_step = steps.iter().find(|s| s["id"] == "check").unwrap();
    let enforce_step = steps
        .iter()
        .find(|s| s["name"] == "enforce the hotpatch policy")
        .unwrap();
    let env = &workflow["env"];
    for (case, require, expect_check, expect_enforce) in [
        ("bounds_check", "false", 0, 0),
        ("bounds_check", "true", 0, 0),
        ("tls", "false", 0, 0),
        ("tls", "true", 0, 10),
    ] {
        let dir = workspace(case, &format!("github-{case}-{require}"));
        let summary = dir.join("summary.md");
        let outputs = dir.join("outputs");
        let vars = [
            ("BASELINE", env["BASELINE"].as_str().unwrap().to_owned()),
            ("FIXED", env["FIXED"].as_str().unwrap().to_owned()),
            ("HOTPATCH_REQUIRE_HOTPATCH", require.to_owned()),
            ("GITHUB_STEP_SUMMARY", summary.display().to_string()),
            ("GITHUB_OUTPUT", outputs.display().to_string()),
        ];
        let code = run_script(check_step["run"].as_str().unwrap(), &dir, &vars);
        assert_eq!(code, expect_check, "{case} require={require}");
        let status = std::fs::read_to_string(&outputs).unwrap();
        let status = status.trim().trim_start_matches("status=").to_owned();
        let enforce = enforce_step["run"]
            .as_str()
            .unwrap()
            .replace("${{ steps.check.outputs.status }}", &status);
        let code = run_script(&enforce, &dir, &vars);
        assert_eq!(code, expect_enforce, "{case} require={require}");
        let sarif = std::fs::read_to_string(dir.join("hotpatch.sarif")).unwrap();
        validate_sarif(&sarif);
        let log: serde_json::Value = serde_json::from_str(&sarif).unwrap();
        // The fix is located in the checkout of the fixed sources.
        let rule = if case == "tls" { "HP0201" } else { "HP0010" };
        let uri = &log["runs"][0]["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["ruleId"] == rule)
            .unwrap()["locations"][0]["physicalLocation"]["artifactLocation"]["uri"];
        assert_eq!(uri, "fixed-src/fixed.c");
        assert!(
            dir.join(uri.as_str().unwrap()).is_file(),
            "the SARIF location exists in the checkout"
        );
        let summary = std::fs::read_to_string(&summary).unwrap();
        assert!(
            summary.starts_with("# Hotpatch audit report: `fixed/app`"),
            "{summary}"
        );
    }
}

#[test]
fn gitlab_job_parses_and_its_script_runs() {
    let Some(pipelines) = pipelines() else { return };
    let job = &pipelines[1]["hotpatch"];
    assert_eq!(job["allow_failure"]["exit_codes"], serde_json::json!([10]));
    let junit = job["artifacts"]["reports"]["junit"].as_str().unwrap();
    let paths: Vec<&str> = job["artifacts"]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    // GitLab runs the lines of `script` in one shell and stops at the first that fails.
    let script: Vec<&str> = job["script"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let script = script.join("\n");
    for (case, require, expect) in [
        ("bounds_check", "false", 0),
        ("tls", "false", 10),
        ("tls", "true", 1),
    ] {
        let dir = workspace(case, &format!("gitlab-{case}-{require}"));
        let vars = [
            (
                "BASELINE",
                job["variables"]["BASELINE"].as_str().unwrap().to_owned(),
            ),
            (
                "FIXED",
                job["variables"]["FIXED"].as_str().unwrap().to_owned(),
            ),
            ("HOTPATCH_REQUIRE_HOTPATCH", require.to_owned()),
        ];
        let code = run_script(&script, &dir, &vars);
        assert_eq!(code, expect, "{case} require={require}");
        for artifact in paths.iter().copied().chain([junit]) {
            assert!(dir.join(artifact).is_file(), "{case}: {artifact}");
        }
        let xml = std::fs::read_to_string(dir.join(junit)).unwrap();
        if let Some(suites) = read_junit(&xml, &format!("gitlab-{case}")) {
            assert_eq!(suites[0]["name"], "fixed/app");
            let failed = suites[0]["failures"].as_u64().unwrap();
            assert_eq!(failed > 0, case == "tls");
        }
        let html = std::fs::read_to_string(dir.join("hotpatch-report.html")).unwrap();
        assert!(html.starts_with("<!DOCTYPE html>"));
    }
}

/// `layout_users`: `struct transfer` gains `retries` after `id`; no global holds one. Every
/// changed function that takes or holds one (parameter, local, local pointer) carries HP0101 in
/// the JSON verdicts and in SARIF, and the report marks the moved fields. Offsets from the C
/// source and the ABIs: SysV x86-64 (`long` 8 bytes: `done` aligned to 8) and Windows x64
/// (`long` 4 bytes).
#[test]
fn layout_change_ties_every_changed_user_in_every_format() {
    let replaced = ["transfer_new", "transfer_print", "transfer_step"];
    for (format, moved) in [
        (
            "elf",
            [
                "flags moved +4 -> +8",
                "done moved +8 -> +16",
                "peer moved +16 -> +24",
            ],
        ),
        (
            "pe",
            [
                "flags moved +4 -> +8",
                "done moved +8 -> +12",
                "peer moved +12 -> +16",
            ],
        ),
    ] {
        let (code, text) = check("layout_users", format, "json");
        assert_eq!(code, 10, "{format}");
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        for function in replaced {
            let verdict = json["functions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["function"] == function)
                .unwrap_or_else(|| panic!("{format}: {function} has a verdict"));
            assert_eq!(verdict["verdict"], "reboot-required", "{format} {function}");
            assert!(
                verdict["rules"]
                    .as_array()
                    .unwrap()
                    .contains(&"HP0101".into()),
                "{format} {function}: {verdict}"
            );
            let finding = json["findings"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["rule"] == "HP0101" && f["function"] == function)
                .unwrap_or_else(|| panic!("{format}: an HP0101 finding on {function}"));
            let fields = finding["evidence"]["fields"].as_str().unwrap();
            assert!(fields.contains("retries added at +4 (int)"), "{fields}");
            for line in moved {
                assert!(
                    fields.lines().any(|l| l == line),
                    "{format}: {line} in {fields}"
                );
            }
            assert_eq!(finding["evidence"]["unchanged_users"], "main, transfer_id");
        }
        // No binary-scope HP0101: every finding names a function.
        assert!(
            json["findings"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|f| f["rule"] == "HP0101")
                .all(|f| f["function"].is_string()),
            "{format}"
        );

        let (code, text) = check("layout_users", format, "sarif");
        assert_eq!(code, 10);
        let log: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut tied: Vec<&str> = log["runs"][0]["results"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["ruleId"] == "HP0101")
            .map(|r| {
                assert_eq!(r["level"], "error");
                r["locations"][0]["logicalLocations"][0]["name"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        tied.sort_unstable();
        assert_eq!(tied, replaced, "{format}");

        // The report's layout table marks each moved field with both offsets.
        let (base, fixed) = pair("layout_users", format);
        let output = hotpatch(&["report", &base, &fixed, "--format", "markdown"]);
        let markdown = String::from_utf8(output.stdout).unwrap();
        assert!(
            markdown.contains("| `retries` | added |  | `+4 int` |"),
            "{markdown}"
        );
        assert!(
            markdown.contains("| `flags` | moved | `+4 unsigned int` | `+8 unsigned int` |"),
            "{markdown}"
        );
        assert!(
            markdown.contains(
                "Used by (parameters or locals): main (unchanged), transfer_id (unchanged), \
                 transfer_new (changed), transfer_print (changed), transfer_step (changed)"
            ),
            "{markdown}"
        );
    }
}
