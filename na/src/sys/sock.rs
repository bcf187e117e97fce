//! The process's TCP sockets read and tuned by raw descriptor: how the ofi plugin fixes the
//! receive buffers of the connections libfabric's tcp provider opens (it has no knob for them).

// Under loom (and without libfabric) the endpoint code is compiled out; its helpers stay unused.
#![cfg_attr(any(loom, na_no_libfabric), allow(dead_code, unused_imports))]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;

/// One IPv4 TCP socket of this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSocket {
    /// Its descriptor (valid when it was listed; it may have closed since).
    pub fd: RawFd,
    /// The local address (`getsockname`).
    pub local: SocketAddrV4,
    /// The peer (`getpeername`); `None` for a listener or a socket not connected (yet).
    pub peer: Option<SocketAddrV4>,
    /// `SO_RCVBUF` as the kernel reports it: twice what was asked when fixed by `setsockopt`,
    /// else the current autotuned size.
    pub rcvbuf: usize,
}

/// Every IPv4 TCP socket this process has open, from `/proc/self/fd`. Empty where that
/// directory cannot be read. Costs a `getsockopt` per open descriptor, five calls more per IPv4
/// TCP socket.
pub fn tcp_sockets() -> Vec<TcpSocket> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<RawFd>().ok())
        else {
            continue;
        };
        // One `getsockopt` tells a non-socket (ENOTSOCK): cheaper than reading the fd's link.
        if let Some(s) = inspect(fd) {
            out.push(s);
        }
    }
    out
}

/// `fd` as an IPv4 TCP socket, or `None` when it is anything else (or has closed).
fn inspect(fd: RawFd) -> Option<TcpSocket> {
    if int_opt(fd, libc::SOL_SOCKET, libc::SO_TYPE)? != libc::SOCK_STREAM
        || int_opt(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)? != libc::AF_INET
    {
        return None;
    }
    let local = name(fd, libc::getsockname)?;
    let peer = name(fd, libc::getpeername);
    let rcvbuf = usize::try_from(int_opt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF)?).ok()?;
    Some(TcpSocket {
        fd,
        local,
        peer,
        rcvbuf,
    })
}

/// Fixes `SO_RCVBUF` of `fd` at `bytes` (which turns the kernel's receive-buffer autotuning off
/// for it). Returns the errno on failure.
pub fn set_rcvbuf(fd: RawFd, bytes: usize) -> Result<(), i32> {
    let v = libc::c_int::try_from(bytes).map_err(|_| libc::EINVAL)?;
    // SAFETY: `v` is a valid c_int of the length given. `setsockopt` touches no memory of ours
    // through `fd`: on a descriptor closed since it was listed it fails (EBADF, ENOTSOCK), and
    // on one reused meanwhile it only sets that socket's buffer size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    }
}

/// The largest `SO_RCVBUF` an unprivileged process may set (`net.core.rmem_max`), if readable.
pub fn rmem_max() -> Option<usize> {
    std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn int_opt(fd: RawFd, level: libc::c_int, opt: libc::c_int) -> Option<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid out parameters of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            level,
            opt,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(v)
}

type NameFn =
    unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

fn name(fd: RawFd, f: NameFn) -> Option<SocketAddrV4> {
    // SAFETY: sockaddr_in is plain data; every byte pattern is valid.
    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `sin` is writable for `len` bytes; `f` is getsockname or getpeername.
    let rc = unsafe { f(fd, (&mut sin as *mut libc::sockaddr_in).cast(), &mut len) };
    if rc != 0 || i32::from(sin.sin_family) != libc::AF_INET {
        return None;
    }
    Some(SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
        u16::from_be(sin.sin_port),
    ))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    #[test]
    fn lists_a_connection_both_ways_and_fixes_one_receive_buffer() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let at = match l.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            a => panic!("not v4: {a}"),
        };
        let c = TcpStream::connect(at).unwrap();
        let (s, _) = l.accept().unwrap();
        let all = tcp_sockets();
        let find = |fd: RawFd| all.iter().find(|t| t.fd == fd).copied().unwrap();
        let (lt, ct, st) = (
            find(l.as_raw_fd()),
            find(c.as_raw_fd()),
            find(s.as_raw_fd()),
        );
        assert_eq!((lt.local, lt.peer), (at, None));
        assert_eq!(ct.peer, Some(at));
        assert_eq!((st.local, st.peer), (at, Some(ct.local)));
        // The kernel doubles what is set, within net.core.rmem_max.
        let want = 256 * 1024;
        set_rcvbuf(c.as_raw_fd(), want).unwrap();
        let granted = 2 * want.min(rmem_max().unwrap());
        assert_eq!(inspect(c.as_raw_fd()).unwrap().rcvbuf, granted);
        assert_eq!(set_rcvbuf(-1, want), Err(libc::EBADF));
        // Not a socket, or not TCP: not listed.
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(inspect(u.as_raw_fd()).is_none());
    }
}
