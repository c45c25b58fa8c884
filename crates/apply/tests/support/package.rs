//! Real signed packages for the live tests: a key generated per test, manifests naming the
//! built test program or library by its SHA-256 and build-id, and hand-assembled payloads for
//! the fixed compute() (the lift does not exist yet).
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use super::{build_id_of, bytes_at_rva, sha256_of, symbol};
use hotpatch_package::{
    Manifest, PackageKind, PatchSite, Redirect, Relocation, RelocationKind, RelocationTarget,
    SecretKey, Target, TargetIdentity, write_package,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A signing key and the public key file the applier is given as `--trust`.
pub struct Signer {
    pub secret: SecretKey,
    pub trust_file: PathBuf,
}

impl Signer {
    pub fn new(dir: &Path) -> Signer {
        let secret = SecretKey::generate().expect("random key");
        let trust_file = dir.join("release.pub");
        std::fs::write(&trust_file, secret.public_key().to_text()).unwrap();
        Signer { secret, trust_file }
    }
}

/// Which fixed code a package carries for compute().
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fix {
    /// No payload: a baseline package that records the build.
    None,
    /// Month 1: `jmp helper` (a rel32 relocation against the baseline's helper): 3x.
    TailCallHelper,
    /// Month 2: `lea eax, [rdi+rdi*2]; ret`: 3x, no relocation.
    Multiply,
    /// A replacement for spin(): `ret` (only to test the busy refusal).
    ReturnFromSpin,
    /// Two sites in one target: compute() as `Multiply` and spin() as `ReturnFromSpin` (for
    /// the all-or-nothing checks; spin() runs only in `spin` mode).
    TwoSites,
}

/// Unix time now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The manifest target for `binary` (named `name`) with the payload for `fix`, and the files.
pub fn target(binary: &Path, name: &str, fix: Fix) -> (Target, BTreeMap<String, Vec<u8>>) {
    let identity = TargetIdentity::Elf {
        build_id: build_id_of(binary),
        sha256: sha256_of(binary),
    };
    let mut target = Target {
        name: name.to_owned(),
        identity,
        image_base_rva: 0,
        payload: None,
        payload_len: 0,
        sites: Vec::new(),
        relocations: Vec::new(),
        unwind: None,
    };
    let mut files = BTreeMap::new();
    if fix == Fix::TwoSites {
        let mut payload = Vec::new();
        for (function, code) in [
            ("compute", &[0x8d, 0x04, 0x7f, 0xc3][..]),
            ("spin", &[0xc3][..]),
        ] {
            let (rva, size) = symbol(binary, function);
            let offset = payload.len() as u64;
            payload.extend_from_slice(code);
            payload.resize(payload.len().next_multiple_of(16), 0xcc);
            target.sites.push(PatchSite {
                function: function.to_owned(),
                baseline_rva: rva,
                baseline_size: size,
                payload_offset: offset,
                payload_size: code.len() as u64,
                redirect: Redirect::Entry {
                    original: bytes_at_rva(binary, rva, 5),
                },
            });
        }
        target.sites.sort_by_key(|site| site.baseline_rva);
        let entry = format!("payloads/{}.bin", name.replace('/', "_"));
        target.payload = Some(entry.clone());
        target.payload_len = payload.len() as u64;
        files.insert(entry, payload);
        return (target, files);
    }
    let (function, code, relocations): (&str, Vec<u8>, Vec<Relocation>) = match fix {
        Fix::None | Fix::TwoSites => return (target, files),
        Fix::TailCallHelper => {
            let (helper, _) = symbol(binary, "helper");
            (
                "compute",
                vec![0xe9, 0, 0, 0, 0],
                vec![Relocation {
                    offset: 1,
                    kind: RelocationKind::Rel32,
                    target: RelocationTarget::Baseline { rva: helper },
                    addend: -4,
                }],
            )
        }
        Fix::Multiply => ("compute", vec![0x8d, 0x04, 0x7f, 0xc3], Vec::new()),
        Fix::ReturnFromSpin => ("spin", vec![0xc3], Vec::new()),
    };
    let (rva, size) = symbol(binary, function);
    let mut payload = code.clone();
    // Filler after the code, as a lifted payload would have between functions.
    payload.resize(16, 0xcc);
    let entry = format!("payloads/{}.bin", name.replace('/', "_"));
    target.payload = Some(entry.clone());
    target.payload_len = payload.len() as u64;
    target.sites.push(PatchSite {
        function: function.to_owned(),
        baseline_rva: rva,
        baseline_size: size,
        payload_offset: 0,
        payload_size: code.len() as u64,
        redirect: Redirect::Entry {
            original: bytes_at_rva(binary, rva, 5),
        },
    });
    target.relocations = relocations;
    files.insert(entry, payload);
    (target, files)
}

/// A signed package of `kind` with `sequence` for the given targets.
pub fn package(
    signer: &Signer,
    kind: PackageKind,
    sequence: u64,
    min_sequence: u64,
    expires_at: u64,
    targets: Vec<(Target, BTreeMap<String, Vec<u8>>)>,
) -> Vec<u8> {
    let mut files = BTreeMap::new();
    let mut manifest_targets = Vec::new();
    for (target, target_files) in targets {
        manifest_targets.push(target);
        files.extend(target_files);
    }
    let manifest = Manifest {
        format: hotpatch_package::FORMAT_VERSION,
        product: "demo".into(),
        channel: "stable".into(),
        release: format!("2026-{:02}", 10 + sequence.min(2)),
        kind,
        baseline_id: "demo-2026-10".into(),
        sequence,
        min_sequence,
        issued_at: now() - 60,
        expires_at,
        key_id: String::new(),
        entries: Vec::new(),
        targets: manifest_targets,
    };
    write_package(manifest, files, &signer.secret).expect("the writer accepts the test package")
}

/// Writes a package file and returns its path.
pub fn save(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The entries of a package archive, inflated, in archive order (local headers only: the
/// writer emits no data descriptors).
pub fn entries(package: &[u8]) -> Vec<(String, Vec<u8>)> {
    use std::io::Read;
    let u16_at = |at: usize| u16::from_le_bytes(package[at..at + 2].try_into().unwrap()) as usize;
    let u32_at = |at: usize| u32::from_le_bytes(package[at..at + 4].try_into().unwrap()) as usize;
    let mut out = Vec::new();
    let mut at = 0;
    while u32_at(at) == 0x0403_4b50 {
        let method = u16_at(at + 8);
        let compressed = u32_at(at + 18);
        let name_len = u16_at(at + 26);
        let extra_len = u16_at(at + 28);
        let name = String::from_utf8(package[at + 30..at + 30 + name_len].to_vec()).unwrap();
        let start = at + 30 + name_len + extra_len;
        let raw = &package[start..start + compressed];
        let data = if method == 8 {
            let mut data = Vec::new();
            flate2::read::DeflateDecoder::new(raw)
                .read_to_end(&mut data)
                .unwrap();
            data
        } else {
            raw.to_vec()
        };
        out.push((name, data));
        at = start + compressed;
    }
    out
}

/// A zip of stored (uncompressed) entries in the order given, as the package reader accepts.
pub fn stored_zip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let raw: Vec<RawEntry> = entries
        .iter()
        .map(|(name, data)| RawEntry::stored(name, data))
        .collect();
    zip(&raw)
}

/// One zip entry as it is written: the bytes in the archive and what the headers claim.
#[derive(Debug, Clone)]
pub struct RawEntry {
    pub name: String,
    /// The bytes as stored in the archive (deflated for method 8).
    pub stored: Vec<u8>,
    /// 0 stored, 8 deflate.
    pub method: u16,
    pub crc: u32,
    /// The inflated size both headers declare.
    pub size: u32,
    /// The unix mode in the external attributes (`0o120_777` is a symbolic link).
    pub mode: u32,
}

impl RawEntry {
    pub fn stored(name: &str, data: &[u8]) -> RawEntry {
        let mut crc = flate2::Crc::new();
        crc.update(data);
        RawEntry {
            name: name.to_owned(),
            stored: data.to_vec(),
            method: 0,
            crc: crc.sum(),
            size: data.len() as u32,
            mode: 0o100_644,
        }
    }

    pub fn deflated(name: &str, data: &[u8]) -> RawEntry {
        use std::io::Write;
        let mut encoder =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(data).unwrap();
        let mut entry = RawEntry::stored(name, data);
        entry.stored = encoder.finish().unwrap();
        entry.method = 8;
        entry
    }
}

/// A zip of `entries` in the order given, with exactly the headers they claim.
pub fn zip(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    let put16 = |v: &mut Vec<u8>, x: u16| v.extend_from_slice(&x.to_le_bytes());
    let put32 = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&x.to_le_bytes());
    for entry in entries {
        let name = &entry.name;
        let offset = out.len() as u32;
        put32(&mut out, 0x0403_4b50);
        put16(&mut out, 20);
        put16(&mut out, 0x0800);
        put16(&mut out, entry.method);
        put16(&mut out, 0);
        put16(&mut out, (1 << 5) | 1);
        put32(&mut out, entry.crc);
        put32(&mut out, entry.stored.len() as u32);
        put32(&mut out, entry.size);
        put16(&mut out, name.len() as u16);
        put16(&mut out, 0);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&entry.stored);
        put32(&mut central, 0x0201_4b50);
        put16(&mut central, (3 << 8) | 20);
        put16(&mut central, 20);
        put16(&mut central, 0x0800);
        put16(&mut central, entry.method);
        put16(&mut central, 0);
        put16(&mut central, (1 << 5) | 1);
        put32(&mut central, entry.crc);
        put32(&mut central, entry.stored.len() as u32);
        put32(&mut central, entry.size);
        put16(&mut central, name.len() as u16);
        put16(&mut central, 0);
        put16(&mut central, 0);
        put16(&mut central, 0);
        put16(&mut central, 0);
        put32(&mut central, entry.mode << 16);
        put32(&mut central, offset);
        central.extend_from_slice(name.as_bytes());
    }
    let central_offset = out.len() as u32;
    out.extend_from_slice(&central);
    put32(&mut out, 0x0605_4b50);
    put16(&mut out, 0);
    put16(&mut out, 0);
    put16(&mut out, entries.len() as u16);
    put16(&mut out, entries.len() as u16);
    put32(&mut out, central.len() as u32);
    put32(&mut out, central_offset);
    put16(&mut out, 0);
    out
}

/// The package with entry `name` changed by `edit`, re-zipped so that the archive itself
/// stays valid (only the signature and the signed hashes can tell).
pub fn replace_entry(package: &[u8], name: &str, edit: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
    let mut entries = entries(package);
    let entry = entries
        .iter_mut()
        .find(|(entry_name, _)| entry_name == name)
        .unwrap_or_else(|| panic!("{name} not in the package"));
    edit(&mut entry.1);
    stored_zip(&entries)
}

/// The package with its manifest (as JSON) changed by `edit` and signed again by `signer`:
/// a package the trusted key really signed, carrying what an attacker with that key, or a
/// broken build, would put in it.
pub fn resign(
    package: &[u8],
    signer: &Signer,
    edit: impl FnOnce(&mut serde_json::Value),
) -> Vec<u8> {
    let mut entries = entries(package);
    let manifest = entries
        .iter_mut()
        .find(|(name, _)| name == "manifest.json")
        .expect("a manifest");
    let mut value: serde_json::Value = serde_json::from_slice(&manifest.1).expect("manifest JSON");
    edit(&mut value);
    let mut bytes = serde_json::to_vec_pretty(&value).expect("manifest serializes");
    bytes.push(b'\n');
    let signature = signer.secret.sign(&bytes).to_vec();
    manifest.1 = bytes;
    let sig = entries
        .iter_mut()
        .find(|(name, _)| name == "manifest.sig")
        .expect("a signature");
    sig.1 = signature;
    stored_zip(&entries)
}
