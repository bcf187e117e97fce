//! The pool conformance suite, run against both `Pool` implementations and `create_basic`.

use abt::{pool, LockPool, Pool, RingPool};
use std::sync::Arc;

#[test]
fn ring_pool_conforms() {
    abt::testing::pool_conformance(&|k, a| Arc::new(RingPool::new(k, a)) as Arc<dyn Pool>);
}

#[test]
fn lock_pool_conforms() {
    abt::testing::pool_conformance(&|k, a| Arc::new(LockPool::new(k, a)) as Arc<dyn Pool>);
}

#[test]
fn create_basic_conforms() {
    abt::testing::pool_conformance(&pool::create_basic);
}

/// A single-consumer pool's deque belongs to the stream whose scheduler runs over it, and only
/// while it runs: a ULT on another stream that pops and pushes the pool directly does not take it
/// over, so what it pushes back is still there for a plain thread once that stream has ended.
#[test]
fn a_stream_popping_a_pool_outside_its_scheduler_does_not_keep_it() {
    use abt::{Access, PoolKind, Sched, SchedConfig, SchedKind, Task, Thread, Xstream};
    for access in [Access::Priv, Access::Spsc, Access::Mpsc] {
        let q = pool::create_basic(PoolKind::Fifo, access);
        let t = Task::create(&q, || {});
        let p = pool::create_basic(PoolKind::Fifo, Access::Priv);
        let q2 = q.clone();
        let ult = Thread::create(&p, move || {
            let u = q2.pop().expect("the queued tasklet");
            q2.push(u);
        });
        let sched = Sched::create_basic(SchedKind::Basic, vec![p], SchedConfig::new()).unwrap();
        let mut xs = Xstream::create(sched).unwrap();
        ult.join().unwrap();
        xs.join().unwrap();
        assert_eq!(q.len(), 1, "{access:?}: the unit is queued");
        assert!(
            q.pop().is_some(),
            "{access:?}: a plain thread pops it afterwards"
        );
        // A stream over the pool runs the next one.
        let t2 = Task::create(&q, || {});
        let sched = Sched::create_basic(SchedKind::Basic, vec![q], SchedConfig::new()).unwrap();
        let mut ys = Xstream::create(sched).unwrap();
        t2.join().unwrap();
        ys.join().unwrap();
        drop(t);
    }
}
