//! `na::Addr`: a peer's address, a small value that compares, hashes, clones and serializes.

use std::fmt;
use std::sync::Arc;

/// Bytes of an address kept inline (ofi's 16-byte `sockaddr_in`, inproc's 4); longer ones (a
/// 28-byte `sockaddr_in6`) are shared on the heap. 22 keeps an `Addr` at 40 bytes, so that hg's
/// per-forward record stays within what moves without a `memcpy` call.
const INLINE: usize = 22;

/// The address of one endpoint (one context of one class), local or remote.
///
/// An `Addr` is plugin-neutral data: the plugin's name and the address's raw bytes, as the plugin
/// defines them (`ofi`: the 16-byte `sockaddr_in` as it lies in memory; `inproc`: the endpoint's
/// number). Cloning is `NA_Addr_dup`, `==` is `NA_Addr_cmp`, dropping is `NA_Addr_free`; the raw
/// bytes are the serialized form (`NA_Addr_serialize`). Plugins keep their own per-peer state (an AV
/// slot, a connection) keyed by these bytes; [`crate::Class::addr_set_remove`] drops that state so a
/// later send reconnects.
///
/// Every RPC clones its peer's address a few times (into the handle, the forward record, each NA
/// operation), so addresses up to 22 bytes live inline in a fixed array: a clone is a copy of a
/// few words, with no length-dependent copy and nothing to free.
#[doc(alias = "na_addr_t")]
#[doc(alias = "NA_Addr_dup")]
#[doc(alias = "NA_Addr_cmp")]
pub struct Addr {
    plugin: &'static str,
    raw: Raw,
}

/// An address's bytes: inline (zero-padded, so equal addresses have equal arrays), or shared.
#[derive(Clone)]
enum Raw {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Arc<[u8]>),
}

impl Addr {
    /// Builds an address from a plugin's raw bytes. Plugins call this; users get addresses from
    /// lookups, contexts and completions.
    pub fn from_raw(plugin: &'static str, raw: &[u8]) -> Addr {
        let raw = if raw.len() <= INLINE {
            let mut bytes = [0u8; INLINE];
            bytes[..raw.len()].copy_from_slice(raw);
            Raw::Inline {
                len: raw.len() as u8,
                bytes,
            }
        } else {
            Raw::Heap(Arc::from(raw))
        };
        Addr { plugin, raw }
    }

    /// The name of the plugin this address belongs to (`"ofi"`, `"inproc"`).
    pub fn plugin(&self) -> &'static str {
        self.plugin
    }

    /// The plugin-defined raw bytes; also the serialized form.
    #[doc(alias = "NA_Addr_serialize")]
    pub fn as_bytes(&self) -> &[u8] {
        match &self.raw {
            Raw::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Raw::Heap(b) => b,
        }
    }

    /// Size of the serialized form (`NA_Addr_get_serialize_size`).
    #[doc(alias = "NA_Addr_get_serialize_size")]
    pub fn serialize_size(&self) -> usize {
        self.as_bytes().len()
    }
}

// Compared on every forward (is it this context's own address?) and every resolve: the plugin
// name is nearly always the same `&'static str`, and inline addresses compare as fixed arrays
// (their padding is zero), without a `memcmp` call.
impl PartialEq for Addr {
    fn eq(&self, other: &Addr) -> bool {
        let same_plugin = std::ptr::eq(self.plugin, other.plugin) || self.plugin == other.plugin;
        if !same_plugin {
            return false;
        }
        match (&self.raw, &other.raw) {
            (Raw::Inline { len: a, bytes: x }, Raw::Inline { len: b, bytes: y }) => {
                a == b && x == y
            }
            _ => self.as_bytes() == other.as_bytes(),
        }
    }
}

impl Eq for Addr {}

impl std::hash::Hash for Addr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // What `eq` compares: the plugin name's text and the bytes.
        self.plugin.hash(state);
        self.as_bytes().hash(state);
    }
}

impl Clone for Addr {
    #[inline]
    fn clone(&self) -> Addr {
        Addr {
            plugin: self.plugin,
            raw: self.raw.clone(),
        }
    }
}

impl fmt::Debug for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Addr({}:", self.plugin)?;
        for b in self.as_bytes() {
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

    #[test]
    fn long_addresses_go_to_the_heap_and_behave_the_same() {
        for n in [0usize, 1, 16, 21, 22, 23, 28, 64] {
            let bytes: Vec<u8> = (0..n as u8).map(|b| b.wrapping_mul(7) | 1).collect();
            let a = Addr::from_raw("x", &bytes);
            assert_eq!(a.as_bytes(), &bytes[..], "{n} bytes");
            assert_eq!(a.serialize_size(), n);
            let c = a.clone();
            assert_eq!(a, c);
            assert_eq!(c.as_bytes(), &bytes[..]);
            if n > 0 {
                let mut other = bytes.clone();
                other[n - 1] ^= 0x40;
                assert_ne!(
                    a,
                    Addr::from_raw("x", &other),
                    "{n} bytes: last byte ignored"
                );
                // A prefix is another address, even though the inline padding is zero.
                assert_ne!(a, Addr::from_raw("x", &bytes[..n - 1]), "{n} bytes: prefix");
            }
        }
        // A trailing zero byte is part of the address, not padding.
        assert_ne!(Addr::from_raw("x", &[1, 0]), Addr::from_raw("x", &[1]));
    }
}
