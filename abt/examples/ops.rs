//! Runs N of one benchmark operation, for instruction counting under callgrind (load-independent):
//! `valgrind --tool=callgrind target/release/examples/ops <case> <n>` at two values of n; the
//! difference of the totals over the difference of n is the instructions per operation.
//!
//! Cases: `yield` (two ULTs on one stream, n yields), `create` (ULT create+join+free in batches
//! of 64), `tasklet` (tasklet create+join+free, batches of 64), `eventual1` (eventual round trips
//! between two ULTs on one stream).

use abt::{
    pool, Access, Eventual, Pool, PoolKind, Primary, Sched, SchedConfig, SchedKind, Task, Thread,
};
use std::sync::Arc;

const BATCH: u64 = 64;

fn main() {
    let mut a = std::env::args().skip(1);
    let case = a.next().unwrap_or_else(|| "tasklet".into());
    let n: u64 = a.next().and_then(|s| s.parse().ok()).unwrap_or(10_000);
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
