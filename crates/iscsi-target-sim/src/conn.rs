//! One iSCSI connection on the target side (RFC 7143 §4): framing, the
//! StatSN and CmdSN bookkeeping, and the full feature phase.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use iscsi_proto::pdu::{
    Bhs, DataIn, FrameConfig, LogoutResponse, NopIn, Pdu, PduDecoder, PduError, R2t, RESERVED_TAG, Reject, ScsiCommand,
    ScsiResponse, TaskMgmtResponse, TextResponse, encode_header, encode_pdu,
};
use iscsi_proto::seq::Sn;
use iscsi_proto::text;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;

use crate::erl2::Kept;
use crate::login::{self, SessionKind};
use crate::scsi::{ABORTED_COMMAND, GOOD, PROTOCOL_SERVICE_CRC_ERROR, RamLun, ScsiResult};
use crate::{Fault, Phase, SLOW_LORIS_STEP, SessionState, Shared, SimStats};

/// Why a connection ended (logged, never returned to a test).
#[derive(Debug)]
#[allow(dead_code)] // the fields are read through `Debug` in the log
pub(crate) enum End {
    Io(std::io::Error),
    Pdu(PduError),
    /// The initiator closed the connection.
    Closed,
    /// The script or the protocol ends the connection here.
    Done(&'static str),
}

impl From<std::io::Error> for End {
    fn from(e: std::io::Error) -> Self {
        End::Io(e)
    }
}

/// Largest write accepted in one command, so a hostile initiator cannot
/// make the target allocate without bound (the LUN is smaller anyway).
const MAX_WRITE: usize = 64 << 20;

/// Most PDUs put aside while a write collects its Data-Out.
const MAX_BACKLOG: usize = 256;

/// Parameters the login settled that the full feature phase uses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Params {
    /// The initiator's MaxRecvDataSegmentLength: our Data-In size (§13.12).
    pub peer_mrdsl: u32,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
    pub initial_r2t: bool,
    pub immediate_data: bool,
    /// ERL, DefaultTime2Wait and DefaultTime2Retain as answered (§13.15-13.20).
    pub erl: u8,
    pub time2wait: u16,
    pub time2retain: u16,
}

/// The residual of a command (RFC 7143 §11.4.5): the Expected Data
/// Transfer Length against what SCSI moved (SPDTL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Residual {
    #[default]
    None,
    /// §11.4.5.1: the initiator expected more than the command moved.
    Under(u32),
    /// §11.4.5.1: the command would have moved more than EDTL.
    Over(u32),
}

impl Residual {
    /// EDTL `edtl` against the SCSI transfer `spdtl`.
    pub(crate) fn of(edtl: u32, spdtl: u64) -> Self {
        let edtl64 = u64::from(edtl);
        let count = |d: u64| u32::try_from(d).unwrap_or(u32::MAX);
        if spdtl < edtl64 {
            Residual::Under(count(edtl64 - spdtl))
        } else if spdtl > edtl64 {
            Residual::Over(count(spdtl - edtl64))
        } else {
            Residual::None
        }
    }
}

/// A write's data as it arrives; kept with the task when the connection
/// fails at ERL 2, so that recovery R2Ts ask only for what is missing.
#[derive(Debug)]
pub(crate) struct WriteProgress {
    pub buf: Vec<u8>,
    /// Bytes received without a hole from offset 0.
    pub got: usize,
    /// Next R2TSN (§11.8.5: per task, on across a reassignment).
    pub r2t_sn: u32,
    /// Data-Out PDUs received for this command.
    pub pdus: u32,
    /// A Data-Out arrived with a DataSN out of order (§7.4): the task ends
    /// with CHECK CONDITION once its data is in (§7.8.1).
    pub bad_data_sn: bool,
}

/// A read's Data-In, ready to go (residuals settled, faults applied); kept
/// with the task when the connection fails at ERL 2.
#[derive(Debug)]
pub(crate) struct ReadOut {
    pub data: Vec<u8>,
    pub status: u8,
    pub underflow: bool,
    pub overflow: bool,
    pub residual: u32,
    /// Bytes per Data-In PDU: DataSN n starts at n * chunk.
    pub chunk: usize,
}

pub(crate) struct Conn {
    pub shared: Arc<Shared>,
    pub stream: TcpStream,
    rbuf: BytesMut,
    pub dec: PduDecoder,
    /// Framing of what we send.
    pub tx: FrameConfig,
    /// Next StatSN to hand out (§4.2.2.2, per connection).
    pub stat_sn: u32,
    /// ExpCmdSN while no session is attached (login, discovery).
    pub exp_cmd_sn: u32,
    /// The normal session this connection belongs to, once logged in.
    pub session: Option<Arc<SessionState>>,
    pub window_closed: bool,
    pub params: Params,
    /// PDUs read while a write waited for its Data-Out.
    backlog: VecDeque<Pdu>,
    /// SCSI commands seen so far in the full feature phase.
    commands: u32,
    next_ttt: u32,
    stat_sn_jumped: bool,
    /// Full feature phase reached (slow-loris sends apply from here).
    ffp: bool,
    /// Our CID in the session (§11.12.8), from the login.
    pub cid: u16,
    /// SCSI commands answered on this connection.
    pub answered: u32,
    /// ERL 2: answered tasks whose status the initiator has not yet
    /// acknowledged (ExpStatSN), by the StatSN of their status.
    pub unacked: VecDeque<(u32, ScsiCommand, Kept)>,
    /// Whether this connection has the configured fault (see
    /// `SimConfig::faulty_connections`).
    faulty: bool,
}

impl Conn {
    /// The fault this connection misbehaves with: the configured one, or
    /// none once `SimConfig::faulty_connections` connections had it.
    pub fn fault(&self) -> Fault {
        if self.faulty { self.shared.cfg.fault } else { Fault::None }
    }

    pub fn stat(&self, f: impl FnOnce(&mut SimStats)) {
        if let Ok(mut s) = self.shared.stats.lock() {
            f(&mut s);
        }
    }

    /// Records a rule of RFC 7143 the initiator broke.
    pub fn violation(&self, what: String) {
        debug!(%what, "initiator violation");
        self.stat(|s| s.violations.push(what));
    }

    /// §4.2.2.1: a non-immediate request must carry a CmdSN inside the
    /// window we last advertised (the script's own lies aside), and "iSCSI
    /// targets MUST silently ignore any non-immediate request outside of
    /// this range or non-immediate duplicates within the range". Returns
    /// whether the request is to be carried out.
    fn check_window(&self, cmd_sn: u32, immediate: bool) -> bool {
        if immediate {
            return true;
        }
        let exp = self.exp();
        let max = if self.window_closed {
            exp.wrapping_sub(1)
        } else {
            exp.wrapping_add(self.shared.cfg.queue_depth.max(1) - 1)
        };
        if Sn(cmd_sn).lt(Sn(exp)) || Sn(cmd_sn).gt(Sn(max)) {
            self.violation(format!("CmdSN {cmd_sn} outside the window [{exp}, {max}]"));
            return false;
        }
        let duplicate = self.session.as_ref().is_some_and(|s| s.cmd_sn.lock().is_ok_and(|w| w.ahead.contains(&cmd_sn)));
        if duplicate {
            self.violation(format!("CmdSN {cmd_sn} used twice"));
        }
        !duplicate
    }

    /// The StatSN for a PDU that carries status, advancing the counter.
    pub fn next_stat_sn(&mut self) -> u32 {
        if self.fault() == Fault::StatSnJump && self.commands == 1 && !self.stat_sn_jumped {
            self.stat_sn_jumped = true;
            self.stat_sn = self.stat_sn.wrapping_add(1000);
        }
        let sn = self.stat_sn;
        self.stat_sn = sn.wrapping_add(1);
        sn
    }

    /// The ExpCmdSN in force: the session's once attached.
    pub fn exp(&self) -> u32 {
        match &self.session {
            Some(s) => s.cmd_sn.lock().map(|w| w.exp_cmd_sn).unwrap_or(self.exp_cmd_sn),
            None => self.exp_cmd_sn,
        }
    }

    /// `(ExpCmdSN, MaxCmdSN)` to put in the next PDU (§4.2.2.1).
    pub fn window(&self) -> (u32, u32) {
        let exp = self.exp();
        let max = if self.window_closed {
            exp.wrapping_sub(1)
        } else {
            exp.wrapping_add(self.shared.cfg.queue_depth.max(1) - 1)
        };
        if self.fault() == Fault::CmdWindowBackwards && self.commands == 2 {
            return (exp.wrapping_sub(8), max.wrapping_sub(8));
        }
        (exp, max)
    }

    /// A non-immediate request consumes its CmdSN (§4.2.2.1).
    fn consume_cmd_sn(&mut self, cmd_sn: u32, immediate: bool) {
        if immediate {
            return;
        }
        let Some(session) = &self.session else {
            if Sn(cmd_sn).ge(Sn(self.exp_cmd_sn)) {
                self.exp_cmd_sn = cmd_sn.wrapping_add(1);
            }
            return;
        };
        let Ok(mut w) = session.cmd_sn.lock() else { return };
        if cmd_sn == w.exp_cmd_sn {
            w.exp_cmd_sn = cmd_sn.wrapping_add(1);
            loop {
                let next = w.exp_cmd_sn;
                if !w.ahead.remove(&next) {
                    break;
                }
                w.exp_cmd_sn = next.wrapping_add(1);
            }
        } else if Sn(cmd_sn).gt(Sn(w.exp_cmd_sn)) && w.ahead.len() < 4096 {
            // Sent on another connection before a CmdSN still on its way.
            w.ahead.insert(cmd_sn);
        }
    }

    /// Next PDU from the socket; `Ok(None)` when the initiator closed.
    pub async fn recv(&mut self) -> Result<Option<Pdu>, End> {
        loop {
            match self.dec.decode(&mut self.rbuf) {
                Ok(Some(p)) => {
                    self.acknowledged(&p.bhs);
                    return Ok(Some(p));
                }
                Ok(None) => {}
                Err(e) => return Err(End::Pdu(e)),
            }
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Reads and discards until the initiator goes away.
    pub async fn drain(&mut self) -> End {
        let mut sink = [0u8; 4096];
        loop {
            match self.stream.read(&mut sink).await {
                Ok(0) => return End::Closed,
                Ok(_) => {}
                Err(e) => return End::Io(e),
            }
        }
    }

    /// Sends a TCP RST: SO_LINGER 0, then close.
    pub fn reset(self) -> End {
        if let Err(e) = self.stream.set_zero_linger() {
            return End::Io(e);
        }
        drop(self.stream);
        End::Done("reset")
    }

    pub fn encode(&self, pdu: &Pdu) -> BytesMut {
        let mut out = BytesMut::new();
        encode_pdu(pdu, &self.tx, &mut out);
        out
    }

    pub async fn send_bytes(&mut self, out: &[u8]) -> Result<(), End> {
        if self.ffp && self.fault() == Fault::SlowLoris {
            for b in out.chunks(1) {
                self.stream.write_all(b).await?;
                tokio::time::sleep(SLOW_LORIS_STEP).await;
            }
            return Ok(());
        }
        self.stream.write_all(out).await?;
        Ok(())
    }

    pub async fn send(&mut self, bhs: impl Into<Bhs>, data: Bytes) -> Result<(), End> {
        let out = self.encode(&Pdu::new(bhs, data));
        self.send_bytes(&out).await
    }

    /// Full feature phase (RFC 7143 §4): one request at a time, in order.
    async fn full_feature(&mut self, kind: SessionKind) -> Result<(), End> {
        self.ffp = true;
        self.stat(|s| s.logins += 1);
        if self.fault() == Fault::GarbageAfterLogin {
            self.send_bytes(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n\xde\xad\xbe\xef").await?;
            return Err(self.drain().await);
        }
        let mut open_at = match self.fault() {
            Fault::WindowClosed { secs } => Some(Instant::now() + Duration::from_secs(secs)),
            _ => None,
        };
        loop {
            let pdu = match self.backlog.pop_front() {
                Some(p) => p,
                None => {
                    let timer = async {
                        match open_at {
                            Some(t) => tokio::time::sleep_until(t).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        p = self.recv() => match p? {
                            Some(p) => p,
                            None => return Err(End::Closed),
                        },
                        () = timer => {
                            open_at = None;
                            self.window_closed = false;
                            self.unsolicited_nop_in().await?;
                            continue;
                        }
                    }
                }
            };
            let Pdu { bhs, data, .. } = pdu;
            match bhs {
                Bhs::NopOut(h) => {
                    self.stat(|s| s.nop_outs += 1);
                    if !self.check_window(h.cmd_sn, h.immediate) {
                        continue;
                    }
                    self.consume_cmd_sn(h.cmd_sn, h.immediate);
                    // §11.18: only a NOP-Out with a valid ITT asks for an answer.
                    if h.itt != RESERVED_TAG {
                        let (exp_cmd_sn, max_cmd_sn) = self.window();
                        let nop = NopIn {
                            lun: h.lun,
                            itt: h.itt,
                            ttt: RESERVED_TAG,
                            stat_sn: self.next_stat_sn(),
                            exp_cmd_sn,
                            max_cmd_sn,
                        };
                        self.send(nop, data).await?;
                    }
                }
                Bhs::ScsiCommand(h) => {
                    self.stat(|s| {
                        s.commands += 1;
                        if !h.immediate {
                            *s.commands_by_cmd_sn.entry(h.cmd_sn).or_default() += 1;
                        }
                    });
                    if !self.check_window(h.cmd_sn, h.immediate) {
                        // Its Data-Out, if any, finds no write and is dropped.
                        continue;
                    }
                    self.consume_cmd_sn(h.cmd_sn, h.immediate);
                    if kind == SessionKind::Discovery {
                        // §4.3: a discovery session carries only Text, NOP and Logout.
                        self.violation("SCSI command in a discovery session".to_string());
                        self.reject(&Bhs::ScsiCommand(h), 0x04).await?;
                        continue;
                    }
                    self.scsi_command(h, data).await?;
                    self.answered = self.answered.saturating_add(1);
                    self.after_answer().await?;
                }
                Bhs::TextRequest(h) => {
                    if !self.check_window(h.cmd_sn, h.immediate) {
                        continue;
                    }
                    self.consume_cmd_sn(h.cmd_sn, h.immediate);
                    let pairs = text::parse(&data).unwrap_or_default();
                    let mut answer = Vec::new();
                    // Appendix C: SendTargets=All lists every target; in a
                    // normal session only the session's own target.
                    if pairs.iter().any(|(k, _)| k == "SendTargets") {
                        answer.push(("TargetName".to_string(), self.shared.cfg.target_name.clone()));
                        let address = match self.fault() {
                            Fault::SendTargetsBadAddress => "not an address".to_string(),
                            _ => format!("{},1", self.shared.addr),
                        };
                        answer.push(("TargetAddress".to_string(), address));
                    }
                    let mut out = Vec::new();
                    text::encode(&answer, &mut out);
                    // §11.11: C set and F clear means "more follows"; this
                    // script never stops.
                    let endless = self.fault() == Fault::TextEndlessContinuation;
                    if endless {
                        out.clear();
                        let pair = format!("X-Junk={}\0", "j".repeat(200));
                        while out.len() + pair.len() <= self.params.peer_mrdsl as usize {
                            out.extend_from_slice(pair.as_bytes());
                        }
                    }
                    let (exp_cmd_sn, max_cmd_sn) = self.window();
                    let rsp = TextResponse {
                        final_bit: !endless,
                        continue_: endless,
                        lun: h.lun,
                        itt: h.itt,
                        ttt: if endless { 0x77 } else { RESERVED_TAG },
                        stat_sn: self.next_stat_sn(),
                        exp_cmd_sn,
                        max_cmd_sn,
                    };
                    self.send(rsp, Bytes::from(out)).await?;
                }
                Bhs::LogoutRequest(h) => {
                    self.consume_cmd_sn(h.cmd_sn, h.immediate);
                    self.stat(|s| *s.logouts.entry(h.reason).or_default() += 1);
                    if self.fault() == Fault::LogoutNeverAnswered {
                        return Err(self.drain().await);
                    }
                    if h.reason == iscsi_proto::pdu::logout_reason::REMOVE_CONNECTION_FOR_RECOVERY {
                        if self.logout_for_recovery(&h).await? {
                            continue;
                        }
                    } else {
                        let (exp_cmd_sn, max_cmd_sn) = self.window();
                        let rsp = LogoutResponse {
                            response: 0,
                            itt: h.itt,
                            stat_sn: self.next_stat_sn(),
                            exp_cmd_sn,
                            max_cmd_sn,
                            time2wait: 0,
                            time2retain: 0,
                        };
                        self.send(rsp, Bytes::new()).await?;
                    }
                    // §11.14: the target closes the connection after the response.
                    let _ = self.stream.shutdown().await;
                    return Ok(());
                }
                Bhs::TaskMgmtRequest(h) if h.function == crate::erl2::TASK_REASSIGN => {
                    self.consume_cmd_sn(h.cmd_sn, h.immediate);
                    self.task_reassign(&h).await?;
                }
                Bhs::TaskMgmtRequest(h) => {
                    // Decided before the TMF's own CmdSN moves the window.
                    let response = self.task_management(&h);
                    self.consume_cmd_sn(h.cmd_sn, h.immediate);
                    let (exp_cmd_sn, max_cmd_sn) = self.window();
                    let rsp =
                        TaskMgmtResponse { response, itt: h.itt, stat_sn: self.next_stat_sn(), exp_cmd_sn, max_cmd_sn };
                    self.send(rsp, Bytes::new()).await?;
                }
                // A Data-Out for no write in progress: ignored.
                Bhs::DataOut(_) => {}
                other => {
                    // §11.17.1: SNACK at ERL 0 and target opcodes are refused.
                    let reason = if matches!(other, Bhs::SnackRequest(_)) { 0x03 } else { 0x04 };
                    self.reject(&other, reason).await?;
                }
            }
        }
    }

    /// The response code of a task management function (§11.6.1). Each
    /// command here has finished before the next PDU is read, so nothing
    /// runs to be aborted: ABORT TASK follows §11.5.1 a)-c): a task kept
    /// for ERL 2 recovery is dropped ("Function complete"); a RefCmdSN
    /// still in the window and below the TMF's own CmdSN is a command not
    /// yet arrived, taken as received ("Function complete"); otherwise the
    /// task has completed or never was ("Task does not exist"). The other
    /// functions (LOGICAL UNIT RESET, ...) complete at once.
    fn task_management(&mut self, h: &iscsi_proto::pdu::TaskMgmtRequest) -> u8 {
        use iscsi_proto::pdu::{tmf_function, tmf_response};
        if h.function != tmf_function::ABORT_TASK {
            return tmf_response::FUNCTION_COMPLETE;
        }
        if self.abort_retained(h.referenced_task_tag) {
            return tmf_response::FUNCTION_COMPLETE;
        }
        let (exp, max) = self.window();
        let ahead =
            self.session.as_ref().is_some_and(|s| s.cmd_sn.lock().is_ok_and(|w| w.ahead.contains(&h.ref_cmd_sn)));
        let r = Sn(h.ref_cmd_sn);
        if !ahead && r.ge(Sn(exp)) && !r.gt(Sn(max)) && r.lt(Sn(h.cmd_sn)) {
            self.consume_cmd_sn(h.ref_cmd_sn, false);
            return tmf_response::FUNCTION_COMPLETE;
        }
        tmf_response::TASK_DOES_NOT_EXIST
    }

    async fn unsolicited_nop_in(&mut self) -> Result<(), End> {
        let (exp_cmd_sn, max_cmd_sn) = self.window();
        // §11.19: an unsolicited NOP-In carries the next StatSN without consuming it.
        let nop = NopIn { lun: 0, itt: RESERVED_TAG, ttt: RESERVED_TAG, stat_sn: self.stat_sn, exp_cmd_sn, max_cmd_sn };
        self.send(nop, Bytes::new()).await
    }

    /// Reject (§11.17): the data segment is the rejected header.
    async fn reject(&mut self, bhs: &Bhs, reason: u8) -> Result<(), End> {
        let header = Bytes::copy_from_slice(&bhs.encode(0, 0));
        let (exp_cmd_sn, max_cmd_sn) = self.window();
        let r = Reject { reason, stat_sn: self.next_stat_sn(), exp_cmd_sn, max_cmd_sn, data_sn_r2t_sn: 0 };
        self.send(r, header).await
    }

    async fn scsi_command(&mut self, h: ScsiCommand, immediate: Bytes) -> Result<(), End> {
        self.commands = self.commands.saturating_add(1);
        let first = self.commands == 1;
        match self.fault() {
            Fault::Reset(Phase::FullFeature) if first => return Err(self.take_and_reset()),
            Fault::RejectCommand if first => return self.reject(&Bhs::ScsiCommand(h), 0x04).await,
            Fault::DataSegmentTooLong if first => {
                let (exp_cmd_sn, max_cmd_sn) = self.window();
                let nop = NopIn {
                    lun: 0,
                    itt: RESERVED_TAG,
                    ttt: RESERVED_TAG,
                    stat_sn: self.stat_sn,
                    exp_cmd_sn,
                    max_cmd_sn,
                };
                let mut out = BytesMut::new();
                encode_header(&Bhs::NopIn(nop), &[], 0x00ff_ffff, &self.tx, &mut out);
                out.extend_from_slice(&[0u8; 1024]);
                self.send_bytes(&out).await?;
                return Err(self.drain().await);
            }
            Fault::UnknownOpcode if first => {
                let rsp = self.response(&h, &ScsiResult::default(), Residual::None);
                let mut out = self.encode(&Pdu::new(rsp, Bytes::new()));
                if let Some(b0) = out.first_mut() {
                    // 0x1c is not defined by RFC 7143 §11.2.1.2.
                    *b0 = 0x1c;
                }
                // Keep a header digest valid so only the opcode is wrong.
                if self.tx.header_digest {
                    let crc = iscsi_proto::digest::crc32c(out.get(..48).unwrap_or_default());
                    if let Some(d) = out.get_mut(48..52) {
                        d.copy_from_slice(&iscsi_proto::digest::to_wire(crc));
                    }
                }
                self.send_bytes(&out).await?;
                return Err(self.drain().await);
            }
            Fault::TruncatedPdu if first => {
                let rsp = self.response(&h, &ScsiResult::default(), Residual::None);
                let out = self.encode(&Pdu::new(rsp, Bytes::new()));
                self.send_bytes(out.get(..20).unwrap_or_default()).await?;
                return Err(End::Done("truncated PDU sent"));
            }
            Fault::ResponseForUnsentCommand if first => {
                let mut rsp = self.response(&h, &ScsiResult::default(), Residual::None);
                rsp.itt = h.itt ^ 0x8000_0000;
                self.send(rsp, Bytes::new()).await?;
                return Err(self.drain().await);
            }
            _ => {}
        }
        let data_out = if h.write {
            let lun_size = usize::try_from(self.shared.cfg.lun_size).unwrap_or(MAX_WRITE);
            let edtl = (h.expected_data_transfer_length as usize).min(MAX_WRITE).min(lun_size);
            let mut w = WriteProgress { buf: vec![0u8; edtl], got: 0, r2t_sn: 0, pdus: 0, bad_data_sn: false };
            if let Err(e) = self.collect_data_out(&h, immediate, &mut w).await {
                self.retain(h, Kept::Write(w));
                return Err(e);
            }
            if w.bad_data_sn {
                // §7.8.1 b) at any ERL: the task ends, nothing is written.
                let result = ScsiResult::check(ABORTED_COMMAND, PROTOCOL_SERVICE_CRC_ERROR);
                let rsp = self.response(&h, &result, Residual::None);
                let sent = self.send_final(Pdu::new(rsp, sense_segment(&result.sense))).await;
                self.unacknowledged(h, Kept::Status { result, residual: Residual::None });
                return sent;
            }
            w.buf
        } else {
            Vec::new()
        };
        self.execute(h, data_out).await
    }

    /// Runs a command whose Data-Out is complete on the LUN and answers it.
    pub(crate) async fn execute(&mut self, h: ScsiCommand, data_out: Vec<u8>) -> Result<(), End> {
        let result = match self.shared.lun.lock() {
            Ok(mut lun) => {
                if h.write && !RamLun::takes_data_out(&h.cdb) {
                    lun.execute(&h.cdb, &[])
                } else {
                    lun.execute(&h.cdb, &data_out)
                }
            }
            Err(_) => return Err(End::Done("LUN lock poisoned")),
        };
        if h.read && result.status == GOOD && !result.data.is_empty() {
            let out = self.read_out(&h, result);
            if let Err(e) = self.send_read(&h, &out, 0).await {
                self.retain(h, Kept::Read(out));
                return Err(e);
            }
            self.unacknowledged(h, Kept::Read(out));
            Ok(())
        } else {
            let edtl = h.expected_data_transfer_length;
            // §11.4.5: a write against the data its CDB asks for; a command
            // with no data, or a read that returned none, against nothing.
            let spdtl = match self.shared.lun.lock() {
                Ok(lun) if h.write => lun.data_out_length(&h.cdb),
                _ => 0,
            };
            let residual = if result.status == GOOD { Residual::of(edtl, spdtl) } else { Residual::None };
            if let Fault::WriteStatusLost { after } = self.fault()
                && h.write
                && self.answered >= after
                && self.fire()
            {
                // The status "is lost": kept unacknowledged, never sent.
                let _ = self.next_stat_sn();
                self.unacknowledged(h, Kept::Status { result, residual });
                return Err(self.cut(false).await);
            }
            let rsp = self.response(&h, &result, residual);
            let sent = self.send_final(Pdu::new(rsp, sense_segment(&result.sense))).await;
            self.unacknowledged(h, Kept::Status { result, residual });
            sent
        }
    }

    /// Sends a command's status again (a reassigned task whose status the
    /// initiator never acknowledged, §7.2).
    pub(crate) async fn resend_status(
        &mut self,
        h: ScsiCommand,
        result: ScsiResult,
        residual: Residual,
    ) -> Result<(), End> {
        let rsp = self.response(&h, &result, residual);
        let sent = self.send(rsp, sense_segment(&result.sense)).await;
        self.stat(|s| s.statuses_resent += 1);
        self.unacknowledged(h, Kept::Status { result, residual });
        sent
    }

    /// Arms a TCP reset: the caller returns, `serve` drops the stream, and
    /// with SO_LINGER 0 the close sends RST instead of FIN.
    pub(crate) fn take_and_reset(&mut self) -> End {
        match self.stream.set_zero_linger() {
            Ok(()) => End::Done("reset"),
            Err(e) => End::Io(e),
        }
    }

    /// A SCSI Response (§11.4) with its residual flags and count (§11.4.5).
    pub(crate) fn response(&mut self, h: &ScsiCommand, r: &ScsiResult, residual: Residual) -> ScsiResponse {
        let (exp_cmd_sn, max_cmd_sn) = self.window();
        let (underflow, overflow, residual_count) = match residual {
            Residual::None => (false, false, 0),
            Residual::Under(n) => (true, false, n),
            Residual::Over(n) => (false, true, n),
        };
        ScsiResponse {
            underflow,
            overflow,
            residual_count,
            response: 0,
            status: r.status,
            itt: h.itt,
            stat_sn: self.next_stat_sn(),
            exp_cmd_sn,
            max_cmd_sn,
            ..Default::default()
        }
    }

    /// Sends the PDU that completes a command, applying the faults that
    /// strike there.
    async fn send_final(&mut self, mut pdu: Pdu) -> Result<(), End> {
        let first = self.commands == 1;
        if first && self.fault() == Fault::AhsTooLong {
            pdu.ahs = Bytes::from(vec![0u8; 1020]);
        }
        let mut out = self.encode(&pdu);
        if first && self.fault() == Fault::BadHeaderDigest && self.tx.header_digest {
            let at = 48 + pdu.ahs.len();
            if let Some(b) = out.get_mut(at) {
                *b ^= 0xff;
            }
        }
        self.send_bytes(&out).await
    }

    /// A read's Data-In: the data cut or flagged to the transfer length
    /// (§11.4.5, residuals) and split at the initiator's
    /// MaxRecvDataSegmentLength (§13.12).
    fn read_out(&self, h: &ScsiCommand, r: ScsiResult) -> ReadOut {
        let edtl = h.expected_data_transfer_length as usize;
        let mut data = r.data;
        let (mut underflow, mut overflow, mut residual) = (false, false, 0u32);
        if data.len() < edtl {
            underflow = true;
            residual = (edtl - data.len()) as u32;
        } else if data.len() > edtl {
            overflow = true;
            residual = (data.len() - edtl) as u32;
            data.truncate(edtl);
        }
        if self.fault() == Fault::DataOverrun {
            // More than asked, and not said so.
            data.extend_from_slice(&[0u8; 512]);
            (underflow, overflow, residual) = (false, false, 0);
        }
        let chunk = (self.params.peer_mrdsl as usize).max(512);
        ReadOut { data, status: r.status, underflow, overflow, residual, chunk }
    }

    /// Sends Data-In (§11.7) from DataSN `from_sn` on, the status in the
    /// last PDU (§11.7.3, phase collapse). A reassigned read (§11.5.1)
    /// starts at its ExpDataSN; when nothing is left, a SCSI Response
    /// carries the status.
    pub(crate) async fn send_read(&mut self, h: &ScsiCommand, r: &ReadOut, from_sn: u32) -> Result<(), End> {
        let edtl = h.expected_data_transfer_length as usize;
        let fault = self.fault();
        let start = (from_sn as usize).saturating_mul(r.chunk).min(r.data.len());
        let rest = r.data.get(start..).unwrap_or_default();
        if rest.is_empty() {
            let result = ScsiResult { status: r.status, ..ScsiResult::default() };
            let residual = match (r.underflow, r.overflow) {
                (true, _) => Residual::Under(r.residual),
                (_, true) => Residual::Over(r.residual),
                _ => Residual::None,
            };
            let rsp = self.response(h, &result, residual);
            return self.send(rsp, Bytes::new()).await;
        }
        // A new connection may take smaller PDUs; DataSN goes on regardless.
        let chunk = r.chunk.min((self.params.peer_mrdsl as usize).max(512));
        let count = rest.len().div_ceil(chunk);
        let mut offset = start;
        for (i, piece) in rest.chunks(chunk).enumerate() {
            let last = i + 1 == count;
            let first_pdu = i == 0 && from_sn == 0;
            let (exp_cmd_sn, max_cmd_sn) = self.window();
            let mut d = DataIn {
                final_bit: last,
                status_present: last,
                status: r.status,
                underflow: last && r.underflow,
                overflow: last && r.overflow,
                residual_count: if last { r.residual } else { 0 },
                lun: h.lun,
                itt: h.itt,
                ttt: RESERVED_TAG,
                stat_sn: if last { self.next_stat_sn() } else { 0 },
                exp_cmd_sn,
                max_cmd_sn,
                data_sn: from_sn.wrapping_add(i as u32),
                buffer_offset: offset as u32,
                ..Default::default()
            };
            if first_pdu {
                match fault {
                    Fault::DataInWrongItt => d.itt ^= 0x4000_0000,
                    Fault::DataSnGap => d.data_sn += 1,
                    Fault::BufferOffsetOutside => d.buffer_offset = (edtl as u32).saturating_add(4096),
                    _ => {}
                }
            }
            let pdu = Pdu::new(d, Bytes::copy_from_slice(piece));
            let mut out = self.encode(&pdu);
            if first_pdu
                && fault == Fault::BadDataDigest
                && self.tx.data_digest
                && let Some(b) = out.last_mut()
            {
                *b ^= 0xff;
            }
            if last
                && self.commands == 1
                && fault == Fault::BadHeaderDigest
                && self.tx.header_digest
                && let Some(b) = out.get_mut(48)
            {
                *b ^= 0xff;
            }
            self.send_bytes(&out).await?;
            self.stat(|s| s.data_ins += 1);
            if first_pdu {
                match fault {
                    Fault::DataSnRepeat => self.send_bytes(&out).await?,
                    Fault::StopAnswering => return Err(self.drain().await),
                    Fault::Reset(Phase::DataIn) => return Err(self.take_and_reset()),
                    _ => {}
                }
            }
            if let Fault::CutMidRead { after, reset } = fault
                && !last
                && i + 1 == after as usize
                && self.fire()
            {
                debug!(itt = h.itt, cid = self.cid, reset, "cutting the connection mid-read");
                return Err(self.cut(reset).await);
            }
            offset += piece.len();
        }
        Ok(())
    }

    /// Ends the connection in the middle of a task: a TCP reset, or a close
    /// (FIN) after everything sent so far.
    async fn cut(&mut self, reset: bool) -> End {
        if reset {
            return self.take_and_reset();
        }
        let _ = self.stream.shutdown().await;
        End::Done("cut")
    }

    /// Whether a one-shot fault may strike now (it strikes once per target).
    pub(crate) fn fire(&self) -> bool {
        !self.shared.fired.swap(true, std::sync::atomic::Ordering::SeqCst)
    }

    /// Next Data-Out of task `itt`; other PDUs wait in the backlog.
    async fn recv_data_out(&mut self, itt: u32) -> Result<(iscsi_proto::pdu::DataOut, Bytes), End> {
        loop {
            let Some(p) = self.recv().await? else { return Err(End::Closed) };
            match p.bhs {
                Bhs::DataOut(d) if d.itt == itt => return Ok((d, p.data)),
                Bhs::DataOut(_) => {}
                _ => {
                    if self.backlog.len() >= MAX_BACKLOG {
                        return Err(End::Done("too many PDUs during a write"));
                    }
                    self.backlog.push_back(p);
                }
            }
        }
    }

    /// Gathers a write's data: immediate data, unsolicited Data-Out up to
    /// FirstBurstLength, then one R2T per MaxBurstLength (§11.7, §11.8,
    /// §13.13-14). What the initiator gets wrong is recorded as a violation.
    async fn collect_data_out(&mut self, h: &ScsiCommand, immediate: Bytes, w: &mut WriteProgress) -> Result<(), End> {
        let p = self.params;
        if !immediate.is_empty() {
            self.stat(|s| s.immediate_bytes += immediate.len() as u64);
            if !p.immediate_data {
                self.violation(format!("{} bytes of immediate data with ImmediateData=No", immediate.len()));
            }
            if immediate.len() > p.first_burst_length as usize {
                self.violation(format!(
                    "{} bytes of immediate data beyond FirstBurstLength {}",
                    immediate.len(),
                    p.first_burst_length
                ));
            }
            w.got = w.got.max(place(&mut w.buf, 0, &immediate)?);
        }
        if !h.final_bit {
            if p.initial_r2t {
                self.violation("unsolicited Data-Out with InitialR2T=Yes".to_string());
            }
            // §13.14: immediate and unsolicited data together stay within FirstBurstLength.
            let room = (p.first_burst_length as usize).saturating_sub(w.got);
            let start = w.got;
            self.data_out_sequence(h.itt, RESERVED_TAG, start, room, w).await?;
        }
        self.r2t_loop(h, w, false).await
    }

    /// One R2T per MaxBurstLength for what is still missing (§11.8). After
    /// a TASK REASSIGN these are the recovery R2Ts (§7.2.2): R2TSN goes on.
    pub(crate) async fn r2t_loop(&mut self, h: &ScsiCommand, w: &mut WriteProgress, recovery: bool) -> Result<(), End> {
        let edtl = w.buf.len();
        while w.got < edtl {
            let want = (edtl - w.got).min(self.params.max_burst_length.max(512) as usize);
            let ttt = self.next_ttt;
            self.next_ttt = self.next_ttt.wrapping_add(1) & 0x7fff_ffff;
            let (exp_cmd_sn, max_cmd_sn) = self.window();
            let mut r = R2t {
                lun: h.lun,
                itt: h.itt,
                ttt,
                stat_sn: self.stat_sn,
                exp_cmd_sn,
                max_cmd_sn,
                r2t_sn: w.r2t_sn,
                buffer_offset: w.got as u32,
                desired_data_transfer_length: want as u32,
            };
            if w.r2t_sn == 0 && !recovery && self.fault() == Fault::R2tOutside {
                r.buffer_offset = (edtl as u32).saturating_add(512);
                r.desired_data_transfer_length = 512;
            }
            self.send(r, Bytes::new()).await?;
            self.stat(|s| {
                s.r2ts += 1;
                if recovery {
                    s.recovery_r2ts += 1;
                }
            });
            w.r2t_sn = w.r2t_sn.wrapping_add(1);
            let before = w.got;
            self.data_out_sequence(h.itt, ttt, before, want, w).await?;
            if w.got <= before {
                return Err(End::Done("an R2T was answered with no data"));
            }
        }
        Ok(())
    }

    /// One Data-Out sequence (§11.7): the PDUs answering one R2T (or the
    /// unsolicited burst, `ttt` reserved), DataSN from 0, inside
    /// `[start, start + len)`, ended by the F bit.
    async fn data_out_sequence(
        &mut self,
        itt: u32,
        ttt: u32,
        start: usize,
        len: usize,
        w: &mut WriteProgress,
    ) -> Result<(), End> {
        let mut data_sn = 0u32;
        loop {
            let (d, data) = self.recv_data_out(itt).await?;
            self.stat(|s| if ttt == RESERVED_TAG { s.unsolicited_data_outs += 1 } else { s.solicited_data_outs += 1 });
            if d.ttt != ttt {
                self.violation(format!("Data-Out with TTT 0x{:08x} where 0x{ttt:08x} was due", d.ttt));
            }
            if d.data_sn != data_sn {
                self.violation(format!("Data-Out DataSN {} where {data_sn} was due", d.data_sn));
                w.bad_data_sn = true;
            }
            let off = d.buffer_offset as usize;
            if off < start || off.saturating_add(data.len()) > start.saturating_add(len) {
                self.violation(format!(
                    "Data-Out of {} bytes at offset {off} outside the {len} bytes from {start} asked for",
                    data.len()
                ));
            }
            if data.len() > self.shared.cfg.max_recv_data_segment_length as usize {
                self.violation(format!("Data-Out of {} bytes beyond our MaxRecvDataSegmentLength", data.len()));
            }
            let end = place(&mut w.buf, off, &data)?;
            if off <= w.got {
                w.got = w.got.max(end);
            }
            w.pdus = w.pdus.saturating_add(1);
            data_sn = data_sn.wrapping_add(1);
            if d.final_bit {
                return Ok(());
            }
            if let Fault::CutMidWrite { after, reset } = self.fault()
                && w.pdus >= after
                && self.fire()
            {
                debug!(itt, cid = self.cid, reset, "cutting the connection mid-write");
                return Err(self.cut(reset).await);
            }
        }
    }
}

/// Copies Data-Out into the write buffer; the end offset, or an error when
/// it falls outside the command (the connection then ends).
fn place(buf: &mut [u8], off: usize, data: &[u8]) -> Result<usize, End> {
    let end = off.checked_add(data.len()).ok_or(End::Done("Data-Out offset overflows"))?;
    let dst = buf.get_mut(off..end).ok_or(End::Done("Data-Out outside the write"))?;
    dst.copy_from_slice(data);
    Ok(end)
}

/// §11.4.7: SenseLength (2 bytes) then the sense data.
fn sense_segment(sense: &[u8]) -> Bytes {
    if sense.is_empty() {
        return Bytes::new();
    }
    let mut v = (sense.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(sense);
    Bytes::from(v)
}

/// Serves one accepted connection to its end.
pub(crate) async fn serve(shared: Arc<Shared>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    // RFC 7143 §13 defaults, for keys the initiator does not offer.
    let params = Params {
        peer_mrdsl: 8192,
        max_burst_length: 262_144,
        first_burst_length: 65_536,
        initial_r2t: true,
        immediate_data: true,
        erl: 0,
        time2wait: 2,
        time2retain: 20,
    };
    let n = shared.accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let faulty = shared.cfg.faulty_connections.is_none_or(|k| n < k);
    let window_closed = faulty && matches!(shared.cfg.fault, Fault::WindowClosed { .. });
    let mut c = Conn {
        shared: shared.clone(),
        stream,
        rbuf: BytesMut::with_capacity(64 * 1024),
        dec: PduDecoder::new(FrameConfig::default()),
        tx: FrameConfig::default(),
        stat_sn: 0x100,
        exp_cmd_sn: 0,
        session: None,
        window_closed,
        params,
        backlog: VecDeque::new(),
        commands: 0,
        next_ttt: 0x10,
        stat_sn_jumped: false,
        ffp: false,
        cid: 0,
        answered: 0,
        unacked: VecDeque::new(),
        faulty,
    };
    if c.fault() == Fault::Reset(Phase::Accept) {
        let end = c.reset();
        debug!(?end, "connection ended");
        return;
    }
    let end = match login::run(&mut c).await {
        Ok(kind) => c.full_feature(kind).await.err(),
        Err(e) => Some(e),
    };
    c.retain_unacknowledged();
    if let Some(s) = c.session.take() {
        c.connection_gone(&s);
        let left = s.connections.lock().ok().map(|mut n| {
            *n = n.saturating_sub(1);
            *n
        });
        // At ERL 2 a session whose tasks wait for recovery stays for the
        // initiator to reinstate a connection (§6.3.4, §7.2).
        if left == Some(0)
            && !s.waits_for_recovery()
            && let Ok(mut all) = shared.sessions.lock()
        {
            all.retain(|_, v| !Arc::ptr_eq(v, &s));
        }
    }
    debug!(?end, "connection ended");
}
