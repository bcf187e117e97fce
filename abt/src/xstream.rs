//! Execution streams (`ABT_xstream`): one OS thread each, with a rank, running one scheduler.
//!
//! **Primary stream.** Argobots turns the thread that calls `ABT_init` into a ULT of the primary
//! stream (rank 0), so `main` itself can yield. We do not: the calling thread stays an ordinary
//! thread, and [`Primary::join`] / [`Primary::run`] run the primary scheduler *on* it until the
//! work is done or a stop is requested. Outside those calls the caller is an external thread: ULT
//! primitives block it like any OS thread, and yield / suspend / self return `Error::NotInUlt`.

use crate::context::{self, CoroCache, CoroSlab, Switch};
use crate::error::{Error, Result};
use crate::pool::{Parker, Pool, PoolKind, RingPool, RingQueue};
use crate::sched::{all_wait, Sched, SchedContext};
use crate::state::Claim;
use crate::sync::{AtomicU64, AtomicU8, Ordering, StdArc, StdMutex, Weak};
use crate::sys::affinity::{get_affinity, gettid, set_affinity};
use crate::unit::{panic_error, Unit};
use std::any::{Any, TypeId};
use std::cell::{Cell, RefCell};
use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::{Duration, Instant};

const RUN: u8 = 0;
const JOIN: u8 = 1;
const STOP: u8 = 2;

/// How long a stream over plain FIFO pools spins, idle, before it starts yielding its CPU
/// between rounds. Argobots' basic scheduler never yields; half a second keeps every benchmark
/// and every busy stream spinning as Argobots' do, while a stream idle for longer lets a loaded
/// machine run the threads that have work.
const SPIN_TIME: Duration = Duration::from_millis(500);

/// Pauses per idle round of a stream over plain FIFO pools. One (≈ 29 ns here) did better than 8
/// and than the former 64 on both cross-stream benchmarks (create into another stream's pool,
/// eventual round trip across two streams; medians of 8 alternated rounds, docs/perf.md).
const IDLE_PAUSES: u32 = 1;

/// Idle rounds between two clock reads while spinning (a round is one pause plus the pool
/// checks, tens of ns; reading the clock every round would double it).
const CLOCK_EVERY: u32 = 1024;

/// Longest idle park; only a hang guard, since every wake source unparks the stream.
const MAX_PARK: Duration = Duration::from_secs(1);

/// Stream state any thread may touch.
pub(crate) struct StreamShared {
    /// Process-wide unique id (ranks can be reused).
    pub(crate) uid: usize,
    pub(crate) rank: usize,
    control: AtomicU8,
    pub(crate) parker: Parker,
    inbox: RingQueue<Unit, true, false>,
    tid: AtomicU64,
    dispatches: AtomicU64,
}

/// Every stream by uid, for the rare forward of a started unit popped on the wrong stream.
static STREAMS: StdMutex<Vec<(usize, Weak<StreamShared>)>> = StdMutex::new(Vec::new());
/// Stream uids: a process-wide counter, never modelled (no protocol, only uniqueness).
static NEXT_UID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

pub(crate) fn lookup_stream(uid: usize) -> Option<StdArc<StreamShared>> {
    let mut s = STREAMS.lock().unwrap_or_else(|p| p.into_inner());
    s.retain(|(_, w)| w.strong_count() > 0);
    s.iter()
        .find(|(u, _)| *u == uid)
        .and_then(|(_, w)| w.upgrade())
}

impl StreamShared {
    fn create(rank: usize) -> StdArc<Self> {
        let s = StdArc::new(Self::new(rank));
        let mut all = STREAMS.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|(_, w)| w.strong_count() > 0);
        all.push((s.uid, StdArc::downgrade(&s)));
        s
    }
    fn new(rank: usize) -> Self {
        StreamShared {
            uid: NEXT_UID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            rank,
            control: AtomicU8::new(RUN),
            parker: Parker::new(),
            inbox: RingQueue::with_capacity(256),
            tid: AtomicU64::new(0),
            dispatches: AtomicU64::new(0),
        }
    }
    /// Hands a started unit back to the stream that owns its coroutine.
    pub(crate) fn push_inbox(&self, u: Unit) {
        self.inbox.push(u);
        self.parker.unpark();
    }
    fn request(&self, what: u8) {
        self.control.fetch_max(what, Ordering::AcqRel);
        self.parker.unpark();
    }
}

struct Timer {
    at: Instant,
    seq: u64,
    unit: Unit,
}
impl PartialEq for Timer {
    fn eq(&self, o: &Self) -> bool {
        self.at == o.at && self.seq == o.seq
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl Ord for Timer {
    fn cmp(&self, o: &Self) -> CmpOrdering {
        // BinaryHeap is a max-heap: the earliest deadline must compare greatest.
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// One of a stream's scheduler pools, by its id (`unit::pool_id`, compared against a unit's to
/// find its pool): the crate's own ring pool is pushed directly with the stream's uid (no virtual
/// call, no thread-local read), any other through the trait.
enum OwnPool {
    Ring(usize, StdArc<RingPool>),
    Dyn(usize, StdArc<dyn Pool>),
}

/// Stream state only its own OS thread touches (`!Send`: it owns the coroutines).
pub(crate) struct StreamLocal {
    pub(crate) shared: StdArc<StreamShared>,
    /// `shared.uid`, read on every dispatch.
    pub(crate) uid: usize,
    /// The scheduler's pools, so a wake on this stream requeues through them (no pool reference
    /// count update).
    pools: Vec<OwnPool>,
    slab: CoroSlab,
    live: Cell<usize>,
    /// The stream's reference to the ULT it runs (its pool entry), held here rather than in
    /// `resume`'s frame, so a ULT that switches directly to the next one (`switch_next`) hands
    /// it over: whatever sits here when `resume` returns is the ULT that switched out.
    running: Cell<Option<Unit>>,
    /// Units run since the built-in scheduler's last event check (it checks every
    /// `event_freq`); direct switches between ULTs count here too.
    sched_n: Cell<u32>,
    /// The event frequency while a built-in scheduler runs over `direct_ring` alone; 0: no
    /// direct switches.
    direct_freq: Cell<u32>,
    /// The scheduler's one pool when it is a single-consumer `RingPool`, and its id.
    direct_ring: Option<(usize, StdArc<RingPool>)>,
    /// A unit the direct path popped but could not switch to (new, a tasklet, stale): the
    /// built-in scheduler runs it next.
    handoff: Cell<Option<Unit>>,
    coros: RefCell<CoroCache>,
    timers: RefCell<BinaryHeap<Timer>>,
    timer_seq: Cell<u64>,
    locals: RefCell<Vec<(TypeId, Box<dyn Any>)>>,
    notify_registered: Cell<bool>,
    idle_rounds: Cell<u32>,
    /// The dispatch count when `idle_rounds` was last counted.
    idle_seen: Cell<u64>,
    /// When the current idle spell was first timed (its round [`CLOCK_EVERY`]).
    idle_since: Cell<Option<Instant>>,
    /// The current idle spell has spun for [`SPIN_TIME`]: yield the CPU each round.
    idle_yield: Cell<bool>,
}

thread_local! {
    /// The stream running on this OS thread. `ManuallyDrop`, so the thread-local has no
    /// destructor to register and every access is one thread-pointer-relative load (with a
    /// destructor, each access calls std's lazy-registration accessor: ≈ 15 instructions on
    /// every wake on this stream). [`set_current`] drops the value it replaces, and
    /// `run_stream` always puts the previous value (`None` at the outermost level) back, also when
    /// unwinding, so nothing is left behind at thread exit.
    static CURRENT: RefCell<ManuallyDrop<Option<Rc<StreamLocal>>>> =
        const { RefCell::new(ManuallyDrop::new(None)) };
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
    static CURRENT_UID: Cell<usize> = const { Cell::new(0) };
}

/// Unique id of the stream running on this OS thread (0: none).
#[inline]
pub(crate) fn current_uid() -> usize {
    CURRENT_UID.with(|c| c.get())
}

pub(crate) fn in_tasklet() -> bool {
    IN_TASK.with(|c| c.get())
}

/// Whether a subscriber may want `abt.ult` spans (the global level gate only: two loads when
/// nobody listens).
#[inline(always)]
fn tracing_on() -> bool {
    tracing::Level::DEBUG <= tracing::level_filters::STATIC_MAX_LEVEL
        && tracing::Level::DEBUG <= tracing::level_filters::LevelFilter::current()
}

/// What [`StreamLocal::direct_next`] decided.
enum Direct {
    /// Not applicable: switch out to the scheduler as usual.
    No,
    /// The running ULT was popped again: it runs on.
    Stay,
    /// Switch to this ULT (claimed, counted, holding the stream's reference).
    Switch(context::Target),
    /// The running ULT is settled (requeued or registered as a waiter): switch out to the
    /// scheduler, which has nothing to do for it.
    Settled,
}

/// A yield (`wait` false) or a wait (`wait` true) of the running ULT through the direct path
/// ([`StreamLocal::direct_next`]). False: not applicable, the caller switches out as usual.
#[inline]
pub(crate) fn switch_next(wait: bool) -> bool {
    let Some(d) = context::with_stream(|s| s.direct_next(wait)) else {
        return false;
    };
    match d {
        Direct::No => false,
        Direct::Stay => true,
        Direct::Switch(t) => context::switch_direct(t).is_ok(),
        Direct::Settled => context::switch_out(Switch::Settled).is_ok(),
    }
}

/// Pushes `unit` into its pool through the current stream's scheduler pool list when the pool is
/// one of them (no reference-count update); gives the unit back otherwise.
#[inline]
pub(crate) fn push_via_current(unit: Unit) -> std::result::Result<(), Unit> {
    // One thread-local load (the stream published for its ULTs while its scheduler runs), no
    // `RefCell` flag and no `Rc` count.
    context::with_stream_or(unit, |s, u| s.push_own(u), Err)
}

pub(crate) fn with_current<R>(f: impl FnOnce(&StreamLocal) -> R) -> Option<R> {
    let s = CURRENT.with(|c| (**c.borrow()).clone())?;
    Some(f(&s))
}

/// Makes `s` the current stream and returns the previous one.
fn set_current(s: Option<Rc<StreamLocal>>) -> Option<Rc<StreamLocal>> {
    CURRENT.with(|c| {
        ManuallyDrop::into_inner(std::mem::replace(
            &mut *c.borrow_mut(),
            ManuallyDrop::new(s),
        ))
    })
}

impl StreamLocal {
    fn new(shared: StdArc<StreamShared>, pools: Vec<StdArc<dyn Pool>>) -> Self {
        StreamLocal {
            uid: shared.uid,
            shared,
            pools: pools
                .iter()
                .map(|p| match crate::pool::as_ring(p) {
                    Some(r) => OwnPool::Ring(crate::unit::pool_id(p), r),
                    None => OwnPool::Dyn(crate::unit::pool_id(p), p.clone()),
                })
                .collect(),
            slab: CoroSlab::default(),
            live: Cell::new(0),
            running: Cell::new(None),
            sched_n: Cell::new(0),
            direct_freq: Cell::new(0),
            direct_ring: match &pools[..] {
                [p] if !p.access().multi_consumer() => {
                    crate::pool::as_ring(p).map(|r| (crate::unit::pool_id(p), r))
                }
                _ => None,
            },
            handoff: Cell::new(None),
            coros: RefCell::new(CoroCache::new(context::Parent::default())),
            timers: RefCell::new(BinaryHeap::new()),
            timer_seq: Cell::new(0),
            locals: RefCell::new(Vec::new()),
            notify_registered: Cell::new(false),
            idle_rounds: Cell::new(0),
            idle_seen: Cell::new(0),
            idle_since: Cell::new(None),
            idle_yield: Cell::new(false),
        }
    }

    /// Pushes `unit` into its pool through this stream's pool list when the pool is one of the
    /// scheduler's (no reference-count update); gives the unit back otherwise.
    #[inline(always)]
    fn push_own(&self, unit: Unit) -> std::result::Result<(), Unit> {
        let id = unit.0.pool_id;
        for p in &self.pools {
            match p {
                OwnPool::Ring(pid, r) if *pid == id => {
                    r.push_from(self.uid, unit);
                    return Ok(());
                }
                OwnPool::Dyn(pid, d) if *pid == id => {
                    d.push(unit);
                    return Ok(());
                }
                _ => {}
            }
        }
        Err(unit)
    }

    /// Puts a unit this stream ran back where it belongs (`Unit::requeue`), through the
    /// scheduler's pool list when it can.
    #[inline]
    fn requeue_here(&self, unit: Unit) {
        let unit = if !unit.0.access.multi_consumer() || !unit.is_started() {
            match self.push_own(unit) {
                Ok(()) => return,
                Err(u) => u,
            }
        } else {
            unit
        };
        unit.requeue()
    }

    #[inline]
    pub(crate) fn run_unit(&self, unit: Unit) {
        let u = &*unit.0;
        if u.home_id.load(Ordering::Relaxed) == self.uid {
            // A started ULT of this stream (the common case: yields, wakes).
            if u.state.claim_owned() {
                self.count_dispatch(u);
                self.resume(unit);
            }
            return;
        }
        if let Some(c) = u.state.begin_run() {
            self.run_claimed(unit, c);
        }
    }

    /// The dispatch counters: single writer (this stream), so loads and stores, no locked add.
    #[inline(always)]
    fn count_dispatch(&self, u: &crate::unit::UnitInner) {
        u.dispatches
            .store(u.dispatches.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        let d = &self.shared.dispatches;
        d.store(d.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Runs a unit whose state this stream already moved to RUNNING (`claim` says whether this
    /// is its first run, with its body).
    #[inline(never)]
    pub(crate) fn run_claimed(&self, unit: Unit, claim: Claim) {
        let u = &*unit.0;
        self.count_dispatch(u);
        match claim {
            Claim::Again => {
                if u.home_id.load(Ordering::Relaxed) != self.uid {
                    // Started on another stream (a pool shared against the access rules): send
                    // it home.
                    self.send_home(unit);
                    return;
                }
                self.resume(unit)
            }
            Claim::First(body) => self.run_first(unit, body),
        }
    }

    /// A unit's first run: a tasklet runs to completion, a ULT gets its stack and coroutine.
    #[inline]
    fn run_first(&self, unit: Unit, body: Option<crate::state::Body>) {
        if unit.0.is_task {
            self.run_task(unit, body);
            return;
        }
        if self.start(&unit, body) {
            self.resume(unit)
        }
    }

    /// Switches into a started ULT and handles how it came back (the ULT that comes back may be
    /// another one of this stream's, which the first switched to directly). The hot path of every
    /// yield; the rarer outcomes are in [`Self::after_switch`].
    #[inline(never)]
    fn resume(&self, unit: Unit) {
        // Only the global level gate here (two loads when nobody listens): `enabled!` asks
        // subscribers about its own callsite, not `abt.ult`'s, and a subscriber that filters
        // by span name (the demo's tracer) says no to it, losing every ULT span. The span's
        // own callsite decides inside `resume_traced`.
        let step = if tracing_on() {
            self.resume_traced(unit)
        } else {
            let t = context::Target::of(&unit.0);
            self.running.set(Some(unit));
            t.map(context::resume)
        };
        let Some(unit) = self.running.take() else {
            // The ULT that switched out settled itself (`Switch::Settled`): nothing to do.
            return;
        };
        let Some(step) = step else {
            return;
        };
        match &step {
            context::Step::Switched(Switch::Yield) => {
                // Nothing in this variant needs dropping; forgetting it skips the drop glue.
                std::mem::forget(step);
                unit.0.state.yielded();
                // It ran here, so it is started: only its pool's access decides.
                if unit.0.access.multi_consumer() {
                    unit.requeue();
                } else if let Err(u) = self.push_own(unit) {
                    u.requeue();
                }
            }
            context::Step::Switched(Switch::Suspend) => {
                // Its waker pushes it (see `state`), with our reference, which the ULT took over
                // (`context::take_stream_ref`): forgotten, not dropped.
                std::mem::forget(step);
                std::mem::forget(unit);
            }
            _ => self.after_switch(unit, step),
        }
    }

    /// A resume inside the ULT's `abt.ult` span (a subscriber wants debug spans). Direct
    /// switches are off while tracing is on, so the ULT that comes back is this one.
    #[inline(never)]
    fn resume_traced(&self, unit: Unit) -> Option<context::Step> {
        let u = &*unit.0;
        let span = tracing::debug_span!(
            "abt.ult",
            id = u.id,
            name = u.name.as_deref().unwrap_or(""),
            rank = self.shared.rank
        );
        let _e = span.enter();
        let t = context::Target::of(&unit.0);
        self.running.set(Some(unit));
        t.map(context::resume)
    }

    /// The ULT suspended, yielded to another unit, or finished.
    #[inline(never)]
    fn after_switch(&self, unit: Unit, step: context::Step) {
        let u = &*unit.0;
        match step {
            context::Step::Switched(Switch::Yield) => {
                u.state.yielded();
                self.requeue_here(unit);
            }
            // Our reference was taken over by the ULT (`context::take_stream_ref`).
            context::Step::Switched(Switch::Suspend) => std::mem::forget(unit),
            // Settled ULTs took our reference with them (see `switch_next`).
            context::Step::Switched(Switch::Settled) => std::mem::forget(unit),
            context::Step::Switched(Switch::YieldTo(to)) => {
                let (next, c) = *to;
                u.state.yielded();
                self.requeue_here(unit);
                self.run_claimed(next, c);
            }
            context::Step::Switched(Switch::Done) => {
                // The body returned; its coroutine waits for the next ULT.
                u.state.terminate();
                let slot = u.slot.load(Ordering::Relaxed);
                if let Some(c) = self.slab.remove(slot) {
                    self.coros.borrow_mut().put(c);
                }
                self.live.set(self.live.get() - 1);
                crate::unit::recycle(unit.0);
            }
            context::Step::Finished => {
                // A coroutine only returns when resumed without a job, which the run path never
                // does; drop it rather than reuse it.
                u.state.terminate();
                drop(self.slab.remove(u.slot.load(Ordering::Relaxed)));
                self.live.set(self.live.get() - 1);
                crate::unit::recycle(unit.0);
            }
        }
    }

    /// The direct path of a yield (`wait` false: the running ULT goes back into its pool) or a
    /// wait (`wait` true: it is SUSPENDED and registered as a waiter, which holds the stream's
    /// reference): when the stream runs a built-in scheduler over one single-consumer ring pool
    /// (the running ULT's), no subscriber wants `abt.ult` spans, and the scheduler's event counter
    /// allows one more unit before its next check, the ULT pops the next unit itself, as the
    /// scheduler would, and switches straight to it if it is a ready ULT started here. The switch
    /// counts as one unit of the scheduler's; stops, joins, sleepers and the inbox are still
    /// checked every `event_freq` units.
    #[inline]
    fn direct_next(&self, wait: bool) -> Direct {
        let n = self.sched_n.get();
        if n >= self.direct_freq.get() || tracing_on() {
            return Direct::No;
        }
        let Some((pid, ring)) = &self.direct_ring else {
            return Direct::No;
        };
        let Some(me) = self.running.take() else {
            return Direct::No;
        };
        let me_ptr = StdArc::as_ptr(&me.0);
        // The caller must be the ULT this stream runs (not, say, a ULT of a stream nested
        // inside it, unwinding), from the one pool.
        if me.0.pool_id != *pid || me_ptr != context::current_ptr() {
            self.running.set(Some(me));
            return Direct::No;
        }
        let next = if wait {
            // Its waiter took this reference over (`context::take_stream_ref`).
            std::mem::forget(me);
            ring.pop_from(self.uid)
        } else {
            // Back into its pool, runnable: only this stream pops a single-consumer pool, and it
            // is busy running this ULT until the switch below, so the entry cannot run early.
            me.0.state.yielded();
            ring.rotate_from(self.uid, me)
        };
        let Some(next) = next else {
            // Waiting, with nothing else ready: the scheduler carries on.
            return Direct::Settled;
        };
        self.sched_n.set(n + 1);
        let u = &*next.0;
        if u.home_id.load(Ordering::Relaxed) == self.uid && u.state.claim_owned() {
            self.count_dispatch(u);
            if StdArc::as_ptr(&next.0) == me_ptr {
                // Itself (alone in its pool, or woken before it switched out): it runs on.
                self.running.set(Some(next));
                return Direct::Stay;
            }
            if let Some(t) = context::Target::of(u) {
                self.running.set(Some(next));
                return Direct::Switch(t);
            }
            u.state.yielded();
        }
        // New, a tasklet, stale, or not ours: the scheduler runs it (`run_handoff`).
        self.handoff.set(Some(next));
        Direct::Settled
    }

    /// Runs what the direct path left for the scheduler (see [`Self::direct_next`]).
    #[inline]
    pub(crate) fn run_handoff(&self) {
        while let Some(u) = self.handoff.take() {
            self.run_unit(u);
        }
    }

    /// Units the built-in scheduler has run since its last event check.
    #[inline(always)]
    pub(crate) fn sched_count(&self) -> &Cell<u32> {
        &self.sched_n
    }

    /// A started unit claimed on a stream that is not its home goes back to its home's inbox.
    #[cold]
    fn send_home(&self, unit: Unit) {
        let u = &*unit.0;
        let hid = u.home_id.load(Ordering::Relaxed);
        u.state.yielded();
        match lookup_stream(hid) {
            Some(home) => home.push_inbox(unit),
            None => tracing::error!(id = u.id, "abt: started ULT popped after its stream ended"),
        }
    }

    /// First run of a ULT: home, stack, coroutine, slab slot. False if it cannot run (no body,
    /// no stack: it is finished with the error).
    fn start(&self, unit: &Unit, body: Option<crate::state::Body>) -> bool {
        let u = &*unit.0;
        let Some(body) = body else {
            return false;
        };
        u.home_id.store(self.shared.uid, Ordering::Relaxed);
        if u.access.multi_consumer() {
            let _ = u.home.set(self.shared.clone());
        }
        let coro = match self.coros.borrow_mut().get(u.stack_size, u.guard) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(
                    id = u.id,
                    stack = u.stack_size,
                    "abt: cannot map a ULT stack"
                );
                u.state.terminate();
                unit.finish(Err(e));
                return false;
            }
        };
        coro.set_job(context::Job {
            unit: Unit(unit.0.clone()),
            body,
        });
        self.slab.insert_for(coro, u);
        self.live.set(self.live.get() + 1);
        true
    }

    fn run_task(&self, unit: Unit, body: Option<crate::state::Body>) {
        let r = match body {
            Some(b) => {
                IN_TASK.with(|c| c.set(true));
                let r = catch_unwind(AssertUnwindSafe(b));
                IN_TASK.with(|c| c.set(false));
                r.map_err(panic_error)
            }
            None => Ok(()),
        };
        unit.0.state.terminate();
        unit.finish(r);
        crate::unit::recycle(unit.0);
    }

    pub(crate) fn add_timer(&self, at: Instant, unit: Unit) {
        let seq = self.timer_seq.get();
        self.timer_seq.set(seq + 1);
        self.timers.borrow_mut().push(Timer { at, seq, unit });
    }

    fn wake_timers(&self) -> Option<Instant> {
        let mut due = Vec::new();
        let next = {
            let mut t = self.timers.borrow_mut();
            if t.is_empty() {
                return None;
            }
            let now = Instant::now();
            while t.peek().is_some_and(|x| x.at <= now) {
                if let Some(x) = t.pop() {
                    due.push(x.unit);
                }
            }
            t.peek().map(|x| x.at)
        };
        for u in due {
            if u.0.state.resume() == crate::state::Resume::Push {
                u.requeue();
            }
        }
        next
    }

    pub(crate) fn check_events(&self) {
        self.wake_timers();
        let n = self.shared.inbox.len();
        for _ in 0..n {
            match self.shared.inbox.pop() {
                Some(u) => self.run_unit(u),
                None => break,
            }
        }
    }

    pub(crate) fn has_to_stop(&self, pools: &[StdArc<dyn Pool>]) -> bool {
        match self.shared.control.load(Ordering::Acquire) {
            RUN => false,
            STOP => true,
            _ => {
                self.live.get() == 0
                    && self.timers.borrow().is_empty()
                    && self.shared.inbox.is_empty()
                    && pools.iter().all(|p| p.is_empty())
            }
        }
    }

    pub(crate) fn idle(&self, pools: &[StdArc<dyn Pool>], all_wait: bool) {
        let next = self.wake_timers();
        if !self.shared.inbox.is_empty()
            || pools.iter().any(|p| !p.is_empty())
            || self.shared.control.load(Ordering::Acquire) != RUN
        {
            return;
        }
        if all_wait {
            let timeout = match next {
                Some(at) => at.saturating_duration_since(Instant::now()).min(MAX_PARK),
                None => MAX_PARK,
            };
            self.shared.parker.park(Some(timeout));
        } else {
            self.idle_spin();
        }
    }

    /// One idle round of a stream over plain FIFO pools. Such streams spin, as Argobots' do: one
    /// pause a round, so work pushed by another stream is seen within tens of ns (the scheduler
    /// pops again right after; with 64 pauses a round, ≈ 1.9 µs here, that wait was most of a
    /// cross-stream round trip). After [`SPIN_TIME`] idle, the round yields the CPU instead, so a
    /// loaded machine still runs the threads that have work.
    #[inline]
    fn idle_spin(&self) {
        // Consecutive idle rounds: the count restarts when a unit was dispatched since the last
        // one (compared here, so the dispatch path stores nothing for it).
        let seen = self.shared.dispatches.load(Ordering::Relaxed);
        let n = if seen == self.idle_seen.get() {
            self.idle_rounds.get()
        } else {
            self.idle_seen.set(seen);
            self.idle_yield.set(false);
            0
        };
        self.idle_rounds.set(n.wrapping_add(1));
        if n % CLOCK_EVERY == 0 && n != 0 {
            self.time_idle_spell(n);
        }
        if self.idle_yield.get() {
            std::thread::yield_now();
        } else {
            for _ in 0..IDLE_PAUSES {
                std::hint::spin_loop();
            }
        }
    }

    /// Every [`CLOCK_EVERY`] idle rounds: has this idle spell spun for [`SPIN_TIME`]?
    #[cold]
    #[inline(never)]
    fn time_idle_spell(&self, n: u32) {
        let now = Instant::now();
        if n == CLOCK_EVERY {
            self.idle_since.set(Some(now));
        } else if let Some(t0) = self.idle_since.get() {
            if now.duration_since(t0) >= SPIN_TIME {
                self.idle_yield.set(true);
            }
        }
    }
}

impl Drop for StreamLocal {
    fn drop(&mut self) {
        // Suspended ULTs left behind by a stop are unwound here (`Coro` forces an unwind),
        // so their joiners see an error rather than hanging.
        let slab = self.slab.drain();
        drop(slab);
    }
}

/// Taken ranks (rank 0 is the primary's).
static RANKS: StdMutex<Vec<usize>> = StdMutex::new(Vec::new());

fn take_rank(rank: Option<usize>) -> Result<usize> {
    let mut r = RANKS.lock().unwrap_or_else(|p| p.into_inner());
    let rank = match rank {
        Some(x) if r.contains(&x) => return Err(Error::RankTaken(x)),
        Some(x) => x,
        None => (1..).find(|x| !r.contains(x)).unwrap_or(usize::MAX),
    };
    r.push(rank);
    Ok(rank)
}

fn release_rank(rank: usize) {
    let mut r = RANKS.lock().unwrap_or_else(|p| p.into_inner());
    r.retain(|x| *x != rank);
}

/// Runs `sched` on the calling OS thread as the stream `local` belongs to.
fn run_stream(local: &Rc<StreamLocal>, sched: &mut Sched) {
    let shared = local.shared.clone();
    context::install_overflow_handler();
    context::install_panic_hook();
    context::ensure_altstack();
    shared.tid.store(gettid(), Ordering::Release);
    let prev = set_current(Some(local.clone()));
    let prev_uid = CURRENT_UID.with(|c| c.replace(shared.uid));
    // Runs when the scheduler returns or unwinds: the pools' owner-bound parts are given back
    // while this stream's uid is still current, then the caller's stream (if any) is current again.
    struct Leave<'a> {
        local: &'a Rc<StreamLocal>,
        pools: &'a [StdArc<dyn Pool>],
        prev: Option<Rc<StreamLocal>>,
        prev_uid: usize,
    }
    impl Drop for Leave<'_> {
        fn drop(&mut self) {
            self.local.direct_freq.set(0);
            for p in self.pools {
                p.release_owner();
            }
            let prev = self.prev.take();
            drop(set_current(prev));
            CURRENT_UID.with(|c| c.set(self.prev_uid));
        }
    }
    let pools = sched.pools.clone();
    for p in &pools {
        p.claim_owner();
    }
    let _leave = Leave {
        local,
        pools: &pools,
        prev,
        prev_uid,
    };
    if !local.notify_registered.replace(true) {
        for p in &sched.pools {
            if p.kind() == PoolKind::FifoWait {
                let s = shared.clone();
                p.add_notify(StdArc::new(move || s.parker.unpark()));
            }
        }
    }
    let rings: Vec<Option<StdArc<crate::pool::RingPool>>> =
        sched.pools.iter().map(crate::pool::as_ring).collect();
    let pool_refs: Vec<crate::sched::PoolRef<'_>> = sched
        .pools
        .iter()
        .zip(&rings)
        .map(|(p, r)| match r {
            Some(r) => crate::sched::PoolRef::Ring(r),
            None => crate::sched::PoolRef::Dyn(&**p),
        })
        .collect();
    let _stream = context::enter_stream(local);
    if sched.builtin && local.direct_ring.is_some() {
        local.direct_freq.set(sched.event_freq);
    }
    local.sched_n.set(0);
    let ctx = SchedContext {
        local,
        pools: &sched.pools,
        pool_refs: &pool_refs,
        event_freq: sched.event_freq,
        all_wait: all_wait(&sched.pools),
    };
    tracing::debug!(rank = shared.rank, "abt.xstream start");
    sched.def.run(&ctx);
    tracing::debug!(rank = shared.rank, "abt.xstream end");
}

/// A handle any thread may keep to a stream: request a stop or a join, read its counters.
#[derive(Clone)]
pub struct XstreamHandle {
    shared: StdArc<StreamShared>,
}

impl XstreamHandle {
    /// The stream's rank (`ABT_xstream_get_rank`).
    #[doc(alias = "ABT_xstream_get_rank")]
    pub fn rank(&self) -> usize {
        self.shared.rank
    }
    /// Asks the scheduler to return at its next event check, leaving queued work
    /// (`ABT_xstream_cancel`).
    #[doc(alias = "ABT_xstream_cancel")]
    pub fn request_stop(&self) {
        self.shared.request(STOP)
    }
    /// Asks the scheduler to return once all its work is done (the request `ABT_xstream_join`
    /// makes).
    pub fn request_join(&self) {
        self.shared.request(JOIN)
    }
    /// How many times the stream parked its OS thread while idle.
    pub fn park_count(&self) -> u64 {
        self.shared.parker.park_count()
    }
    /// How many units the stream has dispatched.
    pub fn dispatch_count(&self) -> u64 {
        self.shared.dispatches.load(Ordering::Relaxed)
    }
    /// The stream's OS thread id (0 before it started).
    pub fn tid(&self) -> u64 {
        self.shared.tid.load(Ordering::Acquire)
    }
    /// Binds the stream's OS thread to `cpus` (`ABT_xstream_set_cpubind`; hwloc's
    /// `hwloc_set_cpubind` in DAOS), with `sched_setaffinity`.
    #[doc(alias = "ABT_xstream_set_cpubind")]
    #[doc(alias = "hwloc_set_cpubind")]
    pub fn set_cpubind(&self, cpus: &[usize]) -> Result<()> {
        let tid = self.tid();
        if tid == 0 {
            return Err(Error::XstreamState);
        }
        set_affinity(tid, cpus)
    }
    /// The CPUs the stream may run on (`ABT_xstream_get_cpubind`).
    #[doc(alias = "ABT_xstream_get_cpubind")]
    pub fn get_cpubind(&self) -> Result<Vec<usize>> {
        let tid = self.tid();
        if tid == 0 {
            return Err(Error::XstreamState);
        }
        get_affinity(tid)
    }
}

/// A secondary execution stream: its own OS thread (`ABT_xstream`). Dropping it joins it, which
/// waits for all its work, suspended ULTs included: stop it first if that may never finish.
#[doc(alias = "ABT_xstream")]
pub struct Xstream {
    handle: XstreamHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Options for a new stream (rank, CPU binding).
#[derive(Default)]
pub struct XstreamBuilder {
    rank: Option<usize>,
    cpus: Option<Vec<usize>>,
}

impl XstreamBuilder {
    /// Requests a rank (`ABT_xstream_create_with_rank`); taken ranks are an error.
    pub fn rank(mut self, rank: usize) -> Self {
        self.rank = Some(rank);
        self
    }
    /// Binds the new stream's OS thread to these CPUs before it runs anything.
    pub fn cpubind(mut self, cpus: Vec<usize>) -> Self {
        self.cpus = Some(cpus);
        self
    }
    /// Creates and starts the stream running `sched`.
    pub fn spawn(self, sched: Sched) -> Result<Xstream> {
        let rank = take_rank(self.rank)?;
        let shared = StreamShared::create(rank);
        let s2 = shared.clone();
        let cpus = self.cpus;
        // The start handshake with the new OS thread; a std channel, never modelled.
        let (tx, rx) = std::sync::mpsc::channel::<Result<()>>();
        let spawned = std::thread::Builder::new()
            .name(format!("abt-xs-{rank}"))
            .spawn(move || {
                let mut sched = sched;
                s2.tid.store(gettid(), Ordering::Release);
                if let Some(c) = cpus {
                    if let Err(e) = set_affinity(0, &c) {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
                let _ = tx.send(Ok(()));
                let local = Rc::new(StreamLocal::new(s2, sched.pools.clone()));
                run_stream(&local, &mut sched);
                drop(local);
                sched.def.free();
            });
        let thread = match spawned {
            Ok(t) => t,
            Err(e) => {
                release_rank(rank);
                return Err(Error::Sys(format!("spawn: {e}")));
            }
        };
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                release_rank(rank);
                return Err(e);
            }
            Err(_) => {
                release_rank(rank);
                return Err(Error::XstreamState);
            }
        }
        Ok(Xstream {
            handle: XstreamHandle { shared },
            thread: Some(thread),
        })
    }
}

impl Xstream {
    /// Options for a new stream.
    pub fn builder() -> XstreamBuilder {
        XstreamBuilder::default()
    }
    /// Creates and starts a stream with the lowest free rank ≥ 1 (`ABT_xstream_create`).
    #[doc(alias = "ABT_xstream_create")]
    pub fn create(sched: Sched) -> Result<Xstream> {
        Self::builder().spawn(sched)
    }
    /// Creates and starts a stream with `rank` (`ABT_xstream_create_with_rank`); DAOS uses
    /// `xs_id + 1`, rank 0 being the primary.
    #[doc(alias = "ABT_xstream_create_with_rank")]
    pub fn create_with_rank(sched: Sched, rank: usize) -> Result<Xstream> {
        Self::builder().rank(rank).spawn(sched)
    }
    /// The stream's rank.
    pub fn rank(&self) -> usize {
        self.handle.rank()
    }
    /// A handle other threads can keep.
    pub fn handle(&self) -> XstreamHandle {
        self.handle.clone()
    }
    /// Waits until the stream has run all its work, then ends its thread (`ABT_xstream_join`).
    #[doc(alias = "ABT_xstream_join")]
    pub fn join(&mut self) -> Result<()> {
        self.handle.request_join();
        self.wait()
    }
    /// Stops the stream at its next event check, leaving queued work, and waits for its thread
    /// (`ABT_xstream_cancel` + join).
    pub fn stop(&mut self) -> Result<()> {
        self.handle.request_stop();
        self.wait()
    }
    fn wait(&mut self) -> Result<()> {
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| Error::XstreamState),
            None => Ok(()),
        }
    }
    /// Joins the stream and releases its rank (`ABT_xstream_free`).
    #[doc(alias = "ABT_xstream_free")]
    pub fn free(mut self) -> Result<()> {
        self.join()
    }
}

impl Drop for Xstream {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.join();
        }
        release_rank(self.handle.rank());
    }
}

/// The primary stream (rank 0), whose scheduler runs on the thread that calls [`Primary::run`] or
/// [`Primary::join`] (see the module docs for how this differs from Argobots). It owns the
/// coroutines of the ULTs it started, so it stays on the thread that made it (`!Send`); ULTs
/// suspended when `run` returns are still there for the next `run` / `join`.
pub struct Primary {
    handle: XstreamHandle,
    sched: Sched,
    local: Rc<StreamLocal>,
}

impl Primary {
    /// Takes rank 0 for a primary stream over `sched` (`ABT_init` makes Argobots' primary).
    #[doc(alias = "ABT_init")]
    pub fn new(sched: Sched) -> Result<Primary> {
        let rank = take_rank(Some(0))?;
        let shared = StreamShared::create(rank);
        let local = Rc::new(StreamLocal::new(shared.clone(), sched.pools.clone()));
        Ok(Primary {
            handle: XstreamHandle { shared },
            sched,
            local,
        })
    }
    /// A handle other threads (or ULTs) can use to stop it.
    pub fn handle(&self) -> XstreamHandle {
        self.handle.clone()
    }
    /// Runs the scheduler on the calling thread until a stop (or join) is requested through a
    /// handle; then returns, and may be run again.
    pub fn run(&mut self) {
        self.handle.shared.control.store(RUN, Ordering::Release);
        run_stream(&self.local, &mut self.sched);
    }
    /// Runs the scheduler on the calling thread until all its work is done (`ABT_xstream_join`
    /// applied to the primary: Argobots' main ULT would instead yield until then).
    pub fn join(&mut self) {
        self.handle.shared.control.store(JOIN, Ordering::Release);
        run_stream(&self.local, &mut self.sched);
    }
}

impl Drop for Primary {
    fn drop(&mut self) {
        self.sched.def.free();
        release_rank(0);
    }
}

/// The rank of the stream the caller runs on (`ABT_xstream_self_rank`), if any.
#[doc(alias = "ABT_xstream_self_rank")]
pub fn self_rank() -> Option<usize> {
    with_current(|s| s.shared.rank)
}

/// Per-stream local storage (DAOS keeps its per-xstream state under a pthread key, `dss_tls`):
/// runs `f` on this stream's value of type `T`, made with `T::default()` on first use and dropped
/// when the stream ends. `None` when the caller is not on a stream.
pub fn with_local<T: Default + 'static, R>(f: impl FnOnce(&mut T) -> R) -> Option<R> {
    with_current(|s| {
        let id = TypeId::of::<T>();
        let mut l = s.locals.borrow_mut();
        let idx = match l.iter().position(|(t, _)| *t == id) {
            Some(i) => i,
            None => {
                l.push((id, Box::new(T::default())));
                l.len() - 1
            }
        };
        let v = l[idx].1.downcast_mut::<T>()?;
        Some(f(v))
    })
    .flatten()
}
