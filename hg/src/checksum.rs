//! The two checksums of a Mercury built with checksums: CRC-16/T10-DIF over headers, CRC-32C over payloads.
//!
//! Mercury takes both from its `mchecksum` library. Its `"crc16"` is **CRC-16/T10-DIF**
//! (polynomial 0x8BB7, initial value 0, not reflected, no final XOR; check value 0xD0DB for
//! `"123456789"`; the table mchecksum ships starts `0x0000, 0x8BB7`, and with ISA-L it calls
//! `crc16_t10dif`). Its `"crc32c"` is **CRC-32C (Castagnoli)** (reflected polynomial 0x82F63B78,
//! initial value and final XOR 0xFFFFFFFF; check value 0xE3069283).

/// CRC-16/T10-DIF lookup table, built at compile time from the polynomial.
const CRC16_TABLE: [u16; 256] = {
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = (i as u16) << 8;
        let mut b = 0;
        while b < 8 {
            c = if c & 0x8000 != 0 {
                (c << 1) ^ 0x8BB7
            } else {
                c << 1
            };
            b += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// CRC-32C lookup table (reflected), built at compile time.
const CRC32C_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut b = 0;
        while b < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            b += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// Slicing-by-8 tables for CRC-32C: `T[k][b]` is the CRC of byte `b` followed by `k` zero bytes,
/// so eight table lookups advance the CRC by eight bytes at once.
const CRC32C_SLICE8: [[u32; 256]; 8] = {
    let mut t = [[0u32; 256]; 8];
    t[0] = CRC32C_TABLE;
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[k - 1][i];
            t[k][i] = (prev >> 8) ^ CRC32C_TABLE[(prev & 0xFF) as usize];
            i += 1;
        }
        k += 1;
    }
    t
};

/// A running CRC-16/T10-DIF, fed field by field as Mercury's header proc feeds mchecksum.
#[doc(alias = "mchecksum_crc16")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Crc16(u16);

impl Crc16 {
    /// A fresh state (0).
    pub fn new() -> Crc16 {
        Crc16(0)
    }

    /// Feeds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) ^ CRC16_TABLE[usize::from(((self.0 >> 8) as u8) ^ b)];
        }
    }

    /// The checksum so far (CRC-16/T10-DIF has no final XOR).
    pub fn value(&self) -> u16 {
        self.0
    }
}

/// CRC-16/T10-DIF of `bytes` in one call.
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut c = Crc16::new();
    c.update(bytes);
    c.value()
}

/// CRC-32C of `bytes` (what Mercury puts in the HG header at checksum level PAYLOAD).
#[doc(alias = "mchecksum_crc32c")]
pub fn crc32c(bytes: &[u8]) -> u32 {
    let t = &CRC32C_SLICE8;
    let mut c = !0u32;
    let mut chunks = bytes.chunks_exact(8);
    for w in &mut chunks {
        let lo = c ^ u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        c = t[7][(lo & 0xFF) as usize]
            ^ t[6][((lo >> 8) & 0xFF) as usize]
            ^ t[5][((lo >> 16) & 0xFF) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][usize::from(w[4])]
            ^ t[2][usize::from(w[5])]
            ^ t[1][usize::from(w[6])]
            ^ t[0][usize::from(w[7])];
    }
    for &b in chunks.remainder() {
        c = (c >> 8) ^ CRC32C_TABLE[usize::from((c as u8) ^ b)];
    }
    !c
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// The one-byte-at-a-time definition, to check the slicing-by-8 version against.
    fn crc32c_bytewise(bytes: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in bytes {
            c = (c >> 8) ^ CRC32C_TABLE[usize::from((c as u8) ^ b)];
        }
        !c
    }

    #[test]
    fn crc32c_slicing_matches_bytewise_at_every_length_and_alignment() {
        let data: Vec<u8> = (0..300u32)
            .map(|i| (i.wrapping_mul(167) >> 3) as u8)
            .collect();
        for start in 0..8 {
            for len in 0..(data.len() - start) {
                let s = &data[start..start + len];
                assert_eq!(crc32c(s), crc32c_bytewise(s), "start {start} len {len}");
            }
        }
    }

    #[test]
    fn known_answers() {
        // The catalogue check values ("123456789").
        assert_eq!(crc16(b"123456789"), 0xD0DB);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        // RFC 3720 B.4 vectors for CRC-32C: 32 zero bytes, 32 0xFF bytes.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        assert_eq!(crc16(b""), 0);
        assert_eq!(crc32c(b""), 0);
        // The table mchecksum ships begins with these entries.
        assert_eq!(&CRC16_TABLE[..4], &[0x0000, 0x8BB7, 0x9CD9, 0x176E]);
        assert_eq!(CRC16_TABLE[255], 0x55B3);
    }

    #[test]
    fn incremental_equals_one_shot() {
        let mut c = Crc16::new();
        c.update(b"1234");
        c.update(b"");
        c.update(b"56789");
        assert_eq!(c.value(), crc16(b"123456789"));
    }
}
