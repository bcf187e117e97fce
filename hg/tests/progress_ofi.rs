//! Blocking `progress` over ofi+tcp, many times, with timeouts from zero through sub-millisecond to `Duration::MAX` (bounded by a forward's deadline or a wake-up): every call is `Ok`, none panics or hangs.

mod common;

use common::{Echo, EchoIn, EchoOut};

use hg::{Class, Context, Error, Handle, InitOptions, Rpc};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

hg::rpc! {
    /// Held by the server, never answered (until teardown).
    pub rpc Hold(HoldIn, HoldOut) {
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
    /// Answers, then the server stops.
    pub rpc Stop(StopIn, StopOut) {
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

/// Timeouts both sides cycle through: zero, sub-microsecond, sub-millisecond, around the
/// millisecond rounding of the wait, long, past `u32::MAX` milliseconds, and the largest.
fn timeouts() -> Vec<Duration> {
    vec![
        Duration::ZERO,
        Duration::from_nanos(1),
        Duration::from_micros(300),
        Duration::from_micros(999),
        Duration::from_millis(1),
        Duration::from_micros(1_500),
        Duration::from_millis(20),
        Duration::from_secs(2),
        Duration::from_millis(u64::from(u32::MAX) + 1),
        Duration::from_secs(u64::MAX / 2),
        Duration::MAX,
    ]
}

fn class(opts: InitOptions) -> Option<Class> {
    common::ofi_class(opts)
}

/// Aborts the test process if the test has not finished in time: a blocking progress that
/// never returns would otherwise hang the run.
struct Watchdog(Arc<AtomicBool>);

impl Watchdog {
    fn new(limit: Duration) -> Watchdog {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        std::thread::spawn(move || {
            let end = Instant::now() + limit;
            while !d.load(Ordering::Acquire) {
                if Instant::now() > end {
                    eprintln!("watchdog: a blocking progress never returned");
                    std::process::abort();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Watchdog(done)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A server on its own thread whose progress loop cycles through `timeouts()`; returns its
/// address string and the thread, which ends once a `Stop` has been answered.
fn spawn_server(opts: InitOptions) -> Option<(String, std::thread::JoinHandle<()>)> {
    let server = class(opts)?;
    common::serve_echo(&server);
    let held = Arc::new(Mutex::new(Vec::new()));
    server.register_rpc::<Hold>(Some(Arc::new(move |h: Handle| {
        held.lock().unwrap().push(h);
        Ok(())
    })));
    let stopped = Arc::new(AtomicBool::new(false));
    let s = stopped.clone();
    server.register_rpc::<Stop>(Some(Arc::new(move |h: Handle| {
        let s = s.clone();
        h.respond(&StopOut { x: 0 }, move |_| s.store(true, Ordering::Release))
    })));
    let ctx = server.context_create().unwrap();
    let addr = server.addr_to_string(&ctx.self_addr()).unwrap();
    let t = std::thread::spawn(move || {
        let ts = timeouts();
        let mut i = 0;
        while !stopped.load(Ordering::Acquire) {
            let t = ts[i % ts.len()];
            i += 1;
            if let Err(e) = ctx.progress(t) {
                panic!("server progress({t:?}) failed: {e}");
            }
            ctx.trigger(usize::MAX).unwrap();
        }
    });
    Some((addr, t))
}

fn wait_for<T>(ctx: &Context, slot: &Mutex<Option<T>>, t: Duration) -> T {
    loop {
        if let Some(v) = slot.lock().unwrap().take() {
            return v;
        }
        if let Err(e) = ctx.progress(t) {
            panic!("client progress({t:?}) failed: {e}");
        }
        ctx.trigger(usize::MAX).unwrap();
    }
}

fn echo(ctx: &Context, to: &hg::na::Addr, n: usize, t: Duration) {
    let got = Arc::new(Mutex::new(None));
    let g = got.clone();
    let data = vec![n as u8; n];
    let h = ctx.create(to, Echo::id()).unwrap();
    h.forward(&EchoIn { data: data.clone() }, move |h, r| {
        *g.lock().unwrap() = Some(r.and_then(|()| h.get_output::<EchoOut>()));
    })
    .unwrap();
    let out = wait_for(ctx, &got, t);
    assert_eq!(out.map(|o| o.data), Ok(data), "echo with progress({t:?})");
}

fn blocking_progress_with(opts: InitOptions) {
    let _w = Watchdog::new(Duration::from_secs(240));
    let Some((saddr_s, server)) = spawn_server(opts.clone()) else {
        return;
    };
    let Some(client) = class(opts) else { return };
    client.register_rpc::<Echo>(None);
    client.register_rpc::<Hold>(None);
    client.register_rpc::<Stop>(None);
    let cctx = client.context_create().unwrap();
    let saddr = client.addr_lookup(&saddr_s).unwrap();

    // Idle: nothing in flight, each call returns Ok(0), after at least its timeout.
    for t in [
        Duration::ZERO,
        Duration::from_nanos(1),
        Duration::from_micros(300),
        Duration::from_millis(1),
        Duration::from_millis(15),
    ] {
        let start = Instant::now();
        assert_eq!(cctx.progress(t), Ok(0), "idle progress({t:?})");
        assert!(start.elapsed() >= t, "idle progress({t:?}) returned early");
    }

    // RPCs, each driven by one timeout, several rounds (inline and overflowing sizes).
    for round in 0..4 {
        for t in timeouts() {
            let n = [0, 64, 3000, 20_000][round];
            echo(&cctx, &saddr, n, t);
        }
    }

    // Very long timeouts bounded by a forward's deadline: progress returns at the deadline,
    // and the forward completes Timeout.
    for t in [
        Duration::from_secs(3600),
        Duration::from_secs(u64::MAX / 2),
        Duration::MAX,
    ] {
        let got = Arc::new(Mutex::new(None));
        let g = got.clone();
        let h = cctx.create(&saddr, Hold::id()).unwrap();
        let start = Instant::now();
        h.forward_timed(&HoldIn { x: 1 }, Duration::from_millis(150), move |_, r| {
            *g.lock().unwrap() = Some(r)
        })
        .unwrap();
        assert_eq!(wait_for(&cctx, &got, t), Err(Error::Timeout), "{t:?}");
        assert!(start.elapsed() >= Duration::from_millis(150));
    }

    // Blocked forever, woken by a forward from another thread (the hand-off wakes progress).
    let got = Arc::new(Mutex::new(None));
    let g = got.clone();
    let cref = cctx.as_ref();
    let a2 = saddr.clone();
    let other = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        let h = cref.create(&a2, Echo::id()).unwrap();
        h.forward(&EchoIn { data: vec![5; 5] }, move |h, r| {
            *g.lock().unwrap() = Some(r.and_then(|()| h.get_output::<EchoOut>()));
        })
        .unwrap();
    });
    let out = wait_for(&cctx, &got, Duration::MAX);
    assert_eq!(out.map(|o| o.data), Ok(vec![5; 5]));
    other.join().unwrap();

    // Stop the server, still cycling through its timeouts.
    let got = Arc::new(Mutex::new(None));
    let g = got.clone();
    let h = cctx.create(&saddr, Stop::id()).unwrap();
    h.forward(&StopIn { x: 0 }, move |_, r| *g.lock().unwrap() = Some(r))
        .unwrap();
    assert_eq!(wait_for(&cctx, &got, Duration::from_millis(5)), Ok(()));
    server.join().unwrap();
}

#[test]
fn blocking_progress_over_ofi_with_every_timeout() {
    blocking_progress_with(InitOptions {
        request_post_init: 16,
        ..InitOptions::default()
    });
}

#[test]
fn blocking_progress_over_ofi_with_spin() {
    // A spin longer than some of the timeouts, shorter than others.
    blocking_progress_with(InitOptions {
        request_post_init: 16,
        progress_spin: Duration::from_micros(500),
        ..InitOptions::default()
    });
}
