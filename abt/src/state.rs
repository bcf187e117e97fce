//! The ULT state machine (new, ready, running, suspended, terminated) as plain atomics, so loom
//! can check it apart from the context switch.
//!
//! A ULT that is about to wait marks itself SUSPENDED *before* it publishes itself as a waiter
//! (in an eventual's list, a timer list…), then switches out. A waker moves it SUSPENDED → READY
//! with one CAS and pushes it back into its pool, even if the ULT has not switched out yet: a
//! started ULT is only ever popped by its own stream (multi-consumer pools send it to that stream's
//! inbox), and that stream is busy running the ULT until the switch out, so the entry cannot be
//! run early. Exactly one waker wins the CAS, so a wake is never lost and a ULT never runs twice;
//! the stream does nothing after a suspend.

//!
//! The word also guards the unit's body: the body is taken by whoever wins the one transition out
//! of [`NEW`] (a unit never returns there), so no lock is needed around it. That is the one
//! `unsafe` block of this module.

use crate::sync::{AtomicU8, Ordering, UnsyncCell};

/// What a unit runs.
pub(crate) type Body = Box<dyn FnOnce() + Send>;

/// In a pool or about to be pushed into one; not running.
pub(crate) const READY: u8 = 0;
/// Like READY, but has never run: its body is still in the state record.
pub(crate) const NEW: u8 = 6;
/// Running on its stream.
pub(crate) const RUNNING: u8 = 1;
/// Waiting: has decided to wait and may already be published as a waiter (switched out, or
/// about to); only a resume brings it back.
pub(crate) const SUSPENDED: u8 = 3;
/// Its body returned.
pub(crate) const TERMINATED: u8 = 5;

/// What `resume` asks the caller to do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Resume {
    /// The unit was SUSPENDED and is now READY: the caller pushes it into its pool.
    Push,
    /// The unit is not waiting (running, ready or finished).
    NotSuspended,
}

// SAFETY: the body cell is only accessed by the winner of the transition out of NEW (see
// `begin_run`) or through `&mut self`; the body is `Send`, so handing it to that thread is fine.
unsafe impl Sync for UltState {}

/// What a successful [`UltState::begin_run`] hands over.
pub(crate) enum Claim {
    /// The unit's first run: its body (None only if it was already gone, which does not happen).
    First(Option<Body>),
    /// A unit that has run before.
    Again,
}

/// One unit's state word, and the body that only the first claim may take.
pub(crate) struct UltState {
    word: AtomicU8,
    body: UnsyncCell<Option<Body>>,
}

impl UltState {
    pub(crate) fn new(body: Option<Body>) -> Self {
        UltState {
            word: AtomicU8::new(NEW),
            body: UnsyncCell::new(body),
        }
    }

    /// Resets a record nobody else can see (a cached unit being reused).
    #[cfg(not(loom))]
    pub(crate) fn reset(&mut self, body: Body) {
        *self.word.get_mut() = NEW;
        *self.body.get_mut() = Some(body);
    }

    pub(crate) fn get(&self) -> u8 {
        self.word.load(Ordering::Acquire)
    }

    /// A stream claims the unit to run it. Fails (`None`) for a unit already claimed (a stale pool
    /// entry left by `yield_to`) or finished. The first claim of a unit takes its body.
    #[inline]
    pub(crate) fn begin_run(&self) -> Option<Claim> {
        let s = self.word.load(Ordering::Relaxed);
        if s != NEW && s != READY {
            return None;
        }
        self.word
            .compare_exchange(s, RUNNING, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        if s == READY {
            return Some(Claim::Again);
        }
        // SAFETY: this thread won the only transition out of NEW (nothing ever stores NEW into
        // a record others can see), so no other thread takes or reads the body; the body was
        // written before the unit was published (pushed into a pool), which the pool's hand-over
        // and this Acquire order before this read.
        Some(Claim::First(unsafe { self.body.with_mut(Option::take) }))
    }

    /// Its home stream claims a started unit. While a unit is READY nobody but that stream writes
    /// its state (resumers only touch SUSPENDED units, and a started unit is never
    /// in a pool another stream pops), so a load and a store replace the CAS.
    #[inline]
    pub(crate) fn claim_owned(&self) -> bool {
        if self.word.load(Ordering::Acquire) == READY {
            self.word.store(RUNNING, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// The running unit yields: it goes back to READY (its stream pushes it).
    #[inline]
    pub(crate) fn yielded(&self) {
        self.word.store(READY, Ordering::Release);
    }

    /// The running unit decides to wait. Only the unit itself moves RUNNING → SUSPENDED.
    pub(crate) fn begin_suspend(&self) {
        self.word.store(SUSPENDED, Ordering::Release);
    }

    /// The unit decided not to wait after all (it never published itself): back to RUNNING.
    /// Returns false if a resume raced in anyway (it is then READY and already pushed, so it must
    /// still switch out; its stream runs it again from that entry).
    pub(crate) fn cancel_suspend(&self) -> bool {
        self.word
            .compare_exchange(SUSPENDED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Anyone: wake the unit. `Push`: the caller won and pushes it into its pool.
    pub(crate) fn resume(&self) -> Resume {
        match self
            .word
            .compare_exchange(SUSPENDED, READY, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Resume::Push,
            Err(_) => Resume::NotSuspended,
        }
    }

    /// The body returned.
    pub(crate) fn terminate(&self) {
        self.word.store(TERMINATED, Ordering::Release);
    }
}

#[cfg(all(test, loom))]
mod tests {
    use super::*;
    use crate::sync::{Arc, AtomicUsize};

    /// A waiter that published itself decides not to wait after all (its condition held) while
    /// another stream resumes it: either the cancel wins (no push, RUNNING) or the resume wins
    /// (exactly one push, READY, and the waiter must switch out); never both.
    #[test]
    fn loom_suspend_resume_race() {
        crate::sync::loom_model(2, || {
            let st = Arc::new(UltState::new(None));
            let pushes = Arc::new(AtomicUsize::new(0));
            assert!(st.begin_run().is_some());
            st.begin_suspend(); // published as a waiter from here on
            let (st2, p2) = (st.clone(), pushes.clone());
            let waker = loom::thread::spawn(move || {
                if st2.resume() == Resume::Push {
                    p2.fetch_add(1, Ordering::Relaxed);
                }
            });
            let cancelled = st.cancel_suspend();
            waker.join().unwrap();
            if cancelled {
                assert_eq!(pushes.load(Ordering::Relaxed), 0);
                assert_eq!(st.get(), RUNNING);
            } else {
                assert_eq!(pushes.load(Ordering::Relaxed), 1);
                assert_eq!(st.get(), READY);
            }
            // A second resume of a unit that is not waiting is refused.
            assert_eq!(st.resume(), Resume::NotSuspended);
        });
    }

    /// Two wakers race on one waiting unit: exactly one wins.
    #[test]
    fn loom_double_resume() {
        crate::sync::loom_model(2, || {
            let st = Arc::new(UltState::new(None));
            assert!(st.begin_run().is_some());
            st.begin_suspend();
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
            assert!(st.begin_run().is_some());
        });
    }
}

#[cfg(all(test, loom))]
mod body_tests {
    use super::*;
    use crate::sync::Arc;

    /// Two streams race to claim a new unit (a pop and a `yield_to`): exactly one wins, and only
    /// it gets the body; loom's cell sees no second access to it.
    #[test]
    fn loom_first_claim_takes_body_once() {
        crate::sync::loom_model(2, || {
            let st = Arc::new(UltState::new(Some(Box::new(|| {}))));
            let s2 = st.clone();
            let other = loom::thread::spawn(move || match s2.begin_run() {
                Some(Claim::First(b)) => b.is_some() as usize,
                Some(Claim::Again) => panic!("a new unit claimed as started"),
                None => 0,
            });
            let mine = match st.begin_run() {
                Some(Claim::First(b)) => b.is_some() as usize,
                Some(Claim::Again) => panic!("a new unit claimed as started"),
                None => 0,
            };
            assert_eq!(mine + other.join().unwrap(), 1, "one claimer gets the body");
            assert_eq!(st.get(), RUNNING);
        });
    }
}
