//! Context switching: the only `unsafe` of the crate besides the stack mappings and the overflow
//! handler next to it.
//!
//! We switch with `corosensei` 0.3 (measured ≈ 5 ns a switch on this machine, against 27–89 ns for
//! `context`, `generator` and `may`; ANCHORS.md): a maintained crate with hand-written switch code
//! per architecture, unwinding support, and a pluggable `Stack` trait, so our own stacks (guard page,
//! arena, per-stream cache) plug in. A corosensei coroutine is `!Send`: its stack holds frames that
//! may refer to the OS thread's thread-locals. That is why **a started ULT never changes stream**:
//! the coroutine is created on the stream that first runs the ULT and stays in that stream's slab;
//! only units that have not started travel between streams (see `pool`).

mod overflow;
mod stack;

pub(crate) use overflow::{ensure_altstack, install as install_overflow_handler, StackInfo};
use stack::StackCache;
pub(crate) use stack::UltStack;
pub use stack::{default_stack_size, DEFAULT_STACK_SIZE};

use crate::error::Error;
use crate::unit::{Unit, UnitInner};
use corosensei::{Coroutine, CoroutineResult, Yielder};
use std::cell::Cell;

/// Why a ULT handed control back to its stream.
pub(crate) enum Switch {
    /// Back into its pool, runnable.
    Yield,
    /// Suspended (its state is already SUSPENDED); someone will resume it. The ULT took over
    /// the reference its stream holds for it ([`take_stream_ref`]) and handed it to whoever will
    /// wake it (or dropped it), so the stream forgets its copy instead of dropping it.
    Suspend,
    /// Back into its pool, and run this (already claimed) unit next.
    /// Boxed so the whole enum is one pointer-sized word (the box's niche holds the other
    /// variants): every switch passes it through corosensei, and `yield_to` is the rare one.
    YieldTo(Box<(Unit, crate::state::Claim)>),
    /// The ULT's body returned (its result is already recorded); the coroutine is idle, ready to
    /// run another ULT's body on the same stack ([`CoroCache`]).
    Done,
}

type Y = Yielder<(), Switch>;

/// What this OS thread knows about the ULT it runs: one record in the coroutine's first frame,
/// published through one thread-local pointer (one write to switch in, one to switch out).
pub(crate) struct Running {
    y: *const Y,
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
    /// The ULT's body returned (its result is already recorded).
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

/// A coroutine that runs ULT bodies one after the other on one stack: after a body returns it
/// switches out with [`Switch::Done`] and waits for the next [`Job`], so a stream reuses idle
/// coroutines (stack and initial frame) instead of building one per ULT. `!Send`: lives in its
/// home stream's slab while it runs a ULT, in its stream's [`CoroCache`] while idle.
pub(crate) struct Coro {
    co: Coroutine<(), Switch, (), UltStack>,
    /// Its stack's size class and guard, for the cache.
    size: usize,
    guard: bool,
}

impl Coro {
    /// Builds an idle coroutine on `stack`.
    pub(crate) fn new(stack: UltStack) -> Coro {
        let (guard_lo, guard_hi) = stack.guard_range();
        let (size, guard) = (stack.size(), stack.guarded());
        let co = Coroutine::with_stack(stack, move |y: &Y, ()| {
            while let Some(Job { unit, body }) = NEXT_JOB.with(Cell::take) {
                {
                    // `running` and `unit` live in this block until the body returns, which is
                    // what makes the raw pointers published below valid while published.
                    let running = Running {
                        y,
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
                y.suspend(Switch::Done);
            }
        });
        Coro { co, size, guard }
    }

    /// Gives an idle coroutine its next ULT; the next `resume` on this thread starts it (the
    /// caller resumes it before any other coroutine).
    #[inline]
    pub(crate) fn set_job(&self, job: Job) {
        NEXT_JOB.with(|c| c.set(Some(job)));
    }

    /// Runs the ULT until it switches out or finishes.
    #[inline]
    pub(crate) fn resume(&mut self) -> Step {
        match self.co.resume(()) {
            CoroutineResult::Yield(s) => Step::Switched(s),
            CoroutineResult::Return(()) => Step::Finished,
        }
    }

    /// Ends an idle coroutine (no next job, so its loop returns) and gives its stack back.
    fn into_stack(mut self) -> UltStack {
        drop(NEXT_JOB.with(Cell::take));
        if !self.co.done() {
            let _ = self.resume();
        }
        self.co.into_stack()
    }
}

/// A stream's idle coroutines (boxed, so moving one between the cache and the slab moves a
/// pointer), by stack size class, on top of its stack cache: creating a ULT
/// takes an idle coroutine when one of its class is there (no stack set-up), a finished ULT's
/// coroutine goes back here.
#[derive(Default)]
pub(crate) struct CoroCache {
    // Boxed on purpose: a coroutine moves between this cache and the stream's slab on every ULT
    // creation and finish, and a box moves as one pointer.
    #[allow(clippy::vec_box)]
    idle: Vec<(usize, bool, Vec<Box<Coro>>)>,
    stacks: StackCache,
}

/// Idle coroutines kept per class (as many as stacks: `ABT_MEM_MAX_NUM_STACKS`).
const CORO_CACHE_MAX: usize = 1024;

impl CoroCache {
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
        Ok(Box::new(Coro::new(self.stacks.get(size, guard)?)))
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
            Some(_) => self.stacks.put((*c).into_stack()),
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
            /// The hook's arguments, moved to the parent stack of the same OS thread.
            struct OnParent<'a, 'b>(
                &'a std::panic::PanicHookInfo<'b>,
                &'a (dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync),
            );
            // SAFETY: `on_parent_stack` runs the closure on this same OS thread (on the stack of
            // the stream that resumed the ULT) and returns before the ULT continues; its `Send`
            // bound only keeps references to the Yielder from reaching the parent, and this
            // carries none.
            unsafe impl Send for OnParent<'_, '_> {}
            let args = OnParent(info, &*prev);
            // SAFETY: as in `switch_out`: a non-null record is alive in the running coroutine's
            // first frame, with the Yielder it points to, and we are on that coroutine's stack.
            let y = unsafe { &*(*r).y };
            y.on_parent_stack(move || {
                let args = args;
                (args.1)(args.0)
            });
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
    // frame owns that record and the Yielder it points to (set on entry and after every switch
    // back in, cleared before every switch out and on exit), so both are live and we are on that
    // coroutine's stack, which is what `suspend` requires.
    unsafe { &*(*r).y }.suspend(sw);
    set_running(r);
    Ok(())
}

/// Whether the caller runs inside a ULT.
#[inline]
pub(crate) fn in_ult() -> bool {
    !running_ptr().is_null()
}

#[inline(always)]
fn current_ptr() -> *const UnitInner {
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
