//! `rpc_demo server|client`: the README demo — one traced "update" RPC through na, hg and abt, then a throughput summary.
//!
//! ```text
//! rpc_demo server ofi+tcp://127.0.0.1:0    # prints "server: listening on <addr>", serves until Shutdown
//! rpc_demo client <addr> [--quick]         # one traced RPC, then the summary; stops the server
//!                                          # (DEMO_YIELD=1: the client yields the CPU when idle)
//! ```
//!
//! Each hop line starts with `@<epoch µs>` so `scripts/demo.sh` can merge both processes' lists
//! by time; the rest is `[side ss.µµµµµµ] → span fields` (enter) or `← span (µs)` (close).

use daos_rs_tests::rpc_demo::{
    self, hg_options, na_options, percentile, Client, HopTracer, Server, UpdateIn,
};
use hg::na;
use std::io::Write;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("");
    let res = match mode {
        "server" => server(args.get(2).map_or("ofi+tcp://127.0.0.1:0", |s| s)),
        "client" => match args.get(2) {
            Some(addr) => client(addr, args.iter().any(|a| a == "--quick")),
            None => Err("usage: rpc_demo client <server address> [--quick]".into()),
        },
        _ => Err("usage: rpc_demo server [info] | rpc_demo client <addr>".into()),
    };
    if let Err(e) = res {
        eprintln!("rpc_demo {mode}: {e}");
        std::process::exit(1);
    }
}

fn open(info: &str, listen: bool) -> Result<hg::Class, String> {
    let na = na::Class::initialize_opt(info, listen, &na_options())
        .map_err(|e| format!("opening {info}: {e}"))?;
    Ok(hg::Class::from_na(na, hg_options()))
}

fn print_hops(tracer: &HopTracer) {
    let mut out = std::io::stdout().lock();
    for h in tracer.take() {
        let _ = writeln!(out, "{}", h.line());
    }
    let _ = out.flush();
}

fn server(info: &str) -> Result<(), String> {
    let tracer = HopTracer::new("server");
    rpc_demo::install(&tracer)?;
    let class = open(info, true)?;
    let server = Server::start(&class, true).map_err(|e| e.to_string())?;
    // Record from the second progress round on (the first posts the 64 unexpected receives).
    while server.progress_rounds() < 2 {
        std::thread::sleep(Duration::from_millis(1));
    }
    rpc_demo::set_tracing(true);
    println!(
        "server: listening on {} (provider {}); one abt stream: progress ULT (hg progress + trigger + yield), one ULT per update",
        server.addr,
        class.na().protocol()
    );
    std::io::stdout().flush().ok();
    // Recording stops when the first update's response has been sent.
    while server.served() == 0 && !server.stop_requested() {
        std::thread::sleep(Duration::from_millis(1));
    }
    // Let the progress round that sent the response close its spans.
    std::thread::sleep(Duration::from_millis(50));
    print_hops(&tracer);
    while !server.stop_requested() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let served = server.served();
    let keys = server.store.lock().map(|s| s.len()).unwrap_or(0);
    server.stop();
    println!("server: stopped after {served} updates, {keys} keys stored");
    Ok(())
}

fn client(addr: &str, quick: bool) -> Result<(), String> {
    let tracer = HopTracer::new("client");
    rpc_demo::install(&tracer)?;
    // The server's transport, without its port ("ofi+net://127.0.0.1:4242" → "ofi+net://127.0.0.1").
    let info = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let class = open(info, false).or_else(|_| open(addr, false))?;
    let mut cl = Client::new(class, addr).map_err(|e| format!("client context / lookup: {e}"))?;
    cl.set_yield_when_idle(std::env::var_os("DEMO_YIELD").is_some());
    println!("client: → server {addr}");

    // The traced RPC: a 64-byte inline payload plus a 64 KiB region the server pulls.
    let bulk_data: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 251) as u8).collect();
    let payload = format!("{:.<64}", "hello, engine: the inline bytes of one update").into_bytes();
    let want_sum: u64 = payload
        .iter()
        .chain(&bulk_data)
        .map(|b| u64::from(*b))
        .sum();
    let bulk = cl
        .bulk(bulk_data)
        .map_err(|e| format!("registering the bulk region: {e}"))?;
    let input = UpdateIn {
        key: b"demo/dkey-1/akey-1".to_vec(),
        payload,
        bulk: bulk.to_ref(),
    };
    rpc_demo::set_tracing(true);
    let out = cl.update(&input);
    rpc_demo::set_tracing(false);
    let out = out.map_err(|e| format!("traced update: {e}"))?;
    print_hops(&tracer);
    println!(
        "client: update done: server stored {} bytes (64 inline + 65536 pulled), sum {} ({})",
        out.stored,
        out.sum,
        if out.sum == want_sum && out.stored == 64 + 65536 {
            "matches"
        } else {
            "MISMATCH"
        }
    );

    // Throughput, tracing off.
    let t = if quick {
        Duration::from_millis(300)
    } else {
        Duration::from_millis(1500)
    };
    println!(
        "\n{:>7} {:>9} {:>10} {:>10} {:>13}",
        "input", "in flight", "rtt p50", "rtt p99", "rate"
    );
    for size in [0usize, 64, 4096] {
        for depth in [1usize, 16] {
            let (mut rtts, rate) = cl
                .rate(size, depth, 200_000, t)
                .map_err(|e| format!("rate step ({size} B input, {depth} in flight): {e}"))?;
            rtts.sort_by(f64::total_cmp);
            println!(
                "{:>6}B {:>9} {:>8.1}µs {:>8.1}µs {:>9.0} RPC/s",
                size,
                depth,
                percentile(&rtts, 0.5),
                percentile(&rtts, 0.99),
                rate
            );
        }
    }
    println!("\n{:>7} {:>9} {:>12}", "bulk", "in flight", "PULL");
    for size in [64usize << 10, 1 << 20] {
        let region = cl
            .bulk(vec![0x5a; size])
            .map_err(|e| format!("registering the {size} B bulk region: {e}"))?;
        let mbs = cl
            .bulk_rate(&region, 4, 100_000, t)
            .map_err(|e| format!("bulk rate step ({size} B, 4 in flight): {e}"))?;
        println!("{:>6}K {:>9} {:>7.0} MB/s", size >> 10, 4, mbs);
    }
    cl.shutdown().map_err(|e| format!("shutdown: {e}"))?;
    Ok(())
}
