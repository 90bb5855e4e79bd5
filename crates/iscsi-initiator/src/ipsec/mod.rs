//! IPsec for iSCSI connections (RFC 7143 §9.3, RFC 3723): Windows'
//! `AddConnection` / `LoginIScsiTarget` take `SecurityFlags` and a `Key`
//! (the IKE pre-shared key for the target portal) and bring up an IPsec
//! security association before the TCP connection. A user-space initiator
//! cannot do ESP itself; it asks an IKE daemon to do it through an
//! [`IpsecProvider`]. The one provider here drives strongSwan's charon over
//! VICI ([`StrongSwan`]).
//!
//! Per connection: the provider loads an IKEv2 connection and its PSK under
//! a name derived from the connection's `UniqueConnectionId`
//! ([`connection_name`]), initiates it, checks that the CHILD_SA is
//! installed, and only then does the initiator connect. Logout,
//! RemoveConnection and a failed login remove them again; a [`Protection`]
//! dropped without that removes them best effort, and
//! [`StrongSwan::remove_stale`] removes what a crashed process left. There
//! is never a fall back to clear text: a connection that asked for IPsec and
//! did not get it fails.
//!
//! ```
//! use iscsi_initiator::ipsec::{IpsecConfig, StrongSwan};
//! use iscsi_initiator::model::{IsdscCode, SecurityFlags};
//! use iscsi_proto::chap::Secret;
//!
//! // What `rsiscsi --ipsec tunnel --ipsec-psk-file F --vici-socket S` sets up.
//! let flags = SecurityFlags::VALID | SecurityFlags::IKE_IPSEC_ENABLED | SecurityFlags::TUNNEL_MODE_PREFERRED;
//! let cfg = IpsecConfig::new(flags)
//!     .with_key(Secret::new("lab-psk"))
//!     .with_provider(StrongSwan::new("/tmp/charon.vici"));
//! assert!(cfg.plan().unwrap().is_some());
//! // Without the key, Windows' error:
//! let e = IpsecConfig::new(flags).with_provider(StrongSwan::new("/tmp/x")).plan().unwrap_err();
//! assert_eq!(e.code(), IsdscCode::TargetPresharedkeyUnavailable);
//! ```

mod strongswan;

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use iscsi_proto::chap::Secret;
use tracing::{debug, info, warn};

pub use self::strongswan::{
    DEFAULT_VICI_SOCKET, StrongSwan, StrongSwanOptions, VICI_SOCKET_ENV, initiate_message, load_conn_message,
    load_shared_message, parse_list_sa, terminate_child_message, terminate_message, unload_conn_message,
    unload_shared_message,
};
use crate::model::{IkeMode, IpsecMode, IsdscCode, SecurityFlags, Status, UniqueConnectionId};

/// Prefix of every name we load into the IKE daemon: nothing else there is
/// ours, and nothing else is ever touched.
pub const NAME_PREFIX: &str = "rsiscsi-";

/// The name of the IKE connection, CHILD_SA config and shared key of one
/// iSCSI connection: `rsiscsi-<pid>-<UniqueConnectionId>`. The process id
/// lets a later run tell leftovers of a dead process from those of a live
/// one ([`StrongSwan::remove_stale`]).
pub fn connection_name(id: UniqueConnectionId) -> String {
    format!("{NAME_PREFIX}{}-{id}", std::process::id())
}

/// The process id in a name made by [`connection_name`].
pub fn name_pid(name: &str) -> Option<u32> {
    name.strip_prefix(NAME_PREFIX)?.split('-').next()?.parse().ok()
}

/// Why a connection could not be protected. [`IpsecError::code`] is the
/// Windows status for each.
#[derive(Debug, thiserror::Error)]
pub enum IpsecError {
    /// Windows `ISDSC_TARGET_PRESHAREDKEY_UNAVAILABLE`.
    #[error("IPsec was asked for, but no pre-shared key (Key) for the target was given")]
    NoKey,
    /// Windows `ISDSC_IPSEC_NOT_SUPPORTED_ON_OS`: no IKE daemon to ask.
    #[error("IPsec was asked for, but no IPsec provider is configured (an IKE daemon such as strongSwan's charon)")]
    NoProvider,
    /// IKEv2 has no aggressive mode, and the Microsoft initiator refuses it.
    #[error(
        "IKE aggressive mode (security flag 0x08) is not supported: IKEv2 has no such mode; use main mode (0x04) or neither"
    )]
    AggressiveMode,
    /// `ISCSI_LOGIN_FLAG_REQUIRE_IPSEC` without IPsec in the security flags.
    #[error(
        "the login options require IPsec (ISCSI_LOGIN_FLAG_REQUIRE_IPSEC), but the security flags do not enable it (VALID | IKE_IPSEC_ENABLED)"
    )]
    Required,
    /// A flag combination Windows refuses (see `SecurityFlags::validate`).
    #[error("{0}")]
    InvalidFlags(String),
    #[error("IPsec: cannot use {what} {addr:?}: {why}")]
    Address { what: &'static str, addr: String, why: String },
    #[error("cannot reach the IKE daemon at {path}: {source}")]
    Unreachable { path: String, source: std::io::Error },
    #[error("the IKE daemon refused {command}: {message}")]
    Refused { command: String, message: String },
    #[error("the IPsec security association with {peer} was not established: {message}")]
    NotEstablished { peer: String, message: String },
    #[error("the IKE daemon did not answer {0} in time")]
    Timeout(String),
    #[error("unexpected answer from the IKE daemon: {0}")]
    Protocol(String),
}

impl From<vici_proto::Error> for IpsecError {
    fn from(e: vici_proto::Error) -> Self {
        IpsecError::Protocol(e.to_string())
    }
}

impl IpsecError {
    /// The Windows status code: a missing key is
    /// `ISDSC_TARGET_PRESHAREDKEY_UNAVAILABLE`, no provider
    /// `ISDSC_IPSEC_NOT_SUPPORTED_ON_OS`, aggressive mode
    /// `ISDSC_REQUEST_NOT_SUPPORTED` (inferred: Windows' own code for it is
    /// not documented), flags that contradict each other
    /// `ISDSC_INVALID_PARAMETER`, everything else (the daemon unreachable, a
    /// refused or failed IKE exchange such as a wrong key, a required IPsec
    /// that is not enabled while a provider is there)
    /// `ISDSC_FAILED_TO_CONFIGURE_IPSEC`.
    pub fn code(&self) -> IsdscCode {
        match self {
            IpsecError::NoKey => IsdscCode::TargetPresharedkeyUnavailable,
            IpsecError::NoProvider => IsdscCode::IpsecNotSupportedOnOs,
            IpsecError::AggressiveMode => IsdscCode::RequestNotSupported,
            IpsecError::InvalidFlags(_) => IsdscCode::InvalidParameter,
            IpsecError::Required
            | IpsecError::Address { .. }
            | IpsecError::Unreachable { .. }
            | IpsecError::Refused { .. }
            | IpsecError::NotEstablished { .. }
            | IpsecError::Timeout(_)
            | IpsecError::Protocol(_) => IsdscCode::FailedToConfigureIpsec,
        }
    }
}

impl From<IpsecError> for Status {
    fn from(e: IpsecError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

/// A boxed future, so that providers can sit behind `Arc<dyn IpsecProvider>`.
pub type ProviderFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, IpsecError>> + Send + 'a>>;

/// Something that can put an IPsec security association in place for one
/// TCP connection and take it away again: an IKE daemon's control interface.
pub trait IpsecProvider: Send + Sync + fmt::Debug {
    /// Loads the connection and key `req` describes and brings the SA up;
    /// returns once the CHILD_SA is installed. Calling it again for an SA
    /// that is up leaves it as it is (recovery does).
    fn protect<'a>(&'a self, req: &'a ProtectRequest) -> ProviderFuture<'a, ()>;
    /// Removes the SA, the connection and the key loaded under `name`. A
    /// name that is not (or no longer) there is not an error.
    fn unprotect<'a>(&'a self, name: &'a str) -> ProviderFuture<'a, ()>;
    /// What is loaded and installed under our names ([`NAME_PREFIX`]).
    fn report(&self) -> ProviderFuture<'_, IpsecReport>;
    /// [`IpsecProvider::unprotect`] without an async runtime, bounded in
    /// time, errors only logged: for `Drop`.
    fn unprotect_blocking(&self, name: &str);
}

/// One connection's protection, as asked of the provider.
#[derive(Clone)]
pub struct ProtectRequest {
    /// Names the IKE connection, the CHILD_SA config and the shared key.
    pub name: String,
    pub mode: IpsecMode,
    /// A Diffie-Hellman group in the ESP proposal (Windows PFS_ENABLED).
    pub pfs: bool,
    /// The IKE pre-shared key (Windows `Key`).
    pub psk: Secret,
    /// Our address of the iSCSI connection; `None`: not known before the
    /// SA is up (tunnel mode without a route yet), the peer narrows the
    /// traffic selector to it (RFC 7296 §2.9).
    pub local: Option<IpAddr>,
    /// The target portal's address and port (the iSCSI connection's).
    pub remote: SocketAddr,
    /// Tunnel mode: the target side's tunnel end (Windows
    /// `SetIscsiTunnelModeOuterAddress`); the portal's address by default.
    pub tunnel_peer: IpAddr,
}

impl ProtectRequest {
    /// The IKE peer: the tunnel end in tunnel mode, the target itself in
    /// transport mode.
    pub fn ike_peer(&self) -> IpAddr {
        match self.mode {
            IpsecMode::Tunnel => self.tunnel_peer,
            IpsecMode::Transport => self.remote.ip(),
        }
    }
}

impl fmt::Debug for ProtectRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtectRequest")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .field("pfs", &self.pfs)
            .field("psk", &"<redacted>")
            .field("local", &self.local)
            .field("remote", &self.remote)
            .field("tunnel_peer", &self.tunnel_peer)
            .finish()
    }
}

/// What the provider holds under our names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpsecReport {
    /// IKE_SAs with their CHILD_SAs.
    pub sas: Vec<InstalledSa>,
    /// Loaded connection definitions.
    pub connections: Vec<String>,
    /// Loaded shared keys (their ids, never their values).
    pub keys: Vec<String>,
}

/// An IKE_SA (charon's `list-sa` event).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstalledSa {
    /// The connection (config) name.
    pub name: String,
    /// `ESTABLISHED`, `CONNECTING`, ...
    pub state: String,
    pub local_host: String,
    pub remote_host: String,
    pub children: Vec<InstalledChild>,
}

/// A CHILD_SA and its counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstalledChild {
    pub name: String,
    /// `INSTALLED` once ESP protects the traffic.
    pub state: String,
    /// `TUNNEL` or `TRANSPORT`.
    pub mode: String,
    /// UDP-encapsulated ESP.
    pub encap: bool,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub packets_in: u64,
    pub packets_out: u64,
    pub local_ts: Vec<String>,
    pub remote_ts: Vec<String>,
}

impl InstalledSa {
    /// True when a CHILD_SA of this IKE_SA is installed.
    pub fn is_installed(&self) -> bool {
        self.state == "ESTABLISHED" && self.children.iter().any(|c| c.state == "INSTALLED")
    }
}

/// The IPsec wishes of a session or connection: Windows' `SecurityFlags`,
/// `Key`, `SetIscsiTunnelModeOuterAddress` and the login flag
/// `ISCSI_LOGIN_FLAG_REQUIRE_IPSEC`, plus who to ask (the provider).
/// The key is zeroized when dropped and never shown.
#[derive(Clone, Default)]
pub struct IpsecConfig {
    pub security_flags: SecurityFlags,
    /// The IKE pre-shared key for the target portal (Windows `Key`).
    pub key: Option<Secret>,
    /// Tunnel mode: the target side's outer (tunnel end) address or host
    /// name; `None`: the portal's address.
    pub tunnel_outer_address: Option<String>,
    /// `ISCSI_LOGIN_FLAG_REQUIRE_IPSEC`: refuse to connect without IPsec.
    pub require_ipsec: bool,
    /// Who installs the SA; `None`: nobody, and asking for IPsec fails with
    /// `ISDSC_IPSEC_NOT_SUPPORTED_ON_OS`.
    pub provider: Option<Arc<dyn IpsecProvider>>,
}

impl fmt::Debug for IpsecConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpsecConfig")
            .field("security_flags", &format_args!("{:#x}", self.security_flags.bits()))
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("tunnel_outer_address", &self.tunnel_outer_address)
            .field("require_ipsec", &self.require_ipsec)
            .field("provider", &self.provider)
            .finish()
    }
}

/// What a valid [`IpsecConfig`] asks for.
#[derive(Clone)]
pub struct IpsecPlan {
    pub mode: IpsecMode,
    pub pfs: bool,
    pub psk: Secret,
    pub tunnel_outer_address: Option<String>,
    pub provider: Arc<dyn IpsecProvider>,
}

impl fmt::Debug for IpsecPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpsecPlan")
            .field("mode", &self.mode)
            .field("pfs", &self.pfs)
            .field("tunnel_outer_address", &self.tunnel_outer_address)
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

impl IpsecConfig {
    /// The given security flags; no key, no provider yet.
    pub fn new(security_flags: SecurityFlags) -> Self {
        Self { security_flags, ..Self::default() }
    }

    pub fn with_key(mut self, key: Secret) -> Self {
        self.key = Some(key);
        self
    }

    pub fn with_tunnel_outer_address(mut self, addr: impl Into<String>) -> Self {
        self.tunnel_outer_address = Some(addr.into());
        self
    }

    pub fn with_require_ipsec(mut self, require: bool) -> Self {
        self.require_ipsec = require;
        self
    }

    pub fn with_provider(mut self, provider: impl IpsecProvider + 'static) -> Self {
        self.provider = Some(Arc::new(provider));
        self
    }

    pub fn with_shared_provider(mut self, provider: Arc<dyn IpsecProvider>) -> Self {
        self.provider = Some(provider);
        self
    }

    /// True when these settings put IPsec under the connection (valid
    /// flags asking for it, a key, a provider): the connection is then
    /// never made without its SA, which is what relaxes Windows' CHAP
    /// secret length rule (`LoginOptions::validate(config.protects())`).
    pub fn protects(&self) -> bool {
        matches!(self.plan(), Ok(Some(_)))
    }

    /// Checks the wishes as Windows does, before anything is connected:
    /// `None` when no IPsec is asked for. The order of the checks gives
    /// each mistake its own status: contradicting flags, then a required
    /// IPsec that is not enabled, aggressive mode, a missing key, no
    /// provider. A key given without IPsec flags is ignored (Windows).
    pub fn plan(&self) -> Result<Option<IpsecPlan>, IpsecError> {
        let req = self.security_flags.validate().map_err(|s| IpsecError::InvalidFlags(s.message))?;
        if !req.required {
            // Required, but not asked for: with no provider there is no
            // IPsec on this system at all; with one, this connection's
            // IPsec is simply not configured.
            return match (self.require_ipsec, &self.provider) {
                (false, _) => Ok(None),
                (true, None) => Err(IpsecError::NoProvider),
                (true, Some(_)) => Err(IpsecError::Required),
            };
        }
        if req.ike_mode == Some(IkeMode::Aggressive) {
            return Err(IpsecError::AggressiveMode);
        }
        let psk = match &self.key {
            Some(k) if !k.expose().is_empty() => k.clone(),
            _ => return Err(IpsecError::NoKey),
        };
        let provider = self.provider.clone().ok_or(IpsecError::NoProvider)?;
        // RFC 3723 §2.3: tunnel mode is the one every implementation must
        // support, so it is the default when neither mode is preferred.
        let mode = req.mode.unwrap_or(IpsecMode::Tunnel);
        Ok(Some(IpsecPlan {
            mode,
            pfs: req.pfs,
            psk,
            tunnel_outer_address: self.tunnel_outer_address.clone(),
            provider,
        }))
    }
}

/// One connection's IPsec, in place: removed by [`Protection::release`]
/// (awaited: logout, RemoveConnection, a failed login), else best effort
/// when dropped.
pub struct Protection {
    req: ProtectRequest,
    provider: Arc<dyn IpsecProvider>,
    released: AtomicBool,
}

impl fmt::Debug for Protection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Protection").field("req", &self.req).finish_non_exhaustive()
    }
}

impl Protection {
    /// Puts the protection of connection `id` to `portal` in place (the
    /// SA is up when this returns). `local`: the initiator port's address,
    /// when one was chosen.
    pub async fn establish(
        plan: &IpsecPlan,
        id: UniqueConnectionId,
        portal: SocketAddr,
        local: Option<IpAddr>,
    ) -> Result<Protection, IpsecError> {
        let tunnel_peer = match &plan.tunnel_outer_address {
            Some(a) => resolve(a, "the tunnel outer address").await?,
            None => portal.ip(),
        };
        let local = local.or_else(|| route_source(portal));
        let req = ProtectRequest {
            name: connection_name(id),
            mode: plan.mode,
            pfs: plan.pfs,
            psk: plan.psk.clone(),
            local,
            remote: portal,
            tunnel_peer,
        };
        let p = Protection { req, provider: plan.provider.clone(), released: AtomicBool::new(false) };
        match p.provider.protect(&p.req).await {
            Ok(()) => {
                info!(name = %p.req.name, mode = ?p.req.mode, peer = %p.req.ike_peer(), portal = %portal, "IPsec SA up");
                Ok(p)
            }
            Err(e) => {
                // Nothing of ours stays behind after a failure.
                p.release().await;
                Err(e)
            }
        }
    }

    /// The name it is loaded under.
    pub fn name(&self) -> &str {
        &self.req.name
    }

    pub fn request(&self) -> &ProtectRequest {
        &self.req
    }

    /// Brings the SA up again if it went away (recovery, before a
    /// reconnect); an SA that is up is left alone.
    pub async fn ensure(&self) -> Result<(), IpsecError> {
        self.released.store(false, Ordering::Release);
        self.provider.protect(&self.req).await
    }

    /// Removes the SA, connection and key; errors are logged.
    pub async fn release(&self) {
        if self.released.swap(true, Ordering::AcqRel) {
            return;
        }
        match self.provider.unprotect(&self.req.name).await {
            Ok(()) => debug!(name = %self.req.name, "IPsec protection removed"),
            Err(e) => warn!(name = %self.req.name, "could not remove the IPsec protection: {e}"),
        }
    }
}

impl Drop for Protection {
    fn drop(&mut self) {
        if self.released.swap(true, Ordering::AcqRel) {
            return;
        }
        // Not awaited: a thread of its own, so that no runtime blocks.
        let (provider, name) = (self.provider.clone(), self.req.name.clone());
        let spawned = std::thread::Builder::new()
            .name("rsiscsi-ipsec-cleanup".into())
            .spawn(move || provider.unprotect_blocking(&name));
        match spawned {
            Ok(h) => cleanups().lock().unwrap_or_else(|p| p.into_inner()).push(h),
            Err(e) => warn!(name = %self.req.name, "could not start the IPsec cleanup: {e}"),
        }
    }
}

/// Cleanup threads started by dropped protections.
fn cleanups() -> &'static std::sync::Mutex<Vec<std::thread::JoinHandle<()>>> {
    static CLEANUPS: std::sync::OnceLock<std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>> =
        std::sync::OnceLock::new();
    CLEANUPS.get_or_init(Default::default)
}

/// Waits, at most `limit`, for the removals that dropped [`Protection`]s
/// started (a session dropped without a logout): call it before the
/// process exits, so that nothing of ours stays in the IKE daemon. Returns
/// false when some were still running at the limit (those are left to
/// [`StrongSwan::remove_stale`] of a later run).
pub fn finish_cleanups(limit: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    let pending: Vec<_> = std::mem::take(&mut *cleanups().lock().unwrap_or_else(|p| p.into_inner()));
    let mut all = true;
    for h in pending {
        while !h.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        if h.is_finished() {
            let _ = h.join();
        } else {
            all = false;
        }
    }
    all
}

/// An address or host name, resolved (the first address).
async fn resolve(host: &str, what: &'static str) -> Result<IpAddr, IpsecError> {
    let h = host.trim().trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = h.parse::<IpAddr>() {
        return Ok(ip);
    }
    let err = |why: String| IpsecError::Address { what, addr: host.to_string(), why };
    let mut addrs = tokio::net::lookup_host((h, 0)).await.map_err(|e| err(e.to_string()))?;
    addrs.next().map(|a| a.ip()).ok_or_else(|| err("the name has no address".into()))
}

/// The source address the kernel would use towards `remote`, when it has a
/// route (a UDP socket's connect sends nothing).
fn route_source(remote: SocketAddr) -> Option<IpAddr> {
    let any: SocketAddr = if remote.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let s = std::net::UdpSocket::bind(any).ok()?;
    s.connect(remote).ok()?;
    s.local_addr().ok().map(|a| a.ip()).filter(|ip| !ip.is_unspecified())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    const V: SecurityFlags = SecurityFlags::VALID;
    const IKE: SecurityFlags = SecurityFlags::IKE_IPSEC_ENABLED;

    fn provider() -> StrongSwan {
        StrongSwan::new("/nonexistent/charon.vici")
    }

    #[test]
    fn no_flags_no_ipsec_and_a_stray_key_is_ignored() {
        assert!(IpsecConfig::default().plan().unwrap().is_none());
        assert!(IpsecConfig::new(SecurityFlags(0)).with_key(Secret::new("k")).plan().unwrap().is_none());
    }

    #[test]
    fn each_mistake_has_its_status() {
        let code = |c: IpsecConfig| c.plan().unwrap_err().code();
        assert_eq!(code(IpsecConfig::default().with_require_ipsec(true)), IsdscCode::IpsecNotSupportedOnOs);
        assert_eq!(
            code(IpsecConfig::default().with_require_ipsec(true).with_provider(provider())),
            IsdscCode::FailedToConfigureIpsec
        );
        assert_eq!(
            code(IpsecConfig::new(V | IKE | SecurityFlags::AGGRESSIVE_MODE_ENABLED).with_key(Secret::new("k"))),
            IsdscCode::RequestNotSupported
        );
        assert_eq!(code(IpsecConfig::new(V | IKE).with_provider(provider())), IsdscCode::TargetPresharedkeyUnavailable);
        assert_eq!(
            code(IpsecConfig::new(V | IKE).with_key(Secret::new("")).with_provider(provider())),
            IsdscCode::TargetPresharedkeyUnavailable
        );
        assert_eq!(code(IpsecConfig::new(V | IKE).with_key(Secret::new("k"))), IsdscCode::IpsecNotSupportedOnOs);
        let both = V | IKE | SecurityFlags::TUNNEL_MODE_PREFERRED | SecurityFlags::TRANSPORT_MODE_PREFERRED;
        assert_eq!(code(IpsecConfig::new(both).with_key(Secret::new("k"))), IsdscCode::InvalidParameter);
    }

    #[test]
    fn modes_and_pfs() {
        let plan = |f: SecurityFlags| {
            IpsecConfig::new(f).with_key(Secret::new("k")).with_provider(provider()).plan().unwrap().unwrap()
        };
        assert_eq!(plan(V | IKE).mode, IpsecMode::Tunnel, "RFC 3723: tunnel mode by default");
        assert_eq!(plan(V | IKE | SecurityFlags::TRANSPORT_MODE_PREFERRED).mode, IpsecMode::Transport);
        let p = plan(V | IKE | SecurityFlags::MAIN_MODE_ENABLED | SecurityFlags::PFS_ENABLED);
        assert!(p.pfs);
        assert_eq!(p.mode, IpsecMode::Tunnel);
    }

    #[test]
    fn secrets_stay_hidden() {
        let c = IpsecConfig::new(V | IKE).with_key(Secret::new("hunter2hunter2")).with_provider(provider());
        let shown = format!("{c:?} {:?}", c.plan().unwrap());
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn names_carry_the_pid_and_the_connection_id() {
        let id = UniqueConnectionId::new(0xabc, 7);
        let n = connection_name(id);
        assert_eq!(n, format!("rsiscsi-{}-abc-7", std::process::id()));
        assert_eq!(name_pid(&n), Some(std::process::id()));
        assert_eq!(name_pid("other-1-2"), None);
        assert_eq!(name_pid("rsiscsi-x-2"), None);
    }
}
