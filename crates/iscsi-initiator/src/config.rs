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
    /// Send a NOP-Out ping on an idle connection after this long without
    /// hearing from the target.
    pub nop_interval: Duration,
    /// Declare the connection dead when a ping gets no answer in this time.
    pub nop_timeout: Duration,
    /// A connection owed answers that hears nothing from the target for
    /// this long is stalled: it gets no new commands, and TCP keepalive
    /// probes (a NOP-Out ping when it is the only connection) ask whether
    /// the link still works: a link that went down loses packets without
    /// RST or FIN, and TCP alone would take minutes to say so. With the
    /// default 2 s and two unanswered probes a second apart, a dead link
    /// is declared failed about 4 s after its last PDU, its commands moved
    /// to the other connections.
    pub stall_time: Duration,
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
    /// How long recovery may hold commands and retry before it gives up
    /// with the fault that started it (see [`RecoveryBudget`]).
    pub recovery_budget: RecoveryBudget,
    /// IPsec for the session's connections (Windows `SecurityFlags`, `Key`,
    /// `SetIscsiTunnelModeOuterAddress`, `ISCSI_LOGIN_FLAG_REQUIRE_IPSEC`)
    /// and the provider that puts it in place; the default asks for none.
    /// The leading login and every reinstatement use it; connections added
    /// with `Session::add_connection` bring their own flags and key and use
    /// its provider (RFC 7143 §9.3, RFC 3723).
    pub ipsec: crate::ipsec::IpsecConfig,
}

/// Bounds on recovery (RFC 7143 §6.2, §7.1.4), after the Windows
/// initiator's `MaxRequestHoldTime` and `LinkDownTime`: recovery that cannot
/// heal ends with the fault that started it instead of retrying forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryBudget {
    /// How long a command may be held, from the first fault that hit it,
    /// while its connection is recovered and it is retried (Windows
    /// `MaxRequestHoldTime`, default 60 s).
    pub max_request_hold_time: Duration,
    /// How long a lost connection may stay down (reinstatement attempts)
    /// before every command waiting for it fails (Windows `LinkDownTime`,
    /// default 15 s).
    pub link_down_time: Duration,
    /// A command whose connection failed with the same protocol violation
    /// this many times after a reinstatement fails at once with it: a
    /// deterministic target does the same again, retrying cannot help.
    pub same_fault_limit: u32,
}

impl RecoveryBudget {
    /// Windows' defaults: MaxRequestHoldTime 60 s, LinkDownTime 15 s.
    pub const WINDOWS: RecoveryBudget = RecoveryBudget {
        max_request_hold_time: Duration::from_secs(60),
        link_down_time: Duration::from_secs(15),
        same_fault_limit: 1,
    };

    /// A budget for one-shot commands: every hopeless case ends within
    /// `hold` plus the time to notice the first fault.
    pub fn hold(hold: Duration) -> RecoveryBudget {
        RecoveryBudget {
            max_request_hold_time: hold,
            link_down_time: hold.min(RecoveryBudget::WINDOWS.link_down_time),
            ..RecoveryBudget::WINDOWS
        }
    }
}

impl Default for RecoveryBudget {
    fn default() -> Self {
        RecoveryBudget::WINDOWS
    }
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
            nop_timeout: Duration::from_secs(5),
            stall_time: Duration::from_secs(2),
            command_timeout: Duration::from_secs(60),
            max_redirects: 4,
            recovery: true,
            local_address: None,
            recovery_budget: RecoveryBudget::WINDOWS,
            ipsec: crate::ipsec::IpsecConfig::default(),
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
