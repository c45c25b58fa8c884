//! Reading and writing another process's memory through `/proc/PID/mem`. The kernel forces
//! writes through to read-only code pages (copy-on-write, as a debugger's breakpoint does), so
//! the redirects are written while the threads are stopped without making code writable.

use crate::error::Error;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;

/// An open `/proc/PID/mem`.
pub struct ProcessMemory {
    pid: i32,
    file: File,
}

impl ProcessMemory {
    /// Opens the memory of `pid` for reading and writing.
    pub fn open(pid: i32) -> Result<ProcessMemory, Error> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))
            .map_err(|source| Error::os(pid, "open /proc/PID/mem", source))?;
        Ok(ProcessMemory { pid, file })
    }

    /// The process this memory belongs to.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Reads exactly `buffer.len()` bytes at `address`.
    pub fn read(&self, address: u64, buffer: &mut [u8]) -> Result<(), Error> {
        self.file
            .read_exact_at(buffer, address)
            .map_err(|source| Error::os(self.pid, "read memory", source))
    }

    /// Reads `len` bytes at `address` into a new vector.
    pub fn read_vec(&self, address: u64, len: usize) -> Result<Vec<u8>, Error> {
        let mut buffer = vec![0u8; len];
        self.read(address, &mut buffer)?;
        Ok(buffer)
    }

    /// Writes all of `bytes` at `address`.
    pub fn write(&self, address: u64, bytes: &[u8]) -> Result<(), Error> {
        self.file
            .write_all_at(bytes, address)
            .map_err(|source| Error::os(self.pid, "write memory", source))
    }
}
