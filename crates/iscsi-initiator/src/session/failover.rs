//! A connection lost to a silent link while the session has others in
//! service (issue 19: one connection per network link, a link goes down
//! mid-copy). Its commands do not wait for the link: they move to the
//! other connections at once, and the connection itself is logged in again
//! on its own link, from its own initiator address, whenever the link
//! comes back.
//!
//! Moving a command needs care with the session-wide CmdSN order (RFC 7143
//! §4.2.2.1): the target runs no command past a CmdSN it has not received,
//! so commands lost with the link are a gap that holds up every connection.
//! A command the target received (its ExpCmdSN passed the CmdSN, or its
//! TCP acknowledged every byte of the command before the link died,
//! `Task::delivered`) is simply sent again as a new command (new ITT, new
//! CmdSN; RFC 7143 §6.2.1, its answer went down with the link). The
//! acknowledgement matters when the other connections are idle: no answer
//! on them has told us the target's ExpCmdSN moved past the lost command.
//! Acknowledged is not yet read, though: should every connection then
//! wait with the target's ExpCmdSN standing at that CmdSN, the target's
//! process never read it (istgt's thread for the lost connection can be
//! stuck sending to the dead link), and it is filled after all
//! (`State::unconfirmed_to_fill`). For one it did not receive, the CmdSN
//! is first filled with a TEST UNIT READY on a connection in service (a
//! command nobody waits for, `State::send_filler` says why not a NOP-Out),
//! then the command goes again as new. A CmdSN is filled only once the target's ExpCmdSN stands
//! exactly at it, so that no filler ever duplicates a CmdSN the target has:
//! istgt drops a connection on a CmdSN below its ExpCmdSN. Commands sent on
//! one TCP connection reach the target in order, so once the first lost
//! CmdSN is missing, every later one lost with it is missing too.
//!
//! One exception: a write the target received (its answer lost) may be
//! waiting at the target for Data-Out still in flight on the dead link;
//! should the link come back before the old connection is ended, that data
//! would complete the old write, perhaps after a later write to the same
//! blocks. Such a write goes again only once the old connection and its
//! tasks are ended at the target (§6.3.4): by its reinstatement, or, while
//! its link stays down, by a login with its CID over another link, closed
//! at once (`Session::end_elsewhere`).
//!
//! Some targets read none of the other connections while the gap is open:
//! istgt runs each connection on a thread of its own, and a thread that
//! reads a command past a missing CmdSN waits for it (istgt_iscsi.c,
//! `istgt_iscsi_op_scsi`: `pthread_cond_timedwait` on the session's
//! `mcs_cond` for `MAX_MCSREVWAIT`, 10 s) and then drops its connection.
//! Under load every other connection meets such a command at once, so a
//! filler sent on any of them is never read. When every other connection
//! is stalled, the fillers therefore go on a connection logged in for them
//! alone (a new CID on the leading connection's portal and address; istgt
//! gives it a thread of its own), which takes no commands and logs out
//! once they are answered.
//!
//! When the link comes back the connection is reinstated (a login with the
//! same CID, RFC 7143 §6.3.4, which ends the old one at the target) and
//! put straight into service: it has no commands of its own left to sort
//! out, and no new command waits for it meanwhile.

use std::time::Duration;

use iscsi_proto::pdu::logout_reason;
use iscsi_proto::seq::Sn;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::fault::ConnectionFault;
use super::state::{FILLER_LIFETIME, Reply, State, Task, TaskKind};
use super::{Session, ids, io, spawn_connection};
use crate::error::{Error, Result};
use crate::login::{LoggedIn, LoginOutcome, LoginParams, login};
use crate::model::UniqueConnectionId;
use crate::portal::PortalAddr;

/// First pause between attempts to log a lost connection in again.
pub(super) const REINSTATE_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest pause between attempts: a link that comes back is in service
/// again within this (plus a login).
pub(super) const REINSTATE_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Pause between attempts that fail at this host (see [`failed_here`]).
const LOCAL_RETRY: Duration = Duration::from_millis(200);

/// How long commands lost with a link that the target's TCP acknowledged
/// are watched for the target running them (`Session::watch_unconfirmed`).
const UNCONFIRMED_WATCH: Duration = Duration::from_secs(30);

/// How often the lost commands are looked at until all have moved.
const MOVE_POLL: Duration = Duration::from_millis(10);

/// What [`State::move_lost`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Moved {
    /// Every lost command of the connection went out again.
    All,
    /// Some wait: the target's ExpCmdSN is short of the first lost CmdSN
    /// (another command before it is still on its way), or no connection
    /// is in service to carry a filler.
    Waiting,
}

/// What the mover does next.
enum Next {
    Go,
    Wait,
    Alone,
}

/// Whether a task is a SCSI command that writes data.
fn is_write(t: &Task) -> bool {
    matches!(&t.kind, TaskKind::Scsi(s) if !s.write_data.is_empty())
}

/// The next pause after one of `pause` (doubling, within the bounds).
pub(super) fn next_backoff(pause: Duration) -> Duration {
    (pause * 2).clamp(REINSTATE_BACKOFF_MIN, REINSTATE_BACKOFF_MAX)
}

/// Whether a failed reinstatement stopped at this host: no route to the
/// portal (the link is down at our end) or the initiator port's address
/// gone. Such a try reaches no target, so it is made again every
/// [`LOCAL_RETRY`] without backing off: the connection is back within
/// that of its link, not up to [`REINSTATE_BACKOFF_MAX`] later.
fn failed_here(e: &Error) -> bool {
    use std::io::ErrorKind as K;
    let (Error::Connect { source, .. } | Error::Io(source)) = e else { return false };
    matches!(source.kind(), K::NetworkUnreachable | K::HostUnreachable | K::NetworkDown | K::AddrNotAvailable)
}

/// The pause before the next reinstatement after `e`, and the backoff
/// that follows it.
fn pause_after(pause: Duration, e: &Error) -> (Duration, Duration) {
    if failed_here(e) { (LOCAL_RETRY, pause) } else { (pause, next_backoff(pause)) }
}

impl State {
    /// The connection in service (not `not`) a filler of CmdSN `gap` goes
    /// on: one that carries no command past the gap if any (see
    /// [`State::waits_behind`]), then one not stalled, with the fewest
    /// tasks. Any will do in the end: one may be silent only because the
    /// target holds its commands behind the very gap the filler closes.
    /// A connection logged in to carry fillers (see the module text) comes
    /// first.
    fn filler_connection(&self, not: u16, gap: u32) -> Option<u16> {
        if let Some(g) = self.gap_fillers.iter().find(|g| **g != not && self.conns.iter().any(|c| c.cid == **g)) {
            return Some(*g);
        }
        self.conns
            .iter()
            .filter(|c| c.cid != not && !c.draining)
            .min_by_key(|c| (self.waits_behind(c.cid, gap), c.stalled, c.outstanding))
            .map(|c| c.cid)
    }

    /// Whether connection `cid` carries a command past CmdSN `gap`: a
    /// target that reads a connection's PDUs in order, one thread each
    /// (istgt), may be holding that connection at such a command until the
    /// gap is filled, and would never read a filler sent behind it. Under
    /// load that is every connection, well before the stall time tells.
    fn waits_behind(&self, cid: u16, gap: u32) -> bool {
        self.tasks
            .values()
            .any(|t| t.cid == Some(cid) && t.lost_on.is_none() && t.cmd_sn.is_some_and(|sn| Sn(sn).gt(Sn(gap))))
    }

    /// Moves the commands lost with connection `lost_cid` to the other
    /// connections (see the module text). `force`: the target's ExpCmdSN
    /// did not reach the first lost CmdSN in time (another command before
    /// it is slow, or another lost link's gap); the lost CmdSNs at or past
    /// ExpCmdSN are filled all the same. Should the target have one after
    /// all, it drops the connection that carried the duplicate (tgt and
    /// istgt do), which recovery handles; an unfilled gap would instead
    /// hold the whole session (tgt waits for it forever).
    pub fn move_lost(&mut self, lost_cid: u16, force: bool) -> Moved {
        let exp = self.known_exp_cmd_sn();
        // (ITT, CmdSN; `None` if never sent or known delivered).
        let mut lost: Vec<(u32, Option<u32>, bool)> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.lost_on == Some(lost_cid) && !t.held_for_reinstatement)
            .map(|(itt, t)| (*itt, t.cmd_sn, t.delivered))
            .collect();
        if lost.is_empty() {
            return Moved::All;
        }
        // The target's TCP has them; whether the target reads them is
        // watched (`State::unconfirmed_to_fill`).
        let reported = Sn(self.window.exp_cmd_sn());
        for (itt, sn, delivered) in &lost {
            if let (Some(sn), true) = (sn, delivered)
                && Sn(*sn).ge(reported)
                && !self.unconfirmed.iter().any(|(u, _)| u == sn)
            {
                let lun = self.tasks.get(itt).map_or(0, |t| t.lun);
                self.unconfirmed.push((*sn, lun));
            }
        }
        // In CmdSN order from ExpCmdSN; never sent (no CmdSN) first.
        lost.sort_by_key(|(_, sn, _)| sn.map_or(i64::MIN, |sn| i64::from(sn.wrapping_sub(exp) as i32)));
        // Received: ExpCmdSN passed it, or the target's TCP acknowledged it.
        let received_sn = |sn: &u32, delivered: bool| delivered || Sn(*sn).lt(Sn(exp));
        let missing: Vec<(u32, u32)> =
            lost.iter().filter_map(|(itt, sn, d)| sn.filter(|sn| !received_sn(sn, *d)).map(|sn| (*itt, sn))).collect();
        let mut again: Vec<u32> = lost
            .iter()
            .filter(|(_, sn, d)| sn.as_ref().is_none_or(|sn| received_sn(sn, *d)))
            .map(|(itt, _, _)| *itt)
            .collect();
        let mut result = Moved::All;
        match missing.first() {
            None => {}
            Some((_, first)) if *first == exp || force => match self.filler_connection(lost_cid, *first) {
                Some(via) => {
                    for (itt, sn) in &missing {
                        let lun = self.tasks.get(itt).map_or(0, |t| t.lun);
                        self.fill_cmd_sn(*sn, via, lun);
                        again.push(*itt);
                    }
                }
                None => result = Moved::Waiting,
            },
            Some(_) => result = Moved::Waiting,
        }
        if !again.is_empty() {
            debug!(lost_cid, exp, count = again.len(), missing = missing.len(), "lost commands go out again as new");
        }
        // Nobody waits for an abandoned one: it only needed its CmdSN filled.
        let (abandoned, again): (Vec<u32>, Vec<u32>) =
            again.into_iter().partition(|itt| self.tasks.get(itt).is_some_and(Task::abandoned));
        for itt in abandoned {
            self.tasks.remove(&itt);
        }
        // A write the target received may still be waiting there for data
        // that is in flight on the dead link; the link coming back could
        // complete it after a later write to the same blocks. It goes again
        // only once the old connection is ended at the target (the
        // reinstatement, RFC 7143 §6.3.4; `State::release_held_writes`).
        let received: Vec<u32> = lost
            .iter()
            .filter(|(_, sn, d)| sn.as_ref().is_some_and(|sn| received_sn(sn, *d)))
            .map(|(itt, _, _)| *itt)
            .collect();
        let (held, again): (Vec<u32>, Vec<u32>) =
            again.into_iter().partition(|itt| received.contains(itt) && self.tasks.get(itt).is_some_and(is_write));
        for itt in &held {
            if let Some(t) = self.tasks.get_mut(itt) {
                t.held_for_reinstatement = true;
            }
        }
        self.reissue(again);
        result
    }

    /// The connection `cid` was logged in again, which ended the old one at
    /// the target with every task it had (RFC 7143 §6.3.4): the writes held
    /// back by [`State::move_lost`] go again as new commands.
    pub fn release_held_writes(&mut self, cid: u16) -> usize {
        let held: Vec<u32> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.lost_on == Some(cid) && t.held_for_reinstatement)
            .map(|(itt, _)| *itt)
            .collect();
        let n = held.len();
        self.reissue(held);
        n
    }

    /// Fills CmdSN `sn` with a TEST UNIT READY to LUN `lun` (raw) on
    /// connection `via` (see `State::send_filler`); nobody waits for it.
    fn fill_cmd_sn(&mut self, sn: u32, via: u16, lun: u64) {
        let itt = self.alloc_itt();
        self.tasks.insert(itt, Task::new(Some(via), lun, TaskKind::Ping, None));
        self.send_filler(itt, sn, via);
        debug!(sn, via, itt, "CmdSN of a command lost with its link filled with a TEST UNIT READY");
    }

    /// Whether the fillers for connection `lost_cid`'s commands want a
    /// connection of their own (see the module text): some lost CmdSN may
    /// be missing at the target, and every other connection in service is
    /// stalled or carries a command past the first missing CmdSN
    /// ([`State::waits_behind`]), as a target that reads none of them
    /// behind the gap leaves it. The stall alone can come too late: the
    /// others, held since the link went down, reach the stall time only
    /// about when the kernel declares the link dead (with a 2 s
    /// `TCP_USER_TIMEOUT` they were flagged a few ms after it).
    fn wants_gap_filler(&self, lost_cid: u16) -> bool {
        let exp = self.known_exp_cmd_sn();
        let first_missing = self
            .tasks
            .values()
            .filter(|t| t.lost_on == Some(lost_cid) && !t.held_for_reinstatement && !t.delivered)
            .filter_map(|t| t.cmd_sn)
            .filter(|sn| Sn(*sn).ge(Sn(exp)))
            .min_by_key(|sn| sn.wrapping_sub(exp));
        let Some(gap) = first_missing else { return false };
        let mut others = self.conns.iter().filter(|c| c.cid != lost_cid && !c.draining).peekable();
        let have = self.gap_fillers.iter().any(|g| self.conns.iter().any(|c| c.cid == *g));
        !have && others.peek().is_some() && others.all(|c| c.stalled || self.waits_behind(c.cid, gap))
    }

    /// The CmdSNs of [`State::unconfirmed`] that the target evidently
    /// never ran, in order, and forgets them (the caller fills them); the
    /// ones its ExpCmdSN passed are forgotten too. Evidently: its ExpCmdSN
    /// stands at the first of them and every connection in service is
    /// stalled, i.e. holds commands it does not answer. The target's kernel
    /// acknowledged them, but its process may never read that socket again:
    /// istgt's thread for the lost connection may be stuck sending to the
    /// dead link while the threads of the others wait for the CmdSN (and
    /// drop their connections after 10 s). tgt reads every socket, runs
    /// them, and answers on the others: none is filled twice.
    pub(super) fn unconfirmed_to_fill(&mut self) -> Vec<(u32, u64)> {
        let exp = self.window.exp_cmd_sn();
        self.unconfirmed.retain(|(sn, _)| Sn(*sn).ge(Sn(exp)));
        self.unconfirmed.sort_unstable_by_key(|(sn, _)| sn.wrapping_sub(exp));
        let mut others = self.conns.iter().filter(|c| !c.draining).peekable();
        let held = others.peek().is_some() && others.all(|c| c.stalled);
        if !held || self.unconfirmed.first().is_none_or(|(sn, _)| *sn != exp) {
            return Vec::new();
        }
        std::mem::take(&mut self.unconfirmed)
    }

    /// Fills the CmdSNs `unconfirmed_to_fill` gave on connection `via`.
    pub(super) fn fill_unconfirmed(&mut self, fill: &[(u32, u64)], via: u16) {
        for (sn, lun) in fill {
            self.fill_cmd_sn(*sn, via, *lun);
        }
    }

    /// Whether writes lost with connection `cid` wait for its reinstatement.
    fn holds_writes_for(&self, cid: u16) -> bool {
        self.tasks.values().any(|t| t.lost_on == Some(cid) && t.held_for_reinstatement)
    }

    /// Whether another connection than `cid` is in service.
    fn others_in_service(&self, cid: u16) -> bool {
        self.conns.iter().any(|c| c.cid != cid && !c.draining)
    }

    /// Whether another connection than `cid` is in service or being
    /// recovered: a target that drops every connection held behind a CmdSN
    /// gap (istgt after 10 s) leaves none in service for a moment, and the
    /// session is not lost for that; each recovery keeps its own budget.
    fn others_alive(&self, cid: u16) -> bool {
        self.others_in_service(cid) || self.recovering.iter().any(|r| r.cid != cid)
    }
}

impl Session {
    /// Recovers connection `cid`, lost to a silence while others are in
    /// service: its commands move to them (`State::move_lost`), then it is
    /// logged in again on its own link, retried with a capped backoff (or
    /// every [`LOCAL_RETRY`] while the link is down at our end) for as long
    /// as the session has another connection in service or being
    /// recovered. Should every other connection be gone for good, the
    /// ordinary recovery and its budget (`recovery.rs`,
    /// `RecoveryBudget::link_down_time`) take over.
    pub(super) async fn recover_elsewhere(
        self,
        cid: u16,
        portal: PortalAddr,
        id: UniqueConnectionId,
        fault: ConnectionFault,
        generation: u64,
    ) {
        // istgt may drop acknowledged commands when the old connection ends.
        tokio::spawn(self.clone().watch_dropped(generation));
        match self.move_all(cid, generation).await {
            Next::Go => {}
            Next::Alone => return Box::pin(self.recover(cid, portal, id, fault, generation)).await,
            Next::Wait => return,
        }
        info!(session = %self.inner.id, cid, "commands of the lost connection moved to the others; reinstating it on its own link");
        if !self.inner.lock().unconfirmed.is_empty() {
            tokio::spawn(self.clone().watch_unconfirmed(cid, generation));
        }
        let mut pause = REINSTATE_BACKOFF_MIN;
        let mut tries = 0u32;
        let mut ended_elsewhere = false;
        loop {
            let alone = {
                let st = self.inner.lock();
                if st.closed.is_some() || st.generation != generation {
                    return;
                }
                !st.others_alive(cid)
            };
            if alone {
                return Box::pin(self.recover(cid, portal, id, fault, generation)).await;
            }
            tries += 1;
            let attempt = self.rejoin(cid, &portal, id, generation);
            let limit = self.inner.cfg.connect_timeout + self.inner.cfg.login_timeout;
            let r = match tokio::time::timeout(limit, attempt).await {
                Ok(r) => r,
                Err(_) => Err(Error::Timeout("the reinstatement login".into())),
            };
            match r {
                Ok(()) => {
                    info!(session = %self.inner.id, cid, tries, "connection reinstated on its own link after: {fault}");
                    self.inner.lock().recovery_stats.connections_reinstated += 1;
                    return;
                }
                Err(Error::SessionClosed) => return,
                Err(e) => {
                    if tries == 1 {
                        warn!(cid, "connection reinstatement failed (retrying while its link is down): {e}");
                    } else {
                        debug!(cid, tries, "connection reinstatement failed: {e}");
                    }
                    if !ended_elsewhere && self.inner.lock().holds_writes_for(cid) {
                        let r = match tokio::time::timeout(limit, self.end_elsewhere(cid, generation)).await {
                            Ok(r) => r,
                            Err(_) => Err(Error::Timeout("the login that ends the lost connection".into())),
                        };
                        match r {
                            Ok(n) => {
                                ended_elsewhere = true;
                                info!(session = %self.inner.id, cid, writes = n, "lost connection ended at the target by a login with its CID over another link; its held writes go again")
                            }
                            Err(e) => {
                                debug!(cid, "could not end the lost connection over another link (tried again): {e}")
                            }
                        }
                    }
                    let (now, next) = pause_after(pause, &e);
                    tokio::time::sleep(now).await;
                    pause = next;
                }
            }
        }
    }

    /// Moves every command lost with connection `cid` (`State::move_lost`),
    /// with a connection of their own for the fillers when the others are
    /// all stalled (see the module text). `Go`: all moved; `Alone`: no other
    /// connection is left; `Wait`: the session was closed or reinstated.
    async fn move_all(&self, cid: u16, generation: u64) -> Next {
        // Moving waits at most for the commands in flight on the other
        // connections to be answered.
        let force_at = Instant::now() + self.inner.cfg.stall_time.max(Duration::from_secs(1));
        let mut gap_filler = None;
        let next = loop {
            let (next, want) = {
                let mut st = self.inner.lock();
                if st.closed.is_some() || st.generation != generation {
                    break Next::Wait;
                }
                if gap_filler.is_none() && st.wants_gap_filler(cid) {
                    (Next::Wait, true)
                } else if st.move_lost(cid, Instant::now() >= force_at) == Moved::All {
                    (Next::Go, false)
                } else if st.others_alive(cid) {
                    (Next::Wait, false)
                } else {
                    (Next::Alone, false)
                }
            };
            if want {
                let limit = self.inner.cfg.connect_timeout + self.inner.cfg.login_timeout;
                let r = match tokio::time::timeout(limit, self.open_gap_filler(cid, generation)).await {
                    Ok(r) => r,
                    Err(_) => Err(Error::Timeout("the login of a connection for fillers".into())),
                };
                match r {
                    Ok(g) => {
                        info!(session = %self.inner.id, lost = cid, cid = g, "every other connection stalled behind the lost commands' CmdSN gap: their fillers go on a connection of their own");
                        gap_filler = Some(Some(g));
                    }
                    Err(e) => {
                        debug!(lost = cid, "no connection for fillers ({e}); they go on a stalled one");
                        gap_filler = Some(None);
                    }
                }
                continue;
            }
            match next {
                Next::Wait => tokio::time::sleep(MOVE_POLL).await,
                other => break other,
            }
        };
        if let Some(Some(g)) = gap_filler {
            tokio::spawn(self.clone().retire_gap_filler(g));
        }
        next
    }

    /// Watches the commands lost with connection `cid` that the target's
    /// TCP acknowledged (`State::unconfirmed`) until its ExpCmdSN passes
    /// them, and fills them should it evidently never run them
    /// (`State::unconfirmed_to_fill`): on a connection of their own, since
    /// the target is then reading none of the others. Gives up after
    /// [`UNCONFIRMED_WATCH`]: by then istgt has dropped the connections
    /// held behind them, and their recovery starts afresh.
    async fn watch_unconfirmed(self, cid: u16, generation: u64) {
        let until = Instant::now() + UNCONFIRMED_WATCH;
        while Instant::now() < until {
            tokio::time::sleep(MOVE_POLL).await;
            let fill = {
                let mut st = self.inner.lock();
                if st.closed.is_some() || st.generation != generation {
                    return;
                }
                let fill = st.unconfirmed_to_fill();
                if fill.is_empty() && st.unconfirmed.is_empty() {
                    return;
                }
                fill
            };
            if fill.is_empty() {
                continue;
            }
            let limit = self.inner.cfg.connect_timeout + self.inner.cfg.login_timeout;
            let own = match tokio::time::timeout(limit, self.open_gap_filler(cid, generation)).await {
                Ok(Ok(g)) => Some(g),
                Ok(Err(e)) => {
                    debug!(lost = cid, "no connection for fillers ({e}); they go on a stalled one");
                    None
                }
                Err(_) => None,
            };
            {
                let mut st = self.inner.lock();
                if st.closed.is_some() || st.generation != generation {
                    return;
                }
                let gap = fill.first().map_or(0, |(sn, _)| *sn);
                match own.or_else(|| st.filler_connection(cid, gap)) {
                    Some(via) => {
                        info!(session = %self.inner.id, lost = cid, via, count = fill.len(), "the target acknowledged but never ran commands lost with a link (the others wait for them): their CmdSNs are filled");
                        st.fill_unconfirmed(&fill, via);
                    }
                    None => st.unconfirmed.extend(fill),
                }
            }
            if let Some(g) = own {
                tokio::spawn(self.clone().retire_gap_filler(g));
            }
        }
        // By now the target's ExpCmdSN says more than these do.
        self.inner.lock().unconfirmed.clear();
    }

    /// Logs in a connection for fillers only (see the module text): a new
    /// CID, on the portal and from the address of a connection in service
    /// other than `lost_cid` (the leading one if it can), taking no
    /// commands.
    async fn open_gap_filler(&self, lost_cid: u16, generation: u64) -> Result<u16> {
        let inner = &self.inner;
        let (via, portal, cid, cmd_sn, tsih) = {
            let mut st = inner.lock();
            if st.closed.is_some() || st.generation != generation {
                return Err(Error::SessionClosed);
            }
            // The target still counts the lost connection.
            let limit = inner.params.max_connections;
            if st.conns.len() + st.recovering.len() >= usize::from(limit) {
                return Err(Error::TooManyConnections { limit });
            }
            let leading = st.leading_cid;
            let c = st
                .conns
                .iter()
                .filter(|c| c.cid != lost_cid && !c.draining)
                .min_by_key(|c| c.cid != leading)
                .ok_or(Error::SessionClosed)?;
            let (via, portal) = (c.cid, c.portal.clone());
            let cid = st.next_cid;
            st.next_cid = st.next_cid.wrapping_add(1);
            (via, portal, cid, st.window.current(), st.tsih)
        };
        let (stream, l) = self.login_like(via, &portal, cid, cmd_sn, tsih).await?;
        // Its login answer's ExpCmdSN is not taken: tgt's is not the
        // session's (with it, the lost commands looked received).
        let mut conn = spawn_connection(inner, cid, ids().next_connection(), portal, stream, *l);
        conn.draining = true;
        let mut st = inner.lock();
        if st.closed.is_some() || st.generation != generation {
            // Dropping it closes it.
            return Err(Error::SessionClosed);
        }
        st.flush_held();
        st.conns.push(conn);
        st.gap_fillers.push(cid);
        Ok(cid)
    }

    /// Once the fillers on connection `cid` (logged in for them) are
    /// answered, or after their lifetime, logs it out (reason "close the
    /// connection", RFC 7143 §11.14.1) and forgets it. New commands wait
    /// meanwhile and the ones in flight are answered first: istgt aborts
    /// every command of the session queued at the LU when any one of its
    /// connections ends (istgt_iscsi.c, the connection's exit calls
    /// `istgt_lu_clear_task_IT`, which matches by initiator port, not by
    /// connection), and never answers them.
    async fn retire_gap_filler(self, cid: u16) {
        let until = Instant::now() + FILLER_LIFETIME;
        loop {
            let busy = {
                let st = self.inner.lock();
                if !st.gap_fillers.contains(&cid) {
                    return;
                }
                st.tasks.values().any(|t| t.cid == Some(cid))
            };
            if !busy || Instant::now() >= until {
                break;
            }
            tokio::time::sleep(MOVE_POLL).await;
        }
        self.inner.lock().hold += 1;
        self.inner.wait_idle(|_| true).await;
        let task = Task::new(Some(cid), 0, TaskKind::Logout(logout_reason::CLOSE_CONNECTION), None);
        let limit = self.inner.cfg.login_timeout.max(Duration::from_secs(1));
        match tokio::time::timeout(limit, self.inner.submit_logout(task, cid)).await {
            Ok(Ok(Reply::Logout(h))) if h.response == 0 => debug!(cid, "connection for fillers logged out"),
            Ok(Ok(_)) => debug!(cid, "connection for fillers: the target refused its logout; closed"),
            Ok(Err(e)) => debug!(cid, "connection for fillers: logout failed ({e}); closed"),
            Err(_) => debug!(cid, "connection for fillers: no logout answer; closed"),
        }
        self.inner.wait_closed_by_target(cid).await;
        let mut st = self.inner.lock();
        st.gap_fillers.retain(|g| *g != cid);
        st.drop_connection(cid, "its fillers were answered");
        st.hold = st.hold.saturating_sub(1);
        st.drain_queue();
    }

    /// A connection logged in for fillers failed before its fillers were
    /// answered (the target dropped it, say for a CmdSN it had after all):
    /// its holes are filled again elsewhere; it is not logged in again.
    pub(super) async fn move_off_gap_filler(self, cid: u16, generation: u64) {
        let _ = self.move_all(cid, generation).await;
    }

    /// Logs CID `cid` in to `portal` over a new TCP connection made as
    /// connection `via`'s was (its login settings, initiator address and
    /// protection), with CmdSN `cmd_sn` in session `tsih`.
    async fn login_like(
        &self,
        via: u16,
        portal: &PortalAddr,
        cid: u16,
        cmd_sn: u32,
        tsih: u16,
    ) -> Result<(tokio::net::TcpStream, Box<LoggedIn>)> {
        let inner = &self.inner;
        let how = inner.login_of(via);
        let cfg = inner.connection_cfg(&how);
        let protection = inner.protection_of(via);
        let mut stream = io::connect_again(portal, &cfg, how.local_address, protection.as_ref()).await?;
        let target = inner.target_name.as_deref();
        let params = LoginParams { cfg: &cfg, target_name: target, tsih, cid, cmd_sn, exp_stat_sn: 0 };
        match login(&mut stream, &params).await? {
            LoginOutcome::LoggedIn(l) => Ok((stream, l)),
            LoginOutcome::Redirect(to) => Err(Error::Redirected(to)),
        }
    }

    /// Ends lost connection `cid` at the target while its link is down, so
    /// that the writes held for its reinstatement (`State::move_lost`) need
    /// not wait for the link: a login with its CID over the portal and from
    /// the address of a connection in service (RFC 7143 §6.3.4: a login
    /// with the CID of an existing connection ends that connection and its
    /// tasks at the target, whatever link it comes over), closed at once.
    /// The held writes then go again as new commands; the connection itself
    /// is logged in on its own link when that comes back. Returns how many
    /// writes went again.
    async fn end_elsewhere(&self, cid: u16, generation: u64) -> Result<usize> {
        let inner = &self.inner;
        let (via, portal, cmd_sn, tsih) = {
            let st = inner.lock();
            if st.closed.is_some() || st.generation != generation {
                return Err(Error::SessionClosed);
            }
            let leading = st.leading_cid;
            let c = st
                .conns
                .iter()
                .filter(|c| c.cid != cid && !c.draining)
                .min_by_key(|c| (c.stalled, c.cid != leading))
                .ok_or(Error::SessionClosed)?;
            (c.cid, c.portal.clone(), st.window.current(), st.tsih)
        };
        let (stream, _) = self.login_like(via, &portal, cid, cmd_sn, tsih).await?;
        // The old connection is gone at the target; this one has no task
        // and closes (the target ends it as it would a failed one).
        drop(stream);
        let mut st = inner.lock();
        if st.closed.is_some() || st.generation != generation {
            return Err(Error::SessionClosed);
        }
        let n = st.release_held_writes(cid);
        st.drain_queue();
        Ok(n)
    }

    /// Logs connection `cid` in again with its CID (RFC 7143 §6.3.4), from
    /// its own initiator address and with its own login settings, and puts
    /// it into service.
    async fn rejoin(&self, cid: u16, portal: &PortalAddr, id: UniqueConnectionId, generation: u64) -> Result<()> {
        let inner = &self.inner;
        let (conn, exp, max) = self.login_again(cid, portal, id).await?;
        let mut st = inner.lock();
        if st.closed.is_some() || st.generation != generation {
            // Dropping it closes it.
            return Err(Error::SessionClosed);
        }
        st.window.update(exp, max);
        st.flush_held();
        st.conns.push(conn);
        st.recovering.retain(|r| r.cid != cid);
        let held = st.release_held_writes(cid);
        if held > 0 {
            debug!(cid, held, "writes held for the reinstatement go out again");
        }
        st.drain_queue();
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;
    use crate::session::state::tests::{busy_conn, one_block_read, state};
    use bytes::{Bytes, BytesMut};
    use iscsi_proto::pdu::{Bhs, FrameConfig, PduDecoder};

    /// A session state with ExpCmdSN `exp`, next CmdSN `next`, and a live
    /// connection for each CID in `cids` (their peers' ends returned).
    async fn state_with_conns(cids: &[u16], next: u32, exp: u32) -> (State, Vec<tokio::net::TcpStream>) {
        let mut st = state(next, exp);
        let mut peers = Vec::new();
        for &cid in cids {
            let (mut c, peer) = busy_conn(0).await;
            c.cid = cid;
            st.conns.push(c);
            peers.push(peer);
        }
        (st, peers)
    }

    /// The next PDU the peer receives.
    async fn next_pdu(peer: &mut tokio::net::TcpStream, buf: &mut BytesMut) -> Bhs {
        let mut dec = PduDecoder::new(FrameConfig::default());
        crate::session::state::tests::next_pdu(peer, &mut dec, buf).await.bhs
    }

    /// Whether `bhs` is a filler of CmdSN `sn`: a non-immediate TEST UNIT
    /// READY without data.
    fn is_filler(bhs: &Bhs, sn: u32) -> bool {
        matches!(bhs, Bhs::ScsiCommand(c) if c.cmd_sn == sn && c.cdb[0] == 0x00 && !c.immediate && !c.read && !c.write
            && c.expected_data_transfer_length == 0)
    }

    #[test]
    fn a_try_that_fails_at_this_host_is_made_again_soon_without_backing_off() {
        let io = |k: std::io::ErrorKind| std::io::Error::new(k, "test");
        let here =
            Error::Connect { addr: "198.19.2.2:3260".into(), source: io(std::io::ErrorKind::NetworkUnreachable) };
        assert_eq!(pause_after(Duration::from_secs(4), &here), (LOCAL_RETRY, Duration::from_secs(4)));
        let gone = Error::Io(io(std::io::ErrorKind::AddrNotAvailable));
        assert_eq!(pause_after(REINSTATE_BACKOFF_MIN, &gone), (LOCAL_RETRY, REINSTATE_BACKOFF_MIN));
        // The target answered (or may have): back off.
        let refused =
            Error::Connect { addr: "198.19.2.2:3260".into(), source: io(std::io::ErrorKind::ConnectionRefused) };
        assert_eq!(pause_after(Duration::from_secs(2), &refused), (Duration::from_secs(2), Duration::from_secs(4)));
        let slow = Error::ConnectTimeout("198.19.2.2:3260".into());
        assert_eq!(pause_after(Duration::from_secs(4), &slow), (Duration::from_secs(4), REINSTATE_BACKOFF_MAX));
    }

    #[test]
    fn backoff_doubles_within_its_bounds() {
        assert_eq!(next_backoff(REINSTATE_BACKOFF_MIN), Duration::from_secs(2));
        assert_eq!(next_backoff(Duration::from_secs(4)), REINSTATE_BACKOFF_MAX);
        assert_eq!(next_backoff(REINSTATE_BACKOFF_MAX), REINSTATE_BACKOFF_MAX);
        assert_eq!(next_backoff(Duration::ZERO), REINSTATE_BACKOFF_MIN);
    }

    /// A lost read with CmdSN `sn` on connection `lost`.
    fn lost_task(st: &mut State, sn: u32, lost: u16) -> u32 {
        let itt = st.alloc_itt();
        let mut t = Task::new(None, 0, one_block_read(), Some((iscsi_proto::scsi::cdb::test_unit_ready(), 0)));
        t.cmd_sn = Some(sn);
        t.lost_on = Some(lost);
        let (tx, rx) = crate::session::reply::channel();
        t.reply = Some(tx);
        std::mem::forget(rx);
        st.tasks.insert(itt, t);
        itt
    }

    #[tokio::test]
    async fn lost_commands_wait_until_the_target_stands_at_the_first_then_are_filled_and_reissued() {
        // Connection 1 is alive (its peer socket returned), 2 was lost
        // with CmdSNs 12 and 14; the target's ExpCmdSN is 11 (command 11
        // is still on its way on connection 1); our next CmdSN is 15.
        let (mut st, mut peers) = state_with_conns(&[1], 15, 11).await;
        let a = lost_task(&mut st, 12, 2);
        let b = lost_task(&mut st, 14, 2);
        assert_eq!(st.move_lost(2, false), Moved::Waiting);
        assert!(st.tasks.get(&a).is_some_and(|t| t.lost_on == Some(2)));
        // Command 11 arrived: the target now waits for 12, which it lacks.
        st.window.update(12, 40);
        assert_eq!(st.move_lost(2, false), Moved::All);
        let peer = peers.get_mut(0).unwrap();
        let mut buf = BytesMut::new();
        // Fillers first, in CmdSN order, TEST UNIT READYs.
        for want in [12u32, 14] {
            let bhs = next_pdu(peer, &mut buf).await;
            assert!(is_filler(&bhs, want), "expected a TEST UNIT READY filler for {want}, got {bhs:?}");
        }
        // Then the two commands again, with new ITTs and new CmdSNs 15, 16.
        for want in [15u32, 16] {
            let bhs = next_pdu(peer, &mut buf).await;
            match bhs {
                Bhs::ScsiCommand(c) => {
                    assert_eq!(c.cmd_sn, want);
                    assert!(c.itt != a && c.itt != b);
                }
                other => panic!("expected a SCSI Command, got {other:?}"),
            }
        }
        assert!(st.tasks.values().all(|t| t.lost_on.is_none()));
        assert_eq!(st.tasks.values().filter(|t| !t.filler).count(), 2);
        // Fillers nobody answered are forgotten after their lifetime.
        let fillers = st.tasks.values().filter(|t| t.filler).count();
        assert_eq!(fillers, 2);
        st.expire_overdue(std::time::Instant::now() + FILLER_LIFETIME + Duration::from_secs(1));
        assert!(st.tasks.values().all(|t| !t.filler));
    }

    #[tokio::test]
    async fn commands_the_target_received_go_again_without_filler() {
        let (mut st, mut peers) = state_with_conns(&[1], 20, 20).await;
        // The target acknowledged 12 (ExpCmdSN 20): its answer was lost.
        let a = lost_task(&mut st, 12, 2);
        assert_eq!(st.move_lost(2, false), Moved::All);
        let bhs = next_pdu(peers.get_mut(0).unwrap(), &mut BytesMut::new()).await;
        match bhs {
            Bhs::ScsiCommand(c) => {
                assert_eq!(c.cmd_sn, 20);
                assert_ne!(c.itt, a);
            }
            other => panic!("expected the command again, got {other:?}"),
        }
    }

    /// The target got command 12 (its TCP acknowledged every byte) but
    /// the answer was lost with connection 2 before any other answer told
    /// us so: our ExpCmdSN still says 12. It must go again as new, not be
    /// filled: tgt and istgt drop a connection that carries a CmdSN below
    /// their ExpCmdSN. Command 13 was still unacknowledged in our socket:
    /// that one is missing and is filled.
    #[tokio::test]
    async fn a_command_the_targets_tcp_acknowledged_is_not_filled() {
        let (mut st, mut peers) = state_with_conns(&[1, 2], 14, 12).await;
        let mut sent = Vec::new();
        for sn in [12u32, 13] {
            let itt = lost_task(&mut st, sn, 2);
            if let Some(t) = st.tasks.get_mut(&itt) {
                t.lost_on = None;
                t.cid = Some(2);
            }
            st.send_command(itt, sn);
            sent.push(itt);
        }
        let (a, b) = (sent[0], sent[1]);
        let end = st.tasks.get(&b).and_then(|t| t.sent_end).unwrap();
        assert!(st.tasks.get(&a).and_then(|t| t.sent_end).unwrap() < end);
        let link2 = st.conns.iter().find(|c| c.cid == 2).unwrap();
        let t0 = std::time::Instant::now();
        while link2.link.acked() < Some(end) {
            assert!(t0.elapsed() < Duration::from_secs(5), "loopback never acknowledged: {:?}", link2.link.acked());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // As if 13's last bytes were still in our socket when the link died.
        if let Some(t) = st.tasks.get_mut(&b) {
            t.sent_end = Some(end + 1);
        }
        assert!(st.orphan_connection(2, None).is_some());
        assert!(st.tasks.get(&a).is_some_and(|t| t.delivered && t.lost_on == Some(2)));
        assert!(st.tasks.get(&b).is_some_and(|t| !t.delivered));
        assert_eq!(st.known_exp_cmd_sn(), 13);
        assert_eq!(st.move_lost(2, false), Moved::All);
        let (peer, mut buf) = (peers.get_mut(0).unwrap(), BytesMut::new());
        let bhs = next_pdu(peer, &mut buf).await;
        assert!(is_filler(&bhs, 13), "expected a filler for 13 only, got {bhs:?}");
        for want in [14u32, 15] {
            match next_pdu(peer, &mut buf).await {
                Bhs::ScsiCommand(c) => assert!(c.cmd_sn == want && c.read && c.itt != a && c.itt != b, "{c:?}"),
                other => panic!("expected a SCSI Command, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_write_the_target_received_waits_for_the_reinstatement() {
        let (mut st, mut peers) = state_with_conns(&[1], 20, 20).await;
        let w = lost_task(&mut st, 12, 2);
        if let Some(TaskKind::Scsi(s)) = st.tasks.get_mut(&w).map(|t| &mut t.kind) {
            s.read = false;
            s.write_data = Bytes::from_static(&[7; 512]);
        }
        let r = lost_task(&mut st, 13, 2);
        assert_eq!(st.move_lost(2, false), Moved::All);
        // The read goes at once; the write stays with its lost connection.
        let bhs = next_pdu(peers.get_mut(0).unwrap(), &mut BytesMut::new()).await;
        assert!(matches!(bhs, Bhs::ScsiCommand(c) if c.read && c.cmd_sn == 20), "{bhs:?}");
        assert!(!st.tasks.contains_key(&r));
        assert!(st.tasks.get(&w).is_some_and(|t| t.lost_on == Some(2) && t.held_for_reinstatement));
        assert_eq!(st.move_lost(2, false), Moved::All);
        // Connection 2 logged in again: the old one is gone at the target.
        assert_eq!(st.release_held_writes(2), 1);
        assert!(st.tasks.values().all(|t| t.lost_on.is_none() && !t.held_for_reinstatement));
        assert!(st.tasks.values().any(|t| t.cmd_sn == Some(21)));
    }

    /// istgt: the lost connection's thread never reads a command its
    /// kernel acknowledged, and the others wait for its CmdSN. Only when
    /// every connection is stalled and the target's ExpCmdSN stands at it
    /// is it filled; one the target ran (its ExpCmdSN passed it) never.
    #[tokio::test]
    async fn an_acknowledged_command_the_target_never_runs_is_filled_once_the_others_wait() {
        let (mut st, mut peers) = state_with_conns(&[1, 3], 15, 12).await;
        let a = lost_task(&mut st, 12, 2);
        let b = lost_task(&mut st, 13, 2);
        for itt in [a, b] {
            if let Some(t) = st.tasks.get_mut(&itt) {
                t.delivered = true;
                t.lun = 5;
            }
        }
        assert_eq!(st.known_exp_cmd_sn(), 14);
        assert_eq!(st.move_lost(2, false), Moved::All);
        assert!(st.tasks.values().all(|t| !t.filler), "no filler while the target may run them");
        assert_eq!(st.unconfirmed_to_fill(), vec![], "the others are answering");
        assert_eq!(st.known_exp_cmd_sn(), 14, "still taken as received");
        for c in &mut st.conns {
            c.stalled = true;
        }
        let fill = st.unconfirmed_to_fill();
        assert_eq!(fill, vec![(12, 5), (13, 5)]);
        assert!(st.unconfirmed.is_empty());
        assert_eq!(st.known_exp_cmd_sn(), 12);
        st.fill_unconfirmed(&fill, 1);
        let (peer, mut buf) = (peers.get_mut(0).unwrap(), BytesMut::new());
        let mut filled = Vec::new();
        while let Ok(bhs) = tokio::time::timeout(Duration::from_millis(300), next_pdu(peer, &mut buf)).await {
            filled.extend([12, 13].into_iter().filter(|sn| is_filler(&bhs, *sn)));
        }
        assert_eq!(filled, vec![12, 13]);

        // The target ran them: its ExpCmdSN passed them; nothing to fill.
        let (mut st, _peers) = state_with_conns(&[1], 15, 12).await;
        let a = lost_task(&mut st, 12, 2);
        if let Some(t) = st.tasks.get_mut(&a) {
            t.delivered = true;
        }
        assert_eq!(st.move_lost(2, false), Moved::All);
        assert_eq!(st.unconfirmed.len(), 1);
        st.window.update(13, 40);
        for c in &mut st.conns {
            c.stalled = true;
        }
        assert_eq!(st.unconfirmed_to_fill(), vec![]);
        assert!(st.unconfirmed.is_empty());
    }

    /// The connection that carried a filler failed too, before the target
    /// acknowledged it: the hole is filled again on another one.
    #[tokio::test]
    async fn a_filler_lost_with_its_carrier_is_sent_again() {
        let (mut st, mut peers) = state_with_conns(&[1, 3], 15, 12).await;
        lost_task(&mut st, 12, 2);
        assert_eq!(st.move_lost(2, false), Moved::All);
        let filler = st.tasks.iter_mut().find(|(_, t)| t.filler).unwrap().1;
        let carrier = filler.cid.unwrap();
        // Its bytes never left our socket.
        filler.sent_end = Some(u64::MAX);
        st.orphan_connection(carrier, None);
        assert!(st.tasks.values().any(|t| t.filler && t.lost_on == Some(carrier)));
        assert_eq!(st.move_lost(carrier, false), Moved::All);
        let other = usize::from(carrier == 1);
        let peer = peers.get_mut(other).unwrap();
        let mut buf = BytesMut::new();
        // On the other connection: the reissued command (CmdSN 15) went
        // there or to the carrier; the new filler for 12 certainly here.
        let mut fills = 0;
        for _ in 0..2 {
            match tokio::time::timeout(Duration::from_millis(300), next_pdu(peer, &mut buf)).await {
                Ok(bhs) if is_filler(&bhs, 12) => fills += 1,
                Ok(_) | Err(_) => {}
            }
        }
        assert_eq!(fills, 1);
        assert!(st.tasks.values().all(|t| t.lost_on.is_none()));
    }

    /// A filler whose carrier failed after the target's TCP acknowledged
    /// it filled its hole: it is forgotten, not sent again.
    #[tokio::test]
    async fn a_filler_the_target_acknowledged_is_not_sent_again() {
        let (mut st, mut peers) = state_with_conns(&[1, 3], 15, 12).await;
        lost_task(&mut st, 12, 2);
        assert_eq!(st.move_lost(2, false), Moved::All);
        let (itt, filler) = st.tasks.iter().find(|(_, t)| t.filler).map(|(i, t)| (*i, t)).unwrap();
        let (carrier, end) = (filler.cid.unwrap(), filler.sent_end.unwrap());
        let c = st.conns.iter().find(|c| c.cid == carrier).unwrap();
        let t0 = std::time::Instant::now();
        while c.link.acked() < Some(end) {
            assert!(t0.elapsed() < Duration::from_secs(5), "loopback never acknowledged");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        st.orphan_connection(carrier, None);
        assert_eq!(st.move_lost(carrier, false), Moved::All);
        assert!(!st.tasks.contains_key(&itt), "the delivered filler is forgotten");
        let peer = peers.get_mut(usize::from(carrier == 1)).unwrap();
        let mut buf = BytesMut::new();
        while let Ok(bhs) = tokio::time::timeout(Duration::from_millis(200), next_pdu(peer, &mut buf)).await {
            assert!(!is_filler(&bhs, 12), "filled twice: {bhs:?}");
        }
    }

    #[tokio::test]
    async fn without_a_connection_in_service_nothing_moves() {
        let (mut st, _peers) = state_with_conns(&[], 15, 12).await;
        let a = lost_task(&mut st, 12, 2);
        assert_eq!(st.move_lost(2, false), Moved::Waiting);
        assert!(st.tasks.get(&a).is_some_and(|t| t.lost_on == Some(2) && t.cmd_sn == Some(12)));
        assert!(!st.others_in_service(2));
    }

    #[tokio::test]
    async fn forced_moves_fill_what_may_be_missing() {
        let (mut st, mut peers) = state_with_conns(&[1], 15, 11).await;
        lost_task(&mut st, 13, 2);
        assert_eq!(st.move_lost(2, false), Moved::Waiting);
        assert_eq!(st.move_lost(2, true), Moved::All);
        let peer = peers.get_mut(0).unwrap();
        let mut buf = BytesMut::new();
        let bhs = next_pdu(peer, &mut buf).await;
        assert!(is_filler(&bhs, 13), "{bhs:?}");
        let bhs = next_pdu(peer, &mut buf).await;
        assert!(matches!(bhs, Bhs::ScsiCommand(c) if c.cmd_sn == 15), "{bhs:?}");
    }

    /// Under load every other connection carries commands past the gap
    /// before any is stalled: istgt holds each at such a command, so the
    /// fillers want a connection of their own at once. A connection with
    /// nothing past the gap can carry them instead.
    #[tokio::test]
    async fn connections_with_commands_past_the_gap_do_not_carry_its_fillers() {
        let (mut st, _peers) = state_with_conns(&[1, 3], 15, 12).await;
        lost_task(&mut st, 12, 2);
        let on = |st: &mut State, sn: u32, cid: u16| {
            let itt = lost_task(st, sn, 2);
            if let Some(t) = st.tasks.get_mut(&itt) {
                t.lost_on = None;
                t.cid = Some(cid);
            }
        };
        on(&mut st, 11, 3);
        on(&mut st, 13, 1);
        assert!(st.conns.iter().all(|c| !c.stalled));
        assert!(!st.wants_gap_filler(2), "connection 3 is not held at the target");
        assert_eq!(st.filler_connection(2, 12), Some(3));
        on(&mut st, 14, 3);
        assert!(st.wants_gap_filler(2), "both may be held behind CmdSN 12");
    }

    /// Every other connection stalled behind the gap (istgt reads none of
    /// them): a connection of their own is wanted, and once there the
    /// fillers go on it as TEST UNIT READYs with the missing CmdSNs, and
    /// nothing else does.
    #[tokio::test]
    async fn fillers_go_on_a_connection_of_their_own_as_test_unit_readys() {
        let (mut st, mut peers) = state_with_conns(&[1, 3, 4], 15, 12).await;
        let a = lost_task(&mut st, 12, 2);
        for c in st.conns.iter_mut().filter(|c| c.cid != 4) {
            c.stalled = true;
        }
        // One connection still reads: no connection of their own.
        assert!(!st.wants_gap_filler(2));
        if let Some(c) = st.conns.iter_mut().find(|c| c.cid == 4) {
            c.stalled = true;
        }
        assert!(st.wants_gap_filler(2));
        // Connection 4 plays the one logged in for the fillers.
        if let Some(c) = st.conns.iter_mut().find(|c| c.cid == 4) {
            c.draining = true;
        }
        st.gap_fillers.push(4);
        assert!(!st.wants_gap_filler(2), "one is enough");
        assert_eq!(st.filler_connection(2, 12), Some(4));
        assert_eq!(st.move_lost(2, false), Moved::All);
        let mut buf = BytesMut::new();
        let bhs = next_pdu(peers.get_mut(2).unwrap(), &mut buf).await;
        match bhs {
            Bhs::ScsiCommand(c) => {
                assert_eq!(c.cmd_sn, 12);
                assert_eq!(c.cdb[0], 0x00, "TEST UNIT READY");
                assert!(!c.immediate && !c.read && !c.write);
                assert_ne!(c.itt, a);
            }
            other => panic!("expected a TEST UNIT READY filler, got {other:?}"),
        }
        // The lost command itself goes again as new, never on connection 4:
        // it waits for a connection in service.
        assert_eq!(st.queued.len(), 1);
        assert!(st.tasks.values().all(|t| t.cid != Some(4) || t.cmd_sn == Some(12)));
        // No filler went anywhere else.
        for peer in peers.iter_mut().take(2) {
            let r = tokio::time::timeout(Duration::from_millis(100), next_pdu(peer, &mut buf)).await;
            assert!(!matches!(&r, Ok(bhs) if is_filler(bhs, 12)), "{r:?}");
        }
    }

    #[tokio::test]
    async fn a_stalled_connection_carries_the_filler_only_when_no_other_will() {
        let (mut st, _peers) = state_with_conns(&[1, 3], 15, 12).await;
        if let Some(c) = st.conns.iter_mut().find(|c| c.cid == 1) {
            c.stalled = true;
        }
        assert_eq!(st.filler_connection(2, 12), Some(3));
        if let Some(c) = st.conns.iter_mut().find(|c| c.cid == 3) {
            c.draining = true;
        }
        assert_eq!(st.filler_connection(2, 12), Some(1));
    }
}
