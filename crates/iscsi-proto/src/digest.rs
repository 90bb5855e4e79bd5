//! CRC32C header and data digests (RFC 7143 §12.1, Castagnoli polynomial),
//! computed by the `crc32c` crate with hardware acceleration where present.

/// Bytes a digest takes on the wire.
pub const DIGEST_LEN: usize = 4;

/// CRC32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Continues a CRC32C over more bytes.
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, data)
}

/// A digest as it appears on the wire (least significant byte first, as
/// the RFC 3720 appendix B.4 examples show).
pub fn to_wire(crc: u32) -> [u8; DIGEST_LEN] {
    crc.to_le_bytes()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    /// RFC 3720 appendix B.4 gives each CRC as the bytes sent on the wire.
    fn wire(data: &[u8]) -> [u8; DIGEST_LEN] {
        to_wire(crc32c(data))
    }

    #[test]
    fn rfc3720_b4_zeros() {
        assert_eq!(wire(&[0u8; 32]), [0xaa, 0x36, 0x91, 0x8a]);
    }

    #[test]
    fn rfc3720_b4_ones() {
        assert_eq!(wire(&[0xffu8; 32]), [0x43, 0xab, 0xa8, 0x62]);
    }

    #[test]
    fn rfc3720_b4_incrementing() {
        let data: Vec<u8> = (0u8..32).collect();
        assert_eq!(wire(&data), [0x4e, 0x79, 0xdd, 0x46]);
    }

    #[test]
    fn rfc3720_b4_decrementing() {
        let data: Vec<u8> = (0u8..32).rev().collect();
        assert_eq!(wire(&data), [0x5c, 0xdb, 0x3f, 0x11]);
    }

    #[test]
    fn rfc3720_b4_iscsi_read_command() {
        let pdu = hex::decode(concat!(
            "01c00000", "00000000", "00000000", "00000000", "14000000", "00000400", "00000014", "00000018", "28000000",
            "00000000", "02000000", "00000000",
        ))
        .unwrap();
        assert_eq!(pdu.len(), 48);
        assert_eq!(wire(&pdu), [0x56, 0x3a, 0x96, 0xd9]);
    }

    #[test]
    fn append_equals_one_pass() {
        let data: Vec<u8> = (0u8..=255).cycle().take(1000).collect();
        let (a, b) = data.split_at(333);
        assert_eq!(crc32c_append(crc32c(a), b), crc32c(&data));
    }
}
