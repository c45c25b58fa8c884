//! Scale-out of `hotpatch build` over many machines (a CI matrix).
//! `--shard I/N` diffs, assesses and lifts the binaries assigned to shard I of N and writes their
//! results to a shard directory; `--merge DIR...` checks that the shards make up one release
//! exactly once and hands their results to the package assembly of `build`, so the merged
//! package is byte-identical to the one a single machine builds.
//!
//! A binary's shard is a function of its relative path alone (SHA-256 of the path, mod N), so
//! every machine agrees without talking to the others. Each shard lists the whole release (every
//! path with the SHA-256 of both builds): that listing is how the merge knows what "the whole
//! release" is, and that all shards saw the same one.

use crate::build::{self, Args, BinaryReport, Built};
use anyhow::{Context, Result, bail};
use hotpatch_package::{Target, TargetIdentity};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The version of a shard directory's `shard.json`.
pub const SCHEMA: &str = "hotpatch-shard/1";
const SHARD_FILE: &str = "shard.json";
/// The subdirectory of a shard directory with payloads and audit reports.
const FILES_DIR: &str = "binaries";
/// A shard file above this size is refused before it is parsed.
const MAX_SHARD_FILE: u64 = 1 << 30;

#[derive(clap::Args)]
pub struct ScaleOutArgs {
    /// Diff, assess and lift only shard I of N (1-based: GitLab's
    /// `$CI_NODE_INDEX/$CI_NODE_TOTAL`) and write the results to the directory --out; no key is
    /// needed.
    #[arg(
        long,
        value_name = "I/N",
        conflicts_with_all = ["merge", "key", "sequence", "min_sequence", "baseline_id",
            "baseline_package", "issued_at", "report_dir", "json"]
    )]
    pub shard: Option<ShardSpec>,
    /// Assemble and sign the package from shard directories (`--shard`) that together cover
    /// the release exactly once.
    #[arg(
        long,
        value_name = "DIR",
        num_args = 1..,
        conflicts_with_all = ["baseline", "fixed", "policy"]
    )]
    pub merge: Vec<PathBuf>,
}

/// Shard `index` of `count`, 1-based.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardSpec {
    pub index: u32,
    pub count: u32,
}

impl FromStr for ShardSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let parsed = text
            .split_once('/')
            .and_then(|(i, n)| Some((i.parse::<u32>().ok()?, n.parse::<u32>().ok()?)));
        match parsed {
            Some((index, count)) if (1..=count).contains(&index) => Ok(ShardSpec { index, count }),
            _ => Err(format!(
                "{text:?} is not a shard I/N with 1 <= I <= N (for example 2/4)"
            )),
        }
    }
}

impl fmt::Display for ShardSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The shard (1-based) a binary belongs to among `count`: the first 8 bytes of the SHA-256 of
/// its `/`-separated relative path, big-endian, mod `count`. Stable across machines and runs.
pub fn shard_of(name: &str, count: u32) -> u32 {
    let digest = Sha256::digest(name.as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    let slot = u64::from_be_bytes(head) % u64::from(count.max(1));
    // `slot < count <= u32::MAX`.
    slot as u32 + 1
}

/// `shard.json`: one shard's share of the release.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShardFile {
    schema: String,
    release: String,
    shard: ShardSpec,
    /// SHA-256 over the listing: which binaries the release has, and their bytes.
    release_inputs: String,
    /// SHA-256 of the policy file, `None` without one: every shard must judge alike.
    policy_sha256: Option<String>,
    /// The policy's `[release] leave_out_reboot_required`, for the merge.
    leave_out_reboot_required: bool,
    /// Every binary of the release (both trees), by relative path.
    listing: Vec<ListedBinary>,
    /// This shard's binaries, by relative path.
    binaries: Vec<ShardBinary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListedBinary {
    name: String,
    baseline_sha256: Option<String>,
    fixed_sha256: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShardBinary {
    report: BinaryReport,
    target: Option<Target>,
    payload: Option<StoredFile>,
    audit_html: Option<StoredFile>,
}

/// A file of the shard directory, with what it must hold.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredFile {
    /// Relative to the shard directory, `binaries/NNNN.<ext>`.
    path: String,
    sha256: String,
    len: u64,
}

/// Why a set of shard directories does not make one release.
#[derive(Debug)]
pub enum MergeRefused {
    /// No shard directory carries shard I of N.
    MissingShard { shard: ShardSpec },
    /// Two directories carry the same shard.
    DuplicateShard {
        shard: ShardSpec,
        first: PathBuf,
        second: PathBuf,
    },
    /// A shard holds a binary another shard owns, or lacks one it owns.
    Coverage { dir: PathBuf, detail: String },
    /// Shards split the release into different numbers of shards.
    DifferentCount {
        dir: PathBuf,
        count: u32,
        expected: u32,
    },
    /// A shard is of another release: another month, other binaries or other bytes.
    DifferentRelease { dir: PathBuf, detail: String },
    /// Shards were built with different policy files.
    DifferentPolicy { dir: PathBuf },
    /// A binary's identity in a shard's results differs from the release listing.
    IdentityMismatch { dir: PathBuf, binary: String },
}

impl MergeRefused {
    /// The exit code (README.md): 4 when the shards do not cover the release exactly once, 5
    /// when they are not of one release.
    pub fn exit_code(&self) -> u8 {
        match self {
            MergeRefused::MissingShard { .. }
            | MergeRefused::DuplicateShard { .. }
            | MergeRefused::Coverage { .. } => crate::exit::SHARDS_INCOMPLETE,
            MergeRefused::DifferentCount { .. }
            | MergeRefused::DifferentRelease { .. }
            | MergeRefused::DifferentPolicy { .. }
            | MergeRefused::IdentityMismatch { .. } => crate::exit::SHARDS_MISMATCHED,
        }
    }
}

impl fmt::Display for MergeRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MergeRefused::MissingShard { shard } => {
                write!(f, "shard {shard} is missing: no directory given holds it")
            }
            MergeRefused::DuplicateShard {
                shard,
                first,
                second,
            } => write!(
                f,
                "shard {shard} is given twice: {} and {}",
                first.display(),
                second.display()
            ),
            MergeRefused::Coverage { dir, detail } => write!(f, "{}: {detail}", dir.display()),
            MergeRefused::DifferentCount {
                dir,
                count,
                expected,
            } => write!(
                f,
                "{} is one of {count} shards, the others of {expected}: shards of different N do not combine",
                dir.display()
            ),
            MergeRefused::DifferentRelease { dir, detail } => {
                write!(
                    f,
                    "{} is a shard of another release: {detail}",
                    dir.display()
                )
            }
            MergeRefused::DifferentPolicy { dir } => write!(
                f,
                "{} was built with another policy file than the other shards",
                dir.display()
            ),
            MergeRefused::IdentityMismatch { dir, binary } => write!(
                f,
                "{}: the results for {binary} are of other builds than the release listing names",
                dir.display()
            ),
        }
    }
}

impl std::error::Error for MergeRefused {}

/// `hotpatch build --shard I/N`: analyses and lifts this shard's binaries into `--out`.
pub fn write_shard(args: &Args, shard: ShardSpec, out: &mut dyn Write) -> Result<u8> {
    let policy = crate::check::read_policy(args.policy.as_deref())?;
    let policy_sha256 = match &args.policy {
        Some(path) => Some(hotpatch_image::sha256_hex(&fs_err::read(path)?)),
        None => None,
    };
    let (baseline, fixed) = build::trees(args)?;
    let pairs = build::pair_trees(baseline, fixed)?;
    let listing = listing(&pairs)?;
    let mine: BTreeMap<String, build::Sides> = pairs
        .into_iter()
        .filter(|(name, _)| shard_of(name, shard.count) == shard.index)
        .collect();
    let roots = crate::source::SourceRoots::new(&args.sources.source_roots);
    let built = build::analyse(&mine, &policy, &roots)?;

    let dir = &args.out;
    prepare_dir(dir)?;
    let mut binaries = Vec::with_capacity(built.len());
    for (idx, built) in built.into_iter().enumerate() {
        let (target, payload) = match built.target {
            Some((target, payload)) => (Some(target), Some(payload)),
            None => (None, None),
        };
        let payload = payload
            .map(|bytes| store(dir, &format!("{idx:05}.payload"), &bytes))
            .transpose()?;
        let audit_html = built
            .audit_html
            .map(|html| store(dir, &format!("{idx:05}.html"), html.as_bytes()))
            .transpose()?;
        binaries.push(ShardBinary {
            report: built.report,
            target,
            payload,
            audit_html,
        });
    }
    let file = ShardFile {
        schema: SCHEMA.to_owned(),
        release: args.release.clone(),
        shard,
        release_inputs: release_inputs(&listing),
        policy_sha256,
        leave_out_reboot_required: policy.release.leave_out_reboot_required,
        listing,
        binaries,
    };
    let mut json = serde_json::to_vec_pretty(&file)?;
    json.push(b'\n');
    fs_err::write(dir.join(SHARD_FILE), json)?;
    writeln!(
        out,
        "{}: shard {shard} of release {}: {} of {} binaries",
        dir.display(),
        file.release,
        file.binaries.len(),
        file.listing.len()
    )?;
    Ok(0)
}

/// Every binary of both trees with the SHA-256 of each side, hashed in parallel.
fn listing(pairs: &BTreeMap<String, build::Sides>) -> Result<Vec<ListedBinary>> {
    let hash = |path: &Option<PathBuf>| path.as_deref().map(build::sha256_of).transpose();
    pairs
        .par_iter()
        .map(|(name, (base, fixed))| {
            Ok(ListedBinary {
                name: name.clone(),
                baseline_sha256: hash(base)?,
                fixed_sha256: hash(fixed)?,
            })
        })
        .collect()
}

/// SHA-256 over the listing, one line per binary.
fn release_inputs(listing: &[ListedBinary]) -> String {
    let mut hasher = Sha256::new();
    for binary in listing {
        hasher.update(format!(
            "{}\t{}\t{}\n",
            binary.name,
            binary.baseline_sha256.as_deref().unwrap_or("-"),
            binary.fixed_sha256.as_deref().unwrap_or("-")
        ));
    }
    hotpatch_image::sha256_hex(&hasher.finalize())
}

/// Creates the shard directory, or empties one an earlier shard run wrote; any other non-empty
/// directory is refused rather than mixed into.
fn prepare_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        if dir.join(SHARD_FILE).is_file() {
            fs_err::remove_file(dir.join(SHARD_FILE))?;
            if dir.join(FILES_DIR).is_dir() {
                fs_err::remove_dir_all(dir.join(FILES_DIR))?;
            }
        } else if fs_err::read_dir(dir)?.next().is_some() {
            bail!(
                "{} is not empty and holds no shard: --out names the shard directory",
                dir.display()
            );
        }
    }
    fs_err::create_dir_all(dir.join(FILES_DIR))?;
    Ok(())
}

fn store(dir: &Path, file_name: &str, bytes: &[u8]) -> Result<StoredFile> {
    let path = format!("{FILES_DIR}/{file_name}");
    fs_err::write(dir.join(&path), bytes)?;
    Ok(StoredFile {
        path,
        sha256: hotpatch_image::sha256_hex(bytes),
        len: bytes.len() as u64,
    })
}

/// What the merge hands to the package assembly.
pub(crate) struct Merged {
    /// Every binary of the release, by relative path.
    pub(crate) binaries: Vec<Built>,
    pub(crate) leave_out_reboot_required: bool,
}

/// `hotpatch build --merge DIR...`: reads the shards and checks that they are of one release
/// (`release`, the same listing, N and policy) and cover it exactly once, with results for the
/// very builds the listing names.
pub(crate) fn read_shards(dirs: &[PathBuf], release: &str) -> Result<Merged> {
    let mut shards = Vec::with_capacity(dirs.len());
    for dir in dirs {
        shards.push((dir.clone(), read_shard_file(dir)?));
    }
    let Some((first_dir, first)) = shards.first() else {
        bail!("--merge needs at least one shard directory");
    };
    for (dir, shard) in &shards {
        if shard.release != release {
            return Err(MergeRefused::DifferentRelease {
                dir: dir.clone(),
                detail: format!("its month is {}, not --release {release}", shard.release),
            }
            .into());
        }
        if shard.shard.count != first.shard.count {
            return Err(MergeRefused::DifferentCount {
                dir: dir.clone(),
                count: shard.shard.count,
                expected: first.shard.count,
            }
            .into());
        }
        if shard.release_inputs != first.release_inputs {
            return Err(MergeRefused::DifferentRelease {
                dir: dir.clone(),
                detail: format!(
                    "its release trees (inputs {}) differ from those of {} (inputs {})",
                    shard.release_inputs,
                    first_dir.display(),
                    first.release_inputs
                ),
            }
            .into());
        }
        if shard.policy_sha256 != first.policy_sha256
            || shard.leave_out_reboot_required != first.leave_out_reboot_required
        {
            return Err(MergeRefused::DifferentPolicy { dir: dir.clone() }.into());
        }
    }
    let count = first.shard.count;
    let mut by_index: BTreeMap<u32, &PathBuf> = BTreeMap::new();
    for (dir, shard) in &shards {
        if let Some(earlier) = by_index.insert(shard.shard.index, dir) {
            return Err(MergeRefused::DuplicateShard {
                shard: shard.shard,
                first: earlier.clone(),
                second: dir.clone(),
            }
            .into());
        }
    }
    if let Some(index) = (1..=count).find(|index| !by_index.contains_key(index)) {
        return Err(MergeRefused::MissingShard {
            shard: ShardSpec { index, count },
        }
        .into());
    }

    let leave_out_reboot_required = first.leave_out_reboot_required;
    let listing: BTreeMap<String, ListedBinary> = first
        .listing
        .iter()
        .map(|listed| (listed.name.clone(), listed.clone()))
        .collect();
    let mut binaries = Vec::with_capacity(listing.len());
    for (dir, shard) in shards {
        check_coverage(&dir, &shard, &listing)?;
        for binary in shard.binaries {
            binaries.push(load_binary(&dir, binary, &listing)?);
        }
    }
    binaries.sort_by(|a, b| a.report.name.cmp(&b.report.name));
    Ok(Merged {
        binaries,
        leave_out_reboot_required,
    })
}

fn read_shard_file(dir: &Path) -> Result<ShardFile> {
    let path = dir.join(SHARD_FILE);
    let len = fs_err::metadata(&path)
        .with_context(|| format!("{} is not a shard directory", dir.display()))?
        .len();
    if len > MAX_SHARD_FILE {
        bail!("{} is {len} bytes, above the limit", path.display());
    }
    let bytes = fs_err::read(&path)?;
    let schema = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|value| value.get("schema")?.as_str().map(str::to_owned));
    if schema.as_deref() != Some(SCHEMA) {
        bail!(
            "{} is not a {SCHEMA} shard file (schema {})",
            path.display(),
            schema.as_deref().unwrap_or("missing")
        );
    }
    let shard: ShardFile = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a valid shard file", path.display()))?;
    if release_inputs(&shard.listing) != shard.release_inputs {
        bail!(
            "{}: the release listing does not match its digest (the file was altered)",
            path.display()
        );
    }
    let expected: Vec<&str> = {
        let mut names: Vec<&str> = shard.listing.iter().map(|b| b.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
    };
    if expected.len() != shard.listing.len() {
        bail!(
            "{}: the release listing names a binary twice",
            path.display()
        );
    }
    if shard.shard.index == 0 || shard.shard.index > shard.shard.count {
        bail!("{}: shard {} is out of range", path.display(), shard.shard);
    }
    Ok(shard)
}

/// The shard holds exactly the binaries of the listing that are assigned to it.
fn check_coverage(
    dir: &Path,
    shard: &ShardFile,
    listing: &BTreeMap<String, ListedBinary>,
) -> Result<(), MergeRefused> {
    let spec = shard.shard;
    let held: Vec<&str> = shard
        .binaries
        .iter()
        .map(|b| b.report.name.as_str())
        .collect();
    let owned: Vec<&str> = listing
        .keys()
        .map(String::as_str)
        .filter(|name| shard_of(name, spec.count) == spec.index)
        .collect();
    if held == owned {
        return Ok(());
    }
    let detail = if let Some(extra) = held.iter().find(|name| !owned.contains(name)) {
        match listing.contains_key(*extra) {
            true => format!(
                "shard {spec} holds {extra}, which belongs to shard {}/{}",
                shard_of(extra, spec.count),
                spec.count
            ),
            false => format!("shard {spec} holds {extra}, which is not in the release"),
        }
    } else if let Some(missing) = owned.iter().find(|name| !held.contains(name)) {
        format!("shard {spec} lacks {missing}, which belongs to it")
    } else {
        format!("shard {spec} holds a binary twice or out of order")
    };
    Err(MergeRefused::Coverage {
        dir: dir.to_path_buf(),
        detail,
    })
}

/// One binary's results, with its files read back and checked against their recorded hashes.
fn load_binary(
    dir: &Path,
    binary: ShardBinary,
    listing: &BTreeMap<String, ListedBinary>,
) -> Result<Built> {
    let name = &binary.report.name;
    let listed = listing
        .get(name)
        .context("coverage was checked before the binaries are loaded")?;
    if binary.report.baseline_sha256 != listed.baseline_sha256
        || binary.report.fixed_sha256 != listed.fixed_sha256
        || binary.target.as_ref().is_some_and(|target| {
            let (TargetIdentity::Pe { sha256, .. } | TargetIdentity::Elf { sha256, .. }) =
                &target.identity;
            Some(sha256) != listed.baseline_sha256.as_ref()
        })
    {
        return Err(MergeRefused::IdentityMismatch {
            dir: dir.to_path_buf(),
            binary: name.clone(),
        }
        .into());
    }
    let payload = binary
        .payload
        .as_ref()
        .map(|file| read_stored(dir, file))
        .transpose()?;
    let audit_html = binary
        .audit_html
        .as_ref()
        .map(|file| read_stored(dir, file))
        .transpose()?
        .map(String::from_utf8)
        .transpose()
        .with_context(|| format!("{}: the audit report of {name} is not UTF-8", dir.display()))?;
    let target = match (binary.target, payload) {
        (Some(target), Some(payload)) if target.payload_len == payload.len() as u64 => {
            Some((target, payload))
        }
        (None, None) => None,
        _ => bail!(
            "{}: the target and payload of {name} do not belong together",
            dir.display()
        ),
    };
    Ok(Built {
        report: binary.report,
        target,
        audit_html,
        record: None,
    })
}

fn read_stored(dir: &Path, file: &StoredFile) -> Result<Vec<u8>> {
    let file_name = file
        .path
        .strip_prefix(&format!("{FILES_DIR}/"))
        .filter(|rest| !rest.is_empty() && !rest.contains(['/', '\\']) && *rest != "..")
        .with_context(|| {
            format!(
                "{}: {:?} is not a shard file name",
                dir.display(),
                file.path
            )
        })?;
    let path = dir.join(FILES_DIR).join(file_name);
    let bytes = fs_err::read(&path)?;
    if bytes.len() as u64 != file.len || hotpatch_image::sha256_hex(&bytes) != file.sha256 {
        bail!(
            "{} does not hold what shard.json records (length or SHA-256)",
            path.display()
        );
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests;
