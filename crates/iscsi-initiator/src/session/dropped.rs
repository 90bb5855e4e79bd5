//! Commands a target acknowledged and then dropped without a word while a
//! lost link is recovered (issue 19). istgt aborts every command of the
//! session queued at the LU whenever any one of its connections ends
//! (istgt_iscsi.c: a connection's exit calls `istgt_lu_clear_task_IT`,
//! which matches tasks by initiator port, not by connection), and answers
//! none of them; a lost link's old connection ends there whenever the
//! target next sends on it after the link is back, at a time we neither
//! choose nor see. Such a command stays unanswered on a connection that
//! is alive (TCP keepalive answers) but silent.
//!
//! While a connection of the session is being recovered, and for a while
//! after, a command the target acknowledged (its ExpCmdSN passed the
//! CmdSN) that got nothing back within [`DROPPED_AFTER`] on a stalled
//! connection is aborted (ABORT TASK, RFC 7143 §11.5.1: afterwards the
//! target runs no part of it) and, once the abort is answered, sent again
//! as a new command. New commands wait meanwhile, so that the abort's
//! CmdSN (immediate, the next one) is the target's ExpCmdSN: istgt takes
//! an immediate request's CmdSN as its ExpCmdSN (`istgt_iscsi_op_task`).
//!
//! A write the target received whose data went down with the link is not
//! aborted this way: istgt's LU runs one write at a time and its worker
//! reads that write's data from the (dead) connection itself
//! (`istgt_iscsi_transfer_out`), so an ABORT TASK cannot end the wait
//! (`istgt_lu_disk_queue_clear_internal` only `trylock`s the task) though
//! it answers "function complete". Such a write stays held until the old
//! connection is ended at the target (`failover.rs`: a login with its CID
//! over another link, or its reinstatement); the LU runs nothing else for
//! the session until then.

use std::time::{Duration, Instant};

use bytes::Bytes;
use iscsi_proto::pdu::{TaskMgmtRequest, tmf_function, tmf_response};
use iscsi_proto::seq::Sn;
use tracing::{debug, info};

use super::Session;
use super::state::{self, Reply, State, Task, TaskKind, conn_mut};

/// How long an acknowledged command may go unanswered on a stalled
/// connection before it is taken for dropped.
pub(super) const DROPPED_AFTER: Duration = Duration::from_secs(5);

/// How often the commands are looked at.
const POLL: Duration = Duration::from_millis(250);

/// How long the watch goes on after the last recovery ended: the target
/// ends the old connection when it next sends on it, within its
/// retransmission timeout of the link's return.
const LINGER: Duration = Duration::from_secs(60);

/// How long an abort may take to be answered.
const ABORT_ANSWER: Duration = Duration::from_secs(3);

/// A command taken for dropped: (ITT, CID the abort goes on, LUN, CmdSN).
type Dropped = (u32, u16, u64, u32);

impl State {
    /// The commands taken for dropped at `now` (see the module text): SCSI
    /// commands on a stalled connection in service, acknowledged, without
    /// any Data-In, sent at least `after` ago.
    /// None while a write is held for a reinstatement: istgt's LU then
    /// waits for that write's data and answers nothing, without dropping
    /// anything; aborting what waits behind it would only queue it again.
    pub fn dropped_commands(&self, now: Instant, after: Duration) -> Vec<Dropped> {
        if self.tasks.values().any(|t| t.held_for_reinstatement) {
            return Vec::new();
        }
        let exp = Sn(self.window.exp_cmd_sn());
        self.tasks
            .iter()
            .filter_map(|(itt, t)| {
                let TaskKind::Scsi(s) = &t.kind else { return None };
                let cid = t.cid?;
                let sn = t.cmd_sn?;
                let c = self.conns.iter().find(|c| c.cid == cid)?;
                let old = t.sent_at.is_some_and(|at| now.saturating_duration_since(at) >= after);
                // A connection for fillers counts too: its fillers, once
                // aborted, are forgotten (their CmdSNs are filled).
                let in_service = !c.draining || self.gap_fillers.contains(&cid);
                let waited_for = !t.abandoned() || self.gap_fillers.contains(&cid);
                (c.stalled && in_service && s.received == 0 && Sn(sn).lt(exp) && old && waited_for)
                    .then_some((*itt, cid, t.lun, sn))
            })
            .collect()
    }

    /// Sends ABORT TASK for each of `dropped` on its own connection, with
    /// the next CmdSN (immediate, RFC 7143 §11.5); returns each command's
    /// ITT and CmdSN with the abort's ITT and answer.
    fn send_aborts(&mut self, dropped: &[Dropped]) -> Vec<(u32, u32, u32, super::reply::Receiver)> {
        let next = self.window.current();
        let mut out = Vec::new();
        for &(itt, cid, lun, sn) in dropped {
            let Some(c) = self.conns.iter().find(|c| c.cid == cid) else { continue };
            let exp_stat_sn = c.exp_stat_sn;
            let tmf_itt = self.alloc_itt();
            let (tx, rx) = super::reply::channel();
            let mut t = Task::new(Some(cid), lun, TaskKind::TaskMgmt, None);
            t.reply = Some(tx);
            self.tasks.insert(tmf_itt, t);
            let req = TaskMgmtRequest {
                immediate: true,
                function: tmf_function::ABORT_TASK,
                lun,
                itt: tmf_itt,
                referenced_task_tag: itt,
                cmd_sn: next,
                exp_stat_sn,
                ref_cmd_sn: sn,
                exp_data_sn: 0,
            };
            if let Some(c) = self.conns.iter().find(|c| c.cid == cid) {
                state::push(c, req, Bytes::new());
            }
            out.push((itt, sn, tmf_itt, rx));
        }
        out
    }

    /// Command `itt` (CmdSN `sn`) was aborted: unless it was answered
    /// meanwhile or moved, it goes again as a new command.
    pub fn reissue_dropped(&mut self, itt: u32, sn: u32) -> bool {
        let Some(cid) =
            self.tasks.get(&itt).filter(|t| t.cmd_sn == Some(sn) && t.lost_on.is_none()).and_then(|t| t.cid)
        else {
            return false;
        };
        if let Some(c) = conn_mut(&mut self.conns, cid) {
            c.outstanding = c.outstanding.saturating_sub(1);
        }
        self.reissue(vec![itt]);
        true
    }
}

impl Session {
    /// Watches for dropped commands (see the module text) while a
    /// connection is being recovered and for [`LINGER`] after; one watch
    /// per session.
    pub(super) async fn watch_dropped(self, generation: u64) {
        {
            let mut st = self.inner.lock();
            if st.watching_dropped {
                return;
            }
            st.watching_dropped = true;
        }
        let mut calm_since = Instant::now();
        // Commands whose abort was not answered: not tried again.
        let mut not_aborted: Vec<u32> = Vec::new();
        loop {
            tokio::time::sleep(POLL).await;
            let now = Instant::now();
            let dropped = {
                let st = self.inner.lock();
                if st.closed.is_some() || st.generation != generation {
                    break;
                }
                if !st.recovering.is_empty() {
                    calm_since = now;
                }
                if now.saturating_duration_since(calm_since) >= LINGER {
                    break;
                }
                let mut dropped = st.dropped_commands(now, DROPPED_AFTER);
                dropped.retain(|d| !not_aborted.contains(&d.0));
                dropped
            };
            if dropped.is_empty() {
                continue;
            }
            not_aborted.extend(self.abort_and_reissue(&dropped).await);
        }
        self.inner.lock().watching_dropped = false;
    }

    /// Aborts the commands taken for dropped and sends each again as new
    /// once its abort is answered; new commands wait meanwhile. Returns
    /// the commands whose abort was not answered.
    async fn abort_and_reissue(&self, dropped: &[Dropped]) -> Vec<u32> {
        let pending = {
            let mut st = self.inner.lock();
            st.hold += 1;
            st.send_aborts(dropped)
        };
        let mut again = 0usize;
        let mut not_done = Vec::new();
        for (itt, sn, tmf_itt, rx) in pending {
            let answer = match tokio::time::timeout(ABORT_ANSWER, rx).await {
                Ok(Ok(Ok(Reply::TaskMgmt(h)))) => Some(h.response),
                _ => None,
            };
            let mut st = self.inner.lock();
            match answer {
                Some(tmf_response::FUNCTION_COMPLETE | tmf_response::TASK_DOES_NOT_EXIST) => {
                    if st.reissue_dropped(itt, sn) {
                        again += 1;
                    }
                }
                other => {
                    st.take_task(tmf_itt);
                    not_done.push(itt);
                    debug!(itt, sn, answer = ?other, "abort of a command taken for dropped not done; it stays");
                }
            }
        }
        let mut st = self.inner.lock();
        st.hold = st.hold.saturating_sub(1);
        st.drain_queue();
        if again > 0 {
            info!(session = %self.inner.id, count = again, "commands the target acknowledged but dropped unanswered were aborted and sent again");
        }
        not_done
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;
    use crate::session::state::tests::{busy_conn, one_block_read, state};

    #[tokio::test]
    async fn only_acknowledged_silent_commands_on_stalled_connections_count_as_dropped() {
        let mut st = state(20, 18);
        let (mut c, _peer) = busy_conn(0).await;
        c.cid = 1;
        st.conns.push(c);
        let t0 = Instant::now();
        let add = |st: &mut State, sn: u32| {
            let itt = st.alloc_itt();
            let mut t = Task::new(Some(1), 0, one_block_read(), Some((iscsi_proto::scsi::cdb::test_unit_ready(), 0)));
            t.cmd_sn = Some(sn);
            t.sent_at = Some(t0);
            let (tx, rx) = crate::session::reply::channel();
            t.reply = Some(tx);
            std::mem::forget(rx);
            st.tasks.insert(itt, t);
            itt
        };
        let acked = add(&mut st, 17);
        let _not_acked = add(&mut st, 19);
        let later = t0 + DROPPED_AFTER;
        // Not stalled: answers may still come.
        assert!(st.dropped_commands(later, DROPPED_AFTER).is_empty());
        st.conns[0].stalled = true;
        // Too recent.
        assert!(st.dropped_commands(t0 + Duration::from_secs(1), DROPPED_AFTER).is_empty());
        assert_eq!(st.dropped_commands(later, DROPPED_AFTER), vec![(acked, 1, 0, 17)]);
        // Data came: it is being answered.
        if let Some(TaskKind::Scsi(s)) = st.tasks.get_mut(&acked).map(|t| &mut t.kind) {
            s.received = 512;
        }
        assert!(st.dropped_commands(later, DROPPED_AFTER).is_empty());
        if let Some(TaskKind::Scsi(s)) = st.tasks.get_mut(&acked).map(|t| &mut t.kind) {
            s.received = 0;
        }
        // A write held for a reinstatement: the LU may be waiting for it.
        let held = add(&mut st, 10);
        if let Some(t) = st.tasks.get_mut(&held) {
            t.cid = None;
            t.lost_on = Some(2);
            t.held_for_reinstatement = true;
        }
        assert!(st.dropped_commands(later, DROPPED_AFTER).is_empty());
    }

    #[tokio::test]
    async fn an_aborted_command_goes_again_as_new() {
        let mut st = state(20, 20);
        let (mut c, _peer) = busy_conn(1).await;
        c.cid = 1;
        st.conns.push(c);
        let itt = st.alloc_itt();
        let mut t = Task::new(Some(1), 0, one_block_read(), Some((iscsi_proto::scsi::cdb::test_unit_ready(), 0)));
        t.cmd_sn = Some(17);
        let (tx, rx) = crate::session::reply::channel();
        t.reply = Some(tx);
        std::mem::forget(rx);
        st.tasks.insert(itt, t);
        // Answered meanwhile under another CmdSN: nothing to do.
        assert!(!st.reissue_dropped(itt, 16));
        assert!(st.reissue_dropped(itt, 17));
        assert!(!st.tasks.contains_key(&itt));
        assert!(st.tasks.values().any(|t| t.cmd_sn == Some(20) && t.cid == Some(1)));
        assert_eq!(st.conns[0].outstanding, 1, "the old one left, the new one came");
    }
}
