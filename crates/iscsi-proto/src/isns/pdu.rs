//! The iSNSP header and PDU framing (RFC 4171 §5.1), and the reassembly of
//! a message that spans several PDUs (§5.2, First/Last PDU flags).

use std::fmt;

use super::{Error, HEADER_LEN, MAX_MESSAGE_LEN, MAX_MESSAGE_PDUS, MAX_PDU_PAYLOAD};

/// iSNSP version 1 (RFC 4171 §5.1).
pub const VERSION: u16 = 1;

/// The Function ID of a message (RFC 4171 §5.1.2); a response has the
/// request's ID with the top bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FunctionId(pub u16);

impl FunctionId {
    pub const DEV_ATTR_REG: Self = Self(0x0001);
    pub const DEV_ATTR_QRY: Self = Self(0x0002);
    pub const DEV_GET_NEXT: Self = Self(0x0003);
    pub const DEV_DEREG: Self = Self(0x0004);
    pub const SCN_REG: Self = Self(0x0005);
    pub const SCN_DEREG: Self = Self(0x0006);
    pub const SCN_EVENT: Self = Self(0x0007);
    pub const SCN: Self = Self(0x0008);
    pub const DD_REG: Self = Self(0x0009);
    pub const DD_DEREG: Self = Self(0x000A);
    pub const DDS_REG: Self = Self(0x000B);
    pub const DDS_DEREG: Self = Self(0x000C);
    pub const ESI: Self = Self(0x000D);
    pub const HEARTBEAT: Self = Self(0x000E);

    const RESPONSE_BIT: u16 = 0x8000;

    /// RFC 4171 §5.1.2: responses are 0x8001-0x800E.
    pub fn is_response(self) -> bool {
        self.0 & Self::RESPONSE_BIT != 0
    }

    /// The response function to this request.
    pub fn response(self) -> Self {
        Self(self.0 | Self::RESPONSE_BIT)
    }

    /// The request this function is (or answers).
    pub fn request(self) -> Self {
        Self(self.0 & !Self::RESPONSE_BIT)
    }

    /// The RFC 4171 short name (`DevAttrReg`, `SCNRsp`, ...), if known.
    pub fn name(self) -> Option<&'static str> {
        let (req, rsp) = match self.request().0 {
            0x0001 => ("DevAttrReg", "DevAttrRegRsp"),
            0x0002 => ("DevAttrQry", "DevAttrQryRsp"),
            0x0003 => ("DevGetNext", "DevGetNextRsp"),
            0x0004 => ("DevDereg", "DevDeregRsp"),
            0x0005 => ("SCNReg", "SCNRegRsp"),
            0x0006 => ("SCNDereg", "SCNDeregRsp"),
            0x0007 => ("SCNEvent", "SCNEventRsp"),
            0x0008 => ("SCN", "SCNRsp"),
            0x0009 => ("DDReg", "DDRegRsp"),
            0x000A => ("DDDereg", "DDDeregRsp"),
            0x000B => ("DDSReg", "DDSRegRsp"),
            0x000C => ("DDSDereg", "DDSDeregRsp"),
            0x000D => ("ESI", "ESIRsp"),
            0x000E => ("Heartbeat", "Heartbeat"),
            _ => return None,
        };
        Some(if self.is_response() && self.request() != Self::HEARTBEAT { rsp } else { req })
    }
}

impl fmt::Display for FunctionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "function {:#06x}", self.0),
        }
    }
}

/// The Flags field (RFC 4171 §5.1.4); bit 16 of the header word is the
/// most significant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Flags(pub u16);

impl Flags {
    /// Sender is the iSNS client.
    pub const CLIENT: Self = Self(0x8000);
    /// Sender is the iSNS server.
    pub const SERVER: Self = Self(0x4000);
    /// An authentication block follows the payload.
    pub const AUTH: Self = Self(0x2000);
    /// DevAttrReg: replace the object's registration instead of adding to it.
    pub const REPLACE: Self = Self(0x1000);
    pub const LAST_PDU: Self = Self(0x0800);
    pub const FIRST_PDU: Self = Self(0x0400);

    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    pub fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }
}

/// The fixed 12-byte iSNSP header (RFC 4171 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u16,
    pub function: FunctionId,
    /// Bytes of payload after the header.
    pub length: u16,
    pub flags: Flags,
    /// Pairs a response with its request (§5.1.5).
    pub transaction_id: u16,
    /// 0 for the first PDU of a message, +1 for each next one (§5.1.6).
    pub sequence_id: u16,
}

impl Header {
    /// Reads a header from the first 12 bytes of `buf`; `None` when shorter.
    /// The version is checked here, before anything trusts the length.
    pub fn decode(buf: &[u8]) -> Result<Option<Self>, Error> {
        let Some(h) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let [v0, v1, f0, f1, l0, l1, g0, g1, x0, x1, s0, s1] = *h;
        let header = Self {
            version: u16::from_be_bytes([v0, v1]),
            function: FunctionId(u16::from_be_bytes([f0, f1])),
            length: u16::from_be_bytes([l0, l1]),
            flags: Flags(u16::from_be_bytes([g0, g1])),
            transaction_id: u16::from_be_bytes([x0, x1]),
            sequence_id: u16::from_be_bytes([s0, s1]),
        };
        if header.version != VERSION {
            return Err(Error::Version(header.version));
        }
        Ok(Some(header))
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        for w in [self.version, self.function.0, self.length, self.flags.0, self.transaction_id, self.sequence_id] {
            out.extend_from_slice(&w.to_be_bytes());
        }
    }
}

/// One PDU: header and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdu {
    pub header: Header,
    pub payload: Vec<u8>,
}

impl Pdu {
    /// Frames one PDU from the front of `buf`: `Ok(None)` while it is
    /// incomplete, else the PDU and the bytes it took. The length field is 16
    /// bits, so a PDU never asks for more than 64 KiB.
    pub fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, Error> {
        let Some(header) = Header::decode(buf)? else {
            return Ok(None);
        };
        let total = HEADER_LEN + usize::from(header.length);
        let Some(payload) = buf.get(HEADER_LEN..total) else {
            return Ok(None);
        };
        Ok(Some((Self { header, payload: payload.to_vec() }, total)))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        let mut header = self.header;
        header.length = u16::try_from(self.payload.len()).unwrap_or(u16::MAX);
        header.encode(&mut out);
        out.extend_from_slice(self.payload.get(..usize::from(header.length)).unwrap_or(&self.payload));
        out
    }
}

/// Splits a message payload into PDUs of at most `max_payload` bytes (a
/// multiple of 4, at most 65532), numbered from 0, First on the first and
/// Last on the last (RFC 4171 §5.2). An empty payload is one empty PDU.
pub fn segment(
    function: FunctionId,
    flags: Flags,
    transaction_id: u16,
    payload: &[u8],
    max_payload: usize,
) -> Vec<Pdu> {
    let max = (max_payload.clamp(4, MAX_PDU_PAYLOAD)) & !3;
    let chunks: Vec<&[u8]> = if payload.is_empty() { vec![payload] } else { payload.chunks(max).collect() };
    let n = chunks.len();
    let base = flags.without(Flags::FIRST_PDU).without(Flags::LAST_PDU);
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut f = base;
            if i == 0 {
                f = f.with(Flags::FIRST_PDU);
            }
            if i + 1 == n {
                f = f.with(Flags::LAST_PDU);
            }
            Pdu {
                header: Header {
                    version: VERSION,
                    function,
                    length: u16::try_from(chunk.len()).unwrap_or(u16::MAX),
                    flags: f,
                    transaction_id,
                    sequence_id: u16::try_from(i).unwrap_or(u16::MAX),
                },
                payload: chunk.to_vec(),
            }
        })
        .collect()
}

/// A message whose PDUs are all in: the first PDU's header (its length is
/// that of the first PDU only) and the joined payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assembled {
    pub header: Header,
    pub payload: Vec<u8>,
}

/// Joins the PDUs of one message (RFC 4171 §5.2), refusing interleaved
/// transactions, gaps in the Sequence ID and more than
/// [`MAX_MESSAGE_PDUS`] PDUs or [`MAX_MESSAGE_LEN`] bytes, so a server that
/// never sends Last PDU costs bounded memory.
#[derive(Debug, Default)]
pub struct Reassembler {
    current: Option<(Header, Vec<u8>, usize)>,
}

impl Reassembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// True while a message has started but not ended.
    pub fn in_progress(&self) -> bool {
        self.current.is_some()
    }

    /// Takes one PDU; returns the message when this PDU was its last. On
    /// error the partial message is dropped.
    pub fn push(&mut self, pdu: Pdu) -> Result<Option<Assembled>, Error> {
        let result = self.push_inner(pdu);
        if result.is_err() {
            self.current = None;
        }
        result
    }

    fn push_inner(&mut self, pdu: Pdu) -> Result<Option<Assembled>, Error> {
        let h = pdu.header;
        match self.current.take() {
            None => {
                if !h.flags.contains(Flags::FIRST_PDU) {
                    return Err(Error::NoFirstPdu);
                }
                if h.sequence_id != 0 {
                    return Err(Error::Sequence { want: 0, got: h.sequence_id });
                }
                if h.flags.contains(Flags::LAST_PDU) {
                    return Ok(Some(Assembled { header: h, payload: pdu.payload }));
                }
                self.current = Some((h, pdu.payload, 1));
                Ok(None)
            }
            Some((first, mut payload, count)) => {
                if h.function != first.function || h.transaction_id != first.transaction_id {
                    return Err(Error::Interleaved {
                        want: first.function,
                        want_xid: first.transaction_id,
                        got: h.function,
                        got_xid: h.transaction_id,
                    });
                }
                let want = u16::try_from(count).unwrap_or(u16::MAX);
                if h.flags.contains(Flags::FIRST_PDU) || h.sequence_id != want {
                    return Err(Error::Sequence { want, got: h.sequence_id });
                }
                if count + 1 > MAX_MESSAGE_PDUS {
                    return Err(Error::MessageTooLarge { what: "PDUs", limit: MAX_MESSAGE_PDUS });
                }
                if payload.len() + pdu.payload.len() > MAX_MESSAGE_LEN {
                    return Err(Error::MessageTooLarge { what: "bytes", limit: MAX_MESSAGE_LEN });
                }
                payload.extend_from_slice(&pdu.payload);
                if h.flags.contains(Flags::LAST_PDU) {
                    return Ok(Some(Assembled { header: first, payload }));
                }
                self.current = Some((first, payload, count + 1));
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn header(seq: u16, flags: Flags) -> Header {
        Header {
            version: VERSION,
            function: FunctionId::DEV_ATTR_QRY.response(),
            length: 0,
            flags,
            transaction_id: 7,
            sequence_id: seq,
        }
    }

    #[test]
    fn header_round_trip_and_version_check() {
        let h = Header { length: 16, ..header(3, Flags::SERVER.with(Flags::LAST_PDU)) };
        let mut out = Vec::new();
        h.encode(&mut out);
        assert_eq!(out, [0, 1, 0x80, 2, 0, 16, 0x48, 0, 0, 7, 0, 3]);
        assert_eq!(Header::decode(&out).unwrap(), Some(h));
        assert_eq!(Header::decode(&out[..11]).unwrap(), None);
        out[1] = 2;
        assert_eq!(Header::decode(&out), Err(Error::Version(2)));
    }

    #[test]
    fn pdu_waits_for_its_whole_payload() {
        let pdu = Pdu { header: header(0, Flags::FIRST_PDU.with(Flags::LAST_PDU)), payload: vec![1, 2, 3, 4] };
        let bytes = pdu.encode();
        assert_eq!(Pdu::decode(&bytes[..15]).unwrap(), None);
        let (back, used) = Pdu::decode(&bytes).unwrap().unwrap();
        assert_eq!(used, 16);
        assert_eq!(back.payload, [1, 2, 3, 4]);
        assert_eq!(back.header.length, 4);
    }

    #[test]
    fn function_names_follow_rfc_4171() {
        assert_eq!(FunctionId::DEV_ATTR_REG.to_string(), "DevAttrReg");
        assert_eq!(FunctionId::SCN.response().to_string(), "SCNRsp");
        assert_eq!(FunctionId::ESI.response().to_string(), "ESIRsp");
        assert_eq!(FunctionId(0x0042).to_string(), "function 0x0042");
    }

    #[test]
    fn segments_reassemble_to_the_payload() {
        let payload: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let pdus = segment(FunctionId::DEV_ATTR_QRY.response(), Flags::SERVER, 9, &payload, 300);
        assert_eq!(pdus.len(), 4);
        assert!(pdus[0].header.flags.contains(Flags::FIRST_PDU));
        assert!(pdus[3].header.flags.contains(Flags::LAST_PDU));
        let mut r = Reassembler::new();
        let mut out = None;
        for p in pdus {
            assert!(out.is_none());
            out = r.push(p).unwrap();
        }
        let m = out.unwrap();
        assert_eq!(m.payload, payload);
        assert_eq!(m.header.transaction_id, 9);
        assert!(!r.in_progress());
    }

    #[test]
    fn reassembly_refuses_gaps_interleaving_and_orphans() {
        let mut r = Reassembler::new();
        assert_eq!(r.push(Pdu { header: header(1, Flags::LAST_PDU), payload: vec![] }), Err(Error::NoFirstPdu));
        assert!(r.push(Pdu { header: header(0, Flags::FIRST_PDU), payload: vec![] }).unwrap().is_none());
        assert_eq!(
            r.push(Pdu { header: header(2, Flags::LAST_PDU), payload: vec![] }),
            Err(Error::Sequence { want: 1, got: 2 })
        );
        assert!(!r.in_progress());
        r.push(Pdu { header: header(0, Flags::FIRST_PDU), payload: vec![] }).unwrap();
        let other = Header { transaction_id: 8, ..header(1, Flags::LAST_PDU) };
        assert!(matches!(r.push(Pdu { header: other, payload: vec![] }), Err(Error::Interleaved { .. })));
    }

    #[test]
    fn endless_multi_pdu_message_is_cut_off() {
        let mut r = Reassembler::new();
        let mut result = Ok(None);
        for seq in 0..1000u16 {
            let flags = if seq == 0 { Flags::FIRST_PDU } else { Flags(0) };
            result = r.push(Pdu { header: header(seq, flags), payload: vec![0; 60_000] });
            if result.is_err() {
                break;
            }
        }
        assert!(matches!(result, Err(Error::MessageTooLarge { .. })), "{result:?}");
        assert!(!r.in_progress());
    }
}
