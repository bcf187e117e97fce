//! The plugins compiled into the table: `ofi` (libfabric) and `inproc` (deterministic, in-process).

pub mod inproc;
pub mod ofi;
