//! # hg — the RPC core of daos-rs, over `na` (Mercury HG)
//!
//! Mirrors Mercury's HG layer (`mercury/src/mercury*.c`): NA messages become RPCs. The layer
//! above is `cart`; the one below is [`na`], the only crate this one uses. Like Mercury and
//! like `na`, it creates no thread (DESIGN §1).
//!
//! What is here so far (issue 4, phase 1: everything that needs no network):
//! - [`Error`] (`hg_return_t`, Mercury's numbers) and the na → hg mapping [`Error::from_na`].
//! - [`proc`]: the [`Proc`] trait (`hg_proc_t`), byte-compatible with Mercury's procs, and the
//!   [`proc_struct!`] / [`rpc!`] macros (`MERCURY_GEN_PROC`, `CRT_RPC_DECLARE`).
//! - [`header`]: request and response headers as Mercury lays them out, with and without
//!   checksums; [`checksum`]: the CRC-16/T10-DIF and CRC-32C Mercury uses.
//! - [`registry`]: [`Registry`] (`HG_Register`, `HG_Register_name` with Mercury's name hash
//!   [`hash_name`], `HG_Registered_disable_response`).
//! - [`bulk`]: [`BulkDesc`] / [`BulkRef`], bulk descriptors in Mercury's layout.
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
pub mod proc;
mod queue;
pub mod registry;
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
