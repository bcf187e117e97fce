//! The spare reply receive (`Spare`): posted, adopted, let go of, and every callback once.

use super::*;
use crate::class::InitOptions;
use crate::Handle;
use na::plugins::inproc::{Fabric, FaultConfig};
use std::sync::Mutex as StdMutex;

const ID: RpcId = 7;

/// A client context and `n` servers over one inproc fabric; the servers answer RPC `ID`.
struct Net {
    _fabric: Fabric,
    client: Context,
    servers: Vec<Context>,
    client_class: Class,
}

fn net(n: usize) -> Net {
    let fabric = Fabric::new(FaultConfig::none());
    let client_class = Class::from_na(fabric.class(false), InitOptions::default());
    client_class.register::<u32, u32>(ID, None);
    let servers = (0..n)
        .map(|_| {
            let class = Class::from_na(fabric.class(true), InitOptions::default());
            let answer: crate::Handler = UserArc::new(|h: Handle| {
                let x: u32 = h.get_input()?;
                h.respond(&(x + 1), |_| {})
            });
            class.register::<u32, u32>(ID, Some(answer));
            class.context_create().unwrap()
        })
        .collect();
    let client = client_class.context_create().unwrap();
    Net {
        _fabric: fabric,
        client,
        servers,
        client_class,
    }
}

type Calls = Arc<StdMutex<Vec<Result<u32>>>>;

impl Net {
    fn drive(&self, done: impl Fn() -> bool) {
        let end = Instant::now() + Duration::from_secs(30);
        while !done() {
            for c in std::iter::once(&self.client).chain(&self.servers) {
                c.progress(Duration::ZERO).unwrap();
                c.trigger(usize::MAX).unwrap();
            }
            assert!(Instant::now() < end, "hang");
        }
    }

    /// Forwards `x` on `h` (to server `to`'s address when `h` is new); records the result.
    fn forward(&self, h: &Handle, x: u32, calls: &Calls) {
        let c = calls.clone();
        h.forward(&x, move |h, r| {
            let r = r.and_then(|()| h.get_output::<u32>());
            c.lock().unwrap().push(r);
        })
        .unwrap();
    }

    /// One forward of `x` to server `to`, driven to its callback; returns its result.
    fn round_trip(&self, to: usize, x: u32) -> Result<u32> {
        let h = self
            .client
            .create(&self.servers[to].self_addr(), ID)
            .unwrap();
        let calls: Calls = Arc::default();
        self.forward(&h, x, &calls);
        self.drive(|| !calls.lock().unwrap().is_empty());
        let r = calls.lock().unwrap().pop().unwrap();
        r
    }

    fn st(&self) -> MutexGuard<'_, CtxState> {
        lock(&self.client.inner.st)
    }

    /// The spare's peer (as a server index) and token, if one is posted.
    fn spare(&self) -> Option<(usize, u64)> {
        let st = self.st();
        let s = st.spare.as_ref()?;
        let to = self.servers.iter().position(|c| c.self_addr() == s.dest);
        Some((to.expect("spare for a known server"), s.token))
    }

    /// `Op::Spare` records in the client's table (posted, or canceled and not yet completed).
    fn spare_records(&self) -> usize {
        self.st()
            .ops
            .values()
            .filter(|o| matches!(o, Op::Spare))
            .count()
    }
}

#[test]
fn a_second_forward_to_a_peer_posts_a_spare_and_the_next_adopts_it() {
    let n = net(1);
    assert_eq!(n.round_trip(0, 1), Ok(2));
    assert_eq!(n.spare(), None, "one forward to a peer posts no spare");
    assert_eq!(n.round_trip(0, 2), Ok(3));
    let (to, token) = n
        .spare()
        .expect("the second forward in a row posts a spare");
    assert_eq!(to, 0);
    let tag = n.st().spare.as_ref().unwrap().tag;

    // The third forward takes the spare's record, tag and receive, and posts the next spare.
    let h = n.client.create(&n.servers[0].self_addr(), ID).unwrap();
    let calls: Calls = Arc::default();
    n.forward(&h, 3, &calls);
    match n.st().ops.get(token) {
        Some(Op::Forward(f)) => {
            assert_eq!(f.tag, tag);
            assert!(f.recv_op.is_some() && f.recv_pending);
        }
        _ => panic!("the forward did not adopt the spare's record"),
    }
    let (to2, token2) = n.spare().expect("a new spare once the request left");
    assert_eq!(to2, 0);
    assert_ne!(token2, token);
    n.drive(|| !calls.lock().unwrap().is_empty());
    assert_eq!(*calls.lock().unwrap(), vec![Ok(4)]);
    for x in 10..40 {
        assert_eq!(n.round_trip(0, x), Ok(x + 1));
    }
    assert_eq!(n.spare_records(), 1);
}

#[test]
fn forwards_spread_over_peers_post_no_spare_and_a_spare_follows_the_peer() {
    let n = net(2);
    for x in 0..6 {
        assert_eq!(n.round_trip((x % 2) as usize, x), Ok(x + 1));
    }
    assert_eq!(n.spare(), None, "alternating peers post no spare");
    assert_eq!(n.spare_records(), 0);
    n.round_trip(0, 1).unwrap();
    n.round_trip(0, 2).unwrap();
    assert_eq!(n.spare().map(|s| s.0), Some(0));
    // One forward elsewhere keeps it; two in a row move it to the new peer.
    n.round_trip(1, 3).unwrap();
    assert_eq!(n.spare().map(|s| s.0), Some(0));
    n.round_trip(1, 4).unwrap();
    assert_eq!(n.spare().map(|s| s.0), Some(1));
    // The old spare's cancel completes at the next progress: its record goes.
    n.drive(|| n.spare_records() == 1);
    assert_eq!(n.round_trip(1, 5), Ok(6));
    assert_eq!(n.round_trip(0, 6), Ok(7));
}

/// Forwards on a new handle while the test holds the client's NA context, so the forward is
/// handed off (queued) after adopting the spare.
fn queued_forward(n: &Net, x: u32, calls: &Calls) -> Handle {
    let h = n.client.create(&n.servers[0].self_addr(), ID).unwrap();
    let na = lock(&n.client.inner.na);
    let spare = n.spare().expect("a spare to adopt").1;
    n.forward(&h, x, calls);
    drop(na);
    assert!(
        matches!(n.st().ops.get(spare), Some(Op::Forward(f)) if !f.posted),
        "the queued forward holds the spare's record"
    );
    h
}

#[test]
fn a_queued_forward_canceled_after_adopting_the_spare_calls_back_once() {
    let n = net(1);
    n.round_trip(0, 1).unwrap();
    n.round_trip(0, 2).unwrap();
    let calls: Calls = Arc::default();
    let h = queued_forward(&n, 3, &calls);
    h.cancel();
    n.drive(|| !calls.lock().unwrap().is_empty());
    // Nothing more comes for it.
    for _ in 0..50 {
        n.client.progress(Duration::ZERO).unwrap();
        n.client.trigger(usize::MAX).unwrap();
    }
    assert_eq!(*calls.lock().unwrap(), vec![Err(Error::Canceled)]);
    assert_eq!(n.round_trip(0, 7), Ok(8), "the context keeps serving");
}

#[test]
fn a_forward_holding_the_spare_times_out_once() {
    let n = net(1);
    n.round_trip(0, 1).unwrap();
    n.round_trip(0, 2).unwrap();
    assert!(n.spare().is_some());
    let h = n.client.create(&n.servers[0].self_addr(), ID).unwrap();
    let calls: Calls = Arc::default();
    let c = calls.clone();
    h.forward_timed(&3u32, Duration::from_millis(20), move |_, r| {
        c.lock().unwrap().push(r.map(|()| 0));
    })
    .unwrap();
    // The server never runs: only the client is driven.
    let end = Instant::now() + Duration::from_secs(30);
    while calls.lock().unwrap().is_empty() {
        n.client.progress(Duration::from_millis(1)).unwrap();
        n.client.trigger(usize::MAX).unwrap();
        assert!(Instant::now() < end, "hang");
    }
    for _ in 0..50 {
        n.client.progress(Duration::ZERO).unwrap();
        n.client.trigger(usize::MAX).unwrap();
    }
    assert_eq!(*calls.lock().unwrap(), vec![Err(Error::Timeout)]);
}

#[test]
fn teardown_with_a_spare_and_an_adopted_queued_forward_calls_back_once() {
    let n = net(1);
    n.round_trip(0, 1).unwrap();
    n.round_trip(0, 2).unwrap();
    let calls: Calls = Arc::default();
    let _h = queued_forward(&n, 3, &calls);
    let Net {
        client, servers, ..
    } = n;
    client.close();
    assert_eq!(*calls.lock().unwrap(), vec![Err(Error::Canceled)]);
    drop(servers);

    // A context closed with only a spare posted: nothing to call back, nothing left over.
    let n = net(1);
    n.round_trip(0, 1).unwrap();
    n.round_trip(0, 2).unwrap();
    assert_eq!(n.spare_records(), 1);
    let inner = n.client.inner.clone();
    let Net { client, .. } = n;
    client.close();
    assert_eq!(lock(&inner.st).ops.keys().count(), 0);
}

#[test]
fn a_removed_peer_lets_its_spare_go() {
    let n = net(1);
    n.round_trip(0, 1).unwrap();
    n.round_trip(0, 2).unwrap();
    assert!(n.spare().is_some());
    n.client_class
        .addr_set_remove(&n.servers[0].self_addr())
        .unwrap();
    n.drive(|| n.spare_records() == 0);
    assert_eq!(n.spare(), None);
    assert!(n.st().last_dest.is_none());
}
