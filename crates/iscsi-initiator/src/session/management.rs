//! The Windows-shaped management operations on a live session
//! (`MSIscsiInitiator_SessionClass`): AddConnection, RemoveConnection and
//! SendScsiCommand, with their ISDSC status codes.

use bytes::Bytes;
use iscsi_proto::chap::{ChapConfig, Secret};
use iscsi_proto::negotiation::Digest;
use iscsi_proto::scsi::cdb::Cdb;

use super::{ConnectionLogin, DataDirection, Session};
use crate::ipsec::IpsecConfig;
use crate::model::{
    AuthType, DigestType, ISCSI_ANY_INITIATOR_PORT, IsdscCode, LoginFlags, LoginOptions, Portal, SecurityFlags, Status,
    UniqueConnectionId,
};

/// Data of a pass-through SCSI command.
#[derive(Debug, Clone)]
pub enum ScsiData {
    None,
    /// Read at most this many bytes.
    In(u32),
    /// Write these bytes.
    Out(Bytes),
}

/// What came back from a pass-through SCSI command that reached the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiResult {
    pub status: u8,
    pub sense: Bytes,
    pub data: Bytes,
}

fn digests(d: Option<DigestType>) -> Option<Vec<Digest>> {
    d.map(|d| match d {
        DigestType::None => vec![Digest::None],
        DigestType::Crc32c => vec![Digest::Crc32c],
    })
}

/// The local address of initiator port `port`: ports are the host's
/// network interfaces, numbered by interface index (as `ip link` shows).
pub fn initiator_port_address(port: u32, v6: bool) -> Result<Option<std::net::IpAddr>, Status> {
    if port == ISCSI_ANY_INITIATOR_PORT {
        return Ok(None);
    }
    let ifaces = if_addrs::get_if_addrs()
        .map_err(|e| Status::new(IsdscCode::InvalidPortNumber, format!("cannot list network interfaces: {e}")))?;
    let mine: Vec<_> = ifaces.iter().filter(|i| i.index == Some(port)).collect();
    if mine.is_empty() {
        return Err(Status::new(IsdscCode::InvalidPortNumber, format!("no network interface has index {port}")));
    }
    mine.iter().map(|i| i.ip()).find(|ip| ip.is_ipv6() == v6).map(Some).ok_or_else(|| {
        Status::new(IsdscCode::InvalidPortNumber, format!("interface {port} has no address of the portal's family"))
    })
}

impl Session {
    /// Windows `MSIscsiInitiator_SessionClass.AddConnection`: logs one more
    /// connection into this live session and puts it into service.
    ///
    /// `initiator_port` is a network interface index, or
    /// [`ISCSI_ANY_INITIATOR_PORT`]. `security_flags` and `key` are the
    /// IPsec/IKE wishes (RFC 7143 §9.3, RFC 3723): with
    /// `VALID | IKE_IPSEC_ENABLED` the session's IPsec provider
    /// (`SessionConfig::ipsec`) brings up an IKEv2 security association
    /// with `key` as pre-shared key before the TCP connection is made, and
    /// the connection fails (never in clear text) when it cannot:
    /// `ISDSC_TARGET_PRESHAREDKEY_UNAVAILABLE` without a key,
    /// `ISDSC_IPSEC_NOT_SUPPORTED_ON_OS` without a provider,
    /// `ISDSC_FAILED_TO_CONFIGURE_IPSEC` when the daemon cannot be reached or
    /// the SA does not come up (a wrong key), `ISDSC_REQUEST_NOT_SUPPORTED`
    /// for aggressive mode. `ISCSI_LOGIN_FLAG_REQUIRE_IPSEC` in the login
    /// flags without IPsec flags fails with `ISDSC_FAILED_TO_CONFIGURE_IPSEC`
    /// (`ISDSC_IPSEC_NOT_SUPPORTED_ON_OS` when there is no provider).
    /// Tunnel mode goes to the session's tunnel outer address, else the
    /// portal's address; see [`Session::add_connection_with`] to name one.
    /// `login_options` fields count only where their information-specified
    /// bit is set; CHAP uses their user name (empty: the initiator node name)
    /// and password, mutual CHAP the target credentials of the session. A
    /// CHAP secret shorter than 12 bytes is allowed only on a connection
    /// that IPsec protects (it is never made without its SA).
    pub async fn add_connection(
        &self,
        initiator_port: u32,
        target_portal: &Portal,
        security_flags: SecurityFlags,
        login_options: &LoginOptions,
        key: &[u8],
    ) -> Result<UniqueConnectionId, Status> {
        self.add_connection_with(initiator_port, target_portal, security_flags, login_options, key, None).await
    }

    /// [`Session::add_connection`] with the target side's tunnel end for
    /// this connection (Windows `SetIscsiTunnelModeOuterAddress`: an
    /// address or host name); `None`: the session's, else the portal's
    /// address.
    pub async fn add_connection_with(
        &self,
        initiator_port: u32,
        target_portal: &Portal,
        security_flags: SecurityFlags,
        login_options: &LoginOptions,
        key: &[u8],
        tunnel_outer_address: Option<&str>,
    ) -> Result<UniqueConnectionId, Status> {
        if self.closed_reason().is_some() {
            return Err(Status::new(IsdscCode::InvalidSessionId, format!("session {} is closed", self.id())));
        }
        let session = &self.inner.cfg.ipsec;
        // Windows callers may count the key's terminating NUL in its length.
        let key = key.strip_suffix(&[0]).unwrap_or(key);
        let ipsec = IpsecConfig {
            security_flags,
            key: (!key.is_empty()).then(|| Secret::new(key)),
            tunnel_outer_address: tunnel_outer_address
                .map(str::to_string)
                .or_else(|| session.tunnel_outer_address.clone()),
            require_ipsec: login_options.login_flags.contains(LoginFlags::REQUIRE_IPSEC),
            provider: session.provider.clone(),
        };
        let plan = ipsec.plan()?;
        login_options.validate(plan.is_some())?;
        let portal = target_portal.to_portal_addr()?;
        let local = initiator_port_address(initiator_port, portal.host.contains(':'))?;
        let limit = self.params().max_connections;
        if limit <= 1 {
            return Err(Status::new(
                IsdscCode::RequestNotSupported,
                "the target allows only one connection per session (MaxConnections=1)",
            ));
        }
        let chap = match login_options.auth_type() {
            None => None,
            Some(AuthType::None) => Some(None),
            Some(a) => {
                let secret = login_options
                    .password()
                    .cloned()
                    .ok_or_else(|| Status::new(IsdscCode::InvalidChapSecret, "CHAP asked for without a password"))?;
                let mut c = ChapConfig::new(login_options.chap_name(self.initiator_name()), secret);
                if a == AuthType::MutualChap {
                    let target = self.inner.cfg.chap.as_ref().and_then(|c| c.target.clone()).ok_or_else(|| {
                        Status::new(
                            IsdscCode::InvalidInitiatorChapSecret,
                            "mutual CHAP needs the initiator's CHAP secret, which this session lacks",
                        )
                    })?;
                    c.target = Some(target);
                }
                Some(Some(c))
            }
        };
        let how = ConnectionLogin {
            chap,
            header_digest: digests(login_options.header_digest()),
            data_digest: digests(login_options.data_digest()),
            local_address: local,
            ipsec: Some(ipsec),
        };
        self.connect_more(&portal, &how).await.map_err(Status::from)
    }

    /// Windows `MSIscsiInitiator_SessionClass.RemoveConnection`: the
    /// connection's tasks finish first, then it logs out (reason: close the
    /// connection). The leading and the last connection cannot be removed.
    pub async fn remove_connection(&self, id: UniqueConnectionId) -> Result<(), Status> {
        self.close_connection(id).await.map_err(Status::from)
    }

    /// A pass-through SCSI command (the WMI `SendScsi*` methods in one):
    /// the status, sense and data the target returned, whatever the status;
    /// an error only when the command did not complete at the target.
    pub async fn send_scsi_command(&self, lun: u64, cdb: &[u8], data: ScsiData) -> Result<ScsiResult, Status> {
        let cdb = Cdb::from_slice(cdb).ok_or_else(|| {
            Status::invalid_parameter(format!("a CDB of {} bytes (1 to 16 are supported)", cdb.len()))
        })?;
        let dir = match data {
            ScsiData::None => DataDirection::None,
            ScsiData::In(n) => DataDirection::Read(n),
            ScsiData::Out(b) => DataDirection::Write(b),
        };
        let out = self.execute(lun, &cdb, dir).await.map_err(Status::from)?;
        Ok(ScsiResult { status: out.status, sense: out.sense, data: out.data })
    }
}
