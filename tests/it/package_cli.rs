//! `hotpatch keygen`, `verify`, `trust` and `inspect` on packages, as an operator runs them:
//! keys written with the right modes, a package built through the library verifies (exit 0),
//! tampered, foreign-key and expired packages are refused by name (exit 3), and a secret key
//! that others can read is refused.

use crate::support::{hotpatch, path_str, root};
use hotpatch_package::{
    FORMAT_VERSION, Manifest, PackageKind, PatchSite, Redirect, SecretKey, Target, TargetIdentity,
    write_package,
};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const ISSUED_AT: u64 = 1_800_000_000;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hotpatch-it-{}-pkg-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn keygen(dir: &Path) -> String {
    let output = hotpatch(&["keygen", "--out", path_str(dir)]);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let key_id = stdout
        .lines()
        .find_map(|line| line.strip_prefix("key id "))
        .expect("keygen prints the key id")
        .to_owned();
    assert_eq!(key_id.len(), 32);
    key_id
}

/// A package whose payload is real code: the text of the fixed build of a fixture.
fn build_package(secret_key: &Path, out: &Path) -> Manifest {
    let fixed = root().join("fixtures/bounds_check/elf/fixed");
    let binary = std::fs::read(&fixed).expect("fixture is committed");
    let payload = binary[..binary.len().min(4096)].to_vec();
    let key = SecretKey::from_text(&std::fs::read_to_string(secret_key).expect("key file"))
        .expect("keygen's key parses");
    let manifest = Manifest {
        format: FORMAT_VERSION,
        product: "demo".to_owned(),
        channel: "stable".to_owned(),
        release: "2027-02".to_owned(),
        kind: PackageKind::Hotpatch,
        baseline_id: "demo-2027-01".to_owned(),
        sequence: 2,
        min_sequence: 1,
        issued_at: ISSUED_AT,
        expires_at: ISSUED_AT + 90 * 86_400,
        key_id: String::new(),
        entries: Vec::new(),
        targets: vec![Target {
            name: "bin/bounds_check".to_owned(),
            identity: TargetIdentity::Elf {
                build_id: None,
                sha256: "00".repeat(32),
            },
            image_base_rva: 0,
            payload: Some("payloads/000.bin".to_owned()),
            payload_len: payload.len() as u64,
            sites: vec![PatchSite {
                function: "parse".to_owned(),
                baseline_rva: 0x1140,
                baseline_size: 0x30,
                payload_offset: 0x40,
                payload_size: 0x30,
                redirect: Redirect::Entry {
                    original: vec![0xF3, 0x0F, 0x1E, 0xFA, 0x55],
                },
            }],
            relocations: Vec::new(),
            unwind: None,
        }],
    };
    let files = BTreeMap::from([
        ("payloads/000.bin".to_owned(), payload),
        ("report/report.md".to_owned(), b"# bounds_check\n".to_vec()),
    ]);
    let bytes = write_package(manifest.clone(), files, &key).expect("a valid package");
    std::fs::write(out, bytes).expect("write package");
    manifest
}

fn verify(package: &Path, trust: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let mut args = vec!["verify", path_str(package), "--trust", path_str(trust)];
    args.extend_from_slice(extra);
    let output = hotpatch(&args);
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("exists")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn keygen_then_verify_then_refuse_tampered_foreign_and_expired() {
    let dir = scratch("verify");
    let key_id = keygen(&dir);
    let secret = dir.join("hotpatch.key");
    let public = dir.join("hotpatch.pub");
    assert_eq!(mode(&secret), 0o600);
    assert_eq!(mode(&public) & 0o077, 0o044);
    assert!(
        std::fs::read_to_string(&public)
            .expect("public key")
            .starts_with("hotpatch-public-key-v1 ")
    );

    let package = dir.join("demo.hpkg");
    build_package(&secret, &package);
    let at = (ISSUED_AT + 60).to_string();
    let (code, stdout, stderr) = verify(&package, &public, &["--at", &at]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("verified: demo stable 2027-02"), "{stdout}");
    assert!(stdout.contains(&key_id), "{stdout}");

    // Expired, and not yet valid.
    let late = (ISSUED_AT + 90 * 86_400).to_string();
    let (code, _, stderr) = verify(&package, &public, &["--at", &late]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("verification refused") && stderr.contains("expired"),
        "{stderr}"
    );
    let early = (ISSUED_AT - 3600).to_string();
    let (code, _, stderr) = verify(&package, &public, &["--at", &early]);
    assert_eq!(code, Some(3));
    assert!(stderr.contains("not valid before"), "{stderr}");

    // One byte flipped in the file, in the payload's compressed data.
    let bytes = std::fs::read(&package).expect("package");
    let name = b"payloads/000.bin";
    let at_name = bytes
        .windows(name.len())
        .position(|w| w == name)
        .expect("the local header names the payload");
    let mut tampered = bytes.clone();
    tampered[at_name + name.len() + 100] ^= 0x01;
    let tampered_path = dir.join("tampered.hpkg");
    std::fs::write(&tampered_path, &tampered).expect("write");
    let (code, stdout, stderr) = verify(&tampered_path, &public, &["--at", &at]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.starts_with("error: verification refused: ") && stderr.contains("tampered.hpkg"),
        "{stderr}"
    );

    // Signed by a key the verifier does not trust.
    let other_dir = scratch("verify-other");
    let other_id = keygen(&other_dir);
    let foreign = dir.join("foreign.hpkg");
    build_package(&other_dir.join("hotpatch.key"), &foreign);
    let (code, _, stderr) = verify(&foreign, &public, &["--at", &at]);
    assert_eq!(code, Some(3));
    assert!(
        stderr.contains(&format!("key {other_id} is not trusted")),
        "{stderr}"
    );

    // Not a package at all: a usage/input error, not a verification verdict... but a truncated
    // package is a refused package.
    let truncated = dir.join("truncated.hpkg");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    let (code, _, stderr) = verify(&truncated, &public, &["--at", &at]);
    assert_eq!(code, Some(3));
    assert!(stderr.contains("archive cannot be read"), "{stderr}");
    let (code, _, _) = verify(&dir.join("missing.hpkg"), &public, &[]);
    assert_eq!(code, Some(2));

    // keygen never overwrites a key.
    let output = hotpatch(&["keygen", "--out", path_str(&dir)]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        std::fs::read_to_string(&public).expect("public key"),
        std::fs::read_to_string(dir.join("hotpatch.pub")).expect("unchanged")
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other_dir);
}

#[test]
fn inspect_shows_a_package_manifest_unverified() {
    let dir = scratch("inspect");
    keygen(&dir);
    let package = dir.join("demo.hpkg");
    build_package(&dir.join("hotpatch.key"), &package);
    let output = hotpatch(&["inspect", path_str(&package)]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("hotpatch package, format 1"), "{stdout}");
    assert!(stdout.contains("signature not checked"), "{stdout}");
    assert!(
        stdout.contains("demo / stable, release 2027-02"),
        "{stdout}"
    );
    assert!(stdout.contains("2027-01-15T08:00:00Z"), "{stdout}");
    assert!(stdout.contains("parse -> payload +0x40"), "{stdout}");

    let output = hotpatch(&["inspect", path_str(&package), "--json"]);
    assert_eq!(output.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(json["format"], 1);
    assert_eq!(json["kind"], "hotpatch");
    assert_eq!(json["targets"][0]["sites"][0]["redirect"]["kind"], "entry");
    assert_eq!(
        json["targets"][0]["sites"][0]["redirect"]["original"],
        "f30f1efa55"
    );
    assert_eq!(json["entries"].as_array().expect("entries").len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn trust_file_rotation_and_secret_key_mode() {
    let dir = scratch("trust");
    let first_id = keygen(&dir.join("first"));
    let second_id = keygen(&dir.join("second"));
    let v1 = dir.join("trust.v1.json");
    let output = hotpatch(&[
        "trust",
        "init",
        "--key",
        path_str(&dir.join("first/hotpatch.pub")),
        "--out",
        path_str(&v1),
    ]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // A secret key readable by others is refused before it signs anything.
    let first_key = dir.join("first/hotpatch.key");
    std::fs::set_permissions(&first_key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let v2 = dir.join("trust.v2.json");
    let second_pub = dir.join("second/hotpatch.pub");
    let rotate = [
        "trust",
        "rotate",
        "--from",
        path_str(&v1),
        "--sign-with",
        path_str(&first_key),
        "--add",
        path_str(&second_pub),
        "--retire",
        &first_id,
        "--out",
        path_str(&v2),
    ];
    let output = hotpatch(&rotate);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("is readable by group or others (mode 644)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: restrict it to its owner"),
        "{stderr}"
    );
    assert!(!v2.exists());

    std::fs::set_permissions(&first_key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let output = hotpatch(&rotate);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let v2_text = std::fs::read_to_string(&v2).expect("v2");
    assert!(
        v2_text.contains(&format!("hotpatch-trust-signature-v1 {first_id} ")),
        "{v2_text}"
    );

    // Under v2, a package by the retired first key is refused; one by the second verifies.
    let at = (ISSUED_AT + 60).to_string();
    let by_first = dir.join("first.hpkg");
    build_package(&first_key, &by_first);
    let (code, _, stderr) = verify(&by_first, &v2, &["--at", &at]);
    assert_eq!(code, Some(3));
    assert!(
        stderr.contains(&format!("key {first_id} is retired")),
        "{stderr}"
    );
    let by_second = dir.join("second.hpkg");
    build_package(&dir.join("second/hotpatch.key"), &by_second);
    let (code, stdout, stderr) = verify(&by_second, &v2, &["--at", &at]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains(&second_id));
    let _ = std::fs::remove_dir_all(&dir);
}
