//! `hg::Bulk` (`HG_Bulk_create`): a local registered region that peers can pull from or push into.

use crate::bulk::{BulkDesc, BulkRef, BulkSegment};
use crate::class::Class;
use crate::error::{Error, Result};
use na::{Access, MemHandle};
use std::fmt;

/// A local region registered for RMA, of one or more segments (`hg_bulk_t` from
/// `HG_Bulk_create`). Send its [`Bulk::to_ref`] inside an RPC; the peer transfers with
/// [`crate::ContextRef::bulk_transfer`]. The memory stays registered while the handle or any
/// transfer on it lives (DESIGN §4).
#[doc(alias = "HG_Bulk_create")]
#[doc(alias = "HG_Bulk_free")]
#[derive(Clone)]
pub struct Bulk {
    mem: MemHandle,
    desc: BulkDesc,
}

impl Bulk {
    /// `HG_Bulk_create` over `bufs` (moved in: the registration owns them) with `access`
    /// (`Access::READ_ONLY`, `WRITE_ONLY`, `READWRITE`).
    pub fn create(class: &Class, bufs: Vec<Vec<u8>>, access: Access) -> Result<Bulk> {
        let nac = class.na();
        let mem = nac
            .mem_register_segments(bufs, access)
            .map_err(Error::from_na)?;
        let mut fl = 0;
        if access.contains(Access::READ) {
            fl |= crate::bulk::flags::READ_ONLY;
        }
        if access.contains(Access::WRITE) {
            fl |= crate::bulk::flags::WRITE_ONLY;
        }
        let segs = mem
            .segments()
            .iter()
            .map(|s| BulkSegment {
                base: s.addr as u64,
                len: s.len as u64,
            })
            .collect();
        let desc = BulkDesc::new(segs, fl, nac.mem_handle_serialize(&mem));
        Ok(Bulk { mem, desc })
    }

    /// `HG_Bulk_get_size`.
    #[doc(alias = "HG_Bulk_get_size")]
    pub fn len(&self) -> usize {
        self.mem.len()
    }

    /// True when the region has no bytes.
    pub fn is_empty(&self) -> bool {
        self.mem.is_empty()
    }

    /// The descriptor peers need.
    pub fn desc(&self) -> &BulkDesc {
        &self.desc
    }

    /// The descriptor as a proc field.
    pub fn to_ref(&self) -> BulkRef {
        BulkRef::from(self.desc.clone())
    }

    /// The NA registration.
    pub fn mem(&self) -> &MemHandle {
        &self.mem
    }

    /// The region's bytes (a copy).
    pub fn to_vec(&self) -> Vec<u8> {
        self.mem.to_vec()
    }

    /// Copies `src` into the region at `offset`.
    pub fn write_at(&self, offset: usize, src: &[u8]) -> Result<()> {
        self.mem.write_at(offset, src).map_err(Error::from_na)
    }
}

impl fmt::Debug for Bulk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulk")
            .field("len", &self.len())
            .field("segments", &self.desc.segments.len())
            .finish()
    }
}
