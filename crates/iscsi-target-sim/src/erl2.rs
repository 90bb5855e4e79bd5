//! The target side of ErrorRecoveryLevel 2, connection recovery (RFC 7143
//! §6.2.2, §7.2): a failed connection's tasks are kept for
//! DefaultTime2Retain; once the initiator has logged the connection out
//! for recovery (Logout reason 2, §11.14.1) or reinstated its CID (§6.3.4),
//! TASK REASSIGN (§11.5.1) moves each task to the connection it arrives
//! on, where a read resumes at its ExpDataSN and a write asks with
//! recovery R2Ts for the data still missing.
//! Also the Async Message faults for one connection of a session (§11.9.1).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use iscsi_proto::pdu::{
    AsyncMessage, Bhs, LogoutRequest, LogoutResponse, RESERVED_TAG, ScsiCommand, TaskMgmtRequest, TaskMgmtResponse,
};
use iscsi_proto::seq::Sn;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tracing::debug;

use crate::conn::{Conn, End, ReadOut, Residual, WriteProgress};
use crate::scsi::ScsiResult;
use crate::{Fault, SessionState};

pub(crate) use iscsi_proto::pdu::tmf_function::TASK_REASSIGN;
use iscsi_proto::pdu::{logout_response, tmf_response};

/// How long a Logout for recovery waits for the named connection to end.
const CONNECTION_END_WAIT: Duration = Duration::from_secs(2);

/// What a kept task had done when its connection failed.
#[derive(Debug)]
pub(crate) enum Kept {
    Read(ReadOut),
    Write(WriteProgress),
    /// Done; its status (a SCSI Response) may not have arrived.
    Status {
        result: ScsiResult,
        residual: Residual,
    },
}

#[derive(Debug)]
struct KeptTask {
    /// The connection it was allegiant to.
    cid: u16,
    cmd: ScsiCommand,
    kept: Kept,
    since: Instant,
}

/// A session's ERL 2 state.
#[derive(Debug, Default)]
pub(crate) struct Retained {
    tasks: HashMap<u32, KeptTask>,
    /// CIDs logged out for recovery or reinstated: their tasks may move.
    released: HashSet<u16>,
    /// CIDs of the session's connections in full feature phase now.
    live: HashSet<u16>,
    /// Every CID the session has had: a failed one may still be logged out.
    known: HashSet<u16>,
}

impl Retained {
    /// RFC 7143 §11.5.1: task `itt` for TASK REASSIGN, or the response code
    /// refusing it. A task past DefaultTime2Retain (`retain`, §13.16) is
    /// gone; one whose connection was neither logged out nor reinstated is
    /// still allegiant to it.
    fn take_for_reassign(&mut self, itt: u32, retain: Duration) -> Result<KeptTask, u8> {
        self.tasks.retain(|_, t| t.since.elapsed() <= retain);
        let cid = self.tasks.get(&itt).map(|t| t.cid).ok_or(tmf_response::TASK_DOES_NOT_EXIST)?;
        if !self.released.contains(&cid) {
            return Err(tmf_response::TASK_STILL_ALLEGIANT);
        }
        self.tasks.remove(&itt).ok_or(tmf_response::TASK_DOES_NOT_EXIST)
    }

    /// ABORT TASK of a kept task (§11.5.1 a): it is gone.
    fn abort(&mut self, itt: u32) -> bool {
        self.tasks.remove(&itt).is_some()
    }

    /// A connection with `cid` logs in: a reinstatement when a connection
    /// with that CID failed with tasks kept (§6.3.4), which frees them.
    pub(crate) fn connection_up(&mut self, cid: u16) {
        if self.tasks.values().any(|t| t.cid == cid) {
            self.released.insert(cid);
        }
        self.live.insert(cid);
        self.known.insert(cid);
    }
}

impl SessionState {
    /// Tasks are kept (and not yet past DefaultTime2Retain).
    pub(crate) fn waits_for_recovery(&self) -> bool {
        let retain = Duration::from_secs(u64::from(self.time2retain));
        self.erl >= 2 && self.recovery.lock().is_ok_and(|r| r.tasks.values().any(|t| t.since.elapsed() <= retain))
    }
}

impl Conn {
    fn session_state(&self) -> Option<Arc<SessionState>> {
        self.session.clone()
    }

    /// Drops task `itt` if it is kept for recovery (ABORT TASK, §11.5.1).
    pub(crate) fn abort_retained(&self, itt: u32) -> bool {
        let Some(s) = self.session_state() else { return false };
        s.recovery.lock().is_ok_and(|mut r| r.abort(itt))
    }

    /// Keeps a task whose connection failed mid-transfer, at ERL 2 only
    /// (at ERL 0 and 1 a connection's tasks end with it, §7.1.4).
    pub(crate) fn retain(&self, cmd: ScsiCommand, kept: Kept) {
        let Some(s) = self.session_state() else { return };
        if s.erl < 2 {
            return;
        }
        if let Ok(mut r) = s.recovery.lock() {
            debug!(itt = cmd.itt, cid = self.cid, "task kept for recovery");
            r.released.remove(&self.cid);
            r.tasks.insert(cmd.itt, KeptTask { cid: self.cid, cmd, kept, since: Instant::now() });
        }
        self.stat(|st| st.tasks_retained += 1);
    }

    /// Notes an answered task until the initiator acknowledges its status
    /// (ERL 2 only: RFC 7143 §7.2, the status is what a reassignment of a
    /// finished task sends again).
    pub(crate) fn unacknowledged(&mut self, cmd: ScsiCommand, kept: Kept) {
        if self.session.as_ref().is_some_and(|s| s.erl >= 2) {
            let stat_sn = self.stat_sn.wrapping_sub(1);
            self.unacked.push_back((stat_sn, cmd, kept));
        }
    }

    /// A PDU's ExpStatSN acknowledges every status before it (§4.2.2.2).
    pub(crate) fn acknowledged(&mut self, bhs: &Bhs) {
        if self.unacked.is_empty() {
            return;
        }
        let exp = match bhs {
            Bhs::ScsiCommand(h) => h.exp_stat_sn,
            Bhs::NopOut(h) => h.exp_stat_sn,
            Bhs::TextRequest(h) => h.exp_stat_sn,
            Bhs::LogoutRequest(h) => h.exp_stat_sn,
            Bhs::TaskMgmtRequest(h) => h.exp_stat_sn,
            Bhs::DataOut(h) => h.exp_stat_sn,
            Bhs::SnackRequest(h) => h.exp_stat_sn,
            _ => return,
        };
        self.unacked.retain(|(sn, _, _)| Sn(*sn).ge(Sn(exp)));
    }

    /// The connection ended: tasks whose status was not acknowledged are
    /// kept like unfinished ones.
    pub(crate) fn retain_unacknowledged(&mut self) {
        for (_, cmd, kept) in std::mem::take(&mut self.unacked) {
            self.retain(cmd, kept);
        }
    }

    /// The connection ended (whatever the reason).
    pub(crate) fn connection_gone(&self, s: &SessionState) {
        if let Ok(mut r) = s.recovery.lock() {
            r.live.remove(&self.cid);
        }
    }

    /// Logout reason 2 (§11.14.1): removes connection `h.cid` for recovery,
    /// which frees its tasks for TASK REASSIGN. Sent for another connection
    /// it leaves this one open. Returns whether this connection stays.
    pub(crate) async fn logout_for_recovery(&mut self, h: &LogoutRequest) -> Result<bool, End> {
        let session = self.session_state();
        if let Some(s) = &session
            && h.cid != self.cid
        {
            // The initiator may drop a connection we still serve: let it
            // notice (and keep its task) before its tasks are freed.
            let until = Instant::now() + CONNECTION_END_WAIT;
            while Instant::now() < until && s.recovery.lock().is_ok_and(|r| r.live.contains(&h.cid)) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let (response, time2wait, time2retain) = match &session {
            Some(s) if s.erl >= 2 => {
                let known = s.recovery.lock().map(|mut r| {
                    let known = r.known.contains(&h.cid);
                    if known {
                        r.released.insert(h.cid);
                    }
                    known
                });
                let code = if known.unwrap_or(false) || h.cid == self.cid {
                    logout_response::SUCCESS
                } else {
                    logout_response::CID_NOT_FOUND
                };
                (code, s.time2wait, s.time2retain)
            }
            // §11.15.1: "connection recovery is not supported".
            _ => (logout_response::RECOVERY_NOT_SUPPORTED, 0, 0),
        };
        let (exp_cmd_sn, max_cmd_sn) = self.window();
        let rsp = LogoutResponse {
            response,
            itt: h.itt,
            stat_sn: self.next_stat_sn(),
            exp_cmd_sn,
            max_cmd_sn,
            time2wait,
            time2retain,
        };
        self.send(rsp, Bytes::new()).await?;
        Ok(h.cid != self.cid || response != logout_response::SUCCESS)
    }

    /// TASK REASSIGN (§11.5.1): answered first, then the task goes on here.
    pub(crate) async fn task_reassign(&mut self, h: &TaskMgmtRequest) -> Result<(), End> {
        let session = self.session_state();
        let mut task = None;
        let response = match &session {
            None => tmf_response::FUNCTION_REJECTED,
            // §11.5.1: below ERL 2 reassignment is not supported.
            Some(s) if s.erl < 2 || !self.shared.cfg.task_reassign => tmf_response::REASSIGNMENT_NOT_SUPPORTED,
            Some(_) if h.referenced_task_tag == RESERVED_TAG => tmf_response::FUNCTION_REJECTED,
            Some(s) => {
                let retain = Duration::from_secs(u64::from(s.time2retain));
                match s.recovery.lock().map(|mut r| r.take_for_reassign(h.referenced_task_tag, retain)) {
                    Err(_) => tmf_response::FUNCTION_REJECTED,
                    Ok(Err(code)) => code,
                    Ok(Ok(t)) => {
                        task = Some(t);
                        tmf_response::FUNCTION_COMPLETE
                    }
                }
            }
        };
        let (exp_cmd_sn, max_cmd_sn) = self.window();
        let rsp = TaskMgmtResponse { response, itt: h.itt, stat_sn: self.next_stat_sn(), exp_cmd_sn, max_cmd_sn };
        self.send(rsp, Bytes::new()).await?;
        let Some(t) = task else {
            debug!(itt = h.referenced_task_tag, response, "TASK REASSIGN refused");
            if response == tmf_response::TASK_DOES_NOT_EXIST {
                self.stat(|s| s.reassign_no_such_task += 1);
            } else {
                self.stat(|s| s.reassign_refused += 1);
            }
            return Ok(());
        };
        debug!(itt = h.referenced_task_tag, from = t.cid, to = self.cid, "task reassigned");
        self.stat(|s| s.reassigned += 1);
        let cmd = t.cmd;
        match t.kept {
            Kept::Read(out) => {
                // §11.5.1: Data-In again from ExpDataSN (0: from the start).
                self.stat(|s| s.resumed_from_data_sn.push(h.exp_data_sn));
                if let Err(e) = self.send_read(&cmd, &out, h.exp_data_sn).await {
                    self.retain(cmd, Kept::Read(out));
                    return Err(e);
                }
                self.unacknowledged(cmd, Kept::Read(out));
                Ok(())
            }
            Kept::Write(mut w) => {
                if let Err(e) = self.r2t_loop(&cmd, &mut w, true).await {
                    self.retain(cmd, Kept::Write(w));
                    return Err(e);
                }
                self.execute(cmd, w.buf).await
            }
            Kept::Status { result, residual } => self.resend_status(cmd, result, residual).await,
        }
    }

    /// Applies the Async Message faults once a command was answered.
    pub(crate) async fn after_answer(&mut self) -> Result<(), End> {
        let (event, cid, after) = match self.fault() {
            Fault::AsyncLogoutRequest { cid, after } => (1u8, cid, after),
            Fault::AsyncDropConnection { cid, after } => (2u8, cid, after),
            _ => return Ok(()),
        };
        if self.cid != cid || self.answered < after || !self.fire() {
            return Ok(());
        }
        let (time2wait, time2retain) = self.session_state().map_or((0, 0), |s| (s.time2wait, s.time2retain));
        let (exp_cmd_sn, max_cmd_sn) = self.window();
        let (parameter1, parameter2, parameter3) = match event {
            // §11.9.1 event 1: Parameter3 is the time to log out in.
            1 => (0, 0, 1),
            // Event 2: the CID, then Time2Wait and Time2Retain.
            _ => (self.cid, time2wait, time2retain),
        };
        let msg = AsyncMessage {
            lun: 0,
            stat_sn: self.next_stat_sn(),
            exp_cmd_sn,
            max_cmd_sn,
            async_event: event,
            async_vcode: 0,
            parameter1,
            parameter2,
            parameter3,
        };
        debug!(cid = self.cid, event, "async message");
        self.send(msg, Bytes::new()).await?;
        self.stat(|s| *s.async_events.entry(event).or_default() += 1);
        if event == 2 {
            let _ = self.stream.shutdown().await;
            return Err(End::Done("connection dropped after Async Message event 2"));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    const RETAIN: Duration = Duration::from_secs(20);

    fn kept(r: &mut Retained, itt: u32, cid: u16, age: Duration) {
        let cmd = ScsiCommand { itt, ..ScsiCommand::default() };
        let out =
            ReadOut { data: vec![1; 1024], status: 0, underflow: false, overflow: false, residual: 0, chunk: 512 };
        let since = Instant::now().checked_sub(age).expect("a past instant");
        r.connection_up(cid);
        r.live.remove(&cid);
        r.tasks.insert(itt, KeptTask { cid, cmd, kept: Kept::Read(out), since });
    }

    #[test]
    fn reassign_waits_for_the_logout_of_the_old_connection() {
        let mut r = Retained::default();
        kept(&mut r, 7, 1, Duration::ZERO);
        assert_eq!(r.take_for_reassign(7, RETAIN).err(), Some(tmf_response::TASK_STILL_ALLEGIANT));
        // Logout reason 2 for CID 1 frees it, once.
        r.released.insert(1);
        assert_eq!(r.take_for_reassign(7, RETAIN).map(|t| t.cmd.itt).ok(), Some(7));
        assert_eq!(r.take_for_reassign(7, RETAIN).err(), Some(tmf_response::TASK_DOES_NOT_EXIST));
    }

    #[test]
    fn reinstating_the_cid_frees_its_tasks() {
        let mut r = Retained::default();
        kept(&mut r, 9, 2, Duration::ZERO);
        r.connection_up(3);
        assert_eq!(r.take_for_reassign(9, RETAIN).err(), Some(tmf_response::TASK_STILL_ALLEGIANT));
        r.connection_up(2);
        assert!(r.take_for_reassign(9, RETAIN).is_ok());
    }

    #[test]
    fn tasks_are_gone_after_time2retain() {
        let mut r = Retained::default();
        kept(&mut r, 5, 1, Duration::from_secs(21));
        r.released.insert(1);
        assert_eq!(r.take_for_reassign(5, RETAIN).err(), Some(tmf_response::TASK_DOES_NOT_EXIST));
        assert!(r.tasks.is_empty());
    }
}
