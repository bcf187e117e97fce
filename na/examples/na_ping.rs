//! NA ping between two processes: `server`, `client` (one traced ping + a rate summary), and
//! `bench` (latency, message rate, put/get bandwidth) over any info string (`ofi+tcp://…`).
//!
//! ```text
//! na_ping server ofi+tcp://127.0.0.1:0            # prints "listening on <addr>"
//! na_ping client <addr> [--bench] [--iters N]      # --bench: the full table of docs/perf.md
//! na_ping bench [ofi+tcp://127.0.0.1:0]            # spawns the server itself, then runs --bench
//! ```
//!
//! Requests are unexpected messages (16-byte ofi header + payload, the 32-bit tag as CQ data);
//! replies are expected messages with the same tag, as Mercury's RPCs use NA. Both sides spin
//! on `progress(0)` in busy mode (`ProgressMode::NoBlock`), like `fi_pingpong`.
//! `NA_PING_STALE=<k>` posts `k` expected receives that nothing matches on the client before the
//! table (`NA_PING_STALE_CANCEL=1`: and cancels them, as timed-out RPCs do).

use na::{
    Access, Addr, Class, Completion, Context, InitOptions, MemHandle, MsgBuf, OpKind, ProgressMode,
};
use std::io::Write;
use std::time::{Duration, Instant};

/// First payload byte: what the server does with a request.
const PING: u8 = 0; // echo the payload size back
const STREAM: u8 = 1; // no reply
const STREAM_END: u8 = 2; // 8-byte ack
const HELLO: u8 = 3; // reply with the server's serialized memory handle
const QUIT: u8 = 4;

const RECVS: usize = 256;
const MAX_MSG: usize = 8192;
const REGION: usize = 1 << 20;
const GUARD: Duration = Duration::from_secs(30);

/// Both sides spin, so both run in busy mode (`NA_NO_BLOCK`, CQs without a wait object), as
/// `fi_pingpong` polls its CQ; `NA_PING_BLOCK=1` keeps the blocking mode's wait fds for comparison.
fn opts() -> InitOptions {
    let block = std::env::var("NA_PING_BLOCK").is_ok_and(|v| v == "1");
    InitOptions {
        max_unexpected_size: MAX_MSG,
        max_expected_size: MAX_MSG,
        progress_mode: if block {
            ProgressMode::Block
        } else {
            ProgressMode::NoBlock
        },
        ..Default::default()
    }
}

/// Wall-clock seconds within the minute, to the microsecond: both processes print the same clock,
/// so the hops of one ping line up across them.
fn clock() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{:02}.{:06}", d.as_secs() % 60, d.subsec_micros())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("bench");
    let res = match mode {
        "server" => server(args.get(2).map_or("ofi+tcp://127.0.0.1:0", |s| s)),
        "client" => {
            let Some(addr) = args.get(2) else {
                eprintln!("usage: na_ping client <server address> [--bench] [--iters N]");
                std::process::exit(2);
            };
            let bench = args.iter().any(|a| a == "--bench");
            let iters = args
                .iter()
                .position(|a| a == "--iters")
                .and_then(|i| args.get(i + 1))
                .and_then(|s| s.parse().ok())
                .unwrap_or(if bench { 10_000 } else { 2_000 });
            client(addr, bench, iters)
        }
        "bench" => bench(args.get(2).map_or("ofi+tcp://127.0.0.1:0", |s| s)),
        _ => {
            eprintln!("usage: na_ping server|client|bench …");
            std::process::exit(2);
        }
    };
    if let Err(e) = res {
        eprintln!("na_ping {mode}: {e}");
        std::process::exit(1);
    }
}

/// Spins until a completion is available; panics past the hang guard.
fn next(ctx: &Context) -> Result<Completion, String> {
    let deadline = Instant::now() + GUARD;
    loop {
        if let Some(c) = ctx.pop() {
            return Ok(c);
        }
        ctx.progress(Duration::ZERO).map_err(|e| e.to_string())?;
        if Instant::now() > deadline {
            return Err("no completion within the hang guard".into());
        }
    }
}

fn server(info: &str) -> Result<(), String> {
    let class = Class::initialize_opt(info, true, &opts()).map_err(|e| e.to_string())?;
    let ctx = class.context_create(0).map_err(|e| e.to_string())?;
    let me = class
        .addr_to_string(&ctx.self_addr())
        .map_err(|e| e.to_string())?;
    let region = class
        .mem_register(vec![0u8; REGION], Access::READWRITE)
        .map_err(|e| e.to_string())?;
    let handle = class.mem_handle_serialize(&region);
    println!("server: listening on {me} (provider {})", class.protocol());
    std::io::stdout().flush().ok();
    let hdr = class.unexpected_header_size();
    for i in 0..RECVS {
        ctx.recv_unexpected(class.msg_buf_alloc(MAX_MSG), i as u64);
    }
    let mut reply_bufs: Vec<MsgBuf> = (0..64).map(|_| class.msg_buf_alloc(MAX_MSG)).collect();
    let mut traced = false;
    loop {
        let c = loop {
            if let Some(c) = ctx.pop() {
                break c;
            }
            ctx.progress(Duration::ZERO).map_err(|e| e.to_string())?;
        };
        match c.kind {
            OpKind::RecvUnexpected => {
                let buf = c.buf.expect("receive hands its buffer back");
                let Ok(()) = c.result else {
                    eprintln!("server: bad request dropped: {:?}", c.result);
                    ctx.recv_unexpected(buf, c.user);
                    continue;
                };
                let src = c.source.expect("unexpected receive has a source");
                let kind = buf.as_slice().get(hdr).copied().unwrap_or(PING);
                let payload = c.len.saturating_sub(hdr);
                if !traced && kind == PING {
                    traced = true;
                    println!(
                        "  [server {}] 3. recv_unexpected: {} bytes (header {hdr} + payload {payload}), tag {}, from {}",
                        clock(),
                        c.len,
                        c.tag,
                        class.addr_to_string(&src).unwrap_or_default()
                    );
                    println!(
                        "  [server {}] 4. send_expected: reply of {payload} bytes, same tag",
                        clock()
                    );
                    std::io::stdout().flush().ok();
                }
                let reply = match kind {
                    PING => Some(payload),
                    STREAM_END => Some(8),
                    HELLO => {
                        let mut r = reply_bufs
                            .pop()
                            .unwrap_or_else(|| class.msg_buf_alloc(MAX_MSG));
                        r.as_mut_slice()[..handle.len()].copy_from_slice(&handle);
                        ctx.send_expected(r, handle.len(), &src, c.tag, u64::MAX);
                        None
                    }
                    QUIT => {
                        println!("server: quit requested");
                        return Ok(());
                    }
                    _ => None,
                };
                if let Some(n) = reply {
                    let r = reply_bufs
                        .pop()
                        .unwrap_or_else(|| class.msg_buf_alloc(MAX_MSG));
                    ctx.send_expected(r, n, &src, c.tag, u64::MAX);
                }
                ctx.recv_unexpected(buf, c.user);
            }
            OpKind::SendExpected => {
                if let Err(e) = c.result {
                    eprintln!("server: reply failed: {e}");
                }
                if let Some(b) = c.buf {
                    reply_bufs.push(b);
                }
            }
            _ => {}
        }
    }
}

struct Client {
    class: Class,
    ctx: Context,
    server: Addr,
    hdr: usize,
    tag: u32,
    send_bufs: Vec<MsgBuf>,
    recv_bufs: Vec<MsgBuf>,
}

impl Client {
    fn new(addr: &str) -> Result<Client, String> {
        let class = Class::initialize_opt("ofi+tcp://127.0.0.1", false, &opts())
            .or_else(|_| Class::initialize_opt(addr, false, &opts()))
            .map_err(|e| e.to_string())?;
        let ctx = class.context_create(0).map_err(|e| e.to_string())?;
        let server = class.addr_lookup(addr).map_err(|e| e.to_string())?;
        let hdr = class.unexpected_header_size();
        let mut send_bufs = Vec::new();
        for _ in 0..64 {
            let mut b = class.msg_buf_alloc(MAX_MSG);
            ctx.msg_init_unexpected(&mut b);
            send_bufs.push(b);
        }
        let recv_bufs = (0..64).map(|_| class.msg_buf_alloc(MAX_MSG)).collect();
        Ok(Client {
            class,
            ctx,
            server,
            hdr,
            tag: 0,
            send_bufs,
            recv_bufs,
        })
    }

    /// Sends one request of `payload` bytes (first byte `kind`) expecting a reply when `reply`.
    fn request(&mut self, kind: u8, payload: usize, reply: bool) -> Result<(), String> {
        self.tag = self.tag.wrapping_add(1) & 0x7fff_ffff;
        let tag = self.tag;
        if reply {
            let rb = self.recv_bufs.pop().ok_or("out of receive buffers")?;
            self.ctx.recv_expected(rb, &self.server, tag, 1);
        }
        let mut sb = match self.send_bufs.pop() {
            Some(b) => b,
            None => {
                self.reap_send()?;
                self.send_bufs.pop().ok_or("out of send buffers")?
            }
        };
        sb.as_mut_slice()[self.hdr] = kind;
        self.ctx
            .send_unexpected(sb, self.hdr + payload.max(1), &self.server, tag, 0);
        Ok(())
    }

    fn reap_send(&mut self) -> Result<(), String> {
        let c = next(&self.ctx)?;
        self.absorb(c).map(|_| ())
    }

    /// Files a completion's buffer away; returns true for a reply.
    fn absorb(&mut self, c: Completion) -> Result<bool, String> {
        c.result.map_err(|e| format!("{:?} failed: {e}", c.kind))?;
        let is_reply = c.kind == OpKind::RecvExpected;
        if let Some(b) = c.buf {
            if is_reply {
                self.recv_bufs.push(b);
            } else {
                self.send_bufs.push(b);
            }
        }
        Ok(is_reply)
    }

    /// Waits for one reply (absorbing send completions on the way); returns the reply's length.
    fn wait_reply(&mut self) -> Result<usize, String> {
        loop {
            let c = next(&self.ctx)?;
            let len = c.len;
            if self.absorb(c)? {
                return Ok(len);
            }
        }
    }

    fn ping(&mut self, payload: usize) -> Result<usize, String> {
        self.request(PING, payload, true)?;
        self.wait_reply()
    }
}

/// `NA_PING_STALE=<k>`: posts `k` expected receives from the server under tags the pings never
/// use, left posted until the endpoint closes: the cost of receives whose message never comes,
/// which libfabric's tagged matching passes over for every reply. With `NA_PING_STALE_CANCEL=1`
/// each is cancelled at once instead, as an RPC timing out against a hung peer cancels its
/// reply's receive (what the plugin then does about a reply that may still come is what is
/// measured). Returns `k`.
fn stale_receives(cl: &mut Client) -> Result<usize, String> {
    let k = std::env::var("NA_PING_STALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0usize);
    let cancel = std::env::var("NA_PING_STALE_CANCEL").is_ok_and(|v| v == "1");
    for i in 0..k {
        // Ping tags count up from 1; these sit far above them.
        let tag = 0x4000_0000 + i as u32;
        let op = cl
            .ctx
            .recv_expected(cl.class.msg_buf_alloc(64), &cl.server, tag, 1);
        if cancel {
            cl.ctx.cancel(op).map_err(|e| e.to_string())?;
            // Its `Canceled` completion; any other (a send finishing late) is filed as usual.
            loop {
                let c = next(&cl.ctx)?;
                if c.op == op {
                    break;
                }
                cl.absorb(c)?;
            }
        }
    }
    Ok(k)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn client(addr: &str, bench: bool, iters: usize) -> Result<(), String> {
    let mut cl = Client::new(addr)?;
    println!(
        "client: {} → server {addr} (provider {})",
        cl.class
            .addr_to_string(&cl.ctx.self_addr())
            .unwrap_or_default(),
        cl.class.protocol()
    );
    // One traced ping.
    let t0 = Instant::now();
    cl.tag += 1;
    let tag = cl.tag;
    let rb = cl.recv_bufs.pop().ok_or("no buffer")?;
    println!(
        "  [client {}] 1. recv_expected posted for the reply (tag {tag}, from the server)",
        clock()
    );
    let mut sb = cl.send_bufs.pop().ok_or("no buffer")?;
    sb.as_mut_slice()[cl.hdr] = PING;
    sb.as_mut_slice()[cl.hdr + 1..cl.hdr + 8].copy_from_slice(b"ping!!!");
    let wire: String = sb.as_slice()[..cl.hdr + 8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    cl.ctx.recv_expected(rb, &cl.server, tag, 1);
    cl.ctx.send_unexpected(sb, cl.hdr + 8, &cl.server, tag, 0);
    println!(
        "  [client {}] 2. send_unexpected posted: {} bytes on the wire (fi_senddata, tag {tag} as CQ data):\n                         {} | {}",
        clock(),
        cl.hdr + 8,
        &wire[..cl.hdr * 2],
        &wire[cl.hdr * 2..]
    );
    let n = cl.wait_reply()?;
    let rtt = t0.elapsed().as_secs_f64() * 1e6;
    println!("  [client {}] 5. recv_expected completed: reply of {n} bytes, {rtt:.0} µs after hop 1 (the first ping includes connection setup)", clock());
    std::io::stdout().flush().ok();

    let stale = stale_receives(&mut cl)?;
    if stale > 0 {
        println!(
            "\n{stale} expected receives from the server that no reply matches (NA_PING_STALE)"
        );
    }

    let sizes: &[usize] = &[8, 64, 4096];
    println!(
        "\n{:>7} {:>10} {:>10} {:>10} {:>14}",
        "payload", "rtt p50", "rtt p99", "rtt mean", "msg rate"
    );
    for &size in sizes {
        let (p50, p99, mean) = latency(&mut cl, size, iters)?;
        let rate = message_rate(&mut cl, size, iters.max(1000))?;
        println!(
            "{:>6}B {:>8.2}µs {:>8.2}µs {:>8.2}µs {:>10.0} msg/s",
            size, p50, p99, mean, rate
        );
    }
    if bench {
        rma(&mut cl)?;
    }
    cl.request(QUIT, 1, false)?;
    // Let the quit go out before the endpoint closes.
    let _ = next(&cl.ctx);
    Ok(())
}

/// Round-trip latencies (µs) of `iters` pings after a warm-up: (p50, p99, mean).
fn latency(cl: &mut Client, size: usize, iters: usize) -> Result<(f64, f64, f64), String> {
    for _ in 0..iters / 10 + 10 {
        cl.ping(size)?;
    }
    let mut v = Vec::with_capacity(iters);
    let start = Instant::now();
    for _ in 0..iters {
        let t = Instant::now();
        cl.ping(size)?;
        v.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let mean = start.elapsed().as_secs_f64() * 1e6 / iters as f64;
    v.sort_by(f64::total_cmp);
    Ok((percentile(&v, 0.5), percentile(&v, 0.99), mean))
}

/// One-way messages per second: windows of 32 requests, the last one acknowledged.
fn message_rate(cl: &mut Client, size: usize, count: usize) -> Result<f64, String> {
    const WINDOW: usize = 32;
    let windows = count.div_ceil(WINDOW);
    let start = Instant::now();
    for _ in 0..windows {
        for i in 0..WINDOW {
            let last = i + 1 == WINDOW;
            cl.request(if last { STREAM_END } else { STREAM }, size, last)?;
        }
        cl.wait_reply()?;
        // Reap the window's send completions so buffers come back.
        while cl.send_bufs.len() < WINDOW + 8 {
            cl.reap_send()?;
        }
    }
    Ok((windows * WINDOW) as f64 / start.elapsed().as_secs_f64())
}

fn rma(cl: &mut Client) -> Result<(), String> {
    cl.request(HELLO, 1, true)?;
    let len = cl.wait_reply()?;
    let bytes = cl.recv_bufs.last().ok_or("no reply buffer")?.as_slice()[..len].to_vec();
    let remote = cl
        .class
        .mem_handle_deserialize(&bytes)
        .map_err(|e| e.to_string())?;
    let local: MemHandle = cl
        .class
        .mem_register(vec![0x5a; REGION], Access::READWRITE)
        .map_err(|e| e.to_string())?;
    println!("\n{:>7} {:>12} {:>12}", "size", "put", "get");
    for (size, count) in [(64 << 10, 2000usize), (1 << 20, 200usize)] {
        let mut bw = [0f64; 2];
        for (i, put) in [true, false].into_iter().enumerate() {
            const DEPTH: usize = 4;
            let start = Instant::now();
            let mut inflight = 0;
            for _ in 0..count {
                if inflight == DEPTH {
                    let c = next(&cl.ctx)?;
                    c.result.map_err(|e| format!("rma: {e}"))?;
                    inflight -= 1;
                }
                if put {
                    cl.ctx
                        .put(&local, 0, &remote, 0, size as u64, &cl.server, 0);
                } else {
                    cl.ctx
                        .get(&local, 0, &remote, 0, size as u64, &cl.server, 0);
                }
                inflight += 1;
            }
            while inflight > 0 {
                next(&cl.ctx)?.result.map_err(|e| format!("rma: {e}"))?;
                inflight -= 1;
            }
            bw[i] = (size * count) as f64 / start.elapsed().as_secs_f64() / 1e6;
        }
        println!("{:>6}K {:>8.0} MB/s {:>7.0} MB/s", size >> 10, bw[0], bw[1]);
    }
    Ok(())
}

fn bench(info: &str) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = std::process::Command::new(exe)
        .args(["server", info])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let out = child.stdout.take().ok_or("no server stdout")?;
    let mut reader = std::io::BufReader::new(out);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut reader, &mut line).map_err(|e| e.to_string())?;
    print!("{line}");
    // Keep forwarding the server's lines (its hops) so its stdout never breaks.
    std::thread::spawn(move || {
        for l in std::io::BufRead::lines(reader).map_while(Result::ok) {
            println!("{l}");
        }
    });
    let addr = line
        .split_whitespace()
        .find(|w| w.contains("://"))
        .ok_or_else(|| format!("server said: {line}"))?
        .to_string();
    let iters = std::env::var("NA_PING_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let r = client(&addr, true, iters);
    if r.is_err() {
        let _ = child.kill();
    }
    let _ = child.wait();
    r
}
