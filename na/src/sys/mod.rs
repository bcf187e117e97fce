//! The crate's only `unsafe` code: libfabric through a C shim (`ofi`), and interface lookup
//! (`ifaddr`). Every block carries a `// SAFETY:` comment; nothing here panics across FFI.

pub mod ifaddr;
#[cfg(not(any(loom, na_no_libfabric)))]
pub mod ofi;
pub mod probe;
