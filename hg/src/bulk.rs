//! Bulk descriptors (`hg_bulk_t` on the wire): Mercury's serialized layout from `mercury_bulk.c`, and its proc.
//!
//! A serialized descriptor, every field in host order (little-endian):
//!
//! | size | field |
//! |---|---|
//! | 8 | total length (`hg_bulk_desc_info.len`) |
//! | 4 | segment count |
//! | 4 | flags ([`flags`]: access bits, `REGV`, `BIND`, `EAGER`, …) |
//! | 16 × count | segments: base address u64, length u64 |
//! | … | NA memory handles: if `REGV` or one segment, and (`REGV` or the first base is not 0): a u64 size, then that many bytes of the serialized NA handle. Otherwise a u64 size per segment, then the handle bytes of each segment whose base is not 0 |
//! | … | if `BIND`: u64 address size, the address bytes, u8 context id |
//! | … | if `EAGER`: the bytes of every non-empty segment, in order |
//!
//! In a proc ([`BulkRef`], `hg_proc_hg_bulk_t`) the descriptor is preceded by its size as a u64;
//! size 0 is `HG_BULK_NULL`. The NA handle bytes are what [`na::Class::mem_handle_serialize`]
//! produces; the receiver turns them into an [`na::RemoteMem`] with
//! [`na::Class::mem_handle_deserialize`] when it transfers.

use crate::error::{Error, Result};
use crate::proc::{Decoder, Encoder, Proc};

/// Descriptor flag bits (`HG_BULK_*`, public ones in `mercury_bulk.h`, the rest in `mercury_private.h`).
pub mod flags {
    /// `HG_BULK_READ_ONLY`: peers may read (pull from) the region.
    pub const READ_ONLY: u32 = 1 << 0;
    /// `HG_BULK_WRITE_ONLY`: peers may write (push into) the region.
    pub const WRITE_ONLY: u32 = 1 << 1;
    /// `HG_BULK_READWRITE`.
    pub const READWRITE: u32 = READ_ONLY | WRITE_ONLY;
    /// `HG_BULK_EAGER`: the data travels inside the descriptor.
    pub const EAGER: u32 = 1 << 2;
    /// `HG_BULK_SM`: shared-memory handles follow (not supported here).
    pub const SM: u32 = 1 << 3;
    /// `HG_BULK_ALLOC`: local only, cleared on the wire.
    pub const ALLOC: u32 = 1 << 4;
    /// `HG_BULK_BIND`: an address and context id are bound to the descriptor.
    pub const BIND: u32 = 1 << 5;
    /// `HG_BULK_REGV`: one NA registration covers every segment.
    pub const REGV: u32 = 1 << 6;
    /// `HG_BULK_VIRT`: addresses are virtual (set on deserialized handles, kept when re-sent).
    pub const VIRT: u32 = 1 << 7;
    /// `HG_BULK_FIREWALL_ADDR`: the bound address is behind a firewall.
    pub const FIREWALL_ADDR: u32 = 1 << 8;
    /// Every bit a descriptor may carry on the wire.
    pub const KNOWN: u32 = READWRITE | EAGER | SM | ALLOC | BIND | REGV | VIRT | FIREWALL_ADDR;
}

/// One segment of a descriptor (`struct hg_bulk_segment`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BulkSegment {
    /// The owner's address for the first byte (0 for a segment with no memory).
    pub base: u64,
    /// Length in bytes.
    pub len: u64,
}

/// The NA memory handles a descriptor carries.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MemDescs {
    /// One handle for every segment (`REGV`, or a single segment); `None` when the single
    /// segment has no memory and `REGV` is clear.
    Single(Option<Vec<u8>>),
    /// One handle per segment; `None` for a segment whose base is 0 (its size still travels).
    PerSegment(Vec<(u64, Option<Vec<u8>>)>),
}

/// An address bound to a descriptor (`HG_Bulk_bind`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BulkBind {
    /// The serialized address (`HG_Core_addr_serialize`).
    pub addr: Vec<u8>,
    /// The owner's context id.
    pub context_id: u8,
}

/// A bulk descriptor as it travels (`struct hg_bulk_desc` plus its handles): what a peer needs
/// to put into or get from a registered region.
#[doc(alias = "hg_bulk_desc")]
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BulkDesc {
    /// Total length over all segments.
    pub len: u64,
    /// [`flags`] as sent (`ALLOC` and `EAGER` are derived when serializing).
    pub flags: u32,
    /// The segments, in order.
    pub segments: Vec<BulkSegment>,
    /// The serialized NA memory handles.
    pub mem: MemDescs,
    /// A bound address, if any.
    pub bind: Option<BulkBind>,
    /// The data itself, when sent eagerly.
    pub eager: Option<Vec<u8>>,
}

impl BulkDesc {
    /// A descriptor for one NA registration covering `segments` with `access` bits
    /// ([`flags::READ_ONLY`] …), carrying `na_handle` (the output of
    /// [`na::Class::mem_handle_serialize`]). Several segments set `REGV`, as Mercury does when
    /// it registers them at once.
    pub fn new(segments: Vec<BulkSegment>, access: u32, na_handle: Vec<u8>) -> BulkDesc {
        let len = segments.iter().map(|s| s.len).sum();
        let mut fl = access & flags::READWRITE;
        if segments.len() > 1 {
            fl |= flags::REGV;
        }
        BulkDesc {
            len,
            flags: fl,
            segments,
            mem: MemDescs::Single(Some(na_handle)),
            bind: None,
            eager: None,
        }
    }

    /// The access bits (`HG_Bulk_get_flags`).
    #[doc(alias = "HG_Bulk_get_flags")]
    pub fn access(&self) -> u32 {
        self.flags & flags::READWRITE
    }

    /// The single NA handle's bytes, if the descriptor has one registration.
    pub fn na_handle(&self) -> Option<&[u8]> {
        match &self.mem {
            MemDescs::Single(h) => h.as_deref(),
            MemDescs::PerSegment(_) => None,
        }
    }

    fn wire_flags(&self) -> u32 {
        let mut f = self.flags & !(flags::ALLOC | flags::EAGER | flags::BIND);
        if self.eager.is_some() {
            f |= flags::EAGER;
        }
        if self.bind.is_some() {
            f |= flags::BIND;
        }
        f
    }

    fn single_mode(flags: u32, count: usize) -> bool {
        flags & flags::REGV != 0 || count == 1
    }

    /// Size of the serialized descriptor (`HG_Bulk_get_serialize_size`).
    #[doc(alias = "HG_Bulk_get_serialize_size")]
    pub fn serialize_size(&self) -> usize {
        let mut n = 16 + 16 * self.segments.len();
        n += match &self.mem {
            MemDescs::Single(Some(h)) => 8 + h.len(),
            MemDescs::Single(None) => 0,
            MemDescs::PerSegment(v) => v
                .iter()
                .map(|(_, h)| 8 + h.as_ref().map_or(0, Vec::len))
                .sum(),
        };
        if let Some(b) = &self.bind {
            n += 8 + b.addr.len() + 1;
        }
        if let Some(e) = &self.eager {
            n += e.len();
        }
        n
    }

    /// Writes the descriptor (`HG_Bulk_serialize`); a descriptor whose parts disagree (handles
    /// that do not match the segment layout, eager data of the wrong length) is `InvalidArg`.
    #[doc(alias = "HG_Bulk_serialize")]
    pub fn serialize(&self, enc: &mut Encoder<'_>) -> Result<()> {
        let fl = self.wire_flags();
        let count = self.segments.len();
        let single = Self::single_mode(fl, count);
        match &self.mem {
            MemDescs::Single(h) => {
                let present =
                    fl & flags::REGV != 0 || self.segments.first().is_some_and(|s| s.base != 0);
                if !single || h.is_some() != present {
                    return Err(Error::InvalidArg);
                }
            }
            MemDescs::PerSegment(v) => {
                if single || v.len() != count {
                    return Err(Error::InvalidArg);
                }
                for (s, (_, h)) in self.segments.iter().zip(v) {
                    if h.is_some() != (s.base != 0) {
                        return Err(Error::InvalidArg);
                    }
                }
            }
        }
        if count == 0 || self.segments.iter().map(|s| s.len).sum::<u64>() != self.len {
            return Err(Error::InvalidArg);
        }
        if self
            .eager
            .as_ref()
            .is_some_and(|e| e.len() as u64 != self.len)
        {
            return Err(Error::InvalidArg);
        }
        self.len.encode(enc)?;
        u32::try_from(count)
            .map_err(|_| Error::InvalidArg)?
            .encode(enc)?;
        fl.encode(enc)?;
        for s in &self.segments {
            s.base.encode(enc)?;
            s.len.encode(enc)?;
        }
        match &self.mem {
            MemDescs::Single(Some(h)) => {
                (h.len() as u64).encode(enc)?;
                enc.put_bytes(h)?;
            }
            MemDescs::Single(None) => {}
            MemDescs::PerSegment(v) => {
                for (size, h) in v {
                    let size = h.as_ref().map_or(*size, |h| h.len() as u64);
                    size.encode(enc)?;
                }
                for h in v.iter().filter_map(|(_, h)| h.as_ref()) {
                    enc.put_bytes(h)?;
                }
            }
        }
        if let Some(b) = &self.bind {
            (b.addr.len() as u64).encode(enc)?;
            enc.put_bytes(&b.addr)?;
            b.context_id.encode(enc)?;
        }
        if let Some(e) = &self.eager {
            enc.put_bytes(e)?;
        }
        Ok(())
    }

    /// Reads a descriptor that fills `dec` (`HG_Bulk_deserialize`), checking every count and size
    /// against the bytes present.
    #[doc(alias = "HG_Bulk_deserialize")]
    pub fn deserialize(dec: &mut Decoder<'_>) -> Result<BulkDesc> {
        let bad = |why: &'static str| {
            tracing::warn!(why, "hg: bad bulk descriptor");
            Error::ProtocolError
        };
        let len = u64::decode(dec)?;
        let count = u32::decode(dec)? as usize;
        let fl = u32::decode(dec)?;
        if fl & !flags::KNOWN != 0 {
            return Err(bad("unknown flag bits"));
        }
        if fl & flags::SM != 0 {
            return Err(bad("shared-memory handles are not supported"));
        }
        if count == 0 {
            return Err(bad("no segments"));
        }
        if count.checked_mul(16).is_none_or(|n| n > dec.remaining()) {
            return Err(Error::Overflow);
        }
        let mut segments = Vec::with_capacity(count);
        for _ in 0..count {
            segments.push(BulkSegment {
                base: u64::decode(dec)?,
                len: u64::decode(dec)?,
            });
        }
        let total = segments
            .iter()
            .try_fold(0u64, |a, s| a.checked_add(s.len))
            .ok_or_else(|| bad("segment lengths overflow"))?;
        if total != len {
            return Err(bad("length disagrees with the segments"));
        }
        let mem = if Self::single_mode(fl, count) {
            if fl & flags::REGV != 0 || segments[0].base != 0 {
                let n = dec.length()?;
                MemDescs::Single(Some(dec.take(n)?.to_vec()))
            } else {
                MemDescs::Single(None)
            }
        } else {
            if count.checked_mul(8).is_none_or(|n| n > dec.remaining()) {
                return Err(Error::Overflow);
            }
            let mut sizes = Vec::with_capacity(count);
            for _ in 0..count {
                sizes.push(u64::decode(dec)?);
            }
            let mut v = Vec::with_capacity(count);
            for (s, size) in segments.iter().zip(sizes) {
                if s.base == 0 {
                    v.push((size, None));
                } else {
                    let n = usize::try_from(size).map_err(|_| Error::Overflow)?;
                    v.push((size, Some(dec.take(n)?.to_vec())));
                }
            }
            MemDescs::PerSegment(v)
        };
        let bind = if fl & flags::BIND != 0 {
            let n = dec.length()?;
            let addr = dec.take(n)?.to_vec();
            Some(BulkBind {
                addr,
                context_id: u8::decode(dec)?,
            })
        } else {
            None
        };
        let eager = if fl & flags::EAGER != 0 {
            let n = usize::try_from(len).map_err(|_| Error::Overflow)?;
            Some(dec.take(n)?.to_vec())
        } else {
            None
        };
        Ok(BulkDesc {
            len,
            flags: fl & !(flags::EAGER | flags::BIND | flags::ALLOC),
            segments,
            mem,
            bind,
            eager,
        })
    }
}

/// A bulk handle inside a proc (`hg_bulk_t` as `hg_proc_hg_bulk_t` encodes it): a descriptor or
/// `HG_BULK_NULL`.
#[doc(alias = "hg_bulk_t")]
#[doc(alias = "hg_proc_hg_bulk_t")]
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct BulkRef(pub Option<BulkDesc>);

impl BulkRef {
    /// `HG_BULK_NULL`.
    #[doc(alias = "HG_BULK_NULL")]
    pub const NULL: BulkRef = BulkRef(None);

    /// The descriptor, if not NULL.
    pub fn desc(&self) -> Option<&BulkDesc> {
        self.0.as_ref()
    }
}

impl From<BulkDesc> for BulkRef {
    fn from(d: BulkDesc) -> BulkRef {
        BulkRef(Some(d))
    }
}

impl Proc for BulkRef {
    fn encoded_size(&self) -> usize {
        8 + self.0.as_ref().map_or(0, BulkDesc::serialize_size)
    }
    fn encode(&self, enc: &mut Encoder<'_>) -> Result<()> {
        match &self.0 {
            None => 0u64.encode(enc),
            Some(d) => {
                (d.serialize_size() as u64).encode(enc)?;
                d.serialize(enc)
            }
        }
    }
    fn decode(dec: &mut Decoder<'_>) -> Result<Self> {
        let n = dec.length()?;
        if n == 0 {
            return Ok(BulkRef::NULL);
        }
        let mut inner = Decoder::new(dec.take(n)?);
        let d = BulkDesc::deserialize(&mut inner)?;
        inner.finish()?;
        Ok(BulkRef(Some(d)))
    }
}
