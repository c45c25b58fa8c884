//! The one-decode normalization (issue 11): a function normalized before the index knew every
//! address code refers to must come out exactly as with the complete index whenever the
//! assumptions it recorded hold, on every function of every committed fixture build; and the
//! references collected on the way must complete the index exactly as decoding every function
//! for them alone does.

use super::{ImageIndex, Lookup, Namer, normalize, normalize_first, referenced_addresses};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Every committed fixture build: (binary, PDB for PE).
fn fixture_builds() -> Vec<(PathBuf, Option<PathBuf>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
    let mut builds = Vec::new();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("the fixtures directory")
        .map(|entry| entry.expect("a fixture entry").path())
        .filter(|path| path.is_dir())
        .collect();
    cases.sort();
    for case in cases {
        for side in ["baseline", "fixed"] {
            let elf = case.join("elf").join(side);
            if elf.is_file() {
                builds.push((elf, None));
            }
            for extension in ["exe", "dll"] {
                let pe = case.join("pe").join(side).with_extension(extension);
                if pe.is_file() {
                    builds.push((pe.clone(), Some(pe.with_extension("pdb"))));
                }
            }
        }
    }
    builds
}

#[test]
fn first_look_matches_the_complete_index() {
    let (mut n_functions, mut n_assumed, mut n_broken) = (0usize, 0usize, 0usize);
    let builds = fixture_builds();
    assert!(
        builds.len() >= 40,
        "too few fixture builds: {}",
        builds.len()
    );
    for (binary, pdb) in builds {
        let bytes = std::fs::read(&binary).expect("a committed build");
        let pdb_bytes = pdb.map(|path| std::fs::read(path).expect("the PDB beside it"));
        let loaded = hotpatch_image::load(&bytes, pdb_bytes.as_deref()).expect("it loads");
        let image = &loaded.image;
        let no_renames = HashMap::new();

        let partial = ImageIndex::without_code_references(image);
        let partial_namer = Namer::new(image, &no_renames, &partial);
        let mut collected = Vec::new();
        let first: Vec<_> = image
            .functions
            .iter()
            .map(|function| {
                let lookup = Lookup::new(&partial_namer);
                let code = normalize_first(function, &lookup, &mut collected);
                (code, lookup.assumed())
            })
            .collect();
        let mut decoded_alone = Vec::new();
        for function in &image.functions {
            referenced_addresses(function, image, &mut decoded_alone);
        }
        let complete = ImageIndex::without_code_references(image).with_code_references(collected);
        let reference =
            ImageIndex::without_code_references(image).with_code_references(decoded_alone);
        assert_eq!(
            complete.boundaries,
            reference.boundaries,
            "{}: the first look's references differ from decoding for them alone",
            binary.display()
        );

        let namer = Namer::new(image, &no_renames, &complete);
        for (function, (code, assumed)) in image.functions.iter().zip(first) {
            n_functions += 1;
            n_assumed += usize::from(!assumed.is_empty());
            if !assumed.iter().all(|assumption| complete.holds(assumption)) {
                n_broken += 1;
                continue;
            }
            assert_eq!(
                code,
                normalize(function, &namer),
                "{}: {} normalized differently before the index was complete",
                binary.display(),
                function.name
            );
        }
    }
    // The fixtures have string literals and jump tables: the assumptions are exercised.
    assert!(n_assumed > 0, "no function assumed anything");
    eprintln!("{n_functions} functions, {n_assumed} with assumptions, {n_broken} broken");
}
