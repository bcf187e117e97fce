//! `Future` (`ABT_future`): N compartments; waiters wake when the last is set, after a callback.

use crate::error::{Error, Result};
use crate::sync::{spin as lock, SpinMutex as Mutex};
use crate::unit::Waiter;

/// The callback run by whoever sets the last compartment, with all values.
pub type FutureCallback<T> = Box<dyn FnOnce(&[T]) + Send>;

struct Inner<T> {
    values: Vec<T>,
    waiters: Vec<Waiter>,
    callback: Option<FutureCallback<T>>,
}

/// A future with `n` compartments (`ABT_future`).
#[doc(alias = "ABT_future")]
pub struct Future<T> {
    n: usize,
    inner: Mutex<Inner<T>>,
}

impl<T: Clone> Future<T> {
    /// A future of `n` compartments (`ABT_future_create`) with an optional callback, run with all
    /// values by whoever sets the last compartment, before the waiters wake.
    #[doc(alias = "ABT_future_create")]
    pub fn new(n: usize, callback: Option<FutureCallback<T>>) -> Self {
        Future {
            n,
            inner: Mutex::new(Inner {
                values: Vec::with_capacity(n),
                waiters: Vec::new(),
                callback,
            }),
        }
    }
    fn ready(&self, g: &Inner<T>) -> bool {
        g.values.len() >= self.n
    }
    /// Fills one compartment (`ABT_future_set`); `Error::FutureFull` when all are set.
    #[doc(alias = "ABT_future_set")]
    pub fn set(&self, v: T) -> Result<()> {
        let (cb, ws, vals) = {
            let mut g = lock(&self.inner);
            if self.ready(&g) {
                return Err(Error::FutureFull);
            }
            g.values.push(v);
            if !self.ready(&g) {
                return Ok(());
            }
            let cb = g.callback.take();
            let vals = if cb.is_some() {
                g.values.clone()
            } else {
                Vec::new()
            };
            (cb, std::mem::take(&mut g.waiters), vals)
        };
        if let Some(cb) = cb {
            cb(&vals);
        }
        for w in ws {
            w.wake();
        }
        Ok(())
    }
    /// Waits until every compartment is set; returns the values in set order (`ABT_future_wait`).
    #[doc(alias = "ABT_future_wait")]
    pub fn wait(&self) -> Vec<T> {
        loop {
            let w = Waiter::prepare();
            let h = w.handle();
            {
                let mut g = lock(&self.inner);
                if self.ready(&g) {
                    let v = g.values.clone();
                    drop(g);
                    w.cancel();
                    return v;
                }
                g.waiters.push(w);
            }
            h.wait();
        }
    }
    /// Whether every compartment is set (`ABT_future_test`).
    #[doc(alias = "ABT_future_test")]
    pub fn test(&self) -> bool {
        self.ready(&lock(&self.inner))
    }
}

#[cfg(all(test, loom))]
mod tests {
    use super::*;
    use crate::sync::{Arc, AtomicUsize, Ordering};

    /// Two setters race to fill two compartments while a waiter waits; the callback runs once, the
    /// waiter sees both values.
    #[test]
    fn loom_future_two_setters() {
        crate::sync::loom_model(2, || {
            let calls = Arc::new(AtomicUsize::new(0));
            let c2 = calls.clone();
            let f = Arc::new(Future::<u32>::new(
                2,
                Some(Box::new(move |v: &[u32]| {
                    assert_eq!(v.len(), 2);
                    c2.fetch_add(1, Ordering::SeqCst);
                })),
            ));
            let hs: Vec<_> = (0..2)
                .map(|i| {
                    let f = f.clone();
                    loom::thread::spawn(move || f.set(i).unwrap())
                })
                .collect();
            let mut v = f.wait();
            for h in hs {
                h.join().unwrap();
            }
            v.sort();
            assert_eq!(v, vec![0, 1]);
            assert_eq!(calls.load(Ordering::SeqCst), 1);
            assert!(f.set(9).is_err());
        });
    }
}
