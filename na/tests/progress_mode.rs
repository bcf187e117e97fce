//! `ProgressMode::NoBlock` (Mercury's `NA_NO_BLOCK`) on both plugins: no wait fd, messages still
//! complete, and a `progress` with a timeout polls on the CPU instead of sleeping.

mod ofi_common;

use na::{Class, Context, InitOptions, MsgBuf, OpKind, ProgressMode};
use ofi_common::{class_opt, connect};
use std::time::{Duration, Instant};

fn opts(mode: ProgressMode) -> InitOptions {
    InitOptions {
        progress_mode: mode,
        ..InitOptions::default()
    }
}

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write into.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Wall time and CPU time of one `progress(timeout)` on an idle context.
fn idle_progress(ctx: &Context, timeout: Duration) -> (Duration, Duration) {
    let (w0, c0) = (Instant::now(), thread_cpu());
    ctx.progress(timeout).unwrap();
    (w0.elapsed(), thread_cpu() - c0)
}

/// One unexpected request and its expected reply between two contexts, both driven only by
/// `progress` calls with a timeout (so a busy context must poll its way to each completion).
fn round_trip(server: &Class, client: &Class) {
    let (sctx, cctx, saddr) = connect(server, client);
    let hdr = client.unexpected_header_size();
    sctx.recv_unexpected(server.msg_buf_alloc(4096), 1);
    cctx.recv_expected(client.msg_buf_alloc(4096), &saddr, 9, 2);
    let mut m = client.msg_buf_alloc(4096);
    cctx.msg_init_unexpected(&mut m);
    m.as_mut_slice()[hdr..hdr + 4].copy_from_slice(b"ping");
    cctx.send_unexpected(m, hdr + 4, &saddr, 9, 3);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut replied, mut got_reply) = (false, false);
    while !got_reply {
        assert!(Instant::now() < deadline, "round trip did not finish");
        sctx.progress(Duration::from_millis(2)).unwrap();
        while let Some(c) = sctx.pop() {
            if c.kind == OpKind::RecvUnexpected {
                assert_eq!(c.result, Ok(()));
                let b = c.buf.unwrap();
                assert_eq!(&b.as_slice()[hdr..hdr + 4], b"ping");
                let mut r = MsgBuf::new(16);
                r.as_mut_slice()[..4].copy_from_slice(b"pong");
                sctx.send_expected(r, 4, &c.source.unwrap(), c.tag, 4);
                replied = true;
            }
        }
        cctx.progress(Duration::from_millis(2)).unwrap();
        while let Some(c) = cctx.pop() {
            if c.kind == OpKind::RecvExpected {
                assert!(replied);
                assert_eq!(c.result, Ok(()));
                assert_eq!(&c.buf.unwrap().as_slice()[..4], b"pong");
                got_reply = true;
            }
        }
    }
}

/// A busy context spends its timeout on the CPU; a blocking one sleeps it away. Loose bounds:
/// a spinning thread on a loaded 2-core machine still gets well over 5 % of a CPU, and a sleeping
/// one next to nothing.
fn check_modes(busy: &Context, block: &Context) {
    let t = Duration::from_millis(300);
    let (wall, cpu) = idle_progress(busy, t);
    assert!(wall >= t, "busy progress returned early: {wall:?}");
    assert!(
        cpu >= t / 20,
        "busy progress slept: {cpu:?} CPU in {wall:?}"
    );
    let (wall, cpu) = idle_progress(block, t);
    assert!(wall >= t / 2, "blocking progress returned early: {wall:?}");
    assert!(
        cpu < t / 20,
        "blocking progress spun: {cpu:?} CPU in {wall:?}"
    );
}

#[test]
fn ofi_busy_mode_has_no_wait_fd_and_still_completes() {
    let Some(busy_s) = class_opt("ofi+tcp://127.0.0.1:0", &opts(ProgressMode::NoBlock)) else {
        return;
    };
    let busy_c = class_opt("ofi+tcp://127.0.0.1", &opts(ProgressMode::NoBlock)).unwrap();
    let block = class_opt("ofi+tcp://127.0.0.1", &opts(ProgressMode::Block)).unwrap();
    let (bctx, kctx) = (
        busy_s.context_create(1).unwrap(),
        block.context_create(0).unwrap(),
    );
    assert_eq!(
        bctx.wait_fd(),
        None,
        "busy mode opens CQs without a wait fd"
    );
    assert!(kctx.wait_fd().is_some(), "blocking mode has a CQ wait fd");
    check_modes(&bctx, &kctx);
    round_trip(&busy_s, &busy_c);
}

#[test]
fn inproc_busy_mode_polls_and_still_completes() {
    let fabric = na::plugins::inproc::Fabric::new(Default::default());
    let busy_s = fabric.class_opt(true, &opts(ProgressMode::NoBlock));
    let busy_c = fabric.class_opt(false, &opts(ProgressMode::NoBlock));
    let block = fabric.class_opt(false, &opts(ProgressMode::Block));
    let (bctx, kctx) = (
        busy_c.context_create(1).unwrap(),
        block.context_create(0).unwrap(),
    );
    check_modes(&bctx, &kctx);
    round_trip(&busy_s, &busy_c);
}

/// `Duration::MAX` means "until something happens", not a panic adding it to `Instant::now()`:
/// a wake from another thread ends the wait.
#[test]
fn progress_with_duration_max_is_ended_by_a_wake() {
    let fabric = na::plugins::inproc::Fabric::new(Default::default());
    let mut classes = vec![fabric.class(true)];
    if let Some(c) = class_opt("ofi+tcp://127.0.0.1", &InitOptions::default()) {
        classes.push(c);
    }
    for class in classes {
        let ctx = class.context_create(0).unwrap();
        let w = ctx.waker();
        let waker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            w.wake();
        });
        ctx.progress(Duration::MAX).unwrap();
        waker.join().unwrap();
    }
}
