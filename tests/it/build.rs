//! `hotpatch build` on release trees made from the fixtures: the package passes `hotpatch verify`
//! and opens under the build key, one changed byte in any entry is refused by name, two builds are
//! byte-identical, a three-month series carries growing sequence numbers and supersede fields, a
//! pair without a code change gives no payload, and a reboot-required binary makes the month a
//! baseline month.

use crate::support::{path_str, root};
use hotpatch_package::{
    Error, Limits, PackageKind, SecretKey, Trust, VerifiedPackage, check_sequence,
};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub(crate) const ISSUED_AT: u64 = 1_800_000_000;

pub(crate) fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hotpatch-it-{}-build-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

pub(crate) fn secret_key() -> SecretKey {
    SecretKey::from_seed([7; 32])
}

/// The build key, written with mode 0600.
pub(crate) fn key_file(dir: &Path) -> PathBuf {
    let path = dir.join("release.key");
    std::fs::write(&path, secret_key().to_text()).expect("write key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// A release tree under `dir`: for each `(case, side)`, the fixture's ELF build as
/// `<case>/app` and its PE build with its PDB as `<case>/app.exe` and `<case>/app.pdb`.
pub(crate) fn tree(dir: &Path, builds: &[(&str, &str)]) -> PathBuf {
    for (case, side) in builds {
        let fixture = root().join("fixtures").join(case);
        let into = dir.join(case);
        std::fs::create_dir_all(&into).expect("mkdir");
        for (from, to) in [
            (fixture.join("elf").join(side), into.join("app")),
            (
                fixture.join("pe").join(format!("{side}.exe")),
                into.join("app.exe"),
            ),
            (
                fixture.join("pe").join(format!("{side}.pdb")),
                into.join("app.pdb"),
            ),
        ] {
            std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        }
    }
    dir.to_path_buf()
}

pub(crate) fn hotpatch_build(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hotpatch"));
    command
        .arg("build")
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("the hotpatch binary runs")
}

/// Runs `hotpatch build` and asserts its exit code.
fn build(args: &[&str], expected_code: i32) -> Output {
    let output = hotpatch_build(args, &[]);
    assert_eq!(
        output.status.code(),
        Some(expected_code),
        "hotpatch build {args:?}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn open(bytes: &[u8]) -> Result<VerifiedPackage, Error> {
    let trust = Trust::from_public_key(secret_key().public_key());
    hotpatch_package::open(bytes, &trust, ISSUED_AT + 60, &Limits::default())
}

pub(crate) fn open_file(path: &Path) -> VerifiedPackage {
    let bytes = std::fs::read(path).expect("package written");
    open(&bytes).unwrap_or_else(|e| panic!("{} does not verify: {e}", path.display()))
}

fn verify_cli(package: &Path, public: &Path) -> Output {
    let at = (ISSUED_AT + 60).to_string();
    crate::support::hotpatch(&[
        "verify",
        path_str(package),
        "--trust",
        path_str(public),
        "--at",
        &at,
    ])
}

pub(crate) fn report_of(package: &VerifiedPackage) -> serde_json::Value {
    serde_json::from_slice(&package.entries["report/release.json"]).expect("report is JSON")
}

pub(crate) fn status_of<'a>(report: &'a serde_json::Value, binary: &str) -> &'a str {
    report["binaries"]
        .as_array()
        .expect("binaries")
        .iter()
        .find(|b| b["name"] == binary)
        .and_then(|b| b["status"].as_str())
        .unwrap_or_else(|| panic!("{binary} is not in the report"))
}

/// The standard arguments of a hotpatch month in series `demo-2027-01` (baseline sequence 1).
pub(crate) fn month_args<'a>(
    base: &'a Path,
    fixed: &'a Path,
    key: &'a Path,
    out: &'a Path,
) -> Vec<&'a str> {
    vec![
        "--release",
        "2027-02",
        "--baseline",
        path_str(base),
        "--fixed",
        path_str(fixed),
        "--key",
        path_str(key),
        "--out",
        path_str(out),
        "--product",
        "demo",
        "--baseline-id",
        "demo-2027-01",
        "--min-sequence",
        "1",
        "--sequence",
        "2",
        "--issued-at",
        "1800000000",
    ]
}

#[test]
fn build_packages_both_formats_and_the_package_verifies() {
    let dir = scratch("roundtrip");
    let key = key_file(&dir);
    let base = tree(&dir.join("base"), &[("bounds_check", "baseline")]);
    let fixed = tree(&dir.join("fixed"), &[("bounds_check", "fixed")]);
    let out = dir.join("2027-02.hpk");
    let output = build(&month_args(&base, &fixed, &key, &out), 0);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bounds_check/app: hotpatched") && stderr.contains("[2/2]"),
        "a progress line per binary: {stderr}"
    );

    let public = dir.join("release.pub");
    std::fs::write(&public, secret_key().public_key().to_text()).expect("write public key");
    let output = verify_cli(&out, &public);
    assert_eq!(
        output.status.code(),
        Some(0),
        "hotpatch verify: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let inspect = crate::support::hotpatch(&["inspect", path_str(&out)]);
    let inspect = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        inspect.contains("bounds_check/app.exe") && inspect.contains("lookup_user"),
        "{inspect}"
    );

    let package = open_file(&out);
    let manifest = &package.manifest;
    assert_eq!(manifest.kind, PackageKind::Hotpatch);
    assert_eq!(
        (manifest.sequence, manifest.min_sequence),
        (2, 1),
        "sequence fields as given"
    );
    assert_eq!(manifest.issued_at, ISSUED_AT);
    assert_eq!(
        manifest.expires_at,
        ISSUED_AT + 90 * 86_400,
        "90 days by default"
    );
    assert_eq!(manifest.key_id, secret_key().key_id());
    let names: Vec<&str> = manifest.targets.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["bounds_check/app", "bounds_check/app.exe"]);
    for (target, file, entry) in [
        (&manifest.targets[0], "app", "payloads/000.bin"),
        (&manifest.targets[1], "app.exe", "payloads/001.bin"),
    ] {
        assert_eq!(target.payload.as_deref(), Some(entry));
        assert_eq!(package.entries[entry].len() as u64, target.payload_len);
        assert!(target.payload_len > 0);
        let sites: Vec<&str> = target.sites.iter().map(|s| s.function.as_str()).collect();
        assert_eq!(sites, ["lookup_user"], "{}", target.name);
        // The target is the baseline build the payload patches, byte for byte.
        let baseline = std::fs::read(base.join("bounds_check").join(file)).expect("baseline");
        let sha256 = match &target.identity {
            hotpatch_package::TargetIdentity::Pe { sha256, .. }
            | hotpatch_package::TargetIdentity::Elf { sha256, .. } => sha256,
        };
        assert_eq!(*sha256, hotpatch_image::sha256_hex(&baseline));
    }

    // The report inside the package is the one beside it.
    let report = report_of(&package);
    assert_eq!(report["schema"], "hotpatch-release/1");
    assert_eq!(report["month"], "hotpatch-month");
    assert_eq!(status_of(&report, "bounds_check/app.exe"), "hotpatched");
    assert_eq!(
        std::fs::read(dir.join("2027-02.release.json")).expect("report beside"),
        package.entries["report/release.json"]
    );
    let markdown = std::fs::read(dir.join("2027-02.release.md")).expect("markdown beside");
    assert_eq!(markdown, package.entries["report/release.md"]);
    let markdown = String::from_utf8(markdown).expect("utf-8");
    assert!(markdown.contains(": hotpatch month"), "{markdown}");
    assert!(
        markdown.contains("| `lookup_user` | replaced | hotpatch-eligible |"),
        "{markdown}"
    );

    // One changed byte in any entry is refused, by name.
    let mut entries = vec![
        ("manifest.json".to_owned(), package.manifest_bytes.clone()),
        (
            "manifest.sig".to_owned(),
            secret_key().sign(&package.manifest_bytes).to_vec(),
        ),
    ];
    entries.extend(package.entries.iter().map(|(n, d)| (n.clone(), d.clone())));
    let names: Vec<&str> = entries.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "manifest.json",
            "manifest.sig",
            "payloads/000.bin",
            "payloads/001.bin",
            "report/binaries/bounds_check/app.exe.html",
            "report/binaries/bounds_check/app.html",
            "report/release.json",
            "report/release.md",
        ]
    );
    open(&stored_zip(&entries)).expect("the entries repacked unchanged still verify");
    for index in 0..entries.len() {
        let mut tampered = entries.clone();
        let middle = tampered[index].1.len() / 2;
        tampered[index].1[middle] ^= 0x01;
        let name = tampered[index].0.clone();
        let error = open(&stored_zip(&tampered)).expect_err("tampered entry");
        if name.starts_with("payloads/") {
            // The operator's view: `hotpatch verify` exits 3 and names the entry.
            let tampered_path = dir.join("tampered.hpk");
            std::fs::write(&tampered_path, stored_zip(&tampered)).expect("write");
            let output = verify_cli(&tampered_path, &public);
            assert_eq!(output.status.code(), Some(3), "{name}");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(stderr.contains(&name), "{stderr}");
        }
        let expected = match name.as_str() {
            "manifest.json" => matches!(
                error,
                Error::BadSignature { .. } | Error::Malformed { .. } | Error::UnknownKey { .. }
            ),
            "manifest.sig" => matches!(error, Error::BadSignature { .. }),
            _ => matches!(&error, Error::EntryHashMismatch { name: n } if *n == name),
        };
        assert!(expected, "{name}: {error}");
    }
}

#[test]
fn two_builds_of_the_same_release_are_byte_identical() {
    let dir = scratch("reproducible");
    let key = key_file(&dir);
    let base = tree(
        &dir.join("base"),
        &[
            ("interpreter_switch", "baseline"),
            ("string_literal", "baseline"),
        ],
    );
    let fixed = tree(
        &dir.join("fixed"),
        &[("interpreter_switch", "fixed"), ("string_literal", "fixed")],
    );
    let first = dir.join("first.hpk");
    let second = dir.join("second.hpk");
    build(&month_args(&base, &fixed, &key, &first), 0);
    build(&month_args(&base, &fixed, &key, &second), 0);
    let first_bytes = std::fs::read(&first).expect("first");
    assert_eq!(first_bytes, std::fs::read(&second).expect("second"));
    assert_eq!(open_file(&first).manifest.targets.len(), 4);

    // SOURCE_DATE_EPOCH stands in for --issued-at.
    let third = dir.join("third.hpk");
    let mut args = month_args(&base, &fixed, &key, &third);
    let at = args.iter().position(|a| *a == "--issued-at").expect("flag");
    args.drain(at..at + 2);
    let output = hotpatch_build(&args, &[("SOURCE_DATE_EPOCH", "1800000000")]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(first_bytes, std::fs::read(&third).expect("third"));
}

/// Baseline (sequence 10), two cumulative hotpatch months, and the next baseline.
#[test]
fn three_month_series_grows_its_sequence_and_supersedes() {
    let dir = scratch("series");
    let key = key_file(&dir);
    let original = tree(
        &dir.join("2027-01"),
        &[("bounds_check", "baseline"), ("string_literal", "baseline")],
    );
    let month1 = tree(
        &dir.join("2027-02"),
        &[("bounds_check", "fixed"), ("string_literal", "baseline")],
    );
    let month2 = tree(
        &dir.join("2027-03"),
        &[("bounds_check", "fixed"), ("string_literal", "fixed")],
    );
    let common = |release: &'static str, base: &Path, fixed: &Path, out: &Path| {
        vec![
            "--release".to_owned(),
            release.to_owned(),
            "--baseline".to_owned(),
            path_str(base).to_owned(),
            "--fixed".to_owned(),
            path_str(fixed).to_owned(),
            "--key".to_owned(),
            path_str(&key).to_owned(),
            "--out".to_owned(),
            path_str(out).to_owned(),
            "--product".to_owned(),
            "demo".to_owned(),
            "--issued-at".to_owned(),
            ISSUED_AT.to_string(),
        ]
    };
    let run = |mut args: Vec<String>, extra: &[&str], code: i32| {
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        build(&args, code)
    };

    let baseline_pkg = dir.join("2027-01.hpk");
    run(
        common("2027-01", &original, &original, &baseline_pkg),
        &["--kind", "baseline", "--sequence", "10"],
        0,
    );
    let month1_pkg = dir.join("2027-02.hpk");
    let baseline_ref = path_str(&baseline_pkg).to_owned();
    run(
        common("2027-02", &original, &month1, &month1_pkg),
        &["--baseline-package", &baseline_ref, "--sequence", "11"],
        0,
    );
    let month2_pkg = dir.join("2027-03.hpk");
    run(
        common("2027-03", &original, &month2, &month2_pkg),
        &["--baseline-package", &baseline_ref, "--sequence", "12"],
        0,
    );
    let next_pkg = dir.join("2027-04.hpk");
    run(
        common("2027-04", &original, &month2, &next_pkg),
        &["--kind", "baseline", "--sequence", "13"],
        0,
    );
    // A hotpatch must be above the baseline it follows.
    run(
        common("2027-02", &original, &month1, &dir.join("bad.hpk")),
        &["--baseline-package", &baseline_ref, "--sequence", "10"],
        2,
    );

    let baseline = open_file(&baseline_pkg).manifest;
    let first = open_file(&month1_pkg);
    let second = open_file(&month2_pkg);
    let next = open_file(&next_pkg).manifest;
    assert_eq!(baseline.kind, PackageKind::Baseline);
    assert_eq!((baseline.sequence, baseline.min_sequence), (10, 10));
    assert_eq!(baseline.baseline_id, "demo-2027-01");
    assert!(baseline.targets.is_empty(), "a baseline carries no payload");
    for month in [&first.manifest, &second.manifest] {
        assert_eq!(month.kind, PackageKind::Hotpatch);
        assert_eq!(month.baseline_id, "demo-2027-01", "read from the baseline");
        assert_eq!(
            month.min_sequence, 10,
            "follows the baseline or any later month"
        );
    }
    assert_eq!(first.manifest.sequence, 11);
    assert_eq!(second.manifest.sequence, 12);
    assert_eq!(next.kind, PackageKind::Baseline);
    assert_eq!((next.sequence, next.min_sequence), (13, 13));
    assert_eq!(next.baseline_id, "demo-2027-04");

    // Cumulative: month 2 carries month 1's fix unchanged, and the new one.
    let names = |m: &hotpatch_package::Manifest| -> Vec<String> {
        m.targets.iter().map(|t| t.name.clone()).collect()
    };
    assert_eq!(
        names(&first.manifest),
        ["bounds_check/app", "bounds_check/app.exe"]
    );
    assert_eq!(
        names(&second.manifest),
        [
            "bounds_check/app",
            "bounds_check/app.exe",
            "string_literal/app",
            "string_literal/app.exe"
        ]
    );
    for index in 0..2 {
        let (a, b) = (
            &first.manifest.targets[index],
            &second.manifest.targets[index],
        );
        assert_eq!((&a.sites, &a.relocations), (&b.sites, &b.relocations));
        assert_eq!(first.payload(a), second.payload(b));
    }

    // Supersede: the applier's sequence rule over the series.
    assert!(check_sequence(&baseline, None).is_ok());
    assert!(check_sequence(&first.manifest, Some(10)).is_ok());
    assert!(check_sequence(&second.manifest, Some(11)).is_ok());
    assert!(
        check_sequence(&second.manifest, Some(10)).is_ok(),
        "month 2 supersedes month 1: it may follow the baseline directly"
    );
    assert!(matches!(
        check_sequence(&first.manifest, Some(12)),
        Err(Error::Downgrade { .. })
    ));
    assert!(matches!(
        check_sequence(&second.manifest, None),
        Err(Error::SequenceGap { .. })
    ));
    assert!(check_sequence(&next, Some(12)).is_ok());
    assert!(matches!(
        check_sequence(&second.manifest, Some(13)),
        Err(Error::Downgrade { .. })
    ));
}

#[test]
fn a_pair_without_code_change_gives_a_package_without_payload() {
    let dir = scratch("identical");
    let key = key_file(&dir);
    // address_shift adds a function that nothing calls: new code no patch site leads to.
    let base = tree(
        &dir.join("base"),
        &[("identical", "baseline"), ("address_shift", "baseline")],
    );
    let fixed = tree(
        &dir.join("fixed"),
        &[("identical", "fixed"), ("address_shift", "fixed")],
    );
    let out = dir.join("quiet.hpk");
    let output = build(&month_args(&base, &fixed, &key, &out), 0);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("nothing to patch"), "{stdout}");
    let package = open_file(&out);
    assert!(package.manifest.targets.is_empty());
    let entries: Vec<&str> = package.entries.keys().map(String::as_str).collect();
    assert!(
        entries.iter().all(|e| e.starts_with("report/")),
        "no payload: {entries:?}"
    );
    assert!(entries.contains(&"report/release.json") && entries.contains(&"report/release.md"));
    let report = report_of(&package);
    for binary in ["address_shift/app", "address_shift/app.exe"] {
        assert_eq!(status_of(&report, binary), "unchanged");
    }
    assert_eq!(status_of(&report, "identical/app"), "unchanged");
    assert_eq!(status_of(&report, "identical/app.exe"), "unchanged");
    assert_eq!(report["payload_bytes"], 0);
}

#[test]
fn a_reboot_required_binary_makes_a_baseline_month_unless_left_out() {
    let dir = scratch("tls");
    let key = key_file(&dir);
    let base = tree(
        &dir.join("base"),
        &[("tls", "baseline"), ("bounds_check", "baseline")],
    );
    let fixed = tree(
        &dir.join("fixed"),
        &[("tls", "fixed"), ("bounds_check", "fixed")],
    );
    let out = dir.join("tls.hpk");
    build(&month_args(&base, &fixed, &key, &out), 10);
    let package = open_file(&out);
    let names: Vec<&str> = package
        .manifest
        .targets
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(names, ["bounds_check/app", "bounds_check/app.exe"]);
    let report = report_of(&package);
    assert_eq!(report["month"], "baseline-needed");
    for binary in ["tls/app", "tls/app.exe"] {
        assert_eq!(status_of(&report, binary), "reboot-required");
    }
    let markdown = String::from_utf8(package.entries["report/release.md"].clone()).expect("utf-8");
    assert!(markdown.contains(": baseline needed"), "{markdown}");
    assert!(
        markdown.contains("| `tls/app` | reboot-required | - |") && markdown.contains("HP0201"),
        "the report names the rule: {markdown}"
    );

    let audit = String::from_utf8(package.entries["report/binaries/tls/app.html"].clone())
        .expect("the HTML audit report of the reboot-required binary");
    assert!(audit.contains("HP0201"), "{audit}");

    // The policy may leave such binaries out: the month stays a hotpatch month.
    let policy = dir.join("release.toml");
    std::fs::write(&policy, "[release]\nleave_out_reboot_required = true\n").expect("policy");
    let mut args = month_args(&base, &fixed, &key, &out);
    args.extend(["--policy", path_str(&policy), "--json"]);
    let output = build(&args, 0);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("--json");
    assert_eq!(report["month"], "hotpatch-month");
    assert_eq!(
        report["left_out"],
        serde_json::json!(["tls/app", "tls/app.exe"])
    );
}

#[test]
fn a_binary_in_one_tree_only_needs_a_baseline() {
    let dir = scratch("added");
    let key = key_file(&dir);
    let base = tree(&dir.join("base"), &[("bounds_check", "baseline")]);
    let fixed = tree(
        &dir.join("fixed"),
        &[("bounds_check", "fixed"), ("identical", "fixed")],
    );
    let out = dir.join("added.hpk");
    let output = build(&month_args(&base, &fixed, &key, &out), 10);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("added            identical/app.exe"),
        "{stdout}"
    );
    let report = report_of(&open_file(&out));
    assert_eq!(status_of(&report, "identical/app"), "added");
    let removed = build(&month_args(&fixed, &base, &key, &out), 10);
    assert!(String::from_utf8_lossy(&removed.stdout).contains("removed          identical/app"));
}

#[test]
fn build_refuses_a_key_others_can_read_and_bad_arguments() {
    let dir = scratch("refusals");
    let key = key_file(&dir);
    let base = tree(&dir.join("base"), &[("identical", "baseline")]);
    let out = dir.join("x.hpk");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let output = build(&month_args(&base, &base, &key, &out), 2);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("readable by group or others"), "{stderr}");
    assert!(!out.exists(), "nothing is written");

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let mut args = month_args(&base, &base, &key, &out);
    args[1] = "2027-13";
    build(&args, 2);
    // A hotpatch without its series.
    let args: Vec<&str> = month_args(&base, &base, &key, &out)
        .into_iter()
        .filter(|a| !["--min-sequence", "1"].contains(a))
        .collect();
    let output = build(&args, 2);
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--min-sequence"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!out.exists());
}

/// A zip of stored entries in the order given: the container the package reader accepts, so a
/// test can change one entry's bytes and nothing else.
fn stored_zip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    fn u16le(out: &mut Vec<u8>, v: u16) {
        out.extend_from_slice(&v.to_le_bytes());
    }
    fn u32le(out: &mut Vec<u8>, v: u32) {
        out.extend_from_slice(&v.to_le_bytes());
    }
    const DATE_1980_01_01: u16 = (1 << 5) | 1;
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let offset = u32::try_from(out.len()).expect("small");
        let len = u32::try_from(data.len()).expect("small");
        let name_len = u16::try_from(name.len()).expect("short");
        let crc = crc32(data);
        u32le(&mut out, 0x0403_4b50);
        for v in [20, 1 << 11, 0, 0, DATE_1980_01_01] {
            u16le(&mut out, v);
        }
        for v in [crc, len, len] {
            u32le(&mut out, v);
        }
        u16le(&mut out, name_len);
        u16le(&mut out, 0);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);

        u32le(&mut central, 0x0201_4b50);
        for v in [(3 << 8) | 20, 20, 1 << 11, 0, 0, DATE_1980_01_01] {
            u16le(&mut central, v);
        }
        for v in [crc, len, len] {
            u32le(&mut central, v);
        }
        for v in [name_len, 0, 0, 0, 0] {
            u16le(&mut central, v);
        }
        u32le(&mut central, 0o100_644 << 16);
        u32le(&mut central, offset);
        central.extend_from_slice(name.as_bytes());
    }
    let central_offset = u32::try_from(out.len()).expect("small");
    let central_len = u32::try_from(central.len()).expect("small");
    out.extend_from_slice(&central);
    let count = u16::try_from(entries.len()).expect("few");
    u32le(&mut out, 0x0605_4b50);
    for v in [0, 0, count, count] {
        u16le(&mut out, v);
    }
    u32le(&mut out, central_len);
    u32le(&mut out, central_offset);
    u16le(&mut out, 0);
    out
}

/// CRC-32 (IEEE, reflected), as zip records it.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
