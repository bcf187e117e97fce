//! ofi over tcp;ofi_rxm on 127.0.0.1, two classes in one process: messages, RMA, addresses.

mod ofi_common;

use na::{Access, Error, MsgBuf, OpKind};
use ofi_common::{class, class_opt, connect, pair, wait_op};
use std::time::Duration;

/// The tag of the marker sent after the late messages: past every late tag.
const MARK: u32 = 5000;

#[test]
fn unexpected_then_expected_round_trip() {
    let Some((server, client, sctx, cctx)) = pair("ofi+tcp://127.0.0.1:0", "ofi+tcp://127.0.0.1")
    else {
        return;
    };
    let saddr = sctx.self_addr();
    let s = server.addr_to_string(&saddr).unwrap();
    assert!(s.starts_with("ofi+tcp;ofi_rxm://127.0.0.1:"), "{s}");
    let looked = client.addr_lookup(&s).unwrap();
    assert_eq!(looked, saddr);

    let rop = sctx.recv_unexpected(MsgBuf::new(4096), 1);
    let reply_rop = cctx.recv_expected(MsgBuf::new(4096), &looked, 77, 2);
    let mut m = MsgBuf::new(4096);
    cctx.msg_init_unexpected(&mut m);
    m.as_mut_slice()[16..24].copy_from_slice(b"ping1234");
    let sop = cctx.send_unexpected(m, 24, &looked, 77, 3);

    let got = wait_op(&sctx, &[&cctx], rop);
    assert_eq!(got.result, Ok(()));
    assert_eq!(got.kind, OpKind::RecvUnexpected);
    assert_eq!(got.len, 24);
    assert_eq!(got.tag, 77);
    let buf = got.buf.unwrap();
    assert_eq!(&buf.as_slice()[16..24], b"ping1234");
    let src = got.source.unwrap();
    assert_eq!(src, cctx.self_addr());

    let mut r = MsgBuf::new(64);
    r.as_mut_slice()[..4].copy_from_slice(b"pong");
    let rs = sctx.send_expected(r, 4, &src, 77, 4);
    let rep = wait_op(&cctx, &[&sctx], reply_rop);
    assert_eq!(rep.result, Ok(()));
    assert_eq!(rep.len, 4);
    assert_eq!(&rep.buf.unwrap().as_slice()[..4], b"pong");
    assert_eq!(rep.source.as_ref(), Some(&looked));
    assert_eq!(wait_op(&cctx, &[&sctx], sop).result, Ok(()));
    assert_eq!(wait_op(&sctx, &[&cctx], rs).result, Ok(()));
}

#[test]
fn rma_put_get_across_segments_at_offsets() {
    let Some((server, client, sctx, cctx)) = pair("ofi+tcp://127.0.0.1", "ofi+tcp://127.0.0.1")
    else {
        return;
    };
    let target: Vec<Vec<u8>> = vec![vec![0u8; 100], vec![0u8; 50], vec![0u8; 200]];
    let remote_mh = server
        .mem_register_segments(target, Access::READWRITE)
        .unwrap();
    let wire = server.mem_handle_serialize(&remote_mh);
    let remote = client.mem_handle_deserialize(&wire).unwrap();
    assert_eq!(remote.len(), 350);

    let src: Vec<Vec<u8>> = vec![(0..30).collect(), (30..130).collect()];
    let local = client
        .mem_register_segments(src, Access::READWRITE)
        .unwrap();
    let dest = client
        .addr_lookup(&server.addr_to_string(&sctx.self_addr()).unwrap())
        .unwrap();
    // 120 bytes from local offset 5 into remote offset 80: crosses both sides' boundaries.
    let op = cctx.put(&local, 5, &remote, 80, 120, &dest, 9);
    let c = wait_op(&cctx, &[&sctx], op);
    assert_eq!(c.result, Ok(()));
    let all = remote_mh.to_vec();
    assert_eq!(&all[80..200], &(5u8..125).collect::<Vec<_>>()[..]);
    assert!(all[..80].iter().all(|&b| b == 0));
    assert!(all[200..].iter().all(|&b| b == 0));

    remote_mh.write_at(300, &[0xAA; 40]).unwrap();
    let back = client
        .mem_register(vec![0u8; 64], Access::READWRITE)
        .unwrap();
    let op = cctx.get(&back, 10, &remote, 290, 50, &dest, 10);
    let c = wait_op(&cctx, &[&sctx], op);
    assert_eq!(c.result, Ok(()));
    let v = back.to_vec();
    assert!(v[10..20].iter().all(|&b| b == 0));
    assert!(v[20..60].iter().all(|&b| b == 0xAA));

    // Out of range and without permission: typed errors, at once.
    let op = cctx.get(&back, 0, &remote, 340, 20, &dest, 11);
    assert_eq!(wait_op(&cctx, &[], op).result, Err(Error::Overflow));
    let ro = server
        .mem_register(vec![1u8; 8], Access::READ_ONLY)
        .unwrap();
    let ro_remote = client
        .mem_handle_deserialize(&server.mem_handle_serialize(&ro))
        .unwrap();
    let op = cctx.put(&local, 0, &ro_remote, 0, 8, &dest, 12);
    assert_eq!(wait_op(&cctx, &[], op).result, Err(Error::Permission));
}

#[test]
fn progress_wakes_and_wait_fd() {
    let Some(c) = class("ofi+tcp://127.0.0.1") else {
        return;
    };
    let ctx = c.context_create(0).unwrap();
    assert!(ctx.wait_fd().is_some());
    let w = ctx.waker();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        w.wake();
    });
    let start = std::time::Instant::now();
    ctx.progress(Duration::from_secs(30)).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(25),
        "wake did not interrupt progress"
    );
    t.join().unwrap();
}

#[test]
fn cancel_posted_receives_and_close_completes_all() {
    let Some(c) = class("ofi+tcp://127.0.0.1") else {
        return;
    };
    let ctx = c.context_create(0).unwrap();
    let a = ctx.recv_unexpected(MsgBuf::new(128), 1);
    let peer = c.addr_lookup("ofi+tcp://127.0.0.1:9").unwrap();
    let b = ctx.recv_expected(MsgBuf::new(128), &peer, 5, 2);
    ctx.cancel(a).unwrap();
    let got = wait_op(&ctx, &[], a);
    assert_eq!(got.result, Err(Error::Canceled));
    assert!(got.buf.is_some());
    let _c3 = ctx.recv_unexpected(MsgBuf::new(128), 3);
    let left = ctx.close();
    let mut ids: Vec<_> = left.iter().map(|c| c.user).collect();
    ids.sort();
    assert_eq!(ids, vec![2, 3]);
    assert!(left.iter().all(|c| c.result == Err(Error::Canceled)));
    let _ = b;
}

#[test]
fn two_contexts_have_their_own_ports() {
    let Some(c) = class("ofi+tcp://127.0.0.1") else {
        return;
    };
    let a = c.context_create(0).unwrap();
    let b = c.context_create(1).unwrap();
    assert_ne!(a.self_addr(), b.self_addr());
}

#[test]
fn interface_name_and_bare_tcp() {
    let Some(c) = class("ofi+tcp://lo:0") else {
        return;
    };
    let ctx = c.context_create(0).unwrap();
    let s = c.addr_to_string(&ctx.self_addr()).unwrap();
    assert!(s.starts_with("ofi+tcp;ofi_rxm://127.0.0.1:"), "{s}");
    if let Some(t) = class("tcp://127.0.0.1") {
        assert_eq!(t.plugin_name(), "ofi");
    }
    let r = class("ofi+tcp;ofi_rxm://127.0.0.1").unwrap();
    assert_eq!(r.protocol(), "tcp;ofi_rxm");
}

/// Cancels an expected receive for each tag of `100..=last` (`last` = 100 + `LATE_KEYS` + 3),
/// has the server send a late message for each and then a marker, and waits for the marker:
/// once it is here, so are the late messages (one connection, in order). Then for tags 100,
/// 103, 104 and `last` posts a receive, has the server send `fresh`, and returns what each got;
/// one that got a late message gets a second receive, which must get the fresh one.
fn late_then_fresh(server: &na::Class, client: &na::Class) -> Vec<(u32, Vec<u8>)> {
    let (sctx, cctx, saddr) = connect(server, client);
    // The client speaks first, so the server knows its address.
    let rop = sctx.recv_unexpected(MsgBuf::new(4096), 0);
    let mut m = MsgBuf::new(64);
    cctx.msg_init_unexpected(&mut m);
    let sop = cctx.send_unexpected(m, 16, &saddr, 1, 0);
    let caddr = wait_op(&sctx, &[&cctx], rop).source.unwrap();
    assert_eq!(wait_op(&cctx, &[&sctx], sop).result, Ok(()));
    let last = 100 + na::plugins::ofi::LATE_KEYS as u32 + 3;
    let tags: Vec<u32> = (100..=last).collect();
    for &t in &tags {
        let r = cctx.recv_expected(MsgBuf::new(64), &saddr, t, 0);
        cctx.cancel(r).unwrap();
        assert_eq!(wait_op(&cctx, &[&sctx], r).result, Err(Error::Canceled));
    }
    let send = |tag: u32, bytes: &[u8]| {
        let op = sctx.send_expected(MsgBuf::from_slice(bytes), bytes.len(), &caddr, tag, 0);
        assert_eq!(wait_op(&sctx, &[&cctx], op).result, Ok(()));
    };
    for &t in &tags {
        send(t, b"late");
    }
    // The marker's tag lies past the late ones' (999 was among them, and the late message for
    // it would have been taken for the marker).
    let mark = cctx.recv_expected(MsgBuf::new(64), &saddr, MARK, 0);
    send(MARK, b"mark");
    let c = wait_op(&cctx, &[&sctx], mark);
    assert_eq!(c.result, Ok(()));
    assert_eq!(&c.buf.unwrap().as_slice()[..c.len], b"mark");
    let mut got = Vec::new();
    for t in [100u32, 103, 104, last] {
        let r = cctx.recv_expected(MsgBuf::new(64), &saddr, t, 0);
        send(t, b"fresh");
        let c = wait_op(&cctx, &[&sctx], r);
        let bytes = c.buf.unwrap().as_slice()[..c.len].to_vec();
        if bytes == b"late" {
            // Its fresh message is still to come: collect it so nothing is left behind.
            let r2 = cctx.recv_expected(MsgBuf::new(64), &saddr, t, 0);
            let c2 = wait_op(&cctx, &[&sctx], r2);
            assert_eq!(&c2.buf.unwrap().as_slice()[..c2.len], b"fresh");
        }
        got.push((t, bytes));
    }
    assert!(cctx.close().is_empty());
    got
}

/// Late expected messages after cancelled receives are discarded up to the plugin's bound
/// ([`na::plugins::ofi::LATE_KEYS`] keys); beyond it the oldest keys' late messages are held by
/// the provider again, and handed to the next receive posted for their key. Every other key's
/// next receive gets its fresh message. A 1 MiB expected size changes nothing (the sweeps post
/// no buffers).
#[test]
fn late_messages_discarded_up_to_the_bound() {
    let Some(server) = class("ofi+tcp://127.0.0.1:0") else {
        return;
    };
    let opts = na::InitOptions {
        max_expected_size: 1 << 20,
        ..na::InitOptions::default()
    };
    let Some(client) = class_opt("ofi+tcp://127.0.0.1", &opts) else {
        return;
    };
    // LATE_KEYS + 4 receives cancelled: the 4 oldest keys are let go of, and their late
    // messages stay with rxm until the next receive for the tag takes them.
    for (t, got) in late_then_fresh(&server, &client) {
        let want: &[u8] = if t < 104 { b"late" } else { b"fresh" };
        assert_eq!(got, want, "tag {t}");
    }
}

/// Over XNET, past rxm's `LATE_KEYS`: the keys are still kept (`LATE_KEYS_XNET`) and swept per
/// peer, each late message is dropped as it comes first on the connection, the marker after
/// them gets through, and a new receive for an old key gets the new message, not a late one
/// (with rxm's per-key sweeps the 4 keys past the bound had their messages held aside by XNET,
/// which keeps up to 4 unmatched tagged messages per connection, and handed to those receives).
#[test]
fn late_messages_past_rxms_bound_are_discarded_over_xnet() {
    let Some(server) = class("ofi+net://127.0.0.1:0") else {
        return;
    };
    let Some(client) = class("ofi+net://127.0.0.1") else {
        return;
    };
    for (t, got) in late_then_fresh(&server, &client) {
        assert_eq!(got, b"fresh", "tag {t}: its late message was discarded");
    }
}
