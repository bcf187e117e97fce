//! `hg::Handle` (`hg_handle_t`): one RPC exchange, on the origin (forward) or the target (respond) side.

use crate::context::{CtxInner, DoneCallback, ForwardCallback, ForwardReq};
use crate::error::{Error, Result};
use crate::proc::{self, Proc};
use crate::registry::{ProcType, RpcId};
use crate::sync::{get_mut, lock, Arc, AtomicU64, Mutex, Ordering, UserArc};
use na::Tag;
use std::any::{Any, TypeId};
use std::fmt;
use std::time::{Duration, Instant};

/// Received bytes of an input or an output: an owned vector, the body of the message buffer
/// they arrived in, or the first `len` bytes of the registered overflow buffer they were pulled
/// into. The last two are decoded in place, without a copy, and their buffer goes back to its
/// context's pool or cache when these bytes are dropped.
pub(crate) enum Bytes {
    Owned(Vec<u8>),
    /// `buf[start..end]` of a received message (as Mercury decodes from its receive buffer): no
    /// copy and no allocation per RPC.
    Msg {
        /// Always `Some` until dropped.
        buf: Option<na::MsgBuf>,
        start: usize,
        end: usize,
        ctx: Arc<CtxInner>,
        /// A reply's (expected-size) buffer, else a request's (unexpected-size) one.
        expected: bool,
    },
    Pulled {
        /// Always `Some` until dropped.
        mem: Option<na::MemHandle>,
        len: usize,
        ctx: Arc<CtxInner>,
    },
}

impl Bytes {
    /// The body `range` of a received message, read in place from `buf` (`expected`: a reply's
    /// buffer, else a request's), which goes back to `ctx`'s pool when the bytes drop. An empty
    /// body keeps nothing: the buffer comes back at once, for the caller to reuse.
    pub(crate) fn in_message(
        buf: na::MsgBuf,
        range: std::ops::Range<usize>,
        ctx: &Arc<CtxInner>,
        expected: bool,
    ) -> (Bytes, Option<na::MsgBuf>) {
        if range.is_empty() {
            return (Bytes::Owned(Vec::new()), Some(buf));
        }
        let bytes = Bytes::Msg {
            buf: Some(buf),
            start: range.start,
            end: range.end,
            ctx: ctx.clone(),
            expected,
        };
        (bytes, None)
    }

    /// Runs `f` over the bytes (in place, wherever they are).
    fn read<R>(&self, f: impl FnOnce(&[u8]) -> Result<R>) -> Result<R> {
        match self {
            Bytes::Owned(v) => f(v),
            Bytes::Msg {
                buf, start, end, ..
            } => {
                let buf = buf.as_ref().ok_or(Error::NoEntry)?;
                f(&buf.as_slice()[*start..*end])
            }
            Bytes::Pulled { mem, len, .. } => {
                let mem = mem.as_ref().ok_or(Error::NoEntry)?;
                let (mut f, mut r) = (Some(f), Err(Error::NoEntry));
                // Pulled buffers are one segment: the closure runs once, over all `len` bytes.
                mem.with_range(0, *len, |seg, at, _, n| {
                    if let Some(f) = f.take() {
                        r = f(&seg[at..at + n]);
                    }
                })
                .map_err(Error::from_na)?;
                r
            }
        }
    }

    /// Decodes a `T` filling the bytes exactly, over `value` ([`Proc::decode_into`]).
    fn decode_into<T: Proc>(&self, value: &mut T) -> Result<()> {
        self.read(|b| proc::decode_exact_into(b, value))
    }

    /// Decodes a `T` filling the bytes exactly.
    fn decode<T: Proc>(&self) -> Result<T> {
        self.read(proc::decode_exact)
    }
}

impl Drop for Bytes {
    fn drop(&mut self) {
        match self {
            Bytes::Pulled { mem, ctx, .. } => {
                if let Some(m) = mem.take() {
                    ctx.give_pull_buf(m);
                }
            }
            Bytes::Msg {
                buf, ctx, expected, ..
            } => {
                if let Some(b) = buf.take() {
                    if *expected {
                        ctx.give_recv_buf(b);
                    } else {
                        ctx.give_send_buf(b);
                    }
                }
            }
            Bytes::Owned(_) => {}
        }
    }
}

pub(crate) struct ServerSide {
    pub(crate) tag: Tag,
    pub(crate) cookie: u8,
    pub(crate) no_response: bool,
    pub(crate) input: Option<Bytes>,
    pub(crate) responded: bool,
    /// For a forward to self: the origin's forward, completed by `respond` directly.
    pub(crate) self_client: Option<u64>,
    /// The input and output types registered for the id when the request arrived, so that
    /// `get_input` and `respond` check them without a registry look-up.
    pub(crate) types: (TypeId, TypeId),
}

pub(crate) struct HandleState {
    addr: na::Addr,
    id: RpcId,
    target_id: u8,
    output: Option<Bytes>,
    side: Side,
    /// An origin's reply buffer kept for its next forward: the last reply's, when it had no
    /// body to keep. As a Mercury handle owns its reply buffer, a reused handle's forward then
    /// takes no buffer from its context's pool for the reply, and gives none back. It goes back
    /// to the pool when the handle ends.
    spare: Option<na::MsgBuf>,
}

/// Which end of the exchange a handle is.
enum Side {
    /// The origin.
    Origin {
        /// What the registry said of the id when last read (as Mercury's handle keeps a
        /// pointer to its RPC's info), valid while the registry's generation has not moved.
        rpc: Option<RpcCache>,
        /// The address is the context's own (forward to self), known since create or reset.
        to_self: bool,
    },
    /// The target.
    Target(ServerSide),
}

/// The part of an RPC's registration a forward checks, and the registry generation it was
/// read at.
#[derive(Clone, Copy)]
struct RpcCache {
    gen: u64,
    input: ProcType,
    output: TypeId,
    no_response: bool,
}

impl RpcCache {
    /// `id`'s registration in `class` now, or `NoEntry`.
    fn read(class: &crate::Class, id: RpcId) -> Result<RpcCache> {
        let (c, gen) = class.with_rpc_gen(id, |i| RpcCache {
            gen: 0,
            input: i.input,
            output: i.output.type_id(),
            no_response: i.no_response,
        })?;
        Ok(RpcCache { gen, ..c })
    }
}

impl HandleState {
    #[inline(always)]
    pub(crate) fn new(addr: na::Addr, id: RpcId, server: Option<ServerSide>) -> HandleState {
        HandleState {
            addr,
            id,
            target_id: server.as_ref().map_or(0, |s| s.cookie),
            output: None,
            spare: None,
            side: match server {
                Some(s) => Side::Target(s),
                None => Side::Origin {
                    rpc: None,
                    to_self: false,
                },
            },
        }
    }

    fn server(&self) -> Option<&ServerSide> {
        match &self.side {
            Side::Target(s) => Some(s),
            Side::Origin { .. } => None,
        }
    }

    fn server_mut(&mut self) -> Option<&mut ServerSide> {
        match &mut self.side {
            Side::Target(s) => Some(s),
            Side::Origin { .. } => None,
        }
    }

    /// The origin's cached registration, if any.
    fn rpc(&self) -> Option<RpcCache> {
        match &self.side {
            Side::Origin { rpc, .. } => *rpc,
            Side::Target(_) => None,
        }
    }

    /// Whether an origin handle's address is its context's own.
    fn to_self(&self) -> bool {
        matches!(self.side, Side::Origin { to_self: true, .. })
    }

    /// An origin handle's state for `id` at `addr`, with `id`'s registration already read
    /// when it is registered (`HG_Create` looks its RPC up too; an unregistered id fails at
    /// forward, with `NoEntry`).
    pub(crate) fn origin(addr: na::Addr, id: RpcId, ctx: &CtxInner) -> HandleState {
        let to_self = ctx.is_self(&addr);
        let mut st = HandleState::new(addr, id, None);
        st.side = Side::Origin {
            rpc: RpcCache::read(&ctx.class, id).ok(),
            to_self,
        };
        st
    }
}

struct HandleInner {
    ctx: Arc<CtxInner>,
    st: Mutex<HandleState>,
    /// The forward in flight: [`IDLE`], [`STARTING`] while `forward` sets it up, then its
    /// operation token. Taken by a compare-and-swap, so two threads forwarding on one handle
    /// at once get one `Busy`; read by `cancel` and `reset` without the state's lock.
    fwd: AtomicU64,
}

impl Drop for HandleInner {
    /// A kept reply buffer goes back to the context's pool (with a handle per RPC, as CaRT
    /// creates them, the pool would otherwise lose a buffer at every handle's end).
    fn drop(&mut self) {
        if let Some(b) = get_mut(&mut self.st).spare.take() {
            self.ctx.give_recv_buf(b);
        }
    }
}

/// [`HandleInner::fwd`]: no forward in flight.
const IDLE: u64 = 0;
/// [`HandleInner::fwd`]: a forward is being set up (no token yet; operation tokens are never 0
/// and never this).
const STARTING: u64 = u64::MAX;

/// One RPC exchange (`hg_handle_t`). Cloning is `HG_Ref_incr`, dropping is `HG_Destroy`: the
/// exchange lives while any clone does, and an operation in flight holds one.
///
/// On the origin: [`crate::ContextRef::create`], then [`Handle::forward`]; in its callback,
/// [`Handle::get_output`]. On the target, the registered handler receives the handle:
/// [`Handle::get_input`], then [`Handle::respond`].
#[doc(alias = "hg_handle_t")]
#[doc(alias = "HG_Ref_incr")]
#[doc(alias = "HG_Destroy")]
#[derive(Clone)]
pub struct Handle {
    inner: Arc<HandleInner>,
}

/// What [`Handle::info`] reports (`struct hg_info`).
#[doc(alias = "hg_info")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    /// The peer: the target on the origin side, the origin on the target side.
    pub addr: na::Addr,
    /// The RPC id.
    pub id: RpcId,
    /// The target context id (the request's cookie).
    pub context_id: u8,
}

impl Handle {
    // Inlined so the state is built where it is stored (it is moved, not copied, through the
    // `Mutex` and `Arc` constructors: a `memcpy` each otherwise).
    #[inline(always)]
    pub(crate) fn new(ctx: Arc<CtxInner>, st: HandleState) -> Handle {
        Handle {
            inner: Arc::new(HandleInner {
                ctx,
                st: Mutex::new(st),
                fwd: AtomicU64::new(IDLE),
            }),
        }
    }

    /// `HG_Ref_get`: live clones of this handle (the user's and those of operations in flight).
    #[doc(alias = "HG_Ref_get")]
    pub fn ref_count(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// The RPC id.
    pub fn id(&self) -> RpcId {
        lock(&self.inner.st).id
    }

    /// `HG_Get_info`: peer address, RPC id, target context id.
    #[doc(alias = "HG_Get_info")]
    pub fn info(&self) -> Info {
        let st = lock(&self.inner.st);
        Info {
            addr: st.addr.clone(),
            id: st.id,
            context_id: st.target_id,
        }
    }

    /// `HG_Context_get_data` through the handle's context (what CaRT's handler reads).
    #[doc(alias = "HG_Context_get_data")]
    pub fn context_data(&self) -> Option<UserArc<dyn Any + Send + Sync>> {
        crate::ContextRef {
            inner: self.inner.ctx.clone(),
        }
        .data()
    }

    /// The context this handle belongs to.
    pub fn context(&self) -> crate::ContextRef {
        crate::ContextRef {
            inner: self.inner.ctx.clone(),
        }
    }

    /// `HG_Set_target_id`: the context id at the target that should receive the request.
    #[doc(alias = "HG_Set_target_id")]
    pub fn set_target_id(&self, id: u8) {
        lock(&self.inner.st).target_id = id;
    }

    /// `HG_Reset`: reuses the handle for `id` at `addr`; `Busy` while a forward is in flight.
    #[doc(alias = "HG_Reset")]
    pub fn reset(&self, addr: &na::Addr, id: RpcId) -> Result<()> {
        let mut new = HandleState::origin(addr.clone(), id, &self.inner.ctx);
        let mut st = lock(&self.inner.st);
        if self.inner.fwd.load(Ordering::Acquire) != IDLE {
            return Err(Error::Busy);
        }
        // The buffers belong to the context, which a reset does not change.
        new.spare = st.spare.take();
        *st = new;
        Ok(())
    }

    /// `HG_Forward`: sends `input` to the handle's target and runs `cb` once in trigger, when
    /// the reply has arrived (or the forward failed, was canceled or the context closed). Input
    /// larger than the eager size travels by RMA (`HG_CORE_MORE_DATA`), up to
    /// [`crate::InitOptions::max_overflow_size`]. When this returns `Err` the forward did not
    /// start and `cb` is dropped uncalled: `Busy` while this handle's last forward is still in
    /// flight (its callback not yet queued) or another thread's is being started.
    #[doc(alias = "HG_Forward")]
    pub fn forward<T: Proc + 'static>(
        &self,
        input: &T,
        cb: impl FnOnce(&Handle, Result<()>) + Send + 'static,
    ) -> Result<()> {
        self.forward_inner(input, None, Box::new(cb))
    }

    /// As [`Handle::forward`], failing with `Timeout` when no reply came within `timeout`
    /// (mercury #393, margo #51). A reply arriving later is dropped. A timeout too long to add
    /// to the clock (`Duration::MAX`) is no deadline.
    pub fn forward_timed<T: Proc + 'static>(
        &self,
        input: &T,
        timeout: Duration,
        cb: impl FnOnce(&Handle, Result<()>) + Send + 'static,
    ) -> Result<()> {
        self.forward_inner(input, Instant::now().checked_add(timeout), Box::new(cb))
    }

    fn forward_inner<T: Proc + 'static>(
        &self,
        input: &T,
        deadline: Option<Instant>,
        cb: ForwardCallback,
    ) -> Result<()> {
        let fwd = &self.inner.fwd;
        if fwd
            .compare_exchange(IDLE, STARTING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(Error::Busy);
        }
        let r = self.start(input, deadline, cb);
        if r.is_err() {
            fwd.store(IDLE, Ordering::Release);
        }
        r
    }

    /// [`Handle::forward_inner`] once the handle is taken for this forward.
    #[inline(always)]
    fn start<T: Proc + 'static>(
        &self,
        input: &T,
        deadline: Option<Instant>,
        cb: ForwardCallback,
    ) -> Result<()> {
        let (addr, id, cookie, cached, to_self, old, spare) = {
            let mut st = lock(&self.inner.st);
            if st.server().is_some() {
                return Err(Error::InvalidArg);
            }
            // The last reply's bytes: dropped (their buffer back to the pool) once this forward
            // has started, put back if it does not.
            let old = st.output.take();
            (
                st.addr.clone(),
                st.id,
                st.target_id,
                st.rpc(),
                st.to_self(),
                old,
                st.spare.take(),
            )
        };
        let r = self.start_to(
            addr, id, cookie, cached, to_self, input, deadline, cb, spare,
        );
        if r.is_err() {
            self.keep_output(old);
        }
        r
    }

    /// A failed forward leaves the last reply's bytes readable (`get_output`), as they were.
    #[cold]
    #[inline(never)]
    fn keep_output(&self, old: Option<Bytes>) {
        let mut st = lock(&self.inner.st);
        if st.output.is_none() {
            st.output = old;
        }
    }

    /// [`Handle::start`] once the handle's state is read.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn start_to<T: Proc + 'static>(
        &self,
        addr: na::Addr,
        id: RpcId,
        cookie: u8,
        cached: Option<RpcCache>,
        to_self: bool,
        input: &T,
        deadline: Option<Instant>,
        cb: ForwardCallback,
        spare: Option<na::MsgBuf>,
    ) -> Result<()> {
        let _s = na::hop_span!(DEBUG, "hg.forward", rpc_id = id);
        // On the failures below, a spare buffer is freed rather than pooled (they are rare).
        let rpc = self.rpc_info(id, cached)?;
        if !rpc.input.is::<T>() {
            tracing::warn!(
                rpc_id = id,
                registered = rpc.input.name(),
                "hg: forward with the wrong input type"
            );
            return Err(Error::InvalidArg);
        }
        let no_response = rpc.no_response;
        let req = ForwardReq {
            handle: self,
            dest: addr,
            to_self,
            rpc_id: id,
            cookie,
            no_response,
            deadline,
            cb,
            spare,
        };
        self.inner.ctx.start_forward(&self.inner.ctx, req, input)
    }

    /// `id`'s registration: `cached` while the registry has not changed since it was read,
    /// else read again (and cached).
    #[inline]
    fn rpc_info(&self, id: RpcId, cached: Option<RpcCache>) -> Result<RpcCache> {
        match cached {
            Some(c) if c.gen == self.inner.ctx.class.registry_generation() => Ok(c),
            _ => self.read_rpc(id),
        }
    }

    /// Reads `id`'s registration into the handle's cache (the first forward, or the registry
    /// changed since the last read). Out of line: a reused handle does not come here.
    #[cold]
    #[inline(never)]
    fn read_rpc(&self, id: RpcId) -> Result<RpcCache> {
        let c = RpcCache::read(&self.inner.ctx.class, id)?;
        let mut st = lock(&self.inner.st);
        if let (true, Side::Origin { rpc, .. }) = (st.id == id, &mut st.side) {
            *rpc = Some(c);
        }
        Ok(c)
    }

    /// Publishes the token of the forward this handle is starting (for `cancel`).
    pub(crate) fn begin_forward(&self, token: u64) {
        debug_assert!(token != IDLE && token != STARTING);
        self.inner.fwd.store(token, Ordering::Release);
    }

    /// The forward is over (before its callback is queued, which may forward again).
    pub(crate) fn finish_forward(&self) {
        self.inner.fwd.store(IDLE, Ordering::Release);
    }

    /// The reply's bytes, and the reply's buffer when the bytes did not keep it (`spare`), which
    /// the handle keeps for its next forward.
    pub(crate) fn set_output(&self, bytes: Bytes, spare: Option<na::MsgBuf>) {
        let mut st = lock(&self.inner.st);
        // The old bytes (a pulled buffer going back to the cache) drop after the lock.
        let old = st.output.replace(bytes);
        // Kept unless the handle already keeps one (then it goes back to the pool).
        let back = if st.spare.is_none() {
            st.spare = spare;
            None
        } else {
            spare
        };
        drop(st);
        drop(old);
        if let Some(b) = back {
            self.inner.ctx.give_recv_buf(b);
        }
    }

    pub(crate) fn set_input(&self, bytes: Bytes) {
        let mut st = lock(&self.inner.st);
        let old = st.server_mut().map(|s| s.input.replace(bytes));
        drop(st);
        drop(old);
    }

    /// `HG_Cancel`: the forward's callback still runs once, with `Canceled` if the forward had
    /// no effect, else with its real result. No-op when nothing is in flight (nor while another
    /// thread's `forward` on this handle has not returned yet).
    #[doc(alias = "HG_Cancel")]
    pub fn cancel(&self) {
        // A forward still being set up on another thread (STARTING) has nothing to cancel yet.
        match self.inner.fwd.load(Ordering::Acquire) {
            IDLE | STARTING => {}
            t => self.inner.ctx.cancel_forward(t),
        }
    }

    /// `HG_Get_output`: decodes the reply (in the forward's callback, or after it ran).
    #[doc(alias = "HG_Get_output")]
    #[doc(alias = "HG_Free_output")]
    pub fn get_output<T: Proc + 'static>(&self) -> Result<T> {
        let (id, cached, r) = {
            let st = lock(&self.inner.st);
            // Decoded in place: no copy of the reply bytes.
            (
                st.id,
                st.rpc(),
                st.output.as_ref().ok_or(Error::NoEntry)?.decode::<T>(),
            )
        };
        let output = self.rpc_info(id, cached)?.output;
        if output != TypeId::of::<T>() {
            return Err(Error::InvalidArg);
        }
        r
    }

    /// As [`Handle::get_output`], decoding over `out` ([`Proc::decode_into`]: the buffers it
    /// already owns are reused, as `HG_Get_output` fills the struct its caller passes).
    #[doc(alias = "HG_Get_output")]
    pub fn get_output_into<T: Proc + 'static>(&self, out: &mut T) -> Result<()> {
        // The type first: `out` is written only when it is the registered output type.
        let (id, cached) = {
            let st = lock(&self.inner.st);
            (st.id, st.rpc())
        };
        if self.rpc_info(id, cached)?.output != TypeId::of::<T>() {
            return Err(Error::InvalidArg);
        }
        let st = lock(&self.inner.st);
        st.output.as_ref().ok_or(Error::NoEntry)?.decode_into(out)
    }

    /// As [`Handle::get_input`], decoding over `input` ([`Proc::decode_into`]: a handler that
    /// keeps one input value decodes every request into the same buffers, as Mercury's
    /// `HG_Get_input` fills the struct its caller passes, and allocates nothing per request).
    #[doc(alias = "HG_Get_input")]
    pub fn get_input_into<T: Proc + 'static>(&self, input: &mut T) -> Result<()> {
        let (id, r) = {
            let st = lock(&self.inner.st);
            let s = st.server().ok_or(Error::InvalidArg)?;
            if s.types.0 != TypeId::of::<T>() {
                return Err(Error::InvalidArg);
            }
            let bytes = s.input.as_ref().ok_or(Error::NoEntry)?;
            (st.id, bytes.decode_into(input))
        };
        r.inspect_err(|e| tracing::warn!(rpc_id = id, error = %e, "hg: input does not decode"))
    }

    /// `HG_Get_input`: decodes the request's input (on the target). The result owns its data.
    #[doc(alias = "HG_Get_input")]
    #[doc(alias = "HG_Free_input")]
    pub fn get_input<T: Proc + 'static>(&self) -> Result<T> {
        let (id, r) = {
            let st = lock(&self.inner.st);
            let s = st.server().ok_or(Error::InvalidArg)?;
            if s.types.0 != TypeId::of::<T>() {
                return Err(Error::InvalidArg);
            }
            (st.id, s.input.as_ref().ok_or(Error::NoEntry)?.decode::<T>())
        };
        r.inspect_err(|e| tracing::warn!(rpc_id = id, error = %e, "hg: input does not decode"))
    }

    pub(crate) fn needs_response(&self) -> bool {
        lock(&self.inner.st)
            .server()
            .is_some_and(|s| !s.no_response && !s.responded)
    }

    pub(crate) fn reply_route(&self) -> Option<(na::Addr, Tag)> {
        let st = lock(&self.inner.st);
        st.server().map(|s| (st.addr.clone(), s.tag))
    }

    /// `HG_Respond`: answers the request with `output`; `cb` runs once in trigger when the
    /// response has left (or failed). Output larger than the expected size travels by RMA, up to
    /// the overflow maximum; beyond it the client is answered `MsgSize` and this returns
    /// `Err(MsgSize)`. On a one-way RPC nothing is sent and `cb` gets `Ok`. When this returns
    /// `Err`, `cb` is dropped uncalled.
    #[doc(alias = "HG_Respond")]
    pub fn respond<T: Proc + 'static>(
        &self,
        output: &T,
        cb: impl FnOnce(Result<()>) + Send + 'static,
    ) -> Result<()> {
        let _s = na::hop_span!(DEBUG, "hg.respond", rpc_id = self.id());
        self.respond_inner(Ok(()), Some(output), Some(Box::new(cb)))
    }

    /// Answers the request with an error code and no output (what a failed handler sends).
    pub fn respond_error(&self, e: Error) -> Result<()> {
        let _s = na::hop_span!(DEBUG, "hg.respond", rpc_id = self.id(), error = %e);
        self.respond_inner::<()>(Err(e), None, None)
    }

    fn respond_inner<T: Proc + 'static>(
        &self,
        result: Result<()>,
        output: Option<&T>,
        cb: Option<DoneCallback>,
    ) -> Result<()> {
        let (addr, tag, cookie, no_response, self_client) = {
            let mut st = lock(&self.inner.st);
            let addr = st.addr.clone();
            let s = st.server_mut().ok_or(Error::InvalidArg)?;
            if s.responded || (output.is_some() && s.types.1 != TypeId::of::<T>()) {
                return Err(Error::InvalidArg);
            }
            s.responded = true;
            (addr, s.tag, s.cookie, s.no_response, s.self_client)
        };
        let ctx = &self.inner.ctx;
        if let Some(token) = self_client {
            let out = match (&result, output) {
                (Ok(()), Some(o)) => proc::encode_to_vec(o),
                (Ok(()), None) => Ok(Vec::new()),
                (Err(e), _) => Err(*e),
            };
            if !no_response {
                ctx.complete_self(token, out);
            }
            if let Some(cb) = cb {
                ctx.queue_done(cb, Ok(()));
            }
            return Ok(());
        }
        if no_response {
            if let Some(cb) = cb {
                ctx.queue_done(cb, Ok(()));
            }
            return Ok(());
        }
        ctx.start_respond(addr, tag, cookie, result, output, cb)
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = lock(&self.inner.st);
        f.debug_struct("Handle")
            .field("addr", &st.addr)
            .field("id", &st.id)
            .field("target", &st.server().is_some())
            .finish()
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::class::{Class, InitOptions};
    use crate::sync::{AtomicUsize, Ordering};
    use loom::thread;
    use na::plugins::inproc::{Fabric, FaultConfig};

    /// A context with RPC 1 registered (its handler does nothing) and a handle to the
    /// context's own address; the fabric is kept alive by the caller.
    fn self_handle() -> (Fabric, crate::Context, Handle) {
        let fabric = Fabric::new(FaultConfig::none());
        let class = Class::from_na(fabric.class(false), InitOptions::default());
        class.register::<(), ()>(1, Some(UserArc::new(|_h: Handle| Ok(()))));
        let ctx = class.context_create().unwrap();
        let h = ctx.create(&ctx.self_addr(), 1).unwrap();
        (fabric, ctx, h)
    }

    /// One thread forwards on a handle (to self: the context takes a clone for the operation and
    /// queues the request) while another drops its clone; then the context is closed. The
    /// forward's callback runs exactly once (Canceled at teardown), and afterwards only the
    /// owner's reference is left: no clone leaked, none freed early.
    #[test]
    fn loom_handle_refcount_concurrent_forward_and_drop() {
        crate::sync::loom_model(2, || {
            let (_fabric, ctx, h) = self_handle();
            let calls = Arc::new(AtomicUsize::new(0));
            let (h1, h2) = (h.clone(), h.clone());
            let c1 = calls.clone();
            let t1 = thread::spawn(move || {
                h1.forward(&(), move |_, r| {
                    assert_eq!(r, Err(Error::Canceled));
                    c1.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap();
            });
            let t2 = thread::spawn(move || drop(h2));
            assert_eq!(h.id(), 1);
            t1.join().unwrap();
            t2.join().unwrap();
            ctx.close();
            assert_eq!(calls.load(Ordering::SeqCst), 1);
            assert_eq!(h.ref_count(), 1);
        });
    }

    /// Two threads forward on one handle at once: exactly one forward starts, the other gets
    /// `Busy`, and the started one's callback runs exactly once.
    #[test]
    fn loom_one_forward_per_handle() {
        crate::sync::loom_model(2, || {
            let (_fabric, ctx, h) = self_handle();
            let calls = Arc::new(AtomicUsize::new(0));
            let go = |h: Handle, calls: Arc<AtomicUsize>| {
                thread::spawn(move || {
                    h.forward(&(), move |_, _| {
                        calls.fetch_add(1, Ordering::SeqCst);
                    })
                })
            };
            let t1 = go(h.clone(), calls.clone());
            let t2 = go(h.clone(), calls.clone());
            let mut r = [t1.join().unwrap(), t2.join().unwrap()];
            r.sort_by_key(|r| r.is_err());
            assert_eq!(r, [Ok(()), Err(Error::Busy)]);
            ctx.close();
            assert_eq!(calls.load(Ordering::SeqCst), 1);
        });
    }
}

#[cfg(all(test, not(loom)))]
mod spare_tests {
    use super::*;
    use crate::{Class, Context, InitOptions};
    use na::plugins::inproc::{Fabric, FaultConfig};

    /// Where the handle's kept reply buffer starts, if it keeps one.
    fn spare_at(h: &Handle) -> Option<*const u8> {
        lock(&h.inner.st)
            .spare
            .as_ref()
            .map(|b| b.as_slice().as_ptr())
    }

    /// Forwards on `h` and drives both contexts until its callback has run.
    fn forward_once(h: &Handle, client: &Context, server: &Context) {
        let done = Arc::new(AtomicU64::new(0));
        let d = done.clone();
        h.forward(&(), move |_, r| {
            assert_eq!(r, Ok(()));
            d.store(1, Ordering::SeqCst);
        })
        .unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        while done.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < end, "the forward never completed");
            for c in [server, client] {
                c.progress(Duration::ZERO).unwrap();
                c.trigger(usize::MAX).unwrap();
            }
        }
    }

    /// A reply with no body leaves its buffer with the handle, the handle's next forward
    /// receives its reply into that same buffer (not one from the context's pool), and the
    /// buffer goes back to the pool when the handle ends.
    #[test]
    fn a_reused_handle_receives_into_its_last_reply_buffer() {
        let fabric = Fabric::new(FaultConfig::none());
        let server = Class::from_na(fabric.class(true), InitOptions::default());
        let client = Class::from_na(fabric.class(false), InitOptions::default());
        server.register::<(), ()>(1, Some(UserArc::new(|h: Handle| h.respond(&(), |_| {}))));
        client.register::<(), ()>(1, None);
        let sctx = server.context_create().unwrap();
        let cctx = client.context_create().unwrap();
        let h = cctx.create(&sctx.self_addr(), 1).unwrap();
        assert_eq!(spare_at(&h), None);
        forward_once(&h, &cctx, &sctx);
        let first = spare_at(&h).expect("the empty reply's buffer is kept");
        let pooled = cctx.inner.recv_pool_len();
        for _ in 0..3 {
            forward_once(&h, &cctx, &sctx);
            assert_eq!(
                spare_at(&h),
                Some(first),
                "the same buffer went out and came back"
            );
            assert_eq!(cctx.inner.recv_pool_len(), pooled);
        }
        drop(h);
        assert_eq!(
            cctx.inner.recv_pool_len(),
            pooled + 1,
            "back to the pool at the end"
        );
    }
}
