//! `Eventual` (`ABT_eventual`): a value set once that waiters block on.
//!
//! `set` hands the value to each waiter it wakes on its own stream: it clones it into a slot in
//! the waiter's frame (a [`HandOff`]) under the lock, before waking, so the woken waiter returns it
//! without taking the lock again; a waiter is woken only by the `set` that took its entry out of
//! the list, so it returns that set's value even if a `reset` runs before it does. A waiter on
//! another stream or thread finds its slot empty and reads the eventual under the lock, as before
//! (and waits again if a `reset` came first).

use crate::error::{Error, Result};
use crate::sync::{spin as lock, HandOff, HandOffPtr, SpinMutex as Mutex};
use crate::unit::Waiter;

/// A registered waiter: who to wake and where to put the value.
struct Entry<T> {
    w: Waiter,
    slot: HandOffPtr<T>,
}

struct Inner<T> {
    value: Option<T>,
    /// The first waiter (the common case is one), moved out whole by `set`.
    first: Option<Entry<T>>,
    /// Any further waiters.
    more: Vec<Entry<T>>,
}

impl<T> Inner<T> {
    fn push(&mut self, e: Entry<T>) {
        if self.first.is_none() {
            self.first = Some(e);
        } else {
            self.more.push(e);
        }
    }
    /// Takes the entry of `h` out of the list, if it is still there.
    fn remove(&mut self, h: &HandOff<T>) -> Option<Entry<T>> {
        if self.first.as_ref().is_some_and(|e| e.slot.is(h)) {
            return self.first.take();
        }
        let i = self.more.iter().position(|e| e.slot.is(h))?;
        Some(self.more.remove(i))
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

/// Withdraws a waiter's entry if its frame is left without a wake (a ULT unwound while waiting,
/// because its stream was dropped): by the [`HandOff`] protocol no `set` may fill the slot after.
struct Withdraw<'a, T> {
    ev: &'a Eventual<T>,
    slot: &'a HandOff<T>,
}

impl<T> Drop for Withdraw<'_, T> {
    #[cold]
    fn drop(&mut self) {
        let e = lock(&self.ev.inner).remove(self.slot);
        // A waiter that unwinds does not wait: its reference goes with the entry.
        drop(e);
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
            let slot = HandOff::new();
            let h = {
                let mut g = lock(&self.inner);
                if let Some(v) = &g.value {
                    return v.clone();
                }
                // Prepared under the lock: a ULT is SUSPENDED before `set` can see it, so a
                // wake between here and the switch is not lost (see `state`).
                let w = Waiter::prepare();
                let h = w.handle();
                g.push(Entry {
                    w,
                    slot: slot.ptr(),
                });
                h
            };
            let withdraw = Withdraw {
                ev: self,
                slot: &slot,
            };
            h.wait();
            std::mem::forget(withdraw);
            // SAFETY: only the `set` that took our entry out of the list wakes us (a ULT waiter
            // is resumed by its entry's `Waiter::wake` alone, a thread's parker by the same), and
            // if it filled the slot it did so under the lock, before; the wake orders that
            // before this read, and nobody writes the slot after.
            if let Some(v) = unsafe { slot.take_woken() } {
                return v;
            }
            // Woken by a set on another thread, which left the value in the eventual only.
            if let Some(v) = &lock(&self.inner).value {
                return v.clone();
            }
            // A reset came in between: wait for the next set.
        }
    }
    /// The value if set, without waiting (`ABT_eventual_test`).
    #[doc(alias = "ABT_eventual_test")]
    pub fn test(&self) -> Option<T> {
        lock(&self.inner).value.clone()
    }
    /// Sets the value and wakes every waiter (`ABT_eventual_set`), handing each its own clone.
    /// Should a clone panic, the eventual stays unset and its waiters keep waiting.
    #[doc(alias = "ABT_eventual_set")]
    pub fn set(&self, v: T) -> Result<()> {
        // Only to a ULT of the setter's own stream: its frame's cache line is then local.
        // Writing into the frame of a waiter on another core would pull that line over and back
        // (the two-stream round trip was 3.5 % slower), while that waiter re-reads the eventual,
        // whose line it needs for its next operation anyway.
        self.set_handing_over(v, Waiter::on_current_stream)
    }

    /// `set`, handing the value over in the slot of each waiter `hand_over` picks.
    #[inline]
    fn set_handing_over(&self, v: T, hand_over: impl Fn(&Waiter) -> bool) -> Result<()> {
        let mut g = lock(&self.inner);
        if g.value.is_some() {
            return Err(Error::EventualAlreadySet);
        }
        if g.more.is_empty() {
            // The common case: at most one waiter, and no list to move and drop.
            let first = g.first.take();
            if let Some(e) = &first {
                if hand_over(&e.w) {
                    // SAFETY: we hold the lock and the entry was in the list under it; it leaves
                    // the list in this hold (taken above), so nobody else fills it.
                    unsafe { e.slot.fill(v.clone()) };
                }
            }
            g.value = Some(v);
            drop(g);
            if let Some(e) = first {
                e.w.wake();
            }
            return Ok(());
        }
        for e in g.first.iter().chain(g.more.iter()) {
            if hand_over(&e.w) {
                // SAFETY: as above: under the lock, each listed entry is filled once, and all
                // leave the list in this hold (below).
                unsafe { e.slot.fill(v.clone()) };
            }
        }
        g.value = Some(v);
        let first = g.first.take();
        let more = std::mem::take(&mut g.more);
        drop(g);
        if let Some(e) = first {
            e.w.wake();
        }
        for e in more {
            e.w.wake();
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

    /// Every model here: at most two preemptions (the whole loom run stays within minutes).
    fn model(f: impl Fn() + Sync + Send + 'static) {
        crate::sync::loom_model(2, f);
    }

    /// A ULT of `pool` that began running (on stream `home`, if given), marked itself SUSPENDED
    /// and registered as the waiter of a fresh eventual with `slot` (the caller's, which must
    /// stay where it is) as its hand-over slot, as `Eventual::wait` leaves it before switching
    /// out; with the eventual.
    fn suspended_waiter(
        pool: &crate::sync::StdArc<dyn crate::pool::Pool>,
        home: Option<usize>,
        slot: &HandOff<u32>,
    ) -> (
        crate::sync::StdArc<crate::unit::UnitInner>,
        Arc<Eventual<u32>>,
    ) {
        use crate::sync::{Ordering, StdArc};
        use crate::unit::{UnitInner, Waiter};
        let u = StdArc::new(UnitInner::new(
            None,
            false,
            0,
            false,
            pool.clone(),
            Box::new(|| {}),
        ));
        assert!(u.state.begin_run().is_some());
        if let Some(h) = home {
            u.home_id.store(h, Ordering::Relaxed);
        }
        let ev = Arc::new(Eventual::<u32>::new());
        u.state.begin_suspend();
        lock(&ev.inner).push(Entry {
            w: Waiter::Ult(u.clone()),
            slot: slot.ptr(),
        });
        (u, ev)
    }

    /// The ULT state machine around a real eventual: the waiter ULT on stream A has registered
    /// and may not have switched out yet (SUSPENDED) while stream B sets the eventual and a stray
    /// resume from A's side races it. Whichever wins, the ULT is pushed back into its pool exactly
    /// once and ends READY.
    #[test]
    fn loom_eventual_set_while_waiter_mid_suspend() {
        use crate::pool::{Access, LockPool, Pool, PoolKind};
        use crate::state::Resume;
        use crate::sync::StdArc;
        use crate::unit::Unit;
        model(|| {
            let pool: StdArc<dyn Pool> = StdArc::new(LockPool::new(PoolKind::Fifo, Access::Mpsc));
            // Stream A, inside `Eventual::wait`: SUSPENDED, then registered under the lock.
            let slot = HandOff::new();
            let (u, ev) = suspended_waiter(&pool, None, &slot);
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
        use crate::sync::StdArc;
        model(|| {
            let ring = StdArc::new(RingPool::new(PoolKind::Fifo, Access::Mpsc));
            ring.claim_for(1);
            let pool: StdArc<dyn Pool> = ring.clone();
            // Stream 1, inside `Eventual::wait`: SUSPENDED, then registered under the lock.
            let slot = HandOff::new();
            let (u, ev) = suspended_waiter(&pool, Some(1), &slot);
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

    /// A registered waiter (an OS thread) is woken by a set while another thread resets the
    /// eventual: the waiter gets the set's value through its slot whatever the order (the
    /// waiter used to re-read the eventual after waking, and a reset in between sent it back to
    /// wait for a set that never came); loom's cell checks the fill and the read never overlap.
    #[test]
    fn loom_eventual_hand_over_survives_reset() {
        use crate::unit::ThreadParker;
        model(|| {
            let ev = Arc::new(Eventual::<u32>::new());
            let slot = HandOff::new();
            let parker = Arc::new(ThreadParker::new());
            // What `wait` does under the lock, for a waiter that is an OS thread.
            lock(&ev.inner).push(Entry {
                w: Waiter::Thread(parker.clone()),
                slot: slot.ptr(),
            });
            let e2 = ev.clone();
            // Loom threads are no streams: hand over as to a waiter on the setter's stream.
            let setter = loom::thread::spawn(move || e2.set_handing_over(7, |_| true).unwrap());
            let e3 = ev.clone();
            let resetter = loom::thread::spawn(move || e3.reset());
            parker.wait();
            // SAFETY: woken by the set that took the entry (the protocol under test).
            assert_eq!(unsafe { slot.take_woken() }, Some(7));
            setter.join().unwrap();
            resetter.join().unwrap();
        });
    }

    /// A waiter that leaves without a wake (a ULT unwound while it waits) withdraws its entry
    /// under the lock while a set runs: either the set filled its slot first (and the entry is
    /// gone) or the entry is withdrawn and the set never touches the slot.
    #[test]
    fn loom_eventual_withdraw_races_set() {
        use crate::unit::ThreadParker;
        model(|| {
            let ev = Arc::new(Eventual::<u32>::new());
            let slot = HandOff::new();
            lock(&ev.inner).push(Entry {
                w: Waiter::Thread(Arc::new(ThreadParker::new())),
                slot: slot.ptr(),
            });
            let e2 = ev.clone();
            let setter = loom::thread::spawn(move || e2.set_handing_over(5, |_| true).unwrap());
            let withdrawn = lock(&ev.inner).remove(&slot).is_some();
            setter.join().unwrap();
            // SAFETY: the setter has finished (joined), so nothing touches the slot any more.
            let got = unsafe { slot.take_woken() };
            assert_eq!(got, if withdrawn { None } else { Some(5) });
            assert_eq!(ev.test(), Some(5));
        });
    }

    /// A setter (`set`, on the model's main thread) and a waiter race; the waiter always returns
    /// the value (no lost wake-up) and a second set fails.
    fn set_wait_race(set: fn(&Eventual<u32>, u32) -> Result<()>) {
        model(move || {
            let e = Arc::new(Eventual::<u32>::new());
            let e2 = e.clone();
            let w = loom::thread::spawn(move || e2.wait());
            set(&e, 7).unwrap();
            assert_eq!(w.join().unwrap(), 7);
            assert!(e.set(8).is_err());
        });
    }

    /// With the value handed over in the waiter's slot (`wait` itself reads it).
    #[test]
    fn loom_eventual_set_wait_handed_over() {
        set_wait_race(|e, v| e.set_handing_over(v, |_| true));
    }

    /// Loom threads are no streams, so this is the path without a hand-over: the woken waiter
    /// reads the eventual under its lock.
    #[test]
    fn loom_eventual_set_wait() {
        set_wait_race(Eventual::set);
    }
}
