//! What a login needs to know: who we are, what we ask for, how long we wait.

use std::time::Duration;

use iscsi_proto::chap::ChapConfig;
use iscsi_proto::negotiation::Proposal;

/// Settings for one session (discovery or normal).
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Our iSCSI node name (RFC 7143 §13.6).
    pub initiator_name: String,
    /// Optional InitiatorAlias (RFC 7143 §13.7).
    pub initiator_alias: Option<String>,
    /// CHAP credentials; `None` logs in with AuthMethod=None.
    pub chap: Option<ChapConfig>,
    /// Operational parameters to offer.
    pub proposal: Proposal,
    /// Initiator Session ID (RFC 7143 §11.12.5); random by default.
    pub isid: [u8; 6],
    pub connect_timeout: Duration,
    /// Upper bound on each login round trip.
    pub login_timeout: Duration,
    /// Send a NOP-Out ping after this long without hearing from the target.
    pub nop_interval: Duration,
    /// Declare the connection dead when a ping gets no answer in this time.
    pub nop_timeout: Duration,
    /// Upper bound on one SCSI command (and on logout).
    pub command_timeout: Duration,
    /// How many times a login redirection (status class 1) is followed.
    pub max_redirects: usize,
    /// Re-establish a failed connection (or the session) and retry its
    /// commands instead of failing them (RFC 7143 §7.1.4, ERL 0). With
    /// `proposal.error_recovery_level` = 2 (default 0) and a target that
    /// agrees, a failed connection's tasks are instead moved with TASK
    /// REASSIGN and go on where they stopped (RFC 7143 §7.2).
    pub recovery: bool,
    /// The local address the leading connection connects from (Windows'
    /// initiator port of `LoginIScsiTarget`); `None` lets the route choose.
    /// See `session::initiator_port_address` to get it from a port number.
    pub local_address: Option<std::net::IpAddr>,
}

impl SessionConfig {
    pub fn new(initiator_name: impl Into<String>) -> Self {
        Self {
            initiator_name: initiator_name.into(),
            initiator_alias: None,
            chap: None,
            proposal: Proposal {
                // Room to grow the session (MC/S); the target's own limit
                // wins (RFC 7143 §13.2, result function minimum).
                max_connections: 16,
                // One Data-In PDU per MiB read (§13.12, declarative): the
                // target builds and sends a quarter of the PDUs it would at
                // 256 KiB, and the reader is woken once per MiB (session::rx).
                max_recv_data_segment_length: 1024 * 1024,
                ..Proposal::default()
            },
            isid: random_isid(),
            connect_timeout: Duration::from_secs(10),
            login_timeout: Duration::from_secs(15),
            nop_interval: Duration::from_secs(10),
            nop_timeout: Duration::from_secs(15),
            command_timeout: Duration::from_secs(60),
            max_redirects: 4,
            recovery: true,
            local_address: None,
        }
    }
}

/// An ISID of the "random" type (RFC 7143 §11.12.5: T=10b, 24 random bits
/// in B and C, a 16-bit qualifier in D).
pub fn random_isid() -> [u8; 6] {
    let r: [u8; 5] = rand::random();
    let [a, b, c, d, e] = r;
    [0x80, a, b, c, d, e]
}
