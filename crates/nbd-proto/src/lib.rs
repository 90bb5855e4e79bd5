//! Sans-IO core of the NBD protocol, server side (NetworkBlockDevice/nbd `doc/proto.md`).
//!
//! Nothing here touches a socket, a task or a clock: the handshake takes bytes in and hands bytes and an
//! outcome out ([`handshake::ServerHandshake`]); the transmission phase is a request decoder with a
//! validation step against the negotiated export ([`request`]) and reply encoders ([`reply`]). A tokio
//! driver lives in the `nbd-export` crate.
//!
//! We write our own because there is no solid maintained Rust crate for the NBD server side (the `nbd`
//! crate is synchronous and dated, `tokio-nbd` is young).
//!
//! Only what a single-export server needs is implemented: fixed newstyle negotiation (no oldstyle, no
//! TLS, no metadata contexts, no extended headers), simple and structured replies.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

pub mod errno;
pub mod export;
pub mod flags;
pub mod handshake;
pub mod magic;
pub mod option;
pub mod reply;
pub mod request;
mod wire;

pub use errno::Errno;
pub use export::{BlockSizes, ExportError, ExportInfo, TransmissionParams};
pub use flags::{ClientFlags, CommandFlags, HandshakeFlags, ReplyFlags, TransmissionFlags};
pub use handshake::{EnteredBy, HandshakeError, HandshakeLimits, Negotiated, Progress, ServerHandshake};
pub use option::{InfoType, OptionCode, OptionReplyType};
pub use reply::{ReplyError, ReplyType};
pub use request::{Command, CommandKind, MAX_WRITE_PAYLOAD, REQUEST_HEADER_LEN, Rejection, Request, RequestError};
