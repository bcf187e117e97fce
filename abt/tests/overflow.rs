//! Stack overflow death test: a ULT that overflows its guarded stack aborts the process with a
//! message naming the ULT and its stack size. The test re-runs itself as a child process.

use abt::{pool, Access, PoolKind, Sched, SchedConfig, SchedKind, Thread, ThreadAttr, Xstream};
use std::process::Command;

const CHILD: &str = "ABT_OVERFLOW_CHILD";

#[inline(never)]
fn recurse(n: u64) -> u64 {
    let buf = std::hint::black_box([n as u8; 512]);
    if n == 0 {
        return buf[0] as u64;
    }
    recurse(n - 1) + std::hint::black_box(buf[7]) as u64
}

/// The child half: run only by the test below, through `--ignored`.
#[test]
#[ignore = "child process of stack_overflow_aborts_with_ult_name_and_size"]
fn overflow_child() {
    assert!(
        std::env::var_os(CHILD).is_some(),
        "run through the death test"
    );
    let p = pool::create_basic(PoolKind::FifoWait, Access::Mpsc);
    let attr = ThreadAttr::new()
        .name("deep-recursion")
        .stack_size(16 * 1024);
    let t = Thread::create_with(&p, &attr, || {
        std::hint::black_box(recurse(1_000_000));
    });
    let mut xs = Xstream::create(
        Sched::create_basic(SchedKind::Basic, vec![p], SchedConfig::new()).unwrap(),
    )
    .unwrap();
    let _ = t.join();
    let _ = xs.join();
    unreachable!("the overflow must abort the process");
}

#[test]
fn stack_overflow_aborts_with_ult_name_and_size() {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args([
            "--exact",
            "overflow_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "child must die: {stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(libc_sigabrt()),
        "child aborted: {stderr}"
    );
    assert!(
        stderr.contains("stack overflow in ULT 'deep-recursion'"),
        "names the ULT: {stderr}"
    );
    assert!(
        stderr.contains("stack of 16384 bytes"),
        "gives the stack size: {stderr}"
    );
}

fn libc_sigabrt() -> i32 {
    6
}
