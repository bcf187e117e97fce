//! The context's two queues: the completion queue trigger drains, and the hand-off queue other threads post through.

use crate::sync::{lock, AtomicBool, AtomicUsize, Mutex, Ordering};
use std::collections::VecDeque;

/// Callbacks ready to run (`hg_completion_queue`). Progress (and, for operations that fail at
/// once or are canceled, any thread) pushes; the thread calling trigger pops. Each entry is popped
/// exactly once.
pub(crate) struct CompletionQueue<T> {
    q: Mutex<VecDeque<T>>,
    len: AtomicUsize,
}

impl<T> CompletionQueue<T> {
    pub(crate) fn new() -> Self {
        CompletionQueue {
            q: Mutex::new(VecDeque::new()),
            len: AtomicUsize::new(0),
        }
    }

    pub(crate) fn push(&self, e: T) {
        let mut q = lock(&self.q);
        q.push_back(e);
        self.len.store(q.len(), Ordering::Release);
    }

    pub(crate) fn pop(&self) -> Option<T> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut q = lock(&self.q);
        let e = q.pop_front();
        self.len.store(q.len(), Ordering::Release);
        e
    }

    /// Moves up to `max` entries, oldest first, into `out` under one lock (the whole queue, by
    /// swapping storage, when it fits and `out` is empty).
    pub(crate) fn pop_batch(&self, max: usize, out: &mut VecDeque<T>) {
        if self.len.load(Ordering::Acquire) == 0 || max == 0 {
            return;
        }
        let mut q = lock(&self.q);
        if max >= q.len() && out.is_empty() {
            std::mem::swap(&mut *q, out);
        } else {
            let n = max.min(q.len());
            out.extend(q.drain(..n));
        }
        self.len.store(q.len(), Ordering::Release);
    }

    /// A racy hint while other threads push.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }
}

/// Work handed to a context by any thread and posted by the next `progress` (DESIGN §1).
///
/// The consumer announces under the queue's lock that it is about to block, after checking the
/// queue is empty; a producer pushes and reads the announcement under the same lock, and wakes
/// the consumer when it is set. The lock orders the two, so either the consumer finds the item or
/// the producer sends a wake-up. (An earlier version paired two sequentially consistent atomics,
/// Dekker-style; the loom model below could not prove it, since loom does not model SeqCst
/// fully, so the protocol now rests on the mutex alone.)
pub(crate) struct HandOff<T> {
    q: Mutex<VecDeque<T>>,
    len: AtomicUsize,
    /// Set by `prepare_sleep` and read by `push`, both under `q`'s lock, which orders them.
    /// `end_sleep` clears it without the lock: the consumer is awake then, so a producer that
    /// still reads `true` only sends a spare wake-up.
    sleeping: AtomicBool,
}

impl<T> HandOff<T> {
    pub(crate) fn new() -> Self {
        HandOff {
            q: Mutex::new(VecDeque::new()),
            len: AtomicUsize::new(0),
            sleeping: AtomicBool::new(false),
        }
    }

    /// Queues `item`; returns true when the consumer may be blocked and must be woken.
    pub(crate) fn push(&self, item: T) -> bool {
        let mut q = lock(&self.q);
        q.push_back(item);
        self.len.store(q.len(), Ordering::Release);
        self.sleeping.load(Ordering::Relaxed)
    }

    /// Moves every queued item into `out`.
    pub(crate) fn take_all(&self, out: &mut VecDeque<T>) {
        if self.len.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut q = lock(&self.q);
        if out.is_empty() {
            // Swap the queues: no item is copied, and the caller's emptied buffer becomes the
            // queue's, so steady state allocates nothing.
            std::mem::swap(&mut *q, out);
        } else {
            out.extend(q.drain(..));
        }
        self.len.store(0, Ordering::Release);
    }

    /// Announces a blocking wait; false (and no announcement) when work is already queued.
    pub(crate) fn prepare_sleep(&self) -> bool {
        let q = lock(&self.q);
        if !q.is_empty() {
            return false;
        }
        self.sleeping.store(true, Ordering::Relaxed);
        true
    }

    /// Ends the wait announced by `prepare_sleep` (no lock: see `sleeping`).
    pub(crate) fn end_sleep(&self) {
        self.sleeping.store(false, Ordering::Relaxed);
    }

    /// A racy hint: true when nothing seems queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::{Arc, AtomicBool};
    use loom::thread;

    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(2);
        b.check(f);
    }

    /// Two producers and the consumer on one queue: every entry comes out exactly once.
    #[test]
    fn loom_completion_queue_exactly_once() {
        model(|| {
            let q = Arc::new(CompletionQueue::new());
            let p1 = {
                let q = q.clone();
                thread::spawn(move || q.push(1u32))
            };
            let p2 = {
                let q = q.clone();
                thread::spawn(move || q.push(2u32))
            };
            let mut got = Vec::new();
            if let Some(e) = q.pop() {
                got.push(e);
            }
            p1.join().unwrap();
            p2.join().unwrap();
            while let Some(e) = q.pop() {
                got.push(e);
            }
            got.sort();
            assert_eq!(got, vec![1, 2]);
            assert_eq!(q.len(), 0);
        });
    }

    /// A forward handed over from another thread while progress decides to block: either
    /// progress sees the item, or the producer sees the announcement and wakes it. No lost
    /// wake-up, and the item is taken exactly once.
    #[test]
    fn loom_handoff_no_lost_wakeup() {
        model(|| {
            let h = Arc::new(HandOff::new());
            let woken = Arc::new(AtomicBool::new(false));
            let producer = {
                let (h, woken) = (h.clone(), woken.clone());
                thread::spawn(move || {
                    if h.push(7u32) {
                        woken.store(true, Ordering::SeqCst);
                    }
                })
            };
            let mut got = VecDeque::new();
            let slept = h.prepare_sleep();
            if !slept {
                h.take_all(&mut got);
            }
            producer.join().unwrap();
            if slept {
                // Blocked: only a wake-up gets progress going again.
                assert!(woken.load(Ordering::SeqCst), "lost wake-up");
                h.end_sleep();
            }
            h.take_all(&mut got);
            assert_eq!(got, vec![7]);
        });
    }

    /// Progress sleeps, wakes (end_sleep, without the lock) and decides to sleep again while a
    /// producer hands work over: whenever the second sleep finds nothing queued, the producer
    /// saw that announcement and woke it; a stale announcement only costs a spare wake-up.
    #[test]
    fn loom_handoff_sleep_again_no_lost_wakeup() {
        model(|| {
            let h = Arc::new(HandOff::new());
            let woken = Arc::new(AtomicBool::new(false));
            let producer = {
                let (h, woken) = (h.clone(), woken.clone());
                thread::spawn(move || {
                    if h.push(7u32) {
                        woken.store(true, Ordering::SeqCst);
                    }
                })
            };
            let mut got = VecDeque::new();
            if h.prepare_sleep() {
                // Woken by a timeout, say.
                h.end_sleep();
            }
            h.take_all(&mut got);
            let slept = got.is_empty() && h.prepare_sleep();
            producer.join().unwrap();
            if slept {
                assert!(woken.load(Ordering::SeqCst), "lost wake-up");
                h.end_sleep();
            }
            h.take_all(&mut got);
            assert_eq!(got, vec![7]);
        });
    }

    /// Producers push while trigger takes batches: every entry comes out once, each
    /// producer's in order, and `len` ends at zero.
    #[test]
    fn loom_completion_queue_batches_exactly_once() {
        model(|| {
            let q = Arc::new(CompletionQueue::new());
            let p = {
                let q = q.clone();
                thread::spawn(move || {
                    q.push(1u32);
                    q.push(2u32);
                })
            };
            let mut batch = VecDeque::new();
            let mut got = Vec::new();
            q.pop_batch(1, &mut batch);
            got.extend(batch.drain(..));
            q.push(3u32);
            p.join().unwrap();
            q.pop_batch(usize::MAX, &mut batch);
            got.extend(batch.drain(..));
            assert_eq!(q.len(), 0);
            let mut sorted = got.clone();
            sorted.sort();
            assert_eq!(sorted, vec![1, 2, 3]);
            let pos = |x| got.iter().position(|&y| y == x).unwrap();
            assert!(pos(1) < pos(2));
        });
    }
}
