//! Interoperation with a real Mercury 2.4 `hg_perf_server` over ofi+tcp, when one is available.
//!
//! Set `HG_MERCURY_PERF_SERVER` to the path of an `hg_perf_server` built from Mercury's public
//! source outside this repository (e.g. `cmake -DNA_USE_OFI=ON -DBUILD_TESTING=ON` then
//! `make hg_perf_server`); without it the test is skipped. The server registers `HG_PERF_RATE`
//! (id 2) with an "iovec" input (u32 length, then the bytes) and no output, and the bulk RPCs
//! (`HG_PERF_BW_INIT` / `BW_READ` / `BW_WRITE`). `HG_MERCURY_RATE`, `HG_MERCURY_BW_WRITE` and
//! `HG_MERCURY_BW_READ` (paths of `hg_rate`, `hg_bw_write`, `hg_bw_read`) run Mercury's clients
//! against our server; each unset variable skips its test.

use hg::na::{self, MsgBuf};
use hg::proc::{Decoder, Encoder};
use hg::{Class, Error, InitOptions, Proc};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `hg_perf_proc_iovec`: u32 length, then the raw bytes.
#[derive(Debug, Clone, PartialEq)]
struct Iov(Vec<u8>);

impl Proc for Iov {
    fn encoded_size(&self) -> usize {
        4 + self.0.len()
    }
    fn encode(&self, enc: &mut Encoder<'_>) -> hg::Result<()> {
        (self.0.len() as u32).encode(enc)?;
        enc.put_bytes(&self.0)
    }
    fn decode(dec: &mut Decoder<'_>) -> hg::Result<Self> {
        let n = u32::decode(dec)? as usize;
        Ok(Iov(dec.take(n)?.to_vec()))
    }
}

const HG_PERF_RATE_INIT: u64 = 1;
const HG_PERF_RATE: u64 = 2;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server() -> Option<(Server, String)> {
    start_server_logging(Stdio::null())
}

/// `start_server` with the server's stderr (Mercury's error log) going to `stderr`.
fn start_server_logging(stderr: Stdio) -> Option<(Server, String)> {
    let path = std::env::var("HG_MERCURY_PERF_SERVER").ok()?;
    // One file per server: the tests of this binary run in parallel.
    static SERVERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = SERVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let cfg = std::env::temp_dir().join(format!("hg-interop-{}-{n}.cfg", std::process::id()));
    let _ = std::fs::remove_file(&cfg);
    let child = Command::new(path)
        .args([
            "-c",
            "ofi",
            "-p",
            "tcp",
            "-H",
            "127.0.0.1",
            "-z",
            "1048576",
            "-f",
        ])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start hg_perf_server");
    let server = Server(child);
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(s) = std::fs::read_to_string(&cfg) {
            if let Some(line) = s.lines().next().filter(|l| !l.trim().is_empty()) {
                return Some((server, line.trim().to_string()));
            }
        }
        assert!(Instant::now() < end, "hg_perf_server wrote no address");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Forwards `input` (or no input) to `id` and waits for the callback.
fn call(ctx: &hg::Context, to: &na::Addr, id: u64, input: Option<Iov>) -> Result<(), Error> {
    match input {
        Some(i) => call_with(ctx, to, id, &i),
        None => call_with(ctx, to, id, &()),
    }
}

/// Forwards `input` to `id` and waits for the callback.
fn call_with<T: Proc + 'static>(
    ctx: &hg::Context,
    to: &na::Addr,
    id: u64,
    input: &T,
) -> Result<(), Error> {
    let got = Arc::new(Mutex::new(None));
    let g = got.clone();
    let h = ctx.create(to, id).unwrap();
    let cb = move |_: &hg::Handle, r| *g.lock().unwrap() = Some(r);
    h.forward_timed(input, Duration::from_secs(30), cb).unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    while got.lock().unwrap().is_none() {
        ctx.progress(Duration::from_millis(10)).unwrap();
        ctx.trigger(usize::MAX).unwrap();
        assert!(Instant::now() < end, "hang");
    }
    let r = got.lock().unwrap().unwrap();
    r
}

fn client() -> (Class, hg::Context) {
    let client = Class::init_opt("ofi+tcp://127.0.0.1", true, InitOptions::default()).unwrap();
    client.register::<(), ()>(HG_PERF_RATE_INIT, None);
    client.register::<Iov, ()>(HG_PERF_RATE, None);
    client.register::<(), ()>(0x4242, None);
    let ctx = client.context_create().unwrap();
    (client, ctx)
}

#[test]
fn rpcs_to_a_real_mercury_server() {
    let Some((_server, addr)) = start_server() else {
        eprintln!("skipping: HG_MERCURY_PERF_SERVER not set");
        return;
    };
    let (client, ctx) = client();
    let to = client.addr_lookup(&addr).unwrap();
    // The server allocates its receive buffer in RATE_INIT (no input, no output).
    assert_eq!(call(&ctx, &to, HG_PERF_RATE_INIT, None), Ok(()));
    // Our request header and proc decoded by Mercury, its reply header decoded by us.
    assert_eq!(
        call(&ctx, &to, HG_PERF_RATE, Some(Iov((0..8).collect()))),
        Ok(())
    );
    assert_eq!(
        call(&ctx, &to, HG_PERF_RATE, Some(Iov(vec![7; 3000]))),
        Ok(())
    );
    // Unknown id: Mercury answers HG_NOENTRY.
    assert_eq!(call(&ctx, &to, 0x4242, None), Err(Error::NoEntry));

    // A captured vector: Mercury's reply bytes to WIRE.md's example request, taken raw.
    let raw = client.na().context_create(3).unwrap();
    let uh = client.na().unexpected_header_size();
    let mut body = vec![0u8; 16 + 12];
    hg::header::encode_request(
        &hg::header::RequestHeader {
            id: HG_PERF_RATE,
            flags: 0,
            cookie: 0,
        },
        hg::ChecksumLevel::None,
        &mut body,
        12,
    )
    .unwrap();
    body[16..].copy_from_slice(&[8, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7]);
    let mut buf = MsgBuf::new(uh + body.len());
    raw.msg_init_unexpected(&mut buf);
    buf.as_mut_slice()[uh..].copy_from_slice(&body);
    raw.recv_expected(MsgBuf::new(4096), &to, 99, 1);
    raw.send_unexpected(buf, uh + body.len(), &to, 99, 2);
    let reply = wait_reply(&raw);
    // 0: ret 0 | 1: flags 0 | 2..4: cookie 0 | 4..12: padding | 12..16: HG header padding.
    assert_eq!(reply, vec![0u8; 16]);
}

/// Input above the eager size: Mercury reads our bulk descriptor, deserializes the NA memory
/// handle inside it (na's ofi plugin serializes Mercury's `na_ofi` layout: the 32-byte
/// `na_ofi_mem_desc_info`, then one `struct iovec`), pulls the input from our memory and answers.
#[test]
fn overflow_to_a_real_mercury_server() {
    let Some((_server, addr)) = start_server() else {
        return;
    };
    let (client, ctx) = client();
    let to = client.addr_lookup(&addr).unwrap();
    assert_eq!(call(&ctx, &to, HG_PERF_RATE_INIT, None), Ok(()));
    assert_eq!(
        call(&ctx, &to, HG_PERF_RATE, Some(Iov(vec![0x5A; 100_000]))),
        Ok(())
    );
}

const HG_PERF_BW_INIT: u64 = 4;
const HG_PERF_BW_READ: u64 = 5;
const HG_PERF_BW_WRITE: u64 = 6;
/// `hg_bulk_op_t`.
const HG_BULK_PUSH: u32 = 0;
const HG_BULK_PULL: u32 = 1;

/// `struct hg_perf_bulk_init_info` as `hg_perf_proc_bulk_init_info` encodes it: the bulk
/// handle, then eight u32 and a u8.
#[derive(Debug, Clone)]
struct BulkInitInfo {
    bulk: hg::BulkRef,
    bulk_op: u32,
    global_handle_id: u32,
    handle_max: u32,
    bulk_count: u32,
    size_max: u32,
    comm_size: u32,
    target_rank: u32,
    target_addr_max: u32,
    verify: u8,
}

impl Proc for BulkInitInfo {
    fn encoded_size(&self) -> usize {
        self.bulk.encoded_size() + 8 * 4 + 1
    }
    fn encode(&self, enc: &mut Encoder<'_>) -> hg::Result<()> {
        self.bulk.encode(enc)?;
        for v in [
            self.bulk_op,
            self.global_handle_id,
            self.handle_max,
            self.bulk_count,
            self.size_max,
            self.comm_size,
            self.target_rank,
            self.target_addr_max,
        ] {
            v.encode(enc)?;
        }
        self.verify.encode(enc)
    }
    fn decode(dec: &mut Decoder<'_>) -> hg::Result<Self> {
        let bulk = hg::BulkRef::decode(dec)?;
        let mut u = [0u32; 8];
        for v in &mut u {
            *v = u32::decode(dec)?;
        }
        Ok(BulkInitInfo {
            bulk,
            bulk_op: u[0],
            global_handle_id: u[1],
            handle_max: u[2],
            bulk_count: u[3],
            size_max: u[4],
            comm_size: u[5],
            target_rank: u[6],
            target_addr_max: u[7],
            verify: u8::decode(dec)?,
        })
    }
}

/// `struct hg_perf_bulk_info`: bulk handle (NULL: the one sent in BW_INIT), handle id, size.
#[derive(Debug, Clone)]
struct BulkInfo {
    bulk: hg::BulkRef,
    handle_id: u32,
    size: u32,
}

impl Proc for BulkInfo {
    fn encoded_size(&self) -> usize {
        self.bulk.encoded_size() + 8
    }
    fn encode(&self, enc: &mut Encoder<'_>) -> hg::Result<()> {
        self.bulk.encode(enc)?;
        self.handle_id.encode(enc)?;
        self.size.encode(enc)
    }
    fn decode(dec: &mut Decoder<'_>) -> hg::Result<Self> {
        Ok(BulkInfo {
            bulk: hg::BulkRef::decode(dec)?,
            handle_id: u32::decode(dec)?,
            size: u32::decode(dec)?,
        })
    }
}

/// Bulk chunk geometry for the bulk tests: `BULK_COUNT` transfers of `CHUNK` bytes each.
const CHUNK: usize = 64 * 1024;
const BULK_COUNT: usize = 4;

/// `hg_perf_init_data` plus the handle id in the first int, per chunk: what Mercury's verify
/// expects in a pulled chunk and writes into a pushed one.
fn perf_pattern(handle_id: i32) -> Vec<u8> {
    let mut v = Vec::with_capacity(CHUNK * BULK_COUNT);
    for _ in 0..BULK_COUNT {
        v.extend_from_slice(&handle_id.to_ne_bytes());
        for i in 1..(CHUNK / 4) as i32 {
            v.extend_from_slice(&i.to_ne_bytes());
        }
    }
    v
}

fn bulk_client() -> (Class, hg::Context) {
    let client = Class::init_opt("ofi+tcp://127.0.0.1", true, InitOptions::default()).unwrap();
    client.register::<BulkInitInfo, ()>(HG_PERF_BW_INIT, None);
    client.register::<BulkInfo, ()>(HG_PERF_BW_READ, None);
    client.register::<BulkInfo, ()>(HG_PERF_BW_WRITE, None);
    client.register::<(), ()>(HG_PERF_DONE, None);
    let ctx = client.context_create().unwrap();
    (client, ctx)
}

fn bw_init(op: u32, bulk: &hg::Bulk) -> BulkInitInfo {
    BulkInitInfo {
        bulk: bulk.to_ref(),
        bulk_op: op,
        global_handle_id: 0,
        handle_max: 1,
        bulk_count: BULK_COUNT as u32,
        size_max: CHUNK as u32,
        comm_size: 1,
        target_rank: 0,
        target_addr_max: 1,
        verify: 1,
    }
}

const BW_STEP: BulkInfo = BulkInfo {
    bulk: hg::BulkRef::NULL,
    handle_id: 0,
    size: CHUNK as u32,
};

/// Mercury's server pulls from the region `make` registers (`hg_bw_write`'s RPC,
/// `HG_PERF_BW_WRITE`) and checks every chunk against its pattern. A mismatch is only logged
/// (the server still answers), so this reads the server's error log — and corrupts the int at
/// byte `corrupt_at` to show that the check sees our bytes. `name` keeps the log files of
/// tests running in parallel apart.
fn pull_checked_by_mercury(name: &str, make: impl FnOnce(&Class) -> hg::Bulk, corrupt_at: usize) {
    let log = std::env::temp_dir().join(format!("hg-interop-{name}-{}.log", std::process::id()));
    let file = std::fs::File::create(&log).unwrap();
    let Some((mut server, addr)) = start_server_logging(Stdio::from(file)) else {
        eprintln!("skipping: HG_MERCURY_PERF_SERVER not set");
        return;
    };
    let (client, ctx) = bulk_client();
    let to = client.addr_lookup(&addr).unwrap();
    let bulk = make(&client);
    let init = bw_init(HG_BULK_PULL, &bulk);
    assert_eq!(call_with(&ctx, &to, HG_PERF_BW_INIT, &init), Ok(()));
    for _ in 0..3 {
        assert_eq!(call_with(&ctx, &to, HG_PERF_BW_WRITE, &BW_STEP), Ok(()));
    }
    let mismatch = |log: &std::path::Path| {
        std::fs::read_to_string(log)
            .unwrap()
            .contains("Error detected in bulk transfer")
    };
    assert!(!mismatch(&log), "Mercury saw wrong bytes");
    bulk.write_at(corrupt_at, &(-5i32).to_ne_bytes()).unwrap();
    assert_eq!(call_with(&ctx, &to, HG_PERF_BW_WRITE, &BW_STEP), Ok(()));
    assert_eq!(call_with(&ctx, &to, HG_PERF_DONE, &()), Ok(()));
    let _ = server.0.wait();
    assert!(
        mismatch(&log),
        "Mercury's check did not see our corrupted int"
    );
    let _ = std::fs::remove_file(&log);
}

/// Mercury's server pushes its pattern into the region `make` registers (`hg_bw_read`'s RPC,
/// `HG_PERF_BW_READ`); the region must then hold exactly that pattern.
fn push_from_mercury(make: impl FnOnce(&Class) -> hg::Bulk) {
    let Some((_server, addr)) = start_server() else {
        eprintln!("skipping: HG_MERCURY_PERF_SERVER not set");
        return;
    };
    let (client, ctx) = bulk_client();
    let to = client.addr_lookup(&addr).unwrap();
    let bulk = make(&client);
    let init = bw_init(HG_BULK_PUSH, &bulk);
    assert_eq!(call_with(&ctx, &to, HG_PERF_BW_INIT, &init), Ok(()));
    assert_eq!(call_with(&ctx, &to, HG_PERF_BW_READ, &BW_STEP), Ok(()));
    assert!(bulk.to_vec() == perf_pattern(0), "pushed bytes differ");
    assert_eq!(call_with(&ctx, &to, HG_PERF_DONE, &()), Ok(()));
}

/// Mercury pulls from one registration; the corrupted int is chunk 2, int 100.
#[test]
fn mercury_server_pulls_from_our_bulk() {
    pull_checked_by_mercury(
        "pull",
        |c| hg::Bulk::create(c, vec![perf_pattern(0)], na::Access::READ_ONLY).unwrap(),
        2 * CHUNK + 400,
    );
}

/// Mercury pushes into one registration.
#[test]
fn mercury_server_pushes_into_our_bulk() {
    push_from_mercury(|c| {
        hg::Bulk::create(
            c,
            vec![vec![0xEE; CHUNK * BULK_COUNT]],
            na::Access::WRITE_ONLY,
        )
        .unwrap()
    });
}

/// Segment sizes that do not line up with Mercury's 64 KiB chunks: each chunk Mercury moves
/// straddles two or three of our registrations.
const UNEVEN: [usize; 5] = [10_000, 70_000, 1, 100_000, CHUNK * BULK_COUNT - 180_001];

fn uneven(data: &[u8]) -> Vec<Vec<u8>> {
    let mut at = 0;
    UNEVEN
        .iter()
        .map(|&l| {
            at += l;
            data[at - l..at].to_vec()
        })
        .collect()
}

/// A region with one NA registration per segment (a descriptor with one handle per segment,
/// `HG_BULK_REGV` clear), which Mercury addresses handle by handle.
fn per_segment(c: &Class, data: &[u8], access: na::Access) -> hg::Bulk {
    let bulk = hg::Bulk::create_per_segment(c, uneven(data), access).unwrap();
    assert_eq!(bulk.registrations().len(), UNEVEN.len());
    bulk
}

/// As `mercury_server_pulls_from_our_bulk`, from one registration per segment; the corrupted
/// int is chunk 1, int 5000 (byte 85 536, inside our fourth registration).
#[test]
fn mercury_server_pulls_from_our_per_segment_bulk() {
    pull_checked_by_mercury(
        "pullseg",
        |c| per_segment(c, &perf_pattern(0), na::Access::READ_ONLY),
        CHUNK + 20_000,
    );
}

/// Mercury pushes its pattern into a region with one registration per segment.
#[test]
fn mercury_server_pushes_into_our_per_segment_bulk() {
    push_from_mercury(|c| per_segment(c, &vec![0xEE; CHUNK * BULK_COUNT], na::Access::WRITE_ONLY));
}

fn wait_reply(raw: &na::Context) -> Vec<u8> {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        raw.progress(Duration::from_millis(10)).unwrap();
        while let Some(c) = raw.pop() {
            if c.user == 1 {
                assert_eq!(c.result, Ok(()));
                return c.buf.unwrap().as_slice()[..c.len].to_vec();
            }
        }
        assert!(Instant::now() < end, "no raw reply");
    }
}

const HG_PERF_FIRST: u64 = 3;
const HG_PERF_DONE: u64 = 7;

/// The other direction: Mercury's own `hg_rate` client (`HG_MERCURY_RATE`) against our server,
/// which registers the ids `hg_perf_server` does for the rate test. `hg_rate` exits 0 only if
/// every RPC (RATE_INIT, FIRST, RATE at each size, DONE) was answered as it expects.
#[test]
fn real_mercury_client_against_our_server() {
    let Ok(rate) = std::env::var("HG_MERCURY_RATE") else {
        eprintln!("skipping: HG_MERCURY_RATE not set");
        return;
    };
    let server = Class::init_opt("ofi+tcp://127.0.0.1", true, InitOptions::default()).unwrap();
    let rpcs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let empty = |rpcs: Arc<std::sync::atomic::AtomicUsize>| -> hg::Handler {
        Arc::new(move |h: hg::Handle| {
            rpcs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            h.respond(&(), |_| {})
        })
    };
    server.register::<(), ()>(HG_PERF_RATE_INIT, Some(empty(rpcs.clone())));
    server.register::<(), ()>(HG_PERF_FIRST, Some(empty(rpcs.clone())));
    let r2 = rpcs.clone();
    server.register::<Iov, ()>(
        HG_PERF_RATE,
        Some(Arc::new(move |h: hg::Handle| {
            let _: Iov = h.get_input()?;
            r2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            h.respond(&(), |_| {})
        })),
    );
    let d2 = done.clone();
    server.register::<(), ()>(
        HG_PERF_DONE,
        Some(Arc::new(move |h: hg::Handle| {
            d2.store(true, std::sync::atomic::Ordering::Relaxed);
            h.respond(&(), |_| {})
        })),
    );
    let ctx = server.context_create().unwrap();
    let cfg = std::env::temp_dir().join(format!("hg-interop-rate-{}.cfg", std::process::id()));
    std::fs::write(
        &cfg,
        format!("{}\n", server.addr_to_string(&ctx.self_addr()).unwrap()),
    )
    .unwrap();
    let mut child = Command::new(rate)
        .args([
            "-c",
            "ofi",
            "-p",
            "tcp",
            "-H",
            "127.0.0.1",
            "-y",
            "0",
            "-z",
            "2048",
        ])
        .args(["-x", "4", "-l", "50", "-f"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(120);
    let status = loop {
        ctx.progress(Duration::from_millis(5)).unwrap();
        ctx.trigger(usize::MAX).unwrap();
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("hg_rate did not finish");
        }
    };
    assert!(status.success(), "hg_rate failed: {status}");
    assert!(done.load(std::sync::atomic::Ordering::Relaxed));
    // 13 sizes (0, 1, 2, …, 2048) of 50 loops × 4 in flight, plus warm-up and control RPCs.
    assert!(rpcs.load(std::sync::atomic::Ordering::Relaxed) >= 12 * 50 * 4);
}

/// What our bulk server keeps per client handle (`hg_perf_bulk_init_cb`'s state).
struct BwState {
    remote: hg::BulkDesc,
    global_id: u32,
    bulk_count: u64,
    size_max: u64,
    verify: bool,
    local: hg::Bulk,
}

/// Mercury's own bulk clients (`hg_bw_write`: we pull from its memory; `hg_bw_read`: we push into
/// it) against our server, which implements the perf server's BW_INIT / BW_WRITE / BW_READ /
/// DONE. The client's descriptors carry Mercury's NA memory handles, so every transfer goes
/// through our decoding of them. Gated by `HG_MERCURY_BW_WRITE` / `HG_MERCURY_BW_READ` (paths of
/// the tools); each runs with `-v`: for a read the client checks what we pushed (and exits non-zero
/// on a mismatch), for a write we check what we pulled.
#[test]
fn real_mercury_bulk_clients_against_our_server() {
    let mut ran = false;
    for (var, id) in [
        ("HG_MERCURY_BW_WRITE", HG_PERF_BW_WRITE),
        ("HG_MERCURY_BW_READ", HG_PERF_BW_READ),
    ] {
        let Ok(tool) = std::env::var(var) else {
            eprintln!("skipping {var}: not set");
            continue;
        };
        ran = true;
        bulk_client_run(&tool, id);
    }
    if !ran {
        eprintln!("skipping: neither HG_MERCURY_BW_WRITE nor HG_MERCURY_BW_READ set");
    }
}

fn bulk_client_run(tool: &str, op_id: u64) {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let server = Class::init_opt("ofi+tcp://127.0.0.1", true, InitOptions::default()).unwrap();
    let states: Arc<Mutex<HashMap<u32, Arc<BwState>>>> = Arc::default();
    let transfers = Arc::new(AtomicUsize::new(0));
    let bad = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));

    let (st, srv) = (states.clone(), server.clone());
    server.register::<BulkInitInfo, ()>(
        HG_PERF_BW_INIT,
        Some(Arc::new(move |h: hg::Handle| {
            let i: BulkInitInfo = h.get_input()?;
            let remote = i.bulk.desc().cloned().ok_or(Error::InvalidArg)?;
            let (count, max) = (i.bulk_count as usize, i.size_max as usize);
            // A push sends `hg_perf_init_data` with the handle id in each chunk's first int.
            let mut buf = vec![0u8; count * max];
            if i.bulk_op == HG_BULK_PUSH {
                for c in buf.chunks_mut(max) {
                    c[..4].copy_from_slice(&(i.global_handle_id as i32).to_ne_bytes());
                    for (k, w) in c.chunks_exact_mut(4).enumerate().skip(1) {
                        w.copy_from_slice(&(k as i32).to_ne_bytes());
                    }
                }
            }
            let access = if i.bulk_op == HG_BULK_PUSH {
                na::Access::READ_ONLY
            } else {
                na::Access::WRITE_ONLY
            };
            let local = hg::Bulk::create(&srv, vec![buf], access)?;
            let handle_id = i.global_handle_id / i.target_addr_max.max(1);
            st.lock().unwrap().insert(
                handle_id,
                Arc::new(BwState {
                    remote,
                    global_id: i.global_handle_id,
                    bulk_count: count as u64,
                    size_max: max as u64,
                    verify: i.verify != 0,
                    local,
                }),
            );
            h.respond(&(), |_| {})
        })),
    );
    let (st, n, b) = (states.clone(), transfers.clone(), bad.clone());
    server.register::<BulkInfo, ()>(
        op_id,
        Some(Arc::new(move |h: hg::Handle| {
            let i: BulkInfo = h.get_input()?;
            let s = st
                .lock()
                .unwrap()
                .get(&i.handle_id)
                .cloned()
                .ok_or(Error::NoEntry)?;
            let remote = i.bulk.desc().cloned().unwrap_or_else(|| s.remote.clone());
            let op = if op_id == HG_PERF_BW_WRITE {
                hg::BulkOp::Pull
            } else {
                hg::BulkOp::Push
            };
            let left = Arc::new(AtomicUsize::new(s.bulk_count as usize));
            let size = i.size as u64;
            for k in 0..s.bulk_count {
                let (h2, s2, left, n, b) =
                    (h.clone(), s.clone(), left.clone(), n.clone(), b.clone());
                h.context().bulk_transfer(
                    op,
                    &h.info().addr,
                    &remote,
                    k * s.size_max,
                    &s.local,
                    k * s.size_max,
                    size,
                    move |r| {
                        if r.is_err() {
                            b.fetch_add(1, Ordering::Relaxed);
                        }
                        n.fetch_add(1, Ordering::Relaxed);
                        if left.fetch_sub(1, Ordering::AcqRel) != 1 {
                            return;
                        }
                        if op == hg::BulkOp::Pull && s2.verify {
                            let v = s2.local.to_vec();
                            for c in v.chunks(s2.size_max as usize) {
                                let c = &c[..size as usize];
                                let int = |k: usize| {
                                    i32::from_ne_bytes(c[4 * k..4 * k + 4].try_into().unwrap())
                                };
                                let ok = int(0) == s2.global_id as i32
                                    && (1..c.len() / 4).all(|k| int(k) == k as i32);
                                if !ok {
                                    b.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        let _ = h2.respond(&(), |_| {});
                    },
                )?;
            }
            Ok(())
        })),
    );
    let d = done.clone();
    server.register::<(), ()>(
        HG_PERF_DONE,
        Some(Arc::new(move |h: hg::Handle| {
            d.store(true, Ordering::Relaxed);
            h.respond(&(), |_| {})
        })),
    );
    let ctx = server.context_create().unwrap();
    let cfg =
        std::env::temp_dir().join(format!("hg-interop-bw-{}-{op_id}.cfg", std::process::id()));
    std::fs::write(
        &cfg,
        format!("{}\n", server.addr_to_string(&ctx.self_addr()).unwrap()),
    )
    .unwrap();
    let mut child = Command::new(tool)
        .args(["-c", "ofi", "-p", "tcp", "-H", "127.0.0.1"])
        .args([
            "-y", "4096", "-z", "65536", "-w", "8", "-l", "20", "-x", "2", "-v", "-f",
        ])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(180);
    let status = loop {
        ctx.progress(Duration::from_millis(5)).unwrap();
        ctx.trigger(usize::MAX).unwrap();
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("{tool} did not finish");
        }
    };
    let _ = std::fs::remove_file(&cfg);
    assert!(status.success(), "{tool} failed: {status}");
    assert!(done.load(Ordering::Relaxed), "{tool}: no DONE RPC");
    assert_eq!(
        bad.load(Ordering::Relaxed),
        0,
        "{tool}: failed or wrong transfers"
    );
    // 5 sizes (4 KiB … 64 KiB) × (20 loops + warm-up) × 2 handles × 8 transfers.
    assert!(
        transfers.load(Ordering::Relaxed) >= 5 * 20 * 2 * 8,
        "{tool}: too few transfers"
    );
}
