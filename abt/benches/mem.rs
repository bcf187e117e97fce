//! Memory per live idle ULT: creates 100 k ULTs that suspend, then reads RSS and virtual size
//! (ANCHORS.md: Argobots 4.3 KB RSS, 16.5 KB virtual). Unguarded arena stacks, since 100 k guarded
//! stacks would need 200 k mappings (vm.max_map_count is 65,530 here); a guarded run with 20 k is
//! printed beside. Usage: `cargo bench -p abt --bench mem [-- N]`.

use abt::{
    pool, Access, Pool, PoolKind, Primary, Sched, SchedConfig, SchedKind, Thread, ThreadAttr,
};
use std::sync::Arc;

fn statm() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let f: Vec<u64> = s.split_whitespace().map(|x| x.parse().unwrap()).collect();
    (f[1] * 4096, f[0] * 4096) // (rss, virtual) bytes
}

fn run(n: usize, guard: bool) {
    let p: Arc<dyn Pool> = pool::create_basic(PoolKind::Fifo, Access::Priv);
    let mut prim = Primary::new(
        Sched::create_basic(SchedKind::Basic, vec![p.clone()], SchedConfig::new()).unwrap(),
    )
    .unwrap();
    let attr = ThreadAttr::new().guard(guard);
    let (r0, v0) = statm();
    let ts: Vec<Thread> = (0..n)
        .map(|_| {
            Thread::create_with(&p, &attr, || {
                abt::suspend().unwrap();
            })
        })
        .collect();
    // Run until every ULT has suspended: a stop from the last ULT queued.
    let h = prim.handle();
    Thread::create(&p, move || h.request_stop());
    prim.run();
    let (r1, v1) = statm();
    assert!(ts.iter().all(|t| t.is_suspended()));
    println!(
        "mem_per_live_suspended_ult (n={n}, guard={guard}): {:.2} KiB RSS, {:.2} KiB virtual",
        (r1 - r0) as f64 / n as f64 / 1024.0,
        (v1 - v0) as f64 / n as f64 / 1024.0
    );
    for t in &ts {
        t.resume().unwrap();
    }
    prim.join();
    drop(prim);
}

fn main() {
    let n = std::env::args()
        .filter_map(|a| a.parse::<usize>().ok())
        .next()
        .unwrap_or(100_000);
    run(n, false);
    run(n.min(20_000), true);
}
