//! Unit references are neither leaked nor dropped twice on the waiting paths: a waiting ULT hands
//! its stream's reference to whoever wakes it (eventual, mutex, join, sleep, suspend / resume),
//! so a miscount would either keep every finished ULT's record alive (caught here by counting
//! live heap blocks) or free one too early (a crash).

use abt::{
    pool, Access, Eventual, Mutex, PoolKind, Primary, Sched, SchedConfig, SchedKind, Thread,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The system allocator, counting live blocks.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`, which upholds `GlobalAlloc`'s contract;
// the counter has no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: `p` came from `System.alloc` with this layout (every block goes through us).
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// One round: `n` groups of ULTs on one stream, each group going through every waiting path once.
fn round(n: usize) {
    let p = pool::create_basic(PoolKind::Fifo, Access::Priv);
    let mut prim = Primary::new(
        Sched::create_basic(SchedKind::Basic, vec![p.clone()], SchedConfig::new()).unwrap(),
    )
    .unwrap();
    let m = Arc::new(Mutex::new());
    for _ in 0..n {
        // Eventual: the waiter runs first and suspends; the setter wakes it.
        let ev = Arc::new(Eventual::<u32>::new());
        let e2 = ev.clone();
        Thread::create(&p, move || assert_eq!(e2.wait(), 7));
        Thread::create(&p, move || ev.set(7).unwrap());
        // Mutex: the holder yields while holding, so the second locker waits.
        let (m1, m2) = (m.clone(), m.clone());
        Thread::create(&p, move || {
            let _g = m1.lock();
            abt::yield_now().unwrap();
        });
        Thread::create(&p, move || drop(m2.lock()));
        // Join of a unit that has not finished: the joiner suspends.
        let slow = Thread::create(&p, || {
            abt::yield_now().unwrap();
            abt::yield_now().unwrap();
        });
        Thread::create(&p, move || slow.join().unwrap());
        // Sleep: the stream's timer list holds the sleeper.
        Thread::create(&p, || abt::sleep(Duration::from_micros(1)).unwrap());
        // Suspend / resume.
        let s = Thread::create(&p, || abt::suspend().unwrap());
        Thread::create(&p, move || {
            while s.resume().is_err() {
                abt::yield_now().unwrap();
            }
        });
    }
    prim.join();
}

#[test]
fn waiting_paths_neither_leak_nor_double_free_unit_references() {
    // Warm up the per-thread record and coroutine caches, the pools' deques, the timer heap.
    round(300);
    let base = LIVE.load(Ordering::Relaxed);
    for _ in 0..3 {
        round(300);
    }
    let grown = LIVE.load(Ordering::Relaxed) - base;
    // 3 × 300 groups × 9 ULTs: a reference kept by any one path would keep ≥ 900 records alive.
    assert!(
        grown < 100,
        "{grown} heap blocks more after 2,700 more waits: unit records are leaked"
    );
}
