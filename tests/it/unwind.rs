//! Unwind data for payload code (issue 10 item 2, issue 8): a PE payload carries the fixed
//! build's `UNWIND_INFO` of every copied function with a function table in payload offsets,
//! checked against `.pdata`/`.xdata` as `object` reads them from the file (never through the
//! lift's or the package's own parsing); a function with a language handler is refused with
//! HP1501; an ELF function an exception can cross is refused; the table survives `hotpatch build`,
//! `verify` and `inspect`.

use crate::support::{fixture_cases, fixture_pair, hotpatch, path_str, root};
use hotpatch_lift::{Lifted, Unliftable, UnwindProblem};
use hotpatch_package::{Limits, SecretKey, Trust};
use object::pe;
use object::read::pe::PeFile64;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// One `.pdata` entry and the bytes of its `UNWIND_INFO` (header and codes), read with `object`.
#[derive(Debug)]
struct PdataEntry {
    begin: u64,
    end: u64,
    info: Vec<u8>,
}

/// Every `.pdata` entry of a PE file, with its unwind info bytes: header (4 bytes) and
/// `CountOfCodes` 2-byte codes, as the x64 exception-handling reference lays them out.
fn pdata(binary: &[u8]) -> Vec<PdataEntry> {
    let file = PeFile64::parse(binary).expect("a PE32+ file");
    let sections = file.section_table();
    let directory = file
        .data_directories()
        .get(pe::IMAGE_DIRECTORY_ENTRY_EXCEPTION)
        .expect("an exception directory");
    let table = directory.data(binary, &sections).expect(".pdata readable");
    let word = |bytes: &[u8], at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    table
        .chunks_exact(12)
        .map(|entry| {
            let info_rva = word(entry, 8);
            let info = sections
                .pe_data_at(binary, info_rva)
                .expect("UNWIND_INFO inside a section");
            let len = 4 + 2 * usize::from(info[2]);
            PdataEntry {
                begin: u64::from(word(entry, 0)),
                end: u64::from(word(entry, 4)),
                info: info[..len].to_vec(),
            }
        })
        .collect()
}

/// A lifted pair, the fixed build's bytes, and the fixed-build range of each changed function
/// by the name its patch site carries (the baseline's display name).
struct LiftedPair {
    fixed_bytes: Vec<u8>,
    lifted: Result<Lifted, Vec<Unliftable>>,
    changed: Vec<(String, u64, u64)>,
}

fn load_and_lift(case: &str, format: &str) -> LiftedPair {
    let (base, fixed) = fixture_pair(&root().join("fixtures").join(case), format);
    let read = |path: &str| std::fs::read(root().join(path)).unwrap();
    let debug = |path: &str| {
        let pdb = root().join(path).with_extension("pdb");
        pdb.is_file().then(|| std::fs::read(pdb).unwrap())
    };
    let (base_bytes, fixed_bytes) = (read(&base), read(&fixed));
    let (base_debug, fixed_debug) = (debug(&base), debug(&fixed));
    let old = hotpatch_image::load(&base_bytes, base_debug.as_deref()).unwrap();
    let new = hotpatch_image::load(&fixed_bytes, fixed_debug.as_deref()).unwrap();
    let diff = hotpatch_diff::diff(&old.image, &new.image, hotpatch_diff::Config::default());
    let lifted = hotpatch_lift::lift(&old.image, &new.image, &diff);
    let changed = diff
        .changed
        .iter()
        .map(|c| {
            let name = old.image.functions[c.baseline_index].display_name.clone();
            (name, c.fixed_rva, c.fixed_size)
        })
        .collect();
    LiftedPair {
        fixed_bytes,
        lifted,
        changed,
    }
}

/// The function table in the payload, read back as 12-byte little-endian triples.
fn table_of(lifted: &Lifted) -> Vec<(u64, u64, u64)> {
    let Some(table) = lifted.unwind else {
        return Vec::new();
    };
    assert_eq!(table.offset % 4, 0, "table aligned");
    (0..table.count)
        .map(|index| {
            let at = (table.offset + 12 * index) as usize;
            let word = |i: usize| {
                u64::from(u32::from_le_bytes(
                    lifted.payload[at + i..at + i + 4].try_into().unwrap(),
                ))
            };
            (word(0), word(4), word(8))
        })
        .collect()
}

/// For each replaced function of a lifted PE pair: every `.pdata` entry inside its fixed-build
/// range appears in the payload's table moved to the new code, and its `UNWIND_INFO` bytes in
/// the payload equal the file's. Returns the number of entries checked.
fn check_against_pdata(
    label: &str,
    fixed_bytes: &[u8],
    lifted: &Lifted,
    fixed_rvas: &[(String, u64, u64)],
) -> usize {
    let entries = pdata(fixed_bytes);
    let table = table_of(lifted);
    let mut checked = 0;
    for site in &lifted.sites {
        let (_, rva, size) = fixed_rvas
            .iter()
            .find(|(name, _, _)| *name == site.function)
            .unwrap_or_else(|| panic!("{label}: {} is not a changed function", site.function));
        for entry in entries
            .iter()
            .filter(|e| e.begin >= *rva && e.begin < rva + size)
        {
            // clang places a function's jump tables after its code inside its .pdata range;
            // the payload holds the code alone, so the entry ends with it.
            let begin = site.payload_offset + (entry.begin - rva);
            let end = site.payload_offset + (entry.end.min(rva + size) - rva);
            let (_, _, info) = table
                .iter()
                .find(|(b, e, _)| *b == begin && *e == end)
                .unwrap_or_else(|| {
                    panic!(
                        "{label}: no table entry [{begin:#x}, {end:#x}) for {}: {table:x?}",
                        site.function
                    )
                });
            assert_eq!(info % 4, 0, "{label}: UNWIND_INFO aligned");
            let copied = &lifted.payload[*info as usize..*info as usize + entry.info.len()];
            assert_eq!(
                copied,
                entry.info.as_slice(),
                "{label}: UNWIND_INFO of {}",
                site.function
            );
            checked += 1;
        }
    }
    let sorted = table.windows(2).all(|pair| pair[0].1 <= pair[1].0);
    assert!(
        sorted,
        "{label}: table sorted and not overlapping: {table:x?}"
    );
    checked
}

#[test]
fn live_exceptions_payload_carries_lookups_unwind_info_byte_for_byte() {
    let pair = load_and_lift("live_exceptions", "pe");
    let lifted = pair.lifted.clone().expect("live_exceptions PE lifts");
    let [site] = lifted.sites.as_slice() else {
        panic!("one site: {:?}", lifted.sites)
    };
    assert_eq!(site.function, "lookup");
    let checked = check_against_pdata("live_exceptions", &pair.fixed_bytes, &lifted, &pair.changed);
    assert_eq!(checked, 1);
    // lookup has a real frame: its one entry covers all of its code, and its UNWIND_INFO is
    // version 1 without handler or chain, with codes for the saved registers and the stack it
    // reserves for the call (fixed.cpp: it keeps `scale` across check_index).
    let table = table_of(&lifted);
    assert_eq!(table.len(), 1, "{table:x?}");
    let (begin, end, info) = table[0];
    assert_eq!(
        (begin, end - begin),
        (site.payload_offset, site.payload_size)
    );
    let info = &lifted.payload[info as usize..];
    assert_eq!(info[0] & 0x7, 1, "version 1");
    assert_eq!(info[0] >> 3, 0, "no handler, no chain");
    assert!(
        info[1] > 0 && info[2] >= 2,
        "a prolog with codes: {:x?}",
        &info[..4]
    );
}

#[test]
fn every_eligible_pe_fixture_carries_the_unwind_info_of_its_replaced_functions() {
    let mut with_table = 0;
    for case in fixture_cases() {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let expect: toml::Value =
            toml::from_str(&std::fs::read_to_string(case.join("expect.toml")).unwrap()).unwrap();
        let verdict = expect["expect"]
            .get("pe")
            .and_then(|t| t.get("verdict"))
            .unwrap_or(&expect["expect"]["verdict"]);
        if verdict.as_str() != Some("hotpatch-eligible") || !case.join("pe").is_dir() {
            continue;
        }
        let pair = load_and_lift(&name, "pe");
        let lifted = pair
            .lifted
            .clone()
            .unwrap_or_else(|p| panic!("{name}: {p:?}"));
        let checked = check_against_pdata(&name, &pair.fixed_bytes, &lifted, &pair.changed);
        if checked > 0 {
            with_table += 1;
        } else {
            assert!(
                lifted.unwind.is_none() || !lifted.sites.is_empty(),
                "{name}: a table without any replaced function's entry"
            );
        }
    }
    assert!(
        with_table >= 2,
        "only {with_table} PE fixtures have unwind entries to check"
    );
}

#[test]
fn a_function_with_a_language_handler_is_refused() {
    // load_limit catches (cpp_exceptions): its UNWIND_INFO names __gxx_personality_seh0, whose
    // data (the LSDA) holds image-relative addresses. The policy refuses it first (HP0701); the
    // lift refuses it on its own too.
    let problems = load_and_lift("cpp_exceptions", "pe")
        .lifted
        .expect_err("load_limit has a language handler");
    let handler = problems
        .iter()
        .find_map(|p| match p {
            Unliftable::Unwind {
                function,
                problem: UnwindProblem::LanguageHandler { handler },
                ..
            } if function == "load_limit" => Some(handler.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no handler refusal: {problems:?}"));
    assert!(handler.starts_with("__gxx_personality_seh0"), "{handler}");

    // With HP0701 waived, `hotpatch check` reaches the lift, which makes it HP1501.
    let dir = scratch("handler");
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        "[rules]\nwaivable = [\"HP0701\"]\n\n[[waiver]]\nrule = \"HP0701\"\nbinary = \"fixed.exe\"\n\
         function = \"_Z10load_limitPKc\"\nreason = \"test\"\napproved_by = \"test\"\n",
    )
    .unwrap();
    let (base, fixed) = fixture_pair(&root().join("fixtures/cpp_exceptions"), "pe");
    let output = hotpatch(&[
        "check",
        &base,
        &fixed,
        "--json",
        "--policy",
        path_str(&policy),
    ]);
    assert_eq!(output.status.code(), Some(10));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let finding = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "HP1501")
        .unwrap_or_else(|| panic!("no HP1501: {json}"));
    assert_eq!(finding["function"], "_Z10load_limitPKc");
    assert!(
        finding["evidence"]["handler"]
            .as_str()
            .is_some_and(|h| h.starts_with("__gxx_personality_seh0")),
        "{finding}"
    );
}

#[test]
fn an_elf_function_an_exception_can_cross_is_refused() {
    let problems = load_and_lift("live_exceptions", "elf")
        .lifted
        .expect_err("no .eh_frame for the new code");
    assert!(
        problems.iter().any(|p| matches!(p,
            Unliftable::ExceptionsCrossWithoutUnwindData { function, runtime, .. }
                if function == "lookup" && runtime == "__cxa_throw")),
        "{problems:?}"
    );
    // A C program links no exception runtime: bounds_check lifts, without a table.
    let lifted = load_and_lift("bounds_check", "elf").lifted;
    assert_eq!(lifted.expect("bounds_check ELF lifts").unwind, None);
}

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("hotpatch-it-{}-unwind-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A release tree holding the PE build of `side` of live_exceptions as `svc/app.exe`.
fn pe_tree(dir: &Path, side: &str) -> PathBuf {
    let fixture = root().join("fixtures/live_exceptions/pe");
    std::fs::create_dir_all(dir.join("svc")).unwrap();
    for ext in ["exe", "pdb"] {
        std::fs::copy(
            fixture.join(format!("{side}.{ext}")),
            dir.join(format!("svc/app.{ext}")),
        )
        .unwrap();
    }
    dir.to_path_buf()
}

#[test]
fn build_verify_and_inspect_carry_the_unwind_table() {
    let dir = scratch("build");
    let key = SecretKey::from_seed([9; 32]);
    let key_path = dir.join("release.key");
    std::fs::write(&key_path, key.to_text()).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let public = dir.join("release.pub");
    std::fs::write(&public, key.public_key().to_text()).unwrap();
    let base = pe_tree(&dir.join("base"), "baseline");
    let fixed = pe_tree(&dir.join("fixed"), "fixed");
    let out = dir.join("2027-02.hpk");
    let output = hotpatch(&[
        "build",
        "--release",
        "2027-02",
        "--baseline",
        path_str(&base),
        "--fixed",
        path_str(&fixed),
        "--key",
        path_str(&key_path),
        "--out",
        path_str(&out),
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
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let verify = hotpatch(&[
        "verify",
        path_str(&out),
        "--trust",
        path_str(&public),
        "--at",
        "1800000060",
    ]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );

    let bytes = std::fs::read(&out).unwrap();
    let trust = Trust::from_public_key(key.public_key());
    let package =
        hotpatch_package::open(&bytes, &trust, 1_800_000_060, &Limits::default()).unwrap();
    let [target] = package.manifest.targets.as_slice() else {
        panic!("one target")
    };
    let lifted = load_and_lift("live_exceptions", "pe").lifted.unwrap();
    assert_eq!(target.unwind, lifted.unwind);
    assert!(target.unwind.is_some());
    assert_eq!(package.payload(target), Some(lifted.payload.as_slice()));

    let inspect = hotpatch(&["inspect", path_str(&out), "--json"]);
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let text = String::from_utf8_lossy(&inspect.stdout);
    let table = lifted.unwind.unwrap();
    assert!(
        text.contains("\"unwind\"") && text.contains(&format!("\"offset\": {}", table.offset)),
        "{text}"
    );
}
