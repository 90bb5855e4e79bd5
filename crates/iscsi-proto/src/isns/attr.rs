//! iSNS attributes: tag, length, value (RFC 4171 §5.3, §6). Values are
//! kept as the raw bytes of the wire; typed accessors check sizes, so an
//! unknown or vendor tag passes through untouched.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use super::{Error, MAX_ATTRIBUTES};

/// An attribute tag (RFC 4171 §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(pub u32);

impl Tag {
    /// Separates Message Key from Operating Attributes (§5.6.1).
    pub const DELIMITER: Self = Self(0);
    pub const ENTITY_IDENTIFIER: Self = Self(1);
    pub const ENTITY_PROTOCOL: Self = Self(2);
    pub const MGMT_IP_ADDRESS: Self = Self(3);
    pub const TIMESTAMP: Self = Self(4);
    pub const PROTOCOL_VERSION_RANGE: Self = Self(5);
    pub const REGISTRATION_PERIOD: Self = Self(6);
    pub const ENTITY_INDEX: Self = Self(7);
    pub const PORTAL_IP_ADDRESS: Self = Self(16);
    pub const PORTAL_PORT: Self = Self(17);
    pub const PORTAL_SYMBOLIC_NAME: Self = Self(18);
    pub const ESI_INTERVAL: Self = Self(19);
    pub const ESI_PORT: Self = Self(20);
    pub const PORTAL_INDEX: Self = Self(22);
    pub const SCN_PORT: Self = Self(23);
    pub const ISCSI_NAME: Self = Self(32);
    pub const ISCSI_NODE_TYPE: Self = Self(33);
    pub const ISCSI_ALIAS: Self = Self(34);
    pub const ISCSI_SCN_BITMAP: Self = Self(35);
    pub const ISCSI_NODE_INDEX: Self = Self(36);
    pub const PG_ISCSI_NAME: Self = Self(48);
    pub const PG_PORTAL_IP_ADDR: Self = Self(49);
    pub const PG_PORTAL_PORT: Self = Self(50);
    pub const PG_TAG: Self = Self(51);
    pub const PG_INDEX: Self = Self(52);
    pub const DD_SET_ID: Self = Self(2049);
    pub const DD_ID: Self = Self(2065);
    pub const DD_SYMBOLIC_NAME: Self = Self(2066);
    pub const DD_MEMBER_ISCSI_NAME: Self = Self(2068);

    /// The RFC 4171 §6.1 name, if this module knows the tag.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "Delimiter",
            1 => "Entity Identifier",
            2 => "Entity Protocol",
            3 => "Management IP Address",
            4 => "Timestamp",
            5 => "Protocol Version Range",
            6 => "Registration Period",
            7 => "Entity Index",
            16 => "Portal IP Address",
            17 => "Portal TCP/UDP Port",
            18 => "Portal Symbolic Name",
            19 => "ESI Interval",
            20 => "ESI Port",
            22 => "Portal Index",
            23 => "SCN Port",
            32 => "iSCSI Name",
            33 => "iSCSI Node Type",
            34 => "iSCSI Alias",
            35 => "iSCSI SCN Bitmap",
            36 => "iSCSI Node Index",
            48 => "PG iSCSI Name",
            49 => "PG Portal IP Addr",
            50 => "PG Portal TCP/UDP Port",
            51 => "PG Tag",
            52 => "PG Index",
            2049 => "DD_Set ID",
            2065 => "DD_ID",
            2066 => "DD Symbolic Name",
            2068 => "DD Member iSCSI Name",
            _ => return None,
        })
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n} ({})", self.0),
            None => write!(f, "tag {}", self.0),
        }
    }
}

/// Entity Protocol values (RFC 4171 §6.2.2).
pub const ENTITY_PROTOCOL_ISCSI: u32 = 2;

/// iSCSI Node Type bits (RFC 4171 §6.4.2).
pub const NODE_TYPE_TARGET: u32 = 1;
pub const NODE_TYPE_INITIATOR: u32 = 2;
pub const NODE_TYPE_CONTROL: u32 = 4;

/// RFC 4171 §6.3.2: bit 15 of the port word (0x0001_0000) means UDP.
pub const PORT_UDP: u32 = 0x0001_0000;

/// One attribute; `value` is the padded value as on the wire (its length is
/// a multiple of 4; empty means a NIL value, e.g. a query key to return).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attribute {
    pub tag: Tag,
    pub value: Vec<u8>,
}

impl Attribute {
    /// A zero-length attribute: in a query it names what to return (§5.6.5.2).
    pub fn nil(tag: Tag) -> Self {
        Self { tag, value: Vec::new() }
    }

    /// RFC 4171 §5.3.1: a string is UTF-8, NUL-terminated, padded with NULs
    /// to a multiple of 4 bytes.
    pub fn string(tag: Tag, s: &str) -> Self {
        let mut value = s.as_bytes().to_vec();
        value.push(0);
        while !value.len().is_multiple_of(4) {
            value.push(0);
        }
        Self { tag, value }
    }

    pub fn u32(tag: Tag, v: u32) -> Self {
        Self { tag, value: v.to_be_bytes().to_vec() }
    }

    pub fn u64(tag: Tag, v: u64) -> Self {
        Self { tag, value: v.to_be_bytes().to_vec() }
    }

    /// RFC 4171 §6.3.1: addresses are 16 bytes; IPv4 as IPv4-mapped IPv6.
    pub fn ip(tag: Tag, ip: IpAddr) -> Self {
        let v6 = match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        Self { tag, value: v6.octets().to_vec() }
    }

    /// A TCP port attribute (§6.3.2); `udp` sets the UDP bit.
    pub fn port(tag: Tag, port: u16, udp: bool) -> Self {
        Self::u32(tag, u32::from(port) | if udp { PORT_UDP } else { 0 })
    }

    pub fn is_nil(&self) -> bool {
        self.value.is_empty()
    }

    fn bad(&self, kind: &'static str) -> Error {
        Error::AttributeValue { tag: self.tag, kind, len: self.value.len() }
    }

    /// The string up to its first NUL; UTF-8 is required.
    pub fn as_str(&self) -> Result<&str, Error> {
        let end = self.value.iter().position(|&b| b == 0).unwrap_or(self.value.len());
        let bytes = self.value.get(..end).ok_or_else(|| self.bad("string"))?;
        std::str::from_utf8(bytes).map_err(|_| self.bad("UTF-8 string"))
    }

    pub fn as_u32(&self) -> Result<u32, Error> {
        let b: [u8; 4] = self.value.as_slice().try_into().map_err(|_| self.bad("32-bit integer"))?;
        Ok(u32::from_be_bytes(b))
    }

    pub fn as_u64(&self) -> Result<u64, Error> {
        let b: [u8; 8] = self.value.as_slice().try_into().map_err(|_| self.bad("64-bit integer"))?;
        Ok(u64::from_be_bytes(b))
    }

    /// An address; an IPv4-mapped value (`::ffff:a.b.c.d`, RFC 4171 §6.3.1)
    /// comes back as IPv4, and so does the deprecated IPv4-compatible form
    /// `::a.b.c.d` that open-isns's isnsadm registers (but not `::` or `::1`).
    pub fn as_ip(&self) -> Result<IpAddr, Error> {
        let b: [u8; 16] = self.value.as_slice().try_into().map_err(|_| self.bad("IP address"))?;
        let v6 = Ipv6Addr::from(b);
        if let Some(v4) = v6.to_ipv4_mapped() {
            return Ok(IpAddr::V4(v4));
        }
        let [head @ .., a, b3, c, d] = b;
        if head == [0; 12] && u32::from_be_bytes([a, b3, c, d]) > 1 {
            return Ok(IpAddr::V4([a, b3, c, d].into()));
        }
        Ok(IpAddr::V6(v6))
    }

    /// A port attribute: the port and whether it is UDP (§6.3.2).
    pub fn as_port(&self) -> Result<(u16, bool), Error> {
        let v = self.as_u32()?;
        let port = u16::try_from(v & 0xFFFF).map_err(|_| self.bad("port"))?;
        Ok((port, v & PORT_UDP != 0))
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.tag.0.to_be_bytes());
        out.extend_from_slice(&u32::try_from(self.value.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(&self.value);
    }
}

/// Decodes attributes until `buf` ends. Each length is checked against the
/// bytes left before anything is copied, so a hostile length allocates
/// nothing.
pub fn decode_list(mut buf: &[u8]) -> Result<Vec<Attribute>, Error> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        if out.len() >= MAX_ATTRIBUTES {
            return Err(Error::TooManyAttributes);
        }
        let Some((head, rest)) = buf.split_first_chunk::<8>() else {
            return Err(Error::TruncatedAttribute(buf.len()));
        };
        let [t0, t1, t2, t3, l0, l1, l2, l3] = *head;
        let tag = u32::from_be_bytes([t0, t1, t2, t3]);
        let len = u32::from_be_bytes([l0, l1, l2, l3]);
        if len % 4 != 0 {
            return Err(Error::AttributeAlignment { tag, len });
        }
        let n = usize::try_from(len).map_err(|_| Error::AttributeOverrun { tag, len, left: rest.len() })?;
        if n > rest.len() {
            return Err(Error::AttributeOverrun { tag, len, left: rest.len() });
        }
        let (value, after) = rest.split_at(n);
        out.push(Attribute { tag: Tag(tag), value: value.to_vec() });
        buf = after;
    }
    Ok(out)
}

pub fn encode_list(attrs: &[Attribute], out: &mut Vec<u8>) {
    for a in attrs {
        a.encode(out);
    }
}

/// The first attribute with `tag`.
pub fn find(attrs: &[Attribute], tag: Tag) -> Option<&Attribute> {
    attrs.iter().find(|a| a.tag == tag)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn string_is_nul_terminated_and_padded() {
        let a = Attribute::string(Tag::ISCSI_NAME, "iqn.a");
        assert_eq!(a.value, b"iqn.a\0\0\0");
        assert_eq!(a.as_str().unwrap(), "iqn.a");
        // A 4-byte string still gets its NUL, so a whole word of padding.
        assert_eq!(Attribute::string(Tag::ISCSI_NAME, "abcd").value.len(), 8);
        let mut out = Vec::new();
        a.encode(&mut out);
        assert_eq!(out[..8], [0, 0, 0, 32, 0, 0, 0, 8]);
    }

    #[test]
    fn ipv4_travels_as_mapped_ipv6() {
        let a = Attribute::ip(Tag::PORTAL_IP_ADDRESS, "127.0.0.1".parse().unwrap());
        assert_eq!(a.value, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1]);
        assert_eq!(a.as_ip().unwrap(), "127.0.0.1".parse::<IpAddr>().unwrap());
        let v6 = Attribute::ip(Tag::PORTAL_IP_ADDRESS, "::1".parse().unwrap());
        assert_eq!(v6.as_ip().unwrap(), "::1".parse::<IpAddr>().unwrap());
        // isnsadm's IPv4-compatible form.
        let compat = Attribute::ip(Tag::PORTAL_IP_ADDRESS, "::7f00:1".parse().unwrap());
        assert_eq!(compat.as_ip().unwrap(), "127.0.0.1".parse::<IpAddr>().unwrap());
        let any = Attribute::ip(Tag::PORTAL_IP_ADDRESS, "::".parse().unwrap());
        assert_eq!(any.as_ip().unwrap(), "::".parse::<IpAddr>().unwrap());
        assert!(Attribute::u32(Tag::PORTAL_IP_ADDRESS, 1).as_ip().is_err());
    }

    #[test]
    fn port_word_carries_the_udp_bit() {
        assert_eq!(Attribute::port(Tag::SCN_PORT, 3205, true).as_u32().unwrap(), 0x0001_0C85);
        assert_eq!(Attribute::u32(Tag::PORTAL_PORT, 0x0001_0C85).as_port().unwrap(), (3205, true));
        assert_eq!(Attribute::u32(Tag::PORTAL_PORT, 3260).as_port().unwrap(), (3260, false));
    }

    #[test]
    fn hostile_lengths_are_refused_before_use() {
        // Tag 32, length 0xFFFFFFFC with 4 bytes behind it.
        let buf = [0, 0, 0, 32, 0xff, 0xff, 0xff, 0xfc, 1, 2, 3, 4];
        assert_eq!(decode_list(&buf), Err(Error::AttributeOverrun { tag: 32, len: 0xffff_fffc, left: 4 }));
        let buf = [0, 0, 0, 32, 0, 0, 0, 3, 1, 2, 3];
        assert_eq!(decode_list(&buf), Err(Error::AttributeAlignment { tag: 32, len: 3 }));
        assert_eq!(decode_list(&[0, 0, 0]), Err(Error::TruncatedAttribute(3)));
    }

    #[test]
    fn attribute_count_is_capped() {
        let buf = vec![0u8; 8 * (MAX_ATTRIBUTES + 1)];
        assert_eq!(decode_list(&buf), Err(Error::TooManyAttributes));
        assert_eq!(decode_list(&buf[..8 * MAX_ATTRIBUTES]).unwrap().len(), MAX_ATTRIBUTES);
    }

    #[test]
    fn unknown_tags_are_kept_raw() {
        let a = Attribute { tag: Tag(641), value: vec![9, 9, 9, 9] };
        let mut out = Vec::new();
        a.encode(&mut out);
        assert_eq!(decode_list(&out).unwrap(), vec![a]);
        assert_eq!(Tag(641).to_string(), "tag 641");
        assert_eq!(Tag::PG_TAG.to_string(), "PG Tag (51)");
    }

    proptest! {
        #[test]
        fn lists_round_trip(attrs in proptest::collection::vec(
            (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..40)).prop_map(|(t, mut v)| {
                v.truncate(v.len() / 4 * 4);
                Attribute { tag: Tag(t), value: v }
            }),
            0..20,
        )) {
            let mut out = Vec::new();
            encode_list(&attrs, &mut out);
            prop_assert_eq!(decode_list(&out).unwrap(), attrs);
        }

        #[test]
        fn strings_round_trip(s in "[^\u{0}]{0,64}") {
            let a = Attribute::string(Tag::ISCSI_ALIAS, &s);
            prop_assert_eq!(a.as_str().unwrap(), s.as_str());
        }

        #[test]
        fn decoder_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_list(&buf);
        }
    }
}
