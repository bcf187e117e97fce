//! Criterion benches for the abt layer, one per case of ANCHORS.md's Argobots table (same shapes
//! as the C programs in the Argobots comparison: batches of 64, steady state, spinning idle
//! schedulers where Argobots' default spins), plus per-access-kind pool push/pop.

use abt::{
    pool, Access, Eventual, LockPool, Pool, PoolKind, Primary, RingPool, Sched, SchedConfig,
    SchedKind, Task, Thread, Xstream,
};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

const BATCH: usize = 64;

fn primary(p: &Arc<dyn Pool>) -> Primary {
    Primary::new(
        Sched::create_basic(SchedKind::Basic, vec![p.clone()], SchedConfig::new()).unwrap(),
    )
    .unwrap()
}

/// Runs `f` as a ULT on a primary stream over `p` and returns the time `f` measured.
fn on_primary(p: &Arc<dyn Pool>, f: impl FnOnce() -> Duration + Send + 'static) -> Duration {
    let mut prim = primary(p);
    let out = Arc::new(StdMutex::new(Duration::ZERO));
    let o2 = out.clone();
    let _t = Thread::create(p, move || *o2.lock().unwrap() = f());
    prim.join();
    let d = *out.lock().unwrap();
    d
}

fn yield_pingpong(c: &mut Criterion) {
    c.bench_function("yield", |b| {
        b.iter_custom(|iters| {
            let p = pool::create_basic(PoolKind::Fifo, Access::Priv);
            let mut prim = primary(&p);
            let per = iters.div_ceil(2);
            for _ in 0..2 {
                Thread::create(&p, move || {
                    for _ in 0..per {
                        abt::yield_now().unwrap();
                    }
                });
            }
            let t0 = Instant::now();
            prim.join();
            t0.elapsed()
        })
    });
}

fn create_join(c: &mut Criterion) {
    c.bench_function("create_join_free", |b| {
        b.iter_custom(|iters| {
            let p = pool::create_basic(PoolKind::Fifo, Access::Priv);
            let p2 = p.clone();
            let batches = iters.div_ceil(BATCH as u64);
            on_primary(&p, move || {
                let run = |n: u64| {
                    for _ in 0..n {
                        let ts: Vec<Thread> =
                            (0..BATCH).map(|_| Thread::create(&p2, || {})).collect();
                        for t in ts {
                            t.free().unwrap();
                        }
                    }
                };
                run(20); // warm the stack cache
                let t0 = Instant::now();
                run(batches);
                t0.elapsed() * iters as u32 / (batches * BATCH as u64) as u32
            })
        })
    });
}

fn tasklet(c: &mut Criterion) {
    c.bench_function("tasklet_create_join", |b| {
        b.iter_custom(|iters| {
            let p = pool::create_basic(PoolKind::Fifo, Access::Priv);
            let p2 = p.clone();
            let batches = iters.div_ceil(BATCH as u64);
            on_primary(&p, move || {
                let t0 = Instant::now();
                for _ in 0..batches {
                    let ts: Vec<Task> = (0..BATCH).map(|_| Task::create(&p2, || {})).collect();
                    for t in ts {
                        t.free().unwrap();
                    }
                }
                t0.elapsed() * iters as u32 / (batches * BATCH as u64) as u32
            })
        })
    });
}

fn remote_create(c: &mut Criterion) {
    c.bench_function("create_remote", |b| {
        b.iter_custom(|iters| {
            let local = pool::create_basic(PoolKind::Fifo, Access::Priv);
            let remote = pool::create_basic(PoolKind::Fifo, Access::Mpsc);
            let mut xs = Xstream::create(
                Sched::create_basic(SchedKind::Basic, vec![remote.clone()], SchedConfig::new())
                    .unwrap(),
            )
            .unwrap();
            let batches = iters.div_ceil(BATCH as u64);
            let d = on_primary(&local, move || {
                let t0 = Instant::now();
                for _ in 0..batches {
                    let ts: Vec<Thread> =
                        (0..BATCH).map(|_| Thread::create(&remote, || {})).collect();
                    for t in ts {
                        t.free().unwrap();
                    }
                }
                t0.elapsed() * iters as u32 / (batches * BATCH as u64) as u32
            });
            xs.join().unwrap();
            d
        })
    });
}

/// Untimed round trips first: both streams up and running.
const WARM: u64 = 200;

/// Round trips between two ULTs through two eventuals, reset by their waiters; the first
/// `WARM` are not timed.
fn pingpong(
    pa: &Arc<dyn Pool>,
    pb: &Arc<dyn Pool>,
    iters: u64,
) -> (Thread, Thread, Arc<StdMutex<Duration>>) {
    let e1 = Arc::new(Eventual::<()>::new());
    let e2 = Arc::new(Eventual::<()>::new());
    let out = Arc::new(StdMutex::new(Duration::ZERO));
    let (a1, a2, o) = (e1.clone(), e2.clone(), out.clone());
    let a = Thread::create(pa, move || {
        let mut t0 = Instant::now();
        for i in 0..iters + WARM {
            if i == WARM {
                t0 = Instant::now();
            }
            a1.set(()).unwrap();
            a2.wait();
            a2.reset();
        }
        *o.lock().unwrap() = t0.elapsed();
    });
    let b = Thread::create(pb, move || {
        for _ in 0..iters + WARM {
            e1.wait();
            e1.reset();
            e2.set(()).unwrap();
        }
    });
    (a, b, out)
}

fn eventual(c: &mut Criterion) {
    c.bench_function("eventual_1xs", |b| {
        b.iter_custom(|iters| {
            let p = pool::create_basic(PoolKind::Fifo, Access::Priv);
            let mut prim = primary(&p);
            let (_a, _b, out) = pingpong(&p, &p, iters);
            prim.join();
            let d = *out.lock().unwrap();
            d
        })
    });
    c.bench_function("eventual_2xs", |b| {
        b.iter_custom(|iters| {
            let pa = pool::create_basic(PoolKind::Fifo, Access::Mpsc);
            let pb = pool::create_basic(PoolKind::Fifo, Access::Mpsc);
            let (a, bt, out) = pingpong(&pa, &pb, iters);
            let mk = |p: &Arc<dyn Pool>| {
                Xstream::create(
                    Sched::create_basic(SchedKind::Basic, vec![p.clone()], SchedConfig::new())
                        .unwrap(),
                )
                .unwrap()
            };
            let mut xa = mk(&pa);
            let mut xb = mk(&pb);
            a.join().unwrap();
            bt.join().unwrap();
            xa.join().unwrap();
            xb.join().unwrap();
            let d = *out.lock().unwrap();
            d
        })
    });
}

fn pools(c: &mut Criterion) {
    let mut g = c.benchmark_group("pool_push_pop");
    for access in [
        Access::Priv,
        Access::Spsc,
        Access::Mpsc,
        Access::Spmc,
        Access::Mpmc,
    ] {
        for (imp, p) in [
            (
                "ring",
                Arc::new(RingPool::new(PoolKind::Fifo, access)) as Arc<dyn Pool>,
            ),
            (
                "lock",
                Arc::new(LockPool::new(PoolKind::Fifo, access)) as Arc<dyn Pool>,
            ),
        ] {
            // A parked unit (a never-run tasklet) moved in and out by a ULT on the stream whose
            // scheduler owns the pool: what a yield costs the pool.
            let holder = pool::create_basic(PoolKind::Fifo, Access::Priv);
            let _t = Task::create(&holder, || {});
            let u = Arc::new(StdMutex::new(Some(holder.pop().unwrap())));
            g.bench_function(format!("{access:?}/{imp}"), |b| {
                b.iter_custom(|iters| {
                    let (p2, u2) = (p.clone(), u.clone());
                    on_primary(&p, move || {
                        let mut unit = u2.lock().unwrap().take();
                        let t0 = Instant::now();
                        for _ in 0..iters {
                            p2.push(unit.take().unwrap());
                            unit = Some(black_box(p2.pop().unwrap()));
                        }
                        let d = t0.elapsed();
                        *u2.lock().unwrap() = unit;
                        d
                    })
                })
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = yield_pingpong, create_join, tasklet, remote_create, eventual, pools
}
criterion_main!(benches);
