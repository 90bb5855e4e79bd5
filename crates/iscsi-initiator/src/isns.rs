//! iSNS discovery over TCP (RFC 4171): register this initiator's Storage
//! Node, ask the server which targets its discovery domains show it, and
//! follow State Change Notifications. The protocol itself is sans-IO in
//! [`iscsi_proto::isns`]; this module moves its bytes and bounds every wait.
//!
//! SCN delivery: open-isns's `isnsd` does not send SCNs on the connection a
//! client registered from. It opens a TCP connection (UDP if the port
//! attribute has the UDP bit) to the SCN Port of a Portal of the client's
//! Network Entity (RFC 4171 §5.6.5.5: SCNReg is refused without one), keeps
//! it for later SCNs and waits for an SCNRsp on it. [`IsnsClient::open_with_scn`]
//! therefore listens on a TCP port of the address it reaches the server
//! from, registers that as its portal's SCN Port, and answers each SCN.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use iscsi_proto::isns::client::{self as proto, InitiatorNode, ScnBitmap};
use iscsi_proto::isns::{self, FunctionId, Message, Pdu, Reassembler, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::ErrorClass;
use crate::portal::{PortalAddr, TargetPortal};

/// The IANA port of iSNS.
pub const DEFAULT_PORT: u16 = isns::DEFAULT_PORT;

/// SCN connections kept open at once; isnsd uses one per registered portal.
const MAX_SCN_CONNECTIONS: usize = 8;

/// SCNs queued between the listener and [`IsnsClient::next_event`]; when
/// full, the listener stops reading and the server waits. With at most 1 MiB
/// per message this bounds the queue to 16 MiB.
const SCN_QUEUE: usize = 16;

/// Messages of other transactions skipped while waiting for an answer.
const MAX_STRAY_MESSAGES: usize = 16;

/// What the SCN listener hands on.
enum ScnItem {
    Scn(proto::Scn),
    /// Why an SCN was invalid (it is dropped, the connection ends).
    Invalid(String),
    /// The server closed an SCN connection it had opened: it keeps one open
    /// for later SCNs, so a close usually means it restarted and forgot our
    /// registration (open-isns keeps its database in memory).
    Closed,
}

/// Everything that can go wrong talking to an iSNS server.
#[derive(Debug, thiserror::Error)]
pub enum IsnsError {
    #[error("invalid iSNS server address {0:?}: expected HOST[:PORT] or [IPv6][:PORT]")]
    InvalidAddress(String),
    #[error("cannot resolve iSNS server {server}: {source}")]
    Resolve { server: String, source: std::io::Error },
    #[error("iSNS server {server} refused the connection (is isnsd running?)")]
    Refused { server: String },
    #[error("cannot connect to iSNS server {server}: {source}")]
    Connect { server: String, source: std::io::Error },
    #[error("iSNS server {server} did not answer {what} within {timeout:?}")]
    Timeout { server: String, what: String, timeout: Duration },
    #[error("iSNS server {server} closed the connection during {what}")]
    Closed { server: String, what: String },
    #[error("I/O error with iSNS server {server} during {what}: {source}")]
    Io { server: String, what: String, source: std::io::Error },
    /// The bytes broke an iSNSP rule (bad lengths, garbage, endless message).
    #[error("iSNS server {server} sent an invalid answer to {what}: {source}")]
    Protocol { server: String, what: String, source: isns::Error },
    /// RFC 4171 §5.4 status other than Successful.
    #[error("iSNS server {server} rejected {what}: {status}")]
    Status { server: String, what: String, status: Status },
    #[error("cannot listen for iSNS state change notifications on {addr}: {source}")]
    ScnListen { addr: String, source: std::io::Error },
    /// The server closed the connection it sends SCNs on (RFC 4171 §6.3.5):
    /// it may have restarted without our registration, so register again
    /// (open a new client) to keep receiving them.
    #[error("iSNS server {server} closed its state change notification connection (restarted?): register again")]
    ScnClosed { server: String },
    /// The listener task is gone (it never stops on its own while the client lives).
    #[error("the iSNS state change notification listener stopped")]
    ScnStopped,
    #[error("this iSNS client was opened without state change notifications")]
    NoScn,
}

impl IsnsError {
    /// What kind of failure this is, as for the iSCSI errors
    /// ([`crate::Error::class`]): the server could not be reached, went away
    /// or did not answer; it answered with a refusal or broke iSNSP; or
    /// something else (a bad address, our own SCN listener).
    pub fn class(&self) -> ErrorClass {
        match self {
            IsnsError::Refused { .. }
            | IsnsError::Connect { .. }
            | IsnsError::Timeout { .. }
            | IsnsError::Resolve { .. }
            | IsnsError::Closed { .. }
            | IsnsError::Io { .. }
            | IsnsError::ScnClosed { .. } => ErrorClass::Unreachable,
            IsnsError::Protocol { .. } | IsnsError::Status { .. } => ErrorClass::Refused,
            IsnsError::InvalidAddress(_) | IsnsError::ScnListen { .. } | IsnsError::ScnStopped | IsnsError::NoScn => {
                ErrorClass::Other
            }
        }
    }

    /// The RFC 4171 status, when the server answered with one.
    pub fn status(&self) -> Option<Status> {
        match self {
            IsnsError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, IsnsError>;

/// A target the iSNS server lists, with the portals it is reachable through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsnsTarget {
    pub name: String,
    pub alias: Option<String>,
    pub portals: Vec<TargetPortal>,
}

impl From<proto::IsnsTarget> for IsnsTarget {
    fn from(t: proto::IsnsTarget) -> Self {
        Self {
            name: t.name,
            alias: t.alias,
            portals: t
                .portals
                .into_iter()
                .map(|p| TargetPortal { addr: PortalAddr { host: p.addr.to_string(), port: p.port }, tpgt: p.tpgt })
                .collect(),
        }
    }
}

/// What happened to a target, as an SCN told it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScnKind {
    /// The target became visible (registered, or joined one of our domains).
    Added,
    /// It is gone (deregistered, expired, or left our domains).
    Removed,
    /// Its attributes (portals, alias, ...) changed.
    Changed,
}

/// One target change. `target` holds what the server lists now; for
/// `Removed`, what it listed last (the portals to let go of).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScnEvent {
    pub kind: ScnKind,
    pub target: IsnsTarget,
    /// The raw RFC 4171 §6.4.4 bitmap the server sent.
    pub bitmap: ScnBitmap,
}

/// Parses `HOST[:PORT]`, `[V6][:PORT]` or a bare IPv6 literal, port 3205
/// when none is given (the shared parser would default to iSCSI's 3260).
fn server_addr(server: &str) -> Result<PortalAddr> {
    let s = server.trim();
    let (host, port) =
        iscsi_proto::discovery::split_host_port(s).ok_or_else(|| IsnsError::InvalidAddress(server.to_string()))?;
    let explicit = match s.strip_prefix('[') {
        Some(rest) => rest.contains("]:"),
        None => s.matches(':').count() == 1,
    };
    Ok(PortalAddr { host: host.to_string(), port: if explicit { port } else { DEFAULT_PORT } })
}

/// A TCP connection to the server carrying requests and their responses.
struct Conn {
    stream: TcpStream,
    server: String,
    buf: Vec<u8>,
    reasm: Reassembler,
    timeout: Duration,
}

impl Conn {
    async fn open(server: &PortalAddr, timeout: Duration) -> Result<Self> {
        let name = server.to_string();
        let addrs: Vec<SocketAddr> =
            match tokio::time::timeout(timeout, tokio::net::lookup_host(server.socket_string())).await {
                Ok(Ok(a)) => a.collect(),
                Ok(Err(source)) => return Err(IsnsError::Resolve { server: name, source }),
                Err(_) => return Err(IsnsError::Timeout { server: name, what: "name resolution".into(), timeout }),
            };
        let mut last = None;
        for addr in addrs {
            match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(Self { stream, server: name, buf: Vec::new(), reasm: Reassembler::new(), timeout });
                }
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    last = Some(IsnsError::Refused { server: name.clone() })
                }
                Ok(Err(source)) => last = Some(IsnsError::Connect { server: name.clone(), source }),
                Err(_) => last = Some(IsnsError::Timeout { server: name.clone(), what: "connect".into(), timeout }),
            }
        }
        Err(last.unwrap_or_else(|| IsnsError::Resolve {
            server: name.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
        }))
    }

    fn peer_ip(&self) -> Result<IpAddr> {
        self.stream.peer_addr().map(|a| a.ip()).map_err(|source| IsnsError::Io {
            server: self.server.clone(),
            what: "peer address".into(),
            source,
        })
    }

    fn local_ip(&self) -> Result<IpAddr> {
        self.stream.local_addr().map(|a| a.ip()).map_err(|source| IsnsError::Io {
            server: self.server.clone(),
            what: "local address".into(),
            source,
        })
    }

    /// Sends `req` and waits (bounded by the timeout) for its response; the
    /// status is checked by the caller.
    async fn call(&mut self, req: &Message) -> Result<Message> {
        let what = req.function.to_string();
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.call_inner(req, &what)).await {
            Ok(r) => r,
            Err(_) => {
                // Whatever half-message was read belongs to a dead exchange.
                self.reasm = Reassembler::new();
                self.buf.clear();
                Err(IsnsError::Timeout { server: self.server.clone(), what, timeout })
            }
        }
    }

    async fn call_inner(&mut self, req: &Message, what: &str) -> Result<Message> {
        let io = |server: &str, source| IsnsError::Io { server: server.to_string(), what: what.to_string(), source };
        self.stream.write_all(&req.encode()).await.map_err(|e| io(&self.server, e))?;
        let want = req.function.response();
        for _ in 0..=MAX_STRAY_MESSAGES {
            let m = read_message(&mut self.stream, &mut self.buf, &mut self.reasm)
                .await
                .map_err(|e| e.into_error(&self.server, what))?;
            if m.function == want && m.transaction_id == req.transaction_id {
                return Ok(m);
            }
            tracing::debug!(server = %self.server, function = %m.function, xid = m.transaction_id, "iSNS: skipping a message that answers nothing we asked");
        }
        Err(IsnsError::Protocol {
            server: self.server.clone(),
            what: what.to_string(),
            source: isns::Error::Malformed(format!("no {want} among {MAX_STRAY_MESSAGES} messages")),
        })
    }

    /// `call`, then an error unless the status is Successful.
    async fn call_ok(&mut self, req: &Message) -> Result<Message> {
        let rsp = self.call(req).await?;
        check_ok(&self.server, req, rsp)
    }
}

/// `rsp` if it answers `req` with status Successful (RFC 4171 §5.4).
fn check_ok(server: &str, req: &Message, rsp: Message) -> Result<Message> {
    let what = req.function.to_string();
    let status = proto::expect(&rsp, req.function).map_err(|source| IsnsError::Protocol {
        server: server.to_string(),
        what: what.clone(),
        source,
    })?;
    if !status.is_success() {
        return Err(IsnsError::Status { server: server.to_string(), what, status });
    }
    Ok(rsp)
}

enum ReadError {
    Closed,
    Io(std::io::Error),
    Proto(isns::Error),
}

impl ReadError {
    fn into_error(self, server: &str, what: &str) -> IsnsError {
        let (server, what) = (server.to_string(), what.to_string());
        match self {
            ReadError::Closed => IsnsError::Closed { server, what },
            ReadError::Io(source) => IsnsError::Io { server, what, source },
            ReadError::Proto(source) => IsnsError::Protocol { server, what, source },
        }
    }
}

/// Reads PDUs until one message is complete. `buf` never holds more than
/// one PDU (at most 12 + 65535 bytes) plus one read; the reassembler caps
/// the message.
async fn read_message(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    reasm: &mut Reassembler,
) -> std::result::Result<Message, ReadError> {
    loop {
        while let Some((pdu, used)) = Pdu::decode(buf).map_err(ReadError::Proto)? {
            buf.drain(..used);
            if let Some(m) = reasm.push(pdu).map_err(ReadError::Proto)? {
                return Message::decode(&m).map_err(ReadError::Proto);
            }
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = stream.read(&mut chunk).await.map_err(ReadError::Io)?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}

/// Transaction IDs for our requests (RFC 4171 §5.1.5: unique per
/// outstanding request; we have one at a time).
#[derive(Debug)]
struct Xids(u16);

impl Xids {
    fn next(&mut self) -> u16 {
        self.0 = self.0.wrapping_add(1).max(1);
        self.0
    }
}

/// The Registration Period of a DevAttrRegRsp, if it names one above 0.
fn registration_period(rsp: &Message) -> Option<Duration> {
    let secs = isns::attr::find(&rsp.operating, isns::Tag::REGISTRATION_PERIOD)?.as_u32().ok()?;
    (secs > 0).then(|| Duration::from_secs(secs.into()))
}

fn entity_for(initiator_name: &str) -> String {
    format!("rsiscsi:{initiator_name}")
}

/// Is `name` registered already (by another process of this host, e.g. the
/// daemon)? Then discovery must neither re-register nor deregister it.
async fn registered(conn: &mut Conn, xids: &mut Xids, name: &str) -> Result<bool> {
    let rsp = conn.call(&proto::query_node(xids.next(), name, name)).await?;
    Ok(rsp.status == Some(Status::SUCCESS)
        && rsp.operating.iter().any(|a| a.tag == isns::Tag::ISCSI_NAME && a.as_str().is_ok_and(|n| n == name)))
}

/// Lists the targets `initiator_name` may see through the iSNS server at
/// `server` (`HOST[:PORT]`, port 3205 by default): registers the initiator
/// (unless it is registered already, e.g. by the daemon), queries, and
/// deregisters what it registered, also when the query failed (on a new
/// connection when the old one is out of step). `timeout` bounds each step.
/// A failed deregistration after a good answer is logged, not returned.
///
/// ```no_run
/// # async fn run() -> Result<(), iscsi_initiator::isns::IsnsError> {
/// use std::time::Duration;
/// let targets =
///     iscsi_initiator::isns::discover("127.0.0.1", "iqn.2026-12.rs.rsiscsi:host", Duration::from_secs(5)).await?;
/// for t in &targets {
///     for p in &t.portals {
///         println!("{p} {}", t.name); // 127.0.0.1:3260,1 iqn.2026-12.lab.isns:disk1
///     }
/// }
/// # Ok(())
/// # }
/// ```
pub async fn discover(server: &str, initiator_name: &str, timeout: Duration) -> Result<Vec<IsnsTarget>> {
    let addr = server_addr(server)?;
    let mut conn = Conn::open(&addr, timeout).await?;
    let mut xids = Xids(0);
    let ours = !registered(&mut conn, &mut xids, initiator_name).await?;
    let node = InitiatorNode {
        name: initiator_name.to_string(),
        entity: entity_for(initiator_name),
        alias: None,
        scn_portal: None,
    };
    if ours && let Err(e) = conn.call_ok(&proto::register_initiator(xids.next(), &node, false)).await {
        // A refused registration left nothing behind; one that broke midway may have.
        if !matches!(e, IsnsError::Status { .. }) {
            deregister_fresh(&addr, timeout, &node, &mut xids).await;
        }
        return Err(e);
    }
    let result = query_targets(&mut conn, &mut xids, initiator_name).await;
    if ours {
        if matches!(result, Ok(_) | Err(IsnsError::Status { .. })) {
            let req = proto::deregister_entity(xids.next(), &node.name, &node.entity);
            if let Err(e) = conn.call_ok(&req).await {
                tracing::warn!(server = %conn.server, "iSNS: deregistering {} failed: {e}", node.name);
            }
        } else {
            drop(conn);
            deregister_fresh(&addr, timeout, &node, &mut xids).await;
        }
    }
    result
}

/// DevDereg on a new connection, after the old one broke; failures are
/// logged (the caller already has an error to report).
async fn deregister_fresh(addr: &PortalAddr, timeout: Duration, node: &InitiatorNode, xids: &mut Xids) {
    let r = match Conn::open(addr, timeout).await {
        Ok(mut conn) => {
            conn.call_ok(&proto::deregister_entity(xids.next(), &node.name, &node.entity)).await.map(|_| ())
        }
        Err(e) => Err(e),
    };
    if let Err(e) = r {
        tracing::warn!(server = %addr, "iSNS: deregistering {} after an error failed: {e}", node.name);
    }
}

async fn query_targets(conn: &mut Conn, xids: &mut Xids, source: &str) -> Result<Vec<IsnsTarget>> {
    let req = proto::query_targets(xids.next(), source);
    let rsp = conn.call(&req).await?;
    read_targets(conn, &req, &rsp)
}

fn read_targets(conn: &Conn, req: &Message, rsp: &Message) -> Result<Vec<IsnsTarget>> {
    let status = rsp.status.unwrap_or(Status::SUCCESS);
    if !status.is_success() && status != Status::NO_SUCH_ENTRY {
        return Err(IsnsError::Status { server: conn.server.clone(), what: req.function.to_string(), status });
    }
    let targets = proto::targets_from_query(rsp).map_err(|source| IsnsError::Protocol {
        server: conn.server.clone(),
        what: req.function.to_string(),
        source,
    })?;
    Ok(targets.into_iter().map(IsnsTarget::from).collect())
}

/// A long-lived registration with an iSNS server: queries on demand and,
/// when opened with [`IsnsClient::open_with_scn`], target changes as
/// [`ScnEvent`]s. Dropping it stops the listener; [`IsnsClient::close`]
/// also deregisters.
///
/// ```no_run
/// # async fn run() -> Result<(), iscsi_initiator::isns::IsnsError> {
/// use iscsi_initiator::isns::{IsnsClient, ScnKind};
/// use std::time::Duration;
/// let mut isns = IsnsClient::open_with_scn("127.0.0.1:3205", "iqn.2026-12.rs.rsiscsi:host", Duration::from_secs(5)).await?;
/// let now = isns.targets().await?;
/// println!("{} targets", now.len());
/// loop {
///     let ev = isns.next_event().await?;
///     match ev.kind {
///         ScnKind::Added | ScnKind::Changed => println!("{} at {:?}", ev.target.name, ev.target.portals),
///         ScnKind::Removed => println!("{} gone", ev.target.name),
///     }
/// }
/// # }
/// ```
pub struct IsnsClient {
    addr: PortalAddr,
    conn: Option<Conn>,
    xids: Xids,
    node: InitiatorNode,
    timeout: Duration,
    scn: Option<(mpsc::Receiver<ScnItem>, JoinHandle<()>)>,
    /// Targets we know of: the first query, then what SCNs added. A Removed
    /// SCN for a name not here is about some other node and is dropped.
    known: BTreeMap<String, IsnsTarget>,
    /// Changes of an SCN not yet turned into events (one SCN may list several).
    pending: VecDeque<proto::ScnChange>,
    registration_period: Option<Duration>,
}

impl std::fmt::Debug for IsnsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IsnsClient")
            .field("server", &self.addr.to_string())
            .field("initiator", &self.node.name)
            .field("scn_portal", &self.node.scn_portal)
            .finish()
    }
}

impl IsnsClient {
    /// Registers `initiator_name` with the server (replacing a stale
    /// registration of its entity), without SCNs.
    pub async fn open(server: &str, initiator_name: &str, timeout: Duration) -> Result<Self> {
        Self::open_inner(server, initiator_name, timeout, false).await
    }

    /// Like [`open`](Self::open), and registers for State Change
    /// Notifications: a listener on the address this host reaches the
    /// server from becomes the SCN Port of the entity's portal.
    pub async fn open_with_scn(server: &str, initiator_name: &str, timeout: Duration) -> Result<Self> {
        Self::open_inner(server, initiator_name, timeout, true).await
    }

    async fn open_inner(server: &str, initiator_name: &str, timeout: Duration, scn: bool) -> Result<Self> {
        let addr = server_addr(server)?;
        let mut conn = Conn::open(&addr, timeout).await?;
        let mut node = InitiatorNode {
            name: initiator_name.to_string(),
            entity: entity_for(initiator_name),
            alias: None,
            scn_portal: None,
        };
        let mut listener = None;
        let mut server_ip = None;
        if scn {
            let ip = conn.local_ip()?;
            server_ip = Some(conn.peer_ip()?);
            let bind = SocketAddr::new(ip, 0);
            let l = TcpListener::bind(bind)
                .await
                .map_err(|source| IsnsError::ScnListen { addr: bind.to_string(), source })?;
            let port = l.local_addr().map_err(|source| IsnsError::ScnListen { addr: bind.to_string(), source })?.port();
            node.scn_portal = Some((ip, port));
            listener = Some(l);
        }
        let mut xids = Xids(0);
        let rsp = conn.call_ok(&proto::register_initiator(xids.next(), &node, true)).await?;
        let registration_period = registration_period(&rsp);
        let mut client = Self {
            addr,
            conn: Some(conn),
            xids,
            node,
            timeout,
            scn: None,
            known: BTreeMap::new(),
            pending: VecDeque::new(),
            registration_period,
        };
        if let (Some(l), Some(server_ip)) = (listener, server_ip) {
            let (tx, rx) = mpsc::channel(SCN_QUEUE);
            let task = tokio::spawn(scn_listener(l, server_ip, client.node.name.clone(), tx));
            client.scn = Some((rx, task));
            let xid = client.xids.next();
            let req = proto::scn_register(xid, &client.node.name, ScnBitmap::INITIATOR_DEFAULT);
            if let Err(e) = client.call_ok(&req).await {
                let _ = client.deregister().await;
                return Err(e);
            }
            // The baseline the events are relative to.
            client.targets().await?;
        }
        Ok(client)
    }

    /// How long the server keeps the registration without a
    /// [`refresh`](Self::refresh), when its DevAttrRegRsp said (RFC 4171
    /// §6.2.6; `None` when it did not, or said 0: no expiry).
    pub fn registration_period(&self) -> Option<Duration> {
        self.registration_period
    }

    /// The server, as `HOST:PORT`.
    pub fn server(&self) -> String {
        self.addr.to_string()
    }

    /// The address and port SCNs are received on, when registered for them.
    pub fn scn_portal(&self) -> Option<(IpAddr, u16)> {
        self.node.scn_portal
    }

    /// One request on the connection, reconnecting once when the server had
    /// closed it (isnsd drops connections idle for 5 minutes). After a
    /// timeout or invalid bytes the connection is out of step: the next call
    /// starts a new one.
    async fn call(&mut self, req: &Message) -> Result<Message> {
        if let Some(conn) = self.conn.as_mut() {
            match conn.call(req).await {
                Ok(m) => return Ok(m),
                Err(IsnsError::Closed { .. } | IsnsError::Io { .. }) => self.conn = None,
                Err(e) => {
                    self.conn = None;
                    return Err(e);
                }
            }
        }
        let mut conn = Conn::open(&self.addr, self.timeout).await?;
        let r = conn.call(req).await;
        if r.is_ok() {
            self.conn = Some(conn);
        }
        r
    }

    /// `call`, then an error unless the status is Successful.
    async fn call_ok(&mut self, req: &Message) -> Result<Message> {
        let rsp = self.call(req).await?;
        check_ok(&self.server_name(), req, rsp)
    }

    fn server_name(&self) -> String {
        self.addr.to_string()
    }

    /// The targets visible to this initiator now.
    pub async fn targets(&mut self) -> Result<Vec<IsnsTarget>> {
        let req = proto::query_targets(self.xids.next(), &self.node.name);
        let rsp = self.call(&req).await?;
        let targets = self.read(&req, &rsp)?;
        self.known = targets.iter().map(|t| (t.name.clone(), t.clone())).collect();
        Ok(targets)
    }

    /// One node by name, if the server shows it to us and it is a target.
    pub async fn target(&mut self, name: &str) -> Result<Option<IsnsTarget>> {
        let req = proto::query_node(self.xids.next(), &self.node.name, name);
        let rsp = self.call(&req).await?;
        Ok(self.read(&req, &rsp)?.into_iter().find(|t| t.name == name))
    }

    fn read(&self, req: &Message, rsp: &Message) -> Result<Vec<IsnsTarget>> {
        let server = self.server_name();
        let status = rsp.status.unwrap_or(Status::SUCCESS);
        if !status.is_success() && status != Status::NO_SUCH_ENTRY {
            return Err(IsnsError::Status { server, what: req.function.to_string(), status });
        }
        let targets = proto::targets_from_query(rsp).map_err(|source| IsnsError::Protocol {
            server,
            what: req.function.to_string(),
            source,
        })?;
        Ok(targets.into_iter().map(IsnsTarget::from).collect())
    }

    /// Registers again (RFC 4171 §6.2.6: a server may expire an entity not
    /// refreshed within its Registration Period).
    pub async fn refresh(&mut self) -> Result<()> {
        let req = proto::register_initiator(self.xids.next(), &self.node, false);
        self.call_ok(&req).await.map(|_| ())
    }

    /// The next change to a target this initiator can see. SCNs about other
    /// initiators, or about ourselves, are passed over; an added or changed
    /// node is looked up so the event carries its portals. Waits without a
    /// deadline: wrap it in `tokio::time::timeout` as needed.
    pub async fn next_event(&mut self) -> Result<ScnEvent> {
        loop {
            while let Some(change) = self.pending.pop_front() {
                match self.classify(change.clone()).await {
                    Ok(Some(ev)) => return Ok(ev),
                    Ok(None) => {}
                    Err(e) => {
                        // The lookup failed, not the change: the next call retries it.
                        self.pending.push_front(change);
                        return Err(e);
                    }
                }
            }
            let Some((rx, _)) = self.scn.as_mut() else {
                return Err(IsnsError::NoScn);
            };
            match rx.recv().await {
                Some(ScnItem::Scn(scn)) => self.pending.extend(scn.changes),
                Some(ScnItem::Invalid(e)) => tracing::warn!(server = %self.addr, "iSNS: dropped an invalid SCN: {e}"),
                Some(ScnItem::Closed) => return Err(IsnsError::ScnClosed { server: self.server() }),
                None => return Err(IsnsError::ScnStopped),
            }
        }
    }

    async fn classify(&mut self, change: proto::ScnChange) -> Result<Option<ScnEvent>> {
        if change.name == self.node.name {
            return Ok(None);
        }
        let bitmap = change.bitmap;
        let removed = |last: IsnsTarget| ScnEvent { kind: ScnKind::Removed, target: last, bitmap };
        if bitmap.is_removed() {
            return Ok(self.known.remove(&change.name).map(removed));
        }
        match self.target(&change.name).await? {
            Some(t) => {
                let kind = if self.known.contains_key(&t.name) { ScnKind::Changed } else { ScnKind::Added };
                self.known.insert(t.name.clone(), t.clone());
                Ok(Some(ScnEvent { kind, target: t, bitmap }))
            }
            // Not a target, or no longer visible to us.
            None => Ok(self.known.remove(&change.name).map(removed)),
        }
    }

    async fn deregister(&mut self) -> Result<()> {
        if self.scn.is_some() {
            let req = proto::scn_deregister(self.xids.next(), &self.node.name);
            if let Err(e) = self.call_ok(&req).await {
                tracing::debug!("iSNS: SCNDereg failed: {e}");
            }
        }
        let req = proto::deregister_entity(self.xids.next(), &self.node.name, &self.node.entity);
        self.call_ok(&req).await.map(|_| ())
    }

    /// Deregisters from SCNs and removes the entity with its node and portal.
    pub async fn close(mut self) -> Result<()> {
        let r = self.deregister().await;
        if let Some((_, task)) = self.scn.take() {
            task.abort();
        }
        r
    }
}

impl Drop for IsnsClient {
    fn drop(&mut self) {
        if let Some((_, task)) = self.scn.take() {
            task.abort();
        }
    }
}

/// Accepts the server's SCN connections (at most [`MAX_SCN_CONNECTIONS`]
/// at once) and answers each SCN with an SCNRsp, an ESI with an ESIRsp.
/// Only the server's own address may connect: anyone else could otherwise
/// feed us made-up changes (RFC 4171 leaves that to IPsec or the §5.5 auth
/// blocks, neither of which this initiator uses).
async fn scn_listener(listener: TcpListener, server_ip: IpAddr, me: String, tx: mpsc::Sender<ScnItem>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // E.g. out of file descriptors: do not spin.
                        tracing::warn!("iSNS: accepting an SCN connection failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if peer.ip().to_canonical() != server_ip.to_canonical() {
                    tracing::warn!(%peer, %server_ip, "iSNS: refusing an SCN connection from another address than the server's");
                    continue;
                }
                while conns.try_join_next().is_some() {}
                if conns.len() >= MAX_SCN_CONNECTIONS {
                    tracing::warn!(%peer, "iSNS: too many SCN connections, refusing one");
                    continue;
                }
                conns.spawn(scn_connection(stream, me.clone(), tx.clone()));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
        if tx.is_closed() {
            return;
        }
    }
}

async fn scn_connection(mut stream: TcpStream, me: String, tx: mpsc::Sender<ScnItem>) {
    let mut buf = Vec::new();
    let mut reasm = Reassembler::new();
    loop {
        let m = match read_message(&mut stream, &mut buf, &mut reasm).await {
            Ok(m) => m,
            Err(ReadError::Proto(e)) => {
                let _ = tx.send(ScnItem::Invalid(e.to_string())).await;
                return;
            }
            Err(_) => {
                let _ = tx.send(ScnItem::Closed).await;
                return;
            }
        };
        let reply = match m.function {
            FunctionId::SCN => {
                let parsed = proto::parse_scn(&m);
                let status = if parsed.is_ok() { Status::SUCCESS } else { Status::SCN_EVENT_REJECTED };
                let reply = proto::scn_response(&m, &me, status);
                if stream.write_all(&reply.encode()).await.is_err() {
                    return;
                }
                let item = match parsed {
                    Ok(scn) => ScnItem::Scn(scn),
                    Err(e) => ScnItem::Invalid(e.to_string()),
                };
                if tx.send(item).await.is_err() {
                    return;
                }
                continue;
            }
            FunctionId::ESI => proto::esi_response(&m),
            f if f.is_response() => continue,
            f => Message::response(f, m.transaction_id, Status::MESSAGE_NOT_SUPPORTED, isns::Flags::CLIENT),
        };
        if stream.write_all(&reply.encode()).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn server_address_defaults_to_port_3205() {
        assert_eq!(server_addr("127.0.0.1").unwrap(), PortalAddr { host: "127.0.0.1".into(), port: 3205 });
        assert_eq!(server_addr("isns.lab:4000").unwrap(), PortalAddr { host: "isns.lab".into(), port: 4000 });
        assert_eq!(server_addr("[::1]").unwrap(), PortalAddr { host: "::1".into(), port: 3205 });
        assert_eq!(server_addr("[::1]:3206").unwrap(), PortalAddr { host: "::1".into(), port: 3206 });
        assert_eq!(server_addr("fe80::1").unwrap(), PortalAddr { host: "fe80::1".into(), port: 3205 });
        assert!(matches!(server_addr("a b"), Err(IsnsError::InvalidAddress(_))));
        assert!(matches!(server_addr("h:0"), Err(IsnsError::InvalidAddress(_))));
    }

    #[test]
    fn refused_connection_says_what_to_check() {
        let e = IsnsError::Refused { server: "127.0.0.1:3205".into() };
        assert_eq!(e.to_string(), "iSNS server 127.0.0.1:3205 refused the connection (is isnsd running?)");
        let e = IsnsError::Status {
            server: "s:3205".into(),
            what: "DevAttrReg".into(),
            status: Status::SOURCE_UNAUTHORIZED,
        };
        assert_eq!(e.to_string(), "iSNS server s:3205 rejected DevAttrReg: Source Unauthorized (8)");
    }
}

#[cfg(test)]
mod class_tests {
    use super::*;

    #[test]
    fn each_failure_has_its_class() {
        let server = || "127.0.0.1:3205".to_string();
        assert_eq!(IsnsError::Refused { server: server() }.class(), ErrorClass::Unreachable);
        assert_eq!(IsnsError::Closed { server: server(), what: "DevAttrQry".into() }.class(), ErrorClass::Unreachable);
        assert_eq!(IsnsError::ScnClosed { server: server() }.class(), ErrorClass::Unreachable);
        let status =
            IsnsError::Status { server: server(), what: "DevAttrReg".into(), status: Status::SCN_EVENT_REJECTED };
        assert_eq!(status.class(), ErrorClass::Refused);
        assert_eq!(IsnsError::InvalidAddress("[::1".into()).class(), ErrorClass::Other);
        assert_eq!(IsnsError::NoScn.class(), ErrorClass::Other);
    }
}
