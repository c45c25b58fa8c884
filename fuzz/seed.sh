#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ from the committed fixtures (corpora are not committed).
# Run from anywhere; needs binutils' objcopy for the ELF debug-file seeds.
#
#   fuzz/seed.sh            fill the corpora
#   fuzz/seed.sh --fixture  also remake fuzz/fixtures/bounds_check-baseline.stripped (committed)
set -euo pipefail
cd "$(dirname "$0")"
fixtures=../fixtures
elf=$fixtures/bounds_check/elf/baseline

if [[ ${1:-} == --fixture ]]; then
    # The binary the `dwarf` target pairs with its input: no .symtab, no DWARF, build-id kept.
    objcopy --strip-all "$elf" fixtures/bounds_check-baseline.stripped
fi

mkdir -p corpus/pe corpus/pdb corpus/elf corpus/dwarf corpus/diff corpus/lift corpus/package

# pe: every committed PE image.
for f in "$fixtures"/*/pe/*.exe; do
    case=$(basename "$(dirname "$(dirname "$f")")")
    cp "$f" "corpus/pe/$case-$(basename "$f")"
done

# pdb: only the PDB whose GUID and age match the fixed image; any other is refused at once.
cp "$fixtures/bounds_check/pe/baseline.pdb" corpus/pdb/bounds_check-baseline.pdb

# elf: every committed ELF binary (each carries its own DWARF).
for f in "$fixtures"/*/elf/*; do
    case=$(basename "$(dirname "$(dirname "$f")")")
    cp "$f" "corpus/elf/$case-$(basename "$f")"
done

# dwarf: debug files with the fixed binary's build-id: the split-off debug file, and the
# unstripped binary itself (also a valid debug file for it).
objcopy --only-keep-debug "$elf" corpus/dwarf/bounds_check-baseline.debug
cp "$elf" corpus/dwarf/bounds_check-baseline.full

# diff: fixed builds to compare with bounds_check's baseline (every case's ELF and PE image,
# which differ from it a little or a lot), and the PDB that matches the baseline image.
for f in "$fixtures"/*/elf/fixed "$fixtures"/*/pe/fixed.exe; do
    case=$(basename "$(dirname "$(dirname "$f")")")
    cp "$f" "corpus/diff/$case-$(basename "$(dirname "$f")")-fixed"
done
cp "$fixtures/bounds_check/pe/baseline.pdb" corpus/diff/bounds_check-baseline.pdb

# lift: the same fixed builds as diff (lifted against bounds_check's baseline).
cp corpus/diff/* corpus/lift/

# package: packages signed with the fuzz key, their manifests and trust files, written by the
# package crate's example (each seed's first byte tells the target what it is).
cargo run --quiet --manifest-path ../Cargo.toml -p hotpatch-package --example fuzz_seeds -- "$PWD/corpus/package"
