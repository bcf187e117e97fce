//! Network interfaces and their IPv4 addresses (`getifaddrs`), to accept `"ofi+tcp://lo:PORT"`.

// Under loom (and without libfabric) the endpoint code is compiled out; its helpers stay unused.
#![cfg_attr(any(loom, na_no_libfabric), allow(dead_code, unused_imports))]

use std::ffi::CStr;
use std::net::Ipv4Addr;

/// Every (interface name, IPv4 address) pair of this host, in `getifaddrs` order.
pub fn ipv4_interfaces() -> Vec<(String, Ipv4Addr)> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `head` is an out pointer; on success the list is freed below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, valid until freeifaddrs.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() && !ifa.ifa_name.is_null() {
            // SAFETY: non-null ifa_addr points at a sockaddr at least as long as its family says.
            let family = unsafe { (*ifa.ifa_addr).sa_family };
            if i32::from(family) == libc::AF_INET {
                // SAFETY: AF_INET means the sockaddr is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                // SAFETY: ifa_name is a NUL-terminated string owned by the list.
                let name = unsafe { CStr::from_ptr(ifa.ifa_name) };
                out.push((
                    name.to_string_lossy().into_owned(),
                    Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                ));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

#[cfg(all(test, not(loom)))]
mod tests {
    #[test]
    fn loopback_has_127_0_0_1() {
        let all = super::ipv4_interfaces();
        assert!(
            all.iter()
                .any(|(n, a)| n == "lo" && *a == std::net::Ipv4Addr::LOCALHOST),
            "{all:?}"
        );
    }
}
