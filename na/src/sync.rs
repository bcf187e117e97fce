//! std / loom facade: the rest of the crate names only these, so `--cfg loom` checks the same code.

#[cfg(loom)]
#[allow(unused_imports)]
pub(crate) use loom::sync::{
    atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering},
    Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard,
};

#[cfg(not(loom))]
#[allow(unused_imports)]
pub(crate) use std::sync::{
    atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering},
    Arc,
};

// parking_lot's locks outside loom: std's poison bookkeeping reads the global panic count on
// every lock and unlock, and an RPC's critical path takes some twenty locks per side (na's AV,
// endpoint state and domain serialization, the completion queue, …). Poisoning is no loss:
// every critical section here leaves its data consistent, and `lock` below already ignored it.
#[cfg(not(loom))]
#[allow(unused_imports)]
pub(crate) use parking_lot::{
    Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard,
};

/// Yields the thread (a loom scheduling point under loom).
#[cfg(loom)]
#[allow(unused_imports)]
pub(crate) use loom::thread::yield_now;
/// Yields the thread (a loom scheduling point under loom).
#[cfg(not(loom))]
#[allow(unused_imports)]
pub(crate) use std::thread::yield_now;

/// Process-global lazily built values (the default inproc fabric). std's under loom too: loom has
/// no `OnceLock`, and loom models never touch process globals.
#[allow(unused_imports)]
pub(crate) use std::sync::OnceLock;

/// Locks a mutex. Under loom (std-like locks) a poisoned lock is recovered: every critical
/// section here leaves its data consistent, and the layer must keep serving.
#[cfg(loom)]
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}
/// Locks a mutex (parking_lot's never poisons).
#[cfg(not(loom))]
#[inline]
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock()
}

/// Consumes a mutex and returns its data (poison recovered under loom, as in [`lock`]).
#[cfg(loom)]
pub(crate) fn into_inner<T>(m: Mutex<T>) -> T {
    m.into_inner().unwrap_or_else(|p| p.into_inner())
}
/// Consumes a mutex and returns its data.
#[cfg(not(loom))]
#[inline]
pub(crate) fn into_inner<T>(m: Mutex<T>) -> T {
    m.into_inner()
}

/// Read-locks an `RwLock`, recovering from poisoning as [`lock`] does.
#[cfg(loom)]
#[allow(dead_code)]
pub(crate) fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    match m.read() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}
/// Read-locks an `RwLock`.
#[cfg(not(loom))]
#[allow(dead_code)]
#[inline]
pub(crate) fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read()
}

/// Write-locks an `RwLock`, recovering from poisoning as [`lock`] does.
#[cfg(loom)]
#[allow(dead_code)]
pub(crate) fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    match m.write() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}
/// Write-locks an `RwLock`.
#[cfg(not(loom))]
#[allow(dead_code)]
#[inline]
pub(crate) fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write()
}

/// Waits on `cv`, releasing and re-taking `g`'s lock; `None` waits without a time limit.
/// Returns the guard (spurious wake-ups are the caller's to loop over).
#[cfg(loom)]
pub(crate) fn wait<'a, T>(
    cv: &Condvar,
    g: MutexGuard<'a, T>,
    timeout: Option<std::time::Duration>,
) -> MutexGuard<'a, T> {
    match timeout {
        None => match cv.wait(g) {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        },
        Some(t) => match cv.wait_timeout(g, t) {
            Ok((g, _)) => g,
            Err(p) => p.into_inner().0,
        },
    }
}
/// Waits on `cv`, releasing and re-taking `g`'s lock; `None` waits without a time limit.
/// Returns the guard (spurious wake-ups are the caller's to loop over).
#[cfg(not(loom))]
pub(crate) fn wait<'a, T>(
    cv: &Condvar,
    mut g: MutexGuard<'a, T>,
    timeout: Option<std::time::Duration>,
) -> MutexGuard<'a, T> {
    match timeout {
        None => cv.wait(&mut g),
        Some(t) => {
            cv.wait_for(&mut g, t);
        }
    }
    g
}

/// Builds an `Arc<dyn Trait>` from a value. loom's `Arc` has no unsized coercion, so under loom the
/// value goes through a std `Arc` first (`loom::sync::Arc::from_std`).
#[cfg(loom)]
macro_rules! arc_dyn {
    ($v:expr => $t:ty) => {
        loom::sync::Arc::<$t>::from_std(std::sync::Arc::new($v) as std::sync::Arc<$t>)
    };
}
/// Builds an `Arc<dyn Trait>` from a value (see the loom variant).
#[cfg(not(loom))]
macro_rules! arc_dyn {
    ($v:expr => $t:ty) => {
        std::sync::Arc::new($v) as std::sync::Arc<$t>
    };
}
pub(crate) use arc_dyn;

/// Runs a loom model exploring at most `preemptions` preemptions per execution: every model in
/// this crate is bounded so (2, or fewer), which keeps the whole loom run within minutes on 2
/// cores.
#[cfg(all(test, loom))]
pub(crate) fn loom_model(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(preemptions);
    b.check(f);
}
