//! Exec events from the kernel's process connector (netlink `NETLINK_CONNECTOR`, group
//! `CN_IDX_PROC`): the kernel tells the watcher the moment a process calls `execve`, so it need
//! not wait for the next `/proc` scan. Needs `CAP_NET_ADMIN`; without it the watcher falls back
//! to scanning `/proc` alone.

use crate::bytes::u32_at;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

const NETLINK_CONNECTOR: i32 = 11;
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_EVENT_EXEC: u32 = 2;
const NLMSG_HEADER: usize = 16;
const CN_MSG_HEADER: usize = 20;

/// A subscribed process-connector socket.
pub struct ProcConnector {
    socket: OwnedFd,
}

fn netlink_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket takes integers only; a non-negative result is a new descriptor we own.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_CONNECTOR,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn bind_to_proc_group(socket: &OwnedFd) -> io::Result<()> {
    // SAFETY: sockaddr_nl is plain integers; all-zero is a valid value.
    let mut address: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    address.nl_family = libc::AF_NETLINK as u16;
    address.nl_pid = 0;
    address.nl_groups = CN_IDX_PROC;
    // SAFETY: the pointer and length describe `address`, alive for the call.
    let result = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            &address as *const libc::sockaddr_nl as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn send(socket: &OwnedFd, bytes: &[u8]) -> io::Result<()> {
    // SAFETY: the pointer and length describe `bytes`, alive for the call.
    let sent = unsafe { libc::send(socket.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits up to `timeout` for the socket to become readable.
fn readable(socket: &OwnedFd, timeout: Duration) -> io::Result<bool> {
    let mut poll = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: `poll` is one live pollfd, and the count says one.
    let result = unsafe { libc::poll(&mut poll, 1, millis) };
    if result < 0 {
        let error = io::Error::last_os_error();
        if error.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(error);
    }
    Ok(result > 0)
}

/// Receives one datagram without blocking; `None` when none is queued.
fn receive(socket: &OwnedFd, buffer: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: the pointer and length describe `buffer`, alive and writable for the call.
    let received = unsafe {
        libc::recv(
            socket.as_raw_fd(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if received < 0 {
        let error = io::Error::last_os_error();
        if error.kind() == io::ErrorKind::WouldBlock {
            return Ok(None);
        }
        return Err(error);
    }
    Ok(Some(received as usize))
}

impl ProcConnector {
    /// Opens the socket and subscribes to process events.
    pub fn open() -> io::Result<ProcConnector> {
        let socket = netlink_socket()?;
        bind_to_proc_group(&socket)?;
        let mut message = Vec::with_capacity(NLMSG_HEADER + CN_MSG_HEADER + 4);
        let total = (NLMSG_HEADER + CN_MSG_HEADER + 4) as u32;
        message.extend_from_slice(&total.to_le_bytes());
        message.extend_from_slice(&(libc::NLMSG_DONE as u16).to_le_bytes());
        message.extend_from_slice(&0u16.to_le_bytes());
        message.extend_from_slice(&0u32.to_le_bytes());
        message.extend_from_slice(&std::process::id().to_le_bytes());
        message.extend_from_slice(&CN_IDX_PROC.to_le_bytes());
        message.extend_from_slice(&CN_VAL_PROC.to_le_bytes());
        message.extend_from_slice(&0u32.to_le_bytes());
        message.extend_from_slice(&0u32.to_le_bytes());
        message.extend_from_slice(&4u16.to_le_bytes());
        message.extend_from_slice(&0u16.to_le_bytes());
        message.extend_from_slice(&PROC_CN_MCAST_LISTEN.to_le_bytes());
        send(&socket, &message)?;
        Ok(ProcConnector { socket })
    }

    /// The process ids that called `execve`, waiting at most `timeout` for the first event.
    pub fn exec_events(&self, timeout: Duration) -> io::Result<Vec<i32>> {
        let mut pids = Vec::new();
        if !readable(&self.socket, timeout)? {
            return Ok(pids);
        }
        let mut buffer = vec![0u8; 8192];
        while let Some(len) = receive(&self.socket, &mut buffer)? {
            pids.extend(parse_exec(&buffer[..len.min(buffer.len())]));
        }
        Ok(pids)
    }
}

/// The thread-group ids of exec events in one datagram (one or more netlink messages).
fn parse_exec(datagram: &[u8]) -> Vec<i32> {
    let mut pids = Vec::new();
    let mut at = 0usize;
    while let Some(len) = u32_at(datagram, at) {
        let len = len as usize;
        let Some(message) = at.checked_add(len).and_then(|end| datagram.get(at..end)) else {
            break;
        };
        if len < NLMSG_HEADER {
            break;
        }
        let event = NLMSG_HEADER + CN_MSG_HEADER;
        if u32_at(message, event) == Some(PROC_EVENT_EXEC)
            && let Some(tgid) = u32_at(message, event + 20)
        {
            pids.push(tgid as i32);
        }
        // Netlink messages are 4-byte aligned.
        at = match at.checked_add((len + 3) & !3) {
            Some(next) => next,
            None => break,
        };
    }
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exec_events_and_ignores_others_and_truncation() {
        let mut message = vec![0u8; NLMSG_HEADER + CN_MSG_HEADER + 40];
        let len = message.len() as u32;
        message[..4].copy_from_slice(&len.to_le_bytes());
        let event = NLMSG_HEADER + CN_MSG_HEADER;
        message[event..event + 4].copy_from_slice(&PROC_EVENT_EXEC.to_le_bytes());
        message[event + 20..event + 24].copy_from_slice(&4242u32.to_le_bytes());
        let mut fork = message.clone();
        fork[event..event + 4].copy_from_slice(&1u32.to_le_bytes());
        let mut both = message.clone();
        both.extend_from_slice(&fork);
        assert_eq!(parse_exec(&both), vec![4242]);
        assert_eq!(parse_exec(&message[..20]), Vec::<i32>::new());
        assert_eq!(parse_exec(&[]), Vec::<i32>::new());
    }
}
