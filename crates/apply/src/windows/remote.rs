//! Calling a function inside the target process: a tiny stub, written into its own small
//! execute-read allocation, loads up to three arguments and calls the function; a thread the
//! applier creates in the process (`CreateRemoteThread`) runs it, and its exit code is the
//! function's result. Used to register and delete the payload's function table with
//! `RtlAddFunctionTable` / `RtlDeleteFunctionTable`, whose addresses are read from the export
//! table of the process's own `ntdll.dll`, never assumed to equal the applier's.

use super::handle::Handle;
use super::modules::{module_path, modules};
use super::process::Process;
use crate::bytes::u32_at;
use crate::error::Error;
use std::ffi::c_void;
use windows_sys::Win32::Foundation::WAIT_OBJECT_0;
use windows_sys::Win32::System::Memory::{
    MEM_COMMIT, MEM_RELEASE, MEM_RESERVE, PAGE_EXECUTE_READ, PAGE_READWRITE, VirtualAllocEx,
    VirtualFreeEx,
};
use windows_sys::Win32::System::Threading::{
    CreateRemoteThread, GetExitCodeThread, LPTHREAD_START_ROUTINE, WaitForSingleObject,
};

/// How long a remote call may take before the applier gives up on it.
const CALL_TIMEOUT_MS: u32 = 10_000;
/// The export directory of `ntdll.dll` is read whole, up to this size.
const MAX_EXPORT_DIRECTORY: u32 = 4 << 20;

/// The address of export `name` of the process's `ntdll.dll`.
pub fn ntdll_export(process: &Process, name: &'static str) -> Result<u64, Error> {
    let missing = |what| Error::RemoteCall {
        pid: process.pid(),
        function: name,
        what,
    };
    let base = modules(process)?
        .into_iter()
        .find(|&base| {
            module_path(process, base).is_some_and(|path| {
                path.to_ascii_lowercase()
                    .rsplit(['\\', '/'])
                    .next()
                    .is_some_and(|file| file == "ntdll.dll")
            })
        })
        .ok_or_else(|| missing("the process has no ntdll.dll"))?;
    let headers = process.read_vec(base, 4096)?;
    let export_rva = u32_at(&headers, 0x3c)
        .and_then(|pe| {
            // PE32+: the data directories start 112 bytes into the optional header.
            let directory = usize::try_from(pe).ok()?.checked_add(24 + 112)?;
            Some((
                u32_at(&headers, directory)?,
                u32_at(&headers, directory + 4)?,
            ))
        })
        .filter(|(rva, size)| *rva != 0 && *size >= 40 && *size <= MAX_EXPORT_DIRECTORY)
        .ok_or_else(|| missing("ntdll.dll has no readable export directory"))?;
    let (rva, size) = export_rva;
    let directory = process.read_vec(base + u64::from(rva), size as usize)?;
    let local = |at: u32| at.checked_sub(rva).map(|offset| offset as usize);
    let count = u32_at(&directory, 24).unwrap_or(0) as usize;
    let functions = u32_at(&directory, 28).and_then(local);
    let names = u32_at(&directory, 32).and_then(local);
    let ordinals = u32_at(&directory, 36).and_then(local);
    let (Some(functions_at), Some(names_at), Some(ordinals_at)) = (functions, names, ordinals)
    else {
        return Err(missing(
            "ntdll.dll's export tables lie outside its export directory",
        ));
    };
    for index in 0..count {
        let Some(name_rva) = u32_at(&directory, names_at + index * 4) else {
            break;
        };
        let Some(start) = local(name_rva) else {
            continue;
        };
        let Some(found) = directory.get(start..start.saturating_add(name.len() + 1)) else {
            continue;
        };
        if &found[..name.len()] != name.as_bytes() || found[name.len()] != 0 {
            continue;
        }
        let ordinal = directory
            .get(ordinals_at + index * 2..ordinals_at + index * 2 + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
            .ok_or_else(|| missing("ntdll.dll's ordinal table is truncated"))?;
        let function_rva = u32_at(&directory, functions_at + ordinal * 4)
            .ok_or_else(|| missing("ntdll.dll's function table is truncated"))?;
        if local(function_rva).is_some_and(|at| at < directory.len()) {
            return Err(missing("the export is forwarded"));
        }
        return Ok(base + u64::from(function_rva));
    }
    Err(missing("ntdll.dll does not export it"))
}

/// The stub: `sub rsp, 0x28; mov rcx, a0; mov rdx, a1; mov r8, a2; mov rax, function;
/// call rax; movzx eax, al; add rsp, 0x28; ret` (the functions called return a BOOLEAN).
fn stub(function: u64, args: [u64; 3]) -> Vec<u8> {
    let mut code = vec![0x48, 0x83, 0xec, 0x28];
    for (prefix, value) in [
        ([0x48, 0xb9], args[0]),
        ([0x48, 0xba], args[1]),
        ([0x49, 0xb8], args[2]),
        ([0x48, 0xb8], function),
    ] {
        code.extend_from_slice(&prefix);
        code.extend_from_slice(&value.to_le_bytes());
    }
    code.extend_from_slice(&[0xff, 0xd0, 0x0f, 0xb6, 0xc0, 0x48, 0x83, 0xc4, 0x28, 0xc3]);
    code
}

/// Calls `function(args...)` in the process on a new thread and returns its BOOLEAN result.
pub fn call(
    process: &Process,
    name: &'static str,
    function: u64,
    args: [u64; 3],
) -> Result<bool, Error> {
    let pid = process.pid();
    let code = stub(function, args);
    // SAFETY: plain values; the OS reserves memory in the other process or fails.
    let address = unsafe {
        VirtualAllocEx(
            process.handle().raw(),
            std::ptr::null(),
            code.len(),
            MEM_RESERVE | MEM_COMMIT,
            PAGE_READWRITE,
        )
    };
    if address.is_null() {
        return Err(Error::os(
            pid,
            "VirtualAllocEx",
            std::io::Error::last_os_error(),
        ));
    }
    let (result, finished) = run_stub(process, name, address as u64, &code);
    // A thread that did not finish may still run the stub: its memory stays then.
    if finished {
        // SAFETY: releases the reservation made above, which no thread runs any more.
        unsafe {
            VirtualFreeEx(process.handle().raw(), address, 0, MEM_RELEASE);
        }
    }
    result
}

/// Runs the stub; the flag says whether no thread can be running it any more.
fn run_stub(
    process: &Process,
    name: &'static str,
    address: u64,
    code: &[u8],
) -> (Result<bool, Error>, bool) {
    match start_and_wait(process, name, address, code) {
        Ok(result) => (Ok(result), true),
        Err((error, finished)) => (Err(error), finished),
    }
}

fn start_and_wait(
    process: &Process,
    name: &'static str,
    address: u64,
    code: &[u8],
) -> Result<bool, (Error, bool)> {
    let done = |error| (error, true);
    let pid = process.pid();
    process.write(address, code).map_err(done)?;
    process
        .protect(address, code.len() as u64, PAGE_EXECUTE_READ)
        .map_err(done)?;
    // SAFETY: `address` holds the stub just written, execute-read, in the other process; the
    // OS only stores the pointer as that thread's start address.
    let start: LPTHREAD_START_ROUTINE = unsafe {
        std::mem::transmute::<*const c_void, LPTHREAD_START_ROUTINE>(address as *const c_void)
    };
    // SAFETY: plain values and the start address above; returns a thread handle or null.
    let raw = unsafe {
        CreateRemoteThread(
            process.handle().raw(),
            std::ptr::null(),
            0,
            start,
            std::ptr::null(),
            0,
            std::ptr::null_mut(),
        )
    };
    let thread = Handle::new(raw).ok_or_else(|| {
        done(Error::os(
            pid,
            "CreateRemoteThread",
            std::io::Error::last_os_error(),
        ))
    })?;
    // SAFETY: an open thread handle.
    if unsafe { WaitForSingleObject(thread.raw(), CALL_TIMEOUT_MS) } != WAIT_OBJECT_0 {
        return Err((
            Error::RemoteCall {
                pid,
                function: name,
                what: "the remote thread did not finish in time",
            },
            false,
        ));
    }
    let mut code = 0u32;
    // SAFETY: `code` is a live u32 the OS writes.
    if unsafe { GetExitCodeThread(thread.raw(), &mut code) } == 0 {
        return Err(done(Error::os(
            pid,
            "GetExitCodeThread",
            std::io::Error::last_os_error(),
        )));
    }
    Ok(code != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stub_loads_the_arguments_and_calls() {
        let code = stub(0x1122_3344_5566_7788, [1, 2, 3]);
        assert_eq!(&code[..4], &[0x48, 0x83, 0xec, 0x28]);
        assert_eq!(&code[4..6], &[0x48, 0xb9]);
        assert_eq!(&code[6..14], &1u64.to_le_bytes());
        assert_eq!(&code[34..36], &[0x48, 0xb8]);
        assert_eq!(&code[36..44], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(code.last(), Some(&0xc3));
    }
}
