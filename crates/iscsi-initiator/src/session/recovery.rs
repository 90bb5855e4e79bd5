//! Recovery at ErrorRecoveryLevel 0 (RFC 7143 §6.2.1, §6.3.4, §7.1.4), and
//! the reinstatement half of ERL 2 (see `erl2.rs`):
//! a failed connection is reinstated (a login with the same CID, which
//! makes the target end the old one) and its commands are retried or
//! re-issued; when the target no longer has the session, the session is
//! reinstated (same ISID, TSIH 0) and every pending command goes out again.
//! Nothing is lost and nothing completes twice; when neither works within
//! the link-down time (`RecoveryBudget`), every pending command fails with
//! the fault that started the recovery (`fault.rs`).

use std::time::Duration;

use iscsi_proto::seq::Sn;
use tokio::time::Instant;
use tracing::{info, warn};

use super::fault::{ConnectionFault, GiveUp, GiveUpWhy};
use super::{Session, io, spawn_connection};
use crate::error::{Error, Result};
use crate::login::{LoginOutcome, LoginParams, login};
use crate::model::UniqueConnectionId;
use crate::portal::PortalAddr;

/// How long a retried command may stay unanswered after the target
/// acknowledged its CmdSN before it is taken for a dropped duplicate.
const DUPLICATE_CHECK: Duration = Duration::from_secs(3);

/// How long a reinstatement waits for the target's ExpCmdSN to settle
/// before it probes anyway.
const SETTLE_LIMIT: Duration = Duration::from_secs(2);

/// Pause between attempts to reach the target again.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

impl Session {
    /// Brings connection `cid`, lost to `fault`, back: the same CID again,
    /// else the whole session, for at most the link-down time
    /// (`RecoveryBudget::link_down_time`, at least DefaultTime2Wait and one
    /// try). Then every command still waiting fails with its first cause.
    pub(super) async fn recover(
        self,
        cid: u16,
        portal: PortalAddr,
        id: UniqueConnectionId,
        fault: ConnectionFault,
        generation: u64,
    ) {
        // istgt drops the acknowledged commands of the other connections
        // too when this one ends there; they are aborted and sent again
        // (`dropped.rs`; one watch per session).
        tokio::spawn(self.clone().watch_dropped(generation));
        let p = &self.inner.params;
        let wait = Duration::from_secs(u64::from(p.default_time2wait));
        let link_down = self.inner.cfg.recovery_budget.link_down_time.max(wait + RETRY_PAUSE);
        let deadline = Instant::now() + link_down;
        // RFC 7143 §13.15: wait DefaultTime2Wait before logging in again.
        // Each failed connection waits on its own, not in turn behind the
        // lock: its lost commands are a CmdSN gap that holds up the whole
        // session (§4.2.2.1), and istgt gives up on a gap after ~10 s.
        tokio::time::sleep(wait).await;
        let mut last = String::new();
        while Instant::now() < deadline {
            // One login at a time, but the lock is let go between tries: a
            // try can fail on a CmdSN gap that another lost connection's
            // commands make (istgt drops a connection whose probe is past
            // its ExpCmdSN), and that connection's recovery, waiting for the
            // lock, is what fills it (a retry loop holding the lock through
            // its pauses kept it out until both gave up).
            let one_at_a_time = self.inner.recovery.lock().await;
            if self.inner.lock().generation != generation {
                // A session reinstatement since then re-issued this connection's tasks.
                return;
            }
            if self.inner.lock().closed.is_some() {
                return;
            }
            match bounded(deadline, self.reinstate_connection(cid, &portal, id)).await {
                Ok(()) => {
                    info!(session = %self.inner.id, cid, "connection reinstated after: {fault}");
                    self.inner.lock().recovery_stats.connections_reinstated += 1;
                    return;
                }
                // The target ended the session with its last connection.
                Err(Error::Login { status, .. })
                    if status.class == 2 && (status.detail == 10 || status.detail == 8) =>
                {
                    last = format!("the target no longer has the session ({})", status.description());
                    break;
                }
                Err(e) => {
                    last = e.to_string();
                    warn!(cid, "connection reinstatement failed: {e}");
                    drop(one_at_a_time);
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
        let _one_at_a_time = self.inner.recovery.lock().await;
        if self.inner.lock().generation != generation {
            return;
        }
        while Instant::now() < deadline {
            if self.inner.lock().closed.is_some() {
                return;
            }
            match bounded(deadline, self.reinstate_session(cid, &portal)).await {
                Ok(()) => {
                    info!(session = %self.inner.id, "session reinstated after: {fault}");
                    self.inner.lock().recovery_stats.sessions_reinstated += 1;
                    return;
                }
                Err(e) => {
                    last = e.to_string();
                    warn!("session reinstatement failed: {e}");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
        let why = GiveUpWhy::LinkDown { within: link_down, last };
        let msg = GiveUp { cause: fault.clone(), why: why.clone() }.to_string();
        warn!("{msg}");
        let mut st = self.inner.lock();
        st.give_up_all(&fault, &why);
        st.fail_all(&msg);
        st.conns.clear();
    }

    /// Logs connection `cid` in again with its CID (RFC 7143 §6.3.4), from
    /// the same initiator port, with the same CHAP, digests and IPsec (its
    /// SA brought back first if it went away). Returns the running
    /// connection, not yet in the session's list, and the ExpCmdSN and
    /// MaxCmdSN of the target's login answer.
    pub(super) async fn login_again(
        &self,
        cid: u16,
        portal: &PortalAddr,
        id: UniqueConnectionId,
    ) -> Result<(super::state::ConnState, u32, u32)> {
        let inner = &self.inner;
        let (cmd_sn, tsih) = {
            let st = inner.lock();
            (st.window.current(), st.tsih)
        };
        let how = inner.login_of(cid);
        let cfg = inner.connection_cfg(&how);
        let protection = inner.protection_of(cid);
        let mut stream = io::connect_again(portal, &cfg, how.local_address, protection.as_ref()).await?;
        let target = inner.target_name.as_deref();
        let params = LoginParams { cfg: &cfg, target_name: target, tsih, cid, cmd_sn, exp_stat_sn: 0 };
        let l = match login(&mut stream, &params).await? {
            LoginOutcome::LoggedIn(l) => l,
            LoginOutcome::Redirect(to) => return Err(Error::Redirected(to)),
        };
        let (exp, max) = (l.exp_cmd_sn, l.max_cmd_sn);
        Ok((spawn_connection(inner, cid, id, portal.clone(), stream, *l), exp, max))
    }

    /// Logs in a connection with the failed one's CID (RFC 7143 §6.3.4).
    async fn reinstate_connection(&self, cid: u16, portal: &PortalAddr, id: UniqueConnectionId) -> Result<()> {
        let inner = &self.inner;
        let (mut conn, exp, max) = self.login_again(cid, portal, id).await?;
        // Not in service until its lost commands are sorted out.
        conn.draining = true;
        {
            let mut st = inner.lock();
            if st.closed.is_some() {
                // Logged out (or given up) meanwhile: dropping it closes it.
                return Err(Error::SessionClosed);
            }
            st.window.update(exp, max);
            st.flush_held();
            st.conns.push(conn);
            st.recovering.retain(|r| r.cid != cid);
        }
        // istgt drops a connection whose immediate PDU does not carry its
        // ExpCmdSN exactly, and with MC/S that number moves with every
        // command received on the other connections: hold new commands and
        // probe once it has settled.
        let mut held = HoldNewCommands::new(inner);
        let probe_sn = settled_exp_cmd_sn(inner).await;
        // A login response's ExpCmdSN need not be the session's (tgt puts
        // the login's own CmdSN there): ask with an immediate NOP-Out.
        let exp = match inner.probe(cid, probe_sn).await {
            Ok(exp) => exp,
            Err(e) => {
                let mut st = inner.lock();
                let (now_exp, next) = (st.window.exp_cmd_sn(), st.window.current());
                tracing::debug!(cid, probe_sn, now_exp, next, "probe failed: {e}");
                st.conns.retain(|c| c.cid != cid);
                drop(st);
                return Err(e);
            }
        };
        if inner.params.error_recovery_level >= 2 {
            if let Some(c) = super::state::conn_mut(&mut inner.lock().conns, cid) {
                c.draining = false;
            }
            drop(held);
            // RFC 7143 §7.2: at ERL 2 the reinstated connection takes the
            // old one's tasks back (TASK REASSIGN), where they left off.
            self.reassign_tasks(cid, cid, exp).await;
            return Ok(());
        }
        let mut st = inner.lock();
        if let Some(c) = super::state::conn_mut(&mut st.conns, cid) {
            c.draining = false;
        }
        let retried = st.replay_lost(cid, cid, exp);
        tracing::debug!(cid, probe_sn, exp, next = st.window.current(), ?retried, "lost commands retried");
        held.release(&mut st);
        st.drain_queue();
        drop(st);
        if !retried.is_empty() {
            tokio::spawn(watch_retried(std::sync::Arc::downgrade(inner), inner.cfg.command_timeout, retried));
        }
        Ok(())
    }

    /// A new session with the same ISID replaces the old one at the target
    /// (RFC 7143 §6.3.5); every pending command goes out again on it. It
    /// logs in the way connection `lost_cid` did, to `portal`; the session's
    /// other connections are added back afterwards, each the way it was.
    async fn reinstate_session(&self, lost_cid: u16, portal: &PortalAddr) -> Result<()> {
        let inner = &self.inner;
        let (cmd_sn, cid) = {
            let mut st = inner.lock();
            let cid = st.next_cid;
            st.next_cid = st.next_cid.wrapping_add(1);
            (st.window.current(), cid)
        };
        let how = inner.login_of(lost_cid);
        let cfg = inner.connection_cfg(&how);
        let protection = inner.protection_of(lost_cid);
        let mut stream = io::connect_again(portal, &cfg, how.local_address, protection.as_ref()).await?;
        let target = inner.target_name.as_deref();
        let params = LoginParams { cfg: &cfg, target_name: target, tsih: 0, cid, cmd_sn, exp_stat_sn: 0 };
        let l = match login(&mut stream, &params).await? {
            LoginOutcome::LoggedIn(l) => l,
            LoginOutcome::Redirect(to) => return Err(Error::Redirected(to)),
        };
        let (exp, max, tsih) = (l.exp_cmd_sn, l.max_cmd_sn, l.tsih);
        let conn = spawn_connection(inner, cid, super::ids().next_connection(), portal.clone(), stream, *l);
        let others: Vec<super::state::Wanted> = {
            let mut st = inner.lock();
            if st.closed.is_some() {
                return Err(Error::SessionClosed);
            }
            // The target ended every connection of the old session.
            let old: Vec<u16> = st.conns.iter().map(|c| c.cid).collect();
            for c in old {
                st.orphan_connection(c, None);
            }
            st.flush_held();
            st.conns.push(conn);
            st.leading_cid = cid;
            st.tsih = tsih;
            st.window = iscsi_proto::seq::CmdWindow::new(exp, exp, max);
            st.generation += 1;
            // The old connections come back with new CIDs, if at all.
            st.recovering.clear();
            let leading = super::state::Wanted { cid, portal: portal.clone(), how, protection };
            let wanted = std::mem::replace(&mut st.wanted, vec![leading]);
            st.reissue_all_lost();
            wanted.into_iter().filter(|w| w.cid != lost_cid).collect()
        };
        // Grow the session back to its former size, best effort.
        for w in others {
            let s = self.clone();
            tokio::spawn(async move {
                // Its old SA first: the re-added connection gets its own.
                if let Some(p) = &w.protection {
                    p.release().await;
                }
                if let Err(e) = s.connect_more(&w.portal, &w.how).await {
                    warn!("could not re-add a connection after session reinstatement: {e}");
                }
            });
        }
        Ok(())
    }
}

/// Watches commands retried with their own ITT and CmdSN until each is
/// answered. One the target acknowledged (its ExpCmdSN passed the CmdSN)
/// but did not answer within `DUPLICATE_CHECK` was taken for a duplicate:
/// the target got it on the old connection after all, and with MC/S it may
/// have held it there behind a CmdSN gap and answer it on that dead
/// connection once the gap is filled (istgt does). It goes out again as a
/// new command (RFC 7143 §6.2.1: a retry only plugs a gap).
/// The acknowledgment may come long after the retry, when other lost
/// connections fill their gaps, so the watch lasts until every command is
/// settled, at most the command timeout.
async fn watch_retried(inner: std::sync::Weak<super::Inner>, limit: Duration, mut retried: Vec<(u32, u32)>) {
    const POLL: Duration = Duration::from_millis(250);
    let start = Instant::now();
    let mut acked_at: Vec<(u32, Instant)> = Vec::new();
    while !retried.is_empty() && start.elapsed() < limit {
        tokio::time::sleep(POLL).await;
        let Some(inner) = inner.upgrade() else { return };
        let mut st = inner.lock();
        if st.closed.is_some() {
            return;
        }
        // Still waiting as retried: same CmdSN, on a live connection (a task
        // lost again is handled by that connection's own recovery), and no
        // Data-In yet (one that gets data is not a dropped duplicate).
        retried.retain(|(itt, sn)| {
            st.tasks.get(itt).is_some_and(|t| {
                let data = matches!(&t.kind, super::state::TaskKind::Scsi(s) if s.received > 0);
                t.cmd_sn == Some(*sn) && t.cid.is_some() && t.lost_on.is_none() && !data
            })
        });
        let exp = Sn(st.window.exp_cmd_sn());
        let now = Instant::now();
        for (itt, sn) in &retried {
            if Sn(*sn).lt(exp) && !acked_at.iter().any(|(i, _)| i == itt) {
                tracing::debug!(itt, sn, after = ?start.elapsed(), "retried command acknowledged");
                acked_at.push((*itt, now));
            }
        }
        let stale: Vec<(u32, u32)> = retried
            .iter()
            .filter(|(itt, _)| acked_at.iter().any(|(i, at)| i == itt && now.duration_since(*at) >= DUPLICATE_CHECK))
            .copied()
            .collect();
        if !stale.is_empty() {
            st.reissue_unanswered(&stale);
            retried.retain(|r| !stale.contains(r));
        }
    }
}

/// Runs one reinstatement attempt, cut off at `deadline` (the link-down
/// time) so that a connect or login that hangs cannot stretch it.
async fn bounded(deadline: Instant, attempt: impl std::future::Future<Output = Result<()>>) -> Result<()> {
    match tokio::time::timeout_at(deadline, attempt).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout("the reinstatement (link-down time reached)".into())),
    }
}

/// Holds new commands back (`State::hold`) until released or dropped.
struct HoldNewCommands<'a> {
    inner: &'a super::Inner,
    held: bool,
}

impl<'a> HoldNewCommands<'a> {
    fn new(inner: &'a super::Inner) -> Self {
        inner.lock().hold += 1;
        Self { inner, held: true }
    }

    /// Lets new commands go again (the caller drains the queue).
    fn release(&mut self, st: &mut super::state::State) {
        if std::mem::take(&mut self.held) {
            st.hold = st.hold.saturating_sub(1);
        }
    }
}

impl Drop for HoldNewCommands<'_> {
    fn drop(&mut self) {
        if self.held {
            let mut st = self.inner.lock();
            self.release(&mut st);
            st.drain_queue();
        }
    }
}

/// The CmdSN an immediate PDU must carry, once the target's ExpCmdSN has
/// settled (see `State::settled_exp_cmd_sn`; new commands held back).
/// Waits at most `SETTLE_LIMIT`, then returns the last one known.
async fn settled_exp_cmd_sn(inner: &super::Inner) -> u32 {
    let start = Instant::now();
    loop {
        let (exp, settled) = {
            let st = inner.lock();
            (st.window.exp_cmd_sn(), st.settled_exp_cmd_sn())
        };
        if let Some(sn) = settled {
            return sn;
        }
        if start.elapsed() >= SETTLE_LIMIT {
            tracing::debug!(exp, "ExpCmdSN did not settle; probing with the last known one");
            return exp;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
