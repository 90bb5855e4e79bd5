//! The initiator's error type: one variant per cause a user can act on.

use std::fmt;

use iscsi_proto::chap::ChapError;
use iscsi_proto::negotiation::NegotiationError;
use iscsi_proto::pdu::PduError;
use iscsi_proto::scsi::sense::ScsiError;
use iscsi_proto::text::TextError;

/// Login status class and detail (RFC 7143 §11.13.5), shown in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginStatus {
    pub class: u8,
    pub detail: u8,
}

impl LoginStatus {
    /// The RFC 7143 §11.13.5 wording of this status.
    pub fn description(&self) -> &'static str {
        match (self.class, self.detail) {
            (0, 0) => "success",
            (1, 1) => "target moved temporarily",
            (1, 2) => "target moved permanently",
            (1, _) => "target redirected",
            (2, 0) => "initiator error",
            (2, 1) => "authentication failed",
            (2, 2) => "authorization failed",
            (2, 3) => "target not found",
            (2, 4) => "target removed",
            (2, 5) => "unsupported iSCSI version",
            (2, 6) => "too many connections",
            (2, 7) => "missing parameter",
            (2, 8) => "cannot include this connection in the session",
            (2, 9) => "session type not supported",
            (2, 10) => "session does not exist",
            (2, 11) => "invalid request during login",
            (2, _) => "initiator error",
            (3, 0) => "target error",
            (3, 1) => "target service unavailable",
            (3, 2) => "target out of resources",
            (3, _) => "target error",
            _ => "unknown login status",
        }
    }
}

impl LoginStatus {
    /// What to do about this status, where there is something to say.
    fn advice(&self) -> Option<&'static str> {
        match (self.class, self.detail) {
            (2, 1) => Some("check the CHAP user and secret"),
            (2, 2) => Some("the target does not allow this initiator name"),
            _ => None,
        }
    }
}

/// The words, then the codes: `authentication failed: check the CHAP user
/// and secret (status class 0x02, detail 0x01)`.
impl fmt::Display for LoginStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())?;
        if let Some(advice) = self.advice() {
            write!(f, ": {advice}")?;
        }
        write!(f, " (status class 0x{:02x}, detail 0x{:02x})", self.class, self.detail)
    }
}

/// Everything that can go wrong between this initiator and a target.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid address {0:?}: expected HOST[:PORT] or [IPv6][:PORT]")]
    InvalidAddress(String),
    #[error("cannot resolve {addr}: {source}")]
    Resolve { addr: String, source: std::io::Error },
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("connecting to {0} timed out")]
    ConnectTimeout(String),
    #[error("I/O error on the connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed PDU from the target: {0}")]
    Pdu(#[from] PduError),
    #[error("malformed text from the target: {0}")]
    Text(#[from] TextError),
    #[error("parameter negotiation failed: {0}")]
    Negotiation(#[from] NegotiationError),
    #[error("authentication failed: {0}")]
    Chap(#[from] ChapError),
    #[error("login to {target} failed: {status}")]
    Login { target: String, status: LoginStatus },
    #[error("authentication failed: the target requires CHAP but no CHAP user was given")]
    ChapRequired,
    #[error("authentication failed: the target does not offer CHAP, which was required")]
    ChapRefused,
    #[error("target redirected the login to {0}")]
    Redirected(crate::portal::PortalAddr),
    #[error("the target redirected the login more than {0} times (a redirect loop?)")]
    TooManyRedirects(usize),
    #[error("target broke the iSCSI protocol: {0}")]
    Protocol(String),
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    #[error("timed out waiting for {0}")]
    Timeout(String),
    #[error("command rejected by the target: {0}")]
    Rejected(String),
    #[error("target failed the command (iSCSI response 0x{0:02x})")]
    TargetFailure(u8),
    #[error("{0}")]
    Scsi(#[from] ScsiError),
    #[error("target {0} not found on the portal")]
    TargetNotFound(String),
    #[error("LUN {lun} does not exist (the target reports {available})")]
    LunNotFound { lun: u64, available: String },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("the session is closed")]
    SessionClosed,
    #[error("the target allows {limit} connection(s) in this session (MaxConnections)")]
    TooManyConnections { limit: u16 },
    #[error("no connection {0} in this session")]
    InvalidConnectionId(String),
    #[error("the last connection of a session cannot be removed (log the session out instead)")]
    CantRemoveLastConnection,
    #[error("the leading connection of a session cannot be removed")]
    CannotRemoveLeadingConnection,
    #[error("the connection is already being removed")]
    RemoveConnectionInProgress,
    #[error("the target refused the logout: {description} (response {response})")]
    LogoutRefused { response: u8, description: &'static str },
    #[error("this needs ErrorRecoveryLevel 2; the session negotiated {negotiated}")]
    RecoveryLevelTooLow { negotiated: u8 },
    /// Recovery gave up on the command within its budget
    /// (`SessionConfig::recovery_budget`); names the fault that started it.
    #[error("{0}")]
    GaveUp(Box<crate::session::GiveUp>),
    /// The connection asked for IPsec and did not get it; it was never
    /// made in clear text (RFC 7143 §9.3).
    #[error("{0}")]
    Ipsec(#[from] crate::ipsec::IpsecError),
}

/// What kind of failure an error is, for a caller that must tell them apart
/// without reading the words (the CLI's exit status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// CHAP failed or was refused, or the target did not authorize us.
    Authentication,
    /// The target refused what we asked (login status, Reject, a missing
    /// target) or broke the protocol.
    Refused,
    /// The target could not be reached, went away or did not answer in time.
    Unreachable,
    /// Anything else: SCSI errors, bad arguments, local state.
    Other,
}

impl Error {
    /// The class of this error (see [`ErrorClass`]).
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Chap(_) | Error::ChapRequired | Error::ChapRefused => ErrorClass::Authentication,
            Error::Login { status, .. } if status.class == 2 && matches!(status.detail, 1 | 2) => {
                ErrorClass::Authentication
            }
            Error::Login { .. }
            | Error::Pdu(_)
            | Error::Text(_)
            | Error::Negotiation(_)
            | Error::Redirected(_)
            | Error::TooManyRedirects(_)
            | Error::Protocol(_)
            | Error::Rejected(_)
            | Error::TargetNotFound(_)
            | Error::TooManyConnections { .. }
            | Error::LogoutRefused { .. } => ErrorClass::Refused,
            // What the target does again and again is a refusal, the rest
            // (cuts, silence, a shut window) is not reaching it.
            Error::GaveUp(g) if g.cause.kind.deterministic() => ErrorClass::Refused,
            Error::Resolve { .. }
            | Error::Connect { .. }
            | Error::ConnectTimeout(_)
            | Error::Io(_)
            | Error::ConnectionLost(_)
            | Error::Timeout(_)
            | Error::GaveUp(_) => ErrorClass::Unreachable,
            _ => ErrorClass::Other,
        }
    }
}

impl Error {
    pub(crate) fn protocol(msg: impl Into<String>) -> Self {
        Error::Protocol(msg.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The one place where initiator errors become Windows ISDSC status codes
/// (the management model's `Status`).
impl From<Error> for crate::model::Status {
    fn from(e: Error) -> Self {
        use crate::model::{IsdscCode as C, Status};
        let code = match &e {
            Error::InvalidAddress(_) => C::InvalidHost,
            Error::Resolve { .. } => C::DnsNameUnresolved,
            Error::Connect { .. } | Error::ConnectTimeout(_) => C::ConnectionFailed,
            // A socket that failed under us: the connection failed (the
            // transport error code stays for what the target sent wrong).
            Error::Io(_) => C::ConnectionFailed,
            Error::Pdu(_) | Error::Text(_) | Error::Protocol(_) => C::TransportError,
            Error::Negotiation(_) => C::LoginFailed,
            Error::Chap(_) | Error::ChapRequired | Error::ChapRefused => C::AuthenticationFailure,
            Error::Login { status, .. } => {
                return Status::from_login_status(status.class, status.detail)
                    .map(|s| Status::new(s.code, e.to_string()))
                    .unwrap_or_else(|| Status::new(C::LoginFailed, e.to_string()));
            }
            Error::Redirected(_) => C::TargetMovedTemporarily,
            Error::TooManyRedirects(_) => C::LoginFailed,
            Error::ConnectionLost(_) | Error::Timeout(_) => C::ConnectionFailed,
            Error::Rejected(_) | Error::TargetFailure(_) | Error::Scsi(_) => C::ScsiRequestFailed,
            Error::TargetNotFound(_) => C::TargetNotFound,
            Error::LunNotFound { .. } => C::InvalidParameter,
            Error::InvalidArgument(_) => C::InvalidParameter,
            Error::SessionClosed => C::InvalidSessionId,
            Error::TooManyConnections { .. } => C::TooManyConnections,
            Error::InvalidConnectionId(_) => C::InvalidConnectionId,
            Error::CantRemoveLastConnection => C::CantRemoveLastConnection,
            Error::CannotRemoveLeadingConnection => C::CannotRemoveLeadingConnection,
            Error::RemoveConnectionInProgress => C::RemoveConnectionInProgress,
            Error::LogoutRefused { .. } => C::TargetError,
            Error::RecoveryLevelTooLow { .. } => C::RequestNotSupported,
            Error::GaveUp(g) if g.cause.kind.deterministic() => C::TransportError,
            Error::GaveUp(_) => C::ConnectionFailed,
            Error::Ipsec(i) => i.code(),
        };
        Status::new(code, e.to_string())
    }
}

impl crate::model::IsdscCode {
    /// The class of a status code, as [`Error::class`] gives it for the
    /// errors the code is made from (`impl From<Error> for Status` above),
    /// for a caller that only has the code (the management model's answer).
    pub fn class(self) -> ErrorClass {
        use crate::model::IsdscCode as C;
        match self {
            C::AuthenticationFailure | C::AuthorizationFailure => ErrorClass::Authentication,
            C::ConnectionFailed | C::DnsNameUnresolved | C::SendFailed | C::NoConnectionAvailable => {
                ErrorClass::Unreachable
            }
            // TransportError: a malformed PDU or a broken rule (a failed
            // socket is ConnectionFailed).
            C::TransportError
            | C::LoginFailed
            | C::TargetMovedTemporarily
            | C::TargetMovedPermanently
            | C::InitiatorError
            | C::NotFound
            | C::TargetNotFound
            | C::TargetRemoved
            | C::UnsupportedVersion
            | C::TooManyConnections
            | C::MissingParameter
            | C::CantIncludeInSession
            | C::SessionTypeNotSupported
            | C::TargetError
            | C::ServiceUnavailable
            | C::OutOfResources
            | C::TargetOutOfResources
            | C::RequestNotSupported => ErrorClass::Refused,
            _ => ErrorClass::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{IsdscCode, Status};
    use crate::session::{ConnectionFault, FaultKind, GiveUp, GiveUpWhy};

    fn gave_up(kind: FaultKind) -> Error {
        let cause = ConnectionFault::new(kind, "x");
        Error::GaveUp(Box::new(GiveUp { cause, why: GiveUpWhy::SameFault { reinstated: 1 } }))
    }

    #[test]
    fn each_error_has_the_class_a_caller_acts_on() {
        let auth = Error::Login { target: "t".into(), status: LoginStatus { class: 2, detail: 1 } };
        assert_eq!(auth.class(), ErrorClass::Authentication);
        assert_eq!(Error::ChapRequired.class(), ErrorClass::Authentication);
        let missing = Error::Login { target: "t".into(), status: LoginStatus { class: 2, detail: 3 } };
        assert_eq!(missing.class(), ErrorClass::Refused);
        assert_eq!(Error::protocol("StatSN jumped").class(), ErrorClass::Refused);
        assert_eq!(gave_up(FaultKind::Violation).class(), ErrorClass::Refused);
        assert_eq!(gave_up(FaultKind::Malformed).class(), ErrorClass::Refused);
        for kind in [FaultKind::Closed, FaultKind::Transport, FaultKind::Silent, FaultKind::WindowClosed] {
            assert_eq!(gave_up(kind).class(), ErrorClass::Unreachable, "{kind:?}");
        }
        assert_eq!(Error::ConnectTimeout("h".into()).class(), ErrorClass::Unreachable);
        assert_eq!(Error::InvalidAddress("h".into()).class(), ErrorClass::Other);
        assert_eq!(Error::SessionClosed.class(), ErrorClass::Other);
    }

    #[test]
    fn authentication_and_authorization_failures_say_what_to_check() {
        let login =
            |detail| Error::Login { target: "iqn.2024-01.x:t".into(), status: LoginStatus { class: 2, detail } };
        assert_eq!(
            login(1).to_string(),
            "login to iqn.2024-01.x:t failed: authentication failed: check the CHAP user and secret \
             (status class 0x02, detail 0x01)"
        );
        assert_eq!(
            login(2).to_string(),
            "login to iqn.2024-01.x:t failed: authorization failed: the target does not allow this initiator name \
             (status class 0x02, detail 0x02)"
        );
        assert_eq!(
            login(3).to_string(),
            "login to iqn.2024-01.x:t failed: target not found (status class 0x02, detail 0x03)"
        );
    }

    #[test]
    fn a_status_code_has_the_class_of_the_errors_it_is_made_from() {
        let login = |class, detail| Error::Login { target: "t".into(), status: LoginStatus { class, detail } };
        for e in [
            Error::ChapRequired,
            login(2, 1),
            login(2, 2),
            login(2, 3),
            login(2, 6),
            login(3, 1),
            Error::Protocol("p".into()),
            Error::ConnectionLost("c".into()),
            Error::Timeout("t".into()),
            Error::ConnectTimeout("h".into()),
            Error::TooManyConnections { limit: 1 },
            Error::LunNotFound { lun: 1, available: "LUN 0".into() },
            gave_up(FaultKind::Violation),
            gave_up(FaultKind::Silent),
        ] {
            let class = e.class();
            let code = Status::from(e).code;
            assert_eq!(code.class(), class, "{code:?}");
        }
    }

    #[test]
    fn a_give_up_keeps_its_words_and_gets_the_code_of_its_cause() {
        let s = Status::from(gave_up(FaultKind::Violation));
        assert_eq!(s.code, IsdscCode::TransportError);
        assert_eq!(s.message, "target broke the iSCSI protocol: x (same fault on 1 reinstated connection; gave up)");
        assert_eq!(Status::from(gave_up(FaultKind::Silent)).code, IsdscCode::ConnectionFailed);
        let io = Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(Status::from(io).code, IsdscCode::ConnectionFailed);
    }
}
