//! Work units (ULTs and tasklets) as pools hold them, and the waiter record that blocking calls use.

use crate::error::{Error, Result};
use crate::pool::{Access, Pool};
use crate::state::{Resume, UltState};
use crate::sync::{
    lock, AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Condvar, Mutex, OnceLock, Ordering,
    SpinMutex, StdArc,
};
use crate::xstream::StreamShared;
use std::any::Any;
use std::fmt;

/// Unit ids are process-wide and never modelled (a plain counter, no protocol): each OS thread
/// takes a block of ids at a time, so creating a unit costs no locked instruction.
static NEXT_ID_BLOCK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Ids a thread takes from [`NEXT_ID_BLOCK`] at once.
const ID_BLOCK: u64 = 1024;

std::thread_local! {
    /// This thread's next id and the end of its block.
    static IDS: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

/// A new process-wide unique unit id.
fn next_id() -> u64 {
    IDS.with(|c| {
        let (mut next, mut end) = c.get();
        if next == end {
            next = NEXT_ID_BLOCK.fetch_add(ID_BLOCK, std::sync::atomic::Ordering::Relaxed);
            end = next + ID_BLOCK;
        }
        c.set((next + 1, end));
        next
    })
}

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
        self.0.home_id.load(Ordering::Relaxed) != 0
    }
}

/// What a unit's body is.
pub(crate) use crate::state::Body;

/// Per-ULT key values: (key id, value, destructor).
pub(crate) type KeyValues = Vec<(u64, Box<dyn Any + Send>, Option<crate::key::Destructor>)>;

/// `UnitInner::done` bit: finished with `Ok(())`.
pub(crate) const DONE_OK: u8 = 1;
/// `UnitInner::done` bit: finished with an error (read it under the join lock).
pub(crate) const DONE_ERR: u8 = 2;
/// `UnitInner::done` bit: a joiner is (or was) queued in `join.waiters`; set under the join lock.
pub(crate) const WAITERS: u8 = 4;
/// Either outcome bit.
pub(crate) const DONE: u8 = DONE_OK | DONE_ERR;

pub(crate) struct JoinState {
    /// The error a failed unit finished with (an `Ok` outcome is the `DONE_OK` bit alone).
    pub(crate) error: Option<Error>,
    pub(crate) waiters: smallvec::SmallVec<[Waiter; 1]>,
}

pub(crate) struct UnitInner {
    pub(crate) id: u64,
    pub(crate) name: Option<StdArc<str>>,
    pub(crate) is_task: bool,
    /// The state word; it also holds the body until the first run takes it.
    pub(crate) state: UltState,
    pub(crate) stack_size: usize,
    pub(crate) guard: bool,
    /// The pool it was created into; yields and resumes go back there while that pool is
    /// single-consumer (otherwise to its home stream's inbox).
    pub(crate) pool: StdArc<dyn Pool>,
    /// `pool.access()`, read once at creation (requeues would otherwise make a virtual call).
    pub(crate) access: Access,
    /// [`pool_id`] of `pool`: a stream finds the pool in its list by this plain compare.
    pub(crate) pool_id: usize,
    /// Id of the stream that first ran it (0: not started); set once by that stream.
    pub(crate) home_id: AtomicUsize,
    /// That stream, kept for units of multi-consumer pools, whose every requeue goes to its inbox.
    pub(crate) home: OnceLock<StdArc<StreamShared>>,
    /// Set by `suspend()`, consumed by `Thread::resume`: only a ULT that suspended itself may be
    /// resumed from outside; one blocked in a primitive is woken only by that primitive.
    pub(crate) user_suspended: AtomicBool,
    /// Whether a key value was ever set (skips the key lock at exit otherwise).
    pub(crate) has_keys: AtomicBool,
    /// Index of its coroutine in the home stream's slab.
    pub(crate) slot: AtomicUsize,
    /// The address of its coroutine's switch context while started (0 before): what a switch
    /// to it reads, one load from the unit (see `context::Target`). Home stream only.
    pub(crate) ctx: AtomicUsize,
    pub(crate) dispatches: AtomicU64,
    /// Outcome and joiner bits ([`DONE_OK`], [`DONE_ERR`], [`WAITERS`]). The finisher sets its
    /// outcome bit and a joiner its WAITERS bit with one read-modify-write each, so whichever comes
    /// second sees the other: the finisher then wakes the queued joiners, the joiner does not wait.
    pub(crate) done: AtomicU8,
    pub(crate) join: SpinMutex<JoinState>,
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
            id: next_id(),
            name,
            is_task,
            state: UltState::new(Some(body)),
            stack_size,
            guard,
            access: pool.access(),
            pool_id: pool_id(&pool),
            pool,
            home_id: AtomicUsize::new(0),
            home: OnceLock::new(),
            has_keys: AtomicBool::new(false),
            user_suspended: AtomicBool::new(false),
            slot: AtomicUsize::new(usize::MAX),
            ctx: AtomicUsize::new(0),
            dispatches: AtomicU64::new(0),
            done: AtomicU8::new(0),
            join: SpinMutex::new(JoinState {
                error: None,
                waiters: smallvec::SmallVec::new(),
            }),
            keys: Mutex::new(Vec::new()),
        }
    }

    /// Makes a cached record a new unit in place, through a unique borrow: plain stores, and the
    /// pool reference is only replaced when the pool differs (no reference-count traffic in the
    /// steady state of one pool).
    #[cfg(not(loom))]
    fn reuse(
        &mut self,
        name: Option<StdArc<str>>,
        is_task: bool,
        stack_size: usize,
        guard: bool,
        pool: &StdArc<dyn Pool>,
        body: Body,
    ) {
        self.id = next_id();
        self.name = name;
        self.is_task = is_task;
        self.state.reset(body);
        self.stack_size = stack_size;
        self.guard = guard;
        if !StdArc::ptr_eq(&self.pool, pool) {
            self.pool = pool.clone();
            self.access = pool.access();
            self.pool_id = pool_id(pool);
        }
        *self.home_id.get_mut() = 0;
        if self.home.get().is_some() {
            self.home = OnceLock::new();
        }
        *self.user_suspended.get_mut() = false;
        // Keys are only ever stored after `has_keys` is set, so without it the list is empty.
        if std::mem::replace(self.has_keys.get_mut(), false) {
            self.keys
                .get_mut()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
        *self.slot.get_mut() = usize::MAX;
        *self.ctx.get_mut() = 0;
        *self.dispatches.get_mut() = 0;
        *self.done.get_mut() = 0;
        let j = self.join.get_mut();
        j.error = None;
        j.waiters.clear();
    }
}

/// A pool's identity for plain comparisons: the address of its data.
pub(crate) fn pool_id(p: &StdArc<dyn Pool>) -> usize {
    StdArc::as_ptr(p) as *const () as usize
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
                // Old contents (a different pool…) drop here, outside the cache borrow.
                inner.reuse(name, is_task, stack_size, guard, pool, body);
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

/// Creates a unit (ULT or tasklet) in `pool` and queues it: the one creation path of
/// `Thread::create_with` and `Task::create`. Returns the handle's reference.
#[inline]
pub(crate) fn spawn(
    pool: &StdArc<dyn Pool>,
    name: Option<StdArc<str>>,
    is_task: bool,
    stack_size: usize,
    guard: bool,
    body: Body,
) -> StdArc<UnitInner> {
    let u = new_unit(name, is_task, stack_size, guard, pool, body);
    pool.push(Unit(u.clone()));
    u
}

/// Drops a reference to a unit; if it was the last one and the unit has finished, the
/// allocation goes to this thread's cache for [`new_unit`]. Handles (`Thread`, `Task`) give their
/// reference here when dropped, so the last owner's reference moves into the cache whole.
#[inline]
pub(crate) fn recycle(a: StdArc<UnitInner>) {
    // A strong count of one is stable: we hold that reference, and units have no weak ones.
    if StdArc::strong_count(&a) == 1 && a.done.load(Ordering::Relaxed) & DONE != 0 {
        cache_put(a);
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

/// The reference a user handle (`Thread`, `Task`) holds. Dropping it hands the reference to
/// [`recycle`], so when the handle is the unit's last owner the record moves into the cache whole
/// (no count updates).
pub(crate) struct Handle(Option<StdArc<UnitInner>>);

impl Handle {
    pub(crate) fn new(a: StdArc<UnitInner>) -> Self {
        Handle(Some(a))
    }
    /// The counted reference.
    #[inline]
    pub(crate) fn arc(&self) -> &StdArc<UnitInner> {
        // Only `drop` empties it.
        self.0.as_ref().expect("unit handle used after drop")
    }
}

impl std::ops::Deref for Handle {
    type Target = UnitInner;
    #[inline]
    fn deref(&self) -> &UnitInner {
        self.arc()
    }
}

impl Clone for Handle {
    fn clone(&self) -> Self {
        Handle(self.0.clone())
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(a) = self.0.take() {
            recycle(a);
        }
    }
}

impl Unit {
    /// Puts a runnable unit back where it belongs: its pool while that pool is single-consumer,
    /// else (a started unit from a multi-consumer pool) its home stream's inbox, so it can never be
    /// popped by another stream.
    pub(crate) fn requeue(self) {
        let a = self.0.access;
        // A started unit must not enter a multi-consumer pool (another stream could pop it), nor
        // a single-producer pool from a thread other than its stream (a second producer).
        if self.is_started()
            && (a.multi_consumer()
                || (!a.multi_producer()
                    && crate::xstream::current_uid() != self.0.home_id.load(Ordering::Relaxed)))
        {
            if let Some(home) = self.0.home.get() {
                let home = home.clone();
                home.push_inbox(self);
                return;
            }
            // Single-producer pool, woken from another stream: find its stream (rare path).
            let hid = self.0.home_id.load(Ordering::Relaxed);
            if let Some(home) = crate::xstream::lookup_stream(hid) {
                home.push_inbox(self);
                return;
            }
        }
        if let Err(u) = crate::xstream::push_via_current(self) {
            let pool = u.0.pool.clone();
            pool.push(u);
        }
    }

    /// Records the unit's outcome and wakes its joiners: one read-modify-write of the done word
    /// when nobody waits (see [`UnitInner::done`]).
    #[inline]
    pub(crate) fn finish(&self, r: Result<()>) {
        match r {
            // The common case inlined: one read-modify-write, nothing else when nobody joined yet.
            Ok(()) => {
                if self.0.done.fetch_or(DONE_OK, Ordering::AcqRel) & WAITERS != 0 {
                    self.wake_joiners();
                }
            }
            Err(e) => self.finish_err(e),
        }
    }

    /// [`Self::finish`] with an error: recorded under the join lock before the outcome bit.
    #[inline(never)]
    fn finish_err(&self, e: Error) {
        self.0.join.lock().error = Some(e);
        if self.0.done.fetch_or(DONE_ERR, Ordering::AcqRel) & WAITERS != 0 {
            self.wake_joiners();
        }
    }

    /// Wakes the queued joiners (the outcome bit is set and WAITERS was).
    #[inline(never)]
    fn wake_joiners(&self) {
        // Joiners set WAITERS under the lock before queueing, so taking it orders this after them.
        let waiters = std::mem::take(&mut self.0.join.lock().waiters);
        for w in waiters {
            w.wake();
        }
    }

    /// Runs the key destructors (ULT exit), outside the key lock.
    pub(crate) fn run_key_destructors(&self) {
        if !self.0.has_keys.load(Ordering::Relaxed) {
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
    match r {
        Ok(()) => unit.finish(Ok(())),
        Err(p) => ult_panicked(unit, p),
    }
}

/// The end of a ULT whose body panicked.
#[cold]
#[inline(never)]
fn ult_panicked(unit: &Unit, p: Box<dyn Any + Send>) {
    tracing::warn!(id = unit.0.id, "abt: ULT panicked");
    unit.finish(Err(panic_error(p)));
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
        let d = self.done.load(Ordering::Acquire);
        if d & DONE_OK != 0 {
            Some(Ok(()))
        } else if d & DONE_ERR != 0 {
            Some(Err(self
                .join
                .lock()
                .error
                .clone()
                .unwrap_or(Error::Panicked(String::new()))))
        } else {
            None
        }
    }

    /// Whether the unit has finished.
    pub(crate) fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire) & DONE != 0
    }

    /// Waits for the unit to finish (`ABT_thread_join`, `ABT_task_join`): a ULT caller is
    /// suspended, an OS thread blocks. The one join path of `Thread` and `Task`.
    #[inline(always)]
    pub(crate) fn join_wait(&self) -> Result<()> {
        // Joining a unit that finished well (the usual case) is one load, inlined into the caller.
        if self.done.load(Ordering::Acquire) & DONE_OK != 0 {
            return Ok(());
        }
        self.join_wait_slow()
    }

    /// [`Self::join_wait`] when the unit has not finished yet.
    #[inline(never)]
    fn join_wait_slow(&self) -> Result<()> {
        loop {
            if let Some(r) = self.outcome() {
                return r;
            }
            let w = Waiter::prepare();
            let h = w.handle();
            {
                let mut j = self.join.lock();
                if self.done.fetch_or(WAITERS, Ordering::AcqRel) & DONE != 0 {
                    // Finished meanwhile; `outcome` returns it on the next round.
                    drop(j);
                    w.cancel();
                    continue;
                }
                j.waiters.push(w);
            }
            h.wait();
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
    /// The calling ULT: waiting is switching out (its state is already SUSPENDED) with
    /// `Switch::Suspend` (its [`Waiter`] holds the stream's reference).
    Ult,
    /// A blocked OS thread.
    Thread(crate::sync::Arc<ThreadParker>),
}

impl WaitHandle {
    /// Blocks until woken. The ULT's switch is inlined into the waiting primitives: out of line
    /// it cost the six callee-saved registers' saves and restores and one more call / return
    /// pair around every wait's switch (the one-stream eventual round trip: 772 against 738
    /// instructions, ≈ 0.62 against ≈ 0.45 s for 3 million in `examples/ops`). Since the switch
    /// reason is one word, inlining it no longer costs the yield path anything.
    #[inline]
    pub(crate) fn wait(self) {
        match self {
            WaitHandle::Ult => {
                // Straight to the next ready ULT of this stream when its scheduler allows it.
                if crate::xstream::switch_next(true) {
                    return;
                }
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
    /// Prepares the caller to wait. In a ULT this marks it SUSPENDED, so a wake that comes before
    /// the switch out is not lost, and the waiter takes over the reference the ULT's stream holds
    /// (`context::take_stream_ref`: no count update). Then either register the result under the
    /// primitive's lock and `wait` on its handle, or `cancel` it; nothing else.
    pub(crate) fn prepare() -> Waiter {
        // A tasklet never runs inside a ULT, so it gets a thread parker here too.
        match crate::context::take_stream_ref() {
            Some(u) => {
                u.0.state.begin_suspend();
                Waiter::Ult(u.0)
            }
            None => Waiter::Thread(crate::sync::Arc::new(ThreadParker::new())),
        }
    }

    /// The caller did not register after all (the condition already held).
    pub(crate) fn cancel(self) {
        if let Waiter::Ult(u) = self {
            if u.state.cancel_suspend() {
                // Not published and still running: the stream's reference stays the stream's
                // (`prepare`).
                std::mem::forget(u);
            } else {
                // A stray resume raced in and pushed a reference of its own; the stream's is
                // dropped here (the coroutine's own keeps the unit alive), and switching out
                // lets the stream run us again from that entry.
                drop(u);
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

    /// Whether the waiter is a ULT started on the stream running on this thread.
    #[inline]
    pub(crate) fn on_current_stream(&self) -> bool {
        match self {
            Waiter::Ult(u) => {
                let home = u.home_id.load(Ordering::Relaxed);
                home != 0 && home == crate::xstream::current_uid()
            }
            Waiter::Thread(_) => false,
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

#[cfg(all(test, loom))]
mod tests {
    use super::*;
    use crate::pool::{LockPool, PoolKind};

    fn unit() -> StdArc<UnitInner> {
        let pool: StdArc<dyn Pool> = StdArc::new(LockPool::new(PoolKind::Fifo, Access::Mpsc));
        StdArc::new(UnitInner::new(None, true, 0, false, pool, Box::new(|| {})))
    }

    /// A joiner (an OS thread) races the unit's finish: whichever sets its bit of the done word
    /// second sees the other's, so the joiner either returns at once or is woken; it never hangs
    /// and always sees the outcome.
    #[test]
    fn loom_join_finish_race() {
        crate::sync::loom_model(2, || {
            let u = unit();
            let u2 = u.clone();
            let joiner = loom::thread::spawn(move || u2.join_wait());
            Unit(u.clone()).finish(Ok(()));
            assert_eq!(joiner.join().unwrap(), Ok(()));
            assert!(u.is_done());
        });
    }

    /// Two joiners and a failing finish: both see the error.
    #[test]
    fn loom_join_error_two_joiners() {
        crate::sync::loom_model(1, || {
            let u = unit();
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    let u = u.clone();
                    loom::thread::spawn(move || u.join_wait())
                })
                .collect();
            Unit(u.clone()).finish(Err(Error::Panicked("x".into())));
            for h in hs {
                assert_eq!(h.join().unwrap(), Err(Error::Panicked("x".into())));
            }
        });
    }
}
