//! Every bad input of issue 3 against ofi: a typed error each, and the class keeps serving. The
//! ones that cross the wire run over both TCP transports (modules `rxm` and `net`).

mod ofi_common;

use na::{Access, Class, Error, MsgBuf, OpKind};
use ofi_common::{class, pair, wait_op};

/// The loopback info string of transport `t` (`"tcp"`: rxm; `"net"`: XNET).
fn loopback(t: &str) -> String {
    format!("ofi+{t}://127.0.0.1")
}

/// Each of these runs over both TCP transports, as `rxm::<name>` and `net::<name>`.
macro_rules! on_both_transports {
    ($($name:ident),* $(,)?) => {
        mod rxm {
            $( #[test] fn $name() { super::$name("tcp") } )*
        }
        mod net {
            $( #[test] fn $name() { super::$name("net") } )*
        }
    };
}

on_both_transports!(
    unreachable_peer_is_hostunreach,
    message_over_the_max_size_is_msgsize,
    expected_receive_buffer_too_small_is_overflow,
    unexpected_receive_buffer_too_small_is_overflow,
    rma_against_a_deregistered_key_is_an_error_completion,
    truncated_or_garbage_source_prefix_is_refused,
);

/// A loopback port nobody listens on (bound then released).
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Sends one message to prove the pair still serves after a bad input. A send may fail once
/// with HostUnreach when the bad input cost the connection (libfabric's tcp provider closes a
/// connection on truncation); the retry reconnects.
const ATTEMPTS: usize = 6;

fn still_serves(server: &na::Context, client: &na::Context, dest: &na::Addr) {
    let r = server.recv_unexpected(MsgBuf::new(4096), 100);
    for attempt in 0..ATTEMPTS {
        let mut m = MsgBuf::new(64);
        client.msg_init_unexpected(&mut m);
        let s = client.send_unexpected(m, 32, dest, 5, 101);
        match wait_op(client, &[server], s).result {
            Ok(()) => break,
            Err(Error::HostUnreach) if attempt + 1 < ATTEMPTS => {
                eprintln!("attempt {attempt}: HostUnreach, retrying");
                for _ in 0..50 {
                    server
                        .progress(std::time::Duration::from_millis(2))
                        .unwrap();
                    client.progress(std::time::Duration::ZERO).unwrap();
                }
                continue;
            }
            Err(e) => panic!("send after bad input: {e}"),
        }
    }
    let got = wait_op(server, &[client], r);
    assert_eq!(got.result, Ok(()));
    assert_eq!(got.source.as_ref(), Some(&client.self_addr()));
}

fn unreachable_peer_is_hostunreach(t: &str) {
    let Some(c) = class(&loopback(t)) else {
        return;
    };
    let ctx = c.context_create(0).unwrap();
    let peer = c
        .addr_lookup(&format!("{}:{}", loopback(t), dead_port()))
        .unwrap();
    let mut m = MsgBuf::new(64);
    ctx.msg_init_unexpected(&mut m);
    let op = ctx.send_unexpected(m, 32, &peer, 1, 1);
    let got = wait_op(&ctx, &[], op);
    assert_eq!(got.result, Err(Error::HostUnreach));
    assert!(got.buf.is_some(), "the buffer comes back with the error");
    // Removing the dead peer lets a later send try again (and fail the same typed way).
    c.addr_set_remove(&peer).unwrap();
    let op = ctx.send_expected(MsgBuf::new(8), 8, &peer, 1, 2);
    assert_eq!(wait_op(&ctx, &[], op).result, Err(Error::HostUnreach));
}

fn message_over_the_max_size_is_msgsize(t: &str) {
    let Some(server) = class(&loopback(t)) else {
        return;
    };
    let sctx = server.context_create(0).unwrap();
    let dest = sctx.self_addr();
    let max = server.max_unexpected_size();
    assert_eq!(max, 4096);
    let op = sctx.send_unexpected(MsgBuf::new(max + 1), max + 1, &dest, 1, 1);
    let got = wait_op(&sctx, &[], op);
    assert_eq!(got.result, Err(Error::MsgSize));
    let emax = server.max_expected_size();
    let op = sctx.send_expected(MsgBuf::new(emax + 1), emax + 1, &dest, 1, 2);
    assert_eq!(wait_op(&sctx, &[], op).result, Err(Error::MsgSize));
    // A length beyond the buffer is an invalid argument, not a read past its end.
    let op = sctx.send_expected(MsgBuf::new(8), 16, &dest, 1, 3);
    assert_eq!(wait_op(&sctx, &[], op).result, Err(Error::InvalidArg));
    // Exactly the max goes through (to ourselves).
    let r = sctx.recv_unexpected(MsgBuf::new(max), 4);
    let mut m = MsgBuf::new(max);
    sctx.msg_init_unexpected(&mut m);
    let s = sctx.send_unexpected(m, max, &dest, 9, 5);
    let got = wait_op(&sctx, &[], r);
    assert_eq!((got.result, got.len, got.tag), (Ok(()), max, 9));
    assert_eq!(wait_op(&sctx, &[], s).result, Ok(()));
}

#[test]
fn configurable_eager_size() {
    let opts = na::InitOptions {
        max_unexpected_size: 8192,
        max_expected_size: 16384,
        ..Default::default()
    };
    match Class::initialize_opt("ofi+tcp://127.0.0.1", true, &opts) {
        Ok(c) => {
            assert_eq!(c.max_unexpected_size(), 8192);
            assert_eq!(c.max_expected_size(), 16384);
        }
        Err(e) => assert!(std::env::var("CI").as_deref() != Ok("true"), "{e}"),
    }
}

fn expected_receive_buffer_too_small_is_overflow(t: &str) {
    let Some((_s, _c, sctx, cctx)) = pair(&loopback(t), &loopback(t)) else {
        return;
    };
    let dest = sctx.self_addr();
    still_serves(&sctx, &cctx, &dest);
    let r = sctx.recv_expected(MsgBuf::new(16), &cctx.self_addr(), 33, 1);
    let s = cctx.send_expected(MsgBuf::new(512), 512, &dest, 33, 2);
    let got = wait_op(&sctx, &[&cctx], r);
    assert_eq!(got.result, Err(Error::Overflow));
    assert_eq!(got.kind, OpKind::RecvExpected);
    let _ = wait_op(&cctx, &[&sctx], s);
    still_serves(&sctx, &cctx, &dest);
}

fn unexpected_receive_buffer_too_small_is_overflow(t: &str) {
    let Some((_s, _c, sctx, cctx)) = pair(&loopback(t), &loopback(t)) else {
        return;
    };
    let dest = sctx.self_addr();
    let r = sctx.recv_unexpected(MsgBuf::new(20), 3);
    let mut m = MsgBuf::new(300);
    cctx.msg_init_unexpected(&mut m);
    let s = cctx.send_unexpected(m, 300, &dest, 1, 4);
    let got = wait_op(&sctx, &[&cctx], r);
    assert_eq!(got.result, Err(Error::Overflow));
    assert_eq!(got.kind, OpKind::RecvUnexpected);
    let _ = wait_op(&cctx, &[&sctx], s);
    still_serves(&sctx, &cctx, &dest);
}

#[test]
fn unknown_plugin_and_malformed_strings() {
    assert_eq!(
        Class::initialize("nope+tcp", true).err(),
        Some(Error::ProtoNoSupport)
    );
    assert_eq!(
        Class::initialize("ofi+carrier_pigeon", true).err(),
        Some(Error::ProtoNoSupport)
    );
    assert_eq!(
        Class::initialize("ofi+tcp://127.0.0.1:notaport", true).err(),
        Some(Error::InvalidArg)
    );
    assert_eq!(
        Class::initialize("ofi+tcp://no_such_interface_xyz:1", true).err(),
        Some(Error::AddrNotAvail)
    );
    let Some(c) = class("ofi+tcp://127.0.0.1") else {
        return;
    };
    for bad in [
        "ofi+tcp://127.0.0.1",
        "ofi+tcp://127.0.0.1:0",
        "ofi+tcp://1.2.3:4",
        "ofi+tcp://[::1]:4",
        "ofi+sm://127.0.0.1:4",
        "nonsense",
    ] {
        assert_eq!(c.addr_lookup(bad).err(), Some(Error::InvalidArg), "{bad}");
    }
    assert_eq!(c.addr_deserialize(&[2, 0, 1]).err(), Some(Error::Fault));
    assert_eq!(c.addr_deserialize(&[0u8; 16]).err(), Some(Error::Fault));
}

#[test]
fn verbs_is_selectable_and_fails_with_nodev() {
    if !na::rdma_devices().is_empty() {
        return; // an RDMA machine: verbs may well open
    }
    assert_eq!(
        Class::initialize("ofi+verbs;ofi_rxm", true).err(),
        Some(Error::NoDev)
    );
    assert_eq!(
        Class::initialize("verbs;ofi_rxm", true).err(),
        Some(Error::NoDev)
    );
}

#[test]
fn garbage_memory_handle_is_fault() {
    let Some(c) = class("ofi+tcp://127.0.0.1") else {
        return;
    };
    let mh = c.mem_register(vec![7u8; 256], Access::READ_ONLY).unwrap();
    let good = c.mem_handle_serialize(&mh);
    assert_eq!(c.mem_handle_deserialize(&good).unwrap().len(), 256);
    for bad in [
        &[][..],
        &good[..good.len() - 3],
        &[0xFF; 28][..],
        &[1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0][..],
    ] {
        assert_eq!(c.mem_handle_deserialize(bad).err(), Some(Error::Fault));
    }
    let mut more = good.clone();
    more.push(0);
    assert_eq!(c.mem_handle_deserialize(&more).err(), Some(Error::Fault));
}

fn rma_against_a_deregistered_key_is_an_error_completion(t: &str) {
    let Some((server, client, sctx, cctx)) = pair(&loopback(t), &loopback(t)) else {
        return;
    };
    let target = server
        .mem_register(vec![0u8; 4096], Access::READWRITE)
        .unwrap();
    let remote = client
        .mem_handle_deserialize(&server.mem_handle_serialize(&target))
        .unwrap();
    drop(target);
    let local = client
        .mem_register(vec![1u8; 4096], Access::READWRITE)
        .unwrap();
    let dest = sctx.self_addr();
    let op = cctx.get(&local, 0, &remote, 0, 4096, &dest, 1);
    let got = wait_op(&cctx, &[&sctx], op);
    assert!(got.result.is_err(), "{:?}", got.result);
    still_serves(&sctx, &cctx, &dest);
}

fn truncated_or_garbage_source_prefix_is_refused(t: &str) {
    let Some((_server, _client, sctx, cctx)) = pair(&loopback(t), &loopback(t)) else {
        return;
    };
    let dest = sctx.self_addr();
    let mut good = MsgBuf::new(64);
    cctx.msg_init_unexpected(&mut good);
    let good = good.as_slice()[..16].to_vec();

    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..10].to_vec()),
        ("empty", Vec::new()),
        ("all zero", vec![0u8; 32]),
        (
            "random",
            (0..48u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect(),
        ),
    ];
    let mut b = good.clone();
    b[8] = 0xEE;
    cases.push(("padding", b));
    let mut b = good.clone();
    b[2] = 0;
    b[3] = 0;
    cases.push(("port 0", b));
    let mut b = good.clone();
    b[0] = 10; // AF_INET6
    cases.push(("family", b));

    for (what, bytes) in cases {
        let r = sctx.recv_unexpected(MsgBuf::new(4096), 1);
        let s = cctx.send_unexpected(MsgBuf::from_slice(&bytes), bytes.len(), &dest, 3, 2);
        let got = wait_op(&sctx, &[&cctx], r);
        assert_eq!(got.result, Err(Error::ProtocolError), "{what}");
        assert!(got.source.is_none(), "{what}");
        assert!(got.buf.is_some(), "{what}");
        let _ = wait_op(&cctx, &[&sctx], s);
    }
    still_serves(&sctx, &cctx, &dest);
}
