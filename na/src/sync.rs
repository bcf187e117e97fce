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
    Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard,
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

/// Locks a mutex, recovering the data if a panicking thread poisoned it: a poisoned queue is still
/// structurally valid (every critical section here leaves it consistent), and the layer must keep serving.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Read-locks an `RwLock`, recovering from poisoning as [`lock`] does.
#[allow(dead_code)]
pub(crate) fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    match m.read() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Write-locks an `RwLock`, recovering from poisoning as [`lock`] does.
#[allow(dead_code)]
pub(crate) fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    match m.write() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
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
