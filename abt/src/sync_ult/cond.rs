//! `Cond` (`ABT_cond`): a condition variable for ULTs, used with [`super::Mutex`].

use super::mutex::MutexGuard;
use crate::sync::{spin as lock, SpinMutex as StdLock};
use crate::unit::Waiter;
use std::collections::VecDeque;

/// A ULT condition variable (`ABT_cond`).
#[doc(alias = "ABT_cond")]
#[derive(Default)]
pub struct Cond {
    waiters: StdLock<VecDeque<Waiter>>,
}

impl Cond {
    /// A new condition (`ABT_cond_create`).
    #[doc(alias = "ABT_cond_create")]
    pub fn new() -> Self {
        Self::default()
    }
    /// Releases the guard's mutex, waits for a signal, re-locks (`ABT_cond_wait`). Spurious
    /// returns are possible: re-check the predicate.
    #[doc(alias = "ABT_cond_wait")]
    pub fn wait<'a>(&self, guard: MutexGuard<'a>) -> MutexGuard<'a> {
        let m = guard.mutex();
        let w = Waiter::prepare();
        let h = w.handle();
        lock(&self.waiters).push_back(w);
        // Registered before unlocking, so a signal sent right after the unlock finds us.
        drop(guard);
        h.wait();
        m.lock()
    }
    /// Wakes one waiter (`ABT_cond_signal`).
    #[doc(alias = "ABT_cond_signal")]
    pub fn signal(&self) {
        let w = lock(&self.waiters).pop_front();
        if let Some(w) = w {
            w.wake();
        }
    }
    /// Wakes all waiters (`ABT_cond_broadcast`).
    #[doc(alias = "ABT_cond_broadcast")]
    pub fn broadcast(&self) {
        let ws = std::mem::take(&mut *lock(&self.waiters));
        for w in ws {
            w.wake();
        }
    }
}
