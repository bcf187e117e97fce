//! The README demo's engine and client: an "update" RPC served engine-style on an abt stream, and a hop tracer.
//!
//! The server is shaped like DAOS's `dss_srv_handler`: one execution stream runs a progress ULT
//! that loops hg `progress` + `trigger` and yields. The registered handler (run by `trigger`,
//! inside that ULT) does not serve the request itself: it creates a new ULT in the stream's pool,
//! as the engine hands each request to its own ULT, so a handler may block (here on the bulk
//! PULL's [`abt::Eventual`]) without stopping progress. That ULT decodes the input, pulls the
//! bulk payload, stores key → bytes in an in-memory map and responds.
//!
//! [`HopTracer`] is a `tracing` layer that records each `na.*` / `hg.*` / `abt.*` / `demo.*` span
//! enter and close with a wall-clock timestamp and the process side, and drops the idle rounds of
//! the progress loop, so one RPC reads as a list of hops.

use abt::{pool, Access as PoolAccess, Eventual, Pool, PoolKind, Sched, SchedConfig, SchedKind};
use abt::{Thread, ThreadAttr, Xstream};
use hg::na::{self, Access};
use hg::{Bulk, BulkOp, BulkRef, Class, Error, Handle, InitOptions, Rpc};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::span::{Attributes, Id};
use tracing::subscriber::Interest;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::layer::{Context as LayerCtx, Layer};
use tracing_subscriber::registry::LookupSpan;

hg::rpc! {
    /// An object update (DAOS `obj_rw` in miniature): a key, an inline payload, and a bulk
    /// handle for a larger payload the server pulls.
    pub rpc Update(UpdateIn, UpdateOut) {
        input {
            /// The key to store under.
            pub key: Vec<u8>,
            /// Inline payload (stored first).
            pub payload: Vec<u8>,
            /// The client's region holding the rest (NULL for none), pulled by the server.
            pub bulk: BulkRef,
        }
        output {
            /// Bytes stored under the key.
            pub stored: u64,
            /// Sum of the stored bytes, so the client can check what arrived.
            pub sum: u64,
        }
    }
}

hg::rpc! {
    /// Asks the server to stop after answering.
    pub rpc Shutdown(ShutdownIn, ShutdownOut) {
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

/// Eager message size both sides use (so a 4 KiB input with its key still fits one message).
pub const EAGER: usize = 8192;
/// Stack of each request ULT (decode, bulk create, tracing all run on it).
const ULT_STACK: usize = 256 << 10;
/// Hang guard of every wait in the demo.
pub const GUARD: Duration = Duration::from_secs(60);

/// Options for an NA class used by the demo (ofi or inproc).
pub fn na_options() -> na::InitOptions {
    na::InitOptions {
        max_unexpected_size: EAGER,
        max_expected_size: EAGER,
        ..Default::default()
    }
}

/// HG options used by the demo.
pub fn hg_options() -> InitOptions {
    InitOptions {
        request_post_init: 64,
        ..InitOptions::default()
    }
}

/// The server's store: key → bytes.
pub type Store = Arc<Mutex<HashMap<Vec<u8>, Vec<u8>>>>;

/// A running engine: one stream with its progress ULT.
pub struct Server {
    /// The address clients look up.
    pub addr: String,
    /// What the update handler stored.
    pub store: Store,
    stop: Arc<AtomicBool>,
    xs: Option<Xstream>,
    served: Arc<AtomicU64>,
    rounds: Arc<AtomicU64>,
}

impl Server {
    /// Registers the RPCs on `class`, opens a context and starts the stream and its progress ULT.
    /// With `trace_first_only`, the hop tracer is switched off once the first update's response
    /// has been sent (from the progress ULT, so the next request is not recorded).
    pub fn start(class: &Class, trace_first_only: bool) -> Result<Server, Error> {
        let store: Store = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let rounds = Arc::new(AtomicU64::new(0));
        let first = Arc::new(AtomicBool::new(trace_first_only));
        let pool: Arc<dyn Pool> = pool::create_basic(PoolKind::Fifo, PoolAccess::Mpsc);
        let (st, p, sv) = (store.clone(), pool.clone(), served.clone());
        class.register_rpc::<Update>(Some(Arc::new(move |h: Handle| {
            // Runs in trigger, inside the progress ULT: hand the request to its own ULT.
            let (st, sv) = (st.clone(), sv.clone());
            let last = first.swap(false, Ordering::AcqRel);
            let attr = ThreadAttr::new().stack_size(ULT_STACK).name("update");
            let _ = Thread::create_with(&p, &attr, move || {
                if let Err(e) = serve_update(&h, &st, last) {
                    tracing::warn!(error = %e, "demo: update failed");
                    let _ = h.respond_error(e);
                }
                sv.fetch_add(1, Ordering::Relaxed);
            });
            Ok(())
        })));
        let s2 = stop.clone();
        class.register_rpc::<Shutdown>(Some(Arc::new(move |h: Handle| {
            let s3 = s2.clone();
            h.respond(&ShutdownOut { x: 0 }, move |_| {
                s3.store(true, Ordering::Release)
            })
        })));
        let ctx = class.context_create()?;
        let addr = class.addr_to_string(&ctx.self_addr())?;
        let (s2, r2) = (stop.clone(), rounds.clone());
        let attr = ThreadAttr::new().stack_size(ULT_STACK).name("progress");
        let _ = Thread::create_with(&pool, &attr, move || {
            // dss_srv_handler's loop: progress without blocking, run callbacks, let others run.
            while !s2.load(Ordering::Acquire) {
                if let Err(e) = ctx.progress(Duration::ZERO) {
                    tracing::warn!(error = %e, "demo: progress failed");
                }
                let _ = ctx.trigger(usize::MAX);
                r2.fetch_add(1, Ordering::Release);
                let _ = abt::yield_now();
            }
            ctx.close();
        });
        let sched = Sched::create_basic(SchedKind::Basic, vec![pool], SchedConfig::new())
            .map_err(|_| Error::Fault)?;
        let xs = Xstream::create(sched).map_err(|_| Error::Fault)?;
        Ok(Server {
            addr,
            store,
            stop,
            xs: Some(xs),
            served,
            rounds,
        })
    }

    /// True once a client asked to stop (`Shutdown`).
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Rounds of the progress loop so far (the first one posts the unexpected receives).
    pub fn progress_rounds(&self) -> u64 {
        self.rounds.load(Ordering::Acquire)
    }

    /// Updates served so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Stops the progress ULT and joins the stream.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(mut xs) = self.xs.take() {
            let _ = xs.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The update ULT: decode, pull the bulk payload (waiting on an eventual the transfer's callback
/// sets from the progress ULT), store, respond.
fn serve_update(h: &Handle, store: &Store, last_traced: bool) -> Result<(), Error> {
    let input: UpdateIn = {
        let _s = tracing::debug_span!("demo.update_handler", step = "get_input").entered();
        h.get_input()?
    };
    let mut value = input.payload;
    if let Some(desc) = input.bulk.desc().cloned() {
        let ctx = h.context();
        let local = Bulk::create(
            ctx.class(),
            vec![vec![0; desc.len as usize]],
            Access::WRITE_ONLY,
        )?;
        let done: Arc<Eventual<Result<(), Error>>> = Arc::new(Eventual::new());
        {
            let _s = tracing::debug_span!("demo.update_handler", step = "bulk_pull").entered();
            let d = done.clone();
            ctx.bulk_transfer(
                BulkOp::Pull,
                &h.info().addr,
                &desc,
                0,
                &local,
                0,
                desc.len,
                move |r| {
                    let _ = d.set(r);
                },
            )?;
        }
        // Suspends this ULT (outside any span); the progress ULT keeps running.
        done.wait()?;
        value.extend_from_slice(&local.to_vec());
    }
    let _s = tracing::debug_span!("demo.update_handler", step = "store_respond").entered();
    let out = UpdateOut {
        stored: value.len() as u64,
        sum: value.iter().map(|b| u64::from(*b)).sum(),
    };
    lock(store).insert(input.key, value);
    h.respond(&out, move |_| {
        if last_traced {
            set_tracing(false);
        }
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A client of the demo server: one hg context driven by the calling thread.
pub struct Client {
    /// The client's class.
    pub class: Class,
    ctx: hg::Context,
    server: na::Addr,
    yield_when_idle: bool,
}

/// One finished update as the client saw it.
pub type Reply = Result<UpdateOut, Error>;

impl Client {
    /// Opens a context on `class` and looks `server` up.
    pub fn new(class: Class, server: &str) -> Result<Client, Error> {
        class.register_rpc::<Update>(None);
        class.register_rpc::<Shutdown>(None);
        let ctx = class.context_create()?;
        let server = class.addr_lookup(server)?;
        Ok(Client {
            class,
            ctx,
            server,
            yield_when_idle: false,
        })
    }

    /// Whether a measuring loop yields the CPU (`sched_yield`) after a round that ran no
    /// callback, which leaves the core to the engine on a small, busy machine; otherwise it
    /// spins like `fi_pingpong`.
    pub fn set_yield_when_idle(&mut self, on: bool) {
        self.yield_when_idle = on;
    }

    /// Drives progress and trigger until `done()`; errors past the hang guard.
    pub fn drive(&self, mut done: impl FnMut() -> bool) -> Result<(), Error> {
        let end = Instant::now() + GUARD;
        while !done() {
            self.ctx.progress(Duration::ZERO)?;
            self.ctx.trigger(usize::MAX)?;
            if Instant::now() > end {
                return Err(Error::Timeout);
            }
        }
        Ok(())
    }

    /// Forwards one update; `cb` gets the reply.
    pub fn forward(
        &self,
        input: &UpdateIn,
        cb: impl FnOnce(Reply) + Send + 'static,
    ) -> Result<(), Error> {
        let h = self.ctx.create(&self.server, Update::id())?;
        h.forward(input, move |h, r| cb(r.and_then(|()| h.get_output())))
    }

    /// One update, waited for.
    pub fn update(&self, input: &UpdateIn) -> Reply {
        let slot = Arc::new(Mutex::new(None));
        let s = slot.clone();
        self.forward(input, move |r| *lock(&s) = Some(r))?;
        self.drive(|| lock(&slot).is_some())?;
        let r = lock(&slot).take();
        r.unwrap_or(Err(Error::Fault))
    }

    /// Registers `data` for the server to pull.
    pub fn bulk(&self, data: Vec<u8>) -> Result<Bulk, Error> {
        Bulk::create(&self.class, vec![data], Access::READ_ONLY)
    }

    /// Asks the server to stop and waits for its answer.
    pub fn shutdown(&self) -> Result<(), Error> {
        let slot = Arc::new(Mutex::new(None));
        let s = slot.clone();
        let h = self.ctx.create(&self.server, Shutdown::id())?;
        h.forward(&ShutdownIn { x: 0 }, move |_, r| *lock(&s) = Some(r))?;
        self.drive(|| lock(&slot).is_some())?;
        let r = lock(&slot).take();
        r.unwrap_or(Err(Error::Fault))
    }

    /// Keeps `depth` updates of `payload` inline bytes in flight for `count` completions (after
    /// a warm-up, stopping early past `max_time`); returns (round trips in µs, RPCs per second).
    pub fn rate(
        &self,
        payload: usize,
        depth: usize,
        count: usize,
        max_time: Duration,
    ) -> Result<(Vec<f64>, f64), Error> {
        self.run_window(depth, count, max_time, |i| UpdateIn {
            key: format!("bench/{}", i % 16).into_bytes(),
            payload: vec![0xab; payload],
            bulk: BulkRef::NULL,
        })
    }

    /// Bulk updates of `bulk`'s whole region, `depth` in flight; returns MB/s pulled.
    pub fn bulk_rate(
        &self,
        bulk: &Bulk,
        depth: usize,
        count: usize,
        max_time: Duration,
    ) -> Result<f64, Error> {
        let r = bulk.to_ref();
        let (_, rate) = self.run_window(depth, count, max_time, |i| UpdateIn {
            key: format!("bulk/{}", i % 4).into_bytes(),
            payload: Vec::new(),
            bulk: r.clone(),
        })?;
        Ok(rate * bulk.len() as f64 / 1e6)
    }

    fn run_window(
        &self,
        depth: usize,
        count: usize,
        max_time: Duration,
        mut make: impl FnMut(usize) -> UpdateIn,
    ) -> Result<(Vec<f64>, f64), Error> {
        type Done = Arc<Mutex<Vec<(Instant, Reply)>>>;
        let done: Done = Arc::default();
        let mut rtts = Vec::with_capacity(count);
        let warm = (count / 10).clamp(depth, 64 + depth);
        let mut issued = 0usize;
        let mut inflight = 0usize;
        let mut measured_start = Instant::now();
        let mut completed = 0usize;
        let mut stop_at = None;
        loop {
            let target = stop_at.unwrap_or(warm + count);
            while inflight < depth && issued < target {
                let t = Instant::now();
                let d = done.clone();
                self.forward(&make(issued), move |r| lock(&d).push((t, r)))?;
                issued += 1;
                inflight += 1;
            }
            if inflight == 0 {
                break;
            }
            self.ctx.progress(Duration::ZERO)?;
            if self.ctx.trigger(usize::MAX)? == 0 && self.yield_when_idle {
                std::thread::yield_now();
            }
            let got: Vec<_> = std::mem::take(&mut *lock(&done));
            for (t, r) in got {
                r?;
                inflight -= 1;
                completed += 1;
                if completed == warm {
                    measured_start = Instant::now();
                } else if completed > warm {
                    rtts.push(t.elapsed().as_secs_f64() * 1e6);
                }
            }
            if stop_at.is_none() && completed > warm && measured_start.elapsed() > max_time {
                stop_at = Some(issued);
            }
            if measured_start.elapsed() > GUARD {
                return Err(Error::Timeout);
            }
        }
        let rate = rtts.len() as f64 / measured_start.elapsed().as_secs_f64();
        Ok((rtts, rate))
    }
}

/// The `p`-th percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Turns the hop tracer's recording on or off (process-wide).
pub fn set_tracing(on: bool) {
    TRACE_ON.store(on, Ordering::Release);
}

static TRACE_ON: AtomicBool = AtomicBool::new(false);
static SEQ: AtomicU64 = AtomicU64::new(0);

/// One recorded span enter or close.
#[derive(Clone, Debug)]
pub struct Hop {
    /// Global order of recording (within the process).
    pub seq: u64,
    /// Wall-clock microseconds since the Unix epoch.
    pub micros: u64,
    /// "client" or "server".
    pub side: &'static str,
    /// Nesting depth (0 = a root span).
    pub depth: usize,
    /// True for an enter, false for a close.
    pub enter: bool,
    /// Span name (`hg.forward` …).
    pub name: &'static str,
    /// The span's fields as `k=v` text.
    pub fields: String,
    /// For a close: µs since the span was first entered.
    pub took: Option<u64>,
}

impl Hop {
    /// The hop as one readable line, prefixed by its epoch µs for merging two processes' lists.
    pub fn line(&self) -> String {
        let secs = self.micros / 1_000_000 % 60;
        let us = self.micros % 1_000_000;
        let pad = "  ".repeat(self.depth);
        let what = if self.enter {
            format!("→ {} {}", self.name, self.fields)
        } else {
            format!("← {} ({} µs)", self.name, self.took.unwrap_or(0))
        };
        format!(
            "@{:016} [{:<6} {secs:02}.{us:06}] {pad}{}",
            self.micros,
            self.side,
            what.trim_end()
        )
    }
}

/// Spans of the progress loop that, alone, mean an idle round.
const IDLE: &[&str] = &["abt.ult", "hg.progress", "hg.trigger", "na.progress"];

thread_local! {
    static GROUP: RefCell<Vec<Hop>> = const { RefCell::new(Vec::new()) };
}

/// Per-span data kept in the registry's extensions.
struct SpanData {
    fields: String,
    first_enter: Option<Instant>,
}

/// The hop-recording `tracing` layer; see the module doc.
#[derive(Clone)]
pub struct HopTracer {
    default_side: &'static str,
    hops: Arc<Mutex<Vec<Hop>>>,
}

impl HopTracer {
    /// A tracer labelling hops of this process `default_side`, and hops on abt streams
    /// "server" (so one process can hold both sides, as the integration test does).
    pub fn new(default_side: &'static str) -> HopTracer {
        HopTracer {
            default_side,
            hops: Arc::default(),
        }
    }

    /// Takes the hops recorded so far (in recording order).
    pub fn take(&self) -> Vec<Hop> {
        let mut v = std::mem::take(&mut *lock(&self.hops));
        v.sort_by_key(|h| h.seq);
        v
    }

    fn side(&self) -> &'static str {
        if abt::self_rank().is_some() {
            "server"
        } else {
            self.default_side
        }
    }

    fn record(&self, hop: Hop, root_closed: bool) {
        GROUP.with(|g| {
            let mut g = g.borrow_mut();
            g.push(hop);
            if root_closed {
                let group = std::mem::take(&mut *g);
                if group.iter().any(|h| !IDLE.contains(&h.name)) {
                    lock(&self.hops).extend(group);
                }
            }
        });
    }
}

struct FieldText(String);
impl tracing::field::Visit for FieldText {
    fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", f.name(), v));
    }
    fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
        self.0.push_str(&format!("{}={} ", f.name(), v));
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn traced_name(name: &str) -> bool {
    ["na.", "hg.", "abt.", "demo."]
        .iter()
        .any(|p| name.starts_with(p))
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for HopTracer {
    fn register_callsite(&self, m: &'static Metadata<'static>) -> Interest {
        if m.is_span() && traced_name(m.name()) {
            Interest::sometimes()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, m: &Metadata<'_>, _: LayerCtx<'_, S>) -> bool {
        m.is_span() && traced_name(m.name()) && TRACE_ON.load(Ordering::Acquire)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerCtx<'_, S>) {
        let mut f = FieldText(String::new());
        attrs.record(&mut f);
        if let Some(s) = ctx.span(id) {
            s.extensions_mut().insert(SpanData {
                fields: f.0,
                first_enter: None,
            });
        }
    }

    fn on_enter(&self, id: &Id, ctx: LayerCtx<'_, S>) {
        let Some(s) = ctx.span(id) else { return };
        let fields = {
            let mut ext = s.extensions_mut();
            match ext.get_mut::<SpanData>() {
                Some(d) => {
                    d.first_enter.get_or_insert_with(Instant::now);
                    d.fields.clone()
                }
                None => String::new(),
            }
        };
        let hop = Hop {
            seq: SEQ.fetch_add(1, Ordering::Relaxed),
            micros: now_micros(),
            side: self.side(),
            depth: s.scope().count() - 1,
            enter: true,
            name: s.name(),
            fields,
            took: None,
        };
        self.record(hop, false);
    }

    fn on_close(&self, id: Id, ctx: LayerCtx<'_, S>) {
        let Some(s) = ctx.span(&id) else { return };
        let took = s
            .extensions()
            .get::<SpanData>()
            .and_then(|d| d.first_enter)
            .map(|t| t.elapsed().as_micros() as u64);
        let depth = s.scope().count() - 1;
        let hop = Hop {
            seq: SEQ.fetch_add(1, Ordering::Relaxed),
            micros: now_micros(),
            side: self.side(),
            depth,
            enter: false,
            name: s.name(),
            fields: String::new(),
            took,
        };
        self.record(hop, depth == 0);
    }
}

/// Installs `tracer` as the process-wide subscriber (recording off until [`set_tracing`]).
pub fn install(tracer: &HopTracer) -> Result<(), String> {
    use tracing_subscriber::layer::SubscriberExt;
    let sub = tracing_subscriber::registry().with(tracer.clone());
    tracing::subscriber::set_global_default(sub).map_err(|e| e.to_string())
}
