//! Plugin `inproc`: a deterministic one-process transport with seeded fault injection.
//!
//! A [`Fabric`] is a world of endpoints (one per [`crate::Context`]); a class made on it talks to
//! every other class made on the same fabric. [`crate::Class::initialize`]`("inproc", ..)` uses a
//! process-global fabric without faults; tests build their own with [`Fabric::new`] and get
//! classes with [`Fabric::class`].
//!
//! - **Addresses** are endpoint numbers (4 bytes, little-endian), printed `inproc://<n>`.
//! - **Messages** are queued in the receiver's mailbox and delivered during the *receiver's*
//!   `progress` (each call advances its logical clock by at least one tick). Unexpected messages
//!   meeting no posted buffer, and expected messages meeting no matching receive, are held (up to
//!   [`FaultConfig::hold_cap`] per queue; beyond it the send completes `Busy`) and delivered when a
//!   receive is posted. A send completes when the receiver's progress takes the message — into a
//!   receive buffer, or into its hold (as libfabric's rxm buffers it) — or refuses it; until then
//!   it can be cancelled. A message larger than the receive buffer completes the receive with
//!   `Overflow` (nothing copied) and the send Ok.
//! - **RMA** runs during the *initiator's* progress against the fabric's table of registered
//!   regions: an unknown (deregistered) key is `Access`, missing rights `Permission`, a vanished
//!   target `HostUnreach`.
//! - **Cancel and teardown** go through an op state machine (`opstate.rs`): exactly one completion
//!   per operation whether delivery, cancel or `close` gets there first.
//! - **Faults** ([`FaultConfig`]) are drawn per post from a PRNG per endpoint; with one thread
//!   driving the contexts, a seed gives a byte-identical [`Fabric::trace`].
//! - `wait_fd` is None: a blocked `progress` sleeps on a condition variable that deliveries and
//!   [`crate::Waker::wake`] signal.

mod fault;
pub(crate) mod opstate;

pub use fault::FaultConfig;

use crate::addr::Addr;
use crate::class::Class;
use crate::cq::CompletionQueue;
use crate::error::{Error, Result};
use crate::mem::{Access, MemRegion, PluginMem, RemoteMem, RemoteSegment, Segment};
use crate::msg::Tag;
use crate::op::{Completion, Op, OpId, OpKind, Request, Rma};
use crate::plugin::{InfoString, InitOptions, Plugin, PluginContext, ProgressMode};
use crate::sync::{
    arc_dyn, lock, read, wait, write, Arc, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Condvar,
    Mutex, OnceLock, Ordering, RwLock,
};
use fault::{Rng, SendFaults};
use opstate::{Cancel, OpCell};
use smallvec::SmallVec;
use std::any::Any;
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write as _;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// The plugin's name in info strings and addresses (a `static`: one string, so addresses
/// compare their plugin names by pointer).
pub static NAME: &str = "inproc";
/// Bytes of the unexpected header `msg_init_unexpected` writes: `b"inpc"` and the sender's
/// endpoint number (little-endian u32). Non-zero on purpose, so layers above exercise the offset.
pub const HEADER_SIZE: usize = 8;
const MEM_MAGIC: &[u8; 4] = b"inpm";
const MAX_MEM_SEGMENTS: usize = 1024;

type Hasher = ahash::RandomState;

fn hasher() -> Hasher {
    // Fixed keys: iteration order (only used for diagnostics) is the same in every run.
    Hasher::with_seeds(1, 2, 3, 4)
}

/// Whether a bare protocol name selects this plugin.
pub(crate) fn check_protocol(proto: &str) -> bool {
    proto == NAME
}

/// Opens the plugin on the process-global fabric.
pub(crate) fn initialize(
    info: &InfoString,
    listen: bool,
    opts: &InitOptions,
) -> Result<Arc<dyn Plugin>> {
    if let (Some(_), Some(p)) = (&info.plugin, &info.protocol) {
        if p != NAME {
            tracing::warn!(protocol = %p, "na.inproc: no such protocol");
            return Err(Error::ProtoNoSupport);
        }
    }
    Ok(Fabric::global().plugin(listen, opts))
}

fn addr_of(n: u32) -> Addr {
    Addr::from_raw(NAME, &n.to_le_bytes())
}

fn endpoint_of(addr: &Addr) -> Result<u32> {
    if addr.plugin() != NAME {
        return Err(Error::InvalidArg);
    }
    let b: [u8; 4] = addr.as_bytes().try_into().map_err(|_| Error::InvalidArg)?;
    Ok(u32::from_le_bytes(b))
}

/// A world of inproc endpoints with one fault configuration. Cheap to clone.
#[derive(Clone)]
pub struct Fabric {
    inner: Arc<FabricInner>,
}

struct RegionEntry {
    region: Arc<MemRegion>,
    access: Access,
    class_id: u32,
}

struct FabricInner {
    /// Read per post only when faults are on (`quiet` is false).
    cfg: RwLock<FaultConfig>,
    quiet: AtomicBool,
    hold_cap: AtomicUsize,
    endpoints: RwLock<Vec<Option<Arc<Endpoint>>>>,
    regions: RwLock<HashMap<u64, RegionEntry, Hasher>>,
    next_key: AtomicU64,
    next_class: AtomicU32,
    trace: Option<Mutex<Vec<u8>>>,
    /// Unexpected messages refused at the hold cap, fabric-wide.
    refused: AtomicU64,
}

impl FabricInner {
    fn endpoint(&self, n: u32) -> Option<Arc<Endpoint>> {
        read(&self.endpoints).get(n as usize)?.clone()
    }

    fn trace(&self, f: impl FnOnce(&mut Vec<u8>)) {
        if let Some(t) = &self.trace {
            f(&mut lock(t));
        }
    }
}

impl Fabric {
    /// A new, empty fabric injecting `faults`.
    pub fn new(faults: FaultConfig) -> Fabric {
        let trace = faults.trace.then(|| Mutex::new(Vec::new()));
        Fabric {
            inner: Arc::new(FabricInner {
                quiet: AtomicBool::new(faults.is_quiet()),
                hold_cap: AtomicUsize::new(faults.hold_cap),
                cfg: RwLock::new(faults),
                endpoints: RwLock::new(Vec::new()),
                regions: RwLock::new(HashMap::with_hasher(hasher())),
                next_key: AtomicU64::new(1),
                next_class: AtomicU32::new(1),
                trace,
                refused: AtomicU64::new(0),
            }),
        }
    }

    /// The process-global fabric behind `Class::initialize("inproc", ..)`: no faults.
    pub fn global() -> Fabric {
        static GLOBAL: OnceLock<Fabric> = OnceLock::new();
        GLOBAL
            .get_or_init(|| Fabric::new(FaultConfig::none()))
            .clone()
    }

    /// A class on this fabric with default options.
    pub fn class(&self, listen: bool) -> Class {
        Class::from_plugin(self.plugin(listen, &InitOptions::default()))
    }

    /// A class on this fabric with `opts` (message sizes, context count).
    pub fn class_opt(&self, listen: bool, opts: &InitOptions) -> Class {
        Class::from_plugin(self.plugin(listen, opts))
    }

    fn plugin(&self, listen: bool, opts: &InitOptions) -> Arc<dyn Plugin> {
        arc_dyn!(InprocClass {
            shared: Arc::new(ClassShared {
                fabric: self.inner.clone(),
                class_id: self.inner.next_class.fetch_add(1, Ordering::Relaxed),
                listening: listen,
                opts: opts.clone(),
                contexts: AtomicUsize::new(0),
                failed: Mutex::new(HashSet::with_hasher(hasher())),
                failed_n: AtomicUsize::new(0),
            }),
        } => dyn Plugin)
    }

    /// The fault configuration.
    pub fn faults(&self) -> FaultConfig {
        read(&self.inner.cfg).clone()
    }

    /// Changes the faults from now on (e.g. after a test's set-up ran fault-free). Every endpoint's
    /// PRNG restarts from the new seed, so a run stays reproducible; `trace` is fixed at creation.
    pub fn set_faults(&self, faults: FaultConfig) {
        let eps: Vec<Arc<Endpoint>> = read(&self.inner.endpoints)
            .iter()
            .flatten()
            .cloned()
            .collect();
        for ep in &eps {
            *lock(&ep.rng) = Rng::new(faults.seed, u64::from(ep.id));
        }
        self.inner.quiet.swap(faults.is_quiet(), Ordering::AcqRel);
        self.inner.hold_cap.swap(faults.hold_cap, Ordering::AcqRel);
        self.inner
            .trace(|t| writeln!(t, "faults set: seed {}", faults.seed).unwrap_or(()));
        *write(&self.inner.cfg) = faults;
    }

    /// Makes the endpoint at `addr` vanish, as a killed peer process: messages queued for it and
    /// not yet taken complete their sends with `HostUnreach` (held ones are lost with it; their
    /// sends had completed), and every later operation towards it (or posted by it) fails
    /// `HostUnreach`. Its own posted receives stay until its context closes.
    pub fn vanish(&self, addr: &Addr) -> Result<()> {
        let n = endpoint_of(addr)?;
        let ep = self.inner.endpoint(n).ok_or(Error::NoEntry)?;
        ep.vanish();
        Ok(())
    }

    /// Brings a vanished endpoint back (a peer restarted at the same address). Classes that saw it
    /// fail keep failing towards it until they call `addr_set_remove`.
    pub fn revive(&self, addr: &Addr) -> Result<()> {
        let n = endpoint_of(addr)?;
        let ep = self.inner.endpoint(n).ok_or(Error::NoEntry)?;
        ep.vanished.swap(false, Ordering::AcqRel);
        self.inner
            .trace(|t| writeln!(t, "ep{n} revived").unwrap_or(()));
        Ok(())
    }

    /// The event trace so far (empty unless `FaultConfig::trace`).
    pub fn trace(&self) -> Vec<u8> {
        self.inner
            .trace
            .as_ref()
            .map(|t| lock(t).clone())
            .unwrap_or_default()
    }

    /// Regions registered and not yet deregistered on this fabric.
    pub fn registered_regions(&self) -> usize {
        read(&self.inner.regions).len()
    }

    /// Messages refused at the hold cap since the fabric was made.
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }

    /// Open endpoints (contexts not yet closed).
    pub fn endpoints(&self) -> usize {
        read(&self.inner.endpoints).iter().flatten().count()
    }
}

impl std::fmt::Debug for Fabric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fabric")
            .field("faults", &*read(&self.inner.cfg))
            .finish()
    }
}

struct ClassShared {
    fabric: Arc<FabricInner>,
    class_id: u32,
    listening: bool,
    opts: InitOptions,
    contexts: AtomicUsize,
    /// Peers an operation found unreachable: later operations towards them fail at once until
    /// `addr_set_remove` (as an ofi AV entry of a dead peer must be removed before reconnecting).
    failed: Mutex<HashSet<u32, Hasher>>,
    failed_n: AtomicUsize,
}

impl ClassShared {
    fn has_failed(&self, n: u32) -> bool {
        self.failed_n.load(Ordering::Acquire) > 0 && lock(&self.failed).contains(&n)
    }

    fn mark_failed(&self, n: u32) {
        let mut f = lock(&self.failed);
        if f.insert(n) {
            self.failed_n.store(f.len(), Ordering::Release);
        }
    }
}

struct InprocClass {
    shared: Arc<ClassShared>,
}

/// The plugin's half of a registration: removing the key from the fabric is deregistration.
struct InprocMem {
    fabric: Arc<FabricInner>,
    key: u64,
    access: Access,
    segments: SmallVec<[u64; 1]>,
}

impl PluginMem for InprocMem {
    fn serialize(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(MEM_MAGIC);
        out.push(self.access.bits());
        out.push(0);
        out.extend_from_slice(&(self.segments.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.key.to_le_bytes());
        let mut base = 0u64;
        for &len in &self.segments {
            out.extend_from_slice(&base.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
            base += len;
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Drop for InprocMem {
    fn drop(&mut self) {
        write(&self.fabric.regions).remove(&self.key);
        tracing::trace!(key = self.key, "na.inproc: deregistered");
    }
}

impl Plugin for InprocClass {
    fn name(&self) -> &'static str {
        NAME
    }

    fn protocol(&self) -> &str {
        NAME
    }

    fn is_listening(&self) -> bool {
        self.shared.listening
    }

    fn context_create(&self, id: u8, cq: Arc<CompletionQueue>) -> Result<Arc<dyn PluginContext>> {
        let open = self.shared.contexts.fetch_add(1, Ordering::AcqRel);
        if open >= usize::from(self.shared.opts.max_contexts) {
            self.shared.contexts.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(id, open, "na.inproc: too many contexts");
            return Err(Error::Busy);
        }
        let fabric = &self.shared.fabric;
        let mut eps = write(&fabric.endpoints);
        let n = eps.len() as u32;
        let ep = Arc::new(Endpoint {
            id: n,
            class: self.shared.clone(),
            sink: Arc::new(Sink {
                cq,
                bell: Doorbell::new(),
                outstanding: Mutex::new(HashMap::with_hasher(hasher())),
            }),
            state: Mutex::new(Mailbox::default()),
            rng: Mutex::new(Rng::new(read(&fabric.cfg).seed, u64::from(n))),
            vanished: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            woken: AtomicBool::new(false),
            dirty: AtomicBool::new(true),
            ticking: AtomicBool::new(false),
        });
        eps.push(Some(ep.clone()));
        drop(eps);
        tracing::debug!(endpoint = n, id, "na.inproc: context created");
        Ok(arc_dyn!(EndpointHandle(ep) => dyn PluginContext))
    }

    fn addr_lookup(&self, name: &str) -> Result<Addr> {
        let n = name
            .strip_prefix("inproc://")
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<u32>().ok());
        match n {
            Some(n) => Ok(addr_of(n)),
            None => {
                tracing::warn!(name, "na.inproc: malformed address string");
                Err(Error::InvalidArg)
            }
        }
    }

    fn addr_to_string(&self, addr: &Addr) -> Result<String> {
        Ok(format!("inproc://{}", endpoint_of(addr)?))
    }

    fn addr_deserialize(&self, bytes: &[u8]) -> Result<Addr> {
        match <[u8; 4]>::try_from(bytes) {
            Ok(b) => Ok(addr_of(u32::from_le_bytes(b))),
            Err(_) => {
                tracing::warn!(len = bytes.len(), "na.inproc: garbage address bytes");
                Err(Error::Fault)
            }
        }
    }

    fn addr_set_remove(&self, addr: &Addr) -> Result<()> {
        let n = endpoint_of(addr)?;
        let mut f = lock(&self.shared.failed);
        f.remove(&n);
        self.shared.failed_n.store(f.len(), Ordering::Release);
        Ok(())
    }

    fn max_unexpected_size(&self) -> usize {
        self.shared.opts.max_unexpected_size
    }

    fn max_expected_size(&self) -> usize {
        self.shared.opts.max_expected_size
    }

    fn max_inject_size(&self) -> usize {
        let o = &self.shared.opts;
        o.max_inject_size
            .min(o.max_unexpected_size.max(o.max_expected_size))
    }

    fn unexpected_header_size(&self) -> usize {
        HEADER_SIZE
    }

    fn max_tag(&self) -> Tag {
        Tag::MAX
    }

    /// inproc copies bytes itself and needs the region: see `mem_register_region`.
    fn mem_register(&self, _segments: &[Segment], _access: Access) -> Result<Box<dyn PluginMem>> {
        Err(Error::OpNotSupported)
    }

    fn mem_register_region(
        &self,
        region: &Arc<MemRegion>,
        access: Access,
    ) -> Result<Box<dyn PluginMem>> {
        let fabric = &self.shared.fabric;
        let key = fabric.next_key.fetch_add(1, Ordering::Relaxed);
        write(&fabric.regions).insert(
            key,
            RegionEntry {
                region: region.clone(),
                access,
                class_id: self.shared.class_id,
            },
        );
        Ok(Box::new(InprocMem {
            fabric: fabric.clone(),
            key,
            access,
            segments: region.segments().iter().map(|s| s.len as u64).collect(),
        }))
    }

    fn mem_deserialize(&self, bytes: &[u8]) -> Result<RemoteMem> {
        parse_mem(bytes).ok_or_else(|| {
            tracing::warn!(len = bytes.len(), "na.inproc: garbage memory handle");
            Error::Fault
        })
    }
}

fn parse_mem(b: &[u8]) -> Option<RemoteMem> {
    if b.len() < 16 || &b[..4] != MEM_MAGIC || b[5] != 0 {
        return None;
    }
    let access = Access::from_bits(b[4]).filter(|a| !a.is_empty())?;
    let nseg = usize::from(u16::from_le_bytes([b[6], b[7]]));
    let key = u64::from_le_bytes(b[8..16].try_into().ok()?);
    if nseg == 0 || nseg > MAX_MEM_SEGMENTS || b.len() != 16 + 16 * nseg {
        return None;
    }
    let mut segments = SmallVec::new();
    let mut expect = 0u64;
    for c in b[16..].chunks_exact(16) {
        let base = u64::from_le_bytes(c[..8].try_into().ok()?);
        let len = u64::from_le_bytes(c[8..].try_into().ok()?);
        if base != expect {
            return None;
        }
        expect = base.checked_add(len)?;
        segments.push(RemoteSegment { base, len, key });
    }
    Some(RemoteMem {
        plugin: NAME,
        access,
        segments,
    })
}

/// Wakes a sleeping `progress`: `rung` records work (or a wake) that arrived since the last look,
/// so a ring between a progress pass and its sleep is never lost; the condvar is signalled only
/// when someone sleeps, so a busy receiver costs senders no syscall.
pub(crate) struct Doorbell {
    m: Mutex<Bell>,
    cv: Condvar,
}

#[derive(Default)]
struct Bell {
    rung: bool,
    sleeping: bool,
}

impl Doorbell {
    pub(crate) fn new() -> Doorbell {
        Doorbell {
            m: Mutex::new(Bell::default()),
            cv: Condvar::new(),
        }
    }

    /// Records work and wakes a sleeper.
    pub(crate) fn ring(&self) {
        let mut b = lock(&self.m);
        b.rung = true;
        if b.sleeping {
            self.cv.notify_one();
        }
    }

    /// Waits until rung (true) or until `deadline` passes (false); consumes the ring.
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> bool {
        let mut b = lock(&self.m);
        loop {
            if b.rung {
                b.rung = false;
                return true;
            }
            b.sleeping = true;
            b = match deadline {
                None => wait(&self.cv, b, None),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        b.sleeping = false;
                        return false;
                    }
                    wait(&self.cv, b, Some(d - now))
                }
            };
            b.sleeping = false;
        }
    }
}

/// Where an endpoint's completions go; operations in flight elsewhere hold an `Arc` of it.
struct Sink {
    cq: Arc<CompletionQueue>,
    bell: Doorbell,
    /// Operations posted and not completed, for cancel and close.
    outstanding: Mutex<HashMap<OpId, Arc<Cell>, Hasher>>,
}

impl Sink {
    /// Pushes `c` (first, so `close` waiting for `outstanding` to empty sees it in the queue),
    /// forgets the operation, and wakes the owner.
    fn complete(&self, c: Completion) {
        let id = c.op;
        self.cq.push(c);
        lock(&self.outstanding).remove(&id);
        self.bell.ring();
    }
}

/// An operation in flight: what to do, and whose queue its completion goes to.
struct Pending {
    op: Op,
    sink: Arc<Sink>,
}

type Cell = OpCell<Pending>;

/// Finishes a claimed operation and pushes its completion.
fn complete(
    fabric: &FabricInner,
    cell: &Cell,
    p: Pending,
    result: Result<()>,
    len: usize,
    source: Option<Addr>,
    tag: Tag,
) {
    cell.finish(result.err().map_or(0, |e| e.code() as u32));
    let Pending { op, sink } = p;
    let mut c = op.complete(result);
    c.len = len;
    c.source = source;
    c.tag = tag;
    fabric.trace(|t| {
        writeln!(
            t,
            "complete op{} {:?} {:?} len={} tag={}",
            c.op.0, c.kind, c.result, c.len, c.tag
        )
        .unwrap_or(())
    });
    sink.complete(c);
}

enum Body {
    /// A sender's operation: the bytes are its buffer's first `len`.
    Send(Arc<Cell>, usize),
    /// A copy of the bytes with no sender operation: a held message (its send completed when it
    /// was held) or an injected duplicate.
    Copy(Box<[u8]>),
}

struct Envelope {
    src: u32,
    tag: Tag,
    expected: bool,
    due: u64,
    body: Body,
    truncate_to: Option<usize>,
    corrupt: Option<(usize, u8)>,
    exhaust: u32,
}

impl Envelope {
    fn is_dead(&self) -> bool {
        matches!(&self.body, Body::Send(c, _) if !c.is_pending())
    }
}

/// One endpoint's queues, under its lock.
#[derive(Default)]
struct Mailbox {
    tick: u64,
    incoming: VecDeque<Envelope>,
    posted_unexpected: VecDeque<Arc<Cell>>,
    held_unexpected: VecDeque<Envelope>,
    posted_expected: HashMap<(u32, Tag), VecDeque<Arc<Cell>>, Hasher>,
    held_expected: HashMap<(u32, Tag), VecDeque<Envelope>, Hasher>,
    held_expected_n: usize,
    /// Keys of expected receives posted since the last pass (checked against held messages).
    fresh_expected: Vec<(u32, Tag)>,
    /// Own RMA operations with the tick they are due at.
    local: VecDeque<(u64, Arc<Cell>)>,
    exhausted_until: u64,
    scratch: Vec<u8>,
    /// (source, tag) of recently cancelled expected receives: a late message for one of them is
    /// discarded instead of held forever (its sender's send has completed already). Bounded.
    cancelled_expected: HashSet<(u32, Tag), Hasher>,
    cancelled_order: VecDeque<(u32, Tag)>,
}

/// How many cancelled expected receives an endpoint remembers for discarding late replies.
const CANCELLED_MEMORY: usize = 4096;

impl Mailbox {
    fn remember_cancelled(&mut self, key: (u32, Tag)) {
        if self.cancelled_expected.insert(key) {
            self.cancelled_order.push_back(key);
            if self.cancelled_order.len() > CANCELLED_MEMORY {
                if let Some(old) = self.cancelled_order.pop_front() {
                    self.cancelled_expected.remove(&old);
                }
            }
        }
    }
}

/// One inproc endpoint: a context's plugin half.
pub(crate) struct Endpoint {
    id: u32,
    class: Arc<ClassShared>,
    sink: Arc<Sink>,
    state: Mutex<Mailbox>,
    rng: Mutex<Rng>,
    vanished: AtomicBool,
    closed: AtomicBool,
    woken: AtomicBool,
    /// Set (after the mailbox lock is released) whenever something is queued here; a progress
    /// pass with nothing new and nothing ticking skips the mailbox lock entirely, so a spinning
    /// receiver does not contend with its senders.
    dirty: AtomicBool,
    /// The last pass left work that later ticks will run (delays, an exhaustion).
    ticking: AtomicBool,
}

impl Endpoint {
    fn fabric(&self) -> &FabricInner {
        &self.class.fabric
    }

    fn trace(&self, f: impl FnOnce(&mut Vec<u8>)) {
        self.fabric().trace(f)
    }

    /// Completes `op` at once (argument errors, injected errors, drops) without effect elsewhere.
    fn complete_now(&self, op: Op, result: Result<()>, len: usize) {
        if let Err(e) = result {
            tracing::debug!(op = op.id.0, kind = ?op.req.kind(), error = %e, "na.inproc: operation failed at post");
        }
        let mut c = op.complete(result);
        c.len = len;
        self.trace(|t| {
            writeln!(
                t,
                "ep{} complete-now op{} {:?} {:?}",
                self.id, c.op.0, c.kind, c.result
            )
            .unwrap_or(())
        });
        self.sink.cq.push(c);
        self.sink.bell.ring();
    }

    fn new_cell(&self, op: Op) -> Arc<Cell> {
        let id = op.id;
        let cell = Arc::new(OpCell::new(Pending {
            op,
            sink: self.sink.clone(),
        }));
        lock(&self.sink.outstanding).insert(id, cell.clone());
        cell
    }

    /// The live endpoint `n`, or why it cannot be reached.
    fn peer(&self, n: u32) -> Result<Arc<Endpoint>> {
        if self.vanished.load(Ordering::Acquire) || self.class.has_failed(n) {
            return Err(Error::HostUnreach);
        }
        match self.fabric().endpoint(n) {
            Some(ep) if !ep.vanished.load(Ordering::Acquire) => Ok(ep),
            _ => {
                self.class.mark_failed(n);
                tracing::debug!(peer = n, "na.inproc: peer unreachable");
                Err(Error::HostUnreach)
            }
        }
    }

    fn draw(&self, len: usize, header: usize, rma: bool) -> SendFaults {
        let fabric = self.fabric();
        if fabric.quiet.load(Ordering::Acquire) {
            return SendFaults::default();
        }
        let cfg = read(&fabric.cfg);
        let mut rng = lock(&self.rng);
        if rma {
            SendFaults::draw_rma(&cfg, &mut rng)
        } else {
            SendFaults::draw(&cfg, &mut rng, len, header)
        }
    }

    fn post_send(&self, op: Op) {
        let (len, cap, dest, tag, expected) = match &op.req {
            Request::SendUnexpected {
                buf,
                len,
                dest,
                tag,
            } => (*len, buf.capacity(), dest.clone(), *tag, false),
            Request::SendExpected {
                buf,
                len,
                dest,
                tag,
            } => (*len, buf.capacity(), dest.clone(), *tag, true),
            _ => unreachable!("post_send gets sends"),
        };
        let max = if expected {
            self.class.opts.max_expected_size
        } else {
            self.class.opts.max_unexpected_size
        };
        if len > cap {
            tracing::warn!(len, cap, "na.inproc: send longer than its buffer");
            return self.complete_now(op, Err(Error::InvalidArg), 0);
        }
        if len > max {
            tracing::warn!(
                len,
                max,
                expected,
                "na.inproc: message over the maximum size"
            );
            return self.complete_now(op, Err(Error::MsgSize), 0);
        }
        let n = match endpoint_of(&dest) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(?dest, "na.inproc: not an inproc address");
                return self.complete_now(op, Err(e), 0);
            }
        };
        let header = if expected { 0 } else { HEADER_SIZE.min(len) };
        let f = self.draw(len, header, false);
        self.trace(|t| {
            writeln!(
                t,
                "ep{} post op{} to ep{n} tag={tag} len={len} {f:?}",
                self.id, op.id.0
            )
            .unwrap_or(())
        });
        if f.error {
            return self.complete_now(op, Err(Error::IoError), 0);
        }
        if f.vanish {
            if let Some(ep) = self.fabric().endpoint(n) {
                ep.vanish();
            }
        }
        let peer = match self.peer(n) {
            Ok(p) => p,
            Err(e) => return self.complete_now(op, Err(e), 0),
        };
        if f.drop {
            return self.complete_now(op, Ok(()), len);
        }
        let dup = f.duplicate.then(|| {
            let b = match &op.req {
                Request::SendUnexpected { buf, .. } | Request::SendExpected { buf, .. } => {
                    Box::<[u8]>::from(&buf.as_slice()[..len])
                }
                _ => unreachable!(),
            };
            b
        });
        let cell = self.new_cell(op);
        if let Err(env) = self.enqueue(&peer, Body::Send(cell, len), tag, expected, &f, dup) {
            self.fail_envelope(env, Error::HostUnreach);
        }
    }

    /// Puts a message into `peer`'s mailbox with the faults drawn for it (and its duplicate);
    /// gives it back when the peer has vanished or closed.
    fn enqueue(
        &self,
        peer: &Endpoint,
        body: Body,
        tag: Tag,
        expected: bool,
        f: &SendFaults,
        dup: Option<Box<[u8]>>,
    ) -> std::result::Result<(), Envelope> {
        let mk = |body| Envelope {
            src: self.id,
            tag,
            expected,
            due: 0,
            body,
            truncate_to: f.truncate_to,
            corrupt: f.corrupt,
            exhaust: f.exhaust,
        };
        let env = mk(body);
        {
            let mut mb = lock(&peer.state);
            // Checked under the receiver's lock: `vanish` and `close` drain the mailbox under it.
            if peer.vanished.load(Ordering::Acquire) || peer.closed.load(Ordering::Acquire) {
                return Err(env);
            }
            let due = mb.tick + u64::from(f.delay);
            let mut env = env;
            env.due = due;
            match f.reorder {
                Some(k) => {
                    let at = mb.incoming.len().saturating_sub(k as usize);
                    mb.incoming.insert(at, env);
                }
                None => mb.incoming.push_back(env),
            }
            if let Some(b) = dup {
                let mut d = mk(Body::Copy(b));
                d.due = due + 1;
                mb.incoming.push_back(d);
            }
        }
        peer.dirty.swap(true, Ordering::AcqRel);
        peer.sink.bell.ring();
        Ok(())
    }

    /// `inject`: the message goes into the peer's mailbox as a copy, with no sender operation;
    /// faults are drawn as for a send (a drawn error refuses the inject, so the caller's normal
    /// send meets the next draw; a dropped message is lost, as a dropped send's is).
    fn inject(&self, kind: OpKind, msg: &[u8], dest: &Addr, tag: Tag) -> bool {
        let opts = &self.class.opts;
        let (expected, max) = match kind {
            OpKind::SendUnexpected => (false, opts.max_unexpected_size),
            OpKind::SendExpected => (true, opts.max_expected_size),
            _ => return false,
        };
        let len = msg.len();
        if self.closed.load(Ordering::Acquire) || len > max.min(opts.max_inject_size) {
            return false;
        }
        let Ok(n) = endpoint_of(dest) else {
            return false;
        };
        let header = if expected { 0 } else { HEADER_SIZE.min(len) };
        let f = self.draw(len, header, false);
        self.trace(|t| {
            writeln!(t, "ep{} inject to ep{n} tag={tag} len={len} {f:?}", self.id).unwrap_or(())
        });
        if f.error {
            return false;
        }
        if f.vanish {
            if let Some(ep) = self.fabric().endpoint(n) {
                ep.vanish();
            }
        }
        // As a send: to an unreachable peer it is refused (the normal send reports it).
        let Ok(peer) = self.peer(n) else {
            return false;
        };
        if f.drop {
            return true;
        }
        let dup = f.duplicate.then(|| Box::<[u8]>::from(msg));
        self.enqueue(&peer, Body::Copy(Box::from(msg)), tag, expected, &f, dup)
            .is_ok()
    }

    /// Completes the sender of a message that will never be delivered (if it is still pending).
    fn fail_envelope(&self, env: Envelope, e: Error) {
        if let Body::Send(cell, _) = env.body {
            if let Some(p) = cell.claim() {
                complete(self.fabric(), &cell, p, Err(e), 0, None, 0);
            }
        }
    }

    fn post_rma(&self, op: Op) {
        let Rma {
            put,
            local,
            local_offset: loff,
            remote,
            remote_offset: roff,
            len,
            dest,
        } = op.req.rma().expect("only RMA requests reach the RMA path");
        let in_range = |off: u64, total: u64| off.checked_add(len).is_some_and(|end| end <= total);
        if remote.plugin != NAME
            || endpoint_of(dest).is_err()
            || !in_range(loff, local.len() as u64)
            || !in_range(roff, remote.len())
        {
            tracing::warn!(put, len, loff, roff, "na.inproc: bad RMA arguments");
            return self.complete_now(op, Err(Error::InvalidArg), 0);
        }
        let f = self.draw(0, 0, true);
        self.trace(|t| {
            writeln!(
                t,
                "ep{} post-rma op{} put={put} len={len} {f:?}",
                self.id, op.id.0
            )
            .unwrap_or(())
        });
        if f.error {
            return self.complete_now(op, Err(Error::IoError), 0);
        }
        if f.vanish {
            if let Some(ep) = endpoint_of(dest)
                .ok()
                .and_then(|n| self.fabric().endpoint(n))
            {
                ep.vanish();
            }
        }
        let cell = self.new_cell(op);
        let mut mb = lock(&self.state);
        let due = mb.tick + u64::from(f.delay);
        mb.local.push_back((due, cell));
        drop(mb);
        self.dirty.swap(true, Ordering::AcqRel);
        self.sink.bell.ring();
    }

    /// Runs one RMA operation (under our mailbox lock, for the scratch buffer).
    fn run_rma(&self, scratch: &mut Vec<u8>, p: &Pending) -> Result<usize> {
        let Rma {
            put,
            local,
            local_offset: loff,
            remote,
            remote_offset: roff,
            len,
            dest,
        } =
            p.op.req
                .rma()
                .expect("only RMA requests reach the RMA path");
        let target = self.peer(endpoint_of(dest)?)?;
        let key = remote
            .segments
            .first()
            .map(|s| s.key)
            .ok_or(Error::InvalidArg)?;
        let (region, access, class_id) = {
            let regions = read(&self.fabric().regions);
            let e = regions.get(&key).ok_or_else(|| {
                tracing::warn!(key, "na.inproc: RMA against an unknown or deregistered key");
                Error::Access
            })?;
            (e.region.clone(), e.access, e.class_id)
        };
        if class_id != target.class.class_id {
            tracing::warn!(key, "na.inproc: key does not belong to the target");
            return Err(Error::Access);
        }
        let need = if put { Access::WRITE } else { Access::READ };
        if !access.contains(need) {
            tracing::warn!(key, put, "na.inproc: RMA without the right access");
            return Err(Error::Permission);
        }
        let (len, loff, roff) = (len as usize, loff as usize, roff as usize);
        if roff.checked_add(len).is_none_or(|e| e > region.len()) {
            return Err(Error::InvalidArg);
        }
        scratch.clear();
        scratch.resize(len, 0);
        if put {
            local.read_at(loff, scratch)?;
            region.write_at(roff, scratch)?;
        } else {
            region.read_at(roff, scratch)?;
            local.write_at(loff, scratch)?;
        }
        Ok(len)
    }

    /// Hands an arriving envelope to a receive, or holds it. Runs under our mailbox lock.
    fn deliver(&self, mb: &mut Mailbox, env: Envelope, from_hold: bool) -> Option<Envelope> {
        let fabric = self.fabric();
        let (send, len) = match &env.body {
            Body::Send(cell, len) => match cell.claim() {
                Some(p) => (Some(p), *len),
                None => return None, // cancelled by its sender meanwhile
            },
            Body::Copy(b) => (None, b.len()),
        };
        if !env.expected && env.exhaust > 0 && !from_hold {
            mb.exhausted_until = mb.exhausted_until.max(mb.tick + u64::from(env.exhaust));
            tracing::debug!(
                endpoint = self.id,
                until = mb.exhausted_until,
                "na.inproc: injected receive exhaustion"
            );
        }
        let recv = if env.expected {
            let key = (env.src, env.tag);
            let mut found = None;
            if let Some(q) = mb.posted_expected.get_mut(&key) {
                while let Some(c) = q.pop_front() {
                    if let Some(p) = c.claim() {
                        found = Some((c, p));
                        break;
                    }
                }
                if q.is_empty() {
                    mb.posted_expected.remove(&key);
                }
            }
            found
        } else if mb.exhausted_until > mb.tick || (!from_hold && !mb.held_unexpected.is_empty()) {
            None // exhausted, or older messages wait first
        } else {
            let mut found = None;
            while let Some(c) = mb.posted_unexpected.pop_front() {
                if let Some(p) = c.claim() {
                    found = Some((c, p));
                    break;
                }
            }
            found
        };
        if recv.is_none() && env.expected && mb.cancelled_expected.remove(&(env.src, env.tag)) {
            // A late reply to a receive that was cancelled (a timeout above): nobody will post
            // for it again, so it is not held.
            tracing::debug!(
                endpoint = self.id,
                from = env.src,
                tag = env.tag,
                "na.inproc: late message for a cancelled receive discarded"
            );
            fabric.trace(|t| {
                writeln!(
                    t,
                    "ep{} discard late from ep{} tag={}",
                    self.id, env.src, env.tag
                )
                .unwrap_or(())
            });
            if let (Body::Send(cell, _), Some(p)) = (&env.body, send) {
                complete(fabric, cell, p, Ok(()), len, None, 0);
            }
            return None;
        }
        let Some((rcell, mut rp)) = recv else {
            // No receive: hold the message, or refuse it at the cap.
            let held = if env.expected {
                mb.held_expected_n
            } else {
                mb.held_unexpected.len()
            };
            let cap = fabric.hold_cap.load(Ordering::Relaxed);
            let held = if held >= cap && !env.expected {
                // Senders may have cancelled some held messages: do not count those.
                mb.held_unexpected.retain(|e| !e.is_dead());
                mb.held_unexpected.len()
            } else {
                held
            };
            if held >= cap && !from_hold {
                fabric.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    endpoint = self.id,
                    from = env.src,
                    expected = env.expected,
                    held,
                    "na.inproc: hold cap reached, message refused"
                );
                fabric.trace(|t| {
                    writeln!(t, "ep{} refuse from ep{} tag={}", self.id, env.src, env.tag)
                        .unwrap_or(())
                });
                if let (Body::Send(cell, _), Some(p)) = (&env.body, send) {
                    complete(fabric, cell, p, Err(Error::Busy), 0, None, 0);
                }
                return None;
            }
            // Held: the message reached the receiver's transport, so the send is done (as with
            // libfabric's rxm, which buffers it); the bytes wait in a copy of their own.
            let mut env = env;
            if let (Body::Send(cell, _), Some(p)) = (&env.body, send) {
                let bytes = match &p.op.req {
                    Request::SendUnexpected { buf, .. } | Request::SendExpected { buf, .. } => {
                        Box::<[u8]>::from(&buf.as_slice()[..len])
                    }
                    _ => unreachable!("envelopes carry sends"),
                };
                let cell = cell.clone();
                complete(fabric, &cell, p, Ok(()), len, None, 0);
                env.body = Body::Copy(bytes);
            }
            return Some(env);
        };
        // Copy the bytes into the receive buffer.
        let eff = env.truncate_to.map_or(len, |t| t.min(len));
        let rbuf = match &mut rp.op.req {
            Request::RecvUnexpected { buf } | Request::RecvExpected { buf, .. } => buf,
            _ => unreachable!("posted receives are receives"),
        };
        let rresult = if eff > rbuf.capacity() {
            tracing::warn!(
                endpoint = self.id,
                len = eff,
                cap = rbuf.capacity(),
                "na.inproc: receive buffer too small"
            );
            Err(Error::Overflow)
        } else {
            let src: &[u8] = match (&env.body, &send) {
                (Body::Copy(b), _) => &b[..eff],
                (Body::Send(..), Some(p)) => match &p.op.req {
                    Request::SendUnexpected { buf, .. } | Request::SendExpected { buf, .. } => {
                        &buf.as_slice()[..eff]
                    }
                    _ => unreachable!(),
                },
                (Body::Send(..), None) => unreachable!(),
            };
            let dst = &mut rbuf.as_mut_slice()[..eff];
            dst.copy_from_slice(src);
            if let Some((at, mask)) = env.corrupt {
                if at < eff {
                    dst[at] ^= mask;
                }
            }
            Ok(())
        };
        fabric.trace(|t| {
            writeln!(
                t,
                "ep{} t{} deliver from ep{} tag={} len={eff} exp={} {:?}",
                self.id, mb.tick, env.src, env.tag, env.expected, rresult
            )
            .unwrap_or(())
        });
        complete(
            fabric,
            &rcell,
            rp,
            rresult,
            eff,
            Some(addr_of(env.src)),
            env.tag,
        );
        if let (Body::Send(cell, _), Some(p)) = (&env.body, send) {
            complete(fabric, cell, p, Ok(()), len, None, 0);
        }
        None
    }

    /// One progress pass: advances the clock one tick, runs due RMA, delivers due messages, and
    /// retries held ones. Returns whether work is still queued that later ticks will run.
    fn pass(&self) -> bool {
        if !self.dirty.swap(false, Ordering::AcqRel) && !self.ticking.load(Ordering::Acquire) {
            return false; // nothing queued since the last pass, and no clock-driven work
        }
        let mut guard = lock(&self.state);
        let mb = &mut *guard;
        mb.tick += 1;
        let tick = mb.tick;
        // Own RMA.
        for _ in 0..mb.local.len() {
            let Some((due, cell)) = mb.local.pop_front() else {
                break;
            };
            if due > tick {
                mb.local.push_back((due, cell));
                continue;
            }
            if let Some(p) = cell.claim() {
                let r = self.run_rma(&mut mb.scratch, &p);
                let len = *r.as_ref().unwrap_or(&0);
                complete(self.fabric(), &cell, p, r.map(|_| ()), len, None, 0);
            }
        }
        // Held messages first, so they keep their place ahead of new arrivals.
        // Held unexpected messages meet newly posted buffers.
        while mb.exhausted_until <= tick
            && !mb.held_unexpected.is_empty()
            && !mb.posted_unexpected.is_empty()
        {
            let env = mb.held_unexpected.pop_front().expect("non-empty");
            if let Some(back) = self.deliver(mb, env, true) {
                mb.held_unexpected.push_front(back);
                break;
            }
        }
        // Held expected messages meet newly posted receives.
        let fresh = std::mem::take(&mut mb.fresh_expected);
        for key in fresh {
            while mb.posted_expected.contains_key(&key) {
                let Some(q) = mb.held_expected.get_mut(&key) else {
                    break;
                };
                let Some(env) = q.pop_front() else { break };
                if q.is_empty() {
                    mb.held_expected.remove(&key);
                }
                mb.held_expected_n -= 1;
                if let Some(back) = self.deliver(mb, env, true) {
                    mb.held_expected_n += 1;
                    mb.held_expected.entry(key).or_default().push_front(back);
                    break;
                }
            }
        }
        // Arrivals, in queue order; not yet due ones keep their relative order.
        for _ in 0..mb.incoming.len() {
            let Some(env) = mb.incoming.pop_front() else {
                break;
            };
            if env.due > tick {
                mb.incoming.push_back(env);
                continue;
            }
            if let Some(held) = self.deliver(mb, env, false) {
                if held.expected {
                    mb.held_expected_n += 1;
                    mb.held_expected
                        .entry((held.src, held.tag))
                        .or_default()
                        .push_back(held);
                } else {
                    mb.held_unexpected.push_back(held);
                }
            }
        }
        let more = !mb.local.is_empty()
            || !mb.incoming.is_empty()
            || (mb.exhausted_until > tick && !mb.held_unexpected.is_empty());
        self.ticking.store(more, Ordering::Release);
        more
    }

    /// Takes every message queued or held here (vanish, close) and fails the senders of those not
    /// yet taken (held ones have no sender operation any more).
    fn flush_mailbox(&self, e: Error) {
        let mut envs = Vec::new();
        {
            let mut mb = lock(&self.state);
            envs.extend(mb.incoming.drain(..));
            envs.extend(mb.held_unexpected.drain(..));
            let mut keys: Vec<_> = mb.held_expected.keys().copied().collect();
            keys.sort_unstable();
            for k in keys {
                if let Some(q) = mb.held_expected.remove(&k) {
                    envs.extend(q);
                }
            }
            mb.held_expected_n = 0;
        }
        for env in envs {
            self.fail_envelope(env, e);
        }
    }

    fn vanish(&self) {
        if self.vanished.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::debug!(endpoint = self.id, "na.inproc: endpoint vanished");
        self.trace(|t| writeln!(t, "ep{} vanished", self.id).unwrap_or(()));
        // Take the lock once so that a sender that saw us alive has finished enqueuing.
        drop(lock(&self.state));
        self.flush_mailbox(Error::HostUnreach);
    }

    /// Cancels `cell`'s operation if it had no effect. Returns whether it did, and for an
    /// expected receive, the (source, tag) it was waiting for.
    fn cancel_cell(&self, cell: &Cell) -> (bool, Option<(u32, Tag)>) {
        match cell.cancel() {
            Cancel::Won(p) => {
                let key = match &p.op.req {
                    Request::RecvExpected { source, tag, .. } => {
                        endpoint_of(source).ok().map(|n| (n, *tag))
                    }
                    _ => None,
                };
                let mut c = p.op.complete(Err(Error::Canceled));
                c.len = 0;
                self.trace(|t| {
                    writeln!(t, "ep{} cancel op{} {:?}", self.id, c.op.0, c.kind).unwrap_or(())
                });
                p.sink.complete(c);
                (true, key)
            }
            Cancel::Deferred => (false, None),
            Cancel::NoOp => {
                if let Some(outcome) = cell.outcome() {
                    tracing::trace!(
                        endpoint = self.id,
                        outcome,
                        "na.inproc: cancel after completion is a no-op"
                    );
                }
                (false, None)
            }
        }
    }
}

impl Endpoint {
    fn self_addr(&self) -> Addr {
        addr_of(self.id)
    }

    fn msg_init_unexpected(&self, buf: &mut [u8]) {
        let mut h = [0u8; HEADER_SIZE];
        h[..4].copy_from_slice(b"inpc");
        h[4..].copy_from_slice(&self.id.to_le_bytes());
        let n = buf.len().min(HEADER_SIZE);
        buf[..n].copy_from_slice(&h[..n]);
    }

    fn post(&self, op: Op) {
        if self.closed.load(Ordering::Acquire) {
            return self.complete_now(op, Err(Error::Canceled), 0);
        }
        match &op.req {
            Request::SendUnexpected { .. } | Request::SendExpected { .. } => self.post_send(op),
            Request::RecvUnexpected { .. } => {
                let cell = self.new_cell(op);
                lock(&self.state).posted_unexpected.push_back(cell);
                self.dirty.swap(true, Ordering::AcqRel);
                self.sink.bell.ring();
            }
            Request::RecvExpected { source, tag, .. } => {
                let key = match endpoint_of(source) {
                    Ok(n) => (n, *tag),
                    Err(e) => {
                        tracing::warn!(?source, "na.inproc: receive from a non-inproc address");
                        return self.complete_now(op, Err(e), 0);
                    }
                };
                let cell = self.new_cell(op);
                let mut mb = lock(&self.state);
                mb.cancelled_expected.remove(&key); // posted again: later messages are wanted
                mb.posted_expected.entry(key).or_default().push_back(cell);
                mb.fresh_expected.push(key);
                drop(mb);
                self.dirty.swap(true, Ordering::AcqRel);
                self.sink.bell.ring();
            }
            Request::Put { .. } | Request::Get { .. } => self.post_rma(op),
        }
    }

    fn progress(&self, timeout: Duration) -> Result<()> {
        let deadline = (!timeout.is_zero()).then(|| crate::plugin::deadline_after(timeout));
        loop {
            let more = self.pass();
            if !self.sink.cq.is_empty() || timeout.is_zero() {
                return Ok(());
            }
            if self.woken.swap(false, Ordering::AcqRel) {
                return Ok(());
            }
            if more && deadline.is_none_or(|d| Instant::now() < d) {
                continue; // later ticks have work: no wall-clock wait for logical delays
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(());
            }
            if self.class.opts.progress_mode == ProgressMode::NoBlock {
                // Busy mode: poll again until the deadline, never sleep on the bell.
                std::hint::spin_loop();
                continue;
            }
            if !self.sink.bell.wait(deadline) {
                return Ok(());
            }
        }
    }

    fn cancel(&self, op: OpId) -> Result<()> {
        let cell = lock(&self.sink.outstanding).get(&op).cloned();
        let Some(cell) = cell else { return Ok(()) };
        let (cancelled, key) = self.cancel_cell(&cell);
        if cancelled {
            // Drop our queues' references to a cancelled receive now: expected tags are unique,
            // so its slot would otherwise never be popped.
            let mut mb = lock(&self.state);
            mb.posted_expected.retain(|_, q| {
                q.retain(|c| c.is_pending());
                !q.is_empty()
            });
            mb.posted_unexpected.retain(|c| c.is_pending());
            if let Some(key) = key {
                mb.remember_cancelled(key);
            }
        }
        Ok(())
    }

    fn wake(&self) {
        self.woken.swap(true, Ordering::AcqRel);
        self.sink.bell.ring();
    }

    fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(slot) = write(&self.fabric().endpoints).get_mut(self.id as usize) {
            *slot = None;
        }
        self.class.contexts.fetch_sub(1, Ordering::AcqRel);
        self.flush_mailbox(Error::HostUnreach);
        {
            let mut mb = lock(&self.state);
            mb.posted_unexpected.clear();
            mb.posted_expected.clear();
            mb.fresh_expected.clear();
            mb.local.clear();
        }
        // Our operations wherever they are: cancel those without effect, and wait for those a
        // peer is delivering right now (a short critical section on its side).
        let mut cells: Vec<(OpId, Arc<Cell>)> = lock(&self.sink.outstanding)
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        cells.sort_unstable_by_key(|(k, _)| *k);
        for (_, c) in &cells {
            let _ = self.cancel_cell(c);
        }
        drop(cells);
        while !lock(&self.sink.outstanding).is_empty() {
            crate::sync::yield_now();
        }
        tracing::debug!(endpoint = self.id, "na.inproc: context closed");
    }
}

/// What a [`crate::Context`] holds: the endpoint behind the plugin trait. (A separate type because
/// loom's `Arc` cannot coerce the `Arc<Endpoint>` the fabric keeps into an `Arc<dyn ..>`.)
struct EndpointHandle(Arc<Endpoint>);

impl PluginContext for EndpointHandle {
    fn self_addr(&self) -> Addr {
        self.0.self_addr()
    }

    fn msg_init_unexpected(&self, buf: &mut [u8]) {
        self.0.msg_init_unexpected(buf)
    }

    fn post(&self, op: Op) {
        self.0.post(op)
    }

    fn inject(&self, kind: OpKind, msg: &[u8], dest: &Addr, tag: Tag) -> bool {
        self.0.inject(kind, msg, dest, tag)
    }

    fn progress(&self, timeout: Duration) -> Result<()> {
        self.0.progress(timeout)
    }

    fn cancel(&self, op: OpId) -> Result<()> {
        self.0.cancel(op)
    }

    fn wake(&self) {
        self.0.wake()
    }

    /// None: a blocked progress sleeps on a condition variable instead.
    fn wait_fd(&self) -> Option<RawFd> {
        None
    }

    fn close(&self) {
        self.0.close()
    }
}

#[cfg(all(test, not(loom)))]
mod tests;

#[cfg(all(test, loom))]
mod loom_tests;
