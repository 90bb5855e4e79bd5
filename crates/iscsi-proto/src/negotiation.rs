//! Login and operational parameter negotiation (RFC 7143 §6.2, §13): what
//! the initiator offers, how the target's answers and own offers are
//! checked and answered, and the parameters in force afterwards.

use crate::text::TextPairs;

/// HeaderDigest / DataDigest values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Digest {
    #[default]
    None,
    Crc32c,
}

/// SessionType key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionType {
    Discovery,
    #[default]
    Normal,
}

/// What the initiator asks for. Every field is an RFC 7143 §13 key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// HeaderDigest offer, in order of preference (always sent explicitly:
    /// tgt assumes CRC32C when the key is missing, see the lab notes).
    pub header_digest: Vec<Digest>,
    pub data_digest: Vec<Digest>,
    pub max_connections: u16,
    pub initial_r2t: bool,
    pub immediate_data: bool,
    /// Our MaxRecvDataSegmentLength (declarative; what the target may send us).
    pub max_recv_data_segment_length: u32,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
    pub default_time2wait: u16,
    pub default_time2retain: u16,
    pub max_outstanding_r2t: u16,
    pub data_pdu_in_order: bool,
    pub data_sequence_in_order: bool,
    pub error_recovery_level: u8,
}

impl Default for Proposal {
    fn default() -> Self {
        Self {
            header_digest: vec![Digest::None],
            data_digest: vec![Digest::None],
            max_connections: 1,
            initial_r2t: false,
            immediate_data: true,
            max_recv_data_segment_length: 262_144,
            max_burst_length: 16_776_192,
            first_burst_length: 262_144,
            default_time2wait: 2,
            default_time2retain: 20,
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
        }
    }
}

/// Parameters in force after login. Defaults are the RFC 7143 §13 defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub header_digest: Digest,
    pub data_digest: Digest,
    pub max_connections: u16,
    pub initial_r2t: bool,
    pub immediate_data: bool,
    /// Ours: the most the target may put in one PDU to us.
    pub max_recv_data_segment_length: u32,
    /// The target's MaxRecvDataSegmentLength: the most we may put in one PDU.
    pub max_xmit_data_segment_length: u32,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
    pub default_time2wait: u16,
    pub default_time2retain: u16,
    pub max_outstanding_r2t: u16,
    pub data_pdu_in_order: bool,
    pub data_sequence_in_order: bool,
    pub error_recovery_level: u8,
    /// Declared by the target during login, when it did.
    pub target_alias: Option<String>,
    pub target_portal_group_tag: Option<u16>,
}

impl Default for Negotiated {
    fn default() -> Self {
        Self {
            header_digest: Digest::None,
            data_digest: Digest::None,
            max_connections: 1,
            initial_r2t: true,
            immediate_data: true,
            max_recv_data_segment_length: 8192,
            max_xmit_data_segment_length: 8192,
            max_burst_length: 262_144,
            first_burst_length: 65_536,
            default_time2wait: 2,
            default_time2retain: 20,
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
            target_alias: None,
            target_portal_group_tag: None,
        }
    }
}

/// A target answer or offer that breaks RFC 7143 §6.2 / §13.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    #[error("target answered {key}={value:?}, which is not a valid value")]
    InvalidValue { key: String, value: String },
    #[error("target answered {key}={value:?}, outside what was offered")]
    NotOffered { key: String, value: String },
    #[error("target sent {0} more than once")]
    Repeated(String),
    #[error("target rejected {0}, which this initiator requires")]
    Rejected(String),
    #[error("target sent {0}, which belongs to another login stage or connection")]
    OutOfTurn(String),
}

/// Negotiation of the operational stage on one connection (leading or not,
/// discovery or normal), without I/O.
#[derive(Debug)]
pub struct Negotiator {
    proposal: Proposal,
    leading: bool,
    session_type: SessionType,
    result: Negotiated,
}

impl Negotiator {
    /// `leading`: session-wide keys are negotiated only on the leading
    /// connection (RFC 7143 §5.3); a non-leading connection negotiates only
    /// connection keys. Discovery sessions negotiate only what applies to them.
    pub fn new(proposal: Proposal, leading: bool, session_type: SessionType) -> Self {
        Self {
            proposal,
            leading,
            session_type,
            result: Negotiated::default(),
        }
    }

    /// The keys to send in the first operational-stage PDU.
    pub fn offer(&mut self) -> TextPairs {
        let _ = (&self.proposal, self.leading, self.session_type);
        todo!()
    }

    /// Takes the keys of one target login response: answers to our offers
    /// are checked and applied; keys the target offers itself are answered
    /// (returned, to send in the next request). Unknown keys are answered
    /// NotUnderstood.
    pub fn handle(&mut self, target: &TextPairs) -> Result<TextPairs, NegotiationError> {
        let _ = target;
        todo!()
    }

    /// True once every key we offered has been answered.
    pub fn is_complete(&self) -> bool {
        todo!()
    }

    /// The parameters in force.
    pub fn result(&self) -> &Negotiated {
        &self.result
    }
}
