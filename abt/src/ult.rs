//! ULTs (`ABT_thread`): stackful work units that can yield, suspend and block on ULT primitives.

use crate::context::{self, default_stack_size, Switch};
use crate::error::{Error, Result};
use crate::pool::Pool;
use crate::state::{self, Resume};
use crate::sync::{Ordering, StdArc};
use crate::unit::{Handle, Unit};
use std::time::{Duration, Instant};

pub(crate) use crate::xstream::in_tasklet;

/// ULT attributes (`ABT_thread_attr`).
#[doc(alias = "ABT_thread_attr")]
#[derive(Debug, Clone)]
pub struct ThreadAttr {
    stack_size: usize,
    guard: bool,
    name: Option<StdArc<str>>,
}

impl Default for ThreadAttr {
    fn default() -> Self {
        ThreadAttr {
            stack_size: default_stack_size(),
            guard: true,
            name: None,
        }
    }
}

impl ThreadAttr {
    /// Default attributes: [`default_stack_size`] (16 KiB unless `ABT_THREAD_STACKSIZE` says
    /// otherwise) with a guard page, no name (`ABT_thread_attr_create`).
    #[doc(alias = "ABT_thread_attr_create")]
    pub fn new() -> Self {
        Self::default()
    }
    /// Stack size in bytes, rounded up to whole pages (`ABT_thread_attr_set_stacksize`).
    #[doc(alias = "ABT_thread_attr_set_stacksize")]
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = bytes;
        self
    }
    /// Whether the stack gets a guard page (default yes). A guarded stack is two kernel mappings;
    /// with `vm.max_map_count` at 65,530 that caps live guarded ULTs near 32 k. Unguarded stacks
    /// come from a shared arena (one mapping per 64 stacks) and make 100 k live ULTs possible, at
    /// the price of no overflow detection: an overflow then corrupts the neighbouring stack.
    pub fn guard(mut self, guard: bool) -> Self {
        self.guard = guard;
        self
    }
    /// A name, shown in the `abt.ult` span and in the stack-overflow message.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(StdArc::from(name));
        self
    }
}

/// A handle to a ULT (`ABT_thread`). Dropping it detaches the ULT; `join` or `free` waits for it.
#[doc(alias = "ABT_thread")]
#[derive(Clone)]
pub struct Thread {
    pub(crate) u: Handle,
}

impl std::fmt::Debug for Thread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Thread")
            .field("id", &self.u.id)
            .field("name", &self.u.name)
            .finish()
    }
}

impl Thread {
    /// Creates a ULT running `f` in `pool` with default attributes (`ABT_thread_create`).
    #[doc(alias = "ABT_thread_create")]
    #[inline]
    pub fn create(pool: &StdArc<dyn Pool>, f: impl FnOnce() + Send + 'static) -> Thread {
        Self::create_with(pool, &ThreadAttr::default(), f)
    }

    /// Creates a ULT with attributes (`ABT_thread_create` with an `ABT_thread_attr`). The stack is
    /// mapped when the ULT first runs, on the stream that runs it.
    pub fn create_with(
        pool: &StdArc<dyn Pool>,
        attr: &ThreadAttr,
        f: impl FnOnce() + Send + 'static,
    ) -> Thread {
        let u = crate::unit::spawn(
            pool,
            attr.name.clone(),
            false,
            attr.stack_size,
            attr.guard,
            Box::new(f),
        );
        Thread { u: Handle::new(u) }
    }

    /// The running ULT (`ABT_self_get_thread`, `ABT_thread_self`); `Error::NotInUlt` elsewhere.
    #[doc(alias = "ABT_self_get_thread")]
    #[doc(alias = "ABT_thread_self")]
    pub fn current() -> Result<Thread> {
        if in_tasklet() {
            return Err(Error::InTasklet);
        }
        context::current_unit()
            .map(|u| Thread {
                u: Handle::new(u.0),
            })
            .ok_or(Error::NotInUlt)
    }

    /// Process-wide id (`ABT_thread_get_id`).
    #[doc(alias = "ABT_thread_get_id")]
    pub fn id(&self) -> u64 {
        self.u.id
    }
    /// Its name, if given.
    pub fn name(&self) -> Option<&str> {
        self.u.name.as_deref()
    }
    /// How many times a stream has switched into it. Constant while it waits: that is what
    /// "blocks the ULT, not the stream" means.
    pub fn dispatch_count(&self) -> u64 {
        self.u.dispatches.load(Ordering::Relaxed)
    }
    /// Whether its body has returned.
    pub fn is_finished(&self) -> bool {
        self.u.is_done()
    }
    /// Whether it is suspended (waiting for a resume, an eventual, a timer…).
    pub fn is_suspended(&self) -> bool {
        self.u.state.get() == state::SUSPENDED
    }

    /// Waits for the ULT to finish (`ABT_thread_join`): a ULT caller is suspended, an OS thread
    /// blocks. A panic inside the ULT comes back as `Error::Panicked`.
    #[doc(alias = "ABT_thread_join")]
    pub fn join(&self) -> Result<()> {
        if context::with_current(|c| std::ptr::eq(c, &*self.u)).unwrap_or(false) {
            return Err(Error::JoinSelf);
        }
        self.u.join_wait()
    }

    /// Joins and releases the ULT (`ABT_thread_free`).
    #[doc(alias = "ABT_thread_free")]
    pub fn free(self) -> Result<()> {
        self.join()
    }

    /// Resumes a ULT suspended by [`suspend`] (`ABT_thread_resume`). `Error::NotSuspended` if it is
    /// running, ready, finished, or blocked in a ULT primitive (only that primitive wakes it).
    #[doc(alias = "ABT_thread_resume")]
    pub fn resume(&self) -> Result<()> {
        // A ULT blocked in a mutex, eventual, join… is not "suspended" in this sense: waking it
        // here would be a spurious wake-up of that primitive.
        if !self.u.user_suspended.swap(false, Ordering::AcqRel) {
            return Err(Error::NotSuspended);
        }
        match self.u.state.resume() {
            Resume::Push => {
                Unit(self.u.arc().clone()).requeue();
                Ok(())
            }
            Resume::NotSuspended => Err(Error::NotSuspended),
        }
    }
}

fn check_ult() -> Result<()> {
    if in_tasklet() {
        return Err(Error::InTasklet);
    }
    if !context::in_ult() {
        return Err(Error::NotInUlt);
    }
    Ok(())
}

/// Yields the running ULT: back to its pool, the scheduler runs the next unit
/// (`ABT_thread_yield`, `ABT_self_yield`).
#[doc(alias = "ABT_thread_yield")]
#[doc(alias = "ABT_self_yield")]
#[inline]
pub fn yield_now() -> Result<()> {
    // Straight to the next ready ULT of this stream when its scheduler allows it.
    if crate::xstream::switch_next(false) {
        return Ok(());
    }
    // A tasklet never runs inside a ULT, so the tasklet check is only needed on the error path.
    match context::switch_out(Switch::Yield) {
        Err(Error::NotInUlt) if in_tasklet() => Err(Error::InTasklet),
        r => r,
    }
}

/// Yields to `target`, which runs next on this stream (`ABT_thread_yield_to`). The target must be
/// a ready ULT that has not started or started on this stream.
#[doc(alias = "ABT_thread_yield_to")]
pub fn yield_to(target: &Thread) -> Result<()> {
    check_ult()?;
    let me = context::with_current(|c| std::ptr::eq(c, &*target.u)).unwrap_or(false);
    if me {
        return yield_now();
    }
    if target.u.is_task {
        return Err(Error::InvalidYieldTarget);
    }
    let hid = target.u.home_id.load(Ordering::Relaxed);
    if hid != 0 && crate::xstream::with_current(|s| s.shared.uid) != Some(hid) {
        return Err(Error::InvalidYieldTarget);
    }
    let Some(claim) = target.u.state.begin_run() else {
        return Err(Error::InvalidYieldTarget);
    };
    context::switch_out(Switch::YieldTo(Box::new((
        Unit(target.u.arc().clone()),
        claim,
    ))))
}

/// Suspends the running ULT until someone calls [`Thread::resume`] on it (`ABT_self_suspend`).
#[doc(alias = "ABT_self_suspend")]
pub fn suspend() -> Result<()> {
    check_ult()?;
    if let Some(me) = context::take_stream_ref() {
        me.0.user_suspended.store(true, Ordering::Release);
        me.0.state.begin_suspend();
        // `Thread::resume` pushes a reference of its own: the stream's goes (the coroutine's
        // keeps the unit alive), and `Suspend` tells the stream it is gone.
        drop(me);
    }
    context::switch_out(Switch::Suspend)
}

/// Sleeps without spinning: the ULT is suspended and its stream's timer list resumes it when due
/// (argobots #29). Outside a ULT the OS thread sleeps. `Error::InTasklet` in a tasklet.
pub fn sleep(d: Duration) -> Result<()> {
    if in_tasklet() {
        return Err(Error::InTasklet);
    }
    // The timer list takes over the stream's reference (`Switch::Suspend` tells the stream).
    let Some(unit) = context::take_stream_ref() else {
        std::thread::sleep(d);
        return Ok(());
    };
    let at = Instant::now() + d;
    unit.0.state.begin_suspend();
    let mut unit = Some(unit);
    let queued = crate::xstream::with_current(|s| {
        if let Some(u) = unit.take() {
            s.add_timer(at, u)
        }
    });
    if queued.is_none() {
        // A ULT always runs on a stream; keep the state machine sound anyway: still running,
        // so the stream keeps its reference.
        if let Some(u) = unit {
            u.0.state.cancel_suspend();
            std::mem::forget(u);
        }
        std::thread::sleep(d);
        return Ok(());
    }
    context::switch_out(Switch::Suspend)
}
