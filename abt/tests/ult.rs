//! ULTs, tasklets, streams and ULT synchronization: behaviour and misuse.

use abt::{
    pool, Access, Barrier, Cond, Error, Eventual, Future, Key, Mutex, Pool, PoolKind, Primary,
    Sched, SchedConfig, SchedKind, Task, Thread, ThreadAttr, Xstream,
};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

const HANG: Duration = Duration::from_secs(30);

fn wait_pool() -> Arc<dyn Pool> {
    pool::create_basic(PoolKind::FifoWait, Access::Mpsc)
}

fn stream(pools: Vec<Arc<dyn Pool>>) -> Xstream {
    Xstream::create(Sched::create_basic(SchedKind::Basic, pools, SchedConfig::new()).unwrap())
        .unwrap()
}

/// Runs `f` as a ULT on a fresh stream and returns what it returned.
fn in_ult<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let p = wait_pool();
    let out = Arc::new(StdMutex::new(None));
    let o2 = out.clone();
    let t = Thread::create(&p, move || *o2.lock().unwrap() = Some(f()));
    let mut xs = stream(vec![p]);
    t.join().unwrap();
    xs.join().unwrap();
    let r = out.lock().unwrap().take().unwrap();
    r
}

#[test]
fn outside_any_ult_yield_suspend_self_are_errors() {
    assert_eq!(abt::yield_now(), Err(Error::NotInUlt));
    assert_eq!(abt::suspend(), Err(Error::NotInUlt));
    assert_eq!(Thread::current().unwrap_err(), Error::NotInUlt);
    assert_eq!(Error::NotInUlt.code(), 4);
    assert_eq!(abt::self_rank(), None);
    let k = Key::<u32>::new();
    assert_eq!(k.set(1), Err(Error::NotInUlt));
}

#[test]
fn join_self_is_an_error() {
    let r = in_ult(|| Thread::current().unwrap().join());
    assert_eq!(r, Err(Error::JoinSelf));
}

#[test]
fn tasklet_cannot_yield_or_suspend() {
    let p = wait_pool();
    let out = Arc::new(StdMutex::new(Vec::new()));
    let o2 = out.clone();
    let t = Task::create(&p, move || {
        let mut o = o2.lock().unwrap();
        o.push(abt::yield_now());
        o.push(abt::suspend());
        o.push(Thread::current().map(|_| ()));
        o.push(abt::sleep(Duration::from_millis(1)));
    });
    let mut xs = stream(vec![p]);
    t.join().unwrap();
    xs.join().unwrap();
    let o = out.lock().unwrap();
    assert!(o.iter().all(|r| *r == Err(Error::InTasklet)), "{o:?}");
    assert_eq!(Error::InTasklet.code(), 16);
}

#[test]
fn suspend_resume_and_resume_misuse() {
    let p = wait_pool();
    let stage = Arc::new(AtomicUsize::new(0));
    let s2 = stage.clone();
    let t = Thread::create(&p, move || {
        s2.store(1, Ordering::SeqCst);
        abt::suspend().unwrap();
        s2.store(2, Ordering::SeqCst);
    });
    // Not yet started: READY, not suspended.
    assert_eq!(t.resume(), Err(Error::NotSuspended));
    let mut xs = stream(vec![p]);
    let t0 = Instant::now();
    while !t.is_suspended() && t0.elapsed() < HANG {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(stage.load(Ordering::SeqCst), 1);
    let before = t.dispatch_count();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        t.dispatch_count(),
        before,
        "a suspended ULT is not dispatched"
    );
    t.resume().unwrap();
    t.join().unwrap();
    assert_eq!(stage.load(Ordering::SeqCst), 2);
    assert_eq!(
        t.resume(),
        Err(Error::NotSuspended),
        "resume of a finished ULT"
    );
    assert_eq!(Error::NotSuspended.code(), 36);
    xs.join().unwrap();
}

#[test]
fn resume_of_a_ult_blocked_in_a_primitive_is_an_error() {
    let p = wait_pool();
    let ev = Arc::new(Eventual::<u32>::new());
    let e2 = ev.clone();
    let t = Thread::create(&p, move || assert_eq!(e2.wait(), 3));
    let mut xs = stream(vec![p]);
    let t0 = Instant::now();
    while !t.is_suspended() && t0.elapsed() < HANG {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(t.resume(), Err(Error::NotSuspended));
    assert!(t.is_suspended(), "still waiting on the eventual");
    ev.set(3).unwrap();
    t.join().unwrap();
    xs.join().unwrap();
}

#[test]
fn resume_of_a_running_ult_is_an_error() {
    let r = in_ult(|| Thread::current().unwrap().resume());
    assert_eq!(r, Err(Error::NotSuspended));
}

#[test]
fn panicking_ult_reports_through_join_and_stream_carries_on() {
    let p = wait_pool();
    // The default 16 KiB stack, in the debug build `cargo test` makes too: the panic hook (≈ 20 KiB
    // of stack in a debug build) runs on the stream's stack, only the unwinding on the ULT's.
    assert_eq!(abt::default_stack_size(), abt::DEFAULT_STACK_SIZE);
    let bad = Thread::create(&p, || panic!("boom in ULT"));
    // A panic deep in a call chain unwinds through its frames on the same small stack.
    fn nest(n: u32) -> u32 {
        if n == 0 {
            panic!("deep boom");
        }
        nest(n - 1) + 1
    }
    let deep = Thread::create(&p, || {
        std::hint::black_box(nest(std::hint::black_box(20)));
    });
    let after = Arc::new(AtomicUsize::new(0));
    let a2 = after.clone();
    let good = Thread::create(&p, move || {
        a2.store(1, Ordering::SeqCst);
    });
    let badt = Task::create(&p, || panic!("boom in tasklet"));
    let mut xs = stream(vec![p]);
    assert_eq!(bad.join(), Err(Error::Panicked("boom in ULT".into())));
    assert_eq!(deep.join(), Err(Error::Panicked("deep boom".into())));
    assert_eq!(badt.join(), Err(Error::Panicked("boom in tasklet".into())));
    good.join().unwrap();
    assert_eq!(after.load(Ordering::SeqCst), 1);
    xs.join().unwrap();
}

#[test]
fn keys_are_per_ult_and_destructors_run_at_exit() {
    let dropped = Arc::new(StdMutex::new(Vec::new()));
    let d2 = dropped.clone();
    let key = Arc::new(Key::<u32>::with_destructor(move |v| {
        d2.lock().unwrap().push(v)
    }));
    let p = wait_pool();
    let seen = Arc::new(StdMutex::new(Vec::new()));
    let hs: Vec<Thread> = (0..2)
        .map(|i| {
            let (k, s) = (key.clone(), seen.clone());
            Thread::create(&p, move || {
                k.set(10 + i).unwrap();
                abt::yield_now().unwrap(); // the other ULT sets its own value meanwhile
                s.lock().unwrap().push(k.with(|v| *v.unwrap()).unwrap());
            })
        })
        .collect();
    let mut xs = stream(vec![p]);
    for h in hs {
        h.join().unwrap();
    }
    xs.join().unwrap();
    let mut s = seen.lock().unwrap().clone();
    s.sort();
    assert_eq!(s, vec![10, 11]);
    let mut d = dropped.lock().unwrap().clone();
    d.sort();
    assert_eq!(d, vec![10, 11], "destructor got each ULT's value");
}

#[test]
fn yield_to_runs_the_target_next() {
    let p = wait_pool();
    let log = Arc::new(StdMutex::new(Vec::new()));
    let (l1, l2, l3) = (log.clone(), log.clone(), log.clone());
    let slot: Arc<StdMutex<Option<Thread>>> = Arc::new(StdMutex::new(None));
    let s2 = slot.clone();
    let a = Thread::create(&p, move || {
        l1.lock().unwrap().push("a1");
        let target = s2.lock().unwrap().clone().unwrap();
        abt::yield_to(&target).unwrap();
        l1.lock().unwrap().push("a2");
    });
    let _b = Thread::create(&p, move || l2.lock().unwrap().push("b"));
    let c = Thread::create(&p, move || l3.lock().unwrap().push("c"));
    *slot.lock().unwrap() = Some(c.clone());
    let mut xs = stream(vec![p]);
    a.join().unwrap();
    c.join().unwrap();
    xs.join().unwrap();
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log[..2],
        ["a1", "c"],
        "c ran right after a yielded to it: {log:?}"
    );
    assert_eq!(log.len(), 4);
    let own = in_ult(|| abt::yield_to(&Thread::current().unwrap()));
    assert_eq!(own, Ok(()));
}

#[test]
fn stack_size_attribute_gives_a_bigger_stack() {
    let p = wait_pool();
    let attr = ThreadAttr::new().stack_size(256 * 1024).name("big");
    let t = Thread::create_with(&p, &attr, || {
        // 96 KiB of live stack data: far more than the 16 KiB default.
        let buf = std::hint::black_box([7u8; 96 * 1024]);
        assert_eq!(
            buf.iter().map(|&b| b as usize).sum::<usize>(),
            7 * 96 * 1024
        );
    });
    assert_eq!(t.name(), Some("big"));
    let mut xs = stream(vec![p]);
    t.join().unwrap();
    xs.join().unwrap();
}

#[test]
fn sleep_suspends_until_due() {
    let (d, n) = in_ult(|| {
        let me = Thread::current().unwrap();
        let t0 = Instant::now();
        abt::sleep(Duration::from_millis(30)).unwrap();
        (t0.elapsed(), me.dispatch_count())
    });
    assert!(d >= Duration::from_millis(30), "slept {d:?}");
    assert_eq!(
        n, 2,
        "dispatched once to start and once when due, never while sleeping"
    );
}

#[test]
fn ult_primitives_block_the_ult_not_the_stream() {
    // Everything on ONE stream: if any primitive blocked the OS thread, this would hang.
    let p = wait_pool();
    let m = Arc::new(Mutex::new());
    let cv = Arc::new(Cond::new());
    let flag = Arc::new(AtomicUsize::new(0));
    let bar = Arc::new(Barrier::new(3));
    let fut = Arc::new(Future::<u32>::new(3, None));
    let ev = Arc::new(Eventual::<String>::new());
    let counter = Arc::new(AtomicU64::new(0));
    let mut hs = Vec::new();
    for i in 0..3u32 {
        let (m, cv, flag, bar, fut, ev, counter) = (
            m.clone(),
            cv.clone(),
            flag.clone(),
            bar.clone(),
            fut.clone(),
            ev.clone(),
            counter.clone(),
        );
        hs.push(Thread::create(&p, move || {
            // Mutex: a non-atomic read-modify-write with a yield inside stays exclusive.
            for _ in 0..5 {
                let _g = m.lock();
                let v = counter.load(Ordering::Relaxed);
                abt::yield_now().unwrap();
                counter.store(v + 1, Ordering::Relaxed);
            }
            bar.wait();
            fut.set(i).unwrap();
            if i == 0 {
                ev.set("hello".into()).unwrap();
                let g = m.lock();
                flag.store(1, Ordering::SeqCst);
                cv.broadcast();
                drop(g);
            } else {
                assert_eq!(ev.wait(), "hello");
                let mut g = m.lock();
                while flag.load(Ordering::SeqCst) == 0 {
                    g = cv.wait(g);
                }
                drop(g);
            }
            let mut v = fut.wait();
            v.sort();
            assert_eq!(v, vec![0, 1, 2]);
        }));
    }
    let mut xs = stream(vec![p]);
    for h in hs {
        h.join().unwrap();
    }
    xs.join().unwrap();
    assert_eq!(counter.load(Ordering::Relaxed), 15);
}

#[test]
fn outside_a_ult_primitives_block_the_thread() {
    let p = wait_pool();
    let ev = Arc::new(Eventual::<u32>::new());
    let fut = Arc::new(Future::<u32>::new(1, None));
    let bar = Arc::new(Barrier::new(2));
    let (e2, f2, b2) = (ev.clone(), fut.clone(), bar.clone());
    let t = Thread::create(&p, move || {
        abt::sleep(Duration::from_millis(10)).unwrap();
        e2.set(5).unwrap();
        f2.set(6).unwrap();
        b2.wait();
    });
    let mut xs = stream(vec![p]);
    assert_eq!(ev.wait(), 5);
    assert_eq!(fut.wait(), vec![6]);
    bar.wait();
    t.join().unwrap();
    xs.join().unwrap();
    assert_eq!(ev.set(1), Err(Error::EventualAlreadySet));
    ev.reset();
    assert_eq!(ev.test(), None);
    assert_eq!(fut.set(1), Err(Error::FutureFull));
}

#[test]
fn future_callback_runs_once_with_all_values() {
    let got = Arc::new(StdMutex::new(Vec::new()));
    let g2 = got.clone();
    let f = Future::new(
        2,
        Some(Box::new(move |v: &[u32]| {
            g2.lock().unwrap().push(v.to_vec())
        })),
    );
    f.set(1).unwrap();
    assert!(!f.test());
    f.set(2).unwrap();
    assert!(f.test());
    assert_eq!(*got.lock().unwrap(), vec![vec![1, 2]]);
}

#[test]
fn a_started_ult_never_changes_stream() {
    // One MPMC pool shared by two streams: units start on either, but each stays where it started.
    let p = pool::create_basic(PoolKind::FifoWait, Access::Mpmc);
    let moved = Arc::new(AtomicUsize::new(0));
    let hs: Vec<Thread> = (0..40)
        .map(|_| {
            let moved = moved.clone();
            Thread::create(&p, move || {
                let r = abt::self_rank();
                for _ in 0..50 {
                    abt::yield_now().unwrap();
                    if abt::self_rank() != r {
                        moved.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    let mut a = stream(vec![p.clone()]);
    let mut b = stream(vec![p.clone()]);
    for h in hs {
        h.join().unwrap();
    }
    a.join().unwrap();
    b.join().unwrap();
    assert_eq!(moved.load(Ordering::SeqCst), 0);
    assert!(p.is_empty());
}

#[test]
fn ranks_cpubind_and_stream_local_storage() {
    let p = wait_pool();
    let mut xs = Xstream::builder()
        .rank(77)
        .spawn(Sched::create_basic(SchedKind::Basic, vec![p.clone()], SchedConfig::new()).unwrap())
        .unwrap();
    assert_eq!(xs.rank(), 77);
    let dup = Xstream::create_with_rank(
        Sched::create_basic(SchedKind::Basic, vec![wait_pool()], SchedConfig::new()).unwrap(),
        77,
    );
    assert!(matches!(dup, Err(Error::RankTaken(77))));
    let h = xs.handle();
    let cpus = h.get_cpubind().unwrap();
    assert!(!cpus.is_empty());
    h.set_cpubind(&cpus[..1]).unwrap();
    assert_eq!(h.get_cpubind().unwrap(), cpus[..1].to_vec());

    let out = Arc::new(StdMutex::new(Vec::new()));
    let hs: Vec<Thread> = (0..3)
        .map(|_| {
            let out = out.clone();
            Thread::create(&p, move || {
                let n = abt::with_local(|c: &mut u32| {
                    *c += 1;
                    *c
                });
                out.lock().unwrap().push((abt::self_rank(), n));
            })
        })
        .collect();
    for t in hs {
        t.join().unwrap();
    }
    xs.join().unwrap();
    let mut o = out.lock().unwrap().clone();
    o.sort();
    assert_eq!(
        o,
        vec![
            (Some(77), Some(1)),
            (Some(77), Some(2)),
            (Some(77), Some(3))
        ]
    );
    assert_eq!(
        abt::with_local(|c: &mut u32| *c),
        None,
        "no stream-local outside a stream"
    );
}

#[test]
fn primary_runs_on_the_calling_thread() {
    let p = pool::create_basic(PoolKind::Fifo, Access::Priv);
    let mut prim = Primary::new(
        Sched::create_basic(SchedKind::Basic, vec![p.clone()], SchedConfig::new()).unwrap(),
    )
    .unwrap();
    let caller = std::thread::current().id();
    let seen = Arc::new(StdMutex::new(None));
    let s2 = seen.clone();
    let t = Thread::create(&p, move || {
        abt::yield_now().unwrap();
        *s2.lock().unwrap() = Some((std::thread::current().id(), abt::self_rank()));
    });
    prim.join();
    assert!(t.is_finished());
    assert_eq!(*seen.lock().unwrap(), Some((caller, Some(0))));
    // run() returns on a stop requested from a ULT through the handle.
    let h = prim.handle();
    let _t2 = Thread::create(&p, move || h.request_stop());
    prim.run();
    assert_eq!(abt::self_rank(), None);
}

/// A backtrace taken inside a ULT walks the ULT's own frames and ends cleanly at the entry of
/// its stack (the context switch code marks it as the outermost frame).
#[test]
fn backtrace_inside_a_ult_ends_at_its_stack() {
    #[inline(never)]
    fn deep_in_the_ult(n: u32) -> String {
        if n == 0 {
            std::backtrace::Backtrace::force_capture().to_string()
        } else {
            std::hint::black_box(deep_in_the_ult(n - 1))
        }
    }
    // Symbolizing needs far more than the default 16 KiB of stack.
    let p = wait_pool();
    let out = Arc::new(StdMutex::new(String::new()));
    let o2 = out.clone();
    let attr = ThreadAttr::new().stack_size(1 << 20);
    let t = Thread::create_with(&p, &attr, move || *o2.lock().unwrap() = deep_in_the_ult(3));
    let mut xs = stream(vec![p]);
    t.join().unwrap();
    xs.join().unwrap();
    let bt = out.lock().unwrap().clone();
    assert!(bt.contains("deep_in_the_ult"), "{bt}");
    let last = bt
        .lines()
        .rev()
        .find(|l| {
            l.trim_start()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
        .unwrap_or_default()
        .to_string();
    assert!(last.contains("trampoline"), "outermost frame: {last}\n{bt}");
}
