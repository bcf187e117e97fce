//! ofi over tcp;ofi_rxm and XNET: `InitOptions::sock_rcvbuf` fixes the receive buffer of each
//! side's connections (listener, accepted, outgoing), and `None` leaves them to the kernel.

mod ofi_common;

use na::plugins::ofi::{tcp_sockets, TcpSocket};
use na::MsgBuf;
use ofi_common::{class_opt, wait_op};
use std::net::SocketAddrV4;

/// What `SO_RCVBUF` reads after the plugin set `want`: the kernel doubles it; above
/// `net.core.rmem_max` the plugin leaves autotuning on (`None`).
fn expected(want: usize) -> Option<usize> {
    let max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (want <= max).then_some(2 * want)
}

/// One message each way between a server and a client with these options; returns the
/// server's address and this process's TCP sockets after it.
fn round_trip(
    proto: &str,
    server_buf: Option<usize>,
    client_buf: Option<usize>,
) -> Option<(SocketAddrV4, Vec<TcpSocket>)> {
    let opts = |b| na::InitOptions {
        sock_rcvbuf: b,
        ..Default::default()
    };
    let server = class_opt(&format!("ofi+{proto}://127.0.0.1:0"), &opts(server_buf))?;
    let client = class_opt(&format!("ofi+{proto}://127.0.0.1"), &opts(client_buf))?;
    let sctx = server.context_create(0).unwrap();
    let cctx = client.context_create(0).unwrap();
    let s = server.addr_to_string(&sctx.self_addr()).unwrap();
    let dest = client.addr_lookup(&s).unwrap();
    let at: SocketAddrV4 = s.rsplit("://").next().unwrap().parse().unwrap();

    let rop = sctx.recv_unexpected(MsgBuf::new(4096), 1);
    let reply = cctx.recv_expected(MsgBuf::new(64), &dest, 5, 2);
    let mut m = MsgBuf::new(4096);
    cctx.msg_init_unexpected(&mut m);
    let sop = cctx.send_unexpected(m, 20, &dest, 5, 3);
    let got = wait_op(&sctx, &[&cctx], rop);
    assert_eq!(got.result, Ok(()));
    let src = got.source.unwrap();
    let rs = sctx.send_expected(MsgBuf::new(64), 4, &src, 5, 4);
    assert_eq!(wait_op(&cctx, &[&sctx], reply).result, Ok(()));
    assert_eq!(wait_op(&cctx, &[&sctx], sop).result, Ok(()));
    assert_eq!(wait_op(&sctx, &[&cctx], rs).result, Ok(()));
    Some((at, tcp_sockets()))
}

/// The server's listener, its accepted connections, and the client's connections to it.
fn sides(at: SocketAddrV4, all: &[TcpSocket]) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let mut listener = Vec::new();
    let mut accepted = Vec::new();
    let mut outgoing = Vec::new();
    for s in all {
        if s.local.port() == at.port() {
            match s.peer {
                None => listener.push(s.rcvbuf),
                Some(_) => accepted.push(s.rcvbuf),
            }
        } else if s.peer == Some(at) {
            outgoing.push(s.rcvbuf);
        }
    }
    (listener, accepted, outgoing)
}

fn each_side_fixes_its_own_connections(proto: &str) {
    let (sb, cb) = (1_000_000, 600_000);
    let Some((at, all)) = round_trip(proto, Some(sb), Some(cb)) else {
        return;
    };
    let (listener, accepted, outgoing) = sides(at, &all);
    assert_eq!(listener.len(), 1, "{all:?}");
    assert!(!accepted.is_empty() && !outgoing.is_empty(), "{all:?}");
    let (se, ce) = (expected(sb), expected(cb));
    for (got, want) in [(&listener, se), (&accepted, se), (&outgoing, ce)] {
        for &g in got.iter() {
            match want {
                Some(w) => assert_eq!(g, w, "{all:?}"),
                // rmem_max too small: autotuning, which never lands on exactly twice the ask.
                None => assert_ne!(g, 2 * sb.max(cb), "{all:?}"),
            }
        }
    }
}

#[test]
fn each_side_fixes_its_own_connections_rxm() {
    each_side_fixes_its_own_connections("tcp");
}

#[test]
fn each_side_fixes_its_own_connections_xnet() {
    each_side_fixes_its_own_connections("net");
}

#[test]
fn none_leaves_the_kernel_its_autotuning() {
    let Some((at, all)) = round_trip("tcp", None, None) else {
        return;
    };
    let (listener, accepted, outgoing) = sides(at, &all);
    assert!(
        !listener.is_empty() && !accepted.is_empty() && !outgoing.is_empty(),
        "{all:?}"
    );
    // The default ask (4 MiB) was not applied anywhere.
    let fixed = 2 * na::InitOptions::default().sock_rcvbuf.unwrap();
    for g in listener.iter().chain(&accepted).chain(&outgoing) {
        assert_ne!(*g, fixed, "{all:?}");
    }
}
