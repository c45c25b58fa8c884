//! Shared pieces of the live tests: building the C test programs with gcc, reading symbol
//! addresses and bytes from the built files, running a program and reading its counters, and
//! hand-built payloads (the lift does not exist yet, so the fixed code is assembled here).
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub mod package;
pub mod scene;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// Whether this test can run: root and gcc. Under CI a missing privilege or tool fails.
pub fn privileged() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    let gcc = Command::new("gcc").arg("--version").output().is_ok();
    if root && gcc {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "live tests need root and gcc under CI (root: {root}, gcc: {gcc})"
    );
    eprintln!("skipped: live tests need root and gcc (root: {root}, gcc: {gcc})");
    false
}

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hotpatch-apply-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn programs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs")
}

fn run(command: &mut Command) {
    let output = command.output().expect("tool runs");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The test program with compute() inside the executable.
pub fn build_executable(dir: &Path) -> PathBuf {
    let out = dir.join("target");
    run(Command::new("gcc")
        .args(["-O2", "-pthread", "-o"])
        .arg(&out)
        .arg(programs().join("target.c"))
        .arg(programs().join("compute.c")));
    out
}

/// The test program with compute() in `libcompute.so`; returns (program, library).
pub fn build_with_library(dir: &Path) -> (PathBuf, PathBuf) {
    build_with_library_flags(dir, &[])
}

/// The same with extra linker flags for the library (e.g. a unique build-id, so that no other
/// test's process maps a file of the same identity).
pub fn build_with_library_flags(dir: &Path, flags: &[&str]) -> (PathBuf, PathBuf) {
    let library = dir.join("libcompute.so");
    run(Command::new("gcc")
        .args(["-O2", "-shared", "-fPIC"])
        .args(flags)
        .arg("-o")
        .arg(&library)
        .arg(programs().join("compute.c")));
    let out = dir.join("target-dso");
    run(Command::new("gcc")
        .args(["-O2", "-pthread", "-o"])
        .arg(&out)
        .arg(programs().join("target.c"))
        .arg(format!("-L{}", dir.display()))
        .args(["-lcompute", "-Wl,-rpath,$ORIGIN"]));
    (out, library)
}

/// The address (RVA) and size of a defined symbol, from `nm -S`.
pub fn symbol(binary: &Path, name: &str) -> (u64, u64) {
    let output = Command::new("nm")
        .args(["-S", "--defined-only"])
        .arg(binary)
        .output()
        .expect("nm runs");
    let text = String::from_utf8_lossy(&output.stdout);
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() == 4 && fields[3] == name {
            return (
                u64::from_str_radix(fields[0], 16).unwrap(),
                u64::from_str_radix(fields[1], 16).unwrap(),
            );
        }
    }
    panic!("{name} not in {}", binary.display());
}

/// `len` bytes of the file at virtual address `rva`, through its PT_LOAD headers.
pub fn bytes_at_rva(binary: &Path, rva: u64, len: usize) -> Vec<u8> {
    let file = std::fs::read(binary).unwrap();
    let u64_at = |at: usize| u64::from_le_bytes(file[at..at + 8].try_into().unwrap());
    let u16_at = |at: usize| u16::from_le_bytes(file[at..at + 2].try_into().unwrap());
    let phoff = u64_at(0x20) as usize;
    let phentsize = u16_at(0x36) as usize;
    for index in 0..u16_at(0x38) as usize {
        let ph = phoff + index * phentsize;
        let kind = u32::from_le_bytes(file[ph..ph + 4].try_into().unwrap());
        let (offset, vaddr, filesz) = (u64_at(ph + 8), u64_at(ph + 16), u64_at(ph + 32));
        if kind == 1 && vaddr <= rva && rva + len as u64 <= vaddr + filesz {
            let at = (rva - vaddr + offset) as usize;
            return file[at..at + len].to_vec();
        }
    }
    panic!("rva {rva:#x} not in a PT_LOAD of {}", binary.display());
}

/// The counters the test program prints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub calls: u64,
    pub old: u64,
    pub new: u64,
    pub wrong: u64,
}

fn parse(line: &str) -> Option<Counters> {
    let mut counters = Counters::default();
    for field in line.split_whitespace() {
        let (key, value) = field.split_once('=')?;
        let value = value.parse().ok()?;
        match key {
            "calls" => counters.calls = value,
            "old" => counters.old = value,
            "new" => counters.new = value,
            "wrong" => counters.wrong = value,
            _ => {}
        }
    }
    Some(counters)
}

/// A running test program.
pub struct Program {
    pub child: Child,
    lines: Receiver<Counters>,
}

impl Program {
    pub fn start(binary: &Path, args: &[&str]) -> Program {
        let mut child = Command::new(binary)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("test program starts");
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(counters) = parse(&line)
                    && sender.send(counters).is_err()
                {
                    break;
                }
            }
        });
        let program = Program { child, lines };
        program.next();
        program
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The next printed counters.
    pub fn next(&self) -> Counters {
        self.lines
            .recv_timeout(Duration::from_secs(10))
            .expect("the test program keeps printing")
    }

    /// The newest counters, after draining what was printed so far.
    pub fn latest(&self) -> Counters {
        let mut last = self.next();
        while let Ok(counters) = self.lines.try_recv() {
            last = counters;
        }
        last
    }

    /// Waits until `done` holds for the counters (at most 10 s) and returns them.
    pub fn wait_for(&self, what: &str, done: impl Fn(&Counters) -> bool) -> Counters {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let counters = self.next();
            if done(&counters) {
                return counters;
            }
            assert!(Instant::now() < deadline, "{what}: last {counters:?}");
        }
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SHA-256 (hex) of a file, computed with the sha256sum tool (an independent view).
pub fn sha256_of(path: &Path) -> String {
    let output = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// The GNU build-id of a file, read with readelf (an independent view).
pub fn build_id_of(path: &Path) -> Option<String> {
    let output = Command::new("readelf")
        .arg("-n")
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .map(str::to_owned)
}

/// The process's memory map and the bytes at the given addresses.
pub fn snapshot(pid: i32, addresses: &[(u64, usize)]) -> (String, Vec<Vec<u8>>) {
    use std::os::unix::fs::FileExt;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let bytes = addresses
        .iter()
        .map(|&(address, len)| {
            let mut buffer = vec![0u8; len];
            mem.read_exact_at(&mut buffer, address).unwrap();
            buffer
        })
        .collect();
    (maps, bytes)
}

/// The start of the mapping of `path` at file offset 0 in `pid`.
pub fn load_address(pid: i32, path: &Path) -> u64 {
    let canonical = std::fs::canonicalize(path).unwrap();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    for line in maps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() >= 6 && fields[2] == "00000000" && Path::new(fields[5]) == canonical {
            let start = fields[0].split('-').next().unwrap();
            return u64::from_str_radix(start, 16).unwrap();
        }
    }
    panic!("{} not mapped in {pid}", path.display());
}
