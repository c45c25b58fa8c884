//! The Linux backend: processes are read through `/proc`, stopped with ptrace, changed through
//! `/proc/PID/mem` and system calls injected into one of their own threads.

pub mod commands;
pub mod connector;
pub mod elf_check;
pub mod identity;
pub mod locate;
pub mod maps;
pub mod mem;
pub mod patch;
pub mod ptrace;
pub mod remote;
pub mod stack;
pub mod threads;
pub mod watch;
