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
    pub fn drain_into(&self, out: &mut Vec<Completion>) -> usize {
        if self.len.load(Ordering::Acquire) == 0 {
            return 0;
        }
        let mut q = lock(&self.queue);
        let n = q.len();
        out.extend(q.drain(..));
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
