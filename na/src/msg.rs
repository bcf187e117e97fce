//! Message buffers and tags: what unexpected and expected messages carry.

/// A message tag. Mercury's ofi plugin uses 32 bits (`NA_OFI_MAX_TAG` = `0xFFFFFFFF`), carried as
/// remote CQ data for unexpected messages and as the libfabric tag for expected ones.
#[doc(alias = "na_tag_t")]
pub type Tag = u32;

/// A message buffer (`NA_Msg_buf_alloc`). Posting an operation moves the buffer into it and the
/// operation's completion hands it back, so a buffer can be neither read nor freed while the
/// transport may still touch it:
///
/// ```compile_fail,E0382
/// # fn demo(ctx: &na::Context, dest: &na::Addr) {
/// let buf = na::MsgBuf::new(64);
/// let _op = ctx.send_expected(buf, 8, dest, 7, 0);
/// drop(buf); // error[E0382]: use of moved value: the send owns it until its completion returns it
/// # }
/// ```
#[doc(alias = "NA_Msg_buf_alloc")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MsgBuf {
    data: Box<[u8]>,
}

impl MsgBuf {
    /// A zeroed buffer of `size` bytes.
    pub fn new(size: usize) -> MsgBuf {
        MsgBuf {
            data: vec![0u8; size].into_boxed_slice(),
        }
    }

    /// A buffer holding a copy of `bytes`.
    pub fn from_slice(bytes: &[u8]) -> MsgBuf {
        MsgBuf { data: bytes.into() }
    }

    /// Capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.data.len()
    }

    /// The whole buffer.
    pub fn as_slice(&self) -> &[u8] {
        &self.data
    }

    /// The whole buffer, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// Raw pointer to the first byte, for plugins that hand the buffer to a transport.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.data.as_mut_ptr()
    }
}

impl AsMut<[u8]> for MsgBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }
}

impl From<Vec<u8>> for MsgBuf {
    fn from(v: Vec<u8>) -> MsgBuf {
        MsgBuf {
            data: v.into_boxed_slice(),
        }
    }
}
