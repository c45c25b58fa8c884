//! `hotpatch build --shard I/N` and `--merge DIR...` on release trees made from the fixtures:
//! the merged package is byte-identical to the one-machine build whatever N and whatever order
//! the shards come in, and the merge refuses a missing or duplicated shard (exit 4) and shards
//! of another release, another N or another policy (exit 5), and altered shard files (exit 2).

use crate::build::{
    ISSUED_AT, hotpatch_build, key_file, month_args, open_file, report_of, scratch, status_of, tree,
};
use crate::support::path_str;
use std::path::{Path, PathBuf};
use std::process::Output;

/// Cases of the test release: hotpatched, unchanged and reboot-required binaries, both formats.
const CASES: &[&str] = &[
    "bounds_check",
    "switch_table",
    "string_literal",
    "identical",
    "address_shift",
    "tls",
];

fn trees(dir: &Path) -> (PathBuf, PathBuf) {
    let baseline: Vec<(&str, &str)> = CASES.iter().map(|case| (*case, "baseline")).collect();
    let fixed: Vec<(&str, &str)> = CASES.iter().map(|case| (*case, "fixed")).collect();
    (
        tree(&dir.join("base"), &baseline),
        tree(&dir.join("fixed"), &fixed),
    )
}

fn describe(args: &[&str], output: &Output) -> String {
    format!(
        "hotpatch build {args:?}\nexit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `hotpatch build --shard SPEC` into `out`; asserts exit 0.
fn shard(base: &Path, fixed: &Path, spec: &str, out: &Path, extra: &[&str]) {
    let mut args = vec![
        "--release",
        "2027-02",
        "--baseline",
        path_str(base),
        "--fixed",
        path_str(fixed),
        "--shard",
        spec,
        "--out",
        path_str(out),
    ];
    args.extend_from_slice(extra);
    let output = hotpatch_build(&args, &[]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        describe(&args, &output)
    );
}

/// The month's arguments with `--merge DIR...` in place of the trees.
fn merge_args(key: &Path, out: &Path, shards: &[&Path]) -> Vec<String> {
    let unused = Path::new("-");
    let mut args: Vec<String> = month_args(unused, unused, key, out)
        .into_iter()
        .map(str::to_owned)
        .collect();
    for flag in ["--baseline", "--fixed"] {
        let at = args.iter().position(|a| a == flag).expect("flag");
        args.drain(at..at + 2);
    }
    args.push("--merge".to_owned());
    args.extend(shards.iter().map(|dir| path_str(dir).to_owned()));
    args
}

fn merge(key: &Path, out: &Path, shards: &[&Path]) -> (Vec<String>, Output) {
    let args = merge_args(key, out, shards);
    let borrowed: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = hotpatch_build(&borrowed, &[]);
    (args, output)
}

fn merge_expecting(key: &Path, out: &Path, shards: &[&Path], code: i32, message: &str) {
    let (args, output) = merge(key, out, shards);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let text = describe(&args, &output);
    assert_eq!(output.status.code(), Some(code), "{text}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(message),
        "expected {message:?} in:\n{text}"
    );
    if code != 0 && code != 10 {
        assert!(!out.exists(), "a refused merge wrote {}", out.display());
    }
}

/// The binaries a shard directory holds, read from its shard.json.
fn held(dir: &Path) -> Vec<String> {
    let text = std::fs::read(dir.join("shard.json")).expect("shard.json");
    let json: serde_json::Value = serde_json::from_slice(&text).expect("shard.json is JSON");
    json["binaries"]
        .as_array()
        .expect("binaries")
        .iter()
        .map(|b| b["report"]["name"].as_str().expect("name").to_owned())
        .collect()
}

#[test]
fn merged_shards_give_the_package_of_one_machine() {
    let dir = scratch("shard-equal");
    let key = key_file(&dir);
    let (base, fixed) = trees(&dir);

    // The one-machine build: tls makes the month a baseline month (exit 10).
    let single = dir.join("single.hpk");
    let args = month_args(&base, &fixed, &key, &single);
    let output = hotpatch_build(&args, &[]);
    assert_eq!(
        output.status.code(),
        Some(10),
        "{}",
        describe(&args, &output)
    );
    let single_bytes = std::fs::read(&single).expect("single package");
    let single_report = std::fs::read(dir.join("single.release.json")).expect("report");

    for count in [1_u32, 2, 3] {
        let dirs: Vec<PathBuf> = (1..=count)
            .map(|index| dir.join(format!("shards-{count}/{index}")))
            .collect();
        for (index, shard_dir) in (1..=count).zip(&dirs) {
            shard(&base, &fixed, &format!("{index}/{count}"), shard_dir, &[]);
        }
        // Every binary is in exactly one shard, and with several shards no shard holds all.
        let mut all: Vec<String> = dirs.iter().flat_map(|d| held(d)).collect();
        let n_binaries = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n_binaries, "a binary in two shards: {all:?}");
        assert_eq!(all.len(), CASES.len() * 2, "{all:?}");
        if count > 1 {
            assert!(dirs.iter().all(|d| held(d).len() < all.len()));
        }

        // Shards in reverse order: the package does not depend on it.
        let merged = dir.join(format!("merged-{count}.hpk"));
        let reversed: Vec<&Path> = dirs.iter().rev().map(PathBuf::as_path).collect();
        merge_expecting(&key, &merged, &reversed, 10, "");
        assert_eq!(
            std::fs::read(&merged).expect("merged package"),
            single_bytes,
            "{count} shards"
        );
        let merged_report = std::fs::read(dir.join(format!("merged-{count}.release.json")));
        assert_eq!(merged_report.expect("merged report"), single_report);
    }
    let package = open_file(&single);
    let report = report_of(&package);
    assert_eq!(status_of(&report, "bounds_check/app"), "hotpatched");
    assert_eq!(status_of(&report, "tls/app.exe"), "reboot-required");
    assert_eq!(package.manifest.issued_at, ISSUED_AT);
}

#[test]
fn merge_refuses_a_missing_or_duplicated_shard() {
    let dir = scratch("shard-coverage");
    let key = key_file(&dir);
    let (base, fixed) = trees(&dir);
    let one = dir.join("1");
    let two = dir.join("2");
    let three = dir.join("3");
    shard(&base, &fixed, "1/3", &one, &[]);
    shard(&base, &fixed, "2/3", &two, &[]);
    shard(&base, &fixed, "3/3", &three, &[]);
    let out = dir.join("out.hpk");

    merge_expecting(&key, &out, &[&one, &three], 4, "shard 2/3 is missing");
    let copy = dir.join("copy-of-2");
    std::fs::create_dir_all(copy.join("binaries")).expect("mkdir");
    for entry in walk(&two) {
        let relative = entry.strip_prefix(&two).expect("under the shard");
        std::fs::copy(&entry, copy.join(relative)).expect("copy");
    }
    merge_expecting(
        &key,
        &out,
        &[&one, &two, &copy, &three],
        4,
        "shard 2/3 is given twice",
    );

    // A binary moved into a shard it does not belong to.
    let moved = dir.join("moved");
    shard(&base, &fixed, "1/3", &moved, &[]);
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(moved.join("shard.json")).expect("read"))
            .expect("JSON");
    let stolen = serde_json::from_slice::<serde_json::Value>(
        &std::fs::read(two.join("shard.json")).expect("read"),
    )
    .expect("JSON")["binaries"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["payload"].is_null()).cloned())
        .expect("shard 2/3 holds a binary without payload");
    let stolen_name = stolen["report"]["name"].as_str().expect("name").to_owned();
    json["binaries"]
        .as_array_mut()
        .expect("binaries")
        .push(stolen);
    std::fs::write(
        moved.join("shard.json"),
        serde_json::to_vec(&json).expect("JSON"),
    )
    .expect("write");
    merge_expecting(
        &key,
        &out,
        &[&moved, &two, &three],
        4,
        &format!("holds {stolen_name}, which belongs to shard 2/3"),
    );

    // The shard side refuses the signing options: a matrix job needs no key.
    let args = [
        "--release",
        "2027-02",
        "--baseline",
        path_str(&base),
        "--fixed",
        path_str(&fixed),
        "--shard",
        "1/3",
        "--out",
        path_str(&one),
        "--key",
        path_str(&key),
    ];
    let output = hotpatch_build(&args, &[]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "{}",
        describe(&args, &output)
    );
    for bad in ["0/3", "4/3", "3"] {
        let mut args = args[..10].to_vec();
        args[7] = bad;
        let output = hotpatch_build(&args, &[]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{}",
            describe(&args, &output)
        );
    }
}

#[test]
fn merge_refuses_shards_of_another_release_another_n_or_altered_files() {
    let dir = scratch("shard-mismatch");
    let key = key_file(&dir);
    let (base, fixed) = trees(&dir);
    let one = dir.join("1");
    let two = dir.join("2");
    shard(&base, &fixed, "1/2", &one, &[]);
    shard(&base, &fixed, "2/2", &two, &[]);
    let out = dir.join("out.hpk");
    merge_expecting(&key, &out, &[&one, &two], 10, "");
    std::fs::remove_file(&out).expect("remove");

    // Another fixed tree: bounds_check's fix left out of the month.
    let other_fixed = dir.join("other-fixed");
    let cases: Vec<(&str, &str)> = CASES
        .iter()
        .map(|case| match *case {
            "bounds_check" => (*case, "baseline"),
            _ => (*case, "fixed"),
        })
        .collect();
    tree(&other_fixed, &cases);
    let other_two = dir.join("other-2");
    shard(&base, &other_fixed, "2/2", &other_two, &[]);
    merge_expecting(
        &key,
        &out,
        &[&one, &other_two],
        5,
        "is a shard of another release: its release trees",
    );

    // Another N.
    let of_three = dir.join("2-of-3");
    shard(&base, &fixed, "2/3", &of_three, &[]);
    merge_expecting(
        &key,
        &out,
        &[&one, &of_three],
        5,
        "is one of 3 shards, the others of 2",
    );

    // Another month.
    let mut args = merge_args(&key, &out, &[&one, &two]);
    let at = args.iter().position(|a| a == "--release").expect("flag");
    args[at + 1] = "2027-03".to_owned();
    let borrowed: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = hotpatch_build(&borrowed, &[]);
    assert_eq!(
        output.status.code(),
        Some(5),
        "{}",
        describe(&borrowed, &output)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("its month is 2027-02"));

    // Another policy file.
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, "[release]\nleave_out_reboot_required = true\n").expect("policy");
    let with_policy = dir.join("2-policy");
    shard(
        &base,
        &fixed,
        "2/2",
        &with_policy,
        &["--policy", path_str(&policy)],
    );
    merge_expecting(&key, &out, &[&one, &with_policy], 5, "another policy file");

    // A result for another build than the listing names.
    let forged = dir.join("forged");
    shard(&base, &fixed, "1/2", &forged, &[]);
    let path = forged.join("shard.json");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("JSON");
    let binary = &mut json["binaries"][0]["report"];
    let name = binary["name"].as_str().expect("name").to_owned();
    binary["fixed_sha256"] = serde_json::Value::from("00".repeat(32));
    std::fs::write(&path, serde_json::to_vec(&json).expect("JSON")).expect("write");
    merge_expecting(
        &key,
        &out,
        &[&forged, &two],
        5,
        &format!("the results for {name} are of other builds"),
    );

    // An altered payload or audit report file: an input error.
    let altered = dir.join("altered");
    let with_files = [&one, &two]
        .into_iter()
        .find(|d| std::fs::read_dir(d.join("binaries")).expect("ls").count() > 0)
        .expect("a shard with files");
    let spec = if with_files == &one { "1/2" } else { "2/2" };
    shard(&base, &fixed, spec, &altered, &[]);
    let victim = walk(&altered.join("binaries"))
        .into_iter()
        .next()
        .expect("a file");
    let mut bytes = std::fs::read(&victim).expect("read");
    bytes[0] ^= 1;
    std::fs::write(&victim, bytes).expect("write");
    let other = if with_files == &one { &two } else { &one };
    merge_expecting(
        &key,
        &out,
        &[&altered, other],
        2,
        "does not hold what shard.json records",
    );
    // Not a shard directory at all.
    merge_expecting(&key, &out, &[&base, &two], 2, "is not a shard directory");
}

/// Every file under `dir`, sorted.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

const YAML_TO_JSON: &str = r#"
import json, sys, yaml
print(json.dumps(yaml.safe_load(sys.stdin.read())))
"#;

/// The `yaml release` blocks of docs/ci.md, parsed by PyYAML (`None` when it is missing outside
/// CI).
fn release_pipelines() -> Option<Vec<serde_json::Value>> {
    let doc = std::fs::read_to_string(crate::support::root().join("docs/ci.md")).expect("ci.md");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match (&mut current, line) {
            (None, "```yaml release") => current = Some(String::new()),
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
        "docs/ci.md has a GitHub and a GitLab release pipeline"
    );
    blocks
        .iter()
        .map(|block| {
            let json = crate::ci_formats::python(&["yaml"], YAML_TO_JSON, &[], block)?;
            Some(serde_json::from_str(&json).expect("PyYAML printed JSON"))
        })
        .collect()
}

/// Runs a pipeline's shell script with `bash -e` in `dir`, `hotpatch` on PATH; the exit code.
fn run_step(script: &str, dir: &Path, env: &[(String, String)]) -> i32 {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_hotpatch"))
        .parent()
        .expect("the binary has a directory");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = std::process::Command::new("bash")
        .args(["-e", "-c", script])
        .current_dir(dir)
        .env("PATH", path)
        .env("SOURCE_DATE_EPOCH", ISSUED_AT.to_string())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("bash runs");
    eprintln!(
        "{script}\n--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output.status.code().unwrap_or(-1)
}

/// The variables of a pipeline (`env:` or `variables:`) as strings.
fn variables(map: &serde_json::Value) -> Vec<(String, String)> {
    map.as_object()
        .expect("a map of variables")
        .iter()
        .map(|(k, v)| {
            let value = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            (k.clone(), value)
        })
        .collect()
}

/// A checkout with the release trees where the pipelines expect them, and the package
/// `hotpatch build` on one machine writes for it with the pipelines' options.
fn checkout(dir: &Path, vars: &[(String, String)]) -> Vec<u8> {
    let var = |name: &str| {
        vars.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("the pipeline sets {name}"))
    };
    let baseline: Vec<(&str, &str)> = CASES.iter().map(|case| (*case, "baseline")).collect();
    let fixed: Vec<(&str, &str)> = CASES.iter().map(|case| (*case, "fixed")).collect();
    let base_tree = tree(&dir.join(var("BASELINE_TREE")), &baseline);
    let fixed_tree = tree(&dir.join(var("FIXED_TREE")), &fixed);
    let key = key_file(dir);
    let out = dir.join("single.hpk");
    let (min_sequence, sequence, baseline_id) =
        (var("MIN_SEQUENCE"), var("SEQUENCE"), var("BASELINE_ID"));
    let args = [
        "--release",
        "2027-02",
        "--baseline",
        path_str(&base_tree),
        "--fixed",
        path_str(&fixed_tree),
        "--key",
        path_str(&key),
        "--out",
        path_str(&out),
        "--product",
        "demo",
        "--baseline-id",
        &baseline_id,
        "--min-sequence",
        &min_sequence,
        "--sequence",
        &sequence,
    ];
    let epoch = ISSUED_AT.to_string();
    let output = hotpatch_build(&args, &[("SOURCE_DATE_EPOCH", epoch.as_str())]);
    assert_eq!(
        output.status.code(),
        Some(10),
        "{}",
        describe(&args, &output)
    );
    std::fs::read(&out).expect("one-machine package")
}

#[test]
fn ci_matrix_pipelines_parse_and_build_the_package_of_one_machine() {
    let Some(pipelines) = release_pipelines() else {
        return;
    };

    // GitHub Actions: the matrix job once per `matrix.shard`, the artifacts downloaded into
    // `shards/<artifact name>`, then the package job.
    let workflow = &pipelines[0];
    let vars = variables(&workflow["env"]);
    let dir = scratch("shard-ci-github");
    let single = checkout(&dir, &vars);
    let count: u64 = vars
        .iter()
        .find(|(k, _)| k == "SHARDS")
        .and_then(|(_, v)| v.parse().ok())
        .expect("SHARDS");
    let shard_job = &workflow["jobs"]["shard"];
    let matrix: Vec<u64> = shard_job["strategy"]["matrix"]["shard"]
        .as_array()
        .expect("matrix.shard")
        .iter()
        .map(|v| v.as_u64().expect("a shard number"))
        .collect();
    assert_eq!(
        matrix,
        (1..=count).collect::<Vec<_>>(),
        "the matrix lists 1..=SHARDS"
    );
    let step = |job: &serde_json::Value, name: &str| -> String {
        job["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .find(|s| s["name"] == name)
            .and_then(|s| s["run"].as_str())
            .unwrap_or_else(|| panic!("a step named {name:?}"))
            .to_owned()
    };
    let analyse = step(shard_job, "analyse the shard");
    let upload = shard_job["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/upload-artifact"))
        })
        .expect("an upload step");
    for shard in &matrix {
        let script = analyse.replace("${{ matrix.shard }}", &shard.to_string());
        assert_eq!(run_step(&script, &dir, &vars), 0, "shard {shard}");
        let name = upload["with"]["name"]
            .as_str()
            .expect("artifact name")
            .replace("${{ matrix.shard }}", &shard.to_string());
        let path = upload["with"]["path"]
            .as_str()
            .expect("artifact path")
            .replace("${{ matrix.shard }}", &shard.to_string());
        let into = dir.join("shards").join(name);
        std::fs::create_dir_all(into.join("binaries")).expect("mkdir");
        for file in walk(&dir.join(&path)) {
            let relative = file
                .strip_prefix(dir.join(&path))
                .expect("under the artifact");
            std::fs::copy(&file, into.join(relative)).expect("copy");
        }
    }
    let package_job = &workflow["jobs"]["package"];
    assert_eq!(package_job["needs"], "shard");
    let mut merge_vars = vars.clone();
    let key_text = std::fs::read_to_string(dir.join("release.key")).expect("key");
    merge_vars.push(("HOTPATCH_KEY".to_owned(), key_text.trim().to_owned()));
    let merge = step(package_job, "merge and sign");
    assert_eq!(
        run_step(&merge, &dir, &merge_vars),
        0,
        "a baseline month is a warning"
    );
    assert_eq!(
        std::fs::read(dir.join("out/2027-02.hpk")).expect("merged package"),
        single
    );
    assert!(
        !dir.join("hotpatch.key").exists(),
        "the key file is removed"
    );

    // GitLab CI: `parallel: N` copies of the shard job with CI_NODE_INDEX/CI_NODE_TOTAL, their
    // artifacts in one directory, then the package job with the key as a file variable.
    let pipeline = &pipelines[1];
    let vars = variables(&pipeline["variables"]);
    let dir = scratch("shard-ci-gitlab");
    let single = checkout(&dir, &vars);
    let shard_job = &pipeline["hotpatch-shard"];
    let parallel = shard_job["parallel"].as_u64().expect("parallel: N");
    let script = |job: &serde_json::Value| -> String {
        let lines: Vec<&str> = job["script"]
            .as_array()
            .expect("script")
            .iter()
            .map(|l| l.as_str().expect("a script line"))
            .collect();
        lines.join("\n")
    };
    for index in 1..=parallel {
        let mut node = vars.clone();
        node.push(("CI_NODE_INDEX".to_owned(), index.to_string()));
        node.push(("CI_NODE_TOTAL".to_owned(), parallel.to_string()));
        assert_eq!(run_step(&script(shard_job), &dir, &node), 0, "node {index}");
    }
    let package_job = &pipeline["hotpatch-package"];
    assert_eq!(package_job["needs"], serde_json::json!(["hotpatch-shard"]));
    assert_eq!(
        package_job["allow_failure"]["exit_codes"],
        serde_json::json!([10])
    );
    // A file variable: GitLab writes the value to a file and passes its path.
    let key_variable = dir.join("key-variable");
    std::fs::copy(dir.join("release.key"), &key_variable).expect("copy key");
    let mut merge_vars = vars.clone();
    merge_vars.push((
        "HOTPATCH_KEY".to_owned(),
        path_str(&key_variable).to_owned(),
    ));
    assert_eq!(
        run_step(&script(package_job), &dir, &merge_vars),
        10,
        "the fixtures' month needs a baseline (tls)"
    );
    assert_eq!(
        std::fs::read(dir.join("out/2027-02.hpk")).expect("merged package"),
        single
    );
}
