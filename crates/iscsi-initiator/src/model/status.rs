//! Windows iSCSI status codes (`iscsierr.h`, `ISDSC_STATUS`) and the error
//! type the management model returns.
//!
//! Layout of a code: Sev(2) C(1) R(1) Facility(12) Code(16). Errors are
//! `0xEFFFxxxx` (severity 3, customer bit, facility 0xFFF); the three
//! warnings are `0xAFFFxxxx` (severity 2).

use std::fmt;

macro_rules! isdsc_codes {
    ($($(#[$doc:meta])* $variant:ident = $value:literal, $name:literal, $desc:literal;)*) => {
        /// An `ISDSC_*` status code with its exact Windows value.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u32)]
        pub enum IsdscCode {
            $($(#[$doc])* #[doc = concat!("`", $name, "`: ", $desc, ".")] $variant = $value,)*
        }

        impl IsdscCode {
            /// Every code, in numeric order.
            pub const ALL: &'static [IsdscCode] = &[$(IsdscCode::$variant,)*];

            /// The Windows name, spelled as in `iscsierr.h` (typos included).
            pub const fn name(self) -> &'static str {
                match self {
                    $(IsdscCode::$variant => $name,)*
                }
            }

            /// A short English description.
            pub const fn description(self) -> &'static str {
                match self {
                    $(IsdscCode::$variant => $desc,)*
                }
            }

            /// The code for a Windows value; `None` for values that are not
            /// `ISDSC_*` codes (such as plain Win32 errors).
            pub const fn from_u32(value: u32) -> Option<Self> {
                match value {
                    $($value => Some(IsdscCode::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

isdsc_codes! {
    NonSpecificError = 0xEFFF0001, "ISDSC_NON_SPECIFIC_ERROR", "unspecified failure";
    LoginFailed = 0xEFFF0002, "ISDSC_LOGIN_FAILED", "login failed";
    ConnectionFailed = 0xEFFF0003, "ISDSC_CONNECTION_FAILED", "connection failed";
    InitiatorNodeAlreadyExists = 0xEFFF0004, "ISDSC_INITIATOR_NODE_ALREADY_EXISTS", "initiator node already exists";
    InitiatorNodeNotFound = 0xEFFF0005, "ISDSC_INITIATOR_NODE_NOT_FOUND", "initiator node not found";
    TargetMovedTemporarily = 0xEFFF0006, "ISDSC_TARGET_MOVED_TEMPORARILY", "target moved temporarily";
    TargetMovedPermanently = 0xEFFF0007, "ISDSC_TARGET_MOVED_PERMANENTLY", "target moved permanently";
    InitiatorError = 0xEFFF0008, "ISDSC_INITIATOR_ERROR", "initiator error";
    AuthenticationFailure = 0xEFFF0009, "ISDSC_AUTHENTICATION_FAILURE", "authentication failed";
    AuthorizationFailure = 0xEFFF000A, "ISDSC_AUTHORIZATION_FAILURE", "not authorized to access the target";
    NotFound = 0xEFFF000B, "ISDSC_NOT_FOUND", "not found";
    TargetRemoved = 0xEFFF000C, "ISDSC_TARGET_REMOVED", "target removed";
    UnsupportedVersion = 0xEFFF000D, "ISDSC_UNSUPPORTED_VERSION", "unsupported iSCSI version";
    TooManyConnections = 0xEFFF000E, "ISDSC_TOO_MANY_CONNECTIONS", "too many connections";
    MissingParameter = 0xEFFF000F, "ISDSC_MISSING_PARAMETER", "missing parameter";
    CantIncludeInSession = 0xEFFF0010, "ISDSC_CANT_INCLUDE_IN_SESSION", "connection cannot be included in the session";
    SessionTypeNotSupported = 0xEFFF0011, "ISDSC_SESSION_TYPE_NOT_SUPPORTED", "session type not supported";
    TargetError = 0xEFFF0012, "ISDSC_TARGET_ERROR", "target error";
    ServiceUnavailable = 0xEFFF0013, "ISDSC_SERVICE_UNAVAILABLE", "target service unavailable";
    OutOfResources = 0xEFFF0014, "ISDSC_OUT_OF_RESOURCES", "out of resources";
    ConnectionAlreadyExists = 0xEFFF0015, "ISDSC_CONNECTION_ALREADY_EXISTS", "connections already exist on the initiator node";
    SessionAlreadyExists = 0xEFFF0016, "ISDSC_SESSION_ALREADY_EXISTS", "session already exists";
    InitiatorInstanceNotFound = 0xEFFF0017, "ISDSC_INITIATOR_INSTANCE_NOT_FOUND", "initiator instance not found";
    TargetAlreadyExists = 0xEFFF0018, "ISDSC_TARGET_ALREADY_EXISTS", "target already exists";
    DriverBug = 0xEFFF0019, "ISDSC_DRIVER_BUG", "the driver did not complete an operation correctly";
    InvalidTextKey = 0xEFFF001A, "ISDSC_INVALID_TEXT_KEY", "invalid text key";
    InvalidSendtargetsText = 0xEFFF001B, "ISDSC_INVALID_SENDTARGETS_TEXT", "invalid SendTargets response";
    InvalidSessionId = 0xEFFF001C, "ISDSC_INVALID_SESSION_ID", "invalid session id";
    ScsiRequestFailed = 0xEFFF001D, "ISDSC_SCSI_REQUEST_FAILED", "SCSI request failed";
    TooManySessions = 0xEFFF001E, "ISDSC_TOO_MANY_SESSIONS", "too many sessions";
    SessionBusy = 0xEFFF001F, "ISDSC_SESSION_BUSY", "a request is already in progress on the session";
    TargetMappingUnavailable = 0xEFFF0020, "ISDSC_TARGET_MAPPING_UNAVAILABLE", "target mapping unavailable";
    AddressTypeNotSupported = 0xEFFF0021, "ISDSC_ADDRESS_TYPE_NOT_SUPPORTED", "address type not supported";
    LogonFailed = 0xEFFF0022, "ISDSC_LOGON_FAILED", "logon failed";
    SendFailed = 0xEFFF0023, "ISDSC_SEND_FAILED", "TCP send failed";
    TransportError = 0xEFFF0024, "ISDSC_TRANSPORT_ERROR", "TCP transport error";
    VersionMismatch = 0xEFFF0025, "ISDSC_VERSION_MISMATCH", "iSCSI version mismatch";
    TargetMappingOutOfRange = 0xEFFF0026, "ISDSC_TARGET_MAPPING_OUT_OF_RANGE", "target mapping address out of the adapter's range";
    TargetPresharedkeyUnavailable = 0xEFFF0027, "ISDSC_TARGET_PRESHAREDKEY_UNAVAILABLE", "no preshared key or IKE id for the target";
    TargetAuthinfoUnavailable = 0xEFFF0028, "ISDSC_TARGET_AUTHINFO_UNAVAILABLE", "no authentication information for the target";
    TargetNotFound = 0xEFFF0029, "ISDSC_TARGET_NOT_FOUND", "target not found or hidden from login";
    LoginUserInfoBad = 0xEFFF002A, "ISDSC_LOGIN_USER_INFO_BAD", "bad login parameter";
    TargetMappingExists = 0xEFFF002B, "ISDSC_TARGET_MAPPING_EXISTS", "target mapping already exists";
    HbaSecurityCacheFull = 0xEFFF002C, "ISDSC_HBA_SECURITY_CACHE_FULL", "HBA security cache full";
    InvalidPortNumber = 0xEFFF002D, "ISDSC_INVALID_PORT_NUMBER", "port number not valid for the initiator";
    /// A warning, not an error.
    OperationNotAllSuccess = 0xAFFF002E, "ISDSC_OPERATION_NOT_ALL_SUCCESS", "the operation failed for some initiators or discovery methods";
    HbaSecurityCacheNotSupported = 0xEFFF002F, "ISDSC_HBA_SECURITY_CACHE_NOT_SUPPORTED", "adapter has no security cache";
    IkeIdPayloadTypeNotSupported = 0xEFFF0030, "ISDSC_IKE_ID_PAYLOAD_TYPE_NOT_SUPPORTED", "IKE id payload type not supported";
    IkeIdPayloadIncorrectSize = 0xEFFF0031, "ISDSC_IKE_ID_PAYLOAD_INCORRECT_SIZE", "IKE id payload has the wrong size";
    TargetPortalAlreadyExists = 0xEFFF0032, "ISDSC_TARGET_PORTAL_ALREADY_EXISTS", "target portal already exists";
    TargetAddressAlreadyExists = 0xEFFF0033, "ISDSC_TARGET_ADDRESS_ALREADY_EXISTS", "target address already exists";
    NoAuthInfoAvailable = 0xEFFF0034, "ISDSC_NO_AUTH_INFO_AVAILABLE", "no IKE authentication information available";
    NoTunnelOuterModeAddress = 0xEFFF0035, "ISDSC_NO_TUNNEL_OUTER_MODE_ADDRESS", "no tunnel outer mode address";
    CacheCorrupted = 0xEFFF0036, "ISDSC_CACHE_CORRUPTED", "authentication or tunnel cache corrupted";
    RequestNotSupported = 0xEFFF0037, "ISDSC_REQUEST_NOT_SUPPORTED", "request not supported";
    /// Windows spells it `RESORCES`.
    TargetOutOfResources = 0xEFFF0038, "ISDSC_TARGET_OUT_OF_RESORCES", "target out of resources";
    ServiceDidNotRespond = 0xEFFF0039, "ISDSC_SERVICE_DID_NOT_RESPOND", "the initiator service did not respond";
    IsnsServerNotFound = 0xEFFF003A, "ISDSC_ISNS_SERVER_NOT_FOUND", "iSNS server not found";
    /// A warning, not an error.
    OperationRequiresReboot = 0xAFFF003B, "ISDSC_OPERATION_REQUIRES_REBOOT", "succeeded, takes effect after a reload or reboot";
    NoPortalSpecified = 0xEFFF003C, "ISDSC_NO_PORTAL_SPECIFIED", "no portal available for login";
    CantRemoveLastConnection = 0xEFFF003D, "ISDSC_CANT_REMOVE_LAST_CONNECTION", "the last connection of a session cannot be removed";
    ServiceNotRunning = 0xEFFF003E, "ISDSC_SERVICE_NOT_RUNNING", "initiator service not running";
    TargetAlreadyLoggedIn = 0xEFFF003F, "ISDSC_TARGET_ALREADY_LOGGED_IN", "target already logged in";
    DeviceBusyOnSession = 0xEFFF0040, "ISDSC_DEVICE_BUSY_ON_SESSION", "a device on the session is in use";
    CouldNotSavePersistentLoginData = 0xEFFF0041, "ISDSC_COULD_NOT_SAVE_PERSISTENT_LOGIN_DATA", "could not save persistent login data";
    CouldNotRemovePersistentLoginData = 0xEFFF0042, "ISDSC_COULD_NOT_REMOVE_PERSISTENT_LOGIN_DATA", "could not remove persistent login data";
    PortalNotFound = 0xEFFF0043, "ISDSC_PORTAL_NOT_FOUND", "portal not found";
    InitiatorNotFound = 0xEFFF0044, "ISDSC_INITIATOR_NOT_FOUND", "initiator name not found";
    DiscoveryMechanismNotFound = 0xEFFF0045, "ISDSC_DISCOVERY_MECHANISM_NOT_FOUND", "discovery mechanism not found";
    IpsecNotSupportedOnOs = 0xEFFF0046, "ISDSC_IPSEC_NOT_SUPPORTED_ON_OS", "IPsec for iSCSI not supported on this system";
    PersistentLoginTimeout = 0xEFFF0047, "ISDSC_PERSISTENT_LOGIN_TIMEOUT", "timed out waiting for persistent logins";
    /// A warning, not an error.
    ShortChapSecret = 0xAFFF0048, "ISDSC_SHORT_CHAP_SECRET", "CHAP secret shorter than 96 bits, usable only with IPsec";
    /// Windows spells it `PEROID`.
    EvaluationPeriodExpired = 0xEFFF0049, "ISDSC_EVALUATION_PEROID_EXPIRED", "evaluation period expired";
    InvalidChapSecret = 0xEFFF004A, "ISDSC_INVALID_CHAP_SECRET", "invalid CHAP secret";
    InvalidTargetChapSecret = 0xEFFF004B, "ISDSC_INVALID_TARGET_CHAP_SECRET", "invalid target CHAP secret (at most 16 bytes, at least 12 without IPsec)";
    InvalidInitiatorChapSecret = 0xEFFF004C, "ISDSC_INVALID_INITIATOR_CHAP_SECRET", "invalid initiator CHAP secret (at most 16 bytes, at least 12 without IPsec)";
    InvalidChapUserName = 0xEFFF004D, "ISDSC_INVALID_CHAP_USER_NAME", "invalid CHAP user name";
    InvalidLogonAuthType = 0xEFFF004E, "ISDSC_INVALID_LOGON_AUTH_TYPE", "invalid logon authentication type";
    InvalidTargetMapping = 0xEFFF004F, "ISDSC_INVALID_TARGET_MAPPING", "invalid target mapping";
    InvalidTargetId = 0xEFFF0050, "ISDSC_INVALID_TARGET_ID", "invalid target id in mapping";
    InvalidIscsiName = 0xEFFF0051, "ISDSC_INVALID_ISCSI_NAME", "invalid iSCSI name";
    IncompatibleIsnsVersion = 0xEFFF0052, "ISDSC_INCOMPATIBLE_ISNS_VERSION", "incompatible iSNS version";
    FailedToConfigureIpsec = 0xEFFF0053, "ISDSC_FAILED_TO_CONFIGURE_IPSEC", "failed to configure IPsec";
    BufferTooSmall = 0xEFFF0054, "ISDSC_BUFFER_TOO_SMALL", "buffer too small";
    InvalidLoadBalancePolicy = 0xEFFF0055, "ISDSC_INVALID_LOAD_BALANCE_POLICY", "invalid load balance policy";
    InvalidParameter = 0xEFFF0056, "ISDSC_INVALID_PARAMETER", "invalid parameter";
    DuplicatePathSpecified = 0xEFFF0057, "ISDSC_DUPLICATE_PATH_SPECIFIED", "duplicate path specified";
    PathCountMismatch = 0xEFFF0058, "ISDSC_PATH_COUNT_MISMATCH", "path count does not match the paths to the target";
    InvalidPathId = 0xEFFF0059, "ISDSC_INVALID_PATH_ID", "invalid path id";
    MultiplePrimaryPathsSpecified = 0xEFFF005A, "ISDSC_MULTIPLE_PRIMARY_PATHS_SPECIFIED", "more than one primary path specified";
    NoPrimaryPathSpecified = 0xEFFF005B, "ISDSC_NO_PRIMARY_PATH_SPECIFIED", "no primary path specified";
    DeviceAlreadyPersistentlyBound = 0xEFFF005C, "ISDSC_DEVICE_ALREADY_PERSISTENTLY_BOUND", "device already persistently bound";
    DeviceNotFound = 0xEFFF005D, "ISDSC_DEVICE_NOT_FOUND", "device not found";
    DeviceNotIscsiOrPersistent = 0xEFFF005E, "ISDSC_DEVICE_NOT_ISCSI_OR_PERSISTENT", "device is not an iSCSI or persistent device";
    DnsNameUnresolved = 0xEFFF005F, "ISDSC_DNS_NAME_UNRESOLVED", "DNS name could not be resolved";
    NoConnectionAvailable = 0xEFFF0060, "ISDSC_NO_CONNECTION_AVAILABLE", "no connection in the session can carry the request";
    LbPolicyNotSupported = 0xEFFF0061, "ISDSC_LB_POLICY_NOT_SUPPORTED", "load balance policy not supported";
    RemoveConnectionInProgress = 0xEFFF0062, "ISDSC_REMOVE_CONNECTION_IN_PROGRESS", "a connection removal is already in progress";
    InvalidConnectionId = 0xEFFF0063, "ISDSC_INVALID_CONNECTION_ID", "invalid connection id";
    CannotRemoveLeadingConnection = 0xEFFF0064, "ISDSC_CANNOT_REMOVE_LEADING_CONNECTION", "the leading connection of a session cannot be removed";
    RestrictedByGroupPolicy = 0xEFFF0065, "ISDSC_RESTRICTED_BY_GROUP_POLICY", "restricted by group policy";
    IsnsFirewallBlocked = 0xEFFF0066, "ISDSC_ISNS_FIREWALL_BLOCKED", "iSNS firewall exception missing";
    FailureToPersistLbPolicy = 0xEFFF0067, "ISDSC_FAILURE_TO_PERSIST_LB_POLICY", "load balance policy could not be persisted";
    InvalidHost = 0xEFFF0068, "ISDSC_INVALID_HOST", "host name cannot be resolved to an IP address";
}

impl IsdscCode {
    /// The Windows numeric value.
    pub const fn as_u32(self) -> u32 {
        self as u32
    }

    /// Severity 2 (`0xAFFF....`): the operation succeeded with a caveat.
    pub const fn is_warning(self) -> bool {
        (self as u32) >> 30 == 2
    }

    /// Maps an RFC 7143 §11.13.5 login status to the code Windows reports.
    /// `None` for class 0 (success).
    ///
    /// Codes 0x06..=0x14 mirror the RFC's status table entry by entry, so
    /// 2/3 "Not found" is `ISDSC_NOT_FOUND` (0x0B), not
    /// `ISDSC_TARGET_NOT_FOUND` (0x29): the latter is the service's own refusal
    /// of a target it has not discovered, before any login PDU is sent.
    /// 2/10 "Session does not exist" (a connection tried to join a session the
    /// target does not know) becomes `ISDSC_INVALID_SESSION_ID`. Unknown
    /// details fall back to the class code; unknown classes and other
    /// redirections to `ISDSC_LOGIN_FAILED`.
    pub const fn from_login_status(class: u8, detail: u8) -> Option<Self> {
        Some(match (class, detail) {
            (0, _) => return None,
            (1, 1) => Self::TargetMovedTemporarily,
            (1, 2) => Self::TargetMovedPermanently,
            (2, 1) => Self::AuthenticationFailure,
            (2, 2) => Self::AuthorizationFailure,
            (2, 3) => Self::NotFound,
            (2, 4) => Self::TargetRemoved,
            (2, 5) => Self::UnsupportedVersion,
            (2, 6) => Self::TooManyConnections,
            (2, 7) => Self::MissingParameter,
            (2, 8) => Self::CantIncludeInSession,
            (2, 9) => Self::SessionTypeNotSupported,
            (2, 10) => Self::InvalidSessionId,
            (2, _) => Self::InitiatorError,
            (3, 1) => Self::ServiceUnavailable,
            (3, 2) => Self::OutOfResources,
            (3, _) => Self::TargetError,
            _ => Self::LoginFailed,
        })
    }
}

impl From<IsdscCode> for u32 {
    fn from(c: IsdscCode) -> u32 {
        c.as_u32()
    }
}

impl fmt::Display for IsdscCode {
    /// `ISDSC_NAME (0xEFFF00NN)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:08X})", self.name(), self.as_u32())
    }
}

/// The management model's error: a Windows code plus a message that says
/// what exactly was wrong. Never put a secret in `message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Status {
    pub code: IsdscCode,
    pub message: String,
}

impl Status {
    pub fn new(code: IsdscCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// A status whose message is the code's own description.
    pub fn from_code(code: IsdscCode) -> Self {
        Self::new(code, code.description())
    }

    /// `ISDSC_INVALID_PARAMETER`, the usual answer to a malformed request.
    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new(IsdscCode::InvalidParameter, message)
    }

    /// The status for a login refused with RFC 7143 §11.13.5 class/detail;
    /// `None` for success.
    pub fn from_login_status(class: u8, detail: u8) -> Option<Self> {
        let code = IsdscCode::from_login_status(class, detail)?;
        Some(Self::new(code, format!("login refused with status class {class} detail {detail}")))
    }

    /// The Windows numeric value of the code.
    pub fn as_u32(&self) -> u32 {
        self.code.as_u32()
    }
}

impl From<IsdscCode> for Status {
    fn from(code: IsdscCode) -> Self {
        Self::from_code(code)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_code_matches_the_table() {
        // (value, name) spot-checks straight from iscsierr.h.
        let table: &[(u32, &str)] = &[
            (0xEFFF0001, "ISDSC_NON_SPECIFIC_ERROR"),
            (0xEFFF0006, "ISDSC_TARGET_MOVED_TEMPORARILY"),
            (0xEFFF0008, "ISDSC_INITIATOR_ERROR"),
            (0xEFFF000B, "ISDSC_NOT_FOUND"),
            (0xEFFF000E, "ISDSC_TOO_MANY_CONNECTIONS"),
            (0xEFFF0012, "ISDSC_TARGET_ERROR"),
            (0xEFFF0014, "ISDSC_OUT_OF_RESOURCES"),
            (0xEFFF001C, "ISDSC_INVALID_SESSION_ID"),
            (0xEFFF0021, "ISDSC_ADDRESS_TYPE_NOT_SUPPORTED"),
            (0xEFFF0029, "ISDSC_TARGET_NOT_FOUND"),
            (0xEFFF002D, "ISDSC_INVALID_PORT_NUMBER"),
            (0xAFFF002E, "ISDSC_OPERATION_NOT_ALL_SUCCESS"),
            (0xEFFF0037, "ISDSC_REQUEST_NOT_SUPPORTED"),
            (0xEFFF0038, "ISDSC_TARGET_OUT_OF_RESORCES"),
            (0xAFFF003B, "ISDSC_OPERATION_REQUIRES_REBOOT"),
            (0xEFFF003D, "ISDSC_CANT_REMOVE_LAST_CONNECTION"),
            (0xEFFF0046, "ISDSC_IPSEC_NOT_SUPPORTED_ON_OS"),
            (0xAFFF0048, "ISDSC_SHORT_CHAP_SECRET"),
            (0xEFFF0049, "ISDSC_EVALUATION_PEROID_EXPIRED"),
            (0xEFFF004A, "ISDSC_INVALID_CHAP_SECRET"),
            (0xEFFF004D, "ISDSC_INVALID_CHAP_USER_NAME"),
            (0xEFFF004E, "ISDSC_INVALID_LOGON_AUTH_TYPE"),
            (0xEFFF0055, "ISDSC_INVALID_LOAD_BALANCE_POLICY"),
            (0xEFFF0056, "ISDSC_INVALID_PARAMETER"),
            (0xEFFF005B, "ISDSC_NO_PRIMARY_PATH_SPECIFIED"),
            (0xEFFF0060, "ISDSC_NO_CONNECTION_AVAILABLE"),
            (0xEFFF0061, "ISDSC_LB_POLICY_NOT_SUPPORTED"),
            (0xEFFF0063, "ISDSC_INVALID_CONNECTION_ID"),
            (0xEFFF0064, "ISDSC_CANNOT_REMOVE_LEADING_CONNECTION"),
            (0xEFFF0068, "ISDSC_INVALID_HOST"),
        ];
        for &(value, name) in table {
            let code = IsdscCode::from_u32(value).unwrap();
            assert_eq!(code.name(), name);
            assert_eq!(code.as_u32(), value);
        }
        assert_eq!(IsdscCode::TooManyConnections as u32, 0xEFFF000E);
        assert_eq!(IsdscCode::InvalidHost as u32, 0xEFFF0068);
    }

    #[test]
    fn the_table_is_complete_and_consistent() {
        // 0x01..=0x68 with no gaps: 104 codes, exactly three of them warnings.
        assert_eq!(IsdscCode::ALL.len(), 0x68);
        for (i, code) in IsdscCode::ALL.iter().enumerate() {
            assert_eq!(code.as_u32() & 0xFFFF, i as u32 + 1, "{}", code.name());
            assert_eq!(IsdscCode::from_u32(code.as_u32()), Some(*code));
            assert!(code.name().starts_with("ISDSC_"));
            assert!(!code.description().is_empty());
            let expected_high = if code.is_warning() { 0xAFFF } else { 0xEFFF };
            assert_eq!(code.as_u32() >> 16, expected_high);
        }
        let warnings: Vec<u32> = IsdscCode::ALL.iter().filter(|c| c.is_warning()).map(|c| c.as_u32()).collect();
        assert_eq!(warnings, vec![0xAFFF002E, 0xAFFF003B, 0xAFFF0048]);
        let names: HashSet<_> = IsdscCode::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), IsdscCode::ALL.len());
    }

    #[test]
    fn unknown_values_are_not_codes() {
        for v in [0, 5, 0xEFFF0000, 0xEFFF0069, 0xEFFF002E, 0xAFFF0001, 0xEFFF0048] {
            assert_eq!(IsdscCode::from_u32(v), None, "{v:#x}");
        }
    }

    #[test]
    fn status_displays_name_hex_and_message() {
        let s = Status::new(IsdscCode::TooManyConnections, "the target allows 8 connections in this session");
        assert_eq!(
            s.to_string(),
            "ISDSC_TOO_MANY_CONNECTIONS (0xEFFF000E): the target allows 8 connections in this session"
        );
        assert_eq!(s.as_u32(), 0xEFFF000E);
        let s = Status::from(IsdscCode::InvalidHost);
        assert_eq!(s.to_string(), "ISDSC_INVALID_HOST (0xEFFF0068): host name cannot be resolved to an IP address");
        assert_eq!(Status::invalid_parameter("x").code, IsdscCode::InvalidParameter);
    }

    #[test]
    fn maps_login_status_classes() {
        use IsdscCode::*;
        let cases = [
            ((1, 1), TargetMovedTemporarily),
            ((1, 2), TargetMovedPermanently),
            ((1, 3), LoginFailed),
            ((2, 0), InitiatorError),
            ((2, 1), AuthenticationFailure),
            ((2, 2), AuthorizationFailure),
            ((2, 3), NotFound),
            ((2, 4), TargetRemoved),
            ((2, 5), UnsupportedVersion),
            ((2, 6), TooManyConnections),
            ((2, 7), MissingParameter),
            ((2, 8), CantIncludeInSession),
            ((2, 9), SessionTypeNotSupported),
            ((2, 10), InvalidSessionId),
            ((2, 11), InitiatorError),
            ((2, 0xff), InitiatorError),
            ((3, 0), TargetError),
            ((3, 1), ServiceUnavailable),
            ((3, 2), OutOfResources),
            ((3, 3), TargetError),
            ((4, 0), LoginFailed),
        ];
        for ((class, detail), code) in cases {
            assert_eq!(IsdscCode::from_login_status(class, detail), Some(code), "{class}/{detail}");
        }
        assert_eq!(IsdscCode::from_login_status(0, 0), None);
        let s = Status::from_login_status(2, 6).unwrap();
        assert_eq!(s.code, TooManyConnections);
        assert!(s.message.contains("class 2 detail 6"));
    }
}
