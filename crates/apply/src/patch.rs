//! The OS-neutral orchestration of applying a target's patch to one process, superseding what an earlier package left there,
//! and rolling back: stage the payload outside the stop window, then in a short window (every
//! thread stopped) check activeness and the bytes at every site, write all redirects of the
//! target or none, release. Busy functions are retried with bounded backoff, then refused.
//! The OS work (memory, staging, stopping, reading registers) is the backend's
//! (`crate::backend`, `linux` or `windows`); every decision is made here, once for both.

use crate::backend::{self, Process, Staging, Stopped};
use crate::error::{Error, hex};
use crate::identity::MappedImage;
use crate::marker::{self, Marker, SiteRecord};
use crate::report::{Outcome, TargetResult};
use crate::stack::{self, BusyThread, ProtectedRange};
use hotpatch_package::{Manifest, Redirect, Target, apply_relocations, redirect_bytes};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How hard the applier tries before it refuses a busy process.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Stop windows opened at most per target and process.
    pub retries: u32,
    /// Total time after which a busy function is refused.
    pub retry_timeout: Duration,
    /// Raise the applier's thread for each window when permitted (`SCHED_FIFO` on Linux,
    /// time-critical priority on Windows).
    pub realtime: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            retries: 20,
            retry_timeout: Duration::from_secs(2),
            realtime: true,
        }
    }
}

/// What of a verified package the applier uses.
pub struct Patch<'a> {
    pub manifest: &'a Manifest,
    /// SHA-256 of the signed manifest bytes: names this exact package.
    pub manifest_sha256: String,
    /// The verified archive entries, by name.
    pub entries: &'a BTreeMap<String, Vec<u8>>,
}

/// One byte change the window makes: accepted current contents and what to write.
#[derive(Debug, Clone)]
struct Change {
    function: String,
    address: u64,
    accepted: Vec<Vec<u8>>,
    new: Vec<u8>,
}

/// Consecutive changes on one page, read and written as one range: a window makes one read
/// and one write per page instead of per site (the bytes between the sites are written back
/// as they were read, with every thread stopped). Sites on different pages never share a
/// span, so a span copies no page the sites would not copy anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Span {
    start: u64,
    len: usize,
    /// Indices into the address-sorted changes.
    changes: std::ops::Range<usize>,
}

/// The page size spans are bounded by (4 KiB on x86-64 Linux and Windows).
const PAGE: u64 = 4096;

impl Span {
    /// The span's new contents: `found` with each of its changes written over it.
    fn bytes(&self, changes: &[Change], found: &[u8]) -> Vec<u8> {
        let mut bytes = found.to_vec();
        for change in &changes[self.changes.clone()] {
            let at = (change.address - self.start) as usize;
            bytes[at..at + change.new.len()].copy_from_slice(&change.new);
        }
        bytes
    }
}

/// Groups address-sorted, non-overlapping `changes` (as `plan_changes` returns them) into
/// spans that each lie within one page.
fn spans(changes: &[Change]) -> Vec<Span> {
    let mut spans: Vec<Span> = Vec::new();
    for (index, change) in changes.iter().enumerate() {
        let end = change.address.saturating_add(change.new.len() as u64);
        if let Some(span) = spans.last_mut() {
            let span_end = span.start + span.len as u64;
            if change.address >= span_end && span.start / PAGE == end.saturating_sub(1) / PAGE {
                span.len = (end - span.start) as usize;
                span.changes.end = index + 1;
                continue;
            }
        }
        spans.push(Span {
            start: change.address,
            len: change.new.len(),
            changes: index..index + 1,
        });
    }
    spans
}

/// What a finished window measured.
struct Window {
    duration: Duration,
    threads: usize,
    /// `None` when SCHED_FIFO was not asked for.
    realtime: Option<bool>,
    attempts: u32,
}

/// Applies `target` of the package to the process image `image`. With `allow_lower`, a
/// package older than the one in the process replaces it (`rollback --to SEQ`).
pub fn apply_target(
    image: &MappedImage,
    target: &Target,
    patch: &Patch<'_>,
    config: &Config,
    allow_lower: bool,
) -> Result<TargetResult, Error> {
    let pid = image.pid;
    let manifest = patch.manifest;
    let bias = image
        .start
        .checked_sub(target.image_base_rva)
        .ok_or_else(|| Error::Unsupported {
            target: target.name.clone(),
            what: "image mapped below its image_base_rva",
        })?;
    backend::check_image(image, target)?;
    let process = Process::open(pid)?;
    let previous: Vec<Marker> = backend::markers(&process)?
        .into_iter()
        .filter(|m| {
            m.target == target.name
                && m.bias == bias
                && m.product == manifest.product
                && m.channel == manifest.channel
        })
        .collect();
    // A payload staged by an interrupted apply, with no redirect written, does not count as
    // carried: it is superseded (and unmapped) like any other.
    let carried = previous
        .iter()
        .filter(|m| site_bytes(&process, m).contains(&SiteBytes::Redirected));
    if let Some(current) = carried.max_by_key(|m| m.sequence) {
        let complete = site_bytes(&process, current)
            .iter()
            .all(|b| *b == SiteBytes::Redirected);
        if current.package_sha256 == patch.manifest_sha256 && complete {
            // Killed after its last write but before it let go, an earlier apply left the
            // process held with everything in place: nothing to write, only to let it run.
            if let Some(held) = previous.iter().find(|m| m.held) {
                let hold = Hold::for_window(&process, held, &previous);
                hold.release(&process)?;
            }
            backend::resume_abandoned(&process)?;
            let mut result = TargetResult::new(pid, &target.name, Outcome::AlreadyApplied);
            result.sequence = Some(current.sequence);
            return Ok(result);
        }
        // The same package, only partly in place (an interrupted window), is completed.
        let same_package = current.package_sha256 == patch.manifest_sha256;
        let supersedes = current.sequence < manifest.sequence
            || (current.sequence == manifest.sequence && same_package);
        if !supersedes && !allow_lower {
            let mut result = TargetResult::refused(
                pid,
                &target.name,
                "not-superseding",
                format!(
                    "the process runs sequence {}; sequence {} does not supersede it",
                    current.sequence, manifest.sequence
                ),
            );
            result.sequence = Some(current.sequence);
            return Ok(result);
        }
    }
    if target.sites.is_empty() && previous.is_empty() {
        return Ok(TargetResult::new(
            pid,
            &target.name,
            Outcome::Skipped {
                reason: "the package replaces nothing in this target".into(),
            },
        ));
    }
    let staged = if target.sites.is_empty() {
        None
    } else {
        Some(stage(&process, image, target, patch, bias)?)
    };
    crate::crash::point("apply", "staged");
    let new_sites: &[SiteRecord] = staged.as_ref().map_or(&[], |m| &m.sites);
    let changes = match plan_changes(pid, new_sites, &previous) {
        Ok(changes) => changes,
        Err(error) => {
            unmap_markers(&process, staged.iter());
            return Err(error);
        }
    };
    let mut ranges = site_ranges(bias, new_sites);
    for marker in &previous {
        ranges.extend(marker_ranges(marker));
    }
    let ranges = stack::prepare(ranges);
    // The window records its hold in the new payload's marker, or (a package that only takes
    // sites back) in the first one it supersedes.
    let recorder = staged.as_ref().or(previous.first());
    let hold = recorder.map(|marker| Hold::for_window(&process, marker, &previous));
    let window = match run_window(&process, &ranges, &changes, hold.as_ref(), config, "apply") {
        Ok(window) => window,
        Err(error) => {
            unmap_markers(&process, staged.iter());
            return Err(error);
        }
    };
    crate::crash::point("apply", "released");
    // Nothing leads into the superseded payloads any more, and no thread was in them.
    unmap_markers(&process, previous.iter());
    let mut result = TargetResult::new(pid, &target.name, Outcome::Applied);
    result.sequence = staged.as_ref().map(|m| m.sequence);
    fill_window(&mut result, &window);
    Ok(result)
}

/// Restores the baseline bytes under every marker in the process whose product key (when
/// given) matches, then unmaps the payloads.
pub fn rollback_to_baseline(
    pid: i32,
    product_key: Option<&str>,
    config: &Config,
) -> Result<Vec<TargetResult>, Error> {
    let process = Process::open(pid)?;
    let markers: Vec<Marker> = backend::markers(&process)?
        .into_iter()
        .filter(|m| product_key.is_none_or(|key| key == format!("{}/{}", m.product, m.channel)))
        .collect();
    if markers.is_empty() {
        return Ok(vec![TargetResult::new(
            pid,
            "-",
            Outcome::Skipped {
                reason: "no hotpatch applied in this process".into(),
            },
        )]);
    }
    let changes = plan_changes(pid, &[], &markers)?;
    let ranges = stack::prepare(markers.iter().flat_map(marker_ranges).collect());
    crate::crash::point("rollback", "planned");
    let hold = Hold::for_window(&process, &markers[0], &markers);
    let window = run_window(&process, &ranges, &changes, Some(&hold), config, "rollback")?;
    crate::crash::point("rollback", "released");
    unmap_markers(&process, markers.iter());
    crate::crash::point("rollback", "unmapped");
    let mut targets: Vec<&str> = markers.iter().map(|m| m.target.as_str()).collect();
    targets.dedup();
    Ok(targets
        .into_iter()
        .map(|target| {
            let mut result = TargetResult::new(pid, target, Outcome::RolledBack);
            fill_window(&mut result, &window);
            result
        })
        .collect())
}

fn fill_window(result: &mut TargetResult, window: &Window) {
    result.stop_window_us = Some(window.duration.as_micros() as u64);
    result.realtime = window.realtime;
    result.attempts = window.attempts;
    result.threads = window.threads;
}

/// Maps the payload near the image, resolves it at its real address, writes the marker and
/// the code, and makes it read+execute. This happens before any stop window (on Linux one
/// thread is stopped briefly for the injected system calls); on failure the memory is freed.
fn stage(
    process: &Process,
    image: &MappedImage,
    target: &Target,
    patch: &Patch<'_>,
    bias: u64,
) -> Result<Marker, Error> {
    let pid = image.pid;
    let unsupported = |what| Error::Unsupported {
        target: target.name.clone(),
        what,
    };
    let payload_name = target
        .payload
        .as_ref()
        .ok_or_else(|| unsupported("sites without a payload"))?;
    let payload = patch
        .entries
        .get(payload_name)
        .ok_or_else(|| unsupported("payload entry missing from the package"))?;
    if payload.len() as u64 != target.payload_len || payload.is_empty() {
        return Err(unsupported("payload length differs from payload_len"));
    }
    let mut marker = Marker {
        address: 0,
        mapping_len: 0,
        code_offset: 0,
        code_len: payload.len() as u64,
        sequence: patch.manifest.sequence,
        bias,
        product: patch.manifest.product.clone(),
        channel: patch.manifest.channel.clone(),
        key_id: patch.manifest.key_id.clone(),
        target: target.name.clone(),
        target_sha256: image.sha256.clone(),
        package_sha256: patch.manifest_sha256.clone(),
        sites: target
            .sites
            .iter()
            .map(|site| SiteRecord {
                function: site.function.clone(),
                baseline_rva: site.baseline_rva,
                baseline_size: site.baseline_size,
                write_address: 0,
                original: site.redirect.original().to_vec(),
                redirect: vec![0; site.redirect.len()],
            })
            .collect(),
        unwind_table: 0,
        held: false,
    };
    if marker
        .sites
        .iter()
        .any(|s| s.original.len() != s.redirect.len())
    {
        return Err(unsupported(
            "original bytes do not match the redirect length",
        ));
    }
    // Every field is fixed-width, so the header's length does not change once filled in.
    marker.code_offset = marker::round_to_page(marker.encode().len() as u64);
    marker.mapping_len = marker.code_offset + marker::round_to_page(marker.code_len);
    let len = marker.mapping_len;

    let mut staging = Staging::begin(process)?;
    let address = staging
        .allocate_near(image, len)?
        .ok_or_else(|| Error::NoNearbyAddress {
            pid,
            target: target.name.clone(),
            len,
        })?;
    marker.address = address;
    if let Some(unwind) = target.unwind {
        // The table's entries are payload-relative: RtlAddFunctionTable gets the payload base
        // as their base address (the package reader checked the table lies in the payload).
        marker.unwind_table = marker.code_start().saturating_add(unwind.offset);
    }
    if let Err(error) = fill_and_protect(&mut staging, &mut marker, target, payload) {
        let _ = staging.free(address, len);
        return Err(error);
    }
    // Registered after the code is in place and before any redirect leads into it, so that an
    // exception thrown through new code always finds its unwind data.
    if let Some(unwind) = target.unwind {
        let registered = staging.register_unwind(
            &target.name,
            marker.code_start(),
            marker.unwind_table,
            unwind.count,
        );
        if let Err(error) = registered {
            let _ = staging.free(address, len);
            return Err(error);
        }
    }
    Ok(marker)
}

fn fill_and_protect(
    staging: &mut Staging<'_>,
    marker: &mut Marker,
    target: &Target,
    payload: &[u8],
) -> Result<(), Error> {
    let code_base = marker.code_start();
    let mut code = payload.to_vec();
    apply_relocations(&mut code, code_base, marker.bias, &target.relocations)?;
    for (record, site) in marker.sites.iter_mut().zip(&target.sites) {
        let overflow = || {
            Error::Package(hotpatch_package::Error::AddressOverflow {
                address: marker.bias,
            })
        };
        let site_address = marker
            .bias
            .checked_add(site.baseline_rva)
            .ok_or_else(overflow)?;
        let new_code = code_base
            .checked_add(site.payload_offset)
            .ok_or_else(overflow)?;
        let (write_address, bytes) = redirect_bytes(site, site_address, new_code)?;
        record.write_address = write_address;
        record.redirect = bytes;
    }
    let mut bytes = marker.encode();
    bytes.resize(marker.code_offset as usize, 0);
    bytes.extend_from_slice(&code);
    staging.write(marker.address, &bytes)?;
    // Written while read+write; from here on read+execute, never both writable and executable.
    staging.protect_read_execute(marker.address, marker.mapping_len)
}

/// The byte changes that move the sites from what `previous` markers wrote (or the baseline)
/// to `new_sites` (or back to the baseline for sites no longer replaced).
fn plan_changes(
    pid: i32,
    new_sites: &[SiteRecord],
    previous: &[Marker],
) -> Result<Vec<Change>, Error> {
    let mut by_address: BTreeMap<u64, Vec<&SiteRecord>> = BTreeMap::new();
    for site in previous.iter().flat_map(|m| &m.sites) {
        by_address.entry(site.write_address).or_default().push(site);
    }
    let mut changes = Vec::new();
    for site in new_sites {
        let mut accepted = vec![site.original.clone()];
        for old in by_address.remove(&site.write_address).unwrap_or_default() {
            if old.original != site.original {
                return Err(Error::BytesMismatch {
                    pid,
                    function: site.function.clone(),
                    address: site.write_address,
                    expected: hex(&site.original),
                    found: format!("{} (recorded by the applied patch)", hex(&old.original)),
                });
            }
            accepted.push(old.redirect.clone());
        }
        changes.push(Change {
            function: site.function.clone(),
            address: site.write_address,
            accepted,
            new: site.redirect.clone(),
        });
    }
    for (address, olds) in by_address {
        let Some(first) = olds.first() else { continue };
        // The original is accepted too: an apply or rollback killed between two writes of its
        // window leaves some sites redirected and some not, and this puts all of them back.
        let mut accepted: Vec<Vec<u8>> = olds.iter().map(|o| o.redirect.clone()).collect();
        accepted.push(first.original.clone());
        changes.push(Change {
            function: first.function.clone(),
            address,
            accepted,
            new: first.original.clone(),
        });
    }
    // Overlapping changes (a function whose redirect kind changed between packages) cannot be
    // checked byte for byte; refuse them.
    changes.sort_by_key(|c| c.address);
    for pair in changes.windows(2) {
        if pair[0].address.saturating_add(pair[0].new.len() as u64) > pair[1].address {
            return Err(Error::Unsupported {
                target: pair[1].function.clone(),
                what: "redirects of two packages overlap (redirect kind changed)",
            });
        }
    }
    Ok(changes)
}

/// The ranges the stack check protects for sites about to be redirected: the function, and
/// the padding holding the jump for padding redirects.
fn site_ranges(bias: u64, sites: &[SiteRecord]) -> Vec<ProtectedRange> {
    sites
        .iter()
        .map(|site| {
            let entry = bias.saturating_add(site.baseline_rva);
            let end = entry.saturating_add(site.baseline_size).max(
                site.write_address
                    .saturating_add(site.redirect.len() as u64),
            );
            ProtectedRange {
                start: site.write_address.min(entry),
                end,
                function: site.function.clone(),
            }
        })
        .collect()
}

/// The ranges of an applied payload: its code (unmapped afterwards) and its sites.
fn marker_ranges(marker: &Marker) -> Vec<ProtectedRange> {
    let mut ranges = site_ranges(marker.bias, &marker.sites);
    ranges.push(ProtectedRange {
        start: marker.code_start(),
        end: marker.code_start().saturating_add(marker.code_len),
        function: format!("the code of {} sequence {}", marker.target, marker.sequence),
    });
    ranges
}

/// How a window keeps an applier killed between two redirect writes from leaving a half
/// patched process running (docs/security.md, "Faults"). Before the first write the window
/// sets the held word of a marker and (Linux) queues SIGSTOP for the whole process, whose
/// threads are all in ptrace stops and so do not take it; after the last write it sends
/// SIGCONT, which discards the queued stop, and clears the word. Killed in between, the
/// applier's threads are detached by the kernel and each takes the queued SIGSTOP before it
/// runs one instruction: the process stays stopped, the word set, until the next apply or
/// rollback finishes the job and lets it run. On Windows the threads stay suspended when the
/// suspending process dies, which holds the process the same way without a signal.
struct Hold {
    /// The held word of the marker the window records in.
    word: u64,
    /// Whether to stop the process around the writes and let it run after: false only for a
    /// process stopped before the window by someone else (job control, a debugger), which
    /// the applier leaves stopped as it found it.
    signals: bool,
}

impl Hold {
    /// The hold of a window recording in `recorder`, in a process that carries `involved`.
    fn for_window(process: &Process, recorder: &Marker, involved: &[Marker]) -> Hold {
        let held_by_applier = involved.iter().any(|m| m.held);
        Hold {
            word: recorder.held_word(),
            signals: held_by_applier || !backend::job_stopped(process.pid()),
        }
    }

    /// Marks the process held and stops it for the case the applier dies.
    fn take(&self, process: &Process) -> Result<(), Error> {
        process.write_code(self.word, &1u64.to_le_bytes())?;
        if self.signals
            && let Err(error) = backend::hold(process.pid())
        {
            let _ = process.write_code(self.word, &0u64.to_le_bytes());
            return Err(error);
        }
        Ok(())
    }

    /// Lets the process run again (discarding the queued stop) and clears the mark.
    fn release(&self, process: &Process) -> Result<(), Error> {
        if self.signals {
            backend::unhold(process.pid())?;
        }
        process.write_code(self.word, &0u64.to_le_bytes())
    }
}

/// Opens stop windows until one finds no busy thread, then checks and writes `changes`.
fn run_window(
    process: &Process,
    ranges: &[ProtectedRange],
    changes: &[Change],
    hold: Option<&Hold>,
    config: &Config,
    command: &'static str,
) -> Result<Window, Error> {
    let pid = process.pid();
    let spans = spans(changes);
    let started = Instant::now();
    let mut delay = Duration::from_millis(10);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let raised = if config.realtime {
            backend::raise_priority()
        } else {
            None
        };
        let outcome = one_window(process, ranges, changes, &spans, hold, command);
        if let Some(previous) = raised {
            backend::restore_priority(previous);
        }
        match outcome? {
            WindowOutcome::Done { duration, threads } => {
                return Ok(Window {
                    duration,
                    threads,
                    realtime: config.realtime.then_some(raised.is_some()),
                    attempts: attempt,
                });
            }
            WindowOutcome::Busy(busy) => {
                let out_of_time = started.elapsed() + delay > config.retry_timeout;
                if attempt >= config.retries.max(1) || out_of_time {
                    return Err(Error::Busy {
                        pid,
                        tid: busy.tid,
                        function: busy.function,
                        address: busy.address,
                        tries: attempt,
                    });
                }
                // Let the process run out of the function before looking again.
                std::thread::sleep(delay);
                delay = (delay * 3 / 2).min(Duration::from_millis(250));
            }
        }
    }
}

enum WindowOutcome {
    Done { duration: Duration, threads: usize },
    Busy(BusyThread),
}

/// One stop window. Every early return drops `stopped`, which releases all threads.
fn one_window(
    process: &Process,
    ranges: &[ProtectedRange],
    changes: &[Change],
    spans: &[Span],
    hold: Option<&Hold>,
    command: &'static str,
) -> Result<WindowOutcome, Error> {
    let pid = process.pid();
    let stopped = Stopped::all(process)?;
    let since = stopped.since;
    let threads = stopped.thread_count();
    if let Some(busy) = stopped.find_busy(process, ranges)? {
        return Ok(WindowOutcome::Busy(busy));
    }
    // One read per span (the sites of one page), checked site by site.
    let mut before = Vec::with_capacity(spans.len());
    for span in spans {
        let found = process.read_vec(span.start, span.len)?;
        for change in &changes[span.changes.clone()] {
            let at = (change.address - span.start) as usize;
            let current = &found[at..at + change.new.len()];
            if !change.accepted.iter().any(|a| a == current) {
                return Err(Error::BytesMismatch {
                    pid,
                    function: change.function.clone(),
                    address: change.address,
                    expected: change
                        .accepted
                        .iter()
                        .map(|a| hex(a))
                        .collect::<Vec<_>>()
                        .join(" or "),
                    found: hex(current),
                });
            }
        }
        before.push(found);
    }
    crate::crash::point(command, "checked");
    if let Some(hold) = hold {
        hold.take(process)?;
    }
    crate::crash::point(command, "held");
    // All of the target's sites or none: a failed write puts back what was written.
    for (index, (span, found)) in spans.iter().zip(&before).enumerate() {
        if let Err(error) = process.write_code(span.start, &span.bytes(changes, found)) {
            for (undo, bytes) in spans[..index].iter().zip(&before).rev() {
                let _ = process.write_code(undo.start, bytes);
            }
            if let Some(hold) = hold {
                let _ = hold.release(process);
            }
            return Err(error);
        }
        if index == 0 {
            crate::crash::point(command, "first-write");
        }
    }
    if let Some(hold) = hold {
        hold.release(process)?;
    }
    crate::crash::point(command, "written");
    let released = stopped.release();
    Ok(WindowOutcome::Done {
        duration: released.duration_since(since),
        threads,
    })
}

/// Frees payload memory; a process that exited meanwhile needs nothing.
fn unmap_markers<'m>(process: &Process, markers: impl Iterator<Item = &'m Marker>) {
    let markers: Vec<&Marker> = markers.collect();
    if markers.is_empty() {
        return;
    }
    let Ok(mut staging) = Staging::begin(process) else {
        return;
    };
    for marker in markers {
        if marker.unwind_table != 0 {
            let _ = staging.unregister_unwind(marker.unwind_table);
        }
        let _ = staging.free(marker.address, marker.mapping_len);
    }
}

/// What status reads of one process.
#[derive(Debug, Clone)]
pub struct ProcessStatus {
    pub pid: i32,
    pub markers: Vec<(Marker, Vec<SiteBytes>)>,
}

/// What a patch site of a marker holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteBytes {
    /// The redirect this applier wrote.
    Redirected,
    /// The baseline bytes: the redirect was never written, or was taken back.
    Original,
    /// Neither: someone else changed them.
    Other,
}

/// The markers in `pid` and, for each site, what its bytes are now.
pub fn process_status(pid: i32) -> Result<ProcessStatus, Error> {
    let process = Process::open(pid)?;
    let mut markers = Vec::new();
    for marker in backend::markers(&process)? {
        let sites = site_bytes(&process, &marker);
        markers.push((marker, sites));
    }
    Ok(ProcessStatus { pid, markers })
}

/// What each site of `marker` holds now.
fn site_bytes(process: &Process, marker: &Marker) -> Vec<SiteBytes> {
    marker
        .sites
        .iter()
        .map(
            |site| match process.read_vec(site.write_address, site.redirect.len()) {
                Ok(bytes) if bytes == site.redirect => SiteBytes::Redirected,
                Ok(bytes) if bytes == site.original => SiteBytes::Original,
                _ => SiteBytes::Other,
            },
        )
        .collect()
}

/// `Redirect` kinds are named in results and docs by these words.
pub fn redirect_kind(redirect: &Redirect) -> &'static str {
    match redirect {
        Redirect::Entry { .. } => "entry",
        Redirect::Padding { .. } => "padding",
    }
}

#[cfg(test)]
mod tests {
    use super::{Change, PAGE, Span, spans};

    fn change(address: u64, len: usize, fill: u8) -> Change {
        Change {
            function: format!("f{address:x}"),
            address,
            accepted: vec![vec![0; len]],
            new: vec![fill; len],
        }
    }

    #[test]
    fn spans_join_the_sites_of_one_page_and_only_those() {
        let changes = vec![
            change(0x1000, 5, 1),
            change(0x1010, 5, 2),
            // Ends on the last byte of the page: still the same span.
            change(0x1ffb, 5, 3),
            // Crosses into the next page: a span of its own.
            change(0x2ffe, 5, 4),
            change(0x3010, 5, 5),
            change(0x5000, 14, 6),
        ];
        let spans = spans(&changes);
        assert_eq!(
            spans,
            vec![
                Span {
                    start: 0x1000,
                    len: 0x1000,
                    changes: 0..3
                },
                Span {
                    start: 0x2ffe,
                    len: 5,
                    changes: 3..4
                },
                Span {
                    start: 0x3010,
                    len: 5,
                    changes: 4..5
                },
                Span {
                    start: 0x5000,
                    len: 14,
                    changes: 5..6
                },
            ]
        );
        for span in spans.iter().filter(|span| span.changes.len() > 1) {
            assert_eq!(span.start / PAGE, (span.start + span.len as u64 - 1) / PAGE);
        }
    }

    #[test]
    fn a_span_writes_its_changes_over_the_bytes_read_and_keeps_the_rest() {
        let changes = vec![change(0x1002, 2, 0xaa), change(0x1006, 1, 0xbb)];
        let spans = spans(&changes);
        assert_eq!(spans.len(), 1);
        // The span runs from the first site to the end of the last: 0x1002..0x1007.
        assert_eq!((spans[0].start, spans[0].len), (0x1002, 5));
        let found = [1, 2, 3, 4, 5];
        assert_eq!(
            spans[0].bytes(&changes, &found),
            vec![0xaa, 0xaa, 3, 4, 0xbb]
        );
    }
}
