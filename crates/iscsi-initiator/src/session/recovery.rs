//! Recovery at ErrorRecoveryLevel 0 (RFC 7143 §6.2.1, §6.3.4, §7.1.4), and
//! the reinstatement half of ERL 2 (see `erl2.rs`):
//! a failed connection is reinstated (a login with the same CID, which
//! makes the target end the old one) and its commands are retried or
//! re-issued; when the target no longer has the session, the session is
//! reinstated (same ISID, TSIH 0) and every pending command goes out again.
//! Nothing is lost and nothing completes twice; when neither works within
//! DefaultTime2Wait + DefaultTime2Retain, every pending command fails with
//! a clear error.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::{Session, io, spawn_connection};
use crate::error::{Error, Result};
use crate::login::{LoginOutcome, LoginParams, login};
use crate::model::UniqueConnectionId;
use crate::portal::PortalAddr;

/// How long a retried command may stay unanswered after the target
/// acknowledged its CmdSN before it is taken for a dropped duplicate.
const DUPLICATE_CHECK: Duration = Duration::from_secs(3);

/// Pause between attempts to reach the target again.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

impl Session {
    pub(super) async fn recover(
        self,
        cid: u16,
        portal: PortalAddr,
        id: UniqueConnectionId,
        reason: String,
        generation: u64,
    ) {
        let _one_at_a_time = self.inner.recovery.lock().await;
        if self.inner.lock().generation != generation {
            // A session reinstatement since then re-issued this connection's tasks.
            return;
        }
        let p = &self.inner.params;
        let wait = Duration::from_secs(u64::from(p.default_time2wait));
        let retain = Duration::from_secs(u64::from(p.default_time2retain).max(5));
        let deadline = Instant::now() + wait + retain;
        // RFC 7143 §13.15: wait DefaultTime2Wait before logging in again.
        tokio::time::sleep(wait).await;
        let mut last = String::new();
        while Instant::now() < deadline {
            if self.inner.lock().closed.is_some() {
                return;
            }
            match self.reinstate_connection(cid, &portal, id).await {
                Ok(()) => {
                    info!(session = %self.inner.id, cid, "connection reinstated after: {reason}");
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
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
        while Instant::now() < deadline {
            if self.inner.lock().closed.is_some() {
                return;
            }
            match self.reinstate_session(&portal).await {
                Ok(()) => {
                    info!(session = %self.inner.id, "session reinstated after: {reason}");
                    return;
                }
                Err(e) => {
                    last = e.to_string();
                    warn!("session reinstatement failed: {e}");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
        let msg =
            format!("connection lost ({reason}) and not re-established within {} s: {last}", (wait + retain).as_secs());
        warn!("{msg}");
        let mut st = self.inner.lock();
        st.fail_all(&msg);
        st.conns.clear();
    }

    /// Logs in a connection with the failed one's CID (RFC 7143 §6.3.4).
    async fn reinstate_connection(&self, cid: u16, portal: &PortalAddr, id: UniqueConnectionId) -> Result<()> {
        let inner = &self.inner;
        let (cmd_sn, tsih) = {
            let st = inner.lock();
            (st.window.current(), st.tsih)
        };
        let mut stream = io::connect(portal, &inner.cfg).await?;
        let target = inner.target_name.as_deref();
        let params = LoginParams { cfg: &inner.cfg, target_name: target, tsih, cid, cmd_sn, exp_stat_sn: 0 };
        let l = match login(&mut stream, &params).await? {
            LoginOutcome::LoggedIn(l) => l,
            LoginOutcome::Redirect(to) => return Err(Error::Redirected(to)),
        };
        let (exp, max) = (l.exp_cmd_sn, l.max_cmd_sn);
        let mut conn = spawn_connection(inner, cid, id, portal.clone(), stream, *l);
        // Not in service until its lost commands are sorted out.
        conn.draining = true;
        {
            let mut st = inner.lock();
            st.window.update(exp, max);
            st.conns.push(conn);
        }
        // A login response's ExpCmdSN need not be the session's (tgt puts
        // the login's own CmdSN there): ask with an immediate NOP-Out.
        let exp = match inner.probe(cid, exp).await {
            Ok(exp) => exp,
            Err(e) => {
                inner.lock().conns.retain(|c| c.cid != cid);
                return Err(e);
            }
        };
        if inner.params.error_recovery_level >= 2 {
            if let Some(c) = super::state::conn_mut(&mut inner.lock().conns, cid) {
                c.draining = false;
            }
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
        drop(st);
        if !retried.is_empty() {
            let weak = std::sync::Arc::downgrade(inner);
            tokio::spawn(async move {
                tokio::time::sleep(DUPLICATE_CHECK).await;
                if let Some(inner) = weak.upgrade() {
                    inner.lock().reissue_unanswered(&retried);
                }
            });
        }
        Ok(())
    }

    /// A new session with the same ISID replaces the old one at the target
    /// (RFC 7143 §6.3.5); every pending command goes out again on it.
    async fn reinstate_session(&self, portal: &PortalAddr) -> Result<()> {
        let inner = &self.inner;
        let (cmd_sn, cid) = {
            let mut st = inner.lock();
            let cid = st.next_cid;
            st.next_cid = st.next_cid.wrapping_add(1);
            (st.window.current(), cid)
        };
        let mut stream = io::connect(portal, &inner.cfg).await?;
        let target = inner.target_name.as_deref();
        let params = LoginParams { cfg: &inner.cfg, target_name: target, tsih: 0, cid, cmd_sn, exp_stat_sn: 0 };
        let l = match login(&mut stream, &params).await? {
            LoginOutcome::LoggedIn(l) => l,
            LoginOutcome::Redirect(to) => return Err(Error::Redirected(to)),
        };
        let (exp, max, tsih) = (l.exp_cmd_sn, l.max_cmd_sn, l.tsih);
        let conn = spawn_connection(inner, cid, super::ids().next_connection(), portal.clone(), stream, *l);
        let others: Vec<PortalAddr> = {
            let mut st = inner.lock();
            // The target ended every connection of the old session.
            let old: Vec<u16> = st.conns.iter().map(|c| c.cid).collect();
            for c in old {
                st.orphan_connection(c);
            }
            st.conns.push(conn);
            st.leading_cid = cid;
            st.tsih = tsih;
            st.window = iscsi_proto::seq::CmdWindow::new(exp, exp, max);
            st.generation += 1;
            let wanted = std::mem::replace(&mut st.wanted, vec![(cid, portal.clone())]);
            st.reissue_all_lost();
            wanted.into_iter().skip(1).map(|(_, p)| p).collect()
        };
        // Grow the session back to its former size, best effort.
        for p in others {
            let s = self.clone();
            tokio::spawn(async move {
                if let Err(e) = s.connect_more(&p, &super::ConnectionLogin::default()).await {
                    warn!("could not re-add a connection after session reinstatement: {e}");
                }
            });
        }
        Ok(())
    }
}
