//! The context's completion queue: plugins push completions, the context's caller drains them.

use crate::op::Completion;
use crate::sync::{lock, AtomicUsize, Mutex, Ordering};
use std::collections::VecDeque;

/// Completions waiting for the caller (`na_cq`). Any thread may push (a plugin completing an
/// operation during progress, a post failing at once, a cancel); the context's driver pops.
#[derive(Debug, Default)]
pub struct CompletionQueue {
    queue: Mutex<VecDeque<Completion>>,
    len: AtomicUsize,
}

impl CompletionQueue {
    /// An empty queue.
    pub fn new() -> CompletionQueue {
        CompletionQueue::default()
    }

    /// Adds one completion.
    pub fn push(&self, c: Completion) {
        let mut q = lock(&self.queue);
        q.push_back(c);
        self.len.store(q.len(), Ordering::Release);
    }

    /// Takes the oldest completion.
    pub fn pop(&self) -> Option<Completion> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut q = lock(&self.queue);
        let c = q.pop_front();
        self.len.store(q.len(), Ordering::Release);
        c
    }

    /// Moves every waiting completion into `out`; returns how many.
    #[inline]
    pub fn drain_into(&self, out: &mut Vec<Completion>) -> usize {
        // Inline and apart from the rest: an empty poll pays a load and a branch, not the
        // whole function's register saves.
        if self.len.load(Ordering::Acquire) == 0 {
            return 0;
        }
        self.drain_some(out)
    }

    /// [`CompletionQueue::drain_into`] when something may be waiting.
    #[inline(never)]
    fn drain_some(&self, out: &mut Vec<Completion>) -> usize {
        let mut q = lock(&self.queue);
        let n = q.len();
        if out.is_empty() {
            // Swap the storage instead of moving completions one by one: the caller's emptied
            // vector becomes the queue (`Vec` -> `VecDeque` is free), and the queue's deque
            // becomes the caller's vector (free too while it has not wrapped, as between drains
            // when only pushes happen; otherwise its elements move once, in place).
            let spare = VecDeque::from(std::mem::take(out));
            *out = Vec::from(std::mem::replace(&mut *q, spare));
        } else {
            out.extend(q.drain(..));
        }
        self.len.store(0, Ordering::Release);
        n
    }

    /// Completions waiting (a racy hint while other threads push).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::op::{Completion, OpId, OpKind};
    use crate::sync::Arc;
    use loom::thread;

    fn completion(id: u64) -> Completion {
        Completion {
            op: OpId(id),
            kind: OpKind::Put,
            user: id,
            result: Ok(()),
            buf: None,
            len: 0,
            source: None,
            tag: 0,
        }
    }

    /// Two producers push while the consumer pops and drains: every completion comes out once,
    /// each producer's in its order, and `len` never hides a waiting one.
    #[test]
    fn loom_cq_two_producers_one_consumer() {
        crate::sync::loom_model(2, || {
            let q = Arc::new(CompletionQueue::new());
            let ts: Vec<_> = [[1u64, 2], [3, 4]]
                .into_iter()
                .map(|ids| {
                    let q = q.clone();
                    thread::spawn(move || {
                        for id in ids {
                            q.push(completion(id));
                        }
                    })
                })
                .collect();
            let mut seen = Vec::new();
            if let Some(c) = q.pop() {
                seen.push(c.op.0);
            }
            for t in ts {
                t.join().unwrap();
            }
            assert!(!q.is_empty() || seen.len() == 4);
            let mut rest = Vec::new();
            q.drain_into(&mut rest);
            seen.extend(rest.iter().map(|c| c.op.0));
            assert!(q.is_empty());
            let mut sorted = seen.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, [1, 2, 3, 4]);
            let pos = |x| seen.iter().position(|&y| y == x).unwrap();
            assert!(pos(1) < pos(2) && pos(3) < pos(4));
        });
    }
}
