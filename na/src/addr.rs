//! `na::Addr`: a peer's address, a small value that compares, hashes, clones and serializes.

use smallvec::SmallVec;
use std::fmt;

/// Bytes of an address kept inline (a `sockaddr_in6` fits).
const INLINE: usize = 28;

/// The address of one endpoint (one context of one class), local or remote.
///
/// An `Addr` is plugin-neutral data: the plugin's name and the address's raw bytes, as the plugin
/// defines them (`ofi`: the 16-byte `sockaddr_in` as it lies in memory; `inproc`: the endpoint's
/// number). Cloning is `NA_Addr_dup`, `==` is `NA_Addr_cmp`, dropping is `NA_Addr_free`; the raw
/// bytes are the serialized form (`NA_Addr_serialize`). Plugins keep their own per-peer state (an AV
/// slot, a connection) keyed by these bytes; [`crate::Class::addr_set_remove`] drops that state so a
/// later send reconnects.
#[doc(alias = "na_addr_t")]
#[doc(alias = "NA_Addr_dup")]
#[doc(alias = "NA_Addr_cmp")]
#[derive(PartialEq, Eq, Hash)]
pub struct Addr {
    plugin: &'static str,
    raw: SmallVec<[u8; INLINE]>,
}

impl Addr {
    /// Builds an address from a plugin's raw bytes. Plugins call this; users get addresses from
    /// lookups, contexts and completions.
    pub fn from_raw(plugin: &'static str, raw: &[u8]) -> Addr {
        Addr {
            plugin,
            raw: SmallVec::from_slice(raw),
        }
    }

    /// The name of the plugin this address belongs to (`"ofi"`, `"inproc"`).
    pub fn plugin(&self) -> &'static str {
        self.plugin
    }

    /// The plugin-defined raw bytes; also the serialized form.
    #[doc(alias = "NA_Addr_serialize")]
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// Size of the serialized form (`NA_Addr_get_serialize_size`).
    #[doc(alias = "NA_Addr_get_serialize_size")]
    pub fn serialize_size(&self) -> usize {
        self.raw.len()
    }
}

impl Clone for Addr {
    /// One copy of the bytes (`SmallVec`'s own `Clone` pushes them one at a time, and an RPC
    /// clones its peer's address several times).
    fn clone(&self) -> Addr {
        Addr {
            plugin: self.plugin,
            raw: SmallVec::from_slice(&self.raw),
        }
    }
}

impl fmt::Debug for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Addr({}:", self.plugin)?;
        for b in self.raw.iter() {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn equality_is_plugin_and_bytes() {
        let a = Addr::from_raw("inproc", &[1, 2, 3]);
        assert_eq!(a, a.clone());
        assert_ne!(a, Addr::from_raw("ofi", &[1, 2, 3]));
        assert_ne!(a, Addr::from_raw("inproc", &[1, 2, 4]));
        assert_eq!(a.serialize_size(), 3);
        assert_eq!(format!("{a:?}"), "Addr(inproc:010203)");
    }
}
