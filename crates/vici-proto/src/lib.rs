//! Sans-IO codec for the Versatile IKE Control Interface (VICI), the
//! control protocol of strongSwan's IKE daemon charon (strongSwan
//! `src/libcharon/plugins/vici/README.md`).
//!
//! Three layers, as that document defines them:
//! - [`frame`]: the transport: each byte sequence is a 32-bit big-endian
//!   length followed by that many bytes, at most 512 KiB;
//! - [`packet`]: an 8-bit packet type, a name for the named types, then a
//!   message;
//! - [`message`]: a tree of sections, key/values and lists.
//!
//! Nothing here touches a socket or a clock: a driver (the initiator's
//! strongSwan provider) moves the bytes.
//!
//! We write our own rather than use a crate: the Rust VICI clients we found
//! are either blocking (`rustici`, an early release whose licence statements
//! disagree) or tied to serde and a young single-maintainer project
//! (`rsvici`), and the format is small and fully documented; owning it lets
//! us fuzz the decoder and test the exact messages we send.
//!
//! Values may be secrets (a pre-shared key in `load-shared`): a [`Message`]
//! zeroizes its values when dropped and never shows the value of a key named
//! `data` or `secret` in `Debug`.
//!
//! ```
//! use vici_proto::{Message, Packet};
//!
//! let msg = Message::new().with_value("name", "conn1");
//! let bytes = Packet::request("unload-conn", msg).encode_frame().unwrap();
//! let mut dec = vici_proto::FrameDecoder::new();
//! let mut buf = bytes::BytesMut::from(&bytes[..]);
//! let back = dec.decode(&mut buf).unwrap().unwrap();
//! assert_eq!(back.name(), Some("unload-conn"));
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

pub mod frame;
pub mod message;
pub mod packet;

pub use frame::{FrameDecoder, MAX_FRAME_LEN};
pub use message::{Element, Message};
pub use packet::{Packet, PacketType};

/// Why bytes could not be encoded or decoded as VICI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The bytes end inside an element, a name or a value.
    #[error("VICI data ends early: {0}")]
    Truncated(&'static str),
    #[error("unknown VICI message element type {0}")]
    UnknownElement(u8),
    #[error("unknown VICI packet type {0}")]
    UnknownPacket(u8),
    /// The README: SECTION_START and SECTION_END must balance; lists are not
    /// nested; list items only inside lists; key/values not inside lists.
    #[error("malformed VICI message: {0}")]
    Malformed(&'static str),
    #[error("VICI name is not ASCII")]
    NameNotAscii,
    /// Names carry an 8-bit length.
    #[error("VICI name of {0} bytes is longer than 255")]
    NameTooLong(usize),
    /// Values carry a 16-bit length.
    #[error("VICI value of {0} bytes is longer than 65535")]
    ValueTooLong(usize),
    /// The transport limits a byte sequence to 512 KiB.
    #[error("VICI byte sequence of {0} bytes is longer than the 512 KiB limit")]
    FrameTooLong(usize),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
