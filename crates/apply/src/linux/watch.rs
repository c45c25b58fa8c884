//! `watch`: applies the installed packages to processes as they start, so that a worker or a
//! cron job started after the apply does not run the old code for the rest of the month.
//! New processes come from exec events of the process connector, with a periodic `/proc` scan
//! as the fallback (and the only source without `CAP_NET_ADMIN`). A process is checked until
//! its target images are mapped (a shared library appears after the dynamic loader ran) or a
//! grace period passes. Forked children carry their parent's patch (the marker is inherited)
//! and report `already applied`.

use super::connector::ProcConnector;
use super::locate::{self, IdentityCache};
use super::process::Process;
use crate::commands::{now, verify};
use crate::error::{Error, hex};
use crate::identity::{WantedIdentity, wanted_identities};
use crate::patch::{self, Config, Patch};
use crate::report::{Outcome, TargetResult};
use crate::state::StateDir;
use hotpatch_package::{Trust, VerifiedPackage};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// How the watcher looks for new processes.
#[derive(Debug, Clone, Copy)]
pub struct WatchConfig {
    /// Between `/proc` scans (and the longest wait for an exec event).
    pub interval: Duration,
    /// How long a new process is re-checked for a target image before it is left alone.
    pub grace: Duration,
    /// Stop after this long (`None`: run until killed).
    pub run_for: Option<Duration>,
}

/// One result of the watcher, with how long the process had run when it was patched.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    pub result: TargetResult,
    /// From the process's start (its `starttime` in `/proc/PID/stat`) to the end of the apply.
    pub since_start: Option<Duration>,
}

struct Installed {
    package: VerifiedPackage,
    manifest_sha256: String,
}

fn installed_packages(state_dir: &StateDir, trust: &Trust) -> Result<Vec<Installed>, Error> {
    let state = state_dir.load()?;
    let mut installed = Vec::new();
    for product in state.products.values() {
        let Some(sequence) = product.installed else {
            continue;
        };
        let Some(name) = product.packages.get(&sequence) else {
            continue;
        };
        let bytes = state_dir.read_package(name)?;
        let package = verify(&bytes, trust, now())?;
        let manifest_sha256 = hex(&Sha256::digest(&package.manifest_bytes));
        installed.push(Installed {
            package,
            manifest_sha256,
        });
    }
    Ok(installed)
}

/// Seconds since boot at which `pid` started, from `/proc/PID/stat` (field 22, in clock ticks).
fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn uptime() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let seconds: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_secs_f64(seconds))
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf takes an integer and returns one.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

/// Runs the watcher; `on_event` gets every result as it happens.
pub fn watch(
    state_path: &Path,
    trust: &Trust,
    config: &Config,
    watch: &WatchConfig,
    mut on_event: impl FnMut(&WatchEvent),
) -> Result<(), Error> {
    let started = Instant::now();
    let connector = ProcConnector::open().ok();
    let ticks = ticks_per_second();
    let mut state_stamp: Option<SystemTime> = None;
    let mut installed: Vec<Installed> = Vec::new();
    // Processes by (pid, start ticks) that need no further look.
    let mut settled: BTreeMap<(i32, u64), ()> = BTreeMap::new();
    let mut cache = IdentityCache::default();
    loop {
        if watch
            .run_for
            .is_some_and(|limit| started.elapsed() >= limit)
        {
            return Ok(());
        }
        // Pick up a new apply or rollback: reload when state.json changes.
        let stamp = std::fs::metadata(state_path.join("state.json"))
            .and_then(|m| m.modified())
            .ok();
        if stamp != state_stamp {
            let state_dir = StateDir::open(state_path)?;
            installed = installed_packages(&state_dir, trust)?;
            state_stamp = stamp;
            settled.clear();
            cache = IdentityCache::default();
        }
        let mut candidates = match &connector {
            Some(connector) => connector.exec_events(watch.interval).unwrap_or_default(),
            None => {
                std::thread::sleep(watch.interval);
                Vec::new()
            }
        };
        candidates.extend(locate::all_pids());
        for pid in candidates {
            let Some(start) = start_ticks(pid) else {
                continue;
            };
            let key = (pid, start);
            if settled.contains_key(&key) {
                continue;
            }
            let age = || {
                uptime().and_then(|up| {
                    up.checked_sub(Duration::from_millis(start.saturating_mul(1000) / ticks))
                })
            };
            let done = check_process(pid, &installed, config, &mut cache, |result| {
                on_event(&WatchEvent {
                    result: result.clone(),
                    since_start: age(),
                });
            });
            // A process that does not map a target yet may still load it (a shared library
            // after the dynamic loader ran): it is looked at again until it is `grace` old.
            if done || age().is_none_or(|age| age >= watch.grace) {
                settled.insert(key, ());
            }
        }
        // Forget processes that are gone.
        settled.retain(|(pid, _), _| Path::new(&format!("/proc/{pid}")).exists());
    }
}

/// Applies the installed packages to one process; true when it mapped a target (done).
fn check_process(
    pid: i32,
    installed: &[Installed],
    config: &Config,
    cache: &mut IdentityCache,
    mut emit: impl FnMut(&TargetResult),
) -> bool {
    let Ok(process) = Process::open(pid) else {
        return true;
    };
    let mut found_any = false;
    for entry in installed {
        let manifest = &entry.package.manifest;
        // Only targets with patch sites: a process of a build the package leaves alone needs
        // nothing.
        let wanted: Vec<(usize, WantedIdentity)> = wanted_identities(&entry.package)
            .into_iter()
            .filter(|(index, _)| !manifest.targets[*index].sites.is_empty())
            .collect();
        let identities: Vec<WantedIdentity> = wanted.iter().map(|(_, w)| w.clone()).collect();
        let Ok(images) = locate::find_images(&process, &identities, cache) else {
            continue;
        };
        let patch = Patch {
            manifest,
            manifest_sha256: entry.manifest_sha256.clone(),
            entries: &entry.package.entries,
        };
        for (index, image) in images {
            found_any = true;
            let target = &manifest.targets[wanted[index].0];
            let result = patch::apply_target(&image, target, &patch, config, false)
                .unwrap_or_else(|error| TargetResult::from_error(pid, &target.name, &error));
            // Processes that already carry the patch (forked children, earlier applies) are
            // not news.
            if result.outcome != Outcome::AlreadyApplied {
                emit(&result);
            }
        }
    }
    found_any
}
