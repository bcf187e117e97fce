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
pub use stack::{default_stack_size, DEFAULT_STACK_SIZE};
pub(crate) use stack::{StackCache, UltStack};

use crate::error::Error;
use crate::unit::{Unit, UnitInner};
use corosensei::{Coroutine, CoroutineResult, Yielder};
use overflow::CURRENT_STACK;
use std::cell::Cell;

/// Why a ULT handed control back to its stream.
pub(crate) enum Switch {
    /// Back into its pool, runnable.
    Yield,
    /// Suspended (its state is already SUSPENDING); someone will resume it.
    Suspend,
    /// Back into its pool, and run this (already claimed) unit next.
    YieldTo(Unit),
}

type Y = Yielder<(), Switch>;

thread_local! {
    static YIELDER: Cell<*const Y> = const { Cell::new(std::ptr::null()) };
    static CURRENT_UNIT: Cell<*const UnitInner> = const { Cell::new(std::ptr::null()) };
}

/// What `Coro::resume` came back with.
pub(crate) enum Step {
    /// The ULT switched out.
    Switched(Switch),
    /// The ULT's body returned (its result is already recorded).
    Finished,
}

/// One ULT's coroutine. `!Send`: lives in its home stream's slab.
pub(crate) struct Coro {
    co: Coroutine<(), Switch, (), UltStack>,
}

#[inline(always)]
fn set_current(y: *const Y, u: *const UnitInner, s: *const StackInfo) {
    YIELDER.with(|c| c.set(y));
    CURRENT_UNIT.with(|c| c.set(u));
    CURRENT_STACK.with(|c| c.set(s));
}

impl Coro {
    /// Builds the coroutine for `unit` on `stack`; `body` runs on its first resume.
    pub(crate) fn new(stack: UltStack, unit: Unit, body: Box<dyn FnOnce() + Send>) -> Coro {
        let (guard_lo, guard_hi) = stack.guard_range();
        let info = StackInfo {
            guard_lo,
            guard_hi,
            size: stack.size(),
            id: unit.0.id,
            name: unit.0.name.clone(),
        };
        let co = Coroutine::with_stack(stack, move |y: &Y, ()| {
            // `info` and `unit` live in this frame until the body returns, which is what makes
            // the raw pointers published below valid for as long as they are published.
            let info = info;
            let unit = unit;
            set_current(y, crate::sync::StdArc::as_ptr(&unit.0), &info);
            crate::unit::run_ult_body(&unit, body);
            set_current(std::ptr::null(), std::ptr::null(), std::ptr::null());
        });
        Coro { co }
    }

    /// Runs the ULT until it switches out or finishes.
    #[inline]
    pub(crate) fn resume(&mut self) -> Step {
        match self.co.resume(()) {
            CoroutineResult::Yield(s) => Step::Switched(s),
            CoroutineResult::Return(()) => Step::Finished,
        }
    }

    /// The stack back, for reuse. Only call after `Step::Finished`.
    pub(crate) fn into_stack(self) -> UltStack {
        self.co.into_stack()
    }
}

/// Switches from the running ULT back to its stream. `Err(NotInUlt)` outside a ULT.
#[inline]
pub(crate) fn switch_out(sw: Switch) -> Result<(), Error> {
    let y = YIELDER.with(|c| c.get());
    if y.is_null() {
        return Err(Error::NotInUlt);
    }
    let u = CURRENT_UNIT.with(|c| c.get());
    let s = CURRENT_STACK.with(|c| c.get());
    set_current(std::ptr::null(), std::ptr::null(), std::ptr::null());
    // SAFETY: YIELDER is non-null only while this OS thread runs inside the coroutine whose
    // closure frame owns that Yielder (set on entry, cleared before every switch out and on exit),
    // so the reference is live and we are on its stack, which is what `suspend` requires.
    unsafe { &*y }.suspend(sw);
    set_current(y, u, s);
    Ok(())
}

/// Whether the caller runs inside a ULT.
#[inline]
pub(crate) fn in_ult() -> bool {
    !YIELDER.with(|c| c.get()).is_null()
}

/// A counted handle to the running ULT, if any.
pub(crate) fn current_unit() -> Option<Unit> {
    let p = CURRENT_UNIT.with(|c| c.get());
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

/// Runs `f` on the running ULT's data without touching its reference count.
#[inline]
pub(crate) fn with_current<R>(f: impl FnOnce(&UnitInner) -> R) -> Option<R> {
    let p = CURRENT_UNIT.with(|c| c.get());
    if p.is_null() {
        return None;
    }
    // SAFETY: as in `current_unit`: the running coroutine's frame owns an Arc to `*p`.
    Some(f(unsafe { &*p }))
}
