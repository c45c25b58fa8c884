//! Checks of the code base itself: layering between the crates, module docs, and the test
//! attributes the house style bans.

use crate::support::root;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable directory") {
        let path = entry.expect("entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !matches!(name.as_str(), "target" | "fixtures" | "snapshots" | ".git") {
                rust_files(&path, files);
            }
        } else if name.ends_with(".rs") {
            files.push(path);
        }
    }
}

fn workspace_rust_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["src", "crates", "xtask", "tests", "benches"] {
        rust_files(&root().join(dir), &mut files);
    }
    files.sort();
    assert!(files.len() > 20);
    files
}

#[test]
fn every_module_says_what_it_owns() {
    let missing: Vec<String> = workspace_rust_files()
        .into_iter()
        .filter(|path| !std::fs::read_to_string(path).unwrap().starts_with("//!"))
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a //! module doc: {missing:?}"
    );
}

#[test]
fn no_should_panic_or_ignore() {
    let banned = ["#[should_panic", "#[ignore"];
    let offenders: Vec<String> = workspace_rust_files()
        .into_iter()
        .filter(|path| !path.ends_with("tidy.rs"))
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            banned.iter().any(|b| text.contains(b))
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(offenders.is_empty(), "{offenders:?}");
}

/// The `[dependencies]` table of a crate manifest, as text.
fn dependencies(manifest: &str) -> String {
    let text = std::fs::read_to_string(root().join(manifest)).unwrap();
    let start = text.find("[dependencies]").expect("a [dependencies] table");
    let rest = &text[start + "[dependencies]".len()..];
    rest[..rest.find("\n[").unwrap_or(rest.len())].to_owned()
}

#[test]
fn layering_holds() {
    // image knows nothing of diffing or policy; diff knows nothing of policy; policy reads
    // models, never file formats.
    let image = dependencies("crates/image/Cargo.toml");
    assert!(
        !image.contains("hotpatch-diff") && !image.contains("hotpatch-policy"),
        "{image}"
    );
    let diff = dependencies("crates/diff/Cargo.toml");
    assert!(!diff.contains("hotpatch-policy"), "{diff}");
    let policy = dependencies("crates/policy/Cargo.toml");
    for format_crate in ["object", "pdb2", "gimli", "iced-x86"] {
        assert!(
            !policy.contains(format_crate),
            "policy depends on {format_crate}"
        );
    }
    // The applier links the package crate: it stays free of the build side's readers and of
    // the other hotpatch crates.
    let package = dependencies("crates/package/Cargo.toml");
    for heavy in ["hotpatch-", "object", "pdb2", "gimli", "iced-x86", "rayon"] {
        assert!(!package.contains(heavy), "package depends on {heavy}");
    }
    for library in [
        "crates/image",
        "crates/diff",
        "crates/policy",
        "crates/package",
    ] {
        let mut files = Vec::new();
        rust_files(&root().join(library).join("src"), &mut files);
        // Unit tests (`tests.rs`) may build and read programs; library code may not.
        for file in files.into_iter().filter(|file| !file.ends_with("tests.rs")) {
            let text = std::fs::read_to_string(&file).unwrap();
            for io in ["std::fs::", "fs_err::", "File::open"] {
                assert!(
                    !text.contains(io),
                    "{} does IO ({io}); only the CLI and xtask touch files",
                    file.display()
                );
            }
        }
    }
}

#[test]
fn policy_decides_on_typed_code_not_listing_text() {
    // The listings are rendered for people; the policy reads the typed code (control flow and
    // typed references), so no string in an operand can fire a rule.
    let mut files = Vec::new();
    rust_files(&root().join("crates/policy/src"), &mut files);
    assert!(!files.is_empty());
    for file in files {
        let text = fs_err::read_to_string(&file).unwrap();
        for banned in ["_listing", "first_difference.", ".render_with("] {
            let hits: Vec<&str> = text
                .lines()
                .filter(|line| line.contains(banned) && !line.trim_start().starts_with("//"))
                .collect();
            assert!(
                hits.is_empty() || (banned == "first_difference." && file.ends_with("change.rs")),
                "{} reads listing text ({banned}): {hits:?}",
                file.display()
            );
        }
    }
}
