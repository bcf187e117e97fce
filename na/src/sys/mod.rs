//! The crate's only `unsafe` code: libfabric through a C shim (`ofi`), interface lookup
//! (`ifaddr`), connect probes (`probe`) and socket-buffer tuning (`sock`). Every block carries
//! a `// SAFETY:` comment; nothing here panics across FFI.

pub mod ifaddr;
#[cfg(not(any(loom, na_no_libfabric)))]
pub mod ofi;
pub mod probe;
pub mod sock;
