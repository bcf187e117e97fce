//! Operations: their ids, what a plugin is asked to do (`Request`), and what comes back (`Completion`).

use crate::addr::Addr;
use crate::error::Error;
use crate::mem::{MemHandle, RemoteMem};
use crate::msg::{MsgBuf, Tag};
use std::fmt;

/// Identifies one posted operation within its context (`na_op_id_t`); never reused by a context.
#[doc(alias = "na_op_id_t")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub u64);

/// The kind of an operation (`na_cb_type_t`).
#[doc(alias = "na_cb_type_t")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// `NA_CB_SEND_UNEXPECTED`.
    SendUnexpected,
    /// `NA_CB_RECV_UNEXPECTED`.
    RecvUnexpected,
    /// `NA_CB_SEND_EXPECTED`.
    SendExpected,
    /// `NA_CB_RECV_EXPECTED`.
    RecvExpected,
    /// `NA_CB_PUT`.
    Put,
    /// `NA_CB_GET`.
    Get,
}

/// What a plugin is asked to do. na validates nothing plugin-specific here: plugins check sizes,
/// addresses and ranges and complete the operation with the typed error.
pub enum Request {
    /// Send `len` bytes of `buf` (header included) to `dest`'s unexpected queue with `tag`.
    SendUnexpected {
        /// The message; returned in the completion.
        buf: MsgBuf,
        /// Bytes to send, from the start of the buffer.
        len: usize,
        /// Destination endpoint.
        dest: Addr,
        /// Tag the receiver sees.
        tag: Tag,
    },
    /// Post `buf` to receive one unexpected message from anyone.
    RecvUnexpected {
        /// Where the message lands; returned in the completion.
        buf: MsgBuf,
    },
    /// Send `len` bytes of `buf` to the receive `dest` posted for `tag`.
    SendExpected {
        /// The message; returned in the completion.
        buf: MsgBuf,
        /// Bytes to send.
        len: usize,
        /// Destination endpoint.
        dest: Addr,
        /// Tag the receive matches on.
        tag: Tag,
    },
    /// Post `buf` to receive the message `source` sends with `tag`.
    RecvExpected {
        /// Where the message lands; returned in the completion.
        buf: MsgBuf,
        /// Only messages from this endpoint match.
        source: Addr,
        /// Only messages with this tag match.
        tag: Tag,
    },
    /// Write `len` bytes from `local` at `local_offset` into `remote` at `remote_offset` on `dest`.
    Put {
        /// Local source region (a clone is held until completion).
        local: MemHandle,
        /// Offset into `local`.
        local_offset: u64,
        /// Peer's region (boxed: it is the largest field, and every operation, RMA or not, is
        /// moved a few times between posting and completion).
        remote: Box<RemoteMem>,
        /// Offset into `remote`.
        remote_offset: u64,
        /// Bytes to move.
        len: u64,
        /// The peer endpoint owning `remote`.
        dest: Addr,
    },
    /// Read `len` bytes from `remote` at `remote_offset` on `dest` into `local` at `local_offset`.
    Get {
        /// Local destination region (a clone is held until completion).
        local: MemHandle,
        /// Offset into `local`.
        local_offset: u64,
        /// Peer's region (boxed: it is the largest field, and every operation, RMA or not, is
        /// moved a few times between posting and completion).
        remote: Box<RemoteMem>,
        /// Offset into `remote`.
        remote_offset: u64,
        /// Bytes to move.
        len: u64,
        /// The peer endpoint owning `remote`.
        dest: Addr,
    },
}

impl Request {
    /// The kind of this request.
    pub fn kind(&self) -> OpKind {
        match self {
            Request::SendUnexpected { .. } => OpKind::SendUnexpected,
            Request::RecvUnexpected { .. } => OpKind::RecvUnexpected,
            Request::SendExpected { .. } => OpKind::SendExpected,
            Request::RecvExpected { .. } => OpKind::RecvExpected,
            Request::Put { .. } => OpKind::Put,
            Request::Get { .. } => OpKind::Get,
        }
    }

    /// Takes the message buffer out of a message request (None for RMA).
    pub fn into_buf(self) -> Option<MsgBuf> {
        match self {
            Request::SendUnexpected { buf, .. }
            | Request::RecvUnexpected { buf }
            | Request::SendExpected { buf, .. }
            | Request::RecvExpected { buf, .. } => Some(buf),
            Request::Put { .. } | Request::Get { .. } => None,
        }
    }
}

/// The arguments of a put or get, borrowed from its [`Request`] (what every plugin's RMA path reads).
#[derive(Clone, Copy, Debug)]
pub struct Rma<'a> {
    /// True for a put (local → remote), false for a get.
    pub put: bool,
    /// Local region.
    pub local: &'a MemHandle,
    /// Offset into `local`.
    pub local_offset: u64,
    /// Peer's region.
    pub remote: &'a RemoteMem,
    /// Offset into `remote`.
    pub remote_offset: u64,
    /// Bytes to move.
    pub len: u64,
    /// The peer endpoint owning `remote`.
    pub dest: &'a Addr,
}

impl Request {
    /// The put or get arguments of an RMA request (None for messages).
    pub fn rma(&self) -> Option<Rma<'_>> {
        match self {
            Request::Put {
                local,
                local_offset,
                remote,
                remote_offset,
                len,
                dest,
            }
            | Request::Get {
                local,
                local_offset,
                remote,
                remote_offset,
                len,
                dest,
            } => Some(Rma {
                put: matches!(self, Request::Put { .. }),
                local,
                local_offset: *local_offset,
                remote,
                remote_offset: *remote_offset,
                len: *len,
                dest,
            }),
            _ => None,
        }
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.kind())
    }
}

/// One posted operation as a plugin receives it.
#[derive(Debug)]
pub struct Op {
    /// Its id.
    pub id: OpId,
    /// The caller's token, returned in the completion.
    pub user: u64,
    /// What to do.
    pub req: Request,
}

impl Op {
    /// The completion of this operation with `result` and nothing received; message buffers go
    /// back to the caller.
    pub fn complete(self, result: Result<(), Error>) -> Completion {
        let kind = self.req.kind();
        Completion {
            op: self.id,
            kind,
            user: self.user,
            result,
            buf: self.req.into_buf(),
            len: 0,
            source: None,
            tag: 0,
        }
    }
}

/// The one completion of one operation (`na_cb_info`), drained from the context by its caller.
#[doc(alias = "na_cb_info")]
#[derive(Debug)]
pub struct Completion {
    /// The operation.
    pub op: OpId,
    /// Its kind.
    pub kind: OpKind,
    /// The caller's token given at post time.
    pub user: u64,
    /// `Ok` or the typed error (`Canceled` only when the operation had no effect).
    pub result: Result<(), Error>,
    /// The message buffer the operation was given (message operations), handed back.
    pub buf: Option<MsgBuf>,
    /// Bytes received (receives), including the plugin's unexpected header; bytes sent (sends).
    pub len: usize,
    /// The sender (unexpected and expected receives).
    pub source: Option<Addr>,
    /// The message's tag (receives).
    pub tag: Tag,
}
