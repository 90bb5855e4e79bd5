//! The JSON types of the rsiscsid API (`/v1`), shared by the daemon and the
//! CLI. Names mirror the Windows `MSIscsiInitiator_*` WMI classes in
//! snake_case; every success body is a JSON object so fields can be added.

use serde::{Deserialize, Serialize};

/// The default iSCSI TCP port (RFC 7143 §4.2: 3260).
pub const DEFAULT_PORT: u16 = 3260;

/// Win32 `ERROR_INVALID_PARAMETER`: the code of every malformed request.
pub const ERROR_INVALID_PARAMETER: u32 = 87;

fn default_port() -> u16 {
    DEFAULT_PORT
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Windows' default `MaxRequestHoldTime`: how long (seconds) a command may
/// be held while its connection is recovered before it fails.
pub const DEFAULT_MAX_REQUEST_HOLD_TIME_S: u32 = 60;

/// Windows' default `LinkDownTime`: how long (seconds) a lost connection may
/// stay down before the commands waiting for it fail.
pub const DEFAULT_LINK_DOWN_TIME_S: u32 = 15;

/// The values `max_request_hold_time_s` and `link_down_time_s` may take.
pub const RECOVERY_TIME_RANGE_S: std::ops::RangeInclusive<u32> = 1..=3600;

fn default_max_request_hold_time_s() -> u32 {
    DEFAULT_MAX_REQUEST_HOLD_TIME_S
}

fn default_link_down_time_s() -> u32 {
    DEFAULT_LINK_DOWN_TIME_S
}

/// A secret string: sent by the client, never returned, never printed.
/// `Debug` shows only its length; the bytes are zeroed on drop (the daemon
/// turns it into an `iscsi_proto::chap::Secret` for a login).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretString(pub String);

impl SecretString {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Wiped from memory when dropped.
impl Drop for SecretString {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretString(<{} bytes hidden>)", self.0.len())
    }
}

/// `MSIscsiInitiator_Portal`: an address (IP literal or DNS name, no port)
/// and a TCP port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Portal {
    pub address: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default)]
    pub symbolic_name: String,
}

impl Portal {
    pub fn new(address: impl Into<String>, port: u16) -> Self {
        Self { address: address.into(), port, symbolic_name: String::new() }
    }

    /// Same address and port (the symbolic name does not identify a portal).
    pub fn same_place(&self, other: &Portal) -> bool {
        self.address.eq_ignore_ascii_case(&other.address) && self.port == other.port
    }
}

impl std::fmt::Display for Portal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.address.contains(':') && !self.address.starts_with('[') {
            write!(f, "[{}]:{}", self.address, self.port)
        } else {
            write!(f, "{}:{}", self.address, self.port)
        }
    }
}

/// `ISCSI_AUTH_TYPES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthType {
    None,
    Chap,
    MutualChap,
}

/// `ISCSI_DIGEST_TYPES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DigestType {
    None,
    Crc32c,
}

/// `ISCSI_LOGIN_OPTIONS`: each field present sets its InformationSpecified
/// bit. In requests `password` may be given; in responses it is never
/// present and `password_set` says whether one is stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_flags: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_type: Option<AuthType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_digest: Option<DigestType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_digest: Option<DigestType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_time2wait: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_time2retain: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Request only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretString>,
    /// Response only.
    #[serde(default, skip_serializing_if = "is_false")]
    pub password_set: bool,
}

impl LoginOptions {
    /// The form shown in API answers: the password replaced by `password_set`.
    pub fn redacted(&self) -> Self {
        let mut o = self.clone();
        o.password_set = o.password.is_some() || o.password_set;
        o.password = None;
        o
    }
}

/// `MSIscsiInitiator_SendTargetPortalClass`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendTargetPortal {
    pub address: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default)]
    pub symbolic_name: String,
    /// A network interface index; absent = any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiator_port: Option<u32>,
    /// ISCSI_SECURITY_FLAG_* bits.
    #[serde(default)]
    pub security_flags: u64,
    #[serde(default)]
    pub login_options: LoginOptions,
}

impl SendTargetPortal {
    pub fn portal(&self) -> Portal {
        Portal { address: self.address.clone(), port: self.port, symbolic_name: self.symbolic_name.clone() }
    }
}

/// A portal of a target as SendTargets reported it (RFC 7143 Appendix C).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetPortal {
    pub address: String,
    pub port: u16,
    pub tpgt: u16,
}

/// `MSIscsiInitiator_TargetClass` (discovered targets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub name: String,
    pub portals: Vec<TargetPortal>,
    pub discovered_from: Vec<Portal>,
}

/// The IANA port of iSNS (RFC 4171 §6.1).
pub const ISNS_DEFAULT_PORT: u16 = 3205;

fn default_isns_port() -> u16 {
    ISNS_DEFAULT_PORT
}

/// The `symbolic_name` that marks an iSNS server in a target's
/// `discovered_from` (a SendTargets portal there has an empty one).
pub const ISNS_SOURCE: &str = "iSNS";

impl Portal {
    /// An iSNS server as a target's discovery source.
    pub fn isns_source(address: impl Into<String>, port: u16) -> Self {
        Self { address: address.into(), port, symbolic_name: ISNS_SOURCE.to_string() }
    }

    /// Whether this discovery source is an iSNS server, not a SendTargets portal.
    pub fn is_isns_source(&self) -> bool {
        self.symbolic_name == ISNS_SOURCE
    }
}

/// What the service's link to an iSNS server is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IsnsServerState {
    /// Registering (at start, or again after the server was lost).
    Connecting,
    /// Registered, registered for State Change Notifications, target list current.
    Registered,
    /// The last attempt failed (`last_error` says why); retried with back-off.
    Unreachable,
}

/// `MSIscsiInitiator_IsnsServerClass`: an iSNS server (RFC 4171) the service
/// registers with; the targets it lists for the service's node name join
/// the target list, kept current by its State Change Notifications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsnsServer {
    pub address: String,
    #[serde(default = "default_isns_port")]
    pub port: u16,
    pub state: IsnsServerState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Targets in the target list that this server lists.
    pub targets: usize,
    /// Seconds the server keeps a registration that is not refreshed (RFC
    /// 4171 §6.2.6); absent: it did not say (no expiry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_period_s: Option<u64>,
    /// `HOST:PORT` where the service takes the server's State Change Notifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scn_portal: Option<String>,
}

impl IsnsServer {
    /// The server as a discovery source of targets.
    pub fn source(&self) -> Portal {
        Portal::isns_source(self.address.clone(), self.port)
    }
}

/// Command latency summary in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

/// Per-session or per-connection counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub commands: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub errors: u64,
    pub reconnects: u64,
    pub latency_us: Latency,
}

/// What the initiator's recovery did in a session (RFC 7143 §6.2, §7):
/// connections that failed and were taken over by recovery, connections
/// logged in again with the failed one's CID (§6.3.4), sessions logged in
/// again with the same ISID (§6.3.5), and commands failed because recovery
/// gave up on them (hold time or link-down time spent, or the same fault
/// again).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryCounters {
    pub recoveries: u64,
    pub connections_reinstated: u64,
    pub sessions_reinstated: u64,
    pub give_ups: u64,
}

/// `MSIscsiInitiator_ConnectionInformation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    pub connection_id: String,
    pub cid: u16,
    pub initiator_address: String,
    pub initiator_port: u16,
    pub target_address: String,
    pub target_port: u16,
    /// `full-feature` (in service), `stalled` (no answer from the target
    /// for a while, commands held) or `recovering` (lost, being logged in
    /// again: RFC 7143 §6.3.4); older services also said `login`, `logout`.
    pub state: String,
    /// Whether the connection is a primary path (the failover and
    /// round-robin-with-subset policies use the primaries; a standby one
    /// only when no primary is left).
    #[serde(default = "yes")]
    pub primary: bool,
    /// Its weight under the `weighted` policy (0: not used).
    #[serde(default = "one")]
    pub weight: u32,
    pub header_digest: DigestType,
    pub data_digest: DigestType,
    pub max_recv_data_segment_length: u32,
    pub counters: Counters,
    /// The name the connection's IPsec protection (its IKE and CHILD SA,
    /// RFC 7143 §9.3) is loaded under in the IKE daemon, as
    /// `swanctl --list-sas --ike NAME` takes it; absent: no IPsec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipsec: Option<String>,
    /// The link's rate, bytes per second (the socket's measured delivery
    /// rate), which least-queue-depth weighs the connection by and every
    /// spreading policy bounds its queue by; absent until measured (a
    /// connection that only reads, or a session's only one, stays so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_rate_bytes_per_sec: Option<u64>,
}

/// `MSIscsiInitiator_DeviceOnSession` (what INQUIRY and READ CAPACITY say).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub lun: u64,
    pub peripheral_type: u8,
    pub vendor: String,
    pub product: String,
    pub revision: String,
    pub block_size: u32,
    pub blocks: u64,
}

/// Operational parameters negotiated at login (RFC 7143 §13).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionParameters {
    pub initial_r2t: bool,
    pub immediate_data: bool,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
    pub max_connections: u16,
    pub error_recovery_level: u8,
    pub default_time2wait: u16,
    pub default_time2retain: u16,
    pub max_outstanding_r2t: u16,
    pub data_pdu_in_order: bool,
    pub data_sequence_in_order: bool,
}

/// `MSIscsiInitiator_SessionClass`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub session_id: String,
    pub initiator_name: String,
    pub target_name: String,
    /// 12 hex digits.
    pub isid: String,
    pub tsih: u16,
    pub persistent: bool,
    pub load_balance_policy: String,
    pub parameters: SessionParameters,
    pub connections: Vec<Connection>,
    pub devices: Vec<Device>,
    pub counters: Counters,
    /// Seconds a command may be held while its connection is recovered
    /// (Windows `MaxRequestHoldTime`).
    #[serde(default = "default_max_request_hold_time_s")]
    pub max_request_hold_time_s: u32,
    /// Seconds a lost connection may stay down (Windows `LinkDownTime`).
    #[serde(default = "default_link_down_time_s")]
    pub link_down_time_s: u32,
    #[serde(default)]
    pub recovery_counters: RecoveryCounters,
    /// LUNs of the session served over NBD by the service.
    #[serde(default)]
    pub exports: Vec<NbdExport>,
}

/// An NBD export of one LUN of a session, served by the service on a Unix
/// socket (mode 0600) for qemu, qemu-img, nbdcopy and other NBD clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NbdExport {
    pub lun: u64,
    /// Absolute path of the Unix socket; clients use `nbd+unix:///?socket=PATH`.
    pub nbd_socket: String,
    pub read_only: bool,
    pub export_name: String,
    /// NBD clients connected now.
    #[serde(default)]
    pub clients: u32,
}

/// `POST /v1/sessions/{id}/exports`; also what a persistent login keeps of
/// its exports, to serve them again after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    pub lun: u64,
    /// Absolute path of the Unix socket to create (refused if something
    /// other than a stale socket is there).
    pub nbd_socket: String,
    #[serde(default)]
    pub read_only: bool,
    /// Name of the export; default `IQN/LUN`. Clients may also ask for
    /// the empty name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_name: Option<String>,
}

/// State of a persistent login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PersistentLoginState {
    LoggedIn,
    Retrying,
    Failed,
    /// The user logged the session out; it is logged in again when the
    /// service next starts, as Windows does with persistent targets at boot.
    LoggedOut,
}

/// `MSIscsiInitiator_PersistentLoginClass`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistentLogin {
    pub target_name: String,
    pub portal: Portal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiator_port: Option<u32>,
    pub security_flags: u64,
    /// Tunnel mode: the target side's tunnel end it logs in through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_outer_address: Option<String>,
    /// Whether an IPsec pre-shared key is stored with it (the key itself
    /// is never returned).
    #[serde(default, skip_serializing_if = "is_false")]
    pub key_set: bool,
    pub login_options: LoginOptions,
    pub connections: u32,
    pub load_balance_policy: String,
    /// The hold time and link-down time its sessions get: the ones given at
    /// login, else the service's defaults.
    #[serde(default = "default_max_request_hold_time_s")]
    pub max_request_hold_time_s: u32,
    #[serde(default = "default_link_down_time_s")]
    pub link_down_time_s: u32,
    pub state: PersistentLoginState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// NBD exports served again with each session of this login.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exports: Vec<ExportRequest>,
}

// ---- request and response bodies ----

/// `GET /v1/initiator`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Initiator {
    pub node_name: String,
    pub alias: String,
    pub chap_secret_set: bool,
}

/// `PUT /v1/initiator`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitiatorUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
}

/// `PUT /v1/initiator/chap-secret`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChapSecretRequest {
    pub secret: SecretString,
}

/// `GET /v1/portals`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortalList {
    pub portals: Vec<SendTargetPortal>,
}

/// `POST /v1/portals`: the portal, and whether to keep it when SendTargets
/// on it fails (Windows' AddTargetPortal does not: the portal is not added
/// and the call fails).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortalAddRequest {
    #[serde(flatten)]
    pub portal: SendTargetPortal,
    /// Add the portal even if SendTargets on it fails (the answer is then
    /// 201 with `refresh_error`); it is tried again at each refresh.
    #[serde(default, skip_serializing_if = "is_false")]
    pub keep: bool,
}

/// How the message of a failed `POST /v1/portals` ends when SendTargets
/// failed and nothing was stored.
pub const PORTAL_NOT_ADDED: &str = "the portal was not added";

/// `POST /v1/portals` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortalAdded {
    pub portal: SendTargetPortal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_error: Option<ApiErrorBody>,
}

/// `GET /v1/isns-servers` (ReportiSNSServerList).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsnsServerList {
    pub isns_servers: Vec<IsnsServer>,
}

/// `POST /v1/isns-servers` (AddiSNSServer): the server, and whether to keep
/// it when it cannot be reached now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IsnsServerAddRequest {
    pub address: String,
    #[serde(default = "default_isns_port")]
    pub port: u16,
    /// Add the server even if registering with it fails (the answer is then
    /// 201 with `error`); the service keeps trying with back-off.
    #[serde(default, skip_serializing_if = "is_false")]
    pub keep: bool,
}

/// How the message of a failed `POST /v1/isns-servers` ends when the server
/// could not be reached and nothing was stored.
pub const ISNS_SERVER_NOT_ADDED: &str = "the iSNS server was not added";

/// `POST /v1/isns-servers` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsnsServerAdded {
    pub isns_server: IsnsServer,
    /// Why registering failed, when the server was kept all the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiErrorBody>,
}

/// `GET /v1/targets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetList {
    pub targets: Vec<Target>,
}

/// One portal whose SendTargets failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortalError {
    pub portal: Portal,
    pub error: ApiErrorBody,
}

/// `POST /v1/targets/refresh` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshResult {
    pub targets: Vec<Target>,
    pub errors: Vec<PortalError>,
}

fn one() -> u32 {
    1
}

/// `POST /v1/targets/login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub target_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal: Option<Portal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiator_port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_flags: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_options: Option<LoginOptions>,
    /// The IKE pre-shared key for the portal (Windows `Key`, RFC 3723 §2.3)
    /// when `security_flags` ask for IPsec; write-only: never returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<SecretString>,
    /// Tunnel mode: the target side's tunnel end, address or host name
    /// (Windows `SetIscsiTunnelModeOuterAddress`); absent: the portal's
    /// address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_outer_address: Option<String>,
    #[serde(default)]
    pub persistent: bool,
    #[serde(default = "one")]
    pub connections: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balance_policy: Option<String>,
    /// Seconds a command may be held while its connection is recovered,
    /// 1 to 3600 (Windows `MaxRequestHoldTime`; absent: the service's
    /// default, 60 unless configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_hold_time_s: Option<u32>,
    /// Seconds a lost connection may stay down before its commands fail,
    /// 1 to 3600 (Windows `LinkDownTime`; absent: the service's default, 15
    /// unless configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_down_time_s: Option<u32>,
}

impl LoginRequest {
    pub fn new(target_name: impl Into<String>) -> Self {
        Self {
            target_name: target_name.into(),
            portal: None,
            initiator_port: None,
            security_flags: None,
            login_options: None,
            key: None,
            tunnel_outer_address: None,
            persistent: false,
            connections: 1,
            load_balance_policy: None,
            max_request_hold_time_s: None,
            link_down_time_s: None,
        }
    }
}

/// `POST /v1/targets/login` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginResult {
    pub session_id: String,
    pub connection_ids: Vec<String>,
}

/// `GET /v1/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionList {
    pub sessions: Vec<Session>,
}

/// `POST /v1/sessions/{id}/connections`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddConnectionRequest {
    pub portal: Portal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiator_port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_flags: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_options: Option<LoginOptions>,
    /// The IKE pre-shared key (Windows `Key`); write-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<SecretString>,
    /// Tunnel mode: the target side's tunnel end; absent: the session's,
    /// else the portal's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_outer_address: Option<String>,
}

/// `POST /v1/sessions/{id}/connections` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionAdded {
    pub connection_id: String,
}

/// `PUT /v1/sessions/{id}/policy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRequest {
    pub load_balance_policy: String,
}

fn yes() -> bool {
    true
}

/// `PATCH /v1/sessions/{id}/connections/{cid}`: a connection's path
/// settings (Windows' `SetLoadBalancePolicy` paths: primary or standby,
/// weight); what is left out stays.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<bool>,
}

/// `POST /v1/sessions/{id}/scsi`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScsiRequest {
    pub lun: u64,
    /// The CDB in hex (1 to 16 bytes).
    pub cdb: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_in_length: Option<u32>,
    /// Bytes to write, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_out: Option<String>,
}

/// `POST /v1/sessions/{id}/scsi` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScsiResponse {
    pub scsi_status: u8,
    /// Sense data in hex (empty without CHECK CONDITION).
    pub sense: String,
    /// Data-In, base64.
    pub data: String,
    pub residual: u32,
}

/// `GET /v1/persistent-logins`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistentLoginList {
    pub persistent_logins: Vec<PersistentLogin>,
}

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub version: String,
    pub uptime_s: u64,
    pub sessions: usize,
}

/// The `error` object of every non-2xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    /// The ISDSC status code or a Win32 error code (87 for bad requests).
    pub code: u32,
    /// `code` as `0x%08X`.
    pub code_hex: String,
    /// e.g. `ISDSC_INVALID_SESSION_ID` or `ERROR_INVALID_PARAMETER`.
    pub name: String,
    pub message: String,
}

impl ApiErrorBody {
    pub fn new(code: u32, name: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code, code_hex: format!("0x{code:08X}"), name: name.into(), message: message.into() }
    }
}

impl std::fmt::Display for ApiErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, {})", self.message, self.name, self.code_hex)
    }
}

/// `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: ApiErrorBody,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn portal_port_defaults_to_3260() {
        let p: Portal = serde_json::from_str(r#"{"address":"10.0.0.1"}"#).unwrap();
        assert_eq!(p, Portal::new("10.0.0.1", 3260));
    }

    #[test]
    fn redacted_login_options_never_carry_the_password() {
        let o = LoginOptions {
            auth_type: Some(AuthType::Chap),
            password: Some(SecretString::new("supersecret12")),
            ..Default::default()
        };
        let j = serde_json::to_string(&o.redacted()).unwrap();
        assert!(!j.contains("supersecret12"), "{j}");
        assert!(j.contains(r#""password_set":true"#), "{j}");
        assert!(j.contains(r#""auth_type":"chap""#), "{j}");
        assert!(!format!("{o:?}").contains("supersecret12"));
    }

    #[test]
    fn error_body_has_hex_code() {
        let e = ApiErrorBody::new(0xEFFF001C, "ISDSC_INVALID_SESSION_ID", "no such session");
        let j = serde_json::to_value(ApiError { error: e }).unwrap();
        assert_eq!(j["error"]["code"], 0xEFFF001Cu32);
        assert_eq!(j["error"]["code_hex"], "0xEFFF001C");
    }

    #[test]
    fn login_request_defaults_one_connection() {
        let r: LoginRequest = serde_json::from_str(r#"{"target_name":"iqn.x"}"#).unwrap();
        assert_eq!(r.connections, 1);
        assert!(!r.persistent);
        assert_eq!((r.max_request_hold_time_s, r.link_down_time_s), (None, None));
    }

    #[test]
    fn recovery_times_are_optional_in_a_login_request() {
        assert_eq!((DEFAULT_MAX_REQUEST_HOLD_TIME_S, DEFAULT_LINK_DOWN_TIME_S), (60, 15));
        let r: LoginRequest =
            serde_json::from_str(r#"{"target_name":"iqn.x","max_request_hold_time_s":30,"link_down_time_s":5}"#)
                .unwrap();
        assert_eq!((r.max_request_hold_time_s, r.link_down_time_s), (Some(30), Some(5)));
        let j = serde_json::to_string(&LoginRequest::new("iqn.x")).unwrap();
        assert!(!j.contains("time_s"), "{j}");
    }
}
