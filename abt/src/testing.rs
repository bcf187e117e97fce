//! Conformance suites for the crate's swap points: every [`Pool`] and every [`Scheduler`](crate::Scheduler)
//! implementation must pass them (feature `conformance`). Each check panics with a message saying
//! which property failed.

use crate::pool::{Access, Pool, PoolKind};
use crate::sched::Sched;
use crate::sync::StdArc;
use crate::unit::{Unit, UnitInner};
use crate::{Eventual, Task, Thread, Xstream};
use std::collections::HashSet;
// Test-side counters and logs run on real threads only (the suites are not loom models).
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Every kind × access pair.
pub const ALL_KINDS: [PoolKind; 2] = [PoolKind::Fifo, PoolKind::FifoWait];
/// Every access mode.
pub const ALL_ACCESS: [Access; 5] = [
    Access::Priv,
    Access::Spsc,
    Access::Mpsc,
    Access::Spmc,
    Access::Mpmc,
];

/// A unit that is never run: pools only move it around.
fn dummy(pool: &StdArc<dyn Pool>) -> Unit {
    Unit(StdArc::new(UnitInner::new(
        None,
        true,
        0,
        false,
        pool.clone(),
        Box::new(|| {}),
    )))
}

/// Hang guard for the blocking checks; generous for a loaded 2-core machine.
const HANG: Duration = Duration::from_secs(30);

/// Runs the pool suite against `make`, for every kind and access mode it is given.
pub fn pool_conformance(make: &dyn Fn(PoolKind, Access) -> StdArc<dyn Pool>) {
    for kind in ALL_KINDS {
        for access in ALL_ACCESS {
            let ctx = format!("{kind:?}/{access:?}");
            pool_identity(&make(kind, access), kind, access, &ctx);
            pool_fifo_order(&make(kind, access), &ctx);
            pool_notify(&make(kind, access), &ctx);
            pool_pop_wait(&make(kind, access), &ctx);
            pool_concurrent(&make(kind, access), &ctx);
        }
    }
}

fn pool_identity(p: &StdArc<dyn Pool>, kind: PoolKind, access: Access, ctx: &str) {
    assert_eq!(p.kind(), kind, "{ctx}: kind");
    assert_eq!(p.access(), access, "{ctx}: access");
    assert!(p.is_empty(), "{ctx}: new pool empty");
    assert!(p.pop().is_none(), "{ctx}: pop on empty");
}

/// FIFO through more units than a ring holds, so an overflow path is exercised too.
fn pool_fifo_order(p: &StdArc<dyn Pool>, ctx: &str) {
    let units: Vec<Unit> = (0..3000).map(|_| dummy(p)).collect();
    let ids: Vec<u64> = units.iter().map(|u| u.id()).collect();
    for u in units {
        p.push(u);
    }
    assert_eq!(p.len(), 3000, "{ctx}: len after pushes");
    // Interleave: pop some, push more, pop all; order must stay FIFO.
    let mut got: Vec<u64> = (0..1000).map(|_| p.pop().expect("unit").id()).collect();
    let more: Vec<Unit> = (0..500).map(|_| dummy(p)).collect();
    let more_ids: Vec<u64> = more.iter().map(|u| u.id()).collect();
    for u in more {
        p.push(u);
    }
    while let Some(u) = p.pop() {
        got.push(u.id());
    }
    let mut want = ids;
    want.extend(more_ids);
    assert_eq!(got, want, "{ctx}: FIFO order");
    assert!(p.is_empty(), "{ctx}: empty after draining");
}

fn pool_notify(p: &StdArc<dyn Pool>, ctx: &str) {
    let n = StdArc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    p.add_notify(StdArc::new(move || {
        n2.fetch_add(1, Ordering::SeqCst);
    }));
    let m = StdArc::new(AtomicUsize::new(0));
    let m2 = m.clone();
    p.add_notify(StdArc::new(move || {
        m2.fetch_add(1, Ordering::SeqCst);
    }));
    for _ in 0..5 {
        p.push(dummy(p));
    }
    assert_eq!(
        n.load(Ordering::SeqCst),
        5,
        "{ctx}: first notifier once per push"
    );
    assert_eq!(
        m.load(Ordering::SeqCst),
        5,
        "{ctx}: second notifier once per push"
    );
    while p.pop().is_some() {}
}

fn pool_pop_wait(p: &StdArc<dyn Pool>, ctx: &str) {
    match p.kind() {
        PoolKind::Fifo => {
            assert!(
                p.pop_wait(Duration::from_millis(1)).is_none(),
                "{ctx}: FIFO pop_wait on empty"
            );
        }
        PoolKind::FifoWait => {
            let before = p.park_count();
            let p2 = p.clone();
            let pusher = std::thread::spawn(move || {
                // Push only once the consumer has really parked: that is the property under test.
                let t0 = Instant::now();
                while p2.park_count() == before && t0.elapsed() < HANG {
                    std::thread::sleep(Duration::from_millis(1));
                }
                p2.push(dummy(&p2));
            });
            let got = p.pop_wait(HANG);
            pusher.join().expect("pusher");
            assert!(got.is_some(), "{ctx}: pop_wait returns the pushed unit");
            assert!(
                p.park_count() > before,
                "{ctx}: pop_wait parked instead of spinning"
            );
        }
    }
}

/// Producers and consumers as the access mode allows: nothing lost, nothing doubled, and with a
/// single consumer each producer's order holds.
fn pool_concurrent(p: &StdArc<dyn Pool>, ctx: &str) {
    let access = p.access();
    let producers = if access.multi_producer() { 2 } else { 1 };
    let consumers = if access.multi_consumer() { 2 } else { 1 };
    let per = 2000;
    let total = producers * per;
    let made: Vec<Vec<Unit>> = (0..producers)
        .map(|_| (0..per).map(|_| dummy(p)).collect())
        .collect();
    let order: Vec<Vec<u64>> = made
        .iter()
        .map(|v| v.iter().map(|u| u.id()).collect())
        .collect();
    let taken = StdArc::new(AtomicUsize::new(0));
    let cons: Vec<_> = (0..consumers)
        .map(|_| {
            let (p, taken) = (p.clone(), taken.clone());
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let t0 = Instant::now();
                while taken.load(Ordering::SeqCst) < total && t0.elapsed() < HANG {
                    match p.pop() {
                        Some(u) => {
                            taken.fetch_add(1, Ordering::SeqCst);
                            got.push(u.id());
                        }
                        None => std::thread::yield_now(),
                    }
                }
                got
            })
        })
        .collect();
    let prods: Vec<_> = made
        .into_iter()
        .map(|units| {
            let p = p.clone();
            std::thread::spawn(move || {
                for u in units {
                    p.push(u);
                }
            })
        })
        .collect();
    for h in prods {
        h.join().expect("producer");
    }
    let got: Vec<Vec<u64>> = cons
        .into_iter()
        .map(|h| h.join().expect("consumer"))
        .collect();
    let all: Vec<u64> = got.iter().flatten().copied().collect();
    assert_eq!(all.len(), total, "{ctx}: every unit popped once");
    let set: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(set.len(), total, "{ctx}: no unit popped twice");
    if consumers == 1 {
        for o in &order {
            let mine: HashSet<u64> = o.iter().copied().collect();
            let seen: Vec<u64> = got[0]
                .iter()
                .copied()
                .filter(|x| mine.contains(x))
                .collect();
            assert_eq!(&seen, o, "{ctx}: per-producer FIFO");
        }
    }
}

/// Runs the scheduler suite: `make` builds a scheduler over the three pools it is given (they are
/// `FifoWait`/`Mpsc`, as DAOS's are `Fifo`/`Mpsc`, so an idle stream parks during the test).
pub fn sched_conformance(make: &dyn Fn(Vec<StdArc<dyn Pool>>) -> Sched) {
    sched_runs_everything(make);
    sched_yield_interleaves(make);
    sched_join_waits_for_blocked(make);
    sched_sleep_and_stop(make);
}

fn three_pools() -> Vec<StdArc<dyn Pool>> {
    (0..3)
        .map(|_| crate::pool::create_basic(PoolKind::FifoWait, Access::Mpsc))
        .collect()
}

/// ULTs and tasklets put in any of the pools all run before a join returns.
fn sched_runs_everything(make: &dyn Fn(Vec<StdArc<dyn Pool>>) -> Sched) {
    let pools = three_pools();
    let n = StdArc::new(AtomicUsize::new(0));
    let mut hs = Vec::new();
    let mut ts = Vec::new();
    for i in 0..30 {
        let n = n.clone();
        let p = &pools[i % 3];
        if i % 2 == 0 {
            hs.push(Thread::create(p, move || {
                n.fetch_add(1, Ordering::SeqCst);
            }));
        } else {
            ts.push(Task::create(p, move || {
                n.fetch_add(1, Ordering::SeqCst);
            }));
        }
    }
    let mut xs = Xstream::create(make(pools)).expect("stream");
    xs.join().expect("join");
    assert_eq!(
        n.load(Ordering::SeqCst),
        30,
        "sched: every unit ran before join returned"
    );
    for h in hs {
        assert!(h.is_finished(), "sched: ULT finished");
    }
    for t in ts {
        t.join().expect("tasklet");
    }
}

/// Two yielding ULTs on one stream alternate.
fn sched_yield_interleaves(make: &dyn Fn(Vec<StdArc<dyn Pool>>) -> Sched) {
    let pools = three_pools();
    let log = StdArc::new(std::sync::Mutex::new(Vec::new()));
    let hs: Vec<Thread> = (0..2)
        .map(|id| {
            let log = log.clone();
            Thread::create(&pools[2], move || {
                for _ in 0..3 {
                    log.lock().unwrap_or_else(|p| p.into_inner()).push(id);
                    crate::yield_now().expect("yield in ULT");
                }
            })
        })
        .collect();
    let mut xs = Xstream::create(make(pools)).expect("stream");
    for h in &hs {
        h.join().expect("ULT");
    }
    xs.join().expect("join");
    let log = log.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(
        log,
        vec![0, 1, 0, 1, 0, 1],
        "sched: yields alternate the two ULTs"
    );
}

/// A ULT blocked on an eventual keeps a joining stream alive until it is set from outside.
fn sched_join_waits_for_blocked(make: &dyn Fn(Vec<StdArc<dyn Pool>>) -> Sched) {
    let pools = three_pools();
    let ev = StdArc::new(Eventual::<u32>::new());
    let got = StdArc::new(AtomicUsize::new(0));
    let (e2, g2) = (ev.clone(), got.clone());
    let waiter = Thread::create(&pools[0], move || {
        g2.store(e2.wait() as usize, Ordering::SeqCst);
    });
    let mut xs = Xstream::create(make(pools)).expect("stream");
    let h = xs.handle();
    h.request_join();
    let t0 = Instant::now();
    while !waiter.is_suspended() && t0.elapsed() < HANG {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        waiter.is_suspended(),
        "sched: waiter suspended on the eventual"
    );
    ev.set(42).expect("set");
    xs.join().expect("join");
    assert_eq!(
        got.load(Ordering::SeqCst),
        42,
        "sched: blocked ULT finished before join returned"
    );
}

/// Sleeping ULTs wake through the stream's timer list; a stop request ends the scheduler even with
/// work queued.
fn sched_sleep_and_stop(make: &dyn Fn(Vec<StdArc<dyn Pool>>) -> Sched) {
    let pools = three_pools();
    let done = StdArc::new(AtomicUsize::new(0));
    let d2 = done.clone();
    let s = Thread::create(&pools[1], move || {
        crate::sleep(Duration::from_millis(20)).expect("sleep");
        d2.fetch_add(1, Ordering::SeqCst);
    });
    let mut xs = Xstream::create(make(pools.clone())).expect("stream");
    s.join().expect("sleeper");
    assert_eq!(done.load(Ordering::SeqCst), 1, "sched: sleeper woke");
    xs.stop().expect("stop");
    // After the stop the stream runs nothing more.
    let late = StdArc::new(AtomicUsize::new(0));
    let l2 = late.clone();
    let _t = Task::create(&pools[0], move || {
        l2.fetch_add(1, Ordering::SeqCst);
    });
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        late.load(Ordering::SeqCst),
        0,
        "sched: stopped stream runs nothing"
    );
    assert_eq!(
        pools[0].len(),
        1,
        "sched: stop leaves queued work in the pool"
    );
}
