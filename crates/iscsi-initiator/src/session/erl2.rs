//! Connection recovery at ErrorRecoveryLevel 2 (RFC 7143 §6.2.2, §7.2):
//! when one connection of a session fails while another is in service, the
//! failed CID is logged out "for recovery" on a surviving connection
//! (Logout reason 2, §11.14.1), then each of its SCSI tasks is moved there
//! with TASK REASSIGN (§11.5.1). A read goes on from its ExpDataSN (the
//! bytes already placed stay), a write answers the target's recovery R2Ts.
//! A task the target cannot reassign falls back to what ERL 0 does: retried
//! with its own ITT and CmdSN when the target never received it (§6.2.1),
//! else re-issued as a new command. When the logout itself fails, or no
//! other connection is left, the connection is reinstated (a login with
//! its CID, §6.3.4, `recovery.rs`) and at ERL 2 the reinstated connection
//! takes its tasks back with TASK REASSIGN the same way.

use std::time::Duration;

use bytes::Bytes;
use iscsi_proto::pdu::{TaskMgmtRequest, logout_reason, logout_response, tmf_function, tmf_response};
use iscsi_proto::seq::Sn;
use tracing::{info, warn};

use super::fault::{ConnectionFault, FaultKind};
use super::state::{self, Reply, State, Task, TaskKind, conn_mut};
use super::{Inner, Session};
use crate::error::{Error, Result};
use crate::model::UniqueConnectionId;
use crate::portal::PortalAddr;

/// A TASK REASSIGN on its way: the task, its CmdSN, and the answer to come.
struct Pending {
    itt: u32,
    cmd_sn: u32,
    tmf_itt: u32,
    rx: super::reply::Receiver,
}

impl Inner {
    /// ERL 2 connection recovery applies to a failure of `cid`: it was
    /// negotiated and another connection of the session is in service.
    pub(super) fn erl2_applies(&self, st: &State, cid: u16) -> bool {
        self.params.error_recovery_level >= 2 && st.conns.iter().any(|c| c.cid != cid && !c.draining)
    }
}

impl State {
    /// The connection in service (not `not`) with the fewest tasks.
    fn survivor(&self, not: u16) -> Option<u16> {
        self.conns.iter().filter(|c| c.cid != not && !c.draining).min_by_key(|c| c.outstanding).map(|c| c.cid)
    }

    /// Moves the lost tasks of `lost_cid` to `to` and sends one TASK
    /// REASSIGN for each (immediate, RFC 7143 §11.5.1: ReferencedTaskTag is
    /// the task's ITT; ExpDataSN the next Data-In a read expects, 0 for a
    /// write). A task that never got a CmdSN is simply queued again.
    fn send_reassigns(&mut self, lost_cid: u16, to: u16) -> Vec<Pending> {
        let mut lost: Vec<(u32, Option<u32>)> =
            self.tasks.iter().filter(|(_, t)| t.lost_on == Some(lost_cid)).map(|(itt, t)| (*itt, t.cmd_sn)).collect();
        lost.sort_by_key(|(_, sn)| *sn);
        let mut pending = Vec::new();
        for (itt, sn) in lost {
            if self.tasks.get(&itt).is_some_and(Task::abandoned) {
                // Recovery gave up on it: not taken over (the target drops
                // it after DefaultTime2Retain, §6.2.2), its CmdSN filled if
                // the target never got it.
                let exp = self.window.exp_cmd_sn();
                self.fill_or_forget(itt, sn, to, exp);
                continue;
            }
            let Some(cmd_sn) = sn else {
                self.reissue(vec![itt]);
                continue;
            };
            let Some(t) = self.tasks.get_mut(&itt) else { continue };
            t.cid = Some(to);
            t.lost_on = None;
            // A read whose buffer was lent to the dead connection's reader
            // (a segment read straight from the socket) lost the bytes it
            // held: start it over from DataSN 0 (RFC 7143 §11.5.1 allows it).
            if let TaskKind::Scsi(s) = &t.kind
                && s.read
                && s.buf.len() != s.received as usize
            {
                t.restart();
            }
            let exp_data_sn = match &t.kind {
                TaskKind::Scsi(s) if s.read => s.next_data_sn,
                _ => 0,
            };
            let lun = t.lun;
            if let Some(c) = conn_mut(&mut self.conns, to) {
                c.outstanding += 1;
            }
            let tmf_itt = self.alloc_itt();
            let (tx, rx) = super::reply::channel();
            let mut tmf = Task::new(Some(to), lun, TaskKind::TaskMgmt, None);
            tmf.reply = Some(tx);
            self.tasks.insert(tmf_itt, tmf);
            let next = self.window.current();
            if let Some(c) = self.conns.iter().find(|c| c.cid == to) {
                let req = TaskMgmtRequest {
                    immediate: true,
                    function: tmf_function::TASK_REASSIGN,
                    lun,
                    itt: tmf_itt,
                    referenced_task_tag: itt,
                    cmd_sn: next,
                    exp_stat_sn: c.exp_stat_sn,
                    ref_cmd_sn: cmd_sn,
                    exp_data_sn,
                };
                state::push(c, req, Bytes::new());
            }
            pending.push(Pending { itt, cmd_sn, tmf_itt, rx });
        }
        pending
    }

    /// The target did not take task `itt` over on `to`: as at ERL 0, retry
    /// it with its own ITT and CmdSN when the target never received it
    /// (CmdSN at or past `exp_cmd_sn`: its hole in the CmdSN order must be
    /// filled, RFC 7143 §6.2.1, and the old connection is logged out, so
    /// another may carry it), else send it again as a new command.
    fn reassign_refused(&mut self, itt: u32, cmd_sn: u32, to: u16, exp_cmd_sn: u32) {
        // The survivor may have failed meanwhile; its own recovery has the task then.
        let Some(t) = self.tasks.get_mut(&itt).filter(|t| t.cid == Some(to) && t.lost_on.is_none()) else { return };
        if t.abandoned() {
            if let Some(c) = conn_mut(&mut self.conns, to) {
                c.outstanding = c.outstanding.saturating_sub(1);
            }
            self.fill_or_forget(itt, Some(cmd_sn), to, exp_cmd_sn);
            return;
        }
        if Sn(cmd_sn).ge(Sn(exp_cmd_sn)) {
            t.restart();
            self.send_command(itt, cmd_sn);
            return;
        }
        if let Some(c) = conn_mut(&mut self.conns, to) {
            c.outstanding = c.outstanding.saturating_sub(1);
        }
        self.reissue(vec![itt]);
    }
}

/// Words for a Logout Response code (RFC 7143 §11.15.1).
pub(crate) fn logout_response_text(code: u8) -> &'static str {
    use iscsi_proto::pdu::logout_response as r;
    match code {
        r::SUCCESS => "connection or session closed successfully",
        r::CID_NOT_FOUND => "CID not found",
        r::RECOVERY_NOT_SUPPORTED => "connection recovery is not supported",
        r::CLEANUP_FAILED => "cleanup failed for various reasons",
        _ => "unknown logout response",
    }
}

impl Session {
    /// Recovers failed connection `cid` at ERL 2 (see the module doc).
    pub(super) async fn recover_erl2(
        self,
        cid: u16,
        portal: PortalAddr,
        id: UniqueConnectionId,
        fault: ConnectionFault,
        generation: u64,
    ) {
        if let Err(e) = self.reassign_connection(cid, &portal, generation).await {
            warn!(cid, "ERL 2 recovery failed ({e}); falling back to connection or session reinstatement");
            self.recover(cid, portal, id, fault, generation).await;
        }
    }

    /// Logout reason 2 for `cid` on a surviving connection, then TASK
    /// REASSIGN of its tasks, then a new connection to keep the session's
    /// size. An error means the tasks are still waiting for recovery.
    async fn reassign_connection(&self, cid: u16, portal: &PortalAddr, generation: u64) -> Result<()> {
        let inner = &self.inner;
        let guard = inner.recovery.lock().await;
        if inner.lock().generation != generation {
            // A session reinstatement since then re-issued this connection's tasks.
            return Ok(());
        }
        // RFC 7143 §13.15: DefaultTime2Wait before a logout or reassignment
        // after a connection failed.
        tokio::time::sleep(Duration::from_secs(u64::from(inner.params.default_time2wait))).await;
        let survivor = inner
            .lock()
            .survivor(cid)
            .ok_or_else(|| Error::ConnectionLost("no connection left to recover on".into()))?;
        let task = Task::new(Some(survivor), 0, TaskKind::Logout(logout_reason::REMOVE_CONNECTION_FOR_RECOVERY), None);
        match inner.submit_logout(task, cid).await? {
            Reply::Logout(h) if h.response == logout_response::SUCCESS => {
                info!(cid, survivor, time2retain = h.time2retain, "connection logged out for recovery");
            }
            // §11.15.1: the target no longer knows the CID, so nothing of it
            // is allegiant any more; its tasks are asked for all the same.
            Reply::Logout(h) if h.response == logout_response::CID_NOT_FOUND => {
                info!(cid, survivor, "connection to log out for recovery unknown to the target");
            }
            Reply::Logout(h) => {
                return Err(Error::LogoutRefused {
                    response: h.response,
                    description: logout_response_text(h.response),
                });
            }
            _ => return Err(Error::protocol("unexpected reply to a Logout Request")),
        }
        // The Logout Response brought the target's ExpCmdSN.
        let exp_cmd_sn = inner.lock().window.exp_cmd_sn();
        self.reassign_tasks(cid, survivor, exp_cmd_sn).await;
        drop(guard);
        // Keep the session's size: a new connection replaces the removed one.
        let regrow = {
            let mut st = inner.lock();
            let gone = st.wanted.iter().position(|w| w.cid == cid).map(|i| st.wanted.remove(i));
            // Logged out for good: it comes back (if at all) with a new CID.
            st.recovering.retain(|r| r.cid != cid);
            gone.filter(|_| st.closed.is_none())
        };
        // The same way (initiator port, CHAP, digests) as the one removed.
        if let Some(w) = regrow {
            let s = self.clone();
            let portal = portal.clone();
            tokio::spawn(async move {
                // Its old SA first: the new connection gets its own.
                if let Some(p) = &w.protection {
                    p.release().await;
                }
                if let Err(e) = s.connect_more(&portal, &w.how).await {
                    warn!("could not replace the connection removed for recovery: {e}");
                }
            });
        }
        Ok(())
    }

    /// Moves the tasks lost with connection `lost_cid` to connection `to`
    /// (a survivor, or the reinstated connection with the same CID) by
    /// TASK REASSIGN; those the target refuses go the ERL 0 way, judged
    /// against the target's ExpCmdSN `exp_cmd_sn`.
    pub(super) async fn reassign_tasks(&self, lost_cid: u16, to: u16, exp_cmd_sn: u32) {
        let inner = &self.inner;
        let pending = inner.lock().send_reassigns(lost_cid, to);
        let (mut moved, mut fell_back) = (0usize, 0usize);
        // One bound for all the answers: they were all sent at once.
        let deadline = tokio::time::Instant::now() + inner.cfg.login_timeout;
        for p in pending {
            let response = match tokio::time::timeout_at(deadline, p.rx).await {
                Ok(Ok(Ok(Reply::TaskMgmt(h)))) => Some(h.response),
                _ => {
                    inner.lock().take_task(p.tmf_itt);
                    None
                }
            };
            if response == Some(tmf_response::FUNCTION_COMPLETE) {
                moved += 1;
                continue;
            }
            fell_back += 1;
            info!(itt = p.itt, ?response, "TASK REASSIGN refused; retrying the command as at ERL 0");
            let mut st = inner.lock();
            st.reassign_refused(p.itt, p.cmd_sn, to, exp_cmd_sn);
            st.drain_queue();
        }
        info!(session = %inner.id, lost_cid, to, moved, fell_back, "tasks recovered at ERL 2");
    }

    /// Logs connection `id` out for recovery (RFC 7143 §11.14.1 reason 2)
    /// on another connection of the session, and moves its tasks there with
    /// TASK REASSIGN. Needs ErrorRecoveryLevel 2 and another connection.
    /// A replacement connection is logged in afterwards.
    pub async fn logout_connection_for_recovery(&self, id: UniqueConnectionId) -> Result<()> {
        let (cid, portal, generation) = {
            let mut st = self.inner.lock();
            let c = st.conns.iter().find(|c| c.id == id).ok_or(Error::InvalidConnectionId(id.to_string()))?;
            let cid = c.cid;
            if self.inner.params.error_recovery_level < 2 {
                return Err(Error::RecoveryLevelTooLow { negotiated: self.inner.params.error_recovery_level });
            }
            if !self.inner.erl2_applies(&st, cid) {
                return Err(Error::CantRemoveLastConnection);
            }
            let generation = st.generation;
            // Dropping the connection closes its socket; its tasks wait.
            let Some((portal, _)) = st.orphan_connection(cid, None) else {
                return Err(Error::InvalidConnectionId(id.to_string()));
            };
            (cid, portal, generation)
        };
        match self.reassign_connection(cid, &portal, generation).await {
            Ok(()) => Ok(()),
            Err(e) => {
                // Leave no task behind: the ERL 0 way brings them back.
                let s = self.clone();
                let fault = ConnectionFault::new(FaultKind::Closed, format!("logout for recovery failed: {e}"));
                tokio::spawn(s.recover(cid, portal, id, fault, generation));
                Err(e)
            }
        }
    }
}
