//! Overflowed inputs and outputs in a row, of changing sizes and contents: each RPC gets its own bytes back although the context reuses its registered overflow buffers, over inproc and ofi+tcp, with and without payload checksums.

mod common;

use hg::na::plugins::inproc::{Fabric, FaultConfig};
use hg::{ChecksumLevel, Class, Handle, InitOptions, Rpc};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

hg::rpc! {
    /// Answers its input reversed: both directions overflow when large.
    pub rpc Rev(RevIn, RevOut) {
        input {
            /// The bytes.
            pub data: Vec<u8>,
        }
        output {
            /// The bytes, reversed.
            pub data: Vec<u8>,
        }
    }
}

const GUARD: Duration = Duration::from_secs(60);

/// Sizes that share a pull buffer capacity (5000 and 9000 bytes both fit 16 KiB), a larger one
/// in between, and an exact power of two; repeated so every buffer is reused.
const SIZES: [usize; 7] = [9000, 5000, 9000, 30000, 16384, 5000, 9000];

fn content(rpc: usize, n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + rpc * 31) as u8).collect()
}

fn opts(level: ChecksumLevel) -> InitOptions {
    InitOptions {
        request_post_init: 8,
        checksum_level: level,
        ..InitOptions::default()
    }
}

fn run(server: Class, client: Class) {
    server.register_rpc::<Rev>(Some(Arc::new(|h: Handle| {
        let i: RevIn = h.get_input()?;
        let mut data = i.data;
        data.reverse();
        h.respond(&RevOut { data }, |r| assert_eq!(r, Ok(())))
    })));
    client.register_rpc::<Rev>(None);
    let sctx = server.context_create().unwrap();
    let cctx = client.context_create().unwrap();
    let saddr = common::lookup(&client, &server, &sctx);
    let h = cctx.create(&saddr, Rev::id()).unwrap();
    for round in 0..3 {
        for (k, &n) in SIZES.iter().enumerate() {
            let rpc = round * SIZES.len() + k;
            let input = content(rpc, n);
            let got = Arc::new(Mutex::new(None));
            let g = got.clone();
            h.forward(
                &RevIn {
                    data: input.clone(),
                },
                move |h, r| {
                    *g.lock().unwrap() = Some(r.and_then(|()| h.get_output::<RevOut>()));
                },
            )
            .unwrap();
            let end = Instant::now() + GUARD;
            while got.lock().unwrap().is_none() {
                for c in [&cctx, &sctx] {
                    c.progress(Duration::from_millis(1)).unwrap();
                    c.trigger(usize::MAX).unwrap();
                }
                assert!(Instant::now() < end, "rpc {rpc} hangs");
            }
            let out = got.lock().unwrap().take().unwrap().unwrap();
            let mut want = input;
            want.reverse();
            assert_eq!(out.data.len(), n, "rpc {rpc}: wrong length");
            assert!(out.data == want, "rpc {rpc} ({n} B): bytes of another RPC");
        }
    }
    drop(h);
    cctx.close();
    sctx.close();
}

#[test]
fn reused_overflow_buffers_carry_each_rpcs_bytes_inproc() {
    for level in [ChecksumLevel::None, ChecksumLevel::Payload] {
        let fabric = Fabric::new(FaultConfig::none());
        run(
            Class::from_na(fabric.class(true), opts(level)),
            Class::from_na(fabric.class(true), opts(level)),
        );
    }
}

fn ofi_class(level: ChecksumLevel) -> Option<Class> {
    common::ofi_class(opts(level))
}

#[test]
fn reused_overflow_buffers_carry_each_rpcs_bytes_ofi() {
    for level in [ChecksumLevel::None, ChecksumLevel::Payload] {
        let (Some(server), Some(client)) = (ofi_class(level), ofi_class(level)) else {
            return;
        };
        run(server, client);
    }
}
