//! `hg::Bulk` (`HG_Bulk_create`): a local registered region that peers can pull from or push into, and how a transfer is cut into NA operations.

use crate::bulk::BulkRef;
use crate::bulk::{BulkDesc, BulkSegment, MemDescs};
use crate::class::Class;
use crate::error::{Error, Result};
use crate::sync::UserArc as Arc;
use na::{Access, MemHandle};
use std::fmt;

/// A local region registered for RMA, of one or more segments (`hg_bulk_t` from
/// `HG_Bulk_create`). Send its [`Bulk::to_ref`] inside an RPC; the peer transfers with
/// [`crate::ContextRef::bulk_transfer`]. The memory stays registered while the handle or any
/// transfer on it lives (DESIGN §4).
///
/// [`Bulk::create`] registers every segment at once (one NA handle, `HG_BULK_REGV` on the wire
/// when there are several); [`Bulk::create_per_segment`] registers each segment on its own, as
/// Mercury does when its NA plugin cannot register a vector, and its descriptor carries one NA
/// handle per segment. Both transfer the same way: a transfer is cut into one NA put / get per
/// overlap of a local and a remote registration.
///
/// A handle to shared state: cloning it is a reference count (`HG_Bulk_ref_incr`), so a clone
/// per transfer callback costs no allocation; the registration ends with the last clone.
#[doc(alias = "HG_Bulk_create")]
#[doc(alias = "HG_Bulk_free")]
#[doc(alias = "HG_Bulk_ref_incr")]
#[derive(Clone)]
pub struct Bulk {
    inner: Arc<BulkInner>,
}

/// What every clone of a [`Bulk`] shares.
struct BulkInner {
    /// One registration, or one per segment (in segment order).
    mems: Vec<MemHandle>,
    desc: BulkDesc,
}

fn access_flags(access: Access) -> u32 {
    let mut fl = 0;
    if access.contains(Access::READ) {
        fl |= crate::bulk::flags::READ_ONLY;
    }
    if access.contains(Access::WRITE) {
        fl |= crate::bulk::flags::WRITE_ONLY;
    }
    fl
}

fn segments_of(mem: &MemHandle) -> impl Iterator<Item = BulkSegment> + '_ {
    mem.segments().iter().map(|s| BulkSegment {
        base: s.addr as u64,
        len: s.len as u64,
    })
}

impl Bulk {
    /// `HG_Bulk_create` over `bufs` (moved in: the registration owns them) with `access`
    /// (`Access::READ_ONLY`, `WRITE_ONLY`, `READWRITE`): one NA registration for all of them.
    pub fn create(class: &Class, bufs: Vec<Vec<u8>>, access: Access) -> Result<Bulk> {
        let nac = class.na();
        let mem = nac
            .mem_register_segments(bufs, access)
            .map_err(Error::from_na)?;
        let segs = segments_of(&mem).collect();
        let desc = BulkDesc::new(segs, access_flags(access), nac.mem_handle_serialize(&mem));
        Ok(Bulk::from_parts(vec![mem], desc))
    }

    /// `HG_Bulk_create` as Mercury does it over an NA plugin without vector registration: each of
    /// `bufs` gets its own NA registration, and the descriptor carries one handle per segment
    /// ([`MemDescs::PerSegment`], `HG_BULK_REGV` clear). With a single buffer it is
    /// [`Bulk::create`]. No buffer, or no access bit, is `InvalidArg`.
    pub fn create_per_segment(class: &Class, bufs: Vec<Vec<u8>>, access: Access) -> Result<Bulk> {
        if bufs.len() <= 1 {
            return Bulk::create(class, bufs, access);
        }
        let nac = class.na();
        let mems = bufs
            .into_iter()
            .map(|b| nac.mem_register(b, access).map_err(Error::from_na))
            .collect::<Result<Vec<_>>>()?;
        let segments: Vec<BulkSegment> = mems.iter().flat_map(segments_of).collect();
        let handles = mems
            .iter()
            .map(|m| {
                let h = nac.mem_handle_serialize(m);
                (h.len() as u64, Some(h))
            })
            .collect();
        let desc = BulkDesc {
            len: segments.iter().map(|s| s.len).sum(),
            flags: access_flags(access),
            segments,
            mem: MemDescs::PerSegment(handles),
            bind: None,
            eager: None,
        };
        Ok(Bulk::from_parts(mems, desc))
    }

    fn from_parts(mems: Vec<MemHandle>, desc: BulkDesc) -> Bulk {
        Bulk {
            inner: Arc::new(BulkInner { mems, desc }),
        }
    }

    /// `HG_Bulk_get_size`.
    #[doc(alias = "HG_Bulk_get_size")]
    pub fn len(&self) -> usize {
        self.inner.mems.iter().map(MemHandle::len).sum()
    }

    /// True when the region has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The descriptor peers need.
    pub fn desc(&self) -> &BulkDesc {
        &self.inner.desc
    }

    /// The descriptor as a proc field.
    pub fn to_ref(&self) -> BulkRef {
        BulkRef::from(self.inner.desc.clone())
    }

    /// The first NA registration: the only one unless the region was created per segment (see
    /// [`Bulk::registrations`]).
    pub fn mem(&self) -> &MemHandle {
        &self.inner.mems[0]
    }

    /// Every NA registration, in segment order (one unless created per segment).
    pub fn registrations(&self) -> &[MemHandle] {
        &self.inner.mems
    }

    /// The region's bytes (a copy).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        for m in &self.inner.mems {
            v.extend_from_slice(&m.to_vec());
        }
        v
    }

    /// Copies `src` into the region at `offset` (across segments and registrations); a range
    /// past the end is `Overflow`.
    pub fn write_at(&self, offset: usize, src: &[u8]) -> Result<()> {
        let end = offset.checked_add(src.len()).ok_or(Error::Overflow)?;
        if end > self.len() {
            return Err(Error::Overflow);
        }
        let lens: Vec<u64> = self.inner.mems.iter().map(|m| m.len() as u64).collect();
        let whole = [src.len() as u64];
        for p in split(&lens, offset as u64, &whole, 0, src.len() as u64) {
            let (at, from) = (p.loff as usize, p.roff as usize);
            self.inner.mems[p.li]
                .write_at(at, &src[from..from + p.len as usize])
                .map_err(Error::from_na)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Bulk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulk")
            .field("len", &self.len())
            .field("segments", &self.inner.desc.segments.len())
            .field("registrations", &self.inner.mems.len())
            .finish()
    }
}

/// One NA operation of a transfer: `len` bytes between local extent `li` at offset `loff` in it
/// and remote extent `ri` at offset `roff` in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Piece {
    pub(crate) li: usize,
    pub(crate) loff: u64,
    pub(crate) ri: usize,
    pub(crate) roff: u64,
    pub(crate) len: u64,
}

/// The extent holding byte `off` of a space made of `lens` laid end to end, and the offset in
/// it; empty extents are skipped. None past the end.
fn locate(lens: &[u64], mut off: u64) -> Option<(usize, u64)> {
    for (i, &l) in lens.iter().enumerate() {
        if off < l {
            return Some((i, off));
        }
        off -= l;
    }
    None
}

/// Cuts a transfer of `len` bytes, from `local_offset` in a space of local extents `local`
/// (registration lengths, in order) and `remote_offset` in a space of remote extents `remote`,
/// into pieces that each lie inside one local and one remote extent, in order (Mercury walks its
/// origin and local segments the same way in `mercury_bulk.c`). The caller has checked both
/// ranges; a range past either end yields the pieces that fit.
pub(crate) fn split(
    local: &[u64],
    local_offset: u64,
    remote: &[u64],
    remote_offset: u64,
    len: u64,
) -> Vec<Piece> {
    let mut out = Vec::new();
    if len == 0 {
        return out;
    }
    let (Some((mut li, mut loff)), Some((mut ri, mut roff))) =
        (locate(local, local_offset), locate(remote, remote_offset))
    else {
        return out;
    };
    let mut left = len;
    while left > 0 && li < local.len() && ri < remote.len() {
        let n = left.min(local[li] - loff).min(remote[ri] - roff);
        if n > 0 {
            out.push(Piece {
                li,
                loff,
                ri,
                roff,
                len: n,
            });
        }
        left -= n;
        loff += n;
        roff += n;
        if loff == local[li] {
            li += 1;
            loff = 0;
        }
        if roff == remote[ri] {
            ri += 1;
            roff = 0;
        }
    }
    out
}

/// A transfer's NA operations still in flight, and its result so far: the first error wins,
/// and the transfer completes once, when the last part has completed.
#[derive(Debug)]
pub(crate) struct Parts {
    left: usize,
    result: Result<()>,
}

impl Parts {
    /// A transfer of `n` parts (at least one).
    pub(crate) fn new(n: usize) -> Parts {
        Parts {
            left: n.max(1),
            result: Ok(()),
        }
    }

    /// One part finished with `r`; returns the transfer's result when it was the last.
    pub(crate) fn done(&mut self, r: Result<()>) -> Option<Result<()>> {
        if self.result.is_ok() {
            self.result = r;
        }
        self.left = self.left.saturating_sub(1);
        (self.left == 0).then_some(self.result)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Copies through the pieces and compares with a plain copy: every byte moved once, each
    /// piece inside one extent on each side.
    fn check(local: &[u64], lo: u64, remote: &[u64], ro: u64, len: u64) {
        let ps = split(local, lo, remote, ro, len);
        assert_eq!(ps.iter().map(|p| p.len).sum::<u64>(), len);
        let start = |lens: &[u64], i: usize| lens[..i].iter().sum::<u64>();
        let (mut l, mut r) = (lo, ro);
        for p in &ps {
            assert!(p.len > 0);
            assert!(p.loff + p.len <= local[p.li] && p.roff + p.len <= remote[p.ri]);
            assert_eq!(start(local, p.li) + p.loff, l, "{ps:?}");
            assert_eq!(start(remote, p.ri) + p.roff, r, "{ps:?}");
            l += p.len;
            r += p.len;
        }
    }

    #[test]
    fn split_straddles_boundaries_on_both_sides() {
        let ps = split(&[10, 10], 5, &[4, 0, 8, 8], 2, 12);
        assert_eq!(
            ps,
            vec![
                Piece {
                    li: 0,
                    loff: 5,
                    ri: 0,
                    roff: 2,
                    len: 2
                },
                Piece {
                    li: 0,
                    loff: 7,
                    ri: 2,
                    roff: 0,
                    len: 3
                },
                Piece {
                    li: 1,
                    loff: 0,
                    ri: 2,
                    roff: 3,
                    len: 5
                },
                Piece {
                    li: 1,
                    loff: 5,
                    ri: 3,
                    roff: 0,
                    len: 2
                },
            ]
        );
        check(&[10, 10], 5, &[4, 0, 8, 8], 2, 12);
    }

    #[test]
    fn split_single_extents_is_one_piece_and_zero_is_none() {
        assert_eq!(split(&[100], 3, &[50], 7, 40).len(), 1);
        assert!(split(&[100], 3, &[50], 7, 0).is_empty());
        // Past the end: only what fits (the caller rejects such ranges first).
        assert_eq!(
            split(&[4], 0, &[2, 1], 0, 4)
                .iter()
                .map(|p| p.len)
                .sum::<u64>(),
            3
        );
    }

    #[test]
    fn split_covers_every_layout() {
        // Exhaustive over small layouts: every offset and length that fits.
        let layouts: &[&[u64]] = &[&[7], &[3, 4], &[1, 0, 6], &[2, 2, 3], &[0, 7]];
        for &a in layouts {
            for &b in layouts {
                for lo in 0..7 {
                    for ro in 0..7 {
                        for len in 0..=(7 - lo.max(ro)) {
                            check(a, lo, b, ro, len);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn parts_complete_once_with_the_first_error() {
        let mut p = Parts::new(3);
        assert_eq!(p.done(Ok(())), None);
        assert_eq!(p.done(Err(Error::Access)), None);
        assert_eq!(p.done(Err(Error::Canceled)), Some(Err(Error::Access)));
        let mut q = Parts::new(1);
        assert_eq!(q.done(Ok(())), Some(Ok(())));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::{lock, Arc, Mutex};

    /// Two threads complete the two parts of one transfer (as progress and teardown may, each
    /// under the context's state lock): exactly one of them sees the end, with the error.
    #[test]
    fn loom_transfer_parts_complete_once() {
        crate::sync::loom_model(2, || {
            let parts = Arc::new(Mutex::new(Parts::new(2)));
            let ends = Arc::new(Mutex::new(Vec::new()));
            let hs: Vec<_> = [Ok(()), Err(Error::Access)]
                .into_iter()
                .map(|r| {
                    let (parts, ends) = (parts.clone(), ends.clone());
                    loom::thread::spawn(move || {
                        let end = lock(&parts).done(r);
                        if let Some(e) = end {
                            lock(&ends).push(e);
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
            assert_eq!(*lock(&ends), vec![Err(Error::Access)]);
        });
    }
}
