//! `Mutex` (`ABT_mutex`): a lock whose waiters are suspended ULTs; unlock hands it to the first.

use crate::sync::{spin as lock, SpinMutex as StdLock};
use crate::unit::Waiter;
use std::collections::VecDeque;

struct Inner {
    locked: bool,
    waiters: VecDeque<Waiter>,
}

/// A ULT mutex (`ABT_mutex`). It guards no data of its own (as Argobots'); the guard unlocks on
/// drop. Unlock hands the lock straight to the oldest waiter, so waiters are served in order.
#[doc(alias = "ABT_mutex")]
pub struct Mutex {
    inner: StdLock<Inner>,
}

/// Holds a [`Mutex`] locked; dropping it unlocks (`ABT_mutex_unlock`).
#[doc(alias = "ABT_mutex_unlock")]
#[must_use = "dropping the guard unlocks at once"]
pub struct MutexGuard<'a> {
    m: &'a Mutex,
}

impl Default for Mutex {
    fn default() -> Self {
        Self::new()
    }
}

impl Mutex {
    /// An unlocked mutex (`ABT_mutex_create`).
    #[doc(alias = "ABT_mutex_create")]
    pub fn new() -> Self {
        Mutex {
            inner: StdLock::new(Inner {
                locked: false,
                waiters: VecDeque::new(),
            }),
        }
    }

    /// Locks, suspending the calling ULT (or blocking the OS thread) while held (`ABT_mutex_lock`).
    #[doc(alias = "ABT_mutex_lock")]
    pub fn lock(&self) -> MutexGuard<'_> {
        {
            let mut g = lock(&self.inner);
            if !g.locked {
                g.locked = true;
                return MutexGuard { m: self };
            }
        }
        let w = Waiter::prepare();
        let h = w.handle();
        {
            let mut g = lock(&self.inner);
            if !g.locked {
                g.locked = true;
                drop(g);
                w.cancel();
                return MutexGuard { m: self };
            }
            g.waiters.push_back(w);
        }
        // Woken only by an unlock that handed us the lock.
        h.wait();
        MutexGuard { m: self }
    }

    /// Locks if free (`ABT_mutex_trylock`).
    #[doc(alias = "ABT_mutex_trylock")]
    pub fn try_lock(&self) -> Option<MutexGuard<'_>> {
        let mut g = lock(&self.inner);
        if g.locked {
            None
        } else {
            g.locked = true;
            Some(MutexGuard { m: self })
        }
    }

    pub(crate) fn unlock(&self) {
        let next = {
            let mut g = lock(&self.inner);
            match g.waiters.pop_front() {
                Some(w) => Some(w), // stays locked: ownership passes to `w`
                None => {
                    g.locked = false;
                    None
                }
            }
        };
        if let Some(w) = next {
            w.wake();
        }
    }
}

impl<'a> MutexGuard<'a> {
    pub(crate) fn mutex(&self) -> &'a Mutex {
        self.m
    }
}

impl Drop for MutexGuard<'_> {
    fn drop(&mut self) {
        self.m.unlock();
    }
}

#[cfg(all(test, loom))]
mod tests {
    use super::*;
    use crate::sync::{Arc, AtomicUsize, Ordering};

    /// Hand-off: two threads contend; the critical sections never overlap and both finish
    /// (a lost hand-off would deadlock, which loom reports).
    #[test]
    fn loom_mutex_hand_off() {
        crate::sync::loom_model(2, || {
            let m = Arc::new(Mutex::new());
            let inside = Arc::new(AtomicUsize::new(0));
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    let (m, inside) = (m.clone(), inside.clone());
                    loom::thread::spawn(move || {
                        let _g = m.lock();
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                        inside.fetch_sub(1, Ordering::SeqCst);
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
            assert!(m.try_lock().is_some());
        });
    }
}
