//! `InitOptions::na` reaches the NA class `Class::init_opt` opens (`hg_init_info::na_init_info`):
//! a larger eager size and busy mode over ofi+tcp.

mod common;

use common::{Echo, EchoIn, EchoOut};

use hg::na::ProgressMode;
use hg::{Class, InitOptions, Rpc};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn class(opts: InitOptions) -> Option<Class> {
    common::ofi_class(opts)
}

#[test]
fn busy_mode_and_eager_size_reach_na() {
    let mut opts = InitOptions::default();
    opts.na.max_unexpected_size = 16 << 10;
    opts.na.max_expected_size = 16 << 10;
    opts.na.progress_mode = ProgressMode::NoBlock;
    let Some(server) = class(opts.clone()) else {
        return;
    };
    let client = class(opts).unwrap();
    assert_eq!(server.na().max_unexpected_size(), 16 << 10);
    assert_eq!(client.na().max_expected_size(), 16 << 10);
    assert_eq!(
        Class::init_opt("ofi+tcp://127.0.0.1", false, InitOptions::default())
            .unwrap()
            .na()
            .max_unexpected_size(),
        4096,
        "defaults stay Mercury's"
    );
    common::serve_echo(&server);
    client.register_rpc::<Echo>(None);
    let (sctx, cctx) = (
        server.context_create().unwrap(),
        client.context_create().unwrap(),
    );
    let to = common::lookup(&client, &server, &sctx);
    // 10 KB: above Mercury's 4 KiB eager size, within this class's 16 KiB.
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let got = Arc::new(Mutex::new(None));
    let g = got.clone();
    let h = cctx.create(&to, Echo::id()).unwrap();
    h.forward(&EchoIn { data: data.clone() }, move |h, r| {
        *g.lock().unwrap() = Some(r.and_then(|()| h.get_output::<EchoOut>()));
    })
    .unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    while got.lock().unwrap().is_none() {
        // Busy mode: each timed progress polls for its whole millisecond.
        for c in [&cctx, &sctx] {
            c.progress(Duration::from_millis(1)).unwrap();
            c.trigger(usize::MAX).unwrap();
        }
        assert!(Instant::now() < end, "echo did not complete");
    }
    let out = got.lock().unwrap().take().unwrap().unwrap();
    assert_eq!(out.data, data);
}
