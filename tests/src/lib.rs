//! Cross-layer integration tests of daos-rs; the tests live in `tests/tests/`.

pub mod rpc_demo;
