//! Plugin `ofi` (`na_ofi_class_ops`): libfabric RDM endpoints over `tcp;ofi_rxm` or XNET (`net`),
//! on the wire as Mercury's ofi plugin (see `docs/na.md` and WIRE.md).
//!
//! | Mercury (`na_ofi.c`) | here |
//! |---|---|
//! | `na_ofi_initialize` | `initialize` (crate-private) |
//! | `na_ofi_check_protocol` | `check_protocol` (crate-private) |
//! | `na_ofi_context_create` | `OfiPlugin::context_create` (one endpoint each) |
//! | `na_ofi_msg_send_unexpected` | `fi_senddata`, tag as CQ data, `sockaddr_in` prefix |
//! | `na_ofi_msg_send_expected` / `recv_expected` | `fi_tsend` / `fi_trecv` (directed) |
//! | `na_ofi_put` / `na_ofi_get` | `fi_write` / `fi_read` per contiguous piece |
//! | `na_ofi_poll` / `na_ofi_poll_wait` | `OfiContext::progress` (CQ read in batches of 16) |

// Under loom (and without libfabric) the endpoint code is compiled out; its helpers stay unused.
#![cfg_attr(any(loom, na_no_libfabric), allow(dead_code, unused_imports))]

use crate::addr::Addr;
use crate::cq::CompletionQueue;
use crate::error::{Error, Result};
use crate::mem::{Access, MemRegion, PluginMem, RemoteMem, Segment};
use crate::msg::Tag;
use crate::plugin::{InfoString, InitOptions, Plugin, ProgressMode, ThreadMode};
use crate::sync::Arc;
use std::net::Ipv4Addr;

/// Diagnostics: this process's IPv4 TCP sockets with their receive buffers (what
/// `InitOptions::sock_rcvbuf` fixes on the plugin's connections).
pub use crate::sys::sock::{tcp_sockets, TcpSocket};

/// Name of the plugin in info strings and addresses. A `static`, not a `const`: every address
/// this plugin makes points at this one string, so comparing plugin names is a pointer compare.
pub static NAME: &str = "ofi";
/// Bytes of the source-address prefix of an unexpected message (a `struct sockaddr_in`).
pub const UNEXPECTED_HEADER_SIZE: usize = 16;

/// Most cancelled expected receives (keys `(peer, tag)`) a context keeps sweeping for late
/// messages; past it the oldest key is let go, and a message for it, if it ever comes, stays
/// with libfabric until a receive takes it or the endpoint closes (docs/na.md, "Late replies").
pub const LATE_KEYS: usize = 1024;

/// [`LATE_KEYS`] over XNET (`ofi+net`), where a late message no sweep drops would hold its
/// peer's connection: keys are swept per peer there (one peek at the message heading each
/// connection), so far more can be kept, and none expires (docs/na.md, "Providers").
pub const LATE_KEYS_XNET: usize = 65_536;

/// Whether a bare protocol name selects this plugin (`"tcp"`, `"net"`, `"verbs;ofi_rxm"`).
#[doc(alias = "na_ofi_check_protocol")]
pub(crate) fn check_protocol(proto: &str) -> bool {
    provider_for(proto).is_some()
}

/// The transports this plugin opens, by NA protocol name (docs/na.md, "Providers").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Provider {
    /// `tcp;ofi_rxm`: libfabric's rxm utility provider over the tcp message provider, what
    /// Mercury 2.4 opens for `"tcp"` on libfabric < 1.18 (this machine's 1.17). The default.
    TcpRxm,
    /// `verbs;ofi_rxm`.
    VerbsRxm,
    /// XNET, libfabric's native reliable-datagram TCP provider (`FI_PROTO_XNET`): named `net`
    /// in libfabric 1.17, `tcp` from 1.18, where Mercury opens it for `"tcp"`.
    Xnet,
}

/// The transport for an NA protocol name: `"tcp"` stays on rxm as Mercury's does on
/// libfabric 1.17 (and its peers speak rxm); `"net"` asks for XNET.
fn provider_for(proto: &str) -> Option<Provider> {
    match proto {
        "tcp" | "tcp;ofi_rxm" => Some(Provider::TcpRxm),
        "verbs" | "verbs;ofi_rxm" => Some(Provider::VerbsRxm),
        "net" => Some(Provider::Xnet),
        _ => None,
    }
}

/// The libfabric provider name of `p` for a library of version `lib` (`major << 16 | minor`):
/// XNET took over the name `tcp` in libfabric 1.18.
fn fi_provider_name(p: Provider, lib: u32) -> &'static str {
    match p {
        Provider::TcpRxm => "tcp;ofi_rxm",
        Provider::VerbsRxm => "verbs;ofi_rxm",
        Provider::Xnet if lib >= (1 << 16 | 18) => "tcp",
        Provider::Xnet => "net",
    }
}

/// Encodes an IPv4 endpoint as the 16-byte `struct sockaddr_in` Mercury sends (x86-64 layout:
/// family `02 00` in host order, port and address big-endian, 8 zero bytes).
pub fn sockaddr_bytes(ip: Ipv4Addr, port: u16) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    b[2..4].copy_from_slice(&port.to_be_bytes());
    b[4..8].copy_from_slice(&ip.octets());
    b
}

/// Why a 16-byte source-address prefix was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadSockaddr {
    /// Fewer than 16 bytes.
    Truncated,
    /// Family is not `AF_INET`.
    Family,
    /// Port 0.
    Port,
    /// Address 0.0.0.0.
    Address,
    /// Non-zero padding.
    Padding,
}

/// Checks and decodes a `sockaddr_in` prefix: what must hold before it reaches `fi_av_insert`.
pub fn parse_sockaddr(b: &[u8]) -> std::result::Result<(Ipv4Addr, u16), BadSockaddr> {
    if b.len() < UNEXPECTED_HEADER_SIZE {
        return Err(BadSockaddr::Truncated);
    }
    if u16::from_ne_bytes([b[0], b[1]]) != libc::AF_INET as u16 {
        return Err(BadSockaddr::Family);
    }
    let port = u16::from_be_bytes([b[2], b[3]]);
    if port == 0 {
        return Err(BadSockaddr::Port);
    }
    let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
    if ip.is_unspecified() {
        return Err(BadSockaddr::Address);
    }
    if b[8..16].iter().any(|&x| x != 0) {
        return Err(BadSockaddr::Padding);
    }
    Ok((ip, port))
}

/// Parses `"[ofi+<proto>://]<ipv4>:<port>"` (what `addr_to_string` prints) into raw bytes.
fn parse_addr_string(name: &str) -> Result<[u8; 16]> {
    let bad = |why: &str| {
        tracing::warn!(name, why, "na.ofi: malformed address string");
        Error::InvalidArg
    };
    let hostport = match name.split_once("://") {
        Some((class, rest)) => {
            let proto = class.strip_prefix("ofi+").unwrap_or(class);
            if provider_for(proto).is_none() {
                return Err(bad("unknown protocol"));
            }
            rest
        }
        None => name,
    };
    let (host, port) = hostport
        .rsplit_once(':')
        .ok_or_else(|| bad("missing port"))?;
    let port: u16 = port.parse().map_err(|_| bad("bad port"))?;
    if port == 0 {
        return Err(bad("port 0"));
    }
    let ip: Ipv4Addr = if host == "localhost" {
        Ipv4Addr::LOCALHOST
    } else {
        host.parse()
            .map_err(|_| bad("host is not an IPv4 address"))?
    };
    if ip.is_unspecified() {
        return Err(bad("unspecified address"));
    }
    Ok(sockaddr_bytes(ip, port))
}

/// Resolves the host part of an info string: an IPv4 literal, an interface name, or a host name.
fn resolve_host(host: &str) -> Result<Ipv4Addr> {
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(ip);
    }
    if let Some((_, ip)) = crate::sys::ifaddr::ipv4_interfaces()
        .into_iter()
        .find(|(n, _)| n == host)
    {
        return Ok(ip);
    }
    use std::net::ToSocketAddrs;
    if let Ok(addrs) = (host, 0u16).to_socket_addrs() {
        for a in addrs {
            if let std::net::SocketAddr::V4(v4) = a {
                return Ok(*v4.ip());
            }
        }
    }
    tracing::warn!(
        host,
        "na.ofi: host is neither an IPv4 address, an interface nor a name"
    );
    Err(Error::AddrNotAvail)
}

/// Maps a libfabric error number (positive `FI_E*`) to `na::Error`.
#[doc(alias = "na_ofi_errno_to_na")]
pub fn map_fi_errno(err: i32) -> Error {
    match err {
        libc::ECANCELED => Error::Canceled,
        libc::ECONNREFUSED
        | libc::ECONNRESET
        | libc::ECONNABORTED
        | libc::EHOSTUNREACH
        | libc::ENETUNREACH
        | libc::ENOTCONN
        | libc::EPIPE
        | libc::ESHUTDOWN => Error::HostUnreach,
        libc::EACCES | 266 /* FI_ENOKEY */ | 267 => Error::Access,
        265 /* FI_ETRUNC */ | 257 /* FI_ETOOSMALL */ => Error::Overflow,
        libc::EMSGSIZE => Error::MsgSize,
        libc::ETIMEDOUT => Error::Timeout,
        libc::EAGAIN => Error::Again,
        libc::ENOMEM => Error::NoMem,
        libc::EINVAL => Error::InvalidArg,
        libc::EPERM => Error::Permission,
        libc::ENOENT => Error::NoEntry,
        libc::ENODATA | libc::ENODEV => Error::NoDev,
        libc::EADDRINUSE => Error::AddrInUse,
        libc::EADDRNOTAVAIL => Error::AddrNotAvail,
        libc::EOPNOTSUPP | libc::ENOSYS => Error::OpNotSupported,
        libc::EBUSY => Error::Busy,
        libc::EFAULT => Error::Fault,
        _ => Error::IoError,
    }
}

/// Bytes of the serialized descriptor info (`struct na_ofi_mem_desc_info`): MR key `u64` @0,
/// total length `u64` @8, segment count `u64` @16, access flags `u8` @24, 7 padding bytes @25.
pub const MEM_INFO_SIZE: usize = 32;
/// Bytes of one serialized segment (`struct iovec` on a 64-bit host): base `u64` @0, length @8.
pub const MEM_IOV_SIZE: usize = 16;
/// Most segments a handle may carry (beyond it a handle is refused as garbage).
const MAX_SEGMENTS: u64 = 4096;

/// Decodes a serialized ofi memory handle in Mercury's `na_ofi` layout (native byte order, as
/// Mercury `memcpy`s its structs): the 32-byte info, then one `(base, len)` per segment. The
/// bases are virtual addresses; with `virt_addr` (the provider's `FI_MR_VIRT_ADDR`) RMA addresses
/// them as such, otherwise each segment is addressed from 0 (Mercury's `iov_base - iov[0].iov_base`
/// for the one segment it registers per handle on tcp). Segment `i`'s key is the info key plus the
/// number of non-empty segments before it (one MR per segment, consecutive keys; a single-segment
/// handle — all Mercury sends over tcp, whose `mr_iov_limit` is 1 — has exactly Mercury's key).
/// Anything malformed is `Fault` with a `warn` event.
#[doc(alias = "na_ofi_mem_handle_deserialize")]
pub fn decode_mem(bytes: &[u8], virt_addr: bool) -> Result<RemoteMem> {
    let bad = |why: &str| {
        tracing::warn!(len = bytes.len(), why, "na.ofi: garbage memory handle");
        Error::Fault
    };
    if bytes.len() < MEM_INFO_SIZE {
        return Err(bad("shorter than its descriptor info"));
    }
    let rd = |i: usize| u64::from_ne_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
    let (key, total, count, flags) = (rd(0), rd(8), rd(16), bytes[24]);
    let access = Access::from_bits(flags)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| bad("bad access flags"))?;
    if count == 0 || count > MAX_SEGMENTS {
        return Err(bad("bad segment count"));
    }
    // count <= MAX_SEGMENTS: no overflow.
    if bytes.len() as u64 != MEM_INFO_SIZE as u64 + count * MEM_IOV_SIZE as u64 {
        return Err(bad("length does not match the segment count"));
    }
    let mut segments = smallvec::SmallVec::new();
    let mut sum: u64 = 0;
    let mut nonempty: u64 = 0;
    for c in bytes[MEM_INFO_SIZE..].chunks_exact(MEM_IOV_SIZE) {
        let base = u64::from_ne_bytes(c[0..8].try_into().expect("8 bytes"));
        let len = u64::from_ne_bytes(c[8..16].try_into().expect("8 bytes"));
        if base.checked_add(len).is_none() {
            return Err(bad("segment wraps around"));
        }
        sum = sum
            .checked_add(len)
            .ok_or_else(|| bad("total length overflows"))?;
        let seg_key = key
            .checked_add(nonempty)
            .ok_or_else(|| bad("key overflows"))?;
        if len > 0 {
            nonempty += 1;
        }
        segments.push(crate::mem::RemoteSegment {
            base: if virt_addr { base } else { 0 },
            len,
            key: seg_key,
        });
    }
    if sum != total {
        return Err(bad("total length is not the sum of the segments"));
    }
    Ok(RemoteMem {
        plugin: NAME,
        access,
        segments,
    })
}

/// Encodes a handle in Mercury's `na_ofi` layout (see [`decode_mem`]): `key` is the first
/// segment's MR key, `iov` the `(virtual address, length)` of every segment.
#[doc(alias = "na_ofi_mem_handle_serialize")]
pub fn encode_mem(access: Access, key: u64, iov: &[(u64, u64)], out: &mut Vec<u8>) {
    out.reserve(MEM_INFO_SIZE + iov.len() * MEM_IOV_SIZE);
    // Real registrations cannot overflow; wrapping keeps hand-made (test) input panic-free.
    let total = iov.iter().fold(0u64, |t, s| t.wrapping_add(s.1));
    out.extend_from_slice(&key.to_ne_bytes());
    out.extend_from_slice(&total.to_ne_bytes());
    out.extend_from_slice(&(iov.len() as u64).to_ne_bytes());
    out.push(access.bits());
    out.extend_from_slice(&[0u8; 7]);
    for (b, l) in iov {
        out.extend_from_slice(&b.to_ne_bytes());
        out.extend_from_slice(&l.to_ne_bytes());
    }
}

/// Opens the plugin (`na_ofi_initialize`): picks the provider, resolves the host, opens fabric
/// and domain. Endpoints open per context.
#[doc(alias = "na_ofi_initialize")]
pub(crate) fn initialize(
    info: &InfoString,
    listen: bool,
    opts: &InitOptions,
) -> Result<Arc<dyn Plugin>> {
    let proto = info.protocol.as_deref().unwrap_or("tcp");
    let Some(prov) = provider_for(proto) else {
        tracing::warn!(proto, "na.ofi: unsupported protocol");
        return Err(Error::ProtoNoSupport);
    };
    imp::initialize(prov, info, listen, opts)
}

#[cfg(any(loom, na_no_libfabric))]
mod imp {
    use super::*;
    pub(super) fn initialize(
        prov: Provider,
        _info: &InfoString,
        _listen: bool,
        _opts: &InitOptions,
    ) -> Result<Arc<dyn Plugin>> {
        tracing::error!(
            ?prov,
            "na.ofi: built without libfabric (run scripts/setup.sh) or under loom"
        );
        Err(Error::ProtoNoSupport)
    }
}

#[cfg(not(any(loom, na_no_libfabric)))]
mod imp {
    use super::*;
    use crate::msg::MsgBuf;
    use crate::op::{Completion, Op, OpId, OpKind, Request, Rma};
    use crate::plugin::PluginContext;
    use crate::sync::AtomicUsize;
    use crate::sync::{lock, AtomicBool, AtomicU64, Mutex, Ordering};
    use crate::sys::ofi::{self as sys, flags, Done, Post, RmaPiece};
    use crate::sys::probe::{Probe, ProbeState};
    use crate::sys::sock;
    use smallvec::SmallVec;
    use std::any::Any;
    use std::collections::HashMap;
    use std::os::fd::RawFd;
    use std::sync::Weak;
    use std::time::{Duration, Instant};

    /// What all contexts of one class share.
    struct Shared {
        fabric: std::sync::Arc<sys::Fabric>,
        protocol: String,
        listen: bool,
        port: u16,
        max_unexpected: usize,
        max_expected: usize,
        /// The largest message `inject` sends (what the provider granted, within the options').
        max_inject: usize,
        max_contexts: u8,
        /// Ask for a CQ wait fd (`ProgressMode::Block`); busy mode polls without one.
        wait_fd: bool,
        virt_addr: bool,
        prov_key: bool,
        /// XNET: a message no receive takes holds its connection, so each context's late-message
        /// table sweeps by head peeks (`Late::by_head`). Read when a context is made; from then
        /// on the table's own flag decides.
        by_head: bool,
        /// The `SO_RCVBUF` fixed on this class's TCP connections (`InitOptions::sock_rcvbuf`,
        /// when the provider runs on kernel TCP and the kernel grants it).
        rcvbuf: Option<usize>,
        next_key: AtomicU64,
        contexts: Mutex<Vec<Weak<OfiContext>>>,
    }

    pub(super) fn initialize(
        provider: Provider,
        info: &InfoString,
        listen: bool,
        opts: &InitOptions,
    ) -> Result<Arc<dyn Plugin>> {
        let prov = fi_provider_name(provider, sys::versions().1);
        let node = match info.host.as_deref() {
            Some(h) => Some(resolve_host(h)?.to_string()),
            // A port alone means the loopback-or-first interface as libfabric orders them.
            None => None,
        };
        let port = info.port.unwrap_or(0);
        let service = (node.is_some() && port != 0).then(|| port.to_string());
        // Mercury asks VIRT_ADDR | ALLOCATED | PROV_KEY | LOCAL | ENDPOINT; we leave out LOCAL
        // and ENDPOINT (message buffers are not registered): tcp answers 0 either way.
        let mr_hints = flags::MR_VIRT_ADDR | flags::MR_ALLOCATED | flags::MR_PROV_KEY;
        let serialized = opts.thread_mode == ThreadMode::Serialized;
        let fabric = sys::Fabric::open(
            prov,
            node.as_deref(),
            service.as_deref(),
            mr_hints,
            serialized,
            opts.max_inject_size,
        )
            .map_err(|e| {
                let err = if e == sys::errno::ENODATA {
                    Error::NoDev
                } else {
                    map_fi_errno(e)
                };
                if prov.starts_with("verbs") {
                    tracing::error!(
                        prov,
                        fi_error = %sys::strerror(e),
                        "na.ofi: no RDMA device for verbs (fi_getinfo found no verbs domain)"
                    );
                } else {
                    tracing::error!(prov, node, fi_error = %sys::strerror(e), "na.ofi: fi_getinfo/fi_domain failed");
                }
                err
            })?;
        let protocol = fabric.prov_name();
        if fabric.cq_data_size() < 4 {
            tracing::error!(
                protocol,
                "na.ofi: provider carries under 4 bytes of CQ data"
            );
            return Err(Error::ProtoNoSupport);
        }
        let mr_mode = fabric.mr_mode();
        if mr_mode & (flags::MR_LOCAL | flags::MR_ENDPOINT) != 0 {
            tracing::error!(mr_mode, "na.ofi: provider needs FI_MR_LOCAL/FI_MR_ENDPOINT");
            return Err(Error::ProtoNoSupport);
        }
        let max_msg = fabric.max_msg_size().max(UNEXPECTED_HEADER_SIZE);
        let max_unexpected = opts
            .max_unexpected_size
            .clamp(UNEXPECTED_HEADER_SIZE, max_msg);
        let max_expected = opts.max_expected_size.min(max_msg);
        let max_inject = opts
            .max_inject_size
            .min(fabric.inject_size())
            .min(max_unexpected.max(max_expected));
        let rcvbuf = granted_rcvbuf(provider, opts.sock_rcvbuf);
        let (api, lib) = sys::versions();
        tracing::debug!(
            protocol,
            domain = fabric.domain_name(),
            mr_mode,
            api = format_args!("{}.{}", api >> 16, api & 0xffff),
            lib = format_args!("{}.{}", lib >> 16, lib & 0xffff),
            "na.ofi: fabric opened"
        );
        Ok(Arc::new(OfiPlugin {
            shared: std::sync::Arc::new(Shared {
                fabric: std::sync::Arc::new(fabric),
                protocol,
                listen,
                port,
                max_unexpected,
                max_expected,
                max_inject,
                max_contexts: opts.max_contexts,
                wait_fd: opts.progress_mode == ProgressMode::Block,
                virt_addr: mr_mode & flags::MR_VIRT_ADDR != 0,
                prov_key: mr_mode & flags::MR_PROV_KEY != 0,
                by_head: provider == Provider::Xnet,
                rcvbuf,
                next_key: AtomicU64::new(1),
                contexts: Mutex::new(Vec::new()),
            }),
        }))
    }

    /// The receive buffer to fix on `provider`'s connections: `want` when they are kernel TCP
    /// sockets and `net.core.rmem_max` allows it, else `None` (autotuning stays on).
    fn granted_rcvbuf(provider: Provider, want: Option<usize>) -> Option<usize> {
        let want = want.filter(|&n| n > 0 && provider != Provider::VerbsRxm)?;
        match sock::rmem_max() {
            Some(max) if max >= want => Some(want),
            max => {
                tracing::info!(
                    want,
                    rmem_max = max,
                    "na.ofi: net.core.rmem_max is unreadable or below the socket receive buffer \
                     asked for; leaving the kernel's autotuning on"
                );
                None
            }
        }
    }

    /// The class half (`na_ofi_class`).
    struct OfiPlugin {
        shared: std::sync::Arc<Shared>,
    }

    fn check_addr(addr: &Addr) -> Result<[u8; 16]> {
        if addr.plugin() != NAME {
            tracing::warn!(?addr, "na.ofi: address of another plugin");
            return Err(Error::InvalidArg);
        }
        let raw: [u8; 16] = addr.as_bytes().try_into().map_err(|_| Error::InvalidArg)?;
        parse_sockaddr(&raw).map_err(|why| {
            tracing::warn!(?why, "na.ofi: bad address bytes");
            Error::InvalidArg
        })?;
        Ok(raw)
    }

    impl Plugin for OfiPlugin {
        fn name(&self) -> &'static str {
            NAME
        }

        fn protocol(&self) -> &str {
            &self.shared.protocol
        }

        fn is_listening(&self) -> bool {
            self.shared.listen
        }

        fn context_create(
            &self,
            id: u8,
            cq: Arc<CompletionQueue>,
        ) -> Result<Arc<dyn PluginContext>> {
            let sh = &self.shared;
            {
                let mut ctxs = lock(&sh.contexts);
                ctxs.retain(|w| w.strong_count() > 0);
                if ctxs.len() >= usize::from(sh.max_contexts) {
                    tracing::warn!(id, "na.ofi: too many contexts");
                    return Err(Error::Busy);
                }
            }
            let port = if id == 0 { sh.port } else { 0 };
            let ep = sys::Endpoint::open(sh.fabric.clone(), port, sh.wait_fd).map_err(|e| {
                tracing::error!(id, port, fi_error = %sys::strerror(e), "na.ofi: endpoint open failed");
                map_fi_errno(e)
            })?;
            let name = ep.name().map_err(map_fi_errno)?;
            let ctx = Arc::new(OfiContext {
                shared: sh.clone(),
                self_raw: name,
                ep,
                cq,
                av: Mutex::new(Av {
                    peers: HashMap::with_hasher(ahash::RandomState::new()),
                    last_ready: None,
                }),
                probing: AtomicUsize::new(0),
                resent: Mutex::new(HashMap::new()),
                resent_n: AtomicUsize::new(0),
                scratch: Mutex::new(Vec::with_capacity(64)),
                woken: AtomicBool::new(false),
                late: Mutex::new(if sh.by_head {
                    Late::by_head()
                } else {
                    Late::default()
                }),
                late_n: AtomicUsize::new(0),
                closing: AtomicBool::new(false),
            });
            lock(&sh.contexts).push(Arc::downgrade(&ctx));
            tracing::debug!(id, addr = %fmt_addr(&sh.protocol, &name), "na.ofi: context created");
            // The listener: the connections it accepts inherit its receive buffer.
            let me = sock_v4(&name);
            ctx.fix_rcvbufs("listener", |s| {
                s.local.port() == me.port()
                    && (s.local.ip() == me.ip() || s.local.ip().is_unspecified())
            });
            Ok(ctx)
        }

        fn addr_lookup(&self, name: &str) -> Result<Addr> {
            Ok(Addr::from_raw(NAME, &parse_addr_string(name)?))
        }

        fn addr_to_string(&self, addr: &Addr) -> Result<String> {
            let raw = check_addr(addr)?;
            Ok(fmt_addr(&self.shared.protocol, &raw))
        }

        fn addr_deserialize(&self, bytes: &[u8]) -> Result<Addr> {
            if bytes.len() != UNEXPECTED_HEADER_SIZE {
                tracing::warn!(
                    len = bytes.len(),
                    "na.ofi: serialized address of wrong size"
                );
                return Err(Error::Fault);
            }
            parse_sockaddr(bytes).map_err(|why| {
                tracing::warn!(?why, "na.ofi: garbage serialized address");
                Error::Fault
            })?;
            Ok(Addr::from_raw(NAME, bytes))
        }

        fn addr_set_remove(&self, addr: &Addr) -> Result<()> {
            let raw = check_addr(addr)?;
            let ctxs: Vec<_> = lock(&self.shared.contexts)
                .iter()
                .filter_map(Weak::upgrade)
                .collect();
            for c in ctxs {
                c.forget(&raw);
            }
            Ok(())
        }

        fn max_unexpected_size(&self) -> usize {
            self.shared.max_unexpected
        }

        fn max_expected_size(&self) -> usize {
            self.shared.max_expected
        }

        fn max_inject_size(&self) -> usize {
            self.shared.max_inject
        }

        fn unexpected_header_size(&self) -> usize {
            UNEXPECTED_HEADER_SIZE
        }

        fn max_tag(&self) -> Tag {
            u32::MAX
        }

        fn mem_register(&self, segments: &[Segment], access: Access) -> Result<Box<dyn PluginMem>> {
            self.register(segments, access, None)
        }

        fn mem_register_region(
            &self,
            region: &Arc<MemRegion>,
            access: Access,
        ) -> Result<Box<dyn PluginMem>> {
            // Keeping the region makes the MRs close before its memory can be freed.
            self.register(region.segments(), access, Some(region.clone()))
        }

        fn mem_deserialize(&self, bytes: &[u8]) -> Result<RemoteMem> {
            decode_mem(bytes, self.shared.virt_addr)
        }
    }

    impl OfiPlugin {
        fn register(
            &self,
            segments: &[Segment],
            access: Access,
            region: Option<Arc<MemRegion>>,
        ) -> Result<Box<dyn PluginMem>> {
            let sh = &self.shared;
            let mut fi_access = flags::READ | flags::WRITE;
            if access.contains(Access::READ) {
                fi_access |= flags::REMOTE_READ;
            }
            if access.contains(Access::WRITE) {
                fi_access |= flags::REMOTE_WRITE;
            }
            // One MR per non-empty segment, with consecutive keys (see `decode_mem`): the handle
            // carries the first key only, as Mercury's does.
            let nonempty = segments.iter().filter(|s| s.len > 0).count() as u64;
            if sh.prov_key && nonempty > 1 {
                tracing::warn!(
                    nonempty,
                    "na.ofi: several segments in one handle need keys we choose (FI_MR_PROV_KEY set)"
                );
                return Err(Error::OpNotSupported);
            }
            let first = sh.next_key.fetch_add(nonempty.max(1), Ordering::Relaxed);
            let mut key = first;
            let mut mrs = Vec::with_capacity(segments.len());
            let mut j = 0;
            for s in segments {
                if s.len == 0 {
                    mrs.push(None);
                    continue;
                }
                let want = first + j;
                j += 1;
                let mr = sh
                    .fabric
                    .mr_reg(s.addr, s.len, fi_access, want)
                    .map_err(|e| {
                        tracing::warn!(len = s.len, fi_error = %sys::strerror(e), "na.ofi: fi_mr_reg failed");
                        map_fi_errno(e)
                    })?;
                if sh.prov_key {
                    key = mr.key;
                }
                mrs.push(Some(mr));
            }
            let iov = segments
                .iter()
                .map(|s| (s.addr as u64, s.len as u64))
                .collect();
            Ok(Box::new(OfiMem {
                access,
                key,
                iov,
                local: segments.to_vec(),
                mrs,
                _region: region,
            }))
        }
    }

    /// A checked 16-byte `sockaddr_in` as a socket address.
    fn sock_v4(raw: &[u8; 16]) -> std::net::SocketAddrV4 {
        let port = u16::from_be_bytes([raw[2], raw[3]]);
        std::net::SocketAddrV4::new(Ipv4Addr::new(raw[4], raw[5], raw[6], raw[7]), port)
    }

    fn fmt_addr(protocol: &str, raw: &[u8; 16]) -> String {
        format!("ofi+{protocol}://{}", sock_v4(raw))
    }

    /// A registration: one MR per non-empty segment (`na_ofi_mem_handle`).
    struct OfiMem {
        access: Access,
        /// The first segment's MR key (the others follow it).
        key: u64,
        /// (virtual address, length) per segment, as serialized.
        iov: Vec<(u64, u64)>,
        local: Vec<Segment>,
        mrs: Vec<Option<sys::Mr>>,
        // Declared after `mrs`: the memory outlives its registrations.
        _region: Option<Arc<MemRegion>>,
    }

    impl PluginMem for OfiMem {
        fn serialize(&self, out: &mut Vec<u8>) {
            encode_mem(self.access, self.key, &self.iov, out);
        }
        fn as_any(&self) -> &dyn Any {
            self
        }
    }

    /// One context: one endpoint with its CQ and AV (`na_ofi_context`).
    struct OfiContext {
        shared: std::sync::Arc<Shared>,
        self_raw: [u8; 16],
        ep: sys::Endpoint,
        cq: Arc<CompletionQueue>,
        av: Mutex<Av>,
        probing: AtomicUsize,
        /// Sends resent after finding their connection closed, with how many times.
        resent: Mutex<HashMap<OpId, u8>>,
        resent_n: AtomicUsize,
        scratch: Mutex<Vec<Done>>,
        woken: AtomicBool,
        /// Keys whose late expected messages are swept out of libfabric
        /// ([`OfiContext::discard_late`]).
        late: Mutex<Late>,
        /// How many keys `late` holds (stored under its lock after each change): the receive
        /// and progress paths look at `late` only when non-zero.
        late_n: AtomicUsize,
        /// Set by `close`: a receive cancelled by the teardown is not swept for.
        closing: AtomicBool,
    }

    /// The cancelled expected receives of a context whose messages may still come, by key
    /// `(source fi_addr, tag)`, and the peeks posted to drop them.
    #[derive(Default)]
    struct Late {
        keys: HashMap<LateId, LateKey>,
        /// Sweep order, round robin; entries of keys gone are dropped when met (key sweeps).
        ring: std::collections::VecDeque<LateId>,
        /// Peeks posted and not yet completed, with their key.
        peeks: HashMap<OpId, LateId>,
        next: u64,
        /// No sweep before this.
        next_sweep: Option<Instant>,
        /// Head sweeps (XNET): instead of a peek per key, a peek per peer at the tagged message
        /// heading its connection, dropped when it is a kept key; keys do not expire.
        by_head: bool,
        /// Head sweeps: the peers with keys, by fi_addr.
        peers: HashMap<u64, HeadPeer>,
        /// Head sweeps: round-robin order over `peers`; entries of peers gone dropped when met.
        peer_ring: std::collections::VecDeque<u64>,
        /// Head peeks posted and not yet completed, with their peer.
        heads: HashMap<OpId, u64>,
        /// Keys in the order they came, with when: the oldest one kept is the first entry
        /// whose key is still there from that time (entries of keys gone are dropped when
        /// met), so the bound costs no scan of every key.
        order: std::collections::VecDeque<(LateId, Instant)>,
    }

    /// A peer with keys, under head sweeps.
    struct HeadPeer {
        /// Its address, for the peek's request.
        source: Addr,
        /// How many of its keys are kept.
        keys: usize,
        /// A head peek for it is posted.
        heading: bool,
    }

    /// A head peek to post: its id, peer (fi_addr) and address.
    type HeadDue = (OpId, u64, Addr);

    /// A key of [`Late`]: `(source fi_addr, tag)`.
    type LateId = (u64, u64);

    /// A peek to post: its id, key and peer.
    type PeekDue = (OpId, LateId, Addr);

    /// One key of [`Late`].
    struct LateKey {
        /// The peer, for the peek's request.
        source: Addr,
        /// When its receive was cancelled.
        since: Instant,
        /// A peek for it is posted.
        peeking: bool,
        /// A peek already dropped a message for it: the next that finds none ends the key.
        found: bool,
    }

    /// What a peek's completion did.
    #[derive(Debug, PartialEq, Eq)]
    enum Peeked {
        /// A late message was dropped.
        Dropped,
        /// None there (yet).
        Nothing,
        /// The peek failed (its key is let go).
        Failed,
    }

    impl Late {
        /// A table that sweeps by head peeks (XNET).
        fn by_head() -> Late {
            Late {
                by_head: true,
                ..Late::default()
            }
        }

        /// Most keys kept.
        fn bound(&self) -> usize {
            if self.by_head {
                LATE_KEYS_XNET
            } else {
                LATE_KEYS
            }
        }

        /// Enters `key` (nothing if it is in already). At the bound ([`LATE_KEYS`], or
        /// [`LATE_KEYS_XNET`] under head sweeps) the oldest key goes first; it is returned.
        fn enter(&mut self, key: LateId, source: Addr, now: Instant) -> Option<LateId> {
            if self.keys.contains_key(&key) {
                return None;
            }
            let mut evicted = None;
            if self.keys.len() >= self.bound() {
                evicted = self.oldest();
                if let Some(old) = evicted {
                    self.remove_key(old);
                }
            }
            self.order.push_back((key, now));
            if self.order.len() > 2 * self.keys.len() + 16 {
                let Late { order, keys, .. } = self;
                order.retain(|(k, t)| keys.get(k).is_some_and(|x| x.since == *t));
            }
            if self.by_head {
                let p = self.peers.entry(key.0).or_insert_with(|| HeadPeer {
                    source: source.clone(),
                    keys: 0,
                    heading: false,
                });
                if p.keys == 0 {
                    self.peer_ring.push_back(key.0);
                }
                p.keys += 1;
            }
            let k = LateKey {
                source,
                since: now,
                peeking: false,
                found: false,
            };
            self.keys.insert(key, k);
            if self.by_head {
                return evicted;
            }
            self.ring.push_back(key);
            if self.ring.len() > 2 * self.keys.len() + 16 {
                let Late { ring, keys, .. } = self;
                ring.retain(|k| keys.contains_key(k));
            }
            evicted
        }

        /// The peeks to post now (none before `next_sweep`): up to [`SWEEP_BATCH`] keys round
        /// robin, skipping those with a peek posted. Keys older than [`LATE_TTL`] are let go;
        /// how many is the second value.
        fn due(&mut self, now: Instant) -> (Vec<PeekDue>, usize) {
            let mut out = Vec::new();
            let mut expired = 0;
            if !self.sweep_due(now) {
                return (out, expired);
            }
            let mut left = self.ring.len();
            while out.len() < SWEEP_BATCH && left > 0 {
                left -= 1;
                let Some(key) = self.ring.pop_front() else {
                    break;
                };
                let Some(k) = self.keys.get_mut(&key) else {
                    continue;
                };
                if now.saturating_duration_since(k.since) >= LATE_TTL {
                    self.remove_key(key);
                    expired += 1;
                    continue;
                }
                self.ring.push_back(key);
                if k.peeking {
                    continue;
                }
                k.peeking = true;
                let source = k.source.clone();
                let id = self.peek_id(key);
                out.push((id, key, source));
            }
            (out, expired)
        }

        /// Takes `key` out (a receive is being posted for it, or its peer is forgotten).
        /// Returns the id and peer of a peek to drop what libfabric may already hold for it.
        fn take(&mut self, key: LateId) -> Option<(OpId, Addr)> {
            let k = self.remove_key(key)?;
            Some((self.peek_id(key), k.source))
        }

        /// Takes the oldest key's entry off `order` (entries of keys gone or entered again
        /// since are dropped on the way) and returns the key, still kept.
        fn oldest(&mut self) -> Option<LateId> {
            while let Some((key, since)) = self.order.pop_front() {
                if self.keys.get(&key).is_some_and(|k| k.since == since) {
                    return Some(key);
                }
            }
            None
        }

        /// Removes `key`, and under head sweeps its share of its peer.
        fn remove_key(&mut self, key: LateId) -> Option<LateKey> {
            let k = self.keys.remove(&key)?;
            if self.by_head {
                if let Some(p) = self.peers.get_mut(&key.0) {
                    p.keys -= 1;
                    if p.keys == 0 {
                        self.peers.remove(&key.0);
                    }
                }
            }
            Some(k)
        }

        /// Head sweeps: the head peeks to post now (none before `next_sweep`), one for each of
        /// up to [`SWEEP_BATCH`] peers round robin, skipping peers with one out.
        fn due_heads(&mut self, now: Instant) -> Vec<HeadDue> {
            let mut out = Vec::new();
            if !self.sweep_due(now) {
                return out;
            }
            let mut left = self.peer_ring.len();
            while out.len() < SWEEP_BATCH && left > 0 {
                left -= 1;
                let Some(src) = self.peer_ring.pop_front() else {
                    break;
                };
                if !self.peers.contains_key(&src) {
                    continue;
                }
                self.peer_ring.push_back(src);
                if let Some(due) = self.head_again(src) {
                    out.push(due);
                }
            }
            out
        }

        /// Head sweeps: a head peek for `src` now, unless it has no keys or one is out.
        fn head_again(&mut self, src: u64) -> Option<HeadDue> {
            let p = self.peers.get_mut(&src)?;
            if p.heading {
                return None;
            }
            p.heading = true;
            let source = p.source.clone();
            let id = self.next_id();
            self.heads.insert(id, src);
            Some((id, src, source))
        }

        /// Whether `id` is a head peek of this table.
        fn is_head(&self, id: OpId) -> bool {
            self.heads.contains_key(&id)
        }

        /// The completion of head peek `id`: `err` 0 with the `tag` of the message heading its
        /// peer's connection, or an error (`FI_ENOMSG`: none waiting). Returns the peek that
        /// drops that message when it is a kept key.
        fn head_peeked(&mut self, id: OpId, err: i32, tag: u32) -> Option<PeekDue> {
            let src = self.heads.remove(&id)?;
            if let Some(p) = self.peers.get_mut(&src) {
                p.heading = false;
            }
            if err != 0 {
                return None;
            }
            let key = (src, u64::from(tag));
            let k = self.keys.get_mut(&key)?;
            if k.peeking {
                return None;
            }
            k.peeking = true;
            let source = k.source.clone();
            Some((self.peek_id(key), key, source))
        }

        /// A new peek id for `key`, recorded until its completion.
        fn peek_id(&mut self, key: LateId) -> OpId {
            let id = self.next_id();
            self.peeks.insert(id, key);
            id
        }

        /// A new operation id for a peek of either kind.
        fn next_id(&mut self) -> OpId {
            let id = OpId(LATE_BASE + self.next);
            self.next += 1;
            id
        }

        /// Whether a sweep starts now (none before `next_sweep`); if so, the next one is due
        /// [`SWEEP_EVERY`] later.
        fn sweep_due(&mut self, now: Instant) -> bool {
            if self.next_sweep.is_some_and(|t| now < t) {
                return false;
            }
            self.next_sweep = Some(now + SWEEP_EVERY);
            true
        }

        /// The completion of peek `id` (`err` 0, `FI_ENOMSG` or another error). None for an id
        /// that is not a peek of this table.
        fn peeked(&mut self, id: OpId, err: i32) -> Option<Peeked> {
            let key = self.peeks.remove(&id)?;
            let outcome = match err {
                0 => Peeked::Dropped,
                libc::ENOMSG => Peeked::Nothing,
                _ => Peeked::Failed,
            };
            if let Some(k) = self.keys.get_mut(&key) {
                k.peeking = false;
                match outcome {
                    // Under head sweeps a key is peeked for only once its message heads the
                    // connection: whatever the peek found, the key is done.
                    _ if self.by_head => {
                        self.remove_key(key);
                    }
                    Peeked::Dropped => k.found = true,
                    Peeked::Nothing if !k.found => {}
                    // Its message came and went, or the key cannot be swept: done with it.
                    _ => {
                        self.remove_key(key);
                    }
                }
            }
            Some(outcome)
        }
    }

    /// Operation ids of late-message peeks: far above any id a `Context` hands out (those
    /// count up from 1), so their completions are told apart by the id alone.
    const LATE_BASE: u64 = 1 << 63;

    /// How long a cancelled receive's key is swept for its late message.
    const LATE_TTL: Duration = Duration::from_secs(60);

    /// Sweeps start at most this often, each with at most [`SWEEP_BATCH`] peeks. A peek costs
    /// a pass of rxm's progress and one completion (≈ 3,100 instructions under callgrind): at
    /// most ~1,600 a second while keys are waiting, whatever their number. [`LATE_KEYS`] keys
    /// are all visited within `LATE_KEYS / SWEEP_BATCH` sweeps (0.64 s).
    const SWEEP_EVERY: Duration = Duration::from_millis(10);
    const SWEEP_BATCH: usize = 16;

    /// This context's AV: its peers, and the last one found up.
    struct Av {
        /// Peers by their 16 address bytes as one `u128` (one hash step per lookup).
        peers: HashMap<u128, Peer, ahash::RandomState>,
        /// The last peer found up, `(key, fi_addr)`: an RPC's operations go to one peer, so
        /// most lookups end here without hashing. Cleared whenever an entry changes.
        last_ready: Option<(u128, u64)>,
    }

    /// How many times a send that found its connection closed (nothing sent) is sent again while
    /// libfabric replaces the connection.
    const MAX_RESENDS: u8 = 8;

    /// How long a first connection to a peer may take before its queued sends fail HostUnreach.
    const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

    /// One peer in this context's AV.
    struct Peer {
        fi: u64,
        state: PeerState,
    }

    /// Whether sends to a peer may go to libfabric. rxm on 1.17 retries a refused connection
    /// forever without failing the send, so the first send to a peer (and the first after a
    /// connection error) waits for a TCP connect probe to its listener: up, the queued operations
    /// are posted; refused or timed out, they complete `HostUnreach`.
    enum PeerState {
        /// In the AV (e.g. for a directed receive) but never sent to.
        Unknown,
        /// A probe is connecting; operations wait here in order.
        Probing {
            probe: Probe,
            since: Instant,
            not_before: Option<Instant>,
            queued: Vec<(Op, Post)>,
        },
        /// Heard from, or probed up.
        Ready,
    }

    /// The peer a send or RMA needs a connection to.
    fn conn_dest(op: &Op) -> Option<[u8; 16]> {
        match &op.req {
            Request::SendUnexpected { dest, .. }
            | Request::SendExpected { dest, .. }
            | Request::Put { dest, .. }
            | Request::Get { dest, .. } => dest.as_bytes().try_into().ok(),
            _ => None,
        }
    }

    impl OfiContext {
        #[inline(always)]
        fn resolve(&self, addr: &Addr) -> Result<u64> {
            self.resolve_ready(addr).map(|(fi, _)| fi)
        }

        /// The peer's `fi_addr_t` (inserting it if new), and whether sends may go straight to it.
        ///
        /// Inlined into the posting path: only the common case (the peer of the last operation,
        /// known up) is here; anything else is [`OfiContext::resolve_slow`], kept out of line.
        #[inline]
        fn resolve_ready(&self, addr: &Addr) -> Result<(u64, bool)> {
            // The name is usually this very constant: compare the pointers before the bytes.
            if std::ptr::eq(addr.plugin(), NAME) {
                if let Ok(raw) = <[u8; 16]>::try_from(addr.as_bytes()) {
                    let key = u128::from_ne_bytes(raw);
                    let av = lock(&self.av);
                    if let Some((k, fi)) = av.last_ready {
                        if k == key {
                            return Ok((fi, true));
                        }
                    }
                }
            }
            self.resolve_slow(addr)
        }

        /// [`OfiContext::resolve_ready`] past its fast path: checks the address, looks the peer
        /// up, enters a new one in the AV.
        #[cold]
        #[inline(never)]
        fn resolve_slow(&self, addr: &Addr) -> Result<(u64, bool)> {
            if !std::ptr::eq(addr.plugin(), NAME) && addr.plugin() != NAME {
                tracing::warn!(?addr, "na.ofi: address of another plugin");
                return Err(Error::InvalidArg);
            }
            let raw: [u8; 16] = addr.as_bytes().try_into().map_err(|_| Error::InvalidArg)?;
            let mut av = lock(&self.av);
            let key = u128::from_ne_bytes(raw);
            if let Some((k, fi)) = av.last_ready {
                if k == key {
                    return Ok((fi, true));
                }
            }
            if let Some(p) = av.peers.get(&key) {
                // Its bytes were checked when it entered the AV.
                let (fi, ready) = (p.fi, matches!(p.state, PeerState::Ready));
                if ready {
                    av.last_ready = Some((key, fi));
                }
                return Ok((fi, ready));
            }
            parse_sockaddr(&raw).map_err(|why| {
                tracing::warn!(?why, "na.ofi: bad address bytes");
                Error::InvalidArg
            })?;
            let fi = self.ep.av_insert(&raw).map_err(|e| {
                tracing::warn!(?addr, fi_error = %sys::strerror(e), "na.ofi: fi_av_insert failed");
                map_fi_errno(e)
            })?;
            av.peers.insert(
                key,
                Peer {
                    fi,
                    state: PeerState::Unknown,
                },
            );
            Ok((fi, false))
        }

        /// Drops a peer's AV entry so the next send probes and reconnects (a peer with a probe
        /// under way keeps it: its queued operations finish with the probe).
        fn forget(&self, raw: &[u8; 16]) {
            let mut av = lock(&self.av);
            let key = u128::from_ne_bytes(*raw);
            if matches!(
                av.peers.get(&key).map(|p| &p.state),
                Some(PeerState::Probing { .. })
            ) {
                return;
            }
            av.last_ready = None;
            if let Some(p) = av.peers.remove(&key) {
                // Its AV slot may go to another peer: its keys go now, while their peeks can
                // still name it.
                if self.late_n.load(Ordering::Acquire) > 0 {
                    self.unlate(p.fi);
                }
                if let Err(e) = self.ep.av_remove(p.fi) {
                    tracing::debug!(fi_error = %sys::strerror(e), "na.ofi: fi_av_remove failed");
                }
            }
        }

        /// Holds `op` while its peer is not known to be up. Returns it back when it may go now.
        fn gate(&self, op: Op, post: Post, not_before: Option<Instant>) -> Option<(Op, Post)> {
            let Some(dest) = conn_dest(&op) else {
                return Some((op, post));
            };
            let mut av = lock(&self.av);
            av.last_ready = None;
            let Some(peer) = av.peers.get_mut(&u128::from_ne_bytes(dest)) else {
                return Some((op, post));
            };
            match &mut peer.state {
                PeerState::Ready => Some((op, post)),
                PeerState::Probing { queued, .. } => {
                    queued.push((op, post));
                    None
                }
                PeerState::Unknown => match Probe::start(&dest) {
                    Ok(probe) => {
                        peer.state = PeerState::Probing {
                            probe,
                            since: Instant::now(),
                            not_before,
                            queued: vec![(op, post)],
                        };
                        self.probing.fetch_add(1, Ordering::AcqRel);
                        if self.ep.is_waiting() {
                            self.ep.wake();
                        }
                        None
                    }
                    Err(e) => {
                        drop(av);
                        tracing::warn!(errno = e, "na.ofi: peer unreachable (connect failed)");
                        self.cq.push(op.complete(Err(Error::HostUnreach)));
                        None
                    }
                },
            }
        }

        /// Settles finished probes: posts or fails the operations waiting on them.
        fn check_probes(&self) {
            let mut go = Vec::new();
            let mut dead = Vec::new();
            let mut up = Vec::new();
            let mut settled = 0;
            {
                let mut av = lock(&self.av);
                av.last_ready = None;
                for (raw, peer) in av.peers.iter_mut() {
                    let PeerState::Probing {
                        probe,
                        since,
                        not_before,
                        queued,
                    } = &mut peer.state
                    else {
                        continue;
                    };
                    let verdict = match probe.check() {
                        ProbeState::Pending if since.elapsed() > PROBE_TIMEOUT => {
                            ProbeState::Down(libc::ETIMEDOUT)
                        }
                        v => v,
                    };
                    match verdict {
                        ProbeState::Pending => continue,
                        ProbeState::Up if not_before.is_some_and(|t| Instant::now() < t) => {
                            continue
                        }
                        ProbeState::Up => {
                            go.append(queued);
                            peer.state = PeerState::Ready;
                            up.push(raw.to_ne_bytes());
                        }
                        ProbeState::Down(e) => {
                            tracing::warn!(
                                peer = %fmt_addr(&self.shared.protocol, &raw.to_ne_bytes()),
                                error = %std::io::Error::from_raw_os_error(e),
                                ops = queued.len(),
                                "na.ofi: peer unreachable"
                            );
                            dead.append(queued);
                            peer.state = PeerState::Unknown;
                        }
                    }
                    settled += 1;
                }
            }
            for (op, post) in go {
                self.submit(op, post);
            }
            // The sends just posted opened libfabric's connections to these peers.
            for raw in up {
                let to = sock_v4(&raw);
                self.fix_rcvbufs("outgoing", |s| s.peer == Some(to));
            }
            for (op, _) in dead {
                self.cq.push(op.complete(Err(Error::HostUnreach)));
            }
            // Only now: `inject` declines while a probe is settling, so a message never passes
            // the sends that waited for the probe (they were submitted just above).
            if settled > 0 {
                self.probing.fetch_sub(settled, Ordering::AcqRel);
            }
        }

        /// Fixes `SO_RCVBUF` (the class's `rcvbuf`) on this process's TCP sockets that `mine`
        /// picks out by address as this endpoint's: a listener and what it accepts, or the
        /// connections to one peer. A scan of `/proc/self/fd`, run once per context and per
        /// peer brought up, never on the data path. Listing and setting are not atomic: a
        /// socket another thread closes and reopens in between gets the size instead (harmless).
        fn fix_rcvbufs(&self, what: &str, mine: impl Fn(&sock::TcpSocket) -> bool) {
            let Some(bytes) = self.shared.rcvbuf else {
                return;
            };
            let mut fixed = 0;
            for s in sock::tcp_sockets().iter().filter(|s| mine(s)) {
                match sock::set_rcvbuf(s.fd, bytes) {
                    Ok(()) => fixed += 1,
                    // Closed since it was listed.
                    Err(libc::EBADF) => {}
                    Err(e) => tracing::warn!(
                        fd = s.fd,
                        error = %std::io::Error::from_raw_os_error(e),
                        "na.ofi: setting SO_RCVBUF failed"
                    ),
                }
            }
            tracing::debug!(what, fixed, bytes, "na.ofi: socket receive buffers fixed");
        }

        #[inline(always)]
        fn submit(&self, op: Op, post: Post) {
            match self.ep.post(op, post) {
                Ok(()) => {
                    if self.ep.is_waiting() {
                        // A progress blocked on another thread must see this operation's progress.
                        self.ep.wake();
                    }
                }
                Err((op, e)) => {
                    let err = map_fi_errno(e);
                    tracing::warn!(fi_error = %sys::strerror(e), error = %err, "na.ofi: post failed");
                    self.cq.push(op.complete(Err(err)));
                }
            }
        }

        /// Takes every operation still waiting on a probe (for cancel and close).
        fn take_queued(&self, only: Option<OpId>) -> Vec<Op> {
            let mut out = Vec::new();
            let mut av = lock(&self.av);
            for peer in av.peers.values_mut() {
                if let PeerState::Probing { queued, .. } = &mut peer.state {
                    let mut i = 0;
                    while i < queued.len() {
                        if only.is_none_or(|id| queued[i].0.id == id) {
                            out.push(queued.remove(i).0);
                        } else {
                            i += 1;
                        }
                    }
                }
            }
            out
        }

        fn fail(&self, op: Op, err: Error) {
            tracing::debug!(op = op.id.0, kind = ?op.req.kind(), error = %err, "na.ofi: operation failed at post");
            self.cq.push(op.complete(Err(err)));
        }

        /// The libfabric arguments of `op`, and whether its peer is known up (no gate needed).
        #[inline(always)]
        fn prepare(&self, op: &Op) -> Result<(Post, bool)> {
            let sh = &self.shared;
            match &op.req {
                Request::SendUnexpected {
                    buf,
                    len,
                    dest,
                    tag,
                } => {
                    if *len > sh.max_unexpected {
                        return Err(too_long(*len, sh.max_unexpected, "unexpected"));
                    }
                    if *len > buf.capacity() {
                        return Err(Error::InvalidArg);
                    }
                    let (dest, ready) = self.resolve_ready(dest)?;
                    let data = u64::from(*tag);
                    Ok((
                        Post::SendData {
                            len: *len,
                            dest,
                            data,
                        },
                        ready,
                    ))
                }
                Request::RecvUnexpected { .. } => Ok((Post::Recv, true)),
                Request::SendExpected {
                    buf,
                    len,
                    dest,
                    tag,
                } => {
                    if *len > sh.max_expected {
                        return Err(too_long(*len, sh.max_expected, "expected"));
                    }
                    if *len > buf.capacity() {
                        return Err(Error::InvalidArg);
                    }
                    let (dest, ready) = self.resolve_ready(dest)?;
                    let tag = u64::from(*tag);
                    Ok((
                        Post::TSend {
                            len: *len,
                            dest,
                            tag,
                        },
                        ready,
                    ))
                }
                Request::RecvExpected { source, tag, .. } => {
                    let src = self.resolve(source)?;
                    if self.late_n.load(Ordering::Acquire) > 0 {
                        self.welcome(src, u64::from(*tag));
                    }
                    Ok((
                        Post::TRecv {
                            src,
                            tag: u64::from(*tag),
                        },
                        true,
                    ))
                }
                Request::Put { .. } | Request::Get { .. } => self.prepare_rma(op),
            }
        }

        /// [`OfiContext::prepare`] for a put or get: checks the ranges and the access, splits the
        /// transfer into pieces. Out of line, so the message path stays short.
        #[inline(never)]
        fn prepare_rma(&self, op: &Op) -> Result<(Post, bool)> {
            let Rma {
                put: write,
                local,
                local_offset,
                remote,
                remote_offset,
                len,
                dest,
            } = op.req.rma().expect("an RMA request");
            if remote.plugin != NAME {
                return Err(Error::InvalidArg);
            }
            let need = if write { Access::WRITE } else { Access::READ };
            if !remote.access.contains(need) {
                tracing::warn!(write, "na.ofi: remote region does not allow this RMA");
                return Err(Error::Permission);
            }
            let end_l = local_offset.checked_add(len).ok_or(Error::Overflow)?;
            let end_r = remote_offset.checked_add(len).ok_or(Error::Overflow)?;
            if end_l > local.len() as u64 || end_r > remote.len() {
                tracing::warn!(len, "na.ofi: RMA range outside a region");
                return Err(Error::Overflow);
            }
            let Some(mem) = local.plugin_mem().as_any().downcast_ref::<OfiMem>() else {
                return Err(Error::InvalidArg);
            };
            let (fi, ready) = self.resolve_ready(dest)?;
            let post = Post::Rma {
                write,
                dest: fi,
                pieces: pieces(mem, local_offset, remote, remote_offset, len),
            };
            Ok((post, ready))
        }

        /// Turns a libfabric completion into the operation's one `Completion` (none when the
        /// operation was started again instead: a send that found its connection closed).
        #[inline(always)]
        fn deliver(&self, d: Done) -> Option<Completion> {
            let Done {
                op,
                err,
                prov_errno,
                len,
                data,
                olen,
            } = d;
            if op.id.0 >= LATE_BASE {
                self.late_done(op.id, err, len, data);
                return None;
            }
            if err != 0 {
                return self.deliver_failed(op, err, prov_errno, len, data, olen);
            }
            if self.resent_n.load(Ordering::Acquire) > 0 {
                self.resend_over(op.id);
            }
            Some(self.complete(op, Ok(()), len, data, None))
        }

        /// [`OfiContext::deliver`] of an error completion: a send that found its connection
        /// closed is sent again; anything else completes with the mapped error. Out of line.
        #[cold]
        #[inline(never)]
        fn deliver_failed(
            &self,
            op: Op,
            err: i32,
            prov_errno: i32,
            len: usize,
            data: u32,
            olen: u32,
        ) -> Option<Completion> {
            let kind = op.req.kind();
            // The peer matters only to an error (to resend or forget it).
            let dest = conn_dest(&op);
            if err == libc::ENOTCONN
                && matches!(kind, OpKind::SendUnexpected | OpKind::SendExpected)
                && {
                    let mut r = lock(&self.resent);
                    let n = r.entry(op.id).or_insert(0);
                    *n += 1;
                    *n <= MAX_RESENDS
                }
            {
                if lock(&self.resent).get(&op.id) == Some(&1) {
                    self.resent_n.fetch_add(1, Ordering::AcqRel);
                }
                // The connection was already gone (the peer closed it, e.g. after a truncation):
                // nothing went on the wire. Forget the peer and send again (a few times while rxm
                // tears the old connection down), reconnecting.
                if let Some(raw) = dest {
                    self.forget(&raw);
                }
                tracing::debug!(
                    op = op.id.0,
                    "na.ofi: send on a closed connection, resending"
                );
                let post = match self.prepare(&op) {
                    Ok((p, _)) => p,
                    Err(e) => {
                        self.fail(op, e);
                        return None;
                    }
                };
                // Give rxm a few progress passes to retire the dead connection first.
                let later = Instant::now() + Duration::from_millis(20);
                if let Some((op, post)) = self.gate(op, post, Some(later)) {
                    self.submit(op, post);
                }
                return None;
            }
            if self.resent_n.load(Ordering::Acquire) > 0 {
                self.resend_over(op.id);
            }
            let e = map_fi_errno(err);
            if e == Error::Canceled {
                tracing::debug!(op = op.id.0, ?kind, "na.ofi: operation canceled");
                if let Request::RecvExpected { source, tag, .. } = &op.req {
                    self.discard_late(source, *tag);
                }
            } else {
                tracing::warn!(
                    op = op.id.0, ?kind, error = %e, fi_error = %sys::strerror(err),
                    prov_errno, olen, "na.ofi: error completion"
                );
            }
            Some(self.complete(op, Err(e), len, data, dest))
        }

        /// Forgets the resend count of a send that finished (sent, or failed for good).
        #[cold]
        #[inline(never)]
        fn resend_over(&self, id: OpId) {
            if lock(&self.resent).remove(&id).is_some() {
                self.resent_n.fetch_sub(1, Ordering::AcqRel);
            }
        }

        /// The `Completion` of a finished operation; `dest` is its peer when it failed.
        #[inline(always)]
        fn complete(
            &self,
            op: Op,
            mut result: Result<()>,
            len: usize,
            data: u32,
            dest: Option<[u8; 16]>,
        ) -> Completion {
            let kind = op.req.kind();
            let Op { id, user, req } = op;
            // The request is taken apart: its buffer and source move into the completion.
            let (buf, source, req_tag, sent) = match req {
                Request::SendUnexpected { buf, len, tag, .. }
                | Request::SendExpected { buf, len, tag, .. } => (Some(buf), None, tag, len),
                Request::RecvExpected { buf, source, tag } => (Some(buf), Some(source), tag, 0),
                Request::RecvUnexpected { buf } => (Some(buf), None, 0, 0),
                Request::Put { .. } | Request::Get { .. } => (None, None, 0, 0),
            };
            let mut c = Completion {
                op: id,
                kind,
                user,
                result: Ok(()),
                buf,
                len: 0,
                source: None,
                tag: 0,
            };
            match kind {
                OpKind::RecvUnexpected => {
                    c.len = len;
                    c.tag = data;
                    if result.is_ok() {
                        let bytes = c
                            .buf
                            .as_ref()
                            .map_or(&[][..], |b| &b.as_slice()[..len.min(b.capacity())]);
                        match self.accept_source(bytes) {
                            Ok(a) => c.source = Some(a),
                            Err(e) => result = Err(e),
                        }
                    }
                }
                OpKind::RecvExpected => {
                    c.len = len;
                    c.tag = req_tag;
                    c.source = source;
                }
                OpKind::SendUnexpected | OpKind::SendExpected => {
                    c.len = if result.is_ok() { sent } else { 0 };
                }
                OpKind::Put | OpKind::Get => {}
            }
            if result == Err(Error::HostUnreach) {
                if let Some(raw) = dest {
                    // The connection is gone: the next send to this peer probes and reconnects.
                    self.forget(&raw);
                }
            }
            c.result = result;
            c
        }

        /// Validates an unexpected message's source prefix and enters it in the AV.
        fn accept_source(&self, bytes: &[u8]) -> Result<Addr> {
            let raw: [u8; 16] = match parse_sockaddr(bytes) {
                Ok(_) => bytes[..16].try_into().expect("16 bytes"),
                Err(why) => {
                    tracing::warn!(
                        ?why,
                        len = bytes.len(),
                        "na.ofi: unexpected message with a bad source-address prefix dropped"
                    );
                    return Err(Error::ProtocolError);
                }
            };
            let addr = Addr::from_raw(NAME, &raw);
            self.resolve(&addr)?;
            Ok(addr)
        }

        /// Delivers finished operations into the queue, or into `out` when given.
        #[inline(always)]
        fn drain(&self, scratch: &mut Vec<Done>, mut out: Option<&mut Vec<Completion>>) {
            for d in scratch.drain(..) {
                if let Some(c) = self.deliver(d) {
                    match out.as_deref_mut() {
                        Some(out) => out.push(c),
                        None => self.cq.push(c),
                    }
                }
            }
        }

        /// `progress` and `progress_into`: completions into `out` when given, else the queue.
        fn progress_to(&self, timeout: Duration, out: Option<&mut Vec<Completion>>) -> Result<()> {
            let mut scratch = lock(&self.scratch);
            // Read the clock only once a wait is needed (completions are often ready at once).
            let mut deadline = None;
            loop {
                if self.probing.load(Ordering::Acquire) > 0 {
                    self.check_probes();
                }
                if self.late_n.load(Ordering::Relaxed) > 0 {
                    self.sweep_late();
                }
                let n = self.ep.progress(&mut scratch);
                if n > 0 || !self.cq.is_empty() {
                    self.drain(&mut scratch, out);
                    return Ok(());
                }
                if timeout.is_zero() || self.woken.swap(false, Ordering::AcqRel) {
                    return Ok(());
                }
                let now = Instant::now();
                // As `plugin::deadline_after`, from the clock read just made.
                const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
                let deadline = *deadline.get_or_insert_with(|| now + timeout.min(CENTURY));
                if now >= deadline {
                    return Ok(());
                }
                if !self.shared.wait_fd {
                    // Busy mode: poll again until the deadline, never sleep.
                    std::hint::spin_loop();
                    continue;
                }
                let mut slice = deadline - now;
                if self.probing.load(Ordering::Acquire) > 0 || self.ep.has_retry() {
                    slice = slice.min(Duration::from_millis(1));
                }
                self.ep.wait(slice);
            }
        }
    }

    /// Late expected messages. libfabric holds a tagged message that meets no posted receive
    /// until one is posted for it; after an expected receive is cancelled (an RPC that timed
    /// out), its reply would wait in rxm's unexpected queue until the endpoint closes — holding a
    /// receive buffer each — and be handed to the next receive posted for the same key. So the
    /// key of a cancelled expected receive is kept, and `progress` sweeps such messages out with
    /// `FI_PEEK | FI_DISCARD` peeks: the `inproc` plugin's "discarded, not held" (docs/na.md,
    /// "Late replies"). Peeks, not receives posted in their place: rxm 1.17 matches every
    /// arriving tagged message against its posted receives one by one, oldest first, so each
    /// receive whose message never comes (a hung peer) would cost every later reply a
    /// comparison and a cache miss or more (256 of them: ≈ 5,300 instructions per reply).
    impl OfiContext {
        /// Runs `f` on the late-message table under its lock, then stores its key count in
        /// `late_n` (what the receive and progress paths look at first).
        fn with_late<R>(&self, f: impl FnOnce(&mut Late) -> R) -> R {
            let mut late = lock(&self.late);
            let r = f(&mut late);
            self.late_n.store(late.keys.len(), Ordering::Release);
            r
        }

        /// Keeps `(source, tag)`: its receive was cancelled; the message may still come.
        #[cold]
        #[inline(never)]
        fn discard_late(&self, source: &Addr, tag: Tag) {
            if self.closing.load(Ordering::Acquire) {
                return;
            }
            // Only a peer still in the AV: one forgotten meanwhile (its keys dropped with it)
            // is not entered again for this.
            let Ok(raw) = <[u8; 16]>::try_from(source.as_bytes()) else {
                return;
            };
            let Some(src) = lock(&self.av)
                .peers
                .get(&u128::from_ne_bytes(raw))
                .map(|p| p.fi)
            else {
                return;
            };
            let evicted =
                self.with_late(|l| l.enter((src, u64::from(tag)), source.clone(), Instant::now()));
            if evicted.is_some() {
                tracing::debug!(
                    "na.ofi: too many late-message keys: the oldest is no longer swept"
                );
            }
        }

        /// Posts the peeks that are due. Called by progress while keys are kept.
        #[cold]
        #[inline(never)]
        fn sweep_late(&self) {
            if self.closing.load(Ordering::Acquire) {
                return;
            }
            // The table knows how it sweeps: head peeks per peer, or a peek per key.
            let (heads, due, expired) = self.with_late(|l| {
                let now = Instant::now();
                if l.by_head {
                    (l.due_heads(now), Vec::new(), 0)
                } else {
                    let (due, expired) = l.due(now);
                    (Vec::new(), due, expired)
                }
            });
            if expired > 0 {
                tracing::debug!(expired, "na.ofi: late-message keys expired");
            }
            for (id, src, source) in heads {
                self.peek_head(id, src, source);
            }
            for (id, key, source) in due {
                self.peek_late(id, key, source);
            }
        }

        /// Posts head peek `id`: asks which tagged message heads `src`'s connection.
        fn peek_head(&self, id: OpId, src: u64, source: Addr) {
            self.post_peek(id, source, 0, Post::TPeekHead { src });
        }

        /// Posts a peek (`post`, a `TPeek` or `TPeekHead`) as operation `id`: an expected
        /// receive without a buffer, whose completion goes to `late_done`.
        fn post_peek(&self, id: OpId, source: Addr, tag: Tag, post: Post) {
            let op = Op {
                id,
                user: 0,
                req: Request::RecvExpected {
                    buf: MsgBuf::new(0),
                    source,
                    tag,
                },
            };
            if let Err((_, e)) = self.ep.post(op, post) {
                self.late_done(id, e, 0, 0);
            }
        }

        /// Posts peek `id`: drops the message libfabric holds for `key`, if any.
        fn peek_late(&self, id: OpId, key: LateId, source: Addr) {
            let post = Post::TPeek {
                src: key.0,
                tag: key.1,
            };
            self.post_peek(id, source, key.1 as Tag, post);
        }

        /// A peek completed (or could not be posted): `data` is the tag a head peek saw.
        #[cold]
        #[inline(never)]
        fn late_done(&self, id: OpId, err: i32, len: usize, data: u32) {
            // A head peek that found a kept key's message drops it next; a dropped message
            // under head sweeps is followed by a head peek at once (the next message on that
            // connection may be late too).
            let (outcome, drop, head) = self.with_late(|l| {
                if l.is_head(id) {
                    return (None, l.head_peeked(id, err, data), None);
                }
                let src = l.peeks.get(&id).map(|k| k.0);
                let outcome = l.peeked(id, err);
                let head = match (outcome.as_ref(), src) {
                    (Some(Peeked::Dropped), Some(src)) if l.by_head => l.head_again(src),
                    _ => None,
                };
                (outcome, None, head)
            });
            if let Some((id, key, source)) = drop {
                self.peek_late(id, key, source);
            }
            if let Some((id, src, source)) = head {
                self.peek_head(id, src, source);
            }
            match outcome {
                Some(Peeked::Dropped) => tracing::debug!(
                    len,
                    "na.ofi: late expected message (its receive was cancelled) discarded"
                ),
                // (Cancelled: the endpoint is closing; nothing to say.)
                Some(Peeked::Failed) if err != libc::ECANCELED => tracing::debug!(
                    fi_error = %sys::strerror(err),
                    "na.ofi: late-message peek failed: its key is let go"
                ),
                _ => {}
            }
        }

        /// A receive is being posted for `(src, tag)`: a late message libfabric holds for that
        /// key is dropped first, so the new receive gets the next message.
        #[cold]
        #[inline(never)]
        fn welcome(&self, src: u64, tag: u64) {
            let taken = self.with_late(|l| l.take((src, tag)));
            if let Some((id, source)) = taken {
                self.peek_late(id, (src, tag), source);
            }
        }

        /// The peer at `src` is being forgotten: its keys go, each with a last peek (before its
        /// AV entry goes, which the peeks need); under head sweeps without one.
        #[cold]
        #[inline(never)]
        fn unlate(&self, src: u64) {
            let taken: Vec<_> = self.with_late(|l| {
                let keys: Vec<LateId> = l.keys.keys().filter(|k| k.0 == src).copied().collect();
                if l.by_head {
                    // Up to LATE_KEYS_XNET of them: let go without a peek each (what heads the
                    // forgotten peer's connection goes with it).
                    for k in keys {
                        l.remove_key(k);
                    }
                    return Vec::new();
                }
                keys.into_iter()
                    .filter_map(|k| l.take(k).map(|(id, source)| (id, k, source)))
                    .collect()
            });
            for (id, key, source) in taken {
                self.peek_late(id, key, source);
            }
        }
    }

    /// A message over the plugin's maximum size: logged, `MsgSize`. Out of line (rare).
    #[cold]
    #[inline(never)]
    fn too_long(len: usize, max: usize, kind: &'static str) -> Error {
        tracing::warn!(len, max, kind, "na.ofi: message over the max size");
        Error::MsgSize
    }

    /// Splits `[local_offset, +len)` × `[remote_offset, +len)` into pieces contiguous on both sides.
    fn pieces(
        mem: &OfiMem,
        local_offset: u64,
        remote: &RemoteMem,
        remote_offset: u64,
        len: u64,
    ) -> SmallVec<[RmaPiece; 1]> {
        let mut out = SmallVec::new();
        let (mut li, mut loff) = seek(mem.local.iter().map(|s| s.len as u64), local_offset);
        let (mut ri, mut roff) = seek(remote.segments.iter().map(|s| s.len), remote_offset);
        let mut left = len;
        while left > 0 {
            let l = mem.local[li];
            let r = remote.segments[ri];
            let n = (l.len as u64 - loff).min(r.len - roff).min(left);
            if n > 0 {
                out.push(RmaPiece {
                    local: l.addr + loff as usize,
                    len: n as usize,
                    desc: mem.mrs[li].as_ref().map_or(0, |m| m.desc),
                    remote: r.base + roff,
                    key: r.key,
                });
            }
            left -= n;
            loff += n;
            roff += n;
            if loff == l.len as u64 {
                li += 1;
                loff = 0;
            }
            if roff == r.len {
                ri += 1;
                roff = 0;
            }
        }
        out
    }

    /// (segment index, offset inside it) of a byte offset; skips empty segments.
    fn seek(lens: impl Iterator<Item = u64>, mut off: u64) -> (usize, u64) {
        for (i, l) in lens.enumerate() {
            if off < l {
                return (i, off);
            }
            off -= l;
        }
        (usize::MAX, 0)
    }

    impl PluginContext for OfiContext {
        fn self_addr(&self) -> Addr {
            Addr::from_raw(NAME, &self.self_raw)
        }

        fn msg_init_unexpected(&self, buf: &mut [u8]) {
            let n = buf.len().min(UNEXPECTED_HEADER_SIZE);
            buf[..n].copy_from_slice(&self.self_raw[..n]);
        }

        fn post(&self, op: Op) {
            let (post, ready) = match self.prepare(&op) {
                Ok(p) => p,
                Err(e) => return self.fail(op, e),
            };
            if let Post::Rma { pieces, .. } = &post {
                if pieces.is_empty() {
                    self.cq.push(op.complete(Ok(())));
                    return;
                }
            }
            if ready {
                // Hot path: the peer is known up, no second look at the AV map.
                return self.submit(op, post);
            }
            if let Some((op, post)) = self.gate(op, post, None) {
                self.submit(op, post);
            }
        }

        fn inject(&self, kind: OpKind, msg: &[u8], dest: &Addr, tag: Tag) -> bool {
            let sh = &self.shared;
            let (tagged, max) = match kind {
                OpKind::SendUnexpected => (false, sh.max_unexpected),
                OpKind::SendExpected => (true, sh.max_expected),
                _ => return false,
            };
            // Not while a probe is out or settling: sends waiting for it must not be passed.
            if msg.len() > sh.max_inject.min(max) || self.probing.load(Ordering::Acquire) > 0 {
                return false;
            }
            // Only to a peer known up: the others go through the gate (and its probe), which a
            // normal post reaches.
            let Ok((fi, true)) = self.resolve_ready(dest) else {
                return false;
            };
            match self.ep.inject(msg, fi, tagged, u64::from(tag)) {
                Ok(sent) => sent,
                Err(e) => {
                    // The normal post that follows meets it again and reports it.
                    tracing::debug!(fi_error = %sys::strerror(e), "na.ofi: inject failed");
                    false
                }
            }
        }

        fn progress(&self, timeout: Duration) -> Result<()> {
            self.progress_to(timeout, None)
        }

        fn progress_into(&self, timeout: Duration, out: &mut Vec<Completion>) -> Result<()> {
            self.progress_to(timeout, Some(out))
        }

        fn cancel(&self, op: OpId) -> Result<()> {
            for queued in self.take_queued(Some(op)) {
                self.cq.push(queued.complete(Err(Error::Canceled)));
            }
            let mut out = Vec::new();
            self.ep.cancel(op, &mut out);
            self.drain(&mut out, None);
            Ok(())
        }

        fn wake(&self) {
            self.woken.store(true, Ordering::Release);
            self.ep.wake();
        }

        fn wait_fd(&self) -> Option<RawFd> {
            // Busy mode has no fd that completions make readable (Mercury's `NA_Poll_get_fd`
            // is -1 under `NA_NO_BLOCK` too).
            if !self.shared.wait_fd {
                return None;
            }
            self.ep.wait_fd()
        }

        fn close(&self) {
            self.closing.store(true, Ordering::Release);
            for queued in self.take_queued(None) {
                self.cq.push(queued.complete(Err(Error::Canceled)));
            }
            let mut out = Vec::new();
            self.ep.close(Duration::from_secs(2), &mut out);
            self.drain(&mut out, None);
        }
    }

    #[cfg(test)]
    mod late_tests {
        use super::*;

        fn peer(n: u8) -> Addr {
            Addr::from_raw(NAME, &[n; 16])
        }

        /// Keys are swept round robin, at most [`SWEEP_BATCH`] a sweep and none twice while its
        /// peek is out; a dropped message keeps its key until a peek finds nothing more, and a
        /// key past [`LATE_TTL`] is let go.
        #[test]
        fn sweeps_round_robin_and_let_keys_go() {
            let mut l = Late::default();
            let t0 = Instant::now();
            for tag in 0..(SWEEP_BATCH as u64 + 4) {
                assert_eq!(l.enter((1, tag), peer(1), t0), None);
            }
            // Entering a key again changes nothing.
            assert_eq!(l.enter((1, 0), peer(1), t0), None);
            let (first, expired) = l.due(t0);
            assert_eq!((first.len(), expired), (SWEEP_BATCH, 0));
            assert_eq!(first[0].1, (1, 0));
            // Not again before SWEEP_EVERY.
            assert!(l.due(t0 + SWEEP_EVERY / 2).0.is_empty());
            // The next sweep takes the 4 left, not the ones whose peeks are out.
            let (second, _) = l.due(t0 + SWEEP_EVERY);
            let keys: Vec<u64> = second.iter().map(|d| d.1 .1).collect();
            assert_eq!(
                keys,
                (SWEEP_BATCH as u64..SWEEP_BATCH as u64 + 4).collect::<Vec<_>>()
            );
            // Peek of (1, 0) dropped a message: the key stays until a peek finds nothing.
            assert_eq!(l.peeked(first[0].0, 0), Some(Peeked::Dropped));
            assert!(l.keys.contains_key(&(1, 0)));
            // (1, 1): nothing yet, kept; (1, 2): failed, let go.
            assert_eq!(l.peeked(first[1].0, libc::ENOMSG), Some(Peeked::Nothing));
            assert!(l.keys.contains_key(&(1, 1)));
            assert_eq!(l.peeked(first[2].0, libc::EIO), Some(Peeked::Failed));
            assert!(!l.keys.contains_key(&(1, 2)));
            assert_eq!(l.peeked(first[2].0, 0), None, "one completion per peek");
            for d in first.iter().skip(3).chain(&second) {
                l.peeked(d.0, libc::ENOMSG);
            }
            // Round robin: the ring goes on where the last sweep stopped, (1, 0) again.
            let (third, _) = l.due(t0 + 2 * SWEEP_EVERY);
            assert_eq!(third[0].1, (1, SWEEP_BATCH as u64));
            let again = third.iter().find(|d| d.1 == (1, 0)).expect("swept again");
            assert_eq!(l.peeked(again.0, libc::ENOMSG), Some(Peeked::Nothing));
            assert!(
                !l.keys.contains_key(&(1, 0)),
                "found, then nothing more: done"
            );
            // Past the TTL every key goes without a peek.
            let left = l.keys.len();
            let (none, expired) = l.due(t0 + LATE_TTL);
            assert!(none.is_empty());
            assert_eq!((expired, l.keys.len()), (left, 0));
        }

        /// At [`LATE_KEYS`] the oldest key is let go; `take` hands out a peek for a key and
        /// forgets the key.
        #[test]
        fn the_bound_lets_the_oldest_go() {
            let mut l = Late::default();
            let t0 = Instant::now();
            for tag in 0..LATE_KEYS as u64 {
                let at = t0 + Duration::from_millis(tag);
                assert_eq!(l.enter((2, tag), peer(2), at), None);
            }
            let late = t0 + Duration::from_secs(5);
            assert_eq!(l.enter((3, 7), peer(3), late), Some((2, 0)));
            assert_eq!(l.enter((3, 8), peer(3), late), Some((2, 1)));
            assert_eq!(l.keys.len(), LATE_KEYS);
            let (id, source) = l.take((3, 7)).expect("kept");
            assert_eq!(source, peer(3));
            assert!(!l.keys.contains_key(&(3, 7)));
            assert_eq!(l.take((3, 7)), None);
            // Its peek's completion is still recognized (and changes no key).
            assert_eq!(l.peeked(id, 0), Some(Peeked::Dropped));
            assert_eq!(l.keys.len(), LATE_KEYS - 1);
            assert!(l.ring.len() <= 2 * l.keys.len() + 16);
        }

        /// Head sweeps (XNET): one head peek per peer with keys, whatever their number, never
        /// two out for one peer; a head that is a kept key's message is dropped by a peek for
        /// that key, and then the peer's head is looked at again at once; a head that is no
        /// kept key's (an early message, say) is left alone; keys do not expire.
        #[test]
        fn head_sweeps_peek_per_peer() {
            let mut l = Late::by_head();
            let t0 = Instant::now();
            for tag in 0..40u64 {
                assert_eq!(l.enter((1, tag), peer(1), t0), None);
            }
            assert_eq!(l.enter((2, 5), peer(2), t0), None);
            assert!(l.ring.is_empty(), "no per-key sweep order");
            let first = l.due_heads(t0);
            let mut peers: Vec<u64> = first.iter().map(|d| d.1).collect();
            peers.sort_unstable();
            assert_eq!(peers, [1, 2]);
            assert!(first.iter().all(|d| l.is_head(d.0)));
            let (h1, h2) = if first[0].1 == 1 {
                (first[0].0, first[1].0)
            } else {
                (first[1].0, first[0].0)
            };
            // Not again before SWEEP_EVERY, and not for a peer whose head peek is out.
            assert!(l.due_heads(t0 + SWEEP_EVERY / 2).is_empty());
            assert!(l.due_heads(t0 + SWEEP_EVERY).is_empty());
            // Peer 1's connection is headed by (1, 7): a peek drops it.
            let (drop, key, source) = l.head_peeked(h1, 0, 7).expect("a kept key heads");
            assert_eq!((key, source), ((1, 7), peer(1)));
            assert!(!l.is_head(h1));
            assert_eq!(
                l.head_peeked(h1, 0, 7),
                None,
                "one completion per head peek"
            );
            // Peer 2's is headed by a tag nobody kept: left alone.
            assert_eq!(l.head_peeked(h2, 0, 99), None);
            assert_eq!(l.peeked(drop, 0), Some(Peeked::Dropped));
            assert!(!l.keys.contains_key(&(1, 7)), "dropped: done with the key");
            // At once the next head of peer 1.
            let (again, src, _) = l.head_again(1).expect("peer 1 still has keys");
            assert_eq!(src, 1);
            assert_eq!(l.head_again(1), None, "one head peek out per peer");
            assert_eq!(l.head_peeked(again, libc::ENOMSG, 0), None);
            // Keys never expire here; a peer whose keys are all gone is swept no more.
            let later = l.due_heads(t0 + 10 * LATE_TTL);
            assert_eq!(later.len(), 2);
            for d in &later {
                l.head_peeked(d.0, libc::ENOMSG, 0);
            }
            assert_eq!(l.keys.len(), 40);
            assert!(l.take((2, 5)).is_some());
            let next = l.due_heads(t0 + 11 * LATE_TTL);
            assert_eq!(next.iter().map(|d| d.1).collect::<Vec<_>>(), [1]);
        }

        /// The oldest key goes by when it was entered last: a key let go and entered again
        /// is young, whatever its first entry said.
        #[test]
        fn the_bound_goes_by_the_last_entry() {
            let mut l = Late::default();
            let t0 = Instant::now();
            for tag in 0..LATE_KEYS as u64 {
                l.enter((2, tag), peer(2), t0 + Duration::from_millis(tag));
            }
            assert!(l.take((2, 0)).is_some());
            assert_eq!(l.enter((2, 0), peer(2), t0 + Duration::from_secs(5)), None);
            let at = t0 + Duration::from_secs(6);
            assert_eq!(l.enter((3, 1), peer(3), at), Some((2, 1)));
            assert_eq!(l.enter((3, 2), peer(3), at), Some((2, 2)));
            assert!(l.keys.contains_key(&(2, 0)));
            assert!(l.order.len() <= 2 * l.keys.len() + 16);
        }

        /// Head sweeps keep up to [`LATE_KEYS_XNET`] keys before the oldest goes.
        #[test]
        fn head_sweeps_keep_more_keys() {
            let mut l = Late::by_head();
            let t0 = Instant::now();
            for tag in 0..(LATE_KEYS as u64 + 8) {
                assert_eq!(l.enter((1, tag), peer(1), t0), None);
            }
            assert_eq!(l.keys.len(), LATE_KEYS + 8);
            assert_eq!(l.peers[&1].keys, LATE_KEYS + 8);
            l.remove_key((1, 3));
            assert_eq!(l.peers[&1].keys, LATE_KEYS + 7);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_prefix_checks() {
        let good = sockaddr_bytes(Ipv4Addr::LOCALHOST, 35833);
        assert_eq!(
            good,
            [2, 0, 0x8b, 0xf9, 127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(parse_sockaddr(&good), Ok((Ipv4Addr::LOCALHOST, 35833)));
        assert_eq!(parse_sockaddr(&good[..15]), Err(BadSockaddr::Truncated));
        let mut b = good;
        b[0] = 10;
        assert_eq!(parse_sockaddr(&b), Err(BadSockaddr::Family));
        let mut b = good;
        b[2..4].fill(0);
        assert_eq!(parse_sockaddr(&b), Err(BadSockaddr::Port));
        let mut b = good;
        b[4..8].fill(0);
        assert_eq!(parse_sockaddr(&b), Err(BadSockaddr::Address));
        let mut b = good;
        b[12] = 1;
        assert_eq!(parse_sockaddr(&b), Err(BadSockaddr::Padding));
        assert_eq!(parse_sockaddr(&[0u8; 16]), Err(BadSockaddr::Family));
    }

    #[test]
    fn address_strings() {
        let a = parse_addr_string("ofi+tcp;ofi_rxm://127.0.0.1:35833").unwrap();
        assert_eq!(a, sockaddr_bytes(Ipv4Addr::LOCALHOST, 35833));
        assert_eq!(parse_addr_string("ofi+tcp://127.0.0.1:35833").unwrap(), a);
        assert_eq!(parse_addr_string("127.0.0.1:35833").unwrap(), a);
        for bad in [
            "ofi+tcp://127.0.0.1",
            "ofi+tcp://127.0.0.1:0",
            "ofi+tcp://127.0.0.1:70000",
            "ofi+tcp://300.0.0.1:1",
            "ofi+tcp://0.0.0.0:1",
            "ofi+bogus://127.0.0.1:1",
            "",
            "garbage",
        ] {
            assert_eq!(parse_addr_string(bad), Err(Error::InvalidArg), "{bad:?}");
        }
    }

    #[test]
    fn mem_handles_round_trip_and_garbage_is_fault() {
        let mut out = Vec::new();
        encode_mem(
            Access::READWRITE,
            7,
            &[(0x1000, 64), (0x5000, 0), (0x9000, 32)],
            &mut out,
        );
        assert_eq!(out.len(), MEM_INFO_SIZE + 3 * MEM_IOV_SIZE);
        let r = decode_mem(&out, false).unwrap();
        assert_eq!(r.len(), 96);
        assert_eq!(r.access, Access::READWRITE);
        // Keys count non-empty segments only; without VIRT_ADDR each segment is addressed from 0.
        let keys: Vec<u64> = r.segments.iter().map(|s| s.key).collect();
        assert_eq!(keys, [7, 8, 8]);
        assert!(r.segments.iter().all(|s| s.base == 0));
        let v = decode_mem(&out, true).unwrap();
        let bases: Vec<u64> = v.segments.iter().map(|s| s.base).collect();
        assert_eq!(bases, [0x1000, 0x5000, 0x9000]);

        let fault = |b: &[u8]| assert_eq!(decode_mem(b, false), Err(Error::Fault), "{b:?}");
        fault(&out[..out.len() - 1]);
        fault(&out[..MEM_INFO_SIZE + MEM_IOV_SIZE]);
        fault(&[out.as_slice(), &[0u8; 16]].concat());
        fault(&[]);
        fault(&out[..28]);
        let mut b = out.clone();
        b[24] = 0; // no access
        fault(&b);
        let mut b = out.clone();
        b[24] = 4; // unknown access bit
        fault(&b);
        let mut b = out.clone();
        b[16..24].fill(0); // zero segments
        fault(&b);
        let mut b = out.clone();
        b[16..24].copy_from_slice(&u64::MAX.to_ne_bytes()); // count * 16 would overflow
        fault(&b);
        let mut b = out.clone();
        b[8..16].copy_from_slice(&95u64.to_ne_bytes()); // total != sum of segments
        fault(&b);
        let mut wrap = Vec::new();
        encode_mem(Access::READ, 1, &[(u64::MAX, 2)], &mut wrap);
        fault(&wrap);
        let mut big = Vec::new();
        encode_mem(Access::READ, 1, &[(0, u64::MAX), (0, 2)], &mut big);
        fault(&big);
        let mut keywrap = Vec::new();
        encode_mem(
            Access::READ,
            u64::MAX,
            &[(0x10, 1), (0x20, 1)],
            &mut keywrap,
        );
        fault(&keywrap);
    }

    /// One segment of 4096 bytes at 0x7f00_1234_5000, key 3, read-only, as Mercury 2.4's
    /// `na_ofi_mem_handle_serialize` lays it out on x86-64 (`struct na_ofi_mem_desc_info` then
    /// one `struct iovec`). Written by hand from the struct definitions.
    #[cfg(target_endian = "little")]
    #[test]
    fn mem_handle_golden_bytes() {
        #[rustfmt::skip]
        let golden: [u8; 48] = [
            // @0  fi_mr_key  u64 = 3
            0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            // @8  len        u64 = 4096 (sum of the segments)
            0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            // @16 iovcnt     u64 = 1
            0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            // @24 flags      u8  = NA_MEM_READ_ONLY (0x01); @25..@32 struct padding
            0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            // @32 iov[0].iov_base = 0x7f00_1234_5000
            0x00, 0x50, 0x34, 0x12, 0x00, 0x7f, 0x00, 0x00,
            // @40 iov[0].iov_len  = 4096
            0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        let mut out = Vec::new();
        encode_mem(Access::READ_ONLY, 3, &[(0x7f00_1234_5000, 4096)], &mut out);
        assert_eq!(out, golden);
        let r = decode_mem(&golden, true).unwrap();
        assert_eq!(r.access, Access::READ_ONLY);
        assert_eq!(r.segments.len(), 1);
        assert_eq!(
            (r.segments[0].base, r.segments[0].len, r.segments[0].key),
            (0x7f00_1234_5000, 4096, 3)
        );
        // Padding is not checked (Mercury copies whatever its struct held).
        let mut padded = golden;
        padded[30] = 0xaa;
        assert!(decode_mem(&padded, false).is_ok());
    }

    proptest::proptest! {
        /// Any bytes: a handle or `Fault`, never a panic; whatever decodes re-encodes to itself.
        #[test]
        fn mem_handle_decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            if let Ok(r) = decode_mem(&bytes, true) {
                let iov: Vec<(u64, u64)> = r.segments.iter().map(|s| (s.base, s.len)).collect();
                let mut again = Vec::new();
                encode_mem(r.access, r.segments[0].key, &iov, &mut again);
                proptest::prop_assert_eq!(&again[..25], &bytes[..25]);
                proptest::prop_assert_eq!(&again[32..], &bytes[32..]);
            }
        }

        /// Valid handles round-trip: lengths, access, keys counting non-empty segments.
        #[test]
        fn mem_handle_round_trip(
            access in 1u8..4,
            key in 0u64..u64::MAX / 2,
            iov in proptest::collection::vec((0u64..1 << 47, 0u64..1 << 20), 1..20),
        ) {
            let access = Access::from_bits(access).unwrap();
            let mut out = Vec::new();
            encode_mem(access, key, &iov, &mut out);
            proptest::prop_assert_eq!(out.len(), MEM_INFO_SIZE + MEM_IOV_SIZE * iov.len());
            let r = decode_mem(&out, false).unwrap();
            proptest::prop_assert_eq!(r.access, access);
            let mut k = key;
            for (s, (_, len)) in r.segments.iter().zip(&iov) {
                proptest::prop_assert_eq!((s.base, s.len, s.key), (0, *len, k));
                if *len > 0 {
                    k += 1;
                }
            }
        }
    }

    /// A finished operation and its completion move through a vector on every message: at 128
    /// bytes or less the moves are inline, above it each is a `memcpy` call (x86-64).
    #[test]
    fn finished_operations_move_inline() {
        assert!(std::mem::size_of::<crate::sys::ofi::Done>() <= 128);
        assert!(std::mem::size_of::<crate::op::Completion>() <= 128);
    }

    #[test]
    fn errno_mapping() {
        assert_eq!(map_fi_errno(libc::ECONNREFUSED), Error::HostUnreach);
        assert_eq!(map_fi_errno(libc::ECANCELED), Error::Canceled);
        assert_eq!(map_fi_errno(265), Error::Overflow);
        assert_eq!(map_fi_errno(266), Error::Access);
        assert_eq!(map_fi_errno(9999), Error::IoError);
    }

    #[test]
    fn protocols() {
        assert!(check_protocol("tcp"));
        assert!(check_protocol("tcp;ofi_rxm"));
        assert!(check_protocol("verbs;ofi_rxm"));
        assert!(!check_protocol("inproc"));
        assert!(!check_protocol("sm"));
        assert!(check_protocol("net"));
        assert!(!check_protocol("net;ofi_rxm"));
    }

    #[test]
    fn provider_names_follow_the_library_version() {
        let v = |major: u32, minor: u32| major << 16 | minor;
        // "tcp" stays on rxm whatever the version (Mercury's peers on 1.17 speak rxm).
        for lib in [v(1, 17), v(1, 18), v(1, 22), v(2, 0)] {
            assert_eq!(
                fi_provider_name(provider_for("tcp").unwrap(), lib),
                "tcp;ofi_rxm"
            );
            assert_eq!(
                fi_provider_name(provider_for("verbs").unwrap(), lib),
                "verbs;ofi_rxm"
            );
        }
        // XNET: "net" up to 1.17, "tcp" (the native RDM provider) from 1.18.
        let x = provider_for("net").unwrap();
        assert_eq!(fi_provider_name(x, v(1, 16)), "net");
        assert_eq!(fi_provider_name(x, v(1, 17)), "net");
        assert_eq!(fi_provider_name(x, v(1, 18)), "tcp");
        assert_eq!(fi_provider_name(x, v(2, 1)), "tcp");
    }
}
