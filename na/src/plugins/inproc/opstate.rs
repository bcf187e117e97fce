//! The op state machine that decides, without a lock, who completes an operation: the side that
//! delivers it or the side that cancels (or tears down) it.
//!
//! ```text
//!            claim()                 finish(outcome)
//! PENDING ───────────▶ CLAIMED ──────────────────────────▶ DONE
//!    │                   │ cancel(): sets CANCEL_REQ, which the claimer ignores: it had an effect
//!    └──── cancel() ─────┴──────────────────────────────────▶ DONE (outcome Canceled)
//! ```
//!
//! The payload (the [`crate::Op`] with its buffer, and where its completion goes) lives in the cell
//! and is taken by whoever wins the one transition out of PENDING: a deliverer (`claim`) completes
//! it with the real result; a canceller that finds it PENDING completes it as Canceled; a canceller
//! that finds it CLAIMED gets `Deferred` and the real result arrives. Exactly one of them pushes the
//! completion. The outcome code is published by the DONE store (Release), so a thread that sees
//! DONE (Acquire) reads the right outcome; `--cfg loom_weak` weakens that store to Relaxed and
//! `loom_op_outcome_is_published` catches it.

use crate::sync::{lock, AtomicU32, AtomicU8, Mutex, Ordering};

const PENDING: u8 = 0;
const CLAIMED: u8 = 1;
const CANCEL_REQ: u8 = 2;
const DONE: u8 = 4;

/// Outcome code stored before DONE: 0 is success, else `Error::code()`.
const NO_OUTCOME: u32 = u32::MAX;

/// Ordering of the store that publishes DONE and the outcome with it.
#[cfg(not(loom_weak))]
const PUBLISH: Ordering = Ordering::Release;
/// Deliberately too weak (only under `--cfg loom_weak`): loom must find the stale outcome.
#[cfg(loom_weak)]
const PUBLISH: Ordering = Ordering::Relaxed;

/// What `cancel` achieved.
#[derive(Debug)]
pub(crate) enum Cancel<T> {
    /// The operation had no effect; the caller owns the payload and completes it as Canceled.
    Won(T),
    /// A deliverer holds it: the real result arrives.
    Deferred,
    /// Already completed or cancel already requested: nothing to do.
    NoOp,
}

/// One operation's state and payload.
#[derive(Debug)]
pub(crate) struct OpCell<T> {
    state: AtomicU8,
    outcome: AtomicU32,
    payload: Mutex<Option<T>>,
}

impl<T> OpCell<T> {
    /// A pending operation holding `payload`.
    pub(crate) fn new(payload: T) -> OpCell<T> {
        OpCell {
            state: AtomicU8::new(PENDING),
            outcome: AtomicU32::new(NO_OUTCOME),
            payload: Mutex::new(Some(payload)),
        }
    }

    /// Takes the operation for delivery if it is still pending.
    pub(crate) fn claim(&self) -> Option<T> {
        self.state
            .compare_exchange(PENDING, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        lock(&self.payload).take()
    }

    /// Marks a claimed operation done with `outcome` (0 = success, else an error code).
    pub(crate) fn finish(&self, outcome: u32) {
        self.outcome.store(outcome, Ordering::Relaxed);
        // A read-modify-write, not a store: a canceller's CAS that set CANCEL_REQ is then
        // ordered before DONE and cannot overwrite it (loom found the plain store lost to it).
        self.state.swap(DONE, PUBLISH);
    }

    /// Requests cancellation.
    pub(crate) fn cancel(&self) -> Cancel<T> {
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            let next = match s {
                PENDING => CLAIMED,
                CLAIMED => CLAIMED | CANCEL_REQ,
                _ => return Cancel::NoOp,
            };
            match self
                .state
                .compare_exchange(s, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(PENDING) => {
                    let p = lock(&self.payload).take();
                    self.finish(crate::Error::Canceled.code() as u32);
                    return match p {
                        Some(p) => Cancel::Won(p),
                        None => Cancel::NoOp,
                    };
                }
                Ok(_) => return Cancel::Deferred,
                Err(now) => s = now,
            }
        }
    }

    /// Whether the operation is still pending (neither claimed nor done).
    pub(crate) fn is_pending(&self) -> bool {
        self.state.load(Ordering::Acquire) == PENDING
    }

    /// The outcome once DONE (0 = success, else an error code), None before.
    pub(crate) fn outcome(&self) -> Option<u32> {
        if self.state.load(Ordering::Acquire) == DONE {
            Some(self.outcome.load(Ordering::Relaxed))
        } else {
            None
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn cancel_of_pending_wins_and_is_final() {
        let c = OpCell::new(7u32);
        assert!(matches!(c.cancel(), Cancel::Won(7)));
        assert_eq!(c.outcome(), Some(crate::Error::Canceled.code() as u32));
        assert!(c.claim().is_none());
        assert!(matches!(c.cancel(), Cancel::NoOp));
    }

    #[test]
    fn cancel_while_claimed_defers_to_the_claimer() {
        let c = OpCell::new(1u32);
        let p = c.claim().unwrap();
        assert!(matches!(c.cancel(), Cancel::Deferred));
        assert!(matches!(c.cancel(), Cancel::NoOp), "requested once");
        assert_eq!(c.outcome(), None);
        c.finish(0); // it had an effect: the real result wins
        let _ = p;
        assert_eq!(c.outcome(), Some(0));
        assert!(c.claim().is_none());
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::Arc;
    use loom::thread;

    fn model(f: impl Fn() + Sync + Send + 'static) {
        crate::sync::loom_model(2, f);
    }

    /// Deliverer (claim, then finish) against a canceller: exactly one completes, and a
    /// canceller that lost to a claim sees the real outcome once it is published.
    #[test]
    fn loom_op_cancel_vs_delivery() {
        model(|| {
            let c = Arc::new(OpCell::new(5u32));
            let c2 = c.clone();
            let deliverer = thread::spawn(move || match c2.claim() {
                Some(_) => {
                    c2.finish(0);
                    1
                }
                None => 0,
            });
            let cancelled = match c.cancel() {
                Cancel::Won(p) => {
                    assert_eq!(p, 5);
                    1
                }
                Cancel::Deferred | Cancel::NoOp => 0,
            };
            let delivered = deliverer.join().unwrap();
            assert_eq!(cancelled + delivered, 1);
            let want = if cancelled == 1 {
                crate::Error::Canceled.code() as u32
            } else {
                0
            };
            assert_eq!(
                c.outcome(),
                Some(want),
                "state {}",
                c.state.load(Ordering::SeqCst)
            );
        });
    }

    /// Two cancellers and a deliverer: still one completion.
    #[test]
    fn loom_op_two_cancellers() {
        model(|| {
            let c = Arc::new(OpCell::new(5u32));
            let (a, b) = (c.clone(), c.clone());
            let t1 = thread::spawn(move || usize::from(matches!(a.cancel(), Cancel::Won(_))));
            let t2 = thread::spawn(move || usize::from(matches!(b.cancel(), Cancel::Won(_))));
            let mine = match c.claim() {
                Some(_) => {
                    c.finish(0);
                    1
                }
                None => 0,
            };
            assert_eq!(t1.join().unwrap() + t2.join().unwrap() + mine, 1);
        });
    }

    /// Whoever sees DONE reads the outcome the finisher stored. Fails under `--cfg loom_weak`.
    #[test]
    #[cfg_attr(loom_weak, should_panic(expected = "stale outcome"))]
    fn loom_op_outcome_is_published() {
        model(|| {
            let c = Arc::new(OpCell::new(5u32));
            let c2 = c.clone();
            let t = thread::spawn(move || {
                assert_eq!(c2.claim(), Some(5));
                c2.finish(42);
            });
            loop {
                if let Some(o) = c.outcome() {
                    assert_eq!(o, 42, "stale outcome seen after DONE");
                    break;
                }
                thread::yield_now();
            }
            t.join().unwrap();
        });
    }
}
