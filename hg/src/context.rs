//! `hg::Context` (`hg_context_t`): one NA endpoint, its operations, `progress` and `trigger`.
//!
//! How an RPC moves (Mercury's `hg_core_*` path, DESIGN §1–3):
//!
//! - **Posting.** `forward`, `respond`, `cancel` and bulk transfers may be called from any thread.
//!   They encode on the caller's thread, straight into the NA message buffer, and post the ready
//!   operation to NA themselves when no `progress` holds the NA context; otherwise they hand it
//!   to the context's hand-off queue, waking a `progress` that is blocked, which posts it. A
//!   forward posts the expected receive for the reply *before* the unexpected send, with a tag
//!   from a counter starting at 1.
//! - **Progress** (`hg_core_progress`) posts handed-off work, keeps the unexpected receives posted,
//!   polls NA and runs each NA completion through the operation's state machine: a request is
//!   decoded and verified (bad bytes are a typed error and a `tracing` event; an unknown id is
//!   answered `NoEntry`), overflowed payloads are pulled by RMA, replies are matched to their
//!   forward. Finished operations put their callback on the completion queue; nothing user-written
//!   runs inside progress.
//! - **Trigger** (`HG_Trigger`) runs queued callbacks and RPC handlers (`hg_core_process` →
//!   the registered `rpc_cb`), catching panics.
//! - **Exactly once.** Every operation that took a callback queues it exactly once: success,
//!   error, cancel, timeout, or [`Context::close`].

use crate::bulk::{BulkDesc, BulkRef, BulkSegment, MemDescs};
use crate::class::{Class, Handler};
use crate::error::{Error, Result};
use crate::handle::{Bytes, Handle, HandleState, ServerSide};
use crate::header::{self, flags, ChecksumLevel, RequestHeader, ResponseHeader};
use crate::proc::{self, Proc};
use crate::queue::{CompletionQueue, HandOff, Posted};
use crate::registry::RpcId;
use crate::slab::Slab;
use crate::sync::{
    lock, try_lock, Arc, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Mutex, MutexGuard,
    Ordering, UserArc,
};
use crate::transfer::{split, Parts};
use na::{Access, MemHandle, MsgBuf, OpKind, RemoteMem, Tag};
use smallvec::SmallVec;
use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::num::NonZeroU64;
use std::ops::Deref;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// A forward's completion callback (`hg_cb_t` for `HG_CB_FORWARD`): the handle (read the reply
/// with [`Handle::get_output`]) and the result: an NA failure, the handler side's `hg_return_t`,
/// `Canceled`, `Timeout`, or `Ok`.
pub type ForwardCallback = Box<dyn FnOnce(&Handle, Result<()>) + Send>;
/// A respond's or a bulk transfer's completion callback.
pub type DoneCallback = Box<dyn FnOnce(Result<()>) + Send>;

/// User token of the pre-posted unexpected receives.
const UNEXPECTED: u64 = 0;

pub(crate) enum Entry {
    /// A forward's callback with its handle and result (no closure boxed around them).
    Forward {
        cb: ForwardCallback,
        handle: Handle,
        result: Result<()>,
        rpc_id: RpcId,
    },
    /// A respond's or bulk transfer's callback with its result.
    Done(DoneCallback, Result<()>),
    Process(Handle, Handler),
}

/// Work prepared on the caller's thread, posted by it or by progress.
enum Post {
    /// Forward `token` (its destination and tag are in its record).
    Forward {
        token: u64,
        send: MsgBuf,
        send_len: usize,
        recv: Option<MsgBuf>,
    },
    Respond {
        token: u64,
        dest: na::Addr,
        tag: Tag,
        buf: MsgBuf,
        len: usize,
        ack: Option<(u64, MsgBuf)>,
    },
    Rma {
        token: u64,
        pull: bool,
        /// One NA operation per overlap of a local and a remote registration (a `Vec`, not
        /// [`RmaParts`]: inline parts would make every `Post` larger, and every respond moves one).
        parts: Vec<RmaPart>,
        dest: na::Addr,
    },
    Cancel(u64),
}

/// The bytes of a request (or reply) to send: a pooled buffer, or for a small message one on
/// the caller's stack, injected from there without a trip through the context's pool; copied
/// into a pooled buffer only when NA cannot inject it.
enum SendMsg<'a> {
    Pooled(MsgBuf),
    Inline(&'a mut [u8]),
}

impl SendMsg<'_> {
    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            SendMsg::Pooled(b) => b.as_mut_slice(),
            SendMsg::Inline(s) => s,
        }
    }
}

/// The largest message encoded on the stack ([`SendMsg::Inline`]): small RPCs (the common kind)
/// and their replies, in a buffer cheap to zero.
const INLINE_MSG: usize = 256;

/// Whether a message of `full` bytes (`max`: the NA size of its kind) is encoded on the stack:
/// only one NA may inject, and that fits the pooled buffer it is copied into if NA declines
/// (`CtxInner::owned`). Requests and replies alike.
#[inline(always)]
fn fits_inline(nac: &na::Class, full: usize, max: usize) -> bool {
    full <= INLINE_MSG.min(nac.max_inject_size()).min(max)
}

/// A transfer's NA operations: nearly always one, kept inline (no allocation per transfer).
type RmaParts = SmallVec<[RmaPart; 1]>;

/// One NA put / get of a bulk transfer.
struct RmaPart {
    local: MemHandle,
    local_offset: u64,
    remote: RemoteMem,
    remote_offset: u64,
    len: u64,
}

// At most 128 bytes: the record moves into the operation map and out again on every RPC, and
// larger moves are `memcpy` calls (the test `forward_record_moves_inline` keeps it so).
struct Fwd {
    handle: Handle,
    /// A reply was received and decoded: its code is the result, whatever else happened.
    replied: bool,
    cb: Option<ForwardCallback>,
    rpc_id: RpcId,
    dest: na::Addr,
    tag: Tag,
    cookie: u8,
    posted: bool,
    /// The request's send and the reply's receive while posted (NA operation ids, never 0).
    send_op: Option<NonZeroU64>,
    recv_op: Option<NonZeroU64>,
    send_done: Option<Result<()>>,
    recv_pending: bool,
    ack_only: bool,
    reply: Option<Result<()>>,
    deadline: Option<Instant>,
    timed_out: bool,
    canceled: bool,
    /// The overflow parts, when the input or the output went through an extra transfer. Boxed:
    /// every forward's record moves into the operation map and out again, most without them.
    over: Option<Box<FwdOverflow>>,
}

/// What `Handle::forward` hands its context: the handle, where it goes and the RPC's fixed parts.
pub(crate) struct ForwardReq<'a> {
    pub(crate) handle: &'a Handle,
    pub(crate) dest: na::Addr,
    /// `dest` is the context's own address.
    pub(crate) to_self: bool,
    pub(crate) rpc_id: RpcId,
    pub(crate) cookie: u8,
    pub(crate) no_response: bool,
    pub(crate) deadline: Option<Instant>,
    pub(crate) cb: ForwardCallback,
    /// The reply buffer the handle kept from its last forward.
    pub(crate) spare: Option<MsgBuf>,
}

/// An NA operation id as a forward keeps it (NA numbers operations from 1: never 0).
fn op_id(id: na::OpId) -> Option<NonZeroU64> {
    let n = NonZeroU64::new(id.0);
    debug_assert!(n.is_some(), "NA operation ids start at 1");
    n
}

/// The rare parts of a forward: its input overflow and its output pull.
#[derive(Default)]
struct FwdOverflow {
    /// The output pull's NA operations (one per remote handle the range crosses).
    pull_ops: Vec<na::OpId>,
    /// An output pull in flight: the registration it fills, the payload CRC, the reply's code
    /// and the parts still to complete.
    pulling: Option<(MemHandle, usize, u32, Result<()>, Parts)>,
    /// The input overflow registration and its encoded descriptor: the target pulls from it
    /// until it answers; then it goes back to the context's cache.
    extra: Option<(MemHandle, Vec<u8>)>,
}

impl Fwd {
    /// Whether an output pull is in flight.
    fn pulling(&self) -> bool {
        self.over.as_ref().is_some_and(|o| o.pulling.is_some())
    }

    /// The forward `req` describes, sent with `tag`, waiting for its send and its reply with
    /// nothing posted yet; the self-forward and network paths override the fields where they
    /// differ.
    fn new(req: ForwardReq<'_>, tag: Tag) -> Fwd {
        Fwd {
            handle: req.handle.clone(),
            replied: false,
            cb: Some(req.cb),
            rpc_id: req.rpc_id,
            dest: req.dest,
            tag,
            cookie: req.cookie,
            posted: false,
            send_op: None,
            recv_op: None,
            send_done: None,
            recv_pending: true,
            ack_only: false,
            reply: None,
            deadline: req.deadline,
            timed_out: false,
            canceled: false,
            over: None,
        }
    }
}

// Forwards are the common operation and live inline: boxing them cost a malloc and a free on
// every RPC's critical path (more than moving the larger entry in and out of the map).
#[allow(clippy::large_enum_variant)]
enum Op {
    Forward(Fwd),
    Respond {
        cb: Option<DoneCallback>,
        /// The reply's output overflow registration (its `AckWait` token), if any.
        ack: Option<u64>,
    },
    InputPull {
        handle: Handle,
        handler: Handler,
        mem: MemHandle,
        /// Bytes pulled (the buffer may be larger).
        size: usize,
        crc: u32,
        /// The pull's NA operations still to complete (one per remote handle it crosses).
        parts: Parts,
    },
    /// Output overflow registration kept until the client's ack arrives, or until it is let go
    /// of: its deadline passed, its peer was removed or failed (the ack receive is canceled).
    AckWait {
        /// The registration and its encoded descriptor; back to the cache once acknowledged.
        mem: MemHandle,
        desc: Vec<u8>,
        /// The ack's expected receive, once posted.
        op: Option<na::OpId>,
        dest: na::Addr,
        /// Set when the reply has been sent (`InitOptions::overflow_ack_timeout` later).
        deadline: Option<Instant>,
        /// Being let go of: its receive was canceled.
        released: bool,
    },
    /// A bulk transfer: its callback runs once, when every part has completed.
    Rma {
        cb: Option<DoneCallback>,
        parts: Parts,
    },
    /// A send whose completion needs no action (error answers, acks).
    Discard,
}

/// Registered overflow buffers kept for reuse, so a large RPC registers (`fi_mr_reg`), zeroes
/// and deregisters nothing once warmed up. Pull targets (peers' overflowed payloads land there)
/// are kept by power-of-two capacity: a peer only sees its own descriptor. Send sources (our
/// overflowed inputs and outputs) are kept by exact size with their encoded descriptor, since
/// the peer sees their registration, and are reused towards the same peer only. A buffer comes back only once no operation and no peer can still use it.
#[derive(Default)]
struct OverflowCache {
    pull: Vec<MemHandle>,
    pull_bytes: usize,
    /// With the peer it was last exposed to: reused only towards that peer, so a peer that
    /// kept an old descriptor can never read what goes to another.
    send: Vec<(MemHandle, Vec<u8>, na::Addr)>,
    send_bytes: usize,
}

/// Largest overflow buffer the cache keeps, and most bytes it keeps per kind.
const OVERFLOW_KEEP_MAX: usize = 1 << 20;
const OVERFLOW_KEEP_BYTES: usize = 8 << 20;

/// Capacity of the pull buffer for `size` bytes.
fn pull_capacity(size: usize) -> usize {
    size.next_power_of_two().max(4096)
}

/// Buffers `progress` and `trigger` reuse from call to call. Its lock is the drive lock: only
/// the thread driving the context holds it (see [`Context::drive`]).
#[derive(Default)]
struct Scratch {
    comps: Vec<na::Completion>,
    posts: VecDeque<Post>,
    /// Entries `trigger` took from the completion queue in one batch.
    batch: VecDeque<Entry>,
}

struct CtxState {
    ops: Slab<Op>,
    /// Forwards in `ops` that have a deadline: while zero, progress skips the deadline scans.
    timed: usize,
    /// Unexpected receives posted, plus those in `reposts` and `replacements`.
    unexpected_posted: usize,
    /// Buffers of requests received, reposted by the next `progress` (after the work the
    /// handlers handed off, so a reply leaves before its request's buffer goes back to NA).
    reposts: Vec<MsgBuf>,
    /// Buffers of requests received that their handles kept (the input is read in place): the
    /// next `progress` posts as many pooled buffers in their place.
    replacements: usize,
    /// How many unexpected receives to keep posted (grows by `request_post_incr`).
    unexpected_target: usize,
    /// `AckWait` operations in `ops` (output overflow registrations kept for an ack).
    ack_waits: usize,
    /// `timed + ack_waits`, readable without the lock (shared with `CtxInner::deadlines`).
    deadlines: Arc<AtomicUsize>,
}

pub(crate) struct CtxInner {
    pub(crate) class: Class,
    id: u8,
    self_addr: na::Addr,
    waker: na::Waker,
    na: Mutex<Option<na::Context>>,
    pub(crate) cq: CompletionQueue<Entry>,
    handoff: HandOff<Post>,
    st: Mutex<CtxState>,
    /// Expected-receive buffers (`max_expected_size` bytes) returned by finished forwards, reused
    /// by the next ones instead of allocating and zeroing a fresh buffer per RPC.
    recv_bufs: Mutex<Vec<MsgBuf>>,
    /// Unexpected-size buffers of sent requests, reused by the next forwards.
    send_bufs: Mutex<Vec<MsgBuf>>,
    overflow: Mutex<OverflowCache>,
    /// Held by the thread in `progress` or `trigger`, and only by it: the drive lock.
    scratch: Mutex<Scratch>,
    data: Mutex<Option<UserArc<dyn Any + Send + Sync>>>,
    next_tag: AtomicU32,
    /// The NA plugin's largest tag (at least 1), read once: tags wrap below it.
    max_tag: Tag,
    closed: AtomicBool,
    /// Set when the unexpected receives may need posting (a request arrived, the target grew):
    /// `ensure_unexpected` skips the state lock on every other progress pass. Driving thread.
    repost_due: AtomicBool,
    bad_requests: AtomicUsize,
    /// Operations with a deadline (see `CtxState::sync_deadlines`): zero lets progress skip the
    /// deadline scans and their lock.
    deadlines: Arc<AtomicUsize>,
    /// The newest class-wide peer removal this context has acted on (driving thread only).
    seen_removed: AtomicU64,
}

/// A shared reference to a context: what handles, handlers and other threads use to create
/// handles, start bulk transfers and read the context's data. Driving (progress, trigger, close)
/// belongs to the [`Context`] owner.
#[derive(Clone)]
pub struct ContextRef {
    pub(crate) inner: Arc<CtxInner>,
}

/// An HG context (`hg_context_t`): one NA endpoint and its completion queue, driven by one
/// thread at a time with [`Context::progress`] and [`Context::trigger`]. Dereferences to
/// [`ContextRef`] for everything else.
#[doc(alias = "hg_context_t")]
pub struct Context {
    r: ContextRef,
}

impl Deref for Context {
    type Target = ContextRef;
    fn deref(&self) -> &ContextRef {
        &self.r
    }
}

impl Context {
    pub(crate) fn new(class: Class, id: u8) -> Result<Context> {
        let na = class.na().context_create(id).map_err(Error::from_na)?;
        let deadlines = Arc::new(AtomicUsize::new(0));
        let inner = Arc::new(CtxInner {
            self_addr: na.self_addr(),
            waker: na.waker(),
            na: Mutex::new(Some(na)),
            class: class.clone(),
            id,
            cq: CompletionQueue::new(),
            handoff: HandOff::new(),
            st: Mutex::new(CtxState {
                ops: Slab::default(),
                timed: 0,
                ack_waits: 0,
                deadlines: deadlines.clone(),
                unexpected_posted: 0,
                reposts: Vec::new(),
                replacements: 0,
                unexpected_target: class
                    .options()
                    .request_post_init
                    .min(class.options().request_post_max)
                    .max(1),
            }),
            recv_bufs: Mutex::new(Vec::new()),
            send_bufs: Mutex::new(Vec::new()),
            overflow: Mutex::new(OverflowCache::default()),
            scratch: Mutex::new(Scratch::default()),
            data: Mutex::new(None),
            next_tag: AtomicU32::new(1),
            max_tag: class.na().max_tag().max(1),
            closed: AtomicBool::new(false),
            repost_due: AtomicBool::new(true),
            bad_requests: AtomicUsize::new(0),
            deadlines,
            seen_removed: AtomicU64::new(class.inner.removed.newest()),
        });
        Ok(Context {
            r: ContextRef { inner },
        })
    }

    /// Takes the context for this thread's `progress` or `trigger`: the lock of their reused
    /// buffers, which doubles as the drive lock (one atomic to take and one to give back, where
    /// a separate flag and lock cost three). `Busy` when it is held: re-entered from a callback
    /// that `trigger` runs, or driven by another thread at the same time.
    fn drive(&self) -> Result<MutexGuard<'_, Scratch>> {
        match try_lock(&self.inner.scratch) {
            Some(g) => Ok(g),
            None => {
                tracing::warn!(
                    "hg: progress or trigger re-entered (from a callback, or two threads)"
                );
                Err(Error::Busy)
            }
        }
    }

    /// A shareable reference to this context.
    pub fn as_ref(&self) -> ContextRef {
        self.r.clone()
    }

    /// `HG_Progress`: posts handed-off work, polls NA (waiting up to `timeout` while nothing is
    /// ready; zero never blocks) and moves finished operations' callbacks onto the completion
    /// queue. Returns as soon as anything moved (an NA completion, a posted hand-off, a wake-up
    /// with work) or the timeout passed, with how many callbacks wait for [`Context::trigger`].
    ///
    /// Any timeout is valid: zero polls once, sub-millisecond ones wait at least that long (the
    /// ofi plugin's wait rounds up to a millisecond), and very long ones (up to
    /// `Duration::MAX`, about 136 years at most) return at the first activity, a wake-up from
    /// another thread's hand-off, or the nearest forward deadline.
    ///
    /// One thread drives a context at a time: called from inside a callback or handler that
    /// [`Context::trigger`] runs (or while another thread is in `progress` or `trigger`), it
    /// fails with [`Error::Busy`] and a `tracing` warning, and the context is unharmed.
    #[doc(alias = "HG_Progress")]
    #[doc(alias = "hg_core_progress")]
    #[doc(alias = "HG_Event_progress")]
    pub fn progress(&self, timeout: Duration) -> Result<usize> {
        let mut scratch = self.drive()?;
        let _s = na::hop_span!(DEBUG, "hg.progress");
        let inner = &self.inner;
        // No clock reads at all for a zero timeout without deadlines (the busy-polling caller).
        let end = (!timeout.is_zero()).then(|| wait_end(timeout));
        // The first wait is the whole timeout: no second clock read right after `wait_end`'s.
        let mut first = true;
        let na_guard = lock(&inner.na);
        let Some(na) = na_guard.as_ref() else {
            return Err(Error::Canceled);
        };
        // Reused buffers: no allocation per progress call once warmed up.
        let Scratch { comps, posts, .. } = &mut *scratch;
        loop {
            let mut activity = inner.post_pending(na, posts);
            inner.apply_removals(na);
            inner.ensure_unexpected(na);
            inner.check_deadlines(na);
            let mut wait = match end {
                Some(_)
                    if first
                        && inner.cq.len() == 0
                        && activity == 0
                        && inner.handoff.is_empty() =>
                {
                    timeout.min(MAX_WAIT)
                }
                Some(end) if inner.cq.len() == 0 && activity == 0 && inner.handoff.is_empty() => {
                    end.saturating_duration_since(Instant::now())
                }
                _ => Duration::ZERO,
            };
            first = false;
            if let Some(d) = inner.nearest_deadline() {
                wait = wait.min(d.saturating_duration_since(Instant::now()));
            }
            if !wait.is_zero() {
                wait = inner.spin(na, wait);
            }
            let slept = !wait.is_zero() && inner.handoff.prepare_sleep();
            if !slept {
                wait = Duration::ZERO;
            }
            // Completions come straight into `comps` (the plugin's own, and any queued).
            let r = na.progress_into(wait, comps);
            if slept {
                inner.handoff.end_sleep();
            }
            activity += comps.len();
            inner.maybe_grow(comps);
            // Handled even when progress failed: every completion gets its callback once. (An
            // empty pass builds and drops no `Drain`.)
            if !comps.is_empty() {
                for c in comps.drain(..) {
                    inner.on_completion(inner, Some(na), c);
                }
            }
            match r {
                Ok(_) | Err(na::Error::Timeout) | Err(na::Error::Interrupt) => {}
                Err(e) => return Err(Error::from_na(e)),
            }
            // Work handed off while we waited (the wake-up that ended the wait) is posted now.
            activity += inner.post_pending(na, posts);
            inner.check_deadlines(na);
            // Return once anything moved (or the time is up): a blocked caller woken by a
            // hand-off gets control back, as DESIGN §1 asks.
            if activity > 0 || inner.cq.len() > 0 || end.is_none_or(|e| Instant::now() >= e) {
                return Ok(inner.cq.len());
            }
        }
    }

    /// `HG_Trigger`: runs up to `max` queued callbacks and handlers on this thread; returns how
    /// many ran. Never blocks. A panicking callback is caught and logged; a panicking handler is
    /// answered to its client as `HG_OTHER_ERROR`. Called from inside a callback or handler it
    /// runs (or while another thread drives the context) it fails with [`Error::Busy`], as
    /// [`Context::progress`] does.
    #[doc(alias = "HG_Trigger")]
    #[doc(alias = "hg_core_trigger")]
    #[doc(alias = "hg_core_process")]
    #[doc(alias = "hg_core_trigger_process")]
    #[doc(alias = "HG_Event_trigger")]
    pub fn trigger(&self, max: usize) -> Result<usize> {
        // Held while the callbacks run: a nested trigger (or progress) fails in `drive`.
        let mut scratch = self.drive()?;
        let _s = na::hop_span!(DEBUG, "hg.trigger");
        let batch = &mut scratch.batch;
        let mut n = 0;
        // One lock per batch; callbacks queued while a batch runs come in the next one, within
        // the same call, as when entries were popped one at a time.
        while n < max {
            self.inner.cq.pop_batch(max - n, batch);
            if batch.is_empty() {
                break;
            }
            while let Some(e) = batch.pop_front() {
                run_entry(e);
                n += 1;
            }
        }
        Ok(n)
    }

    /// `HG_Context_destroy`: cancels every operation still in flight, runs every callback not yet
    /// run (each exactly once; those of operations cut short see `Canceled`), and closes the
    /// endpoint. Requests received but not yet handled are dropped.
    #[doc(alias = "HG_Context_destroy")]
    pub fn close(self) {
        self.inner.teardown(&self.inner);
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        self.inner.teardown(&self.inner);
    }
}

#[inline(always)]
fn run_entry(e: Entry) {
    let caught = match e {
        Entry::Forward {
            cb,
            handle,
            result,
            rpc_id,
        } => catch_unwind(AssertUnwindSafe(move || {
            let _s = na::hop_span!(DEBUG, "hg.forward_cb", rpc_id);
            cb(&handle, result)
        })),
        Entry::Done(cb, r) => catch_unwind(AssertUnwindSafe(move || cb(r))),
        Entry::Process(h, handler) => return run_handler(h, handler),
    };
    if caught.is_err() {
        tracing::error!("hg: a completion callback panicked; the context keeps serving");
    }
}

fn run_handler(h: Handle, handler: Handler) {
    // The id is read (a lock of the handle) only for the span, when tracing wants it, or to log.
    let _s = na::hop_span!(DEBUG, "hg.handler", rpc_id = h.id());
    let r = match catch_unwind(AssertUnwindSafe(|| handler(h.clone()))) {
        Ok(r) => r,
        Err(_) => {
            tracing::error!(rpc_id = h.id(), "hg: RPC handler panicked");
            Err(Error::OtherError)
        }
    };
    if let Err(e) = r {
        if h.needs_response() {
            tracing::debug!(rpc_id = h.id(), error = %e, "hg: handler failed; answering the error");
            let _ = h.respond_error(e);
        }
    }
}

impl ContextRef {
    /// The context's id (`HG_Context_get_id`).
    #[doc(alias = "HG_Context_get_id")]
    pub fn id(&self) -> u8 {
        self.inner.id
    }

    /// The class.
    #[doc(alias = "HG_Context_get_class")]
    pub fn class(&self) -> &Class {
        &self.inner.class
    }

    /// `HG_Addr_self`: this context's address.
    #[doc(alias = "HG_Addr_self")]
    pub fn self_addr(&self) -> na::Addr {
        self.inner.self_addr.clone()
    }

    /// `HG_Context_set_data`: attaches user data (CaRT's `crt_context`) to the context.
    #[doc(alias = "HG_Context_set_data")]
    pub fn set_data(&self, data: UserArc<dyn Any + Send + Sync>) {
        *lock(&self.inner.data) = Some(data);
    }

    /// `HG_Context_get_data`: the user data, if any.
    #[doc(alias = "HG_Context_get_data")]
    pub fn data(&self) -> Option<UserArc<dyn Any + Send + Sync>> {
        lock(&self.inner.data).clone()
    }

    /// The user data as a `T`, if set and of that type.
    pub fn data_as<T: Any + Send + Sync>(&self) -> Option<UserArc<T>> {
        self.data().and_then(|d| d.downcast::<T>().ok())
    }

    /// `HG_Create`: a handle to call `id` at `addr`.
    #[doc(alias = "HG_Create")]
    pub fn create(&self, addr: &na::Addr, id: RpcId) -> Result<Handle> {
        Ok(Handle::new(
            self.inner.clone(),
            HandleState::origin(addr.clone(), id, &self.inner),
        ))
    }

    /// Unexpected receives currently posted (grows from `request_post_init` by
    /// `request_post_incr` up to `request_post_max`). The buffers of requests received since
    /// the last `progress` count as posted: that `progress` reposts them (or pooled ones in
    /// place of those the requests' handles kept) before it polls.
    pub fn posted_receives(&self) -> usize {
        lock(&self.inner.st).unexpected_posted
    }

    /// Output overflow registrations this context keeps for a client's acknowledgement (replies
    /// larger than the expected size, which the client pulls). Each is let go of when the ack
    /// arrives, its peer is removed or fails, `InitOptions::overflow_ack_timeout` after the
    /// reply was sent, or at teardown.
    pub fn overflow_registrations(&self) -> usize {
        lock(&self.inner.st).ack_waits
    }

    /// Requests that arrived with a header or body that failed to decode or verify (each also
    /// logged as a `tracing` warning).
    pub fn bad_requests(&self) -> usize {
        self.inner.bad_requests.load(Ordering::Relaxed)
    }

    /// `HG_Bulk_transfer`: moves `len` bytes between `origin` (a peer's descriptor, usually from
    /// an RPC input, owned by `origin_addr`) and `local`. `Pull` reads the origin into `local`
    /// (NA get), `Push` writes `local` into the origin (NA put). `cb` runs once in trigger.
    #[doc(alias = "HG_Bulk_transfer")]
    #[doc(alias = "HG_Bulk_transfer_id")]
    #[allow(clippy::too_many_arguments)]
    pub fn bulk_transfer(
        &self,
        op: BulkOp,
        origin_addr: &na::Addr,
        origin: &BulkDesc,
        origin_offset: u64,
        local: &crate::transfer::Bulk,
        local_offset: u64,
        len: u64,
        cb: impl FnOnce(Result<()>) + Send + 'static,
    ) -> Result<()> {
        let _s = na::hop_span!(DEBUG, "hg.bulk_transfer", ?op, len);
        let need = match op {
            BulkOp::Pull => crate::bulk::flags::READ_ONLY,
            BulkOp::Push => crate::bulk::flags::WRITE_ONLY,
        };
        if origin.access() & need == 0 {
            tracing::warn!(
                ?op,
                access = origin.access(),
                "hg: descriptor refuses this transfer"
            );
            return Err(Error::Permission);
        }
        let in_range = |off: u64, total: u64| off.checked_add(len).is_some_and(|e| e <= total);
        if !in_range(origin_offset, origin.len) || !in_range(local_offset, local.len() as u64) {
            tracing::warn!(
                origin_offset,
                origin_len = origin.len,
                local_offset,
                local_len = local.len(),
                len,
                "hg: bulk transfer range outside a region"
            );
            return Err(Error::InvalidArg);
        }
        if let (BulkOp::Pull, Some(data)) = (op, &origin.eager) {
            // The data came with the descriptor: no network transfer.
            let (o, l) = (origin_offset as usize, len as usize);
            let r = local.write_at(local_offset as usize, &data[o..o + l]);
            self.inner.cq.push(Entry::Done(Box::new(cb), r));
            return Ok(());
        }
        let parts = self.inner.rma_parts(
            origin,
            origin_offset,
            local.registrations(),
            local_offset,
            len,
        )?;
        if parts.is_empty() {
            // Nothing to move (zero bytes): complete without NA.
            self.inner.cq.push(Entry::Done(Box::new(cb), Ok(())));
            return Ok(());
        }
        let token = lock(&self.inner.st).ops.insert(Op::Rma {
            cb: Some(Box::new(cb)),
            parts: Parts::new(parts.len()),
        });
        let pull = op == BulkOp::Pull;
        // Posted right here when this thread may, as a forward is: the parts stay inline (no
        // allocation); only work handed to a running `progress` takes them to the heap.
        if let Some(guard) = self.inner.may_post_now() {
            if let Some(na) = guard.as_ref() {
                self.inner.post_rma(na, token, pull, &parts, origin_addr);
                return Ok(());
            }
        }
        self.inner.hand_off(Post::Rma {
            token,
            pull,
            parts: parts.into_vec(),
            dest: origin_addr.clone(),
        });
        Ok(())
    }
}

/// Direction of a bulk transfer (`hg_bulk_op_t`).
#[doc(alias = "hg_bulk_op_t")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BulkOp {
    /// `HG_BULK_PUSH`: write local data into the origin's region.
    Push,
    /// `HG_BULK_PULL`: read the origin's region into local memory.
    Pull,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("id", &self.inner.id)
            .finish()
    }
}

impl fmt::Debug for ContextRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextRef")
            .field("id", &self.inner.id)
            .finish()
    }
}

/// Longest one blocking [`Context::progress`] waits: a longer timeout, up to `Duration::MAX`,
/// waits this long (about 136 years, forever in practice). `Instant + Duration` panics when the
/// sum overflows, and the NA plugins add the wait to their clock too, so no wait handed to NA
/// may come near that.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(u32::MAX as u64);

/// When a wait of `timeout` from now ends, never overflowing (see [`MAX_WAIT`]).
fn wait_end(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout.min(MAX_WAIT))
        .unwrap_or_else(|| now + Duration::from_secs(24 * 3600))
}

/// Removes operation `token`, keeping the count of kept output registrations right.
fn take_op(st: &mut CtxState, token: u64) -> Option<Op> {
    let op = st.ops.remove(token);
    if let Some(Op::AckWait { .. }) = op {
        st.ack_waits -= 1;
        st.sync_deadlines();
    }
    op
}

impl CtxState {
    /// Publishes whether any operation has a deadline (`timed + ack_waits`), so progress skips
    /// the deadline scans without taking the lock while none has. Called after each change.
    fn sync_deadlines(&self) {
        self.deadlines
            .store(self.timed + self.ack_waits, Ordering::Release);
    }
}

/// Encodes `value` into `out` (its `encoded_size` bytes of a reused buffer), zeroing whatever
/// an encoder skipped so no stale bytes of an earlier message go out.
fn encode_body<T: Proc>(value: &T, out: &mut [u8]) -> Result<()> {
    let n = proc::encode_into(value, out)?;
    if n < out.len() {
        out[n..].fill(0);
    }
    Ok(())
}

/// A pooled message buffer of capacity `size`, or a fresh one.
fn take_buf(pool: &Mutex<Vec<MsgBuf>>, size: usize) -> MsgBuf {
    match lock(pool).pop() {
        Some(b) if b.capacity() == size => b,
        _ => MsgBuf::new(size),
    }
}

/// Keeps `buf` for reuse when it has the pool's capacity (a bounded number are kept).
fn give_buf(pool: &Mutex<Vec<MsgBuf>>, buf: MsgBuf, size: usize) {
    const KEEP: usize = 256;
    if buf.capacity() == size {
        let mut b = lock(pool);
        if b.len() < KEEP {
            b.push(buf);
        }
    }
}

fn local_segments(mem: &MemHandle) -> Vec<BulkSegment> {
    mem.segments()
        .iter()
        .map(|s| BulkSegment {
            base: s.addr as u64,
            len: s.len as u64,
        })
        .collect()
}

impl CtxInner {
    /// Decodes the bulk descriptor of an overflowed payload (`MORE_DATA`), registers a buffer
    /// for it and cuts the pull into NA gets: one handle, or one per segment as Mercury may send.
    /// A descriptor that cannot be pulled whole is `ProtocolError`; over the maximum `MsgSize`.
    fn overflow_pull(&self, body: &[u8]) -> Result<(MemHandle, RmaParts, usize)> {
        let r: BulkRef = proc::decode_exact(body)?;
        let desc = r.0.ok_or(Error::ProtocolError)?;
        let size = usize::try_from(desc.len).map_err(|_| Error::MsgSize)?;
        if size > self.class.options().max_overflow_size {
            return Err(Error::MsgSize);
        }
        if size == 0 {
            tracing::warn!("hg: empty overflow descriptor");
            return Err(Error::ProtocolError);
        }
        let mem = self.take_pull_buf(size)?;
        let parts = self
            .rma_parts(&desc, 0, std::slice::from_ref(&mem), 0, desc.len)
            // The peer's descriptor does not describe its payload.
            .map_err(|e| match e {
                Error::InvalidArg => Error::ProtocolError,
                e => e,
            })?;
        Ok((mem, parts, size))
    }

    /// Cuts a checked transfer range into NA operations: the local side's registrations and the
    /// descriptor's NA handles (one for all segments, or one per segment) each form a run of
    /// extents, and every overlap of a local and a remote extent is one put / get.
    fn rma_parts(
        &self,
        origin: &BulkDesc,
        origin_offset: u64,
        mems: &[MemHandle],
        local_offset: u64,
        len: u64,
    ) -> Result<RmaParts> {
        let nac = self.class.na();
        let deser = |h: &[u8]| nac.mem_handle_deserialize(h).map_err(Error::from_na);
        if let (MemDescs::Single(Some(h)), [mem]) = (&origin.mem, mems) {
            // One handle on each side (every descriptor we or Mercury's tcp plugin make): one
            // operation, no extent tables.
            if len == 0 {
                return Ok(RmaParts::new());
            }
            return Ok(smallvec::smallvec![RmaPart {
                local: mem.clone(),
                local_offset,
                remote: deser(h)?,
                remote_offset: origin_offset,
                len,
            }]);
        }
        let remote: Vec<(u64, Option<RemoteMem>)> = match &origin.mem {
            MemDescs::Single(h) => vec![(origin.len, h.as_deref().map(deser).transpose()?)],
            // A descriptor built by hand may disagree with itself (decoded ones cannot).
            MemDescs::PerSegment(v) if v.len() != origin.segments.len() => {
                tracing::warn!(
                    handles = v.len(),
                    segments = origin.segments.len(),
                    "hg: descriptor has not one handle per segment"
                );
                return Err(Error::InvalidArg);
            }
            MemDescs::PerSegment(v) => origin
                .segments
                .iter()
                .zip(v)
                .map(|(s, (_, h))| Ok((s.len, h.as_deref().map(deser).transpose()?)))
                .collect::<Result<_>>()?,
        };
        let llens: Vec<u64> = mems.iter().map(|m| m.len() as u64).collect();
        let rlens: Vec<u64> = remote.iter().map(|r| r.0).collect();
        let pieces = split(&llens, local_offset, &rlens, origin_offset, len);
        if pieces.iter().map(|p| p.len).sum::<u64>() != len {
            // Segment lengths that do not add up to the descriptor's length (hand-built).
            tracing::warn!(len, "hg: descriptor segments do not cover the range");
            return Err(Error::InvalidArg);
        }
        pieces
            .into_iter()
            .map(|p| {
                let Some(r) = &remote[p.ri].1 else {
                    tracing::warn!(
                        segment = p.ri,
                        "hg: descriptor has no memory handle for part of the range"
                    );
                    return Err(Error::InvalidArg);
                };
                Ok(RmaPart {
                    local: mems[p.li].clone(),
                    local_offset: p.loff,
                    remote: r.clone(),
                    remote_offset: p.roff,
                    len: p.len,
                })
            })
            .collect()
    }

    /// A registered buffer of at least `size` bytes to pull into (cached, or new).
    fn take_pull_buf(&self, size: usize) -> Result<MemHandle> {
        let cap = pull_capacity(size);
        if cap <= OVERFLOW_KEEP_MAX {
            let mut c = lock(&self.overflow);
            if let Some(i) = c.pull.iter().rposition(|m| m.len() == cap) {
                let m = c.pull.swap_remove(i);
                c.pull_bytes -= cap;
                return Ok(m);
            }
        }
        let len = if cap <= OVERFLOW_KEEP_MAX { cap } else { size };
        self.class
            .na()
            .mem_register(vec![0; len], Access::WRITE)
            .map_err(Error::from_na)
    }

    /// The `size` bytes pulled into `mem`, checked against the payload CRC. A cached-size buffer
    /// is kept as is (decoded in place, back to the cache when the bytes drop); any other gives
    /// its bytes back without a copy as its registration ends.
    fn pulled(&self, this: &Arc<CtxInner>, mem: MemHandle, size: usize, crc: u32) -> Result<Bytes> {
        if mem.len() != pull_capacity(size)
            || mem.len() > OVERFLOW_KEEP_MAX
            || mem.segments().len() != 1
        {
            let mut v = mem.into_vec();
            v.truncate(size);
            header::verify_payload(self.level(), crc, &v)?;
            return Ok(Bytes::Owned(v));
        }
        let level = self.level();
        let mut r = Ok(());
        if level == ChecksumLevel::Payload {
            mem.with_range(0, size, |seg, at, _, n| {
                r = header::verify_payload(level, crc, &seg[at..at + n])
            })
            .map_err(Error::from_na)?;
        }
        let bytes = Bytes::Pulled {
            mem: Some(mem),
            len: size,
            ctx: this.clone(),
        };
        // On a mismatch the bytes drop here, and the buffer goes back to the cache.
        r.map(|()| bytes)
    }

    /// Takes back a pull buffer once nothing else holds it (its bytes were dropped).
    pub(crate) fn give_pull_buf(&self, mem: MemHandle) {
        if mem.ref_count() != 1 || mem.len() > OVERFLOW_KEEP_MAX {
            return;
        }
        let mut c = lock(&self.overflow);
        if c.pull_bytes + mem.len() <= OVERFLOW_KEEP_BYTES {
            c.pull_bytes += mem.len();
            c.pull.push(mem);
        }
    }

    /// A registered, peer-readable buffer of exactly `size` bytes holding `value`, with its
    /// encoded `BulkRef` (cached with the buffer: same registration, same bytes) and, at checksum
    /// level Payload, the CRC32C of the encoded bytes.
    fn take_send_overflow<T: Proc>(
        &self,
        value: &T,
        size: usize,
        peer: &na::Addr,
    ) -> Result<(MemHandle, Vec<u8>, Option<u32>)> {
        let cached = (size <= OVERFLOW_KEEP_MAX)
            .then(|| {
                let mut c = lock(&self.overflow);
                let i = c
                    .send
                    .iter()
                    .rposition(|(m, _, p)| m.len() == size && p == peer)?;
                c.send_bytes -= size;
                let (m, d, _) = c.send.swap_remove(i);
                Some((m, d))
            })
            .flatten();
        let (mem, desc) = match cached {
            Some(e) => e,
            None => {
                let nac = self.class.na();
                let mem = nac
                    .mem_register(vec![0; size], Access::READ)
                    .map_err(Error::from_na)?;
                let r = BulkRef::from(BulkDesc::new(
                    local_segments(&mem),
                    crate::bulk::flags::READ_ONLY,
                    nac.mem_handle_serialize(&mem),
                ));
                let desc = proc::encode_to_vec(&r)?;
                (mem, desc)
            }
        };
        // One segment (registered just above, or cached from there): encoded, then summed in
        // one pass each. Only the Payload level carries the CRC: no pass over the body otherwise.
        let (mut r, mut crc) = (Ok(()), None);
        let level = self.level();
        mem.with_range(0, size, |seg, at, _, n| {
            r = encode_body(value, &mut seg[at..at + n]);
            if level == ChecksumLevel::Payload {
                crc = Some(header::payload_crc(&seg[at..at + n]));
            }
        })
        .map_err(Error::from_na)?;
        r?;
        Ok((mem, desc, crc))
    }

    /// Takes back a send overflow buffer no peer can read any more.
    fn give_send_overflow(&self, mem: MemHandle, desc: Vec<u8>, peer: na::Addr) {
        if mem.ref_count() != 1 || mem.len() > OVERFLOW_KEEP_MAX || mem.segments().len() != 1 {
            return;
        }
        let mut c = lock(&self.overflow);
        if c.send_bytes + mem.len() <= OVERFLOW_KEEP_BYTES {
            c.send_bytes += mem.len();
            c.send.push((mem, desc, peer));
        }
    }

    /// Whether `addr` is this context's own (a forward there is a forward to self).
    pub(crate) fn is_self(&self, addr: &na::Addr) -> bool {
        *addr == self.self_addr
    }

    pub(crate) fn level(&self) -> ChecksumLevel {
        self.class.options().checksum_level
    }

    fn tag(&self) -> Tag {
        let max = self.max_tag;
        loop {
            let raw = self.next_tag.fetch_add(1, Ordering::Relaxed);
            // The division only once the counter has passed the plugin's largest tag.
            let t = if raw < max { raw } else { raw % max };
            if t != 0 {
                return t;
            }
        }
    }

    /// The NA context, when this thread may post on it now rather than hand work off: the
    /// context is open, nothing was handed off before (which must go first, as
    /// `HandOff::post_or_push` keeps it), and nobody holds NA. `try_lock`: a caller may hold
    /// the state lock, and a progress holding NA may be waiting for it, so this never waits.
    /// The guard holds `None` once teardown took NA.
    #[inline]
    fn may_post_now(&self) -> Option<MutexGuard<'_, Option<na::Context>>> {
        if !self.handoff.is_empty() || self.closed.load(Ordering::Acquire) {
            return None;
        }
        try_lock(&self.na)
    }

    /// Posts `p` to NA now when no `progress` holds the NA context (Mercury's `HG_Forward` and
    /// `HG_Respond` call NA from the caller's thread too): the message leaves inside the call,
    /// not at the next `progress`. Otherwise (a `progress` is polling or blocked, possibly on
    /// another thread) it is queued and that `progress` is woken to post it (DESIGN §1).
    fn hand_off(&self, p: Post) {
        if self.closed.load(Ordering::Acquire) {
            // Teardown already drained the queue: fail the operation here, exactly once.
            self.fail_orphan(p);
            return;
        }
        match self
            .handoff
            .post_or_push(&self.na, p, |na, p| self.post(na, p))
        {
            Posted::Now | Posted::Queued { wake: false } => {}
            Posted::Queued { wake: true } => self.waker.wake(),
            // Teardown took the NA context or closed the queue: nothing will post it.
            Posted::Closed(p) => self.fail_orphan(p),
        }
    }

    /// Fails work that lost a race with teardown and runs its callback here, at once: the
    /// context has no `trigger` any more, and teardown's own run of the queue may be over.
    fn fail_orphan(&self, p: Post) {
        self.fail_post(p);
        self.run_queued_after_close();
    }

    /// Runs every callback still queued, on this thread, each once (the completion queue hands
    /// each entry to one popper); requests not yet handled are dropped. Only once the context
    /// is closed, when no `trigger` can run.
    fn run_queued_after_close(&self) {
        while let Some(e) = self.cq.pop() {
            match e {
                Entry::Forward { .. } | Entry::Done(..) => run_entry(e),
                Entry::Process(h, _) => {
                    tracing::debug!(rpc_id = h.id(), "hg: request dropped at context teardown")
                }
            }
        }
    }

    fn fail_post(&self, p: Post) {
        let token = match p {
            Post::Forward { token, .. } | Post::Respond { token, .. } | Post::Rma { token, .. } => {
                token
            }
            Post::Cancel(_) => return,
        };
        let mut st = lock(&self.st);
        match st.ops.get_mut(token) {
            Some(Op::Forward(f)) => {
                f.send_done.get_or_insert(Err(Error::Canceled));
                f.recv_pending = false;
                f.reply.get_or_insert(Err(Error::Canceled));
            }
            Some(Op::Respond { cb, .. }) | Some(Op::Rma { cb, .. }) => {
                if let Some(cb) = cb.take() {
                    self.cq.push(Entry::Done(cb, Err(Error::Canceled)));
                }
                st.ops.remove(token);
                return;
            }
            _ => return,
        }
        self.maybe_complete(&mut st, token);
    }

    /// Spin-then-block (as CaRT's progress spins before it sleeps): polls NA without blocking for
    /// up to `InitOptions::progress_spin` (never longer than `wait`). Returns what is left of
    /// `wait` to block for: zero once a completion is ready or work was handed off, so the
    /// caller never pays the blocking path's wake-up (eventfd, epoll) on a busy context.
    fn spin(&self, na: &na::Context, wait: Duration) -> Duration {
        let spin = self.class.options().progress_spin.min(wait);
        if spin.is_zero() {
            return wait;
        }
        let start = Instant::now();
        loop {
            match na.progress(Duration::ZERO) {
                Ok(n) if n > 0 => return Duration::ZERO,
                Ok(_) | Err(na::Error::Timeout) | Err(na::Error::Interrupt) => {}
                // The blocking call that follows reports it.
                Err(_) => return Duration::ZERO,
            }
            if !self.handoff.is_empty() {
                return Duration::ZERO;
            }
            let spent = start.elapsed();
            if spent >= spin {
                return wait.saturating_sub(spent);
            }
            std::hint::spin_loop();
        }
    }

    /// Keeps `request_post_init` unexpected receives posted on a listening class.
    fn ensure_unexpected(&self, na: &na::Context) {
        if !self.class.na().is_listening()
            || !self.repost_due.load(Ordering::Relaxed)
            || self.closed.load(Ordering::Acquire)
        {
            return;
        }
        self.repost_due.store(false, Ordering::Relaxed);
        let size = self.class.na().max_unexpected_size();
        let mut st = lock(&self.st);
        // No need to clear them: only the received length is ever read.
        while let Some(buf) = st.reposts.pop() {
            na.recv_unexpected(buf, UNEXPECTED);
        }
        // In place of the buffers requests' handles kept (already counted as posted), then up to
        // the target, from the pool those handles give their buffers back to.
        let fresh = st.replacements + st.unexpected_target.saturating_sub(st.unexpected_posted);
        for _ in 0..fresh {
            na.recv_unexpected(self.take_send_buf(size), UNEXPECTED);
        }
        st.unexpected_posted += fresh - st.replacements;
        st.replacements = 0;
    }

    /// Posts `request_post_incr` more unexpected receives (up to `request_post_max`) when one
    /// round of completions used every posted one (Mercury's `request_post_incr`).
    fn maybe_grow(&self, comps: &[na::Completion]) {
        let n = comps
            .iter()
            .filter(|c| {
                c.user == UNEXPECTED && c.kind == OpKind::RecvUnexpected && c.result.is_ok()
            })
            .count();
        if n == 0 {
            return;
        }
        let o = self.class.options();
        let mut st = lock(&self.st);
        if n >= st.unexpected_target && st.unexpected_target < o.request_post_max {
            self.repost_due.store(true, Ordering::Relaxed);
            st.unexpected_target =
                (st.unexpected_target + o.request_post_incr).min(o.request_post_max);
            tracing::debug!(
                target = st.unexpected_target,
                "hg: more unexpected receives posted"
            );
        }
    }

    /// Posts handed-off work; returns how many operations it posted.
    fn post_pending(&self, na: &na::Context, posts: &mut VecDeque<Post>) -> usize {
        self.handoff.take_all(posts);
        let n = posts.len();
        while let Some(p) = posts.pop_front() {
            self.post(na, p);
        }
        n
    }

    /// Posts forward `token`'s reply receive and request send (to the destination and with the
    /// tag its record holds), or ends it when it was canceled or timed out before this; under
    /// the context's state lock.
    #[inline(always)]
    fn post_forward(
        &self,
        na: &na::Context,
        st: &mut CtxState,
        token: u64,
        mut send: SendMsg<'_>,
        send_len: usize,
        recv: Option<MsgBuf>,
    ) {
        let Some(Op::Forward(f)) = st.ops.get_mut(token) else {
            return;
        };
        if f.canceled || f.timed_out {
            let e = if f.timed_out {
                Error::Timeout
            } else {
                Error::Canceled
            };
            f.send_done = Some(Err(e));
            f.recv_pending = false;
            f.reply = Some(Err(e));
            self.maybe_complete(st, token);
            return;
        }
        f.posted = true;
        // The NA plugin's own header goes in front (its sender address, …).
        na.msg_init_unexpected(send.bytes_mut());
        let (dest, tag) = (&f.dest, f.tag);
        // The reply's receive goes first, so the reply can never find it missing.
        let recv_op = recv.map(|buf| na.recv_expected(buf, dest, tag, token));
        f.recv_op = recv_op.and_then(op_id);
        // A request NA can inject is copied out at once: no send completion to wait for.
        if na.inject_unexpected(send.bytes_mut(), send_len, dest, tag) {
            f.send_done = Some(Ok(()));
            let one_way = !f.recv_pending;
            if let SendMsg::Pooled(b) = send {
                self.give_send_buf(b);
            }
            if one_way {
                self.maybe_complete(st, token);
            }
            return;
        }
        let send = self.owned(send, send_len, false);
        let send_op = na.send_unexpected(send, send_len, dest, tag, token);
        f.send_op = op_id(send_op);
    }

    /// Posts a bulk transfer's NA operations. Every part carries the transfer's token; its
    /// completions are counted.
    fn post_rma(
        &self,
        na: &na::Context,
        token: u64,
        pull: bool,
        parts: &[RmaPart],
        dest: &na::Addr,
    ) {
        for p in parts {
            let (l, lo, r, ro) = (&p.local, p.local_offset, &p.remote, p.remote_offset);
            if pull {
                na.get(l, lo, r, ro, p.len, dest, token);
            } else {
                na.put(l, lo, r, ro, p.len, dest, token);
            }
        }
    }

    fn post(&self, na: &na::Context, p: Post) {
        let mut st = lock(&self.st);
        match p {
            Post::Forward {
                token,
                send,
                send_len,
                recv,
            } => self.post_forward(na, &mut st, token, SendMsg::Pooled(send), send_len, recv),
            Post::Respond {
                token,
                dest,
                tag,
                buf,
                len,
                ack,
            } => {
                if let Some((atoken, abuf)) = ack {
                    // Let go of already (its peer was removed meanwhile): no receive for it.
                    if let Some(Op::AckWait { op, .. }) = st.ops.get_mut(atoken) {
                        *op = Some(na.recv_expected(abuf, &dest, tag, atoken));
                    }
                } else if na.inject_expected(buf.as_slice(), len, &dest, tag) {
                    // Its record lives until its send is done: this is that moment.
                    let cb = match st.ops.remove(token) {
                        Some(Op::Respond { cb, .. }) => cb,
                        _ => None,
                    };
                    drop(st);
                    self.replied(SendMsg::Pooled(buf), cb);
                    return;
                }
                na.send_expected(buf, len, &dest, tag, token);
            }
            Post::Rma {
                token,
                pull,
                parts,
                dest,
            } => {
                drop(st);
                self.post_rma(na, token, pull, &parts, &dest);
            }
            Post::Cancel(token) => self.cancel_locked(na, &mut st, token, false),
        }
    }

    /// Cancels a forward (`timeout` says why).
    fn cancel_locked(&self, na: &na::Context, st: &mut CtxState, token: u64, timeout: bool) {
        let Some(Op::Forward(f)) = st.ops.get_mut(token) else {
            return;
        };
        if timeout {
            f.timed_out = true;
        } else {
            f.canceled = true;
        }
        if !f.posted {
            // Nothing reached NA (a self forward, or still queued): complete now.
            let e = if timeout {
                Error::Timeout
            } else {
                Error::Canceled
            };
            f.send_done.get_or_insert(Err(e));
            if f.recv_pending {
                f.recv_pending = false;
                f.reply = Some(Err(e));
            }
            if !f.pulling() {
                self.maybe_complete(st, token);
            }
            return;
        }
        let pulls = f
            .over
            .iter()
            .flat_map(|o| o.pull_ops.iter())
            .copied()
            .map(Some);
        let own = [f.recv_op, f.send_op].map(|o| o.map(|id| na::OpId(id.get())));
        for op in own.into_iter().chain(pulls).flatten() {
            let _ = na.cancel(op);
        }
    }

    /// Lets go of the output overflow registration `token` waits on: cancels its ack receive
    /// (whose completion removes it), or removes it at once when the receive is not posted yet.
    fn release_ack(&self, na: &na::Context, st: &mut CtxState, token: u64) {
        let Some(Op::AckWait { op, released, .. }) = st.ops.get_mut(token) else {
            return;
        };
        if std::mem::replace(released, true) {
            return;
        }
        match op {
            Some(id) => {
                let _ = na.cancel(*id);
            }
            None => {
                take_op(st, token);
            }
        }
    }

    /// Lets go of every output overflow registration kept for `peer` (removed, or failing).
    fn release_peer(&self, na: &na::Context, st: &mut CtxState, peer: &na::Addr) {
        if st.ack_waits == 0 {
            return;
        }
        let tokens: Vec<u64> = st
            .ops
            .iter()
            .filter_map(|(t, o)| match o {
                Op::AckWait {
                    dest,
                    released: false,
                    ..
                } if dest == peer => Some(t),
                _ => None,
            })
            .collect();
        if !tokens.is_empty() {
            tracing::debug!(
                n = tokens.len(),
                "hg: peer gone: output overflow registrations released without its ack"
            );
        }
        for t in tokens {
            self.release_ack(na, st, t);
        }
    }

    /// Acts on peers removed (`Class::addr_set_remove`) since the last look: one atomic load
    /// when there is nothing new.
    fn apply_removals(&self, na: &na::Context) {
        let removed = &self.class.inner.removed;
        let seen = self.seen_removed.load(Ordering::Relaxed);
        if removed.newest() == seen {
            return;
        }
        let mut peers = Vec::new();
        let newest = removed.since(seen, &mut peers);
        self.seen_removed.store(newest, Ordering::Relaxed);
        let mut st = lock(&self.st);
        for p in &peers {
            self.release_peer(na, &mut st, p);
        }
    }

    fn nearest_deadline(&self) -> Option<Instant> {
        if self.deadlines.load(Ordering::Acquire) == 0 {
            return None;
        }
        let st = lock(&self.st);
        if st.timed == 0 && st.ack_waits == 0 {
            return None;
        }
        st.ops
            .values()
            .filter_map(|o| match o {
                Op::Forward(f) if !f.timed_out => f.deadline,
                Op::AckWait {
                    deadline,
                    released: false,
                    ..
                } => *deadline,
                _ => None,
            })
            .min()
    }

    #[inline]
    fn check_deadlines(&self, na: &na::Context) {
        // Inline: twice per progress pass, and nothing to do while no operation has a deadline.
        if self.deadlines.load(Ordering::Acquire) == 0 {
            return;
        }
        self.check_deadlines_due(na);
    }

    /// [`CtxInner::check_deadlines`] while some operation has a deadline.
    #[inline(never)]
    fn check_deadlines_due(&self, na: &na::Context) {
        let mut st = lock(&self.st);
        if st.ack_waits > 0 {
            let now = Instant::now();
            let due: Vec<u64> = st
                .ops
                .iter()
                .filter_map(|(t, o)| match o {
                    Op::AckWait {
                        deadline: Some(d),
                        released: false,
                        ..
                    } if *d <= now => Some(t),
                    _ => None,
                })
                .collect();
            for t in due {
                tracing::warn!(
                    token = t,
                    "hg: no ack for an overflowed reply before overflow_ack_timeout: registration released"
                );
                self.release_ack(na, &mut st, t);
            }
        }
        if st.timed == 0 {
            return;
        }
        let now = Instant::now();
        let due: Vec<u64> = st
            .ops
            .iter()
            .filter_map(|(t, o)| match o {
                Op::Forward(f) if !f.timed_out && f.deadline.is_some_and(|d| d <= now) => Some(t),
                _ => None,
            })
            .collect();
        for t in due {
            tracing::debug!(token = t, "hg: forward reached its deadline");
            self.cancel_locked(na, &mut st, t, true);
        }
    }

    fn on_completion(&self, this: &Arc<CtxInner>, na: Option<&na::Context>, c: na::Completion) {
        if c.user == UNEXPECTED && c.kind == OpKind::RecvUnexpected {
            self.on_request(this, na, c);
            return;
        }
        let mut st = lock(&self.st);
        let token = c.user;
        // A reply's receive (whatever its result: `on_reply` takes the error) and the common
        // successes (a request sent, a reply sent without overflow) are handled here; everything
        // else in `on_completion_rare`, out of line, so the path every RPC takes stays short.
        if let Some(Op::Forward(f)) = st.ops.get_mut(token) {
            if c.kind == OpKind::RecvExpected {
                f.recv_op = None;
                f.recv_pending = false;
                let result = c.result.map_err(Error::from_na);
                self.on_reply(this, na, f, token, result, c.buf, c.len);
                self.maybe_complete(&mut st, token);
                return;
            }
        }
        if c.result.is_ok() {
            match st.ops.get_mut(token) {
                Some(Op::Forward(f)) if c.kind == OpKind::SendUnexpected => {
                    f.send_op = None;
                    if let Some(b) = c.buf {
                        self.give_send_buf(b);
                    }
                    f.send_done = Some(Ok(()));
                    self.maybe_complete(&mut st, token);
                    return;
                }
                Some(Op::Respond { ack: None, .. }) => {
                    let Some(Op::Respond { cb, .. }) = st.ops.remove(token) else {
                        unreachable!()
                    };
                    drop(st);
                    if let Some(b) = c.buf {
                        self.give_recv_buf(b);
                    }
                    if let Some(cb) = cb {
                        self.cq.push(Entry::Done(cb, Ok(())));
                    }
                    return;
                }
                _ => {}
            }
        }
        self.on_completion_rare(this, na, st, c);
    }

    /// [`CtxInner::on_completion`] of everything but the common successes: errors, bulk and
    /// overflow parts, acks, late completions.
    #[cold]
    #[inline(never)]
    fn on_completion_rare(
        &self,
        this: &Arc<CtxInner>,
        na: Option<&na::Context>,
        mut st: MutexGuard<'_, CtxState>,
        c: na::Completion,
    ) {
        let token = c.user;
        let result = c.result.map_err(Error::from_na);
        let mut ack = None;
        // A peer our request could not reach: what we keep for it is let go of.
        let mut dead_peer = None;
        match st.ops.get_mut(token) {
            Some(Op::Forward(f)) => {
                match c.kind {
                    OpKind::SendUnexpected => {
                        f.send_op = None;
                        if let Some(b) = c.buf {
                            self.give_send_buf(b);
                        }
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "hg: request send failed");
                            if e == Error::HostUnreach {
                                dead_peer = Some(f.dest.clone());
                            }
                            if let (Some(op), Some(na)) = (f.recv_op, na) {
                                let op = na::OpId(op.get());
                                let _ = na.cancel(op);
                            }
                        }
                        f.send_done = Some(result);
                    }
                    // (RecvExpected: a reply, handled in `on_completion`.)
                    OpKind::Get => {
                        let Some((_, _, _, _, parts)) =
                            f.over.as_mut().and_then(|o| o.pulling.as_mut())
                        else {
                            tracing::debug!(token, "hg: output pull part after its end dropped");
                            return;
                        };
                        let Some(result) = parts.done(result) else {
                            // More parts of the output pull to come.
                            return;
                        };
                        let o = f.over.as_mut().expect("pull in flight");
                        o.pull_ops.clear();
                        let (mem, size, crc, code, _) = o.pulling.take().expect("pull in flight");
                        let r = result.and_then(|()| {
                            f.handle
                                .set_output(self.pulled(this, mem, size, crc)?, None);
                            Ok(())
                        });
                        if r.is_ok() {
                            f.replied = true;
                            // Tell the target it may release its output registration.
                            ack = Some((f.dest.clone(), f.tag));
                        }
                        f.reply = Some(r.and(code));
                    }
                    _ => {}
                }
                if let (Some((dest, tag)), Some(na)) = (ack, na) {
                    let t = st.ops.insert(Op::Discard);
                    na.send_expected(MsgBuf::new(1), 1, &dest, tag, t);
                }
                if let (Some(peer), Some(na)) = (dead_peer, na) {
                    self.release_peer(na, &mut st, &peer);
                }
                self.maybe_complete(&mut st, token);
            }
            Some(Op::Respond { .. }) => {
                let Some(Op::Respond { cb, ack }) = st.ops.remove(token) else {
                    unreachable!()
                };
                if let Some(b) = c.buf {
                    self.give_recv_buf(b);
                }
                if let (Some(atoken), Some(na)) = (ack, na) {
                    match result {
                        // The client may pull from now on, for `overflow_ack_timeout`.
                        Ok(()) => {
                            let wait = self.class.options().overflow_ack_timeout;
                            if let Some(Op::AckWait { deadline, .. }) = st.ops.get_mut(atoken) {
                                *deadline = wait.and_then(|w| Instant::now().checked_add(w));
                            }
                        }
                        // The reply did not go: nobody will pull or acknowledge. The peer is
                        // failing: let go of everything kept for it.
                        Err(e) => {
                            tracing::debug!(error = %e, "hg: reply with overflow not sent");
                            if let Some(Op::AckWait { dest, .. }) = st.ops.get(atoken) {
                                let dest = dest.clone();
                                self.release_peer(na, &mut st, &dest);
                            }
                        }
                    }
                }
                if let Some(cb) = cb {
                    self.cq.push(Entry::Done(cb, result));
                }
            }
            Some(Op::Rma { parts, .. }) => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "hg: a bulk transfer part failed");
                }
                if let Some(r) = parts.done(result) {
                    if let Some(Op::Rma { cb: Some(cb), .. }) = st.ops.remove(token) {
                        self.cq.push(Entry::Done(cb, r));
                    }
                }
            }
            Some(Op::AckWait { .. }) => {
                // The ack came: the client has pulled, nobody reads the buffer any more. A
                // canceled receive (released at overflow_ack_timeout, or its peer gone) lets the
                // registration end instead: a late pull must not read a later reply.
                if let Some(Op::AckWait {
                    mem, desc, dest, ..
                }) = take_op(&mut st, token)
                {
                    if result.is_ok() {
                        self.give_send_overflow(mem, desc, dest);
                    }
                }
            }
            Some(Op::Discard) => {
                take_op(&mut st, token);
            }
            Some(Op::InputPull { parts, .. }) => {
                let Some(result) = parts.done(result) else {
                    // More parts of the input pull to come.
                    return;
                };
                let Some(Op::InputPull {
                    handle,
                    handler,
                    mem,
                    size,
                    crc,
                    ..
                }) = st.ops.remove(token)
                else {
                    unreachable!()
                };
                drop(st);
                let r = result.and_then(|()| self.pulled(this, mem, size, crc));
                match r {
                    Ok(body) => {
                        handle.set_input(body);
                        if !handle.needs_response() {
                            // A one-way request with more data: the origin keeps its
                            // registration until we say we are done with it.
                            if let (Some(na), Some((dest, tag))) = (na, handle.reply_route()) {
                                let t = lock(&self.st).ops.insert(Op::Discard);
                                na.send_expected(MsgBuf::new(1), 1, &dest, tag, t);
                            }
                        }
                        self.cq.push(Entry::Process(handle, handler));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "hg: could not fetch an overflowed input");
                        if handle.needs_response() {
                            let _ = handle.respond_error(e);
                        }
                    }
                }
            }
            None => {
                // A late completion of an operation already finished (a reply after its
                // forward was canceled or timed out): dropped, as mercury #470 asks.
                tracing::debug!(token, kind = ?c.kind, "hg: completion of a finished operation dropped");
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_reply(
        &self,
        this: &Arc<CtxInner>,
        na: Option<&na::Context>,
        f: &mut Fwd,
        token: u64,
        result: Result<()>,
        buf: Option<MsgBuf>,
        len: usize,
    ) {
        if let Err(e) = result {
            f.reply = Some(Err(e));
            return;
        }
        if f.ack_only {
            f.reply = Some(Ok(()));
            return;
        }
        let Some(buf) = buf else {
            f.reply = Some(Err(Error::ProtocolError));
            return;
        };
        let data = &buf.as_slice()[..len.min(buf.capacity())];
        let level = self.level();
        let r = (|| {
            let d = header::decode_response(data, level)?;
            if d.header.cookie != u16::from(f.cookie) {
                tracing::warn!(
                    got = d.header.cookie,
                    want = f.cookie,
                    "hg: reply cookie mismatch"
                );
                return Err(Error::ProtocolError);
            }
            let code = d.header.result();
            let body = &data[d.body_offset..];
            if d.header.flags & flags::MORE_DATA != 0 {
                self.pull_output(na, f, token, body, d.payload_crc, code)?;
                return Ok(None);
            }
            header::verify_payload(level, d.payload_crc, body)?;
            Ok(Some((code, d.body_offset)))
        })();
        match r {
            Ok(Some((code, start))) => {
                let end = data.len();
                // The output is decoded where it arrived; the buffer returns to the pool when
                // the handle lets go of it (its next forward, or its end).
                let (out, back) = Bytes::in_message(buf, start..end, this, true);
                // The reply's buffer, when the bytes did not keep it, stays with the handle for
                // its next forward.
                f.handle.set_output(out, back);
                f.replied = true;
                f.reply = Some(code);
            }
            Ok(None) => self.give_recv_buf(buf),
            Err(e) => {
                self.give_recv_buf(buf);
                tracing::warn!(error = %e, rpc_id = f.rpc_id, "hg: bad reply");
                f.reply = Some(Err(e));
            }
        }
    }

    /// A reply whose output overflowed (MORE_DATA): starts pulling the output its descriptor
    /// names; the forward completes once the pull does. Out of line: small outputs are the
    /// common case.
    #[cold]
    #[inline(never)]
    fn pull_output(
        &self,
        na: Option<&na::Context>,
        f: &mut Fwd,
        token: u64,
        body: &[u8],
        crc: u32,
        code: Result<()>,
    ) -> Result<()> {
        let (mem, parts, size) = self.overflow_pull(body)?;
        let na = na.ok_or(Error::Canceled)?;
        let o = f.over.get_or_insert_with(Default::default);
        o.pull_ops = parts
            .iter()
            .map(|p| {
                let (l, lo, r, ro) = (&p.local, p.local_offset, &p.remote, p.remote_offset);
                na.get(l, lo, r, ro, p.len, &f.dest, token)
            })
            .collect();
        o.pulling = Some((mem, size, crc, code, Parts::new(parts.len())));
        Ok(())
    }

    /// Queues the forward's callback once both halves (and any output pull) are done.
    fn maybe_complete(&self, st: &mut CtxState, token: u64) {
        let done = match st.ops.get(token) {
            Some(Op::Forward(f)) => f.send_done.is_some() && !f.recv_pending && !f.pulling(),
            _ => false,
        };
        if !done {
            return;
        }
        let Some(Op::Forward(mut f)) = st.ops.remove(token) else {
            return;
        };
        if f.deadline.is_some() {
            st.timed -= 1;
            st.sync_deadlines();
        }
        let send = f.send_done.take().unwrap_or(Ok(()));
        let reply = f.reply.take().unwrap_or(Ok(()));
        let mut result = if f.replied {
            // A reply arrived: it is the real result even if cancel or timeout came late.
            reply
        } else {
            send.and(reply)
        };
        if result == Err(Error::Canceled) && f.timed_out {
            result = Err(Error::Timeout);
        }
        if let Some((mem, desc)) = f.over.as_mut().and_then(|o| o.extra.take()) {
            // The target answered (or acknowledged a one-way request) only after its pull:
            // nobody reads the buffer any more. Otherwise (cancel, timeout, failure) a late
            // pull may still come, so the registration ends here.
            if f.replied || (f.ack_only && result.is_ok()) {
                self.give_send_overflow(mem, desc, f.dest.clone());
            }
        }
        f.handle.finish_forward();
        let rpc_id = f.rpc_id;
        if let Some(cb) = f.cb.take() {
            // The record is done with: its handle reference moves into the entry (no second
            // count taken and dropped).
            self.cq.push(Entry::Forward {
                cb,
                handle: f.handle,
                result,
                rpc_id,
            });
        }
    }

    fn on_request(&self, this: &Arc<CtxInner>, na: Option<&na::Context>, c: na::Completion) {
        let Some(buf) = c.buf else { return };
        let mut repost = true;
        // The buffer, unless the request's handle took it (its input is read in place).
        let back = match c.result {
            Err(na::Error::Canceled) => {
                repost = false;
                Some(buf)
            }
            Err(e) => {
                tracing::warn!(error = %e, "hg: unexpected receive failed");
                Some(buf)
            }
            Ok(()) => {
                let uh = self.class.na().unexpected_header_size();
                let len = c.len.min(buf.capacity());
                if let Some(source) = c.source {
                    self.accept_request(this, na, buf, uh.min(len), len, source, c.tag)
                } else {
                    tracing::warn!("hg: unexpected message without a source");
                    Some(buf)
                }
            }
        };
        // The next progress pass looks at the posted receives again.
        self.repost_due.store(true, Ordering::Relaxed);
        let mut st = lock(&self.st);
        if na.is_none() || !repost || self.closed.load(Ordering::Acquire) {
            st.unexpected_posted -= 1;
            return;
        }
        // Reposted by the next progress, after the reply this request is about to get: a receive
        // post runs through the provider (≈ 700 instructions under callgrind) and would delay
        // that reply. A buffer the request's handle kept is replaced by a pooled one.
        match back {
            Some(buf) => st.reposts.push(buf),
            None => st.replacements += 1,
        }
    }

    /// Decodes and dispatches the request in `buf[start..len]` from `source`. Returns the buffer
    /// unless the request's handle keeps it (its input, read in place).
    #[allow(clippy::too_many_arguments)]
    fn accept_request(
        &self,
        this: &Arc<CtxInner>,
        na: Option<&na::Context>,
        buf: MsgBuf,
        start: usize,
        len: usize,
        source: na::Addr,
        tag: Tag,
    ) -> Option<MsgBuf> {
        let data = &buf.as_slice()[start..len];
        let level = self.level();
        let d = match header::decode_request(data, level) {
            Ok(d) => d,
            Err(e) => {
                self.bad_requests.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, len = data.len(), "hg: bad request dropped");
                return Some(buf);
            }
        };
        let h = d.header;
        let _s = na::hop_span!(DEBUG, "hg.request", rpc_id = h.id, tag);
        let no_response = h.flags & flags::NO_RESPONSE != 0;
        let answer = |e: Error| {
            if !no_response {
                if let Some(na) = na {
                    self.send_error(na, &source, tag, h.cookie, e);
                }
            }
        };
        let rpc = self.class.with_rpc(h.id, |i| {
            let types = (i.input.type_id(), i.output.type_id());
            i.handler.clone().map(|hd| (hd, types))
        });
        let (handler, types) = match rpc {
            Ok(info) => match info {
                Some(hd) => hd,
                None => {
                    tracing::warn!(rpc_id = h.id, "hg: request for an id with no handler here");
                    answer(Error::NoEntry);
                    return Some(buf);
                }
            },
            Err(e) => {
                tracing::warn!(rpc_id = h.id, "hg: request for an unregistered id");
                answer(e);
                return Some(buf);
            }
        };
        let body = &data[d.body_offset..];
        let server = |input| {
            Handle::new(
                this.clone(),
                HandleState::new(
                    source.clone(),
                    h.id,
                    Some(ServerSide {
                        tag,
                        cookie: h.cookie,
                        no_response,
                        input,
                        responded: false,
                        self_client: None,
                        types,
                    }),
                ),
            )
        };
        if h.flags & flags::MORE_DATA != 0 {
            let handle = server(None);
            if let Err(e) = self.pull_input(na, handle, handler, body, d.payload_crc, &source) {
                answer(e);
            }
            return Some(buf);
        }
        if let Err(e) = header::verify_payload(level, d.payload_crc, body) {
            self.bad_requests.fetch_add(1, Ordering::Relaxed);
            answer(e);
            return Some(buf);
        }
        // Decoded where it arrived (as Mercury decodes from its receive buffer); the buffer
        // returns to the pool when the handle lets go of it. The handle is made with its input
        // in place (no lock of it to set the input afterwards).
        let (input, back) = Bytes::in_message(buf, start + d.body_offset..len, this, false);
        let handle = server(Some(input));
        self.cq.push(Entry::Process(handle, handler));
        back
    }

    /// A request whose input overflowed (MORE_DATA): starts pulling the input its descriptor
    /// names; the handler runs once the pull completes. A bad descriptor is the error to
    /// answer. Out of line: small inputs are the common case.
    #[cold]
    #[inline(never)]
    fn pull_input(
        &self,
        na: Option<&na::Context>,
        handle: Handle,
        handler: Handler,
        body: &[u8],
        crc: u32,
        source: &na::Addr,
    ) -> Result<()> {
        match (self.overflow_pull(body), na) {
            (Ok((mem, parts, size)), Some(na)) => {
                let t = lock(&self.st).ops.insert(Op::InputPull {
                    handle,
                    handler,
                    mem,
                    size,
                    crc,
                    parts: Parts::new(parts.len()),
                });
                for p in parts {
                    let (l, lo, r, ro) = (&p.local, p.local_offset, &p.remote, p.remote_offset);
                    na.get(l, lo, r, ro, p.len, source, t);
                }
                Ok(())
            }
            (Err(e), _) => {
                self.bad_requests.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "hg: bad overflow descriptor");
                Err(e)
            }
            (Ok(_), None) => Ok(()),
        }
    }

    fn send_error(&self, na: &na::Context, dest: &na::Addr, tag: Tag, cookie: u8, e: Error) {
        let level = self.level();
        let mut buf = MsgBuf::new(level.header_size());
        let h = ResponseHeader::for_result(Err(e), u16::from(cookie));
        if header::encode_response(&h, level, buf.as_mut_slice(), 0).is_ok() {
            let t = lock(&self.st).ops.insert(Op::Discard);
            na.send_expected(buf, level.header_size(), dest, tag, t);
        }
    }

    fn teardown(&self, this: &Arc<CtxInner>) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let na = lock(&self.na).take();
        // Work handed off but never posted: fail it. The queue closes as it drains, so work a
        // racing thread hands off from now on comes back to that thread, which fails it.
        let mut posts = VecDeque::new();
        self.handoff.close(&mut posts);
        for p in posts {
            self.fail_post(p);
        }
        if let Some(na) = na {
            for c in na.close() {
                self.on_completion(this, None, c);
            }
        }
        // Whatever is still waiting had nothing left in NA: it ends canceled.
        let tokens: Vec<u64> = lock(&self.st).ops.keys().collect();
        for t in tokens {
            let mut st = lock(&self.st);
            match st.ops.get_mut(t) {
                Some(Op::Forward(f)) => {
                    f.send_done.get_or_insert(Err(Error::Canceled));
                    f.recv_pending = false;
                    if let Some(o) = f.over.as_mut() {
                        o.pulling = None;
                    }
                    f.reply.get_or_insert(Err(Error::Canceled));
                    self.maybe_complete(&mut st, t);
                }
                Some(_) => match take_op(&mut st, t) {
                    Some(Op::Respond { cb: Some(cb), .. }) | Some(Op::Rma { cb: Some(cb), .. }) => {
                        self.cq.push(Entry::Done(cb, Err(Error::Canceled)));
                    }
                    _ => {}
                },
                None => {}
            }
        }
        // Run every callback still queued, here, once; unhandled requests are dropped.
        self.run_queued_after_close();
    }

    // ---- entry points used by `Handle` ----

    /// Starts a forward prepared by `Handle::forward`.
    pub(crate) fn start_forward<T: Proc>(
        &self,
        this: &Arc<CtxInner>,
        mut req: ForwardReq<'_>,
        input: &T,
    ) -> Result<()> {
        let spare = req.spare.take();
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Canceled);
        }
        let level = self.level();
        let hs = level.header_size();
        let size = input.encoded_size();
        if req.to_self {
            if let Some(b) = spare {
                self.give_recv_buf(b);
            }
            return self.forward_to_self(this, req, input);
        }
        let handle = req.handle;
        let (rpc_id, cookie, no_response, deadline) =
            (req.rpc_id, req.cookie, req.no_response, req.deadline);
        let nac = self.class.na();
        let uh = nac.unexpected_header_size();
        let mut hdr = RequestHeader {
            id: rpc_id,
            flags: if no_response { flags::NO_RESPONSE } else { 0 },
            cookie,
        };
        let full = uh + hs + size;
        let max = nac.max_unexpected_size();
        // Zeroed only when used (larger messages take a pooled buffer).
        let mut inline: [u8; INLINE_MSG];
        let on_stack = fits_inline(nac, full, max);
        let (mut send, len, extra, crc) = if on_stack {
            inline = [0u8; INLINE_MSG];
            encode_body(input, &mut inline[uh + hs..full])?;
            (SendMsg::Inline(&mut inline[..full]), full, None, None)
        } else if full <= max {
            let mut buf = self.take_send_buf(max);
            encode_body(input, &mut buf.as_mut_slice()[uh + hs..full])?;
            (SendMsg::Pooled(buf), full, None, None)
        } else {
            let (buf, len, extra, crc) =
                self.overflow_input(input, size, &req.dest, rpc_id, uh + hs, &mut hdr)?;
            (SendMsg::Pooled(buf), len, extra, crc)
        };
        let body_len = len - uh - hs;
        header::encode_request(&hdr, level, &mut send.bytes_mut()[uh..], body_len)?;
        if let Some(crc) = crc {
            header::set_payload_crc(level, &mut send.bytes_mut()[uh..], crc);
        }
        let more = extra.is_some();
        let ack_only = no_response && more;
        // A one-way forward has no reply buffer to reuse (its handle kept one only if it was
        // reset from a two-way RPC; that one is freed).
        let recv = if !no_response {
            let max = nac.max_expected_size();
            Some(match spare {
                Some(b) if b.capacity() == max => b,
                _ => self.take_recv_buf(max),
            })
        } else if more {
            Some(MsgBuf::new(1))
        } else {
            None
        };
        let tag = self.tag();
        let mut st = lock(&self.st);
        st.timed += usize::from(deadline.is_some());
        st.sync_deadlines();
        let fwd = Fwd {
            recv_pending: recv.is_some(),
            ack_only,
            // No receive (one-way without overflow): the send alone completes it.
            reply: if recv.is_none() { Some(Ok(())) } else { None },
            over: extra.map(|e| {
                Box::new(FwdOverflow {
                    extra: Some(e),
                    ..FwdOverflow::default()
                })
            }),
            ..Fwd::new(req, tag)
        };
        let token = st.ops.insert(Op::Forward(fwd));
        handle.begin_forward(token);
        // Posted right here when this thread may, without letting go of the state lock and
        // taking it again as `hand_off` → `post` would.
        if let Some(guard) = self.may_post_now() {
            if let Some(na) = guard.as_ref() {
                self.post_forward(na, &mut st, token, send, len, recv);
                tracing::debug!(rpc_id, tag, len, more, "hg: forward posted");
                return Ok(());
            }
        }
        drop(st);
        tracing::debug!(rpc_id, tag, len, more, "hg: forward queued");
        let send = self.owned(send, len, false);
        self.hand_off(Post::Forward {
            token,
            send,
            send_len: len,
            recv,
        });
        Ok(())
    }

    /// The request of an input over the eager size (MORE_DATA): the input goes into a
    /// registered buffer the target pulls from, and the request carries its descriptor after
    /// `at` bytes of headers. Out of line: small inputs are the common case.
    #[cold]
    #[inline(never)]
    #[allow(clippy::type_complexity)]
    fn overflow_input<T: Proc>(
        &self,
        input: &T,
        size: usize,
        dest: &na::Addr,
        rpc_id: RpcId,
        at: usize,
        hdr: &mut RequestHeader,
    ) -> Result<(MsgBuf, usize, Option<(MemHandle, Vec<u8>)>, Option<u32>)> {
        let nac = self.class.na();
        let max = self.class.options().max_overflow_size;
        if size > max {
            tracing::warn!(
                size,
                max,
                rpc_id,
                "hg: input larger than the overflow maximum"
            );
            return Err(Error::MsgSize);
        }
        let (mem, desc, crc) = self.take_send_overflow(input, size, dest)?;
        let bsize = desc.len();
        if at + bsize > nac.max_unexpected_size() {
            return Err(Error::MsgSize);
        }
        let mut buf = self.take_send_buf(nac.max_unexpected_size());
        buf.as_mut_slice()[at..at + bsize].copy_from_slice(&desc);
        hdr.flags |= flags::MORE_DATA;
        Ok((buf, at + bsize, Some((mem, desc)), crc))
    }

    /// [`CtxInner::start_forward`] to this context's own address (`HG_CORE_SELF_FORWARD`): no
    /// NA, the same encode and decode. Out of line: the network path is the common one.
    #[cold]
    #[inline(never)]
    fn forward_to_self<T: Proc>(
        &self,
        this: &Arc<CtxInner>,
        req: ForwardReq<'_>,
        input: &T,
    ) -> Result<()> {
        let (handle, rpc_id, no_response, deadline) =
            (req.handle, req.rpc_id, req.no_response, req.deadline);
        // Forward to self (`HG_CORE_SELF_FORWARD`): no NA, the same encode/decode.
        let bytes = proc::encode_to_vec(input)?;
        let (handler, types) = self
            .class
            .with_rpc(rpc_id, |i| {
                let types = (i.input.type_id(), i.output.type_id());
                i.handler.clone().map(|hd| (hd, types))
            })?
            .ok_or(Error::NoEntry)?;
        let (dest, cookie) = (req.dest.clone(), req.cookie);
        let mut st = lock(&self.st);
        st.timed += usize::from(deadline.is_some());
        st.sync_deadlines();
        // Nothing to send: the "send" is done; the handler's respond is the reply.
        let fwd = Fwd {
            send_done: Some(Ok(())),
            recv_pending: !no_response,
            ..Fwd::new(req, 0)
        };
        let token = st.ops.insert(Op::Forward(fwd));
        let server = Handle::new(
            this.clone(),
            HandleState::new(
                dest,
                rpc_id,
                Some(ServerSide {
                    tag: 0,
                    cookie,
                    no_response,
                    input: Some(Bytes::Owned(bytes)),
                    responded: false,
                    self_client: Some(token),
                    types,
                }),
            ),
        );
        handle.begin_forward(token);
        self.cq.push(Entry::Process(server, handler));
        self.maybe_complete(&mut st, token);
        drop(st);
        if deadline.is_some() {
            self.waker.wake();
        }
        Ok(())
    }

    /// Cancels the forward `token` (from any thread).
    pub(crate) fn cancel_forward(&self, token: u64) {
        {
            let mut st = lock(&self.st);
            if let Some(Op::Forward(f)) = st.ops.get_mut(token) {
                if !f.posted {
                    f.canceled = true;
                    // Not in NA (self forward, or still queued): nothing to wait for.
                    if f.dest == self.self_addr {
                        f.recv_pending = false;
                        f.reply = Some(Err(Error::Canceled));
                        self.maybe_complete(&mut st, token);
                    }
                    return;
                }
            } else {
                return;
            }
        }
        self.hand_off(Post::Cancel(token));
    }

    /// Completes a self forward with the output its handler produced.
    pub(crate) fn complete_self(&self, token: u64, output: Result<Vec<u8>>) {
        let mut st = lock(&self.st);
        if let Some(Op::Forward(f)) = st.ops.get_mut(token) {
            if f.recv_pending {
                f.recv_pending = false;
                f.replied = output.is_ok();
                f.reply = Some(output.map(|b| f.handle.set_output(Bytes::Owned(b), None)));
            }
            self.maybe_complete(&mut st, token);
        }
    }

    /// Sends a response prepared by `Handle::respond`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start_respond<T: Proc>(
        &self,
        dest: na::Addr,
        tag: Tag,
        cookie: u8,
        result: Result<()>,
        output: Option<&T>,
        cb: Option<DoneCallback>,
    ) -> Result<()> {
        let level = self.level();
        let hs = level.header_size();
        let nac = self.class.na();
        let size = output.map_or(0, Proc::encoded_size);
        let mut hdr = ResponseHeader::for_result(result, u16::from(cookie));
        let mut ack = None;
        let full = hs + size;
        let max = nac.max_expected_size();
        // Zeroed only when used (larger messages take a pooled buffer).
        let mut inline: [u8; INLINE_MSG];
        let on_stack = fits_inline(nac, full, max);
        let (mut msg, len, crc) = if on_stack {
            inline = [0u8; INLINE_MSG];
            if let Some(o) = output {
                encode_body(o, &mut inline[hs..full])?;
            }
            (SendMsg::Inline(&mut inline[..full]), full, None)
        } else if full <= max {
            let mut buf = self.take_recv_buf(max);
            if let Some(o) = output {
                encode_body(o, &mut buf.as_mut_slice()[hs..full])?;
            }
            (SendMsg::Pooled(buf), full, None)
        } else {
            let o = output.expect("size > 0 implies an output");
            let (buf, len, crc) =
                self.overflow_output(o, size, &dest, tag, cookie, &mut hdr, &mut ack)?;
            (SendMsg::Pooled(buf), len, crc)
        };
        header::encode_response(&hdr, level, msg.bytes_mut(), len - hs)?;
        if let Some(crc) = crc {
            header::set_payload_crc(level, msg.bytes_mut(), crc);
        }
        // Sent right here when this thread may post (injected when NA can: then no record and
        // no send completion); a reply with an ack to wait for goes the `hand_off` way, which
        // posts the ack's receive first.
        if let Some(guard) = ack.is_none().then(|| self.may_post_now()).flatten() {
            if let Some(na) = guard.as_ref() {
                if na.inject_expected(msg.bytes_mut(), len, &dest, tag) {
                    drop(guard);
                    self.replied(msg, cb);
                    return Ok(());
                }
                let buf = self.owned(msg, len, true);
                // NA before the state lock, as progress takes them.
                let token = lock(&self.st).ops.insert(Op::Respond { cb, ack: None });
                na.send_expected(buf, len, &dest, tag, token);
                return Ok(());
            }
        }
        let buf = self.owned(msg, len, true);
        let atoken = ack.as_ref().map(|(t, _)| *t);
        let token = lock(&self.st).ops.insert(Op::Respond { cb, ack: atoken });
        self.hand_off(Post::Respond {
            token,
            dest,
            tag,
            buf,
            len,
            ack,
        });
        Ok(())
    }

    /// A reply that went out injected: its buffer (if pooled) back to the pool, its callback
    /// queued (it runs in `trigger`, as after a send completion).
    fn replied(&self, msg: SendMsg<'_>, cb: Option<DoneCallback>) {
        if let SendMsg::Pooled(b) = msg {
            self.give_recv_buf(b);
        }
        if let Some(cb) = cb {
            self.cq.push(Entry::Done(cb, Ok(())));
        }
    }

    /// The reply of an output over the expected size (MORE_DATA): the output goes into a
    /// registered buffer the client pulls from (kept until its ack), and the reply carries its
    /// descriptor. Over the overflow maximum the client is answered `MsgSize`. Out of line.
    #[cold]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn overflow_output<T: Proc>(
        &self,
        o: &T,
        size: usize,
        dest: &na::Addr,
        tag: Tag,
        cookie: u8,
        hdr: &mut ResponseHeader,
        ack: &mut Option<(u64, MsgBuf)>,
    ) -> Result<(MsgBuf, usize, Option<u32>)> {
        let nac = self.class.na();
        let hs = self.level().header_size();
        let max = self.class.options().max_overflow_size;
        if size > max {
            tracing::warn!(size, max, "hg: output larger than the overflow maximum");
            // The client still gets an answer: the error.
            self.start_respond::<()>(dest.clone(), tag, cookie, Err(Error::MsgSize), None, None)?;
            return Err(Error::MsgSize);
        }
        let (mem, desc, crc) = self.take_send_overflow(o, size, dest)?;
        let bsize = desc.len();
        let mut buf = if hs + bsize <= nac.max_expected_size() {
            self.take_recv_buf(nac.max_expected_size())
        } else {
            // Too big for an expected message: NA refuses it at post (MsgSize).
            MsgBuf::new(hs + bsize)
        };
        buf.as_mut_slice()[hs..hs + bsize].copy_from_slice(&desc);
        hdr.flags |= flags::MORE_DATA;
        let mut st = lock(&self.st);
        let atoken = st.ops.insert(Op::AckWait {
            mem,
            desc,
            op: None,
            dest: dest.clone(),
            deadline: None,
            released: false,
        });
        st.ack_waits += 1;
        st.sync_deadlines();
        drop(st);
        *ack = Some((atoken, MsgBuf::new(1)));
        Ok((buf, hs + bsize, crc))
    }

    /// An expected-message buffer of `size` bytes (a reply's receive, or a reply to send): a
    /// returned one if any (its old bytes are never read: only the received length is, and a
    /// send writes all it sends), else a fresh one.
    fn take_recv_buf(&self, size: usize) -> MsgBuf {
        take_buf(&self.recv_bufs, size)
    }

    /// How many expected-size buffers the pool holds.
    #[cfg(test)]
    pub(crate) fn recv_pool_len(&self) -> usize {
        lock(&self.recv_bufs).len()
    }

    /// `msg`'s first `len` bytes in a buffer NA can keep: a stack message copied into one of
    /// the pool's (it could not be injected, or goes to another thread). `expected`: a reply,
    /// in an expected-size buffer; else a request, in an unexpected-size one.
    fn owned(&self, msg: SendMsg<'_>, len: usize, expected: bool) -> MsgBuf {
        match msg {
            SendMsg::Pooled(b) => b,
            SendMsg::Inline(s) => {
                let nac = self.class.na();
                let mut b = if expected {
                    self.take_recv_buf(nac.max_expected_size())
                } else {
                    self.take_send_buf(nac.max_unexpected_size())
                };
                b.as_mut_slice()[..len].copy_from_slice(&s[..len]);
                b
            }
        }
    }

    /// Returns an expected-size buffer (a reply received, or sent) for reuse.
    pub(crate) fn give_recv_buf(&self, buf: MsgBuf) {
        give_buf(&self.recv_bufs, buf, self.class.na().max_expected_size());
    }

    /// A buffer of the unexpected size for a request to send (see `take_recv_buf`).
    fn take_send_buf(&self, size: usize) -> MsgBuf {
        take_buf(&self.send_bufs, size)
    }

    /// Returns an unexpected-size buffer (a request sent, or received) for reuse.
    pub(crate) fn give_send_buf(&self, buf: MsgBuf) {
        give_buf(&self.send_bufs, buf, self.class.na().max_unexpected_size());
    }

    /// Queues a respond callback (self forwards, one-way handles).
    pub(crate) fn queue_done(&self, cb: DoneCallback, r: Result<()>) {
        self.cq.push(Entry::Done(cb, r));
    }
}

#[cfg(all(test, not(loom)))]
mod size_tests {
    /// A forward's record moves into the operation map and out of it on every RPC: at 128 bytes
    /// or less the moves are inline, above it each is a `memcpy` call (x86-64).
    #[test]
    fn forward_record_moves_inline() {
        assert_moves_inline::<super::Op>("Op");
    }

    /// Fails when a `T` is over 128 bytes (its moves would be `memcpy` calls).
    fn assert_moves_inline<T>(name: &str) {
        let n = std::mem::size_of::<T>();
        assert!(n <= 128, "{name} is {n} bytes");
    }

    /// Every respond moves a `Post` through the hand-off (posted at once or queued): kept at
    /// 128 bytes or less for the same reason (an inline `RmaParts` in it made it 152).
    #[test]
    fn posts_move_inline() {
        assert_moves_inline::<super::Post>("Post");
    }
}
