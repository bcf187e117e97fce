//! Tasklets (`ABT_task`): stackless work units that run to completion on the scheduler's stack.

use crate::error::Result;
use crate::pool::Pool;
use crate::sync::StdArc;
use crate::unit::Handle;

/// A handle to a tasklet (`ABT_task`). A tasklet cannot yield or suspend (`Error::InTasklet`);
/// ULT primitives it blocks on block its whole stream, so keep them out of tasklets.
#[doc(alias = "ABT_task")]
#[derive(Clone)]
pub struct Task {
    u: Handle,
}

impl Task {
    /// Creates a tasklet running `f` in `pool` (`ABT_task_create`).
    #[doc(alias = "ABT_task_create")]
    pub fn create(pool: &StdArc<dyn Pool>, f: impl FnOnce() + Send + 'static) -> Task {
        let u = crate::unit::spawn(pool, None, true, 0, false, Box::new(f));
        Task { u: Handle::new(u) }
    }
    /// Process-wide id.
    pub fn id(&self) -> u64 {
        self.u.id
    }
    /// Waits for the tasklet to finish (`ABT_task_join`); a panic comes back as an error.
    #[doc(alias = "ABT_task_join")]
    pub fn join(&self) -> Result<()> {
        self.u.join_wait()
    }
    /// Joins and releases the tasklet (`ABT_task_free`).
    #[doc(alias = "ABT_task_free")]
    pub fn free(self) -> Result<()> {
        self.join()
    }
}
