//! RPCs over ofi on 127.0.0.1, over rxm (`ofi+tcp`) and XNET (`ofi+net`): one process, a child
//! server killed mid-RPC, late replies.

mod common;

use common::{Echo, EchoIn, EchoOut};

use hg::na::{self, Access};
use hg::{BulkOp, BulkRef, Class, Context, Error, Handle, InitOptions, Rpc};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

hg::rpc! {
    /// Never answered: the server holds the handle.
    pub rpc Hang(HangIn, HangOut) {
        input {
            /// Unused.
            pub x: u8,
        }
        output {
            /// Unused.
            pub x: u8,
        }
    }
}

hg::rpc! {
    /// Pulls the client's region and returns the sum of its bytes.
    pub rpc Sum(SumIn, SumOut) {
        input {
            /// The region.
            pub bulk: BulkRef,
        }
        output {
            /// Sum.
            pub sum: u64,
        }
    }
}

hg::rpc! {
    /// Answered only when the test says so (after the client gave up on it).
    pub rpc Late(LateIn, LateOut) {
        input {
            /// Echoed.
            pub x: u32,
        }
        output {
            /// The input.
            pub x: u32,
        }
    }
}

const GUARD: Duration = Duration::from_secs(60);

/// The default transport, rxm over tcp (as Mercury opens `ofi+tcp` on libfabric 1.17).
const RXM: &str = "ofi+tcp://127.0.0.1";
/// XNET, libfabric's native RDM over TCP.
const NET: &str = "ofi+net://127.0.0.1";

/// An ofi class on 127.0.0.1 over the transport `info` names, with a small receive pool, or None
/// (skip) as `common::ofi_class`.
fn class_at(info: &str) -> Option<Class> {
    common::ofi_class_at(
        info,
        InitOptions {
            request_post_init: 64,
            ..InitOptions::default()
        },
    )
}

fn serve(class: &Class) {
    common::serve_echo(class);
    let held = Arc::new(Mutex::new(Vec::new()));
    class.register_rpc::<Hang>(Some(Arc::new(move |h: Handle| {
        held.lock().unwrap().push(h);
        Ok(())
    })));
}

fn drive(ctxs: &[&Context], done: impl Fn() -> bool) {
    let end = Instant::now() + GUARD;
    while !done() {
        for c in ctxs {
            c.progress(Duration::from_millis(1)).unwrap();
            c.trigger(usize::MAX).unwrap();
        }
        assert!(Instant::now() < end, "hang");
    }
}

fn echo(
    cctx: &Context,
    others: &[&Context],
    to: &na::Addr,
    data: Vec<u8>,
) -> Result<Vec<u8>, Error> {
    let got = Arc::new(Mutex::new(None));
    let g = got.clone();
    let h = cctx.create(to, Echo::id()).unwrap();
    h.forward(&EchoIn { data }, move |h, r| {
        *g.lock().unwrap() = Some(r.and_then(|()| h.get_output::<EchoOut>()));
    })
    .unwrap();
    let mut all = vec![cctx];
    all.extend_from_slice(others);
    drive(&all, || got.lock().unwrap().is_some());
    let r = got.lock().unwrap().take().unwrap();
    r.map(|o| o.data)
}

#[test]
fn one_process_echo_overflow_bulk_noentry() {
    echo_overflow_bulk_noentry(RXM);
}

#[test]
fn one_process_echo_overflow_bulk_noentry_over_xnet() {
    echo_overflow_bulk_noentry(NET);
}

fn echo_overflow_bulk_noentry(info: &str) {
    let (Some(server), Some(client)) = (class_at(info), class_at(info)) else {
        return;
    };
    serve(&server);
    client.register_rpc::<Echo>(None);
    client.register_rpc::<Sum>(None);
    client.register::<(), ()>(0xBAD, None);
    let sctx = server.context_create().unwrap();
    let cctx = client.context_create().unwrap();
    let saddr_s = server.addr_to_string(&sctx.self_addr()).unwrap();
    let saddr = client.addr_lookup(&saddr_s).unwrap();

    assert_eq!(
        echo(&cctx, &[&sctx], &saddr, vec![1, 2, 3]),
        Ok(vec![1, 2, 3])
    );
    // Both directions above the 4 KiB eager size: the overflow path over real RMA.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    assert_eq!(echo(&cctx, &[&sctx], &saddr, big.clone()), Ok(big));

    // Unknown id: NoEntry from the server.
    let got = Arc::new(Mutex::new(None));
    let g = got.clone();
    let h = cctx.create(&saddr, 0xBAD).unwrap();
    h.forward(&(), move |_, r| *g.lock().unwrap() = Some(r))
        .unwrap();
    drive(&[&cctx, &sctx], || got.lock().unwrap().is_some());
    assert_eq!(got.lock().unwrap().unwrap(), Err(Error::NoEntry));

    // Bulk pull by the server from the client's region.
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 7) as u8).collect();
    let want: u64 = data.iter().map(|b| u64::from(*b)).sum();
    let bulk = hg::Bulk::create(&client, vec![data], Access::READ_ONLY).unwrap();
    let got = Arc::new(Mutex::new(None));
    let g = got.clone();
    // The handler pulls through its context's shareable side.
    let sref = sctx.as_ref();
    server.register_rpc::<Sum>(Some(Arc::new(move |h: Handle| {
        let i: SumIn = h.get_input()?;
        let desc = i.bulk.desc().cloned().ok_or(Error::InvalidArg)?;
        let local = hg::Bulk::create(
            sref.class(),
            vec![vec![0; desc.len as usize]],
            Access::WRITE_ONLY,
        )?;
        let l2 = local.clone();
        let addr = h.info().addr;
        sref.bulk_transfer(
            BulkOp::Pull,
            &addr,
            &desc,
            0,
            &local,
            0,
            desc.len,
            move |r| {
                r.unwrap();
                let sum = l2.to_vec().iter().map(|b| u64::from(*b)).sum();
                h.respond(&SumOut { sum }, |_| {}).unwrap();
            },
        )
    })));
    let h = cctx.create(&saddr, Sum::id()).unwrap();
    h.forward(
        &SumIn {
            bulk: bulk.to_ref(),
        },
        move |h, r| {
            *g.lock().unwrap() = Some(r.and_then(|()| h.get_output::<SumOut>()));
        },
    )
    .unwrap();
    drive(&[&cctx, &sctx], || got.lock().unwrap().is_some());
    assert_eq!(
        got.lock().unwrap().clone().unwrap(),
        Ok(SumOut { sum: want })
    );
}

/// Runs only as the child of `killed_server_gives_one_callback`: serves until killed.
#[test]
fn child_server_main() {
    if std::env::var("HG_OFI_CHILD").is_err() {
        return;
    }
    // The parent names the transport (HG_OFI_CHILD holds its info string).
    let info = std::env::var("HG_OFI_CHILD").unwrap();
    let server = class_at(&info).expect("child needs ofi");
    serve(&server);
    let ctx = server.context_create().unwrap();
    println!("ADDR {}", server.addr_to_string(&ctx.self_addr()).unwrap());
    let end = Instant::now() + GUARD;
    while Instant::now() < end {
        ctx.progress(Duration::from_millis(10)).unwrap();
        ctx.trigger(usize::MAX).unwrap();
    }
}

#[test]
fn killed_server_gives_one_callback() {
    killed_server_one_callback(RXM);
}

#[test]
fn killed_server_gives_one_callback_over_xnet() {
    killed_server_one_callback(NET);
}

fn killed_server_one_callback(info: &str) {
    let Some(client) = class_at(info) else {
        return;
    };
    client.register_rpc::<Echo>(None);
    client.register_rpc::<Hang>(None);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_server_main",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("HG_OFI_CHILD", info)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let l = lines.next().expect("child exited").unwrap();
        // libtest may print "test child_server_main ... " on the same line first.
        if let Some(i) = l.find("ADDR ") {
            break l[i + 5..].trim().to_string();
        }
    };
    let cctx = client.context_create().unwrap();
    let saddr = client.addr_lookup(&addr).unwrap();
    // Two processes: a normal round trip first.
    assert_eq!(echo(&cctx, &[], &saddr, vec![9; 100]), Ok(vec![9; 100]));

    // Then an RPC the server holds, and the server dies.
    let calls = Arc::new(Mutex::new(Vec::new()));
    let c = calls.clone();
    let h = cctx.create(&saddr, Hang::id()).unwrap();
    h.forward_timed(&HangIn { x: 1 }, Duration::from_secs(4), move |_, r| {
        c.lock().unwrap().push(r)
    })
    .unwrap();
    for _ in 0..50 {
        cctx.progress(Duration::from_millis(2)).unwrap();
        cctx.trigger(usize::MAX).unwrap();
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drive(&[&cctx], || !calls.lock().unwrap().is_empty());
    // A little longer: no second callback.
    let end = Instant::now() + Duration::from_millis(300);
    while Instant::now() < end {
        cctx.progress(Duration::from_millis(10)).unwrap();
        cctx.trigger(usize::MAX).unwrap();
    }
    let calls = calls.lock().unwrap();
    assert_eq!(calls.len(), 1);
    assert!(calls[0].is_err(), "{:?}", calls[0]);
    client.addr_set_remove(&saddr).unwrap();
}

/// Counts the `tracing` events whose message starts with a given text.
#[derive(Clone)]
struct EventCount(&'static str, Arc<Mutex<usize>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for EventCount {
    fn on_event(&self, ev: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Msg(String);
        impl tracing::field::Visit for Msg {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" {
                    self.0 = format!("{v:?}");
                }
            }
        }
        let mut m = Msg(String::new());
        ev.record(&mut m);
        if m.0.starts_with(self.0) {
            *self.1.lock().unwrap() += 1;
        }
    }
}

/// Forwards that time out get one `Timeout` callback each; the replies the server sends
/// afterwards are discarded by NA (one event each), not left in libfabric for later receives,
/// and the RPCs after them go through.
#[test]
fn late_replies_after_timeouts_are_discarded() {
    late_replies_discarded(RXM);
}

/// As [`late_replies_after_timeouts_are_discarded`] over XNET, which holds a connection's later
/// messages behind one that meets no receive: the late replies must be dropped for the RPCs
/// after them to arrive at all.
#[test]
fn late_replies_after_timeouts_are_discarded_over_xnet() {
    late_replies_discarded(NET);
}

fn late_replies_discarded(info: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    let (Some(server), Some(client)) = (class_at(info), class_at(info)) else {
        return;
    };
    let held = Arc::new(Mutex::new(Vec::new()));
    let hd = held.clone();
    server.register_rpc::<Late>(Some(Arc::new(move |h: Handle| {
        hd.lock().unwrap().push(h);
        Ok(())
    })));
    common::serve_echo(&server);
    client.register_rpc::<Late>(None);
    client.register_rpc::<Echo>(None);
    let sctx = server.context_create().unwrap();
    let cctx = client.context_create().unwrap();
    let saddr = common::lookup(&client, &server, &sctx);
    let discarded = Arc::new(Mutex::new(0));
    let sub = tracing_subscriber::registry()
        .with(EventCount(
            "na.ofi: late expected message",
            discarded.clone(),
        ))
        .with(tracing_subscriber::filter::LevelFilter::DEBUG);
    tracing::subscriber::with_default(sub, || {
        const N: u32 = 20;
        // Connected first (a first connection takes tens of milliseconds), so each request
        // leaves at its forward and reaches the server whatever its deadline does.
        assert_eq!(echo(&cctx, &[&sctx], &saddr, vec![9]), Ok(vec![9]));
        let results = Arc::new(Mutex::new(Vec::new()));
        for i in 0..N {
            let h = cctx.create(&saddr, Late::id()).unwrap();
            let r = results.clone();
            h.forward_timed(
                &LateIn { x: i },
                Duration::from_millis(100),
                move |_, res| r.lock().unwrap().push(res),
            )
            .unwrap();
        }
        drive(&[&cctx, &sctx], || {
            results.lock().unwrap().len() == N as usize && held.lock().unwrap().len() == N as usize
        });
        assert!(results
            .lock()
            .unwrap()
            .iter()
            .all(|r| *r == Err(Error::Timeout)));
        // Now the server answers all of them.
        let sent = Arc::new(Mutex::new(0));
        for h in held.lock().unwrap().drain(..) {
            let x = h.get_input::<LateIn>().unwrap().x;
            let s = sent.clone();
            h.respond(&LateOut { x }, move |r| {
                r.unwrap();
                *s.lock().unwrap() += 1;
            })
            .unwrap();
        }
        drive(&[&cctx, &sctx], || {
            *sent.lock().unwrap() == N as usize && *discarded.lock().unwrap() == N as usize
        });
        // No second callback for any forward, and RPCs after the late replies go through.
        assert_eq!(results.lock().unwrap().len(), N as usize);
        for i in 0..5u8 {
            assert_eq!(echo(&cctx, &[&sctx], &saddr, vec![i; 3]), Ok(vec![i; 3]));
        }
    });
    assert_eq!(*discarded.lock().unwrap(), 20);
}
