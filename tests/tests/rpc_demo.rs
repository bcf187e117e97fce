//! The README demo's engine and client over inproc in one process: the stored bytes and one RPC's hop order across na, hg and abt.

use daos_rs_tests::rpc_demo::{self, hg_options, Client, Hop, HopTracer, Server, UpdateIn};
use hg::na::plugins::inproc::{Fabric, FaultConfig};
use hg::BulkRef;
use std::time::{Duration, Instant};

/// Index of the first enter of `name` on `side` (with `field` in its fields) after `from`.
fn find(hops: &[Hop], from: usize, side: &str, name: &str, field: &str) -> Option<usize> {
    hops.iter()
        .enumerate()
        .skip(from)
        .find(|(_, h)| h.enter && h.side == side && h.name == name && h.fields.contains(field))
        .map(|(i, _)| i)
}

#[test]
fn one_update_crosses_na_hg_abt_and_is_stored() {
    let tracer = HopTracer::new("client");
    rpc_demo::install(&tracer).unwrap();
    let fabric = Fabric::new(FaultConfig::none());
    let sclass = hg::Class::from_na(fabric.class(true), hg_options());
    let cclass = hg::Class::from_na(fabric.class(false), hg_options());
    let server = Server::start(&sclass, false).unwrap();
    let end = Instant::now() + rpc_demo::GUARD;
    while server.progress_rounds() < 2 {
        assert!(Instant::now() < end, "progress ULT never ran");
        std::thread::sleep(Duration::from_millis(1));
    }
    let client = Client::new(cclass, &server.addr).unwrap();

    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 241) as u8).collect();
    let bulk = client.bulk(data.clone()).unwrap();
    let input = UpdateIn {
        key: b"dkey/akey".to_vec(),
        payload: b"inline".to_vec(),
        bulk: bulk.to_ref(),
    };
    rpc_demo::set_tracing(true);
    let out = client.update(&input).unwrap();
    // The server's last hops (the response's send) may still be closing on its stream.
    let end = Instant::now() + rpc_demo::GUARD;
    let mut hops = Vec::new();
    loop {
        hops.extend(tracer.take());
        let sent = hops
            .iter()
            .any(|h| !h.enter && h.side == "server" && h.name == "na.inject_expected");
        if sent || Instant::now() > end {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    rpc_demo::set_tracing(false);
    std::thread::sleep(Duration::from_millis(20));
    hops.extend(tracer.take());
    hops.sort_by_key(|h| h.seq);

    // What the server stored: the inline bytes, then the pulled region.
    let mut want = b"inline".to_vec();
    want.extend_from_slice(&data);
    let stored = server.store.lock().unwrap().get(&b"dkey/akey"[..]).cloned();
    assert_eq!(stored.as_deref(), Some(&want[..]));
    assert_eq!(out.stored, want.len() as u64);
    assert_eq!(out.sum, want.iter().map(|b| u64::from(*b)).sum::<u64>());

    // The hops, in order: client hg → na, server na → hg → abt ULT → handler → bulk pull over
    // na → respond → na send, client callback. Request and reply are small: NA injects them.
    let lines: Vec<String> = hops.iter().map(Hop::line).collect();
    let steps = [
        ("client", "hg.forward", "rpc_id="),
        ("client", "na.inject_unexpected", ""),
        ("server", "hg.request", "rpc_id="),
        ("server", "hg.handler", "rpc_id="),
        ("server", "abt.ult", "name=update"),
        ("server", "demo.update_handler", "step=get_input"),
        ("server", "hg.bulk_transfer", "op=Pull"),
        ("server", "na.get", ""),
        ("server", "abt.ult", "name=update"),
        ("server", "hg.respond", "rpc_id="),
        ("server", "na.inject_expected", ""),
    ];
    let mut at = 0;
    for (side, name, field) in steps {
        at = find(&hops, at, side, name, field)
            .unwrap_or_else(|| panic!("no {side} {name} {field} after hop {at}:\n{lines:#?}"));
    }
    // The client's callback comes after the server's respond.
    let respond = find(&hops, 0, "server", "hg.respond", "").unwrap();
    assert!(
        find(&hops, respond, "client", "hg.forward_cb", "rpc_id=").is_some(),
        "{lines:#?}"
    );
    // The request's receive buffer goes back to NA at the server's next progress.
    let request = find(&hops, 0, "server", "hg.request", "").unwrap();
    assert!(
        find(&hops, request, "server", "na.recv_unexpected_post", "").is_some(),
        "{lines:#?}"
    );
    // Nobody held the NA context when the handler responded: respond sent the reply itself.
    let send = find(&hops, respond, "server", "na.inject_expected", "").unwrap();
    assert!(hops[send].depth > hops[respond].depth, "{lines:#?}");
    // The server's hops ran inside ULTs: each update-path span recorded after the first ULT
    // switch-in that tracing saw is nested under an abt.ult span. Spans before it may be roots:
    // recording is switched on while the progress ULT is already running, so that run's abt.ult
    // span (created with recording off) is not in the trace, and its children show at depth 0.
    let first_ult = find(&hops, 0, "server", "abt.ult", "").expect("a server ULT was traced");
    let mut checked = 0;
    for (side, name, field) in steps.iter().filter(|s| s.0 == "server" && s.1 != "abt.ult") {
        let i = find(&hops, 0, side, name, field).unwrap();
        if i > first_ult {
            assert!(hops[i].depth >= 1, "{name} not inside a ULT:\n{lines:#?}");
            checked += 1;
        }
    }
    // The update ULT's own hops (bulk pull, respond, send) always follow its switch-in.
    assert!(
        checked >= 4,
        "too few server hops after a ULT switch-in:\n{lines:#?}"
    );

    // With tracing off nothing more is recorded, and a plain update without bulk still works.
    let out = client
        .update(&UpdateIn {
            key: b"k2".to_vec(),
            payload: vec![7; 64],
            bulk: BulkRef::NULL,
        })
        .unwrap();
    assert_eq!(out.stored, 64);
    assert!(tracer.take().is_empty());
    assert_eq!(
        server.store.lock().unwrap().get(&b"k2"[..]).cloned(),
        Some(vec![7; 64])
    );
    client.shutdown().unwrap();
    let end = Instant::now() + rpc_demo::GUARD;
    while !server.stop_requested() {
        assert!(Instant::now() < end, "shutdown not seen by the server");
        std::thread::sleep(Duration::from_millis(1));
    }
    server.stop();
}
