//! Tests of the package: the round trip, reproducibility, and every attack on the archive, the
//! signature, the entries, the validity window, the sequence, the manifest's content, keys and
//! trust files, each asserting the specific error.

use crate::archive::{ArchiveEntry, read_archive, write_archive};
use crate::*;
use std::collections::BTreeMap;

const NOW: u64 = 1_800_000_000;
const DAY: u64 = 86_400;

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

fn trust() -> Trust {
    Trust::from_public_key(key(1).public_key())
}

fn open_now(bytes: &[u8]) -> Result<VerifiedPackage, Error> {
    open(bytes, &trust(), NOW, &Limits::default())
}

/// A small but real payload: `lea rax, [rip+disp32]` (relocated to a payload constant),
/// `ret`, `jmp rel32` (relocated to the baseline), then an 8-byte pointer slot, a string, and
/// unwind data: an `UNWIND_INFO` at [`UNWIND_INFO_AT`] and a one-entry function table at
/// [`UNWIND_TABLE_AT`] covering the code.
fn payload() -> Vec<u8> {
    let mut code = vec![0x48, 0x8D, 0x05, 0, 0, 0, 0, 0xC3, 0xE9, 0, 0, 0, 0];
    code.extend_from_slice(&[0u8; 8]);
    code.extend_from_slice(b"fixed\0");
    code.push(0); // align to 4
    assert_eq!(code.len() as u64, UNWIND_INFO_AT);
    // Version 1, no flags, a 5-byte prolog, two codes, no frame register: at 5
    // UWOP_ALLOC_SMALL of 32 bytes, at 1 UWOP_PUSH_NONVOL rbp.
    code.extend_from_slice(&[0x01, 0x05, 0x02, 0x00, 0x05, 0x32, 0x01, 0x50]);
    assert_eq!(code.len() as u64, UNWIND_TABLE_AT);
    code.extend_from_slice(
        &unwind::RuntimeFunction {
            begin: 0,
            end: 13,
            unwind_info: UNWIND_INFO_AT as u32,
        }
        .to_bytes(),
    );
    code
}

const UNWIND_INFO_AT: u64 = 28;
const UNWIND_TABLE_AT: u64 = 36;

fn manifest() -> Manifest {
    Manifest {
        format: FORMAT_VERSION,
        product: "demo".to_owned(),
        channel: "stable".to_owned(),
        release: "2026-12".to_owned(),
        kind: PackageKind::Hotpatch,
        baseline_id: "demo-2026-10".to_owned(),
        sequence: 5,
        min_sequence: 3,
        issued_at: NOW - 100,
        expires_at: NOW + 90 * DAY,
        key_id: String::new(),
        entries: Vec::new(),
        targets: vec![Target {
            name: "bin/app".to_owned(),
            identity: TargetIdentity::Elf {
                build_id: Some("0123abcd".to_owned()),
                sha256: "ab".repeat(32),
            },
            image_base_rva: 0,
            payload: Some("payloads/000.bin".to_owned()),
            payload_len: payload().len() as u64,
            sites: vec![
                PatchSite {
                    function: "parse_header".to_owned(),
                    baseline_rva: 0x1130,
                    baseline_size: 0x40,
                    payload_offset: 0,
                    payload_size: 13,
                    redirect: Redirect::Entry {
                        original: vec![0x55, 0x48, 0x89, 0xE5, 0x53],
                    },
                },
                PatchSite {
                    function: "tiny".to_owned(),
                    baseline_rva: 0x1200,
                    baseline_size: 3,
                    payload_offset: 7,
                    payload_size: 1,
                    redirect: Redirect::Padding {
                        original: vec![0xCC, 0xCC, 0xCC, 0xCC, 0xCC, 0x31, 0xC0],
                    },
                },
            ],
            relocations: vec![
                Relocation {
                    offset: 3,
                    kind: RelocationKind::Rel32,
                    target: RelocationTarget::Payload { offset: 21 },
                    addend: -4,
                },
                Relocation {
                    offset: 9,
                    kind: RelocationKind::Rel32,
                    target: RelocationTarget::Baseline { rva: 0x2000 },
                    addend: -4,
                },
                Relocation {
                    offset: 13,
                    kind: RelocationKind::Abs64,
                    target: RelocationTarget::Baseline { rva: 0x4010 },
                    addend: 0,
                },
            ],
            unwind: Some(UnwindTable {
                offset: UNWIND_TABLE_AT,
                count: 1,
            }),
        }],
    }
}

fn files() -> BTreeMap<String, Vec<u8>> {
    BTreeMap::from([
        ("payloads/000.bin".to_owned(), payload()),
        (
            "report/report.html".to_owned(),
            b"<p>one change</p>".to_vec(),
        ),
        (
            "report/report.json".to_owned(),
            br#"{"changes":1}"#.to_vec(),
        ),
        ("report/report.md".to_owned(), b"# one change\n".to_vec()),
    ])
}

fn package() -> Vec<u8> {
    write_package(manifest(), files(), &key(1)).expect("the sample package is valid")
}

/// The archive's entries in order, as the reader sees them.
fn entries_of(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    read_archive(bytes, &Limits::default())
        .expect("a readable archive")
        .into_iter()
        .map(|entry| (entry.name, entry.data))
        .collect()
}

/// A well-formed archive of exactly these entries (valid CRCs and headers), so that the check
/// under test is the package's, not the container's.
fn repack(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let entries: Vec<_> = entries
        .iter()
        .map(|(name, data)| ArchiveEntry::file(name, data))
        .collect();
    write_archive(&entries).expect("packs")
}

/// Signs `manifest_bytes` with `signer` and packs them with `files`, with none of the writer's
/// checks: what an attacker holding a trusted key, or a buggy builder, could produce.
fn sign_and_pack(
    manifest_bytes: &[u8],
    files: &BTreeMap<String, Vec<u8>>,
    signer: &SecretKey,
) -> Vec<u8> {
    let mut entries = vec![
        ("manifest.json".to_owned(), manifest_bytes.to_vec()),
        (
            "manifest.sig".to_owned(),
            signer.sign(manifest_bytes).to_vec(),
        ),
    ];
    entries.extend(files.iter().map(|(n, d)| (n.clone(), d.clone())));
    repack(&entries)
}

/// The manifest with entries filled as the writer does, for crafting signed variants.
fn filled_manifest(files: &BTreeMap<String, Vec<u8>>, signer: &SecretKey) -> Manifest {
    use sha2::{Digest, Sha256};
    let mut m = manifest();
    m.key_id = signer.key_id();
    m.entries = files
        .iter()
        .map(|(name, data)| Entry {
            name: name.clone(),
            sha256: hex::encode(Sha256::digest(data)),
            len: data.len() as u64,
        })
        .collect();
    m
}

fn sign_manifest(m: &Manifest, files: &BTreeMap<String, Vec<u8>>, signer: &SecretKey) -> Vec<u8> {
    let bytes = serde_json::to_vec_pretty(m).expect("serializes");
    sign_and_pack(&bytes, files, signer)
}

// --- round trip and reproducibility ---------------------------------------------------------

#[test]
fn round_trip() {
    let bytes = package();
    assert_eq!(&bytes[..4], b"PK\x03\x04");
    let verified = open_now(&bytes).expect("opens");
    let mut expected = manifest();
    expected.key_id = key(1).key_id();
    expected.entries = verified.manifest.entries.clone();
    assert_eq!(verified.manifest, expected);
    assert_eq!(verified.entries, files());
    let names: Vec<_> = verified
        .manifest
        .entries
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "payloads/000.bin",
            "report/report.html",
            "report/report.json",
            "report/report.md"
        ]
    );
    let target = &verified.manifest.targets[0];
    assert_eq!(verified.payload(target), Some(payload().as_slice()));
    // The archive order is fixed: manifest, signature, then the entries by name.
    let order: Vec<_> = entries_of(&bytes).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        order,
        [
            "manifest.json",
            "manifest.sig",
            "payloads/000.bin",
            "report/report.html",
            "report/report.json",
            "report/report.md"
        ]
    );
    // The signed bytes are what the archive carries, byte for byte.
    assert_eq!(entries_of(&bytes)[0].1, verified.manifest_bytes);
}

#[test]
fn identical_inputs_give_identical_bytes() {
    let first = package();
    let second = package();
    assert_eq!(first, second);
    // Target order in the input does not matter either: the writer sorts.
    let mut shuffled = manifest();
    shuffled.targets[0].relocations.reverse();
    shuffled.targets[0].sites.reverse();
    assert_eq!(
        write_package(shuffled, files(), &key(1)).expect("valid"),
        first
    );
}

// --- every entry, one changed byte ----------------------------------------------------------

#[test]
fn one_changed_byte_in_any_entry_is_refused_by_name() {
    let bytes = package();
    let entries = entries_of(&bytes);
    for index in 0..entries.len() {
        for position in [0, entries[index].1.len() / 2, entries[index].1.len() - 1] {
            let mut tampered = entries.clone();
            tampered[index].1[position] ^= 0x01;
            let name = tampered[index].0.clone();
            let error = open_now(&repack(&tampered)).expect_err("tampered");
            match name.as_str() {
                // A flipped byte in the manifest may also break its JSON; either way it is
                // refused before anything in it is believed.
                "manifest.json" => assert!(
                    matches!(
                        error,
                        Error::BadSignature { .. }
                            | Error::Malformed { .. }
                            | Error::UnknownKey { .. }
                    ),
                    "{name}@{position}: {error}"
                ),
                "manifest.sig" => assert!(
                    matches!(error, Error::BadSignature { .. }),
                    "{name}: {error}"
                ),
                _ => assert!(
                    matches!(&error, Error::EntryHashMismatch { name: n } if *n == name),
                    "{name}@{position}: {error}"
                ),
            }
        }
    }
}

#[test]
fn one_changed_byte_in_the_middle_of_the_manifest_is_a_bad_signature() {
    let entries = entries_of(&package());
    let mut tampered = entries.clone();
    // Change a digit of the sequence number: still valid JSON, other meaning.
    let text = String::from_utf8(tampered[0].1.clone()).expect("utf-8");
    let edited = text.replacen("\"sequence\": 5", "\"sequence\": 9", 1);
    assert_ne!(edited, text);
    tampered[0].1 = edited.into_bytes();
    let error = open_now(&repack(&tampered)).expect_err("edited after signing");
    assert!(
        matches!(error, Error::BadSignature { ref key_id } if *key_id == key(1).key_id()),
        "{error}"
    );
}

#[test]
fn one_flipped_byte_anywhere_in_the_file_never_changes_what_is_accepted() {
    // Flipping a byte of the file itself: the container (CRC, inflate, header consistency), the
    // signature or a hash refuses it, unless the byte carries no content (a date, an attribute),
    // in which case what opens is exactly the original.
    let bytes = package();
    let original = open_now(&bytes).expect("opens");
    let mut n_refused = 0;
    for position in 0..bytes.len() {
        let mut tampered = bytes.clone();
        tampered[position] ^= 0x20;
        match open_now(&tampered) {
            Err(_) => n_refused += 1,
            Ok(opened) => {
                assert_eq!(
                    opened.manifest_bytes, original.manifest_bytes,
                    "flip at {position}"
                );
                assert_eq!(opened.entries, original.entries, "flip at {position}");
            }
        }
    }
    assert!(
        n_refused * 10 > bytes.len() * 9,
        "{n_refused} of {}",
        bytes.len()
    );
}

// --- signature and keys ---------------------------------------------------------------------

#[test]
fn unknown_key_is_refused() {
    let bytes = write_package(manifest(), files(), &key(2)).expect("valid");
    let error = open_now(&bytes).expect_err("unknown key");
    assert!(
        matches!(error, Error::UnknownKey { ref key_id } if *key_id == key(2).key_id()),
        "{error}"
    );
}

#[test]
fn signature_over_other_bytes_is_refused() {
    let entries = entries_of(&package());
    let mut forged = entries.clone();
    forged[1].1 = key(1).sign(b"some other manifest").to_vec();
    let error = open_now(&repack(&forged)).expect_err("signature over other bytes");
    assert!(matches!(error, Error::BadSignature { .. }), "{error}");
}

#[test]
fn signature_of_wrong_length_is_refused() {
    let mut entries = entries_of(&package());
    entries[1].1.push(0);
    let error = open_now(&repack(&entries)).expect_err("65-byte signature");
    assert!(matches!(error, Error::BadSignature { .. }), "{error}");
}

#[test]
fn manifest_claiming_a_trusted_key_but_signed_by_another_is_refused() {
    let mut m = filled_manifest(&files(), &key(1));
    m.key_id = key(1).key_id();
    let bytes = sign_manifest(&m, &files(), &key(2));
    let error = open_now(&bytes).expect_err("wrong signer");
    assert!(matches!(error, Error::BadSignature { .. }), "{error}");
}

#[test]
fn retired_key_is_refused() {
    let initial = TrustFile::initial(&[key(1).public_key()]).expect("v1");
    let rotated = initial
        .rotate(&[key(2).public_key()], &[key(1).key_id()], &key(1))
        .expect("v2");
    let trust = Trust::from_trust_file(&rotated);
    let error = open(&package(), &trust, NOW, &Limits::default()).expect_err("retired");
    assert!(
        matches!(error, Error::RetiredKey { ref key_id } if *key_id == key(1).key_id()),
        "{error}"
    );
    let by_new_key = write_package(manifest(), files(), &key(2)).expect("valid");
    open(&by_new_key, &trust, NOW, &Limits::default()).expect("the new key is trusted");
}

// --- entries against the manifest -----------------------------------------------------------

#[test]
fn payload_swapped_between_packages_of_the_same_key_is_refused() {
    let mut other_files = files();
    let mut other_payload = payload();
    other_payload[7] = 0x90; // same length, other code
    other_files.insert("payloads/000.bin".to_owned(), other_payload);
    let other = write_package(manifest(), other_files, &key(1)).expect("valid");
    open_now(&other).expect("the other package is valid on its own");

    let mut mixed = entries_of(&package());
    let from_other = entries_of(&other);
    let index = mixed
        .iter()
        .position(|(n, _)| n == "payloads/000.bin")
        .expect("payload");
    mixed[index].1 = from_other[index].1.clone();
    let error = open_now(&repack(&mixed)).expect_err("mix and match");
    assert!(
        matches!(error, Error::EntryHashMismatch { ref name } if name == "payloads/000.bin"),
        "{error}"
    );
}

#[test]
fn right_hash_wrong_length_is_refused() {
    let mut m = filled_manifest(&files(), &key(1));
    let entry = m
        .entries
        .iter_mut()
        .find(|e| e.name == "report/report.md")
        .expect("listed");
    entry.len += 1;
    let error = open_now(&sign_manifest(&m, &files(), &key(1))).expect_err("wrong length");
    assert!(
        matches!(error, Error::EntryLengthMismatch { ref name, expected: 14, actual: 13 } if name == "report/report.md"),
        "{error}"
    );
}

#[test]
fn extra_unlisted_file_is_refused() {
    let mut entries = entries_of(&package());
    entries.push(("payloads/001.bin".to_owned(), vec![0xC3]));
    let error = open_now(&repack(&entries)).expect_err("unlisted");
    assert!(
        matches!(error, Error::UnlistedEntry { ref name } if name == "payloads/001.bin"),
        "{error}"
    );
}

#[test]
fn missing_entries_are_refused() {
    let entries = entries_of(&package());
    for name in ["manifest.json", "manifest.sig", "report/report.md"] {
        let kept: Vec<_> = entries.iter().filter(|(n, _)| n != name).cloned().collect();
        let error = open_now(&repack(&kept)).expect_err("missing");
        assert!(
            matches!(error, Error::MissingEntry { name: ref n } if n == name),
            "{name}: {error}"
        );
    }
}

#[test]
fn unsafe_entry_names_are_refused() {
    for name in [
        "../x", "/abs", "a\\b", "a/../b", "./a", "a//b", "C:evil", "",
    ] {
        let mut entries = entries_of(&package());
        entries.push((name.to_owned(), vec![1]));
        let error = open_now(&repack(&entries)).expect_err("unsafe name");
        assert!(
            matches!(error, Error::UnsafeEntryName { name: ref n } if n == name),
            "{name:?}: {error}"
        );
        // The writer refuses them too.
        let mut bad_files = files();
        bad_files.insert(name.to_owned(), vec![1]);
        let error = write_package(manifest(), bad_files, &key(1)).expect_err("unsafe name");
        assert!(
            matches!(error, Error::UnsafeEntryName { .. }),
            "{name:?}: {error}"
        );
    }
}

#[test]
fn symlink_entry_is_refused() {
    let entries = entries_of(&package());
    let mut archive_entries: Vec<_> = entries
        .iter()
        .map(|(name, data)| ArchiveEntry::file(name, data))
        .collect();
    archive_entries[2].unix_mode = 0o120_777;
    let bytes = write_archive(&archive_entries).expect("packs");
    let error = open_now(&bytes).expect_err("symlink");
    assert!(
        matches!(error, Error::SymlinkEntry { ref name } if name == "payloads/000.bin"),
        "{error}"
    );
}

#[test]
fn duplicate_entry_names_are_refused() {
    let mut entries = entries_of(&package());
    // A second payload under the same name, placed after the real one (a reader that keeps the
    // last would see it).
    entries.push(("payloads/000.bin".to_owned(), vec![0xCC; 21 + 6]));
    let error = open_now(&repack(&entries)).expect_err("duplicate");
    assert!(
        matches!(error, Error::DuplicateEntry { ref name } if name == "payloads/000.bin"),
        "{error}"
    );
    // A duplicate manifest too.
    let mut entries = entries_of(&package());
    let manifest_entry = entries[0].clone();
    entries.push(manifest_entry);
    let error = open_now(&repack(&entries)).expect_err("duplicate manifest");
    assert!(
        matches!(error, Error::DuplicateEntry { ref name } if name == "manifest.json"),
        "{error}"
    );
}

// --- the container: caps before allocation, truncation ---------------------------------------

/// Rewrites the uncompressed size of entry `name` in both its local and central headers.
fn declare_size(bytes: &mut [u8], name: &str, size: u32) {
    let needle = name.as_bytes();
    let mut at = 0;
    while at + 46 <= bytes.len() {
        let signature = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        if signature == 0x0403_4b50 && bytes[at + 30..].starts_with(needle) {
            bytes[at + 22..at + 26].copy_from_slice(&size.to_le_bytes());
        }
        if signature == 0x0201_4b50 && bytes[at + 46..].starts_with(needle) {
            bytes[at + 24..at + 28].copy_from_slice(&size.to_le_bytes());
        }
        at += 1;
    }
}

#[test]
fn entry_that_inflates_past_its_declared_size_is_stopped() {
    // 64 MiB of zeros deflate to about 64 KiB; the entry declares 1 KiB.
    let bomb = vec![0u8; 64 << 20];
    let mut entries = entries_of(&package());
    entries.push(("report/bomb".to_owned(), bomb));
    let mut bytes = repack(&entries);
    assert!(bytes.len() < 1 << 20, "the bomb is small: {}", bytes.len());
    declare_size(&mut bytes, "report/bomb", 1024);
    let error = open_now(&bytes).expect_err("bomb");
    // The inflater was held to 1 KiB + 1 byte: the message says how far it got.
    assert!(
        matches!(error, Error::BadArchive { ref reason } if reason.contains("inflates to 1025 bytes, declared 1024")),
        "{error}"
    );
}

#[test]
fn entry_declaring_more_than_the_cap_is_refused_before_inflating() {
    let mut bytes = package();
    declare_size(&mut bytes, "report/report.md", 0xF000_0000);
    let error = open_now(&bytes).expect_err("too large");
    assert!(
        matches!(error, Error::TooLarge { ref what, size: 0xF000_0000, limit } if what.contains("report/report.md") && limit == Limits::default().max_entry_bytes),
        "{error}"
    );
    // A manifest above its own cap, even when under the entry cap.
    let limits = Limits {
        max_manifest_bytes: 100,
        ..Limits::default()
    };
    let error = open(&package(), &trust(), NOW, &limits).expect_err("manifest too large");
    assert!(
        matches!(error, Error::TooLarge { ref what, limit: 100, .. } if what.contains("manifest.json")),
        "{error}"
    );
}

#[test]
fn archive_above_the_cap_or_with_too_many_entries_is_refused() {
    let bytes = package();
    let small = Limits {
        max_archive_bytes: bytes.len() as u64 - 1,
        ..Limits::default()
    };
    let error = open(&bytes, &trust(), NOW, &small).expect_err("too large");
    assert!(
        matches!(error, Error::TooLarge { ref what, .. } if what == "archive"),
        "{error}"
    );
    let few = Limits {
        max_entries: 3,
        ..Limits::default()
    };
    let error = open(&bytes, &trust(), NOW, &few).expect_err("too many");
    assert!(
        matches!(
            error,
            Error::TooMany {
                count: 6,
                limit: 3,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn truncated_archive_is_refused() {
    let bytes = package();
    for len in [0, 10, 22, bytes.len() / 2, bytes.len() - 1] {
        let error = open_now(&bytes[..len]).expect_err("truncated");
        assert!(matches!(error, Error::BadArchive { .. }), "{len}: {error}");
    }
    // Not a zip at all.
    let error = open_now(b"\x7fELF this is not a package").expect_err("not a zip");
    assert!(matches!(error, Error::BadArchive { .. }), "{error}");
}

#[test]
fn bytes_hidden_between_entries_and_the_central_directory_are_refused() {
    let bytes = package();
    let end = bytes.len() - 22;
    let central_offset =
        u32::from_le_bytes(bytes[end + 16..end + 20].try_into().expect("4")) as usize;
    // 16 bytes of junk before the central directory, with the end record moved to match: every
    // entry still reads, but something unaccounted for travels in the file.
    let mut padded = bytes[..central_offset].to_vec();
    padded.extend_from_slice(&[0xAA; 16]);
    padded.extend_from_slice(&bytes[central_offset..]);
    let new_end = padded.len() - 22;
    padded[new_end + 16..new_end + 20]
        .copy_from_slice(&((central_offset + 16) as u32).to_le_bytes());
    let error = open_now(&padded).expect_err("gap");
    assert!(
        matches!(error, Error::BadArchive { ref reason } if reason.contains("between")),
        "{error}"
    );
    // An entry whose central record points back into the previous entry (overlap).
    let mut overlapping = bytes.clone();
    let first_central = central_offset;
    let second_central = first_central + 46 + "manifest.json".len();
    overlapping[second_central + 42..second_central + 46].copy_from_slice(&0u32.to_le_bytes());
    let error = open_now(&overlapping).expect_err("overlap");
    assert!(matches!(error, Error::BadArchive { .. }), "{error}");
}

// --- validity window and sequence -----------------------------------------------------------

#[test]
fn expired_and_not_yet_valid_are_refused() {
    let bytes = package();
    let m = manifest();
    let error = open(&bytes, &trust(), m.expires_at, &Limits::default()).expect_err("expired");
    assert!(matches!(error, Error::Expired { .. }), "{error}");
    open(&bytes, &trust(), m.expires_at - 1, &Limits::default()).expect("valid until the end");
    let skew = Limits::default().clock_skew_seconds;
    let error = open(&bytes, &trust(), m.issued_at - skew - 1, &Limits::default())
        .expect_err("not yet valid");
    assert!(matches!(error, Error::NotYetValid { .. }), "{error}");
    open(&bytes, &trust(), m.issued_at - skew, &Limits::default()).expect("within the skew");
}

#[test]
fn replay_downgrade_and_gap_are_refused() {
    let m = manifest(); // hotpatch, sequence 5, min_sequence 3
    check_sequence(&m, Some(3)).expect("follows 3");
    check_sequence(&m, Some(4)).expect("follows 4");
    assert!(matches!(
        check_sequence(&m, Some(5)),
        Err(Error::Replay { sequence: 5 })
    ));
    assert!(matches!(
        check_sequence(&m, Some(7)),
        Err(Error::Downgrade {
            sequence: 5,
            installed: 7
        })
    ));
    assert!(matches!(
        check_sequence(&m, Some(2)),
        Err(Error::SequenceGap {
            min_sequence: 3,
            installed: Some(2)
        })
    ));
    assert!(matches!(
        check_sequence(&m, None),
        Err(Error::SequenceGap {
            installed: None,
            ..
        })
    ));
    let mut baseline = manifest();
    baseline.kind = PackageKind::Baseline;
    baseline.sequence = 8;
    baseline.min_sequence = 8;
    check_sequence(&baseline, None).expect("a baseline installs fresh");
    check_sequence(&baseline, Some(5)).expect("a baseline supersedes");
    assert!(matches!(
        check_sequence(&baseline, Some(8)),
        Err(Error::Replay { .. })
    ));
}

// --- manifest content -----------------------------------------------------------------------

#[test]
fn unsupported_format_is_refused() {
    let mut m = filled_manifest(&files(), &key(1));
    m.format = 2;
    let error = open_now(&sign_manifest(&m, &files(), &key(1))).expect_err("format 2");
    assert!(
        matches!(
            error,
            Error::UnsupportedFormat {
                found: 2,
                supported: 1
            }
        ),
        "{error}"
    );
    let mut m = manifest();
    m.format = 2;
    assert!(matches!(
        write_package(m, files(), &key(1)),
        Err(Error::UnsupportedFormat { found: 2, .. })
    ));
}

#[test]
fn unknown_field_in_the_manifest_is_refused() {
    let m = filled_manifest(&files(), &key(1));
    let mut value = serde_json::to_value(&m).expect("value");
    value["targets"][0]["sites"][0]["skip_stack_check"] = serde_json::Value::Bool(true);
    let bytes = serde_json::to_vec(&value).expect("json");
    let error = open_now(&sign_and_pack(&bytes, &files(), &key(1))).expect_err("unknown field");
    assert!(
        matches!(error, Error::Malformed { ref reason, .. } if reason.contains("skip_stack_check")),
        "{error}"
    );
}

/// Signs a manifest edited by `edit` and opens it.
fn open_edited(edit: impl FnOnce(&mut Manifest)) -> Result<VerifiedPackage, Error> {
    let mut m = filled_manifest(&files(), &key(1));
    edit(&mut m);
    open_now(&sign_manifest(&m, &files(), &key(1)))
}

#[test]
fn relocation_outside_the_payload_is_refused() {
    let len = payload().len() as u64;
    let error = open_edited(|m| m.targets[0].relocations[2].offset = len - 4).expect_err("field");
    assert!(
        matches!(error, Error::RelocationOutOfPayload { payload_len, .. } if payload_len == len),
        "{error}"
    );
    let error =
        open_edited(|m| m.targets[0].relocations[2].offset = u64::MAX - 2).expect_err("overflow");
    assert!(
        matches!(
            error,
            Error::RelocationOutOfPayload { .. } | Error::Malformed { .. }
        ),
        "{error}"
    );
    let error = open_edited(|m| {
        m.targets[0].relocations[0].target = RelocationTarget::Payload { offset: len + 1 }
    })
    .expect_err("target");
    assert!(
        matches!(error, Error::RelocationTargetOutOfPayload { offset: 3, .. }),
        "{error}"
    );
    // The writer refuses the same manifest.
    let mut m = manifest();
    m.targets[0].relocations[0].target = RelocationTarget::Payload { offset: len + 1 };
    assert!(matches!(
        write_package(m, files(), &key(1)),
        Err(Error::RelocationTargetOutOfPayload { .. })
    ));
}

#[test]
fn overlapping_relocations_are_refused() {
    let error = open_edited(|m| m.targets[0].relocations[1].offset = 5).expect_err("overlap");
    assert!(
        matches!(error, Error::Malformed { ref reason, .. } if reason.contains("overlap")),
        "{error}"
    );
}

#[test]
fn site_outside_the_payload_is_refused() {
    let len = payload().len() as u64;
    let error = open_edited(|m| m.targets[0].sites[0].payload_size = len + 1).expect_err("site");
    assert!(
        matches!(error, Error::SiteOutOfRange { ref function, .. } if function == "parse_header"),
        "{error}"
    );
    let error =
        open_edited(|m| m.targets[0].sites[1].payload_offset = u64::MAX).expect_err("overflow");
    assert!(
        matches!(error, Error::SiteOutOfRange { ref function, .. } if function == "tiny"),
        "{error}"
    );
    let error = open_edited(|m| {
        m.targets[0].sites[0].redirect = Redirect::Entry {
            original: vec![0x90; 4],
        }
    })
    .expect_err("short original");
    assert!(matches!(error, Error::SiteOutOfRange { .. }), "{error}");
    let error = open_edited(|m| m.targets[0].sites[0].baseline_rva = 0x1300).expect_err("unsorted");
    assert!(matches!(error, Error::Malformed { .. }), "{error}");
}

#[test]
fn payload_of_another_length_or_missing_is_refused() {
    let error = open_edited(|m| m.targets[0].payload_len += 1).expect_err("length");
    assert!(
        matches!(error, Error::BadPayload { ref target, .. } if target == "bin/app"),
        "{error}"
    );
    let error = open_edited(|m| m.targets[0].payload = Some("report/report.md".to_owned()))
        .expect_err("payload is another entry of another length");
    assert!(matches!(error, Error::BadPayload { .. }), "{error}");
    let error = open_edited(|m| m.targets[0].payload = Some("payloads/404.bin".to_owned()))
        .expect_err("missing");
    assert!(matches!(error, Error::BadPayload { .. }), "{error}");
}

#[test]
fn absurd_counts_are_refused() {
    let limits = Limits {
        max_relocations: 2,
        ..Limits::default()
    };
    let error = open(&package(), &trust(), NOW, &limits).expect_err("relocations");
    assert!(
        matches!(error, Error::TooMany { ref what, count: 3, limit: 2 } if what == "relocations"),
        "{error}"
    );
    let limits = Limits {
        max_sites: 1,
        ..Limits::default()
    };
    let error = open(&package(), &trust(), NOW, &limits).expect_err("sites");
    assert!(
        matches!(error, Error::TooMany { ref what, count: 2, .. } if what == "patch sites"),
        "{error}"
    );
    let limits = Limits {
        max_targets: 0,
        ..Limits::default()
    };
    let error = open(&package(), &trust(), NOW, &limits).expect_err("targets");
    assert!(
        matches!(error, Error::TooMany { ref what, .. } if what == "targets"),
        "{error}"
    );
}

// --- unwind table ------------------------------------------------------------------------------

#[test]
fn unwind_table_round_trips_and_is_omitted_when_absent() {
    let verified = open_now(&package()).expect("opens");
    let target = &verified.manifest.targets[0];
    assert_eq!(
        target.unwind,
        Some(UnwindTable {
            offset: UNWIND_TABLE_AT,
            count: 1
        })
    );
    let text = String::from_utf8(verified.manifest_bytes.clone()).expect("utf-8");
    assert!(text.contains("\"unwind\": {"), "{text}");
    // The table's entry, read from the payload as the applier hands it to the OS.
    let payload = verified.payload(target).expect("payload");
    let at = UNWIND_TABLE_AT as usize;
    assert_eq!(
        payload[at..at + 12],
        [0, 0, 0, 0, 13, 0, 0, 0, UNWIND_INFO_AT as u8, 0, 0, 0]
    );
    // A target without one has no `unwind` key, so format-1 manifests written before the field
    // existed read the same.
    let mut m = manifest();
    m.targets[0].unwind = None;
    let bytes = write_package(m, files(), &key(1)).expect("valid");
    let verified = open_now(&bytes).expect("opens");
    assert_eq!(verified.manifest.targets[0].unwind, None);
    let text = String::from_utf8(verified.manifest_bytes).expect("utf-8");
    assert!(!text.contains("unwind"), "{text}");
}

/// Signs the sample with its payload edited by `edit_payload` and its manifest by `edit`.
fn open_with_payload(
    edit_payload: impl FnOnce(&mut Vec<u8>),
    edit: impl FnOnce(&mut Manifest),
) -> Result<VerifiedPackage, Error> {
    let mut files = files();
    let mut data = payload();
    edit_payload(&mut data);
    files.insert("payloads/000.bin".to_owned(), data);
    let mut m = filled_manifest(&files, &key(1));
    m.targets[0].payload_len = files["payloads/000.bin"].len() as u64;
    edit(&mut m);
    open_now(&sign_manifest(&m, &files, &key(1)))
}

/// Overwrites the 4-byte little-endian word at `at`.
fn put_u32(data: &mut [u8], at: u64, value: u32) {
    let at = at as usize;
    data[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

#[test]
fn unwind_table_outside_the_payload_is_refused() {
    let len = payload().len() as u64;
    for (offset, count) in [
        (len - 8, 1),
        (UNWIND_TABLE_AT, 2),
        (UNWIND_TABLE_AT, 0),
        (u64::MAX - 4, 1),
    ] {
        let error = open_edited(|m| m.targets[0].unwind = Some(UnwindTable { offset, count }))
            .expect_err("outside");
        assert!(
            matches!(error, Error::UnwindTableOutOfPayload { offset: o, count: c, payload_len, .. }
                if o == offset && c == count && payload_len == len),
            "{offset} {count}: {error}"
        );
    }
    // No payload, yet a table.
    let error = open_edited(|m| {
        let target = &mut m.targets[0];
        target.payload = None;
        target.payload_len = 0;
        target.sites.clear();
        target.relocations.clear();
    })
    .expect_err("no payload");
    assert!(matches!(error, Error::BadPayload { .. }), "{error}");
}

#[test]
fn misaligned_unwind_table_is_refused() {
    let error = open_with_payload(
        |data| data.insert(UNWIND_TABLE_AT as usize, 0),
        |m| {
            m.targets[0].unwind = Some(UnwindTable {
                offset: UNWIND_TABLE_AT + 1,
                count: 1,
            })
        },
    )
    .expect_err("misaligned");
    assert!(
        matches!(error, Error::UnwindTableMisaligned { offset, .. } if offset == UNWIND_TABLE_AT + 1),
        "{error}"
    );
}

#[test]
fn unwind_entry_with_a_bad_range_is_refused() {
    let len = payload().len() as u32;
    for (begin, end) in [(13, 13), (13, 0), (0, len + 1), (0, u32::MAX)] {
        let error = open_with_payload(
            |data| {
                put_u32(data, UNWIND_TABLE_AT, begin);
                put_u32(data, UNWIND_TABLE_AT + 4, end);
            },
            |_| {},
        )
        .expect_err("range");
        assert!(
            matches!(error, Error::UnwindRangeOutOfPayload { index: 0, begin: b, end: e, .. }
                if b == begin && e == end),
            "{begin} {end}: {error}"
        );
    }
}

#[test]
fn unsorted_or_overlapping_unwind_entries_are_refused() {
    for (first, second) in [((7, 13), (0, 7)), ((0, 8), (7, 13))] {
        let error = open_with_payload(
            |data| {
                data.truncate(UNWIND_TABLE_AT as usize);
                for (begin, end) in [first, second] {
                    data.extend_from_slice(
                        &unwind::RuntimeFunction {
                            begin,
                            end,
                            unwind_info: UNWIND_INFO_AT as u32,
                        }
                        .to_bytes(),
                    );
                }
            },
            |m| {
                m.targets[0].unwind = Some(UnwindTable {
                    offset: UNWIND_TABLE_AT,
                    count: 2,
                })
            },
        )
        .expect_err("unsorted");
        assert!(
            matches!(error, Error::UnwindTableUnsorted { index: 1, begin, .. } if begin == second.0),
            "{first:?} {second:?}: {error}"
        );
    }
}

#[test]
fn unwind_info_misaligned_or_outside_the_payload_is_refused() {
    let len = payload().len() as u32;
    // Misaligned, past the end, and a header whose codes run past the end.
    for (info, codes) in [
        (UNWIND_INFO_AT as u32 + 2, 2),
        (len, 2),
        (UNWIND_INFO_AT as u32, 40),
    ] {
        let error = open_with_payload(
            |data| {
                put_u32(data, UNWIND_TABLE_AT + 8, info);
                data[UNWIND_INFO_AT as usize + 2] = codes;
            },
            |_| {},
        )
        .expect_err("info");
        assert!(
            matches!(error, Error::UnwindInfoOutOfPayload { index: 0, info: i, .. } if i == info),
            "{info} {codes}: {error}"
        );
    }
}

#[test]
fn unwind_info_this_format_does_not_carry_is_refused() {
    let at = UNWIND_INFO_AT as usize;
    // Version 3; a language handler (UNW_FLAG_EHANDLER) whose address lies in the payload.
    for header in [0x03, 0x01 | (unwind::UNW_FLAG_EHANDLER << 3)] {
        let error = open_with_payload(|data| data[at] = header, |_| {}).expect_err("info");
        assert!(
            matches!(error, Error::BadUnwindInfo { index: 0, ref reason, .. }
                if reason.contains(if header == 0x03 { "version 3" } else { "handler" })),
            "{header:#x}: {error}"
        );
    }
    // Chained (UNW_FLAG_CHAININFO) to an entry outside the payload, then to one inside.
    let chained = |end: u32| {
        move |data: &mut Vec<u8>| {
            data[at] = 0x01 | (unwind::UNW_FLAG_CHAININFO << 3);
            // The chained entry follows the two codes; move the table after it.
            let entry = unwind::RuntimeFunction {
                begin: 0,
                end,
                unwind_info: UNWIND_INFO_AT as u32,
            };
            let table: Vec<u8> = data[UNWIND_TABLE_AT as usize..].to_vec();
            data.truncate(UNWIND_TABLE_AT as usize);
            data.extend_from_slice(&entry.to_bytes());
            data.extend_from_slice(&table);
        }
    };
    let moved = |m: &mut Manifest| {
        m.targets[0].unwind = Some(UnwindTable {
            offset: UNWIND_TABLE_AT + 12,
            count: 1,
        })
    };
    let error = open_with_payload(chained(0x1000), moved).expect_err("chained outside");
    assert!(
        matches!(error, Error::BadUnwindInfo { ref reason, .. } if reason.contains("chained")),
        "{error}"
    );
    open_with_payload(chained(13), moved).expect("chained inside the payload");
}

#[test]
fn relocation_into_unwind_data_is_refused() {
    for offset in [UNWIND_TABLE_AT + 8, UNWIND_INFO_AT + 4, UNWIND_INFO_AT - 2] {
        let error = open_with_payload(
            |_| {},
            |m| {
                m.targets[0].relocations.push(Relocation {
                    offset,
                    kind: RelocationKind::Rel32,
                    target: RelocationTarget::Payload { offset: 0 },
                    addend: 0,
                })
            },
        )
        .expect_err("relocated");
        assert!(
            matches!(error, Error::UnwindDataRelocated { offset: o, .. } if o == offset),
            "{offset}: {error}"
        );
    }
}

#[test]
fn too_many_unwind_entries_are_refused() {
    let limits = Limits {
        max_unwind_entries: 0,
        ..Limits::default()
    };
    let error = open(&package(), &trust(), NOW, &limits).expect_err("unwind entries");
    assert!(
        matches!(error, Error::TooMany { ref what, count: 1, limit: 0 } if what == "unwind entries"),
        "{error}"
    );
}

// --- relocation arithmetic and redirects ------------------------------------------------------

#[test]
fn relocations_resolve_to_the_expected_values() {
    let m = manifest();
    let target = &m.targets[0];
    let mut code = payload();
    let payload_base = 0x7f00_0000_1000;
    let bias = 0x7f00_1000_0000;
    apply_relocations(&mut code, payload_base, bias, &target.relocations).expect("resolves");
    // lea rax, [rip + disp]: the instruction ends at payload offset 7; the constant is at 21.
    let disp = i32::from_le_bytes(code[3..7].try_into().expect("4"));
    assert_eq!(i64::from(disp), 21 - 7);
    // jmp rel32 to baseline 0x2000: ends at payload offset 13.
    let rel = i32::from_le_bytes(code[9..13].try_into().expect("4"));
    assert_eq!(
        i128::from(rel),
        i128::from(bias + 0x2000) - i128::from(payload_base + 13)
    );
    let abs = u64::from_le_bytes(code[13..21].try_into().expect("8"));
    assert_eq!(abs, bias + 0x4010);
}

#[test]
fn relocation_that_does_not_reach_is_refused() {
    let m = manifest();
    let mut code = payload();
    // The baseline more than 2 GiB away from the payload.
    let error = apply_relocations(&mut code, 0x1000, 0x1_0000_0000, &m.targets[0].relocations)
        .expect_err("far");
    assert!(
        matches!(error, Error::Rel32Overflow { offset: 9, .. }),
        "{error}"
    );
    let mut short = vec![0u8; 4];
    let error = apply_relocations(&mut short, 0, 0, &m.targets[0].relocations).expect_err("short");
    assert!(
        matches!(
            error,
            Error::RelocationOutOfPayload {
                offset: 3,
                payload_len: 4
            }
        ),
        "{error}"
    );
}

#[test]
fn redirect_bytes_for_entry_and_padding() {
    let m = manifest();
    let entry_site = &m.targets[0].sites[0];
    let (at, bytes) = redirect_bytes(entry_site, 0x40_1130, 0x50_0000).expect("entry");
    assert_eq!(at, 0x40_1130);
    let rel = (0x50_0000i64 - (0x40_1130 + 5)) as i32;
    let mut expected = vec![0xE9];
    expected.extend_from_slice(&rel.to_le_bytes());
    assert_eq!(bytes, expected);

    let padding_site = &m.targets[0].sites[1];
    let (at, bytes) = redirect_bytes(padding_site, 0x40_1200, 0x50_0007).expect("padding");
    assert_eq!(at, 0x40_1200 - 5);
    let rel = (0x50_0007i64 - 0x40_1200) as i32;
    let mut expected = vec![0xE9];
    expected.extend_from_slice(&rel.to_le_bytes());
    expected.extend_from_slice(&[0xEB, 0xF9]);
    assert_eq!(bytes, expected);
    assert_eq!(bytes.len(), padding_site.redirect.original().len());

    let error = redirect_bytes(entry_site, 0x40_1130, 0x1_0040_1130).expect_err("far");
    assert!(matches!(error, Error::RedirectOutOfReach { .. }), "{error}");
    let error = redirect_bytes(padding_site, 3, 0x10).expect_err("no room");
    assert!(matches!(error, Error::AddressOverflow { .. }), "{error}");
}

// --- keys and trust files -------------------------------------------------------------------

#[test]
fn key_text_forms_round_trip_and_bad_ones_are_refused() {
    let secret = SecretKey::generate().expect("random");
    let again = SecretKey::from_text(&secret.to_text()).expect("parses");
    assert_eq!(again.key_id(), secret.key_id());
    let public = PublicKey::from_text(&secret.public_key().to_text()).expect("parses");
    assert_eq!(public, secret.public_key());
    assert_eq!(public.key_id().len(), 32);
    assert!(secret.to_text().starts_with("hotpatch-secret-key-v1 "));
    // Debug names the key, never the seed.
    let debug = format!("{:?}", key(1));
    assert!(debug.contains(&key(1).key_id()), "{debug}");
    assert!(!debug.contains("0101"), "{debug}");
    for bad in [
        "",
        "hotpatch-public-key-v1",
        "hotpatch-secret-key-v1 00",
        "hotpatch-secret-key-v1 zz",
        &format!("hotpatch-public-key-v1 {}", "00".repeat(32)), // a weak point
    ] {
        assert!(
            matches!(SecretKey::from_text(bad), Err(Error::BadKey { .. })),
            "secret {bad:?}"
        );
        assert!(
            matches!(PublicKey::from_text(bad), Err(Error::BadKey { .. })),
            "public {bad:?}"
        );
    }
    // The public text is not a secret key, and the other way round.
    assert!(SecretKey::from_text(&secret.public_key().to_text()).is_err());
    assert!(PublicKey::from_text(&secret.to_text()).is_err());
}

#[test]
fn trust_file_rotation_is_chained_and_refuses_rollback() {
    let v1 = TrustFile::initial(&[key(1).public_key()]).expect("v1");
    let v1_bytes = v1.to_bytes();
    let v1 = TrustFile::load(&v1_bytes, None).expect("loads");
    let v2 = v1
        .rotate(&[key(2).public_key()], &[], &key(1))
        .expect("v2 signed by key 1");
    let v2_bytes = v2.to_bytes();
    let accepted = v1.accept_successor(&v2_bytes).expect("v2 follows v1");
    assert_eq!(accepted.version, 2);
    assert_eq!(Trust::from_trust_file(&accepted).key_ids().count(), 2);

    // v3 retires key 1, signed by key 2.
    let v3 = accepted
        .rotate(&[], &[key(1).key_id()], &key(2))
        .expect("v3");
    let v3 = accepted
        .accept_successor(&v3.to_bytes())
        .expect("v3 follows v2");
    assert!(matches!(
        Trust::from_trust_file(&v3).key(&key(1).key_id()),
        Err(Error::RetiredKey { .. })
    ));

    // Rollback: v2 after v3 was seen.
    assert!(matches!(
        TrustFile::load(&v2_bytes, Some(3)),
        Err(Error::TrustRollback { found: 2, seen: 3 })
    ));
    assert!(matches!(
        v3.accept_successor(&v2_bytes),
        Err(Error::TrustRollback { .. })
    ));
    // A gap: v3 offered to a holder of v1.
    assert!(matches!(
        v1.accept_successor(&v3.to_bytes()),
        Err(Error::TrustVersionGap {
            found: 3,
            previous: 1
        })
    ));
    // v4 signed by the retired key 1 is refused by v3's holder; rotate refuses to make it.
    assert!(matches!(
        v3.rotate(&[key(4).public_key()], &[], &key(1)),
        Err(Error::TrustSignature { version: 4, .. })
    ));
    let forged_v2 = TrustFile::initial(&[key(9).public_key()])
        .expect("v1 of an attacker")
        .rotate(&[], &[], &key(9))
        .expect("attacker's v2");
    assert!(matches!(
        v1.accept_successor(&forged_v2.to_bytes()),
        Err(Error::TrustSignature { version: 2, .. })
    ));
    // A body edited after signing.
    let tampered = String::from_utf8(v2_bytes.clone())
        .expect("utf-8")
        .replacen("false", "true", 1);
    assert!(matches!(
        v1.accept_successor(tampered.as_bytes()),
        Err(Error::TrustSignature { .. })
    ));
    // A version above 1 without a signature line.
    let unsigned = String::from_utf8(v2_bytes).expect("utf-8");
    let body = &unsigned[..unsigned.find("hotpatch-trust-signature-v1").expect("line")];
    assert!(matches!(
        TrustFile::load(body.as_bytes(), None),
        Err(Error::TrustSignature { version: 2, .. })
    ));
}

#[test]
fn trust_file_with_a_key_id_that_does_not_match_is_refused() {
    let v1 = String::from_utf8(
        TrustFile::initial(&[key(1).public_key()])
            .expect("v1")
            .to_bytes(),
    )
    .expect("utf-8");
    let forged = v1.replace(&key(1).key_id(), &key(2).key_id());
    assert!(matches!(
        TrustFile::load(forged.as_bytes(), None),
        Err(Error::Malformed { .. })
    ));
    let unknown_field = v1.replacen("\"version\"", "\"comment\": \"x\",\n  \"version\"", 1);
    assert!(matches!(
        TrustFile::load(unknown_field.as_bytes(), None),
        Err(Error::Malformed { .. })
    ));
}

#[test]
fn issue_time_prefers_the_flag_then_source_date_epoch_then_now() {
    assert_eq!(issue_time(Some(7), Some("9"), 11).expect("flag"), 7);
    assert_eq!(issue_time(None, Some("9\n"), 11).expect("env"), 9);
    assert_eq!(issue_time(None, None, 11).expect("now"), 11);
    assert!(matches!(
        issue_time(None, Some("yesterday"), 11),
        Err(Error::Malformed { ref what, .. }) if what == "SOURCE_DATE_EPOCH"
    ));
}

/// A fixed-seed xorshift, so the mutation test is the same on every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn mutated_packages_never_panic_and_never_open_with_other_content() {
    // The oracle of the fuzz target, run on a fixed set of mutations: whatever the bytes, the
    // reader returns (no panic, no abort on allocation), and what it accepts is the original.
    let bytes = package();
    let original = open_now(&bytes).expect("opens");
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut n_accepted = 0;
    for _ in 0..4000 {
        let mut mutated = bytes.clone();
        match rng.below(5) {
            0 => {
                for _ in 0..=rng.below(4) {
                    let at = rng.below(mutated.len());
                    mutated[at] = rng.next() as u8;
                }
            }
            1 => mutated.truncate(rng.below(bytes.len())),
            2 => {
                let at = rng.below(mutated.len());
                let junk: Vec<u8> = (0..=rng.below(16)).map(|_| rng.next() as u8).collect();
                mutated.splice(at..at, junk);
            }
            3 => {
                // Boundary values over a 32-bit field: sizes, offsets, counts.
                let at = rng.below(mutated.len().saturating_sub(4));
                let value = [0u32, 1, 0x7FFF_FFFF, 0xFFFF_FFFE, 0xFFFF_FFFF][rng.below(5)];
                mutated[at..at + 4].copy_from_slice(&value.to_le_bytes());
            }
            _ => {
                let at = rng.below(mutated.len().saturating_sub(2));
                let value = [0u16, 0xFFFF, 0x8000][rng.below(3)];
                mutated[at..at + 2].copy_from_slice(&value.to_le_bytes());
            }
        }
        let _ = read_unverified(&mutated, &Limits::default());
        if let Ok(opened) = open_now(&mutated) {
            n_accepted += 1;
            assert_eq!(opened.manifest_bytes, original.manifest_bytes);
            assert_eq!(opened.entries, original.entries);
        }
    }
    // Only mutations of bytes that carry no content (dates, attributes) may open.
    assert!(n_accepted < 400, "{n_accepted} of 4000 mutations opened");
}
