//! Login options, security flags and target portals as Windows passes them
//! (`ISCSI_LOGIN_OPTIONS`, `ISCSI_SECURITY_FLAGS`, `ISCSI_TARGET_PORTAL`).

use std::net::IpAddr;

use iscsi_proto::chap::Secret;

use super::status::{IsdscCode, Status};
use crate::portal::{DEFAULT_PORT, PortalAddr};

/// Windows `ISCSI_ANY_INITIATOR_PORT`: any initiator port may carry the
/// login or the new connection.
pub const ISCSI_ANY_INITIATOR_PORT: u32 = 0xFFFF_FFFF;
/// Windows `ISCSI_ALL_INITIATOR_PORTS`: apply to every initiator port
/// (portal add/remove/refresh).
pub const ISCSI_ALL_INITIATOR_PORTS: u32 = 0xFFFF_FFFF;

/// Windows `ISCSI_SECURITY_FLAG_VALID`: the other bits mean something.
pub const ISCSI_SECURITY_FLAG_VALID: u64 = 0x01;
/// Windows `ISCSI_SECURITY_FLAG_IKE_IPSEC_ENABLED`: connect with IKE/IPsec.
pub const ISCSI_SECURITY_FLAG_IKE_IPSEC_ENABLED: u64 = 0x02;
/// Windows `ISCSI_SECURITY_FLAG_MAIN_MODE_ENABLED`: IKE main mode.
pub const ISCSI_SECURITY_FLAG_MAIN_MODE_ENABLED: u64 = 0x04;
/// Windows `ISCSI_SECURITY_FLAG_AGGRESSIVE_MODE_ENABLED`: IKE aggressive mode.
pub const ISCSI_SECURITY_FLAG_AGGRESSIVE_MODE_ENABLED: u64 = 0x08;
/// Windows `ISCSI_SECURITY_FLAG_PFS_ENABLED`: perfect forward secrecy.
pub const ISCSI_SECURITY_FLAG_PFS_ENABLED: u64 = 0x10;
/// Windows `ISCSI_SECURITY_FLAG_TRANSPORT_MODE_PREFERRED`.
pub const ISCSI_SECURITY_FLAG_TRANSPORT_MODE_PREFERRED: u64 = 0x20;
/// Windows `ISCSI_SECURITY_FLAG_TUNNEL_MODE_PREFERRED`.
pub const ISCSI_SECURITY_FLAG_TUNNEL_MODE_PREFERRED: u64 = 0x40;

const SECURITY_FLAGS_KNOWN: u64 = 0x7F;
const IKE_DEPENDENT_FLAGS: u64 = ISCSI_SECURITY_FLAG_MAIN_MODE_ENABLED
    | ISCSI_SECURITY_FLAG_AGGRESSIVE_MODE_ENABLED
    | ISCSI_SECURITY_FLAG_PFS_ENABLED
    | ISCSI_SECURITY_FLAG_TRANSPORT_MODE_PREFERRED
    | ISCSI_SECURITY_FLAG_TUNNEL_MODE_PREFERRED;

/// Windows `ISCSI_SECURITY_FLAGS` (a `ULONGLONG`; values from the iSNS
/// Portal Security Bitmap, RFC 4171).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SecurityFlags(pub u64);

/// IKE phase-1 mode asked for by the security flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IkeMode {
    Main,
    /// The Microsoft software initiator does not support it.
    Aggressive,
}

/// IPsec encapsulation asked for by the security flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpsecMode {
    Transport,
    Tunnel,
}

/// What a valid set of security flags asks of the connection. With
/// `required == true` the connection is protected by an IPsec provider (see
/// `crate::ipsec::IpsecConfig::plan`, which also refuses aggressive mode and
/// a missing key) or not made at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct IpsecRequest {
    pub required: bool,
    pub ike_mode: Option<IkeMode>,
    pub mode: Option<IpsecMode>,
    pub pfs: bool,
}

impl IpsecRequest {
    /// No IPsec requested.
    pub const NONE: Self = Self { required: false, ike_mode: None, mode: None, pfs: false };
}

impl SecurityFlags {
    pub const VALID: Self = Self(ISCSI_SECURITY_FLAG_VALID);
    pub const IKE_IPSEC_ENABLED: Self = Self(ISCSI_SECURITY_FLAG_IKE_IPSEC_ENABLED);
    pub const MAIN_MODE_ENABLED: Self = Self(ISCSI_SECURITY_FLAG_MAIN_MODE_ENABLED);
    pub const AGGRESSIVE_MODE_ENABLED: Self = Self(ISCSI_SECURITY_FLAG_AGGRESSIVE_MODE_ENABLED);
    pub const PFS_ENABLED: Self = Self(ISCSI_SECURITY_FLAG_PFS_ENABLED);
    pub const TRANSPORT_MODE_PREFERRED: Self = Self(ISCSI_SECURITY_FLAG_TRANSPORT_MODE_PREFERRED);
    pub const TUNNEL_MODE_PREFERRED: Self = Self(ISCSI_SECURITY_FLAG_TUNNEL_MODE_PREFERRED);

    pub const fn bits(self) -> u64 {
        self.0
    }

    /// True when every bit of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Checks the flags as Windows does. With `VALID` clear every other bit
    /// is ignored and no IPsec is requested (Windows would reuse the
    /// portal's earlier flags or its registry defaults; we have neither).
    pub fn validate(&self) -> Result<IpsecRequest, Status> {
        let bits = self.0;
        if bits & ISCSI_SECURITY_FLAG_VALID == 0 {
            return Ok(IpsecRequest::NONE);
        }
        let unknown = bits & !SECURITY_FLAGS_KNOWN;
        if unknown != 0 {
            return Err(Status::invalid_parameter(format!("security flags: unknown bits {unknown:#x}")));
        }
        let has = |f: u64| bits & f != 0;
        if !has(ISCSI_SECURITY_FLAG_IKE_IPSEC_ENABLED) {
            if has(IKE_DEPENDENT_FLAGS) {
                return Err(Status::invalid_parameter(format!(
                    "security flags {bits:#x}: IKE mode, PFS and transport/tunnel bits need IKE_IPSEC_ENABLED (0x02)"
                )));
            }
            return Ok(IpsecRequest::NONE);
        }
        if has(ISCSI_SECURITY_FLAG_MAIN_MODE_ENABLED) && has(ISCSI_SECURITY_FLAG_AGGRESSIVE_MODE_ENABLED) {
            return Err(Status::invalid_parameter(format!(
                "security flags {bits:#x}: IKE main mode (0x04) and aggressive mode (0x08) exclude each other"
            )));
        }
        if has(ISCSI_SECURITY_FLAG_TRANSPORT_MODE_PREFERRED) && has(ISCSI_SECURITY_FLAG_TUNNEL_MODE_PREFERRED) {
            return Err(Status::invalid_parameter(format!(
                "security flags {bits:#x}: transport mode (0x20) and tunnel mode (0x40) exclude each other"
            )));
        }
        let ike_mode = if has(ISCSI_SECURITY_FLAG_MAIN_MODE_ENABLED) {
            Some(IkeMode::Main)
        } else if has(ISCSI_SECURITY_FLAG_AGGRESSIVE_MODE_ENABLED) {
            Some(IkeMode::Aggressive)
        } else {
            None
        };
        let mode = if has(ISCSI_SECURITY_FLAG_TRANSPORT_MODE_PREFERRED) {
            Some(IpsecMode::Transport)
        } else if has(ISCSI_SECURITY_FLAG_TUNNEL_MODE_PREFERRED) {
            Some(IpsecMode::Tunnel)
        } else {
            None
        };
        Ok(IpsecRequest { required: true, ike_mode, mode, pfs: has(ISCSI_SECURITY_FLAG_PFS_ENABLED) })
    }
}

impl std::ops::BitOr for SecurityFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// Windows `ISCSI_AUTH_TYPES`: how the login authenticates (RFC 7143 §12.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u32)]
pub enum AuthType {
    /// `ISCSI_NO_AUTH_TYPE`
    #[default]
    None = 0,
    /// `ISCSI_CHAP_AUTH_TYPE`: the target challenges the initiator.
    Chap = 1,
    /// `ISCSI_MUTUAL_CHAP_AUTH_TYPE`: both sides challenge each other.
    MutualChap = 2,
}

impl AuthType {
    pub const fn as_u32(self) -> u32 {
        self as u32
    }

    pub fn from_u32(v: u32) -> Result<Self, Status> {
        match v {
            0 => Ok(Self::None),
            1 => Ok(Self::Chap),
            2 => Ok(Self::MutualChap),
            _ => Err(Status::new(
                IsdscCode::InvalidLogonAuthType,
                format!("auth type {v}: expected 0 (none), 1 (CHAP) or 2 (mutual CHAP)"),
            )),
        }
    }

    /// CHAP in either direction needs the target's secret in `Password`.
    pub const fn is_chap(self) -> bool {
        matches!(self, Self::Chap | Self::MutualChap)
    }
}

/// Windows `ISCSI_DIGEST_TYPES` (RFC 7143 §13.1 HeaderDigest/DataDigest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u32)]
pub enum DigestType {
    /// `ISCSI_DIGEST_TYPE_NONE`
    #[default]
    None = 0,
    /// `ISCSI_DIGEST_TYPE_CRC32C`
    Crc32c = 1,
}

impl DigestType {
    pub const fn as_u32(self) -> u32 {
        self as u32
    }

    pub fn from_u32(v: u32) -> Result<Self, Status> {
        match v {
            0 => Ok(Self::None),
            1 => Ok(Self::Crc32c),
            _ => Err(Status::invalid_parameter(format!("digest type {v}: expected 0 (none) or 1 (CRC32C)"))),
        }
    }
}

/// Windows `ISCSI_LOGIN_FLAG_REQUIRE_IPSEC`: the session must use IPsec.
pub const ISCSI_LOGIN_FLAG_REQUIRE_IPSEC: u32 = 0x01;
/// Windows `ISCSI_LOGIN_FLAG_MULTIPATH_ENABLED`: allow more than one session
/// to the same target.
pub const ISCSI_LOGIN_FLAG_MULTIPATH_ENABLED: u32 = 0x02;
/// Windows `ISCSI_LOGIN_FLAG_RESERVED1` (Microsoft internal).
pub const ISCSI_LOGIN_FLAG_RESERVED1: u32 = 0x04;
/// Windows `ISCSI_LOGIN_FLAG_ALLOW_PORTAL_HOPPING`: try other discovered
/// portals when the chosen one fails.
pub const ISCSI_LOGIN_FLAG_ALLOW_PORTAL_HOPPING: u32 = 0x08;
/// Windows `ISCSI_LOGIN_FLAG_USE_RADIUS_RESPONSE`.
pub const ISCSI_LOGIN_FLAG_USE_RADIUS_RESPONSE: u32 = 0x10;
/// Windows `ISCSI_LOGIN_FLAG_USE_RADIUS_VERIFICATION`.
pub const ISCSI_LOGIN_FLAG_USE_RADIUS_VERIFICATION: u32 = 0x20;

const LOGIN_FLAGS_KNOWN: u32 = 0x3F;

/// Windows `ISCSI_LOGIN_FLAGS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LoginFlags(pub u32);

impl LoginFlags {
    pub const REQUIRE_IPSEC: Self = Self(ISCSI_LOGIN_FLAG_REQUIRE_IPSEC);
    pub const MULTIPATH_ENABLED: Self = Self(ISCSI_LOGIN_FLAG_MULTIPATH_ENABLED);
    pub const RESERVED1: Self = Self(ISCSI_LOGIN_FLAG_RESERVED1);
    pub const ALLOW_PORTAL_HOPPING: Self = Self(ISCSI_LOGIN_FLAG_ALLOW_PORTAL_HOPPING);
    pub const USE_RADIUS_RESPONSE: Self = Self(ISCSI_LOGIN_FLAG_USE_RADIUS_RESPONSE);
    pub const USE_RADIUS_VERIFICATION: Self = Self(ISCSI_LOGIN_FLAG_USE_RADIUS_VERIFICATION);

    pub const fn bits(self) -> u32 {
        self.0
    }

    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for LoginFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// Windows `ISCSI_LOGIN_OPTIONS_VERSION`: the only accepted `version`.
pub const ISCSI_LOGIN_OPTIONS_VERSION: u32 = 0;
/// `InformationSpecified` bit: `header_digest` is meaningful.
pub const ISCSI_LOGIN_OPTIONS_HEADER_DIGEST: u32 = 0x01;
/// `InformationSpecified` bit: `data_digest` is meaningful.
pub const ISCSI_LOGIN_OPTIONS_DATA_DIGEST: u32 = 0x02;
/// `InformationSpecified` bit: `maximum_connections` is meaningful.
pub const ISCSI_LOGIN_OPTIONS_MAXIMUM_CONNECTIONS: u32 = 0x04;
/// `InformationSpecified` bit: `default_time2wait` is meaningful.
pub const ISCSI_LOGIN_OPTIONS_DEFAULT_TIME_2_WAIT: u32 = 0x08;
/// `InformationSpecified` bit: `default_time2retain` is meaningful.
pub const ISCSI_LOGIN_OPTIONS_DEFAULT_TIME_2_RETAIN: u32 = 0x10;
/// `InformationSpecified` bit: `username` is meaningful.
pub const ISCSI_LOGIN_OPTIONS_USERNAME: u32 = 0x20;
/// `InformationSpecified` bit: `password` is meaningful.
pub const ISCSI_LOGIN_OPTIONS_PASSWORD: u32 = 0x40;
/// `InformationSpecified` bit: `auth_type` is meaningful.
pub const ISCSI_LOGIN_OPTIONS_AUTH_TYPE: u32 = 0x80;

/// Windows `ISCSI_LOGIN_OPTIONS.InformationSpecified`: which fields count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct InformationSpecified(pub u32);

impl InformationSpecified {
    pub const HEADER_DIGEST: Self = Self(ISCSI_LOGIN_OPTIONS_HEADER_DIGEST);
    pub const DATA_DIGEST: Self = Self(ISCSI_LOGIN_OPTIONS_DATA_DIGEST);
    pub const MAXIMUM_CONNECTIONS: Self = Self(ISCSI_LOGIN_OPTIONS_MAXIMUM_CONNECTIONS);
    pub const DEFAULT_TIME_2_WAIT: Self = Self(ISCSI_LOGIN_OPTIONS_DEFAULT_TIME_2_WAIT);
    pub const DEFAULT_TIME_2_RETAIN: Self = Self(ISCSI_LOGIN_OPTIONS_DEFAULT_TIME_2_RETAIN);
    pub const USERNAME: Self = Self(ISCSI_LOGIN_OPTIONS_USERNAME);
    pub const PASSWORD: Self = Self(ISCSI_LOGIN_OPTIONS_PASSWORD);
    pub const AUTH_TYPE: Self = Self(ISCSI_LOGIN_OPTIONS_AUTH_TYPE);

    pub const fn bits(self) -> u32 {
        self.0
    }

    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn insert(&mut self, other: Self) {
        self.0 |= other.0;
    }
}

impl std::ops::BitOr for InformationSpecified {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// Largest MaxConnections value (RFC 7143 §13.2: 1 to 65535).
pub const MAX_CONNECTIONS_LIMIT: u32 = 65535;
/// Largest DefaultTime2Wait / DefaultTime2Retain (RFC 7143 §13.15, §13.16).
pub const MAX_TIME2_SECONDS: u32 = 3600;
/// Longest CHAP user name we accept (Windows `ISDSC_INVALID_CHAP_USER_NAME`).
pub const MAX_CHAP_USER_NAME_LEN: usize = 255;
/// CHAP secret bounds: at least 12 bytes (96 bits) without IPsec, at most 16
/// (Windows `ISDSC_INVALID_TARGET_CHAP_SECRET`; RFC 7143 §9.2.1 asks for
/// secrets of at least 96 bits unless IPsec protects the exchange).
pub const MIN_CHAP_SECRET_LEN: usize = 12;
/// See [`MIN_CHAP_SECRET_LEN`].
pub const MAX_CHAP_SECRET_LEN: usize = 16;

/// Windows `ISCSI_LOGIN_OPTIONS`. Fields mirror the C structure; a field
/// counts only when its `information_specified` bit is set, so read them
/// through the accessors. `auth_type`, `header_digest` and `data_digest`
/// hold the raw Windows values so an out-of-range value can be reported by
/// [`LoginOptions::validate`] instead of being lost in a conversion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginOptions {
    /// Must be [`ISCSI_LOGIN_OPTIONS_VERSION`] (0).
    pub version: u32,
    pub information_specified: InformationSpecified,
    pub login_flags: LoginFlags,
    /// [`AuthType`] value.
    pub auth_type: u32,
    /// [`DigestType`] value.
    pub header_digest: u32,
    /// [`DigestType`] value.
    pub data_digest: u32,
    /// 1..=65535; 0 asks for "no limit" (65535).
    pub maximum_connections: u32,
    /// Seconds.
    pub default_time2wait: u32,
    /// Seconds.
    pub default_time2retain: u32,
    /// CHAP name (CHAP_N); empty means the initiator node name.
    pub username: Vec<u8>,
    /// The target's CHAP secret, used to answer the target's challenge.
    pub password: Secret,
}

impl Default for LoginOptions {
    fn default() -> Self {
        Self {
            version: ISCSI_LOGIN_OPTIONS_VERSION,
            information_specified: InformationSpecified::default(),
            login_flags: LoginFlags::default(),
            auth_type: AuthType::None.as_u32(),
            header_digest: DigestType::None.as_u32(),
            data_digest: DigestType::None.as_u32(),
            maximum_connections: 0,
            default_time2wait: 0,
            default_time2retain: 0,
            username: Vec::new(),
            password: Secret::new(Vec::new()),
        }
    }
}

impl LoginOptions {
    fn specified(&self, bit: InformationSpecified) -> bool {
        self.information_specified.contains(bit)
    }

    /// The header digest asked for; `None` when not specified (or not a
    /// known value, which [`LoginOptions::validate`] refuses).
    pub fn header_digest(&self) -> Option<DigestType> {
        if !self.specified(InformationSpecified::HEADER_DIGEST) {
            return None;
        }
        DigestType::from_u32(self.header_digest).ok()
    }

    /// The data digest asked for; `None` when not specified.
    pub fn data_digest(&self) -> Option<DigestType> {
        if !self.specified(InformationSpecified::DATA_DIGEST) {
            return None;
        }
        DigestType::from_u32(self.data_digest).ok()
    }

    /// The authentication asked for; `None` when not specified (or not a
    /// known value, which [`LoginOptions::validate`] refuses).
    pub fn auth_type(&self) -> Option<AuthType> {
        if !self.specified(InformationSpecified::AUTH_TYPE) {
            return None;
        }
        AuthType::from_u32(self.auth_type).ok()
    }

    /// The connection limit to offer as MaxConnections (RFC 7143 §13.2):
    /// 0 ("no limit") becomes 65535. `None` when not specified.
    pub fn maximum_connections(&self) -> Option<u32> {
        self.specified(InformationSpecified::MAXIMUM_CONNECTIONS).then_some(match self.maximum_connections {
            0 => MAX_CONNECTIONS_LIMIT,
            n => n,
        })
    }

    /// DefaultTime2Wait in seconds (RFC 7143 §13.15); `None` when not specified.
    pub fn default_time2wait(&self) -> Option<u32> {
        self.specified(InformationSpecified::DEFAULT_TIME_2_WAIT).then_some(self.default_time2wait)
    }

    /// DefaultTime2Retain in seconds (RFC 7143 §13.16); `None` when not specified.
    pub fn default_time2retain(&self) -> Option<u32> {
        self.specified(InformationSpecified::DEFAULT_TIME_2_RETAIN).then_some(self.default_time2retain)
    }

    /// The CHAP user name bytes; `None` when not specified.
    pub fn username(&self) -> Option<&[u8]> {
        self.specified(InformationSpecified::USERNAME).then_some(self.username.as_slice())
    }

    /// The target's CHAP secret; `None` when not specified.
    pub fn password(&self) -> Option<&Secret> {
        self.specified(InformationSpecified::PASSWORD).then_some(&self.password)
    }

    /// Sets the header digest and marks it specified.
    pub fn with_header_digest(mut self, d: DigestType) -> Self {
        self.header_digest = d.as_u32();
        self.information_specified.insert(InformationSpecified::HEADER_DIGEST);
        self
    }

    /// Sets the data digest and marks it specified.
    pub fn with_data_digest(mut self, d: DigestType) -> Self {
        self.data_digest = d.as_u32();
        self.information_specified.insert(InformationSpecified::DATA_DIGEST);
        self
    }

    /// Sets the authentication type and marks it specified.
    pub fn with_auth_type(mut self, a: AuthType) -> Self {
        self.auth_type = a.as_u32();
        self.information_specified.insert(InformationSpecified::AUTH_TYPE);
        self
    }

    /// Sets MaximumConnections (0 = no limit) and marks it specified.
    pub fn with_maximum_connections(mut self, n: u32) -> Self {
        self.maximum_connections = n;
        self.information_specified.insert(InformationSpecified::MAXIMUM_CONNECTIONS);
        self
    }

    /// Sets DefaultTime2Wait and marks it specified.
    pub fn with_default_time2wait(mut self, secs: u32) -> Self {
        self.default_time2wait = secs;
        self.information_specified.insert(InformationSpecified::DEFAULT_TIME_2_WAIT);
        self
    }

    /// Sets DefaultTime2Retain and marks it specified.
    pub fn with_default_time2retain(mut self, secs: u32) -> Self {
        self.default_time2retain = secs;
        self.information_specified.insert(InformationSpecified::DEFAULT_TIME_2_RETAIN);
        self
    }

    /// Sets the CHAP user name and marks it specified.
    pub fn with_username(mut self, name: impl Into<Vec<u8>>) -> Self {
        self.username = name.into();
        self.information_specified.insert(InformationSpecified::USERNAME);
        self
    }

    /// Sets the target's CHAP secret and marks it specified.
    pub fn with_password(mut self, secret: Secret) -> Self {
        self.password = secret;
        self.information_specified.insert(InformationSpecified::PASSWORD);
        self
    }

    /// Adds login flags.
    pub fn with_login_flags(mut self, flags: LoginFlags) -> Self {
        self.login_flags = self.login_flags | flags;
        self
    }

    /// Checks the options as Windows does before a login. `ipsec` says
    /// whether the connection is protected by IPsec, which relaxes the CHAP
    /// secret's minimum length. Fields whose bit is clear are not checked.
    pub fn validate(&self, ipsec: bool) -> Result<(), Status> {
        if self.version != ISCSI_LOGIN_OPTIONS_VERSION {
            return Err(Status::invalid_parameter(format!(
                "login options version {}: only version 0 exists",
                self.version
            )));
        }
        let unknown = self.login_flags.bits() & !LOGIN_FLAGS_KNOWN;
        if unknown != 0 {
            return Err(Status::invalid_parameter(format!("login flags: unknown bits {unknown:#x}")));
        }
        if self.specified(InformationSpecified::HEADER_DIGEST) {
            DigestType::from_u32(self.header_digest)
                .map_err(|e| Status::invalid_parameter(format!("header {}", e.message)))?;
        }
        if self.specified(InformationSpecified::DATA_DIGEST) {
            DigestType::from_u32(self.data_digest)
                .map_err(|e| Status::invalid_parameter(format!("data {}", e.message)))?;
        }
        if self.specified(InformationSpecified::MAXIMUM_CONNECTIONS) && self.maximum_connections > MAX_CONNECTIONS_LIMIT
        {
            return Err(Status::invalid_parameter(format!(
                "maximum connections {}: must be 1..=65535, or 0 for no limit",
                self.maximum_connections
            )));
        }
        for (bit, value, key) in [
            (InformationSpecified::DEFAULT_TIME_2_WAIT, self.default_time2wait, "DefaultTime2Wait"),
            (InformationSpecified::DEFAULT_TIME_2_RETAIN, self.default_time2retain, "DefaultTime2Retain"),
        ] {
            if self.specified(bit) && value > MAX_TIME2_SECONDS {
                return Err(Status::invalid_parameter(format!("{key} {value}: RFC 7143 allows 0..=3600 seconds")));
            }
        }
        if let Some(name) = self.username() {
            if name.len() > MAX_CHAP_USER_NAME_LEN {
                return Err(Status::new(
                    IsdscCode::InvalidChapUserName,
                    format!("CHAP user name is {} bytes long; at most 255 are allowed", name.len()),
                ));
            }
            if std::str::from_utf8(name).is_err() {
                return Err(Status::new(IsdscCode::InvalidChapUserName, "CHAP user name is not valid UTF-8"));
            }
        }
        let auth = if self.specified(InformationSpecified::AUTH_TYPE) {
            AuthType::from_u32(self.auth_type)?
        } else {
            AuthType::None
        };
        if auth.is_chap() {
            let Some(secret) = self.password() else {
                return Err(Status::new(
                    IsdscCode::InvalidChapSecret,
                    "CHAP was asked for but no CHAP secret (password) was given",
                ));
            };
            check_chap_secret_len(secret.expose().len(), ipsec)?;
        }
        Ok(())
    }

    /// The CHAP name to send (CHAP_N): the user name when one is given,
    /// else the initiator node name (Windows `ISCSI_LOGIN_OPTIONS`).
    pub fn chap_name(&self, initiator_name: &str) -> String {
        match self.username() {
            Some(name) if !name.is_empty() => String::from_utf8_lossy(name).into_owned(),
            _ => initiator_name.to_string(),
        }
    }
}

/// Windows' CHAP secret length rule. Windows also has the warning
/// `ISDSC_SHORT_CHAP_SECRET` (0xAFFF0048) for secrets under 96 bits; we refuse
/// them outright unless IPsec protects the exchange. The message never shows
/// the secret, only its length.
fn check_chap_secret_len(len: usize, ipsec: bool) -> Result<(), Status> {
    let min = if ipsec { 1 } else { MIN_CHAP_SECRET_LEN };
    if (min..=MAX_CHAP_SECRET_LEN).contains(&len) {
        return Ok(());
    }
    let rule = if ipsec { "1 to 16 bytes with IPsec" } else { "12 to 16 bytes without IPsec" };
    Err(Status::new(IsdscCode::InvalidChapSecret, format!("CHAP secret is {len} bytes long; it must be {rule}")))
}

/// Longest portal address or symbolic name (Windows
/// `MAX_ISCSI_PORTAL_ADDRESS_LEN` 256, including the terminating NUL).
pub const MAX_ISCSI_PORTAL_ADDRESS_LEN: usize = 256;

/// Windows `ISCSI_TARGET_PORTAL`: where to log in. `port` is Windows'
/// `Socket`; 0 means the well-known port 3260 (RFC 7143 §13.8).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Portal {
    pub symbolic_name: String,
    /// IPv4 or IPv6 literal (brackets allowed) or a DNS name, without port.
    pub address: String,
    pub port: u16,
}

impl Portal {
    pub fn new(address: impl Into<String>, port: u16) -> Self {
        Self { symbolic_name: String::new(), address: address.into(), port }
    }

    /// The TCP port to connect to: `port`, or 3260 when it is 0.
    pub fn effective_port(&self) -> u16 {
        if self.port == 0 { DEFAULT_PORT } else { self.port }
    }

    /// Checks the address and turns the portal into a connectable
    /// [`PortalAddr`]. A malformed address or host name is
    /// `ISDSC_INVALID_HOST`; a well-formed IP that cannot be a target
    /// (unspecified, multicast, broadcast) is `ISDSC_ADDRESS_TYPE_NOT_SUPPORTED`.
    pub fn to_portal_addr(&self) -> Result<PortalAddr, Status> {
        let raw = self.address.trim();
        let invalid = |why: &str| Status::new(IsdscCode::InvalidHost, format!("portal address {raw:?}: {why}"));
        if raw.is_empty() {
            return Err(invalid("empty"));
        }
        if raw.len() >= MAX_ISCSI_PORTAL_ADDRESS_LEN {
            return Err(invalid("longer than 255 characters"));
        }
        let inner = match raw.strip_prefix('[') {
            Some(rest) => rest.strip_suffix(']').ok_or_else(|| invalid("unbalanced '['"))?,
            None => raw,
        };
        if let Ok(ip) = inner.parse::<IpAddr>() {
            check_ip(raw, ip)?;
            return Ok(PortalAddr { host: ip.to_string(), port: self.effective_port() });
        }
        if inner.contains('%') {
            return Err(Status::new(
                IsdscCode::AddressTypeNotSupported,
                format!("portal address {raw:?}: IPv6 zone ids are not supported"),
            ));
        }
        if inner.contains(':') {
            return Err(invalid("not an IPv6 address; give the port separately, not as HOST:PORT"));
        }
        if inner.len() != raw.len() {
            return Err(invalid("brackets are only for IPv6 addresses"));
        }
        check_host_name(inner).map_err(invalid)?;
        Ok(PortalAddr { host: inner.to_string(), port: self.effective_port() })
    }
}

impl TryFrom<&Portal> for PortalAddr {
    type Error = Status;
    fn try_from(p: &Portal) -> Result<Self, Status> {
        p.to_portal_addr()
    }
}

impl From<&PortalAddr> for Portal {
    fn from(a: &PortalAddr) -> Self {
        Portal::new(a.host.clone(), a.port)
    }
}

fn check_ip(raw: &str, ip: IpAddr) -> Result<(), Status> {
    let refused = match ip {
        IpAddr::V4(v4) => {
            if v4.is_unspecified() {
                Some("the unspecified address")
            } else if v4.is_multicast() {
                Some("a multicast address")
            } else if v4.is_broadcast() {
                Some("the broadcast address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_unspecified() {
                Some("the unspecified address")
            } else if v6.is_multicast() {
                Some("a multicast address")
            } else {
                None
            }
        }
    };
    match refused {
        Some(what) => Err(Status::new(
            IsdscCode::AddressTypeNotSupported,
            format!("portal address {raw:?} is {what}; a target needs a unicast address"),
        )),
        None => Ok(()),
    }
}

/// RFC 1123 §2.1 host name syntax: dot-separated labels of 1..=63 letters,
/// digits and hyphens, not starting or ending with a hyphen, at most 253
/// characters, one trailing dot allowed; an all-numeric last label would be
/// a mistyped IPv4 address.
fn check_host_name(name: &str) -> Result<(), &'static str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return Err("not a valid host name (length)");
    }
    let mut last = "";
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("not a valid host name (empty or over-long label)");
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err("not a valid host name (only letters, digits, '-' and '.' are allowed)");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("not a valid host name (a label starts or ends with '-')");
        }
        last = label;
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a valid IPv4 address or host name");
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn flag_values_match_windows() {
        assert_eq!(
            [
                ISCSI_SECURITY_FLAG_VALID,
                ISCSI_SECURITY_FLAG_IKE_IPSEC_ENABLED,
                ISCSI_SECURITY_FLAG_MAIN_MODE_ENABLED,
                ISCSI_SECURITY_FLAG_AGGRESSIVE_MODE_ENABLED,
                ISCSI_SECURITY_FLAG_PFS_ENABLED,
                ISCSI_SECURITY_FLAG_TRANSPORT_MODE_PREFERRED,
                ISCSI_SECURITY_FLAG_TUNNEL_MODE_PREFERRED,
            ],
            [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40]
        );
        assert_eq!(
            [
                ISCSI_LOGIN_FLAG_REQUIRE_IPSEC,
                ISCSI_LOGIN_FLAG_MULTIPATH_ENABLED,
                ISCSI_LOGIN_FLAG_RESERVED1,
                ISCSI_LOGIN_FLAG_ALLOW_PORTAL_HOPPING,
                ISCSI_LOGIN_FLAG_USE_RADIUS_RESPONSE,
                ISCSI_LOGIN_FLAG_USE_RADIUS_VERIFICATION,
            ],
            [0x01, 0x02, 0x04, 0x08, 0x10, 0x20]
        );
        assert_eq!(
            [
                ISCSI_LOGIN_OPTIONS_HEADER_DIGEST,
                ISCSI_LOGIN_OPTIONS_DATA_DIGEST,
                ISCSI_LOGIN_OPTIONS_MAXIMUM_CONNECTIONS,
                ISCSI_LOGIN_OPTIONS_DEFAULT_TIME_2_WAIT,
                ISCSI_LOGIN_OPTIONS_DEFAULT_TIME_2_RETAIN,
                ISCSI_LOGIN_OPTIONS_USERNAME,
                ISCSI_LOGIN_OPTIONS_PASSWORD,
                ISCSI_LOGIN_OPTIONS_AUTH_TYPE,
            ],
            [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80]
        );
        assert_eq!(ISCSI_LOGIN_OPTIONS_VERSION, 0);
        assert_eq!(ISCSI_ANY_INITIATOR_PORT, 0xFFFF_FFFF);
        assert_eq!(ISCSI_ALL_INITIATOR_PORTS, 0xFFFF_FFFF);
        assert_eq!((AuthType::None as u32, AuthType::Chap as u32, AuthType::MutualChap as u32), (0, 1, 2));
        assert_eq!((DigestType::None as u32, DigestType::Crc32c as u32), (0, 1));
        let f = SecurityFlags::VALID | SecurityFlags::PFS_ENABLED;
        assert_eq!(f.bits(), 0x11);
        assert!(f.contains(SecurityFlags::VALID) && !f.contains(SecurityFlags::IKE_IPSEC_ENABLED));
        assert!((LoginFlags::MULTIPATH_ENABLED | LoginFlags::REQUIRE_IPSEC).contains(LoginFlags::REQUIRE_IPSEC));
    }

    #[test]
    fn security_flags_without_valid_are_ignored() {
        for bits in [0, 0x02, 0x0C, 0x60, 0xFFFF_0000, 0x7E] {
            assert_eq!(SecurityFlags(bits).validate().unwrap(), IpsecRequest::NONE, "{bits:#x}");
        }
        assert_eq!(SecurityFlags(0x01).validate().unwrap(), IpsecRequest::NONE);
    }

    #[test]
    fn security_flags_valid_combinations() {
        let r = SecurityFlags(0x01 | 0x02).validate().unwrap();
        assert_eq!(r, IpsecRequest { required: true, ike_mode: None, mode: None, pfs: false });
        let r = SecurityFlags(0x01 | 0x02 | 0x04 | 0x10 | 0x20).validate().unwrap();
        assert_eq!(
            r,
            IpsecRequest { required: true, ike_mode: Some(IkeMode::Main), mode: Some(IpsecMode::Transport), pfs: true }
        );
        let r = SecurityFlags(0x01 | 0x02 | 0x08 | 0x40).validate().unwrap();
        assert_eq!((r.ike_mode, r.mode, r.pfs), (Some(IkeMode::Aggressive), Some(IpsecMode::Tunnel), false));
    }

    #[test]
    fn security_flags_invalid_combinations() {
        let cases: &[(u64, &str)] = &[
            (0x01 | 0x02 | 0x04 | 0x08, "main mode"),
            (0x01 | 0x02 | 0x20 | 0x40, "transport mode"),
            (0x01 | 0x04, "IKE_IPSEC_ENABLED"),
            (0x01 | 0x10, "IKE_IPSEC_ENABLED"),
            (0x01 | 0x40, "IKE_IPSEC_ENABLED"),
            (0x01 | 0x80, "unknown bits 0x80"),
            (0x01 | 0x02 | (1 << 40), "unknown bits"),
        ];
        for &(bits, needle) in cases {
            let e = SecurityFlags(bits).validate().unwrap_err();
            assert_eq!(e.code, IsdscCode::InvalidParameter, "{bits:#x}");
            assert!(e.message.contains(needle), "{bits:#x}: {}", e.message);
        }
    }

    #[test]
    fn accessors_honour_information_specified() {
        let mut o = LoginOptions {
            auth_type: 2,
            header_digest: 1,
            data_digest: 1,
            maximum_connections: 4,
            default_time2wait: 5,
            default_time2retain: 6,
            username: b"user".to_vec(),
            password: Secret::new("0123456789abcdef"),
            ..LoginOptions::default()
        };
        assert_eq!(o.header_digest(), None);
        assert_eq!(o.data_digest(), None);
        assert_eq!(o.auth_type(), None);
        assert_eq!(o.maximum_connections(), None);
        assert_eq!(o.default_time2wait(), None);
        assert_eq!(o.default_time2retain(), None);
        assert_eq!(o.username(), None);
        assert!(o.password().is_none());
        assert_eq!(o.chap_name("iqn.init"), "iqn.init");
        // Unspecified garbage is not looked at.
        o.auth_type = 99;
        o.header_digest = 7;
        o.validate(false).unwrap();
        o.auth_type = 2;
        o.header_digest = 1;

        o.information_specified = InformationSpecified(0xFF);
        assert_eq!(o.header_digest(), Some(DigestType::Crc32c));
        assert_eq!(o.data_digest(), Some(DigestType::Crc32c));
        assert_eq!(o.auth_type(), Some(AuthType::MutualChap));
        assert_eq!(o.maximum_connections(), Some(4));
        assert_eq!(o.default_time2wait(), Some(5));
        assert_eq!(o.default_time2retain(), Some(6));
        assert_eq!(o.username(), Some(&b"user"[..]));
        assert_eq!(o.password().unwrap().expose(), b"0123456789abcdef");
        assert_eq!(o.chap_name("iqn.init"), "user");
        o.validate(false).unwrap();

        o.information_specified = InformationSpecified::DATA_DIGEST | InformationSpecified::USERNAME;
        assert_eq!((o.header_digest(), o.data_digest()), (None, Some(DigestType::Crc32c)));
        o.username.clear();
        assert_eq!(o.chap_name("iqn.init"), "iqn.init");
    }

    #[test]
    fn builders_set_the_bits() {
        let o = LoginOptions::default()
            .with_header_digest(DigestType::Crc32c)
            .with_data_digest(DigestType::None)
            .with_auth_type(AuthType::Chap)
            .with_maximum_connections(0)
            .with_default_time2wait(2)
            .with_default_time2retain(20)
            .with_username("u")
            .with_password(Secret::new("twelve-bytes"))
            .with_login_flags(LoginFlags::MULTIPATH_ENABLED);
        assert_eq!(o.information_specified.bits(), 0xFF);
        assert_eq!(o.maximum_connections(), Some(65535));
        assert_eq!(o.data_digest(), Some(DigestType::None));
        assert!(o.login_flags.contains(LoginFlags::MULTIPATH_ENABLED));
        o.validate(false).unwrap();
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let o = LoginOptions::default().with_password(Secret::new("supersecret12"));
        assert!(!format!("{o:?}").contains("supersecret12"));
        let e = LoginOptions::default()
            .with_auth_type(AuthType::Chap)
            .with_password(Secret::new("short"))
            .validate(false)
            .unwrap_err();
        assert!(!e.to_string().contains("short\""), "{e}");
        assert!(!e.message.contains("short"), "{e}");
    }

    fn code(o: &LoginOptions, ipsec: bool) -> IsdscCode {
        o.validate(ipsec).unwrap_err().code
    }

    #[test]
    fn validate_version_counts_and_times() {
        let o = LoginOptions { version: 1, ..LoginOptions::default() };
        assert_eq!(code(&o, false), IsdscCode::InvalidParameter);
        for n in [0, 1, 8, 65535] {
            LoginOptions::default().with_maximum_connections(n).validate(false).unwrap();
        }
        assert_eq!(code(&LoginOptions::default().with_maximum_connections(65536), false), IsdscCode::InvalidParameter);
        assert_eq!(code(&LoginOptions::default().with_default_time2wait(3601), false), IsdscCode::InvalidParameter);
        assert_eq!(code(&LoginOptions::default().with_default_time2retain(3601), false), IsdscCode::InvalidParameter);
        LoginOptions::default().with_default_time2wait(3600).with_default_time2retain(0).validate(false).unwrap();
        let o = LoginOptions { header_digest: 2, ..LoginOptions::default().with_header_digest(DigestType::None) };
        assert_eq!(code(&o, false), IsdscCode::InvalidParameter);
        let o = LoginOptions { login_flags: LoginFlags(0x40), ..LoginOptions::default() };
        assert_eq!(code(&o, false), IsdscCode::InvalidParameter);
    }

    #[test]
    fn validate_auth_and_chap_secret() {
        let chap = |secret: &str| {
            LoginOptions::default().with_auth_type(AuthType::Chap).with_password(Secret::new(secret.as_bytes()))
        };
        chap("123456789012").validate(false).unwrap();
        chap("1234567890123456").validate(false).unwrap();
        assert_eq!(code(&chap("12345678901"), false), IsdscCode::InvalidChapSecret);
        assert_eq!(code(&chap("12345678901234567"), false), IsdscCode::InvalidChapSecret);
        assert_eq!(code(&chap(""), false), IsdscCode::InvalidChapSecret);
        chap("1").validate(true).unwrap();
        assert_eq!(code(&chap(""), true), IsdscCode::InvalidChapSecret);
        assert_eq!(code(&chap("12345678901234567"), true), IsdscCode::InvalidChapSecret);
        // Mutual CHAP needs the same secret rule.
        let m = LoginOptions::default().with_auth_type(AuthType::MutualChap);
        assert_eq!(code(&m, false), IsdscCode::InvalidChapSecret);
        m.with_password(Secret::new("abcdefghijkl")).validate(false).unwrap();
        // CHAP without a password bit.
        let o = LoginOptions { password: Secret::new("abcdefghijkl"), ..LoginOptions::default() }
            .with_auth_type(AuthType::Chap);
        assert_eq!(code(&o, false), IsdscCode::InvalidChapSecret);
        // A short password without CHAP is not used, so not checked.
        LoginOptions::default().with_password(Secret::new("x")).validate(false).unwrap();
        LoginOptions::default().with_auth_type(AuthType::None).with_password(Secret::new("x")).validate(false).unwrap();
        // Bad auth type value.
        let o = LoginOptions { auth_type: 3, ..LoginOptions::default().with_auth_type(AuthType::None) };
        assert_eq!(code(&o, false), IsdscCode::InvalidLogonAuthType);
        assert_eq!(o.auth_type(), None);
        assert_eq!(AuthType::from_u32(7).unwrap_err().code, IsdscCode::InvalidLogonAuthType);
    }

    #[test]
    fn validate_chap_user_name() {
        LoginOptions::default().with_username(vec![b'a'; 255]).validate(false).unwrap();
        let long = LoginOptions::default().with_username(vec![b'a'; 256]);
        assert_eq!(code(&long, false), IsdscCode::InvalidChapUserName);
        let bad = LoginOptions::default().with_username(vec![0xff, 0xfe]);
        assert_eq!(code(&bad, false), IsdscCode::InvalidChapUserName);
        // Not specified: not checked.
        LoginOptions { username: vec![0xff], ..LoginOptions::default() }.validate(false).unwrap();
    }

    #[test]
    fn portal_converts_to_portal_addr() {
        let p = Portal::new("192.0.2.1", 0).to_portal_addr().unwrap();
        assert_eq!((p.host.as_str(), p.port), ("192.0.2.1", 3260));
        let p = Portal::new("[2001:db8::1]", 3261).to_portal_addr().unwrap();
        assert_eq!(p.to_string(), "[2001:db8::1]:3261");
        let p = Portal::new("2001:db8::1", 860).to_portal_addr().unwrap();
        assert_eq!((p.host.as_str(), p.port), ("2001:db8::1", 860));
        let p = Portal::new(" storage-1.example.com. ", 3260).to_portal_addr().unwrap();
        assert_eq!(p.host, "storage-1.example.com.");
        let p = PortalAddr::try_from(&Portal::new("localhost", 3262)).unwrap();
        assert_eq!(p.to_string(), "localhost:3262");
        let back = Portal::from(&p);
        assert_eq!((back.address.as_str(), back.port), ("localhost", 3262));
    }

    #[test]
    fn portal_refuses_bad_addresses() {
        use IsdscCode::*;
        let cases: &[(&str, IsdscCode)] = &[
            ("", InvalidHost),
            ("   ", InvalidHost),
            ("host:3260", InvalidHost),
            ("192.0.2.1:3260", InvalidHost),
            ("[192.0.2.1", InvalidHost),
            ("[storage]", InvalidHost),
            ("300.1.1.1", InvalidHost),
            ("1.2.3", InvalidHost),
            ("bad_host", InvalidHost),
            ("-host", InvalidHost),
            ("a..b", InvalidHost),
            ("a b", InvalidHost),
            ("0.0.0.0", AddressTypeNotSupported),
            ("::", AddressTypeNotSupported),
            ("224.0.0.1", AddressTypeNotSupported),
            ("255.255.255.255", AddressTypeNotSupported),
            ("ff02::1", AddressTypeNotSupported),
            ("fe80::1%eth0", AddressTypeNotSupported),
        ];
        for &(addr, want) in cases {
            let e = Portal::new(addr, 3260).to_portal_addr().unwrap_err();
            assert_eq!(e.code, want, "{addr:?}: {e}");
        }
        let long = "a".repeat(63) + "." + &"b".repeat(63) + "." + &"c".repeat(63) + "." + &"d".repeat(70);
        assert_eq!(Portal::new(long, 1).to_portal_addr().unwrap_err().code, InvalidHost);
    }
}
