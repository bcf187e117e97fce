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

// Compared on every forward (is it this context's own address?) and every resolve: the plugin
// name is nearly always the same `&'static str`, and most addresses are 16 bytes, so both are
// checked without a `memcmp` call before falling back to the general comparison.
impl PartialEq for Addr {
    fn eq(&self, other: &Addr) -> bool {
        let same_plugin = std::ptr::eq(self.plugin, other.plugin) || self.plugin == other.plugin;
        if !same_plugin {
            return false;
        }
        match (
            <[u8; 16]>::try_from(&self.raw[..]),
            <[u8; 16]>::try_from(&other.raw[..]),
        ) {
            (Ok(a), Ok(b)) => u128::from_ne_bytes(a) == u128::from_ne_bytes(b),
            _ => self.raw[..] == other.raw[..],
        }
    }
}

impl Eq for Addr {}

impl std::hash::Hash for Addr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // What `eq` compares: the plugin name's text and the bytes.
        self.plugin.hash(state);
        self.raw[..].hash(state);
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

    #[test]
    fn sixteen_byte_addresses_compare_every_byte_and_the_plugin_text() {
        let bytes: Vec<u8> = (0..16).collect();
        let a = Addr::from_raw("ofi", &bytes);
        for i in 0..16 {
            let mut other = bytes.clone();
            other[i] ^= 0x80;
            assert_ne!(a, Addr::from_raw("ofi", &other), "byte {i} ignored");
        }
        // The same name from another allocation is the same plugin.
        let name: &'static str = String::from("ofi").leak();
        assert_eq!(a, Addr::from_raw(name, &bytes));
        assert_ne!(a, Addr::from_raw("ofx", &bytes));
        assert_ne!(a, Addr::from_raw("ofi", &bytes[..15]));
        let state = std::hash::RandomState::new();
        let hash = |x: &Addr| std::hash::BuildHasher::hash_one(&state, x);
        assert_eq!(hash(&a), hash(&Addr::from_raw(name, &bytes)));
    }
}
