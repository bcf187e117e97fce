//! Context switching: the only `unsafe` of the crate besides the stack mappings and the overflow
//! handler next to it.
//!
//! A ULT runs on a coroutine of our own ([`Coro`]): a guarded stack and a saved stack pointer,
//! switched by the few instructions of [`switch`] (x86-64). Until 2026-11 this was `corosensei`
//! 0.3, whose coroutines are asymmetric: a ULT could only switch back to the scheduler that
//! resumed it, so every yield was two switches (ULT → scheduler → ULT). Our switch is symmetric,
//! which lets a yielding or waiting ULT switch straight to the next ready ULT of its stream
//! ([`switch_direct`]; the stream decides when, see `xstream`), and it keeps what we used of
//! corosensei: our own stacks (guard page, arena, per-stream cache), the panic hook run on the
//! stream's stack ([`install_panic_hook`]), and the forced unwind of ULTs still suspended when their
//! stream is dropped. A coroutine is `!Send`: its stack holds frames that may refer to the OS
//! thread's thread-locals. That is why **a started ULT never changes stream**: the coroutine is
//! created on the stream that first runs the ULT and stays in that stream's slab; only units that
//! have not started travel between streams (see `pool`).
//!
//! Every resume of a ULT starts from its stream's scheduler stack, whose saved stack pointer sits
//! in the stream's [`Parent`] slot; a ULT switching out (whether it was resumed by the scheduler or
//! switched to directly) always goes back to that slot, so the scheduler's `resume` returns with
//! whichever ULT of its stream switched out last.

mod overflow;
mod stack;
mod switch;

pub(crate) use overflow::{ensure_altstack, install as install_overflow_handler, StackInfo};
use stack::StackCache;
pub(crate) use stack::UltStack;
pub use stack::{default_stack_size, DEFAULT_STACK_SIZE};

use crate::error::Error;
use crate::unit::{Unit, UnitInner};
use crate::xstream::StreamLocal;
use std::cell::{Cell, RefCell};
use std::ptr::NonNull;
use std::rc::Rc;
use switch::switch;

/// Why a ULT handed control back to its stream.
pub(crate) enum Switch {
    /// Back into its pool, runnable.
    Yield,
    /// Suspended (its state is already SUSPENDED); someone will resume it. The ULT took over
    /// the reference its stream holds for it ([`take_stream_ref`]) and handed it to whoever will
    /// wake it (or dropped it), so the stream forgets its copy instead of dropping it.
    Suspend,
    /// Back into its pool, and run this (already claimed) unit next.
    /// Boxed so the whole enum is one pointer-sized word: every switch passes it in a register,
    /// and `yield_to` is the rare one.
    YieldTo(Box<(Unit, crate::state::Claim)>),
    /// The ULT's body returned (its result is already recorded); the coroutine is idle, ready to
    /// run another ULT's body on the same stack ([`CoroCache`]).
    Done,
    /// The ULT already requeued itself or registered as a waiter, and took the stream's
    /// reference with it (the direct path, `xstream::switch_next`): nothing to do for it.
    Settled,
}

/// Words a ULT switches out with ([`Switch`] encoded; a `YieldTo` box is its pointer, which is
/// 8-aligned, so never one of these).
const W_YIELD: usize = 0;
const W_SUSPEND: usize = 1;
const W_DONE: usize = 2;
/// The coroutine's loop returned: it never runs again.
const W_EXIT: usize = 3;
const W_SETTLED: usize = 4;

/// Words a coroutine is switched into with.
const W_RUN: usize = 0;
/// Unwind the ULT (its stream is dropping it) or, if idle, end the coroutine.
const W_UNWIND: usize = 1;

#[inline(always)]
fn encode(sw: Switch) -> usize {
    match sw {
        Switch::Yield => W_YIELD,
        Switch::Suspend => W_SUSPEND,
        Switch::Done => W_DONE,
        Switch::Settled => W_SETTLED,
        Switch::YieldTo(b) => Box::into_raw(b) as usize,
    }
}

#[inline(always)]
fn decode(w: usize) -> Step {
    match w {
        W_YIELD => Step::Switched(Switch::Yield),
        W_SUSPEND => Step::Switched(Switch::Suspend),
        W_DONE => Step::Switched(Switch::Done),
        W_EXIT => Step::Finished,
        W_SETTLED => Step::Switched(Switch::Settled),
        // SAFETY: any other word is a pointer `encode` made with `Box::into_raw` for this one
        // switch; the word is delivered once (to the one scheduler resume it returns to).
        p => Step::Switched(Switch::YieldTo(unsafe {
            Box::from_raw(p as *mut (Unit, crate::state::Claim))
        })),
    }
}

/// The payload of the panic that unwinds a ULT its stream drops while it is suspended.
struct ForcedUnwind;

#[cold]
#[inline(never)]
fn forced_unwind() -> ! {
    std::panic::resume_unwind(Box::new(ForcedUnwind))
}

/// A stream's scheduler stack, as seen from its ULTs: its saved stack pointer while a ULT runs.
/// One per stream, shared (non-atomically) by all the stream's coroutines.
#[derive(Default)]
pub(crate) struct ParentSlot {
    sp: Cell<usize>,
}

/// See [`ParentSlot`].
pub(crate) type Parent = Rc<ParentSlot>;

impl ParentSlot {
    #[inline(always)]
    fn get(&self) -> usize {
        self.sp.get()
    }
    #[inline(always)]
    fn as_ptr(&self) -> *mut usize {
        self.sp.as_ptr()
    }
}

thread_local! {
    /// The stream whose scheduler runs on this OS thread (the innermost, if nested), while it
    /// runs: see [`enter_stream`].
    static STREAM: Cell<*const StreamLocal> = const { Cell::new(std::ptr::null()) };
}

/// Publishes `s` as the stream running on this thread for [`with_stream`] until the guard
/// drops (which puts back the previous one: streams nest when a ULT runs a primary stream).
pub(crate) fn enter_stream(s: &Rc<StreamLocal>) -> StreamGuard {
    StreamGuard(STREAM.with(|c| c.replace(Rc::as_ptr(s))))
}

/// See [`enter_stream`].
pub(crate) struct StreamGuard(*const StreamLocal);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        STREAM.with(|c| c.set(self.0));
    }
}

/// Runs `f` on the stream running on this thread; `None` outside any. Cheaper than the
/// current-stream thread-local of `xstream` (no `RefCell` flag, no `Rc` count): one load.
#[inline(always)]
pub(crate) fn with_stream<R>(f: impl FnOnce(&StreamLocal) -> R) -> Option<R> {
    let s = STREAM.with(|c| c.get());
    if s.is_null() {
        return None;
    }
    // SAFETY: a non-null pointer was published by `enter_stream` from the `Rc` that
    // `run_stream` holds while the stream's scheduler runs on this thread, and is withdrawn
    // (the guard drops) before that returns.
    Some(f(unsafe { &*s }))
}

/// [`with_stream`] with an argument that goes to `none` when no stream runs on this thread.
#[inline(always)]
pub(crate) fn with_stream_or<A, R>(
    a: A,
    f: impl FnOnce(&StreamLocal, A) -> R,
    none: impl FnOnce(A) -> R,
) -> R {
    let s = STREAM.with(|c| c.get());
    if s.is_null() {
        return none(a);
    }
    // SAFETY: as in `with_stream`.
    f(unsafe { &*s }, a)
}

/// What a coroutine shares with the code that switches to it: at the top of its own stack (so
/// moving the [`Coro`] that owns it moves nothing a running coroutine points at).
struct CoroCtx {
    /// Saved stack pointer while the coroutine is not running.
    sp: Cell<usize>,
    /// The stream's scheduler stack, where every switch out goes.
    parent: Parent,
    /// The coroutine's loop has returned (it switched out with [`W_EXIT`]).
    exited: Cell<bool>,
    /// Its stack's guard page and usable size, for the overflow handler.
    guard_lo: usize,
    guard_hi: usize,
    size: usize,
}

/// What this OS thread knows about the ULT it runs: one record in the coroutine's first frame,
/// published through one thread-local pointer (one write to switch in, one to switch out).
pub(crate) struct Running {
    ctx: *const CoroCtx,
    unit: *const UnitInner,
    /// For the overflow handler.
    pub(crate) stack: StackInfo,
}

thread_local! {
    /// The running ULT's record, or null between ULTs.
    static RUNNING: Cell<*const Running> = const { Cell::new(std::ptr::null()) };
}

/// The running ULT's record (null between ULTs); the overflow handler reads it.
#[inline(always)]
fn running_ptr() -> *const Running {
    RUNNING.with(|c| c.get())
}

#[inline(always)]
fn set_running(r: *const Running) {
    RUNNING.with(|c| c.set(r));
}

/// What `Coro::resume` came back with.
pub(crate) enum Step {
    /// The ULT switched out.
    Switched(Switch),
    /// The coroutine ended (only when resumed without a job, which the run path never does).
    Finished,
}

thread_local! {
    /// The job an idle coroutine takes when it is next resumed (set just before that resume, on
    /// the same thread; a per-coroutine cell would cost an allocation per live ULT).
    static NEXT_JOB: Cell<Option<Job>> = const { Cell::new(None) };
}

/// What a coroutine runs next: a ULT and its body.
pub(crate) struct Job {
    pub(crate) unit: Unit,
    pub(crate) body: crate::state::Body,
}

/// The first frame of every coroutine: runs ULT bodies one after the other, switching out with
/// [`Switch::Done`] after each, until it is switched into without a job.
///
/// # Safety
/// Called only by the trampoline of a context [`Coro::new`] built, with `ctx` its live `CoroCtx`.
unsafe extern "C" fn coro_entry(first: usize, ctx: *const u8) -> ! {
    let ctx = ctx as *const CoroCtx;
    let mut word = first;
    while word != W_UNWIND {
        let Some(Job { unit, body }) = NEXT_JOB.with(Cell::take) else {
            break;
        };
        // SAFETY: `ctx` outlives the coroutine (its `Coro` drops it only after the loop has
        // exited, see `Coro::release`).
        let (guard_lo, guard_hi, size) = unsafe { ((*ctx).guard_lo, (*ctx).guard_hi, (*ctx).size) };
        {
            // `running` and `unit` live in this block until the body returns, which is what
            // makes the raw pointers published below valid while published.
            let running = Running {
                ctx,
                unit: crate::sync::StdArc::as_ptr(&unit.0),
                stack: StackInfo {
                    guard_lo,
                    guard_hi,
                    size,
                    id: unit.0.id,
                    name: unit.0.name.clone(),
                },
            };
            set_running(&running);
            crate::unit::run_ult_body(&unit, body);
            set_running(std::ptr::null());
        }
        drop(unit);
        // SAFETY: we run on this coroutine's stack; `ctx.sp` is where it is saved and the parent
        // slot holds the stream's scheduler stack, suspended in the resume that switched here.
        word = unsafe { switch(W_DONE, (*ctx).sp.as_ptr(), (*ctx).parent.get()) };
    }
    // SAFETY: as above; nothing of this frame is used after this switch, which never returns.
    unsafe {
        (*ctx).exited.set(true);
        switch(W_EXIT, (*ctx).sp.as_ptr(), (*ctx).parent.get());
    }
    std::process::abort()
}
/// A coroutine that runs ULT bodies one after the other on one stack: after a body returns it
/// switches out with [`Switch::Done`] and waits for the next [`Job`], so a stream reuses idle
/// coroutines (stack and initial frame) instead of building one per ULT. `!Send`: lives in its
/// home stream's slab while it runs a ULT, in its stream's [`CoroCache`] while idle.
pub(crate) struct Coro {
    ctx: NonNull<CoroCtx>,
    stack: Option<UltStack>,
    /// Its stack's size class and guard, for the cache.
    size: usize,
    guard: bool,
}

impl Coro {
    /// Builds an idle coroutine on `stack`, whose switches out go to `parent`. Its context record
    /// sits in the top 64 bytes of the stack itself (a page the entry frame touches anyway), so
    /// a coroutine costs no allocation of its own.
    fn new(stack: UltStack, parent: &Parent) -> Coro {
        const _: () = assert!(std::mem::size_of::<CoroCtx>() <= 64);
        let (guard_lo, guard_hi) = stack.guard_range();
        let (size, guard) = (stack.size(), stack.guarded());
        let at = stack.top() - 64;
        let ctx = CoroCtx {
            sp: Cell::new(0),
            parent: parent.clone(),
            exited: Cell::new(false),
            guard_lo,
            guard_hi,
            size,
        };
        // SAFETY: the top 64 bytes of the stack are ours alone (the stack is, and the context's
        // frames start below them), 64-byte aligned (the top is page aligned), and stay mapped
        // until `release` drops the record and hands the stack back.
        let ctx = unsafe {
            std::ptr::write(at as *mut CoroCtx, ctx);
            NonNull::new_unchecked(at as *mut CoroCtx)
        };
        // SAFETY: the stack below `at` is ours alone, 16-byte aligned at `at`, and lives as long
        // as this `Coro` (which ends the context before giving the stack back); `ctx` as long.
        let sp = unsafe { switch::init(at, coro_entry, ctx.as_ptr() as *const u8) };
        // SAFETY: `ctx` was just written and is only shared through raw pointers.
        unsafe { ctx.as_ref() }.sp.set(sp);
        Coro {
            ctx,
            stack: Some(stack),
            size,
            guard,
        }
    }

    /// Gives an idle coroutine its next ULT; the next `resume` on this thread starts it (the
    /// caller resumes it before any other coroutine).
    #[inline]
    pub(crate) fn set_job(&self, job: Job) {
        NEXT_JOB.with(|c| c.set(Some(job)));
    }

    /// Ends the context: an idle coroutine's loop returns; a ULT suspended inside its body is
    /// unwound first (its join then reports an error), as corosensei did when dropping a
    /// suspended coroutine.
    fn terminate(&mut self) {
        // SAFETY: the record is alive until `release` drops it, after this.
        let ctx = unsafe { self.ctx.as_ref() };
        while !ctx.exited.get() {
            // SAFETY: this coroutine is not running (its stream is dropping it from the
            // scheduler side), so its saved stack pointer is current; the parent slot receives
            // this thread's stack pointer until it switches back.
            let w = unsafe { switch(W_UNWIND, ctx.parent.as_ptr(), ctx.sp.get()) };
            // A `yield_to` box that a ULT switched out with while unwinding: release it.
            drop(decode(w));
        }
    }

    /// Ends the context, drops its record and gives the stack back (once; `None` after).
    fn release(&mut self) -> Option<UltStack> {
        let stack = self.stack.take()?;
        self.terminate();
        // SAFETY: written in `new` at the top of `stack`, which is still ours; the context has
        // exited, so nothing points at the record any more, and `stack` is gone from `self`, so
        // this runs once.
        unsafe { std::ptr::drop_in_place(self.ctx.as_ptr()) };
        Some(stack)
    }

    /// Ends an idle coroutine and gives its stack back.
    fn into_stack(mut self) -> Option<UltStack> {
        self.release()
    }
}

impl Drop for Coro {
    fn drop(&mut self) {
        drop(self.release());
    }
}

/// The coroutines of the ULTs a stream has started, by slot (a ULT's slot is in its unit
/// record). Coroutines are boxed, so moving one between the cache and the slab moves a pointer.
#[derive(Default)]
pub(crate) struct CoroSlab {
    // Boxed on purpose: see above.
    #[allow(clippy::vec_box)]
    v: RefCell<Vec<Option<Box<Coro>>>>,
    free: RefCell<Vec<usize>>,
}

impl CoroSlab {
    /// Stores a coroutine; returns its slot.
    #[inline]
    pub(crate) fn insert(&self, c: Box<Coro>) -> usize {
        match self.free.borrow_mut().pop() {
            Some(s) => {
                // A free slot is empty: `replace` instead of an assignment skips an out-of-line
                // drop of the old `None` (ten instructions per ULT creation).
                let old = self.v.borrow_mut()[s].replace(c);
                debug_assert!(old.is_none());
                std::mem::forget(old);
                s
            }
            None => {
                let mut v = self.v.borrow_mut();
                v.push(Some(c));
                v.len() - 1
            }
        }
    }

    /// Takes a coroutine out (its ULT switched out for good).
    #[inline]
    pub(crate) fn remove(&self, slot: usize) -> Option<Box<Coro>> {
        let c = self.v.borrow_mut().get_mut(slot).and_then(Option::take);
        if c.is_some() {
            self.free.borrow_mut().push(slot);
        }
        c
    }

    /// Takes every coroutine out (the stream is being dropped).
    pub(crate) fn drain(&self) -> Vec<Option<Box<Coro>>> {
        self.free.borrow_mut().clear();
        std::mem::take(&mut *self.v.borrow_mut())
    }

    /// Inserts the coroutine of a ULT starting on this stream and records where it is in the
    /// unit (its slot, and its context for switches to it).
    #[inline]
    pub(crate) fn insert_for(&self, c: Box<Coro>, u: &UnitInner) {
        u.ctx
            .store(c.ctx.as_ptr() as usize, crate::sync::Ordering::Relaxed);
        let slot = self.insert(c);
        u.slot.store(slot, crate::sync::Ordering::Relaxed);
    }
}

/// Runs the ULT whose coroutine `t` is (from its stream's scheduler stack) until a ULT of this
/// stream switches out: itself, or another it switched to directly.
#[inline(always)]
pub(crate) fn resume(t: Target) -> Step {
    // SAFETY: `t` is the coroutine of a ULT started on this stream and claimed by it (see
    // `Target::of`), so it is alive in the stream's slab (which removes coroutines only on the
    // scheduler's side, after their ULT switched out) and not running: this thread is on the
    // stream's scheduler stack, which it saves in the parent slot every switch out returns to.
    let w = unsafe {
        let c = t.0.as_ref();
        switch(W_RUN, c.parent.as_ptr(), c.sp.get())
    };
    decode(w)
}

impl Target {
    /// The coroutine of `u`, a ULT started on the calling stream (or the calling ULT's stream),
    /// READY and claimed by it (so its coroutine is suspended in this stream's slab), for
    /// [`resume`] or [`switch_direct`] right away.
    #[inline(always)]
    pub(crate) fn of(u: &UnitInner) -> Option<Target> {
        NonNull::new(u.ctx.load(crate::sync::Ordering::Relaxed) as *mut CoroCtx)
            .map(|c| Target(c, std::marker::PhantomData))
    }
}

/// A suspended coroutine of the running ULT's stream, to switch to directly: made by
/// [`CoroSlab::target`] and consumed by [`switch_direct`], with nothing in between that could
/// run the stream's scheduler (which alone removes coroutines from the slab). `!Send`.
pub(crate) struct Target(NonNull<CoroCtx>, std::marker::PhantomData<*const ()>);

/// Switches from the running ULT straight to `to`, another ULT of the same stream that is READY,
/// already claimed (RUNNING) and counted by the stream; the caller has settled what the running
/// ULT becomes (requeued, or waiting) exactly as for a switch out. Returns when something
/// switches back to this ULT. `Err(NotInUlt)` outside a ULT.
#[inline]
pub(crate) fn switch_direct(to: Target) -> Result<(), Error> {
    let r = running_ptr();
    if r.is_null() {
        return Err(Error::NotInUlt);
    }
    set_running(std::ptr::null());
    // SAFETY: as in `switch_out` for the running ULT's record and context; `to` comes from the
    // slab of this ULT's stream (see `Target`), so it is alive and not running, and both
    // coroutines switch out to the same parent slot, which still holds the scheduler's stack.
    let w = unsafe {
        let from = &*(*r).ctx;
        let to = to.0.as_ref();
        debug_assert!(Rc::ptr_eq(&from.parent, &to.parent));
        switch(W_RUN, from.sp.as_ptr(), to.sp.get())
    };
    set_running(r);
    if w == W_UNWIND {
        forced_unwind();
    }
    Ok(())
}

/// A stream's idle coroutines (boxed, so moving one between the cache and the slab moves a
/// pointer), by stack size class, on top of its stack cache: creating a ULT
/// takes an idle coroutine when one of its class is there (no stack set-up), a finished ULT's
/// coroutine goes back here.
pub(crate) struct CoroCache {
    // Boxed on purpose: a coroutine moves between this cache and the stream's slab on every ULT
    // creation and finish, and a box moves as one pointer.
    #[allow(clippy::vec_box)]
    idle: Vec<(usize, bool, Vec<Box<Coro>>)>,
    stacks: StackCache,
    parent: Parent,
}

/// Idle coroutines kept per class (as many as stacks: `ABT_MEM_MAX_NUM_STACKS`).
const CORO_CACHE_MAX: usize = 1024;

impl CoroCache {
    /// An empty cache for the stream whose scheduler stack is `parent`.
    pub(crate) fn new(parent: Parent) -> Self {
        CoroCache {
            idle: Vec::new(),
            stacks: StackCache::default(),
            parent,
        }
    }

    /// An idle coroutine for a ULT with this stack size and guard.
    #[inline]
    pub(crate) fn get(&mut self, size: usize, guard: bool) -> Result<Box<Coro>, Error> {
        let size = stack::class_size(size);
        if let Some((_, _, v)) = self
            .idle
            .iter_mut()
            .find(|(s, g, _)| *s == size && *g == guard)
        {
            if let Some(c) = v.pop() {
                return Ok(c);
            }
        }
        self.new_coro(size, guard)
    }

    #[inline(never)]
    fn new_coro(&mut self, size: usize, guard: bool) -> Result<Box<Coro>, Error> {
        Ok(Box::new(Coro::new(
            self.stacks.get(size, guard)?,
            &self.parent,
        )))
    }

    /// Takes back the coroutine of a finished ULT.
    #[inline]
    pub(crate) fn put(&mut self, c: Box<Coro>) {
        let (size, guard) = (c.size, c.guard);
        match self
            .idle
            .iter_mut()
            .find(|(s, g, _)| *s == size && *g == guard)
        {
            Some((_, _, v)) if v.len() < CORO_CACHE_MAX => v.push(c),
            Some(_) => {
                if let Some(s) = (*c).into_stack() {
                    self.stacks.put(s)
                }
            }
            None => self.idle.push((size, guard, vec![c])),
        }
    }
}

/// Installs, once per process, a panic hook that runs the previous hook on the stream's own stack
/// when the panic happens inside a ULT. The hook (message formatting, backtrace capture) is the
/// stack-hungry part of a panic: in a debug build it needs more than a 16 KiB ULT stack, while the
/// unwinding itself fits in well under 8 KiB. Unwinding still runs on the ULT's stack (it walks the
/// ULT's frames); only the hook moves. A hook the application sets later replaces this one (its
/// panics in ULTs then need the bigger stacks again).
pub(crate) fn install_panic_hook() {
    static ONCE: crate::sync::StdOnce = crate::sync::StdOnce::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let r = running_ptr();
            if r.is_null() {
                return prev(info);
            }
            /// The hook's arguments, read on the stream's stack of the same OS thread.
            struct OnParent<'a, 'b>(
                &'a std::panic::PanicHookInfo<'b>,
                &'a (dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync),
            );
            unsafe extern "C" fn run_hook(a: usize) {
                // SAFETY: `a` is the address of the `OnParent` below, alive across the call.
                let args = unsafe { &*(a as *const OnParent<'_, '_>) };
                (args.1)(args.0)
            }
            let args = OnParent(info, &*prev);
            // SAFETY: a non-null record is alive in the running coroutine's first frame, with the
            // context it points to (see `switch_out`). The stream's scheduler stack is suspended
            // in the `switch` that resumed this ULT (directly or through others), its stack
            // pointer in the parent slot: everything below it is free, and a stream's OS thread
            // stack has ample room for the hook. The hook does not unwind: a panic inside a panic
            // hook aborts the process.
            unsafe {
                let sp = ((*(*r).ctx).parent.get() - 256) & !15;
                switch::call_on_stack(&args as *const OnParent<'_, '_> as usize, run_hook, sp);
            }
        }));
    });
}

/// Switches from the running ULT back to its stream. `Err(NotInUlt)` outside a ULT.
#[inline]
pub(crate) fn switch_out(sw: Switch) -> Result<(), Error> {
    let r = running_ptr();
    if r.is_null() {
        return Err(Error::NotInUlt);
    }
    set_running(std::ptr::null());
    // SAFETY: RUNNING is non-null only while this OS thread runs inside the coroutine whose first
    // frame owns that record and the context it points to (set on entry and after every switch
    // back in, cleared before every switch out and on exit), so both are live and we are on that
    // coroutine's stack; its parent slot holds the stream's scheduler stack, suspended in the
    // resume that started this run of ULTs.
    let w = unsafe {
        let c = &*(*r).ctx;
        switch(encode(sw), c.sp.as_ptr(), c.parent.get())
    };
    set_running(r);
    if w == W_UNWIND {
        forced_unwind();
    }
    Ok(())
}

/// Whether the caller runs inside a ULT.
#[inline]
pub(crate) fn in_ult() -> bool {
    !running_ptr().is_null()
}

/// The running ULT's unit record (null outside a ULT).
#[inline(always)]
pub(crate) fn current_ptr() -> *const UnitInner {
    let r = running_ptr();
    if r.is_null() {
        return std::ptr::null();
    }
    // SAFETY: as in `switch_out`: a non-null record is alive in the running coroutine's frame.
    unsafe { (*r).unit }
}

/// A counted handle to the running ULT, if any.
pub(crate) fn current_unit() -> Option<Unit> {
    let p = current_ptr();
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` came from `Arc::as_ptr` of the `Unit` owned by the running coroutine's frame,
    // which outlives this call; bumping the count before `from_raw` makes the new Arc an extra
    // owner, so the frame's Arc is untouched.
    unsafe {
        crate::sync::StdArc::increment_strong_count(p);
        Some(Unit(crate::sync::StdArc::from_raw(p)))
    }
}

/// The running ULT as a [`Unit`] that *takes over* the reference its stream holds while it
/// runs, with no count update. The stream gives that reference up (forgets it) when the ULT
/// switches out with [`Switch::Suspend`]; the caller must either keep or drop the result and then
/// switch out with `Suspend` (handing it to a waiter list saves a locked increment here and a
/// locked decrement in the stream on every wait), or forget it (`std::mem::forget`) and keep
/// running.
#[inline]
pub(crate) fn take_stream_ref() -> Option<Unit> {
    let p = current_ptr();
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` came from `Arc::as_ptr` of the running unit (see `current_unit`). Every
    // resume of a ULT goes through `StreamLocal::resume`, which holds a counted `Unit` for it
    // until the ULT switches out; on `Switch::Suspend` it forgets that `Unit` instead of dropping
    // it, so the count it stood for belongs to the value made here. On every other path the
    // caller forgets this value (see the function docs), so exactly one of the two is dropped.
    Some(Unit(unsafe { crate::sync::StdArc::from_raw(p) }))
}

/// Runs `f` on the running ULT's data without touching its reference count.
#[inline]
pub(crate) fn with_current<R>(f: impl FnOnce(&UnitInner) -> R) -> Option<R> {
    let p = current_ptr();
    if p.is_null() {
        return None;
    }
    // SAFETY: as in `current_unit`: the running coroutine's frame owns an Arc to `*p`.
    Some(f(unsafe { &*p }))
}
