//! Path mapping of `--source-root`.

use super::{SourceRoot, SourceRoots, normalize};

fn check(roots: &[&str], build_path: &str, expect: Option<&str>) {
    let roots: Vec<SourceRoot> = roots.iter().map(|r| r.parse().unwrap()).collect();
    assert_eq!(
        SourceRoots::new(&roots).map(build_path).as_deref(),
        expect,
        "{build_path}"
    );
}

#[test]
fn normalizes_dots_and_backslashes() {
    assert_eq!(normalize("././fixed.c"), "fixed.c");
    assert_eq!(normalize(r"C:\src\.\a.c"), "C:/src/a.c");
    assert_eq!(normalize("/build//src/./a.c"), "/build/src/a.c");
}

#[test]
fn maps_prefixes_at_component_boundaries() {
    check(
        &["/build/src=repo"],
        "/build/src/lib/a.c",
        Some("repo/lib/a.c"),
    );
    check(&["/build/src=repo"], "/build/srcx/a.c", None);
    check(
        &["/build=b", "/build/src=repo"],
        "/build/src/a.c",
        Some("repo/a.c"),
    );
    check(&[r"C:\work=w"], r"C:\work\a.c", Some("w/a.c"));
    check(&["=fixtures/x"], "././fixed.c", Some("fixtures/x/fixed.c"));
    check(&["=fixtures/x"], "/usr/include/stdio.h", None);
    check(&[], "fixed.c", None);
}

#[test]
fn rejects_malformed_roots() {
    assert!("nodir".parse::<SourceRoot>().is_err());
    assert!("/build=".parse::<SourceRoot>().is_err());
}
