//! inproc round trips between two contexts driven by two threads: a sanity figure for the plugin's
//! per-message cost (`cargo run --release -p na --example inproc_pingpong -- [iterations] [size]
//! [busy]`).

use na::plugins::inproc::{Fabric, FaultConfig};
use na::MsgBuf;
use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let iters: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let size: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);
    // "busy": progress never blocks (both threads spin), else progress sleeps until woken.
    let mode = args.next();
    let busy = mode.as_deref() == Some("busy");
    let fabric = Fabric::new(FaultConfig::none());
    let class = fabric.class(true);
    let client = class.context_create(0).unwrap();
    let server = class.context_create(1).unwrap();
    let (ca, sa) = (client.self_addr(), server.self_addr());
    if mode.as_deref() == Some("single") {
        // One thread drives both contexts: the plugin's own cost, no thread wake-ups.
        let start = Instant::now();
        let mut buf = MsgBuf::new(size);
        for i in 0..iters {
            server.recv_expected(MsgBuf::new(size), &ca, i, 0);
            client.recv_expected(MsgBuf::new(size), &sa, i, 0);
            client.send_expected(buf, size, &sa, i, 0);
            server.progress(Duration::ZERO).unwrap();
            let mut echo = None;
            while let Some(c) = server.pop() {
                if c.kind == na::OpKind::RecvExpected {
                    echo = c.buf;
                }
            }
            server.send_expected(echo.expect("delivered in one pass"), size, &ca, i, 0);
            client.progress(Duration::ZERO).unwrap();
            let mut back = None;
            while let Some(c) = client.pop() {
                if c.kind == na::OpKind::RecvExpected {
                    back = c.buf;
                }
            }
            buf = back.expect("delivered in one pass");
        }
        let el = start.elapsed();
        println!(
            "inproc {size} B one thread: {iters} round trips in {el:?}: {:.2} us/rt",
            el.as_secs_f64() * 1e6 / f64::from(iters)
        );
        return;
    }
    let wait = if busy {
        Duration::ZERO
    } else {
        Duration::from_millis(100)
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            // Echo server: expected receive for tag i, reply with the same bytes.
            let mut buf = MsgBuf::new(size);
            for i in 0..iters {
                server.recv_expected(buf, &ca, i, 0);
                let c = loop {
                    match server.pop() {
                        Some(c) if c.kind == na::OpKind::RecvExpected => break c,
                        Some(_) => continue,
                        None => {
                            server.progress(wait).unwrap();
                        }
                    }
                };
                server.send_expected(c.buf.unwrap(), size, &ca, i, 0);
                buf = MsgBuf::new(size);
            }
            // Drain the last send completions.
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(1) {
                server.progress(Duration::from_millis(10)).unwrap();
                while server.pop().is_some() {}
            }
        });
        let start = Instant::now();
        let mut buf = MsgBuf::new(size);
        for i in 0..iters {
            client.recv_expected(MsgBuf::new(size), &sa, i, 0);
            client.send_expected(buf, size, &sa, i, 0);
            let mut back = None;
            while back.is_none() {
                match client.pop() {
                    Some(c) if c.kind == na::OpKind::RecvExpected => back = c.buf,
                    Some(_) => {}
                    None => {
                        client.progress(wait).unwrap();
                    }
                }
            }
            buf = back.unwrap();
        }
        let el = start.elapsed();
        println!(
            "inproc {size} B{}: {iters} round trips in {el:?}: {:.2} us/rt, {:.0} rt/s",
            if busy { " busy-polling" } else { "" },
            el.as_secs_f64() * 1e6 / f64::from(iters),
            f64::from(iters) / el.as_secs_f64()
        );
    });
}
