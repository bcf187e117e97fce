//! `hg::Class` (`hg_class_t`): an NA class, its options and its RPC registry.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::header::ChecksumLevel;
use crate::peers::RemovedPeers;
use crate::proc::Proc;
use crate::registry::{Registry, Rpc, RpcId, RpcInfo};
use crate::sync::{Arc, AtomicU64, Ordering, RwLock, UserArc};
use std::fmt;

/// What a registered handler is given and returns (`hg_rpc_cb_t`): the request's handle (its
/// input, its origin) to answer with [`Handle::respond`]. An `Err` (or a panic) before the handler
/// responded answers the client with that error, so the client always gets one reply.
#[doc(alias = "hg_rpc_cb_t")]
#[doc(alias = "hg_core_rpc_cb")]
pub type Handler = UserArc<dyn Fn(Handle) -> Result<()> + Send + Sync>;

/// Options of a class (`struct hg_init_info`).
#[doc(alias = "hg_init_info")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitOptions {
    /// Header and payload checksums (`checksum_level`; default none, as CaRT uses).
    pub checksum_level: ChecksumLevel,
    /// Unexpected receives a listening context posts at first (`request_post_init`, 512).
    pub request_post_init: usize,
    /// How many more it posts when a single progress round consumed all of them
    /// (`request_post_incr`, 512), up to `request_post_max`.
    pub request_post_incr: usize,
    /// The most unexpected receives a context keeps posted (default 8192). At that bound further
    /// requests wait in the transport (held by inproc, queued by libfabric) until a buffer is
    /// reposted, which the next `progress` does once the request's body has been copied out.
    pub request_post_max: usize,
    /// Largest encoded input or output carried by the overflow path (an RMA transfer of the
    /// whole payload, `HG_CORE_MORE_DATA`); beyond it forward and respond fail with
    /// [`Error::MsgSize`]. Default 16 MiB. Zero disables overflow (`no_overflow`).
    pub max_overflow_size: usize,
    /// How long a blocking [`Context::progress`](crate::Context::progress) polls NA without
    /// blocking before it sleeps (spin-then-block, as CaRT's progress does; Mercury's own perf
    /// tools spin for a whole second after each wake-up). A reply that arrives within the window
    /// costs no eventfd/epoll wake-up. Never longer than the timeout passed to `progress`.
    /// Default zero (block at once): on the shared 2-vCPU machine, 50 µs halved the 1-in-flight
    /// rate over ofi+tcp (docs/perf.md, hg, 2026-11-26 01:45); worth trying on idle cores.
    pub progress_spin: std::time::Duration,
    /// How long a context keeps an output overflow registration (the reply's payload, which the
    /// client pulls) after the reply was sent, when the client never acknowledges the pull (it
    /// died after the reply, or its ack was lost). Default 5 s, plenty for a client that is
    /// alive to pull 16 MiB (`max_overflow_size`) on a loaded machine; a client that pulls later
    /// than this fails its forward with the pull's NA error. `None`: keep it until the ack, the
    /// peer's removal ([`Class::addr_set_remove`], or an NA error towards that peer) or context
    /// teardown. [`crate::ContextRef::overflow_registrations`] counts those kept.
    pub overflow_ack_timeout: Option<std::time::Duration>,
    /// The NA class's options for [`Class::init_opt`] (`hg_init_info::na_init_info`): message
    /// sizes (the eager limit), context count, and `progress_mode` (busy mode is Mercury's
    /// `NA_NO_BLOCK`). Ignored by [`Class::from_na`], whose NA class is already open.
    pub na: na::InitOptions,
}

impl Default for InitOptions {
    fn default() -> InitOptions {
        InitOptions {
            checksum_level: ChecksumLevel::None,
            request_post_init: 512,
            request_post_incr: 512,
            request_post_max: 8192,
            max_overflow_size: 16 << 20,
            progress_spin: std::time::Duration::ZERO,
            overflow_ack_timeout: Some(std::time::Duration::from_secs(5)),
            na: na::InitOptions::default(),
        }
    }
}

pub(crate) struct ClassInner {
    pub(crate) na: na::Class,
    pub(crate) opts: InitOptions,
    pub(crate) registry: RwLock<Registry<Handler>>,
    /// Moves on after every change to `registry`, under its write lock: a handle that read the
    /// registry at generation `g` may use what it read while this is still `g`.
    pub(crate) generation: AtomicU64,
    /// Peers removed with [`Class::addr_set_remove`], read by every context's progress.
    pub(crate) removed: RemovedPeers<na::Addr>,
}

/// An HG class (`hg_class_t`): an NA class plus the RPC registry its contexts share. Cheap to
/// clone.
#[doc(alias = "hg_class_t")]
#[derive(Clone)]
pub struct Class {
    pub(crate) inner: Arc<ClassInner>,
}

impl Class {
    /// `HG_Init_opt`: opens an NA class from `info` and wraps it.
    #[doc(alias = "HG_Init_opt")]
    #[doc(alias = "HG_Init_opt2")]
    #[doc(alias = "HG_Init")]
    pub fn init_opt(info: &str, listen: bool, opts: InitOptions) -> Result<Class> {
        let na = na::Class::initialize_opt(info, listen, &opts.na).map_err(Error::from_na)?;
        Ok(Class::from_na(na, opts))
    }

    /// Wraps an already opened NA class (e.g. an inproc fabric's, with fault injection).
    pub fn from_na(na: na::Class, opts: InitOptions) -> Class {
        Class {
            inner: Arc::new(ClassInner {
                na,
                opts,
                registry: RwLock::new(Registry::new()),
                generation: AtomicU64::new(0),
                removed: RemovedPeers::new(),
            }),
        }
    }

    /// `HG_Class_get_na`: the NA class underneath.
    #[doc(alias = "HG_Class_get_na")]
    pub fn na(&self) -> &na::Class {
        &self.inner.na
    }

    /// The options this class was opened with.
    pub fn options(&self) -> &InitOptions {
        &self.inner.opts
    }

    /// `HG_Context_create`: context 0.
    #[doc(alias = "HG_Context_create")]
    pub fn context_create(&self) -> Result<Context> {
        self.context_create_id(0)
    }

    /// `HG_Context_create_id`: a context with its own NA endpoint and id `id` (the cookie
    /// requests carry to pick a target context).
    #[doc(alias = "HG_Context_create_id")]
    pub fn context_create_id(&self, id: u8) -> Result<Context> {
        Context::new(self.clone(), id)
    }

    /// Runs `f` on the registry under its write lock, then moves the generation on.
    fn update_registry<R>(&self, f: impl FnOnce(&mut Registry<Handler>) -> R) -> R {
        let mut reg = crate::sync::write(&self.inner.registry);
        let r = f(&mut reg);
        self.inner.generation.fetch_add(1, Ordering::Release);
        drop(reg);
        r
    }

    pub(crate) fn read_registry(&self) -> crate::sync::ReadGuardLike<'_, Registry<Handler>> {
        crate::sync::read(&self.inner.registry)
    }

    /// `HG_Register`: records `id` with input type `I`, output type `O` and `handler` (`None` on
    /// a client that only forwards).
    #[doc(alias = "HG_Register")]
    pub fn register<I: Proc + 'static, O: Proc + 'static>(
        &self,
        id: RpcId,
        handler: Option<Handler>,
    ) {
        self.update_registry(|r| r.register::<I, O>(id, handler));
    }

    /// `HG_Register_name`: registers under Mercury's hash of `name`; returns the id.
    #[doc(alias = "HG_Register_name")]
    pub fn register_name<I: Proc + 'static, O: Proc + 'static>(
        &self,
        name: &str,
        handler: Option<Handler>,
    ) -> RpcId {
        self.update_registry(|r| r.register_name::<I, O>(name, handler))
    }

    /// Registers an [`Rpc`] type under its name's id, with `handler`; returns the id.
    pub fn register_rpc<R: Rpc>(&self, handler: Option<Handler>) -> RpcId {
        self.register_name::<R::In, R::Out>(R::NAME, handler)
    }

    /// `HG_Deregister`.
    #[doc(alias = "HG_Deregister")]
    pub fn deregister(&self, id: RpcId) -> Result<()> {
        self.update_registry(|r| r.deregister(id))
    }

    /// `HG_Registered`.
    #[doc(alias = "HG_Registered")]
    pub fn registered(&self, id: RpcId) -> bool {
        self.read_registry().registered(id)
    }

    /// `HG_Registered_disable_response`: makes `id` one-way (forward completes once sent; no
    /// response is sent).
    #[doc(alias = "HG_Registered_disable_response")]
    pub fn disable_response(&self, id: RpcId, disable: bool) -> Result<()> {
        self.update_registry(|r| r.disable_response(id, disable))
    }

    /// `HG_Registered_disabled_response`.
    #[doc(alias = "HG_Registered_disabled_response")]
    pub fn disabled_response(&self, id: RpcId) -> Result<bool> {
        self.read_registry().disabled_response(id)
    }

    /// What is registered under `id`.
    pub fn lookup(&self, id: RpcId) -> Result<RpcInfo<Handler>> {
        self.read_registry().lookup(id)
    }

    /// Runs `f` on what is registered under `id` under the registry's read lock (the RPC hot
    /// path: no clone of the record), or `NoEntry`.
    pub(crate) fn with_rpc<R>(
        &self,
        id: RpcId,
        f: impl FnOnce(&RpcInfo<Handler>) -> R,
    ) -> Result<R> {
        self.with_rpc_gen(id, f).map(|(r, _)| r)
    }

    /// [`Class::with_rpc`], also giving the registry's generation at the time of the read.
    pub(crate) fn with_rpc_gen<R>(
        &self,
        id: RpcId,
        f: impl FnOnce(&RpcInfo<Handler>) -> R,
    ) -> Result<(R, u64)> {
        let reg = self.read_registry();
        // Read under the read lock: no change is half done, so the generation matches `reg`.
        let gen = self.inner.generation.load(Ordering::Acquire);
        reg.get(id).map(|i| (f(i), gen)).ok_or(Error::NoEntry)
    }

    /// The registry's generation now (see `ClassInner::generation`).
    #[inline]
    pub(crate) fn registry_generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// `HG_Addr_lookup`.
    #[doc(alias = "HG_Addr_lookup")]
    #[doc(alias = "HG_Addr_lookup2")]
    pub fn addr_lookup(&self, name: &str) -> Result<na::Addr> {
        self.inner.na.addr_lookup(name).map_err(Error::from_na)
    }

    /// `HG_Addr_to_string`.
    #[doc(alias = "HG_Addr_to_string")]
    pub fn addr_to_string(&self, addr: &na::Addr) -> Result<String> {
        self.inner.na.addr_to_string(addr).map_err(Error::from_na)
    }

    /// `HG_Addr_set_remove`: forgets a (dead) peer's transport state so the next forward
    /// reconnects. Every context of the class also lets go, at its next progress, of the output
    /// overflow registrations it keeps for that peer's acknowledgement (a peer that died after
    /// its reply never sends it; see [`InitOptions::overflow_ack_timeout`]).
    #[doc(alias = "HG_Addr_set_remove")]
    pub fn addr_set_remove(&self, addr: &na::Addr) -> Result<()> {
        self.inner.removed.push(addr.clone());
        self.inner.na.addr_set_remove(addr).map_err(Error::from_na)
    }
}

impl fmt::Debug for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Class")
            .field("na", &self.inner.na)
            .field("opts", &self.inner.opts)
            .finish()
    }
}
