//! "Blocks the ULT, not the stream", shown: a waiting ULT is not dispatched while its stream keeps
//! running others; a FIFO_WAIT stream parks when idle and then uses no CPU; and a bounded
//! two-stream suspend / resume stress.

use abt::{pool, Access, Eventual, Pool, PoolKind, Sched, SchedConfig, SchedKind, Thread, Xstream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HANG: Duration = Duration::from_secs(30);

fn stream(pools: Vec<Arc<dyn Pool>>) -> Xstream {
    Xstream::create(Sched::create_basic(SchedKind::Basic, pools, SchedConfig::new()).unwrap())
        .unwrap()
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < HANG, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn waiting_ult_is_not_dispatched_while_its_stream_runs_others() {
    let p = pool::create_basic(PoolKind::FifoWait, Access::Mpsc);
    let ev = Arc::new(Eventual::<u64>::new());
    let e2 = ev.clone();
    let waiter = Thread::create(&p, move || {
        assert_eq!(e2.wait(), 9);
    });
    let stop = Arc::new(AtomicBool::new(false));
    let spins = Arc::new(AtomicU64::new(0));
    let (s2, n2) = (stop.clone(), spins.clone());
    let busy = Thread::create(&p, move || {
        while !s2.load(Ordering::SeqCst) {
            n2.fetch_add(1, Ordering::SeqCst);
            abt::yield_now().unwrap();
        }
    });
    let mut xs = stream(vec![p]);
    wait_until("the waiter to suspend", || waiter.is_suspended());
    let d0 = waiter.dispatch_count();
    let b0 = busy.dispatch_count();
    // Let the stream run the busy ULT many times.
    wait_until("the busy ULT to run 1000 more times", || {
        busy.dispatch_count() > b0 + 1000
    });
    assert_eq!(
        waiter.dispatch_count(),
        d0,
        "the waiting ULT was never switched in"
    );
    assert!(waiter.is_suspended());
    ev.set(9).unwrap();
    waiter.join().unwrap();
    assert_eq!(
        waiter.dispatch_count(),
        d0 + 1,
        "one dispatch after the wake"
    );
    stop.store(true, Ordering::SeqCst);
    busy.join().unwrap();
    xs.join().unwrap();
}

/// CPU time (user + system, in clock ticks) of one OS thread of this process.
fn thread_cpu_ticks(tid: u64) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    // Fields after the ")" that closes the command name: state is field 3, utime 14, stime 15.
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn idle_fifo_wait_stream_parks_and_uses_no_cpu() {
    let p = pool::create_basic(PoolKind::FifoWait, Access::Mpsc);
    let mut xs = stream(vec![p.clone()]);
    let h = xs.handle();
    wait_until("the idle stream to park", || h.park_count() >= 1);
    let parks0 = h.park_count();
    let tid = h.tid();
    let cpu0 = thread_cpu_ticks(tid);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let wall = t0.elapsed();
    let cpu = thread_cpu_ticks(tid) - cpu0;
    // SAFETY-free arithmetic: ticks are 1/CLK_TCK s (100 on Linux). A spinning stream would show
    // about as many ticks as the wall time; allow a tenth of it.
    let tck = 100.0;
    assert!(
        (cpu as f64) / tck < wall.as_secs_f64() / 10.0,
        "idle stream used {cpu} ticks in {wall:?}"
    );
    // Work wakes it, and it parks again once idle.
    let t = Thread::create(&p, || {});
    t.join().unwrap();
    wait_until("a second park", || h.park_count() > parks0);
    xs.join().unwrap();
}

#[test]
fn two_stream_suspend_resume_stress() {
    // Pairs of ULTs on two streams ping-pong through fresh eventuals: every wake crosses streams,
    // so suspends on one stream race resumes from the other. Bounded: 4 pairs × 300 rounds.
    let pa = pool::create_basic(PoolKind::FifoWait, Access::Mpsc);
    let pb = pool::create_basic(PoolKind::FifoWait, Access::Mpsc);
    const ROUNDS: usize = 300;
    let mut hs = Vec::new();
    for _ in 0..4 {
        let ping: Arc<Vec<Eventual<usize>>> =
            Arc::new((0..ROUNDS).map(|_| Eventual::new()).collect());
        let pong: Arc<Vec<Eventual<usize>>> =
            Arc::new((0..ROUNDS).map(|_| Eventual::new()).collect());
        let (pi, po) = (ping.clone(), pong.clone());
        hs.push(Thread::create(&pa, move || {
            for r in 0..ROUNDS {
                pi[r].set(r).unwrap();
                assert_eq!(po[r].wait(), r + 1);
            }
        }));
        hs.push(Thread::create(&pb, move || {
            for r in 0..ROUNDS {
                assert_eq!(ping[r].wait(), r);
                pong[r].set(r + 1).unwrap();
            }
        }));
    }
    let mut a = stream(vec![pa]);
    let mut b = stream(vec![pb]);
    for h in hs {
        h.join().unwrap();
    }
    a.join().unwrap();
    b.join().unwrap();
}
