//! The applier stays small and trusted: its normal dependency tree holds no disassembler, no
//! debug-information reader, no thread pool and no other hotpatch crate than the package.

use std::process::Command;

fn normal_dependencies() -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "tree",
            "--offline",
            "-p",
            "hotpatch-apply",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn applier_dependencies_exclude_the_build_side() {
    let tree = normal_dependencies();
    let names: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert!(names.contains(&"hotpatch-package"), "{tree}");
    for banned in [
        "iced-x86",
        "object",
        "gimli",
        "pdb2",
        "pdb",
        "rayon",
        "hotpatch-diff",
        "hotpatch-image",
        "hotpatch-policy",
        "hotpatch-lift",
        "hotpatch",
    ] {
        assert!(
            !names.contains(&banned),
            "hotpatch-apply depends on {banned}"
        );
    }
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    println!(
        "hotpatch-apply: {} crates in its normal dependency tree",
        unique.len()
    );
}
