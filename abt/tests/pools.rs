//! The pool conformance suite, run against both `Pool` implementations and `create_basic`.

use abt::{pool, LockPool, Pool, RingPool};
use std::sync::Arc;

#[test]
fn ring_pool_conforms() {
    abt::testing::pool_conformance(&|k, a| Arc::new(RingPool::new(k, a)) as Arc<dyn Pool>);
}

#[test]
fn lock_pool_conforms() {
    abt::testing::pool_conformance(&|k, a| Arc::new(LockPool::new(k, a)) as Arc<dyn Pool>);
}

#[test]
fn create_basic_conforms() {
    abt::testing::pool_conformance(&pool::create_basic);
}
