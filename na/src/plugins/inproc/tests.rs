//! Unit tests of the inproc plugin: its documented behaviours, one by one.

use super::*;
use crate::{Class, Context, MsgBuf};

const LONG: Duration = Duration::from_secs(20);

fn world(cfg: FaultConfig) -> (Fabric, Class, Context, Context) {
    let f = Fabric::new(cfg);
    let class = f.class(true);
    let a = class.context_create(0).unwrap();
    let b = class.context_create(1).unwrap();
    (f, class, a, b)
}

/// Progresses `ctxs` round-robin until `ctx` has a completion; returns it.
fn next(ctx: &Context, others: &[&Context]) -> Completion {
    for _ in 0..10_000 {
        if let Some(c) = ctx.pop() {
            return c;
        }
        ctx.progress(Duration::ZERO).unwrap();
        for o in others {
            o.progress(Duration::ZERO).unwrap();
        }
    }
    panic!("no completion");
}

fn unexpected(ctx: &Context, payload: &[u8]) -> (MsgBuf, usize) {
    let mut buf = MsgBuf::new(HEADER_SIZE + payload.len());
    ctx.msg_init_unexpected(&mut buf);
    buf.as_mut_slice()[HEADER_SIZE..].copy_from_slice(payload);
    let len = buf.capacity();
    (buf, len)
}

#[test]
fn addresses_print_parse_and_reject_garbage() {
    let (_f, class, a, _b) = world(FaultConfig::none());
    let s = class.addr_to_string(&a.self_addr()).unwrap();
    assert!(s.starts_with("inproc://"));
    assert_eq!(class.addr_lookup(&s).unwrap(), a.self_addr());
    for bad in [
        "",
        "inproc://",
        "inproc://x",
        "inproc://-1",
        "ofi://1",
        "inproc://99999999999",
    ] {
        assert_eq!(class.addr_lookup(bad), Err(Error::InvalidArg), "{bad:?}");
    }
    assert_eq!(class.addr_deserialize(&[1, 2, 3]), Err(Error::Fault));
    let a2 = class.addr_deserialize(a.self_addr().as_bytes()).unwrap();
    assert_eq!(a2, a.self_addr());
}

#[test]
fn unexpected_message_held_until_a_buffer_is_posted() {
    let (_f, _c, a, b) = world(FaultConfig::none());
    let (buf, len) = unexpected(&a, b"hello");
    let send = a.send_unexpected(buf, len, &b.self_addr(), 42, 1);
    for _ in 0..10 {
        b.progress(Duration::ZERO).unwrap();
    }
    assert!(b.pop().is_none());
    let s = a
        .pop()
        .expect("the send completes once the receiver holds the message");
    assert_eq!((s.op, s.result, s.len), (send, Ok(()), len));
    let r = b.recv_unexpected(MsgBuf::new(64), 2);
    let c = next(&b, &[&a]);
    assert_eq!((c.op, c.result, c.len, c.tag), (r, Ok(()), len, 42));
    assert_eq!(c.source, Some(a.self_addr()));
    assert_eq!(&c.buf.unwrap().as_slice()[HEADER_SIZE..len], b"hello");
}

#[test]
fn expected_message_before_its_receive_is_delivered_later() {
    let (_f, _c, a, b) = world(FaultConfig::none());
    a.send_expected(MsgBuf::from_slice(b"reply"), 5, &b.self_addr(), 7, 0);
    a.send_expected(MsgBuf::from_slice(b"other"), 5, &b.self_addr(), 8, 0);
    for _ in 0..5 {
        b.progress(Duration::ZERO).unwrap();
    }
    let r = b.recv_expected(MsgBuf::new(16), &a.self_addr(), 8, 0);
    let c = next(&b, &[&a]);
    assert_eq!((c.op, c.tag, c.len), (r, 8, 5));
    assert_eq!(&c.buf.unwrap().as_slice()[..5], b"other");
    // Wrong source: no match.
    b.recv_expected(MsgBuf::new(16), &b.self_addr(), 7, 0);
    for _ in 0..5 {
        b.progress(Duration::ZERO).unwrap();
    }
    assert!(b.pop().is_none());
}

#[test]
fn small_buffer_overflows_and_large_message_is_msgsize() {
    let (_f, class, a, b) = world(FaultConfig::none());
    b.recv_expected(MsgBuf::new(4), &a.self_addr(), 1, 0);
    a.send_expected(MsgBuf::from_slice(&[9; 100]), 100, &b.self_addr(), 1, 0);
    let c = next(&b, &[&a]);
    assert_eq!(c.result, Err(Error::Overflow));
    assert_eq!(
        c.buf.unwrap().as_slice(),
        &[0; 4],
        "no byte silently cut in"
    );
    assert_eq!(next(&a, &[&b]).result, Ok(()));
    let max = class.max_expected_size();
    let big = MsgBuf::new(max + 1);
    a.send_expected(big, max + 1, &b.self_addr(), 1, 0);
    assert_eq!(next(&a, &[]).result, Err(Error::MsgSize));
    let big = MsgBuf::new(8);
    a.send_expected(big, 9, &b.self_addr(), 1, 0);
    assert_eq!(next(&a, &[]).result, Err(Error::InvalidArg));
}

#[test]
fn hold_cap_refuses_with_busy() {
    let cfg = FaultConfig {
        hold_cap: 3,
        ..FaultConfig::none()
    };
    let (f, _c, a, b) = world(cfg);
    for i in 0..5 {
        let (buf, len) = unexpected(&a, &[i]);
        a.send_unexpected(buf, len, &b.self_addr(), u32::from(i), 0);
    }
    b.progress(Duration::ZERO).unwrap();
    let sends: Vec<_> = std::iter::from_fn(|| a.pop()).collect();
    let busy: Vec<_> = sends.iter().filter_map(|c| c.result.err()).collect();
    assert_eq!(sends.len(), 5, "three held (done), two refused");
    assert_eq!(busy, [Error::Busy, Error::Busy]);
    assert_eq!(f.refused(), 2);
    for _ in 0..3 {
        b.recv_unexpected(MsgBuf::new(64), 0);
    }
    let tags: Vec<_> = (0..3).map(|_| next(&b, &[&a]).tag).collect();
    assert_eq!(tags, [0, 1, 2], "held messages keep their order");
}

#[test]
fn rma_over_segments_at_offsets_and_access_checks() {
    let (f, class, a, b) = world(FaultConfig::none());
    let remote_mh = class
        .mem_register_segments(
            vec![vec![0u8; 10], vec![0u8; 7], vec![0u8; 20]],
            Access::READWRITE,
        )
        .unwrap();
    let remote = class
        .mem_handle_deserialize(&class.mem_handle_serialize(&remote_mh))
        .unwrap();
    assert_eq!(remote.len(), 37);
    let local = class
        .mem_register_segments(vec![(0..5).collect(), (5..30).collect()], Access::READ_ONLY)
        .unwrap();
    a.put(&local, 3, &remote, 8, 12, &b.self_addr(), 0);
    assert_eq!(next(&a, &[]).result, Ok(()));
    let mut want = vec![0u8; 37];
    want[8..20].copy_from_slice(&(3..15).collect::<Vec<u8>>());
    assert_eq!(remote_mh.to_vec(), want);
    let back = class
        .mem_register_segments(vec![vec![0; 4], vec![0; 8]], Access::READWRITE)
        .unwrap();
    a.get(&back, 1, &remote, 9, 10, &b.self_addr(), 0);
    assert_eq!(next(&a, &[]).result, Ok(()));
    assert_eq!(back.to_vec()[1..11], want[9..19]);
    // Out of range, wrong access, deregistered key.
    a.get(&back, 0, &remote, 30, 10, &b.self_addr(), 0);
    assert_eq!(next(&a, &[]).result, Err(Error::InvalidArg));
    let ro = class.mem_register(vec![0; 8], Access::READ_ONLY).unwrap();
    let ro_remote = class
        .mem_handle_deserialize(&class.mem_handle_serialize(&ro))
        .unwrap();
    a.put(&local, 0, &ro_remote, 0, 8, &b.self_addr(), 0);
    assert_eq!(next(&a, &[]).result, Err(Error::Permission));
    let n = f.registered_regions();
    drop(remote_mh);
    assert_eq!(f.registered_regions(), n - 1);
    a.put(&local, 0, &remote, 0, 4, &b.self_addr(), 0);
    assert_eq!(next(&a, &[]).result, Err(Error::Access));
}

#[test]
fn garbage_memory_handles_are_fault() {
    let (_f, class, _a, _b) = world(FaultConfig::none());
    let mh = class.mem_register(vec![0; 8], Access::READWRITE).unwrap();
    let good = class.mem_handle_serialize(&mh);
    assert!(class.mem_handle_deserialize(&good).is_ok());
    let mut cases: Vec<Vec<u8>> = vec![vec![], vec![0; 3], good[..good.len() - 1].to_vec()];
    let mut bad_magic = good.clone();
    bad_magic[0] ^= 1;
    cases.push(bad_magic);
    let mut bad_access = good.clone();
    bad_access[4] = 0x80;
    cases.push(bad_access);
    let mut bad_base = good.clone();
    bad_base[16] = 1;
    cases.push(bad_base);
    for c in cases {
        assert_eq!(class.mem_handle_deserialize(&c), Err(Error::Fault), "{c:?}");
    }
}

#[test]
fn deregistration_waits_for_inflight_rma_and_rma_after_user_drop_completes() {
    let cfg = FaultConfig {
        delay: 1_000_000,
        max_delay_ticks: 3,
        ..FaultConfig::none()
    };
    let (f, class, a, b) = world(cfg);
    let target = class.mem_register(vec![0; 16], Access::READWRITE).unwrap();
    let remote = class
        .mem_handle_deserialize(&class.mem_handle_serialize(&target))
        .unwrap();
    let local = class.mem_register(vec![5; 16], Access::READWRITE).unwrap();
    let before = f.registered_regions();
    a.put(&local, 0, &remote, 0, 16, &b.self_addr(), 0);
    drop(local); // the put holds a clone: no deregistration yet
    assert_eq!(f.registered_regions(), before);
    assert_eq!(next(&a, &[]).result, Ok(()));
    assert_eq!(target.to_vec(), vec![5; 16]);
    assert_eq!(
        f.registered_regions(),
        before - 1,
        "deregistered once the put completed"
    );
}

#[test]
fn vanish_and_addr_set_remove() {
    let (f, class, a, b) = world(FaultConfig::none());
    let pending = b.recv_unexpected(MsgBuf::new(64), 0);
    f.vanish(&b.self_addr()).unwrap();
    let (buf, len) = unexpected(&a, b"x");
    a.send_unexpected(buf, len, &b.self_addr(), 0, 0);
    assert_eq!(next(&a, &[&b]).result, Err(Error::HostUnreach));
    f.revive(&b.self_addr()).unwrap();
    let (buf, len) = unexpected(&a, b"x");
    a.send_unexpected(buf, len, &b.self_addr(), 0, 0);
    assert_eq!(
        next(&a, &[&b]).result,
        Err(Error::HostUnreach),
        "the class remembers the failed peer"
    );
    class.addr_set_remove(&b.self_addr()).unwrap();
    let (buf, len) = unexpected(&a, b"x");
    a.send_unexpected(buf, len, &b.self_addr(), 0, 0);
    assert_eq!(next(&a, &[&b]).result, Ok(()));
    assert_eq!(next(&b, &[]).op, pending);
}

#[test]
fn cancel_only_without_effect_and_once() {
    let (_f, _c, a, b) = world(FaultConfig::none());
    let r = b.recv_expected(MsgBuf::new(8), &a.self_addr(), 3, 0);
    b.cancel(r).unwrap();
    b.cancel(r).unwrap();
    let c = next(&b, &[]);
    assert_eq!((c.op, c.result), (r, Err(Error::Canceled)));
    assert!(c.buf.is_some(), "the buffer comes back");
    // A send the receiver has not taken yet can be cancelled: it had no effect.
    let (buf, len) = unexpected(&a, b"queued");
    let s = a.send_unexpected(buf, len, &b.self_addr(), 0, 0);
    a.cancel(s).unwrap();
    assert_eq!(next(&a, &[]).result, Err(Error::Canceled));
    b.recv_unexpected(MsgBuf::new(64), 0);
    for _ in 0..5 {
        b.progress(Duration::ZERO).unwrap();
    }
    assert!(b.pop().is_none(), "a cancelled send never arrives");
    // Cancelling a completed operation changes nothing.
    a.send_expected(MsgBuf::new(1), 1, &b.self_addr(), 9, 0);
    let r = b.recv_expected(MsgBuf::new(8), &a.self_addr(), 9, 0);
    assert_eq!(next(&b, &[&a]).result, Ok(()));
    b.cancel(r).unwrap();
    b.progress(Duration::ZERO).unwrap();
    assert!(b.pop().is_none());
}

#[test]
fn close_completes_every_pending_operation_once() {
    let (_f, _c, a, b) = world(FaultConfig::none());
    let mut ids = vec![
        b.recv_unexpected(MsgBuf::new(8), 0),
        b.recv_expected(MsgBuf::new(8), &a.self_addr(), 1, 0),
    ];
    let (buf, len) = unexpected(&b, b"to a");
    ids.push(b.send_unexpected(buf, len, &a.self_addr(), 0, 0));
    // b's send waits in a's mailbox (a has not progressed); closing b cancels it.
    let done = b.close();
    let mut got: Vec<_> = done.iter().map(|c| c.op).collect();
    got.sort();
    ids.sort();
    assert_eq!(got, ids);
    assert!(done.iter().all(|c| c.result == Err(Error::Canceled)));
    // Sends to the closed endpoint fail.
    let (buf, len) = unexpected(&a, b"x");
    let addr = Addr::from_raw(NAME, &1u32.to_le_bytes());
    a.send_unexpected(buf, len, &addr, 0, 0);
    assert_eq!(next(&a, &[]).result, Err(Error::HostUnreach));
}

#[test]
fn progress_blocks_until_a_delivery_or_a_wake() {
    let (_f, _c, a, b) = world(FaultConfig::none());
    let waker = b.waker();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        waker.wake();
    });
    assert_eq!(b.progress(LONG).unwrap(), 0, "woken with nothing done");
    t.join().unwrap();
    b.recv_expected(MsgBuf::new(8), &a.self_addr(), 1, 0);
    b.progress(Duration::ZERO).unwrap();
    let a_addr = b.self_addr();
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(20));
            a.send_expected(MsgBuf::new(1), 1, &a_addr, 1, 0);
        });
        assert_eq!(b.progress(LONG).unwrap(), 1);
    });
}

#[test]
fn delays_are_ticks_not_wall_time() {
    let cfg = FaultConfig {
        delay: 1_000_000,
        max_delay_ticks: 50,
        ..FaultConfig::none()
    };
    let (_f, _c, a, b) = world(cfg);
    b.recv_expected(MsgBuf::new(8), &a.self_addr(), 1, 0);
    a.send_expected(MsgBuf::new(1), 1, &b.self_addr(), 1, 0);
    // One blocking progress call runs ticks until the delayed message is due.
    assert_eq!(b.progress(LONG).unwrap(), 1);
}

#[test]
fn initialize_by_name_uses_the_global_fabric() {
    let c = Class::initialize("inproc", true).unwrap();
    assert_eq!((c.plugin_name(), c.protocol()), ("inproc", "inproc"));
    assert_eq!(
        Class::initialize("inproc+tcp", true).err(),
        Some(Error::ProtoNoSupport)
    );
    let x = c.context_create(0).unwrap();
    let y = Class::initialize("inproc", false)
        .unwrap()
        .context_create(0)
        .unwrap();
    y.recv_expected(MsgBuf::new(4), &x.self_addr(), 5, 0);
    x.send_expected(MsgBuf::from_slice(b"ping"), 4, &y.self_addr(), 5, 0);
    let got = next(&y, &[&x]);
    assert_eq!(&got.buf.unwrap().as_slice()[..4], b"ping");
}

#[test]
fn held_unexpected_messages_stay_ahead_of_new_arrivals() {
    let (_f, _c, a, b) = world(FaultConfig::none());
    for tag in 0..2 {
        let (buf, len) = unexpected(&a, b"old");
        a.send_unexpected(buf, len, &b.self_addr(), tag, 0);
    }
    b.progress(Duration::ZERO).unwrap(); // both held
    b.recv_unexpected(MsgBuf::new(64), 0);
    let (buf, len) = unexpected(&a, b"new");
    a.send_unexpected(buf, len, &b.self_addr(), 9, 0);
    b.recv_unexpected(MsgBuf::new(64), 0);
    b.recv_unexpected(MsgBuf::new(64), 0);
    let tags: Vec<_> = (0..3).map(|_| next(&b, &[&a]).tag).collect();
    assert_eq!(tags, [0, 1, 9]);
}

/// A fabric where only `f` fires, always.
fn only(f: impl FnOnce(&mut FaultConfig)) -> (Fabric, Class, Context, Context) {
    let mut cfg = FaultConfig::none();
    f(&mut cfg);
    world(cfg)
}

/// Sends `n` unexpected messages of 16 payload bytes (byte i of message k is k * 16 + i) from
/// `a` to `b`, with tags 0..n.
fn burst(a: &Context, b: &Context, n: u8) {
    for k in 0..n {
        let payload: Vec<u8> = (0..16).map(|i| k * 16 + i).collect();
        let (buf, len) = unexpected(a, &payload);
        a.send_unexpected(buf, len, &b.self_addr(), u32::from(k), 0);
    }
}

/// Posts receives on `b` and collects what arrives within `rounds` progress calls.
fn collect(b: &Context, posts: usize, rounds: usize) -> Vec<Completion> {
    for _ in 0..posts {
        b.recv_unexpected(MsgBuf::new(64), 0);
    }
    let mut out = Vec::new();
    for _ in 0..rounds {
        b.progress(Duration::ZERO).unwrap();
        while let Some(c) = b.pop() {
            out.push(c);
        }
    }
    out
}

#[test]
fn fault_error_and_drop_complete_the_send_without_delivery() {
    let (_f, _c, a, b) = only(|c| c.error = 1_000_000);
    burst(&a, &b, 1);
    assert_eq!(a.pop().unwrap().result, Err(Error::IoError));
    assert!(collect(&b, 1, 5).is_empty());
    let (_f, _c, a, b) = only(|c| c.drop = 1_000_000);
    burst(&a, &b, 1);
    assert_eq!(a.pop().unwrap().result, Ok(()), "a dropped send looks sent");
    assert!(collect(&b, 1, 5).is_empty());
}

#[test]
fn fault_duplicate_delivers_twice_and_completes_once() {
    let (_f, _c, a, b) = only(|c| c.duplicate = 1_000_000);
    burst(&a, &b, 1);
    let got = collect(&b, 2, 5);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].buf, got[1].buf);
    let sends: Vec<_> = std::iter::from_fn(|| a.pop()).collect();
    assert_eq!(sends.len(), 1);
}

#[test]
fn fault_truncate_and_corrupt_change_the_bytes_past_the_header() {
    let (_f, _c, a, b) = only(|c| c.truncate = 1_000_000);
    burst(&a, &b, 1);
    let got = collect(&b, 1, 5);
    assert_eq!(got[0].result, Ok(()));
    assert!(
        (HEADER_SIZE..HEADER_SIZE + 16).contains(&got[0].len),
        "{}",
        got[0].len
    );
    let (_f, _c, a, b) = only(|c| c.corrupt = 1_000_000);
    burst(&a, &b, 1);
    let got = collect(&b, 1, 5);
    let bytes = got[0].buf.as_ref().unwrap().as_slice();
    assert_eq!(&bytes[..4], b"inpc", "the header is spared");
    let body = &bytes[HEADER_SIZE..HEADER_SIZE + 16];
    let diff = body
        .iter()
        .enumerate()
        .filter(|(i, &x)| x != *i as u8)
        .count();
    assert_eq!(diff, 1, "exactly one byte flipped");
}

#[test]
fn fault_reorder_and_delay_change_the_arrival_order_and_time() {
    let (_f, _c, a, b) = only(|c| c.reorder = 1_000_000);
    burst(&a, &b, 6);
    let tags: Vec<_> = collect(&b, 6, 3).iter().map(|c| c.tag).collect();
    assert_eq!(tags.len(), 6);
    assert_ne!(tags, [0, 1, 2, 3, 4, 5], "some message overtook another");
    let (_f, _c, a, b) = only(|c| {
        c.delay = 1_000_000;
        c.max_delay_ticks = 3;
    });
    burst(&a, &b, 1);
    b.recv_unexpected(MsgBuf::new(64), 0);
    let mut ticks = 0;
    while b.pop().is_none() {
        b.progress(Duration::ZERO).unwrap();
        ticks += 1;
        assert!(ticks < 10);
    }
    assert!(
        ticks >= 2,
        "delivered only after the delay's ticks ({ticks})"
    );
}

#[test]
fn fault_exhaust_holds_messages_for_some_ticks() {
    let (_f, _c, a, b) = only(|c| {
        c.exhaust = 1_000_000;
        c.exhaust_ticks = 4;
    });
    burst(&a, &b, 1);
    b.recv_unexpected(MsgBuf::new(64), 0);
    b.progress(Duration::ZERO).unwrap();
    assert!(b.pop().is_none(), "exhausted: the buffer is not used yet");
    let got = collect(&b, 0, 6);
    assert_eq!(got.len(), 1, "delivered once the exhaustion ended");
}

#[test]
fn fault_vanish_kills_the_destination() {
    let (f, _c, a, b) = only(|c| c.vanish = 1_000_000);
    burst(&a, &b, 1);
    assert_eq!(a.pop().unwrap().result, Err(Error::HostUnreach));
    assert!(f.trace().is_empty(), "trace off unless asked");
    // Operations from a vanished endpoint fail too (on a quiet fabric, so no fault is involved).
    let (f, _c, a, b) = world(FaultConfig::none());
    f.vanish(&b.self_addr()).unwrap();
    let (buf, len) = unexpected(&b, b"x");
    b.send_unexpected(buf, len, &a.self_addr(), 0, 0);
    assert_eq!(b.pop().unwrap().result, Err(Error::HostUnreach));
}

#[test]
fn faults_can_be_switched_on_after_set_up_and_off_again() {
    let (f, _c, a, b) = world(FaultConfig::none());
    burst(&a, &b, 1);
    assert_eq!(collect(&b, 1, 3).len(), 1);
    f.set_faults(FaultConfig {
        drop: 1_000_000,
        ..FaultConfig::none()
    });
    assert_eq!(f.faults().drop, 1_000_000);
    burst(&a, &b, 1);
    assert!(collect(&b, 1, 3).is_empty(), "dropped");
    f.set_faults(FaultConfig::none());
    burst(&a, &b, 1);
    assert_eq!(
        collect(&b, 0, 3).len(),
        1,
        "the receive posted earlier takes it"
    );
}

#[test]
fn a_late_reply_to_a_cancelled_receive_is_discarded_not_held() {
    let (_f, _c, a, b) = world(FaultConfig::none());
    let r = a.recv_expected(MsgBuf::new(8), &b.self_addr(), 5, 0);
    a.cancel(r).unwrap();
    assert_eq!(next(&a, &[]).result, Err(Error::Canceled));
    b.send_expected(MsgBuf::from_slice(b"late"), 4, &a.self_addr(), 5, 0);
    assert_eq!(
        next(&b, &[&a]).result,
        Ok(()),
        "the sender's part went fine"
    );
    // Posting for the same (source, tag) again wants later messages, not the discarded one.
    let r2 = a.recv_expected(MsgBuf::new(8), &b.self_addr(), 5, 0);
    for _ in 0..5 {
        a.progress(Duration::ZERO).unwrap();
    }
    assert!(a.pop().is_none(), "the late message was not held");
    b.send_expected(MsgBuf::from_slice(b"new"), 3, &a.self_addr(), 5, 0);
    let c = next(&a, &[&b]);
    assert_eq!((c.op, c.len), (r2, 3));
}
