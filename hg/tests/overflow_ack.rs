//! Output overflow registrations whose client never acknowledges (it died after the reply): let go of at the deadline or when the peer is removed, without teardown, over inproc and ofi+tcp.

mod common;

use hg::header::{self, flags, RequestHeader};
use hg::na::plugins::inproc::{Fabric, FaultConfig};
use hg::na::{self, MsgBuf};
use hg::{ChecksumLevel, Class, Context, Handle, InitOptions, Rpc};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

hg::rpc! {
    /// Answers `n` bytes: above the expected size, the reply overflows.
    pub rpc Big(BigIn, BigOut) {
        input {
            /// How many bytes.
            pub n: u32,
        }
        output {
            /// The bytes.
            pub data: Vec<u8>,
        }
    }
}

const GUARD: Duration = Duration::from_secs(60);

fn bytes(n: u32) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

hg::rpc! {
    /// Answered later by the test (the server keeps the handle).
    pub rpc Later(LaterIn, LaterOut) {
        input {
            /// Unused.
            pub x: u8,
        }
        output {
            /// The bytes.
            pub data: Vec<u8>,
        }
    }
}

/// Handles of `Later` requests, answered by the test.
type Kept = Arc<Mutex<Vec<Handle>>>;

fn serve(class: &Class) -> Kept {
    class.register_rpc::<Big>(Some(Arc::new(|h: Handle| {
        let i: BigIn = h.get_input()?;
        h.respond(&BigOut { data: bytes(i.n) }, |r| assert_eq!(r, Ok(())))
    })));
    let kept: Kept = Arc::default();
    let k = kept.clone();
    class.register_rpc::<Later>(Some(Arc::new(move |h: Handle| {
        k.lock().unwrap().push(h);
        Ok(())
    })));
    kept
}

/// A server context, a well-behaved client context, and the info a raw NA client needs.
struct Setup {
    server: Class,
    client: Class,
    sctx: Context,
    cctx: Context,
    /// The server's address, as the client class names it.
    saddr: na::Addr,
    kept: Kept,
    _fabric: Option<Fabric>,
}

fn base_opts() -> InitOptions {
    InitOptions {
        request_post_init: 8,
        ..InitOptions::default()
    }
}

fn setup(server: Class, client: Class, fabric: Option<Fabric>) -> Setup {
    let kept = serve(&server);
    client.register_rpc::<Big>(None);
    let sctx = server.context_create().unwrap();
    let cctx = client.context_create().unwrap();
    let s = server.addr_to_string(&sctx.self_addr()).unwrap();
    let saddr = client.addr_lookup(&s).unwrap();
    Setup {
        server,
        client,
        sctx,
        cctx,
        saddr,
        kept,
        _fabric: fabric,
    }
}

fn inproc(server_opts: InitOptions) -> Setup {
    let fabric = Fabric::new(FaultConfig::none());
    let server = Class::from_na(fabric.class(true), server_opts);
    let client = Class::from_na(fabric.class(true), base_opts());
    setup(server, client, Some(fabric))
}

fn ofi_class(opts: InitOptions) -> Option<Class> {
    common::ofi_class(opts)
}

fn ofi(server_opts: InitOptions) -> Option<Setup> {
    let server = ofi_class(server_opts)?;
    let client = ofi_class(base_opts())?;
    Some(setup(server, client, None))
}

fn turn(ctxs: &[&Context]) {
    for c in ctxs {
        c.progress(Duration::from_millis(1)).unwrap();
        c.trigger(usize::MAX).unwrap();
    }
}

/// Sends request `id` with `input` to the server from the raw NA context `raw`, as an HG
/// client would (checksums off, cookie 0), with reply tag `tag`; nobody on this side will
/// pull or acknowledge an overflowing reply.
fn send_raw_request(s: &Setup, raw: &na::Context, id: u64, input: &impl hg::Proc, tag: na::Tag) {
    let body = hg::proc::encode_to_vec(input).unwrap();
    let hs = ChecksumLevel::None.header_size();
    let uh = s.client.na().unexpected_header_size();
    let mut buf = MsgBuf::new(uh + hs + body.len());
    raw.msg_init_unexpected(&mut buf);
    let msg = &mut buf.as_mut_slice()[uh..];
    let req = RequestHeader {
        id,
        flags: 0,
        cookie: 0,
    };
    header::encode_request(&req, ChecksumLevel::None, msg, body.len()).unwrap();
    msg[hs..].copy_from_slice(&body);
    raw.send_unexpected(buf, uh + hs + body.len(), &s.saddr, tag, 2);
}

/// A client that sends one request on a raw NA context, receives the (overflowing) reply and
/// then dies: it never pulls the output and never acknowledges. Returns the client's address
/// as the server names it once the reply is in and the raw context is closed.
fn client_dies_after_reply(s: &Setup) -> na::Addr {
    let raw = s.client.na().context_create(9).unwrap();
    let tag = 77;
    let max = s.client.na().max_expected_size();
    raw.recv_expected(MsgBuf::new(max), &s.saddr, tag, 1);
    send_raw_request(s, &raw, Big::id(), &BigIn { n: 200_000 }, tag);
    let end = Instant::now() + GUARD;
    let reply = loop {
        turn(&[&s.sctx]);
        raw.progress(Duration::ZERO).unwrap();
        if let Some(c) = std::iter::from_fn(|| raw.pop()).find(|c| c.user == 1) {
            c.result.unwrap();
            break c.buf.unwrap().as_slice()[..c.len].to_vec();
        }
        assert!(Instant::now() < end, "no reply");
    };
    let d = header::decode_response(&reply, ChecksumLevel::None).unwrap();
    assert_eq!(d.header.ret_code, 0);
    assert_ne!(
        d.header.flags & flags::MORE_DATA,
        0,
        "the reply must overflow"
    );
    let me = s.client.addr_to_string(&raw.self_addr()).unwrap();
    drop(raw.close());
    s.server.addr_lookup(&me).unwrap()
}

/// A normal client's RPC with an overflowing reply: served, pulled, acknowledged.
fn big_rpc_works(s: &Setup) {
    let got = Arc::new(Mutex::new(None));
    let g = got.clone();
    let h = s.cctx.create(&s.saddr, Big::id()).unwrap();
    h.forward(&BigIn { n: 150_000 }, move |h, r| {
        *g.lock().unwrap() = Some(r.and_then(|()| h.get_output::<BigOut>()));
    })
    .unwrap();
    let end = Instant::now() + GUARD;
    while got.lock().unwrap().is_none() {
        turn(&[&s.cctx, &s.sctx]);
        assert!(Instant::now() < end, "hang");
    }
    let out = got.lock().unwrap().take().unwrap().unwrap();
    assert_eq!(out.data, bytes(150_000));
    // The client's ack lets the server go of its registration.
    while s.sctx.overflow_registrations() != 0 {
        turn(&[&s.cctx, &s.sctx]);
        assert!(Instant::now() < end, "ack never processed");
    }
}

fn released_after_deadline(s: &Setup) {
    big_rpc_works(s);
    client_dies_after_reply(s);
    assert_eq!(s.sctx.overflow_registrations(), 1);
    let end = Instant::now() + GUARD;
    while s.sctx.overflow_registrations() != 0 {
        // Blocking progress: the registration's deadline bounds the wait.
        s.sctx.progress(Duration::from_secs(10)).unwrap();
        s.sctx.trigger(usize::MAX).unwrap();
        assert!(Instant::now() < end, "registration never released");
    }
    big_rpc_works(s);
}

fn released_on_peer_removal(s: &Setup) {
    let dead = client_dies_after_reply(s);
    // No deadline: kept while the peer may still pull.
    for _ in 0..50 {
        s.sctx.progress(Duration::from_millis(2)).unwrap();
        s.sctx.trigger(usize::MAX).unwrap();
    }
    assert_eq!(s.sctx.overflow_registrations(), 1);
    s.server.addr_set_remove(&dead).unwrap();
    let end = Instant::now() + GUARD;
    while s.sctx.overflow_registrations() != 0 {
        turn(&[&s.sctx]);
        assert!(Instant::now() < end, "registration never released");
    }
    big_rpc_works(s);
}

/// The client dies before its reply is sent: the reply fails in NA, and the registration kept
/// for that peer is let go of at once (no deadline, no removal).
fn released_when_the_reply_fails(s: &Setup) {
    let raw = s.client.na().context_create(9).unwrap();
    send_raw_request(s, &raw, Later::id(), &LaterIn { x: 0 }, 78);
    let end = Instant::now() + GUARD;
    while s.kept.lock().unwrap().is_empty() {
        turn(&[&s.sctx]);
        raw.progress(Duration::ZERO).unwrap();
        assert!(Instant::now() < end, "request never handled");
    }
    drop(raw.close());
    let h = s.kept.lock().unwrap().pop().unwrap();
    let sent = Arc::new(Mutex::new(None));
    let s2 = sent.clone();
    h.respond(
        &LaterOut {
            data: bytes(100_000),
        },
        move |r| *s2.lock().unwrap() = Some(r),
    )
    .unwrap();
    while sent.lock().unwrap().is_none() || s.sctx.overflow_registrations() != 0 {
        turn(&[&s.sctx]);
        assert!(
            Instant::now() < end,
            "reply {:?}, {} registrations kept",
            sent.lock().unwrap(),
            s.sctx.overflow_registrations()
        );
    }
    assert!(
        sent.lock().unwrap().unwrap().is_err(),
        "the reply to a closed peer must fail"
    );
    big_rpc_works(s);
}

fn with_deadline() -> InitOptions {
    InitOptions {
        overflow_ack_timeout: Some(Duration::from_millis(300)),
        ..base_opts()
    }
}

fn no_deadline() -> InitOptions {
    InitOptions {
        overflow_ack_timeout: None,
        ..base_opts()
    }
}

#[test]
fn default_deadline_is_a_few_seconds() {
    assert_eq!(
        InitOptions::default().overflow_ack_timeout,
        Some(Duration::from_secs(5))
    );
}

#[test]
fn unacknowledged_overflow_released_after_deadline_inproc() {
    released_after_deadline(&inproc(with_deadline()));
}

#[test]
fn unacknowledged_overflow_released_on_peer_removal_inproc() {
    released_on_peer_removal(&inproc(no_deadline()));
}

#[test]
fn unacknowledged_overflow_released_after_deadline_ofi() {
    let Some(s) = ofi(with_deadline()) else {
        return;
    };
    released_after_deadline(&s);
}

#[test]
fn unacknowledged_overflow_released_on_peer_removal_ofi() {
    let Some(s) = ofi(no_deadline()) else { return };
    released_on_peer_removal(&s);
}

#[test]
fn overflow_released_when_the_reply_fails_inproc() {
    released_when_the_reply_fails(&inproc(no_deadline()));
}

#[test]
fn overflow_released_when_the_reply_fails_ofi() {
    let Some(s) = ofi(no_deadline()) else { return };
    released_when_the_reply_fails(&s);
}
