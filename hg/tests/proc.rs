//! Proc encoding: hand-derived golden bytes, and property tests that every type round-trips and bad buffers are typed errors.

use hg::bulk::{flags as bf, BulkBind, BulkDesc, BulkSegment, MemDescs};
use hg::proc::{decode_exact, decode_exact_into, encode_into, encode_to_vec, Decoder};
use hg::{BulkRef, Error, HgString, Proc};
use proptest::prelude::*;

hg::proc_struct! {
    /// WIRE.md's "iovec" input: a u32 length, then the bytes.
    struct Iov8 {
        len: u32,
        data: [u8; 8],
    }
}

hg::proc_struct! {
    /// A nested struct inside an RPC input.
    pub struct Inner {
        /// A flag.
        pub flag: bool,
        /// A signed value.
        pub v: i16,
    }
}

hg::rpc! {
    /// Everything at once, as a CaRT-style input/output pair.
    pub rpc Kitchen(KitchenIn, KitchenOut) {
        input {
            /// 8 bits.
            pub a: u8,
            /// 64 bits.
            pub b: u64,
            /// signed 32.
            pub c: i32,
            /// a uuid.
            pub uuid: [u8; 16],
            /// bytes.
            pub bytes: Vec<u8>,
            /// strings.
            pub names: Vec<String>,
            /// maybe.
            pub maybe: Option<u32>,
            /// nullable string.
            pub label: HgString,
            /// nested.
            pub inner: Inner,
            /// more nested.
            pub inners: Vec<Inner>,
            /// bulk.
            pub bulk: BulkRef,
        }
        output {
            /// status.
            pub rc: i32,
            /// i8 and i64.
            pub small: i8,
            /// wide.
            pub wide: i64,
            /// u16.
            pub port: u16,
            /// u32.
            pub n: u32,
        }
    }
}

#[test]
fn wire_md_iovec_body() {
    let v = Iov8 {
        len: 8,
        data: [0, 1, 2, 3, 4, 5, 6, 7],
    };
    #[rustfmt::skip]
    let expected = [
        0x08, 0x00, 0x00, 0x00,                         // 0..4: len = 8, little-endian
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, // 4..12: the bytes, no count
    ];
    assert_eq!(encode_to_vec(&v).unwrap(), expected);
    assert_eq!(decode_exact::<Iov8>(&expected).unwrap(), v);
}

#[test]
fn golden_scalars_strings_options() {
    #[rustfmt::skip]
    let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (encode_to_vec(&0x0102_0304u32).unwrap(), vec![0x04, 0x03, 0x02, 0x01]),
        (encode_to_vec(&-2i16).unwrap(), vec![0xfe, 0xff]),
        (encode_to_vec(&0x0102_0304_0506_0708u64).unwrap(),
            vec![0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01]),
        (encode_to_vec(&true).unwrap(), vec![0x01]),
        // hg_string_t "hi": u64 length 3 (counts the NUL) | 'h' 'i' NUL | is_const 0 | is_owned 0
        (encode_to_vec(&"hi".to_string()).unwrap(),
            vec![0x03, 0, 0, 0, 0, 0, 0, 0, b'h', b'i', 0x00, 0x00, 0x00]),
        // NULL string: u64 length 0 and nothing else
        (encode_to_vec(&HgString(None)).unwrap(), vec![0; 8]),
        // "" is not NULL: length 1, the NUL, two flag bytes
        (encode_to_vec(&HgString(Some(String::new()))).unwrap(),
            vec![0x01, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x00, 0x00]),
        // Vec<u8>: u64 count, then the bytes
        (encode_to_vec(&vec![0xAAu8, 0xBB]).unwrap(), vec![0x02, 0, 0, 0, 0, 0, 0, 0, 0xaa, 0xbb]),
        // Vec<u16>: u64 count, then each element little-endian
        (encode_to_vec(&vec![0x0102u16]).unwrap(), vec![0x01, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x01]),
        // Option: hg_bool_t present flag, then the value
        (encode_to_vec(&Some(7u8)).unwrap(), vec![0x01, 0x07]),
        (encode_to_vec(&None::<u64>).unwrap(), vec![0x00]),
        (encode_to_vec(&Inner { flag: true, v: 0x0102 }).unwrap(), vec![0x01, 0x02, 0x01]),
        (encode_to_vec(&BulkRef::NULL).unwrap(), vec![0; 8]),
    ];
    for (i, (got, want)) in cases.iter().enumerate() {
        assert_eq!(got, want, "case {i}");
    }
}

#[test]
fn golden_bulk_descriptor() {
    let desc = BulkDesc::new(
        vec![BulkSegment {
            base: 0x1000,
            len: 64,
        }],
        bf::READWRITE,
        vec![0xAA, 0xBB, 0xCC],
    );
    #[rustfmt::skip]
    let expected = [
        0x2b, 0, 0, 0, 0, 0, 0, 0,      // 0..8: proc: descriptor size 43
        0x40, 0, 0, 0, 0, 0, 0, 0,      // 8..16: len 64
        0x01, 0, 0, 0,                  // 16..20: segment count 1
        0x03, 0, 0, 0,                  // 20..24: flags READWRITE
        0x00, 0x10, 0, 0, 0, 0, 0, 0,   // 24..32: segment base 0x1000
        0x40, 0, 0, 0, 0, 0, 0, 0,      // 32..40: segment len 64
        0x03, 0, 0, 0, 0, 0, 0, 0,      // 40..48: NA handle size 3
        0xaa, 0xbb, 0xcc,               // 48..51: NA handle bytes
    ];
    let r = BulkRef::from(desc.clone());
    assert_eq!(r.encoded_size(), expected.len());
    assert_eq!(encode_to_vec(&r).unwrap(), expected);
    assert_eq!(decode_exact::<BulkRef>(&expected).unwrap(), r);

    // Two segments, one registration: REGV (0x40) set, one handle.
    let two = BulkDesc::new(
        vec![
            BulkSegment { base: 0x10, len: 1 },
            BulkSegment { base: 0x20, len: 2 },
        ],
        bf::READ_ONLY,
        vec![0x55],
    );
    let bytes = encode_to_vec(&BulkRef::from(two.clone())).unwrap();
    #[rustfmt::skip]
    assert_eq!(&bytes[8..24], &[
        3, 0, 0, 0, 0, 0, 0, 0,         // len 3
        2, 0, 0, 0,                     // 2 segments
        0x41, 0, 0, 0,                  // READ_ONLY | REGV
    ]);
    assert_eq!(&bytes[bytes.len() - 9..], &[1, 0, 0, 0, 0, 0, 0, 0, 0x55]);
}

#[test]
fn bulk_descriptor_bad_input() {
    let good = encode_to_vec(&BulkRef::from(BulkDesc::new(
        vec![BulkSegment { base: 1, len: 4 }],
        bf::READ_ONLY,
        vec![9; 4],
    )))
    .unwrap();
    // Every truncation fails with a typed error.
    for n in 0..good.len() {
        let e = decode_exact::<BulkRef>(&good[..n]).unwrap_err();
        assert!(
            matches!(e, Error::Overflow | Error::ProtocolError),
            "{n}: {e:?}"
        );
    }
    // Unknown flag bits, SM, a length that disagrees, a huge segment count.
    let mut b = good.clone();
    b[22] = 0x80; // flags byte 2: bit 23
    assert_eq!(decode_exact::<BulkRef>(&b), Err(Error::ProtocolError));
    let mut b = good.clone();
    b[20] |= bf::SM as u8;
    assert_eq!(decode_exact::<BulkRef>(&b), Err(Error::ProtocolError));
    let mut b = good.clone();
    b[8] = 5;
    assert_eq!(decode_exact::<BulkRef>(&b), Err(Error::ProtocolError));
    let mut b = good.clone();
    b[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(decode_exact::<BulkRef>(&b), Err(Error::Overflow));
    // A descriptor size larger than the message.
    let mut b = good.clone();
    b[0..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert_eq!(decode_exact::<BulkRef>(&b), Err(Error::Overflow));
}

#[test]
fn bulk_descriptor_bind_eager_per_segment_round_trip() {
    let d = BulkDesc {
        len: 5,
        flags: bf::READ_ONLY | bf::VIRT,
        segments: vec![
            BulkSegment {
                base: 0x100,
                len: 2,
            },
            BulkSegment { base: 0, len: 0 },
            BulkSegment {
                base: 0x300,
                len: 3,
            },
        ],
        mem: MemDescs::PerSegment(vec![(2, Some(vec![1, 2])), (0, None), (1, Some(vec![3]))]),
        bind: Some(BulkBind {
            addr: vec![7; 5],
            context_id: 4,
        }),
        eager: Some(vec![10, 11, 12, 13, 14]),
    };
    let r = BulkRef::from(d);
    let bytes = encode_to_vec(&r).unwrap();
    assert_eq!(bytes.len(), r.encoded_size());
    // flags on the wire: READ_ONLY | EAGER | BIND | VIRT
    assert_eq!(
        &bytes[20..24],
        &(0x01u32 | 0x04 | 0x20 | 0x80).to_le_bytes()
    );
    assert_eq!(decode_exact::<BulkRef>(&bytes).unwrap(), r);
}

#[test]
fn strings_reject_what_c_cannot_carry() {
    assert_eq!(encode_to_vec(&"a\0b".to_string()), Err(Error::InvalidArg));
    // Missing NUL, interior NUL, invalid UTF-8, flag byte 2, NULL into a String.
    let cases: [&[u8]; 5] = [
        &[2, 0, 0, 0, 0, 0, 0, 0, b'a', b'b', 0, 0],
        &[3, 0, 0, 0, 0, 0, 0, 0, b'a', 0, 0, 0, 0],
        &[2, 0, 0, 0, 0, 0, 0, 0, 0xff, 0, 0, 0],
        &[2, 0, 0, 0, 0, 0, 0, 0, b'a', 0, 2, 0],
        &[0, 0, 0, 0, 0, 0, 0, 0],
    ];
    for (i, c) in cases.iter().enumerate() {
        assert_eq!(
            decode_exact::<String>(c),
            Err(Error::ProtocolError),
            "case {i}"
        );
    }
    assert_eq!(decode_exact::<bool>(&[2]), Err(Error::ProtocolError));
    assert_eq!(
        decode_exact::<Option<u8>>(&[9, 1]),
        Err(Error::ProtocolError)
    );
    // Trailing bytes after the last field.
    assert_eq!(decode_exact::<u16>(&[1, 2, 3]), Err(Error::ProtocolError));
    // A count near 2^64 or 2^32 does not allocate; it fails on the bytes present.
    let mut huge = vec![0xff; 8];
    huge.extend_from_slice(&[1, 2, 3]);
    assert_eq!(decode_exact::<Vec<u8>>(&huge), Err(Error::Overflow));
    let mut near32 = (1u64 << 32).to_le_bytes().to_vec();
    near32.extend_from_slice(&[0; 64]);
    assert_eq!(decode_exact::<Vec<u32>>(&near32), Err(Error::Overflow));
    assert_eq!(decode_exact::<Vec<String>>(&near32), Err(Error::Overflow));
}

/// Decoding into a value whose buffers are large enough keeps them: no allocation, the same
/// storage (what lets a handler decode every request into one input value).
#[test]
fn decode_into_reuses_the_buffers_it_has() {
    let mut v = KitchenIn {
        bytes: Vec::with_capacity(64),
        names: vec![String::with_capacity(32)],
        label: HgString(Some(String::with_capacity(32))),
        ..KitchenIn::default()
    };
    let (bytes_at, name_at, label_at) = (
        v.bytes.as_ptr(),
        v.names[0].as_ptr(),
        v.label.0.as_ref().unwrap().as_ptr(),
    );
    for i in 0..3u8 {
        let w = KitchenIn {
            bytes: vec![i; 40 + usize::from(i)],
            names: vec![format!("name{i}")],
            label: HgString(Some(format!("label{i}"))),
            maybe: Some(u32::from(i)),
            ..KitchenIn::default()
        };
        decode_exact_into(&encode_to_vec(&w).unwrap(), &mut v).unwrap();
        assert_eq!(v, w);
        assert_eq!(v.bytes.as_ptr(), bytes_at);
        assert_eq!(v.names[0].as_ptr(), name_at);
        assert_eq!(v.label.0.as_ref().unwrap().as_ptr(), label_at);
    }
}

#[test]
fn encoding_goes_into_the_callers_buffer() {
    let v = KitchenOut {
        rc: -1,
        small: -2,
        wide: 3,
        port: 4,
        n: 5,
    };
    let size = v.encoded_size();
    assert_eq!(size, 4 + 1 + 8 + 2 + 4);
    // An NA message buffer with a header in front: the body is written in place after it.
    let mut msg = vec![0u8; 16 + size];
    assert_eq!(encode_into(&v, &mut msg[16..]), Ok(size));
    assert_eq!(decode_exact::<KitchenOut>(&msg[16..]).unwrap(), v);
    // One byte short: Overflow, not a panic or a partial success.
    assert_eq!(encode_into(&v, &mut msg[17..]), Err(Error::Overflow));
}

fn inner() -> impl Strategy<Value = Inner> {
    (any::<bool>(), any::<i16>()).prop_map(|(flag, v)| Inner { flag, v })
}

fn bulk() -> impl Strategy<Value = BulkRef> {
    prop_oneof![
        Just(BulkRef::NULL),
        (
            prop::collection::vec((1u64..u64::MAX / 64, 0u64..1 << 20), 1..5),
            1u32..4,
            prop::collection::vec(any::<u8>(), 1..40)
        )
            .prop_map(|(segs, access, h)| {
                BulkRef::from(BulkDesc::new(
                    segs.into_iter()
                        .map(|(base, len)| BulkSegment { base, len })
                        .collect(),
                    access,
                    h,
                ))
            }),
    ]
}

fn kitchen_in() -> impl Strategy<Value = KitchenIn> {
    (
        (any::<u8>(), any::<u64>(), any::<i32>(), any::<[u8; 16]>()),
        prop::collection::vec(any::<u8>(), 0..64),
        prop::collection::vec("[^\0]{0,12}", 0..4),
        any::<Option<u32>>(),
        prop::option::of("[^\0]{0,12}"),
        inner(),
        prop::collection::vec(inner(), 0..4),
        bulk(),
    )
        .prop_map(
            |((a, b, c, uuid), bytes, names, maybe, label, inner, inners, bulk)| KitchenIn {
                a,
                b,
                c,
                uuid,
                bytes,
                names,
                maybe,
                label: HgString(label),
                inner,
                inners,
                bulk,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn everything_round_trips(v in kitchen_in()) {
        let bytes = encode_to_vec(&v).unwrap();
        prop_assert_eq!(bytes.len(), v.encoded_size());
        prop_assert_eq!(decode_exact::<KitchenIn>(&bytes).unwrap(), v);
    }

    #[test]
    fn truncated_or_oversized_is_an_error(v in kitchen_in(), cut in any::<prop::sample::Index>(), extra in 1usize..8) {
        let bytes = encode_to_vec(&v).unwrap();
        let n = cut.index(bytes.len());
        prop_assert!(decode_exact::<KitchenIn>(&bytes[..n]).is_err());
        let mut longer = bytes.clone();
        longer.extend(std::iter::repeat_n(0u8, extra));
        prop_assert_eq!(decode_exact::<KitchenIn>(&longer), Err(Error::ProtocolError));
        // Encoding into a buffer one byte too small is an error too.
        let mut small = vec![0u8; bytes.len() - 1];
        prop_assert_eq!(encode_into(&v, &mut small), Err(Error::Overflow));
    }

    /// Decoding over an earlier value (its vectors and strings longer, shorter, present or
    /// absent) gives what decoding a new one gives.
    #[test]
    fn decode_into_an_earlier_value_equals_decode(old in kitchen_in(), v in kitchen_in()) {
        let bytes = encode_to_vec(&v).unwrap();
        let mut into = old;
        decode_exact_into(&bytes, &mut into).unwrap();
        prop_assert_eq!(into, v);
    }

    /// Over any earlier value, a cut or lengthened body is the same error as for `decode`, and
    /// random bytes never panic.
    #[test]
    fn decode_into_bad_input_is_an_error(old in kitchen_in(), v in kitchen_in(), cut in any::<prop::sample::Index>(), junk in prop::collection::vec(any::<u8>(), 0..256)) {
        let bytes = encode_to_vec(&v).unwrap();
        let n = cut.index(bytes.len());
        let mut into = old.clone();
        prop_assert_eq!(decode_exact_into(&bytes[..n], &mut into), decode_exact::<KitchenIn>(&bytes[..n]).map(|_| ()));
        let mut longer = bytes.clone();
        longer.push(0);
        let mut into = old.clone();
        prop_assert_eq!(decode_exact_into(&longer, &mut into), Err(Error::ProtocolError));
        let mut into = old;
        prop_assert_eq!(decode_exact_into(&junk, &mut into).is_ok(), decode_exact::<KitchenIn>(&junk).is_ok());
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_exact::<KitchenIn>(&bytes);
        let _ = decode_exact::<BulkRef>(&bytes);
        let _ = hg::header::decode_request(&bytes, hg::ChecksumLevel::None);
        let _ = hg::header::decode_response(&bytes, hg::ChecksumLevel::Payload);
        let mut d = Decoder::new(&bytes);
        let _ = Vec::<String>::decode(&mut d);
    }

    #[test]
    fn scalars_round_trip(a in any::<i8>(), b in any::<u16>(), c in any::<i64>(), d in any::<u32>(), e in any::<[u16; 3]>()) {
        prop_assert_eq!(decode_exact::<i8>(&encode_to_vec(&a).unwrap()).unwrap(), a);
        prop_assert_eq!(decode_exact::<u16>(&encode_to_vec(&b).unwrap()).unwrap(), b);
        prop_assert_eq!(decode_exact::<i64>(&encode_to_vec(&c).unwrap()).unwrap(), c);
        prop_assert_eq!(decode_exact::<u32>(&encode_to_vec(&d).unwrap()).unwrap(), d);
        prop_assert_eq!(decode_exact::<[u16; 3]>(&encode_to_vec(&e).unwrap()).unwrap(), e);
    }
}
