//! The crate's small `unsafe` system-call wrappers (thread ids, CPU affinity), outside the context-switch code.

pub(crate) mod affinity;
