//! A session in full feature phase (RFC 7143 §4) over one or more TCP
//! connections (MC/S).
//!
//! The session owns ITT and CmdSN allocation, so no caller can get them
//! wrong: the CmdSN window and the task table are session-wide, StatSN is
//! per connection, and every PDU of a task stays on the connection its
//! command went out on (allegiance, RFC 7143 §4.2.2). New commands are
//! spread over the connections by the load-balance policy.

mod dropped;
mod erl2;
mod failover;
mod fault;
pub use self::fault::{ConnectionFault, FaultKind, GiveUp, GiveUpWhy, RecoveryStats};
mod health;
pub use self::health::ConnectionState;
mod hold;
mod io;
mod management;
pub use self::management::initiator_port_address;
mod recovery;
mod reply;
mod rx;
mod state;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use iscsi_proto::negotiation::{Digest, Negotiated};
use iscsi_proto::pdu::{FrameConfig, PduDecoder, RESERVED_TAG, logout_reason, task_attr};
use iscsi_proto::scsi::cdb::Cdb;
use iscsi_proto::seq::CmdWindow;
use iscsi_proto::text::{self, TextAccumulator, TextPairs};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

pub use self::management::{ScsiData, ScsiResult};
use self::state::{Burst, ConnState, Reply, ScsiTask, State, Task, TaskKind};
pub use self::state::{ConnCounters, LatencyHistogram};
use crate::config::SessionConfig;
use crate::error::{Error, Result};
use crate::ipsec::Protection;
use crate::login::{LoggedIn, LoginOutcome, LoginParams, login};
use crate::model::{IdAllocator, LoadBalancePolicy, UniqueConnectionId, UniqueSessionId};
use crate::portal::PortalAddr;

/// How long new commands wait, after a connection's logout is answered,
/// for the target to close it (`Inner::wait_closed_by_target`).
const LOGOUT_CLOSE: Duration = Duration::from_secs(2);

/// Direction and size of a SCSI command's data.
#[derive(Debug, Clone)]
pub enum DataDirection {
    None,
    /// Read up to this many bytes.
    Read(u32),
    /// Write these bytes.
    Write(Bytes),
}

/// The result of a SCSI command that reached the target and came back.
#[derive(Debug, Clone, Default)]
pub struct ScsiOutcome {
    /// SCSI status byte (SAM-5).
    pub status: u8,
    /// Sense data (without the iSCSI SenseLength prefix), when sent.
    pub sense: Bytes,
    /// Data-In received, in order.
    pub data: Bytes,
    /// Residual count: positive for underflow, negative for overflow.
    pub residual: i64,
}

/// What the management view shows of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub id: UniqueConnectionId,
    /// The iSCSI CID.
    pub cid: u16,
    pub leading: bool,
    pub portal: PortalAddr,
    pub local_address: Option<std::net::SocketAddr>,
    pub remote_address: Option<std::net::SocketAddr>,
    pub header_digest: Digest,
    pub data_digest: Digest,
    pub max_recv_data_segment_length: u32,
    pub max_xmit_data_segment_length: u32,
    pub outstanding: usize,
    pub primary: bool,
    pub weight: u32,
    pub counters: ConnCounters,
    /// Whether this connection holds commands back while the target is
    /// busy, as its last trial chose (`session::hold`); `None` while it
    /// is still measuring.
    pub holds_back: Option<bool>,
    /// The name its IPsec protection is loaded under in the IKE daemon
    /// (`ipsec::connection_name`); `None`: no IPsec.
    pub ipsec: Option<String>,
    /// Taking commands, stalled, or being recovered.
    pub state: ConnectionState,
    /// The link's rate, bytes per second (the median of the socket's recent
    /// delivery-rate samples, `LinkRate`): least-queue-depth weighs the
    /// connection by it, and every spreading policy bounds its queue by it
    /// (`PathView::has_room`). `None` while the session has one connection,
    /// and before enough samples (a connection that only reads stays so).
    pub link_rate: Option<u64>,
}

/// The management view of connection `c`.
fn connection_info(st: &State, c: &ConnState) -> ConnectionInfo {
    ConnectionInfo {
        id: c.id,
        cid: c.cid,
        leading: c.cid == st.leading_cid,
        portal: c.portal.clone(),
        local_address: c.local,
        remote_address: c.remote,
        header_digest: c.params.header_digest,
        data_digest: c.params.data_digest,
        max_recv_data_segment_length: c.params.max_recv_data_segment_length,
        max_xmit_data_segment_length: c.max_xmit,
        outstanding: c.outstanding,
        primary: c.primary,
        weight: c.weight,
        counters: {
            let mut n = c.counters;
            if let Some(old) = st.retired_counters.get(&c.cid) {
                n.absorb(old);
            }
            n
        },
        holds_back: c.tuner.choice(),
        ipsec: st
            .wanted
            .iter()
            .find(|w| w.cid == c.cid)
            .and_then(|w| w.protection.as_ref())
            .map(|p| p.name().to_string()),
        state: if c.stalled { ConnectionState::Stalled } else { ConnectionState::FullFeature },
        link_rate: Some(c.link_rate.bytes_per_sec()).filter(|r| *r > 0),
    }
}

/// Per-connection login settings for [`Session::connect_more`]: the CHAP
/// credentials and digests a new connection logs in with.
#[derive(Debug, Clone, Default)]
pub struct ConnectionLogin {
    /// `None` keeps the session's own CHAP settings.
    pub chap: Option<Option<iscsi_proto::chap::ChapConfig>>,
    pub header_digest: Option<Vec<Digest>>,
    pub data_digest: Option<Vec<Digest>>,
    /// Connect from this local address (the initiator port).
    pub local_address: Option<std::net::IpAddr>,
    /// IPsec for this connection; `None`: the session's
    /// (`SessionConfig::ipsec`).
    pub ipsec: Option<crate::ipsec::IpsecConfig>,
}

pub(crate) struct Inner {
    state: Mutex<State>,
    cfg: SessionConfig,
    id: UniqueSessionId,
    target_name: Option<String>,
    portal: PortalAddr,
    params: Negotiated,
    /// Serialises connection and session recovery.
    recovery: tokio::sync::Mutex<()>,
}

/// A logged-in iSCSI session.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.inner.id)
            .field("target", &self.inner.target_name)
            .field("portal", &self.inner.portal)
            .field("tsih", &self.tsih())
            .finish()
    }
}

/// Removes a protection that is no longer wanted (a failed login).
async fn release(p: Option<Arc<Protection>>) {
    if let Some(p) = p {
        p.release().await;
    }
}

/// Process-wide allocator of session and connection ids.
fn ids() -> &'static IdAllocator {
    IdAllocator::global()
}

/// Frame settings of a connection from what its login negotiated.
fn frame_configs(p: &Negotiated) -> (FrameConfig, FrameConfig) {
    let rx = FrameConfig {
        header_digest: p.header_digest == Digest::Crc32c,
        data_digest: p.data_digest == Digest::Crc32c,
        max_recv_data_segment_length: p.max_recv_data_segment_length,
    };
    (rx, rx)
}

/// Starts the reader and writer of a logged-in connection.
fn spawn_connection(
    inner: &Arc<Inner>,
    cid: u16,
    id: UniqueConnectionId,
    portal: PortalAddr,
    stream: TcpStream,
    l: LoggedIn,
) -> ConnState {
    let (rx_cfg, tx_cfg) = frame_configs(&l.negotiated);
    let (local, remote) = (stream.local_addr().ok(), stream.peer_addr().ok());
    io::watch_link(&stream, inner.cfg.stall_time);
    let (tx, rx) = mpsc::unbounded_channel();
    let (rd, wr) = stream.into_split();
    let link = Arc::new(io::Link::new(wr));
    let w = tokio::spawn(io::writer(link.clone(), rx, tx.downgrade()));
    let r =
        tokio::spawn(io::reader(Arc::downgrade(inner), cid, rd, PduDecoder::new(rx_cfg), l.leftover, link.failure()));
    ConnState {
        cid,
        id,
        portal,
        local,
        remote,
        max_xmit: l.negotiated.max_xmit_data_segment_length,
        params: l.negotiated,
        tx,
        link,
        tx_cfg,
        exp_stat_sn: l.exp_stat_sn,
        ping_itt: None,
        outstanding: 0,
        outstanding_bytes: 0,
        link_rate: Default::default(),
        draining: false,
        stalled: false,
        primary: true,
        weight: 1,
        counters: ConnCounters::default(),
        tuner: Default::default(),
        handles: vec![w, r],
    }
}

/// Times out overdue commands (`State::expire_overdue`) and sends the
/// ones held back a few times per `command_timeout`, at most every
/// 250 ms; ends with the session.
async fn sweep_overdue(weak: std::sync::Weak<Inner>) {
    let Some(timeout) = weak.upgrade().map(|i| i.cfg.command_timeout) else { return };
    let tick = (timeout / 8).clamp(Duration::from_millis(10), Duration::from_millis(250));
    let mut every = tokio::time::interval(tick);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        let mut st = inner.lock();
        st.expire_overdue(std::time::Instant::now());
        st.sample_link_rates();
        // A command held back (io::Link) waits one tick at most, even when
        // the target sits on the commands it has.
        st.flush_held();
    }
}

impl Session {
    /// Logs in to `target_name` (or a discovery session when `None`) at
    /// `portal`, following login redirections. With IPsec asked for in
    /// `cfg.ipsec`, the security association is up before the TCP
    /// connection is made, or the login fails without connecting (RFC 7143
    /// §9.3); a redirection gets a protection of its own.
    pub async fn login(portal: &PortalAddr, target_name: Option<&str>, cfg: SessionConfig) -> Result<Self> {
        let plan = cfg.ipsec.plan()?;
        let id = ids().next_connection();
        let mut addr = portal.clone();
        let mut redirects = 0;
        loop {
            let (mut stream, protection) =
                io::connect_protected(&addr, &cfg, cfg.local_address, plan.as_ref(), id).await?;
            let params = LoginParams { cfg: &cfg, target_name, tsih: 0, cid: 0, cmd_sn: 1, exp_stat_sn: 0 };
            let outcome = match login(&mut stream, &params).await {
                Ok(o) => o,
                Err(e) => {
                    release(protection).await;
                    return Err(e);
                }
            };
            match outcome {
                LoginOutcome::LoggedIn(l) => {
                    info!(portal = %addr, target = target_name.unwrap_or("(discovery)"), tsih = l.tsih, "logged in");
                    return Ok(Self::start(stream, addr, target_name, cfg, *l, id, protection));
                }
                LoginOutcome::Redirect(to) => {
                    release(protection).await;
                    redirects += 1;
                    if redirects > cfg.max_redirects {
                        return Err(Error::TooManyRedirects(cfg.max_redirects));
                    }
                    info!(from = %addr, to = %to, "login redirected");
                    addr = to;
                }
            }
        }
    }

    fn start(
        stream: TcpStream,
        portal: PortalAddr,
        target: Option<&str>,
        cfg: SessionConfig,
        l: LoggedIn,
        id: UniqueConnectionId,
        protection: Option<Arc<Protection>>,
    ) -> Self {
        let params = l.negotiated.clone();
        let mut state = State::new(
            CmdWindow::new(l.exp_cmd_sn, l.exp_cmd_sn, l.max_cmd_sn),
            Burst {
                first_burst_length: params.first_burst_length,
                immediate_data: params.immediate_data,
                initial_r2t: params.initial_r2t,
            },
            l.tsih,
        );
        state.budget = cfg.recovery_budget;
        let inner = Arc::new(Inner {
            state: Mutex::new(state),
            cfg,
            id: ids().next_session(),
            target_name: target.map(str::to_string),
            portal: portal.clone(),
            params,
            recovery: tokio::sync::Mutex::new(()),
        });
        tokio::spawn(sweep_overdue(Arc::downgrade(&inner)));
        let conn = spawn_connection(&inner, 0, id, portal.clone(), stream, l);
        // Recovery logs in again from the address the route chose for the
        // first login when the user named none: the connection belongs to
        // that initiator port (issue 19), not to whatever the route says later.
        let local_address = inner.cfg.local_address.or(conn.local.map(|a| a.ip()));
        let mut st = inner.lock();
        st.flush_held();
        st.conns.push(conn);
        let how = ConnectionLogin { local_address, ..ConnectionLogin::default() };
        st.wanted.push(state::Wanted { cid: 0, portal, how, protection });
        drop(st);
        Session { inner }
    }

    /// The session's management id (Windows `UniqueSessionId`).
    pub fn id(&self) -> UniqueSessionId {
        self.inner.id
    }

    /// Parameters negotiated on the leading login.
    pub fn params(&self) -> &Negotiated {
        &self.inner.params
    }

    /// Target Session Identifying Handle assigned by the target.
    pub fn tsih(&self) -> u16 {
        self.inner.lock().tsih
    }

    pub fn isid(&self) -> [u8; 6] {
        self.inner.cfg.isid
    }

    pub fn initiator_name(&self) -> &str {
        &self.inner.cfg.initiator_name
    }

    pub fn target_name(&self) -> Option<&str> {
        self.inner.target_name.as_deref()
    }

    /// The portal of the leading login (after redirects).
    pub fn portal(&self) -> &PortalAddr {
        &self.inner.portal
    }

    /// Why the session stopped, if it did.
    pub fn closed_reason(&self) -> Option<String> {
        self.inner.lock().closed.clone()
    }

    /// What recovery did in this session so far: connections recovered and
    /// reinstated, sessions reinstated, commands it gave up on.
    pub fn recovery_stats(&self) -> RecoveryStats {
        self.inner.lock().recovery_stats
    }

    /// The connections of the session, leading first: those in service
    /// (full feature phase or stalled), then those being recovered, each
    /// with the id, portal and local address it had. A connection logged
    /// in only to carry a lost link's CmdSN fillers (`failover.rs`) is not
    /// one of them: it takes no commands and logs out once they are answered.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        let st = self.inner.lock();
        let mut all: Vec<ConnectionInfo> =
            st.conns.iter().filter(|c| !st.gap_fillers.contains(&c.cid)).map(|c| connection_info(&st, c)).collect();
        if st.closed.is_none() {
            all.extend(st.recovering.iter().filter(|r| !st.conns.iter().any(|c| c.cid == r.cid)).map(|r| {
                let mut info = r.info.clone();
                info.state = ConnectionState::Recovering;
                info.outstanding = 0;
                info.leading = false;
                info
            }));
        }
        all
    }

    /// The load-balance policy in force.
    pub fn load_balance_policy(&self) -> LoadBalancePolicy {
        self.inner.lock().balancer.policy()
    }

    /// Switches the load-balance policy; commands already sent keep their
    /// connection, new ones follow the new policy at once.
    pub fn set_load_balance_policy(&self, policy: LoadBalancePolicy) {
        self.inner.lock().balancer.set_policy(policy);
    }

    /// Sets a connection's role for the policies that use one: primary
    /// (failover, round robin with subset) and weight (weighted paths).
    pub fn set_path(&self, id: UniqueConnectionId, primary: bool, weight: u32) -> Result<()> {
        let mut st = self.inner.lock();
        let c = st.conns.iter_mut().find(|c| c.id == id).ok_or(Error::InvalidConnectionId(id.to_string()))?;
        c.primary = primary;
        c.weight = weight;
        Ok(())
    }

    /// Logs in one more connection to this session (RFC 7143 §5.3: same
    /// ISID, the session's TSIH, a new CID; only connection keys are
    /// negotiated) and puts it into service while I/O goes on. IPsec as
    /// `how.ipsec` (else the session's) asks: up before the TCP connection,
    /// or no connection.
    pub async fn connect_more(&self, portal: &PortalAddr, how: &ConnectionLogin) -> Result<UniqueConnectionId> {
        let inner = &self.inner;
        let plan = how.ipsec.as_ref().unwrap_or(&inner.cfg.ipsec).plan()?;
        let (cid, cmd_sn, tsih) = {
            let mut st = inner.lock();
            if let Some(r) = &st.closed {
                return Err(Error::ConnectionLost(r.clone()));
            }
            let limit = inner.params.max_connections;
            if st.conns.len() >= usize::from(limit) {
                return Err(Error::TooManyConnections { limit });
            }
            let cid = st.next_cid;
            st.next_cid = st.next_cid.wrapping_add(1);
            (cid, st.window.current(), st.tsih)
        };
        let cfg = inner.connection_cfg(how);
        let id = ids().next_connection();
        let (mut stream, protection) =
            io::connect_protected(portal, &cfg, how.local_address, plan.as_ref(), id).await?;
        let target = inner.target_name.as_deref();
        let params = LoginParams { cfg: &cfg, target_name: target, tsih, cid, cmd_sn, exp_stat_sn: 0 };
        let l = match login(&mut stream, &params).await {
            Ok(LoginOutcome::LoggedIn(l)) => l,
            Ok(LoginOutcome::Redirect(to)) => {
                release(protection).await;
                return Err(Error::Redirected(to));
            }
            Err(e) => {
                release(protection).await;
                return Err(e);
            }
        };
        let conn = spawn_connection(inner, cid, id, portal.clone(), stream, *l);
        // Its reinstatements come from the same local address (see `start`).
        let mut how = how.clone();
        how.local_address = how.local_address.or(conn.local.map(|a| a.ip()));
        // Logged out meanwhile: the new connection and its SA go again.
        let closed = {
            let mut st = inner.lock();
            match st.closed.clone() {
                Some(r) => Some((r, conn, protection)),
                None => {
                    st.flush_held();
                    st.conns.push(conn);
                    st.wanted.push(state::Wanted { cid, portal: portal.clone(), how, protection });
                    info!(session = %inner.id, connection = %id, cid, portal = %portal, "connection added");
                    st.drain_queue();
                    None
                }
            }
        };
        if let Some((r, conn, protection)) = closed {
            drop(conn);
            release(protection).await;
            return Err(Error::ConnectionLost(r));
        }
        Ok(id)
    }

    /// Takes a connection out of the session: it gets no new tasks, its
    /// tasks finish, then it logs out with reason "close the connection"
    /// (RFC 7143 §11.14.1). The leading and the last connection stay.
    async fn close_connection(&self, id: UniqueConnectionId) -> Result<()> {
        let cid = {
            let mut st = self.inner.lock();
            let leading = st.leading_cid;
            let n = st.conns.len();
            let c = st.conns.iter_mut().find(|c| c.id == id).ok_or(Error::InvalidConnectionId(id.to_string()))?;
            if n <= 1 {
                return Err(Error::CantRemoveLastConnection);
            }
            if c.cid == leading {
                return Err(Error::CannotRemoveLeadingConnection);
            }
            if c.draining {
                return Err(Error::RemoveConnectionInProgress);
            }
            c.draining = true;
            c.cid
        };
        // Let its tasks finish (bounded by the command timeout).
        self.inner.wait_idle(|t| t.cid == Some(cid)).await;
        // Then hold new commands back until the logout is through, so the
        // target sees no command cross the change in its connection count
        // (istgt loses one now and then when they cross).
        self.inner.lock().hold += 1;
        self.inner.wait_idle(|_| true).await;
        let task = Task::new(Some(cid), 0, TaskKind::Logout(logout_reason::CLOSE_CONNECTION), None);
        let r = self.inner.submit_logout(task, cid).await;
        if r.is_ok() {
            self.inner.wait_closed_by_target(cid).await;
        }
        let protection = {
            let mut st = self.inner.lock();
            let protection = st.wanted.iter().find(|w| w.cid == cid).and_then(|w| w.protection.clone());
            st.wanted.retain(|w| w.cid != cid);
            st.drop_connection(cid, "removed");
            st.hold = st.hold.saturating_sub(1);
            st.drain_queue();
            protection
        };
        // The connection is closed: its SA, IKE connection and key go too.
        release(protection).await;
        match r {
            Ok(Reply::Logout(h)) if h.response == 0 => Ok(()),
            Ok(Reply::Logout(h)) => {
                Err(Error::protocol(format!("target refused to close the connection (response {})", h.response)))
            }
            Ok(_) => Err(Error::protocol("unexpected reply to a Logout Request")),
            // The connection is gone either way.
            Err(Error::ConnectionLost(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Sends one SCSI command and waits for its status (RFC 7143 §11.3).
    pub async fn execute(&self, lun: u64, cdb: &Cdb, dir: DataDirection) -> Result<ScsiOutcome> {
        let (read, write_data, expected_len) = match dir {
            DataDirection::None => (false, Bytes::new(), 0u32),
            DataDirection::Read(n) => (true, Bytes::new(), n),
            DataDirection::Write(b) => {
                let n = u32::try_from(b.len())
                    .map_err(|_| Error::InvalidArgument("write larger than 4 GiB in one command".into()))?;
                (false, b, n)
            }
        };
        let raw_lun =
            iscsi_proto::scsi::lun::encode_lun(lun).map_err(|e| Error::InvalidArgument(format!("LUN {lun}: {e}")))?;
        let task = Task::new(
            None,
            raw_lun,
            TaskKind::Scsi(ScsiTask {
                expected_len,
                read,
                buf: BytesMut::new(),
                received: 0,
                next_data_sn: 0,
                write_data,
            }),
            Some((*cdb, task_attr::SIMPLE)),
        );
        match self.inner.submit_command(task).await? {
            Reply::Scsi(o) => Ok(o),
            _ => Err(Error::protocol("unexpected reply to a SCSI command")),
        }
    }

    /// A Text Request/Response exchange (RFC 7143 §11.10), e.g. SendTargets.
    pub async fn text_request(&self, pairs: &TextPairs) -> Result<TextPairs> {
        let mut data = Vec::new();
        text::encode(pairs, &mut data);
        let task = Task::new(None, 0, TaskKind::Text(TextAccumulator::default()), None);
        match self.inner.submit_text(task, Bytes::from(data)).await? {
            Reply::Text(t) => Ok(t),
            _ => Err(Error::protocol("unexpected reply to a Text Request")),
        }
    }

    /// Closes the session: every other connection logs out with reason
    /// "close the connection", then the leading one with "close the
    /// session" (RFC 7143 §11.14), and the sockets are closed.
    pub async fn logout(&self) -> Result<()> {
        let in_service = {
            let st = self.inner.lock();
            // The Logout goes on the leading connection, or on any other in
            // service while that one is being recovered (RFC 7143 §11.14:
            // "close the session" may be sent on any connection).
            let live = |cid: u16| st.conns.iter().any(|c| c.cid == cid);
            let leading = if live(st.leading_cid) { Some(st.leading_cid) } else { st.conns.first().map(|c| c.cid) };
            leading.map(|leading| {
                let others: Vec<u16> = st.conns.iter().map(|c| c.cid).filter(|c| *c != leading).collect();
                (others, leading)
            })
        };
        let Some((others, leading)) = in_service else {
            // Every connection is down and being recovered: there is
            // nothing to send a Logout on, and the target ends the
            // session with its last connection. Stop the recovery.
            info!(session = %self.inner.id, "no connection in service: session closed without a Logout");
            self.inner.shutdown("logged out");
            self.inner.release_protections().await;
            return Ok(());
        };
        for cid in others {
            let task = Task::new(Some(cid), 0, TaskKind::Logout(logout_reason::CLOSE_CONNECTION), None);
            if let Err(e) = self.inner.submit_logout(task, cid).await {
                warn!(cid, "connection logout failed: {e}");
            }
            self.inner.lock().drop_connection(cid, "logged out");
        }
        let task = Task::new(Some(leading), 0, TaskKind::Logout(logout_reason::CLOSE_SESSION), None);
        let r = self.inner.submit_logout(task, leading).await;
        self.inner.shutdown("logged out");
        // After the Logout exchange, which the SAs carried.
        self.inner.release_protections().await;
        match r? {
            Reply::Logout(h) if h.response == 0 => Ok(()),
            Reply::Logout(h) => Err(Error::protocol(format!("logout refused by the target (response {})", h.response))),
            _ => Err(Error::protocol("unexpected reply to a Logout Request")),
        }
    }

    /// The target asked (Async Message event 1) that connection `cid` log
    /// out: close just that connection when others remain, else the session.
    async fn logout_requested(&self, cid: u16) -> Result<()> {
        let (n, leading) = {
            let st = self.inner.lock();
            (st.conns.len(), st.leading_cid)
        };
        if n <= 1 {
            return self.logout().await;
        }
        {
            let mut st = self.inner.lock();
            if let Some(c) = st.conns.iter_mut().find(|c| c.cid == cid) {
                c.draining = true;
            }
            if leading == cid
                && let Some(next) = st.conns.iter().find(|c| c.cid != cid).map(|c| c.cid)
            {
                st.leading_cid = next;
            }
        }
        let task = Task::new(Some(cid), 0, TaskKind::Logout(logout_reason::CLOSE_CONNECTION), None);
        let r = self.inner.submit_logout(task, cid).await;
        self.inner.lock().drop_connection(cid, "logged out at the target's request");
        r.map(|_| ())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // ConnState's own Drop aborts each connection's tasks.
        self.state.lock().unwrap_or_else(|p| p.into_inner()).conns.clear();
    }
}

impl Inner {
    /// The session's settings with one connection's own CHAP and digests.
    fn connection_cfg(&self, how: &ConnectionLogin) -> SessionConfig {
        let mut cfg = self.cfg.clone();
        if let Some(chap) = &how.chap {
            cfg.chap = chap.clone();
        }
        if let Some(d) = &how.header_digest {
            cfg.proposal.header_digest = d.clone();
        }
        if let Some(d) = &how.data_digest {
            cfg.proposal.data_digest = d.clone();
        }
        cfg
    }

    /// The IPsec protection of connection `cid`, if it has one.
    fn protection_of(&self, cid: u16) -> Option<Arc<Protection>> {
        self.lock().wanted.iter().find(|w| w.cid == cid).and_then(|w| w.protection.clone())
    }

    /// Removes every IPsec protection of the session (after a logout).
    async fn release_protections(&self) {
        let all: Vec<Arc<Protection>> = self.lock().wanted.iter().filter_map(|w| w.protection.clone()).collect();
        for p in all {
            p.release().await;
        }
    }

    /// How connection `cid` logged in (the leading connection: the
    /// session's own settings).
    fn login_of(&self, cid: u16) -> ConnectionLogin {
        let st = self.lock();
        st.wanted
            .iter()
            .find(|w| w.cid == cid)
            .map(|w| w.how.clone())
            .unwrap_or_else(|| ConnectionLogin { local_address: self.cfg.local_address, ..ConnectionLogin::default() })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-update;
        // the state is still the best we have.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn shutdown(&self, reason: &str) {
        let mut st = self.lock();
        st.fail_all(reason);
        st.conns.clear();
    }

    /// A connection's reader stopped. Unless it was being closed on
    /// purpose, recover it (see `recovery.rs`); else drop it.
    /// `began`: when the fault began (a silence: at the last PDU).
    fn connection_failed(self: &Arc<Self>, cid: u16, fault: ConnectionFault, began: std::time::Instant) {
        let mut st = self.lock();
        let Some(draining) = st.conns.iter().find(|c| c.cid == cid).map(|c| c.draining) else { return };
        let reason = fault.to_string();
        // istgt sometimes closes the connection right after a Logout Request
        // without answering it: for us that is the logout done.
        let logouts: Vec<u32> = st
            .tasks
            .iter()
            .filter(|(_, t)| t.cid == Some(cid) && matches!(t.kind, TaskKind::Logout(_)))
            .map(|(itt, _)| *itt)
            .collect();
        // Only a clean close answers a logout; a dead or broken connection does not.
        let logouts =
            if fault.kind == FaultKind::Closed && fault.detail == io::CLOSED_BY_TARGET { logouts } else { Vec::new() };
        let logging_out = !logouts.is_empty();
        for itt in logouts {
            if let Some(t) = st.take_task(itt) {
                let ok = iscsi_proto::pdu::LogoutResponse { itt, ..Default::default() };
                state::complete(t, Ok(Reply::Logout(ok)));
            }
        }
        // A connection for fillers (`failover.rs`) is not logged in again:
        // its unanswered fillers are sent again elsewhere.
        if st.gap_fillers.contains(&cid) {
            st.gap_fillers.retain(|g| *g != cid);
            let unanswered = st.tasks.values().any(|t| t.cid == Some(cid));
            if unanswered && !logging_out && st.closed.is_none() {
                debug!(cid, reason, "connection for fillers failed; its fillers go again");
                let generation = st.generation;
                st.orphan_connection(cid, None);
                st.drain_queue();
                drop(st);
                let s = Session { inner: self.clone() };
                tokio::spawn(s.move_off_gap_filler(cid, generation));
                return;
            }
        }
        let on_purpose = logging_out || draining || st.closed.is_some();
        if on_purpose || !self.cfg.recovery || self.target_name.is_none() {
            if !on_purpose {
                warn!(cid, reason, "connection failed");
            }
            st.drop_connection(cid, &reason);
            st.drain_queue();
            return;
        }
        warn!(cid, reason, "connection failed; recovering");
        let generation = st.generation;
        let erl2 = self.erl2_applies(&st, cid);
        // A silent connection (a link that went down) while others are in
        // service: its commands move to them now, and it comes back on its
        // own link whenever that link does (`failover.rs`).
        let elsewhere =
            !erl2 && fault.kind == FaultKind::Silent && st.conns.iter().any(|c| c.cid != cid && !c.draining);
        if let Some(c) = st.conns.iter().find(|c| c.cid == cid) {
            let info = connection_info(&st, c);
            st.recovering.retain(|r| r.cid != cid);
            st.recovering.push(state::Recovering { cid, info });
        }
        if let Some((portal, id)) = st.orphan_connection(cid, Some((&fault, std::time::Instant::now(), began))) {
            st.drain_queue();
            drop(st);
            let s = Session { inner: self.clone() };
            if erl2 {
                tokio::spawn(s.recover_erl2(cid, portal, id, fault, generation));
            } else if elsewhere {
                tokio::spawn(s.recover_elsewhere(cid, portal, id, fault, generation));
            } else {
                tokio::spawn(s.recover(cid, portal, id, fault, generation));
            }
        }
    }

    fn register(&self, mut task: Task) -> Result<(u32, reply::Receiver, MutexGuard<'_, State>)> {
        let (tx, rx) = reply::channel();
        task.reply = Some(tx);
        task.deadline = Some(std::time::Instant::now() + self.cfg.command_timeout);
        let mut st = self.lock();
        if let Some(r) = &st.closed {
            return Err(Error::ConnectionLost(r.clone()));
        }
        let itt = st.alloc_itt();
        st.tasks.insert(itt, task);
        Ok((itt, rx, st))
    }

    /// Queues a SCSI command behind the CmdSN window and waits for it.
    async fn submit_command(&self, task: Task) -> Result<Reply> {
        let (itt, rx) = {
            let (itt, rx, mut st) = self.register(task)?;
            st.queued.push_back(itt);
            st.drain_queue();
            (itt, rx)
        };
        self.wait(itt, rx).await
    }

    /// Sends a Logout Request (immediate) on connection `cid` and waits.
    async fn submit_logout(&self, task: Task, cid: u16) -> Result<Reply> {
        let (itt, rx) = {
            let (itt, rx, mut st) = self.register(task)?;
            st.send_logout(itt, cid);
            (itt, rx)
        };
        self.wait(itt, rx).await
    }

    /// Pings the target on connection `cid` (an immediate NOP-Out, RFC 7143
    /// §11.18) and returns the ExpCmdSN of its answer.
    /// `cmd_sn` must be the target's ExpCmdSN as far as we know: istgt
    /// drops a connection whose immediate PDU carries any other CmdSN.
    async fn probe(&self, cid: u16, cmd_sn: u32) -> Result<u32> {
        let (itt, rx) = {
            let (itt, rx, mut st) = self.register(Task::new(Some(cid), 0, TaskKind::Probe, None))?;
            let Some(c) = st.conns.iter().find(|c| c.cid == cid) else {
                // Lost while it waited to probe: nothing would answer.
                st.take_task(itt);
                return Err(Error::ConnectionLost(format!("connection {cid} closed before the probe")));
            };
            let out = iscsi_proto::pdu::NopOut {
                immediate: true,
                lun: 0,
                itt,
                ttt: RESERVED_TAG,
                cmd_sn,
                exp_stat_sn: c.exp_stat_sn,
            };
            state::push(c, out, Bytes::new());
            (itt, rx)
        };
        let answer = match tokio::time::timeout(self.cfg.login_timeout, rx).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => return Err(Error::SessionClosed),
            Err(_) => {
                self.lock().take_task(itt);
                return Err(Error::Timeout("an answer to NOP-Out on a reinstated connection".into()));
            }
        };
        match answer {
            Reply::Probe(exp) => Ok(exp),
            _ => Err(Error::protocol("unexpected reply to a NOP-Out")),
        }
    }

    /// Waits (at most the command timeout) until no SCSI task matching
    /// `which` is in flight.
    async fn wait_idle(&self, which: impl Fn(&Task) -> bool) {
        let deadline = tokio::time::Instant::now() + self.cfg.command_timeout;
        loop {
            let busy = {
                let st = self.lock();
                st.tasks.values().any(|t| t.cid.is_some() && matches!(t.kind, TaskKind::Scsi(_)) && which(t))
            };
            if !busy || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// After connection `cid`'s logout was answered, waits (at most
    /// [`LOGOUT_CLOSE`]) for the target to close it. Whoever logs a
    /// connection out holds new commands until then: istgt's cleanup of a
    /// connection aborts every command of the session queued at its LU,
    /// whichever connection brought it (`istgt_lu_clear_task_IT`, matched
    /// by initiator port), and never answers them; it runs after the
    /// logout answer and before the socket is closed.
    async fn wait_closed_by_target(&self, cid: u16) {
        let until = tokio::time::Instant::now() + LOGOUT_CLOSE;
        while tokio::time::Instant::now() < until && self.lock().conns.iter().any(|c| c.cid == cid) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Sends a Text Request (immediate) on the leading connection.
    async fn submit_text(&self, mut task: Task, data: Bytes) -> Result<Reply> {
        task.cid = Some(self.lock().leading_cid);
        let (itt, rx) = {
            let (itt, rx, mut st) = self.register(task)?;
            st.send_text(itt, RESERVED_TAG, data);
            (itt, rx)
        };
        self.wait(itt, rx).await
    }

    /// Waits for the task's answer; `expire_overdue` (run by the session's
    /// sweeper, `sweep_overdue`) answers with a timeout after
    /// `command_timeout`.
    async fn wait(&self, _itt: u32, rx: reply::Receiver) -> Result<Reply> {
        rx.await.unwrap_or(Err(Error::SessionClosed))
    }
}
