//! The context's two queues: the completion queue trigger drains, and the hand-off queue other threads post through.

use crate::sync::{lock, try_lock, AtomicBool, AtomicUsize, Mutex, Ordering};
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
    /// The queue, and whether it was closed (then it refuses items: nobody would post them).
    q: Mutex<(VecDeque<T>, bool)>,
    len: AtomicUsize,
    /// Set by `prepare_sleep` and read by `push`, both under `q`'s lock, which orders them.
    /// `end_sleep` clears it without the lock: the consumer is awake then, so a producer that
    /// still reads `true` only sends a spare wake-up.
    sleeping: AtomicBool,
}

impl<T> HandOff<T> {
    pub(crate) fn new() -> Self {
        HandOff {
            q: Mutex::new((VecDeque::new(), false)),
            len: AtomicUsize::new(0),
            sleeping: AtomicBool::new(false),
        }
    }

    /// Queues `item`; `Ok(true)` when the consumer may be blocked and must be woken, `Err(item)`
    /// once the queue is closed.
    pub(crate) fn push(&self, item: T) -> Result<bool, T> {
        let mut g = lock(&self.q);
        let (q, closed) = &mut *g;
        if *closed {
            return Err(item);
        }
        q.push_back(item);
        self.len.store(q.len(), Ordering::Release);
        Ok(self.sleeping.load(Ordering::Relaxed))
    }

    /// Closes the queue (later pushes are refused) and moves what it held into `out`. Under the
    /// queue's lock, so every item is either drained here or refused to its pusher: none is left
    /// behind for a consumer that is gone.
    pub(crate) fn close(&self, out: &mut VecDeque<T>) {
        let mut g = lock(&self.q);
        g.1 = true;
        out.extend(g.0.drain(..));
        self.len.store(0, Ordering::Release);
    }

    /// Moves every queued item into `out`.
    #[inline]
    pub(crate) fn take_all(&self, out: &mut VecDeque<T>) {
        // Inline: every progress pass checks, and almost every one finds nothing.
        if self.len.load(Ordering::Acquire) == 0 {
            return;
        }
        self.take_some(out);
    }

    /// [`HandOff::take_all`] when something may be queued.
    #[inline(never)]
    fn take_some(&self, out: &mut VecDeque<T>) {
        let mut g = lock(&self.q);
        let q = &mut g.0;
        if out.is_empty() {
            // Swap the queues: no item is copied, and the caller's emptied buffer becomes the
            // queue's, so steady state allocates nothing.
            std::mem::swap(q, out);
        } else {
            out.extend(q.drain(..));
        }
        self.len.store(0, Ordering::Release);
    }

    /// Announces a blocking wait; false (and no announcement) when work is already queued.
    pub(crate) fn prepare_sleep(&self) -> bool {
        let g = lock(&self.q);
        if !g.0.is_empty() {
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

    /// Posts `item` through `target` (the context's NA context) right away when nobody holds
    /// it, after what this queue held (so a thread's cancel never overtakes its own forward);
    /// otherwise queues it for the holder, a `progress`, to post. `Closed` gives the item back
    /// when `target` was torn down (`None`) or the queue closed.
    pub(crate) fn post_or_push<N>(
        &self,
        target: &Mutex<Option<N>>,
        item: T,
        mut post: impl FnMut(&N, T),
    ) -> Posted<T> {
        let Some(guard) = try_lock(target) else {
            return match self.push(item) {
                Ok(wake) => Posted::Queued { wake },
                Err(item) => Posted::Closed(item),
            };
        };
        let Some(n) = guard.as_ref() else {
            return Posted::Closed(item);
        };
        if !self.is_empty() {
            let mut earlier = VecDeque::new();
            self.take_all(&mut earlier);
            for e in earlier {
                post(n, e);
            }
        }
        post(n, item);
        Posted::Now
    }
}

/// What [`HandOff::post_or_push`] did with its item.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Posted<T> {
    /// Posted on the caller's thread.
    Now,
    /// Queued for the `progress` that holds the target; `wake` when it may be blocked.
    Queued {
        /// The holder announced a blocking wait: wake it.
        wake: bool,
    },
    /// The target is gone or the queue closed: the item comes back, unposted.
    Closed(T),
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::{Arc, AtomicBool};
    use loom::thread;

    fn model(f: impl Fn() + Sync + Send + 'static) {
        crate::sync::loom_model(2, f);
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

    /// Another thread pushes 7 and records whether the push asked for a wake-up.
    fn push_and_wake(h: &Arc<HandOff<u32>>) -> (thread::JoinHandle<()>, Arc<AtomicBool>) {
        let woken = Arc::new(AtomicBool::new(false));
        let (h, w) = (h.clone(), woken.clone());
        let producer = thread::spawn(move || {
            if h.push(7u32) == Ok(true) {
                w.store(true, Ordering::SeqCst);
            }
        });
        (producer, woken)
    }

    /// A forward handed over from another thread while progress decides to block: either
    /// progress sees the item, or the producer sees the announcement and wakes it. No lost
    /// wake-up, and the item is taken exactly once.
    #[test]
    fn loom_handoff_no_lost_wakeup() {
        model(|| {
            let h = Arc::new(HandOff::new());
            let (producer, woken) = push_and_wake(&h);
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
            let (producer, woken) = push_and_wake(&h);
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

    /// What a `progress` holding the NA context does with the hand-off queue: posts it all.
    fn post_queued(h: &HandOff<u32>, na: &Mutex<Vec<u32>>) {
        let mut q = VecDeque::new();
        h.take_all(&mut q);
        lock(na).extend(q.drain(..));
    }

    /// A forward posted directly or handed to a progress that holds the NA context and is
    /// about to block: it reaches NA exactly once, and a blocked progress is always woken.
    /// (Progress lets the NA context go before the join: loom counts a `try_lock` pending when
    /// another thread locks as blocked until that thread unlocks.)
    #[test]
    fn loom_post_or_push_never_lost() {
        model(|| {
            let h = Arc::new(HandOff::new());
            let na = Arc::new(Mutex::new(Some(Mutex::new(Vec::new()))));
            // 1: posted directly, 2: queued without a wake-up, 3: queued with one.
            let how = Arc::new(AtomicUsize::new(0));
            let producer = {
                let (h, na, how) = (h.clone(), na.clone(), how.clone());
                thread::spawn(move || {
                    let r = match h.post_or_push(&na, 7u32, |n, x| lock(n).push(x)) {
                        Posted::Now => 1,
                        Posted::Queued { wake: false } => 2,
                        Posted::Queued { wake: true } => 3,
                        Posted::Closed(_) => panic!("not closed"),
                    };
                    how.store(r, Ordering::SeqCst);
                })
            };
            // Progress: holds the NA context, posts what was queued, decides to block (and
            // stays blocked in NA, holding it, until woken or timed out).
            let (slept, posted_before) = {
                let g = lock(&na);
                let n = g.as_ref().unwrap();
                post_queued(&h, n);
                let slept = h.prepare_sleep();
                let posted = !lock(n).is_empty();
                (slept, posted)
            };
            producer.join().unwrap();
            if slept && !posted_before && how.load(Ordering::SeqCst) == 2 {
                panic!("queued to a blocked progress without waking it");
            }
            if slept {
                h.end_sleep();
            }
            let g = lock(&na);
            let n = g.as_ref().unwrap();
            post_queued(&h, n);
            assert_eq!(*lock(n), vec![7]);
        });
    }

    /// A forward handed off while its context is torn down on another thread: teardown's
    /// close drains it or its pusher gets it back (and fails it); it is never left queued with
    /// nobody to complete it. (With `post_or_push`, a `try_lock` that fails under teardown
    /// ends in this push; loom cannot make a `try_lock` fail, so the push is modelled alone.)
    #[test]
    fn loom_handoff_close_strands_nothing() {
        model(|| {
            let h = Arc::new(HandOff::new());
            let pusher = {
                let h = h.clone();
                thread::spawn(move || h.push(7u32).err().unwrap_or(0))
            };
            let mut drained = VecDeque::new();
            h.close(&mut drained);
            let refused = pusher.join().unwrap();
            let mut stranded = VecDeque::new();
            h.take_all(&mut stranded);
            assert!(stranded.is_empty(), "an item outlived the close");
            let mut seen: Vec<u32> = drained.into_iter().collect();
            if refused != 0 {
                seen.push(refused);
            }
            assert_eq!(seen, vec![7]);
        });
    }

    /// One thread's forward then cancel, each posted directly or queued, while progress takes
    /// the NA context and lets it go: NA sees them once each, in the thread's order.
    #[test]
    fn loom_post_or_push_keeps_a_threads_order() {
        model(|| {
            let h = Arc::new(HandOff::new());
            let na = Arc::new(Mutex::new(Some(Mutex::new(Vec::new()))));
            let producer = {
                let (h, na) = (h.clone(), na.clone());
                thread::spawn(move || {
                    for x in [1u32, 2] {
                        let r = h.post_or_push(&na, x, |n, x| lock(n).push(x));
                        assert_ne!(r, Posted::Closed(x));
                    }
                })
            };
            post_queued(&h, lock(&na).as_ref().unwrap());
            producer.join().unwrap();
            let g = lock(&na);
            let n = g.as_ref().unwrap();
            post_queued(&h, n);
            assert_eq!(*lock(n), vec![1, 2]);
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
