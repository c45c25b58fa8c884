//! The named attack suite (issue 12): each test hands the real `hotpatch-apply` binary one
//! hostile package, trust file, state directory or process, against a real running target,
//! and asserts the specific refusal (exit code and error kind from `--json`) and that nothing
//! changed: the target's `/proc/PID/maps`, the bytes of the functions a package would patch,
//! every file under the test directory (state directory included), and the results the
//! program computes. docs/security.md lists each attack with what defends it.
//!
//! They need root (ptrace, /proc/PID/mem, chown, running the applier as another user) and gcc;
//! under CI a missing privilege or tool fails them.

mod support;

use hotpatch_package::{PackageKind, TrustFile};
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use support::package::{self, Fix, RawEntry, Signer, entries, resign, stored_zip, zip};
use support::scene::{Run, Scene, applier, path};

/// Exit codes (docs/apply.md).
const USAGE: i32 = 2;
const VERIFICATION: i32 = 3;
const REFUSED: i32 = 4;

const PAYLOAD: &str = "payloads/bin_target.bin";

/// The scene and its month-1 package, or `None` when the test cannot run here.
fn scene(name: &str) -> Option<(Scene, Vec<u8>)> {
    let scene = Scene::start(name, &["2"])?;
    let month1 = scene.month1();
    Some((scene, month1))
}

/// Applies `bytes` (saved as `name`) with the scene's trust.
fn apply_bytes(scene: &Scene, name: &str, bytes: &[u8]) -> Run {
    scene.apply(&scene.save(name, bytes))
}

/// Saves `bytes`, then asserts that applying them is refused with `code` and `kind` and
/// changes nothing.
fn refused(scene: &Scene, name: &str, bytes: &[u8], code: i32, kind: &str) {
    let file = scene.save(name, bytes);
    scene.assert_refused(code, kind, || scene.apply(&file));
}

/// The manifest's first target.
fn target(manifest: &mut Value) -> &mut Value {
    &mut manifest["targets"][0]
}

#[test]
fn unknown_key() {
    let Some((scene, _)) = scene("attack-unknown-key") else {
        return;
    };
    let stranger = Signer::new(&support::temp_dir("attack-unknown-key-stranger"));
    let foreign = package::package(
        &stranger,
        PackageKind::Hotpatch,
        2,
        1,
        support::scene::FAR_FUTURE,
        vec![package::target(
            &scene.binary,
            "bin/target",
            Fix::TailCallHelper,
        )],
    );
    refused(
        &scene,
        "foreign.hpkg",
        &foreign,
        VERIFICATION,
        "unknown-key",
    );
}

#[test]
fn bad_signature() {
    let Some((scene, month1)) = scene("attack-bad-signature") else {
        return;
    };
    let flipped = package::replace_entry(&month1, "manifest.sig", |sig| sig[10] ^= 1);
    refused(
        &scene,
        "flipped.hpkg",
        &flipped,
        VERIFICATION,
        "bad-signature",
    );
}

#[test]
fn signature_over_other_bytes() {
    let Some((scene, month1)) = scene("attack-other-bytes") else {
        return;
    };
    // A real signature by the trusted key, over something else than this manifest.
    let other = scene.signer.secret.sign(b"an innocent document").to_vec();
    let swapped = package::replace_entry(&month1, "manifest.sig", |sig| *sig = other.clone());
    refused(
        &scene,
        "other.hpkg",
        &swapped,
        VERIFICATION,
        "bad-signature",
    );
}

#[test]
fn manifest_edited_after_signing() {
    let Some((scene, month1)) = scene("attack-edited") else {
        return;
    };
    let edited = package::replace_entry(&month1, "manifest.json", |manifest| {
        let text = String::from_utf8(manifest.clone()).unwrap();
        let sequence = text.replacen("\"sequence\": 2", "\"sequence\": 9", 1);
        assert_ne!(sequence, text);
        *manifest = sequence.into_bytes();
    });
    refused(
        &scene,
        "edited.hpkg",
        &edited,
        VERIFICATION,
        "bad-signature",
    );
}

#[test]
fn payload_swapped() {
    let Some((scene, month1)) = scene("attack-payload-swapped") else {
        return;
    };
    // Same length, other code: `int3` where the jump was.
    let swapped = package::replace_entry(&month1, PAYLOAD, |payload| payload[0] = 0xcc);
    refused(
        &scene,
        "swapped.hpkg",
        &swapped,
        VERIFICATION,
        "entry-hash-mismatch",
    );
}

#[test]
fn right_hash_with_the_wrong_length() {
    let Some((scene, month1)) = scene("attack-wrong-length") else {
        return;
    };
    // The manifest (signed) pins the payload's true SHA-256 but a length 4 bytes longer: a
    // reader that trusted the length to size its buffers, or the hash alone, would be misled.
    let longer = resign(&month1, &scene.signer, |manifest| {
        let entry = manifest["entries"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|e| e["name"] == PAYLOAD)
            .unwrap();
        entry["len"] = json!(entry["len"].as_u64().unwrap() + 4);
    });
    refused(
        &scene,
        "longer.hpkg",
        &longer,
        VERIFICATION,
        "entry-length-mismatch",
    );
}

#[test]
fn extra_file_not_in_the_manifest() {
    let Some((scene, month1)) = scene("attack-extra-file") else {
        return;
    };
    let mut all = entries(&month1);
    all.push(("payloads/extra.bin".to_owned(), vec![0xcc; 16]));
    refused(
        &scene,
        "extra.hpkg",
        &stored_zip(&all),
        VERIFICATION,
        "unlisted-entry",
    );
}

#[test]
fn path_traversal_and_absolute_entry_names() {
    let Some((scene, month1)) = scene("attack-traversal") else {
        return;
    };
    let escape = scene
        .dir
        .parent()
        .unwrap()
        .join(format!("escaped-{}", std::process::id()));
    let names = [
        format!("../../../{}", escape.strip_prefix("/").unwrap().display()),
        escape.display().to_string(),
        "payloads/../../escaped".to_owned(),
        "payloads\\..\\escaped".to_owned(),
    ];
    for (index, name) in names.iter().enumerate() {
        let mut all = entries(&month1);
        all.push((name.clone(), b"#!/bin/sh\necho owned\n".to_vec()));
        refused(
            &scene,
            &format!("traversal-{index}.hpkg"),
            &stored_zip(&all),
            VERIFICATION,
            "unsafe-entry-name",
        );
        assert!(!escape.exists(), "{name} wrote {}", escape.display());
    }
}

#[test]
fn symlink_entry() {
    let Some((scene, month1)) = scene("attack-symlink") else {
        return;
    };
    let mut raw: Vec<RawEntry> = entries(&month1)
        .iter()
        .map(|(name, data)| RawEntry::stored(name, data))
        .collect();
    // The payload entry turned into a link to a file the attacker wants read or replaced.
    let payload = raw.iter_mut().find(|e| e.name == PAYLOAD).unwrap();
    *payload = RawEntry::stored(PAYLOAD, b"/etc/shadow");
    payload.mode = 0o120_777;
    refused(
        &scene,
        "symlink.hpkg",
        &zip(&raw),
        VERIFICATION,
        "symlink-entry",
    );
}

#[test]
fn decompression_bomb_and_oversized_entries() {
    let Some((scene, month1)) = scene("attack-bomb") else {
        return;
    };
    let base: Vec<RawEntry> = entries(&month1)
        .iter()
        .map(|(name, data)| RawEntry::stored(name, data))
        .collect();
    // 256 MiB of zeros deflate to about 256 KiB.
    let zeros = vec![0u8; 256 << 20];
    let bomb = RawEntry::deflated("report/bomb", &zeros);
    drop(zeros);
    assert!(bomb.stored.len() < 1 << 20);
    // Declared honestly: above the 64 MiB entry cap, refused before inflating.
    let mut honest = base.clone();
    let mut declared = bomb.clone();
    declared.size = 256 << 20;
    honest.push(declared);
    refused(
        &scene,
        "bomb-declared.hpkg",
        &zip(&honest),
        VERIFICATION,
        "too-large",
    );
    // Declared as 1 KiB: the inflater stops one byte past the declaration.
    let mut lying = base.clone();
    let mut small = bomb;
    small.size = 1024;
    lying.push(small);
    refused(
        &scene,
        "bomb-lying.hpkg",
        &zip(&lying),
        VERIFICATION,
        "bad-archive",
    );
    // A stored entry that says it is 3 GiB.
    let mut oversized = base;
    let mut huge = RawEntry::stored("report/huge", &[0; 16]);
    huge.size = 3 << 30;
    oversized.push(huge);
    refused(
        &scene,
        "huge.hpkg",
        &zip(&oversized),
        VERIFICATION,
        "too-large",
    );
}

#[test]
fn duplicate_entries() {
    let Some((scene, month1)) = scene("attack-duplicate") else {
        return;
    };
    let mut all = entries(&month1);
    // The same name twice: a reader that takes the last copy would run unverified code.
    all.push((PAYLOAD.to_owned(), vec![0xcc; 16]));
    refused(
        &scene,
        "duplicate.hpkg",
        &stored_zip(&all),
        VERIFICATION,
        "duplicate-entry",
    );
    let mut manifests = entries(&month1);
    manifests.insert(0, manifests[0].clone());
    refused(
        &scene,
        "two-manifests.hpkg",
        &stored_zip(&manifests),
        VERIFICATION,
        "duplicate-entry",
    );
}

#[test]
fn truncated_archive() {
    let Some((scene, month1)) = scene("attack-truncated") else {
        return;
    };
    for len in [0, 21, month1.len() / 2, month1.len() - 1] {
        refused(
            &scene,
            &format!("truncated-{len}.hpkg"),
            &month1[..len],
            VERIFICATION,
            "bad-archive",
        );
    }
}

/// A month-1 package with the validity window `[issued_at, expires_at)`.
fn dated(scene: &Scene, issued_at: u64, expires_at: u64) -> Vec<u8> {
    resign(&scene.month1(), &scene.signer, |manifest| {
        manifest["issued_at"] = json!(issued_at);
        manifest["expires_at"] = json!(expires_at);
    })
}

#[test]
fn expired() {
    let Some((scene, _)) = scene("attack-expired") else {
        return;
    };
    let now = package::now();
    refused(
        &scene,
        "expired.hpkg",
        &dated(&scene, now - 86_400, now - 1),
        VERIFICATION,
        "expired",
    );
}

#[test]
fn not_yet_valid() {
    let Some((scene, _)) = scene("attack-not-yet-valid") else {
        return;
    };
    let now = package::now();
    let later = dated(&scene, now + 86_400, now + 2 * 86_400);
    refused(&scene, "later.hpkg", &later, VERIFICATION, "not-yet-valid");
}

#[test]
fn replay_of_the_current_sequence() {
    let Some((scene, month1)) = scene("attack-replay") else {
        return;
    };
    let run = apply_bytes(&scene, "month1.hpkg", &month1);
    assert_eq!(run.code, Some(0), "{run:?}");
    // Another package with the installed sequence 2: refused before any process is touched.
    let other = scene.package(PackageKind::Hotpatch, 2, Fix::Multiply);
    refused(&scene, "replay.hpkg", &other, VERIFICATION, "replay");
}

#[test]
fn downgrade() {
    let Some((scene, month1)) = scene("attack-downgrade") else {
        return;
    };
    let month2 = scene.package(PackageKind::Hotpatch, 3, Fix::Multiply);
    assert_eq!(apply_bytes(&scene, "month2.hpkg", &month2).code, Some(0));
    // Month 1, genuinely signed, after month 2: would bring the older code back.
    refused(&scene, "month1.hpkg", &month1, VERIFICATION, "downgrade");
}

#[test]
fn mix_and_match() {
    let Some((scene, month1)) = scene("attack-mix-and-match") else {
        return;
    };
    // The payload of another package signed by the same key, under the same entry name.
    let other = scene.package(PackageKind::Hotpatch, 3, Fix::Multiply);
    let other_payload = entries(&other)
        .into_iter()
        .find(|(name, _)| name == PAYLOAD)
        .unwrap()
        .1;
    let mixed =
        package::replace_entry(&month1, PAYLOAD, |payload| *payload = other_payload.clone());
    refused(
        &scene,
        "mixed.hpkg",
        &mixed,
        VERIFICATION,
        "entry-hash-mismatch",
    );
}

#[test]
fn package_for_another_build() {
    let Some((scene, _)) = scene("attack-other-build") else {
        return;
    };
    // The same program built again with another build-id: another file identity.
    let other = scene.dir.join("other-build");
    let status = std::process::Command::new("gcc")
        .args(["-O2", "-pthread", "-Wl,--build-id=0x0123456789abcdef", "-o"])
        .arg(&other)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/programs/target.c"
        ))
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/programs/compute.c"
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = package::package(
        &scene.signer,
        PackageKind::Hotpatch,
        2,
        1,
        support::scene::FAR_FUTURE,
        vec![package::target(&other, "bin/target", Fix::TailCallHelper)],
    );
    refused(
        &scene,
        "other-build.hpkg",
        &bytes,
        REFUSED,
        "identity-mismatch",
    );
}

#[test]
fn wrong_architecture() {
    if !support::privileged() {
        return;
    }
    // A 32-bit x86 program (no libc needed), and a package whose identity is exactly its
    // file: the identity matches, the x86-64 payload and jumps must still not go in.
    let dir = support::temp_dir("attack-arch");
    let source = dir.join("i386.c");
    std::fs::write(
        &source,
        "__attribute__((noipa)) int compute(int x) { return 2 * x + 1; }\n\
         volatile int sink;\n\
         void _start(void) { for (;;) for (int i = 0; i < 1000; i++) sink = compute(i); }\n",
    )
    .unwrap();
    let binary = dir.join("i386");
    let built = std::process::Command::new("gcc")
        .args([
            "-m32",
            "-O2",
            "-nostdlib",
            "-static",
            "-ffreestanding",
            "-fno-pic",
        ])
        .args(["-Wl,--build-id", "-o"])
        .arg(&binary)
        .arg(&source)
        .status()
        .unwrap();
    assert!(
        built.success(),
        "gcc -m32 -nostdlib builds the 32-bit program"
    );
    let mut child = std::process::Command::new(&binary).spawn().unwrap();
    let pid = child.id() as i32;
    std::thread::sleep(std::time::Duration::from_millis(100));
    let (rva, size) = support::symbol(&binary, "compute");
    let (original_maps, original) = support::snapshot(pid, &[(rva, 5)]);
    let signer = Signer::new(&dir);
    let state = dir.join("state");
    seed_state(&state);
    let target = hotpatch_package::Target {
        name: "bin/i386".into(),
        // The SHA-256 alone (the applier reads build-ids of 64-bit files only).
        identity: hotpatch_package::TargetIdentity::Elf {
            build_id: None,
            sha256: support::sha256_of(&binary),
        },
        // ET_EXEC: the first PT_LOAD is at 0x08048000, mapped where it says.
        image_base_rva: 0x0804_8000,
        payload: Some("payloads/i386.bin".into()),
        payload_len: 16,
        unwind: None,
        sites: vec![hotpatch_package::PatchSite {
            function: "compute".into(),
            baseline_rva: rva,
            baseline_size: size,
            payload_offset: 0,
            payload_size: 4,
            redirect: hotpatch_package::Redirect::Entry {
                original: original[0].clone(),
            },
        }],
        relocations: Vec::new(),
    };
    let mut code = vec![0x8d, 0x04, 0x7f, 0xc3];
    code.resize(16, 0xcc);
    let manifest = hotpatch_package::Manifest {
        format: hotpatch_package::FORMAT_VERSION,
        product: "demo".into(),
        channel: "stable".into(),
        release: "2026-11".into(),
        kind: PackageKind::Hotpatch,
        baseline_id: "demo-2026-10".into(),
        sequence: 2,
        min_sequence: 1,
        issued_at: package::now() - 60,
        expires_at: support::scene::FAR_FUTURE,
        key_id: String::new(),
        entries: Vec::new(),
        targets: vec![target],
    };
    let bytes = hotpatch_package::write_package(
        manifest,
        [("payloads/i386.bin".to_owned(), code)].into(),
        &signer.secret,
    )
    .unwrap();
    let file = package::save(&dir, "i386.hpkg", &bytes);
    let state_before = support::scene::files_under(&state);
    let run = applier(
        &[
            "apply",
            path(&file),
            "--trust",
            path(&signer.trust_file),
            "--pid",
            &pid.to_string(),
            "--state-dir",
            path(&state),
            "--json",
        ],
        &[],
        None,
    );
    let after = support::snapshot(pid, &[(rva, 5)]);
    let alive = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(run.code, Some(REFUSED), "{run:?}");
    assert_eq!(run.kinds(), ["wrong-architecture"], "{run:?}");
    assert_eq!(after, (original_maps, original));
    assert!(alive, "the 32-bit program still runs");
    assert_eq!(support::scene::files_under(&state), state_before);
}

/// A private state directory in which the baseline (sequence 1) of demo/stable is installed,
/// written as the applier writes it.
fn seed_state(state: &std::path::Path) {
    std::fs::create_dir_all(state.join("packages")).unwrap();
    for dir in [state.to_owned(), state.join("packages")] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let recorded = json!({
        "version": 1,
        "products": {"demo/stable": {
            "high_water": 1, "installed": 1, "installed_manifest_sha256": null,
            "packages": {}, "targets": []
        }},
        "trust_version": 0
    });
    std::fs::write(state.join("state.json"), recorded.to_string()).unwrap();
    std::fs::write(state.join("lock"), b"").unwrap();
}

#[test]
fn relocation_pointing_outside_the_payload() {
    let Some((scene, month1)) = scene("attack-relocation-payload") else {
        return;
    };
    // Signed by the trusted key (a broken or hostile build): the relocation writes past the
    // payload's end, into whatever the applier maps next.
    let outside = resign(&month1, &scene.signer, |manifest| {
        target(manifest)["relocations"][0]["offset"] = json!(14);
    });
    refused(
        &scene,
        "reloc-out.hpkg",
        &outside,
        VERIFICATION,
        "relocation-out-of-payload",
    );
    let far = resign(&month1, &scene.signer, |manifest| {
        target(manifest)["relocations"][0]["offset"] = json!(u64::MAX - 1);
    });
    refused(
        &scene,
        "reloc-far.hpkg",
        &far,
        VERIFICATION,
        "relocation-out-of-payload",
    );
    let to_payload = resign(&month1, &scene.signer, |manifest| {
        target(manifest)["relocations"][0]["target"] = json!({"in": "payload", "offset": 4096});
    });
    refused(
        &scene,
        "reloc-target.hpkg",
        &to_payload,
        VERIFICATION,
        "relocation-target-out-of-payload",
    );
}

#[test]
fn relocation_pointing_outside_the_image() {
    let Some((scene, month1)) = scene("attack-relocation-image") else {
        return;
    };
    // `jmp` to an address the package computes from the image base but far outside it (e.g.
    // into libc's `system`): every baseline target must lie in one of the image's segments.
    let outside = resign(&month1, &scene.signer, |manifest| {
        target(manifest)["relocations"][0]["target"] =
            json!({"in": "baseline", "rva": 0x4000_0000});
    });
    refused(
        &scene,
        "reloc-image.hpkg",
        &outside,
        REFUSED,
        "relocation-outside-image",
    );
}

#[test]
fn patch_site_outside_the_image() {
    let Some((scene, month1)) = scene("attack-site-outside") else {
        return;
    };
    let outside = resign(&month1, &scene.signer, |manifest| {
        let site = &mut target(manifest)["sites"][0];
        site["baseline_rva"] = json!(0x4000_0000);
        site["redirect"]["original"] = json!("0000000000");
    });
    refused(
        &scene,
        "site-outside.hpkg",
        &outside,
        REFUSED,
        "site-outside-image",
    );
    // Inside the image but in data (the ELF header, readable, not executable).
    let header = support::bytes_at_rva(&scene.binary, 0, 5);
    let in_data = resign(&month1, &scene.signer, |manifest| {
        let site = &mut target(manifest)["sites"][0];
        site["baseline_rva"] = json!(0);
        site["redirect"]["original"] = json!(hex(&header));
    });
    refused(
        &scene,
        "site-data.hpkg",
        &in_data,
        REFUSED,
        "site-outside-image",
    );
}

#[test]
fn patch_site_not_at_a_function_entry() {
    let Some((scene, month1)) = scene("attack-site-mid-function") else {
        return;
    };
    // One byte into compute(), with the bytes really found there as `original`: the bytes
    // check passes, and a jump written there would split an instruction.
    let (rva, _) = support::symbol(&scene.binary, "compute");
    let inside = support::bytes_at_rva(&scene.binary, rva + 1, 5);
    let mid = resign(&month1, &scene.signer, |manifest| {
        let site = &mut target(manifest)["sites"][0];
        site["baseline_rva"] = json!(rva + 1);
        site["baseline_size"] = json!(4);
        site["redirect"]["original"] = json!(hex(&inside));
    });
    refused(
        &scene,
        "site-mid.hpkg",
        &mid,
        REFUSED,
        "not-a-function-entry",
    );
    // At helper()'s entry, but claiming a size that runs into compute(), which follows it:
    // the stack check would then protect the wrong range.
    let (helper, _) = support::symbol(&scene.binary, "helper");
    assert!(
        helper < rva,
        "helper() precedes compute() in the test program"
    );
    let helper_bytes = support::bytes_at_rva(&scene.binary, helper, 5);
    let long = resign(&month1, &scene.signer, |manifest| {
        let site = &mut target(manifest)["sites"][0];
        site["baseline_rva"] = json!(helper);
        site["baseline_size"] = json!(rva - helper + 4);
        site["redirect"]["original"] = json!(hex(&helper_bytes));
    });
    refused(
        &scene,
        "site-long.hpkg",
        &long,
        REFUSED,
        "not-a-function-entry",
    );
}

#[test]
fn original_bytes_that_do_not_match_the_process() {
    let Some((scene, month1)) = scene("attack-original-bytes") else {
        return;
    };
    let wrong = resign(&month1, &scene.signer, |manifest| {
        target(manifest)["sites"][0]["redirect"]["original"] = json!("9090909090");
    });
    refused(
        &scene,
        "wrong-original.hpkg",
        &wrong,
        REFUSED,
        "bytes-mismatch",
    );
}

/// Trust files v1 (the scene's key) and v2 (a new key added, the scene's key retired).
fn rotated(scene: &Scene) -> (Signer, std::path::PathBuf, std::path::PathBuf) {
    let new_key = Signer::new(&support::temp_dir(&format!(
        "{}-new-key",
        scene.dir.file_name().unwrap().to_string_lossy()
    )));
    let v1 = TrustFile::initial(&[scene.signer.secret.public_key()]).unwrap();
    let v2 = v1
        .rotate(
            &[new_key.secret.public_key()],
            &[scene.signer.secret.key_id()],
            &scene.signer.secret,
        )
        .unwrap();
    let v1_path = scene.save("trust-v1.json", &v1.to_bytes());
    let v2_path = scene.save("trust-v2.json", &v2.to_bytes());
    (new_key, v1_path, v2_path)
}

#[test]
fn retired_key_after_rotation() {
    let Some((scene, month1)) = scene("attack-retired-key") else {
        return;
    };
    let (_, _, v2) = rotated(&scene);
    // Recording trust version 2 is the first use of v2; do it before the snapshot.
    let verify = applier(
        &[
            "verify",
            path(&scene.save(
                "baseline-again.hpkg",
                &scene.package(PackageKind::Baseline, 1, Fix::None),
            )),
            "--trust",
            path(&v2),
            "--state-dir",
            path(&scene.state),
            "--json",
        ],
        &[],
        None,
    );
    assert_eq!(verify.kinds(), ["retired-key"], "{verify:?}");
    let file = scene.save("month1.hpkg", &month1);
    scene.assert_refused(VERIFICATION, "retired-key", || {
        scene.apply_with(&file, &v2, &[])
    });
}

#[test]
fn rolled_back_trust_file() {
    let Some((scene, _)) = scene("attack-trust-rollback") else {
        return;
    };
    let (new_key, v1, v2) = rotated(&scene);
    // Month 1 signed by the new key, accepted under v2 (which records version 2).
    let month1 = package::package(
        &new_key,
        PackageKind::Hotpatch,
        2,
        1,
        support::scene::FAR_FUTURE,
        vec![package::target(
            &scene.binary,
            "bin/target",
            Fix::TailCallHelper,
        )],
    );
    let verify = applier(
        &[
            "verify",
            path(&scene.save("month1.hpkg", &month1)),
            "--trust",
            path(&v2),
            "--state-dir",
            path(&scene.state),
            "--json",
        ],
        &[],
        None,
    );
    assert_eq!(verify.code, Some(0), "{verify:?}");
    // v1 still trusts the retired key: a thief of that key presents the old trust file.
    let stolen = scene.package(PackageKind::Hotpatch, 2, Fix::TailCallHelper);
    let file = scene.save("stolen.hpkg", &stolen);
    scene.assert_refused(VERIFICATION, "trust-rollback", || {
        scene.apply_with(&file, &v1, &[])
    });
}

#[test]
fn absurd_counts_in_a_manifest() {
    let Some((scene, month1)) = scene("attack-absurd-counts") else {
        return;
    };
    // 100 001 sites (the cap is 100 000), each otherwise well-formed.
    let sites = resign(&month1, &scene.signer, |manifest| {
        let site = target(manifest)["sites"][0].clone();
        let many: Vec<Value> = (0..100_001u64)
            .map(|index| {
                let mut site = site.clone();
                site["baseline_rva"] = json!(0x1000 + index * 16);
                site
            })
            .collect();
        target(manifest)["sites"] = Value::Array(many);
    });
    refused(&scene, "sites.hpkg", &sites, VERIFICATION, "too-many");
    // 4 097 targets (the cap is 4 096).
    let targets = resign(&month1, &scene.signer, |manifest| {
        let first = target(manifest).clone();
        let many: Vec<Value> = (0..4097)
            .map(|index| {
                let mut target = first.clone();
                target["name"] = json!(format!("bin/t{index:05}"));
                target
            })
            .collect();
        manifest["targets"] = Value::Array(many);
    });
    refused(&scene, "targets.hpkg", &targets, VERIFICATION, "too-many");
    // A payload claiming 2^64 - 1 bytes.
    let huge = resign(&month1, &scene.signer, |manifest| {
        target(manifest)["payload_len"] = json!(u64::MAX);
    });
    refused(
        &scene,
        "payload-len.hpkg",
        &huge,
        VERIFICATION,
        "bad-payload",
    );
    // An entry length beyond any cap, with the true hash.
    let entry_len = resign(&month1, &scene.signer, |manifest| {
        manifest["entries"][0]["len"] = json!(u64::MAX);
    });
    refused(
        &scene,
        "entry-len.hpkg",
        &entry_len,
        VERIFICATION,
        "entry-length-mismatch",
    );
}

#[test]
fn state_directory_readable_by_others() {
    let Some((scene, month1)) = scene("attack-state-mode") else {
        return;
    };
    let file = scene.save("month1.hpkg", &month1);
    for mode in [0o755, 0o750, 0o701, 0o707] {
        std::fs::set_permissions(&scene.state, std::fs::Permissions::from_mode(mode)).unwrap();
        scene.assert_refused(USAGE, "insecure-state-dir", || scene.apply(&file));
    }
    std::fs::set_permissions(&scene.state, std::fs::Permissions::from_mode(0o700)).unwrap();
    // packages/ inside it, too.
    let packages = scene.state.join("packages");
    std::fs::set_permissions(&packages, std::fs::Permissions::from_mode(0o755)).unwrap();
    scene.assert_refused(USAGE, "insecure-state-dir", || scene.apply(&file));
    std::fs::set_permissions(&packages, std::fs::Permissions::from_mode(0o700)).unwrap();
    // Owned by another user (who could lower the high-water mark or swap stored packages).
    std::os::unix::fs::chown(&scene.state, Some(65534), Some(65534)).unwrap();
    scene.assert_refused(USAGE, "insecure-state-dir", || scene.apply(&file));
    std::os::unix::fs::chown(&scene.state, Some(0), Some(0)).unwrap();
    // And the applier creates a new one private.
    let fresh = scene.dir.join("fresh-state");
    let run = applier(
        &[
            "verify",
            path(&file),
            "--trust",
            path(&scene.signer.trust_file),
            "--state-dir",
            path(&fresh),
            "--json",
        ],
        &[],
        None,
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    for dir in [&fresh, &fresh.join("packages")] {
        let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", dir.display());
    }
}

#[test]
fn trust_file_writable_by_others() {
    let Some((scene, month1)) = scene("attack-trust-mode") else {
        return;
    };
    let file = scene.save("month1.hpkg", &month1);
    for mode in [0o666, 0o620] {
        std::fs::set_permissions(
            &scene.signer.trust_file,
            std::fs::Permissions::from_mode(mode),
        )
        .unwrap();
        scene.assert_refused(USAGE, "insecure-trust-file", || scene.apply(&file));
    }
}

#[test]
fn target_owned_by_another_user_the_applier_may_not_trace() {
    let Some((scene, month1)) = scene("attack-other-user") else {
        return;
    };
    // The target runs as root; the applier runs as `nobody` (uid 65534), which may not trace
    // it. Everything else it needs is readable and its own state directory is private.
    let file = scene.save("month1.hpkg", &month1);
    let state = scene.dir.join("nobody-state");
    seed_state(&state);
    for path in [
        &state,
        &state.join("packages"),
        &state.join("state.json"),
        &state.join("lock"),
    ] {
        std::os::unix::fs::chown(path, Some(65534), Some(65534)).unwrap();
    }
    std::fs::set_permissions(&scene.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run_as_nobody = || {
        applier(
            &[
                "apply",
                path(&file),
                "--trust",
                path(&scene.signer.trust_file),
                "--pid",
                &scene.pid.to_string(),
                "--state-dir",
                path(&state),
                "--json",
            ],
            &[],
            Some(65534),
        )
    };
    // A first run as nobody reads the state directory it owns.
    let verify = applier(
        &[
            "verify",
            path(&file),
            "--trust",
            path(&scene.signer.trust_file),
            "--state-dir",
            path(&state),
        ],
        &[],
        Some(65534),
    );
    assert_eq!(verify.code, Some(0), "{verify:?}");
    scene.assert_refused(REFUSED, "not-permitted", run_as_nobody);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
