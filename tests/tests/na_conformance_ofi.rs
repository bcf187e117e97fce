//! The NA conformance suite on the ofi plugin on 127.0.0.1, one test per case and transport:
//! `tcp;ofi_rxm` (module `rxm`, the default `ofi+tcp`) and libfabric's native XNET (module `net`,
//! `ofi+net`). Peers are `na_peer` child processes (killed for real in `peer_killed`). Without
//! libfabric's tcp providers every case skips with a message, except under `CI=true`, where that
//! fails.

use na::testing::{self, Fixture, Peer};
use na::{Class, Error};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// One transport of the ofi plugin.
struct OfiFixture {
    /// The info string classes and peers open.
    info: &'static str,
    /// What `Class::protocol` answers for it (libfabric's provider name).
    protocol: &'static str,
    /// The largest message it injects: rxm grants the 4 KiB asked (its bounce buffers), XNET
    /// keeps its own 128 bytes.
    max_inject: usize,
}

impl OfiFixture {
    /// The fixture, or None (skip) when the provider is unavailable outside CI.
    fn new(info: &'static str, protocol: &'static str, max_inject: usize) -> Option<OfiFixture> {
        match Class::initialize(info, true) {
            Ok(_) => Some(OfiFixture {
                info,
                protocol,
                max_inject,
            }),
            Err(e @ (Error::NoDev | Error::ProtoNoSupport)) => {
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("libfabric's {protocol} provider is unavailable under CI=true: {e}");
                }
                eprintln!("skipping the ofi conformance suite: {protocol} unavailable ({e})");
                None
            }
            Err(e) => panic!("ofi init {info}: {e}"),
        }
    }
}

struct ChildPeer {
    child: Child,
    addr: String,
}

impl Peer for ChildPeer {
    fn addr(&self) -> &str {
        &self.addr
    }
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildPeer {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Fixture for OfiFixture {
    fn class(&self) -> Class {
        Class::initialize(self.info, true).expect("ofi class")
    }

    fn spawn_peer(&self) -> Box<dyn Peer> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_na_peer"))
            .arg(self.info)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn na_peer");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("na_peer prints its address");
        let addr = line.trim().to_string();
        assert!(
            addr.starts_with(&format!("ofi+{}://127.0.0.1:", self.protocol)),
            "na_peer said {line:?}"
        );
        Box::new(ChildPeer { child, addr })
    }

    fn check_class(&self, class: &Class) {
        assert_eq!(class.plugin_name(), "ofi");
        assert_eq!(class.protocol(), self.protocol);
        assert_eq!(class.max_inject_size(), self.max_inject);
        assert_eq!(class.unexpected_header_size(), 16);
    }
}

macro_rules! cases {
    ($info:expr, $protocol:expr, $inject:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                if let Some(fx) = OfiFixture::new($info, $protocol, $inject) {
                    fx.check_class(&fx.class());
                    testing::$name(&fx);
                }
            }
        )*
    };
}

/// `ofi+tcp`: rxm over tcp, as Mercury opens it on libfabric 1.17.
mod rxm {
    use super::*;
    na::conformance_cases!(cases, "ofi+tcp://127.0.0.1", "tcp;ofi_rxm", 4096);
}

/// `ofi+net`: XNET, libfabric's native RDM over TCP (`net` in libfabric 1.17).
mod net {
    use super::*;
    na::conformance_cases!(cases, "ofi+net://127.0.0.1", "net", 128);
}
