//! The RPC registry (`HG_Register*`): id → in/out proc types, handler and one-way flag; ids from names by Mercury's hash.

use crate::error::{Error, Result};
use crate::proc::Proc;
use std::any::{type_name, TypeId};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Hasher for u64 keys that are already well spread or sequential (RPC ids, operation tokens):
/// one multiply instead of SipHash on every lookup of the RPC hot path. Keys come from this
/// process (tokens) or from registration (ids), so there is no untrusted-key flooding to resist;
/// an id off the wire is only looked up, never inserted.
#[derive(Default, Clone, Copy)]
pub(crate) struct U64Hasher(u64);

impl Hasher for U64Hasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, x: u64) {
        // Fibonacci hashing: spreads sequential keys over the high bits hashbrown uses too.
        self.0 = (self.0 ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A `HashMap` keyed by `u64` with [`U64Hasher`].
pub(crate) type U64Map<V> = HashMap<u64, V, BuildHasherDefault<U64Hasher>>;

/// An RPC id (`hg_id_t`, 64 bits on the wire).
#[doc(alias = "hg_id_t")]
pub type RpcId = u64;

/// The id `HG_Register_name` gives `name`: Mercury's `hg_hash_string`, which is djb2
/// (h = 5381; h = h·33 + byte, over the bytes up to the first NUL, in 32-bit unsigned arithmetic),
/// widened to 64 bits.
#[doc(alias = "hg_hash_string")]
pub fn hash_name(name: &str) -> RpcId {
    let mut h: u32 = 5381;
    for &b in name.as_bytes().iter().take_while(|b| **b != 0) {
        h = (h << 5).wrapping_add(h).wrapping_add(u32::from(b));
    }
    RpcId::from(h)
}

/// An RPC type: its input, its output and its name, as [`crate::rpc!`] declares them.
pub trait Rpc {
    /// The input struct (`in_proc_cb`'s type).
    type In: Proc + Send + 'static;
    /// The output struct (`out_proc_cb`'s type).
    type Out: Proc + Send + 'static;
    /// The name, hashed into the id by [`Rpc::id`].
    const NAME: &'static str;
    /// The id `HG_Register_name(NAME)` would give.
    fn id() -> RpcId {
        hash_name(Self::NAME)
    }
}

/// A proc type as the registry records it: enough to check that `get_input::<T>` asks for the
/// type that was registered (Mercury trusts the caller's `void *`; we check).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcType {
    id: TypeId,
    name: &'static str,
}

impl ProcType {
    /// The record for `T`.
    pub fn of<T: 'static>() -> ProcType {
        ProcType {
            id: TypeId::of::<T>(),
            name: type_name::<T>(),
        }
    }

    /// Whether this is `T`.
    pub fn is<T: 'static>(&self) -> bool {
        self.id == TypeId::of::<T>()
    }

    /// The type's `TypeId` (what a handle keeps to check its input and output types).
    pub(crate) fn type_id(&self) -> TypeId {
        self.id
    }

    /// The type's name (for logs).
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// What is registered under one id (`struct hg_core_rpc_info` + `struct hg_proc_info`).
#[derive(Clone, Debug)]
pub struct RpcInfo<H> {
    /// The id.
    pub id: RpcId,
    /// The name it was registered by, if any.
    pub name: Option<String>,
    /// The input type (`in_proc_cb`).
    pub input: ProcType,
    /// The output type (`out_proc_cb`).
    pub output: ProcType,
    /// The handler (`rpc_cb`); `None` on a client that only forwards this id.
    pub handler: Option<H>,
    /// One-way: no response is sent or expected (`HG_Registered_disable_response`).
    pub no_response: bool,
}

/// The id → [`RpcInfo`] map of a class (`rpc_map`). `H` is the handler type.
#[derive(Debug)]
pub struct Registry<H> {
    map: U64Map<RpcInfo<H>>,
}

impl<H> Default for Registry<H> {
    fn default() -> Self {
        Registry {
            map: U64Map::default(),
        }
    }
}

impl<H: Clone> Registry<H> {
    /// An empty registry.
    pub fn new() -> Registry<H> {
        Registry::default()
    }

    /// `HG_Register`: records `id` with its in/out types and handler. As in Mercury, registering
    /// an id again replaces its types and handler (with a warning) and keeps its one-way flag.
    #[doc(alias = "HG_Register")]
    #[doc(alias = "HG_Core_register")]
    pub fn register<I: Proc + 'static, O: Proc + 'static>(
        &mut self,
        id: RpcId,
        handler: Option<H>,
    ) {
        self.insert(id, None, ProcType::of::<I>(), ProcType::of::<O>(), handler);
    }

    /// `HG_Register_name`: registers under [`hash_name`]`(name)` and returns the id.
    #[doc(alias = "HG_Register_name")]
    pub fn register_name<I: Proc + 'static, O: Proc + 'static>(
        &mut self,
        name: &str,
        handler: Option<H>,
    ) -> RpcId {
        let id = hash_name(name);
        self.insert(
            id,
            Some(name.to_owned()),
            ProcType::of::<I>(),
            ProcType::of::<O>(),
            handler,
        );
        id
    }

    fn insert(
        &mut self,
        id: RpcId,
        name: Option<String>,
        input: ProcType,
        output: ProcType,
        handler: Option<H>,
    ) {
        match self.map.get_mut(&id) {
            Some(info) => {
                tracing::warn!(id, "hg: overwriting a registered RPC id");
                if let (Some(old), Some(new)) = (&info.name, &name) {
                    if old != new {
                        tracing::warn!(id, old, new, "hg: two names hash to the same id");
                    }
                }
                info.name = name.or(info.name.take());
                info.input = input;
                info.output = output;
                info.handler = handler;
            }
            None => {
                self.map.insert(
                    id,
                    RpcInfo {
                        id,
                        name,
                        input,
                        output,
                        handler,
                        no_response: false,
                    },
                );
            }
        }
    }

    /// `HG_Deregister`.
    #[doc(alias = "HG_Deregister")]
    pub fn deregister(&mut self, id: RpcId) -> Result<()> {
        self.map.remove(&id).map(drop).ok_or(Error::NoEntry)
    }

    /// `HG_Registered`: whether `id` is registered.
    #[doc(alias = "HG_Registered")]
    pub fn registered(&self, id: RpcId) -> bool {
        self.map.contains_key(&id)
    }

    /// `HG_Registered_name`: whether `name`'s id is registered, and that id.
    #[doc(alias = "HG_Registered_name")]
    pub fn registered_name(&self, name: &str) -> Option<RpcId> {
        let id = hash_name(name);
        self.registered(id).then_some(id)
    }

    /// `HG_Registered_disable_response`: makes `id` one-way (or two-way again).
    #[doc(alias = "HG_Registered_disable_response")]
    pub fn disable_response(&mut self, id: RpcId, disable: bool) -> Result<()> {
        let info = self.map.get_mut(&id).ok_or(Error::NoEntry)?;
        info.no_response = disable;
        Ok(())
    }

    /// `HG_Registered_disabled_response`.
    #[doc(alias = "HG_Registered_disabled_response")]
    pub fn disabled_response(&self, id: RpcId) -> Result<bool> {
        self.map
            .get(&id)
            .map(|i| i.no_response)
            .ok_or(Error::NoEntry)
    }

    /// What is registered under `id`, borrowed (the hot path: no clone of the name).
    pub(crate) fn get(&self, id: RpcId) -> Option<&RpcInfo<H>> {
        self.map.get(&id)
    }

    /// The record for `id` (a clone: the map may change while an RPC runs), or `NoEntry`
    /// (`hg_core_map_lookup`).
    #[doc(alias = "hg_core_map_lookup")]
    pub fn lookup(&self, id: RpcId) -> Result<RpcInfo<H>> {
        self.map.get(&id).cloned().ok_or(Error::NoEntry)
    }

    /// Number of registered ids.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn djb2_by_hand() {
        // h0 = 5381; "a" = 0x61: 5381 * 33 + 97 = 177670.
        assert_eq!(hash_name("a"), 177_670);
        // "ab": 177670 * 33 + 98 = 5863208.
        assert_eq!(hash_name("ab"), 5_863_208);
        assert_eq!(hash_name(""), 5381);
        // Wraps at 32 bits and is widened, never sign-extended.
        let long = "a_rather_long_rpc_name_that_wraps_around";
        let mut h: u64 = 5381;
        for b in long.bytes() {
            h = (h * 33 + u64::from(b)) & 0xFFFF_FFFF;
        }
        assert_eq!(hash_name(long), h);
        assert!(hash_name(long) <= u64::from(u32::MAX));
        // Like the C function, the hash stops at a NUL.
        assert_eq!(hash_name("ab\0cd"), hash_name("ab"));
    }

    #[test]
    fn register_lookup_one_way() {
        let mut r: Registry<u32> = Registry::new();
        assert!(!r.registered(7));
        assert_eq!(r.lookup(7).unwrap_err(), Error::NoEntry);
        r.register::<u32, ()>(7, Some(1));
        assert!(r.registered(7));
        let info = r.lookup(7).unwrap();
        assert!(info.input.is::<u32>() && info.output.is::<()>());
        assert!(!info.input.is::<u64>());
        assert_eq!(info.handler, Some(1));
        assert!(!info.no_response);

        r.disable_response(7, true).unwrap();
        assert!(r.disabled_response(7).unwrap());
        // Re-registering replaces types and handler but keeps the one-way flag, as Mercury does.
        r.register::<u64, u64>(7, Some(2));
        let info = r.lookup(7).unwrap();
        assert!(info.input.is::<u64>());
        assert_eq!(info.handler, Some(2));
        assert!(info.no_response);

        assert_eq!(r.disable_response(8, true), Err(Error::NoEntry));
        assert_eq!(r.disabled_response(8), Err(Error::NoEntry));

        let id = r.register_name::<(), ()>("ping", None);
        assert_eq!(id, hash_name("ping"));
        assert_eq!(r.registered_name("ping"), Some(id));
        assert_eq!(r.registered_name("pong"), None);
        assert_eq!(r.lookup(id).unwrap().name.as_deref(), Some("ping"));
        assert_eq!(r.len(), 2);
        r.deregister(id).unwrap();
        assert_eq!(r.deregister(id), Err(Error::NoEntry));
        assert_eq!(r.len(), 1);
    }
}
