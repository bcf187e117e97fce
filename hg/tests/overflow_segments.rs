//! Overflowed payloads (`MORE_DATA`) described by a peer with one NA handle per segment, as a Mercury whose NA plugin cannot register vectors sends them: pulled part by part, both directions, over inproc and ofi+tcp.

mod common;

use hg::header::{self, flags, RequestHeader, ResponseHeader};
use hg::na::plugins::inproc::{Fabric, FaultConfig};
use hg::na::{self, Access, MsgBuf};
use hg::{Bulk, ChecksumLevel, Class, Context, Handle, InitOptions, Rpc};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

hg::rpc! {
    /// Returns the sum and length of its input bytes, or `n` bytes.
    pub rpc Data(DataIn, DataOut) {
        input {
            /// Bytes.
            pub data: Vec<u8>,
        }
        output {
            /// Their sum.
            pub sum: u64,
            /// Bytes back (the raw server's reply).
            pub data: Vec<u8>,
        }
    }
}

const GUARD: Duration = Duration::from_secs(60);
const LEVEL: ChecksumLevel = ChecksumLevel::None;

fn opts() -> InitOptions {
    InitOptions {
        request_post_init: 8,
        ..InitOptions::default()
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 253) as u8).collect()
}

/// Registers `payload` on `class` cut into uneven segments, one NA registration each.
fn per_segment(class: &Class, payload: &[u8]) -> Bulk {
    let cuts = [0, 1000, 1001, 9000, 30_000, payload.len()];
    let bufs = cuts
        .windows(2)
        .map(|w| payload[w[0]..w[1]].to_vec())
        .collect();
    let b = Bulk::create_per_segment(class, bufs, Access::READ_ONLY).unwrap();
    assert_eq!(b.registrations().len(), 5);
    b
}

fn drain(raw: &na::Context, want: u64, ctxs: &[&Context]) -> na::Completion {
    let end = Instant::now() + GUARD;
    loop {
        for c in ctxs {
            c.progress(Duration::from_millis(1)).unwrap();
            c.trigger(usize::MAX).unwrap();
        }
        raw.progress(Duration::ZERO).unwrap();
        if let Some(c) = std::iter::from_fn(|| raw.pop()).find(|c| c.user == want) {
            return c;
        }
        assert!(Instant::now() < end, "no completion {want}");
    }
}

/// A raw NA client sends an overflowed request whose descriptor has one handle per segment; the
/// hg server pulls it in parts and answers with the sum.
fn input_pulled_in_parts(server: &Class, sctx: &Context, raw_class: na::Class) {
    server.register_rpc::<Data>(Some(Arc::new(|h: Handle| {
        let i: DataIn = h.get_input()?;
        let sum = i.data.iter().map(|b| u64::from(*b)).sum();
        h.respond(
            &DataOut {
                sum,
                data: Vec::new(),
            },
            |_| {},
        )
    })));
    let raw = raw_class.context_create(3).unwrap();
    let saddr_s = server.addr_to_string(&sctx.self_addr()).unwrap();
    let saddr = raw_class.addr_lookup(&saddr_s).unwrap();
    let data = pattern(50_000);
    let want: u64 = data.iter().map(|b| u64::from(*b)).sum();
    let payload = hg::proc::encode_to_vec(&DataIn { data }).unwrap();
    let rclass = Class::from_na(raw_class.clone(), opts());
    let bulk = per_segment(&rclass, &payload);
    let body = hg::proc::encode_to_vec(&bulk.to_ref()).unwrap();
    let (uh, hs) = (raw_class.unexpected_header_size(), LEVEL.header_size());
    let mut buf = MsgBuf::new(uh + hs + body.len());
    raw.msg_init_unexpected(&mut buf);
    let msg = &mut buf.as_mut_slice()[uh..];
    let req = RequestHeader {
        id: Data::id(),
        flags: flags::MORE_DATA,
        cookie: 0,
    };
    header::encode_request(&req, LEVEL, msg, body.len()).unwrap();
    msg[hs..].copy_from_slice(&body);
    raw.recv_expected(MsgBuf::new(4096), &saddr, 5, 1);
    raw.send_unexpected(buf, uh + hs + body.len(), &saddr, 5, 2);
    let c = drain(&raw, 1, &[sctx]);
    c.result.unwrap();
    let reply = &c.buf.unwrap().as_slice()[..c.len].to_vec();
    let d = header::decode_response(reply, LEVEL).unwrap();
    assert_eq!(d.header.ret_code, 0);
    let out: DataOut = hg::proc::decode_exact(&reply[d.body_offset..]).unwrap();
    assert_eq!(out.sum, want);
    drop(raw.close());
}

/// A raw NA server answers an hg client's forward with an overflowed reply whose descriptor has
/// one handle per segment; the client pulls it in parts, gets the output, and acknowledges.
fn output_pulled_in_parts(client: Class, raw_class: na::Class) {
    client.register_rpc::<Data>(None);
    let cctx = client.context_create().unwrap();
    let raw = raw_class.context_create(0).unwrap();
    let raddr_s = raw_class.addr_to_string(&raw.self_addr()).unwrap();
    let raddr = client.addr_lookup(&raddr_s).unwrap();
    raw.recv_unexpected(MsgBuf::new(raw_class.max_unexpected_size()), 10);

    let got = Arc::new(Mutex::new(None));
    let g = got.clone();
    let h = cctx.create(&raddr, Data::id()).unwrap();
    h.forward(&DataIn { data: vec![1] }, move |h, r| {
        *g.lock().unwrap() = Some(r.and_then(|()| h.get_output::<DataOut>()));
    })
    .unwrap();
    let req = drain(&raw, 10, &[&cctx]);
    req.result.unwrap();
    let (source, tag) = (req.source.unwrap(), req.tag);

    let out = DataOut {
        sum: 77,
        data: pattern(60_000),
    };
    let rclass = Class::from_na(raw_class.clone(), opts());
    let bulk = per_segment(&rclass, &hg::proc::encode_to_vec(&out).unwrap());
    let body = hg::proc::encode_to_vec(&bulk.to_ref()).unwrap();
    let hs = LEVEL.header_size();
    let mut buf = MsgBuf::new(hs + body.len());
    let mut rh = ResponseHeader::for_result(Ok(()), 0);
    rh.flags |= flags::MORE_DATA;
    header::encode_response(&rh, LEVEL, buf.as_mut_slice(), body.len()).unwrap();
    buf.as_mut_slice()[hs..].copy_from_slice(&body);
    raw.recv_expected(MsgBuf::new(1), &source, tag, 11);
    raw.send_expected(buf, hs + body.len(), &source, tag, 12);
    let ack = drain(&raw, 11, &[&cctx]);
    assert_eq!(ack.result, Ok(()), "the client acknowledges its pull");
    let end = Instant::now() + GUARD;
    while got.lock().unwrap().is_none() {
        cctx.progress(Duration::from_millis(1)).unwrap();
        cctx.trigger(usize::MAX).unwrap();
        assert!(Instant::now() < end, "hang");
    }
    assert_eq!(got.lock().unwrap().take().unwrap(), Ok(out));
    drop(raw.close());
}

#[test]
fn per_segment_overflow_over_inproc() {
    let fabric = Fabric::new(FaultConfig::none());
    let server = Class::from_na(fabric.class(true), opts());
    let sctx = server.context_create().unwrap();
    input_pulled_in_parts(&server, &sctx, fabric.class(true));
    output_pulled_in_parts(
        Class::from_na(fabric.class(true), opts()),
        fabric.class(true),
    );
}

fn ofi() -> Option<na::Class> {
    common::ofi_na(&na::InitOptions::default())
}

#[test]
fn per_segment_overflow_over_ofi() {
    let (Some(a), Some(b), Some(c), Some(d)) = (ofi(), ofi(), ofi(), ofi()) else {
        return;
    };
    let server = Class::from_na(a, opts());
    let sctx = server.context_create().unwrap();
    input_pulled_in_parts(&server, &sctx, b);
    output_pulled_in_parts(Class::from_na(c, opts()), d);
}
