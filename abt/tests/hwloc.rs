//! The `hwloc` feature: topology counts, and a stream binding itself (CPU and memory) from a ULT.
#![cfg(feature = "hwloc")]

use abt::topo::Topology;
use abt::{pool, Access, PoolKind, Sched, SchedConfig, SchedKind, Thread, Xstream};
use std::sync::{Arc, Mutex};

#[test]
fn topology_and_binding_from_a_ult() {
    let topo = Topology::new().unwrap();
    assert!(topo.num_cores() >= 1);
    assert!(topo.num_pus() >= topo.num_cores());
    assert!(topo.num_numa_nodes() >= 1);
    let cpus = topo.core_cpus(0).unwrap();
    assert!(!cpus.is_empty());
    assert!(topo.core_cpus(topo.num_cores()).is_none());

    let p = pool::create_basic(PoolKind::FifoWait, Access::Mpsc);
    let out = Arc::new(Mutex::new(None));
    let (o2, c2) = (out.clone(), cpus.clone());
    let t = Thread::create(&p, move || {
        let topo = Topology::new().unwrap();
        let r = topo
            .bind_current_thread(&c2)
            .and_then(|_| topo.membind_current_thread(0));
        *o2.lock().unwrap() = Some(r);
    });
    let mut xs = Xstream::create(
        Sched::create_basic(SchedKind::Basic, vec![p], SchedConfig::new()).unwrap(),
    )
    .unwrap();
    t.join().unwrap();
    assert_eq!(out.lock().unwrap().take(), Some(Ok(())));
    assert_eq!(
        xs.handle().get_cpubind().unwrap(),
        cpus,
        "the stream's thread is bound"
    );
    xs.join().unwrap();
}
