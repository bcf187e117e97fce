//! std / loom facade: the rest of the crate names only these, so `--cfg loom` checks the same code.

#[cfg(loom)]
#[allow(unused_imports)]
pub(crate) use loom::sync::{
    atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    Arc, Mutex, MutexGuard, RwLock,
};

#[cfg(not(loom))]
#[allow(unused_imports)]
pub(crate) use std::sync::{
    atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    Arc, Mutex, MutexGuard, RwLock,
};

/// Locks a mutex, recovering the data if a panicking thread poisoned it: every critical section
/// here leaves its data consistent, and the layer must keep serving (a handler panic is caught at
/// the trigger, DESIGN §2).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Locks a mutex if nobody holds it (poison recovered as in [`lock`]); `None` when it is held,
/// by another thread or by this one.
pub(crate) fn try_lock<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    // loom's mutex reports std's error type too.
    use std::sync::TryLockError;
    match m.try_lock() {
        Ok(g) => Some(g),
        Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

/// The write guard of the facade's `RwLock`.
#[cfg(not(loom))]
pub(crate) type MutexGuardLike<'a, T> = std::sync::RwLockWriteGuard<'a, T>;
/// The write guard of the facade's `RwLock`.
#[cfg(loom)]
pub(crate) type MutexGuardLike<'a, T> = loom::sync::RwLockWriteGuard<'a, T>;
/// The read guard of the facade's `RwLock`.
#[cfg(not(loom))]
pub(crate) type ReadGuardLike<'a, T> = std::sync::RwLockReadGuard<'a, T>;
/// The read guard of the facade's `RwLock`.
#[cfg(loom)]
pub(crate) type ReadGuardLike<'a, T> = loom::sync::RwLockReadGuard<'a, T>;

/// The `Arc` of values the public API hands to and from users (handlers, context data): plain
/// std, under loom too, since users build them and loom models only our own shared state.
pub(crate) use std::sync::Arc as UserArc;
