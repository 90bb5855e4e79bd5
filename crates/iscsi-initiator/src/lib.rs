//! A userspace iSCSI initiator on tokio, driving the sans-IO protocol core
//! of `iscsi-proto`: discovery, login (None/CHAP), sessions and SCSI I/O.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod config;
pub mod discovery;
pub mod error;
pub mod ipsec;
pub mod isns;
mod login;
pub mod model;
pub mod portal;
pub mod scsi;
pub mod session;
mod wire;

pub use config::{RecoveryBudget, SessionConfig};
pub use error::{Error, ErrorClass, Result};
pub use portal::{PortalAddr, TargetPortal};
pub use session::{DataDirection, ScsiOutcome, Session};
