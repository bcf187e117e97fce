//! Synchronization that blocks the ULT, not the stream (`ABT_mutex`, `ABT_cond`, `ABT_eventual`,
//! `ABT_future`, `ABT_barrier`). A waiting ULT is suspended, so its stream runs other units; an OS
//! thread outside any ULT (or a tasklet) that waits is blocked on a condition variable instead.

mod barrier;
mod cond;
mod eventual;
mod future;
mod mutex;

pub use barrier::Barrier;
pub use cond::Cond;
pub use eventual::Eventual;
pub use future::{Future, FutureCallback};
pub use mutex::{Mutex, MutexGuard};
