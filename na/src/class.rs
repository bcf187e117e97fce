//! `Class` (`na_class_t`) and `Context` (`na_context_t`): the public face over a plugin.

use crate::addr::Addr;
use crate::cq::CompletionQueue;
use crate::error::{Error, Result};
use crate::mem::{Access, MemHandle, RemoteMem};
use crate::msg::{MsgBuf, Tag};
use crate::op::{Completion, Op, OpId, OpKind, Request};
use crate::plugin::{select, InfoString, InitOptions, Plugin, PluginContext};
use crate::sync::{Arc, AtomicU64, Ordering};
use std::fmt;
use std::os::fd::RawFd;
use std::time::Duration;

/// An initialized transport (`na_class_t`): addresses, sizes and memory registration. Cheap to
/// clone; contexts keep their class alive.
#[doc(alias = "na_class_t")]
#[derive(Clone)]
pub struct Class {
    plugin: Arc<dyn Plugin>,
    limits: Limits,
}

/// What a plugin says of itself that never changes, read once: every RPC asks for the message
/// sizes several times, and a copy here costs no call through the plugin's vtable.
#[derive(Clone, Copy, Debug)]
struct Limits {
    listening: bool,
    max_unexpected: usize,
    max_expected: usize,
    max_inject: usize,
    unexpected_header: usize,
}

impl Class {
    /// `NA_Initialize`: picks a plugin from `info` (see [`InfoString`]) and opens it.
    #[doc(alias = "NA_Initialize")]
    pub fn initialize(info: &str, listen: bool) -> Result<Class> {
        Class::initialize_opt(info, listen, &InitOptions::default())
    }

    /// `NA_Initialize_opt`: as [`Class::initialize`], with options.
    #[doc(alias = "NA_Initialize_opt")]
    #[doc(alias = "na_class_table")]
    pub fn initialize_opt(info: &str, listen: bool, opts: &InitOptions) -> Result<Class> {
        let parsed = InfoString::parse(info)?;
        let entry = select(&parsed)?;
        let plugin = (entry.initialize)(&parsed, listen, opts).inspect_err(|e| {
            tracing::warn!(info, plugin = entry.name, error = %e, "na: plugin initialization failed");
        })?;
        tracing::debug!(
            info,
            plugin = entry.name,
            protocol = plugin.protocol(),
            listen,
            "na: class initialized"
        );
        Ok(Class::from_plugin(plugin))
    }

    /// Wraps an already built plugin (e.g. an inproc fabric with fault injection).
    pub fn from_plugin(plugin: Arc<dyn Plugin>) -> Class {
        let limits = Limits {
            listening: plugin.is_listening(),
            max_unexpected: plugin.max_unexpected_size(),
            max_expected: plugin.max_expected_size(),
            max_inject: plugin.max_inject_size(),
            unexpected_header: plugin.unexpected_header_size(),
        };
        Class { plugin, limits }
    }

    /// `NA_Get_class_name`: the plugin's name.
    #[doc(alias = "NA_Get_class_name")]
    pub fn plugin_name(&self) -> &'static str {
        self.plugin.name()
    }

    /// `NA_Get_class_protocol`: the transport actually opened (`"tcp;ofi_rxm"`).
    #[doc(alias = "NA_Get_class_protocol")]
    pub fn protocol(&self) -> &str {
        self.plugin.protocol()
    }

    /// `NA_Is_listening`.
    #[doc(alias = "NA_Is_listening")]
    pub fn is_listening(&self) -> bool {
        self.limits.listening
    }

    /// `NA_Context_create_id`: a context with its own endpoint (DESIGN §1: one per context on tcp).
    #[doc(alias = "NA_Context_create_id")]
    #[doc(alias = "NA_Context_create")]
    pub fn context_create(&self, id: u8) -> Result<Context> {
        let cq = Arc::new(CompletionQueue::new());
        let plugin = self.plugin.context_create(id, cq.clone())?;
        Ok(Context {
            class: self.clone(),
            id,
            plugin,
            cq,
            next_op: AtomicU64::new(1),
            closed: false,
        })
    }

    /// `NA_Addr_lookup`.
    #[doc(alias = "NA_Addr_lookup")]
    pub fn addr_lookup(&self, name: &str) -> Result<Addr> {
        self.plugin.addr_lookup(name)
    }

    /// `NA_Addr_to_string`.
    #[doc(alias = "NA_Addr_to_string")]
    pub fn addr_to_string(&self, addr: &Addr) -> Result<String> {
        self.plugin.addr_to_string(addr)
    }

    /// `NA_Addr_deserialize`: checks bytes received from a peer.
    #[doc(alias = "NA_Addr_deserialize")]
    pub fn addr_deserialize(&self, bytes: &[u8]) -> Result<Addr> {
        self.plugin.addr_deserialize(bytes)
    }

    /// Forgets per-peer transport state so the next operation towards `addr` reconnects (what
    /// Mercury's `HG_Addr_set_remove` needs from NA).
    #[doc(alias = "NA_Addr_set_remove")]
    #[doc(alias = "HG_Addr_set_remove")]
    pub fn addr_set_remove(&self, addr: &Addr) -> Result<()> {
        self.plugin.addr_set_remove(addr)
    }

    /// `NA_Msg_get_max_unexpected_size`.
    #[doc(alias = "NA_Msg_get_max_unexpected_size")]
    pub fn max_unexpected_size(&self) -> usize {
        self.limits.max_unexpected
    }

    /// The largest message [`Context::inject_unexpected`] / [`Context::inject_expected`] may
    /// send; 0 when the plugin never injects.
    pub fn max_inject_size(&self) -> usize {
        self.limits.max_inject
    }

    /// `NA_Msg_get_max_expected_size`.
    #[doc(alias = "NA_Msg_get_max_expected_size")]
    pub fn max_expected_size(&self) -> usize {
        self.limits.max_expected
    }

    /// `NA_Msg_get_unexpected_header_size`.
    #[doc(alias = "NA_Msg_get_unexpected_header_size")]
    pub fn unexpected_header_size(&self) -> usize {
        self.limits.unexpected_header
    }

    /// `NA_Msg_get_max_tag`.
    #[doc(alias = "NA_Msg_get_max_tag")]
    pub fn max_tag(&self) -> Tag {
        self.plugin.max_tag()
    }

    /// `NA_Msg_buf_alloc`: a buffer of `size` bytes usable for messages on this class.
    #[doc(alias = "NA_Msg_buf_alloc")]
    pub fn msg_buf_alloc(&self, size: usize) -> MsgBuf {
        MsgBuf::new(size)
    }

    /// `NA_Mem_handle_create` + `NA_Mem_register` over one buffer, which the handle takes over.
    #[doc(alias = "NA_Mem_register")]
    #[doc(alias = "NA_Mem_handle_create")]
    pub fn mem_register(&self, buf: Vec<u8>, access: Access) -> Result<MemHandle> {
        self.mem_register_segments(vec![buf], access)
    }

    /// `NA_Mem_handle_create_segments` + `NA_Mem_register` over several buffers.
    #[doc(alias = "NA_Mem_handle_create_segments")]
    pub fn mem_register_segments(&self, bufs: Vec<Vec<u8>>, access: Access) -> Result<MemHandle> {
        if bufs.is_empty() || access.is_empty() {
            return Err(Error::InvalidArg);
        }
        let segs = bufs.into_iter().map(Vec::into_boxed_slice).collect();
        MemHandle::new(segs, access, |r, a| self.plugin.mem_register_region(r, a))
    }

    /// `NA_Mem_handle_serialize`.
    #[doc(alias = "NA_Mem_handle_serialize")]
    pub fn mem_handle_serialize(&self, mh: &MemHandle) -> Vec<u8> {
        let mut out = Vec::new();
        mh.plugin_mem().serialize(&mut out);
        out
    }

    /// `NA_Mem_handle_deserialize`: checks a peer's handle; garbage is a typed error.
    #[doc(alias = "NA_Mem_handle_deserialize")]
    pub fn mem_handle_deserialize(&self, bytes: &[u8]) -> Result<RemoteMem> {
        self.plugin.mem_deserialize(bytes).inspect_err(|e| {
            tracing::warn!(len = bytes.len(), error = %e, "na: bad memory handle");
        })
    }
}

impl fmt::Debug for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Class")
            .field("plugin", &self.plugin.name())
            .field("protocol", &self.plugin.protocol())
            .finish()
    }
}

/// Wakes a context's blocked `progress` from any thread.
#[derive(Clone)]
pub struct Waker {
    plugin: Arc<dyn PluginContext>,
}

impl Waker {
    /// Makes a blocked (or the next) `progress` on the context return.
    pub fn wake(&self) {
        self.plugin.wake()
    }
}

impl fmt::Debug for Waker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("na::Waker")
    }
}

/// One endpoint and its operations (`na_context_t`). Posting may happen from any thread; one
/// thread at a time drives `progress` and drains completions (DESIGN §1, §2).
#[doc(alias = "na_context_t")]
pub struct Context {
    class: Class,
    id: u8,
    plugin: Arc<dyn PluginContext>,
    cq: Arc<CompletionQueue>,
    next_op: AtomicU64,
    closed: bool,
}

impl Context {
    /// The class this context belongs to.
    pub fn class(&self) -> &Class {
        &self.class
    }

    /// The id it was created with.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// `NA_Addr_self`: this context's endpoint address.
    #[doc(alias = "NA_Addr_self")]
    pub fn self_addr(&self) -> Addr {
        self.plugin.self_addr()
    }

    /// `NA_Msg_init_unexpected`: writes the plugin's header into the front of `buf`
    /// (`Class::unexpected_header_size` bytes); the payload follows it. `buf` is a [`MsgBuf`],
    /// or any bytes that [`Context::inject_unexpected`] will send (a caller's stack buffer).
    #[doc(alias = "NA_Msg_init_unexpected")]
    pub fn msg_init_unexpected<B: AsMut<[u8]> + ?Sized>(&self, buf: &mut B) {
        let buf = buf.as_mut();
        let n = self.class.unexpected_header_size().min(buf.len());
        self.plugin.msg_init_unexpected(&mut buf[..n]);
    }

    #[inline(always)]
    fn post(&self, user: u64, req: Request) -> OpId {
        let id = OpId(self.next_op.fetch_add(1, Ordering::Relaxed));
        self.plugin.post(Op { id, user, req });
        id
    }

    /// `NA_Msg_send_unexpected`: sends the first `len` bytes of `buf` (plugin header included).
    #[doc(alias = "NA_Msg_send_unexpected")]
    pub fn send_unexpected(
        &self,
        buf: MsgBuf,
        len: usize,
        dest: &Addr,
        tag: Tag,
        user: u64,
    ) -> OpId {
        let _s = crate::hop_span!(TRACE, "na.send_unexpected", len, tag);
        self.post(
            user,
            Request::SendUnexpected {
                buf,
                len,
                dest: dest.clone(),
                tag,
            },
        )
    }

    /// Sends the first `len` bytes of `buf` (plugin header included) as
    /// [`Context::send_unexpected`] would, but with no operation and no completion: the bytes
    /// are copied before this returns (libfabric's `fi_injectdata`), so `buf` is free at once.
    /// `buf` is any bytes: a [`MsgBuf`]'s (`as_slice`), or a small message on the caller's stack.
    /// `false` when it was not sent, with nothing done: over [`Class::max_inject_size`], a peer
    /// not yet known to be up, no queue space, earlier sends waiting that it must not pass. Post
    /// it with `send_unexpected` then; that reports any error. Once injected, a later failure is
    /// not reported.
    #[doc(alias = "fi_injectdata")]
    #[inline]
    pub fn inject_unexpected(&self, buf: &[u8], len: usize, dest: &Addr, tag: Tag) -> bool {
        self.inject(OpKind::SendUnexpected, buf, len, dest, tag)
    }

    /// [`Context::inject_unexpected`] for an expected message ([`Context::send_expected`]):
    /// libfabric's `fi_tinject`.
    #[doc(alias = "fi_tinject")]
    #[inline]
    pub fn inject_expected(&self, buf: &[u8], len: usize, dest: &Addr, tag: Tag) -> bool {
        self.inject(OpKind::SendExpected, buf, len, dest, tag)
    }

    /// The two injects: the size check (before the span, so a declined attempt leaves no hop),
    /// the hop's span, the plugin's inject.
    #[inline]
    fn inject(&self, kind: OpKind, buf: &[u8], len: usize, dest: &Addr, tag: Tag) -> bool {
        if len > buf.len().min(self.class.limits.max_inject) {
            return false;
        }
        let _s = if kind == OpKind::SendUnexpected {
            crate::hop_span!(TRACE, "na.inject_unexpected", len, tag)
        } else {
            crate::hop_span!(TRACE, "na.inject_expected", len, tag)
        };
        self.plugin.inject(kind, &buf[..len], dest, tag)
    }

    /// `NA_Msg_recv_unexpected`: posts `buf` for one unexpected message from anyone.
    #[doc(alias = "NA_Msg_recv_unexpected")]
    pub fn recv_unexpected(&self, buf: MsgBuf, user: u64) -> OpId {
        let _s = crate::hop_span!(TRACE, "na.recv_unexpected_post");
        self.post(user, Request::RecvUnexpected { buf })
    }

    /// `NA_Msg_send_expected`.
    #[doc(alias = "NA_Msg_send_expected")]
    pub fn send_expected(&self, buf: MsgBuf, len: usize, dest: &Addr, tag: Tag, user: u64) -> OpId {
        let _s = crate::hop_span!(TRACE, "na.send_expected", len, tag);
        self.post(
            user,
            Request::SendExpected {
                buf,
                len,
                dest: dest.clone(),
                tag,
            },
        )
    }

    /// `NA_Msg_recv_expected`: posts `buf` for the message `source` sends with `tag`.
    #[doc(alias = "NA_Msg_recv_expected")]
    pub fn recv_expected(&self, buf: MsgBuf, source: &Addr, tag: Tag, user: u64) -> OpId {
        let _s = crate::hop_span!(TRACE, "na.recv_expected_post", tag);
        self.post(
            user,
            Request::RecvExpected {
                buf,
                source: source.clone(),
                tag,
            },
        )
    }

    /// `NA_Put`: writes `len` bytes from `local[local_offset..]` into the peer's `remote[remote_offset..]`.
    #[doc(alias = "NA_Put")]
    #[allow(clippy::too_many_arguments)]
    pub fn put(
        &self,
        local: &MemHandle,
        local_offset: u64,
        remote: &RemoteMem,
        remote_offset: u64,
        len: u64,
        dest: &Addr,
        user: u64,
    ) -> OpId {
        let _s = crate::hop_span!(TRACE, "na.put", len);
        self.post(
            user,
            Request::Put {
                local: local.clone(),
                local_offset,
                remote: Box::new(remote.clone()),
                remote_offset,
                len,
                dest: dest.clone(),
            },
        )
    }

    /// `NA_Get`: reads `len` bytes of the peer's `remote[remote_offset..]` into `local[local_offset..]`.
    #[doc(alias = "NA_Get")]
    #[allow(clippy::too_many_arguments)]
    pub fn get(
        &self,
        local: &MemHandle,
        local_offset: u64,
        remote: &RemoteMem,
        remote_offset: u64,
        len: u64,
        dest: &Addr,
        user: u64,
    ) -> OpId {
        let _s = crate::hop_span!(TRACE, "na.get", len);
        self.post(
            user,
            Request::Get {
                local: local.clone(),
                local_offset,
                remote: Box::new(remote.clone()),
                remote_offset,
                len,
                dest: dest.clone(),
            },
        )
    }

    /// `NA_Poll` / `NA_Poll_wait`: moves transport completions into the queue, waiting up to
    /// `timeout` when none is ready (zero never blocks). Returns how many completions wait.
    #[doc(alias = "NA_Poll")]
    #[doc(alias = "NA_Poll_wait")]
    #[doc(alias = "NA_Progress")]
    pub fn progress(&self, timeout: Duration) -> Result<usize> {
        let _s = crate::hop_span!(TRACE, "na.progress");
        if self.cq.is_empty() {
            self.plugin.progress(timeout)?;
        } else {
            self.plugin.progress(Duration::ZERO)?;
        }
        Ok(self.cq.len())
    }

    /// [`Context::progress`] and [`Context::drain_into`] in one call: appends every completion
    /// waiting, or finished by this call's progress, to `out` (a plugin may hand its own over
    /// directly instead of through the queue); returns how many it appended. On an error, what
    /// was already finished is in `out` too.
    pub fn progress_into(&self, timeout: Duration, out: &mut Vec<Completion>) -> Result<usize> {
        let _s = crate::hop_span!(TRACE, "na.progress");
        let start = out.len();
        self.cq.drain_into(out);
        // Completions are waiting: look for more, but do not block.
        let timeout = if out.len() > start {
            Duration::ZERO
        } else {
            timeout
        };
        let r = self.plugin.progress_into(timeout, out);
        // What other paths queued meanwhile (a resend's failure, a cancel from another thread).
        self.cq.drain_into(out);
        r.map(|()| out.len() - start)
    }

    /// Takes the oldest completion, if any (`NA_Trigger` without the callback).
    #[doc(alias = "NA_Trigger")]
    pub fn pop(&self) -> Option<Completion> {
        self.cq.pop()
    }

    /// Moves every waiting completion into `out`; returns how many.
    pub fn drain_into(&self, out: &mut Vec<Completion>) -> usize {
        self.cq.drain_into(out)
    }

    /// `NA_Cancel`: the operation completes `Canceled` only if it had no effect.
    #[doc(alias = "NA_Cancel")]
    pub fn cancel(&self, op: OpId) -> Result<()> {
        self.plugin.cancel(op)
    }

    /// A handle other threads use to wake a blocked `progress`.
    #[doc(alias = "NA_Poll_interrupt")]
    pub fn waker(&self) -> Waker {
        Waker {
            plugin: self.plugin.clone(),
        }
    }

    /// `NA_Poll_get_fd`: readable when progress has work (None when the plugin has no fd).
    #[doc(alias = "NA_Poll_get_fd")]
    pub fn wait_fd(&self) -> Option<RawFd> {
        self.plugin.wait_fd()
    }

    /// `NA_Context_destroy`: completes every pending operation exactly once and returns every
    /// completion not yet drained, the teardown ones included.
    #[doc(alias = "NA_Context_destroy")]
    pub fn close(mut self) -> Vec<Completion> {
        self.closed = true;
        self.plugin.close();
        let mut out = Vec::new();
        self.cq.drain_into(&mut out);
        out
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        if !self.closed {
            self.plugin.close();
            let mut out = Vec::new();
            let n = self.cq.drain_into(&mut out);
            if n > 0 {
                tracing::debug!(n, "na: context dropped with undrained completions");
            }
        }
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("class", &self.class)
            .field("id", &self.id)
            .finish()
    }
}
