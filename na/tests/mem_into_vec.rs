//! `MemHandle::into_vec`: deregistration that hands the memory back, without a copy when it can.

mod ofi_common;

use na::{Access, Class};

fn check(class: &Class) {
    // Sole owner, one segment: the very same buffer comes back, with what was written into it.
    let v = vec![7u8; 4096];
    let ptr = v.as_ptr();
    let mh = class.mem_register(v, Access::READWRITE).unwrap();
    mh.write_at(10, b"abc").unwrap();
    let back = mh.into_vec();
    assert_eq!(
        back.as_ptr(),
        ptr,
        "a sole owner gets its buffer back uncopied"
    );
    assert_eq!(back.len(), 4096);
    assert_eq!(&back[9..14], &[7, b'a', b'b', b'c', 7]);

    // Another clone alive: a copy, and the clone still reads the registered bytes.
    let mh = class
        .mem_register(vec![1u8, 2, 3, 4], Access::READWRITE)
        .unwrap();
    let other = mh.clone();
    assert_eq!(mh.into_vec(), vec![1, 2, 3, 4]);
    assert_eq!(other.to_vec(), vec![1, 2, 3, 4]);
    assert_eq!(other.ref_count(), 1);

    // Several segments: concatenated in order.
    let mh = class
        .mem_register_segments(vec![vec![1u8, 2], vec![], vec![3u8, 4, 5]], Access::READ)
        .unwrap();
    assert_eq!(mh.into_vec(), vec![1, 2, 3, 4, 5]);
}

#[test]
fn into_vec_on_inproc() {
    let fabric = na::plugins::inproc::Fabric::new(Default::default());
    check(&fabric.class(true));
}

#[test]
fn into_vec_on_ofi() {
    if let Some(c) = ofi_common::class("ofi+tcp://127.0.0.1") {
        check(&c);
    }
}
