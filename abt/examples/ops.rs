//! Runs N of one benchmark operation, for instruction counting under callgrind (load-independent):
//! `valgrind --tool=callgrind target/release/examples/ops <case> <n>` at two values of n; the
//! difference of the totals over the difference of n is the instructions per operation.
//!
//! Cases: `yield` (two ULTs on one stream, n yields), `create` (ULT create+join+free in batches
//! of 64), `tasklet` (tasklet create+join+free, batches of 64), `eventual1` (eventual round trips
//! between two ULTs on one stream), `eventual2` (the same across two streams over MPSC pools, as
//! the criterion bench's `eventual_2xs`; prints the time per round trip on stderr, for `perf` and
//! `strace` rather than callgrind).

use abt::{
    pool, Access, Eventual, Pool, PoolKind, Primary, Sched, SchedConfig, SchedKind, Task, Thread,
    Xstream,
};
use std::sync::Arc;

const BATCH: u64 = 64;

fn main() {
    let mut a = std::env::args().skip(1);
    let case = a.next().unwrap_or_else(|| "tasklet".into());
    let n: u64 = a.next().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    if case == "eventual2" {
        eventual2(n);
        return;
    }
    let p = pool::create_basic(PoolKind::Fifo, Access::Priv);
    let mut prim = Primary::new(
        Sched::create_basic(SchedKind::Basic, vec![p.clone()], SchedConfig::new()).unwrap(),
    )
    .unwrap();
    let p2: Arc<dyn Pool> = p.clone();
    match case.as_str() {
        "yield" => {
            for _ in 0..2 {
                Thread::create(&p, move || {
                    for _ in 0..n / 2 {
                        abt::yield_now().unwrap();
                    }
                });
            }
        }
        "create" => {
            Thread::create(&p, move || {
                for _ in 0..n / BATCH {
                    let ts: Vec<Thread> = (0..BATCH).map(|_| Thread::create(&p2, || {})).collect();
                    for t in ts {
                        t.free().unwrap();
                    }
                }
            });
        }
        "tasklet" => {
            Thread::create(&p, move || {
                for _ in 0..n / BATCH {
                    let ts: Vec<Task> = (0..BATCH).map(|_| Task::create(&p2, || {})).collect();
                    for t in ts {
                        t.free().unwrap();
                    }
                }
            });
        }
        "eventual1" => {
            let e1 = Arc::new(Eventual::<()>::new());
            let e2 = Arc::new(Eventual::<()>::new());
            let (a1, a2) = (e1.clone(), e2.clone());
            Thread::create(&p, move || {
                for _ in 0..n {
                    a1.set(()).unwrap();
                    a2.wait();
                    a2.reset();
                }
            });
            Thread::create(&p, move || {
                for _ in 0..n {
                    e1.wait();
                    e1.reset();
                    e2.set(()).unwrap();
                }
            });
        }
        other => {
            eprintln!("unknown case {other}");
            std::process::exit(2);
        }
    }
    prim.join();
}

/// Eventual round trips between a ULT on one stream and a ULT on another, both over MPSC FIFO
/// pools with the basic scheduler (the criterion bench's `eventual_2xs`).
fn eventual2(n: u64) {
    let pa = pool::create_basic(PoolKind::Fifo, Access::Mpsc);
    let pb = pool::create_basic(PoolKind::Fifo, Access::Mpsc);
    let e1 = Arc::new(Eventual::<()>::new());
    let e2 = Arc::new(Eventual::<()>::new());
    let (a1, a2) = (e1.clone(), e2.clone());
    let warm = n / 10 + 1;
    let a = Thread::create(&pa, move || {
        let mut t0 = std::time::Instant::now();
        for i in 0..n + warm {
            if i == warm {
                t0 = std::time::Instant::now();
            }
            a1.set(()).unwrap();
            a2.wait();
            a2.reset();
        }
        eprintln!(
            "eventual2: {:.3} us per round trip",
            t0.elapsed().as_secs_f64() * 1e6 / n as f64
        );
    });
    let b = Thread::create(&pb, move || {
        for _ in 0..n + warm {
            e1.wait();
            e1.reset();
            e2.set(()).unwrap();
        }
    });
    let mk = |p: &Arc<dyn Pool>| {
        Xstream::create(
            Sched::create_basic(SchedKind::Basic, vec![p.clone()], SchedConfig::new()).unwrap(),
        )
        .unwrap()
    };
    let mut xa = mk(&pa);
    let mut xb = mk(&pb);
    a.join().unwrap();
    b.join().unwrap();
    xa.join().unwrap();
    xb.join().unwrap();
}
