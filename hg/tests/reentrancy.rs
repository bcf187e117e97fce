//! Calling `progress` or `trigger` from inside a callback or handler is `Error::Busy` (one thread drives a context at a time), over inproc and ofi+tcp, and the context keeps serving.

mod common;

use hg::na::plugins::inproc::{Fabric, FaultConfig};
use hg::{Class, Context, Error, Handle, InitOptions, Rpc};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

hg::rpc! {
    /// Adds one.
    pub rpc Inc(IncIn, IncOut) {
        input {
            /// Value.
            pub v: u64,
        }
        output {
            /// Value + 1.
            pub v: u64,
        }
    }
}

/// What each re-entrant call returned: (where, progress's error, trigger's error).
type Seen = Arc<Mutex<Vec<(&'static str, Option<Error>, Option<Error>)>>>;

fn reenter(ctx: &Context) -> (Option<Error>, Option<Error>) {
    (
        ctx.progress(Duration::from_millis(1)).err(),
        ctx.trigger(usize::MAX).err(),
    )
}

fn opts() -> InitOptions {
    InitOptions {
        request_post_init: 8,
        ..InitOptions::default()
    }
}

fn run(server: Class, client: Class) {
    let seen: Seen = Arc::default();
    let sslot: Arc<OnceLock<Weak<Context>>> = Arc::default();
    let (s, ss) = (seen.clone(), sslot.clone());
    server.register_rpc::<Inc>(Some(Arc::new(move |h: Handle| {
        // Inside trigger, on the server: both calls are refused.
        let ctx = ss.get().and_then(Weak::upgrade).expect("server context");
        let (p, t) = reenter(&ctx);
        s.lock().unwrap().push(("handler", p, t));
        let i: IncIn = h.get_input()?;
        let (s2, c2) = (s.clone(), ctx.clone());
        h.respond(&IncOut { v: i.v + 1 }, move |r| {
            assert_eq!(r, Ok(()));
            let (p, t) = reenter(&c2);
            s2.lock().unwrap().push(("respond callback", p, t));
        })
    })));
    client.register_rpc::<Inc>(None);
    let sctx = Arc::new(server.context_create().unwrap());
    sslot.set(Arc::downgrade(&sctx)).unwrap();
    let cctx = Arc::new(client.context_create().unwrap());
    let saddr = common::lookup(&client, &server, &sctx);

    for round in 0..2u64 {
        let got = Arc::new(Mutex::new(None));
        let (g, s, c2) = (got.clone(), seen.clone(), Arc::downgrade(&cctx));
        let h = cctx.create(&saddr, Inc::id()).unwrap();
        h.forward(&IncIn { v: round }, move |h, r| {
            let c2 = c2.upgrade().expect("client context");
            let (p, t) = reenter(&c2);
            s.lock().unwrap().push(("forward callback", p, t));
            *g.lock().unwrap() = Some(r.and_then(|()| h.get_output::<IncOut>()));
        })
        .unwrap();
        let end = Instant::now() + Duration::from_secs(60);
        while got.lock().unwrap().is_none() {
            for c in [&cctx, &sctx] {
                c.progress(Duration::from_millis(1)).unwrap();
                c.trigger(usize::MAX).unwrap();
            }
            assert!(Instant::now() < end, "hang");
        }
        // The contexts were unharmed: the RPC completed, and the next one does too.
        assert_eq!(
            got.lock().unwrap().take().unwrap(),
            Ok(IncOut { v: round + 1 })
        );
    }
    // Let the last respond callback run.
    let end = Instant::now() + Duration::from_secs(60);
    while seen.lock().unwrap().len() < 6 {
        sctx.progress(Duration::from_millis(1)).unwrap();
        sctx.trigger(usize::MAX).unwrap();
        assert!(Instant::now() < end, "hang");
    }
    let seen = seen.lock().unwrap();
    for w in ["handler", "respond callback", "forward callback"] {
        let of: Vec<_> = seen.iter().filter(|s| s.0 == w).collect();
        assert_eq!(of.len(), 2, "{w}: {seen:?}");
        for s in of {
            assert_eq!((s.1, s.2), (Some(Error::Busy), Some(Error::Busy)), "{w}");
        }
    }
}

#[test]
fn reentrant_progress_and_trigger_are_busy_over_inproc() {
    let fabric = Fabric::new(FaultConfig::none());
    run(
        Class::from_na(fabric.class(true), opts()),
        Class::from_na(fabric.class(false), opts()),
    );
}

#[test]
fn reentrant_progress_and_trigger_are_busy_over_ofi() {
    let open = || common::ofi_class(opts());
    let (Some(server), Some(client)) = (open(), open()) else {
        return;
    };
    run(server, client);
}
