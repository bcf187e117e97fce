//! The NA plugin conformance suite: one set of cases every plugin passes (DESIGN §7).
//!
//! A plugin's test file implements [`Fixture`] (a fresh listening class, and a [`Peer`] serving
//! [`serve_peer`] somewhere else — a child process for ofi, a thread on its own endpoint for
//! inproc) and calls each case, or [`run_all`]. Every case counts the completions of every
//! operation it posts and asserts exactly one each, the ones `close` produces included.
//!
//! The peer speaks a small protocol: the first payload byte of an unexpected message (after the
//! plugin's header) is a command (`CMD_*`), answered to the sender with the same tag.

use crate::class::{Class, Context};
use crate::error::Error;
use crate::mem::{Access, MemHandle, RemoteMem};
use crate::msg::{MsgBuf, Tag};
use crate::op::{Completion, OpId, OpKind};
use crate::plugins::inproc::{Fabric, FaultConfig};
use crate::recv_pool::{Received, RecvPool, RecvPoolConfig};
use crate::sync::{lock, Arc, AtomicBool, Mutex, Ordering};
use crate::Addr;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Reply with an expected message carrying the same payload (command byte included).
pub const CMD_ECHO: u8 = b'E';
/// Reply with an expected message (the payload), then an unexpected one (the payload): the
/// expected reply reaches the sender before the unexpected one does.
pub const CMD_EXPECTED_FIRST: u8 = b'B';
/// Reply with an unexpected message (the payload), then an expected one (`b"ack"`).
pub const CMD_UNEXPECTED_FIRST: u8 = b'U';
/// Reply with an unexpected message carrying the payload, and nothing else.
pub const CMD_UNEXPECTED: u8 = b'V';
/// Reply (expected) with the serialized handle of the peer's exposed region.
pub const CMD_MEM: u8 = b'M';
/// Deregister the exposed region, then reply (expected) `b"D"`.
pub const CMD_DEREGISTER: u8 = b'D';
/// Post an expected receive of the maximum expected size from the sender with tag + 1, reply
/// (expected, tag) `b"ready"`; when that message arrives, reply (expected, tag + 2) with its
/// length as a little-endian u64.
pub const CMD_RECEIVE: u8 = b'R';
/// Reply (expected) `b"Q"` and stop serving.
pub const CMD_QUIT: u8 = b'Q';

/// Lengths of the two segments of the peer's exposed region.
pub const PEER_SEGMENTS: [usize; 2] = [4000, 6000];

/// Byte `i` of the peer's exposed region before anyone writes to it.
pub fn peer_pattern(i: usize) -> u8 {
    (i.wrapping_mul(7).wrapping_add(3) % 251) as u8
}

/// Generous bound on any single wait: a hang guard, never a timing assertion.
pub const HANG_GUARD: Duration = Duration::from_secs(60);

/// A peer serving [`serve_peer`] somewhere else.
pub trait Peer: Send {
    /// Its address string, as the fixture's classes look it up.
    fn addr(&self) -> &str;
    /// Kills it mid-whatever (process kill, or the inproc endpoint vanishing).
    fn kill(&mut self);
}

/// What the suite needs from a plugin under test.
pub trait Fixture: Sync {
    /// A fresh listening class of the plugin under test.
    fn class(&self) -> Class;
    /// A new peer serving [`serve_peer`].
    fn spawn_peer(&self) -> Box<dyn Peer>;
    /// Plugin-specific checks on a fresh class (e.g. ofi: the provider is `tcp;ofi_rxm`).
    fn check_class(&self, _class: &Class) {}
}

/// What a peer did before it stopped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Unexpected messages served.
    pub served: u64,
    /// Its own operations that completed with an error.
    pub errors: u64,
    /// Times its receive pool ran out.
    pub exhaustions: u64,
}

const POOL_USER: u64 = u64::MAX - 1;
const PEER_SEND: u64 = 1;
const PEER_RECV: u64 = 2;

/// Serves the peer protocol on a new context of `class` until [`CMD_QUIT`] or `stop`. Calls
/// `ready` with its address string once it accepts messages. Errors are the context's creation
/// or registration; bad messages are logged and skipped. Prints nothing.
pub fn serve_peer(
    class: &Class,
    ready: &mut dyn FnMut(&str),
    stop: Option<&AtomicBool>,
) -> crate::Result<PeerStats> {
    let ctx = class.context_create(0)?;
    let addr = class.addr_to_string(&ctx.self_addr())?;
    let segs = PEER_SEGMENTS
        .iter()
        .scan(0usize, |base, &len| {
            let seg: Vec<u8> = (*base..*base + len).map(peer_pattern).collect();
            *base += len;
            Some(seg)
        })
        .collect();
    let mut region = Some(class.mem_register_segments(segs, Access::READWRITE)?);
    let mut pool = RecvPool::new(
        &ctx,
        RecvPoolConfig {
            cap: 16384,
            user: POOL_USER,
            ..RecvPoolConfig::default()
        },
    );
    let hdr = class.unexpected_header_size();
    let mut stats = PeerStats::default();
    // (source, tag) of pending CMD_RECEIVE receives, by op.
    let mut receiving: HashMap<OpId, (Addr, Tag)> = HashMap::new();
    ready(&addr);
    let mut quit = false;
    while !quit && !stop.is_some_and(|s| s.load(Ordering::Acquire)) {
        ctx.progress(Duration::from_millis(50))?;
        while let Some(c) = ctx.pop() {
            if pool.owns(&c) {
                let r = match pool.take(&ctx, c) {
                    Ok(r) => r,
                    Err(_) => continue,
                };
                stats.served += 1;
                quit |= serve_one(&ctx, class, hdr, &r, &mut region, &mut receiving);
                pool.repost(&ctx, r.buf);
            } else if c.kind == OpKind::RecvExpected {
                if let Some((src, tag)) = receiving.remove(&c.op) {
                    let len = if c.result.is_ok() {
                        c.len as u64
                    } else {
                        u64::MAX
                    };
                    let b = MsgBuf::from_slice(&len.to_le_bytes());
                    ctx.send_expected(b, 8, &src, tag.wrapping_add(2), PEER_SEND);
                }
            } else if c.result.is_err() {
                stats.errors += 1;
            }
        }
    }
    stats.exhaustions = pool.exhaustions();
    for c in ctx.close() {
        if pool.owns(&c) {
            let _ = pool.take_closed(c);
        }
    }
    Ok(stats)
}

/// Answers one command; returns true on [`CMD_QUIT`].
fn serve_one(
    ctx: &Context,
    class: &Class,
    hdr: usize,
    r: &Received,
    region: &mut Option<MemHandle>,
    receiving: &mut HashMap<OpId, (Addr, Tag)>,
) -> bool {
    let payload = r.buf.as_slice().get(hdr..r.len).unwrap_or(&[]);
    let expected = |bytes: &[u8], tag: Tag| {
        ctx.send_expected(
            MsgBuf::from_slice(bytes),
            bytes.len(),
            &r.source,
            tag,
            PEER_SEND,
        );
    };
    let unexpected = |bytes: &[u8]| {
        let mut b = class.msg_buf_alloc(hdr + bytes.len());
        ctx.msg_init_unexpected(&mut b);
        b.as_mut_slice()[hdr..].copy_from_slice(bytes);
        ctx.send_unexpected(b, hdr + bytes.len(), &r.source, r.tag, PEER_SEND);
    };
    match payload.first().copied() {
        Some(CMD_ECHO) => expected(payload, r.tag),
        Some(CMD_EXPECTED_FIRST) => {
            expected(payload, r.tag);
            unexpected(payload);
        }
        Some(CMD_UNEXPECTED_FIRST) => {
            unexpected(payload);
            expected(b"ack", r.tag);
        }
        Some(CMD_UNEXPECTED) => unexpected(payload),
        Some(CMD_MEM) => match region {
            Some(mh) => expected(&class.mem_handle_serialize(mh), r.tag),
            None => expected(b"", r.tag),
        },
        Some(CMD_DEREGISTER) => {
            *region = None;
            expected(b"D", r.tag);
        }
        Some(CMD_RECEIVE) => {
            let size = class.max_expected_size();
            let op = ctx.recv_expected(
                class.msg_buf_alloc(size),
                &r.source,
                r.tag.wrapping_add(1),
                PEER_RECV,
            );
            receiving.insert(op, (r.source.clone(), r.tag));
            expected(b"ready", r.tag);
        }
        Some(CMD_QUIT) => {
            expected(b"Q", r.tag);
            return true;
        }
        other => {
            tracing::warn!(
                ?other,
                len = r.len,
                "na.testing: peer got an unknown command"
            );
        }
    }
    false
}

/// Posts, waits and counts completions for one context; `finish` closes it and asserts every
/// operation completed exactly once.
struct Tester {
    case: &'static str,
    ctx: Option<Context>,
    peer: Addr,
    hdr: usize,
    next_tag: Tag,
    posted: HashMap<OpId, &'static str>,
    count: HashMap<OpId, u32>,
    done: HashMap<OpId, Completion>,
    pool: Option<RecvPool>,
    unexpected: Vec<Received>,
    /// Pump with `progress_into` every other time (else `progress` and `pop`).
    alternate: bool,
    pumps: usize,
}

impl Tester {
    fn new(case: &'static str, class: &Class, id: u8, peer: &str) -> Tester {
        let ctx = class.context_create(id).expect("context_create");
        let peer = class.addr_lookup(peer).expect("peer address lookup");
        Tester {
            case,
            ctx: Some(ctx),
            peer,
            hdr: class.unexpected_header_size(),
            next_tag: 1000 + u32::from(id) * 1_000_000,
            posted: HashMap::new(),
            count: HashMap::new(),
            done: HashMap::new(),
            pool: None,
            unexpected: Vec::new(),
            alternate: false,
            pumps: 0,
        }
    }

    fn ctx(&self) -> &Context {
        self.ctx.as_ref().expect("context open until finish")
    }

    /// Keeps 4 unexpected receives posted ([`RecvPool`]) so the peer's unexpected messages land.
    fn small_pool(&mut self) {
        let pool = RecvPool::new(
            self.ctx(),
            RecvPoolConfig {
                init: 4,
                user: POOL_USER,
                ..RecvPoolConfig::default()
            },
        );
        self.pool = Some(pool);
    }

    fn tag(&mut self) -> Tag {
        self.next_tag += 3;
        self.next_tag
    }

    fn track(&mut self, op: OpId, what: &'static str) -> OpId {
        assert!(
            self.posted.insert(op, what).is_none(),
            "{}: op id {op:?} reused",
            self.case
        );
        op
    }

    fn cmd_to(&mut self, to: &Addr, cmd: u8, tag: Tag, extra: &[u8]) -> OpId {
        let len = self.hdr + 1 + extra.len();
        let mut b = self.ctx().class().msg_buf_alloc(len);
        self.ctx().msg_init_unexpected(&mut b);
        b.as_mut_slice()[self.hdr] = cmd;
        b.as_mut_slice()[self.hdr + 1..].copy_from_slice(extra);
        let op = self.ctx().send_unexpected(b, len, to, tag, 0);
        self.track(op, "send_unexpected")
    }

    fn cmd(&mut self, cmd: u8, tag: Tag, extra: &[u8]) -> OpId {
        let to = self.peer.clone();
        self.cmd_to(&to, cmd, tag, extra)
    }

    fn recv_expected_from(&mut self, from: &Addr, tag: Tag, size: usize) -> OpId {
        let op = self.ctx().recv_expected(MsgBuf::new(size), from, tag, 0);
        self.track(op, "recv_expected")
    }

    fn recv_expected(&mut self, tag: Tag, size: usize) -> OpId {
        let from = self.peer.clone();
        self.recv_expected_from(&from, tag, size)
    }

    fn record(&mut self, c: Completion) {
        if let Some(pool) = &mut self.pool {
            if pool.owns(&c) {
                if let Ok(r) = pool.take(self.ctx.as_ref().expect("open"), c) {
                    self.unexpected.push(r);
                }
                return;
            }
        }
        assert!(
            self.posted.contains_key(&c.op),
            "{}: completion for an operation never posted: {c:?}",
            self.case
        );
        let n = self.count.entry(c.op).or_insert(0);
        *n += 1;
        assert_eq!(*n, 1, "{}: second completion of {:?}", self.case, c.op);
        self.done.insert(c.op, c);
    }

    fn pump(&mut self, timeout: Duration) {
        self.pumps += 1;
        if self.alternate && self.pumps.is_multiple_of(2) {
            let mut out = Vec::new();
            let n = self
                .ctx()
                .progress_into(timeout, &mut out)
                .expect("progress_into");
            assert_eq!(n, out.len(), "{}: progress_into's count", self.case);
            for c in out {
                self.record(c);
            }
            return;
        }
        self.ctx().progress(timeout).expect("progress");
        while let Some(c) = self.ctx().pop() {
            self.record(c);
        }
    }

    fn wait(&mut self, op: OpId) -> Completion {
        let start = Instant::now();
        loop {
            if let Some(c) = self.done.remove(&op) {
                return c;
            }
            assert!(
                start.elapsed() < HANG_GUARD,
                "{}: {} {op:?} never completed",
                self.case,
                self.posted[&op]
            );
            self.pump(Duration::from_millis(20));
        }
    }

    fn wait_ok(&mut self, op: OpId) -> Completion {
        let c = self.wait(op);
        assert_eq!(
            c.result,
            Ok(()),
            "{}: {} failed",
            self.case,
            self.posted[&op]
        );
        c
    }

    fn wait_unexpected(&mut self, n: usize) {
        let start = Instant::now();
        while self.unexpected.len() < n {
            assert!(
                start.elapsed() < HANG_GUARD,
                "{}: {} of {n} unexpected messages arrived",
                self.case,
                self.unexpected.len()
            );
            self.pump(Duration::from_millis(20));
        }
    }

    /// Progresses for `d` (lets messages arrive without waiting for anything in particular).
    fn idle(&mut self, d: Duration) {
        let start = Instant::now();
        while start.elapsed() < d {
            self.pump(Duration::from_millis(5));
        }
    }

    /// The peer's exposed region.
    fn peer_mem(&mut self) -> RemoteMem {
        let tag = self.tag();
        let r = self.recv_expected(tag, 4096);
        let s = self.cmd(CMD_MEM, tag, &[]);
        self.wait_ok(s);
        let c = self.wait_ok(r);
        let bytes = &c.buf.as_ref().expect("buffer back").as_slice()[..c.len];
        self.ctx()
            .class()
            .mem_handle_deserialize(bytes)
            .expect("the peer's own handle deserializes")
    }

    /// [`CMD_RECEIVE`]: the peer posts an expected receive from us with `tag + 1` and is ready
    /// for it; returns `tag` and our receive of its report ([`Tester::reported_len`]).
    fn peer_receives(&mut self) -> (Tag, OpId) {
        let tag = self.tag();
        let ready = self.recv_expected(tag, 64);
        let report = self.recv_expected(tag + 2, 64);
        let s = self.cmd(CMD_RECEIVE, tag, &[]);
        self.wait_ok(s);
        self.wait_ok(ready);
        (tag, report)
    }

    /// Posts an expected receive from the peer with `tag`, cancels it before anything came and
    /// checks it completes `Canceled`.
    fn cancelled_receive(&mut self, tag: Tag) {
        let r = self.recv_expected(tag, 64);
        self.ctx().cancel(r).unwrap();
        assert_eq!(self.wait(r).result, Err(Error::Canceled), "{}", self.case);
    }

    /// The length the peer reported receiving after [`Tester::peer_receives`].
    fn reported_len(&mut self, report: OpId) -> u64 {
        let buf = self.wait_ok(report).buf.expect("buffer back");
        u64::from_le_bytes(buf.as_slice()[..8].try_into().expect("8 bytes"))
    }

    /// One round trip; returns the reply's payload.
    fn echo(&mut self, payload: &[u8]) -> Vec<u8> {
        let tag = self.tag();
        let r = self.recv_expected(tag, 4096);
        let s = self.cmd(CMD_ECHO, tag, payload);
        self.wait_ok(s);
        let c = self.wait_ok(r);
        c.buf.expect("buffer back").as_slice()[..c.len].to_vec()
    }

    /// Closes the context and checks that every operation completed exactly once.
    fn finish(mut self) -> Vec<Completion> {
        let teardown = self.ctx.take().expect("finish once").close();
        let mut out = Vec::new();
        for c in teardown {
            if self.pool.as_ref().is_some_and(|p| p.owns(&c)) {
                let pool = self.pool.as_mut().expect("checked");
                let r = pool.take_closed(c);
                assert!(
                    matches!(r, Err(Error::Canceled) | Ok(_)),
                    "{}: pool receive at teardown: {r:?}",
                    self.case
                );
                continue;
            }
            let op = c.op;
            self.record(c);
            out.push(self.done.remove(&op).expect("just recorded"));
        }
        if let Some(pool) = &self.pool {
            assert_eq!(pool.posted(), 0, "{}: pool receives left posted", self.case);
        }
        for op in self.posted.keys() {
            assert_eq!(
                self.count.get(op).copied().unwrap_or(0),
                1,
                "{}: {} {op:?} completions",
                self.case,
                self.posted[op]
            );
        }
        out
    }
}

/// An expected message that arrives before its receive is posted is delivered once posted.
pub fn expected_before_receive(fx: &dyn Fixture) {
    let class = fx.class();
    fx.check_class(&class);
    let peer = fx.spawn_peer();
    let mut t = Tester::new("expected_before_receive", &class, 0, peer.addr());
    t.small_pool();
    let tag = t.tag();
    let s = t.cmd(CMD_EXPECTED_FIRST, tag, b"early bird");
    t.wait_ok(s);
    // The peer sent the expected reply before this unexpected one: it is here, unmatched.
    t.wait_unexpected(1);
    assert_eq!(t.unexpected[0].tag, tag);
    assert!(t.done.is_empty(), "nothing else completed");
    let r = t.recv_expected(tag, 64);
    let c = t.wait_ok(r);
    assert_eq!(&c.buf.unwrap().as_slice()[..c.len], b"Bearly bird");
    assert_eq!(c.source.as_ref(), Some(&t.peer));
    assert_eq!(c.tag, tag);
    t.finish();
}

/// A late expected message — one arriving for a (source, tag) whose receive was cancelled, as a
/// reply after its RPC timed out — is discarded, not held: a receive posted for the same key
/// afterwards gets the next message, and the late one costs the endpoint nothing (over libfabric
/// it would otherwise sit in the provider's unexpected queue until the endpoint closes).
pub fn late_expected_discarded(fx: &dyn Fixture) {
    let class = fx.class();
    let peer = fx.spawn_peer();
    let mut t = Tester::new("late_expected_discarded", &class, 0, peer.addr());
    t.small_pool();
    let tag = t.tag();
    t.cancelled_receive(tag);
    // The peer answers the cancelled receive's tag, then sends an unexpected message: once that
    // one is here, the late reply has arrived too (same peer, in order).
    let s = t.cmd(CMD_EXPECTED_FIRST, tag, b"late");
    t.wait_ok(s);
    t.wait_unexpected(1);
    assert_eq!(t.unexpected[0].tag, tag);
    t.idle(Duration::from_millis(10));
    assert!(t.done.is_empty(), "the late reply completed nothing");
    // The key is welcome again: a new receive gets the next message, not the late one.
    let r = t.recv_expected(tag, 64);
    let s = t.cmd(CMD_ECHO, tag, b"fresh");
    t.wait_ok(s);
    let c = t.wait_ok(r);
    assert_eq!(&c.buf.unwrap().as_slice()[..c.len], b"Efresh");
    // Many late replies, each discarded, none in the way of the round trips after them.
    for _ in 0..50 {
        let tag = t.tag();
        t.cancelled_receive(tag);
        let s = t.cmd(CMD_ECHO, tag, b"too late");
        t.wait_ok(s);
    }
    assert_eq!(t.echo(b"after"), b"Eafter");
    t.finish();
}

/// An unexpected message that arrives with no buffer posted waits for one.
pub fn unexpected_without_buffer(fx: &dyn Fixture) {
    let class = fx.class();
    let peer = fx.spawn_peer();
    let mut t = Tester::new("unexpected_without_buffer", &class, 0, peer.addr());
    let tag = t.tag();
    let r = t.recv_expected(tag, 64);
    let s = t.cmd(CMD_UNEXPECTED_FIRST, tag, b"no buffer yet");
    t.wait_ok(s);
    // The ack was sent after the unexpected message. A transport that keeps unexpected messages
    // aside (rxm, inproc) delivers it now, and once it is here, so is that message; one that
    // holds a connection's later messages behind a message no receive takes (XNET) delivers it
    // only after the buffer below. Either way nothing else may complete meanwhile.
    for _ in 0..25 {
        if t.done.contains_key(&r) {
            break;
        }
        t.idle(Duration::from_millis(20));
    }
    let early = t.done.remove(&r);
    assert!(
        t.done.is_empty(),
        "no receive was posted: nothing may complete: {:?}",
        t.done
    );
    let hdr = t.hdr;
    let ru = t
        .ctx()
        .recv_unexpected(class.msg_buf_alloc(class.max_unexpected_size()), 0);
    t.track(ru, "recv_unexpected");
    let c = t.wait_ok(ru);
    assert_eq!(c.tag, tag);
    assert_eq!(c.source.as_ref(), Some(&t.peer));
    assert_eq!(&c.buf.unwrap().as_slice()[hdr..c.len], b"Uno buffer yet");
    let ack = match early {
        Some(ack) => ack,
        None => t.wait_ok(r),
    };
    assert_eq!(ack.result, Ok(()));
    assert_eq!(&ack.buf.unwrap().as_slice()[..ack.len], b"ack");
    t.finish();
}

/// Messages of exactly the maximum sizes go through; one byte more is `MsgSize`.
pub fn sizes_at_max(fx: &dyn Fixture) {
    let class = fx.class();
    let peer = fx.spawn_peer();
    let mut t = Tester::new("sizes_at_max", &class, 0, peer.addr());
    let max_u = class.max_unexpected_size();
    let max_e = class.max_expected_size();
    let hdr = t.hdr;
    // Unexpected at max: echoed back (the reply is the payload, max_u - hdr <= max_e bytes).
    let payload: Vec<u8> = (0..max_u - hdr - 1).map(|i| i as u8).collect();
    let back = t.echo(&payload);
    assert_eq!(back.len(), max_u - hdr);
    assert_eq!(&back[1..], &payload[..]);
    // Unexpected at max + 1.
    let big = MsgBuf::new(max_u + 1);
    let peer_addr = t.peer.clone();
    let op = t.ctx().send_unexpected(big, max_u + 1, &peer_addr, 1, 0);
    t.track(op, "send_unexpected max+1");
    assert_eq!(t.wait(op).result, Err(Error::MsgSize));
    // Expected at max: the peer posts a receive of max_e and reports what arrived.
    let (tag, report) = t.peer_receives();
    let m = MsgBuf::from((0..max_e).map(|i| (i * 3) as u8).collect::<Vec<u8>>());
    let op = t.ctx().send_expected(m, max_e, &peer_addr, tag + 1, 0);
    t.track(op, "send_expected max");
    t.wait_ok(op);
    assert_eq!(t.reported_len(report), max_e as u64);
    // Expected at max + 1.
    let op = t
        .ctx()
        .send_expected(MsgBuf::new(max_e + 1), max_e + 1, &peer_addr, tag + 1, 0);
    t.track(op, "send_expected max+1");
    assert_eq!(t.wait(op).result, Err(Error::MsgSize));
    // Still serving.
    assert_eq!(t.echo(b"after"), b"Eafter");
    t.finish();
}

/// More operations in flight than the queue depth (4096): all complete, once each.
pub fn many_in_flight(fx: &dyn Fixture) {
    const N: usize = 4500;
    let class = fx.class();
    let peer = fx.spawn_peer();
    let mut t = Tester::new("many_in_flight", &class, 0, peer.addr());
    let mut pairs = Vec::with_capacity(N);
    for i in 0..N {
        let tag = t.tag();
        let r = t.recv_expected(tag, 64);
        let s = t.cmd(CMD_ECHO, tag, &(i as u32).to_le_bytes());
        pairs.push((i, r, s));
    }
    for (i, r, s) in pairs {
        t.wait_ok(s);
        let c = t.wait_ok(r);
        assert_eq!(&c.buf.unwrap().as_slice()[1..5], &(i as u32).to_le_bytes());
    }
    t.finish();
}

/// `progress_into` and `progress` + `pop` take turns on one context while exchanges run and some
/// receives are canceled: every operation completes exactly once, whichever call hands it over.
pub fn progress_into_mixed(fx: &dyn Fixture) {
    const N: usize = 600;
    let class = fx.class();
    let peer = fx.spawn_peer();
    let mut t = Tester::new("progress_into_mixed", &class, 0, peer.addr());
    t.alternate = true;
    let mut pairs = Vec::with_capacity(N);
    for i in 0..N {
        let tag = t.tag();
        let r = t.recv_expected(tag, 64);
        let s = t.cmd(CMD_ECHO, tag, &(i as u32).to_le_bytes());
        if i % 10 == 3 {
            // Completes Canceled, or with the echo if that won the race: once either way.
            t.ctx().cancel(r).unwrap();
        }
        if i % 7 == 0 {
            t.pump(Duration::ZERO);
        }
        pairs.push((i, r, s));
    }
    let mut canceled = 0;
    for (i, r, s) in pairs {
        t.wait_ok(s);
        let c = t.wait(r);
        match c.result {
            Ok(()) => assert_eq!(&c.buf.unwrap().as_slice()[1..5], &(i as u32).to_le_bytes()),
            Err(Error::Canceled) if i % 10 == 3 => canceled += 1,
            other => panic!("progress_into_mixed: exchange {i}: {other:?}"),
        }
    }
    assert!(t.pumps >= 2, "both ways of pumping ran");
    tracing::debug!(canceled, "progress_into_mixed");
    t.finish();
}

/// Cancel: a receive with no effect completes Canceled once; racing a reply, the result is either
/// the data or Canceled, never both; cancel from another thread while this one progresses.
pub fn cancel_race(fx: &dyn Fixture) {
    let class = fx.class();
    let peer = fx.spawn_peer();
    let mut t = Tester::new("cancel_race", &class, 0, peer.addr());
    let tag = t.tag();
    let r = t.recv_expected(tag, 64);
    t.ctx().cancel(r).unwrap();
    t.ctx().cancel(r).unwrap();
    assert_eq!(t.wait(r).result, Err(Error::Canceled));
    let mut outcomes = [0usize; 2];
    for i in 0..200 {
        let tag = t.tag();
        let r = t.recv_expected(tag, 64);
        let s = t.cmd(CMD_ECHO, tag, b"race");
        for _ in 0..(i % 4) {
            t.pump(Duration::ZERO);
        }
        t.ctx().cancel(r).unwrap();
        let c = t.wait(r);
        match c.result {
            Ok(()) => {
                assert_eq!(&c.buf.unwrap().as_slice()[..c.len], b"Erace");
                outcomes[0] += 1;
            }
            Err(Error::Canceled) => outcomes[1] += 1,
            other => panic!("cancel_race: {other:?}"),
        }
        // A send may be cancelled too, but then it must not have been delivered.
        t.wait(s);
    }
    // Cancel from another thread while this one blocks in progress.
    let tag = t.tag();
    let r = t.recv_expected(tag, 64);
    let ctx = t.ctx();
    std::thread::scope(|sc| {
        sc.spawn(|| {
            std::thread::sleep(Duration::from_millis(10));
            ctx.cancel(r).unwrap();
        });
        let start = Instant::now();
        while ctx.progress(Duration::from_millis(50)).unwrap() == 0 {
            assert!(
                start.elapsed() < HANG_GUARD,
                "cancel_race: cancel never completed"
            );
        }
    });
    assert_eq!(t.wait(r).result, Err(Error::Canceled));
    tracing::debug!(
        ?outcomes,
        "na.testing: cancel race outcomes (delivered, canceled)"
    );
    t.finish();
}

/// Put and get over several segments on both sides, at offsets crossing segment boundaries.
pub fn rma_multi_segment(fx: &dyn Fixture) {
    let class = fx.class();
    let peer = fx.spawn_peer();
    let mut t = Tester::new("rma_multi_segment", &class, 0, peer.addr());
    let remote = t.peer_mem();
    assert_eq!(remote.len() as usize, PEER_SEGMENTS.iter().sum::<usize>());
    assert!(remote.segments.len() >= 2 || class.plugin_name() != "inproc");
    let local = class
        .mem_register_segments(
            vec![vec![0; 1000], vec![0; 3000], vec![0; 6000]],
            Access::READWRITE,
        )
        .unwrap();
    let peer_addr = t.peer.clone();
    // Get 4000 bytes from remote offset 3500 (crossing 4000) into local offset 500 (crossing 1000).
    let g = t.ctx().get(&local, 500, &remote, 3500, 4000, &peer_addr, 0);
    t.track(g, "get");
    t.wait_ok(g);
    let v = local.to_vec();
    let want: Vec<u8> = (3500..7500).map(peer_pattern).collect();
    assert_eq!(&v[500..4500], &want[..]);
    assert!(v[..500].iter().all(|&b| b == 0) && v[4500..].iter().all(|&b| b == 0));
    // Put 2500 new bytes from local offset 900 (crossing 1000) to remote offset 3900.
    let fresh: Vec<u8> = (0..2500).map(|i| (i % 13) as u8 + 100).collect();
    local.write_at(900, &fresh).unwrap();
    let p = t.ctx().put(&local, 900, &remote, 3900, 2500, &peer_addr, 0);
    t.track(p, "put");
    t.wait_ok(p);
    // Read it back (and its neighbours) into another multi-segment region.
    let check = class
        .mem_register_segments(vec![vec![0; 1500], vec![0; 1600]], Access::READWRITE)
        .unwrap();
    let g = t.ctx().get(&check, 0, &remote, 3850, 2600, &peer_addr, 0);
    t.track(g, "get back");
    t.wait_ok(g);
    let got = check.to_vec();
    assert_eq!(
        &got[..50],
        &(3850..3900).map(peer_pattern).collect::<Vec<_>>()[..]
    );
    assert_eq!(&got[50..2550], &fresh[..]);
    assert_eq!(
        &got[2550..2600],
        &(6400..6450).map(peer_pattern).collect::<Vec<_>>()[..]
    );
    t.finish();
}

/// RMA against a key the peer deregistered completes with an error; both sides keep serving.
pub fn rma_deregistered(fx: &dyn Fixture) {
    let class = fx.class();
    let peer = fx.spawn_peer();
    let mut t = Tester::new("rma_deregistered", &class, 0, peer.addr());
    let remote = t.peer_mem();
    let tag = t.tag();
    let r = t.recv_expected(tag, 16);
    let s = t.cmd(CMD_DEREGISTER, tag, &[]);
    t.wait_ok(s);
    t.wait_ok(r);
    let local = class.mem_register(vec![1; 256], Access::READWRITE).unwrap();
    let peer_addr = t.peer.clone();
    let p = t.ctx().put(&local, 0, &remote, 0, 256, &peer_addr, 0);
    t.track(p, "put to deregistered");
    let e = t.wait(p).result;
    assert!(e.is_err(), "put to a deregistered key: {e:?}");
    let g = t.ctx().get(&local, 0, &remote, 100, 100, &peer_addr, 0);
    t.track(g, "get from deregistered");
    let e = t.wait(g).result;
    assert!(e.is_err(), "get from a deregistered key: {e:?}");
    assert_eq!(local.to_vec(), vec![1; 256], "nothing landed");
    assert_eq!(t.echo(b"alive"), b"Ealive");
    t.finish();
}

/// Two contexts of one class, driven by two threads at once, each see only their completions.
pub fn two_contexts(fx: &dyn Fixture) {
    let class = fx.class();
    let peer = fx.spawn_peer();
    std::thread::scope(|s| {
        for id in 0..2u8 {
            let class = &class;
            let addr = peer.addr();
            s.spawn(move || {
                let mut t = Tester::new("two_contexts", class, id, addr);
                for i in 0..100u32 {
                    let msg = [id, (i & 0xFF) as u8, (i >> 8) as u8];
                    let back = t.echo(&msg);
                    assert_eq!(&back[1..], &msg);
                }
                t.finish();
            });
        }
    });
}

/// More than 512 unexpected messages in flight both ways: the peer's pool and ours grow past
/// their first batch of 512.
pub fn many_unexpected(fx: &dyn Fixture) {
    const N: usize = 700;
    let class = fx.class();
    let peer = fx.spawn_peer();
    let mut t = Tester::new("many_unexpected", &class, 0, peer.addr());
    t.pool = Some(RecvPool::new(
        t.ctx(),
        RecvPoolConfig {
            user: POOL_USER,
            ..RecvPoolConfig::default()
        },
    ));
    let mut sends = Vec::new();
    for i in 0..N {
        let tag = t.tag();
        sends.push((tag, t.cmd(CMD_UNEXPECTED, tag, &(i as u32).to_le_bytes())));
    }
    for (_, s) in &sends {
        t.wait_ok(*s);
    }
    t.wait_unexpected(N);
    let hdr = t.hdr;
    let mut tags: Vec<Tag> = t.unexpected.iter().map(|r| r.tag).collect();
    tags.sort_unstable();
    let mut want: Vec<Tag> = sends.iter().map(|(tag, _)| *tag).collect();
    want.sort_unstable();
    assert_eq!(tags, want, "every message exactly once");
    for r in &t.unexpected {
        assert_eq!(r.buf.as_slice()[hdr], CMD_UNEXPECTED);
    }
    let pool = t.pool.as_ref().unwrap();
    assert!(pool.total() > 512, "the pool grew past its first batch");
    t.finish();
}

/// A peer killed mid-operation: operations towards it complete with errors, not a hang.
pub fn peer_killed(fx: &dyn Fixture) {
    let class = fx.class();
    let mut victim = fx.spawn_peer();
    let mut t = Tester::new("peer_killed", &class, 0, victim.addr());
    let remote = t.peer_mem();
    assert_eq!(t.echo(b"before"), b"Ebefore");
    let tag = t.tag();
    let orphan = t.recv_expected(tag, 64);
    victim.kill();
    let victim_addr = t.peer.clone();
    let local = class.mem_register(vec![0; 512], Access::READWRITE).unwrap();
    let mut errors = 0;
    let start = Instant::now();
    for i in 0..200 {
        let tag = t.tag();
        let s = t.cmd_to(&victim_addr, CMD_ECHO, tag, b"anyone?");
        let g = t.ctx().get(&local, 0, &remote, 0, 512, &victim_addr, 0);
        t.track(g, "get from killed peer");
        errors += usize::from(t.wait(s).result.is_err());
        errors += usize::from(t.wait(g).result.is_err());
        if errors >= 2 && i >= 2 {
            break;
        }
        assert!(
            start.elapsed() < HANG_GUARD,
            "peer_killed: no error completions"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(errors >= 2, "operations towards a killed peer must fail");
    // The orphaned receive can still be cancelled; the class still works with another peer.
    t.ctx().cancel(orphan).unwrap();
    assert_eq!(t.wait(orphan).result, Err(Error::Canceled));
    let other = fx.spawn_peer();
    let other_addr = class.addr_lookup(other.addr()).unwrap();
    let tag = t.tag();
    let r = t.recv_expected_from(&other_addr, tag, 64);
    let s = t.cmd_to(&other_addr, CMD_ECHO, tag, b"hi");
    t.wait_ok(s);
    t.wait_ok(r);
    t.finish();
}

/// A receive buffer smaller than the message completes with `Overflow`; nothing is cut silently.
pub fn receive_too_small(fx: &dyn Fixture) {
    let class = fx.class();
    let peer = fx.spawn_peer();
    let mut t = Tester::new("receive_too_small", &class, 0, peer.addr());
    let tag = t.tag();
    let r = t.recv_expected(tag, 16);
    let s = t.cmd(CMD_ECHO, tag, &[7; 100]);
    t.wait_ok(s);
    let c = t.wait(r);
    assert_eq!(c.result, Err(Error::Overflow));
    assert!(c.buf.is_some(), "the buffer comes back");
    assert_eq!(t.echo(b"next"), b"Enext");
    t.finish();
}

/// Malformed address strings and bytes are typed errors; the class keeps working.
pub fn malformed_address(fx: &dyn Fixture) {
    let class = fx.class();
    for bad in [
        "",
        "garbage",
        "inproc://x",
        "ofi+tcp://",
        "://",
        "a:b:c:d",
        "\u{0}",
    ] {
        let r = class.addr_lookup(bad);
        assert_eq!(
            r.as_ref().err(),
            Some(&Error::InvalidArg),
            "lookup {bad:?}: {r:?}"
        );
    }
    assert!(class.addr_deserialize(&[0xFF; 3]).is_err());
    let peer = fx.spawn_peer();
    let mut t = Tester::new("malformed_address", &class, 0, peer.addr());
    assert_eq!(t.echo(b"ok"), b"Eok");
    t.finish();
}

/// Garbage memory handles are `Fault`; the class keeps working.
pub fn garbage_mem_handle(fx: &dyn Fixture) {
    let class = fx.class();
    let mh = class.mem_register(vec![0; 64], Access::READWRITE).unwrap();
    let good = class.mem_handle_serialize(&mh);
    assert!(class.mem_handle_deserialize(&good).is_ok());
    let noise: Vec<u8> = (0..64u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for bad in [
        vec![],
        vec![0xAB; 7],
        noise,
        good[..good.len() / 2].to_vec(),
    ] {
        let r = class.mem_handle_deserialize(&bad);
        assert_eq!(r.err(), Some(Error::Fault), "handle {bad:?}");
    }
    let peer = fx.spawn_peer();
    let mut t = Tester::new("garbage_mem_handle", &class, 0, peer.addr());
    assert_eq!(t.echo(b"ok"), b"Eok");
    t.finish();
}

/// An unknown plugin is `ProtoNoSupport`.
pub fn unknown_plugin(_fx: &dyn Fixture) {
    for info in ["nosuch+tcp", "nosuch", "nosuch+tcp://127.0.0.1:1"] {
        assert_eq!(
            Class::initialize(info, true).err(),
            Some(Error::ProtoNoSupport),
            "{info}"
        );
    }
}

/// Injected messages (`inject_unexpected` / `inject_expected`): no operation, no completion, the
/// buffer free again at once; the peer receives them as it receives posted sends. Over
/// `max_inject_size` an inject is refused with nothing sent. A plugin that never injects
/// (`max_inject_size` 0) refuses every one.
pub fn inject(fx: &dyn Fixture) {
    let class = fx.class();
    let peer = fx.spawn_peer();
    let mut t = Tester::new("inject", &class, 0, peer.addr());
    let (hdr, max) = (t.hdr, class.max_inject_size());
    let peer_addr = t.peer.clone();
    // A normal round trip first: a plugin may inject only to a peer it knows is up.
    assert_eq!(t.echo(b"warm"), b"Ewarm");
    let mut m = class.msg_buf_alloc(class.max_unexpected_size().max(class.max_expected_size()));
    if max == 0 {
        t.ctx().msg_init_unexpected(&mut m);
        m.as_mut_slice()[hdr] = CMD_ECHO;
        assert!(!t
            .ctx()
            .inject_unexpected(m.as_slice(), hdr + 1, &peer_addr, t.next_tag));
        assert!(!t
            .ctx()
            .inject_expected(m.as_slice(), 1, &peer_addr, t.next_tag));
        t.finish();
        return;
    }
    assert!(
        max > hdr + 8,
        "{}: inject size {max} too small to test",
        t.case
    );
    // Unexpected: an echo command, answered as a sent one is.
    let tag = t.tag();
    let r = t.recv_expected(tag, 64);
    t.ctx().msg_init_unexpected(&mut m);
    m.as_mut_slice()[hdr..hdr + 7].copy_from_slice(b"Einject");
    assert!(t
        .ctx()
        .inject_unexpected(m.as_slice(), hdr + 7, &peer_addr, tag));
    // What was injected was copied: the buffer may change at once.
    m.as_mut_slice()[hdr..hdr + 7].fill(b'x');
    let c = t.wait_ok(r);
    assert_eq!(&c.buf.unwrap().as_slice()[..c.len], b"Einject");
    // Expected, of the largest injectable size: the peer reports the length that arrived.
    let (tag, report) = t.peer_receives();
    let len = max.min(class.max_expected_size());
    assert!(t
        .ctx()
        .inject_expected(m.as_slice(), len, &peer_addr, tag + 1));
    assert_eq!(t.reported_len(report), len as u64);
    // Over the inject size, or over the buffer: refused.
    if max < m.capacity() {
        assert!(!t
            .ctx()
            .inject_expected(m.as_slice(), max + 1, &peer_addr, tag + 1));
    }
    assert!(!t
        .ctx()
        .inject_expected(m.as_slice(), m.capacity() + 1, &peer_addr, tag + 1));
    // No injected message left a completion behind, and the peer still serves.
    t.idle(Duration::from_millis(20));
    assert!(t.done.is_empty(), "{}: completions: {:?}", t.case, t.done);
    assert_eq!(t.echo(b"after"), b"Eafter");
    t.finish();
}

/// Every case, in order.
pub fn run_all(fx: &dyn Fixture) {
    macro_rules! run {
        ($fx:expr; $($case:ident),* $(,)?) => {
            $( $case($fx); )*
        };
    }
    crate::conformance_cases!(run, fx);
}

/// Calls `$m!(args…; case, case, …)` with the name of every case of this suite, in
/// [`run_all`]'s order: the one list a plugin's test file expands into one `#[test]` per case
/// (`na::conformance_cases!(cases, fixture args…)`), so a new case reaches every plugin.
#[macro_export]
macro_rules! conformance_cases {
    ($m:ident $(, $arg:expr)* $(,)?) => {
        $m! { $($arg),*;
            expected_before_receive,
            unexpected_without_buffer,
            sizes_at_max,
            inject,
            many_in_flight,
            progress_into_mixed,
            cancel_race,
            late_expected_discarded,
            rma_multi_segment,
            rma_deregistered,
            two_contexts,
            many_unexpected,
            peer_killed,
            receive_too_small,
            malformed_address,
            garbage_mem_handle,
            unknown_plugin,
        }
    };
}

/// The inproc fixture: classes on one private fabric; each peer is an endpoint of its own class
/// served by a thread; `kill` makes it vanish.
pub struct InprocFixture {
    fabric: Fabric,
}

impl InprocFixture {
    /// A fixture on a new fault-free fabric whose hold cap leaves room for the suite's bursts.
    pub fn new() -> InprocFixture {
        InprocFixture {
            fabric: Fabric::new(FaultConfig {
                hold_cap: 1 << 16,
                ..FaultConfig::none()
            }),
        }
    }

    /// The fabric the fixture's classes live on.
    pub fn fabric(&self) -> &Fabric {
        &self.fabric
    }
}

impl Default for InprocFixture {
    fn default() -> InprocFixture {
        InprocFixture::new()
    }
}

struct InprocPeer {
    fabric: Fabric,
    addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<crate::Result<PeerStats>>>,
}

impl Peer for InprocPeer {
    fn addr(&self) -> &str {
        &self.addr
    }

    fn kill(&mut self) {
        if let Ok(a) = self.fabric.class(false).addr_lookup(&self.addr) {
            let _ = self.fabric.vanish(&a);
        }
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for InprocPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "na.testing: inproc peer failed"),
                Err(_) => tracing::warn!("na.testing: inproc peer panicked"),
            }
        }
    }
}

impl Fixture for InprocFixture {
    fn class(&self) -> Class {
        self.fabric.class(true)
    }

    fn spawn_peer(&self) -> Box<dyn Peer> {
        let class = self.fabric.class(true);
        let stop = Arc::new(AtomicBool::new(false));
        let slot: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let (s2, slot2) = (stop.clone(), slot.clone());
        let thread = std::thread::spawn(move || {
            serve_peer(
                &class,
                &mut |a| *lock(&slot2) = Some(a.to_string()),
                Some(&s2),
            )
        });
        let start = Instant::now();
        let addr = loop {
            if let Some(a) = lock(&slot).take() {
                break a;
            }
            assert!(
                start.elapsed() < HANG_GUARD,
                "inproc peer never became ready"
            );
            std::thread::sleep(Duration::from_millis(1));
        };
        Box::new(InprocPeer {
            fabric: self.fabric.clone(),
            addr,
            stop,
            thread: Some(thread),
        })
    }

    fn check_class(&self, class: &Class) {
        assert_eq!(class.plugin_name(), "inproc");
    }
}
