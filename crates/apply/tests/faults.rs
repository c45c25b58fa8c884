//! Faults (issue 12): the applier killed (SIGKILL, through the test build's crash points,
//! src/crash.rs) at each step of an apply and of a rollback, and the state directory on a
//! full disk. After each kill the target runs either its baseline code or the whole patch, the
//! bytes at every site say which, `hotpatch-apply status` says the same, `state.json` is the
//! old or the new one and never torn, and running the command again finishes the job. Killed
//! between two redirect writes of one stop window (`*.held`, `*.first-write`, a two-site
//! package), the applier leaves the target half patched but *stopped*: the window's hold
//! queued SIGSTOP while every thread was in a ptrace stop, so each thread takes it when the
//! kernel detaches it, before running an instruction. `status` reports the process `held`
//! (and `partial` with the sites), and `rollback` or `apply` finishes the job and lets the
//! process run (docs/security.md).
//!
//! They need root (ptrace, /proc/PID/mem, mount) and gcc; under CI a missing privilege or tool
//! fails them.

mod support;

use hotpatch_package::PackageKind;
use serde_json::Value;
use std::path::Path;
use support::package::Fix;
use support::scene::{Run, Scene};

const APPLY_POINTS: &[&str] = &[
    "apply.verified",
    "apply.prepared",
    "apply.staged",
    "apply.checked",
    "apply.held",
    "apply.first-write",
    "apply.written",
    "apply.released",
    "apply.patched",
    "apply.recorded",
];

const ROLLBACK_POINTS: &[&str] = &[
    "rollback.planned",
    "rollback.checked",
    "rollback.held",
    "rollback.first-write",
    "rollback.written",
    "rollback.released",
    "rollback.unmapped",
];

/// What the bytes at the two sites (spin() and compute(), in address order) are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Code {
    Baseline,
    Partial,
    Patched,
}

struct Sites {
    /// (address, baseline bytes) of each site's first 5 bytes.
    sites: Vec<(u64, Vec<u8>)>,
}

impl Sites {
    fn of(scene: &Scene) -> Sites {
        let mut sites: Vec<(u64, Vec<u8>)> = ["compute", "spin"]
            .iter()
            .map(|name| {
                let (rva, _) = support::symbol(&scene.binary, name);
                (
                    scene.base + rva,
                    support::bytes_at_rva(&scene.binary, rva, 5),
                )
            })
            .collect();
        sites.sort();
        Sites { sites }
    }

    /// Reads the sites in the process: each holds its baseline bytes or a `jmp rel32`.
    fn code(&self, scene: &Scene) -> Code {
        let ranges: Vec<(u64, usize)> = self.sites.iter().map(|(a, _)| (*a, 5)).collect();
        let (_, now) = support::snapshot(scene.pid, &ranges);
        let mut redirected = 0;
        for ((address, original), bytes) in self.sites.iter().zip(&now) {
            if bytes == original {
                continue;
            }
            assert_eq!(bytes[0], 0xe9, "site {address:#x} holds {bytes:02x?}");
            redirected += 1;
        }
        match redirected {
            0 => Code::Baseline,
            n if n == self.sites.len() => Code::Patched,
            _ => Code::Partial,
        }
    }
}

/// What `status` says of the process: `(exit code, state)`, where the state is `baseline`
/// when no entry names a payload.
fn status(scene: &Scene) -> (Option<i32>, String) {
    let (code, state, _) = status_held(scene);
    (code, state)
}

/// `status` with whether it reports the process held (stopped by a killed applier).
fn status_held(scene: &Scene) -> (Option<i32>, String, bool) {
    let (code, entries) = scene.status();
    let named: Vec<&Value> = entries
        .iter()
        .filter(|e| e["state"].as_str() != Some("baseline"))
        .collect();
    assert!(named.len() <= 1, "{entries:?}");
    let state = named
        .first()
        .and_then(|e| e["state"].as_str())
        .unwrap_or("baseline");
    let held = entries.iter().any(|e| e["held"] == Value::Bool(true));
    (code, state.to_owned(), held)
}

/// Whether the target is in a job-control stop (`T` in /proc/PID/stat): it runs no code.
fn stopped(scene: &Scene) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", scene.pid)).unwrap();
    let (_, rest) = stat.rsplit_once(')').unwrap();
    rest.trim_start().starts_with('T')
}

/// A killed applier's hold: the process is stopped and `status` says why (exit 4).
fn assert_held(scene: &Scene, point: &str) {
    assert!(stopped(scene), "{point}: the process is stopped");
    let (code, _, held) = status_held(scene);
    assert!(held, "{point}: status reports the process held");
    assert_eq!(code, Some(4), "{point}");
}

fn killed(run: &Run) {
    assert_eq!(run.signal, Some(9), "the applier was killed: {run:?}");
}

fn state_json(scene: &Scene) -> Value {
    serde_json::from_slice(&std::fs::read(scene.state.join("state.json")).unwrap()).unwrap()
}

fn installed(scene: &Scene) -> Value {
    state_json(scene)["products"]["demo/stable"]["installed"].clone()
}

#[test]
fn applier_killed_at_each_step_of_an_apply() {
    for point in APPLY_POINTS {
        let Some(scene) = Scene::start(&format!("fault-{point}"), &["2"]) else {
            return;
        };
        let sites = Sites::of(&scene);
        let package = scene.save(
            "two-sites.hpkg",
            &scene.package(PackageKind::Hotpatch, 2, Fix::TwoSites),
        );
        let state_before = std::fs::read(scene.state.join("state.json")).unwrap();
        let run = scene.apply_with(
            &package,
            &scene.signer.trust_file,
            &[("HOTPATCH_APPLY_CRASH_AT", point)],
        );
        killed(&run);
        let code = sites.code(&scene);
        let (status_code, state) = status(&scene);
        let state_after = std::fs::read(scene.state.join("state.json")).unwrap();
        println!("{point}: code {code:?}, status {state} (exit {status_code:?})");
        match *point {
            "apply.verified" | "apply.prepared" => {
                assert_eq!(
                    (code, state.as_str(), status_code),
                    (Code::Baseline, "baseline", Some(0))
                );
                assert!(!scene.fixed_code_runs());
            }
            "apply.staged" | "apply.checked" => {
                // A payload is mapped, no redirect leads to it: the baseline code runs.
                assert_eq!(
                    (code, state.as_str(), status_code),
                    (Code::Baseline, "staged", Some(0))
                );
                assert!(!scene.fixed_code_runs());
            }
            "apply.held" => {
                // Nothing written, the process held: it runs no code, old or new.
                assert_eq!((code, state.as_str()), (Code::Baseline, "staged"));
                assert_held(&scene, point);
            }
            "apply.first-write" => {
                // Half written, the process held: no thread runs the half-patched code.
                assert_eq!(
                    (code, state.as_str(), status_code),
                    (Code::Partial, "partial", Some(4))
                );
                assert_held(&scene, point);
            }
            "apply.written" | "apply.released" | "apply.patched" => {
                // Fully patched, not yet recorded: status names the disagreement.
                assert_eq!(
                    (code, state.as_str(), status_code),
                    (Code::Patched, "patched", Some(4))
                );
                assert!(scene.fixed_code_runs());
            }
            "apply.recorded" => {
                assert_eq!(
                    (code, state.as_str(), status_code),
                    (Code::Patched, "patched", Some(0))
                );
                assert!(scene.fixed_code_runs());
            }
            other => panic!("no expectation for {other}"),
        }
        if !matches!(*point, "apply.held" | "apply.first-write") {
            assert!(!stopped(&scene), "{point}: the process runs");
        }
        // state.json is the old one or the new one, whole.
        if *point == "apply.recorded" {
            assert_eq!(installed(&scene), 2);
        } else {
            assert_eq!(state_after, state_before, "{point}");
        }
        if *point == "apply.first-write" {
            // A rollback puts every site back and lets the process run.
            let run = scene.rollback(&[]);
            assert_eq!(run.code, Some(0), "{run:?}");
            assert_eq!(sites.code(&scene), Code::Baseline);
            assert!(!stopped(&scene));
            assert!(!scene.fixed_code_runs());
        }
        // Applying again completes it, and records it.
        let run = scene.apply(&package);
        assert_eq!(run.code, Some(0), "{point}: {run:?}");
        assert_eq!(sites.code(&scene), Code::Patched, "{point}");
        assert_eq!(status(&scene), (Some(0), "patched".to_owned()), "{point}");
        assert_eq!(installed(&scene), 2, "{point}");
        assert!(!stopped(&scene), "{point}");
        assert!(scene.fixed_code_runs());
    }
}

#[test]
fn applier_killed_at_each_step_of_a_rollback() {
    for point in ROLLBACK_POINTS {
        let Some(scene) = Scene::start(&format!("fault-{point}"), &["2"]) else {
            return;
        };
        let sites = Sites::of(&scene);
        let package = scene.save(
            "two-sites.hpkg",
            &scene.package(PackageKind::Hotpatch, 2, Fix::TwoSites),
        );
        assert_eq!(scene.apply(&package).code, Some(0));
        assert_eq!(sites.code(&scene), Code::Patched);
        let state_before = std::fs::read(scene.state.join("state.json")).unwrap();
        let run = scene.rollback(&[("HOTPATCH_APPLY_CRASH_AT", point)]);
        killed(&run);
        let code = sites.code(&scene);
        let (_, state) = status(&scene);
        println!("{point}: code {code:?}, status {state}");
        match *point {
            "rollback.planned" | "rollback.checked" => {
                assert_eq!((code, state.as_str()), (Code::Patched, "patched"));
                assert!(scene.fixed_code_runs());
            }
            "rollback.held" => {
                assert_eq!((code, state.as_str()), (Code::Patched, "patched"));
                assert_held(&scene, point);
            }
            "rollback.first-write" => {
                assert_eq!((code, state.as_str()), (Code::Partial, "partial"));
                assert_held(&scene, point);
            }
            "rollback.written" | "rollback.released" => {
                // Every site is back; the payload is still mapped, unreachable.
                assert_eq!((code, state.as_str()), (Code::Baseline, "staged"));
                assert!(!scene.fixed_code_runs());
            }
            "rollback.unmapped" => {
                assert_eq!((code, state.as_str()), (Code::Baseline, "baseline"));
                assert!(!scene.fixed_code_runs());
            }
            other => panic!("no expectation for {other}"),
        }
        if !matches!(*point, "rollback.held" | "rollback.first-write") {
            assert!(!stopped(&scene), "{point}: the process runs");
        }
        // A rollback of one process does not change the record; a killed one neither.
        assert_eq!(
            std::fs::read(scene.state.join("state.json")).unwrap(),
            state_before
        );
        // Rolling back again finishes the job: every site back, no payload left mapped.
        let run = scene.rollback(&[]);
        assert_eq!(run.code, Some(0), "{point}: {run:?}");
        assert_eq!(sites.code(&scene), Code::Baseline, "{point}");
        assert_eq!(status(&scene).1, "baseline", "{point}");
        assert!(!stopped(&scene), "{point}");
        assert!(!scene.fixed_code_runs());
    }
}

/// A tmpfs mounted for one test, unmounted when dropped (also when the test fails).
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the file system holding `dir` until a write fails; returns the filler's path.
fn fill(dir: &Path) -> std::path::PathBuf {
    use std::io::Write;
    let filler = dir.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let block = [0xa5u8; 512];
    while file
        .write_all(&block)
        .and_then(|()| file.sync_all())
        .is_ok()
    {}
    filler
}

#[test]
fn full_disk_refuses_before_touching_the_process_and_loses_nothing() {
    let mut mount = None;
    let Some(scene) = Scene::start_in("fault-full-disk", &["2"], |state| {
        std::fs::create_dir_all(state).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs"])
            .arg(state)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mount a 64 KiB tmpfs on the state directory"
        );
        mount = Some(Mount(state.to_owned()));
    }) else {
        return;
    };
    let _mount = mount;
    let month1 = scene.save("month1.hpkg", &scene.month1());
    let filler = fill(&scene.state);
    scene.assert_refused(2, "state", || scene.apply(&month1));
    // No temporary file or stored package left behind (assert_refused compared every file).
    assert!(!scene.state.join("state.json.tmp").exists());
    // Space again: the same package applies and is recorded.
    std::fs::remove_file(filler).unwrap();
    let run = scene.apply(&month1);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(installed(&scene), 2);
    assert!(scene.fixed_code_runs());
}
