//! Lifted code, executed: for each fixture below, the baseline ELF is loaded into this test
//! process (`loader.rs`), the pair is diffed, assessed and lifted by the real build side, the
//! payload is mapped beside the baseline and relocated with the applier's
//! `hotpatch_package::apply_relocations` (`payload.rs`), and both the baseline's function and
//! the payload's copy are called through typed function pointers. The old result comes from the
//! baseline, the fixed result from the payload, and the payload's reads and writes land in the
//! baseline's own globals. Then the applier's redirect is written at the baseline entry, the old
//! entry gives the fixed result, and the original bytes bring the old result back.
//! Every expected value is worked out from `fixtures/<case>/{baseline,fixed}.c`.
// The fixtures are x86-64 ELF executables, loaded with Linux system calls.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod loader;
mod payload;

use payload::{Patched, source};
use std::ffi::{CStr, c_char};
use std::io::Read;
use std::os::fd::FromRawFd;
use std::sync::Mutex;

/// A function of the loaded code at `address` with the type `F` (an `extern "C" fn` type).
///
/// # Safety
/// `address` must be the entry of code with exactly that signature, mapped executable for as
/// long as the pointer is used.
unsafe fn function<F: Copy>(address: u64) -> F {
    assert_eq!(size_of::<F>(), size_of::<u64>());
    // SAFETY: F is a function pointer type of pointer size (checked above); the caller
    // guarantees what lies at `address`.
    unsafe { std::mem::transmute_copy(&address) }
}

/// C stdio is process-wide: every test that runs code which prints holds this lock, so one
/// capture of fd 1 never sees another test's output.
static STDOUT: Mutex<()> = Mutex::new(());

/// Runs `call` with fd 1 redirected into a pipe and returns its result and what it printed
/// through C stdio.
fn capture<R>(call: impl FnOnce() -> R) -> (R, String) {
    let _guard = STDOUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut fds = [0; 2];
    // SAFETY: plain fd calls on descriptors this function creates; fflush(NULL) flushes every
    // C stream, so nothing printed earlier ends up in the pipe and nothing printed by `call`
    // stays in a buffer.
    let (result, reader) = unsafe {
        libc::fflush(std::ptr::null_mut());
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        let saved = libc::dup(1);
        assert!(saved >= 0);
        assert_eq!(libc::dup2(fds[1], 1), 1);
        libc::close(fds[1]);
        let result = call();
        libc::fflush(std::ptr::null_mut());
        assert_eq!(libc::dup2(saved, 1), 1);
        libc::close(saved);
        (result, std::fs::File::from_raw_fd(fds[0]))
    };
    let mut text = String::new();
    { reader }.read_to_string(&mut text).unwrap();
    (result, text)
}

#[test]
fn bounds_check_payload_refuses_the_index_the_baseline_reads_past_its_table() {
    // lookup_user(int index) returns &users[index], a `struct user { int id; char name[12]; }`
    // (16 bytes) in a table of MAX_USERS = 8; the fix returns NULL for index >= 8.
    let patched = Patched::new("bounds_check", &["lookup_user"], &[]);
    type LookupUser = extern "C" fn(i32) -> *const u8;
    // SAFETY: both are lookup_user of the fixture, with this signature, mapped executable.
    let (old, new) = unsafe {
        (
            function::<LookupUser>(patched.old_code("lookup_user")),
            function::<LookupUser>(patched.new_code("lookup_user")),
        )
    };
    let users = patched.image.symbol("users");
    assert_eq!(
        old(8) as u64,
        users + 8 * 16,
        "the baseline reads past the table"
    );
    assert_eq!(new(8) as u64, 0, "the fix refuses index 8");
    assert_eq!(new(1000) as u64, 0);
    assert_eq!(new(-1) as u64, 0);
    assert_eq!(old(-1) as u64, 0);
    // An index in range is an entry of the baseline's own table: {3, "alice"} at index 2.
    let alice = new(2);
    assert_eq!(alice as u64, users + 2 * 16);
    assert_eq!(i32::from_le_bytes(patched.image.read(alice as u64)), 3);
    // SAFETY: `alice` points at the 12-byte name of an entry of the mapped table, NUL-padded.
    let name = unsafe { CStr::from_ptr(alice.add(4).cast::<c_char>()) };
    assert_eq!(name.to_str().unwrap(), "alice");
    // Storage is shared, not copied: an id written into the baseline's table is what the
    // payload's pointer reads.
    patched
        .image
        .write_bytes(users + 2 * 16, &77i32.to_le_bytes());
    assert_eq!(i32::from_le_bytes(patched.image.read(new(2) as u64)), 77);

    patched.redirect("lookup_user");
    assert_eq!(old(8) as u64, 0, "the old entry now runs the fix");
    assert_eq!(old(3) as u64, users + 3 * 16);
    patched.rollback("lookup_user");
    assert_eq!(old(8) as u64, users + 8 * 16, "rolled back");
}

#[test]
fn added_helper_payload_calls_its_new_validate_header() {
    // parse_header(buf, len, out) copies an 8-byte header and returns its length; the fix first
    // calls the new validate_header: magic 0x5048, a version other than 0, and a length that
    // fits in what follows the header, else -1.
    let patched = Patched::new("added_helper", &["parse_header"], &["validate_header"]);
    #[repr(C)]
    #[derive(Default, Debug, PartialEq)]
    struct Header {
        magic: u16,
        version: u16,
        length: u32,
    }
    type ParseHeader = extern "C" fn(*const u8, usize, *mut Header) -> i32;
    // SAFETY: both are parse_header of the fixture, with this signature, mapped executable.
    let (old, new) = unsafe {
        (
            function::<ParseHeader>(patched.old_code("parse_header")),
            function::<ParseHeader>(patched.new_code("parse_header")),
        )
    };
    let parse = |f: ParseHeader, packet: &[u8]| {
        let mut header = Header::default();
        let result = f(packet.as_ptr(), packet.len(), &mut header);
        (result, header)
    };
    // main's packet: valid, 4 bytes of payload.
    let good = [0x48, 0x50, 1, 0, 4, 0, 0, 0, b'p', b'a', b'y', b'l'];
    let expected = Header {
        magic: 0x5048,
        version: 1,
        length: 4,
    };
    assert_eq!(parse(old, &good), (4, expected));
    assert_eq!(parse(new, &good).0, 4);
    assert_eq!(parse(new, &good).1.magic, 0x5048);
    let bad_magic = [0, 0, 1, 0, 4, 0, 0, 0, 0, 0, 0, 0];
    let version_zero = [0x48, 0x50, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0];
    let too_long = [0x48, 0x50, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0];
    for (packet, old_result) in [(bad_magic, 4), (version_zero, 4), (too_long, 5)] {
        assert_eq!(parse(old, &packet).0, old_result, "{packet:?}");
        assert_eq!(parse(new, &packet).0, -1, "{packet:?}");
    }
    assert_eq!(parse(new, &good[..7]).0, -1, "shorter than a header");

    patched.redirect("parse_header");
    assert_eq!(parse(old, &too_long).0, -1);
    patched.rollback("parse_header");
    assert_eq!(parse(old, &too_long).0, 5);
}

#[test]
fn string_literal_payload_prints_the_corrected_format_string() {
    // log_connection(fd, peer) prints "connection %d from %s openned\n"; the fix prints
    // "connection %d from %s opened, tls=off\n". The call to printf goes through the baseline's
    // PLT and GOT, resolved to this process's C library.
    let fixed_source = std::fs::read_to_string(source("string_literal", "fixed.c")).unwrap();
    assert!(fixed_source.contains(r#""connection %d from %s opened, tls=off\n""#));
    let patched = Patched::new("string_literal", &["log_connection"], &[]);
    type LogConnection = extern "C" fn(i32, *const c_char);
    type LogClose = extern "C" fn(i32);
    // SAFETY: log_connection and log_close of the fixture, with these signatures.
    let (old, new, close) = unsafe {
        (
            function::<LogConnection>(patched.old_code("log_connection")),
            function::<LogConnection>(patched.new_code("log_connection")),
            function::<LogClose>(patched.old_code("log_close")),
        )
    };
    let peer = c"192.0.2.1";
    let ((), printed) = capture(|| old(7, peer.as_ptr()));
    assert_eq!(printed, "connection 7 from 192.0.2.1 openned\n");
    let ((), printed) = capture(|| new(7, peer.as_ptr()));
    assert_eq!(printed, "connection 7 from 192.0.2.1 opened, tls=off\n");
    // The literal the payload prints is its own copy, not the baseline's.
    let copied = patched
        .lifted
        .copied_data
        .iter()
        .find(|data| data.what.starts_with("str:"))
        .expect("the new literal is copied");
    assert!(copied.len as usize >= "connection %d from %s opened, tls=off\n".len());

    patched.redirect("log_connection");
    let ((), printed) = capture(|| {
        old(9, peer.as_ptr());
        close(9);
    });
    assert_eq!(
        printed,
        "connection 9 from 192.0.2.1 opened, tls=off\nconnection 9 closed\n"
    );
    patched.rollback("log_connection");
    let ((), printed) = capture(|| old(9, peer.as_ptr()));
    assert_eq!(printed, "connection 9 from 192.0.2.1 openned\n");
}

#[test]
fn interpreter_switch_payload_dispatches_through_its_rewritten_jump_table() {
    // run_program(code, acc) runs (opcode, argument) byte pairs through a 100-case switch gcc
    // lowers to a jump table, until opcode 0; the fix returns -2 for OP_DIV (42) by zero, where
    // the baseline traps. (fixtures/switch_table's ELF build returns its default case through
    // eval_op.cold, which the lifter refuses to separate from eval_op.)
    let patched = Patched::new("interpreter_switch", &["run_program"], &[]);
    assert!(
        patched
            .lifted
            .copied_data
            .iter()
            .any(|data| data.what.starts_with("jumptable")),
        "the jump table travels in the payload"
    );
    type RunProgram = extern "C" fn(*const u8, i64) -> i64;
    // SAFETY: both are run_program of the fixture, with this signature, mapped executable.
    let (old, new) = unsafe {
        (
            function::<RunProgram>(patched.old_code("run_program")),
            function::<RunProgram>(patched.new_code("run_program")),
        )
    };
    // Expected values from the source: 10 ^ (5 + 16) = 31, 31 * 38 + 2 = 1180, 1180 / 3 = 393;
    // 1 + 2 * 104 = 209, push 209 + 82 = 291, 209 * 137 + 1 = 28634, + 291 * 93 = 55697.
    let programs: [(&[u8], i64, i64); 2] = [
        (&[1, 5, 3, 2, 42, 3, 0, 0], 10, 393),
        (&[9, 2, 7, 0, 12, 1, 8, 0, 0, 0], 1, 55697),
    ];
    for (code, acc, expected) in programs {
        assert_eq!(new(code.as_ptr(), acc), expected, "fixed {code:?}");
        assert_eq!(old(code.as_ptr(), acc), expected, "baseline {code:?}");
    }
    let divide_by_zero: &[u8] = &[42, 0, 0, 0];
    assert_eq!(
        new(divide_by_zero.as_ptr(), 7),
        -2,
        "the fix guards the division"
    );

    patched.redirect("run_program");
    assert_eq!(
        old(divide_by_zero.as_ptr(), 7),
        -2,
        "the old entry now runs the fix"
    );
    for (code, acc, expected) in programs {
        assert_eq!(old(code.as_ptr(), acc), expected, "redirected {code:?}");
    }
    patched.rollback("run_program");
    assert_eq!(old(programs[0].0.as_ptr(), 10), 393);
}

#[test]
fn calls_unchanged_payload_calls_the_baseline_function_and_debits_the_baseline_balance() {
    // charge_account(amount) adds fee_for(amount) = amount / 10 + 1 (unchanged), debits the
    // global `balance` (100 initially) and counts `charges`; the fix returns -1 instead of
    // overdrawing.
    let patched = Patched::new("calls_unchanged", &["charge_account"], &[]);
    type ChargeAccount = extern "C" fn(i64) -> i64;
    // SAFETY: both are charge_account of the fixture, with this signature, mapped executable.
    let (old, new) = unsafe {
        (
            function::<ChargeAccount>(patched.old_code("charge_account")),
            function::<ChargeAccount>(patched.new_code("charge_account")),
        )
    };
    let image = &patched.image;
    let (balance, charges) = (image.symbol("balance"), image.symbol("charges"));
    assert_eq!((image.read_i64(balance), image.read_i64(charges)), (100, 0));
    // 150 + fee 16 would overdraw 100.
    assert_eq!(new(150), -1);
    assert_eq!((image.read_i64(balance), image.read_i64(charges)), (100, 0));
    // 50 + fee 6: the payload writes the baseline's balance and counter.
    assert_eq!(new(50), 44);
    assert_eq!((image.read_i64(balance), image.read_i64(charges)), (44, 1));
    // The baseline overdraws: 44 - 56.
    assert_eq!(old(50), -12);
    assert_eq!((image.read_i64(balance), image.read_i64(charges)), (-12, 2));
    image.write_i64(balance, 1000);
    assert_eq!(new(100), 1000 - 111);
    assert_eq!(image.read_i64(charges), 3);

    // The call reaches the baseline's fee_for: replace it with `mov rax, 500; ret` and the
    // payload's charge_account sees a fee of 500.
    let fee_for = image.symbol("fee_for");
    assert!(image.symbol_size("fee_for") >= 8);
    let original: [u8; 8] = image.read(fee_for);
    image.patch_code(fee_for, &[0x48, 0xc7, 0xc0, 0xf4, 0x01, 0x00, 0x00, 0xc3]);
    image.write_i64(balance, 1000);
    assert_eq!(new(10), 1000 - 510);
    image.patch_code(fee_for, &original);

    patched.redirect("charge_account");
    image.write_i64(balance, 10);
    assert_eq!(old(50), -1, "the old entry now runs the fix");
    assert_eq!(image.read_i64(balance), 10);
    patched.rollback("charge_account");
    assert_eq!(old(50), 10 - 56);
}

#[test]
fn live_service_payload_counts_rejections_in_the_baseline_global() {
    // accept_length(len) rejects len > 64, counting each rejection in the global `rejected`;
    // the fix rejects len >= 64. `accept_fn` is a pointer to it, relocated by the loader.
    let patched = Patched::new("live_service", &["accept_length"], &[]);
    type AcceptLength = extern "C" fn(i32) -> i32;
    // SAFETY: both are accept_length of the fixture, with this signature, mapped executable.
    let (old, new) = unsafe {
        (
            function::<AcceptLength>(patched.old_code("accept_length")),
            function::<AcceptLength>(patched.new_code("accept_length")),
        )
    };
    let image = &patched.image;
    let rejected = image.symbol("rejected");
    assert_eq!(
        image.read_i64(image.symbol("accept_fn")) as u64,
        patched.old_code("accept_length")
    );
    assert_eq!((old(64), image.read_i64(rejected)), (1, 0));
    assert_eq!((new(64), image.read_i64(rejected)), (0, 1));
    assert_eq!((new(65), image.read_i64(rejected)), (0, 2));
    assert_eq!((new(63), image.read_i64(rejected)), (1, 2));
    assert_eq!((old(65), image.read_i64(rejected)), (0, 3));

    patched.redirect("accept_length");
    // SAFETY: accept_fn holds the baseline's accept_length, whose entry now jumps to the fix.
    let through_pointer =
        unsafe { function::<AcceptLength>(image.read_i64(image.symbol("accept_fn")) as u64) };
    assert_eq!((through_pointer(64), image.read_i64(rejected)), (0, 4));
    patched.rollback("accept_length");
    assert_eq!((old(64), image.read_i64(rejected)), (1, 4));
}
