//! `LockPool`: a `VecDeque` behind a lock, for PRIV (uncontended: the owner alone) and MPMC pools.

use super::{Access, Common, Notify, Pool, PoolKind};
use crate::sync::{lock, AtomicUsize, Mutex, Ordering};
use crate::unit::Unit;
use crossbeam_utils::CachePadded;
use std::collections::VecDeque;
use std::time::Duration;

/// A FIFO queue under a mutex. Generic so loom models can fill it with plain values.
pub(crate) struct LockQueue<T> {
    q: CachePadded<Mutex<VecDeque<T>>>,
    len: AtomicUsize,
}

impl<T> LockQueue<T> {
    pub(crate) fn new() -> Self {
        LockQueue {
            q: CachePadded::new(Mutex::new(VecDeque::new())),
            len: AtomicUsize::new(0),
        }
    }
    pub(crate) fn push(&self, v: T) {
        let mut q = lock(&self.q);
        q.push_back(v);
        self.len.store(q.len(), Ordering::Relaxed);
    }
    pub(crate) fn pop(&self) -> Option<T> {
        if self.len.load(Ordering::Relaxed) == 0 {
            // Cheap empty check for idle polling; a push racing this is seen on the next poll
            // (and wakes the consumer through the notify path).
            return None;
        }
        let mut q = lock(&self.q);
        let v = q.pop_front();
        self.len.store(q.len(), Ordering::Relaxed);
        v
    }
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

/// A pool over a `VecDeque` under a mutex, for every access mode: the second `Pool`
/// implementation, the reference the conformance suite also runs.
pub struct LockPool {
    q: LockQueue<Unit>,
    common: Common,
}

impl LockPool {
    /// A new empty pool.
    pub fn new(kind: PoolKind, access: Access) -> Self {
        LockPool {
            q: LockQueue::new(),
            common: Common::new(kind, access),
        }
    }
}

impl Pool for LockPool {
    fn push(&self, unit: Unit) {
        self.q.push(unit);
        self.common.pushed();
    }
    fn pop(&self) -> Option<Unit> {
        self.q.pop()
    }
    fn pop_wait(&self, timeout: Duration) -> Option<Unit> {
        self.common.pop_wait(timeout, || self.q.pop())
    }
    fn len(&self) -> usize {
        self.q.len()
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
}

#[cfg(all(test, loom))]
mod tests {
    use super::*;
    use crate::sync::Arc;

    /// MPMC through the lock: two producers, a consumer racing them; nothing lost or doubled.
    #[test]
    fn loom_lock_queue_mpmc() {
        crate::sync::loom_model(2, || {
            let q = Arc::new(LockQueue::new());
            let hs: Vec<_> = (0..2)
                .map(|i| {
                    let q = q.clone();
                    loom::thread::spawn(move || q.push(i))
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
            got.sort();
            assert_eq!(got, vec![0, 1]);
        });
    }
}
