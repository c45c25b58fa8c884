//! The PE layout check (`hotpatch_apply::pe_check`, `layout`) on every committed PE fixture,
//! clang + lld and MSVC builds alike: every function the PDB describes passes as a function
//! entry (so the Windows applier refuses no real target), a site inside a function does not,
//! and files that are not x86-64 PE32+ or are cut short are refused without a panic. The
//! expectations come from the PDB (read by the build side's reader, a dev-dependency only).

use hotpatch_apply::layout::{ImageLayout, is_function_entry};
use hotpatch_apply::pe_check::read_layout;
use std::io::Cursor;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// Every PE image committed under fixtures/*/pe with its PDB.
fn pe_images() -> Vec<(PathBuf, PathBuf)> {
    let mut images = Vec::new();
    for case in std::fs::read_dir(fixtures()).unwrap() {
        let pe = case.unwrap().path().join("pe");
        let Ok(files) = std::fs::read_dir(&pe) else {
            continue;
        };
        for file in files {
            let path = file.unwrap().path();
            let ext = path.extension().and_then(|e| e.to_str());
            if matches!(ext, Some("exe" | "dll")) {
                let pdb = path.with_extension("pdb");
                if pdb.exists() {
                    images.push((path, pdb));
                }
            }
        }
    }
    images.sort();
    assert!(images.len() >= 40, "{images:?}");
    images
}

fn layout_of(bytes: &[u8]) -> Result<ImageLayout, String> {
    read_layout(&mut Cursor::new(bytes))
}

#[test]
fn every_function_of_every_pe_fixture_is_an_entry_and_its_inside_is_not() {
    let mut checked = 0;
    let mut inside = 0;
    for (image_path, pdb_path) in pe_images() {
        let bytes = std::fs::read(&image_path).unwrap();
        let pdb = std::fs::read(&pdb_path).unwrap();
        let layout = layout_of(&bytes).unwrap_or_else(|e| panic!("{image_path:?}: {e}"));
        assert!(
            layout.segments.iter().any(|s| s.2),
            "{image_path:?}: an executable section"
        );
        let starts = layout.function_starts.clone().unwrap();
        let loaded = hotpatch_image::load(&bytes, Some(&pdb)).unwrap();
        for function in loaded.image.functions.iter().filter(|f| f.size > 0) {
            assert_eq!(
                is_function_entry(&layout, function.rva, function.size),
                Ok(true),
                "{image_path:?}: {} at {:#x} ({} bytes)",
                function.name,
                function.rva,
                function.size
            );
            checked += 1;
            // One byte in, inside a function .pdata describes: not an entry.
            if starts.contains(&function.rva) && function.size > 1 {
                assert_eq!(
                    is_function_entry(&layout, function.rva + 1, function.size - 1),
                    Ok(false),
                    "{image_path:?}: inside {}",
                    function.name
                );
                inside += 1;
            }
        }
    }
    println!("{checked} functions are entries, {inside} inner addresses are not");
    assert!(checked > 1000 && inside > 1000, "{checked} {inside}");
}

#[test]
fn other_machines_formats_and_truncations_are_refused_without_panic() {
    let exe = std::fs::read(fixtures().join("bounds_check/pe/baseline.exe")).unwrap();
    let elf = std::fs::read(fixtures().join("bounds_check/elf/baseline")).unwrap();
    assert!(layout_of(&elf).unwrap_err().contains("not PE"));
    // The COFF machine field, at e_lfanew + 4.
    let pe = u32::from_le_bytes(exe[0x3c..0x40].try_into().unwrap()) as usize;
    let mut arm64 = exe.clone();
    arm64[pe + 4..pe + 6].copy_from_slice(&0xaa64u16.to_le_bytes());
    assert!(layout_of(&arm64).unwrap_err().contains("0xaa64"));
    let whole = layout_of(&exe).unwrap();
    for len in (0..exe.len()).step_by(97) {
        // Cut anywhere: refused, or read with what is there; never a panic, never more.
        if let Ok(layout) = layout_of(&exe[..len]) {
            assert!(layout.segments.len() <= whole.segments.len());
        }
    }
}
