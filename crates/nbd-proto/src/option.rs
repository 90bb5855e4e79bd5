//! Option haggling codes (proto.md "Option types", "Option reply types", `NBD_REP_INFO` information
//! types) and the option message encoders a client sends (used by tests, fuzzing and tools).

use bytes::{BufMut, BytesMut};

use crate::magic::{IHAVEOPT, OPTION_REPLY_MAGIC};
use crate::wire::Reader;

/// An option code as sent by the client; unknown values are kept so they can be answered
/// `NBD_REP_ERR_UNSUP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OptionCode(pub u32);

impl OptionCode {
    pub const EXPORT_NAME: Self = Self(1);
    pub const ABORT: Self = Self(2);
    pub const LIST: Self = Self(3);
    pub const PEEK_EXPORT: Self = Self(4);
    pub const STARTTLS: Self = Self(5);
    pub const INFO: Self = Self(6);
    pub const GO: Self = Self(7);
    pub const STRUCTURED_REPLY: Self = Self(8);
    pub const LIST_META_CONTEXT: Self = Self(9);
    pub const SET_META_CONTEXT: Self = Self(10);
    pub const EXTENDED_HEADERS: Self = Self(11);
}

/// The reply type of a fixed newstyle option reply; errors have bit 31 set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OptionReplyType(pub u32);

const ERR: u32 = 1 << 31;

impl OptionReplyType {
    pub const ACK: Self = Self(1);
    pub const SERVER: Self = Self(2);
    pub const INFO: Self = Self(3);
    pub const META_CONTEXT: Self = Self(4);
    pub const ERR_UNSUP: Self = Self(ERR + 1);
    pub const ERR_POLICY: Self = Self(ERR + 2);
    pub const ERR_INVALID: Self = Self(ERR + 3);
    pub const ERR_PLATFORM: Self = Self(ERR + 4);
    pub const ERR_TLS_REQD: Self = Self(ERR + 5);
    pub const ERR_UNKNOWN: Self = Self(ERR + 6);
    pub const ERR_SHUTDOWN: Self = Self(ERR + 7);
    pub const ERR_BLOCK_SIZE_REQD: Self = Self(ERR + 8);
    pub const ERR_TOO_BIG: Self = Self(ERR + 9);

    pub const fn is_error(self) -> bool {
        self.0 & ERR != 0
    }
}

/// Information types of `NBD_REP_INFO` (proto.md, under `NBD_REP_INFO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InfoType(pub u16);

impl InfoType {
    /// Size and transmission flags; mandatory before a successful `NBD_REP_ACK`.
    pub const EXPORT: Self = Self(0);
    pub const NAME: Self = Self(1);
    pub const DESCRIPTION: Self = Self(2);
    pub const BLOCK_SIZE: Self = Self(3);
}

/// Length of an option request header: magic, option, data length.
pub const OPTION_HEADER_LEN: usize = 16;
/// Length of an option reply header: magic, option, reply type, data length.
pub const OPTION_REPLY_HEADER_LEN: usize = 20;

/// Appends an option request (client to server). Data longer than `u32::MAX` cannot be framed and is
/// refused.
pub fn encode_option(out: &mut BytesMut, option: OptionCode, data: &[u8]) -> Result<(), std::num::TryFromIntError> {
    let len = u32::try_from(data.len())?;
    out.reserve(OPTION_HEADER_LEN + data.len());
    out.put_u64(IHAVEOPT);
    out.put_u32(option.0);
    out.put_u32(len);
    out.put_slice(data);
    Ok(())
}

/// The data of an `NBD_OPT_INFO` / `NBD_OPT_GO` request: name length, name, count, info types.
pub fn encode_info_request(name: &[u8], requests: &[InfoType]) -> Result<Vec<u8>, std::num::TryFromIntError> {
    let name_len = u32::try_from(name.len())?;
    let count = u16::try_from(requests.len())?;
    let mut out = Vec::with_capacity(6 + name.len() + 2 * requests.len());
    out.extend_from_slice(&name_len.to_be_bytes());
    out.extend_from_slice(name);
    out.extend_from_slice(&count.to_be_bytes());
    for r in requests {
        out.extend_from_slice(&r.0.to_be_bytes());
    }
    Ok(out)
}

/// A decoded option reply header (server to client), for clients and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionReplyHeader {
    pub option: OptionCode,
    pub reply_type: OptionReplyType,
    pub length: u32,
}

impl OptionReplyHeader {
    /// `None` when fewer than [`OPTION_REPLY_HEADER_LEN`] bytes are given or the magic is wrong.
    pub fn decode(buf: &[u8]) -> Option<Self> {
        let mut r = Reader::new(buf);
        if r.u64()? != OPTION_REPLY_MAGIC {
            return None;
        }
        Some(Self { option: OptionCode(r.u32()?), reply_type: OptionReplyType(r.u32()?), length: r.u32()? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_specs() {
        assert_eq!(OptionCode::GO.0, 7);
        assert_eq!(OptionCode::STRUCTURED_REPLY.0, 8);
        assert_eq!(OptionReplyType::ERR_UNSUP.0, 0x8000_0001);
        assert_eq!(OptionReplyType::ERR_UNKNOWN.0, 0x8000_0006);
        assert!(OptionReplyType::ERR_INVALID.is_error());
        assert!(!OptionReplyType::INFO.is_error());
        assert_eq!(InfoType::BLOCK_SIZE.0, 3);
    }

    #[test]
    fn option_and_info_request_layout() {
        let mut out = BytesMut::new();
        let data = encode_info_request(b"ab", &[InfoType::NAME, InfoType::BLOCK_SIZE]).unwrap();
        assert_eq!(data, [0, 0, 0, 2, b'a', b'b', 0, 2, 0, 1, 0, 3]);
        encode_option(&mut out, OptionCode::GO, &data).unwrap();
        assert_eq!(&out[..8], b"IHAVEOPT");
        assert_eq!(&out[8..16], &[0, 0, 0, 7, 0, 0, 0, 12]);
        assert_eq!(&out[16..], &data[..]);
    }

    #[test]
    fn reply_header_decode_checks_magic_and_length() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
        buf.extend_from_slice(&[0, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0, 0]);
        let h = OptionReplyHeader::decode(&buf).unwrap();
        assert_eq!(h, OptionReplyHeader { option: OptionCode::GO, reply_type: OptionReplyType::ACK, length: 0 });
        assert_eq!(OptionReplyHeader::decode(&buf[..19]), None);
        buf[0] ^= 1;
        assert_eq!(OptionReplyHeader::decode(&buf), None);
    }
}
