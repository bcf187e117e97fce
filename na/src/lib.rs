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
