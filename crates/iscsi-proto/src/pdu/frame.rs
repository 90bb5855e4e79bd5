//! PDU framing (RFC 7143 §11.2): BHS, AHS, optional header digest, data
//! segment padded to 4 bytes, optional data digest.

use bytes::BytesMut;

use super::{BHS_LEN, Bhs, MAX_DATA_SEGMENT_LENGTH, Pdu, PduError};
use crate::digest::{DIGEST_LEN, crc32c, crc32c_append, to_wire};

#[cfg(test)]
mod tests;

/// What the framing of one direction of a connection currently is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameConfig {
    /// HeaderDigest=CRC32C in force.
    pub header_digest: bool,
    /// DataDigest=CRC32C in force.
    pub data_digest: bool,
    /// Largest data segment accepted (our MaxRecvDataSegmentLength on
    /// receive; 8192 during login, RFC 7143 §13.12).
    pub max_recv_data_segment_length: u32,
}

impl Default for FrameConfig {
    fn default() -> Self {
        Self { header_digest: false, data_digest: false, max_recv_data_segment_length: 8192 }
    }
}

/// Reads TotalAHSLength (in bytes) and DataSegmentLength from the first
/// 8 bytes of a BHS; `None` when fewer than 8 bytes are given.
pub fn peek_lengths(bhs: &[u8]) -> Option<(usize, u32)> {
    // RFC 7143 §11.2.1.4-5: byte 4 counts 4-byte words, bytes 5..8 are a
    // 24-bit big-endian byte count.
    let &[_, _, _, _, ahs_words, d0, d1, d2] = bhs.get(..8)? else {
        return None;
    };
    Some((usize::from(ahs_words) * 4, u32::from_be_bytes([0, d0, d1, d2])))
}

/// Zero padding that brings `len` up to a multiple of 4 (RFC 7143 §11.2.3).
fn pad_len(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// Reads a digest as it sits on the wire (see [`crate::digest::to_wire`]).
fn wire_digest(b: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(..DIGEST_LEN)?.try_into().ok()?))
}

/// Frames PDUs out of a receive buffer, one complete PDU at a time.
#[derive(Debug, Clone, Default)]
pub struct PduDecoder {
    pub config: FrameConfig,
}

impl PduDecoder {
    pub fn new(config: FrameConfig) -> Self {
        Self { config }
    }

    /// Returns the next complete PDU and removes its bytes from `buf`;
    /// `Ok(None)` and `buf` untouched when more bytes are needed. Lengths are
    /// checked against `config` before anything is buffered for them.
    ///
    /// With a header digest in force the header (BHS, AHS and digest, at
    /// most 1072 bytes) is verified before DataSegmentLength is trusted, so
    /// a corrupted length shows up as [`PduError::HeaderDigest`]; without
    /// one DataSegmentLength is checked as soon as the BHS is in. Either way
    /// no data is waited for past the limit.
    ///
    /// On error `buf` is left as it was and the caller should drop the
    /// connection. (A data digest error leaves the framing intact and RFC
    /// 7143 §7.8 allows recovering from it at ErrorRecoveryLevel 1 or more;
    /// this decoder does not attempt that.) The returned `data` and `ahs`
    /// are slices of the received buffer, not copies.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Pdu>, PduError> {
        let Some(h) = self.decode_header(buf)? else {
            return Ok(None);
        };
        let total = h.total_len();
        if buf.len() < total {
            return Ok(None);
        }
        let (data_start, data_len) = (h.header_len, h.data_len);
        if h.data_digest_len > 0 {
            let covered = buf.get(data_start..data_start + data_len + h.pad_len).unwrap_or_default();
            let received = buf.get(total - DIGEST_LEN..).and_then(wire_digest);
            h.check_data_digest(crc32c(covered), received)?;
        }

        let frame = buf.split_to(total).freeze();
        Ok(Some(Pdu {
            bhs: h.bhs,
            ahs: frame.slice(BHS_LEN..h.ahs_end),
            data: frame.slice(data_start..data_start + data_len),
        }))
    }

    /// Decodes the header of the next PDU in `buf` without waiting for its
    /// data segment, so that a caller can read a large data segment straight
    /// into its final place (one copy instead of two). The same checks as
    /// [`Self::decode`] apply: header digest, DataSegmentLength limit,
    /// opcode. `Ok(None)` when the header is not all in yet.
    pub fn decode_header(&self, buf: &[u8]) -> Result<Option<FrameHeader>, PduError> {
        let cfg = self.config;
        let Some((ahs_len, data_len)) = peek_lengths(buf) else {
            return Ok(None);
        };
        if buf.len() < BHS_LEN {
            return Ok(None);
        }
        let ahs_end = BHS_LEN + ahs_len;
        let hdr_digest_len = if cfg.header_digest { DIGEST_LEN } else { 0 };

        // RFC 7143 §12.1: the header digest covers BHS and AHS.
        if cfg.header_digest {
            let Some(header) = buf.get(..ahs_end) else {
                return Ok(None);
            };
            let Some(received) = buf.get(ahs_end..).and_then(wire_digest) else {
                return Ok(None);
            };
            let computed = crc32c(header);
            if received != computed {
                return Err(PduError::HeaderDigest { received, computed });
            }
        }

        let limit = cfg.max_recv_data_segment_length;
        if data_len > limit {
            return Err(PduError::DataSegmentTooLong { len: data_len, limit });
        }

        // The header is trusted from here on: an undefined opcode is refused
        // without waiting for its data segment.
        let Some(bhs_bytes) = buf.first_chunk::<BHS_LEN>() else {
            return Ok(None);
        };
        let bhs = Bhs::decode(bhs_bytes)?;
        let header_len = ahs_end + hdr_digest_len;
        if buf.len() < header_len {
            return Ok(None);
        }
        // `data_len` is at most 2^24-1, so none of the sums can overflow.
        let data_len = data_len as usize;
        Ok(Some(FrameHeader {
            bhs,
            ahs_end,
            header_len,
            data_len,
            pad_len: pad_len(data_len),
            // §12.1: no data digest on an empty data segment.
            data_digest_len: if cfg.data_digest && data_len > 0 { DIGEST_LEN } else { 0 },
        }))
    }
}

/// The decoded header of a PDU and the layout of the bytes that follow it
/// (RFC 7143 §11.2: BHS, AHS, header digest, data, padding, data digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameHeader {
    pub bhs: Bhs,
    /// End of the AHS (start of the header digest, if any).
    pub ahs_end: usize,
    /// Bytes before the data segment: BHS, AHS and header digest.
    pub header_len: usize,
    /// DataSegmentLength.
    pub data_len: usize,
    /// Zero padding after the data (RFC 7143 §11.2.3).
    pub pad_len: usize,
    /// 4 when a data digest follows the padding, else 0.
    pub data_digest_len: usize,
}

impl FrameHeader {
    /// Bytes of the whole PDU on the wire.
    pub fn total_len(&self) -> usize {
        self.header_len + self.data_len + self.pad_len + self.data_digest_len
    }

    /// Bytes after the data segment: padding and data digest.
    pub fn trailer_len(&self) -> usize {
        self.pad_len + self.data_digest_len
    }

    /// Checks a data digest computed over data and padding (RFC 7143
    /// §12.1) against the trailer's last 4 bytes as received (`None` when
    /// they are missing, which counts as a mismatch).
    pub fn check_data_digest(&self, computed: u32, received: Option<u32>) -> Result<(), PduError> {
        let received = received.unwrap_or(!computed);
        if received != computed {
            return Err(PduError::DataDigest { received, computed });
        }
        Ok(())
    }

    /// Reads the data digest from a received trailer (padding then digest).
    pub fn trailer_digest(&self, trailer: &[u8]) -> Option<u32> {
        trailer.get(self.pad_len..).and_then(wire_digest)
    }
}

/// Appends BHS + AHS + header digest for a PDU whose data segment is
/// `data_len` bytes long (the data itself is written separately).
///
/// `ahs` must be a multiple of 4 bytes and at most 1020 bytes (RFC 7143
/// §11.2.1.4: TotalAHSLength is one byte of 4-byte words). Should a caller
/// break that, the AHS is zero-padded or cut to fit so the stream stays
/// framed; the header itself is then not what was meant.
pub fn encode_header(bhs: &Bhs, ahs: &[u8], data_len: u32, cfg: &FrameConfig, out: &mut BytesMut) {
    let ahs_words = u8::try_from(ahs.len().div_ceil(4)).unwrap_or(u8::MAX);
    let ahs_len = usize::from(ahs_words) * 4;
    let ahs = ahs.get(..ahs_len).unwrap_or(ahs);

    let start = out.len();
    out.reserve(BHS_LEN + ahs_len + DIGEST_LEN);
    out.extend_from_slice(&bhs.encode(ahs_words, data_len));
    out.extend_from_slice(ahs);
    out.resize(start + BHS_LEN + ahs_len, 0);
    if cfg.header_digest {
        let crc = crc32c(out.get(start..).unwrap_or_default());
        out.extend_from_slice(&to_wire(crc));
    }
}

/// The bytes that follow a data segment on the wire: zero padding to a
/// multiple of 4, then the data digest (over data and padding) when on.
/// Returns the buffer and how many of its bytes to send.
pub fn data_trailer(data: &[u8], cfg: &FrameConfig) -> ([u8; 7], usize) {
    let mut trailer = [0u8; 7];
    let pad = pad_len(data.len());
    // RFC 7143 §12.1: no data digest when there is no data.
    if !cfg.data_digest || data.is_empty() {
        return (trailer, pad);
    }
    let zeros = [0u8; 3];
    let crc = crc32c_append(crc32c(data), zeros.get(..pad).unwrap_or_default());
    if let Some(dst) = trailer.get_mut(pad..pad + DIGEST_LEN) {
        dst.copy_from_slice(&to_wire(crc));
    }
    (trailer, pad + DIGEST_LEN)
}

/// Appends a whole PDU (header, data, padding, digests) to `out`.
///
/// The data segment must fit the peer's MaxRecvDataSegmentLength, which is
/// never above 2^24-1 (RFC 7143 §13.12); a longer one is cut to 2^24-1 so
/// the header and the bytes sent agree.
pub fn encode_pdu(pdu: &Pdu, cfg: &FrameConfig, out: &mut BytesMut) {
    let max = MAX_DATA_SEGMENT_LENGTH as usize;
    let data = pdu.data.get(..max).unwrap_or(&pdu.data);
    let (trailer, trailer_len) = data_trailer(data, cfg);
    out.reserve(BHS_LEN + pdu.ahs.len() + 2 * DIGEST_LEN + data.len() + trailer.len());
    // `data.len()` fits 24 bits after the cut above.
    encode_header(&pdu.bhs, &pdu.ahs, data.len() as u32, cfg, out);
    out.extend_from_slice(data);
    out.extend_from_slice(trailer.get(..trailer_len).unwrap_or_default());
}

/// The encoded form of a PDU as one buffer, for tests and tools.
#[cfg(test)]
pub(crate) fn encode_to_bytes(pdu: &Pdu, cfg: &FrameConfig) -> bytes::Bytes {
    let mut out = BytesMut::new();
    encode_pdu(pdu, cfg, &mut out);
    out.freeze()
}
