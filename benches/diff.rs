//! Criterion benchmarks of ingest and diff, each against a reference measured beside it
//! (GUIDE §4): the decode floor (iced-x86 decoding every function of both builds, nothing
//! else), `hotpatch_diff::diff`, the same diff on a 1-thread and a 2-thread rayon pool, and
//! `hotpatch_image::load` of both files.
//!
//! Pairs: the committed `fixtures/bounds_check` (ELF, and PE with its PDBs), and the large
//! generated pair in `target/bench-data` (or `$HOTPATCH_BENCH_DATA`), which
//! `cargo xtask bench` builds when it is missing. `cargo xtask bench` also turns criterion's
//! results into the one table; `cargo bench --bench diff` alone runs whatever pairs exist.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use hotpatch_image::{Image, Loaded};
use iced_x86::{Decoder, DecoderOptions, Instruction};

/// The files of one pair, read into memory once.
struct PairFiles {
    /// The benchmark group name: `<case>-<format>`.
    name: String,
    baseline: Vec<u8>,
    fixed: Vec<u8>,
    baseline_debug: Option<Vec<u8>>,
    fixed_debug: Option<Vec<u8>>,
    /// A large pair: fewer, flat samples so a run stays within minutes.
    large: bool,
}

impl PairFiles {
    fn read(name: &str, dir: &Path, baseline: &str, fixed: &str, pdbs: bool, large: bool) -> Self {
        let read = |file: &str| {
            let path = dir.join(file);
            std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        };
        let pdb = |binary: &str| read(&Path::new(binary).with_extension("pdb").to_string_lossy());
        PairFiles {
            name: name.to_owned(),
            baseline: read(baseline),
            fixed: read(fixed),
            baseline_debug: pdbs.then(|| pdb(baseline)),
            fixed_debug: pdbs.then(|| pdb(fixed)),
            large,
        }
    }

    fn input_bytes(&self) -> u64 {
        [
            Some(&self.baseline),
            Some(&self.fixed),
            self.baseline_debug.as_ref(),
            self.fixed_debug.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|bytes| bytes.len() as u64)
        .sum()
    }
}

fn pairs() -> Vec<PairFiles> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixture = root.join("fixtures/bounds_check");
    let mut pairs = vec![
        PairFiles::read(
            "bounds_check-elf",
            &fixture.join("elf"),
            "baseline",
            "fixed",
            false,
            false,
        ),
        PairFiles::read(
            "bounds_check-pe",
            &fixture.join("pe"),
            "baseline.exe",
            "fixed.exe",
            true,
            false,
        ),
    ];
    let data = std::env::var_os("HOTPATCH_BENCH_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/bench-data"));
    if data.join("elf/STAMP").is_file() {
        pairs.push(PairFiles::read(
            "large-elf",
            &data.join("elf"),
            "baseline",
            "fixed",
            false,
            true,
        ));
    } else {
        eprintln!(
            "note: no large pair in {}; `cargo xtask bench` generates it",
            data.display()
        );
    }
    if data.join("pe/STAMP").is_file() {
        pairs.push(PairFiles::read(
            "large-pe",
            &data.join("pe"),
            "baseline.exe",
            "fixed.exe",
            true,
            true,
        ));
    }
    pairs
}

/// Decodes every instruction of every function: the least any diff has to do.
fn decode_all(image: &Image<'_>) -> usize {
    let mut instruction = Instruction::default();
    let mut n_instructions = 0;
    for function in &image.functions {
        let mut decoder = Decoder::with_ip(64, function.code, function.rva, DecoderOptions::NONE);
        while decoder.can_decode() {
            decoder.decode_out(&mut instruction);
            n_instructions += 1;
        }
    }
    n_instructions
}

fn load_build<'data>(name: &str, binary: &'data [u8], debug: Option<&'data [u8]>) -> Loaded<'data> {
    hotpatch_image::load(binary, debug).unwrap_or_else(|e| panic!("loading a build of {name}: {e}"))
}

fn bench_pair(c: &mut Criterion, pair: &PairFiles) {
    let load = |binary, debug| load_build(&pair.name, binary, debug);
    let baseline = load(&pair.baseline, pair.baseline_debug.as_deref());
    let fixed = load(&pair.fixed, pair.fixed_debug.as_deref());
    let config = hotpatch_diff::Config::default();

    let mut group = c.benchmark_group(&pair.name);
    if pair.large {
        group
            .sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .measurement_time(Duration::from_secs(15));
    }
    group.bench_function("decode-floor", |b| {
        b.iter(|| decode_all(&baseline.image) + decode_all(&fixed.image))
    });
    group.bench_function("diff", |b| {
        b.iter(|| hotpatch_diff::diff(&baseline.image, &fixed.image, config))
    });
    for (n_threads, name) in [(1, "diff-1-thread"), (2, "diff-2-threads")] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n_threads)
            .build()
            .expect("building a rayon thread pool");
        group.bench_function(name, |b| {
            b.iter(|| pool.install(|| hotpatch_diff::diff(&baseline.image, &fixed.image, config)))
        });
    }
    // Declared last: criterion attaches the throughput to the benchmarks after this call.
    group.throughput(Throughput::Bytes(pair.input_bytes()));
    group.bench_function("load", |b| {
        b.iter(|| {
            let baseline = load(black_box(&pair.baseline), pair.baseline_debug.as_deref());
            let fixed = load(black_box(&pair.fixed), pair.fixed_debug.as_deref());
            baseline.image.functions.len() + fixed.image.functions.len()
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    for pair in pairs() {
        bench_pair(c, &pair);
    }
}

criterion_group!(diff_benches, benches);
criterion_main!(diff_benches);
