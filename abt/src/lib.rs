//! daos-rs user-level threading: Argobots' execution streams, pools, ULTs, tasklets, schedulers
//! and ULT synchronization, in Rust.
//!
//! The DAOS engine runs on Argobots: each execution stream (an OS thread) runs a scheduler over
//! FIFO/MPSC pools; the progress ULT loops on `crt_progress` and `ABT_thread_yield`; request
//! handlers block on eventuals while bulk data moves. This crate is that layer. It is the one layer
//! of daos-rs that owns OS threads; `sched` (the DAOS scheduler) stands on it, and it depends on no
//! other daos-rs crate. `docs/abt.md` explains how it works.
//!
//! | Argobots | here |
//! |---|---|
//! | `ABT_xstream_create[_with_rank]`, `_join`, `_free`, `_cancel` | [`Xstream`], [`XstreamHandle`] |
//! | primary ES (`ABT_init`) | [`Primary`]: runs on the caller inside `run` / `join` |
//! | `ABT_xstream_set_cpubind` / `hwloc_set_cpubind` | [`XstreamHandle::set_cpubind`] (`sched_setaffinity`); `hwloc` feature: `topo` |
//! | `ABT_pool_create_basic`, `ABT_pool_def` | [`pool::create_basic`], [`Pool`] ([`RingPool`], [`LockPool`]) |
//! | `ABT_sched_def`, `ABT_sched_create[_basic]`, `ABT_sched_config_create` | [`Scheduler`], [`Sched`], [`SchedConfig`] |
//! | `ABT_sched_has_to_stop`, `ABT_xstream_run_unit`, `ABT_xstream_check_events` | [`SchedContext`] |
//! | `ABT_thread_create`, `_join`, `_free`, `_resume`, `ABT_thread_attr_set_stacksize` | [`Thread`], [`ThreadAttr`] |
//! | `ABT_thread_yield`, `_yield_to`, `ABT_self_suspend` | [`yield_now`], [`yield_to`], [`suspend`], [`sleep`] |
//! | `ABT_task_create` | [`Task`] |
//! | `ABT_key_create`, `ABT_key_set/get` | [`Key`] |
//! | `ABT_mutex`, `ABT_cond`, `ABT_eventual`, `ABT_future`, `ABT_barrier` | [`Mutex`], [`Cond`], [`Eventual`], [`Future`], [`Barrier`] |
//! | `ABT_ERR_*` | [`Error::code`] |
//!
//! **A started ULT never changes stream.** Its coroutine (our own stack switch, `!Send`) stays in the slab of
//! the stream that first ran it; multi-consumer pools only ever hand out units that have not
//! started, and a started ULT that yields or is resumed goes back to its own stream.
//!
//! **Blocking.** ULT primitives suspend the calling ULT, so its stream runs other work. Called
//! outside any ULT, [`Mutex`], [`Eventual`], [`Future`], [`Barrier`] and joins block the OS thread;
//! [`yield_now`], [`suspend`] and [`Thread::current`] return [`Error::NotInUlt`].
//!
//! **Tracing.** Each time a ULT is switched in, it runs inside a `debug` span `abt.ult` with its
//! id, name and stream rank.

mod cell;
mod context;
mod error;
mod key;
pub mod pool;
mod sched;
mod state;
mod sync;
mod sync_ult;
mod sys;
mod task;
#[cfg(feature = "conformance")]
pub mod testing;
#[cfg(feature = "hwloc")]
pub mod topo;
mod ult;
mod unit;
mod xstream;

pub use context::{default_stack_size, DEFAULT_STACK_SIZE};
pub use error::{Error, Result};
pub use key::Key;
pub use pool::{Access, LockPool, Notify, Pool, PoolKind, RingPool};
pub use sched::{
    BasicSched, PrioSched, Sched, SchedConfig, SchedConfigVar, SchedContext, SchedKind, Scheduler,
    DEFAULT_EVENT_FREQ, EVENT_FREQ,
};
pub use sync_ult::{Barrier, Cond, Eventual, Future, FutureCallback, Mutex, MutexGuard};
pub use task::Task;
pub use ult::{sleep, suspend, yield_now, yield_to, Thread, ThreadAttr};
pub use unit::Unit;
pub use xstream::{self_rank, with_local, Primary, Xstream, XstreamBuilder, XstreamHandle};
