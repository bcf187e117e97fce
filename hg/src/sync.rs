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
    Arc,
};

// parking_lot's locks outside loom (as in na): no poison bookkeeping on each lock and unlock
// of the context, handle and queue locks an RPC takes on its critical path.
#[cfg(not(loom))]
#[allow(unused_imports)]
pub(crate) use parking_lot::{Mutex, MutexGuard, RwLock};

/// Locks a mutex. Under loom (std-like locks) a poisoned lock is recovered: every critical
/// section here leaves its data consistent, and the layer must keep serving (a handler panic is
/// caught at the trigger, DESIGN §2). parking_lot's locks, used otherwise, never poison.
#[cfg(loom)]
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}
/// Locks a mutex.
#[cfg(not(loom))]
#[inline]
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock()
}

/// The data of a mutex its owner holds exclusively (no locking; poison recovered under loom).
#[cfg(loom)]
pub(crate) fn get_mut<T>(m: &mut Mutex<T>) -> &mut T {
    match m.get_mut() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}
/// The data of a mutex its owner holds exclusively (no locking).
#[cfg(not(loom))]
#[inline]
pub(crate) fn get_mut<T>(m: &mut Mutex<T>) -> &mut T {
    m.get_mut()
}

/// Locks a mutex if nobody holds it; `None` when it is held, by another thread or by this one.
#[cfg(loom)]
pub(crate) fn try_lock<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    // loom's mutex reports std's error type.
    use std::sync::TryLockError;
    match m.try_lock() {
        Ok(g) => Some(g),
        Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}
/// Locks a mutex if nobody holds it; `None` when it is held, by another thread or by this one.
#[cfg(not(loom))]
#[inline]
pub(crate) fn try_lock<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    m.try_lock()
}

/// Write-locks an `RwLock` (poison recovered under loom, as in [`lock`]).
#[cfg(loom)]
pub(crate) fn write<T>(m: &RwLock<T>) -> MutexGuardLike<'_, T> {
    match m.write() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}
/// Write-locks an `RwLock`.
#[cfg(not(loom))]
#[inline]
pub(crate) fn write<T>(m: &RwLock<T>) -> MutexGuardLike<'_, T> {
    m.write()
}

/// Read-locks an `RwLock` (poison recovered under loom, as in [`lock`]).
#[cfg(loom)]
pub(crate) fn read<T>(m: &RwLock<T>) -> ReadGuardLike<'_, T> {
    match m.read() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}
/// Read-locks an `RwLock`.
#[cfg(not(loom))]
#[inline]
pub(crate) fn read<T>(m: &RwLock<T>) -> ReadGuardLike<'_, T> {
    m.read()
}

/// The write guard of the facade's `RwLock`.
#[cfg(not(loom))]
pub(crate) type MutexGuardLike<'a, T> = parking_lot::RwLockWriteGuard<'a, T>;
/// The write guard of the facade's `RwLock`.
#[cfg(loom)]
pub(crate) type MutexGuardLike<'a, T> = loom::sync::RwLockWriteGuard<'a, T>;
/// The read guard of the facade's `RwLock`.
#[cfg(not(loom))]
pub(crate) type ReadGuardLike<'a, T> = parking_lot::RwLockReadGuard<'a, T>;
/// The read guard of the facade's `RwLock`.
#[cfg(loom)]
pub(crate) type ReadGuardLike<'a, T> = loom::sync::RwLockReadGuard<'a, T>;

/// The `Arc` of values the public API hands to and from users (handlers, context data): plain
/// std, under loom too, since users build them and loom models only our own shared state.
pub(crate) use std::sync::Arc as UserArc;

/// Runs a loom model exploring at most `preemptions` preemptions per execution: every model in
/// this crate is bounded so (2, or fewer), which keeps the whole loom run within minutes on 2
/// cores.
#[cfg(all(test, loom))]
pub(crate) fn loom_model(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(preemptions);
    b.check(f);
}
