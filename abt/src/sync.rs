//! std / loom facade: the rest of the crate names only these, so `--cfg loom` checks the same code.
//!
//! `Slot` is the one-unit cell that the lock-free pools are built from: a `crossbeam_utils::AtomicCell`
//! of an `Option<Arc<_>>` (one pointer, so a plain atomic swap) under std; under loom a loom `Mutex`,
//! so loom sees every access and the index protocol around it is what the model checks.

#[cfg(loom)]
#[allow(unused_imports)]
pub(crate) use loom::sync::{
    atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering},
    Arc, Condvar, Mutex, MutexGuard,
};

#[cfg(not(loom))]
#[allow(unused_imports)]
pub(crate) use std::sync::{
    atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering},
    Arc, Condvar, Mutex, MutexGuard,
};

/// Run-once cells and weak references are not modelled by loom; they only guard set-once data
/// (a ULT's home stream), never a protocol the models check.
#[allow(unused_imports)]
pub(crate) use std::sync::{OnceLock, Weak};

/// Locks a mutex, recovering the data if a panicking thread poisoned it: every critical section in
/// this crate leaves its data consistent, and the layer must keep serving.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Waits on a condition variable with a timeout, ignoring poisoning (see [`lock`]).
pub(crate) fn wait_timeout<'a, T>(
    cv: &Condvar,
    g: MutexGuard<'a, T>,
    d: std::time::Duration,
) -> MutexGuard<'a, T> {
    match cv.wait_timeout(g, d) {
        Ok((g, _)) => g,
        Err(p) => p.into_inner().0,
    }
}

/// Waits on a condition variable, ignoring poisoning (see [`lock`]).
pub(crate) fn wait<'a, T>(cv: &Condvar, g: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    match cv.wait(g) {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// One cell of a lock-free queue: holds at most one value, moved in and out whole.
#[cfg(not(loom))]
pub(crate) struct Slot<T>(crossbeam_utils::atomic::AtomicCell<Option<T>>);

#[cfg(not(loom))]
impl<T> Slot<T> {
    pub(crate) fn new() -> Self {
        Slot(crossbeam_utils::atomic::AtomicCell::new(None))
    }
    /// Stores `v`; returns what was there (the queues assert it was empty).
    #[inline]
    pub(crate) fn put(&self, v: T) -> Option<T> {
        self.0.swap(Some(v))
    }
    /// Takes the value out.
    #[inline]
    pub(crate) fn take(&self) -> Option<T> {
        self.0.swap(None)
    }
}

/// One cell of a lock-free queue (loom build: a modelled mutex).
#[cfg(loom)]
pub(crate) struct Slot<T>(loom::sync::Mutex<Option<T>>);

#[cfg(loom)]
impl<T> Slot<T> {
    pub(crate) fn new() -> Self {
        Slot(loom::sync::Mutex::new(None))
    }
    pub(crate) fn put(&self, v: T) -> Option<T> {
        self.0.lock().unwrap().replace(v)
    }
    pub(crate) fn take(&self) -> Option<T> {
        self.0.lock().unwrap().take()
    }
}

/// Process-wide, set-once or never-modelled state (the stack arena, the signal handler install)
/// uses std directly even under loom: loom objects cannot live in statics, and none of this is a
/// protocol the models check.
#[allow(unused_imports)]
pub(crate) use std::sync::{Mutex as StdMutex, Once as StdOnce};

/// Work units are reference counted with std's `Arc` in both builds: the context switch code hands
/// out raw pointers to them (`Arc::as_ptr` / `from_raw`), which loom's `Arc` does not offer. The
/// state machines around units are modelled on their own (`ult::state`, `sync_ult::*`).
pub(crate) use std::sync::Arc as StdArc;

/// Protocol-guarded cells and the spin lock of the ULT primitives (the crate's own unsafe code for
/// them lives in `cell.rs`).
pub(crate) use crate::cell::{HandOff, HandOffPtr, SpinGuard, SpinMutex, UnsyncCell};

/// Takes a [`SpinMutex`] (the lock of the ULT primitives' state).
#[inline]
pub(crate) fn spin<T>(m: &SpinMutex<T>) -> SpinGuard<'_, T> {
    m.lock()
}

/// Runs a loom model exploring at most `preemptions` preemptions per execution: every model in
/// this crate is bounded so (2, or fewer), which keeps the whole loom run within minutes on 2
/// cores.
#[cfg(all(test, loom))]
pub(crate) fn loom_model(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(preemptions);
    b.check(f);
}
