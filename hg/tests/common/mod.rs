//! Helpers shared by hg's integration tests: an ofi+tcp class, or a skip without libfabric's tcp provider.

#![allow(dead_code)]

use hg::{Class, Error, InitOptions};

/// Opens a listening ofi+tcp class on 127.0.0.1 with `opts`, or returns None (skip) when
/// libfabric's tcp provider is missing — except under CI=true, where that is a failure.
pub fn ofi_class(opts: InitOptions) -> Option<Class> {
    match Class::init_opt("ofi+tcp://127.0.0.1", true, opts) {
        Ok(c) => Some(c),
        Err(e @ (Error::NoDev | Error::ProtoNoSupport)) => {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "libfabric tcp provider unavailable under CI=true: {e}"
            );
            eprintln!("skipping: libfabric tcp provider unavailable ({e})");
            None
        }
        Err(e) => panic!("init ofi+tcp: {e}"),
    }
}
