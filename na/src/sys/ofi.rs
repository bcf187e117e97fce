//! libfabric through the C shim (`shim.c`): fabric, endpoints, posted operations, CQ reads, MRs.
//!
//! This is the one place the ofi plugin touches raw pointers. Its API is safe: an operation is
//! handed over as an owned [`Op`] (whose message buffer or memory handle owns the bytes the
//! transport touches) and comes back, exactly once, as a [`Done`] from [`Endpoint::progress`],
//! [`Endpoint::cancel`] or [`Endpoint::close`]. Until then it sits in a heap slot whose address is
//! the libfabric `op_context`.

use crate::op::{Op, OpId, Request};
use crate::sync::{lock, Mutex};
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Positive libfabric error numbers we name (`FI_E*`: errno values below 256, own ones above).
pub mod errno {
    /// `FI_EAGAIN`.
    pub const EAGAIN: i32 = libc::EAGAIN;
    /// `FI_EINVAL`.
    pub const EINVAL: i32 = libc::EINVAL;
    /// `FI_ECANCELED`.
    pub const ECANCELED: i32 = libc::ECANCELED;
    /// `FI_ENODATA`: no provider matched the hints.
    pub const ENODATA: i32 = libc::ENODATA;
    /// `FI_EAVAIL`: an error completion is waiting.
    pub const EAVAIL: i32 = 259;
}

/// libfabric flag bits we use.
pub mod flags {
    /// `FI_READ`.
    pub const READ: u64 = 1 << 8;
    /// `FI_WRITE`.
    pub const WRITE: u64 = 1 << 9;
    /// `FI_REMOTE_READ`.
    pub const REMOTE_READ: u64 = 1 << 12;
    /// `FI_REMOTE_WRITE`.
    pub const REMOTE_WRITE: u64 = 1 << 13;
    /// `FI_MR_VIRT_ADDR`.
    pub const MR_VIRT_ADDR: u64 = 1 << 4;
    /// `FI_MR_ALLOCATED`.
    pub const MR_ALLOCATED: u64 = 1 << 5;
    /// `FI_MR_PROV_KEY`.
    pub const MR_PROV_KEY: u64 = 1 << 6;
    /// `FI_MR_LOCAL`.
    pub const MR_LOCAL: u64 = 1 << 2;
    /// `FI_MR_ENDPOINT`.
    pub const MR_ENDPOINT: u64 = 1 << 9;
}

#[repr(C)]
struct FiInfo {
    _opaque: [u8; 0],
}
#[repr(C)]
struct Fid {
    _opaque: [u8; 0],
}

/// `struct fi_cq_tagged_entry`.
#[repr(C)]
#[derive(Clone, Copy)]
struct CqEntry {
    op_context: *mut c_void,
    flags: u64,
    len: usize,
    buf: *mut c_void,
    data: u64,
    tag: u64,
}

/// The shim's flattened `fi_cq_err_entry`.
#[repr(C)]
#[derive(Clone, Copy)]
struct CqErr {
    op_context: *mut c_void,
    flags: u64,
    len: usize,
    data: u64,
    tag: u64,
    olen: usize,
    err: i32,
    prov_errno: i32,
}

extern "C" {
    fn na_ofi_api_version() -> u32;
    fn na_ofi_lib_version() -> u32;
    fn na_ofi_strerror(err: c_int) -> *const c_char;
    fn na_ofi_getinfo(
        prov: *const c_char,
        node: *const c_char,
        service: *const c_char,
        mr_mode: u64,
        serialized: c_int,
        inject_size: usize,
        out: *mut *mut FiInfo,
    ) -> c_int;
    fn na_ofi_freeinfo(info: *mut FiInfo);
    fn na_ofi_info_prov_name(info: *const FiInfo) -> *const c_char;
    fn na_ofi_info_domain_name(info: *const FiInfo) -> *const c_char;
    fn na_ofi_info_mr_mode(info: *const FiInfo) -> u64;
    fn na_ofi_info_cq_data_size(info: *const FiInfo) -> usize;
    fn na_ofi_info_max_msg_size(info: *const FiInfo) -> usize;
    fn na_ofi_info_inject_size(info: *const FiInfo) -> usize;
    fn na_ofi_fabric_domain(
        info: *mut FiInfo,
        fabric: *mut *mut Fid,
        domain: *mut *mut Fid,
    ) -> c_int;
    fn na_ofi_close(fid: *mut Fid) -> c_int;
    fn na_ofi_ep_open(
        domain: *mut Fid,
        info: *const FiInfo,
        port: u16,
        want_fd: c_int,
        ep: *mut *mut Fid,
        cq: *mut *mut Fid,
        av: *mut *mut Fid,
        wait_fd: *mut c_int,
    ) -> c_int;
    fn na_ofi_getname(ep: *mut Fid, out16: *mut u8) -> c_int;
    fn na_ofi_av_insert(av: *mut Fid, addr16: *const u8, fi_addr: *mut u64) -> c_int;
    fn na_ofi_av_remove(av: *mut Fid, fi_addr: u64) -> c_int;
    fn na_ofi_senddata(
        ep: *mut Fid,
        buf: *const u8,
        len: usize,
        data: u64,
        dest: u64,
        ctx: *mut c_void,
    ) -> isize;
    fn na_ofi_recv(ep: *mut Fid, buf: *mut u8, len: usize, ctx: *mut c_void) -> isize;
    fn na_ofi_injectdata(ep: *mut Fid, buf: *const u8, len: usize, data: u64, dest: u64) -> isize;
    fn na_ofi_tinject(ep: *mut Fid, buf: *const u8, len: usize, dest: u64, tag: u64) -> isize;
    fn na_ofi_tsend(
        ep: *mut Fid,
        buf: *const u8,
        len: usize,
        dest: u64,
        tag: u64,
        ctx: *mut c_void,
    ) -> isize;
    fn na_ofi_trecv(
        ep: *mut Fid,
        buf: *mut u8,
        len: usize,
        src: u64,
        tag: u64,
        ctx: *mut c_void,
    ) -> isize;
    fn na_ofi_tpeek_discard(ep: *mut Fid, src: u64, tag: u64, ctx: *mut c_void) -> isize;
    fn na_ofi_tpeek_head(ep: *mut Fid, src: u64, ctx: *mut c_void) -> isize;
    fn na_ofi_read(
        ep: *mut Fid,
        buf: *mut u8,
        len: usize,
        desc: *mut c_void,
        src: u64,
        addr: u64,
        key: u64,
        ctx: *mut c_void,
    ) -> isize;
    fn na_ofi_write(
        ep: *mut Fid,
        buf: *const u8,
        len: usize,
        desc: *mut c_void,
        dest: u64,
        addr: u64,
        key: u64,
        ctx: *mut c_void,
    ) -> isize;
    fn na_ofi_cq_read(cq: *mut Fid, buf: *mut CqEntry, count: usize) -> isize;
    fn na_ofi_cq_readerr(cq: *mut Fid, out: *mut CqErr) -> isize;
    fn na_ofi_cancel(ep: *mut Fid, ctx: *mut c_void) -> c_int;
    fn na_ofi_trywait(fabric: *mut Fid, cq: *mut Fid) -> c_int;
    fn na_ofi_mr_reg(
        domain: *mut Fid,
        buf: *const u8,
        len: usize,
        access: u64,
        requested_key: u64,
        mr: *mut *mut Fid,
        key: *mut u64,
        desc: *mut *mut c_void,
    ) -> c_int;
}

/// libfabric's text for a positive `FI_E*` number.
pub fn strerror(err: i32) -> String {
    // SAFETY: fi_strerror returns a pointer to a static NUL-terminated string for any value.
    let p = unsafe { na_ofi_strerror(err) };
    if p.is_null() {
        return format!("error {err}");
    }
    // SAFETY: non-null, NUL-terminated and static (see above).
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// (requested API version, library version), each as `major << 16 | minor`.
pub fn versions() -> (u32, u32) {
    // SAFETY: both take no argument and only return a number.
    unsafe { (na_ofi_api_version(), na_ofi_lib_version()) }
}

fn neg(rc: isize) -> i32 {
    (-rc).clamp(0, i32::MAX as isize) as i32
}

/// An opened fabric and domain over one `fi_info` (the class's half; shared by its endpoints).
///
/// Serialized (`ThreadMode::Serialized`, the default), the domain is opened `FI_THREAD_DOMAIN`
/// (as Mercury's tools open it, `NA_THREAD_MODE_SINGLE`): libfabric takes none of its own locks,
/// and this module serializes every call on the domain and on its endpoints, CQs, AVs and MRs
/// with one lock, [`Fabric::serial`]'s, held only around the call itself (never while blocked in
/// `poll`). That one uncontended lock costs less than the locks `FI_THREAD_SAFE` makes rxm and
/// tcp take on every call (about 700 instructions per RPC and side under callgrind,
/// docs/perf.md). Otherwise the domain is `FI_THREAD_SAFE` and there is no lock of ours.
pub struct Fabric {
    info: *mut FiInfo,
    fabric: *mut Fid,
    domain: *mut Fid,
    /// `Some` in `ThreadMode::Serialized` (FI_THREAD_DOMAIN), `None` in `Provider`.
    serial: Option<Mutex<()>>,
}

// SAFETY: every libfabric call on the domain or on a fid opened from it holds `serial`'s lock
// when the domain is FI_THREAD_DOMAIN (what that level asks of the application), and the
// provider serializes when it is FI_THREAD_SAFE; `info` is read-only after open and freed only
// in Drop.
unsafe impl Send for Fabric {}
// SAFETY: as above; every method takes &self and serializes its libfabric calls.
unsafe impl Sync for Fabric {}

impl Fabric {
    /// `fi_getinfo` + `fi_fabric` + `fi_domain` for provider `prov` (`"tcp;ofi_rxm"`), with the
    /// local address `node`:`service` when given, asking for `inject_size` bytes of inject
    /// (0: the provider's own; a size the provider refuses falls back to its own). Errors are
    /// positive `FI_E*` numbers.
    pub fn open(
        prov: &str,
        node: Option<&str>,
        service: Option<&str>,
        mr_mode: u64,
        serialized: bool,
        inject_size: usize,
    ) -> Result<Fabric, i32> {
        let cprov = CString::new(prov).map_err(|_| errno::EINVAL)?;
        let cnode = node
            .map(CString::new)
            .transpose()
            .map_err(|_| errno::EINVAL)?;
        let cserv = service
            .map(CString::new)
            .transpose()
            .map_err(|_| errno::EINVAL)?;
        let mut info = std::ptr::null_mut();
        let getinfo = |inject: usize, info: &mut *mut FiInfo| {
            // SAFETY: all strings are NUL-terminated and outlive the call; `info` is an out
            // pointer.
            unsafe {
                na_ofi_getinfo(
                    cprov.as_ptr(),
                    cnode.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
                    cserv.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
                    mr_mode,
                    c_int::from(serialized),
                    inject,
                    info,
                )
            }
        };
        let mut rc = getinfo(inject_size, &mut info);
        if rc == -errno::ENODATA && inject_size > 0 {
            // More inject than the provider offers (rxm: its bounce-buffer size): its own.
            tracing::debug!(
                inject_size,
                "na.ofi: inject size refused, using the provider's"
            );
            rc = getinfo(0, &mut info);
        }
        if rc != 0 {
            return Err(-rc);
        }
        let mut fabric = std::ptr::null_mut();
        let mut domain = std::ptr::null_mut();
        // SAFETY: `info` came from na_ofi_getinfo; the out pointers are valid.
        let rc = unsafe { na_ofi_fabric_domain(info, &mut fabric, &mut domain) };
        if rc != 0 {
            // SAFETY: `info` is ours and no longer used.
            unsafe { na_ofi_freeinfo(info) };
            return Err(-rc);
        }
        Ok(Fabric {
            info,
            fabric,
            domain,
            serial: serialized.then(|| Mutex::new(())),
        })
    }

    /// The lock every libfabric call on this domain and its fids holds (FI_THREAD_DOMAIN);
    /// none when the provider serializes (FI_THREAD_SAFE).
    fn serial(&self) -> Option<crate::sync::MutexGuard<'_, ()>> {
        self.serial.as_ref().map(lock)
    }

    fn info_str(&self, f: unsafe extern "C" fn(*const FiInfo) -> *const c_char) -> String {
        // SAFETY: `info` is valid until Drop; the accessor returns a pointer into it or null.
        let p = unsafe { f(self.info) };
        if p.is_null() {
            return String::new();
        }
        // SAFETY: non-null NUL-terminated string owned by `info`, copied at once.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    /// The provider opened (`"tcp;ofi_rxm"`).
    pub fn prov_name(&self) -> String {
        self.info_str(na_ofi_info_prov_name)
    }

    /// The domain (interface) opened (`"lo"`).
    pub fn domain_name(&self) -> String {
        self.info_str(na_ofi_info_domain_name)
    }

    /// The MR mode the provider answered.
    pub fn mr_mode(&self) -> u64 {
        // SAFETY: `info` is valid until Drop.
        unsafe { na_ofi_info_mr_mode(self.info) }
    }

    /// Bytes of remote CQ data the provider carries.
    pub fn cq_data_size(&self) -> usize {
        // SAFETY: `info` is valid until Drop.
        unsafe { na_ofi_info_cq_data_size(self.info) }
    }

    /// The largest message the provider injects (sends without a completion).
    pub fn inject_size(&self) -> usize {
        // SAFETY: `info` is valid until Drop.
        unsafe { na_ofi_info_inject_size(self.info) }
    }

    /// The provider's maximum message size.
    pub fn max_msg_size(&self) -> usize {
        // SAFETY: `info` is valid until Drop.
        unsafe { na_ofi_info_max_msg_size(self.info) }
    }

    /// `fi_mr_reg` of `len` bytes at `addr`. The caller keeps the memory alive until the returned
    /// [`Mr`] is dropped (na's `MemHandle` drops its plugin half only with its memory).
    pub fn mr_reg(
        self: &std::sync::Arc<Self>,
        addr: usize,
        len: usize,
        access: u64,
        key: u64,
    ) -> Result<Mr, i32> {
        let mut mr = std::ptr::null_mut();
        let mut out_key = 0u64;
        let mut desc = std::ptr::null_mut();
        let _serial = self.serial();
        // SAFETY: registering does not touch the bytes; the out pointers are valid; the domain
        // is serialized (FI_THREAD_DOMAIN).
        let rc = unsafe {
            na_ofi_mr_reg(
                self.domain,
                addr as *const u8,
                len,
                access,
                key,
                &mut mr,
                &mut out_key,
                &mut desc,
            )
        };
        if rc != 0 {
            return Err(-rc);
        }
        Ok(Mr {
            fabric: self.clone(),
            mr,
            key: out_key,
            desc: desc as usize,
        })
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        // SAFETY: endpoints hold an Arc<Fabric>, so none is open; each fid is closed once.
        unsafe {
            na_ofi_close(self.domain);
            na_ofi_close(self.fabric);
            na_ofi_freeinfo(self.info);
        }
    }
}

/// One memory registration (`fid_mr`); closed on drop.
pub struct Mr {
    /// Its domain: kept open while the registration lives, and its lock serializes the close.
    fabric: std::sync::Arc<Fabric>,
    mr: *mut Fid,
    /// The key peers use.
    pub key: u64,
    /// The local descriptor (`fi_mr_desc`), as an integer.
    pub desc: usize,
}

// SAFETY: the MR fid is closed under its domain's lock, from whichever thread drops it.
unsafe impl Send for Mr {}
// SAFETY: no method mutates through &self.
unsafe impl Sync for Mr {}

impl Drop for Mr {
    fn drop(&mut self) {
        let _serial = self.fabric.serial();
        // SAFETY: closed once, here, with the domain serialized.
        unsafe { na_ofi_close(self.mr) };
    }
}

/// `struct fi_context` followed by the slot it belongs to: what libfabric hands back.
#[repr(C)]
struct FiCtx {
    internal: [*mut c_void; 4],
    slot: *mut Slot,
}

impl FiCtx {
    fn new() -> FiCtx {
        FiCtx {
            internal: [std::ptr::null_mut(); 4],
            slot: std::ptr::null_mut(),
        }
    }
}

/// One piece of an RMA operation: contiguous on both sides.
#[derive(Clone, Copy, Debug)]
pub struct RmaPiece {
    /// Local address (inside the operation's `MemHandle`).
    pub local: usize,
    /// Bytes.
    pub len: usize,
    /// Local MR descriptor.
    pub desc: usize,
    /// Remote address (virtual address or offset, by MR mode).
    pub remote: u64,
    /// Remote key.
    pub key: u64,
}

/// How to post an operation.
#[derive(Debug)]
pub enum Post {
    /// `fi_senddata` of the first `len` bytes of the message buffer, `data` as CQ data.
    SendData {
        /// Bytes.
        len: usize,
        /// AV address.
        dest: u64,
        /// Remote CQ data (the tag).
        data: u64,
    },
    /// `fi_recv` into the whole buffer from anyone.
    Recv,
    /// `fi_tsend`.
    TSend {
        /// Bytes.
        len: usize,
        /// AV address.
        dest: u64,
        /// Tag.
        tag: u64,
    },
    /// `fi_trecv` from `src` (directed), exact tag.
    TRecv {
        /// AV address.
        src: u64,
        /// Tag.
        tag: u64,
    },
    /// `fi_trecvmsg` with `FI_PEEK | FI_DISCARD`: drops the message from `src` with `tag` if
    /// the provider holds one that met no receive. Completes with success (one was dropped) or
    /// the error `FI_ENOMSG` (none there); it takes no buffer and leaves nothing posted.
    TPeek {
        /// AV address.
        src: u64,
        /// Tag.
        tag: u64,
    },
    /// `fi_trecvmsg` with `FI_PEEK` and every tag bit ignored: reports the tagged message at the
    /// head of `src`'s connection without taking it. Completes with success, the message's tag in
    /// [`Done::data`], or the error `FI_ENOMSG` (none waiting); no buffer, nothing left posted.
    TPeekHead {
        /// AV address.
        src: u64,
    },
    /// `fi_write` (`write`) or `fi_read` of each piece.
    Rma {
        /// Put when true, get when false.
        write: bool,
        /// AV address.
        dest: u64,
        /// Pieces (one unless a region has several segments: inline, no allocation).
        pieces: SmallVec<[RmaPiece; 1]>,
    },
}

impl Post {
    fn is_receive(&self) -> bool {
        matches!(
            self,
            Post::Recv | Post::TRecv { .. } | Post::TPeek { .. } | Post::TPeekHead { .. }
        )
    }
}

struct Slot {
    ctx: FiCtx,
    /// Its index in `EpState::inflight` while there.
    at: usize,
    op: Option<Op>,
    post: Post,
    piece_ctx: Vec<FiCtx>,
    next_piece: usize,
    outstanding: usize,
    stopped: bool,
    err: i32,
    // Scratch of a completion: bytes received / data / tag.
    len: usize,
    data: u64,
    tag: u64,
    olen: usize,
    prov_errno: i32,
}

impl Slot {
    fn pieces(&self) -> usize {
        match &self.post {
            Post::Rma { pieces, .. } => pieces.len(),
            _ => 1,
        }
    }
    fn finished(&self) -> bool {
        self.outstanding == 0 && (self.stopped || self.next_piece == self.pieces())
    }
}

/// A finished operation as libfabric reported it.
#[derive(Debug)]
pub struct Done {
    /// The operation, handed back.
    pub op: Op,
    /// 0, or the positive `FI_E*` number of the error completion.
    pub err: i32,
    /// Provider-specific error number (diagnostics).
    pub prov_errno: i32,
    /// Bytes received (receives).
    pub len: usize,
    /// Remote CQ data (unexpected receives: the tag, which is 32 bits in NA; libfabric's upper
    /// 32 bits are dropped); for a [`Post::TPeekHead`], the tag of the message it saw.
    pub data: u32,
    /// Bytes that did not fit (truncation errors), saturated at `u32::MAX`.
    pub olen: u32,
}

struct EpState {
    /// Every slot handed to libfabric or waiting for queue space, each knowing its index (`at`):
    /// adding and removing cost no hashing; only cancel and close, rare, search it.
    inflight: Vec<*mut Slot>,
    /// Posts that met `FI_EAGAIN`, in order, per queue: [transmit, receive]. Separate, because the
    /// two queues have separate credits: a receive waiting for room must not hold back the sends
    /// whose replies would free it.
    retry: [VecDeque<*mut Slot>; 2],
    // Boxed on purpose: a slot's address is its libfabric context, so slots never move.
    #[allow(clippy::vec_box)]
    free: Vec<Box<Slot>>,
    closed: bool,
}

impl EpState {
    /// Records a live slot as in flight.
    fn track(&mut self, raw: *mut Slot) {
        // SAFETY: callers pass a live slot they own under the state lock.
        unsafe { (*raw).at = self.inflight.len() };
        self.inflight.push(raw);
    }

    /// Forgets a tracked slot (the last one moves into its place).
    fn untrack(&mut self, raw: *mut Slot) {
        // SAFETY: callers pass a live slot under the state lock.
        let i = unsafe { (*raw).at };
        if self.inflight.get(i) != Some(&raw) {
            // Never tracked (finished before being recorded).
            return;
        }
        self.inflight.swap_remove(i);
        if let Some(&moved) = self.inflight.get(i) {
            // SAFETY: tracked slots are live; we hold the state lock.
            unsafe { (*moved).at = i };
        }
    }

    /// The tracked slot of operation `id`.
    fn find(&self, id: OpId) -> Option<*mut Slot> {
        self.inflight
            .iter()
            .copied()
            // SAFETY: tracked slots are live and only read under the lock.
            .find(|&r| unsafe { (*r).op.as_ref() }.is_some_and(|o| o.id == id))
    }
}

/// One RDM endpoint with its CQ, AV, wait fd and wake eventfd.
pub struct Endpoint {
    fabric: std::sync::Arc<Fabric>,
    ep: *mut Fid,
    cq: *mut Fid,
    av: *mut Fid,
    wait_fd: Option<RawFd>,
    wake_fd: Option<OwnedFd>,
    waiting: std::sync::atomic::AtomicBool,
    /// Mirrors "some retry queue is non-empty", so progress skips the lock when none is.
    retrying: std::sync::atomic::AtomicBool,
    state: Mutex<EpState>,
}

// SAFETY: every libfabric call on the fids holds the domain's `serial` lock when it is
// FI_THREAD_DOMAIN, and the provider serializes when it is FI_THREAD_SAFE; slot pointers are only dereferenced under `state`'s lock or after being removed from it by the
// one thread that then owns the slot.
unsafe impl Send for Endpoint {}
// SAFETY: as above.
unsafe impl Sync for Endpoint {}

const BATCH: usize = 16;

impl Endpoint {
    /// Opens an endpoint on `port` (0: ephemeral) with a CQ (with a wait fd when `want_fd` and the
    /// provider offers one) and an AV.
    pub fn open(fabric: std::sync::Arc<Fabric>, port: u16, want_fd: bool) -> Result<Endpoint, i32> {
        let (mut ep, mut cq, mut av) = (
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
        let mut fd: c_int = -1;
        let serial = fabric.serial();
        // SAFETY: domain and info are valid while `fabric` lives; out pointers are valid; the
        // domain is serialized.
        let rc = unsafe {
            na_ofi_ep_open(
                fabric.domain,
                fabric.info,
                port,
                c_int::from(want_fd),
                &mut ep,
                &mut cq,
                &mut av,
                &mut fd,
            )
        };
        drop(serial);
        if rc != 0 {
            return Err(-rc);
        }
        // SAFETY: plain syscall; the fd is owned below.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        let wake_fd = (efd >= 0).then(|| {
            // SAFETY: `efd` is a fresh descriptor nobody else owns.
            unsafe { OwnedFd::from_raw_fd(efd) }
        });
        Ok(Endpoint {
            fabric,
            ep,
            cq,
            av,
            wait_fd: (fd >= 0).then_some(fd),
            wake_fd,
            waiting: std::sync::atomic::AtomicBool::new(false),
            retrying: std::sync::atomic::AtomicBool::new(false),
            state: Mutex::new(EpState {
                inflight: Vec::new(),
                retry: [VecDeque::new(), VecDeque::new()],
                free: Vec::new(),
                closed: false,
            }),
        })
    }

    /// `fi_getname`: the endpoint's 16-byte `sockaddr_in`.
    pub fn name(&self) -> Result<[u8; 16], i32> {
        let mut out = [0u8; 16];
        let _serial = self.fabric.serial();
        // SAFETY: `ep` is open; `out` has 16 bytes; the domain is serialized.
        let rc = unsafe { na_ofi_getname(self.ep, out.as_mut_ptr()) };
        if rc != 0 {
            return Err(-rc);
        }
        Ok(out)
    }

    /// `fi_av_insert` of a 16-byte `sockaddr_in` the caller has validated.
    pub fn av_insert(&self, addr: &[u8; 16]) -> Result<u64, i32> {
        // Held across the call: a closed endpoint's AV is gone (a class may still reach a closed
        // context through `addr_set_remove` while a `Waker` keeps it alive).
        let st = lock(&self.state);
        if st.closed {
            return Err(errno::ECANCELED);
        }
        let mut out = 0u64;
        let _serial = self.fabric.serial();
        // SAFETY: `av` is open; `addr` is 16 readable bytes; `out` is valid; serialized.
        let rc = unsafe { na_ofi_av_insert(self.av, addr.as_ptr(), &mut out) };
        if rc != 0 {
            return Err(-rc);
        }
        Ok(out)
    }

    /// `fi_av_remove`.
    pub fn av_remove(&self, fi_addr: u64) -> Result<(), i32> {
        let st = lock(&self.state);
        if st.closed {
            return Err(errno::ECANCELED);
        }
        let _serial = self.fabric.serial();
        // SAFETY: `av` is open; removing an unknown address is an error return, not UB;
        // serialized.
        let rc = unsafe { na_ofi_av_remove(self.av, fi_addr) };
        if rc != 0 {
            return Err(-rc);
        }
        Ok(())
    }

    /// The CQ's wait fd, when the provider gave one.
    pub fn wait_fd(&self) -> Option<RawFd> {
        self.wait_fd
            .or_else(|| self.wake_fd.as_ref().map(|f| f.as_raw_fd()))
    }

    /// `fi_injectdata` (`tagged` false: an unexpected message, `bits` its immediate data) or
    /// `fi_tinject` (`tagged`: an expected message, `bits` its tag) of `msg` to `dest`: libfabric
    /// copies the bytes before returning and reports no completion, so nothing of the message
    /// stays with us. `Ok(false)`: not sent (no queue space, the connection still being made,
    /// sends waiting to be retried that it must not pass, or the endpoint closed); the caller
    /// posts it as a normal send instead. Errors are positive `FI_E*` numbers.
    pub fn inject(&self, msg: &[u8], dest: u64, tagged: bool, bits: u64) -> Result<bool, i32> {
        let st = lock(&self.state);
        if st.closed || !st.retry[0].is_empty() {
            return Ok(false);
        }
        let rc = {
            let _serial = self.fabric.serial();
            // SAFETY: `msg` is a live slice for the whole call and libfabric copies it before
            // returning (inject); the endpoint is open (checked under the state lock, which
            // close takes before closing it) and the domain serialized.
            unsafe {
                if tagged {
                    na_ofi_tinject(self.ep, msg.as_ptr(), msg.len(), dest, bits)
                } else {
                    na_ofi_injectdata(self.ep, msg.as_ptr(), msg.len(), bits, dest)
                }
            }
        };
        drop(st);
        match rc {
            0 => Ok(true),
            rc if neg(rc) == errno::EAGAIN => Ok(false),
            rc => Err(neg(rc)),
        }
    }

    /// Starts `op` as `post` says. `Err((op, err))` when it failed at once (nothing was
    /// posted); a full queue (`FI_EAGAIN`) is not an error: the operation is retried by progress.
    #[allow(clippy::result_large_err)] // the op goes back by value, on the cold path only
    pub fn post(&self, op: Op, post: Post) -> Result<(), (Op, i32)> {
        if let Err(e) = check(&op, &post) {
            return Err((op, e));
        }
        let mut st = lock(&self.state);
        if st.closed {
            return Err((op, errno::ECANCELED));
        }
        let mut slot = st.free.pop().unwrap_or_else(|| {
            Box::new(Slot {
                ctx: FiCtx::new(),
                at: 0,
                op: None,
                post: Post::Recv,
                piece_ctx: Vec::new(),
                next_piece: 0,
                outstanding: 0,
                stopped: false,
                err: 0,
                len: 0,
                data: 0,
                tag: 0,
                olen: 0,
                prov_errno: 0,
            })
        });
        slot.op = Some(op);
        slot.post = post;
        slot.next_piece = 0;
        slot.outstanding = 0;
        slot.stopped = false;
        slot.err = 0;
        slot.len = 0;
        slot.data = 0;
        slot.tag = 0;
        slot.olen = 0;
        slot.prov_errno = 0;
        slot.ctx = FiCtx::new();
        slot.piece_ctx.clear();
        if let Post::Rma { pieces, .. } = &slot.post {
            let n = pieces.len();
            slot.piece_ctx.reserve_exact(n);
            for _ in 0..n {
                slot.piece_ctx.push(FiCtx::new());
            }
        }
        let raw = Box::into_raw(slot);
        // SAFETY: `raw` is a fresh, uniquely owned heap slot; setting back-pointers in place.
        unsafe {
            (*raw).ctx.slot = raw;
            for c in (*raw).piece_ctx.iter_mut() {
                c.slot = raw;
            }
        }
        // SAFETY: `raw` is valid and exclusively ours under the lock.
        let q = usize::from(unsafe { (*raw).post.is_receive() });
        if !st.retry[q].is_empty() {
            // Keep posting order behind operations waiting for queue space.
            st.track(raw);
            st.retry[q].push_back(raw);
            self.sync_retrying(&st);
            return Ok(());
        }
        // SAFETY: `raw` is valid and exclusively ours under the lock.
        let rc = unsafe { self.issue(raw) };
        match rc {
            Ok(()) => {
                st.track(raw);
                Ok(())
            }
            Err(errno::EAGAIN) => {
                st.track(raw);
                st.retry[q].push_back(raw);
                self.sync_retrying(&st);
                Ok(())
            }
            Err(e) => {
                // SAFETY: nothing of this slot reached libfabric (first piece failed) or the
                // pieces that did are accounted in `outstanding`.
                let s = unsafe { &mut *raw };
                if s.outstanding > 0 {
                    s.stopped = true;
                    s.err = e;
                    st.track(raw);
                    return Ok(());
                }
                // SAFETY: `raw` came from Box::into_raw and nothing else refers to it.
                let mut b = unsafe { Box::from_raw(raw) };
                let op = b.op.take().expect("slot holds its op");
                st.free.push(b);
                Err((op, e))
            }
        }
    }

    /// Posts what is left of the slot's operation. Ok when all pieces are posted.
    ///
    /// # Safety
    /// `raw` is a live slot the caller has exclusive access to (under the state lock).
    #[inline(always)]
    unsafe fn issue(&self, raw: *mut Slot) -> Result<(), i32> {
        // Every branch below calls libfabric: the domain is serialized for all of them.
        let _serial = self.fabric.serial();
        // SAFETY: per the contract.
        let s = unsafe { &mut *raw };
        let op = s.op.as_mut().expect("slot holds its op");
        let ctx = (&mut s.ctx as *mut FiCtx).cast::<c_void>();
        let rc = match (&s.post, &mut op.req) {
            (Post::SendData { len, dest, data }, Request::SendUnexpected { buf, .. }) => {
                // SAFETY: `buf` is owned by the op in this slot until its completion; `len` was
                // checked against its capacity; `ctx` lives in the slot.
                unsafe { na_ofi_senddata(self.ep, buf.as_mut_ptr(), *len, *data, *dest, ctx) }
            }
            (Post::Recv, Request::RecvUnexpected { buf }) => {
                let cap = buf.capacity();
                // SAFETY: as above; the receive may write `cap` bytes of the owned buffer.
                unsafe { na_ofi_recv(self.ep, buf.as_mut_ptr(), cap, ctx) }
            }
            (Post::TSend { len, dest, tag }, Request::SendExpected { buf, .. }) => {
                // SAFETY: as for SendData.
                unsafe { na_ofi_tsend(self.ep, buf.as_mut_ptr(), *len, *dest, *tag, ctx) }
            }
            (Post::TRecv { src, tag }, Request::RecvExpected { buf, .. }) => {
                let cap = buf.capacity();
                // SAFETY: as for Recv.
                unsafe { na_ofi_trecv(self.ep, buf.as_mut_ptr(), cap, *src, *tag, ctx) }
            }
            (Post::TPeek { src, tag }, Request::RecvExpected { .. }) => {
                // SAFETY: no buffer is given; `ctx` lives in the slot until the completion.
                unsafe { na_ofi_tpeek_discard(self.ep, *src, *tag, ctx) }
            }
            (Post::TPeekHead { src }, Request::RecvExpected { .. }) => {
                // SAFETY: no buffer is given; `ctx` lives in the slot until the completion.
                unsafe { na_ofi_tpeek_head(self.ep, *src, ctx) }
            }
            (
                Post::Rma {
                    write,
                    dest,
                    pieces,
                },
                _,
            ) => {
                while s.next_piece < pieces.len() {
                    let p = pieces[s.next_piece];
                    let pctx = (&mut s.piece_ctx[s.next_piece] as *mut FiCtx).cast::<c_void>();
                    // SAFETY: `check` verified the local range lies inside the op's MemHandle,
                    // which the op keeps alive; `desc` is that handle's MR descriptor.
                    let rc = unsafe {
                        if *write {
                            na_ofi_write(
                                self.ep,
                                p.local as *const u8,
                                p.len,
                                p.desc as *mut c_void,
                                *dest,
                                p.remote,
                                p.key,
                                pctx,
                            )
                        } else {
                            na_ofi_read(
                                self.ep,
                                p.local as *mut u8,
                                p.len,
                                p.desc as *mut c_void,
                                *dest,
                                p.remote,
                                p.key,
                                pctx,
                            )
                        }
                    };
                    if rc != 0 {
                        return Err(neg(rc));
                    }
                    s.next_piece += 1;
                    s.outstanding += 1;
                }
                return Ok(());
            }
            _ => return Err(errno::EINVAL),
        };
        if rc != 0 {
            return Err(neg(rc));
        }
        s.next_piece = 1;
        s.outstanding = 1;
        Ok(())
    }

    /// Reads the CQ in batches of 16, retries queued posts, and appends finished operations to
    /// `out`. Returns how many were appended.
    pub fn progress(&self, out: &mut Vec<Done>) -> usize {
        let start = out.len();
        // Left uninitialized (zeroing 16 entries cost more than the read of an empty CQ):
        // libfabric fills the first `n` it returns, and only those are read.
        let mut entries = std::mem::MaybeUninit::<[CqEntry; BATCH]>::uninit();
        let base = entries.as_mut_ptr().cast::<CqEntry>();
        loop {
            let serial = self.fabric.serial();
            // SAFETY: `cq` is open; `base` has room for BATCH entries; serialized.
            let n = unsafe { na_ofi_cq_read(self.cq, base, BATCH) };
            drop(serial);
            if n > 0 {
                let n = (n as usize).min(BATCH);
                // SAFETY: fi_cq_read wrote `n` (<= BATCH) whole entries from `base`.
                let read = unsafe { std::slice::from_raw_parts(base, n) };
                let mut st = lock(&self.state);
                for e in read {
                    // SAFETY: every op_context we post is a FiCtx inside a live slot.
                    unsafe {
                        self.piece_done(&mut st, e.op_context, 0, e.len, e.data, e.tag, 0, 0, out)
                    };
                }
                if n == BATCH {
                    continue;
                }
            } else if n == -(errno::EAVAIL as isize) {
                if self.read_error(out) {
                    continue;
                }
            } else if n < 0 && n != -(errno::EAGAIN as isize) {
                tracing::warn!(err = %strerror(neg(n)), "na.ofi: fi_cq_read failed");
            }
            break;
        }
        if self.retrying.load(std::sync::atomic::Ordering::Acquire) {
            self.retry_posts(out);
        }
        out.len() - start
    }

    /// Reads one error completion and accounts it (into `out` when its operation finished).
    /// Returns whether there was one. Out of line: errors are rare.
    #[cold]
    #[inline(never)]
    fn read_error(&self, out: &mut Vec<Done>) -> bool {
        let mut err = CqErr {
            op_context: std::ptr::null_mut(),
            flags: 0,
            len: 0,
            data: 0,
            tag: 0,
            olen: 0,
            err: 0,
            prov_errno: 0,
        };
        let serial = self.fabric.serial();
        // SAFETY: `cq` is open; `err` is a valid out struct; serialized.
        let rc = unsafe { na_ofi_cq_readerr(self.cq, &mut err) };
        drop(serial);
        if rc > 0 && !err.op_context.is_null() {
            let mut st = lock(&self.state);
            let code = if err.err == 0 {
                libc::EIO
            } else {
                err.err.abs()
            };
            // SAFETY: every op_context we post is a FiCtx inside a live slot.
            unsafe {
                self.piece_done(
                    &mut st,
                    err.op_context,
                    code,
                    err.len,
                    err.data,
                    err.tag,
                    err.olen,
                    err.prov_errno,
                    out,
                )
            };
            return true;
        } else if rc > 0 {
            tracing::warn!(err = err.err, "na.ofi: error completion without a context");
            return true;
        }
        false
    }

    fn retry_posts(&self, out: &mut Vec<Done>) {
        let mut st = lock(&self.state);
        self.sync_retrying(&st);
        for q in 0..2 {
            while let Some(&raw) = st.retry[q].front() {
                // SAFETY: slots in `retry` are live and only touched under the lock.
                match unsafe { self.issue(raw) } {
                    Ok(()) => {
                        st.retry[q].pop_front();
                    }
                    Err(errno::EAGAIN) => break,
                    Err(e) => {
                        st.retry[q].pop_front();
                        // SAFETY: live slot, under the lock.
                        let s = unsafe { &mut *raw };
                        s.stopped = true;
                        s.err = e;
                        if s.finished() {
                            // SAFETY: finished slots are removed and owned here.
                            unsafe { self.finish(&mut st, raw, out) };
                        }
                    }
                }
            }
        }
        self.sync_retrying(&st);
    }

    /// Publishes whether any post waits for queue space (read without the lock by progress).
    fn sync_retrying(&self, st: &EpState) {
        let any = st.retry.iter().any(|q| !q.is_empty());
        self.retrying
            .store(any, std::sync::atomic::Ordering::Release);
    }

    /// Accounts one libfabric completion of a slot's piece.
    ///
    /// # Safety
    /// `ctx` is an op_context this endpoint posted (a `FiCtx` inside a live slot).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn piece_done(
        &self,
        st: &mut EpState,
        ctx: *mut c_void,
        err: i32,
        len: usize,
        data: u64,
        tag: u64,
        olen: usize,
        prov_errno: i32,
        out: &mut Vec<Done>,
    ) {
        // SAFETY: per the contract, `ctx` points at a FiCtx whose `slot` is live.
        let raw = unsafe { (*ctx.cast::<FiCtx>()).slot };
        // SAFETY: live slot, under the lock.
        let s = unsafe { &mut *raw };
        s.outstanding = s.outstanding.saturating_sub(1);
        if err != 0 && s.err == 0 {
            s.err = err;
            s.olen = olen;
            s.prov_errno = prov_errno;
            s.stopped = true;
        }
        s.len = s.len.max(len);
        s.data = data;
        s.tag = tag;
        if s.finished() {
            // SAFETY: finished: libfabric holds no more reference to it.
            unsafe { self.finish(st, raw, out) };
        }
    }

    /// Takes a finished slot out of the tables, recycles it and reports its operation.
    ///
    /// # Safety
    /// `raw` is a live slot libfabric no longer refers to.
    #[inline(always)]
    unsafe fn finish(&self, st: &mut EpState, raw: *mut Slot, out: &mut Vec<Done>) {
        // SAFETY: per the contract; ownership returns to this Box.
        let mut b = unsafe { Box::from_raw(raw) };
        let op = b.op.take().expect("slot holds its op");
        st.untrack(raw);
        // Almost always both empty: no scan then.
        for q in st.retry.iter_mut().filter(|q| !q.is_empty()) {
            if let Some(pos) = q.iter().position(|&p| p == raw) {
                q.remove(pos);
            }
        }
        out.push(Done {
            op,
            err: b.err,
            prov_errno: b.prov_errno,
            len: b.len,
            // Narrowed so that a `Done` fits in 128 bytes and moves without a `memcpy` call. A
            // head peek reports the tag it saw here (NA tags are 32 bits).
            data: if let Post::TPeekHead { .. } = b.post {
                b.tag as u32
            } else {
                b.data as u32
            },
            olen: u32::try_from(b.olen).unwrap_or(u32::MAX),
        });
        if let Post::Rma { .. } = b.post {
            b.post = Post::Recv;
        }
        if st.free.len() < 1024 {
            st.free.push(b);
        }
    }

    /// `fi_cancel`. An operation still waiting for queue space completes `ECANCELED` at once
    /// (into `out`); a posted one completes through the CQ with `ECANCELED` if it had no effect.
    pub fn cancel(&self, id: OpId, out: &mut Vec<Done>) {
        let mut st = lock(&self.state);
        let Some(raw) = st.find(id) else {
            return;
        };
        // SAFETY: live slot, under the lock.
        let s = unsafe { &mut *raw };
        if s.outstanding == 0 {
            s.stopped = true;
            if s.err == 0 {
                s.err = errno::ECANCELED;
            }
            // SAFETY: nothing posted: libfabric holds no reference.
            unsafe { self.finish(&mut st, raw, out) };
            return;
        }
        s.stopped = true;
        let ctxs: Vec<*mut c_void> = if s.piece_ctx.is_empty() {
            vec![(&mut s.ctx as *mut FiCtx).cast()]
        } else {
            s.piece_ctx
                .iter_mut()
                .map(|c| (c as *mut FiCtx).cast())
                .collect()
        };
        let _serial = self.fabric.serial();
        for c in ctxs {
            // SAFETY: `ep` is open; `c` is a context of this endpoint (fi_cancel of a finished
            // piece is a harmless not-found); serialized.
            unsafe { na_ofi_cancel(self.ep, c) };
        }
    }

    /// Blocks until the CQ or the wake fd is readable, or `timeout` passes. Returns early when
    /// `fi_trywait` says completions are pending.
    pub fn wait(&self, timeout: Duration) {
        use std::sync::atomic::Ordering;
        let Some(wake) = self.wake_fd.as_ref() else {
            std::thread::sleep(timeout.min(Duration::from_millis(1)));
            return;
        };
        self.waiting.store(true, Ordering::SeqCst);
        let mut fds = [
            libc::pollfd {
                fd: wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.wait_fd.unwrap_or(-1),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let nfds = if self.wait_fd.is_some() {
            let serial = self.fabric.serial();
            // SAFETY: fabric and cq are open; serialized (the poll below is not).
            let rc = unsafe { na_ofi_trywait(self.fabric.fabric, self.cq) };
            drop(serial);
            if rc != 0 {
                self.waiting.store(false, Ordering::SeqCst);
                return;
            }
            2
        } else {
            1
        };
        // Without a CQ fd, poll only the wake fd in short slices so completions are still seen.
        let slice = if nfds == 2 {
            timeout
        } else {
            timeout.min(Duration::from_millis(1))
        };
        let ms = slice.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: `fds` holds `nfds` valid pollfd entries.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), nfds, ms) };
        self.waiting.store(false, Ordering::SeqCst);
        if rc > 0 && fds[0].revents != 0 {
            let mut v = 0u64;
            // SAFETY: reading 8 bytes into `v` from our non-blocking eventfd.
            unsafe {
                libc::read(
                    wake.as_raw_fd(),
                    (&mut v as *mut u64).cast(),
                    std::mem::size_of::<u64>(),
                )
            };
        }
    }

    /// True when posts wait for queue space (progress must not block long then).
    pub fn has_retry(&self) -> bool {
        self.retrying.load(std::sync::atomic::Ordering::Acquire)
    }

    /// True while a thread is blocked in [`Endpoint::wait`].
    pub fn is_waiting(&self) -> bool {
        self.waiting.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Makes a blocked (or the next) `wait` return.
    pub fn wake(&self) {
        if let Some(fd) = self.wake_fd.as_ref() {
            let v = 1u64;
            // SAFETY: writing 8 bytes from `v` to our eventfd; failure (counter full) still
            // leaves it readable, which is all we need.
            unsafe {
                libc::write(
                    fd.as_raw_fd(),
                    (&v as *const u64).cast(),
                    std::mem::size_of::<u64>(),
                )
            };
        }
    }

    /// Cancels everything, drains the CQ for up to `grace`, then closes the endpoint; every
    /// operation still pending is reported `ECANCELED`. Idempotent.
    pub fn close(&self, grace: Duration, out: &mut Vec<Done>) {
        let ids: Vec<OpId> = {
            let mut st = lock(&self.state);
            if st.closed {
                return;
            }
            st.closed = true;
            st.inflight
                .iter()
                // SAFETY: tracked slots are live and only read under the lock.
                .filter_map(|&r| unsafe { (*r).op.as_ref() }.map(|o| o.id))
                .collect()
        };
        for id in ids {
            self.cancel(id, out);
        }
        let deadline = Instant::now() + grace;
        while !lock(&self.state).inflight.is_empty() && Instant::now() < deadline {
            if self.progress(out) == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        let mut st = lock(&self.state);
        let serial = self.fabric.serial();
        // SAFETY: closing the endpoint makes libfabric drop every reference to our contexts;
        // the CQ and AV close after it; serialized.
        unsafe {
            na_ofi_close(self.ep);
            na_ofi_close(self.av);
            na_ofi_close(self.cq);
        }
        // Released before any slot is dropped: an op's MemHandle may close its MR, which
        // takes this lock too.
        drop(serial);
        let left: Vec<*mut Slot> = st.inflight.clone();
        for raw in left {
            // SAFETY: the endpoint is closed: no reference to the slot remains in libfabric.
            let s = unsafe { &mut *raw };
            s.outstanding = 0;
            s.stopped = true;
            if s.err == 0 {
                s.err = errno::ECANCELED;
            }
            // SAFETY: as above.
            unsafe { self.finish(&mut st, raw, out) };
        }
        st.retry.iter_mut().for_each(VecDeque::clear);
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let mut out = Vec::new();
        self.close(Duration::ZERO, &mut out);
        if !out.is_empty() {
            tracing::debug!(
                n = out.len(),
                "na.ofi: endpoint dropped with pending operations"
            );
        }
    }
}

/// Checks that an operation's post arguments only reach memory the operation owns.
fn check(op: &Op, post: &Post) -> Result<(), i32> {
    match (post, &op.req) {
        (Post::SendData { len, .. }, Request::SendUnexpected { buf, .. })
        | (Post::TSend { len, .. }, Request::SendExpected { buf, .. }) => {
            if *len > buf.capacity() {
                return Err(errno::EINVAL);
            }
            Ok(())
        }
        (Post::Recv, Request::RecvUnexpected { .. })
        | (Post::TRecv { .. }, Request::RecvExpected { .. })
        | (Post::TPeek { .. }, Request::RecvExpected { .. })
        | (Post::TPeekHead { .. }, Request::RecvExpected { .. }) => Ok(()),
        (Post::Rma { write, pieces, .. }, Request::Put { local, .. })
        | (Post::Rma { write, pieces, .. }, Request::Get { local, .. }) => {
            if *write != matches!(op.req, Request::Put { .. }) {
                return Err(errno::EINVAL);
            }
            let segs = local.segments();
            for p in pieces {
                let inside = segs.iter().any(|s| {
                    p.local >= s.addr
                        && p.local
                            .checked_add(p.len)
                            .is_some_and(|end| end <= s.addr + s.len)
                });
                if !inside {
                    return Err(errno::EINVAL);
                }
            }
            Ok(())
        }
        _ => Err(errno::EINVAL),
    }
}
