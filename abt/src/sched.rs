//! Schedulers (`ABT_sched`): the `Scheduler` trait mirroring `ABT_sched_def`, typed configuration
//! (`ABT_sched_config`), the context a scheduler's `run` works through, and two built-ins.
//!
//! A scheduler's `run` loops: pop a unit from one of its pools, `ctx.run_unit(unit)`, and every
//! `event_freq` units (Argobots' default 50; DAOS passes 512) call `ctx.has_to_stop()` — without
//! that check a stop or join request is never seen — then `ctx.check_events()` (due sleepers,
//! units handed back to this stream). When nothing is runnable it calls `ctx.idle()`, which parks
//! the OS thread if every pool is `FifoWait` and spins (yielding the CPU) otherwise.

use crate::error::{Error, Result};
use crate::pool::{Pool, PoolKind, RingPool};
use crate::sync::StdArc;
use crate::unit::Unit;
use crate::xstream::StreamLocal;
use std::any::Any;
use std::marker::PhantomData;

/// Argobots' default event frequency (`ABT_sched_config_var_end` defaults).
pub const DEFAULT_EVENT_FREQ: u32 = 50;

/// A typed scheduler configuration variable (`ABT_sched_config_var`).
#[doc(alias = "ABT_sched_config_var")]
pub struct SchedConfigVar<T> {
    /// The variable's name; two variables with one name are one variable.
    pub name: &'static str,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for SchedConfigVar<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SchedConfigVar<T> {}

impl<T> SchedConfigVar<T> {
    /// Declares a variable of type `T`.
    pub const fn new(name: &'static str) -> Self {
        SchedConfigVar {
            name,
            _t: PhantomData,
        }
    }
}

/// How many units between two stop / event checks (`ABT_sched_config_var_set_freq`... in spirit:
/// Argobots' `ABT_sched_basic_freq`).
#[doc(alias = "ABT_sched_basic_freq")]
pub const EVENT_FREQ: SchedConfigVar<u32> = SchedConfigVar::new("event_freq");

/// A scheduler configuration (`ABT_sched_config_create`): typed values keyed by variable.
#[doc(alias = "ABT_sched_config")]
#[derive(Default)]
pub struct SchedConfig {
    vals: Vec<(&'static str, Box<dyn Any + Send + Sync>)>,
}

impl SchedConfig {
    /// An empty configuration (`ABT_sched_config_create` with only `ABT_sched_config_var_end`).
    #[doc(alias = "ABT_sched_config_create")]
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets a variable (the var/value pairs of `ABT_sched_config_create`).
    pub fn set<T: Any + Send + Sync>(mut self, var: SchedConfigVar<T>, v: T) -> Self {
        self.vals.retain(|(n, _)| *n != var.name);
        self.vals.push((var.name, Box::new(v)));
        self
    }
    /// Reads a variable (`ABT_sched_config_read`): `Ok(None)` if unset, an error if it was set
    /// with another type.
    #[doc(alias = "ABT_sched_config_read")]
    pub fn read<T: Any + Clone>(&self, var: SchedConfigVar<T>) -> Result<Option<T>> {
        match self.vals.iter().find(|(n, _)| *n == var.name) {
            None => Ok(None),
            Some((_, v)) => v
                .downcast_ref::<T>()
                .cloned()
                .map(Some)
                .ok_or(Error::SchedConfig(var.name)),
        }
    }
}

/// A scheduler definition (`ABT_sched_def`): `init` once with the pools and configuration, `run`
/// on the stream until it decides to stop, `free` after.
#[doc(alias = "ABT_sched_def")]
pub trait Scheduler: Send + 'static {
    /// Reads the configuration and checks the pools (`ABT_sched_def::init`).
    fn init(&mut self, pools: &[StdArc<dyn Pool>], config: &SchedConfig) -> Result<()> {
        let _ = (pools, config);
        Ok(())
    }
    /// The scheduling loop (`ABT_sched_def::run`). Returns when `ctx.has_to_stop()` said so.
    fn run(&mut self, ctx: &SchedContext<'_>);
    /// Releases what `init` made (`ABT_sched_def::free`).
    fn free(&mut self) {}
}

/// A scheduler bound to its pools (`ABT_sched`), ready to hand to a stream.
#[doc(alias = "ABT_sched")]
pub struct Sched {
    pub(crate) def: Box<dyn Scheduler>,
    pub(crate) pools: Vec<StdArc<dyn Pool>>,
    pub(crate) event_freq: u32,
    /// Made by [`Sched::create_basic`]: a built-in loop, which counts units in the stream (so
    /// ULTs may switch directly to the next one between its event checks).
    pub(crate) builtin: bool,
}

/// The predefined schedulers (`ABT_sched_predef`).
#[doc(alias = "ABT_sched_predef")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedKind {
    /// Runs one unit from each pool in turn (`ABT_SCHED_BASIC`).
    #[doc(alias = "ABT_SCHED_BASIC")]
    Basic,
    /// Always runs from the first non-empty pool: pool 0 has the highest priority (`ABT_SCHED_PRIO`).
    #[doc(alias = "ABT_SCHED_PRIO")]
    Prio,
}

impl Sched {
    /// Binds `def` to `pools` and calls its `init` (`ABT_sched_create`).
    #[doc(alias = "ABT_sched_create")]
    pub fn create(
        mut def: impl Scheduler,
        pools: Vec<StdArc<dyn Pool>>,
        config: SchedConfig,
    ) -> Result<Sched> {
        if pools.is_empty() {
            return Err(Error::InvalidSched);
        }
        let event_freq = config
            .read(EVENT_FREQ)?
            .unwrap_or(DEFAULT_EVENT_FREQ)
            .max(1);
        def.init(&pools, &config)?;
        Ok(Sched {
            def: Box::new(def),
            pools,
            event_freq,
            builtin: false,
        })
    }

    /// A predefined scheduler over `pools` (`ABT_sched_create_basic`).
    #[doc(alias = "ABT_sched_create_basic")]
    pub fn create_basic(
        kind: SchedKind,
        pools: Vec<StdArc<dyn Pool>>,
        config: SchedConfig,
    ) -> Result<Sched> {
        let mut s = match kind {
            SchedKind::Basic => Sched::create(BasicSched, pools, config)?,
            SchedKind::Prio => Sched::create(PrioSched, pools, config)?,
        };
        s.builtin = true;
        Ok(s)
    }

    /// The pools (`ABT_sched_get_pools`).
    #[doc(alias = "ABT_sched_get_pools")]
    pub fn pools(&self) -> &[StdArc<dyn Pool>] {
        &self.pools
    }
}

/// What a running scheduler works through: its pools and its stream.
pub struct SchedContext<'a> {
    pub(crate) local: &'a StreamLocal,
    pub(crate) pools: &'a [StdArc<dyn Pool>],
    /// The same pools as the built-in schedulers' loops pop them (see [`PoolRef`]).
    pub(crate) pool_refs: &'a [PoolRef<'a>],
    pub(crate) event_freq: u32,
    pub(crate) all_wait: bool,
}

impl SchedContext<'_> {
    /// The scheduler's pools, in the order given at creation (`ABT_sched_get_pools`).
    pub fn pools(&self) -> &[StdArc<dyn Pool>] {
        self.pools
    }
    /// Units between two `has_to_stop` checks.
    pub fn event_freq(&self) -> u32 {
        self.event_freq
    }
    /// The stream's rank.
    pub fn rank(&self) -> usize {
        self.local.shared.rank
    }
    /// Runs one unit popped from a pool until it yields, blocks or finishes
    /// (`ABT_xstream_run_unit`). A stale entry (a unit `yield_to` already ran) is dropped.
    #[doc(alias = "ABT_xstream_run_unit")]
    #[inline]
    pub fn run_unit(&self, unit: Unit) {
        self.local.run_unit(unit)
    }
    /// Whether the scheduler must return now (`ABT_sched_has_to_stop`): a stop was requested, or a
    /// join was and no work is left (pools, sleepers, suspended ULTs of this stream).
    #[doc(alias = "ABT_sched_has_to_stop")]
    pub fn has_to_stop(&self) -> bool {
        self.local.has_to_stop(self.pools)
    }
    /// Handles stream events (`ABT_xstream_check_events`): wakes due sleepers and runs units handed
    /// back to this stream.
    #[doc(alias = "ABT_xstream_check_events")]
    pub fn check_events(&self) {
        self.local.check_events()
    }
    /// Nothing was runnable: park (all pools `FifoWait`) or yield the CPU, until work may be there.
    pub fn idle(&self) {
        self.local.idle(self.pools, self.all_wait)
    }
}

/// A scheduler's pool as the built-in loops pop it: the crate's own [`RingPool`] directly, with
/// the stream's uid passed in (no virtual call, no thread-local read), any other pool through the
/// trait (a plain reference: no `Arc` header offset per pop).
#[derive(Clone, Copy)]
pub(crate) enum PoolRef<'a> {
    Ring(&'a RingPool),
    Dyn(&'a dyn Pool),
}

impl PoolRef<'_> {
    #[inline(always)]
    fn pop(self, me: usize) -> Option<Unit> {
        match self {
            PoolRef::Ring(r) => r.pop_from(me),
            PoolRef::Dyn(p) => p.pop(),
        }
    }
}

/// The loop of both built-in schedulers: `one_per_round` false is `ABT_SCHED_PRIO` (back to the
/// first pool after each unit). The count of units since the last event check lives in the
/// stream, where a ULT switching directly to the next ULT adds its switch (`xstream`).
fn builtin_run(ctx: &SchedContext<'_>, one_per_round: bool) {
    let freq = ctx.event_freq();
    let local = ctx.local;
    let me = local.uid;
    let n = local.sched_count();
    loop {
        let mut ran = false;
        for p in ctx.pool_refs {
            if let Some(u) = p.pop(me) {
                n.set(n.get() + 1);
                ctx.run_unit(u);
                local.run_handoff();
                ran = true;
                if !one_per_round {
                    break;
                }
            }
        }
        if !ran || n.get() >= freq {
            n.set(0);
            if ctx.has_to_stop() {
                break;
            }
            ctx.check_events();
            local.run_handoff();
            if !ran {
                ctx.idle();
            }
        }
    }
}

/// `ABT_SCHED_BASIC`: one unit from each pool per round.
pub struct BasicSched;

impl Scheduler for BasicSched {
    fn run(&mut self, ctx: &SchedContext<'_>) {
        builtin_run(ctx, true)
    }
}

/// `ABT_SCHED_PRIO`: always the first non-empty pool.
pub struct PrioSched;

impl Scheduler for PrioSched {
    fn run(&mut self, ctx: &SchedContext<'_>) {
        builtin_run(ctx, false)
    }
}

pub(crate) fn all_wait(pools: &[StdArc<dyn Pool>]) -> bool {
    pools.iter().all(|p| p.kind() == PoolKind::FifoWait)
}
