//! The Windows-shaped management operations on a live session
//! (`MSIscsiInitiator_SessionClass`): AddConnection, RemoveConnection and
//! SendScsiCommand, with their ISDSC status codes.

use bytes::Bytes;
use iscsi_proto::chap::ChapConfig;
use iscsi_proto::negotiation::Digest;
use iscsi_proto::scsi::cdb::Cdb;

use super::{ConnectionLogin, DataDirection, Session};
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
    /// IPsec/IKE wishes: a request that needs IPsec fails with
    /// `ISDSC_IPSEC_NOT_SUPPORTED_ON_OS` (no IPsec policy can be put in
    /// place from user space) and never connects in clear text.
    /// `login_options` fields count only where their information-specified
    /// bit is set; CHAP uses their user name (empty: the initiator node name)
    /// and password, mutual CHAP the target credentials of the session.
    pub async fn add_connection(
        &self,
        initiator_port: u32,
        target_portal: &Portal,
        security_flags: SecurityFlags,
        login_options: &LoginOptions,
        key: &[u8],
    ) -> Result<UniqueConnectionId, Status> {
        let _ = key; // the IPsec pre-shared key: only meaningful with IPsec.
        if self.closed_reason().is_some() {
            return Err(Status::new(IsdscCode::InvalidSessionId, format!("session {} is closed", self.id())));
        }
        let ipsec = security_flags.validate()?;
        if ipsec.required || login_options.login_flags.contains(LoginFlags::REQUIRE_IPSEC) {
            return Err(Status::new(
                IsdscCode::IpsecNotSupportedOnOs,
                "IPsec was requested, but no IPsec policy can be put in place by this user-space initiator; not connecting in clear text",
            ));
        }
        login_options.validate(false)?;
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
