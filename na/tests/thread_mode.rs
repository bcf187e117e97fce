//! `ThreadMode` on the ofi plugin: in both modes (na's own lock over an `FI_THREAD_DOMAIN`
//! domain, or the provider's locks under `FI_THREAD_SAFE`) one class's contexts work when driven
//! by several threads at once while another thread registers and releases memory.

mod ofi_common;

use na::{Access, Class, InitOptions, MsgBuf, OpKind, ThreadMode};
use ofi_common::{class_opt, GUARD};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Round trips per client thread.
const ROUNDS: u32 = 200;

/// Serves `rounds` requests on its own context: each is answered with its 4 bytes reversed.
fn serve(server: Arc<Class>, id: u8, rounds: u32, addr_out: std::sync::mpsc::Sender<String>) {
    let ctx = server.context_create(id).unwrap();
    addr_out
        .send(server.addr_to_string(&ctx.self_addr()).unwrap())
        .unwrap();
    let hdr = server.unexpected_header_size();
    for k in 0..4 {
        ctx.recv_unexpected(server.msg_buf_alloc(4096), k);
    }
    let end = Instant::now() + GUARD;
    let mut served = 0;
    while served < rounds {
        assert!(Instant::now() < end, "server {id} stalled at {served}");
        ctx.progress(std::time::Duration::from_millis(1)).unwrap();
        while let Some(c) = ctx.pop() {
            match c.kind {
                OpKind::RecvUnexpected => {
                    assert_eq!(c.result, Ok(()));
                    let b = c.buf.unwrap();
                    let mut v = b.as_slice()[hdr..hdr + 4].to_vec();
                    v.reverse();
                    let mut r = MsgBuf::new(16);
                    r.as_mut_slice()[..4].copy_from_slice(&v);
                    ctx.send_expected(r, 4, &c.source.unwrap(), c.tag, 100);
                    ctx.recv_unexpected(b, c.user);
                    served += 1;
                }
                OpKind::SendExpected => assert_eq!(c.result, Ok(())),
                k => panic!("unexpected completion {k:?}"),
            }
        }
    }
    // Let the last replies leave before the context closes.
    let until = Instant::now() + std::time::Duration::from_millis(200);
    while Instant::now() < until {
        ctx.progress(std::time::Duration::from_millis(1)).unwrap();
        while ctx.pop().is_some() {}
    }
}

/// `ROUNDS` request / reply round trips to `to` from its own context, each checked.
fn ping(client: Arc<Class>, id: u8, to: String) {
    let ctx = client.context_create(id).unwrap();
    let saddr = client.addr_lookup(&to).unwrap();
    let hdr = client.unexpected_header_size();
    let end = Instant::now() + GUARD;
    for i in 0..ROUNDS {
        let tag = i + 1;
        let body = [id, (i % 251) as u8, 7, 9];
        ctx.recv_expected(client.msg_buf_alloc(4096), &saddr, tag, 1);
        let mut m = client.msg_buf_alloc(4096);
        ctx.msg_init_unexpected(&mut m);
        m.as_mut_slice()[hdr..hdr + 4].copy_from_slice(&body);
        ctx.send_unexpected(m, hdr + 4, &saddr, tag, 2);
        let mut got = false;
        while !got {
            assert!(Instant::now() < end, "client {id} stalled at round {i}");
            ctx.progress(std::time::Duration::from_millis(1)).unwrap();
            while let Some(c) = ctx.pop() {
                assert_eq!(c.result, Ok(()), "{:?}", c.kind);
                if c.kind == OpKind::RecvExpected {
                    let mut want = body;
                    want.reverse();
                    assert_eq!(&c.buf.unwrap().as_slice()[..4], &want);
                    got = true;
                }
            }
        }
    }
}

fn run(mode: ThreadMode) {
    let opts = InitOptions {
        thread_mode: mode,
        ..InitOptions::default()
    };
    let Some(server) = class_opt("ofi+tcp://127.0.0.1:0", &opts) else {
        return;
    };
    let server = Arc::new(server);
    let client = Arc::new(class_opt("ofi+tcp://127.0.0.1", &opts).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    // Memory registrations come and go on the server's domain the whole time.
    let reg = {
        let (server, stop) = (server.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let m = server.mem_register(vec![n as u8; 4096], Access::READWRITE);
                drop(m.unwrap());
                n += 1;
            }
            n
        })
    };
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    for id in 0..2u8 {
        let (tx, rx) = std::sync::mpsc::channel();
        let s = server.clone();
        servers.push(std::thread::spawn(move || serve(s, id, ROUNDS, tx)));
        let to = rx.recv().unwrap();
        let c = client.clone();
        clients.push(std::thread::spawn(move || ping(c, id, to)));
    }
    for t in clients.into_iter().chain(servers) {
        t.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    assert!(reg.join().unwrap() > 0, "no registration ran");
}

#[test]
fn serialized_mode_serves_contexts_on_several_threads() {
    run(ThreadMode::Serialized);
}

#[test]
fn provider_mode_serves_contexts_on_several_threads() {
    run(ThreadMode::Provider);
}
