//! Encoding and decoding of the 48-byte BHS of each opcode (RFC 7143 §11).

use super::{BHS_LEN, Bhs, PduError};

impl Bhs {
    /// Encodes this header with the given TotalAHSLength (in 4-byte words)
    /// and DataSegmentLength (must be at most 2^24-1; larger values are
    /// truncated to 24 bits by the caller's contract).
    pub fn encode(&self, total_ahs_words: u8, data_segment_length: u32) -> [u8; BHS_LEN] {
        let _ = (total_ahs_words, data_segment_length);
        todo!("helper fills this in")
    }

    /// Decodes a header of any opcode. Lengths (bytes 4..8) are not part of
    /// the typed header; read them with [`super::peek_lengths`].
    pub fn decode(b: &[u8; BHS_LEN]) -> Result<Bhs, PduError> {
        let _ = b;
        todo!("helper fills this in")
    }
}
