//! The ULT state machine (running, suspending, suspended, resumed) as plain atomics, so loom can
//! check it apart from the context switch.
//!
//! A ULT that is about to wait marks itself SUSPENDING *before* it publishes itself as a waiter
//! (in an eventual's list, a timer list…), then switches out; its stream then moves it to SUSPENDED.
//! A waker on another stream may come in between: it turns SUSPENDING into RESUMED, and the stream
//! that finishes the suspend sees that and requeues the ULT itself. Exactly one of the two pushes
//! the ULT back into a pool, so a wake is never lost and a ULT never runs twice.

use crate::sync::{AtomicU8, Ordering};

/// In a pool or about to be pushed into one; not running.
pub(crate) const READY: u8 = 0;
/// Running on its stream.
pub(crate) const RUNNING: u8 = 1;
/// Has decided to wait and may already be published as a waiter; still on its stream.
pub(crate) const SUSPENDING: u8 = 2;
/// Switched out and parked; only a resume brings it back.
pub(crate) const SUSPENDED: u8 = 3;
/// A resume arrived while it was SUSPENDING; its stream will requeue it.
pub(crate) const RESUMED: u8 = 4;
/// Its body returned.
pub(crate) const TERMINATED: u8 = 5;

/// What `resume` asks the caller to do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Resume {
    /// The unit was SUSPENDED and is now READY: the caller pushes it into its pool.
    Push,
    /// The unit was mid-suspend: its own stream will requeue it.
    Handled,
    /// The unit is not waiting (running, ready or finished).
    NotSuspended,
}

/// One unit's state word.
pub(crate) struct UltState(AtomicU8);

impl UltState {
    pub(crate) fn new() -> Self {
        UltState(AtomicU8::new(READY))
    }

    pub(crate) fn get(&self) -> u8 {
        self.0.load(Ordering::Acquire)
    }

    /// A stream claims the unit to run it. Fails for a unit already claimed (a stale pool entry
    /// left by `yield_to`) or finished.
    #[inline]
    pub(crate) fn begin_run(&self) -> bool {
        self.0
            .compare_exchange(READY, RUNNING, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Its home stream claims a started unit. While a unit is READY nobody but that stream writes
    /// its state (resumers only touch SUSPENDING / SUSPENDED units, and a started unit is never
    /// in a pool another stream pops), so a load and a store replace the CAS.
    #[inline]
    pub(crate) fn claim_owned(&self) -> bool {
        if self.0.load(Ordering::Acquire) == READY {
            self.0.store(RUNNING, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// The running unit yields: it goes back to READY (its stream pushes it).
    #[inline]
    pub(crate) fn yielded(&self) {
        self.0.store(READY, Ordering::Release);
    }

    /// The running unit decides to wait. Only the unit itself moves RUNNING → SUSPENDING.
    pub(crate) fn begin_suspend(&self) {
        self.0.store(SUSPENDING, Ordering::Release);
    }

    /// The unit decided not to wait after all (it never published itself): back to RUNNING.
    /// Returns false if a resume raced in anyway (it is then RESUMED and must still switch out).
    pub(crate) fn cancel_suspend(&self) -> bool {
        self.0
            .compare_exchange(SUSPENDING, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Its stream, after the switch out: true if the unit is now SUSPENDED (a later resume pushes
    /// it); false if a resume came first, in which case the unit is READY and the stream pushes it.
    pub(crate) fn finish_suspend(&self) -> bool {
        match self
            .0
            .compare_exchange(SUSPENDING, SUSPENDED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(_) => {
                // Only RESUMED can be here: nobody else moves a SUSPENDING unit.
                self.0.store(READY, Ordering::Release);
                false
            }
        }
    }

    /// Anyone: wake the unit.
    pub(crate) fn resume(&self) -> Resume {
        let mut s = self.0.load(Ordering::Acquire);
        loop {
            let (to, out) = match s {
                SUSPENDING => (RESUMED, Resume::Handled),
                SUSPENDED => (READY, Resume::Push),
                _ => return Resume::NotSuspended,
            };
            match self
                .0
                .compare_exchange(s, to, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return out,
                Err(now) => s = now,
            }
        }
    }

    /// The body returned.
    pub(crate) fn terminate(&self) {
        self.0.store(TERMINATED, Ordering::Release);
    }
}

#[cfg(all(test, loom))]
mod tests {
    use super::*;
    use crate::sync::{Arc, AtomicUsize};

    /// Stream A suspends a waiter while stream B resumes it: the unit is pushed exactly once,
    /// whichever side wins, and ends READY.
    #[test]
    fn loom_suspend_resume_race() {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(2);
        b.check(|| {
            let st = Arc::new(UltState::new());
            let pushes = Arc::new(AtomicUsize::new(0));
            assert!(st.begin_run());
            st.begin_suspend(); // published as a waiter from here on
            let (st2, p2) = (st.clone(), pushes.clone());
            let waker = loom::thread::spawn(move || {
                if st2.resume() == Resume::Push {
                    p2.fetch_add(1, Ordering::Relaxed);
                }
            });
            // Stream A: the switch out has happened; finish the suspend.
            if !st.finish_suspend() {
                pushes.fetch_add(1, Ordering::Relaxed);
            }
            waker.join().unwrap();
            assert_eq!(pushes.load(Ordering::Relaxed), 1);
            assert_eq!(st.get(), READY);
            // A second resume of a READY unit is refused.
            assert_eq!(st.resume(), Resume::NotSuspended);
        });
    }

    /// Two wakers race on one waiting unit: exactly one wins.
    #[test]
    fn loom_double_resume() {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(2);
        b.check(|| {
            let st = Arc::new(UltState::new());
            assert!(st.begin_run());
            st.begin_suspend();
            assert!(st.finish_suspend());
            let wins = Arc::new(AtomicUsize::new(0));
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    let (s, w) = (st.clone(), wins.clone());
                    loom::thread::spawn(move || {
                        if s.resume() == Resume::Push {
                            w.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
            assert_eq!(wins.load(Ordering::Relaxed), 1);
            assert!(st.begin_run());
        });
    }
}
