//! `cargo xtask bench`: one table of figures, each beside a reference measured in the same run
//! (GUIDE §4), printed and written as JSON to `benches/runs/<date>-<host>.json`.
//!
//! This module owns the frame: the [`Row`] every figure is reported as, the [`Context`] the
//! row sources share, the printing and the JSON. The sources are listed in [`SOURCES`]; each
//! is a function in its own module that measures one area and returns its rows (the diff's in
//! `bench_diff.rs`). `--smoke` runs every source on small inputs (seconds, no targets judged)
//! so CI keeps the bench from rotting; its JSON goes to the target directory, not to
//! `benches/runs/`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{Result, bail};

use crate::shell;

/// What every row source is given.
pub struct Context {
    /// The workspace root.
    pub root: PathBuf,
    /// Where generated and downloaded inputs and their builds are cached between runs
    /// (`target/bench-data`, or `$HOTPATCH_BENCH_DATA`).
    pub data_dir: PathBuf,
    /// The `hotpatch` CLI to measure (a release build; in smoke mode the test-profile build).
    pub hotpatch: PathBuf,
    /// Small inputs, one repetition, no targets judged: the CI smoke run.
    pub smoke: bool,
    /// The pairs the diff rows measure (`--pair`, e.g. `postgres` or `postgres-elf`); empty:
    /// all.
    pub pairs: Vec<String>,
}

/// The unit of a row's value and of its reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Seconds,
    Bytes,
    /// A plain count (functions, binaries, instructions).
    Count,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Seconds => "s",
            Unit::Bytes => "bytes",
            Unit::Count => "count",
        }
    }
}

/// What a figure is measured against, from the same run.
#[derive(Clone, Debug)]
pub struct Reference {
    pub name: String,
    pub value: f64,
    pub unit: Unit,
}

/// One line of the table: a figure, its reference, their ratio and the target it is judged by.
#[derive(Clone, Debug)]
pub struct Row {
    /// What was measured on, e.g. `generated-elf`, `openssl-pe`, `release-1000`.
    pub group: String,
    /// What was measured, e.g. `diff, 1 thread`.
    pub figure: String,
    pub value: f64,
    pub unit: Unit,
    pub reference: Option<Reference>,
    /// `value / reference` unless the source says otherwise (a speed-up is reference / value).
    pub ratio: Option<f64>,
    /// The target as text, e.g. `<= 3x the decode floor`.
    pub target: Option<String>,
    /// Whether the target is met; `None` without a target or in smoke mode.
    pub met: Option<bool>,
}

impl Row {
    pub fn new(group: &str, figure: &str, value: f64, unit: Unit) -> Row {
        Row {
            group: group.to_owned(),
            figure: figure.to_owned(),
            value,
            unit,
            reference: None,
            ratio: None,
            target: None,
            met: None,
        }
    }

    /// Sets the reference and the ratio `value / reference`.
    pub fn against(mut self, name: &str, value: f64, unit: Unit) -> Row {
        self.ratio = Some(self.value / value);
        self.reference = Some(Reference {
            name: name.to_owned(),
            value,
            unit,
        });
        self
    }

    /// Replaces the ratio (a speed-up: reference / value).
    pub fn ratio(mut self, ratio: f64) -> Row {
        self.ratio = Some(ratio);
        self
    }

    /// The target `ratio <= limit`.
    pub fn at_most(mut self, limit: f64, text: &str) -> Row {
        self.met = self.ratio.map(|ratio| ratio <= limit);
        self.target = Some(text.to_owned());
        self
    }

    /// The target `ratio >= limit`.
    #[allow(dead_code, reason = "for speed-ups; the release rows use it")]
    pub fn at_least(mut self, limit: f64, text: &str) -> Row {
        self.met = self.ratio.map(|ratio| ratio >= limit);
        self.target = Some(text.to_owned());
        self
    }
}

/// A row source: measures one area and returns its rows.
pub type Source = fn(&Context) -> Result<Vec<Row>>;

/// Every row source, in table order.
const SOURCES: &[(&str, Source)] = &[
    ("diff", crate::bench_diff::rows),
    ("release", crate::bench_release::rows),
];

pub fn run(args: &[String]) -> Result<()> {
    let mut smoke = false;
    let mut inputs_only = false;
    let mut only: Vec<&str> = Vec::new();
    let mut pairs: Vec<String> = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--smoke" => smoke = true,
            "--inputs-only" => inputs_only = true,
            // One source's rows, e.g. `--only release`: the JSON then holds only those.
            "--only" => match args.next() {
                Some(name) if SOURCES.iter().any(|(source, _)| source == name) => only.push(name),
                _ => bail!(
                    "--only takes a source name: {:?}",
                    SOURCES.iter().map(|(n, _)| *n).collect::<Vec<_>>()
                ),
            },
            // Diff pairs, e.g. `--pair postgres` (both formats) or `--pair postgres-elf`: only
            // those are built and measured.
            "--pair" => match args.next() {
                Some(name) if crate::bench_diff::PAIR_NAMES.contains(&name.as_str()) => {
                    pairs.push(name.clone());
                }
                _ => bail!(
                    "--pair takes a pair or a family of pairs: {:?}",
                    crate::bench_diff::PAIR_NAMES
                ),
            },
            other => bail!(
                "unknown argument `{other}` (hint: `cargo xtask bench [--smoke] [--inputs-only] [--only SOURCE] [--pair NAME]`)"
            ),
        }
    }
    let root = shell::workspace_root();
    let data_dir = std::env::var_os("HOTPATCH_BENCH_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/bench-data"));
    if inputs_only {
        // Build (or find cached) the diff pairs and stop: a CI cache can hold them.
        crate::bench_diff::ensure_pairs(&data_dir, smoke, &pairs)?;
        return Ok(());
    }
    let hotpatch = if smoke {
        shell::build_test_profile_binary("hotpatch", "hotpatch")?
    } else {
        shell::build_release_hotpatch()?
    };
    let context = Context {
        root: root.clone(),
        data_dir,
        hotpatch,
        smoke,
        pairs,
    };
    let mut rows = Vec::new();
    for (name, source) in SOURCES {
        if !only.is_empty() && !only.contains(name) {
            continue;
        }
        eprintln!("bench: measuring {name}");
        rows.extend(source(&context)?);
    }
    if smoke {
        for row in &mut rows {
            row.met = None;
        }
        if rows.is_empty() {
            bail!("the smoke run produced no rows");
        }
    }
    print!("{}", table(&rows));
    let json_path = if smoke {
        shell::target_dir().join("bench-smoke.json")
    } else {
        // `--only` sources and `--pair` pairs name the file, so a partial run does not
        // overwrite the full one.
        let mut name = format!("{}-{}", today(), host());
        for part in only
            .iter()
            .copied()
            .chain(context.pairs.iter().map(String::as_str))
        {
            name.push('-');
            name.push_str(part);
        }
        root.join("benches/runs").join(name + ".json")
    };
    write_json(&json_path, &context, &rows)?;
    eprintln!("figures written to {}", json_path.display());
    Ok(())
}

/// The table as printed (and pasted into `docs/performance.md`): Markdown, one row per figure.
pub fn table(rows: &[Row]) -> String {
    let mut text = String::from("| group | figure | value | reference | ratio | target | met |\n");
    text.push_str("|---|---|---|---|---|---|---|\n");
    for row in rows {
        let reference = row.reference.as_ref().map_or(String::new(), |reference| {
            format!(
                "{}: {}",
                reference.name,
                human(reference.value, reference.unit)
            )
        });
        let ratio = row
            .ratio
            .map_or(String::new(), |ratio| format!("{ratio:.2}x"));
        let met = match row.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        let _ = writeln!(
            text,
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.group,
            row.figure,
            human(row.value, row.unit),
            reference,
            ratio,
            row.target.as_deref().unwrap_or(""),
            met
        );
    }
    text
}

pub fn human(value: f64, unit: Unit) -> String {
    match unit {
        Unit::Seconds if value >= 1.0 => format!("{value:.2} s"),
        Unit::Seconds if value >= 1e-3 => format!("{:.1} ms", value * 1e3),
        Unit::Seconds => format!("{:.1} µs", value * 1e6),
        Unit::Bytes if value >= 1e6 => format!("{:.1} MB", value / 1e6),
        Unit::Bytes => format!("{:.1} kB", value / 1e3),
        Unit::Count => format!("{value:.0}"),
    }
}

fn write_json(path: &Path, context: &Context, rows: &[Row]) -> Result<()> {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            serde_json::json!({
                "group": row.group,
                "figure": row.figure,
                "value": row.value,
                "unit": row.unit.name(),
                "reference": row.reference.as_ref().map(|reference| serde_json::json!({
                    "name": reference.name,
                    "value": reference.value,
                    "unit": reference.unit.name(),
                })),
                "ratio": row.ratio,
                "target": row.target,
                "met": row.met,
            })
        })
        .collect();
    let document = serde_json::json!({
        "schema": "hotpatch-bench/1",
        "date": today(),
        "commit": commit(&context.root),
        "command": if context.smoke { "cargo xtask bench --smoke" } else { "cargo xtask bench" },
        "machine": machine(),
        "rows": rows,
    });
    if let Some(dir) = path.parent() {
        fs_err::create_dir_all(dir)?;
    }
    fs_err::write(path, serde_json::to_string_pretty(&document)? + "\n")?;
    Ok(())
}

/// The commit measured, with `-dirty` when the work tree has changes.
fn commit(root: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    let head = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    if dirty { format!("{head}-dirty") } else { head }
}

/// The machine the figures come from: host, CPU model, logical CPUs, memory, kernel.
fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_bytes = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kbytes| kbytes * 1024);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|text| text.trim().to_owned())
        .ok();
    serde_json::json!({
        "host": host(),
        "cpu_model": cpu_model,
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "memory_bytes": memory_bytes,
        "kernel": kernel,
    })
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Today's UTC date as `YYYY-MM-DD` (Howard Hinnant's civil-from-days).
fn today() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
