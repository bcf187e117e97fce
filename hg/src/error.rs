//! `hg::Error`: the HG layer's one error enum with Mercury's `hg_return_t` numbers, and the na → hg mapping.

use std::fmt;

/// Every way an HG operation can fail. Values and names mirror Mercury's `hg_return_t`
/// (`HG_SUCCESS` = 0 is `Ok(())`): the same number goes on the wire as the response header's
/// return code, so a Mercury peer reads ours and we read theirs.
#[doc(alias = "hg_return_t")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// `HG_PERMISSION`: operation not permitted (e.g. a bulk transfer against a read-only region).
    Permission = 1,
    /// `HG_NOENTRY`: no such entry; above all, an RPC id nobody registered.
    NoEntry = 2,
    /// `HG_INTERRUPT`: a blocking call was interrupted before anything completed.
    Interrupt = 3,
    /// `HG_AGAIN`: resource temporarily unavailable; retry.
    Again = 4,
    /// `HG_NOMEM`: out of memory.
    NoMem = 5,
    /// `HG_ACCESS`: permission denied.
    Access = 6,
    /// `HG_FAULT`: bad address: a garbage handle or descriptor.
    Fault = 7,
    /// `HG_BUSY`: device or resource busy (e.g. a handle still in use).
    Busy = 8,
    /// `HG_EXIST`: entry already exists (an id registered twice).
    Exist = 9,
    /// `HG_NODEV`: no such device.
    NoDev = 10,
    /// `HG_INVALID_ARG`: invalid argument; also a header whose checksum flag disagrees with ours.
    InvalidArg = 11,
    /// `HG_PROTOCOL_ERROR`: bytes that do not parse: wrong magic, unknown flags, malformed body.
    ProtocolError = 12,
    /// `HG_OVERFLOW`: value too large: a buffer too small to encode into or a body cut short.
    Overflow = 13,
    /// `HG_MSGSIZE`: message larger than the transport (or the overflow path) can carry.
    MsgSize = 14,
    /// `HG_PROTONOSUPPORT`: another protocol version in the request header.
    ProtoNoSupport = 15,
    /// `HG_OPNOTSUPPORTED`: operation not supported.
    OpNotSupported = 16,
    /// `HG_ADDRINUSE`: address already in use.
    AddrInUse = 17,
    /// `HG_ADDRNOTAVAIL`: cannot assign requested address.
    AddrNotAvail = 18,
    /// `HG_HOSTUNREACH`: peer unreachable.
    HostUnreach = 19,
    /// `HG_TIMEOUT`: operation reached its deadline.
    Timeout = 20,
    /// `HG_CANCELED`: operation canceled before it had any effect.
    Canceled = 21,
    /// `HG_IO_ERROR`: input/output error.
    IoError = 22,
    /// `HG_HOSTFIREWALL`: host unreachable because of a firewall.
    HostFirewall = 23,
    /// `HG_CHECKSUM_ERROR`: a header CRC16 or payload CRC32C did not match.
    ChecksumError = 24,
    /// `HG_NA_ERROR`: a generic NA failure with no closer HG value.
    NaError = 25,
    /// `HG_OTHER_ERROR`: a generic HG failure.
    OtherError = 26,
}

impl Error {
    /// Every value, in numeric order (1..=26).
    pub const ALL: [Error; 26] = [
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
        Error::HostFirewall,
        Error::ChecksumError,
        Error::NaError,
        Error::OtherError,
    ];

    /// Mercury's numeric `hg_return_t` value.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The value for a code read off the wire (a response header's return code); `None` for 0
    /// (success) and for numbers Mercury does not define.
    pub fn from_code(code: i32) -> Option<Error> {
        usize::try_from(code)
            .ok()
            .and_then(|c| c.checked_sub(1))
            .and_then(|i| Error::ALL.get(i).copied())
    }

    /// Mercury's name for this value (`"HG_NOENTRY"`), as `HG_Error_to_string` prints it.
    #[doc(alias = "HG_Error_to_string")]
    pub fn name(self) -> &'static str {
        match self {
            Error::Permission => "HG_PERMISSION",
            Error::NoEntry => "HG_NOENTRY",
            Error::Interrupt => "HG_INTERRUPT",
            Error::Again => "HG_AGAIN",
            Error::NoMem => "HG_NOMEM",
            Error::Access => "HG_ACCESS",
            Error::Fault => "HG_FAULT",
            Error::Busy => "HG_BUSY",
            Error::Exist => "HG_EXIST",
            Error::NoDev => "HG_NODEV",
            Error::InvalidArg => "HG_INVALID_ARG",
            Error::ProtocolError => "HG_PROTOCOL_ERROR",
            Error::Overflow => "HG_OVERFLOW",
            Error::MsgSize => "HG_MSGSIZE",
            Error::ProtoNoSupport => "HG_PROTONOSUPPORT",
            Error::OpNotSupported => "HG_OPNOTSUPPORTED",
            Error::AddrInUse => "HG_ADDRINUSE",
            Error::AddrNotAvail => "HG_ADDRNOTAVAIL",
            Error::HostUnreach => "HG_HOSTUNREACH",
            Error::Timeout => "HG_TIMEOUT",
            Error::Canceled => "HG_CANCELED",
            Error::IoError => "HG_IO_ERROR",
            Error::HostFirewall => "HG_HOSTFIREWALL",
            Error::ChecksumError => "HG_CHECKSUM_ERROR",
            Error::NaError => "HG_NA_ERROR",
            Error::OtherError => "HG_OTHER_ERROR",
        }
    }

    /// The na → hg mapping (DESIGN §5), the one place an NA failure becomes an HG one.
    ///
    /// Mercury shares the numbering of the two enums and casts `(hg_return_t) na_ret` wherever
    /// an NA call fails; this function makes the same choice explicitly, value by value, so a
    /// renumbering on either side fails to compile or fails the exhaustive test below instead of
    /// silently changing meaning.
    pub fn from_na(e: na::Error) -> Error {
        match e {
            na::Error::Permission => Error::Permission,
            na::Error::NoEntry => Error::NoEntry,
            na::Error::Interrupt => Error::Interrupt,
            na::Error::Again => Error::Again,
            na::Error::NoMem => Error::NoMem,
            na::Error::Access => Error::Access,
            na::Error::Fault => Error::Fault,
            na::Error::Busy => Error::Busy,
            na::Error::Exist => Error::Exist,
            na::Error::NoDev => Error::NoDev,
            na::Error::InvalidArg => Error::InvalidArg,
            na::Error::ProtocolError => Error::ProtocolError,
            na::Error::Overflow => Error::Overflow,
            na::Error::MsgSize => Error::MsgSize,
            na::Error::ProtoNoSupport => Error::ProtoNoSupport,
            na::Error::OpNotSupported => Error::OpNotSupported,
            na::Error::AddrInUse => Error::AddrInUse,
            na::Error::AddrNotAvail => Error::AddrNotAvail,
            na::Error::HostUnreach => Error::HostUnreach,
            na::Error::Timeout => Error::Timeout,
            na::Error::Canceled => Error::Canceled,
            na::Error::IoError => Error::IoError,
            // `na::Error` is non-exhaustive: a value added later that this function has not
            // been taught is a generic NA failure, as Mercury's `HG_NA_ERROR` is.
            #[allow(unreachable_patterns)]
            _ => Error::NaError,
        }
    }
}

/// The na → hg mapping as a free function ([`Error::from_na`]), for `map_err(na_to_hg)`.
pub fn na_to_hg(e: na::Error) -> Error {
    Error::from_na(e)
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

impl std::error::Error for Error {}

/// Result type of the HG layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn codes_are_mercurys() {
        for (i, e) in Error::ALL.iter().enumerate() {
            assert_eq!(e.code(), i as i32 + 1, "{e:?}");
            assert_eq!(Error::from_code(e.code()), Some(*e));
        }
        // Spot checks against mercury_core_types.h's X-macro order.
        assert_eq!(Error::NoEntry.code(), 2);
        assert_eq!(Error::InvalidArg.code(), 11);
        assert_eq!(Error::ChecksumError.code(), 24);
        assert_eq!(Error::OtherError.code(), 26);
        assert_eq!(Error::from_code(0), None);
        assert_eq!(Error::from_code(27), None);
        assert_eq!(Error::from_code(-3), None);
        assert_eq!(Error::Canceled.name(), "HG_CANCELED");
        assert_eq!(Error::NoEntry.to_string(), "HG_NOENTRY (2)");
    }

    #[test]
    fn na_mapping_is_exhaustive_and_keeps_meaning() {
        for e in na::Error::ALL {
            let h = Error::from_na(e);
            // Same meaning: the same Mercury name after the prefix, and the same number.
            assert_eq!(&h.name()[3..], &e.name()[3..], "{e:?}");
            assert_eq!(h.code(), e.code(), "{e:?}");
            assert_eq!(na_to_hg(e), h);
        }
        // Every HG value an NA value maps to is distinct (the mapping loses nothing).
        let mut seen: Vec<Error> = na::Error::ALL.iter().map(|e| Error::from_na(*e)).collect();
        seen.sort_by_key(|e| e.code());
        seen.dedup();
        assert_eq!(seen.len(), na::Error::ALL.len());
    }
}
