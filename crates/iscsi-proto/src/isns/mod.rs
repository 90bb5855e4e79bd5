//! iSNSP, the Internet Storage Name Service protocol (RFC 4171), sans-IO.
//!
//! An iSNS server keeps a database of Network Entities, their Portals and
//! Storage Nodes; an initiator registers its own node, asks which targets
//! its discovery domains let it see, and may be told of changes through
//! State Change Notifications (SCN). This module frames PDUs
//! ([`pdu`]), codes attributes ([`attr`]) and messages ([`message`]), and
//! builds the few exchanges an initiator needs ([`client`]). Nothing here
//! touches a socket; every length read from the wire is checked first.
//!
//! ```
//! use iscsi_proto::isns::{client, Attribute, Flags, FunctionId, Message, Status, Tag};
//!
//! // What the initiator sends: "which targets may I see?"
//! let query = client::query_targets(7, "iqn.2026-12.rs.rsiscsi:host");
//! let bytes = query.encode();
//! assert_eq!(Message::decode_bytes(&bytes).unwrap(), Some(query));
//!
//! // What a server answers: one target behind one portal group.
//! let mut answer = Message::response(FunctionId::DEV_ATTR_QRY, 7, Status::SUCCESS, Flags::SERVER);
//! answer.operating = vec![
//!     Attribute::string(Tag::ISCSI_NAME, "iqn.2026-12.lab:disk1"),
//!     Attribute::string(Tag::PG_ISCSI_NAME, "iqn.2026-12.lab:disk1"),
//!     Attribute::ip(Tag::PG_PORTAL_IP_ADDR, "192.0.2.1".parse().unwrap()),
//!     Attribute::port(Tag::PG_PORTAL_PORT, 3260, false),
//!     Attribute::u32(Tag::PG_TAG, 1),
//! ];
//! let answer = Message::decode_bytes(&answer.encode()).unwrap().unwrap();
//! let targets = client::targets_from_query(&answer).unwrap();
//! assert_eq!(targets[0].name, "iqn.2026-12.lab:disk1");
//! assert_eq!(targets[0].portals[0].port, 3260);
//! ```

pub mod attr;
pub mod client;
pub mod message;
pub mod pdu;
pub mod status;

pub use attr::{Attribute, Tag};
pub use client::{IsnsTarget, Scn, ScnBitmap, ScnChange};
pub use message::Message;
pub use pdu::{Flags, FunctionId, Header, Pdu, Reassembler};
pub use status::Status;

/// The IANA port of iSNS over TCP and UDP (IANA; RFC 4171 §5).
pub const DEFAULT_PORT: u16 = 3205;

/// Bytes of the iSNSP header (RFC 4171 §5.1).
pub const HEADER_LEN: usize = 12;

/// The PDU Length field is 16 bits, so one PDU payload is at most this.
pub const MAX_PDU_PAYLOAD: usize = u16::MAX as usize;

/// Cap on a reassembled message: our exchanges are small, a query answer
/// for a few hundred targets fits easily; more is refused, not buffered.
pub const MAX_MESSAGE_LEN: usize = 1024 * 1024;

/// Cap on the PDUs of one message (RFC 4171 §5.2 lets a message span PDUs).
pub const MAX_MESSAGE_PDUS: usize = 32;

/// Cap on the attributes of one message.
pub const MAX_ATTRIBUTES: usize = 16 * 1024;

/// Why iSNSP bytes were refused. Each variant names the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// RFC 4171 §5.1: iSNSP Version is 0x0001.
    #[error("iSNSP version {0:#06x} is not supported (only version 1)")]
    Version(u16),
    /// An attribute header announces more value bytes than the payload holds.
    #[error("attribute tag {tag} announces {len} bytes but only {left} remain")]
    AttributeOverrun { tag: u32, len: u32, left: usize },
    /// RFC 4171 §5.3.1: attribute values are padded to a 4-byte boundary.
    #[error("attribute tag {tag} has length {len}, not a multiple of 4")]
    AttributeAlignment { tag: u32, len: u32 },
    /// The payload ends inside an attribute's tag or length field.
    #[error("payload ends inside an attribute header ({0} bytes left)")]
    TruncatedAttribute(usize),
    /// A response payload starts with a 4-byte status (RFC 4171 §5.4).
    #[error("response payload is {0} bytes, too short for its status code")]
    MissingStatus(usize),
    /// A request other than SCN/ESI starts with the Source attribute (§5.6.1).
    #[error("{0} request has no source attribute")]
    MissingSource(&'static str),
    /// More attributes than [`MAX_ATTRIBUTES`].
    #[error("message has more than {MAX_ATTRIBUTES} attributes")]
    TooManyAttributes,
    /// An attribute value has the wrong size or content for its type.
    #[error("attribute {tag} is not a valid {kind} ({len} bytes)")]
    AttributeValue { tag: Tag, kind: &'static str, len: usize },
    /// RFC 4171 §5.2: PDUs of one message carry one function and transaction.
    #[error("PDU of {got} (transaction {got_xid}) arrived while {want} (transaction {want_xid}) was incomplete")]
    Interleaved { want: FunctionId, want_xid: u16, got: FunctionId, got_xid: u16 },
    /// RFC 4171 §5.2, §5.1.6: the first PDU of a message has the First PDU flag and
    /// Sequence ID 0, each next one the Sequence ID after it.
    #[error("PDU sequence {got} out of order (expected {want})")]
    Sequence { want: u16, got: u16 },
    /// A PDU continues a message that never started.
    #[error("PDU without the First PDU flag and no message in progress")]
    NoFirstPdu,
    /// Reassembly refused to buffer more.
    #[error("message exceeds {limit} ({what})")]
    MessageTooLarge { what: &'static str, limit: usize },
    /// RFC 4171 §5.5 authentication blocks are not supported by this client.
    #[error("message carries an authentication block, which this initiator does not support")]
    AuthenticationBlock,
    /// A message of a function this module has no layout for.
    #[error("message function {0} is not handled")]
    UnexpectedFunction(FunctionId),
    /// The answer decoded, but misses what the exchange needs.
    #[error("{0}")]
    Malformed(String),
}
