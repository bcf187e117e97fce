//! `Eventual` (`ABT_eventual`): a value set once that waiters block on.

use crate::error::{Error, Result};
use crate::sync::{spin as lock, SpinMutex as Mutex};
use crate::unit::Waiter;

struct Inner<T> {
    value: Option<T>,
    /// The first waiter (the common case is one), moved out whole by `set`.
    first: Option<Waiter>,
    /// Any further waiters.
    more: Vec<Waiter>,
}

impl<T> Inner<T> {
    fn push(&mut self, w: Waiter) {
        if self.first.is_none() {
            self.first = Some(w);
        } else {
            self.more.push(w);
        }
    }
}

/// A one-shot value with waiters (`ABT_eventual`); `reset` makes it reusable.
#[doc(alias = "ABT_eventual")]
pub struct Eventual<T> {
    inner: Mutex<Inner<T>>,
}

impl<T: Clone> Default for Eventual<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Clone> Eventual<T> {
    /// An unset eventual (`ABT_eventual_create`; the value type replaces the byte count).
    #[doc(alias = "ABT_eventual_create")]
    pub fn new() -> Self {
        Eventual {
            inner: Mutex::new(Inner {
                value: None,
                first: None,
                more: Vec::new(),
            }),
        }
    }
    /// Waits until set and returns the value (`ABT_eventual_wait`).
    #[doc(alias = "ABT_eventual_wait")]
    pub fn wait(&self) -> T {
        loop {
            let h = {
                let mut g = lock(&self.inner);
                if let Some(v) = &g.value {
                    return v.clone();
                }
                // Prepared under the lock: a ULT is SUSPENDED before `set` can see it, so a
                // wake between here and the switch is not lost (see `state`).
                let w = Waiter::prepare();
                let h = w.handle();
                g.push(w);
                h
            };
            h.wait();
            // Woken by `set`; a `reset` racing in between sends us round again.
            if let Some(v) = &lock(&self.inner).value {
                return v.clone();
            }
        }
    }
    /// The value if set, without waiting (`ABT_eventual_test`).
    #[doc(alias = "ABT_eventual_test")]
    pub fn test(&self) -> Option<T> {
        lock(&self.inner).value.clone()
    }
    /// Sets the value and wakes every waiter (`ABT_eventual_set`).
    #[doc(alias = "ABT_eventual_set")]
    pub fn set(&self, v: T) -> Result<()> {
        let mut g = lock(&self.inner);
        if g.value.is_some() {
            return Err(Error::EventualAlreadySet);
        }
        g.value = Some(v);
        let first = g.first.take();
        if g.more.is_empty() {
            // The common case: at most one waiter, and no list to move and drop.
            drop(g);
            if let Some(w) = first {
                w.wake();
            }
            return Ok(());
        }
        let more = std::mem::take(&mut g.more);
        drop(g);
        if let Some(w) = first {
            w.wake();
        }
        for w in more {
            w.wake();
        }
        Ok(())
    }
    /// Clears the value (`ABT_eventual_reset`).
    #[doc(alias = "ABT_eventual_reset")]
    pub fn reset(&self) {
        lock(&self.inner).value = None;
    }
}

#[cfg(all(test, loom))]
mod tests {
    use super::*;
    use crate::sync::Arc;

    /// The ULT state machine around a real eventual: the waiter ULT on stream A has registered
    /// and may not have switched out yet (SUSPENDED) while stream B sets the eventual and a stray
    /// resume from A's side races it. Whichever wins, the ULT is pushed back into its pool exactly
    /// once and ends READY.
    #[test]
    fn loom_eventual_set_while_waiter_mid_suspend() {
        use crate::pool::{Access, LockPool, Pool, PoolKind};
        use crate::state::Resume;
        use crate::sync::StdArc;
        use crate::unit::{Unit, UnitInner, Waiter};
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(2);
        b.check(|| {
            let pool: StdArc<dyn Pool> = StdArc::new(LockPool::new(PoolKind::Fifo, Access::Mpsc));
            let u = StdArc::new(UnitInner::new(
                None,
                false,
                0,
                false,
                pool.clone(),
                Box::new(|| {}),
            ));
            let ev = Arc::new(Eventual::<u32>::new());
            assert!(u.state.begin_run().is_some());
            // Stream A, inside `Eventual::wait`: mark SUSPENDED, then register under the lock.
            u.state.begin_suspend();
            lock(&ev.inner).push(Waiter::Ult(u.clone()));
            let e2 = ev.clone();
            let setter = loom::thread::spawn(move || e2.set(1).unwrap());
            if u.state.resume() == Resume::Push {
                Unit(u.clone()).requeue();
            }
            setter.join().unwrap();
            assert_eq!(pool.len(), 1, "pushed back exactly once");
            assert_eq!(u.state.get(), crate::state::READY);
            assert_eq!(ev.test(), Some(1));
        });
    }

    /// The direct path of a wait (`xstream::StreamLocal::direct_next`): the waiter's own stream
    /// (uid 1), still on the waiter's stack after registering it, pops the next unit from the
    /// waiter's single-consumer pool while stream B sets the eventual and pushes the waiter back.
    /// Whichever comes first, the waiter is claimed (run again) exactly once: by that pop (it
    /// finds itself and runs on) or, when the pop found the pool empty and the waiter switched
    /// out, by the scheduler's next pop.
    #[test]
    fn loom_direct_wait_pop_races_the_wake() {
        use crate::pool::{Access, Pool, PoolKind, RingPool};
        use crate::sync::{Ordering, StdArc};
        use crate::unit::{UnitInner, Waiter};
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(2);
        b.check(|| {
            let ring = StdArc::new(RingPool::new(PoolKind::Fifo, Access::Mpsc));
            ring.claim_for(1);
            let pool: StdArc<dyn Pool> = ring.clone();
            let u = StdArc::new(UnitInner::new(
                None,
                false,
                0,
                false,
                pool.clone(),
                Box::new(|| {}),
            ));
            assert!(u.state.begin_run().is_some());
            u.home_id.store(1, Ordering::Relaxed);
            let ev = Arc::new(Eventual::<u32>::new());
            // Stream 1, inside `Eventual::wait`: SUSPENDED, then registered under the lock.
            u.state.begin_suspend();
            lock(&ev.inner).push(Waiter::Ult(u.clone()));
            let e2 = ev.clone();
            let setter = loom::thread::spawn(move || e2.set(1).unwrap());
            let mut claims = 0;
            if let Some(x) = ring.pop_from(1) {
                assert!(StdArc::ptr_eq(&x.0, &u), "only the waiter is ever pushed");
                assert!(x.0.state.claim_owned(), "pushed only once READY");
                claims += 1;
            }
            setter.join().unwrap();
            if claims == 0 {
                let x = ring.pop_from(1).expect("the woken waiter is in its pool");
                assert!(x.0.state.claim_owned());
                claims += 1;
            }
            assert_eq!(claims, 1);
            assert_eq!(pool.len(), 0, "pushed back exactly once");
            assert_eq!(u.state.get(), crate::state::RUNNING);
            assert_eq!(ev.test(), Some(1));
        });
    }

    /// A setter and a waiter race; the waiter always returns the value (no lost wake-up).
    #[test]
    fn loom_eventual_set_wait() {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(2);
        b.check(|| {
            let e = Arc::new(Eventual::<u32>::new());
            let e2 = e.clone();
            let w = loom::thread::spawn(move || e2.wait());
            e.set(7).unwrap();
            assert_eq!(w.join().unwrap(), 7);
            assert!(e.set(8).is_err());
        });
    }
}
