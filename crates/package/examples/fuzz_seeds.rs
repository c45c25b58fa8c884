//! Writes the seed corpus of the `package` fuzz target (`fuzz/seed.sh` runs it): packages
//! signed with the fuzz key, the manifests inside them, and trust files, each prefixed with the
//! byte that tells the target what it is (see `hotpatch_fuzz_targets::package`). The key and clock
//! match `PACKAGE_KEY_SEED` and `PACKAGE_NOW` in `crates/fuzz-targets/src/lib.rs`.
//!
//! `cargo run -p hotpatch-package --example fuzz_seeds -- DIR`

use hotpatch_package::{
    FORMAT_VERSION, Manifest, PackageKind, PatchSite, Redirect, Relocation, RelocationKind,
    RelocationTarget, SecretKey, Target, TargetIdentity, TrustFile, write_package,
};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Payload and other entries of a package, by name.
type Files = BTreeMap<String, Vec<u8>>;

const KEY_SEED: [u8; 32] = [0x5e; 32];
const NOW: u64 = 1_800_000_000;

fn target(name: &str, sites: usize) -> (Target, Vec<u8>) {
    // `lea rax, [rip+disp32]; ret; jmp rel32` per site, then an 8-byte slot and a string.
    let mut payload = Vec::new();
    let mut patch_sites = Vec::new();
    let mut relocations = Vec::new();
    for index in 0..sites {
        let at = payload.len() as u64;
        payload.extend_from_slice(&[0x48, 0x8d, 0x05, 0, 0, 0, 0, 0xc3, 0xe9, 0, 0, 0, 0]);
        relocations.push(Relocation {
            offset: at + 3,
            kind: RelocationKind::Rel32,
            target: RelocationTarget::Payload { offset: 0 },
            addend: -4,
        });
        relocations.push(Relocation {
            offset: at + 9,
            kind: RelocationKind::Rel32,
            target: RelocationTarget::Baseline {
                rva: 0x2000 + index as u64 * 0x40,
            },
            addend: -4,
        });
        let rva = 0x1130 + index as u64 * 0x80;
        patch_sites.push(PatchSite {
            function: format!("function_{index}"),
            baseline_rva: rva,
            baseline_size: if index % 2 == 0 { 0x40 } else { 3 },
            payload_offset: at,
            payload_size: 13,
            redirect: if index % 2 == 0 {
                Redirect::Entry {
                    original: vec![0x55, 0x48, 0x89, 0xe5, 0x53],
                }
            } else {
                Redirect::Padding {
                    original: vec![0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0x31, 0xc0],
                }
            },
        });
    }
    let slot = payload.len() as u64;
    payload.extend_from_slice(&[0; 8]);
    payload.extend_from_slice(b"fixed\0");
    relocations.push(Relocation {
        offset: slot,
        kind: RelocationKind::Abs64,
        target: RelocationTarget::Baseline { rva: 0x4010 },
        addend: 0,
    });
    let entry = format!("payloads/{}.bin", name.replace('/', "_"));
    let target = Target {
        name: name.to_owned(),
        identity: TargetIdentity::Elf {
            build_id: Some("0123abcd".to_owned()),
            sha256: "ab".repeat(32),
        },
        image_base_rva: 0,
        payload: Some(entry),
        payload_len: payload.len() as u64,
        unwind: None,
        sites: patch_sites,
        relocations,
    };
    (target, payload)
}

fn manifest(kind: PackageKind, sequence: u64, targets: Vec<Target>) -> Manifest {
    Manifest {
        format: FORMAT_VERSION,
        product: "demo".to_owned(),
        channel: "stable".to_owned(),
        release: "2027-01".to_owned(),
        kind,
        baseline_id: "demo-2026-10".to_owned(),
        sequence,
        min_sequence: if kind == PackageKind::Baseline {
            sequence
        } else {
            1
        },
        issued_at: NOW - 100,
        expires_at: NOW + 90 * 86_400,
        key_id: String::new(),
        entries: Vec::new(),
        targets,
    }
}

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).expect("usage: fuzz_seeds DIR"));
    std::fs::create_dir_all(&out).expect("create the seed directory");
    let key = SecretKey::from_seed(KEY_SEED);
    let write = |name: &str, mode: u8, bytes: &[u8]| {
        let mut seed = vec![mode];
        seed.extend_from_slice(bytes);
        std::fs::write(out.join(name), seed).expect("write a seed");
    };
    let cases: Vec<(&str, Manifest, Files)> = vec![
        (
            "baseline",
            manifest(PackageKind::Baseline, 1, Vec::new()),
            BTreeMap::new(),
        ),
        {
            let (t, p) = target("bin/app", 2);
            let files = BTreeMap::from([(t.payload.clone().unwrap_or_default(), p)]);
            (
                "one-target",
                manifest(PackageKind::Hotpatch, 2, vec![t]),
                files,
            )
        },
        {
            let (a, pa) = target("bin/app", 1);
            let (b, pb) = target("lib/libx.so", 3);
            let mut files = BTreeMap::from([
                (a.payload.clone().unwrap_or_default(), pa),
                (b.payload.clone().unwrap_or_default(), pb),
            ]);
            files.insert("report/report.md".to_owned(), b"# two targets\n".to_vec());
            (
                "two-targets",
                manifest(PackageKind::Hotpatch, 3, vec![a, b]),
                files,
            )
        },
    ];
    for (name, manifest, files) in cases {
        let bytes = write_package(manifest, files, &key).expect("the seed package is valid");
        let opened =
            hotpatch_package::read_unverified(&bytes, &hotpatch_package::Limits::default())
                .expect("the seed package reads");
        write(&format!("{name}.hpkg"), 0, &bytes);
        let json = serde_json::to_vec_pretty(&opened.manifest).expect("manifest serializes");
        write(&format!("{name}.manifest.json"), 1, &json);
    }
    let other = SecretKey::from_seed([0x6f; 32]);
    let first = TrustFile::initial(&[key.public_key()]).expect("trust file version 1");
    let second = first
        .rotate(&[other.public_key()], &[key.key_id()], &key)
        .expect("trust file version 2");
    write("trust-v1.json", 2, &first.to_bytes());
    write("trust-v2.json", 2, &second.to_bytes());
}
