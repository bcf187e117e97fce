//! RPCs over na's inproc plugin: forward/respond, overflow, one-way, self, bulk, cancel, timeout, teardown, bad input.

use hg::na::plugins::inproc::{Fabric, FaultConfig};
use hg::na::{self, Access, MsgBuf};
use hg::{BulkOp, BulkRef, Class, Context, Error, Handle, InitOptions, Rpc};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

hg::rpc! {
    /// Echo: returns the payload and the request's origin context id.
    pub rpc Echo(EchoIn, EchoOut) {
        input {
            /// Payload.
            pub data: Vec<u8>,
            /// A tag the handler adds to rc.
            pub n: u32,
        }
        output {
            /// n + 1.
            pub rc: u32,
            /// The payload back.
            pub data: Vec<u8>,
        }
    }
}

hg::rpc! {
    /// Pull the client's bulk region, push back its bytes plus one.
    pub rpc BulkRpc(BulkIn, BulkOut) {
        input {
            /// The client's region.
            pub bulk: BulkRef,
            /// Its length.
            pub len: u64,
        }
        output {
            /// Sum of the pulled bytes.
            pub sum: u64,
        }
    }
}

struct Pair {
    _fabric: Fabric,
    server: Class,
    client: Class,
    sctx: Context,
    cctx: Context,
    saddr: na::Addr,
}

fn echo_handler() -> hg::Handler {
    Arc::new(|h: Handle| {
        let input: EchoIn = h.get_input()?;
        let out = EchoOut {
            rc: input.n + 1,
            data: input.data,
        };
        h.respond(&out, |r| assert_eq!(r, Ok(())))
    })
}

fn pair_opt(opts: InitOptions) -> Pair {
    let fabric = Fabric::new(FaultConfig::none());
    let server = Class::from_na(fabric.class(true), opts.clone());
    let client = Class::from_na(fabric.class(false), opts);
    server.register_rpc::<Echo>(Some(echo_handler()));
    client.register_rpc::<Echo>(None);
    let sctx = server.context_create().unwrap();
    let cctx = client.context_create().unwrap();
    let saddr = sctx.self_addr();
    Pair {
        _fabric: fabric,
        server,
        client,
        sctx,
        cctx,
        saddr,
    }
}

fn pair() -> Pair {
    pair_opt(InitOptions {
        request_post_init: 16,
        ..InitOptions::default()
    })
}

/// Drives both contexts from this thread until `done`; a generous hang guard only.
fn drive(ctxs: &[&Context], done: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(60);
    while !done() {
        for c in ctxs {
            c.progress(Duration::ZERO).unwrap();
            c.trigger(usize::MAX).unwrap();
        }
        assert!(Instant::now() < end, "hang");
    }
}

/// One blocking `progress` of up to 30 s that work handed off from another thread must wake
/// (asserted to return well before its timeout).
fn progress_until_woken(ctx: &Context) {
    let start = Instant::now();
    ctx.progress(Duration::from_secs(30)).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "progress was not woken"
    );
}

type Slot<T> = Arc<Mutex<Vec<T>>>;

fn slot<T>() -> Slot<T> {
    Arc::new(Mutex::new(Vec::new()))
}

fn forward_echo(p: &Pair, data: Vec<u8>, n: u32) -> Slot<(Result<()>, Option<EchoOut>)> {
    forward_on(&p.cctx.create(&p.saddr, Echo::id()).unwrap(), data, n)
}

/// Forwards an echo on `h`; its callback records the result and the decoded output.
fn forward_on(h: &Handle, data: Vec<u8>, n: u32) -> Slot<(Result<()>, Option<EchoOut>)> {
    let got = slot();
    let g = got.clone();
    h.forward(&EchoIn { data, n }, move |h, r| {
        let out = r.ok().and_then(|_| h.get_output::<EchoOut>().ok());
        g.lock().unwrap().push((r, out));
    })
    .unwrap();
    got
}

type Result<T> = std::result::Result<T, Error>;

#[test]
fn forward_respond_round_trip() {
    let p = pair();
    let got = forward_echo(&p, vec![1, 2, 3], 41);
    drive(&[&p.sctx, &p.cctx], || !got.lock().unwrap().is_empty());
    let v = got.lock().unwrap();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].0, Ok(()));
    assert_eq!(
        v[0].1,
        Some(EchoOut {
            rc: 42,
            data: vec![1, 2, 3]
        })
    );
}

/// `get_input_into` / `get_output_into`: a handler decodes every request into one kept input
/// value and a client every reply into one kept output, each the same as `get_input` /
/// `get_output` would give; the wrong type is `InvalidArg` and leaves the value as it was.
#[test]
fn inputs_and_outputs_decode_into_kept_values() {
    let fabric = Fabric::new(FaultConfig::none());
    let server = Class::from_na(fabric.class(true), InitOptions::default());
    let client = Class::from_na(fabric.class(false), InitOptions::default());
    let kept = Arc::new(Mutex::new(EchoIn::default()));
    let k = kept.clone();
    server.register_rpc::<Echo>(Some(Arc::new(move |h: Handle| {
        let mut input = k.lock().unwrap();
        let mut wrong = EchoOut {
            rc: 7,
            data: vec![7],
        };
        assert_eq!(h.get_input_into(&mut wrong), Err(Error::InvalidArg));
        assert_eq!(
            wrong,
            EchoOut {
                rc: 7,
                data: vec![7]
            }
        );
        h.get_input_into(&mut *input)?;
        assert_eq!(h.get_input::<EchoIn>()?, *input);
        let out = EchoOut {
            rc: input.n + 1,
            data: input.data.clone(),
        };
        h.respond(&out, |_| {})
    })));
    client.register_rpc::<Echo>(None);
    let sctx = server.context_create().unwrap();
    let cctx = client.context_create().unwrap();
    let h = cctx.create(&sctx.self_addr(), Echo::id()).unwrap();
    let mut out = EchoOut::default();
    for (i, len) in [40usize, 3, 0, 200, 17].into_iter().enumerate() {
        let data: Vec<u8> = (0..len).map(|b| (b + i) as u8).collect();
        let got = forward_on(&h, data.clone(), i as u32);
        drive(&[&sctx, &cctx], || !got.lock().unwrap().is_empty());
        assert_eq!(got.lock().unwrap()[0].0, Ok(()));
        h.get_output_into(&mut out).unwrap();
        assert_eq!(
            out,
            EchoOut {
                rc: i as u32 + 1,
                data: data.clone()
            }
        );
        assert_eq!(*kept.lock().unwrap(), EchoIn { data, n: i as u32 });
        let mut wrong = EchoIn {
            data: vec![1],
            n: 1,
        };
        assert_eq!(h.get_output_into(&mut wrong), Err(Error::InvalidArg));
        assert_eq!(
            wrong,
            EchoIn {
                data: vec![1],
                n: 1
            }
        );
    }
}

/// A plugin whose inject limit is above its unexpected (or expected) message size: a request
/// or reply between the two is neither injected from the stack nor cut, but goes the way its
/// size says (an overflow here), and every payload comes back whole.
#[test]
fn messages_over_the_eager_size_but_under_the_inject_limit() {
    let fabric = Fabric::new(FaultConfig::none());
    let na_opts = na::InitOptions {
        max_unexpected_size: 192,
        max_expected_size: 176,
        max_inject_size: 4096,
        ..na::InitOptions::default()
    };
    let server = Class::from_na(fabric.class_opt(true, &na_opts), InitOptions::default());
    let client = Class::from_na(fabric.class_opt(false, &na_opts), InitOptions::default());
    server.register_rpc::<Echo>(Some(echo_handler()));
    client.register_rpc::<Echo>(None);
    let sctx = server.context_create().unwrap();
    let cctx = client.context_create().unwrap();
    let h = cctx.create(&sctx.self_addr(), Echo::id()).unwrap();
    // From well under both sizes to well over them (and the 256-byte stack buffer).
    for (i, len) in [1usize, 100, 140, 150, 160, 170, 180, 240, 400]
        .into_iter()
        .enumerate()
    {
        let data: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
        let got = forward_on(&h, data.clone(), i as u32);
        drive(&[&sctx, &cctx], || !got.lock().unwrap().is_empty());
        let (r, out) = got.lock().unwrap().pop().unwrap();
        assert_eq!(r, Ok(()), "payload of {len} bytes");
        assert_eq!(
            out,
            Some(EchoOut {
                rc: i as u32 + 1,
                data
            })
        );
    }
}

#[test]
fn handler_sees_info_and_context_data() {
    let p = pair();
    p.sctx.set_data(Arc::new(String::from("crt_context")));
    let seen = slot();
    let s = seen.clone();
    let caddr = p.cctx.self_addr();
    p.server
        .register_rpc::<Echo>(Some(Arc::new(move |h: Handle| {
            let data = h.context_data().and_then(|d| d.downcast::<String>().ok());
            s.lock()
                .unwrap()
                .push((h.info(), data.map(|d| (*d).clone())));
            h.respond(&EchoOut::default(), |_| {})
        })));
    let got = forward_echo(&p, vec![], 0);
    drive(&[&p.sctx, &p.cctx], || !got.lock().unwrap().is_empty());
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0.addr, caddr);
    assert_eq!(seen[0].0.id, Echo::id());
    assert_eq!(seen[0].0.context_id, 0);
    assert_eq!(seen[0].1.as_deref(), Some("crt_context"));
    assert_eq!(
        p.sctx.data_as::<String>().as_deref().map(String::as_str),
        Some("crt_context")
    );
}

#[test]
fn unknown_id_is_answered_noentry_and_server_keeps_serving() {
    let p = pair();
    p.client.register::<(), ()>(0xDEAD, None);
    let got = slot();
    let h = p.cctx.create(&p.saddr, 0xDEAD).unwrap();
    let g = got.clone();
    h.forward(&(), move |_, r| g.lock().unwrap().push(r))
        .unwrap();
    drive(&[&p.sctx, &p.cctx], || !got.lock().unwrap().is_empty());
    assert_eq!(*got.lock().unwrap(), vec![Err(Error::NoEntry)]);
    let ok = forward_echo(&p, vec![9], 1);
    drive(&[&p.sctx, &p.cctx], || !ok.lock().unwrap().is_empty());
    assert_eq!(ok.lock().unwrap()[0].0, Ok(()));
}

#[test]
fn handler_error_and_panic_answer_the_client() {
    let p = pair();
    p.server.register_rpc::<Echo>(Some(Arc::new(|h: Handle| {
        let i: EchoIn = h.get_input()?;
        if i.n == 1 {
            return Err(Error::Busy);
        }
        panic!("handler bug");
    })));
    let a = forward_echo(&p, vec![], 1);
    let b = forward_echo(&p, vec![], 2);
    drive(&[&p.sctx, &p.cctx], || {
        !a.lock().unwrap().is_empty() && !b.lock().unwrap().is_empty()
    });
    assert_eq!(a.lock().unwrap()[0].0, Err(Error::Busy));
    assert_eq!(b.lock().unwrap()[0].0, Err(Error::OtherError));
}

#[test]
fn one_way_rpc_runs_handler_without_reply() {
    let p = pair();
    let ran = Arc::new(AtomicUsize::new(0));
    let r2 = ran.clone();
    p.server
        .register_rpc::<Echo>(Some(Arc::new(move |h: Handle| {
            let _: EchoIn = h.get_input()?;
            r2.fetch_add(1, Ordering::SeqCst);
            // Responding on a one-way RPC sends nothing and completes at once.
            h.respond(&EchoOut::default(), |r| assert_eq!(r, Ok(())))
        })));
    p.server.disable_response(Echo::id(), true).unwrap();
    p.client.disable_response(Echo::id(), true).unwrap();
    let got = forward_echo(&p, vec![5; 10], 0);
    drive(&[&p.sctx, &p.cctx], || {
        !got.lock().unwrap().is_empty() && ran.load(Ordering::SeqCst) == 1
    });
    assert_eq!(got.lock().unwrap()[0].0, Ok(()));
    // No reply, so no output to read.
    assert!(got.lock().unwrap()[0].1.is_none());
}

#[test]
fn overflow_both_ways() {
    let p = pair();
    // Far above the 4 KiB eager and expected sizes: both directions go by RMA.
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let got = forward_echo(&p, data.clone(), 7);
    drive(&[&p.sctx, &p.cctx], || !got.lock().unwrap().is_empty());
    let v = got.lock().unwrap();
    assert_eq!(v[0].0, Ok(()));
    let out = v[0].1.as_ref().unwrap();
    assert_eq!(out.rc, 8);
    assert_eq!(out.data, data);
}

#[test]
fn overflow_beyond_the_maximum_is_msgsize_on_both_sides() {
    let p = pair_opt(InitOptions {
        request_post_init: 8,
        max_overflow_size: 64 << 10,
        ..InitOptions::default()
    });
    // Input too large: the forward does not start.
    let h = p.cctx.create(&p.saddr, Echo::id()).unwrap();
    let r = h.forward(
        &EchoIn {
            data: vec![0; 100 << 10],
            n: 0,
        },
        |_, _| panic!("must not run"),
    );
    assert_eq!(r, Err(Error::MsgSize));
    // Output too large: respond fails on the server, the client still gets an answer.
    let resp = slot();
    let r2 = resp.clone();
    p.server
        .register_rpc::<Echo>(Some(Arc::new(move |h: Handle| {
            let r = h.respond(
                &EchoOut {
                    rc: 0,
                    data: vec![1; 100 << 10],
                },
                |_| {},
            );
            r2.lock().unwrap().push(r);
            Ok(())
        })));
    let got = forward_echo(&p, vec![], 0);
    drive(&[&p.sctx, &p.cctx], || !got.lock().unwrap().is_empty());
    assert_eq!(*resp.lock().unwrap(), vec![Err(Error::MsgSize)]);
    assert_eq!(got.lock().unwrap()[0].0, Err(Error::MsgSize));
}

#[test]
fn forward_to_self() {
    let p = pair();
    let h = p.sctx.create(&p.saddr, Echo::id()).unwrap();
    let got = forward_on(&h, vec![3], 2);
    drive(&[&p.sctx], || !got.lock().unwrap().is_empty());
    let v = got.lock().unwrap();
    assert_eq!(v[0].0, Ok(()));
    assert_eq!(v[0].1.as_ref().unwrap().rc, 3);
}

#[test]
fn many_in_flight_at_one_server() {
    let p = pair_opt(InitOptions {
        request_post_init: 512,
        ..InitOptions::default()
    });
    let done = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for i in 0..600u32 {
        let h = p.cctx.create(&p.saddr, Echo::id()).unwrap();
        let d = done.clone();
        h.forward(&EchoIn { data: vec![], n: i }, move |h, r| {
            assert_eq!(r, Ok(()));
            assert_eq!(h.get_output::<EchoOut>().unwrap().rc, i + 1);
            d.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        handles.push(h);
    }
    drive(&[&p.sctx, &p.cctx], || done.load(Ordering::SeqCst) == 600);
    // Completed forwards hold no reference to their handle any more.
    assert!(handles.iter().all(|h| h.ref_count() == 1));
}

#[test]
fn timeout_then_late_reply_is_dropped() {
    let p = pair();
    let got = slot();
    let g = got.clone();
    let h = p.cctx.create(&p.saddr, Echo::id()).unwrap();
    h.forward_timed(
        &EchoIn::default(),
        Duration::from_millis(50),
        move |_, r| g.lock().unwrap().push(r),
    )
    .unwrap();
    // Only the client makes progress: the server never answers in time.
    drive(&[&p.cctx], || !got.lock().unwrap().is_empty());
    assert_eq!(*got.lock().unwrap(), vec![Err(Error::Timeout)]);
    // Now the server answers; the late reply must not produce a second callback.
    let end = Instant::now() + Duration::from_millis(300);
    while Instant::now() < end {
        for c in [&p.sctx, &p.cctx] {
            c.progress(Duration::ZERO).unwrap();
            c.trigger(usize::MAX).unwrap();
        }
    }
    assert_eq!(got.lock().unwrap().len(), 1);
    // The handle is reusable.
    let ok = slot();
    let o = ok.clone();
    h.forward(&EchoIn::default(), move |_, r| o.lock().unwrap().push(r))
        .unwrap();
    drive(&[&p.sctx, &p.cctx], || !ok.lock().unwrap().is_empty());
    assert_eq!(*ok.lock().unwrap(), vec![Ok(())]);
}

#[test]
fn cancel_completes_once() {
    let p = pair();
    let got = slot();
    let g = got.clone();
    let h = p.cctx.create(&p.saddr, Echo::id()).unwrap();
    h.forward(&EchoIn::default(), move |_, r| g.lock().unwrap().push(r))
        .unwrap();
    assert_eq!(h.forward(&EchoIn::default(), |_, _| {}), Err(Error::Busy));
    assert_eq!(h.reset(&p.saddr, Echo::id()), Err(Error::Busy));
    p.cctx.progress(Duration::ZERO).unwrap();
    h.cancel();
    drive(&[&p.cctx], || !got.lock().unwrap().is_empty());
    // Whether the request had left or not, the reply can no longer arrive: Canceled.
    assert_eq!(*got.lock().unwrap(), vec![Err(Error::Canceled)]);
    for _ in 0..20 {
        for c in [&p.sctx, &p.cctx] {
            c.progress(Duration::ZERO).unwrap();
            c.trigger(usize::MAX).unwrap();
        }
    }
    assert_eq!(got.lock().unwrap().len(), 1);
}

#[test]
fn teardown_completes_in_flight_forwards_once() {
    let p = pair();
    let got = slot();
    for _ in 0..3 {
        let g = got.clone();
        let h = p.cctx.create(&p.saddr, Echo::id()).unwrap();
        h.forward(&EchoIn::default(), move |_, r| g.lock().unwrap().push(r))
            .unwrap();
    }
    p.cctx.progress(Duration::ZERO).unwrap();
    let Pair { cctx, .. } = p;
    cctx.close();
    assert_eq!(*got.lock().unwrap(), vec![Err(Error::Canceled); 3]);
}

/// Forwards from another thread race the context's close: every forward that was accepted
/// (`Ok`) gets exactly one callback, wherever the race fell (posted before, drained by the close,
/// or refused after it and failed on the forwarding thread), and none is left behind.
#[test]
fn forwards_racing_close_from_another_thread_complete_once() {
    for round in 0..20 {
        let p = pair();
        let accepted = Arc::new(AtomicUsize::new(0));
        let called = Arc::new(AtomicUsize::new(0));
        let h = p.cctx.create(&p.saddr, Echo::id()).unwrap();
        let (a, c) = (accepted.clone(), called.clone());
        let t = std::thread::spawn(move || {
            // Until the context refuses new work.
            for _ in 0..100_000 {
                let c = c.clone();
                let r = h.forward(&EchoIn::default(), move |_, _| {
                    c.fetch_add(1, Ordering::SeqCst);
                });
                match r {
                    Ok(()) => a.fetch_add(1, Ordering::SeqCst),
                    Err(Error::Canceled) => break,
                    // The previous forward on this handle is still in flight.
                    Err(Error::Busy) => continue,
                    Err(e) => panic!("round {round}: {e:?}"),
                };
            }
        });
        for _ in 0..(round * 3) {
            p.cctx.progress(Duration::ZERO).unwrap();
            p.cctx.trigger(usize::MAX).unwrap();
        }
        let Pair { cctx, .. } = p;
        cctx.close();
        t.join().unwrap();
        assert_eq!(
            called.load(Ordering::SeqCst),
            accepted.load(Ordering::SeqCst),
            "round {round}"
        );
    }
}

#[test]
fn dead_server_gives_one_callback() {
    let p = pair();
    let got = slot();
    let g = got.clone();
    let h = p.cctx.create(&p.saddr, Echo::id()).unwrap();
    h.forward_timed(&EchoIn::default(), Duration::from_secs(2), move |_, r| {
        g.lock().unwrap().push(r)
    })
    .unwrap();
    p._fabric.vanish(&p.saddr).unwrap();
    drive(&[&p.cctx], || !got.lock().unwrap().is_empty());
    let r = got.lock().unwrap()[0];
    assert!(
        matches!(r, Err(Error::HostUnreach) | Err(Error::Timeout)),
        "{r:?}"
    );
    p.client.addr_set_remove(&p.saddr).unwrap();
}

#[test]
fn forward_from_another_thread_wakes_blocked_progress() {
    let p = pair();
    let h = p.cctx.create(&p.saddr, Echo::id()).unwrap();
    let got = slot();
    let g = got.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        h.forward(&EchoIn::default(), move |_, r| g.lock().unwrap().push(r))
            .unwrap();
    });
    progress_until_woken(&p.cctx);
    t.join().unwrap();
    drive(&[&p.sctx, &p.cctx], || !got.lock().unwrap().is_empty());
    assert_eq!(*got.lock().unwrap(), vec![Ok(())]);
}

#[test]
fn forward_and_respond_post_inside_the_call_when_no_progress_holds_the_context() {
    let p = pair();
    let handled = Arc::new(AtomicUsize::new(0));
    let h2 = handled.clone();
    p.server
        .register_rpc::<Echo>(Some(Arc::new(move |h: Handle| {
            let i: EchoIn = h.get_input()?;
            h.respond(
                &EchoOut {
                    rc: i.n + 1,
                    data: i.data,
                },
                |_| {},
            )?;
            h2.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })));
    let h = p.cctx.create(&p.saddr, Echo::id()).unwrap();
    let got = slot();
    let g = got.clone();
    h.forward(
        &EchoIn {
            data: vec![5; 3],
            n: 1,
        },
        move |h, r| {
            g.lock()
                .unwrap()
                .push(r.and_then(|()| h.get_output::<EchoOut>()).map(|o| o.rc));
        },
    )
    .unwrap();
    // The client is never driven here: the request reached the server because forward sent it.
    drive(&[&p.sctx], || handled.load(Ordering::SeqCst) == 1);
    // And the reply is already on its way back: the server is not driven any more.
    drive(&[&p.cctx], || !got.lock().unwrap().is_empty());
    assert_eq!(*got.lock().unwrap(), vec![Ok(2)]);
}

/// A respond made on another thread while the server's progress holds NA is handed to that
/// progress, which wakes and sends it (injected: the reply is small); the client gets the reply
/// and the respond's callback runs once, in the server's trigger.
#[test]
fn respond_handed_to_a_blocked_progress_is_sent_and_called_back_once() {
    let p = pair();
    let held = slot();
    let hh = held.clone();
    p.server
        .register_rpc::<Echo>(Some(Arc::new(move |h: Handle| {
            hh.lock().unwrap().push(h);
            Ok(())
        })));
    let got = forward_echo(&p, vec![1, 2, 3], 7);
    drive(&[&p.sctx, &p.cctx], || !held.lock().unwrap().is_empty());
    let sh: Handle = held.lock().unwrap().pop().unwrap();
    let calls = slot();
    let c = calls.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        let i: EchoIn = sh.get_input().unwrap();
        let out = EchoOut {
            rc: i.n + 1,
            data: i.data,
        };
        sh.respond(&out, move |r| c.lock().unwrap().push(r))
            .unwrap();
    });
    progress_until_woken(&p.sctx);
    t.join().unwrap();
    drive(&[&p.sctx, &p.cctx], || {
        !got.lock().unwrap().is_empty() && !calls.lock().unwrap().is_empty()
    });
    // 50 ms more of both sides: a second callback would show up here.
    let end = Instant::now() + Duration::from_millis(50);
    while Instant::now() < end {
        for c in [&p.sctx, &p.cctx] {
            c.progress(Duration::from_millis(1)).unwrap();
            c.trigger(usize::MAX).unwrap();
        }
    }
    assert_eq!(*calls.lock().unwrap(), vec![Ok(())]);
    let got = got.lock().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, Ok(()));
    let out = got[0].1.as_ref().unwrap();
    assert_eq!((out.rc, out.data.clone()), (8, vec![1, 2, 3]));
}

#[test]
fn reentrant_progress_is_a_typed_error() {
    let p = pair();
    let ctx = Arc::new(p.cctx);
    let c2 = ctx.clone();
    let seen = slot();
    let s = seen.clone();
    let h = ctx.create(&p.saddr, Echo::id()).unwrap();
    h.forward(&EchoIn::default(), move |_, _| {
        s.lock().unwrap().push(c2.progress(Duration::ZERO).err());
    })
    .unwrap();
    drive(&[&p.sctx, &ctx], || !seen.lock().unwrap().is_empty());
    assert_eq!(*seen.lock().unwrap(), vec![Some(Error::Busy)]);
}

#[test]
fn bulk_pull_and_push() {
    let p = pair();
    let server_ctx = p.sctx.as_ref();
    p.server
        .register_rpc::<BulkRpc>(Some(Arc::new(move |h: Handle| {
            let input: BulkIn = h.get_input()?;
            let desc = input.bulk.desc().cloned().ok_or(Error::InvalidArg)?;
            let class = h.context().class().clone();
            let local =
                hg::Bulk::create(&class, vec![vec![0; input.len as usize]], Access::READWRITE)?;
            let origin = h.info().addr;
            let ctx = server_ctx.clone();
            let h2 = h.clone();
            let l2 = local.clone();
            let d2 = desc.clone();
            let o2 = origin.clone();
            ctx.clone().bulk_transfer(
                BulkOp::Pull,
                &origin,
                &desc,
                0,
                &local,
                0,
                input.len,
                move |r| {
                    r.unwrap();
                    let bytes = l2.to_vec();
                    let sum = bytes.iter().map(|b| u64::from(*b)).sum();
                    let plus: Vec<u8> = bytes.iter().map(|b| b.wrapping_add(1)).collect();
                    l2.write_at(0, &plus).unwrap();
                    // Push the incremented bytes back into the client's region at offset 0.
                    ctx.bulk_transfer(
                        BulkOp::Push,
                        &o2,
                        &d2,
                        0,
                        &l2,
                        0,
                        plus.len() as u64,
                        move |r| {
                            r.unwrap();
                            h2.respond(&BulkOut { sum }, |_| {}).unwrap();
                        },
                    )
                    .unwrap();
                },
            )?;
            Ok(())
        })));
    p.client.register_rpc::<BulkRpc>(None);
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 200) as u8).collect();
    let expect_sum: u64 = data.iter().map(|b| u64::from(*b)).sum();
    let bulk = hg::Bulk::create(&p.client, vec![data.clone()], Access::READWRITE).unwrap();
    let got = slot();
    let g = got.clone();
    let h = p.cctx.create(&p.saddr, BulkRpc::id()).unwrap();
    h.forward(
        &BulkIn {
            bulk: bulk.to_ref(),
            len: data.len() as u64,
        },
        move |h, r| {
            g.lock()
                .unwrap()
                .push(r.and_then(|()| h.get_output::<BulkOut>()))
        },
    )
    .unwrap();
    drive(&[&p.sctx, &p.cctx], || !got.lock().unwrap().is_empty());
    assert_eq!(got.lock().unwrap()[0], Ok(BulkOut { sum: expect_sum }));
    let after = bulk.to_vec();
    assert!(after
        .iter()
        .zip(&data)
        .all(|(a, d)| *a == d.wrapping_add(1)));
}

#[test]
fn bulk_transfer_checks_access_and_ranges() {
    let p = pair();
    let ro = hg::Bulk::create(&p.client, vec![vec![1; 16]], Access::READ_ONLY).unwrap();
    let local = hg::Bulk::create(&p.server, vec![vec![0; 16]], Access::READWRITE).unwrap();
    let caddr = p.cctx.self_addr();
    let r = p
        .sctx
        .bulk_transfer(BulkOp::Push, &caddr, ro.desc(), 0, &local, 0, 16, |_| {});
    assert_eq!(r, Err(Error::Permission));
    let r = p
        .sctx
        .bulk_transfer(BulkOp::Pull, &caddr, ro.desc(), 8, &local, 0, 16, |_| {});
    assert_eq!(r, Err(Error::InvalidArg));
}

#[test]
fn payload_checksums_end_to_end() {
    let p = pair_opt(InitOptions {
        request_post_init: 8,
        checksum_level: hg::ChecksumLevel::Payload,
        ..InitOptions::default()
    });
    let small = forward_echo(&p, vec![1; 100], 1);
    let big = forward_echo(&p, vec![2; 50_000], 2);
    drive(&[&p.sctx, &p.cctx], || {
        !small.lock().unwrap().is_empty() && !big.lock().unwrap().is_empty()
    });
    assert_eq!(
        small.lock().unwrap()[0].1.as_ref().unwrap().data,
        vec![1; 100]
    );
    assert_eq!(
        big.lock().unwrap()[0].1.as_ref().unwrap().data,
        vec![2; 50_000]
    );
}

/// Sends raw bytes (after the NA header) to the server's unexpected queue, optionally waiting
/// for a reply on `tag`; returns the reply's bytes if one came.
fn send_raw(
    p: &Pair,
    raw: &na::Context,
    bytes: &[u8],
    tag: u32,
    want_reply: bool,
) -> Option<Vec<u8>> {
    let uh = p.client.na().unexpected_header_size();
    let mut buf = MsgBuf::new(uh + bytes.len());
    raw.msg_init_unexpected(&mut buf);
    buf.as_mut_slice()[uh..].copy_from_slice(bytes);
    if want_reply {
        raw.recv_expected(MsgBuf::new(4096), &p.saddr, tag, 1);
    }
    raw.send_unexpected(buf, uh + bytes.len(), &p.saddr, tag, 2);
    let mut reply = None;
    let mut sent = false;
    let end = Instant::now() + Duration::from_secs(30);
    while !(sent && (reply.is_some() || !want_reply)) {
        p.sctx.progress(Duration::ZERO).unwrap();
        p.sctx.trigger(usize::MAX).unwrap();
        raw.progress(Duration::ZERO).unwrap();
        while let Some(c) = raw.pop() {
            match c.user {
                1 => reply = Some(c.buf.unwrap().as_slice()[..c.len].to_vec()),
                _ => sent = true,
            }
        }
        assert!(Instant::now() < end, "hang");
    }
    // Let the server process whatever arrived.
    for _ in 0..5 {
        p.sctx.progress(Duration::ZERO).unwrap();
        p.sctx.trigger(usize::MAX).unwrap();
    }
    reply
}

/// A plain 16-byte header written by `header` (given the buffer and the body's length), then
/// `body`.
fn with_header(body: &[u8], header: impl FnOnce(&mut [u8], usize) -> Result<usize>) -> Vec<u8> {
    let mut v = vec![0u8; 16 + body.len()];
    header(&mut v, body.len()).unwrap();
    v[16..].copy_from_slice(body);
    v
}

fn request(id: u64, flags: u8, body: &[u8]) -> Vec<u8> {
    with_header(body, |v, n| {
        let h = hg::header::RequestHeader {
            id,
            flags,
            cookie: 0,
        };
        hg::header::encode_request(&h, hg::ChecksumLevel::None, v, n)
    })
}

#[test]
fn bad_requests_are_typed_and_the_server_keeps_serving() {
    let p = pair();
    let raw = p.client.na().context_create(7).unwrap();
    let good_body = hg::proc::encode_to_vec(&EchoIn {
        data: vec![1, 2],
        n: 5,
    })
    .unwrap();
    let good = request(Echo::id(), 0, &good_body);

    // Unknown id: answered with ret 2 (HG_NOENTRY) in a 16-byte header.
    let reply = send_raw(&p, &raw, &request(0x1234, 0, &[]), 10, true).unwrap();
    assert_eq!(reply.len(), 16);
    assert_eq!(reply[0], 2);

    let mut bad_cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut b = good.clone();
    b[0] = 0xD6;
    bad_cases.push(("wrong magic", b));
    let mut b = good.clone();
    b[1] = 4;
    bad_cases.push(("other version", b));
    let mut b = good.clone();
    b[10] = 0x80;
    bad_cases.push(("checksum flag on a plain receiver", b));
    for bit in [0x04u8, 0x08, 0x10, 0x20, 0x40] {
        let mut b = good.clone();
        b[10] = bit;
        bad_cases.push(("unknown or internal flag", b));
    }
    bad_cases.push(("short header", good[..7].to_vec()));
    bad_cases.push(("empty", Vec::new()));
    let before = p.sctx.bad_requests();
    let n = bad_cases.len();
    for (what, bytes) in &bad_cases {
        let r = send_raw(&p, &raw, bytes, 11, false);
        assert!(r.is_none(), "{what}");
    }
    assert_eq!(
        p.sctx.bad_requests() - before,
        n,
        "each header-level fault counted once"
    );

    // MORE_DATA with a descriptor size near 2^32: the header is sound, so the client is told.
    let mut b = request(Echo::id(), 0x01, &(1u64 << 32).to_le_bytes());
    b.extend_from_slice(&[0; 8]);
    let reply = send_raw(&p, &raw, &b, 14, true).unwrap();
    assert_eq!(reply[0] as i32, Error::Overflow.code());
    assert_eq!(p.sctx.bad_requests() - before, n + 1);

    // Body faults reach the handler, whose get_input fails with a typed error that is answered.
    let mut truncated = good.clone();
    truncated.truncate(good.len() - 1);
    let mut huge_len = good.clone();
    huge_len[16..24].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
    let mut random = request(Echo::id(), 0, &[0u8; 40]);
    for (i, b) in random[16..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(97).wrapping_add(13);
    }
    for (what, bytes) in [
        ("truncated body", truncated),
        ("huge length field", huge_len),
        ("random body", random),
    ] {
        let reply = send_raw(&p, &raw, &bytes, 12, true).expect(what);
        let code = reply[0] as i8;
        assert!(
            code == Error::Overflow.code() as i8 || code == Error::ProtocolError.code() as i8,
            "{what}: {code}"
        );
    }

    // Then a good RPC is served as usual.
    let reply = send_raw(&p, &raw, &good, 13, true).unwrap();
    assert_eq!(reply[0], 0);
    let out: EchoOut = hg::proc::decode_exact(&reply[16..]).unwrap();
    assert_eq!(
        out,
        EchoOut {
            rc: 6,
            data: vec![1, 2]
        }
    );
    let ok = forward_echo(&p, vec![4], 4);
    drive(&[&p.sctx, &p.cctx], || !ok.lock().unwrap().is_empty());
    assert_eq!(ok.lock().unwrap()[0].0, Ok(()));
}

#[test]
fn wrong_types_are_refused() {
    let p = pair();
    let h = p.cctx.create(&p.saddr, Echo::id()).unwrap();
    assert_eq!(h.forward(&7u32, |_, _| {}), Err(Error::InvalidArg));
    let h = p.cctx.create(&p.saddr, 999).unwrap();
    assert_eq!(h.forward(&(), |_, _| {}), Err(Error::NoEntry));
    assert_eq!(h.get_output::<()>(), Err(Error::NoEntry));
    assert_eq!(h.get_input::<()>(), Err(Error::InvalidArg));
}

/// On the target, `get_input` and `respond` with types other than those registered are refused
/// (checked against the registration the request arrived under), and the handler may then
/// answer with the right ones.
#[test]
fn wrong_types_are_refused_on_the_target() {
    let fabric = Fabric::new(FaultConfig::none());
    let server = Class::from_na(fabric.class(true), InitOptions::default());
    let client = Class::from_na(fabric.class(false), InitOptions::default());
    let seen = slot();
    let s2 = seen.clone();
    server.register_rpc::<Echo>(Some(Arc::new(move |h: Handle| {
        let wrong_in = h.get_input::<u32>().err();
        let input: EchoIn = h.get_input()?;
        let wrong_out = h.respond(&7u32, |_| {}).err();
        s2.lock().unwrap().push((wrong_in, wrong_out));
        h.respond(
            &EchoOut {
                rc: input.n,
                data: input.data,
            },
            |r| assert_eq!(r, Ok(())),
        )
    })));
    client.register_rpc::<Echo>(None);
    let sctx = server.context_create().unwrap();
    let cctx = client.context_create().unwrap();
    let p = Pair {
        _fabric: fabric,
        saddr: sctx.self_addr(),
        server,
        client,
        sctx,
        cctx,
    };
    let got = forward_echo(&p, vec![9], 3);
    drive(&[&p.sctx, &p.cctx], || !got.lock().unwrap().is_empty());
    assert_eq!(
        *seen.lock().unwrap(),
        [(Some(Error::InvalidArg), Some(Error::InvalidArg))]
    );
    let (r, out) = got.lock().unwrap().pop().unwrap();
    assert_eq!(r, Ok(()));
    assert_eq!(
        out,
        Some(EchoOut {
            rc: 3,
            data: vec![9]
        })
    );
}

/// Seeded faults on every message (errors, drops, duplicates, truncation, corruption, reorder,
/// delay, exhaustion): every forward's callback runs exactly once, every `Ok` carries the right
/// output (payload checksums catch corruption), and the server keeps serving throughout.
#[test]
fn fault_injection_every_callback_exactly_once() {
    let mut bad_total = 0;
    for seed in [1u64, 7, 42] {
        let fabric = Fabric::new(FaultConfig {
            vanish: 0,
            ..FaultConfig::seeded(seed)
        });
        let opts = InitOptions {
            request_post_init: 32,
            checksum_level: hg::ChecksumLevel::Payload,
            ..InitOptions::default()
        };
        let server = Class::from_na(fabric.class(true), opts.clone());
        let client = Class::from_na(fabric.class(false), opts);
        server.register_rpc::<Echo>(Some(echo_handler()));
        client.register_rpc::<Echo>(None);
        let sctx = server.context_create().unwrap();
        let cctx = client.context_create().unwrap();
        let saddr = sctx.self_addr();
        let results: Slot<(u32, Result<()>)> = slot();
        const N: u32 = 120;
        let mut handles = Vec::new();
        for i in 0..N {
            let h = cctx.create(&saddr, Echo::id()).unwrap();
            let r = results.clone();
            let data = vec![i as u8; (i as usize * 37) % 300];
            h.forward_timed(
                &EchoIn {
                    data: data.clone(),
                    n: i,
                },
                Duration::from_millis(300),
                move |h, res| {
                    if res.is_ok() {
                        let out: EchoOut = h.get_output().unwrap();
                        assert_eq!((out.rc, &out.data), (i + 1, &data), "seed {seed}");
                    }
                    r.lock().unwrap().push((i, res));
                },
            )
            .unwrap();
            handles.push(h);
        }
        drive(&[&sctx, &cctx], || {
            results.lock().unwrap().len() >= N as usize
        });
        // A little longer: late replies, duplicates and delayed messages must not call again.
        for _ in 0..50 {
            for c in [&sctx, &cctx] {
                c.progress(Duration::ZERO).unwrap();
                c.trigger(usize::MAX).unwrap();
            }
        }
        let r = results.lock().unwrap();
        let mut ids: Vec<u32> = r.iter().map(|(i, _)| *i).collect();
        ids.sort();
        assert_eq!(
            ids,
            (0..N).collect::<Vec<_>>(),
            "seed {seed}: exactly once each"
        );
        let ok = r.iter().filter(|(_, x)| x.is_ok()).count();
        assert!(ok > 0, "seed {seed}: nothing got through");
        for (_, x) in r.iter() {
            if let Err(e) = x {
                assert!(
                    matches!(
                        e,
                        Error::Timeout
                            | Error::IoError
                            | Error::ChecksumError
                            | Error::Overflow
                            | Error::ProtocolError
                            | Error::Busy
                            | Error::InvalidArg
                            | Error::MsgSize
                    ),
                    "seed {seed}: unexpected {e:?}"
                );
            }
        }
        assert!(handles.iter().all(|h| h.ref_count() == 1));
        // Corrupted and truncated requests reached the server and were refused with a typed
        // error (counted), and it kept serving the rest.
        bad_total += sctx.bad_requests();
    }
    assert!(bad_total > 0, "fault injection never garbled a request");
}

/// Inputs and outputs are read where they arrived, and a handle keeps its message buffer until
/// it lets go of it: held handles' bytes must survive many later messages (which must land in
/// other buffers), and the context keeps its receives posted meanwhile.
#[test]
fn held_handles_keep_their_received_bytes_while_more_messages_arrive() {
    const N: u32 = 48;
    let p = pair_opt(InitOptions {
        request_post_init: 2,
        request_post_incr: 1,
        request_post_max: 4,
        ..InitOptions::default()
    });
    let pattern =
        |i: u32, len: usize| -> Vec<u8> { (0..len).map(|k| (i as usize * 31 + k) as u8).collect() };
    // The server keeps every request's handle without answering until all have arrived.
    let held: Slot<Handle> = slot();
    let h2 = held.clone();
    p.server
        .register_rpc::<Echo>(Some(Arc::new(move |h: Handle| {
            h2.lock().unwrap().push(h);
            Ok(())
        })));
    // The client keeps every handle (its output stays in its reply buffer) and reads nothing in
    // the callbacks.
    let done = Arc::new(AtomicUsize::new(0));
    let mut mine = Vec::new();
    for i in 0..N {
        let h = p.cctx.create(&p.saddr, Echo::id()).unwrap();
        let d = done.clone();
        h.forward(
            &EchoIn {
                data: pattern(i, 64 + i as usize),
                n: i,
            },
            move |_, r| {
                assert_eq!(r, Ok(()));
                d.fetch_add(1, Ordering::SeqCst);
            },
        )
        .unwrap();
        mine.push(h);
    }
    drive(&[&p.sctx, &p.cctx], || {
        held.lock().unwrap().len() == N as usize
    });
    // Every request's bytes are intact although all arrived while the others were held.
    let server_side: Vec<Handle> = std::mem::take(&mut *held.lock().unwrap());
    for h in &server_side {
        let i: EchoIn = h.get_input().unwrap();
        assert_eq!(
            i.data,
            pattern(i.n, 64 + i.n as usize),
            "request {} overwritten",
            i.n
        );
    }
    assert_eq!(
        p.sctx.posted_receives(),
        4,
        "receives not kept posted while handles held buffers"
    );
    // Answer each with a distinct output; the client keeps all its handles.
    for h in &server_side {
        let i: EchoIn = h.get_input().unwrap();
        let out = EchoOut {
            rc: i.n + 1,
            data: pattern(i.n + 1000, 80 + i.n as usize),
        };
        h.respond(&out, |r| assert_eq!(r, Ok(()))).unwrap();
    }
    drop(server_side);
    drive(&[&p.sctx, &p.cctx], || {
        done.load(Ordering::SeqCst) == N as usize
    });
    for (i, h) in mine.iter().enumerate() {
        let i = i as u32;
        let o: EchoOut = h.get_output().unwrap();
        assert_eq!(o.rc, i + 1);
        assert_eq!(
            o.data,
            pattern(i + 1000, 80 + i as usize),
            "reply {i} overwritten"
        );
    }
}

#[test]
fn unexpected_receives_grow_by_incr_up_to_the_cap() {
    let p = pair_opt(InitOptions {
        request_post_init: 2,
        request_post_incr: 2,
        request_post_max: 6,
        ..InitOptions::default()
    });
    p.sctx.progress(Duration::ZERO).unwrap();
    assert_eq!(p.sctx.posted_receives(), 2);
    let done = Arc::new(AtomicUsize::new(0));
    for i in 0..40u32 {
        let h = p.cctx.create(&p.saddr, Echo::id()).unwrap();
        let d = done.clone();
        h.forward(&EchoIn { data: vec![], n: i }, move |_, r| {
            assert_eq!(r, Ok(()));
            d.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    }
    drive(&[&p.sctx, &p.cctx], || done.load(Ordering::SeqCst) == 40);
    // Bursts larger than what was posted made it grow, never past the cap.
    assert_eq!(p.sctx.posted_receives(), 6);
}

#[test]
fn multi_context_server_routes_by_target_id() {
    let fabric = Fabric::new(FaultConfig::none());
    let opts = InitOptions {
        request_post_init: 4,
        ..InitOptions::default()
    };
    let server = Class::from_na(fabric.class(true), opts.clone());
    let client = Class::from_na(fabric.class(false), opts);
    let seen = slot();
    let s = seen.clone();
    server.register_rpc::<Echo>(Some(Arc::new(move |h: Handle| {
        s.lock()
            .unwrap()
            .push((h.info().context_id, h.context().id()));
        h.respond(&EchoOut::default(), |_| {})
    })));
    client.register_rpc::<Echo>(None);
    let s0 = server.context_create_id(0).unwrap();
    let s1 = server.context_create_id(1).unwrap();
    let c = client.context_create().unwrap();
    assert_eq!((s0.id(), s1.id()), (0, 1));
    let got = slot();
    for (ctx, id) in [(&s0, 0u8), (&s1, 1u8)] {
        let h = c.create(&ctx.self_addr(), Echo::id()).unwrap();
        h.set_target_id(id);
        let g = got.clone();
        h.forward(&EchoIn::default(), move |_, r| g.lock().unwrap().push(r))
            .unwrap();
    }
    drive(&[&s0, &s1, &c], || got.lock().unwrap().len() == 2);
    assert_eq!(*got.lock().unwrap(), vec![Ok(()), Ok(())]);
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    // Each request reached the context it was addressed to, carrying that id as its cookie.
    assert_eq!(seen, vec![(0, 0), (1, 1)]);
}

/// A handle reads its RPC's registration once and keeps it while the registry is unchanged;
/// every later change (deregister, register again with other types, one-way) is seen by its
/// next forward, as it is by a handle created after the change.
#[test]
fn registry_changes_reach_existing_handles() {
    let p = pair();
    let h = p.cctx.create(&p.saddr, Echo::id()).unwrap();
    let unregistered = p.cctx.create(&p.saddr, 0xDEAD).unwrap();
    let round_trip = |h: &Handle| {
        let got = forward_on(h, vec![1], 1);
        drive(&[&p.sctx, &p.cctx], || !got.lock().unwrap().is_empty());
        let last = got.lock().unwrap().pop().unwrap();
        last
    };
    let (r, out) = round_trip(&h);
    assert_eq!((r, out.map(|o| o.rc)), (Ok(()), Some(2)));
    assert_eq!(
        unregistered.forward(&EchoIn::default(), |_, _| {}),
        Err(Error::NoEntry)
    );

    p.client.deregister(Echo::id()).unwrap();
    assert_eq!(
        h.forward(&EchoIn::default(), |_, _| {}),
        Err(Error::NoEntry)
    );

    // Registered again with another input type: the old one is refused, the new one goes.
    p.client.register::<u32, EchoOut>(Echo::id(), None);
    assert_eq!(
        h.forward(&EchoIn::default(), |_, _| {}),
        Err(Error::InvalidArg)
    );
    // Forwards that did not start leave the last reply readable.
    assert_eq!(h.get_output::<EchoOut>().map(|o| o.rc), Ok(2));
    p.client.register_rpc::<Echo>(None);
    let (r, _) = round_trip(&h);
    assert_eq!(r, Ok(()));

    // Registered again with another output type: the reply no longer decodes as EchoOut.
    p.client.register::<EchoIn, u32>(Echo::id(), None);
    let (r, out) = round_trip(&h);
    assert_eq!((r, out), (Ok(()), None));
    p.client.register_rpc::<Echo>(None);

    // Made one-way on both sides: the same handle's next forward completes without a reply.
    p.server.disable_response(Echo::id(), true).unwrap();
    p.client.disable_response(Echo::id(), true).unwrap();
    let (r, out) = round_trip(&h);
    assert_eq!((r, out), (Ok(()), None));

    // An id registered after its handle was created.
    p.client.register::<EchoIn, EchoOut>(0xDEAD, None);
    let got = slot();
    let g = got.clone();
    unregistered
        .forward(&EchoIn::default(), move |_, r| g.lock().unwrap().push(r))
        .unwrap();
    drive(&[&p.sctx, &p.cctx], || !got.lock().unwrap().is_empty());
    let r = got.lock().unwrap().pop().unwrap();
    // The server does not know 0xDEAD: it answers NoEntry.
    assert_eq!(r, Err(Error::NoEntry));
}

/// Whether a handle's address is its context's own is settled at create and again at reset:
/// a reset to the own address takes the self path (here the client has no handler, which
/// that path reports at once), a reset back goes over NA again.
#[test]
fn reset_moves_a_handle_between_self_and_peer() {
    let p = pair();
    let own = p.cctx.self_addr();
    let h = p.cctx.create(&p.saddr, Echo::id()).unwrap();
    h.reset(&own, Echo::id()).unwrap();
    assert_eq!(
        h.forward(&EchoIn::default(), |_, _| {}),
        Err(Error::NoEntry),
        "to self, with no handler here"
    );
    h.reset(&p.saddr, Echo::id()).unwrap();
    let got = forward_on(&h, vec![], 4);
    drive(&[&p.sctx, &p.cctx], || !got.lock().unwrap().is_empty());
    let (r, out) = got.lock().unwrap().pop().unwrap();
    assert_eq!((r, out.map(|o| o.rc)), (Ok(()), Some(5)));
}

/// Sends `bytes` as a request from `raw` with a receive posted for an answer on `tag`, drives
/// both sides a fixed number of rounds (inproc delivers within a round), and returns the answer
/// if one came; a receive still waiting is cancelled.
fn send_raw_any(p: &Pair, raw: &na::Context, bytes: &[u8], tag: u32) -> Option<Vec<u8>> {
    let uh = p.client.na().unexpected_header_size();
    let mut buf = MsgBuf::new(uh + bytes.len());
    raw.msg_init_unexpected(&mut buf);
    buf.as_mut_slice()[uh..].copy_from_slice(bytes);
    let r = raw.recv_expected(MsgBuf::new(4096), &p.saddr, tag, 1);
    raw.send_unexpected(buf, uh + bytes.len(), &p.saddr, tag, 2);
    let (mut reply, mut recv_done) = (None, false);
    let pump = |reply: &mut Option<Vec<u8>>, recv_done: &mut bool| {
        p.sctx.progress(Duration::ZERO).unwrap();
        p.sctx.trigger(usize::MAX).unwrap();
        raw.progress(Duration::ZERO).unwrap();
        while let Some(c) = raw.pop() {
            if c.user == 1 {
                *recv_done = true;
                if c.result.is_ok() {
                    *reply = Some(c.buf.unwrap().as_slice()[..c.len].to_vec());
                }
            }
        }
    };
    for _ in 0..50 {
        pump(&mut reply, &mut recv_done);
    }
    if !recv_done {
        raw.cancel(r).unwrap();
        let end = Instant::now() + Duration::from_secs(30);
        while !recv_done {
            pump(&mut reply, &mut recv_done);
            assert!(Instant::now() < end, "hang");
        }
    }
    reply
}

/// What a fuzzed message (request or reply) starts from: random bytes, a sound header over a
/// random body (`pick` and `code` choose the header's fields), or a good message with some bytes
/// changed and maybe cut short.
#[derive(Debug, Clone)]
enum Garble {
    Random(Vec<u8>),
    SoundHeader {
        pick: bool,
        code: u8,
        body: Vec<u8>,
    },
    Mutated {
        edits: Vec<(usize, u8)>,
        cut: Option<usize>,
    },
}

impl Garble {
    /// The bytes: `sound(pick, code, body)` builds a sound header over a body; `good` is the
    /// message `Mutated` starts from.
    fn bytes(self, good: &[u8], sound: impl Fn(bool, u8, &[u8]) -> Vec<u8>) -> Vec<u8> {
        match self {
            Garble::Random(b) => b,
            Garble::SoundHeader { pick, code, body } => sound(pick, code, &body),
            Garble::Mutated { edits, cut } => {
                let mut b = good.to_vec();
                for (i, v) in edits {
                    let n = b.len();
                    b[i % n] = v;
                }
                if let Some(c) = cut {
                    b.truncate(c.min(b.len()));
                }
                b
            }
        }
    }
}

fn garble() -> impl proptest::strategy::Strategy<Value = Garble> {
    use proptest::prelude::*;
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..96).prop_map(Garble::Random),
        (
            any::<bool>(),
            any::<u8>(),
            proptest::collection::vec(any::<u8>(), 0..96)
        )
            .prop_map(|(pick, code, body)| Garble::SoundHeader { pick, code, body }),
        (
            proptest::collection::vec((0usize..40, any::<u8>()), 1..6),
            proptest::option::of(0usize..40)
        )
            .prop_map(|(edits, cut)| Garble::Mutated { edits, cut }),
    ]
}

/// A response as Mercury lays it out: a plain header with `ret`, then `body`.
fn response(ret: i8, body: &[u8]) -> Vec<u8> {
    with_header(body, |v, n| {
        let h = hg::header::ResponseHeader {
            ret_code: ret,
            flags: 0,
            cookie: 0,
        };
        hg::header::encode_response(&h, hg::ChecksumLevel::None, v, n)
    })
}

/// The client's next RPC to the real server gets its right output.
fn next_rpc_is_served(p: &Pair) -> std::result::Result<(), proptest::test_runner::TestCaseError> {
    let ok = forward_echo(p, vec![4], 4);
    drive(&[&p.sctx, &p.cctx], || !ok.lock().unwrap().is_empty());
    let (r, out) = ok.lock().unwrap().pop().unwrap();
    proptest::prop_assert_eq!(r, Ok(()));
    proptest::prop_assert_eq!(
        out,
        Some(EchoOut {
            rc: 5,
            data: vec![4]
        })
    );
    Ok(())
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 384,
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Any bytes arriving as a request: the server neither panics nor stops. An answer, if any,
    /// is a well-formed response header carrying a code hg defines, and the next good RPC gets
    /// its right output.
    #[test]
    fn any_request_bytes_leave_the_server_serving(g in garble()) {
        let p = pair();
        let raw = p.client.na().context_create(7).unwrap();
        let good_body = hg::proc::encode_to_vec(&EchoIn { data: vec![1, 2], n: 5 }).unwrap();
        let good = request(Echo::id(), 0, &good_body);
        // A sound header: Echo's id or an unknown one, with any flags.
        let bytes = g.bytes(&good, |pick, flags, body| {
            request(if pick { Echo::id() } else { 0x5eed }, flags, body)
        });
        if let Some(reply) = send_raw_any(&p, &raw, &bytes, 21) {
            let d = hg::header::decode_response(&reply, hg::ChecksumLevel::None)
                .expect("an answer is a well-formed response");
            let code = d.header.ret_code;
            proptest::prop_assert!(
                code == 0 || Error::from_code(i32::from(code)).is_some(),
                "answer code {code} for {bytes:?}"
            );
        }
        next_rpc_is_served(&p)?;
    }

    /// Any bytes arriving as the reply to a forward (from a raw NA peer standing in for the
    /// server): the forward's callback runs exactly once, nothing panics (reading the output
    /// included), and the client's next RPC to a real server gets its right output.
    #[test]
    fn any_reply_bytes_complete_the_forward_once(g in garble()) {
        let p = pair();
        let good = response(
            0,
            &hg::proc::encode_to_vec(&EchoOut { rc: 6, data: vec![1, 2] }).unwrap(),
        );
        // A sound header: any return code.
        let bytes = g.bytes(&good, |_, ret, body| response(ret as i8, body));
        // The stand-in server: a bare NA context answering the request's tag with `bytes`.
        let raw_class = p._fabric.class(true);
        let raw = raw_class.context_create(0).unwrap();
        raw.recv_unexpected(MsgBuf::new(4096), 0);
        let got = forward_on(&p.cctx.create(&raw.self_addr(), Echo::id()).unwrap(), vec![1, 2], 5);
        let mut answered = false;
        let end = Instant::now() + Duration::from_secs(60);
        while got.lock().unwrap().is_empty() {
            p.cctx.progress(Duration::ZERO).unwrap();
            p.cctx.trigger(usize::MAX).unwrap();
            raw.progress(Duration::ZERO).unwrap();
            while let Some(c) = raw.pop() {
                if c.kind == na::OpKind::RecvUnexpected && !answered {
                    let src = c.source.expect("the request's source");
                    raw.send_expected(MsgBuf::from(bytes.clone()), bytes.len(), &src, c.tag, 1);
                    answered = true;
                }
            }
            assert!(Instant::now() < end, "hang");
        }
        for _ in 0..20 {
            p.cctx.progress(Duration::ZERO).unwrap();
            p.cctx.trigger(usize::MAX).unwrap();
            raw.progress(Duration::ZERO).unwrap();
            while raw.pop().is_some() {}
        }
        proptest::prop_assert_eq!(got.lock().unwrap().len(), 1, "one callback");
        next_rpc_is_served(&p)?;
    }
}
