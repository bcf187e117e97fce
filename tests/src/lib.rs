//! Cross-layer integration tests of daos-rs; the tests live in `tests/tests/`.
