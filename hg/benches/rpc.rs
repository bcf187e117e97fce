//! RPC rate and bulk bandwidth over inproc and ofi+tcp (DESIGN §9): `cargo bench -p hg --bench rpc`.
//!
//! Cases: RPC rate with 0 B, 64 B and 4 KiB of input at 1, 16 and 64 in flight (in batches, as
//! Mercury's `hg_rate`: post that many, wait for all, repeat; `HG_BENCH_WINDOW=1` keeps them
//! outstanding instead, a new one as each completes); bulk PULL and
//! PUSH of 64 KiB and 1 MiB (the target transfers from/to the origin's region, then answers, as
//! Mercury's `hg_bw_read` / `hg_bw_write` do, with their defaults: 1 RPC in flight, 64 transfers
//! per RPC all posted at once; `HG_BENCH_BW_INFLIGHT` / `HG_BENCH_BW_TRANSFERS` change them).
//! `HG_BENCH_POLL=1` busy-polls (NA in busy mode, as Mercury's tools with `-b`); `HG_BENCH_SPIN_US` sets the progress spin window; `HG_BENCH_SPREAD=1` times each batch and prints their spread;
//! `HG_BENCH_RATE=<size>,<inflight>,<n>` runs one rate case once (for callgrind); `HG_BENCH_DELAY_NS` adds a known delay to each rate RPC on the origin (see [`DELAY_NS`]); `HG_BENCH_ONLY=rate|bulk` runs one half; `HG_BENCH_BULK=pull|push,<KiB>` one bulk case;
//! `HG_BENCH_OFI=ofi+net://127.0.0.1` runs the ofi cases over XNET instead of `tcp;ofi_rxm`. Over ofi the target is a second process (this
//! binary re-executed with `HG_BENCH_SERVER=1` and ended by a `Finish` RPC, or one started apart
//! and named by `HG_BENCH_ADDR=<addr>`; one thread, as Mercury's `hg_perf_server`); over inproc
//! it is a second thread. Each case runs
//! 5 times; the median and the spread (min–max) are printed.
//!
//! Arguments: `--quick` (fewer operations), `--only inproc|ofi`. Without `--bench` (which
//! `cargo bench` passes; `cargo test --all-targets` does not) it runs a smoke pass: every case
//! once with a handful of operations, so the workspace test run stays short.

use hg::na::plugins::inproc::{Fabric, FaultConfig};
use hg::na::{self, Access};
use hg::{BulkOp, BulkRef, Class, Context, Error, Handle, InitOptions, Rpc};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

hg::rpc! {
    /// The rate RPC: input bytes, empty output.
    pub rpc Rate(RateIn, RateOut) {
        input {
            /// Payload (its u64 length prefix included in the size).
            pub data: Vec<u8>,
        }
        output {}
    }
}

hg::rpc! {
    /// The end of a run: the target answers and leaves its loop, as Mercury's perf tools end
    /// their server (`hg_perf_done_cb`), so a profiler running it can write its report.
    pub rpc Finish(FinishIn, FinishOut) {
        input {}
        output {}
    }
}

thread_local! {
    /// The target's rate input, decoded into for every request (`get_input_into`).
    static RATE_IN: std::cell::RefCell<RateIn> = std::cell::RefCell::new(RateIn::default());
}

/// Set by the target's [`Finish`] handler.
static FINISHED: AtomicBool = AtomicBool::new(false);

hg::rpc! {
    /// The bandwidth RPC: the target moves `count` × `len` bytes between `bulk` and its own
    /// buffer, `count` transfers of `len` bytes at once (Mercury's `hg_bw_*`: 64 per RPC).
    pub rpc Bw(BwIn, BwOut) {
        input {
            /// The origin's region (`count` × `len` bytes from `off`).
            pub bulk: BulkRef,
            /// Where the transfers start in `bulk` (its first page boundary).
            pub off: u64,
            /// Bytes per transfer.
            pub len: u64,
            /// Transfers, all in flight together.
            pub count: u32,
            /// True: the target pulls (origin → target); false: it pushes.
            pub pull: bool,
        }
        output {}
    }
}

/// Repeats per case (1 in a smoke pass).
fn repeats() -> usize {
    if smoke() {
        1
    } else {
        5
    }
}

/// True when not run by `cargo bench`.
fn smoke() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

/// Issues one operation on a handle; its callback adds one to the counter it is given.
type Start<'a> = &'a dyn Fn(&Handle, &Arc<AtomicUsize>);

/// `HG_BENCH_WINDOW=1`: keep `inflight` operations outstanding at all times (a new one as soon
/// as one completes) instead of Mercury's batches.
fn window() -> bool {
    // Read once: `forward_counted` asks on every RPC.
    static WINDOW: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WINDOW.get_or_init(|| std::env::var("HG_BENCH_WINDOW").is_ok())
}

/// `HG_BENCH_SPREAD=1`: time each batch too and print their spread. Off by default, as
/// `hg_rate` reads the clock only at the start and the end of a run (two clock reads per
/// batch were ≈ 80 instructions in the clock functions alone under callgrind, on the origin's
/// one-in-flight critical path).
fn spread() -> bool {
    static SPREAD: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SPREAD.get_or_init(|| std::env::var("HG_BENCH_SPREAD").is_ok())
}

/// `HG_BENCH_SPIN_US=<µs>` overrides `InitOptions::progress_spin` (0 for instruction counts
/// under callgrind, where spinning would only add polling instructions).
fn opts() -> InitOptions {
    let mut o = InitOptions {
        request_post_init: 256,
        ..InitOptions::default()
    };
    if let Some(us) = std::env::var("HG_BENCH_SPIN_US")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        o.progress_spin = Duration::from_micros(us);
    }
    o
}

/// Opens the ofi class (`listen`: the target; the origin does not): `ofi+tcp` (rxm), or what
/// `HG_BENCH_OFI` names (the target process inherits it). Under `HG_BENCH_POLL=1` both sides
/// spin, so NA runs in busy mode (`ProgressMode::NoBlock`, CQs without a wait object) as
/// Mercury's tools do with `-b`. `HG_BENCH_RCVBUF=<bytes>` sets `na::InitOptions::sock_rcvbuf`
/// (0: leave the kernel's autotuning on) on both sides.
fn ofi_class(listen: bool) -> hg::Result<Class> {
    let mut o = opts();
    if std::env::var("HG_BENCH_POLL").is_ok() {
        o.na.progress_mode = hg::na::ProgressMode::NoBlock;
    }
    if let Some(b) = std::env::var("HG_BENCH_RCVBUF")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        // 0 is the plugin's own "leave autotuning on".
        o.na.sock_rcvbuf = Some(b);
    }
    let info = std::env::var("HG_BENCH_OFI").unwrap_or_else(|_| "ofi+tcp://127.0.0.1".into());
    Class::init_opt(&info, listen, o)
}

/// Registers the target's handlers; its bulk buffers are created once per size.
fn serve(class: &Class, ctx: hg::ContextRef) {
    class.register_rpc::<Finish>(Some(Arc::new(|h: Handle| {
        FINISHED.store(true, Ordering::Relaxed);
        h.respond(&FinishOut {}, |_| {})
    })));
    class.register_rpc::<Rate>(Some(Arc::new(|h: Handle| {
        // Decoded into one kept value, as `hg_perf_rpc_rate_cb` decodes into its context's
        // `rpc_buf`: a copy of the payload, no allocation per request.
        RATE_IN.with(|i| h.get_input_into(&mut *i.borrow_mut()))?;
        h.respond(&RateOut {}, |_| {})
    })));
    let buffers: Arc<Mutex<Vec<(hg::Bulk, u64)>>> = Arc::new(Mutex::new(Vec::new()));
    let class2 = class.clone();
    class.register_rpc::<Bw>(Some(Arc::new(move |h: Handle| {
        let i: BwIn = h.get_input()?;
        let desc = i.bulk.desc().cloned().ok_or(Error::InvalidArg)?;
        let total = i.len * u64::from(i.count);
        let local = {
            let mut b = buffers.lock().unwrap();
            match b
                .iter()
                .position(|x| x.0.len() as u64 == total + PAGE as u64)
            {
                Some(p) => b.swap_remove(p),
                None => aligned_bulk(&class2, total as usize, 1)?,
            }
        };
        let op = if i.pull { BulkOp::Pull } else { BulkOp::Push };
        let addr = h.info().addr;
        // One record shared by the RPC's transfers, as `hg_perf`'s handler shares one info
        // struct: each transfer's callback takes one reference, not one per field.
        let rpc = Arc::new(BwRpc {
            left: AtomicUsize::new(i.count as usize),
            failed: Mutex::new(None),
            buffers: buffers.clone(),
            local,
            handle: h,
        });
        let (local, pad) = &rpc.local;
        for k in 0..u64::from(i.count) {
            let r2 = rpc.clone();
            let off = k * i.len;
            ctx.bulk_transfer(
                op,
                &addr,
                &desc,
                i.off + off,
                local,
                pad + off,
                i.len,
                move |r| r2.transfer_done(r),
            )?;
        }
        Ok(())
    })));
}

/// One bandwidth RPC on the target while its transfers run.
struct BwRpc {
    /// Transfers not yet completed.
    left: AtomicUsize,
    /// The first transfer error, answered to the client.
    failed: Mutex<Option<Error>>,
    /// The target's pool of bulk regions, and this RPC's region (with the offset of its first
    /// page boundary), which the last transfer gives back to it.
    buffers: Arc<Mutex<Vec<(hg::Bulk, u64)>>>,
    local: (hg::Bulk, u64),
    handle: Handle,
}

impl BwRpc {
    /// One transfer's callback; the last one gives the region back and answers.
    fn transfer_done(&self, r: Result<(), Error>) {
        if let Err(e) = r {
            self.failed.lock().unwrap().get_or_insert(e);
        }
        if self.left.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        // A `Bulk` is a handle: the pool's copy shares this record's registration.
        self.buffers.lock().unwrap().push(self.local.clone());
        match self.failed.lock().unwrap().take() {
            None => {
                let _ = self.handle.respond(&BwOut {}, |_| {});
            }
            Some(e) => {
                let _ = self.handle.respond_error(e);
            }
        }
    }
}

/// Page size the bulk regions are aligned to.
const PAGE: usize = 4096;

/// A bulk region of `len` bytes starting on a page boundary, as Mercury's tools allocate theirs
/// (`hg_mem_aligned_alloc(page_size, ..)`): a `Vec` one page longer, and the offset of its first
/// page boundary, so the kernel's copies in and out of the regions see the same alignment on
/// both stacks (DESIGN §9). Were the `Vec` moved to a new allocation on registration, the
/// offsets would still lie inside the region; only the alignment would be lost.
fn aligned_bulk(class: &Class, len: usize, fill: u8) -> Result<(hg::Bulk, u64), Error> {
    let v = vec![fill; len + PAGE];
    let pad = v.as_ptr().align_offset(PAGE) as u64;
    Ok((hg::Bulk::create(class, vec![v], Access::READWRITE)?, pad))
}

/// `HG_BENCH_BULK=pull|push,<KiB>`: run only that bulk case (with `HG_BENCH_ONLY=bulk`, for
/// profiling one case); `None` (unset or not of that form) runs all four.
fn bulk_case() -> Option<(bool, usize)> {
    let v = std::env::var("HG_BENCH_BULK").ok()?;
    let (op, kib) = v.split_once(',')?;
    let pull = match op.trim() {
        "pull" => true,
        "push" => false,
        _ => return None,
    };
    Some((pull, kib.trim().parse::<usize>().ok()? << 10))
}

/// Transfers per bandwidth RPC: `HG_BENCH_BW_TRANSFERS`, default 64 (Mercury's `-w`).
fn bw_transfers() -> usize {
    std::env::var("HG_BENCH_BW_TRANSFERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

/// Bandwidth RPCs in flight: `HG_BENCH_BW_INFLIGHT`, default 1 (Mercury's `-x`).
fn bw_inflight() -> usize {
    std::env::var("HG_BENCH_BW_INFLIGHT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// How long `progress` may block: `HG_BENCH_POLL=1` busy-polls (timeout 0) instead.
fn wait() -> Duration {
    if std::env::var("HG_BENCH_POLL").is_ok() {
        Duration::ZERO
    } else {
        Duration::from_millis(50)
    }
}

/// The target's loop until `stop` is set, or, given the parent's pid, until this process is
/// orphaned (the client died before ending it): looked at every 4,096 busy passes (a few ms)
/// or every 64 blocking ones (each up to `wait()`), so the check costs nothing.
fn serve_loop(ctx: &Context, stop: &AtomicBool, parent: Option<u32>) {
    let w = wait();
    let every = if w.is_zero() { 4096 } else { 64 };
    let mut passes = 0u32;
    while !stop.load(Ordering::Relaxed) {
        poll(ctx, w);
        passes = passes.wrapping_add(1);
        if passes.is_multiple_of(every)
            && parent.is_some_and(|p| std::os::unix::process::parent_id() != p)
        {
            return;
        }
    }
}

/// One pass of the wait loop, as Mercury's tools do it (`hg_perf_request_wait`,
/// `hg_perf_loop`): progress, and trigger only when progress left callbacks to run.
#[inline]
fn poll(ctx: &Context, wait: Duration) {
    if ctx.progress(wait).unwrap() > 0 {
        ctx.trigger(usize::MAX).unwrap();
    }
}

/// Asks the target to leave its loop ([`Finish`]); waits up to 5 s for the answer.
fn finish(class: &Class, ctx: &Context, to: &na::Addr) {
    class.register_rpc::<Finish>(None);
    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    let h = ctx.create(to, Finish::id()).unwrap();
    if h.forward(&FinishIn {}, move |_, _| d2.store(true, Ordering::Relaxed))
        .is_err()
    {
        return;
    }
    let t = Instant::now();
    while !done.load(Ordering::Relaxed) && t.elapsed() < Duration::from_secs(5) {
        poll(ctx, Duration::from_millis(1));
    }
}

/// What one [`run`] measured.
struct Run {
    /// From the first post to the last completion.
    elapsed: Duration,
    /// Batch mode under `HG_BENCH_SPREAD=1`: each batch's time (µs) from its first post to its
    /// last completion; with one in flight, each RPC's round trip. Else empty.
    rounds: Vec<f64>,
}

/// Runs `n` operations, `inflight` at a time, on `inflight` handles created once. By default
/// in batches, as Mercury's `hg_rate` and `hg_bw_*` do (post `inflight`, wait for all of them,
/// repeat); under `HG_BENCH_WINDOW=1` a handle gets its next operation as soon as its last one
/// completed. `start` issues one operation; its callback counts it on the handle's counter.
fn run(ctx: &Context, to: &na::Addr, id: u64, n: usize, inflight: usize, start: Start<'_>) -> Run {
    let slots: Vec<(Handle, Arc<AtomicUsize>)> = (0..inflight)
        .map(|_| (ctx.create(to, id).unwrap(), Arc::new(AtomicUsize::new(0))))
        .collect();
    let mut posted = vec![0usize; inflight];
    let busy = |posted: &[usize], i: usize| slots[i].1.load(Ordering::Relaxed) < posted[i];
    let w = wait();
    let mut rounds = Vec::new();
    let mut issued = 0;
    let t = Instant::now();
    if window() {
        while issued < n || (0..inflight).any(|i| busy(&posted, i)) {
            for (i, (h, c)) in slots.iter().enumerate() {
                if issued < n && !busy(&posted, i) {
                    start(h, c);
                    posted[i] += 1;
                    issued += 1;
                }
            }
            poll(ctx, w);
        }
    } else {
        let timed = spread();
        if timed {
            rounds.reserve(n / inflight + 1);
        }
        while issued < n {
            let b = inflight.min(n - issued);
            let t0 = timed.then(Instant::now);
            // Every callback of this batch counts in `DONE` (see `forward_counted`).
            let want = DONE.with(|d| d.get()) + b;
            for (h, c) in &slots[..b] {
                start(h, c);
            }
            issued += b;
            while DONE.with(|d| d.get()) < want {
                poll(ctx, w);
            }
            if let Some(t0) = t0 {
                rounds.push(t0.elapsed().as_secs_f64() * 1e6);
            }
        }
    }
    Run {
        elapsed: t.elapsed(),
        rounds,
    }
}

thread_local! {
    /// Batch mode's completion count: callbacks run on the thread that calls `trigger`, the one
    /// running the batches.
    static DONE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Forwards `input` on `h`. In batch mode the callback counts it in [`DONE`] and captures
/// nothing (as `hg_rate` passes a plain function: no allocation per RPC for the callback's
/// box); in window mode it counts it on the handle's own counter `done`.
fn forward_counted<T: hg::Proc + 'static>(h: &Handle, done: &Arc<AtomicUsize>, input: &T) {
    if window() {
        let d = done.clone();
        h.forward(input, move |_, r| {
            r.unwrap();
            d.fetch_add(1, Ordering::Relaxed);
            delay_if_asked();
        })
        .unwrap();
    } else {
        h.forward(input, |_, r| {
            r.unwrap();
            DONE.with(|d| d.set(d.get() + 1));
            delay_if_asked();
        })
        .unwrap();
    }
}

/// The end of a rate RPC's callback: the [`DELAY_NS`] wait, when one was asked for.
#[inline(always)]
fn delay_if_asked() {
    let ns = DELAY_NS.load(Ordering::Relaxed);
    if ns != 0 {
        spin_for(Duration::from_nanos(ns));
    }
}

/// `HG_BENCH_DELAY_NS=<ns>`: each rate RPC's callback on the origin busy-waits this long
/// before the next forward, a known cost added to every round trip. Run beside the same
/// binary without it, it shows what a sitting can tell apart: a change to the code is only
/// seen if it moves the round trip by more than the smallest delay a sitting detects. Read
/// once by [`bench_client`]; the callback pays one load and a branch without it.
static DELAY_NS: AtomicU64 = AtomicU64::new(0);

/// Busy-waits `d` (each clock read costs ≈ 22 ns here, so the wait overshoots by about one).
#[cold]
#[inline(never)]
fn spin_for(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// Untimed RPCs run before each case, as Mercury's perf tools skip their first 100 (10 above
/// 8 KiB): the first RPC to a target also sets up the connection, about 50 ms over
/// `tcp;ofi_rxm` here (Mercury's own `hg_first` takes as long), which would otherwise add
/// ≈ 2.5 µs to every RPC of a 20 000-RPC run.
const WARM_UP: usize = 100;

/// Forwards `n` rate RPCs untimed (see [`WARM_UP`]).
fn warm_up(ctx: &Context, to: &na::Addr, n: usize, inflight: usize, input: &RateIn) {
    run(ctx, to, Rate::id(), n, inflight, &|h, d| {
        forward_counted(h, d, input)
    });
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// `HG_BENCH_RATE=<size>,<inflight>,<n>`: run only that rate case once (for instruction counts
/// under callgrind: the difference between two values of `n` is the per-RPC cost).
fn one_case() -> Option<(usize, usize, usize)> {
    let v = std::env::var("HG_BENCH_RATE").ok()?;
    let p: Vec<usize> = v.split(',').map(|x| x.trim().parse().unwrap()).collect();
    Some((p[0], p[1], p[2]))
}

fn bench_client(name: &str, class: &Class, ctx: &Context, to: &na::Addr, quick: bool) {
    class.register_rpc::<Rate>(None);
    class.register_rpc::<Bw>(None);
    let delay = std::env::var("HG_BENCH_DELAY_NS").map_or(0, |v| v.trim().parse().unwrap());
    DELAY_NS.store(delay, Ordering::Relaxed);
    if let Some((size, inflight, n)) = one_case() {
        let input = RateIn {
            data: vec![7u8; size.saturating_sub(8)],
        };
        warm_up(ctx, to, WARM_UP, inflight, &input);
        let r = run(ctx, to, Rate::id(), n, inflight, &|h, d| {
            forward_counted(h, d, &input)
        });
        let rate = n as f64 / r.elapsed.as_secs_f64();
        let mut l = r.rounds;
        if l.is_empty() {
            let mode = if window() { ", window" } else { "" };
            println!("{name:6} rpc  {size:5} B  {inflight:2} in flight: {rate:8.0} RPC/s (one run of {n}{mode})");
            return;
        }
        l.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let q = |f: f64| l[((l.len() as f64 * f) as usize).min(l.len() - 1)];
        let total: f64 = l.iter().sum();
        let slow: f64 = l.iter().filter(|&&x| x > 100.0 * inflight as f64).sum();
        println!(
            "{name:6} rpc  {size:5} B  {inflight:2} in flight: {rate:8.0} RPC/s (one run of {n}); batch round trip mean {:.1} p10 {:.1} p50 {:.1} p90 {:.1} p99 {:.1} p99.9 {:.1} max {:.0} us; {:.1} % of the time in batches over {} us",
            total / l.len() as f64,
            q(0.1), q(0.5), q(0.9), q(0.99), q(0.999), l[l.len() - 1],
            100.0 * slow / total,
            100 * inflight,
        );
        return;
    }
    let (rates, bulk) = match std::env::var("HG_BENCH_ONLY").as_deref() {
        Ok("rate") => (true, false),
        Ok("bulk") => (false, true),
        _ => (true, true),
    };
    for size in [0usize, 64, 4096].into_iter().filter(|_| rates) {
        // The encoded input is the u64 length plus the bytes; size counts the whole body.
        let payload = vec![7u8; size.saturating_sub(8)];
        for inflight in [1usize, 16, 64] {
            let n = if smoke() {
                20
            } else if quick {
                2_000
            } else {
                20_000
            };
            let mut rates = Vec::new();
            let warm = RateIn {
                data: payload.clone(),
            };
            warm_up(ctx, to, if smoke() { 1 } else { WARM_UP }, inflight, &warm);
            let mut lat = Vec::new();
            for _ in 0..repeats() {
                let input = RateIn {
                    data: payload.clone(),
                };
                let r = run(ctx, to, Rate::id(), n, inflight, &|h, d| {
                    forward_counted(h, d, &input)
                });
                rates.push(n as f64 / r.elapsed.as_secs_f64());
                lat.extend(r.rounds);
            }
            let (m, lo, hi) = stats(rates);
            let spread = if window() {
                String::from("window")
            } else if lat.is_empty() {
                String::from("batches (HG_BENCH_SPREAD=1 times each)")
            } else {
                lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
                let (p50, p99) = (lat[lat.len() / 2], lat[lat.len() * 99 / 100]);
                format!("batch round trip p50 {p50:.1} us, p99 {p99:.1} us")
            };
            println!(
                "{name:6} rpc  {size:5} B  {inflight:2} in flight: {m:8.0} RPC/s (min {lo:.0}, max {hi:.0}); {spread}"
            );
        }
    }
    // As Mercury's hg_bw_write / hg_bw_read by default: 1 RPC in flight, 64 transfers per RPC.
    let (count, bw_inflight) = (bw_transfers(), bw_inflight());
    let only = bulk_case();
    for len in [64usize << 10, 1 << 20].into_iter().filter(|_| bulk) {
        for pull in [true, false] {
            if only.is_some_and(|c| c != (pull, len)) {
                continue;
            }
            let (bulk, off) = aligned_bulk(class, len * count, 3).unwrap();
            // About 256 MiB (quick) or 1 GiB moved per repeat, at least 8 RPCs.
            let per_rpc = len * count;
            let n = if smoke() {
                2
            } else if quick {
                ((256usize << 20) / per_rpc).max(8)
            } else {
                ((1usize << 30) / per_rpc).max(8)
            };
            let mut bws = Vec::new();
            for pass in 0..=repeats() {
                // Pass 0 is the warm-up (a few RPCs, not counted): it pays for the connection
                // when only the bulk half runs, and for the target's first buffer of this size.
                let n = if pass == 0 { bw_inflight.max(2) } else { n };
                let input = BwIn {
                    bulk: bulk.to_ref(),
                    off,
                    len: len as u64,
                    count: count as u32,
                    pull,
                };
                let el = run(ctx, to, Bw::id(), n, bw_inflight, &|h, d| {
                    forward_counted(h, d, &input)
                })
                .elapsed;
                if pass > 0 {
                    bws.push((n * per_rpc) as f64 / el.as_secs_f64() / 1e9);
                }
            }
            let (m, lo, hi) = stats(bws);
            println!(
                "{name:6} bulk {:4} {:5} KiB  {bw_inflight} RPC x {count} transfers in flight: {m:6.2} GB/s (min {lo:.2}, max {hi:.2})",
                if pull { "PULL" } else { "PUSH" },
                len >> 10
            );
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned());

    if std::env::var("HG_BENCH_SERVER").is_ok() {
        // Target process over ofi+tcp: serve until the client's `Finish`, or until orphaned.
        // One thread, as Mercury's `hg_perf_server`: a second one (a stdin watcher) would make
        // glibc wrap every system call of the loop in its cancellation-point bookkeeping.
        let class = ofi_class(true).unwrap();
        let ctx = class.context_create().unwrap();
        serve(&class, ctx.as_ref());
        println!("ADDR {}", class.addr_to_string(&ctx.self_addr()).unwrap());
        serve_loop(&ctx, &FINISHED, Some(std::os::unix::process::parent_id()));
        if !FINISHED.load(Ordering::Relaxed) {
            return;
        }
        // A few more passes (16 ms at most), so the answer to `Finish` leaves before the
        // context closes.
        for _ in 0..16 {
            poll(&ctx, Duration::from_millis(1));
        }
        return;
    }

    if only.as_deref() != Some("ofi") {
        let fabric = Fabric::new(FaultConfig::none());
        let server = Class::from_na(fabric.class(true), opts());
        let client = Class::from_na(fabric.class(false), opts());
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let s2 = stop.clone();
        let t = std::thread::spawn(move || {
            let ctx = server.context_create().unwrap();
            serve(&server, ctx.as_ref());
            tx.send(ctx.self_addr()).unwrap();
            serve_loop(&ctx, &s2, None);
        });
        let to = rx.recv().unwrap();
        let ctx = client.context_create().unwrap();
        bench_client("inproc", &client, &ctx, &to, quick);
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
    }

    if only.as_deref() != Some("inproc") {
        // The origin does not listen, as Mercury's hg_rate / hg_bw_* clients do not
        // (`hg_perf_init(.., listen = false)`): like for like (DESIGN §9).
        let Ok(client) = ofi_class(false) else {
            println!("ofi+tcp unavailable: skipped");
            return;
        };
        // `HG_BENCH_ADDR=<addr>`: a target started apart (`HG_BENCH_SERVER=1 <this binary>`,
        // which prints its address), as Mercury's server and client are two commands.
        let (mut child, addr) = match std::env::var("HG_BENCH_ADDR") {
            Ok(a) => (None, a),
            Err(_) => {
                let mut child = Command::new(std::env::current_exe().unwrap())
                    .env("HG_BENCH_SERVER", "1")
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
                let addr = loop {
                    let l = lines.next().expect("server exited").unwrap();
                    if let Some(i) = l.find("ADDR ") {
                        break l[i + 5..].trim().to_string();
                    }
                };
                (Some(child), addr)
            }
        };
        let ctx = client.context_create().unwrap();
        let to = client.addr_lookup(&addr).unwrap();
        // "ofi" over the default rxm; the transport's name otherwise ("ofi+net").
        let label = match client.na().protocol() {
            "tcp;ofi_rxm" => "ofi".to_string(),
            p => format!("ofi+{p}"),
        };
        bench_client(&label, &client, &ctx, &to, quick);
        if let Some(child) = child.as_mut() {
            finish(&client, &ctx, &to);
            // It leaves by itself once it has answered; if it has not within 5 s, it is killed
            // (and the smoke pass, which CI runs, fails: `Finish` is broken).
            let t = Instant::now();
            let mut status = None;
            while status.is_none() && t.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(10));
                status = child.try_wait().unwrap();
            }
            match status {
                Some(s) => assert!(s.success(), "the target exited with {s}"),
                None => {
                    let _ = child.kill();
                    child.wait().unwrap();
                    assert!(!smoke(), "the target did not leave after Finish");
                }
            }
        }
    }
}
