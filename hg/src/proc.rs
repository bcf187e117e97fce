//! Proc encoding (`hg_proc_t`): the [`Proc`] trait, its encoder and decoder, and the Mercury-compatible impls.
//!
//! Mercury's procs copy each value into the buffer in host byte order, one after the other, with
//! no tags and no padding (`mercury_proc.h`, built without XDR). daos-rs fixes that order to
//! little-endian, which is the host order of every machine DAOS runs on, so the bytes match a
//! Mercury peer on x86-64 and aarch64. What each type writes:
//!
//! | Rust type | Mercury proc | bytes |
//! |---|---|---|
//! | `u8` `i8` `u16` `i16` `u32` `i32` `u64` `i64` | `hg_proc_uint8_t` … `hg_proc_int64_t` | the value, little-endian |
//! | `bool` | `hg_proc_hg_bool_t` (`uint8_t`) | `0` or `1` |
//! | `[T; N]` (a uuid is `[u8; 16]`) | `hg_proc_raw` / a fixed loop | the N elements, no count |
//! | `Vec<T>` (a byte string is `Vec<u8>`) | `hg_size_t` count, then the elements | u64 count, elements |
//! | `Option<T>` | a `hg_bool_t` "present" flag, then the value | `0`, or `1` + value |
//! | `String` / [`HgString`] | `hg_proc_hg_string_t` (`mercury_proc_string.c`) | u64 length counting the NUL (0 = NULL string), the bytes, `00`, `is_const` u8, `is_owned` u8 |
//! | [`crate::BulkDesc`] | `hg_proc_hg_bulk_t` (`mercury_proc_bulk.c`) | u64 descriptor size (0 = `HG_BULK_NULL`), the descriptor |
//! | structs from [`crate::proc_struct!`] / [`crate::rpc!`] | `MERCURY_GEN_PROC` / `CRT_RPC_DECLARE` | the fields in declaration order |
//!
//! Encoding writes straight into the caller's buffer (the NA message buffer, DESIGN §3) and fails
//! with [`Error::Overflow`] when it is too small; decoding reads a received buffer and yields owned
//! values, or writes over a kept value reusing its buffers ([`Proc::decode_into`]). A body cut
//! short is [`Error::Overflow`]; bytes no encoder writes (a `bool` of 7, a string without its
//! NUL, trailing bytes after the last field) are [`Error::ProtocolError`]. A length field never
//! allocates more than the bytes actually present can fill.

use crate::error::{Error, Result};

/// Writes encoded values into a caller-provided buffer.
#[derive(Debug)]
pub struct Encoder<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Encoder<'a> {
    /// An encoder writing from the start of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Encoder<'a> {
        Encoder { buf, pos: 0 }
    }

    /// Bytes written so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Room left.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Appends raw bytes (`hg_proc_bytes`); [`Error::Overflow`] when they do not fit.
    #[doc(alias = "hg_proc_bytes")]
    #[doc(alias = "hg_proc_raw")]
    pub fn put_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.len() > self.remaining() {
            return Err(Error::Overflow);
        }
        self.buf[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
        Ok(())
    }

    /// What has been written.
    pub fn written(&self) -> &[u8] {
        &self.buf[..self.pos]
    }
}

/// Reads values out of a received buffer.
#[derive(Debug, Clone)]
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    /// A decoder reading from the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Decoder<'a> {
        Decoder { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Takes the next `n` bytes; [`Error::Overflow`] when fewer are left (a truncated body or a
    /// length field larger than the message).
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::Overflow);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// Takes exactly `N` bytes as an array.
    pub fn take_array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// Reads a u64 length field and checks it against what is left, so a forged length cannot
    /// make the decoder allocate or loop past the message.
    pub fn length(&mut self) -> Result<usize> {
        let n = u64::decode(self)?;
        let n = usize::try_from(n).map_err(|_| Error::Overflow)?;
        if n > self.remaining() {
            return Err(Error::Overflow);
        }
        Ok(n)
    }

    /// Checks that every byte was consumed ([`Error::ProtocolError`] otherwise).
    pub fn finish(&self) -> Result<()> {
        if self.remaining() != 0 {
            tracing::debug!(left = self.remaining(), "hg: trailing bytes after the body");
            return Err(Error::ProtocolError);
        }
        Ok(())
    }
}

/// A value that Mercury's procs can carry (`hg_proc_cb_t` for one type).
///
/// `encoded_size` must equal what `encode` writes; `decode(encode(v)) == v`.
#[doc(alias = "hg_proc_cb_t")]
#[doc(alias = "hg_proc_uint8_t")]
#[doc(alias = "hg_proc_uint32_t")]
#[doc(alias = "hg_proc_uint64_t")]
#[doc(alias = "hg_proc_int32_t")]
#[doc(alias = "hg_proc_hg_bool_t")]
#[doc(alias = "hg_proc_hg_const_string_t")]
pub trait Proc: Sized {
    /// Bytes `encode` will write.
    fn encoded_size(&self) -> usize;
    /// Writes the value (`HG_ENCODE`).
    fn encode(&self, enc: &mut Encoder<'_>) -> Result<()>;
    /// Reads a value (`HG_DECODE`); the result owns its data.
    fn decode(dec: &mut Decoder<'_>) -> Result<Self>;

    /// Reads a value over `self`, as `HG_Get_input` fills the struct its caller passes: a type
    /// that owns a buffer (`Vec`, `String`, the structs of [`crate::rpc!`] made of them) decodes
    /// into the allocation it already has, so a value decoded again and again allocates nothing
    /// once its buffers are large enough. The result equals [`Proc::decode`]'s. On an error
    /// `self` is left valid but unspecified. The default decodes a new value and replaces `self`.
    fn decode_into(&mut self, dec: &mut Decoder<'_>) -> Result<()> {
        *self = Self::decode(dec)?;
        Ok(())
    }

    /// Bytes a slice of values takes (overridden by `u8` to avoid a loop).
    #[doc(hidden)]
    fn slice_encoded_size(items: &[Self]) -> usize {
        items.iter().map(Proc::encoded_size).sum()
    }
    /// Encodes a slice of values one after the other (overridden by `u8` to copy at once).
    #[doc(hidden)]
    fn encode_slice(items: &[Self], enc: &mut Encoder<'_>) -> Result<()> {
        items.iter().try_for_each(|v| v.encode(enc))
    }
    /// Decodes `n` values (overridden by `u8` to copy at once).
    #[doc(hidden)]
    fn decode_vec(n: usize, dec: &mut Decoder<'_>) -> Result<Vec<Self>> {
        // Never trust `n` for the allocation: each value takes at least one byte here (every
        // type with a Proc impl does), so what is left bounds how many can really follow.
        let mut v = Vec::with_capacity(n.min(dec.remaining()));
        for _ in 0..n {
            v.push(Self::decode(dec)?);
        }
        Ok(v)
    }
    /// Decodes `n` values over `v`: its first elements in place, then new ones (overridden by
    /// `u8` to copy at once).
    #[doc(hidden)]
    fn decode_vec_into(n: usize, dec: &mut Decoder<'_>, v: &mut Vec<Self>) -> Result<()> {
        v.truncate(n);
        Self::decode_slice_into(v, dec)?;
        // As in `decode_vec`: the count bounds nothing until the bytes are there.
        v.reserve((n - v.len()).min(dec.remaining()));
        while v.len() < n {
            v.push(Self::decode(dec)?);
        }
        Ok(())
    }
    /// Decodes `items.len()` values over `items` (overridden by `u8` to copy at once).
    #[doc(hidden)]
    fn decode_slice_into(items: &mut [Self], dec: &mut Decoder<'_>) -> Result<()> {
        items.iter_mut().try_for_each(|x| x.decode_into(dec))
    }
}

/// Encodes `value` at the start of `buf`; returns the bytes written.
pub fn encode_into<T: Proc>(value: &T, buf: &mut [u8]) -> Result<usize> {
    let mut enc = Encoder::new(buf);
    value.encode(&mut enc)?;
    Ok(enc.position())
}

/// Encodes `value` into a new vector of exactly its size.
pub fn encode_to_vec<T: Proc>(value: &T) -> Result<Vec<u8>> {
    let mut v = vec![0u8; value.encoded_size()];
    let n = encode_into(value, &mut v)?;
    debug_assert_eq!(n, v.len(), "encoded_size disagrees with encode");
    v.truncate(n);
    Ok(v)
}

/// Decodes a `T` that must fill `buf` exactly.
pub fn decode_exact<T: Proc>(buf: &[u8]) -> Result<T> {
    let mut dec = Decoder::new(buf);
    let v = T::decode(&mut dec)?;
    dec.finish()?;
    Ok(v)
}

/// As [`decode_exact`], over `value` ([`Proc::decode_into`]: its buffers are reused).
pub fn decode_exact_into<T: Proc>(buf: &[u8], value: &mut T) -> Result<()> {
    let mut dec = Decoder::new(buf);
    value.decode_into(&mut dec)?;
    dec.finish()
}

macro_rules! int_proc {
    ($($t:ty),* $(,)?) => {$(
        impl Proc for $t {
            fn encoded_size(&self) -> usize {
                std::mem::size_of::<$t>()
            }
            fn encode(&self, enc: &mut Encoder<'_>) -> Result<()> {
                enc.put_bytes(&self.to_le_bytes())
            }
            fn decode(dec: &mut Decoder<'_>) -> Result<Self> {
                Ok(<$t>::from_le_bytes(dec.take_array()?))
            }
        }
    )*};
}

int_proc!(i8, u16, i16, u32, i32, u64, i64);

impl Proc for u8 {
    fn encoded_size(&self) -> usize {
        1
    }
    fn encode(&self, enc: &mut Encoder<'_>) -> Result<()> {
        enc.put_bytes(&[*self])
    }
    fn decode(dec: &mut Decoder<'_>) -> Result<Self> {
        Ok(dec.take(1)?[0])
    }
    fn slice_encoded_size(items: &[Self]) -> usize {
        items.len()
    }
    fn encode_slice(items: &[Self], enc: &mut Encoder<'_>) -> Result<()> {
        enc.put_bytes(items)
    }
    fn decode_vec(n: usize, dec: &mut Decoder<'_>) -> Result<Vec<Self>> {
        Ok(dec.take(n)?.to_vec())
    }
    fn decode_vec_into(n: usize, dec: &mut Decoder<'_>, v: &mut Vec<Self>) -> Result<()> {
        let bytes = dec.take(n)?;
        v.clear();
        v.extend_from_slice(bytes);
        Ok(())
    }
    fn decode_slice_into(items: &mut [Self], dec: &mut Decoder<'_>) -> Result<()> {
        items.copy_from_slice(dec.take(items.len())?);
        Ok(())
    }
}

impl Proc for bool {
    fn encoded_size(&self) -> usize {
        1
    }
    fn encode(&self, enc: &mut Encoder<'_>) -> Result<()> {
        enc.put_bytes(&[u8::from(*self)])
    }
    fn decode(dec: &mut Decoder<'_>) -> Result<Self> {
        match dec.take(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => {
                tracing::debug!(byte = b, "hg: bool neither 0 nor 1");
                Err(Error::ProtocolError)
            }
        }
    }
}

/// No bytes: the input or output of an RPC that carries none.
impl Proc for () {
    fn encoded_size(&self) -> usize {
        0
    }
    fn encode(&self, _enc: &mut Encoder<'_>) -> Result<()> {
        Ok(())
    }
    fn decode(_dec: &mut Decoder<'_>) -> Result<Self> {
        Ok(())
    }
}

impl<T: Proc, const N: usize> Proc for [T; N] {
    fn encoded_size(&self) -> usize {
        T::slice_encoded_size(self)
    }
    fn encode(&self, enc: &mut Encoder<'_>) -> Result<()> {
        T::encode_slice(self, enc)
    }
    fn decode(dec: &mut Decoder<'_>) -> Result<Self> {
        let v = T::decode_vec(N, dec)?;
        // decode_vec returns exactly N values or an error.
        v.try_into().map_err(|_| Error::ProtocolError)
    }
    fn decode_into(&mut self, dec: &mut Decoder<'_>) -> Result<()> {
        T::decode_slice_into(self, dec)
    }
}

impl<T: Proc> Proc for Vec<T> {
    fn encoded_size(&self) -> usize {
        8 + T::slice_encoded_size(self)
    }
    fn encode(&self, enc: &mut Encoder<'_>) -> Result<()> {
        (self.len() as u64).encode(enc)?;
        T::encode_slice(self, enc)
    }
    fn decode(dec: &mut Decoder<'_>) -> Result<Self> {
        let n = dec.length()?;
        T::decode_vec(n, dec)
    }
    fn decode_into(&mut self, dec: &mut Decoder<'_>) -> Result<()> {
        let n = dec.length()?;
        T::decode_vec_into(n, dec, self)
    }
}

impl<T: Proc> Proc for Option<T> {
    fn encoded_size(&self) -> usize {
        1 + self.as_ref().map_or(0, Proc::encoded_size)
    }
    fn encode(&self, enc: &mut Encoder<'_>) -> Result<()> {
        self.is_some().encode(enc)?;
        match self {
            Some(v) => v.encode(enc),
            None => Ok(()),
        }
    }
    fn decode(dec: &mut Decoder<'_>) -> Result<Self> {
        if bool::decode(dec)? {
            Ok(Some(T::decode(dec)?))
        } else {
            Ok(None)
        }
    }
    fn decode_into(&mut self, dec: &mut Decoder<'_>) -> Result<()> {
        match (bool::decode(dec)?, self.as_mut()) {
            (true, Some(v)) => v.decode_into(dec),
            (true, None) => {
                *self = Some(T::decode(dec)?);
                Ok(())
            }
            (false, _) => {
                *self = None;
                Ok(())
            }
        }
    }
}

fn string_size(s: Option<&str>) -> usize {
    match s {
        Some(s) => 8 + s.len() + 1 + 2,
        None => 8,
    }
}

fn encode_string(s: Option<&str>, is_const: bool, enc: &mut Encoder<'_>) -> Result<()> {
    let Some(s) = s else {
        return 0u64.encode(enc);
    };
    if s.as_bytes().contains(&0) {
        // A C reader would stop at the first NUL: refuse rather than truncate silently.
        return Err(Error::InvalidArg);
    }
    ((s.len() + 1) as u64).encode(enc)?;
    enc.put_bytes(s.as_bytes())?;
    // NUL, is_const, is_owned (always 0 on the encoding side in Mercury).
    enc.put_bytes(&[0, u8::from(is_const), 0])
}

fn decode_string(dec: &mut Decoder<'_>) -> Result<Option<String>> {
    Ok(decode_str(dec)?.map(str::to_owned))
}

/// [`decode_string`] borrowing the bytes where they lie.
fn decode_str<'a>(dec: &mut Decoder<'a>) -> Result<Option<&'a str>> {
    let n = dec.length()?;
    if n == 0 {
        return Ok(None);
    }
    let bytes = dec.take(n)?;
    let (last, body) = bytes.split_last().expect("n > 0");
    if *last != 0 || body.contains(&0) {
        tracing::debug!(len = n, "hg: string without a single terminating NUL");
        return Err(Error::ProtocolError);
    }
    let s = std::str::from_utf8(body).map_err(|_| {
        tracing::debug!(len = n, "hg: string is not UTF-8");
        Error::ProtocolError
    })?;
    let flags = dec.take(2)?;
    if flags.iter().any(|f| *f > 1) {
        return Err(Error::ProtocolError);
    }
    Ok(Some(s))
}

/// Decodes a string over `out`, reusing its allocation.
fn decode_string_into(dec: &mut Decoder<'_>, out: &mut Option<String>) -> Result<()> {
    match (decode_str(dec)?, out.as_mut()) {
        (Some(s), Some(o)) => {
            o.clear();
            o.push_str(s);
        }
        (s, _) => *out = s.map(str::to_owned),
    }
    Ok(())
}

/// A string that is never NULL; encodes as `hg_string_t` does. Decoding a NULL string (length
/// 0) into `String` is [`Error::ProtocolError`]; use [`HgString`] where NULL is allowed.
impl Proc for String {
    fn encoded_size(&self) -> usize {
        string_size(Some(self))
    }
    fn encode(&self, enc: &mut Encoder<'_>) -> Result<()> {
        encode_string(Some(self), false, enc)
    }
    fn decode(dec: &mut Decoder<'_>) -> Result<Self> {
        decode_string(dec)?.ok_or(Error::ProtocolError)
    }
    fn decode_into(&mut self, dec: &mut Decoder<'_>) -> Result<()> {
        let s = decode_str(dec)?.ok_or(Error::ProtocolError)?;
        self.clear();
        self.push_str(s);
        Ok(())
    }
}

/// A C string that may be NULL (`hg_string_t` / `d_string_t`): `None` encodes as length 0.
#[doc(alias = "hg_string_t")]
#[doc(alias = "d_string_t")]
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct HgString(pub Option<String>);

impl Proc for HgString {
    fn encoded_size(&self) -> usize {
        string_size(self.0.as_deref())
    }
    fn encode(&self, enc: &mut Encoder<'_>) -> Result<()> {
        encode_string(self.0.as_deref(), false, enc)
    }
    fn decode(dec: &mut Decoder<'_>) -> Result<Self> {
        Ok(HgString(decode_string(dec)?))
    }
    fn decode_into(&mut self, dec: &mut Decoder<'_>) -> Result<()> {
        decode_string_into(dec, &mut self.0)
    }
}

/// Declares a struct whose [`Proc`] impl encodes its fields in order (`MERCURY_GEN_PROC`).
///
/// ```
/// hg::proc_struct! {
///     /// A key and its value.
///     pub struct Kv {
///         /// The key.
///         pub key: String,
///         /// The value.
///         pub val: Vec<u8>,
///     }
/// }
/// let kv = Kv { key: "a".into(), val: vec![1, 2] };
/// let bytes = hg::proc::encode_to_vec(&kv).unwrap();
/// assert_eq!(hg::proc::decode_exact::<Kv>(&bytes).unwrap(), kv);
/// ```
#[doc(alias = "MERCURY_GEN_PROC")]
#[doc(alias = "MERCURY_GEN_STRUCT_PROC")]
#[macro_export]
macro_rules! proc_struct {
    (
        $(#[$m:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$fm:meta])* $fvis:vis $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$m])*
        #[derive(Debug, Clone, Default, PartialEq)]
        $vis struct $name {
            $( $(#[$fm])* $fvis $field: $ty, )*
        }

        impl $crate::Proc for $name {
            fn encoded_size(&self) -> usize {
                0 $( + $crate::Proc::encoded_size(&self.$field) )*
            }
            #[allow(unused_variables)]
            fn encode(&self, enc: &mut $crate::proc::Encoder<'_>) -> $crate::Result<()> {
                $( $crate::Proc::encode(&self.$field, enc)?; )*
                Ok(())
            }
            #[allow(unused_variables)]
            fn decode(dec: &mut $crate::proc::Decoder<'_>) -> $crate::Result<Self> {
                Ok($name { $( $field: <$ty as $crate::Proc>::decode(dec)?, )* })
            }
            #[allow(unused_variables)]
            fn decode_into(&mut self, dec: &mut $crate::proc::Decoder<'_>) -> $crate::Result<()> {
                $( $crate::Proc::decode_into(&mut self.$field, dec)?; )*
                Ok(())
            }
        }
    };
}

/// Declares an RPC's input and output structs from one field list, as `CRT_RPC_DECLARE` does:
/// `rpc! { pub rpc Ping(PingIn, PingOut) { input { .. } output { .. } } }` makes `PingIn` and
/// `PingOut`, each as [`proc_struct!`] would, and a unit struct `Ping` implementing [`crate::Rpc`]
/// that ties them together and names the RPC (`Rpc::NAME`, whose hash is `Rpc::id`).
///
/// ```
/// hg::rpc! {
///     /// Echo a payload back.
///     pub rpc Echo(EchoIn, EchoOut) {
///         input {
///             /// What to send back.
///             pub data: Vec<u8>,
///             /// Sender's uuid.
///             pub uuid: [u8; 16],
///         }
///         output {
///             /// Status.
///             pub rc: i32,
///             /// The payload.
///             pub data: Vec<u8>,
///         }
///     }
/// }
/// let input = EchoIn { data: vec![7; 3], uuid: [1; 16] };
/// let bytes = hg::proc::encode_to_vec(&input).unwrap();
/// assert_eq!(bytes.len(), 8 + 3 + 16);
/// assert_eq!(<Echo as hg::Rpc>::NAME, "Echo");
/// assert_eq!(<Echo as hg::Rpc>::id(), hg::hash_name("Echo"));
/// ```
#[doc(alias = "CRT_RPC_DECLARE")]
#[doc(alias = "CRT_RPC_DEFINE")]
#[macro_export]
macro_rules! rpc {
    (
        $(#[$m:meta])*
        $vis:vis rpc $name:ident ($in:ident, $out:ident) {
            input { $( $(#[$im:meta])* $ivis:vis $ifield:ident : $ity:ty ),* $(,)? }
            output { $( $(#[$om:meta])* $ovis:vis $ofield:ident : $oty:ty ),* $(,)? }
        }
    ) => {
        $crate::proc_struct! {
            #[doc = concat!("Input of [`", stringify!($name), "`].")]
            $vis struct $in { $( $(#[$im])* $ivis $ifield : $ity ),* }
        }
        $crate::proc_struct! {
            #[doc = concat!("Output of [`", stringify!($name), "`].")]
            $vis struct $out { $( $(#[$om])* $ovis $ofield : $oty ),* }
        }
        $(#[$m])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        $vis struct $name;

        impl $crate::Rpc for $name {
            type In = $in;
            type Out = $out;
            const NAME: &'static str = stringify!($name);
        }
    };
}
