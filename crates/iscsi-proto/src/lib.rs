//! Sans-IO iSCSI protocol core (RFC 7143).
//!
//! Nothing here touches a socket or a clock: callers hand bytes in and take
//! bytes out. Every length read from the wire is checked before it is used.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

pub mod chap;
pub mod digest;
pub mod discovery;
pub mod isns;
pub mod negotiation;
pub mod pdu;
pub mod scsi;
pub mod seq;
pub mod text;
