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
            max_outstanding_r2t: 16,
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

/// RFC 7143 §6.2: the answers that leave a key at its default.
const REJECT: &str = "Reject";
const IRRELEVANT: &str = "Irrelevant";
const NOT_UNDERSTOOD: &str = "NotUnderstood";

/// RFC 7143 §13.12: the declarative MaxRecvDataSegmentLength, each side's own.
const MAX_RECV_DATA_SEGMENT_LENGTH: &str = "MaxRecvDataSegmentLength";
/// RFC 7143 §13.12: 512 to 2^24-1.
const MRDSL_RANGE: (u64, u64) = (512, 16_777_215);

/// Keys of the security stage (RFC 7143 §12; SRP/Kerberos/SPKM are from
/// RFC 3720 and its companions) that have no place in the operational stage.
fn is_security_key(key: &str) -> bool {
    key == "AuthMethod" || ["CHAP_", "SRP_", "KRB_", "SPKM_"].iter().any(|p| key.starts_with(p))
}

/// Keys only an initiator declares (RFC 7143 §13.4–§13.6, §13.21, §13.3):
/// a target sending them is out of turn.
fn is_initiator_only_key(key: &str) -> bool {
    matches!(key, "InitiatorName" | "InitiatorAlias" | "SessionType" | "SendTargets")
}

fn is_special(value: &str) -> bool {
    matches!(value, REJECT | IRRELEVANT | NOT_UNDERSTOOD)
}

/// The negotiated (non-declarative) keys this initiator knows, RFC 7143 §13.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    HeaderDigest,
    DataDigest,
    MaxConnections,
    InitialR2T,
    ImmediateData,
    MaxBurstLength,
    FirstBurstLength,
    DefaultTime2Wait,
    DefaultTime2Retain,
    MaxOutstandingR2T,
    DataPduInOrder,
    DataSequenceInOrder,
    ErrorRecoveryLevel,
}

/// How a key's result is computed (RFC 7143 §6.2.1, §6.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Function {
    /// List negotiation: the answer is one value from the offered list.
    List,
    /// Numerical, result is the minimum; the inclusive legal range.
    Min(u64, u64),
    /// Numerical, result is the maximum; the inclusive legal range.
    Max(u64, u64),
    /// Boolean, result is OR.
    Or,
    /// Boolean, result is AND.
    And,
}

/// A single value of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value {
    Digest(Digest),
    Number(u64),
    Bool(bool),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Digest(Digest::None) => f.write_str("None"),
            Value::Digest(Digest::Crc32c) => f.write_str("CRC32C"),
            Value::Number(n) => write!(f, "{n}"),
            Value::Bool(true) => f.write_str("Yes"),
            Value::Bool(false) => f.write_str("No"),
        }
    }
}

/// What one side offers for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Offer {
    Digests(Vec<Digest>),
    Number(u64),
    Bool(bool),
}

impl Offer {
    fn encode(&self) -> String {
        match self {
            Offer::Digests(list) => list.iter().map(|d| Value::Digest(*d).to_string()).collect::<Vec<_>>().join(","),
            Offer::Number(n) => Value::Number(*n).to_string(),
            Offer::Bool(b) => Value::Bool(*b).to_string(),
        }
    }
}

impl Key {
    const ALL: [Key; 13] = [
        Key::HeaderDigest,
        Key::DataDigest,
        Key::MaxConnections,
        Key::InitialR2T,
        Key::ImmediateData,
        Key::MaxBurstLength,
        Key::FirstBurstLength,
        Key::DefaultTime2Wait,
        Key::DefaultTime2Retain,
        Key::MaxOutstandingR2T,
        Key::DataPduInOrder,
        Key::DataSequenceInOrder,
        Key::ErrorRecoveryLevel,
    ];

    fn name(self) -> &'static str {
        match self {
            Key::HeaderDigest => "HeaderDigest",
            Key::DataDigest => "DataDigest",
            Key::MaxConnections => "MaxConnections",
            Key::InitialR2T => "InitialR2T",
            Key::ImmediateData => "ImmediateData",
            Key::MaxBurstLength => "MaxBurstLength",
            Key::FirstBurstLength => "FirstBurstLength",
            Key::DefaultTime2Wait => "DefaultTime2Wait",
            Key::DefaultTime2Retain => "DefaultTime2Retain",
            Key::MaxOutstandingR2T => "MaxOutstandingR2T",
            Key::DataPduInOrder => "DataPDUInOrder",
            Key::DataSequenceInOrder => "DataSequenceInOrder",
            Key::ErrorRecoveryLevel => "ErrorRecoveryLevel",
        }
    }

    fn from_name(name: &str) -> Option<Key> {
        Key::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Result functions and ranges of RFC 7143 §13.1–§13.20.
    fn function(self) -> Function {
        match self {
            Key::HeaderDigest | Key::DataDigest => Function::List,
            // §13.2: 1 to 65535.
            Key::MaxConnections => Function::Min(1, 65_535),
            // §13.10 OR, §13.11 AND.
            Key::InitialR2T => Function::Or,
            Key::ImmediateData => Function::And,
            // §13.13, §13.14: 512 to 2^24-1.
            Key::MaxBurstLength | Key::FirstBurstLength => Function::Min(512, 16_777_215),
            // §13.15 maximum, §13.16 minimum: 0 to 3600.
            Key::DefaultTime2Wait => Function::Max(0, 3600),
            Key::DefaultTime2Retain => Function::Min(0, 3600),
            // §13.17: 1 to 65535.
            Key::MaxOutstandingR2T => Function::Min(1, 65_535),
            // §13.18, §13.19: OR.
            Key::DataPduInOrder | Key::DataSequenceInOrder => Function::Or,
            // §13.20: 0 to 2.
            Key::ErrorRecoveryLevel => Function::Min(0, 2),
        }
    }

    /// RFC 7143 §13: every key here but the digests is session-wide and
    /// "Leading Only".
    fn is_session_wide(self) -> bool {
        !matches!(self, Key::HeaderDigest | Key::DataDigest)
    }

    /// RFC 7143 §13: the keys not marked "Irrelevant when
    /// SessionType=Discovery".
    fn applies_to_discovery(self) -> bool {
        matches!(
            self,
            Key::HeaderDigest
                | Key::DataDigest
                | Key::DefaultTime2Wait
                | Key::DefaultTime2Retain
                | Key::ErrorRecoveryLevel
        )
    }

    /// The value in force when the key is not negotiated (RFC 7143 §13).
    fn default_value(self) -> Value {
        let d = Negotiated::default();
        match self {
            Key::HeaderDigest => Value::Digest(d.header_digest),
            Key::DataDigest => Value::Digest(d.data_digest),
            Key::MaxConnections => Value::Number(d.max_connections.into()),
            Key::InitialR2T => Value::Bool(d.initial_r2t),
            Key::ImmediateData => Value::Bool(d.immediate_data),
            Key::MaxBurstLength => Value::Number(d.max_burst_length.into()),
            Key::FirstBurstLength => Value::Number(d.first_burst_length.into()),
            Key::DefaultTime2Wait => Value::Number(d.default_time2wait.into()),
            Key::DefaultTime2Retain => Value::Number(d.default_time2retain.into()),
            Key::MaxOutstandingR2T => Value::Number(d.max_outstanding_r2t.into()),
            Key::DataPduInOrder => Value::Bool(d.data_pdu_in_order),
            Key::DataSequenceInOrder => Value::Bool(d.data_sequence_in_order),
            Key::ErrorRecoveryLevel => Value::Number(d.error_recovery_level.into()),
        }
    }

    /// Parses one value (not a list) and checks the key's range.
    fn parse_value(self, text: &str) -> Option<Value> {
        match self.function() {
            Function::List => parse_digest(text).map(Value::Digest),
            Function::Min(lo, hi) | Function::Max(lo, hi) => {
                parse_number(text).filter(|n| (lo..=hi).contains(n)).map(Value::Number)
            }
            Function::Or | Function::And => parse_bool(text).map(Value::Bool),
        }
    }

    /// Whether `value`, as the answer to `offer`, obeys the result function
    /// (RFC 7143 §6.2.1, §6.2.2): a responder may only move a value in the
    /// direction the function allows.
    fn answer_allowed(self, offer: &Offer, value: Value) -> bool {
        match (self.function(), offer, value) {
            (Function::List, Offer::Digests(list), Value::Digest(d)) => list.contains(&d),
            (Function::Min(..), Offer::Number(ours), Value::Number(n)) => n <= *ours,
            (Function::Max(..), Offer::Number(ours), Value::Number(n)) => n >= *ours,
            (Function::Or, Offer::Bool(ours), Value::Bool(b)) => b || !*ours,
            (Function::And, Offer::Bool(ours), Value::Bool(b)) => !b || *ours,
            _ => false,
        }
    }

    /// Our answer to the target's offer `text`, given what we would accept
    /// (`ours`). `None` means the offer is invalid or has nothing we accept,
    /// to be answered `Reject`.
    fn answer(self, ours: &Offer, text: &str) -> Option<Value> {
        match (self.function(), ours) {
            // §6.2.1: the first value of the originator's list that we support.
            (Function::List, Offer::Digests(accepted)) => {
                text.split(',').filter_map(parse_digest).find(|d| accepted.contains(d)).map(Value::Digest)
            }
            (_, Offer::Digests(_)) => None,
            (f, ours) => {
                let theirs = self.parse_value(text)?;
                Some(match (f, ours, theirs) {
                    (Function::Min(..), Offer::Number(a), Value::Number(b)) => Value::Number((*a).min(b)),
                    (Function::Max(..), Offer::Number(a), Value::Number(b)) => Value::Number((*a).max(b)),
                    (Function::Or, Offer::Bool(a), Value::Bool(b)) => Value::Bool(*a || b),
                    (Function::And, Offer::Bool(a), Value::Bool(b)) => Value::Bool(*a && b),
                    _ => return None,
                })
            }
        }
    }
}

/// RFC 7143 §13.1: digest values are case-sensitive tokens.
fn parse_digest(text: &str) -> Option<Digest> {
    match text {
        "None" => Some(Digest::None),
        "CRC32C" => Some(Digest::Crc32c),
        _ => None,
    }
}

/// RFC 7143 §6.1: `Yes` or `No`.
fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "Yes" => Some(true),
        "No" => Some(false),
        _ => None,
    }
}

/// RFC 7143 §6.1 numerical-value: a decimal constant, or a hex constant
/// with a `0x`/`0X` prefix; no sign, no spaces.
fn parse_number(text: &str) -> Option<u64> {
    let (digits, radix) = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (text, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// Negotiation of the operational stage on one connection (leading or not,
/// discovery or normal), without I/O.
#[derive(Debug)]
pub struct Negotiator {
    proposal: Proposal,
    leading: bool,
    session_type: SessionType,
    result: Negotiated,
    /// Negotiated keys we offered, with the value sent.
    offered: Vec<(Key, Offer)>,
    /// Offered keys the target has answered.
    answered: Vec<Key>,
    /// Keys the target offered first and we answered; not offered again.
    answered_for_target: Vec<Key>,
    /// Every key the target has sent, to refuse repeats (RFC 7143 §6.2:
    /// a key is negotiated once per side).
    seen: std::collections::HashSet<String>,
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
            offered: Vec::new(),
            answered: Vec::new(),
            answered_for_target: Vec::new(),
            seen: std::collections::HashSet::new(),
        }
    }

    /// Our stance on `key`, from the proposal, brought into the key's legal
    /// range so that we never offer what a target must reject. An empty
    /// digest list means None.
    fn ours(&self, key: Key) -> Offer {
        let p = &self.proposal;
        let digests = |list: &Vec<Digest>| {
            if list.is_empty() { Offer::Digests(vec![Digest::None]) } else { Offer::Digests(list.clone()) }
        };
        let number = |n: u64| match key.function() {
            Function::Min(lo, hi) | Function::Max(lo, hi) => Offer::Number(n.clamp(lo, hi)),
            _ => Offer::Number(n),
        };
        match key {
            Key::HeaderDigest => digests(&p.header_digest),
            Key::DataDigest => digests(&p.data_digest),
            Key::MaxConnections => number(p.max_connections.into()),
            Key::InitialR2T => Offer::Bool(p.initial_r2t),
            Key::ImmediateData => Offer::Bool(p.immediate_data),
            Key::MaxBurstLength => number(p.max_burst_length.into()),
            // §13.14: FirstBurstLength must not exceed MaxBurstLength.
            Key::FirstBurstLength => number(u64::from(p.first_burst_length).min(u64::from(p.max_burst_length))),
            Key::DefaultTime2Wait => number(p.default_time2wait.into()),
            Key::DefaultTime2Retain => number(p.default_time2retain.into()),
            Key::MaxOutstandingR2T => number(p.max_outstanding_r2t.into()),
            Key::DataPduInOrder => Offer::Bool(p.data_pdu_in_order),
            Key::DataSequenceInOrder => Offer::Bool(p.data_sequence_in_order),
            Key::ErrorRecoveryLevel => number(p.error_recovery_level.into()),
        }
    }

    /// Whether `key` is negotiated at all on this connection.
    fn is_relevant(&self, key: Key) -> bool {
        if !key.is_session_wide() {
            return true;
        }
        // RFC 7143 §6.3: Leading Only keys on a non-leading connection are
        // Irrelevant.
        self.leading && (self.session_type == SessionType::Normal || key.applies_to_discovery())
    }

    /// Our MaxRecvDataSegmentLength, in its legal range (RFC 7143 §13.12).
    fn our_mrdsl(&self) -> u32 {
        // The clamp keeps the value within u32.
        self.proposal.max_recv_data_segment_length.clamp(512, 16_777_215)
    }

    /// The keys to send in the first operational-stage PDU.
    ///
    /// Leading Normal session: the digests, our MaxRecvDataSegmentLength and
    /// every session key. Non-leading connection: the digests and our
    /// MaxRecvDataSegmentLength only (RFC 7143 §5.3). Discovery: the digests
    /// and MaxRecvDataSegmentLength. The digests are always sent, because
    /// tgt takes a missing HeaderDigest as CRC32C when so configured.
    /// Proposal values outside a key's range are brought into it.
    pub fn offer(&mut self) -> TextPairs {
        self.offered.clear();
        self.answered.clear();
        let keys: &[Key] = if self.leading && self.session_type == SessionType::Normal {
            &Key::ALL
        } else {
            &[Key::HeaderDigest, Key::DataDigest]
        };
        let mut out = TextPairs::new();
        for &key in keys {
            if key == Key::MaxConnections {
                // After the connection keys, before the session keys.
                out.push(self.mrdsl_pair());
            }
            if self.answered_for_target.contains(&key) {
                // The target spoke first (e.g. in its last security-stage
                // response); our answer already settles the key.
                continue;
            }
            let offer = self.ours(key);
            out.push((key.name().to_owned(), offer.encode()));
            self.offered.push((key, offer));
        }
        if !keys.contains(&Key::MaxConnections) {
            out.push(self.mrdsl_pair());
        }
        out
    }

    /// RFC 7143 §13.12: our declaration, recorded in the result.
    fn mrdsl_pair(&mut self) -> (String, String) {
        let mrdsl = self.our_mrdsl();
        self.result.max_recv_data_segment_length = mrdsl;
        (MAX_RECV_DATA_SEGMENT_LENGTH.to_owned(), mrdsl.to_string())
    }

    /// Takes the keys of one target login response: answers to our offers
    /// are checked and applied; keys the target offers itself are answered
    /// (returned, to send in the next request). Unknown keys are answered
    /// NotUnderstood.
    pub fn handle(&mut self, target: &TextPairs) -> Result<TextPairs, NegotiationError> {
        let mut reply = TextPairs::new();
        for (name, value) in target {
            if is_security_key(name) || is_initiator_only_key(name) {
                return Err(NegotiationError::OutOfTurn(name.clone()));
            }
            // tgt offers session keys again on every round of a non-leading
            // login even after they were answered Irrelevant; answering
            // again is harmless, since they change nothing here.
            if let Some(key) = Key::from_name(name)
                && !self.is_relevant(key)
                && !is_special(value)
            {
                reply.push((name.clone(), IRRELEVANT.to_owned()));
                continue;
            }
            if !self.seen.insert(name.clone()) {
                return Err(NegotiationError::Repeated(name.clone()));
            }
            match name.as_str() {
                // RFC 7143 §13.12: the target's own limit, declared.
                MAX_RECV_DATA_SEGMENT_LENGTH => {
                    if is_special(value) {
                        // Its verdict on ours (only if ours were out of range).
                        continue;
                    }
                    let n = parse_number(value)
                        .filter(|n| (MRDSL_RANGE.0..=MRDSL_RANGE.1).contains(n))
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| invalid(name, value))?;
                    self.result.max_xmit_data_segment_length = n;
                }
                // RFC 7143 §13.7: declarative, informational.
                "TargetAlias" => {
                    if !is_special(value) {
                        self.result.target_alias = Some(value.clone());
                    }
                }
                // RFC 7143 §13.9: declarative, 0..=65535.
                "TargetPortalGroupTag" => {
                    if !is_special(value) {
                        let tag = parse_number(value)
                            .and_then(|n| u16::try_from(n).ok())
                            .ok_or_else(|| invalid(name, value))?;
                        self.result.target_portal_group_tag = Some(tag);
                    }
                }
                // RFC 7143 §13.8: handled by the login flow (redirection);
                // TargetName is a harmless echo some targets send.
                "TargetAddress" | "TargetName" => {}
                _ => match Key::from_name(name) {
                    Some(key) => {
                        if let Some(answer) = self.handle_key(key, name, value)? {
                            reply.push((name.clone(), answer));
                        }
                    }
                    // RFC 7143 §6.2: unknown keys (vendor X- keys included)
                    // are answered NotUnderstood, unless they are answers.
                    None => {
                        if !is_special(value) {
                            reply.push((name.clone(), NOT_UNDERSTOOD.to_owned()));
                        }
                    }
                },
            }
        }
        self.clamp_first_burst();
        Ok(reply)
    }

    /// One negotiated key from the target: an answer to our offer, or the
    /// target's own offer. Returns our answer when one is due.
    fn handle_key(&mut self, key: Key, name: &str, value: &str) -> Result<Option<String>, NegotiationError> {
        let offered = self.offered.iter().find(|(k, _)| *k == key).map(|(_, o)| o.clone());
        if let Some(offer) = offered {
            self.answered.push(key);
            let v = if is_special(value) {
                // RFC 7143 §6.2: the key keeps its default, which must still
                // be something we can live with.
                let d = key.default_value();
                if !key.answer_allowed(&offer, d) {
                    return Err(NegotiationError::Rejected(name.to_owned()));
                }
                d
            } else {
                let v = key.parse_value(value).ok_or_else(|| invalid(name, value))?;
                if !key.answer_allowed(&offer, v) {
                    return Err(NegotiationError::NotOffered { key: name.to_owned(), value: value.to_owned() });
                }
                v
            };
            self.apply(key, v);
            return Ok(None);
        }
        if is_special(value) {
            // An answer to something we never sent: nothing to apply.
            return Ok(None);
        }
        if !self.is_relevant(key) {
            return Ok(Some(IRRELEVANT.to_owned()));
        }
        self.answered_for_target.push(key);
        let ours = self.ours(key);
        match key.answer(&ours, value) {
            Some(v) => {
                self.apply(key, v);
                Ok(Some(v.to_string()))
            }
            None => {
                // RFC 7143 §6.2: an invalid offer is answered Reject and the
                // default stays, which must be acceptable to us.
                let d = key.default_value();
                if !key.answer_allowed(&ours, d) {
                    return Err(NegotiationError::Rejected(name.to_owned()));
                }
                self.apply(key, d);
                Ok(Some(REJECT.to_owned()))
            }
        }
    }

    /// Stores a checked value; ranges were checked before, so the
    /// conversions cannot fail (and leave the field alone if they did).
    fn apply(&mut self, key: Key, value: Value) {
        let r = &mut self.result;
        match (key, value) {
            (Key::HeaderDigest, Value::Digest(d)) => r.header_digest = d,
            (Key::DataDigest, Value::Digest(d)) => r.data_digest = d,
            (Key::MaxConnections, Value::Number(n)) => set(&mut r.max_connections, n),
            (Key::InitialR2T, Value::Bool(b)) => r.initial_r2t = b,
            (Key::ImmediateData, Value::Bool(b)) => r.immediate_data = b,
            (Key::MaxBurstLength, Value::Number(n)) => set(&mut r.max_burst_length, n),
            (Key::FirstBurstLength, Value::Number(n)) => set(&mut r.first_burst_length, n),
            (Key::DefaultTime2Wait, Value::Number(n)) => set(&mut r.default_time2wait, n),
            (Key::DefaultTime2Retain, Value::Number(n)) => set(&mut r.default_time2retain, n),
            (Key::MaxOutstandingR2T, Value::Number(n)) => set(&mut r.max_outstanding_r2t, n),
            (Key::DataPduInOrder, Value::Bool(b)) => r.data_pdu_in_order = b,
            (Key::DataSequenceInOrder, Value::Bool(b)) => r.data_sequence_in_order = b,
            (Key::ErrorRecoveryLevel, Value::Number(n)) => set(&mut r.error_recovery_level, n),
            _ => {}
        }
    }

    /// RFC 7143 §13.14: FirstBurstLength must not exceed MaxBurstLength.
    fn clamp_first_burst(&mut self) {
        let r = &mut self.result;
        r.first_burst_length = r.first_burst_length.min(r.max_burst_length);
    }

    /// True once every key we offered has been answered (the declarative
    /// MaxRecvDataSegmentLength needs no answer).
    pub fn is_complete(&self) -> bool {
        self.offered.iter().all(|(k, _)| self.answered.contains(k))
    }

    /// The parameters in force.
    ///
    /// On a non-leading connection the session-wide fields keep their RFC
    /// defaults: the session's values are those of its leading connection.
    pub fn result(&self) -> &Negotiated {
        &self.result
    }
}

fn set<T: TryFrom<u64>>(field: &mut T, n: u64) {
    if let Ok(v) = T::try_from(n) {
        *field = v;
    }
}

fn invalid(key: &str, value: &str) -> NegotiationError {
    NegotiationError::InvalidValue { key: key.to_owned(), value: value.to_owned() }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    fn kv(list: &[(&str, &str)]) -> TextPairs {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn leading() -> Negotiator {
        let mut n = Negotiator::new(Proposal::default(), true, SessionType::Normal);
        n.offer();
        n
    }

    fn with(proposal: Proposal) -> Negotiator {
        let mut n = Negotiator::new(proposal, true, SessionType::Normal);
        n.offer();
        n
    }

    /// What a target answering every default offer unchanged would send.
    fn echo_all() -> TextPairs {
        kv(&[
            ("HeaderDigest", "None"),
            ("DataDigest", "None"),
            ("MaxConnections", "1"),
            ("InitialR2T", "No"),
            ("ImmediateData", "Yes"),
            ("MaxBurstLength", "16776192"),
            ("FirstBurstLength", "262144"),
            ("DefaultTime2Wait", "2"),
            ("DefaultTime2Retain", "20"),
            ("MaxOutstandingR2T", "1"),
            ("DataPDUInOrder", "Yes"),
            ("DataSequenceInOrder", "Yes"),
            ("ErrorRecoveryLevel", "0"),
        ])
    }

    fn one(n: &mut Negotiator, key: &str, value: &str) -> Result<TextPairs, NegotiationError> {
        n.handle(&kv(&[(key, value)]))
    }

    #[test]
    fn offer_leading_normal() {
        let mut n = Negotiator::new(Proposal::default(), true, SessionType::Normal);
        let offer = n.offer();
        assert_eq!(
            offer,
            kv(&[
                ("HeaderDigest", "None"),
                ("DataDigest", "None"),
                ("MaxRecvDataSegmentLength", "262144"),
                ("MaxConnections", "1"),
                ("InitialR2T", "No"),
                ("ImmediateData", "Yes"),
                ("MaxBurstLength", "16776192"),
                ("FirstBurstLength", "262144"),
                ("DefaultTime2Wait", "2"),
                ("DefaultTime2Retain", "20"),
                ("MaxOutstandingR2T", "16"),
                ("DataPDUInOrder", "Yes"),
                ("DataSequenceInOrder", "Yes"),
                ("ErrorRecoveryLevel", "0"),
            ])
        );
        assert_eq!(n.result().max_recv_data_segment_length, 262_144);
        assert!(!n.is_complete());
    }

    #[test]
    fn offer_non_leading_and_discovery_carry_connection_keys_only() {
        let p = Proposal {
            header_digest: vec![Digest::Crc32c, Digest::None],
            data_digest: vec![Digest::None, Digest::Crc32c],
            max_recv_data_segment_length: 65_536,
            ..Proposal::default()
        };
        let want = kv(&[
            ("HeaderDigest", "CRC32C,None"),
            ("DataDigest", "None,CRC32C"),
            ("MaxRecvDataSegmentLength", "65536"),
        ]);
        let mut n = Negotiator::new(p.clone(), false, SessionType::Normal);
        assert_eq!(n.offer(), want);
        assert_eq!(n.result().max_recv_data_segment_length, 65_536);
        let mut d = Negotiator::new(p, true, SessionType::Discovery);
        assert_eq!(d.offer(), want);
    }

    #[test]
    fn offer_brings_proposal_into_range() {
        let p = Proposal {
            header_digest: vec![],
            max_recv_data_segment_length: 100,
            max_burst_length: 4096,
            first_burst_length: 8192,
            max_connections: 0,
            default_time2wait: 5000,
            error_recovery_level: 7,
            ..Proposal::default()
        };
        let mut n = Negotiator::new(p, true, SessionType::Normal);
        let offer = n.offer();
        let get = |k: &str| offer.iter().find(|(key, _)| key == k).unwrap().1.clone();
        assert_eq!(get("HeaderDigest"), "None");
        assert_eq!(get("MaxRecvDataSegmentLength"), "512");
        assert_eq!(get("FirstBurstLength"), "4096");
        assert_eq!(get("MaxConnections"), "1");
        assert_eq!(get("DefaultTime2Wait"), "3600");
        assert_eq!(get("ErrorRecoveryLevel"), "2");
        assert_eq!(n.result().max_recv_data_segment_length, 512);
    }

    /// istgt answers everything in one round, with T (lab config values).
    #[test]
    fn istgt_like_single_round() {
        let mut n = with(Proposal {
            header_digest: vec![Digest::Crc32c, Digest::None],
            data_digest: vec![Digest::Crc32c, Digest::None],
            max_connections: 8,
            max_outstanding_r2t: 16,
            ..Proposal::default()
        });
        let response = kv(&[
            ("TargetPortalGroupTag", "1"),
            ("HeaderDigest", "CRC32C"),
            ("DataDigest", "CRC32C"),
            ("MaxConnections", "8"),
            ("InitialR2T", "Yes"),
            ("ImmediateData", "Yes"),
            ("MaxRecvDataSegmentLength", "262144"),
            ("MaxBurstLength", "1048576"),
            ("FirstBurstLength", "262144"),
            ("DefaultTime2Wait", "2"),
            ("DefaultTime2Retain", "20"),
            ("MaxOutstandingR2T", "16"),
            ("DataPDUInOrder", "Yes"),
            ("DataSequenceInOrder", "Yes"),
            ("ErrorRecoveryLevel", "0"),
        ]);
        assert_eq!(n.handle(&response).unwrap(), TextPairs::new());
        assert!(n.is_complete());
        let r = n.result();
        assert_eq!(r.header_digest, Digest::Crc32c);
        assert_eq!(r.data_digest, Digest::Crc32c);
        assert_eq!(r.max_connections, 8);
        assert!(r.initial_r2t);
        assert!(r.immediate_data);
        assert_eq!(r.max_recv_data_segment_length, 262_144);
        assert_eq!(r.max_xmit_data_segment_length, 262_144);
        assert_eq!(r.max_burst_length, 1_048_576);
        assert_eq!(r.first_burst_length, 262_144);
        assert_eq!(r.max_outstanding_r2t, 16);
        assert_eq!(r.target_portal_group_tag, Some(1));
    }

    /// tgt on the leading connection: answers our keys, declares its
    /// MaxRecvDataSegmentLength, no T; the next request carries no keys and
    /// tgt then sets T with an empty text.
    #[test]
    fn tgt_like_leading_two_rounds() {
        let mut n = leading();
        let mut response = echo_all();
        response.push(("MaxRecvDataSegmentLength".into(), "262144".into()));
        assert_eq!(n.handle(&response).unwrap(), TextPairs::new());
        assert!(n.is_complete());
        assert_eq!(n.handle(&TextPairs::new()).unwrap(), TextPairs::new());
        assert!(n.is_complete());
        assert_eq!(n.result().max_xmit_data_segment_length, 262_144);
        assert!(!n.result().initial_r2t);
    }

    /// tgt on an MC/S connection: we send only the connection keys; tgt
    /// declares its MaxRecvDataSegmentLength and offers MaxConnections=8
    /// unasked, without T. Our next request answers MaxConnections=Irrelevant.
    #[test]
    fn tgt_like_non_leading_unasked_offers() {
        let mut n = Negotiator::new(Proposal::default(), false, SessionType::Normal);
        n.offer();
        let response = kv(&[
            ("HeaderDigest", "None"),
            ("DataDigest", "None"),
            ("MaxRecvDataSegmentLength", "262144"),
            ("MaxConnections", "8"),
        ]);
        assert_eq!(n.handle(&response).unwrap(), kv(&[("MaxConnections", "Irrelevant")]));
        assert!(n.is_complete());
        assert_eq!(n.result().max_xmit_data_segment_length, 262_144);
        assert_eq!(n.result().max_connections, 1);
        assert_eq!(n.handle(&TextPairs::new()).unwrap(), TextPairs::new());
    }

    /// tgt's unasked offers answered with the result function, when the
    /// target speaks before our offer (keys in its last security response).
    #[test]
    fn tgt_like_offers_before_ours() {
        let mut n = Negotiator::new(Proposal { max_connections: 4, ..Proposal::default() }, true, SessionType::Normal);
        let response = kv(&[("MaxRecvDataSegmentLength", "262144"), ("MaxConnections", "8")]);
        assert_eq!(n.handle(&response).unwrap(), kv(&[("MaxConnections", "4")]));
        assert_eq!(n.result().max_connections, 4);
        let offer = n.offer();
        assert!(offer.iter().all(|(k, _)| k != "MaxConnections"));
        assert!(offer.iter().any(|(k, _)| k == "MaxRecvDataSegmentLength"));
        assert!(!n.is_complete());
        let mut rest = echo_all();
        rest.retain(|(k, _)| k != "MaxConnections");
        assert_eq!(n.handle(&rest).unwrap(), TextPairs::new());
        assert!(n.is_complete());
    }

    #[test]
    fn target_offers_answered_by_result_function() {
        let mut n = Negotiator::new(Proposal::default(), true, SessionType::Discovery);
        n.offer();
        let response = kv(&[
            ("HeaderDigest", "None"),
            ("DataDigest", "None"),
            ("DefaultTime2Wait", "5"),
            ("DefaultTime2Retain", "0"),
            ("ErrorRecoveryLevel", "1"),
            ("MaxConnections", "8"),
            ("ImmediateData", "No"),
        ]);
        let reply = n.handle(&response).unwrap();
        assert_eq!(
            reply,
            kv(&[
                ("DefaultTime2Wait", "5"),
                ("DefaultTime2Retain", "0"),
                ("ErrorRecoveryLevel", "0"),
                ("MaxConnections", "Irrelevant"),
                ("ImmediateData", "Irrelevant"),
            ])
        );
        let r = n.result();
        assert_eq!((r.default_time2wait, r.default_time2retain, r.error_recovery_level), (5, 0, 0));
        assert_eq!(r.max_connections, 1);
        assert!(r.immediate_data);
    }

    #[test]
    fn target_offers_of_each_function() {
        let p = Proposal { immediate_data: true, initial_r2t: false, ..Proposal::default() };
        let mut n = Negotiator::new(p, true, SessionType::Normal);
        // Nothing offered yet: everything the target sends is its offer.
        let reply = n
            .handle(&kv(&[
                ("ImmediateData", "No"),
                ("InitialR2T", "Yes"),
                ("MaxBurstLength", "65536"),
                ("FirstBurstLength", "1048576"),
                ("HeaderDigest", "CRC32C,None"),
                ("DataPDUInOrder", "No"),
            ]))
            .unwrap();
        assert_eq!(
            reply,
            kv(&[
                ("ImmediateData", "No"),
                ("InitialR2T", "Yes"),
                ("MaxBurstLength", "65536"),
                ("FirstBurstLength", "262144"),
                ("HeaderDigest", "None"),
                ("DataPDUInOrder", "Yes"),
            ])
        );
        let r = n.result();
        assert!(!r.immediate_data && r.initial_r2t && r.data_pdu_in_order);
        assert_eq!(r.max_burst_length, 65_536);
        // Clamped to MaxBurstLength in the result.
        assert_eq!(r.first_burst_length, 65_536);
    }

    #[test]
    fn target_offer_invalid_is_rejected_with_default() {
        let mut n = Negotiator::new(Proposal::default(), true, SessionType::Discovery);
        assert_eq!(one(&mut n, "DefaultTime2Wait", "9999").unwrap(), kv(&[("DefaultTime2Wait", "Reject")]));
        assert_eq!(n.result().default_time2wait, 2);
        assert_eq!(one(&mut n, "DataDigest", "MD5").unwrap(), kv(&[("DataDigest", "Reject")]));
        // A digest we must have, offered away by the target.
        let p = Proposal { header_digest: vec![Digest::Crc32c], ..Proposal::default() };
        let mut n = Negotiator::new(p, true, SessionType::Normal);
        assert_eq!(one(&mut n, "HeaderDigest", "None"), Err(NegotiationError::Rejected("HeaderDigest".into())));
    }

    #[test]
    fn unknown_keys_not_understood() {
        let mut n = leading();
        let reply =
            n.handle(&kv(&[("X-com.example.Foo", "1"), ("FancyNewKey", "Yes"), ("X-other", "NotUnderstood")])).unwrap();
        assert_eq!(reply, kv(&[("X-com.example.Foo", "NotUnderstood"), ("FancyNewKey", "NotUnderstood")]));
    }

    #[test]
    fn numeric_minimum_rules() {
        let mut n = leading();
        assert!(one(&mut n, "MaxBurstLength", "65536").is_ok());
        assert_eq!(n.result().max_burst_length, 65_536);
        assert_eq!(
            one(&mut n, "MaxOutstandingR2T", "17"),
            Err(NegotiationError::NotOffered { key: "MaxOutstandingR2T".into(), value: "17".into() })
        );
        let mut n = with(Proposal { max_connections: 8, ..Proposal::default() });
        assert_eq!(
            one(&mut n, "MaxConnections", "9"),
            Err(NegotiationError::NotOffered { key: "MaxConnections".into(), value: "9".into() })
        );
        for (key, bad) in [
            ("MaxConnections", "0"),
            ("MaxBurstLength", "511"),
            ("FirstBurstLength", "16777216"),
            ("ErrorRecoveryLevel", "3"),
            ("DefaultTime2Retain", "3601"),
            ("MaxOutstandingR2T", "0"),
            ("MaxBurstLength", "+4096"),
            ("MaxBurstLength", "4 096"),
            ("MaxBurstLength", "lots"),
            ("MaxBurstLength", ""),
            ("MaxBurstLength", "99999999999999999999999"),
        ] {
            let mut n = with(Proposal { max_connections: 8, error_recovery_level: 2, ..Proposal::default() });
            assert_eq!(
                one(&mut n, key, bad),
                Err(NegotiationError::InvalidValue { key: key.into(), value: bad.into() }),
                "{key}={bad}"
            );
        }
    }

    #[test]
    fn numeric_hex_accepted() {
        let mut n = leading();
        one(&mut n, "MaxBurstLength", "0x10000").unwrap();
        assert_eq!(n.result().max_burst_length, 65_536);
    }

    #[test]
    fn numeric_maximum_rule() {
        let mut n = with(Proposal { default_time2wait: 5, ..Proposal::default() });
        assert_eq!(
            one(&mut n, "DefaultTime2Wait", "4"),
            Err(NegotiationError::NotOffered { key: "DefaultTime2Wait".into(), value: "4".into() })
        );
        let mut n = with(Proposal { default_time2wait: 5, ..Proposal::default() });
        one(&mut n, "DefaultTime2Wait", "10").unwrap();
        assert_eq!(n.result().default_time2wait, 10);
    }

    #[test]
    fn boolean_or_rule() {
        let mut n = leading();
        assert_eq!(
            one(&mut n, "DataPDUInOrder", "No"),
            Err(NegotiationError::NotOffered { key: "DataPDUInOrder".into(), value: "No".into() })
        );
        let mut n = leading();
        assert_eq!(
            one(&mut n, "DataSequenceInOrder", "No"),
            Err(NegotiationError::NotOffered { key: "DataSequenceInOrder".into(), value: "No".into() })
        );
        // We offered InitialR2T=No: either answer is fine.
        let mut n = leading();
        one(&mut n, "InitialR2T", "Yes").unwrap();
        assert!(n.result().initial_r2t);
        let mut n = leading();
        one(&mut n, "InitialR2T", "No").unwrap();
        assert!(!n.result().initial_r2t);
        let mut n = leading();
        assert_eq!(
            one(&mut n, "InitialR2T", "yes"),
            Err(NegotiationError::InvalidValue { key: "InitialR2T".into(), value: "yes".into() })
        );
    }

    #[test]
    fn boolean_and_rule() {
        let mut n = with(Proposal { immediate_data: false, ..Proposal::default() });
        assert_eq!(
            one(&mut n, "ImmediateData", "Yes"),
            Err(NegotiationError::NotOffered { key: "ImmediateData".into(), value: "Yes".into() })
        );
        let mut n = leading();
        one(&mut n, "ImmediateData", "No").unwrap();
        assert!(!n.result().immediate_data);
    }

    #[test]
    fn digest_list_rule() {
        let p = Proposal { header_digest: vec![Digest::Crc32c, Digest::None], ..Proposal::default() };
        let mut n = with(p.clone());
        one(&mut n, "HeaderDigest", "CRC32C").unwrap();
        assert_eq!(n.result().header_digest, Digest::Crc32c);
        let mut n = with(p);
        assert_eq!(
            one(&mut n, "HeaderDigest", "CRC32C,None"),
            Err(NegotiationError::InvalidValue { key: "HeaderDigest".into(), value: "CRC32C,None".into() })
        );
        let mut n = leading();
        assert_eq!(
            one(&mut n, "DataDigest", "CRC32C"),
            Err(NegotiationError::NotOffered { key: "DataDigest".into(), value: "CRC32C".into() })
        );
    }

    #[test]
    fn reject_irrelevant_not_understood_keep_defaults() {
        let mut n = leading();
        let mut response = echo_all();
        for (k, v) in response.iter_mut() {
            match k.as_str() {
                "MaxBurstLength" => *v = "Reject".into(),
                "InitialR2T" => *v = "Irrelevant".into(),
                "FirstBurstLength" => *v = "NotUnderstood".into(),
                "HeaderDigest" => *v = "Reject".into(),
                _ => {}
            }
        }
        assert_eq!(n.handle(&response).unwrap(), TextPairs::new());
        assert!(n.is_complete());
        let r = n.result();
        assert_eq!(r.max_burst_length, 262_144);
        assert!(r.initial_r2t);
        assert_eq!(r.first_burst_length, 65_536);
        assert_eq!(r.header_digest, Digest::None);
    }

    #[test]
    fn required_value_lost_is_rejected() {
        let mut n = with(Proposal { header_digest: vec![Digest::Crc32c], ..Proposal::default() });
        assert_eq!(one(&mut n, "HeaderDigest", "Reject"), Err(NegotiationError::Rejected("HeaderDigest".into())));
        let mut n = with(Proposal { immediate_data: false, ..Proposal::default() });
        assert_eq!(
            one(&mut n, "ImmediateData", "NotUnderstood"),
            Err(NegotiationError::Rejected("ImmediateData".into()))
        );
        let mut n = with(Proposal { max_burst_length: 4096, first_burst_length: 4096, ..Proposal::default() });
        assert_eq!(one(&mut n, "MaxBurstLength", "Reject"), Err(NegotiationError::Rejected("MaxBurstLength".into())));
    }

    #[test]
    fn declarative_target_keys() {
        let mut n = leading();
        let reply = n
            .handle(&kv(&[
                ("MaxRecvDataSegmentLength", "16777215"),
                ("TargetAlias", "lab disk"),
                ("TargetPortalGroupTag", "65535"),
                ("TargetAddress", "10.0.0.1:3260,1"),
            ]))
            .unwrap();
        assert_eq!(reply, TextPairs::new());
        let r = n.result();
        assert_eq!(r.max_xmit_data_segment_length, 16_777_215);
        assert_eq!(r.target_alias.as_deref(), Some("lab disk"));
        assert_eq!(r.target_portal_group_tag, Some(65_535));
        assert!(!n.is_complete());
        for (key, bad) in [
            ("MaxRecvDataSegmentLength", "511"),
            ("MaxRecvDataSegmentLength", "16777216"),
            ("MaxRecvDataSegmentLength", "big"),
            ("TargetPortalGroupTag", "65536"),
            ("TargetPortalGroupTag", "-1"),
        ] {
            let mut n = leading();
            assert_eq!(
                one(&mut n, key, bad),
                Err(NegotiationError::InvalidValue { key: key.into(), value: bad.into() }),
                "{key}={bad}"
            );
        }
    }

    #[test]
    fn repeated_keys_refused() {
        let mut n = leading();
        assert_eq!(
            n.handle(&kv(&[("MaxBurstLength", "65536"), ("MaxBurstLength", "65536")])),
            Err(NegotiationError::Repeated("MaxBurstLength".into()))
        );
        let mut n = leading();
        one(&mut n, "MaxRecvDataSegmentLength", "8192").unwrap();
        assert_eq!(
            one(&mut n, "MaxRecvDataSegmentLength", "8192"),
            Err(NegotiationError::Repeated("MaxRecvDataSegmentLength".into()))
        );
        let mut n = leading();
        one(&mut n, "X-vendor", "1").unwrap();
        assert_eq!(one(&mut n, "X-vendor", "1"), Err(NegotiationError::Repeated("X-vendor".into())));
    }

    #[test]
    fn security_keys_out_of_turn() {
        for key in ["AuthMethod", "CHAP_A", "CHAP_C", "CHAP_R", "SRP_U", "InitiatorName", "SessionType"] {
            let mut n = leading();
            assert_eq!(one(&mut n, key, "x"), Err(NegotiationError::OutOfTurn(key.into())), "{key}");
        }
    }

    #[test]
    fn first_burst_never_exceeds_max_burst() {
        let mut n = leading();
        n.handle(&kv(&[("FirstBurstLength", "262144"), ("MaxBurstLength", "65536")])).unwrap();
        assert_eq!(n.result().max_burst_length, 65_536);
        assert_eq!(n.result().first_burst_length, 65_536);
    }

    #[test]
    fn complete_only_when_all_answered() {
        let mut n = leading();
        let all = echo_all();
        let (first, second) = all.split_at(6);
        n.handle(&first.to_vec()).unwrap();
        assert!(!n.is_complete());
        n.handle(&second.to_vec()).unwrap();
        assert!(n.is_complete());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod prop {
    use super::*;
    use proptest::prelude::*;

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(Key::ALL.iter().map(|k| k.name().to_owned()).collect::<Vec<_>>()),
            Just("MaxRecvDataSegmentLength".to_owned()),
            Just("TargetPortalGroupTag".to_owned()),
            Just("TargetAlias".to_owned()),
            "[A-Za-z-]{1,12}",
        ]
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            "[0-9]{1,25}",
            "0x[0-9a-fA-F]{0,20}",
            proptest::sample::select(vec![
                "Yes",
                "No",
                "None",
                "CRC32C",
                "CRC32C,None",
                "Reject",
                "Irrelevant",
                "NotUnderstood",
            ])
            .prop_map(str::to_owned),
            ".{0,16}",
        ]
    }

    proptest! {
        /// Whatever the target sends, handle() returns (never panics), and
        /// the result keeps FirstBurstLength within MaxBurstLength.
        #[test]
        fn handle_never_panics(
            leading in any::<bool>(),
            discovery in any::<bool>(),
            offer_first in any::<bool>(),
            rounds in proptest::collection::vec(proptest::collection::vec((key(), value()), 0..8), 1..4),
        ) {
            let st = if discovery { SessionType::Discovery } else { SessionType::Normal };
            let mut n = Negotiator::new(Proposal::default(), leading, st);
            if offer_first {
                n.offer();
            }
            for round in rounds {
                if n.handle(&round).is_err() {
                    break;
                }
                let r = n.result();
                prop_assert!(r.first_burst_length <= r.max_burst_length);
            }
        }
    }
}
