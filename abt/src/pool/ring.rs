//! `RingPool`: a bounded array ring with per-slot sequence numbers (the scheme of D. Vyukov's
//! bounded MPMC queue), specialised per side: a side with one thread advances its index with a
//! plain store, a side with several claims slots by CAS. When the ring is full, pushes go to a
//! locked overflow list, and keep going there until the consumer has drained it, so each
//! producer's units stay in FIFO order and the pool is unbounded like Argobots'.

use super::local::LocalQueue;
use super::{Access, Common, Notify, Pool, PoolKind};
use crate::sync::{lock, AtomicUsize, Mutex, Ordering, Slot};
use crate::unit::Unit;
use crate::xstream::current_uid;
use crossbeam_utils::{Backoff, CachePadded};
use std::collections::VecDeque;
use std::time::Duration;

struct Cell<T> {
    seq: AtomicUsize,
    val: Slot<T>,
}

/// The ring. `MP`: several producers; `MC`: several consumers.
pub(crate) struct RingQueue<T, const MP: bool, const MC: bool> {
    head: CachePadded<AtomicUsize>,
    tail: CachePadded<AtomicUsize>,
    buf: Box<[Cell<T>]>,
    mask: usize,
    overflow: Mutex<VecDeque<T>>,
    overflow_len: CachePadded<AtomicUsize>,
}

impl<T, const MP: bool, const MC: bool> RingQueue<T, MP, MC> {
    /// A ring of `cap` slots (rounded up to a power of two, at least 2).
    pub(crate) fn with_capacity(cap: usize) -> Self {
        let cap = cap.max(2).next_power_of_two();
        RingQueue {
            head: CachePadded::new(AtomicUsize::new(0)),
            tail: CachePadded::new(AtomicUsize::new(0)),
            buf: (0..cap)
                .map(|i| Cell {
                    seq: AtomicUsize::new(i),
                    val: Slot::new(),
                })
                .collect(),
            mask: cap - 1,
            overflow: Mutex::new(VecDeque::new()),
            overflow_len: CachePadded::new(AtomicUsize::new(0)),
        }
    }

    /// Tries the ring; gives the value back if it is full.
    #[inline]
    fn push_ring(&self, v: T) -> Result<(), T> {
        let backoff = Backoff::new();
        let mut pos = self.tail.load(Ordering::Relaxed);
        loop {
            let cell = &self.buf[pos & self.mask];
            let seq = cell.seq.load(Ordering::Acquire);
            let dif = seq as isize - pos as isize;
            if dif == 0 {
                if MP {
                    match self.tail.compare_exchange_weak(
                        pos,
                        pos.wrapping_add(1),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => {}
                        Err(now) => {
                            pos = now;
                            backoff.spin();
                            continue;
                        }
                    }
                } else {
                    self.tail.store(pos.wrapping_add(1), Ordering::Relaxed);
                }
                let old = cell.val.put(v);
                debug_assert!(old.is_none(), "ring slot claimed twice");
                drop(old);
                cell.seq.store(pos.wrapping_add(1), Ordering::Release);
                return Ok(());
            } else if dif < 0 {
                return Err(v);
            } else {
                pos = self.tail.load(Ordering::Relaxed);
                backoff.spin();
            }
        }
    }

    #[inline]
    fn pop_ring(&self) -> Option<T> {
        let backoff = Backoff::new();
        let mut pos = self.head.load(Ordering::Relaxed);
        loop {
            let cell = &self.buf[pos & self.mask];
            let seq = cell.seq.load(Ordering::Acquire);
            let dif = seq as isize - pos.wrapping_add(1) as isize;
            if dif == 0 {
                if MC {
                    match self.head.compare_exchange_weak(
                        pos,
                        pos.wrapping_add(1),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => {}
                        Err(now) => {
                            pos = now;
                            backoff.spin();
                            continue;
                        }
                    }
                } else {
                    self.head.store(pos.wrapping_add(1), Ordering::Relaxed);
                }
                let v = cell.val.take();
                cell.seq
                    .store(pos.wrapping_add(self.mask + 1), Ordering::Release);
                debug_assert!(v.is_some(), "published ring slot was empty");
                return v;
            } else if dif < 0 {
                return None;
            } else {
                pos = self.head.load(Ordering::Relaxed);
                backoff.spin();
            }
        }
    }

    /// Appends a value.
    #[inline]
    pub(crate) fn push(&self, v: T) {
        let v = if self.overflow_len.load(Ordering::Acquire) == 0 {
            match self.push_ring(v) {
                Ok(()) => return,
                Err(v) => v,
            }
        } else {
            v
        };
        let mut o = lock(&self.overflow);
        o.push_back(v);
        self.overflow_len.store(o.len(), Ordering::Release);
    }

    /// Takes the oldest value.
    #[inline]
    pub(crate) fn pop(&self) -> Option<T> {
        if let Some(v) = self.pop_ring() {
            return Some(v);
        }
        if self.overflow_len.load(Ordering::Acquire) == 0 {
            return None;
        }
        // The ring looks empty when its head slot is claimed but not yet published (a producer
        // between its claim and its store), while later slots may hold values pushed before the
        // overflow's: the overflow is read only once every claimed slot has been consumed, or a
        // producer's ring values would come out after its overflowed ones.
        if self.tail.load(Ordering::Acquire) != self.head.load(Ordering::Relaxed) {
            return None;
        }
        let mut o = lock(&self.overflow);
        let v = o.pop_front();
        self.overflow_len.store(o.len(), Ordering::Release);
        v
    }

    /// Whether nothing is queued (a snapshot; a push in progress may not be visible yet).
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.tail.load(Ordering::Relaxed) == self.head.load(Ordering::Relaxed)
            && self.overflow_len.load(Ordering::Relaxed) == 0
    }

    /// Queued values (a snapshot).
    pub(crate) fn len(&self) -> usize {
        let t = self.tail.load(Ordering::Relaxed);
        let h = self.head.load(Ordering::Relaxed);
        t.wrapping_sub(h).min(self.mask + 1) + self.overflow_len.load(Ordering::Relaxed)
    }
}

const RING_CAP: usize = 1024;

enum Flavor {
    /// PRIV, SPSC, MPSC: one consumer, so the owner-bound deque in front of an MPSC ring.
    Local(LocalQueue<Unit>),
    Spmc(RingQueue<Unit, false, true>),
    Mpmc(RingQueue<Unit, true, true>),
}

impl Flavor {
    /// Push for the multi-consumer flavors, out of line so the single-consumer fast path stays
    /// small.
    #[inline(never)]
    fn push_multi_consumer(&self, unit: Unit) {
        match self {
            Flavor::Local(q) => q.push(current_uid(), unit),
            Flavor::Spmc(q) => q.push(unit),
            Flavor::Mpmc(q) => q.push(unit),
        }
    }
    /// Pop for the multi-consumer flavors (see `push_multi_consumer`).
    #[inline(never)]
    fn pop_multi_consumer(&self) -> Option<Unit> {
        match self {
            Flavor::Local(q) => q.pop(current_uid()),
            Flavor::Spmc(q) => q.pop(),
            Flavor::Mpmc(q) => q.pop(),
        }
    }
}

/// A pool over the array ring, specialised per access mode; `create_basic` uses it for every mode.
/// Single-consumer modes (PRIV, SPSC, MPSC) put the consuming stream's own deque in front of the
/// ring (`LocalQueue`): pushes and pops by that stream touch no atomic read-modify-write.
pub struct RingPool {
    q: Flavor,
    common: Common,
}

impl RingPool {
    /// A new empty pool.
    pub fn new(kind: PoolKind, access: Access) -> Self {
        let q = match access {
            Access::Priv | Access::Spsc | Access::Mpsc => Flavor::Local(LocalQueue::new(RING_CAP)),
            Access::Spmc => Flavor::Spmc(RingQueue::with_capacity(RING_CAP)),
            Access::Mpmc => Flavor::Mpmc(RingQueue::with_capacity(RING_CAP)),
        };
        RingPool {
            q,
            common: Common::new(kind, access),
        }
    }
}

impl RingPool {
    /// `push` by the stream whose uid is `me` (the caller knows it: no thread-local read).
    #[inline]
    pub(crate) fn push_from(&self, me: usize, unit: Unit) {
        match &self.q {
            Flavor::Local(q) => q.push(me, unit),
            other => other.push_multi_consumer(unit),
        }
        self.common.pushed();
    }
    /// `push_from(me, unit)` then `pop_from(me)`: for a single-consumer pool's owner with nothing
    /// queued remotely, one step that leaves the length alone (a yield's requeue and next pop).
    #[inline]
    pub(crate) fn rotate_from(&self, me: usize, unit: Unit) -> Option<Unit> {
        match &self.q {
            Flavor::Local(q) => {
                let next = q.rotate(me, unit);
                self.common.pushed();
                next
            }
            other => {
                other.push_multi_consumer(unit);
                self.common.pushed();
                other.pop_multi_consumer()
            }
        }
    }
    /// `claim_owner` for the stream whose uid is `me` (loom models have no current stream).
    #[cfg(all(test, loom))]
    pub(crate) fn claim_for(&self, me: usize) {
        if let Flavor::Local(q) = &self.q {
            q.claim(me);
        }
    }
    /// `pop` by the stream whose uid is `me`.
    #[inline]
    pub(crate) fn pop_from(&self, me: usize) -> Option<Unit> {
        match &self.q {
            Flavor::Local(q) => q.pop(me),
            other => other.pop_multi_consumer(),
        }
    }
}

impl Pool for RingPool {
    #[inline]
    fn push(&self, unit: Unit) {
        self.push_from(current_uid(), unit)
    }
    #[inline]
    fn pop(&self) -> Option<Unit> {
        self.pop_from(current_uid())
    }
    fn pop_wait(&self, timeout: Duration) -> Option<Unit> {
        self.common.pop_wait(timeout, || self.pop())
    }
    fn len(&self) -> usize {
        match &self.q {
            Flavor::Local(q) => q.len(),
            Flavor::Spmc(q) => q.len(),
            Flavor::Mpmc(q) => q.len(),
        }
    }
    fn kind(&self) -> PoolKind {
        self.common.kind()
    }
    fn access(&self) -> Access {
        self.common.access()
    }
    fn add_notify(&self, notify: Notify) {
        self.common.add_notify(notify)
    }
    fn park_count(&self) -> u64 {
        self.common.park_count()
    }
    fn claim_owner(&self) {
        if let Flavor::Local(q) = &self.q {
            q.claim(current_uid());
        }
    }
    fn release_owner(&self) {
        if let Flavor::Local(q) = &self.q {
            q.release(current_uid());
        }
    }
}

#[cfg(all(test, not(loom)))]
mod order_tests {
    use super::*;

    /// A producer that has claimed the head slot but not yet published it makes the ring look
    /// empty; another producer's values behind it, and that producer's overflowed values, must
    /// still come out in its push order (the `Fifo`/`Mpsc` conformance run caught this).
    #[test]
    fn an_unpublished_head_slot_keeps_the_overflow_waiting() {
        let q = RingQueue::<u32, true, false>::with_capacity(4);
        // Producer Q claims slot 0 and stalls before writing it.
        let pos = q.tail.fetch_add(1, Ordering::Relaxed);
        // Producer P fills the other three slots, then overflows.
        for v in [10, 11, 12, 13, 14] {
            q.push(v);
        }
        assert_eq!(q.overflow_len.load(Ordering::Relaxed), 2);
        // The head slot is unpublished: nothing may be taken yet, least of all 13.
        assert_eq!(q.pop(), None);
        // Q publishes.
        let cell = &q.buf[pos & q.mask];
        assert!(cell.val.put(1).is_none());
        cell.seq.store(pos.wrapping_add(1), Ordering::Release);
        let mut got = Vec::new();
        while let Some(v) = q.pop() {
            got.push(v);
        }
        assert_eq!(got, vec![1, 10, 11, 12, 13, 14]);
        assert!(q.is_empty());
    }
}

#[cfg(all(test, loom))]
mod tests {
    use super::*;
    use crate::sync::Arc;

    fn model(f: impl Fn() + Sync + Send + 'static) {
        crate::sync::loom_model(2, f);
    }

    /// SPSC: producer pushes 3 through a 2-slot ring (one overflows) while the consumer pops;
    /// the consumer sees 0, 1, 2 in order.
    #[test]
    fn loom_ring_spsc_fifo_with_overflow() {
        model(|| {
            let q = Arc::new(RingQueue::<usize, false, false>::with_capacity(2));
            let q2 = q.clone();
            let p = loom::thread::spawn(move || {
                for i in 0..3 {
                    q2.push(i);
                }
            });
            let mut got = Vec::new();
            if let Some(v) = q.pop() {
                got.push(v);
            }
            p.join().unwrap();
            while let Some(v) = q.pop() {
                got.push(v);
            }
            assert_eq!(got, vec![0, 1, 2]);
        });
    }

    /// MPSC (DAOS's pools): two producers, the owner popping concurrently; every unit arrives
    /// once and each producer's own order holds.
    #[test]
    fn loom_ring_mpsc() {
        model(|| {
            let q = Arc::new(RingQueue::<usize, true, false>::with_capacity(2));
            let hs: Vec<_> = (0..2)
                .map(|p| {
                    let q = q.clone();
                    loom::thread::spawn(move || {
                        q.push(p * 10);
                        q.push(p * 10 + 1);
                    })
                })
                .collect();
            let mut got = Vec::new();
            if let Some(v) = q.pop() {
                got.push(v);
            }
            for h in hs {
                h.join().unwrap();
            }
            while let Some(v) = q.pop() {
                got.push(v);
            }
            for p in 0..2 {
                let mine: Vec<_> = got.iter().copied().filter(|v| v / 10 == p).collect();
                assert_eq!(mine, vec![p * 10, p * 10 + 1]);
            }
            assert_eq!(got.len(), 4);
        });
    }

    /// MPSC with one producer's claim in flight while the other fills the ring, overflows and
    /// then pops: the overflow must not come out ahead of ring values pushed before it (this
    /// model fails without the `tail != head` check in `pop`).
    #[test]
    fn loom_ring_mpsc_overflow_waits_for_claimed_slots() {
        model(|| {
            let q = Arc::new(RingQueue::<usize, true, false>::with_capacity(2));
            let qa = q.clone();
            let a = loom::thread::spawn(move || qa.push(100));
            for v in 0..3 {
                q.push(v);
            }
            let mut got = Vec::new();
            if let Some(v) = q.pop() {
                got.push(v);
            }
            a.join().unwrap();
            while let Some(v) = q.pop() {
                got.push(v);
            }
            let mine: Vec<_> = got.iter().copied().filter(|&v| v < 100).collect();
            assert_eq!(mine, vec![0, 1, 2], "producer order, got {got:?}");
            assert_eq!(got.len(), 4);
        });
    }

    /// SPMC: two consumers race for two units; each unit is taken exactly once.
    #[test]
    fn loom_ring_spmc() {
        model(|| {
            let q = Arc::new(RingQueue::<usize, false, true>::with_capacity(2));
            q.push(1);
            q.push(2);
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    let q = q.clone();
                    loom::thread::spawn(move || q.pop())
                })
                .collect();
            let mut got: Vec<usize> = hs.into_iter().filter_map(|h| h.join().unwrap()).collect();
            got.sort();
            assert_eq!(got, vec![1, 2]);
            assert!(q.pop().is_none());
        });
    }

    /// MPMC: a producer and a consumer on each side of a one-unit-full 2-slot ring.
    #[test]
    fn loom_ring_mpmc() {
        model(|| {
            let q = Arc::new(RingQueue::<usize, true, true>::with_capacity(2));
            q.push(0);
            let (qa, qb) = (q.clone(), q.clone());
            let prod = loom::thread::spawn(move || qa.push(1));
            let cons = loom::thread::spawn(move || qb.pop());
            let mut got: Vec<usize> = Vec::new();
            got.extend(cons.join().unwrap());
            prod.join().unwrap();
            while let Some(v) = q.pop() {
                got.push(v);
            }
            got.sort();
            assert_eq!(got, vec![0, 1]);
        });
    }
}
