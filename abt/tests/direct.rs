//! Direct ULT-to-ULT switches (a yield or a wait that switches straight to the next ready ULT of
//! its stream): order, counters, the scheduler's event checks, units the direct path hands to the
//! scheduler, and ULTs left suspended when their stream stops.

use abt::{
    pool, Access, Eventual, Pool, PoolKind, Sched, SchedConfig, SchedKind, Task, Thread, Xstream,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

/// A hang guard only: every test here finishes in milliseconds.
const HANG: Duration = Duration::from_secs(120);

fn stream(p: &Arc<dyn Pool>, kind: SchedKind) -> Xstream {
    Xstream::create(Sched::create_basic(kind, vec![p.clone()], SchedConfig::new()).unwrap())
        .unwrap()
}

/// Runs `f` on another OS thread and fails the test if it has not returned after [`HANG`].
fn guarded(f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    rx.recv_timeout(HANG)
        .expect("hung: the stream never got back to its scheduler");
}

/// Three ULTs yielding in turn run round robin, in their pool's FIFO order, with both built-in
/// schedulers and a single-consumer pool of each kind; every switch is a dispatch.
#[test]
fn yielding_ults_run_round_robin_and_each_switch_is_a_dispatch() {
    for kind in [SchedKind::Basic, SchedKind::Prio] {
        for access in [Access::Priv, Access::Spsc, Access::Mpsc] {
            let p = pool::create_basic(PoolKind::Fifo, access);
            let order = Arc::new(StdMutex::new(Vec::new()));
            let ts: Vec<Thread> = (0..3)
                .map(|i| {
                    let o = order.clone();
                    Thread::create(&p, move || {
                        for _ in 0..200 {
                            o.lock().unwrap().push(i);
                            abt::yield_now().unwrap();
                        }
                    })
                })
                .collect();
            let mut xs = stream(&p, kind);
            for t in &ts {
                t.join().unwrap();
            }
            let o = order.lock().unwrap();
            assert_eq!(o.len(), 600);
            for (n, i) in o.iter().enumerate() {
                assert_eq!(*i, n % 3, "{kind:?} {access:?}: position {n} of {o:?}");
            }
            for t in &ts {
                // The first run, then one switch back in per yield.
                assert_eq!(t.dispatch_count(), 201, "{kind:?} {access:?}");
            }
            xs.join().unwrap();
        }
    }
}

/// While two ULTs yield to each other without end, the scheduler still checks its events every
/// `event_freq` units: a sleeper on the same stream wakes (timers are checked only there), and a
/// unit created by a ULT of another stream runs.
#[test]
fn sleepers_wake_while_two_ults_yield_to_each_other() {
    guarded(|| {
        let p = pool::create_basic(PoolKind::Fifo, Access::Mpsc);
        let done = Arc::new(AtomicBool::new(false));
        let yielders: Vec<Thread> = (0..2)
            .map(|_| {
                let d = done.clone();
                Thread::create(&p, move || {
                    while !d.load(Ordering::Acquire) {
                        abt::yield_now().unwrap();
                    }
                })
            })
            .collect();
        let d = done.clone();
        let sleeper = Thread::create(&p, move || {
            abt::sleep(Duration::from_millis(20)).unwrap();
            d.store(true, Ordering::Release);
        });
        let mut xs = stream(&p, SchedKind::Basic);
        sleeper.join().unwrap();
        for t in yielders {
            t.join().unwrap();
        }
        xs.join().unwrap();
    });
}

/// A stop request reaches a stream whose ULTs only yield to each other (its scheduler checks it
/// every `event_freq` units, direct switches included). The ULTs left behind — ready ones
/// and one waiting on an eventual nobody sets — are unwound when the stream is dropped, so
/// their joins report an error instead of hanging.
#[test]
fn stop_reaches_a_stream_of_yielding_ults_and_leftovers_unwind() {
    guarded(|| {
        let p = pool::create_basic(PoolKind::Fifo, Access::Mpsc);
        let yielders: Vec<Thread> = (0..2)
            .map(|_| {
                Thread::create(&p, || loop {
                    abt::yield_now().unwrap();
                })
            })
            .collect();
        let ev = Arc::new(Eventual::<u32>::new());
        let e2 = ev.clone();
        let waiter = Thread::create(&p, move || {
            e2.wait();
        });
        let mut xs = stream(&p, SchedKind::Basic);
        while yielders[0].dispatch_count() < 1000 {
            std::thread::sleep(Duration::from_millis(1));
        }
        xs.stop().unwrap();
        drop(xs);
        for t in yielders {
            assert!(
                t.join().is_err(),
                "a ULT unwound by its stream's drop reports an error"
            );
        }
        assert!(waiter.join().is_err());
    });
}

/// A unit the yielding ULT finds next but cannot switch to (a new ULT, a tasklet) is run by the
/// scheduler, in pool order, before the yielder runs again.
#[test]
fn a_yield_hands_new_units_to_the_scheduler_in_order() {
    let p = pool::create_basic(PoolKind::Fifo, Access::Priv);
    let order = Arc::new(StdMutex::new(Vec::new()));
    let (o, p2) = (order.clone(), p.clone());
    let t = Thread::create(&p, move || {
        let o1 = o.clone();
        let n = Thread::create(&p2, move || o1.lock().unwrap().push("new ult"));
        let o2 = o.clone();
        let k = Task::create(&p2, move || o2.lock().unwrap().push("tasklet"));
        abt::yield_now().unwrap();
        o.lock().unwrap().push("yielder");
        n.join().unwrap();
        k.join().unwrap();
    });
    let mut xs = stream(&p, SchedKind::Basic);
    t.join().unwrap();
    xs.join().unwrap();
    assert_eq!(*order.lock().unwrap(), ["new ult", "tasklet", "yielder"]);
}

/// Eventual round trips between two ULTs of one stream (each wait switches straight to the
/// other), then between ULTs of two streams (a wake may come before the waiter switched out).
#[test]
fn eventual_round_trips_with_direct_waits() {
    guarded(|| {
        for two_streams in [false, true] {
            let pa = pool::create_basic(PoolKind::Fifo, Access::Mpsc);
            let pb = if two_streams {
                pool::create_basic(PoolKind::Fifo, Access::Mpsc)
            } else {
                pa.clone()
            };
            let (e1, e2) = (Arc::new(Eventual::new()), Arc::new(Eventual::new()));
            let (a1, a2) = (e1.clone(), e2.clone());
            let n = 3000u32;
            let a = Thread::create(&pa, move || {
                for i in 0..n {
                    a1.set(i).unwrap();
                    assert_eq!(a2.wait(), i + 1);
                    a2.reset();
                }
            });
            let b = Thread::create(&pb, move || {
                for i in 0..n {
                    let v = e1.wait();
                    assert_eq!(v, i);
                    e1.reset();
                    e2.set(v + 1).unwrap();
                }
            });
            let mut xa = stream(&pa, SchedKind::Basic);
            let xb = two_streams.then(|| stream(&pb, SchedKind::Basic));
            a.join().unwrap();
            b.join().unwrap();
            xa.join().unwrap();
            if let Some(mut x) = xb {
                x.join().unwrap();
            }
        }
    });
}
