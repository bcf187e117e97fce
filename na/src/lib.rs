//! # na — network abstraction, the floor of daos-rs
//!
//! Mirrors Mercury's NA (`mercury/src/na`): move opaque byte buffers between endpoints and do
//! one-sided RMA, knowing nothing about RPCs. The layer above is `hg`; there is none below but the
//! transports themselves. Like Mercury's, this layer creates no thread: whoever owns a [`Context`]
//! drives it with [`Context::progress`] and drains [`Completion`]s (DESIGN §1–2).
//!
//! - [`Class`] (`na_class_t`): a transport picked from an info string (`"ofi+tcp"`, `"inproc"`),
//!   with addresses, sizes and memory registration.
//! - [`Context`] (`na_context_t`): one endpoint; unexpected and expected messages, put and get,
//!   progress, cancel, a [`Waker`] and a wait fd.
//! - [`Addr`], [`MsgBuf`], [`MemHandle`], [`RemoteMem`], [`Completion`], [`Error`].
//! - [`RecvPool`]: unexpected receives pre-posted in batches (512, +512) up to a cap.
//! - `testing` (feature `conformance`): the plugin conformance suite.
//! - [`Plugin`] / [`PluginContext`] (`na_class_ops`): the seam a transport implements; the plugins
//!   in the tree are `ofi` (libfabric) and `inproc` (deterministic, with fault injection).

#![deny(unsafe_op_in_unsafe_fn)]

mod addr;
mod class;
mod cq;
mod error;
mod mem;
mod msg;
mod op;
mod plugin;
pub mod plugins;
mod rdma;
mod recv_pool;
pub(crate) mod sync;
mod sys;
#[cfg(all(feature = "conformance", not(loom)))]
pub mod testing;

pub use addr::Addr;
pub use class::{Class, Context, Waker};
pub use cq::CompletionQueue;
pub use error::{Error, Result};
pub use mem::{Access, MemHandle, MemRegion, PluginMem, RemoteMem, RemoteSegment, Segment};
pub use msg::{MsgBuf, Tag};
pub use op::{Completion, Op, OpId, OpKind, Request, Rma};
pub use plugin::{InfoString, InitOptions, Plugin, PluginContext, ProgressMode, ThreadMode};
pub use rdma::{rdma_devices, RdmaDevice};
pub use recv_pool::{Received, RecvPool, RecvPoolConfig};

#[doc(hidden)]
pub use tracing as __tracing;

/// What [`hop_span!`] returns: the entered span of one layer hop, or nothing when tracing is
/// off for its level. Dropping it leaves the span; with nothing inside, that is one inline test
/// (the drop glue of an `Option<EnteredSpan>` was an out-of-line call).
#[must_use = "the hop's span is left when this is dropped"]
pub struct Hop(std::mem::ManuallyDrop<Option<tracing::span::EnteredSpan>>);

impl Hop {
    /// A hop inside `span`, entered.
    #[doc(hidden)]
    #[inline]
    pub fn enter(span: tracing::Span) -> Hop {
        Hop(std::mem::ManuallyDrop::new(Some(span.entered())))
    }

    /// No span: tracing is off for the hop's level.
    #[doc(hidden)]
    #[inline(always)]
    pub fn none() -> Hop {
        Hop(std::mem::ManuallyDrop::new(None))
    }
}

impl Drop for Hop {
    #[inline(always)]
    fn drop(&mut self) {
        // The field is `ManuallyDrop`: no drop glue runs after this, and what it held is
        // taken out here (a `None` left behind owns nothing).
        if let Some(s) = self.0.take() {
            leave(s);
        }
    }
}

/// Leaves a hop's span (out of line: only when tracing is on).
#[cold]
#[inline(never)]
fn leave(s: tracing::span::EnteredSpan) {
    drop(s);
}

/// Enters a `tracing` span for one layer hop of an RPC (DESIGN §8), as
/// `tracing::span!(Level::X, ...).entered()` does, but builds the span only when its level is
/// enabled (statically and by some subscriber): with tracing off, a hop costs one atomic load
/// and a branch, and leaving it one more (dropping a disabled `EnteredSpan` was an out-of-line
/// call per span, seven of them per RPC on the origin). Used by `na` and the layers above.
/// `hop_span!(DEBUG, "hg.forward", rpc_id = id)` yields a [`Hop`] to keep in a local
/// (`let _s = ...`) for the hop's duration.
#[macro_export]
macro_rules! hop_span {
    ($lvl:ident, $($arg:tt)+) => {
        if $crate::__tracing::Level::$lvl <= $crate::__tracing::level_filters::STATIC_MAX_LEVEL
            && $crate::__tracing::Level::$lvl
                <= $crate::__tracing::level_filters::LevelFilter::current()
        {
            $crate::Hop::enter($crate::__tracing::span!($crate::__tracing::Level::$lvl, $($arg)+))
        } else {
            $crate::Hop::none()
        }
    };
}

#[cfg(all(test, not(loom)))]
mod hop_tests {
    use tracing::level_filters::LevelFilter;

    fn entered(h: &crate::Hop) -> bool {
        h.0.is_some()
    }

    /// A hop's span exists only when some subscriber wants its level, and is the current span
    /// for the hop's duration.
    #[test]
    fn hop_span_follows_the_enabled_level() {
        // No subscriber in this thread: nothing is built.
        assert!(!entered(&crate::hop_span!(TRACE, "na.test_hop")));
        let sub = tracing_subscriber::fmt()
            .with_max_level(LevelFilter::DEBUG)
            .with_writer(std::io::sink)
            .finish();
        tracing::subscriber::with_default(sub, || {
            let h = crate::hop_span!(DEBUG, "na.test_hop", n = 1);
            assert!(entered(&h));
            assert_eq!(
                tracing::Span::current().metadata().map(|m| m.name()),
                Some("na.test_hop")
            );
            drop(h);
            assert!(tracing::Span::current().is_none(), "left on drop");
            // Below the subscriber's level: not built.
            assert!(!entered(&crate::hop_span!(TRACE, "na.test_hop")));
        });
    }
}
