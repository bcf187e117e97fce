//! `RecvPool`: unexpected receives pre-posted in batches, grown on demand up to a cap, as Mercury's
//! `request_post_init` / `request_post_incr` do (DESIGN §3).

use crate::class::Context;
use crate::error::Error;
use crate::msg::{MsgBuf, Tag};
use crate::op::{Completion, OpKind};
use crate::Addr;

/// How a [`RecvPool`] posts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecvPoolConfig {
    /// Buffers posted at creation (Mercury's `request_post_init`, CaRT's `D_POST_INIT`: 512).
    pub init: usize,
    /// Buffers added when every posted one is in use (`request_post_incr`, `D_POST_INCR`: 512).
    pub incr: usize,
    /// Most buffers the pool owns, posted or handed out.
    pub cap: usize,
    /// Size of each buffer; 0 means the class's maximum unexpected size.
    pub buf_size: usize,
    /// The `user` token the pool posts with, so the caller can route completions back to it.
    pub user: u64,
}

impl Default for RecvPoolConfig {
    fn default() -> RecvPoolConfig {
        RecvPoolConfig {
            init: 512,
            incr: 512,
            cap: 4096,
            buf_size: 0,
            user: u64::MAX,
        }
    }
}

/// One unexpected message taken from the pool: the buffer is the caller's until [`RecvPool::repost`].
#[derive(Debug)]
pub struct Received {
    /// The buffer, plugin header first.
    pub buf: MsgBuf,
    /// Bytes received, header included.
    pub len: usize,
    /// The sender.
    pub source: Addr,
    /// The message's tag.
    pub tag: Tag,
}

/// Pre-posted unexpected receives of one context, driven by the thread that drives the context.
///
/// The pool posts `init` buffers, and `incr` more whenever all posted ones are taken, until it owns
/// `cap`. At the cap with none posted it is **exhausted**: [`RecvPool::exhaustions`] counts the
/// episode and a `tracing` warning says so; incoming unexpected messages then wait in the
/// transport (inproc holds them up to its hold cap, libfabric's rxm buffers them) and are delivered
/// as soon as the caller hands a buffer back with [`RecvPool::repost`].
#[doc(alias = "HG_Core_context_post")]
#[doc(alias = "request_post_init")]
#[doc(alias = "request_post_incr")]
#[derive(Debug)]
pub struct RecvPool {
    cfg: RecvPoolConfig,
    buf_size: usize,
    total: usize,
    posted: usize,
    exhaustions: u64,
    exhausted: bool,
}

impl RecvPool {
    /// A pool on `ctx` that posts its first batch now.
    pub fn new(ctx: &Context, cfg: RecvPoolConfig) -> RecvPool {
        let buf_size = if cfg.buf_size == 0 {
            ctx.class().max_unexpected_size()
        } else {
            cfg.buf_size
        };
        let mut pool = RecvPool {
            cfg,
            buf_size,
            total: 0,
            posted: 0,
            exhaustions: 0,
            exhausted: false,
        };
        let n = pool.cfg.init.min(pool.cfg.cap);
        pool.grow(ctx, n);
        pool
    }

    fn grow(&mut self, ctx: &Context, n: usize) {
        for _ in 0..n {
            ctx.recv_unexpected(ctx.class().msg_buf_alloc(self.buf_size), self.cfg.user);
        }
        self.total += n;
        self.posted += n;
        if n > 0 {
            tracing::debug!(
                added = n,
                total = self.total,
                "na.recv_pool: posted a batch"
            );
        }
    }

    /// Whether `c` is one of this pool's receives.
    pub fn owns(&self, c: &Completion) -> bool {
        c.kind == OpKind::RecvUnexpected && c.user == self.cfg.user
    }

    /// Accounts one of the pool's completions. A message comes back as `Ok(Received)`; a receive
    /// that failed (`Overflow`) is reposted at once and reported as its error; one cancelled at
    /// teardown gives its buffer up. Then, if nothing is posted, the pool grows or is exhausted.
    pub fn take(&mut self, ctx: &Context, c: Completion) -> Result<Received, Error> {
        debug_assert!(self.owns(&c));
        self.posted = self.posted.saturating_sub(1);
        let out = match (c.result, c.buf, c.source) {
            (Ok(()), Some(buf), Some(source)) => Ok(Received {
                buf,
                len: c.len,
                source,
                tag: c.tag,
            }),
            (Err(Error::Canceled), _, _) => {
                self.total = self.total.saturating_sub(1);
                return Err(Error::Canceled);
            }
            (r, buf, _) => {
                let e = r.err().unwrap_or(Error::ProtocolError);
                tracing::warn!(error = %e, "na.recv_pool: unexpected receive failed; reposting");
                match buf {
                    Some(b) => self.repost(ctx, b),
                    None => self.total = self.total.saturating_sub(1),
                }
                Err(e)
            }
        };
        if self.posted == 0 {
            let room = self.cfg.cap.saturating_sub(self.total);
            if room > 0 {
                self.grow(ctx, self.cfg.incr.max(1).min(room));
            } else if !self.exhausted {
                self.exhausted = true;
                self.exhaustions += 1;
                tracing::warn!(
                    cap = self.cfg.cap,
                    "na.recv_pool: every pre-posted receive is in use; messages wait in the transport"
                );
            }
        }
        out
    }

    /// Accounts a completion returned by [`Context::close`] (the context is gone, so nothing is
    /// reposted): a Canceled receive gives its buffer up.
    pub fn take_closed(&mut self, c: Completion) -> Result<Received, Error> {
        self.posted = self.posted.saturating_sub(1);
        match (c.result, c.buf, c.source) {
            (Ok(()), Some(buf), Some(source)) => Ok(Received {
                buf,
                len: c.len,
                source,
                tag: c.tag,
            }),
            (r, _, _) => {
                self.total = self.total.saturating_sub(1);
                Err(r.err().unwrap_or(Error::ProtocolError))
            }
        }
    }

    /// Hands a buffer back (after the message was consumed) and posts it again.
    pub fn repost(&mut self, ctx: &Context, buf: MsgBuf) {
        let buf = if buf.capacity() < self.buf_size {
            ctx.class().msg_buf_alloc(self.buf_size)
        } else {
            buf
        };
        ctx.recv_unexpected(buf, self.cfg.user);
        self.posted += 1;
        self.exhausted = false;
    }

    /// Receives currently posted.
    pub fn posted(&self) -> usize {
        self.posted
    }

    /// Buffers the pool owns (posted or handed out).
    pub fn total(&self) -> usize {
        self.total
    }

    /// Times the pool ran out (all `cap` buffers taken, none posted).
    pub fn exhaustions(&self) -> u64 {
        self.exhaustions
    }

    /// Whether it is out right now.
    pub fn is_exhausted(&self) -> bool {
        self.exhausted
    }

    /// Size of each buffer.
    pub fn buf_size(&self) -> usize {
        self.buf_size
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::plugins::inproc::{Fabric, FaultConfig, HEADER_SIZE};
    use std::time::Duration;

    #[test]
    fn grows_by_batches_to_the_cap_then_waits_for_reposts() {
        let f = Fabric::new(FaultConfig::none());
        let class = f.class(true);
        let server = class.context_create(0).unwrap();
        let client = class.context_create(1).unwrap();
        let cfg = RecvPoolConfig {
            init: 4,
            incr: 3,
            cap: 10,
            buf_size: 64,
            user: 77,
        };
        let mut pool = RecvPool::new(&server, cfg);
        assert_eq!((pool.posted(), pool.total()), (4, 4));
        for i in 0..14u32 {
            let mut b = MsgBuf::new(HEADER_SIZE + 4);
            client.msg_init_unexpected(&mut b);
            b.as_mut_slice()[HEADER_SIZE..].copy_from_slice(&i.to_le_bytes());
            client.send_unexpected(b, HEADER_SIZE + 4, &server.self_addr(), i, 0);
        }
        let mut got = Vec::new();
        let mut totals = Vec::new();
        for _ in 0..100 {
            server.progress(Duration::ZERO).unwrap();
            while let Some(c) = server.pop() {
                assert!(pool.owns(&c));
                got.push(pool.take(&server, c).unwrap());
                totals.push(pool.total());
            }
        }
        // 4, grown by 3 to 7, by 3 to 10 (the cap): 10 delivered, 4 waiting in the transport.
        assert_eq!(got.len(), 10);
        assert_eq!(totals[3], 7);
        assert_eq!(*totals.last().unwrap(), 10);
        assert!(pool.is_exhausted());
        assert_eq!(pool.exhaustions(), 1);
        let tags: Vec<_> = got.iter().map(|r| r.tag).collect();
        assert_eq!(tags, (0..10).collect::<Vec<_>>());
        for r in got.drain(..) {
            pool.repost(&server, r.buf);
        }
        for _ in 0..20 {
            server.progress(Duration::ZERO).unwrap();
            while let Some(c) = server.pop() {
                got.push(pool.take(&server, c).unwrap());
            }
        }
        assert_eq!(
            got.iter().map(|r| r.tag).collect::<Vec<_>>(),
            [10, 11, 12, 13]
        );
        assert!(!pool.is_exhausted());
        // Teardown cancels what is posted; the pool gives those buffers up.
        for c in server.close() {
            assert_eq!(pool.take_closed(c).err(), Some(Error::Canceled));
        }
        assert_eq!(pool.posted(), 0);
        assert_eq!(pool.total(), 4, "the four handed out remain the caller's");
    }

    #[test]
    fn a_failed_receive_is_reposted_and_the_pool_keeps_serving() {
        let f = Fabric::new(FaultConfig::none());
        let class = f.class(true);
        let server = class.context_create(0).unwrap();
        let client = class.context_create(1).unwrap();
        let cfg = RecvPoolConfig {
            init: 1,
            incr: 1,
            cap: 1,
            buf_size: 16,
            user: 5,
        };
        let mut pool = RecvPool::new(&server, cfg);
        for len in [64, 12] {
            let mut b = MsgBuf::new(len);
            client.msg_init_unexpected(&mut b);
            client.send_unexpected(b, len, &server.self_addr(), len as u32, 0);
        }
        let mut results = Vec::new();
        for _ in 0..20 {
            server.progress(Duration::ZERO).unwrap();
            while let Some(c) = server.pop() {
                results.push(pool.take(&server, c).map(|r| r.len));
            }
        }
        assert_eq!(results, [Err(Error::Overflow), Ok(12)]);
        assert_eq!((pool.posted(), pool.total(), pool.exhaustions()), (0, 1, 1));
    }
}
