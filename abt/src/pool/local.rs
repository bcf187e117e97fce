//! `LocalQueue`: the single-consumer queue of PRIV, SPSC and MPSC pools. The consuming stream (the
//! *owner*) pushes and pops a plain [`Deque`] with no atomic read-modify-write; every other thread
//! pushes into an MPSC ring (`RingQueue`) that the owner drains into the back of its deque.
//!
//! **Why the unsafe block here is sound: an owner-thread check.** The deque lives in an
//! `UnsafeCell` and is touched only by whoever holds the `owner` word:
//! - a stream takes it with a CAS from 0 to its uid when its scheduler starts over the pool
//!   ([`LocalQueue::claim`]) and gives it back with a Release store of 0 when that scheduler returns
//!   ([`LocalQueue::release`]); stream uids are
//!   never reused and a uid is current on one OS thread at a time, so reading `owner == me` (any
//!   ordering) can only mean *this thread* stored it, and every access under it is on this thread;
//! - any other caller (no stream, or a stream whose scheduler does not hold the pool) takes it for
//!   one call with a CAS from 0 to [`TEMP`] (Acquire) and gives it back with a Release store of 0;
//! - a thread that finds it held by someone else never touches the deque: it pushes into the ring,
//!   and its pop returns `None` (a second consumer of a single-consumer pool is a misuse).
//!
//! Handing the word over goes through Release (store 0) then Acquire (CAS from 0), so the next
//! holder sees every write of the previous one. The ring is single-consumer, and only the holder
//! pops it.
//!
//! **Order.** Each producer's units come out in its push order: while it is the owner they go to
//! the deque, otherwise to the ring; a producer only changes side when it becomes the owner, and
//! taking ownership first moves the whole ring to the deque's back. The owner drains the ring
//! whenever it is not empty before popping, so remote work is never starved by local yields.

use super::ring::RingQueue;
use crate::sync::{AtomicUsize, Ordering, UnsyncCell};

/// The owner's deque: a ring of `Option` slots with a power-of-two capacity, so an index is a
/// mask away and a push or pop is a handful of instructions inlined into the caller (std's
/// `Deque::push_back` is an out-of-line call of ≈ 24 instructions). Safe code: an empty slot is
/// `None`.
pub(crate) struct Deque<T> {
    buf: Vec<Option<T>>,
    head: usize,
    len: usize,
}

impl<T> Deque<T> {
    const fn new() -> Self {
        Deque {
            buf: Vec::new(),
            head: 0,
            len: 0,
        }
    }
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }
    #[inline]
    pub(crate) fn push_back(&mut self, v: T) {
        if self.len == self.buf.len() {
            self.grow();
        }
        let mask = self.buf.len() - 1;
        let i = (self.head + self.len) & mask;
        if let Some(slot) = self.buf.get_mut(i) {
            // Slots past the live range are `None` (pops take, `grow` fills with `None`), so
            // there is nothing to drop; forgetting skips the drop check of the old value.
            let old = slot.replace(v);
            debug_assert!(old.is_none(), "deque slot past the live range was full");
            std::mem::forget(old);
            self.len += 1;
        }
    }
    #[inline]
    pub(crate) fn pop_front(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        let mask = self.buf.len() - 1;
        let v = self.buf.get_mut(self.head).and_then(Option::take);
        self.head = (self.head + 1) & mask;
        self.len -= 1;
        v
    }
    /// `push_back(v)` then `pop_front()` in one step (a yield: the yielder goes to the back, the
    /// next unit comes off the front): the length does not change, so neither it nor the
    /// published length is written, and an empty deque hands `v` straight back.
    #[inline]
    pub(crate) fn rotate(&mut self, v: T) -> T {
        if self.len == 0 {
            return v;
        }
        let mask = self.buf.len() - 1;
        let tail = (self.head + self.len) & mask;
        let Some(front) = self.buf.get_mut(self.head).and_then(Option::take) else {
            // The live range is never empty here; keep the deque whole anyway.
            self.push_back(v);
            return self.pop_front().expect("just pushed");
        };
        // With the deque full, the tail slot is the head slot just emptied.
        if let Some(slot) = self.buf.get_mut(tail) {
            let old = slot.replace(v);
            debug_assert!(old.is_none(), "deque slot past the live range was full");
            std::mem::forget(old);
        }
        self.head = (self.head + 1) & mask;
        front
    }
    /// Doubles the capacity (at least 16), keeping the order.
    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        let cap = (self.buf.len() * 2).max(16);
        let mut buf: Vec<Option<T>> = Vec::with_capacity(cap);
        let mask = self.buf.len().wrapping_sub(1);
        for k in 0..self.len {
            buf.push(self.buf[(self.head + k) & mask].take());
        }
        buf.resize_with(cap, || None);
        self.buf = buf;
        self.head = 0;
    }
}

/// The owner word while a thread that is not a stream holds the deque for one call.
const TEMP: usize = usize::MAX;

/// The queue. `me` arguments are the calling thread's stream uid (0: not a stream).
pub(crate) struct LocalQueue<T> {
    owner: AtomicUsize,
    local: UnsyncCell<Deque<T>>,
    /// The deque's length, stored (never read-modify-written) by the holder, for `len` from anywhere.
    local_len: AtomicUsize,
    remote: RingQueue<T, true, false>,
}

// SAFETY: the deque is only accessed by the holder of `owner` (module docs), which hands it over
// with Release / Acquire; values of `T` move between threads, hence `T: Send`.
unsafe impl<T: Send> Sync for LocalQueue<T> {}
// SAFETY: as above; the queue owns its values.
unsafe impl<T: Send> Send for LocalQueue<T> {}

impl<T> LocalQueue<T> {
    pub(crate) fn new(ring_cap: usize) -> Self {
        LocalQueue {
            owner: AtomicUsize::new(0),
            local: UnsyncCell::new(Deque::new()),
            local_len: AtomicUsize::new(0),
            remote: RingQueue::with_capacity(ring_cap),
        }
    }

    /// Runs `f` on the deque if the caller can hold it: as its owner stream (taking it on first
    /// use when `claim`), or for this call only. `None` if another thread holds it.
    #[inline(always)]
    fn held<R>(&self, me: usize, claim: bool, f: impl FnOnce(&mut Deque<T>) -> R) -> Option<R> {
        if me != 0 && self.owner.load(Ordering::Relaxed) == me {
            // SAFETY: `owner == me` was stored by this thread (uids are unique and current on one
            // thread at a time), so this thread holds the deque.
            return Some(unsafe { self.local.with_mut(f) });
        }
        self.held_slow(me, claim, f)
    }

    #[cold]
    #[inline(never)]
    fn held_slow<R>(
        &self,
        me: usize,
        claim: bool,
        f: impl FnOnce(&mut Deque<T>) -> R,
    ) -> Option<R> {
        let (to, keep) = if me != 0 && claim {
            (me, true)
        } else {
            (TEMP, false)
        };
        if self
            .owner
            .compare_exchange(0, to, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        // SAFETY: the CAS from 0 made this thread the holder, after the previous holder's Release.
        let r = unsafe {
            self.local.with_mut(|l| {
                // Taking the deque: everything queued remotely so far goes behind it (order).
                while let Some(v) = self.remote.pop() {
                    l.push_back(v);
                }
                let r = f(l);
                self.local_len.store(l.len(), Ordering::Relaxed);
                r
            })
        };
        if !keep {
            self.owner.store(0, Ordering::Release);
        }
        Some(r)
    }

    /// Appends a value: to the deque for its owner, to the ring for anyone else.
    #[inline]
    pub(crate) fn push(&self, me: usize, v: T) {
        if me != 0 && self.owner.load(Ordering::Relaxed) == me {
            // SAFETY: as in `held`: this thread is the owner.
            unsafe {
                self.local.with_mut(|l| {
                    l.push_back(v);
                    self.local_len.store(l.len(), Ordering::Relaxed);
                })
            };
        } else {
            self.push_remote(v);
        }
    }

    /// `push` from a thread that does not own the deque.
    #[inline(never)]
    fn push_remote(&self, v: T) {
        self.remote.push(v);
    }

    /// Takes the oldest value.
    #[inline]
    pub(crate) fn pop(&self, me: usize) -> Option<T> {
        if me != 0 && self.owner.load(Ordering::Relaxed) == me && self.remote.is_empty() {
            // SAFETY: as in `held`: this thread is the owner.
            return unsafe {
                self.local.with_mut(|l| {
                    let v = l.pop_front();
                    self.local_len.store(l.len(), Ordering::Relaxed);
                    v
                })
            };
        }
        self.pop_slow(me)
    }

    /// `push(me, v)` then `pop(me)`, in one step for the owner when the ring is empty.
    #[inline]
    pub(crate) fn rotate(&self, me: usize, v: T) -> Option<T> {
        if me != 0 && self.owner.load(Ordering::Relaxed) == me && self.remote.is_empty() {
            // SAFETY: as in `held`: this thread is the owner.
            return Some(unsafe { self.local.with_mut(|l| l.rotate(v)) });
        }
        self.push(me, v);
        self.pop(me)
    }

    /// `pop` when the ring has values, or the caller does not own the deque yet.
    #[cold]
    #[inline(never)]
    fn pop_slow(&self, me: usize) -> Option<T> {
        self.held(me, false, |l| {
            if !self.remote.is_empty() {
                if l.is_empty() {
                    return self.remote.pop();
                }
                while let Some(v) = self.remote.pop() {
                    l.push_back(v);
                }
            }
            let v = l.pop_front();
            self.local_len.store(l.len(), Ordering::Relaxed);
            v
        })
        .flatten()
    }

    /// Makes stream `me` the owner if nobody is (its scheduler starts over this pool). A stream
    /// that does not get it still works through the ring and one-call holds.
    pub(crate) fn claim(&self, me: usize) {
        if me == 0 || self.owner.load(Ordering::Relaxed) == me {
            return;
        }
        let _ = self.held(me, true, |_| ());
    }

    /// Gives the deque back if `me` owns it (its stream's scheduler returned).
    pub(crate) fn release(&self, me: usize) {
        if me != 0 && self.owner.load(Ordering::Relaxed) == me {
            self.owner.store(0, Ordering::Release);
        }
    }

    /// Queued values (a snapshot).
    pub(crate) fn len(&self) -> usize {
        self.local_len.load(Ordering::Relaxed) + self.remote.len()
    }
}

#[cfg(all(test, not(loom)))]
mod deque_tests {
    use super::Deque;

    /// The owner's deque against std's through growth while wrapped: same values, same order,
    /// and every value dropped exactly once (`Rc` counts).
    #[test]
    fn deque_matches_std_through_growth_and_wrap() {
        use std::rc::Rc;
        let token = Rc::new(());
        let mut d = Deque::new();
        let mut model = std::collections::VecDeque::new();
        let mut next = 0u32;
        // Pushes outpace pops, so the ring grows while its head is mid-buffer.
        for round in 0..200u32 {
            for _ in 0..(round % 7 + 1) {
                d.push_back((next, token.clone()));
                model.push_back(next);
                next += 1;
            }
            for _ in 0..(round % 5) {
                assert_eq!(d.pop_front().map(|v| v.0), model.pop_front());
            }
            assert_eq!(d.len(), model.len());
            assert_eq!(d.is_empty(), model.is_empty());
        }
        while let Some(v) = model.pop_front() {
            assert_eq!(d.pop_front().map(|x| x.0), Some(v));
        }
        assert!(d.pop_front().is_none());
        assert_eq!(Rc::strong_count(&token), 1, "every value dropped once");
    }

    /// `rotate` is `push_back` then `pop_front`, at every length (empty and full included) and
    /// while wrapped.
    #[test]
    fn rotate_is_push_then_pop() {
        use std::rc::Rc;
        let token = Rc::new(());
        let mut d = Deque::new();
        let mut model = std::collections::VecDeque::new();
        let mut next = 0u32;
        for round in 0..300u32 {
            // Grow to 0..=20 (16 fills the first buffer exactly), then rotate a few times.
            let want = (round * 7) % 21;
            while (d.len() as u32) < want {
                d.push_back((next, token.clone()));
                model.push_back(next);
                next += 1;
            }
            while d.len() as u32 > want {
                assert_eq!(d.pop_front().map(|v| v.0), model.pop_front());
            }
            for _ in 0..(round % 4 + 1) {
                let got = d.rotate((next, token.clone())).0;
                model.push_back(next);
                next += 1;
                assert_eq!(Some(got), model.pop_front());
                assert_eq!(d.len(), model.len());
            }
        }
        while let Some(v) = model.pop_front() {
            assert_eq!(d.pop_front().map(|x| x.0), Some(v));
        }
        assert_eq!(Rc::strong_count(&token), 1, "every value dropped once");
    }
}

#[cfg(all(test, loom))]
mod tests {
    use super::*;
    use crate::sync::Arc;

    fn model(f: impl Fn() + Sync + Send + 'static) {
        crate::sync::loom_model(2, f);
    }

    /// The owner stream (uid 1) pushes and pops its deque while a remote producer pushes into the
    /// ring: nothing lost, the remote producer's order holds, and loom's cell sees no race.
    #[test]
    fn loom_local_owner_and_remote_producer() {
        model(|| {
            let q = Arc::new(LocalQueue::<usize>::new(2));
            q.claim(1); // uid 1 owns it from here on
            let q2 = q.clone();
            let prod = loom::thread::spawn(move || {
                q2.push(2, 10);
                q2.push(2, 11);
            });
            q.push(1, 0);
            let mut got = Vec::new();
            got.extend(q.pop(1));
            prod.join().unwrap();
            while let Some(v) = q.pop(1) {
                got.push(v);
            }
            let remote: Vec<_> = got.iter().copied().filter(|v| *v >= 10).collect();
            assert_eq!(remote, vec![10, 11]);
            assert_eq!(got.len(), 3);
        });
    }

    /// A yield's rotate by the owner (uid 1) while a remote producer pushes: every value comes out
    /// exactly once, the remote producer's order holds, and the deque is only touched by the owner.
    #[test]
    fn loom_local_rotate_with_remote_producer() {
        model(|| {
            let q = Arc::new(LocalQueue::<usize>::new(2));
            q.claim(1);
            q.push(1, 0);
            let q2 = q.clone();
            let prod = loom::thread::spawn(move || {
                q2.push(2, 10);
                q2.push(2, 11);
            });
            let mut got = Vec::new();
            got.extend(q.rotate(1, 1));
            prod.join().unwrap();
            while let Some(v) = q.pop(1) {
                got.push(v);
            }
            let remote: Vec<_> = got.iter().copied().filter(|v| *v >= 10).collect();
            assert_eq!(remote, vec![10, 11]);
            got.sort();
            assert_eq!(got, vec![0, 1, 10, 11]);
        });
    }

    /// Hand-over: the owner stream releases while a thread that is no stream pops (a one-call
    /// hold) and another stream claims; the deque is never accessed by two at once and every
    /// value comes out exactly once.
    #[test]
    fn loom_local_handover() {
        model(|| {
            let q = Arc::new(LocalQueue::<usize>::new(2));
            q.claim(1);
            q.push(1, 1);
            q.push(1, 2);
            let q2 = q.clone();
            let other = loom::thread::spawn(move || {
                let mut got = Vec::new();
                got.extend(q2.pop(0));
                q2.claim(3);
                got.extend(q2.pop(3));
                got
            });
            q.release(1);
            let mut got = other.join().unwrap();
            while let Some(v) = q.pop(0) {
                got.push(v);
            }
            while let Some(v) = q.pop(3) {
                got.push(v);
            }
            got.sort();
            assert_eq!(got, vec![1, 2]);
        });
    }
}
