//! Non-blocking TCP connect probes: whether a peer's listener answers before libfabric is asked
//! to send to it (rxm on 1.17 retries a refused connection forever without failing the send).

// Under loom (and without libfabric) the endpoint code is compiled out; its helpers stay unused.
#![cfg_attr(any(loom, na_no_libfabric), allow(dead_code, unused_imports))]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// What a probe has learned so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeState {
    /// The connection is still being set up.
    Pending,
    /// The peer's listener accepted: it is up.
    Up,
    /// The connection failed with this errno (`ECONNREFUSED`, `EHOSTUNREACH`, ...).
    Down(i32),
}

/// One in-flight connect to a peer's `sockaddr_in`; the socket closes on drop.
#[derive(Debug)]
pub struct Probe {
    fd: OwnedFd,
}

impl Probe {
    /// Starts a non-blocking connect to the 16-byte `sockaddr_in` `addr` (already validated).
    pub fn start(addr: &[u8; 16]) -> Result<Probe, i32> {
        // SAFETY: plain syscall; the descriptor is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if fd < 0 {
            return Err(errno());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_in is plain data; every byte pattern is valid.
        let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_port = u16::from_ne_bytes([addr[2], addr[3]]);
        sin.sin_addr.s_addr = u32::from_ne_bytes([addr[4], addr[5], addr[6], addr[7]]);
        // SAFETY: `sin` is a valid sockaddr_in of the length given.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&sin as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            let e = errno();
            if e != libc::EINPROGRESS {
                return Err(e);
            }
        }
        Ok(Probe { fd })
    }

    /// Checks without blocking.
    pub fn check(&self) -> ProbeState {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let rc = unsafe { libc::poll(&mut p, 1, 0) };
        if rc <= 0 {
            return ProbeState::Pending;
        }
        let mut err: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `err` and `len` are valid out parameters of the sizes given.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut err as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return ProbeState::Down(errno());
        }
        if err == 0 {
            ProbeState::Up
        } else {
            ProbeState::Down(err)
        }
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn addr(port: u16) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        b[2..4].copy_from_slice(&port.to_be_bytes());
        b[4..8].copy_from_slice(&[127, 0, 0, 1]);
        b
    }

    fn settle(p: &Probe) -> ProbeState {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let s = p.check();
            if s != ProbeState::Pending || Instant::now() > end {
                return s;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn up_and_refused() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(settle(&Probe::start(&addr(port)).unwrap()), ProbeState::Up);
        drop(l);
        let refused = match Probe::start(&addr(port)) {
            Ok(p) => settle(&p),
            Err(e) => ProbeState::Down(e),
        };
        assert_eq!(refused, ProbeState::Down(libc::ECONNREFUSED));
    }
}
