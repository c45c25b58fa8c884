//! The diff compares matched functions on their typed form and renders text only for pairs
//! that differ (issue 11). That is sound only if typed equality implies equal text: checked
//! here on every instruction pair of every changed and added function of every fixture, in
//! both formats, so a field added to the text but forgotten in `Instruction::same_form`
//! shows up as a failure rather than as a missed change.

use crate::support::{fixture_cases, fixture_formats, pe_binary};

#[test]
fn typed_equality_implies_equal_text() {
    let mut n_equal = 0usize;
    let mut n_compared = 0usize;
    for case in fixture_cases() {
        for format in fixture_formats(&case) {
            let read = |side: &str| {
                let binary = match format {
                    "pe" => pe_binary(&case, side),
                    _ => case.join("elf").join(side),
                };
                let debug = (format == "pe").then(|| {
                    std::fs::read(binary.with_extension("pdb")).expect("the PDB beside it")
                });
                (std::fs::read(&binary).expect("a committed build"), debug)
            };
            let (baseline_bytes, baseline_pdb) = read("baseline");
            let (fixed_bytes, fixed_pdb) = read("fixed");
            let baseline = hotpatch_image::load(&baseline_bytes, baseline_pdb.as_deref())
                .expect("the baseline loads");
            let fixed = hotpatch_image::load(&fixed_bytes, fixed_pdb.as_deref())
                .expect("the fixed build loads");
            let diff = hotpatch_diff::diff(
                &baseline.image,
                &fixed.image,
                hotpatch_diff::Config::default(),
            );
            let mut listings: Vec<&[hotpatch_diff::Instruction]> = Vec::new();
            for changed in &diff.changed {
                listings.push(&changed.baseline_code);
                listings.push(&changed.fixed_code);
            }
            for added in &diff.added {
                listings.push(&added.code);
            }
            let instructions: Vec<&hotpatch_diff::Instruction> =
                listings.iter().flat_map(|listing| listing.iter()).collect();
            let texts: Vec<String> = instructions.iter().map(|i| i.render()).collect();
            // Equal forms have equal mnemonics: compare within each mnemonic only.
            let mut by_mnemonic: std::collections::BTreeMap<&str, Vec<usize>> =
                std::collections::BTreeMap::new();
            for (k, instruction) in instructions.iter().enumerate() {
                by_mnemonic.entry(instruction.mnemonic).or_default().push(k);
            }
            for group in by_mnemonic.values() {
                for (g, &a) in group.iter().enumerate() {
                    let first = instructions[a];
                    assert!(
                        first.same_form(first),
                        "{}/{format}: not equal to itself: {first:?}",
                        case.display()
                    );
                    for &b in &group[g + 1..] {
                        n_compared += 1;
                        if first.same_form(instructions[b]) {
                            n_equal += 1;
                            assert_eq!(
                                texts[a],
                                texts[b],
                                "{}/{format}: equal typed forms, different text",
                                case.display()
                            );
                        }
                    }
                }
            }
        }
    }
    // Not vacuous: the fixtures hold many instructions of equal form in different places.
    assert!(
        n_equal > 1000 && n_compared > n_equal,
        "only {n_equal} equal of {n_compared} compared"
    );
}
