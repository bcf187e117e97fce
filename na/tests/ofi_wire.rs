//! Golden bytes: an unexpected message on the wire as WIRE.md lays it out (Mercury 2.4 on tcp;ofi_rxm).

mod ofi_common;

use na::MsgBuf;
use ofi_common::{class, pair, wait_op};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn unexpected_request_matches_wire_md() {
    let Some((_server, client, sctx, cctx)) = pair("ofi+tcp://127.0.0.1", "ofi+tcp://127.0.0.1")
    else {
        return;
    };
    assert_eq!(client.unexpected_header_size(), 16);

    // WIRE.md's example: RPC id 2, an 8-byte iovec input, sent from 127.0.0.1:43947 (0xabab).
    let example = hex(
        "0200a3ab7f0000010000000000000000 d7 05 0000000000000002 00 00 00000000 \
         08000000 0001020304050607",
    );
    assert_eq!(example.len(), 44);

    // msg_init_unexpected writes this client's own sockaddr_in in the example's layout.
    let mut m = MsgBuf::new(4096);
    cctx.msg_init_unexpected(&mut m);
    let me = cctx.self_addr();
    let port = client
        .addr_to_string(&me)
        .unwrap()
        .rsplit_once(':')
        .unwrap()
        .1
        .parse::<u16>()
        .unwrap();
    let mut expect = example.clone();
    expect[2..4].copy_from_slice(&port.to_be_bytes());
    assert_eq!(&m.as_slice()[..16], &expect[..16]);
    assert_eq!(&m.as_slice()[..2], &[0x02, 0x00], "family in host order");
    assert_eq!(&m.as_slice()[4..8], &[127, 0, 0, 1]);
    assert_eq!(
        me.as_bytes(),
        &expect[..16],
        "the address is those 16 bytes"
    );
    m.as_mut_slice()[16..44].copy_from_slice(&example[16..]);

    let r = sctx.recv_unexpected(MsgBuf::new(4096), 1);
    let s = cctx.send_unexpected(m, 44, &sctx.self_addr(), 0x0000_0001, 2);
    let got = wait_op(&sctx, &[&cctx], r);
    assert_eq!(got.result, Ok(()));
    // The receiver sees exactly the 44 bytes, with the 32-bit tag carried beside them (CQ data).
    assert_eq!(got.len, 44);
    assert_eq!(&got.buf.unwrap().as_slice()[..44], &expect[..]);
    assert_eq!(got.tag, 1);
    assert_eq!(got.source, Some(me));
    assert_eq!(wait_op(&cctx, &[&sctx], s).result, Ok(()));
}

#[test]
fn expected_reply_is_tagged_and_directed() {
    let Some(server) = class("ofi+tcp://127.0.0.1") else {
        return;
    };
    let Some(client) = class("ofi+tcp://127.0.0.1") else {
        return;
    };
    let Some(other) = class("ofi+tcp://127.0.0.1") else {
        return;
    };
    let sctx = server.context_create(0).unwrap();
    let cctx = client.context_create(0).unwrap();
    let octx = other.context_create(0).unwrap();
    let saddr = sctx.self_addr();
    // The client's receive for tag 7 from the server must not match a tag-7 message from `other`.
    let r = cctx.recv_expected(MsgBuf::new(64), &saddr, 7, 1);
    let wrong = octx.send_expected(MsgBuf::from_slice(&[0xEE; 16]), 16, &cctx.self_addr(), 7, 2);
    let _ = wait_op(&octx, &[&cctx], wrong);
    let right = sctx.send_expected(MsgBuf::from_slice(&[0u8; 16]), 16, &cctx.self_addr(), 7, 3);
    let got = wait_op(&cctx, &[&sctx, &octx], r);
    assert_eq!(got.result, Ok(()));
    assert_eq!(
        &got.buf.unwrap().as_slice()[..16],
        &[0u8; 16],
        "empty successful reply"
    );
    let _ = wait_op(&sctx, &[&cctx], right);
}
