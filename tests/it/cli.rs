//! `hotpatch inspect` as a user runs it: summaries, JSON, finding the PDB, refusing debug
//! information of another build, and clear errors with exit code 2 on bad input.

use crate::support::{Build, builds, hotpatch, inspect_json, path_str, tool};
use std::path::{Path, PathBuf};

fn first(format: &str, case: &str, side: &str) -> Build {
    builds()
        .into_iter()
        .find(|b| b.format == format && b.case == case && b.side == side)
        .unwrap_or_else(|| panic!("fixture {case}/{format}/{side} exists"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hotpatch-it-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Runs `hotpatch inspect` on `file` and checks it fails as a user error should.
fn assert_refused(args: &[&str], expect_in_message: &str) -> String {
    let output = hotpatch(args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(2),
        "{args:?}: exit code; stderr: {stderr}"
    );
    assert!(
        stderr.starts_with("error: "),
        "{args:?}: message style: {stderr}"
    );
    assert!(
        stderr.contains(expect_in_message),
        "{args:?}: {stderr:?} should mention {expect_in_message:?}"
    );
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    assert!(
        output.stdout.is_empty(),
        "{args:?}: nothing on stdout on error"
    );
    stderr
}

#[test]
fn summary_names_format_identity_and_counts() {
    for (format, header) in [
        ("pe", "PE32+ x86_64, debug info: PDB"),
        ("elf", "ELF64 x86_64, debug info: DWARF"),
    ] {
        let build = first(format, "bounds_check", "baseline");
        let output = hotpatch(&["inspect", path_str(&build.binary)]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains(header), "{stdout}");
        let sha = tool("sha256sum", &[path_str(&build.binary)]);
        let sha = sha
            .split_whitespace()
            .next()
            .expect("sha256sum prints a hash");
        assert!(stdout.contains(&format!("sha256        {sha}")), "{stdout}");
        assert!(stdout.contains("functions"), "{stdout}");
    }
}

#[test]
fn json_has_format_identity_and_functions() {
    for build in builds().into_iter().filter(|b| b.case == "bounds_check") {
        let json = inspect_json(&build);
        assert_eq!(json["schema"], "hotpatch-inspect/1");
        assert_eq!(json["format"], build.format, "{}", build.label());
        let sha = tool("sha256sum", &[path_str(&build.binary)]);
        assert_eq!(
            json["identity"]["sha256"],
            sha.split_whitespace().next().unwrap()
        );
        let functions = json["functions"].as_array().expect("functions");
        let check = functions
            .iter()
            .find(|f| f["display_name"] == "lookup_user")
            .unwrap_or_else(|| panic!("{}: lookup_user is listed", build.label()));
        assert!(check["rva"].as_u64().unwrap() > 0);
        assert!(check["size"].as_u64().unwrap() > 0);
        assert_eq!(check["has_debug_info"], true);
        match build.format {
            "pe" => {
                let pe = &json["identity"]["pe"];
                assert!(
                    pe["time_date_stamp"].is_u64() && pe["size_of_image"].as_u64().unwrap() > 0
                );
                assert_eq!(pe["codeview"]["age"], 1);
                assert_eq!(json["debug_info"], "pdb");
            }
            _ => {
                assert_eq!(
                    json["identity"]["elf"]["build_id"].as_str().map(str::len),
                    Some(40)
                );
                assert_eq!(json["debug_info"], "dwarf");
            }
        }
    }
}

#[test]
fn same_input_gives_byte_identical_json() {
    for build in builds().into_iter().filter(|b| b.case == "struct_layout") {
        let first = hotpatch(&["inspect", path_str(&build.binary), "--json"]).stdout;
        let second = hotpatch(&["inspect", path_str(&build.binary), "--json"]).stdout;
        assert!(!first.is_empty());
        assert_eq!(first, second, "{}", build.label());
    }
}

#[test]
fn pdb_is_found_beside_the_binary_and_by_explicit_path() {
    let build = first("pe", "bounds_check", "baseline");
    let dir = scratch("pdb-lookup");
    let copied = dir.join("renamed.exe");
    std::fs::copy(&build.binary, &copied).unwrap();
    // No PDB beside it and the recorded path is relative to the build directory: symbols only.
    let output = hotpatch(&["inspect", path_str(&copied), "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(
        json["debug_info"], "none",
        "a lone image is read without debug info"
    );
    // Explicit --pdb.
    let pdb = build.pdb.clone().unwrap();
    let output = hotpatch(&[
        "inspect",
        path_str(&copied),
        "--pdb",
        path_str(&pdb),
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(json["debug_info"], "pdb");
    // Beside, same stem.
    std::fs::copy(&pdb, dir.join("renamed.pdb")).unwrap();
    let output = hotpatch(&["inspect", path_str(&copied), "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(json["debug_info"], "pdb");
}

#[test]
fn mismatched_pdb_is_refused() {
    let baseline = first("pe", "bounds_check", "baseline");
    let fixed = first("pe", "bounds_check", "fixed");
    let stderr = assert_refused(
        &[
            "inspect",
            path_str(&baseline.binary),
            "--pdb",
            path_str(fixed.pdb.as_ref().unwrap()),
        ],
        "the PDB does not match the image",
    );
    assert!(stderr.contains("hint: "), "{stderr}");
}

/// Splits the DWARF of `binary` into a debug file and strips the binary, as distributions do.
fn split_debug(binary: &Path, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    let debug = dir.join(format!("{stem}.debug"));
    let stripped = dir.join(format!("{stem}.stripped"));
    tool(
        "objcopy",
        &["--only-keep-debug", path_str(binary), path_str(&debug)],
    );
    tool(
        "objcopy",
        &["--strip-debug", path_str(binary), path_str(&stripped)],
    );
    (stripped, debug)
}

#[test]
fn mismatched_dwarf_is_refused_and_matching_dwarf_is_used() {
    let dir = scratch("split-dwarf");
    let baseline = first("elf", "bounds_check", "baseline");
    let fixed = first("elf", "bounds_check", "fixed");
    let (baseline_stripped, baseline_debug) = split_debug(&baseline.binary, &dir, "baseline");
    let (_, fixed_debug) = split_debug(&fixed.binary, &dir, "fixed");

    assert_refused(
        &[
            "inspect",
            path_str(&baseline_stripped),
            "--debug",
            path_str(&fixed_debug),
        ],
        "the debug file does not match the binary",
    );

    let output = hotpatch(&[
        "inspect",
        path_str(&baseline_stripped),
        "--debug",
        path_str(&baseline_debug),
        "--json",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["debug_info"], "dwarf");
    let described = json["functions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["has_debug_info"] == true)
        .count();
    assert!(described > 0, "functions are described by the split DWARF");
}

#[test]
fn bad_inputs_get_a_clear_error_and_exit_code_2() {
    let dir = scratch("bad-input");
    let pe = std::fs::read(&first("pe", "bounds_check", "baseline").binary).unwrap();
    let elf = std::fs::read(&first("elf", "bounds_check", "baseline").binary).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let empty = write("empty.bin", b"");
    let text = write("notes.txt", b"this is not a binary\n");
    let truncated_pe = write("truncated.exe", &pe[..200]);
    let truncated_elf = write("truncated.elf", &elf[..40]);
    let mut arm_elf = elf.clone();
    arm_elf[18..20].copy_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
    let arm_elf = write("arm.elf", &arm_elf);
    let mut i386_pe = pe.clone();
    let pe_offset = u32::from_le_bytes(pe[0x3c..0x40].try_into().unwrap()) as usize;
    i386_pe[pe_offset + 4..pe_offset + 6].copy_from_slice(&0x014cu16.to_le_bytes()); // IMAGE_FILE_MACHINE_I386
    let i386_pe = write("i386.exe", &i386_pe);

    assert_refused(&["inspect", path_str(&empty)], "the file is empty");
    assert_refused(&["inspect", path_str(&text)], "not a PE or ELF binary");
    assert_refused(&["inspect", path_str(&truncated_pe)], "truncated.exe");
    assert_refused(&["inspect", path_str(&truncated_elf)], "truncated.elf");
    assert_refused(&["inspect", path_str(&arm_elf)], "unsupported");
    assert_refused(
        &["inspect", path_str(&i386_pe), "--pdb", "/dev/null"],
        "unsupported",
    );
    assert_refused(&["inspect", "/nonexistent/app.exe"], "/nonexistent/app.exe");
    assert_refused(
        &["inspect", path_str(&text), "--pdb", path_str(&empty)],
        "not a PE or ELF binary",
    );
}

#[test]
fn usage_errors_exit_2() {
    let output = hotpatch(&["inspect"]);
    assert_eq!(output.status.code(), Some(2));
    let output = hotpatch(&["no-such-command"]);
    assert_eq!(output.status.code(), Some(2));
    let output = hotpatch(&["--help"]);
    assert_eq!(output.status.code(), Some(0));
}

/// README: "A closed output pipe (`hotpatch inspect x --json | head`) exits 0". The reader takes
/// a few bytes and closes its end while `hotpatch` still has more to write than a pipe holds, so
/// the next write fails with `EPIPE`: the exit status must still be 0, with nothing on stderr.
#[test]
fn closed_output_pipe_exits_0_without_a_panic() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    // The largest `inspect --json` of the fixtures; it must outgrow the pipe (64 KiB on Linux),
    // or `hotpatch` would finish writing before the reader closes and the test would prove
    // nothing.
    let build = first("pe", "cpp_exceptions", "fixed");
    let args = ["inspect", path_str(&build.binary), "--json"];
    const PIPE_CAPACITY: usize = 64 * 1024;
    const TAKEN: usize = 16;
    let whole = hotpatch(&args).stdout.len();
    assert!(
        whole > PIPE_CAPACITY + TAKEN,
        "{} prints only {whole} bytes: pick a fixture whose JSON outgrows a pipe",
        build.label()
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_hotpatch"))
        .args(args)
        .current_dir(crate::support::root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the hotpatch binary runs");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut head = [0u8; TAKEN];
    stdout
        .read_exact(&mut head)
        .expect("the first bytes arrive");
    assert_eq!(&head[..1], b"{", "JSON starts with an object");
    drop(stdout);
    let output = child.wait_with_output().expect("hotpatch exits");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    assert!(stderr.is_empty(), "nothing on stderr: {stderr}");
}
