//! The applier's commands as library functions (the binary only parses arguments and prints):
//! `verify`, `apply`, `rollback` and `status`, with the state directory's sequence and trust
//! bookkeeping around the per-process work in `patch`. OS-neutral: processes are found and
//! opened through `crate::backend`.

use crate::backend::{self, IdentityCache, Process};
use crate::error::{Error, hex};
use crate::identity::WantedIdentity;
pub use crate::identity::wanted_identities;
use crate::patch::{self, Config, Patch, SiteBytes};
use crate::report::{Outcome, TargetResult};
use crate::state::{InstalledTarget, PreparedState, ProductState, StateDir};
use hotpatch_package::{
    Limits, PackageKind, PublicKey, Trust, TrustFile, VerifiedPackage, check_sequence, open,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Which processes a command works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Processes {
    Pids(Vec<i32>),
    /// Every process that maps a target (found by file identity).
    All,
}

/// What `rollback` returns to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollbackTo {
    Baseline,
    Sequence(u64),
}

/// The result of `apply` or `rollback`.
#[derive(Debug, Clone, Serialize)]
pub struct CommandReport {
    pub command: &'static str,
    pub product: Option<String>,
    pub channel: Option<String>,
    pub sequence: Option<u64>,
    pub results: Vec<TargetResult>,
    /// Whether the state directory now records this package as installed.
    pub recorded: bool,
}

/// Reads `--trust`: a public key file (`hotpatch-public-key-v1 <hex>`) or a trust file, whose
/// version must not be older than the highest one this state directory has seen.
pub fn load_trust(bytes: &[u8], state_dir: &StateDir) -> Result<Trust, Error> {
    if let Ok(text) = std::str::from_utf8(bytes)
        && text.trim_start().starts_with("hotpatch-public-key-v1")
    {
        return Ok(Trust::from_public_key(PublicKey::from_text(text.trim())?));
    }
    let mut state = state_dir.load()?;
    let seen = (state.trust_version > 0).then_some(state.trust_version);
    let file = TrustFile::load(bytes, seen)?;
    if file.version > state.trust_version {
        state.trust_version = file.version;
        state_dir.save(&state)?;
    }
    Ok(Trust::from_trust_file(&file))
}

/// Unix time now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Verifies a package: signature, entries, validity window, manifest sanity.
pub fn verify(bytes: &[u8], trust: &Trust, now: u64) -> Result<VerifiedPackage, Error> {
    Ok(open(bytes, trust, now, &Limits::default())?)
}

fn product_key(product: &str, channel: &str) -> String {
    format!("{product}/{channel}")
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Verifies `bytes`, checks the sequence against the state directory, and applies the package
/// to the processes; records it as installed when it took effect.
pub fn apply(
    bytes: &[u8],
    trust: &Trust,
    processes: &Processes,
    state_dir: &StateDir,
    config: &Config,
    now: u64,
) -> Result<CommandReport, Error> {
    let package = verify(bytes, trust, now)?;
    let manifest = &package.manifest;
    let key = product_key(&manifest.product, &manifest.channel);
    let manifest_sha256 = sha256_hex(&package.manifest_bytes);
    let state = state_dir.load()?;
    let product = state.products.get(&key);
    // The installed package itself may be applied to more processes; anything else must be
    // newer than the high-water mark.
    let same_as_installed = product.and_then(|p| p.installed_manifest_sha256.as_deref())
        == Some(manifest_sha256.as_str());
    if !same_as_installed {
        check_sequence(manifest, product.map(|p| p.high_water))?;
    }
    crate::crash::point("apply", "verified");
    // The record is written (not yet in place) before any process is touched: a full disk
    // refuses here, not after the processes were patched.
    let prepared = prepare_record(state_dir, &package, bytes, &manifest_sha256)?;
    crate::crash::point("apply", "prepared");
    // A baseline ships with a restart: the processes already run its code, and a baseline
    // package built by `hotpatch build` names no targets (each hotpatch target pins its exact
    // baseline build). Installing it only starts the series in the state directory.
    let results = if manifest.kind == PackageKind::Baseline && manifest.targets.is_empty() {
        baseline_results(processes)
    } else {
        apply_package(&package, &manifest_sha256, processes, config, false)
    };
    let took_effect = results
        .iter()
        .any(|r| matches!(r.outcome, Outcome::Applied | Outcome::AlreadyApplied));

    let nothing_wrong = !results
        .iter()
        .any(|r| matches!(r.outcome, Outcome::Refused { .. } | Outcome::Failed { .. }));
    let recorded = took_effect || nothing_wrong;
    crate::crash::point("apply", "patched");
    if recorded {
        prepared.commit()?;
        crate::crash::point("apply", "recorded");
    }
    Ok(CommandReport {
        command: "apply",
        product: Some(manifest.product.clone()),
        channel: Some(manifest.channel.clone()),
        sequence: Some(manifest.sequence),
        results,
        recorded,
    })
}

/// What installing a target-less baseline package means for each named process.
fn baseline_results(processes: &Processes) -> Vec<TargetResult> {
    let pids = match processes {
        Processes::Pids(pids) => pids.clone(),
        Processes::All => Vec::new(),
    };
    pids.into_iter()
        .map(|pid| {
            TargetResult::new(
                pid,
                "-",
                Outcome::Skipped {
                    reason: "a baseline package patches nothing: it is installed with a restart, and this records the start of its series".into(),
                },
            )
        })
        .collect()
}

/// The state that records `package` as installed, written beside `state.json` with the
/// package stored, to be committed once the package took effect.
fn prepare_record<'a>(
    state_dir: &'a StateDir,
    package: &VerifiedPackage,
    bytes: &[u8],
    manifest_sha256: &str,
) -> Result<PreparedState<'a>, Error> {
    let manifest = &package.manifest;
    let key = product_key(&manifest.product, &manifest.channel);
    let stored = StateDir::package_name(&key, manifest.sequence);
    let mut state = state_dir.load()?;
    let entry = state
        .products
        .entry(key)
        .or_insert_with(ProductState::default);
    entry.high_water = entry.high_water.max(manifest.sequence);
    entry.installed = Some(manifest.sequence);
    entry.installed_manifest_sha256 = Some(manifest_sha256.to_owned());
    entry.packages.insert(manifest.sequence, stored.clone());
    entry.targets = wanted_identities(package)
        .into_iter()
        .filter(|(index, _)| backend::handles(&manifest.targets[*index].identity))
        .map(|(index, wanted)| {
            let (build_id, pe) = match &wanted {
                WantedIdentity::Elf { build_id, .. } => (build_id.clone(), None),
                WantedIdentity::Pe { headers, .. } => (None, Some(*headers)),
            };
            InstalledTarget {
                name: manifest.targets[index].name.clone(),
                sha256: wanted.sha256().to_owned(),
                build_id,
                pe,
                patched: !manifest.targets[index].sites.is_empty(),
            }
        })
        .collect();
    state_dir.prepare(&state, Some((&stored, bytes)))
}

/// Applies every target of `package` in every chosen process.
fn apply_package(
    package: &VerifiedPackage,
    manifest_sha256: &str,
    processes: &Processes,
    config: &Config,
    allow_lower: bool,
) -> Vec<TargetResult> {
    let manifest = &package.manifest;
    let patch = Patch {
        manifest,
        manifest_sha256: manifest_sha256.to_owned(),
        entries: &package.entries,
    };
    let wanted: Vec<(usize, WantedIdentity)> = wanted_identities(package)
        .into_iter()
        .filter(|(index, _)| backend::handles(&manifest.targets[*index].identity))
        .collect();
    let identities: Vec<WantedIdentity> = wanted.iter().map(|(_, w)| w.clone()).collect();
    let mut results = Vec::new();
    for target in &manifest.targets {
        if !backend::handles(&target.identity) {
            results.push(TargetResult::new(
                0,
                &target.name,
                Outcome::Skipped {
                    reason: format!(
                        "not an {} target; this is the {} applier",
                        backend::FORMAT,
                        backend::NAME
                    ),
                },
            ));
        }
    }
    let (pids, explicit) = match processes {
        Processes::Pids(pids) => (pids.clone(), true),
        Processes::All => (backend::all_pids(), false),
    };
    let mut cache = IdentityCache::default();
    for pid in pids {
        let images = match Process::open(pid)
            .and_then(|process| backend::find_images(&process, &identities, &mut cache))
        {
            Ok(images) => images,
            Err(error) => {
                if explicit {
                    results.push(TargetResult::from_error(pid, "-", &error));
                }
                continue;
            }
        };
        if images.is_empty() && explicit {
            // Asked to patch this process, and it runs another build: an identity mismatch.
            results.push(TargetResult::refused(
                pid,
                "-",
                "identity-mismatch",
                format!(
                    "the process maps no file with the identity ({}) of a target of this package",
                    backend::IDENTITY
                ),
            ));
        }
        for (wanted_index, image) in images {
            let target = &manifest.targets[wanted[wanted_index].0];
            let result = patch::apply_target(&image, target, &patch, config, allow_lower)
                .unwrap_or_else(|error| TargetResult::from_error(pid, &target.name, &error));
            results.push(result);
        }
    }
    results
}

/// Rolls processes back to the baseline, or to an installed earlier sequence.
pub fn rollback(
    processes: &Processes,
    to: RollbackTo,
    trust: Option<&Trust>,
    state_dir: &StateDir,
    config: &Config,
    now: u64,
) -> Result<CommandReport, Error> {
    match to {
        RollbackTo::Baseline => {
            let (pids, explicit) = match processes {
                Processes::Pids(pids) => (pids.clone(), true),
                Processes::All => (backend::all_pids(), false),
            };
            let mut results = Vec::new();
            for pid in pids {
                match patch::rollback_to_baseline(pid, None, config) {
                    Ok(found) => results.extend(
                        found
                            .into_iter()
                            .filter(|r| explicit || !matches!(r.outcome, Outcome::Skipped { .. })),
                    ),
                    Err(error) => {
                        if explicit || !matches!(error, Error::ProcessGone { .. }) {
                            results.push(TargetResult::from_error(pid, "-", &error));
                        }
                    }
                }
            }
            let all_ok = !results
                .iter()
                .any(|r| matches!(r.outcome, Outcome::Refused { .. } | Outcome::Failed { .. }));
            let recorded = *processes == Processes::All && all_ok;
            if recorded {
                let mut state = state_dir.load()?;
                for product in state.products.values_mut() {
                    product.installed = None;
                    product.installed_manifest_sha256 = None;
                }
                state_dir.save(&state)?;
            }
            Ok(CommandReport {
                command: "rollback",
                product: None,
                channel: None,
                sequence: None,
                results,
                recorded,
            })
        }
        RollbackTo::Sequence(sequence) => {
            let state = state_dir.load()?;
            let Some((key, name)) = state.products.iter().find_map(|(key, product)| {
                product
                    .packages
                    .get(&sequence)
                    .map(|name| (key.clone(), name.clone()))
            }) else {
                return Err(Error::NoSuchPackage {
                    product: "any product".into(),
                    sequence,
                });
            };
            let trust = trust.ok_or(Error::NoSuchPackage {
                product: format!("{key} (rollback --to SEQ needs --trust to re-verify it)"),
                sequence,
            })?;
            let bytes = state_dir.read_package(&name)?;
            let package = verify(&bytes, trust, now)?;
            let manifest_sha256 = sha256_hex(&package.manifest_bytes);
            let results = apply_package(&package, &manifest_sha256, processes, config, true);
            let all_ok = !results
                .iter()
                .any(|r| matches!(r.outcome, Outcome::Refused { .. } | Outcome::Failed { .. }));
            let recorded = *processes == Processes::All && all_ok;
            if recorded {
                let mut state = state_dir.load()?;
                if let Some(product) = state.products.get_mut(&key) {
                    product.installed = Some(sequence);
                    product.installed_manifest_sha256 = Some(manifest_sha256);
                }
                state_dir.save(&state)?;
            }
            Ok(CommandReport {
                command: "rollback",
                product: Some(package.manifest.product.clone()),
                channel: Some(package.manifest.channel.clone()),
                sequence: Some(sequence),
                results,
                recorded,
            })
        }
    }
}

/// One applied payload found in a process, or a process that maps an installed target and
/// carries no payload for it.
#[derive(Debug, Clone, Serialize)]
pub struct StatusEntry {
    pub pid: i32,
    pub target: String,
    pub product: String,
    pub channel: String,
    /// What the process carries (`None`: nothing, the baseline code runs).
    pub sequence: Option<u64>,
    /// `patched` (every redirect in place), `baseline` (the target's code runs unpatched),
    /// `staged` (a payload is mapped but none of its redirects was written: an apply was
    /// interrupted before its window; the baseline code runs) or `partial` (some redirects in
    /// place and some not: an apply or rollback was interrupted inside its window).
    pub state: &'static str,
    /// The process is stopped by an applier that was killed between its redirect writes (the
    /// marker's held word is set and the process is in a job-control stop): it runs no code
    /// until `apply` or `rollback` finishes the job and lets it run.
    pub held: bool,
    /// What the state directory says is installed.
    pub installed: Option<u64>,
    pub sites: usize,
    /// Sites whose redirect bytes are no longer what this applier wrote.
    pub damaged_sites: Vec<String>,
    pub payload_address: Option<String>,
    /// Why the process and the state directory disagree, when they do.
    pub mismatch: Option<String>,
}

/// Whether a process whose marker says it is held is (or comes to be) stopped. The kernel
/// detaches a killed applier's threads as the applier exits, but each takes the queued stop
/// only when next scheduled, so a process held a moment ago may still be on its way into the
/// stop: wait up to a second. A process that does not stop carries a stale word (the applier
/// was killed after it let the process run, before it cleared the word) and is not held.
fn held_stop(pid: i32) -> bool {
    for _ in 0..50 {
        if backend::job_stopped(pid) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

/// Reads what is applied from each process's memory and compares it with the state directory.
pub fn status(processes: &Processes, state_dir: &StateDir) -> Result<Vec<StatusEntry>, Error> {
    let state = state_dir.load()?;
    let pids = match processes {
        Processes::Pids(pids) => pids.clone(),
        Processes::All => backend::all_pids(),
    };
    let installed_targets: Vec<(String, String, WantedIdentity)> = state
        .products
        .iter()
        .flat_map(|(key, product)| {
            product.targets.iter().filter(|t| t.patched).map(move |t| {
                (
                    key.clone(),
                    t.name.clone(),
                    match t.pe {
                        Some(headers) => WantedIdentity::Pe {
                            sha256: t.sha256.clone(),
                            headers,
                        },
                        None => WantedIdentity::Elf {
                            sha256: t.sha256.clone(),
                            build_id: t.build_id.clone(),
                        },
                    },
                )
            })
        })
        .collect();
    let identities: Vec<WantedIdentity> = installed_targets.iter().map(|t| t.2.clone()).collect();
    let mut cache = IdentityCache::default();
    let mut entries = Vec::new();
    for pid in pids {
        let Ok(found) = patch::process_status(pid) else {
            continue;
        };
        for (marker, sites) in &found.markers {
            let key = product_key(&marker.product, &marker.channel);
            let product = state.products.get(&key);
            let installed = product.and_then(|p| p.installed);
            // What this process should carry in this target by the state directory: the
            // installed sequence when it replaces code here, else the baseline code.
            let expected = installed.filter(|_| {
                product.is_some_and(|p| {
                    p.targets
                        .iter()
                        .any(|t| t.name == marker.target && t.patched)
                })
            });
            let damaged_sites: Vec<String> = marker
                .sites
                .iter()
                .zip(sites)
                .filter(|(_, bytes)| **bytes != SiteBytes::Redirected)
                .map(|(site, _)| site.function.clone())
                .collect();
            let all = |want: SiteBytes| sites.iter().all(|bytes| *bytes == want);
            let (process_state, sequence) = if all(SiteBytes::Redirected) {
                ("patched", Some(marker.sequence))
            } else if all(SiteBytes::Original) {
                ("staged", None)
            } else {
                ("partial", Some(marker.sequence))
            };
            let records = expected.map_or("the baseline".to_owned(), |s| format!("sequence {s}"));
            let held = marker.held && held_stop(pid);
            let mismatch = match process_state {
                _ if held => Some(format!(
                    "the process is stopped: an applier was killed between the redirect writes of sequence {} ({} of {} in place); run apply or rollback to finish and let it run",
                    marker.sequence,
                    marker.sites.len() - damaged_sites.len(),
                    marker.sites.len(),
                )),
                "partial" => Some(format!(
                    "only {} of {} redirects of sequence {} are in place (an apply or rollback was interrupted); run rollback or apply again",
                    marker.sites.len() - damaged_sites.len(),
                    marker.sites.len(),
                    marker.sequence
                )),
                _ if expected != sequence => Some(format!(
                    "the process carries {}, the state directory records {records}",
                    sequence.map_or("the baseline".to_owned(), |s| format!("sequence {s}")),
                )),
                _ => None,
            };
            entries.push(StatusEntry {
                pid,
                target: marker.target.clone(),
                product: marker.product.clone(),
                channel: marker.channel.clone(),
                sequence,
                state: process_state,
                held,
                installed,
                sites: marker.sites.len(),
                damaged_sites,
                payload_address: Some(format!("{:#x}", marker.address)),
                mismatch,
            });
        }
        // Installed targets the process maps without carrying their payload.
        if identities.is_empty() {
            continue;
        }
        let Ok(images) = Process::open(pid)
            .and_then(|process| backend::find_images(&process, &identities, &mut cache))
        else {
            continue;
        };
        for (index, _image) in images {
            let (key, name, _) = &installed_targets[index];
            if found.markers.iter().any(|(m, _)| &m.target == name) {
                continue;
            }
            let product = &state.products[key];
            let Some(installed) = product.installed else {
                continue;
            };
            let (product_name, channel) = key.split_once('/').unwrap_or((key.as_str(), ""));
            entries.push(StatusEntry {
                pid,
                target: name.clone(),
                product: product_name.to_owned(),
                channel: channel.to_owned(),
                sequence: None,
                state: "baseline",
                held: false,
                installed: Some(installed),
                sites: 0,
                damaged_sites: Vec::new(),
                payload_address: None,
                mismatch: Some(format!(
                    "the state directory records sequence {installed}, the process runs the baseline code"
                )),
            });
        }
    }
    Ok(entries)
}
