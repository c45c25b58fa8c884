//! End to end with the real build side: the committed `live_service` fixture (a multi-threaded
//! program that calls `accept_length` millions of times a second) is diffed, assessed and
//! lifted from its baseline and fixed builds, packaged and signed, and `hotpatch-apply` patches
//! the running baseline process with it: the same PID then returns the fixed results, no call
//! sees a wrong result, and rollback brings the old results back. This is the payload that the
//! lift produced, relocated by the applier against the real load address.

mod support;

use hotpatch_package::{Manifest, PackageKind, Target, write_package};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::package::{self as packages, Fix, Signer, now};
use support::{Program, privileged, temp_dir};

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(path)
}

/// Diff, policy and lift of the live_service ELF pair, packaged as month `sequence`.
fn lifted_package(signer: &Signer, baseline: &Path, fixed: &Path) -> Vec<u8> {
    let baseline_bytes = std::fs::read(baseline).unwrap();
    let fixed_bytes = std::fs::read(fixed).unwrap();
    let base = hotpatch_image::load(&baseline_bytes, None).expect("baseline loads");
    let new = hotpatch_image::load(&fixed_bytes, None).expect("fixed loads");
    let diff = hotpatch_diff::diff(&base.image, &new.image, hotpatch_diff::Config::default());
    let changed: Vec<&str> = diff.changed.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(changed, ["accept_length"]);
    let subject = hotpatch_policy::Subject {
        binary_names: vec!["live_service"],
        baseline: &base.image,
        fixed: &new.image,
        diff: &diff,
        diagnostics: &[],
    };
    let assessment = hotpatch_policy::assess(&subject, &hotpatch_policy::Policy::default());
    assert_eq!(
        assessment.verdict,
        hotpatch_policy::Verdict::HotpatchEligible
    );
    let lifted = hotpatch_lift::lift(&base.image, &new.image, &diff).expect("lifts");
    assert_eq!(lifted.sites.len(), 1);
    // accept_length increments `rejected`: the payload must reach the baseline's storage.
    let rejected = base
        .image
        .data_symbols
        .iter()
        .find(|d| d.name == "rejected")
        .expect("baseline has rejected");
    assert!(
        lifted.relocations.iter().any(|r| r.target
            == hotpatch_package::RelocationTarget::Baseline { rva: rejected.rva }),
        "{:?}",
        lifted.relocations
    );
    let entry = "payloads/000.bin".to_owned();
    let target = Target {
        name: "live_service".into(),
        identity: lifted.identity.clone(),
        image_base_rva: lifted.image_base_rva,
        payload: Some(entry.clone()),
        payload_len: lifted.payload.len() as u64,
        sites: lifted.sites.clone(),
        relocations: lifted.relocations.clone(),
        unwind: lifted.unwind,
    };
    let manifest = Manifest {
        format: hotpatch_package::FORMAT_VERSION,
        product: "demo".into(),
        channel: "stable".into(),
        release: "2026-11".into(),
        kind: PackageKind::Hotpatch,
        baseline_id: "demo-2026-10".into(),
        sequence: 2,
        min_sequence: 1,
        issued_at: now() - 60,
        expires_at: now() + 86_400,
        key_id: String::new(),
        entries: Vec::new(),
        targets: vec![target],
    };
    write_package(
        manifest,
        BTreeMap::from([(entry, lifted.payload.clone())]),
        &signer.secret,
    )
    .expect("package writes")
}

fn applier(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_hotpatch-apply"))
        .args(args)
        .output()
        .expect("hotpatch-apply runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("$ hotpatch-apply {}\n{text}", args.join(" "));
    assert!(output.status.success(), "{text}");
    text
}

#[test]
fn lifted_payload_patches_the_running_fixture_and_rolls_back() {
    if !privileged() {
        return;
    }
    let dir = temp_dir("lifted");
    let signer = Signer::new(&dir);
    // Run a copy, so the test owns the file the process maps.
    let binary = dir.join("live_service");
    std::fs::copy(fixture("live_service/elf/baseline"), &binary).unwrap();
    let package = lifted_package(&signer, &binary, &fixture("live_service/elf/fixed"));
    let package_path = dir.join("2026-11.hotpatch");
    std::fs::write(&package_path, package).unwrap();
    let state = dir.join("state");

    let program = Program::start(&binary, &["60"]);
    let before = program.wait_for("old results", |c| c.old > 1000);
    assert_eq!(before.new, 0, "the baseline accepts a length of 64");
    let pid = program.pid().to_string();
    // The series starts with the baseline the process runs (sequence 1, no payload).
    let baseline_package = packages::package(
        &signer,
        PackageKind::Baseline,
        1,
        1,
        now() + 86_400,
        vec![packages::target(&binary, "live_service", Fix::None)],
    );
    let baseline_path = dir.join("2026-10.baseline");
    std::fs::write(&baseline_path, baseline_package).unwrap();
    applier(&[
        "apply",
        baseline_path.to_str().unwrap(),
        "--trust",
        signer.trust_file.to_str().unwrap(),
        "--pid",
        &pid,
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    let out = applier(&[
        "apply",
        package_path.to_str().unwrap(),
        "--trust",
        signer.trust_file.to_str().unwrap(),
        "--pid",
        &pid,
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert!(out.contains("applied"), "{out}");
    let at_apply = program.latest();
    let after = program.wait_for("fixed results in the same process", |c| {
        c.new > at_apply.new + 1000 && c.calls > at_apply.calls + 1_000_000
    });
    let settled = program.latest();
    let old_after = settled.old;
    let later = program.wait_for("no more old results", |c| {
        c.calls > settled.calls + 1_000_000
    });
    assert_eq!(
        later.old, old_after,
        "the old code no longer runs after the apply"
    );
    assert_eq!(after.wrong, 0, "no call saw a wrong result");
    println!(
        "calls before apply {}, by the check after it {}; old {} new {}",
        before.calls, later.calls, later.old, later.new
    );

    applier(&[
        "rollback",
        "--pid",
        &pid,
        "--to",
        "baseline",
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    let at_rollback = program.latest();
    let back = program.wait_for("old results again", |c| c.old > at_rollback.old + 1000);
    assert_eq!(back.wrong, 0);
    let _ = std::fs::remove_dir_all(&dir);
}
