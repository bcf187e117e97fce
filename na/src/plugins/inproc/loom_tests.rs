//! Loom models of the inproc mailboxes: senders on other threads against the receiver's progress,
//! cancel against delivery, and the doorbell that wakes a sleeping progress.

use super::*;
use crate::{Context, MsgBuf};
use loom::thread;

fn model(f: impl Fn() + Sync + Send + 'static) {
    crate::sync::loom_model(2, f);
}

fn drain(ctx: &Context, out: &mut Vec<Completion>) {
    while let Some(c) = ctx.pop() {
        out.push(c);
    }
}

/// Two sender threads (one unexpected, one expected message) against a receiver that posts and
/// progresses: each message is delivered once, and each send completes once.
#[test]
fn loom_mailbox_two_senders() {
    model(|| {
        let f = Fabric::new(FaultConfig::none());
        let class = f.class(true);
        let r = class.context_create(0).unwrap();
        let a = class.context_create(1).unwrap();
        let b = class.context_create(2).unwrap();
        let dest = r.self_addr();
        let a_addr = a.self_addr();
        let d1 = dest.clone();
        let ta = thread::spawn(move || {
            a.send_expected(MsgBuf::from_slice(b"e"), 1, &d1, 7, 1);
            a
        });
        let tb = thread::spawn(move || {
            let mut buf = MsgBuf::new(HEADER_SIZE + 1);
            b.msg_init_unexpected(&mut buf);
            b.send_unexpected(buf, HEADER_SIZE + 1, &dest, 9, 2);
            b
        });
        r.recv_unexpected(MsgBuf::new(32), 10);
        r.recv_expected(MsgBuf::new(32), &a_addr, 7, 11);
        let mut got = Vec::new();
        while got.len() < 2 {
            r.progress(Duration::ZERO).unwrap();
            drain(&r, &mut got);
            thread::yield_now();
        }
        let (a, b) = (ta.join().unwrap(), tb.join().unwrap());
        got.sort_by_key(|c| c.user);
        assert_eq!((got[0].user, got[0].tag, got[0].result), (10, 9, Ok(())));
        assert_eq!((got[1].user, got[1].tag, got[1].result), (11, 7, Ok(())));
        for s in [a, b] {
            let done = s.close();
            assert_eq!(done.len(), 1);
            assert_eq!(done[0].result, Ok(()));
        }
        assert!(r.close().is_empty());
    });
}

/// The sender cancels while the receiver's progress delivers: one completion for the send
/// (Canceled only if the bytes did not arrive), and the receive matches that outcome.
#[test]
fn loom_mailbox_cancel_vs_delivery() {
    model(|| {
        let f = Fabric::new(FaultConfig::none());
        let class = f.class(true);
        let r = class.context_create(0).unwrap();
        let a = class.context_create(1).unwrap();
        r.recv_expected(MsgBuf::new(8), &a.self_addr(), 1, 0);
        let op = a.send_expected(MsgBuf::from_slice(b"x"), 1, &r.self_addr(), 1, 0);
        let tr = thread::spawn(move || {
            r.progress(Duration::ZERO).unwrap();
            r
        });
        a.cancel(op).unwrap();
        let r = tr.join().unwrap();
        let sent = a.close();
        let recvd = r.close();
        assert_eq!(sent.len(), 1);
        assert_eq!(recvd.len(), 1);
        match sent[0].result {
            Ok(()) => assert_eq!(recvd[0].result, Ok(())),
            Err(Error::Canceled) => assert_eq!(recvd[0].result, Err(Error::Canceled)),
            other => panic!("unexpected {other:?}"),
        }
    });
}

/// The sender closes its context while the receiver's progress delivers: close returns only
/// once the send has its one completion, and both sides agree on whether the bytes arrived.
#[test]
fn loom_mailbox_close_vs_delivery() {
    model(|| {
        let f = Fabric::new(FaultConfig::none());
        let class = f.class(true);
        let r = class.context_create(0).unwrap();
        let a = class.context_create(1).unwrap();
        r.recv_expected(MsgBuf::new(8), &a.self_addr(), 1, 0);
        a.send_expected(MsgBuf::from_slice(b"x"), 1, &r.self_addr(), 1, 0);
        let tr = thread::spawn(move || {
            r.progress(Duration::ZERO).unwrap();
            r
        });
        let sent = a.close();
        let recvd = tr.join().unwrap().close();
        assert_eq!((sent.len(), recvd.len()), (1, 1));
        assert_eq!(sent[0].result, recvd[0].result, "both Ok or both Canceled");
    });
}

/// A ring from another thread is never lost, whether it lands before or during the sleep.
#[test]
fn loom_doorbell_no_lost_wakeup() {
    model(|| {
        let bell = Arc::new(Doorbell::new());
        let b2 = bell.clone();
        let t = thread::spawn(move || b2.ring());
        assert!(bell.wait(None));
        t.join().unwrap();
    });
}
