//! Registered memory: local regions the network may touch (`MemHandle`) and peers' regions (`RemoteMem`).

use crate::error::{Error, Result};
use crate::sync::{lock, Arc, Mutex};
use smallvec::SmallVec;
use std::any::Any;
use std::fmt;

bitflags::bitflags! {
    /// What a peer may do to a registered region (`NA_MEM_READ_ONLY`, `NA_MEM_WRITE_ONLY`,
    /// `NA_MEM_READWRITE`).
    #[doc(alias = "NA_MEM_READWRITE")]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Access: u8 {
        /// Peers may read (get from) this region.
        const READ = 0b01;
        /// Peers may write (put into) this region.
        const WRITE = 0b10;
    }
}

impl Access {
    /// `NA_MEM_READ_ONLY`.
    pub const READ_ONLY: Access = Access::READ;
    /// `NA_MEM_WRITE_ONLY`.
    pub const WRITE_ONLY: Access = Access::WRITE;
    /// `NA_MEM_READWRITE`.
    pub const READWRITE: Access = Access::READ.union(Access::WRITE);
}

/// The plugin's half of a registration (an `fid_mr`, a table entry). Dropping it deregisters the
/// region from the transport; na drops it only after the last [`MemHandle`] clone is gone, and every
/// local operation on the region holds a clone, so deregistration waits for in-flight operations.
pub trait PluginMem: Send + Sync + Any {
    /// Appends the serialized handle (what a peer passes to `mem_deserialize`).
    fn serialize(&self, out: &mut Vec<u8>);
    /// Lets a plugin recover its own type.
    fn as_any(&self) -> &dyn Any;
}

/// A local segment as a plugin sees it when registering: a stable address and a length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Address of the first byte; stable for the registration's lifetime.
    pub addr: usize,
    /// Length in bytes.
    pub len: usize,
}

/// The bytes of a registered region, shared between the user's [`MemHandle`] and plugins that move
/// bytes themselves (inproc): a plugin that keeps a clone can copy into or out of the region without
/// unsafe code, and the memory stays alive as long as any clone does.
pub struct MemRegion {
    storage: Mutex<Vec<Box<[u8]>>>,
    segments: SmallVec<[Segment; 1]>,
    total: usize,
}

impl MemRegion {
    /// The segments' stable addresses and lengths.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Total length over all segments.
    pub fn len(&self) -> usize {
        self.total
    }

    /// True when the region has no bytes.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Copies `src` into the region at `offset` (across segment boundaries).
    pub fn write_at(&self, offset: usize, src: &[u8]) -> Result<()> {
        self.with_range(offset, src.len(), |seg, at, done, n| {
            seg[at..at + n].copy_from_slice(&src[done..done + n])
        })
    }

    /// Copies from the region at `offset` into `dst`.
    pub fn read_at(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        let len = dst.len();
        self.with_range(offset, len, |seg, at, done, n| {
            dst[done..done + n].copy_from_slice(&seg[at..at + n])
        })
    }

    /// Runs `f(segment, offset_in_segment, bytes_done, n)` over each piece of
    /// `[offset, offset + len)`, under the region's lock; out of range is `Overflow`.
    pub fn with_range(
        &self,
        offset: usize,
        len: usize,
        mut f: impl FnMut(&mut [u8], usize, usize, usize),
    ) -> Result<()> {
        let end = offset.checked_add(len).ok_or(Error::Overflow)?;
        if end > self.total {
            return Err(Error::Overflow);
        }
        let mut storage = lock(&self.storage);
        let mut base = 0usize;
        let mut done = 0usize;
        for seg in storage.iter_mut() {
            let seg_end = base + seg.len();
            if done < len && offset + done < seg_end {
                let at = offset + done - base;
                let n = (seg.len() - at).min(len - done);
                f(seg, at, done, n);
                done += n;
            }
            base = seg_end;
            if done == len {
                break;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for MemRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemRegion")
            .field("len", &self.total)
            .field("segments", &self.segments.len())
            .finish()
    }
}

struct MemInner {
    region: Arc<MemRegion>,
    access: Access,
    // Declared last: dropped (deregistered) after nothing else refers to the memory.
    plugin: Option<Box<dyn PluginMem>>,
}

/// A registered local region of one or more segments (`na_mem_handle_t` after `NA_Mem_register`).
///
/// The handle owns its memory, so the memory outlives every operation on it: `put` and `get` hold
/// a clone until they complete, and the plugin's deregistration runs when the last clone drops. A
/// registered `Vec` is moved in, so it cannot be freed or touched behind the transport's back:
///
/// ```compile_fail,E0382
/// # fn demo(class: &na::Class) -> na::Result<()> {
/// let v = vec![0u8; 4096];
/// let mh = class.mem_register(v, na::Access::READWRITE)?;
/// drop(v); // error[E0382]: use of moved value: the registration owns it
/// # Ok(()) }
/// ```
///
/// Offsets given to RMA address the segments as one contiguous space, in order.
#[doc(alias = "na_mem_handle_t")]
#[derive(Clone)]
pub struct MemHandle {
    inner: Arc<MemInner>,
}

impl MemHandle {
    /// Builds a handle over `segments`; `register` gets their stable addresses and returns the
    /// plugin's half. Used by plugins through `Class::mem_register*`.
    pub(crate) fn new(
        segments: Vec<Box<[u8]>>,
        access: Access,
        register: impl FnOnce(&Arc<MemRegion>, Access) -> Result<Box<dyn PluginMem>>,
    ) -> Result<MemHandle> {
        let segs: SmallVec<[Segment; 1]> = segments
            .iter()
            .map(|s| Segment {
                addr: s.as_ptr() as usize,
                len: s.len(),
            })
            .collect();
        let total = segs.iter().map(|s| s.len).sum();
        let region = Arc::new(MemRegion {
            storage: Mutex::new(segments),
            segments: segs,
            total,
        });
        let plugin = register(&region, access)?;
        Ok(MemHandle {
            inner: Arc::new(MemInner {
                region,
                access,
                plugin: Some(plugin),
            }),
        })
    }

    /// Total length over all segments.
    pub fn len(&self) -> usize {
        self.inner.region.total
    }

    /// True when the region has no bytes.
    pub fn is_empty(&self) -> bool {
        self.inner.region.total == 0
    }

    /// What peers may do to the region.
    pub fn access(&self) -> Access {
        self.inner.access
    }

    /// The segments' stable addresses and lengths.
    pub fn segments(&self) -> &[Segment] {
        &self.inner.region.segments
    }

    /// The region's bytes (what a plugin that copies itself keeps while an operation is in flight).
    pub fn region(&self) -> &Arc<MemRegion> {
        &self.inner.region
    }

    /// The plugin's half of the registration.
    pub fn plugin_mem(&self) -> &dyn PluginMem {
        self.inner
            .plugin
            .as_deref()
            .expect("registration present until drop")
    }

    /// Copies `src` into the region at `offset` (across segment boundaries).
    pub fn write_at(&self, offset: usize, src: &[u8]) -> Result<()> {
        self.inner.region.write_at(offset, src)
    }

    /// Copies from the region at `offset` into `dst`.
    pub fn read_at(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        self.inner.region.read_at(offset, dst)
    }

    /// The whole region as one vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.len()];
        self.read_at(0, &mut v).expect("whole range is in bounds");
        v
    }

    /// Deregisters the region and gives its bytes back as one `Vec` (`NA_Mem_deregister`, then
    /// the memory is the caller's again). Moves the buffer without copying when this was the
    /// last clone of a one-segment region; otherwise (a clone still held elsewhere, or several
    /// segments) it copies, and the registration ends when the last clone drops.
    #[doc(alias = "NA_Mem_deregister")]
    pub fn into_vec(self) -> Vec<u8> {
        match Arc::try_unwrap(self.inner) {
            Ok(MemInner { region, plugin, .. }) => {
                drop(plugin); // deregistered: the network no longer touches the memory
                match Arc::try_unwrap(region) {
                    Ok(r) => {
                        let mut segs = crate::sync::into_inner(r.storage);
                        if segs.len() == 1 {
                            segs.pop().map(Vec::from).unwrap_or_default()
                        } else {
                            segs.concat()
                        }
                    }
                    Err(region) => {
                        let mut v = vec![0u8; region.len()];
                        region.read_at(0, &mut v).expect("whole range is in bounds");
                        v
                    }
                }
            }
            Err(inner) => MemHandle { inner }.to_vec(),
        }
    }

    /// Number of live clones (the user's plus those held by in-flight operations).
    pub fn ref_count(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// Runs `f(segment, offset_in_segment, bytes_done, n)` over each piece of
    /// `[offset, offset + len)`, under the region's lock. Plugins use it to move bytes.
    pub fn with_range(
        &self,
        offset: usize,
        len: usize,
        f: impl FnMut(&mut [u8], usize, usize, usize),
    ) -> Result<()> {
        self.inner.region.with_range(offset, len, f)
    }
}

impl fmt::Debug for MemHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemHandle")
            .field("len", &self.len())
            .field("segments", &self.inner.region.segments.len())
            .field("access", &self.inner.access)
            .finish()
    }
}

/// One segment of a peer's region, as its serialized handle describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RemoteSegment {
    /// The address (or plugin-defined base) the peer's transport uses for the first byte.
    pub base: u64,
    /// Length in bytes.
    pub len: u64,
    /// The remote key the peer's transport checks.
    pub key: u64,
}

/// A peer's registered region, deserialized from its handle (`NA_Mem_handle_deserialize`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RemoteMem {
    /// The plugin that serialized it.
    pub plugin: &'static str,
    /// What the peer allows.
    pub access: Access,
    /// Its segments, in order; RMA offsets address them as one space.
    pub segments: SmallVec<[RemoteSegment; 1]>,
}

impl RemoteMem {
    /// Total length over all segments.
    pub fn len(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// True when the region has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    struct Dummy;
    impl PluginMem for Dummy {
        fn serialize(&self, out: &mut Vec<u8>) {
            out.push(0xAB);
        }
        fn as_any(&self) -> &dyn Any {
            self
        }
    }

    fn handle(segs: &[&[u8]]) -> MemHandle {
        MemHandle::new(
            segs.iter().map(|s| Box::<[u8]>::from(*s)).collect(),
            Access::READWRITE,
            |_, _| Ok(Box::new(Dummy)),
        )
        .unwrap()
    }

    #[test]
    fn offsets_span_segments() {
        let mh = handle(&[&[0, 1, 2], &[3, 4], &[5, 6, 7, 8]]);
        assert_eq!(mh.len(), 9);
        let mut out = [0u8; 5];
        mh.read_at(2, &mut out).unwrap();
        assert_eq!(out, [2, 3, 4, 5, 6]);
        mh.write_at(4, &[40, 50, 60]).unwrap();
        assert_eq!(mh.to_vec(), vec![0, 1, 2, 3, 40, 50, 60, 7, 8]);
        assert_eq!(mh.read_at(8, &mut [0u8; 2]), Err(Error::Overflow));
        assert_eq!(mh.write_at(usize::MAX, &[1]), Err(Error::Overflow));
    }

    #[test]
    fn clones_keep_the_registration() {
        let mh = handle(&[&[1; 16]]);
        let inflight = mh.clone();
        assert_eq!(mh.ref_count(), 2);
        drop(mh);
        assert_eq!(inflight.to_vec(), vec![1; 16]);
    }
}
