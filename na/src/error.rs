//! `na::Error`: the NA layer's one error enum, with Mercury's `na_return_t` numbers.

use std::fmt;

/// Every way an NA operation can fail. Values and names mirror Mercury's `na_return_t`
/// (`NA_SUCCESS` = 0 is `Ok(())`), so `code()` compares line for line with Mercury's logs.
#[doc(alias = "na_return_t")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// `NA_PERMISSION`: operation not permitted (e.g. RMA against a region without that access).
    Permission = 1,
    /// `NA_NOENTRY`: no such entry: unknown plugin, unknown key, no such peer.
    NoEntry = 2,
    /// `NA_INTERRUPT`: a blocking call was interrupted (woken) before anything completed.
    Interrupt = 3,
    /// `NA_AGAIN`: resource temporarily unavailable; retry.
    Again = 4,
    /// `NA_NOMEM`: out of memory.
    NoMem = 5,
    /// `NA_ACCESS`: access denied: remote key unknown or deregistered.
    Access = 6,
    /// `NA_FAULT`: bad address: garbage memory handle or address bytes.
    Fault = 7,
    /// `NA_BUSY`: device or resource busy (e.g. a queue at its cap).
    Busy = 8,
    /// `NA_EXIST`: entry already exists.
    Exist = 9,
    /// `NA_NODEV`: no such device: e.g. `ofi+verbs` on a machine without an RDMA device.
    NoDev = 10,
    /// `NA_INVALID_ARG`: invalid argument (malformed info or address string, bad offsets).
    InvalidArg = 11,
    /// `NA_PROTOCOL_ERROR`: the peer sent something this protocol cannot parse.
    ProtocolError = 12,
    /// `NA_OVERFLOW`: value too large: a receive buffer smaller than the message (truncation).
    Overflow = 13,
    /// `NA_MSGSIZE`: message larger than the plugin's maximum.
    MsgSize = 14,
    /// `NA_PROTONOSUPPORT`: protocol (plugin, provider) not supported.
    ProtoNoSupport = 15,
    /// `NA_OPNOTSUPPORTED`: operation not supported on this transport.
    OpNotSupported = 16,
    /// `NA_ADDRINUSE`: address already in use.
    AddrInUse = 17,
    /// `NA_ADDRNOTAVAIL`: cannot assign requested address.
    AddrNotAvail = 18,
    /// `NA_HOSTUNREACH`: peer unreachable (refused, reset, vanished).
    HostUnreach = 19,
    /// `NA_TIMEOUT`: operation reached its timeout.
    Timeout = 20,
    /// `NA_CANCELED`: operation canceled before it had any effect.
    Canceled = 21,
    /// `NA_IO_ERROR`: input/output error reported by the transport.
    IoError = 22,
}

impl Error {
    /// Mercury's numeric `na_return_t` value.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// Mercury's name for this value (`"NA_HOSTUNREACH"`), as `NA_Error_to_string` prints it.
    #[doc(alias = "NA_Error_to_string")]
    pub fn name(self) -> &'static str {
        match self {
            Error::Permission => "NA_PERMISSION",
            Error::NoEntry => "NA_NOENTRY",
            Error::Interrupt => "NA_INTERRUPT",
            Error::Again => "NA_AGAIN",
            Error::NoMem => "NA_NOMEM",
            Error::Access => "NA_ACCESS",
            Error::Fault => "NA_FAULT",
            Error::Busy => "NA_BUSY",
            Error::Exist => "NA_EXIST",
            Error::NoDev => "NA_NODEV",
            Error::InvalidArg => "NA_INVALID_ARG",
            Error::ProtocolError => "NA_PROTOCOL_ERROR",
            Error::Overflow => "NA_OVERFLOW",
            Error::MsgSize => "NA_MSGSIZE",
            Error::ProtoNoSupport => "NA_PROTONOSUPPORT",
            Error::OpNotSupported => "NA_OPNOTSUPPORTED",
            Error::AddrInUse => "NA_ADDRINUSE",
            Error::AddrNotAvail => "NA_ADDRNOTAVAIL",
            Error::HostUnreach => "NA_HOSTUNREACH",
            Error::Timeout => "NA_TIMEOUT",
            Error::Canceled => "NA_CANCELED",
            Error::IoError => "NA_IO_ERROR",
        }
    }

    /// Every value, in numeric order (for exhaustive mapping tests in the layers above).
    pub const ALL: [Error; 22] = [
        Error::Permission,
        Error::NoEntry,
        Error::Interrupt,
        Error::Again,
        Error::NoMem,
        Error::Access,
        Error::Fault,
        Error::Busy,
        Error::Exist,
        Error::NoDev,
        Error::InvalidArg,
        Error::ProtocolError,
        Error::Overflow,
        Error::MsgSize,
        Error::ProtoNoSupport,
        Error::OpNotSupported,
        Error::AddrInUse,
        Error::AddrNotAvail,
        Error::HostUnreach,
        Error::Timeout,
        Error::Canceled,
        Error::IoError,
    ];
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

impl std::error::Error for Error {}

/// Result type of the NA layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn codes_are_mercurys() {
        for (i, e) in Error::ALL.iter().enumerate() {
            assert_eq!(e.code(), i as i32 + 1, "{e:?}");
        }
        assert_eq!(Error::HostUnreach.code(), 19);
        assert_eq!(Error::Canceled.name(), "NA_CANCELED");
    }
}
