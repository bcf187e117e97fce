//! Parks an OS thread until notified or a timeout: the idle wait of FIFO_WAIT pools and of streams.

use crate::sync::{lock, AtomicU32, AtomicU64, Condvar, Mutex, Ordering};
use std::time::Duration;

const EMPTY: u32 = 0;
const PARKED: u32 = 1;
const NOTIFIED: u32 = 2;

/// A one-waiter parker with a counter of the times it actually slept.
pub(crate) struct Parker {
    state: AtomicU32,
    m: Mutex<()>,
    cv: Condvar,
    parks: AtomicU64,
}

impl Parker {
    pub(crate) fn new() -> Self {
        Parker {
            state: AtomicU32::new(EMPTY),
            m: Mutex::new(()),
            cv: Condvar::new(),
            parks: AtomicU64::new(0),
        }
    }

    /// Wakes the parked thread, or makes its next `park` return at once.
    #[inline]
    pub(crate) fn unpark(&self) {
        if self.state.swap(NOTIFIED, Ordering::AcqRel) == PARKED {
            // Taking the lock orders this notify after the parker's check under the same lock.
            drop(lock(&self.m));
            self.cv.notify_one();
        }
    }

    /// Sleeps until `unpark` (possibly one that came before this call) or the timeout.
    /// Callers re-check their condition afterwards; spurious returns are allowed.
    pub(crate) fn park(&self, timeout: Option<Duration>) {
        if self
            .state
            .compare_exchange(NOTIFIED, EMPTY, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return;
        }
        let mut g = lock(&self.m);
        if self
            .state
            .compare_exchange(EMPTY, PARKED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Notified between the two checks.
            self.state.store(EMPTY, Ordering::Release);
            return;
        }
        self.parks.fetch_add(1, Ordering::Relaxed);
        loop {
            g = match timeout {
                Some(d) => crate::sync::wait_timeout(&self.cv, g, d),
                None => crate::sync::wait(&self.cv, g),
            };
            if self
                .state
                .compare_exchange(NOTIFIED, EMPTY, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return;
            }
            if timeout.is_some() {
                // Timed out (or spurious): stop being PARKED; a racing notify leaves NOTIFIED for
                // the next park, which then returns at once.
                let _ =
                    self.state
                        .compare_exchange(PARKED, EMPTY, Ordering::AcqRel, Ordering::Acquire);
                return;
            }
        }
    }

    /// How many times `park` actually slept.
    pub(crate) fn park_count(&self) -> u64 {
        self.parks.load(Ordering::Relaxed)
    }
}

#[cfg(all(test, loom))]
mod tests {
    use super::*;
    use crate::sync::{Arc, AtomicBool};

    /// The stop / join event path of a parked stream: the stream loops "check the request, else
    /// park"; a joiner sets the request and unparks. The stream must always see it and exit (loom
    /// reports a deadlock if a wake-up could be lost).
    #[test]
    fn loom_stop_join_event_path() {
        crate::sync::loom_model(2, || {
            let p = Arc::new(Parker::new());
            let stop = Arc::new(AtomicBool::new(false));
            let (p2, s2) = (p.clone(), stop.clone());
            let stream = loom::thread::spawn(move || {
                while !s2.load(Ordering::Acquire) {
                    p2.park(None);
                }
            });
            stop.store(true, Ordering::Release);
            p.unpark();
            stream.join().unwrap();
        });
    }
}
