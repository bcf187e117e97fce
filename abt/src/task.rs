//! Tasklets (`ABT_task`): stackless work units that run to completion on the scheduler's stack.

use crate::error::Result;
use crate::pool::Pool;
use crate::sync::{lock, StdArc};
use crate::unit::{Unit, UnitInner, Waiter};

/// A handle to a tasklet (`ABT_task`). A tasklet cannot yield or suspend (`Error::InTasklet`);
/// ULT primitives it blocks on block its whole stream, so keep them out of tasklets.
#[doc(alias = "ABT_task")]
#[derive(Clone)]
pub struct Task {
    u: StdArc<UnitInner>,
}

impl Task {
    /// Creates a tasklet running `f` in `pool` (`ABT_task_create`).
    #[doc(alias = "ABT_task_create")]
    pub fn create(pool: &StdArc<dyn Pool>, f: impl FnOnce() + Send + 'static) -> Task {
        let u = crate::unit::new_unit(None, true, 0, false, pool, Box::new(f));
        pool.push(Unit(u.clone()));
        Task { u }
    }
    /// Process-wide id.
    pub fn id(&self) -> u64 {
        self.u.id
    }
    /// Waits for the tasklet to finish (`ABT_task_join`); a panic comes back as an error.
    #[doc(alias = "ABT_task_join")]
    pub fn join(&self) -> Result<()> {
        if let Some(r) = self.u.outcome() {
            return r;
        }
        loop {
            let w = Waiter::prepare();
            let h = w.handle();
            {
                let mut j = lock(&self.u.join);
                if let Some(r) = &j.result {
                    let r = r.clone();
                    drop(j);
                    w.cancel();
                    return r;
                }
                j.waiters.push(w);
            }
            h.wait();
        }
    }
    /// Joins and releases the tasklet (`ABT_task_free`).
    #[doc(alias = "ABT_task_free")]
    pub fn free(self) -> Result<()> {
        self.join()
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        crate::unit::recycle_from_handle(&self.u);
    }
}
