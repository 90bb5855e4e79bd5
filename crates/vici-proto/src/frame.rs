//! The transport layer (VICI README, "Transport protocol"): a 32-bit
//! big-endian length, then that many bytes; the length counts the data only.

use bytes::{Buf, BytesMut};

use crate::{Error, Packet, Result};

/// The README: "The maximum segment length is currently limited to 512KB".
pub const MAX_FRAME_LEN: usize = 512 * 1024;

/// Puts the length header in front of `body`.
pub fn encode(body: &[u8], out: &mut Vec<u8>) -> Result<()> {
    if body.len() > MAX_FRAME_LEN {
        return Err(Error::FrameTooLong(body.len()));
    }
    out.reserve(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    Ok(())
}

/// Cuts whole byte sequences out of a stream and decodes them as packets. A
/// partial sequence stays in the buffer untouched until the rest arrives.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    _private: (),
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next packet when a whole byte sequence is in `buf`. A length
    /// over the limit is an error before anything is buffered for it.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>> {
        let Some(body) = self.decode_raw(buf)? else { return Ok(None) };
        // The body may hold a secret: wiped when dropped.
        let body = zeroize::Zeroizing::new(body);
        Packet::decode(&body).map(Some)
    }

    /// The next whole byte sequence, without its length header.
    pub fn decode_raw(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<u8>>> {
        let Some(head) = buf.get(..4) else { return Ok(None) };
        let mut len = [0u8; 4];
        len.copy_from_slice(head);
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME_LEN {
            return Err(Error::FrameTooLong(len));
        }
        if buf.len() < 4 + len {
            return Ok(None);
        }
        buf.advance(4);
        let body = buf.split_to(len);
        let out = body.to_vec();
        // The body may hold a secret: wipe the stream buffer's copy.
        let mut body = body;
        zeroize::Zeroize::zeroize(&mut body[..]);
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;

    #[test]
    fn partial_frames_wait_for_the_rest() {
        let frame = Packet::request("version", Message::new()).encode_frame().unwrap();
        let mut dec = FrameDecoder::new();
        let mut buf = BytesMut::new();
        for (i, b) in frame.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let got = dec.decode(&mut buf).unwrap();
            assert_eq!(got.is_some(), i + 1 == frame.len(), "after {} bytes", i + 1);
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn two_frames_in_one_read() {
        let mut bytes = Packet::EventConfirm.encode_frame().unwrap().to_vec();
        bytes.extend_from_slice(&Packet::response(Message::new().with_value("success", "yes")).encode_frame().unwrap());
        let mut buf = BytesMut::from(&bytes[..]);
        let mut dec = FrameDecoder::new();
        assert_eq!(dec.decode(&mut buf).unwrap(), Some(Packet::EventConfirm));
        let r = dec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(r.message().and_then(|m| m.str("success")), Some("yes"));
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn oversized_length_is_refused_before_buffering() {
        let mut buf = BytesMut::from(&((MAX_FRAME_LEN as u32) + 1).to_be_bytes()[..]);
        assert_eq!(FrameDecoder::new().decode(&mut buf), Err(Error::FrameTooLong(MAX_FRAME_LEN + 1)));
        let mut out = Vec::new();
        assert_eq!(encode(&vec![0; MAX_FRAME_LEN + 1], &mut out), Err(Error::FrameTooLong(MAX_FRAME_LEN + 1)));
    }
}
