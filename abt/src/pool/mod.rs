//! Pools (`ABT_pool`): where work units wait to run. The `Pool` trait, its kinds and access modes,
//! and `create_basic`, which picks the implementation that suits an access mode.
//!
//! `create_basic` uses [`RingPool`], specialised per access mode; [`LockPool`] (a `VecDeque` under
//! a lock, any mode) is the second implementation, the reference the conformance suite also runs.
//!
//! | access | who pushes / pops | algorithm in `RingPool` |
//! |---|---|---|
//! | `Priv` | the owner stream only | owner-bound local deque (plain memory, no atomic read-modify-write) in front of an MPSC ring that takes pushes from any other thread |
//! | `Spsc` | one stream / one stream | the same: the consumer's local deque, the producer's pushes through the ring |
//! | `Mpsc` | any stream / the owner | the same: the owner's own pushes (yields, local creates) into its deque; other producers claim ring slots by CAS on the tail and the owner drains them into the deque's back (DAOS's case) |
//! | `Spmc` | one stream / several | array ring with per-slot sequence numbers: the producer stores, consumers claim by CAS on the head |
//! | `Mpmc` | any / several | CAS on both ends (Vyukov's bounded MPMC scheme) |
//!
//! The local deque belongs to the stream whose scheduler runs over the pool, from the start of its
//! run (`Pool::claim_owner`) until it returns (`Pool::release_owner`); see `local.rs` for why that
//! is sound. Every ring is
//! 1024 slots; when full, pushes go to a locked FIFO overflow list until the consumers have
//! drained it, so per-producer FIFO order holds and the pool is unbounded.
//!
//! Multi-consumer pools only ever hold units that have not started: a started ULT that yields or is
//! resumed goes back to its home stream's inbox instead (see `Unit::requeue`), because its
//! coroutine is `!Send` and must stay on the stream that started it.

mod local;
mod locked;
mod parker;
mod ring;

pub use locked::LockPool;
pub(crate) use parker::Parker;
pub use ring::RingPool;
pub(crate) use ring::RingQueue;

use crate::sync::{lock, Mutex, OnceLock, StdArc};
use crate::unit::Unit;
use std::time::Duration;

/// Pool kind (`ABT_pool_kind`).
#[doc(alias = "ABT_pool_kind")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    /// First in, first out; an idle stream over such pools spins, as in Argobots (`ABT_POOL_FIFO`).
    #[doc(alias = "ABT_POOL_FIFO")]
    Fifo,
    /// FIFO whose consumer parks its OS thread when empty instead of spinning (`ABT_POOL_FIFO_WAIT`).
    #[doc(alias = "ABT_POOL_FIFO_WAIT")]
    FifoWait,
}

/// Who may push and pop (`ABT_pool_access`).
#[doc(alias = "ABT_pool_access")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// One stream pushes and pops (`ABT_POOL_ACCESS_PRIV`).
    #[doc(alias = "ABT_POOL_ACCESS_PRIV")]
    Priv,
    /// One producer stream, one consumer stream (`ABT_POOL_ACCESS_SPSC`).
    #[doc(alias = "ABT_POOL_ACCESS_SPSC")]
    Spsc,
    /// Many producers, one consumer; DAOS's every pool (`ABT_POOL_ACCESS_MPSC`).
    #[doc(alias = "ABT_POOL_ACCESS_MPSC")]
    Mpsc,
    /// One producer, many consumers (`ABT_POOL_ACCESS_SPMC`).
    #[doc(alias = "ABT_POOL_ACCESS_SPMC")]
    Spmc,
    /// Many producers, many consumers (`ABT_POOL_ACCESS_MPMC`).
    #[doc(alias = "ABT_POOL_ACCESS_MPMC")]
    Mpmc,
}

impl Access {
    /// Whether several streams may pop.
    pub fn multi_consumer(self) -> bool {
        matches!(self, Access::Spmc | Access::Mpmc)
    }
    /// Whether several streams may push.
    pub fn multi_producer(self) -> bool {
        matches!(self, Access::Mpsc | Access::Mpmc)
    }
}

/// A callback a pool calls after each push, registered by whoever consumes the pool, so a stream
/// blocked elsewhere (in a network progress call, or parked) wakes when work arrives.
pub type Notify = StdArc<dyn Fn() + Send + Sync>;

/// A pool of work units (`ABT_pool`, `ABT_pool_def`). Implement it to plug in a new queue; run
/// `testing::pool_conformance` (feature `conformance`) against it.
#[doc(alias = "ABT_pool_def")]
pub trait Pool: std::any::Any + Send + Sync + 'static {
    /// Adds a unit (`ABT_pool_push`) and calls the registered notifiers.
    #[doc(alias = "ABT_pool_push")]
    fn push(&self, unit: Unit);
    /// Takes the oldest unit, if any (`ABT_pool_pop`).
    #[doc(alias = "ABT_pool_pop")]
    fn pop(&self) -> Option<Unit>;
    /// Like `pop`, but a `FifoWait` pool parks the calling OS thread up to `timeout` while empty
    /// (`ABT_pool_pop_wait`). A `Fifo` pool returns at once.
    #[doc(alias = "ABT_pool_pop_wait")]
    fn pop_wait(&self, timeout: Duration) -> Option<Unit>;
    /// Number of queued units (`ABT_pool_get_size`); a snapshot under concurrency.
    #[doc(alias = "ABT_pool_get_size")]
    fn len(&self) -> usize;
    /// Whether `len() == 0`.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The pool's kind (`ABT_pool_get_kind` in spirit).
    fn kind(&self) -> PoolKind;
    /// The pool's access mode (`ABT_pool_get_access`).
    #[doc(alias = "ABT_pool_get_access")]
    fn access(&self) -> Access;
    /// Registers a callback run after every push.
    fn add_notify(&self, notify: Notify);
    /// How many times `pop_wait` parked the calling thread.
    fn park_count(&self) -> u64;
    /// Called on the stream's OS thread when a scheduler over this pool starts: a pool may bind
    /// a part of itself to its consuming stream (until [`Pool::release_owner`]). Default: nothing.
    fn claim_owner(&self) {}
    /// Called on the stream's OS thread when a scheduler over this pool returns: a pool that
    /// binds a part of itself to its consuming stream gives it back, so a later stream (or any
    /// thread) can take over what is queued there. Default: nothing to give back.
    fn release_owner(&self) {}
}

/// Parts every pool here shares: kind, access, notifiers, the parker of `pop_wait`.
pub(crate) struct Common {
    kind: PoolKind,
    access: Access,
    /// The first notifier (the owner stream's) is read without a lock on every push.
    first: OnceLock<Notify>,
    more: Mutex<Vec<Notify>>,
    more_n: crate::sync::AtomicUsize,
    parker: Parker,
    /// Whether a push has anything to do after queueing: the kind is `FifoWait` or a notifier
    /// is registered. One load on every push instead of two checks.
    after_push: crate::sync::AtomicBool,
}

impl Common {
    pub(crate) fn new(kind: PoolKind, access: Access) -> Self {
        Common {
            kind,
            access,
            first: OnceLock::new(),
            more: Mutex::new(Vec::new()),
            more_n: crate::sync::AtomicUsize::new(0),
            parker: Parker::new(),
            after_push: crate::sync::AtomicBool::new(kind == PoolKind::FifoWait),
        }
    }

    #[inline(always)]
    pub(crate) fn pushed(&self) {
        // Acquire pairs with `add_notify`'s Release store: a push that sees the flag sees the
        // notifier. A push racing a registration may miss it, as it could before.
        if self.after_push.load(crate::sync::Ordering::Acquire) {
            self.after_push_slow();
        }
    }

    /// Wakes a parked consumer of a `FifoWait` pool and calls the notifiers; out of line so a
    /// plain FIFO push keeps no registers for the parker's swap-and-lock.
    #[inline(never)]
    fn after_push_slow(&self) {
        if self.kind == PoolKind::FifoWait {
            self.parker.unpark();
        }
        if let Some(n) = self.first.get() {
            self.notify(n);
        }
    }

    /// Calls the notifiers (a consumer registered at least one).
    fn notify(&self, first: &Notify) {
        first();
        if self.more_n.load(crate::sync::Ordering::Acquire) > 0 {
            for n in lock(&self.more).iter() {
                n();
            }
        }
    }

    pub(crate) fn add_notify(&self, n: Notify) {
        if let Err(n) = self.first.set(n) {
            lock(&self.more).push(n);
            self.more_n.fetch_add(1, crate::sync::Ordering::Release);
        }
        self.after_push.store(true, crate::sync::Ordering::Release);
    }

    pub(crate) fn pop_wait(
        &self,
        timeout: Duration,
        pop: impl Fn() -> Option<Unit>,
    ) -> Option<Unit> {
        if let Some(u) = pop() {
            return Some(u);
        }
        if self.kind == PoolKind::Fifo {
            return None;
        }
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let now = std::time::Instant::now();
            if now >= deadline {
                return pop();
            }
            self.parker.park(Some(deadline - now));
            if let Some(u) = pop() {
                return Some(u);
            }
        }
    }

    pub(crate) fn kind(&self) -> PoolKind {
        self.kind
    }
    pub(crate) fn access(&self) -> Access {
        self.access
    }
    pub(crate) fn park_count(&self) -> u64 {
        self.parker.park_count()
    }
}

/// The crate's own ring pool behind `pool`, if it is one: the built-in schedulers and a stream's
/// requeues then push and pop it directly, with the stream's uid passed in (no virtual call, no
/// thread-local read).
pub(crate) fn as_ring(pool: &StdArc<dyn Pool>) -> Option<StdArc<RingPool>> {
    let any: StdArc<dyn std::any::Any + Send + Sync> = pool.clone();
    any.downcast::<RingPool>().ok()
}

/// Creates a pool of `kind` and `access` with the implementation that suits the access mode
/// (`ABT_pool_create_basic`; table in the module docs).
#[doc(alias = "ABT_pool_create_basic")]
pub fn create_basic(kind: PoolKind, access: Access) -> StdArc<dyn Pool> {
    StdArc::new(RingPool::new(kind, access))
}
