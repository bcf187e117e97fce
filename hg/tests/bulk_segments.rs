//! Bulk transfers over descriptors with one NA handle per segment (`PerSegment`), over inproc and ofi+tcp: offsets across segment boundaries, range errors, and a failing part.

mod common;

use hg::bulk::{flags, BulkDesc, MemDescs};
use hg::na::plugins::inproc::{Fabric, FaultConfig};
use hg::na::{self, Access};
use hg::{Bulk, BulkOp, BulkRef, Class, Context, Error, InitOptions, Proc};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Two contexts (client owning the regions, server transferring) on one plugin.
struct Pair {
    client: Class,
    server: Class,
    cctx: Context,
    sctx: Context,
    caddr: na::Addr,
    _fabric: Option<Fabric>,
}

fn opts() -> InitOptions {
    InitOptions {
        request_post_init: 8,
        ..InitOptions::default()
    }
}

fn inproc() -> Pair {
    let fabric = Fabric::new(FaultConfig::none());
    let client = Class::from_na(fabric.class(true), opts());
    let server = Class::from_na(fabric.class(true), opts());
    let cctx = client.context_create().unwrap();
    let sctx = server.context_create().unwrap();
    let caddr = cctx.self_addr();
    Pair {
        client,
        server,
        cctx,
        sctx,
        caddr,
        _fabric: Some(fabric),
    }
}

/// An ofi+tcp class, or None (skip) without libfabric's tcp provider, unless CI=true.
fn ofi_class() -> Option<Class> {
    common::ofi_class(opts())
}

fn ofi() -> Option<Pair> {
    let (client, server) = (ofi_class()?, ofi_class()?);
    let cctx = client.context_create().unwrap();
    let sctx = server.context_create().unwrap();
    let s = client.addr_to_string(&cctx.self_addr()).unwrap();
    let caddr = server.addr_lookup(&s).unwrap();
    Some(Pair {
        client,
        server,
        cctx,
        sctx,
        caddr,
        _fabric: None,
    })
}

/// The descriptor as the server would get it: through the proc, bytes and back.
fn over_the_wire(d: &BulkDesc) -> BulkDesc {
    let r = BulkRef::from(d.clone());
    let mut buf = vec![0u8; r.encoded_size()];
    hg::proc::encode_into(&r, &mut buf).unwrap();
    let back: BulkRef = hg::proc::decode_exact(&buf).unwrap();
    back.0.unwrap()
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn split_at(data: &[u8], lens: &[usize]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 0;
    for &l in lens {
        out.push(data[at..at + l].to_vec());
        at += l;
    }
    out
}

type Calls = Arc<Mutex<Vec<Result<(), Error>>>>;

/// Starts a transfer from the server's side and drives both contexts until its one callback;
/// then a little longer, to see that no second one comes.
#[allow(clippy::too_many_arguments)]
fn transfer(
    p: &Pair,
    op: BulkOp,
    origin: &BulkDesc,
    origin_offset: u64,
    local: &Bulk,
    local_offset: u64,
    len: u64,
) -> Result<(), Error> {
    let calls: Calls = Arc::default();
    let c = calls.clone();
    p.sctx.bulk_transfer(
        op,
        &p.caddr,
        origin,
        origin_offset,
        local,
        local_offset,
        len,
        move |r| c.lock().unwrap().push(r),
    )?;
    let end = Instant::now() + Duration::from_secs(60);
    while calls.lock().unwrap().is_empty() {
        for c in [&p.sctx, &p.cctx] {
            c.progress(Duration::from_millis(1)).unwrap();
            c.trigger(usize::MAX).unwrap();
        }
        assert!(Instant::now() < end, "hang");
    }
    for _ in 0..20 {
        for c in [&p.sctx, &p.cctx] {
            c.progress(Duration::from_millis(1)).unwrap();
            c.trigger(usize::MAX).unwrap();
        }
    }
    let calls = calls.lock().unwrap();
    assert_eq!(calls.len(), 1, "exactly one completion: {calls:?}");
    calls[0]
}

fn segmented_transfers(p: &Pair) {
    // The client's region: five segments, each its own NA registration.
    let lens = [5usize, 1, 300, 4099, 20_000];
    let total: usize = lens.iter().sum();
    let data = pattern(total, 7);
    let cbulk =
        Bulk::create_per_segment(&p.client, split_at(&data, &lens), Access::READWRITE).unwrap();
    assert_eq!(cbulk.registrations().len(), lens.len());
    let desc = over_the_wire(cbulk.desc());
    assert_eq!(desc.flags & flags::REGV, 0);
    assert!(matches!(&desc.mem, MemDescs::PerSegment(v) if v.len() == lens.len()));
    assert_eq!(desc.len, total as u64);

    // Whole region into one local registration.
    let whole = Bulk::create(&p.server, vec![vec![0; total]], Access::READWRITE).unwrap();
    transfer(p, BulkOp::Pull, &desc, 0, &whole, 0, total as u64).unwrap();
    assert_eq!(whole.to_vec(), data);

    // Offsets that straddle segment boundaries on both sides, into a per-segment local region.
    let local = Bulk::create_per_segment(
        &p.server,
        vec![vec![0; 10], vec![0; 4000], vec![0; 30_000]],
        Access::READWRITE,
    )
    .unwrap();
    for (oo, lo, len) in [
        (3u64, 2u64, 4u64),   // origin segments 0..2 (5 | 1 | 300)
        (4, 9, 5_000),        // from the end of segment 0 to segment 3; local 0 → 2
        (305, 0, 20_000),     // origin 3 → 4
        (0, 0, total as u64), // everything, both sides cut
        (total as u64 - 1, 34_009, 1),
    ] {
        let before = local.to_vec();
        transfer(p, BulkOp::Pull, &desc, oo, &local, lo, len).unwrap();
        let mut want = before;
        let (oo, lo, len) = (oo as usize, lo as usize, len as usize);
        want[lo..lo + len].copy_from_slice(&data[oo..oo + len]);
        assert_eq!(
            local.to_vec(),
            want,
            "pull at origin {oo}, local {lo}, {len} bytes"
        );
    }

    // Push across the client's segments, from a per-segment local region.
    let fresh = pattern(34_010, 99);
    local.write_at(0, &fresh).unwrap();
    let (oo, lo, len) = (2usize, 7usize, 24_400usize);
    transfer(
        p,
        BulkOp::Push,
        &desc,
        oo as u64,
        &local,
        lo as u64,
        len as u64,
    )
    .unwrap();
    let mut want = data.clone();
    want[oo..oo + len].copy_from_slice(&fresh[lo..lo + len]);
    assert_eq!(cbulk.to_vec(), want);

    // Length errors: typed, nothing queued, and the context keeps transferring.
    let none = |_| panic!("a refused transfer must not complete");
    let r = p.sctx.bulk_transfer(
        BulkOp::Pull,
        &p.caddr,
        &desc,
        total as u64 - 10,
        &whole,
        0,
        11,
        none,
    );
    assert_eq!(r, Err(Error::InvalidArg));
    let r = p
        .sctx
        .bulk_transfer(BulkOp::Pull, &p.caddr, &desc, u64::MAX, &whole, 0, 2, none);
    assert_eq!(r, Err(Error::InvalidArg));
    let r = p
        .sctx
        .bulk_transfer(BulkOp::Push, &p.caddr, &desc, 0, &local, 34_000, 11, none);
    assert_eq!(r, Err(Error::InvalidArg));
    transfer(p, BulkOp::Pull, &desc, 0, &whole, 0, total as u64).unwrap();
    assert_eq!(whole.to_vec(), want);
}

/// A descriptor whose middle segment's registration refuses writes: a push across all three
/// completes once, with that part's error, after the other parts have drained.
fn failing_part(p: &Pair) {
    let nac = p.client.na();
    let segs = [
        nac.mem_register(vec![1; 3000], Access::READWRITE).unwrap(),
        nac.mem_register(vec![2; 3000], Access::READ_ONLY).unwrap(),
        nac.mem_register(vec![3; 3000], Access::READWRITE).unwrap(),
    ];
    let desc = BulkDesc {
        len: 9000,
        flags: flags::READWRITE,
        segments: segs
            .iter()
            .map(|m| hg::BulkSegment {
                base: m.segments()[0].addr as u64,
                len: 3000,
            })
            .collect(),
        mem: MemDescs::PerSegment(
            segs.iter()
                .map(|m| {
                    let h = nac.mem_handle_serialize(m);
                    (h.len() as u64, Some(h))
                })
                .collect(),
        ),
        bind: None,
        eager: None,
    };
    let desc = over_the_wire(&desc);
    let local = Bulk::create(&p.server, vec![vec![9; 9000]], Access::READWRITE).unwrap();
    let r = transfer(p, BulkOp::Push, &desc, 1000, &local, 0, 7000);
    assert!(matches!(r, Err(Error::Permission | Error::Access)), "{r:?}");
    // The writable neighbours were written (their parts drained); the read-only one was not.
    assert_eq!(&segs[0].to_vec()[..1000], &[1; 1000][..]);
    assert_eq!(&segs[0].to_vec()[1000..], &[9; 2000][..]);
    assert_eq!(segs[1].to_vec(), vec![2; 3000]);
    assert_eq!(&segs[2].to_vec()[..2000], &[9; 2000][..]);
    assert_eq!(&segs[2].to_vec()[2000..], &[3; 1000][..]);
    // And the context still transfers: pull the read-only segment's bytes.
    transfer(p, BulkOp::Pull, &desc, 3000, &local, 0, 3000).unwrap();
    assert_eq!(&local.to_vec()[..3000], &[2; 3000][..]);

    // A descriptor with a garbage handle for one segment: refused at once, typed.
    let mut bad = desc.clone();
    if let MemDescs::PerSegment(v) = &mut bad.mem {
        v[2].1 = Some(vec![0xEE; 5]);
        v[2].0 = 5;
    }
    let r = p
        .sctx
        .bulk_transfer(BulkOp::Pull, &p.caddr, &bad, 0, &local, 0, 10, |_| {
            panic!("refused transfer completed")
        });
    assert!(r.is_err(), "{r:?}");

    // Hand-built descriptors that disagree with themselves: typed errors, never a short copy.
    let mut fewer = desc.clone();
    if let MemDescs::PerSegment(v) = &mut fewer.mem {
        v.pop();
    }
    let r = p
        .sctx
        .bulk_transfer(BulkOp::Pull, &p.caddr, &fewer, 0, &local, 0, 9000, |_| {
            panic!("refused transfer completed")
        });
    assert_eq!(r, Err(Error::InvalidArg));
    let mut short = desc.clone();
    short.segments[2].len = 1000;
    let r = p
        .sctx
        .bulk_transfer(BulkOp::Pull, &p.caddr, &short, 0, &local, 0, 9000, |_| {
            panic!("refused transfer completed")
        });
    assert_eq!(r, Err(Error::InvalidArg));
    // A segment without memory (base 0, no handle) inside the range.
    let mut hole = desc.clone();
    hole.segments[1].base = 0;
    if let MemDescs::PerSegment(v) = &mut hole.mem {
        v[1].1 = None;
    }
    let r = p
        .sctx
        .bulk_transfer(BulkOp::Pull, &p.caddr, &hole, 2000, &local, 0, 2000, |_| {
            panic!("refused transfer completed")
        });
    assert_eq!(r, Err(Error::InvalidArg));
    // Outside the hole, the same descriptor transfers.
    transfer(p, BulkOp::Pull, &hole, 6000, &local, 0, 3000).unwrap();
    assert_eq!(&local.to_vec()[..3000], &segs[2].to_vec()[..]);
}

#[test]
fn per_segment_descriptors_transfer_over_inproc() {
    let p = inproc();
    segmented_transfers(&p);
    failing_part(&p);
}

#[test]
fn per_segment_descriptors_transfer_over_ofi() {
    let Some(p) = ofi() else { return };
    segmented_transfers(&p);
    failing_part(&p);
}

/// A `Bulk` is a handle (`HG_Bulk_ref_incr`): a clone shares the registration and descriptor
/// instead of copying them, and keeps the region alive after the original is gone.
#[test]
fn a_bulk_clone_shares_its_registration() {
    let p = inproc();
    let a = Bulk::create_per_segment(
        &p.client,
        vec![vec![1u8; 100], vec![2u8; 50]],
        Access::READWRITE,
    )
    .unwrap();
    let b = a.clone();
    assert!(
        std::ptr::eq(a.desc(), b.desc()),
        "the clone copied the descriptor"
    );
    assert!(std::ptr::eq(a.registrations(), b.registrations()));
    a.write_at(98, &[7, 7, 7, 7]).unwrap();
    drop(a);
    let v = b.to_vec();
    assert_eq!(v.len(), 150);
    assert_eq!(&v[96..104], &[1, 1, 7, 7, 7, 7, 2, 2]);
}
