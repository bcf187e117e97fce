//! `Barrier` (`ABT_barrier`): N ULTs (or threads) wait until all have arrived; reusable.

use crate::sync::{spin as lock, SpinMutex as Mutex};
use crate::unit::Waiter;

struct Inner {
    arrived: usize,
    generation: u64,
    waiters: Vec<Waiter>,
}

/// A reusable barrier for `n` participants (`ABT_barrier`).
#[doc(alias = "ABT_barrier")]
pub struct Barrier {
    n: usize,
    inner: Mutex<Inner>,
}

impl Barrier {
    /// A barrier for `n` participants (`ABT_barrier_create`).
    #[doc(alias = "ABT_barrier_create")]
    pub fn new(n: usize) -> Self {
        Barrier {
            n: n.max(1),
            inner: Mutex::new(Inner {
                arrived: 0,
                generation: 0,
                waiters: Vec::new(),
            }),
        }
    }
    /// Waits until all `n` have called `wait` (`ABT_barrier_wait`). Returns true for the last
    /// arrival, which releases the others.
    #[doc(alias = "ABT_barrier_wait")]
    pub fn wait(&self) -> bool {
        let w = Waiter::prepare();
        let h = w.handle();
        {
            let mut g = lock(&self.inner);
            g.arrived += 1;
            if g.arrived == self.n {
                g.arrived = 0;
                g.generation += 1;
                let ws = std::mem::take(&mut g.waiters);
                drop(g);
                w.cancel();
                for x in ws {
                    x.wake();
                }
                return true;
            }
            g.waiters.push(w);
        }
        // Only the last arrival wakes waiters, so one wake means the barrier opened.
        h.wait();
        false
    }
}
