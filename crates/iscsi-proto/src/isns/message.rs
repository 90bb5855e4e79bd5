//! iSNSP messages (RFC 4171 §5.6, §5.7): a request is the Source attribute,
//! the Message Key attributes, a Delimiter and the Operating attributes; a
//! response starts with a status code instead of the source. SCN and ESI,
//! sent by the server, carry neither source nor delimiter; neither does
//! SCNDereg (as open-isns sends it).

use super::attr::{self, Attribute, Tag};
use super::pdu::{self, Assembled, Flags, FunctionId};
use super::{Error, MAX_PDU_PAYLOAD, Status};

/// One decoded (or to be encoded) message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub function: FunctionId,
    /// On encode only [`Flags::REPLACE`] and [`Flags::CLIENT`]/[`Flags::SERVER`]
    /// matter; First/Last are set per PDU.
    pub flags: Flags,
    pub transaction_id: u16,
    /// Present in responses (§5.4).
    pub status: Option<Status>,
    /// Present in requests other than SCN and ESI (§5.6.1).
    pub source: Option<Attribute>,
    pub keys: Vec<Attribute>,
    pub operating: Vec<Attribute>,
}

fn has_source(f: FunctionId) -> bool {
    !f.is_response() && f != FunctionId::SCN && f != FunctionId::ESI
}

fn has_delimiter(f: FunctionId) -> bool {
    !matches!(f.request(), FunctionId::SCN | FunctionId::ESI | FunctionId::SCN_DEREG)
}

impl Message {
    /// A client request with its source attribute.
    pub fn request(function: FunctionId, transaction_id: u16, source: Attribute) -> Self {
        Self {
            function,
            flags: Flags::CLIENT,
            transaction_id,
            status: None,
            source: Some(source),
            keys: Vec::new(),
            operating: Vec::new(),
        }
    }

    /// A response to `request_function` with the request's transaction ID.
    pub fn response(request_function: FunctionId, transaction_id: u16, status: Status, flags: Flags) -> Self {
        Self {
            function: request_function.response(),
            flags,
            transaction_id,
            status: Some(status),
            source: None,
            keys: Vec::new(),
            operating: Vec::new(),
        }
    }

    /// The payload bytes (without PDU headers).
    pub fn encode_payload(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.function.is_response() {
            out.extend_from_slice(&self.status.unwrap_or(Status::SUCCESS).0.to_be_bytes());
        }
        if has_source(self.function)
            && let Some(s) = &self.source
        {
            s.encode(&mut out);
        }
        attr::encode_list(&self.keys, &mut out);
        if has_delimiter(self.function) {
            Attribute::nil(Tag::DELIMITER).encode(&mut out);
            attr::encode_list(&self.operating, &mut out);
        }
        out
    }

    /// The message as PDUs of at most 64 KiB - 4 payload bytes each.
    pub fn encode(&self) -> Vec<u8> {
        let payload = self.encode_payload();
        let mut out = Vec::with_capacity(payload.len() + super::HEADER_LEN);
        for p in pdu::segment(self.function, self.flags, self.transaction_id, &payload, MAX_PDU_PAYLOAD) {
            out.extend_from_slice(&p.encode());
        }
        out
    }

    /// Decodes a reassembled message. Attributes after the first Delimiter
    /// are operating attributes; without one, all are keys.
    pub fn decode(m: &Assembled) -> Result<Self, Error> {
        let h = m.header;
        if h.flags.contains(Flags::AUTH) {
            return Err(Error::AuthenticationBlock);
        }
        let mut payload = m.payload.as_slice();
        let mut status = None;
        if h.function.is_response() {
            let Some((code, rest)) = payload.split_first_chunk::<4>() else {
                return Err(Error::MissingStatus(payload.len()));
            };
            status = Some(Status(u32::from_be_bytes(*code)));
            payload = rest;
        }
        let mut attrs = attr::decode_list(payload)?.into_iter();
        let mut source = None;
        if has_source(h.function) {
            let s = attrs.next().filter(|a| a.tag != Tag::DELIMITER);
            source = Some(s.ok_or(Error::MissingSource(h.function.name().unwrap_or("unknown")))?);
        }
        let mut keys = Vec::new();
        let mut operating = Vec::new();
        let mut after_delimiter = false;
        for a in attrs {
            if !after_delimiter && a.tag == Tag::DELIMITER {
                after_delimiter = true;
            } else if after_delimiter {
                operating.push(a);
            } else {
                keys.push(a);
            }
        }
        Ok(Self {
            function: h.function,
            flags: h.flags.without(Flags::FIRST_PDU).without(Flags::LAST_PDU),
            transaction_id: h.transaction_id,
            status,
            source,
            keys,
            operating,
        })
    }

    /// Decodes bytes holding exactly one whole message (tests, fuzzing).
    pub fn decode_bytes(mut buf: &[u8]) -> Result<Option<Self>, Error> {
        let mut r = pdu::Reassembler::new();
        while let Some((p, used)) = pdu::Pdu::decode(buf)? {
            buf = buf.get(used..).unwrap_or_default();
            if let Some(m) = r.push(p)? {
                return Self::decode(&m).map(Some);
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn request_layout_is_source_keys_delimiter_operating() {
        let mut m = Message::request(FunctionId::DEV_ATTR_QRY, 5, Attribute::string(Tag::ISCSI_NAME, "iqn.i"));
        m.keys.push(Attribute::u32(Tag::ISCSI_NODE_TYPE, 1));
        m.operating.push(Attribute::nil(Tag::ISCSI_NAME));
        let bytes = m.encode();
        // header + source (8+8) + key (8+4) + delimiter (8) + nil (8)
        assert_eq!(bytes.len(), 12 + 16 + 12 + 8 + 8);
        assert_eq!(bytes[..12], [0, 1, 0, 2, 0, 44, 0x8c, 0, 0, 5, 0, 0]);
        assert_eq!(Message::decode_bytes(&bytes).unwrap().unwrap(), m);
    }

    #[test]
    fn response_starts_with_status() {
        let mut m = Message::response(FunctionId::DEV_ATTR_REG, 3, Status::INVALID_REGISTRATION, Flags::SERVER);
        m.operating.push(Attribute::string(Tag::ENTITY_IDENTIFIER, "e"));
        let bytes = m.encode();
        assert_eq!(bytes[12..16], [0, 0, 0, 3]);
        assert_eq!(Message::decode_bytes(&bytes).unwrap().unwrap(), m);
        // A response cut inside its status word.
        let mut short = bytes[..12].to_vec();
        short[5] = 2;
        short.extend_from_slice(&[0, 0]);
        assert_eq!(Message::decode_bytes(&short), Err(Error::MissingStatus(2)));
    }

    #[test]
    fn scn_has_no_source_and_no_delimiter() {
        let mut m = Message::request(FunctionId::SCN, 1, Attribute::nil(Tag::DELIMITER));
        m.source = None;
        m.flags = Flags::SERVER;
        m.keys = vec![
            Attribute::string(Tag::ISCSI_NAME, "iqn.me"),
            Attribute::u64(Tag::TIMESTAMP, 1_700_000_000),
            Attribute::u32(Tag::ISCSI_SCN_BITMAP, 0x08),
            Attribute::string(Tag::ISCSI_NAME, "iqn.t"),
        ];
        let bytes = m.encode();
        assert_eq!(bytes.len(), 12 + 16 + 16 + 12 + 16);
        assert_eq!(Message::decode_bytes(&bytes).unwrap().unwrap(), m);
    }

    #[test]
    fn authentication_blocks_are_refused() {
        let mut m = Message::response(FunctionId::DEV_ATTR_QRY, 3, Status::SUCCESS, Flags::SERVER.with(Flags::AUTH));
        m.keys.clear();
        assert_eq!(Message::decode_bytes(&m.encode()), Err(Error::AuthenticationBlock));
    }

    #[test]
    fn request_without_source_is_refused() {
        let mut m = Message::request(FunctionId::DEV_ATTR_QRY, 5, Attribute::nil(Tag::DELIMITER));
        m.source = None;
        assert_eq!(Message::decode_bytes(&m.encode()), Err(Error::MissingSource("DevAttrQry")));
    }

    fn attribute() -> impl Strategy<Value = Attribute> {
        (1u32..3000, proptest::collection::vec(any::<u8>(), 0..24)).prop_map(|(t, mut v)| {
            v.truncate(v.len() / 4 * 4);
            Attribute { tag: Tag(t), value: v }
        })
    }

    proptest! {
        #[test]
        fn requests_and_responses_round_trip(
            function in 1u16..15,
            response in any::<bool>(),
            xid in any::<u16>(),
            status in any::<u32>(),
            keys in proptest::collection::vec(attribute(), 0..6),
            operating in proptest::collection::vec(attribute(), 0..6),
            source in attribute(),
        ) {
            let f = FunctionId(function);
            let mut m = if response {
                Message::response(f, xid, Status(status), Flags::SERVER)
            } else {
                Message::request(f, xid, source)
            };
            if !has_source(m.function) {
                m.source = None;
            }
            m.keys = keys;
            if has_delimiter(m.function) {
                m.operating = operating;
            }
            prop_assert_eq!(Message::decode_bytes(&m.encode()).unwrap().unwrap(), m);
        }

        #[test]
        fn large_payloads_span_pdus(n in 0usize..40_000) {
            let mut m = Message::response(FunctionId::DEV_ATTR_QRY, 1, Status::SUCCESS, Flags::SERVER);
            m.operating = (0..n / 8 + 1).map(|i| Attribute::u32(Tag::PG_TAG, i as u32)).collect();
            let bytes = m.encode();
            prop_assert_eq!(Message::decode_bytes(&bytes).unwrap().unwrap(), m);
        }

        #[test]
        fn decoder_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Message::decode_bytes(&buf);
        }
    }
}
