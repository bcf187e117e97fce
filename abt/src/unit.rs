//! Work units (ULTs and tasklets) as pools hold them, and the waiter record that blocking calls use.

use crate::error::{Error, Result};
use crate::pool::Pool;
use crate::state::{Resume, UltState};
use crate::sync::{
    lock, AtomicU64, AtomicU8, AtomicUsize, Condvar, Mutex, OnceLock, Ordering, StdArc,
};
use crate::xstream::StreamShared;
use std::any::Any;
use std::fmt;

static NEXT_ID: AtomicU64Static = AtomicU64Static::new(1);

/// Unit ids are process-wide and never modelled.
type AtomicU64Static = std::sync::atomic::AtomicU64;

/// A work unit as a pool stores it (`ABT_unit`): a ULT or a tasklet that has not finished.
/// Cheap to move (one pointer); the pool owns it while it waits to run.
#[doc(alias = "ABT_unit")]
pub struct Unit(pub(crate) StdArc<UnitInner>);

impl fmt::Debug for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unit")
            .field("id", &self.0.id)
            .field("tasklet", &self.0.is_task)
            .field("name", &self.0.name)
            .finish()
    }
}

impl Unit {
    /// The unit's process-wide id (`ABT_thread_get_id`).
    #[doc(alias = "ABT_thread_get_id")]
    pub fn id(&self) -> u64 {
        self.0.id
    }
    /// Whether this is a tasklet (no stack) rather than a ULT.
    pub fn is_tasklet(&self) -> bool {
        self.0.is_task
    }
    /// Whether the unit has ever run. Multi-consumer pools only ever hold units that have not.
    pub fn is_started(&self) -> bool {
        self.0.home_id.load(std::sync::atomic::Ordering::Relaxed) != 0
    }
}

/// What a unit's body is.
pub(crate) type Body = Box<dyn FnOnce() + Send>;

/// Per-ULT key values: (key id, value, destructor).
pub(crate) type KeyValues = Vec<(u64, Box<dyn Any + Send>, Option<crate::key::Destructor>)>;

/// `UnitInner::done`: not finished.
pub(crate) const PENDING: u8 = 0;
/// `UnitInner::done`: finished with `Ok(())`.
pub(crate) const DONE_OK: u8 = 1;
/// `UnitInner::done`: finished with an error (read it under the join lock).
pub(crate) const DONE_ERR: u8 = 2;

pub(crate) struct JoinState {
    pub(crate) result: Option<Result<()>>,
    pub(crate) waiters: smallvec::SmallVec<[Waiter; 1]>,
}

pub(crate) struct UnitInner {
    pub(crate) id: u64,
    pub(crate) name: Option<StdArc<str>>,
    pub(crate) is_task: bool,
    pub(crate) state: UltState,
    pub(crate) stack_size: usize,
    pub(crate) guard: bool,
    /// The pool it was created into; yields and resumes go back there while that pool is
    /// single-consumer (otherwise to its home stream's inbox).
    pub(crate) pool: StdArc<dyn Pool>,
    /// Id of the stream that first ran it (0: not started); set once by that stream.
    pub(crate) home_id: AtomicUsize,
    /// That stream, kept for units of multi-consumer pools, whose every requeue goes to its inbox.
    pub(crate) home: OnceLock<StdArc<StreamShared>>,
    /// Set by `suspend()`, consumed by `Thread::resume`: only a ULT that suspended itself may be
    /// resumed from outside; one blocked in a primitive is woken only by that primitive.
    pub(crate) user_suspended: std::sync::atomic::AtomicBool,
    /// Whether a key value was ever set (skips the key lock at exit otherwise).
    pub(crate) has_keys: std::sync::atomic::AtomicBool,
    /// Index of its coroutine in the home stream's slab.
    pub(crate) slot: AtomicUsize,
    pub(crate) dispatches: AtomicU64,
    /// The outcome, readable without the join lock: [`PENDING`], [`DONE_OK`] or [`DONE_ERR`]
    /// (then the error is in `join`). Written once, after `join.result`, with Release.
    pub(crate) done: AtomicU8,
    pub(crate) body: Mutex<Option<Body>>,
    pub(crate) join: Mutex<JoinState>,
    pub(crate) keys: Mutex<KeyValues>,
}

impl UnitInner {
    pub(crate) fn new(
        name: Option<StdArc<str>>,
        is_task: bool,
        stack_size: usize,
        guard: bool,
        pool: StdArc<dyn Pool>,
        body: Body,
    ) -> UnitInner {
        UnitInner {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            name,
            is_task,
            state: UltState::new(),
            stack_size,
            guard,
            pool,
            home_id: AtomicUsize::new(0),
            home: OnceLock::new(),
            has_keys: std::sync::atomic::AtomicBool::new(false),
            user_suspended: std::sync::atomic::AtomicBool::new(false),
            slot: AtomicUsize::new(usize::MAX),
            dispatches: AtomicU64::new(0),
            done: AtomicU8::new(PENDING),
            body: Mutex::new(Some(body)),
            join: Mutex::new(JoinState {
                result: None,
                waiters: smallvec::SmallVec::new(),
            }),
            keys: Mutex::new(Vec::new()),
        }
    }
}

/// How many finished units' allocations each OS thread keeps for reuse.
#[cfg(not(loom))]
const UNIT_CACHE_MAX: usize = 64;

#[cfg(not(loom))]
std::thread_local! {
    /// Allocations of finished units whose last reference this thread dropped. Creating a unit
    /// reuses one in place instead of a malloc + free pair: with batches of units alive at once,
    /// glibc's per-thread cache (7 chunks a size) overflows and each pair costs ≈ 300
    /// instructions. A cached unit still holds its old pool (and home stream) until reused.
    static UNIT_CACHE: std::cell::RefCell<Vec<StdArc<UnitInner>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// A new unit record, reusing a cached allocation when this thread has one.
pub(crate) fn new_unit(
    name: Option<StdArc<str>>,
    is_task: bool,
    stack_size: usize,
    guard: bool,
    pool: &StdArc<dyn Pool>,
    body: Body,
) -> StdArc<UnitInner> {
    #[cfg(not(loom))]
    {
        let cached = UNIT_CACHE.try_with(|c| c.borrow_mut().pop()).ok().flatten();
        if let Some(mut a) = cached {
            if let Some(inner) = StdArc::get_mut(&mut a) {
                // The old contents (its pool reference…) drop here, outside the cache borrow.
                *inner = UnitInner::new(name, is_task, stack_size, guard, pool.clone(), body);
                return a;
            }
        }
    }
    StdArc::new(UnitInner::new(
        name,
        is_task,
        stack_size,
        guard,
        pool.clone(),
        body,
    ))
}

/// Drops a reference to a unit; if it was the last one and the unit has finished, the
/// allocation goes to this thread's cache for [`new_unit`].
#[inline]
pub(crate) fn recycle(a: StdArc<UnitInner>) {
    // A strong count of one is stable: we hold that reference, and units have no weak ones.
    if StdArc::strong_count(&a) == 1 && a.done.load(Ordering::Relaxed) != PENDING {
        cache_put(a);
    }
}

/// The last owner of a finished unit is a handle being dropped (`Thread`, `Task`): the handle
/// cannot give its reference away, so the cache gets a clone and the handle's own reference then
/// drops (two uncontended count updates instead of a free and a later malloc).
#[inline]
pub(crate) fn recycle_from_handle(u: &StdArc<UnitInner>) {
    if StdArc::strong_count(u) == 1 && u.done.load(Ordering::Relaxed) != PENDING {
        cache_put(u.clone());
    }
}

/// Puts a finished unit that will be uniquely owned by the cache into it (or drops it).
fn cache_put(a: StdArc<UnitInner>) {
    #[cfg(not(loom))]
    {
        let rejected = UNIT_CACHE.try_with(move |c| {
            let mut c = c.borrow_mut();
            if c.len() < UNIT_CACHE_MAX {
                c.push(a);
                None
            } else {
                Some(a)
            }
        });
        // Dropped outside the borrow: a unit's drop may run arbitrary drops.
        drop(rejected);
    }
    #[cfg(loom)]
    drop(a);
}

impl Unit {
    /// Puts a runnable unit back where it belongs: its pool while that pool is single-consumer,
    /// else (a started unit from a multi-consumer pool) its home stream's inbox, so it can never be
    /// popped by another stream.
    pub(crate) fn requeue(self) {
        let a = self.0.pool.access();
        // A started unit must not enter a multi-consumer pool (another stream could pop it), nor
        // a single-producer pool from a thread other than its stream (a second producer).
        if self.is_started()
            && (a.multi_consumer()
                || (!a.multi_producer()
                    && crate::xstream::current_uid()
                        != self.0.home_id.load(std::sync::atomic::Ordering::Relaxed)))
        {
            if let Some(home) = self.0.home.get() {
                let home = home.clone();
                home.push_inbox(self);
                return;
            }
            // Single-producer pool, woken from another stream: find its stream (rare path).
            let hid = self.0.home_id.load(std::sync::atomic::Ordering::Relaxed);
            if let Some(home) = crate::xstream::lookup_stream(hid) {
                home.push_inbox(self);
                return;
            }
        }
        let pool = self.0.pool.clone();
        pool.push(self);
    }

    /// `requeue`, but pushing through the caller's reference when the unit's pool is one of
    /// `pools` (a scheduler's), which saves two atomic reference-count updates per yield.
    #[inline]
    pub(crate) fn requeue_in(self, pools: &[StdArc<dyn Pool>]) {
        if !self.is_started() || !self.0.pool.access().multi_consumer() {
            let me = StdArc::as_ptr(&self.0.pool) as *const ();
            if let Some(p) = pools.iter().find(|p| StdArc::as_ptr(p) as *const () == me) {
                p.push(self);
                return;
            }
        }
        self.requeue()
    }

    /// Records the unit's outcome and wakes its joiners.
    pub(crate) fn finish(&self, r: Result<()>) {
        let waiters = {
            let mut j = crate::sync::spin_lock(&self.0.join);
            let d = if r.is_ok() { DONE_OK } else { DONE_ERR };
            j.result = Some(r);
            self.0.done.store(d, Ordering::Release);
            if j.waiters.is_empty() {
                // The common case (joined later): no list to move out and drop.
                return;
            }
            std::mem::take(&mut j.waiters)
        };
        for w in waiters {
            w.wake();
        }
    }

    /// Runs the key destructors (ULT exit), outside the key lock.
    pub(crate) fn run_key_destructors(&self) {
        if !self.0.has_keys.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let vals = std::mem::take(&mut *lock(&self.0.keys));
        for (_, v, d) in vals {
            if let Some(d) = d {
                d(v);
            }
        }
    }
}

/// A ULT's whole life on its coroutine: the body (panics caught), key destructors, then the
/// outcome recorded and joiners woken.
pub(crate) fn run_ult_body(unit: &Unit, body: Body) {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
    unit.run_key_destructors();
    if r.is_err() {
        tracing::warn!(id = unit.0.id, "abt: ULT panicked");
    }
    unit.finish(r.map_err(panic_error));
}

/// Turns a caught panic payload into our error.
pub(crate) fn panic_error(p: Box<dyn Any + Send>) -> Error {
    if let Some(s) = p.downcast_ref::<&'static str>() {
        Error::Panicked((*s).to_string())
    } else if let Some(s) = p.downcast_ref::<String>() {
        Error::Panicked(s.clone())
    } else {
        Error::Panicked("non-string panic payload".to_string())
    }
}

impl UnitInner {
    /// The outcome if the unit has finished. A finished `Ok` unit costs one Acquire load (the
    /// common join of an already-finished unit); only an error is read under the join lock.
    #[inline]
    pub(crate) fn outcome(&self) -> Option<Result<()>> {
        match self.done.load(Ordering::Acquire) {
            PENDING => None,
            DONE_OK => Some(Ok(())),
            _ => lock(&self.join).result.clone(),
        }
    }
}

/// Parks an OS thread (an external thread, a tasklet, a scheduler) that blocks on a ULT primitive.
pub(crate) struct ThreadParker {
    woken: Mutex<bool>,
    cv: Condvar,
}

impl ThreadParker {
    pub(crate) fn new() -> Self {
        ThreadParker {
            woken: Mutex::new(false),
            cv: Condvar::new(),
        }
    }
    pub(crate) fn wake(&self) {
        *lock(&self.woken) = true;
        self.cv.notify_one();
    }
    pub(crate) fn wait(&self) {
        let mut g = lock(&self.woken);
        while !*g {
            g = crate::sync::wait(&self.cv, g);
        }
        *g = false;
    }
}

/// The waiting side of a [`Waiter`] (see [`Waiter::handle`]).
pub(crate) enum WaitHandle {
    /// The calling ULT: waiting is switching out (its state is already SUSPENDING).
    Ult,
    /// A blocked OS thread.
    Thread(crate::sync::Arc<ThreadParker>),
}

impl WaitHandle {
    /// Blocks until woken.
    pub(crate) fn wait(self) {
        match self {
            WaitHandle::Ult => {
                let r = crate::context::switch_out(crate::context::Switch::Suspend);
                debug_assert!(r.is_ok());
            }
            WaitHandle::Thread(p) => p.wait(),
        }
    }
}

/// Someone blocked on a ULT primitive: a ULT (suspended, so its stream runs others) or an OS thread.
#[derive(Clone)]
pub(crate) enum Waiter {
    /// A suspended ULT; waking resumes it.
    Ult(StdArc<UnitInner>),
    /// A blocked OS thread.
    Thread(crate::sync::Arc<ThreadParker>),
}

impl Waiter {
    /// Prepares the caller to wait. In a ULT this marks it SUSPENDING, so a wake that comes before
    /// the switch out is not lost. Register the result under the primitive's lock, then `wait`.
    pub(crate) fn prepare() -> Waiter {
        if crate::ult::in_tasklet() {
            return Waiter::Thread(crate::sync::Arc::new(ThreadParker::new()));
        }
        match crate::context::current_unit() {
            Some(u) => {
                u.0.state.begin_suspend();
                Waiter::Ult(u.0)
            }
            None => Waiter::Thread(crate::sync::Arc::new(ThreadParker::new())),
        }
    }

    /// The caller did not register after all (the condition already held).
    pub(crate) fn cancel(self) {
        if let Waiter::Ult(u) = &self {
            if !u.state.cancel_suspend() {
                // A stray resume raced in; switching out lets the stream requeue us.
                let _ = crate::context::switch_out(crate::context::Switch::Suspend);
            }
        }
    }

    /// What the caller keeps to wait with once the waiter itself is handed to a primitive's list:
    /// for a ULT nothing counted (so no reference-count traffic), for an OS thread its parker.
    pub(crate) fn handle(&self) -> WaitHandle {
        match self {
            Waiter::Ult(_) => WaitHandle::Ult,
            Waiter::Thread(p) => WaitHandle::Thread(p.clone()),
        }
    }

    /// Wakes the waiter.
    pub(crate) fn wake(self) {
        match self {
            Waiter::Ult(u) => {
                if u.state.resume() == Resume::Push {
                    Unit(u).requeue();
                }
            }
            Waiter::Thread(p) => p.wake(),
        }
    }
}
