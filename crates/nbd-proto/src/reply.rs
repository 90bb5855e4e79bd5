//! Transmission replies (proto.md "Simple reply message", "Structured reply chunk message",
//! "Structured reply types"). Encoders return headers as fixed arrays so a read's data can follow as
//! its own buffer, without copying it into the header's.

use bytes::{BufMut, Bytes, BytesMut};

use crate::errno::Errno;
use crate::export::MAX_STRING_LEN;
use crate::flags::ReplyFlags;
use crate::magic::{SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC};
use crate::wire::Reader;

pub const SIMPLE_REPLY_HEADER_LEN: usize = 16;
pub const CHUNK_HEADER_LEN: usize = 20;
/// A chunk header plus the 64-bit offset that starts an `NBD_REPLY_TYPE_OFFSET_DATA` payload.
pub const OFFSET_DATA_HEADER_LEN: usize = CHUNK_HEADER_LEN + 8;

/// Structured reply chunk type; error types have bit 15 set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplyType(pub u16);

impl ReplyType {
    pub const NONE: Self = Self(0);
    pub const OFFSET_DATA: Self = Self(1);
    pub const OFFSET_HOLE: Self = Self(2);
    pub const BLOCK_STATUS: Self = Self(5);
    pub const ERROR: Self = Self((1 << 15) + 1);
    pub const ERROR_OFFSET: Self = Self((1 << 15) + 2);

    pub const fn is_error(self) -> bool {
        self.0 & (1 << 15) != 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("an OFFSET_DATA chunk carries 1 to 2^32 - 9 bytes, not {0}")]
    DataLength(usize),
    #[error("reply header needs {need} bytes, got {got}")]
    Truncated { need: usize, got: usize },
    #[error("reply magic {0:#010x} is not the expected one")]
    BadMagic(u32),
}

/// A simple reply header; for a successful `NBD_CMD_READ` the data follows it.
pub fn simple_reply(cookie: u64, error: Option<Errno>) -> [u8; SIMPLE_REPLY_HEADER_LEN] {
    let mut out = [0u8; SIMPLE_REPLY_HEADER_LEN];
    let mut b = &mut out[..];
    b.put_u32(SIMPLE_REPLY_MAGIC);
    b.put_u32(error.map_or(0, Errno::code));
    b.put_u64(cookie);
    out
}

/// A structured reply chunk header announcing `length` bytes of payload.
pub fn chunk_header(flags: ReplyFlags, ty: ReplyType, cookie: u64, length: u32) -> [u8; CHUNK_HEADER_LEN] {
    let mut out = [0u8; CHUNK_HEADER_LEN];
    let mut b = &mut out[..];
    b.put_u32(STRUCTURED_REPLY_MAGIC);
    b.put_u16(flags.bits());
    b.put_u16(ty.0);
    b.put_u64(cookie);
    b.put_u32(length);
    out
}

fn done_flag(done: bool) -> ReplyFlags {
    ReplyFlags::EMPTY.with(ReplyFlags::DONE, done)
}

/// Header and offset of an `NBD_REPLY_TYPE_OFFSET_DATA` chunk whose `data_len` bytes of data follow.
/// The spec requires at least one byte, and the chunk length (data + 8) must fit 32 bits.
pub fn offset_data_header(
    cookie: u64,
    offset: u64,
    data_len: usize,
    done: bool,
) -> Result<[u8; OFFSET_DATA_HEADER_LEN], ReplyError> {
    let length = u32::try_from(data_len)
        .ok()
        .and_then(|n| n.checked_add(8))
        .filter(|_| data_len > 0)
        .ok_or(ReplyError::DataLength(data_len))?;
    let mut out = [0u8; OFFSET_DATA_HEADER_LEN];
    let mut b = &mut out[..];
    b.put_slice(&chunk_header(done_flag(done), ReplyType::OFFSET_DATA, cookie, length));
    b.put_u64(offset);
    Ok(out)
}

/// The `NBD_REPLY_TYPE_NONE` chunk: success with nothing more to say; always final.
pub fn none_chunk(cookie: u64) -> [u8; CHUNK_HEADER_LEN] {
    chunk_header(ReplyFlags::DONE, ReplyType::NONE, cookie, 0)
}

/// An `NBD_REPLY_TYPE_ERROR` chunk with a human-readable message, cut to the protocol's 4096-byte
/// string limit on a character boundary.
pub fn error_chunk(cookie: u64, errno: Errno, message: &str, done: bool) -> Bytes {
    let mut end = message.len().min(MAX_STRING_LEN);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let msg = message.as_bytes().get(..end).unwrap_or_default();
    // `end` is at most 4096, so both conversions hold.
    let msg_len = u16::try_from(msg.len()).unwrap_or(0);
    let mut out = BytesMut::with_capacity(CHUNK_HEADER_LEN + 6 + msg.len());
    out.put_slice(&chunk_header(done_flag(done), ReplyType::ERROR, cookie, 6 + u32::from(msg_len)));
    out.put_u32(errno.code());
    out.put_u16(msg_len);
    out.put_slice(msg.get(..usize::from(msg_len)).unwrap_or_default());
    out.freeze()
}

/// A decoded simple reply header, for clients and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimpleReply {
    pub error: u32,
    pub cookie: u64,
}

/// A decoded structured chunk header, for clients and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    pub flags: ReplyFlags,
    pub ty: ReplyType,
    pub cookie: u64,
    pub length: u32,
}

/// Either kind of reply header, told apart by its magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyHeader {
    Simple(SimpleReply),
    Chunk(ChunkHeader),
}

impl ReplyHeader {
    /// Decodes a reply header from the start of `buf`; returns it and its length.
    pub fn decode(buf: &[u8]) -> Result<(ReplyHeader, usize), ReplyError> {
        let mut r = Reader::new(buf);
        let magic = r.u32().ok_or(ReplyError::Truncated { need: 4, got: buf.len() })?;
        let short = |need| ReplyError::Truncated { need, got: buf.len() };
        match magic {
            SIMPLE_REPLY_MAGIC => {
                let (Some(error), Some(cookie)) = (r.u32(), r.u64()) else {
                    return Err(short(SIMPLE_REPLY_HEADER_LEN));
                };
                Ok((ReplyHeader::Simple(SimpleReply { error, cookie }), SIMPLE_REPLY_HEADER_LEN))
            }
            STRUCTURED_REPLY_MAGIC => {
                let (Some(flags), Some(ty), Some(cookie), Some(length)) = (r.u16(), r.u16(), r.u64(), r.u32()) else {
                    return Err(short(CHUNK_HEADER_LEN));
                };
                let h = ChunkHeader { flags: ReplyFlags(flags), ty: ReplyType(ty), cookie, length };
                Ok((ReplyHeader::Chunk(h), CHUNK_HEADER_LEN))
            }
            other => Err(ReplyError::BadMagic(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_reply_layout() {
        let ok = simple_reply(0x0102_0304_0506_0708, None);
        assert_eq!(ok, [0x67, 0x44, 0x66, 0x98, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        let err = simple_reply(9, Some(Errno::Enospc));
        assert_eq!(
            ReplyHeader::decode(&err),
            Ok((ReplyHeader::Simple(SimpleReply { error: 28, cookie: 9 }), SIMPLE_REPLY_HEADER_LEN))
        );
    }

    #[test]
    fn offset_data_layout_and_limits() {
        let h = offset_data_header(5, 4096, 512, true).unwrap();
        let (ReplyHeader::Chunk(c), 20) = ReplyHeader::decode(&h).unwrap() else { panic!() };
        assert_eq!(c, ChunkHeader { flags: ReplyFlags::DONE, ty: ReplyType::OFFSET_DATA, cookie: 5, length: 520 });
        assert_eq!(&h[20..], &4096u64.to_be_bytes());
        assert_eq!(offset_data_header(5, 0, 0, true), Err(ReplyError::DataLength(0)));
        let too_big = (u32::MAX - 7) as usize;
        assert_eq!(offset_data_header(5, 0, too_big, true), Err(ReplyError::DataLength(too_big)));
        assert!(offset_data_header(5, 0, too_big - 1, false).is_ok());
    }

    #[test]
    fn none_chunk_is_done_and_empty() {
        let (ReplyHeader::Chunk(c), _) = ReplyHeader::decode(&none_chunk(3)).unwrap() else { panic!() };
        assert_eq!(c, ChunkHeader { flags: ReplyFlags::DONE, ty: ReplyType::NONE, cookie: 3, length: 0 });
    }

    #[test]
    fn error_chunk_carries_errno_and_message() {
        let b = error_chunk(11, Errno::Eio, "disk on fire", true);
        let (ReplyHeader::Chunk(c), n) = ReplyHeader::decode(&b).unwrap() else { panic!() };
        assert_eq!(c.ty, ReplyType::ERROR);
        assert!(c.ty.is_error());
        assert_eq!(c.length as usize, b.len() - n);
        assert_eq!(&b[20..24], &5u32.to_be_bytes());
        assert_eq!(&b[24..26], &12u16.to_be_bytes());
        assert_eq!(&b[26..], b"disk on fire");
    }

    #[test]
    fn error_message_is_cut_on_a_char_boundary() {
        let long = "é".repeat(3000); // 6000 bytes, two per char
        let b = error_chunk(1, Errno::Eio, &long, true);
        let msg_len = u16::from_be_bytes([b[24], b[25]]) as usize;
        assert_eq!(msg_len, 4096);
        assert!(std::str::from_utf8(&b[26..]).is_ok());
        let odd = format!("a{}", "é".repeat(3000));
        let b = error_chunk(1, Errno::Eio, &odd, true);
        assert_eq!(u16::from_be_bytes([b[24], b[25]]), 4095);
    }

    #[test]
    fn bad_magic_and_truncation() {
        assert_eq!(ReplyHeader::decode(&[0; 16]), Err(ReplyError::BadMagic(0)));
        assert!(matches!(ReplyHeader::decode(&none_chunk(1)[..19]), Err(ReplyError::Truncated { need: 20, .. })));
    }
}
