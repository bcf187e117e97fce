//! Cells whose exclusive access a protocol guarantees instead of a std lock: [`UnsyncCell`] (an
//! owner word or a state transition says who may touch it), [`HandOff`] (a waker fills a
//! waiter's slot) and [`SpinMutex`], the lock of the ULT primitives (eventual, join state…),
//! built on it. This module is the `unsafe` of both; callers of
//! [`UnsyncCell::with_mut`] say in a `// SAFETY:` comment which protocol makes their access
//! exclusive.
//!
//! Under `--cfg loom` both use loom's atomics and loom's `UnsafeCell`, so the models check the
//! protocols themselves: any access they let race fails the model. The spin lock is checked by its
//! own model (`loom_spin_mutex`, [`SpinLock`]); the models of the ULT primitives built on it see a
//! loom mutex in its place ([`SpinMutex`] under loom), because a spinning waiter with three
//! threads exceeds loom's branch bound.

use crate::sync::{AtomicBool, Ordering};

/// A cell whose exclusive access a protocol guarantees (an owner word, a state transition).
#[cfg(not(loom))]
pub(crate) struct UnsyncCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsyncCell<T> {
    pub(crate) fn new(v: T) -> Self {
        UnsyncCell(std::cell::UnsafeCell::new(v))
    }
    /// Runs `f` on the contents.
    ///
    /// # Safety
    /// No other thread accesses the cell during the call, and earlier accesses by other threads
    /// happen before it.
    #[inline(always)]
    pub(crate) unsafe fn with_mut<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: exclusive access is the caller's contract.
        f(unsafe { &mut *self.0.get() })
    }
    /// The contents, through a unique borrow (no protocol needed).
    pub(crate) fn get_mut(&mut self) -> &mut T {
        self.0.get_mut()
    }
}

/// Loom build of [`UnsyncCell`]: loom's cell, which fails the model on an unsynchronised access.
#[cfg(loom)]
pub(crate) struct UnsyncCell<T>(loom::cell::UnsafeCell<T>);

#[cfg(loom)]
impl<T> UnsyncCell<T> {
    pub(crate) fn new(v: T) -> Self {
        UnsyncCell(loom::cell::UnsafeCell::new(v))
    }
    /// # Safety
    /// As in the std build; loom checks it.
    pub(crate) unsafe fn with_mut<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: exclusive access is the caller's contract; loom fails the model otherwise.
        self.0.with_mut(|p| f(unsafe { &mut *p }))
    }
}

/// A value slot in a waiting caller's frame, which the waker that takes the caller's entry out
/// of a primitive's waiter list fills, under the primitive's lock, before waking it: how an
/// eventual hands its value to a woken waiter without the waiter taking the lock again. The
/// protocol, for one primitive whose lock guards its list:
/// - the waiter makes the slot in its frame, puts a [`HandOffPtr`] to it into the list while it
///   holds the lock, and leaves the frame only once woken, or once it has taken the lock and
///   removed its entry itself (a waiter that unwinds);
/// - a waker fills the slot only while it holds the lock and the entry is in the list (it takes
///   the entry out in the same hold), and wakes the waiter after releasing the lock;
/// - the waiter reads the slot after its wake (the wake orders the fill before the read) or,
///   having removed its entry, never.
///
/// So the frame is alive whenever a waker writes, and the two never touch the slot at once
/// (under loom the slot is loom's cell, which checks the second point).
pub(crate) struct HandOff<T>(UnsyncCell<Option<T>>);

/// Where a registered waiter's [`HandOff`] is; what the primitive's list holds.
pub(crate) struct HandOffPtr<T>(*const HandOff<T>);

// SAFETY: a `HandOffPtr` is only dereferenced under the protocol of [`HandOff`] (by a waker
// holding the primitive's lock, while the waiter's frame is alive); it carries a `T` from that
// thread to the waiter's, hence `T: Send`.
unsafe impl<T: Send> Send for HandOffPtr<T> {}

impl<T> HandOff<T> {
    pub(crate) fn new() -> Self {
        HandOff(UnsyncCell::new(None))
    }
    /// The pointer to register (see the protocol).
    pub(crate) fn ptr(&self) -> HandOffPtr<T> {
        HandOffPtr(self)
    }
    /// The handed-over value, read by the waiter once it has been woken.
    ///
    /// # Safety
    /// The caller was woken by the waker that took its entry out of the list (so nothing
    /// touches the slot any more, and the wake ordered the fill before this read).
    #[inline]
    pub(crate) unsafe fn take_woken(&self) -> Option<T> {
        // SAFETY: the caller's contract: the only writer is done and ordered before us.
        unsafe { self.0.with_mut(Option::take) }
    }
}

impl<T> HandOffPtr<T> {
    /// Whether this entry is the one for `h` (a waiter looking for its own entry).
    pub(crate) fn is(&self, h: &HandOff<T>) -> bool {
        std::ptr::eq(self.0, h)
    }
    /// Hands `v` to the waiter.
    ///
    /// # Safety
    /// The caller holds the lock of the primitive whose list held this entry when the lock was
    /// taken, and no other thread has filled or will fill it (the entry leaves the list in the
    /// same hold): see [`HandOff`].
    #[inline]
    pub(crate) unsafe fn fill(&self, v: T) {
        // SAFETY: by the protocol the waiter's frame, and the slot in it, are alive while its
        // entry is listed and the lock is held, and the waiter does not touch the slot until it
        // is woken (after the lock is released).
        unsafe { (*self.0).0.with_mut(|s| *s = Some(v)) }
    }
}

/// A test-and-test-and-set spin lock. Taking it is one compare-and-swap and releasing it a plain
/// Release store, where a std mutex costs two locked instructions (its unlock is a swap). The
/// ULT primitives hold it for a few instructions, and a stream must not sleep in the kernel for a
/// lock another running stream is about to release (Argobots uses spin locks for the same
/// reason). A waiter spins briefly, then yields its CPU each round, so a holder preempted on a
/// loaded machine gets to run.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) struct SpinLock<T> {
    locked: AtomicBool,
    data: UnsyncCell<T>,
}

#[cfg(not(loom))]
impl<T: Default> Default for SpinLock<T> {
    fn default() -> Self {
        SpinLock::new(T::default())
    }
}

// SAFETY: the data is only reached through a guard, and at most one guard exists at a time (the
// `locked` flag, taken with Acquire and released with Release); `T: Send` lets it be used from
// whichever thread holds the lock.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: the mutex owns its data.
unsafe impl<T: Send> Send for SpinLock<T> {}

/// Proof of holding a [`SpinLock`]; releases it when dropped.
pub(crate) struct SpinLockGuard<'a, T> {
    m: &'a SpinLock<T>,
    /// Loom's record of the access; dropped before the lock is released.
    #[cfg(loom)]
    p: Option<loom::cell::MutPtr<T>>,
}

#[cfg_attr(loom, allow(dead_code))]
impl<T> SpinLock<T> {
    pub(crate) fn new(v: T) -> Self {
        SpinLock {
            locked: AtomicBool::new(false),
            data: UnsyncCell::new(v),
        }
    }

    /// Takes the lock.
    #[inline]
    pub(crate) fn lock(&self) -> SpinLockGuard<'_, T> {
        if self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        SpinLockGuard {
            m: self,
            #[cfg(loom)]
            p: Some(self.data.0.get_mut()),
        }
    }

    #[cold]
    fn lock_contended(&self) {
        #[cfg(not(loom))]
        let mut spins = 0u32;
        loop {
            while self.locked.load(Ordering::Relaxed) {
                #[cfg(not(loom))]
                {
                    spins += 1;
                    if spins < 256 {
                        std::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                }
                #[cfg(loom)]
                loom::thread::yield_now();
            }
            if self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }

    /// The contents, through a unique borrow.
    #[cfg(not(loom))]
    pub(crate) fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }
}

impl<T> std::ops::Deref for SpinLockGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        #[cfg(not(loom))]
        // SAFETY: this guard holds the lock, so no other thread accesses the data until it drops.
        return unsafe { &*self.m.data.0.get() };
        #[cfg(loom)]
        // SAFETY: as above; loom's pointer tracks the access.
        return unsafe { self.p.as_ref().expect("live guard").deref() };
    }
}

impl<T> std::ops::DerefMut for SpinLockGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        #[cfg(not(loom))]
        // SAFETY: this guard holds the lock, and `&mut self` makes this the only borrow through it.
        return unsafe { &mut *self.m.data.0.get() };
        #[cfg(loom)]
        // SAFETY: as above; loom's pointer tracks the access.
        return unsafe { self.p.as_ref().expect("live guard").deref() };
    }
}

impl<T> Drop for SpinLockGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        #[cfg(loom)]
        drop(self.p.take());
        self.m.locked.store(false, Ordering::Release);
    }
}

/// The lock of the ULT primitives' state.
#[cfg(not(loom))]
pub(crate) type SpinMutex<T> = SpinLock<T>;
/// Its guard.
#[cfg(not(loom))]
pub(crate) type SpinGuard<'a, T> = SpinLockGuard<'a, T>;

/// Loom build: the primitives' models see a loom mutex (see the module docs).
#[cfg(loom)]
#[derive(Default)]
pub(crate) struct SpinMutex<T>(loom::sync::Mutex<T>);

/// Loom build: the loom mutex's guard.
#[cfg(loom)]
pub(crate) type SpinGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

#[cfg(loom)]
impl<T> SpinMutex<T> {
    pub(crate) fn new(v: T) -> Self {
        SpinMutex(loom::sync::Mutex::new(v))
    }
    pub(crate) fn lock(&self) -> SpinGuard<'_, T> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(all(test, loom))]
mod tests {
    use super::*;
    use crate::sync::Arc;

    /// Two threads increment under the lock (one of them twice): no update lost, and loom's cell
    /// sees no overlapping access.
    #[test]
    fn loom_spin_mutex() {
        crate::sync::loom_model(2, || {
            let m = Arc::new(SpinLock::new(0usize));
            let m2 = m.clone();
            let t = loom::thread::spawn(move || {
                *m2.lock() += 1;
            });
            *m.lock() += 1;
            *m.lock() += 1;
            t.join().unwrap();
            assert_eq!(*m.lock(), 3);
        });
    }
}
