//! End-to-end tests on real processes: C programs built with gcc at test time, real signed
//! packages, the `hotpatch-apply` binary. They need root (ptrace of any process, /proc/PID/mem)
//! and gcc; under CI a missing privilege or tool fails them.

mod support;

use hotpatch_package::PackageKind;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::package::{self, Fix, Signer};
use support::{Program, privileged, snapshot, symbol, temp_dir};

const FAR_FUTURE: u64 = 4_102_444_800; // 2100-01-01

/// Runs the applier; returns the exit code, stdout and stderr, and prints them.
fn applier(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_hotpatch-apply"))
        .args(args)
        .output()
        .expect("hotpatch-apply runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    println!("$ hotpatch-apply {}\n{stdout}{stderr}", args.join(" "));
    (output.status.code().unwrap_or(-1), stdout, stderr)
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `apply PKG --trust T --pid PID --state-dir S`, expecting `code`.
fn apply(package: &Path, signer: &Signer, pid: i32, state: &Path, code: i32) -> String {
    let (got, stdout, stderr) = applier(&[
        "apply",
        path(package),
        "--trust",
        path(&signer.trust_file),
        "--pid",
        &pid.to_string(),
        "--state-dir",
        path(state),
        // Worker threads call compute() in a tight loop on a loaded 2-core machine: allow more
        // windows than the default before a refusal.
        "--retries",
        "60",
        "--retry-timeout-ms",
        "6000",
    ]);
    assert_eq!(got, code, "{stdout}{stderr}");
    stdout + &stderr
}

fn rollback(pid: i32, state: &Path) -> String {
    let (code, stdout, stderr) = applier(&[
        "rollback",
        "--pid",
        &pid.to_string(),
        "--to",
        "baseline",
        "--state-dir",
        path(state),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    stdout
}

/// The sequences `status --json` reads from the process's memory.
fn carried(pid: i32, state: &Path) -> Vec<u64> {
    let (_, stdout, _) = applier(&[
        "status",
        "--pid",
        &pid.to_string(),
        "--json",
        "--state-dir",
        path(state),
    ]);
    let entries: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    entries
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["sequence"].as_u64())
        .collect()
}

/// Installs the baseline package (sequence 1) that the hotpatches build on.
fn install_baseline(
    signer: &Signer,
    dir: &Path,
    binary: &Path,
    name: &str,
    pid: i32,
    state: &Path,
) {
    let bytes = package::package(
        signer,
        PackageKind::Baseline,
        1,
        1,
        FAR_FUTURE,
        vec![package::target(binary, name, Fix::None)],
    );
    let out = apply(
        &package::save(dir, "baseline.hpkg", &bytes),
        signer,
        pid,
        state,
        0,
    );
    assert!(out.contains("replaces nothing"), "{out}");
}

/// Applies month 1 while the program runs, checks the fixed results appear in the same process
/// with no wrong result over at least a million calls made during the apply, then rolls back.
fn apply_observe_rollback(binary: &Path, patched_file: &Path, name: &str) {
    let dir = patched_file.parent().unwrap().to_owned();
    let state = dir.join("state");
    let signer = Signer::new(&dir);
    let program = Program::start(binary, &["4"]);
    let pid = program.pid();
    install_baseline(&signer, &dir, patched_file, name, pid, &state);
    let month1 = package::package(
        &signer,
        PackageKind::Hotpatch,
        2,
        1,
        FAR_FUTURE,
        vec![package::target(patched_file, name, Fix::TailCallHelper)],
    );
    let month1 = package::save(&dir, "month1.hpkg", &month1);

    let before = program.latest();
    assert_eq!(before.new, 0);
    let out = apply(&month1, &signer, pid, &state, 0);
    assert!(out.contains("applied (sequence 2)"), "{out}");
    assert!(out.contains("stop window"), "{out}");
    let after = program.latest();
    let patched = program.wait_for("fixed results appear", |c| c.new > after.new + 1_000_000);
    println!(
        "{name}: {} calls during the apply, {} fixed results since, {} wrong",
        after.calls - before.calls,
        patched.new,
        patched.wrong
    );
    assert!(
        after.calls - before.calls >= 1_000_000,
        "{before:?} {after:?}"
    );
    assert_eq!(patched.wrong, 0);
    // Every call now runs the fixed code: the baseline count stops growing.
    let settled = program.latest();
    let later = program.wait_for("more calls", |c| c.calls > settled.calls + 1_000_000);
    assert_eq!(
        later.old, settled.old,
        "baseline code still ran after the apply"
    );
    assert_eq!(carried(pid, &state), vec![2]);

    let out = rollback(pid, &state);
    assert!(out.contains("rolled back to the baseline"), "{out}");
    let rolled = program.latest();
    let old_again = program.wait_for("baseline results again", |c| c.old > rolled.old + 1_000_000);
    assert_eq!(old_again.wrong, 0);
    let settled = program.latest();
    let later = program.wait_for("more calls", |c| c.calls > settled.calls + 1_000_000);
    assert_eq!(
        later.new, settled.new,
        "fixed code still ran after the rollback"
    );
    assert!(carried(pid, &state).is_empty());
    // The payload mapping is gone after the rollback.
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(
        !maps
            .lines()
            .any(|l| l.contains(" r-xp ") && l.split_whitespace().count() == 5)
    );
}

#[test]
fn patches_a_running_executable_and_rolls_back() {
    if !privileged() {
        return;
    }
    let dir = temp_dir("exe");
    let binary = support::build_executable(&dir);
    apply_observe_rollback(&binary, &binary, "bin/target");
}

#[test]
fn patches_a_shared_library_in_a_running_process() {
    if !privileged() {
        return;
    }
    let dir = temp_dir("dso");
    let (binary, library) = support::build_with_library(&dir);
    apply_observe_rollback(&binary, &library, "lib/libcompute.so");
}

#[test]
fn all_finds_every_process_that_maps_the_target() {
    if !privileged() {
        return;
    }
    let dir = temp_dir("all");
    let state = dir.join("state");
    let unique = format!(
        "-Wl,--build-id=0x{:08x}{:016x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    );
    let (binary, library) = support::build_with_library_flags(&dir, &[&unique]);
    let signer = Signer::new(&dir);
    let first = Program::start(&binary, &["1"]);
    let second = Program::start(&binary, &["1"]);
    let all = |package: &Path| {
        let (code, stdout, stderr) = applier(&[
            "apply",
            path(package),
            "--trust",
            path(&signer.trust_file),
            "--all",
            "--state-dir",
            path(&state),
        ]);
        assert_eq!(code, 0, "{stdout}{stderr}");
        stdout
    };
    let baseline = package::package(
        &signer,
        PackageKind::Baseline,
        1,
        1,
        FAR_FUTURE,
        vec![package::target(&library, "lib/libcompute.so", Fix::None)],
    );
    all(&package::save(&dir, "baseline.hpkg", &baseline));
    let month1 = package::package(
        &signer,
        PackageKind::Hotpatch,
        2,
        1,
        FAR_FUTURE,
        vec![package::target(
            &library,
            "lib/libcompute.so",
            Fix::Multiply,
        )],
    );
    let out = all(&package::save(&dir, "month1.hpkg", &month1));
    for program in [&first, &second] {
        assert!(
            out.contains(&format!("pid {} lib/libcompute.so: applied", program.pid())),
            "{out}"
        );
        assert_eq!(carried(program.pid(), &state), vec![2]);
        let c = program.latest();
        assert_eq!(
            program.wait_for("fixed", |n| n.new > c.new + 100_000).wrong,
            0
        );
        rollback(program.pid(), &state);
    }
}

#[test]
fn monthly_series_on_one_process() {
    if !privileged() {
        return;
    }
    let dir = temp_dir("series");
    let state = dir.join("state");
    let binary = support::build_executable(&dir);
    let signer = Signer::new(&dir);
    let program = Program::start(&binary, &["2"]);
    let pid = program.pid();
    install_baseline(&signer, &dir, &binary, "bin/target", pid, &state);
    let month = |sequence, fix| {
        let bytes = package::package(
            &signer,
            PackageKind::Hotpatch,
            sequence,
            1,
            FAR_FUTURE,
            vec![package::target(&binary, "bin/target", fix)],
        );
        package::save(&dir, &format!("month-{sequence}.hpkg"), &bytes)
    };
    let month1 = month(2, Fix::TailCallHelper);
    let month2 = month(3, Fix::Multiply);

    apply(&month1, &signer, pid, &state, 0);
    assert_eq!(carried(pid, &state), vec![2]);
    // The same package again changes nothing.
    let out = apply(&month1, &signer, pid, &state, 0);
    assert!(out.contains("already applied"), "{out}");

    // Month 2 supersedes month 1: one payload left, month 1's unmapped.
    let out = apply(&month2, &signer, pid, &state, 0);
    assert!(out.contains("applied (sequence 3)"), "{out}");
    assert_eq!(carried(pid, &state), vec![3]);
    let c = program.latest();
    let after = program.wait_for("month 2 runs", |n| n.new > c.new + 1_000_000);
    assert_eq!(after.wrong, 0);
    assert_eq!(after.old, c.old);

    // Month 1 again is a downgrade: refused before any process is touched.
    let (compute, _) = symbol(&binary, "compute");
    let address = support::load_address(pid, &binary) + compute;
    let before = snapshot(pid, &[(address, 16)]);
    let out = apply(&month1, &signer, pid, &state, 3);
    assert!(out.contains("sequence 2") && out.contains("3"), "{out}");
    assert_eq!(snapshot(pid, &[(address, 16)]), before);
    assert_eq!(carried(pid, &state), vec![3]);

    // Back to month 1 on purpose: rollback --to re-verifies the stored package.
    let (code, stdout, stderr) = applier(&[
        "rollback",
        "--pid",
        &pid.to_string(),
        "--to",
        "2",
        "--trust",
        path(&signer.trust_file),
        "--state-dir",
        path(&state),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(carried(pid, &state), vec![2]);
    let c = program.latest();
    assert_eq!(
        program
            .wait_for("month 1 runs", |n| n.new > c.new + 1_000_000)
            .wrong,
        0
    );

    rollback(pid, &state);
    assert!(carried(pid, &state).is_empty());
    let c = program.latest();
    program.wait_for("baseline runs again", |n| n.old > c.old + 1_000_000);
    let compute_now = snapshot(pid, &[(address, 5)]).1;
    assert_eq!(compute_now[0], support::bytes_at_rva(&binary, compute, 5));
}

#[test]
fn always_active_function_is_refused_and_process_unchanged() {
    if !privileged() {
        return;
    }
    let dir = temp_dir("busy");
    let state = dir.join("state");
    let binary = support::build_executable(&dir);
    let signer = Signer::new(&dir);
    let program = Program::start(&binary, &["2", "spin"]);
    let pid = program.pid();
    install_baseline(&signer, &dir, &binary, "bin/target", pid, &state);
    let bytes = package::package(
        &signer,
        PackageKind::Hotpatch,
        2,
        1,
        FAR_FUTURE,
        vec![package::target(&binary, "bin/target", Fix::ReturnFromSpin)],
    );
    let pkg = package::save(&dir, "spin.hpkg", &bytes);
    let (spin, _) = symbol(&binary, "spin");
    let (compute, _) = symbol(&binary, "compute");
    let base = support::load_address(pid, &binary);
    let watched = [(base + spin, 32), (base + compute, 16)];
    let before = snapshot(pid, &watched);
    let started = Instant::now();
    let (code, stdout, stderr) = applier(&[
        "apply",
        path(&pkg),
        "--trust",
        path(&signer.trust_file),
        "--pid",
        &pid.to_string(),
        "--state-dir",
        path(&state),
        "--retries",
        "10",
        "--retry-timeout-ms",
        "1000",
    ]);
    let elapsed = started.elapsed();
    assert_eq!(code, 4, "{stdout}{stderr}");
    assert!(stdout.contains("function spin is busy"), "{stdout}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_eq!(snapshot(pid, &watched), before);
    assert!(carried(pid, &state).is_empty());
    // Still running, still the baseline.
    let c = program.latest();
    let n = program.wait_for("still running", |n| n.calls > c.calls);
    assert_eq!(n.new, 0);
}

#[test]
fn bad_packages_are_refused_and_memory_unchanged() {
    if !privileged() {
        return;
    }
    let dir = temp_dir("bad");
    let state = dir.join("state");
    let binary = support::build_executable(&dir);
    let signer = Signer::new(&dir);
    let program = Program::start(&binary, &["2"]);
    let pid = program.pid();
    install_baseline(&signer, &dir, &binary, "bin/target", pid, &state);
    let (compute, _) = symbol(&binary, "compute");
    let base = support::load_address(pid, &binary);
    let before = snapshot(pid, &[(base + compute, 16)]);
    let good = package::package(
        &signer,
        PackageKind::Hotpatch,
        2,
        1,
        FAR_FUTURE,
        vec![package::target(&binary, "bin/target", Fix::TailCallHelper)],
    );

    // Tampered: the payload's jump displacement changed, the archive otherwise intact.
    let tampered = package::replace_entry(&good, "payloads/bin_target.bin", |payload| {
        payload[1] ^= 0x40;
    });
    let out = apply(
        &package::save(&dir, "tampered.hpkg", &tampered),
        &signer,
        pid,
        &state,
        3,
    );
    assert!(out.contains("payloads/bin_target.bin"), "{out}");
    // Tampered manifest: the signature no longer holds.
    let forged = package::replace_entry(&good, "manifest.json", |manifest| {
        let text = String::from_utf8(manifest.clone()).unwrap();
        let forged = text.replacen("demo-2026-10", "demo-2026-11", 1);
        assert_ne!(forged, text);
        *manifest = forged.into_bytes();
    });
    let out = apply(
        &package::save(&dir, "forged.hpkg", &forged),
        &signer,
        pid,
        &state,
        3,
    );
    assert!(out.contains("signature"), "{out}");

    // Signed by a key the applier does not trust.
    let stranger = Signer::new(&temp_dir("bad-stranger"));
    let foreign = package::package(
        &stranger,
        PackageKind::Hotpatch,
        2,
        1,
        FAR_FUTURE,
        vec![package::target(&binary, "bin/target", Fix::TailCallHelper)],
    );
    apply(
        &package::save(&dir, "foreign.hpkg", &foreign),
        &signer,
        pid,
        &state,
        3,
    );

    // Expired.
    let expired = package::package(
        &signer,
        PackageKind::Hotpatch,
        2,
        1,
        package::now() - 1,
        vec![package::target(&binary, "bin/target", Fix::TailCallHelper)],
    );
    let out = apply(
        &package::save(&dir, "expired.hpkg", &expired),
        &signer,
        pid,
        &state,
        3,
    );
    assert!(out.contains("expire"), "{out}");

    // Wrong build: the target names the identity of another build (one byte longer).
    let other_binary = dir.join("other-build");
    let mut other = std::fs::read(&binary).unwrap();
    other.push(0);
    std::fs::write(&other_binary, other).unwrap();
    let wrong = package::package(
        &signer,
        PackageKind::Hotpatch,
        2,
        1,
        FAR_FUTURE,
        vec![package::target(
            &other_binary,
            "bin/target",
            Fix::TailCallHelper,
        )],
    );
    let out = apply(
        &package::save(&dir, "wrong.hpkg", &wrong),
        &signer,
        pid,
        &state,
        4,
    );
    assert!(out.contains("identity"), "{out}");

    // Downgrade: below the installed baseline's sequence.
    let old = package::package(
        &signer,
        PackageKind::Baseline,
        0,
        0,
        FAR_FUTURE,
        vec![package::target(&binary, "bin/target", Fix::None)],
    );
    apply(
        &package::save(&dir, "old.hpkg", &old),
        &signer,
        pid,
        &state,
        3,
    );

    assert_eq!(snapshot(pid, &[(base + compute, 16)]), before);
    assert!(carried(pid, &state).is_empty());
    let c = program.latest();
    assert_eq!(program.wait_for("running", |n| n.calls > c.calls).new, 0);
}

#[test]
fn process_exiting_during_apply_is_a_clean_error() {
    if !privileged() {
        return;
    }
    let dir = temp_dir("exit");
    let state = dir.join("state");
    let binary = support::build_executable(&dir);
    let signer = Signer::new(&dir);
    let mut program = Program::start(&binary, &["2", "spin"]);
    let pid = program.pid();
    install_baseline(&signer, &dir, &binary, "bin/target", pid, &state);
    let state_before = std::fs::read_to_string(state.join("state.json")).unwrap();
    let bytes = package::package(
        &signer,
        PackageKind::Hotpatch,
        2,
        1,
        FAR_FUTURE,
        vec![package::target(&binary, "bin/target", Fix::ReturnFromSpin)],
    );
    let pkg = package::save(&dir, "spin.hpkg", &bytes);
    // spin() keeps the applier retrying; the process is killed while it does.
    let child = Command::new(env!("CARGO_BIN_EXE_hotpatch-apply"))
        .args([
            "apply",
            path(&pkg),
            "--trust",
            path(&signer.trust_file),
            "--pid",
            &pid.to_string(),
            "--state-dir",
            path(&state),
            "--retries",
            "1000",
            "--retry-timeout-ms",
            "10000",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    program.child.kill().unwrap();
    program.child.wait().unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(5), "{stdout}");
    assert!(
        stdout.contains(&format!("process {pid} is gone")),
        "{stdout}"
    );
    // Nothing recorded for a package that did not take effect.
    assert_eq!(
        std::fs::read_to_string(state.join("state.json")).unwrap(),
        state_before
    );
}

#[test]
fn watch_patches_a_process_started_after_the_apply() {
    if !privileged() {
        return;
    }
    let dir = temp_dir("watch");
    let state = dir.join("state");
    let unique = format!(
        "-Wl,--build-id=0x{:08x}{:016x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            ^ 0x5a5a
    );
    let (binary, library) = support::build_with_library_flags(&dir, &[&unique]);
    let signer = Signer::new(&dir);
    // Installed while no process maps the library: recorded for processes to come.
    for (name, kind, sequence, fix) in [
        ("baseline.hpkg", PackageKind::Baseline, 1, Fix::None),
        ("month1.hpkg", PackageKind::Hotpatch, 2, Fix::Multiply),
    ] {
        let bytes = package::package(
            &signer,
            kind,
            sequence,
            1,
            FAR_FUTURE,
            vec![package::target(&library, "lib/libcompute.so", fix)],
        );
        let (code, stdout, stderr) = applier(&[
            "apply",
            path(&package::save(&dir, name, &bytes)),
            "--trust",
            path(&signer.trust_file),
            "--all",
            "--state-dir",
            path(&state),
        ]);
        assert_eq!(code, 0, "{stdout}{stderr}");
    }
    let mut watcher = Command::new(env!("CARGO_BIN_EXE_hotpatch-apply"))
        .args([
            "watch",
            "--trust",
            path(&signer.trust_file),
            "--state-dir",
            path(&state),
            "--interval-ms",
            "20",
            "--run-for-ms",
            "20000",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = watcher.stdout.take().unwrap();
    let (sender, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let program = Program::start(&binary, &["2"]);
    let pid = program.pid();
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the watcher reports the new process");
        println!("watch: {line}");
        if line.starts_with(&format!("pid {pid} ")) {
            break line;
        }
    };
    let _ = watcher.kill();
    let _ = watcher.wait();
    assert!(line.contains("applied (sequence 2)"), "{line}");
    let after_ms: u64 = line
        .rsplit_once("; ")
        .and_then(|(_, tail)| tail.split_whitespace().next()?.parse().ok())
        .expect("the time since the process started");
    println!("a process started after the apply ran {after_ms} ms before it was patched");
    assert_eq!(carried(pid, &state), vec![2]);
    let c = program.latest();
    let n = program.wait_for("fixed results", |n| n.new > c.new + 100_000);
    assert_eq!(n.wrong, 0);
    // The baseline code stopped running in this process.
    let settled = program.latest();
    let later = program.wait_for("more calls", |n| n.calls > settled.calls + 1_000_000);
    assert_eq!(later.old, settled.old);
}
