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
