//! Removed peers (`HG_Addr_set_remove`) as a class-wide log that each context reads at its own pace, to let go of what it holds for those peers.

use crate::sync::{lock, AtomicU64, Mutex, Ordering};
use std::collections::VecDeque;

/// How many removals the log keeps. A context that fell further behind misses the oldest ones;
/// what it holds for them is still released by its deadline (`InitOptions::overflow_ack_timeout`)
/// or at teardown.
pub(crate) const KEEP: usize = 256;

/// Removals numbered from 1, newest last. Writers append under the lock, then publish the
/// newest number; a context compares that number with the last one it handled (one atomic
/// load per progress round) and takes the lock only when something new is there.
pub(crate) struct RemovedPeers<T> {
    log: Mutex<VecDeque<(u64, T)>>,
    newest: AtomicU64,
}

impl<T: Clone> RemovedPeers<T> {
    pub(crate) fn new() -> RemovedPeers<T> {
        RemovedPeers {
            log: Mutex::new(VecDeque::new()),
            newest: AtomicU64::new(0),
        }
    }

    /// Records that `peer` was removed.
    pub(crate) fn push(&self, peer: T) {
        let mut log = lock(&self.log);
        let n = log.back().map_or(0, |(n, _)| *n) + 1;
        log.push_back((n, peer));
        if log.len() > KEEP {
            log.pop_front();
        }
        // Published under the lock, after the entry: a reader that sees `n` finds the entry.
        self.newest.store(n, Ordering::Release);
    }

    /// The number of the newest removal (0: none yet).
    pub(crate) fn newest(&self) -> u64 {
        self.newest.load(Ordering::Acquire)
    }

    /// Appends to `out` every peer removed after removal `seen`; returns the newest number,
    /// which the caller passes as `seen` next time.
    pub(crate) fn since(&self, seen: u64, out: &mut Vec<T>) -> u64 {
        if self.newest() == seen {
            return seen;
        }
        let log = lock(&self.log);
        out.extend(
            log.iter()
                .filter(|(n, _)| *n > seen)
                .map(|(_, p)| p.clone()),
        );
        log.back().map_or(seen, |(n, _)| *n)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn each_removal_is_read_once_and_the_log_is_bounded() {
        let r = RemovedPeers::new();
        let mut out = Vec::new();
        assert_eq!(r.since(0, &mut out), 0);
        r.push(1);
        r.push(2);
        let seen = r.since(0, &mut out);
        assert_eq!((seen, out.as_slice()), (2, &[1, 2][..]));
        out.clear();
        assert_eq!(r.since(seen, &mut out), 2);
        assert!(out.is_empty());
        for i in 0..(KEEP as u32 + 10) {
            r.push(100 + i);
        }
        let seen2 = r.since(seen, &mut out);
        assert_eq!(out.len(), KEEP);
        assert_eq!(seen2, 2 + KEEP as u64 + 10);
        assert_eq!(out.last(), Some(&(100 + KEEP as u32 + 9)));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::Arc;

    /// Two removers and a context reading concurrently: once everyone is done, the reader has
    /// seen every removal exactly once (none lost between the number and the entry, none twice).
    #[test]
    fn loom_removed_peers_seen_once() {
        crate::sync::loom_model(2, || {
            let r = Arc::new(RemovedPeers::new());
            let ws: Vec<_> = [1u32, 2]
                .into_iter()
                .map(|p| {
                    let r = r.clone();
                    loom::thread::spawn(move || r.push(p))
                })
                .collect();
            let mut got = Vec::new();
            let seen = r.since(0, &mut got);
            for w in ws {
                w.join().unwrap();
            }
            r.since(seen, &mut got);
            got.sort_unstable();
            assert_eq!(got, vec![1, 2]);
        });
    }
}
