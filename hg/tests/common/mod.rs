//! Helpers shared by hg's integration tests: an ofi+tcp class (or a skip without libfabric's tcp provider), and the Echo RPC.

#![allow(dead_code)]

use hg::{Class, Handle, InitOptions};
use std::sync::Arc;

/// Opens a listening ofi+tcp class on 127.0.0.1 with `opts`, or returns None (skip) when
/// libfabric's tcp provider is missing — except under CI=true, where that is a failure.
pub fn ofi_class(opts: InitOptions) -> Option<Class> {
    ofi_na(&opts.na).map(|na| Class::from_na(na, opts))
}

/// The address of `server`'s context `sctx` as `client` looks it up (from its string form).
pub fn lookup(client: &Class, server: &Class, sctx: &hg::Context) -> hg::na::Addr {
    client
        .addr_lookup(&server.addr_to_string(&sctx.self_addr()).unwrap())
        .unwrap()
}

/// The NA half of [`ofi_class`]: a listening ofi+tcp NA class, or None (skip) as there.
pub fn ofi_na(opts: &hg::na::InitOptions) -> Option<hg::na::Class> {
    ofi_na_at("ofi+tcp://127.0.0.1", opts)
}

/// [`ofi_class`] over the ofi transport `info` names (`"ofi+net://127.0.0.1"`: XNET).
pub fn ofi_class_at(info: &str, opts: InitOptions) -> Option<Class> {
    ofi_na_at(info, &opts.na).map(|na| Class::from_na(na, opts))
}

/// [`ofi_na`] over the ofi transport `info` names.
pub fn ofi_na_at(info: &str, opts: &hg::na::InitOptions) -> Option<hg::na::Class> {
    match hg::na::Class::initialize_opt(info, true, opts) {
        Ok(c) => Some(c),
        Err(e @ (hg::na::Error::NoDev | hg::na::Error::ProtoNoSupport)) => {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "libfabric provider for {info} unavailable under CI=true: {e}"
            );
            eprintln!("skipping: libfabric provider for {info} unavailable ({e})");
            None
        }
        Err(e) => panic!("init {info}: {e}"),
    }
}

hg::rpc! {
    /// Echo.
    pub rpc Echo(EchoIn, EchoOut) {
        input {
            /// Payload.
            pub data: Vec<u8>,
        }
        output {
            /// Payload back.
            pub data: Vec<u8>,
        }
    }
}

/// Registers [`Echo`] on `class` with a handler that answers each input with its own bytes.
pub fn serve_echo(class: &Class) {
    class.register_rpc::<Echo>(Some(Arc::new(|h: Handle| {
        let i: EchoIn = h.get_input()?;
        h.respond(&EchoOut { data: i.data }, |_| {})
    })));
}
