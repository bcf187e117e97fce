//! The scheduler conformance suite against the built-in schedulers and a user scheduler over
//! three pools shaped like the DAOS scheduler (NET_POLL, NVME_POLL, GENERIC).

use abt::{Pool, Sched, SchedConfig, SchedContext, SchedKind, Scheduler, EVENT_FREQ};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[test]
fn basic_sched_conforms() {
    abt::testing::sched_conformance(&|pools| {
        Sched::create_basic(SchedKind::Basic, pools, SchedConfig::new()).unwrap()
    });
}

#[test]
fn prio_sched_conforms() {
    abt::testing::sched_conformance(&|pools| {
        Sched::create_basic(
            SchedKind::Prio,
            pools,
            SchedConfig::new().set(EVENT_FREQ, 512),
        )
        .unwrap()
    });
}

/// A user scheduler in the DAOS shape: pool 0 (network poll) at the start of each cycle or after
/// `net_max` units, pool 1 (NVMe poll) when the cycle is used up, else the GENERIC units counted at
/// cycle start.
struct ThreeLevel {
    net_max: u32,
    cycles: Arc<AtomicUsize>,
}

const NET_MAX: abt::SchedConfigVar<u32> = abt::SchedConfigVar::new("net_max");

impl Scheduler for ThreeLevel {
    fn init(&mut self, pools: &[Arc<dyn Pool>], config: &SchedConfig) -> abt::Result<()> {
        if pools.len() != 3 {
            return Err(abt::Error::InvalidSched);
        }
        if let Some(n) = config.read(NET_MAX)? {
            self.net_max = n;
        }
        Ok(())
    }
    fn run(&mut self, ctx: &SchedContext<'_>) {
        let p = ctx.pools();
        let freq = ctx.event_freq();
        let mut since_net = 0;
        let mut cycle_left = 0usize;
        let mut n = 0;
        loop {
            let mut ran = false;
            if cycle_left == 0 || since_net > self.net_max {
                self.cycles.fetch_add(1, Ordering::Relaxed);
                since_net = 0;
                if let Some(u) = p[0].pop() {
                    ctx.run_unit(u);
                    ran = true;
                }
                cycle_left = p[2].len();
                if cycle_left == 0 {
                    if let Some(u) = p[1].pop() {
                        ctx.run_unit(u);
                        ran = true;
                    }
                }
            }
            if cycle_left > 0 {
                cycle_left -= 1;
                if let Some(u) = p[2].pop() {
                    ctx.run_unit(u);
                    ran = true;
                    since_net += 1;
                }
            }
            n += 1;
            if !ran || n >= freq {
                n = 0;
                if ctx.has_to_stop() {
                    break;
                }
                ctx.check_events();
                if !ran {
                    ctx.idle();
                }
            }
        }
    }
}

#[test]
fn user_three_pool_sched_conforms() {
    abt::testing::sched_conformance(&|pools| {
        let s = ThreeLevel {
            net_max: 32,
            cycles: Arc::new(AtomicUsize::new(0)),
        };
        Sched::create(
            s,
            pools,
            SchedConfig::new().set(EVENT_FREQ, 512).set(NET_MAX, 32),
        )
        .unwrap()
    });
}

#[test]
fn sched_config_is_typed() {
    let c = SchedConfig::new().set(EVENT_FREQ, 512);
    assert_eq!(c.read(EVENT_FREQ).unwrap(), Some(512));
    const WRONG: abt::SchedConfigVar<i64> = abt::SchedConfigVar::new("event_freq");
    assert_eq!(c.read(WRONG), Err(abt::Error::SchedConfig("event_freq")));
    assert_eq!(c.read(NET_MAX).unwrap(), None);
    // A user scheduler rejecting its pools is an error at creation.
    let s = ThreeLevel {
        net_max: 1,
        cycles: Arc::new(AtomicUsize::new(0)),
    };
    let one = vec![abt::pool::create_basic(
        abt::PoolKind::Fifo,
        abt::Access::Mpsc,
    )];
    assert!(matches!(
        Sched::create(s, one, SchedConfig::new()),
        Err(abt::Error::InvalidSched)
    ));
    assert!(matches!(
        Sched::create_basic(SchedKind::Basic, vec![], SchedConfig::new()),
        Err(abt::Error::InvalidSched)
    ));
}
