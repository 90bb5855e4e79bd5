//! A session in full feature phase (RFC 7143 §4): the session-wide
//! CmdSN window and task table, and the connections that carry them.
//!
//! The session owns ITT and CmdSN allocation so that no caller can get them
//! wrong; StatSN/ExpStatSN belong to each connection. Each connection has a
//! reader task (framing, dispatch, keepalive) and a writer task (batched,
//! vectored writes of header, data and trailer).

use std::collections::{HashMap, VecDeque};
use std::io::IoSlice;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::{Bytes, BytesMut};
use iscsi_proto::negotiation::{Digest, Negotiated};
use iscsi_proto::pdu::{
    AsyncMessage, Bhs, DataIn, DataOut, FrameConfig, LogoutRequest, LogoutResponse, NopIn, NopOut, Pdu, PduDecoder,
    R2t, RESERVED_TAG, Reject, ScsiCommand, ScsiResponse, TextRequest, TextResponse, data_trailer, encode_header,
    logout_reason, task_attr,
};
use iscsi_proto::scsi::cdb::Cdb;
use iscsi_proto::seq::{CmdWindow, Sn};
use iscsi_proto::text::{self, TextAccumulator, TextPairs};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::SessionConfig;
use crate::error::{Error, Result};
use crate::login::{LoggedIn, LoginOutcome, LoginParams, login};
use crate::portal::PortalAddr;
use crate::wire::READ_CHUNK;

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

/// A SCSI task waiting for data or status.
struct ScsiTask {
    expected_len: u32,
    read: bool,
    chunks: Vec<Bytes>,
    received: u32,
    next_data_sn: u32,
    write_data: Bytes,
}

enum TaskKind {
    Scsi(ScsiTask),
    /// Our keepalive ping: answered by a NOP-In with the same ITT.
    Ping,
    Text(TextAccumulator),
    Logout,
}

enum Reply {
    Scsi(ScsiOutcome),
    Text(TextPairs),
    Logout(LogoutResponse),
}

struct Task {
    cid: u16,
    lun: u64,
    kind: TaskKind,
    reply: Option<oneshot::Sender<Result<Reply>>>,
    /// The command PDU, kept until the CmdSN window lets it go.
    queued_cdb: Option<(Cdb, u8)>,
}

/// One outgoing PDU: header (with digest), data, trailer (padding, digest).
struct Out {
    header: Bytes,
    data: Bytes,
    trailer: ([u8; 7], usize),
}

struct ConnState {
    cid: u16,
    tx: mpsc::UnboundedSender<Out>,
    tx_cfg: FrameConfig,
    exp_stat_sn: u32,
    /// The target's MaxRecvDataSegmentLength: our largest data segment.
    max_xmit: u32,
    ping_itt: Option<u32>,
}

/// The session keys that shape a write (RFC 7143 §13.10-13.14).
#[derive(Clone, Copy)]
struct Burst {
    first_burst_length: u32,
    immediate_data: bool,
    initial_r2t: bool,
}

struct State {
    window: CmdWindow,
    burst: Burst,
    next_itt: u32,
    tasks: HashMap<u32, Task>,
    /// Commands waiting for the CmdSN window to open (RFC 7143 §4.2.2.1).
    queued: VecDeque<u32>,
    conns: Vec<ConnState>,
    closed: Option<String>,
}

struct Inner {
    state: Mutex<State>,
    cfg: SessionConfig,
    target_name: Option<String>,
    portal: PortalAddr,
    tsih: u16,
    params: Negotiated,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// A logged-in iSCSI session.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("target", &self.inner.target_name)
            .field("portal", &self.inner.portal)
            .field("tsih", &self.inner.tsih)
            .finish()
    }
}

async fn connect(addr: &PortalAddr, cfg: &SessionConfig) -> Result<TcpStream> {
    let s = addr.socket_string();
    let stream = match tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(s.as_str())).await {
        Err(_) => return Err(Error::ConnectTimeout(s)),
        Ok(Err(e)) => return Err(Error::Connect { addr: s, source: e }),
        Ok(Ok(st)) => st,
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl Session {
    /// Logs in to `target_name` (or a discovery session when `None`) at
    /// `portal`, following login redirections.
    pub async fn login(portal: &PortalAddr, target_name: Option<&str>, cfg: SessionConfig) -> Result<Self> {
        let mut addr = portal.clone();
        let mut redirects = 0;
        loop {
            let mut stream = connect(&addr, &cfg).await?;
            let params = LoginParams { cfg: &cfg, target_name, tsih: 0, cid: 0, cmd_sn: 1, exp_stat_sn: 0 };
            match login(&mut stream, &params).await? {
                LoginOutcome::LoggedIn(l) => {
                    info!(portal = %addr, target = target_name.unwrap_or("(discovery)"), tsih = l.tsih, "logged in");
                    return Ok(Self::start(stream, addr, target_name, cfg, *l));
                }
                LoginOutcome::Redirect(to) => {
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

    fn start(stream: TcpStream, portal: PortalAddr, target: Option<&str>, cfg: SessionConfig, l: LoggedIn) -> Self {
        let params = l.negotiated.clone();
        let mut rx_cfg = FrameConfig {
            header_digest: params.header_digest == Digest::Crc32c,
            data_digest: params.data_digest == Digest::Crc32c,
            max_recv_data_segment_length: params.max_recv_data_segment_length,
        };
        let tx_cfg = rx_cfg;
        rx_cfg.max_recv_data_segment_length = params.max_recv_data_segment_length;
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = ConnState {
            cid: 0,
            tx,
            tx_cfg,
            exp_stat_sn: l.exp_stat_sn,
            max_xmit: params.max_xmit_data_segment_length,
            ping_itt: None,
        };
        let state = State {
            window: CmdWindow::new(l.exp_cmd_sn, l.exp_cmd_sn, l.max_cmd_sn),
            burst: Burst {
                first_burst_length: params.first_burst_length,
                immediate_data: params.immediate_data,
                initial_r2t: params.initial_r2t,
            },
            next_itt: 1,
            tasks: HashMap::new(),
            queued: VecDeque::new(),
            conns: vec![conn],
            closed: None,
        };
        let inner = Arc::new(Inner {
            state: Mutex::new(state),
            cfg,
            target_name: target.map(str::to_string),
            portal,
            tsih: l.tsih,
            params,
            tasks: Mutex::new(Vec::new()),
        });
        let (rd, wr) = stream.into_split();
        let w = tokio::spawn(writer(wr, rx));
        let r = tokio::spawn(reader(Arc::downgrade(&inner), 0, rd, PduDecoder::new(rx_cfg), l.leftover));
        if let Ok(mut t) = inner.tasks.lock() {
            t.push(w);
            t.push(r);
        }
        Session { inner }
    }

    /// Parameters negotiated at login.
    pub fn params(&self) -> &Negotiated {
        &self.inner.params
    }

    /// Target Session Identifying Handle assigned by the target.
    pub fn tsih(&self) -> u16 {
        self.inner.tsih
    }

    pub fn isid(&self) -> [u8; 6] {
        self.inner.cfg.isid
    }

    pub fn target_name(&self) -> Option<&str> {
        self.inner.target_name.as_deref()
    }

    pub fn portal(&self) -> &PortalAddr {
        &self.inner.portal
    }

    /// Why the session stopped, if it did.
    pub fn closed_reason(&self) -> Option<String> {
        self.inner.lock().closed.clone()
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
        let task = Task {
            cid: 0,
            lun: raw_lun,
            kind: TaskKind::Scsi(ScsiTask {
                expected_len,
                read,
                chunks: Vec::new(),
                received: 0,
                next_data_sn: 0,
                write_data,
            }),
            reply: None,
            queued_cdb: Some((*cdb, task_attr::SIMPLE)),
        };
        match self.inner.submit(task, false).await? {
            Reply::Scsi(o) => Ok(o),
            _ => Err(Error::protocol("unexpected reply to a SCSI command")),
        }
    }

    /// A Text Request/Response exchange (RFC 7143 §11.10), e.g. SendTargets.
    pub async fn text_request(&self, pairs: &TextPairs) -> Result<TextPairs> {
        let mut data = Vec::new();
        text::encode(pairs, &mut data);
        let task =
            Task { cid: 0, lun: 0, kind: TaskKind::Text(TextAccumulator::default()), reply: None, queued_cdb: None };
        match self.inner.submit_text(task, Bytes::from(data)).await? {
            Reply::Text(t) => Ok(t),
            _ => Err(Error::protocol("unexpected reply to a Text Request")),
        }
    }

    /// Closes the session with a Logout Request (reason: close the session,
    /// RFC 7143 §11.14), then closes the connection.
    pub async fn logout(&self) -> Result<()> {
        let task = Task { cid: 0, lun: 0, kind: TaskKind::Logout, reply: None, queued_cdb: None };
        let r = self.inner.submit(task, true).await;
        self.inner.shutdown("logged out");
        match r? {
            Reply::Logout(h) if h.response == 0 => Ok(()),
            Reply::Logout(h) => Err(Error::protocol(format!("logout refused by the target (response {})", h.response))),
            _ => Err(Error::protocol("unexpected reply to a Logout Request")),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(t) = self.tasks.lock() {
            for h in t.iter() {
                h.abort();
            }
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-update;
        // the state is still the best we have.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn shutdown(&self, reason: &str) {
        let mut st = self.lock();
        fail_all(&mut st, reason);
        st.conns.clear();
        drop(st);
        if let Ok(t) = self.tasks.lock() {
            for h in t.iter() {
                h.abort();
            }
        }
    }

    /// Registers a task, sends it (or queues it behind the CmdSN window)
    /// and waits for its reply within the command timeout.
    async fn submit(&self, mut task: Task, immediate_logout: bool) -> Result<Reply> {
        let (tx, rx) = oneshot::channel();
        task.reply = Some(tx);
        let itt = {
            let mut st = self.lock();
            if let Some(r) = &st.closed {
                return Err(Error::ConnectionLost(r.clone()));
            }
            let itt = alloc_itt(&mut st);
            let is_logout = matches!(task.kind, TaskKind::Logout);
            st.tasks.insert(itt, task);
            if is_logout && immediate_logout {
                send_logout(&mut st, itt);
            } else {
                st.queued.push_back(itt);
                drain_queue(&mut st);
            }
            itt
        };
        self.wait(itt, rx).await
    }

    async fn submit_text(&self, mut task: Task, data: Bytes) -> Result<Reply> {
        let (tx, rx) = oneshot::channel();
        task.reply = Some(tx);
        let itt = {
            let mut st = self.lock();
            if let Some(r) = &st.closed {
                return Err(Error::ConnectionLost(r.clone()));
            }
            let itt = alloc_itt(&mut st);
            st.tasks.insert(itt, task);
            send_text(&mut st, itt, RESERVED_TAG, data);
            itt
        };
        self.wait(itt, rx).await
    }

    async fn wait(&self, itt: u32, rx: oneshot::Receiver<Result<Reply>>) -> Result<Reply> {
        match tokio::time::timeout(self.cfg.command_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::SessionClosed),
            Err(_) => {
                // Leave a tombstone without a waiter so that a late answer is
                // consumed quietly; the caller gets a clear error now.
                if let Some(t) = self.lock().tasks.get_mut(&itt) {
                    t.reply = None;
                }
                Err(Error::Timeout(format!("the target's answer (task 0x{itt:08x})")))
            }
        }
    }

    /// Handles one PDU from the target on connection `cid`. An error here is
    /// fatal for the connection (ERL 0, RFC 7143 §7.1.4).
    fn handle_pdu(self: &Arc<Self>, cid: u16, pdu: Pdu) -> Result<()> {
        let mut st = self.lock();
        let st = &mut *st;
        if let Some((stat_sn, exp, max)) = pdu.bhs.target_sequence() {
            st.window.update(exp, max);
            let counts = !matches!(&pdu.bhs, Bhs::NopIn(h) if h.itt == RESERVED_TAG);
            if let (Some(sn), true, Some(c)) = (stat_sn, counts, conn_mut(&mut st.conns, cid))
                && Sn(sn).ge(Sn(c.exp_stat_sn))
            {
                c.exp_stat_sn = sn.wrapping_add(1);
            }
        }
        let Pdu { bhs, data, .. } = pdu;
        match bhs {
            Bhs::DataIn(h) => on_data_in(st, h, data)?,
            Bhs::ScsiResponse(h) => on_scsi_response(st, h, data)?,
            Bhs::R2t(h) => on_r2t(st, cid, h)?,
            Bhs::NopIn(h) => on_nop_in(st, cid, h, data),
            Bhs::TextResponse(h) => on_text_response(st, h, data)?,
            Bhs::LogoutResponse(h) => {
                if let Some(t) = st.tasks.remove(&h.itt) {
                    complete(t, Ok(Reply::Logout(h)));
                }
                // The target closes the connection next: that is expected.
                st.closed.get_or_insert_with(|| "logged out".to_string());
            }
            Bhs::TaskMgmtResponse(h) => {
                st.tasks.remove(&h.itt);
            }
            Bhs::AsyncMessage(h) => on_async(self, st, h)?,
            Bhs::Reject(h) => on_reject(st, h, &data)?,
            other => return Err(Error::protocol(format!("unexpected {:?} in full feature phase", other.opcode()))),
        }
        drain_queue(st);
        Ok(())
    }

    fn fail_connection(&self, cid: u16, reason: &str) {
        let mut st = self.lock();
        if st.closed.is_none() {
            warn!(cid, reason, "connection failed");
        }
        st.conns.retain(|c| c.cid != cid);
        if st.conns.is_empty() {
            fail_all(&mut st, reason);
        }
    }
}

fn conn_mut(conns: &mut [ConnState], cid: u16) -> Option<&mut ConnState> {
    conns.iter_mut().find(|c| c.cid == cid)
}

fn fail_all(st: &mut State, reason: &str) {
    if st.closed.is_none() {
        st.closed = Some(reason.to_string());
    }
    st.queued.clear();
    for (_, t) in st.tasks.drain() {
        complete(t, Err(Error::ConnectionLost(reason.to_string())));
    }
}

fn complete(mut t: Task, r: Result<Reply>) {
    if let Some(tx) = t.reply.take() {
        let _ = tx.send(r);
    }
}

fn alloc_itt(st: &mut State) -> u32 {
    loop {
        let itt = st.next_itt;
        st.next_itt = st.next_itt.wrapping_add(1);
        if itt != RESERVED_TAG && !st.tasks.contains_key(&itt) {
            return itt;
        }
    }
}

/// Encodes a PDU for connection `c` and hands it to its writer.
fn push(c: &ConnState, bhs: impl Into<Bhs>, data: Bytes) {
    let bhs = bhs.into();
    let mut hdr = BytesMut::with_capacity(48 + 4);
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    encode_header(&bhs, &[], len, &c.tx_cfg, &mut hdr);
    let trailer = data_trailer(&data, &c.tx_cfg);
    // A send error means the writer is gone; the reader reports the loss.
    let _ = c.tx.send(Out { header: hdr.freeze(), data, trailer });
}

/// Sends queued commands while the window allows (RFC 7143 §4.2.2.1).
fn drain_queue(st: &mut State) {
    while let Some(&itt) = st.queued.front() {
        let is_logout = matches!(st.tasks.get(&itt).map(|t| &t.kind), Some(TaskKind::Logout));
        if is_logout {
            st.queued.pop_front();
            send_logout(st, itt);
            continue;
        }
        if !st.window.is_open() {
            return;
        }
        st.queued.pop_front();
        let Some(cmd_sn) = st.window.take() else { return };
        send_command(st, itt, cmd_sn);
    }
}

fn send_logout(st: &mut State, itt: u32) {
    let cmd_sn = st.window.current();
    let Some(t) = st.tasks.get(&itt) else { return };
    let Some(c) = st.conns.iter().find(|c| c.cid == t.cid) else { return };
    let req = LogoutRequest {
        immediate: true,
        reason: logout_reason::CLOSE_SESSION,
        itt,
        cid: c.cid,
        cmd_sn,
        exp_stat_sn: c.exp_stat_sn,
    };
    push(c, req, Bytes::new());
}

fn send_text(st: &mut State, itt: u32, ttt: u32, data: Bytes) {
    let cmd_sn = st.window.current();
    let Some(t) = st.tasks.get(&itt) else { return };
    let Some(c) = st.conns.iter().find(|c| c.cid == t.cid) else { return };
    let req = TextRequest {
        immediate: true,
        final_bit: true,
        continue_: false,
        lun: 0,
        itt,
        ttt,
        cmd_sn,
        exp_stat_sn: c.exp_stat_sn,
    };
    push(c, req, data);
}

/// Sends a SCSI Command with its immediate data and unsolicited Data-Out
/// (RFC 7143 §4.2.5.2: ImmediateData, InitialR2T, FirstBurstLength).
fn send_command(st: &mut State, itt: u32, cmd_sn: u32) {
    let Some(t) = st.tasks.get_mut(&itt) else { return };
    let Some((cdb, attr)) = t.queued_cdb.take() else { return };
    let Some(c) = st.conns.iter().find(|c| c.cid == t.cid) else { return };
    let TaskKind::Scsi(s) = &t.kind else { return };
    let b = st.burst;
    let total = s.write_data.len();
    let first_burst = (b.first_burst_length as usize).min(total);
    let immediate = if b.immediate_data { first_burst.min(c.max_xmit as usize) } else { 0 };
    let unsolicited_end = if b.initial_r2t { immediate } else { first_burst };
    let mut cdb_bytes = [0u8; 16];
    let n = usize::from(cdb.len).min(16);
    if let (Some(dst), Some(src)) = (cdb_bytes.get_mut(..n), cdb.bytes.get(..n)) {
        dst.copy_from_slice(src);
    }
    let cmd = ScsiCommand {
        immediate: false,
        final_bit: unsolicited_end <= immediate,
        read: s.read,
        write: total > 0,
        attr,
        lun: t.lun,
        itt,
        expected_data_transfer_length: s.expected_len,
        cmd_sn,
        exp_stat_sn: c.exp_stat_sn,
        cdb: cdb_bytes,
    };
    push(c, cmd, s.write_data.slice(..immediate));
    if unsolicited_end > immediate {
        send_data_out(c, t.lun, itt, RESERVED_TAG, &s.write_data, immediate, unsolicited_end - immediate);
    }
}

/// Sends `len` bytes from `offset` as Data-Out PDUs no larger than the
/// target's MaxRecvDataSegmentLength (RFC 7143 §11.7.7), DataSN from 0.
fn send_data_out(c: &ConnState, lun: u64, itt: u32, ttt: u32, data: &Bytes, offset: usize, len: usize) {
    let seg = (c.max_xmit as usize).max(512);
    let end = offset + len;
    let mut off = offset;
    let mut data_sn = 0u32;
    while off < end {
        let n = seg.min(end - off);
        let h = DataOut {
            final_bit: off + n == end,
            lun,
            itt,
            ttt,
            exp_stat_sn: c.exp_stat_sn,
            data_sn,
            buffer_offset: off as u32,
        };
        push(c, h, data.slice(off..off + n));
        off += n;
        data_sn = data_sn.wrapping_add(1);
    }
}

fn scsi_task<'a>(st: &'a mut State, itt: u32, what: &str) -> Result<&'a mut Task> {
    st.tasks.get_mut(&itt).ok_or_else(|| Error::protocol(format!("{what} for unknown task 0x{itt:08x}")))
}

fn on_data_in(st: &mut State, h: DataIn, data: Bytes) -> Result<()> {
    let t = scsi_task(st, h.itt, "Data-In")?;
    let TaskKind::Scsi(s) = &mut t.kind else {
        return Err(Error::protocol("Data-In for a task that is not a SCSI command"));
    };
    if !s.read {
        return Err(Error::protocol("Data-In for a command that reads nothing"));
    }
    if h.data_sn != s.next_data_sn {
        return Err(Error::protocol(format!("Data-In DataSN {} where {} was due", h.data_sn, s.next_data_sn)));
    }
    if h.buffer_offset != s.received {
        return Err(Error::protocol(format!(
            "Data-In at offset {} where {} was due (DataPDUInOrder=Yes)",
            h.buffer_offset, s.received
        )));
    }
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let end = s.received.checked_add(len).filter(|e| *e <= s.expected_len);
    let Some(end) = end else {
        return Err(Error::protocol(format!(
            "Data-In beyond the expected transfer length of {} bytes",
            s.expected_len
        )));
    };
    s.next_data_sn = s.next_data_sn.wrapping_add(1);
    s.received = end;
    if !data.is_empty() {
        s.chunks.push(data);
    }
    if h.status_present {
        let residual = residual(h.underflow, h.overflow, h.residual_count);
        if let Some(t) = st.tasks.remove(&h.itt) {
            finish_scsi(t, h.status, Bytes::new(), residual);
        }
    }
    Ok(())
}

fn residual(underflow: bool, overflow: bool, count: u32) -> i64 {
    if underflow {
        i64::from(count)
    } else if overflow {
        -i64::from(count)
    } else {
        0
    }
}

fn finish_scsi(mut t: Task, status: u8, sense: Bytes, residual: i64) {
    let TaskKind::Scsi(s) = &mut t.kind else { return };
    let chunks = std::mem::take(&mut s.chunks);
    let data = match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.into_iter().next().unwrap_or_default(),
        _ => {
            let mut b = BytesMut::with_capacity(s.received as usize);
            for c in &chunks {
                b.extend_from_slice(c);
            }
            b.freeze()
        }
    };
    complete(t, Ok(Reply::Scsi(ScsiOutcome { status, sense, data, residual })));
}

fn on_scsi_response(st: &mut State, h: ScsiResponse, data: Bytes) -> Result<()> {
    let t = st
        .tasks
        .remove(&h.itt)
        .ok_or_else(|| Error::protocol(format!("SCSI Response for unknown task 0x{:08x}", h.itt)))?;
    if h.response != 0 {
        complete(t, Err(Error::TargetFailure(h.response)));
        return Ok(());
    }
    // RFC 7143 §11.4.7: the data segment is SenseLength (2 bytes) + sense.
    let sense = match data.get(..2) {
        Some(&[a, b]) => {
            let n = usize::from(u16::from_be_bytes([a, b]));
            data.slice(2..(2 + n).min(data.len()))
        }
        _ => Bytes::new(),
    };
    finish_scsi(t, h.status, sense, residual(h.underflow, h.overflow, h.residual_count));
    Ok(())
}

fn on_r2t(st: &mut State, cid: u16, h: R2t) -> Result<()> {
    let t = scsi_task(st, h.itt, "R2T")?;
    let TaskKind::Scsi(s) = &t.kind else {
        return Err(Error::protocol("R2T for a task that is not a SCSI command"));
    };
    let start = h.buffer_offset as usize;
    let len = h.desired_data_transfer_length as usize;
    if len == 0 || start.checked_add(len).is_none_or(|e| e > s.write_data.len()) {
        return Err(Error::protocol(format!(
            "R2T asks for {len} bytes at offset {start}, outside the {}-byte write",
            s.write_data.len()
        )));
    }
    if t.cid != cid {
        return Err(Error::protocol("R2T on another connection than its command (allegiance)"));
    }
    let (lun, data) = (t.lun, s.write_data.clone());
    if let Some(c) = st.conns.iter().find(|c| c.cid == cid) {
        send_data_out(c, lun, h.itt, h.ttt, &data, start, len);
    }
    Ok(())
}

fn on_nop_in(st: &mut State, cid: u16, h: NopIn, data: Bytes) {
    if h.itt != RESERVED_TAG {
        st.tasks.remove(&h.itt);
        if let Some(c) = conn_mut(&mut st.conns, cid)
            && c.ping_itt == Some(h.itt)
        {
            c.ping_itt = None;
        }
    }
    if h.ttt != RESERVED_TAG {
        // RFC 7143 §11.19: a NOP-In with a valid TTT asks for a NOP-Out
        // echoing the TTT (and the ping data), ITT reserved.
        let cmd_sn = st.window.current();
        if let Some(c) = st.conns.iter().find(|c| c.cid == cid) {
            let out = NopOut {
                immediate: true,
                lun: h.lun,
                itt: RESERVED_TAG,
                ttt: h.ttt,
                cmd_sn,
                exp_stat_sn: c.exp_stat_sn,
            };
            push(c, out, data);
        }
    }
}

fn on_text_response(st: &mut State, h: TextResponse, data: Bytes) -> Result<()> {
    let t = scsi_task(st, h.itt, "Text Response")?;
    let TaskKind::Text(acc) = &mut t.kind else {
        return Err(Error::protocol("Text Response for a task that is not a Text Request"));
    };
    match acc.push(&data, h.continue_ || !h.final_bit)? {
        Some(pairs) => {
            if let Some(t) = st.tasks.remove(&h.itt) {
                complete(t, Ok(Reply::Text(pairs)));
            }
        }
        None => {
            // RFC 7143 §11.10.4: ask for the rest with an empty request
            // carrying the target's TTT.
            send_text(st, h.itt, h.ttt, Bytes::new());
        }
    }
    Ok(())
}

fn on_async(inner: &Arc<Inner>, _st: &mut State, h: AsyncMessage) -> Result<()> {
    match h.async_event {
        0 => debug!("SCSI asynchronous event"),
        1 => {
            // The target asks us to log out (RFC 7143 §11.9.1 event 1).
            info!(seconds = h.parameter3, "target requests logout");
            let s = Session { inner: inner.clone() };
            tokio::spawn(async move {
                let _ = s.logout().await;
            });
        }
        2 => return Err(Error::ConnectionLost("the target is dropping the connection".into())),
        3 => return Err(Error::ConnectionLost("the target is dropping the session".into())),
        4 => debug!("target requests parameter renegotiation; ignored"),
        e => debug!(event = e, "asynchronous message ignored"),
    }
    Ok(())
}

/// RFC 7143 §11.17.1 reason codes.
fn reject_reason(r: u8) -> &'static str {
    match r {
        0x02 => "data digest error",
        0x03 => "SNACK reject",
        0x04 => "protocol error",
        0x05 => "command not supported",
        0x06 => "too many immediate commands",
        0x07 => "task in progress",
        0x08 => "invalid data ack",
        0x09 => "invalid PDU field",
        0x0a => "out of resources",
        0x0b => "deprecated reason",
        0x0c => "waiting for logout",
        _ => "unknown reason",
    }
}

fn on_reject(st: &mut State, h: Reject, data: &Bytes) -> Result<()> {
    let itt = data.get(16..20).and_then(|b| <[u8; 4]>::try_from(b).ok()).map(u32::from_be_bytes);
    let msg = format!("{} (reason 0x{:02x})", reject_reason(h.reason), h.reason);
    match itt.and_then(|i| st.tasks.remove(&i)) {
        Some(t) => {
            complete(t, Err(Error::Rejected(msg)));
            Ok(())
        }
        None => Err(Error::Rejected(msg)),
    }
}

/// Reads, frames and dispatches PDUs; pings the target when it is quiet
/// and declares the connection dead when a ping goes unanswered. Holds the
/// session weakly so that dropping the last handle ends it.
async fn reader(weak: Weak<Inner>, cid: u16, mut rd: OwnedReadHalf, mut dec: PduDecoder, mut buf: BytesMut) {
    let Some((nop_interval, nop_timeout)) = weak.upgrade().map(|i| (i.cfg.nop_interval, i.cfg.nop_timeout)) else {
        return;
    };
    let reason = async {
        let mut deadline = Instant::now() + nop_interval;
        let mut pinging = false;
        loop {
            loop {
                match dec.decode(&mut buf) {
                    Ok(Some(pdu)) => {
                        let Some(inner) = weak.upgrade() else { return String::new() };
                        if let Err(e) = inner.handle_pdu(cid, pdu) {
                            return e.to_string();
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return format!("malformed PDU from the target: {e}"),
                }
            }
            if buf.capacity() - buf.len() < READ_CHUNK {
                buf.reserve(READ_CHUNK.max(dec.config.max_recv_data_segment_length as usize + 1024));
            }
            tokio::select! {
                r = rd.read_buf(&mut buf) => match r {
                    Ok(0) => return "the target closed the connection".to_string(),
                    Ok(_) => {
                        deadline = Instant::now() + nop_interval;
                        pinging = false;
                    }
                    Err(e) => return format!("read error: {e}"),
                },
                _ = tokio::time::sleep_until(deadline) => {
                    if pinging {
                        return format!("no answer to NOP-Out within {} s", nop_timeout.as_secs());
                    }
                    let Some(inner) = weak.upgrade() else { return String::new() };
                    send_ping(&inner, cid);
                    pinging = true;
                    deadline = Instant::now() + nop_timeout;
                }
            }
        }
    }
    .await;
    if let Some(inner) = weak.upgrade() {
        inner.fail_connection(cid, &reason);
    }
}

fn send_ping(inner: &Inner, cid: u16) {
    let mut st = inner.lock();
    let itt = alloc_itt(&mut st);
    let cmd_sn = st.window.current();
    st.tasks.insert(itt, Task { cid, lun: 0, kind: TaskKind::Ping, reply: None, queued_cdb: None });
    if let Some(c) = conn_mut(&mut st.conns, cid) {
        c.ping_itt = Some(itt);
        let out = NopOut { immediate: true, lun: 0, itt, ttt: RESERVED_TAG, cmd_sn, exp_stat_sn: c.exp_stat_sn };
        push(c, out, Bytes::new());
    }
}

/// Writes queued PDUs, gathering what is ready into one vectored write.
async fn writer(mut wr: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<Out>) {
    const BATCH: usize = 64;
    let mut batch: Vec<Out> = Vec::with_capacity(BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        let mut segs: Vec<&[u8]> = Vec::with_capacity(batch.len() * 3);
        for o in &batch {
            segs.push(&o.header);
            if !o.data.is_empty() {
                segs.push(&o.data);
            }
            if let Some(t) = o.trailer.0.get(..o.trailer.1)
                && !t.is_empty()
            {
                segs.push(t);
            }
        }
        if let Err(e) = write_all_vectored(&mut wr, &segs).await {
            debug!("write failed: {e}");
            return;
        }
        batch.clear();
    }
    let _ = wr.shutdown().await;
}

async fn write_all_vectored<W: AsyncWrite + Unpin>(w: &mut W, segs: &[&[u8]]) -> std::io::Result<()> {
    let mut idx = 0;
    let mut off = 0;
    while idx < segs.len() {
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity((segs.len() - idx).min(64));
        for (i, s) in segs.iter().enumerate().skip(idx).take(64) {
            let s = if i == idx { s.get(off..).unwrap_or_default() } else { s };
            slices.push(IoSlice::new(s));
        }
        let mut n = w.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 && idx < segs.len() {
            let left = segs.get(idx).map_or(0, |s| s.len()) - off;
            if n >= left {
                n -= left;
                idx += 1;
                off = 0;
            } else {
                off += n;
                n = 0;
            }
        }
    }
    w.flush().await
}
