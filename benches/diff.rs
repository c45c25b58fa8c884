//! Criterion benchmarks of ingest and diff, each against a reference measured beside it
//! (GUIDE §4): the decode floor (iced-x86 decoding every function of both builds, nothing
//! else), `hotpatch_diff::diff`, the same diff on a 1-thread and a 2-thread rayon pool, and
//! `hotpatch_image::load` of both files.
//!
//! Pairs: those `cargo xtask bench` built and names in `HOTPATCH_BENCH_PAIRS` (the generated
//! pair in both formats, a real program's releases); without it, the committed
//! `fixtures/bounds_check` in both formats. `cargo xtask bench` turns criterion's results
//! into the one table.

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
    fn read(name: &str, files: &[PathBuf], large: bool) -> Self {
        let read = |path: &PathBuf| {
            std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        };
        let (baseline_debug, fixed_debug) = match files {
            [_, _, baseline_pdb, fixed_pdb] => (Some(read(baseline_pdb)), Some(read(fixed_pdb))),
            [_, _] => (None, None),
            _ => panic!("pair {name}: expected 2 or 4 files, got {files:?}"),
        };
        PairFiles {
            name: name.to_owned(),
            baseline: read(&files[0]),
            fixed: read(&files[1]),
            baseline_debug,
            fixed_debug,
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

/// The pairs named in `HOTPATCH_BENCH_PAIRS` (what `cargo xtask bench` built:
/// `name|baseline|fixed[|baseline.pdb|fixed.pdb]`, `;`-separated), or else the committed
/// `fixtures/bounds_check` in both formats.
fn pairs() -> Vec<PairFiles> {
    if let Ok(list) = std::env::var("HOTPATCH_BENCH_PAIRS") {
        let smoke = std::env::var_os("HOTPATCH_BENCH_SMOKE").is_some();
        return list
            .split(';')
            .filter(|spec| !spec.is_empty())
            .map(|spec| {
                let mut fields = spec.split('|');
                let name = fields.next().unwrap_or_default();
                let files: Vec<PathBuf> = fields.map(PathBuf::from).collect();
                PairFiles::read(name, &files, !smoke)
            })
            .collect();
    }
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bounds_check");
    vec![
        PairFiles::read(
            "bounds_check-elf",
            &[fixture.join("elf/baseline"), fixture.join("elf/fixed")],
            false,
        ),
        PairFiles::read(
            "bounds_check-pe",
            &[
                fixture.join("pe/baseline.exe"),
                fixture.join("pe/fixed.exe"),
                fixture.join("pe/baseline.pdb"),
                fixture.join("pe/fixed.pdb"),
            ],
            false,
        ),
    ]
}

/// Writes what the table reports beside the timings (functions and code bytes of both
/// builds) to `<target>/bench-facts/<pair>.json`.
fn write_facts(pair: &PairFiles, baseline: &Image<'_>, fixed: &Image<'_>) {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("bench-facts");
    let code_bytes =
        |image: &Image<'_>| -> u64 { image.functions.iter().map(|f| f.code.len() as u64).sum() };
    let facts = format!(
        "{{\"functions\": {}, \"code_bytes\": {}, \"instructions\": {}}}\n",
        baseline.functions.len() + fixed.functions.len(),
        code_bytes(baseline) + code_bytes(fixed),
        decode_all(baseline) + decode_all(fixed),
    );
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join(format!("{}.json", pair.name)), facts))
        .unwrap_or_else(|e| panic!("writing {}: {e}", dir.display()));
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

    write_facts(pair, &baseline.image, &fixed.image);

    let mut group = c.benchmark_group(&pair.name);
    if std::env::var_os("HOTPATCH_BENCH_SMOKE").is_some() {
        // Seconds for the whole run: the smoke checks that the bench works, not the figures.
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(50))
            .measurement_time(Duration::from_millis(200));
    } else if pair.large {
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
