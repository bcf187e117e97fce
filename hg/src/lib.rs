//! # hg — the RPC core of daos-rs, over `na` (Mercury HG)
//!
//! Mirrors Mercury's HG layer (`mercury/src/mercury*.c`): NA messages become RPCs. The layer
//! above is `cart`; the one below is [`na`], the only crate this one uses. Like Mercury and
//! like `na`, it creates no thread (DESIGN §1).
//!
//! - [`Class`] (`hg_class_t`, `HG_Init_opt`): an NA class with its RPC [`Registry`]
//!   (`HG_Register`, `HG_Register_name` with Mercury's name hash [`hash_name`],
//!   `HG_Registered_disable_response`).
//! - [`Context`] (`hg_context_t`): `progress` moves NA completions onto the completion queue,
//!   `trigger` runs callbacks and handlers; [`ContextRef`] is the shareable side (handles, bulk
//!   transfers, context data).
//! - [`Handle`] (`hg_handle_t`): `forward` / `forward_timed` / `cancel` on the origin,
//!   `get_input` / `respond` on the target, `get_output` / `info`; every callback runs once.
//! - [`proc`]: the [`Proc`] trait (`hg_proc_t`), byte-compatible with Mercury's procs, and the
//!   [`proc_struct!`] / [`rpc!`] macros (`MERCURY_GEN_PROC`, `CRT_RPC_DECLARE`).
//! - [`header`]: request and response headers as Mercury lays them out, with and without
//!   checksums; [`checksum`]: the CRC-16/T10-DIF and CRC-32C Mercury uses.
//! - [`bulk`]: [`BulkDesc`] / [`BulkRef`] in Mercury's descriptor layout; [`Bulk`] local regions
//!   and [`ContextRef::bulk_transfer`] (`HG_Bulk_transfer`).
//! - [`Error`] (`hg_return_t`, Mercury's numbers) and the na → hg mapping [`Error::from_na`].
//!
//! ```
//! use hg::{Class, Handle, InitOptions, Rpc};
//! use hg::na::plugins::inproc::{Fabric, FaultConfig};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! hg::rpc! {
//!     /// Adds one.
//!     pub rpc Inc(IncIn, IncOut) {
//!         input { /// Value.
//!                 pub v: u64 }
//!         output { /// Value + 1.
//!                  pub v: u64 }
//!     }
//! }
//!
//! let fabric = Fabric::new(FaultConfig::none());
//! let server = Class::from_na(fabric.class(true), InitOptions::default());
//! let client = Class::from_na(fabric.class(false), InitOptions::default());
//! server.register_rpc::<Inc>(Some(Arc::new(|h: Handle| {
//!     let i: IncIn = h.get_input()?;
//!     h.respond(&IncOut { v: i.v + 1 }, |_| {})
//! })));
//! client.register_rpc::<Inc>(None);
//! let (sctx, cctx) = (server.context_create()?, client.context_create()?);
//! let out = Arc::new(std::sync::Mutex::new(None));
//! let o = out.clone();
//! let h = cctx.create(&sctx.self_addr(), Inc::id())?;
//! h.forward(&IncIn { v: 41 }, move |h, r| {
//!     *o.lock().unwrap() = Some(r.and_then(|()| h.get_output::<IncOut>()));
//! })?;
//! while out.lock().unwrap().is_none() {
//!     for c in [&sctx, &cctx] {
//!         c.progress(Duration::ZERO)?;
//!         c.trigger(usize::MAX)?;
//!     }
//! }
//! assert_eq!(out.lock().unwrap().clone().unwrap()?.v, 42);
//! # Ok::<(), hg::Error>(())
//! ```
//!
//! `docs/hg.md` explains the layer and maps Mercury's names to these items.

#![deny(unsafe_code)]

pub mod bulk;
pub mod checksum;
mod class;
mod context;
mod error;
mod handle;
pub mod header;
mod peers;
pub mod proc;
mod queue;
pub mod registry;
mod slab;
pub(crate) mod sync;
mod transfer;

pub use bulk::{BulkDesc, BulkRef, BulkSegment};
pub use class::{Class, Handler, InitOptions};
pub use context::{BulkOp, Context, ContextRef, DoneCallback, ForwardCallback};
pub use error::{na_to_hg, Error, Result};
pub use handle::{Handle, Info};
pub use header::ChecksumLevel;
pub use proc::{HgString, Proc};
pub use registry::{hash_name, Registry, Rpc, RpcId, RpcInfo};
pub use transfer::Bulk;

/// The na crate this layer runs on, re-exported so users of hg name one dependency.
pub use na;
